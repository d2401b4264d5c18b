"""Hostile inputs against public entry points: every bad input gets a clear error, none hangs.

The table ``CASES`` is built from small generators, one per entry point family; each row is
one bad input (see ``tests/hostile.py`` for what a row checks). To cover a new entry point, add
a generator and chain it into ``CASES`` (CONTRIBUTING.md explains how).

Families here: the validators (``pulse_lib.validation``), atomic writes (``pulse_lib.io``), the
OPE estimators (``pulse_lib.ope``), the CmdStan CLI and setup (``pulse_lib.stan``) and the
notebook helpers (``pulse_lib.book``, tested read-only: its known defects are ``xfail`` rows).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hostile import Case, Ctx, case_timeout, params, raises_after, run_case  # noqa: F401

from pulse_lib import book, io, ope, validation
from pulse_lib.errors import ConfigError, PathError, PulseError, SchemaError, SetupError

with contextlib.suppress(ImportError):  # book.seed_everything imports torch: not inside a timeout
    import torch  # noqa: F401

# Bad values shared by the families: (class, value).
WRONG_TYPE_SCALARS = [("str", "0.5"), ("none", None), ("list", [0.5]), ("bool", True),
                      ("dict", {"x": 1}), ("complex", 1 + 2j), ("bytes", b"1")]
NON_FINITE = [("nan", float("nan")), ("inf", float("inf")), ("-inf", float("-inf"))]
HUGE = [("huge-int", 10**400), ("huge-float", 1e308)]


# --------------------------------------------------------------------------- validation


def _validation_cases() -> Iterator[Case]:
    v = validation
    scalar_checks: dict[str, Callable[[Any], Any]] = {
        "check_positive": partial(v.check_positive, "lr"),
        "check_non_negative": partial(v.check_non_negative, "lr"),
        "check_probability": partial(v.check_probability, "lr"),
        "check_scalar": partial(v.check_scalar, "lr", low=-1.0, high=1e300),
    }
    bad_scalars = WRONG_TYPE_SCALARS + NON_FINITE + [("huge-int", 10**400), ("negative", -5.0)]
    for (fname, fn), (cls, value) in itertools.product(scalar_checks.items(), bad_scalars):
        if fname == "check_scalar" and cls == "negative":
            continue  # -5 is below low=-1 too, but keep the table about one idea per row
        yield Case(f"validation.{fname}/{cls}", lambda c, fn=fn, value=value: fn(value), "lr",
                   ConfigError)
    yield Case("validation.check_probability/above-one", lambda c: v.check_probability("p", 1.5), "p")
    yield Case("validation.check_probability/strict-zero",
               lambda c: v.check_probability("p", 0.0, strictly_positive=True), "p")
    bad_ints = [("float-2.5", 2.5), ("float-2.0", 2.0), ("bool", True), ("np-bool", np.bool_(True)),
                ("str", "3"), ("none", None), ("nan", float("nan")), ("huge", 10**20),
                ("list", [3]), ("below-low", -3), ("np-float", np.float64(3.0))]
    for cls, value in bad_ints:
        yield Case(f"validation.check_integer/{cls}",
                   lambda c, value=value: v.check_integer("n_envs", value, low=0), "n_envs")
    arrays = {
        "empty": [], "string": "0.5", "strings": ["0.5", "0.5"], "none": None, "dict": {"a": 1},
        "2d": [[0.5, 0.5]], "ragged": [[1.0], [1.0, 2.0]], "nan": [0.5, np.nan],
        "inf": [0.5, np.inf], "complex": [0.5 + 1j], "dates": np.array(["2020-01-01"], "M8[D]"),
        "huge-int": [10**400], "objects": [object()], "generator": (x for x in [0.5]),
    }
    for cls, value in arrays.items():
        yield Case(f"validation.check_array/{cls}",
                   lambda c, value=value: v.check_array("clicks", value, ndim=1), "clicks")
    probs = dict(arrays, **{"negative": [-0.1, 0.5], "above-one": [0.5, 1.5]})
    for cls, value in probs.items():
        yield Case(f"validation.check_probabilities/{cls}",
                   lambda c, value=value: v.check_probabilities("mu", value), "mu")
    for cls, value in [("zero", [0.5, 0.0]), ("denormal", [0.5, 1e-320])]:
        yield Case(f"validation.check_probabilities/strict-{cls}",
                   lambda c, value=value: v.check_probabilities("mu", value, strictly_positive=True),
                   "mu.*row 1")
    yield Case("validation.check_probabilities/rows-not-summing",
               lambda c: v.check_probabilities("pi", [[0.5, 0.5], [0.5, 0.6]], ndim=2,
                                                rows_sum_to_one=True), "pi.*row 1")
    for cls, value in [("float-3.9", [1.0, 3.9]), ("huge", [1e20]), ("bool", [True]),
                       ("nan", [1.0, np.nan]), ("uint-huge", np.array([2**64 - 1], np.uint64)),
                       ("negative", [-1]), ("string", "3")]:
        yield Case(f"validation.check_integer_array/{cls}",
                   lambda c, value=value: v.check_integer_array("action", value, low=0), "action")
    for cls, value in [("nan", [1.0, np.nan]), ("negative", [1.0, -0.5]), ("empty", []),
                       ("inf", [np.inf])]:
        yield Case(f"validation.check_weights/{cls}",
                   lambda c, value=value: v.check_weights("w", value), "w")
    # paths
    yield Case("validation.check_file/missing", lambda c: v.check_file("data", c.tmp / "no.csv"),
               "no.csv", FileNotFoundError)
    yield Case("validation.check_file/directory", lambda c: v.check_file("data", c.tmp), "data.*directory",
               PathError)
    yield Case("validation.check_file/none", lambda c: v.check_file("data", None), "data")
    yield Case("validation.check_file/empty-string", lambda c: v.check_file("data", ""), "data")
    yield Case("validation.check_file/nul-byte", lambda c: v.check_file("data", "a\x00b"), "data")
    yield Case("validation.check_dir/missing", lambda c: v.check_dir("out", c.tmp / "nope"),
               "nope", FileNotFoundError)
    yield Case("validation.check_dir/a-file", lambda c: v.check_dir("out", _file(c.tmp)), "out.*file",
               PathError)
    yield Case("validation.check_output_path/directory",
               lambda c: v.check_output_path("out", c.tmp), "out", PathError)
    yield Case("validation.check_output_path/parent-is-file",
               lambda c: v.check_output_path("out", _file(c.tmp) / "x.csv"), "parent", PathError)
    # dates
    bad_dates = [("int", 20160701), ("float", 1.5), ("none", None), ("day-first", "01/07/2016"),
                 ("garbage", "soon"), ("bool", True), ("empty", "")]
    for cls, value in bad_dates:
        yield Case(f"validation.parse_date/{cls}",
                   lambda c, value=value: v.parse_date("start", value, "%Y-%m-%d"), "start")
    for cls, fmt in [("no-format", None), ("format-without-directives", "YYYY-MM-DD")]:
        yield Case(f"validation.parse_date/{cls}",
                   lambda c, fmt=fmt: v.parse_date("start", "2016-07-01", fmt), "start.*format")
    columns = {"ints": [20160701, 20160702], "missing": ["2016-07-01", None],
               "nan": ["2016-07-01", float("nan")], "mixed-format": ["2016-07-01", "02/07/2016"],
               "string": "2016-07-01", "truncated": ["2016-07-01", "2016-07-0"]}
    for cls, value in columns.items():
        yield Case(f"validation.parse_dates/{cls}",
                   lambda c, value=value: v.parse_dates("date", value, "%Y-%m-%d"), "date")


def _file(folder: Path, name: str = "a_file.txt") -> Path:
    path = folder / name
    path.write_text("x")
    return path


# --------------------------------------------------------------------------- io


def _write(path: Any, mode: str = "w") -> None:
    with io.atomic_write(path, mode) as handle:
        handle.write("x" if mode == "w" else b"x")


def _io_cases() -> Iterator[Case]:
    for fn_name, fn in [("atomic_write", _write), ("atomic_path", lambda p: _path_write(p))]:
        yield Case(f"io.{fn_name}/directory", lambda c, fn=fn: fn(c.tmp), "directory", PathError)
        yield Case(f"io.{fn_name}/parent-is-file", lambda c, fn=fn: fn(_file(c.tmp) / "x.txt"),
                   "parent", PathError)
        for cls, value in [("none", None), ("int", 3), ("empty", ""), ("bytes", b"x.txt"),
                           ("nul-byte", "a\x00b")]:
            yield Case(f"io.{fn_name}/path-{cls}", lambda c, fn=fn, value=value: fn(value), "path",
                       ConfigError)
    for mode in ["a", "r", "w+", "x", None]:
        yield Case(f"io.atomic_write/mode-{mode}",
                   lambda c, mode=mode: _write(c.tmp / "out.txt", mode), "modes", ConfigError)

    def suffix_added(c: Ctx) -> None:
        target = c.tmp / "weights"
        target.write_bytes(b"old")

        def untouched() -> None:
            assert target.read_bytes() == b"old", "the target was replaced"
            assert sorted(p.name for p in c.tmp.iterdir()) == ["weights"], "temp files left"

        def call() -> None:
            with io.atomic_path(target) as tmp:
                np.save(tmp, np.arange(3))  # np.save appends .npy to a name without it

        raises_after(untouched, call)

    yield Case("io.atomic_path/writer-added-suffix", suffix_added, "wrote .*npy", PulseError)

    def deleted(c: Ctx) -> None:
        with io.atomic_path(c.tmp / "out.bin") as tmp:
            tmp.unlink()

    yield Case("io.atomic_path/writer-left-no-file", deleted, "left no file", PulseError)
    for cls, value in [("negative", -1.0), ("nan", float("nan")), ("string", "1h"), ("none", None)]:
        yield Case(f"io.clean_stale_temp_files/older_than-{cls}",
                   lambda c, value=value: io.clean_stale_temp_files(c.tmp / "x", value),
                   "older_than", ConfigError)


def _path_write(path: Any) -> None:
    with io.atomic_path(path) as tmp:
        tmp.write_text("x")


# --------------------------------------------------------------------------- ope

N = 4
GOOD_BANDIT = {"rewards": [1.0, 0.0, 2.0, 1.0], "target_prob": [0.5, 0.2, 0.9, 1.0],
                   "behaviour_prob": [0.5, 0.5, 0.5, 0.5]}
GOOD_DR = dict(GOOD_BANDIT, q_hat_logged_action=[0.5] * N, v_hat_target=[0.5] * N)
GOOD_TRAJ = dict(episode_ids=[0, 0, 1, 1], steps=[0, 1, 0, 1], **GOOD_BANDIT)

ARRAY_CLASSES: dict[str, Any] = {
    "empty": [], "string": "1.0", "strings": ["1.0"] * N, "none": None, "dict": {"a": 1.0},
    "object": object(), "2d": [[1.0] * N], "too-short": [1.0] * (N - 1), "too-long": [1.0] * (N + 1),
    "nan": [1.0, np.nan, 1.0, 1.0], "inf": [1.0, np.inf, 1.0, 1.0], "-inf": [1.0, -np.inf, 1.0, 1.0],
    "complex": [1.0 + 1j] * N, "huge-int": [10**400] * N, "none-entry": [1.0, None, 1.0, 1.0],
    "pandas-na": pd.array([1.0, pd.NA, 1.0, 1.0], dtype="Float64"),
    "dates": np.array(["2020-01-01"] * N, dtype="M8[D]"),
}
PROB_CLASSES: dict[str, Any] = dict(
    ARRAY_CLASSES, **{"negative": [0.5, -0.1, 0.5, 0.5], "above-one": [0.5, 1.5, 0.5, 0.5],
                      "huge": [0.5, 1e308, 0.5, 0.5]})
PROPENSITY_CLASSES: dict[str, Any] = dict(
    PROB_CLASSES, zero=[0.5, 0.0, 0.5, 0.5], denormal=[0.5, 1e-320, 0.5, 0.5])


def _array_cases(entry: str, fn: Callable[..., Any], good: dict[str, Any]) -> Iterator[Case]:
    for arg in good:
        classes = (PROPENSITY_CLASSES if arg == "behaviour_prob" else
                   PROB_CLASSES if arg == "target_prob" else ARRAY_CLASSES)
        for cls, value in classes.items():
            if arg in ("episode_ids", "steps") and cls in ("strings", "huge-int"):
                continue  # string ids are valid; steps are checked as integers below
            if len(good) == 1 and cls in ("too-short", "too-long"):
                continue  # a single array has no length to disagree with
            kwargs = dict(good, **{arg: value})
            if cls == "empty":  # empty everywhere: "is empty" rather than a length mismatch
                kwargs = {k: [] for k in good}
                match = "empty"
            else:
                match = arg
            yield Case(f"ope.{entry}/{arg}-{cls}", lambda c, kw=kwargs: fn(**kw), match, SchemaError)


def _ope_cases() -> Iterator[Case]:
    for name in ("ips", "snips"):
        yield from _array_cases(name, getattr(ope, name), GOOD_BANDIT)
    yield from _array_cases("doubly_robust", ope.doubly_robust, GOOD_DR)
    yield from _array_cases("direct_method", ope.direct_method,
                            {"predicted_value_under_target": [1.0] * N})
    overflow = dict(GOOD_DR, rewards=[1e308] * N, q_hat_logged_action=[-1e308] * N)
    yield Case("ope.doubly_robust/overflow", lambda c: ope.doubly_robust(**overflow), "overflow")
    yield Case("ope.ips/overflow", lambda c: ope.ips([1e308] * 2, [1.0, 1.0], [1e-10, 1e-10]),
               "overflow")
    yield Case("ope.snips/all-zero-target", lambda c: ope.snips([1.0, 2.0], [0, 0], [0.5, 0.5]),
               "zero on every")
    for name, fn in ope.TRAJECTORY_ESTIMATORS.items():
        yield from _array_cases(name, fn, GOOD_TRAJ)
        bad_steps = {"float": [0.0, 1.0, 0.0, 1.0], "bool": [False, True, False, True],
                     "gap": [0, 2, 0, 1], "repeat": [0, 0, 0, 1], "negative": [-1, 0, 0, 1]}
        for cls, steps in bad_steps.items():
            yield Case(f"ope.{name}/steps-{cls}",
                       lambda c, fn=fn, s=steps: fn(**dict(GOOD_TRAJ, steps=s)), "step", SchemaError)
        bad_ids = {"float-nan": [0.0, 0.0, np.nan, np.nan], "mixed-types": [0, 0, "b", "b"],
                   "bool": [True, True, False, False], "none-mixed": [None, None, 1, 1]}
        for cls, ids in bad_ids.items():
            yield Case(f"ope.{name}/episode_ids-{cls}",
                       lambda c, fn=fn, i=ids: fn(**dict(GOOD_TRAJ, episode_ids=i)), "episode_ids",
                       SchemaError)
        for cls, gamma in [("zero", 0.0), ("negative", -0.5), ("above-one", 1.5), ("nan", np.nan),
                           ("inf", np.inf), ("bool", True), ("string", "0.9"), ("none", None)]:
            yield Case(f"ope.{name}/gamma-{cls}",
                       lambda c, fn=fn, g=gamma: fn(**GOOD_TRAJ, gamma=g), "gamma", SchemaError)
        long_ep = {"episode_ids": [0] * 3, "steps": [0, 1, 2], "rewards": [1.0] * 3, "target_prob": [1.0] * 3,
                       "behaviour_prob": [1e-200] * 3}
        yield Case(f"ope.{name}/weights-overflow", lambda c, fn=fn, kw=long_ep: fn(**kw),
                   "overflow")
    for cls, value in [("nan", [1.0, np.nan]), ("negative", [1.0, -2.0]), ("empty", []),
                       ("inf", [1.0, np.inf]), ("2d", [[1.0, 2.0]]), ("string", "1"), ("none", None)]:
        yield Case(f"ope.effective_sample_size/{cls}",
                   lambda c, value=value: ope.effective_sample_size(value), "weights")
    est = ope.ips([1.0, 2.0], [0.5, 0.5], [0.5, 0.5])
    for cls, level in [("zero", 0.0), ("one", 1.0), ("above-one", 1.5), ("nan", np.nan),
                       ("string", "0.95"), ("none", None), ("bool", True)]:
        yield Case(f"ope.OPEEstimate.ci/level-{cls}", lambda c, level=level: est.ci(level),
                   "confidence level")


# --------------------------------------------------------------------------- stan


def _stan_cases() -> Iterator[Case]:
    from pulse_lib import stan
    from pulse_lib.stan.__main__ import main

    def guarded(c: Ctx) -> None:
        """No route may run: a bad ``jobs`` must be refused before anything is fetched or built."""
        def reached(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("a bad jobs value reached a setup route")

        for route in ("find_existing", "install_online", "_run"):
            c.monkeypatch.setattr(stan, route, reached)

    for cls, value in [("negative", "-3"), ("zero", "0"), ("float", "2.5"), ("word", "many"),
                       ("empty", ""), ("huge", str(10**30))]:
        yield Case(f"stan.cli/install-jobs-{cls}",
                   lambda c, value=value: (guarded(c), main(["install", "--jobs", value])),
                   "--jobs", SystemExit)
    yield Case("stan.cli/no-command", lambda c: main([]), "required", SystemExit)
    yield Case("stan.cli/unknown-command", lambda c: main(["build"]), "invalid choice", SystemExit)
    for cls, value in [("negative", -3), ("zero", 0), ("float", 2.5), ("bool", True),
                       ("string", "4"), ("huge", 10**30)]:
        for fn_name in ("install", "build_offline"):
            yield Case(f"stan.{fn_name}/jobs-{cls}",
                       lambda c, value=value, fn_name=fn_name: (
                           guarded(c), getattr(stan, fn_name)(value)),
                       "jobs", ConfigError)
    for cls, value in [("traversal", "../models/channel_response"), ("empty", ""), ("none", None),
                       ("int", 3), ("path-sep", "a/b")]:
        yield Case(f"stan.model_file/name-{cls}", lambda c, value=value: stan.model_file(value),
                   "Stan program name", ConfigError)
    yield Case("stan.model_file/unknown", lambda c: stan.model_file("nope"), "nope", SetupError)


# --------------------------------------------------------------------------- book (read-only)

PROFILES = {"ci": {"n": 1}, "full": {"n": 2}}


def _bench_root(c: Ctx, name: str, content: bytes | None, directory: bool = False) -> str:
    """A checkout in ``c.tmp`` whose ``benchmarks/results/<name>.json`` holds ``content``."""
    results = c.tmp / "benchmarks" / "results"
    results.mkdir(parents=True)
    (c.tmp / "_toc.yml").write_text("")
    c.monkeypatch.setenv("PULSE_BOOK_ROOT", str(c.tmp))
    if directory:
        (results / f"{name}.json").mkdir()
    elif content is not None:
        (results / f"{name}.json").write_bytes(content)
    return name


def _book_cases() -> Iterator[Case]:
    # resolve_profile
    for cls, profile in [("unknown", "fast"), ("none", None), ("int", 1), ("empty", ""),
                         ("case", "CI")]:
        yield Case(f"book.resolve_profile/profile-{cls}",
                   lambda c, p=profile: book.resolve_profile(PROFILES, p), "profile", ConfigError)
    for cls, profiles in [("empty", {}), ("missing-full", {"ci": {}}),
                          ("differing-keys", {"ci": {"a": 1}, "full": {"b": 1}})]:
        yield Case(f"book.resolve_profile/profiles-{cls}",
                   lambda c, p=profiles: book.resolve_profile(p, "ci"), "profile", ConfigError)
    yield Case("book.resolve_profile/profiles-not-mappings",
               lambda c: book.resolve_profile({"ci": 5, "full": 5}, "ci"), "profile", ConfigError)
    yield Case("book.resolve_profile/profiles-list",
               lambda c: book.resolve_profile(["ci", "full"], "ci"), "profile", ConfigError)
    # seed_everything
    for cls, seed in [("negative", -1), ("float", 2.5), ("string", "1"), ("none", None),
                      ("nan", float("nan"))]:
        yield Case(f"book.seed_everything/{cls}", lambda c, s=seed: book.seed_everything(s), "seed",
                   ConfigError)
    yield Case("book.seed_everything/bool", lambda c: book.seed_everything(True), "seed", ConfigError)
    yield Case("book.seed_everything/huge", lambda c: book.seed_everything(2**70), "seed", ConfigError)
    # mean_ci / format_ci
    for cls, values in [("empty", []), ("nan", [1.0, np.nan]), ("inf", [1.0, np.inf]),
                        ("none-entry", [1.0, None])]:
        yield Case(f"book.mean_ci/{cls}", lambda c, v=values: book.mean_ci(v), "values", ConfigError)
        yield Case(f"book.format_ci/{cls}", lambda c, v=values: book.format_ci(v), "values",
                   ConfigError)
    for cls, level in [("zero", 0.0), ("one", 1.0), ("nan", np.nan), ("percent", 95)]:
        yield Case(f"book.mean_ci/level-{cls}", lambda c, lv=level: book.mean_ci([1.0, 2.0], lv),
                   "level", ConfigError)
    broken_mean_ci = [
        ("level-string", lambda c: book.mean_ci([1.0, 2.0], "0.95"), "level",
         "a string level gives a bare TypeError"),
        ("values-string", lambda c: book.mean_ci("abc"), "values",
         "a string of values gives a bare ValueError"),
        ("values-2d", lambda c: book.mean_ci([[1.0, 2.0], [3.0, 4.0]]), "values",
         "a 2-D array is flattened silently (seeds and metrics mixed)"),
        ("values-dict", lambda c: book.mean_ci({"a": 1.0}), "values",
         "a dict gives a bare TypeError"),
    ]
    for cls, call, match, why in broken_mean_ci:
        yield Case(f"book.mean_ci/{cls}", call, match, ConfigError)
    for cls, digits, why in [("negative", -1, "gives a bare ValueError"),
                             ("float", 2.5, "gives a bare ValueError"),
                             ("string", "3", "is accepted silently")]:
        yield Case(f"book.format_ci/digits-{cls}",
                   lambda c, d=digits: book.format_ci([1.0, 2.0], digits=d), "digits", ConfigError)
    # markdown_table
    for cls, frame in [("none", None), ("list", [[1, 2]]), ("dict", {"a": [1]})]:
        yield Case(f"book.markdown_table/frame-{cls}", lambda c, f=frame: book.markdown_table(f),
                   "frame", ConfigError)
    frame = pd.DataFrame({"a": [0.5]})
    yield Case("book.markdown_table/floatfmt-bad", lambda c: book.markdown_table(frame, "q.z"),
               "floatfmt", ConfigError)
    # load_benchmark / show_benchmark: truncated, corrupt, wrong encoding, directory
    corrupt = {"truncated": b'{"machine": {"cores": 2}, "value": 1.2', "binary": b"\xff\xfe\x00\x01",
               "empty": b"", "list": b"[1, 2]", "no-machine": b'{"value": 1}', "nan-text": b"NaN",
               "latin1": '{"machine": {}, "name": "caf\xe9"'.encode("latin-1")}
    for fn_name in ("load_benchmark", "show_benchmark"):
        fn = getattr(book, fn_name)
        for cls, content in corrupt.items():
            yield Case(f"book.{fn_name}/{cls}",
                       lambda c, fn=fn, b=content: fn(_bench_root(c, "demo", b)), "demo.json",
                       PulseError)
        yield Case(f"book.{fn_name}/directory",
                   lambda c, fn=fn: fn(_bench_root(c, "demo", None, directory=True)), "demo",
                   PulseError)
        for cls, name in [("none", None), ("int", 3), ("traversal", "../../etc/passwd")]:
            yield Case(f"book.{fn_name}/name-{cls}",
                       lambda c, fn=fn, n=name: (_bench_root(c, "demo", None), fn(n)), "name",
                       ConfigError)
    yield Case("book.benchmark_provenance/no-machine",
               lambda c: book.benchmark_provenance({}, "demo"), "machine", PulseError)
    yield Case("book.benchmark_provenance/machine-not-dict",
               lambda c: book.benchmark_provenance({"machine": 5}, "demo"), "machine", PulseError)
    # package_versions / version_text: a string is iterated over its characters
    yield Case("book.package_versions/string", lambda c: book.package_versions("numpy"), "packages",
               ConfigError)
    yield Case("book.version_text/string", lambda c: book.version_text("numpy"), "extra",
               ConfigError)
    # repo_root / generated_dir with a bad PULSE_BOOK_ROOT

    def root_env(c: Ctx, value: Path) -> None:
        c.monkeypatch.setenv("PULSE_BOOK_ROOT", str(value))

    yield Case("book.repo_root/env-missing-folder",
               lambda c: (root_env(c, c.tmp / "nope"), book.repo_root()), "PULSE_BOOK_ROOT",
               (ConfigError, FileNotFoundError))
    yield Case("book.generated_dir/env-missing-folder",
               lambda c: (root_env(c, c.tmp / "nope"), book.generated_dir()), "PULSE_BOOK_ROOT",
               (ConfigError, FileNotFoundError))
    yield Case("book.datasets_dir/env-is-a-file",
               lambda c: (root_env(c, _file(c.tmp)), book.generated_dir()), "PULSE_BOOK_ROOT",
               PulseError)
    yield Case("book.repo_root/start-missing",
               lambda c: (c.monkeypatch.delenv("PULSE_BOOK_ROOT"), book.repo_root(c.tmp / "nope")),
               "nope", FileNotFoundError)
    yield Case("book.repo_root/start-is-a-file",
               lambda c: (c.monkeypatch.delenv("PULSE_BOOK_ROOT"), book.repo_root(_file(c.tmp))),
               "a_file.txt", PathError)
    yield Case("book.setup_torch/threads-negative", lambda c: book.setup_torch(-2), "threads",
               ConfigError)
    yield Case("book.setup_torch/threads-float", lambda c: book.setup_torch(2.5), "threads",
               ConfigError)


CASES: list[Case] = [
    *_validation_cases(), *_io_cases(), *_ope_cases(), *_stan_cases(), *_book_cases(),
]


@pytest.mark.parametrize("case", params(CASES))
def test_hostile_input_is_refused_clearly(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    run_case(case, Ctx(tmp_path, monkeypatch), capsys)


def test_the_table_covers_every_input_class() -> None:
    """Each family keeps the input classes of issue 15 (a guard against silently dropped rows)."""
    ids = " ".join(case.id for case in CASES)
    for cls in ("empty", "string", "2d", "nan", "inf", "negative", "above-one", "huge", "zero",
                "denormal", "missing", "directory", "truncated", "binary", "none"):
        assert cls in ids, cls
    assert len(CASES) >= 400


# --------------------------------------------------------------------------- valid input still passes


def test_valid_input_still_passes(tmp_path: Path) -> None:
    """The same entry points accept the good input each family starts from."""
    assert ope.ips(**GOOD_BANDIT).n == N
    assert np.isfinite(ope.doubly_robust(**GOOD_DR).value)
    for fn in ope.TRAJECTORY_ESTIMATORS.values():
        assert fn(**GOOD_TRAJ, gamma=0.9).n == 2
        assert fn(**dict(GOOD_TRAJ, episode_ids=["a", "a", "b", "b"])).n == 2
    assert ope.ips([1.0], [1.0], [MIN := validation.MIN_PROPENSITY]).value == pytest.approx(1 / MIN)
    assert ope.effective_sample_size([0.0, 0.0]) == 0.0
    assert ope.effective_sample_size([1e300, 1e300]) == pytest.approx(2.0)
    assert ope.effective_sample_size(np.array([1, 1, 1, 1])) == pytest.approx(4.0)
    _write(tmp_path / "ok.txt")
    assert (tmp_path / "ok.txt").read_text() == "x"


# --------------------------------------------------------------------------- atomic writes: behaviour


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077, 0o002])
def test_atomic_files_get_the_mode_open_would_give(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        with open(tmp_path / "plain.txt", "w") as handle:
            handle.write("x")
        _write(tmp_path / "atomic.txt")
        _path_write(tmp_path / "atomic_path.txt")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "atomic.txt") == _mode(tmp_path / "plain.txt") == 0o666 & ~umask
    assert _mode(tmp_path / "atomic_path.txt") == 0o666 & ~umask


def test_atomic_write_keeps_the_mode_of_the_file_it_replaces(tmp_path: Path) -> None:
    target = tmp_path / "script.sh"
    target.write_text("old")
    target.chmod(0o750)
    _write(target)
    assert target.read_text() == "x" and _mode(target) == 0o750


def test_atomic_path_lets_np_save_write_a_npy_target(tmp_path: Path) -> None:
    with io.atomic_path(tmp_path / "a.npy") as tmp:
        np.save(tmp, np.arange(3))
    assert np.load(tmp_path / "a.npy").tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]


def test_stale_temp_files_are_cleaned_and_fresh_or_foreign_ones_kept(tmp_path: Path) -> None:
    target = tmp_path / "data.csv"
    stale = tmp_path / ".data.csv.abcd1234.part.csv"
    stale_suffixed = tmp_path / ".data.csv.zz_z9999.part.csv.npy"
    fresh = tmp_path / ".data.csv.efgh5678.part.csv"
    foreign = [tmp_path / ".data.csv.notrandom.part", tmp_path / ".other.csv.abcd1234.part.csv",
               tmp_path / "data.csv.abcd1234.part"]
    for path in (stale, stale_suffixed, fresh, *foreign):
        path.write_text("partial")
    hours_ago = time.time() - 2 * io.STALE_AFTER_SECONDS
    for path in (stale, stale_suffixed, *foreign):
        os.utime(path, (hours_ago, hours_ago))
    _write(target)  # every write cleans stale temp files of its own target
    left = {p.name for p in tmp_path.iterdir()}
    assert stale.name not in left and stale_suffixed.name not in left
    assert {fresh.name, target.name, *(p.name for p in foreign)} <= left
    assert io.clean_stale_temp_files(target, older_than=0) == [fresh]


def test_failed_writes_leave_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), io.atomic_write(tmp_path / "x.txt", "w") as handle:
        handle.write("half")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_book_json_result_round_trips_through_load_benchmark(tmp_path: Path, monkeypatch) -> None:
    """A well-formed result loads (so the corrupt-file rows above test the parser, not setup)."""
    ctx = Ctx(tmp_path, monkeypatch)
    name = _bench_root(ctx, "demo", json.dumps({"machine": {"cores": 2}, "v": 1}).encode())
    assert book.load_benchmark(name)["v"] == 1


def test_atomic_text_is_utf8_whatever_the_locale(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LC_ALL", "C")  # a reader on another locale gets the same bytes
    with io.atomic_write(tmp_path / "t.txt", "w") as handle:
        handle.write("café λ")
    assert (tmp_path / "t.txt").read_bytes() == "café λ".encode()
