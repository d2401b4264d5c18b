"""Raw event logs of the PulseRL surrogate, at any size, streamed to Parquet by user
shard.

A production system does not log ``(obs, action, reward, next_obs)`` rows: it logs what
happened. This module turns the Part III surrogate (:class:`PulseSimulator`, the truth
behind every event) into the three raw tables a debt-renegotiation marketplace would
keep, one Parquet file per shard of users in each:

``users/shard-NNNNN.parquet``
    one row per user: ``user_id``, ``age_group`` (0-5), ``address_state`` (``"SP"``,
    ...), ``gender`` (``"FEMALE"``, ...), ``objective`` (``"signup"`` or
    ``"agreement"``), ``score``, ``original_value``, ``current_value``,
    ``max_days_of_delay``.
``events/shard-NNNNN.parquet``
    one row per funnel event: ``user_id``, ``day`` (days from the start of the logging
    window; negative days are the history before it), ``event`` (one of
    :data:`EVENT_TYPES`). Sign-ups, debts located and viewed, deals, app activations,
    opt-outs of the channel.
``contacts/shard-NNNNN.parquet``
    the decision log of the logging policy, one row per user and day while the user can
    be contacted: ``user_id``, ``day``, ``sent`` (a communication went out) and
    ``propensity`` (the logging policy's probability of what it did).

Each shard is one run of the surrogate on its own users with its own seed
(:func:`shard_seed`), in the same order of random draws as
:meth:`PulseSimulator.rollout`: so the transitions the pipeline rebuilds from these
tables can be checked, number for number, against the simulator's own
(``tests/test_production_pipeline.py``). Only one shard is ever in memory: memory is
bounded by ``shard_size``, not by ``n_users``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pulse_lib.errors import ConfigError, SchemaError
from pulse_lib.io import atomic_path
from pulse_lib.pulserl.features import ADDRESS_STATES, GENDERS
from pulse_lib.pulserl.simulator import (
    LOGGING_POLICIES,
    PulseSimulator,
    SimulatorConfig,
    check_policy_output,
)
from pulse_lib.validation import check_fields

#: Version of the raw tables' schema (columns, types, meaning of ``day``).
EVENTS_SCHEMA_VERSION = "pulse-events/1"
#: Funnel events, in the order of their codes.
EVENT_TYPES: tuple[str, ...] = (
    "sign_up",
    "activation",
    "debt_located",
    "debt_viewed",
    "deal",
    "opt_out",
)
#: The three raw tables, each a folder of shards.
TABLES: tuple[str, ...] = ("users", "events", "contacts")
OBJECTIVES: tuple[str, ...] = ("agreement", "signup")

USERS_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("age_group", pa.int8()),
        ("address_state", pa.string()),
        ("gender", pa.string()),
        ("objective", pa.string()),
        ("score", pa.float64()),
        ("original_value", pa.float64()),
        ("current_value", pa.float64()),
        ("max_days_of_delay", pa.int32()),
    ]
)
EVENTS_SCHEMA = pa.schema(
    [("user_id", pa.int64()), ("day", pa.int32()), ("event", pa.string())]
)
CONTACTS_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("day", pa.int16()),
        ("sent", pa.bool_()),
        ("propensity", pa.float64()),
    ]
)
SCHEMAS: dict[str, pa.Schema] = {
    "users": USERS_SCHEMA,
    "events": EVENTS_SCHEMA,
    "contacts": CONTACTS_SCHEMA,
}


@dataclass(frozen=True)
class EventsConfig:
    """What to generate: how many users, in which shards, under which logging
    policy."""

    n_users: int = 10_000  #: users in the log (thousands to tens of millions)
    shard_size: int = 100_000  #: users per Parquet shard: the memory bound
    seed: int = 0  #: master seed; shard ``k`` runs on :func:`shard_seed` (seed, k)
    #: the policy that decided the logged sends (a name in the simulator's
    #: ``LOGGING_POLICIES``)
    logging_policy: str = "heuristic"
    #: the surrogate's dynamics; its ``horizon`` is the logging window in days
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)

    def __post_init__(self) -> None:
        check_fields(
            self,
            integer=("n_users", "shard_size", "seed"),
            positive=("n_users", "shard_size"),
            non_negative=("seed",),
            choices={"logging_policy": sorted(LOGGING_POLICIES)},
        )
        if not isinstance(self.simulator, SimulatorConfig):
            raise ConfigError(
                "EventsConfig.simulator must be a SimulatorConfig, got "
                f"{type(self.simulator).__name__}"
            )

    @property
    def n_shards(self) -> int:
        """Number of shards (the last one may be smaller)."""
        return -(-self.n_users // self.shard_size)

    @property
    def n_days(self) -> int:
        """Days in the logging window (the simulator's horizon)."""
        return self.simulator.horizon

    def shard_users(self, shard: int) -> tuple[int, int]:
        """``(first user_id, number of users)`` of shard ``shard``."""
        if not 0 <= shard < self.n_shards:
            raise ConfigError(f"shard must be in [0, {self.n_shards}), got {shard}")
        first = shard * self.shard_size
        return first, min(self.shard_size, self.n_users - first)

    def to_dict(self) -> dict[str, object]:
        """Plain values (for a manifest)."""
        return asdict(self)


def shard_seed(seed: int, shard: int) -> int:
    """The integer seed of one shard: independent streams per ``(seed, shard)``."""
    return int(np.random.SeedSequence([seed, shard]).generate_state(1)[0])


@dataclass(frozen=True)
class ShardLog:
    """The three raw tables of one shard of users (pyarrow tables)."""

    shard: int
    users: pa.Table
    events: pa.Table
    contacts: pa.Table


def _history_events(
    users_days: np.ndarray, registered: np.ndarray, deals: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Events before the window that reproduce the surrogate's starting state.

    An event on day ``e`` leaves ``days since`` = ``k - e - 1`` at the start of day
    ``k`` (the simulator zeroes the counter at the end of the event's day), so a
    starting recency of ``d`` days is an event on day ``-d - 1``. A user registered
    before the window gets a sign-up the day before their oldest other event.
    """
    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    codes = {name: k for k, name in enumerate(EVENT_TYPES)}
    has = users_days < 10_000
    oldest = np.where(has, -users_days - 1, 0).min(axis=1) - 1
    who = np.flatnonzero(registered)
    rows.append((who, oldest[who], np.full(who.size, codes["sign_up"])))
    # recency columns: activation, location, visualization, deal
    for col, name in enumerate(("activation", "debt_located", "debt_viewed", "deal")):
        who = np.flatnonzero(has[:, col])
        rows.append((who, -users_days[who, col] - 1, np.full(who.size, codes[name])))
    if (deals > 1).any():  # the surrogate starts users with at most one deal
        raise SchemaError("a user starts with more than one deal: no date for it")
    idx = np.concatenate([r[0] for r in rows]).astype(np.int64)
    day = np.concatenate([r[1] for r in rows]).astype(np.int64)
    code = np.concatenate([r[2] for r in rows]).astype(np.int8)
    return idx, day, code


def simulate_shard(config: EventsConfig, shard: int) -> ShardLog:
    """Run the surrogate on one shard's users and return its raw tables.

    The random draws follow :meth:`PulseSimulator.rollout` exactly (users, then each
    day: the logging policy's coin, then the day's dynamics), with seed
    :func:`shard_seed`; so ``generate_logged_dataset(n, shard_seed(seed, k))`` is the
    same episode set, as transitions.
    """
    first, n = config.shard_users(shard)
    sim = PulseSimulator(config.simulator)
    policy = LOGGING_POLICIES[config.logging_policy]
    rng = np.random.default_rng(shard_seed(config.seed, shard))
    u = sim.sample_users(n, rng)
    users = pa.table(
        {
            "user_id": np.arange(first, first + n, dtype=np.int64),
            "age_group": u.age_group.astype(np.int8),
            "address_state": np.asarray(ADDRESS_STATES)[u.address],
            "gender": np.asarray(GENDERS)[u.gender],
            "objective": np.asarray(OBJECTIVES)[u.objective_signup.astype(int)],
            "score": u.score,
            "original_value": u.original_value,
            "current_value": u.current_value,
            "max_days_of_delay": u.max_delay.astype(np.int32),
        },
        schema=USERS_SCHEMA,
    )
    idx, day, code = _history_events(u.days_since.copy(), u.registered, u.deals)
    ev_idx, ev_day, ev_code = [idx], [day], [code]
    c_idx, c_day, c_sent, c_prop = [], [], [], []
    obs = sim.observe(u)
    for t in range(config.n_days):
        p_send = check_policy_output(policy(obs), n)
        actions = (rng.random(n) < p_send).astype(np.int64)
        alive = u.active.copy()
        before = (
            u.registered.copy(),
            u.activated.copy(),
            u.located.copy(),
            u.visualized.copy(),
            u.deals.copy(),
        )
        _, opted_out = sim.step(u, actions, rng)
        who = np.flatnonzero(alive)
        c_idx.append(who)
        c_day.append(np.full(who.size, t, np.int16))
        c_sent.append(actions[who].astype(bool))
        c_prop.append(np.where(actions == 1, p_send, 1.0 - p_send)[who])
        happened = (
            u.registered & ~before[0],
            u.activated & ~before[1],
            u.located & ~before[2],
            u.visualized & ~before[3],
            u.deals > before[4],
            opted_out,
        )
        for k, mask in enumerate(happened):
            hit = np.flatnonzero(mask)
            ev_idx.append(hit)
            ev_day.append(np.full(hit.size, t, np.int64))
            ev_code.append(np.full(hit.size, k, np.int8))
        obs = sim.observe(u)
        if not u.active.any():
            break
    e_idx = np.concatenate(ev_idx)
    e_day = np.concatenate(ev_day)
    e_code = np.concatenate(ev_code)
    order = np.lexsort((e_code, e_day, e_idx))
    events = pa.table(
        {
            "user_id": (e_idx[order] + first).astype(np.int64),
            "day": e_day[order].astype(np.int32),
            "event": np.asarray(EVENT_TYPES)[e_code[order]],
        },
        schema=EVENTS_SCHEMA,
    )
    ci = np.concatenate(c_idx)
    cd = np.concatenate(c_day)
    order = np.lexsort((cd, ci))
    contacts = pa.table(
        {
            "user_id": (ci[order] + first).astype(np.int64),
            "day": cd[order],
            "sent": np.concatenate(c_sent)[order],
            "propensity": np.concatenate(c_prop)[order].astype(np.float64),
        },
        schema=CONTACTS_SCHEMA,
    )
    return ShardLog(shard, users, events, contacts)


def shard_path(root: str | Path, table: str, shard: int) -> Path:
    """``root/<table>/shard-NNNNN.parquet``."""
    if table not in TABLES:
        raise ConfigError(f"unknown table {table!r}; choose one of {TABLES}")
    return Path(root) / table / f"shard-{shard:05d}.parquet"


def write_shard(root: str | Path, log: ShardLog) -> None:
    """Write one shard's three tables atomically (zstd-compressed Parquet)."""
    for table in TABLES:
        path = shard_path(root, table, log.shard)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            pq.write_table(getattr(log, table), tmp, compression="zstd")


CONFIG_FILE = "events_config.json"


def generate_events(
    root: str | Path, config: EventsConfig, *, progress: bool = False
) -> Path:
    """Generate the raw logs of ``config.n_users`` users under ``root``, shard by shard.

    Never holds more than one shard in memory. Writes ``root/events_config.json`` (the
    config, so readers know the window) after the last shard, then the log's manifest
    beside ``root`` (:func:`pulse_lib.production.versioning.write_manifest`, kind
    ``events``); returns ``root``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    shards: range | Iterator[int] = range(config.n_shards)
    if progress:
        from tqdm.auto import tqdm

        shards = tqdm(shards, desc="event shards", leave=False)
    for shard in shards:
        write_shard(root, simulate_shard(config, shard))
    with atomic_path(root / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps(config_to_json(config), indent=2))
    from pulse_lib.production import versioning

    versioning.write_manifest(
        root,
        "events",
        config_to_json(config),
        None,
        extra={"schema_version": EVENTS_SCHEMA_VERSION, "users": config.n_users},
    )
    return root


def config_to_json(config: EventsConfig) -> dict[str, object]:
    """The config as JSON-ready values, with the schema version."""
    return {"schema_version": EVENTS_SCHEMA_VERSION, **config.to_dict()}


def read_config(root: str | Path) -> EventsConfig:
    """The :class:`EventsConfig` that generated the logs under ``root``."""
    path = Path(root) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_FILE} under {root}: not an event log")
    raw = json.loads(path.read_text())
    version = raw.pop("schema_version", None)
    if version != EVENTS_SCHEMA_VERSION:
        raise SchemaError(
            f"{path}: events schema {version!r}, this code reads "
            f"{EVENTS_SCHEMA_VERSION!r}"
        )
    sim = SimulatorConfig(**raw.pop("simulator"))
    return EventsConfig(simulator=sim, **raw)


def read_shard(root: str | Path, shard: int) -> ShardLog:
    """Read one shard's three tables back, checking each table's columns and types."""
    tables = {}
    for table in TABLES:
        path = shard_path(root, table, shard)
        got = pq.read_table(path)
        expected = SCHEMAS[table]
        missing = [n for n in expected.names if n not in got.schema.names]
        if missing:
            raise SchemaError(f"{path}: missing column(s) {missing}")
        got = got.select(expected.names)
        for name in expected.names:
            if got.schema.field(name).type != expected.field(name).type:
                raise SchemaError(
                    f"{path}: column {name!r} has type "
                    f"{got.schema.field(name).type}, expected "
                    f"{expected.field(name).type}"
                )
        tables[table] = got
    return ShardLog(shard, tables["users"], tables["events"], tables["contacts"])


def list_shards(root: str | Path) -> list[int]:
    """Shards present in all three tables under ``root`` (sorted)."""
    found = None
    for table in TABLES:
        names = {
            int(p.stem.split("-")[1])
            for p in (Path(root) / table).glob("shard-*.parquet")
        }
        found = names if found is None else found & names
    return sorted(found or ())
