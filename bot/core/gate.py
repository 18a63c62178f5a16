"""The gate: one pure decision per inbound message. No I/O; the app carries the decision out.

Order matters and is the whole security model:

1. Group and channel traffic is dropped: it never creates a request and never runs an owner
   command (button presses included).
2. An owner, in their own DM with the bot, gets owner commands; their other text is allowed.
3. A button press from anyone else is dropped (a button is only ever shown to an owner).
4. The provider's DM policy: ``disabled`` drops, ``open`` forwards, ``allowlist`` forwards
   allowed senders and drops the rest, ``pairing`` forwards allowed senders and challenges
   strangers. A non-owner typing ``/approve`` is just text: forwarded if allowed, challenged
   if a stranger, exactly as any other message (no oracle).
"""

from __future__ import annotations

from enum import StrEnum

from bot.core.models import ChatKind, DmPolicy, Inbound

OWNER_COMMANDS = frozenset(
    {"/approve", "/reject", "/pending", "/allowlist", "/revoke", "/nodes", "/help"}
)


class Decision(StrEnum):
    """What to do with one inbound message."""

    OWNER_COMMAND = "owner_command"
    FORWARD = "forward"
    CHALLENGE = "challenge"
    DROP = "drop"


def command_word(text: str) -> str:
    """Return the command word of ``text`` (``/approve@my_bot x`` → ``/approve``), or ``""``."""
    first = text.strip().split(maxsplit=1)[0] if text.strip() else ""
    return first.split("@", 1)[0].lower() if first.startswith("/") else ""


def owner_command_text(text: str, *, bare_commands: bool) -> str | None:
    """Return ``text`` as an owner command line (``/approve X``), or None if it is not one.

    With ``bare_commands`` (Slack), ``approve X`` counts too and gets its slash back.
    """
    if command_word(text) in OWNER_COMMANDS:
        return text.strip()
    if bare_commands and text.strip():
        word = text.strip().split(maxsplit=1)[0].lower()
        if f"/{word}" in OWNER_COMMANDS:
            return f"/{text.strip()}"
    return None


def decide(
    msg: Inbound,
    *,
    policy: DmPolicy,
    is_owner: bool,
    is_allowed: bool,
    bare_commands: bool = False,
) -> Decision:
    """Decide what happens to ``msg``.

    ``is_owner`` must be true only when the sender's immutable id is a configured owner on
    this provider; ``is_allowed`` is the allowlist answer for the sender; ``bare_commands``
    lets an owner omit the ``/`` (see :func:`owner_command_text`).
    """
    # == (not ``is``): a plain "dm" / "disabled" string from a provider compares equal too.
    if msg.chat_kind != ChatKind.DM:
        return Decision.DROP
    if is_owner:
        if msg.is_button or owner_command_text(msg.text, bare_commands=bare_commands) is not None:
            return Decision.OWNER_COMMAND
        return Decision.FORWARD
    if msg.is_button or policy == DmPolicy.DISABLED:
        return Decision.DROP
    if policy == DmPolicy.OPEN or is_allowed:
        return Decision.FORWARD
    if policy == DmPolicy.PAIRING:
        return Decision.CHALLENGE
    return Decision.DROP
