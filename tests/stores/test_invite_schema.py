"""The SQL schema's migration 6: a database of the version before gains the invites' table,
and keeps what it held."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from bot.core import codes
from bot.core.models import NodeInvite
from bot.core.protocols import StateStore
from stores.sql import base
from stores.sql.schema import MIGRATIONS, SCHEMA_VERSION

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)


def test_a_version_5_database_gains_the_invites_and_keeps_its_state(
    sql_opener: Callable[[], StateStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert SCHEMA_VERSION == 6
    with monkeypatch.context() as older:
        older.setattr(base, "MIGRATIONS", MIGRATIONS[:5])
        older.setattr(base, "SCHEMA_VERSION", 5)
        old = sql_opener()
        with old.transaction() as txn:
            txn.allow("telegram", "111")
        old.close()

    invite = NodeInvite(
        invite_id="I1",
        secret_hash=codes.hash_token("secret"),
        created_at=T0,
        expires_at=T0 + timedelta(minutes=10),
    )
    store = sql_opener()
    with store.transaction() as txn:
        assert txn.allow_from("telegram") == ["111"]
        assert txn.invites() == []
        txn.put_invite(invite)
    with sql_opener().transaction() as txn:
        assert txn.invites() == [invite]
        assert txn.spend_invite("I1", node_id="pixel-9", at=T0) is True
