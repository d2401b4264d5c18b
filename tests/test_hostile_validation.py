"""Properties of ``pulse_lib.validation``: any valid input passes unchanged, any invalid input
raises a ``PulseError`` naming the parameter (and the row, for arrays)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pulse_lib import ope
from pulse_lib import validation as v
from pulse_lib.errors import ConfigError, PathError, PulseError, SchemaError

settings.register_profile("hostile", max_examples=60, deadline=None, derandomize=True)
settings.load_profile("hostile")

finite = st.floats(allow_nan=False, allow_infinity=False)
int64 = st.integers(-v.INT64_MAX, v.INT64_MAX)
names = st.from_regex(r"[a-z][a-z_]{0,11}", fullmatch=True)


def names_it(exc: pytest.ExceptionInfo[BaseException], name: str) -> bool:
    return re.search(re.escape(name), str(exc.value)) is not None


# --------------------------------------------------------------------------- scalars


@given(names, int64)
def test_any_int64_is_an_integer(name: str, x: int) -> None:
    assert v.check_integer(name, x) == x
    assert v.check_integer(name, np.int64(x)) == x


@given(names, st.one_of(st.floats(), st.booleans(), st.text(max_size=5),
                        st.integers().filter(lambda i: abs(i) > v.INT64_MAX)))
def test_floats_bools_strings_and_huge_ints_are_not_integers(name: str, x: object) -> None:
    with pytest.raises(ConfigError) as exc:
        v.check_integer(name, x)
    assert names_it(exc, name)


@given(names, st.integers(-10**6, 10**6), st.integers(-10**6, 10**6), st.integers(-10**6, 10**6))
def test_integer_bounds(name: str, x: int, a: int, b: int) -> None:
    low, high = min(a, b), max(a, b)
    if low <= x <= high:
        assert v.check_integer(name, x, low=low, high=high) == x
    else:
        with pytest.raises(ConfigError, match=re.escape(name)):
            v.check_integer(name, x, low=low, high=high)


@given(names, st.one_of(finite, st.integers(-10**300, 10**300)))
def test_positive_and_non_negative(name: str, x: float) -> None:
    for check, ok in ((v.check_positive, x > 0), (v.check_non_negative, x >= 0)):
        if ok:
            assert check(name, x) == float(x)
        else:
            with pytest.raises(ConfigError, match=re.escape(name)):
                check(name, x)


@given(names, st.sampled_from([float("nan"), float("inf"), float("-inf")]))
def test_non_finite_scalars_are_refused(name: str, x: float) -> None:
    for check in (v.check_positive, v.check_non_negative, v.check_probability, v.check_scalar):
        with pytest.raises(ConfigError, match=re.escape(name)):
            check(name, x)


@given(names, st.floats(allow_nan=False))
def test_probability_scalar(name: str, x: float) -> None:
    if 0.0 <= x <= 1.0:
        assert v.check_probability(name, x) == x
    else:
        with pytest.raises(ConfigError, match=re.escape(name)):
            v.check_probability(name, x)


# --------------------------------------------------------------------------- arrays

unit_arrays = hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=1, min_side=1, max_side=30),
                         elements=st.floats(0.0, 1.0))


@given(unit_arrays)
def test_probability_arrays_round_trip(p: np.ndarray) -> None:
    np.testing.assert_array_equal(v.check_probabilities("p", p), p)
    np.testing.assert_array_equal(v.check_probabilities("p", p.tolist()), p)


@given(unit_arrays, st.data(), st.sampled_from([np.nan, np.inf, -np.inf, -1e-9, 1.0 + 1e-9, 7.0]))
def test_one_bad_probability_is_named_with_its_row(p: np.ndarray, data: st.DataObject,
                                                   bad: float) -> None:
    i = data.draw(st.integers(0, p.size - 1))
    q = p.copy()
    q[:i] = 0.5  # the first bad value is the planted one
    q[i] = bad
    with pytest.raises(SchemaError, match=rf"behaviour_prob.*row {i}\b"):
        v.check_probabilities("behaviour_prob", q)


@given(unit_arrays)
def test_strictly_positive_propensities(p: np.ndarray) -> None:
    if (p >= v.MIN_PROPENSITY).all():
        out = v.check_probabilities("mu", p, strictly_positive=True)
        assert np.isfinite(1.0 / out).all()
    else:
        with pytest.raises(SchemaError, match="mu"):
            v.check_probabilities("mu", p, strictly_positive=True)


@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 8), st.integers(1, 6)),
                  elements=st.floats(0.01, 1.0)))
def test_rows_summing_to_one(raw: np.ndarray) -> None:
    p = raw / raw.sum(axis=1, keepdims=True)
    v.check_probabilities("pi", p, ndim=2, rows_sum_to_one=True)
    q = p.copy()
    q[-1] *= 0.5
    with pytest.raises(SchemaError, match=rf"pi.*row {p.shape[0] - 1}"):
        v.check_probabilities("pi", q, ndim=2, rows_sum_to_one=True)


@given(hnp.arrays(np.int64, hnp.array_shapes(min_dims=1, max_dims=1, min_side=1, max_side=20)))
def test_integer_arrays_round_trip_as_int_or_whole_floats(x: np.ndarray) -> None:
    np.testing.assert_array_equal(v.check_integer_array("action", x), x)
    small = x % 1000
    np.testing.assert_array_equal(v.check_integer_array("action", small.astype(float)), small)


@given(st.lists(st.integers(0, 100), min_size=1, max_size=20), st.data(),
       st.sampled_from([0.5, 3.9, np.nan, 1e20, -np.inf]))
def test_fractional_or_huge_integer_entries_are_named(values: list[int], data: st.DataObject,
                                                      bad: float) -> None:
    i = data.draw(st.integers(0, len(values) - 1))
    arr = np.asarray(values, dtype=float)
    arr[i] = bad
    with pytest.raises(SchemaError, match=rf"action.*row {i}\b"):
        v.check_integer_array("action", arr)


@given(hnp.arrays(np.float64, st.integers(1, 30), elements=st.floats(0.0, 1e300)))
def test_effective_sample_size_is_between_one_and_n(w: np.ndarray) -> None:
    ess = ope.effective_sample_size(w)
    if (w == 0).all():
        assert ess == 0.0
    else:
        assert 1.0 - 1e-9 <= ess <= w.size + 1e-9


@given(hnp.arrays(np.float64, st.integers(1, 30), elements=st.floats(0.0, 1e300)), st.data())
def test_effective_sample_size_refuses_nan_and_negative_weights(w: np.ndarray,
                                                                data: st.DataObject) -> None:
    i = data.draw(st.integers(0, w.size - 1))
    for bad in (np.nan, -1.0):
        x = w.copy()
        x[i] = bad
        with pytest.raises(SchemaError, match=rf"weights.*row {i}\b"):
            ope.effective_sample_size(x)


@given(st.integers(1, 40).flatmap(lambda n: st.tuples(
    hnp.arrays(np.float64, n, elements=st.floats(-1e6, 1e6)),
    hnp.arrays(np.float64, n, elements=st.floats(0.0, 1.0)),
    hnp.arrays(np.float64, n, elements=st.floats(1e-6, 1.0)))))
def test_ips_accepts_any_valid_input_and_matches_its_formula(arrays: tuple) -> None:
    r, pi, mu = arrays
    assert ope.ips(r, pi, mu).value == pytest.approx(float(np.mean(pi / mu * r)), rel=1e-9, abs=1e-6)


# --------------------------------------------------------------------------- dates

FORMATS = ["%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%Y%m%d", "%d.%m.%Y"]


@given(st.dates(dt.date(1900, 1, 1), dt.date(2100, 12, 31)), st.sampled_from(FORMATS))
def test_dates_round_trip_in_their_explicit_format(day: dt.date, fmt: str) -> None:
    assert v.parse_date("start", day.strftime(fmt), fmt) == day
    parsed = v.parse_dates("date", [day.strftime(fmt)] * 2, fmt)
    assert [t.date() for t in parsed] == [day, day]


def test_day_first_dates_mean_what_the_format_says() -> None:
    assert v.parse_date("d", "01/07/2016", "%d/%m/%Y") == dt.date(2016, 7, 1)
    assert v.parse_date("d", "01/07/2016", "%m/%d/%Y") == dt.date(2016, 1, 7)
    with pytest.raises(ConfigError, match="d: '13/07/2016' is not a date"):
        v.parse_date("d", "13/07/2016", "%m/%d/%Y")


@given(st.one_of(st.integers(), st.floats(), st.booleans(), st.none()))
def test_numbers_are_never_dates(x: object) -> None:
    with pytest.raises(ConfigError, match="start"):
        v.parse_date("start", x, "%Y-%m-%d")
    with pytest.raises(SchemaError, match=r"date.*row 1"):
        v.parse_dates("date", ["2016-07-01", x], "%Y-%m-%d")


def test_parse_dates_keeps_a_series_index_and_names_the_bad_row() -> None:
    s = pd.Series(["2016-07-01", "2016-07-02"], index=[10, 11])
    assert list(v.parse_dates("date", s, "%Y-%m-%d").index) == [10, 11]
    with pytest.raises(SchemaError, match="row 11 is '2016-7-2x'"):
        v.parse_dates("date", pd.Series(["2016-07-01", "2016-7-2x"], index=[10, 11]), "%Y-%m-%d")
    assert v.parse_dates("date", [], "%Y-%m-%d").empty


# --------------------------------------------------------------------------- dataclass configs


@dataclass(frozen=True)
class Cfg:
    """A config as the library writes them: each field a one-line note, checks in one line."""

    lr: float = 1e-3  # learning rate
    gamma: float = 0.99  # discount
    n_envs: int = 4  # parallel environments
    eps: float = 0.1  # exploration probability
    kind: str = "ppo"  # algorithm

    def __post_init__(self) -> None:
        v.check_fields(self, positive=("lr", "n_envs"), integer=("n_envs",), probability=("eps",),
                       ranges={"gamma": (0.0, 1.0, "(]")}, choices={"kind": ("ppo", "a2c")})


@given(st.floats(1e-8, 10), st.floats(1e-6, 1.0), st.integers(1, 64), st.floats(0.0, 1.0),
       st.sampled_from(["ppo", "a2c"]))
def test_valid_configs_pass(lr: float, gamma: float, n_envs: int, eps: float, kind: str) -> None:
    assert Cfg(lr, gamma, n_envs, eps, kind).n_envs == n_envs


@pytest.mark.parametrize(("field", "value"), [
    ("lr", -1.0), ("lr", 0.0), ("lr", float("nan")), ("lr", "0.1"), ("lr", None), ("lr", True),
    ("gamma", 0.0), ("gamma", 1.5), ("gamma", 5), ("gamma", float("inf")),
    ("n_envs", 2.5), ("n_envs", 2.0), ("n_envs", 0), ("n_envs", True), ("n_envs", 10**20),
    ("eps", -0.1), ("eps", 1.1), ("kind", "dqn"), ("kind", None),
])
def test_invalid_config_fields_are_named(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"Cfg\.{field}\b.*{re.escape(repr(value))[:6]}"):
        Cfg(**{field: value})


def test_check_fields_catches_its_own_typos() -> None:
    @dataclass
    class Typo:
        lr: float = 1.0

        def __post_init__(self) -> None:
            v.check_fields(self, positive=("learning_rate",))

    with pytest.raises(AttributeError, match="no field 'learning_rate'"):
        Typo()


# --------------------------------------------------------------------------- paths


def test_paths(tmp_path) -> None:
    f = tmp_path / "data.csv"
    f.write_text("a\n1\n")
    assert v.check_file("data", f) == f and v.check_file("data", str(f)) == f
    assert v.check_dir("out", tmp_path) == tmp_path
    assert v.check_output_path("out", tmp_path / "new" / "x.csv") == tmp_path / "new" / "x.csv"
    with pytest.raises(FileNotFoundError, match="data: no such file"):
        v.check_file("data", tmp_path / "missing.csv")
    with pytest.raises(PathError, match=f"data must be a file, but {tmp_path} is a directory"):
        v.check_file("data", tmp_path)
    with pytest.raises(PathError, match="out must be a directory"):
        v.check_dir("out", f)
    assert issubclass(PathError, PulseError) and issubclass(PathError, OSError)
