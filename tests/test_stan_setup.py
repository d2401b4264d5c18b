"""CmdStan setup routes (no network, no compiler: the routes are replaced by fakes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pulse_lib import stan
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


# --------------------------------------------------------------------------- the install lock


def _slow_fake_build(staging: Path, jobs: int) -> None:
    """Stands in for the 5-minute CmdStan build: fills ``staging`` over ~0.6 s and logs its
    start and end (with the process id) next to the cache, so overlaps can be detected."""
    import os
    import time

    log = staging.parent / "builds.log"
    with open(log, "a") as handle:
        handle.write(f"start {os.getpid()} {time.monotonic():.6f}\n")
    staging.mkdir(parents=True)
    (staging / "owner").write_text(str(os.getpid()))
    time.sleep(0.6)  # a second build writing into the same .part would overwrite 'owner'
    assert (staging / "owner").read_text() == str(os.getpid()), "another build clobbered .part"
    _fake_cmdstan_into(staging)
    with open(log, "a") as handle:
        handle.write(f"end {os.getpid()} {time.monotonic():.6f}\n")


def _fake_cmdstan_into(folder: Path) -> None:
    (folder / "bin").mkdir(parents=True, exist_ok=True)
    (folder / "bin" / "stanc").write_text("")
    (folder / "makefile").write_text("")
    (folder / "stan" / "lib" / "stan_math" / "lib" / "tbb").mkdir(parents=True, exist_ok=True)


def _build_in_child(cache: str, results: object) -> None:
    import os

    os.environ["CMDSTAN_CACHE"] = cache
    stan._build_into = _slow_fake_build  # the child's own module: no real build, no network
    try:
        results.put(("ok", str(stan.build_offline(jobs=1))))  # type: ignore[attr-defined]
    except BaseException as exc:  # noqa: BLE001  (report, do not hang the parent)
        results.put(("error", f"{type(exc).__name__}: {exc}"))  # type: ignore[attr-defined]


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork (POSIX)")
def test_two_concurrent_offline_builds_take_turns_and_the_second_reuses_the_first(tmp_path):
    import multiprocessing

    if stan.platform.system() != "Linux" or stan.platform.machine() != "x86_64":
        pytest.skip("the offline build route is Linux x86_64 only")
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_build_in_child, args=(str(tmp_path), results)) for _ in range(2)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    target = tmp_path / f"cmdstan-{stan.OFFLINE_VERSION}"
    assert outcomes == [("ok", str(target))] * 2, outcomes
    log = (tmp_path / "builds.log").read_text().split()
    assert log[0::3] == ["start", "end"], f"exactly one build ran, start to end: {log}"
    assert stan._complete(target) and not (tmp_path / f"cmdstan-{stan.OFFLINE_VERSION}.part").exists()
    assert (tmp_path / f"cmdstan-{stan.OFFLINE_VERSION}.lock").is_file()


def test_the_install_lock_blocks_a_second_holder_until_released(tmp_path, capsys):
    import threading
    import time

    target = tmp_path / "cmdstan-x"
    order: list[str] = []

    def second() -> None:
        with stan.install_lock(target):
            order.append("second")

    with stan.install_lock(target) as lock_file:
        worker = threading.Thread(target=second)
        worker.start()
        time.sleep(0.3)
        order.append("first released")
    worker.join(timeout=10)
    assert order == ["first released", "second"]
    assert lock_file == tmp_path / "cmdstan-x.lock"
    assert "waiting" in capsys.readouterr().out


def test_a_killed_builds_part_folder_is_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("CMDSTAN_CACHE", str(tmp_path))
    stale = tmp_path / f"cmdstan-{stan.OFFLINE_VERSION}.part"
    stale.mkdir()
    (stale / "half-built").write_text("x")
    monkeypatch.setattr(stan, "_build_into", lambda staging, jobs: _fake_cmdstan_into(staging))
    if stan.platform.system() != "Linux" or stan.platform.machine() != "x86_64":
        pytest.skip("the offline build route is Linux x86_64 only")
    target = stan.build_offline(jobs=1)
    assert stan._complete(target) and not (target / "half-built").exists()
