"""The node gateway, frame by frame, with the whole app running (raw WebSocket clients)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import stat
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from bot.gateway.client import GatewayCallError, GatewayClient, GatewayUnavailable
from bot.gateway.frames import MAX_FRAME
from stores.jsonfile import format_time
from tests.gateway.support import (
    OP_TOKEN,
    OWNER,
    TTL,
    WAIT,
    Closed,
    Gw,
    GwWith,
    Peer,
    assert_error_shape,
    connected_nodes,
    disconnect,
    mentions_a_token,
    resolved,
    within,
)

pytestmark = pytest.mark.e2e


async def test_healthz_answers_on_the_gateway_port(gw: Gw) -> None:
    async with gw.session.get(f"http://127.0.0.1:{gw.port}/healthz") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok"}


async def test_pair_request_answer_has_the_exact_shape_and_is_idempotent(gw: Gw) -> None:
    node = await gw.peer()
    params = {
        "nodeId": "pixel-9",
        "displayName": "Pixel 9",
        "platform": "android",
        "version": "1.4.0",
    }
    await node.send({"type": "req", "id": "a1", "method": "node.pair.request", "params": params})
    first = await node.answer()
    rid = first["payload"]["requestId"]
    pickup = first["payload"]["pickup"]
    assert first == {
        "type": "res",
        "id": "a1",
        "ok": True,
        "payload": {
            "status": "pending",
            "requestId": rid,
            "pickup": pickup,
            "expiresAt": format_time(gw.clock.now() + TTL),
        },
    }
    assert isinstance(rid, str)
    assert len(rid) == 10
    assert isinstance(pickup, str)
    assert len(pickup) == 43

    gw.clock.advance(timedelta(minutes=1))
    await node.send({"type": "req", "id": 7, "method": "node.pair.request", "params": params})
    again = await node.answer()
    assert again["id"] == 7
    assert again["payload"] == {
        "status": "pending",
        "requestId": rid,
        "expiresAt": first["payload"]["expiresAt"],
    }, "the same connection asking again: the same request (expiry from the first ask)"
    [pending] = gw.app.nodes.pending()
    assert (pending.node_id, pending.display_name, pending.platform, pending.version) == (
        "pixel-9",
        "Pixel 9",
        "android",
        "1.4.0",
    )
    assert pickup not in json.dumps(pending.as_json())


async def test_a_second_asker_never_shares_the_first_askers_request(gw: Gw) -> None:
    """Issue 9, item 1: a token used to go to whoever asked last with the same nodeId."""
    real, ask = await gw.ask("pixel-9", displayName="Pixel 9", platform="android")
    [notice] = await gw.tg.wait_for_sent(lambda m: m["chat_id"] == OWNER, timeout=WAIT)
    assert ask["requestId"] in notice["text"]

    attacker, theirs = await gw.ask("pixel-9", displayName="Pixel 9", platform="android")
    assert theirs["requestId"] != ask["requestId"]
    assert theirs["pickup"] != ask["pickup"]
    warning = (
        await gw.tg.wait_for_sent(
            lambda m: m["chat_id"] == OWNER and theirs["requestId"] in m["text"], timeout=WAIT
        )
    )[-1]
    assert "another device asks with the same node id" in warning["text"]
    assert ask["requestId"] in warning["text"], "the owner sees which request came first"

    await gw.approve(ask["requestId"], "pixel-9")
    event = await real.event("node.pair.resolved")
    assert event == resolved(ask["requestId"], "pixel-9", "approved", event["payload"]["token"])
    assert await attacker.event("node.pair.resolved") == resolved(
        theirs["requestId"], "pixel-9", "rejected"
    ), "superseded: the other asker is refused"
    assert not mentions_a_token(attacker.received)
    assert gw.app.nodes.pending() == []


async def test_approving_the_second_asker_gives_the_first_nothing(gw: Gw) -> None:
    first, ask1 = await gw.ask("pixel-9")
    second, ask2 = await gw.ask("pixel-9")
    op = await gw.op()
    await op.ok("node.pair.approve", {"requestId": ask2["requestId"]})
    token = (await second.event("node.pair.resolved"))["payload"]["token"]
    assert await first.event("node.pair.resolved") == resolved(
        ask1["requestId"], "pixel-9", "rejected"
    )
    assert token not in json.dumps(first.received)


async def test_a_paired_node_id_is_refused_without_proof(gw: Gw) -> None:
    """Issue 9, item 3: re-pairing used to look like a new request and revoke the real node."""
    _, token = await gw.pair("pixel-9")
    node = await gw.peer()
    error = await node.fail("node.pair.request", {"nodeId": "pixel-9", "displayName": "Pixel"})
    assert error["code"] == "ALREADY_PAIRED"
    assert "already paired" in error["message"]
    assert (await node.fail("node.pair.request", {"nodeId": "pixel-9", "repair": True}))[
        "code"
    ] == "ALREADY_PAIRED", "the old repair flag alone proves nothing"
    assert (await node.fail("node.pair.request", {"nodeId": "pixel-9", "token": "guess"}))[
        "code"
    ] == "UNAUTHORIZED"
    assert await node.quiet() == []
    assert gw.app.nodes.pending() == []
    assert await node.ok("node.pair.verify", {"nodeId": "pixel-9", "token": token}) == {
        "ok": True,
        "nodeId": "pixel-9",
    }


async def test_repair_with_proof_is_said_plainly_and_rotates_the_token(gw: Gw) -> None:
    first_conn, old = await gw.pair("pixel-9", "Pixel 9")
    assert await first_conn.ok("node.connect", {"nodeId": "pixel-9", "token": old}) == {
        "nodeId": "pixel-9",
        "displayName": "Pixel 9",
    }
    ask = await first_conn.ok(
        "node.pair.request", {"nodeId": "pixel-9", "token": old, "displayName": "Pixel 9 Pro"}
    )
    assert ask["status"] == "pending"
    notice = (
        await gw.tg.wait_for_sent(
            lambda m: m["chat_id"] == OWNER and ask["requestId"] in m["text"], timeout=WAIT
        )
    )[-1]
    assert notice["text"].startswith("Node asks for a new token (re-pair)")
    assert "proved it holds its current token" in notice["text"]
    await gw.approve(ask["requestId"], "pixel-9")
    event = await first_conn.event("node.pair.resolved")
    new = event["payload"]["token"]
    assert event == resolved(ask["requestId"], "pixel-9", "approved", new)
    assert new != old

    checker = await gw.peer()
    for method in ("node.connect", "node.pair.verify"):
        error = await checker.fail(method, {"nodeId": "pixel-9", "token": old})
        assert error["code"] == "UNAUTHORIZED"
    assert await checker.ok("node.pair.verify", {"nodeId": "pixel-9", "token": new}) == {
        "ok": True,
        "nodeId": "pixel-9",
    }
    assert await checker.ok("node.connect", {"nodeId": "pixel-9", "token": new}) == {
        "nodeId": "pixel-9",
        "displayName": "Pixel 9 Pro",
    }
    assert len(gw.app.nodes.paired()) == 1


async def test_a_lost_device_is_re_paired_after_a_revoke(gw: Gw) -> None:
    await gw.pair("pixel-9")
    op = await gw.op()
    await op.ok("node.revoke", {"nodeId": "pixel-9"})
    _, fresh = await gw.ask("pixel-9")
    assert fresh["status"] == "pending"


# --- operators ---------------------------------------------------------------------------------


OPERATOR_CALLS = [
    ("node.pair.list", {}),
    ("node.pair.approve", {"requestId": "ABCDEFGHJK"}),
    ("node.pair.reject", {"requestId": "ABCDEFGHJK"}),
    ("node.list", {}),
    ("node.revoke", {"nodeId": "pixel-9"}),
]


async def test_operator_methods_need_the_operator_token(gw: Gw) -> None:
    await gw.ask("pixel-9")
    peer = await gw.peer()
    for method, params in OPERATOR_CALLS:
        assert (await peer.fail(method, params))["code"] == "UNAUTHORIZED", method
    error = await peer.fail("operator.connect", {"token": OP_TOKEN + "x"})
    assert error["code"] == "UNAUTHORIZED"
    assert (await peer.fail("operator.connect", {"token": OP_TOKEN[:-1]}))[
        "code"
    ] == "UNAUTHORIZED"
    for method, params in OPERATOR_CALLS:
        assert (await peer.fail(method, params))["code"] == "UNAUTHORIZED", method
    assert gw.app.nodes.pending() != [], "nothing was approved or rejected"
    assert await peer.ok("operator.connect", {"token": OP_TOKEN}) == {"role": "operator"}
    listing = await peer.ok("node.pair.list")
    assert [p["nodeId"] for p in listing["pending"]] == ["pixel-9"]


async def test_pair_list_shows_pending_and_paired_without_secrets(gw: Gw) -> None:
    await gw.pair("pixel-9", "Pixel 9")
    _, ask = await gw.ask("tab-1", displayName="Tab", platform="ios", version="2.0")
    op = await gw.operator()
    listing = await op.ok("node.pair.list")
    assert listing == {
        "pending": [
            {
                "requestId": ask["requestId"],
                "nodeId": "tab-1",
                "displayName": "Tab",
                "platform": "ios",
                "version": "2.0",
                "remote": "127.0.0.1",
                "isRepair": False,
                "createdAt": format_time(gw.clock.now()),
            }
        ],
        "paired": [
            {
                "nodeId": "pixel-9",
                "displayName": "Pixel 9",
                "platform": "",
                "version": "",
                "createdAt": format_time(gw.clock.now()),
                "approvedAt": format_time(gw.clock.now()),
                "lastConnectedAt": None,
            }
        ],
    }
    nodes = await op.ok("node.list")
    assert [(n["nodeId"], n["connected"]) for n in nodes["nodes"]] == [("pixel-9", False)]
    assert not mentions_a_token(op.received), op.received


async def test_operator_sees_requests_and_approves_but_never_sees_the_token(gw: Gw) -> None:
    op = await gw.operator()
    node, ask = await gw.ask("pixel-9", displayName="Pixel 9", platform="android")
    requested = await op.event("node.pair.requested")
    assert requested == {
        "type": "event",
        "event": "node.pair.requested",
        "payload": {
            "requestId": ask["requestId"],
            "nodeId": "pixel-9",
            "displayName": "Pixel 9",
            "platform": "android",
            "version": "",
            "remote": "127.0.0.1",
            "isRepair": False,
            "createdAt": format_time(gw.clock.now()),
        },
    }
    assert ask["pickup"] not in json.dumps(requested), "the pickup goes to the asker alone"
    await gw.ask("pixel-9", node)
    assert await op.quiet() == [], "asking again is not a new request"

    assert await op.ok("node.pair.approve", {"requestId": ask["requestId"].lower()}) == {
        "nodeId": "pixel-9",
        "requestId": ask["requestId"],
        "delivered": True,
    }
    event = await node.event("node.pair.resolved")
    token = event["payload"]["token"]
    assert event == resolved(ask["requestId"], "pixel-9", "approved", token)
    assert isinstance(token, str)
    assert len(token) >= 43
    assert await node.quiet() == [], "the token is sent once"

    again = await op.fail("node.pair.approve", {"requestId": ask["requestId"]})
    assert again["code"] == "NOT_FOUND"

    device = await gw.peer()
    assert await device.ok("node.connect", {"nodeId": "pixel-9", "token": token}) == {
        "nodeId": "pixel-9",
        "displayName": "Pixel 9",
    }
    nodes = await op.ok("node.list")
    [entry] = nodes["nodes"]
    assert entry["connected"] is True
    assert entry["lastConnectedAt"] == format_time(gw.clock.now())
    assert token not in json.dumps(op.received)
    assert not mentions_a_token(op.received), op.received


async def test_reject_tells_the_waiting_node_without_a_token(gw: Gw) -> None:
    op = await gw.operator()
    node, ask = await gw.ask("pixel-9")
    assert await op.ok("node.pair.reject", {"requestId": ask["requestId"]}) == {
        "requestId": ask["requestId"],
        "nodeId": "pixel-9",
    }
    assert await node.event("node.pair.resolved") == resolved(
        ask["requestId"], "pixel-9", "rejected"
    )
    assert gw.app.nodes.paired() == []
    assert (await op.fail("node.pair.approve", {"requestId": ask["requestId"]}))[
        "code"
    ] == "NOT_FOUND"
    assert not mentions_a_token(op.received)


async def test_revoke_tells_and_closes_the_connected_node(gw: Gw) -> None:
    _, token = await gw.pair("pixel-9")
    device = await gw.peer()
    await device.ok("node.connect", {"nodeId": "pixel-9", "token": token})
    op = await gw.operator()
    assert await op.ok("node.revoke", {"nodeId": "pixel-9"}) == {"nodeId": "pixel-9"}
    assert await device.event("node.pair.resolved") == resolved(None, "pixel-9", "revoked")
    with pytest.raises(Closed):
        await device.answer()
    assert device.close_code == 4001
    assert (await op.ok("node.list")) == {"nodes": []}

    again = await gw.peer()
    assert (await again.fail("node.connect", {"nodeId": "pixel-9", "token": token}))[
        "code"
    ] == "UNAUTHORIZED"
    assert (await op.fail("node.revoke", {"nodeId": "pixel-9"}))["code"] == "NOT_FOUND"


async def test_revoke_answers_the_operator_even_if_the_node_does_not_read(gw: Gw) -> None:
    _, token = await gw.pair("pixel-9")
    silent = await gw.session.ws_connect(gw.url)
    try:
        await silent.send_str(
            json.dumps(
                {
                    "type": "req",
                    "id": 1,
                    "method": "node.connect",
                    "params": {"nodeId": "pixel-9", "token": token},
                }
            )
        )
        op = await gw.operator()
        await within(WAIT, lambda: "pixel-9" in connected_nodes(gw))
        started = asyncio.get_running_loop().time()
        assert await op.ok("node.revoke", {"nodeId": "pixel-9"}) == {"nodeId": "pixel-9"}
        assert asyncio.get_running_loop().time() - started < 1.0
        assert json.loads((await silent.receive(timeout=WAIT)).data)["ok"] is True
        event = json.loads((await silent.receive(timeout=WAIT)).data)
        assert event == resolved(None, "pixel-9", "revoked")
        closing = await silent.receive(timeout=WAIT)
        assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 4001)
    finally:
        await silent.close()


async def test_two_waiting_nodes_each_hear_only_their_own_decision(gw: Gw) -> None:
    a, ask_a = await gw.ask("node-a")
    b, ask_b = await gw.ask("node-b")
    await gw.approve(ask_a["requestId"], "node-a")
    token_a = (await a.event("node.pair.resolved"))["payload"]["token"]
    assert await b.quiet() == []
    await gw.approve(ask_b["requestId"], "node-b")
    token_b = (await b.event("node.pair.resolved"))["payload"]["token"]
    assert token_a != token_b
    assert await a.quiet() == []
    assert [f for f in b.received if f.get("type") == "event"] == [
        resolved(ask_b["requestId"], "node-b", "approved", token_b)
    ]
    gw.clock.advance(TTL * 2)
    assert await a.quiet(0.7) == [], "an approved request does not expire later"
    assert await b.quiet(0.1) == []


async def test_approval_while_disconnected_is_held_for_the_pickup_secret_only(gw: Gw) -> None:
    """Issue 9, item 2: a held token used to go to the next connection with that nodeId."""
    node, ask = await gw.ask("pixel-9")
    await disconnect(gw, node)
    await gw.approve(ask["requestId"], "pixel-9", delivered=False)
    gw.clock.advance(TTL - timedelta(seconds=1))

    thief = await gw.peer()
    assert (await thief.fail("node.pair.request", {"nodeId": "pixel-9"}))[
        "code"
    ] == "ALREADY_PAIRED"
    wrong = await thief.fail(
        "node.pair.request", {"nodeId": "pixel-9", "pickup": ask["pickup"][:-2] + "AA"}
    )
    assert wrong["code"] == "NOT_FOUND"
    assert (await thief.fail("node.pair.request", {"nodeId": "tab-1", "pickup": ask["pickup"]}))[
        "code"
    ] == "NOT_FOUND", "the pickup is bound to its node id"

    back, got = await gw.ask("pixel-9", pickup=ask["pickup"])
    token = got.pop("token")
    assert got == {"status": "paired", "requestId": ask["requestId"]}
    assert await back.ok("node.connect", {"nodeId": "pixel-9", "token": token}) == {
        "nodeId": "pixel-9",
        "displayName": "",
    }
    again = await back.fail("node.pair.request", {"nodeId": "pixel-9", "pickup": ask["pickup"]})
    assert again["code"] == "NOT_FOUND", "single use"
    op = await gw.op()
    assert token not in json.dumps([op.received, thief.received])


async def test_a_decision_its_asker_missed_is_a_warning_with_ids_never_the_token(
    gw: Gw, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.gateway.peers")
    approved, ask = await gw.ask("pixel-9")
    rejected, other = await gw.ask("tab-1")
    await disconnect(gw, approved)
    await disconnect(gw, rejected)
    op = await gw.op()
    await op.ok("node.pair.approve", {"requestId": ask["requestId"]})
    await op.ok("node.pair.reject", {"requestId": other["requestId"]})

    _, got = await gw.ask("pixel-9", pickup=ask["pickup"])
    assert [r.getMessage() for r in caplog.records if r.name == "bot.gateway.peers"] == [
        f"node pixel-9: approved on request {ask['requestId']} not delivered: its asker is "
        "gone; its token is held for the asker's pickup secret",
        f"node tab-1: rejected on request {other['requestId']} not delivered: its asker is gone",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)
    assert got["token"] not in caplog.text
    assert ask["pickup"] not in caplog.text


async def test_a_decision_told_once_is_not_missed_again(
    gw: Gw, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.gateway.peers")
    node, _ = await gw.ask("pixel-9")
    gw.clock.advance(TTL + timedelta(seconds=1))
    assert (await node.event("node.pair.resolved"))["payload"]["decision"] == "expired"
    await asyncio.sleep(0.5)  # the prune (0.2 s) looks at the same request again
    assert caplog.records == [], "told once: the second look misses nobody"


async def test_an_asker_comes_back_to_its_pending_request_with_its_pickup(gw: Gw) -> None:
    node, ask = await gw.ask("pixel-9")
    await disconnect(gw, node)
    back, again = await gw.ask("pixel-9", pickup=ask["pickup"])
    assert again == {
        "status": "pending",
        "requestId": ask["requestId"],
        "expiresAt": ask["expiresAt"],
    }
    assert len(gw.app.nodes.pending()) == 1
    op = await gw.op()
    await op.ok("node.pair.approve", {"requestId": ask["requestId"]})
    assert (await back.event("node.pair.resolved"))["payload"]["decision"] == "approved"


async def test_a_held_token_is_dropped_after_the_ttl(gw: Gw) -> None:
    node, ask = await gw.ask("pixel-9")
    await disconnect(gw, node)
    await gw.approve(ask["requestId"], "pixel-9", delivered=False)
    gw.clock.advance(TTL + timedelta(seconds=1))
    late = await gw.peer()
    assert (await late.fail("node.pair.request", {"nodeId": "pixel-9", "pickup": ask["pickup"]}))[
        "code"
    ] == "NOT_FOUND", "too late: the owner must revoke and the node pair again"


async def test_revoking_a_node_drops_its_held_token(gw: Gw) -> None:
    node, ask = await gw.ask("pixel-9")
    await disconnect(gw, node)
    await gw.approve(ask["requestId"], "pixel-9", delivered=False)
    op = await gw.op()
    await op.ok("node.revoke", {"nodeId": "pixel-9"})
    late = await gw.peer()
    assert (await late.fail("node.pair.request", {"nodeId": "pixel-9", "pickup": ask["pickup"]}))[
        "code"
    ] == "NOT_FOUND"
    _, again = await gw.ask("pixel-9")
    assert again["status"] == "pending", again
    assert "token" not in again


# --- expiry ------------------------------------------------------------------------------------


async def test_expiry_reaches_the_waiting_node(gw: Gw) -> None:
    node, ask = await gw.ask("pixel-9")
    gw.clock.advance(TTL + timedelta(seconds=1))
    assert await node.event("node.pair.resolved") == resolved(
        ask["requestId"], "pixel-9", "expired"
    )
    op = await gw.op()
    assert (await op.fail("node.pair.approve", {"requestId": ask["requestId"]}))[
        "code"
    ] == "NOT_FOUND"
    _, fresh = await gw.ask("pixel-9", node)
    assert fresh["status"] == "pending"
    assert fresh["requestId"] != ask["requestId"]
    assert await node.quiet() == [], "told once, though both the prune and the sweep look"


async def test_expiry_reaches_the_node_when_another_request_drops_it_first(
    gw_with: GwWith,
) -> None:
    async with gw_with(pairing={"prune_interval": "1h"}) as gw:
        node, ask = await gw.ask("pixel-9")
        gw.clock.advance(TTL + timedelta(seconds=1))
        await gw.ask("tab-1")  # the store drops the expired request on the way
        assert await node.event("node.pair.resolved") == resolved(
            ask["requestId"], "pixel-9", "expired"
        )


# --- the local socket --------------------------------------------------------------------------


async def test_the_unix_socket_is_an_operator_without_a_token(gw: Gw) -> None:
    gateway = gw.app.gateway
    assert gateway is not None
    assert gateway.socket_path is not None
    assert gateway.socket_path == gw.app.state_dir / "gateway.sock"
    assert stat.S_ISSOCK(gateway.socket_path.stat().st_mode)
    assert stat.S_IMODE(gateway.socket_path.stat().st_mode) == 0o600
    local = await gw.unix_peer()
    node, ask = await gw.ask("pixel-9")
    assert (await local.event("node.pair.requested"))["payload"]["nodeId"] == "pixel-9"
    listing = await local.ok("node.pair.list")
    assert [(p["nodeId"], p["remote"]) for p in listing["pending"]] == [("pixel-9", "127.0.0.1")]
    assert await local.ok(
        "node.pair.approve", {"requestId": ask["requestId"], "actor": "owner:cli"}
    ) == {"nodeId": "pixel-9", "requestId": ask["requestId"], "delivered": True}
    token = (await node.event("node.pair.resolved"))["payload"]["token"]
    assert token not in json.dumps(local.received)
    records = gw.app.store.read_audit()
    assert [(r["event"], r["actor"]) for r in records if r["event"] == "node.approve"] == [
        ("node.approve", "owner:cli")
    ]


async def test_gateway_client_works_over_the_unix_socket(gw: Gw) -> None:
    gateway = gw.app.gateway
    assert gateway is not None
    assert gateway.socket_path is not None
    async with GatewayClient.open(gw.url) as node:
        ask = await node.call("node.pair.request", {"nodeId": "pixel-9"})
        async with GatewayClient.open(unix_socket=gateway.socket_path, wait=5) as local:
            assert (await local.call("node.pair.list"))["pending"][0]["nodeId"] == "pixel-9"
            with pytest.raises(GatewayCallError) as caught:
                await local.call("node.pair.approve", {"requestId": "NOPENOPE22"})
            assert caught.value.code == "NOT_FOUND"
            await local.call("node.pair.approve", {"requestId": ask["requestId"]})
        event = await node.next_event("node.pair.resolved", wait=WAIT)
        assert event["decision"] == "approved"
        assert event["token"]


# --- bad input ---------------------------------------------------------------------------------


BAD_FRAMES: list[tuple[str, Any, str, str]] = [
    # (raw text, expected id, expected code, a word the message must contain)
    ("this is not json", None, "INVALID_REQUEST", "JSON"),
    ("", None, "INVALID_REQUEST", "JSON"),
    ('{"type": "req", "id": "x", ', None, "INVALID_REQUEST", "JSON"),
    ("[1, 2, 3]", None, "INVALID_REQUEST", "type"),
    ('"just a string"', None, "INVALID_REQUEST", "type"),
    ("null", None, "INVALID_REQUEST", "type"),
    ("[" * 5000 + "]" * 5000, None, "INVALID_REQUEST", "JSON"),
    (
        '{"type": "res", "id": "t1", "method": "node.list", "params": {}}',
        "t1",
        "INVALID_REQUEST",
        "type",
    ),
    ('{"id": "t2", "method": "node.list"}', "t2", "INVALID_REQUEST", "type"),
    ('{"type": "req", "method": "node.list", "params": {}}', None, "INVALID_REQUEST", "id"),
    ('{"type": "req", "id": null, "method": "node.list"}', None, "INVALID_REQUEST", "id"),
    ('{"type": "req", "id": true, "method": "node.list"}', None, "INVALID_REQUEST", "id"),
    ('{"type": "req", "id": {"a": 1}, "method": "node.list"}', None, "INVALID_REQUEST", "id"),
    ('{"type": "req", "id": "t3", "params": {}}', "t3", "INVALID_REQUEST", "method"),
    ('{"type": "req", "id": "t4", "method": 5}', "t4", "INVALID_REQUEST", "method"),
    (
        '{"type": "req", "id": "t5", "method": "node.list", "params": []}',
        "t5",
        "INVALID_REQUEST",
        "params",
    ),
    (
        '{"type": "req", "id": "t6", "method": "node.list", "params": "x"}',
        "t6",
        "INVALID_REQUEST",
        "params",
    ),
    (
        '{"type": "req", "id": "t7", "method": "node.list", "params": null}',
        "t7",
        "INVALID_REQUEST",
        "params",
    ),
    (
        '{"type": "req", "id": "t8", "method": "node.teleport", "params": {}}',
        "t8",
        "UNKNOWN_METHOD",
        "method",
    ),
    (
        '{"type": "req", "id": "t9", "method": "__init__", "params": {}}',
        "t9",
        "UNKNOWN_METHOD",
        "method",
    ),
    (
        '{"type": "req", "id": 99, "method": "node.pair.request", "params": {}}',
        99,
        "INVALID_REQUEST",
        "params.nodeId",
    ),
]

BAD_PARAMS: list[tuple[str, dict[str, Any], str]] = [
    # (method, params, the param the message must name)
    ("node.pair.request", {}, "nodeId"),
    ("node.pair.request", {"nodeId": ""}, "nodeId"),
    ("node.pair.request", {"nodeId": None}, "nodeId"),
    ("node.pair.request", {"nodeId": 42}, "nodeId"),
    ("node.pair.request", {"nodeId": ["pixel"]}, "nodeId"),
    ("node.pair.request", {"nodeId": "x" * 300}, "nodeId"),
    ("node.pair.request", {"nodeId": "x" * 200}, "nodeId"),
    ("node.pair.request", {"nodeId": "   "}, "nodeId"),
    ("node.pair.request", {"nodeId": "pixel\n"}, "nodeId"),
    ("node.pair.request", {"nodeId": " pixel"}, "nodeId"),
    ("node.pair.request", {"nodeId": "pix\u0000el"}, "nodeId"),
    ("node.pair.request", {"nodeId": "pixel", "displayName": 5}, "displayName"),
    ("node.pair.request", {"nodeId": "pixel", "platform": {"os": "x"}}, "platform"),
    ("node.pair.request", {"nodeId": "pixel", "version": "v" * 300}, "version"),
    ("node.pair.request", {"nodeId": "pixel", "displayName": "n" * 200}, "displayName"),
    ("node.pair.verify", {"nodeId": "pixel"}, "token"),
    ("node.pair.verify", {"token": "abc"}, "nodeId"),
    ("node.connect", {"nodeId": "pixel", "token": 12345}, "token"),
    ("node.connect", {"nodeId": "pixel", "token": "t" * 300}, "token"),
    ("operator.connect", {}, "token"),
    ("operator.connect", {"token": ""}, "token"),
    ("operator.connect", {"token": False}, "token"),
]


async def still_works(peer: Peer) -> None:
    payload = await peer.ok("node.pair.request", {"nodeId": "steady"})
    assert payload["status"] == "pending"


async def test_bad_frames_get_an_error_and_the_connection_stays_open(gw: Gw) -> None:
    peer = await gw.peer()
    for text, req_id, code, word in BAD_FRAMES:
        await peer.send_text(text)
        frame = await peer.answer()
        assert_error_shape(frame, req_id)
        assert frame["error"]["code"] == code, (text[:60], frame)
        assert word.lower() in frame["error"]["message"].lower(), (text[:60], frame)
        await still_works(peer)
    assert len(gw.app.nodes.pending()) == 1
    assert len(connected_nodes(gw)) == 1


async def test_bad_params_are_named_and_change_nothing(gw: Gw) -> None:
    peer = await gw.peer()
    for method, params, name in BAD_PARAMS:
        error = await peer.fail(method, params)
        assert error["code"] == "INVALID_REQUEST", (method, params, error)
        assert name in error["message"], (method, params, error)
        await still_works(peer)
    assert [r.node_id for r in gw.app.nodes.pending()] == ["steady"]
    assert gw.app.nodes.paired() == []


async def test_binary_frames_and_oversized_frames_are_answered_not_fatal(gw: Gw) -> None:
    peer = await gw.peer()
    await peer.ws.send_bytes(b'{"type": "req", "id": "b", "method": "node.list"}')
    frame = await peer.answer()
    assert_error_shape(frame, None)
    assert frame["error"]["code"] == "INVALID_REQUEST"
    await still_works(peer)

    def padded(size: int, fill: str = "x") -> str:
        base = json.dumps(
            {
                "type": "req",
                "id": "big",
                "method": "node.pair.request",
                "params": {"nodeId": "steady", "pad": ""},
            }
        )
        room = size - len(base.encode())
        pad = fill * (room // len(fill.encode()))
        text = base.replace('"pad": ""', f'"pad": "{pad}"')
        assert len(text.encode()) == size
        return text

    await peer.send_text(padded(MAX_FRAME))
    at_limit = await peer.answer()
    assert (at_limit["id"], at_limit["ok"]) == ("big", True), "exactly 16 KiB is fine"

    for text in (padded(MAX_FRAME + 1), padded(MAX_FRAME + 2, "é"), padded(MAX_FRAME * 5)):
        await peer.send_text(text)
        frame = await peer.answer()
        assert_error_shape(frame, None)
        assert frame["error"]["code"] == "FRAME_TOO_LARGE", len(text)
        await still_works(peer)


async def test_a_huge_frame_may_close_the_socket_but_the_server_keeps_serving(gw: Gw) -> None:
    peer = await gw.peer()
    await peer.send_text("x" * (MAX_FRAME * 10 + 1024))
    with contextlib.suppress(Closed):
        frame = await peer.answer()
        assert frame["ok"] is False
    fresh = await gw.peer()
    await still_works(fresh)
    async with gw.session.get(f"http://127.0.0.1:{gw.port}/healthz") as resp:
        assert resp.status == 200


async def test_too_many_pending_requests_from_one_address_are_rate_limited(gw: Gw) -> None:
    peer = await gw.peer()
    asks = [await peer.ok("node.pair.request", {"nodeId": f"node-{i}"}) for i in range(3)]
    limited = await peer.fail("node.pair.request", {"nodeId": "node-3"})
    assert limited["code"] == "RATE_LIMITED"
    other = await gw.peer()
    assert (await other.fail("node.pair.request", {"nodeId": "node-4"}))[
        "code"
    ] == "RATE_LIMITED", "the limit is per address, not per connection"
    again = await peer.ok("node.pair.request", {"nodeId": "node-0"})
    assert again["requestId"] == asks[0]["requestId"], "re-asking is not limited"
    assert len(gw.app.nodes.pending()) == 3
    op = await gw.op()
    await op.ok("node.pair.reject", {"requestId": asks[1]["requestId"]})
    assert (await peer.ok("node.pair.request", {"nodeId": "node-3"}))["status"] == "pending"
    assert (await peer.fail("node.pair.request", {"nodeId": "node-5"}))[
        "code"
    ] == "RATE_LIMITED", "room for one more was taken"


# --- GatewayClient -----------------------------------------------------------------------------


async def test_gateway_client_reports_a_closed_connection(gw: Gw) -> None:
    _, token = await gw.pair("pixel-9")
    async with GatewayClient.open(gw.url) as client:
        await client.call("node.connect", {"nodeId": "pixel-9", "token": token})
        op = await gw.op()
        await op.ok("node.revoke", {"nodeId": "pixel-9"})
        event = await client.next_event("node.pair.resolved", wait=WAIT)
        assert event == {"requestId": None, "nodeId": "pixel-9", "decision": "revoked"}
        for _ in range(2):
            with pytest.raises(GatewayUnavailable):
                await client.next_event(wait=WAIT)
        started = asyncio.get_running_loop().time()
        with pytest.raises(GatewayUnavailable):
            await client.call("node.pair.verify", {"nodeId": "pixel-9", "token": token}, wait=WAIT)
        assert asyncio.get_running_loop().time() - started < 1.0


async def test_gateway_client_raises_call_errors_with_their_code(gw: Gw) -> None:
    async with GatewayClient.open(gw.url) as client:
        with pytest.raises(GatewayCallError) as caught:
            await client.call("node.connect", {"nodeId": "pixel-9", "token": "nope"})
        assert caught.value.code == "UNAUTHORIZED"
        with pytest.raises(GatewayCallError) as unknown:
            await client.call("node.fly")
        assert unknown.value.code == "UNKNOWN_METHOD"
        assert (await client.call("node.pair.request", {"nodeId": "pixel-9"}))[
            "status"
        ] == "pending"
    with pytest.raises(GatewayUnavailable):
        async with GatewayClient.open("ws://127.0.0.1:1/", wait=1):
            pass


# --- the owner's chat --------------------------------------------------------------------------


async def test_owner_approves_by_button_and_the_node_gets_its_token(gw: Gw) -> None:
    tg = gw.tg
    async with GatewayClient.open(gw.url) as node:
        ask = await node.call(
            "node.pair.request",
            {"nodeId": "pixel-9", "displayName": "Pixel 9", "platform": "android"},
        )
        rid = ask["requestId"]
        [notice] = await tg.wait_for_sent(lambda m: m["chat_id"] == OWNER, timeout=WAIT)
        assert notice["text"].startswith("New node pairing request")
        assert "Node id: pixel-9" in notice["text"]
        assert rid in notice["text"]
        buttons = notice["reply_markup"]["inline_keyboard"][0]
        assert [(b["text"], b["callback_data"]) for b in buttons] == [
            ("Approve", f"/nodes approve {rid}"),
            ("Reject", f"/nodes reject {rid}"),
        ]
        loop = asyncio.get_running_loop()
        started = loop.time()
        tg.press_button(OWNER, notice["message_id"], buttons[0]["callback_data"])
        event = await node.next_event("node.pair.resolved", wait=WAIT)
        assert loop.time() - started < 2.0
        token = event.pop("token")
        assert event == {"requestId": rid, "nodeId": "pixel-9", "decision": "approved"}
        await tg.wait_until(lambda: len(tg.edits) >= 1, timeout=WAIT)
        assert tg.edits[0]["text"] == (
            "Approved node pixel-9 (Pixel 9): its token was sent to the waiting node."
        )
        assert await node.call("node.connect", {"nodeId": "pixel-9", "token": token}) == {
            "nodeId": "pixel-9",
            "displayName": "Pixel 9",
        }

        tg.dm(OWNER, "/nodes revoke pixel-9")
        assert await node.next_event("node.pair.resolved", wait=WAIT) == {
            "requestId": None,
            "nodeId": "pixel-9",
            "decision": "revoked",
        }
        await tg.wait_for_sent(
            lambda m: m["chat_id"] == OWNER and m["text"].startswith("Revoked node pixel-9"),
            timeout=WAIT,
        )
    assert token not in json.dumps([tg.sent, tg.edits, tg.calls], default=str)
    checker = await gw.peer()
    assert (await checker.fail("node.connect", {"nodeId": "pixel-9", "token": token}))[
        "code"
    ] == "UNAUTHORIZED"


async def test_owner_rejects_by_button_and_the_node_hears(gw: Gw) -> None:
    node, ask = await gw.ask("tab-1", displayName="Tab")
    [notice] = await gw.tg.wait_for_sent(lambda m: m["chat_id"] == OWNER, timeout=WAIT)
    reject = notice["reply_markup"]["inline_keyboard"][0][1]["callback_data"]
    assert reject == f"/nodes reject {ask['requestId']}"
    gw.tg.press_button(OWNER, notice["message_id"], reject)
    assert await node.event("node.pair.resolved") == resolved(
        ask["requestId"], "tab-1", "rejected"
    )
    assert gw.app.nodes.paired() == []


async def test_a_stranger_pressing_approve_changes_nothing(gw: Gw) -> None:
    node, ask = await gw.ask("tab-1")
    [notice] = await gw.tg.wait_for_sent(lambda m: m["chat_id"] == OWNER, timeout=WAIT)
    approve = notice["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    gw.tg.press_button(666, notice["message_id"], approve)
    gw.tg.dm(666, f"/nodes approve {ask['requestId']}")
    assert await node.quiet(0.5) == []
    assert gw.app.nodes.paired() == []


async def test_three_wrong_operator_tokens_close_the_connection(gw: Gw) -> None:
    peer = await gw.peer()
    for _ in range(3):
        assert (await peer.fail("operator.connect", {"token": "guess"}))["code"] == "UNAUTHORIZED"
    with pytest.raises(Closed):
        await peer.answer()
    assert peer.close_code == 4003
    other = await gw.peer()
    assert await other.ok("operator.connect", {"token": OP_TOKEN}) == {"role": "operator"}
