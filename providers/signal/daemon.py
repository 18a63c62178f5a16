"""The signal-cli daemon's HTTP interface, the client Signal has instead of an SDK.

``signal-cli daemon --http`` (``signal-cli-jsonrpc(5)``, ``HttpServerHandler.java``) answers
JSON-RPC 2.0 calls on ``POST /api/v1/rpc`` (:func:`rpc_result` reads an answer,
:class:`SignalRpcError` is its error, :func:`daemon_info` asks who the daemon is) and streams
incoming envelopes as Server-Sent Events on ``GET /api/v1/events`` (:class:`EventStream` keeps
that stream open).

The stream has no memory: signal-cli writes each event with no ``id``, never reads
``Last-Event-ID`` and keeps no buffer (``HttpServerHandler.subscribeReceiveHandlers``,
``ServerSentEventSender.sendEvent(null, "receive", ...)``). An envelope the daemon receives
while no stream is subscribed is gone for pairbot, unless the daemon runs with
``--receive-mode on-connection``: then it only receives from Signal's server while a stream is
subscribed, and messages wait on the server meanwhile (``DaemonCommand``: the default handler is
a weak listener unless the mode is ``on-start``; ``ManagerImpl.addReceiveHandler`` starts
receiving for the first non-weak one, ``removeReceiveHandler`` stops with the last).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from bot.core.errors import ProviderError
from providers._json import as_dict, as_str, dicts
from providers.retry import Backoff

_LOG = logging.getLogger(__name__)

STREAM_ERRORS = (aiohttp.ClientError, TimeoutError)
"""What opening or reading the event stream raises when the daemon is away."""

E164 = re.compile(r"\+[1-9][0-9]{6,18}")
"""An account's number as signal-cli writes it (``ContactRecordProcessor.E164_PATTERN``)."""

RECEIVE_MODE = "on-connection"
"""The ``--receive-mode`` pairbot needs: the daemon receives only while pairbot listens."""

METHOD_NOT_FOUND = -32601
"""signal-cli's answer to a method this daemon does not serve (``JsonRpcResponse.Error``)."""


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


def _result(method: str, answer: object, status: int) -> Any:
    """The ``result`` of one JSON-RPC answer object."""
    if not isinstance(answer, dict):
        raise SignalRpcError(method, status, "no JSON-RPC answer")
    error = answer.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        raise SignalRpcError(
            method,
            code if isinstance(code, int) else status,
            as_str(error.get("message")) or "error",
        )
    if "result" not in answer:
        raise SignalRpcError(method, status, "no result in the answer")
    return answer["result"]


async def _answer(response: aiohttp.ClientResponse) -> object:
    try:
        return await response.json(content_type=None)
    except ValueError:
        return None


async def rpc_result(method: str, response: aiohttp.ClientResponse) -> Any:
    """The ``result`` of a JSON-RPC answer.

    Raises:
        SignalRpcError: the answer is an error, or no JSON-RPC answer at all.
    """
    return _result(method, await _answer(response), response.status)


@dataclass(frozen=True, slots=True)
class DaemonInfo:
    """What a signal-cli daemon says of itself."""

    version: str
    """signal-cli's version (``version``), or "" if it did not say."""
    accounts: tuple[str, ...] | None
    """The numbers a multi-account daemon serves (``listAccounts``); None for a daemon
    started with ``-a``, which serves one account and does not say which: it answers
    ``listAccounts`` with -32601 (a ``JsonRpcMultiCommand``, which
    ``SignalJsonRpcCommandHandler`` runs only without ``-a``)."""


async def daemon_info(session: aiohttp.ClientSession, root: str) -> DaemonInfo:
    """Ask the daemon at ``root`` its version and accounts, in one JSON-RPC batch.

    Raises:
        SignalRpcError: it did not answer as signal-cli does.
        aiohttp.ClientError, TimeoutError: it could not be reached.
    """
    batch = [
        {"jsonrpc": "2.0", "method": "version", "id": "version"},
        {"jsonrpc": "2.0", "method": "listAccounts", "id": "listAccounts"},
    ]
    async with session.post(f"{root}/api/v1/rpc", json=batch) as response:
        answers = await _answer(response)
        status = response.status
    if not isinstance(answers, list):
        raise SignalRpcError("version", status, "no JSON-RPC batch answer")
    by_id = {answer.get("id"): answer for answer in dicts(answers)}
    version = as_str(as_dict(_result("version", by_id.get("version"), status)).get("version"))
    try:
        listed = _result("listAccounts", by_id.get("listAccounts"), status)
    except SignalRpcError as exc:
        if exc.code != METHOD_NOT_FOUND:
            raise
        return DaemonInfo(version, None)
    return DaemonInfo(version, tuple(as_str(a.get("number")) for a in dicts(listed)))


def not_a_number(account: str) -> str | None:
    """What is wrong with ``account`` as the bot's account, or None: signal-cli names the
    account by its number in every event (``JsonReceiveMessageHandler``: ``account`` is
    ``m.getSelfNumber()``), so nothing else can ever match it."""
    if E164.fullmatch(account):
        return None
    return f"not a phone number with its country code: {account!r}"


def not_served(info: DaemonInfo, root: str, account: str) -> str | None:
    """Why the daemon at ``root`` cannot be ``account``'s, or None: it lists the accounts it
    serves and ``account`` is not one of them."""
    if info.accounts is None or account in info.accounts:
        return None
    served = ", ".join(info.accounts) or "no account"
    return f"the signal-cli daemon at {root} serves {served}, not {account}"


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

    type: str
    data: str


async def _sse_events(lines: aiohttp.StreamReader) -> AsyncIterator[_Event]:
    """Parse a ``text/event-stream`` body into events (WHATWG "server-sent events"); ids are
    not read: signal-cli sends none."""
    event_type = ""
    data: list[str] = []
    async for raw in lines:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data:
                yield _Event(event_type or "message", "\n".join(data))
            event_type, data = "", []
            continue
        if line.startswith(":"):
            continue  # a comment: the daemon's keep-alive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event_type = value


class EventStream:
    """The daemon's event stream for one account, reopened whenever it ends.

    What the daemon received while no stream was open is not sent again (see the module's
    doc): only ``--receive-mode on-connection`` keeps it, on Signal's server.

    Args:
        url: the stream's URL (``/api/v1/events?account=…``).
        name: the provider name, for the log.
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
        reconnect: tuple[float, float],
        connect_timeout: float,
        idle_timeout: float,
    ) -> None:
        self.url = url
        self._name = name
        self._reconnect = reconnect
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_read=idle_timeout
        )

    async def open(self, session: aiohttp.ClientSession) -> aiohttp.ClientResponse:
        """Open the stream.

        Raises:
            SignalRpcError: the daemon refused the stream.
            aiohttp.ClientError, TimeoutError: it could not be reached.
        """
        headers = {"Accept": "text/event-stream"}
        response = await session.get(self.url, headers=headers, timeout=self._timeout)
        if response.status != 200:
            response.release()
            raise SignalRpcError("events", response.status, response.reason or "refused")
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
                response = await self.open(session)
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
