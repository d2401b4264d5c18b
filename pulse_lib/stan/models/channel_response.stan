// Channel response: paid impressions given spend, and link clicks given impressions.
//
// After the PyCon APAC 2018 talk "Implementing Reinforcement Learning for Marketing Channel
// Optimization with Python": both counts are negative binomial with a log-linear mean.
// Version 2 of the book's model (pulse_lib.funnel):
//
//   impressions[n] ~ NB2(exp(eta_imp[n]), imp_phi[k])          on rows with spend > 0
//     eta_imp[n]  = imp_alpha[k] + imp_spend[k] * x_spend[n] + imp_holiday[k] * holiday[n]
//     x_spend[n]  = log(spend[n]) - (mean of log spend over channel k's rows)
//   clicks[n]      ~ NB2(exp(eta_clk[n]), clk_phi[k])          on rows with impressions > 0
//     eta_clk[n]  = clk_alpha[k] + clk_impressions[k] * x_imp[n] + clk_holiday[k] * holiday[n]
//     x_imp[n]    = log(impressions[n] / 1000) - (mean over channel k's rows)
//
// with k = channel[n]. NB2 means variance = mu + mu^2 / phi. Zero spend buys zero paid
// impressions and zero impressions give zero clicks: those rows carry no information about
// the coefficients and are left out of the likelihood (the model predicts them exactly).
//
// The predictors are centred per channel (in Python: pulse_lib.channel_model.model_data), so
// imp_alpha[k] and clk_alpha[k] are log mean counts on a normal day at channel k's own
// average log spend (or log impressions): centring removes the posterior correlation of
// intercept and slope within each channel. The intercepts the simulator uses (log mean at
// spend 1, or at 1,000 impressions) are computed in generated quantities.
//
// Every coefficient is non-centred: coefficient = loc + scale * z with z ~ normal(0, 1).
// With pooled = 0, loc and scale are the fixed, weakly-informative prior (prior_loc,
// prior_scale). With pooled = 1 the channels share a population for the coefficients listed
// in pooled_index (the elasticities and holiday effects): loc = hyper_mu ~
// normal(prior_loc, prior_scale), scale = hyper_tau ~ half-normal(0, tau_scale), so a channel
// with little data borrows strength from the others. The non-centred form keeps the sampler
// out of the funnel between hyper_tau and the coefficients (a centred hierarchy diverges when
// hyper_tau is small). The intercepts keep their fixed prior: they carry each channel's
// scale (impressions per thousand spent, click-through rates differ tenfold), a month of data
// pins them, and a pinned coefficient under a non-centred hierarchy makes the opposite
// funnel (z = (coefficient - hyper_mu) / hyper_tau is then a narrow ridge). The prior numbers
// are data, defined once in Python (pulse_lib.channel_model.PRIORS) and passed to this
// program and to the PyMC model alike.
//
// The likelihood runs one channel at a time through neg_binomial_2_log_glm (the same density
// as neg_binomial_2_log, with analytic gradients and a scalar dispersion per channel). Measured
// 2026-12-02 on the shipped logs: one chain of 500 iterations took 15 s, against about 40 s
// with one vectorized neg_binomial_2_log call over all rows.
//
// Written in Stan 2.27 syntax that newer Stan releases still accept (new array syntax, no
// tuples, no removed features).

data {
  int<lower=1> N;                          // rows: one per day and channel
  int<lower=1> K;                          // channels
  array[N] int<lower=1, upper=K> channel;  // channel index of each row
  vector<lower=0, upper=1>[N] holiday;     // 1 on holidays
  array[N] int<lower=0> impressions;
  array[N] int<lower=0> clicks;
  int<lower=0, upper=N> N_imp;             // rows with spend > 0
  array[N_imp] int<lower=1, upper=N> imp_rows;
  int<lower=0, upper=N> N_clk;             // rows with impressions > 0
  array[N_clk] int<lower=1, upper=N> clk_rows;
  vector[N] x_spend;                       // centred log spend (0 where spend = 0)
  vector[N] x_imp;                         // centred log(impressions / 1000) (0 where none)
  vector[K] x_spend_mean;                  // per-channel mean of log spend
  vector[K] x_imp_mean;                    // per-channel mean of log(impressions / 1000)
  array[N] int<lower=0, upper=1> spend_pos;  // 1 where spend > 0
  int<lower=0, upper=1> pooled;            // 1: hierarchical (partial pooling) priors
  int<lower=0, upper=6> P;                 // how many coefficients are pooled
  array[P] int<lower=1, upper=6> pooled_index;  // which (positions in the order below)
  int<lower=0, upper=1> predict;           // 1: emit posterior predictive draws and log_lik
  // Prior locations and scales, in the order
  // imp_alpha, imp_spend, imp_holiday, clk_alpha, clk_impressions, clk_holiday
  vector[6] prior_loc;
  vector<lower=0>[6] prior_scale;
  vector<lower=0>[6] tau_scale;            // scale of the half-normal prior on hyper_tau
  real<lower=0> inv_sqrt_phi_scale;        // half-normal scale on 1 / sqrt(phi)
}

transformed data {
  // Rows sorted by channel, so each channel's rows are one segment: the likelihood then
  // runs per channel with a scalar dispersion (Stan's GLM functions, analytic gradients).
  array[N_imp] int ord_i = sort_indices_asc(channel[imp_rows]);
  array[N_clk] int ord_c = sort_indices_asc(channel[clk_rows]);
  array[N_imp] int y_i = impressions[imp_rows[ord_i]];
  array[N_clk] int y_c = clicks[clk_rows[ord_c]];
  matrix[N_imp, 2] X_i = append_col(x_spend[imp_rows[ord_i]], holiday[imp_rows[ord_i]]);
  matrix[N_clk, 2] X_c = append_col(x_imp[clk_rows[ord_c]], holiday[clk_rows[ord_c]]);
  array[K] int n_i = rep_array(0, K);
  array[K] int n_c = rep_array(0, K);
  array[K] int start_i;
  array[K] int start_c;
  for (n in 1:N_imp) n_i[channel[imp_rows[n]]] += 1;
  for (n in 1:N_clk) n_c[channel[clk_rows[n]]] += 1;
  start_i[1] = 1;
  start_c[1] = 1;
  for (k in 2:K) {
    start_i[k] = start_i[k - 1] + n_i[k - 1];
    start_c[k] = start_c[k - 1] + n_c[k - 1];
  }
}

parameters {
  matrix[6, K] z;                          // standardised coefficients (non-centred)
  // Dispersions on the 1 / sqrt(phi) scale: 0 is the Poisson limit, so a half-normal prior
  // there shrinks towards "no extra variation" (Stan's prior-choice recommendations).
  vector<lower=0>[K] imp_inv_sqrt_phi;
  vector<lower=0>[K] clk_inv_sqrt_phi;
  // Population means and spreads, present only when pooled = 1.
  vector[pooled ? P : 0] hyper_mu;
  vector<lower=0>[pooled ? P : 0] hyper_tau;
}

transformed parameters {
  vector[K] imp_alpha;
  vector[K] imp_spend;
  vector[K] imp_holiday;
  vector[K] clk_alpha;
  vector[K] clk_impressions;
  vector[K] clk_holiday;
  vector<lower=0>[K] imp_phi = inv_square(imp_inv_sqrt_phi);
  vector<lower=0>[K] clk_phi = inv_square(clk_inv_sqrt_phi);
  {
    vector[6] loc = prior_loc;
    vector[6] scale = prior_scale;
    if (pooled) {
      loc[pooled_index] = hyper_mu;
      scale[pooled_index] = hyper_tau;
    }
    imp_alpha = loc[1] + scale[1] * z[1]';
    imp_spend = loc[2] + scale[2] * z[2]';
    imp_holiday = loc[3] + scale[3] * z[3]';
    clk_alpha = loc[4] + scale[4] * z[4]';
    clk_impressions = loc[5] + scale[5] * z[5]';
    clk_holiday = loc[6] + scale[6] * z[6]';
  }
}

model {
  to_vector(z) ~ std_normal();
  if (pooled) {
    hyper_mu ~ normal(prior_loc[pooled_index], prior_scale[pooled_index]);
    hyper_tau ~ normal(0, tau_scale[pooled_index]);
  }
  imp_inv_sqrt_phi ~ normal(0, inv_sqrt_phi_scale);
  clk_inv_sqrt_phi ~ normal(0, inv_sqrt_phi_scale);

  // Likelihood, one channel's rows at a time.
  for (k in 1:K) {
    if (n_i[k] > 0)
      segment(y_i, start_i[k], n_i[k]) ~ neg_binomial_2_log_glm(
          block(X_i, start_i[k], 1, n_i[k], 2), imp_alpha[k],
          [imp_spend[k], imp_holiday[k]]', imp_phi[k]);
    if (n_c[k] > 0)
      segment(y_c, start_c[k], n_c[k]) ~ neg_binomial_2_log_glm(
          block(X_c, start_c[k], 1, n_c[k], 2), clk_alpha[k],
          [clk_impressions[k], clk_holiday[k]]', clk_phi[k]);
  }
}

generated quantities {
  // Intercepts on the simulator's scale: log mean at spend 1 (or 1,000 impressions).
  vector[K] imp_intercept = imp_alpha - imp_spend .* x_spend_mean;
  vector[K] clk_intercept = clk_alpha - clk_impressions .* x_imp_mean;
  // Posterior predictive draws, given each row's spend and observed impressions, and the
  // pointwise log-likelihood of both counts (for LOO); empty unless predict = 1.
  array[predict ? N : 0] int impressions_rep;
  array[predict ? N : 0] int clicks_rep;
  vector[predict ? N : 0] log_lik;
  if (predict) {
    for (n in 1:N) {
      int k = channel[n];
      real eta_imp = imp_alpha[k] + imp_spend[k] * x_spend[n] + imp_holiday[k] * holiday[n];
      real eta_clk = clk_alpha[k] + clk_impressions[k] * x_imp[n]
                     + clk_holiday[k] * holiday[n];
      impressions_rep[n] = 0;
      clicks_rep[n] = 0;
      log_lik[n] = 0;
      if (spend_pos[n]) {
        impressions_rep[n] = neg_binomial_2_log_rng(eta_imp, imp_phi[k]);
        log_lik[n] += neg_binomial_2_log_lpmf(impressions[n] | eta_imp, imp_phi[k]);
      }
      if (impressions[n] > 0) {
        clicks_rep[n] = neg_binomial_2_log_rng(eta_clk, clk_phi[k]);
        log_lik[n] += neg_binomial_2_log_lpmf(clicks[n] | eta_clk, clk_phi[k]);
      }
    }
  }
}
