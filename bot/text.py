"""Making untrusted text (display names, node names) safe to show to the owner."""

from __future__ import annotations

import unicodedata
from datetime import timedelta

NAME_LIMIT = 64

_INVISIBLE = frozenset(
    [*range(0x200B, 0x2010), *range(0x2028, 0x2030), *range(0x2066, 0x206A), 0xFEFF, 0x061C,
     0x180E]
)
_STRIPPED = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


def clean(text: str, *, limit: int = NAME_LIMIT) -> str:
    """Strip control, zero-width and bidi characters, fold whitespace, cut to ``limit`` chars.

    The result cannot move the cursor, reorder a line, hide characters or break a notice
    into several lines.
    """
    if limit <= 0:
        return ""
    kept = []
    for ch in text:
        if ch.isspace():
            # Every line break and space (\n, \r, U+0085, U+2028, U+202F ...) folds to one space.
            kept.append(" ")
            continue
        if ord(ch) in _INVISIBLE or unicodedata.category(ch) in _STRIPPED:
            continue
        kept.append(ch)
    folded = " ".join("".join(kept).split())
    if len(folded) > limit:
        folded = folded[: limit - 1].rstrip() + "…"
    return folded


def ago(delta: timedelta) -> str:
    """Say how long ago in one short unit: ``42s``, ``5m``, ``3h``, ``2d``."""
    seconds = max(0, int(delta.total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
