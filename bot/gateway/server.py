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

Every ``node.pair.request`` is its own request, bound to the connection that made it: the
answer carries a pickup secret for that asker alone, and a decision goes only to that
connection, or, if it went away, to whoever comes back showing the pickup secret. A node id
that is already paired is refused unless the asker proves it holds the node's current token
(a re-pair). See ``docs/gateway-protocol.md``.

Connections are capped (in all and per address, within the process's file limit), must
finish their handshake within a deadline, and are closed when idle with nothing to wait
for; trouble is logged once per burst (:mod:`bot.gateway.guard`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from bot.core import codes
from bot.core.clock import Clock, iso
from bot.core.errors import LookupFailed, NodeRefused, StoreError
from bot.core.models import NodeApproval, NodeAsk, NodeRequest
from bot.gateway.guard import BurstLog, ConnectionGuard, FailureLimiter, GuardedSite, GuardSettings
from bot.services.nodes import NodeService

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
    """The node this connection proved to be (``node.connect``)."""
    bad_tokens: int = 0
    asked: dict[str, str] = field(default_factory=dict)
    """nodeId → requestId of the request this connection made (or came back for)."""

    async def send(self, frame: dict[str, Any]) -> bool:
        if self.ws.closed:
            return False
        try:
            await self.ws.send_str(json.dumps(frame))
        except (ConnectionError, RuntimeError):
            return False
        return True


@dataclass(frozen=True, slots=True)
class _Held:
    """A token approved while its asker was away: only the pickup secret collects it."""

    node_id: str
    token: str = field(repr=False)
    pickup_hash: str = field(repr=False)
    until: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewaySettings:
    """Where the gateway listens and what it allows."""

    host: str = "127.0.0.1"
    port: int = 18789
    operator_token: str | None = None
    socket_dir: Path | None = None
    sweep_interval: float = 0.5
    """Seconds between checks for expired requests whose node is still waiting."""
    guard: GuardSettings = field(default_factory=GuardSettings)
    idle_timeout: float = 60.0
    """Seconds a connection may stay silent when it is neither an operator, nor a connected
    node, nor waiting for a decision."""
    operator_failures: int = 5
    """Wrong operator tokens one address may send per ``operator_window``, across
    connections; after that its attempts are refused unseen until the window moves on."""
    operator_window: timedelta = timedelta(minutes=1)


OnRequest = Callable[[NodeAsk], Awaitable[None]]


class Gateway:
    """Serves nodes and operators; pushes each decision to the one asker it belongs to."""

    def __init__(
        self,
        nodes: NodeService,
        *,
        clock: Clock,
        settings: GatewaySettings,
        on_request: OnRequest,
        on_secret: Callable[[str], None],
    ) -> None:
        self._nodes = nodes
        self._clock = clock
        self._settings = settings
        self._on_request = on_request
        self._on_secret = on_secret
        """Told every secret this gateway hands out (pickups, tokens): the logs never show it."""
        self._conns: set[_Conn] = set()
        self._askers: dict[str, _Conn] = {}
        """requestId → the connection that hears its decision."""
        self._asked: dict[str, tuple[str, datetime]] = {}
        """requestId → (nodeId, expiry) of each request handed out here and not yet decided."""
        self._held: dict[str, _Held] = {}
        """requestId → a token approved while the asker was away."""
        self._burst = BurstLog(log, clock=clock)
        self._guard = ConnectionGuard(settings.guard, burst=self._burst)
        self._local_guard = ConnectionGuard(
            GuardSettings(
                max_connections=16,
                max_per_address=16,
                handshake_timeout=settings.guard.handshake_timeout,
            ),
            burst=self._burst,
        )
        self._operator_failures = FailureLimiter(
            clock=clock, limit=settings.operator_failures, window=settings.operator_window
        )
        self._runners: list[web.AppRunner] = []
        self._sweeper: asyncio.Task[None] | None = None
        self.port: int | None = None
        self.socket_path: Path | None = None

    @property
    def max_connections(self) -> int:
        """The connection cap in force (the configured one, bounded by the file limit)."""
        return self._guard.limit

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on host:port (and the state dir's Unix socket)."""
        runner = await self._runner(local=False)
        site = GuardedSite(runner, self._guard, host=self._settings.host, port=self._settings.port)
        await site.start()
        self.port = site.port or self._settings.port
        if self._settings.socket_dir is not None:
            await self._start_unix(self._settings.socket_dir / SOCKET_NAME)
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="pairbot-gateway-sweep")
        log.info(
            "gateway listening on %s:%s (at most %d connections)",
            self._settings.host,
            self.port,
            self._guard.limit,
        )

    async def _runner(self, *, local: bool) -> web.AppRunner:
        async def ws_handler(request: web.Request) -> web.StreamResponse:
            return await self._ws(request, local=local)

        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/", ws_handler)
        app.router.add_get("/ws", ws_handler)
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            keepalive_timeout=self._settings.guard.handshake_timeout,
        )
        await runner.setup()
        self._runners.append(runner)
        return runner

    async def _start_unix(self, path: Path) -> None:
        if len(str(path)) > _UNIX_PATH_MAX:
            log.warning("state dir path too long for a Unix socket; local operator socket off")
            return
        _remove(path)
        site = GuardedSite(await self._runner(local=True), self._local_guard, path=str(path))
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
        (self._local_guard if local else self._guard).handshake_done(request.transport)
        conn = _Conn(ws=ws, remote="local" if local else (request.remote or "?"), operator=local)
        self._conns.add(conn)
        try:
            while True:
                try:
                    msg = await ws.receive(timeout=self._settings.idle_timeout)
                except TimeoutError:
                    if self._busy(conn):
                        continue
                    self._burst.note(
                        "idle",
                        conn.remote,
                        "gateway: closed idle connections "
                        f"(nothing sent for {self._settings.idle_timeout:g}s)",
                    )
                    await ws.close(code=4008, message=b"idle")
                    break
                if msg.type is WSMsgType.TEXT:
                    await self._frame(conn, msg.data)
                elif msg.type is WSMsgType.BINARY:
                    await self._error(conn, None, "INVALID_REQUEST", "frames must be JSON text")
                else:  # CLOSE, CLOSING, CLOSED, ERROR
                    break
        finally:
            self._conns.discard(conn)
            for request_id in [r for r, c in self._askers.items() if c is conn]:
                del self._askers[request_id]
        return ws

    def _busy(self, conn: _Conn) -> bool:
        """A connection with a reason to stay silent: an operator, a connected node, or an
        asker waiting for a decision."""
        return (
            conn.operator
            or conn.node_id is not None
            or any(c is conn for c in self._askers.values())
        )

    # --- frames ----------------------------------------------------------------------------------

    async def _frame(self, conn: _Conn, data: str) -> None:
        if len(data) > MAX_FRAME or len(data.encode()) > MAX_FRAME:
            await self._error(
                conn, None, "FRAME_TOO_LARGE", f"frames are limited to {MAX_FRAME} bytes"
            )
            return
        try:
            frame = json.loads(data)
        except (ValueError, RecursionError):
            await self._error(conn, None, "INVALID_REQUEST", "not valid JSON")
            return
        req_id = frame.get("id") if isinstance(frame, dict) else None
        if not isinstance(req_id, str | int) or isinstance(req_id, bool):
            req_id = None
        if (
            not isinstance(frame, dict)
            or frame.get("type") != "req"
            or not isinstance(frame.get("method"), str)
            or req_id is None
        ):
            await self._error(
                conn,
                req_id,
                "INVALID_REQUEST",
                'expected {"type": "req", "id", "method", "params"}',
            )
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
        except NodeRefused as exc:
            await self._error(conn, req_id, exc.code, exc.message)
            return
        except StoreError as exc:  # one line per burst, not a traceback per frame
            self._burst.note("store", conn.remote, f"gateway: {frame['method']} refused: {exc}")
            await self._error(conn, req_id, "INTERNAL", "pairing state is unavailable")
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

    async def _error(self, conn: _Conn, req_id: str | int | None, code: str, message: str) -> None:
        await conn.send(
            {"type": "res", "id": req_id, "ok": False, "error": {"code": code, "message": message}}
        )

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
        pickup = _param(params, "pickup", required=False)
        if pickup:
            return await self._come_back(conn, node_id, pickup)
        mine = conn.asked.get(node_id)
        if mine is not None:  # the same connection asking again: the same request
            req = await asyncio.to_thread(self._nodes.get_pending, mine)
            if req is not None:
                self._attach(conn, req)
                return self._pending_payload(req)
        ask = await asyncio.to_thread(
            self._nodes.request,
            node_id,
            display_name=_param(params, "displayName", required=False),
            platform=_param(params, "platform", required=False),
            version=_param(params, "version", required=False),
            remote=conn.remote,
            proof=_param(params, "token", required=False) or None,
        )
        if ask.pickup is not None:
            self._on_secret(ask.pickup)  # never logged, by any logger
        self._attach(conn, ask.request)
        await self._broadcast_operators("node.pair.requested", ask.request.as_json())
        await self._on_request(ask)
        return {**self._pending_payload(ask.request), "pickup": ask.pickup}

    async def _come_back(self, conn: _Conn, node_id: str, pickup: str) -> dict[str, Any]:
        """An asker back with its pickup secret: its held token, or its pending request."""
        held = self._take_held(node_id, pickup)
        if held is not None:
            request_id, token = held
            return {"status": "paired", "requestId": request_id, "token": token}
        req = await asyncio.to_thread(self._nodes.claim, node_id, pickup)
        if req is None:
            raise GatewayError(
                "NOT_FOUND",
                "no pending request or held decision matches this "
                "pickup (rejected, expired, already collected, or the bot "
                "restarted after approving); ask again without one",
            )
        self._attach(conn, req)
        return self._pending_payload(req)

    def _attach(self, conn: _Conn, req: NodeRequest) -> None:
        self._askers[req.request_id] = conn
        conn.asked[req.node_id] = req.request_id
        self._asked[req.request_id] = (
            req.node_id,
            req.expires_at(self._nodes.settings.pending_ttl),
        )

    def _pending_payload(self, req: NodeRequest) -> dict[str, Any]:
        return {
            "status": "pending",
            "requestId": req.request_id,
            "expiresAt": iso(req.expires_at(self._nodes.settings.pending_ttl)),
        }

    async def _pair_verify(self, _conn: _Conn, params: dict[str, Any]) -> dict[str, Any]:
        node = await asyncio.to_thread(
            self._nodes.verify, _node_id(params), _param(params, "token")
        )
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
        if self._operator_failures.blocked(conn.remote):
            conn.bad_tokens += 1
            self._burst.note(
                "operator",
                conn.remote,
                "gateway: operator.connect refused "
                f"unseen from {conn.remote}: too many wrong tokens",
            )
            raise GatewayError(
                "RATE_LIMITED", "too many wrong operator tokens from this address; try again later"
            )
        if not hmac.compare_digest(given.encode(), expected.encode()):
            conn.bad_tokens += 1
            failures = self._operator_failures.fail(conn.remote)
            self._burst.note(
                "operator",
                conn.remote,
                f"gateway: wrong operator token from "
                f"{conn.remote} ({failures} in the last "
                f"{int(self._settings.operator_window.total_seconds())}s)",
            )
            raise GatewayError("UNAUTHORIZED", "wrong operator token")
        conn.operator = True
        return {"role": "operator"}

    def _operator(
        self, method: Callable[[dict[str, Any]], Awaitable[Any]]
    ) -> Callable[[_Conn, dict[str, Any]], Awaitable[Any]]:
        async def guarded(conn: _Conn, params: dict[str, Any]) -> Any:
            if not conn.operator:
                raise GatewayError("UNAUTHORIZED", "operator methods need operator.connect")
            return await method(params)

        return guarded

    async def _pair_list(self, _params: dict[str, Any]) -> dict[str, Any]:
        pending = await asyncio.to_thread(self._nodes.pending)
        paired = await asyncio.to_thread(self._nodes.paired)
        return {"pending": [r.as_json() for r in pending], "paired": [n.as_json() for n in paired]}

    async def _node_list(self, _params: dict[str, Any]) -> dict[str, Any]:
        paired = await asyncio.to_thread(self._nodes.paired)
        connected = {c.node_id for c in self._conns if c.node_id}
        return {"nodes": [{**n.as_json(), "connected": n.node_id in connected} for n in paired]}

    async def _pair_approve(self, params: dict[str, Any]) -> dict[str, Any]:
        approval = await asyncio.to_thread(
            self._nodes.approve,
            _param(params, "requestId"),
            actor=_param(params, "actor", required=False) or "operator:gateway",
        )
        delivered = await self.approved(approval)
        return {
            "nodeId": approval.node.node_id,
            "requestId": approval.request.request_id,
            "delivered": delivered,
        }

    async def _pair_reject(self, params: dict[str, Any]) -> dict[str, Any]:
        req = await asyncio.to_thread(
            self._nodes.reject,
            _param(params, "requestId"),
            actor=_param(params, "actor", required=False) or "operator:gateway",
        )
        await self.decided(req, "rejected")
        return {"requestId": req.request_id, "nodeId": req.node_id}

    async def _node_revoke(self, params: dict[str, Any]) -> dict[str, Any]:
        node = await asyncio.to_thread(
            self._nodes.revoke,
            _node_id(params),
            actor=_param(params, "actor", required=False) or "operator:gateway",
        )
        await self.revoked(node.node_id)
        return {"nodeId": node.node_id}

    # --- pushing decisions -----------------------------------------------------------------------

    async def approved(self, approval: NodeApproval) -> bool:
        """Hand the new token to the asker of the approved request; True if it heard.

        If that asker is not connected, the token is held in memory (never on disk) for the
        pending TTL, for whoever comes back with the request's pickup secret. Requests the
        approval superseded hear "rejected".
        """
        for other in approval.superseded:
            await self.decided(other, "rejected")
        self._on_secret(approval.token)  # never logged, by any logger
        req = approval.request
        self._asked.pop(req.request_id, None)
        asker = self._askers.pop(req.request_id, None)
        if asker is not None and await asker.send(
            _resolved(req.node_id, req.request_id, "approved", approval.token)
        ):
            return True
        if req.pickup_hash:
            until = self._clock.now() + self._nodes.settings.pending_ttl
            self._held[req.request_id] = _Held(req.node_id, approval.token, req.pickup_hash, until)
        return False

    async def decided(self, req: NodeRequest, decision: str) -> bool:
        """Tell the asker of ``req`` that it was rejected or expired; True if it heard."""
        self._asked.pop(req.request_id, None)
        asker = self._askers.pop(req.request_id, None)
        if asker is None:
            return False
        return await asker.send(_resolved(req.node_id, req.request_id, decision, None))

    async def revoked(self, node_id: str) -> None:
        """Tell and close the connections of a revoked node; drop any token held for it."""
        for request_id in [r for r, h in self._held.items() if h.node_id == node_id]:
            del self._held[request_id]
        for conn in [c for c in self._conns if c.node_id == node_id]:
            await conn.send(_resolved(node_id, None, "revoked", None))
            await conn.ws.close(code=4001, message=b"revoked")

    def _take_held(self, node_id: str, pickup: str) -> tuple[str, str] | None:
        """Pop the token held for ``node_id`` whose pickup secret is ``pickup`` (single use;
        every held entry of the node is compared in constant time)."""
        now = self._clock.now()
        found: tuple[str, str] | None = None
        for request_id, held in list(self._held.items()):
            if now >= held.until:
                del self._held[request_id]
            elif (
                held.node_id == node_id
                and codes.token_matches(pickup, held.pickup_hash)
                and found is None
            ):
                found = (request_id, held.token)
        if found is not None:
            del self._held[found[0]]
        return found

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
        for request_id, held in list(self._held.items()):
            if now >= held.until:
                del self._held[request_id]
        for request_id, (node_id, until) in list(self._asked.items()):
            if now < until:
                continue
            del self._asked[request_id]
            asker = self._askers.pop(request_id, None)
            if asker is not None:
                await asker.send(_resolved(node_id, request_id, "expired", None))

    async def _broadcast_operators(self, event: str, payload: dict[str, Any]) -> None:
        for conn in [c for c in self._conns if c.operator]:
            await conn.send({"type": "event", "event": event, "payload": payload})


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def _private(path: Path) -> None:
    path.chmod(0o600)


def _resolved(
    node_id: str, request_id: str | None, decision: str, token: str | None
) -> dict[str, Any]:
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
        raise GatewayError(
            "INVALID_REQUEST",
            "params.nodeId must be printable text without leading or trailing spaces",
        )
    return value
