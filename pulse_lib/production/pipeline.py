"""The PulseRL pipeline on Ray: raw events -> daily user states -> transitions ->
training -> scoring every user -> decisions.

Each stage is a plain function of one shard of users (numpy and pyarrow, testable
without Ray); Ray only spreads the shards over the cores of a laptop or the nodes of a
cluster:

1. **States** (Ray Data ``map`` over shards): the 63 named features of every user at
   the start of the scoring day, from the users and events tables
   (:func:`shard_states`). A user who opted out of the channel is not *eligible*.
2. **Transitions** (Ray Data ``map`` over the training sample's shards): one row per
   user and logged day, in the release's transition schema (:func:`shard_transitions`):
   the state before and after the day, the logged action and propensity, the reward
   rebuilt from the day's events.
3. **Training** (Ray Tune): one trial per CQL penalty weight ``alpha``, each a
   :class:`~pulse_lib.pulserl.agents.TorchCQL` on the training users, ranked by the
   linear fitted-Q evaluation (:func:`~pulse_lib.pulserl.evaluation.fit_fqe_linear`)
   of its greedy policy on held-out users: an off-policy estimate, as production would
   have to use (no simulator there).
4. **Scoring** (Ray Data batch inference): ``read_parquet`` of the states,
   ``map_batches`` of :func:`score_batch` (the versioned agent, loaded once per worker
   process), ``write_parquet`` of the decisions.

Every artefact gets a manifest (:mod:`pulse_lib.production.versioning`): the states
and transitions datasets, the MDP definition, the agent, the decisions; each records
its parents, so a decision traces back to the event log it came from. The same
:func:`run_pipeline` runs on a local Ray (``address=None``: ``ray.init`` with
``num_cpus``) or on a cluster (``address="host:port"``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import pulse_lib
from pulse_lib.errors import ConfigError, SchemaError, SetupError
from pulse_lib.io import atomic_path
from pulse_lib.production import versioning as V
from pulse_lib.production.events import (
    EVENT_TYPES,
    EVENTS_SCHEMA_VERSION,
    OBJECTIVES,
    EventsConfig,
    ShardLog,
    list_shards,
    read_config,
    read_shard,
)
from pulse_lib.pulserl.features import (
    ADDRESS_STATES,
    FEATURE_INDEX,
    FEATURE_NAMES,
    GENDERS,
    N_FEATURES,
    NEXT_FEATURE_NAMES,
    RECENCY_EVENTS,
)
from pulse_lib.pulserl.simulator import SimulatorConfig
from pulse_lib.validation import check_fields

_CODE = {name: k for k, name in enumerate(EVENT_TYPES)}
#: recency features (activation, location, visualization, deal) and their events
_RECENCY_CODES = tuple(
    _CODE[e] for e in ("activation", "debt_located", "debt_viewed", "deal")
)
assert len(_RECENCY_CODES) == len(RECENCY_EVENTS)
#: days since an event that never happened (any value above a year gives the same
#: features; the surrogate starts its counters at 10,000)
_NEVER = 10_000.0


# ---------------------------------------------------------------------- one shard


def _codes(column: pa.ChunkedArray, values: Sequence[str], what: str) -> np.ndarray:
    """Positions of a string column's values in ``values`` (SchemaError naming an
    unknown one)."""
    codes = pc.index_in(column.cast(pa.string()), value_set=pa.array(list(values)))
    if codes.null_count:
        bad = column.filter(pc.is_null(codes))[0].as_py()
        raise SchemaError(f"{what}: unknown value {bad!r}; expected one of {values}")
    return codes.to_numpy(zero_copy_only=False).astype(np.int64)


class ShardFeatures:
    """One shard's users and events, indexed for computing states on any day."""

    def __init__(self, log: ShardLog) -> None:
        users = log.users
        self.user_id = users["user_id"].to_numpy()
        n = self.user_id.size
        if n and (np.diff(self.user_id) <= 0).any():
            raise SchemaError(
                f"shard {log.shard}: users.user_id must be unique and increasing"
            )
        self.n = n
        f = FEATURE_INDEX
        static = np.zeros((n, N_FEATURES), dtype=np.float32)
        rows = np.arange(n)
        age = users["age_group"].to_numpy().astype(np.int64)
        if n and ((age < 0) | (age > 5)).any():
            raise SchemaError(f"shard {log.shard}: users.age_group outside 0..5")
        static[:, f["user_obs_age_group"]] = age / 5.0
        address = _codes(users["address_state"], ADDRESS_STATES, "users.address_state")
        static[rows, f["user_obs_add_0_RO"] + address] = 1.0
        gender = _codes(users["gender"], GENDERS, "users.gender")
        static[rows, f["user_obs_gen_0_FEMALE"] + gender] = 1.0
        signup = _codes(users["objective"], OBJECTIVES, "users.objective") == 1
        static[:, f["obs_objective_agreement"]] = ~signup
        static[:, f["obs_objective_signup"]] = signup
        static[:, f["obs_score"]] = users["score"].to_numpy()
        original = users["original_value"].to_numpy()
        current = users["current_value"].to_numpy()
        static[:, f["obs_total_original_value"]] = np.log1p(original) / 12.0
        static[:, f["obs_total_current_value"]] = np.log1p(current) / 12.0
        delay = users["max_days_of_delay"].to_numpy().astype(float)
        static[:, f["obs_max_days_of_delay"]] = delay / 2000.0
        self.static = static
        events = log.events
        ids = events["user_id"].to_numpy()
        self.event_user = self._index(ids, "events")
        self.event_day = events["day"].to_numpy().astype(np.int64)
        self.event_code = _codes(events["event"], EVENT_TYPES, "events.event")

    def _index(self, ids: np.ndarray, table: str) -> np.ndarray:
        pos = np.searchsorted(self.user_id, ids)
        ok = pos < self.n
        ok[ok] = self.user_id[pos[ok]] == ids[ok]
        if not ok.all():
            raise SchemaError(
                f"{table}.user_id {int(ids[~ok][0])} is not in the users table"
            )
        return pos

    def _before(self, code: int, day: int) -> tuple[np.ndarray, np.ndarray]:
        sel = (self.event_code == code) & (self.event_day < day)
        return self.event_user[sel], self.event_day[sel]

    def _ever(self, code: int, day: int) -> np.ndarray:
        flag = np.zeros(self.n, dtype=bool)
        flag[self._before(code, day)[0]] = True
        return flag

    def states(self, day: int) -> tuple[np.ndarray, np.ndarray]:
        """The 63 features of every user at the start of ``day`` (float32 ``(n,
        63)``) and whether the user can still be contacted (no opt-out before)."""
        f = FEATURE_INDEX
        obs = self.static.copy()
        obs[:, f["obs_user_registered"]] = self._ever(_CODE["sign_up"], day)
        obs[:, f["obs_user_activated"]] = self._ever(_CODE["activation"], day)
        obs[:, f["obs_debt_located"]] = self._ever(_CODE["debt_located"], day)
        obs[:, f["obs_debt_visualized"]] = self._ever(_CODE["debt_viewed"], day)
        who, _ = self._before(_CODE["deal"], day)
        deals = np.bincount(who, minlength=self.n).astype(float)
        obs[:, f["obs_deals"]] = np.minimum(deals, 5.0) / 5.0
        for event, code in zip(RECENCY_EVENTS, _RECENCY_CODES):
            who, when = self._before(code, day)
            last = np.full(self.n, -np.inf)
            np.maximum.at(last, who, when.astype(float))
            # an event on day e leaves k - e - 1 days at the start of day k
            days = np.where(np.isfinite(last), day - last - 1.0, _NEVER + day)
            obs[:, f[f"obs_last_{event}"]] = np.minimum(days, 365.0) / 365.0
            obs[:, f[f"obs_last_{event}_week"]] = days <= 7
            obs[:, f[f"obs_last_{event}_month"]] = days <= 30
            obs[:, f[f"obs_last_{event}_year"]] = days <= 365
        eligible = ~self._ever(_CODE["opt_out"], day)
        return obs, eligible

    def on_day(self, code: int, day: int) -> np.ndarray:
        """Whether each user had event ``code`` on ``day``."""
        flag = np.zeros(self.n, dtype=bool)
        sel = (self.event_code == code) & (self.event_day == day)
        flag[self.event_user[sel]] = True
        return flag


def subset_shard(log: ShardLog, n_users: int) -> ShardLog:
    """The first ``n_users`` users of a shard, with their events and contacts."""
    ids = log.users["user_id"]
    if n_users >= len(ids):
        return log
    limit = ids[n_users].as_py()
    keep = {
        name: getattr(log, name).filter(pc.less(getattr(log, name)["user_id"], limit))
        for name in ("users", "events", "contacts")
    }
    return ShardLog(log.shard, keep["users"], keep["events"], keep["contacts"])


def shard_states(log: ShardLog, day: int) -> pa.Table:
    """Daily user states of one shard: ``user_id``, ``day``, ``eligible`` and the 63
    features at the start of ``day``."""
    feats = ShardFeatures(log)
    obs, eligible = feats.states(day)
    columns: dict[str, Any] = {
        "user_id": feats.user_id,
        "day": np.full(feats.n, day, np.int32),
        "eligible": eligible,
    }
    columns.update({name: obs[:, j] for j, name in enumerate(FEATURE_NAMES)})
    return pa.table(columns)


def shard_transitions(log: ShardLog, simulator: SimulatorConfig) -> pd.DataFrame:
    """Every logged user-day of one shard as a transition, in the release's schema.

    Columns ``eps_id`` (the user id), ``t``, ``action``, ``reward``, ``done``,
    ``action_prob``, the 63 features and the 63 ``next_`` features. The reward is
    rebuilt from the day's events with ``simulator``'s reward weights (the MDP's reward
    definition), in the surrogate's own arithmetic; ``done`` marks an opt-out or the
    window's last day.
    """
    c = simulator
    feats = ShardFeatures(log)
    horizon = c.horizon
    states = [feats.states(k) for k in range(horizon + 1)]
    contacts = log.contacts
    idx = feats._index(contacts["user_id"].to_numpy(), "contacts")
    t = contacts["day"].to_numpy().astype(np.int64)
    if t.size and ((t < 0) | (t >= horizon)).any():
        raise SchemaError(f"contacts.day outside the window 0..{horizon - 1}")
    sent = contacts["sent"].to_numpy(zero_copy_only=False).astype(np.int64)
    reward = np.empty(t.size)
    done = np.empty(t.size, dtype=bool)
    obs = np.empty((t.size, N_FEATURES), np.float32)
    next_obs = np.empty_like(obs)
    act_col = FEATURE_INDEX["obs_user_activated"]
    for day in range(horizon):
        rows = np.flatnonzero(t == day)
        if not rows.size:
            continue
        who = idx[rows]
        alive = states[day][1][who]
        if not alive.all():
            bad = int(feats.user_id[who[~alive][0]])
            raise SchemaError(
                f"contacts: user {bad} contacted on day {day} after opting out"
            )
        a = sent[rows].astype(float)
        register = feats.on_day(_CODE["sign_up"], day)[who]
        visualize = feats.on_day(_CODE["debt_viewed"], day)[who]
        deal = feats.on_day(_CODE["deal"], day)[who]
        activate = feats.on_day(_CODE["activation"], day)[who]
        opt_out = feats.on_day(_CODE["opt_out"], day)[who]
        activated_after = states[day + 1][0][who, act_col] > 0.5
        r = -c.send_cost * a
        r += (
            c.reward_registration * register
            + c.reward_visualization * visualize
            + c.reward_deal * deal
            + c.reward_activation * activate
            - c.penalty_opt_out * opt_out
            + c.reward_active_day * activated_after * alive
        )
        reward[rows] = r
        done[rows] = opt_out | (day == horizon - 1)
        obs[rows] = states[day][0][who]
        next_obs[rows] = states[day + 1][0][who]
    columns: dict[str, np.ndarray] = {
        "eps_id": feats.user_id[idx].astype(np.int64),
        "t": t.astype(np.int32),
        "action": sent.astype(np.int8),
        "reward": reward,
        "done": done,
        "action_prob": contacts["propensity"].to_numpy(),
    }
    columns.update({name: obs[:, j] for j, name in enumerate(FEATURE_NAMES)})
    columns.update({name: next_obs[:, j] for j, name in enumerate(NEXT_FEATURE_NAMES)})
    frame = pd.DataFrame(columns)
    return frame.sort_values(["eps_id", "t"], kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class PipelineConfig:
    """Settings of one pipeline run (training sample, CQL sweep, scoring)."""

    #: day whose start the users are scored at; ``None``: the day after the window
    score_day: int | None = None
    train_users: int = 5_000  #: users (the first ids) whose logged days train the agent
    holdout_share: float = 0.25  #: share of those kept out to rank the alphas (OPE)
    alphas: tuple[float, ...] = (0.5, 4.0)  #: CQL penalty weights, one Tune trial each
    n_steps: int = 1_000  #: gradient steps per trial
    hidden: tuple[int, ...] = (64, 64)  #: Q-network widths
    learning_rate: float = 1e-3  #: Adam learning rate
    batch_size: int = 256  #: minibatch size
    target_update_interval: int = 250  #: gradient steps between target copies
    n_quantiles: int = 1  #: 1 = mean Q-network; the paper's QR-DQN uses 200
    score_batch_size: int = 65_536  #: rows per scoring batch (Ray Data map_batches)
    num_cpus: int = 2  #: CPUs of a local Ray (ignored when joining a cluster)
    #: bytes of Ray's object store on a local Ray (``None``: Ray's default)
    object_store_memory: int | None = 512 * 1024**2
    seed: int = 0  #: seed of training (torch and the minibatch sampler)

    def __post_init__(self) -> None:
        counts = (
            "train_users",
            "n_steps",
            "batch_size",
            "target_update_interval",
            "n_quantiles",
            "score_batch_size",
            "num_cpus",
        )
        check_fields(
            self,
            integer=(*counts, "seed", "score_day", "object_store_memory"),
            positive=(*counts, "learning_rate", "object_store_memory"),
            non_negative=("seed", "score_day"),
            ranges={"holdout_share": (0.0, 1.0, "()")},
            optional=("score_day", "object_store_memory"),
        )
        if not self.alphas:
            raise ConfigError("PipelineConfig.alphas is empty: give one or more")
        for a in self.alphas:
            if isinstance(a, bool) or not isinstance(a, (int, float)) or not a >= 0:
                raise ConfigError(
                    f"PipelineConfig.alphas must be numbers >= 0, got {a!r}"
                )
        from pulse_lib.validation import check_layer_widths

        check_layer_widths("PipelineConfig.hidden", self.hidden)

    def cql_config(self, alpha: float, gamma: float) -> Any:
        """The :class:`~pulse_lib.pulserl.agents.CQLConfig` of one trial."""
        from pulse_lib.pulserl.agents import CQLConfig

        return CQLConfig(
            n_quantiles=self.n_quantiles,
            alpha=float(alpha),
            gamma=gamma,
            learning_rate=self.learning_rate,
            batch_size=self.batch_size,
            hidden=tuple(self.hidden),
            target_update_interval=self.target_update_interval,
        )


# ---------------------------------------------------------------------- Ray plumbing


def _library_root() -> str:
    """The folder holding the ``pulse_lib`` the driver imported."""
    return str(Path(pulse_lib.__file__).resolve().parent.parent)


def _require_ray() -> Any:
    import logging

    # In a notebook without ipywidgets, importing Ray (and Ray Data) logs "Missing
    # packages: ['ipywidgets']. Run `pip install -U ipywidgets` ... for rich notebook
    # output" at INFO: a hint for widgets the book does not use. Only that logger's
    # INFO lines are dropped; its warnings still show.
    logging.getLogger("ray.widgets.util").setLevel(logging.WARNING)
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - ray is in the scale extra
        raise SetupError(
            'Ray is not installed: pip install -e ".[scale]" (or ray[data,tune])'
        ) from exc
    return ray


@contextlib.contextmanager
def ray_session(
    address: str | None = None,
    num_cpus: int = 2,
    object_store_memory: int | None = None,
    temp_dir: str | None = None,
) -> Iterator[Any]:
    """Connect to Ray for the duration of a block; shut down only what it started.

    ``address=None`` starts a local Ray with ``num_cpus`` CPUs (no dashboard, worker
    logs not echoed; its workers inherit this process's environment);
    ``address="host:port"`` joins a running cluster, whose workers get the driver's
    ``pulse_lib`` on their ``PYTHONPATH`` and one thread each. If Ray is already
    initialised, the block uses that session as it is.
    """
    ray = _require_ray()
    if ray.is_initialized():
        yield ray
        return
    import logging

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.ERROR,
    }
    if address is not None:
        # a cluster's workers were started by `ray start`, not by this process: point
        # them at the driver's pulse_lib (a path on a shared disk for a real cluster)
        env = {"PYTHONPATH": _library_root(), "OMP_NUM_THREADS": "1"}
        kwargs["runtime_env"] = {"env_vars": env}
    else:
        kwargs["num_cpus"] = num_cpus
        if object_store_memory is not None:
            kwargs["object_store_memory"] = object_store_memory
        if temp_dir is not None:
            kwargs["_temp_dir"] = temp_dir
    ray.init(address=address, **kwargs)
    _quiet_ray_data()
    try:
        yield ray
    finally:
        ray.shutdown()


def _quiet_ray_data() -> None:
    import logging

    from ray.data import DataContext

    for name in ("ray.data", "ray.tune", "ray.train", "ray"):
        logging.getLogger(name).setLevel(logging.ERROR)
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False


def _shard_dataset(ray: Any, shards: Sequence[int]) -> Any:
    """A Ray dataset with one row (and one block) per shard."""
    return ray.data.from_items(
        [{"shard": int(s)} for s in shards], override_num_blocks=max(1, len(shards))
    )


def _map_shards(
    ray: Any, shards: Sequence[int], task: Any, **kwargs: Any
) -> list[dict[str, Any]]:
    """``task(row, **kwargs)`` on every shard, one CPU each (Ray Data); its result
    rows."""
    return (
        _shard_dataset(ray, shards).map(task, fn_kwargs=kwargs, num_cpus=1).take_all()
    )


def _fresh_dir(path: Path) -> Path:
    if path.exists():
        raise ConfigError(f"{path} exists: each pipeline run writes to a new folder")
    path.mkdir(parents=True)
    return path


# ---------------------------------------------------------------------- stage tasks


def _states_task(
    row: dict[str, Any], raw_dir: str, out_dir: str, day: int
) -> dict[str, Any]:
    log = read_shard(raw_dir, int(row["shard"]))
    table = shard_states(log, day)
    path = Path(out_dir) / f"shard-{int(row['shard']):05d}.parquet"
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return {"shard": int(row["shard"]), "users": table.num_rows}


def _transitions_task(
    row: dict[str, Any], raw_dir: str, out_dir: str, n_users: int, simulator: dict
) -> dict[str, Any]:
    log = subset_shard(read_shard(raw_dir, int(row["shard"])), int(n_users))
    frame = shard_transitions(log, SimulatorConfig(**simulator))
    path = Path(out_dir) / f"shard-{int(row['shard']):05d}.parquet"
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return {"shard": int(row["shard"]), "rows": len(frame)}


#: agents loaded in this worker process, by directory (a scoring task loads its agent
#: once per process, not once per batch)
_AGENTS: dict[str, Any] = {}


def score_batch(
    batch: dict[str, np.ndarray], agent_dir: str, schema: dict[str, Any]
) -> dict[str, np.ndarray]:
    """Ray Data batch inference: decisions for one batch of user states.

    Loads (and verifies) the versioned agent once per worker process and refuses
    (SchemaError) states whose feature schema differs from the agent's. A function, not
    an actor class: Ray Data fuses it with the Parquet read and write into one task per
    block, so no actor holds a CPU the reads need.
    """
    import torch

    if agent_dir not in _AGENTS:
        torch.set_num_threads(1)
        _AGENTS[agent_dir] = V.VersionedAgent.load(agent_dir)
    agent = _AGENTS[agent_dir]
    features = V.FeatureSchema.from_dict(schema)
    agent.check_schema(features)
    missing = [n for n in features.names if n not in batch]
    if missing:
        raise SchemaError(f"states batch lacks feature column(s) {missing[:5]}")
    obs = np.stack([batch[n] for n in features.names], axis=1)
    return decide(agent, features, batch["user_id"], obs, batch["eligible"])


def decide(
    agent: Any,
    schema: Any,
    user_id: np.ndarray,
    obs: np.ndarray,
    eligible: np.ndarray,
) -> dict[str, np.ndarray]:
    """Decisions for scored users: Q-values, and ``send`` where sending has the higher
    value and the user can still be contacted."""
    q = agent.q_values(obs, schema)
    eligible = np.asarray(eligible, dtype=bool)
    return {
        "user_id": np.asarray(user_id, dtype=np.int64),
        "q_wait": q[:, 0],
        "q_send": q[:, 1],
        "eligible": eligible,
        "send": (q[:, 1] > q[:, 0]) & eligible,
    }


def _cql_trial(
    config: dict[str, Any],
    train: dict[str, np.ndarray] | None = None,
    holdout: pd.DataFrame | None = None,
    settings: dict[str, Any] | None = None,
) -> None:
    """One Ray Tune trial: train CQL at ``config["alpha"]``, rank it by FQE-linear on
    held-out users, save the versioned agent."""
    import torch
    from ray import tune

    from pulse_lib.pulserl.agents import TorchCQL
    from pulse_lib.pulserl.evaluation import fit_fqe_linear

    assert train is not None and holdout is not None and settings is not None
    torch.set_num_threads(1)
    pipe = PipelineConfig(
        **{
            **settings["pipeline"],
            "alphas": tuple(settings["pipeline"]["alphas"]),
            "hidden": tuple(settings["pipeline"]["hidden"]),
        }
    )
    alpha = float(config["alpha"])
    agent = TorchCQL(pipe.cql_config(alpha, settings["gamma"]), seed=pipe.seed)
    history = agent.fit(
        train["obs"],
        train["action"],
        train["reward"],
        train["next_obs"],
        train["done"],
        n_steps=pipe.n_steps,
    )
    fqe = fit_fqe_linear(holdout, agent.policy, settings["gamma"])
    path = Path(settings["agents_dir"]) / f"alpha-{alpha:g}"
    manifest = V.VersionedAgent.from_cql(agent).save(path)
    send_share = float(agent.policy(train["obs"][:20_000]).mean())
    tune.report(
        {
            "alpha": alpha,
            "fqe_value": float(fqe.estimate.value),
            "fqe_converged": bool(fqe.converged),
            "td_loss_last100": float(np.mean([h["td_loss"] for h in history[-100:]])),
            "send_share": send_share,
            "agent_dir": str(path),
            "agent_version": manifest.extra["agent_version"],
        }
    )


# ---------------------------------------------------------------------- the run


@dataclass
class PipelineResult:
    """Where a run's artefacts are and what it measured."""

    out_dir: Path  #: the run's folder
    states_dir: Path  #: daily user states (one Parquet file per shard)
    transitions_dir: Path  #: training transitions
    mdp_path: Path  #: the MDP definition
    agent_dir: Path  #: the chosen versioned agent
    decisions_dir: Path  #: decisions of every user
    alpha: float  #: the chosen CQL penalty weight
    trials: pd.DataFrame  #: one row per Tune trial (alpha, FQE value, ...)
    n_users: int  #: users scored
    n_transitions: int  #: transitions trained and ranked on
    timings: dict[str, float] = field(default_factory=dict)  #: seconds per stage
    nodes: list[dict[str, Any]] = field(default_factory=list)  #: Ray nodes seen

    def decisions(self) -> pd.DataFrame:
        """All decisions, sorted by user id."""
        return read_decisions(self.decisions_dir)


def read_decisions(path: str | Path) -> pd.DataFrame:
    """The decisions table under ``path`` (any number of Parquet files), by user id."""
    frame = pq.read_table(str(path)).to_pandas()
    return frame.sort_values("user_id", kind="stable").reset_index(drop=True)


def _events_manifest(raw_dir: Path) -> V.Manifest:
    try:
        manifest = V.read_manifest(raw_dir)
    except FileNotFoundError:
        raise SchemaError(
            f"{raw_dir} has no manifest: generate it with events.generate_events"
        ) from None
    version = manifest.extra.get("schema_version")
    if version != EVENTS_SCHEMA_VERSION:
        raise SchemaError(
            f"event log {raw_dir} has schema {version!r}; this pipeline reads "
            f"{EVENTS_SCHEMA_VERSION!r}"
        )
    return manifest


def build_states(
    ray: Any, raw_dir: Path, out_dir: Path, day: int, parents: Sequence[Any]
) -> tuple[V.Manifest, int]:
    """Stage 1: daily user states of every shard (Ray Data), with their manifest."""
    shards = list_shards(raw_dir)
    _fresh_dir(out_dir)
    rows = _map_shards(
        ray, shards, _states_task, raw_dir=str(raw_dir), out_dir=str(out_dir), day=day
    )
    n_users = int(sum(r["users"] for r in rows))
    manifest = V.write_manifest(
        out_dir,
        "dataset",
        {"table": "daily_user_states", "day": day},
        V.DEFAULT_SCHEMA,
        parents,
        extra={"users": n_users},
    )
    return manifest, n_users


def build_transitions(
    ray: Any,
    raw_dir: Path,
    out_dir: Path,
    events_config: EventsConfig,
    n_users: int,
    parents: Sequence[Any],
) -> tuple[V.Manifest, int]:
    """Stage 2: transitions of the first ``n_users`` users (Ray Data over their
    shards), with their manifest."""
    per_shard: list[tuple[int, int]] = []
    left = min(n_users, events_config.n_users)
    for shard in list_shards(raw_dir):
        if left <= 0:
            break
        take = min(left, events_config.shard_users(shard)[1])
        per_shard.append((shard, take))
        left -= take
    _fresh_dir(out_dir)
    sim = asdict(events_config.simulator)
    rows = []
    for take in sorted({t for _, t in per_shard}):
        shards = [s for s, t in per_shard if t == take]
        rows += _map_shards(
            ray,
            shards,
            _transitions_task,
            raw_dir=str(raw_dir),
            out_dir=str(out_dir),
            n_users=take,
            simulator=sim,
        )
    n_rows = int(sum(r["rows"] for r in rows))
    manifest = V.write_manifest(
        out_dir,
        "dataset",
        {"table": "transitions", "users": n_users, "simulator": sim},
        V.DEFAULT_SCHEMA,
        parents,
        extra={"rows": n_rows},
    )
    return manifest, n_rows


def read_transitions(path: str | Path) -> pd.DataFrame:
    """The transitions under ``path``, sorted by ``(eps_id, t)``."""
    frame = pq.read_table(str(path)).to_pandas()
    return frame.sort_values(["eps_id", "t"], kind="stable").reset_index(drop=True)


def split_users(
    table: pd.DataFrame, holdout_share: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split transitions by user (never a user in both): ``(train, holdout)``."""
    users = np.unique(table["eps_id"].to_numpy())
    rng = np.random.default_rng(seed)
    # int(): on numpy < 2 round() of a numpy float (holdout_share may be one) is a
    # float
    n_hold = max(1, int(round(holdout_share * users.size)))  # noqa: RUF046
    if n_hold >= users.size:
        raise ConfigError(
            f"holdout_share {holdout_share} leaves no training users of {users.size}"
        )
    held = rng.choice(users, size=n_hold, replace=False)
    mask = table["eps_id"].isin(held).to_numpy()
    return (
        table[~mask].reset_index(drop=True),
        table[mask].reset_index(drop=True),
    )


def tune_alpha(
    ray: Any,
    transitions: pd.DataFrame,
    config: PipelineConfig,
    gamma: float,
    agents_dir: Path,
    storage_dir: Path,
) -> pd.DataFrame:
    """Stage 3: one Ray Tune trial per alpha; returns the trials, best first."""
    # Tune's default console report prints tables even at verbose=0; the classic one
    # is silent at verbose=0
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    from ray import tune

    from pulse_lib.pulserl import data as D

    train, holdout = split_users(transitions, config.holdout_share, config.seed)
    arrays = {
        "obs": D.observations(train),
        "next_obs": D.observations(train, next_=True),
        "action": train["action"].to_numpy().astype(np.int64),
        "reward": train["reward"].to_numpy(),
        "done": train["done"].to_numpy().astype(float),
    }
    settings = {
        "pipeline": {**asdict(config), "alphas": list(config.alphas)},
        "gamma": gamma,
        "agents_dir": str(agents_dir),
    }
    trainable = tune.with_resources(
        tune.with_parameters(
            _cql_trial, train=arrays, holdout=holdout, settings=settings
        ),
        {"cpu": 1},
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"alpha": tune.grid_search([float(a) for a in config.alphas])},
        tune_config=tune.TuneConfig(metric="fqe_value", mode="max"),
        run_config=tune.RunConfig(
            name="cql_alpha",
            storage_path=str(storage_dir),
            verbose=0,
            # in a notebook Tune picks a JupyterNotebookReporter, which displays an
            # empty HTML output on creation (to update later), even at verbose=0; the
            # command-line reporter prints nothing at verbose=0. Trial errors and
            # Ray's warnings do not go through the reporter: they still show.
            progress_reporter=tune.CLIReporter(),
        ),
    )
    results = tuner.fit()
    if results.errors:
        raise SetupError(f"a Tune trial failed: {results.errors[0]!r}")
    keys = (
        "alpha",
        "fqe_value",
        "fqe_converged",
        "td_loss_last100",
        "send_share",
        "agent_dir",
        "agent_version",
    )
    trials = pd.DataFrame([{k: r.metrics[k] for k in keys} for r in results])
    # best first; ties go to the smaller alpha (the order is the same on every run)
    trials = trials.sort_values(["fqe_value", "alpha"], ascending=[False, True])
    return trials.reset_index(drop=True)


def score_users(
    ray: Any,
    states_dir: Path,
    agent_dir: Path,
    out_dir: Path,
    config: PipelineConfig,
) -> None:
    """Stage 4: Ray Data batch inference of every user's state with the agent."""
    states = V.read_manifest(states_dir)
    if states.schema is None:
        raise SchemaError(f"states {states_dir} carry no feature schema")
    agent = V.VersionedAgent.load(agent_dir)
    agent.check_schema(states.schema)  # refuse early, before any actor starts
    if out_dir.exists():
        raise ConfigError(f"{out_dir} exists: each pipeline run writes to a new folder")
    (
        ray.data.read_parquet(str(states_dir), file_extensions=["parquet"])
        .map_batches(
            score_batch,
            fn_kwargs={
                "agent_dir": str(agent_dir),
                "schema": states.schema.to_dict(),
            },
            batch_size=config.score_batch_size,
            batch_format="numpy",
            num_cpus=1,
        )
        .write_parquet(str(out_dir))
    )


def _nodes(ray: Any) -> list[dict[str, Any]]:
    return [
        {
            "node_id": n["NodeID"][:12],
            "alive": bool(n["Alive"]),
            "cpus": float(n.get("Resources", {}).get("CPU", 0.0)),
        }
        for n in ray.nodes()
    ]


def run_pipeline(
    raw_dir: str | Path,
    out_dir: str | Path,
    config: PipelineConfig | None = None,
    *,
    address: str | None = None,
    temp_dir: str | None = None,
) -> PipelineResult:
    """Run every stage on Ray: local (``address=None``) or a cluster (``"host:port"``).

    ``raw_dir`` is an event log written by
    :func:`~pulse_lib.production.events.generate_events`; ``out_dir`` must not exist.
    Returns the artefacts' paths, the Tune trials and the seconds of each stage.
    """
    config = config or PipelineConfig()
    raw_dir, out_dir = Path(raw_dir).resolve(), Path(out_dir).resolve()
    events_manifest = _events_manifest(raw_dir)
    events_config = read_config(raw_dir)
    day = events_config.n_days if config.score_day is None else config.score_day
    _fresh_dir(out_dir)
    timings: dict[str, float] = {}
    with ray_session(
        address, config.num_cpus, config.object_store_memory, temp_dir
    ) as ray:
        nodes = _nodes(ray)
        start = time.perf_counter()
        states_manifest, n_users = build_states(
            ray, raw_dir, out_dir / "states", day, [events_manifest]
        )
        timings["states"] = time.perf_counter() - start
        start = time.perf_counter()
        trans_manifest, n_rows = build_transitions(
            ray,
            raw_dir,
            out_dir / "transitions",
            events_config,
            config.train_users,
            [events_manifest],
        )
        timings["transitions"] = time.perf_counter() - start
        sim = events_config.simulator
        mdp = V.MDPDefinition(
            schema=V.DEFAULT_SCHEMA,
            gamma=sim.gamma,
            reward="surrogate_ltv",
            notes="reward weights: see config (the surrogate's SimulatorConfig)",
        )
        mdp_manifest = V.save_mdp(
            mdp, out_dir / "mdp.json", asdict(sim), [trans_manifest]
        )
        start = time.perf_counter()
        trials = tune_alpha(
            ray,
            read_transitions(out_dir / "transitions"),
            config,
            sim.gamma,
            out_dir / "trial_agents",
            out_dir / "tune",
        )
        timings["tune"] = time.perf_counter() - start
        best = V.VersionedAgent.load(trials.loc[0, "agent_dir"])
        best.config = {**best.config, "chosen_by": "max FQE-linear on held-out users"}
        best.save(out_dir / "agent", parents=[trans_manifest, mdp_manifest])
        start = time.perf_counter()
        score_users(
            ray,
            out_dir / "states",
            out_dir / "agent",
            out_dir / "decisions",
            config,
        )
        timings["scoring"] = time.perf_counter() - start
        V.write_manifest(
            out_dir / "decisions",
            "decisions",
            {"day": day},
            None,
            [states_manifest, out_dir / "agent"],
            extra={"agent_version": best.version},
        )
    return PipelineResult(
        out_dir=out_dir,
        states_dir=out_dir / "states",
        transitions_dir=out_dir / "transitions",
        mdp_path=out_dir / "mdp.json",
        agent_dir=out_dir / "agent",
        decisions_dir=out_dir / "decisions",
        alpha=float(trials.loc[0, "alpha"]),
        trials=trials,
        n_users=n_users,
        n_transitions=n_rows,
        timings=timings,
        nodes=nodes,
    )


def daily_decisions(
    raw_dir: str | Path,
    agent_dir: str | Path,
    out_dir: str | Path,
    *,
    day: int | None = None,
    address: str | None = None,
    config: PipelineConfig | None = None,
    use_ray: bool = True,
) -> int:
    """The daily run alone: events -> states -> decisions for every user, with an
    agent trained earlier. ``use_ray=False`` does the same work shard by shard in this
    process (the baseline of Ray's overhead). Returns the number of users decided."""
    config = config or PipelineConfig()
    raw_dir, out_dir = Path(raw_dir).resolve(), Path(out_dir).resolve()
    events_manifest = _events_manifest(raw_dir)
    events_config = read_config(raw_dir)
    day = events_config.n_days if day is None else day
    _fresh_dir(out_dir)
    if not use_ray:
        agent = V.VersionedAgent.load(agent_dir)
        (out_dir / "states").mkdir()
        (out_dir / "decisions").mkdir()
        n = 0
        for shard in list_shards(raw_dir):
            states = shard_states(read_shard(raw_dir, shard), day)
            with atomic_path(out_dir / "states" / f"shard-{shard:05d}.parquet") as tmp:
                pq.write_table(states, tmp, compression="zstd")
            obs = np.stack(
                [states[name].to_numpy() for name in V.DEFAULT_SCHEMA.names], axis=1
            )
            out = decide(
                agent,
                V.DEFAULT_SCHEMA,
                states["user_id"].to_numpy(),
                obs,
                states["eligible"].to_numpy(zero_copy_only=False),
            )
            path = out_dir / "decisions" / f"shard-{shard:05d}.parquet"
            with atomic_path(path) as tmp:
                pq.write_table(pa.table(out), tmp)
            n += states.num_rows
        return n
    with ray_session(address, config.num_cpus, config.object_store_memory) as ray:
        _, n = build_states(ray, raw_dir, out_dir / "states", day, [events_manifest])
        score_users(
            ray, out_dir / "states", Path(agent_dir), out_dir / "decisions", config
        )
    return n


def remove_tree(path: str | Path) -> None:
    """Delete a pipeline run's folder and its manifest (benchmarks, reruns)."""
    path = Path(path)
    shutil.rmtree(path, ignore_errors=True)
    V.manifest_path(path).unlink(missing_ok=True)
