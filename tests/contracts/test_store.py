"""What every store backend must do: the StateStore / StateTxn contract, on each backend.

Every test runs once per backend of tests/backends.py. ``backend.open()`` is the store under
test; ``backend.other()`` is what another process would use on the same state (a second
JsonFileStore on the dir; the same MemoryStore; a second SqliteStore on the file). What one
backend alone does (the JSON files' shapes, the database's schema, modes, fsyncs, crashes,
locks across processes, corrupt files) is tested beside it, in tests/stores/.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bot.core import codes
from bot.core.clock import FakeClock
from bot.core.errors import InviteRefusedError, StoreLockTimeoutError
from bot.core.invites import GatewayAddress
from bot.core.models import (
    FOREVER,
    HELD_TEXT_LIMIT,
    ApprovalNotice,
    AskView,
    AuditEvent,
    HeldMessage,
    NodeInvite,
    NodeRequest,
    PairedNode,
    PendingRequest,
    RequestOutcome,
)
from bot.core.platforms import KNOWN_PROVIDERS
from bot.core.protocols import StateStore, StateTxn
from bot.services.nodes import NodeService
from bot.services.pairing import PairingService, PairingSettings
from tests.backends import Backend, JsonBackend, contents
from tests.stores.helpers import snapshot

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def request(sender_id: str, code: str = "AAAA2222", provider: str = "telegram") -> PendingRequest:
    return PendingRequest(
        provider=provider, id=sender_id, code=code, created_at=T0, last_seen_at=T0
    )


def node_request(request_id: str, node_id: str, display_name: str = "") -> NodeRequest:
    return NodeRequest(
        request_id=request_id,
        node_id=node_id,
        display_name=display_name,
        platform="",
        version="",
        created_at=T0,
    )


def paired(node_id: str, version: str = "") -> PairedNode:
    return PairedNode(
        node_id=node_id,
        display_name="",
        platform="",
        version=version,
        token_hash="ab" * 32,
        created_at=T0,
        approved_at=T0,
    )


def notice(
    provider: str, sender_id: str, seconds: float, chat_id: str | None = None
) -> ApprovalNotice:
    return ApprovalNotice(
        provider=provider, sender_id=sender_id, approved_at=at(seconds), chat_id=chat_id
    )


def event(subject: str, seconds: float = 0) -> AuditEvent:
    return AuditEvent(ts=at(seconds), event="allow", actor="owner", subject=subject, outcome="ok")


def subjects(records: Iterable[dict[str, object]]) -> list[object]:
    return [r["subject"] for r in records]


# --- entries: put, replace, drop, order ---------------------------------------------------------


def test_requests_keep_their_order_and_a_put_replaces_in_place(backend: Backend) -> None:
    store = backend.open()
    with store.transaction() as txn:
        for sender, code in (("1", "AAAA2222"), ("2", "CCCC4444"), ("3", "DDDD5555")):
            txn.put_request(request(sender, code))
        txn.put_request(request("2", code="BBBB3333"))
        assert txn.requests("slack") == []
    with backend.other().transaction() as txn:
        assert [(r.id, r.code) for r in txn.requests("telegram")] == [
            ("1", "AAAA2222"),
            ("2", "BBBB3333"),
            ("3", "DDDD5555"),
        ]
        assert txn.drop_request("telegram", "1") is True
        assert txn.drop_request("telegram", "1") is False
        assert txn.drop_request("slack", "2") is False
        txn.put_request(request("1"))  # back, at the end
    with store.transaction() as txn:
        assert [r.id for r in txn.requests("telegram")] == ["2", "3", "1"]


def test_a_strangers_view_reads_their_request_the_allowlist_and_the_count(
    backend: Backend,
) -> None:
    store = backend.open()
    with store.transaction() as txn:
        txn.put_request(request("asker", "AAAA2222"))
        txn.put_request(request("other", "BBBB3333"))
        txn.put_request(request("asker", "CCCC4444", provider="slack"))
        txn.allow("telegram", "friend")
    with backend.other().transaction(shared=True) as txn:
        assert txn.ask_view("telegram", "asker") == AskView(
            request=request("asker", "AAAA2222"), allowed=False, pending=2
        )
        assert txn.ask_view("telegram", "friend") == AskView(request=None, allowed=True, pending=2)
        assert txn.ask_view("slack", "friend") == AskView(request=None, allowed=False, pending=1)
        assert txn.ask_view("discord", "asker") == AskView(request=None, allowed=False, pending=0)


def test_requests_are_found_by_sender_by_code_and_by_age(backend: Backend) -> None:
    store = backend.open()
    with store.transaction() as txn:
        txn.put_request(replace(request("old", "AAAA2222"), created_at=at(-60)))
        txn.put_request(request("new", "BBBB3333"))
        txn.put_request(request("7", "CCCC4444", provider="slack"))
    with backend.other().transaction() as txn:
        assert txn.request("telegram", "new") == request("new", "BBBB3333")
        assert txn.request("telegram", "7") is None
        assert txn.request("slack", "7") == request("7", "CCCC4444", provider="slack")
        assert (txn.request_count("telegram"), txn.request_count("slack")) == (2, 1)
        assert txn.request_count("discord") == 0
        assert [r.id for r in txn.requests_created_before("telegram", at(-60))] == ["old"]
        assert [r.id for r in txn.requests_created_before("telegram", at(-61))] == []
        assert [r.id for r in txn.requests_created_before("telegram", at(0))] == ["old", "new"]
        found = txn.request_with_code("CCCC4444", ["telegram", "slack"])
        assert found is not None
        assert (found.provider, found.id) == ("slack", "7")
        assert txn.request_with_code("CCCC4444", ["telegram"]) is None
        assert txn.request_with_code("ZZZZ9999", ["telegram", "slack"]) is None
        assert txn.code_taken("AAAA2222")
        assert txn.code_taken("CCCC4444")
        assert not txn.code_taken("ZZZZ9999")
        txn.drop_request("slack", "7")
        assert not txn.code_taken("CCCC4444")  # the view sees its own changes
        assert txn.request_with_code("CCCC4444", ["slack"]) is None


def test_the_allowlist_keeps_its_order_and_each_sender_once(backend: Backend) -> None:
    store = backend.open()
    with store.transaction() as txn:
        assert txn.allow("telegram", "a") is True
        assert txn.allow("telegram", "b") is True
        assert txn.allow("telegram", "a") is False
        listed = txn.allow_from("telegram")
        txn.allow("telegram", "c")
        assert listed == ["a", "b"], "a copy: later changes leave it as it is"
        assert txn.allow_has("telegram", "b") is True
        assert txn.allow_has("slack", "b") is False
    with backend.other().transaction() as txn:
        assert txn.allow_from("telegram") == ["a", "b", "c"]
        assert txn.disallow("telegram", "b") is True
        assert txn.disallow("telegram", "b") is False
        assert txn.allow_has("telegram", "b") is False
        assert txn.allow("telegram", "b") is True  # back, at the end
    with store.transaction() as txn:
        assert txn.allow_from("telegram") == ["a", "c", "b"]
        assert txn.allow_from("slack") == []


def test_node_requests_and_paired_nodes_keep_their_order(backend: Backend) -> None:
    store = backend.open()
    with store.transaction() as txn:
        for request_id, node_id in (("R1", "laptop"), ("R2", "phone"), ("R3", "laptop")):
            txn.put_node_request(node_request(request_id, node_id))
        txn.put_node_request(node_request("R2", "phone", display_name="Renamed"))
        for node_id in ("n1", "n2"):
            txn.put_paired_node(paired(node_id))
        txn.put_paired_node(paired("n1", version="2"))
    with backend.other().transaction() as txn:
        assert [(r.request_id, r.display_name) for r in txn.node_requests()] == [
            ("R1", ""),
            ("R2", "Renamed"),
            ("R3", ""),
        ]
        assert [(n.node_id, n.version) for n in txn.paired_nodes()] == [("n1", "2"), ("n2", "")]
        assert txn.drop_node_request("R1") is True
        assert txn.drop_node_request("R1") is False
        assert txn.drop_paired_node("n1") is True
        assert txn.drop_paired_node("n1") is False
    with store.transaction() as txn:
        assert [r.request_id for r in txn.node_requests()] == ["R2", "R3"]
        assert [n.node_id for n in txn.paired_nodes()] == ["n2"]


def test_notices_come_oldest_first_one_per_provider_and_sender(backend: Backend) -> None:
    store = backend.open()
    with store.transaction() as txn:
        txn.put_notice(notice("telegram", "1", 30))
        txn.put_notice(notice("slack", "1", 10))  # the same id on another platform: another one
        txn.put_notice(notice("discord", "2", 20, chat_id="D2"))
        txn.put_notice(notice("telegram", "1", 40))  # replaces the first
    with backend.other().transaction() as txn:
        assert [(n.provider, n.sender_id, n.approved_at, n.chat_id) for n in txn.notices()] == [
            ("slack", "1", at(10), None),
            ("discord", "2", at(20), "D2"),
            ("telegram", "1", at(40), None),
        ]
        assert txn.drop_notice("slack", "1") is True
        assert txn.drop_notice("slack", "1") is False
        assert txn.drop_notice("telegram", "2") is False
    with store.transaction() as txn:
        assert [(n.provider, n.sender_id) for n in txn.notices()] == [
            ("discord", "2"),
            ("telegram", "1"),
        ]


def test_what_is_put_is_read_back_whole(backend: Backend) -> None:
    """Every field survives, unknown keys (``extra``) included."""
    pending = PendingRequest(
        provider="discord",
        id="D1",
        code="CCCC4444",
        created_at=at(0),
        last_seen_at=at(5),
        meta={"username": "zoë"},
        last_sent_at=at(3),
        extra={"channelHint": {"ids": [1, None]}},
    )
    asking = NodeRequest(
        request_id="R1",
        node_id="n1",
        display_name="Pixel",
        platform="android",
        version="1.0",
        created_at=at(1),
        remote="10.0.0.5",
        pickup_hash="cd" * 32,
        is_repair=True,
        extra={"note": "kept"},
    )
    node = PairedNode(
        node_id="n1",
        display_name="Pixel",
        platform="android",
        version="1.0",
        token_hash="ef" * 32,
        created_at=at(1),
        approved_at=at(2),
        last_connected_at=at(9),
        extra={"note": "kept"},
    )
    told = notice("slack", "U1", 4, chat_id="D0")
    with backend.open().transaction() as txn:
        txn.put_request(pending)
        txn.put_node_request(asking)
        txn.put_paired_node(node)
        txn.put_notice(told)
    with backend.other().transaction() as txn:
        assert txn.requests("discord") == [pending]
        assert txn.node_requests() == [asking]
        assert txn.paired_nodes() == [node]
        assert txn.notices() == [told]


def invite(invite_id: str, secret: str, *, expires: float = 600, **fields: object) -> NodeInvite:
    return NodeInvite(
        invite_id=invite_id,
        secret_hash=codes.hash_token(secret),
        created_at=T0,
        expires_at=at(expires),
        **fields,  # type: ignore[arg-type]
    )


def test_invites_keep_their_order_are_found_by_hash_and_read_back_whole(
    backend: Backend,
) -> None:
    spent = invite(
        "I2", "second", name="Tablet", used_at=at(5), used_by="tab-1", extra={"note": "kept"}
    )
    with backend.open().transaction() as txn:
        txn.put_invite(invite("I1", "first"))
        txn.put_invite(spent)
        txn.put_invite(invite("I3", "third"))
        txn.put_invite(invite("I1", "first", name="Pixel"))  # replaced in place
    with backend.other().transaction() as txn:
        assert [(i.invite_id, i.name) for i in txn.invites()] == [
            ("I1", "Pixel"),
            ("I2", "Tablet"),
            ("I3", ""),
        ]
        assert txn.invites()[1] == spent
        assert txn.invite_with_hash(codes.hash_token("second")) == spent
        assert txn.invite_with_hash(codes.hash_token("nobody's")) is None
        assert txn.drop_invite("I1") is True
        assert txn.drop_invite("I1") is False
    with backend.open().transaction() as txn:
        assert [i.invite_id for i in txn.invites()] == ["I2", "I3"]
        assert txn.invite_with_hash(codes.hash_token("first")) is None


def test_an_invite_is_spent_once_and_never_once_it_expired(backend: Backend) -> None:
    with backend.open().transaction() as txn:
        txn.put_invite(invite("I1", "one", expires=60))
        txn.put_invite(invite("I2", "two", expires=60))
    with backend.other().transaction() as txn:
        assert txn.spend_invite("I1", node_id="pixel-9", at=at(59)) is True
        assert txn.spend_invite("I1", node_id="tablet", at=at(59)) is False
        assert txn.spend_invite("I2", node_id="tablet", at=at(60)) is False  # expired then
        assert txn.spend_invite("I3", node_id="tablet", at=at(1)) is False
    with backend.open().transaction() as txn:
        first, second = txn.invites()
    assert (first.used_at, first.used_by) == (at(59), "pixel-9")
    assert not first.live(at(1))
    assert (second.used_at, second.used_by) == (None, "")


def test_one_invite_shown_to_four_instances_at_once_pairs_one_node(backend: Backend) -> None:
    clock = FakeClock(T0)
    stores = [backend.open()] + [backend.other() for _ in range(3)]
    services = [NodeService(s, clock=clock) for s in stores]
    address = GatewayAddress(url="wss://127.0.0.1:18789", fingerprint="")
    secret = services[0].invite(address, actor="owner").code.secret
    paired: list[str] = []
    refused: list[str] = []

    def join(index: int) -> None:
        try:
            paired.append(services[index].join(f"node-{index}", secret).node.node_id)
        except InviteRefusedError as exc:
            refused.append(exc.reason)

    _at_once(4, join)
    assert len(paired) == 1
    assert refused == ["used"] * 3
    assert [n.node_id for n in services[0].paired()] == paired
    outcomes = [
        str(r["outcome"]) for r in backend.other().read_audit() if r["event"] == "node.invite"
    ]
    assert sorted(outcomes) == ["created", "refused", "refused", "refused", "used"]


def test_four_instances_spending_one_invite_at_once_spend_it_once(backend: Backend) -> None:
    with backend.open().transaction() as txn:
        txn.put_invite(invite("I1", "one"))
    stores = [backend.open()] + [backend.other() for _ in range(3)]
    spent: list[str] = []

    def spend(index: int) -> None:
        with stores[index].transaction() as txn:
            if txn.spend_invite("I1", node_id=f"node-{index}", at=at(1)):
                spent.append(f"node-{index}")

    _at_once(4, spend)
    assert len(spent) == 1
    with backend.other().transaction() as txn:
        assert [i.used_by for i in txn.invites()] == spent


# --- transactions: atomic, committed, one at a time ---------------------------------------------


def approve_mallory(txn: StateTxn) -> None:
    """Change every part of the state, as an approval (and more) would."""
    txn.allow("telegram", "mallory")
    txn.put_notice(notice("telegram", "mallory", 60))
    txn.drop_request("telegram", "alice")
    txn.disallow("telegram", "bob")
    txn.put_node_request(node_request("R9", "laptop"))
    txn.put_paired_node(paired("laptop"))
    txn.audit(event("mallory"))


def test_a_body_that_raises_changes_nothing_and_a_clean_one_changes_all(
    backend: Backend, pairing: PairingService, store: StateStore
) -> None:
    pairing.allow("telegram", "bob", actor="owner")
    pairing.request("telegram", "alice")
    before = backend.dump()

    def change_then_fail() -> None:
        with store.transaction() as txn:
            approve_mallory(txn)
            raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError):
        change_then_fail()

    assert backend.dump() == before  # for JSON: no file written, not even as it was
    for seen in (store, backend.other()):
        with seen.transaction() as txn:
            assert txn.allow_from("telegram") == ["bob"]
            assert [r.id for r in txn.requests("telegram")] == ["alice"]
            assert (txn.notices(), txn.node_requests(), txn.paired_nodes()) == ([], [], [])
        assert seen.allowed_until("telegram", "mallory") is None
        assert subjects(seen.read_audit()) == ["bob", "alice"]

    with store.transaction() as txn:
        approve_mallory(txn)

    with backend.other().transaction() as txn:
        assert txn.allow_from("telegram") == ["mallory"]
        assert [n.sender_id for n in txn.notices()] == ["mallory"]
        assert txn.requests("telegram") == []
        assert [r.request_id for r in txn.node_requests()] == ["R9"]
        assert [n.node_id for n in txn.paired_nodes()] == ["laptop"]
    assert subjects(backend.other().read_audit()) == ["bob", "alice", "mallory"]


def test_changes_are_seen_only_once_committed(backend: Backend) -> None:
    store = backend.open()
    with store.transaction() as txn:
        txn.allow("telegram", "old")
    with store.transaction() as txn:
        txn.disallow("telegram", "old")
        txn.allow("telegram", "new")
        txn.audit(event("new"))
        assert store.allowed_until("telegram", "old") is FOREVER
        assert store.allowed_until("telegram", "new") is None
        assert store.read_audit() == []
    assert store.allowed_until("telegram", "old") is None
    assert store.allowed_until("telegram", "new") is FOREVER
    assert subjects(store.read_audit()) == ["new"]


def test_the_gate_sees_grants_and_revocations_made_elsewhere(backend: Backend) -> None:
    gate = backend.open()
    owner = PairingService(backend.other(), clock=FakeClock())
    assert not gate.allowed_until("telegram", "alice")

    owner.allow("telegram", "alice", actor="owner")
    assert gate.allowed_until("telegram", "alice")

    owner.revoke("telegram", "alice", actor="owner")
    assert not gate.allowed_until("telegram", "alice")


def test_transactions_see_what_another_process_wrote(backend: Backend) -> None:
    first = PairingService(backend.open(), clock=FakeClock())
    second = PairingService(backend.other(), clock=FakeClock())
    created = first.request("slack", "U1").request
    assert created is not None
    assert [r.id for r in second.pending("slack")] == ["U1"]
    second.approve(created.code, actor="owner")  # second's cache must not hide U1...
    assert first.pending("slack") == []  # ...and first must notice it is gone
    first.request("slack", "U2")
    assert [r.id for r in second.pending("slack")] == ["U2"]
    assert [e.id for e in first.allowed("slack")] == ["U1"]


def test_what_the_services_wrote_is_what_another_process_reads(
    pairing: PairingService, nodes: NodeService, backend: Backend
) -> None:
    result = pairing.request("whatsapp", "15550001")
    pairing.request("whatsapp", "15550002")
    assert result.request is not None
    pairing.approve(result.request.code, actor="owner")
    nodes.approve(nodes.request("n1").request.request_id, actor="owner")
    nodes.request("n2")
    again = backend.other()
    again.check()  # for JSON: every state file parses
    with again.transaction() as txn:
        assert [r.id for r in txn.requests("whatsapp")] == ["15550002"]
        assert txn.allow_from("whatsapp") == ["15550001"]
        assert [n.node_id for n in txn.paired_nodes()] == ["n1"]
        assert [r.node_id for r in txn.node_requests()] == ["n2"]
    assert again.allowed_until("whatsapp", "15550001")


def test_threads_of_one_store_take_turns(backend: Backend) -> None:
    store = backend.open()

    def add(prefix: str) -> None:
        for i in range(25):
            with store.transaction() as txn:
                txn.allow("telegram", f"{prefix}{i}")

    threads = [threading.Thread(target=add, args=(p,)) for p in "abcd"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with backend.other().transaction() as txn:
        assert sorted(txn.allow_from("telegram")) == sorted(
            f"{p}{i}" for p in "abcd" for i in range(25)
        )


def test_one_transaction_at_a_time(backend: Backend) -> None:
    """A second transaction waits for the first; past the lock timeout it is refused."""
    waiter = backend.open(lock_timeout=0.2)
    holder = backend.other()
    inside = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with holder.transaction():
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert inside.wait(10)
        with pytest.raises(StoreLockTimeoutError), waiter.transaction():
            pytest.fail("two transactions at once")
    finally:
        release.set()
        thread.join()
    with waiter.transaction():
        pass


# --- the audit log ------------------------------------------------------------------------------


def test_audit_records_say_who_did_what_and_never_the_code(
    pairing: PairingService, store: StateStore
) -> None:
    result = pairing.request("telegram", "7")
    assert result.request is not None
    pairing.approve(result.request.code, actor="owner")

    records = store.read_audit()
    assert [(r["ts"], r["event"], r["outcome"]) for r in records] == [
        ("2026-01-01T12:00:00.000Z", "request", "created"),
        ("2026-01-01T12:00:00.000Z", "approve", "approved"),
    ]
    for record in records:
        assert result.request.code not in str(record)
    assert store.read_audit(limit=1) == records[-1:]
    assert store.read_audit(limit=0) == []


def test_an_audit_record_has_its_keys_in_one_order(backend: Backend) -> None:
    node_event = replace(
        event("laptop", 1.5),
        event="node.approve",
        actor="owner:cli",
        outcome="approved",
        request_id="R1",
        detail={"remote": "10.0.0.5", "superseded": ("R2",)},
    )
    dm_event = replace(event("7", 2), event="approve", outcome="approved", provider="telegram")
    with backend.open().transaction() as txn:
        txn.audit(node_event)
        txn.audit(dm_event)
    first, second = backend.other().read_audit()
    assert list(first.items()) == [
        ("ts", "2026-01-01T12:00:01.500Z"),
        ("event", "node.approve"),
        ("actor", "owner:cli"),
        ("subject", "laptop"),
        ("requestId", "R1"),
        ("outcome", "approved"),
        ("remote", "10.0.0.5"),
        ("superseded", ["R2"]),  # as JSON has it: a list
    ]
    assert list(second.items()) == [
        ("ts", "2026-01-01T12:00:02.000Z"),
        ("event", "approve"),
        ("actor", "owner"),
        ("provider", "telegram"),
        ("subject", "7"),
        ("outcome", "approved"),
    ]


def test_the_audit_log_is_read_oldest_first_from_its_end(backend: Backend) -> None:
    store = backend.open()
    assert store.read_audit() == []
    assert list(store.iter_audit(limit=5)) == []
    for n in range(0, 6, 2):
        with store.transaction() as txn:  # two records in one transaction keep their order
            txn.audit(event(str(n)))
            txn.audit(event(str(n + 1)))
    everything = store.read_audit()
    assert subjects(everything) == ["0", "1", "2", "3", "4", "5"]
    assert list(store.iter_audit()) == everything
    assert subjects(store.read_audit(limit=2)) == ["4", "5"]
    assert subjects(store.iter_audit(limit=3)) == ["3", "4", "5"]
    assert store.read_audit(limit=10) == everything
    assert list(store.iter_audit(limit=0)) == []
    assert backend.other().read_audit(limit=1) == everything[-1:]


def test_the_audit_log_is_tailed_from_a_position_by_any_process(backend: Backend) -> None:
    store, cli = backend.open(), backend.other()
    start = store.audit_since(None)
    assert (start.records, start.more, start.gap) == ([], False, False)
    with store.transaction() as txn:
        txn.audit(event("before"))
    assert store.audit_since(None).end != start.end  # None: the end now, past "before"
    for n in range(5):
        with cli.transaction() as txn:  # another process writes; this one reads
            txn.audit(event(str(n)))
    page = store.audit_since(start.end)
    assert subjects(r for _, r in page.records) == ["before", "0", "1", "2", "3", "4"]
    assert [r for _, r in page.records] == store.read_audit()
    assert page.end == page.records[-1][0]
    assert (page.more, page.gap) == (False, False)
    assert store.audit_since(page.end).records == []
    assert store.audit_since(page.end).end == page.end
    first = store.audit_since(start.end, limit=2)  # a page at a time, from where it stopped
    assert subjects(r for _, r in first.records) == ["before", "0"]
    assert first.more
    rest = store.audit_since(first.records[0][0])  # from a record's own position
    assert subjects(r for _, r in rest.records) == ["0", "1", "2", "3", "4"]


def test_an_audit_position_the_log_cannot_have_reads_it_from_its_start(backend: Backend) -> None:
    store = backend.open()
    with store.transaction() as txn:
        txn.audit(event("a"))
        txn.audit(event("b"))
    for alien in ("", "junk", "99999999", "1:99999999"):
        assert subjects(r for _, r in store.audit_since(alien).records) == ["a", "b"]


# --- the gate's question, provider names, health ------------------------------------------------


def test_a_wildcard_or_an_empty_id_is_kept_but_never_allowed(backend: Backend) -> None:
    store = backend.open()
    with store.transaction() as txn:
        for sender in ("*", "", "1"):
            assert txn.allow("telegram", sender) is True
    with backend.other().transaction() as txn:
        assert txn.allow_from("telegram") == ["*", "", "1"]
        assert txn.allow_has("telegram", "*") is True
    for gate in (store, backend.other()):
        assert [gate.allowed_until("telegram", s) is FOREVER for s in ("*", "", "1", "2")] == [
            False,
            False,
            True,
            False,
        ]


UNKNOWN: list[tuple[str, Callable[[StateTxn], object]]] = [
    ("requests", lambda txn: txn.requests("myspace")),
    ("put_request", lambda txn: txn.put_request(request("1", provider="myspace"))),
    ("drop_request", lambda txn: txn.drop_request("myspace", "1")),
    ("allow_from", lambda txn: txn.allow_from("myspace")),
    ("allow_has", lambda txn: txn.allow_has("myspace", "1")),
    ("allow", lambda txn: txn.allow("myspace", "1")),
    ("disallow", lambda txn: txn.disallow("myspace", "1")),
]


@pytest.mark.parametrize("use", [use for _, use in UNKNOWN], ids=[name for name, _ in UNKNOWN])
def test_an_unknown_provider_is_a_value_error(
    backend: Backend, use: Callable[[StateTxn], object]
) -> None:
    store = backend.open()
    before = backend.dump()
    with pytest.raises(ValueError, match="unknown provider 'myspace'"), store.transaction() as txn:
        use(txn)
    with pytest.raises(ValueError, match="unknown provider 'myspace'"):
        store.allowed_until("myspace", "1")
    assert backend.dump() == before


def test_a_store_in_use_reports_nothing_wrong_and_closes_without_loss(
    backend: Backend, pairing: PairingService, store: StateStore
) -> None:
    pairing.allow("telegram", "1", actor="owner")
    store.check()
    assert all(ok for ok, _ in store.access_report())
    assert store.recheck(backend.state_dir.parent / "elsewhere.json") is False
    store.close()
    assert backend.other().allowed_until("telegram", "1")


# --- cursors: where a provider got to, across a restart ------------------------------------------


def test_a_cursor_is_kept_for_the_next_start_and_replaced_as_a_whole(backend: Backend) -> None:
    store = backend.open()
    assert store.cursor("imessage.catch-up") is None
    store.save_cursor("imessage.catch-up", '{"after": 1, "guids": ["A"]}')
    store.save_cursor("other.cursor", "x")
    store.save_cursor("imessage.catch-up", '{"after": 2, "guids": []}')
    store.close()

    restarted = backend.other()
    assert restarted.cursor("imessage.catch-up") == '{"after": 2, "guids": []}'
    assert restarted.cursor("other.cursor") == "x"
    assert restarted.cursor("unknown") is None
    restarted.save_cursor("other.cursor", "")
    assert store.cursor("other.cursor") == ""


def test_a_cursor_leaves_the_pairing_state_alone(
    backend: Backend, pairing: PairingService
) -> None:
    pairing.allow("imessage", "+15550100001", actor="owner")
    store = backend.open()
    store.save_cursor("imessage.catch-up", "1")
    with backend.other().transaction() as txn:
        assert txn.allow_from("imessage") == ["+15550100001"]
        assert txn.requests("imessage") == []
    assert subjects(store.read_audit()) == ["+15550100001"]
    store.check()
    assert all(ok for ok, _ in store.access_report())


# --- strangers asking at once (shared transactions) -------------------------------------------


def test_add_request_inserts_only_a_new_sender_with_a_free_code(backend: Backend) -> None:
    store = backend.open()
    with store.transaction() as txn:
        assert txn.peers == 0, "an exclusive transaction holds the state alone"
        assert txn.add_request(request("1", "AAAA2222"))
        assert not txn.add_request(request("1", "BBBB3333")), "the sender has one"
        assert not txn.add_request(request("2", "AAAA2222", provider="slack")), "code taken"
        assert txn.add_request(request("2", "CCCC4444", provider="slack"))
    with backend.other().transaction(shared=True) as txn:
        assert txn.peers >= 0
        assert not txn.add_request(request("3", "CCCC4444")), "taken by a request on file"
        assert txn.add_request(request("3", "DDDD5555"))
        assert [r.code for r in txn.requests("telegram")] == ["AAAA2222", "DDDD5555"]
    assert contents(backend.other()) == contents(store)
    with store.transaction() as txn:
        assert not txn.drop_request("telegram", "1", code="ZZZZ9999"), "not the one read"
        assert not txn.drop_request("telegram", "9", code="AAAA2222"), "no such sender"
        assert txn.request("telegram", "1") is not None
        assert txn.drop_request("telegram", "1", code="AAAA2222")
        assert txn.request("telegram", "1") is None


def test_only_a_database_runs_shared_transactions_side_by_side(backend: Backend) -> None:
    with backend.open().transaction(shared=True) as txn:
        assert (txn.peers > 0) == (backend.name == "postgres")


def _at_once(count: int, work: Callable[[int], None]) -> None:
    """Run ``work(0..count-1)`` in threads released together; re-raise the first failure."""
    start = threading.Barrier(count)
    failures: list[BaseException] = []

    def run(index: int) -> None:
        try:
            start.wait(10)
            work(index)
        except BaseException as exc:  # re-raised below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    if failures:
        raise failures[0]


def _services(backend: Backend, count: int, clock: FakeClock, cap: int) -> list[PairingService]:
    """``count`` instances of the bot on one state, each with its own store."""
    settings = PairingSettings(max_pending_per_provider=cap)
    stores = [backend.open()] + [backend.other() for _ in range(count - 1)]
    return [PairingService(s, clock=clock, settings=settings) for s in stores]


def test_strangers_asking_at_once_never_pass_the_cap(backend: Backend) -> None:
    clock = FakeClock(T0)
    services = _services(backend, 4, clock, cap=20)
    outcomes: list[RequestOutcome] = []

    def ask(index: int) -> None:
        outcomes.extend(
            services[index].request("telegram", f"{index}-{n}").outcome for n in range(12)
        )

    _at_once(4, ask)
    with backend.other().transaction() as txn:
        on_file = txn.requests("telegram")
    assert len(on_file) == 20, "the cap holds across instances, and is reached"
    assert outcomes.count(RequestOutcome.CREATED) == 20
    assert outcomes.count(RequestOutcome.CAPPED) == 28
    assert len({r.code for r in on_file}) == 20
    created = [r for r in backend.other().read_audit() if r["outcome"] == "created"]
    assert sorted(str(r["subject"]) for r in created) == sorted(r.id for r in on_file)


def test_one_stranger_asking_through_four_instances_at_once_gets_one_code(
    backend: Backend,
) -> None:
    clock = FakeClock(T0)
    services = _services(backend, 4, clock, cap=100)
    codes: list[str] = []
    sent: list[bool] = []

    def ask(index: int) -> None:
        result = services[index].request("whatsapp", "15550001")
        assert result.request is not None
        codes.append(result.request.code)
        sent.append(result.send_code)

    _at_once(4, ask)
    assert len(set(codes)) == 1, "every instance answers with the one request's code"
    assert sent.count(True) == 1, "the code is sent once"
    audit = backend.other().read_audit()
    assert [r["outcome"] for r in audit if r["subject"] == "15550001"] == ["created"]


def test_an_expiry_several_instances_see_at_once_is_audited_once(backend: Backend) -> None:
    clock = FakeClock(T0)
    services = _services(backend, 4, clock, cap=100)
    first = services[0].request("signal", "+15550001").request
    assert first is not None
    clock.advance(timedelta(hours=2))  # past the TTL: the next ask drops it and makes another
    codes: list[str] = []

    def ask(index: int) -> None:
        result = services[index].request("signal", "+15550001")
        assert result.request is not None
        codes.append(result.request.code)

    _at_once(4, ask)
    assert len(set(codes)) == 1
    assert first.code not in codes
    outcomes = [r["outcome"] for r in backend.other().read_audit()]
    assert outcomes == ["created", "expired", "created"]


def test_a_sender_approved_elsewhere_a_moment_ago_is_not_given_a_new_code(
    backend: Backend,
) -> None:
    """The grant committed by another instance before this one's gate heard of it: the ask
    finds the sender allowed, makes no request, writes no audit line."""
    clock = FakeClock(T0)
    here, there = _services(backend, 2, clock, cap=100)
    asked = there.request("telegram", "4242").request
    assert asked is not None
    there.approve(asked.code, actor="owner")
    before = backend.other().read_audit()
    result = here.request("telegram", "4242")
    assert (result.outcome, result.request, result.send_code) == (
        RequestOutcome.ALLOWED,
        None,
        False,
    )
    with backend.other().transaction() as txn:
        assert txn.requests("telegram") == []
    assert backend.other().read_audit() == before


# --- grants that end ------------------------------------------------------------------------


def test_a_grant_that_ends_keeps_its_end_and_its_place(backend: Backend) -> None:
    store = backend.open()
    with store.transaction() as txn:
        assert txn.allow("telegram", "a") is True
        assert txn.allow("telegram", "b", until=at(60)) is True
        assert txn.allow("telegram", "c") is True
        assert txn.allow("slack", "U1", until=at(30)) is True
        assert (txn.allow_end("telegram", "a"), txn.allow_end("telegram", "b")) == (None, at(60))
        assert txn.allow_end("telegram", "nobody") is None
        assert txn.allow_ends("telegram") == {"b": at(60)}
    with backend.other().transaction() as txn:
        assert txn.allow_from("telegram") == ["a", "b", "c"]
        assert txn.allow_ends("telegram") == {"b": at(60)}
        assert txn.allow_ends("slack") == {"U1": at(30)}
        assert txn.allow("telegram", "b") is False, "listed: not added, but now for good"
        assert txn.allow("telegram", "a", until=at(90)) is False
    with store.transaction() as txn:
        assert txn.allow_from("telegram") == ["a", "b", "c"], "a new end keeps the place"
        assert txn.allow_ends("telegram") == {"a": at(90)}
        assert txn.allow_end("telegram", "b") is None
        assert txn.allow_has("telegram", "b")
        txn.allow("telegram", "c", until=at(10))
        assert txn.allow_ends("telegram", by=at(10)) == {"c": at(10)}, "ended at or before"
        assert txn.allow_ends("telegram", by=at(9)) == {}
        assert txn.allow_ends("telegram", by=at(90)) == {"a": at(90), "c": at(10)}


def test_the_gate_says_until_when_and_sees_an_end_changed_elsewhere(backend: Backend) -> None:
    gate = backend.open()
    with gate.transaction() as txn:
        txn.allow("telegram", "forever")
        txn.allow("telegram", "timed", until=at(60))
    assert gate.allowed_until("telegram", "forever") is FOREVER
    assert gate.allowed_until("telegram", "timed") == at(60)
    assert gate.allowed_until("telegram", "stranger") is None
    with backend.other().transaction() as txn:  # only an end changes, nothing is added
        txn.allow("telegram", "forever", until=at(30))
        txn.allow("telegram", "timed")
    assert gate.allowed_until("telegram", "forever") == at(30)
    assert gate.allowed_until("telegram", "timed") is FOREVER
    with backend.other().transaction() as txn:
        txn.allow("telegram", "forever", until=at(45))
    assert gate.allowed_until("telegram", "forever") == at(45)
    assert backend.other().allowed_until("telegram", "forever") == at(45), "a new reader too"


def test_a_grant_and_its_end_are_one_change(backend: Backend) -> None:
    store = backend.open()

    def allow_then_fail(until: datetime | None) -> None:
        with store.transaction() as txn:
            txn.allow("telegram", "a", until=until)
            raise RuntimeError("the body failed")

    with pytest.raises(RuntimeError):
        allow_then_fail(at(60))
    assert backend.other().allowed_until("telegram", "a") is None
    with store.transaction() as txn:
        txn.allow("telegram", "a", until=at(60))
    with pytest.raises(RuntimeError):
        allow_then_fail(None)
    assert backend.other().allowed_until("telegram", "a") == at(60), "never for good by accident"
    with store.transaction() as txn:
        assert txn.disallow("telegram", "a") is True
        assert txn.allow_ends("telegram") == {}
        assert txn.allow("telegram", "a") is True
    assert backend.other().allowed_until("telegram", "a") is FOREVER, "the old end went with it"


def test_an_ended_grant_is_removed_only_as_it_was_read(backend: Backend) -> None:
    store = backend.open()
    with store.transaction() as txn:
        txn.allow("telegram", "a", until=at(60))
        txn.allow("telegram", "b")
    with store.transaction() as txn:
        assert txn.disallow("telegram", "a", ending=at(59)) is False, "renewed since"
        assert txn.disallow("telegram", "b", ending=at(60)) is False, "a grant for good"
        assert txn.disallow("telegram", "nobody", ending=at(60)) is False
        assert txn.disallow("telegram", "a", ending=at(60)) is True
        assert txn.disallow("telegram", "a", ending=at(60)) is False
    with backend.other().transaction() as txn:
        assert txn.allow_from("telegram") == ["b"]
        assert txn.allow_ends("telegram") == {}


def test_an_ended_grant_several_instances_prune_at_once_is_audited_once(
    backend: Backend,
) -> None:
    clock = FakeClock(T0)
    services = _services(backend, 4, clock, cap=100)
    for sender in ("1", "2", "3"):
        services[0].allow("telegram", sender, actor="owner", until=at(2))
    services[0].allow("telegram", "4", actor="owner")
    clock.advance(timedelta(seconds=2))

    def prune(index: int) -> None:
        services[index].prune()

    _at_once(4, prune)

    ended = [r for r in backend.other().read_audit() if r["event"] == "grant.expire"]
    assert sorted(str(r["subject"]) for r in ended) == ["1", "2", "3"]
    with backend.other().transaction() as txn:
        assert txn.allow_from("telegram") == ["4"]
        assert txn.allow_ends("telegram") == {}


# --- held messages: kept with the request, moved by the approval, gone with the request --------

WORDS = "Hi, it's Zoë from the choir.\nCould you send me the rota? «ünïcode» 🎶"
LONG = "é" * (HELD_TEXT_LIMIT // 2)  # 4 KB in UTF-8 exactly: the longest held


def held(text: str, seconds: float, name: str = "") -> HeldMessage:
    return HeldMessage(text=text, at=at(seconds), name=name)


def holding(backend: Backend, clock: FakeClock, count: int = 3) -> PairingService:
    settings = PairingSettings(hold_messages=count, max_pending_per_provider=100)
    return PairingService(backend.open(), clock=clock, settings=settings)


def texts_of(messages: Iterable[HeldMessage]) -> list[str]:
    return [m.text for m in messages]


def stored_texts(backend: Backend) -> str:
    """Every held message's text the state holds (requests and notices of every provider),
    and the audit log, as another process reads them; one string to search."""
    with backend.other().transaction() as txn:
        requests = [r for p in KNOWN_PROVIDERS for r in txn.requests(p)]
        notices = txn.notices()
    held = [m for r in requests for m in r.held] + [m for n in notices for m in n.held]
    return "\n".join([*texts_of(held), repr(backend.other().read_audit())])


def test_held_messages_are_read_back_whole_in_order(backend: Backend) -> None:
    """With the request and with the notice, beside unknown keys; the told mark too."""
    pending = replace(
        request("D1", provider="discord"),
        held=(held(WORDS, 1, name="Zoë"), held(LONG, 2), held("  spaced \n", 3)),
        extra={"keptKey": [1, "two"]},
    )
    told = ApprovalNotice(
        provider="slack",
        sender_id="U1",
        approved_at=at(4),
        chat_id="D0",
        held=(held("second", 2), held("third", 3)),
        told=True,
        extra={"keptKey": True},
    )
    with backend.open().transaction() as txn:
        txn.put_request(pending)
        txn.put_notice(told)
        txn.put_notice(notice("telegram", "7", 5))
    with backend.other().transaction() as txn:
        assert txn.requests("discord") == [pending]
        assert txn.request_with_code(pending.code, ["discord"]) == pending
        assert txn.notices() == [told, notice("telegram", "7", 5)]
        txn.put_request(replace(pending, held=()))
        txn.put_notice(replace(told, held=(), told=False))
    with backend.open().transaction() as txn:
        assert txn.requests("discord") == [replace(pending, held=())]
        assert txn.notices()[0] == replace(told, held=(), told=False)


def test_a_pending_strangers_text_messages_are_held_up_to_the_limit(
    backend: Backend, clock: FakeClock
) -> None:
    pairing = holding(backend, clock, count=3)
    pairing.request("telegram", "42", {"firstName": "Zoë"}, text=WORDS)
    clock.advance(timedelta(seconds=1))
    for text in (None, "", "   ", "é" * (HELD_TEXT_LIMIT // 2) + "x"):  # a photo, blank, 4 KB+1
        assert pairing.request("telegram", "42", text=text).send_code is False
    for n in range(4):
        clock.advance(timedelta(seconds=1))
        pairing.request("telegram", "42", text=f"message {n}")
    with backend.other().transaction() as txn:
        [mine] = txn.requests("telegram")
    assert texts_of(mine.held) == [WORDS, "message 0", "message 1"]
    assert [m.at for m in mine.held] == [T0, at(2), at(3)]
    assert mine.held[0].name == "Zoë"
    assert "message 2" not in stored_texts(backend)


def test_holding_nothing_is_the_default(backend: Backend, clock: FakeClock) -> None:
    pairing = PairingService(backend.open(), clock=clock)
    pairing.request("telegram", "42", text="hello")
    pairing.request("telegram", "42", text="again")
    with backend.other().transaction() as txn:
        assert [r.held for r in txn.requests("telegram")] == [()]


def test_a_held_message_is_never_settled_in_memory(backend: Backend, clock: FakeClock) -> None:
    """Repeats are answered from memory only once nothing is left to hold."""
    pairing = holding(backend, clock, count=2)
    pairing.request("signal", "+15550001", text="one")
    assert pairing.settled_in_memory("signal", "+15550001", text="two") is False
    pairing.request("signal", "+15550001", text="two")
    assert pairing.settled_in_memory("signal", "+15550001", text="three") is True
    assert pairing.settled_in_memory("signal", "+15550001", text=None) is True
    with backend.other().transaction() as txn:
        assert texts_of(txn.requests("signal")[0].held) == ["one", "two"]


def test_the_approval_moves_held_messages_to_the_notice_in_its_write(
    backend: Backend, clock: FakeClock
) -> None:
    pairing = holding(backend, clock)
    asked = pairing.request("whatsapp", "15550001", text=WORDS).request
    pairing.request("whatsapp", "15550001", text="and another")
    assert asked is not None
    approved = pairing.approve(asked.code, actor="owner")
    assert texts_of(approved.held) == [WORDS, "and another"]
    with backend.other().transaction() as txn:
        assert txn.requests("whatsapp") == []
        [told] = txn.notices()
        assert txn.allow_has("whatsapp", "15550001")
    assert (told.sender_id, told.told, texts_of(told.held)) == (
        "15550001",
        False,
        [WORDS, "and another"],
    )
    assert all(WORDS not in str(r) for r in backend.other().read_audit())


def test_allowing_a_sender_who_asked_moves_their_held_messages_too(
    backend: Backend, clock: FakeClock
) -> None:
    pairing = holding(backend, clock)
    pairing.request("slack", "U77", {"chatId": "D77"}, text="from the DM")
    pairing.allow("slack", "U77", actor="owner")
    with backend.other().transaction() as txn:
        [told] = txn.notices()
    assert (told.chat_id, texts_of(told.held)) == ("D77", ["from the DM"])


@pytest.mark.parametrize("end", ["reject", "expire", "expire-on-ask"])
def test_held_messages_go_with_a_request_that_is_rejected_or_expires(
    backend: Backend, clock: FakeClock, end: str
) -> None:
    pairing = holding(backend, clock)
    asked = pairing.request("imessage", "+15550001", text=WORDS).request
    assert asked is not None
    assert WORDS in stored_texts(backend)
    if isinstance(backend, JsonBackend):
        assert in_a_file(backend, b"from the choir")
    if end == "reject":
        pairing.reject(asked.code, actor="owner")
    elif end == "expire":
        clock.advance(pairing.settings.pending_ttl)
        assert [r.id for r in pairing.prune()] == ["+15550001"]
    else:  # the stranger's next message after the TTL: a new request, nothing of the old
        clock.advance(pairing.settings.pending_ttl)
        pairing.request("imessage", "+15550001", text="new")
    assert WORDS not in stored_texts(backend)
    assert contents(backend.other())["notices"] == []
    if isinstance(backend, JsonBackend):  # not in any file, the audit log included
        assert not in_a_file(backend, b"from the choir")


def in_a_file(backend: JsonBackend, part: bytes) -> bool:
    """Whether any file of the state dir holds ``part`` (a part of :data:`WORDS` that JSON
    writes as it is)."""
    return any(part in data for data, _ in snapshot(backend.state_dir).values())


def test_a_revocation_before_the_sender_was_told_drops_the_held_messages(
    backend: Backend, clock: FakeClock
) -> None:
    pairing = holding(backend, clock)
    asked = pairing.request("discord", "123456789012345678", text=WORDS).request
    assert asked is not None
    pairing.approve(asked.code, actor="owner")
    pairing.revoke("discord", "123456789012345678", actor="owner")
    assert WORDS not in stored_texts(backend)


def test_progress_is_written_only_while_that_approval_waits(
    backend: Backend, clock: FakeClock
) -> None:
    pairing = holding(backend, clock)
    asked = pairing.request("telegram", "42", text="one").request
    pairing.request("telegram", "42", text="two")
    assert asked is not None
    pairing.approve(asked.code, actor="owner")
    [waiting] = pairing.notices()
    on = replace(waiting, told=True, held=waiting.held[1:])
    assert pairing.notice_progress(on) is True
    with backend.other().transaction() as txn:
        assert txn.notices() == [on]
    pairing.revoke("telegram", "42", actor="owner")
    assert pairing.notice_progress(on) is False, "revoked: not written back"
    assert pairing.notices() == []
    again = pairing.request("telegram", "42").request
    assert again is not None
    clock.advance(timedelta(seconds=1))
    pairing.approve(again.code, actor="owner")
    assert pairing.notice_progress(on) is False, "another approval's notice is left alone"
    [newer] = pairing.notices()
    assert (newer.approved_at, newer.held, newer.told) == (at(1), (), False)


def test_messages_held_through_four_instances_at_once_are_all_kept(backend: Backend) -> None:
    """One sender's messages handled by several instances at the same moment: holding takes
    the state alone, so no instance's write replaces another's."""
    clock = FakeClock(T0)
    settings = PairingSettings(hold_messages=20, max_pending_per_provider=100)
    stores = [backend.open()] + [backend.other() for _ in range(3)]
    services = [PairingService(s, clock=clock, settings=settings) for s in stores]
    services[0].request("whatsapp", "15550001", text="first")

    def write(index: int) -> None:
        for n in range(3):
            services[index].request("whatsapp", "15550001", text=f"{index}-{n}")

    _at_once(4, write)
    with backend.other().transaction() as txn:
        [mine] = txn.requests("whatsapp")
    assert texts_of(mine.held)[0] == "first"
    written = [f"{i}-{n}" for i in range(4) for n in range(3)]
    assert sorted(texts_of(mine.held)[1:]) == sorted(written)
    for index in range(4):  # each instance's own messages kept in the order it wrote them
        mine_only = [t for t in texts_of(mine.held) if t.startswith(f"{index}-")]
        assert mine_only == [f"{index}-{n}" for n in range(3)]
