"""Shared fixtures. Tests run with one torch thread and a fixed hash seed (see .ci/run)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("PULSE_BOOK_ROOT", str(ROOT))
os.environ.setdefault("PULSE_TORCH_THREADS", "1")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def shipped_funnel():
    from pulse_lib import funnel

    return funnel.load_shipped_funnel()
