"""Which kind of chat a Discord channel is: a DM only when the channel's type says so.

discord.py builds a ``DMChannel`` for every guild-less message, group DMs included, and a
guild channel it has not cached has no type; so :class:`ChannelKinds` reads the type of such a
channel once from ``GET /channels/{id}`` and remembers it. Guild channels are GROUP
(announcement channels CHANNEL), group DMs GROUP; an interaction is a DM only in the bot's own
DM (:func:`of_interaction`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from bot.core.models import ChatKind
from providers.discord._sdk import discord


def of_interaction(interaction: discord.Interaction[Any]) -> ChatKind:
    """DM only in the bot's own DM (context BOT_DM, channel type ``private``)."""
    channel = interaction.channel
    if interaction.guild_id is not None:
        return _guild_kind(getattr(channel, "type", None))
    if isinstance(channel, discord.DMChannel) and not interaction.context.private_channel:
        return ChatKind.DM
    return ChatKind.GROUP


def _guild_kind(channel_type: discord.ChannelType | None) -> ChatKind:
    return ChatKind.CHANNEL if channel_type == discord.ChannelType.news else ChatKind.GROUP


class ChannelKinds:
    """The kinds of the last ``size`` channels looked up; a failed lookup is logged to ``log``
    (as provider ``name``)."""

    def __init__(self, *, name: str, log: logging.Logger, size: int) -> None:
        self._name, self._log, self._size = name, log, size
        self._known: OrderedDict[int, ChatKind] = OrderedDict()

    def remember(self, channel_id: int, kind: ChatKind) -> None:
        """Note the kind of a channel known otherwise (a DM channel the bot opened)."""
        self._known.setdefault(channel_id, kind)
        while len(self._known) > self._size:
            self._known.popitem(last=False)

    async def of_message(
        self, message: discord.Message, client: discord.Client
    ) -> ChatKind | None:
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
        kind = await self._of_channel(channel.id, client)
        if in_guild:
            return kind if kind in (ChatKind.GROUP, ChatKind.CHANNEL) else ChatKind.GROUP
        return kind

    async def _of_channel(self, channel_id: int, client: discord.Client) -> ChatKind | None:
        known = self._known.get(channel_id)
        if known is not None:
            return known
        try:
            fetched = await client.fetch_channel(channel_id)
        except (discord.HTTPException, discord.InvalidData) as exc:
            self._log.warning(
                "%s: could not look up channel %s (%s)", self._name, channel_id, type(exc).__name__
            )
            return None
        if isinstance(fetched, discord.DMChannel):
            kind = ChatKind.DM
        elif isinstance(fetched, discord.GroupChannel):
            kind = ChatKind.GROUP
        else:
            kind = _guild_kind(getattr(fetched, "type", None))
        self.remember(channel_id, kind)
        return kind


__all__ = ["ChannelKinds", "of_interaction"]
