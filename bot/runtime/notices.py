"""What the owners are told without asking: notices, their rate limit, their buttons.

Every owner chat gets each notice (a stranger's pairing request, a node asking to join,
strangers turned away over the cap, a state file gone bad). :class:`OwnerNotifier` sends at
most a few a minute and folds the rest into one digest; :class:`OwnerNotices` words each
notice, remembers which notices it sent with buttons (to tell a stale press from a guess),
and counts the strangers turned away for one notice per burst; :class:`BadStateFiles` tells
them once about each state file that goes bad while running. An owner the platform will not
let us write to until they write is told what they missed then (:mod:`bot.runtime.missed`).
A notice that cannot reach an owner chat for another reason (Discord's 50007) is logged with
the reason, and that owner is told once, through the owner chats it did reach, until a notice
reaches theirs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bot.core import messages
from bot.core.clock import Clock
from bot.core.errors import PairbotError, RecipientUnreachable, StoreUnavailableError
from bot.core.messages import NoticeKind, Told
from bot.core.models import Button, NodeApproval, NodeAsk, PendingRequest
from bot.core.protocols import Cluster
from bot.core.text import remaining
from bot.runtime.missed import MissedNotices
from bot.runtime.outage import StoreOutage
from bot.runtime.shared import Shared
from bot.services.nodes import NodeService

log = logging.getLogger(__name__)

BUTTON_MEMORY = 10_000
"""Owner notices with buttons remembered, to tell a stale press from a guess."""


class OwnerNotifier:
    """Sends notices to every owner chat, at most ``limit`` per ``window``; folds the rest.

    Notices beyond the limit are counted by what they tell of (a pairing request, a node
    request, strangers turned away; per platform) and sent as one digest when the window frees
    up, so a flood of strangers becomes one message that says what happened, not a wall of
    prompts to approve. Urgent notices (a state file gone bad) are never folded.

    The limit holds across instances: every notice about to be sent is counted in the
    cluster under ``notices`` (:meth:`~bot.core.protocols.Cluster.bump`), so N instances send
    ``limit`` notices per ``window`` between them, not N times that. A count past the limit
    folds the notice (it was counted, so a flood keeps the window full until it ends). What an
    instance folded it alone knows: it sends its own digest, at most one per ``window``, once
    its own oldest notice has left the window (a whole window if it sent none). While the
    cluster cannot be reached the instance counts its own notices only (``outage`` logs it).
    """

    def __init__(
        self,
        send: Callable[[str, Sequence[Button], Told], Awaitable[None]],
        *,
        clock: Clock,
        cluster: Cluster,
        limit: int = 5,
        window: timedelta = timedelta(minutes=1),
        outage: StoreOutage | None = None,
    ) -> None:
        self._send = send
        self._clock = clock
        self._cluster = cluster
        self._limit = limit
        self._window = window
        self._outage = outage
        self._sent: deque[datetime] = deque()
        """When this instance sent each notice within the window."""
        self._folded: Counter[tuple[NoticeKind, str]] = Counter()
        self._flush_task: asyncio.Task[None] | None = None
        self.sent_count = 0
        """Notices sent so far (a digest counts as one), for the metrics."""
        self.folded_count = 0
        """Notices folded into a digest so far, for the metrics."""

    async def notify(
        self,
        text: str,
        buttons: Sequence[Button] = (),
        *,
        kind: NoticeKind,
        provider: str = "",
        count: int = 1,
    ) -> None:
        """Send a notice now if the rate allows, else count it (``count`` of ``kind`` on
        ``provider``) into the next digest. ``send`` is told what the message tells of."""
        now = self._clock.now()
        while self._sent and now - self._sent[0] >= self._window:
            self._sent.popleft()
        # Once something is folded, later notices fold too (no jumping the queue); an urgent
        # notice is counted like any other, and sent whatever the count.
        urgent = kind is NoticeKind.URGENT
        if urgent or not self._folded:
            counted = await self._counted(now)
            if urgent or counted <= self._limit:
                self._sent.append(now)
                self.sent_count += 1
                await self._send(text, buttons, {(kind, provider): count})
                return
        self._folded[(kind, provider)] += count
        self.folded_count += count
        if self._flush_task is None or self._flush_task.done():
            oldest = self._sent[0] if self._sent else now
            wait = (oldest + self._window - now).total_seconds()
            self._flush_task = asyncio.create_task(self._flush_after(max(wait, 0.0)))

    async def _counted(self, now: datetime) -> int:
        """Count one notice in the cluster; return the notices of the window, this one
        included, of every instance (of this one alone while the cluster is away)."""
        try:
            return await asyncio.to_thread(
                self._cluster.bump, "notices", now=now, window=self._window
            )
        except StoreUnavailableError as exc:
            if self._outage is not None:
                self._outage.failed(exc)
            return len(self._sent) + 1

    async def _flush_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        folded, self._folded = self._folded, Counter()
        if folded:
            now = self._clock.now()
            self._sent.append(now)
            await self._counted(now)  # the digest fills the shared window too
            self.sent_count += 1
            await self._send(messages.owner_digest(folded), (), folded)

    async def aclose(self) -> None:
        """Cancel a pending digest."""
        if self._flush_task is not None:
            self._flush_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flush_task


@dataclass(frozen=True, slots=True, kw_only=True)
class NoticePacing:
    """How fast the owners are told: at most ``limit`` notices per ``window`` (the rest are
    folded into one digest); strangers turned away over the cap are counted for
    ``capped_delay`` seconds, then told in one notice."""

    limit: int
    window: timedelta
    capped_delay: float


@dataclass(eq=False, kw_only=True)
class OwnerNotices:
    """The notices every owner chat gets, worded; the buttons they carried, remembered."""

    shared: Shared
    nodes: NodeService
    pacing: NoticePacing
    preview: bool = False
    """A pairing request's notice shows the first line of the first message held
    (``pairing.notice_preview``)."""
    notifier: OwnerNotifier = field(init=False)
    missed: MissedNotices = field(init=False)
    _capped_tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict, init=False)
    _buttons: OrderedDict[tuple[str, str, str], frozenset[str]] = field(
        default_factory=OrderedDict, init=False
    )
    """(provider, chat, message) of each owner notice with buttons → their commands."""
    _unreached: set[tuple[str, str]] = field(default_factory=set, init=False)
    """Owner chats (provider, user id) that notices do not reach, whose owner was told so."""

    def __post_init__(self) -> None:
        limit, window = self.pacing.limit, self.pacing.window
        self.notifier = OwnerNotifier(
            self.send_to_owners,
            clock=self.shared.clock,
            cluster=self.shared.cluster,
            limit=limit,
            window=window,
            outage=self.shared.outage,
        )
        self.missed = MissedNotices(self.shared.providers)

    def pressed(self, provider: str, chat_id: str, message_id: str, line: str) -> bool:
        """Whether ``line`` is a command that our notice ``message_id`` carried as a button."""
        commands = self._buttons.get((provider, chat_id, message_id), ())
        return " ".join(line.split()) in commands

    async def state_file_unusable(self, problem: str) -> None:
        """Tell the owners a state file went bad (never folded into a digest)."""
        await self.notifier.notify(messages.state_file_unusable(problem), kind=NoticeKind.URGENT)

    def cancel_capped(self) -> None:
        """Drop the notices of strangers turned away that wait to be counted."""
        for task in self._capped_tasks.values():
            task.cancel()

    async def aclose(self) -> None:
        """Cancel what is scheduled: a pending digest and the turned-away notices."""
        self.cancel_capped()
        await self.notifier.aclose()

    async def pairing_request(self, req: PendingRequest) -> None:
        """Tell the owners a stranger asks to be paired, with Approve / Reject buttons (and
        how the stranger was answered: told nothing where the platform is silent)."""
        expires = remaining(
            req.expires_at(self.shared.pairing.settings.pending_ttl) - self.shared.clock.now()
        )
        buttons = (
            Button(label="Approve", command=f"/approve {req.code}"),
            Button(label="Reject", command=f"/reject {req.code}"),
        )
        await self.notifier.notify(
            messages.owner_notice(
                req,
                expires_in=expires,
                reply=self.shared.reply_to_strangers(req.provider),
                preview=self.preview,
            ),
            buttons,
            kind=NoticeKind.PAIRING_REQUEST,
            provider=req.provider,
        )

    async def node_request(self, ask: NodeAsk) -> None:
        """Tell the owner a node asks to join, with Approve / Reject buttons."""
        req = ask.request
        expires = remaining(
            req.expires_at(self.nodes.settings.pending_ttl) - self.shared.clock.now()
        )
        buttons = (
            Button(label="Approve", command=f"/nodes approve {req.request_id}"),
            Button(label="Reject", command=f"/nodes reject {req.request_id}"),
        )
        await self.notifier.notify(
            messages.node_notice(req, expires_in=expires, conflicts=ask.conflicts),
            buttons,
            kind=NoticeKind.NODE_REQUEST,
        )

    async def node_joined(self, approval: NodeApproval) -> None:
        """Tell the owners a node paired itself with one of their invites (no buttons: it is
        done; the notice says how to undo it)."""
        await self.notifier.notify(messages.node_joined(approval), kind=NoticeKind.NODE_JOINED)

    def schedule_capped(self, provider: str) -> None:
        """Tell the owners, once the burst is over, how many strangers were turned away."""
        task = self._capped_tasks.get(provider)
        if task is None or task.done():
            self._capped_tasks[provider] = asyncio.create_task(self._capped_notice(provider))

    async def _capped_notice(self, provider: str) -> None:
        await asyncio.sleep(self.pacing.capped_delay)
        count = self.shared.pairing.take_capped(provider)
        if count:
            cap = self.shared.pairing.settings.max_pending_per_provider
            await self.notifier.notify(
                messages.owner_capped(provider, count, cap),
                kind=NoticeKind.TURNED_AWAY,
                provider=provider,
                count=count,
            )

    async def send_to_owners(
        self, text: str, buttons: Sequence[Button] = (), told: Told | None = None
    ) -> None:
        """Send to every owner chat on a running platform now (no rate limit).

        ``told`` is what it tells of, kept for an owner the platform lets us write to only
        after they write (default: a forwarded message); the owner of a chat not reached for
        another reason is told, once, through the chats that were.
        """
        reached: list[tuple[str, str]] = []
        unreached: dict[tuple[str, str], str] = {}
        for provider_name, user_id in sorted(self.shared.owners):
            provider = self.shared.providers.get(provider_name)
            if provider is None:
                continue
            shown = messages.without_slashes(text) if provider.bare_commands else text
            try:
                chat_id = await provider.dm_chat_id(user_id)
                message_id = await provider.send(chat_id, shown, buttons=buttons)
            except RecipientUnreachable as exc:
                self.missed.add(
                    provider_name, user_id, told or {(NoticeKind.FORWARDED, ""): 1}, exc
                )
                continue
            except Exception as exc:
                # A PairbotError says why, and never holds a secret; an SDK's error may.
                why = str(exc) if isinstance(exc, PairbotError) else type(exc).__name__
                log.warning("could not reach owner %s on %s: %s", user_id, provider_name, why)
                unreached[(provider_name, user_id)] = why
                continue
            reached.append((provider_name, chat_id))
            self._unreached.discard((provider_name, user_id))
            if buttons and message_id:
                self._buttons[(provider_name, chat_id, message_id)] = frozenset(
                    " ".join(b.command.split()) for b in buttons
                )
                while len(self._buttons) > BUTTON_MEMORY:
                    self._buttons.popitem(last=False)
        if reached:
            await self._tell_unreached(unreached, reached)

    async def _tell_unreached(
        self, unreached: dict[tuple[str, str], str], reached: list[tuple[str, str]]
    ) -> None:
        """Tell the owners in ``reached`` chats about each newly ``unreached`` one, once."""
        for (provider_name, user_id), why in unreached.items():
            if (provider_name, user_id) in self._unreached:
                continue
            self._unreached.add((provider_name, user_id))
            told = messages.owner_unreachable(provider_name, user_id, why)
            for chat_provider, chat_id in reached:
                with contextlib.suppress(Exception):  # it took a notice; the next one tells
                    await self.shared.providers[chat_provider].send(chat_id, told)


__all__ = ["NoticePacing", "OwnerNotices", "OwnerNotifier"]
