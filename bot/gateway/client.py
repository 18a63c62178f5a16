"""A client of the gateway protocol, and the node side of pairing.

Used by ``pairbot node pair`` / ``pairbot node connect`` (a device, or something playing
one) and by ``pairbot nodes approve|reject|revoke``, which reach a running bot through the
local Unix socket in the state dir so that the token goes straight to the waiting node.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Self

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bot.core.errors import PairbotError
from bot.gateway.tls import PREFIX, digest, peer_fingerprint
from bot.services import keys


class GatewayCallError(PairbotError):
    """The gateway answered a request with ``ok: false``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"gateway: {message} ({code})")
        self.code = code


class GatewayUnavailable(PairbotError):
    """The gateway could not be reached, or closed the connection."""


class GatewayNotTrusted(GatewayUnavailable):
    """The gateway's certificate is not the pinned one, or (with no pin) not one a
    certificate authority vouches for: nothing was sent."""


class GatewayClient:
    """One WebSocket connection to a gateway: calls, and the events that arrive between."""

    def __init__(
        self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse
    ) -> None:
        self._session = session
        self._ws = ws
        self.fingerprint = peer_fingerprint(ws.get_extra_info("ssl_object"))
        """The fingerprint of the certificate the gateway showed ("" over plain ``ws://``)."""
        self._ids = itertools.count(1)
        self._answers: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._closed = False
        self._reader = asyncio.create_task(self._read())

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        url: str | None = None,
        *,
        unix_socket: Path | None = None,
        wait: float = 10.0,
        pin: str | None = None,
    ) -> AsyncIterator[Self]:
        """Connect to ``url`` (``ws://`` or ``wss://host:port``) or to a local Unix socket.

        Over ``wss://`` with ``pin`` (a certificate fingerprint) the gateway must show that
        very certificate; without one, a certificate an authority vouches for. ``wait``
        bounds the connection attempt and the closing handshake.

        Raises:
            GatewayNotTrusted: the certificate is refused (the message says which it was).
            GatewayUnavailable: the gateway cannot be reached.
        """
        connector = aiohttp.UnixConnector(path=str(unix_socket)) if unix_socket else None
        session = aiohttp.ClientSession(connector=connector)
        target = "http://localhost/" if unix_socket else (url or "")
        tls: aiohttp.Fingerprint | bool = aiohttp.Fingerprint(digest(pin)) if pin else True
        try:
            try:
                async with asyncio.timeout(wait):
                    ws = await session.ws_connect(
                        target,
                        timeout=aiohttp.ClientWSTimeout(ws_close=wait),
                        heartbeat=30,
                        ssl=tls,
                    )
            except aiohttp.ServerFingerprintMismatch as exc:
                raise GatewayNotTrusted(
                    f"refused {url}: its certificate is {fingerprint_of(exc.got)}, not the "
                    f"pinned {pin} (another gateway, or someone in between)"
                ) from None
            except aiohttp.ClientConnectorCertificateError:
                raise GatewayNotTrusted(
                    f"refused {url}: its certificate is not one an authority vouches for; "
                    "pin it with --fingerprint sha256:... (`pairbot gateway fingerprint` on "
                    "the bot's machine prints it)"
                ) from None
            except (aiohttp.ClientError, OSError, ValueError, TimeoutError) as exc:
                where = unix_socket or url
                raise GatewayUnavailable(
                    f"cannot reach the gateway at {where}: {type(exc).__name__}"
                ) from None
            client = cls(session, ws)
            try:
                yield client
            finally:
                await client.close()
        finally:
            await session.close()

    async def close(self) -> None:
        """Close the connection."""
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def call(
        self, method: str, params: dict[str, Any] | None = None, *, wait: float = 15.0
    ) -> dict[str, Any]:
        """Send a request and return its payload; raise :class:`GatewayCallError` on ok=false."""
        if self._closed or self._ws.closed:
            raise GatewayUnavailable("the gateway closed the connection")
        req_id = str(next(self._ids))
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers[req_id] = future
        try:
            await self._ws.send_str(
                json.dumps({"type": "req", "id": req_id, "method": method, "params": params or {}})
            )
            answer = await asyncio.wait_for(future, wait)
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            raise GatewayUnavailable("the gateway closed the connection") from None
        except TimeoutError:
            raise GatewayUnavailable(f"no answer to {method} within {wait:g}s") from None
        finally:
            self._answers.pop(req_id, None)
        if not answer.get("ok"):
            error = answer.get("error") or {}
            raise GatewayCallError(
                str(error.get("code", "ERROR")), str(error.get("message", "request failed"))
            )
        payload = answer.get("payload")
        return payload if isinstance(payload, dict) else {}

    async def signed(
        self, purpose: str, node_id: str, key: Ed25519PrivateKey, *, new_key: str = ""
    ) -> dict[str, str]:
        """The params that prove this node holds ``key``: a fresh nonce from the gateway
        (``node.challenge``) signed with the node id, ``purpose`` and the certificate this
        connection sees (:func:`bot.services.keys.signed_message`)."""
        nonce = str((await self.call("node.challenge"))["nonce"])
        message = keys.signed_message(
            purpose, nonce=nonce, node_id=node_id, fingerprint=self.fingerprint, new_key=new_key
        )
        params = {"signature": keys.sign(key, message)}
        if self.fingerprint:
            params["certFingerprint"] = self.fingerprint
        return params

    async def next_event(
        self, name: str | None = None, *, wait: float | None = None
    ) -> dict[str, Any]:
        """Wait for the next event (named ``name``, if given) and return its payload."""
        async with asyncio.timeout(wait):
            while True:
                frame = await self._events.get()
                if frame is None:
                    self._events.put_nowait(None)  # every later call hears it too
                    raise GatewayUnavailable("the gateway closed the connection")
                if name is None or frame.get("event") == name:
                    payload = frame.get("payload")
                    return payload if isinstance(payload, dict) else {}

    async def _read(self) -> None:
        try:
            async for msg in self._ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                with contextlib.suppress(ValueError, RecursionError):
                    frame = json.loads(msg.data)
                    if not isinstance(frame, dict):
                        continue
                    if frame.get("type") == "res":
                        future = self._answers.get(str(frame.get("id")))
                        if future is not None and not future.done():
                            future.set_result(frame)
                    elif frame.get("type") == "event":
                        self._events.put_nowait(frame)
        finally:
            self._closed = True
            self._events.put_nowait(None)
            for future in self._answers.values():
                if not future.done():
                    future.set_exception(GatewayUnavailable("the gateway closed the connection"))


def fingerprint_of(raw: bytes) -> str:
    """A SHA-256 digest (as :class:`aiohttp.ServerFingerprintMismatch` carries it) written as
    a fingerprint."""
    return PREFIX + raw.hex()
