"""Shared bits of the PulseRL benchmarks: one torch thread, plus the common machine/results helpers."""

from __future__ import annotations

from machine import RESULTS_DIR, machine_info, write_results  # noqa: F401  (re-exported for `common.*`)


def setup_one_thread() -> None:
    """One torch thread, as in CI."""
    import torch

    torch.set_num_threads(1)
