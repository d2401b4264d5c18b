"""Hostile inputs against the configs and package entry points (coupons, PulseRL, funnel,
journey simulator, Open Bandit loader, chapter runner): every bad input gets a clear error
naming the field, column or path; none is accepted silently, none hangs.

Built like ``tests/test_hostile_inputs.py`` (see ``tests/hostile.py`` for what a row checks and
CONTRIBUTING.md for how to add one). Each family starts from a good input that
``test_valid_inputs_still_pass`` shows is accepted, then replaces one argument at a time.
"""

from __future__ import annotations

import dataclasses
import gzip
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hostile import Case, Ctx, case_timeout, params, run_case  # noqa: F401

from pulse_lib import funnel, ppo, runner
from pulse_lib.budget_env import BudgetEnvConfig
from pulse_lib.coupons import ope as coupon_ope
from pulse_lib.coupons.baselines import CQLConfig as CouponCQLConfig
from pulse_lib.coupons.rbcq import RBCQConfig
from pulse_lib.coupons.reme import REMEConfig
from pulse_lib.coupons.simulator import CouponSimConfig
from pulse_lib.errors import (
    ConfigError,
    DataFormatError,
    PathError,
    SchemaError,
    SetupError,
)
from pulse_lib.nba import obd
from pulse_lib.nba.simulator import JourneySimulator, ObjectiveWeights, default_catalog
from pulse_lib.production import events as production_events
from pulse_lib.production import pipeline as production_pipeline
from pulse_lib.pulserl import agents as pulserl_agents
from pulse_lib.pulserl import coverage as pulserl_coverage
from pulse_lib.pulserl import data as pulserl_data
from pulse_lib.pulserl import evaluation as pulserl_evaluation
from pulse_lib.pulserl.features import FEATURE_NAMES, NEXT_FEATURE_NAMES
from pulse_lib.pulserl.simulator import SimulatorConfig

RELEASE = Path(__file__).parent / "fixtures" / "pulserl" / "tiny_release"

# Bad values by kind of field: (input class, value).
BAD_INT = [("float-2.5", 2.5), ("float-2.0", 2.0), ("bool", True), ("string", "4"), ("none", None),
           ("nan", float("nan")), ("huge", 10**30)]
BAD_COUNT = BAD_INT + [("zero", 0), ("negative", -3)]
BAD_REAL = [("nan", float("nan")), ("inf", float("inf")), ("string", "0.1"), ("none", None),
            ("bool", True), ("complex", 1j)]
BAD_POSITIVE = BAD_REAL + [("zero", 0.0), ("negative", -1.0)]
BAD_NON_NEGATIVE = BAD_REAL + [("negative", -1.0)]
BAD_PROBABILITY = BAD_REAL + [("negative", -0.1), ("above-one", 5.0)]
BAD_DISCOUNT = BAD_PROBABILITY + [("zero", 0.0)]  # a discount in (0, 1]
BAD_BOOL = [("int", 1), ("string", "yes"), ("none", None)]


# --------------------------------------------------------------------------- configs


def _field_cases(cls: type, field: str, bad: list[tuple[str, Any]], module: str,
                 match: str | None = None) -> Iterator[Case]:
    """One row per bad value of one config field: ``cls(**{field: value})`` must raise a
    ConfigError naming ``Cls.field`` (or ``match``)."""
    pattern = match or rf"{cls.__name__}\.{re.escape(field)}"
    for input_class, value in bad:
        yield Case(f"{module}.{cls.__name__}/{field}-{input_class}",
                   lambda c, value=value: cls(**{field: value}), pattern, ConfigError)


#: (class, module label, {field: bad values}); the message must name ``Class.field``.
CONFIG_FIELDS: list[tuple[type, str, dict[str, list[tuple[str, Any]]]]] = [
    (CouponCQLConfig, "coupons.baselines", {
        "hidden": BAD_COUNT, "batch_size": BAD_COUNT, "target_update_interval": BAD_COUNT,
        "lr": BAD_POSITIVE, "alpha": BAD_NON_NEGATIVE, "gamma": BAD_DISCOUNT,
    }),
    (ppo.PPOConfig, "ppo", {
        "total_steps": BAD_COUNT, "n_envs": BAD_COUNT, "update_epochs": BAD_COUNT,
        "n_minibatches": BAD_COUNT, "hidden": BAD_COUNT,
        "seed": BAD_INT + [("negative", -1)],
        "learning_rate": BAD_POSITIVE, "max_grad_norm": BAD_POSITIVE, "reward_scale": BAD_POSITIVE,
        "vf_coef": BAD_NON_NEGATIVE, "ent_coef": BAD_NON_NEGATIVE,
        "gamma": BAD_PROBABILITY, "gae_lambda": BAD_PROBABILITY,
        "clip_coef": BAD_REAL + [("zero", 0.0), ("one", 1.0), ("negative", -0.2)],
        "target_kl": BAD_POSITIVE[:3] + [("zero", 0.0), ("negative", -1.0)],
        "init_log_std": [("nan", float("nan")), ("inf", float("inf")), ("string", "-1")],
        "anneal_lr": BAD_BOOL, "clip_value": BAD_BOOL, "pace_prior": BAD_BOOL,
    }),
    (RBCQConfig, "coupons.rbcq", {
        "n_heads": BAD_COUNT, "hidden": BAD_COUNT, "batch_size": BAD_COUNT,
        "target_update_every": BAD_COUNT, "horizon": [c for c in BAD_COUNT if c[0] != "none"],
        "lr": BAD_POSITIVE, "huber_delta": BAD_POSITIVE, "bcq_threshold": BAD_PROBABILITY,
        "lambda_low": BAD_NON_NEGATIVE, "lambda_high": BAD_REAL,
    }),
    (REMEConfig, "coupons.reme", {
        "n_heads": BAD_COUNT, "hidden": BAD_COUNT, "batch_size": BAD_COUNT,
        "target_update_every": BAD_COUNT, "horizon": [c for c in BAD_COUNT if c[0] != "none"],
        "lr": BAD_POSITIVE, "huber_delta": BAD_POSITIVE,
    }),
    (pulserl_agents.CQLConfig, "pulserl.agents", {
        "n_quantiles": BAD_COUNT, "batch_size": BAD_COUNT, "target_update_interval": BAD_COUNT,
        "learning_rate": BAD_POSITIVE, "adam_epsilon": BAD_POSITIVE, "huber_kappa": BAD_POSITIVE,
        "alpha": BAD_NON_NEGATIVE, "gamma": BAD_DISCOUNT,
    }),
    (SimulatorConfig, "pulserl.simulator", {
        "horizon": BAD_COUNT, "gamma": BAD_DISCOUNT, "send_cost": BAD_NON_NEGATIVE,
        "penalty_opt_out": BAD_NON_NEGATIVE, "fatigue_drag": BAD_NON_NEGATIVE,
        "opt_out_per_fatigue": BAD_NON_NEGATIVE, "reward_deal": BAD_REAL,
        "reward_registration": BAD_REAL, "opt_out_base": BAD_REAL, "reward_visualization": BAD_REAL,
        "reward_activation": BAD_REAL, "reward_active_day": BAD_REAL,
        "fatigue_decay": BAD_PROBABILITY, "prone_share_old": BAD_PROBABILITY,
        "prone_share_other": BAD_PROBABILITY,
        "start_date": [("day-first", "27/10/2020"), ("integer", 20201027), ("none", None),
                       ("garbage", "soon")],
    }),
    (pulserl_coverage.SweepConfig, "pulserl.coverage", {
        "n_steps": BAD_COUNT, "n_checkpoints": BAD_COUNT, "batch_size": BAD_COUNT,
        "qr_quantiles": BAD_COUNT, "target_update_interval": BAD_COUNT,
        "learning_rate": BAD_POSITIVE, "alpha": BAD_NON_NEGATIVE,
        "gamma": BAD_DISCOUNT,
    }),
    (BudgetEnvConfig, "budget_env", {
        "horizon_days": BAD_COUNT, "holidays_ahead_days": BAD_COUNT, "calendar_days": BAD_COUNT,
        "clicks_scale": BAD_POSITIVE, "cost_weight": BAD_NON_NEGATIVE,
        "value_per_click": BAD_NON_NEGATIVE, "organic": BAD_BOOL,
        "calendar_start": [("day-first", "01/07/2016"), ("integer", 20160701), ("none", None)],
    }),
    (production_events.EventsConfig, "production.events", {
        "n_users": BAD_COUNT, "shard_size": BAD_COUNT, "seed": BAD_INT + [("negative", -1)],
        "logging_policy": [("unknown", "marketer"), ("none", None), ("int", 1)],
        "simulator": [("dict", {"horizon": 28}), ("none", None)],
    }),
    (production_pipeline.PipelineConfig, "production.pipeline", {
        "score_day": [c for c in BAD_INT if c[0] != "none"] + [("negative", -1)],
        "train_users": BAD_COUNT, "n_steps": BAD_COUNT, "batch_size": BAD_COUNT,
        "target_update_interval": BAD_COUNT, "n_quantiles": BAD_COUNT,
        "score_batch_size": BAD_COUNT, "num_cpus": BAD_COUNT,
        "object_store_memory": [c for c in BAD_COUNT if c[0] != "none"],
        "seed": BAD_INT + [("negative", -1)], "learning_rate": BAD_POSITIVE,
        "holdout_share": BAD_PROBABILITY + [("zero", 0.0), ("one", 1.0)],
        "alphas": [("empty", ()), ("negative", (-1.0,)), ("nan", (float("nan"),)),
                   ("string", ("4",)), ("bool", (True,))],
        "hidden": [("empty", ()), ("zero", (0,)), ("float", (2.5,))],
    }),
    (CouponSimConfig, "coupons.simulator", {
        "n_users": BAD_COUNT, "horizon": BAD_COUNT, "v_scale": BAD_POSITIVE,
        "habit": BAD_REAL + [("one", 1.0), ("negative", -0.1)],
    }),
]


def _config_cases() -> Iterator[Case]:
    for cls, module, fields in CONFIG_FIELDS:
        for field, bad in fields.items():
            yield from _field_cases(cls, field, bad, module)
    # tuple-valued fields: each element is checked, the message names the field
    for cls_name, value in [("nan", (float("nan"), 0.5, 0.5)), ("not-summing", (0.5, 0.5, 0.5)),
                            ("two-types", (0.5, 0.5)), ("negative", (-0.5, 1.0, 0.5)),
                            ("string", "abc"), ("none", None)]:
        yield Case(f"coupons.simulator.CouponSimConfig/type_shares-{cls_name}",
                   lambda c, v=value: CouponSimConfig(type_shares=v), r"CouponSimConfig\.type_shares",
                   ConfigError)
    values = np.linspace(0.1, 2.1, 21)
    for cls_name, value in [("negative", (-0.1, *values[1:])), ("nan", (np.nan, *values[1:])),
                            ("inf", (np.inf, *values[1:])), ("too-few", tuple(values[:5])),
                            ("strings", tuple(str(v) for v in values))]:
        yield Case(f"coupons.simulator.CouponSimConfig/coupon_values-{cls_name}",
                   lambda c, v=value: CouponSimConfig(coupon_values=v),
                   r"CouponSimConfig\.coupon_values", ConfigError)
    for cls_name, value in [("nan", ((np.nan, 0.2), (0.0, 1.0), (0.8, 1.0))),
                            ("above-one", ((0.0, 1.5), (0.0, 1.0), (0.8, 1.0))),
                            ("ragged", ((0.0,), (0.0, 1.0), (0.8, 1.0)))]:
        yield Case(f"coupons.simulator.CouponSimConfig/p0_ranges-{cls_name}",
                   lambda c, v=value: CouponSimConfig(p0_ranges=v), r"CouponSimConfig\.p0_ranges",
                   ConfigError)
    for cls_name, value in [("nan", (np.nan, 0.5, 0.3)), ("above-one", (1.5, 0.5, 0.3))]:
        yield Case(f"coupons.simulator.CouponSimConfig/sensitivity-{cls_name}",
                   lambda c, v=value: CouponSimConfig(sensitivity=v), r"CouponSimConfig\.sensitivity",
                   ConfigError)
    for cls_name, value in [("zero-width", (0,)), ("float-width", (2.5,)), ("empty", ()),
                            ("list", [64, 64]), ("string", "64"), ("bool-width", (True,))]:
        yield Case(f"pulserl.agents.CQLConfig/hidden-{cls_name}",
                   lambda c, v=value: pulserl_agents.CQLConfig(hidden=v), r"CQLConfig\.hidden",
                   ConfigError)
        yield Case(f"pulserl.coverage.SweepConfig/hidden-{cls_name}",
                   lambda c, v=value: pulserl_coverage.SweepConfig(hidden=v), r"SweepConfig\.hidden",
                   ConfigError)
    for cls_name, value in [("nan-low", (float("nan"), 100.0)), ("negative", (-1.0, 5.0)),
                            ("one-value", (100.0,)), ("string", "ab"), ("none", None),
                            ("inf-high", (100.0, float("inf")))]:
        yield Case(f"budget_env.BudgetEnvConfig/budget_range-{cls_name}",
                   lambda c, v=value: BudgetEnvConfig(budget_range=v), r"budget_range", ConfigError)
    for cls_name, value in [("int", 3), ("empty", "")]:
        yield Case(f"ppo.PPOConfig/device-{cls_name}", lambda c, v=value: ppo.PPOConfig(device=v),
                   r"PPOConfig\.device", ConfigError)


# --------------------------------------------------------------------------- funnel


def _good_funnel() -> pd.DataFrame:
    """Four days of two channels in the funnel schema (dates as ISO text, as in a CSV)."""
    dates = np.repeat(pd.date_range("2016-07-01", periods=4).strftime("%Y-%m-%d"), 2)
    return pd.DataFrame({
        "date": dates, "channel": ["search", "social"] * 4, "spend": [10.0, 5.0] * 4,
        "holiday": [0] * 8, "impressions": [1_000_000, 500_000] * 4, "clicks": [20_000, 8_000] * 4,
        "acquisitions": [100, 30] * 4,
    })


def _with(column: str, row: int, value: Any) -> pd.DataFrame:
    frame = _good_funnel().astype({column: object})
    frame.at[row, column] = value
    return frame


def _csv(c: Ctx, text: str | bytes, name: str = "logs.csv") -> Path:
    path = c.tmp / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def _funnel_cases() -> Iterator[Case]:
    v = funnel.validate_funnel
    huge = [("float-1e20", 1e20), ("int-1e20", 10**20), ("int64-overflow", 2**63), ("inf", np.inf)]
    for column in ("impressions", "clicks", "acquisitions"):
        for cls_name, value in huge:
            yield Case(f"funnel.validate_funnel/{column}-{cls_name}",
                       lambda c, col=column, val=value: v(_with(col, 3, val)), rf"'{column}'.*row",
                       SchemaError)
    for cls_name, value in [("day-first", "02/07/2016"), ("month-first", "07/02/2016"),
                            ("integer", 20160702), ("float", 1.5), ("garbage", "tomorrow"),
                            ("truncated", "2016-07-0"), ("with-time", "2016-07-02 10:00"),
                            ("empty", "")]:
        yield Case(f"funnel.validate_funnel/date-{cls_name}",
                   lambda c, val=value: v(_with("date", 3, val)), r"'date'.*row 3", SchemaError)
    yield Case("funnel.validate_funnel/date-all-integers",
               lambda c: v(_good_funnel().assign(date=np.repeat([20160701, 20160702, 20160703,
                                                                  20160704], 2))),
               r"'date'.*row 0.*20160701", SchemaError)
    yield Case("funnel.validate_funnel/date-day-first-without-format",
               lambda c: v(_good_funnel().assign(date=np.repeat(
                   ["01/07/2016", "02/07/2016", "03/07/2016", "04/07/2016"], 2))),
               r"'date'.*'01/07/2016'.*%Y-%m-%d", SchemaError)
    for cls_name, fmt in [("none", None), ("no-directives", "YYYY-MM-DD")]:
        yield Case(f"funnel.validate_funnel/date_format-{cls_name}",
                   lambda c, f=fmt: v(_good_funnel(), date_format=f), "format", SchemaError)
    yield Case("funnel.validate_funnel/not-a-frame", lambda c: v([[1, 2]]), "DataFrame", SchemaError)
    good_csv = _good_funnel().to_csv(index=False)
    cut = good_csv.rstrip("\n")[:-2]  # inside the last number: "30" becomes nothing, "100" "1"
    load = funnel.load_funnel
    yield Case("funnel.load_funnel/truncated-inside-last-number",
               lambda c: load(_csv(c, cut), cpm_range=None), r"logs\.csv.*truncated",
               DataFormatError)
    yield Case("funnel.load_funnel/no-final-newline",
               lambda c: load(_csv(c, good_csv.rstrip("\n")), cpm_range=None), r"logs\.csv.*newline",
               DataFormatError)
    yield Case("funnel.load_funnel/truncated-gzip",
               lambda c: load(_csv(c, gzip.compress(good_csv.encode())[:-12], "logs.csv.gz"),
                              cpm_range=None), r"logs\.csv\.gz", DataFormatError)
    yield Case("funnel.load_funnel/gzip-without-final-newline",
               lambda c: load(_csv(c, gzip.compress(cut.encode()), "logs.csv.gz"), cpm_range=None),
               r"logs\.csv\.gz.*truncated", DataFormatError)
    rows = good_csv.splitlines(keepends=True)
    yield Case("funnel.load_funnel/cut-at-a-row-boundary",
               lambda c: load(_csv(c, "".join(rows[:-1])), cpm_range=None, expected_rows=8),
               r"logs\.csv: 7 rows, expected 8", DataFormatError)
    for cls_name, value in [("zero", 0), ("float", 8.0), ("bool", True), ("string", "8")]:
        yield Case(f"funnel.load_funnel/expected_rows-{cls_name}",
                   lambda c, val=value: load(_csv(c, good_csv), expected_rows=val), "expected_rows",
                   ConfigError)
    yield Case("funnel.load_funnel/missing", lambda c: load(c.tmp / "nope.csv"), "nope.csv",
               FileNotFoundError)
    yield Case("funnel.load_funnel/directory", lambda c: load(c.tmp), "directory", PathError)
    yield Case("funnel.load_funnel/path-none", lambda c: load(None), "path", ConfigError)
    for cls_name, content in [("empty", b""), ("binary", b"\x00\x01\x02\x9fgarbage\n"),
                              ("utf16", good_csv.encode("utf-16")),
                              ("latin1-garbage", "caf\xe9,\xff\n".encode("latin-1") * 3)]:
        yield Case(f"funnel.load_funnel/{cls_name}",
                   lambda c, b=content: load(_csv(c, b), cpm_range=None), "logs.csv", DataFormatError)
    yield Case("funnel.load_funnel/day-first-csv",
               lambda c: load(_csv(c, good_csv.replace("2016-07-02", "02/07/2016")), cpm_range=None),
               r"'date'.*02/07/2016", SchemaError)
    yield Case("funnel.load_funnel/huge-count-csv",
               lambda c: load(_csv(c, good_csv.replace(",20000,", ",100000000000000000000,", 1)),
                              cpm_range=None), r"'clicks'.*64-bit", SchemaError)


# --------------------------------------------------------------------------- coupons OPE


def _coupon_ope_cases() -> Iterator[Case]:
    ones, half = np.ones((3, 4)), np.full((3, 4), 0.5)

    def with_value(base: np.ndarray, value: float) -> np.ndarray:
        out = base.copy()
        out[1, 2] = value
        return out

    prob_classes = [("above-one", 5.0), ("nan", np.nan), ("negative", -0.5), ("inf", np.inf)]
    for cls_name, value in prob_classes:
        args = {"target_prob": with_value(half, value), "behaviour_prob": half}
        yield Case(f"coupons.ope.sequential_doubly_robust/target_prob-{cls_name}",
                   lambda c, a=args: coupon_ope.sequential_doubly_robust(
                       ones, a["target_prob"], a["behaviour_prob"], ones, ones),
                   r"target_prob.*\(1, 2\)", SchemaError)
        yield Case(f"coupons.ope.effective_sample_size/target_prob-{cls_name}",
                   lambda c, a=args: coupon_ope.effective_sample_size(a["target_prob"], half),
                   r"target_prob.*\(1, 2\)", SchemaError)
    for cls_name, value in prob_classes + [("zero", 0.0), ("denormal", 1e-320)]:
        mu = with_value(half, value)
        yield Case(f"coupons.ope.sequential_doubly_robust/behaviour_prob-{cls_name}",
                   lambda c, mu=mu: coupon_ope.sequential_doubly_robust(ones, half, mu, ones, ones),
                   r"behaviour_prob.*\(1, 2\)", SchemaError)
        yield Case(f"coupons.ope.effective_sample_size/behaviour_prob-{cls_name}",
                   lambda c, mu=mu: coupon_ope.effective_sample_size(half, mu),
                   r"behaviour_prob.*\(1, 2\)", SchemaError)
    for name, position in [("rewards", 0), ("q_logged", 3), ("v_target", 4)]:
        for cls_name, value in [("nan", with_value(ones, np.nan)), ("inf", with_value(ones, np.inf)),
                                ("wrong-shape", np.ones((3, 5))), ("1d", np.ones(4)),
                                ("string", "1"), ("none", None)]:
            if name == "rewards" and cls_name == "wrong-shape":
                continue  # rewards set the shape: the mismatch is reported on target_prob
            args = [ones, half, half, ones, ones]
            args[position] = value
            yield Case(f"coupons.ope.sequential_doubly_robust/{name}-{cls_name}",
                       lambda c, a=tuple(args): coupon_ope.sequential_doubly_robust(*a), name,
                       SchemaError)
    yield Case("coupons.ope.effective_sample_size/shape-mismatch",
               lambda c: coupon_ope.effective_sample_size(half, np.full((3, 5), 0.5)), "behaviour_prob",
               SchemaError)
    yield Case("coupons.ope.effective_sample_size/empty",
               lambda c: coupon_ope.effective_sample_size(np.ones((0, 4)), np.ones((0, 4))),
               "target_prob", SchemaError)
    for cls_name, eps in [("nan", np.nan), ("above-one", 1.5), ("negative", -0.1)]:
        yield Case(f"coupons.ope.target_probability/epsilon-{cls_name}",
                   lambda c, e=eps: coupon_ope.target_probability(np.zeros(3), np.zeros(3), e),
                   "epsilon", SchemaError)
    for cls_name, w in [("nan", [1.0, np.nan]), ("negative", [1.0, -2.0]), ("empty", []),
                        ("string", "1")]:
        yield Case(f"pulserl.evaluation.effective_sample_size/{cls_name}",
                   lambda c, w=w: pulserl_evaluation.effective_sample_size(w), "weights", SchemaError)


# --------------------------------------------------------------------------- journey simulator


_WORLD: dict[str, Any] = {}


def _journey() -> tuple[JourneySimulator, np.ndarray, ObjectiveWeights, int]:
    if not _WORLD:
        sim = JourneySimulator(default_catalog(new_action_round=5, retire_round=8), n_users=20,
                               seed=1)
        x = sim.contexts()[:4]
        _WORLD.update(sim=sim, x=x, k=sim.expected_reward(x, ObjectiveWeights()).shape[1])
    return _WORLD["sim"], _WORLD["x"], ObjectiveWeights(), _WORLD["k"]


def _policy_value(c: Ctx, edit: Callable[[np.ndarray], np.ndarray]) -> float:
    sim, x, w, k = _journey()
    probs = np.full((len(x), k), 1.0 / k)
    return sim.policy_value(edit(probs), x, w)


def _row(value: list[float]) -> Callable[[np.ndarray], np.ndarray]:
    def edit(p: np.ndarray) -> np.ndarray:
        p = p.copy()
        p[2, :] = 0.0
        p[2, : len(value)] = value
        return p

    return edit


def _journey_cases() -> Iterator[Case]:
    for cls_name, value in [("above-one-and-negative", [2.0, -1.0]), ("nan", [np.nan, 1.0]),
                            ("inf", [np.inf, 0.0])]:
        yield Case(f"nba.JourneySimulator.policy_value/action_probs-{cls_name}",
                   lambda c, v=value: _policy_value(c, _row(v)), r"action_probs.*\(2, 0\)",
                   SchemaError)
    yield Case("nba.JourneySimulator.policy_value/action_probs-not-summing",
               lambda c: _policy_value(c, lambda p: p * 0.5), "action_probs row 0 sums", SchemaError)
    yield Case("nba.JourneySimulator.policy_value/action_probs-wrong-shape",
               lambda c: _policy_value(c, lambda p: p[:, :-1]), "action_probs.*shape", SchemaError)
    yield Case("nba.JourneySimulator.policy_value/action_probs-string",
               lambda c: _policy_value(c, lambda p: "uniform"), "action_probs", SchemaError)


# --------------------------------------------------------------------------- PulseRL tables


_TABLE: dict[str, pd.DataFrame] = {}


def _table() -> pd.DataFrame:
    if not _TABLE:
        _TABLE["t"] = pulserl_data.read_release(RELEASE)
    return _TABLE["t"].copy()


def _broken(column: str, row: int, value: Any) -> pd.DataFrame:
    """The good table with one cell replaced (the column widened so pandas accepts it)."""
    table = _table()
    numeric = isinstance(value, (int, float, np.integer, np.floating))
    if numeric and isinstance(value, float) and table[column].dtype.kind in "iu":
        table[column] = table[column].astype(float)
    elif not numeric or table[column].dtype.kind == "b":
        table[column] = table[column].astype(object)
    table.loc[row, column] = value
    return table


def _pulserl_cases() -> Iterator[Case]:
    validate = pulserl_data.validate_table
    feature, next_feature = FEATURE_NAMES[5], NEXT_FEATURE_NAMES[7]
    rows = [
        (next_feature, "nan", np.nan), (next_feature, "inf", np.inf),
        (next_feature, "string", "x"), (feature, "nan", np.nan), (feature, "string", "x"),
        ("t", "negative", -1), ("t", "fractional", 1.5), ("t", "nan", np.nan),
        ("eps_id", "fractional", 2.5), ("eps_id", "huge", 1e20), ("eps_id", "string", "user"),
        ("done", "two", 2), ("done", "string", "yes"), ("action", "fractional", 0.5),
        ("action", "two", 2), ("action_prob", "zero", 0.0), ("action_prob", "above-one", 5.0),
        ("action_prob", "nan", np.nan), ("reward", "inf", np.inf), ("reward", "float32-overflow", 1e39),
        ("reward", "string", "1"),
    ]
    for column, cls_name, value in rows:
        yield Case(f"pulserl.data.validate_table/{column}-{cls_name}",
                   lambda c, col=column, val=value: validate(_broken(col, 4, val)),
                   rf"'{re.escape(column)}'", SchemaError)
    for column in ("t", "done", "eps_id", next_feature):
        yield Case(f"pulserl.data.validate_table/missing-{column}",
                   lambda c, col=column: validate(_table().drop(columns=col)), re.escape(column),
                   SchemaError)
    yield Case("pulserl.data.validate_table/repeated-step",
               lambda c: validate(pd.concat([_table(), _table().iloc[[3]]], ignore_index=True)),
               r"\('eps_id', 't'\).*repeats episode", SchemaError)
    yield Case("pulserl.data.validate_table/empty", lambda c: validate(_table().iloc[:0]), "no rows",
               SchemaError)
    yield Case("pulserl.data.validate_table/not-a-frame", lambda c: validate({"t": [0]}), "DataFrame",
               SchemaError)
    first = min(RELEASE.rglob("*.json"))
    read = pulserl_data.read_sample_batches
    yield Case("pulserl.data.read_sample_batches/a-string-path", lambda c: read(str(first)),
               r"single path.*\[path\]", ConfigError)
    yield Case("pulserl.data.read_sample_batches/a-path-object", lambda c: read(first),
               r"single path", ConfigError)
    yield Case("pulserl.data.read_sample_batches/missing-file",
               lambda c: read([first, c.tmp / "gone.json"]), "gone.json", FileNotFoundError)
    yield Case("pulserl.data.read_sample_batches/a-directory", lambda c: read([c.tmp]), "directory",
               PathError)
    yield Case("pulserl.data.read_sample_batches/none-entry", lambda c: read([None]),
               "SampleBatch file", ConfigError)
    yield Case("pulserl.data.read_sample_batches/empty-list", lambda c: read([]), "no SampleBatch",
               DataFormatError)


# --------------------------------------------------------------------------- runner CLI


def _book(c: Ctx, toc: str | bytes | None = None, chapters: tuple[str, ...] = ("01_a", "02_b")) -> Path:
    """A fake checkout in ``c.tmp`` (``PULSE_BOOK_ROOT``) with empty chapter notebooks."""
    (c.tmp / "chapters").mkdir()
    for stem in chapters:
        (c.tmp / "chapters" / f"{stem}.ipynb").write_text("{}")
    if toc is None:
        toc = "format: jb-book\nroot: intro\nchapters:\n" + "".join(
            f"- file: chapters/{s}\n" for s in chapters)
    if toc != "absent":
        (c.tmp / "_toc.yml").write_bytes(toc.encode() if isinstance(toc, str) else toc)
    c.monkeypatch.setenv("PULSE_BOOK_ROOT", str(c.tmp))

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a bad command line reached staging or execution")

    c.monkeypatch.setattr(runner, "stage_book", refuse)
    c.monkeypatch.setattr(runner, "execute_chapter", refuse)
    return c.tmp


def _cli(argv: list[str]) -> int:
    """``runner.main`` as the shell sees it: a non-zero status is a SystemExit."""
    code = runner.main(argv)
    if code:
        raise SystemExit(code)
    return code


def _runner_cases() -> Iterator[Case]:
    for cls_name, argv, match in [
        ("duplicate-stem-and-number", ["run", "01", "01_a"], "01_a is requested twice"),
        ("duplicate-number", ["run", "02", "02"], "02_b is requested twice"),
        ("duplicate-path", ["run", "chapters/01_a.ipynb", "01"], "01_a is requested twice"),
        ("unknown-chapter", ["run", "07"], "unknown chapter '07'"),
        ("jobs-negative", ["run", "--jobs", "-3", "01"], "--jobs"),
        ("jobs-zero", ["run", "--jobs", "0", "01"], "--jobs"),
        ("jobs-float", ["run", "--jobs", "2.5", "01"], "--jobs"),
        ("jobs-word", ["run", "--jobs", "many", "01"], "--jobs"),
        ("profile-unknown", ["run", "--profile", "fast", "01"], "profile"),
        ("no-command", [], "required"),
    ]:
        yield Case(f"runner.cli/{cls_name}", lambda c, a=argv: (_book(c), _cli(a)), match, SystemExit)
    bad_tocs = {
        "not-yaml": ("chapters: [file: chapters/01_a\n", r"_toc\.yml is not valid YAML"),
        "a-list": ("- file: chapters/01_a\n", r"_toc\.yml.*mapping"),
        "chapters-not-a-list": ("chapters: 5\n", r"'chapters' must be a list"),
        "entry-a-string": ("chapters:\n- chapters/01_a\n", r"chapters\[0\].*mapping"),
        "file-a-number": ("chapters:\n- file: 3\n", r"'file' must be a path"),
        "listed-twice": ("chapters:\n- file: chapters/01_a\n- file: chapters/01_a\n",
                         r"lists chapters/01_a twice"),
        "missing-notebook": ("chapters:\n- file: chapters/09_z\n", r"09_z\.ipynb does not exist"),
        "binary": (b"\xff\xfe\x00garbage", r"_toc\.yml is not valid YAML"),
        "absent": ("absent", r"no table of contents"),
        "empty": ("", r"_toc\.yml.*mapping"),
    }
    for cls_name, (toc, match) in bad_tocs.items():
        yield Case(f"runner.cli/toc-{cls_name}", lambda c, t=toc: (_book(c, t), _cli(["run", "01"])),
                   match, SystemExit)
        yield Case(f"runner.toc_chapters/{cls_name}",
                   lambda c, t=toc: runner.toc_chapters(_book(c, t)), match, ConfigError)
    for cls_name, jobs in [("negative", -3), ("zero", 0), ("float", 2.5), ("bool", True),
                           ("string", "2")]:
        yield Case(f"runner.run_chapters/jobs-{cls_name}",
                   lambda c, j=jobs: runner.run_chapters(["01"], jobs=j, root=_book(c)), "jobs",
                   ConfigError)
    yield Case("runner.run_chapters/duplicates",
               lambda c: runner.run_chapters(["01", "01_a"], root=_book(c)), "requested twice",
               ConfigError)
    yield Case("runner.resolve_chapters/a-string",
               lambda c: runner.resolve_chapters(_book(c), "01"), "list of names", ConfigError)


# --------------------------------------------------------------------------- Open Bandit loader


def _obd_cases() -> Iterator[Case]:
    yield Case("nba.obd.load_obd/path-missing", lambda c: obd.load_obd(path=c.tmp / "nope.csv"),
               "nope.csv", FileNotFoundError)
    yield Case("nba.obd.load_obd/path-directory", lambda c: obd.load_obd(path=c.tmp), "directory",
               PathError)
    yield Case("nba.obd.load_obd/path-int", lambda c: obd.load_obd(path=3), "Open Bandit CSV path",
               ConfigError)

    def bundled_missing(c: Ctx) -> Any:
        (c.tmp / "bts" / "men").mkdir(parents=True)
        c.monkeypatch.setattr(obd, "obd_dir", lambda: c.tmp)
        return obd.load_obd("bts", "men")

    yield Case("nba.obd.load_obd/bundled-file-missing", bundled_missing,
               r"not found: .*bts/men/men\.csv.*reinstall", SetupError)


CASES: list[Case] = [
    *_config_cases(), *_funnel_cases(), *_coupon_ope_cases(), *_journey_cases(), *_pulserl_cases(),
    *_runner_cases(), *_obd_cases(),
]


@pytest.mark.parametrize("case", params(CASES))
def test_hostile_input_is_refused_clearly(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    run_case(case, Ctx(tmp_path, monkeypatch), capsys)


def test_every_config_field_is_covered_and_documented() -> None:
    """Each field of the configs above has at least one bad-input row, and a one-line note."""
    ids = {case.id for case in CASES}
    for cls, module, _ in CONFIG_FIELDS:
        for f in dataclasses.fields(cls):
            if f.name in {"device", "channels", "logged_spend"}:  # covered by their own rows/tests
                continue
            assert any(i.startswith(f"{module}.{cls.__name__}/{f.name}-") for i in ids), (cls, f.name)
    for cls, _, _ in CONFIG_FIELDS:
        source = Path(__import__(cls.__module__, fromlist=["_"]).__file__).read_text()
        body = source[source.index(f"class {cls.__name__}"):]
        for f in dataclasses.fields(cls):
            line = next(ln for ln in body.splitlines() if re.match(rf"\s+{f.name}: ", ln))
            above = body.splitlines()[body.splitlines().index(line) - 1].strip()
            assert "#" in line or above.startswith("#"), f"{cls.__name__}.{f.name} has no note"


# --------------------------------------------------------------------------- valid input still passes


def test_valid_inputs_still_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The good input each family starts from is accepted (the table cannot pass by refusing
    everything), including the forms the new checks must not break."""
    for cls, _, _ in CONFIG_FIELDS:
        cls()
    ppo.PPOConfig(n_envs=np.int64(8), seed=np.int64(3), target_kl=0.02, device="cuda")
    RBCQConfig(horizon=30, lambda_low=0.0, lambda_high=2.0)
    pulserl_agents.CQLConfig(hidden=(8, np.int64(4)))
    BudgetEnvConfig(budget_range=[100.0, np.float64(200.0)], calendar_start="2017-01-31")
    CouponSimConfig(type_shares=(0.2, 0.3, 0.5), coupon_values=tuple(np.linspace(0, 2, 21)))
    # funnel: ISO text, datetime64, date objects, an explicit day-first format, big valid counts
    good = _good_funnel()
    assert len(funnel.validate_funnel(good, cpm_range=None)) == 8
    assert len(funnel.validate_funnel(good.assign(date=pd.to_datetime(good["date"])), cpm_range=None)) == 8
    as_dates = good.assign(date=[d.date() for d in pd.to_datetime(good["date"])])
    assert len(funnel.validate_funnel(as_dates, cpm_range=None)) == 8
    day_first = good.assign(date=pd.to_datetime(good["date"]).dt.strftime("%d/%m/%Y"))
    out = funnel.validate_funnel(day_first, cpm_range=None, date_format="%d/%m/%Y")
    assert out["date"].iloc[-1] == pd.Timestamp("2016-07-04")  # 04/07 read as 4 July
    big = good.assign(impressions=2**62, clicks=2**61, acquisitions=2**60)
    assert funnel.validate_funnel(big, cpm_range=None)["impressions"].iloc[0] == 2**62
    path = tmp_path / "logs.csv"
    path.write_text(good.to_csv(index=False))
    pd.testing.assert_frame_equal(funnel.load_funnel(path, cpm_range=None, expected_rows=8),
                                  funnel.validate_funnel(good, cpm_range=None))
    gz = tmp_path / "logs.csv.gz"
    gz.write_bytes(gzip.compress(good.to_csv(index=False).encode()))
    assert len(funnel.load_funnel(gz, cpm_range=None)) == 8
    # coupons OPE and journey simulator
    half = np.full((3, 4), 0.5)
    dr = coupon_ope.sequential_doubly_robust(np.ones((3, 4)), half, half, np.ones((3, 4)), np.ones((3, 4)))
    assert np.isfinite(dr.value)
    np.testing.assert_allclose(coupon_ope.effective_sample_size(half, half), 3.0)
    np.testing.assert_allclose(coupon_ope.effective_sample_size(np.zeros((3, 4)), half), 0.0)
    sim, x, w, k = _journey()
    assert np.isfinite(sim.policy_value(np.full((len(x), k), 1.0 / k), x, w))
    assert pulserl_evaluation.effective_sample_size(np.ones(4)) == pytest.approx(4.0)
    # PulseRL tables
    table = _table()
    pulserl_data.validate_table(table)
    pulserl_data.validate_table(table.assign(done=table["done"].astype(int), t=table["t"].astype(float)))
    files = sorted(RELEASE.rglob("*.json"))
    assert len(pulserl_data.read_sample_batches(files)) == len(table)
    assert len(pulserl_data.read_sample_batches(iter(files))) == len(table)
    # runner: numbers, stems and paths of distinct chapters resolve
    (tmp_path / "book").mkdir()
    root = _book(Ctx(tmp_path / "book", monkeypatch))
    assert runner.resolve_chapters(root, ["02", "chapters/01_a.ipynb"]) == ["02_b", "01_a"]
    assert runner.toc_chapters(root) == ["01_a", "02_b"]


def test_the_table_covers_the_issue_examples() -> None:
    """The examples issue 15 names for these packages are rows of the table."""
    ids = {case.id for case in CASES}
    for example in [
        "coupons.baselines.CQLConfig/lr-negative", "ppo.PPOConfig/max_grad_norm-negative",
        "ppo.PPOConfig/vf_coef-negative", "ppo.PPOConfig/hidden-zero",
        "coupons.rbcq.RBCQConfig/lr-negative", "coupons.rbcq.RBCQConfig/lambda_low-nan",
        "pulserl.agents.CQLConfig/gamma-above-one", "pulserl.simulator.SimulatorConfig/send_cost-nan",
        "budget_env.BudgetEnvConfig/clicks_scale-nan", "coupons.simulator.CouponSimConfig/type_shares-nan",
        "coupons.simulator.CouponSimConfig/coupon_values-negative", "ppo.PPOConfig/n_envs-float-2.5",
        "ppo.PPOConfig/seed-bool", "funnel.validate_funnel/clicks-float-1e20",
        "funnel.load_funnel/truncated-inside-last-number", "funnel.validate_funnel/date-day-first",
        "funnel.validate_funnel/date-all-integers",
        "coupons.ope.sequential_doubly_robust/target_prob-above-one",
        "nba.JourneySimulator.policy_value/action_probs-above-one-and-negative",
        "pulserl.data.read_sample_batches/a-string-path", "runner.cli/duplicate-stem-and-number",
        "runner.cli/jobs-negative", "runner.cli/toc-not-yaml", "nba.obd.load_obd/bundled-file-missing",
    ]:
        assert example in ids, example
    assert len(CASES) >= 500
