"""What an owner missed while their platform would not let the bot write to them.

Some platforms deliver nothing to a person until they write to the bot (WhatsApp: only within
24 hours of their last message); a provider says so by raising
:class:`~bot.core.errors.RecipientUnreachable`. Such an owner misses nothing silently: one
log line per burst, and what they missed is counted (by kind and platform, as a digest counts)
and told the next time they write there, when the platform lets the bot answer again.

The count is kept in memory. What it counts is durable anyway (``/pending`` and ``pairbot
pairing list`` read the store), so a restart loses only the heads-up, not a request; a state
file for a heads-up would be one more file to keep Clawdbot-compatible.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping

from bot.core import messages
from bot.core.messages import NoticeKind, Told
from bot.core.protocols import Provider

log = logging.getLogger(__name__)


class MissedNotices:
    """Per owner (provider, user id) the platform would not let us reach: what they missed.

    ``providers`` is the app's own mapping of running providers.
    """

    def __init__(self, providers: Mapping[str, Provider]) -> None:
        self.providers = providers
        self._missed: dict[tuple[str, str], Counter[tuple[NoticeKind, str]]] = {}

    def add(self, provider: str, user_id: str, told: Told, why: Exception) -> None:
        """Count ``told`` as missed by that owner; the first of a burst is logged."""
        missed = self._missed.get((provider, user_id))
        if missed is None:
            missed = self._missed[(provider, user_id)] = Counter()
            log.warning(
                "owner %s on %s cannot be written to until they write there (%s); what they "
                "miss is counted and told them then (meanwhile: pairbot pairing list)",
                user_id,
                provider,
                why,
            )
        missed.update(told)

    async def owner_wrote(self, provider_name: str, user_id: str) -> None:
        """An owner wrote in their DM: tell them what did not reach them there, if anything
        (kept for next time if this cannot be sent either)."""
        missed = self._missed.pop((provider_name, user_id), None)
        provider = self.providers.get(provider_name)
        if not missed or provider is None:
            return
        text = messages.owner_missed(provider_name, missed)
        if provider.bare_commands:
            text = messages.without_slashes(text)
        try:
            await provider.send(await provider.dm_chat_id(user_id), text)
        except Exception as exc:
            self.add(provider_name, user_id, missed, exc)


__all__ = ["MissedNotices"]
