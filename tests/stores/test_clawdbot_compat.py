"""Files written by Clawdbot are read, approved from, and rewritten without losing anything."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.core.clock import FakeClock
from bot.services.pairing import PairingService
from stores.jsonfile import JsonFileStore
from tests.stores.helpers import load

CREATED = "2026-03-04T09:15:27.123Z"
SEEN = "2026-03-04T09:16:01.456Z"

CLAWDBOT_PAIRING: dict[str, Any] = {
    "version": 1,
    "requests": [
        {
            "id": "123456789",
            "code": "K7QH2RXP",
            "createdAt": CREATED,
            "lastSeenAt": SEEN,
            "meta": {"username": "alice", "accountId": "default"},
            "channelHint": {"chatType": "private", "ids": [1, 2.5, None, True]},
        },
        {
            "id": "987654321",
            "code": "M4ZT8WQA",
            "createdAt": CREATED,
            "lastSeenAt": SEEN,
            "meta": {"username": "bob", "accountId": "default"},
            "clawdbotOnly": "keep me ✓",
        },
    ],
    "updatedBy": {"tool": "clawdbot", "build": 1234},
}
CLAWDBOT_ALLOW = {"version": 1, "allowFrom": ["555"], "note": "hand-edited"}


def write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def near_created() -> FakeClock:
    return FakeClock(datetime(2026, 3, 4, 9, 20, tzinfo=UTC))


def test_approve_from_clawdbot_files(state_dir: Path) -> None:
    pairing_file = state_dir / "credentials" / "telegram-pairing.json"
    allow_file = state_dir / "credentials" / "telegram-allowFrom.json"
    write_json(pairing_file, CLAWDBOT_PAIRING)
    write_json(allow_file, CLAWDBOT_ALLOW)
    store = JsonFileStore(state_dir)
    service = PairingService(store, clock=near_created())

    assert [r.id for r in service.pending("telegram")] == ["123456789", "987654321"]
    assert not service.is_allowed("telegram", "123456789")
    approved = service.approve("k7qh-2rxp", actor="owner")

    assert approved.id == "123456789"
    assert approved.meta == {"username": "alice", "accountId": "default"}
    assert service.is_allowed("telegram", "123456789")
    assert JsonFileStore(state_dir).allowed_until("telegram", "123456789")

    allow = load(allow_file)
    assert allow == {"version": 1, "allowFrom": ["555", "123456789"], "note": "hand-edited"}
    pairing = load(pairing_file)
    assert pairing["version"] == 1
    assert pairing["updatedBy"] == CLAWDBOT_PAIRING["updatedBy"]
    assert pairing["requests"] == [CLAWDBOT_PAIRING["requests"][1]]  # untouched, every key


def test_refresh_keeps_unknown_keys(state_dir: Path) -> None:
    pairing_file = state_dir / "credentials" / "telegram-pairing.json"
    write_json(pairing_file, CLAWDBOT_PAIRING)
    service = PairingService(JsonFileStore(state_dir), clock=near_created())

    result = service.request("telegram", "123456789", {"username": "alice2"})

    assert result.request is not None
    assert result.request.code == "K7QH2RXP"
    entry = load(pairing_file)["requests"][0]
    original = CLAWDBOT_PAIRING["requests"][0]
    assert entry["channelHint"] == original["channelHint"]
    assert entry["createdAt"] == CREATED
    assert entry["lastSeenAt"] == "2026-03-04T09:20:00.000Z"
    assert entry["meta"] == {"username": "alice2"}
    assert load(pairing_file)["updatedBy"] == CLAWDBOT_PAIRING["updatedBy"]


def test_bare_array_allow_from_is_read_and_upgraded(state_dir: Path) -> None:
    allow_file = state_dir / "credentials" / "telegram-allowFrom.json"
    write_json(allow_file, ["111", 222, " 333 "])
    store = JsonFileStore(state_dir)

    assert store.allowed_until("telegram", "111")
    assert store.allowed_until("telegram", "222")
    assert store.allowed_until("telegram", "333")
    assert not store.allowed_until("telegram", "444")
    with store.transaction() as txn:
        assert txn.allow_from("telegram") == ["111", "222", "333"]
    store.load_check(allow_file)

    service = PairingService(store, clock=near_created())
    service.allow("telegram", "444", actor="owner")
    assert load(allow_file) == {"version": 1, "allowFrom": ["111", "222", "333", "444"]}


def test_wildcard_is_kept_but_never_allows(state_dir: Path) -> None:
    allow_file = state_dir / "credentials" / "telegram-allowFrom.json"
    write_json(allow_file, {"version": 1, "allowFrom": ["*", "1"]})
    store = JsonFileStore(state_dir)
    assert not store.allowed_until("telegram", "*")
    assert not store.allowed_until("telegram", "2")
    with store.transaction() as txn:
        txn.allow("telegram", "3")
    assert load(allow_file)["allowFrom"] == ["*", "1", "3"]


def test_missing_optional_fields_and_naive_times(state_dir: Path) -> None:
    write_json(
        state_dir / "credentials" / "signal-pairing.json",
        {
            "requests": [
                {"id": "+4912345", "code": "abcd2345", "createdAt": "2026-03-04T09:15:00"}
            ],
        },
    )
    store = JsonFileStore(state_dir)
    with store.transaction() as txn:
        [request] = txn.requests("signal")
    assert request.code == "ABCD2345"
    assert request.created_at == datetime(2026, 3, 4, 9, 15, tzinfo=UTC)
    assert request.last_seen_at == request.created_at
    assert request.meta == {}


def test_duplicate_entries_keep_the_first(state_dir: Path) -> None:
    write_json(
        state_dir / "credentials" / "telegram-allowFrom.json",
        {"version": 1, "allowFrom": ["1", "2", "1"]},
    )
    write_json(
        state_dir / "credentials" / "telegram-pairing.json",
        {
            "version": 1,
            "requests": [
                {"id": "9", "code": "AAAA2222", "createdAt": CREATED},
                {"id": "9", "code": "BBBB3333", "createdAt": CREATED},
            ],
        },
    )
    store = JsonFileStore(state_dir)
    with store.transaction() as txn:
        assert txn.allow_from("telegram") == ["1", "2"]
        assert [r.code for r in txn.requests("telegram")] == ["AAAA2222"]
        assert txn.drop_request("telegram", "9")
        assert txn.requests("telegram") == []
    assert store.allowed_until("telegram", "1")
