"""Storage backends behind :class:`bot.core.protocols.StateStore`; the only code touching disk."""

from __future__ import annotations

import os
from pathlib import Path

from stores.jsonfile import JsonFileStore

DEFAULT_STATE_DIR = "~/.pairbot"
STATE_DIR_ENV = "PAIRBOT_STATE_DIR"


def resolve_state_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Pick the state dir: an explicit path, else ``$PAIRBOT_STATE_DIR``, else ``~/.pairbot``."""
    chosen = explicit or os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR
    return Path(chosen).expanduser().absolute()


def open_store(state_dir: Path, *, backend: str = "json") -> JsonFileStore:
    """Open the state store of ``state_dir`` with the named backend."""
    if backend != "json":
        raise ValueError(f"unknown store backend {backend!r} (known: json)")
    return JsonFileStore(state_dir)


__all__ = [
    "DEFAULT_STATE_DIR",
    "STATE_DIR_ENV",
    "JsonFileStore",
    "open_store",
    "resolve_state_dir",
]
