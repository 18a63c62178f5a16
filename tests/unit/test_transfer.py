"""Moving the whole state: export from one store, import into another, on every backend."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from bot.core.clock import FakeClock
from bot.core.models import FOREVER, AuditEvent
from bot.core.protocols import StateStore
from bot.services import transfer
from bot.services.nodes import NodeService
from bot.services.pairing import PairingService, PairingSettings
from stores.memory import MemoryStore
from tests.backends import BACKENDS, Backend

WEEK = timedelta(days=7)


def fill(store: StateStore, clock: FakeClock) -> None:
    """A state with one of everything: pending strangers (one with held messages), grants,
    notices (one told, with held messages left), nodes, audit."""
    pairing = PairingService(store, clock=clock, settings=PairingSettings(hold_messages=2))
    nodes = NodeService(store, clock=clock)
    pairing.request("telegram", "111", {"firstName": "Ann"}, text="Ann's\nfirst")
    asked = pairing.request("slack", "U0BOB", {"name": "Bob"}, text="Bob's")
    assert asked.request is not None
    clock.advance(timedelta(seconds=5))
    pairing.approve(asked.request.code, actor="owner")  # a grant, and a notice to send
    [notice] = pairing.notices()
    pairing.notice_progress(replace(notice, told=True))
    pairing.allow("discord", "190000000000000011", actor="owner")
    pairing.allow("signal", "+15550002222", actor="owner", until=clock.now() + WEEK)
    pairing.request("whatsapp", "15550001111")
    ask = nodes.request("n1", display_name="Phone", platform="ios", version="1")
    nodes.request("n2", display_name="Laptop", platform="linux", version="2")
    nodes.approve(ask.request.request_id, actor="owner")


def view(store: StateStore) -> dict[str, object]:
    """What the listings show (``pairing list``, ``allowlist list``, ``nodes list``, audit),
    plus the hashes and notices the listings leave out."""
    document = transfer.document_json(transfer.export_state(store), now=FakeClock().now())
    del document["exportedAt"]
    return document


def test_a_document_round_trips_into_an_empty_store(backend: Backend, clock: FakeClock) -> None:
    source = backend.open()
    fill(source, clock)
    data = transfer.encode(transfer.export_state(source), now=clock.now())
    target = MemoryStore()
    report = transfer.import_state(target, transfer.decode(data, source="x"), merge=False)
    assert view(target) == view(source)
    assert report.written["requests"] == 2
    assert report.written["paired nodes"] == 1
    assert not any(report.kept.values())
    # and back into the backend under test, emptied
    fresh = BACKENDS[backend.name](backend.state_dir.parent / "again")
    try:
        again = fresh.open()
        transfer.import_state(again, transfer.export_state(target), merge=False)
        assert view(again) == view(source)
    finally:
        fresh.close()


def test_the_document_holds_hashes_and_codes_but_no_token(clock: FakeClock) -> None:
    store = MemoryStore()
    nodes = NodeService(store, clock=clock)
    ask = nodes.request("n1")
    approval = nodes.approve(ask.request.request_id, actor="owner")
    code = PairingService(store, clock=clock).request("telegram", "1").request
    assert code is not None
    text = transfer.encode(transfer.export_state(store), now=clock.now()).decode()
    assert approval.token not in text
    assert approval.node.token_hash in text
    assert code.code in text
    assert json.loads(text)["format"] == "pairbot-state"


def test_importing_into_a_store_that_holds_state_is_refused_and_writes_nothing(
    backend: Backend, clock: FakeClock
) -> None:
    target = backend.open()
    PairingService(target, clock=clock).allow("telegram", "7", actor="owner")
    before = backend.dump()
    source = MemoryStore()
    fill(source, clock)
    with pytest.raises(transfer.NotEmptyError, match="--merge"):
        transfer.import_state(target, transfer.export_state(source), merge=False)
    assert backend.dump() == before


def test_an_audit_log_alone_makes_a_store_not_empty(clock: FakeClock) -> None:
    target = MemoryStore()
    with target.transaction() as txn:
        txn.audit(AuditEvent(ts=clock.now(), event="e", actor="a", subject="s", outcome="o"))
    with pytest.raises(transfer.NotEmptyError):
        transfer.import_state(target, transfer.StateDocument(), merge=False)


def test_a_merge_keeps_what_the_store_has_and_twice_adds_nothing(
    backend: Backend, clock: FakeClock
) -> None:
    source = MemoryStore()
    fill(source, clock)
    document = transfer.export_state(source)
    target = backend.open()
    pairing = PairingService(target, clock=clock)
    mine = pairing.request("telegram", "111", {"firstName": "Mine"}).request  # the same sender
    pairing.allow("telegram", "222", actor="owner")
    report = transfer.import_state(target, document, merge=True)
    assert report.kept["requests"] == 1
    with target.transaction() as txn:
        assert txn.request("telegram", "111") == mine  # the store's own, not the document's
        assert txn.allow_from("telegram") == ["222"]
        assert txn.allow_from("slack") == ["U0BOB"]
    audit_before = target.read_audit()
    again = transfer.import_state(target, document, merge=True)
    assert not any(again.written.values())
    assert target.read_audit() == audit_before


def test_a_code_the_target_already_holds_refuses_the_whole_merge(clock: FakeClock) -> None:
    source = MemoryStore()
    made = PairingService(source, clock=clock).request("telegram", "1").request
    assert made is not None
    target = MemoryStore()
    with target.transaction() as txn:
        txn.put_request(
            type(made)(
                provider="slack",
                id="U0X",
                code=made.code,
                created_at=made.created_at,
                last_seen_at=made.created_at,
            )
        )
    with pytest.raises(transfer.DocumentError, match="code"):
        transfer.import_state(target, transfer.export_state(source), merge=True)
    with target.transaction() as txn:
        assert txn.request("telegram", "1") is None


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda d: d.update(format="other"), "format"),
        (lambda d: d.update(version=99), "version: 99 is newer"),
        (lambda d: d["requests"][0].update(createdAt="yesterday"), "requests[0].createdAt"),
        (lambda d: d["requests"][0].update(provider="icq"), "requests[0].provider"),
        (lambda d: d["requests"][0].update(code="!"), "requests[0].code"),
        (lambda d: d["nodes"]["paired"][0].pop("tokenHash"), "nodes.paired[0].tokenHash"),
        (lambda d: d["allowlists"].update(telegram="7"), "allowlists.telegram"),
        (lambda d: d["audit"][0].pop("ts"), "audit[0].ts"),
        (lambda d: d["requests"][0]["held"][0].update(at=5), "requests[0].held[0].at"),
        (lambda d: d["notices"][0].update(held={}), "notices[0].held: must be a list"),
        (lambda d: d["notices"][0].update(told="yes"), "notices[0].told"),
    ],
)
def test_a_bad_document_is_named_to_the_field(change, named, clock: FakeClock) -> None:
    source = MemoryStore()
    fill(source, clock)
    raw = transfer.document_json(transfer.export_state(source), now=clock.now())
    change(raw)
    with pytest.raises(transfer.DocumentError) as caught:
        transfer.read_document(raw, source="state.json")
    assert str(caught.value).startswith("state.json: ")
    assert named in str(caught.value)
    assert "\n" not in str(caught.value)


def test_not_json_is_named(tmp_path: Path) -> None:
    with pytest.raises(transfer.DocumentError, match=r"^x\.json: not JSON"):
        transfer.decode(b"{", source="x.json")


def test_the_ends_of_grants_travel_and_only_they_make_a_version_2_document(
    backend: Backend, clock: FakeClock
) -> None:
    source = backend.open()
    fill(source, clock)
    document = transfer.document_json(transfer.export_state(source), now=clock.now())
    assert document["version"] == 2
    assert document["allowEnds"] == {"signal": {"+15550002222": "2026-01-08T12:00:05.000Z"}}
    target = MemoryStore()
    transfer.import_state(target, transfer.read_document(document), merge=False)
    assert target.allowed_until("signal", "+15550002222") == clock.now() + WEEK
    assert target.allowed_until("discord", "190000000000000011") is FOREVER

    plain = MemoryStore()
    PairingService(plain, clock=clock).allow("telegram", "7", actor="owner")
    older = transfer.document_json(transfer.export_state(plain), now=clock.now())
    assert older["version"] == 1, "no grant ends: a document an older pairbot reads whole"
    assert "allowEnds" not in older


def test_a_merge_keeps_the_stores_own_end(clock: FakeClock) -> None:
    source = MemoryStore()
    PairingService(source, clock=clock).allow(
        "telegram", "7", actor="owner", until=clock.now() + WEEK
    )
    target = MemoryStore()
    PairingService(target, clock=clock).allow("telegram", "7", actor="owner")
    report = transfer.import_state(target, transfer.export_state(source), merge=True)
    assert report.kept["allowed"] == 1
    assert target.allowed_until("telegram", "7") is FOREVER


@pytest.mark.parametrize(
    ("ends", "message"),
    [
        (
            {"telegram": {"8": "2026-01-08T12:00:00Z"}},
            "allowEnds.telegram.8: not in allowlists.telegram",
        ),
        (
            {"telegram": {"7": "next week"}},
            "allowEnds.telegram.7: not an ISO-8601 time: 'next week'",
        ),
        ({"myspace": {}}, "allowEnds.myspace: unknown provider"),
        ({"telegram": ["7"]}, "allowEnds.telegram: must be an object"),
    ],
    ids=["not-listed", "bad-time", "unknown-provider", "not-an-object"],
)
def test_a_bad_end_is_refused_naming_its_field(ends: object, message: str) -> None:
    raw = {
        "format": "pairbot-state",
        "version": 2,
        "allowlists": {"telegram": ["7"]},
        "allowEnds": ends,
    }
    with pytest.raises(transfer.DocumentError) as caught:
        transfer.read_document(raw, source="state.json")
    assert str(caught.value) == f"state.json: {message}"


def test_held_messages_and_the_told_mark_travel_with_the_document(clock: FakeClock) -> None:
    source = MemoryStore()
    fill(source, clock)
    document = transfer.document_json(transfer.export_state(source), now=clock.now())
    assert [r.get("held") for r in document["requests"]] == [
        [{"text": "Ann's\nfirst", "at": "2026-01-01T12:00:00.000Z", "name": "Ann"}],
        None,
    ]
    assert [(n["senderId"], n["told"], len(n["held"])) for n in document["notices"]] == [
        ("U0BOB", True, 1)
    ]
    target = MemoryStore()
    transfer.import_state(target, transfer.read_document(document), merge=False)
    with source.transaction() as was, target.transaction() as now:
        assert now.requests("telegram") == was.requests("telegram")
        assert now.notices() == was.notices()
