"""benchmarks/compat.py: the install plan of each package set, and a --quick smoke run (this
interpreter, no new venv, a few unit tests) that writes the result JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import compat


def test_install_plans_are_non_editable_and_follow_the_set(tmp_path):
    book = tmp_path / "book"
    for which in compat.SETS:
        plan = compat.install_commands("py", book, which)
        flat = [" ".join(cmd) for cmd in plan]
        assert all("-e" not in cmd for cmd in plan), "the book must be installed non-editable"
        assert any(cmd.endswith(f"{book}[book,test,serve,scale]") for cmd in flat)
        assert flat[-1].endswith("--no-deps --ignore-requires-python obp==0.5.7")
        assert flat[-2].endswith(f"--no-deps --force-reinstall {book}")  # a reused venv gets this copy
    newest = compat.install_commands("py", book, "newest")[1]
    assert "--upgrade-strategy" in newest and "eager" in newest and "-r" not in newest
    assert str(book / "requirements" / "ci.txt") in " ".join(compat.install_commands("py", book, "pinned")[1])
    lowest = compat.install_commands("py", book, "lowest")[1]
    assert str(book / "requirements" / "lowest.txt") in lowest
    assert (ROOT / "requirements" / "lowest.txt").is_file()


def test_find_python_returns_a_working_interpreter_or_says_what_to_pass():
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    found = compat.find_python(version)
    out = subprocess.run([found, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True, check=False)
    assert out.stdout.strip() == str(tuple(sys.version_info[:2]))
    with pytest.raises(SystemExit, match="--python"):
        compat.find_python("python2.1")


def test_quick_mode_writes_its_json(tmp_path):
    out = tmp_path / "compat.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compat.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    payload = json.loads(out.read_text())
    assert {"benchmark", "machine", "settings", "source", "environment", "results"} <= set(payload)
    assert payload["settings"]["quick"] is True
    assert payload["environment"]["key_packages"]["arviz"] and payload["environment"]["key_packages"]["pymc"]
    tests = payload["results"]["unit_tests"]
    assert tests["status"] == "ok" and tests["passed"] >= 3 and tests["failed"] == 0
    assert payload["results"]["outcome"] == "pass" and payload["results"]["chapters"] == {}
