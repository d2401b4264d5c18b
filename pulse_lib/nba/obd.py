"""The Open Bandit Dataset sample bundled with ``obp`` (Saito et al. 2021), read
offline.

ZOZOTOWN (fashion e-commerce) showed 80 items in 3 positions; two logging policies ran
in the same week: uniform random (``random``) and Bernoulli Thompson sampling (``bts``).
``obp`` ships 10,000 rows of each, per campaign (``all``, ``men``, ``women``), under
``obp/dataset/obd/<policy>/<campaign>/<campaign>.csv``. ``obp``'s own loader fails on
pandas 3 (its ``pre_process`` step), so we read the CSVs directly and check their
schema.

Install: ``pip install --no-deps --ignore-requires-python obp==0.5.7`` (its pins predate
Python 3.11; the estimators and the sample work with the book's stack). See
``datasets/open_bandit/DATACARD.md``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pulse_lib.errors import ConfigError, DataFormatError, SchemaError, SetupError
from pulse_lib.validation import check_file

__all__ = [
    "CAMPAIGNS",
    "N_ITEMS",
    "N_POSITIONS",
    "POLICIES",
    "REQUIRED_COLUMNS",
    "bts_action_dist",
    "load_obd",
    "obd_dir",
]

POLICIES: tuple[str, ...] = ("random", "bts")
CAMPAIGNS: tuple[str, ...] = ("all", "men", "women")
REQUIRED_COLUMNS: tuple[str, ...] = (
    "timestamp",
    "item_id",
    "position",
    "click",
    "propensity_score",
)
N_ITEMS = {"all": 80, "men": 34, "women": 46}
N_POSITIONS = 3
_INSTALL = "pip install --no-deps --ignore-requires-python obp==0.5.7"


def obd_dir() -> Path:
    """Folder of the bundled sample inside the installed ``obp`` package."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("obp")
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        raise SetupError(
            "the Open Bandit sample comes with the 'obp' package, which "
            f"is not installed; run: {_INSTALL}"
        )
    path = Path(spec.origin).parent / "dataset" / "obd"
    if not path.is_dir():
        raise SetupError(
            f"'obp' is installed but has no bundled sample at {path}; "
            f"reinstall it: {_INSTALL}"
        )
    return path


def load_obd(
    policy: str = "random", campaign: str = "all", path: str | Path | None = None
) -> pd.DataFrame:
    """One logging policy's sample as a DataFrame, with a checked schema.

    Columns kept: ``timestamp`` (UTC), ``item_id`` (0..n_items-1), ``position`` (0..2,
    from the file's 1..3), ``click`` (0/1), ``propensity_score`` (in (0, 1]), and the
    user features. ``path`` overrides the CSV location (tests use it to feed broken
    files). A ``path`` that does not exist is a :class:`FileNotFoundError` naming it (a
    folder: a :class:`~pulse_lib.errors.PathError`); a bundled file missing from the
    installed ``obp`` is a :class:`~pulse_lib.errors.SetupError` naming the path and how
    to reinstall.
    """
    if policy not in POLICIES:
        raise ConfigError(
            f"unknown logging policy {policy!r}; choose one of {POLICIES}"
        )
    if campaign not in CAMPAIGNS:
        raise ConfigError(f"unknown campaign {campaign!r}; choose one of {CAMPAIGNS}")
    if path is not None:
        # the caller's file: FileNotFoundError
        csv = check_file("Open Bandit CSV path", path)
    else:
        csv = obd_dir() / policy / campaign / f"{campaign}.csv"
        if not csv.is_file():  # the package's own file: a broken install
            raise SetupError(
                f"Open Bandit file not found: {csv} is missing from the "
                "installed "
                f"'obp'; reinstall it: {_INSTALL}"
            )
    try:
        df = pd.read_csv(csv, index_col=0)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataFormatError(f"cannot parse {csv}: {exc}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise SchemaError(
            f"{csv.name}: missing column(s) {missing}; found {list(df.columns)[:8]}..."
        )
    for col in ("item_id", "position", "click", "propensity_score"):
        values = pd.to_numeric(df[col], errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy())
        if bad.size:
            raise SchemaError(
                f"{csv.name}: column {col!r} row {int(bad[0])} is "
                f"{df[col].iloc[bad[0]]!r}, not a number"
            )
        df[col] = values
    n_items = N_ITEMS[campaign]
    checks = {
        "item_id": (df["item_id"] < 0)
        | (df["item_id"] >= n_items)
        | (df["item_id"] % 1 != 0),
        "position": ~df["position"].isin([1, 2, 3]),
        "click": ~df["click"].isin([0, 1]),
        "propensity_score": (df["propensity_score"] <= 0)
        | (df["propensity_score"] > 1),
    }
    for col, bad_mask in checks.items():
        bad = np.flatnonzero(bad_mask.to_numpy())
        if bad.size:
            raise SchemaError(
                f"{csv.name}: column {col!r} row {int(bad[0])} has "
                f"invalid value {df[col].iloc[bad[0]]!r}"
            )
    df["item_id"] = df["item_id"].astype(int)
    df["position"] = df["position"].astype(int) - 1
    df["click"] = df["click"].astype(int)
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    return df.sort_values("timestamp").reset_index(drop=True)


def bts_action_dist(
    campaign: str = "all", n_sim: int = 100_000, seed: int = 12345
) -> np.ndarray:
    """``pi_bts(item | position)`` as an ``(n_items, 3)`` matrix.

    The production Bernoulli TS policy is context-free; ``obp`` reproduces it from the
    posterior it ran with (``is_zozotown_prior=True``) by simulating ``n_sim`` slates.
    """
    if campaign not in CAMPAIGNS:
        raise ConfigError(f"unknown campaign {campaign!r}; choose one of {CAMPAIGNS}")
    obd_dir()  # a clear SetupError if obp is missing
    from obp.policy import BernoulliTS

    policy = BernoulliTS(
        n_actions=N_ITEMS[campaign],
        len_list=N_POSITIONS,
        is_zozotown_prior=True,
        campaign=campaign,
        random_state=seed,
    )
    dist = policy.compute_batch_action_dist(n_sim=n_sim, n_rounds=1)[0]
    return np.asarray(dist, dtype=float)
