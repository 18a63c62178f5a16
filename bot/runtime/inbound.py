"""The inbound pipeline: every message a provider hands in, from the gate to its answer.

The gate (:func:`bot.core.gate.decide`) decides; this module carries the decision out: an
owner's command is run and answered (a node decision goes on to the gateway), an allowed
sender's message goes to the handler, a stranger's is handed to that platform's stranger
worker (a bounded queue, so no stranger's traffic delays an allowed sender or the owner),
which asks the pairing service for a code and tells the owners. A state file that goes bad
while running refuses only the messages that need it, and the owners are told once
(:class:`~bot.runtime.badstate.BadStateFiles`).

A platform event is handled by one instance of all those on one state: before a message that
has a platform id is handled, its key (``in:<provider>:<chat>:<sender>:<message id>``) is
claimed on the cluster for :data:`IN_FLIGHT` (renewed while the handling runs), then kept for
:data:`HANDLED_KEEP`; a message whose key another instance holds is dropped. The providers'
own dedupe (in memory) stays the first line: it costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta

from bot.core import messages
from bot.core.commands import parse
from bot.core.errors import StoreError, StoreUnavailableError
from bot.core.gate import Decision, decide
from bot.core.models import (
    ChatKind,
    DmPolicy,
    Inbound,
    NodeDecision,
    NodeVerdict,
    RequestOutcome,
)
from bot.core.platforms import find
from bot.core.text import remaining
from bot.gateway.server import Gateway
from bot.runtime.badstate import BadStateFiles
from bot.runtime.claims import ClaimedWork
from bot.runtime.handlers import Handler
from bot.runtime.metrics import Latency
from bot.runtime.notices import OwnerNotices
from bot.runtime.remembered import remember_secret
from bot.runtime.shared import Shared
from bot.runtime.telling import ApprovedTeller
from bot.services.owner import OwnerCommands, OwnerFailure, OwnerReply

log = logging.getLogger(__name__)

STALE_STRANGER = timedelta(minutes=5)
"""A stranger's message older than this when it arrives (a backlog) creates no request."""
STRANGER_QUEUE = 1000
"""Strangers' messages waiting per platform; beyond that they are dropped (and counted)."""
IN_FLIGHT = timedelta(seconds=10)
"""How long an inbound event's claim lasts unless renewed (every third of it while it is
handled): an instance that dies mid-message holds it at most this long, so a takeover after
that handles it."""
HANDLED_KEEP = timedelta(hours=24)
"""How long an inbound event stays claimed once handled: longer than any platform
redelivers (Slack retries for an hour, WhatsApp and BlueBubbles for less, Telegram's updates
live 24 h)."""


@dataclass(eq=False, kw_only=True)
class InboundPipeline:
    """Carries out the gate's decision on each inbound message; never raises into a provider.

    ``policies`` is the app's own mapping, filled as providers start.
    """

    shared: Shared
    policies: Mapping[str, DmPolicy]
    owner: OwnerCommands
    handler: Handler
    notices: OwnerNotices
    teller: ApprovedTeller
    gateway: Gateway | None
    bad_state: BadStateFiles
    _strangers: dict[str, asyncio.Queue[Inbound]] = field(default_factory=dict, init=False)
    _stranger_workers: dict[str, asyncio.Task[None]] = field(default_factory=dict, init=False)
    claims: ClaimedWork = field(init=False)
    """The inbound events this instance is handling or handled, claimed on the cluster."""
    decisions: dict[Decision, int] = field(
        default_factory=lambda: dict.fromkeys(Decision, 0), init=False
    )
    """Messages by the gate's decision (the metrics read it: one increment per message)."""
    requests: Counter[tuple[str, RequestOutcome]] = field(default_factory=Counter, init=False)
    """Strangers' messages by (provider, what pairing did): a repeat settled in memory is
    ``pending``."""
    latency: Latency | None = None
    """The handler's latency, measured only when the metrics are on."""

    def __post_init__(self) -> None:
        self.claims = ClaimedWork(
            self.shared.cluster,
            clock=self.shared.clock,
            outage=self.shared.outage,
            ttl=IN_FLIGHT,
            kept=HANDLED_KEEP,
            fail_open=True,  # a cluster away must not stop allowed senders
        )

    async def on_inbound(self, msg: Inbound) -> None:
        """Handle one inbound message or button press; never raises into the provider.

        A stranger's message is handed to that platform's stranger worker, so no stranger's
        traffic delays an allowed sender or the owner; a repeat from a stranger already
        pending and not due a reminder is settled in memory, without touching the store.

        A message another instance handles (or handled) is dropped; one that fails here is
        given back, for a redelivery to handle.
        """
        key = _event_key(msg)
        if key is None:
            await self._guarded(msg, self._on_inbound)
            return
        if not await self.claims.take(key):
            log.debug(
                "dropped a %s message from %s: another instance has it",
                msg.provider,
                msg.sender_id,
            )
            return
        handled = False
        try:
            handled = await self._guarded(msg, self._on_inbound)
        finally:
            await self.claims.done(key, ok=handled)

    async def _guarded(self, msg: Inbound, handle: Callable[[Inbound], Awaitable[None]]) -> bool:
        """Run ``handle``; True if it ran through, False if it failed (logged, answered)."""
        try:
            await handle(msg)
        except StoreUnavailableError as exc:  # refused closed; the owner hears why
            log.debug("refused a %s message from %s: %s", msg.provider, msg.sender_id, exc)
            self.shared.outage.failed(exc)
            await self._tell_owner_store_down(msg)
        except StoreError as exc:  # refused closed: no code sent, nothing granted
            log.error("refused a %s message from %s: %s", msg.provider, msg.sender_id, exc)
            await self.bad_state.track(exc)
        except Exception:
            log.exception("failed to handle a %s message from %s", msg.provider, msg.sender_id)
        else:
            if self.bad_state.known:
                await self.bad_state.track(None)
            return True
        return False

    async def _tell_owner_store_down(self, msg: Inbound) -> None:
        """An owner's message could not be handled for want of the store: say so, in their
        chat (a stranger is told nothing: no code while the store is down)."""
        msg = _normal_sender(msg)
        if (msg.provider, msg.sender_id) not in self.shared.owners or msg.chat_kind != ChatKind.DM:
            return
        provider = self.shared.providers.get(msg.provider)
        if provider is None:
            return
        try:
            await provider.send(msg.chat_id, messages.store_unavailable())
        except Exception as exc:
            log.warning("could not tell owner %s the store is down (%s)", msg.sender_id, exc)

    async def _on_inbound(self, msg: Inbound) -> None:
        msg = _normal_sender(msg)
        is_owner = (msg.provider, msg.sender_id) in self.shared.owners
        if is_owner and msg.chat_kind == ChatKind.DM:  # the platform lets us answer again
            await self.notices.missed.owner_wrote(msg.provider, msg.sender_id)
        policy = self.policies.get(msg.provider, DmPolicy.PAIRING)
        allowed = False
        if not is_owner and policy in (DmPolicy.PAIRING, DmPolicy.ALLOWLIST):
            allowed = await self.shared.is_allowed(msg.provider, msg.sender_id)
        provider = self.shared.providers.get(msg.provider)
        bare = bool(getattr(provider, "bare_commands", False))
        decision = decide(
            msg, policy=policy, is_owner=is_owner, is_allowed=allowed, bare_commands=bare
        )
        log.debug("decision=%s provider=%s sender=%s", decision, msg.provider, msg.sender_id)
        self.decisions[decision] += 1
        if decision is Decision.OWNER_COMMAND:
            await self._owner_command(msg)
        elif decision is Decision.FORWARD:
            await self._forward(msg)
        elif decision is Decision.CHALLENGE:
            if msg.sent_at is not None and self.shared.clock.now() - msg.sent_at > STALE_STRANGER:
                # Platforms keep undelivered messages (Telegram: 24 h); a backlog of old
                # stranger messages after downtime gets no codes and no owner notices.
                log.info(
                    "ignored a stale message from stranger %s on %s", msg.sender_id, msg.provider
                )
                return
            if self.shared.pairing.settled_in_memory(
                msg.provider, msg.sender_id, self._stranger_meta(msg), text=_held_text(msg)
            ):
                self.requests[(msg.provider, RequestOutcome.PENDING)] += 1
                return
            self._queue_stranger(msg)

    async def _forward(self, msg: Inbound) -> None:
        """An allowed sender's message: to the handler, its reply back to the chat."""
        latency = self.latency
        if latency is None:
            reply = await self.handler(msg)
        else:
            began = time.perf_counter()
            reply = await self.handler(msg)
            latency.observe(time.perf_counter() - began)
        if reply:
            await self.shared.providers[msg.provider].send(msg.chat_id, reply)

    def _queue_stranger(self, msg: Inbound) -> None:
        queue = self._strangers.get(msg.provider)
        if queue is None:
            queue = self._strangers[msg.provider] = asyncio.Queue(STRANGER_QUEUE)
            self._stranger_workers[msg.provider] = asyncio.create_task(
                self._stranger_worker(queue), name=f"pairbot-strangers-{msg.provider}"
            )
        try:
            queue.put_nowait(msg)
        except asyncio.QueueFull:
            self.dropped_strangers += 1
            if self.dropped_strangers in (1, 10, 100) or self.dropped_strangers % 1000 == 0:
                log.warning(
                    "%s: %d stranger messages dropped so far: more than %d waited "
                    "(a flood); allowed senders are not affected",
                    msg.provider,
                    self.dropped_strangers,
                    STRANGER_QUEUE,
                )

    dropped_strangers = 0
    """Strangers' messages dropped because their platform's queue was full."""

    async def _stranger_worker(self, queue: asyncio.Queue[Inbound]) -> None:
        """One platform's strangers, in the order they wrote, off the providers' path."""
        while True:
            msg = await queue.get()
            try:
                await self._guarded(msg, self._challenge)
            finally:
                queue.task_done()

    async def stop(self) -> None:
        """Stop the stranger workers and the claims' renewal (the claims of messages handled
        are kept); run once the providers have stopped."""
        await self.stop_stranger_workers()
        await self.claims.aclose()

    async def stop_stranger_workers(self) -> None:
        for task in self._stranger_workers.values():
            task.cancel()
        for task in self._stranger_workers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._stranger_workers.clear()
        self._strangers.clear()

    @staticmethod
    def _stranger_meta(msg: Inbound) -> dict[str, str]:
        meta = dict(msg.meta)
        if msg.chat_id != msg.sender_id:
            meta["chatId"] = msg.chat_id
        return meta

    async def _challenge(self, msg: Inbound) -> None:
        result = await asyncio.to_thread(
            functools.partial(
                self.shared.pairing.request,
                msg.provider,
                msg.sender_id,
                self._stranger_meta(msg),
                text=_held_text(msg),
            )
        )
        self.requests[(msg.provider, result.outcome)] += 1
        if result.outcome is RequestOutcome.ALLOWED:
            # Approved elsewhere a moment ago: no code, no notice. What they wrote while
            # pending goes to the handler first, if this instance tells them.
            await self.teller.tell()
            await self.teller.handed(msg.provider, msg.sender_id)
            await self._forward(msg)
            return
        req = result.request
        if req is not None:
            remember_secret(req.code)  # before any SDK logs the reply that carries it
        reply = self.shared.reply_to_strangers(msg.provider)
        if result.send_code and req is not None and reply.tells:
            left = remaining(
                req.expires_at(self.shared.pairing.settings.pending_ttl) - self.shared.clock.now()
            )
            text = reply.text(req, valid_for=left)
            if text:
                await self.shared.providers[msg.provider].send(msg.chat_id, text)
        if result.outcome is RequestOutcome.CREATED and req is not None:
            await self.notices.pairing_request(req)
        elif result.outcome is RequestOutcome.CAPPED:
            self.notices.schedule_capped(msg.provider)

    async def _owner_command(self, msg: Inbound) -> None:
        actor = f"owner:{msg.provider}:{msg.sender_id}"
        provider = self.shared.providers[msg.provider]
        command = parse(msg.text, bare=provider.bare_commands)
        line = command.line if command else msg.text
        # A press on one of our own notices, with the command that notice carried: a stale
        # press is "already handled", not a wrong code (a guess cannot name a real notice).
        pressed = bool(
            msg.is_button
            and msg.message_id
            and self.notices.pressed(msg.provider, msg.chat_id, msg.message_id, line)
        )
        reply = await asyncio.to_thread(self.owner.run, command, actor=actor, pressed=pressed)
        if reply.invitation is not None:
            for secret in reply.invitation.secrets:
                remember_secret(secret)  # the reply carries it; no log line may
        text = reply.text
        if reply.approved is not None:
            await self.teller.tell()
        if reply.node_approved is not None or reply.node_rejected or reply.node_revoked:
            text = await self._node_effects(reply) or text
        if provider.bare_commands:
            text = messages.without_slashes(text)
        if msg.is_button and msg.message_id:
            if reply.failure in (OwnerFailure.UNKNOWN, OwnerFailure.HANDLED):
                text = messages.already_handled()
            await provider.edit(msg.chat_id, msg.message_id, text)
        else:
            await provider.send(msg.chat_id, text)

    async def _node_effects(self, reply: OwnerReply) -> str | None:
        """Carry an owner's node decision to the asker over the gateway."""
        gateway = self.gateway
        if reply.node_approved is not None:
            approval = reply.node_approved
            delivered = await gateway.deliver_approval(approval) if gateway is not None else False
            return messages.node_approved(approval.node, delivered=delivered)
        if gateway is None:
            return None
        if reply.node_rejected is not None:
            await gateway.deliver(
                NodeDecision.on_request(reply.node_rejected, NodeVerdict.REJECTED)
            )
        if reply.node_revoked is not None:
            await gateway.deliver(NodeDecision.revocation(reply.node_revoked.node_id))
        return None


def _held_text(msg: Inbound) -> str | None:
    """What of a stranger's message may be held for the handler: its text, when it is text
    alone (a photo's caption is not held)."""
    return None if msg.media else msg.text


def _event_key(msg: Inbound) -> str | None:
    """The cluster key of a platform event, or None if it has none to be told apart by.

    A message id is unique only within its chat on some platforms (Telegram's count up per
    chat, Signal's are the sender's timestamp), so the chat and the sender are in the key. A
    button press carries the id of the notice it was pressed on, the same for every press:
    presses are not deduplicated here (a second press of a handled notice is answered
    "already handled").
    """
    if msg.message_id is None or msg.is_button:
        return None
    msg = _normal_sender(msg)
    return f"in:{msg.provider}:{msg.chat_id}:{msg.sender_id}:{msg.message_id}"


def _normal_sender(msg: Inbound) -> Inbound:
    """The message with its sender in the platform's normal form: the one place an inbound
    id is normalised, before the owners, the allowlist, the requests and the logs see it.

    Providers hand over the id as their platform gives it (signal-cli's ACI, BlueBubbles'
    handle); the config and the store hold the same normal form, so an owner written
    ``Alice@Example.com`` is the sender BlueBubbles calls ``alice@example.com``.
    """
    rule = find(msg.provider)
    if rule is None:
        return msg
    sender = rule.ids.normalise(msg.sender_id)
    return msg if sender == msg.sender_id else replace(msg, sender_id=sender)


__all__ = ["InboundPipeline"]
