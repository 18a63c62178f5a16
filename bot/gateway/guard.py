"""Keeping a listening socket from taking the process down: caps, deadlines, quiet logs.

A server that accepts whatever connects can be starved by sockets that never finish their
request (slowloris), and once the process runs out of file descriptors every other part of
it (the chat connectors, the store) fails too. :class:`ConnectionGuard` admits a connection
only under a cap in all and a cap per address, derived from the process's file limit so that
enough descriptors always stay for the rest of the bot; it closes a connection that has not
finished its handshake within a deadline. :class:`BurstLog` turns a storm of the same event
into one line per window. :class:`WindowLimiter` counts events per address across
connections (failures, attempts; :mod:`bot.gateway.limits` puts them together).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import ssl
from asyncio import sslproto
from collections import Counter, OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from bot.core.clock import Clock

FD_RESERVE = 128
"""File descriptors kept for everything but the gateway (connectors, store, logs)."""
MAX_TRACKED_ADDRESSES = 10_000


def fd_budget(wanted: int, *, reserve: int = FD_RESERVE) -> int:
    """Return how many connections may be open at once: ``wanted``, but never so many that
    the gateway alone could use up the process's file limit (at least 4)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(4, min(wanted, (soft - reserve) // 2))


class BurstLog:
    """Logs the first occurrence of a kind of trouble at once, then one summary per window.

    ``note(kind, key)`` counts an occurrence (``key`` is e.g. the address); a summary line
    says how many happened, and from how many distinct keys, since the last line.
    """

    def __init__(
        self, logger: logging.Logger, *, clock: Clock, window: timedelta = timedelta(seconds=10)
    ) -> None:
        self._log = logger
        self._clock = clock
        self._window = window
        self._last: dict[str, datetime] = {}
        self._counts: dict[str, Counter[str]] = {}

    def note(self, kind: str, key: str, message: str) -> None:
        """Count one ``kind`` event from ``key``; log ``message`` now or in the next summary."""
        now = self._clock.now()
        last = self._last.get(kind)
        counts = self._counts.setdefault(kind, Counter())
        if len(counts) < MAX_TRACKED_ADDRESSES or key in counts:
            counts[key] += 1
        if last is not None and now - last < self._window:
            return
        self._flush(kind, now, message)

    def _flush(self, kind: str, now: datetime, message: str) -> None:
        counts = self._counts.pop(kind, Counter())
        total = sum(counts.values())
        self._last[kind] = now
        if total <= 1:
            self._log.warning("%s", message)
            return
        top, top_count = counts.most_common(1)[0]
        self._log.warning(
            "%s (%d times from %d address%s in the last %ds; most from %s: %d)",
            message,
            total,
            len(counts),
            "" if len(counts) == 1 else "es",
            int(self._window.total_seconds()),
            top,
            top_count,
        )


class WindowLimiter:
    """Counts events per key (an address) in a sliding window, across connections: failures
    (wrong tokens, bad signatures), or attempts (pair requests, connects).

    At most ``limit + 1`` times are kept per key, and at most
    :data:`MAX_TRACKED_ADDRESSES` keys, so a flood costs bounded memory.
    """

    def __init__(self, *, clock: Clock, limit: int, window: timedelta) -> None:
        self._clock = clock
        self.limit = limit
        self.window = window
        """How far back events count."""
        self._seen: OrderedDict[str, list[datetime]] = OrderedDict()

    def blocked(self, key: str) -> bool:
        """True while ``key`` has used up its events in the window."""
        return len(self._recent(key)) >= self.limit

    def count(self, key: str) -> int:
        """Record an event; return how many ``key`` had in the window before it (so the
        event is within the limit when that is under ``limit``, and the first over it when
        that equals ``limit``)."""
        recent = self._recent(key)
        before = len(recent)
        recent.append(self._clock.now())
        self._seen[key] = recent[-(self.limit + 1) :]
        self._seen.move_to_end(key)
        while len(self._seen) > MAX_TRACKED_ADDRESSES:
            self._seen.popitem(last=False)
        return before

    def _recent(self, key: str) -> list[datetime]:
        horizon = self._clock.now() - self.window
        recent = [t for t in self._seen.get(key, ()) if t > horizon]
        if not recent:
            self._seen.pop(key, None)
        return recent


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardSettings:
    """How many connections, from where, and how long a handshake may take."""

    max_connections: int = 256
    max_per_address: int = 32
    handshake_timeout: float = 10.0
    """Seconds from accept until the HTTP request is complete (the WebSocket upgrade)."""


class ConnectionGuard:
    """Admits connections under the caps; closes those that do not finish their handshake."""

    def __init__(self, settings: GuardSettings, *, burst: BurstLog) -> None:
        self.settings = settings
        self.limit = fd_budget(settings.max_connections)
        self._burst = burst
        self._open: Counter[str] = Counter()
        self._done: set[object] = set()
        """The connections past their handshake, by :func:`_socket_of`."""

    @property
    def open(self) -> int:
        """Connections admitted and not yet closed."""
        return sum(self._open.values())

    def admit(self, address: str) -> bool:
        """Take a slot for a new connection from ``address``, or refuse (logged per burst)."""
        if self.open >= self.limit:
            self._burst.note(
                "cap",
                address,
                f"gateway: refused connections: {self.limit} "
                "are open (gateway.max_connections, bounded by the file limit)",
            )
            return False
        if address != "local" and self._open[address] >= self.settings.max_per_address:
            self._burst.note(
                "cap-address",
                address,
                "gateway: refused connections from "
                f"{address}: {self.settings.max_per_address} are open "
                "(gateway.max_connections_per_address)",
            )
            return False
        self._open[address] += 1
        return True

    def release(self, address: str, transport: asyncio.Transport) -> None:
        """Give back the slot of a closed connection."""
        self._open[address] -= 1
        if self._open[address] <= 0:
            del self._open[address]
        self._done.discard(_socket_of(transport))

    def handshake_done(self, transport: asyncio.BaseTransport | None) -> None:
        """Mark a connection as past its handshake (a WebSocket that was accepted); the
        transport may be the TLS layer's, over the one the guard admitted."""
        if transport is not None:
            self._done.add(_socket_of(transport))

    def expired(self, address: str, transport: asyncio.Transport) -> None:
        """Close a connection whose handshake deadline passed, unless it finished."""
        if _socket_of(transport) in self._done or transport.is_closing():
            return
        self._burst.note(
            "handshake",
            address,
            "gateway: closed connections that did not "
            f"finish their request within {self.settings.handshake_timeout:g}s",
        )
        transport.abort()

    def protocol(self, inner: asyncio.BaseProtocol) -> asyncio.BaseProtocol:
        """Wrap the web server's protocol (or the TLS layer over it) for one connection."""
        if isinstance(inner, asyncio.BufferedProtocol):
            return _GuardedBuffered(inner, self)
        return _Guarded(inner, self)


def _socket_of(transport: asyncio.BaseTransport) -> object:
    """What a connection is known by: its socket, which a TLS layer's transport shares with
    the transport under it."""
    return transport.get_extra_info("socket") or transport


class _Guarded(asyncio.Protocol):
    """A connection's protocol behind the guard: refused over the caps, timed until done."""

    def __init__(self, inner: Any, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._address: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.Transport):
            raise TypeError("the guard serves stream connections only")
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "local"
        if not self._guard.admit(address):
            transport.abort()
            return
        self._address, self._transport = address, transport
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(
            self._guard.settings.handshake_timeout, self._guard.expired, address, transport
        )
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._address is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._address is not None else None

    def pause_writing(self) -> None:
        if self._address is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._address is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._address is None or self._transport is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._guard.release(self._address, self._transport)
        self._inner.connection_lost(exc)


class _GuardedBuffered(_Guarded, asyncio.BufferedProtocol):
    """The guard over a protocol that reads into its own buffer (the TLS layer)."""

    _SPARE = bytearray(1)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._address is None:  # refused: let the TLS layer drop what it made for it
            self._inner.connection_lost(None)

    def get_buffer(self, sizehint: int) -> Any:
        if self._address is None:
            return self._SPARE  # refused: the transport is aborted, the bytes go nowhere
        return self._inner.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        if self._address is not None:
            self._inner.buffer_updated(nbytes)


class GuardedSite(web.BaseSite):
    """A TCP or Unix-socket site whose connections pass through a :class:`ConnectionGuard`;
    with ``tls``, each is admitted before its TLS handshake (so half-open handshakes count
    toward the caps and the deadline like any other connection)."""

    __slots__ = ("_guard", "_host", "_path", "_port", "_tls")

    def __init__(
        self,
        runner: web.BaseRunner,
        guard: ConnectionGuard,
        *,
        host: str | None = None,
        port: int | None = None,
        path: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner)
        self._guard = guard
        self._host, self._port, self._path = host, port, path
        self._tls = tls

    @property
    def name(self) -> str:
        """Where the site listens."""
        scheme = "https" if self._tls is not None else "http"
        return self._path or f"{scheme}://{self._host}:{self._port}"

    async def start(self) -> None:
        """Listen; every accepted connection is admitted (or refused) by the guard."""
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        if server is None:
            raise RuntimeError("call runner.setup() before starting a site")

        tls, deadline = self._tls, self._guard.settings.handshake_timeout

        def factory() -> asyncio.BaseProtocol:
            inner: asyncio.BaseProtocol = server()
            if tls is not None:
                # The TLS layer asyncio itself puts under a server's protocol; here it goes
                # under the guard's, so the guard counts a connection from its first byte.
                inner = sslproto.SSLProtocol(
                    loop,
                    inner,
                    tls,
                    None,  # type: ignore[arg-type]  # no one awaits the handshake: asyncio's own server passes None too
                    server_side=True,
                    ssl_handshake_timeout=deadline,  # type: ignore[arg-type]  # typeshed says int; asyncio takes seconds as a float
                )
            return self._guard.protocol(inner)

        kwargs: dict[str, Any] = {"backlog": self._backlog}
        if self._path is not None:
            self._server = await loop.create_unix_server(factory, self._path, **kwargs)
        else:
            self._server = await loop.create_server(
                factory, self._host, self._port, reuse_address=True, **kwargs
            )

    @property
    def port(self) -> int | None:
        """The TCP port actually bound (useful with port 0)."""
        sockets = getattr(self._server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets and self._path is None else None
