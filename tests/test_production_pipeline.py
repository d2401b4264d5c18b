"""The production pipeline: raw event logs, features from events, the pipeline on a
local Ray and on a two-node Ray cluster started here (``ray start``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pulse_lib.errors import ConfigError, SchemaError
from pulse_lib.production import events as E
from pulse_lib.production import pipeline as P
from pulse_lib.production import versioning as V
from pulse_lib.pulserl import simulator as S

ROOT = Path(__file__).resolve().parent.parent
SMALL = E.EventsConfig(n_users=2_500, shard_size=1_000, seed=7)
#: the pipeline's tests: small and quick, every stage still runs
TINY = P.PipelineConfig(
    train_users=800,
    n_steps=60,
    alphas=(0.5, 4.0),
    hidden=(16, 16),
    num_cpus=2,
    score_batch_size=512,
)


@pytest.fixture(scope="module")
def raw_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return E.generate_events(tmp_path_factory.mktemp("events") / "raw", SMALL)


# ---------------------------------------------------------------------- events


def test_event_tables_have_their_schema_and_bounded_shards(raw_log: Path) -> None:
    assert E.list_shards(raw_log) == [0, 1, 2]
    sizes = []
    for shard in E.list_shards(raw_log):
        log = E.read_shard(raw_log, shard)
        for table in E.TABLES:
            assert getattr(log, table).schema.equals(E.SCHEMAS[table]), table
        ids = log.users["user_id"].to_numpy()
        first, n = SMALL.shard_users(shard)
        np.testing.assert_array_equal(ids, np.arange(first, first + n))
        sizes.append(len(ids))
        assert set(log.events["event"].to_pylist()) <= set(E.EVENT_TYPES)
        ev_ids = log.events["user_id"].to_numpy()
        assert (
            (ev_ids >= first) & (ev_ids < first + n)
        ).all()  # the shard's users only
        day = log.contacts["day"].to_numpy()
        assert day.min() == 0 and day.max() == SMALL.n_days - 1
        prop = log.contacts["propensity"].to_numpy()
        assert ((prop > 0) & (prop <= 1)).all()
        # every funnel event happens at most once per user, except deals
        ev = log.events.to_pandas()
        once = ev[ev["event"] != "deal"]
        assert not once.duplicated(["user_id", "event"]).any()
    assert sizes == [1_000, 1_000, 500]  # no shard above shard_size
    manifest = V.read_manifest(raw_log)
    assert manifest.kind == "events"
    assert manifest.extra["schema_version"] == E.EVENTS_SCHEMA_VERSION
    assert E.read_config(raw_log) == SMALL
    V.verify(raw_log)  # the content hash matches the bytes on disk


def test_events_are_deterministic_by_seed(raw_log: Path, tmp_path: Path) -> None:
    again = E.generate_events(tmp_path / "again", SMALL)
    other = E.generate_events(
        tmp_path / "other", E.EventsConfig(n_users=2_500, shard_size=1_000, seed=8)
    )
    for shard in E.list_shards(raw_log):
        a, b, c = (E.read_shard(root, shard) for root in (raw_log, again, other))
        for table in E.TABLES:
            assert getattr(a, table).equals(getattr(b, table)), table
        assert not a.events.equals(c.events)
    assert V.read_manifest(again).sha256 == V.read_manifest(raw_log).sha256
    assert V.read_manifest(other).sha256 != V.read_manifest(raw_log).sha256


def test_generation_holds_one_shard_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The generator asks the simulator for one shard's users at a time and writes it
    before the next: the users in memory never exceed ``shard_size``."""
    seen: list[int] = []
    real = E.simulate_shard

    def spy(config: E.EventsConfig, shard: int) -> E.ShardLog:
        assert len(list((tmp_path / "g" / "users").glob("*.parquet"))) == shard
        log = real(config, shard)
        seen.append(log.users.num_rows)
        return log

    monkeypatch.setattr(E, "simulate_shard", spy)
    E.generate_events(tmp_path / "g", E.EventsConfig(n_users=1_050, shard_size=300))
    assert seen == [300, 300, 300, 150]


# ------------------------------------------------------- features = the surrogate's


@pytest.mark.parametrize("shard", [0, 2])
def test_transitions_from_events_equal_the_surrogates_own(
    raw_log: Path, shard: int
) -> None:
    """Rebuilt from raw events, every transition equals the simulator's own record of
    the same users (same seed): 63 features before and after, action, propensity,
    reward, done."""
    first, n = SMALL.shard_users(shard)
    ours = P.shard_transitions(E.read_shard(raw_log, shard), SMALL.simulator)
    truth = S.generate_logged_dataset(n, E.shard_seed(SMALL.seed, shard))
    assert len(ours) == len(truth) > n  # several days per user
    assert list(ours.columns) == list(truth.columns)
    ours["eps_id"] -= first
    for column in truth.columns:
        np.testing.assert_array_equal(
            ours[column].to_numpy(), truth[column].to_numpy(), err_msg=column
        )


def test_states_equal_the_surrogates_observations(raw_log: Path) -> None:
    """The states computed from events on day 0 and after the window equal the
    simulator's own observations of the same users, run here day by day with the same
    seed; eligibility equals the simulator's "still active" flag."""
    first, n = SMALL.shard_users(1)
    log = E.read_shard(raw_log, 1)
    sim = S.PulseSimulator(SMALL.simulator)
    rng = np.random.default_rng(E.shard_seed(SMALL.seed, 1))
    users = sim.sample_users(n, rng)
    truth = {0: (sim.observe(users), users.active.copy())}
    for _ in range(SMALL.n_days):
        p_send = S.heuristic_policy(sim.observe(users))
        sim.step(users, (rng.random(n) < p_send).astype(np.int64), rng)
    truth[SMALL.n_days] = (sim.observe(users), users.active.copy())
    assert 0 < (~users.active).sum() < n  # some users opted out: a real check
    for day, (obs, active) in truth.items():
        states = P.shard_states(log, day)
        ours = np.stack([states[c].to_numpy() for c in S.FEATURE_NAMES], axis=1)
        np.testing.assert_array_equal(ours, obs, err_msg=f"day {day}")
        np.testing.assert_array_equal(states["eligible"].to_numpy(), active)
        assert states["user_id"].to_numpy()[0] == first


def test_bad_raw_tables_are_refused_by_name(raw_log: Path) -> None:
    log = E.read_shard(raw_log, 0)
    import pyarrow as pa

    events = log.events.set_column(
        2, "event", pa.array(["deals"] * log.events.num_rows)
    )
    with pytest.raises(SchemaError, match="events.event: unknown value 'deals'"):
        P.shard_states(E.ShardLog(0, log.users, events, log.contacts), 3)
    stranger = log.events.set_column(
        0, "user_id", pa.array([10**9] * log.events.num_rows, pa.int64())
    )
    with pytest.raises(SchemaError, match="events.user_id 1000000000 is not in"):
        P.shard_states(E.ShardLog(0, log.users, stranger, log.contacts), 3)
    with pytest.raises(ConfigError, match="shard_size"):
        E.EventsConfig(shard_size=0)
    with pytest.raises(ConfigError, match="logging_policy"):
        E.EventsConfig(logging_policy="marketer")
    with pytest.raises(ConfigError, match="alphas"):
        P.PipelineConfig(alphas=())


def test_a_log_of_another_schema_version_is_refused(
    raw_log: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "raw"
    shutil.copytree(raw_log, copy)
    V.write_manifest(
        copy, "events", {}, None, extra={"schema_version": "pulse-events/0"}
    )
    with pytest.raises(SchemaError, match="schema 'pulse-events/0'"):
        P.daily_decisions(copy, tmp_path / "agent", tmp_path / "out", use_ray=False)


# ---------------------------------------------------------------------- on Ray

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_run(
    raw_log: Path, tmp_path_factory: pytest.TempPathFactory
) -> P.PipelineResult:
    out = tmp_path_factory.mktemp("local") / "run"
    temp = tmp_path_factory.mktemp("ray_local")
    return P.run_pipeline(raw_log, out, TINY, temp_dir=str(temp))


@pytest.mark.ray
def test_pipeline_end_to_end_on_local_ray(
    local_run: P.PipelineResult, raw_log: Path, tmp_path: Path
) -> None:
    r = local_run
    assert [n["alive"] for n in r.nodes] == [True]
    decisions = r.decisions()
    np.testing.assert_array_equal(decisions["user_id"], np.arange(SMALL.n_users))
    assert not decisions.loc[~decisions["eligible"], "send"].any()
    np.testing.assert_array_equal(
        decisions["send"],
        (decisions["q_send"] > decisions["q_wait"]) & decisions["eligible"],
    )
    assert sorted(r.trials["alpha"]) == [0.5, 4.0] and r.alpha in (0.5, 4.0)
    assert r.trials["fqe_value"].is_monotonic_decreasing
    users = pd.unique(pq.read_table(r.transitions_dir).column("eps_id").to_numpy())
    assert sorted(users) == list(range(TINY.train_users))
    # the chain of manifests: decisions <- (states <- events, agent <- transitions ...)
    dec = V.verify(r.decisions_dir)
    parents = {p["artefact"]: p for p in dec.parents}
    assert set(parents) == {"states", "agent"}
    agent = V.VersionedAgent.load(r.agent_dir)
    assert dec.extra["agent_version"] == agent.version
    assert {p["artefact"] for p in V.read_manifest(r.agent_dir).parents} == {
        "transitions",
        "mdp.json",
    }
    assert (
        V.read_manifest(r.states_dir).parents[0]["sha256"]
        == V.read_manifest(raw_log).sha256
    )
    assert V.load_mdp(r.mdp_path).gamma == SMALL.simulator.gamma
    # the same daily work in one plain process decides exactly the same
    n = P.daily_decisions(raw_log, r.agent_dir, tmp_path / "plain", use_ray=False)
    assert n == SMALL.n_users
    plain = P.read_decisions(tmp_path / "plain" / "decisions")
    pd.testing.assert_frame_equal(plain, decisions, check_dtype=False)


@pytest.mark.ray
def test_scoring_refuses_states_of_another_feature_version(
    local_run: P.PipelineResult,
) -> None:
    other = V.FeatureSchema(V.DEFAULT_SCHEMA.names, "2").to_dict()
    batch = pq.read_table(next(local_run.states_dir.glob("*.parquet"))).to_pydict()
    batch = {k: np.asarray(v) for k, v in batch.items()}
    with pytest.raises(SchemaError, match="feature version"):
        P.score_batch(batch, str(local_run.agent_dir), other)
    out = P.score_batch(batch, str(local_run.agent_dir), V.DEFAULT_SCHEMA.to_dict())
    assert out["send"].shape == batch["user_id"].shape


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ray_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    ray_bin = Path(sys.executable).with_name("ray")
    cmd = (
        [str(ray_bin)]
        if ray_bin.exists()
        else [sys.executable, "-m", "ray.scripts.scripts"]
    )
    return subprocess.run(
        [*cmd, *args], env=env, capture_output=True, text=True, timeout=180, check=False
    )


def _processes_of(markers: list[str]) -> list[int]:
    """Processes whose command line holds one of ``markers``, and their descendants:
    the cluster this test started (its port, its temp dir), nothing else."""
    parent: dict[int, int] = {}
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            cmd = (
                Path(f"/proc/{pid}/cmdline")
                .read_bytes()
                .replace(b"\0", b" ")
                .decode(errors="replace")
            )
            parent[pid] = int(
                Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
            )
        except (OSError, ValueError, IndexError):
            continue
        if pid != os.getpid() and any(m in cmd for m in markers):
            found.add(pid)
    grew = True
    while grew:
        kids = {p for p, pp in parent.items() if pp in found and p not in found}
        found |= kids
        grew = bool(kids)
    return sorted(found)


def _stop_cluster(markers: list[str]) -> None:
    """Stop only this test's Ray nodes, by process id (``ray stop`` would stop every
    Ray process of the user on the machine, other jobs' included)."""
    import signal
    import time

    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _processes_of(markers)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while _processes_of(markers) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _processes_of(markers):
            return


@pytest.mark.ray
def test_two_node_cluster_gives_the_local_results(
    local_run: P.PipelineResult, raw_log: Path, tmp_path: Path
) -> None:
    """``ray start --head`` plus a second node joining it (one CPU each, same machine):
    the pipeline runs there by address and decides exactly as on the local Ray."""
    port = _free_port()
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    # short temp dirs: Ray's sockets live there, and a Unix socket path is limited to
    # 107 bytes (pytest's tmp_path is too deep)
    head_tmp = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp"))
    node_tmp = Path(tempfile.mkdtemp(prefix="rn", dir="/tmp"))
    address = f"127.0.0.1:{port}"

    def node_ports() -> list[str]:
        # every port a node opens, chosen free: two nodes share this machine
        names = (
            "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port",
            "runtime-env-agent-port",
            "metrics-export-port",
        )
        return [f"--{name}={_free_port()}" for name in names]

    common = [
        "--num-cpus=1",
        "--node-ip-address=127.0.0.1",
        f"--object-store-memory={200 * 1024**2}",
    ]
    try:
        head = _ray_cli(
            "start",
            "--head",
            f"--port={port}",
            "--include-dashboard=false",
            f"--temp-dir={head_tmp}",
            *common,
            *node_ports(),
            env=env,
        )
        assert head.returncode == 0, head.stderr[-2000:]
        node = _ray_cli(
            "start",
            f"--address={address}",
            f"--temp-dir={node_tmp}",
            *common,
            *node_ports(),
            env=env,
        )
        assert node.returncode == 0, node.stderr[-2000:]
        result = P.run_pipeline(raw_log, tmp_path / "run", TINY, address=address)
    finally:
        _stop_cluster(
            markers := [
                f"127.0.0.1:{port}",
                f"port={port}",
                str(head_tmp),
                str(node_tmp),
            ]
        )
    assert not _processes_of(markers)
    shutil.rmtree(head_tmp, ignore_errors=True)
    shutil.rmtree(node_tmp, ignore_errors=True)
    assert len(result.nodes) == 2 and all(n["alive"] for n in result.nodes)
    assert [n["cpus"] for n in result.nodes] == [1.0, 1.0]
    assert result.alpha == local_run.alpha
    assert (
        V.VersionedAgent.load(result.agent_dir).version
        == V.VersionedAgent.load(local_run.agent_dir).version
    )
    pd.testing.assert_frame_equal(result.decisions(), local_run.decisions())
    pd.testing.assert_frame_equal(
        result.trials.drop(columns="agent_dir"),
        local_run.trials.drop(columns="agent_dir"),
    )


def _benchmark_script():
    """``benchmarks/production_pipeline.py`` imported in-process (its ``main`` takes
    argv)."""
    import importlib

    bench = str(ROOT / "benchmarks")
    sys.path.insert(0, bench)
    try:
        return importlib.import_module("production_pipeline")
    finally:
        sys.path.remove(bench)


@pytest.mark.ray
def test_benchmark_quick_mode_writes_json(tmp_path: Path) -> None:
    """``benchmarks/production_pipeline.py --quick``: every measurement runs on tiny
    logs and lands in the results file."""
    import json

    script = _benchmark_script()
    written = script.main(
        ["--quick", "--out-dir", str(tmp_path), "--work-dir", str(tmp_path / "work")]
    )
    payload = json.loads(Path(written).read_text())
    assert payload["quick"] is True and payload["finished"] == [4_000]
    for key in ("4000_users",):
        entry = payload["results"][key]
        for mode, cores in (("ray_2cpu", 2), ("ray_1cpu", 1), ("one_process", 1)):
            run = entry[mode]
            assert run["users"] == run["decisions_rows"] == entry["users"]
            assert run["cores"] == cores and run["users_per_s"] > 0
            assert run["peak_pss_tree_gb"] > 0 and run["peak_rss_tree_gb"] > 0
        # the same agent decides the same whichever way the work is spread
        assert entry["ray_2cpu"]["send_share"] == entry["one_process"]["send_share"]
        assert entry["scaling_2_over_1_cpu"] > 0
    proj = payload["projection"]
    assert proj["label"].startswith("PROJECTION") and proj["users"] == 100_000_000
    rate = payload["results"]["4000_users"]["ray_2cpu"]["users_per_s_per_core"]
    assert proj["daily_scoring_core_hours"] == pytest.approx(
        1e8 / rate / 3600, rel=1e-3
    )
    assert payload["training_run"]["alpha_chosen"] in (0.5, 4.0)


@pytest.mark.ray
def test_tune_in_a_notebook_leaves_no_empty_output(tmp_path: Path) -> None:
    """In a Jupyter kernel Tune's default reporter displayed an empty HTML output
    (chapter 14 showed it); the sweep's cell now shows only what the cell prints."""
    import nbformat
    from nbclient import NotebookClient

    # Ray's socket paths must stay under 107 bytes: a short folder of its own
    ray_temp = tempfile.mkdtemp(prefix="ray_nb_")
    code = f"""
from pathlib import Path
from pulse_lib.production import pipeline as P
from pulse_lib.pulserl import simulator as S

transitions = S.generate_logged_dataset(200, 0)
config = P.PipelineConfig(
    train_users=200, n_steps=10, alphas=(0.5,), hidden=(8,), num_cpus=1
)
work = Path({str(tmp_path)!r})
with P.ray_session(num_cpus=1, temp_dir={ray_temp!r}) as ray:
    trials = P.tune_alpha(
        ray, transitions, config, 0.99, work / "agents", work / "tune"
    )
print("trials", len(trials))
"""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3").execute()
    finally:
        shutil.rmtree(ray_temp, ignore_errors=True)
    outputs = nb.cells[0].outputs
    shown = [o for o in outputs if o.output_type in ("display_data", "execute_result")]
    assert not shown, shown
    printed = "".join(o.get("text", "") for o in outputs if o.get("name") == "stdout")
    assert printed.strip().endswith("trials 1"), outputs
    # nor Ray's hint to install ipywidgets (INFO, logged when Ray is imported)
    errors = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    assert "Missing packages" not in errors, errors


def test_benchmark_records_a_rerun_beside_the_main_result(tmp_path: Path) -> None:
    """``--add-rerun``: another run's machine and results go under ``reruns`` of the
    main result, which is otherwise unchanged; a quick (smoke) result is refused."""
    import json

    script = _benchmark_script()
    main_file = tmp_path / "production_pipeline.json"
    main_result = {"benchmark": "production_pipeline", "quick": False,
                   "machine": {"cores": 2}, "results": {"1000000_users": {"users": 1}}}
    main_file.write_text(json.dumps(main_result))
    run = tmp_path / "run" / "production_pipeline.json"
    run.parent.mkdir()
    run.write_text(json.dumps({**main_result, "machine": {"cores": 2, "load": 0.1},
                               "results": {"1000000_users": {"users": 2}}}))
    script.main(["--add-rerun", str(run), "--label", "idle", "--out-dir", str(tmp_path)])
    script.main(["--add-rerun", str(run), "--label", "again", "--out-dir", str(tmp_path)])
    got = json.loads(main_file.read_text())
    assert {k: v for k, v in got.items() if k != "reruns"} == main_result
    assert [r["label"] for r in got["reruns"]] == ["idle", "again"]
    assert got["reruns"][0]["results"]["1000000_users"]["users"] == 2
    run.write_text(json.dumps({**main_result, "quick": True}))
    with pytest.raises(SystemExit, match="not a full"):
        script.main(["--add-rerun", str(run), "--out-dir", str(tmp_path)])
