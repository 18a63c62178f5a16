"""Signal, through a running signal-cli JSON-RPC daemon (``signal-cli daemon --http``).

:class:`SignalProvider` owns the connection to the daemon: it reads incoming envelopes from
the Server-Sent Events stream ``GET /api/v1/events`` and sends with the JSON-RPC method
``send`` over ``POST /api/v1/rpc`` (see ``signal-cli-jsonrpc(5)``). It talks HTTP itself with
aiohttp; there is no Signal SDK.

Only 1:1 data messages with text become DM inbounds, keyed by the sender's ACI (the account
UUID, ``sourceUuid``), never by the phone number, which may be hidden or change. Group
messages come as GROUP. Receipts, typing, sync messages (sent from the account's own linked
devices), edits, stories, calls, reactions and messages from the account itself are dropped.

The stream is reopened with backoff whenever it ends (the daemon restarted, the connection
dropped, or it went quiet for too long), with ``Last-Event-ID`` so the daemon replays what was
missed. A daemon that does not know the id (it restarted) replays everything it kept, so every
data envelope is remembered by ``(sender, timestamp)`` (Signal's own message identity) and is
handed on at most once.

Signal has no buttons: :meth:`SignalProvider.send` ignores them (the owner notice already
says ``/approve CODE``). :meth:`SignalProvider.edit` sends the new text as a Signal edit of
the original message (``send`` with ``editTimestamp``) while Signal clients still accept
edits of it, and as a new message otherwise or if the edit is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from bot.core.clock import Clock, SystemClock
from bot.core.errors import ConfigError
from bot.core.models import Button, ChatKind, Inbound
from bot.core.protocols import OnInbound

_LOG = logging.getLogger(__name__)

DEFAULT_HTTP_URL = "http://127.0.0.1:8080"
GROUP_PREFIX = "group:"
"""Chat ids of Signal groups are ``group:`` + the base64 group id (a DM's is the sender's
ACI, which never contains a colon)."""

EDIT_WINDOW = timedelta(hours=23)
"""Signal clients ignore edits of messages older than a day; older ones get a new message."""

_DEDUPE_SIZE = 10_000
_READ_BUFSIZE = 2**20  # one SSE line carries a whole envelope
_CONNECT_RETRIES = 3
_UNKNOWN_EVENT_ID = "0"  # signal-cli answers an id it does not know with every kept event
_FLOOR_MARGIN_MS = 5_000


class SignalRpcError(Exception):
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


def _unwrap(payload: object) -> Mapping[str, Any] | None:
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


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


class SignalProvider:
    """The Signal provider: one account of a signal-cli daemon in HTTP mode.

    Args:
        http_url: the daemon's ``--http`` address, e.g. ``http://127.0.0.1:8080``.
        account: the bot's account as the daemon knows it (its number, ``+15551234567``, or
            the ACI of a numberless account); sent with every call, which a multi-account
            daemon needs and a single-account daemon ignores.
        name: the provider name carried by every :class:`~bot.core.models.Inbound`.
        reconnect_min: seconds before the first attempt to reopen a lost event stream;
            doubled on each failure up to ``reconnect_max``.
        reconnect_max: the longest wait between attempts.
        idle_timeout: seconds of silence (no event, no keep-alive) after which the stream is
            taken for dead and reopened.
        request_timeout: seconds a JSON-RPC call may take.
        clock: the clock that dates edits (an edit of a message older than
            :data:`EDIT_WINDOW` is sent as a new message).

    :meth:`start` can be called again after :meth:`stop`; the stream position and the
    memory of handled envelopes survive, so nothing is lost or repeated in between.
    """

    def __init__(
        self,
        *,
        http_url: str = DEFAULT_HTTP_URL,
        account: str,
        name: str = "signal",
        reconnect_min: float = 0.5,
        reconnect_max: float = 30.0,
        idle_timeout: float = 120.0,
        request_timeout: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        source = f"providers.{name}"
        if not account or not account.strip():
            raise ConfigError(
                "the Signal account is empty",
                source=source,
                field="account",
                hint="the bot's number as registered with signal-cli",
            )
        parts = urlsplit(http_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"not an http(s) URL: {http_url!r}",
                source=source,
                field="http_url",
                hint="e.g. http://127.0.0.1:8080",
            )
        if not 0 < reconnect_min <= reconnect_max:
            raise ConfigError(
                "need 0 < reconnect_min <= reconnect_max", source=source, field="reconnect_min"
            )
        self.name = name
        self.bare_commands = False
        self.account = account.strip()
        self._root = http_url.rstrip("/")
        self._reconnect = (reconnect_min, reconnect_max)
        self._idle_timeout = idle_timeout
        self._request_timeout = request_timeout
        self._clock: Clock = clock or SystemClock()
        self._session: aiohttp.ClientSession | None = None
        self._reader: asyncio.Task[None] | None = None
        self._in_hand: asyncio.Task[None] | None = None
        self._first_response: aiohttp.ClientResponse | None = None
        self._on_inbound: OnInbound | None = None
        self._busy = False  # start() or stop() in progress
        self._last_event_id: str | None = None
        self._first_open_ms: int | None = None
        self._floor_ms: int | None = None
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._rpc_id = 0
        self._warned_accounts: set[str] = set()

    def __repr__(self) -> str:
        return f"SignalProvider(name={self.name!r}, http_url={self._root!r})"

    @property
    def running(self) -> bool:
        """Whether :meth:`start` has returned and :meth:`stop` has not been called."""
        return self._reader is not None and not self._busy

    @property
    def events_url(self) -> str:
        """The SSE stream, selecting this account (a single-account daemon ignores that)."""
        return f"{self._root}/api/v1/events?account={quote(self.account, safe='')}"

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, on_inbound: OnInbound) -> None:
        """Open the daemon's event stream and return once it is open.

        Raises:
            ConfigError: the daemon cannot be reached at ``http_url`` or refused the stream.
            RuntimeError: the provider is already running.
        """
        if self._reader is not None or self._busy:
            raise RuntimeError(f"{self.name}: provider is already running")
        self._busy = True
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._request_timeout),
            read_bufsize=_READ_BUFSIZE,
        )
        try:
            response = await self._open_stream(session)
        except (aiohttp.ClientError, TimeoutError, SignalRpcError) as exc:
            await session.close()
            self._busy = False
            raise ConfigError(
                f"cannot open the signal-cli event stream at {self._root} "
                f"({type(exc).__name__}{': ' + str(exc) if str(exc) else ''})",
                source=f"providers.{self.name}",
                field="http_url",
                hint=f"run `signal-cli -a {self.account} daemon --http HOST:PORT` and point "
                "http_url at it",
            ) from None
        except BaseException:
            await session.close()
            self._busy = False
            raise
        self._session, self._on_inbound = session, on_inbound
        self._first_response = response
        self._reader = asyncio.create_task(
            self._read_forever(response), name=f"{self.name}-events"
        )
        self._busy = False
        _LOG.info("%s: receiving from the signal-cli daemon at %s", self.name, self._root)

    async def stop(self) -> None:
        """Close the event stream and the HTTP session. Safe to call twice."""
        reader, session = self._reader, self._session
        if reader is None or self._busy:
            return
        self._busy = True
        try:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            in_hand = self._in_hand
            if in_hand is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await in_hand
            if self._first_response is not None:
                self._first_response.close()  # a reader cancelled before it began
            if session is not None:
                await session.close()
        finally:
            self._reader = self._session = self._on_inbound = self._in_hand = None
            self._first_response = None
            self._busy = False
        _LOG.info("%s: stopped", self.name)

    # -- outbound ----------------------------------------------------------------------------

    async def send(self, chat_id: str, text: str, *, buttons: Sequence[Button] = ()) -> str:
        """Send plain ``text`` (Signal parses no markup unless asked); return its timestamp.

        ``buttons`` are ignored: Signal has none, and every text that offers buttons also
        spells out the command. ``chat_id`` is a recipient's ACI (or number), or
        ``group:<base64 id>`` for a group.

        Raises:
            SignalRpcError: the daemon refused the message.
            RuntimeError: the provider is not running.
        """
        del buttons  # Signal has no inline buttons
        return await self._send(chat_id, text)

    async def edit(self, chat_id: str, message_id: str, text: str) -> None:
        """Show ``text`` in place of a message the bot sent (a Signal edit), or as a new
        message when the original is too old for clients to accept an edit or the daemon
        refuses the edit. There are no buttons to remove.

        Raises:
            SignalRpcError: even the new message was refused.
            RuntimeError: the provider is not running.
        """
        try:
            sent_ms = int(message_id)
        except ValueError:
            sent_ms = None
        if sent_ms is not None:
            age = self._clock.now() - datetime.fromtimestamp(sent_ms / 1000, tz=UTC)
            if age < EDIT_WINDOW:
                try:
                    await self._send(chat_id, text, edit_timestamp=sent_ms)
                except SignalRpcError as exc:
                    _LOG.warning(
                        "%s: edit refused (%s), sending a new message", self.name, exc.code
                    )
                else:
                    return
        await self._send(chat_id, text)

    async def dm_chat_id(self, user_id: str) -> str:
        """A 1:1 chat on Signal is addressed by the other person's ACI."""
        return user_id

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Make one JSON-RPC call for this account; return its ``result``.

        A call that could not connect (the daemon is restarting) is retried a few times;
        one that may have reached the daemon is not, so nothing is sent twice.

        Raises:
            SignalRpcError: the daemon answered with an error.
            RuntimeError: the provider is not running.
            aiohttp.ClientError: the daemon could not be reached.
        """
        session = self._session
        if session is None:
            raise RuntimeError(f"{self.name}: provider is not running")
        self._rpc_id += 1
        body = {
            "jsonrpc": "2.0",
            "method": method,
            "params": {"account": self.account, **(params or {})},
            "id": f"pairbot-{self._rpc_id}",
        }
        delay = self._reconnect[0]
        for attempt in range(_CONNECT_RETRIES + 1):
            try:
                async with session.post(f"{self._root}/api/v1/rpc", json=body) as response:
                    return await self._rpc_result(method, response)
            except aiohttp.ClientConnectorError:
                if attempt == _CONNECT_RETRIES:
                    raise
                _LOG.warning(
                    "%s: daemon unreachable for %s, retrying in %.1fs", self.name, method, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._reconnect[1])
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(self, chat_id: str, text: str, *, edit_timestamp: int | None = None) -> str:
        params: dict[str, Any] = {"message": text}
        if chat_id.startswith(GROUP_PREFIX):
            params["groupId"] = chat_id.removeprefix(GROUP_PREFIX)
        else:
            params["recipient"] = [chat_id]
        if edit_timestamp is not None:
            params["editTimestamp"] = edit_timestamp
        result = await self.call("send", params)
        timestamp = result.get("timestamp") if isinstance(result, dict) else None
        if not isinstance(timestamp, int):
            raise SignalRpcError("send", 0, "the answer has no timestamp")
        return str(timestamp)

    async def _rpc_result(self, method: str, response: aiohttp.ClientResponse) -> Any:
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
                _text(error.get("message")) or "error",
            )
        if "result" not in answer:
            raise SignalRpcError(method, response.status, "no result in the answer")
        return answer["result"]

    # -- inbound -----------------------------------------------------------------------------

    async def _open_stream(
        self, session: aiohttp.ClientSession, *, reconnect: bool = False
    ) -> aiohttp.ClientResponse:
        """Open the event stream where the last one left off.

        Reopened before any event was seen, it asks for every event the daemon kept (an id
        it cannot know), so nothing that came in meanwhile is lost; kept events the daemon
        received before this provider first connected are then history, not news, and are
        skipped (``_floor_ms``).
        """
        headers = {"Accept": "text/event-stream"}
        floor: int | None = None
        if self._last_event_id is not None:
            headers["Last-Event-ID"] = self._last_event_id
        elif reconnect and self._first_open_ms is not None:
            headers["Last-Event-ID"] = _UNKNOWN_EVENT_ID
            floor = self._first_open_ms - _FLOOR_MARGIN_MS
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self._request_timeout, sock_read=self._idle_timeout
        )
        response = await session.get(self.events_url, headers=headers, timeout=timeout)
        if response.status != 200:
            response.release()
            raise SignalRpcError("events", response.status, response.reason or "refused")
        self._floor_ms = floor
        if self._first_open_ms is None:
            self._first_open_ms = int(SystemClock().now().timestamp() * 1000)
        return response

    async def _read_forever(self, first: aiohttp.ClientResponse) -> None:
        """Read the stream; reopen it with backoff whenever it ends, until cancelled."""
        response: aiohttp.ClientResponse | None = first
        delay = self._reconnect[0]
        while True:
            if response is not None:
                try:
                    async with response:
                        await self._read(response)
                    _LOG.warning("%s: the daemon closed the event stream", self.name)
                except TimeoutError:
                    _LOG.info("%s: event stream went quiet, reopening it", self.name)
                except aiohttp.ClientError as exc:
                    _LOG.warning("%s: event stream lost (%s)", self.name, type(exc).__name__)
                response = None
            await asyncio.sleep(delay)
            session = self._session
            if session is None:  # stop() is running; it cancels this task
                continue
            try:
                response = await self._open_stream(session, reconnect=True)
            except (aiohttp.ClientError, TimeoutError, SignalRpcError) as exc:
                delay = min(delay * 2, self._reconnect[1])
                _LOG.warning(
                    "%s: reconnecting to the daemon failed (%s), next try in %.1fs",
                    self.name,
                    type(exc).__name__,
                    delay,
                )
                continue
            delay = self._reconnect[0]
            _LOG.info("%s: event stream reopened", self.name)

    async def _read(self, response: aiohttp.ClientResponse) -> None:
        async for event in _sse_events(response.content):
            if event.type in ("receive", "message"):
                await self._on_event(event.data)
            if event.id is not None:
                self._last_event_id = event.id

    async def _on_event(self, data: str) -> None:
        """Turn one event into an Inbound and hand it over; never let an error escape."""
        try:
            payload = _unwrap(json.loads(data))
        except ValueError:
            _LOG.warning("%s: ignored an event that is not JSON", self.name)
            return
        if payload is None:
            return
        try:
            inbound = self._from_envelope(payload)
        except Exception:
            _LOG.exception("%s: reading an envelope failed", self.name)
            return
        if inbound is None or self._on_inbound is None:
            return
        # Shielded: stop() lets the message in hand finish before closing the session.
        self._in_hand = asyncio.create_task(self._deliver(self._on_inbound, inbound))
        await asyncio.shield(self._in_hand)

    async def _deliver(self, on_inbound: OnInbound, inbound: Inbound) -> None:
        try:
            await on_inbound(inbound)
        except Exception:
            _LOG.exception("%s: handling a message from %s failed", self.name, inbound.sender_id)

    def _from_envelope(self, payload: Mapping[str, Any]) -> Inbound | None:
        account = payload.get("account")
        if isinstance(account, str) and account and account != self.account:
            if account not in self._warned_accounts:
                self._warned_accounts.add(account)
                _LOG.warning(
                    "%s: ignoring events of another account on the daemon (set "
                    "`account` to the id the daemon uses)",
                    self.name,
                )
            return None
        envelope: Mapping[str, Any] = payload["envelope"]
        data = envelope.get("dataMessage")
        if not isinstance(data, dict):
            return None  # receipts, typing, sync (own devices), edits, stories, calls
        sender = _text(envelope.get("sourceUuid")) or _text(envelope.get("sourceServiceId"))
        number = _text(envelope.get("sourceNumber"))
        if not sender or ":" in sender:
            return None  # no ACI (e.g. a PNI-only sender): no immutable id to key on
        sender = sender.lower()
        own = self.account.lower()
        if own in (sender, number.lower(), _text(envelope.get("source")).lower()):
            return None  # the account itself
        timestamp = envelope.get("timestamp")
        if not isinstance(timestamp, int) or isinstance(timestamp, bool):
            return None
        key = (sender, timestamp)
        if key in self._seen:
            _LOG.debug("%s: dropped a replayed envelope", self.name)
            return None
        self._seen[key] = None
        if len(self._seen) > _DEDUPE_SIZE:
            self._seen.popitem(last=False)
        received = envelope.get("serverReceivedTimestamp")
        if (
            self._floor_ms is not None
            and (received if isinstance(received, int) else timestamp) < self._floor_ms
        ):
            return None  # replayed history from before this provider connected
        text = data.get("message")
        if not isinstance(text, str) or not text or data.get("remoteDelete") is not None:
            return None  # attachments only, reactions, deletions, expiry timer changes
        name = _text(envelope.get("sourceName"))
        meta = {k: v for k, v in (("name", name), ("number", number)) if v}
        group = data.get("groupInfo") or data.get("groupV2")
        if isinstance(group, dict):
            group_id = _text(group.get("groupId")) or _text(group.get("id"))
            if not group_id:
                return None
            chat_id, kind = GROUP_PREFIX + group_id, ChatKind.GROUP
        else:
            chat_id, kind = sender, ChatKind.DM
        return Inbound(
            provider=self.name,
            chat_id=chat_id,
            chat_kind=kind,
            sender_id=sender,
            sender_name=name,
            text=text,
            message_id=str(timestamp),
            meta=meta,
            sent_at=datetime.fromtimestamp(timestamp / 1000, tz=UTC),
        )
