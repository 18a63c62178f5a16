"""kill -9 at random moments: the state stays usable, acknowledged approvals survive, no stale
lock (the JSON files, the SQLite database and a PostgreSQL schema)."""

from __future__ import annotations

import os
import secrets
import signal
import time
from pathlib import Path

import pytest

from bot.core.protocols import StateStore
from stores import open_store
from stores._files import TEMP_SUFFIX
from stores.jsonfile import JsonFileStore
from stores.sql.postgres import PostgresStore
from stores.sql.sqlite import SqliteStore
from tests.stores.helpers import expect_line, load, writer_process

ROUNDS = 20


def kill_at_random(state_dir: Path, prefix: str, kind: str, dsn: str | None) -> list[str]:
    """Run a looping writer, kill -9 it 0.05-0.4 s into its writes; return the ACKed senders."""
    with writer_process("loop", state_dir, prefix, backend=kind, dsn=dsn) as proc:
        expect_line(proc, "READY")
        time.sleep(0.05 + secrets.randbelow(351) / 1000)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
        assert proc.stdout is not None
        out = proc.stdout.read()
    return [line.split()[1] for line in out.splitlines() if line.startswith("ACK ")]


def check_files(store: StateStore, state_dir: Path, round_no: int) -> None:
    """Check that what a killed writer left on disk is usable."""
    if isinstance(store, JsonFileStore):
        assert not list(state_dir.rglob(f"*{TEMP_SUFFIX}")), f"round {round_no}"
        for path in store.state_files():
            store.load_check(path)  # every file parses (audit: every line is one object)
            if path.exists() and path != store.audit_path:
                load(path)
    store.check()  # SQLite: the database passes its integrity check; PostgreSQL: reachable


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["json", "sqlite", "postgres"])
def test_kill_9_loses_no_acknowledged_approval(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    state_dir = tmp_path / "state"
    dsn = request.getfixturevalue("pg_dsn") if kind == "postgres" else None
    made = open_store(state_dir, backend=kind, dsn=dsn)
    with made.transaction():
        pass
    made.close()
    acked: set[str] = set()
    lock_waits: list[float] = []
    debris = 0
    for round_no in range(ROUNDS):
        acked |= set(kill_at_random(state_dir, f"r{round_no}", kind, dsn))
        debris += len(list(state_dir.rglob(f"*{TEMP_SUFFIX}")))  # killed mid-write

        began = time.perf_counter()
        if kind == "json":
            store: StateStore = JsonFileStore(state_dir, lock_timeout=5)  # sweeps debris
        elif dsn is not None:
            store = PostgresStore(dsn, lock_timeout=5)
        else:
            store = SqliteStore(state_dir / "pairbot.db", lock_timeout=5)
        with store.transaction() as txn:
            allow = set(txn.allow_from("telegram"))
            pending = {r.id for r in txn.requests("telegram")}
        lock_waits.append(time.perf_counter() - began)

        check_files(store, state_dir, round_no)
        missing = acked - allow
        assert not missing, f"round {round_no}: acknowledged but not allowed: {missing}"
        assert not acked & pending, f"round {round_no}: acknowledged yet still pending"
        for sender in acked:
            assert store.allowed_until("telegram", sender)
        approvals = {r["subject"] for r in store.read_audit() if r["outcome"] == "approved"}
        assert acked <= approvals
        store.close()

    assert max(lock_waits) < 1.0, lock_waits  # the locks died with the writer: none stale
    assert len(acked) >= ROUNDS  # the writers did get work done before being killed
    print(
        f"{kind}: {ROUNDS} kills, {len(acked)} acknowledged approvals, {debris} temp files "
        f"swept, slowest lock take {max(lock_waits) * 1000:.0f} ms"
    )


def test_stray_temp_files_are_swept_on_open(state_dir: Path) -> None:
    store = JsonFileStore(state_dir)
    with store.transaction() as txn:
        txn.allow("telegram", "1")
    debris = [
        store.credentials_dir / f".telegram-allowFrom.json.0badf00d{TEMP_SUFFIX}",
        store.nodes_dir / f".paired.json.12345678{TEMP_SUFFIX}",
    ]
    for path in debris:
        path.write_text('{"half": ')
    keep = store.credentials_dir / "notes.txt"
    keep.write_text("mine")

    JsonFileStore(state_dir)

    assert not any(path.exists() for path in debris)
    assert keep.read_text() == "mine"
    assert store.allowed_until("telegram", "1")
