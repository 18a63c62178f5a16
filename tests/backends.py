"""The store backends the contract suite and the service tests run on.

Each :class:`Backend` opens stores over one test's state and says what "another process"
is for it. The storage issue adds its backends to :data:`BACKENDS`; every test that asks
for the ``backend`` fixture (or ``store``, ``pairing``, ``nodes``) then runs on them too.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from bot.core.platforms import KNOWN_PROVIDERS
from bot.core.protocols import StateStore
from stores.jsonfile import JsonFileStore
from stores.memory import MemoryStore
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


BACKENDS: dict[str, type[Backend]] = {
    b.name: b for b in (JsonBackend, MemoryBackend, SqliteBackend)
}


def contents(store: StateStore) -> dict[str, object]:
    """Everything ``store`` holds, read through the protocol alone."""
    with store.transaction() as txn:
        state: dict[str, object] = {
            "requests": {p: txn.requests(p) for p in KNOWN_PROVIDERS},
            "allowFrom": {p: txn.allow_from(p) for p in KNOWN_PROVIDERS},
            "nodeRequests": txn.node_requests(),
            "pairedNodes": txn.paired_nodes(),
            "notices": txn.notices(),
        }
    state["audit"] = store.read_audit()
    return state
