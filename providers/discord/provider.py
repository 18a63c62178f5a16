"""Discord, through discord.py: DMs, buttons and slash commands in; plain text and buttons out.

:class:`DiscordProvider` runs one discord.py client on the gateway
(:mod:`providers.discord.client`). Lifecycle, the ordered handling of events, dedupe, the text
split and the button limits are :class:`~providers.base.BaseProvider`'s; what is Discord's own:

* Identity is the user's snowflake id, never a username or display name.
* A chat is a DM only when the channel's type says so (:mod:`providers.discord.kinds`).
* Messages from bots (itself included), webhooks and system messages, and edits never become
  an :class:`~bot.core.models.Inbound`. A message with attachments or stickers becomes one
  with ``media=True`` (its text the content, or empty); one with neither and no text becomes
  none. (In a server most messages arrive so: pairbot does not ask for the privileged Message
  Content intent, and there only mentions of the bot and replies to it keep their content.)
  Every message and interaction is handled at most once, by its id (a snowflake, unique
  across both), so events the gateway replays after a RESUME are not handled twice.
* Buttons are persistent (:mod:`providers.discord.views`). A press is acknowledged at once (a
  deferred update) and delivered as an ``is_button`` Inbound; :meth:`DiscordProvider.edit`
  drops the buttons.
* Owner commands also exist as slash commands in the bot's DMs, answered in place
  (:mod:`providers.discord.commands`); one arrives as ``Inbound(text="/approve CODE")``.
* Text goes out as plain text: markdown is backslash-escaped (:func:`plain`: a client shows
  the text as written), mentions never ping and link previews are suppressed. A DM Discord
  will not deliver (error 50007 or 50278: no shared server, DMs closed, the bot blocked) is a
  :class:`~bot.core.errors.ProviderError` that says so.

discord.py reconnects and resumes by itself. It reads ``api_base_url`` and ``gateway_url``
process-wide: two providers in one process must agree on them (see
:class:`~providers.discord.client.LibraryUrls`).

Sending needs no gateway: the provider sends, edits and opens DMs through a second
discord.py client that only logs in (REST), made at start. The gateway client is made only
while it receives. Every gateway session gets every DM, so the provider is
:attr:`~DiscordProvider.one_consumer`: instances of pairbot on one state take turns on the
gateway (the runtime's lease) and all of them send; a press on a button another instance
sent reaches the gateway's holder, which knows every pairbot button (they are dynamic items
keyed by their custom id). A new holder starts a new session (IDENTIFY, one of the bot's
daily session starts): Discord replays missed events only on a RESUME of the same session,
so what was written to the bot between the old holder's end and the new one's READY is not
delivered to pairbot (the person writes again).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar

import yarl

from bot.core.errors import ProviderError
from bot.core.models import Button, ChatKind, Inbound
from providers.base import BaseProvider, Convert
from providers.discord import commands, kinds, views
from providers.discord._sdk import discord
from providers.discord.client import Client, LibraryUrls
from providers.limits import ButtonLimits, TextSplit

LIBRARY_API_BASE_URL = discord.http.Route.BASE
"""discord.py's own REST root (``https://discord.com/api/v10``)."""

MAX_CONTENT = 2000
"""Discord refuses message content longer than this."""

_SPLIT = TextSplit(limit=MAX_CONTENT, lines_from=0.0, keep_breaks=False, escape="\\")
"""At the last line break (dropped with those after it), else hard, never after a ``\\``."""
_REMEMBERED = 4096
_REFUSALS: dict[type[Exception], tuple[str, str]] = {
    discord.LoginFailure: (
        "Discord rejected the bot token",
        "reset the token in the Developer Portal (Bot → Reset Token), and check api_base_url",
    ),
}
"""What Discord's refusals at start mean for the token's ``ConfigError``: message, hint."""
_UNDELIVERABLE = {
    50007: "they share no server with the bot, take no direct messages from its server, or "
    "blocked it",
    50278: "they share no server with the bot",
}
"""Discord's JSON error codes for a DM it will not deliver ("Cannot send messages to this
user"), and what each means."""
_REACH_HINT = (
    "they must be in a server with the bot and allow direct messages from its members; see "
    "docs/providers/discord.md"
)

_ANYWHERE = re.compile(r"([\\*_~|`<\[\]])")
_LINE_START = re.compile(r"^([ \t]*)([>#-]|\d+(?=\.))", re.MULTILINE)


def plain(text: str) -> str:
    r"""Escape ``text`` so a Discord client shows it as written, never as markdown.

    Backslash-escapes the characters that format anywhere (``\ * _ ~ | ` < [ ]``: emphasis,
    spoilers, code, mentions and emoji, masked links) and those that only do at a line's
    start (quotes, headers, lists).
    """
    escaped = _ANYWHERE.sub(r"\\\1", text)

    def line_start(match: re.Match[str]) -> str:
        lead, mark = match[1], match[2]
        # "1." starts an ordered list: the dot is what to escape.
        return f"{lead}{mark}\\" if mark[0].isdigit() else f"{lead}\\{mark}"

    return _LINE_START.sub(line_start, escaped)


def _carries_media(message: discord.Message) -> bool:
    """Whether a message carries files (photos, voice messages: "Attachment Object") or
    stickers (``sticker_items``) besides its text."""
    return bool(message.attachments or message.stickers)


class DiscordProvider(BaseProvider):
    """The Discord provider: one discord.py client (a bot token) on the gateway.

    Args:
        token: the bot token (Developer Portal → your app → Bot → Reset Token).
        api_base_url: the REST root, ``https://discord.com/api/v10`` unless a fake is used
            (``/v10`` is added when the URL names no version). Process-wide while running.
        gateway_url: the gateway to connect to first (resumes go where READY says). Unset:
            discord.py's ``wss://gateway.discord.gg/``, or with a custom ``api_base_url`` the
            URL its ``GET /gateway/bot`` names. Process-wide while running.
        name: the provider name carried by every :class:`~bot.core.models.Inbound`.

    :meth:`start` can be called again after :meth:`stop`.
    """

    platform = "Discord"
    one_consumer = True
    button_limits: ClassVar[ButtonLimits | None] = views.LIMITS
    text_split = _SPLIT
    dedupe_size = _REMEMBERED
    drain_timeout = 10.0

    def __init__(
        self,
        *,
        token: str,
        api_base_url: str | None = None,
        gateway_url: str | None = None,
        name: str = "discord",
    ) -> None:
        super().__init__(name=name)
        self._token = self._required("token", token, "the bot token is empty").strip()
        self._rest = self._rest_root(api_base_url)
        self._gateway = self._gateway_url(gateway_url)
        self._client: Client | None = None
        """The gateway client, while receiving."""
        self._sender: discord.Client | None = None
        """The REST client every send, edit and DM goes through, while running."""
        self._accepting = False
        self._runner: asyncio.Task[None] | None = None
        self._kinds = kinds.ChannelKinds(name=name, log=self._log, size=_REMEMBERED)
        self._dm_channels: dict[str, str] = {}
        self._dm_users: dict[str, str] = {}  # the other way round: DM channel → user

    def __repr__(self) -> str:
        return f"DiscordProvider(name={self.name!r}, api_base_url={self._rest!r})"

    def _rest_root(self, url: str | None) -> str:
        if url is None:
            return LIBRARY_API_BASE_URL
        parsed = yarl.URL(url.rstrip("/"))
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise self._config_error("api_base_url", "must be an http(s) URL")
        root = str(parsed)
        return root if re.search(r"/v\d+$", parsed.path) else f"{root}/v10"

    def _gateway_url(self, url: str | None) -> yarl.URL | None:
        if url is None:
            return None
        parsed = yarl.URL(url)
        if parsed.scheme not in ("ws", "wss") or not parsed.host:
            raise self._config_error("gateway_url", "must be a ws(s) URL")
        return parsed

    # -- lifecycle (the hooks of BaseProvider) -----------------------------------------------

    async def _connect(self) -> None:
        """Log in over REST (the token is checked): the bot can send from now on.

        Raises:
            ConfigError: Discord rejected the token, or another provider in this process points
                discord.py elsewhere.
            discord.DiscordException, aiohttp.ClientError, OSError: Discord could not be
                reached or answered otherwise.
        """
        if not LibraryUrls.acquire(self, self._rest, self._gateway):  # released by _disconnect
            raise self._config_error(
                "api_base_url",
                "another Discord provider in this process uses a different api_base_url or "
                "gateway_url; discord.py reads them process-wide",
            )
        sender = self._sender = discord.Client(
            intents=discord.Intents(guilds=True),  # never used (no gateway); none would warn
            max_messages=None,
            allowed_mentions=discord.AllowedMentions.none(),
        )
        try:
            await sender.login(self._token)
        except discord.LoginFailure:
            message, hint = _REFUSALS[discord.LoginFailure]
            raise self._config_error("token", message, hint=hint) from None

    async def _listen(self) -> None:
        """Log the gateway client in, register buttons and slash commands, connect; return
        once READY arrived.

        Raises:
            ConfigError: Discord rejected the token.
            TimeoutError: the gateway did not become ready within 30 s.
            discord.DiscordException, aiohttp.ClientError, OSError: Discord could not be
                reached or answered otherwise.
        """
        self._accepting = True
        client = self._client = Client(
            name=self.name,
            log=self._log,
            on_message=self._on_message,
            on_press=self._on_button,
            on_slash=self._on_slash,
        )
        find_gateway = self._gateway is None and self._rest != LIBRARY_API_BASE_URL
        runner = asyncio.create_task(
            client.serve(self._token, find_gateway=find_gateway), name=f"{self.name}-gateway"
        )
        self._runner = runner
        error = await client.ready(runner)
        for refusal, (message, hint) in _REFUSALS.items():
            if isinstance(error, refusal):
                raise self._config_error("token", message, hint=hint) from None
        if error is not None:
            raise error
        runner.add_done_callback(self._runner_ended)
        self._log.info(
            "%s: connected as %s (id %s)",
            self.name,
            client.user,
            client.user.id if client.user else "?",
        )

    async def _stop_receiving(self) -> None:
        """Take no new events; the gateway stays open while the accepted ones are handled
        (a slash command is answered through it)."""
        self._accepting = False

    async def _received(self) -> None:
        """Close the gateway (also that of a start that failed)."""
        client, runner = self._client, self._runner
        self._client = self._runner = None
        if client is not None:
            await client.close()
        if runner is not None:
            runner.remove_done_callback(self._runner_ended)
            await asyncio.gather(runner, return_exceptions=True)

    async def _disconnect(self) -> None:
        """Close the gateway, if still open, and the REST client's HTTP session."""
        sender, self._sender = self._sender, None
        try:
            await self._received()
            if sender is not None:
                await sender.close()
        finally:
            LibraryUrls.release(self)

    def _runner_ended(self, runner: asyncio.Task[None]) -> None:
        if runner.cancelled() or not self.receiving:
            return
        error = runner.exception()
        self._log.error(
            "%s: the Discord connection ended and will not come back (%s); restart pairbot",
            self.name,
            type(error).__name__ if error else "closed",
        )

    def _taking(self) -> bool:
        """Whether events are taken: from the start of receiving until it stops."""
        return self._accepting

    # -- outbound ----------------------------------------------------------------------------

    async def send(self, chat_id: str, text: str, *, buttons: Sequence[Button] = ()) -> str:
        """Send ``text`` as plain text (split above 2000 characters), buttons under the last
        part; return the last part's message id. Sent to the DM of a slash command being
        handled, it answers that command.

        Raises:
            ButtonError: a button's command or label does not fit Discord (nothing was sent).
            ProviderStateError: the provider is not running.
            ProviderError: Discord will not deliver a DM to that person (50007, 50278).
            discord.HTTPException: Discord refused the message otherwise.
        """
        views.check_commands(buttons)
        return await super().send(chat_id, text, buttons=buttons)

    def _outgoing(self, text: str) -> str:
        return plain(text)

    async def _send_text(self, chat_id: str, text: str, buttons: Sequence[Button]) -> str:
        client = self._need(self._sender)
        view = views.view(buttons) if buttons else None
        reply = commands.REPLY.get()
        if reply is not None and reply.takes(chat_id):
            try:
                return await reply.answer(text, view)
            except discord.HTTPException as exc:
                self._log.warning(
                    "%s: answering a slash command failed (HTTP %s); sending instead",
                    self.name,
                    exc.status,
                )
        channel = client.get_partial_messageable(int(chat_id))
        extra: dict[str, Any] = {"view": view} if view is not None else {}
        try:
            message = await channel.send(text, suppress_embeds=True, **extra)
        except discord.Forbidden as exc:
            raise self._undeliverable(exc, self._dm_users.get(chat_id)) from exc
        return str(message.id)

    def _undeliverable(self, exc: discord.HTTPException, user_id: str | None) -> Exception:
        """``exc``, or the :class:`ProviderError` saying whom Discord will not DM and why."""
        why = _UNDELIVERABLE.get(exc.code)
        if why is None:
            return exc
        whom = f"user {user_id}" if user_id else "this user"
        return ProviderError(
            f"{self.name}: Discord will not deliver a direct message to {whom} "
            f"(error {exc.code}: {why})",
            hint=_REACH_HINT,
        )

    async def edit(self, chat_id: str, message_id: str, text: str) -> None:
        """Replace a sent message's text (cut to 2000 characters) and remove its buttons.

        Raises:
            ProviderStateError: the provider is not running.
            discord.HTTPException: Discord refused the edit.
        """
        client = self._need(self._sender)
        message = client.get_partial_messageable(int(chat_id)).get_partial_message(int(message_id))
        await message.edit(content=_SPLIT.fit(plain(text)), view=None)

    async def dm_chat_id(self, user_id: str) -> str:
        """Open (or find) the DM channel with ``user_id`` (``POST /users/@me/channels``).

        Discord opens one for anybody but a bot: whether a message there arrives is known only
        when one is sent.

        Raises:
            ValueError: ``user_id`` is not a snowflake.
            ProviderStateError: the provider is not running.
            ProviderError: ``user_id`` is a bot (50007).
            discord.HTTPException: Discord refused otherwise (an unknown user).
        """
        cached = self._dm_channels.get(user_id)
        if cached is not None:
            return cached
        client = self._need(self._sender)
        try:
            channel = await client.create_dm(discord.Object(id=int(user_id)))
        except discord.HTTPException as exc:
            raise self._undeliverable(exc, user_id) from exc
        self._kinds.remember(channel.id, ChatKind.DM)
        self._dm_channels[user_id] = str(channel.id)
        self._dm_users[str(channel.id)] = user_id
        return str(channel.id)

    # -- inbound -----------------------------------------------------------------------------

    def _on_message(self, message: discord.Message) -> None:
        """Filter a gateway message and queue it; runs in gateway order, before any await."""
        author = message.author
        if not self._taking() or author.bot or author.system or message.webhook_id:
            return
        client = self._client
        if client is not None and client.user is not None and author.id == client.user.id:
            return
        if message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return
        if not message.content and not _carries_media(message):
            return  # nothing a person wrote or sent: an embed only, or content withheld
        if self._first_time(message.id):
            self._enqueue(lambda: self._from_message(message))

    async def _on_button(self, interaction: discord.Interaction[Any], command: str) -> None:
        if not self._taking() or not self._first_time(interaction.id):
            return
        try:
            await interaction.response.defer()  # acknowledged; the message stays as it is
        except discord.HTTPException as exc:
            self._log.warning("%s: acknowledging a button failed (HTTP %s)", self.name, exc.status)
        user, message = interaction.user, interaction.message
        if user.bot or message is None or interaction.channel_id is None:
            return
        kind = kinds.of_interaction(interaction)
        at, chat = interaction.created_at, interaction.channel_id
        self._enqueue(self._inbound(user, chat, kind, command, at, message.id, is_button=True))

    async def _on_slash(self, interaction: discord.Interaction[Any], line: str) -> None:
        if not self._taking() or not self._first_time(interaction.id):
            return
        user = interaction.user
        if user.bot or interaction.channel_id is None:
            return
        kind = kinds.of_interaction(interaction)
        reply: commands.Reply | None = None
        try:
            reply = await commands.acknowledge(interaction, in_dm=kind is ChatKind.DM)
        except discord.HTTPException as exc:
            self._log.warning(
                "%s: acknowledging a slash command failed (HTTP %s)", self.name, exc.status
            )
        inbound = self._inbound(user, interaction.channel_id, kind, line, interaction.created_at)
        self._enqueue(inbound if reply is None else self._answering(reply, inbound))

    def _answering(self, reply: commands.Reply, inbound: Inbound) -> Convert:
        """Deliver ``inbound`` with ``reply`` answering it in place, then close the reply."""

        async def deliver() -> Inbound | None:
            token = commands.REPLY.set(reply)
            try:
                await self._deliver(inbound)
            finally:
                commands.REPLY.reset(token)
                try:
                    await reply.close()
                except discord.HTTPException as exc:
                    self._log.debug(
                        "%s: removing an unused slash placeholder failed (HTTP %s)",
                        self.name,
                        exc.status,
                    )
            return None  # delivered already

        return deliver

    async def _from_message(self, message: discord.Message) -> Inbound | None:
        kind = await self._kinds.of_message(message, self._need(self._client))
        if kind is None:
            return None
        author, chat, at = message.author, message.channel.id, message.created_at
        media = _carries_media(message)
        return self._inbound(author, chat, kind, message.content, at, message.id, media=media)

    def _inbound(
        self,
        user: discord.abc.User,
        chat_id: int,
        kind: ChatKind,
        text: str,
        sent_at: datetime,
        message_id: int | None = None,
        *,
        is_button: bool = False,
        media: bool = False,
    ) -> Inbound:
        """An Inbound from ``user``: the snowflake id; names (untrusted) only as names."""
        meta = {"username": user.name, "name": user.global_name or ""}
        return Inbound(
            provider=self.name,
            chat_id=str(chat_id),
            chat_kind=kind,
            sender_id=str(user.id),
            sender_name=user.global_name or user.name,
            text=text,
            message_id=None if message_id is None else str(message_id),
            is_button=is_button,
            meta={key: value for key, value in meta.items() if value},
            sent_at=sent_at,
            media=media,
        )


__all__ = ["DiscordProvider", "plain"]
