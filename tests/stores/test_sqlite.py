"""The SQLite store's own promises: private files, WAL with full sync, a versioned schema
migrated once, a damaged database named and left as it is, codes unique in the database, a
gate that answers from memory and catches up from the allowlist log, locks that time out.

(What every backend must do is in tests/contracts/; the multi-process storms and kill -9
rounds in test_concurrency.py and test_crash.py run on SQLite too.)
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.core.clock import FakeClock
from bot.core.errors import (
    SchemaVersionError,
    StoreCorruptError,
    StoreError,
    StoreLockTimeoutError,
)
from bot.core.models import FOREVER, AuditEvent, PendingRequest
from bot.services.pairing import PairingService
from stores import open_store
from stores.jsonfile import JsonFileStore
from stores.sql import base
from stores.sql.schema import MIGRATIONS, SCHEMA_VERSION
from stores.sql.sqlite import SqliteStore
from tests.stores.helpers import expect_line, writer_process

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)


@pytest.fixture
def db(state_dir: Path) -> Path:
    return state_dir / "pairbot.db"


@pytest.fixture
def opened(db: Path) -> Iterator[list[SqliteStore]]:
    """Stores a test opened, closed at the end."""
    stores: list[SqliteStore] = []
    yield stores
    for store in stores:
        store.close()


def sqlite_store(opened: list[SqliteStore], db: Path, **kwargs: float) -> SqliteStore:
    store = SqliteStore(db, **kwargs)
    opened.append(store)
    return store


def files(state_dir: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.name: (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(state_dir.iterdir())
        if p.is_file()
    }


def raw(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(db, isolation_level=None)


def schema_version(db: Path) -> int:
    conn = raw(db)
    try:
        return int(
            conn.execute("SELECT value FROM pairbot_meta WHERE key = 'schema_version'").fetchone()[
                0
            ]
        )
    finally:
        conn.close()


def request(sender_id: str, code: str, provider: str = "telegram") -> PendingRequest:
    return PendingRequest(
        provider=provider, id=sender_id, code=code, created_at=T0, last_seen_at=T0
    )


# --- opening -------------------------------------------------------------------------------------


def test_open_store_picks_the_backend_and_the_database_path(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    default = open_store(state_dir, backend="sqlite")
    assert isinstance(default, SqliteStore)
    assert default.path == state_dir / "pairbot.db"
    elsewhere = open_store(state_dir, backend="sqlite", path=tmp_path / "db" / "state.db")
    assert isinstance(elsewhere, SqliteStore)
    assert elsewhere.path == tmp_path / "db" / "state.db"
    assert not state_dir.exists(), "nothing is made before the first use"
    assert isinstance(open_store(state_dir), JsonFileStore)
    with pytest.raises(ValueError, match=r"^store\.dsn: the postgres backend needs a DSN"):
        open_store(state_dir, backend="postgres")
    with pytest.raises(ValueError, match="unknown store backend 'mysql'"):
        open_store(state_dir, backend="mysql")


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("umask")
def test_the_database_and_its_files_are_private(
    opened: list[SqliteStore], state_dir: Path, db: Path
) -> None:
    store = sqlite_store(opened, db)
    PairingService(store, clock=FakeClock()).request("telegram", "1")
    store.allowed_until("telegram", "1")
    names = sorted(p.name for p in state_dir.iterdir())
    assert names == ["pairbot.db", "pairbot.db-shm", "pairbot.db-wal", "pairbot.db.lock"]
    assert mode(state_dir) == 0o700
    for name in names:
        assert mode(state_dir / name) == 0o600, name
    report = store.access_report()
    assert all(ok for ok, _ in report), report
    assert [line for _, line in report] == [
        f"{state_dir} mode 0700",
        *(f"{state_dir / name} mode 0600" for name in ("pairbot.db", "pairbot.db-wal")),
        *(f"{state_dir / name} mode 0600" for name in ("pairbot.db-shm", "pairbot.db.lock")),
    ]
    db.chmod(0o644)
    assert (False, f"{db} mode 0644") in store.access_report()


def test_wal_mode_and_full_sync(opened: list[SqliteStore], db: Path) -> None:
    store = sqlite_store(opened, db)
    with store.transaction() as txn:
        txn.allow("telegram", "1")
    writer, reader = store._connections()
    assert writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert writer.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert reader.execute("PRAGMA query_only").fetchone()[0] == 1


# --- the schema ----------------------------------------------------------------------------------


def test_a_newer_schema_is_refused_and_left_untouched(
    opened: list[SqliteStore], db: Path, state_dir: Path
) -> None:
    with sqlite_store(opened, db).transaction() as txn:
        txn.allow("telegram", "1")
    opened.pop().close()
    conn = raw(db)
    conn.execute("UPDATE pairbot_meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()  # the last connection: the WAL is checkpointed into the file and removed
    before = db.read_bytes(), db.stat().st_mtime_ns

    newer = sqlite_store(opened, db)
    with pytest.raises(SchemaVersionError) as caught, newer.transaction():
        pytest.fail("used a database of a newer schema")
    message = str(caught.value)
    assert message.startswith(f"{db}: database schema version 99 is newer than this pairbot's")
    assert "\n" not in message
    assert caught.value.path == db
    with pytest.raises(SchemaVersionError):
        newer.allowed_until("telegram", "1")
    with pytest.raises(SchemaVersionError):
        newer.check()
    assert newer.recheck(db) is True
    assert (db.read_bytes(), db.stat().st_mtime_ns) == before
    assert schema_version(db) == 99


def test_two_processes_starting_at_once_create_the_schema_once(tmp_path: Path) -> None:
    for round_no in range(3):
        state_dir = tmp_path / f"state{round_no}"
        go = tmp_path / f"go{round_no}"
        with (
            writer_process("open", state_dir, go, backend="sqlite") as p0,
            writer_process("open", state_dir, go, backend="sqlite") as p1,
            writer_process("open", state_dir, go, backend="sqlite") as p2,
        ):
            for proc in (p0, p1, p2):
                expect_line(proc, "READY")
            go.touch()
            for proc in (p0, p1, p2):
                expect_line(proc, "DONE")
                assert proc.wait(timeout=30) == 0
        assert schema_version(state_dir / "pairbot.db") == SCHEMA_VERSION


def test_migrations_run_in_order_on_an_older_database(
    opened: list[SqliteStore], db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with sqlite_store(opened, db).transaction() as txn:
        txn.allow("telegram", "1")
    opened.pop().close()
    # The next migration adds a table and then fills it.
    later = [
        *MIGRATIONS,
        ["CREATE TABLE later (key TEXT PRIMARY KEY, value TEXT NOT NULL)"],
        ["INSERT INTO later (key, value) SELECT 'first', sender_id FROM allowlist"],
    ]
    monkeypatch.setattr(base, "MIGRATIONS", later)
    monkeypatch.setattr(base, "SCHEMA_VERSION", len(later))

    upgraded = sqlite_store(opened, db)
    assert upgraded.allowed_until("telegram", "1")
    assert schema_version(db) == len(later)
    conn = raw(db)
    assert conn.execute("SELECT key, value FROM later").fetchall() == [("first", "1")]
    conn.close()


# --- damaged databases ---------------------------------------------------------------------------


def test_a_file_that_is_no_database_is_named_and_left_as_it_is(
    opened: list[SqliteStore], db: Path, state_dir: Path
) -> None:
    state_dir.mkdir(mode=0o700)
    db.write_bytes(b"allowFrom: everyone\n" * 300)
    db.chmod(0o600)
    before = files(state_dir)
    store = sqlite_store(opened, db)

    for use in (
        store.check,
        lambda: store.allowed_until("telegram", "1"),
        store.read_audit,
    ):
        with pytest.raises(StoreCorruptError) as caught:
            use()
        assert str(caught.value).startswith(f"{db}: not a usable SQLite database")
        assert "\n" not in str(caught.value)
        assert caught.value.path == db
    with pytest.raises(StoreCorruptError), store.transaction():
        pytest.fail("read a damaged database as empty")
    assert store.recheck(db) is True
    assert store.recheck(state_dir / "elsewhere.db") is False
    assert files(state_dir) == before

    db.unlink()  # the owner moved it away: usable again (made anew on first use)
    assert store.recheck(db) is False
    with store.transaction() as txn:
        assert txn.allow_from("telegram") == []


def test_a_damaged_page_fails_the_check(opened: list[SqliteStore], db: Path) -> None:
    store = sqlite_store(opened, db)
    with store.transaction() as txn:
        for i in range(2000):
            txn.allow("telegram", f"sender-{i:05d}")
    store.close()
    conn = raw(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    data = bytearray(db.read_bytes())
    assert len(data) > 8 * page_size
    data[5 * page_size : 6 * page_size] = b"\xa5" * page_size  # one page of the middle
    db.write_bytes(bytes(data))

    with pytest.raises(StoreCorruptError) as caught:
        SqliteStore(db).check()
    assert str(caught.value).startswith(f"{db}: ")
    assert caught.value.path == db


def test_a_directory_in_place_of_the_database(opened: list[SqliteStore], db: Path) -> None:
    db.mkdir(parents=True)
    store = sqlite_store(opened, db)
    with pytest.raises(StoreError, match="is a directory, not a database file"):
        store.check()
    with pytest.raises(StoreError, match=str(db)), store.transaction():
        pytest.fail("opened a directory")


# --- rules the database enforces -----------------------------------------------------------------


def test_a_code_is_unique_across_providers_in_the_database(
    opened: list[SqliteStore], db: Path
) -> None:
    store = sqlite_store(opened, db)
    with store.transaction() as txn:
        txn.put_request(request("1", "AAAA2222"))

    def take_the_code() -> None:
        with store.transaction() as txn:
            txn.allow("slack", "U2")
            txn.put_request(request("U2", "AAAA2222", provider="slack"))

    with pytest.raises(StoreError, match=r"refused the change.*pending_requests\.code") as caught:
        take_the_code()
    assert "AAAA2222" not in str(caught.value)  # an error never carries a code
    with store.transaction() as txn:
        assert txn.requests("slack") == []
        assert txn.allow_from("slack") == []  # the whole transaction was rolled back
        txn.put_request(request("1", "BBBB3333"))  # the same sender's new code: a replace
    with store.transaction() as txn:
        assert [r.code for r in txn.requests("telegram")] == ["BBBB3333"]


def test_reads_write_nothing(opened: list[SqliteStore], db: Path, state_dir: Path) -> None:
    """A listing command or the gate leaves every file as it is, the -shm file included."""
    store = sqlite_store(opened, db)
    pairing = PairingService(store, clock=FakeClock())
    pairing.allow("telegram", "1", actor="owner")
    pairing.request("telegram", "2")
    before = files(state_dir)
    reader = sqlite_store(opened, db)
    for seen in (store, reader):
        assert seen.allowed_until("telegram", "1")
        assert len(seen.read_audit()) == 2
        with seen.transaction() as txn:
            assert [r.id for r in txn.requests("telegram")] == ["2"]
    assert files(state_dir) == before


# --- the gate ------------------------------------------------------------------------------------


def traced(store: SqliteStore) -> list[str]:
    """The statements the store's reader (the gate's connection) runs from now on."""
    seen: list[str] = []
    _, reader = store._connections()
    assert isinstance(reader, sqlite3.Connection)
    reader.set_trace_callback(seen.append)
    return seen


def test_the_gate_answers_from_memory_and_catches_up_from_the_log(
    opened: list[SqliteStore], db: Path
) -> None:
    gate = sqlite_store(opened, db)
    other = sqlite_store(opened, db)
    with other.transaction() as txn:
        txn.allow("telegram", "alice")
    assert gate.allowed_until("telegram", "alice")
    statements = traced(gate)
    for _ in range(100):
        assert gate.allowed_until("telegram", "alice")
        assert not gate.allowed_until("telegram", "bob")
    assert set(statements) == {"PRAGMA data_version"}, "no query while nothing changed"

    statements.clear()
    with other.transaction() as txn:
        txn.disallow("telegram", "alice")
        txn.allow("telegram", "bob")
    assert not gate.allowed_until("telegram", "alice")
    assert gate.allowed_until("telegram", "bob")
    assert any("FROM allowlist_log" in s for s in statements)
    assert not any("FROM allowlist WHERE" in s for s in statements), "no reload"


def test_a_gate_further_behind_than_the_log_reloads(opened: list[SqliteStore], db: Path) -> None:
    gate = sqlite_store(opened, db)
    other = sqlite_store(opened, db)
    other.log_keep, other.log_trim_every = 3, 2
    with other.transaction() as txn:
        txn.allow("telegram", "alice")
    assert gate.allowed_until("telegram", "alice")
    statements = traced(gate)
    with other.transaction() as txn:
        txn.disallow("telegram", "alice")  # this change is trimmed from the log...
    for i in range(10):
        with other.transaction() as txn:
            txn.allow("telegram", f"s{i}")
    conn = raw(db)
    assert conn.execute("SELECT COUNT(*) FROM allowlist_log").fetchone()[0] <= 4
    conn.close()
    assert not gate.allowed_until("telegram", "alice")  # ...so the gate reloads to see it
    assert all(gate.allowed_until("telegram", f"s{i}") for i in range(10))
    assert any("FROM allowlist WHERE" in s for s in statements)


def test_the_gate_is_thread_safe_while_transactions_run(
    opened: list[SqliteStore], db: Path
) -> None:
    store = sqlite_store(opened, db)
    errors: list[BaseException] = []
    stop = threading.Event()

    def ask() -> None:
        try:
            while not stop.is_set():
                store.allowed_until("telegram", "steady")
                store.allowed_until("telegram", "flapping")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with store.transaction() as txn:
        txn.allow("telegram", "steady")
    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for i in range(100):
            with store.transaction() as txn:
                if i % 2:
                    txn.disallow("telegram", "flapping")
                else:
                    txn.allow("telegram", "flapping")
            assert store.allowed_until("telegram", "steady")
            assert (store.allowed_until("telegram", "flapping") is FOREVER) is (i % 2 == 0)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []


# --- the audit log -------------------------------------------------------------------------------


def test_the_audit_log_is_read_page_by_page(
    opened: list[SqliteStore], db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(base, "_AUDIT_PAGE", 3)
    store = sqlite_store(opened, db)
    with store.transaction() as txn:
        for n in range(10):
            txn.audit(
                AuditEvent(ts=T0, event="allow", actor="owner", subject=str(n), outcome="ok")
            )
    statements = traced(store)
    assert [r["subject"] for r in store.iter_audit()] == [str(n) for n in range(10)]
    assert sum("LIMIT ?" in s or "LIMIT 3" in s for s in statements) >= 4
    assert [r["subject"] for r in store.iter_audit(limit=7)] == [str(n) for n in range(3, 10)]
    records = store.iter_audit(limit=4)
    first = next(records)
    with store.transaction() as txn:  # committed after the first record was read: left out
        txn.audit(AuditEvent(ts=T0, event="allow", actor="owner", subject="late", outcome="ok"))
    assert [first["subject"], *(r["subject"] for r in records)] == ["6", "7", "8", "9"]


# --- locks ---------------------------------------------------------------------------------------


def test_another_process_holding_the_lock_times_out(
    opened: list[SqliteStore], db: Path, state_dir: Path
) -> None:
    store = sqlite_store(opened, db, lock_timeout=0.3)
    with store.transaction():
        pass
    with writer_process("hold", state_dir, 30, backend="sqlite") as holder:
        expect_line(holder, "LOCKED")
        began = time.perf_counter()
        with pytest.raises(StoreLockTimeoutError) as caught, store.transaction():
            pytest.fail("two transactions at once")
        assert 0.3 <= time.perf_counter() - began < 2.0
        assert caught.value.path == store.lock_path
        assert "\n" not in str(caught.value)
        assert store.allowed_until("telegram", "1") is None  # the gate does not wait
    began = time.perf_counter()  # the holder was killed: its locks went with it
    with store.transaction() as txn:
        txn.allow("telegram", "after")
    assert time.perf_counter() - began < 1.0


def test_a_foreign_writer_holding_the_database_times_out(
    opened: list[SqliteStore], db: Path
) -> None:
    """Something that is not pairbot (the sqlite3 shell) holds SQLite's own write lock."""
    store = sqlite_store(opened, db, lock_timeout=0.3)
    with store.transaction():
        pass
    foreign = raw(db)
    foreign.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreLockTimeoutError) as caught, store.transaction():
            pytest.fail("two writers at once")
        assert caught.value.path == db
        assert "database lock" in str(caught.value)
    finally:
        foreign.execute("ROLLBACK")
        foreign.close()
    with store.transaction() as txn:
        txn.allow("telegram", "after")


def test_the_audit_tail_stops_at_a_gap_until_told_to_step_over_it(
    opened: list[SqliteStore], db: Path
) -> None:
    store = sqlite_store(opened, db)
    start = store.audit_since(None)
    with store.transaction() as txn:
        txn.audit(AuditEvent(ts=T0, event="allow", actor="a", subject="1", outcome="added"))
    conn = raw(db)  # number 3 committed while number 2 never is (its transaction rolled back)
    try:
        record = '{"subject": "3"}'
        conn.execute(
            "INSERT INTO audit_log (seq, ts, event, record) VALUES (3, 0, 'x', ?)", (record,)
        )
    finally:
        conn.close()
    page = store.audit_since(start.end)
    assert [r["subject"] for _, r in page.records] == ["1"]
    assert page.gap
    assert store.audit_since(page.end).records == []
    stepped = store.audit_since(page.end, skip_gap=True)
    assert [r["subject"] for _, r in stepped.records] == ["3"]
    assert not stepped.gap
