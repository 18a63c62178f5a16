"""Storage backends behind :class:`bot.core.protocols.StateStore`; the only code touching disk."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, overload

from bot.core.errors import ConfigError
from bot.core.protocols import StateStore
from stores.jsonfile import JsonFileStore
from stores.sql.postgres import PostgresStore
from stores.sql.sqlite import SqliteStore

DEFAULT_STATE_DIR = "~/.pairbot"
STATE_DIR_ENV = "PAIRBOT_STATE_DIR"
SQLITE_FILE = "pairbot.db"
"""The SQLite database's name in the state dir, unless the config gives a path."""
BACKENDS = ("json", "sqlite", "postgres")


def resolve_state_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Pick the state dir: an explicit path, else ``$PAIRBOT_STATE_DIR``, else ``~/.pairbot``."""
    chosen = explicit or os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR
    return Path(chosen).expanduser().absolute()


@overload
def open_store(
    state_dir: Path,
    *,
    backend: Literal["json"] = "json",
    path: Path | None = None,
    dsn: str | None = None,
) -> JsonFileStore: ...


@overload
def open_store(
    state_dir: Path, *, backend: str, path: Path | None = None, dsn: str | None = None
) -> StateStore: ...


def open_store(
    state_dir: Path,
    *,
    backend: str = "json",
    path: Path | None = None,
    dsn: str | None = None,
) -> StateStore:
    """Open the state store with the named backend.

    ``json``: the files of ``state_dir``. ``sqlite``: the database at ``path``, by default
    ``<state_dir>/pairbot.db``. ``postgres``: the database ``dsn`` points to (its first
    ``search_path`` schema). Nothing is created, read or connected to until the store is
    first used.

    Raises:
        ValueError: an unknown backend; ``postgres`` without a DSN, or with one that does not
            parse (a :class:`~bot.core.errors.ConfigError` naming ``store.dsn``).
    """
    if backend == "json":
        return JsonFileStore(state_dir)
    if backend == "sqlite":
        return SqliteStore(path if path is not None else state_dir / SQLITE_FILE)
    if backend == "postgres":
        if not dsn:
            raise ConfigError(
                "the postgres backend needs a DSN",
                field="store.dsn",
                hint="e.g. dsn: ${PAIRBOT_DATABASE_URL}",
            )
        return PostgresStore(dsn)
    raise ValueError(f"unknown store backend {backend!r} (known: {', '.join(BACKENDS)})")


__all__ = [
    "DEFAULT_STATE_DIR",
    "SQLITE_FILE",
    "STATE_DIR_ENV",
    "JsonFileStore",
    "PostgresStore",
    "SqliteStore",
    "open_store",
    "resolve_state_dir",
]
