"""The owner commands as Discord slash commands: in the bot's DMs only, answered in place.

:func:`add_commands` registers every command of the owner-commands table
(:data:`bot.core.commands.COMMANDS`) as a slash command allowed in the bot's DMs only
(``contexts: [BOT_DM]``, guild install only); an invocation reaches the provider as the line
it stands for (``/approve CODE``, empty options left out).

A command used in the bot's own DM is deferred at once (Discord shows "thinking…") by
:func:`acknowledge`, and its :class:`Reply` is set in :data:`REPLY` while the core handles
it: whatever the core sends to that DM meanwhile becomes the command's response (the first
send fills the placeholder, later ones are followups); if it sends nothing the placeholder is
deleted. Used anywhere else, the command is answered privately with :data:`DM_ONLY_NOTE`.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, cast

from bot.core.commands import COMMANDS, Command
from providers.discord._sdk import app_commands, discord

DM_ONLY_NOTE = "Pairbot commands work only in a direct message with the bot."

OnSlash = Callable[[discord.Interaction[Any], str], Awaitable[None]]
"""Takes one invocation and the command line it stands for."""


def add_commands(tree: app_commands.CommandTree[Any], on_slash: OnSlash) -> None:
    """Add the owner commands to ``tree``, usable in the bot's DMs only."""
    for spec in COMMANDS:
        command: app_commands.Command[Any, Any, None] = app_commands.Command(
            name=spec.name, description=spec.summary, callback=_callback(spec, on_slash)
        )
        command.allowed_contexts = app_commands.AppCommandContext(
            guild=False, dm_channel=True, private_channel=False
        )
        command.allowed_installs = app_commands.AppInstallationType(guild=True, user=False)
        tree.add_command(command)


def _callback(spec: Command, on_slash: OnSlash) -> Callable[..., Coroutine[Any, Any, None]]:
    """A callback whose signature (what discord.py turns into options) is ``spec``'s
    arguments; it hands on the command's line, empty options left out."""

    async def invoke(interaction: discord.Interaction[Any], **options: str | None) -> None:
        words = [spec.word, *filter(None, (options.get(arg.name) for arg in spec.args))]
        await on_slash(interaction, " ".join(words))

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


@dataclass(slots=True)
class Reply:
    """A deferred slash command: the core's sends to its DM become the command's response."""

    interaction: discord.Interaction[Any]
    channel_id: str
    used: bool = False
    open: bool = True

    def takes(self, chat_id: str) -> bool:
        """Whether a send to ``chat_id`` goes out as this command's response."""
        return self.open and self.channel_id == chat_id

    async def answer(self, content: str, view: discord.ui.View | None) -> str:
        """Send ``content`` as (part of) the response; return its message id.

        Raises:
            discord.HTTPException: Discord refused; the reply is closed, so what follows goes
                out as plain messages.
        """
        extra: dict[str, Any] = {"view": view} if view is not None else {}
        try:
            message = await self.interaction.followup.send(
                content,
                wait=True,
                suppress_embeds=True,
                allowed_mentions=discord.AllowedMentions.none(),
                **extra,
            )
        except discord.HTTPException:
            self.open = False
            raise
        self.used = True
        return str(message.id)

    async def close(self) -> None:
        """Take no more sends; delete the placeholder if nothing answered it.

        Raises:
            discord.HTTPException: Discord refused to delete it.
        """
        self.open = False
        if not self.used:
            await self.interaction.delete_original_response()


REPLY: contextvars.ContextVar[Reply | None] = contextvars.ContextVar(
    "pairbot_discord_reply", default=None
)
"""The slash command being handled in this context, if its DM answers it in place."""


async def acknowledge(interaction: discord.Interaction[Any], *, in_dm: bool) -> Reply | None:
    """Defer a command used in the bot's DM and return its :class:`Reply`; anywhere else,
    answer privately with :data:`DM_ONLY_NOTE` (None: nothing answers in place).

    Raises:
        discord.HTTPException: Discord refused the acknowledgement.
    """
    if not in_dm:
        await interaction.response.send_message(DM_ONLY_NOTE, ephemeral=True)
        return None
    await interaction.response.defer(thinking=True)
    return Reply(interaction, str(interaction.channel_id))


__all__ = ["DM_ONLY_NOTE", "REPLY", "OnSlash", "Reply", "acknowledge", "add_commands"]
