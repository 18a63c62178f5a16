"""The providers' cursors on the SQL backends (the cursor seam of ``bot.core.protocols``): a
table of the second migration, read and saved outside the pairing transactions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.core.clock import FakeClock
from bot.core.protocols import StateStore
from bot.services.pairing import PairingService
from stores.sql.base import SqlStore
from tests.backends import Backend, PostgresBackend, SqliteBackend


@pytest.fixture(params=[SqliteBackend, PostgresBackend], ids=["sqlite", "postgres"])
def sql_backend(request: pytest.FixtureRequest, state_dir: Path) -> Iterator[Backend]:
    made: Backend = request.param(state_dir)
    yield made
    made.close()


def sql(store: StateStore) -> SqlStore:
    assert isinstance(store, SqlStore)
    return store


def test_a_cursor_is_kept_for_the_next_start_and_replaced_as_a_whole(
    sql_backend: Backend,
) -> None:
    store = sql(sql_backend.open())
    assert store.cursor("imessage.catch-up") is None
    store.save_cursor("imessage.catch-up", '{"after": 1}')
    store.save_cursor("other.cursor", "x")
    store.save_cursor("imessage.catch-up", '{"after": 2}')
    store.close()

    restarted = sql(sql_backend.other())
    assert restarted.cursor("imessage.catch-up") == '{"after": 2}'
    assert restarted.cursor("other.cursor") == "x"
    assert restarted.cursor("unknown") is None
    restarted.save_cursor("other.cursor", "")
    assert store.cursor("other.cursor") == ""
    with pytest.raises(TypeError, match="strings"):
        restarted.save_cursor("k", 1)  # type: ignore[arg-type]


def test_a_cursor_leaves_the_pairing_state_alone(sql_backend: Backend) -> None:
    store = sql_backend.open()
    PairingService(store, clock=FakeClock()).allow("imessage", "+15550100001", actor="owner")
    sql(store).save_cursor("imessage.catch-up", "1")
    with sql_backend.other().transaction() as txn:
        assert txn.allow_from("imessage") == ["+15550100001"]
    assert [r["subject"] for r in store.read_audit()] == ["+15550100001"]
    store.check()
