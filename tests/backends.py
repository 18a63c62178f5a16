"""The store backends the contract suite and the service tests run on.

Each :class:`Backend` opens stores over one test's state and says what "another process"
is for it. The storage issue adds its backends to :data:`BACKENDS`; every test that asks
for the ``backend`` fixture (or ``store``, ``pairing``, ``nodes``) then runs on them too.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from bot.core.platforms import KNOWN_PROVIDERS
from bot.core.protocols import StateStore
from stores.jsonfile import JsonFileStore
from stores.memory import MemoryStore
from stores.sql.postgres import PostgresStore, dsn_target
from stores.sql.sqlite import SqliteStore
from tests.stores.helpers import snapshot


class Backend(ABC):
    """One backend under test, over the state of one test."""

    name: ClassVar[str]

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._opened: list[StateStore] = []

    @abstractmethod
    def open(self, *, lock_timeout: float = 10.0) -> StateStore:
        """Return the store under test (the bot's, say)."""

    @abstractmethod
    def other(self) -> StateStore:
        """Return what another process (the CLI, a restarted bot) would use on the same state.

        It sees only what is committed, and what it commits is seen by every other store.
        """

    def dump(self) -> object:
        """Return everything the state holds, to compare before and after."""
        return contents(self.other())

    def _keep(self, store: StateStore) -> StateStore:
        self._opened.append(store)
        return store

    def close(self) -> None:
        """Close every store this backend opened."""
        for store in self._opened:
            store.close()


class JsonBackend(Backend):
    """The JSON state dir. Another process is another :class:`JsonFileStore` on the same dir."""

    name = "json"

    def open(self, *, lock_timeout: float = 10.0) -> StateStore:
        return self._keep(JsonFileStore(self.state_dir, lock_timeout=lock_timeout))

    def other(self) -> StateStore:
        return self._keep(JsonFileStore(self.state_dir))

    def dump(self) -> object:
        """Every file's bytes and mtime: "unchanged" means not even rewritten as it was."""
        return snapshot(self.state_dir)


class MemoryBackend(Backend):
    """The in-memory store: one object per test (made by the first ``open``, with its lock
    timeout), and "another process" is that object too."""

    name = "memory"

    def open(self, *, lock_timeout: float = 10.0) -> StateStore:
        if not self._opened:
            self._keep(MemoryStore(lock_timeout=lock_timeout))
        return self._opened[0]

    def other(self) -> StateStore:
        return self.open()


class SqliteBackend(Backend):
    """The SQLite database ``pairbot.db`` in the state dir. Another process is another
    :class:`SqliteStore` on the same file (its own connections)."""

    name = "sqlite"

    @property
    def path(self) -> Path:
        return self.state_dir / "pairbot.db"

    def open(self, *, lock_timeout: float = 10.0) -> StateStore:
        return self._keep(SqliteStore(self.path, lock_timeout=lock_timeout))

    def other(self) -> StateStore:
        return self._keep(SqliteStore(self.path))


# --- PostgreSQL: a schema of its own per test ---------------------------------------------------

PG_URL_ENV = "PAIRBOT_TEST_DATABASE_URL"
PG_DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
PG_REQUIRE_ENV = "PAIRBOT_REQUIRE_POSTGRES"


def pg_url() -> str:
    """The test server: ``$PAIRBOT_TEST_DATABASE_URL``, else the local one CI runs."""
    return os.environ.get(PG_URL_ENV) or PG_DEFAULT_URL


@functools.cache
def _pg_unreachable(url: str) -> str | None:
    """Why the test server cannot be used (asked once per run), or None."""
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return " ".join(str(exc).split())[:200]
    return None


def need_postgres() -> str:
    """Return the test server's URL; skip the test if it is unreachable (fail it instead
    when ``$PAIRBOT_REQUIRE_POSTGRES=1``, as CI sets: CI never passes by skipping)."""
    url = pg_url()
    reason = _pg_unreachable(url)
    if reason is not None:
        message = (
            f"no PostgreSQL server at {dsn_target(url)} ({reason}); to run the PostgreSQL "
            f"tests, set {PG_URL_ENV} to a server's URL whose user may create schemas"
        )
        if os.environ.get(PG_REQUIRE_ENV) == "1":
            pytest.fail(f"{message} ({PG_REQUIRE_ENV}=1)", pytrace=False)
        pytest.skip(message)
    return url


@contextlib.contextmanager
def pg_schema() -> Iterator[str]:
    """A new schema on the test server for the ``with`` block, dropped after; yields a DSN
    whose ``search_path`` is that schema alone (and whose application_name is its name, so a
    test can find the store's sessions)."""
    url = need_postgres()
    name = f"pairbot_test_{secrets.token_hex(6)}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {name}")
    try:
        yield make_conninfo(url, options=f"-csearch_path={name}", application_name=name)
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            admin.execute(f"DROP SCHEMA {name} CASCADE")


class PostgresBackend(Backend):
    """A schema of its own on the test server. Another process is another
    :class:`PostgresStore` on the same DSN (its own pool and listener)."""

    name = "postgres"

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self._schema = pg_schema()
        self.dsn = self._schema.__enter__()

    def open(self, *, lock_timeout: float = 10.0) -> StateStore:
        return self._keep(PostgresStore(self.dsn, lock_timeout=lock_timeout))

    def other(self) -> StateStore:
        return self._keep(PostgresStore(self.dsn))

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._schema.__exit__(None, None, None)


BACKENDS: dict[str, type[Backend]] = {
    b.name: b for b in (JsonBackend, MemoryBackend, SqliteBackend, PostgresBackend)
}


def contents(store: StateStore) -> dict[str, object]:
    """Everything ``store`` holds, read through the protocol alone."""
    with store.transaction() as txn:
        state: dict[str, object] = {
            "requests": {p: txn.requests(p) for p in KNOWN_PROVIDERS},
            "allowFrom": {p: txn.allow_from(p) for p in KNOWN_PROVIDERS},
            "allowEnds": {p: txn.allow_ends(p) for p in KNOWN_PROVIDERS},
            "nodeRequests": txn.node_requests(),
            "pairedNodes": txn.paired_nodes(),
            "notices": txn.notices(),
            "invites": txn.invites(),
        }
    state["audit"] = store.read_audit()
    return state
