"""Owner commands: parse what the owner typed (or pressed) and run it on the services.

Only :mod:`bot.core.gate` decides who is an owner; this module trusts that decision and gives the
owner precise answers (approved whom, unknown code, expired). Failed approvals are counted
per owner: after 10 in a row the owner's approvals are refused for 15 minutes (doubling up to
an hour), so even a hijacked owner account cannot enumerate codes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bot.core import messages
from bot.core.clock import Clock
from bot.core.errors import CodeExpiredError, LookupFailed, NodeRefused, UnknownCodeError
from bot.core.gate import command_word
from bot.core.models import (
    AuditEvent,
    NodeApproval,
    NodeRequest,
    PairedNode,
    PendingRequest,
)
from bot.core.platforms import KNOWN_PROVIDERS
from bot.core.text import ago, clean, remaining
from bot.services.nodes import NodeService
from bot.services.pairing import PairingService

log = logging.getLogger(__name__)

MAX_FAILURES = 10
LOCKOUT = timedelta(minutes=15)
MAX_LOCKOUT = timedelta(hours=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class OwnerReply:
    """The answer to one owner command, and what the app must do about it."""

    text: str
    ok: bool = True
    failure: str | None = None
    """Why it failed: ``unknown``, ``expired``, ``locked``, ``refused``, ``usage``, or
    ``handled`` (a button pressed on a notice whose request is already gone)."""
    approved: PendingRequest | None = None
    node_approved: NodeApproval | None = None
    node_rejected: NodeRequest | None = None
    node_revoked: PairedNode | None = None


@dataclass(slots=True)
class _Failures:
    count: int = 0
    locked_until: datetime | None = None
    lockout: timedelta = LOCKOUT
    history: list[datetime] = field(default_factory=list)


class OwnerCommands:
    """Runs owner commands. Synchronous (the services do file I/O); call it off the loop."""

    def __init__(self, pairing: PairingService, nodes: NodeService, *, clock: Clock) -> None:
        self._pairing = pairing
        self._nodes = nodes
        self._clock = clock
        self._failures: dict[str, _Failures] = {}

    def run(self, text: str, *, actor: str, pressed: bool = False) -> OwnerReply:
        """Run one command line typed (or pressed) by the owner identified as ``actor``.

        ``pressed`` says the line came from a button on a notice this bot sent, carrying
        that notice's own command: when its request is gone (decided, expired), the answer
        is "already handled" and it is not counted as a wrong code.
        """
        word = command_word(text)
        args = text.strip().split()[1:]
        try:
            if word in ("/approve", "/reject"):
                return self._decide(word, args, actor, pressed=pressed)
            if word == "/pending":
                return OwnerReply(text=self._pending())
            if word == "/allowlist":
                return OwnerReply(text=self._allowlist(args))
            if word == "/revoke":
                return self._revoke(args, actor)
            if word == "/nodes":
                return self._node_command(args, actor)
            return OwnerReply(text=messages.HELP)
        except LookupFailed as exc:
            return OwnerReply(text=str(exc), ok=False, failure="unknown")
        except NodeRefused as exc:
            return OwnerReply(text=str(exc), ok=False, failure="refused")

    # --- DM pairing ----------------------------------------------------------------------------

    def _decide(self, word: str, args: list[str], actor: str, *, pressed: bool) -> OwnerReply:
        if not args:
            return OwnerReply(text=f"Usage: {word} CODE", ok=False, failure="usage")
        locked = self._locked(actor)
        if locked:
            return OwnerReply(text=locked, ok=False, failure="locked")
        code = "".join(args)
        try:
            if word == "/approve":
                req = self._pairing.approve(code, actor=actor)
                reply = OwnerReply(text=messages.approved(req), approved=req)
            else:
                req = self._pairing.reject(code, actor=actor)
                reply = OwnerReply(text=messages.rejected(req))
        except CodeExpiredError as exc:
            if pressed:
                return OwnerReply(text=messages.already_handled(), ok=False, failure="handled")
            text = str(exc)[:1].upper() + str(exc)[1:] + "."  # not capitalize(): keeps ids
            return OwnerReply(text=self._fail(actor, text), ok=False, failure="expired")
        except UnknownCodeError:
            if pressed:
                return OwnerReply(text=messages.already_handled(), ok=False, failure="handled")
            text = "No pending request has that code (check it, or see /pending)."
            return OwnerReply(text=self._fail(actor, text), ok=False, failure="unknown")
        self._failures.pop(actor, None)
        return reply

    def _locked(self, actor: str) -> str | None:
        state = self._failures.get(actor)
        now = self._clock.now()
        if state and state.locked_until and now < state.locked_until:
            return (
                f"Too many wrong codes: approvals are paused for "
                f"{remaining(state.locked_until - now)}."
            )
        return None

    def _fail(self, actor: str, text: str) -> str:
        """Count a failed approval; return ``text``, plus the lockout notice if this locks."""
        now = self._clock.now()
        state = self._failures.setdefault(actor, _Failures())
        state.history = [t for t in state.history if now - t < LOCKOUT] + [now]
        if len(state.history) >= MAX_FAILURES:
            state.locked_until = now + state.lockout
            log.warning(
                "owner %s locked out of approvals for %s after %d failures",
                actor,
                state.lockout,
                len(state.history),
            )
            self._pairing.record(
                AuditEvent(
                    ts=now,
                    event="lockout",
                    actor=actor,
                    subject=actor,
                    outcome="locked",
                    detail={
                        "failures": len(state.history),
                        "seconds": int(state.lockout.total_seconds()),
                    },
                )
            )
            state.lockout = min(state.lockout * 2, MAX_LOCKOUT)
            state.history = []
            return f"{text}\n{self._locked(actor)}"
        return text

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

    def _allowlist(self, args: list[str]) -> str:
        provider = args[0].lower() if args else None
        if provider is not None and provider not in KNOWN_PROVIDERS:
            return f"Unknown provider {clean(provider, limit=20)!r}."
        entries = self._pairing.allowed(provider)
        if not entries:
            return "The allowlist is empty."
        return "\n".join(
            f"{messages.label(e.provider)} {e.id}"
            f"{' (config)' if e.source.value == 'config' else ''}"
            for e in entries
        )

    def _revoke(self, args: list[str], actor: str) -> OwnerReply:
        if len(args) != 2 or args[0].lower() not in KNOWN_PROVIDERS:
            return OwnerReply(text="Usage: /revoke PROVIDER ID", ok=False, failure="usage")
        provider, sender = args[0].lower(), args[1]
        self._pairing.revoke(provider, sender, actor=actor)
        return OwnerReply(
            text=f"Revoked {messages.label(provider)} sender {sender}; their next "
            "message gets a new code."
        )

    # --- nodes ---------------------------------------------------------------------------------

    def _node_command(self, args: list[str], actor: str) -> OwnerReply:
        if not args:
            return OwnerReply(text=self._nodes_overview())
        action, rest = args[0].lower(), args[1:]
        if action not in ("approve", "reject", "revoke") or len(rest) != 1:
            return OwnerReply(
                text="Usage: /nodes [approve ID | reject ID | revoke NODE_ID]",
                ok=False,
                failure="usage",
            )
        if action == "approve":
            approval = self._nodes.approve(rest[0], actor=actor)
            return OwnerReply(
                text=f"Approved node {clean(approval.node.node_id)}.", node_approved=approval
            )
        if action == "reject":
            req = self._nodes.reject(rest[0], actor=actor)
            return OwnerReply(text=f"Rejected node {clean(req.node_id)}.", node_rejected=req)
        paired = self._nodes.revoke(rest[0], actor=actor)
        return OwnerReply(
            text=f"Revoked node {clean(paired.node_id)}; its token no longer works.",
            node_revoked=paired,
        )

    def _nodes_overview(self) -> str:
        now = self._clock.now()
        pending = self._nodes.pending()
        paired = self._nodes.paired()
        lines = [f"Pending nodes ({len(pending)}):"]
        lines += [messages.node_line(r, age=ago(now - r.created_at)) for r in pending] or ["-"]
        lines.append(f"Paired nodes ({len(paired)}):")
        lines += [
            f"{clean(n.node_id, limit=40)} ({clean(n.display_name, limit=32) or 'no name'})"
            for n in paired
        ] or ["-"]
        return "\n".join(lines)
