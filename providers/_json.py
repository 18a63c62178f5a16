"""Reading untrusted JSON: what the platforms send may not have the shape their documents show.

Each reader returns the value when it has the expected type and an empty one otherwise, so a
provider reads a nested field in one expression (``as_str(as_dict(body.get("user")).get("id"))``)
and decides what an empty value means. Nothing here does I/O.
"""

from __future__ import annotations

from typing import Any


def as_str(value: object) -> str:
    """``value`` if it is a string, else ``""``."""
    return value if isinstance(value, str) else ""


def as_dict(value: object) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def as_int(value: object) -> int:
    """``value`` if it is an integer (not a boolean), else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def dicts(value: object) -> list[dict[str, Any]]:
    """The objects of a JSON list (anything else in it is skipped; not a list: none)."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


__all__ = ["as_dict", "as_int", "as_str", "dicts"]
