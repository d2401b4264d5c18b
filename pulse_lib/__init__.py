"""pulse_lib: the small shared library behind *Reinforcement Learning for Marketing Systems*.

Modules (imported on demand so a chapter pays only for what it uses):

- :mod:`pulse_lib.book`      notebook helpers: profiles, seeds, device, version stamp
- :mod:`pulse_lib.funnel`    the daily channel funnel: schema, loader, generator, reward
- :mod:`pulse_lib.stan`      CmdStan setup (``python -m pulse_lib.stan install``)
- :mod:`pulse_lib.runner`    executes chapters with papermill (``python -m pulse_lib.runner``)
- :mod:`pulse_lib.exercises` self-checking exercises
- :mod:`pulse_lib.io`        atomic file writes
- :mod:`pulse_lib.errors`    the exception types raised on bad input
"""

from __future__ import annotations

__version__ = "0.1.0"
