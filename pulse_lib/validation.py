"""Validators every config and entry point of :mod:`pulse_lib` uses on its input.

One small set of checks, so a rule ("a propensity must be strictly positive", "an
integer parameter is never a float or a bool") is written once and applied everywhere:

- scalars: :func:`check_scalar`, :func:`check_positive`, :func:`check_non_negative`,
  :func:`check_probability`, :func:`check_integer`;
- arrays: :func:`check_array`, :func:`check_integer_array`, :func:`check_probabilities`,
  :func:`check_weights`;
- paths: :func:`check_file`, :func:`check_dir`, :func:`check_output_path`;
- dates with an explicit format: :func:`parse_date`, :func:`parse_dates`;
- dataclass configs: :func:`check_fields`, called from ``__post_init__``.

Every failure raises a :class:`~pulse_lib.errors.PulseError` subclass (the ``error``
argument, :class:`~pulse_lib.errors.ConfigError` for parameters and
:class:`~pulse_lib.errors.SchemaError` for arrays and columns by default) whose message
names the parameter or column (``name``), the offending value and, for arrays, its row.
A missing path raises the standard :class:`FileNotFoundError`. Nothing is repaired
silently: ``2.5`` is not rounded to an integer, NaN is not dropped, a day-first date is
not guessed.

>>> check_integer("n_envs", 4, low=1)
4
>>> check_integer("n_envs", 2.5)
Traceback (most recent call last):
    ...
pulse_lib.errors.ConfigError: n_envs must be an integer, got 2.5 (float)
"""

from __future__ import annotations

import datetime as _dt
import math
import numbers
import operator
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pulse_lib.errors import ConfigError, PathError, PulseError, SchemaError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "INT64_MAX",
    "MIN_PROPENSITY",
    "check_array",
    "check_dir",
    "check_fields",
    "check_file",
    "check_integer",
    "check_integer_array",
    "check_layer_widths",
    "check_non_negative",
    "check_output_path",
    "check_positive",
    "check_probabilities",
    "check_probability",
    "check_scalar",
    "check_weights",
    "parse_date",
    "parse_dates",
]

ErrorType = type[PulseError]

#: Largest value an integer parameter or column may take: beyond it numpy wraps
#: silently.
INT64_MAX: int = int(np.iinfo(np.int64).max)

#: Smallest propensity accepted where one divides by it: the smallest *normal* double.
#: Below it (denormals) ``1 / p`` overflows to ``inf``.
MIN_PROPENSITY: float = float(np.finfo(np.float64).tiny)


def _show(value: Any) -> str:
    """``repr`` of a value with its type, cut to a readable length."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _label(row: Any) -> str:
    """A row label as a reader writes it (``11``, ``'a'``), not ``np.int64(11)``."""
    return repr(row.item() if isinstance(row, np.generic) else row)


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


# --------------------------------------------------------------------------- scalars


def check_scalar(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = True,
    error: ErrorType = ConfigError,
) -> float:
    """A real number (not a bool, not a string) in ``[low, high]``; returned as
    ``float``.

    ``low_open`` / ``high_open`` exclude the bound. With ``finite=False`` infinities
    pass (NaN never does).
    """
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise error(f"{name} must be a real number, got {_show(value)}")
    try:
        x = float(value)
    except OverflowError:
        raise error(f"{name} is too large for a float: {_show(value)}") from None
    if math.isnan(x):
        raise error(f"{name} must not be NaN, got {value!r}")
    if finite and math.isinf(x):
        raise error(f"{name} must be finite, got {x!r}")
    if low is not None and (x < low or (low_open and x == low)):
        raise error(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (x > high or (high_open and x == high)):
        raise error(
            f"{name} must be {'<' if high_open else '<='} {high}, got {value!r}"
        )
    return x


def check_positive(name: str, value: Any, *, error: ErrorType = ConfigError) -> float:
    """A finite real number ``> 0``."""
    return check_scalar(name, value, low=0.0, low_open=True, error=error)


def check_non_negative(
    name: str, value: Any, *, error: ErrorType = ConfigError
) -> float:
    """A finite real number ``>= 0``."""
    return check_scalar(name, value, low=0.0, error=error)


def check_probability(
    name: str,
    value: Any,
    *,
    strictly_positive: bool = False,
    error: ErrorType = ConfigError,
) -> float:
    """A probability in ``[0, 1]`` (``(0, 1]`` with ``strictly_positive``)."""
    return check_scalar(
        name, value, low=0.0, high=1.0, low_open=strictly_positive, error=error
    )


def check_integer(
    name: str,
    value: Any,
    *,
    low: int | None = None,
    high: int | None = None,
    error: ErrorType = ConfigError,
) -> int:
    """An integer (``int`` or a numpy integer; never a bool, a float or a string) in
    ``[low, high]`` that fits in int64; returned as ``int``.

    ``2.0`` is refused like ``2.5``: a float where an integer is meant is a typo or a
    unit mistake the caller should see (write ``200_000``, not ``2e5``).
    """
    if _is_bool(value) or isinstance(value, (float, np.floating, str, bytes)):
        raise error(f"{name} must be an integer, got {_show(value)}")
    try:
        x = operator.index(value)
    except TypeError:
        raise error(f"{name} must be an integer, got {_show(value)}") from None
    if abs(x) > INT64_MAX:
        raise error(f"{name} must fit in a 64-bit integer, got {x}")
    if low is not None and x < low:
        raise error(f"{name} must be >= {low}, got {x}")
    if high is not None and x > high:
        raise error(f"{name} must be <= {high}, got {x}")
    return int(x)


def check_layer_widths(
    name: str, value: Any, *, error: ErrorType = ConfigError
) -> tuple[int, ...]:
    """A non-empty tuple of positive integers (an MLP's hidden widths, ``(256,
    256)``)."""
    if not isinstance(value, tuple) or not value:
        raise error(
            f"{name} must be a non-empty tuple of layer widths like (64, 64), "
            f"got {_show(value)}"
        )
    return tuple(
        check_integer(f"{name}[{i}]", width, low=1, error=error)
        for i, width in enumerate(value)
    )


# --------------------------------------------------------------------------- arrays


def _check_shape(
    name: str,
    arr: np.ndarray,
    ndim: int | None,
    shape: Sequence[int | None] | None,
    allow_empty: bool,
    error: ErrorType,
) -> None:
    if shape is not None:
        ndim = len(shape)
    if ndim is not None and arr.ndim != ndim:
        raise error(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if shape is not None:
        if ndim == 1 and shape[0] is not None and arr.shape[0] != shape[0]:
            raise error(f"{name} has {arr.shape[0]} rows, expected {shape[0]}")
        if any(want is not None and got != want for got, want in zip(arr.shape, shape)):
            wanted = tuple("any" if s is None else s for s in shape)
            raise error(f"{name} must have shape {wanted}, got {arr.shape}")
    if not allow_empty and arr.size == 0:
        raise error(
            f"{name} is empty (shape {arr.shape}): at least one value is needed"
        )


def _first_bad(arr: np.ndarray, mask: np.ndarray) -> str:
    """``"row 3"`` (1-D) or ``"index (3, 1)"`` of the first True in ``mask``, and its
    value."""
    idx = tuple(int(i) for i in np.argwhere(mask)[0])
    where = f"row {idx[0]}" if len(idx) == 1 else f"index {idx}"
    count = int(mask.sum())
    more = f" ({count} such values)" if count > 1 else ""
    return f"{where} is {arr[idx].item()!r}{more}"


def _numeric(name: str, values: Any, error: ErrorType) -> np.ndarray:
    """``values`` as an array of bools, integers or floats (strings, dates, complex
    refused)."""
    if isinstance(values, (str, bytes)):
        raise error(
            f"{name} must be an array of numbers, got the string {values[:40]!r}"
        )
    if isinstance(values, Mapping) or (
        isinstance(values, Iterable)
        and not hasattr(values, "__len__")
        and not isinstance(values, np.ndarray)
    ):
        raise error(f"{name} must be an array of numbers, got {_show(values)}")
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError) as exc:  # ragged nested lists
        raise error(f"{name} must be a rectangular array of numbers: {exc}") from exc
    if arr.dtype.kind == "O":
        text = np.array(
            [isinstance(x, (str, bytes)) for x in arr.ravel()], bool
        ).reshape(arr.shape)
        if text.any():  # "1" among numbers is a schema error, not the number 1
            raise error(f"{name} must hold numbers, not text; {_first_bad(arr, text)}")
        missing = [x is None or type(x).__name__ == "NAType" for x in arr.ravel()]
        # None and pandas.NA are missing values: report them as NaN rows
        if any(missing):
            flat = arr.ravel().copy()
            flat[np.asarray(missing)] = np.nan
            arr = flat.reshape(arr.shape)
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError, OverflowError) as exc:
            raise error(f"{name} must hold numbers only: {exc}") from exc
    if arr.dtype.kind not in "biuf":
        raise error(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr


def _check_range(
    name: str, out: np.ndarray, low: float | None, high: float | None, error: ErrorType
) -> None:
    """Every value of ``out`` in ``[low, high]`` (a bound of ``None`` is not
    checked)."""
    if low is not None and (out < low).any():
        raise error(f"{name} must be >= {low}; {_first_bad(out, out < low)}")
    if high is not None and (out > high).any():
        raise error(f"{name} must be <= {high}; {_first_bad(out, out > high)}")


def check_array(
    name: str,
    values: Any,
    *,
    ndim: int | None = None,
    shape: Sequence[int | None] | None = None,
    allow_empty: bool = False,
    finite: bool = True,
    low: float | None = None,
    high: float | None = None,
    error: ErrorType = SchemaError,
) -> np.ndarray:
    """A float64 array of the given ``ndim`` or ``shape`` (``None`` for any length on an
    axis), without NaN or inf (unless ``finite=False``), with values in ``[low, high]``
    if given.

    Bools and integers are converted to float; strings, dates, complex numbers and
    objects that are not numbers are refused.
    """
    arr = _numeric(name, values, error)
    _check_shape(name, arr, ndim, shape, allow_empty, error)
    out = arr.astype(np.float64)
    nan = np.isnan(out)
    if nan.any():
        raise error(f"{name} has a non-finite value: {_first_bad(out, nan)}")
    if finite:
        inf = np.isinf(out)
        if inf.any():
            raise error(f"{name} has a non-finite value: {_first_bad(out, inf)}")
    _check_range(name, out, low, high, error)
    return out


def check_integer_array(
    name: str,
    values: Any,
    *,
    ndim: int | None = 1,
    shape: Sequence[int | None] | None = None,
    allow_empty: bool = False,
    low: int | None = None,
    high: int | None = None,
    error: ErrorType = SchemaError,
) -> np.ndarray:
    """An int64 array. Integer dtypes pass; a float array passes only if every value is
    a whole number that fits in int64 (a CSV column read as float); bools, ``3.9`` and
    ``1e20`` are refused, never truncated or wrapped.
    """
    arr = _numeric(name, values, error)
    if arr.dtype.kind == "b":
        raise error(f"{name} must hold integers, got booleans")
    _check_shape(name, arr, ndim, shape, allow_empty, error)
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            raise error(f"{name} must hold integers; {_first_bad(arr, bad)}")
        big = np.abs(arr) >= 2.0**63
        if big.any():
            raise error(f"{name} must fit in a 64-bit integer; {_first_bad(arr, big)}")
        frac = arr != np.floor(arr)
        if frac.any():
            raise error(f"{name} must hold whole numbers; {_first_bad(arr, frac)}")
    elif arr.dtype == np.uint64 and arr.size and arr.max() > INT64_MAX:
        raise error(
            f"{name} must fit in a 64-bit integer; {_first_bad(arr, arr > INT64_MAX)}"
        )
    out = arr.astype(np.int64)
    _check_range(name, out, low, high, error)
    return out


def check_probabilities(
    name: str,
    values: Any,
    *,
    ndim: int | None = 1,
    shape: Sequence[int | None] | None = None,
    strictly_positive: bool = False,
    rows_sum_to_one: bool = False,
    atol: float = 1e-6,
    allow_empty: bool = False,
    error: ErrorType = SchemaError,
) -> np.ndarray:
    """A float64 array of probabilities in ``[0, 1]``.

    ``strictly_positive`` (for propensities one divides by) requires ``p >=
    MIN_PROPENSITY``: zero and denormal values would make ``1 / p`` infinite.
    ``rows_sum_to_one`` requires every row (the last axis; the whole vector when 1-D) to
    sum to 1 within ``atol``.
    """
    arr = check_array(
        name, values, ndim=ndim, shape=shape, allow_empty=allow_empty, error=error
    )
    out_of_range = (arr < 0.0) | (arr > 1.0)
    if out_of_range.any():
        raise error(
            f"{name} must be a probability in [0, 1]; {_first_bad(arr, out_of_range)}"
        )
    if strictly_positive:
        tiny = arr < MIN_PROPENSITY
        if tiny.any():
            raise error(
                f"{name} must be in (0, 1] (a zero or denormal propensity makes the "
                "importance "
                f"weight infinite); {_first_bad(arr, tiny)}"
            )
    if rows_sum_to_one and arr.size:
        sums = arr.sum(axis=-1)
        off = np.atleast_1d(np.abs(sums - 1.0) > atol)
        if off.any():
            i = int(np.flatnonzero(off)[0])
            got = float(np.atleast_1d(sums)[i])
            where = "its values" if arr.ndim == 1 else f"row {i}"
            raise error(
                f"{name} must sum to 1 over each row; {where} sum(s) to {got!r}"
            )
    return arr


def check_weights(
    name: str, values: Any, *, allow_empty: bool = False, error: ErrorType = SchemaError
) -> np.ndarray:
    """Importance weights: a finite, non-negative 1-D float64 array."""
    arr = check_array(name, values, ndim=1, allow_empty=allow_empty, error=error)
    neg = arr < 0.0
    if neg.any():
        raise error(
            f"{name} must be non-negative importance weights; {_first_bad(arr, neg)}"
        )
    return arr


# --------------------------------------------------------------------------- paths


def _as_path(name: str, path: Any, error: ErrorType) -> Path:
    if not isinstance(path, (str, os.PathLike)) or isinstance(path, bytes):
        raise error(f"{name} must be a path (str or os.PathLike), got {_show(path)}")
    text = os.fspath(path)
    if not isinstance(text, str) or text == "":
        raise error(f"{name} must be a non-empty path, got {_show(path)}")
    if "\x00" in text:
        raise error(f"{name} contains a NUL byte: {text!r}")
    return Path(text)


def check_file(name: str, path: Any, *, error: ErrorType = ConfigError) -> Path:
    """An existing regular file. Missing: :class:`FileNotFoundError`; a directory or
    other non-file: :class:`~pulse_lib.errors.PathError`; not a path at all:
    ``error``."""
    p = _as_path(name, path, error)
    if not p.exists():
        raise FileNotFoundError(f"{name}: no such file: {p}")
    if p.is_dir():
        raise PathError(f"{name} must be a file, but {p} is a directory")
    if not p.is_file():
        raise PathError(
            f"{name} must be a regular file, but {p} is not (a device or socket?)"
        )
    return p


def check_dir(name: str, path: Any, *, error: ErrorType = ConfigError) -> Path:
    """An existing directory. Missing: :class:`FileNotFoundError`; a file:
    :class:`~pulse_lib.errors.PathError`."""
    p = _as_path(name, path, error)
    if not p.exists():
        raise FileNotFoundError(f"{name}: no such directory: {p}")
    if not p.is_dir():
        raise PathError(f"{name} must be a directory, but {p} is a file")
    return p


def check_output_path(name: str, path: Any, *, error: ErrorType = ConfigError) -> Path:
    """A path a file can be written to: not an existing directory, and no parent of it
    is an existing file (parents that do not exist yet are fine; the writer creates
    them)."""
    p = _as_path(name, path, error)
    if p.is_dir():
        raise PathError(f"{name} must name a file, but {p} is a directory")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise PathError(
                    f"{name}: cannot write {p}: its parent {parent} is a file"
                )
            break
    return p


# --------------------------------------------------------------------------- dates


def _check_format(name: str, fmt: Any, error: ErrorType) -> str:
    if not isinstance(fmt, str) or "%" not in fmt:
        raise error(
            f"{name}: the date format must be a strptime string like "
            f"'%Y-%m-%d', got {fmt!r}"
        )
    return fmt


def parse_date(
    name: str, value: Any, fmt: str, *, error: ErrorType = ConfigError
) -> _dt.date:
    """A date from a string in the explicit ``fmt`` (``"%Y-%m-%d"``, ``"%d/%m/%Y"``), so
    ``01/07/2016`` means what the caller says it means. ``datetime.date`` objects pass
    as they are; numbers are refused (an integer is not a date, whatever epoch it might
    count from).
    """
    _check_format(name, fmt, error)
    if isinstance(value, _dt.datetime):
        return value.date()
    if isinstance(value, _dt.date):
        return value
    if not isinstance(value, str):
        raise error(
            f"{name} must be a date string in format {fmt!r}, got {_show(value)}"
        )
    try:
        return _dt.datetime.strptime(value.strip(), fmt).date()
    except ValueError as exc:
        raise error(
            f"{name}: {value!r} is not a date in format {fmt!r} ({exc})"
        ) from None


def _missing(item: Any) -> bool:
    """None, NaN, NaT or pandas.NA (and not a list or an array, whatever it holds)."""
    import pandas as pd

    try:
        return item is None or bool(pd.isna(item))
    except (TypeError, ValueError):
        return False


def parse_dates(
    name: str, values: Any, fmt: str, *, error: ErrorType = SchemaError
) -> pd.Series:
    """A column of date strings parsed with the explicit ``fmt`` into ``datetime64``.

    Every entry must match ``fmt`` exactly; missing entries, numbers and strings in
    another format raise ``error`` naming the first bad row. Already-parsed
    ``datetime64`` columns pass unchanged (a copy), and so do ``datetime.date`` /
    ``datetime`` objects among the strings (a date object is not ambiguous). Returns a
    ``pandas.Series`` (keeping the index of a Series input).
    """
    import pandas as pd

    _check_format(name, fmt, error)
    if isinstance(values, (str, bytes, Mapping)):
        raise error(f"{name} must be a column of date strings, got {_show(values)}")
    series = (
        values.copy()
        if isinstance(values, pd.Series)
        else pd.Series(list(values), dtype=object)
    )
    if series.empty:
        return pd.Series(series, dtype="datetime64[ns]")
    if pd.api.types.is_datetime64_any_dtype(series):
        if series.isna().any():
            row = series.index[series.isna().to_numpy()][0]
            raise error(f"{name} has a missing date at row {_label(row)}")
        return series
    is_date = np.zeros(len(series), bool)
    for i, (row, item) in enumerate(series.items()):
        if isinstance(item, _dt.date) and not _missing(item):
            is_date[i] = True
        elif not isinstance(item, str):
            what = "missing" if _missing(item) else _show(item)
            raise error(
                f"{name} must hold date strings in format {fmt!r}; row "
                f"{_label(row)} is {what}"
            )
    texts = series[~is_date]
    try:
        parsed = pd.to_datetime(texts, format=fmt, exact=True, errors="raise")
    except (ValueError, TypeError):
        parsed = pd.to_datetime(texts, format=fmt, exact=True, errors="coerce")
    # pandas reads "" as a missing date even with errors="raise"
    if parsed.isna().any():
        row = texts.index[parsed.isna().to_numpy()][0]
        raise error(
            f"{name}: row {_label(row)} is {texts[row]!r}, not a date in format {fmt!r}"
        ) from None
    if not is_date.any():
        return parsed
    out = pd.Series(pd.NaT, index=series.index, dtype="datetime64[ns]")
    out[~is_date] = parsed.to_numpy()
    out[is_date] = pd.to_datetime(
        [pd.Timestamp(d).tz_localize(None) for d in series[is_date]]
    ).to_numpy()
    return out


# --------------------------------------------------------------------------- dataclass
# configs


def check_fields(
    obj: Any,
    *,
    positive: Iterable[str] = (),
    non_negative: Iterable[str] = (),
    finite: Iterable[str] = (),
    probability: Iterable[str] = (),
    integer: Iterable[str] = (),
    ranges: Mapping[
        str, tuple[float | None, float | None] | tuple[float | None, float | None, str]
    ]
    | None = None,
    choices: Mapping[str, Iterable[Any]] | None = None,
    boolean: Iterable[str] = (),
    optional: Iterable[str] = (),
    error: ErrorType = ConfigError,
) -> None:
    """Check a config's fields in one line, from its ``__post_init__``.

    Each argument lists field names; a field may appear in several (``integer`` and
    ``positive`` for a count). ``ranges`` maps a field to ``(low, high)`` (closed) or
    ``(low, high, "(]")`` with the bracket pair saying which ends are open; ``None`` for
    an unbounded end. ``choices`` maps a field to its allowed values. Errors name the
    class and field (``PPOConfig.vf_coef``) and the value. ``boolean`` fields must be
    ``True`` or ``False`` (not ``0``/``1`` or a string); ``optional`` fields may be
    ``None``, which skips every other check on them.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Cfg:
    ...     lr: float = 1e-3  # learning rate
    ...     n_envs: int = 4  # parallel environments
    ...
    ...     def __post_init__(self):
    ...         check_fields(self, positive=("lr", "n_envs"), integer=("n_envs",))
    >>> Cfg(n_envs=2.5)
    Traceback (most recent call last):
        ...
    pulse_lib.errors.ConfigError: Cfg.n_envs must be an integer, got 2.5 (float)
    """
    cls = type(obj).__name__
    may_be_none = set(optional)

    def get(field: str) -> tuple[str, Any]:
        if not hasattr(obj, field):
            raise AttributeError(f"check_fields: {cls} has no field {field!r}")
        return f"{cls}.{field}", getattr(obj, field)

    def given(fields: Iterable[str]) -> list[str]:
        return [f for f in fields if not (f in may_be_none and get(f)[1] is None)]

    integer, finite, positive, non_negative, probability, boolean = (
        given(f)
        for f in (integer, finite, positive, non_negative, probability, boolean)
    )
    ranges = {f: spec for f, spec in (ranges or {}).items() if f in given([f])}
    for field in boolean:
        label, value = get(field)
        if not _is_bool(value):
            raise error(f"{label} must be True or False, got {_show(value)}")
    for field in integer:
        check_integer(*get(field), error=error)
    for field in finite:
        check_scalar(*get(field), error=error)
    for field in positive:
        check_positive(*get(field), error=error)
    for field in non_negative:
        check_non_negative(*get(field), error=error)
    for field in probability:
        check_probability(*get(field), error=error)
    for field, spec in ranges.items():
        brackets = spec[2] if len(spec) == 3 else "[]"
        if brackets not in {"[]", "(]", "[)", "()"}:
            raise ValueError(f"check_fields: bad brackets {brackets!r} for {field!r}")
        check_scalar(
            *get(field),
            low=spec[0],
            high=spec[1],
            low_open=brackets[0] == "(",
            high_open=brackets[1] == ")",
            error=error,
        )
    for field, allowed in (choices or {}).items():
        label, value = get(field)
        allowed = tuple(allowed)
        if not any(_same(value, option) for option in allowed):
            raise error(f"{label} must be one of {list(allowed)}, got {value!r}")


def _same(value: Any, option: Any) -> bool:
    """``value == option`` without ``True == 1``, and False when comparing fails."""
    if _is_bool(value) != _is_bool(option):
        return False
    try:
        return bool(value == option)
    except (TypeError, ValueError):
        return False
