"""The PostgreSQL store's own promises: a versioned schema migrated once, a newer one refused
untouched, codes unique in the database, a gate kept current by LISTEN/NOTIFY (and by a
check per call while the listener is away), an outage met with fast one-line errors, answers
from the cache and one log line, locks that time out, and a doctor's report.

(What every backend must do is in tests/contracts/; the multi-process storms and kill -9
rounds in test_concurrency.py and test_crash.py run on PostgreSQL too.) Each test has a
schema of its own (the ``pg_dsn`` fixture); with no server they are skipped, or failed when
``PAIRBOT_REQUIRE_POSTGRES=1``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bot.core.clock import FakeClock
from bot.core.errors import (
    ConfigError,
    SchemaVersionError,
    StoreError,
    StoreLockTimeoutError,
    StoreUnavailableError,
)
from bot.core.models import PendingRequest
from bot.services.pairing import PairingService
from stores import open_store
from stores.sql import postgres
from stores.sql.postgres import PostgresStore, dsn_target
from stores.sql.schema import SCHEMA_VERSION
from tests.backends import PG_REQUIRE_ENV, PG_URL_ENV, need_postgres
from tests.pgproxy import Proxy
from tests.stores.helpers import expect_line, run_writer, writer_process

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
PASSWORD = "s3cret-pw-never-shown"


@pytest.fixture
def opened() -> Iterator[list[PostgresStore]]:
    stores: list[PostgresStore] = []
    yield stores
    for store in stores:
        store.close()


def pg_store(opened: list[PostgresStore], dsn: str, **kwargs: float) -> PostgresStore:
    store = PostgresStore(dsn, **kwargs)
    opened.append(store)
    return store


def raw(dsn: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(dsn, autocommit=True)


def schema_version(dsn: str) -> int:
    with raw(dsn) as conn:
        row = conn.execute(
            "SELECT value FROM pairbot_meta WHERE key = 'schema_version'"
        ).fetchone()
        assert row is not None
        return int(str(row[0]))


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> float:
    """Poll ``condition`` until true; return how long it took (fail after ``seconds``)."""
    began = time.perf_counter()
    while not condition():
        if time.perf_counter() - began > seconds:
            raise AssertionError(f"not true after {seconds}s")
        time.sleep(0.001)
    return time.perf_counter() - began


def request(sender_id: str, code: str, provider: str = "telegram") -> PendingRequest:
    return PendingRequest(
        provider=provider, id=sender_id, code=code, created_at=T0, last_seen_at=T0
    )


# --- opening, the DSN ----------------------------------------------------------------------------


def test_open_store_picks_postgres_and_a_bad_dsn_names_the_field(
    tmp_path: Path, pg_dsn: str
) -> None:
    store = open_store(tmp_path, backend="postgres", dsn=pg_dsn)
    assert isinstance(store, PostgresStore)
    store.close()
    with pytest.raises(ConfigError) as caught:
        PostgresStore(f"host=db password={PASSWORD} nonsense")  # libpq refuses it
    assert str(caught.value).startswith("store.dsn: not a PostgreSQL DSN")
    assert PASSWORD not in str(caught.value)


def test_dsn_target_never_shows_the_password() -> None:
    assert dsn_target(f"postgresql://bot:{PASSWORD}@db.example:6432/pairbot") == (
        "bot@db.example:6432/pairbot"
    )
    assert dsn_target(f"host=db user=bot password={PASSWORD} dbname=x") == "bot@db:5432/x"
    assert PASSWORD not in dsn_target(f"postgresql://bot:{PASSWORD}@/x?host=/run/pg")


# --- the schema ----------------------------------------------------------------------------------


def test_a_newer_schema_is_refused_and_left_untouched(
    opened: list[PostgresStore], pg_dsn: str
) -> None:
    with pg_store(opened, pg_dsn).transaction() as txn:
        txn.allow("telegram", "1")
    opened.pop().close()
    with raw(pg_dsn) as conn:
        conn.execute("UPDATE pairbot_meta SET value = '99' WHERE key = 'schema_version'")
        conn.execute("DROP TABLE audit_log")  # so a migration that ran would show

    def everything() -> list[object]:
        with raw(pg_dsn) as conn:
            tables = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                "ORDER BY tablename"
            ).fetchall()
            return [tables, conn.execute("SELECT * FROM pairbot_meta ORDER BY key").fetchall()]

    before = everything()
    newer = pg_store(opened, pg_dsn)
    with pytest.raises(SchemaVersionError) as caught, newer.transaction():
        pytest.fail("used a database of a newer schema")
    message = str(caught.value)
    assert message.startswith(
        f"{dsn_target(pg_dsn)}: database schema version 99 is newer than this pairbot's"
    )
    assert "\n" not in message
    with pytest.raises(SchemaVersionError):
        newer.allowed_until("telegram", "1")
    with pytest.raises(SchemaVersionError):
        newer.check()
    assert newer.recheck(newer.where) is True
    assert (
        False,
        f"schema version 99 is newer than this pairbot's ({SCHEMA_VERSION}): "
        "refused, left as it is; upgrade pairbot",
    ) in newer.diagnose()
    assert everything() == before


def test_processes_starting_at_once_create_the_schema_once(tmp_path: Path, pg_dsn: str) -> None:
    go = tmp_path / "go"
    with (
        writer_process("open", tmp_path, go, backend="postgres", dsn=pg_dsn) as p0,
        writer_process("open", tmp_path, go, backend="postgres", dsn=pg_dsn) as p1,
        writer_process("open", tmp_path, go, backend="postgres", dsn=pg_dsn) as p2,
    ):
        for proc in (p0, p1, p2):
            expect_line(proc, "READY")
        go.touch()
        for proc in (p0, p1, p2):
            expect_line(proc, "DONE")
            assert proc.wait(timeout=30) == 0
    assert schema_version(pg_dsn) == SCHEMA_VERSION


def test_a_code_is_unique_across_providers_in_the_database(
    opened: list[PostgresStore], pg_dsn: str
) -> None:
    store = pg_store(opened, pg_dsn)
    with store.transaction() as txn:
        txn.put_request(request("1", "AAAA2222"))

    def take_the_code() -> None:
        with store.transaction() as txn:
            txn.allow("slack", "U2")
            txn.put_request(request("U2", "AAAA2222", provider="slack"))

    with pytest.raises(StoreError, match=r"refused the change.*pending_requests_code") as caught:
        take_the_code()
    assert "AAAA2222" not in str(caught.value)  # the server's DETAIL quotes it; never shown
    assert "\n" not in str(caught.value)
    with store.transaction() as txn:
        assert txn.requests("slack") == []
        assert txn.allow_from("slack") == []


def test_the_pending_count_is_kept_by_the_database(
    opened: list[PostgresStore], pg_dsn: str
) -> None:
    store = pg_store(opened, pg_dsn)
    with store.transaction() as txn:
        for n, code in enumerate(("AAAA2222", "BBBB3333", "CCCC4444", "DDDD5555", "EEEE6666")):
            txn.put_request(request(str(n), code))
        txn.put_request(request("1", "FFFF7777"))  # a replace: no new request
        assert txn.drop_request("telegram", "2")
        txn.put_request(request("U1", "GGGG8888", provider="slack"))
        assert (txn.request_count("telegram"), txn.request_count("slack")) == (4, 1)
        assert txn.request_count("discord") == 0
    with raw(pg_dsn) as conn:
        counts = conn.execute(
            "SELECT provider, SUM(n)::BIGINT FROM pending_counts GROUP BY provider ORDER BY 1"
        )
        assert counts.fetchall() == [("slack", 1), ("telegram", 4)]
        rows = conn.execute("SELECT COUNT(*) FROM pending_counts").fetchone()
        assert rows is not None
        assert int(str(rows[0])) > 2  # spread over stripes, not one row each
        conn.execute("TRUNCATE pending_requests")  # by hand: the counts follow
    with store.transaction() as txn:
        assert txn.request_count("telegram") == 0
    # Both the count and the stranger's view read the counts, not the requests.
    dialect = postgres.PostgresDialect()
    assert "pending_counts" in dialect.pending_count
    assert dialect.pending_count in dialect.ask_view
    with store.transaction() as txn:
        assert txn.ask_view("telegram", "nobody").pending == 0


# --- the gate ------------------------------------------------------------------------------------


def test_a_revocation_by_another_process_reaches_the_gate(
    opened: list[PostgresStore], pg_dsn: str, tmp_path: Path
) -> None:
    gate = pg_store(opened, pg_dsn)
    assert not gate.allowed_until("telegram", "carol")
    delays = []
    for _ in range(3):
        run_writer("allow", tmp_path, "carol", backend="postgres", dsn=pg_dsn)
        delays.append(wait_for(lambda: gate.allowed_until("telegram", "carol") is not None))
        run_writer("revoke", tmp_path, "carol", backend="postgres", dsn=pg_dsn)
        delays.append(wait_for(lambda: not gate.allowed_until("telegram", "carol")))
    print(f"notification delays after the writer exited: {[f'{d * 1000:.1f}' for d in delays]} ms")


def test_this_process_commits_reach_its_gates_at_once(
    opened: list[PostgresStore], pg_dsn: str
) -> None:
    """No wait for a notification: a commit marks every cache of the process stale itself."""
    gate = pg_store(opened, pg_dsn)
    owner = PairingService(pg_store(opened, pg_dsn), clock=FakeClock())
    assert not gate.allowed_until("telegram", "frank")
    db = gate._db
    assert db is not None
    assert db.listener is not None
    db.listener.stop()  # listening, as far as the gate knows, but deaf: nothing is notified
    db.listener = None
    assert db.listening
    for _ in range(3):
        owner.allow("telegram", "frank", actor="owner")
        assert gate.allowed_until("telegram", "frank")
        owner.revoke("telegram", "frank", actor="owner")
        assert not gate.allowed_until("telegram", "frank")


def listener_pid(store: PostgresStore) -> int:
    db = store._db
    assert db is not None
    assert db.listener is not None
    conn = db.listener._conn
    assert conn is not None
    return conn.info.backend_pid


def terminate(dsn: str, pid: int) -> None:
    with raw(dsn) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_without_its_listener_the_gate_checks_on_every_call(
    opened: list[PostgresStore], pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = pg_store(opened, pg_dsn)
    with gate.transaction() as txn:
        txn.allow("telegram", "dave")
    assert gate.allowed_until("telegram", "dave")
    db = gate._db
    assert db is not None
    refused = threading.Event()

    def no_listener() -> psycopg.Connection[tuple[object, ...]]:
        refused.set()
        raise psycopg.OperationalError("listener kept away by the test")

    monkeypatch.setattr(db, "connect", no_listener)
    terminate(pg_dsn, listener_pid(gate))
    wait_for(refused.is_set)
    assert not db.listening
    # No notification can arrive now: the revocation is seen by the check per call.
    run_writer("revoke", tmp_path, "dave", backend="postgres", dsn=pg_dsn)
    assert not gate.allowed_until("telegram", "dave")
    run_writer("allow", tmp_path, "dave", backend="postgres", dsn=pg_dsn)
    assert gate.allowed_until("telegram", "dave")

    monkeypatch.undo()
    wait_for(lambda: db.listening)
    run_writer("revoke", tmp_path, "dave", backend="postgres", dsn=pg_dsn)
    wait_for(lambda: not gate.allowed_until("telegram", "dave"))  # notified again


# --- an outage -----------------------------------------------------------------------------------


@pytest.fixture
def proxy(pg_dsn: str) -> Iterator[Proxy]:
    fields = conninfo_to_dict(pg_dsn)
    made = Proxy(str(fields.get("host") or "127.0.0.1"), int(str(fields.get("port") or 5432)))
    made.start()
    yield made
    made.stop()


def test_an_outage_fails_fast_answers_the_gate_from_memory_and_logs_once(
    opened: list[PostgresStore],
    pg_dsn: str,
    proxy: Proxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    via_proxy = make_conninfo(pg_dsn, host="127.0.0.1", port=proxy.port, password=PASSWORD)
    store = pg_store(opened, via_proxy, connect_timeout=2)
    direct = pg_store(opened, pg_dsn)
    pairing = PairingService(store, clock=FakeClock())
    pairing.allow("telegram", "alice", actor="owner")
    pairing.allow("telegram", "erin", actor="owner")
    assert store.allowed_until("telegram", "alice")
    caplog.set_level(logging.WARNING, logger="stores.sql.postgres")

    proxy.stop()  # the server is away for this store; the direct one still reaches it
    errors = []
    took = []
    for _ in range(5):
        began = time.perf_counter()
        with pytest.raises(StoreUnavailableError) as caught:
            pairing.allow("telegram", "bob", actor="owner")
        took.append(time.perf_counter() - began)
        errors.append(str(caught.value))
        assert store.allowed_until("telegram", "alice")  # from the cache, no error
        assert not store.allowed_until("telegram", "bob")
    assert max(took[1:]) < 1.0, took  # once known away, calls do not wait the connect timeout
    for message in errors:
        assert message.startswith(f"{dsn_target(via_proxy)}: PostgreSQL unreachable: ")
        assert "\n" not in message
        assert PASSWORD not in message
    with pytest.raises(StoreUnavailableError):
        store.check()
    assert not store.diagnose()[0][0]
    assert all(PASSWORD not in line for _, line in store.diagnose())
    # Meanwhile another machine revokes erin.
    PairingService(direct, clock=FakeClock()).revoke("telegram", "erin", actor="owner")
    away = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(away) == 1, [r.getMessage() for r in away]
    assert PASSWORD not in caplog.text

    proxy.start()  # back, on the same port

    def works() -> bool:
        try:
            pairing.allow("telegram", "bob", actor="owner")
        except StoreUnavailableError:
            time.sleep(0.05)
            return False
        return True

    wait_for(works, 20)
    wait_for(lambda: not store.allowed_until("telegram", "erin"))  # caught up with the outage
    assert store.allowed_until("telegram", "bob")
    assert store.allowed_until("telegram", "alice")  # nothing acknowledged was lost
    back = [r for r in caplog.records if "reachable again" in r.getMessage()]
    assert len(back) == 1
    assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1


# --- locks ---------------------------------------------------------------------------------------


def test_another_process_holding_the_lock_times_out(
    opened: list[PostgresStore], pg_dsn: str, tmp_path: Path
) -> None:
    store = pg_store(opened, pg_dsn, lock_timeout=0.3)
    with store.transaction() as txn:
        txn.allow("telegram", "1")
    with writer_process("hold", tmp_path, 30, backend="postgres", dsn=pg_dsn) as holder:
        expect_line(holder, "LOCKED")
        with pytest.raises(StoreLockTimeoutError) as caught, store.transaction():
            pytest.fail("two transactions at once")
        assert "\n" not in str(caught.value)
        assert str(caught.value).startswith(f"{dsn_target(pg_dsn)}: another process held")
        assert store.allowed_until("telegram", "1")  # the gate does not wait for the lock
    # The holder was killed: the server ended its session and its lock with it.
    with store.transaction() as txn:
        txn.allow("telegram", "after")


# --- the doctor ----------------------------------------------------------------------------------


def test_diagnose_reports_reach_version_and_privileges(
    opened: list[PostgresStore], pg_dsn: str
) -> None:
    fresh = pg_store(opened, pg_dsn)
    report = fresh.diagnose()
    assert report[0][0]
    assert report[0][1].startswith(f"PostgreSQL {dsn_target(pg_dsn)}: reachable")
    assert report[1:] == [
        (True, "no pairbot tables yet: they are made on first use"),
        (True, f"may create the missing tables in schema {postgres_schema(pg_dsn)}"),
    ]
    with fresh.transaction():
        pass
    assert fresh.diagnose()[1:] == [
        (True, f"schema version {SCHEMA_VERSION} (current)"),
        (True, "may read and write its tables"),
    ]

    schema = postgres_schema(pg_dsn)
    role = f"{schema}_ro"
    with raw(pg_dsn) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}")
    try:
        limited = pg_store(opened, make_conninfo(pg_dsn, user=role, password=PASSWORD))
        report = limited.diagnose()
        assert report[1] == (True, f"schema version {SCHEMA_VERSION} (current)")
        assert report[2][0] is False
        assert report[2][1].startswith("may not read and write: pairbot_meta, pending_requests")
        assert all(PASSWORD not in line for _, line in report)
        with pytest.raises(StoreError, match="not allowed: permission denied"):
            PairingService(limited, clock=FakeClock()).allow("telegram", "x", actor="owner")
        limited.close()
    finally:
        with raw(pg_dsn) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")

    nowhere = pg_store(opened, make_conninfo(pg_dsn, port=1, password=PASSWORD))
    report = nowhere.diagnose()
    assert len(report) == 1
    assert report[0][0] is False
    assert "unreachable" in report[0][1]
    assert PASSWORD not in report[0][1]


def postgres_schema(dsn: str) -> str:
    with raw(dsn) as conn:
        row = conn.execute("SELECT current_schema()").fetchone()
        assert row is not None
        return str(row[0])


def test_the_schema_key_is_a_signed_32_bit_number() -> None:
    for name in ("public", "pairbot", "x" * 200):
        assert -(2**31) <= postgres.schema_key(name) < 2**31
    assert postgres.schema_key("public") != postgres.schema_key("pairbot")


def test_without_a_server_the_tests_skip_or_under_ci_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test of this file needs the server for this: it asks about one that is not there."""
    monkeypatch.setenv(PG_URL_ENV, f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/test")
    monkeypatch.delenv(PG_REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        need_postgres()
    reason = str(skipped.value)
    assert "no PostgreSQL server at postgres@127.0.0.1:1/test" in reason
    assert f"set {PG_URL_ENV}" in reason
    assert PASSWORD not in reason
    monkeypatch.setenv(PG_REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=f"{PG_REQUIRE_ENV}=1"):
        need_postgres()
