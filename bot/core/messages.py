"""Every text a stranger, an approved sender or the owner reads, in one place."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from bot.core.codes import format_code
from bot.core.commands import COMMANDS
from bot.core.invites import Invitation
from bot.core.models import (
    NodeApproval,
    NodeInvite,
    NodeRequest,
    PairedNode,
    PendingRequest,
    UnpairedResponse,
)
from bot.core.platforms import find
from bot.core.text import ago, clean, clean_name, first_line

_SLASHED = re.compile(rf"(?<![\w/])/({'|'.join(c.name for c in COMMANDS)})\b")


def without_slashes(text: str) -> str:
    """Write owner commands without their ``/`` (``approve CODE``), for platforms whose
    clients take a leading ``/`` as one of their own slash commands (Slack)."""
    return _SLASHED.sub(r"\1", text)


def label(provider: str) -> str:
    """Return the platform's proper name."""
    known = find(provider)
    return known.label if known else provider


def stranger_code(req: PendingRequest, *, valid_for: str = "1h") -> str:
    """The reply a stranger gets: what is going on, their code, what to do. Nothing else."""
    return (
        "Hi! This assistant only answers people its owner has approved, so your message was "
        "not passed on.\n\n"
        f"Your pairing code: {format_code(req.code)}\n"
        f"Your {label(req.provider)} id: {req.id}\n\n"
        "If you know the owner, send them this code. Once they approve it, write here "
        f"again. The code works for {valid_for}."
    )


STRANGER_FIELDS = ("code", "ttl", "sender_id", "provider")
"""The placeholders of ``messages.stranger``: the pairing code (``ABCD-2345``), how long it
works (``1h``), the sender's id on the platform, the platform's proper name."""


def stranger_template_problem(template: str) -> str | None:
    """Why ``template`` cannot be ``messages.stranger``, or None.

    Placeholders are ``{code}``, ``{ttl}``, ``{sender_id}`` and ``{provider}``, bare (no
    format spec, no conversion); ``{{`` and ``}}`` write a brace.
    """
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:  # a lone brace
        return f"not a template: {exc} (write {{{{ or }}}} for a brace)"
    known = ", ".join(f"{{{name}}}" for name in STRANGER_FIELDS)
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in STRANGER_FIELDS:
            return f"unknown placeholder {{{name}}} (known: {known})"
        if spec or conversion:
            return f"placeholder {{{name}}} takes no format or conversion"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class StrangerReply:
    """How one platform answers a stranger (``unpaired_response``, and ``messages.stranger``
    when it is ``custom``)."""

    mode: UnpairedResponse = UnpairedResponse.CODE
    template: str = ""
    """The text of ``custom`` (checked by :func:`stranger_template_problem`)."""

    @property
    def tells(self) -> bool:
        """Whether the stranger is sent anything at all (also "you're approved")."""
        return self.mode is not UnpairedResponse.SILENT

    @property
    def shows_code(self) -> bool:
        """Whether what the stranger is sent carries their code."""
        if self.mode is UnpairedResponse.CUSTOM:
            return any(name == "code" for _, name, _, _ in string.Formatter().parse(self.template))
        return self.tells

    def text(self, req: PendingRequest, *, valid_for: str) -> str | None:
        """What the stranger of ``req`` is sent, or None (silent)."""
        if self.mode is UnpairedResponse.SILENT:
            return None
        if self.mode is UnpairedResponse.CUSTOM:
            return self.template.format(
                code=format_code(req.code),
                ttl=valid_for,
                sender_id=req.id,
                provider=label(req.provider),
            )
        return stranger_code(req, valid_for=valid_for)


CODE_REPLY = StrangerReply()
"""The default answer: the code, with what to do with it."""


WITHOUT_TEXT = "[a photo, file or sticker]"
"""Stands for what a forwarded message carried besides its text (pairbot passes no media)."""


def store_unavailable() -> str:
    """To an owner whose command found the state store unreachable."""
    return (
        "pairbot cannot reach its state store right now, so nothing was approved, rejected "
        "or changed. Try again in a minute; people already approved can still write."
    )


def approved_sender() -> str:
    """Told once to a sender when the owner approves them."""
    return "You're approved. Send a message to start chatting."


PREVIEW_LIMIT = 200
"""The most characters of a held message an owner notice shows (``notice_preview``)."""


def owner_notice(
    req: PendingRequest,
    *,
    expires_in: str,
    reply: StrangerReply = CODE_REPLY,
    preview: bool = False,
) -> str:
    """Told to the owner about each new request; the name is marked as the sender's claim.

    ``reply`` is how the stranger was answered: one sent no code (``silent``, or a custom
    text without ``{code}``) is said to be so, and the owner approves by who the sender is.
    ``preview``: the first line of the first message held, made safe and cut short.
    """
    name = clean_name(req.display_name()) or "(none)"
    username = clean(req.meta.get("username", ""))
    lines = [
        "New pairing request",
        f"Provider: {label(req.provider)}",
        f"Sender id: {req.id}",
        f"Name (given by the sender, unverified): {name}",
    ]
    if username:
        lines.append(f"Username (given by the sender, can change): @{username}")
    if preview and req.held:
        shown = first_line(req.held[0].text, limit=PREVIEW_LIMIT)
        lines.append(f"First message (as the sender wrote it, unverified): {shown}")
    lines.append(f"Code: {format_code(req.code)}  (expires in {expires_in})")
    if not reply.tells:
        lines.append("They were told nothing (this platform answers strangers with silence).")
    elif not reply.shows_code:
        lines.append("They got your stranger text, without the code.")
    lines.append("")
    if reply.shows_code:
        lines.append(
            f"Approve only if you know who holds this code: /approve {req.code} "
            f"(or /reject {req.code})."
        )
    else:
        lines.append(
            f"Nobody was given this code: approve only if you know this sender: "
            f"/approve {req.code} (or /reject {req.code})."
        )
    return "\n".join(lines)


class NoticeKind(StrEnum):
    """What an owner notice tells of: what a digest counts when notices are folded."""

    PAIRING_REQUEST = "pairing request"
    NODE_REQUEST = "node request"
    NODE_JOINED = "node joined with an invite"
    TURNED_AWAY = "stranger turned away by the pending cap"
    URGENT = "urgent"
    """Never folded (a state file gone bad)."""
    FORWARDED = "forwarded message"
    """A message the ``forward`` handler passed to the owners (never folded)."""


Told = Mapping[tuple[NoticeKind, str], int]
"""What one or more owner notices told of: how many of each kind, per platform ("" for none)."""

_DIGEST_ORDER = (
    NoticeKind.PAIRING_REQUEST,
    NoticeKind.NODE_REQUEST,
    NoticeKind.NODE_JOINED,
    NoticeKind.TURNED_AWAY,
)
_PLURALS = {
    NoticeKind.PAIRING_REQUEST: "pairing requests",
    NoticeKind.NODE_REQUEST: "node requests",
    NoticeKind.NODE_JOINED: "nodes joined with an invite",
    NoticeKind.TURNED_AWAY: "strangers turned away by the pending cap",
    NoticeKind.URGENT: "warnings that a state file went bad (see `pairbot doctor`)",
    NoticeKind.FORWARDED: "forwarded messages",
}
_SINGULARS = {NoticeKind.URGENT: "warning that a state file went bad (see `pairbot doctor`)"}


def _counted(told: Told, kinds: Sequence[NoticeKind], *, more: str = "") -> list[str]:
    """One part per kind told of: ``3 {more}pairing requests (Slack 1, Telegram 2)``."""
    parts = []
    for kind in kinds:
        counts = {provider: n for (k, provider), n in told.items() if k is kind and n}
        total = sum(counts.values())
        if not total:
            continue
        noun = _SINGULARS.get(kind, str(kind)) if total == 1 else _PLURALS[kind]
        where = ", ".join(
            f"{label(p)} {n}" if len(counts) > 1 else label(p)
            for p, n in sorted(counts.items())
            if p
        )
        parts.append(f"{total} {more}{noun}{f' ({where})' if where else ''}")
    return parts


def owner_digest(folded: Told) -> str:
    """Told instead of the notices held back by the rate limit: what they would have said,
    counted (per platform where there is one)."""
    parts = _counted(folded, _DIGEST_ORDER, more="more ")
    return (
        f"Held back to keep this chat readable: {'; '.join(parts)}. Send /pending to see "
        "what waits."
    )


def owner_missed(provider: str, missed: Told) -> str:
    """Told to an owner when they write again after the platform would not let pairbot write
    to them (WhatsApp's 24 hours): what they missed, counted, and where to see it."""
    parts = _counted(missed, (*_DIGEST_ORDER, NoticeKind.URGENT, NoticeKind.FORWARDED))
    name = label(provider)
    return (
        f"While {name} would not let pairbot write to you, these did not reach you: "
        f"{'; '.join(parts)}. Send /pending to see what still waits. {name} lets a bot write "
        "only to people who wrote to it lately: writing here now and then keeps notices coming."
    )


def owner_capped(provider: str, count: int, cap: int) -> str:
    """Told once per burst when strangers were turned away by the pending cap."""
    return (
        f"{count} {label(provider)} stranger{'s were' if count != 1 else ' was'} turned "
        f"away: {cap} requests are already pending. Approve or reject some (/pending) "
        "to make room."
    )


def approved(req: PendingRequest, *, told: bool = True, until: str = "") -> str:
    """The owner's confirmation of an approval; ``told``: the sender is told (not where
    strangers are answered with silence); ``until`` says when it ends, if it does
    (:func:`bot.core.text.until`). Held messages are counted, never shown."""
    name = clean_name(req.display_name())
    who = f" ({name}, as given by the sender)" if name else ""
    ends = f" until {until}" if until else ""
    text = f"Approved {label(req.provider)} sender {req.id}{who}{ends}. " + (
        "They have been told." if told else "They were not told (silent mode)."
    )
    if req.held:
        count = len(req.held)
        text += (
            f" The {count} message{'s' if count != 1 else ''} they wrote while waiting "
            f"{'go' if count != 1 else 'goes'} to the handler now."
        )
    return text


def rejected(req: PendingRequest) -> str:
    """The owner's confirmation of a rejection."""
    return f"Rejected {label(req.provider)} sender {req.id}. Their code no longer works."


def already_handled() -> str:
    """A button pressed after its request was decided."""
    return "This request was already handled; nothing changed."


def node_notice(
    req: NodeRequest, *, expires_in: str, conflicts: Sequence[NodeRequest] = ()
) -> str:
    """Told to the owner about each node asking to join; a re-pair and a second asker for
    the same node id are said plainly."""
    if req.key_changed:
        lines = [
            "Node asks again with a different key",
            "Warning: this node id is already paired with another key (or none), and the "
            "asker proved nothing. A reinstalled device looks like this, and so does "
            "someone else using its id: approving replaces the paired node, whose key "
            "and token then stop working.",
        ]
    elif req.is_repair:
        lines = [
            "Node asks for a new token (re-pair)",
            "It is already paired and proved it holds its current token or key; approving "
            "gives it a new token and the old one stops working.",
        ]
    else:
        lines = ["New node pairing request"]
    lines += [
        f"Node id: {clean(req.node_id)}",
        f"Name (given by the node, unverified): {clean_name(req.display_name) or '(none)'}",
        f"Platform: {clean(req.platform) or '?'}  Version: {clean(req.version) or '?'}",
        f"From: {clean(req.remote) or '?'}",
        f"Request: {req.request_id}  (expires in {expires_in})",
    ]
    if conflicts:
        others = ", ".join(f"{r.request_id} from {clean(r.remote) or '?'}" for r in conflicts)
        lines += [
            "",
            f"Warning: another device asks with the same node id ({others}). Only "
            "one can be approved; approve only the one you expect, and reject the "
            "rest.",
        ]
    lines += ["", f"/nodes approve {req.request_id} (or /nodes reject {req.request_id})."]
    return "\n".join(lines)


def node_approved(node: PairedNode, *, delivered: bool) -> str:
    """The owner's confirmation of a node approval."""
    where = (
        "its token was sent to the waiting node"
        if delivered
        else "the node was not connected; it will get a token when it asks again"
    )
    name = clean_name(node.display_name) or "no name"
    return f"Approved node {clean(node.node_id)} ({name}): {where}."


def node_invite(made: Invitation, *, lasts: str) -> str:
    """The owner's new invite, in their chat: the setup code alone on its line (chats show
    no QR code from pairbot; ``pairbot nodes invite`` prints one in the terminal)."""
    invite = made.invite
    name = clean_name(invite.name)
    return "\n".join(
        [
            f"Invite {invite.invite_id}{f' for {name}' if name else ''}: one device may join "
            f"with it, within {lasts}. Its setup code:",
            "",
            made.code.text,
            "",
            "On the device: pairbot node pair --invite <the code> (or scan the QR code "
            "`pairbot nodes invite` prints). Keep the code private until it is used: whoever "
            "holds it can pair a device. /nodes lists the invites not yet used.",
        ]
    )


def invite_line(invite: NodeInvite, *, left: str) -> str:
    """One line of ``/nodes`` for an invite not yet used."""
    name = clean_name(invite.name, limit=32)
    return f"{invite.invite_id}{f' ({name})' if name else ''}, expires in {left}"


def node_joined(approval: NodeApproval) -> str:
    """Told to the owner when a node paired itself with one of their invites."""
    node, req = approval.node, approval.request
    name = clean_name(node.display_name) or "no name"
    return "\n".join(
        [
            f"Node {clean(node.node_id)} ({name}) joined with your invite {req.request_id}, "
            f"from {clean(req.remote) or '?'}.",
            f"Not you? /nodes revoke {clean(node.node_id)}",
        ]
    )


HELP = "\n".join(
    [
        "Owner commands (only here, in your own chat with the bot):",
        *(f"{how:<29} {what}" for c in COMMANDS for how, what in c.help),
    ]
)
"""``/help``: every row of the owner commands table."""


def pending_line(req: PendingRequest, *, age: str) -> str:
    """One line of ``/pending``."""
    name = clean_name(req.display_name(), limit=32)
    return (
        f"{format_code(req.code)}  {label(req.provider)} {req.id}"
        f"{f' ({name})' if name else ''}, {age} ago"
    )


def node_line(req: NodeRequest, *, age: str) -> str:
    """One line of ``/nodes`` for a pending node."""
    name = clean_name(req.display_name, limit=32)
    return (
        f"{req.request_id}  {clean(req.node_id, limit=40)}{f' ({name})' if name else ''}, "
        f"{age} ago"
    )


def owner_unreachable(provider: str, user_id: str, why: str) -> str:
    """Told once, through the owner chats that work, when notices cannot reach another."""
    return (
        f"Notices cannot reach the {label(provider)} owner {user_id}: {why}\n\n"
        "Until that is fixed, notices reach only the owner chats that work, like this one."
    )


def state_file_unusable(problem: str) -> str:
    """Told to the owners once when a state file goes bad while the bot runs."""
    return (
        f"pairbot cannot use a state file: {problem}\n\n"
        "Messages that need it are refused until it is fixed: nobody new gets a code and "
        "nothing is granted. Everything else keeps working. Run `pairbot doctor` to see "
        "every problem."
    )


__all__ = ["HELP", "ago", "label"]
