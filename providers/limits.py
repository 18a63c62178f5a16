"""What a platform accepts in one message, as data: :class:`TextSplit`, :class:`ButtonLimits`.

A provider declares its limits as class attributes of :class:`~providers.base.BaseProvider`
(``text_split``, ``button_limits``); the base applies them in ``send``. One splitter serves
every platform, each keeping its own rule (where a cut may fall, what happens to the line
break there); :func:`clip` shortens a label. Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from bot.core.errors import ButtonError
from bot.core.models import Button


def clip(text: str, limit: int, *, strip: bool = False) -> str:
    """``text`` cut to ``limit`` characters, ending with ``…`` if cut (``strip``: without
    the spaces the cut leaves before it)."""
    if len(text) <= limit:
        return text
    kept = text[: limit - 1]
    return (kept.rstrip() if strip else kept) + "…"


ATOM_REACH = 32
"""How far from a hard cut :attr:`TextSplit.atom` is looked for: atoms are shorter."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TextSplit:
    """How a platform cuts a text too long for one message.

    Attributes:
        limit: the most characters one message takes.
        lines_from: cut at the last line break after this fraction of ``limit`` (0.0:
            anywhere but the very start; None: never look for one, cut hard at ``limit``).
        keep_breaks: the line break a cut is made at ends the earlier part (True), or is
            dropped with every line break that would start the next part (False).
        escape: an escape character (``\\``) that a hard cut never separates from the
            character it escapes.
        atom: a regular expression of what a hard cut never splits (Slack's entities,
            ``&amp;``): a cut inside a match falls before it. Matches are looked for within
            :data:`ATOM_REACH` characters of the cut.
    """

    limit: int
    lines_from: float | None = 0.0
    keep_breaks: bool = False
    escape: str | None = None
    atom: str | None = None

    def split(self, text: str) -> list[str]:
        """The parts of ``text``, each at most :attr:`limit` characters (one if it fits)."""
        parts: list[str] = []
        while len(text) > self.limit:
            cut = -1
            if self.lines_from is not None:
                cut = text.rfind("\n", int(self.limit * self.lines_from), self.limit)
            if cut > 0:
                cut += self.keep_breaks
            else:
                cut = self.limit
                if self.escape:
                    head = text[:cut]
                    cut -= (len(head) - len(head.rstrip(self.escape))) % 2
                if self.atom:
                    near = max(0, cut - ATOM_REACH)
                    for match in re.finditer(self.atom, text[near : cut + ATOM_REACH]):
                        if 0 < near + match.start() < cut < near + match.end():
                            cut = near + match.start()
            parts.append(text[:cut])
            text = text[cut:] if self.keep_breaks else text[cut:].lstrip("\n")
        parts.append(text)
        return parts

    def fit(self, text: str) -> str:
        """``text`` cut to one part as :meth:`split` cuts, ending in ``…`` if it was cut (an
        edit, which cannot become several messages)."""
        if len(text) <= self.limit:
            return text
        return replace(self, limit=self.limit - 1).split(text)[0].rstrip("\n") + "…"


@dataclass(frozen=True, slots=True, kw_only=True)
class ButtonLimits:
    """What a platform accepts as buttons on one message.

    Attributes:
        command: the longest command a button may carry (its callback data, id or value).
        command_in_bytes: ``command`` counts UTF-8 bytes, not characters.
        count: the most buttons on one message (None: no limit of pairbot's concern).
        count_noun: what the platform calls them, for the error (``reply buttons``).
        label: the longest label; a longer or empty one is refused. None: the platform's
            renderer clips labels itself (see :func:`clip`).
        distinct: two buttons may not carry the same command.
    """

    command: int
    command_in_bytes: bool = False
    count: int | None = None
    count_noun: str = "buttons"
    label: int | None = None
    distinct: bool = False

    def check(self, platform: str, buttons: Sequence[Button]) -> None:
        """Raise :class:`~bot.core.errors.ButtonError` for buttons ``platform`` refuses."""
        if self.count is not None and len(buttons) > self.count:
            raise ButtonError(
                f"{platform} allows {self.count} {self.count_noun}, got {len(buttons)}"
            )
        unit = "bytes" if self.command_in_bytes else "characters"
        seen: set[str] = set()
        for button in buttons:
            size = len(button.command.encode()) if self.command_in_bytes else len(button.command)
            if not 1 <= size <= self.command:
                raise ButtonError(
                    f"button {button.label!r}: command is {size} {unit}, "
                    f"{platform} allows 1 to {self.command}"
                )
            if self.distinct and button.command in seen:
                raise ButtonError(f"button {button.label!r}: two buttons carry the same command")
            seen.add(button.command)
            if self.label is not None and not 1 <= len(button.label) <= self.label:
                raise ButtonError(f"button label must be 1 to {self.label} characters")


__all__ = ["ATOM_REACH", "ButtonLimits", "TextSplit", "clip"]
