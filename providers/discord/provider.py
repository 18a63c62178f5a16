"""Discord, through discord.py: DMs, buttons and slash commands in; plain text and buttons out.

:class:`DiscordProvider` runs a ``discord.Client`` on the gateway with the DM messages and
message content intents. It owns the Discord-specific rules:

* Identity is the user's snowflake id, never a username or display name.
* A chat is a DM only when the channel's type says so (``ChannelType.private``): discord.py
  builds a ``DMChannel`` for every guild-less message, group DMs included, so the type of a
  channel seen for the first time is read once from ``GET /channels/{id}`` and remembered.
  Guild channels are GROUP (announcement channels CHANNEL), group DMs GROUP.
* Messages from bots (itself included), webhooks and system messages, edits, and messages
  without text never become an :class:`~bot.core.models.Inbound`. Every message and interaction is
  handled at most once, by id, so events the gateway replays after a RESUME are not handled
  twice.
* Buttons are persistent: their ``custom_id`` is ``pairbot:<command>`` and a
  ``discord.ui.DynamicItem`` registered at start matches it, so a notice sent before a
  restart still works after it. A press is acknowledged at once (a deferred update) and
  delivered as an ``is_button`` Inbound; :meth:`DiscordProvider.edit` drops the buttons.
* Owner commands also exist as slash commands, allowed in the bot's DMs only. An invocation is
  deferred at once and delivered as ``Inbound(text="/approve CODE")``; whatever the core then
  sends to that DM while handling it becomes the command's response (the first send fills the
  "thinking" placeholder, later ones are followups); if the core sends nothing the placeholder
  is deleted.
* Text goes out as plain text: markdown is backslash-escaped (a client shows the text as
  written), mentions never ping and link previews are suppressed.

Inbound events are handled one at a time, in gateway order; an exception from the callback is
logged (never the text) and handling goes on. discord.py reconnects and resumes by itself.

discord.py reads its REST root and first gateway URL from two class attributes
(``discord.http.Route.BASE``, ``DiscordWebSocket.DEFAULT_GATEWAY``), so ``api_base_url`` and
``gateway_url`` act process-wide: they are set while a provider runs and restored when the last
one stops, and two providers in one process must agree on them. With ``api_base_url`` alone,
the gateway is the one that REST root's ``GET /gateway/bot`` names.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import yarl

from bot.core.commands import COMMANDS, Command
from bot.core.errors import ConfigError
from bot.core.models import Button, ChatKind, Inbound
from bot.core.protocols import OnInbound

with warnings.catch_warnings():
    # discord.py imports audioop (deprecated since Python 3.11) for voice, which pairbot
    # never uses: keep that warning from failing strict runs (-W error, pytest).
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import discord
    from discord import app_commands
    from discord.gateway import DiscordWebSocket

_LOG = logging.getLogger(__name__)

# Voice is never used: skip discord.py's one-time "PyNaCl/davey is not installed" warnings.
discord.VoiceClient.warn_nacl = False
discord.VoiceClient.warn_dave = False

LIBRARY_API_BASE_URL = discord.http.Route.BASE
"""discord.py's own REST root (``https://discord.com/api/v10``)."""

BUTTON_PREFIX = "pairbot:"
MAX_CUSTOM_ID = 100
"""Discord refuses a component ``custom_id`` longer than this."""
MAX_LABEL = 80
MAX_CONTENT = 2000
"""Discord refuses message content longer than this."""

START_TIMEOUT = 30.0
DRAIN_TIMEOUT = 10.0
_REMEMBERED = 4096
_DM_ONLY_NOTE = "Pairbot commands work only in a direct message with the bot."

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


def _split(content: str, limit: int = MAX_CONTENT) -> list[str]:
    """Cut escaped content into messages Discord accepts, at line ends where possible."""
    chunks: list[str] = []
    while len(content) > limit:
        cut = content.rfind("\n", 0, limit)
        if cut <= 0:
            cut = limit
            run = len(content[:cut]) - len(content[:cut].rstrip("\\"))
            cut -= run % 2  # never separate a backslash from the character it escapes
        chunks.append(content[:cut])
        content = content[cut:].lstrip("\n")
    chunks.append(content)
    return chunks


def _fit(content: str, limit: int = MAX_CONTENT) -> str:
    """Shorten escaped content to one message, ending with an ellipsis if cut."""
    return content if len(content) <= limit else _split(content, limit - 1)[0] + "…"


class _Recent:
    """The last few thousand keys seen, with a value each (oldest forgotten first)."""

    def __init__(self, size: int = _REMEMBERED) -> None:
        self._items: OrderedDict[int, object] = OrderedDict()
        self._size = size

    def add(self, key: int, value: object = True) -> bool:
        """Remember ``key``; return False if it was already there."""
        if key in self._items:
            return False
        self._items[key] = value
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return True

    def get(self, key: int) -> object | None:
        return self._items.get(key)


class _LibraryUrls:
    """Sets discord.py's two URL class attributes while providers run, then restores them.

    A provider asks for a REST root and a gateway URL (None: the library's, or the one the
    REST root's ``GET /gateway/bot`` names, set later with :meth:`use_gateway`).
    """

    users = 0
    saved: tuple[str, yarl.URL] | None = None
    active: tuple[str, yarl.URL | None] | None = None

    @classmethod
    def acquire(cls, rest: str, gateway: yarl.URL | None, name: str) -> None:
        wanted = (rest, gateway)
        if cls.users and cls.active != wanted:
            raise ConfigError(
                "another Discord provider in this process uses a different api_base_url or "
                "gateway_url; discord.py reads them process-wide",
                source=f"providers.{name}",
                field="api_base_url",
            )
        if not cls.users:
            cls.saved = (discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)
            cls.active = wanted
            discord.http.Route.BASE = rest
            DiscordWebSocket.DEFAULT_GATEWAY = gateway or cls.saved[1]
        cls.users += 1

    @classmethod
    def use_gateway(cls, gateway: yarl.URL) -> None:
        DiscordWebSocket.DEFAULT_GATEWAY = gateway

    @classmethod
    def release(cls) -> None:
        cls.users = max(0, cls.users - 1)
        if not cls.users and cls.saved is not None:
            discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = cls.saved
            cls.saved = cls.active = None


@dataclass(slots=True)
class _Reply:
    """A deferred slash command: the core's sends to its DM become the command's response."""

    interaction: discord.Interaction[Any]
    channel_id: str
    used: bool = False
    open: bool = True


_REPLY: contextvars.ContextVar[_Reply | None] = contextvars.ContextVar(
    "pairbot_discord_reply", default=None
)

_Item = discord.Message | tuple[Inbound, _Reply | None]


def _style(label: str) -> discord.ButtonStyle:
    word = label.strip().lower()
    if word.startswith("approve"):
        return discord.ButtonStyle.success
    if word.startswith(("reject", "deny", "revoke")):
        return discord.ButtonStyle.danger
    return discord.ButtonStyle.secondary


class _CommandButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=re.escape(BUTTON_PREFIX) + r"(?P<command>/.+)",
):
    """A button whose ``custom_id`` carries the command it sends; matched after restarts."""

    def __init__(self, command: str, label: str) -> None:
        super().__init__(
            discord.ui.Button(label=label, style=_style(label), custom_id=BUTTON_PREFIX + command)
        )
        self.command = command

    @classmethod
    async def from_custom_id(
        cls,
        _interaction: discord.Interaction[discord.Client],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> _CommandButton:
        """Rebuild the button from a press on any message, even one sent before a restart."""
        return cls(match["command"], getattr(item, "label", None) or "?")

    async def callback(self, interaction: discord.Interaction[discord.Client]) -> None:
        """Hand the press to the provider that runs this client."""
        client = interaction.client
        if isinstance(client, _Client):
            await client.provider._on_button(interaction, self.command)


class _Client(discord.Client):
    """The discord.py client of one :class:`DiscordProvider`."""

    def __init__(self, provider: DiscordProvider) -> None:
        intents = discord.Intents.none()
        intents.guilds = True
        intents.dm_messages = True
        intents.message_content = True
        super().__init__(
            intents=intents,
            max_messages=None,
            chunk_guilds_at_startup=False,
            allowed_mentions=discord.AllowedMentions.none(),
            guild_ready_timeout=0.5,
        )
        self.provider = provider
        self.connected = asyncio.Event()
        self.tree: app_commands.CommandTree[_Client] = app_commands.CommandTree(self)
        _add_commands(self.tree, provider)

    async def setup_hook(self) -> None:
        """Listen for pairbot buttons on any message, and register the slash commands."""
        self.add_dynamic_items(_CommandButton)
        try:
            await self.tree.sync()
        except discord.HTTPException as exc:
            _LOG.warning(
                "%s: registering slash commands failed (HTTP %s); text commands still work",
                self.provider.name,
                exc.status,
            )

    async def on_connect(self) -> None:
        """READY arrived: events flow."""
        self.connected.set()

    async def on_resumed(self) -> None:
        """The gateway session was resumed after a drop."""
        _LOG.info("%s: gateway session resumed", self.provider.name)

    async def on_message(self, message: discord.Message) -> None:
        """Queue a message for the provider (filters and dedupe first)."""
        self.provider._on_message(message)


def _add_commands(tree: app_commands.CommandTree[_Client], provider: DiscordProvider) -> None:
    """The owner commands (:data:`bot.core.commands.COMMANDS`) as slash commands, usable in
    the bot's DMs only; an invocation arrives as the line it stands for (``/approve CODE``)."""
    for spec in COMMANDS:
        command: app_commands.Command[Any, Any, None] = app_commands.Command(
            name=spec.name, description=spec.summary, callback=_slash_callback(spec, provider)
        )
        command.allowed_contexts = app_commands.AppCommandContext(
            guild=False, dm_channel=True, private_channel=False
        )
        command.allowed_installs = app_commands.AppInstallationType(guild=True, user=False)
        tree.add_command(command)


def _slash_callback(
    spec: Command, provider: DiscordProvider
) -> Callable[..., Coroutine[Any, Any, None]]:
    """A callback whose signature (what discord.py turns into options) is ``spec``'s
    arguments; it hands the provider the command's line, empty options left out."""

    async def invoke(interaction: discord.Interaction[_Client], **options: str | None) -> None:
        words = [spec.word, *filter(None, (options.get(arg.name) for arg in spec.args))]
        await provider._on_slash(interaction, " ".join(words))

    parameters = [
        inspect.Parameter(
            "interaction", inspect.Parameter.POSITIONAL_ONLY, annotation=discord.Interaction
        )
    ]
    for arg in spec.args:
        kind: Any = cast(Any, Literal)[arg.choices] if arg.choices else str
        parameters.append(
            inspect.Parameter(
                arg.name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=kind if arg.required else kind | None,
                default=inspect.Parameter.empty if arg.required else None,
            )
        )
    invoke.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    return app_commands.describe(**{arg.name: arg.description for arg in spec.args})(invoke)


def _meta(user: discord.abc.User) -> dict[str, str]:
    meta = {"username": user.name, "name": user.global_name or ""}
    return {key: value for key, value in meta.items() if value}


def _guild_kind(channel_type: discord.ChannelType | None) -> ChatKind:
    return ChatKind.CHANNEL if channel_type == discord.ChannelType.news else ChatKind.GROUP


def _rest_root(url: str | None, name: str) -> str:
    if url is None:
        return LIBRARY_API_BASE_URL
    parsed = yarl.URL(url.rstrip("/"))
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(
            "must be an http(s) URL", source=f"providers.{name}", field="api_base_url"
        )
    root = str(parsed)
    return root if re.search(r"/v\d+$", parsed.path) else f"{root}/v10"


def _gateway(url: str | None, name: str) -> yarl.URL | None:
    if url is None:
        return None
    parsed = yarl.URL(url)
    if parsed.scheme not in ("ws", "wss") or not parsed.host:
        raise ConfigError("must be a ws(s) URL", source=f"providers.{name}", field="gateway_url")
    return parsed


class DiscordProvider:
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

    def __init__(
        self,
        *,
        token: str,
        api_base_url: str | None = None,
        gateway_url: str | None = None,
        name: str = "discord",
    ) -> None:
        if not token or not token.strip():
            raise ConfigError("the bot token is empty", source=f"providers.{name}", field="token")
        self.name = name
        self.bare_commands = False
        self._token = token.strip()
        self._rest = _rest_root(api_base_url, name)
        self._gateway = _gateway(gateway_url, name)
        self._client: _Client | None = None
        self._runner: asyncio.Task[None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._on_inbound: OnInbound | None = None
        self._accepting = False
        self._lock = asyncio.Lock()
        self._seen = _Recent()
        self._kinds = _Recent()
        self._dm_channels: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"DiscordProvider(name={self.name!r}, api_base_url={self._rest!r})"

    @property
    def running(self) -> bool:
        """Whether :meth:`start` has returned and :meth:`stop` has not begun."""
        return self._client is not None and self._accepting

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, on_inbound: OnInbound) -> None:
        """Log in, register buttons and slash commands, connect; return once READY arrived.

        Raises:
            ConfigError: Discord rejected the token or the Message Content intent, or another
                provider in this process points discord.py elsewhere.
            RuntimeError: the provider is already running.
            TimeoutError: the gateway did not become ready within 30 s.
            discord.DiscordException, aiohttp.ClientError, OSError: Discord could not be
                reached or answered otherwise.
        """
        async with self._lock:
            if self._client is not None:
                raise RuntimeError(f"{self.name}: provider is already running")
            _LibraryUrls.acquire(self._rest, self._gateway, self.name)  # released by teardown
            try:
                client = _Client(self)
                self._client, self._on_inbound, self._accepting = client, on_inbound, True
                self._queue = asyncio.Queue()
                self._worker = asyncio.create_task(self._work(), name=f"{self.name}-inbound")
                runner = asyncio.create_task(self._run(client), name=f"{self.name}-gateway")
                self._runner = runner
                await self._until_connected(client, runner)
            except BaseException:
                await self._teardown(drain=False)
                raise
            runner.add_done_callback(self._runner_ended)
        _LOG.info(
            "%s: connected as %s (id %s)",
            self.name,
            client.user,
            client.user.id if client.user else "?",
        )

    async def stop(self) -> None:
        """Finish the events received, then close the gateway and HTTP session. Idempotent."""
        async with self._lock:
            if self._client is None:
                return
            await self._teardown(drain=True)
        _LOG.info("%s: stopped", self.name)

    async def _run(self, client: _Client) -> None:
        """``client.start``, asking a custom REST root for its gateway if none was given."""
        await client.login(self._token)
        if self._gateway is None and self._rest != LIBRARY_API_BASE_URL:
            _, url, _ = await client.http.get_bot_gateway()
            _LibraryUrls.use_gateway(yarl.URL(url))
        await client.connect()

    async def _until_connected(self, client: _Client, runner: asyncio.Task[None]) -> None:
        waiter = asyncio.ensure_future(client.connected.wait())
        try:
            done, _ = await asyncio.wait(
                {runner, waiter}, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
        if waiter in done:
            return
        if not runner.done():
            raise TimeoutError(
                f"{self.name}: the Discord gateway was not ready within {START_TIMEOUT:.0f}s"
            )
        error = runner.exception()
        if isinstance(error, discord.LoginFailure):
            raise ConfigError(
                "Discord rejected the bot token",
                source=f"providers.{self.name}",
                field="token",
                hint="reset the token in the Developer Portal "
                "(Bot → Reset Token), and check api_base_url",
            ) from None
        if isinstance(error, discord.PrivilegedIntentsRequired):
            raise ConfigError(
                "Discord refused the Message Content intent",
                source=f"providers.{self.name}",
                field="token",
                hint="enable Message Content Intent under Bot → Privileged "
                "Gateway Intents in the Developer Portal",
            ) from None
        if error is not None:
            raise error
        raise RuntimeError(f"{self.name}: the Discord client stopped while starting")

    async def _teardown(self, *, drain: bool) -> None:
        client, runner, worker = self._client, self._runner, self._worker
        self._accepting = False
        try:
            if worker is not None:
                if drain:
                    self._queue.put_nowait(None)
                    try:
                        await asyncio.wait_for(asyncio.shield(worker), DRAIN_TIMEOUT)
                    except TimeoutError:
                        _LOG.warning(
                            "%s: events still in hand after %.0fs were dropped",
                            self.name,
                            DRAIN_TIMEOUT,
                        )
                worker.cancel()
                await asyncio.gather(worker, return_exceptions=True)
            if client is not None:
                await client.close()
            if runner is not None:
                runner.remove_done_callback(self._runner_ended)
                await asyncio.gather(runner, return_exceptions=True)
        finally:
            self._client = self._runner = self._worker = None
            self._on_inbound = None
            _LibraryUrls.release()

    def _runner_ended(self, runner: asyncio.Task[None]) -> None:
        if runner.cancelled() or not self._accepting:
            return
        error = runner.exception()
        _LOG.error(
            "%s: the Discord connection ended and will not come back (%s); restart pairbot",
            self.name,
            type(error).__name__ if error else "closed",
        )

    # -- outbound ----------------------------------------------------------------------------

    async def send(self, chat_id: str, text: str, *, buttons: Sequence[Button] = ()) -> str:
        """Send ``text`` as plain text (split above 2000 characters), buttons under the last
        part; return the last part's message id.

        Raises:
            ValueError: a button's command or label is too long for Discord.
            RuntimeError: the provider is not running.
            discord.HTTPException: Discord refused the message.
        """
        client = self._live_client()
        view = _view(buttons) if buttons else None
        parts = _split(plain(text))
        reply = _REPLY.get()
        message_id = ""
        for index, part in enumerate(parts):
            part_view = view if index == len(parts) - 1 else None
            if reply is not None and reply.open and reply.channel_id == chat_id:
                sent = await self._respond(reply, part, part_view)
                if sent is not None:
                    message_id = sent
                    continue
            channel = client.get_partial_messageable(int(chat_id))
            extra: dict[str, Any] = {"view": part_view} if part_view is not None else {}
            message = await channel.send(part, suppress_embeds=True, **extra)
            message_id = str(message.id)
        return message_id

    async def edit(self, chat_id: str, message_id: str, text: str) -> None:
        """Replace a sent message's text (cut to 2000 characters) and remove its buttons.

        Raises:
            RuntimeError: the provider is not running.
            discord.HTTPException: Discord refused the edit.
        """
        client = self._live_client()
        message = client.get_partial_messageable(int(chat_id)).get_partial_message(int(message_id))
        await message.edit(content=_fit(plain(text)), view=None)

    async def dm_chat_id(self, user_id: str) -> str:
        """Open (or find) the DM channel with ``user_id`` (``POST /users/@me/channels``).

        Raises:
            ValueError: ``user_id`` is not a snowflake.
            RuntimeError: the provider is not running.
            discord.HTTPException: Discord refused (unknown user, no shared server).
        """
        cached = self._dm_channels.get(user_id)
        if cached is not None:
            return cached
        client = self._live_client()
        channel = await client.create_dm(discord.Object(id=int(user_id)))
        self._kinds.add(channel.id, ChatKind.DM)
        self._dm_channels[user_id] = str(channel.id)
        return str(channel.id)

    async def _respond(
        self, reply: _Reply, content: str, view: discord.ui.View | None
    ) -> str | None:
        """Answer a deferred slash command; None (and the reply closed) if Discord refused."""
        extra: dict[str, Any] = {"view": view} if view is not None else {}
        try:
            message = await reply.interaction.followup.send(
                content,
                wait=True,
                suppress_embeds=True,
                allowed_mentions=discord.AllowedMentions.none(),
                **extra,
            )
        except discord.HTTPException as exc:
            _LOG.warning(
                "%s: answering a slash command failed (HTTP %s); sending instead",
                self.name,
                exc.status,
            )
            reply.open = False
            return None
        reply.used = True
        return str(message.id)

    def _live_client(self) -> _Client:
        if self._client is None:
            raise RuntimeError(f"{self.name}: provider is not running")
        return self._client

    # -- inbound -----------------------------------------------------------------------------

    def _on_message(self, message: discord.Message) -> None:
        """Filter a gateway message and queue it; runs in gateway order, before any await."""
        author = message.author
        if not self._accepting or author.bot or author.system or message.webhook_id:
            return
        client = self._client
        if client is not None and client.user is not None and author.id == client.user.id:
            return
        if message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return
        if not message.content:
            return  # attachments, stickers, embeds only: not text
        if not self._seen.add(message.id):
            _LOG.debug("%s: message %s seen before, skipped", self.name, message.id)
            return
        self._queue.put_nowait(message)

    async def _on_button(self, interaction: discord.Interaction[Any], command: str) -> None:
        if not self._accepting or not self._seen.add(interaction.id):
            return
        try:
            await interaction.response.defer()  # acknowledged; the message stays as it is
        except discord.HTTPException as exc:
            _LOG.warning("%s: acknowledging a button failed (HTTP %s)", self.name, exc.status)
        user, message = interaction.user, interaction.message
        if user.bot or message is None or interaction.channel_id is None:
            return
        inbound = Inbound(
            provider=self.name,
            chat_id=str(interaction.channel_id),
            chat_kind=self._interaction_kind(interaction),
            sender_id=str(user.id),
            sender_name=user.global_name or user.name,
            text=command,
            message_id=str(message.id),
            is_button=True,
            meta=_meta(user),
            sent_at=interaction.created_at,
        )
        self._queue.put_nowait((inbound, None))

    async def _on_slash(self, interaction: discord.Interaction[Any], line: str) -> None:
        if not self._accepting or not self._seen.add(interaction.id):
            return
        user = interaction.user
        if user.bot or interaction.channel_id is None:
            return
        kind = self._interaction_kind(interaction)
        reply: _Reply | None = None
        try:
            if kind is ChatKind.DM:
                await interaction.response.defer(thinking=True)
                reply = _Reply(interaction, str(interaction.channel_id))
            else:
                await interaction.response.send_message(_DM_ONLY_NOTE, ephemeral=True)
        except discord.HTTPException as exc:
            _LOG.warning(
                "%s: acknowledging a slash command failed (HTTP %s)", self.name, exc.status
            )
        inbound = Inbound(
            provider=self.name,
            chat_id=str(interaction.channel_id),
            chat_kind=kind,
            sender_id=str(user.id),
            sender_name=user.global_name or user.name,
            text=line,
            meta=_meta(user),
            sent_at=interaction.created_at,
        )
        self._queue.put_nowait((inbound, reply))

    async def _work(self) -> None:
        """Hand queued events to the core, one at a time, in order."""
        while True:
            item = await self._queue.get()
            if item is None:
                return
            try:
                if isinstance(item, discord.Message):
                    inbound, reply = await self._from_message(item), None
                else:
                    inbound, reply = item
                if inbound is not None:
                    await self._deliver(inbound, reply)
            except Exception:
                _LOG.exception("%s: handling an event failed", self.name)

    async def _deliver(self, inbound: Inbound, reply: _Reply | None) -> None:
        callback = self._on_inbound
        if callback is None:
            return
        token = _REPLY.set(reply)
        try:
            await callback(inbound)
        except Exception:
            _LOG.exception(
                "%s: handling message %s from %s failed",
                self.name,
                inbound.message_id or "(slash command)",
                inbound.sender_id,
            )
        finally:
            _REPLY.reset(token)
            if reply is not None:
                reply.open = False
                if not reply.used:
                    await self._drop_placeholder(reply)

    async def _drop_placeholder(self, reply: _Reply) -> None:
        try:
            await reply.interaction.delete_original_response()
        except discord.HTTPException as exc:
            _LOG.debug(
                "%s: removing an unused slash placeholder failed (HTTP %s)", self.name, exc.status
            )

    async def _from_message(self, message: discord.Message) -> Inbound | None:
        kind = await self._message_kind(message)
        if kind is None:
            return None
        author = message.author
        return Inbound(
            provider=self.name,
            chat_id=str(message.channel.id),
            chat_kind=kind,
            sender_id=str(author.id),
            sender_name=author.global_name or author.name,
            text=message.content,
            message_id=str(message.id),
            meta=_meta(author),
            sent_at=message.created_at,
        )

    async def _message_kind(self, message: discord.Message) -> ChatKind | None:
        """DM only for a channel of type ``private``; None when that cannot be known."""
        channel = message.channel
        if isinstance(channel, discord.abc.GuildChannel | discord.Thread):
            return _guild_kind(channel.type)
        if isinstance(channel, discord.GroupChannel):
            return ChatKind.GROUP
        in_guild = message.guild is not None or getattr(channel, "guild_id", None) is not None
        if in_guild and getattr(channel, "type", None) is not None:
            return _guild_kind(channel.type)
        # discord.py calls every guild-less channel a DMChannel (group DMs too), and a guild
        # channel it has not cached has no type: ask Discord once per channel.
        kind = await self._channel_kind(channel.id)
        if in_guild:
            return kind if kind in (ChatKind.GROUP, ChatKind.CHANNEL) else ChatKind.GROUP
        return kind

    async def _channel_kind(self, channel_id: int) -> ChatKind | None:
        known = self._kinds.get(channel_id)
        if isinstance(known, ChatKind):
            return known
        try:
            fetched = await self._live_client().fetch_channel(channel_id)
        except (discord.HTTPException, discord.InvalidData) as exc:
            _LOG.warning(
                "%s: could not look up channel %s (%s)", self.name, channel_id, type(exc).__name__
            )
            return None
        if isinstance(fetched, discord.DMChannel):
            kind = ChatKind.DM
        elif isinstance(fetched, discord.GroupChannel):
            kind = ChatKind.GROUP
        else:
            kind = _guild_kind(getattr(fetched, "type", None))
        self._kinds.add(channel_id, kind)
        return kind

    @staticmethod
    def _interaction_kind(interaction: discord.Interaction[Any]) -> ChatKind:
        """DM only in the bot's own DM (context BOT_DM, channel type ``private``)."""
        channel = interaction.channel
        if interaction.guild_id is not None:
            return _guild_kind(getattr(channel, "type", None))
        if isinstance(channel, discord.DMChannel) and not interaction.context.private_channel:
            return ChatKind.DM
        return ChatKind.GROUP


def _view(buttons: Sequence[Button]) -> discord.ui.View:
    """One row of persistent command buttons (at most 5, Discord's row size)."""
    if len(buttons) > 5:
        raise ValueError(f"{len(buttons)} buttons: Discord allows 5 in a row")
    view = discord.ui.View(timeout=None)
    for button in buttons:
        custom_id = BUTTON_PREFIX + button.command
        if not button.command.startswith("/") or len(custom_id) > MAX_CUSTOM_ID:
            raise ValueError(
                f"button {button.label!r}: command must start with '/' and be at most "
                f"{MAX_CUSTOM_ID - len(BUTTON_PREFIX)} characters"
            )
        if not 1 <= len(button.label) <= MAX_LABEL:
            raise ValueError(f"button label must be 1 to {MAX_LABEL} characters")
        view.add_item(_CommandButton(button.command, button.label))
    return view


__all__ = ["DiscordProvider", "plain"]
