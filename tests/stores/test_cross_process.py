"""Writes by another store instance or another process are seen without a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from stores import open_store
from stores.jsonfile import JsonFileStore
from tests.stores.helpers import run_writer


def test_same_size_rewrites_in_quick_succession_are_seen(state_dir: Path) -> None:
    """Swapping one id for another of the same length keeps the file size; still noticed."""
    gate = JsonFileStore(state_dir)
    other = JsonFileStore(state_dir)
    with other.transaction() as txn:
        txn.allow("telegram", "u0")
    for i in range(1, 60):
        assert gate.allowed_until("telegram", f"u{(i - 1) % 10}")
        size = other.allow_path("telegram").stat().st_size
        with other.transaction() as txn:
            assert txn.disallow("telegram", f"u{(i - 1) % 10}")
            txn.allow("telegram", f"u{i % 10}")
        assert other.allow_path("telegram").stat().st_size == size
        assert gate.allowed_until("telegram", f"u{i % 10}"), i
        assert not gate.allowed_until("telegram", f"u{(i - 1) % 10}"), i


@pytest.mark.parametrize("kind", ["json", "sqlite"])
def test_subprocess_grant_and_revoke_are_seen(state_dir: Path, kind: str) -> None:
    gate = open_store(state_dir, backend=kind)
    assert not gate.allowed_until("telegram", "carol")
    run_writer("allow", state_dir, "carol", backend=kind)
    assert gate.allowed_until("telegram", "carol")
    assert gate.allowed_until("telegram", "carol")  # from memory now
    run_writer("revoke", state_dir, "carol", backend=kind)
    assert not gate.allowed_until("telegram", "carol")
    run_writer("allow", state_dir, "carol", backend=kind)
    assert gate.allowed_until("telegram", "carol")
    gate.close()


def test_file_deleted_behind_the_store_means_not_allowed(state_dir: Path) -> None:
    gate = JsonFileStore(state_dir)
    with gate.transaction() as txn:
        txn.allow("telegram", "dave")
    assert gate.allowed_until("telegram", "dave")
    gate.allow_path("telegram").unlink()
    assert not gate.allowed_until("telegram", "dave")
