"""Where the chapters get PulseRL data: the real release when present, else the
surrogate."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd

from pulse_lib import book
from pulse_lib.errors import ConfigError
from pulse_lib.pulserl import data as D
from pulse_lib.pulserl import simulator as S

#: Names of the released datasets, and the logging policy our surrogate uses in their
#: place.
RELEASE_NAMES: dict[str, tuple[str, str]] = {
    "train": ("500k_dataset", "heuristic"),
    "eval": ("10k_uniform_dataset_users", "uniform"),
}


def release_dir(name: str) -> Path:
    """``datasets/pulserl/raw/<name>``: where to extract the authors' release (not
    shipped)."""
    return book.datasets_dir() / "pulserl" / "raw" / name


def release_fingerprint(root: Path) -> str:
    """A key of the raw release files: every file's relative path, size and modification
    time.

    The Parquet cache is named by it, so a changed, added or removed file is never
    served from a stale cache.
    """
    digest = hashlib.sha256()
    for path in D.sample_batch_files(root):
        stat = path.stat()
        digest.update(
            f"{path.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode()
        )
    return digest.hexdigest()[:16]


def subsample_episodes(table: pd.DataFrame, n_users: int, seed: int) -> pd.DataFrame:
    """``n_users`` whole episodes (users) drawn at random without replacement, or all
    of them."""
    ids = table["eps_id"].unique()
    if n_users >= ids.size:
        return table
    keep = np.random.default_rng(seed).choice(ids, size=n_users, replace=False)
    return table[table["eps_id"].isin(keep)].reset_index(drop=True)


def load_dataset(
    kind: str,
    n_users: int,
    seed: int,
    config: S.SimulatorConfig | None = None,
    *,
    raw_dir: str | os.PathLike[str] | None = None,
    epsilon: float | None = None,
) -> tuple[pd.DataFrame, str]:
    """The transition table for ``kind`` (``"train"`` or ``"eval"``) and a line saying
    its source.

    Reads the real release if it was extracted under :func:`release_dir` (or under
    ``raw_dir/<name>`` when ``raw_dir``, or else the environment variable
    ``PULSE_PULSERL_RAW_DIR``, is given): the full release is cached as Parquet in
    ``datasets/generated/``, keyed on the raw files (:func:`release_fingerprint`), and
    ``n_users`` episodes are drawn from it with ``seed``. Otherwise the surrogate is
    generated once and cached (``epsilon`` sets the training logger's exploration). Use
    :func:`is_real` on the source line to tell which.
    """
    if kind not in RELEASE_NAMES:
        raise ConfigError(
            f"unknown dataset kind {kind!r}; choose one of {sorted(RELEASE_NAMES)}"
        )
    name, logging_policy = RELEASE_NAMES[kind]
    raw_dir = raw_dir or os.environ.get(RAW_DIR_ENV) or None
    real = Path(raw_dir) / name if raw_dir else release_dir(name)
    if real.is_dir():
        cache = (
            book.generated_dir()
            / f"pulserl_real_{name}_{release_fingerprint(real)}.parquet"
        )
        if cache.exists():
            table = D.read_parquet(cache)
        else:
            table = D.read_release(real)
            D.write_parquet(table, cache)
        total = table["eps_id"].nunique()
        table = subsample_episodes(table, n_users, seed)
        return table, (
            f"{REAL_PREFIX} ({name}, read from {real}; "
            f"{table['eps_id'].nunique():,} of {total:,} "
            f"users, drawn with seed {seed})"
        )
    if raw_dir:
        raise ConfigError(f"raw_dir {raw_dir} has no folder {name!r} of the release")
    config = config or S.SimulatorConfig()
    eps = (
        S.DEFAULT_EPSILON
        if epsilon is None and logging_policy == "heuristic"
        else epsilon
    )
    tag = f"_eps{eps:g}" if eps is not None else ""
    name = f"pulserl_surrogate_{kind}_{n_users}u_{config.horizon}d{tag}_seed{seed}"
    cache = book.generated_dir() / f"{name}.parquet"
    default = config == S.SimulatorConfig()
    if default and cache.exists():
        table = D.read_parquet(cache)
    else:
        table = S.generate_logged_dataset(
            n_users, seed, logging_policy, config, epsilon=eps
        )
        if default:
            D.write_parquet(table, cache)
    label = f"{logging_policy} logging policy" + (
        f", exploration epsilon {eps:g}" if eps is not None else ""
    )
    source = (
        f"the surrogate (pulse_lib.pulserl.simulator; {n_users:,} users, "
        f"{config.horizon} days, "
        f"{label}, seed {seed}) standing in for {name}"
    )
    return table, source


#: Environment variable naming a folder that holds the release's datasets (chapters
#: 07-08 use it).
RAW_DIR_ENV = "PULSE_PULSERL_RAW_DIR"

#: How a source line of the real release starts.
REAL_PREFIX = "the authors' release"


def is_real(source: str) -> bool:
    """True when a :func:`load_dataset` source line names the real release."""
    return source.startswith(REAL_PREFIX)
