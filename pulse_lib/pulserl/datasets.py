"""Where the chapters get PulseRL data: the real release when present, else the surrogate."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pulse_lib import book
from pulse_lib.errors import ConfigError
from pulse_lib.pulserl import data as D
from pulse_lib.pulserl import simulator as S

#: Names of the released datasets, and the logging policy our surrogate uses in their place.
RELEASE_NAMES: dict[str, tuple[str, str]] = {
    "train": ("500k_dataset", "heuristic"),
    "eval": ("10k_uniform_dataset_users", "uniform"),
}


def release_dir(name: str) -> Path:
    """``datasets/pulserl/raw/<name>``: where to extract the authors' release (not shipped)."""
    return book.datasets_dir() / "pulserl" / "raw" / name


def load_dataset(kind: str, n_users: int, seed: int, config: S.SimulatorConfig | None = None) -> tuple[pd.DataFrame, str]:
    """The transition table for ``kind`` (``"train"`` or ``"eval"``) and a line saying its source.

    Reads the real release if it was extracted under :func:`release_dir`; otherwise generates
    the surrogate once and caches it as Parquet in ``datasets/generated/``.
    """
    if kind not in RELEASE_NAMES:
        raise ConfigError(f"unknown dataset kind {kind!r}; choose one of {sorted(RELEASE_NAMES)}")
    name, logging_policy = RELEASE_NAMES[kind]
    real = release_dir(name)
    if real.is_dir():
        cache = book.generated_dir() / f"pulserl_real_{name}.parquet"
        if cache.exists():
            return D.read_parquet(cache), f"the authors' release ({name}, read from {real})"
        table = D.read_release(real)
        D.write_parquet(table, cache)
        return table, f"the authors' release ({name}, read from {real})"
    config = config or S.SimulatorConfig()
    cache = book.generated_dir() / f"pulserl_surrogate_{kind}_{n_users}u_{config.horizon}d_seed{seed}.parquet"
    if config == S.SimulatorConfig() and cache.exists():
        table = D.read_parquet(cache)
    else:
        table = S.generate_logged_dataset(n_users, seed, logging_policy, config)
        if config == S.SimulatorConfig():
            D.write_parquet(table, cache)
    source = (f"the surrogate (pulse_lib.pulserl.simulator; {n_users:,} users, {config.horizon} days, "
              f"{logging_policy} logging policy, seed {seed}) standing in for {name}")
    return table, source
