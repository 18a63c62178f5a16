"""The node gateway: a WebSocket endpoint where devices ask to join and paired ones connect.

Frames (JSON text, one object each)::

    request  {"type": "req", "id": "<any>", "method": "<name>", "params": {...}}
    answer   {"type": "res", "id": "<same>", "ok": true, "payload": {...}}
             {"type": "res", "id": "<same>", "ok": false, "error": {"code", "message"}}
    event    {"type": "event", "event": "<name>", "payload": {...}}

Node methods: ``node.pair.request``, ``node.pair.verify``, ``node.connect``. Operator methods
(``node.pair.list``, ``node.pair.approve``, ``node.pair.reject``, ``node.list``,
``node.revoke``) need ``operator.connect {token}`` first over TCP; a connection on the local
Unix socket in the state dir (0600 in a 0700 dir: only the owner's user can open it) is an
operator from the start, which is how ``pairbot nodes approve`` reaches a running bot.

A waiting node gets ``node.pair.resolved {requestId, decision, token?}``; the token goes to
that node's connection only, once. See ``docs/gateway-protocol.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from bot.clock import Clock, iso
from bot.errors import LookupFailed
from bot.models import NodeRequest
from bot.nodes import NodeService

log = logging.getLogger(__name__)

MAX_FRAME = 16 * 1024
"""Frames larger than this get a FRAME_TOO_LARGE error; ten times this closes the socket."""
SOCKET_NAME = "gateway.sock"
MAX_BAD_OPERATOR_TOKENS = 3
"""Wrong operator tokens one connection may send before it is closed."""
_UNIX_PATH_MAX = 107


class GatewayError(Exception):
    """An error answer: a stable code and a message safe to show."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(eq=False)
class _Conn:
    ws: web.WebSocketResponse
    remote: str
    operator: bool = False
    node_id: str | None = None
    bad_tokens: int = 0

    async def send(self, frame: dict[str, Any]) -> bool:
        if self.ws.closed:
            return False
        try:
            await self.ws.send_str(json.dumps(frame))
        except (ConnectionError, RuntimeError):
            return False
        return True


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewaySettings:
    """Where the gateway listens and what it allows."""

    host: str = "127.0.0.1"
    port: int = 18789
    operator_token: str | None = None
    socket_dir: Path | None = None
    max_pending_per_address: int = 3
    max_pending: int = 50
    sweep_interval: float = 0.5
    """Seconds between checks for expired requests whose node is still waiting."""


class Gateway:
    """Serves nodes and operators; pushes resolutions to waiting nodes."""

    def __init__(
        self,
        nodes: NodeService,
        *,
        clock: Clock,
        settings: GatewaySettings,
        on_request: Callable[[NodeRequest], Awaitable[None]],
        on_resolved: Callable[[str, str, str | None, str | None], Awaitable[bool]],
    ) -> None:
        self._nodes = nodes
        self._clock = clock
        self._settings = settings
        self._on_request = on_request
        self._on_resolved = on_resolved
        self._conns: set[_Conn] = set()
        self._waiting: dict[str, tuple[str, _Conn]] = {}
        """nodeId → (requestId, the connection that asked last): who hears the decision."""
        self._asked: dict[str, tuple[str, datetime]] = {}
        """nodeId → (requestId, expiry) of each request handed out here and not yet decided."""
        self._undelivered: dict[str, tuple[str | None, str, datetime]] = {}
        self._runners: list[web.AppRunner] = []
        self._sweeper: asyncio.Task[None] | None = None
        self.port: int | None = None
        self.socket_path: Path | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on host:port (and the state dir's Unix socket)."""
        runner = await self._runner(local=False)
        site = web.TCPSite(runner, self._settings.host, self._settings.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._settings.port
        if self._settings.socket_dir is not None:
            await self._start_unix(self._settings.socket_dir / SOCKET_NAME)
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="pairbot-gateway-sweep")
        log.info("gateway listening on %s:%s", self._settings.host, self.port)

    async def _runner(self, *, local: bool) -> web.AppRunner:
        async def ws_handler(request: web.Request) -> web.StreamResponse:
            return await self._ws(request, local=local)

        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/", ws_handler)
        app.router.add_get("/ws", ws_handler)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        self._runners.append(runner)
        return runner

    async def _start_unix(self, path: Path) -> None:
        if len(str(path)) > _UNIX_PATH_MAX:
            log.warning("state dir path too long for a Unix socket; local operator socket off")
            return
        _remove(path)
        site = web.UnixSite(await self._runner(local=True), str(path))
        await site.start()
        _private(path)
        self.socket_path = path

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for conn in list(self._conns):
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001, message=b"server shutting down")
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        if self.socket_path is not None:
            _remove(self.socket_path)
            self.socket_path = None

    # --- HTTP ------------------------------------------------------------------------------------

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _ws(self, request: web.Request, *, local: bool) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME * 10, heartbeat=30)
        await ws.prepare(request)
        conn = _Conn(ws=ws, remote="local" if local else (request.remote or "?"),
                     operator=local)
        self._conns.add(conn)
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await self._frame(conn, msg.data)
                elif msg.type is WSMsgType.BINARY:
                    await self._error(conn, None, "INVALID_REQUEST", "frames must be JSON text")
                elif msg.type is WSMsgType.ERROR:
                    break
        finally:
            self._conns.discard(conn)
            for node_id in [n for n, (_, c) in self._waiting.items() if c is conn]:
                del self._waiting[node_id]
        return ws

    # --- frames ----------------------------------------------------------------------------------

    async def _frame(self, conn: _Conn, data: str) -> None:
        if len(data) > MAX_FRAME or len(data.encode()) > MAX_FRAME:
            await self._error(conn, None, "FRAME_TOO_LARGE", f"frames are limited to {MAX_FRAME}"
                              " bytes")
            return
        try:
            frame = json.loads(data)
        except (ValueError, RecursionError):
            await self._error(conn, None, "INVALID_REQUEST", "not valid JSON")
            return
        req_id = frame.get("id") if isinstance(frame, dict) else None
        if not isinstance(req_id, str | int) or isinstance(req_id, bool):
            req_id = None
        if (not isinstance(frame, dict) or frame.get("type") != "req"
                or not isinstance(frame.get("method"), str) or req_id is None):
            await self._error(conn, req_id, "INVALID_REQUEST",
                              'expected {"type": "req", "id", "method", "params"}')
            return
        params = frame.get("params", {})
        if not isinstance(params, dict):
            await self._error(conn, req_id, "INVALID_REQUEST", "params must be an object")
            return
        handler = self._methods().get(frame["method"])
        if handler is None:
            await self._error(conn, req_id, "UNKNOWN_METHOD", "unknown method")
            return
        try:
            payload = await handler(conn, params)
        except GatewayError as exc:
            await self._error(conn, req_id, exc.code, exc.message)
            if conn.bad_tokens >= MAX_BAD_OPERATOR_TOKENS:
                await conn.ws.close(code=4003, message=b"too many wrong operator tokens")
            return
        except LookupFailed as exc:
            await self._error(conn, req_id, "NOT_FOUND", exc.message)
            return
        except ValueError as exc:
            await self._error(conn, req_id, "INVALID_REQUEST", str(exc))
            return
        except Exception:
            log.exception("gateway method %s failed", frame["method"])
            await self._error(conn, req_id, "INTERNAL", "internal error")
            return
        await conn.send({"type": "res", "id": req_id, "ok": True, "payload": payload})

    async def _error(self, conn: _Conn, req_id: str | int | None, code: str,
                     message: str) -> None:
        await conn.send({"type": "res", "id": req_id, "ok": False,
                         "error": {"code": code, "message": message}})

    def _methods(self) -> dict[str, Callable[[_Conn, dict[str, Any]], Awaitable[Any]]]:
        return {
            "node.pair.request": self._pair_request,
            "node.pair.verify": self._pair_verify,
            "node.connect": self._connect,
            "operator.connect": self._operator_connect,
            "node.pair.list": self._operator(self._pair_list),
            "node.pair.approve": self._operator(self._pair_approve),
            "node.pair.reject": self._operator(self._pair_reject),
            "node.list": self._operator(self._node_list),
            "node.revoke": self._operator(self._node_revoke),
        }

    # --- node methods ----------------------------------------------------------------------------

    async def _pair_request(self, conn: _Conn, params: dict[str, Any]) -> dict[str, Any]:
        node_id = _node_id(params)
        repair = params.get("repair") is True
        held = self._take_undelivered(node_id)
        if held is not None:
            request_id, token = held
            return {"status": "paired", "requestId": request_id, "token": token}
        paired = await asyncio.to_thread(self._nodes.paired)
        if any(n.node_id == node_id for n in paired) and not repair:
            return {"status": "paired"}
        pending = await asyncio.to_thread(self._nodes.pending)
        mine = next((r for r in pending if r.node_id == node_id), None)
        if mine is None:
            self._check_limits(conn, pending)
        ask = await asyncio.to_thread(
            self._nodes.request, node_id,
            display_name=_param(params, "displayName", required=False),
            platform=_param(params, "platform", required=False),
            version=_param(params, "version", required=False),
            remote=conn.remote)
        req = ask.request
        expires = req.created_at + self._nodes.settings.pending_ttl
        self._waiting[req.node_id] = (req.request_id, conn)
        self._asked[req.node_id] = (req.request_id, expires)
        if ask.created:
            await self._broadcast_operators("node.pair.requested", req.as_json())
            await self._on_request(req)
        return {"status": "pending", "requestId": req.request_id,
                "expiresAt": iso(expires)}

    def _check_limits(self, conn: _Conn, pending: list[NodeRequest]) -> None:
        from_here = sum(1 for r in pending if r.remote == conn.remote)
        if from_here >= self._settings.max_pending_per_address:
            raise GatewayError("RATE_LIMITED", "too many pending requests from this address")
        if len(pending) >= self._settings.max_pending:
            raise GatewayError("RATE_LIMITED", "too many pending requests")

    async def _pair_verify(self, _conn: _Conn, params: dict[str, Any]) -> dict[str, Any]:
        node = await asyncio.to_thread(self._nodes.verify, _node_id(params),
                                       _param(params, "token"))
        if node is None:
            raise GatewayError("UNAUTHORIZED", "unknown node or wrong token")
        return {"ok": True, "nodeId": node.node_id}

    async def _connect(self, conn: _Conn, params: dict[str, Any]) -> dict[str, Any]:
        node_id = _node_id(params)
        node = await asyncio.to_thread(self._nodes.verify, node_id, _param(params, "token"))
        if node is None:
            raise GatewayError("UNAUTHORIZED", "unknown node or wrong token")
        await asyncio.to_thread(self._nodes.touch, node_id)
        conn.node_id = node_id
        return {"nodeId": node.node_id, "displayName": node.display_name}

    # --- operator methods ------------------------------------------------------------------------

    async def _operator_connect(self, conn: _Conn, params: dict[str, Any]) -> dict[str, Any]:
        expected = self._settings.operator_token
        given = _param(params, "token")
        if not expected:
            raise GatewayError("UNAUTHORIZED", "operator access is not configured")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            conn.bad_tokens += 1
            log.warning("wrong operator token from %s (%d on this connection)", conn.remote,
                        conn.bad_tokens)
            raise GatewayError("UNAUTHORIZED", "wrong operator token")
        conn.operator = True
        return {"role": "operator"}

    def _operator(self, method: Callable[[dict[str, Any]], Awaitable[Any]]
                  ) -> Callable[[_Conn, dict[str, Any]], Awaitable[Any]]:
        async def guarded(conn: _Conn, params: dict[str, Any]) -> Any:
            if not conn.operator:
                raise GatewayError("UNAUTHORIZED", "operator methods need operator.connect")
            return await method(params)

        return guarded

    async def _pair_list(self, _params: dict[str, Any]) -> dict[str, Any]:
        pending = await asyncio.to_thread(self._nodes.pending)
        paired = await asyncio.to_thread(self._nodes.paired)
        return {"pending": [r.as_json() for r in pending],
                "paired": [n.as_json() for n in paired]}

    async def _node_list(self, _params: dict[str, Any]) -> dict[str, Any]:
        paired = await asyncio.to_thread(self._nodes.paired)
        connected = {c.node_id for c in self._conns if c.node_id}
        return {"nodes": [{**n.as_json(), "connected": n.node_id in connected}
                          for n in paired]}

    async def _pair_approve(self, params: dict[str, Any]) -> dict[str, Any]:
        node, token = await asyncio.to_thread(self._nodes.approve, _param(params, "requestId"),
                                              actor=_param(params, "actor", required=False)
                                              or "operator:gateway")
        delivered = await self._on_resolved(node.node_id, "approved", None, token)
        return {"nodeId": node.node_id, "delivered": delivered}

    async def _pair_reject(self, params: dict[str, Any]) -> dict[str, Any]:
        req = await asyncio.to_thread(self._nodes.reject, _param(params, "requestId"),
                                      actor=_param(params, "actor", required=False)
                                      or "operator:gateway")
        await self._on_resolved(req.node_id, "rejected", req.request_id, None)
        return {"requestId": req.request_id, "nodeId": req.node_id}

    async def _node_revoke(self, params: dict[str, Any]) -> dict[str, Any]:
        node = await asyncio.to_thread(self._nodes.revoke, _node_id(params),
                                       actor=_param(params, "actor", required=False)
                                       or "operator:gateway")
        await self._on_resolved(node.node_id, "revoked", None, None)
        return {"nodeId": node.node_id}

    # --- pushing resolutions ---------------------------------------------------------------------

    async def resolve(self, node_id: str, decision: str, *, request_id: str | None,
                      token: str | None) -> bool:
        """Tell the node waiting on ``node_id`` what the owner decided; True if it heard.

        An approval whose node is not connected is held in memory (never on disk) until the
        node asks again or its request would have expired.
        """
        if decision == "revoked":
            self._undelivered.pop(node_id, None)
            for conn in [c for c in self._conns if c.node_id == node_id]:
                await conn.send(_resolved(node_id, None, "revoked", None))
                await conn.ws.close(code=4001, message=b"revoked")
            return True
        asked = self._asked.get(node_id)
        if request_id is None or (asked is not None and asked[0] == request_id):
            self._asked.pop(node_id, None)
        request_id = request_id or (asked[0] if asked is not None else None)
        waiting = self._waiting.get(node_id)
        if waiting is not None and (request_id is None or waiting[0] == request_id):
            del self._waiting[node_id]
            request_id = request_id or waiting[0]
            if await waiting[1].send(_resolved(node_id, request_id, decision, token)):
                self._undelivered.pop(node_id, None)
                return True
        if decision == "approved" and token is not None:
            expires = self._clock.now() + self._nodes.settings.pending_ttl
            self._undelivered[node_id] = (request_id, token, expires)
        return False

    def _take_undelivered(self, node_id: str) -> tuple[str | None, str] | None:
        held = self._undelivered.pop(node_id, None)
        if held is None or self._clock.now() >= held[2]:
            return None
        return held[0], held[1]

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.sweep_interval)
            try:
                await self._sweep()
            except Exception:
                log.exception("gateway sweep failed")

    async def _sweep(self) -> None:
        """Tell waiting nodes their request expired, however it left the store.

        The scheduled prune tells them too, but a request can also be dropped as expired on
        the way by another request or an approval (or by another process), and then nothing
        else would: the node would wait forever.
        """
        now = self._clock.now()
        for node_id, (_, _, until) in list(self._undelivered.items()):
            if now >= until:
                del self._undelivered[node_id]
        for node_id, (request_id, until) in list(self._asked.items()):
            if now < until or self._asked.get(node_id) != (request_id, until):
                continue
            del self._asked[node_id]
            waiting = self._waiting.get(node_id)
            if waiting is not None and waiting[0] == request_id:
                del self._waiting[node_id]
                await waiting[1].send(_resolved(node_id, request_id, "expired", None))

    async def _broadcast_operators(self, event: str, payload: dict[str, Any]) -> None:
        for conn in [c for c in self._conns if c.operator]:
            await conn.send({"type": "event", "event": event, "payload": payload})


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def _private(path: Path) -> None:
    path.chmod(0o600)


def _resolved(node_id: str, request_id: str | None, decision: str,
              token: str | None) -> dict[str, Any]:
    payload: dict[str, Any] = {"requestId": request_id, "nodeId": node_id, "decision": decision}
    if token is not None:
        payload["token"] = token
    return {"type": "event", "event": "node.pair.resolved", "payload": payload}


def _param(params: dict[str, Any], name: str, *, required: bool = True) -> str:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise GatewayError("INVALID_REQUEST", f"params.{name} is required")
        return ""
    if not isinstance(value, str):
        raise GatewayError("INVALID_REQUEST", f"params.{name} must be a string")
    if len(value) > 256:
        raise GatewayError("INVALID_REQUEST", f"params.{name} is too long")
    return value


def _node_id(params: dict[str, Any]) -> str:
    value = _param(params, "nodeId")
    if value != value.strip() or not value.isprintable():
        raise GatewayError("INVALID_REQUEST", "params.nodeId must be printable text without "
                           "leading or trailing spaces")
    return value
