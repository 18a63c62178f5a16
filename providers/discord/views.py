"""Discord's persistent command buttons: the ``custom_id`` carries the command.

A button's ``custom_id`` is ``pairbot:<command>`` (``pairbot:/approve ABCD2345``), at most 100
characters, so a command may be at most 92. :class:`CommandButton`, a
``discord.ui.DynamicItem`` the client registers at start (``client.add_dynamic_items``),
matches any ``pairbot:/…`` id on any message, so a notice sent before a restart still works
after it (``client.add_view`` only matches fixed ids, and these carry the code). A press is
handed to the client it arrived on, if that client takes presses (:class:`PressTarget`).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from bot.core.errors import ButtonError
from bot.core.models import Button
from providers.discord._sdk import discord
from providers.limits import ButtonLimits

BUTTON_PREFIX = "pairbot:"
MAX_CUSTOM_ID = 100
"""Discord refuses a component ``custom_id`` longer than this."""
MAX_COMMAND = MAX_CUSTOM_ID - len(BUTTON_PREFIX)

LIMITS = ButtonLimits(command=MAX_COMMAND, count=5, count_noun="buttons in a row", label=80)
"""One row of buttons (Discord's row holds 5), labels of 1 to 80 characters."""

OnPress = Callable[[discord.Interaction[Any], str], Awaitable[None]]
"""Takes one press of a pairbot button and the command it carries."""


def check_commands(buttons: Sequence[Button]) -> None:
    """Discord's own rule, checked before :data:`LIMITS`: a command starts with ``/`` (what
    :class:`CommandButton` matches) and fits a ``custom_id``.

    Raises:
        ButtonError: a command that does not.
    """
    for button in buttons:
        if not button.command.startswith("/") or len(button.command) > MAX_COMMAND:
            raise ButtonError(
                f"button {button.label!r}: command must start with '/' and be at most "
                f"{MAX_COMMAND} characters"
            )


def view(buttons: Sequence[Button]) -> discord.ui.View:
    """One row of persistent command buttons (already checked), without a timeout."""
    row = discord.ui.View(timeout=None)
    for button in buttons:
        row.add_item(CommandButton(button.command, button.label))
    return row


def _style(label: str) -> discord.ButtonStyle:
    word = label.strip().lower()
    if word.startswith("approve"):
        return discord.ButtonStyle.success
    if word.startswith(("reject", "deny", "revoke")):
        return discord.ButtonStyle.danger
    return discord.ButtonStyle.secondary


@runtime_checkable
class PressTarget(Protocol):
    """A client that takes the presses of pairbot buttons (the Discord provider's)."""

    async def button_pressed(self, interaction: discord.Interaction[Any], command: str) -> None:
        """Take one press of a button carrying ``command``."""


class CommandButton(
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
    ) -> CommandButton:
        """Rebuild the button from a press on any message, even one sent before a restart."""
        return cls(match["command"], getattr(item, "label", None) or "?")

    async def callback(self, interaction: discord.Interaction[discord.Client]) -> None:
        """Hand the press to the client it arrived on."""
        client = interaction.client
        if isinstance(client, PressTarget):
            await client.button_pressed(interaction, self.command)


__all__ = ["LIMITS", "CommandButton", "OnPress", "PressTarget", "check_commands", "view"]
