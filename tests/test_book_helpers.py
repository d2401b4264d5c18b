"""Notebook helpers, self-checking exercises and atomic writes."""

from __future__ import annotations

import numpy as np
import pytest

from pulse_lib import book, exercises, io
from pulse_lib.errors import ConfigError

PROFILES = {"ci": {"n": 1}, "full": {"n": 100}}


def test_resolve_profile(monkeypatch):
    assert book.resolve_profile(PROFILES, "full") == {"n": 100, "profile": "full"}
    monkeypatch.setattr(book, "gpu_available", lambda: False)
    monkeypatch.setattr(book, "on_colab", lambda: False)
    assert book.resolve_profile(PROFILES, "auto")["profile"] == "ci"
    monkeypatch.setattr(book, "on_colab", lambda: True)  # a Colab CPU runtime stays small
    assert book.resolve_profile(PROFILES, "auto")["profile"] == "ci"
    monkeypatch.setattr(book, "gpu_available", lambda: True)
    assert book.resolve_profile(PROFILES, "auto")["profile"] == "full"
    with pytest.raises(ConfigError, match="unknown profile 'fast'"):
        book.resolve_profile(PROFILES, "fast")
    with pytest.raises(ConfigError, match=r"differing: \['m'\]"):
        book.resolve_profile({"ci": {"n": 1}, "full": {"n": 2, "m": 3}}, "ci")
    with pytest.raises(ConfigError, match=r"lacks the profile\(s\) \['full'\]"):
        book.resolve_profile({"ci": {}}, "ci")


def test_seed_everything_repeats_and_rejects_bad_seeds():
    import torch

    first = book.seed_everything(3).random(), torch.rand(2), np.random.rand()
    second = book.seed_everything(3).random(), torch.rand(2), np.random.rand()
    assert first[0] == second[0] and torch.equal(first[1], second[1]) and first[2] == second[2]
    assert book.seed_everything(4).random() != first[0]
    with pytest.raises(ConfigError, match="non-negative integer"):
        book.seed_everything(-1)


def test_setup_torch_pins_threads(monkeypatch):
    import torch

    monkeypatch.setenv("PULSE_TORCH_THREADS", "1")
    assert book.setup_torch() in {"cpu", "cuda"}
    assert torch.get_num_threads() == 1


def test_version_text_names_packages_and_device():
    text = book.version_text()
    assert "numpy" in text and "device" in text and "Python" in text


def test_repo_root_and_error(tmp_path, monkeypatch, repo_root):
    assert book.repo_root() == repo_root
    monkeypatch.delenv("PULSE_BOOK_ROOT")
    assert book.repo_root(repo_root / "chapters") == repo_root


def test_check_reports_without_failing_and_strict_raises(capsys):
    test = exercises.close_to([1.0, 2.0])
    assert exercises.check("e", None, test) is False
    assert "not attempted" in capsys.readouterr().out
    assert exercises.check("e", [1.0, 2.0], test) is True
    assert exercises.check("e", [1.0, 3.0], test) is False
    assert "expected about" in capsys.readouterr().out
    assert exercises.check("e", [1.0], test) is False
    assert "expected shape" in capsys.readouterr().out
    assert exercises.check("e", "text", test) is False  # a test that raises is reported, not crashed
    with pytest.raises(exercises.ExerciseFailed, match="expected about"):
        exercises.check("e", np.array([0.0, 0.0]), test, strict=True)
    with pytest.raises(exercises.ExerciseFailed, match="returned nothing"):
        exercises.check("e", None, test, strict=True)


def test_atomic_write_keeps_old_content_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with io.atomic_write(target, "w") as handle:
        handle.write("first")
    with pytest.raises(RuntimeError), io.atomic_write(target, "w") as handle:
        handle.write("half")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with pytest.raises(RuntimeError), io.atomic_path(tmp_path / "new.bin") as tmp:
        tmp.write_bytes(b"x")
        raise RuntimeError
    assert not (tmp_path / "new.bin").exists() and [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with pytest.raises(ValueError, match="supports modes"), io.atomic_write(target, "a"):
        pass


def test_markdown_table_formats_floats_only_when_asked():
    import pandas as pd

    frame = pd.DataFrame({"name": ["a", "b"], "value": [0.123456, 2.0], "n": [1, 2]})
    assert book.markdown_table(frame).data == (
        "| name | value | n |\n|---|---|---|\n| a | 0.123456 | 1 |\n| b | 2.0 | 2 |")
    assert book.markdown_table(frame, ".3g").data.splitlines()[2] == "| a | 0.123 | 1 |"


def test_mean_ci_is_student_t_and_refuses_nan():
    from scipy import stats

    mean, half = book.mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert half == pytest.approx(stats.t.ppf(0.975, 2) * 1.0 / np.sqrt(3))
    assert np.isnan(book.mean_ci([5.0])[1])
    assert book.format_ci([5.0]) == "5.000 (one run)"
    assert book.format_ci([1.0, 3.0], digits=1).startswith("2.0 ± ")
    with pytest.raises(ConfigError, match="finite"):
        book.mean_ci([1.0, float("nan")])
    with pytest.raises(ConfigError, match="no values"):
        book.mean_ci([])
    with pytest.raises(ConfigError, match="level"):
        book.mean_ci([1.0, 2.0], level=95)
    # huge values: rescaled, so the mean and spread do not overflow
    assert book.mean_ci([1e308, 1e308]) == (1e308, 0.0)
    with pytest.raises(ConfigError, match="too large"):  # the half-width itself overflows
        book.mean_ci([1e308, -1e308])


def test_load_benchmark(tmp_path, monkeypatch, capsys):
    from pulse_lib.errors import DataFormatError

    monkeypatch.setenv("PULSE_BOOK_ROOT", str(tmp_path))
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    assert book.load_benchmark("nothing") is None
    assert "has not been recorded" in capsys.readouterr().out
    (results / "bad.json").write_text("{not json")
    with pytest.raises(DataFormatError, match="bad.json"):
        book.load_benchmark("bad")
    (results / "anon.json").write_text('{"results": {}}')
    with pytest.raises(DataFormatError, match="machine"):
        book.load_benchmark("anon")
    (results / "ok.json").write_text('{"machine": {"date": "2026-12-01", "cores": 2}}')
    data = book.load_benchmark("ok")
    assert data is not None and "2026-12-01" in book.benchmark_provenance(data, "ok")
