"""iMessage, through a BlueBubbles server: its ``new-message`` webhook in, its REST API out.

:class:`IMessageProvider` serves the webhook BlueBubbles POSTs events to and turns each
``new-message`` from someone else into an :class:`~bot.core.models.Inbound`. The sender is the
handle's address (a ``+E.164`` phone number as BlueBubbles gives it, or an e-mail address,
lower-cased), never a contact name. Only ``<service>;-;<handle>`` chats are DMs; group chats
(``iMessage;+;chat…``) arrive as GROUP and the core drops them. The bot's own messages
(``isFromMe``), tapbacks, attachment-only messages and every other event type are ignored.

BlueBubbles does not sign its webhooks, so the endpoint requires the ``password`` query
parameter to equal the server password (register
``http://HOST:PORT/bluebubbles/webhook?password=…`` in BlueBubbles); anything else is
answered 401 and not looked at. BlueBubbles may deliver a message twice: inbound messages are
deduplicated on their ``guid``. Accepted messages are queued and handed to the core one at a
time, in order, so a slow reply never holds up BlueBubbles' POST.

Outbound text goes through ``POST /api/v1/message/text`` with a fresh ``tempGuid`` per
message. When the server is unreachable or answers 429/502/503/504, the same request (same
``tempGuid``) is retried with exponential backoff until it succeeds or ``send_retry_for``
seconds have passed; a 500 (iMessage itself failed) is retried a few times only. iMessage has
no buttons: :meth:`IMessageProvider.send` drops them and :meth:`IMessageProvider.edit` sends
the new text as a new message.

The password never appears in what this module logs or raises: URLs are logged without their
query, and client errors are reported by type only.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
from aiohttp import web

from bot.core.errors import ConfigError
from bot.core.models import Button, ChatKind, Inbound
from bot.core.protocols import OnInbound

_LOG = logging.getLogger(__name__)

SendMethod = Literal["auto", "apple-script", "private-api"]

_GROUP_STYLE = 43
_DM_STYLE = 45
_OBJECT_REPLACEMENT = "\ufffc"  # stands in for an attachment inside a message's text
_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_MAX_SERVER_ERRORS = 3  # a 500 from BlueBubbles means iMessage failed; try that often at most
_ALREADY_QUEUED = "already queued"  # BlueBubbles' 400 while a tempGuid is still being sent


class BlueBubblesError(Exception):
    """BlueBubbles refused a request or could not be reached (never quotes the password).

    Attributes:
        status: the HTTP status BlueBubbles answered, or None if it was not reached.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _Retry(Exception):
    """One attempt failed in a way worth retrying with the same ``tempGuid``."""

    def __init__(self, reason: str, *, server_error: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.server_error = server_error


def normalize_handle(address: str) -> str:
    """Return the canonical form of an iMessage handle: trimmed, e-mails lower-cased.

    Phone numbers are kept as BlueBubbles gives them (``+E.164``).
    """
    handle = address.strip()
    return handle.lower() if "@" in handle else handle


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


class IMessageProvider:
    """The iMessage provider: a webhook endpoint for BlueBubbles and a REST client to it.

    Args:
        server_url: the BlueBubbles server root, e.g. ``http://mac-mini.lan:1234``.
        password: the BlueBubbles server password; it authenticates both directions.
        webhook_host: the address the webhook endpoint listens on.
        webhook_port: its port (0 picks a free one: read :attr:`webhook_port` after start).
        webhook_path: its path; BlueBubbles must POST to it with ``?password=<password>``.
        name: the provider name carried by every :class:`~bot.core.models.Inbound`.
        send_method: ``apple-script``, ``private-api``, or ``auto`` (the Private API when
            ``/api/v1/server/info`` says it is enabled and its helper connected).
        request_timeout: seconds one REST request may take (an AppleScript send can be slow).
        send_retry_for: seconds a send keeps retrying while BlueBubbles is unreachable.
        retry_initial: the first backoff delay in seconds; it doubles up to ``retry_max``.
        retry_max: the longest backoff delay in seconds.
        dedupe_size: how many inbound message guids are remembered to drop redeliveries.
        stop_grace: seconds :meth:`stop` gives the messages already accepted to be handled.

    :meth:`start` can be called again after :meth:`stop`.
    """

    def __init__(
        self,
        *,
        server_url: str,
        password: str,
        webhook_host: str = "127.0.0.1",
        webhook_port: int = 8082,
        webhook_path: str = "/bluebubbles/webhook",
        name: str = "imessage",
        send_method: SendMethod = "auto",
        request_timeout: float = 60.0,
        send_retry_for: float = 300.0,
        retry_initial: float = 0.5,
        retry_max: float = 10.0,
        dedupe_size: int = 10_000,
        stop_grace: float = 5.0,
    ) -> None:
        source = f"providers.{name}"
        if not server_url or not server_url.strip():
            raise ConfigError(
                "the BlueBubbles server URL is empty", source=source, field="server_url"
            )
        if not server_url.strip().lower().startswith(("http://", "https://")):
            raise ConfigError(
                "must start with http:// or https://", source=source, field="server_url"
            )
        if "?" in server_url or "#" in server_url:
            raise ConfigError(
                "must not carry a query (the password is passed separately)",
                source=source,
                field="server_url",
            )
        if not password:
            raise ConfigError("the BlueBubbles password is empty", source=source, field="password")
        if not webhook_path.startswith("/"):
            raise ConfigError("must start with /", source=source, field="webhook.path")
        if send_method not in ("auto", "apple-script", "private-api"):
            raise ConfigError(
                "must be auto, apple-script or private-api", source=source, field="send_method"
            )
        for field, value in (
            ("request_timeout", request_timeout),
            ("send_retry_for", send_retry_for),
            ("retry_initial", retry_initial),
            ("retry_max", retry_max),
        ):
            if not value > 0:
                raise ConfigError("must be positive", source=source, field=field)
        self.name = name
        self.bare_commands = False
        self._root = server_url.strip().rstrip("/")
        self._password = password
        self._host = webhook_host
        self._port = webhook_port
        self._path = webhook_path
        self._send_method: SendMethod = send_method
        self._method = "private-api" if send_method == "private-api" else "apple-script"
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._retry_for = send_retry_for
        self._retry_initial = retry_initial
        self._retry_max = max(retry_max, retry_initial)
        self._dedupe_size = max(1, dedupe_size)
        self._stop_grace = stop_grace
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._worker: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[Inbound] = asyncio.Queue()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._on_inbound: OnInbound | None = None
        self._closing = asyncio.Event()
        self._busy = False
        self._starting = False
        self._stopping = False

    def __repr__(self) -> str:
        return f"IMessageProvider(name={self.name!r}, server_url={self._root!r})"

    @property
    def running(self) -> bool:
        """Whether :meth:`start` has returned and :meth:`stop` has not been called."""
        return self._runner is not None and not (self._starting or self._stopping)

    @property
    def webhook_port(self) -> int:
        """The webhook endpoint's port: the bound one once started (useful with port 0)."""
        return self._port

    @property
    def webhook_path(self) -> str:
        """The webhook endpoint's path."""
        return self._path

    @property
    def webhook_url(self) -> str:
        """Where BlueBubbles must POST, without the ``?password=`` it must add."""
        return f"http://{self._host}:{self._port}{self._path}"

    @property
    def send_method(self) -> str:
        """The ``method`` sends use (``apple-script`` or ``private-api``)."""
        return self._method

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, on_inbound: OnInbound) -> None:
        """Check the password, serve the webhook endpoint, and return once it listens.

        An unreachable BlueBubbles server is only logged: webhooks arrive once it is back,
        and sends retry until then.

        Raises:
            ConfigError: BlueBubbles rejected the password, or the webhook port is taken.
            RuntimeError: the provider is already running.
        """
        if self._runner is not None or self._starting:
            raise RuntimeError(f"{self.name}: provider is already running")
        self._starting = True
        self._closing = asyncio.Event()
        self._queue = asyncio.Queue()
        self._on_inbound = on_inbound
        session = aiohttp.ClientSession(timeout=self._timeout)
        self._session = session
        runner: web.AppRunner | None = None
        try:
            await self._check_server(session)
            app = web.Application(client_max_size=1024 * 1024)
            app.router.add_post(self._path, self._on_webhook)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
            await runner.setup()
            site = web.TCPSite(runner, self._host, self._port)
            try:
                await site.start()
            except OSError as exc:
                raise ConfigError(
                    f"cannot listen on {self._host}:{self._port} ({exc.strerror})",
                    source=f"providers.{self.name}",
                    field="webhook.port",
                ) from None
            self._port = int(runner.addresses[0][1])
            self._runner = runner
            self._worker = asyncio.create_task(self._work(), name=f"{self.name}-inbound")
        except BaseException:
            if runner is not None:
                await runner.cleanup()
            self._runner = None
            self._session = None
            self._on_inbound = None
            await session.close()
            raise
        finally:
            self._starting = False
        _LOG.info(
            "%s: webhook listening on %s (send method %s)",
            self.name,
            self.webhook_url,
            self._method,
        )

    async def stop(self) -> None:
        """Stop serving, finish the messages already accepted, close connections. Idempotent.

        BlueBubbles does not deliver a webhook twice on purpose, so the messages already
        accepted get ``stop_grace`` seconds to be handled; any left after it are dropped (and
        counted in the log).
        """
        runner = self._runner
        if runner is None or self._starting or self._stopping:
            return
        self._stopping = True
        try:
            await _close_server(runner)  # no new webhooks
            worker = self._worker
            if worker is not None:
                if self._busy or not self._queue.empty():
                    await asyncio.wait({worker}, timeout=self._stop_grace)
                self._closing.set()  # a send still retrying gives up now
                worker.cancel()
                await asyncio.gather(worker, return_exceptions=True)
            if not self._queue.empty():
                _LOG.warning(
                    "%s: stopped with %d accepted message(s) not handled",
                    self.name,
                    self._queue.qsize(),
                )
        finally:
            self._closing.set()
            session, self._session = self._session, None
            if session is not None:
                await session.close()
            self._runner = None
            self._worker = None
            self._on_inbound = None
            self._stopping = False
        _LOG.info("%s: stopped", self.name)

    # -- outbound ----------------------------------------------------------------------------

    async def send(self, chat_id: str, text: str, *, buttons: Sequence[Button] = ()) -> str:
        """Send plain ``text`` to a chat guid; return the message guid. Buttons are dropped.

        Retries (same ``tempGuid``) while BlueBubbles is unreachable, up to ``send_retry_for``.

        Raises:
            RuntimeError: the provider is not running.
            BlueBubblesError: BlueBubbles refused the message, or stayed unreachable.
        """
        del buttons  # iMessage has no buttons; owner notices carry the commands as text
        session = self._client()
        body = {
            "chatGuid": chat_id,
            "message": text,
            "tempGuid": f"pairbot-{uuid.uuid4()}",
            "method": self._method,
        }
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._retry_for
        delay = self._retry_initial
        attempt = 0
        server_errors = 0
        while True:
            attempt += 1
            try:
                return await self._post_text(session, body)
            except _Retry as retry:
                server_errors += retry.server_error
                left = deadline - loop.time()
                if server_errors >= _MAX_SERVER_ERRORS or left <= 0 or self._closing.is_set():
                    raise BlueBubblesError(
                        f"{self.name}: message not sent after {attempt} attempts ({retry.reason})"
                    ) from None
                wait = min(delay, left)
                _LOG.warning(
                    "%s: send attempt %d failed (%s), retrying in %.1f s",
                    self.name,
                    attempt,
                    retry.reason,
                    wait,
                )
                if await self._closed_within(wait):
                    raise BlueBubblesError(
                        f"{self.name}: message not sent, provider stopped ({retry.reason})"
                    ) from None
                delay = min(delay * 2, self._retry_max)

    async def edit(self, chat_id: str, message_id: str, text: str) -> None:
        """iMessage cannot edit the bot's messages for it: send ``text`` as a new message."""
        del message_id
        await self.send(chat_id, text)

    async def dm_chat_id(self, user_id: str) -> str:
        """The one-to-one iMessage chat with a handle: ``iMessage;-;<handle>``."""
        return f"iMessage;-;{normalize_handle(user_id)}"

    async def _post_text(self, session: aiohttp.ClientSession, body: Mapping[str, Any]) -> str:
        """One attempt at ``/api/v1/message/text``: the guid, a :class:`_Retry`, or an error."""
        try:
            async with session.post(
                self._url("/api/v1/message/text"), params={"password": self._password}, json=body
            ) as resp:
                status = resp.status
                payload = await _json_or_none(resp)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Retry(type(exc).__name__) from None
        if status == 200 and isinstance(payload, dict):
            data = payload.get("data")
            guid = data.get("guid") if isinstance(data, dict) else None
            if isinstance(guid, str) and guid:
                return guid
            raise BlueBubblesError(
                f"{self.name}: BlueBubbles answered without a message guid", status=status
            )
        if status in _RETRY_STATUSES:
            raise _Retry(f"HTTP {status}")
        if status >= 500:
            raise _Retry(f"HTTP {status}: {_error_text(payload)}", server_error=True)
        if status == 400 and _ALREADY_QUEUED in _error_text(payload).lower():
            raise _Retry("this message is still being sent")  # wait for the first attempt
        if status in (401, 403):
            raise BlueBubblesError(
                f"{self.name}: BlueBubbles rejected the password", status=status
            )
        raise BlueBubblesError(
            f"{self.name}: BlueBubbles refused the message (HTTP {status}: "
            f"{_error_text(payload)})",
            status=status,
        )

    async def _check_server(self, session: aiohttp.ClientSession) -> None:
        """Check the password and, for ``auto``, whether the Private API is usable."""
        try:
            async with session.get(
                self._url("/api/v1/server/info"),
                params={"password": self._password},
                timeout=aiohttp.ClientTimeout(total=10),
            ) as resp:
                status = resp.status
                payload = await _json_or_none(resp)
        except (aiohttp.ClientError, TimeoutError) as exc:
            _LOG.warning(
                "%s: BlueBubbles at %s is not reachable (%s); sends will retry",
                self.name,
                self._root,
                type(exc).__name__,
            )
            return
        if status in (401, 403):
            raise ConfigError(
                "BlueBubbles rejected the password",
                source=f"providers.{self.name}",
                field="password",
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
            return web.json_response({"status": 401, "message": "Unauthorized"}, status=401)
        try:
            event = await request.json()
        except ValueError:
            return web.json_response({"status": 400, "message": "Body is not JSON"}, status=400)
        if not isinstance(event, dict):
            return web.json_response(
                {"status": 400, "message": "Body is not an event"}, status=400
            )
        if event.get("type") != "new-message":
            return web.json_response({"status": 200, "message": "Ignored"})
        data = event.get("data")
        guid = data.get("guid") if isinstance(data, dict) else None
        if not isinstance(data, dict) or not isinstance(guid, str) or not guid:
            return web.json_response({"status": 200, "message": "Ignored"})
        if guid in self._seen:
            _LOG.debug("%s: dropped a redelivery of message %s", self.name, guid)
            return web.json_response({"status": 200, "message": "Duplicate"})
        self._remember(guid)
        inbound = self._from_message(data, guid)
        if inbound is not None:
            self._queue.put_nowait(inbound)
        return web.json_response({"status": 200, "message": "Accepted"})

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
        text = data.get("text")
        if not isinstance(text, str):
            return None
        text = text.replace(_OBJECT_REPLACEMENT, "")
        if not text.strip():
            return None  # attachments only
        handle = data.get("handle")
        address = handle.get("address") if isinstance(handle, dict) else None
        if not isinstance(address, str) or not normalize_handle(address):
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
            sender_id=normalize_handle(address),
            text=text,
            message_id=guid,
            meta=meta,
            sent_at=_sent_at(data.get("dateCreated")),
        )

    async def _work(self) -> None:
        """Hand queued messages to the core one at a time; an error never stops the loop."""
        while not (self._stopping and self._queue.empty()):
            inbound = await self._queue.get()
            callback = self._on_inbound
            if callback is None:
                continue
            self._busy = True
            try:
                await callback(inbound)
            except Exception:
                _LOG.exception("%s: handling message %s failed", self.name, inbound.message_id)
            finally:
                self._busy = False

    def _remember(self, guid: str) -> None:
        self._seen[guid] = None
        while len(self._seen) > self._dedupe_size:
            self._seen.popitem(last=False)

    # -- plumbing ----------------------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._closing.is_set():
            raise RuntimeError(f"{self.name}: provider is not running")
        return self._session

    def _url(self, path: str) -> str:
        return f"{self._root}{path}"

    async def _closed_within(self, seconds: float) -> bool:
        """Sleep ``seconds``; return True early if the provider is stopping."""
        try:
            await asyncio.wait_for(self._closing.wait(), seconds)
        except TimeoutError:
            return False
        return True


async def _close_server(runner: web.AppRunner) -> None:
    """Let connections accepted a moment ago register, then stop listening and close them.

    asyncio makes the transport of an accepted connection one loop turn after accepting it;
    if the listener closes in between, Python 3.11 drops that socket without closing it.
    """
    for _ in range(3):
        await asyncio.sleep(0)
    await runner.cleanup()


async def _json_or_none(resp: aiohttp.ClientResponse) -> Any:
    try:
        return await resp.json(content_type=None)
    except (ValueError, aiohttp.ClientError):
        return None


def _error_text(payload: object) -> str:
    """BlueBubbles errors read ``{"message": ..., "error": {"type", "message"}}``."""
    if not isinstance(payload, dict):
        return "no details"
    error = payload.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])[:200]
    message = payload.get("message")
    return str(message)[:200] if isinstance(message, str) else "no details"
