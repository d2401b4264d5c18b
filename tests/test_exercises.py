"""pulse_lib.exercises.check judges the answer, not the way a test reports it."""

from __future__ import annotations

import numpy as np
import pytest

from pulse_lib import exercises
from pulse_lib.errors import ConfigError, PulseError


def test_a_test_returning_true_or_numpy_true_means_correct(capsys):
    assert exercises.check("e", 1, lambda a: True) is True
    assert exercises.check("e", 1, lambda a: np.bool_(True)) is True
    assert capsys.readouterr().out.count("correct.") == 2


def test_a_test_returning_false_is_a_wrong_answer_with_a_reason(capsys):
    assert exercises.check("e", 1, lambda a: False) is False
    assert "the check returned False" in capsys.readouterr().out
    with pytest.raises(exercises.ExerciseFailed, match="returned False"):
        exercises.check("e", 1, lambda a: np.bool_(False), strict=True)


def test_a_test_returning_something_odd_says_so():
    with pytest.raises(exercises.ExerciseFailed, match="instead of None"):
        exercises.check("e", 1, lambda a: 3.5, strict=True)


def test_a_correct_nan_answer_is_accepted():
    assert exercises.check("e", float("nan"), exercises.close_to(float("nan"))) is True
    assert (
        exercises.check("e", [1.0, np.nan], exercises.close_to([1.0, np.nan])) is True
    )
    assert exercises.check("e", [1.0, 2.0], exercises.close_to([1.0, np.nan])) is False


def test_a_missing_test_is_the_chapters_bug_not_the_students():
    with pytest.raises(ConfigError, match=r"\[e\] the exercise's test is None"):
        exercises.check("e", 1.0, None)  # type: ignore[arg-type]


def test_exercise_failed_is_a_pulse_error_and_an_assertion_error():
    assert issubclass(exercises.ExerciseFailed, PulseError)
    assert issubclass(exercises.ExerciseFailed, AssertionError)


def test_close_to_refuses_bad_tolerances():
    for bad in ({"rtol": -1.0}, {"atol": float("nan")}, {"rtol": "1"}):
        with pytest.raises(ConfigError):
            exercises.close_to(1.0, **bad)
