"""Shared machinery of the hostile-input suites (``tests/test_hostile_*.py``).

A hostile-input case is one row of a table: an id, a call that feeds one bad input to one
public entry point, the exception type it must raise and a regular expression its message must
match (the parameter, column or path that is wrong). :func:`run_case` executes a row under a
timeout and checks that

- the call raises (a bad input accepted silently fails the case),
- the exception is a :class:`~pulse_lib.errors.PulseError`, the standard
  :class:`FileNotFoundError` (missing path) or :class:`SystemExit` (a command line refusing its
  arguments, message on stderr), and of the row's type,
- the message matches the row's pattern (it names what is wrong).

A row with ``xfail`` documents a known defect in a module someone else owns; it is marked
``xfail(strict=True)``, so fixing the defect turns the row red until the mark is removed.
See CONTRIBUTING.md, "Adding hostile-input cases when you add an entry point".
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pulse_lib.errors import PulseError

#: Seconds a single case may run before it counts as a hang.
CASE_TIMEOUT_SECONDS = 10.0

#: The exception types a bad input may raise (see the module docstring).
ALLOWED_ERRORS: tuple[type[BaseException], ...] = (PulseError, FileNotFoundError, SystemExit)


class CaseTimeout(Exception):
    """A case ran longer than :data:`CASE_TIMEOUT_SECONDS`: the entry point hangs."""


@dataclass
class Ctx:
    """What a case's call receives: a fresh temporary folder and pytest's monkeypatch."""

    tmp: Path
    monkeypatch: pytest.MonkeyPatch


@dataclass(frozen=True)
class Case:
    """One bad input to one entry point (a row of a hostile-input table)."""

    id: str  # "<entry point>/<input class>", e.g. "ope.ips/behaviour_prob-denormal"
    call: Callable[[Ctx], Any]  # feeds the bad input
    match: str  # regex the message must match: it names the parameter, column or path
    raises: type[BaseException] | tuple[type[BaseException], ...] = PulseError
    xfail: str | None = None  # known defect elsewhere: why it fails today
    marks: tuple[Any, ...] = field(default=())


def params(cases: Iterable[Case]) -> list[Any]:
    """``pytest.param`` objects for ``@pytest.mark.parametrize("case", params(CASES))``."""
    out = []
    seen: set[str] = set()
    for case in cases:
        if case.id in seen:
            raise ValueError(f"duplicate hostile case id {case.id!r}")
        seen.add(case.id)
        marks = list(case.marks)
        if case.xfail:
            # Only the suite's own verdict counts as the expected failure: a hang does not.
            marks.append(pytest.mark.xfail(strict=True, reason=case.xfail,
                                           raises=pytest.fail.Exception))
        out.append(pytest.param(case, id=case.id, marks=marks))
    return out


@pytest.fixture(autouse=True)
def case_timeout() -> Iterator[None]:
    """Fail any test of the importing module that runs longer than the timeout (a hang).

    Uses ``SIGALRM`` (POSIX, main thread); where there is none the cases run untimed.
    """
    if not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise CaseTimeout(f"still running after {CASE_TIMEOUT_SECONDS} s: the entry point hangs")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, CASE_TIMEOUT_SECONDS)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_case(case: Case, ctx: Ctx, capsys: pytest.CaptureFixture[str]) -> None:
    """Execute one row and check its outcome (see the module docstring)."""
    try:
        result = case.call(ctx)
    except CaseTimeout:
        raise
    except BaseException as exc:  # noqa: BLE001 - the type is the point of the check
        if not isinstance(exc, ALLOWED_ERRORS):
            pytest.fail(f"{case.id}: raised {type(exc).__name__} (not a PulseError, "
                        f"FileNotFoundError or SystemExit): {exc}")
        if not isinstance(exc, case.raises):
            pytest.fail(f"{case.id}: raised {type(exc).__name__}, expected {case.raises}: {exc}")
        message = str(exc)
        if isinstance(exc, SystemExit):
            if exc.code in (0, None):
                pytest.fail(f"{case.id}: exited with success status {exc.code!r}")
            message += "\n" + capsys.readouterr().err
        if not re.search(case.match, message, flags=re.DOTALL):
            pytest.fail(f"{case.id}: message does not name {case.match!r}: {message}")
        return
    pytest.fail(f"{case.id}: bad input accepted silently (returned {result!r:.200})")


def raises_after(check: Callable[[], None], call: Callable[[], Any]) -> Any:
    """Run ``call`` (expected to raise), then ``check`` the aftermath (e.g. a file untouched).

    An AssertionError from ``check`` replaces the expected exception, so the case fails.
    """
    try:
        return call()
    finally:
        check()
