"""Telling approved senders they are approved: once, whoever approved them, whenever.

An approval leaves a notice in the store's outbox (``approvedToTell``) in the same write as
the grant. :class:`ApprovedTeller` reads the outbox through the store every
``watch_interval`` (and at once after an owner-chat approval), tells each sender on a
platform this process runs, and drops the notice. So a sender approved by the CLI, by
another process or while the bot was down is told when a bot that runs their platform next
looks.

Every instance on one state sees the same outbox; one of them tells each sender. Before
sending, an instance claims ``tell:<provider>:<sender>:<approved at, µs>`` on the cluster for
:data:`TELL_CLAIM` (renewed while the send runs: a flood limit may hold it); only the one that
took it sends. Told: the notice is dropped and the claim kept for :data:`TOLD_KEEP` (an
instance still working through an older read of the outbox finds it taken); not told: the
claim is given back, for whichever instance looks next.

Messages the sender wrote while pending (``pairing.hold_messages``) moved from their request
to the notice in the approval's own write; they are handed to the handler, in order, right
after the sender is told (at once where strangers are answered with silence: there the
approved sender is told nothing either), each reply sent to the sender as an allowed
sender's would be, in a task per sender that keeps the approval's claim until it is done (a
look, and the owner's command that makes one, wait only for the telling). Progress is
written as it goes: first that the sender was told, then, after each message handed over,
the messages left; the notice is dropped with the last one. So a process that dies (or
stops) in the middle tells nobody twice and hands again at most the one message the handler
had when it died (at least once, never silently dropped); whichever instance looks next
goes on from there. A revocation drops the notice: nothing more is handed over for it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum

from bot.core import messages
from bot.core.errors import StoreError, StoreUnavailableError
from bot.core.models import ApprovalNotice, ChatKind, HeldMessage, Inbound
from bot.core.protocols import Provider
from bot.runtime.claims import ClaimedWork
from bot.runtime.handlers import Handler
from bot.runtime.shared import Shared

log = logging.getLogger(__name__)

NOTICE_GIVE_UP = timedelta(days=7)
"""An approved sender who could not be told within this long is no longer tried."""
TELL_CLAIM = timedelta(seconds=30)
"""How long an instance's claim to tell one approved sender lasts unless renewed."""
TOLD_KEEP = timedelta(hours=1)
"""How long the claim outlives the telling (longer than one look at the outbox takes)."""


class _Outcome(Enum):
    """How far one notice got."""

    DONE = "done"
    """Told (or nothing to tell), every held message handed over: drop the notice."""
    RETRY = "retry"
    """Not told, or the chat to hand over in not found: try again after a pause."""
    GONE = "gone"
    """The notice was dropped (revoked) or replaced (approved again) meanwhile: leave it."""
    HAND_OVER = "hand over"
    """Told (and written so); the held messages go to the handler in a task of their own."""


@dataclass(eq=False, kw_only=True)
class ApprovedTeller:
    """Sends "you're approved" to each sender in the outbox, on the platforms running here,
    and hands the handler what they wrote while pending."""

    shared: Shared
    watch_interval: float
    handler: Handler | None = None
    """Where the messages a sender wrote while pending go once they are told (the app's
    handler); None hands none over (they are dropped with the notice)."""
    _notice_retry: dict[tuple[str, str], tuple[int, datetime]] = field(
        default_factory=dict, init=False
    )
    """(provider, sender) → (failed sends, not before) for approved senders not told."""
    _telling: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    _handing: dict[tuple[str, str], asyncio.Task[None]] = field(default_factory=dict, init=False)
    """(provider, sender) → the task handing their held messages over, while it runs: off
    the path of whoever made the look (an owner's command waits only for the telling)."""
    claims: ClaimedWork = field(init=False)
    """The approved senders this instance is telling or told, claimed on the cluster."""

    def __post_init__(self) -> None:
        self.claims = ClaimedWork(
            self.shared.cluster,
            clock=self.shared.clock,
            outage=self.shared.outage,
            ttl=TELL_CLAIM,
            kept=TOLD_KEEP,
            fail_open=False,  # no cluster, no telling: a sender told twice is worse than later
        )

    async def run_forever(self) -> None:
        """Tell senders approved by anyone (the owner chat, the CLI, while the bot was down).

        Cancelled (the bot stops, before its providers), it cancels the hand-overs under way:
        the message in the handler's hands then is handed over again by the next start."""
        try:
            while True:
                try:
                    await self.tell()
                except StoreUnavailableError as exc:  # logged once per outage, not per look
                    self.shared.outage.failed(exc)
                except StoreError as exc:
                    log.error("could not read the approved senders to tell: %s", exc)
                except Exception:
                    log.exception("telling approved senders failed")
                await asyncio.sleep(self.watch_interval)
        finally:
            await self._stop_handing()

    async def tell(self) -> None:
        """Send "you're approved" to each approved sender not yet told, on the platforms this
        process runs, then forget the notice, or first hand what they wrote while pending to
        the handler (in a task of its own: this returns once they are told). A send that
        fails is retried with a growing pause; after :data:`NOTICE_GIVE_UP` the notice is
        dropped with a warning."""
        async with self._telling:
            notices = await asyncio.to_thread(self.shared.pairing.notices)
            self.shared.outage.ok()  # this look, every watch_interval, notices its end
            now = self.shared.clock.now()
            for notice in notices:
                provider = self.shared.providers.get(notice.provider)
                key = (notice.provider, notice.sender_id)
                retry = self._notice_retry.get(key)
                if provider is None or key in self._handing:
                    continue
                if retry is not None and now < retry[1]:
                    continue
                claim = _claim_key(notice)
                if not await self.claims.take(claim):
                    continue  # another instance tells them (or has told them)
                told = False
                handing = False
                try:
                    if now - notice.approved_at > NOTICE_GIVE_UP:
                        log.warning(
                            "gave up telling %s sender %s they were approved: "
                            "not reachable for %s (%d held message(s) dropped)",
                            notice.provider,
                            notice.sender_id,
                            NOTICE_GIVE_UP,
                            len(notice.held),
                        )
                        outcome = _Outcome.DONE
                    else:
                        outcome = await self._tell_first(provider, notice)
                    if outcome is _Outcome.HAND_OVER and self.handler is not None:
                        told_notice = replace(notice, told=True)
                        self._handing[key] = asyncio.create_task(
                            self._hand_over(self.handler, provider, told_notice, claim),
                            name=f"pairbot-held-{notice.provider}",
                        )
                        handing = True
                        continue
                    told = self._settled(notice, outcome, now)
                    if outcome is _Outcome.DONE:
                        await asyncio.to_thread(
                            self.shared.pairing.notice_sent, notice.provider, notice.sender_id
                        )
                finally:
                    if not handing:
                        await self.claims.done(claim, ok=told)

    async def handed(self, provider: str, sender_id: str) -> None:
        """Return once what ``sender_id`` wrote while pending has been handed over, if this
        instance is handing it over now."""
        task = self._handing.get((provider, sender_id))
        if task is not None:
            await asyncio.wait({task})

    async def aclose(self) -> None:
        """Stop the hand-overs under way and renewing claims; keep those of the senders told."""
        await self._stop_handing()
        await self.claims.aclose()

    async def _stop_handing(self) -> None:
        tasks = list(self._handing.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def _settled(self, notice: ApprovalNotice, outcome: _Outcome, now: datetime) -> bool:
        """Note how a notice's turn ended: a retry's pause grows; anything else is told (or
        given up on, or gone), and its claim is kept even if dropping the notice fails, so
        no instance tells them again before :data:`TOLD_KEEP`. Return whether it is."""
        key = (notice.provider, notice.sender_id)
        if outcome is _Outcome.RETRY:
            retry = self._notice_retry.get(key)
            failures = retry[0] + 1 if retry is not None else 1
            pause = min(timedelta(seconds=2**failures), timedelta(minutes=10))
            self._notice_retry[key] = (failures, now + pause)
            return False
        self._notice_retry.pop(key, None)
        return True

    async def _tell_first(self, provider: Provider, notice: ApprovalNotice) -> _Outcome:
        """Tell the sender (unless told, or their platform is silent); with held messages to
        hand over, write that they were told first, so nobody tells them twice."""
        tell = not notice.told and self.shared.reply_to_strangers(notice.provider).tells
        if tell and not await self._tell_one(provider, notice.chat_id, notice.sender_id):
            return _Outcome.RETRY
        if not notice.held or self.handler is None:
            return _Outcome.DONE
        if not notice.told and not await asyncio.to_thread(
            self.shared.pairing.notice_progress, replace(notice, told=True)
        ):
            return _Outcome.GONE
        return _Outcome.HAND_OVER

    async def _hand_over(
        self, handler: Handler, provider: Provider, notice: ApprovalNotice, claim: str
    ) -> None:
        """Hand ``notice``'s held messages over (its sender told), then drop it; the claim
        taken for it is kept once done, given back if this failed."""
        key = (notice.provider, notice.sender_id)
        done = False
        try:
            outcome = await self._hand_each(handler, provider, notice)
            done = self._settled(notice, outcome, self.shared.clock.now())
            if outcome is _Outcome.DONE:
                await asyncio.to_thread(
                    self.shared.pairing.notice_sent, notice.provider, notice.sender_id
                )
        except StoreUnavailableError as exc:  # the message in hand is handed over again
            self.shared.outage.failed(exc)
        except Exception:
            log.exception(
                "handing over what %s sender %s wrote while pending failed (will retry)",
                notice.provider,
                notice.sender_id,
            )
        finally:
            self._handing.pop(key, None)
            await self.claims.done(claim, ok=done)

    async def _hand_each(
        self, handler: Handler, provider: Provider, notice: ApprovalNotice
    ) -> _Outcome:
        """Hand ``notice``'s held messages to the handler in order, writing after each the
        ones left (the last one's is the notice dropped, by the caller). A sender no longer
        allowed (revoked) gets nothing more."""
        try:
            chat_id = notice.chat_id or await provider.dm_chat_id(notice.sender_id)
        except Exception as exc:
            log.warning(
                "could not open the chat of %s sender %s to hand over what they wrote "
                "while pending (will retry): %s",
                notice.provider,
                notice.sender_id,
                type(exc).__name__,
            )
            return _Outcome.RETRY
        held = notice.held
        for i, message in enumerate(held):
            # Asked fresh, in a thread: the notice was read from a newer state than the
            # gate's may be (the gate may answer from the version before for a moment).
            if not await asyncio.to_thread(
                self.shared.pairing.is_allowed, notice.provider, notice.sender_id
            ):
                return _Outcome.GONE  # revoked: the revocation drops the notice
            await _hand_one(handler, provider, chat_id, notice, message)
            left = held[i + 1 :]
            if left and not await asyncio.to_thread(
                self.shared.pairing.notice_progress, replace(notice, held=left)
            ):
                return _Outcome.GONE
        return _Outcome.DONE

    async def _tell_one(self, provider: Provider, chat_id: str | None, sender_id: str) -> bool:
        try:
            await provider.send(
                chat_id or await provider.dm_chat_id(sender_id), messages.approved_sender()
            )
        except Exception:
            log.warning(
                "could not tell %s sender %s they were approved (will retry)",
                provider.name,
                sender_id,
            )
            return False
        return True


async def _hand_one(
    handler: Handler,
    provider: Provider,
    chat_id: str,
    notice: ApprovalNotice,
    message: HeldMessage,
) -> None:
    """One held message to the handler, as an allowed sender's message; its reply to the
    sender. A failure is logged (never the text) and counts as handed over: a handler is
    never given one message twice on purpose."""
    inbound = Inbound(
        provider=notice.provider,
        chat_id=chat_id,
        chat_kind=ChatKind.DM,
        sender_id=notice.sender_id,
        text=message.text,
        sender_name=message.name,
        sent_at=message.at,
    )
    try:
        reply = await handler(inbound)
        if reply:
            await provider.send(chat_id, reply)
    except Exception as exc:
        log.warning(
            "a message %s sender %s wrote while pending: the handler or its reply failed (%s)",
            notice.provider,
            notice.sender_id,
            type(exc).__name__,
        )


def _claim_key(notice: ApprovalNotice) -> str:
    """The cluster key of telling one approval: a later approval of the same sender (after a
    revocation) is told again."""
    at = round(notice.approved_at.timestamp() * 1_000_000)
    return f"tell:{notice.provider}:{notice.sender_id}:{at}"


__all__ = ["NOTICE_GIVE_UP", "TELL_CLAIM", "TOLD_KEEP", "ApprovedTeller"]
