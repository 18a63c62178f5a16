"""Telegram, through python-telegram-bot: long polling in, plain text and inline buttons out.

:class:`TelegramProvider` turns Telegram updates into :class:`~bot.core.models.Inbound` values (the
sender is always the numeric user id, never the @username, which can be reassigned) and sends
plain text, never parsed as markup, since the text may come from strangers. Outbound calls go
through PTB's ``AIORateLimiter`` when ``aiolimiter`` is installed
(``python-telegram-bot[rate-limiter]``), else through a small retry on ``RetryAfter``; either
way a 429's ``retry_after`` is honoured up to three times.

The bot token never appears in what this module logs or raises, and while the provider runs a
filter redacts it from the httpx and PTB log lines that carry it inside a URL.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

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
from telegram.constants import ChatType
from telegram.error import BadRequest, InvalidToken, RetryAfter, TelegramError
from telegram.ext import AIORateLimiter, Application, ContextTypes, TypeHandler

from bot.core.errors import ConfigError
from bot.core.models import Button, ChatKind, Inbound
from bot.core.protocols import OnInbound

_LOG = logging.getLogger(__name__)

DEFAULT_API_BASE_URL = "https://api.telegram.org"
MAX_CALLBACK_DATA_BYTES = 64
"""Telegram refuses inline buttons whose callback data is longer than this, in UTF-8 bytes."""

_MAX_RETRIES = 3
_ALLOWED_UPDATES = (Update.MESSAGE, Update.CHANNEL_POST, Update.CALLBACK_QUERY)
_HAVE_AIOLIMITER = importlib.util.find_spec("aiolimiter") is not None

# Loggers whose lines can carry the token: httpx logs each request URL at INFO, and PTB's bot
# logs its base URLs at DEBUG when built.
_TOKEN_LOGGERS = ("httpx", "telegram.Bot", "telegram.ext.ExtBot")

_T = TypeVar("_T")
_App = Application[Any, Any, Any, Any, Any, Any]


class _RedactToken(logging.Filter):
    """Replace the bot token in the records of the loggers it is added to."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self._token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self._token in message:
            record.msg = message.replace(self._token, "<token>")
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


class TelegramProvider:
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

    :meth:`start` can be called again after :meth:`stop`. Updates are handled one at a time,
    in order; an exception from the handler is logged and polling goes on.
    """

    def __init__(
        self,
        *,
        token: str,
        api_base_url: str | None = None,
        name: str = "telegram",
        poll_timeout: float = 10.0,
        max_send_rate: float = 30.0,
    ) -> None:
        if not token or not token.strip():
            raise ConfigError("the bot token is empty", source=f"providers.{name}", field="token")
        if not poll_timeout > 0:
            raise ConfigError("must be positive", source=f"providers.{name}", field="poll_timeout")
        self.name = name
        self.bare_commands = False
        self._token = token
        self._root = (api_base_url or DEFAULT_API_BASE_URL).rstrip("/")
        # Telegram takes whole seconds; 0 would turn long polling into a busy loop.
        self._poll_timeout = timedelta(seconds=max(1, round(poll_timeout)))
        if not max_send_rate > 0:
            raise ConfigError(
                "must be positive", source=f"providers.{name}", field="max_send_rate"
            )
        self._max_send_rate = max_send_rate
        self._app: _App | None = None
        self._on_inbound: OnInbound | None = None
        self._starting = False
        self._stopping = False
        self._redactor = _RedactToken(token)

    def __repr__(self) -> str:
        return f"TelegramProvider(name={self.name!r}, api_base_url={self._root!r})"

    @property
    def running(self) -> bool:
        """Whether :meth:`start` has returned and :meth:`stop` has not been called."""
        return self._app is not None and not (self._starting or self._stopping)

    async def start(self, on_inbound: OnInbound) -> None:
        """Check the token (getMe), start long polling, and return once updates flow.

        Raises:
            ConfigError: Telegram rejected the token.
            RuntimeError: the provider is already running.
            telegram.error.TelegramError: the API could not be reached or answered otherwise.
        """
        if self._app is not None:
            raise RuntimeError(f"{self.name}: provider is already running")
        self._redact_logs(True)
        app = self._build()
        # Claim the provider now: a second start() fails, and a handler that replies to the
        # very first update (which may arrive before start_polling returns) finds the bot.
        self._app, self._on_inbound, self._starting = app, on_inbound, True
        try:
            try:
                await app.initialize()
            except InvalidToken:
                # PTB's message quotes the token: raise our own, unchained.
                raise ConfigError(
                    "Telegram rejected the bot token",
                    source=f"providers.{self.name}",
                    field="token",
                    hint="check the token @BotFather gave you, and api_base_url",
                ) from None
            await app.start()
            if app.updater is None:  # the builder always makes one; this narrows the type
                raise RuntimeError(f"{self.name}: PTB built no updater")
            await app.updater.start_polling(
                poll_interval=0.0,
                timeout=self._poll_timeout,
                allowed_updates=_ALLOWED_UPDATES,
                error_callback=self._on_polling_error,
            )
        except BaseException:
            await self._teardown(app)
            self._app, self._on_inbound = None, None
            self._redact_logs(False)
            raise
        finally:
            self._starting = False
        _LOG.info("%s: polling started as @%s", self.name, app.bot.username)

    async def stop(self) -> None:
        """Stop polling, let the update in hand finish, close connections. Safe to call twice."""
        app = self._app
        if app is None or self._starting or self._stopping:
            return  # a failing start() cleans up after itself
        self._stopping = True
        try:
            await self._teardown(app)
        finally:
            self._app = None
            self._on_inbound = None
            self._stopping = False
            self._redact_logs(False)
        _LOG.info("%s: stopped", self.name)

    async def send(self, chat_id: str, text: str, *, buttons: Sequence[Button] = ()) -> str:
        """Send plain ``text`` with an optional row of inline buttons; return the message id.

        Raises:
            ValueError: a button's command is empty or over 64 bytes (Telegram's limit).
            RuntimeError: the provider is not running.
            telegram.error.TelegramError: Telegram refused the message.
        """
        markup = None
        if buttons:
            for button in buttons:
                size = len(button.command.encode())
                if not 1 <= size <= MAX_CALLBACK_DATA_BYTES:
                    raise ValueError(
                        f"button {button.label!r}: command is {size} bytes, Telegram allows "
                        f"1 to {MAX_CALLBACK_DATA_BYTES}"
                    )
            markup = InlineKeyboardMarkup(
                [[InlineKeyboardButton(b.label, callback_data=b.command) for b in buttons]]
            )
        bot = self._bot()
        message = await self._retrying(
            lambda: bot.send_message(chat_id=_chat_ref(chat_id), text=text, reply_markup=markup)
        )
        return str(message.message_id)

    async def dm_chat_id(self, user_id: str) -> str:
        """A Telegram user's private chat with the bot has the user's id."""
        return user_id

    async def edit(self, chat_id: str, message_id: str, text: str) -> None:
        """Replace a sent message's text and remove its buttons; "not modified" is success.

        Raises:
            RuntimeError: the provider is not running.
            telegram.error.TelegramError: Telegram refused the edit.
        """
        bot = self._bot()
        try:
            await self._retrying(
                lambda: bot.edit_message_text(
                    text=text, chat_id=_chat_ref(chat_id), message_id=int(message_id)
                )
            )
        except BadRequest as exc:
            if "message is not modified" not in exc.message.lower():
                raise

    # -- inbound -----------------------------------------------------------------------------

    async def _on_update(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        """Turn one update into an Inbound and hand it over; never let an error escape."""
        try:
            if update.callback_query is not None:
                inbound = await self._from_button(update.callback_query)
            elif update.message is not None:
                inbound = self._from_message(update.message)
            elif update.channel_post is not None:
                inbound = self._from_message(update.channel_post)
            else:
                inbound = None  # edits and every other kind of update are ignored
            if inbound is not None and self._on_inbound is not None:
                await self._on_inbound(inbound)
        except Exception:
            _LOG.exception("%s: handling update %s failed", self.name, update.update_id)

    def _from_message(self, message: Message) -> Inbound | None:
        kind = _chat_kind(message.chat)
        if kind is None or message.text is None:
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
            text=message.text,
            message_id=str(message.message_id),
            meta=meta,
            sent_at=message.date,
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
        # PTB retries with backoff; log without the message, which may quote a request.
        _LOG.warning("%s: polling failed (%s), retrying", self.name, type(exc).__name__)

    # -- plumbing ----------------------------------------------------------------------------

    def _build(self) -> _App:
        builder = (
            Application.builder()
            .token(self._token)
            .base_url(f"{self._root}/bot")
            .base_file_url(f"{self._root}/file/bot")
            .job_queue(None)
        )
        app: _App = (
            builder.rate_limiter(
                AIORateLimiter(overall_max_rate=self._max_send_rate, max_retries=_MAX_RETRIES)
            ).build()
            if _HAVE_AIOLIMITER
            else builder.build()
        )
        app.add_handler(TypeHandler(Update, self._on_update))
        return app

    def _redact_logs(self, on: bool) -> None:
        for name in _TOKEN_LOGGERS:
            logger = logging.getLogger(name)
            if on:
                logger.addFilter(self._redactor)
            else:
                logger.removeFilter(self._redactor)

    def _bot(self) -> Bot:
        if self._app is None:
            raise RuntimeError(f"{self.name}: provider is not running")
        bot: Bot = self._app.bot
        return bot

    async def _retrying(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """Run ``call``; without AIORateLimiter, wait out a 429 up to three times."""
        attempt = 0
        while True:
            try:
                return await call()
            except RetryAfter as exc:
                if _HAVE_AIOLIMITER or attempt >= _MAX_RETRIES:
                    raise
                attempt += 1
                delay = exc._retry_after.total_seconds()  # public attribute warns in PTB 22
                _LOG.info("%s: flood limit, retry %d in %.1f s", self.name, attempt, delay)
                await asyncio.sleep(delay)

    @staticmethod
    async def _teardown(app: _App) -> None:
        """Stop whatever of ``app`` is running and release its connections."""
        try:
            if app.updater is not None and app.updater.running:
                await app.updater.stop()
            if app.running:
                await app.stop()
        finally:
            await app.shutdown()
            # When initialize() failed after opening the HTTP clients, app.shutdown() does
            # nothing (the app never counted as initialized); the bot's own is idempotent.
            await app.bot.shutdown()
