"""The package builds without a deprecation warning from its build backend, and its metadata
says what pyproject.toml says (SPDX license, license file, Python range, no ArviZ cap).

Readers install the book with `pip install <clone>`, which builds it with the newest setuptools
`build-system` allows: a deprecation today is a broken first cell on the day it expires.
Each build takes ~10-30 s (a copy of the package in a temporary directory, so nothing is written
into the checkout)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: What a build backend prints when a configuration it accepts today will stop working.
WARNING = re.compile(r"deprecat|SetuptoolsWarning|will no longer be supported", re.IGNORECASE)


def _copy_package(target: Path, pyproject: str | None = None) -> Path:
    target.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, target / name)
    shutil.copytree(ROOT / "pulse_lib", target / "pulse_lib",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.hpp", "*.o"))
    if pyproject is not None:
        (target / "pyproject.toml").write_text(pyproject)
    return target


def _build_wheel(source: Path, out: Path, isolation: bool = True) -> tuple[Path, str]:
    """``pip wheel`` the source; returns the wheel and everything pip and the backend printed."""
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(out), str(source)]
    if not isolation:
        cmd.insert(4, "--no-build-isolation")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    wheels = sorted(out.glob("pulse_lib-*.whl"))
    assert len(wheels) == 1, log[-3000:]
    return wheels[0], log


def _backend_warnings(log: str) -> list[str]:
    # pip's own notes about index locations are not the build backend's
    return [ln.strip() for ln in log.splitlines() if WARNING.search(ln) and "Location '" not in ln]


def test_pyproject_declares_an_spdx_license_and_a_modern_build_backend():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "MIT"
    assert meta["project"]["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    requires = meta["build-system"]["requires"]
    assert any(re.fullmatch(r"setuptools>=(\d+)", r) and int(r.split(">=")[1]) >= 77 for r in requires), requires
    deps = meta["project"]["dependencies"]
    arviz = [d for d in deps if d.startswith("arviz")]
    assert arviz and "<" not in arviz[0], arviz  # ArviZ 1.x is supported through bayes_compat


def test_wheel_builds_without_backend_deprecations(tmp_path):
    source = _copy_package(tmp_path / "src")
    wheel, log = _build_wheel(source, tmp_path / "dist")
    assert _backend_warnings(log) == []
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in metadata
    assert "License-File: LICENSE" in metadata
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "Requires-Python: >=3.11" in metadata
    assert "pulse_lib/bayes_compat.py" in names
    assert any(n.startswith("pulse_lib/stan/models/") and n.endswith(".stan") for n in names)
    assert re.search(r"^Requires-Dist: arviz>=[\d.]+$", metadata, re.MULTILINE), "arviz must not be capped"


def test_the_warning_check_catches_the_old_license_table(tmp_path):
    """Negative control: the pyproject this issue replaced does make setuptools warn."""
    pytest.importorskip("setuptools", minversion="77")  # built without isolation, with this one
    old = (ROOT / "pyproject.toml").read_text()
    old = re.sub(r'^license = "MIT"\nlicense-files = \["LICENSE"\]\n', 'license = { text = "MIT" }\n', old,
                 flags=re.MULTILINE)
    assert 'license = { text = "MIT" }' in old
    source = _copy_package(tmp_path / "src", pyproject=old)
    _, log = _build_wheel(source, tmp_path / "dist", isolation=False)
    found = _backend_warnings(log)
    assert any("license" in ln.lower() for ln in found), log[-3000:]
