"""The decision service over real HTTP on 127.0.0.1 (pulse_lib.production.serving).

uvicorn runs in a thread on a free port; the tests are its clients. Timings are
recorded (printed, and as test properties) but never asserted: speed lives in
``benchmarks/serving.py``.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch

from pulse_lib.errors import ConfigError, SchemaError
from pulse_lib.production.serving import AgentSlot, create_app, running_server
from pulse_lib.production.versioning import (
    DEFAULT_SCHEMA,
    FeatureSchema,
    VersionedAgent,
)
from pulse_lib.pulserl.agents import QuantileQNetwork
from pulse_lib.pulserl.features import FEATURE_NAMES

N_USERS = 500
MAX_BATCH = 64


def _agent(seed: int, schema: FeatureSchema = DEFAULT_SCHEMA) -> VersionedAgent:
    torch.manual_seed(seed)
    return VersionedAgent(QuantileQNetwork(n_quantiles=4, hidden=(32, 32)), schema)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("agents")
    a, b = _agent(0), _agent(1)
    a.save(root / "a")
    b.save(root / "b")
    _agent(2, FeatureSchema(FEATURE_NAMES, "2")).save(root / "v2")
    app = create_app(a, users=range(N_USERS), max_batch=MAX_BATCH, agent_root=root)
    obs = np.random.default_rng(0).normal(size=(N_USERS, 63))
    with running_server(app) as server:
        yield {"server": server, "app": app, "a": a, "b": b, "obs": obs, "root": root}


@pytest.fixture
def client(setup):
    with httpx.Client(base_url=setup["server"].url, timeout=30) as c:
        yield c
    # every test leaves agent a serving
    setup["app"].state.slot.swap(setup["a"])


def _one_by_one(agent: VersionedAgent, obs: np.ndarray) -> np.ndarray:
    """Each row's Q-values scored alone, as ``POST /decide`` scores it (a batch's
    matrix product may round the last bit differently)."""
    return np.stack(
        [agent.q_values(obs[i : i + 1], DEFAULT_SCHEMA)[0] for i in range(len(obs))]
    )


def _post(conn: http.client.HTTPConnection, path: str, payload: dict) -> tuple:
    conn.request(
        "POST",
        path,
        body=json.dumps(payload),
        headers={"content-type": "application/json"},
    )
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def test_health_and_decisions_equal_the_agents_own(setup, client):
    a, obs = setup["a"], setup["obs"]
    health = client.get("/health").json()
    assert health["agent_version"] == a.version
    assert (health["feature_version"], health["n_features"]) == ("1", 63)
    q = a.q_values(obs[:10], DEFAULT_SCHEMA)
    r = client.post("/decide", json={"user_id": 3, "features": obs[3].tolist()})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["agent_version"] == a.version
    assert body["user_id"] == 3
    np.testing.assert_array_equal(
        body["q_values"], a.q_values(obs[3:4], DEFAULT_SCHEMA)[0]
    )
    assert body["action"] == int(np.argmax(body["q_values"]))
    assert body["action_name"] == ("wait", "send")[body["action"]]
    batch = [{"user_id": i, "features": obs[i].tolist()} for i in range(10)]
    r = client.post("/decide/batch", json={"requests": batch, "feature_version": "1"})
    assert r.status_code == 200, r.text
    decisions = r.json()["decisions"]
    assert [d["user_id"] for d in decisions] == list(range(10))
    np.testing.assert_array_equal([d["q_values"] for d in decisions], q)
    assert [d["action"] for d in decisions] == q.argmax(axis=1).tolist()


def _with_literal(obs_row: np.ndarray, index: int, literal: str) -> bytes:
    """A request body whose feature ``index`` is a raw JSON literal (NaN, 1e999)."""
    values = [repr(float(v)) for v in obs_row]
    values[index] = literal
    return f'{{"user_id": 1, "features": [{", ".join(values)}]}}'.encode()


BAD_REQUESTS = [
    (
        "short",
        "/decide",
        lambda o: {"user_id": 1, "features": o[1, :62].tolist()},
        422,
        "features has 62 values; the agent takes 63",
    ),
    (
        "long",
        "/decide",
        lambda o: {"user_id": 1, "features": o[1].tolist() + [0.0]},
        422,
        "features has 64 values; the agent takes 63",
    ),
    (
        "nan",
        "/decide",
        lambda o: _with_literal(o[1], 5, "NaN"),
        422,
        r"features[5] (user_obs_add_4_AP) is nan",
    ),
    (
        "inf",
        "/decide",
        lambda o: _with_literal(o[1], 62, "1e999"),
        422,
        r"features[62] (obs_max_days_of_delay) is inf",
    ),
    (
        "unknown user",
        "/decide",
        lambda o: {"user_id": 9999, "features": o[1].tolist()},
        404,
        "unknown user_id 9999",
    ),
    (
        "unknown user text",
        "/decide",
        lambda o: {"user_id": "u-1", "features": o[1].tolist()},
        404,
        "unknown user_id 'u-1'",
    ),
    (
        "oversized batch",
        "/decide/batch",
        lambda o: {
            "requests": [{"user_id": 1, "features": o[1].tolist()}] * (MAX_BATCH + 1)
        },
        413,
        f"batch of {MAX_BATCH + 1} requests is over the limit of {MAX_BATCH}",
    ),
    (
        "empty batch",
        "/decide/batch",
        lambda o: {"requests": []},
        422,
        "requests is empty",
    ),
    (
        "batch item width",
        "/decide/batch",
        lambda o: {
            "requests": [
                {"user_id": i, "features": o[i, : 63 - (i == 2) * 53].tolist()}
                for i in range(4)
            ]
        },
        422,
        "requests[2].features has 10 values",
    ),
    (
        "batch item nan",
        "/decide/batch",
        lambda o: {
            "requests": [
                {"user_id": 1, "features": [0.0] * 63},
                {"user_id": 2, "features": [0.0] * 40 + ["nan"] + [0.0] * 22},
            ]
        },
        422,
        "requests[1].features[40] (obs_user_registered) is nan",
    ),
    (
        "batch unknown user",
        "/decide/batch",
        lambda o: {
            "requests": [
                {"user_id": 1, "features": [0.0] * 63},
                {"user_id": -4, "features": [0.0] * 63},
            ]
        },
        404,
        "requests[1]: unknown user_id -4",
    ),
    (
        "feature version",
        "/decide",
        lambda o: {"user_id": 1, "features": o[1].tolist(), "feature_version": "2"},
        409,
        "feature_version '2' differs from the agent's '1'",
    ),
    ("not json", "/decide", lambda o: b"{features: [1, 2", 422, "JSON decode error"),
    (
        "text feature",
        "/decide",
        lambda o: {"user_id": 1, "features": ["x"] * 63},
        422,
        "body.features.0: Input should be a valid number",
    ),
    (
        "no features",
        "/decide",
        lambda o: {"user_id": 1},
        422,
        "body.features: Field required",
    ),
    (
        "swap outside root",
        "/admin/swap",
        lambda o: {"path": "../../etc"},
        403,
        "is outside the agent root",
    ),
    (
        "swap missing agent",
        "/admin/swap",
        lambda o: {"path": "nope"},
        404,
        "no agent at 'nope'",
    ),
    (
        "swap other schema",
        "/admin/swap",
        lambda o: {"path": "v2"},
        409,
        "feature version '1' here but '2' there",
    ),
]


@pytest.mark.parametrize(
    "path, make, status, message",
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_requests_get_4xx_naming_the_problem(
    setup, client, path, make, status, message
):
    payload = make(setup["obs"])
    if isinstance(payload, bytes):
        r = client.post(
            path, content=payload, headers={"content-type": "application/json"}
        )
    else:
        r = client.post(path, json=payload)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]
    # the service is unharmed and still answers with agent a
    assert client.get("/health").json()["agent_version"] == setup["a"].version


def _load(
    url_port: int,
    jobs: list[tuple[int, np.ndarray]],
    threads: int,
    progress: list | None = None,
) -> list[dict]:
    """Send each job as ``POST /decide`` from ``threads`` keep-alive connections
    (appending to ``progress``, if given, as each answer arrives)."""
    local = threading.local()

    def one(job: tuple[int, np.ndarray]) -> dict:
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection("127.0.0.1", url_port, timeout=30)
        user, features = job
        start = time.perf_counter()
        try:
            status, body = _post(
                local.conn, "/decide", {"user_id": user, "features": features.tolist()}
            )
        except (OSError, http.client.HTTPException, ValueError) as exc:  # counted
            local.conn = http.client.HTTPConnection("127.0.0.1", url_port, timeout=30)
            status, body = -1, {"error": repr(exc)}
        if progress is not None:
            progress.append(status)
        return {
            "user": user,
            "start": start,
            "end": time.perf_counter(),
            "status": status,
            "body": body,
        }

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, jobs))


def test_load_zero_errors_and_correct_answers(setup, record_property):
    a, obs, port = setup["a"], setup["obs"], setup["server"].port
    n = 2_000
    users = np.random.default_rng(1).integers(0, N_USERS, n)
    t0 = time.perf_counter()
    results = _load(port, [(int(u), obs[u]) for u in users], threads=8)
    wall = time.perf_counter() - t0
    errors = [r for r in results if r["status"] != 200]
    assert not errors, errors[:3]
    expected = _one_by_one(a, obs)
    for r in results:
        assert r["body"]["agent_version"] == a.version
        assert r["body"]["user_id"] == r["user"]
        np.testing.assert_array_equal(r["body"]["q_values"], expected[r["user"]])
    latency = np.array([r["end"] - r["start"] for r in results]) * 1e3
    p50, p99 = np.percentile(latency, [50, 99])
    record_property("p50_ms", round(float(p50), 3))
    record_property("p99_ms", round(float(p99), 3))
    record_property("requests_per_s", round(n / wall, 1))
    print(
        f"\n{n} requests, 8 client threads: p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
        f"{n / wall:,.0f} requests/s (shared machine; not asserted)"
    )


def test_swap_under_load_loses_nothing(setup):
    a, b, obs, port = setup["a"], setup["b"], setup["obs"], setup["server"].port
    n = 1_500
    users = np.random.default_rng(2).integers(0, N_USERS, n)
    swapped: dict[str, float] = {}

    done: list = []

    def swap_midway() -> None:
        # wait until a fifth of the load is answered, then swap over HTTP
        deadline = time.monotonic() + 60
        while len(done) < n // 5 and time.monotonic() < deadline:
            time.sleep(0.005)
        with httpx.Client(base_url=setup["server"].url, timeout=30) as c:
            swapped["sent"] = time.perf_counter()
            r = c.post("/admin/swap", json={"path": "b"})
            swapped["done"] = time.perf_counter()
            swapped["status"] = r.status_code
            swapped["body"] = r.json()

    swapper = threading.Thread(target=swap_midway)
    swapper.start()
    results = _load(port, [(int(u), obs[u]) for u in users], threads=6, progress=done)
    swapper.join()
    assert swapped["status"] == 200, swapped
    assert swapped["body"] == {"previous": a.version, "current": b.version}
    errors = [r for r in results if r["status"] != 200]
    assert not errors, errors[:3]
    q = {a.version: _one_by_one(a, obs), b.version: _one_by_one(b, obs)}
    versions = [r["body"]["agent_version"] for r in results]
    assert set(versions) == {a.version, b.version}, "the swap did not land mid-load"
    for r, version in zip(results, versions):
        # each answer is exactly that version's answer
        np.testing.assert_array_equal(r["body"]["q_values"], q[version][r["user"]])
        if r["start"] > swapped["done"]:
            assert version == b.version, "a request started after the swap got agent a"
        if version == a.version:
            assert r["start"] < swapped["done"]
    print(
        f"\nswap under load: {versions.count(a.version)} answers from a, "
        f"{versions.count(b.version)} from b, 0 errors"
    )
    with httpx.Client(base_url=setup["server"].url) as c:
        assert c.get("/health").json()["agent_version"] == b.version


class _BlockingAgent(VersionedAgent):
    """Agent a whose decisions wait for a signal: a request held in flight."""

    def __init__(self, base: VersionedAgent) -> None:
        super().__init__(base.net, base.schema)
        self.entered, self.release = threading.Event(), threading.Event()

    def decide(self, obs, schema):
        self.entered.set()
        assert self.release.wait(30)
        return super().decide(obs, schema)


def test_request_in_flight_finishes_on_its_agent(tmp_path):
    blocking, b = _BlockingAgent(_agent(0)), _agent(1)
    app = create_app(blocking)
    obs = np.zeros(63)
    with running_server(app) as server:
        box: dict = {}

        def slow_request() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as c:
                box["r"] = c.post(
                    "/decide", json={"user_id": 0, "features": obs.tolist()}
                )

        thread = threading.Thread(target=slow_request)
        thread.start()
        assert blocking.entered.wait(30)
        previous, current = app.state.slot.swap(b)  # in-process swap while it waits
        assert (previous, current) == (blocking.version, b.version)
        blocking.release.set()
        thread.join(30)
        assert box["r"].status_code == 200
        assert box["r"].json()["agent_version"] == blocking.version
        with httpx.Client(base_url=server.url) as c:
            after = c.post("/decide", json={"user_id": 0, "features": obs.tolist()})
        assert after.json()["agent_version"] == b.version


def test_slot_and_app_refuse_bad_setup():
    a = _agent(0)
    slot = AgentSlot(a)
    with pytest.raises(SchemaError, match="feature version '1' here but '2' there"):
        slot.swap(_agent(1, FeatureSchema(FEATURE_NAMES, "2")))
    assert slot.agent is a and slot.swaps == 0
    with pytest.raises(ConfigError, match="VersionedAgent"):
        AgentSlot(QuantileQNetwork())
    with pytest.raises(ConfigError, match="max_batch"):
        create_app(a, max_batch=0)


BODY_LIMIT = 20_000


@pytest.fixture(scope="module")
def small_body_server():
    app = create_app(_agent(0), max_batch=MAX_BATCH, max_body_bytes=BODY_LIMIT)
    with running_server(app) as server:
        yield server


def test_body_over_content_length_limit_is_413_before_it_is_read(small_body_server):
    import socket

    # the header announces 10 MB; only 100 bytes follow, and the answer comes anyway:
    # the service decided from the header alone, without waiting for the body
    with socket.create_connection(("127.0.0.1", small_body_server.port), 10) as sock:
        sock.settimeout(10)
        head = (
            b"POST /decide/batch HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            b"content-type: application/json\r\ncontent-length: 10000000\r\n\r\n"
        )
        sock.sendall(head + b"x" * 100)
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), reply[:200]
    assert json.loads(body)["detail"] == (
        "request body of 10,000,000 bytes (Content-Length) is over the limit of "
        f"{BODY_LIMIT:,} bytes"
    )


def test_oversized_body_is_413_not_a_json_error(small_body_server):
    not_json = b"x" * (BODY_LIMIT + 1)  # decoding it would be a 422
    with httpx.Client(base_url=small_body_server.url, timeout=30) as c:
        r = c.post(
            "/decide/batch",
            content=not_json,
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 413, r.text
        detail = r.json()["detail"]
        assert "(Content-Length) is over the limit of 20,000 bytes" in detail

    def chunked(data: bytes, size: int = 4_000):  # no Content-Length: streamed count
        for i in range(0, len(data), size):
            yield data[i : i + size]

    with httpx.Client(base_url=small_body_server.url, timeout=30) as c:
        r = c.post(
            "/decide/batch",
            content=chunked(not_json + b"x" * 5_000),
            headers={"content-type": "application/json"},
        )
        assert "content-length" not in r.request.headers
        assert r.status_code == 413, r.text
        assert r.json()["detail"].startswith(
            "request body is over the limit of 20,000 bytes (stopped reading at"
        )
    # a chunked body within the limit reaches the app whole
    rows = [{"user_id": i, "features": [0.25] * 63} for i in range(3)]
    with httpx.Client(base_url=small_body_server.url, timeout=30) as c:
        r = c.post(
            "/decide/batch",
            content=chunked(json.dumps({"requests": rows}).encode(), 500),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 200, r.text
        assert [d["user_id"] for d in r.json()["decisions"]] == [0, 1, 2]
        health = c.get("/health").json()
        assert health["max_body_bytes"] == BODY_LIMIT


def test_default_body_limit_leaves_the_row_count_413(setup, client):
    from pulse_lib.production.serving import default_max_body_bytes

    assert client.get("/health").json()["max_body_bytes"] == default_max_body_bytes(
        MAX_BATCH
    )
    # rows of 17-digit features, one over the batch limit: under the byte limit, so
    # the answer is the row-count 413 (the BAD_REQUESTS case), and twice the byte
    # limit of such rows is the byte 413
    row = {"user_id": 1, "features": (setup["obs"][1] / 3).tolist()}
    one = len(json.dumps(row))
    assert (MAX_BATCH + 1) * one < default_max_body_bytes(MAX_BATCH)
    many = 2 * default_max_body_bytes(MAX_BATCH) // one
    r = client.post("/decide/batch", json={"requests": [row] * many})
    assert r.status_code == 413 and "(Content-Length)" in r.json()["detail"]
