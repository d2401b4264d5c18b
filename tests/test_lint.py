"""`ruff check` finds nothing in the library, benchmarks and tests.

ruff's default rules change between versions, so the check runs only with the version
pinned in requirements/ci.txt (skipped otherwise, saying which).
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest


def test_ruff_check_is_clean(repo_root):
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    pins = (repo_root / "requirements" / "ci.txt").read_text()
    pinned = re.search(r"^ruff==(\S+)", pins, re.MULTILINE)
    installed = subprocess.run(
        [ruff, "--version"], capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    if pinned is None or installed != pinned.group(1):
        pytest.skip(f"ruff {installed} is not the pinned version ({pinned and pinned[1]})")
    proc = subprocess.run(
        [ruff, "check", "--output-format", "concise", "pulse_lib", "benchmarks", "tests"],
        cwd=repo_root, capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]
