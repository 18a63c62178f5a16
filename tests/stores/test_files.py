"""The durable-file primitives under the store: atomic writes, keys, debris, the lock."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from bot.core.errors import StoreLockTimeoutError
from stores._files import (
    TEMP_SUFFIX,
    StateLock,
    append_durably,
    atomic_write,
    read_versioned,
    remove_debris,
    stat_key,
)


def test_atomic_write_key_matches_disk_and_moves_forward(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    first = atomic_write(path, b"aaaa")
    assert first == stat_key(path)
    # A coarse clock (or a key from a file written "in the future") must not make two
    # versions share a key: the new mtime is forced past the replaced one.
    future = (first[0], first[1], first[2] + 10**10)
    second = atomic_write(path, b"bbbb", after=future)
    assert second == stat_key(path)
    assert second[2] == future[2] + 1
    third = atomic_write(path, b"cccc", after=second)
    assert third[2] > second[2]
    assert third == stat_key(path)
    assert read_versioned(path) == (third, b"cccc")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_private_modes_even_with_umask_zero(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        atomic_write(tmp_path / "f.json", b"{}")
        append_durably(tmp_path / "a.jsonl", b"{}\n")
    finally:
        os.umask(old)
    for name in ("f.json", "a.jsonl"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600


def test_read_versioned_missing_file(tmp_path: Path) -> None:
    assert read_versioned(tmp_path / "nope") is None
    assert stat_key(tmp_path / "nope") is None
    assert stat_key(str(tmp_path / "nope")) is None


def test_remove_debris_only_takes_temp_files(tmp_path: Path) -> None:
    (tmp_path / f".x.json.abcd{TEMP_SUFFIX}").write_text("half")
    (tmp_path / "x.json").write_text("{}")
    assert remove_debris(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
    assert remove_debris(tmp_path / "missing") == 0


def hold_in_thread(lock: StateLock, seconds: float) -> tuple[threading.Thread, threading.Event]:
    held = threading.Event()

    def run() -> None:
        with lock.hold():
            held.set()
            time.sleep(seconds)

    thread = threading.Thread(target=run)
    thread.start()
    assert held.wait(5)
    return thread, held


def test_waiter_gets_the_lock_as_soon_as_it_is_released(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    thread, _ = hold_in_thread(StateLock(path), 0.3)
    began = time.perf_counter()
    with StateLock(path, timeout=5).hold():
        waited = time.perf_counter() - began
    thread.join()
    assert 0.2 < waited < 1.0


def test_abandoned_wait_does_not_keep_the_lock(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    thread, _ = hold_in_thread(StateLock(path), 0.4)
    with pytest.raises(StoreLockTimeoutError) as caught, StateLock(path, timeout=0.1).hold():
        pytest.fail("took a held lock")
    assert caught.value.path == path
    thread.join()
    # The timed-out waiter's helper gets the lock when the holder lets go, and must drop it.
    began = time.perf_counter()
    with StateLock(path, timeout=2).hold():
        assert time.perf_counter() - began < 1.0


def test_lock_file_is_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    path.write_text("")
    path.chmod(0o666)
    with StateLock(path).hold():
        pass
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


class Interrupt(BaseException):
    """Stands for Ctrl-C arriving while waiting for the lock."""


def test_interrupted_wait_does_not_keep_the_lock(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / ".lock"
    thread, _ = hold_in_thread(StateLock(path), 0.3)

    real_wait = threading.Event.wait

    def interrupted(self: threading.Event, timeout: float | None = None) -> bool:
        if timeout is None:  # Thread.start() waits for the thread without a timeout
            return real_wait(self, timeout)
        raise Interrupt

    with monkeypatch.context() as patch:
        patch.setattr(threading.Event, "wait", interrupted)
        with pytest.raises(Interrupt), StateLock(path, timeout=5).hold():
            pytest.fail("took a held lock")
    thread.join()
    began = time.perf_counter()
    with StateLock(path, timeout=2).hold():
        assert time.perf_counter() - began < 1.0
