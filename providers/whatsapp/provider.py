"""WhatsApp Business Cloud API: a signed webhook in, Graph API ``/messages`` out.

:class:`WhatsAppProvider` serves the webhook Meta calls (the ``hub.challenge`` verification
GET, and a POST per batch of events whose ``X-Hub-Signature-256`` it checks against the app
secret before reading anything) and sends through the Graph API
(:mod:`providers.whatsapp.graph`). No SDK. What a webhook body holds is read by
:mod:`providers.whatsapp.events`.

Meta re-delivers a webhook until it gets a 200, so each message id (``wamid``) is handled
once: it is the key of the base's dedupe, remembered when the POST is accepted. Accepted
events are answered 200 at once and handed to the callback in order by the base's worker; a
POST while the provider is not running is answered 503, so Meta delivers it again later.

Outbound: plain text (``preview_url`` off) and reply buttons (``interactive`` of type
``button``). WhatsApp cannot edit a message, so :meth:`WhatsAppProvider.edit` sends the new
text as a reply to the old message. A send that fails in a way that may be temporary (no
connection, 429, 5xx, Graph throttling codes) is retried with exponential backoff. Every send
carries a fresh ``biz_opaque_callback_data`` key, which Meta echoes in the status webhooks of
the message: when an attempt's answer is lost (the connection dropped after the request went
out), a status webhook carrying the key proves the message went out and stops the retry, so
a flaky network duplicates nothing.

The 24-hour window: WhatsApp delivers free-form messages only to someone who wrote in the last
24 hours, and refuses others with 131047, in the send's answer or (usually) in a ``failed``
status webhook after taking it. A send to someone this process has not seen write lately
(:mod:`providers.whatsapp.window`; in practice the owner's notices) waits for its first status
before it returns; either refusal raises :class:`~providers.whatsapp.graph.WindowClosed`, a
:class:`~bot.core.errors.RecipientUnreachable`, which the owner notices keep until the owner
writes. 131048 (spam rate limit) is not retried.

Several instances behind one load balancer (a PostgreSQL state): Meta posts a message's status
to whichever instance the balancer picks, and a sender's messages too. So the provider tells
the others (:class:`~bot.core.protocols.HasPeers`, over the cluster) who wrote (once an hour
per sender: then any instance vouches for their window, and a reply sent by another instance
waits for nothing), and hands on each status of a send that waits for its verdict (its key
says so) and that it is not itself waiting for. Any instance then learns at once that its
send went out or was refused, instead of waiting ``status_wait`` for a status that reached
another instance and calling a refused message sent. Statuses of other sends stay where they
land: only the proof that a send whose answer was lost went out is then local.

Neither the access token, the app secret, the verify token nor any message text appears in
what this module logs or raises.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
from aiohttp import web

from bot.core.errors import ConfigError
from bot.core.models import Button, ChatKind, Inbound
from bot.core.protocols import Peers
from bot.core.schema import WebhookConfig
from providers._json import as_str
from providers.base import Dedupe, State
from providers.limits import ButtonLimits, TextSplit, clip
from providers.retry import Retry, RetryPolicy
from providers.webhook import WebhookProvider, WebhookServer
from providers.whatsapp import events
from providers.whatsapp.graph import (
    DEFAULT_API_BASE_URL,
    SPAM_LIMIT,
    WINDOW_CLOSED,
    Graph,
    GraphRetry,
    WhatsAppApiError,
    WindowClosed,
    address,
    button_message,
    explain,
    reply_buttons,
    text_message,
)
from providers.whatsapp.window import RecentWriters

_LOG = logging.getLogger(__name__)

MAX_TEXT = 4096
"""Characters in one text message body."""
MAX_BUTTON_BODY = 1024
"""Characters in the body of an interactive message."""
MAX_BUTTONS = 3
"""Reply buttons on one message."""
MAX_BUTTON_ID = 256
"""Characters in a reply button's id (the command it sends back)."""
SEEN_LIMIT = 10_000
"""How many handled message ids are remembered to drop re-deliveries."""
DEFAULT_WEBHOOK = WebhookConfig(port=8081, path="/whatsapp/webhook")
"""Where the webhook listens unless told (the config block's default too)."""
KEY = "pairbot:"
"""How every send's callback key starts (``biz_opaque_callback_data``)."""
WAITING_KEY = KEY + "v:"
"""How the key of a send that waits for its verdict starts: its statuses are news for the
instance that sent it, wherever they land."""

_MAX_RETRY_DELAY = 8.0
_SPLIT = TextSplit(limit=MAX_TEXT, lines_from=0.5, keep_breaks=True)
_BUTTONS = ButtonLimits(command=MAX_BUTTON_ID, count=MAX_BUTTONS, count_noun="reply buttons")


@dataclass(frozen=True, slots=True)
class _Fate:
    """What the status webhooks of one send told: it went out (its wamid) or it failed (the
    Graph error code)."""

    went_out: asyncio.Future[str]
    failed: asyncio.Future[int]

    @classmethod
    def new(cls) -> _Fate:
        loop = asyncio.get_running_loop()
        return cls(loop.create_future(), loop.create_future())

    def cancel(self) -> None:
        self.went_out.cancel()
        self.failed.cancel()


class WhatsAppProvider(WebhookProvider):
    """The WhatsApp Business Cloud API provider: one business phone number.

    Args:
        access_token: a system-user access token with ``whatsapp_business_messaging``.
        app_secret: the Meta app's secret; webhook POSTs are signed with it.
        verify_token: the string entered as "Verify token" when subscribing the webhook.
        phone_number_id: the business phone number's id (not the number itself); webhooks
            for other numbers of the same account are ignored.
        api_base_url: the Graph API root, ``https://graph.facebook.com`` unless a fake.
        api_version: the Graph API version in every URL, e.g. ``v21.0``.
        webhook: where the webhook server binds (port 0 picks a free one: read
            :attr:`webhook_port` after start), and the path Meta POSTs to; everything else
            answers 404.
        name: the provider name carried by every :class:`~bot.core.models.Inbound`.
        send_attempts: tries per message before :class:`WhatsAppApiError` is raised.
        retry_base_delay: seconds before the first retry; doubled each time (up to 8 s).
        request_timeout: seconds one Graph API call may take.
        stop_timeout: seconds :meth:`stop` waits for accepted events to be handled.
        status_wait: seconds a send to someone who has not written lately waits for its first
            status webhook, which says whether their 24-hour window refused it.

    :meth:`start` can be called again after :meth:`stop`; the ids of handled messages are
    kept across, so a re-delivery after a restart of the provider is still dropped.
    """

    platform = "WhatsApp"
    button_limits = _BUTTONS
    text_split = _SPLIT
    dedupe_size = SEEN_LIMIT
    max_body = 4 * 1024 * 1024

    def __init__(
        self,
        *,
        access_token: str,
        app_secret: str,
        verify_token: str,
        phone_number_id: str,
        api_base_url: str | None = None,
        api_version: str = "v21.0",
        webhook: WebhookConfig = DEFAULT_WEBHOOK,
        name: str = "whatsapp",
        send_attempts: int = 6,
        retry_base_delay: float = 0.5,
        request_timeout: float = 20.0,
        stop_timeout: float = 5.0,
        status_wait: float = 10.0,
    ) -> None:
        super().__init__(name=name, webhook=WebhookServer.at(webhook), drain_timeout=stop_timeout)
        for field, value in (
            ("access_token", access_token),
            ("app_secret", app_secret),
            ("verify_token", verify_token),
            ("phone_number_id", phone_number_id),
        ):
            self._required(field, value)
        if send_attempts < 1 or not retry_base_delay > 0 or not request_timeout > 0:
            raise ConfigError("retry settings must be positive", source=f"providers.{name}")
        self.send_retry = RetryPolicy(
            attempts=send_attempts, first_delay=retry_base_delay, max_delay=_MAX_RETRY_DELAY
        )
        self._app_secret = app_secret.encode()
        self._verify_token = verify_token.encode()
        self._phone_number_id = phone_number_id.strip()
        root = (api_base_url or DEFAULT_API_BASE_URL).rstrip("/")
        self._api: Graph = Graph(
            phone_url=f"{root}/{api_version.strip('/')}/{self._phone_number_id}",
            access_token=access_token,
            timeout=aiohttp.ClientTimeout(total=request_timeout),
            name=name,
        )
        self._status_wait = status_wait
        self._awaiting: dict[str, _Fate] = {}
        """Each send in flight, by its callback key (and, once known, its wamid)."""
        self._writers = RecentWriters(size=SEEN_LIMIT)
        self._peers: Peers | None = None
        self._settled = Dedupe(SEEN_LIMIT)
        """Keys of waiting sends that need no news any more: told, or ended here."""

    def __repr__(self) -> str:
        return (
            f"WhatsAppProvider(name={self.name!r}, phone_number_id="
            f"{self._phone_number_id!r}, webhook={self.webhook_url!r})"
        )

    # -- lifecycle (the hooks of BaseProvider) -----------------------------------------------

    async def _connect(self) -> None:
        """Check the access token, open the webhook and return once it accepts events.

        A Graph API that cannot be reached is logged, not fatal: the webhook still runs and
        sends retry.

        Raises:
            ConfigError: Graph refused the token or does not know the phone number id.
            OSError: the webhook address cannot be bound.
        """
        self._api.open()
        await self._check_account()
        await self._serve(self._receive, get=self._verify)
        _LOG.info(
            "%s: webhook listening on %s:%d%s",
            self.name,
            self._webhook.host,
            self.webhook_port,
            self.webhook_path,
        )

    async def _check_account(self) -> None:
        """GET the phone number: a wrong token or id fails start; no answer only warns."""
        try:
            status, code = await self._api.check()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            _LOG.warning(
                "%s: Graph API not reachable at start (%s); sends will retry",
                self.name,
                type(exc).__name__,
            )
            return
        if status == 200:
            return
        if status in (400, 401, 403, 404) or code in (100, 190):
            field = "access_token" if status == 401 or code == 190 else "phone_number_id"
            raise self._config_error(
                field,
                f"the Graph API refused the {field.replace('_', ' ')}",
                hint=str(WhatsAppApiError("refused", status=status, code=code)),
            )
        _LOG.warning(
            "%s: Graph API answered HTTP %d at start; sends will retry", self.name, status
        )

    # -- outbound ----------------------------------------------------------------------------

    async def send(self, chat_id: str, text: str, *, buttons: Sequence[Button] = ()) -> str:
        """Send plain ``text`` to a wa_id or BSUID, with up to three reply buttons; return its
        wamid.

        Text over 4096 characters goes as several messages (the last one's id is returned).
        With buttons, text over 1024 characters goes first as text, then the buttons under
        its first line. Button labels are cut to 20 characters.

        Raises:
            ButtonError: more than three buttons, a command empty or over 256 characters, or
                two buttons alike (nothing was sent).
            ProviderStateError: the provider is not running.
            WhatsAppApiError: Graph refused the message, or kept failing.
        """
        if buttons and len(text) > MAX_BUTTON_BODY:
            _BUTTONS.check(self.platform, buttons)
            reply_buttons(buttons)  # refuses buttons alike before anything is sent
            await super().send(chat_id, text)
            first = next((line for line in text.splitlines() if line.strip()), "…")
            text = clip(first, MAX_BUTTON_BODY, strip=True)
        return await super().send(chat_id, text, buttons=buttons)

    async def _send_text(self, chat_id: str, text: str, buttons: Sequence[Button]) -> str:
        """Send one text message, or (with buttons) an interactive one; return its wamid."""
        if buttons:
            return await self._post_message(button_message(chat_id, text, buttons))
        return await self._post_message(text_message(chat_id, text))

    async def edit(self, chat_id: str, message_id: str, text: str) -> None:
        """WhatsApp cannot edit: send ``text`` as a reply to ``message_id`` instead.

        The old message keeps its buttons; pressing one again is answered by the core
        ("already handled").
        """
        for part in _SPLIT.split(text):
            reply = {**text_message(chat_id, part), "context": {"message_id": message_id}}
            await self._post_message(reply)

    async def _post_message(self, payload: dict[str, Any]) -> str:
        """POST one message, retrying temporary failures; return its wamid.

        Between attempts, a status webhook carrying this send's key proves that an attempt
        whose answer was lost did go out: that ends the retries without a duplicate.
        """
        to = address(payload)
        waits = not self._writers.vouch(to)
        key = (WAITING_KEY if waits else KEY) + secrets.token_urlsafe(12)
        payload = {**payload, "biz_opaque_callback_data": key}
        fate = _Fate.new()
        known = [key]
        self._awaiting[key] = fate
        try:
            message_id = await self._retrying(
                lambda: self._api.send(payload),
                what=f"send to {to}",
                give_up=self._gave_up,
                proof=fate.went_out,
            )
            if waits or fate.failed.done():
                known.append(message_id)
                self._awaiting[message_id] = fate
                await self._verdict(fate, to)
            return message_id
        except WhatsAppApiError as exc:
            if exc.code == SPAM_LIMIT:
                _LOG.error(
                    "%s: Meta's spam rate limit (131048) refused a message to %s; not "
                    "retried: check the number's quality rating in WhatsApp Manager",
                    self.name,
                    address(payload),
                )
            raise
        finally:
            for each in known:
                self._awaiting.pop(each, None)
            fate.cancel()
            if waits:
                self._settled.first_time(key)  # its later statuses are nobody's news

    async def _verdict(self, fate: _Fate, to: str) -> None:
        """Wait (up to ``status_wait``) for the first status of a send to someone who has not
        written lately: Meta takes a free-form message outside their 24-hour window and then
        posts a ``failed`` status with 131047.

        Raises:
            WindowClosed: that is what the status said. (Another failure is logged where the
                status is read; no status in time counts as sent.)
        """
        either: set[asyncio.Future[Any]] = {fate.went_out, fate.failed}
        await asyncio.wait(either, timeout=self._status_wait, return_when=asyncio.FIRST_COMPLETED)
        if fate.failed.done() and fate.failed.result() == WINDOW_CLOSED:
            raise WindowClosed(self.name, to, status=200)

    def _gave_up(self, failure: Retry, tries: int) -> WhatsAppApiError:
        status, code = (
            (failure.status, failure.code) if isinstance(failure, GraphRetry) else (0, 0)
        )
        return WhatsAppApiError(
            f"{self.name}: sending failed {tries} times ({failure.reason})",
            status=status,
            code=code,
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
        if self.state is not State.RUNNING:
            return web.Response(status=503, text="Stopping")
        try:
            body = json.loads(raw)
        except ValueError:
            _LOG.warning("%s: signed webhook POST is not JSON; ignored", self.name)
            return web.Response(status=400, text="Bad Request")
        self._accept(body)
        return web.Response(text="OK")

    def _accept(self, body: object) -> None:
        """Read one webhook body: resolve statuses, drop seen ids, queue new inbounds."""
        for change in events.changes(body):
            if change.phone_number_id != self._phone_number_id:
                _LOG.debug("%s: webhook for another phone number ignored", self.name)
                continue
            self._writers.saw(events.stamped(change))
            for key, message_id in events.went_out(change.statuses):
                if not self._went_out(key, message_id):
                    self._hand_on(key, {"status": "out", "key": key, "id": message_id})
            for key, message_id, code in events.failed(change.statuses):
                mine = self._failed(key, message_id, code)
                if not mine:
                    news = {"status": "failed", "key": key, "id": message_id, "code": str(code)}
                    self._hand_on(key, news)
                if not mine or code != WINDOW_CLOSED:
                    _LOG.warning(
                        "%s: message %s was not delivered (%s)",
                        self.name,
                        message_id,
                        explain(code),
                    )
            for message in change.messages:
                if not self._first_time(as_str(message.get("id"))):
                    continue
                read = events.read_message(self.name, message, change)
                if isinstance(read, Inbound) and read.chat_kind is ChatKind.DM:
                    self._wrote(read.sender_id, read.sent_at)
                if isinstance(read, events.NumberChange):
                    _LOG.info(
                        "%s: sender %s changed number to %s; the new id is a stranger until "
                        "approved",
                        self.name,
                        read.old,
                        read.new,
                    )
                elif read is not None:
                    self._enqueue(read)

    def _went_out(self, key: str, message_id: str) -> bool:
        """A status says the send keyed ``key`` went out: True if this process waits on it."""
        fate = self._awaiting.get(key)
        if fate is None:
            return False
        if not fate.went_out.done():
            fate.went_out.set_result(message_id)  # it went out (perhaps on a retry)
        return True

    def _failed(self, key: str, message_id: str, code: int) -> bool:
        """A status says the send keyed ``key`` failed: True if this process waits on it."""
        fate = self._awaiting.get(key) or self._awaiting.get(message_id)
        if fate is None:
            return False
        if not fate.failed.done():
            fate.failed.set_result(code)  # its send raises WindowClosed for 131047
        return True

    def _wrote(self, sender: str, at: datetime | None) -> None:
        """``sender`` wrote here: vouch for their window, and have every instance vouch."""
        if self._writers.wrote(sender, at) and self._peers is not None:
            news = {"wrote": sender}
            if at is not None:
                news["at"] = at.isoformat()
            self._peers.tell(news)

    def _hand_on(self, key: str, news: dict[str, str]) -> None:
        """Tell the other instances a status that is not this process's to wait for, if the
        send it belongs to waits for one (once per key and kind)."""
        if (
            self._peers is not None
            and key.startswith(WAITING_KEY)
            and key not in self._settled  # a send of this process's that ended: nobody waits
            and self._settled.first_time((key, news["status"]))
        ):
            self._peers.tell(news)

    # -- the other instances (HasPeers) --------------------------------------------------------

    def meet(self, peers: Peers) -> None:
        """Tell ``peers`` who wrote, and the statuses of their waiting sends that land here."""
        self._peers = peers

    def heard(self, news: Mapping[str, str]) -> None:
        """Another instance saw someone write, or a status of a send that may be this one's."""
        if (sender := news.get("wrote")) is not None:
            self._writers.wrote(sender, _moment(news.get("at")))
            return
        key, message_id = news.get("key", ""), news.get("id", "")
        if news.get("status") == "out":
            self._went_out(key, message_id)
        elif news.get("status") == "failed":
            self._failed(key, message_id, int(news.get("code") or 0))


def _moment(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


__all__ = ["WhatsAppApiError", "WhatsAppProvider"]
