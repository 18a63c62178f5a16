"""Where each backend keeps the end of a grant: the JSON store's file beside Clawdbot's, the
order its two files are written in, and the SQL schema's migration of the grants made before.
(What every backend must do with ends is in tests/contracts/test_store.py.)"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.core.errors import StoreCorruptError
from bot.core.models import FOREVER
from bot.core.protocols import StateStore
from stores.jsonfile import JsonFileStore
from stores.sql import base
from stores.sql.schema import MIGRATIONS
from tests.stores.helpers import load, snapshot

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
LATER = T0 + timedelta(days=7)


REAL_REPLACE = os.replace


class Boom(BaseException):
    """Stands for a crash (``kill -9``, a power cut) between two writes of one commit."""


def write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def fresh_until(state_dir: Path, sender: str) -> datetime | None:
    """What a process started now sees of ``sender``'s grant."""
    return JsonFileStore(state_dir).allowed_until("telegram", sender)


# --- the JSON store: Clawdbot's allowFrom, and the ends beside it --------------------------------


def test_allow_from_keeps_clawdbots_shape_and_the_ends_go_beside_it(
    state_dir: Path, store: JsonFileStore
) -> None:
    with store.transaction() as txn:
        txn.allow("telegram", "111")
        txn.allow("telegram", "222", until=LATER)
    credentials = state_dir / "credentials"

    assert load(credentials / "telegram-allowFrom.json") == {
        "version": 1,
        "allowFrom": ["111", "222"],
    }
    assert load(credentials / "telegram-allowEnds.json") == {
        "version": 1,
        "ends": [{"id": "222", "endsAt": "2026-01-08T12:00:00.000Z"}],
    }
    assert stat.S_IMODE((credentials / "telegram-allowEnds.json").stat().st_mode) == 0o600
    assert store.ends_path("telegram") in store.state_files()  # checked, doctored, reported

    with store.transaction() as txn:
        txn.disallow("telegram", "222")
    assert load(credentials / "telegram-allowEnds.json") == {"version": 1, "ends": []}


def test_a_clawdbot_rewrite_of_allow_from_leaves_the_ends_in_force(
    state_dir: Path, store: JsonFileStore
) -> None:
    """Clawdbot writes ``{version, allowFrom}`` and drops any other key: an end kept in that
    file would be lost and the grant would become one for good."""
    with store.transaction() as txn:
        txn.allow("telegram", "222", until=LATER)
    allow_file = store.allow_path("telegram")
    write_json(allow_file, {"version": 1, "allowFrom": ["222", "333"]})  # Clawdbot approved 333

    assert store.allowed_until("telegram", "222") == LATER
    assert store.allowed_until("telegram", "333") is FOREVER
    assert fresh_until(state_dir, "222") == LATER


def test_an_end_whose_sender_is_not_listed_is_ignored_and_dropped_by_the_next_grant(
    state_dir: Path, store: JsonFileStore
) -> None:
    """An end left behind (a crash after allowFrom was written, a sender Clawdbot removed)."""
    write_json(store.allow_path("telegram"), {"version": 1, "allowFrom": ["111"]})
    write_json(
        store.ends_path("telegram"),
        {"version": 1, "ends": [{"id": "222", "endsAt": "2026-01-01T12:00:00.000Z"}]},
    )
    assert store.allowed_until("telegram", "222") is None
    with store.transaction() as txn:
        assert txn.allow_end("telegram", "222") is None
        assert txn.allow_ends("telegram") == {}
        txn.allow("telegram", "222")  # granted again, for good: the old end must not apply
    assert fresh_until(state_dir, "222") is FOREVER
    assert load(store.ends_path("telegram"))["ends"] == []


def test_unknown_keys_of_the_ends_file_survive_a_rewrite(
    state_dir: Path, store: JsonFileStore
) -> None:
    write_json(store.allow_path("telegram"), {"version": 1, "allowFrom": ["111"]})
    write_json(
        store.ends_path("telegram"),
        {
            "version": 1,
            "ends": [{"id": "111", "endsAt": "2026-01-08T12:00:00.000Z", "note": "a week"}],
            "by": "a newer pairbot",
        },
    )
    with store.transaction() as txn:
        txn.allow("telegram", "111", until=LATER + timedelta(days=1))
    assert load(store.ends_path("telegram")) == {
        "version": 1,
        "ends": [{"id": "111", "endsAt": "2026-01-09T12:00:00.000Z", "note": "a week"}],
        "by": "a newer pairbot",
    }


def test_a_corrupt_ends_file_is_refused_by_the_gate_and_left_as_it_is(
    state_dir: Path, store: JsonFileStore
) -> None:
    with store.transaction() as txn:
        txn.allow("telegram", "111")
    store.ends_path("telegram").write_text('{"version": 1, "ends": [{"id": "111"}]}\n')
    before = snapshot(state_dir)

    with pytest.raises(StoreCorruptError) as caught:
        JsonFileStore(state_dir).allowed_until("telegram", "111")
    assert str(store.ends_path("telegram")) in str(caught.value)
    assert "ends[0].endsAt: missing" in str(caught.value)
    with pytest.raises(StoreCorruptError):
        JsonFileStore(state_dir).check()
    assert any(
        not ok and "allowEnds.json" in line for ok, line in JsonFileStore.inspect(state_dir)
    )
    assert snapshot(state_dir) == before


REVOKED = None
FOR_GOOD = FOREVER
Step = tuple[str, datetime | None]
"""One change in a transaction: a sender and their grant after it (``REVOKED``: none,
``FOR_GOOD``: one that does not end, else its end)."""


def apply(store: JsonFileStore, steps: list[Step]) -> None:
    """Make ``steps`` in one transaction."""
    with store.transaction() as txn:
        for sender, grant in steps:
            if grant is REVOKED:
                txn.disallow("telegram", sender)
            else:
                txn.allow("telegram", sender, until=None if grant is FOR_GOOD else grant)


CHANGES: dict[str, tuple[list[Step], str, datetime | None, datetime | None]] = {
    # name: (steps, sender, their grant before, after); 111 ends at T0, 333 does not end
    "grant-that-ends": ([("222", LATER)], "222", None, LATER),
    "revoke-one-that-ends": ([("111", REVOKED)], "111", T0, None),
    "make-one-for-good": ([("111", FOR_GOOD)], "111", T0, FOREVER),
    "shorten-one-for-good": ([("333", LATER)], "333", FOREVER, LATER),
    "revoke-and-grant-in-one": ([("111", REVOKED), ("222", LATER)], "222", None, LATER),
}


@pytest.mark.parametrize("name", list(CHANGES))
def test_a_crash_between_the_two_files_never_leaves_a_sender_allowed_for_good_by_accident(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """A crash after each write of the commit in turn: what the next process reads is the
    grant as it was or as it is now, never a sender listed without the end they were given."""
    steps, sender, before, after = CHANGES[name]
    renames = 0
    for crash_after in range(1, 4):
        start = state_dir / name / str(crash_after)
        seeded = JsonFileStore(start)
        with seeded.transaction() as txn:
            txn.allow("telegram", "111", until=T0)
            txn.allow("telegram", "333")
        calls = 0

        def crashing(*args: Any, _after: int = crash_after, **kwargs: Any) -> None:
            nonlocal calls
            calls += 1
            if calls > _after:
                raise Boom
            REAL_REPLACE(*args, **kwargs)

        monkeypatch.setattr(os, "replace", crashing)
        try:
            apply(JsonFileStore(start), steps)
        except Boom:
            pass
        else:
            renames = max(renames, calls)
        finally:
            monkeypatch.setattr(os, "replace", REAL_REPLACE)
        seen = fresh_until(start, sender)
        assert seen in (before, after), (crash_after, seen)
        if "revoke" in name:
            assert fresh_until(start, "111") in (T0, None)
    assert renames, "some crash point let the whole commit through"


# --- the SQL backends: migration 5 -------------------------------------------------------------


def test_the_grants_of_a_version_4_database_migrate_as_grants_for_good(
    sql_opener: Callable[[], StateStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as older:
        older.setattr(base, "MIGRATIONS", MIGRATIONS[:4])
        older.setattr(base, "SCHEMA_VERSION", 4)
        old = sql_opener()
        with old.transaction() as txn:  # as pairbot wrote them before the ends were kept
            assert isinstance(txn, base.SqlTxn)
            for provider, sender in (("telegram", "111"), ("slack", "U1")):
                txn._run(
                    "INSERT INTO allowlist (provider, sender_id) VALUES (?, ?)", (provider, sender)
                )
                txn._run(
                    "INSERT INTO allowlist_log (provider, sender_id, added) VALUES (?, ?, 1)",
                    (provider, sender),
                )
        old.close()

    store = sql_opener()
    assert store.allowed_until("telegram", "111") is FOREVER
    with store.transaction() as txn:
        assert txn.allow_from("telegram") == ["111"]
        assert txn.allow_ends("telegram") == {}
        assert txn.allow_end("slack", "U1") is None
        txn.allow("telegram", "222", until=LATER)
    assert sql_opener().allowed_until("telegram", "222") == LATER
