"""A failed write leaves the old file on disk and the store's memory matching the disk."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.core.errors import StoreError
from bot.services.pairing import PairingService
from stores.jsonfile import JsonFileStore
from tests.stores.helpers import snapshot


class Boom(BaseException):
    """Stands for an interrupt (KeyboardInterrupt, SystemExit) arriving mid-commit."""


def fail_nth(
    monkeypatch: pytest.MonkeyPatch, name: str, n: int, error: BaseException
) -> list[int]:
    """Make the n-th call (1-based) of ``os.<name>`` raise ``error``; return the call counter."""
    real: Callable[..., Any] = getattr(os, name)
    calls = [0]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == n:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, flaky)
    return calls


def pending_ids(store: JsonFileStore) -> list[str]:
    with store.transaction() as txn:
        return [r.id for r in txn.requests("telegram")]


def allow_ids(store: JsonFileStore) -> list[str]:
    with store.transaction() as txn:
        return txn.allow_from("telegram")


@pytest.fixture
def waiting(pairing: PairingService) -> str:
    """Bob is allowed already; alice is waiting. Return alice's code."""
    pairing.allow("telegram", "bob", actor="owner")
    result = pairing.request("telegram", "alice")
    assert result.request is not None
    return result.request.code


def test_failed_rename_keeps_old_file_and_old_state(
    monkeypatch: pytest.MonkeyPatch,
    state_dir: Path,
    store: JsonFileStore,
    pairing: PairingService,
    waiting: str,
) -> None:
    before = snapshot(state_dir)
    fail_nth(monkeypatch, "replace", 1, OSError(errno.ENOSPC, "No space left on device"))

    with pytest.raises(StoreError) as caught:
        pairing.approve(waiting, actor="owner")

    message = str(caught.value)
    assert "No space left on device" in message
    assert str(store.allow_path("telegram")) in message
    assert snapshot(state_dir) == before  # old files intact, no audit line
    assert not list(state_dir.rglob("*.pairbot-tmp"))
    assert allow_ids(store) == ["bob"]
    assert pending_ids(store) == ["alice"]
    assert not store.is_allowed("telegram", "alice")

    pairing.approve(waiting, actor="owner")  # os.replace works again: the retry succeeds
    assert allow_ids(store) == ["bob", "alice"]
    assert pending_ids(store) == []
    assert JsonFileStore(state_dir).is_allowed("telegram", "alice")
    assert [r["outcome"] for r in store.read_audit()][-1] == "approved"


def test_failure_between_grant_and_pending_leaves_it_pending(
    monkeypatch: pytest.MonkeyPatch,
    state_dir: Path,
    store: JsonFileStore,
    pairing: PairingService,
    waiting: str,
) -> None:
    allow_before = store.allow_path("telegram").read_bytes()
    fail_nth(monkeypatch, "replace", 2, OSError(errno.EIO, "Input/output error"))

    with pytest.raises(StoreError, match=r"telegram-pairing\.json"):
        pairing.approve(waiting, actor="owner")

    # The grant was written first; the request is still there: "approved, still pending",
    # never "request consumed, grant lost". Memory says exactly what the disk says.
    assert store.allow_path("telegram").read_bytes() != allow_before
    assert allow_ids(store) == ["bob", "alice"]
    assert pending_ids(store) == ["alice"]
    assert store.is_allowed("telegram", "alice")
    fresh = JsonFileStore(state_dir)
    assert allow_ids(fresh) == ["bob", "alice"]
    assert pending_ids(fresh) == ["alice"]


@pytest.mark.parametrize("syscall", ["fsync", "write", "replace"])
def test_interrupt_mid_commit_drops_uncommitted_changes(
    monkeypatch: pytest.MonkeyPatch,
    state_dir: Path,
    store: JsonFileStore,
    pairing: PairingService,
    waiting: str,
    syscall: str,
) -> None:
    before = snapshot(state_dir)
    fail_nth(monkeypatch, syscall, 1, Boom())

    with pytest.raises(Boom):
        pairing.approve(waiting, actor="owner")

    assert snapshot(state_dir) == before
    assert allow_ids(store) == ["bob"]  # not the grant that never reached the disk
    assert pending_ids(store) == ["alice"]
    assert not store.is_allowed("telegram", "alice")


def test_failed_audit_append_is_a_warning_and_the_change_stands(
    state_dir: Path,
    store: JsonFileStore,
    pairing: PairingService,
    waiting: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store.audit_path.unlink()
    store.audit_path.mkdir()  # unwritable even for root (chmod would not stop root)
    caplog.set_level(logging.WARNING, logger="stores")

    approved = pairing.approve(waiting, actor="owner")  # the change happened: no error

    assert approved.id == "alice"
    # The state files were durable before the audit was tried; memory agrees with them.
    assert allow_ids(store) == ["bob", "alice"]
    assert pending_ids(store) == []
    assert store.is_allowed("telegram", "alice")
    assert allow_ids(JsonFileStore(state_dir)) == ["bob", "alice"]
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("stores") and r.levelno >= logging.WARNING
    ]
    assert len(warnings) == 1
    assert str(store.audit_path) in warnings[0]
    assert "audit" in warnings[0]
    assert "\n" not in warnings[0]
    assert waiting not in warnings[0]
