"""How many fsyncs a JSON write costs, and in which order they come (issue 16): a request or an
allowlist add 3, an approval 4. Counted, so the count cannot grow without this failing."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.services.pairing import PairingService
from stores.jsonfile import JsonFileStore
from tests.helpers import requested

Steps = list[tuple[str, str]]


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> Steps:
    """Every ``fsync`` (of which file or dir) and ``rename`` (onto which file) made, in order,
    as ``(call, name)``; temp files are named ``tmp``."""
    made: Steps = []
    real_fsync, real_replace = os.fsync, os.replace

    def name(path: str) -> str:
        return "tmp" if path.endswith(".pairbot-tmp") else Path(path).name

    def fsync(fd: int) -> None:
        made.append(("fsync", name(os.readlink(f"/proc/self/fd/{fd}"))))
        real_fsync(fd)

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        made.append(("rename", name(str(dst))))
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return made


def counted(steps: Steps, write: Callable[[], object]) -> Steps:
    steps.clear()
    write()
    return steps.copy()


@pytest.fixture
def warm(pairing: PairingService) -> PairingService:
    """A state dir in use: the audit log and the pairing file exist (the first line of a
    new log fsyncs the dir that gets it too, once)."""
    requested(pairing, "telegram", "earlier")
    return pairing


def test_a_request_costs_three_fsyncs(steps: Steps, warm: PairingService) -> None:
    assert counted(steps, lambda: warm.request("telegram", "alice")) == [
        ("fsync", "tmp"),  # the new pairing file's data
        ("fsync", "audit.jsonl"),  # its line, before the file is in place
        ("rename", "telegram-pairing.json"),
        ("fsync", "credentials"),  # the rename
    ]


def test_an_allowlist_add_costs_three_fsyncs(steps: Steps, warm: PairingService) -> None:
    assert counted(steps, lambda: warm.allow("telegram", "bob", actor="owner")) == [
        ("fsync", "tmp"),
        ("fsync", "audit.jsonl"),
        ("rename", "telegram-allowFrom.json"),
        ("fsync", "credentials"),
    ]


def test_an_approval_costs_four_fsyncs(steps: Steps, warm: PairingService) -> None:
    code = requested(warm, "telegram", "carol").code
    assert counted(steps, lambda: warm.approve(code, actor="owner")) == [
        ("fsync", "tmp"),  # the new allowlist's data
        ("fsync", "tmp"),  # the new pairing file's data (the request swapped for a notice)
        ("fsync", "audit.jsonl"),
        ("rename", "telegram-allowFrom.json"),  # the grant first
        ("rename", "telegram-pairing.json"),
        ("fsync", "credentials"),  # one fsync makes both renames durable, in order
    ]


def test_a_new_audit_log_fsyncs_its_dir_once(
    steps: Steps, store: JsonFileStore, pairing: PairingService
) -> None:
    """The first line creates the log: its directory entry is made durable, once."""
    first = counted(steps, lambda: pairing.request("telegram", "dave"))
    second = counted(steps, lambda: pairing.request("telegram", "erin"))

    assert first.count(("fsync", store.state_dir.name)) == 1
    assert second.count(("fsync", store.state_dir.name)) == 0
