"""The owner commands: one table, and the one parser that reads an owner's line into a value.

:data:`COMMANDS` says, per command, its arguments, its ``/help`` rows, its usage, and whether
it can change state. From it come the gate's "is this an owner command?", ``/help``, the
texts shown without slashes (Slack), Discord's slash commands and the parser; Slack's one
umbrella ``/pairbot`` is read into a line by :func:`umbrella_line`. :func:`parse` turns a line
into a typed :class:`OwnerCommand` (or a :class:`Usage` for a known command written wrong);
:class:`bot.services.owner.OwnerCommands` runs the value and never reads the text again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from bot.core.codes import normalize_code
from bot.core.durations import grant_length, has_unit, invite_length
from bot.core.platforms import KNOWN_PROVIDERS, find

# --- the values the parser makes ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class OwnerCommand:
    """One owner command, parsed."""

    line: str
    """The line as the owner sent it, stripped, with its ``/`` (a bare Slack line gets it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Approve(OwnerCommand):
    """``/approve CODE [DURATION]``: the words after the command, joined (``ABCD 2345`` is one
    code); a last word after a whole code is how long the grant lasts (``7d``), else it is
    for good (``lasting`` None)."""

    code: str
    lasting: timedelta | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Reject(OwnerCommand):
    """``/reject CODE``."""

    code: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Pending(OwnerCommand):
    """``/pending``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Allowlist(OwnerCommand):
    """``/allowlist [provider] [page]``; ``provider`` lower-cased, and not checked: an unknown
    one is answered, not a usage error. ``page`` counts from 1."""

    provider: str | None
    page: int = 1


def _allowlist(line: str, words: list[str]) -> OwnerCommand | None:
    """``/allowlist``, ``/allowlist slack``, ``/allowlist 2``, ``/allowlist slack 2``."""
    page = 1
    if words and words[-1].isdigit():
        page = int(words.pop())
        if page < 1:
            return None
    return Allowlist(line=line, provider=words[0].lower() if words else None, page=page)


@dataclass(frozen=True, slots=True, kw_only=True)
class Revoke(OwnerCommand):
    """``/revoke PROVIDER ID``, the provider one pairbot knows."""

    provider: str
    sender_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Nodes(OwnerCommand):
    """``/nodes``: the overview."""


class NodeAction(StrEnum):
    """What ``/nodes`` can do to one node request or paired node."""

    APPROVE = "approve"
    REJECT = "reject"
    REVOKE = "revoke"
    INVITE = "invite"


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeDecision(OwnerCommand):
    """``/nodes approve ID``, ``/nodes reject ID``, ``/nodes revoke NODE_ID``."""

    action: NodeAction
    ident: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Invite(OwnerCommand):
    """``/nodes invite [DURATION] [NAME]``: a one-time invite for a device, lasting
    ``lasting`` (None: the configured default), for the device the owner calls ``name``."""

    lasting: timedelta | None = None
    name: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Help(OwnerCommand):
    """``/help``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage(OwnerCommand):
    """A known command written wrong (a missing code, an unknown provider in ``/revoke``, a
    duration that is none)."""

    command: Command
    problem: str = ""
    """What is wrong, when the command's reader said (``not a duration: '7x' ...``)."""

    @property
    def text(self) -> str:
        """What the owner is told."""
        usage = f"Usage: {self.command.usage or self.command.help[0][0]}"
        return f"{self.problem[:1].upper()}{self.problem[1:]}. {usage}" if self.problem else usage


# --- the table ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Arg:
    """One argument, as a platform's command menu offers it (a Discord option)."""

    name: str
    description: str
    required: bool = True
    choices: tuple[str, ...] = ()


Reader = Callable[[str, list[str]], OwnerCommand | None]
"""Reads a command's words (after the command word) into its value; None: a usage error (a
``ValueError``: one that says what is wrong)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """One owner command."""

    name: str
    summary: str
    """One line, for a platform's command menu."""
    help: tuple[tuple[str, str], ...]
    """Its rows of ``/help``: how it is written, what it does."""
    args: tuple[Arg, ...] = ()
    changes_state: bool
    """Running it can change the state (grant, refuse, revoke); the others only read."""
    usage: str = ""
    """What a line that misuses it is told after ``Usage:``, where that is not its first
    ``/help`` row."""
    read: Reader

    @property
    def word(self) -> str:
        """The command as typed: ``/approve``."""
        return f"/{self.name}"


_CODE = Arg(name="code", description="The pairing code, e.g. ABCD-2345")


def _approve(line: str, words: list[str]) -> OwnerCommand | None:
    """``/approve CODE`` or ``/approve CODE DURATION``: a last word is the duration only
    after a whole code (``/approve ABCD 2345`` is one code, ``/approve ABCD-2345 7d`` a week).

    Raises:
        ValueError: a whole code is followed by a word that is no duration.
    """
    if len(words) > 1 and normalize_code("".join(words[:-1])) is not None:
        return Approve(line=line, code="".join(words[:-1]), lasting=grant_length(words[-1]))
    return Approve(line=line, code="".join(words)) if words else None


def _revoke(line: str, words: list[str]) -> OwnerCommand | None:
    if len(words) != 2 or find(words[0].lower()) is None:
        return None
    return Revoke(line=line, provider=words[0].lower(), sender_id=words[1])


def _invite(line: str, words: list[str]) -> OwnerCommand | None:
    """``/nodes invite``, ``/nodes invite 30m``, ``/nodes invite 30m Pixel 9``,
    ``/nodes invite Pixel 9``: a first word with a unit is how long, the rest the name.

    Raises:
        ValueError: how long is out of bounds (:data:`~bot.core.durations.INVITE_BOUNDS`).
    """
    lasting = invite_length(words.pop(0)) if words and has_unit(words[0]) else None
    return Invite(line=line, lasting=lasting, name=" ".join(words))


def _nodes(line: str, words: list[str]) -> OwnerCommand | None:
    if not words:
        return Nodes(line=line)
    action, rest = words[0].lower(), words[1:]
    if action == NodeAction.INVITE:
        return _invite(line, rest)
    if action not in set(NodeAction) or len(rest) != 1:
        return None
    return NodeDecision(line=line, action=NodeAction(action), ident=rest[0])


COMMANDS: tuple[Command, ...] = (
    Command(
        name="pending",
        summary="List pending pairing and node requests",
        help=(("/pending", "pending pairing and node requests"),),
        changes_state=False,
        read=lambda line, _: Pending(line=line),
    ),
    Command(
        name="approve",
        summary="Approve a pairing request",
        help=(
            ("/approve CODE", "let the sender with this code in"),
            ("/approve CODE 7d", "the same, for a time (30m, 24h, 7d, 2w)"),
        ),
        args=(
            _CODE,
            Arg(
                name="duration",
                description="For how long, e.g. 24h or 7d (leave empty: for good)",
                required=False,
            ),
        ),
        changes_state=True,
        usage="/approve CODE [DURATION]",
        read=_approve,
    ),
    Command(
        name="reject",
        summary="Reject a pairing request",
        help=(("/reject CODE", "drop the request with this code"),),
        args=(_CODE,),
        changes_state=True,
        read=lambda line, words: Reject(line=line, code="".join(words)) if words else None,
    ),
    Command(
        name="allowlist",
        summary="Show who is allowed",
        help=(("/allowlist [provider] [page]", "who is allowed, a page at a time"),),
        args=(
            Arg(
                name="platform",
                description=f"Only this platform ({', '.join(KNOWN_PROVIDERS[:3])}, ...)",
                required=False,
            ),
            Arg(name="page", description="Which page of a long list (1, 2, ...)", required=False),
        ),
        changes_state=False,
        read=_allowlist,
    ),
    Command(
        name="revoke",
        summary="Remove a sender from the allowlist",
        help=(("/revoke PROVIDER ID", "remove someone from the allowlist"),),
        args=(
            Arg(name="platform", description="The sender's platform"),
            Arg(name="user_id", description="The sender's id"),
        ),
        changes_state=True,
        read=_revoke,
    ),
    Command(
        name="nodes",
        summary="Show nodes, or decide on one",
        help=(
            ("/nodes", "pending and paired nodes"),
            ("/nodes approve ID | reject ID", "pair a node (it gets a token) or refuse it"),
            ("/nodes revoke NODE_ID", "unpair a node; its token stops working"),
            ("/nodes invite [30m] [NAME]", "a one-time setup code: a device joins at once"),
        ),
        args=(
            Arg(
                name="action",
                description="What to do (leave empty to list)",
                required=False,
                choices=tuple(a.value for a in NodeAction),
            ),
            Arg(
                name="id",
                description="The request id (approve, reject), node id (revoke), or how long "
                "and a name (invite: 30m Pixel 9)",
                required=False,
            ),
        ),
        changes_state=True,
        usage="/nodes [approve ID | reject ID | revoke NODE_ID | invite [30m] [NAME]]",
        read=_nodes,
    ),
    Command(
        name="help",
        summary="Show the owner commands",
        help=(("/help", "this text"),),
        changes_state=False,
        read=lambda line, _: Help(line=line),
    ),
)
"""Every owner command, in the order ``/help`` lists them."""

_BY_WORD = {c.word: c for c in COMMANDS}


def command_word(text: str) -> str:
    """Return the command word of ``text`` (``/approve@my_bot x`` → ``/approve``), or ``""``."""
    first = text.strip().split(maxsplit=1)[0] if text.strip() else ""
    return first.split("@", 1)[0].lower() if first.startswith("/") else ""


def _recognise(text: str, *, bare: bool) -> tuple[Command, str] | None:
    """The command ``text`` is written as, and its line (with the slash), or None."""
    line = text.strip()
    command = _BY_WORD.get(command_word(line))
    if command is None and bare and line:
        command = _BY_WORD.get(f"/{line.split(maxsplit=1)[0].lower()}")
        line = f"/{line}"
    return None if command is None else (command, line)


def umbrella_line(words: str) -> str:
    """The line one umbrella slash command stands for, from the words typed after it.

    Slack registers a single ``/pairbot`` for every owner command: ``/pairbot approve X`` is
    ``/approve X`` (``words`` = ``approve X``; a slash before the words is one too many), and
    ``/pairbot`` alone asks for ``/help``.
    """
    rest = words.strip().lstrip("/")
    return f"/{rest or 'help'}"


def is_command(text: str, *, bare: bool = False) -> bool:
    """Return whether ``text`` is an owner command (perhaps written wrong); see :func:`parse`."""
    return _recognise(text, bare=bare) is not None


def parse(text: str, *, bare: bool = False) -> OwnerCommand | None:
    """Read ``text`` as an owner command; None if it is not one.

    A known command written wrong is a :class:`Usage`. With ``bare`` (Slack, whose clients
    eat a leading ``/``), ``approve X`` counts too and is read as ``/approve X``.
    """
    found = _recognise(text, bare=bare)
    if found is None:
        return None
    command, line = found
    try:
        read = command.read(line, line.split()[1:])
    except ValueError as exc:
        return Usage(line=line, command=command, problem=str(exc))
    return read or Usage(line=line, command=command)
