"""What the gateway tests share: raw WebSocket peers, a running app, waiting helpers."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp

from bot.cli.compose import open_app
from bot.core.clock import FakeClock
from bot.core.config import Config
from bot.gateway.tls import digest
from bot.runtime.app import App
from providers.telegram.fake import FakeTelegramServer

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
        await self.send(
            {
                "type": "req",
                "id": rid,
                "method": method,
                "params": {} if params is None else params,
            }
        )
        frame = await self.answer()
        assert frame["id"] == rid, frame
        return frame

    async def ok(self, method: str, params: Any = None) -> Frame:
        """Call and expect success; return the payload (the frame's shape is checked)."""
        frame = await self.call(method, params)
        assert frame == {
            "type": "res",
            "id": frame["id"],
            "ok": True,
            "payload": frame.get("payload"),
        }, frame
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


def resolved(
    request_id: str | None, node_id: str, decision: str, token: str | None = None
) -> Frame:
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
    def fingerprint(self) -> str:
        """The served certificate's fingerprint ("" over plain ws://)."""
        assert self.app.gateway is not None
        return self.app.gateway.fingerprint

    @property
    def url(self) -> str:
        return f"{'wss' if self.fingerprint else 'ws'}://127.0.0.1:{self.port}/"

    async def peer(self) -> Peer:
        """A new connection (over TLS, pinning the served certificate, when it is on)."""
        tls = aiohttp.Fingerprint(digest(self.fingerprint)) if self.fingerprint else True
        peer = Peer(await self.session.ws_connect(self.url, ssl=tls))
        self.peers.append(peer)
        return peer

    async def unix_peer(self) -> Peer:
        assert self.app.gateway is not None
        assert self.app.gateway.socket_path is not None
        session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(self.app.gateway.socket_path))
        )
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

    async def ask(
        self, node_id: str, peer: Peer | None = None, **params: Any
    ) -> tuple[Peer, Frame]:
        node = peer or await self.peer()
        payload = await node.ok("node.pair.request", {"nodeId": node_id, **params})
        return node, payload

    async def approve(self, request_id: str, node_id: str, *, delivered: bool = True) -> None:
        """Approve through the shared operator; check the answer names the node and says
        whether the token reached a waiting connection (``delivered``) or is held."""
        op = await self.op()
        assert await op.ok("node.pair.approve", {"requestId": request_id}) == {
            "nodeId": node_id,
            "requestId": request_id,
            "delivered": delivered,
        }

    async def pair(self, node_id: str, name: str = "") -> tuple[Peer, str]:
        """Ask, approve through the operator, return the waiting connection and its token."""
        node, ask = await self.ask(node_id, displayName=name)
        assert ask["status"] == "pending"
        await self.approve(ask["requestId"], node_id)
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
    return Config.with_any_durations(raw)


@contextlib.asynccontextmanager
async def running(
    tg: FakeTelegramServer, state_dir: Path, clock: FakeClock, **sections: dict[str, Any]
) -> AsyncIterator[Gw]:
    app = open_app(
        make_config(tg, **sections), state_dir=state_dir, clock=clock, watch_interval=0.1
    )
    await app.start()
    gw = Gw(app=app, tg=tg, clock=clock, session=aiohttp.ClientSession())
    try:
        yield gw
    finally:
        await gw.aclose()
        await app.stop()


GwWith = Callable[..., contextlib.AbstractAsyncContextManager[Gw]]
"""What the ``gw_with`` fixture gives: :func:`running` less its first three arguments."""


def connected_nodes(gw: Gw) -> list[str | None]:
    """The node id of each connection the gateway holds (None: not a node)."""
    assert gw.app.gateway is not None
    return [c.node_id for c in gw.app.gateway._peers.conns]


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
