"""The state lock: a holder that takes too long gives a clear timeout naming the lock file."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bot.core.errors import StoreLockTimeoutError
from stores.jsonfile import JsonFileStore
from tests.stores.helpers import expect_line, writer_process


def test_other_process_holding_the_lock_times_out(state_dir: Path) -> None:
    JsonFileStore(state_dir)
    with writer_process("hold", state_dir, 30) as holder:
        expect_line(holder, "LOCKED")
        began = time.perf_counter()
        with pytest.raises(StoreLockTimeoutError) as caught:
            JsonFileStore(state_dir, lock_timeout=0.3)  # opening takes the lock too
        waited = time.perf_counter() - began
        message = str(caught.value)
        assert str(state_dir / ".lock") in message
        assert "\n" not in message
        assert caught.value.path == state_dir / ".lock"
        assert 0.3 <= waited < 2.0
    # The holder is gone (killed): the kernel dropped its flock, the next writer goes at once.
    began = time.perf_counter()
    with JsonFileStore(state_dir, lock_timeout=0.3).transaction() as txn:
        txn.allow("telegram", "after")
    assert time.perf_counter() - began < 1.0


def test_opened_store_times_out_in_transaction(state_dir: Path) -> None:
    store = JsonFileStore(state_dir, lock_timeout=0.3)
    with writer_process("hold", state_dir, 30) as holder:
        expect_line(holder, "LOCKED")
        with pytest.raises(StoreLockTimeoutError, match=r"\.lock"), store.transaction():
            pytest.fail("got the lock another process holds")
    with store.transaction() as txn:
        assert txn.allow_from("telegram") == []
