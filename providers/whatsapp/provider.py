"""WhatsApp Business Cloud API: a signed webhook in, Graph API ``/messages`` out.

:class:`WhatsAppProvider` serves the webhook Meta calls (the ``hub.challenge`` verification
GET, and a POST per batch of events whose ``X-Hub-Signature-256`` it checks against the app
secret before reading anything) and sends through
``POST {api_base_url}/{api_version}/{phone_number_id}/messages`` with aiohttp. No SDK.

Inbound: only ``text`` messages and ``interactive`` reply-button presses become
:class:`~bot.core.models.Inbound` values; the sender is the ``wa_id``, the chat of a DM is the
``wa_id`` too, a message carrying a ``group_id`` is a group. Status updates, the business
number's own messages, system messages (a changed number) and every other message type
never do. Meta re-delivers a webhook until it gets a 200, so each message id (``wamid``) is
handled once: it is remembered when the POST is accepted (the last ``SEEN_LIMIT`` ids).
Accepted events are answered 200 at once and handed to the callback in order by one worker.

Outbound: plain text (``preview_url`` off) and reply buttons (``interactive`` of type
``button``). WhatsApp cannot edit a message, so :meth:`WhatsAppProvider.edit` sends the new
text as a reply to the old message. A send that fails in a way that may be temporary (no
connection, 429, 5xx, Graph throttling codes) is retried with exponential backoff. Every send
carries a fresh ``biz_opaque_callback_data`` key, which Meta echoes in the status webhooks of
the message: when an attempt's answer is lost (the connection dropped after the request went
out), a status webhook carrying the key proves the message went out and stops the retry, so
a flaky network duplicates nothing.

Neither the access token, the app secret, the verify token nor any message text appears in
what this module logs or raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from bot.core.errors import ConfigError
from bot.core.models import Button, ChatKind, Inbound
from bot.core.protocols import OnInbound

_LOG = logging.getLogger(__name__)

DEFAULT_API_BASE_URL = "https://graph.facebook.com"
MAX_TEXT = 4096
"""Characters in one text message body."""
MAX_BUTTON_BODY = 1024
"""Characters in the body of an interactive message."""
MAX_BUTTONS = 3
"""Reply buttons on one message."""
MAX_BUTTON_ID = 256
"""Characters in a reply button's id (the command it sends back)."""
MAX_BUTTON_TITLE = 20
"""Characters in a reply button's title (the label the user sees)."""
SEEN_LIMIT = 10_000
"""How many handled message ids are remembered to drop re-deliveries."""

_MAX_RETRY_DELAY = 8.0
# Graph error codes that mean "not done, try again later": API unknown/service, app or
# account rate limits, Cloud API throttling, "something went wrong", service unavailable,
# spam and pair rate limits.
_RETRY_CODES = frozenset({1, 2, 4, 80007, 130429, 131000, 131016, 131048, 131056})
_HINTS = {
    190: "the access token is invalid or expired",
    100: "a parameter is invalid (check phone_number_id)",
    131047: "more than 24 hours since the recipient last wrote: free text is refused "
    "until they write again",
    131026: "the recipient cannot receive this message (not on WhatsApp, or an old client)",
    131030: "the recipient is not on the test number's allowed list",
}
_NUMBER_CHANGED = frozenset({"user_changed_number", "customer_changed_number"})


class WhatsAppApiError(Exception):
    """The Graph API refused a request, or kept failing until the retries ran out.

    Attributes:
        status: the HTTP status (0 when no answer came).
        code: the Graph error code (0 when there was none).
    """

    def __init__(self, what: str, *, status: int = 0, code: int = 0) -> None:
        hint = _HINTS.get(code)
        detail = f"HTTP {status}" if status else "no answer"
        if code:
            detail += f", Graph error code {code}"
        super().__init__(f"{what} ({detail})" + (f": {hint}" if hint else ""))
        self.status = status
        self.code = code


class _Retryable(Exception):
    """One attempt failed in a way worth retrying."""

    def __init__(self, reason: str, *, status: int = 0, code: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.code = code


def _dicts(value: object) -> list[dict[str, Any]]:
    """The dict items of a JSON list (anything else in an untrusted payload is skipped)."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _digits(value: object) -> str:
    return "".join(ch for ch in str(value or "") if ch.isdigit())


def _sent_at(value: object) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(str(value)), tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _chunks(text: str, limit: int) -> Iterator[str]:
    """Cut ``text`` into pieces of at most ``limit`` characters, at a line break if one is
    in the second half of the piece."""
    while len(text) > limit:
        cut = text.rfind("\n", limit // 2, limit)
        cut = cut + 1 if cut > 0 else limit
        yield text[:cut]
        text = text[cut:]
    yield text


class WhatsAppProvider:
    """The WhatsApp Business Cloud API provider: one business phone number.

    Args:
        access_token: a system-user access token with ``whatsapp_business_messaging``.
        app_secret: the Meta app's secret; webhook POSTs are signed with it.
        verify_token: the string entered as "Verify token" when subscribing the webhook.
        phone_number_id: the business phone number's id (not the number itself); webhooks
            for other numbers of the same account are ignored.
        api_base_url: the Graph API root, ``https://graph.facebook.com`` unless a fake.
        api_version: the Graph API version in every URL, e.g. ``v21.0``.
        webhook_host: the address the webhook server binds.
        webhook_port: its port (0 picks a free one: read :attr:`webhook_port` after start).
        webhook_path: the path Meta POSTs to; everything else answers 404.
        name: the provider name carried by every :class:`~bot.core.models.Inbound`.
        send_attempts: tries per message before :class:`WhatsAppApiError` is raised.
        retry_base_delay: seconds before the first retry; doubled each time (up to 8 s).
        request_timeout: seconds one Graph API call may take.
        stop_timeout: seconds :meth:`stop` waits for accepted events to be handled.

    :meth:`start` can be called again after :meth:`stop`; the ids of handled messages are
    kept across, so a re-delivery after a restart of the provider is still dropped.
    """

    def __init__(
        self,
        *,
        access_token: str,
        app_secret: str,
        verify_token: str,
        phone_number_id: str,
        api_base_url: str | None = None,
        api_version: str = "v21.0",
        webhook_host: str = "127.0.0.1",
        webhook_port: int = 8081,
        webhook_path: str = "/whatsapp/webhook",
        name: str = "whatsapp",
        send_attempts: int = 6,
        retry_base_delay: float = 0.5,
        request_timeout: float = 20.0,
        stop_timeout: float = 5.0,
    ) -> None:
        source = f"providers.{name}"
        for field, value in (
            ("access_token", access_token),
            ("app_secret", app_secret),
            ("verify_token", verify_token),
            ("phone_number_id", phone_number_id),
        ):
            if not value or not value.strip():
                raise ConfigError("must not be empty", source=source, field=field)
        if not webhook_path.startswith("/"):
            raise ConfigError("must start with /", source=source, field="webhook.path")
        if send_attempts < 1 or not retry_base_delay > 0 or not request_timeout > 0:
            raise ConfigError("retry settings must be positive", source=source)
        self.name = name
        self.bare_commands = False
        self.webhook_host = webhook_host
        self.webhook_port = webhook_port
        """The webhook's port; after :meth:`start`, the one actually bound."""
        self.webhook_path = webhook_path
        self._access_token = access_token
        self._app_secret = app_secret.encode()
        self._verify_token = verify_token.encode()
        self._phone_number_id = phone_number_id.strip()
        root = (api_base_url or DEFAULT_API_BASE_URL).rstrip("/")
        self._phone_url = f"{root}/{api_version.strip('/')}/{self._phone_number_id}"
        self._send_attempts = send_attempts
        self._retry_base_delay = retry_base_delay
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._stop_timeout = stop_timeout
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._worker: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[Inbound] = asyncio.Queue()
        self._on_inbound: OnInbound | None = None
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._awaiting: dict[str, asyncio.Future[str]] = {}
        self._accepting = False
        self._stopping = False

    def __repr__(self) -> str:
        return (
            f"WhatsAppProvider(name={self.name!r}, phone_number_id="
            f"{self._phone_number_id!r}, webhook={self.webhook_url!r})"
        )

    @property
    def webhook_url(self) -> str:
        """Where the webhook listens, e.g. ``http://127.0.0.1:8081/whatsapp/webhook``."""
        return f"http://{self.webhook_host}:{self.webhook_port}{self.webhook_path}"

    @property
    def running(self) -> bool:
        """Whether the webhook is accepting events."""
        return self._accepting

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, on_inbound: OnInbound) -> None:
        """Check the access token, open the webhook and return once it accepts events.

        A Graph API that cannot be reached is logged, not fatal: the webhook still runs and
        sends retry. After a stop, a restart binds the port bound the first time.

        Raises:
            ConfigError: Graph refused the token or does not know the phone number id.
            RuntimeError: the provider is already running.
            OSError: the webhook address cannot be bound.
        """
        if self._runner is not None or self._stopping:
            raise RuntimeError(f"{self.name}: provider is already running")
        self._on_inbound = on_inbound
        self._queue = asyncio.Queue()  # bound to this start's event loop
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_get(self.webhook_path, self._verify)
        app.router.add_post(self.webhook_path, self._receive)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        self._runner = runner
        try:
            await self._check_account()
            await runner.setup()
            site = web.TCPSite(runner, self.webhook_host, self.webhook_port)
            await site.start()
            self.webhook_port = int(runner.addresses[0][1])
        except BaseException:
            await self._close()
            raise
        self._worker = asyncio.create_task(self._work(), name=f"{self.name}-inbound")
        self._accepting = True
        _LOG.info(
            "%s: webhook listening on %s:%d%s",
            self.name,
            self.webhook_host,
            self.webhook_port,
            self.webhook_path,
        )

    async def stop(self) -> None:
        """Stop the webhook, let accepted events be handled, close the HTTP session.

        Safe to call twice. Events still queued after ``stop_timeout`` seconds are dropped
        (and logged); Meta got a 200 for them, so they will not come again.
        """
        if self._runner is None or self._stopping:
            return
        self._stopping = True
        self._accepting = False
        try:
            await self._runner.cleanup()  # no new POSTs; the ones in hand are answered
            if self._worker is not None:  # join() also covers the event in hand
                try:
                    await asyncio.wait_for(self._queue.join(), self._stop_timeout)
                except TimeoutError:
                    _LOG.warning(
                        "%s: stopped with %d accepted events unhandled",
                        self.name,
                        self._queue.qsize(),
                    )
        finally:
            await self._close()
            self._stopping = False
        _LOG.info("%s: stopped", self.name)

    async def _close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        self._on_inbound = None

    async def _check_account(self) -> None:
        """GET the phone number: a wrong token or id fails start; no answer only warns."""
        session = self._require_session()
        try:
            async with session.get(self._phone_url, headers=self._auth()) as resp:
                status = resp.status
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            _LOG.warning(
                "%s: Graph API not reachable at start (%s); sends will retry",
                self.name,
                type(exc).__name__,
            )
            return
        if status == 200:
            return
        code = _int(_dict(_dict(data).get("error")).get("code"))
        if status in (400, 401, 403, 404) or code in (100, 190):
            field = "access_token" if status == 401 or code == 190 else "phone_number_id"
            raise ConfigError(
                f"the Graph API refused the {field.replace('_', ' ')}",
                source=f"providers.{self.name}",
                field=field,
                hint=str(WhatsAppApiError("refused", status=status, code=code)),
            )
        _LOG.warning(
            "%s: Graph API answered HTTP %d at start; sends will retry", self.name, status
        )

    # -- outbound ----------------------------------------------------------------------------

    async def send(self, chat_id: str, text: str, *, buttons: Sequence[Button] = ()) -> str:
        """Send plain ``text`` to a wa_id, with up to three reply buttons; return its wamid.

        Text over 4096 characters goes as several messages (the last one's id is returned).
        With buttons, text over 1024 characters goes first as text, then the buttons under
        its first line. Button labels are cut to 20 characters.

        Raises:
            ValueError: more than three buttons, a command empty or over 256 characters, or
                two buttons alike.
            RuntimeError: the provider is not running.
            WhatsAppApiError: Graph refused the message, or kept failing.
        """
        rendered = self._render_buttons(buttons) if buttons else None
        self._require_session()
        if rendered is None:
            message_id = ""
            for chunk in _chunks(text, MAX_TEXT):
                message_id = await self._post_message(self._text(chat_id, chunk))
            return message_id
        body = text
        if len(text) > MAX_BUTTON_BODY:
            await self.send(chat_id, text)
            first = next((line for line in text.splitlines() if line.strip()), "…")
            body = _clip(first, MAX_BUTTON_BODY)
        interactive = {"type": "button", "body": {"text": body}, "action": {"buttons": rendered}}
        return await self._post_message(self._envelope(chat_id, "interactive", interactive))

    async def edit(self, chat_id: str, message_id: str, text: str) -> None:
        """WhatsApp cannot edit: send ``text`` as a reply to ``message_id`` instead.

        The old message keeps its buttons; pressing one again is answered by the core
        ("already handled").
        """
        self._require_session()
        for chunk in _chunks(text, MAX_TEXT):
            payload = self._text(chat_id, chunk)
            payload["context"] = {"message_id": message_id}
            await self._post_message(payload)

    async def dm_chat_id(self, user_id: str) -> str:
        """A WhatsApp user's one-to-one chat is addressed by their wa_id."""
        return user_id

    @staticmethod
    def _render_buttons(buttons: Sequence[Button]) -> list[dict[str, Any]]:
        if len(buttons) > MAX_BUTTONS:
            raise ValueError(f"WhatsApp allows {MAX_BUTTONS} reply buttons, got {len(buttons)}")
        ids: list[str] = []
        titles: list[str] = []
        for button in buttons:
            if not 1 <= len(button.command) <= MAX_BUTTON_ID:
                raise ValueError(
                    f"button {button.label!r}: the command must be 1 to {MAX_BUTTON_ID} characters"
                )
            ids.append(button.command)
            titles.append(_clip(button.label.strip(), MAX_BUTTON_TITLE) or "…")
        if len(set(ids)) != len(ids) or len(set(titles)) != len(titles):
            raise ValueError("WhatsApp reply buttons need distinct commands and labels")
        return [
            {"type": "reply", "reply": {"id": i, "title": t}}
            for i, t in zip(ids, titles, strict=True)
        ]

    def _envelope(self, to: str, kind: str, content: dict[str, Any]) -> dict[str, Any]:
        return {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": kind,
            kind: content,
        }

    def _text(self, to: str, text: str) -> dict[str, Any]:
        return self._envelope(to, "text", {"body": text, "preview_url": False})

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._access_token}"}

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError(f"{self.name}: provider is not running")
        return self._session

    async def _post_message(self, payload: dict[str, Any]) -> str:
        """POST one message, retrying temporary failures; return its wamid.

        Between attempts, a status webhook carrying this send's key proves that an attempt
        whose answer was lost did go out: that ends the retries without a duplicate.
        """
        key = "pairbot:" + secrets.token_urlsafe(12)
        payload = {**payload, "biz_opaque_callback_data": key}
        delivered: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._awaiting[key] = delivered
        try:
            delay = self._retry_base_delay
            for attempt in range(1, self._send_attempts + 1):
                try:
                    return await self._post_once(payload)
                except _Retryable as failure:
                    if attempt == self._send_attempts:
                        raise WhatsAppApiError(
                            f"{self.name}: sending failed {attempt} times ({failure.reason})",
                            status=failure.status,
                            code=failure.code,
                        ) from None
                    _LOG.warning(
                        "%s: send to %s failed (%s), retry %d of %d in %.1f s",
                        self.name,
                        payload.get("to"),
                        failure.reason,
                        attempt,
                        self._send_attempts - 1,
                        delay,
                    )
                # Sleep through the backoff, waking early if a status shows it went out.
                await asyncio.wait({delivered}, timeout=delay)
                if delivered.done():
                    _LOG.info(
                        "%s: a status webhook shows the message went out; not resent", self.name
                    )
                    return delivered.result()
                delay = min(delay * 2, _MAX_RETRY_DELAY)
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            self._awaiting.pop(key, None)
            if not delivered.done():
                delivered.cancel()

    async def _post_once(self, payload: dict[str, Any]) -> str:
        session = self._require_session()
        try:
            async with session.post(
                f"{self._phone_url}/messages", json=payload, headers=self._auth()
            ) as resp:
                status = resp.status
                raw = await resp.read()
        except aiohttp.ClientConnectorError:
            raise _Retryable("cannot connect") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The request may have gone out: the status webhook tells (see _post_message).
            raise _Retryable(f"no answer: {type(exc).__name__}") from None
        try:
            data = _dict(json.loads(raw))
        except ValueError:
            data = {}
        if status == 200:
            sent = _dicts(data.get("messages"))
            message_id = _str(sent[0].get("id")) if sent else ""
            if message_id:
                return message_id
            raise WhatsAppApiError(
                f"{self.name}: the Graph API answer has no message id", status=status
            )
        code = _int(_dict(data.get("error")).get("code"))
        if status == 429 or status >= 500 or code in _RETRY_CODES:
            raise _Retryable(f"HTTP {status}, code {code}", status=status, code=code)
        raise WhatsAppApiError(
            f"{self.name}: the Graph API refused the message", status=status, code=code
        )

    # -- inbound -----------------------------------------------------------------------------

    async def _verify(self, request: web.Request) -> web.Response:
        """Meta's subscription check: echo ``hub.challenge`` if the verify token matches."""
        query = request.query
        token = query.get("hub.verify_token", "").encode()
        if query.get("hub.mode") == "subscribe" and hmac.compare_digest(token, self._verify_token):
            _LOG.info("%s: webhook verification answered", self.name)
            return web.Response(text=query.get("hub.challenge", ""))
        _LOG.warning(
            "%s: webhook verification with a wrong token from %s refused",
            self.name,
            request.remote,
        )
        return web.Response(status=403, text="Forbidden")

    async def _receive(self, request: web.Request) -> web.Response:
        """Check the signature over the raw body, accept the batch, answer at once."""
        raw = await request.read()
        given = request.headers.get("X-Hub-Signature-256", "")
        expected = "sha256=" + hmac.new(self._app_secret, raw, hashlib.sha256).hexdigest()
        if not given.isascii() or not hmac.compare_digest(given.encode(), expected.encode()):
            _LOG.warning(
                "%s: webhook POST from %s with a %s signature refused",
                self.name,
                request.remote,
                "bad" if given else "missing",
            )
            return web.Response(status=401, text="Unauthorized")
        if not self._accepting:
            return web.Response(status=503, text="Stopping")
        try:
            body = json.loads(raw)
        except ValueError:
            _LOG.warning("%s: signed webhook POST is not JSON; ignored", self.name)
            return web.Response(status=400, text="Bad Request")
        for inbound in self._accept(body):
            self._queue.put_nowait(inbound)
        return web.Response(text="OK")

    def _accept(self, body: object) -> list[Inbound]:
        """Read one webhook body: resolve statuses, drop seen ids, return new inbounds."""
        found: list[Inbound] = []
        payload = _dict(body)
        if payload.get("object") != "whatsapp_business_account":
            return found
        for entry in _dicts(payload.get("entry")):
            for change in _dicts(entry.get("changes")):
                if change.get("field") != "messages":
                    continue  # echoes, account and template updates, ...
                value = _dict(change.get("value"))
                metadata = _dict(value.get("metadata"))
                if str(metadata.get("phone_number_id", "")) != self._phone_number_id:
                    _LOG.debug("%s: webhook for another phone number ignored", self.name)
                    continue
                self._statuses(_dicts(value.get("statuses")))
                business = _digits(metadata.get("display_phone_number"))
                contacts = _dicts(value.get("contacts"))
                for message in _dicts(value.get("messages")):
                    message_id = _str(message.get("id"))
                    if message_id:
                        if message_id in self._seen:
                            _LOG.info("%s: re-delivered message %s dropped", self.name, message_id)
                            continue
                        self._remember(message_id)
                    inbound = self._inbound(message, contacts, business)
                    if inbound is not None:
                        found.append(inbound)
        return found

    def _remember(self, message_id: str) -> None:
        self._seen[message_id] = None
        while len(self._seen) > SEEN_LIMIT:
            self._seen.popitem(last=False)

    def _statuses(self, statuses: list[dict[str, Any]]) -> None:
        """A status of a message this provider is still retrying proves it went out."""
        for status in statuses:
            key = _str(status.get("biz_opaque_callback_data"))
            waiter = self._awaiting.get(key)
            message_id = _str(status.get("id"))
            if (
                waiter is not None
                and not waiter.done()
                and message_id
                and status.get("status") != "failed"
            ):
                waiter.set_result(message_id)

    def _inbound(
        self, message: dict[str, Any], contacts: list[dict[str, Any]], business: str
    ) -> Inbound | None:
        sender = _str(message.get("from"))
        kind = message.get("type")
        if not sender or (business and _digits(sender) == business):
            return None  # the business number's own messages
        if kind == "system":
            system = _dict(message.get("system"))
            if system.get("type") in _NUMBER_CHANGED:
                _LOG.info(
                    "%s: sender %s changed number to %s; the new id is a stranger until approved",
                    self.name,
                    sender,
                    _str(system.get("wa_id")) or _str(system.get("new_wa_id")) or "?",
                )
            return None
        is_button = False
        message_id = _str(message.get("id")) or None
        if kind == "text":
            text = _str(_dict(message.get("text")).get("body"))
        elif kind == "interactive":
            interactive = _dict(message.get("interactive"))
            if interactive.get("type") != "button_reply":
                return None
            text = _str(_dict(interactive.get("button_reply")).get("id"))
            message_id = _str(_dict(message.get("context")).get("id")) or None
            if message_id is None:
                return None
            is_button = True
        else:
            return None  # media, reactions, locations, template quick replies, ...
        if not text:
            return None
        group = _str(message.get("group_id"))
        name = next(
            (
                _str(_dict(c.get("profile")).get("name"))
                for c in contacts
                if _str(c.get("wa_id")) == sender
            ),
            "",
        )
        if not name and len(contacts) == 1 and not contacts[0].get("wa_id"):
            name = _str(_dict(contacts[0].get("profile")).get("name"))
        return Inbound(
            provider=self.name,
            chat_id=group or sender,
            chat_kind=ChatKind.GROUP if group else ChatKind.DM,
            sender_id=sender,
            sender_name=name,
            text=text,
            message_id=message_id,
            is_button=is_button,
            meta={"name": name} if name else {},
            sent_at=_sent_at(message.get("timestamp")),
        )

    async def _work(self) -> None:
        """Hand accepted events to the callback one at a time, in order of arrival."""
        while True:
            inbound = await self._queue.get()
            try:
                if self._on_inbound is not None:
                    await self._on_inbound(inbound)
            except Exception:
                _LOG.exception(
                    "%s: handling a message from %s failed", self.name, inbound.sender_id
                )
            finally:
                self._queue.task_done()
