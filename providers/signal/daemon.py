"""The signal-cli daemon's HTTP interface, the client Signal has instead of an SDK.

``signal-cli daemon --http`` (``signal-cli-jsonrpc(5)``) answers JSON-RPC 2.0 calls on
``POST /api/v1/rpc`` (:func:`rpc_result` reads an answer, :class:`SignalRpcError` is its
error) and streams incoming envelopes as Server-Sent Events on ``GET /api/v1/events``
(:class:`EventStream` keeps that stream open and knows where it left off).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from bot.core.clock import Clock
from bot.core.errors import ProviderError
from providers._json import as_str
from providers.retry import Backoff

_LOG = logging.getLogger(__name__)

STREAM_ERRORS = (aiohttp.ClientError, TimeoutError)
"""What opening or reading the event stream raises when the daemon is away."""

_UNKNOWN_EVENT_ID = "0"  # signal-cli answers an id it does not know with every kept event
_FLOOR_MARGIN_MS = 5_000


class SignalRpcError(ProviderError):
    """The daemon answered a JSON-RPC call with an error (or not with JSON-RPC at all).

    Attributes:
        code: the JSON-RPC error code (signal-cli: -1 user error, -3 I/O error, -4 untrusted
            identity, -32601 unknown method, ...) or the HTTP status when there was no
            JSON-RPC answer.
    """

    def __init__(self, method: str, code: int, message: str) -> None:
        super().__init__(f"signal-cli {method} failed ({code}): {message}")
        self.method = method
        self.code = code


async def rpc_result(method: str, response: aiohttp.ClientResponse) -> Any:
    """The ``result`` of a JSON-RPC answer.

    Raises:
        SignalRpcError: the answer is an error, or no JSON-RPC answer at all.
    """
    try:
        answer = await response.json(content_type=None)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise SignalRpcError(method, response.status, "no JSON-RPC answer")
    error = answer.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        raise SignalRpcError(
            method,
            code if isinstance(code, int) else response.status,
            as_str(error.get("message")) or "error",
        )
    if "result" not in answer:
        raise SignalRpcError(method, response.status, "no result in the answer")
    return answer["result"]


def unwrap(payload: object) -> Mapping[str, Any] | None:
    """Return ``{"envelope": ..., "account": ...}`` from any of the shapes the daemon uses:
    the plain SSE object, the ``receive`` notification, or a subscription's ``result``."""
    if not isinstance(payload, dict):
        return None
    found: dict[str, Any] = payload
    params = found.get("params")
    if found.get("method") == "receive" and isinstance(params, dict):
        result = params.get("result")
        found = result if isinstance(result, dict) else params
    return found if isinstance(found.get("envelope"), dict) else None


@dataclass(slots=True)
class _Event:
    """One Server-Sent Event."""

    id: str | None
    type: str
    data: str


async def _sse_events(lines: aiohttp.StreamReader) -> AsyncIterator[_Event]:
    """Parse a ``text/event-stream`` body into events (WHATWG "server-sent events")."""
    event_id: str | None = None
    event_type = ""
    data: list[str] = []
    seen_id = False
    async for raw in lines:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data:
                yield _Event(
                    event_id if seen_id else None, event_type or "message", "\n".join(data)
                )
            event_type, data, seen_id = "", [], False
            continue
        if line.startswith(":"):
            continue  # a comment: the daemon's keep-alive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event_type = value
        elif name == "id" and "\0" not in value:
            event_id, seen_id = value, True


class EventStream:
    """The daemon's event stream for one account, reopened where it left off.

    It remembers the last event id and sends it as ``Last-Event-ID`` when it reopens, so the
    daemon replays what was missed; that memory survives a stop and start of the provider.

    Args:
        url: the stream's URL (``/api/v1/events?account=…``).
        name: the provider name, for the log.
        clock: dates the first connection (see :attr:`floor_ms`).
        reconnect: the first and the longest pause between attempts to reopen it.
        connect_timeout: seconds opening it may take.
        idle_timeout: seconds of silence (no event, no keep-alive) after which it is taken
            for dead and reopened.
    """

    def __init__(
        self,
        *,
        url: str,
        name: str,
        clock: Clock,
        reconnect: tuple[float, float],
        connect_timeout: float,
        idle_timeout: float,
    ) -> None:
        self.url = url
        self._name = name
        self._clock = clock
        self._reconnect = reconnect
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_read=idle_timeout
        )
        self.last_event_id: str | None = None
        self._first_open_ms: int | None = None
        self.floor_ms: int | None = None
        """Envelopes the daemon received before this (ms) are history, not news: set when
        the stream was reopened before any event was seen (see :meth:`open`)."""

    async def open(
        self, session: aiohttp.ClientSession, *, reconnect: bool = False
    ) -> aiohttp.ClientResponse:
        """Open the stream where the last one left off.

        Reopened before any event was seen, it asks for every event the daemon kept (an id
        it cannot know), so nothing that came in meanwhile is lost; kept events the daemon
        received before this provider first connected are then history, and
        :attr:`floor_ms` says from when.

        Raises:
            SignalRpcError: the daemon refused the stream.
            aiohttp.ClientError, TimeoutError: it could not be reached.
        """
        headers = {"Accept": "text/event-stream"}
        floor: int | None = None
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        elif reconnect and self._first_open_ms is not None:
            headers["Last-Event-ID"] = _UNKNOWN_EVENT_ID
            floor = self._first_open_ms - _FLOOR_MARGIN_MS
        response = await session.get(self.url, headers=headers, timeout=self._timeout)
        if response.status != 200:
            response.release()
            raise SignalRpcError("events", response.status, response.reason or "refused")
        self.floor_ms = floor
        if self._first_open_ms is None:
            self._first_open_ms = int(self._clock.now().timestamp() * 1000)
        return response

    async def follow(
        self,
        session: aiohttp.ClientSession,
        first: aiohttp.ClientResponse,
        on_event: Callable[[str], None],
    ) -> None:
        """Hand the data of each envelope event to ``on_event``; reopen the stream with
        backoff whenever it ends, until cancelled."""
        response: aiohttp.ClientResponse | None = first
        backoff = Backoff(*self._reconnect)
        while True:
            if response is not None:
                try:
                    async with response:
                        await self._read(response, on_event)
                    _LOG.warning("%s: the daemon closed the event stream", self._name)
                except TimeoutError:
                    _LOG.info("%s: event stream went quiet, reopening it", self._name)
                except aiohttp.ClientError as exc:
                    _LOG.warning("%s: event stream lost (%s)", self._name, type(exc).__name__)
                response = None
            await asyncio.sleep(backoff.delay)
            try:
                response = await self.open(session, reconnect=True)
            except (*STREAM_ERRORS, SignalRpcError) as exc:
                _LOG.warning(
                    "%s: reconnecting to the daemon failed (%s), next try in %.1fs",
                    self._name,
                    type(exc).__name__,
                    backoff.grow(),
                )
                continue
            backoff.reset()
            _LOG.info("%s: event stream reopened", self._name)

    async def _read(
        self, response: aiohttp.ClientResponse, on_event: Callable[[str], None]
    ) -> None:
        async for event in _sse_events(response.content):
            if event.type in ("receive", "message"):
                on_event(event.data)
            if event.id is not None:
                self.last_event_id = event.id
