"""Owner commands: run what the owner typed (or pressed), parsed once by
:func:`bot.core.commands.parse`, on the services.

Only :mod:`bot.core.gate` decides who is an owner; this module trusts that decision and gives the
owner precise answers (approved whom, unknown code, expired). Failed approvals are counted
per owner (:class:`Lockout`): after 10 in a row the owner's approvals are refused for 15
minutes (doubling up to an hour), so even a hijacked owner account cannot enumerate codes.
The count and the pause live in the :class:`~bot.core.protocols.Cluster`, so N instances
behind one load balancer lock an owner out as one bot would.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from itertools import islice

from bot.core import commands, messages
from bot.core.clock import Clock
from bot.core.errors import (
    AllowedByConfigError,
    CodeExpiredError,
    ConfigError,
    LookupFailed,
    NodeRefused,
    UnknownCodeError,
)
from bot.core.invites import GatewayAddress, Invitation
from bot.core.models import AuditEvent, NodeApproval, NodeRequest, PairedNode, PendingRequest
from bot.core.platforms import find
from bot.core.protocols import Cluster
from bot.core.text import ago, clean, remaining, until
from bot.services.nodes import NodeService
from bot.services.pairing import AllowEntry, AllowSource, PairingService

log = logging.getLogger(__name__)

ALLOWLIST_PAGE = 30
"""Senders ``/allowlist`` shows a page: 30 of the longest usual ids (a Signal UUID, 43
characters with its label, 52 from the config) fill about 1,600 characters, under the
smallest platform's message (Discord's 2,000), so a page is one message everywhere."""
MAX_FAILURES = 10
LOCKOUT = timedelta(minutes=15)
MAX_LOCKOUT = timedelta(hours=1)
PAUSES_REMEMBERED = timedelta(days=1)
"""How long an owner's past pauses keep doubling the next one (a success forgets them)."""


class OwnerFailure(StrEnum):
    """Why an owner command failed."""

    UNKNOWN = "unknown"
    """No such code, request, node or allowed sender."""
    EXPIRED = "expired"
    LOCKED = "locked"
    """Too many wrong codes: approvals are paused."""
    REFUSED = "refused"
    """The node service refused (a request superseded, a node that changed meanwhile)."""
    USAGE = "usage"
    HANDLED = "handled"
    """A button pressed on a notice whose request is already gone."""
    IN_CONFIG = "in-config"
    """The sender is allowed by the config's ``allow_from``; only the config can change that."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OwnerReply:
    """The answer to one owner command, and what the app must do about it."""

    text: str
    ok: bool = True
    failure: OwnerFailure | None = None
    approved: PendingRequest | None = None
    node_approved: NodeApproval | None = None
    node_rejected: NodeRequest | None = None
    node_revoked: PairedNode | None = None
    invitation: Invitation | None = None
    """A node invite made: its setup code is in :attr:`text` (the app keeps it out of the
    logs before sending)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LockedOut:
    """A failure that paused an owner's approvals: after how many, and for how long."""

    failures: int
    pause: timedelta


class Lockout:
    """The per-owner count of wrong codes: :data:`MAX_FAILURES` within :data:`LOCKOUT` pause
    that owner's approvals for :data:`LOCKOUT`, doubling with each pause up to
    :data:`MAX_LOCKOUT`; a success starts the count again.

    Everything is kept in the ``cluster``, so wrong codes typed to any instance add up to one
    lockout and a pause started by one instance holds on all of them. Per owner (``actor``,
    an ``owner:<provider>:<id>`` string: never a code):

    * ``wrong:<actor>``, a counter over :data:`LOCKOUT`: the wrong codes; cleared by the
      failure that starts a pause and by a success;
    * ``lockout:<actor>``, a claim that lasts the pause (:meth:`paused` asks when it ends);
    * ``lockouts:<actor>``, a counter over :data:`PAUSES_REMEMBERED`: the pauses so far,
      which double the next one; cleared by a success.

    Owner commands run in worker threads, several at once: a lock makes counting a failure
    and clearing the count one step in this process, so no failure is lost and each pause is
    counted once. Across instances two failures at the very same moment may both start a
    pause; the second then only counts toward the doubling (the pause errs long, never
    short), and reports the pause that runs.
    """

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._lock = threading.Lock()

    def paused(self, actor: str, now: datetime) -> timedelta | None:
        """How much longer ``actor``'s approvals are paused, or None."""
        until = self._cluster.claimed_until(f"lockout:{actor}", now=now)
        return until - now if until is not None else None

    def fail(self, actor: str, now: datetime) -> LockedOut | None:
        """Count a wrong code; return the pause it starts, if it starts one."""
        cluster = self._cluster
        with self._lock:
            failures = cluster.bump(f"wrong:{actor}", now=now, window=LOCKOUT)
            if failures < MAX_FAILURES:
                return None
            cluster.clear(f"wrong:{actor}")
            pauses = cluster.bump(f"lockouts:{actor}", now=now, window=PAUSES_REMEMBERED)
            pause = min(LOCKOUT * 2 ** min(pauses - 1, 8), MAX_LOCKOUT)
            key = f"lockout:{actor}"
            if not cluster.claim(key, now=now, ttl=pause):
                cluster.keep(key, now=now, ttl=pause)  # ours: a pause in a pause grows it
            until = cluster.claimed_until(key, now=now)
        return LockedOut(failures=failures, pause=until - now if until is not None else pause)

    def succeed(self, actor: str) -> None:
        """A code was right: forget ``actor``'s failures (and the doubling)."""
        cluster = self._cluster
        with self._lock:
            cluster.clear(f"wrong:{actor}")
            cluster.clear(f"lockouts:{actor}")
            cluster.unclaim(f"lockout:{actor}")


_NODES = next(c for c in commands.COMMANDS if c.name == "nodes")


def _pages(count: int) -> str:
    return f"{count} page{'s' if count != 1 else ''}"


def _source(entry: AllowEntry, now: datetime) -> str:
    """What ``/allowlist`` says after a sender: when their grant ends, or that the config
    allows them (nothing for a stored grant for good)."""
    if entry.until is not None:
        return f" (until {until(entry.until, now)})"
    return " (config)" if entry.source is AllowSource.CONFIG else ""


def _paused_text(pause: timedelta) -> str:
    return f"Too many wrong codes: approvals are paused for {remaining(pause)}."


class OwnerCommands:
    """Runs owner commands. Synchronous (the services do file I/O); call it off the loop."""

    def __init__(
        self,
        pairing: PairingService,
        nodes: NodeService,
        *,
        clock: Clock,
        cluster: Cluster,
        silent: Collection[str] = (),
        gateway: Callable[[], GatewayAddress] | None = None,
    ) -> None:
        self._pairing = pairing
        self._nodes = nodes
        self._clock = clock
        self._lockout = Lockout(cluster)
        self._silent = frozenset(silent)
        """The providers whose strangers are told nothing (``unpaired_response: silent``):
        an approved sender there is not told either."""
        self._gateway = gateway
        """Where nodes reach the gateway (what an invite tells them); None: no gateway runs."""

    def run(
        self, command: commands.OwnerCommand | None, *, actor: str, pressed: bool = False
    ) -> OwnerReply:
        """Run one command (see :func:`bot.core.commands.parse`) typed or pressed by the owner
        identified as ``actor``; anything that is no command gets ``/help``.

        ``pressed`` says the line came from a button on a notice this bot sent, carrying
        that notice's own command: when its request is gone (decided, expired), the answer
        is "already handled" and it is not counted as a wrong code.
        """
        try:
            match command:
                case commands.Usage():
                    return OwnerReply(text=command.text, ok=False, failure=OwnerFailure.USAGE)
                case commands.Approve() | commands.Reject():
                    return self._decide(command, actor, pressed=pressed)
                case commands.Pending():
                    return OwnerReply(text=self._pending())
                case commands.Allowlist():
                    return OwnerReply(text=self._allowlist(command.provider, command.page))
                case commands.Revoke():
                    revoked = self._pairing.revoke(
                        command.provider, command.sender_id, actor=actor
                    )
                    return OwnerReply(
                        text=f"Revoked {messages.label(command.provider)} sender "
                        f"{revoked}; their next message gets a new code."
                    )
                case commands.Nodes():
                    return OwnerReply(text=self._nodes_overview())
                case commands.NodeDecision():
                    return self._node_decision(command, actor)
                case commands.Invite():
                    return self._invite(command, actor)
            return OwnerReply(text=messages.HELP)
        except LookupFailed as exc:
            return OwnerReply(text=str(exc), ok=False, failure=OwnerFailure.UNKNOWN)
        except NodeRefused as exc:
            return OwnerReply(text=str(exc), ok=False, failure=OwnerFailure.REFUSED)
        except AllowedByConfigError as exc:
            return OwnerReply(text=str(exc), ok=False, failure=OwnerFailure.IN_CONFIG)

    # --- DM pairing ----------------------------------------------------------------------------

    def _decide(
        self, command: commands.Approve | commands.Reject, actor: str, *, pressed: bool
    ) -> OwnerReply:
        paused = self._lockout.paused(actor, self._clock.now())
        if paused:
            return OwnerReply(text=_paused_text(paused), ok=False, failure=OwnerFailure.LOCKED)
        try:
            if isinstance(command, commands.Approve):
                now = self._clock.now()
                end = now + command.lasting if command.lasting is not None else None
                req = self._pairing.approve(command.code, actor=actor, until=end)
                told = req.provider not in self._silent
                ends = until(end, now) if end is not None else ""
                text = messages.approved(req, told=told, until=ends)
                reply = OwnerReply(text=text, approved=req)
            else:
                req = self._pairing.reject(command.code, actor=actor)
                reply = OwnerReply(text=messages.rejected(req))
        except (CodeExpiredError, UnknownCodeError) as exc:
            if pressed:
                text, failure = messages.already_handled(), OwnerFailure.HANDLED
                return OwnerReply(text=text, ok=False, failure=failure)
            if isinstance(exc, CodeExpiredError):
                text = str(exc)[:1].upper() + str(exc)[1:] + "."  # not capitalize(): keeps ids
                failure = OwnerFailure.EXPIRED
            else:
                text = "No pending request has that code (check it, or see /pending)."
                failure = OwnerFailure.UNKNOWN
            return OwnerReply(text=self._fail(actor, text), ok=False, failure=failure)
        self._lockout.succeed(actor)
        return reply

    def _fail(self, actor: str, text: str) -> str:
        """Count a failed approval; return ``text``, plus the lockout notice if this locks."""
        now = self._clock.now()
        locked = self._lockout.fail(actor, now)
        if locked is None:
            return text
        log.warning(
            "owner %s locked out of approvals for %s after %d failures",
            actor,
            locked.pause,
            locked.failures,
        )
        self._pairing.record(
            AuditEvent(
                ts=now,
                event="lockout",
                actor=actor,
                subject=actor,
                outcome="locked",
                detail={"failures": locked.failures, "seconds": int(locked.pause.total_seconds())},
            )
        )
        return f"{text}\n{_paused_text(locked.pause)}"

    def _pending(self) -> str:
        now = self._clock.now()
        requests = self._pairing.pending()
        nodes = self._nodes.pending()
        if not requests and not nodes:
            return "Nothing is pending."
        lines = []
        if requests:
            lines.append(f"Pairing requests ({len(requests)}):")
            lines += [messages.pending_line(r, age=ago(now - r.created_at)) for r in requests]
        if nodes:
            lines.append(f"Node requests ({len(nodes)}):")
            lines += [messages.node_line(r, age=ago(now - r.created_at)) for r in nodes]
        return "\n".join(lines)

    def _allowlist(self, provider: str | None, page: int) -> str:
        """A count, then one page of :data:`ALLOWLIST_PAGE` senders, and how to see the next."""
        if provider is not None and find(provider) is None:
            return f"Unknown provider {clean(provider, limit=20)!r}."
        groups = self._pairing.allowed_groups(provider)  # millions: a few lists, not objects
        count = sum(len(group.ids) for group in groups)
        if not count:
            return "The allowlist is empty."
        pages = -(-count // ALLOWLIST_PAGE)
        word = "/allowlist" + (f" {provider}" if provider else "")
        if page > pages:
            return f"The allowlist has {_pages(pages)}; the last is {word} {pages}."
        entries = (entry for group in groups for entry in group.entries())
        shown = islice(entries, (page - 1) * ALLOWLIST_PAGE, page * ALLOWLIST_PAGE)
        where = f" on {messages.label(provider)}" if provider else ""
        head = f"Allowed{where}: {count}"
        lines = [f"{head} (page {page} of {pages})" if pages > 1 else head]
        now = self._clock.now()
        lines += [f"{messages.label(e.provider)} {e.id}{_source(e, now)}" for e in shown]
        if page < pages:
            lines.append(f"More: {word} {page + 1}")
        return "\n".join(lines)

    # --- nodes ---------------------------------------------------------------------------------

    def _node_decision(self, command: commands.NodeDecision, actor: str) -> OwnerReply:
        if command.action is commands.NodeAction.APPROVE:
            approval = self._nodes.approve(command.ident, actor=actor)
            return OwnerReply(
                text=f"Approved node {clean(approval.node.node_id)}.", node_approved=approval
            )
        if command.action is commands.NodeAction.REJECT:
            req = self._nodes.reject(command.ident, actor=actor)
            return OwnerReply(text=f"Rejected node {clean(req.node_id)}.", node_rejected=req)
        paired = self._nodes.revoke(command.ident, actor=actor)
        return OwnerReply(
            text=f"Revoked node {clean(paired.node_id)}; its token no longer works.",
            node_revoked=paired,
        )

    def _invite(self, command: commands.Invite, actor: str) -> OwnerReply:
        if self._gateway is None:
            text = "The node gateway is off (gateway.enabled): an invite could reach nothing."
            return OwnerReply(text=text, ok=False, failure=OwnerFailure.REFUSED)
        try:
            made = self._nodes.invite(
                self._gateway(), actor=actor, lasting=command.lasting, name=command.name
            )
        except ConfigError as exc:
            return OwnerReply(text=str(exc), ok=False, failure=OwnerFailure.REFUSED)
        except ValueError as exc:  # the name: too long
            usage = commands.Usage(line=command.line, command=_NODES, problem=str(exc))
            return OwnerReply(text=usage.text, ok=False, failure=OwnerFailure.USAGE)
        return OwnerReply(
            text=messages.node_invite(
                made, lasts=remaining(made.invite.expires_at - made.invite.created_at)
            ),
            invitation=made,
        )

    def _nodes_overview(self) -> str:
        now = self._clock.now()
        pending = self._nodes.pending()
        paired = self._nodes.paired()
        lines = [f"Pending nodes ({len(pending)}):"]
        lines += [messages.node_line(r, age=ago(now - r.created_at)) for r in pending] or ["-"]
        invites = self._nodes.invites()
        if invites:
            lines.append(f"Invites not yet used ({len(invites)}):")
            lines += [messages.invite_line(i, left=remaining(i.expires_at - now)) for i in invites]
        lines.append(f"Paired nodes ({len(paired)}):")
        lines += [
            f"{clean(n.node_id, limit=40)} ({clean(n.display_name, limit=32) or 'no name'})"
            for n in paired
        ] or ["-"]
        return "\n".join(lines)
