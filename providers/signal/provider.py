"""Signal, through a running signal-cli JSON-RPC daemon (``signal-cli daemon --http``).

:class:`SignalProvider` owns the connection to the daemon: it reads incoming envelopes from
the Server-Sent Events stream ``GET /api/v1/events`` and sends with the JSON-RPC method
``send`` over ``POST /api/v1/rpc`` (see ``signal-cli-jsonrpc(5)``). It talks HTTP itself with
aiohttp; there is no Signal SDK: :mod:`providers.signal.daemon` is the client in its place
(JSON-RPC answers, who the daemon is, the SSE stream).

Only 1:1 data messages with text or media become DM inbounds, keyed by the sender's ACI (the
account UUID, ``sourceUuid``), never by the phone number, which may be hidden or change. Group
messages come as GROUP. Receipts, typing, sync messages (sent from the account's own linked
devices), edits, stories, calls, reactions and messages from the account itself are dropped.
A data message with an attachment, a sticker or a shared contact is an Inbound with ``media``
set and its text (the caption) or "": a stranger's photo is a contact attempt.

The stream is reopened with backoff whenever it ends (the daemon restarted, the connection
dropped, or it went quiet for too long). signal-cli replays nothing (see
:mod:`providers.signal.daemon`): what the daemon receives while pairbot has no stream open is
kept (on Signal's server) only if the daemon runs with ``--receive-mode on-connection``, which
the guide requires. Signal's server sends an envelope again until the daemon acknowledges it,
so every data envelope is remembered by ``(sender, timestamp)`` (Signal's own message identity,
the dedupe key given to :class:`~providers.base.BaseProvider`) and is handed on at most once.

Several instances of pairbot on one state must not all open the stream: the daemon writes
each envelope to every stream subscribed, so each would get it. The provider is
:attr:`~SignalProvider.one_consumer`: one instance holds the stream (the runtime's lease),
the others only send (``send`` is a JSON-RPC call and needs no stream). When the holder goes
away, a daemon in ``on-connection`` mode stops receiving once it learns its last stream is
gone, and what arrives meanwhile waits on Signal's server for the stream the next holder
opens. Two things are lost all the same, as pairbot cannot change them: signal-cli
acknowledges an envelope to Signal's server once it wrote it to a stream (a client has no way
to acknowledge handling it), so an envelope the old holder read and had not handled is gone;
and the daemon learns that a stream was closed only when a write to it fails (the second
after the close), so the first events it writes after the holder went away (envelopes or
its keep-alive, every 15 s) go nowhere.

The account: signal-cli names it by its number in every event (``account``), so ``account``
must be that number. At start the provider asks the daemon which accounts it serves
(``listAccounts``) and refuses one it does not; a daemon started with ``-a`` serves one and
does not say which, so the number in its first event is taken as the bot's, with a warning if
it is not ``account``.

Signal has no buttons: :meth:`SignalProvider.send` drops them (the owner notice already says
``/approve CODE``). :meth:`SignalProvider.edit` sends the new text as a Signal edit of the
original message (``send`` with ``editTimestamp``) while Signal clients still accept edits of
it, and as a new message otherwise or if the edit is refused.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from bot.core.clock import Clock, SystemClock
from bot.core.errors import ConfigError
from bot.core.models import Button, ChatKind, Inbound
from providers._json import as_str
from providers.base import BaseProvider
from providers.retry import Retry, RetryPolicy
from providers.signal.daemon import (
    RECEIVE_MODE,
    STREAM_ERRORS,
    DaemonInfo,
    EventStream,
    SignalRpcError,
    daemon_info,
    not_a_number,
    not_served,
    rpc_result,
    unwrap,
)

_LOG = logging.getLogger(__name__)

DEFAULT_HTTP_URL = "http://127.0.0.1:8080"
GROUP_PREFIX = "group:"
"""Chat ids of Signal groups are ``group:`` + the base64 group id (a DM's is the sender's
ACI, which never contains a colon)."""

EDIT_WINDOW = timedelta(hours=23)
"""Signal clients ignore edits of messages older than a day; older ones get a new message."""

_READ_BUFSIZE = 2**20  # one SSE line carries a whole envelope
_CONNECT_RETRIES = 3


def _chat(data: Mapping[str, Any], sender: str) -> tuple[str, ChatKind] | None:
    """The chat a data message was written in: the group's, or the DM with ``sender``."""
    group = data.get("groupInfo") or data.get("groupV2")
    if not isinstance(group, dict):
        return sender, ChatKind.DM
    group_id = as_str(group.get("groupId")) or as_str(group.get("id"))
    return (GROUP_PREFIX + group_id, ChatKind.GROUP) if group_id else None


# No text_split: signal-cli sends a text over 2000 UTF-8 bytes as its first 2000 bytes plus the
# whole text as a text/x-signal-plain attachment, as Signal's apps do (AsamK/signal-cli
# ManagerImpl.java, MAX_MESSAGE_SIZE_BYTES and splitByByteLength), so any length arrives whole.
class SignalProvider(BaseProvider):
    """The Signal provider: one account of a signal-cli daemon in HTTP mode.

    Args:
        http_url: the daemon's ``--http`` address, e.g. ``http://127.0.0.1:8080``.
        account: the bot's number with its country code (``+15551234567``), as signal-cli
            names the account in every event; sent with every call and on the event stream,
            which a multi-account daemon needs and a single-account daemon ignores.
        name: the provider name carried by every :class:`~bot.core.models.Inbound`.
        reconnect_min: seconds before the first attempt to reopen a lost event stream (or
            to retry a call that could not connect); doubled on each failure up to
            ``reconnect_max``.
        reconnect_max: the longest wait between attempts.
        idle_timeout: seconds of silence (no event, no keep-alive) after which the stream is
            taken for dead and reopened.
        request_timeout: seconds a JSON-RPC call may take.
        clock: the clock that dates edits (an edit of a message older than
            :data:`EDIT_WINDOW` is sent as a new message).

    :meth:`start` can be called again after :meth:`stop`; the memory of handled envelopes
    survives, so nothing is repeated. What arrives in between waits on Signal's server if
    the daemon runs with ``--receive-mode on-connection``, and is lost otherwise.

    Raises:
        ConfigError: ``account`` is not a phone number, or ``http_url`` not an http(s) URL.
    """

    platform = "Signal"
    one_consumer = True

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
        super().__init__(name=name)
        self.account = self._required(
            "account",
            account,
            "the Signal account is empty",
            hint="the bot's number as registered with signal-cli",
        ).strip()
        if (problem := not_a_number(self.account)) is not None:
            raise self._config_error(
                "account",
                problem,
                hint="the number the bot is registered with in signal-cli, e.g. +15551234567: "
                "signal-cli names the account by its number",
            )
        parts = urlsplit(http_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise self._config_error(
                "http_url", f"not an http(s) URL: {http_url!r}", hint="e.g. http://127.0.0.1:8080"
            )
        if not 0 < reconnect_min <= reconnect_max:
            raise self._config_error("reconnect_min", "need 0 < reconnect_min <= reconnect_max")
        self._root = http_url.rstrip("/")
        self.send_retry = RetryPolicy(
            attempts=_CONNECT_RETRIES + 1, first_delay=reconnect_min, max_delay=reconnect_max
        )
        self._request_timeout = request_timeout
        self._clock: Clock = clock or SystemClock()
        self._stream = EventStream(
            url=f"{self._root}/api/v1/events?account={quote(self.account, safe='')}",
            name=name,
            reconnect=(reconnect_min, reconnect_max),
            connect_timeout=request_timeout,
            idle_timeout=idle_timeout,
        )
        self._session: aiohttp.ClientSession | None = None
        self._reader: asyncio.Task[None] | None = None
        self._first_response: aiohttp.ClientResponse | None = None
        self._rpc_id = 0
        self._version = ""
        self._own_numbers = {self.account}
        """The account's numbers: the configured one, and the one the daemon names."""

    def __repr__(self) -> str:
        return f"SignalProvider(name={self.name!r}, http_url={self._root!r})"

    @property
    def http_url(self) -> str:
        """The daemon's root URL."""
        return self._root

    @property
    def events_url(self) -> str:
        """The SSE stream, selecting this account (a single-account daemon ignores that)."""
        return self._stream.url

    # -- lifecycle (the hooks of BaseProvider) -----------------------------------------------

    async def _connect(self) -> None:
        """Check that the daemon serves :attr:`account`: the bot can send from now on.

        Raises:
            ConfigError: the daemon cannot be reached at ``http_url``, or serves other
                accounts.
        """
        session = self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._request_timeout),
            read_bufsize=_READ_BUFSIZE,
        )
        info: DaemonInfo | None = None
        try:
            info = await daemon_info(session, self._root)
        except STREAM_ERRORS as exc:
            raise self._unreachable(exc) from None
        except SignalRpcError as exc:
            _LOG.warning(
                "%s: the daemon did not say which accounts it serves (%s)", self.name, exc
            )
        if info is not None and (problem := not_served(info, self._root, self.account)):
            raise self._config_error(
                "account",
                problem,
                hint="set account to the bot's number, or start the daemon for it",
            )
        self._version = info.version if info is not None else ""

    async def _listen(self) -> None:
        """Open the daemon's event stream; return once it is open.

        Raises:
            ConfigError: the daemon cannot be reached at ``http_url``, or refused the stream.
        """
        session = self._need(self._session)
        try:
            response = await self._stream.open(session)
        except (*STREAM_ERRORS, SignalRpcError) as exc:
            raise self._unreachable(exc) from None
        self._first_response = response
        self._reader = asyncio.create_task(
            self._stream.follow(session, response, self._on_event), name=f"{self.name}-events"
        )
        _LOG.info(
            "%s: receiving from the signal-cli daemon%s at %s (it keeps what arrives while "
            "pairbot is away only with --receive-mode %s)",
            self.name,
            f" {self._version}" if self._version else "",
            self._root,
            RECEIVE_MODE,
        )

    def _unreachable(self, exc: BaseException) -> ConfigError:
        return self._config_error(
            "http_url",
            f"cannot open the signal-cli event stream at {self._root} "
            f"({type(exc).__name__}{': ' + str(exc) if str(exc) else ''})",
            hint=f"run `signal-cli -a {self.account} daemon --http HOST:PORT --receive-mode "
            f"{RECEIVE_MODE}` and point http_url at it",
        )

    async def _stop_receiving(self) -> None:
        """Close the event stream (the daemon learns it at its next write to it)."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        response, self._first_response = self._first_response, None
        if response is not None:
            response.close()  # a reader cancelled before it began

    async def _disconnect(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # -- outbound ----------------------------------------------------------------------------

    async def _send_text(self, chat_id: str, text: str, buttons: Sequence[Button]) -> str:
        """Send plain ``text`` (Signal parses no markup unless asked); return its timestamp.

        ``chat_id`` is a recipient's ACI (or number), or ``group:<base64 id>`` for a group.

        Raises:
            SignalRpcError: the daemon refused the message.
            ProviderStateError: the provider is not running.
        """
        del buttons  # none: Signal has no buttons, so the base already dropped them
        return await self._send(chat_id, text)

    async def edit(self, chat_id: str, message_id: str, text: str) -> None:
        """Show ``text`` in place of a message the bot sent (a Signal edit), or as a new
        message when the original is too old for clients to accept an edit or the daemon
        refuses the edit. There are no buttons to remove.

        Raises:
            SignalRpcError: even the new message was refused.
            ProviderStateError: the provider is not running.
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

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Make one JSON-RPC call for this account; return its ``result``.

        A call that could not connect (the daemon is restarting) is retried a few times;
        one that may have reached the daemon is not, so nothing is sent twice.

        Raises:
            SignalRpcError: the daemon answered with an error.
            ProviderStateError: the provider is not running.
            aiohttp.ClientError: the daemon could not be reached.
        """
        session = self._need(self._session)
        self._rpc_id += 1
        body = {
            "jsonrpc": "2.0",
            "method": method,
            "params": {"account": self.account, **(params or {})},
            "id": f"pairbot-{self._rpc_id}",
        }

        async def attempt() -> Any:
            try:
                async with session.post(f"{self._root}/api/v1/rpc", json=body) as response:
                    return await rpc_result(method, response)
            except aiohttp.ClientConnectorError as exc:
                raise Retry("daemon unreachable", error=exc) from None

        return await self._retrying(attempt, what=f"JSON-RPC {method}")

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

    # -- inbound -----------------------------------------------------------------------------

    def _on_event(self, data: str) -> None:
        """Turn one event into an Inbound and queue it; never let an error escape."""
        try:
            payload = unwrap(json.loads(data))
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
        if inbound is not None:
            self._enqueue(inbound)

    def _from_envelope(self, payload: Mapping[str, Any]) -> Inbound | None:
        self._learn_number(as_str(payload.get("account")))
        envelope: Mapping[str, Any] = payload["envelope"]
        data = envelope.get("dataMessage")
        if not isinstance(data, dict):
            return None  # receipts, typing, sync (own devices), edits, stories, calls
        sender = as_str(envelope.get("sourceUuid")) or as_str(envelope.get("sourceServiceId"))
        number = as_str(envelope.get("sourceNumber"))
        if not sender or ":" in sender:
            return None  # no ACI (e.g. a PNI-only sender): no immutable id to key on
        source = {sender, number.lower(), as_str(envelope.get("source")).lower()}
        if not self._own_numbers.isdisjoint(source):
            return None  # the account itself
        timestamp = envelope.get("timestamp")
        if not isinstance(timestamp, int) or isinstance(timestamp, bool):
            return None
        if not self._first_time((sender, timestamp)):
            return None
        text = as_str(data.get("message"))
        # JsonDataMessage: a photo, file or voice note is an attachment, its caption the
        # message; a sticker and a shared contact come with no message at all.
        media = any(data.get(key) for key in ("attachments", "sticker", "contacts"))
        if not (text or media) or data.get("remoteDelete") is not None:
            return None  # reactions, deletions, expiry timer changes
        chat = _chat(data, sender)
        if chat is None:
            return None
        name = as_str(envelope.get("sourceName"))
        return Inbound(
            provider=self.name,
            chat_id=chat[0],
            chat_kind=chat[1],
            sender_id=sender,
            sender_name=name,
            text=text,
            message_id=str(timestamp),
            meta={k: v for k, v in (("name", name), ("number", number)) if v},
            sent_at=datetime.fromtimestamp(timestamp / 1000, tz=UTC),
            media=media,
        )

    def _learn_number(self, account: str) -> None:
        """Take the number the daemon names the account by as the bot's own.

        A daemon started with ``-a`` serves that one account whatever pairbot asks for, and
        says which only in its events (``JsonReceiveMessageHandler``: ``account`` is always
        the account's number), so its messages are the bot's even when ``account`` differs.
        """
        if not account or account in self._own_numbers:
            return
        self._own_numbers.add(account)
        _LOG.warning(
            "%s: the signal-cli daemon serves %s, not %s: its messages are handled as the "
            "bot's (set providers.%s.account to %s)",
            self.name,
            account,
            self.account,
            self.name,
            account,
        )


__all__ = ["DEFAULT_HTTP_URL", "EDIT_WINDOW", "GROUP_PREFIX", "SignalProvider", "SignalRpcError"]
