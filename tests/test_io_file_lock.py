"""pulse_lib.io.file_lock: one holder at a time across processes; a killed holder frees it."""

from __future__ import annotations


def _hold_lock(path: str, started, release) -> None:  # in another process
    from pulse_lib.io import file_lock

    with file_lock(path):
        started.set()
        release.wait(30)


def test_file_lock_excludes_another_process_until_released(tmp_path):
    import multiprocessing
    import threading

    from pulse_lib.io import file_lock

    lock = tmp_path / "sub" / "work.lock"
    ctx = multiprocessing.get_context("spawn")
    started, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(lock), started, release))
    holder.start()
    try:
        assert started.wait(60), "the other process never took the lock"
        messages: list[str] = []
        acquired = threading.Event()

        def wait_for_lock() -> None:
            with file_lock(lock, on_wait=messages.append) as held:
                assert held == lock
                acquired.set()

        waiter = threading.Thread(target=wait_for_lock)
        waiter.start()
        assert not acquired.wait(0.5), "the lock was taken while another process held it"
        assert messages and str(lock) in messages[0] and "waiting" in messages[0]
        release.set()
        assert acquired.wait(30), "the lock was not taken after the holder released it"
        waiter.join(10)
    finally:
        release.set()
        holder.join(30)
    assert lock.is_file()  # left in place: removing it would let two holders lock two files


def test_file_lock_is_released_when_its_holder_is_killed(tmp_path):
    import multiprocessing

    from pulse_lib.io import file_lock

    lock = tmp_path / "work.lock"
    ctx = multiprocessing.get_context("spawn")
    started, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(lock), started, release))
    holder.start()
    assert started.wait(60)
    holder.kill()
    holder.join(30)
    waited: list[str] = []
    with file_lock(lock, on_wait=waited.append):
        pass
    assert waited == []  # free at once: the dead holder's lock went with it
