"""Telegram, through python-telegram-bot: long polling or a webhook in, plain text and inline
buttons out.

:class:`TelegramProvider` turns Telegram updates into :class:`~bot.core.models.Inbound` values (the
sender is always the numeric user id, never the @username, which can be reassigned) and sends
plain text, never parsed as markup, since the text may come from strangers. Outbound calls go
through PTB's ``AIORateLimiter`` when ``aiolimiter`` is installed
(``python-telegram-bot[rate-limiter]``), else through the base's retry on ``RetryAfter``;
either way a 429's ``retry_after`` is honoured up to three times.

Lifecycle, the ordered handling of updates, the dedupe, the retry loop and the text split (at
line breaks, 4096 characters a message) are :class:`~providers.base.BaseProvider`'s.

Updates come one of two ways (``mode``), and become Inbound values the same way:

* ``polling`` (default): the provider long-polls getUpdates itself (not PTB's Updater, which
  confirms each batch as soon as it is fetched) and confirms an update only once it was
  handled: the ``offset`` of the next getUpdates is the update after the last one handled,
  never one merely fetched, and a stop confirms what it handled with one last short call.
  So when an instance dies with updates in hand, Telegram gives them again to the next
  getUpdates, whichever instance makes it (see :meth:`TelegramProvider._poll`). Telegram
  serves one poller per bot at a time (a second getUpdates ends the first with 409
  Conflict), so polling is :attr:`~TelegramProvider.one_consumer`: instances on one state
  take turns, and the others only send (sendMessage needs no poller). Starting to poll
  deletes a webhook left set (deleteWebhook, as PTB's Updater bootstrap did).
* ``webhook``: Telegram POSTs each Update to ``webhook_url``, which must reach the
  :class:`~providers.webhook.WebhookServer` this provider serves (``webhook``: host, port,
  path). At start the provider checks the token (getMe), listens, then registers the URL
  with setWebhook (the same ``allowed_updates`` as polling, and ``secret_token``). A POST is
  taken only if its ``X-Telegram-Bot-Api-Secret-Token`` header matches the secret (compared
  in constant time, before the body is read; else 403, as PTB's own webhook answers); it is
  answered 200 once the update is queued, so a crash before that leaves it to Telegram's
  retry, and 503 while the provider takes no events. Telegram delivers at least once: an
  update_id seen before is dropped (the base's dedupe, in the worker, so an update queued and
  then dropped at a stop is taken again when re-delivered). Every instance behind the load
  balancer receives: webhook mode is not :attr:`~TelegramProvider.one_consumer`.

A message's :attr:`~bot.core.models.Inbound.message_id` is its update's ``update_id``: the
same whenever Telegram delivers the update again, whichever instance gets it, and unique per
bot (a Message's own ``message_id`` counts per chat), so instances can agree on handling it
once. A button press carries the id of the message whose button was pressed (the edit needs
it).

  :meth:`~TelegramProvider.stop` leaves the webhook registered: Telegram keeps the updates
  that arrive meanwhile (up to 24 hours) and retries their delivery, so a restart loses
  nothing; and where several processes serve the same URL behind a load balancer, one
  stopping must not cut the others off. ``mode: polling`` deletes it at its next start.

A message with a photo, a file, a sticker, a voice note (anything PTB counts as its
``effective_attachment``) becomes an Inbound with ``media`` set and its caption, or ``""``, as
its text: a stranger who sends one is writing to the bot like any other.

A bot cannot write first: Telegram delivers nothing to a person's private chat until they
pressed Start (or wrote) there, and nothing once they blocked the bot. Such a send raises
:class:`~bot.core.errors.RecipientUnreachable` saying what they must do (the owner notices
keep what they miss and tell them when they write); :meth:`TelegramProvider.why_unreachable`
asks the same without sending a message (``sendChatAction``), for the check at start and
``pairbot doctor``.

The bot token and the webhook's secret token never appear in what this module logs or
raises, and while the provider runs a filter redacts them from the httpx and PTB log lines
that carry them (the token inside a URL; PTB logs setWebhook's parameters at DEBUG).
"""

from __future__ import annotations

import asyncio
import hmac
import importlib.util
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from aiohttp import web
from telegram import (
    Bot,
    CallbackQuery,
    Chat,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
    User,
)
from telegram.constants import ChatAction, ChatType
from telegram.error import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidToken,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.ext import AIORateLimiter, Application

from bot.core.errors import RecipientUnreachable
from bot.core.models import Button, ChatKind, Inbound
from bot.core.platforms import (
    TELEGRAM_API,
    telegram_secret_token_problem,
    telegram_webhook_url_problem,
)
from bot.core.schema import WebhookConfig
from providers.base import BaseProvider
from providers.limits import ButtonLimits, TextSplit
from providers.retry import Backoff, Retry, RetryPolicy
from providers.webhook import WebhookServer

_LOG = logging.getLogger(__name__)

DEFAULT_API_BASE_URL = TELEGRAM_API
DEFAULT_WEBHOOK = WebhookConfig(port=8083, path="/telegram/webhook")
"""Where webhook mode listens unless told (the config block's default too)."""
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 (a header name)
"""The header carrying setWebhook's ``secret_token`` in each webhook POST (Bot API setWebhook:
"If specified, the request will contain a header “X-Telegram-Bot-Api-Secret-Token” with the
secret token as content"; telegram-bot-api WebhookActor.cpp adds it to every request)."""
MAX_UPDATE_BODY = 1024 * 1024
"""The largest webhook body taken, in bytes (an Update is far smaller); more is answered 413."""
MAX_CALLBACK_DATA_BYTES = 64
"""Telegram refuses inline buttons whose callback data is longer than this, in UTF-8 bytes."""
MAX_TEXT = 4096
"""The most characters of one message (Bot API sendMessage: "1-4096 characters after entities
parsing"). Characters are Unicode code points, as Python's ``len`` counts them, not UTF-16
units: the Bot API server checks ``utf8_length(text) > message_text_length_max`` ("Message is
too long"; tdlib/td td/telegram/MessageContent.cpp, get_input_message_content; tdutils
utf8.h: utf8_length "returns length of UTF-8 string in characters"), the option being 4096
(OptionManager.cpp). An emoji outside the BMP is one character of the 4096."""

_SPLIT = TextSplit(limit=MAX_TEXT)
"""At the last line break (dropped with those after it), else hard at 4096 characters."""

_MAX_RETRIES = 3
_POLL_BACKOFF = (1.0, 30.0)
"""The pause after a failed getUpdates: 1 s, growing to 30 s (PTB's Updater pauses alike)."""
_ALLOWED_UPDATES = (Update.MESSAGE, Update.CHANNEL_POST, Update.CALLBACK_QUERY)
_HAVE_AIOLIMITER = importlib.util.find_spec("aiolimiter") is not None

# Loggers whose lines can carry the token: httpx logs each request URL at INFO, and PTB's bot
# logs its base URLs at DEBUG when built.
_TOKEN_LOGGERS = ("httpx", "telegram.Bot", "telegram.ext.ExtBot")

_T = TypeVar("_T")
_App = Application[Any, Any, Any, Any, Any, Any]


class _RedactToken(logging.Filter):
    """Replace the bot token (and the webhook's secret token) in the records of the loggers
    it is added to."""

    def __init__(self, *secrets: str) -> None:
        super().__init__()
        self._secrets = [secret for secret in secrets if secret]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        found = [secret for secret in self._secrets if secret in message]
        if found:
            for secret in found:
                message = message.replace(secret, "<token>")
            record.msg = message
            record.args = None
        return True


def _chat_kind(chat: Chat) -> ChatKind | None:
    if chat.type == ChatType.PRIVATE:
        return ChatKind.DM
    if chat.type in (ChatType.GROUP, ChatType.SUPERGROUP):
        return ChatKind.GROUP
    if chat.type == ChatType.CHANNEL:
        return ChatKind.CHANNEL
    return None


def _full_name(first: str | None, last: str | None) -> str:
    return " ".join(part for part in (first, last) if part)


def _user_meta(user: User) -> dict[str, str]:
    meta = {"username": user.username, "firstName": user.first_name, "lastName": user.last_name}
    return {key: value for key, value in meta.items() if value}


def _chat_ref(chat_id: str) -> int | str:
    """Telegram takes a numeric id, or an ``@username`` for public channels."""
    try:
        return int(chat_id)
    except ValueError:
        return chat_id


_NOT_STARTED = ("bot can't initiate conversation", "chat not found", "peer_id_invalid")
"""How Telegram refuses a private chat the person never started (lower-cased): sendMessage
says "Forbidden: bot can't initiate conversation with a user" (TDLib turns the server's
PEER_ID_INVALID into it: td/telegram/MessagesManager.cpp, process_send_message_fail_error),
or "Bad Request: chat not found" for a user the bot never met (telegram-bot-api Client.cpp,
check_chat); sendChatAction passes PEER_ID_INVALID on as it is."""
_BLOCKED = "bot was blocked by the user"
"""USER_IS_BLOCKED, as every method says it (telegram-bot-api Client.cpp, fail_query_with_error:
"Forbidden: bot was blocked by the user")."""


def _unreachable(exc: TelegramError, chat_id: str, bot_username: str | None) -> str | None:
    """What the person must do, if ``exc`` is Telegram refusing their private chat; else None
    (a group's refusals, and every other error, are not about a person)."""
    if not chat_id.isdigit():  # a user id is positive; groups and channels are negative
        return None
    found = exc.message.lower()
    chat = f"t.me/{bot_username}" if bot_username else "the bot's chat"
    if _BLOCKED in found:
        return f"they blocked the bot: open {chat} and press Restart (Telegram: {exc.message})"
    if not any(sign in found for sign in _NOT_STARTED):
        return None
    # "chat not found" is also what a mistyped id gets: say so.
    check = "check the id; if it is right, " if "chat not found" in found else ""
    return (
        f"they have not started the bot: {check}open {chat} and press Start "
        f"(Telegram: {exc.message})"
    )


async def reach(bot: Bot, user_id: str) -> str | None:
    """None if ``bot`` can write to ``user_id``'s private chat; else what they must do.

    Raises:
        telegram.error.TelegramError: Telegram failed otherwise (the network, the token).
    """
    try:
        await bot.send_chat_action(chat_id=_chat_ref(user_id), action=ChatAction.TYPING)
    except (Forbidden, BadRequest) as exc:
        why = _unreachable(exc, user_id, bot.username)
        if why is None:
            raise
        return why
    return None


class TelegramProvider(BaseProvider):
    """The Telegram provider: a PTB application polled by hand, one per bot token.

    Args:
        token: the bot token from @BotFather.
        api_base_url: the Bot API server root; ``https://api.telegram.org`` unless a fake or
            a self-hosted Bot API server is used.
        name: the provider name carried by every :class:`~bot.core.models.Inbound`.
        poll_timeout: seconds each getUpdates long poll may be held open (rounded to whole
            seconds, at least 1).
        max_send_rate: messages per second the bot sends at most, all chats together
            (Telegram allows about 30); sends beyond it wait their turn.
        mode: ``polling`` (getUpdates: no public URL needed) or ``webhook`` (Telegram POSTs
            updates to ``webhook_url``).
        webhook_url: webhook mode: the public HTTPS URL registered with setWebhook; it must
            reach ``webhook`` (through a reverse proxy or load balancer, usually).
        secret_token: webhook mode: setWebhook's ``secret_token`` (1-256 characters of
            ``A-Z a-z 0-9 _ -``), which each POST must carry.
        webhook: webhook mode: where to listen (port 0 picks a free one, kept for a restart)
            and the path Telegram's POSTs arrive on.

    :meth:`start` can be called again after :meth:`stop`. Updates are handled one at a time,
    in order; an exception from the handler is logged and receiving goes on.
    """

    platform = "Telegram"
    button_limits = ButtonLimits(command=MAX_CALLBACK_DATA_BYTES, command_in_bytes=True)
    text_split = _SPLIT
    send_retry = RetryPolicy(attempts=_MAX_RETRIES + 1)

    def __init__(
        self,
        *,
        token: str,
        api_base_url: str | None = None,
        name: str = "telegram",
        poll_timeout: float = 10.0,
        max_send_rate: float = 30.0,
        mode: str = "polling",
        webhook_url: str | None = None,
        secret_token: str | None = None,
        webhook: WebhookConfig = DEFAULT_WEBHOOK,
    ) -> None:
        super().__init__(name=name)
        self._token = self._required("token", token, "the bot token is empty")
        self.mode = mode
        self._webhook_url = ""
        self._secret = ""
        self._server: WebhookServer | None = None
        if mode == "webhook":
            self._webhook_url = self._required(
                "webhook_url", webhook_url, "webhook_url is required when mode is webhook"
            )
            if problem := telegram_webhook_url_problem(self._webhook_url, api_base_url):
                raise self._config_error("webhook_url", problem)
            self._secret = self._required(
                "secret_token", secret_token, "secret_token is required when mode is webhook"
            )
            if problem := telegram_secret_token_problem(self._secret):
                raise self._config_error("secret_token", problem)
            self._server = WebhookServer.at(webhook)
        elif mode != "polling":
            raise self._config_error("mode", "must be polling or webhook")
        if not poll_timeout > 0:
            raise self._config_error("poll_timeout", "must be positive")
        if not max_send_rate > 0:
            raise self._config_error("max_send_rate", "must be positive")
        self._root = (api_base_url or DEFAULT_API_BASE_URL).rstrip("/")
        # Telegram takes whole seconds; 0 would turn long polling into a busy loop.
        self._poll_timeout = timedelta(seconds=max(1, round(poll_timeout)))
        self._max_send_rate = max_send_rate
        self._app: _App | None = None
        self._redactor = _RedactToken(token, self._secret)
        self.one_consumer = mode == "polling"
        self._poller: asyncio.Task[None] | None = None
        self._handled_to: int | None = None
        """The offset that confirms every update handled so far (the last one's id + 1)."""
        self._confirmed_to: int | None = None
        """The offset last given to getUpdates: what Telegram counts as confirmed."""

    def __repr__(self) -> str:
        return (
            f"TelegramProvider(name={self.name!r}, mode={self.mode!r}, "
            f"api_base_url={self._root!r})"
        )

    @property
    def public_url(self) -> str | None:
        """In webhook mode: the URL registered with setWebhook (``webhook_url``); else None."""
        return self._webhook_url or None

    @property
    def webhook_url(self) -> str | None:
        """In webhook mode, while serving: where the webhook listens (with the real port),
        e.g. ``http://127.0.0.1:8083/telegram/webhook``; what ``webhook_url`` must reach."""
        server = self._server
        return server.url if server is not None and server.serving else None

    @property
    def api_root(self) -> str:
        """The Bot API server root (no token in it)."""
        return self._root

    def lone_bot(self) -> Bot:
        """A PTB Bot on this provider's token and server, outside the provider's application
        (``pairbot doctor``): use it as ``async with``."""
        return Bot(self._token, base_url=self._bot_url(), base_file_url=self._file_url())

    def _bot_url(self) -> str:
        return f"{self._root}/bot"

    def _file_url(self) -> str:
        return f"{self._root}/file/bot"

    # -- lifecycle (the hooks of BaseProvider) -----------------------------------------------

    async def _connect(self) -> None:
        """Check the token (getMe): the bot can send from now on.

        Raises:
            ConfigError: Telegram rejected the token.
            telegram.error.TelegramError: the API could not be reached or answered otherwise.
        """
        self._redact_logs(True)
        # Held from now on: a handler that replies to the very first update finds the bot.
        app = self._app = self._build()
        try:
            await app.initialize()
        except InvalidToken:
            # PTB's message quotes the token: raise our own, unchained.
            raise self._config_error(
                "token",
                "Telegram rejected the bot token",
                hint="check the token @BotFather gave you, and api_base_url",
            ) from None

    async def _listen(self) -> None:
        """Start long polling, or serve the webhook and register it (setWebhook); return
        once updates flow.

        Raises:
            ConfigError: Telegram refused the webhook (setWebhook: ``webhook_url``,
                ``secret_token``).
            telegram.error.TelegramError: the API could not be reached or answered otherwise.
            OSError: webhook mode could not listen on its port.
        """
        app = self._need(self._app)
        if self._server is not None:
            await self._serve_webhook(app, self._server)
            return
        # getUpdates is refused while a webhook is set (409): polling deletes one left set.
        await self._call(lambda: app.bot.delete_webhook())
        self._handled_to = self._confirmed_to = None
        self._poller = asyncio.create_task(self._poll(app.bot), name=f"{self.name}-poll")
        _LOG.info("%s: polling started as @%s", self.name, app.bot.username)

    async def _poll(self, bot: Bot) -> None:
        """Long-poll getUpdates and queue each update; ask for the next batch only once this
        one was handled, with the offset that confirms exactly what was handled.

        Bot API, getUpdates (core.telegram.org/bots/api#getupdates): ``offset`` is the
        "Identifier of the first update to be returned. Must be greater by one than the
        highest among the identifiers of previously received updates. By default, updates
        starting with the earliest unconfirmed update are returned. An update is considered
        confirmed as soon as getUpdates is called with an offset higher than its
        update_id." So a getUpdates made while updates are still in hand would confirm them:
        the loop waits for the batch first. An instance that dies (``kill -9``) has
        confirmed only what it handled; Telegram answers the next getUpdates, made by
        whichever instance holds the bot next, from the first update left unconfirmed.
        """
        backoff = Backoff(*_POLL_BACKOFF)
        while True:
            offset = self._handled_to
            try:
                updates = await bot.get_updates(
                    offset=offset, timeout=self._poll_timeout, allowed_updates=_ALLOWED_UPDATES
                )
            except RetryAfter as exc:
                await asyncio.sleep(exc._retry_after.total_seconds())  # public one warns
                continue
            except TimedOut:
                continue  # a long poll cut short: ask again at once, as PTB does
            except TelegramError as exc:
                self._on_polling_error(exc)
                await asyncio.sleep(backoff.delay)
                backoff.grow()
                continue
            backoff.reset()
            self._confirmed_to = offset
            last: asyncio.Future[None] | None = None
            for update in updates:
                if (last := self._take(update)) is None:
                    return  # receiving has stopped
            if last is not None:
                await last  # handled in order: the last one done means the batch is

    async def _received(self) -> None:
        """Polling ended and the worker finished: confirm the updates it handled since the
        last getUpdates (one short getUpdates with their offset), so the next consumer does
        not get them again. What was fetched and not handled stays unconfirmed."""
        app, offset = self._app, self._handled_to
        if self._server is not None or app is None or offset is None:
            return  # webhook mode: each 2xx answer confirmed its update
        if offset == self._confirmed_to:
            return
        try:
            await app.bot.get_updates(
                offset=offset, limit=1, timeout=0, allowed_updates=_ALLOWED_UPDATES
            )
        except TelegramError as exc:
            _LOG.warning(
                "%s: confirming the handled updates failed (%s): Telegram gives them again "
                "to the next getUpdates",
                self.name,
                type(exc).__name__,
            )
        else:
            self._confirmed_to = offset

    async def _serve_webhook(self, app: _App, server: WebhookServer) -> None:
        """Listen first (what Telegram posts once setWebhook returns finds the server), then
        register the URL.

        Raises:
            ConfigError: setWebhook refused the URL or the secret token.
        """
        web_app = web.Application(client_max_size=MAX_UPDATE_BODY)
        web_app.router.add_post(server.path, self._receive)
        await server.start(web_app)
        try:
            # Through the flood-limit retry: the Bot API takes one setWebhook a second (a
            # second one, from a quick restart or another process, is a 429 retry_after 1).
            await self._call(
                lambda: app.bot.set_webhook(
                    url=self._webhook_url,
                    secret_token=self._secret,
                    allowed_updates=_ALLOWED_UPDATES,
                )
            )
        except BadRequest as exc:
            # "Bad Request: bad webhook: ...", "secret token ...": Client.cpp, do_set_webhook.
            field = "secret_token" if "secret token" in exc.message.lower() else "webhook_url"
            raise self._config_error(
                field, "Telegram refused the webhook", hint=f"setWebhook said: {exc.message}"
            ) from None
        _LOG.info(
            "%s: webhook set, listening on %s:%d%s as @%s",
            self.name,
            server.host,
            server.port,
            server.path,
            app.bot.username,
        )

    async def _stop_receiving(self) -> None:
        """Stop polling (a long poll in flight is abandoned: what it would bring stays
        unconfirmed), or stop serving the webhook, which stays registered (see the module's
        doc)."""
        if self._server is not None:
            await self._server.stop()
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)

    async def _disconnect(self) -> None:
        """Release the connections (also those of a start that failed half-way)."""
        app, self._app = self._app, None
        try:
            if app is not None:
                try:
                    await app.shutdown()
                finally:
                    # When initialize() failed after opening the HTTP clients, app.shutdown()
                    # does nothing (the app never counted as initialized); the bot's own is
                    # idempotent.
                    await app.bot.shutdown()
        finally:
            self._redact_logs(False)

    # -- outbound ----------------------------------------------------------------------------

    async def _send_text(self, chat_id: str, text: str, buttons: Sequence[Button]) -> str:
        """Send plain ``text`` with an optional row of inline buttons; return the message id.

        Raises:
            ProviderStateError: the provider is not running.
            RecipientUnreachable: a private chat the person has not started or has blocked.
            telegram.error.TelegramError: Telegram refused the message.
        """
        markup = None
        if buttons:
            markup = InlineKeyboardMarkup(
                [[InlineKeyboardButton(b.label, callback_data=b.command) for b in buttons]]
            )
        bot = self._bot()
        try:
            message = await self._call(
                lambda: bot.send_message(
                    chat_id=_chat_ref(chat_id), text=text, reply_markup=markup
                )
            )
        except (Forbidden, BadRequest) as exc:
            why = _unreachable(exc, chat_id, bot.username)
            if why is None:
                raise
            raise RecipientUnreachable(f"{self.name}: user {chat_id}: {why}") from exc
        return str(message.message_id)

    async def why_unreachable(self, user_id: str) -> str | None:
        """None if the bot can write to ``user_id``'s private chat; else what they must do.

        Asked without a message: ``sendChatAction`` (a "typing…" for at most 5 seconds)
        passes the checks a message passes (see :func:`_unreachable`). getChat would not
        tell: it answers for any user the bot has met, in a group too, and for one who
        blocked it (telegram-bot-api Client.cpp: check_chat_access with Read access fails
        only for a user it does not know).

        Raises:
            ProviderStateError: the provider is not running.
            telegram.error.TelegramError: Telegram failed otherwise (the network, the token).
        """
        return await reach(self._bot(), user_id)

    async def edit(self, chat_id: str, message_id: str, text: str) -> None:
        """Replace a sent message's text and remove its buttons; "not modified" is success.

        Raises:
            ProviderStateError: the provider is not running.
            telegram.error.TelegramError: Telegram refused the edit.
        """
        bot = self._bot()
        try:
            await self._call(
                lambda: bot.edit_message_text(
                    text=_SPLIT.fit(text), chat_id=_chat_ref(chat_id), message_id=int(message_id)
                )
            )
        except BadRequest as exc:
            if "message is not modified" not in exc.message.lower():
                raise

    def _bot(self) -> Bot:
        bot: Bot = self._need(self._app).bot
        return bot

    async def _call(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """Run ``call``; without AIORateLimiter, wait out a 429 (the base's retry)."""

        async def attempt() -> _T:
            try:
                return await call()
            except RetryAfter as exc:
                if _HAVE_AIOLIMITER:
                    raise
                after = exc._retry_after.total_seconds()  # public attribute warns in PTB 22
                raise Retry("flood limit", after=after, error=exc) from None

        return await self._retrying(attempt, what="a Bot API call")

    # -- inbound -----------------------------------------------------------------------------

    def _take(self, update: Update) -> asyncio.Future[None] | None:
        """Queue one update, from either mode; the worker turns it into an Inbound and hands
        it on, in order. Return a future done once it was handled (handed on, or dropped as a
        repeat or as nothing to hand on; a conversion that failed is logged and counts as
        handled, so one bad update cannot stall the bot); it is never done for an update cut
        short or dropped at a stop. None, and nothing queued, once the provider takes no
        events."""
        done = asyncio.get_running_loop().create_future()

        async def handle() -> None:
            try:
                inbound = await self._first_from(update)
                if inbound is not None:
                    await self._deliver(inbound)
            except Exception:
                self._handled(update.update_id, done)
                raise  # the worker logs it
            self._handled(update.update_id, done)

        return done if self._enqueue(handle) else None

    def _handled(self, update_id: int, done: asyncio.Future[None]) -> None:
        self._handled_to = max(self._handled_to or 0, update_id + 1)
        if not done.done():
            done.set_result(None)

    async def _first_from(self, update: Update) -> Inbound | None:
        """The update's Inbound, unless its update_id was handled before (Telegram delivers
        at least once: a webhook POST it saw no 2xx for is sent again)."""
        if not self._first_time(update.update_id):
            return None
        return await self._from_update(update)

    async def _receive(self, request: web.Request) -> web.Response:
        """One webhook POST: check the secret token, then read and queue the Update.

        The header is checked before the body is read, and never logged. 200 means queued;
        Telegram posts again whatever got another answer or none.
        """
        given = request.headers.get(SECRET_HEADER, "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, self._secret.encode()):
            _LOG.warning(
                "%s: webhook POST from %s with a %s secret token refused",
                self.name,
                request.remote,
                "wrong" if given else "missing",
            )
            return web.Response(status=403, text="Forbidden")
        app = self._app
        if app is None:
            return web.Response(status=503, text="Stopping")
        try:
            body = json.loads(await request.read())
            update = Update.de_json(body, app.bot) if isinstance(body, dict) else None
        except (ValueError, TypeError, KeyError):
            update = None
        if update is None:
            _LOG.warning("%s: webhook POST is not an Update; refused", self.name)
            return web.Response(status=400, text="Bad Request")
        if self._take(update) is None:
            return web.Response(status=503, text="Stopping")
        return web.Response(text="OK")

    async def _from_update(self, update: Update) -> Inbound | None:
        if update.callback_query is not None:
            return await self._from_button(update.callback_query)
        if update.message is not None:
            return self._from_message(update.message, update.update_id)
        if update.channel_post is not None:
            return self._from_message(update.channel_post, update.update_id)
        return None  # edits and every other kind of update are ignored

    def _from_message(self, message: Message, update_id: int) -> Inbound | None:
        kind = _chat_kind(message.chat)
        # A photo, a document, a sticker, a voice note: PTB's effective_attachment (Bot API
        # Message: the content fields besides ``text``); a caption is its text. Service
        # messages (a member joined, a pin) carry neither and stay unseen.
        media = message.effective_attachment is not None
        text = message.text if message.text is not None else message.caption
        if kind is None or (text is None and not media):
            return None
        chat = message.chat
        if kind is ChatKind.CHANNEL:
            sender_id, sender_name = str(chat.id), chat.title or ""
            meta = {k: v for k, v in (("username", chat.username), ("title", chat.title)) if v}
        else:
            user = message.from_user
            if user is None or user.is_bot:
                return None
            sender_id = str(user.id)
            sender_name = _full_name(user.first_name, user.last_name)
            meta = _user_meta(user)
        return Inbound(
            provider=self.name,
            chat_id=str(chat.id),
            chat_kind=kind,
            sender_id=sender_id,
            sender_name=sender_name,
            text=text or "",
            message_id=str(update_id),
            meta=meta,
            sent_at=message.date,
            media=media,
        )

    async def _from_button(self, query: CallbackQuery) -> Inbound | None:
        try:
            await query.answer()  # stops the client's spinner; the reply comes as a message
        except TelegramError as exc:
            _LOG.warning("%s: answering callback query failed (%s)", self.name, type(exc).__name__)
        message, user = query.message, query.from_user
        if message is None or query.data is None or user.is_bot:
            return None
        kind = _chat_kind(message.chat)
        if kind is None:
            return None
        return Inbound(
            provider=self.name,
            chat_id=str(message.chat.id),
            chat_kind=kind,
            sender_id=str(user.id),
            sender_name=_full_name(user.first_name, user.last_name),
            text=query.data,
            message_id=str(message.message_id),
            is_button=True,
            meta=_user_meta(user),
        )

    def _on_polling_error(self, exc: TelegramError) -> None:
        if isinstance(exc, Conflict):  # its message is Telegram's own, quoting nothing
            _LOG.warning(
                "%s: Telegram ended a getUpdates for another consumer (%s): one bot token is "
                "polled by one process at a time; retrying",
                self.name,
                exc.message,
            )
            return
        # Log without the message, which may quote a request.
        _LOG.warning("%s: polling failed (%s), retrying", self.name, type(exc).__name__)

    # -- plumbing ----------------------------------------------------------------------------

    def _build(self) -> _App:
        builder = (
            Application.builder()
            .token(self._token)
            .base_url(self._bot_url())
            .base_file_url(self._file_url())
            .job_queue(None)
            .updater(None)  # polled by _poll, which confirms only what was handled
        )
        app: _App = (
            builder.rate_limiter(
                AIORateLimiter(overall_max_rate=self._max_send_rate, max_retries=_MAX_RETRIES)
            ).build()
            if _HAVE_AIOLIMITER
            else builder.build()
        )
        return app

    def _redact_logs(self, on: bool) -> None:
        for name in _TOKEN_LOGGERS:
            logger = logging.getLogger(name)
            if on:
                logger.addFilter(self._redactor)
            else:
                logger.removeFilter(self._redactor)
