"""Exception types raised by :mod:`pulse_lib` on bad input.

Every error message names what is wrong (the column, the row, the shape, the value) so a
reader can fix the input; the library never repairs input silently.
"""

from __future__ import annotations


class PulseError(Exception):
    """Base class of every error :mod:`pulse_lib` raises on purpose."""


class SchemaError(PulseError, ValueError):
    """A table does not follow the schema it claims (missing column, wrong type, bad
    value)."""


class DataFormatError(PulseError, ValueError):
    """A file is corrupt, truncated, or in an encoding the loader cannot decode."""


class ConfigError(PulseError, ValueError):
    """An unknown profile, chapter, λ, or other setting outside what is supported."""


class SetupError(PulseError, RuntimeError):
    """A tool the book needs (CmdStan, Chromium) could not be found or installed."""


class PathError(PulseError, OSError):
    """A path exists but is the wrong kind: a directory where a file is expected, or the
    reverse.

    A path that does not exist raises the standard :class:`FileNotFoundError` instead.
    """
