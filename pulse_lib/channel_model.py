"""Bayesian channel response models (Part I): fit the funnel's regressions in Stan or
PyMC.

The model is the one of :mod:`pulse_lib.funnel` (version 2) and of the PyCon APAC 2018
talk, per channel k:

* impressions ~ NB2(mu, phi_imp),  log mu = a_k + b_k * log(spend) + c_k * holiday
  (spend > 0)
* link clicks ~ NB2(mu, phi_clk),  log mu = d_k + e_k * log(impressions / 1000) + f_k *
  holiday

with the weakly-informative priors of :data:`PRIORS`, predictors centred per channel,
every coefficient non-centred (coefficient = loc + scale * z), and optional partial
pooling of the elasticities and holiday effects across channels. The same priors and
likelihood are written once in Stan (``pulse_lib/stan/models/channel_response.stan``)
and once in PyMC (:func:`build_pymc_model`); both read the data :func:`model_data`
prepares. :func:`fit_channel_model` runs either (PyMC's own NUTS or nutpie's), prints
the sampler's diagnostics (:func:`fit_diagnostics`) and returns an
``arviz.InferenceData`` with the same variable names, so the backends can be compared
draw for draw. :func:`cached_fit` stores a fit on disk keyed by the data, the program
and the settings. :func:`posterior_params` turns a posterior into
:class:`~pulse_lib.funnel.ChannelParams` of shape (S, K), and :class:`PosteriorResponse`
simulates days from it, vectorized over the S posterior draws.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from pulse_lib import bayes_compat as bc
from pulse_lib.errors import ConfigError, SchemaError
from pulse_lib.funnel import (
    ChannelParams,
    expected_clicks_given_impressions,
    expected_impressions,
    validate_funnel,
)
from pulse_lib.io import file_lock, sha256_of

Backend = Literal["cmdstan", "pymc", "nutpie"]
Pooling = Literal["none", "partial"]
BACKENDS: tuple[str, ...] = ("cmdstan", "pymc", "nutpie")
POOLINGS: tuple[str, ...] = ("none", "partial")

#: The six regression coefficients, in the order the Stan program's prior vectors use.
COEFFICIENTS: tuple[str, ...] = (
    "imp_alpha",
    "imp_spend",
    "imp_holiday",
    "clk_alpha",
    "clk_impressions",
    "clk_holiday",
)

#: The coefficients partial pooling shares across channels (the intercepts keep their
#: fixed
#: prior; see the Stan program's header).
POOLED_COEFFICIENTS: tuple[str, ...] = (
    "imp_spend",
    "imp_holiday",
    "clk_impressions",
    "clk_holiday",
)

#: Default target acceptance rate of NUTS's step-size adaptation (Stan's adapt_delta),
#: by
#: pooling. With partial pooling the non-centred hierarchy's curvature changes with the
#: population spread hyper_tau; at the usual 0.8 chapter 2's pooling scenario gave 1
#: divergence in 2,000 draws (measured 2026-12-02), so pooled fits take smaller steps.
TARGET_ACCEPT: dict[str, float] = {"none": 0.8, "partial": 0.95}

#: Weakly-informative priors, shared by the Stan and PyMC models. Each coefficient gets
#: normal(loc, scale) (no pooling) or is the population mean's prior (partial pooling,
#: where
#: the population spread gets half-normal(0, tau)). Predictors are centred per channel,
#: so
#: the alphas are log mean counts on a normal day at the channel's average log spend (or
#: log
#: impressions).
PRIORS: dict[str, dict[str, float]] = {
    # e^12 ~ 160,000 impressions a day; +-2 sd spans e^6 (400) to e^18 (66 million).
    "imp_alpha": {"loc": 12.0, "scale": 3.0, "tau": 1.0},
    # Elasticity of impressions to spend: diminishing returns (< 1) expected; +-2 sd
    # spans
    # -0.5 (implausible, but the data may say so) to 1.5. Channels differ by ~0.3.
    "imp_spend": {"loc": 0.5, "scale": 0.5, "tau": 0.3},
    # A holiday changes impressions by at most a factor e^(+-1) ~ 2.7 at 2 sd.
    "imp_holiday": {"loc": 0.0, "scale": 0.5, "tau": 0.3},
    # e^8 ~ 3,000 clicks a day at average impressions; +-2 sd spans 7 to 1.2 million.
    "clk_alpha": {"loc": 8.0, "scale": 3.0, "tau": 1.5},
    # Elasticity of clicks to impressions: 1 means a constant click-through rate; +-2 sd
    # 0 to 2.
    "clk_impressions": {"loc": 1.0, "scale": 0.5, "tau": 0.2},
    "clk_holiday": {"loc": 0.0, "scale": 0.5, "tau": 0.3},
}
#: Half-normal scale on 1/sqrt(phi) for both dispersions: 0 is the Poisson limit, and
#: 1/sqrt(phi) = 1 (phi = 1, a coefficient of variation of 100% on top of Poisson noise)
#: is
#: already extreme for daily ad counts.
INV_SQRT_PHI_SCALE = 1.0

#: Conversion rates come from a conjugate Beta(a + acquisitions, b + clicks -
#: acquisitions)
#: posterior per channel. Without an ``acquisitions`` column they are drawn from this
#: prior
#: alone: Beta(1, 49), mean 2% (a typical click-to-purchase rate), 90% between 0.1% and
#: 6%.
CONVERSION_PRIOR: tuple[float, float] = (1.0, 49.0)

#: Parameters compared across backends and checked against the truth.
SUMMARY_VARS: tuple[str, ...] = (
    "imp_intercept",
    "imp_spend",
    "imp_holiday",
    "imp_phi",
    "clk_intercept",
    "clk_impressions",
    "clk_holiday",
    "clk_phi",
)
#: idata name -> ChannelParams field.
_FIELD_OF: dict[str, str] = {
    "imp_intercept": "imp_intercept",
    "imp_spend": "imp_spend",
    "imp_holiday": "imp_holiday",
    "imp_phi": "imp_phi",
    "clk_intercept": "clk_intercept",
    "clk_impressions": "clk_impressions",
    "clk_holiday": "clk_holiday",
    "clk_phi": "clk_phi",
}


# --- data
# --------------------------------------------------------------------------------------


def model_data(
    frame: pd.DataFrame, pooling: Pooling = "none", predict: bool = False
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Validate a funnel table and build the data both programs read; return it and the
    channel names.

    Channels are numbered in sorted order of their names, so the result does not depend
    on the order of rows. Log spend and log(impressions / 1000) are centred on each
    channel's own mean (over its rows with positive spend, or positive impressions).
    Rows with zero spend must have zero impressions (zero spend buys zero paid
    impressions in this model); they, and rows without impressions, carry no information
    and are left out of the likelihood.
    """
    if pooling not in POOLINGS:
        raise ConfigError(
            f"unknown pooling {pooling!r}; choose one of {list(POOLINGS)}"
        )
    table = validate_funnel(frame)
    channels = tuple(sorted(table["channel"].unique()))
    index = {name: i + 1 for i, name in enumerate(channels)}
    spend = table["spend"].to_numpy(dtype=float)
    impressions = table["impressions"].to_numpy(dtype=np.int64)
    bad = (spend == 0) & (impressions > 0)
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise SchemaError(
            f"rows {rows} (sorted by date and channel) have impressions at zero spend; "
            "the "
            "model's paid impressions are zero without spend: drop or correct those "
            "rows"
        )
    k_index = table["channel"].map(index).to_numpy(dtype=np.int64)
    spend_pos = spend > 0
    imp_pos = impressions > 0
    log_spend = np.log(np.where(spend_pos, spend, 1.0))
    log_imp = np.log(np.where(imp_pos, impressions, 1.0) / 1000.0)
    x_spend_mean = np.zeros(len(channels))
    x_imp_mean = np.zeros(len(channels))
    for j, name in enumerate(channels):
        rows = k_index == j + 1
        if not (rows & spend_pos).any() or not (rows & imp_pos).any():
            raise SchemaError(
                f"channel {name!r} has no row with positive spend and impressions: "
                "nothing "
                "to fit"
            )
        x_spend_mean[j] = log_spend[rows & spend_pos].mean()
        x_imp_mean[j] = log_imp[rows & imp_pos].mean()
    x_spend = np.where(spend_pos, log_spend - x_spend_mean[k_index - 1], 0.0)
    x_imp = np.where(imp_pos, log_imp - x_imp_mean[k_index - 1], 0.0)
    data: dict[str, Any] = {
        "N": len(table),
        "K": len(channels),
        "channel": k_index,
        "holiday": table["holiday"].to_numpy(dtype=float),
        "impressions": impressions,
        "clicks": table["clicks"].to_numpy(dtype=np.int64),
        "N_imp": int(spend_pos.sum()),
        "imp_rows": np.flatnonzero(spend_pos) + 1,
        "N_clk": int(imp_pos.sum()),
        "clk_rows": np.flatnonzero(imp_pos) + 1,
        "x_spend": x_spend,
        "x_imp": x_imp,
        "x_spend_mean": x_spend_mean,
        "x_imp_mean": x_imp_mean,
        "spend_pos": spend_pos.astype(np.int64),
        "pooled": int(pooling == "partial"),
        "P": len(POOLED_COEFFICIENTS),
        "pooled_index": np.array(
            [COEFFICIENTS.index(c) + 1 for c in POOLED_COEFFICIENTS]
        ),
        "predict": int(bool(predict)),
        "prior_loc": np.array([PRIORS[c]["loc"] for c in COEFFICIENTS]),
        "prior_scale": np.array([PRIORS[c]["scale"] for c in COEFFICIENTS]),
        "tau_scale": np.array([PRIORS[c]["tau"] for c in COEFFICIENTS]),
        "inv_sqrt_phi_scale": INV_SQRT_PHI_SCALE,
    }
    by_channel = table.groupby("channel")
    data["_clicks_total"] = (
        by_channel["clicks"].sum().reindex(list(channels)).to_numpy()
    )
    if "acquisitions" in table:
        data["_acquisitions_total"] = (
            by_channel["acquisitions"].sum().reindex(list(channels)).to_numpy()
        )
    return data, channels


# --- Stan
# --------------------------------------------------------------------------------------


def stan_cache_dir() -> Path:
    """Where compiled Stan programs live: ``$PULSE_STAN_CACHE`` or
    ``~/.cache/pulse_lib/stan``.

    The package directory may be read-only (a site-packages install), so the ``.stan``
    file is copied here, into a folder named by its content hash, before compiling.
    """
    return Path(
        os.environ.get(
            "PULSE_STAN_CACHE", Path.home() / ".cache" / "pulse_lib" / "stan"
        )
    )


def compile_stan_model(
    name: str = "channel_response", cache: Path | None = None
) -> Any:
    """Compile (or reuse) one of the book's Stan programs; returns a
    ``cmdstanpy.CmdStanModel``."""
    import cmdstanpy

    from pulse_lib.stan import ensure_cmdstan, model_file

    ensure_cmdstan()
    source = model_file(name)
    digest = sha256_of(source)[:16]
    folder = (cache or stan_cache_dir()) / f"{name}-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.name
    with file_lock(folder / "compile.lock"):  # parallel chapters: compile once
        if not target.is_file():
            shutil.copy2(source, target)
        return cmdstanpy.CmdStanModel(stan_file=str(target))


def _fit_cmdstan(
    data: Mapping[str, Any],
    channels: Sequence[str],
    draws: int,
    tune: int,
    chains: int,
    seed: int,
    cores: int,
    progress: bool,
    cache: Path | None,
    target_accept: float,
) -> Any:
    start = time.perf_counter()
    model = compile_stan_model(cache=cache)
    compiled = time.perf_counter()
    stan_data = {k: v for k, v in data.items() if not k.startswith("_")}
    # Early warmup visits extreme dispersions and CmdStan prints each rejected proposal;
    # those
    # messages are normal. What matters (divergences, R-hat, ESS) is checked on the
    # result.
    logger = logging.getLogger("cmdstanpy")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        fit = model.sample(
            data=stan_data,
            chains=chains,
            parallel_chains=cores,
            iter_warmup=tune,
            iter_sampling=draws,
            seed=seed,
            show_progress=progress,
            show_console=False,
            adapt_delta=target_accept,
        )
    finally:
        logger.setLevel(level)
    sampled = time.perf_counter()
    predict = bool(data["predict"])
    coords = {
        "channel": list(channels),
        "row": np.arange(data["N"]),
        "coef": list(COEFFICIENTS),
        "pooled_coef": list(POOLED_COEFFICIENTS),
    }
    dims = {
        name: ["channel"]
        for name in (
            *COEFFICIENTS,
            "imp_inv_sqrt_phi",
            "clk_inv_sqrt_phi",
            "imp_phi",
            "clk_phi",
            "imp_intercept",
            "clk_intercept",
        )
    }
    dims.update(
        {
            "hyper_mu": ["pooled_coef"],
            "hyper_tau": ["pooled_coef"],
            "z": ["coef", "channel"],
        }
    )
    kwargs: dict[str, Any] = {}
    if predict:
        dims.update(
            {
                v: ["row"]
                for v in (
                    "impressions_rep",
                    "clicks_rep",
                    "log_lik",
                    "impressions",
                    "clicks",
                )
            }
        )
        kwargs = {
            "posterior_predictive": ["impressions_rep", "clicks_rep"],
            "log_likelihood": "log_lik",
            "observed_data": {
                "impressions": data["impressions"],
                "clicks": data["clicks"],
            },
        }
    else:
        kwargs = {"log_likelihood": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        idata = bc.from_cmdstanpy(fit, coords=coords, dims=dims, **kwargs)
    post = bc.get_group(idata, "posterior")
    drop = [v for v in ("impressions_rep", "clicks_rep", "log_lik") if v in post]
    if drop:  # empty arrays when predict = 0
        bc.set_group(idata, "posterior", post.drop_vars(drop))
    if predict:
        bc.set_group(
            idata,
            "posterior_predictive",
            bc.get_group(idata, "posterior_predictive").rename(
                {"impressions_rep": "impressions", "clicks_rep": "clicks"}
            ),
        )
    return idata, compiled - start, sampled - compiled


# --- PyMC
# --------------------------------------------------------------------------------------


def build_pymc_model(data: Mapping[str, Any], channels: Sequence[str]) -> Any:
    """The Stan program's priors and likelihood in PyMC (see
    ``channel_response.stan``)."""
    import pymc as pm
    import pytensor.tensor as pt

    k_index = np.asarray(data["channel"]) - 1
    imp_rows = np.asarray(data["imp_rows"]) - 1
    clk_rows = np.asarray(data["clk_rows"]) - 1
    holiday = np.asarray(data["holiday"], dtype=float)
    x_spend = np.asarray(data["x_spend"], dtype=float)
    x_imp = np.asarray(data["x_imp"], dtype=float)
    coords = {
        "channel": list(channels),
        "coef": list(COEFFICIENTS),
        "pooled_coef": list(POOLED_COEFFICIENTS),
        "imp_row": imp_rows,
        "clk_row": clk_rows,
    }
    with pm.Model(coords=coords) as model:
        loc = pt.as_tensor(np.asarray(data["prior_loc"], dtype=float))
        scale = pt.as_tensor(np.asarray(data["prior_scale"], dtype=float))
        if data["pooled"]:
            index = np.asarray(data["pooled_index"]) - 1
            hyper_mu = pm.Normal(
                "hyper_mu",
                mu=np.asarray(data["prior_loc"])[index],
                sigma=np.asarray(data["prior_scale"])[index],
                dims="pooled_coef",
            )
            hyper_tau = pm.HalfNormal(
                "hyper_tau",
                sigma=np.asarray(data["tau_scale"])[index],
                dims="pooled_coef",
            )
            loc = pt.set_subtensor(loc[index], hyper_mu)
            scale = pt.set_subtensor(scale[index], hyper_tau)
        z = pm.Normal("z", 0.0, 1.0, dims=("coef", "channel"))
        coef = {
            name: pm.Deterministic(name, loc[j] + scale[j] * z[j], dims="channel")
            for j, name in enumerate(COEFFICIENTS)
        }
        sigma = data["inv_sqrt_phi_scale"]
        imp_isp = pm.HalfNormal("imp_inv_sqrt_phi", sigma=sigma, dims="channel")
        clk_isp = pm.HalfNormal("clk_inv_sqrt_phi", sigma=sigma, dims="channel")
        imp_phi = pm.Deterministic("imp_phi", 1.0 / pt.sqr(imp_isp), dims="channel")
        clk_phi = pm.Deterministic("clk_phi", 1.0 / pt.sqr(clk_isp), dims="channel")
        pm.Deterministic(
            "imp_intercept",
            coef["imp_alpha"] - coef["imp_spend"] * data["x_spend_mean"],
            dims="channel",
        )
        pm.Deterministic(
            "clk_intercept",
            coef["clk_alpha"] - coef["clk_impressions"] * data["x_imp_mean"],
            dims="channel",
        )
        ki, kc = k_index[imp_rows], k_index[clk_rows]
        eta_imp = (
            coef["imp_alpha"][ki]
            + coef["imp_spend"][ki] * x_spend[imp_rows]
            + coef["imp_holiday"][ki] * holiday[imp_rows]
        )
        eta_clk = (
            coef["clk_alpha"][kc]
            + coef["clk_impressions"][kc] * x_imp[clk_rows]
            + coef["clk_holiday"][kc] * holiday[clk_rows]
        )
        pm.NegativeBinomial(
            "impressions",
            mu=pt.exp(eta_imp),
            alpha=imp_phi[ki],
            observed=np.asarray(data["impressions"])[imp_rows],
            dims="imp_row",
        )
        pm.NegativeBinomial(
            "clicks",
            mu=pt.exp(eta_clk),
            alpha=clk_phi[kc],
            observed=np.asarray(data["clicks"])[clk_rows],
            dims="clk_row",
        )
    return model


def _fit_pymc(
    data: Mapping[str, Any],
    channels: Sequence[str],
    draws: int,
    tune: int,
    chains: int,
    seed: int,
    cores: int,
    progress: bool,
    sampler: str,
    target_accept: float,
) -> Any:
    import pymc as pm

    start = time.perf_counter()
    model = build_pymc_model(data, channels)
    predict = bool(data["predict"])
    # pm.sample compiles inside sampling: not measured apart
    compile_seconds = float("nan")
    with model:
        if sampler == "nutpie":
            import nutpie

            compiled = nutpie.compile_pymc_model(model)
            compile_seconds = time.perf_counter() - start
            idata = nutpie.sample(
                compiled,
                draws=draws,
                tune=tune,
                chains=chains,
                cores=cores,
                seed=seed,
                progress_bar=progress,
                save_warmup=False,
                target_accept=target_accept,
            )
            if predict:
                bc.compute_log_likelihood(idata)
        else:
            idata = bc.pymc_sample(
                draws=draws,
                tune=tune,
                chains=chains,
                cores=cores,
                seed=seed,
                progress=progress,
                log_likelihood=predict,
                target_accept=target_accept,
            )
        if predict:
            pm.sample_posterior_predictive(
                idata, random_seed=seed, progressbar=False, extend_inferencedata=True
            )
    total = time.perf_counter() - start
    sampling_seconds = total - (0.0 if np.isnan(compile_seconds) else compile_seconds)
    # per row of the table, as the Stan program reports them (0 where exact)
    if predict:
        rows = np.arange(data["N"])

        def per_row(values: Any, dim: str) -> Any:
            return values.rename({dim: "row"}).reindex(row=rows, fill_value=0)

        import xarray as xr

        ll = bc.get_group(idata, "log_likelihood")
        bc.set_group(
            idata,
            "log_likelihood",
            (
                per_row(ll["impressions"], "imp_row") + per_row(ll["clicks"], "clk_row")
            ).to_dataset(name="log_lik"),
        )
        pp = bc.get_group(idata, "posterior_predictive")
        bc.set_group(
            idata,
            "posterior_predictive",
            xr.Dataset(
                {
                    "impressions": per_row(pp["impressions"], "imp_row"),
                    "clicks": per_row(pp["clicks"], "clk_row"),
                },
                attrs=pp.attrs,
            ),
        )
    return idata, compile_seconds, sampling_seconds


# --- the entry point
# ----------------------------------------------------------------------------


def fit_channel_model(
    frame: pd.DataFrame,
    backend: Backend = "cmdstan",
    pooling: Pooling = "none",
    draws: int = 1000,
    chains: int = 4,
    seed: int = 0,
    tune: int | None = None,
    predict: bool = False,
    cores: int = 1,
    progress: bool = False,
    stan_cache: Path | None = None,
    report: bool = True,
    target_accept: float | None = None,
) -> Any:
    """Fit the channel response model to a funnel table; return an
    ``arviz.InferenceData``.

    ``report=True`` (the default) prints the sampler's diagnostics in one line
    (:func:`fit_diagnostics`: divergences, max R-hat, min bulk and tail ESS); they are
    also stored in the posterior's attributes (``pulse_divergences``, ...).

    ``frame`` is any table of the funnel schema (validated with
    :func:`pulse_lib.funnel.validate_funnel`; ``acquisitions`` is optional). ``backend``
    is ``"cmdstan"`` (the Stan program), ``"pymc"`` (PyMC's NUTS) or ``"nutpie"``
    (nutpie's NUTS on the PyMC model). ``pooling="partial"`` adds the hierarchical
    priors. ``tune`` defaults to ``draws``. ``target_accept`` is the step-size
    adaptation's target acceptance rate (Stan's ``adapt_delta``); the default,
    :data:`TARGET_ACCEPT`, is higher with partial pooling, whose posterior has curvature
    that varies with the population spread: smaller steps keep the sampler from
    diverging there. ``predict=True`` adds posterior predictive draws (``impressions``,
    ``clicks``) and the pointwise log-likelihood ``log_lik`` (both counts of a row).
    ``cores`` chains run in parallel (1 in CI).

    The posterior holds, per channel: ``imp_alpha``, ``imp_spend``, ``imp_holiday``,
    ``clk_alpha``, ``clk_impressions``, ``clk_holiday``, ``imp_phi``, ``clk_phi`` and
    the simulator's intercepts ``imp_intercept``, ``clk_intercept``. ``constant_data``
    carries the per-channel click and acquisition totals :func:`posterior_params` needs.
    The posterior's attributes record the backend, pooling, and compile and sampling
    wall times (seconds; ``pulse_compile_seconds`` is NaN for ``"pymc"``, whose
    ``pm.sample`` compiles the model as part of sampling, so its sampling time includes
    compilation).
    """
    import xarray as xr

    if backend not in BACKENDS:
        raise ConfigError(
            f"unknown backend {backend!r}; choose one of {list(BACKENDS)}"
        )
    for name, value in (("draws", draws), ("chains", chains), ("cores", cores)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    tune = draws if tune is None else tune
    target_accept = (
        TARGET_ACCEPT.get(pooling, 0.8) if target_accept is None else target_accept
    )
    if not isinstance(target_accept, (float, int)) or not 0.5 <= target_accept < 1:
        raise ConfigError(f"target_accept must be in [0.5, 1), got {target_accept!r}")
    if not isinstance(tune, (int, np.integer)) or tune < 1:
        raise ConfigError(f"tune must be a positive integer, got {tune!r}")
    data, channels = model_data(frame, pooling=pooling, predict=predict)
    if backend == "cmdstan":
        idata, compile_s, sample_s = _fit_cmdstan(
            data,
            channels,
            draws,
            tune,
            chains,
            seed,
            cores,
            progress,
            stan_cache,
            float(target_accept),
        )
    else:
        idata, compile_s, sample_s = _fit_pymc(
            data,
            channels,
            draws,
            tune,
            chains,
            seed,
            cores,
            progress,
            backend,
            float(target_accept),
        )
    totals = {
        "clicks_total": xr.DataArray(
            data["_clicks_total"], dims="channel", coords={"channel": list(channels)}
        )
    }
    if "_acquisitions_total" in data:
        totals["acquisitions_total"] = xr.DataArray(
            data["_acquisitions_total"],
            dims="channel",
            coords={"channel": list(channels)},
        )
    totals_ds = xr.Dataset(totals)
    if bc.has_group(idata, "constant_data"):
        bc.set_group(
            idata,
            "constant_data",
            bc.get_group(idata, "constant_data").merge(totals_ds),
        )
    else:
        bc.set_group(idata, "constant_data", totals_ds)
    idata.posterior.attrs.update(
        {
            "pulse_backend": backend,
            "pulse_pooling": pooling,
            "pulse_compile_seconds": float(compile_s),
            "pulse_sampling_seconds": float(sample_s),
            "pulse_target_accept": float(target_accept),
        }
    )
    diagnostics = fit_diagnostics(idata)
    idata.posterior.attrs.update({f"pulse_{k}": v for k, v in diagnostics.items()})
    if report:
        print(format_diagnostics(diagnostics, f"{backend}, pooling={pooling}"))
    return idata


def fit_diagnostics(
    idata: Any, var_names: Sequence[str] = SUMMARY_VARS
) -> dict[str, Any]:
    """The sampler's health in four numbers, over ``var_names`` (every channel).

    ``divergences`` (post-warmup divergent transitions; any is a warning), ``max_r_hat``
    (rank-normalised split R-hat; < 1.01 is the usual bar; NaN with one chain),
    ``min_ess_bulk`` and ``min_ess_tail`` (effective sample sizes; a few hundred is
    enough for means and 90 % intervals), and ``draws`` (post-warmup draws over all
    chains).
    """
    post = bc.get_group(idata, "posterior")
    names = [v for v in var_names if v in post]
    if not names:
        raise SchemaError(f"the posterior has none of the variables {list(var_names)}")
    n_chains, n_draws = post.sizes["chain"], post.sizes["draw"]
    ess_bulk = bc.ess(idata, var_names=names, method="bulk").to_array()
    ess_tail = bc.ess(idata, var_names=names, method="tail").to_array()
    r_hat = (
        float(bc.rhat(idata, var_names=names).to_array().max())
        if n_chains > 1
        else float("nan")
    )
    stats = (
        bc.get_group(idata, "sample_stats")
        if bc.has_group(idata, "sample_stats")
        else None
    )
    diverging = (
        int(stats["diverging"].sum())
        if stats is not None and "diverging" in stats
        else 0
    )
    return {
        "divergences": diverging,
        "max_r_hat": r_hat,
        "min_ess_bulk": float(ess_bulk.min()),
        "min_ess_tail": float(ess_tail.min()),
        "draws": int(n_chains * n_draws),
    }


def format_diagnostics(diagnostics: Mapping[str, Any], label: str = "fit") -> str:
    """One line: ``label: 0 divergences in 600 draws, max R-hat 1.003, min ESS bulk
    ...``."""
    d = diagnostics
    return (
        f"{label}: {d['divergences']} divergences in {d['draws']} draws, "
        f"max R-hat {d['max_r_hat']:.3f}, min ESS bulk {d['min_ess_bulk']:.0f}, "
        f"tail {d['min_ess_tail']:.0f}"
    )


def cached_fit(
    frame: pd.DataFrame, cache_dir: Path | None = None, **kwargs: Any
) -> Any:
    """:func:`fit_channel_model`, stored on disk and reused when nothing changed.

    The key hashes the validated table, the Stan program, the priors and every keyword
    argument, so a change to any of them fits again. Fits live in ``cache_dir`` (default
    ``datasets/generated/fits``, ignored by git) as NetCDF files written atomically. A
    lock file beside each fit makes a process that asks for a fit another one is
    computing wait for it (chapters that share a fit may run in parallel) rather than
    fit it twice. The posterior's attributes keep the compile and sampling times of the
    run that made it.
    """
    import json

    from pulse_lib.io import atomic_path
    from pulse_lib.stan import model_file

    table = validate_funnel(frame)
    digest = hashlib.sha256()
    digest.update(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes())
    digest.update(model_file("channel_response").read_bytes())
    settings = {
        k: v for k, v in kwargs.items() if k not in ("progress", "report", "cores")
    }
    digest.update(
        json.dumps(
            [PRIORS, INV_SQRT_PHI_SCALE, settings], sort_keys=True, default=str
        ).encode()
    )
    if cache_dir is None:
        from pulse_lib.book import generated_dir

        cache_dir = generated_dir() / "fits"
    path = Path(cache_dir) / f"channel_response-{digest.hexdigest()[:20]}.nc"
    path.parent.mkdir(parents=True, exist_ok=True)
    # One fit per key even when chapters run in parallel: a second process waits for the
    # first one's fit instead of repeating it.
    with file_lock(path.with_suffix(".lock")):
        if path.is_file():
            idata = bc.from_netcdf(path)
            if kwargs.get("report", True):
                print(
                    format_diagnostics(
                        fit_diagnostics(idata), f"cached fit {path.name}"
                    )
                )
            return idata
        idata = fit_channel_model(table, **kwargs)
        with atomic_path(path) as tmp:
            bc.to_netcdf(idata, tmp)
        return idata


# --- from a posterior to the simulator
# ----------------------------------------------------------


def _channels_of(idata: Any) -> tuple[str, ...]:
    return tuple(str(c) for c in bc.get_group(idata, "posterior")["channel"].values)


def posterior_params(
    idata: Any, seed: int = 0, max_draws: int | None = None
) -> ChannelParams:
    """Posterior draws as :class:`~pulse_lib.funnel.ChannelParams` of shape (S, K).

    Draws of all chains are stacked (S = chains x draws, or ``max_draws`` of them,
    thinned evenly). Conversion rates are drawn, independently of the regression, from
    the conjugate posterior Beta(a + acquisitions, b + clicks - acquisitions) per
    channel with the prior :data:`CONVERSION_PRIOR`; when the fitted table had no
    ``acquisitions`` column they are drawn from that prior alone (and a warning says
    so).
    """
    post = bc.get_group(idata, "posterior")
    missing = [v for v in SUMMARY_VARS if v not in post]
    if missing:
        raise SchemaError(
            f"the posterior lacks variable(s) {missing}; fit it with fit_channel_model"
        )
    stacked = {
        v: post[v].stack(sample=("chain", "draw")).transpose("sample", "channel").values
        for v in SUMMARY_VARS
    }
    n_total = stacked[SUMMARY_VARS[0]].shape[0]
    if max_draws is not None:
        if max_draws < 1:
            raise ConfigError(f"max_draws must be positive, got {max_draws}")
        keep = np.unique(
            np.linspace(0, n_total - 1, min(max_draws, n_total)).round().astype(int)
        )
        stacked = {v: a[keep] for v, a in stacked.items()}
    n_draws = stacked[SUMMARY_VARS[0]].shape[0]
    channels = _channels_of(idata)
    rng = np.random.default_rng(seed)
    a0, b0 = CONVERSION_PRIOR
    const = (
        bc.get_group(idata, "constant_data")
        if bc.has_group(idata, "constant_data")
        else {}
    )
    if "acquisitions_total" in const and "clicks_total" in const:
        acq = (
            const["acquisitions_total"].sel(channel=list(channels)).values.astype(float)
        )
        clk = const["clicks_total"].sel(channel=list(channels)).values.astype(float)
        conversion = rng.beta(a0 + acq, b0 + clk - acq, size=(n_draws, len(channels)))
    else:
        warnings.warn(
            "no acquisitions in the fitted table: conversion rates are drawn from the "
            f"prior Beta{CONVERSION_PRIOR}",
            stacklevel=2,
        )
        conversion = rng.beta(a0, b0, size=(n_draws, len(channels)))
    return ChannelParams(
        channels=channels,
        conversion=conversion,
        **{_FIELD_OF[v]: a for v, a in stacked.items()},
    )


def reorder_params(params: ChannelParams, channels: Sequence[str]) -> ChannelParams:
    """The same parameters with channels in the order ``channels`` (e.g. to match
    TRUE_PARAMS)."""
    missing = [c for c in channels if c not in params.channels]
    if missing or len(channels) != len(params.channels):
        raise SchemaError(
            f"cannot reorder channels {list(params.channels)} as {list(channels)}"
        )
    order = [params.channels.index(c) for c in channels]
    return ChannelParams(
        channels=tuple(channels),
        **{
            n: np.asarray(getattr(params, n))[..., order]
            for n in ChannelParams.ARRAY_FIELDS
        },
    )


class PosteriorResponse:
    """Draw impressions and clicks from a posterior, vectorized over its S draws.

    >>> response = PosteriorResponse(posterior_params(idata), seed=0)  # doctest:
    +SKIP
    >>> day = response.sample(spend=np.full((10, 4), 20.0), holiday=0)  # (S, 10, 4)
    arrays
    >>> one = response.sample(np.full((8, 4), 20.0), 0, draw=np.arange(8))  # (8, 4):
    draw i per row
    """

    def __init__(self, params: ChannelParams, seed: int | None = 0) -> None:
        if params.n_draws is None:
            raise SchemaError(
                "PosteriorResponse needs parameters with a draw axis (S, "
                "K); "
                "for a single parameter set use "
                "pulse_lib.funnel.simulate_funnel"
            )
        self.params = params
        self.rng = np.random.default_rng(seed)

    @property
    def n_draws(self) -> int:
        return int(self.params.n_draws or 0)

    @property
    def channels(self) -> tuple[str, ...]:
        return self.params.channels

    def _check(self, spend: np.ndarray, holiday: Any) -> tuple[np.ndarray, np.ndarray]:
        spend = np.asarray(spend, dtype=float)
        k = self.params.n_channels
        if spend.ndim == 0 or spend.shape[-1] != k:
            raise SchemaError(
                f"spend must have shape (..., {k}) for channels "
                f"{list(self.channels)}; got {spend.shape}"
            )
        if not np.all(np.isfinite(spend)) or np.any(spend < 0):
            raise SchemaError("spend must be finite and >= 0")
        hol = np.asarray(holiday, dtype=float)
        try:
            hol = np.broadcast_to(hol, spend.shape[:-1])
        except ValueError as exc:
            raise SchemaError(
                f"holiday of shape {hol.shape} does not broadcast to the "
                f"batch shape {spend.shape[:-1]}"
            ) from exc
        if not np.all(np.isin(hol, (0.0, 1.0))):
            raise SchemaError("holiday flags must be 0 or 1")
        return spend, hol

    def _index(
        self, spend: np.ndarray, draw: Any
    ) -> tuple[np.ndarray, tuple[int, ...]]:
        """Per-row draw indices (flattened) and the output batch shape."""
        batch = spend.shape[:-1]
        if draw is None:  # every draw for every row: output (S, *batch, K)
            idx = np.broadcast_to(
                np.arange(self.n_draws).reshape((-1,) + (1,) * len(batch)),
                (self.n_draws, *batch),
            )
            return idx.reshape(-1), (self.n_draws, *batch)
        idx = np.asarray(draw)
        if not np.issubdtype(idx.dtype, np.integer):
            raise SchemaError(f"draw must hold integer indices, got dtype {idx.dtype}")
        if np.any(idx < 0) or np.any(idx >= self.n_draws):
            raise SchemaError(
                f"draw indices must lie in [0, {self.n_draws}); got "
                f"{idx.min()}..{idx.max()}"
            )
        try:
            idx = np.broadcast_to(idx, batch)
        except ValueError as exc:
            raise SchemaError(
                f"draw of shape {idx.shape} does not broadcast to the "
                f"batch shape {batch}"
            ) from exc
        return idx.reshape(-1), batch

    def sample(
        self,
        spend: np.ndarray,
        holiday: Any,
        draw: Any = None,
        rng: np.random.Generator | None = None,
    ) -> dict[str, np.ndarray]:
        """Simulate a day of impressions, clicks and acquisitions.

        ``spend`` has shape (..., K); ``holiday`` broadcasts to the batch shape (...).
        With
        ``draw=None`` every posterior draw simulates every row: arrays of shape (S, ...,
        K).
        With ``draw`` an integer array broadcastable to the batch shape, row i uses draw
        ``draw[i]``: arrays of shape (..., K) (one posterior world per environment in
            Part II).
        """
        from pulse_lib.funnel import simulate_funnel

        spend, hol = self._check(spend, holiday)
        idx, out_batch = self._index(spend, draw)
        k = self.params.n_channels
        spend_rows = np.broadcast_to(spend, (*out_batch, k)).reshape(-1, k)
        hol_rows = np.broadcast_to(hol, out_batch).reshape(-1)
        day = simulate_funnel(
            self.params.draw(idx), spend_rows, hol_rows, rng or self.rng
        )
        return {name: values.reshape(*out_batch, k) for name, values in day.items()}

    def expected_impressions(self, spend: np.ndarray, holiday: Any) -> np.ndarray:
        """E[impressions | spend, holiday] for every draw: shape (S, ..., K) (exact)."""
        spend, hol = self._check(spend, holiday)
        idx, out_batch = self._index(spend, None)
        k = self.params.n_channels
        rows = np.broadcast_to(spend, (*out_batch, k)).reshape(-1, k)
        mu = expected_impressions(
            self.params.draw(idx), rows, np.broadcast_to(hol, out_batch).reshape(-1)
        )
        return mu.reshape(*out_batch, k)

    def expected_clicks(
        self,
        spend: np.ndarray,
        holiday: Any,
        n_inner: int = 64,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """E[clicks | spend, holiday] for every draw: shape (S, ..., K).

        Clicks depend on the day's random impressions, so the expectation over
        impressions is a Monte Carlo average of E[clicks | impressions] over ``n_inner``
        impression draws.
        """
        if n_inner < 1:
            raise ConfigError(f"n_inner must be positive, got {n_inner}")
        rng = rng or self.rng
        spend, hol = self._check(spend, holiday)
        idx, out_batch = self._index(spend, None)
        k = self.params.n_channels
        params = self.params.draw(idx)
        hol_rows = np.broadcast_to(hol, out_batch).reshape(-1)
        mu = expected_impressions(
            params, np.broadcast_to(spend, (*out_batch, k)).reshape(-1, k), hol_rows
        )
        total = np.zeros_like(mu)
        for _ in range(n_inner):
            impressions = rng.poisson(
                rng.gamma(shape=params.imp_phi, scale=mu / params.imp_phi)
            )
            total += expected_clicks_given_impressions(params, impressions, hol_rows)
        return (total / n_inner).reshape(*out_batch, k)


# --- checks used by the chapters and tests
# ------------------------------------------------------


def coverage_table(idata: Any, truth: ChannelParams, prob: float = 0.9) -> pd.DataFrame:
    """Central ``prob`` posterior interval of each parameter and channel, and whether it
    covers the generating value. One row per (parameter, channel)."""
    if not 0 < prob < 1:
        raise ConfigError(f"prob must lie in (0, 1), got {prob}")
    post = bc.get_group(idata, "posterior")
    channels = _channels_of(idata)
    unknown = [c for c in channels if c not in truth.channels]
    if unknown:
        raise SchemaError(
            f"channels {unknown} of the posterior are not in the truth "
            f"{list(truth.channels)}"
        )
    true = (
        reorder_params(truth, channels)
        if set(truth.channels) == set(channels)
        else truth
    )
    rows = []
    lo_q, hi_q = (1 - prob) / 2, 1 - (1 - prob) / 2
    for var in SUMMARY_VARS:
        values = (
            post[var]
            .stack(sample=("chain", "draw"))
            .transpose("sample", "channel")
            .values
        )
        for j, channel in enumerate(channels):
            t = float(
                np.asarray(getattr(true, _FIELD_OF[var]))[true.channels.index(channel)]
            )
            lo, hi = np.quantile(values[:, j], [lo_q, hi_q])
            rows.append(
                {
                    "parameter": var,
                    "channel": channel,
                    "truth": t,
                    "mean": float(values[:, j].mean()),
                    "lower": float(lo),
                    "upper": float(hi),
                    "covered": bool(lo <= t <= hi),
                }
            )
    return pd.DataFrame(rows)


def compare_posteriors(
    idata_a: Any, idata_b: Any, var_names: Sequence[str] = SUMMARY_VARS, z: float = 4.0
) -> pd.DataFrame:
    """Compare two posteriors of the same model parameter by parameter.

    Two correct samplers give means that differ only by Monte Carlo error, whose
    standard deviation is sqrt(mcse_a^2 + mcse_b^2) (ArviZ's MCSE of the mean).
    ``agree`` is ``|mean_a - mean_b| <= z * that``; z = 4 keeps the chance of a false
    alarm across ~30 parameters under 0.2% (normal tails).
    """
    rows = []
    # Not rounded: ArviZ rounds summaries for display by default, which would quantize
    # z.
    summaries = [
        bc.summary(d, var_names=list(var_names), kind="all") for d in (idata_a, idata_b)
    ]
    for label in summaries[0].index:
        a, b = summaries[0].loc[label], summaries[1].loc[label]
        se = float(np.hypot(a["mcse_mean"], b["mcse_mean"]))
        diff = float(a["mean"] - b["mean"])
        rows.append(
            {
                "parameter": label,
                "mean_a": a["mean"],
                "mean_b": b["mean"],
                "sd_a": a["sd"],
                "mcse_a": a["mcse_mean"],
                "mcse_b": b["mcse_mean"],
                "diff": diff,
                "z": diff / se if se > 0 else np.inf,
                "agree": abs(diff) <= z * se,
            }
        )
    return pd.DataFrame(rows)


def prior_predictive(
    frame: pd.DataFrame, n_draws: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Impressions and clicks drawn from the priors of :data:`PRIORS` (no pooling), per
    row.

    Returns arrays of shape (n_draws, N) for the validated table's rows (sorted by date
    and channel), with the predictors :func:`model_data` builds (centred per channel).
    Clicks are drawn given the observed impressions, as the model conditions on them.
    Means are capped at 1e12 so extreme prior draws do not overflow the sampler.
    """
    data, _ = model_data(frame)
    rng = np.random.default_rng(seed)
    k_index = np.asarray(data["channel"]) - 1
    n_ch = int(data["K"])
    hol = np.asarray(data["holiday"])
    coef = {
        c: rng.normal(PRIORS[c]["loc"], PRIORS[c]["scale"], size=(n_draws, n_ch))[
            :, k_index
        ]
        for c in COEFFICIENTS
    }
    phi = {
        p: 1.0
        / np.square(np.abs(rng.normal(0, INV_SQRT_PHI_SCALE, size=(n_draws, n_ch))))[
            :, k_index
        ]
        for p in ("imp", "clk")
    }
    eta_imp = (
        coef["imp_alpha"]
        + coef["imp_spend"] * data["x_spend"]
        + coef["imp_holiday"] * hol
    )
    eta_clk = (
        coef["clk_alpha"]
        + coef["clk_impressions"] * data["x_imp"]
        + coef["clk_holiday"] * hol
    )

    def nb(eta: np.ndarray, phi_: np.ndarray, mask: np.ndarray) -> np.ndarray:
        mu = np.exp(np.minimum(eta, np.log(1e12)))
        draws = rng.poisson(np.minimum(rng.gamma(shape=phi_, scale=mu / phi_), 1e12))
        return np.where(mask, draws, 0)

    return {
        "impressions": nb(eta_imp, phi["imp"], np.asarray(data["spend_pos"]) == 1),
        "clicks": nb(eta_clk, phi["clk"], np.asarray(data["impressions"]) > 0),
    }
