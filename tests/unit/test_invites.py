"""One-time node invites (bot/services/nodes.py, bot/core/invites.py) over every store
backend, with a fake clock: made, spent once, refused when used, expired or unknown, pruned,
and their secret nowhere but in the setup code."""

from __future__ import annotations

import base64
import json
import logging
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bot.core import codes
from bot.core.clock import FakeClock
from bot.core.errors import AlreadyPairedError, InviteRefusedError, RateLimitedError
from bot.core.invites import CODE_PREFIX, GatewayAddress, SetupCode, parse_fingerprint
from bot.core.protocols import StateStore
from bot.services import keys
from bot.services.nodes import NodeService, NodeSettings
from tests.backends import Backend
from tests.unit.test_nodes import files_containing, node_events

PIN = "sha256:" + "5f" * 32
HERE = GatewayAddress(url="wss://192.168.1.20:18789", fingerprint=PIN)


def invite_events(store: StateStore) -> list[tuple[object, ...]]:
    return [
        (r["event"], r["actor"], r["subject"], r.get("requestId"), r["outcome"], r.get("reason"))
        for r in store.read_audit()
        if r["event"] == "node.invite"
    ]


# --- the setup code ------------------------------------------------------------------------------


def test_a_setup_code_carries_the_url_the_pin_and_the_secret_and_reads_back() -> None:
    code = SetupCode(address=HERE, secret=codes.new_token())
    text = code.text
    assert text.startswith(CODE_PREFIX)
    assert text.split() == [text], "one word: copied, typed and scanned whole"
    assert SetupCode.parse(text) == code
    assert SetupCode.parse(f"  {text[:40]}\n{text[40:]} ") == code, "line breaks are ignored"
    assert code.secret not in repr(code)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("nonsense", "not a pairbot setup code"),
        (CODE_PREFIX + "%%%", "cut short or mistyped"),
        ({"v": 2, "url": "wss://h:1", "fingerprint": "", "secret": "a" * 43}, "version"),
        ({"v": 1, "url": "https://h", "fingerprint": "", "secret": "a" * 43}, "ws:// or wss://"),
        ({"v": 1, "url": "ws://h:1", "fingerprint": PIN, "secret": "a" * 43}, "without TLS"),
        ({"v": 1, "url": "wss://h:1", "fingerprint": "sha256:12", "secret": "a" * 43}, "64 hex"),
        ({"v": 1, "url": "wss://h:1", "fingerprint": "", "secret": "short"}, "secret"),
    ],
)
def test_a_bad_setup_code_is_one_line_that_never_quotes_it(body: object, says: str) -> None:
    if isinstance(body, dict):
        raw = json.dumps(body).encode()
        text = CODE_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    else:
        text = str(body)
    with pytest.raises(ValueError, match=says) as bad:
        SetupCode.parse(text)
    assert "\n" not in str(bad.value)
    assert "a" * 43 not in str(bad.value)
    assert text not in str(bad.value)


def test_the_fingerprint_has_one_written_form() -> None:
    assert parse_fingerprint(":".join(["5F"] * 32)) == PIN


# --- making one ----------------------------------------------------------------------------------


def test_an_invite_stores_only_a_hash_of_a_256_bit_secret_and_is_audited(
    nodes: NodeService, store: StateStore, clock: FakeClock, backend: Backend
) -> None:
    made = nodes.invite(HERE, actor="owner:telegram:1", name="Pixel 9")
    secret = made.code.secret
    assert len(base64.urlsafe_b64decode(secret + "=")) * 8 == 256
    assert made.code.address == HERE
    assert made.invite.expires_at == clock.now() + timedelta(minutes=10)
    assert made.invite.secret_hash == codes.hash_token(secret)
    assert secret not in repr(made)
    assert secret not in repr(made.invite)
    assert [i.invite_id for i in nodes.invites()] == [made.invite.invite_id]
    assert invite_events(store) == [
        ("node.invite", "owner:telegram:1", "Pixel 9", made.invite.invite_id, "created", None)
    ]
    for shown in (secret, made.code.text):
        assert shown not in json.dumps(store.read_audit())
        if backend.name == "json":
            assert files_containing(backend.state_dir, shown) == []


@pytest.mark.parametrize("lasting", [timedelta(seconds=59), timedelta(days=1, seconds=1)])
def test_how_long_an_invite_lasts_is_bounded(nodes: NodeService, lasting: timedelta) -> None:
    with pytest.raises(ValueError, match="must be from 1m to 1d"):
        nodes.invite(HERE, actor="owner", lasting=lasting)
    assert nodes.invites() == []


def test_live_invites_are_capped(store: StateStore, clock: FakeClock) -> None:
    nodes = NodeService(store, clock=clock, settings=NodeSettings(max_invites=2))
    nodes.invite(HERE, actor="owner")
    nodes.invite(HERE, actor="owner")
    with pytest.raises(RateLimitedError, match="2 invites are live"):
        nodes.invite(HERE, actor="owner")
    clock.advance(timedelta(minutes=10))  # both expired: room again
    nodes.invite(HERE, actor="owner")
    assert len(nodes.invites()) == 1


# --- joining with one ----------------------------------------------------------------------------


def test_a_valid_invite_pairs_the_node_at_once_with_its_key(
    nodes: NodeService, store: StateStore
) -> None:
    made = nodes.invite(HERE, actor="owner", name="Pixel 9")
    key = keys.public_key(Ed25519PrivateKey.generate())
    joined = nodes.join(
        "pixel-9",
        made.code.secret,
        display_name="whatever the node says",
        platform="android",
        remote="10.0.0.7",
        public_key=key,
    )
    node = nodes.paired_node("pixel-9")
    assert node is not None
    assert joined.node == node
    assert (node.display_name, node.platform) == ("Pixel 9", "android")
    assert keys.key_of(node.extra) == key
    assert codes.token_matches(joined.token, node.token_hash)
    invite_id = made.invite.invite_id
    assert joined.request.request_id == invite_id
    assert nodes.invites() == []
    assert node_events(store)[-2:] == [
        ("node.invite", "remote:10.0.0.7", "pixel-9", invite_id, "used"),
        ("node.approve", f"invite:{invite_id}", "pixel-9", invite_id, "approved"),
    ]


def test_an_invite_pairs_one_node_and_then_nothing(nodes: NodeService, store: StateStore) -> None:
    secret = nodes.invite(HERE, actor="owner").code.secret
    nodes.join("pixel-9", secret, remote="10.0.0.7")
    with pytest.raises(InviteRefusedError, match="not valid") as refused:
        nodes.join("tablet", secret, remote="10.0.0.8")
    assert refused.value.reason == "used"
    assert [n.node_id for n in nodes.paired()] == ["pixel-9"]
    assert invite_events(store)[-1][1:] == (
        "remote:10.0.0.8",
        "tablet",
        invite_events(store)[0][3],
        "refused",
        "used",
    )


def test_an_invite_is_good_until_its_last_second(
    nodes: NodeService, store: StateStore, clock: FakeClock
) -> None:
    early = nodes.invite(HERE, actor="owner", lasting=timedelta(minutes=2)).code.secret
    late = nodes.invite(HERE, actor="owner", lasting=timedelta(minutes=2)).code.secret
    clock.advance(timedelta(minutes=2) - timedelta(seconds=1))
    nodes.join("in-time", early)
    clock.advance(timedelta(seconds=1))
    with pytest.raises(InviteRefusedError) as refused:
        nodes.join("too-late", late)
    assert refused.value.reason == "expired"
    assert [n.node_id for n in nodes.paired()] == ["in-time"]
    outcomes = [(e[4], e[5]) for e in invite_events(store)]
    assert outcomes[-2:] == [("expired", None), ("refused", "expired")]
    with pytest.raises(InviteRefusedError) as again:  # dropped now: unknown
        nodes.join("too-late", late)
    assert again.value.reason == "unknown"


def test_an_unknown_secret_pairs_nothing_and_the_answer_is_the_same(
    nodes: NodeService, store: StateStore
) -> None:
    nodes.invite(HERE, actor="owner")
    with pytest.raises(InviteRefusedError) as unknown:
        nodes.join("pixel-9", codes.new_token(), remote="10.0.0.9")
    assert unknown.value.reason == "unknown"
    assert nodes.paired() == []
    assert invite_events(store)[-1] == (
        "node.invite",
        "remote:10.0.0.9",
        "pixel-9",
        None,
        "refused",
        "unknown",
    )
    assert len(nodes.invites()) == 1, "a wrong guess spends no invite"


def test_a_paired_node_id_is_refused_and_the_invite_kept(
    nodes: NodeService, store: StateStore
) -> None:
    first = nodes.invite(HERE, actor="owner").code.secret
    second = nodes.invite(HERE, actor="owner").code.secret
    nodes.join("pixel-9", first)
    with pytest.raises(AlreadyPairedError):
        nodes.join("pixel-9", second)
    assert len(nodes.invites()) == 1
    nodes.join("tablet", second)
    assert sorted(n.node_id for n in nodes.paired()) == ["pixel-9", "tablet"]


def test_joining_supersedes_requests_for_the_same_node_id(nodes: NodeService) -> None:
    asked = nodes.request("pixel-9", remote="10.0.0.5")
    joined = nodes.join("pixel-9", nodes.invite(HERE, actor="owner").code.secret)
    assert [r.request_id for r in joined.superseded] == [asked.request.request_id]
    assert nodes.pending() == []


def test_the_prune_drops_expired_invites_and_audits_each_unused_one_once(
    nodes: NodeService, store: StateStore, clock: FakeClock
) -> None:
    used = nodes.invite(HERE, actor="owner")
    unused = nodes.invite(HERE, actor="owner", name="Tablet")
    nodes.join("pixel-9", used.code.secret)
    clock.advance(timedelta(minutes=10))
    nodes.prune()
    nodes.prune()
    with store.transaction() as txn:
        assert txn.invites() == []
    expired = [e for e in invite_events(store) if e[4] == "expired"]
    assert expired == [
        ("node.invite", "system:scheduler", "Tablet", unused.invite.invite_id, "expired", None)
    ]


def test_the_secret_is_in_no_log_line(
    nodes: NodeService, caplog: pytest.LogCaptureFixture, state_dir: Path
) -> None:
    with caplog.at_level(logging.DEBUG):
        made = nodes.invite(HERE, actor="owner")
        nodes.join("pixel-9", made.code.secret)
        with pytest.raises(InviteRefusedError) as refused:
            nodes.join("tablet", made.code.secret)
    for shown in made.secrets:
        assert shown not in caplog.text
        assert shown not in str(refused.value)
