"""A failed write leaves the old file on disk and the store's memory matching the disk."""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.core.errors import StoreError
from bot.core.models import PendingRequest
from bot.services.pairing import PairingService
from stores.jsonfile import JsonFileStore
from tests.helpers import requested
from tests.stores.helpers import snapshot


class Boom(BaseException):
    """Stands for an interrupt (KeyboardInterrupt, SystemExit) arriving mid-commit."""


FailNth = Callable[[str, int, BaseException], None]


@pytest.fixture
def fail_nth(monkeypatch: pytest.MonkeyPatch) -> FailNth:
    """``fail_nth(name, n, error)``: the n-th call (1-based) of ``os.<name>`` raises ``error``."""

    def arrange(name: str, n: int, error: BaseException) -> None:
        real: Callable[..., Any] = getattr(os, name)
        calls = 0

        def flaky(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == n:
                raise error
            return real(*args, **kwargs)

        monkeypatch.setattr(os, name, flaky)

    return arrange


def pending_ids(store: JsonFileStore) -> list[str]:
    with store.transaction() as txn:
        return [r.id for r in txn.requests("telegram")]


def allow_ids(store: JsonFileStore) -> list[str]:
    with store.transaction() as txn:
        return txn.allow_from("telegram")


@dataclass
class Waiting:
    """Bob is allowed already; alice is waiting for the owner to approve ``code``."""

    pairing: PairingService
    code: str

    def approve(self) -> PendingRequest:
        """The owner approves alice."""
        return self.pairing.approve(self.code, actor="owner")


@pytest.fixture
def waiting(pairing: PairingService) -> Waiting:
    pairing.allow("telegram", "bob", actor="owner")
    return Waiting(pairing, requested(pairing, "telegram", "alice").code)


@pytest.fixture
def fail_replacing(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path, OSError], None]:
    """``fail_replacing(path, error)``: every ``os.replace`` onto ``path`` raises ``error``
    (a failure that a second try meets again)."""

    def arrange(path: Path, error: OSError) -> None:
        real = os.replace

        def failing(src: Any, dst: Any, **kwargs: Any) -> None:
            if Path(dst) == path:
                raise error
            real(src, dst, **kwargs)

        monkeypatch.setattr(os, "replace", failing)

    return arrange


def test_failed_rename_keeps_old_file_and_old_state(
    state_dir: Path,
    store: JsonFileStore,
    waiting: Waiting,
    fail_replacing: Callable[[Path, OSError], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = snapshot(state_dir)
    fail_replacing(store.allow_path("telegram"), OSError(errno.ENOSPC, "No space left on device"))

    with pytest.raises(StoreError) as caught:
        waiting.approve()

    message = str(caught.value)
    assert "No space left on device" in message
    assert str(store.allow_path("telegram")) in message
    after = snapshot(state_dir)
    audit = after.pop("audit.jsonl")[0].splitlines()
    assert after == {k: v for k, v in before.items() if k != "audit.jsonl"}  # old files intact
    # The line went first (the commit's order); nothing of the change reached the disk, so
    # the line after it says so.
    assert (
        audit[: len(before["audit.jsonl"][0].splitlines())]
        == before["audit.jsonl"][0].splitlines()
    )
    approved, mark = (json.loads(line) for line in audit[-2:])
    assert (approved["outcome"], mark["outcome"], mark["was"]) == (
        "approved",
        "not-applied",
        "approved",
    )
    assert mark["subject"] == approved["subject"] == "alice"
    assert not list(state_dir.rglob("*.pairbot-tmp"))
    assert allow_ids(store) == ["bob"]
    assert pending_ids(store) == ["alice"]
    assert not store.allowed_until("telegram", "alice")

    monkeypatch.undo()  # os.replace works again: the retry succeeds
    waiting.approve()
    assert allow_ids(store) == ["bob", "alice"]
    assert pending_ids(store) == []
    assert JsonFileStore(state_dir).allowed_until("telegram", "alice")
    assert [r["outcome"] for r in store.read_audit()][-1] == "approved"


def test_rename_that_fails_once_is_tried_again(
    state_dir: Path, store: JsonFileStore, waiting: Waiting, fail_nth: FailNth
) -> None:
    fail_nth("replace", 1, OSError(errno.EIO, "Input/output error"))

    waiting.approve()  # past its commit point, a commit is finished: the rename is retried

    assert allow_ids(store) == ["bob", "alice"]
    assert pending_ids(store) == []
    assert [r["outcome"] for r in store.read_audit()][-1] == "approved"
    assert not list(state_dir.rglob("*.pairbot-tmp"))


def test_failure_between_grant_and_pending_leaves_it_pending(
    state_dir: Path,
    store: JsonFileStore,
    waiting: Waiting,
    fail_replacing: Callable[[Path, OSError], None],
) -> None:
    allow_before = store.allow_path("telegram").read_bytes()
    fail_replacing(store.pairing_path("telegram"), OSError(errno.EIO, "Input/output error"))

    with pytest.raises(StoreError, match=r"telegram-pairing\.json"):
        waiting.approve()

    # The grant was written first; the request is still there: "approved, still pending",
    # never "request consumed, grant lost". Memory says exactly what the disk says.
    assert store.allow_path("telegram").read_bytes() != allow_before
    assert allow_ids(store) == ["bob", "alice"]
    assert pending_ids(store) == ["alice"]
    assert store.allowed_until("telegram", "alice")
    fresh = JsonFileStore(state_dir)
    assert allow_ids(fresh) == ["bob", "alice"]
    assert pending_ids(fresh) == ["alice"]
    assert not list(state_dir.rglob("*.pairbot-tmp"))


@pytest.mark.parametrize("syscall", ["fsync", "write"])
def test_interrupt_mid_commit_drops_uncommitted_changes(
    state_dir: Path, store: JsonFileStore, waiting: Waiting, fail_nth: FailNth, syscall: str
) -> None:
    before = snapshot(state_dir)
    fail_nth(syscall, 1, Boom())  # while the new files are written, before the commit point

    with pytest.raises(Boom):
        waiting.approve()

    assert snapshot(state_dir) == before
    assert allow_ids(store) == ["bob"]  # not the grant that never reached the disk
    assert pending_ids(store) == ["alice"]
    assert not store.allowed_until("telegram", "alice")


def test_interrupt_past_the_commit_point_finishes_the_commit(
    state_dir: Path, store: JsonFileStore, waiting: Waiting, fail_nth: FailNth
) -> None:
    fail_nth("replace", 1, Boom())  # the lines are in the log: the change is made whole

    with pytest.raises(Boom):
        waiting.approve()

    assert allow_ids(store) == ["bob", "alice"]
    assert pending_ids(store) == []
    assert store.allowed_until("telegram", "alice")
    assert [r["outcome"] for r in store.read_audit()][-1] == "approved"
    assert not list(state_dir.rglob("*.pairbot-tmp"))


def test_failed_audit_append_is_a_warning_and_the_change_stands(
    state_dir: Path, store: JsonFileStore, waiting: Waiting, caplog: pytest.LogCaptureFixture
) -> None:
    store.audit_path.unlink()
    store.audit_path.mkdir()  # unwritable even for root (chmod would not stop root)
    caplog.set_level(logging.WARNING, logger="stores")

    approved = waiting.approve()  # the change happened: no error

    assert approved.id == "alice"
    # The state files were durable before the audit was tried; memory agrees with them.
    assert allow_ids(store) == ["bob", "alice"]
    assert pending_ids(store) == []
    assert store.allowed_until("telegram", "alice")
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
    assert waiting.code not in warnings[0]
