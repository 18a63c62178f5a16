"""Each backend's own tests: ``store`` is a JSON store on the state dir (the SQLite store's
tests open theirs), and the pairing service has a higher pending cap. (What every backend must
do is in tests/contracts/.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bot.core.clock import FakeClock
from bot.core.protocols import StateStore
from bot.services.pairing import PairingService, PairingSettings
from stores.jsonfile import JsonFileStore
from stores.sql.postgres import PostgresStore
from stores.sql.sqlite import SqliteStore


@pytest.fixture
def store(state_dir: Path) -> Iterator[JsonFileStore]:
    opened = JsonFileStore(state_dir)
    yield opened
    opened.close()


@pytest.fixture
def pairing(store: JsonFileStore, clock: FakeClock) -> PairingService:
    return PairingService(
        store, clock=clock, settings=PairingSettings(max_pending_per_provider=100)
    )


@pytest.fixture(params=["sqlite", "postgres"])
def sql_opener(
    request: pytest.FixtureRequest, state_dir: Path
) -> Iterator[Callable[[], StateStore]]:
    """Opens a store of a SQL backend on this test's database, each call a new one (another
    process, or a later start); every one is closed after the test."""
    opened: list[StateStore] = []
    if request.param == "sqlite":
        state_dir.mkdir(mode=0o700)
        path = state_dir / "pairbot.db"

        def open_sqlite() -> StateStore:
            opened.append(SqliteStore(path))
            return opened[-1]

        yield open_sqlite
    else:
        dsn = request.getfixturevalue("pg_dsn")

        def open_postgres() -> StateStore:
            opened.append(PostgresStore(dsn))
            return opened[-1]

        yield open_postgres
    for store in opened:
        store.close()
