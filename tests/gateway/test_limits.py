"""What one address may try: pair requests, connects, failed verifications shared with the
operator token's, every failure audited without a secret (issue 15, section 4)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from bot.core.clock import FakeClock
from tests.gateway.support import OP_TOKEN, Gw, GwWith

pytestmark = pytest.mark.e2e

MINUTE = timedelta(minutes=1, seconds=1)


def refusals(gw: Gw) -> list[tuple[str, str, str, str]]:
    """The audit lines of refused attempts: (event, actor, subject, outcome)."""
    return [
        (str(r["event"]), str(r["actor"]), str(r["subject"]), str(r["outcome"]))
        for r in gw.app.store.read_audit()
        if str(r["actor"]).startswith("remote:")
    ]


async def test_failed_node_verifications_lock_the_address_out_of_every_secret(
    gw: Gw, fake_clock: FakeClock
) -> None:
    _, token = await gw.pair("pixel-9")
    thief = await gw.peer()
    for _ in range(5):
        wrong = await thief.fail("node.connect", {"nodeId": "pixel-9", "token": "x" * 43})
        assert wrong["code"] == "UNAUTHORIZED"
    # now nothing this address shows is even looked at: the right token, the operator's
    for method, params in (
        ("node.connect", {"nodeId": "pixel-9", "token": token}),
        ("node.pair.verify", {"nodeId": "pixel-9", "token": token}),
        ("operator.connect", {"token": OP_TOKEN}),
        ("node.pair.request", {"nodeId": "esp32"}),
    ):
        assert (await thief.fail(method, params))["code"] == "RATE_LIMITED", method
    assert refusals(gw) == [
        *[("node.connect", "remote:127.0.0.1", "pixel-9", "wrong_token")] * 5,
        ("node.connect", "remote:127.0.0.1", "pixel-9", "locked_out"),
    ]
    audit_text = json.dumps(gw.app.store.read_audit())
    assert token not in audit_text
    assert "x" * 43 not in audit_text

    fake_clock.advance(MINUTE)
    honest = await gw.peer()
    assert (await honest.ok("node.connect", {"nodeId": "pixel-9", "token": token}))[
        "nodeId"
    ] == "pixel-9"


async def test_wrong_operator_tokens_spend_the_same_budget_as_node_tokens(gw: Gw) -> None:
    _, token = await gw.pair("pixel-9")
    guesser = await gw.peer()
    for _ in range(2):
        await guesser.fail("operator.connect", {"token": "guess" * 9})
    guesser = await gw.peer()  # a connection closes after three wrong operator tokens
    for _ in range(3):
        await guesser.fail("node.pair.verify", {"nodeId": "pixel-9", "token": "y" * 43})
    refused = await guesser.fail("node.connect", {"nodeId": "pixel-9", "token": token})
    assert refused["code"] == "RATE_LIMITED"
    outcomes = [(event, outcome) for event, _, _, outcome in refusals(gw)]
    assert outcomes == [
        ("operator.connect", "wrong_token"),
        ("operator.connect", "wrong_token"),
        ("node.verify", "wrong_token"),
        ("node.verify", "wrong_token"),
        ("node.verify", "wrong_token"),
        ("node.verify", "locked_out"),
    ]
    assert "guess" not in json.dumps(gw.app.store.read_audit())


async def test_pair_requests_per_address_are_limited_and_the_first_refusal_audited(
    gw_with: GwWith, fake_clock: FakeClock
) -> None:
    async with gw_with(
        gateway={"pair_requests_per_minute": 3}, nodes={"max_pending_per_address": 50}
    ) as gw:
        peer = await gw.peer()
        for n in range(3):
            await peer.ok("node.pair.request", {"nodeId": f"node-{n}"})
        for n in range(3, 10):
            refused = await peer.fail("node.pair.request", {"nodeId": f"node-{n}"})
            assert refused["code"] == "RATE_LIMITED"
        assert len(gw.app.nodes.pending()) == 3
        assert refusals(gw) == [("node.request", "remote:127.0.0.1", "node-3", "rate_limited")]
        fake_clock.advance(MINUTE)
        await peer.ok("node.pair.request", {"nodeId": "node-late"})


async def test_connects_per_address_are_limited(gw_with: GwWith) -> None:
    async with gw_with(gateway={"connects_per_minute": 2}) as gw:
        _, token = await gw.pair("pixel-9")
        for _ in range(2):
            peer = await gw.peer()
            await peer.ok("node.connect", {"nodeId": "pixel-9", "token": token})
        late = await gw.peer()
        refused = await late.fail("node.connect", {"nodeId": "pixel-9", "token": token})
        assert refused["code"] == "RATE_LIMITED"
        assert refusals(gw) == [("node.connect", "remote:127.0.0.1", "pixel-9", "rate_limited")]


async def test_a_wrong_pickup_or_re_pair_token_is_a_failed_verification(gw: Gw) -> None:
    _, token = await gw.pair("pixel-9")
    peer = await gw.peer()
    assert (await peer.fail("node.pair.request", {"nodeId": "esp32", "pickup": "z" * 43}))[
        "code"
    ] == "NOT_FOUND"
    assert (await peer.fail("node.pair.request", {"nodeId": "pixel-9", "token": "w" * 43}))[
        "code"
    ] == "UNAUTHORIZED"
    assert (await peer.fail("node.pair.request", {"nodeId": "pixel-9"}))[
        "code"
    ] == "ALREADY_PAIRED"
    assert [outcome for *_, outcome in refusals(gw)] == [
        "unknown_pickup",
        "wrong_token",
        "already_paired",
    ]
    assert gw.app.gateway is not None
    assert gw.app.gateway._limits.failures.count("127.0.0.1") == 2, "already paired is no guess"
    text = json.dumps(gw.app.store.read_audit())
    assert "z" * 43 not in text
    assert "w" * 43 not in text
    assert token not in text
