"""Owner commands and the lockout (bot/services/owner.py), on the real services and every
store."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

from bot.core import messages
from bot.core.clock import FakeClock
from bot.core.codes import format_code
from bot.core.commands import COMMANDS, Command, parse
from bot.core.invites import GatewayAddress, SetupCode
from bot.core.models import NodeRequest, PendingRequest
from bot.core.protocols import StateStore
from bot.services.nodes import NodeService
from bot.services.owner import (
    LOCKOUT,
    MAX_FAILURES,
    MAX_LOCKOUT,
    LockedOut,
    Lockout,
    OwnerCommands,
    OwnerFailure,
    OwnerReply,
)
from bot.services.pairing import PairingService, PairingSettings
from stores.cluster import LocalCluster
from tests.providers.platforms import FACTS

OWNER = "owner:telegram:111"
OTHER_OWNER = "owner:telegram:222"
WRONG = "ZZZZ2222"  # well-formed, never live (a live code colliding is a 2^-40 event)
SECOND = timedelta(seconds=1)
LOCKED_15M = "Too many wrong codes: approvals are paused for 15m."
UNKNOWN_TEXT = "No pending request has that code (check it, or see /pending)."


@pytest.fixture
def owner(pairing: PairingService, nodes: NodeService, clock: FakeClock) -> OwnerCommands:
    return OwnerCommands(pairing, nodes, clock=clock, cluster=LocalCluster())


def stranger(
    pairing: PairingService, sender: str = "4242", name: str = "Alice", provider: str = "telegram"
) -> PendingRequest:
    result = pairing.request(provider, sender, {"firstName": name} if name else {})
    assert result.request is not None
    return result.request


def node(nodes: NodeService, node_id: str = "node-1", name: str = "Kitchen Pi") -> NodeRequest:
    return nodes.request(node_id, display_name=name, platform="linux", version="1.0").request


def run(owner: OwnerCommands, text: str, *, actor: str, pressed: bool = False) -> OwnerReply:
    """Run ``text`` as the app does: parsed once, then the typed command."""
    return owner.run(parse(text), actor=actor, pressed=pressed)


def fail(owner: OwnerCommands, times: int, actor: str = OWNER) -> list[OwnerReply]:
    return [run(owner, f"/approve {WRONG}", actor=actor) for _ in range(times)]


# --- /approve and /reject --------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    [
        "/approve {code}",
        "/approve {lower}",
        "/approve {dashed}",
        "/approve {lower_dashed}",
        "/approve {head} {tail}",
        "/approve@my_bot {code}",
        "   /approve   {code}   ",
        "/APPROVE {code}",
    ],
    ids=[
        "exact",
        "lowercase",
        "dashed",
        "lower-dashed",
        "split",
        "bot-suffix",
        "spaces",
        "upper-command",
    ],
)
def test_approve_code_variants(owner: OwnerCommands, pairing: PairingService, typed: str) -> None:
    req = stranger(pairing)
    text = typed.format(
        code=req.code,
        lower=req.code.lower(),
        dashed=format_code(req.code),
        lower_dashed=format_code(req.code).lower(),
        head=req.code[:4],
        tail=req.code[4:],
    )
    reply = run(owner, text, actor=OWNER)
    assert reply == OwnerReply(
        text="Approved Telegram sender 4242 (Alice, as given by the sender). They have been told.",
        approved=req,
    )
    assert pairing.is_allowed("telegram", "4242")
    assert pairing.pending() == []


@pytest.mark.parametrize(
    ("typed", "length", "said"),
    [
        ("/approve {code} 7d", timedelta(days=7), "2026-01-08 12:00 UTC, 7d left"),
        ("/approve {head} {tail} 24H", timedelta(hours=24), "2026-01-02 12:00 UTC, 1d left"),
        ("/approve {code} 2s", timedelta(seconds=2), "2026-01-01 12:00:02 UTC, 2s left"),
    ],
    ids=["week", "split-code-upper-unit", "seconds"],
)
def test_approve_for_a_time(
    owner: OwnerCommands,
    pairing: PairingService,
    store: StateStore,
    clock: FakeClock,
    typed: str,
    length: timedelta,
    said: str,
) -> None:
    req = stranger(pairing)
    reply = run(
        owner, typed.format(code=req.code, head=req.code[:4], tail=req.code[4:]), actor=OWNER
    )
    assert reply == OwnerReply(
        text=f"Approved Telegram sender 4242 (Alice, as given by the sender) until {said}. "
        "They have been told.",
        approved=req,
    )
    assert store.allowed_until("telegram", "4242") == clock.now() + length
    clock.advance(length)
    assert not pairing.is_allowed("telegram", "4242")


def test_approve_with_a_bad_duration_is_usage_and_approves_nothing(
    owner: OwnerCommands, pairing: PairingService
) -> None:
    req = stranger(pairing)
    reply = run(owner, f"/approve {req.code} 7x", actor=OWNER)
    assert (reply.ok, reply.failure) == (False, OwnerFailure.USAGE)
    assert reply.text.startswith("Not a duration: '7x'")
    assert pairing.pending() == [req]
    assert req.code not in reply.text


def test_an_approval_where_strangers_get_silence_says_the_sender_was_not_told(
    pairing: PairingService, nodes: NodeService, clock: FakeClock
) -> None:
    quiet = OwnerCommands(pairing, nodes, clock=clock, cluster=LocalCluster(), silent=["signal"])
    on_signal = stranger(pairing, sender="+15550001", name="", provider="signal")
    on_telegram = stranger(pairing)
    assert run(quiet, f"/approve {on_signal.code}", actor=OWNER).text == (
        "Approved Signal sender +15550001. They were not told (silent mode)."
    )
    assert run(quiet, f"/approve {on_telegram.code}", actor=OWNER).text.endswith(
        "They have been told."
    )


def test_an_approval_counts_the_messages_held_and_never_shows_them(
    store: StateStore, nodes: NodeService, clock: FakeClock
) -> None:
    pairing = PairingService(store, clock=clock, settings=PairingSettings(hold_messages=5))
    owner = OwnerCommands(pairing, nodes, clock=clock, cluster=LocalCluster())
    req = pairing.request("telegram", "4242", {"firstName": "Alice"}, text="my secret").request
    pairing.request("telegram", "4242", text="second")
    assert req is not None
    reply = run(owner, f"/approve {req.code}", actor=OWNER)
    assert reply.text == (
        "Approved Telegram sender 4242 (Alice, as given by the sender). They have been told. "
        "The 2 messages they wrote while waiting go to the handler now."
    )
    assert reply.approved is not None
    assert [m.text for m in reply.approved.held] == ["my secret", "second"]


def test_reject(owner: OwnerCommands, pairing: PairingService) -> None:
    req = stranger(pairing)
    reply = run(owner, f"/reject {format_code(req.code)}", actor=OWNER)
    assert reply == OwnerReply(text="Rejected Telegram sender 4242. Their code no longer works.")
    assert not pairing.is_allowed("telegram", "4242")
    assert pairing.pending() == []
    again = run(owner, f"/approve {req.code}", actor=OWNER)
    assert (again.ok, again.failure, again.text) == (False, OwnerFailure.UNKNOWN, UNKNOWN_TEXT)


@pytest.mark.parametrize("command", ["/approve", "/reject"])
@pytest.mark.parametrize(
    "code",
    [WRONG, "hello", "ABCD-23456", "ABCD--2345", "OOOO1111"],
    ids=["unknown", "word", "too-long", "two-dashes", "ambiguous-chars"],
)
def test_unknown_code(
    owner: OwnerCommands, pairing: PairingService, command: str, code: str
) -> None:
    req = stranger(pairing)
    reply = run(owner, f"{command} {code}", actor=OWNER)
    assert reply == OwnerReply(text=UNKNOWN_TEXT, ok=False, failure=OwnerFailure.UNKNOWN)
    assert pairing.pending() == [req]
    assert not pairing.is_allowed("telegram", "4242")


@pytest.mark.parametrize("command", ["/approve", "/reject"])
def test_expired_code(
    owner: OwnerCommands, pairing: PairingService, clock: FakeClock, command: str
) -> None:
    req = stranger(pairing, sender="U012ABC", provider="slack")
    clock.advance(timedelta(hours=1))
    reply = run(owner, f"{command} {req.code}", actor=OWNER)
    assert reply == OwnerReply(
        text="The pairing request from slack sender U012ABC expired; ask them to write again "
        "for a new code.",
        ok=False,
        failure=OwnerFailure.EXPIRED,
    )
    assert not pairing.is_allowed("slack", "U012ABC")
    assert run(owner, f"{command} {req.code}", actor=OWNER).failure is OwnerFailure.UNKNOWN


def test_code_is_accepted_one_second_before_expiry(
    owner: OwnerCommands, pairing: PairingService, clock: FakeClock
) -> None:
    req = stranger(pairing)
    clock.advance(timedelta(hours=1) - SECOND)
    assert run(owner, f"/approve {req.code}", actor=OWNER).approved == req


@pytest.mark.parametrize("command", ["/approve", "/reject", "/approve@my_bot", "/reject   "])
def test_approve_without_a_code_is_usage(owner: OwnerCommands, command: str) -> None:
    word = command.split("@")[0].strip()
    usage = f"{word} CODE [DURATION]" if word == "/approve" else f"{word} CODE"
    assert run(owner, command, actor=OWNER) == OwnerReply(
        text=f"Usage: {usage}", ok=False, failure=OwnerFailure.USAGE
    )


# --- /pending ----------------------------------------------------------------------------------


def test_pending_when_nothing_is_pending(owner: OwnerCommands) -> None:
    assert run(owner, "/pending", actor=OWNER) == OwnerReply(text="Nothing is pending.")


def test_pending_lists_dm_and_node_requests(
    owner: OwnerCommands, pairing: PairingService, nodes: NodeService, clock: FakeClock
) -> None:
    alice = stranger(pairing, "4242", "Alice")
    clock.advance(timedelta(minutes=5))
    anon = stranger(pairing, "777", "")
    hostile = stranger(pairing, "888", "Eve\n/approve ABCD2345\u202e")
    kitchen = node(nodes)
    clock.advance(timedelta(minutes=1))
    assert run(owner, "/pending", actor=OWNER).text == "\n".join(
        [
            "Pairing requests (3):",
            f"{format_code(alice.code)}  Telegram 4242 (Alice), 6m ago",
            f"{format_code(anon.code)}  Telegram 777, 1m ago",
            f"{format_code(hostile.code)}  Telegram 888 (Eve /approve ABCD2345), 1m ago",
            "Node requests (1):",
            f"{kitchen.request_id}  node-1 (Kitchen Pi), 1m ago",
        ]
    )


def test_pending_with_only_nodes(owner: OwnerCommands, nodes: NodeService) -> None:
    kitchen = node(nodes, name="")
    assert run(owner, "/pending", actor=OWNER).text == (
        f"Node requests (1):\n{kitchen.request_id}  node-1, 0s ago"
    )


def test_pending_leaves_out_expired_requests(
    owner: OwnerCommands, pairing: PairingService, nodes: NodeService, clock: FakeClock
) -> None:
    stranger(pairing)
    node(nodes)
    clock.advance(timedelta(hours=1))
    assert run(owner, "/pending", actor=OWNER).text == "Nothing is pending."


# --- /allowlist and /revoke --------------------------------------------------------------------


@pytest.fixture
def with_config_allow(
    store: StateStore, clock: FakeClock, nodes: NodeService
) -> tuple[OwnerCommands, PairingService]:
    pairing = PairingService(store, clock=clock, static_allow={"telegram": ["99"]})
    return OwnerCommands(pairing, nodes, clock=clock, cluster=LocalCluster()), pairing


def test_allowlist_empty(owner: OwnerCommands) -> None:
    assert run(owner, "/allowlist", actor=OWNER) == OwnerReply(text="The allowlist is empty.")


@pytest.mark.parametrize(
    ("typed", "want"),
    [
        ("/allowlist", "Allowed: 3\nTelegram 4242\nTelegram 99 (config)\nSlack U1"),
        ("/allowlist telegram", "Allowed on Telegram: 2\nTelegram 4242\nTelegram 99 (config)"),
        ("/allowlist TELEGRAM", "Allowed on Telegram: 2\nTelegram 4242\nTelegram 99 (config)"),
        ("/allowlist slack", "Allowed on Slack: 1\nSlack U1"),
        ("/allowlist discord", "The allowlist is empty."),
        ("/allowlist myspace", "Unknown provider 'myspace'."),
        ("/allowlist " + "x" * 100, f"Unknown provider '{'x' * 19}…'."),
    ],
    ids=[
        "all",
        "telegram",
        "case-insensitive",
        "slack",
        "empty-provider",
        "unknown-provider",
        "long-provider-cut",
    ],
)
def test_allowlist(
    with_config_allow: tuple[OwnerCommands, PairingService], typed: str, want: str
) -> None:
    owner, pairing = with_config_allow
    pairing.allow("telegram", "4242", actor=OWNER)
    pairing.allow("slack", "U1", actor=OWNER)
    assert run(owner, typed, actor=OWNER) == OwnerReply(text=want)


def test_allowlist_says_when_grants_end(
    with_config_allow: tuple[OwnerCommands, PairingService], clock: FakeClock
) -> None:
    owner, pairing = with_config_allow
    pairing.allow("telegram", "4242", actor=OWNER, until=clock.now() + timedelta(days=7))
    pairing.allow("telegram", "5151", actor=OWNER, until=clock.now() + timedelta(hours=1))
    pairing.allow("telegram", "6161", actor=OWNER)
    clock.advance(timedelta(minutes=30))
    assert run(owner, "/allowlist", actor=OWNER).text == (
        "Allowed: 4\n"
        "Telegram 6161\n"
        "Telegram 99 (config)\n"
        "Telegram 5151 (until 2026-01-01 13:00 UTC, 30m left)\n"
        "Telegram 4242 (until 2026-01-08 12:00 UTC, 7d left)"
    )
    clock.advance(timedelta(minutes=30))
    assert "5151" not in run(owner, "/allowlist", actor=OWNER).text, "ended: not allowed"


SIGNAL_IDS = [f"{n:08x}-1c2d-4e5f-8a9b-0c1d2e3f4a5b" for n in range(155)]
"""155 approved Signal senders: an ACI is the longest id of the usual kinds (36 characters)."""


def test_a_long_allowlist_is_counted_and_paged_under_every_platforms_limit(
    owner: OwnerCommands, pairing: PairingService
) -> None:
    """Issue 11 (12): 155 senders answer in pages of 30, each one message everywhere."""
    for sender in SIGNAL_IDS:
        pairing.allow("signal", sender, actor=OWNER)
    smallest = min(f.max_text for f in FACTS.values() if f.max_text is not None)

    pages = [run(owner, f"/allowlist {n}", actor=OWNER).text for n in range(1, 7)]

    assert pages[0] == run(owner, "/allowlist", actor=OWNER).text
    assert pages[0].splitlines()[0] == "Allowed: 155 (page 1 of 6)"
    assert pages[0].splitlines()[-1] == "More: /allowlist 2"
    assert pages[5].splitlines()[0] == "Allowed: 155 (page 6 of 6)"
    assert "More:" not in pages[5]
    listed = [line.split()[1] for page in pages for line in page.splitlines()[1:]]
    assert [i for i in listed if i != "/allowlist"] == SIGNAL_IDS
    assert all(len(page) <= smallest for page in pages), [len(p) for p in pages]
    assert run(owner, "/allowlist signal 2", actor=OWNER).text.splitlines()[-1] == (
        "More: /allowlist signal 3"
    )
    assert run(owner, "/allowlist 7", actor=OWNER).text == (
        "The allowlist has 6 pages; the last is /allowlist 6."
    )


@pytest.mark.parametrize(
    "typed",
    [
        "/revoke",
        "/revoke telegram",
        "/revoke myspace 4242",
        "/revoke telegram 4242 extra",
        "/revoke 4242 telegram",
    ],
    ids=["bare", "no-id", "unknown-provider", "extra-arg", "swapped"],
)
def test_revoke_usage(owner: OwnerCommands, pairing: PairingService, typed: str) -> None:
    pairing.allow("telegram", "4242", actor=OWNER)
    assert run(owner, typed, actor=OWNER) == OwnerReply(
        text="Usage: /revoke PROVIDER ID", ok=False, failure=OwnerFailure.USAGE
    )
    assert pairing.is_allowed("telegram", "4242")


def test_revoke_takes_the_sender_off_the_allowlist(
    owner: OwnerCommands, pairing: PairingService
) -> None:
    req = stranger(pairing)
    run(owner, f"/approve {req.code}", actor=OWNER)
    reply = run(owner, "/revoke Telegram 4242", actor=OWNER)
    assert reply == OwnerReply(
        text="Revoked Telegram sender 4242; their next message gets a new code."
    )
    assert not pairing.is_allowed("telegram", "4242")
    assert run(owner, "/allowlist", actor=OWNER).text == "The allowlist is empty."


def test_revoke_someone_not_allowed(owner: OwnerCommands) -> None:
    assert run(owner, "/revoke telegram 555", actor=OWNER) == OwnerReply(
        text="telegram sender 555 is not in the allowlist", ok=False, failure=OwnerFailure.UNKNOWN
    )


def test_revoke_a_config_entry_says_where_it_comes_from(
    with_config_allow: tuple[OwnerCommands, PairingService],
) -> None:
    owner, pairing = with_config_allow
    assert run(owner, "/revoke telegram 99", actor=OWNER) == OwnerReply(
        text="telegram sender 99 is allowed by the config's allow_from; remove it there",
        ok=False,
        failure=OwnerFailure.IN_CONFIG,
    )
    assert pairing.is_allowed("telegram", "99")


# --- /nodes ------------------------------------------------------------------------------------


def test_nodes_overview_empty(owner: OwnerCommands) -> None:
    assert run(owner, "/nodes", actor=OWNER) == OwnerReply(
        text="Pending nodes (0):\n-\nPaired nodes (0):\n-"
    )


def test_nodes_overview(owner: OwnerCommands, nodes: NodeService, clock: FakeClock) -> None:
    paired = node(nodes, "node-1", "Kitchen Pi")
    nodes.approve(paired.request_id, actor=OWNER)
    nameless = node(nodes, "node-2", "")
    nodes.approve(nameless.request_id, actor=OWNER)
    waiting = node(nodes, "node-3", "G" * 50)
    clock.advance(timedelta(minutes=2))
    assert run(owner, "/nodes", actor=OWNER).text == "\n".join(
        [
            "Pending nodes (1):",
            f"{waiting.request_id}  node-3 ({'G' * 31}…), 2m ago",
            "Paired nodes (2):",
            "node-1 (Kitchen Pi)",
            "node-2 (no name)",
        ]
    )


@pytest.mark.parametrize("case", [str.upper, str.lower], ids=["as-shown", "lowercase"])
def test_nodes_approve_returns_a_token_that_verifies(
    owner: OwnerCommands, nodes: NodeService, case: object
) -> None:
    req = node(nodes)
    assert callable(case)
    reply = run(owner, f"/nodes approve {case(req.request_id)}", actor=OWNER)
    assert (reply.ok, reply.text, reply.failure) == (True, "Approved node node-1.", None)
    assert reply.node_approved is not None
    paired, token = reply.node_approved.node, reply.node_approved.token
    assert (paired.node_id, paired.display_name) == ("node-1", "Kitchen Pi")
    assert nodes.verify("node-1", token) == paired
    assert nodes.verify("node-1", token + "x") is None
    assert nodes.pending() == []


def test_nodes_reject(owner: OwnerCommands, nodes: NodeService) -> None:
    req = node(nodes)
    reply = run(owner, f"/nodes reject {req.request_id}", actor=OWNER)
    assert reply == OwnerReply(text="Rejected node node-1.", node_rejected=req)
    assert (nodes.pending(), nodes.paired()) == ([], [])


def test_nodes_revoke(owner: OwnerCommands, nodes: NodeService) -> None:
    req = node(nodes)
    approved = run(owner, f"/nodes approve {req.request_id}", actor=OWNER).node_approved
    assert approved is not None
    paired, token = approved.node, approved.token
    reply = run(owner, "/nodes revoke node-1", actor=OWNER)
    assert reply == OwnerReply(
        text="Revoked node node-1; its token no longer works.", node_revoked=paired
    )
    assert nodes.verify("node-1", token) is None
    assert nodes.paired() == []


HERE = GatewayAddress(url="wss://192.168.1.20:18789", fingerprint="sha256:" + "5f" * 32)


def test_nodes_invite_answers_with_a_setup_code_a_node_joins_with(
    pairing: PairingService, nodes: NodeService, clock: FakeClock
) -> None:
    owner = OwnerCommands(
        pairing, nodes, clock=clock, cluster=LocalCluster(), gateway=lambda: HERE
    )
    reply = run(owner, "/nodes invite 30m Pixel 9", actor=OWNER)
    made = reply.invitation
    assert made is not None
    assert (reply.ok, made.invite.name, made.code.address) == (True, "Pixel 9", HERE)
    assert made.invite.expires_at == clock.now() + timedelta(minutes=30)
    assert made.code.text in reply.text.splitlines(), "the code alone on its line, to copy"
    assert reply.text.startswith(f"Invite {made.invite.invite_id} for Pixel 9: ")
    assert "within 30m" in reply.text
    nodes.join("pixel-9", SetupCode.parse(made.code.text).secret)
    assert [n.display_name for n in nodes.paired()] == ["Pixel 9"]


def test_nodes_lists_the_invites_not_yet_used(
    pairing: PairingService, nodes: NodeService, clock: FakeClock
) -> None:
    owner = OwnerCommands(
        pairing, nodes, clock=clock, cluster=LocalCluster(), gateway=lambda: HERE
    )
    made = run(owner, "/nodes invite Tablet", actor=OWNER).invitation
    assert made is not None
    clock.advance(timedelta(minutes=4))
    overview = run(owner, "/nodes", actor=OWNER).text.splitlines()
    assert overview[2:4] == [
        "Invites not yet used (1):",
        f"{made.invite.invite_id} (Tablet), expires in 6m",
    ]


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("/nodes invite 30s", "Duration '30s': must be from 1m to 1d. Usage: /nodes"),
        ("/nodes invite 2d", "Duration '2d': must be from 1m to 1d. Usage: /nodes"),
        ("/nodes invite " + "x" * 129, "Name: longer than 128 characters. Usage: /nodes"),
    ],
    ids=["too-short", "too-long", "name-too-long"],
)
def test_nodes_invite_out_of_bounds_is_a_usage(
    pairing: PairingService, nodes: NodeService, clock: FakeClock, typed: str, says: str
) -> None:
    owner = OwnerCommands(
        pairing, nodes, clock=clock, cluster=LocalCluster(), gateway=lambda: HERE
    )
    reply = run(owner, typed, actor=OWNER)
    assert (reply.ok, reply.failure, reply.invitation) == (False, OwnerFailure.USAGE, None)
    assert reply.text.startswith(says)
    assert nodes.invites() == []


def test_nodes_invite_without_a_gateway_says_so(owner: OwnerCommands, nodes: NodeService) -> None:
    reply = run(owner, "/nodes invite", actor=OWNER)
    assert (reply.ok, reply.failure) == (False, OwnerFailure.REFUSED)
    assert "gateway is off" in reply.text
    assert nodes.invites() == []


@pytest.mark.parametrize(
    ("typed", "want"),
    [
        ("/nodes approve NOPE", "no pending node request 'NOPE' (see `pairbot nodes pending`)"),
        ("/nodes reject NOPE", "no pending node request 'NOPE' (see `pairbot nodes pending`)"),
        ("/nodes revoke node-9", "no paired node 'node-9' (see `pairbot nodes list`)"),
    ],
    ids=["approve", "reject", "revoke"],
)
def test_nodes_unknown(owner: OwnerCommands, typed: str, want: str) -> None:
    assert run(owner, typed, actor=OWNER) == OwnerReply(
        text=want, ok=False, failure=OwnerFailure.UNKNOWN
    )


def test_nodes_approve_expired_request_is_unknown(
    owner: OwnerCommands, nodes: NodeService, clock: FakeClock
) -> None:
    req = node(nodes)
    clock.advance(timedelta(minutes=5))
    reply = run(owner, f"/nodes approve {req.request_id}", actor=OWNER)
    assert (reply.failure, reply.node_approved) == (OwnerFailure.UNKNOWN, None)
    assert nodes.paired() == []


@pytest.mark.parametrize(
    "typed",
    [
        "/nodes approve",
        "/nodes reject",
        "/nodes revoke",
        "/nodes list",
        "/nodes approve A B",
        "/nodes pair X",
    ],
    ids=[
        "approve-no-id",
        "reject-no-id",
        "revoke-no-id",
        "unknown-action",
        "two-ids",
        "other-action",
    ],
)
def test_nodes_usage(owner: OwnerCommands, typed: str) -> None:
    assert run(owner, typed, actor=OWNER) == OwnerReply(
        text="Usage: /nodes [approve ID | reject ID | revoke NODE_ID | invite [30m] [NAME]]",
        ok=False,
        failure=OwnerFailure.USAGE,
    )


# --- /help -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    ["/help", "/start", "/unknown", "hello", "", "/help@my_bot"],
    ids=["help", "start", "unknown", "plain-text", "empty", "bot-suffix"],
)
def test_help_for_everything_else(owner: OwnerCommands, typed: str) -> None:
    assert run(owner, typed, actor=OWNER) == OwnerReply(text=messages.HELP)


# --- lockout (goal 7) --------------------------------------------------------------------------


def test_nine_failures_do_not_lock(owner: OwnerCommands, pairing: PairingService) -> None:
    req = stranger(pairing)
    replies = fail(owner, 9)
    assert {(r.failure, r.text) for r in replies} == {(OwnerFailure.UNKNOWN, UNKNOWN_TEXT)}
    assert run(owner, f"/approve {req.code}", actor=OWNER).approved == req


def test_ten_failures_lock_even_a_correct_code_for_fifteen_minutes(
    owner: OwnerCommands,
    pairing: PairingService,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.services.owner")
    req = stranger(pairing)
    replies = fail(owner, 10)
    assert replies[-1] == OwnerReply(
        text=f"{UNKNOWN_TEXT}\n{LOCKED_15M}", ok=False, failure=OwnerFailure.UNKNOWN
    )
    locked = OwnerReply(text=LOCKED_15M, ok=False, failure=OwnerFailure.LOCKED)
    assert run(owner, f"/approve {req.code}", actor=OWNER) == locked
    assert run(owner, f"/reject {req.code}", actor=OWNER) == locked
    assert pairing.pending() == [req]
    assert not pairing.is_allowed("telegram", "4242")
    assert [r.getMessage() for r in caplog.records] == [
        f"owner {OWNER} locked out of approvals for 0:15:00 after 10 failures"
    ]
    assert req.code not in caplog.text
    lockouts = [r for r in pairing._store.read_audit() if r["event"] == "lockout"]
    assert [(r["actor"], r["outcome"], r["failures"], r["seconds"]) for r in lockouts] == [
        (OWNER, "locked", 10, 900)
    ]

    clock.advance(timedelta(minutes=10))
    assert run(owner, f"/approve {req.code}", actor=OWNER) == OwnerReply(
        text="Too many wrong codes: approvals are paused for 5m.",
        ok=False,
        failure=OwnerFailure.LOCKED,
    )
    clock.advance(timedelta(minutes=5) - SECOND)
    assert run(owner, f"/approve {req.code}", actor=OWNER) == OwnerReply(
        text="Too many wrong codes: approvals are paused for 1s.",
        ok=False,
        failure=OwnerFailure.LOCKED,
    )
    clock.advance(SECOND)
    assert run(owner, f"/approve {req.code}", actor=OWNER).approved == req


def test_the_pause_is_said_rounded_up(
    owner: OwnerCommands, pairing: PairingService, clock: FakeClock
) -> None:
    """A second after a 15-minute lockout began, 14m59s are left: that is "15m", not "14m"."""
    req = stranger(pairing)
    fail(owner, 10)
    clock.advance(SECOND)
    assert run(owner, f"/approve {req.code}", actor=OWNER).text == LOCKED_15M
    clock.advance(timedelta(minutes=10))
    assert run(owner, f"/approve {req.code}", actor=OWNER).text == (
        "Too many wrong codes: approvals are paused for 5m."
    )


def test_lockout_counts_expired_codes_and_ignores_new_codes(
    owner: OwnerCommands, pairing: PairingService, clock: FakeClock
) -> None:
    old = stranger(pairing, "1")
    clock.advance(timedelta(hours=1))
    assert run(owner, f"/approve {old.code}", actor=OWNER).failure is OwnerFailure.EXPIRED
    fail(owner, 4)
    fresh = stranger(pairing, "2")  # a new code does not reset the count
    fail(owner, 5)
    assert run(owner, f"/approve {fresh.code}", actor=OWNER).failure is OwnerFailure.LOCKED


def test_usage_errors_do_not_count(owner: OwnerCommands, pairing: PairingService) -> None:
    req = stranger(pairing)
    for _ in range(20):
        run(owner, "/approve", actor=OWNER)
        run(owner, "/nodes approve NOPE", actor=OWNER)
    assert run(owner, f"/approve {req.code}", actor=OWNER).approved == req


def test_success_resets_the_counter(owner: OwnerCommands, pairing: PairingService) -> None:
    first = stranger(pairing, "1")
    second = stranger(pairing, "2")
    fail(owner, 9)
    assert run(owner, f"/approve {first.code}", actor=OWNER).approved == first
    replies = fail(owner, 9)
    assert {r.failure for r in replies} == {OwnerFailure.UNKNOWN}
    assert run(owner, f"/approve {second.code}", actor=OWNER).approved == second


def test_a_successful_reject_also_resets_the_counter(
    owner: OwnerCommands, pairing: PairingService
) -> None:
    first = stranger(pairing, "1")
    second = stranger(pairing, "2")
    fail(owner, 9)
    assert run(owner, f"/reject {first.code}", actor=OWNER).ok
    fail(owner, 9)
    assert run(owner, f"/approve {second.code}", actor=OWNER).approved == second


def test_failures_older_than_fifteen_minutes_fall_out(
    owner: OwnerCommands, pairing: PairingService, clock: FakeClock
) -> None:
    fail(owner, 9)
    clock.advance(timedelta(minutes=15))
    fail(owner, 1)
    req = stranger(pairing)
    assert run(owner, f"/approve {req.code}", actor=OWNER).approved == req


def test_lockout_doubles_up_to_an_hour(
    owner: OwnerCommands, pairing: PairingService, clock: FakeClock
) -> None:
    for minutes, shown in ((15, "15m"), (30, "30m"), (60, "1h"), (60, "1h")):
        replies = fail(owner, 10)
        assert replies[-1].text.endswith(f"approvals are paused for {shown}.")
        assert [r.failure for r in replies[:-1]] == [OwnerFailure.UNKNOWN] * 9
        clock.advance(timedelta(minutes=minutes) - SECOND)
        assert fail(owner, 1)[0].failure is OwnerFailure.LOCKED
        clock.advance(SECOND)
    req = stranger(pairing)
    assert run(owner, f"/approve {req.code}", actor=OWNER).approved == req
    # Success resets the escalation too: the next lock is 15 minutes again.
    assert fail(owner, 10)[-1].text.endswith(LOCKED_15M)


def test_one_owners_failures_do_not_lock_another(
    owner: OwnerCommands, pairing: PairingService
) -> None:
    req = stranger(pairing)
    fail(owner, 10, actor=OTHER_OWNER)
    assert run(owner, f"/approve {req.code}", actor=OTHER_OWNER).failure is OwnerFailure.LOCKED
    assert run(owner, f"/approve {req.code}", actor=OWNER).approved == req


# --- the lockout across instances (issue 13) ----------------------------------------------------


def test_wrong_codes_on_two_instances_add_up_to_one_lockout(
    pairing: PairingService, nodes: NodeService, clock: FakeClock
) -> None:
    """Two instances behind one load balancer: the owner's guesses land on either, and the
    lockout (its count, its pause, its doubling, its reset) is one."""
    here = LocalCluster()
    a = OwnerCommands(pairing, nodes, clock=clock, cluster=here)
    b = OwnerCommands(pairing, nodes, clock=clock, cluster=here.sibling())
    req = stranger(pairing)

    assert {r.failure for r in fail(a, 5) + fail(b, 4)} == {OwnerFailure.UNKNOWN}
    assert fail(b, 1)[0].text == f"{UNKNOWN_TEXT}\n{LOCKED_15M}"  # the tenth, on b
    for instance in (a, b):  # the pause holds on both
        assert run(instance, f"/approve {req.code}", actor=OWNER).failure is OwnerFailure.LOCKED
    lockouts = [r for r in pairing._store.read_audit() if r["event"] == "lockout"]
    assert [(r["failures"], r["seconds"]) for r in lockouts] == [(MAX_FAILURES, 900)]

    clock.advance(LOCKOUT)  # the second pause, started on a, doubles the first (from b)
    fail(b, 6)
    assert fail(a, 4)[-1].text.endswith("approvals are paused for 30m.")
    clock.advance(2 * LOCKOUT)
    assert run(a, f"/approve {req.code}", actor=OWNER).approved == req  # success on a ...
    assert fail(b, 10)[-1].text.endswith(LOCKED_15M)  # ... resets b's count and doubling


# --- the lockout under threads ------------------------------------------------------------------


@pytest.fixture
def tiny_switch_interval() -> Iterator[None]:
    """Switch threads as often as the interpreter can, so a race has every chance to show."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


@pytest.mark.usefixtures("tiny_switch_interval")
def test_the_lockout_loses_no_failure_when_threads_hammer_it() -> None:
    lockout, now = Lockout(LocalCluster()), FakeClock().now()
    threads, per_thread = 16, 250
    started = threading.Barrier(threads)

    def hammer(actor: str) -> list[LockedOut]:
        started.wait()
        return [locked for _ in range(per_thread) if (locked := lockout.fail(actor, now))]

    with ThreadPoolExecutor(threads) as pool:
        runs = list(pool.map(hammer, [OWNER, OTHER_OWNER] * (threads // 2)))
    locks = [locked for run in runs for locked in run]

    # Each failure counted once: every tenth of an owner's 2,000 locks, and each lock once.
    per_owner = threads // 2 * per_thread
    assert len(locks) == 2 * per_owner // MAX_FAILURES
    assert {locked.failures for locked in locks} == {MAX_FAILURES}
    assert sorted(locked.pause for locked in locks) == sorted(
        [LOCKOUT, 2 * LOCKOUT, *[MAX_LOCKOUT] * (per_owner // MAX_FAILURES - 2)] * 2
    )
    assert lockout.paused(OWNER, now) == lockout.paused(OTHER_OWNER, now) == MAX_LOCKOUT


@pytest.mark.usefixtures("tiny_switch_interval")
def test_wrong_codes_from_worker_threads_lock_the_owner_once(
    owner: OwnerCommands, pairing: PairingService
) -> None:
    stranger(pairing)
    threads = 8
    started = threading.Barrier(threads)

    def guess(_: int) -> list[OwnerReply]:
        started.wait()
        return fail(owner, 5)

    with ThreadPoolExecutor(threads) as pool:
        replies = [reply for run in pool.map(guess, range(threads)) for reply in run]

    counted = [r for r in replies if r.failure is OwnerFailure.UNKNOWN]
    assert {r.failure for r in replies} == {OwnerFailure.UNKNOWN, OwnerFailure.LOCKED}
    # Guesses already past the check when the lock fell still count, as the next window's.
    assert MAX_FAILURES <= len(counted) < MAX_FAILURES + threads
    assert [r.text for r in counted].count(f"{UNKNOWN_TEXT}\n{LOCKED_15M}") == 1
    lockouts = [r for r in pairing._store.read_audit() if r["event"] == "lockout"]
    assert [(r["failures"], r["seconds"]) for r in lockouts] == [(MAX_FAILURES, 900)]


# --- commands that only read -------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [c for c in COMMANDS if not c.changes_state], ids=lambda c: c.name
)
def test_a_command_that_changes_nothing_writes_nothing(
    owner: OwnerCommands,
    pairing: PairingService,
    nodes: NodeService,
    state_dir: Path,
    command: Command,
) -> None:
    stranger(pairing)
    pairing.allow("slack", "U1", actor=OWNER)
    node(nodes)

    def snapshot() -> dict[str, tuple[bytes, int]]:
        return {
            str(p): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(state_dir.rglob("*"))
            if p.is_file()
        }

    before = snapshot()
    for line in (f"{command.word}", f"{command.word} telegram", f"{command.word} x y"):
        assert run(owner, line, actor=OWNER).ok
    assert snapshot() == before
