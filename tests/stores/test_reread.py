"""A pending file another writer changed is re-read line by line: only new or changed entries
are decoded (issue 16: with 1,000 pending, four writers spent 16-18 ms a request decoding
every entry again), and the result is exactly what a whole parse gives."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.core.errors import StoreError
from bot.core.models import ApprovalNotice, PendingRequest
from stores import jsonfile
from stores.jsonfile import JsonFileStore

START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def request(n: int, **changes: Any) -> PendingRequest:
    made = PendingRequest(
        provider="telegram",
        id=str(1000 + n),
        code=f"AAAA{n:04d}".replace("0", "A").replace("1", "B")[:8],
        created_at=START + timedelta(seconds=n),
        last_seen_at=START + timedelta(seconds=n),
        meta={"username": f"u{n}"},
    )
    return dataclasses.replace(made, **changes)


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the pending entries decoded from now on (opened stores count too)."""
    seen: list[str] = []
    real = jsonfile.REQUESTS.decode

    def counting(raw: Any, where: str, provider: str) -> PendingRequest:
        found = real(raw, where, provider)
        seen.append(found.id)
        return found

    monkeypatch.setattr(
        jsonfile, "REQUESTS", dataclasses.replace(jsonfile.REQUESTS, decode=counting)
    )
    return seen


@pytest.fixture
def mine(state_dir: Path, decoded: list[str]) -> Iterator[JsonFileStore]:
    """This process's store, which wrote 1,000 requests (so it knows their text)."""
    store = JsonFileStore(state_dir)
    with store.transaction() as txn:
        for n in range(1000):
            txn.put_request(request(n))
    decoded.clear()
    yield store
    store.close()


def pending(store: JsonFileStore) -> list[PendingRequest]:
    with store.transaction() as txn:
        return txn.requests("telegram")


def whole(state_dir: Path) -> list[PendingRequest]:
    """What a store that never read the file finds in it."""
    return pending(JsonFileStore(state_dir))


def test_only_the_entries_another_writer_changed_are_decoded(
    state_dir: Path, mine: JsonFileStore, decoded: list[str]
) -> None:
    with JsonFileStore(state_dir).transaction() as txn:  # another writer
        txn.put_request(request(1000))  # new
        txn.put_request(request(7, meta={"username": "renamed"}))  # changed
        txn.drop_request("telegram", "1003")  # gone
        txn.put_notice(ApprovalNotice(provider="telegram", sender_id="77", approved_at=START))
    decoded.clear()

    found = pending(mine)

    assert sorted(decoded) == ["1007", "2000"]
    assert found == whole(state_dir)
    assert len(found) == 1000
    with mine.transaction() as txn:
        assert [n.sender_id for n in txn.notices()] == ["77"]


def test_entries_added_at_the_end_are_all_that_is_read(
    state_dir: Path, mine: JsonFileStore, decoded: list[str]
) -> None:
    """The common case (other processes' requests): the list as held, then new entries."""
    for n in (1000, 1001):
        with JsonFileStore(state_dir).transaction() as txn:
            txn.put_request(request(n))
    decoded.clear()

    found = pending(mine)

    assert decoded == ["2000", "2001"]
    assert found == whole(state_dir)


def test_a_write_after_the_reread_writes_what_a_whole_parse_would(
    state_dir: Path, mine: JsonFileStore
) -> None:
    with JsonFileStore(state_dir).transaction() as txn:
        txn.put_request(request(1000, meta={"username": "ünïcode ✓"}))
    pending(mine)
    with mine.transaction() as txn:
        txn.put_request(request(1001))
    mine_text = mine.pairing_path("telegram").read_bytes()

    other = JsonFileStore(state_dir)
    with other.transaction() as txn:  # the same change, from a whole parse
        txn.drop_request("telegram", "2001")
        txn.put_request(request(1001))

    assert other.pairing_path("telegram").read_bytes() == mine_text


def test_a_file_laid_out_otherwise_is_parsed_whole(
    state_dir: Path, mine: JsonFileStore, decoded: list[str]
) -> None:
    path = mine.pairing_path("telegram")
    doc = json.loads(path.read_text())
    doc["requests"] = doc["requests"][:10]
    path.write_text(json.dumps(doc, indent=2) + "\n")  # Clawdbot's layout: entries span lines

    assert pending(mine) == whole(state_dir)
    assert len(decoded) >= 10


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text.replace('"createdAt": "2026', '"createdAt": "x2026', 1),
        lambda text: text.replace("},\n", "}\n", 1),  # a comma missing between entries
        lambda text: text.replace('"version": 1', '"version": 99', 1),
    ],
    ids=["bad-field", "missing-comma", "newer-version"],
)
def test_a_bad_change_is_refused_as_a_whole_parse_refuses_it(
    state_dir: Path, mine: JsonFileStore, damage: Any
) -> None:
    path = mine.pairing_path("telegram")
    path.write_text(damage(path.read_text()))

    with pytest.raises(StoreError) as caught:
        pending(mine)
    with pytest.raises(StoreError) as whole_parse:
        whole(state_dir)
    assert str(caught.value) == str(whole_parse.value)
