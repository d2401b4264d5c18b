"""One place for the differences between ArviZ 0.2x / 1.x and PyMC 5 / 6.

The book runs on two Bayesian stacks: the pinned CI set (Python 3.11, PyMC 5, ArviZ
0.2x, whose results are ``arviz.InferenceData``) and the current releases a reader gets
on Colab (Python 3.12, PyMC 6, ArviZ 1.x, whose results are ``xarray.DataTree`` and
whose ArviZ is split into ``arviz-base`` / ``arviz-stats`` / ``arviz-plots``). Library
code and chapters call the functions here instead of branching on versions:

* containers: :func:`from_dict`, :func:`from_cmdstanpy`, :func:`group_names`,
  :func:`has_group`, :func:`get_group` (always an ``xarray.Dataset``),
  :func:`set_group`;
* files: :func:`to_netcdf`, :func:`from_netcdf`;
* statistics: :func:`summary` (the same columns on both stacks: ``mean``, ``sd``,
  ``hdi_3%``/``hdi_97%`` (named after ``hdi_prob``), ``mcse_mean``, ``mcse_sd``,
  ``ess_bulk``, ``ess_tail``, ``r_hat``), :func:`rhat`, :func:`ess`, :func:`bfmi` (a
  NumPy array, one value per chain), :func:`hdi` (plain NumPy);
* plots: :func:`plot_energy`, :func:`plot_trace` (ArviZ's own, with the keyword each
  version wants for the figure size) and :func:`plot_forest` (drawn here with matplotlib
  on a given axis, so the figure is the same on both stacks);
* PyMC: :func:`pymc_sample` (PyMC's own NUTS: PyMC 6 would otherwise hand the model to
  nutpie when it is installed, and log-likelihood via :func:`compute_log_likelihood`,
  which PyMC 6 wants instead of ``idata_kwargs``) and :func:`find_map` (a dict of point
  estimates, with the seed keyword each version takes).

Which stack is installed is read once from the package versions (:data:`ARVIZ_1`,
:data:`PYMC_6`); the unit tests run on whichever is installed, and
``benchmarks/compat.py`` runs them on the other one.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pulse_lib.errors import ConfigError, SchemaError

__all__ = [
    "ARVIZ_1",
    "PYMC_6",
    "SUMMARY_COLUMNS",
    "bfmi",
    "compute_log_likelihood",
    "ess",
    "find_map",
    "from_cmdstanpy",
    "from_dict",
    "from_netcdf",
    "get_group",
    "group_names",
    "has_group",
    "hdi",
    "major_version",
    "plot_energy",
    "plot_forest",
    "plot_trace",
    "pymc_sample",
    "rhat",
    "set_group",
    "summary",
    "to_netcdf",
    "versions",
]

#: The Bayesian packages whose versions decide the code paths (reported by
#: :func:`versions`).
PACKAGES: tuple[str, ...] = (
    "arviz",
    "arviz-base",
    "arviz-stats",
    "arviz-plots",
    "pymc",
    "pytensor",
    "nutpie",
    "cmdstanpy",
    "xarray",
)


def major_version(package: str) -> int | None:
    """The major version of an installed distribution, or None when it is not
    installed."""
    try:
        version = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
    match = re.match(r"(\d+)", version)
    return int(match.group(1)) if match else None


def versions() -> dict[str, str | None]:
    """Installed versions of :data:`PACKAGES` (None when absent): what a compat
    report records."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


#: True when ArviZ 1.x is installed (``xarray.DataTree`` results, the split packages).
ARVIZ_1: bool = (major_version("arviz") or 0) >= 1
#: True when PyMC 6 (or newer) is installed.
PYMC_6: bool = (major_version("pymc") or 0) >= 6

#: Columns of :func:`summary` by ``kind`` (``{lo}``/``{hi}`` are the HDI bounds' names).
SUMMARY_COLUMNS: dict[str, tuple[str, ...]] = {
    "all": (
        "mean",
        "sd",
        "{lo}",
        "{hi}",
        "mcse_mean",
        "mcse_sd",
        "ess_bulk",
        "ess_tail",
        "r_hat",
    ),
    "stats": ("mean", "sd", "{lo}", "{hi}"),
    "diagnostics": ("mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat"),
}


# --- containers
# ---------------------------------------------------------------------------------


def _is_datatree(data: Any) -> bool:
    return type(data).__name__ == "DataTree"


def from_dict(
    posterior: Mapping[str, Any] | None = None,
    *,
    coords: Mapping[str, Any] | None = None,
    dims: Mapping[str, Sequence[str]] | None = None,
    **groups: Mapping[str, Any] | None,
) -> Any:
    """Arrays (chain, draw, ...) per variable, per group, as the installed ArviZ's
    container.

    ``from_dict(posterior={"x": a}, sample_stats={"diverging": d}, coords=...,
    dims=...)`` works on both stacks (ArviZ 1.x takes one dict of groups; 0.2x takes a
    keyword per group).
    """
    import arviz as az

    all_groups = {"posterior": posterior, **groups}
    all_groups = {
        name: dict(values) for name, values in all_groups.items() if values is not None
    }
    if not all_groups:
        raise SchemaError(
            "from_dict needs at least one group of arrays (e.g. posterior={...})"
        )
    if ARVIZ_1:
        return az.from_dict(all_groups, coords=coords, dims=dims)
    return az.from_dict(**all_groups, coords=coords, dims=dims)


def from_cmdstanpy(fit: Any, **kwargs: Any) -> Any:
    """``arviz.from_cmdstanpy`` (the fit is positional: 0.2x and 1.x name it
    differently).

    Keyword arguments common to both versions: ``posterior_predictive``,
    ``log_likelihood``, ``observed_data``, ``constant_data``, ``coords``, ``dims``.
    """
    import arviz as az

    return az.from_cmdstanpy(fit, **kwargs)


def group_names(data: Any) -> list[str]:
    """Names of the groups (``posterior``, ``sample_stats``, ...) of an InferenceData
    or DataTree."""
    if _is_datatree(data):
        return [str(name) for name in data.children]
    groups = getattr(data, "groups", None)
    if callable(groups):
        return [str(name) for name in groups()]
    raise SchemaError(
        f"expected an arviz.InferenceData or xarray.DataTree, got {type(data).__name__}"
    )


def has_group(data: Any, name: str) -> bool:
    """True when ``data`` has the group ``name``."""
    return name in group_names(data)


def get_group(data: Any, name: str) -> Any:
    """Group ``name`` as an ``xarray.Dataset`` (a copy-free view's dataset on ArviZ
    1.x)."""
    if not has_group(data, name):
        raise SchemaError(f"no group {name!r}; the data has {group_names(data)}")
    group = data[name]
    return group.to_dataset() if _is_datatree(group) else group


def set_group(data: Any, name: str, dataset: Any) -> Any:
    """Add or replace group ``name`` with ``dataset`` (an ``xarray.Dataset``), in place.

    Returns ``data`` for chaining. Attributes of the dataset are kept.
    """
    import xarray as xr

    if not isinstance(dataset, xr.Dataset):
        raise SchemaError(
            f"group {name!r} must be an xarray.Dataset, got {type(dataset).__name__}"
        )
    if _is_datatree(data):
        data[name] = xr.DataTree(dataset=dataset)
    elif has_group(data, name):
        setattr(data, name, dataset)
    else:
        data.add_groups({name: dataset})
    return data


# --- statistics
# ---------------------------------------------------------------------------------


def _hdi_names(hdi_prob: float) -> tuple[str, str]:
    lo, hi = 100 * (1 - hdi_prob) / 2, 100 * (1 + hdi_prob) / 2
    fmt = "{:g}"
    return f"hdi_{fmt.format(round(lo, 6))}%", f"hdi_{fmt.format(round(hi, 6))}%"


def summary(
    data: Any,
    var_names: Sequence[str] | None = None,
    kind: str = "all",
    hdi_prob: float = 0.94,
    round_to: int | None = None,
) -> pd.DataFrame:
    """``az.summary`` with the same columns and values on ArviZ 0.2x and 1.x.

    ``kind`` is ``"all"``, ``"stats"`` or ``"diagnostics"`` (columns in
    :data:`SUMMARY_COLUMNS`); the HDI columns are named ``hdi_<lower>%`` /
    ``hdi_<upper>%`` (``hdi_3%`` and ``hdi_97%`` for the default 94%), as ArviZ 0.2x
    names them. Values are not rounded unless ``round_to`` (decimals) is given: ArviZ
    1.x rounds to significant digits by default and 0.2x to decimals, which would make
    the same posterior print differently. Rows are ``var[coord]`` labels, e.g.
    ``imp_spend[search]``, on both versions.
    """
    import arviz as az

    if kind not in SUMMARY_COLUMNS:
        raise ConfigError(
            f"unknown summary kind {kind!r}; choose one of {list(SUMMARY_COLUMNS)}"
        )
    if not 0 < hdi_prob < 1:
        raise ConfigError(f"hdi_prob must lie in (0, 1), got {hdi_prob}")
    names = list(var_names) if var_names is not None else None
    lo, hi = _hdi_names(hdi_prob)
    columns = [c.format(lo=lo, hi=hi) for c in SUMMARY_COLUMNS[kind]]
    if ARVIZ_1:
        frame = az.summary(
            data,
            var_names=names,
            kind=kind,
            ci_kind="hdi",
            ci_prob=hdi_prob,
            round_to="none",
        )
        pct = f"{100 * hdi_prob:g}"
        frame = frame.rename(columns={f"hdi{pct}_lb": lo, f"hdi{pct}_ub": hi})
    else:
        frame = az.summary(
            data, var_names=names, kind=kind, hdi_prob=hdi_prob, round_to="none"
        )
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SchemaError(
            f"ArviZ's summary lacks column(s) {missing}; it has {list(frame.columns)}"
        )
    frame = frame[columns].astype(float)
    return frame.round(round_to) if round_to is not None else frame


def rhat(data: Any, var_names: Sequence[str] | None = None) -> Any:
    """Rank-normalized split R-hat per variable, as an ``xarray.Dataset`` on both
    versions."""
    import arviz as az

    result = az.rhat(data, var_names=list(var_names) if var_names is not None else None)
    return result.to_dataset() if _is_datatree(result) else result


def ess(data: Any, var_names: Sequence[str] | None = None, method: str = "bulk") -> Any:
    """Effective sample size per variable (``method`` "bulk" or "tail"), as an
    ``xarray.Dataset``."""
    import arviz as az

    if method not in ("bulk", "tail"):
        raise ConfigError(f"unknown ESS method {method!r}; choose 'bulk' or 'tail'")
    result = az.ess(
        data,
        var_names=list(var_names) if var_names is not None else None,
        method=method,
    )
    return result.to_dataset() if _is_datatree(result) else result


def from_netcdf(path: Any) -> Any:
    """Read a file written by :func:`to_netcdf`, loaded into memory (the file can be
    replaced)."""
    import arviz as az

    data = az.from_netcdf(str(path))
    return data.load() if hasattr(data, "load") else data


def to_netcdf(data: Any, path: Any) -> None:
    """Write an InferenceData / DataTree to a NetCDF file (every group)."""
    data.to_netcdf(str(path))


def bfmi(data: Any) -> np.ndarray:
    """E-BFMI per chain (a NumPy array); values under 0.3 point to poor exploration."""
    import arviz as az

    result = az.bfmi(data)
    if _is_datatree(result):
        result = result.to_dataset()["energy"]
    return np.asarray(result, dtype=float)


def hdi(values: Any, prob: float = 0.94) -> tuple[float, float]:
    """Highest-density interval of a 1-d sample: the shortest interval holding
    ``prob`` of it."""
    if not 0 < prob < 1:
        raise ConfigError(f"prob must lie in (0, 1), got {prob}")
    x = np.sort(np.asarray(values, dtype=float).ravel())
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise SchemaError(f"hdi needs a non-empty, finite sample; got {x.size} values")
    n_in = int(np.floor(prob * x.size))
    if n_in < 1 or n_in >= x.size:
        return float(x[0]), float(x[-1])
    widths = x[n_in:] - x[: x.size - n_in]
    start = int(np.argmin(widths))
    return float(x[start]), float(x[start + n_in])


# --- plots
# --------------------------------------------------------------------------------------


def _figure_kwargs(figsize: tuple[float, float] | None) -> dict[str, Any]:
    if figsize is None:
        return {}
    if ARVIZ_1:
        return {"backend": "matplotlib", "figure_kwargs": {"figsize": figsize}}
    return {"figsize": figsize}


def plot_energy(data: Any, figsize: tuple[float, float] | None = None) -> Any:
    """ArviZ's energy plot (marginal vs transition energy) on the current matplotlib
    figure."""
    import arviz as az

    return az.plot_energy(data, **_figure_kwargs(figsize))


def plot_trace(
    data: Any, var_names: Sequence[str], figsize: tuple[float, float] | None = None
) -> Any:
    """ArviZ's trace plot of ``var_names`` (ArviZ 0.2x: compact, one panel per
    variable)."""
    import arviz as az

    kwargs = _figure_kwargs(figsize)
    if not ARVIZ_1:
        kwargs["compact"] = True
    return az.plot_trace(data, var_names=list(var_names), **kwargs)


def plot_forest(
    models: Mapping[str, Any],
    var_names: Sequence[str],
    ax: Any,
    hdi_prob: float = 0.94,
) -> Any:
    """Posterior mean and ``hdi_prob`` HDI of each variable and coordinate, one colour
    per model.

    ``models`` maps a label to an InferenceData/DataTree; chains are pooled. Drawn with
    matplotlib on ``ax`` (ArviZ 1.x's forest plot builds its own figure), so the same
    figure comes out of both stacks. Returns ``ax``.
    """
    if not models:
        raise ConfigError("plot_forest needs at least one model")
    rows: list[str] = []
    intervals: dict[str, list[tuple[float, float, float]]] = {
        label: [] for label in models
    }
    for i, (label, data) in enumerate(models.items()):
        post = get_group(data, "posterior")
        missing = [v for v in var_names if v not in post]
        if missing:
            raise SchemaError(f"model {label!r} lacks variable(s) {missing}")
        for var in var_names:
            arr = post[var]
            extra = [d for d in arr.dims if d not in ("chain", "draw")]
            stacked = arr.stack(sample=("chain", "draw")).transpose("sample", *extra)
            flat = stacked.values.reshape(stacked.shape[0], -1)
            coords = [
                arr[d].values if d in arr.coords else np.arange(arr.sizes[d])
                for d in extra
            ]
            labels = [
                f"{var}[{', '.join(str(coords[k][j]) for k, j in enumerate(idx))}]"
                if extra
                else var
                for idx in np.ndindex(*[arr.sizes[d] for d in extra])
            ]
            for j, name in enumerate(labels):
                if i == 0:
                    rows.append(name)
                lo, hi = hdi(flat[:, j], hdi_prob)
                intervals[label].append((float(flat[:, j].mean()), lo, hi))
    n_models = len(models)
    offsets = np.linspace(-0.25, 0.25, n_models) if n_models > 1 else np.zeros(1)
    y = np.arange(len(rows))[::-1]
    for k, (label, values) in enumerate(intervals.items()):
        if len(values) != len(rows):
            raise SchemaError(
                f"model {label!r} has {len(values)} coordinates, the "
                f"first model {len(rows)}"
            )
        mean, lo, hi = (np.array(v) for v in zip(*values))
        ax.hlines(y + offsets[k], lo, hi, color=f"C{k}", lw=2)
        ax.plot(mean, y + offsets[k], "o", color=f"C{k}", ms=4, label=label)
    ax.set_yticks(y)
    ax.set_yticklabels(rows)
    ax.legend(fontsize=8)
    return ax


# --- PyMC
# --------------------------------------------------------------------------------------


def compute_log_likelihood(data: Any, model: Any = None) -> Any:
    """Add the pointwise log-likelihood group to ``data`` (in place); returns
    ``data``."""
    import pymc as pm

    result = pm.compute_log_likelihood(data, model=model, progressbar=False)
    if (
        result is not None
        and result is not data
        and has_group(result, "log_likelihood")
    ):
        set_group(data, "log_likelihood", get_group(result, "log_likelihood"))
    return data


def pymc_sample(
    draws: int,
    tune: int,
    chains: int,
    cores: int = 1,
    seed: int = 0,
    progress: bool = False,
    log_likelihood: bool = False,
    model: Any = None,
    target_accept: float = 0.8,
) -> Any:
    """PyMC's own NUTS on the model in context (or ``model``), without convergence
    checks.

    ``target_accept`` is the step-size adaptation's target acceptance rate (Stan's
    ``adapt_delta``; 0.8 is both libraries' default).

    ``nuts_sampler="pymc"`` is explicit: PyMC 6 picks nutpie when it is installed. The
    log-likelihood, when asked for, comes from :func:`compute_log_likelihood` (PyMC 6
    deprecates ``idata_kwargs={"log_likelihood": True}``).
    """
    import pymc as pm

    data = pm.sample(
        draws=draws,
        tune=tune,
        chains=chains,
        cores=cores,
        random_seed=seed,
        progressbar=progress,
        nuts_sampler="pymc",
        compute_convergence_checks=False,
        model=model,
        target_accept=target_accept,
    )
    if log_likelihood:
        compute_log_likelihood(data, model=model)
    return data


def find_map(seed: int = 0, model: Any = None, **kwargs: Any) -> dict[str, np.ndarray]:
    """``pm.find_MAP`` as a dict of point estimates, seeded the way the installed PyMC
    spells it.

    PyMC 5 takes ``seed``; PyMC 6 takes ``random_seed`` (and warns on ``seed``), warns
    that the result becomes an InferenceData (so it is asked for one here and turned
    into the dict) and that the start point will be jittered (so ``jitter=False`` keeps
    today's behaviour).
    """
    import pymc as pm

    params = inspect.signature(pm.find_MAP).parameters
    options: dict[str, Any] = {"progressbar": False, "model": model, **kwargs}
    options["random_seed" if "random_seed" in params else "seed"] = seed
    if "return_inferencedata" in params:
        options.setdefault("return_inferencedata", True)
    if "jitter" in params:
        options.setdefault("jitter", False)
    result = pm.find_MAP(**options)
    if isinstance(result, dict):
        return result
    post = get_group(result, "posterior")
    out = {}
    for name in post.data_vars:
        values = post[name]
        values = values.isel({d: 0 for d in ("chain", "draw") if d in values.dims})
        out[str(name)] = np.asarray(values.values)
    return out
