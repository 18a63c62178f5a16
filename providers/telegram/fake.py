"""A loopback fake of the Telegram Bot API, for ``pairbot demo`` and the e2e tests.

It serves ``/bot{token}/{method}`` on 127.0.0.1 the way api.telegram.org does, so the real
python-telegram-bot runs against it unmodified (only the base URL changes). Tests and the demo
play the human side through the injection API (:meth:`FakeTelegramServer.dm`,
:meth:`~FakeTelegramServer.group_message`, :meth:`~FakeTelegramServer.press_button`) and read
what the bot did from the records (``sent``, ``edits``, ``callback_answers``, ``calls``).

Responses use the official shapes: ``{"ok": true, "result": ...}`` or
``{"ok": false, "error_code": ..., "description": ...}`` with the same HTTP status, plus
``parameters.retry_after`` on 429. It keeps one global message-id counter (Telegram's ids are
per chat, which the bot cannot tell apart here), and it lets any user press any button on any
message the bot sent, even one since edited, so tests can play stale and forged presses.

A bot cannot write first, and the fake refuses as the Bot API server does (tdlib/telegram-bot-api
Client.cpp, tdlib/td MessagesManager.cpp): a private chat takes the bot's messages only once its
user wrote to the bot there (pressed Start: :meth:`FakeTelegramServer.dm`, or
:meth:`~FakeTelegramServer.started_before`), and none while they have blocked it
(:meth:`~FakeTelegramServer.block`). Users write text or media in the Bot API's shapes
(:meth:`~FakeTelegramServer.dm_media`: photo, document, sticker, voice).

Updates go out by getUpdates, or, once setWebhook registered a URL, by POSTing each Update to
it (with ``X-Telegram-Bot-Api-Secret-Token``), in order, retried until answered 2xx; while a
webhook is set getUpdates is refused with 409 (tdlib/telegram-bot-api Client.cpp,
WebhookActor.cpp: see ``_set_webhook`` and ``_post_update``).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
from aiohttp import web

from bot.core.clock import Clock
from providers.fakebase import DemoSpec, FakeDemo, Written, free_port, wait_until
from providers.fakes_http import LoopbackFake, Webhooks, call_params

JsonDict = dict[str, Any]

DEFAULT_TOKEN = "123456:fake-telegram-token"  # noqa: S105 (the fake's, not a secret)
"""The token a :class:`FakeTelegramServer` accepts unless told otherwise (not a secret)."""

# sendMessage: "Text of the message to be sent, 1-4096 characters after entities parsing",
# counted in Unicode code points as Python's len counts (td/telegram/MessageContent.cpp:
# utf8_length(text) > message_text_length_max -> "Message is too long").
_MAX_TEXT = 4096
_MAX_CALLBACK_DATA = 64

# The refusals of a private chat (telegram-bot-api Client.cpp; tdlib/td MessagesManager.cpp
# process_send_message_fail_error turns the server's PEER_ID_INVALID for a bot writing to a
# user who never wrote to it into "Bot can't initiate conversation with a user", 403; the Bot
# API server turns USER_IS_BLOCKED into "bot was blocked by the user", 403, for every method;
# sendChatAction's error goes through no such mapping: PEER_ID_INVALID stays, 400).
_NOT_STARTED = "Forbidden: bot can't initiate conversation with a user"
_BLOCKED = "Forbidden: bot was blocked by the user"
_NOT_STARTED_ACTION = "Bad Request: PEER_ID_INVALID"
_CHAT_NOT_FOUND = "Bad Request: chat not found"

Media = Literal["photo", "document", "sticker", "voice"]
"""What :meth:`FakeTelegramServer.dm_media` can send."""

_FILE = {"file_id": "AgACAgQAAxkBAAIB", "file_unique_id": "AQADzbAxG"}
# The Message fields of each kind, with the fields the Bot API marks required
# (core.telegram.org/bots/api: Message.photo "Array of PhotoSize", .document, .sticker, .voice;
# PhotoSize: file_id, file_unique_id, width, height; Sticker also type, is_animated, is_video;
# Voice: duration), as PTB 22's de_json reads them (telegram/_files/*.py). A sticker carries
# no caption; the others take one (Message.caption, "0-1024 characters").
_MEDIA: dict[str, object] = {
    "photo": [
        {**_FILE, "width": 90, "height": 67, "file_size": 1237},
        {**_FILE, "file_unique_id": "AQADzbAxG-y", "width": 320, "height": 240},
    ],
    "document": {**_FILE, "file_name": "cv.pdf", "mime_type": "application/pdf"},
    "sticker": {
        **_FILE,
        "type": "regular",
        "width": 512,
        "height": 512,
        "is_animated": False,
        "is_video": False,
        "emoji": "\N{WAVING HAND SIGN}",
    },
    "voice": {**_FILE, "duration": 3, "mime_type": "audio/ogg", "file_size": 5012},
}

# PTB posts form fields and JSON-encodes every value that is not a string, so a field is
# decoded as JSON unless it is one of these, whose values are text ("42" stays "42").
_STRING_FIELDS = frozenset(
    {
        "text",
        "caption",
        "parse_mode",
        "callback_query_id",
        "inline_message_id",
        "url",
        "language_code",
        "action",
        "business_connection_id",
        "message_effect_id",
        "secret_token",
    }
)

_UPDATE_KINDS = frozenset(
    {"message", "edited_message", "channel_post", "edited_channel_post", "callback_query"}
)

# Webhooks, as tdlib/telegram-bot-api answers them (telegram-bot-api/Client.cpp at 01a3679:
# process_get_updates_query, process_set_webhook_query, do_set_webhook, JsonWebhookInfo;
# WebhookActor.cpp: the HTTPS and port checks, the header, and what counts as delivered).
_WEBHOOK_ACTIVE = (
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to "
    "delete the webhook first"
)
_TERMINATED = (
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance "
    "is running"
)
_BAD_URL = "Bad Request: invalid webhook URL specified"
_SECRET_TOO_LONG = "Bad Request: secret token is too long"  # noqa: S105 (an error text)
_SECRET_CHARACTERS = "Bad Request: secret token contains unallowed characters"  # noqa: S105 (an error text)
_NOT_HTTPS = "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
_BAD_PORT = "Bad Request: bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443"
_WEBHOOK_PORTS = frozenset({80, 88, 443, 8443})
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*\Z")  # td::is_base64url_characters; "" is no secret
_URL = re.compile(
    r"(?:(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://)?(?P<host>[^/:?#]+)(?::(?P<port>\d+))?"
)
_DEFAULT_MAX_CONNECTIONS = 40  # setWebhook max_connections: "Defaults to 40"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 (a header name)


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
"""The HTTP reason phrases the Bot API server quotes in "Wrong response from the webhook"."""


class _ApiError(Exception):
    """An error answer of the Bot API, raised inside a method and turned into a response."""

    def __init__(self, code: int, description: str, *, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.retry_after = retry_after


def _error_response(error: _ApiError) -> web.Response:
    body: JsonDict = {"ok": False, "error_code": error.code, "description": error.description}
    if error.retry_after is not None:
        body["parameters"] = {"retry_after": error.retry_after}
    return web.json_response(body, status=error.code)


def _decode(key: str, value: object) -> object:
    """Undo PTB's form encoding of one field: JSON for everything but known text fields."""
    if not isinstance(value, str) or key in _STRING_FIELDS:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value  # a bare string such as "@channelname"


def _text(params: Mapping[str, Any], key: str, what: str) -> str:
    value = params.get(key)
    if value is None or value == "":
        raise _ApiError(400, f"Bad Request: {what} is empty")
    return str(value)


def _int(params: Mapping[str, Any], key: str) -> int:
    value = params.get(key)
    if value is None or value == "":
        raise _ApiError(400, f"Bad Request: {key} is empty")
    if isinstance(value, bool) or not isinstance(value, int):
        raise _ApiError(400, f"Bad Request: invalid {key} specified")
    return value


def _check_markup(markup: object) -> JsonDict | None:
    """Validate an inline keyboard the way Telegram does; return it as a dict (or None)."""
    if markup is None:
        return None
    if not isinstance(markup, dict) or not isinstance(markup.get("inline_keyboard"), list):
        raise _ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
    for row in markup["inline_keyboard"]:
        for button in row:
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= _MAX_CALLBACK_DATA:
                raise _ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
    return markup


class FakeTelegramServer(LoopbackFake):
    """A Telegram Bot API on 127.0.0.1 that one bot talks to and the tests play users on.

    Use as ``async with FakeTelegramServer() as fake:`` or call :meth:`start` and
    :meth:`stop`; point the SDK at :attr:`base_url` (PTB's base_url is it + ``/bot``).
    Everything runs on the caller's event loop.

    Attributes:
        token: the only bot token the server accepts; any other answers 401 like Telegram.
        sent: every message the bot sent, in order, as
            ``{"chat_id", "text", "message_id", "reply_markup", "parse_mode", "received_at"}``
            (``received_at`` is the ``time.perf_counter()`` of arrival, for benchmarks).
        edits: every successful edit, as ``{"method", "chat_id", "message_id", "text",
            "reply_markup"}`` (text and keyboard as they are after the edit).
        callback_answers: every answerCallbackQuery, as
            ``{"callback_query_id", "text", "show_alert"}``.
        calls: every authorised API call in order, as ``(method, decoded params)``.
        commands: the list last given to setMyCommands.
    """

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        port: int = 0,
        bot_id: int = 123456,
        bot_username: str = "pairbot_demo_bot",
        bot_name: str = "Pairbot Demo",
        clock: Clock | None = None,
        allow_http_webhooks: bool = False,
    ) -> None:
        super().__init__(port=port, clock=clock)
        self.token = token
        # TEST-ONLY switch. api.telegram.org posts only to https:// on ports 80, 88, 443 or
        # 8443 (WebhookActor.cpp refuses the rest, and so does this fake by default). A test
        # cannot serve TLS on such a port on 127.0.0.1, so it turns this on to let setWebhook
        # take an http:// loopback URL on any port: what a self-hosted telegram-bot-api
        # started with --local does (the same checks are skipped in local mode). Every other
        # setWebhook check (URL syntax, secret_token) still applies.
        self.allow_http_webhooks = allow_http_webhooks
        self.webhook: JsonDict | None = None
        """The registered webhook (``url``, ``secret_token``, ``max_connections``,
        ``allowed_updates``), or None: what a test reads, as getWebhookInfo never tells the
        secret."""
        self.deliveries: list[JsonDict] = []
        """Every webhook POST the fake made, as ``{"update_id", "status"}`` (None: no answer)."""
        self._webhooks: Webhooks[int] = Webhooks(
            "FakeTelegramServer",
            self._post_update,
            ready=lambda: self.webhook is not None,
            timeout=5,
        )
        self._to_post: set[int] = set()
        self._next_set_webhook = 0.0  # loop time before which setWebhook with a URL is 429
        self._last_error: tuple[int, str] | None = None
        self._acks_to_lose = 0
        self.edits: list[JsonDict] = []
        self.callback_answers: list[JsonDict] = []
        self.calls: list[tuple[str, JsonDict]] = []
        self.commands: list[JsonDict] = []
        self.bot_user: JsonDict = {
            "id": bot_id,
            "is_bot": True,
            "first_name": bot_name,
            "username": bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self._updates: list[JsonDict] = []
        self._new_update = asyncio.Event()
        self._closing = False
        self._next_update_id = 1
        self._next_message_id = 1
        self._next_query_id = 1
        self._messages: dict[int, JsonDict] = {}
        self._users: dict[int, JsonDict] = {}
        self._chats: dict[int, JsonDict] = {}
        self._open_queries: set[str] = set()
        self._started: set[int] = set()  # users who wrote to the bot in private
        self._blocked: set[int] = set()
        self._fail_sends = 0
        self._fail_retry_after = 1
        self._served: Counter[int] = Counter()  # contract (issue 10): lose_next_poll_answers
        self._polls_to_lose = 0  # contract (issue 10)
        self._poll_turn = 0
        self.conflicts = 0
        """How many long polls a getUpdates from elsewhere ended while their client still
        waited (Telegram's 409 Conflict): two consumers of one bot."""
        self._methods: dict[str, Callable[[JsonDict], Awaitable[object]]] = {
            "getme": self._get_me,
            "setwebhook": self._set_webhook,
            "deletewebhook": self._delete_webhook,
            "getwebhookinfo": self._get_webhook_info,
            "getupdates": self._get_updates,
            "sendmessage": self._send_message,
            "editmessagetext": self._edit_message_text,
            "editmessagereplymarkup": self._edit_message_reply_markup,
            "answercallbackquery": self._answer_callback_query,
            "setmycommands": self._set_my_commands,
            "deletemycommands": self._delete_my_commands,
            "getmycommands": self._get_my_commands,
            "sendchataction": self._send_chat_action,
            "getchat": self._get_chat,
            "close": self._true,
            "logout": self._true,
        }

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start serving on 127.0.0.1 (port 0 picks a free port; read :attr:`base_url`)."""
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        # Long polls are woken at stop, so the base's short grace period is enough.
        await self._serve(app)
        self._closing = False
        await self._webhooks.start()
        self._post_pending()

    async def stop(self) -> None:
        """Wake held long polls, stop posting webhooks, stop serving and free the port. Safe
        to call twice."""
        self._closing = True
        self._new_update.set()
        await self._webhooks.stop()
        self._to_post.clear()
        await self._http.stop()

    # -- injection: what users do ------------------------------------------------------------

    def dm(
        self,
        user_id: int,
        text: str,
        *,
        first_name: str = "",
        last_name: str = "",
        username: str | None = None,
    ) -> JsonDict:
        """Queue a private-chat message from ``user_id`` to the bot; return the Update.

        Writing (``/start`` is what a client's Start button sends) opens the chat to the bot
        and ends a block (a blocked bot's chat offers only Restart, which unblocks it)."""
        user, chat = self._private(user_id, first_name, last_name, username)
        return self.queue_update({"message": self._new_message(chat, text, sender=user)})

    def dm_media(
        self,
        user_id: int,
        kind: Media,
        *,
        caption: str | None = None,
        first_name: str = "",
    ) -> JsonDict:
        """Queue a private-chat message carrying a photo, a document, a sticker or a voice
        note, with a caption or none, and no ``text``; return the Update.

        Raises:
            ValueError: a caption on a sticker (the Bot API has none).
        """
        if kind == "sticker" and caption is not None:
            raise ValueError("a sticker carries no caption")
        user, chat = self._private(user_id, first_name, "", None)
        message = self._new_message(chat, None, sender=user)
        message[kind] = copy.deepcopy(_MEDIA[kind])
        if caption is not None:
            message["caption"] = caption
        return self.queue_update({"message": message})

    def started_before(self, *user_ids: int) -> None:
        """These users pressed Start before this fake ran: their chats are open, and no update
        is queued (it was read long ago)."""
        self._started.update(user_ids)

    def block(self, user_id: int) -> None:
        """``user_id`` blocks the bot: its messages to them are refused until they write."""
        self._blocked.add(user_id)

    def group_message(
        self,
        chat_id: int,
        user_id: int,
        text: str,
        *,
        chat_type: str = "group",
        title: str = "Group",
        first_name: str = "",
        last_name: str = "",
        username: str | None = None,
    ) -> JsonDict:
        """Queue a message from ``user_id`` in a group or supergroup; return the Update."""
        if chat_type not in ("group", "supergroup"):
            raise ValueError(f"chat_type must be 'group' or 'supergroup', not {chat_type!r}")
        user = self._remember_user(user_id, first_name, last_name, username)
        chat: JsonDict = {"id": chat_id, "type": chat_type, "title": title}
        self._chats[chat_id] = chat
        return self.queue_update({"message": self._new_message(chat, text, sender=user)})

    def channel_post(
        self, chat_id: int, text: str, *, title: str = "Channel", username: str | None = None
    ) -> JsonDict:
        """Queue a post in a channel the bot is in (channel posts have no sender user)."""
        chat: JsonDict = {"id": chat_id, "type": "channel", "title": title}
        if username:
            chat["username"] = username
        self._chats[chat_id] = chat
        message = self._new_message(chat, text, sender=None)
        message["sender_chat"] = dict(chat)
        return self.queue_update({"channel_post": message})

    def press_button(self, user_id: int, message_id: int, data: str) -> str:
        """Queue ``user_id`` pressing an inline button with ``data`` on a message the bot sent.

        Returns the callback query id, which the bot must answer with answerCallbackQuery.

        Raises:
            KeyError: the bot sent no message with this id.
        """
        message = self._messages.get(message_id)
        if message is None or message["from"]["id"] != self.bot_user["id"]:
            raise KeyError(f"the bot sent no message with id {message_id}")
        query_id = str(self._next_query_id)
        self._next_query_id += 1
        self._open_queries.add(query_id)
        user = self._users.get(user_id) or {"id": user_id, "is_bot": False, "first_name": ""}
        query = {
            "id": query_id,
            "from": dict(user),
            "message": copy.deepcopy(message),
            "chat_instance": str(message["chat"]["id"]),
            "data": data,
        }
        self.queue_update({"callback_query": query})
        return query_id

    def queue_update(self, update: Mapping[str, Any]) -> JsonDict:
        """Queue any Update body (e.g. a recorded payload); an ``update_id`` is assigned."""
        body = copy.deepcopy(dict(update))
        body["update_id"] = self._next_update_id
        self._next_update_id += 1
        self._updates.append(body)
        self._new_update.set()
        self._post_pending()
        return body

    def fail_next_sends(self, n: int, retry_after: int = 1) -> None:
        """Make the next ``n`` sendMessage calls answer 429 with ``retry_after`` seconds."""
        self._fail_sends = n
        self._fail_retry_after = retry_after

    # -- reading what the bot did ------------------------------------------------------------

    def messages_to(self, chat_id: int | str) -> list[str]:
        """Return the texts the bot sent to ``chat_id``, in order."""
        return [m["text"] for m in self.sent if str(m["chat_id"]) == str(chat_id)]

    def message(self, message_id: int | str) -> JsonDict:
        """Return a copy of a message as it is now (after edits). Raises KeyError if unknown."""
        return copy.deepcopy(self._messages[int(message_id)])

    def methods_called(self) -> list[str]:
        """Return the API method names called so far, in order."""
        return [method for method, _ in self.calls]

    async def wait_for_call(
        self,
        method: str,
        *,
        count: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109 (a deadline for polling)
    ) -> list[JsonDict]:
        """Wait until ``method`` was called ``count`` times; return the params of each call."""

        def params() -> list[JsonDict]:
            return [p for m, p in self.calls if m.lower() == method.lower()]

        try:
            await self.wait_until(lambda: len(params()) >= count, timeout=timeout)
        except TimeoutError:
            raise TimeoutError(
                f"{method} called {len(params())} of {count} times within {timeout}s"
            ) from None
        return params()

    # -- contract capabilities (issue 10: tests/providers/test_contract.py) -------------------

    def lose_next_poll_answers(self, n: int) -> None:
        """Cut the connection of the next ``n`` getUpdates answers that carry updates, after
        the fake has sent them: the bot never reads them, they stay unconfirmed, and the next
        getUpdates (with the same offset) is answered with them again.

        Bot API, getUpdates: "An update is considered confirmed as soon as getUpdates is
        called with an offset higher than its update_id" (core.telegram.org/bots/api).
        """
        self._polls_to_lose = n

    def times_served(self, update_id: int) -> int:
        """How many getUpdates answers carried the update (lost answers included)."""
        return self._served[update_id]

    @property
    def unconfirmed(self) -> int:
        """Updates queued that no getUpdates offset has confirmed yet."""
        return len(self._updates)

    @property
    def unserved(self) -> int:
        """Updates queued that no getUpdates answer has carried yet."""
        return sum(1 for update in self._updates if not self._served[update["update_id"]])

    def _poll_lost(self, request: web.Request, result: object) -> bool:
        if not isinstance(result, list) or not result:
            return False
        self._served.update(update["update_id"] for update in result)
        if self._polls_to_lose <= 0:
            return False
        self._polls_to_lose -= 1
        if request.transport is not None:
            request.transport.close()
        return True

    # -- webhooks ----------------------------------------------------------------------------

    def lose_next_webhook_acks(self, n: int) -> None:
        """The next ``n`` webhook POSTs answered 2xx count as failed, as if the answer never
        came back (WebhookActor.cpp: a connection closed before the response is "Webhook
        connection closed", and the update is posted again): the same update, same
        update_id, is delivered again."""
        self._acks_to_lose = n

    def allow_set_webhook_now(self) -> None:
        """Forget the last setWebhook's time: the next one is not held to one a second."""
        self._next_set_webhook = 0.0

    def times_posted(self, update_id: int) -> int:
        """How many webhook POSTs carried the update (failed ones included)."""
        return sum(1 for d in self.deliveries if d["update_id"] == update_id)

    async def post_update(self, update: Mapping[str, Any], *, secret: str | None) -> int:
        """POST ``update`` to the registered webhook once, now, with ``secret`` as the secret
        header (None: no header), and return the HTTP status: a forged or stray POST, beside
        Telegram's own deliveries.

        Raises:
            RuntimeError: no webhook is set.
        """
        if self.webhook is None:
            raise RuntimeError("no webhook is set")
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers[SECRET_HEADER] = secret
        session = self._webhooks.session
        raw = json.dumps(update).encode()
        async with session.post(self.webhook["url"], data=raw, headers=headers) as resp:
            await resp.read()
            return resp.status

    def _post_pending(self) -> None:
        """Queue every pending update for the webhook, if one is set (each once)."""
        if self.webhook is None:
            return
        for update in self._updates:
            if update["update_id"] not in self._to_post:
                self._to_post.add(update["update_id"])
                self._webhooks.put(update["update_id"])

    async def _post_update(self, update_id: int) -> None:
        """POST one update until it is answered 2xx, the webhook is deleted, or the update is
        dropped; delivered, it is gone (as getUpdates' offset confirms one).

        WebhookActor.cpp: a 2xx answer is success; any other ("Wrong response from the
        webhook: 403 Forbidden"), or none, is recorded as the last error (getWebhookInfo
        ``last_error_date`` and ``last_error_message``) and the update is posted again later
        (the real server backs off up to minutes; the fake after 0.05 s, doubling to 0.5 s).
        Updates go out one at a time, in order (the fake plays max_connections 1).
        """
        delay = 0.05
        try:
            while (hook := self.webhook) is not None:
                update = next((u for u in self._updates if u["update_id"] == update_id), None)
                if update is None:
                    return
                kinds = hook["allowed_updates"] or _UPDATE_KINDS
                if kinds.isdisjoint(update):
                    self._updates.remove(update)  # not asked for: never sent
                    return
                status: int | None = None
                try:
                    status = await self.post_update(update, secret=hook["secret_token"] or None)
                except (aiohttp.ClientError, TimeoutError, OSError):
                    self._last_error = (self._now(), "Webhook connection closed")
                self.deliveries.append({"update_id": update_id, "status": status})
                if status is not None and 200 <= status <= 299:
                    if self._acks_to_lose == 0:
                        self._updates.remove(update)
                        return
                    self._acks_to_lose -= 1
                    self._last_error = (self._now(), "Webhook connection closed")
                elif status is not None:
                    reason = _REASONS.get(status, "")
                    self._last_error = (
                        self._now(),
                        f"Wrong response from the webhook: {status} {reason}".rstrip(),
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
        finally:
            self._to_post.discard(update_id)

    # -- HTTP --------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _error_response(_ApiError(401, "Unauthorized"))
        method = request.match_info["method"]
        # PTB JSON-encodes every value that is not text: undo it field by field.
        raw = await call_params(request)
        params = {key: _decode(key, value) for key, value in raw.items()}
        self.calls.append((method, params))
        handler = self._methods.get(method.lower())
        if handler is None:
            return _error_response(_ApiError(404, "Not Found"))
        try:
            if handler == self._get_updates:
                result: object = await self._get_updates(params, request)
            else:
                result = await handler(params)
        except _ApiError as error:
            return _error_response(error)
        if handler == self._get_updates and self._poll_lost(request, result):  # contract
            return web.Response(status=502)  # never reaches the bot: the connection is cut
        return web.json_response({"ok": True, "result": result})

    # -- Bot API methods ---------------------------------------------------------------------

    async def _true(self, _params: JsonDict) -> bool:
        return True

    async def _get_me(self, _params: JsonDict) -> JsonDict:
        return dict(self.bot_user)

    async def _set_webhook(self, params: JsonDict) -> bool:
        """setWebhook (Client.cpp process_set_webhook_query, do_set_webhook; WebhookActor.cpp
        for the HTTPS and port checks, which the real server makes when it first connects
        and answers as "bad webhook: ..."). An empty ``url`` deletes the webhook."""
        url = str(params.get("url") or "")
        if url:
            # One setWebhook with a URL a second, answered or not, the same URL or another:
            # the next earlier is "Too Many Requests: retry after 1" (process_set_webhook_query,
            # next_allowed_set_webhook_time_; Query.cpp set_retry_after_error). Timed by the
            # event loop's clock, not the fake's (tests freeze that one).
            now = asyncio.get_running_loop().time()
            if now < self._next_set_webhook:
                raise _ApiError(429, "Too Many Requests: retry after 1", retry_after=1)
            self._next_set_webhook = now + 1
        if params.get("drop_pending_updates") is True:
            self._updates.clear()
        if not url:
            self.webhook = None
            return True
        found = _URL.match(url)
        scheme = (found.group("scheme") or "https").lower() if found else ""
        if found is None or scheme not in ("http", "https"):
            raise _ApiError(400, _BAD_URL)
        secret = str(params.get("secret_token") or "")
        if len(secret) > 256:
            raise _ApiError(400, _SECRET_TOO_LONG)
        if _BASE64URL.match(secret) is None:
            raise _ApiError(400, _SECRET_CHARACTERS)
        if not self.allow_http_webhooks:
            port = int(found.group("port") or (443 if scheme == "https" else 80))
            if scheme != "https":
                raise _ApiError(400, _NOT_HTTPS)
            if port not in _WEBHOOK_PORTS:
                raise _ApiError(400, _BAD_PORT)
        allowed = params.get("allowed_updates")
        previous = self.webhook["allowed_updates"] if self.webhook is not None else None
        self.webhook = {
            "url": url,
            "secret_token": secret,
            "max_connections": params.get("max_connections") or _DEFAULT_MAX_CONNECTIONS,
            # "If not specified, the previous setting will be used"; [] means the default set.
            "allowed_updates": frozenset(allowed) if isinstance(allowed, list) else previous,
        }
        self._last_error = None
        self._new_update.set()  # a long poll held now ends (the real one: "terminated")
        self._post_pending()
        self._webhooks.wake()
        return True

    async def _delete_webhook(self, params: JsonDict) -> bool:
        """deleteWebhook: the pending updates stay for getUpdates unless dropped."""
        if params.get("drop_pending_updates") is True:
            self._updates.clear()
        self.webhook = None
        return True

    async def _get_webhook_info(self, _params: JsonDict) -> JsonDict:
        """getWebhookInfo, as JsonWebhookInfo stores it: never the secret token."""
        hook = self.webhook
        info: JsonDict = {
            "url": hook["url"] if hook else "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        if self._last_error is not None:
            info["last_error_date"], info["last_error_message"] = self._last_error
        if hook is not None:
            info["max_connections"] = hook["max_connections"]
            info["ip_address"] = "127.0.0.1"
            if hook["allowed_updates"]:
                info["allowed_updates"] = sorted(hook["allowed_updates"])
        return info

    async def _get_updates(
        self, params: JsonDict, request: web.Request | None = None
    ) -> list[JsonDict]:
        if self.webhook is not None:
            raise _ApiError(409, _WEBHOOK_ACTIVE)
        # One poller per bot: a getUpdates ends the long poll still held, which is answered
        # 409 (telegram-bot-api Client.cpp: "Conflict: terminated by other getUpdates
        # request; make sure that only one bot instance is running").
        self._poll_turn += 1
        turn = self._poll_turn
        self._new_update.set()
        offset = params.get("offset")
        if isinstance(offset, int) and offset > 0:
            # Telegram forgets every update older than the offset: that is the ack.
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        allowed = params.get("allowed_updates")
        kinds = frozenset(allowed) if isinstance(allowed, list) and allowed else _UPDATE_KINDS
        limit = params.get("limit")
        limit = limit if isinstance(limit, int) and 1 <= limit <= 100 else 100
        timeout = params.get("timeout")
        timeout = float(timeout) if isinstance(timeout, int | float) else 0.0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self.webhook is not None:  # set while this poll was held (abort_long_poll)
                raise _ApiError(409, "Conflict: terminated by setWebhook request")
            if turn != self._poll_turn:
                transport = request.transport if request is not None else None
                if transport is not None and not transport.is_closing():
                    self.conflicts += 1  # a poller still waiting: a second consumer
                raise _ApiError(409, _TERMINATED)
            ready = [u for u in self._updates if not kinds.isdisjoint(u)]
            remaining = deadline - loop.time()
            if ready or remaining <= 0 or self._closing:
                return copy.deepcopy(ready[:limit])
            self._new_update.clear()
            try:
                await asyncio.wait_for(self._new_update.wait(), remaining)
            except TimeoutError:
                pass

    async def _send_message(self, params: JsonDict) -> JsonDict:
        if self._fail_sends > 0:
            self._fail_sends -= 1
            retry = self._fail_retry_after
            raise _ApiError(429, f"Too Many Requests: retry after {retry}", retry_after=retry)
        chat = self._chat(params.get("chat_id"))
        self._check_writable(chat, not_started=(403, _NOT_STARTED))
        text = _text(params, "text", "message text")
        if len(text) > _MAX_TEXT:
            raise _ApiError(400, "Bad Request: message is too long")
        markup = _check_markup(params.get("reply_markup"))
        message = self._new_message(chat, text, sender=self.bot_user)
        if markup is not None:
            message["reply_markup"] = markup
        self.sent.append(
            {
                "chat_id": chat["id"],
                "text": text,
                "message_id": message["message_id"],
                "reply_markup": copy.deepcopy(markup),
                "parse_mode": params.get("parse_mode"),
                "received_at": time.perf_counter(),
            }
        )
        return copy.deepcopy(message)

    async def _edit_message_text(self, params: JsonDict) -> JsonDict:
        message = self._editable(params)
        text = _text(params, "text", "text")
        markup = _check_markup(params.get("reply_markup"))
        if message["text"] == text and message.get("reply_markup") == markup:
            raise _ApiError(
                400,
                "Bad Request: message is not modified: specified new message content and "
                "reply markup are exactly the same as a current content and reply markup "
                "of the message",
            )
        message["text"] = text
        return self._apply_edit("editMessageText", message, markup)

    async def _edit_message_reply_markup(self, params: JsonDict) -> JsonDict:
        message = self._editable(params)
        markup = _check_markup(params.get("reply_markup"))
        if message.get("reply_markup") == markup:
            raise _ApiError(
                400,
                "Bad Request: message is not modified: specified new message content and "
                "reply markup are exactly the same as a current content and reply markup "
                "of the message",
            )
        return self._apply_edit("editMessageReplyMarkup", message, markup)

    async def _answer_callback_query(self, params: JsonDict) -> bool:
        query_id = _text(params, "callback_query_id", "callback_query_id")
        if query_id not in self._open_queries:
            raise _ApiError(
                400,
                "Bad Request: query is too old and response timeout expired or query ID is "
                "invalid",
            )
        self._open_queries.discard(query_id)
        self.callback_answers.append(
            {
                "callback_query_id": query_id,
                "text": params.get("text"),
                "show_alert": bool(params.get("show_alert", False)),
            }
        )
        return True

    async def _set_my_commands(self, params: JsonDict) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise _ApiError(400, "Bad Request: can't parse commands JSON object")
        self.commands = commands
        return True

    async def _delete_my_commands(self, _params: JsonDict) -> bool:
        self.commands = []
        return True

    async def _get_my_commands(self, _params: JsonDict) -> list[JsonDict]:
        return copy.deepcopy(self.commands)

    async def _send_chat_action(self, params: JsonDict) -> bool:
        chat = self._chat(params.get("chat_id"))
        self._check_writable(chat, not_started=(400, _NOT_STARTED_ACTION))
        _text(params, "action", "action")
        return True

    async def _get_chat(self, params: JsonDict) -> JsonDict:
        chat = self._chat(params.get("chat_id"))
        no_gifts = dict.fromkeys(
            (
                "unlimited_gifts",
                "limited_gifts",
                "unique_gifts",
                "premium_subscription",
                "gifts_from_channels",
            ),
            False,
        )
        # The fields ChatFullInfo requires besides the Chat ones.
        return {
            **chat,
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": no_gifts,
        }

    # -- helpers -----------------------------------------------------------------------------

    def _now(self) -> int:
        return int(self._clock.now().timestamp())

    def _remember_user(
        self, user_id: int, first_name: str, last_name: str, username: str | None
    ) -> JsonDict:
        user: JsonDict = {"id": user_id, "is_bot": False, "first_name": first_name}
        if last_name:
            user["last_name"] = last_name
        if username:
            user["username"] = username
        self._users[user_id] = user
        return user

    def _private(
        self, user_id: int, first_name: str, last_name: str, username: str | None
    ) -> tuple[JsonDict, JsonDict]:
        """The user and their private chat, which they just wrote in: open to the bot."""
        user = self._remember_user(user_id, first_name, last_name, username)
        chat: JsonDict = {"id": user_id, "type": "private", "first_name": first_name}
        if last_name:
            chat["last_name"] = last_name
        if username:
            chat["username"] = username
        self._chats[user_id] = chat
        self._started.add(user_id)
        self._blocked.discard(user_id)
        return user, chat

    def _check_writable(self, chat: JsonDict, *, not_started: tuple[int, str]) -> None:
        """Refuse a private chat its user has not started or has blocked."""
        if chat["type"] != "private":
            return
        if chat["id"] in self._blocked:
            raise _ApiError(403, _BLOCKED)
        if chat["id"] not in self._started:
            raise _ApiError(*not_started)

    def _new_message(
        self, chat: JsonDict, text: str | None, *, sender: JsonDict | None
    ) -> JsonDict:
        message: JsonDict = {
            "message_id": self._next_message_id,
            "date": self._now(),
            "chat": dict(chat),
        }
        if text is not None:
            message["text"] = text
        self._next_message_id += 1
        if sender is not None:
            message["from"] = dict(sender)
        if text is not None and text.startswith("/"):
            command = text.split(maxsplit=1)[0]
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        self._messages[message["message_id"]] = message
        return message

    def _chat(self, chat_id: object) -> JsonDict:
        """Return the chat ``chat_id`` names: a group is made up if the fake has not seen it
        yet; a user's private chat is found once the bot has met the user (in a group too)
        or they pressed Start, else "chat not found" (telegram-bot-api Client.cpp,
        check_chat: a user it has no access to is looked up and not found)."""
        if chat_id is None or chat_id == "":
            raise _ApiError(400, "Bad Request: chat_id is empty")
        if isinstance(chat_id, bool) or not isinstance(chat_id, int):
            raise _ApiError(400, _CHAT_NOT_FOUND)
        known = self._chats.get(chat_id)
        if known is not None:
            return known
        if chat_id > 0:
            if chat_id not in self._users and chat_id not in self._started:
                raise _ApiError(400, _CHAT_NOT_FOUND)
            first_name = self._users.get(chat_id, {}).get("first_name", "")
            return {"id": chat_id, "type": "private", "first_name": first_name}
        return {"id": chat_id, "type": "supergroup", "title": "Group"}

    def _editable(self, params: JsonDict) -> JsonDict:
        chat = self._chat(params.get("chat_id"))
        message = self._messages.get(_int(params, "message_id"))
        if message is None or message["chat"]["id"] != chat["id"]:
            raise _ApiError(400, "Bad Request: message to edit not found")
        if message.get("from", {}).get("id") != self.bot_user["id"]:
            raise _ApiError(400, "Bad Request: message can't be edited")
        return message

    def _apply_edit(self, method: str, message: JsonDict, markup: JsonDict | None) -> JsonDict:
        if markup is None:
            message.pop("reply_markup", None)  # an edit without a keyboard removes it
        else:
            message["reply_markup"] = markup
        message["edit_date"] = self._now()
        self.edits.append(
            {
                "method": method,
                "chat_id": message["chat"]["id"],
                "message_id": message["message_id"],
                "text": message["text"],
                "reply_markup": copy.deepcopy(markup),
            }
        )
        return copy.deepcopy(message)


TELEGRAM = DemoSpec(
    provider="telegram",
    owner_id="111111111",
    user_id=lambda n: str(4000 + n),  # Telegram user ids are numbers
    fake=FakeTelegramServer,
    config=lambda fake: {"token": fake.token, "api_base_url": fake.base_url},
)
"""Telegram's demo people, and the block that points python-telegram-bot at the fake."""


class TelegramDemo(FakeDemo[FakeTelegramServer], spec=TELEGRAM):
    """The Telegram fake as :class:`providers.fakebase.DemoPlatform` (people, not API calls).

    The owner pressed Start before the demo (as the set-up guide says): notices reach them.
    """

    def __init__(self, *, clock: Clock | None = None) -> None:
        super().__init__(clock=clock)
        self.fake.started_before(int(self.owner_id))

    def dm(self, user_id: str, text: str, *, name: str) -> None:
        """A private message to the bot."""
        self.fake.dm(int(user_id), text, first_name=name)

    def texts_to(self, user_id: str) -> list[str]:
        """What the bot sent to that user's private chat."""
        return self.fake.messages_to(int(user_id))

    # -- contract capabilities (issue 10: providers.ContractPlatform.fake) -------------------
    # Played the Bot API's way (core.telegram.org/bots/api): updates come by getUpdates.

    def dm_written(self, user_id: str, text: str, *, name: str) -> Written:
        """A private message; its Update's update_id (the provider's message id: unique per
        bot, where Message.message_id counts per chat) and Message.date (Unix seconds)."""
        update = self.fake.dm(int(user_id), text, first_name=name)
        sent_at = datetime.fromtimestamp(update["message"]["date"], UTC)
        return Written(str(update["update_id"]), sent_at)

    async def dm_delivered_twice(self, user_id: str, text: str, *, name: str) -> None:
        """The getUpdates answer carrying the message is lost on the way, so Telegram sends
        the same update (same update_id) to the next getUpdates (see
        :meth:`FakeTelegramServer.lose_next_poll_answers`)."""
        self.fake.lose_next_poll_answers(1)
        update = self.fake.dm(int(user_id), text, first_name=name)
        await wait_until(lambda: self.fake.times_served(update["update_id"]) >= 2)

    def group_message(self, user_id: str, text: str, *, name: str) -> None:
        """A message in a supergroup (Chat.type "supergroup", a negative chat id)."""
        self.fake.group_message(
            -1001234567890, int(user_id), text, chat_type="supergroup", first_name=name
        )

    def own_message(self, text: str) -> None:
        """Telegram never sends a bot its own messages (they are no Update); played anyway, as
        a private-chat message whose ``from`` is the bot's own User (``is_bot``: true)."""
        chat = {"id": int(self.owner_id), "type": "private", "first_name": "Owner"}
        self._queue_message(chat, dict(self.fake.bot_user), text=text)

    def non_text_dm(self, user_id: str, *, name: str) -> None:
        """A private message with a ``photo`` (an array of PhotoSize) and no ``text``."""
        self.fake.dm_media(int(user_id), "photo", first_name=name)

    _made_ids = itertools.count(900_000_001)  # ids no message of the fake's own takes

    def _queue_message(self, chat: JsonDict, sender: JsonDict, **content: object) -> None:
        message = {"message_id": next(self._made_ids), "date": 0, "chat": chat}
        self.fake.queue_update({"message": {**message, "from": sender, **content}})

    async def handed_over(self) -> None:
        """Updates are pulled: wait until a getUpdates answer carried every one (the bot
        confirms each only once it handled it)."""
        await wait_until(lambda: self.fake.unserved == 0)

    def shown_to(self, user_id: str) -> list[str]:
        """The bot's messages in the private chat, as edited since."""
        return [
            self.fake.message(m["message_id"])["text"]
            for m in self.fake.sent
            if m["chat_id"] == int(user_id)
        ]

    def buttons_on(self, message_id: str) -> list[str]:
        """The InlineKeyboardButton texts of the message's reply_markup now."""
        markup = self.fake.message(message_id).get("reply_markup") or {}
        return [button["text"] for row in markup.get("inline_keyboard", []) for button in row]

    def press(self, user_id: str, message_id: str, label: str) -> None:
        """A CallbackQuery carrying the pressed button's callback_data."""
        markup = self.fake.message(message_id).get("reply_markup") or {}
        data = next(
            (
                b["callback_data"]
                for row in markup.get("inline_keyboard", [])
                for b in row
                if b["text"] == label
            ),
            None,
        )
        if data is None:
            raise LookupError(f"message {message_id} shows no button {label!r}")
        self.fake.press_button(int(user_id), int(message_id), data)


class TelegramWebhookDemo(TelegramDemo):
    """The Telegram fake with the bot in ``mode: webhook``: the provider contract suite runs
    on it too (tests/e2e/test_telegram_webhook_contract.py).

    TEST ONLY: it turns on the fake's ``allow_http_webhooks`` (a Bot API server in --local
    mode), as the bot listens on plain HTTP on 127.0.0.1; api.telegram.org would refuse the
    URL. The secret token is a fixed, strong one, the fake's (not a secret).
    """

    secret_token = "Xq7-Lm2_Rt9vKp4Wz8Nc3Hs6Jd1Fg5Yb0Ue-Qa_Tk"  # noqa: S105 (the fake's)
    webhook_path = "/telegram/webhook"

    def __init__(self, *, clock: Clock | None = None) -> None:
        super().__init__(clock=clock)
        self.fake.allow_http_webhooks = True
        self.webhook_port = 0

    async def start(self) -> None:
        """Pick the port the bot will listen on, then start the fake."""
        self.webhook_port = free_port()
        await super().start()

    def provider_config(self) -> dict[str, Any]:
        """The block in webhook mode: the bot listens on the port picked, and registers its
        http:// loopback URL with setWebhook."""
        return {
            **super().provider_config(),
            "mode": "webhook",
            "webhook_url": f"http://127.0.0.1:{self.webhook_port}{self.webhook_path}",
            "secret_token": self.secret_token,
            "webhook": {"host": "127.0.0.1", "port": self.webhook_port, "path": self.webhook_path},
        }

    async def dm_delivered_twice(self, user_id: str, text: str, *, name: str) -> None:
        """The bot's 200 for the POST carrying the message is lost, so Telegram posts the same
        update (same update_id) again (see :meth:`FakeTelegramServer.lose_next_webhook_acks`)."""
        self.fake.lose_next_webhook_acks(1)
        update = self.fake.dm(int(user_id), text, first_name=name)
        await wait_until(lambda: self.fake.times_posted(update["update_id"]) >= 2)
