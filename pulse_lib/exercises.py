"""Self-checking exercises (in the spirit of Spinning Up).

A chapter gives the student a stub, then calls :func:`check` on whatever the stub
returns. An untouched stub (``None``/``NotImplemented``) is reported as "not attempted"
without failing the notebook; a wrong answer is reported with the reason; the chapter's
hidden solution cell calls ``check(..., strict=True)`` so CI proves the checker accepts
the reference answer.

The same calls grade a course: when the environment variable :data:`LOG_ENV` names a
file, every :func:`check` appends one JSON line to it (exercise, name, status, reason,
whether it was the reference), which is what ``python -m pulse_lib.course grade``
scores.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from pulse_lib.errors import ConfigError, PulseError

#: Environment variable naming the JSON-lines file every :func:`check` appends its
#: result to.
LOG_ENV = "PULSE_EXERCISE_LOG"

#: The exercise the checks that follow belong to; the course grader sets it before each
#: exercise block (``None``: not graded, the checks still print their feedback).
current_exercise: str | None = None


class ExerciseFailed(PulseError, AssertionError):
    """The reference solution did not pass its own check (raised only with
    ``strict=True``)."""


def _record(name: str, status: str, reason: str | None, strict: bool) -> None:
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    line = {
        "exercise": current_exercise,
        "name": name,
        "status": status,
        "reason": reason,
        "reference": strict,
    }
    with open(
        path, "a", encoding="utf-8"
    ) as log:  # one short line per check: append only
        log.write(json.dumps(line) + "\n")


def _is_missing(answer: Any) -> bool:
    return answer is None or answer is NotImplemented


def _verdict(result: Any) -> str | None:
    """What a test returned, as a reason (``None``: the answer is right)."""
    if result is None:
        return None
    if isinstance(result, (bool, np.bool_)):
        return None if result else "the check returned False"
    if isinstance(result, str):
        return result or "the check returned an empty reason"
    return f"the check returned {result!r} instead of None (right) or a reason (wrong)"


def check(
    name: str,
    answer: Any,
    test: Callable[[Any], str | bool | None],
    *,
    strict: bool = False,
) -> bool:
    """Run ``test(answer)``; it returns ``None`` (or ``True``) when the answer is right,
    else a reason (a string, or ``False``).

    Prints one line of feedback and returns whether the answer passed. With
    ``strict=True`` a failure raises :class:`ExerciseFailed` (used on reference
    solutions). A ``test`` that is not callable is the chapter's bug, not the student's:
    it raises :class:`~pulse_lib.errors.ConfigError` naming the exercise.
    """
    if not callable(test):
        raise ConfigError(
            f"[{name}] the exercise's test is {test!r}, not a function: a bug in the "
            "chapter, "
            "not in your answer"
        )
    if _is_missing(answer):
        print(
            f"[{name}] not attempted yet: fill in the stub above and run this cell "
            "again."
        )
        _record(name, "not attempted", None, strict)
        if strict:
            raise ExerciseFailed(f"[{name}] the reference solution returned nothing")
        return False
    try:
        reason = _verdict(test(answer))
    # the student's answer may be of any shape: report, don't crash
    except Exception as exc:  # noqa: BLE001
        reason = f"checking raised {type(exc).__name__}: {exc}"
    if reason is None:
        print(f"[{name}] correct.")
        _record(name, "correct", None, strict)
        return True
    print(f"[{name}] not yet: {reason}")
    _record(name, "wrong", reason, strict)
    if strict:
        raise ExerciseFailed(f"[{name}] {reason}")
    return False


def close_to(
    expected: Any, *, rtol: float = 1e-2, atol: float = 1e-8
) -> Callable[[Any], str | None]:
    """A test for :func:`check`: the answer is numerically close to ``expected``.

    NaN matches NaN (a right answer can be "undefined"); shapes must agree.
    """
    for what, value in (("rtol", rtol), ("atol", atol)):
        if not (
            isinstance(value, (int, float)) and math.isfinite(value) and value >= 0
        ):
            raise ConfigError(
                f"close_to: {what} must be a finite number >= 0, got {value!r}"
            )

    def test(answer: Any) -> str | None:
        got = np.asarray(answer, dtype=float)
        want = np.asarray(expected, dtype=float)
        if got.shape != want.shape:
            return f"expected shape {want.shape}, got {got.shape}"
        if not np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True):
            return (
                f"expected about {np.round(want, 4).tolist()}, got "
                f"{np.round(got, 4).tolist()}"
            )
        return None

    return test
