"""The node gateway: a WebSocket endpoint where devices ask to join and paired ones connect.

Frames are read and written by :mod:`bot.gateway.frames`. Node methods:
``node.pair.request``, ``node.pair.verify``, ``node.connect``. Operator methods
(``node.pair.list``, ``node.pair.approve``, ``node.pair.reject``, ``node.list``,
``node.revoke``; :mod:`bot.gateway.operators`) need ``operator.connect {token}`` first over
TCP; a connection on the local Unix socket in the state dir (0600 in a 0700 dir: only the
owner's user can open it) is an operator from the start, which is how ``pairbot nodes
approve`` reaches a running bot.

A ``node.pair.request`` that carries an ``invite`` (the secret of a one-time invite the owner
made) pairs the node at once: the answer carries its token, the invite is spent, and the
owner is told. An unknown, spent or expired invite pairs nothing and spends the address's
budget of failed verifications (:mod:`bot.gateway.limits`).

Every other ``node.pair.request`` is its own request, bound to the connection that made it: the
answer carries a pickup secret for that asker alone, and a decision goes only to that
connection, or, if it went away, to whoever comes back showing the pickup secret
(:mod:`bot.gateway.peers`). A node id that is already paired is refused unless the asker
proves it holds the node's current token (a re-pair). Every decision, whoever made it, is a
:class:`~bot.core.models.NodeDecision` delivered by :meth:`Gateway.deliver`, through the
cluster to whichever instance holds its asker (:mod:`bot.gateway.relay`). See
``docs/gateway-protocol.md``.

Connections are capped (in all and per address, within the process's file limit), must
finish their handshake within a deadline, and are closed when idle with nothing to wait
for; trouble is logged once per burst (:mod:`bot.gateway.guard`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from bot.core import codes
from bot.core.clock import Clock, iso
from bot.core.errors import (
    BadSignatureError,
    InviteRefusedError,
    LookupFailed,
    NodeRefused,
    StoreError,
    WrongCredentialError,
)
from bot.core.models import (
    NodeApproval,
    NodeAsk,
    NodeDecision,
    NodeRequest,
    NodeVerdict,
    PairedNode,
)
from bot.core.protocols import Cluster
from bot.gateway import frames
from bot.gateway.frames import Conn, ErrorCode, GatewayError, node_id_param, param
from bot.gateway.guard import BurstLog, ConnectionGuard, GuardedSite, GuardSettings
from bot.gateway.health import Readiness
from bot.gateway.limits import AddressLimits, Attempt, LimitSettings
from bot.gateway.operators import Method, Operators
from bot.gateway.peers import Peers
from bot.gateway.relay import Relay
from bot.gateway.tls import GatewayTls
from bot.services.keys import KeyProof
from bot.services.nodes import NodeService

log = logging.getLogger(__name__)

SOCKET_NAME = "gateway.sock"
MAX_BAD_OPERATOR_TOKENS = 3
"""Wrong operator tokens one connection may send before it is closed."""
_UNIX_PATH_MAX = 107


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
    limits: LimitSettings = field(default_factory=LimitSettings)
    """What one address may try per window: pair requests, connects, failed verifications
    (the operator token's included; :mod:`bot.gateway.limits`)."""
    tls: GatewayTls | None = None
    """Serve ``wss://`` with this certificate (None: plain ``ws://``)."""


OnRequest = Callable[[NodeAsk], Awaitable[None]]
OnJoined = Callable[[NodeApproval], Awaitable[None]]
"""Told each node that paired itself with an invite (the owner's notice)."""
Scrape = Callable[[web.Request], Awaitable[web.StreamResponse]]
"""What answers ``GET /metrics`` (the app's metrics)."""


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
        cluster: Cluster,
        readiness: Readiness | None = None,
        metrics: Scrape | None = None,
        on_joined: OnJoined | None = None,
    ) -> None:
        self._nodes = nodes
        self._on_joined = on_joined
        self._readiness = readiness
        """What ``GET /readyz`` asks; without it the route answers 503 (nothing to judge by)."""
        self._metrics = metrics
        """What ``GET /metrics`` serves; without it there is no such route."""
        self._settings = settings
        self._on_request = on_request
        self._on_secret = on_secret
        """Told every secret this gateway hands out (pickups, tokens): the logs never show it."""
        self._peers = Peers(
            clock=clock, pending_ttl=nodes.settings.pending_ttl, on_secret=on_secret
        )
        self._relay = Relay(
            cluster, nodes=nodes, peers=self._peers, clock=clock, on_secret=on_secret
        )
        """Decisions to and from the other instances on the same state (the cluster)."""
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
        self._limits = AddressLimits(
            settings.limits, clock=clock, burst=self._burst, audit=self._audit_refusal
        )
        self._operators = Operators(
            nodes=nodes,
            peers=self._peers,
            relay=self._relay,
            token=settings.operator_token,
            limits=self._limits,
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
        """Hear the other instances' decisions; listen on host:port (and the state dir's Unix
        socket)."""
        await self._relay.start()
        runner = await self._runner(local=False)
        tls = self._settings.tls
        site = GuardedSite(
            runner,
            self._guard,
            host=self._settings.host,
            port=self._settings.port,
            tls=tls.server_context() if tls is not None else None,
        )
        await site.start()
        self.port = site.port or self._settings.port
        if self._settings.socket_dir is not None:
            await self._start_unix(self._settings.socket_dir / SOCKET_NAME)
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="pairbot-gateway-sweep")
        log.info(
            "gateway listening on %s://%s:%s (at most %d connections)%s",
            "wss" if tls is not None else "ws",
            self._settings.host,
            self.port,
            self._guard.limit,
            f"; certificate {tls.fingerprint}" if tls is not None else "",
        )

    @property
    def fingerprint(self) -> str:
        """The served certificate's fingerprint ("" without TLS)."""
        tls = self._settings.tls
        return tls.fingerprint if tls is not None else ""

    async def _runner(self, *, local: bool) -> web.AppRunner:
        async def ws_handler(request: web.Request) -> web.StreamResponse:
            return await self._ws(request, local=local)

        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        if self._metrics is not None and not local:
            app.router.add_get("/metrics", self._metrics)
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
        # A database backend never makes the state dir; the socket needs it (private).
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
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
        await self._relay.stop()
        if self._readiness is not None:
            await self._readiness.aclose()
        for conn in list(self._peers.conns):
            try:
                await conn.ws.close(code=1001, message=b"server shutting down")
            except Exception as exc:  # a peer already gone: nothing is lost, stop the rest
                log.debug("gateway: closing %s at shutdown: %r", conn.remote, exc)
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        if self.socket_path is not None:
            _remove(self.socket_path)
            self.socket_path = None

    # --- HTTP ------------------------------------------------------------------------------------

    async def _healthz(self, _request: web.Request) -> web.Response:
        """Alive: the process serves HTTP (nothing else is looked at)."""
        return web.json_response({"status": "ok"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        """Ready: 200 with what was checked, else 503 with the same shape naming what is not."""
        if self._readiness is None:
            body = {"status": "not ready", "problems": ["readiness is not wired"]}
            return web.json_response(body, status=503)
        ready, body = await self._readiness.report()
        return web.json_response(body, status=200 if ready else 503)

    def connected_nodes(self) -> int:
        """How many paired nodes are connected here now."""
        return len(self._peers.connected_nodes())

    async def _ws(self, request: web.Request, *, local: bool) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=frames.MAX_FRAME * 10, heartbeat=30)
        await ws.prepare(request)
        (self._local_guard if local else self._guard).handshake_done(request.transport)
        conn = Conn(ws=ws, remote="local" if local else (request.remote or "?"), operator=local)
        self._peers.add(conn)
        try:
            idle = self._settings.idle_timeout
            while True:
                try:
                    left = idle - (time.monotonic() - conn.last_active)
                    msg = await ws.receive(timeout=max(left, 0.001))
                except TimeoutError:
                    if self._busy(conn):  # silent for a reason: time it from now
                        conn.last_active = time.monotonic()
                        continue
                    if time.monotonic() - conn.last_active < idle:
                        continue  # a frame went out meanwhile (a decision): more time
                    self._burst.note(
                        "idle",
                        conn.remote,
                        "gateway: closed idle connections "
                        f"(nothing sent for {self._settings.idle_timeout:g}s)",
                    )
                    await ws.close(code=4008, message=b"idle")
                    break
                conn.last_active = time.monotonic()
                if msg.type is WSMsgType.TEXT:
                    await self._frame(conn, msg.data)
                elif msg.type is WSMsgType.BINARY:
                    await conn.send(
                        frames.error(None, ErrorCode.INVALID_REQUEST, "frames must be JSON text")
                    )
                else:  # CLOSE, CLOSING, CLOSED, ERROR
                    break
        finally:
            self._peers.remove(conn)
        return ws

    def _busy(self, conn: Conn) -> bool:
        """A connection with a reason to stay silent: an operator, a connected node, or an
        asker waiting for a decision."""
        return conn.operator or conn.node_id is not None or self._peers.waiting(conn)

    # --- frames ----------------------------------------------------------------------------------

    async def _frame(self, conn: Conn, data: str) -> None:
        try:
            request = frames.parse_request(data)
        except GatewayError as exc:
            await conn.send(frames.error(exc.request_id, exc.code, exc.message))
            return
        req_id, method = request.id, request.method
        handler = self._methods().get(method)
        if handler is None:
            await conn.send(frames.error(req_id, ErrorCode.UNKNOWN_METHOD, "unknown method"))
            return
        try:
            payload = await handler(conn, request.params)
        except GatewayError as exc:
            await conn.send(frames.error(req_id, exc.code, exc.message))
            if conn.bad_tokens >= MAX_BAD_OPERATOR_TOKENS:
                await conn.ws.close(code=4003, message=b"too many wrong operator tokens")
            return
        except NodeRefused as exc:
            await conn.send(frames.error(req_id, ErrorCode(exc.code), exc.message))
            return
        except StoreError as exc:  # one line per burst, not a traceback per frame
            self._burst.note("store", conn.remote, f"gateway: {method} refused: {exc}")
            error = frames.error(req_id, ErrorCode.INTERNAL, "pairing state is unavailable")
            await conn.send(error)
            return
        except LookupFailed as exc:
            await conn.send(frames.error(req_id, ErrorCode.NOT_FOUND, exc.message))
            return
        except ValueError as exc:
            await conn.send(frames.error(req_id, ErrorCode.INVALID_REQUEST, str(exc)))
            return
        except Exception:
            log.exception("gateway method %s failed", method)
            await conn.send(frames.error(req_id, ErrorCode.INTERNAL, "internal error"))
            return
        await conn.send(frames.answer(req_id, payload))

    def _methods(self) -> dict[str, Method]:
        return {
            "node.pair.request": self._pair_request,
            "node.pair.verify": self._pair_verify,
            "node.challenge": self._challenge,
            "node.connect": self._connect,
            **self._operators.methods(),
        }

    # --- node methods ----------------------------------------------------------------------------

    async def _audit_refusal(
        self, attempt: Attempt, outcome: str, remote: str, subject: str
    ) -> None:
        """One audit line for a refused attempt (never what was sent); a store that cannot
        take it is logged once per burst, and the refusal stands."""
        try:
            await asyncio.to_thread(
                self._nodes.refused, attempt.value, outcome, remote=remote, subject=subject
            )
        except StoreError as exc:
            self._burst.note("audit", remote, f"gateway: a refusal was not audited: {exc}")

    async def _pair_request(self, conn: Conn, params: dict[str, Any]) -> dict[str, Any]:
        node_id = node_id_param(params)
        await self._limits.admit(conn.remote, Attempt.PAIR, subject=node_id)
        invite = param(params, "invite", required=False)
        if invite:
            return await self._join(conn, node_id, invite, params)
        pickup = param(params, "pickup", required=False)
        if pickup:
            return await self._come_back(conn, node_id, pickup)
        mine = conn.asked.get(node_id)
        if mine is not None:  # the same connection asking again: the same request
            req = await asyncio.to_thread(self._nodes.get_pending, mine)
            if req is not None:
                self._peers.attach(conn, req)
                return self._pending_payload(req)
        try:
            ask = await asyncio.to_thread(
                self._nodes.request,
                node_id,
                **_described(conn, params),
                proof=param(params, "token", required=False) or None,
                key_proof=self._key_proof(conn, params),
            )
        except WrongCredentialError as exc:  # the service audited it
            outcome = "bad_signature" if isinstance(exc, BadSignatureError) else "wrong_token"
            await self._limits.failed(
                conn.remote, Attempt.PAIR, outcome, subject=node_id, audited=True
            )
            raise
        if ask.pickup is not None:
            self._on_secret(ask.pickup)  # never logged, by any logger
        self._peers.attach(conn, ask.request, ask.pickup)
        await self._peers.broadcast_operators("node.pair.requested", ask.request.as_json())
        await self._on_request(ask)
        return {**self._pending_payload(ask.request), "pickup": ask.pickup}

    async def _join(
        self, conn: Conn, node_id: str, invite: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        """A node showing an invite's secret: paired at once (the answer carries its token),
        or refused and counted as a failed verification. The secret is never logged."""
        if any(param(params, name, required=False) for name in ("pickup", "token", "signature")):
            raise GatewayError(
                ErrorCode.INVALID_REQUEST,
                "params.invite comes alone: not with a pickup, a token or a signature",
            )
        try:
            approval = await asyncio.to_thread(
                self._nodes.join, node_id, invite, **_described(conn, params)
            )
        except InviteRefusedError:  # the service audited it
            await self._limits.failed(
                conn.remote, Attempt.PAIR, "bad_invite", subject=node_id, audited=True
            )
            raise
        self._on_secret(approval.token)
        for other in approval.superseded:
            await self._relay.deliver(NodeDecision.on_request(other, NodeVerdict.SUPERSEDED))
        if self._on_joined is not None:
            await self._on_joined(approval)
        return {
            "status": "paired",
            "requestId": approval.request.request_id,
            "nodeId": approval.node.node_id,
            "token": approval.token,
        }

    async def _come_back(self, conn: Conn, node_id: str, pickup: str) -> dict[str, Any]:
        """An asker back with its pickup secret: its held token (held here, or kept sealed
        here for an asker of another instance), or its pending request."""
        held = self._peers.take_held(node_id, pickup) or await self._relay.take_sealed(
            node_id, pickup
        )
        if held is not None:
            request_id, token = held
            await self._relay.collected(request_id, node_id)
            return {"status": "paired", "requestId": request_id, "token": token}
        req = await asyncio.to_thread(self._nodes.claim, node_id, pickup)
        if req is None:
            await self._limits.failed(
                conn.remote, Attempt.PAIR, "unknown_pickup", subject=node_id, audited=False
            )
            raise GatewayError(
                ErrorCode.NOT_FOUND,
                "no pending request or held decision matches this "
                "pickup (rejected, expired, already collected, or the bot "
                "restarted after approving); ask again without one",
            )
        self._peers.attach(conn, req, pickup)
        await self._relay.attached(req.request_id, node_id)
        return self._pending_payload(req)

    def _pending_payload(self, req: NodeRequest) -> dict[str, Any]:
        return {
            "status": "pending",
            "requestId": req.request_id,
            "expiresAt": iso(req.expires_at(self._nodes.settings.pending_ttl)),
        }

    async def _pair_verify(self, conn: Conn, params: dict[str, Any]) -> dict[str, Any]:
        node = await self._verified(conn, Attempt.VERIFY, params)
        return {"ok": True, "nodeId": node.node_id}

    async def _verified(self, conn: Conn, attempt: Attempt, params: dict[str, Any]) -> PairedNode:
        """The paired node whose token the peer showed, within the address's budgets.

        Raises:
            GatewayError: ``RATE_LIMITED``, or ``UNAUTHORIZED`` (counted and audited).
        """
        node_id = node_id_param(params)
        token = param(params, "token", required=False)
        await self._limits.admit(conn.remote, attempt, subject=node_id)
        proof = self._key_proof(conn, params)
        if proof is not None:
            node = await asyncio.to_thread(self._nodes.verify_signature, node_id, proof)
            outcome = "bad_signature"
        elif token:
            node = await asyncio.to_thread(self._nodes.verify, node_id, token)
            outcome = "wrong_token"
        else:
            raise GatewayError(
                ErrorCode.INVALID_REQUEST, "params.token or params.signature is required"
            )
        if node is None:
            await self._limits.failed(
                conn.remote, attempt, outcome, subject=node_id, audited=False
            )
            raise GatewayError(ErrorCode.UNAUTHORIZED, "unknown node or wrong token")
        return node

    async def _challenge(self, conn: Conn, _params: dict[str, Any]) -> dict[str, Any]:
        """A fresh nonce for this connection's next signature (the one before is void)."""
        conn.nonce = codes.new_token()
        return {"nonce": conn.nonce}

    def _key_proof(self, conn: Conn, params: dict[str, Any]) -> KeyProof | None:
        """The signature a request carries, bound to what this gateway knows: the nonce it
        handed this connection (spent now, whatever the outcome) and, when it serves TLS, its
        own certificate (behind a TLS proxy, the one the node says it saw).

        Raises:
            GatewayError: a signature without a nonce to spend.
        """
        signature = param(params, "signature", required=False)
        if not signature:
            return None
        nonce, conn.nonce = conn.nonce, ""
        if not nonce:
            raise GatewayError(
                ErrorCode.UNAUTHORIZED,
                "no nonce to sign: call node.challenge first (one per signature)",
            )
        seen = self.fingerprint or param(params, "certFingerprint", required=False)
        return KeyProof(nonce=nonce, fingerprint=seen, signature=signature)

    async def _connect(self, conn: Conn, params: dict[str, Any]) -> dict[str, Any]:
        node = await self._verified(conn, Attempt.CONNECT, params)
        node_id = node.node_id
        await asyncio.to_thread(self._nodes.touch, node_id)
        conn.node_id = node_id
        conn.token_hash = node.token_hash
        return {"nodeId": node.node_id, "displayName": node.display_name}

    # --- pushing decisions -----------------------------------------------------------------------

    async def deliver(self, decision: NodeDecision) -> None:
        """Have ``decision`` told to the one it concerns, on whichever instance holds it
        (:meth:`Relay.deliver`)."""
        await self._relay.deliver(decision)

    async def deliver_approval(self, approval: NodeApproval) -> bool:
        """Have an approval's askers told, wherever they wait (:meth:`Relay.deliver_approval`);
        True if the approved asker heard and has its token."""
        return await self._relay.deliver_approval(approval)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.sweep_interval)
            try:
                self._relay.sweep()
                await self._peers.sweep()
            except Exception:
                log.exception("gateway sweep failed")


def _described(conn: Conn, params: dict[str, Any]) -> dict[str, Any]:
    """What an asker says of itself (``displayName``, ``platform``, ``version``,
    ``publicKey``) and where it asks from, as the node service takes them."""
    return {
        "display_name": param(params, "displayName", required=False),
        "platform": param(params, "platform", required=False),
        "version": param(params, "version", required=False),
        "remote": conn.remote,
        "public_key": param(params, "publicKey", required=False) or None,
    }


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def _private(path: Path) -> None:
    path.chmod(0o600)
