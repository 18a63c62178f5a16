"""Slack, through slack-bolt's ``AsyncApp``: Socket Mode (default) or the HTTP Events API in,
plain text and Block Kit buttons out.

:class:`SlackProvider` turns three kinds of Slack traffic into :class:`~bot.core.models.Inbound`
values, always keyed by the immutable Slack user id (``U…``/``W…``), never a name:

* ``message`` events. Only plain user messages count: anything with a ``subtype`` (edits,
  deletions, joins, file shares, ``bot_message``), a ``bot_id``, or from the bot itself is
  dropped. ``im`` channels are DMs, ``mpim`` and private ``group`` channels are GROUP, public
  channels CHANNEL.
* ``block_actions``: a press on one of the bot's Approve / Reject buttons, acknowledged at once
  and delivered with ``is_button=True``, the button's command as text, the channel id as
  ``chat_id`` and the message ``ts`` as ``message_id`` (what :meth:`SlackProvider.edit` takes).
* the ``/pairbot`` slash command, acknowledged at once: ``/pairbot approve X`` arrives as
  ``/approve X``. It is a DM only when typed in the bot's own IM with that user.

Slack delivers at least once (Socket Mode re-sends an envelope it saw no ack for, the Events
API retries), so every event is remembered by ``event_id``, message ``ts``, ``client_msg_id``
or ``trigger_id`` and handled once. Inbound items go through one queue and are handled one at
a time, in order; an exception from the handler is logged and the next item is taken.

Outbound text is escaped (``&``, ``<``, ``>``) and sent with ``mrkdwn`` off and unfurling off,
so a stranger's name cannot mention ``@channel``, link, or format. Nothing here logs a token,
the signing secret, message text or a button's command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncRateLimitErrorRetryHandler,
    async_default_handlers,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.errors import ConfigError
from bot.core.models import Button, ChatKind, Inbound
from bot.core.protocols import OnInbound

_LOG = logging.getLogger(__name__)

DEFAULT_API_BASE_URL = "https://slack.com/api/"
ACTION_PREFIX = "pairbot:"
"""Every button the provider renders has an ``action_id`` of this prefix plus its command."""
MAX_COMMAND_CHARS = 255 - len(ACTION_PREFIX)
"""A button's command must fit in an ``action_id`` (255 characters) after the prefix."""
MAX_LABEL_CHARS = 75
"""Slack refuses button labels longer than this; longer ones are cut."""
MAX_SECTION_CHARS = 3000
"""Slack's limit on the text of one section block; longer texts take several sections."""

_AUTH_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "not_allowed_token_type",
    }
)
_CHANNEL_KINDS = {
    "im": ChatKind.DM,
    "mpim": ChatKind.GROUP,
    "group": ChatKind.GROUP,
    "channel": ChatKind.CHANNEL,
}
_NOT_HERE = "pairbot only takes commands in your direct messages with it."
_SEEN_MAX = 4096
_PROFILE_TTL = 600.0
_DRAIN_TIMEOUT = 5.0
_RATE_LIMIT_RETRIES = 3

_Work = tuple[Literal["message", "action", "command"], dict[str, Any]]


def _escape(text: str) -> str:
    """Slack's three control characters as entities, so the text is shown, never parsed."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _unescape(text: str) -> str:
    """Undo the escaping Slack applies to what users type (``&lt;`` back to ``<``)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _ts_time(ts: object) -> datetime | None:
    """A message ``ts`` (``"1700000000.000100"``) as an aware datetime."""
    try:
        return datetime.fromtimestamp(float(str(ts)), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _blocks(text: str, buttons: Sequence[Button]) -> list[dict[str, Any]]:
    """The text as plain-text sections (never parsed) and one actions block of buttons."""
    seen: set[str] = set()
    elements = []
    for button in buttons:
        command = button.command
        if not 1 <= len(command) <= MAX_COMMAND_CHARS:
            raise ValueError(
                f"button {button.label!r}: command is {len(command)} characters, "
                f"Slack allows 1 to {MAX_COMMAND_CHARS} here"
            )
        if command in seen:
            raise ValueError(f"button {button.label!r}: two buttons carry the same command")
        seen.add(command)
        label = (
            button.label
            if len(button.label) <= MAX_LABEL_CHARS
            else (button.label[: MAX_LABEL_CHARS - 1] + "…")
        )
        elements.append(
            {
                "type": "button",
                "action_id": ACTION_PREFIX + command,
                "text": {"type": "plain_text", "text": label or "?", "emoji": False},
                "value": command,
            }
        )
    sections: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "plain_text", "text": chunk, "emoji": False}}
        for chunk in _chunks(text, MAX_SECTION_CHARS)
    ]
    return [*sections, {"type": "actions", "block_id": "pairbot_actions", "elements": elements}]


class SlackProvider:
    """The Slack provider: one Bolt ``AsyncApp`` per bot token, over Socket Mode or HTTP.

    Args:
        bot_token: the bot token (``xoxb-…``) used for every Web API call.
        app_token: the app-level token (``xapp-…``, scope ``connections:write``); Socket Mode
            needs it.
        signing_secret: the app's signing secret; HTTP mode needs it to verify each request
            (a bad signature or a timestamp over five minutes old gets 401).
        mode: ``socket`` (an outbound websocket: no public URL) or ``http`` (Slack POSTs
            events to ``webhook_host:webhook_port`` + ``webhook_path``).
        api_base_url: the Web API root, ``https://slack.com/api/`` unless a fake or an
            Enterprise Grid root is used. Socket Mode's websocket URL comes from
            ``apps.connections.open`` on it.
        webhook_host: where HTTP mode listens.
        webhook_port: the port HTTP mode listens on (0 picks a free one; see
            :attr:`webhook_url`).
        webhook_path: the path Slack POSTs to (the app's Request URL).
        name: the provider name carried by every :class:`~bot.core.models.Inbound`.
        ping_interval: seconds between Socket Mode pings; a dead socket is noticed and
            replaced within a few of these.
        connect_timeout: seconds :meth:`start` waits for the first websocket.

    :meth:`start` can be called again after :meth:`stop`.
    """

    def __init__(
        self,
        *,
        bot_token: str,
        app_token: str | None = None,
        signing_secret: str | None = None,
        mode: str = "socket",
        api_base_url: str | None = None,
        webhook_host: str = "127.0.0.1",
        webhook_port: int = 3000,
        webhook_path: str = "/slack/events",
        name: str = "slack",
        ping_interval: float = 10.0,
        connect_timeout: float = 30.0,
    ) -> None:
        source = f"providers.{name}"
        if not bot_token or not bot_token.strip():
            raise ConfigError("the bot token is empty", source=source, field="bot_token")
        if mode not in ("socket", "http"):
            raise ConfigError("must be socket or http", source=source, field="mode")
        if mode == "socket" and not (app_token and app_token.strip()):
            raise ConfigError(
                "app_token is required when mode is socket", source=source, field="app_token"
            )
        if mode == "http" and not (signing_secret and signing_secret.strip()):
            raise ConfigError(
                "signing_secret is required when mode is http",
                source=source,
                field="signing_secret",
            )
        if not webhook_path.startswith("/"):
            raise ConfigError("must start with /", source=source, field="webhook.path")
        if not ping_interval > 0 or not connect_timeout > 0:
            raise ConfigError("must be positive", source=source, field="ping_interval")
        self.name = name
        self.bare_commands = True
        self.mode = mode
        self._bot_token = bot_token.strip()
        self._app_token = (app_token or "").strip()
        self._signing_secret = signing_secret or ""
        root = api_base_url or DEFAULT_API_BASE_URL
        self._api_base_url = root if root.endswith("/") else root + "/"
        self._webhook_host = webhook_host
        self._webhook_port = webhook_port
        self._webhook_path = webhook_path
        self._ping_interval = ping_interval
        self._connect_timeout = connect_timeout

        self._client: AsyncWebClient | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None
        self._queue: asyncio.Queue[_Work | None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._on_inbound: OnInbound | None = None
        self._starting = False
        self._stopping = False
        self.bot_user_id = ""
        """The bot's own user id (from ``auth.test``), known once started."""
        self._dm_ids: dict[str, str] = {}
        self._profiles: dict[str, tuple[float, str, dict[str, str]]] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()

    def __repr__(self) -> str:
        return (
            f"SlackProvider(name={self.name!r}, mode={self.mode!r}, "
            f"api_base_url={self._api_base_url!r})"
        )

    @property
    def running(self) -> bool:
        """Whether :meth:`start` has returned and :meth:`stop` has not been called."""
        return self._client is not None and not (self._starting or self._stopping)

    @property
    def webhook_url(self) -> str | None:
        """In HTTP mode, once started: the URL Slack must POST to (with the real port)."""
        if self._bound_port is None:
            return None
        return f"http://{self._webhook_host}:{self._bound_port}{self._webhook_path}"

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, on_inbound: OnInbound) -> None:
        """Check the bot token (``auth.test``), connect, and return once events flow.

        Raises:
            ConfigError: Slack rejected the bot token or the app token.
            RuntimeError: the provider is already running.
            slack_sdk.errors.SlackApiError: Slack answered otherwise.
            TimeoutError: the Socket Mode websocket did not open in time.
            OSError: HTTP mode could not listen on its port.
        """
        if self._client is not None or self._starting:
            raise RuntimeError(f"{self.name}: provider is already running")
        self._starting = True
        try:
            client = AsyncWebClient(
                token=self._bot_token,
                base_url=self._api_base_url,
                retry_handlers=[
                    *async_default_handlers(),
                    AsyncRateLimitErrorRetryHandler(max_retry_count=_RATE_LIMIT_RETRIES),
                ],
            )
            await self._identify(client)
            app = self._build_app(client)
            self._client, self._on_inbound = client, on_inbound
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(
                self._work(self._queue), name=f"{self.name}-inbound"
            )
            if self.mode == "socket":
                await self._start_socket(app, client)
            else:
                await self._start_http(app)
        except BaseException:
            await self._teardown()
            raise
        finally:
            self._starting = False
        _LOG.info(
            "%s: receiving over %s as %s",
            self.name,
            "Socket Mode" if self.mode == "socket" else "the Events API",
            self.bot_user_id,
        )

    async def stop(self) -> None:
        """Stop receiving, let the item in hand finish, close every connection. Idempotent."""
        if self._client is None or self._starting or self._stopping:
            return  # a failing start() cleans up after itself
        self._stopping = True
        try:
            await self._teardown()
        finally:
            self._stopping = False
        _LOG.info("%s: stopped", self.name)

    async def _teardown(self) -> None:
        socket, runner, worker, queue = self._socket, self._runner, self._worker, self._queue
        self._socket = self._runner = self._worker = self._queue = None
        self._bound_port = None
        try:
            if socket is not None:
                await socket.close_async()  # type: ignore[no-untyped-call]
                # close_async() cancels the client's tasks without awaiting them.
                for _ in range(3):
                    await asyncio.sleep(0)
            if runner is not None:
                await runner.cleanup()
            if worker is not None and queue is not None:
                queue.put_nowait(None)
                try:
                    await asyncio.wait_for(asyncio.shield(worker), _DRAIN_TIMEOUT)
                except TimeoutError:
                    worker.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await worker
        finally:
            self._client = None
            self._on_inbound = None

    async def _identify(self, client: AsyncWebClient) -> None:
        try:
            me = await client.auth_test()
        except SlackApiError as exc:
            if _str(exc.response.get("error")) in _AUTH_ERRORS:
                raise ConfigError(
                    "Slack rejected the bot token",
                    source=f"providers.{self.name}",
                    field="bot_token",
                    hint="check the xoxb- token and api_base_url",
                ) from None
            raise
        self.bot_user_id = _str(me.get("user_id"))

    def _build_app(self, client: AsyncWebClient) -> AsyncApp:
        app = AsyncApp(
            client=client,
            # Socket Mode requests are not signed; only HTTP mode verifies signatures.
            signing_secret=self._signing_secret,
            request_verification_enabled=self.mode == "http",
        )
        app.event("message")(self._on_message_event)
        app.event(re.compile(".*"))(self._on_other_event)  # acked, so never re-sent
        app.action(re.compile(".*"))(self._on_action)
        app.command(re.compile(".*"))(self._on_command)
        return app

    async def _start_socket(self, app: AsyncApp, client: AsyncWebClient) -> None:
        # Open the first URL ourselves: the SDK would retry a rejected app token forever.
        try:
            opened = await client.apps_connections_open(app_token=self._app_token)
        except SlackApiError as exc:
            if _str(exc.response.get("error")) in _AUTH_ERRORS:
                raise ConfigError(
                    "Slack rejected the app token",
                    source=f"providers.{self.name}",
                    field="app_token",
                    hint="use an xapp- token with connections:write, and turn Socket Mode on",
                ) from None
            raise
        handler = AsyncSocketModeHandler(app, self._app_token, ping_interval=self._ping_interval)
        self._socket = handler
        handler.client.wss_uri = _str(opened.get("url"))
        await asyncio.wait_for(
            handler.connect_async(),  # type: ignore[no-untyped-call]
            self._connect_timeout,
        )

    async def _start_http(self, app: AsyncApp) -> None:
        runner = web.AppRunner(app.web_app(path=self._webhook_path), access_log=None)
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, self._webhook_host, self._webhook_port)
        await site.start()
        server = site._server  # aiohttp keeps the bound sockets only here
        sockets = getattr(server, "sockets", None) or ()
        self._bound_port = int(sockets[0].getsockname()[1]) if sockets else self._webhook_port

    # -- outbound ----------------------------------------------------------------------------

    async def send(self, chat_id: str, text: str, *, buttons: Sequence[Button] = ()) -> str:
        """Post plain ``text`` (with a row of Block Kit buttons if given); return its ``ts``.

        Raises:
            ValueError: a button's command is empty, too long, or used twice.
            RuntimeError: the provider is not running.
            slack_sdk.errors.SlackApiError: Slack refused the message.
        """
        client = self._live_client()
        kwargs: dict[str, Any] = {}
        if buttons:
            kwargs["blocks"] = _blocks(text, buttons)
        response = await client.chat_postMessage(
            channel=chat_id,
            text=_escape(text),
            mrkdwn=False,
            unfurl_links=False,
            unfurl_media=False,
            **kwargs,
        )
        channel = _str(response.get("channel"))
        if channel.startswith("D") and not chat_id.startswith(("C", "D", "G")):
            self._dm_ids.setdefault(chat_id, channel)  # posted to a user id: learn the IM
        return _str(response.get("ts"))

    async def edit(self, chat_id: str, message_id: str, text: str) -> None:
        """Replace a message's text (``chat.update``) and drop its blocks, buttons included.

        Raises:
            RuntimeError: the provider is not running.
            slack_sdk.errors.SlackApiError: Slack refused the update.
        """
        client = self._live_client()
        # An empty ``blocks`` removes the buttons whichever way the API treats a text-only
        # update (older docs: blocks kept unless emptied; newer: dropped when text is given).
        await client.chat_update(channel=chat_id, ts=message_id, text=_escape(text), blocks=[])

    async def dm_chat_id(self, user_id: str) -> str:
        """The bot's IM channel (``D…``) with ``user_id``, by ``conversations.open``, cached.

        Raises:
            RuntimeError: the provider is not running.
            slack_sdk.errors.SlackApiError: Slack refused (e.g. no ``im:write`` scope).
        """
        cached = self._dm_ids.get(user_id)
        if cached:
            return cached
        response = await self._live_client().conversations_open(users=user_id)
        channel = response.get("channel")
        channel_id = _str(channel.get("id")) if isinstance(channel, dict) else ""
        if not channel_id:
            raise RuntimeError(f"{self.name}: conversations.open returned no channel")
        self._dm_ids[user_id] = channel_id
        return channel_id

    def _live_client(self) -> AsyncWebClient:
        if self._client is None:
            raise RuntimeError(f"{self.name}: provider is not running")
        return self._client

    # -- Bolt listeners: filter, dedupe, queue (the worker does the rest) ----------------------

    async def _on_message_event(self, body: dict[str, Any]) -> None:
        event = body.get("event")
        if not isinstance(event, dict) or not self._is_user_text(event):
            return
        channel, ts = _str(event.get("channel")), _str(event.get("ts"))
        keys = [
            f"event:{_str(body.get('event_id'))}",
            f"ts:{channel}:{ts}",
            f"msg:{_str(event.get('client_msg_id'))}",
        ]
        if self._first_time(keys):
            self._enqueue(("message", body))

    async def _on_other_event(self, body: dict[str, Any]) -> None:
        event = body.get("event")
        kind = _str(event.get("type")) if isinstance(event, dict) else ""
        _LOG.debug("%s: ignored a %s event", self.name, kind or "malformed")

    async def _on_action(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()  # at once: Slack shows an error if no ack comes within 3 s
        if body.get("type") != "block_actions":
            return
        keys = [f"trigger:{_str(body.get('trigger_id'))}"]
        actions = body.get("actions")
        if isinstance(actions, list) and actions and isinstance(actions[0], dict):
            keys.append(
                f"action:{_str(actions[0].get('action_ts'))}:{_str(actions[0].get('action_id'))}"
            )
        if self._first_time(keys):
            self._enqueue(("action", body))

    async def _on_command(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        channel_id, channel_name = _str(body.get("channel_id")), _str(body.get("channel_name"))
        if _looks_like_im(channel_id, channel_name):
            await ack()  # the answer comes as a message in the IM
        else:
            await ack(text=_NOT_HERE)  # shown only to the person who typed it
        if self._first_time([f"trigger:{_str(body.get('trigger_id'))}"]):
            self._enqueue(("command", body))

    def _is_user_text(self, event: dict[str, Any]) -> bool:
        """A plain message a person typed: no subtype, not from a bot, with text."""
        if event.get("type") != "message" or "subtype" in event or event.get("hidden"):
            return False
        if event.get("bot_id") or event.get("bot_profile"):
            return False
        user = _str(event.get("user"))
        if not user or user == self.bot_user_id:
            return False
        text = event.get("text")
        return (
            isinstance(text, str)
            and bool(text.strip())
            and _str(event.get("channel_type")) in _CHANNEL_KINDS
        )

    def _first_time(self, keys: Sequence[str]) -> bool:
        """Remember ``keys``; False if any was seen before (a re-delivered event)."""
        keys = [k for k in keys if not k.endswith(":")]  # a key whose id was missing
        if any(k in self._seen for k in keys):
            _LOG.info("%s: dropped a re-delivered event", self.name)
            return False
        for key in keys:
            self._seen[key] = None
        while len(self._seen) > _SEEN_MAX:
            self._seen.popitem(last=False)
        return True

    def _enqueue(self, work: _Work) -> None:
        if self._queue is None or self._stopping:
            return
        self._queue.put_nowait(work)

    # -- the worker: one item at a time, in order --------------------------------------------

    async def _work(self, queue: asyncio.Queue[_Work | None]) -> None:
        while (item := await queue.get()) is not None:
            kind, body = item
            try:
                inbound = await self._inbound(kind, body)
                handler = self._on_inbound
                if inbound is not None and handler is not None:
                    await handler(inbound)
            except Exception:
                _LOG.exception("%s: handling a %s failed", self.name, kind)

    async def _inbound(self, kind: str, body: dict[str, Any]) -> Inbound | None:
        if kind == "message":
            return await self._from_message(body["event"])
        if kind == "action":
            return await self._from_action(body)
        return await self._from_command(body)

    async def _from_message(self, event: dict[str, Any]) -> Inbound:
        chat_kind = _CHANNEL_KINDS[_str(event.get("channel_type"))]
        user, channel, ts = _str(event["user"]), _str(event.get("channel")), _str(event["ts"])
        name, meta = "", dict[str, str]()
        if chat_kind is ChatKind.DM:
            self._dm_ids[user] = channel  # a message.im event names the bot's IM with the user
            name, meta = await self._profile(user)
        return Inbound(
            provider=self.name,
            chat_id=channel,
            chat_kind=chat_kind,
            sender_id=user,
            sender_name=name,
            text=_unescape(event["text"]),
            message_id=ts,
            meta=meta,
            sent_at=_ts_time(ts),
        )

    async def _from_action(self, body: dict[str, Any]) -> Inbound | None:
        user = body.get("user")
        actions = body.get("actions")
        container, channel = _dict(body.get("container")), _dict(body.get("channel"))
        message = _dict(body.get("message"))
        if not isinstance(user, dict) or not isinstance(actions, list) or not actions:
            return None
        action = actions[0] if isinstance(actions[0], dict) else {}
        action_id = _str(action.get("action_id"))
        if action.get("type") != "button" or not action_id.startswith(ACTION_PREFIX):
            return None
        command = _str(action.get("value")) or action_id.removeprefix(ACTION_PREFIX)
        user_id = _str(user.get("id"))
        channel_id = _str(channel.get("id")) or _str(container.get("channel_id"))
        message_ts = _str(container.get("message_ts")) or _str(message.get("ts"))
        if not (user_id and channel_id and message_ts and command):
            return None
        chat_kind = await self._conversation_kind(user_id, channel_id, _str(channel.get("name")))
        name, meta = await self._profile(user_id) if chat_kind is ChatKind.DM else ("", {})
        return Inbound(
            provider=self.name,
            chat_id=channel_id,
            chat_kind=chat_kind,
            sender_id=user_id,
            sender_name=name,
            text=command,
            message_id=message_ts,
            is_button=True,
            meta=meta,
        )

    async def _from_command(self, body: dict[str, Any]) -> Inbound | None:
        user_id, channel_id = _str(body.get("user_id")), _str(body.get("channel_id"))
        if not (user_id and channel_id):
            return None
        rest = _unescape(_str(body.get("text"))).strip().lstrip("/")
        chat_kind = await self._conversation_kind(
            user_id, channel_id, _str(body.get("channel_name"))
        )
        name, meta = await self._profile(user_id) if chat_kind is ChatKind.DM else ("", {})
        return Inbound(
            provider=self.name,
            chat_id=channel_id,
            chat_kind=chat_kind,
            sender_id=user_id,
            sender_name=name,
            text=f"/{rest or 'help'}",
            meta=meta,
        )

    async def _conversation_kind(
        self, user_id: str, channel_id: str, channel_name: str
    ) -> ChatKind:
        """DM only for the bot's own IM with that user; another person's IM is no DM here."""
        if _looks_like_im(channel_id, channel_name):
            try:
                mine = await self.dm_chat_id(user_id)
            except Exception:
                _LOG.warning(
                    "%s: could not open the IM with %s; treating it as no DM", self.name, user_id
                )
                return ChatKind.GROUP
            return ChatKind.DM if mine == channel_id else ChatKind.GROUP
        if (
            channel_id.startswith("G")
            or channel_name.startswith("mpdm-")
            or channel_name == "privategroup"
        ):
            return ChatKind.GROUP
        return ChatKind.CHANNEL

    async def _profile(self, user_id: str) -> tuple[str, dict[str, str]]:
        """The name a user gives themselves (untrusted), from ``users.info``, cached briefly."""
        now = asyncio.get_running_loop().time()
        cached = self._profiles.get(user_id)
        if cached is not None and now - cached[0] < _PROFILE_TTL:
            return cached[1], dict(cached[2])
        try:
            response = await self._live_client().users_info(user=user_id)
        except Exception as exc:  # names are a nicety; the id is what counts
            _LOG.debug("%s: users.info for %s failed (%s)", self.name, user_id, type(exc).__name__)
            return "", {}
        user = _dict(response.get("user"))
        profile = _dict(user.get("profile"))
        real = _str(profile.get("real_name")) or _str(user.get("real_name"))
        display = _str(profile.get("display_name"))
        meta = {key: value for key, value in (("name", real), ("username", display)) if value}
        name = real or display
        self._profiles[user_id] = (now, name, meta)
        return name, dict(meta)


def _looks_like_im(channel_id: str, channel_name: str) -> bool:
    return channel_id.startswith("D") or channel_name == "directmessage"


__all__ = ["ACTION_PREFIX", "DEFAULT_API_BASE_URL", "SlackProvider"]
