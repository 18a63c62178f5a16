"""Slack, through slack-bolt's ``AsyncApp``: Socket Mode (default) or the HTTP Events API in,
plain text and Block Kit buttons out.

:class:`SlackProvider` turns three kinds of Slack traffic into :class:`~bot.core.models.Inbound`
values, always keyed by the immutable Slack user id (``U…``/``W…``), never a name:

* ``message`` events: only messages a person wrote count, file uploads (``file_share``) as
  ``media`` with their text or ``""``; ``im`` channels are DMs, ``mpim`` and private ``group``
  channels GROUP, public channels CHANNEL.
* ``block_actions``: a press on one of the bot's Approve / Reject buttons, acknowledged at once
  and delivered with ``is_button=True``, the button's command as text, the channel id as
  ``chat_id`` and the message ``ts`` as ``message_id`` (what :meth:`SlackProvider.edit` takes).
* the ``/pairbot`` slash command, acknowledged at once: ``/pairbot approve X`` arrives as
  ``/approve X``. It is a DM only when typed in the bot's own IM with that user.

Here are the Bolt wiring (Socket Mode, or HTTP, where Bolt checks each request's signature
against the signing secret) and the Web API calls. Reading Slack's bodies (which events
count, the dedupe keys: Slack delivers at least once) is :mod:`providers.slack.events`; the
IM and profile of each user :mod:`providers.slack.people`; what a message looks like on Slack
:mod:`providers.slack.blocks`. Lifecycle, the ordered handling of events, dedupe and the
button checks are :class:`~providers.base.BaseProvider`'s, the HTTP server
:class:`~providers.webhook.WebhookServer`'s; slack-sdk retries a rate-limited call after its
``Retry-After``.

Outbound text is escaped (``&``, ``<``, ``>``) and sent with ``mrkdwn`` off and unfurling off,
so a stranger's name cannot mention ``@channel``, link, or format; escaped, it is cut into
messages of 40,000 characters (:data:`~providers.slack.blocks.MESSAGE_SPLIT`), and at most 25
buttons go in the actions block. An edit (``chat.update``, which has no ``mrkdwn`` switch and
parses a bare ``text`` as markup) carries the text as plain-text blocks, shown as written.
Nothing here logs a token, the signing secret, message text or a button's command.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Sequence
from typing import Any

from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncRateLimitErrorRetryHandler,
    async_default_handlers,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.core.models import Button, ChatKind, Inbound
from bot.core.schema import WebhookConfig
from providers._json import as_dict, as_str
from providers.base import BaseProvider
from providers.limits import ButtonLimits
from providers.slack.blocks import (
    MAX_BUTTONS,
    MAX_COMMAND_CHARS,
    MESSAGE_SPLIT,
    blocks,
    escape,
    sections,
    unescape,
)
from providers.slack.events import (
    CHANNEL_KINDS,
    Interaction,
    action_keys,
    carries_files,
    command_keys,
    is_person_message,
    looks_like_im,
    message_keys,
    read_command,
    read_press,
    ts_time,
)
from providers.slack.people import People
from providers.webhook import WebhookServer

_LOG = logging.getLogger(__name__)

DEFAULT_API_BASE_URL = "https://slack.com/api/"
DEFAULT_WEBHOOK = WebhookConfig(port=3000, path="/slack/events")
"""Where HTTP mode listens unless told (the config block's default too)."""

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
_NOT_HERE = "pairbot only takes commands in your direct messages with it."
_RATE_LIMIT_RETRIES = 3


class SlackProvider(BaseProvider):
    """The Slack provider: one Bolt ``AsyncApp`` per bot token, over Socket Mode or HTTP.

    Args:
        bot_token: the bot token (``xoxb-…``) used for every Web API call.
        app_token: the app-level token (``xapp-…``, scope ``connections:write``); Socket Mode
            needs it.
        signing_secret: the app's signing secret; HTTP mode needs it to verify each request
            (a bad signature or a timestamp over five minutes old gets 401).
        mode: ``socket`` (an outbound websocket: no public URL) or ``http`` (Slack POSTs
            events to ``webhook``).
        api_base_url: the Web API root, ``https://slack.com/api/`` unless a fake or an
            Enterprise Grid root is used. Socket Mode's websocket URL comes from
            ``apps.connections.open`` on it.
        webhook: where HTTP mode listens (port 0 picks a free one, kept for a restart; see
            :attr:`webhook_url`), and the path Slack POSTs to (the app's Request URL).
        name: the provider name carried by every :class:`~bot.core.models.Inbound`.
        ping_interval: seconds between Socket Mode pings; a dead socket is noticed and
            replaced within a few of these.
        connect_timeout: seconds :meth:`start` waits for the first websocket.

    :meth:`start` can be called again after :meth:`stop`.
    """

    platform = "Slack"
    bare_commands = True
    button_limits = ButtonLimits(
        command=MAX_COMMAND_CHARS,
        distinct=True,
        count=MAX_BUTTONS,
        count_noun="buttons in an actions block",
    )
    text_split = MESSAGE_SPLIT
    dedupe_size = 4096

    def __init__(
        self,
        *,
        bot_token: str,
        app_token: str | None = None,
        signing_secret: str | None = None,
        mode: str = "socket",
        api_base_url: str | None = None,
        webhook: WebhookConfig = DEFAULT_WEBHOOK,
        name: str = "slack",
        ping_interval: float = 10.0,
        connect_timeout: float = 30.0,
    ) -> None:
        super().__init__(name=name)
        self._bot_token = self._required("bot_token", bot_token, "the bot token is empty").strip()
        if mode not in ("socket", "http"):
            raise self._config_error("mode", "must be socket or http")
        if mode == "socket":
            self._required("app_token", app_token, "app_token is required when mode is socket")
        if mode == "http":
            self._required(
                "signing_secret", signing_secret, "signing_secret is required when mode is http"
            )
        if not ping_interval > 0 or not connect_timeout > 0:
            raise self._config_error("ping_interval", "must be positive")
        self.mode = mode
        self._app_token = (app_token or "").strip()
        self._signing_secret = signing_secret or ""
        root = api_base_url or DEFAULT_API_BASE_URL
        self._api_base_url = root if root.endswith("/") else root + "/"
        self._server = WebhookServer.at(webhook) if mode == "http" else None
        self._ping_interval = ping_interval
        self._connect_timeout = connect_timeout
        self._client: AsyncWebClient | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self.bot_user_id = ""
        """The bot's own user id (from ``auth.test``), known once started."""
        self._people = People(name=name, client=lambda: self._need(self._client), log=_LOG)

    def __repr__(self) -> str:
        return (
            f"SlackProvider(name={self.name!r}, mode={self.mode!r}, "
            f"api_base_url={self._api_base_url!r})"
        )

    @property
    def webhook_url(self) -> str | None:
        """In HTTP mode, while serving: the URL Slack must POST to (with the real port)."""
        server = self._server
        return server.url if server is not None and server.serving else None

    # -- lifecycle (the hooks of BaseProvider) -----------------------------------------------

    async def _connect(self) -> None:
        """Check the bot token (``auth.test``), connect, and return once events flow.

        Raises:
            ConfigError: Slack rejected the bot token or the app token.
            slack_sdk.errors.SlackApiError: Slack answered otherwise.
            TimeoutError: the Socket Mode websocket did not open in time.
            OSError: HTTP mode could not listen on its port.
        """
        client = AsyncWebClient(
            token=self._bot_token,
            base_url=self._api_base_url,
            retry_handlers=[
                *async_default_handlers(),
                AsyncRateLimitErrorRetryHandler(max_retry_count=_RATE_LIMIT_RETRIES),
            ],
        )
        await self._identify(client)
        self._client = client
        app = self._build_app(client)
        if self._server is None:
            await self._open_socket(app, client)
        else:
            await self._server.start(app.web_app(path=self._server.path))
        _LOG.info(
            "%s: receiving over %s as %s",
            self.name,
            "Socket Mode" if self._server is None else "the Events API",
            self.bot_user_id,
        )

    async def _stop_receiving(self) -> None:
        """Close the websocket, or stop serving the Events API."""
        socket, self._socket = self._socket, None
        if socket is not None:
            await socket.close_async()  # type: ignore[no-untyped-call]
            # close_async() cancels the client's tasks without awaiting them.
            for _ in range(3):
                await asyncio.sleep(0)
        if self._server is not None:
            await self._server.stop()

    async def _disconnect(self) -> None:
        """Drop the Web API client (it opens a session per call: nothing else to close)."""
        self._client = None

    async def _identify(self, client: AsyncWebClient) -> None:
        me = await self._token_checked(
            client.auth_test(),
            "bot_token",
            "Slack rejected the bot token",
            hint="check the xoxb- token and api_base_url",
        )
        self.bot_user_id = as_str(me.get("user_id"))

    async def _token_checked(
        self, call: Awaitable[AsyncSlackResponse], field: str, message: str, *, hint: str
    ) -> AsyncSlackResponse:
        """``call``'s answer; Slack refusing the token is a ConfigError about ``field``."""
        try:
            return await call
        except SlackApiError as exc:
            if as_str(exc.response.get("error")) in _AUTH_ERRORS:
                raise self._config_error(field, message, hint=hint) from None
            raise

    def _build_app(self, client: AsyncWebClient) -> AsyncApp:
        app = AsyncApp(
            client=client,
            # Socket Mode requests are not signed; only HTTP mode verifies signatures.
            signing_secret=self._signing_secret,
            request_verification_enabled=self._server is not None,
        )
        app.event("message")(self._on_message_event)
        app.event(re.compile(".*"))(self._on_other_event)  # acked, so never re-sent
        app.action(re.compile(".*"))(self._on_action)
        app.command(re.compile(".*"))(self._on_command)
        return app

    async def _open_socket(self, app: AsyncApp, client: AsyncWebClient) -> None:
        # Open the first URL ourselves: the SDK would retry a rejected app token forever.
        opened = await self._token_checked(
            client.apps_connections_open(app_token=self._app_token),
            "app_token",
            "Slack rejected the app token",
            hint="use an xapp- token with connections:write, and turn Socket Mode on",
        )
        handler = AsyncSocketModeHandler(app, self._app_token, ping_interval=self._ping_interval)
        self._socket = handler
        handler.client.wss_uri = as_str(opened.get("url"))
        await asyncio.wait_for(
            handler.connect_async(),  # type: ignore[no-untyped-call]
            self._connect_timeout,
        )

    # -- outbound ----------------------------------------------------------------------------

    def _outgoing(self, text: str) -> str:
        return escape(text)  # before the split: Slack's limit counts the text as sent

    async def _send_text(self, chat_id: str, text: str, buttons: Sequence[Button]) -> str:
        """Post escaped ``text`` (with a row of Block Kit buttons if given); return its ``ts``.

        Raises:
            ProviderStateError: the provider is not running.
            slack_sdk.errors.SlackApiError: Slack refused the message.
        """
        client = self._need(self._client)
        response = await client.chat_postMessage(
            channel=chat_id,
            text=text,
            blocks=blocks(unescape(text), buttons) if buttons else None,  # None: not sent
            mrkdwn=False,
            unfurl_links=False,
            unfurl_media=False,
        )
        channel = as_str(response.get("channel"))
        if channel.startswith("D") and not chat_id.startswith(("C", "D", "G")):
            self._people.met(chat_id, channel)  # posted to a user id: Slack names the IM
        return as_str(response.get("ts"))

    async def edit(self, chat_id: str, message_id: str, text: str) -> None:
        """Replace a message's text (``chat.update``, cut to one message) with plain-text
        blocks, its buttons gone.

        ``chat.update`` takes no ``mrkdwn`` switch: a bare ``text`` would be parsed as markup
        (``*Bob*`` bold, a name turned into formatting), so the text goes as plain-text
        sections, which Slack shows as written; ``text`` is only the notification's fallback.

        Raises:
            ProviderStateError: the provider is not running.
            slack_sdk.errors.SlackApiError: Slack refused the update.
        """
        client = self._need(self._client)
        sent = MESSAGE_SPLIT.fit(escape(text))
        await client.chat_update(
            channel=chat_id, ts=message_id, text=sent, blocks=sections(unescape(sent))
        )

    async def dm_chat_id(self, user_id: str) -> str:
        """The bot's IM channel (``D…``) with ``user_id``, by ``conversations.open``, cached.

        Raises:
            ProviderStateError: the provider is not running.
            ProviderError: Slack opened no channel.
            slack_sdk.errors.SlackApiError: Slack refused (e.g. no ``im:write`` scope).
        """
        return await self._people.im(user_id)

    # -- Bolt listeners: filter, dedupe, queue (the base's worker converts, in order) ---------

    async def _on_message_event(self, body: dict[str, Any]) -> None:
        event = body.get("event")
        if not isinstance(event, dict) or not is_person_message(event, self.bot_user_id):
            return
        if self._first_time(*message_keys(body, event)):
            self._enqueue(lambda: self._from_message(event))

    async def _on_other_event(self, body: dict[str, Any]) -> None:
        kind = as_str(as_dict(body.get("event")).get("type"))
        _LOG.debug("%s: ignored a %s event", self.name, kind or "malformed")

    async def _on_action(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()  # at once: Slack shows an error if no ack comes within 3 s
        if body.get("type") == "block_actions" and self._first_time(*action_keys(body)):
            self._enqueue(lambda: self._from_interaction(read_press(body)))

    async def _on_command(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        if looks_like_im(as_str(body.get("channel_id")), as_str(body.get("channel_name"))):
            await ack()  # the answer comes as a message in the IM
        else:
            await ack(text=_NOT_HERE)  # shown only to the person who typed it
        if self._first_time(*command_keys(body)):
            self._enqueue(lambda: self._from_interaction(read_command(body)))

    # -- event → Inbound (run by the worker, in order: they may call the Web API) ---------------

    async def _from_message(self, event: dict[str, Any]) -> Inbound:
        chat_kind = CHANNEL_KINDS[as_str(event.get("channel_type"))]
        user, ts = as_str(event["user"]), as_str(event["ts"])
        channel = as_str(event.get("channel"))
        name, meta = "", dict[str, str]()
        if chat_kind is ChatKind.DM:
            self._people.met(user, channel)  # a message.im event names the bot's IM with them
            name, meta = await self._people.profile(user)
        return Inbound(
            provider=self.name,
            chat_id=channel,
            chat_kind=chat_kind,
            sender_id=user,
            sender_name=name,
            text=unescape(as_str(event.get("text"))),
            message_id=ts,
            meta=meta,
            sent_at=ts_time(ts),
            media=carries_files(event),
        )

    async def _from_interaction(self, interaction: Interaction | None) -> Inbound | None:
        """A button press or a slash command; a DM only in the bot's own IM with the user."""
        if interaction is None:
            return None
        chat_kind = await self._people.kind(interaction)
        name, meta = (
            await self._people.profile(interaction.user_id)
            if chat_kind is ChatKind.DM
            else ("", {})
        )
        return Inbound(
            provider=self.name,
            chat_id=interaction.channel_id,
            chat_kind=chat_kind,
            sender_id=interaction.user_id,
            sender_name=name,
            text=interaction.text,
            message_id=interaction.message_ts,
            is_button=interaction.message_ts is not None,
            meta=meta,
        )


__all__ = ["DEFAULT_API_BASE_URL", "SlackProvider"]
