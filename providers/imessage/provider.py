"""iMessage, through a BlueBubbles server: its ``new-message`` webhook in, its REST API out.

:class:`IMessageProvider` serves the webhook BlueBubbles POSTs events to and turns each
``new-message`` from someone else into an :class:`~bot.core.models.Inbound`. The sender is the
handle's address (a ``+E.164`` phone number as BlueBubbles gives it, or an e-mail address),
never a contact name. Only ``<service>;-;<handle>`` chats are DMs; group chats
(``iMessage;+;chat…``) arrive as GROUP and the core drops them. A message without text (a
photo, a file, a sticker, a voice note: text empty or only U+FFFC) arrives with ``media`` set
and empty text. The bot's own messages (``isFromMe``), tapbacks and every other event type
are ignored.

BlueBubbles does not sign its webhooks, so the endpoint requires the ``password`` query
parameter to equal the server password (register
``http://HOST:PORT/bluebubbles/webhook?password=…`` in BlueBubbles); anything else is
answered 401 and not looked at. Accepted messages are handed to the core one at a time, in
order, by the base's worker, so a slow reply never holds up BlueBubbles' POST.

**Catch-up.** BlueBubbles posts each webhook once and forgets it (``webhookService``): what it
posts while pairbot is down or unreachable is gone. So the provider also reads messages back
through ``POST /api/v1/message/query``: once as it starts (after the webhook listens) and then
every ``catch_up_every`` seconds, from a little before the newest message it has seen
(:data:`_OVERLAP_MS`, for a message the Mac stores late). Each message is handled at most once:
webhook and catch-up share one dedupe on the message guid, and the cursor (the newest time and
the guids seen since it, less the overlap) is saved through :class:`~bot.core.protocols.Cursors`
as each message is handed on, and loaded on the next start. The first start ever only notes
where the server's history ends.

**DM chats.** The chat with a handle is the one macOS has: ``any;-;<handle>`` on macOS 26,
``iMessage;-;`` or ``SMS;-;`` before. It is learned from the handle's own messages, else looked
up by exact guid through ``POST /api/v1/chat/query``; it is never assumed. A send to a
one-to-one guid the Mac lacks (stored by an older pairbot) goes to the handle's real chat. A
handle with no chat on the Mac yet gets its bare handle as the chat id, and sending to it is
refused: it must write to the bot's Apple ID first (a stranger always has; the owner does
once, at set-up).

**Sends.** Outbound text goes through ``POST /api/v1/message/text`` with a fresh ``tempGuid``.
BlueBubbles answers once Messages shows the message, or 500 after waiting 2 minutes for that
(:data:`SERVER_CONFIRM_WAIT`), so a send's ``request_timeout`` must outlast that wait. A send
that failed in a way that leaves open whether it went out (a 500, no answer, a dropped
connection, a gateway's 502/504) is never simply sent again: the chat's recent messages are
read first, and the bot's own message with that text, sent since, is taken as the send. Until
BlueBubbles can be asked, nothing is resent. iMessage has no buttons:
:meth:`IMessageProvider.send` drops them and :meth:`IMessageProvider.edit` sends the new text as
a new message.

The password never appears in what this module logs or raises: URLs are logged without their
query, and client errors are reported by type only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
from aiohttp import web

from bot.core.clock import Clock, SystemClock
from bot.core.models import Button, ChatKind, Inbound
from bot.core.platforms import IMessageConfig
from bot.core.protocols import Cursors
from bot.core.schema import WebhookConfig
from providers.base import Dedupe
from providers.imessage.bluebubbles import (
    BlueBubbles,
    BlueBubblesError,
    MaybeSent,
    ServerError,
)
from providers.retry import Retry, RetryPolicy
from providers.webhook import WebhookProvider, WebhookServer

_LOG = logging.getLogger(__name__)

SendMethod = Literal["auto", "apple-script", "private-api"]

_DM_STYLE = 45
_OBJECT_REPLACEMENT = "\ufffc"  # stands in for an attachment inside a message's text
_MAX_SERVER_ERRORS = 3  # a 500 from BlueBubbles means iMessage failed; try that often at most
_DM_SERVICES = ("any", "iMessage", "SMS", "RCS")
"""The first part of a DM chat guid, in the order a handle's chat is looked up: ``any`` on
macOS 26, the service's name before."""
_OVERLAP_MS = 5 * 60 * 1000
"""Catch-up reads from this long before the newest message seen: the Mac may store a message
(delivered late, or after the Mac was offline) with a time before ones it stored earlier."""
_PAGE = 500  # messages per catch-up query (BlueBubbles takes 1000 at most)
_SENT_SLACK_MS = 60_000
"""Looking for a send that may have gone out, messages from this long before it was first
tried count (the Mac's clock may run behind pairbot's)."""

SERVER_CONFIRM_WAIT = 120.0
"""Seconds BlueBubbles waits for Messages to show a sent text before it answers 500
(``MessagePromise``: "2 minute timeout for messages")."""

DEFAULT_WEBHOOK = WebhookConfig(port=8082, path="/bluebubbles/webhook")
"""Where the webhook listens unless told (the config block's default too)."""


def _chat_kind(chat: Mapping[str, Any]) -> ChatKind:
    """DM only for ``<service>;-;<handle>`` chats that nothing else marks as a group."""
    parts = str(chat.get("guid", "")).split(";", 2)
    participants = chat.get("participants")
    if (
        len(parts) == 3
        and parts[1] == "-"
        and parts[2]
        and chat.get("style") in (None, _DM_STYLE)
        and not (isinstance(participants, list) and len(participants) > 1)
    ):
        return ChatKind.DM
    return ChatKind.GROUP


def _sent_at(value: object) -> datetime | None:
    """``dateCreated`` is milliseconds since the Unix epoch."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    try:
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _ms(value: object) -> int | None:
    """A ``dateCreated`` (ms since the epoch) as an int, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return int(value)


@dataclass
class _Mark:
    """Where catch-up got to: the newest message time seen (ms) and the guids seen from
    :data:`_OVERLAP_MS` before it on, so a message read again is known."""

    after: int
    guids: dict[str, int] = field(default_factory=dict)

    def see(self, guid: str, at: int | None) -> None:
        """Note one message (``at``: its time, if it has one)."""
        if at is None:
            return
        self.after = max(self.after, at)
        self.guids[guid] = at
        floor = self.after - _OVERLAP_MS
        if min(self.guids.values()) < floor:
            self.guids = {g: t for g, t in self.guids.items() if t >= floor}

    def dump(self) -> str:
        return json.dumps({"after": self.after, "guids": self.guids}, separators=(",", ":"))

    @classmethod
    def load(cls, text: str) -> _Mark | None:
        """The mark saved as ``text``; None if it is not one (a new start, logged)."""
        try:
            raw = json.loads(text)
            after = raw["after"]
            guids = raw.get("guids", {})
            if not isinstance(after, int) or not isinstance(guids, dict):
                return None
            return cls(after, {str(g): int(t) for g, t in guids.items()})
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


def _letters(text: object) -> str:
    """The letters and digits of a text: what BlueBubbles compares to match a sent message
    (``onlyAlphaNumeric`` in ``MessagePromise``)."""
    return "".join(c for c in text if c.isalnum()) if isinstance(text, str) else ""


def _answer(status: int, message: str) -> web.Response:
    """A webhook answer in BlueBubbles' own envelope."""
    return web.json_response({"status": status, "message": message}, status=status)


class IMessageProvider(WebhookProvider):
    """The iMessage provider: a webhook endpoint for BlueBubbles and a REST client to it.

    Args:
        server_url: the BlueBubbles server root, e.g. ``http://mac-mini.lan:1234``.
        password: the BlueBubbles server password; it authenticates both directions.
        webhook: where the webhook endpoint listens (port 0 picks a free one: read
            :attr:`webhook_port` after start); BlueBubbles must POST to its path with
            ``?password=<password>``.
        name: the provider name carried by every :class:`~bot.core.models.Inbound`.
        send_method: ``apple-script``, ``private-api``, or ``auto`` (the Private API when
            ``/api/v1/server/info`` says it is enabled and its helper connected).
        request_timeout: seconds a send may take; more than ``confirm_wait``, as BlueBubbles
            answers a send only once Messages shows it, or when it gives up waiting.
        confirm_wait: seconds BlueBubbles waits for that (:data:`SERVER_CONFIRM_WAIT`, its
            constant; tests shorten it with their fake's).
        catch_up_every: seconds between two reads of the messages webhooks may have missed.
        cursors: where the catch-up cursor survives a restart (the state store; given by the
            composition root). Without, it is kept in memory: across a stop and start only.
        clock: what "since this send began" is read from (the Mac's own clock may differ by
            up to a minute).
        send_retry_for: seconds a send keeps retrying while BlueBubbles is unreachable.
        retry_initial: the first backoff delay in seconds; it doubles up to ``retry_max``.
        retry_max: the longest backoff delay in seconds.
        dedupe_size: how many inbound message guids are remembered to drop redeliveries.
        stop_grace: seconds :meth:`stop` gives the messages already accepted to be handled.

    :meth:`start` can be called again after :meth:`stop`.
    """

    platform = "iMessage"

    def __init__(
        self,
        *,
        server_url: str,
        password: str,
        webhook: WebhookConfig = DEFAULT_WEBHOOK,
        name: str = "imessage",
        send_method: SendMethod = "auto",
        request_timeout: float = SERVER_CONFIRM_WAIT + 10.0,
        confirm_wait: float = SERVER_CONFIRM_WAIT,
        catch_up_every: float = 60.0,
        cursors: Cursors | None = None,
        clock: Clock | None = None,
        send_retry_for: float = 300.0,
        retry_initial: float = 0.5,
        retry_max: float = 10.0,
        dedupe_size: int = 10_000,
        stop_grace: float = 5.0,
    ) -> None:
        super().__init__(
            name=name,
            webhook=WebhookServer.at(webhook),
            dedupe_size=dedupe_size,
            drain_timeout=stop_grace,
        )
        self._check_settings(server_url, password, send_method)
        for setting, value in (
            ("request_timeout", request_timeout),
            ("confirm_wait", confirm_wait),
            ("catch_up_every", catch_up_every),
            ("send_retry_for", send_retry_for),
            ("retry_initial", retry_initial),
            ("retry_max", retry_max),
        ):
            if not value > 0:
                raise self._config_error(setting, "must be positive")
        if not request_timeout > confirm_wait:
            raise self._config_error(
                "request_timeout",
                f"must be more than {confirm_wait:g} s, the time BlueBubbles waits to see a "
                "send go out before it answers",
                hint=f"the default is {SERVER_CONFIRM_WAIT + 10:g}",
            )
        self.send_retry = RetryPolicy(
            attempts=None,
            first_delay=retry_initial,
            max_delay=retry_max,
            give_up_after=send_retry_for,
        )
        self._root = server_url.strip().rstrip("/")
        self._password = password
        self._send_method: SendMethod = send_method
        self._method = "private-api" if send_method == "private-api" else "apple-script"
        self._api: BlueBubbles = BlueBubbles(
            root=self._root,
            password=password,
            timeout=aiohttp.ClientTimeout(total=request_timeout),
            name=name,
        )
        self._cursors = cursors
        self._clock: Clock = clock or SystemClock()
        self._cursor_key = f"{name}.catch-up"
        self._mark: _Mark | None = None
        self._catch_up_every = catch_up_every
        self._catcher: asyncio.Task[None] | None = None
        self._dm_chats: dict[str, str] = {}  # handle (normal form) -> its DM chat guid
        self._chats_seen: set[str] = set()  # DM chat guids the Mac is known to have
        self._claimed = Dedupe(1000)  # guids of the bot's messages already taken as a send

    def _check_settings(self, server_url: str, password: str, send_method: str) -> None:
        self._required("server_url", server_url, "the BlueBubbles server URL is empty")
        if not server_url.strip().lower().startswith(("http://", "https://")):
            raise self._config_error("server_url", "must start with http:// or https://")
        if "?" in server_url or "#" in server_url:
            raise self._config_error(
                "server_url", "must not carry a query (the password is passed separately)"
            )
        if not password:
            raise self._config_error("password", "the BlueBubbles password is empty")
        if send_method not in ("auto", "apple-script", "private-api"):
            raise self._config_error("send_method", "must be auto, apple-script or private-api")

    def __repr__(self) -> str:
        return f"IMessageProvider(name={self.name!r}, server_url={self._root!r})"

    @property
    def send_method(self) -> str:
        """The ``method`` sends use (``apple-script`` or ``private-api``)."""
        return self._method

    # -- lifecycle (the hooks of BaseProvider) -----------------------------------------------

    async def _connect(self) -> None:
        """Check the password, serve the webhook endpoint, catch up on what was missed, and
        return; catch-up then runs every ``catch_up_every`` seconds.

        An unreachable BlueBubbles server is only logged: webhooks arrive once it is back,
        sends retry until then, and the next catch-up reads what was missed meanwhile.

        Raises:
            ConfigError: BlueBubbles rejected the password, or the webhook port is taken.
        """
        self._api.open()
        await self._check_server()
        try:
            await self._serve(self._on_webhook)
        except OSError as exc:
            raise self._config_error(
                "webhook.port",
                f"cannot listen on {self._webhook.host}:{self.webhook_port} ({exc.strerror})",
            ) from None
        _LOG.info(
            "%s: webhook listening on %s (send method %s)",
            self.name,
            self.webhook_url,
            self._method,
        )
        await self._load_mark()
        await self._catch_up_logged()
        self._catcher = asyncio.create_task(self._catch_up_often(), name=f"{self.name}-catch-up")

    async def _stop_receiving(self) -> None:
        """Stop catching up, then stop listening (the requests in hand are answered)."""
        catcher, self._catcher = self._catcher, None
        if catcher is not None:
            catcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await catcher
        await super()._stop_receiving()

    async def _check_server(self) -> None:
        """Check the password and, for ``auto``, whether the Private API is usable."""
        try:
            status, payload = await self._api.server_info()
        except (aiohttp.ClientError, TimeoutError) as exc:
            _LOG.warning(
                "%s: BlueBubbles at %s is not reachable (%s); sends will retry",
                self.name,
                self._root,
                type(exc).__name__,
            )
            return
        if status in (401, 403):
            raise self._config_error(
                "password",
                "BlueBubbles rejected the password",
                hint="use the server password set in BlueBubbles",
            )
        if status != 200 or not isinstance(payload, dict):
            _LOG.warning(
                "%s: BlueBubbles server info answered HTTP %d; using %s",
                self.name,
                status,
                self._method,
            )
            return
        data = payload.get("data")
        if self._send_method == "auto" and isinstance(data, dict):
            usable = data.get("private_api") is True and data.get("helper_connected") is True
            self._method = "private-api" if usable else "apple-script"
        version = data.get("server_version") if isinstance(data, dict) else None
        _LOG.info("%s: BlueBubbles server %s reachable", self.name, version or "(unknown)")

    # -- catch-up -----------------------------------------------------------------------------

    async def _load_mark(self) -> None:
        """Read the saved cursor (once per process: later starts keep the one in memory) and
        remember its guids as seen."""
        if self._mark is not None or self._cursors is None:
            return
        saved = await asyncio.to_thread(self._cursors.cursor, self._cursor_key)
        if saved is None:
            return
        self._mark = _Mark.load(saved)
        if self._mark is None:
            _LOG.warning("%s: the saved catch-up cursor is unreadable; starting anew", self.name)
            return
        for guid in self._mark.guids:
            self._seen.first_time(guid)

    async def _save_mark(self) -> None:
        if self._cursors is not None and self._mark is not None:
            await asyncio.to_thread(self._cursors.save_cursor, self._cursor_key, self._mark.dump())

    async def _catch_up_often(self) -> None:
        while True:
            await asyncio.sleep(self._catch_up_every)
            await self._catch_up_logged()

    async def _catch_up_logged(self) -> None:
        """:meth:`catch_up`, a failure logged (the next one tries again)."""
        try:
            await self.catch_up()
        except (Retry, BlueBubblesError) as exc:
            _LOG.warning(
                "%s: catching up on missed messages failed (%s); trying again in %g s",
                self.name,
                exc.reason if isinstance(exc, Retry) else exc,
                self._catch_up_every,
            )
        except Exception:  # an answer of another shape: the webhooks still flow
            _LOG.exception("%s: catching up on missed messages failed", self.name)

    async def catch_up(self) -> int:
        """Read the messages BlueBubbles stored since the cursor and take those not seen yet,
        as if their webhook had come; return how many were new.

        The first time ever (no cursor) only the newest message is noted: history from before
        pairbot is not replayed.

        Raises:
            Retry: BlueBubbles could not be asked.
            BlueBubblesError: it refused the query.
        """
        if self._mark is None:
            await self._start_mark()
            return 0
        new = 0
        async for data in self._since(self._mark.after - _OVERLAP_MS):
            new += self._take(data)
        if new:
            _LOG.info("%s: caught up on %d message(s) no webhook brought", self.name, new)
        return new

    async def _start_mark(self) -> None:
        """The first cursor: the newest message, and those of the overlap before it, noted as
        seen (not handed on)."""
        newest = await self._api.messages({"limit": 1, "sort": "DESC"})
        at = _ms(newest[0].get("dateCreated")) if newest else None
        mark = _Mark(at or 0)
        if at is not None:
            async for data in self._since(at - _OVERLAP_MS):
                guid = data.get("guid")
                if isinstance(guid, str) and guid:
                    self._seen.first_time(guid)
                    mark.see(guid, _ms(data.get("dateCreated")))
        self._mark = mark
        await self._save_mark()

    async def _since(self, after: int) -> AsyncIterator[dict[str, Any]]:
        """Every message stored at ``after`` (ms) or later, oldest first, page by page."""
        body: dict[str, Any] = {
            "after": max(after, 0),
            "sort": "ASC",
            "limit": _PAGE,
            "with": ["chats", "chats.participants", "attachments"],
        }
        offset = 0
        while True:
            page = await self._api.messages({**body, "offset": offset})
            for data in page:
                yield data
            if len(page) < _PAGE:
                return
            offset += len(page)

    # -- outbound ----------------------------------------------------------------------------

    async def dm_chat_id(self, user_id: str) -> str:
        """The handle's one-to-one chat as the Mac names it: learned from its messages, else
        looked up (:meth:`_look_up_chat`); the bare handle if the Mac has none yet."""
        known = self._dm_chats.get(user_id)
        if known is not None:
            return known
        found = await self._retrying(
            lambda: self._look_up_chat(user_id), what="chat lookup", give_up=self._gave_up
        )
        if found is not None:
            self._learn(user_id, found)
        return found or user_id

    async def _look_up_chat(self, handle: str) -> str | None:
        """``POST /api/v1/chat/query`` for each DM guid macOS may have given the handle's chat
        (``any;-;`` on macOS 26, ``iMessage;-;``, ``SMS;-;``, ``RCS;-;``): the query matches
        a guid exactly and has no handle filter (``chatRouter.ts``, ``getChats``)."""
        for service in _DM_SERVICES:
            guid = f"{service};-;{handle}"
            if await self._chat_exists(guid):
                return guid
        return None

    async def _chat_exists(self, guid: str) -> bool:
        """Whether the Mac has a one-to-one chat with exactly this guid."""
        for chat in await self._api.chats({"guid": guid, "limit": 1}):
            if chat.get("guid") == guid and _chat_kind(chat) is ChatKind.DM:
                return True
        return False

    def _learn(self, handle: str, chat_guid: str) -> None:
        self._dm_chats[IMessageConfig.ids.normalise(handle)] = chat_guid
        self._chats_seen.add(chat_guid)

    async def _chat_for(self, chat_id: str) -> str:
        """The chat a send to ``chat_id`` goes to: itself if the Mac has it (seen this run, or
        found now); for a one-to-one guid it lacks (one stored by an older pairbot, before
        macOS 26) or a bare handle, the handle's chat (:meth:`dm_chat_id`). A group guid goes
        as given.

        Raises:
            BlueBubblesError: the handle has no chat on the Mac, or the server stays
                unreachable.
        """
        if chat_id in self._chats_seen:
            return chat_id
        _, dm, handle = chat_id.partition(";-;")
        if not dm and ";" in chat_id:
            return chat_id
        if dm:
            exists = await self._retrying(
                lambda: self._chat_exists(chat_id), what="chat lookup", give_up=self._gave_up
            )
            if exists:
                self._learn(handle, chat_id)
                return chat_id
        handle = IMessageConfig.ids.normalise(handle if dm else chat_id)
        found = await self.dm_chat_id(handle)
        if ";" not in found:
            raise BlueBubblesError(
                f"{self.name}: {handle} has no chat on the Mac; they must write to the "
                "bot's Apple ID first"
            )
        return found

    async def _send_text(self, chat_id: str, text: str, buttons: Sequence[Button]) -> str:
        """Send ``text`` to a chat guid with a fresh ``tempGuid``; return the message guid.

        After a failure that leaves open whether the message went out, the chat's messages
        are read first (:meth:`_went_out`) and the send is tried again only if it is not
        there. Retries go on while BlueBubbles is unreachable, up to ``send_retry_for``; a 500
        ends it after three tries.

        Raises:
            ProviderStateError: the provider is not running.
            BlueBubblesError: BlueBubbles refused the message, or stayed unreachable, or the
                handle has no chat on the Mac.
        """
        del buttons  # none: iMessage has no buttons, so the base already dropped them
        chat_id = await self._chat_for(chat_id)
        body = {
            "chatGuid": chat_id,
            "message": text,
            "tempGuid": f"pairbot-{uuid.uuid4()}",
            "method": self._method,
        }
        since = int(self._clock.now().timestamp() * 1000) - _SENT_SLACK_MS
        tries = server_errors = 0
        unsure = False  # a try may have sent it: look before sending again

        async def attempt() -> str:
            nonlocal tries, server_errors, unsure
            if unsure:
                sent = await self._went_out(chat_id, text, since)
                if sent is not None:
                    _LOG.info("%s: the message had gone out after all; not sent again", self.name)
                    return sent
                unsure = False
            tries += 1
            try:
                guid = await self._api.send_text(body)
            except MaybeSent as failure:
                unsure = True
                if not isinstance(failure, ServerError):
                    raise
                server_errors += 1
                if server_errors < _MAX_SERVER_ERRORS:
                    raise
                reason = failure.reason
            else:
                self._claimed.first_time(guid)
                return guid
            sent = await self._went_out(chat_id, text, since)
            if sent is not None:
                return sent
            raise BlueBubblesError(
                f"{self.name}: message not sent after {tries} attempts ({reason})"
            )

        return await self._retrying(attempt, what="send", give_up=self._gave_up)

    async def _went_out(self, chat_id: str, text: str, since: int) -> str | None:
        """The guid of the bot's message with ``text`` in the chat since ``since`` (ms) that
        no earlier send took, or None: ``POST /api/v1/message/query`` (newest first). The
        database knows no ``tempGuid`` (``messageRouter.ts`` puts it only in the answer to the
        send), so chat, sender, text (its letters and digits, as ``MessagePromise.isSame``
        compares it) and time are what match.

        Raises:
            Retry: BlueBubbles could not be asked (so nothing may be resent yet).
        """
        messages = await self._api.messages(
            {"chatGuid": chat_id, "after": max(since, 0), "sort": "DESC", "limit": 100}
        )
        for data in messages:
            guid = data.get("guid")
            if (
                data.get("isFromMe")
                and _letters(data.get("text")) == _letters(text)
                and isinstance(guid, str)
                and self._claimed.first_time(guid)
            ):
                return guid
        return None

    def _gave_up(self, failure: Retry, tries: int) -> BlueBubblesError:
        if self._stopping.is_set():
            return BlueBubblesError(
                f"{self.name}: message not sent, provider stopped ({failure.reason})"
            )
        return BlueBubblesError(
            f"{self.name}: message not sent after {tries} attempts ({failure.reason})"
        )

    # -- inbound -----------------------------------------------------------------------------

    async def _on_webhook(self, request: web.Request) -> web.Response:
        """Authenticate, parse, deduplicate and queue one webhook event; answer at once."""
        given = request.query.get("password", "")
        if not hmac.compare_digest(given.encode(), self._password.encode()):
            _LOG.warning(
                "%s: refused a webhook POST without the right password from %s",
                self.name,
                request.remote,
            )
            return _answer(401, "Unauthorized")
        try:
            event = await request.json()
        except ValueError:
            return _answer(400, "Body is not JSON")
        if not isinstance(event, dict):
            return _answer(400, "Body is not an event")
        data = event.get("data")
        if event.get("type") != "new-message" or not isinstance(data, dict):
            return _answer(200, "Ignored")
        if not isinstance(data.get("guid"), str) or not data["guid"]:
            return _answer(200, "Ignored")
        return _answer(200, "Accepted" if self._take(data) else "Duplicate")

    def _take(self, data: Mapping[str, Any]) -> bool:
        """Take one message (from a webhook or from catch-up) unless it was seen: note it in
        the cursor, learn its DM chat, and queue it (with the cursor's save, in order);
        return whether it was new."""
        guid = data.get("guid")
        if not isinstance(guid, str) or not guid or not self._first_time(guid):
            return False
        if self._mark is not None:
            self._mark.see(guid, _ms(data.get("dateCreated")))
        inbound = self._from_message(data, guid)
        if inbound is not None and inbound.chat_kind is ChatKind.DM:
            self._learn(inbound.sender_id, inbound.chat_id)

        async def handed() -> Inbound | None:
            await self._save_mark()
            return inbound

        self._enqueue(handed)
        return True

    def _from_message(self, data: Mapping[str, Any], guid: str) -> Inbound | None:
        """Turn a ``new-message`` payload into an Inbound, or None for what must be ignored."""
        if data.get("isFromMe"):
            return None
        if data.get("associatedMessageGuid") or data.get("associatedMessageType") not in (
            None,
            0,
            "",
        ):
            return None  # a tapback or another reaction to a message
        if data.get("itemType") not in (None, 0):
            return None  # group renames, members joining, and other chat events
        raw = data.get("text")
        raw = raw if isinstance(raw, str) else ""
        text = raw.replace(_OBJECT_REPLACEMENT, "")
        attachments = data.get("attachments")
        media = _OBJECT_REPLACEMENT in raw or (isinstance(attachments, list) and bool(attachments))
        if not text.strip():
            if not media:
                return None  # nothing at all
            text = ""  # a photo, a file, a sticker, a voice note: still someone writing
        handle = data.get("handle")
        address = handle.get("address") if isinstance(handle, dict) else None
        if not isinstance(address, str) or not address.strip():
            return None
        chats = data.get("chats")
        chat = chats[0] if isinstance(chats, list) and chats else None
        if not isinstance(chat, dict) or not isinstance(chat.get("guid"), str):
            return None  # no chat to answer in
        meta: dict[str, str] = {}
        service = handle.get("service") if isinstance(handle, dict) else None
        if isinstance(service, str) and service:
            meta["service"] = service
        return Inbound(
            provider=self.name,
            chat_id=chat["guid"],
            chat_kind=_chat_kind(chat),
            sender_id=address,
            text=text,
            message_id=guid,
            meta=meta,
            sent_at=_sent_at(data.get("dateCreated")),
            media=media,
        )


__all__ = ["SERVER_CONFIRM_WAIT", "BlueBubblesError", "IMessageProvider", "SendMethod"]
