"""What the running bot's jobs share: the owners, the providers, the clock, DM pairing, how
each provider answers strangers.

The owner notices, telling approved senders and the inbound pipeline each take this one
record, built once by :class:`~bot.runtime.app.App`, besides what is theirs alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

from bot.core.clock import Clock
from bot.core.messages import CODE_REPLY, StrangerReply
from bot.core.protocols import Cluster, Provider
from bot.runtime.outage import StoreOutage
from bot.services.pairing import PairingService


@dataclass(frozen=True, slots=True, kw_only=True)
class Shared:
    """The parts of the running bot that every job uses.

    ``providers`` is the app's own mapping, filled as providers start: a job sees a provider
    as soon as it runs.
    """

    owners: set[tuple[str, str]]
    """(provider, user id) of every owner."""
    providers: Mapping[str, Provider]
    clock: Clock
    pairing: PairingService
    cluster: Cluster
    """What this instance shares with the others on the same state (a cluster of one unless
    several instances run on one PostgreSQL)."""
    outage: StoreOutage = field(default_factory=StoreOutage)
    """Whether the state store is unreachable now (one log line per outage)."""
    stranger_replies: Mapping[str, StrangerReply] = field(default_factory=dict)
    """How each provider answers strangers (``unpaired_response``); the code where unset."""

    def reply_to_strangers(self, provider: str) -> StrangerReply:
        """How ``provider`` answers a stranger (and whether it tells them they were
        approved)."""
        return self.stranger_replies.get(provider, CODE_REPLY)

    async def is_allowed(self, provider: str, sender_id: str) -> bool:
        """Whether the sender may write (:meth:`PairingService.is_allowed`), asked without
        reading a file on the event loop: a changed allowlist is read in a worker thread,
        and only a message that needs that read waits for it."""
        answer = self.pairing.allowed_soon(provider, sender_id)
        while not isinstance(answer, bool):
            await asyncio.wrap_future(answer)
            answer = self.pairing.allowed_soon(provider, sender_id)
        return answer
