"""Making untrusted text (display names, node names, a message's preview) safe to show to
the owner."""

from __future__ import annotations

import math
import unicodedata
from datetime import UTC, datetime, timedelta

NAME_LIMIT = 64
MAX_MARKS = 4
"""Combining marks kept on one base character: enough for Vietnamese, Hebrew points or a
Tibetan stack, too few for a "zalgo" name to spill over the lines around it."""
BLANK_NAME = "[blank name]"
"""Shown for a name that was given but would show as nothing."""

_INVISIBLE = frozenset(
    [
        *range(0x200B, 0x2010),
        *range(0x2028, 0x2030),
        *range(0x2066, 0x206A),
        0xFEFF,
        0x061C,
        0x180E,
    ]
)
_BLANK = frozenset({0x115F, 0x1160, 0x3164, 0xFFA0, 0x2800})
"""Letters and symbols that draw as empty space (Hangul fillers, the braille blank): they
count as spaces."""
_STRIPPED = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
_MARKS = frozenset({"Mn", "Me"})


def clean(text: str, *, limit: int = NAME_LIMIT) -> str:
    """Strip control, zero-width and bidi characters, fold whitespace, cut to ``limit`` chars.

    Characters that draw as blank space fold like whitespace; a combining mark with no base
    character before it (at the start, after a space) is dropped, and at most
    :data:`MAX_MARKS` are kept on one base. The result cannot move the cursor, reorder a
    line, hide characters, break a notice into several lines or draw over its neighbours;
    it is empty when the text would show as nothing.
    """
    if limit <= 0:
        return ""
    kept: list[str] = []
    marks = 0
    for ch in text:
        if ch.isspace() or ord(ch) in _BLANK:
            # Every line break and space (\n, \r, U+0085, U+2028, U+202F ...) folds to one space.
            kept.append(" ")
            continue
        if ord(ch) in _INVISIBLE:
            continue
        category = unicodedata.category(ch)
        if category in _STRIPPED:
            continue
        if category in _MARKS:
            if not kept or kept[-1] == " " or marks >= MAX_MARKS:
                continue
            marks += 1
        else:
            marks = 0
        kept.append(ch)
    folded = " ".join("".join(kept).split())
    if len(folded) > limit:
        folded = folded[: limit - 1].rstrip() + "…"
    return folded


def clean_name(text: str, *, limit: int = NAME_LIMIT) -> str:
    """:func:`clean` a name for display; a name that would show as nothing becomes
    :data:`BLANK_NAME`. No name at all stays ``""``, for the caller to word."""
    return clean(text, limit=limit) or (BLANK_NAME if text else "")


def first_line(text: str, *, limit: int) -> str:
    """The first line of ``text`` that shows something, :func:`clean`: a preview of an
    untrusted message in one safe line of at most ``limit`` characters."""
    for line in text.splitlines():
        if shown := clean(line, limit=limit):
            return shown
    return ""


def ago(delta: timedelta) -> str:
    """Say how long ago in one short unit: ``42s``, ``5m``, ``3h``, ``2d``."""
    seconds = max(0, int(delta.total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def remaining(delta: timedelta) -> str:
    """Say how long is left, rounded up so it never says less than there is.

    ``42s``; ``15m`` for 14m59s; ``1h`` for 60 minutes; past an hour the next unit too when
    it is not zero (``1h 30m``, ``2d 5h``).
    """
    seconds = max(0, math.ceil(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    hours, minutes = divmod(math.ceil(seconds / 60), 60)
    if not hours:
        return f"{minutes}m"
    if hours < 24:
        return f"{hours}h" + (f" {minutes}m" if minutes else "")
    days, hours = divmod(math.ceil(seconds / 3600), 24)
    return f"{days}d" + (f" {hours}h" if hours else "")


def moment(value: datetime) -> str:
    """Say when, in UTC, to the minute (to the second if it has any): ``2026-01-08 12:00 UTC``,
    ``2026-01-01 12:00:02 UTC``."""
    at = value.astimezone(UTC)
    return at.strftime("%Y-%m-%d %H:%M:%S UTC" if at.second else "%Y-%m-%d %H:%M UTC")


def until(end: datetime, now: datetime) -> str:
    """Say when a grant ends and how long that is from ``now`` (rounded up):
    ``2026-01-08 12:00 UTC, 7d left``."""
    return f"{moment(end)}, {remaining(end - now)} left"
