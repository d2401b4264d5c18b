"""Self-checking exercises (in the spirit of Spinning Up).

A chapter gives the student a stub, then calls :func:`check` on whatever the stub returns. An
untouched stub (``None``/``NotImplemented``) is reported as "not attempted" without failing the
notebook; a wrong answer is reported with the reason; the chapter's hidden solution cell calls
``check(..., strict=True)`` so CI proves the checker accepts the reference answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


class ExerciseFailed(AssertionError):
    """The reference solution did not pass its own check (raised only with ``strict=True``)."""


def check(
    name: str,
    answer: Any,
    test: Callable[[Any], str | None],
    *,
    strict: bool = False,
) -> bool:
    """Run ``test(answer)``; it returns ``None`` when the answer is right, else a reason.

    Prints one line of feedback and returns whether the answer passed. With ``strict=True`` a
    failure raises :class:`ExerciseFailed` (used on reference solutions).
    """
    if answer is None or answer is NotImplemented:
        print(f"[{name}] not attempted yet: fill in the stub above and run this cell again.")
        if strict:
            raise ExerciseFailed(f"[{name}] the reference solution returned nothing")
        return False
    try:
        reason = test(answer)
    except Exception as exc:  # the student's answer may be of any shape: report, don't crash
        reason = f"checking raised {type(exc).__name__}: {exc}"
    if reason is None:
        print(f"[{name}] correct.")
        return True
    print(f"[{name}] not yet: {reason}")
    if strict:
        raise ExerciseFailed(f"[{name}] {reason}")
    return False


def close_to(expected: Any, *, rtol: float = 1e-2, atol: float = 1e-8) -> Callable[[Any], str | None]:
    """A test for :func:`check`: the answer is numerically close to ``expected``."""

    def test(answer: Any) -> str | None:
        got = np.asarray(answer, dtype=float)
        want = np.asarray(expected, dtype=float)
        if got.shape != want.shape:
            return f"expected shape {want.shape}, got {got.shape}"
        if not np.allclose(got, want, rtol=rtol, atol=atol):
            return f"expected about {np.round(want, 4).tolist()}, got {np.round(got, 4).tolist()}"
        return None

    return test
