// Channel response: impressions given spend, and link clicks given impressions, per channel.
//
// After the PyCon APAC 2018 talk "Implementing Reinforcement Learning for Marketing Channel
// Optimization with Python": both counts are negative binomial with a log-linear mean.
//
//   impressions[n] ~ NB2(exp(eta_imp[n]), imp_phi[k])
//     eta_imp[n]  = imp_alpha[k] + imp_spend[k] * (x_spend[n] - mean(x_spend)) + imp_holiday[k] * holiday[n]
//     x_spend     = log1p(spend)                  (diminishing returns on spend)
//   clicks[n]      ~ NB2(exp(eta_clk[n]), clk_phi[k])
//     eta_clk[n]  = clk_alpha[k] + clk_impressions[k] * (x_imp[n] - mean(x_imp)) + clk_holiday[k] * holiday[n]
//     x_imp       = log1p(impressions / 1000)
//
// with k = channel[n]. NB2 means variance = mu + mu^2 / phi.
//
// The predictors are centred, so imp_alpha and clk_alpha are log mean counts on a normal day
// at the average (log) spend or impressions: centring removes the strong posterior correlation
// between intercept and slope. The uncentred intercepts used by the simulator
// (log mean at zero spend) are computed in generated quantities.
//
// Partial pooling is a data flag. With pooled = 0 every channel's coefficient has the fixed,
// weakly-informative prior normal(prior_loc, prior_scale). With pooled = 1 the channels share
// a population: coefficient ~ normal(hyper_mu, hyper_tau), hyper_mu ~ normal(prior_loc,
// prior_scale), hyper_tau ~ half-normal(0, tau_scale), so a channel with little data borrows
// strength from the others. The prior numbers are data: they are defined once, in Python
// (pulse_lib.channel_model.PRIORS), and passed to this program and to the PyMC model alike.
//
// Written in Stan 2.27 syntax that newer Stan releases still accept (new array syntax, no
// tuples, no removed features).

data {
  int<lower=1> N;                          // rows: one per day and channel
  int<lower=1> K;                          // channels
  array[N] int<lower=1, upper=K> channel;  // channel index of each row
  vector<lower=0>[N] spend;                // spend, thousands of currency units
  vector<lower=0, upper=1>[N] holiday;     // 1 on holidays
  array[N] int<lower=0> impressions;
  array[N] int<lower=0> clicks;
  int<lower=0, upper=1> pooled;            // 1: hierarchical (partial pooling) priors
  int<lower=0, upper=1> predict;           // 1: emit posterior predictive draws and log_lik
  // Prior locations and scales, in the order
  // imp_alpha, imp_spend, imp_holiday, clk_alpha, clk_impressions, clk_holiday
  vector[6] prior_loc;
  vector<lower=0>[6] prior_scale;
  vector<lower=0>[6] tau_scale;            // scale of the half-normal prior on hyper_tau
  real<lower=0> inv_sqrt_phi_scale;        // half-normal scale on 1 / sqrt(phi)
}

transformed data {
  vector[N] x_spend = log1p(spend);
  vector[N] x_imp;
  real x_spend_mean;
  real x_imp_mean;
  for (n in 1:N) {
    x_imp[n] = log1p(impressions[n] / 1000.0);
  }
  x_spend_mean = mean(x_spend);
  x_imp_mean = mean(x_imp);
  x_spend = x_spend - x_spend_mean;
  x_imp = x_imp - x_imp_mean;
}

parameters {
  vector[K] imp_alpha;
  vector[K] imp_spend;
  vector[K] imp_holiday;
  vector[K] clk_alpha;
  vector[K] clk_impressions;
  vector[K] clk_holiday;
  // Dispersions on the 1 / sqrt(phi) scale: 0 is the Poisson limit, so a half-normal prior
  // there shrinks towards "no extra variation" (Stan's prior-choice recommendations).
  vector<lower=0>[K] imp_inv_sqrt_phi;
  vector<lower=0>[K] clk_inv_sqrt_phi;
  // Population means and spreads, present only when pooled = 1.
  vector[pooled ? 6 : 0] hyper_mu;
  vector<lower=0>[pooled ? 6 : 0] hyper_tau;
}

transformed parameters {
  vector<lower=0>[K] imp_phi = inv_square(imp_inv_sqrt_phi);
  vector<lower=0>[K] clk_phi = inv_square(clk_inv_sqrt_phi);
}

model {
  // Coefficient priors: fixed (no pooling) or a shared population (partial pooling).
  vector[6] loc = prior_loc;
  vector[6] scale = prior_scale;
  if (pooled) {
    hyper_mu ~ normal(prior_loc, prior_scale);
    hyper_tau ~ normal(0, tau_scale);
    loc = hyper_mu;
    scale = hyper_tau;
  }
  imp_alpha ~ normal(loc[1], scale[1]);
  imp_spend ~ normal(loc[2], scale[2]);
  imp_holiday ~ normal(loc[3], scale[3]);
  clk_alpha ~ normal(loc[4], scale[4]);
  clk_impressions ~ normal(loc[5], scale[5]);
  clk_holiday ~ normal(loc[6], scale[6]);
  imp_inv_sqrt_phi ~ normal(0, inv_sqrt_phi_scale);
  clk_inv_sqrt_phi ~ normal(0, inv_sqrt_phi_scale);

  // Likelihood, vectorized over rows.
  impressions ~ neg_binomial_2_log(imp_alpha[channel] + imp_spend[channel] .* x_spend
                                   + imp_holiday[channel] .* holiday, imp_phi[channel]);
  clicks ~ neg_binomial_2_log(clk_alpha[channel] + clk_impressions[channel] .* x_imp
                              + clk_holiday[channel] .* holiday, clk_phi[channel]);
}

generated quantities {
  // Intercepts on the simulator's scale: log mean at zero spend (or zero impressions).
  vector[K] imp_intercept = imp_alpha - imp_spend * x_spend_mean;
  vector[K] clk_intercept = clk_alpha - clk_impressions * x_imp_mean;
  // Posterior predictive draws, given each row's spend and observed impressions, and the
  // pointwise log-likelihood of both counts (for LOO); empty unless predict = 1.
  array[predict ? N : 0] int impressions_rep;
  array[predict ? N : 0] int clicks_rep;
  vector[predict ? N : 0] log_lik;
  if (predict) {
    vector[N] eta_imp = imp_alpha[channel] + imp_spend[channel] .* x_spend
                        + imp_holiday[channel] .* holiday;
    vector[N] eta_clk = clk_alpha[channel] + clk_impressions[channel] .* x_imp
                        + clk_holiday[channel] .* holiday;
    for (n in 1:N) {
      impressions_rep[n] = neg_binomial_2_log_rng(eta_imp[n], imp_phi[channel[n]]);
      clicks_rep[n] = neg_binomial_2_log_rng(eta_clk[n], clk_phi[channel[n]]);
      log_lik[n] = neg_binomial_2_log_lpmf(impressions[n] | eta_imp[n], imp_phi[channel[n]])
                   + neg_binomial_2_log_lpmf(clicks[n] | eta_clk[n], clk_phi[channel[n]]);
    }
  }
}
