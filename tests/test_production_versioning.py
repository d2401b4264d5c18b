"""Manifests, content hashes, the versioned agent (pulse_lib.production.versioning)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch

from pulse_lib.errors import ConfigError, DataFormatError, SchemaError
from pulse_lib.production import versioning as V
from pulse_lib.pulserl.agents import CQLConfig, QuantileQNetwork, TorchCQL, score_mean_q
from pulse_lib.pulserl.features import FEATURE_NAMES


def _net(seed: int = 0) -> QuantileQNetwork:
    torch.manual_seed(seed)
    return QuantileQNetwork(n_quantiles=3, hidden=(16, 8))


def _frame(n: int = 20, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, 63)), columns=list(FEATURE_NAMES))
    frame["user_id"] = np.arange(n)
    return frame


# --------------------------------------------------------------------------- manifests


def test_file_manifest_records_hash_config_schema_code_and_parents(tmp_path):
    raw = tmp_path / "events.csv"
    raw.write_bytes(b"a,b\n1,2\n")
    parent = V.write_manifest(raw, "events", {"n_users": 10})
    data = tmp_path / "states.bin"
    data.write_bytes(b"\x00\x01\x02")

    @dataclass
    class Cfg:
        days: int = 3
        widths: tuple = (1, 2)

    m = V.write_manifest(data, "dataset", Cfg(), V.DEFAULT_SCHEMA, parents=[raw])
    assert m.path == tmp_path / "states.bin.manifest.json"
    assert m.sha256 == hashlib.sha256(b"\x00\x01\x02").hexdigest()
    assert m.content["bytes"] == 3
    assert m.config == {"days": 3, "widths": [1, 2]}
    assert m.schema == V.DEFAULT_SCHEMA
    assert m.parents == (parent.as_parent(),)
    assert m.parents[0]["sha256"] == hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert m.code["pulse_lib"] == "0.1.0"
    # the test runs in a git checkout: the commit is recorded
    commit = m.code["git_commit"]
    assert commit is None or len(commit) == 40
    assert V.verify(data) == m
    assert m.version == f"dataset:{m.sha256[:12]}"


def test_directory_hash_names_changed_added_and_removed_files(tmp_path):
    d = tmp_path / "parts"
    (d / "sub").mkdir(parents=True)
    (d / "a.parquet").write_bytes(b"aa")
    (d / "sub" / "b.parquet").write_bytes(b"bb")
    m = V.write_manifest(d, "dataset")
    assert set(m.content["files"]) == {"a.parquet", "sub/b.parquet"}
    listing = "".join(
        f"{n}\t{hashlib.sha256(c).hexdigest()}\n"
        for n, c in (("a.parquet", b"aa"), ("sub/b.parquet", b"bb"))
    )
    assert m.sha256 == hashlib.sha256(listing.encode()).hexdigest()
    V.verify(d)
    (d / "sub" / "b.parquet").write_bytes(b"bX")
    with pytest.raises(DataFormatError, match=r"changed: sub/b\.parquet"):
        V.verify(d)
    (d / "sub" / "b.parquet").write_bytes(b"bb")
    (d / "c.parquet").write_bytes(b"cc")
    with pytest.raises(DataFormatError, match=r"added: c\.parquet"):
        V.verify(d)
    (d / "c.parquet").unlink()
    (d / "a.parquet").unlink()
    with pytest.raises(DataFormatError, match=r"removed: a\.parquet"):
        V.verify(d)


def test_tampered_file_is_named(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"hello")
    V.write_manifest(f, "dataset")
    f.write_bytes(b"hellO")
    with pytest.raises(DataFormatError, match=r"x\.bin does not match its manifest"):
        V.verify(f)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda text: text[: len(text) // 2], "not valid JSON"),
        (lambda text: "[1, 2]", "must hold a JSON object"),
        (
            lambda text: json.dumps(
                {k: v for k, v in json.loads(text).items() if k != "code"}
            ),
            "no field 'code'",
        ),
        (lambda text: text.replace("pulse-manifest/1", "pulse-manifest/9"), "format"),
        (lambda text: text.replace('"x.bin"', '"y.bin"'), "describes 'y.bin'"),
        (
            lambda text: json.dumps({**json.loads(text), "parents": [{"kind": "a"}]}),
            r"parents\[0\]",
        ),
        (
            lambda text: json.dumps({**json.loads(text), "schema": {"names": []}}),
            "field 'schema'",
        ),
        (
            lambda text: json.dumps(
                {**json.loads(text), "content": {"type": "file", "sha256": "zz"}}
            ),
            "field 'content' is malformed",
        ),
    ],
)
def test_corrupt_manifest_is_a_clear_error(tmp_path, edit, message):
    f = tmp_path / "x.bin"
    f.write_bytes(b"hello")
    m = V.write_manifest(f, "dataset", schema=V.DEFAULT_SCHEMA)
    m.path.write_text(edit(m.path.read_text()))
    with pytest.raises(DataFormatError, match=message) as info:
        V.verify(f)
    assert "x.bin.manifest.json" in str(info.value)


def test_missing_manifest_and_bad_arguments(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"1")
    with pytest.raises(FileNotFoundError, match=r"x\.bin\.manifest\.json"):
        V.read_manifest(f)
    with pytest.raises(FileNotFoundError, match="no such artefact"):
        V.write_manifest(tmp_path / "nope", "dataset")
    with pytest.raises(ConfigError, match="kind"):
        V.write_manifest(f, "Data Set")
    with pytest.raises(ConfigError, match=r"config\.alpha is nan"):
        V.write_manifest(f, "dataset", {"alpha": float("nan")})
    with pytest.raises(
        ConfigError, match=r"config\.fn is a builtin_function_or_method"
    ):
        V.write_manifest(f, "dataset", {"fn": print})
    with pytest.raises(ConfigError, match="parent"):
        V.write_manifest(f, "dataset", parents=[3])
    V.write_manifest(f, "dataset")
    with pytest.raises(SchemaError, match="is a 'dataset' artefact, not a 'agent'"):
        V.verify(f, kind="agent")


def test_schema_difference_words():
    a = V.DEFAULT_SCHEMA
    assert a.difference(V.FeatureSchema(FEATURE_NAMES, "1")) is None
    assert "feature version '1' here but '2' there" == a.difference(
        V.FeatureSchema(FEATURE_NAMES, "2")
    )
    swapped = list(FEATURE_NAMES)
    swapped[5], swapped[6] = swapped[6], swapped[5]
    assert a.difference(V.FeatureSchema(tuple(swapped), "1")).startswith("feature 5 is")
    shorter = a.difference(V.FeatureSchema(FEATURE_NAMES[:-1], "1"))
    assert "63 features here but 62 there" in shorter
    assert "obs_max_days_of_delay" in shorter
    with pytest.raises(ConfigError, match="repeats"):
        V.FeatureSchema(("a", "a"), "1")
    with pytest.raises(ConfigError, match="version"):
        V.FeatureSchema(("a",), "")


def test_versioned_parquet_and_mdp_round_trip(tmp_path):
    frame = _frame()
    m = V.write_versioned_parquet(frame, tmp_path / "d.parquet", {"seed": 0})
    back, m2 = V.read_versioned_parquet(tmp_path / "d.parquet", V.DEFAULT_SCHEMA)
    pd.testing.assert_frame_equal(back, frame)
    assert m2 == m
    other = V.FeatureSchema(FEATURE_NAMES, "2")
    with pytest.raises(SchemaError, match="feature version '2' here but '1' there"):
        V.read_versioned_parquet(tmp_path / "d.parquet", other)
    with pytest.raises(SchemaError, match="user_obs_age_group"):
        V.write_versioned_parquet(
            frame.drop(columns="user_obs_age_group"), tmp_path / "e.parquet"
        )
    mdp = V.MDPDefinition(V.DEFAULT_SCHEMA, gamma=0.9, notes="daily")
    mm = V.save_mdp(mdp, tmp_path / "mdp.json", parents=[m])
    assert mm.parents[0]["sha256"] == m.sha256
    assert V.load_mdp(tmp_path / "mdp.json") == mdp
    with pytest.raises(ConfigError, match="gamma"):
        V.MDPDefinition(V.DEFAULT_SCHEMA, gamma=0.0)


# --------------------------------------------------------------------------- agents


def test_agent_save_load_round_trip_scores_equal(tmp_path):
    net = _net()
    agent = V.VersionedAgent(net, config={"alpha": 4.0})
    obs = _frame()[list(FEATURE_NAMES)].to_numpy()
    q = agent.q_values(obs, V.DEFAULT_SCHEMA)
    np.testing.assert_allclose(q, score_mean_q(net, obs), rtol=0, atol=0)
    m = agent.save(tmp_path / "agent")
    assert m.kind == "agent" and m.extra["agent_version"] == agent.version
    loaded = V.VersionedAgent.load(tmp_path / "agent")
    assert loaded.version == agent.version
    assert loaded.config == {"alpha": 4.0}
    np.testing.assert_array_equal(loaded.q_values(obs, V.DEFAULT_SCHEMA), q)
    actions, q2 = loaded.decide(obs, V.DEFAULT_SCHEMA)
    np.testing.assert_array_equal(actions, q.argmax(axis=1))
    np.testing.assert_array_equal(q2, q)
    # another network, another version; saving again over a save is allowed
    other = V.VersionedAgent(_net(seed=1))
    assert other.version != agent.version
    other.save(tmp_path / "agent")
    assert V.VersionedAgent.load(tmp_path / "agent").version == other.version


def test_agent_content_hash_depends_on_the_weights_only(tmp_path):
    agent = V.VersionedAgent(_net())
    first = agent.save(tmp_path / "a")
    again = agent.save(tmp_path / "b")  # another directory, another temporary name
    assert again.sha256 == first.sha256
    assert (tmp_path / "a" / "weights.pt").read_bytes() == (
        tmp_path / "b" / "weights.pt"
    ).read_bytes()
    assert agent.save(tmp_path / "a").sha256 == first.sha256  # saved over itself
    net = _net()
    with torch.no_grad():
        net.body[0].weight[0, 0] += 1e-3  # one weight changed
    changed = V.VersionedAgent(net).save(tmp_path / "c")
    assert changed.content["files"]["weights.pt"] != first.content["files"]["weights.pt"]
    assert changed.sha256 != first.sha256
    assert V.VersionedAgent.load(tmp_path / "b").version == agent.version


def test_agent_from_cql_and_dataset_scoring(tmp_path):
    cql = TorchCQL(CQLConfig(hidden=(8,), n_quantiles=2), seed=0)
    agent = V.VersionedAgent.from_cql(cql)
    assert agent.config["n_quantiles"] == 2 and agent.config["hidden"] == [8]
    frame = _frame()
    V.write_versioned_parquet(frame, tmp_path / "d.parquet")
    shuffled = frame[list(reversed(frame.columns))]
    np.testing.assert_array_equal(
        agent.score_dataset(tmp_path / "d.parquet"),
        agent.q_values_frame(shuffled, V.DEFAULT_SCHEMA),
    )
    V.write_versioned_parquet(
        frame, tmp_path / "v2.parquet", schema=V.FeatureSchema(FEATURE_NAMES, "2")
    )
    with pytest.raises(SchemaError, match=r"feature version '1' here but '2' there"):
        agent.score_dataset(tmp_path / "v2.parquet")


def test_agent_refuses_other_schema_naming_the_difference():
    agent = V.VersionedAgent(_net())
    obs = np.zeros((2, 63))
    renamed = list(FEATURE_NAMES)
    renamed[40] = "obs_new_feature"
    with pytest.raises(
        SchemaError,
        match=r"feature 40 is 'obs_user_registered' here but "
        r"'obs_new_feature' there",
    ):
        agent.q_values(obs, V.FeatureSchema(tuple(renamed), "1"))
    with pytest.raises(SchemaError, match=r"refuses.*feature version '1' here but '2'"):
        agent.decide(obs, V.FeatureSchema(FEATURE_NAMES, "2"))
    with pytest.raises(SchemaError, match="FeatureSchema"):
        agent.q_values(obs, None)
    with pytest.raises(SchemaError, match=r"shape \('any', 63\)"):
        agent.q_values(np.zeros((2, 62)), V.DEFAULT_SCHEMA)
    bad = np.zeros((3, 63))
    bad[2, 7] = np.nan
    with pytest.raises(SchemaError, match=r"index \(2, 7\)"):
        agent.q_values(bad, V.DEFAULT_SCHEMA)
    with pytest.raises(ConfigError, match="schema lists 62"):
        V.VersionedAgent(_net(), V.FeatureSchema(FEATURE_NAMES[:-1], "1"))
    with pytest.raises(ConfigError, match="QuantileQNetwork"):
        V.VersionedAgent(object())


def test_tampered_agent_weights_are_refused(tmp_path):
    agent = V.VersionedAgent(_net())
    agent.save(tmp_path / "a")
    weights = tmp_path / "a" / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[-20] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(DataFormatError, match=r"changed: weights\.pt"):
        V.VersionedAgent.load(tmp_path / "a")
    # a manifest rewritten to match tampered weights: the recorded version catches it
    state = agent.net.state_dict()
    state["body.0.bias"] = state["body.0.bias"] + 1.0
    torch.save(state, weights)
    V.write_manifest(tmp_path / "a", "agent", schema=V.DEFAULT_SCHEMA)
    with pytest.raises(DataFormatError, match="weights give version"):
        V.VersionedAgent.load(tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="holds other files"):
        agent.save(tmp_path / "b")
