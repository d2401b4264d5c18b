"""CmdStan setup routes (no network, no compiler: the routes are replaced by fakes)."""

from __future__ import annotations

from pathlib import Path

import pytest

import pulse_lib.stan as stan
from pulse_lib.errors import SetupError


def _fake_cmdstan(folder: Path) -> Path:
    (folder / "bin").mkdir(parents=True)
    (folder / "bin" / "stanc").write_text("")
    (folder / "makefile").write_text("")
    (folder / "stan" / "lib" / "stan_math" / "lib" / "tbb").mkdir(parents=True)
    return folder


def test_find_existing_uses_the_cache_and_skips_half_builds(tmp_path, monkeypatch):
    import cmdstanpy

    monkeypatch.setenv("CMDSTAN_CACHE", str(tmp_path))
    monkeypatch.setattr(cmdstanpy, "cmdstan_path", lambda: (_ for _ in ()).throw(ValueError("none")))
    assert stan.find_existing() is None
    _fake_cmdstan(tmp_path / "cmdstan-9.9.9.part")
    assert stan.find_existing() is None
    done = _fake_cmdstan(tmp_path / "cmdstan-2.27.0")
    assert stan.find_existing() == done


def test_install_falls_through_routes_and_explains_the_next_step(monkeypatch):
    calls = []
    monkeypatch.setattr(stan, "find_existing", lambda: calls.append("existing"))
    monkeypatch.setattr(stan, "install_online", lambda: calls.append("online"))

    def offline(jobs=None):
        calls.append("offline")
        raise SetupError("pip could not reach PyPI")

    monkeypatch.setattr(stan, "build_offline", offline)
    with pytest.raises(SetupError, match=r"(?s)every route to CmdStan failed.*PyPI.*Next step"):
        stan.install()
    assert calls == ["existing", "online", "offline"]


def test_install_online_is_skipped_without_network(monkeypatch, capsys):
    monkeypatch.setattr(stan, "_online", lambda *a, **k: False)
    assert stan.install_online() is None
    assert "not reachable" in capsys.readouterr().out


def test_model_file_names_known_programs():
    with pytest.raises(SetupError, match="no Stan program named 'nope'"):
        stan.model_file("nope")


def test_cli_path_reports_missing(monkeypatch, capsys):
    from pulse_lib.stan.__main__ import main

    monkeypatch.setattr("pulse_lib.stan.__main__.find_existing", lambda: None)
    assert main(["path"]) == 1
    assert "python -m pulse_lib.stan install" in capsys.readouterr().out
