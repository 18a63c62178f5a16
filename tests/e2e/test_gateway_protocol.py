"""The node gateway, frame by frame, with the whole app running (raw WebSocket clients)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import stat
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.app import App
from bot.clock import FakeClock, SystemClock
from bot.config import Config
from bot.gateway import MAX_FRAME
from bot.nodeclient import GatewayCallError, GatewayClient, GatewayUnavailable
from providers.fakes.telegram import FakeTelegramServer
from stores.jsonfile import format_time

pytestmark = pytest.mark.e2e

OWNER = 111
OP_TOKEN = "op-secret-for-the-gateway-tests"
WAIT = 2.0
"""How long a decision may take to reach a node (the protocol promises a second or two)."""
QUIET = 0.3
"""How long a connection listens to show that nothing arrives."""
TTL = timedelta(minutes=5)

Frame = dict[str, Any]


class Closed(Exception):
    """The server closed the connection while a frame was awaited."""


class Peer:
    """One raw WebSocket connection that records every frame it receives, in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.received: list[Frame] = []
        self.close_code: int | None = None
        self._inbox: asyncio.Queue[Frame | None] = asyncio.Queue()
        self._held: list[Frame] = []
        self._ids = itertools.count(1)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                msg = await self.ws.receive()
                if msg.type is aiohttp.WSMsgType.TEXT:
                    frame = json.loads(msg.data)
                    assert isinstance(frame, dict), msg.data
                    self.received.append(frame)
                    self._inbox.put_nowait(frame)
                elif msg.type is aiohttp.WSMsgType.CLOSE:
                    self.close_code = msg.data
                elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break
        finally:
            self._inbox.put_nowait(None)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def send_text(self, text: str) -> None:
        await self.ws.send_str(text)

    async def send(self, frame: Any) -> None:
        await self.ws.send_str(json.dumps(frame))

    async def _next(self, wait: float) -> Frame:
        try:
            frame = await asyncio.wait_for(self._inbox.get(), wait)
        except TimeoutError:
            raise AssertionError(f"nothing arrived within {wait}s") from None
        if frame is None:
            self._inbox.put_nowait(None)
            raise Closed(self.close_code)
        return frame

    async def answer(self, wait: float = WAIT) -> Frame:
        """The next answer frame; events arriving first are kept for :meth:`event`."""
        while True:
            frame = await self._next(wait)
            if frame.get("type") == "res":
                return frame
            self._held.append(frame)

    async def event(self, name: str, wait: float = WAIT) -> Frame:
        """The next event frame named ``name`` (an answer arriving first is a failure)."""
        for frame in self._held:
            if frame.get("event") == name:
                self._held.remove(frame)
                return frame
        while True:
            frame = await self._next(wait)
            assert frame.get("type") == "event", f"expected an event, got {frame}"
            if frame.get("event") == name:
                return frame
            self._held.append(frame)

    async def quiet(self, wait: float = QUIET) -> list[Frame]:
        """Listen for ``wait`` seconds; return whatever arrived (tests expect nothing)."""
        got = list(self._held)
        self._held.clear()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while (left := deadline - loop.time()) > 0:
            try:
                frame = await asyncio.wait_for(self._inbox.get(), left)
            except TimeoutError:
                break
            if frame is None:
                self._inbox.put_nowait(None)
                break
            got.append(frame)
        return got

    async def call(self, method: str, params: Any = None, *, req_id: Any = None) -> Frame:
        """Send a request and return the whole answer frame (checked to carry the same id)."""
        rid = req_id if req_id is not None else f"r{next(self._ids)}"
        await self.send({"type": "req", "id": rid, "method": method,
                         "params": {} if params is None else params})
        frame = await self.answer()
        assert frame["id"] == rid, frame
        return frame

    async def ok(self, method: str, params: Any = None) -> Frame:
        """Call and expect success; return the payload (the frame's shape is checked)."""
        frame = await self.call(method, params)
        assert frame == {"type": "res", "id": frame["id"], "ok": True,
                         "payload": frame.get("payload")}, frame
        assert isinstance(frame["payload"], dict)
        return frame["payload"]

    async def fail(self, method: str, params: Any = None) -> Frame:
        """Call and expect an error answer; return ``{"code", "message"}``."""
        frame = await self.call(method, params)
        assert_error_shape(frame, frame["id"])
        return frame["error"]  # type: ignore[no-any-return]


def assert_error_shape(frame: Frame, req_id: Any) -> None:
    assert set(frame) == {"type", "id", "ok", "error"}, frame
    assert frame["type"] == "res"
    assert frame["id"] == req_id
    assert frame["ok"] is False
    assert set(frame["error"]) == {"code", "message"}, frame
    assert isinstance(frame["error"]["code"], str)
    assert isinstance(frame["error"]["message"], str)
    assert frame["error"]["message"]


def resolved(request_id: str | None, node_id: str, decision: str,
             token: str | None = None) -> Frame:
    payload: Frame = {"requestId": request_id, "nodeId": node_id, "decision": decision}
    if token is not None:
        payload["token"] = token
    return {"type": "event", "event": "node.pair.resolved", "payload": payload}


def mentions_a_token(frames: list[Frame]) -> bool:
    text = json.dumps(frames).lower()
    return "token" in text


@dataclass
class Gw:
    """A running app with its gateway, and the connections a test opened to it."""

    app: App
    tg: FakeTelegramServer
    clock: FakeClock
    session: aiohttp.ClientSession
    peers: list[Peer] = field(default_factory=list)
    sessions: list[aiohttp.ClientSession] = field(default_factory=list)
    _operator: Peer | None = None

    @property
    def port(self) -> int:
        assert self.app.gateway is not None
        assert self.app.gateway.port is not None
        return self.app.gateway.port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    async def peer(self) -> Peer:
        peer = Peer(await self.session.ws_connect(self.url))
        self.peers.append(peer)
        return peer

    async def unix_peer(self) -> Peer:
        assert self.app.gateway is not None
        assert self.app.gateway.socket_path is not None
        session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(self.app.gateway.socket_path)))
        self.sessions.append(session)
        peer = Peer(await session.ws_connect("http://localhost/"))
        self.peers.append(peer)
        return peer

    async def operator(self) -> Peer:
        """A new TCP connection that has done ``operator.connect``."""
        peer = await self.peer()
        assert await peer.ok("operator.connect", {"token": OP_TOKEN}) == {"role": "operator"}
        return peer

    async def op(self) -> Peer:
        """One shared operator connection for tests that only need approvals done."""
        if self._operator is None:
            self._operator = await self.operator()
        return self._operator

    async def ask(self, node_id: str, peer: Peer | None = None, **params: Any
                  ) -> tuple[Peer, Frame]:
        node = peer or await self.peer()
        payload = await node.ok("node.pair.request", {"nodeId": node_id, **params})
        return node, payload

    async def pair(self, node_id: str, name: str = "") -> tuple[Peer, str]:
        """Ask, approve through the operator, return the waiting connection and its token."""
        node, ask = await self.ask(node_id, displayName=name)
        assert ask["status"] == "pending"
        op = await self.op()
        assert await op.ok("node.pair.approve", {"requestId": ask["requestId"]}) == {
            "nodeId": node_id, "delivered": True}
        event = await node.event("node.pair.resolved")
        token = event["payload"]["token"]
        assert isinstance(token, str)
        return node, token

    async def aclose(self) -> None:
        for peer in self.peers:
            await peer.close()
        for session in self.sessions:
            await session.close()
        await self.session.close()


def make_config(tg: FakeTelegramServer, **sections: dict[str, Any]) -> Config:
    raw: dict[str, Any] = {
        "owners": [{"provider": "telegram", "user_id": str(OWNER)}],
        "pairing": {"prune_interval": "0.2s"},
        "gateway": {"port": 0, "operator_token": OP_TOKEN},
        "providers": {"telegram": {"token": tg.token, "api_base_url": tg.base_url}},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return Config.with_any_durations(raw)  # a 0.2 s pruner: no user may set one


@contextlib.asynccontextmanager
async def running(tg: FakeTelegramServer, state_dir: Path, clock: FakeClock,
                  **sections: dict[str, Any]) -> AsyncIterator[Gw]:
    app = App(make_config(tg, **sections), state_dir=state_dir, clock=clock,
              watch_interval=0.1)
    await app.start()
    gw = Gw(app=app, tg=tg, clock=clock, session=aiohttp.ClientSession())
    try:
        yield gw
    finally:
        await gw.aclose()
        await app.stop()


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer() as fake:
        yield fake


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock(SystemClock().now())


@pytest.fixture
async def gw(tg: FakeTelegramServer, state_dir: Path, fake_clock: FakeClock
             ) -> AsyncIterator[Gw]:
    async with running(tg, state_dir, fake_clock) as started:
        yield started


def connected_nodes(gw: Gw) -> list[str | None]:
    """The node id of each connection the gateway holds (None: not a node)."""
    assert gw.app.gateway is not None
    return [c.node_id for c in gw.app.gateway._conns]


async def disconnect(gw: Gw, peer: Peer) -> None:
    """Close ``peer`` and wait until the gateway has let go of the connection."""
    before = len(connected_nodes(gw))
    await peer.close()
    await within(WAIT, lambda: len(connected_nodes(gw)) < before)


async def within(seconds: float, condition: Callable[[], bool]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        assert loop.time() < deadline, f"condition not met within {seconds}s"
        await asyncio.sleep(0.01)


# --- HTTP and frame shapes ---------------------------------------------------------------------


async def test_healthz_answers_on_the_gateway_port(gw: Gw) -> None:
    async with gw.session.get(f"http://127.0.0.1:{gw.port}/healthz") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok"}


async def test_pair_request_answer_has_the_exact_shape_and_is_idempotent(gw: Gw) -> None:
    node = await gw.peer()
    params = {"nodeId": "pixel-9", "displayName": "Pixel 9", "platform": "android",
              "version": "1.4.0"}
    await node.send({"type": "req", "id": "a1", "method": "node.pair.request",
                     "params": params})
    first = await node.answer()
    rid = first["payload"]["requestId"]
    assert first == {"type": "res", "id": "a1", "ok": True, "payload": {
        "status": "pending", "requestId": rid,
        "expiresAt": format_time(gw.clock.now() + TTL)}}
    assert isinstance(rid, str)
    assert len(rid) == 10

    gw.clock.advance(timedelta(minutes=1))
    await node.send({"type": "req", "id": 7, "method": "node.pair.request", "params": params})
    again = await node.answer()
    assert again["id"] == 7
    assert again["payload"] == first["payload"], "same request, same expiry (from first ask)"

    other = await gw.peer()
    _, third = await gw.ask("pixel-9", other)
    assert third["requestId"] == rid
    [pending] = gw.app.nodes.pending()
    assert (pending.node_id, pending.display_name, pending.platform, pending.version) == (
        "pixel-9", "Pixel 9", "android", "1.4.0")


async def test_an_already_paired_node_gets_paired_without_a_token(gw: Gw) -> None:
    _, token = await gw.pair("pixel-9")
    node, again = await gw.ask("pixel-9")
    assert again == {"status": "paired"}
    assert await node.quiet() == []
    assert gw.app.nodes.pending() == []
    assert await node.ok("node.pair.verify", {"nodeId": "pixel-9", "token": token}) == {
        "ok": True, "nodeId": "pixel-9"}


async def test_repair_asks_again_and_approval_rotates_the_token(gw: Gw) -> None:
    first_conn, old = await gw.pair("pixel-9", "Pixel 9")
    assert await first_conn.ok("node.connect", {"nodeId": "pixel-9", "token": old}) == {
        "nodeId": "pixel-9", "displayName": "Pixel 9"}
    ask = await first_conn.ok("node.pair.request", {"nodeId": "pixel-9", "repair": True,
                                                    "displayName": "Pixel 9 Pro"})
    assert ask["status"] == "pending"
    op = await gw.op()
    assert await op.ok("node.pair.approve", {"requestId": ask["requestId"]}) == {
        "nodeId": "pixel-9", "delivered": True}
    event = await first_conn.event("node.pair.resolved")
    new = event["payload"]["token"]
    assert event == resolved(ask["requestId"], "pixel-9", "approved", new)
    assert new != old

    checker = await gw.peer()
    for method in ("node.connect", "node.pair.verify"):
        error = await checker.fail(method, {"nodeId": "pixel-9", "token": old})
        assert error["code"] == "UNAUTHORIZED"
    assert await checker.ok("node.pair.verify", {"nodeId": "pixel-9", "token": new}) == {
        "ok": True, "nodeId": "pixel-9"}
    assert await checker.ok("node.connect", {"nodeId": "pixel-9", "token": new}) == {
        "nodeId": "pixel-9", "displayName": "Pixel 9 Pro"}
    assert len(gw.app.nodes.paired()) == 1


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
    assert (await peer.fail("operator.connect", {"token": OP_TOKEN[:-1]}))["code"] == \
        "UNAUTHORIZED"
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
        "pending": [{"requestId": ask["requestId"], "nodeId": "tab-1", "displayName": "Tab",
                     "platform": "ios", "version": "2.0", "remote": "127.0.0.1",
                     "createdAt": format_time(gw.clock.now())}],
        "paired": [{"nodeId": "pixel-9", "displayName": "Pixel 9", "platform": "",
                    "version": "", "createdAt": format_time(gw.clock.now()),
                    "approvedAt": format_time(gw.clock.now()), "lastConnectedAt": None}],
    }
    nodes = await op.ok("node.list")
    assert [(n["nodeId"], n["connected"]) for n in nodes["nodes"]] == [("pixel-9", False)]
    assert not mentions_a_token(op.received), op.received


async def test_operator_sees_requests_and_approves_but_never_sees_the_token(gw: Gw) -> None:
    op = await gw.operator()
    node, ask = await gw.ask("pixel-9", displayName="Pixel 9", platform="android")
    requested = await op.event("node.pair.requested")
    assert requested == {"type": "event", "event": "node.pair.requested", "payload": {
        "requestId": ask["requestId"], "nodeId": "pixel-9", "displayName": "Pixel 9",
        "platform": "android", "version": "", "remote": "127.0.0.1",
        "createdAt": format_time(gw.clock.now())}}
    await gw.ask("pixel-9", node)
    assert await op.quiet() == [], "asking again is not a new request"

    assert await op.ok("node.pair.approve", {"requestId": ask["requestId"].lower()}) == {
        "nodeId": "pixel-9", "delivered": True}
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
        "nodeId": "pixel-9", "displayName": "Pixel 9"}
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
        "requestId": ask["requestId"], "nodeId": "pixel-9"}
    assert await node.event("node.pair.resolved") == resolved(ask["requestId"], "pixel-9",
                                                              "rejected")
    assert gw.app.nodes.paired() == []
    assert (await op.fail("node.pair.approve", {"requestId": ask["requestId"]}))["code"] == \
        "NOT_FOUND"
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
        "code"] == "UNAUTHORIZED"
    assert (await op.fail("node.revoke", {"nodeId": "pixel-9"}))["code"] == "NOT_FOUND"


async def test_revoke_answers_the_operator_even_if_the_node_does_not_read(gw: Gw) -> None:
    _, token = await gw.pair("pixel-9")
    silent = await gw.session.ws_connect(gw.url)
    try:
        await silent.send_str(json.dumps({"type": "req", "id": 1, "method": "node.connect",
                                          "params": {"nodeId": "pixel-9", "token": token}}))
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
    op = await gw.op()
    assert (await op.ok("node.pair.approve", {"requestId": ask_a["requestId"]}))[
        "delivered"] is True
    token_a = (await a.event("node.pair.resolved"))["payload"]["token"]
    assert await b.quiet() == []
    assert (await op.ok("node.pair.approve", {"requestId": ask_b["requestId"]}))[
        "delivered"] is True
    token_b = (await b.event("node.pair.resolved"))["payload"]["token"]
    assert token_a != token_b
    assert await a.quiet() == []
    assert [f for f in b.received if f.get("type") == "event"] == [
        resolved(ask_b["requestId"], "node-b", "approved", token_b)]
    gw.clock.advance(TTL * 2)
    assert await a.quiet(0.7) == [], "an approved request does not expire later"
    assert await b.quiet(0.1) == []


async def test_the_newest_connection_that_asked_hears_the_decision(gw: Gw) -> None:
    first, ask = await gw.ask("pixel-9")
    second, _ = await gw.ask("pixel-9")
    op = await gw.op()
    await op.ok("node.pair.approve", {"requestId": ask["requestId"]})
    assert (await second.event("node.pair.resolved"))["payload"]["decision"] == "approved"
    assert await first.quiet() == []


# --- approval while the node is away ----------------------------------------------------------


async def test_approval_while_disconnected_is_held_and_handed_over_once(gw: Gw) -> None:
    node, ask = await gw.ask("pixel-9")
    await disconnect(gw, node)
    op = await gw.op()
    assert await op.ok("node.pair.approve", {"requestId": ask["requestId"]}) == {
        "nodeId": "pixel-9", "delivered": False}
    gw.clock.advance(TTL - timedelta(seconds=1))
    back, got = await gw.ask("pixel-9")
    token = got.pop("token")
    assert got == {"status": "paired", "requestId": ask["requestId"]}
    assert await back.ok("node.connect", {"nodeId": "pixel-9", "token": token}) == {
        "nodeId": "pixel-9", "displayName": ""}
    _, later = await gw.ask("pixel-9")
    assert later == {"status": "paired"}
    assert token not in json.dumps(op.received)


async def test_a_held_token_is_dropped_after_the_ttl(gw: Gw) -> None:
    node, ask = await gw.ask("pixel-9")
    await disconnect(gw, node)
    op = await gw.op()
    assert (await op.ok("node.pair.approve", {"requestId": ask["requestId"]}))[
        "delivered"] is False
    gw.clock.advance(TTL + timedelta(seconds=1))
    _, late = await gw.ask("pixel-9")
    assert late == {"status": "paired"}, "too late: the node must ask again with repair"


async def test_revoking_a_node_drops_its_held_token(gw: Gw) -> None:
    node, ask = await gw.ask("pixel-9")
    await disconnect(gw, node)
    op = await gw.op()
    assert (await op.ok("node.pair.approve", {"requestId": ask["requestId"]}))[
        "delivered"] is False
    await op.ok("node.revoke", {"nodeId": "pixel-9"})
    _, again = await gw.ask("pixel-9")
    assert again["status"] == "pending", again
    assert "token" not in again


# --- expiry ------------------------------------------------------------------------------------


async def test_expiry_reaches_the_waiting_node(gw: Gw) -> None:
    node, ask = await gw.ask("pixel-9")
    gw.clock.advance(TTL + timedelta(seconds=1))
    assert await node.event("node.pair.resolved") == resolved(ask["requestId"], "pixel-9",
                                                              "expired")
    op = await gw.op()
    assert (await op.fail("node.pair.approve", {"requestId": ask["requestId"]}))["code"] == \
        "NOT_FOUND"
    _, fresh = await gw.ask("pixel-9", node)
    assert fresh["status"] == "pending"
    assert fresh["requestId"] != ask["requestId"]
    assert await node.quiet() == [], "told once, though both the prune and the sweep look"


async def test_expiry_reaches_the_node_when_another_request_drops_it_first(
        tg: FakeTelegramServer, state_dir: Path, fake_clock: FakeClock) -> None:
    async with running(tg, state_dir, fake_clock, pairing={"prune_interval": "1h"}) as gw:
        node, ask = await gw.ask("pixel-9")
        gw.clock.advance(TTL + timedelta(seconds=1))
        await gw.ask("tab-1")  # the store drops the expired request on the way
        assert await node.event("node.pair.resolved") == resolved(ask["requestId"],
                                                                  "pixel-9", "expired")


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
    assert [(p["nodeId"], p["remote"]) for p in listing["pending"]] == [("pixel-9",
                                                                         "127.0.0.1")]
    assert await local.ok("node.pair.approve", {"requestId": ask["requestId"],
                                                "actor": "owner:cli"}) == {
        "nodeId": "pixel-9", "delivered": True}
    token = (await node.event("node.pair.resolved"))["payload"]["token"]
    assert token not in json.dumps(local.received)
    records = gw.app.store.read_audit()
    assert [(r["event"], r["actor"]) for r in records if r["event"] == "node.approve"] == [
        ("node.approve", "owner:cli")]


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
    ('{"type": "res", "id": "t1", "method": "node.list", "params": {}}', "t1",
     "INVALID_REQUEST", "type"),
    ('{"id": "t2", "method": "node.list"}', "t2", "INVALID_REQUEST", "type"),
    ('{"type": "req", "method": "node.list", "params": {}}', None, "INVALID_REQUEST", "id"),
    ('{"type": "req", "id": null, "method": "node.list"}', None, "INVALID_REQUEST", "id"),
    ('{"type": "req", "id": true, "method": "node.list"}', None, "INVALID_REQUEST", "id"),
    ('{"type": "req", "id": {"a": 1}, "method": "node.list"}', None, "INVALID_REQUEST", "id"),
    ('{"type": "req", "id": "t3", "params": {}}', "t3", "INVALID_REQUEST", "method"),
    ('{"type": "req", "id": "t4", "method": 5}', "t4", "INVALID_REQUEST", "method"),
    ('{"type": "req", "id": "t5", "method": "node.list", "params": []}', "t5",
     "INVALID_REQUEST", "params"),
    ('{"type": "req", "id": "t6", "method": "node.list", "params": "x"}', "t6",
     "INVALID_REQUEST", "params"),
    ('{"type": "req", "id": "t7", "method": "node.list", "params": null}', "t7",
     "INVALID_REQUEST", "params"),
    ('{"type": "req", "id": "t8", "method": "node.teleport", "params": {}}', "t8",
     "UNKNOWN_METHOD", "method"),
    ('{"type": "req", "id": "t9", "method": "__init__", "params": {}}', "t9",
     "UNKNOWN_METHOD", "method"),
    ('{"type": "req", "id": 99, "method": "node.pair.request", "params": {}}', 99,
     "INVALID_REQUEST", "params.nodeId"),
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
        base = json.dumps({"type": "req", "id": "big", "method": "node.pair.request",
                           "params": {"nodeId": "steady", "pad": ""}})
        room = size - len(base.encode())
        pad = fill * (room // len(fill.encode()))
        text = base.replace('"pad": ""', f'"pad": "{pad}"')
        assert len(text.encode()) == size
        return text

    await peer.send_text(padded(MAX_FRAME))
    at_limit = await peer.answer()
    assert (at_limit["id"], at_limit["ok"]) == ("big", True), "exactly 16 KiB is fine"

    for text in (padded(MAX_FRAME + 1), padded(MAX_FRAME + 2, "é"),
                 padded(MAX_FRAME * 5)):
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
    assert (await other.fail("node.pair.request", {"nodeId": "node-4"}))["code"] == \
        "RATE_LIMITED", "the limit is per address, not per connection"
    again = await peer.ok("node.pair.request", {"nodeId": "node-0"})
    assert again["requestId"] == asks[0]["requestId"], "re-asking is not limited"
    assert len(gw.app.nodes.pending()) == 3
    op = await gw.op()
    await op.ok("node.pair.reject", {"requestId": asks[1]["requestId"]})
    assert (await peer.ok("node.pair.request", {"nodeId": "node-3"}))["status"] == "pending"
    assert (await peer.fail("node.pair.request", {"nodeId": "node-5"}))["code"] == \
        "RATE_LIMITED", "room for one more was taken"


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
            await client.call("node.pair.verify", {"nodeId": "pixel-9", "token": token},
                              wait=WAIT)
        assert asyncio.get_running_loop().time() - started < 1.0


async def test_gateway_client_raises_call_errors_with_their_code(gw: Gw) -> None:
    async with GatewayClient.open(gw.url) as client:
        with pytest.raises(GatewayCallError) as caught:
            await client.call("node.connect", {"nodeId": "pixel-9", "token": "nope"})
        assert caught.value.code == "UNAUTHORIZED"
        with pytest.raises(GatewayCallError) as unknown:
            await client.call("node.fly")
        assert unknown.value.code == "UNKNOWN_METHOD"
        assert (await client.call("node.pair.request", {"nodeId": "pixel-9"}))["status"] == \
            "pending"
    with pytest.raises(GatewayUnavailable):
        async with GatewayClient.open("ws://127.0.0.1:1/", wait=1):
            pass


# --- the owner's chat --------------------------------------------------------------------------


async def test_owner_approves_by_button_and_the_node_gets_its_token(gw: Gw) -> None:
    tg = gw.tg
    async with GatewayClient.open(gw.url) as node:
        ask = await node.call("node.pair.request", {"nodeId": "pixel-9",
                                                    "displayName": "Pixel 9",
                                                    "platform": "android"})
        rid = ask["requestId"]
        [notice] = await tg.wait_for_sent(lambda m: m["chat_id"] == OWNER, timeout=WAIT)
        assert notice["text"].startswith("New node pairing request")
        assert "Node id: pixel-9" in notice["text"]
        assert rid in notice["text"]
        buttons = notice["reply_markup"]["inline_keyboard"][0]
        assert [(b["text"], b["callback_data"]) for b in buttons] == [
            ("Approve", f"/nodes approve {rid}"), ("Reject", f"/nodes reject {rid}")]
        loop = asyncio.get_running_loop()
        started = loop.time()
        tg.press_button(OWNER, notice["message_id"], buttons[0]["callback_data"])
        event = await node.next_event("node.pair.resolved", wait=WAIT)
        assert loop.time() - started < 2.0
        token = event.pop("token")
        assert event == {"requestId": rid, "nodeId": "pixel-9", "decision": "approved"}
        await tg.wait_until(lambda: len(tg.edits) >= 1, timeout=WAIT)
        assert tg.edits[0]["text"] == ("Approved node pixel-9 (Pixel 9): its token was sent "
                                       "to the waiting node.")
        assert await node.call("node.connect", {"nodeId": "pixel-9", "token": token}) == {
            "nodeId": "pixel-9", "displayName": "Pixel 9"}

        tg.dm(OWNER, "/nodes revoke pixel-9")
        assert await node.next_event("node.pair.resolved", wait=WAIT) == {
            "requestId": None, "nodeId": "pixel-9", "decision": "revoked"}
        await tg.wait_for_sent(lambda m: m["chat_id"] == OWNER and
                               m["text"].startswith("Revoked node pixel-9"), timeout=WAIT)
    assert token not in json.dumps([tg.sent, tg.edits, tg.calls], default=str)
    checker = await gw.peer()
    assert (await checker.fail("node.connect", {"nodeId": "pixel-9", "token": token}))[
        "code"] == "UNAUTHORIZED"


async def test_owner_rejects_by_button_and_the_node_hears(gw: Gw) -> None:
    node, ask = await gw.ask("tab-1", displayName="Tab")
    [notice] = await gw.tg.wait_for_sent(lambda m: m["chat_id"] == OWNER, timeout=WAIT)
    reject = notice["reply_markup"]["inline_keyboard"][0][1]["callback_data"]
    assert reject == f"/nodes reject {ask['requestId']}"
    gw.tg.press_button(OWNER, notice["message_id"], reject)
    assert await node.event("node.pair.resolved") == resolved(ask["requestId"], "tab-1",
                                                              "rejected")
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
        assert (await peer.fail("operator.connect", {"token": "guess"}))["code"] == \
            "UNAUTHORIZED"
    with pytest.raises(Closed):
        await peer.answer()
    assert peer.close_code == 4003
    other = await gw.peer()
    assert await other.ok("operator.connect", {"token": OP_TOKEN}) == {"role": "operator"}
