"""pulse_lib: the small shared library behind *Reinforcement Learning for Marketing
Systems*.

Modules (imported on demand so a chapter pays only for what it uses):

Foundation

- :mod:`pulse_lib.book`      notebook helpers: profiles, seeds, device, version stamp
- :mod:`pulse_lib.runner`    executes chapters with papermill (``python -m
  pulse_lib.runner``)
- :mod:`pulse_lib.stan`      CmdStan setup (``python -m pulse_lib.stan install``) and
  Stan programs
- :mod:`pulse_lib.exercises` self-checking exercises
- :mod:`pulse_lib.course`    student versions and the grader (``python -m
  pulse_lib.course``)
- :mod:`pulse_lib.repository` the repository URL from one place (``python -m
  pulse_lib.repository``)
- :mod:`pulse_lib.io`        atomic file writes
- :mod:`pulse_lib.validation` the validators every config and entry point uses on its
  input
- :mod:`pulse_lib.errors`    the exception types raised on bad input

Parts of the book

- :mod:`pulse_lib.funnel`        the daily channel funnel: schema, loader, generator,
  reward (ch. 1)
- :mod:`pulse_lib.channel_model` channel response models in Stan and PyMC, posterior
  response (Part I)
- :mod:`pulse_lib.budget_env`    monthly budget allocation environments, gymnasium and
  batched (Part II)
- :mod:`pulse_lib.ppo`           PPO in one module (Part II)
- :mod:`pulse_lib.pulserl`       PulseRL data, surrogate, agents and evaluation (Part
  III)
- :mod:`pulse_lib.ope`           off-policy estimators shared by Parts III-V
- :mod:`pulse_lib.coupons`       coupon simulator, λ-generalized R-BCQ and REME (Part
  IV)
- :mod:`pulse_lib.nba`           journey simulator, hybrid bandits, confidence bounds
  (Part V)
"""

from __future__ import annotations

__version__ = "0.1.0"
