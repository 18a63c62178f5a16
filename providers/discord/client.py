"""discord.py's client as pairbot runs it, and the two URLs discord.py reads process-wide.

:class:`Client` asks for the Guilds and Direct Messages intents, and no privileged one: a
DM's content reaches an app without the Message Content intent (discord-api-docs, "Message
Content Intent": "Content in DMs with the app"), and asking for a privileged intent the app was
not granted closes the gateway with 4014. It keeps no message cache, lets no mention ping,
registers pairbot's persistent buttons (:mod:`providers.discord.views`) and slash commands
(:mod:`providers.discord.commands`) at start, and hands messages, button presses and slash
commands to the callbacks it was given (the provider's).

discord.py reads its REST root and first gateway URL from two class attributes
(``discord.http.Route.BASE``, ``DiscordWebSocket.DEFAULT_GATEWAY``); :class:`LibraryUrls`
sets them while providers run (pointing discord.py at a fake or a proxy) and restores them
when the last one stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, ClassVar

import yarl

from bot.core.errors import ProviderError
from providers.discord import commands, views
from providers.discord._sdk import DiscordWebSocket, app_commands, discord

READY_TIMEOUT = 30.0
"""Seconds :meth:`Client.ready` waits for the gateway's READY."""


class LibraryUrls:
    """Sets discord.py's two URL class attributes while providers run, then restores them.

    A provider asks for a REST root and a gateway URL (None: the library's, or the one the
    REST root's ``GET /gateway/bot`` names, set later with :meth:`use_gateway`). Each holder
    is remembered, so releasing what was never acquired (after a refused start) changes
    nothing.
    """

    holders: ClassVar[set[object]] = set()
    saved: ClassVar[tuple[str, yarl.URL] | None] = None
    active: ClassVar[tuple[str, yarl.URL | None] | None] = None

    @classmethod
    def acquire(cls, holder: object, rest: str, gateway: yarl.URL | None) -> bool:
        """Point discord.py at ``rest`` and ``gateway``; False if another holder wants others."""
        wanted = (rest, gateway)
        if cls.holders and cls.active != wanted:
            return False
        if not cls.holders:
            cls.saved = (discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)
            cls.active = wanted
            discord.http.Route.BASE = rest
            DiscordWebSocket.DEFAULT_GATEWAY = gateway or cls.saved[1]
        cls.holders.add(holder)
        return True

    @classmethod
    def use_gateway(cls, gateway: yarl.URL) -> None:
        """The gateway the REST root named, for a holder that gave none."""
        DiscordWebSocket.DEFAULT_GATEWAY = gateway

    @classmethod
    def release(cls, holder: object) -> None:
        """Let go of ``holder``'s claim; the last one out restores discord.py's own URLs."""
        if holder not in cls.holders:
            return
        cls.holders.discard(holder)
        if not cls.holders and cls.saved is not None:
            discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = cls.saved
            cls.saved = cls.active = None


class Client(discord.Client):
    """The discord.py client of one provider (``name``, logging to ``log``)."""

    def __init__(
        self,
        *,
        name: str,
        log: logging.Logger,
        on_message: Callable[[discord.Message], None],
        on_press: views.OnPress,
        on_slash: commands.OnSlash,
    ) -> None:
        intents = discord.Intents.none()
        intents.guilds = True
        intents.dm_messages = True
        super().__init__(
            intents=intents,
            max_messages=None,
            chunk_guilds_at_startup=False,
            allowed_mentions=discord.AllowedMentions.none(),
            guild_ready_timeout=0.5,
        )
        self.name, self.log = name, log
        self.connected = asyncio.Event()
        self._take_message, self._take_press = on_message, on_press
        self.tree: app_commands.CommandTree[Client] = app_commands.CommandTree(self)
        commands.add_commands(self.tree, on_slash)

    async def serve(self, token: str, *, find_gateway: bool) -> None:
        """Log in and connect (to the gateway the REST root names, if ``find_gateway``)."""
        await self.login(token)
        if find_gateway:
            _, url, _ = await self.http.get_bot_gateway()
            LibraryUrls.use_gateway(yarl.URL(url))
        await self.connect()

    async def ready(self, runner: asyncio.Task[None]) -> BaseException | None:
        """Wait until READY arrived (None) or ``runner`` (running :meth:`serve`) ended; if not
        ready, why: the runner's error, or a :class:`TimeoutError` after :data:`READY_TIMEOUT`."""
        waiter = asyncio.ensure_future(self.connected.wait())
        try:
            done, _ = await asyncio.wait(
                {runner, waiter}, timeout=READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
        if waiter in done:
            return None
        if not runner.done():
            return TimeoutError(
                f"{self.name}: the Discord gateway was not ready within {READY_TIMEOUT:.0f}s"
            )
        error = runner.exception()
        return error or ProviderError(f"{self.name}: the Discord client stopped while starting")

    async def setup_hook(self) -> None:
        """Listen for pairbot buttons on any message, and register the slash commands."""
        self.add_dynamic_items(views.CommandButton)
        try:
            await self.tree.sync()
        except discord.HTTPException as exc:
            self.log.warning(
                "%s: registering slash commands failed (HTTP %s); text commands still work",
                self.name,
                exc.status,
            )

    async def on_connect(self) -> None:
        """READY arrived: events flow."""
        self.connected.set()

    async def on_resumed(self) -> None:
        """The gateway session was resumed after a drop."""
        self.log.info("%s: gateway session resumed", self.name)

    async def on_message(self, message: discord.Message) -> None:
        """Hand a gateway message on, in gateway order."""
        self._take_message(message)

    async def button_pressed(self, interaction: discord.Interaction[Any], command: str) -> None:
        """Hand a press of a pairbot button on (see :class:`views.PressTarget`)."""
        await self._take_press(interaction, command)


__all__ = ["Client", "LibraryUrls"]
