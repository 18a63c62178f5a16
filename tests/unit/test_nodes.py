"""Node pairing rules (bot/services/nodes.py) over every store backend, with a fake clock."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bot.core import codes
from bot.core.clock import FakeClock
from bot.core.errors import (
    AlreadyPairedError,
    RateLimitedError,
    UnknownRequestError,
    UnknownSubjectError,
    WrongCredentialError,
)
from bot.core.models import NodeDecision, NodeVerdict
from bot.core.protocols import StateStore
from bot.services import keys
from bot.services.keys import KeyProof
from bot.services.nodes import NodeService, NodeSettings
from tests.backends import Backend
from tests.helpers import OWNER, SECOND

TTL = timedelta(minutes=5)


def files_containing(state_dir: Path, needle: str) -> list[str]:
    return sorted(
        str(p.relative_to(state_dir))
        for p in state_dir.rglob("*")
        if p.is_file() and needle.encode() in p.read_bytes()
    )


def node_events(store: StateStore) -> list[tuple[object, ...]]:
    return [
        (r["event"], r["actor"], r["subject"], r.get("requestId"), r["outcome"])
        for r in store.read_audit()
        if str(r["event"]).startswith("node.")
    ]


# --- request --------------------------------------------------------------------------------


def test_request_is_pending_with_a_random_id(nodes: NodeService, clock: FakeClock) -> None:
    ask = nodes.request("laptop", display_name="Ann's laptop", platform="linux", version="1.2")
    other = nodes.request("phone")

    assert ask.created is True
    assert ask.conflicts == ()
    req = ask.request
    assert (req.node_id, req.display_name, req.platform, req.version, req.created_at) == (
        "laptop",
        "Ann's laptop",
        "linux",
        "1.2",
        clock.now(),
    )
    assert len(req.request_id) == 10
    assert set(req.request_id) <= set(codes.ALPHABET)
    assert other.request.request_id != req.request_id
    assert nodes.pending() == [req, other.request]


def test_request_id_is_drawn_until_unique(
    nodes: NodeService, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn = iter(["AAAAA22222", "AAAAA22222", "BBBBB33333"])
    monkeypatch.setattr(codes, "new_request_id", lambda: next(drawn))

    first = nodes.request("laptop").request
    second = nodes.request("phone").request

    assert (first.request_id, second.request_id) == ("AAAAA22222", "BBBBB33333")


def test_a_second_asker_gets_its_own_request_marked_as_a_conflict(
    nodes: NodeService, clock: FakeClock, store: StateStore
) -> None:
    first = nodes.request("laptop", display_name="Laptop", remote="10.0.0.5")
    clock.advance(TTL - SECOND)

    second = nodes.request("laptop", display_name="Renamed", remote="10.0.0.9")

    assert second.created is True
    assert second.request.request_id != first.request.request_id
    assert second.request.display_name == "Renamed"
    assert second.conflicts == (first.request,)
    assert second.pickup != first.pickup
    assert nodes.pending() == [first.request, second.request], "the first is left as it was"
    assert [e[4] for e in node_events(store)] == ["pending", "conflict"]


@pytest.mark.json_files
def test_the_pickup_secret_is_stored_only_as_a_hash(nodes: NodeService, state_dir: Path) -> None:
    ask = nodes.request("laptop")
    assert ask.pickup is not None

    assert files_containing(state_dir, ask.pickup) == []


def test_each_pickup_secret_claims_its_own_request(nodes: NodeService) -> None:
    first = nodes.request("laptop")
    second = nodes.request("laptop")
    assert first.pickup is not None
    assert second.pickup is not None
    assert len(base64.urlsafe_b64decode(first.pickup + "=" * (-len(first.pickup) % 4))) == 32

    assert "pickup" not in json.dumps(first.request.as_json()).lower()
    assert nodes.claim("laptop", first.pickup) == first.request
    assert nodes.claim("laptop", second.pickup) == second.request
    wrong_last = "B" if first.pickup.endswith("A") else "A"  # 1 pickup in 16 ends in "A"
    assert nodes.claim("laptop", first.pickup[:-1] + wrong_last) is None
    assert nodes.claim("phone", first.pickup) is None, "bound to its node id"


def test_a_pickup_stops_working_when_its_request_expires(
    nodes: NodeService, clock: FakeClock
) -> None:
    ask = nodes.request("laptop")
    assert ask.pickup is not None
    clock.advance(TTL)

    assert nodes.claim("laptop", ask.pickup) is None


def test_approving_one_asker_supersedes_the_others_for_that_node_id(
    nodes: NodeService, store: StateStore
) -> None:
    real = nodes.request("laptop", remote="10.0.0.5").request
    fake = nodes.request("laptop", remote="10.0.0.66").request
    other = nodes.request("phone").request

    approval = nodes.approve(real.request_id, actor=OWNER)

    assert approval.request == real
    assert approval.superseded == (fake,)
    assert nodes.pending() == [other]
    with pytest.raises(UnknownRequestError):
        nodes.approve(fake.request_id, actor=OWNER)
    assert (
        "node.reject",
        "system:superseded",
        "laptop",
        fake.request_id,
        "superseded",
    ) in node_events(store)


def test_an_approval_becomes_the_decisions_its_askers_hear(nodes: NodeService) -> None:
    real = nodes.request("laptop", remote="10.0.0.5").request
    fake = nodes.request("laptop", remote="10.0.0.66").request

    approval = nodes.approve(real.request_id, actor=OWNER)
    superseded, approved = approval.decisions()

    assert superseded == NodeDecision.on_request(fake, NodeVerdict.SUPERSEDED)
    assert (superseded.verdict.told, superseded.token) == ("rejected", None)
    assert (approved.verdict, approved.request_id, approved.node_id) == (
        NodeVerdict.APPROVED,
        real.request_id,
        "laptop",
    )
    assert approved.verdict.told == "approved"
    assert approved.token == approval.token
    assert approved.pickup_hash == real.pickup_hash
    assert approval.token not in repr(approved)
    assert real.pickup_hash not in repr(approved)


@pytest.mark.parametrize(
    ("verdict", "request_id", "token"),
    [
        (NodeVerdict.APPROVED, "R1", None),
        (NodeVerdict.REJECTED, "R1", "t" * 43),
        (NodeVerdict.EXPIRED, None, None),
        (NodeVerdict.REVOKED, "R1", None),
    ],
    ids=[
        "approved-without-token",
        "token-on-reject",
        "expired-without-request",
        "revoked-request",
    ],
)
def test_a_node_decision_carries_a_token_only_when_it_approves(
    verdict: NodeVerdict, request_id: str | None, token: str | None
) -> None:
    with pytest.raises(ValueError, match="node decision"):
        NodeDecision(verdict=verdict, node_id="laptop", request_id=request_id, token=token)


def test_a_revocation_names_the_node_only() -> None:
    decision = NodeDecision.revocation("laptop")
    assert (decision.verdict, decision.node_id, decision.request_id, decision.token) == (
        NodeVerdict.REVOKED,
        "laptop",
        None,
        None,
    )


@pytest.mark.parametrize(
    ("node_id", "field", "value", "named"),
    [
        ("", "display_name", "", "nodeId"),
        ("   ", "display_name", "", "nodeId"),
        ("\x00\x1b", "display_name", "", "nodeId"),
        ("laptop", "display_name", "x" * 1000, "displayName"),
        ("laptop", "platform", "x" * 1000, "platform"),
        ("laptop", "version", "x" * 129, "version"),
        ("laptop", "remote", "x" * 1000, "remote"),
    ],
    ids=[
        "empty-id",
        "blank-id",
        "control-only-id",
        "long-name",
        "long-platform",
        "long-version",
        "long-remote",
    ],
)
def test_bad_input_is_a_value_error(
    nodes: NodeService, node_id: str, field: str, value: str, named: str
) -> None:
    given: dict[str, Any] = {field: value}
    with pytest.raises(ValueError, match=named):
        nodes.request(node_id, **given)
    assert nodes.pending() == []


def test_bad_input_is_refused_even_while_pending(nodes: NodeService) -> None:
    nodes.request("laptop")

    with pytest.raises(ValueError, match="displayName"):
        nodes.request("laptop", display_name="x" * 1000)


def test_fields_at_the_limit_are_kept(nodes: NodeService) -> None:
    ask = nodes.request("laptop", display_name="n" * 128)

    assert ask.request.display_name == "n" * 128


# --- expiry ---------------------------------------------------------------------------------


def test_approve_works_just_before_the_ttl(nodes: NodeService, clock: FakeClock) -> None:
    req = nodes.request("laptop").request
    clock.advance(TTL - SECOND)

    assert nodes.approve(req.request_id, actor=OWNER).node.node_id == "laptop"


def test_expired_request_cannot_be_approved(
    nodes: NodeService, clock: FakeClock, store: StateStore
) -> None:
    req = nodes.request("laptop").request
    clock.advance(TTL)

    with pytest.raises(UnknownRequestError):
        nodes.approve(req.request_id, actor=OWNER)

    assert nodes.paired() == []
    assert nodes.pending() == []
    assert ("node.expire", "system:expiry", "laptop", req.request_id, "expired") in node_events(
        store
    )


def test_prune_removes_expired_requests_and_audits(
    nodes: NodeService, clock: FakeClock, store: StateStore, backend: Backend
) -> None:
    old = nodes.request("laptop").request
    clock.advance(TTL - timedelta(minutes=1))
    young = nodes.request("phone").request
    clock.advance(timedelta(minutes=1))

    assert nodes.prune() == [old]
    assert nodes.prune() == []

    assert nodes.pending() == [young]
    with backend.other().transaction() as txn:  # what the next process reads
        assert [r.request_id for r in txn.node_requests()] == [young.request_id]
    assert node_events(store)[-1] == (
        "node.expire",
        "system:scheduler",
        "laptop",
        old.request_id,
        "expired",
    )


def test_get_pending_sees_live_requests_only(nodes: NodeService, clock: FakeClock) -> None:
    req = nodes.request("laptop").request

    assert nodes.get_pending(req.request_id.lower()) == req
    clock.advance(TTL)
    assert nodes.get_pending(req.request_id) is None


# --- approve, verify, rotate ----------------------------------------------------------------


def test_approve_returns_a_256_bit_token_once(
    nodes: NodeService, clock: FakeClock, state_dir: Path
) -> None:
    req = nodes.request("laptop", display_name="Laptop", platform="linux").request
    clock.advance(30)

    approval = nodes.approve(req.request_id, actor=OWNER)
    node, token = approval.node, approval.token

    assert token not in repr(approval)
    assert len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) == 32
    assert node.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert (node.node_id, node.display_name, node.platform) == ("laptop", "Laptop", "linux")
    assert (node.created_at, node.approved_at) == (req.created_at, clock.now())
    assert nodes.paired() == [node]
    assert nodes.pending() == []
    with pytest.raises(UnknownRequestError):  # the request is consumed: no second token
        nodes.approve(req.request_id, actor=OWNER)


@pytest.mark.json_files
def test_only_the_token_hash_is_stored(nodes: NodeService, state_dir: Path) -> None:
    req = nodes.request("laptop").request
    approval = nodes.approve(req.request_id, actor=OWNER)
    node, token = approval.node, approval.token

    assert files_containing(state_dir, token) == []
    assert files_containing(state_dir, token[:16]) == []
    paired = json.loads((state_dir / "nodes" / "paired.json").read_text())
    assert [n["tokenHash"] for n in paired["nodes"]] == [node.token_hash]


def test_verify_accepts_only_the_current_token(nodes: NodeService) -> None:
    req = nodes.request("laptop").request
    approval = nodes.approve(req.request_id, actor=OWNER)
    node, token = approval.node, approval.token

    assert nodes.verify("laptop", token) == node
    assert nodes.verify("laptop", codes.new_token()) is None
    assert nodes.verify("laptop", token[:-1]) is None
    assert nodes.verify("phone", token) is None


def test_verify_reads_what_another_process_wrote(
    nodes: NodeService, clock: FakeClock, backend: Backend
) -> None:
    req = nodes.request("laptop").request
    token = nodes.approve(req.request_id, actor=OWNER).token

    other = NodeService(backend.other(), clock=clock)

    assert other.verify("laptop", token) is not None


def test_a_paired_node_id_is_refused_without_proof_of_its_token(
    nodes: NodeService, store: StateStore
) -> None:
    first = nodes.request("laptop").request
    token = nodes.approve(first.request_id, actor=OWNER).token
    before = node_events(store)

    with pytest.raises(AlreadyPairedError, match="already paired"):
        nodes.request("laptop", display_name="Evil twin")
    with pytest.raises(WrongCredentialError):
        nodes.request("laptop", proof=codes.new_token())
    with pytest.raises(WrongCredentialError):
        nodes.request("laptop", proof=token[:-1])

    assert nodes.pending() == []
    refused = [
        ("node.request", "remote:?", "laptop", None, outcome)
        for outcome in ("already_paired", "wrong_token", "wrong_token")
    ]
    assert node_events(store) == before + refused, "each refusal audited, nothing else"
    assert nodes.verify("laptop", token) is not None, "the real node keeps working"


def test_re_pairing_with_proof_rotates_the_token(
    nodes: NodeService, clock: FakeClock, store: StateStore
) -> None:
    first = nodes.request("laptop").request
    approval = nodes.approve(first.request_id, actor=OWNER)
    node, old_token = approval.node, approval.token
    clock.advance(3600)

    ask = nodes.request("laptop", version="2.0", proof=old_token)
    assert ask.created is True
    assert ask.request.is_repair is True
    assert ask.request.as_json()["isRepair"] is True
    rotated_by = nodes.approve(ask.request.request_id, actor=OWNER)
    rotated, new_token = rotated_by.node, rotated_by.token

    assert new_token != old_token
    assert nodes.verify("laptop", old_token) is None
    assert nodes.verify("laptop", new_token) == rotated
    assert nodes.paired() == [rotated]
    assert (rotated.created_at, rotated.approved_at, rotated.version) == (
        node.created_at,
        clock.now(),
        "2.0",
    )
    assert [e[4] for e in node_events(store) if e[0] in ("node.request", "node.approve")] == [
        "pending",
        "approved",
        "repair",
        "rotated",
    ]


@pytest.mark.json_files
def test_a_request_made_before_the_node_was_paired_cannot_take_it_over(
    nodes: NodeService, backend: Backend, state_dir: Path, clock: FakeClock
) -> None:
    mine = nodes.request("laptop").request
    # Another process pairs the node behind this one's back (e.g. an edited state dir):
    other = NodeService(backend.other(), clock=clock)
    token = other.approve(mine.request_id, actor=OWNER).token
    late = nodes.request("laptop", proof=token).request
    store_requests = json.loads((state_dir / "nodes" / "pending.json").read_text())
    store_requests["requests"].append(
        {**store_requests["requests"][0], "requestId": "LATE222222", "isRepair": False}
    )
    (state_dir / "nodes" / "pending.json").write_text(json.dumps(store_requests))

    with pytest.raises(AlreadyPairedError, match="revoke it first"):
        nodes.approve("LATE222222", actor=OWNER)
    assert nodes.verify("laptop", token) is not None
    assert [r.request_id for r in nodes.pending()] == [late.request_id, "LATE222222"]


@pytest.mark.parametrize("typed", ["lower", "padded"])
def test_request_ids_match_case_insensitively(nodes: NodeService, typed: str) -> None:
    req = nodes.request("laptop").request
    wanted = req.request_id.lower() if typed == "lower" else f"  {req.request_id}\n"

    assert nodes.approve(wanted, actor=OWNER).node.node_id == "laptop"


def test_approve_of_an_unknown_request(nodes: NodeService) -> None:
    nodes.request("laptop")

    with pytest.raises(UnknownRequestError):
        nodes.approve("ZZZZZ99999", actor=OWNER)
    assert nodes.paired() == []


# --- reject, revoke -------------------------------------------------------------------------


def test_reject_drops_the_request_and_pairs_nothing(nodes: NodeService, store: StateStore) -> None:
    req = nodes.request("laptop").request

    assert nodes.reject(req.request_id.lower(), actor=OWNER) == req

    assert nodes.pending() == []
    assert nodes.paired() == []
    with pytest.raises(UnknownRequestError):
        nodes.reject(req.request_id, actor=OWNER)
    assert node_events(store)[-1] == ("node.reject", OWNER, "laptop", req.request_id, "rejected")


def test_revoke_stops_the_token_at_once(
    nodes: NodeService, store: StateStore, backend: Backend, clock: FakeClock
) -> None:
    req = nodes.request("laptop").request
    token = nodes.approve(req.request_id, actor=OWNER).token
    other_process = NodeService(backend.other(), clock=clock)
    assert other_process.verify("laptop", token) is not None

    revoked = nodes.revoke("laptop", actor=OWNER)

    assert revoked.node_id == "laptop"
    assert nodes.verify("laptop", token) is None
    assert other_process.verify("laptop", token) is None
    assert nodes.paired() == []
    assert node_events(store)[-1] == ("node.revoke", OWNER, "laptop", None, "revoked")


def test_revoke_of_an_unknown_node(nodes: NodeService) -> None:
    with pytest.raises(UnknownSubjectError):
        nodes.revoke("laptop", actor=OWNER)


def test_touch_records_the_last_connection(nodes: NodeService, clock: FakeClock) -> None:
    req = nodes.request("laptop").request
    nodes.approve(req.request_id, actor=OWNER)
    clock.advance(90)

    nodes.touch("laptop")
    nodes.touch("phone")  # unknown: nothing to record

    assert [n.last_connected_at for n in nodes.paired()] == [clock.now()]


def test_repair_without_details_keeps_the_paired_nodes_name(nodes, clock):
    first = nodes.request("pixel-9", display_name="Pixel 9", platform="android", version="1")
    token = nodes.approve(first.request.request_id, actor="owner").token
    again = nodes.request("pixel-9", proof=token)
    node = nodes.approve(again.request.request_id, actor="owner").node
    assert (node.display_name, node.platform, node.version) == ("Pixel 9", "android", "1")


# --- caps, checked and written in one transaction -------------------------------------------


def test_caps_per_address_per_node_and_in_all(store: StateStore, clock: FakeClock) -> None:
    nodes = NodeService(
        store,
        clock=clock,
        settings=NodeSettings(max_pending_per_address=2, max_pending_per_node=2, max_pending=4),
    )
    nodes.request("a", remote="10.0.0.1")
    nodes.request("b", remote="10.0.0.1")
    with pytest.raises(RateLimitedError, match="address"):
        nodes.request("c", remote="10.0.0.1")
    nodes.request("a", remote="10.0.0.2")
    with pytest.raises(RateLimitedError, match="node id"):
        nodes.request("a", remote="10.0.0.3")
    nodes.request("d", remote="10.0.0.3")
    with pytest.raises(RateLimitedError, match=r"too many pending requests$"):
        nodes.request("e", remote="10.0.0.4")
    assert len(nodes.pending()) == 4


def test_concurrent_askers_never_overshoot_the_caps(backend: Backend, clock: FakeClock) -> None:
    """100 askers at once, each through its own store (as separate processes would be)."""
    settings = NodeSettings(max_pending_per_address=3, max_pending=50)
    start = threading.Barrier(100)
    outcomes: list[str] = []

    def ask(i: int) -> None:
        service = NodeService(backend.other(), clock=clock, settings=settings)
        start.wait()
        try:
            service.request(f"node-{i}", remote=f"10.0.{i % 20}.1")
            outcomes.append("ok")
        except RateLimitedError:
            outcomes.append("limited")

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    pending = NodeService(backend.other(), clock=clock).pending()
    assert len(pending) == outcomes.count("ok") == 50
    per_address = Counter(r.remote for r in pending)
    assert max(per_address.values()) <= 3


def test_a_public_key_is_kept_with_the_request_and_the_node_which_then_signs(
    nodes: NodeService,
) -> None:
    key = Ed25519PrivateKey.generate()
    public = keys.public_key(key)
    req = nodes.request("pixel", public_key=public).request
    kept = nodes.get_pending(req.request_id)
    assert kept is not None
    assert kept.extra["publicKey"] == public
    token = nodes.approve(req.request_id, actor=OWNER).token
    paired = nodes.paired_node("pixel")
    assert paired is not None
    assert paired.extra["publicKey"] == public
    assert nodes.verify("pixel", token) is None, "a keyed node's token opens nothing"

    message = keys.signed_message(keys.CONNECT, nonce="n1", node_id="pixel", fingerprint="")
    good = KeyProof(nonce="n1", fingerprint="", signature=keys.sign(key, message))
    assert nodes.verify_signature("pixel", good) == paired
    for wrong in (
        KeyProof(nonce="n2", fingerprint="", signature=good.signature),
        KeyProof(nonce="n1", fingerprint="sha256:" + "0" * 64, signature=good.signature),
    ):
        assert nodes.verify_signature("pixel", wrong) is None
    assert nodes.verify_signature("other", good) is None


def test_a_public_key_that_is_not_one_is_a_value_error(nodes: NodeService) -> None:
    with pytest.raises(ValueError, match="publicKey"):
        nodes.request("pixel", public_key="not-a-key")
    assert nodes.pending() == []
