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

from bot.core.commands import is_command
from bot.core.models import ChatKind, DmPolicy, Inbound


class Decision(StrEnum):
    """What to do with one inbound message."""

    OWNER_COMMAND = "owner_command"
    FORWARD = "forward"
    CHALLENGE = "challenge"
    DROP = "drop"


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
    lets an owner omit the ``/`` (see :func:`bot.core.commands.is_command`).
    """
    # == (not ``is``): a plain "dm" / "disabled" string from a provider compares equal too.
    if msg.chat_kind != ChatKind.DM:
        return Decision.DROP
    if is_owner:
        if msg.is_button or is_command(msg.text, bare=bare_commands):
            return Decision.OWNER_COMMAND
        return Decision.FORWARD
    if msg.is_button or policy == DmPolicy.DISABLED:
        return Decision.DROP
    if policy == DmPolicy.OPEN or is_allowed:
        return Decision.FORWARD
    if policy == DmPolicy.PAIRING:
        return Decision.CHALLENGE
    return Decision.DROP
