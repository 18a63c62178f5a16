"""Four processes writing one provider's state at once lose nothing (on each backend that
other processes share: the JSON files, the SQLite database and a PostgreSQL schema)."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

from stores import open_store
from stores.jsonfile import JsonFileStore
from tests.stores.helpers import expect_line, load, writer_process
from tests.stores.writer import expected

WORKERS = 4
OPS = 250


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["json", "sqlite", "postgres"])
def test_four_processes_interleaved_lose_nothing(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    state_dir = tmp_path / "state"
    go = tmp_path / "go"
    dsn = request.getfixturevalue("pg_dsn") if kind == "postgres" else None
    made = open_store(state_dir, backend=kind, dsn=dsn)
    with made.transaction():
        pass  # made before the storm, as a running bot would have
    made.close()
    names = [f"w{k}" for k in range(WORKERS)]
    with (
        writer_process("storm", state_dir, names[0], OPS, go, backend=kind, dsn=dsn) as p0,
        writer_process("storm", state_dir, names[1], OPS, go, backend=kind, dsn=dsn) as p1,
        writer_process("storm", state_dir, names[2], OPS, go, backend=kind, dsn=dsn) as p2,
        writer_process("storm", state_dir, names[3], OPS, go, backend=kind, dsn=dsn) as p3,
    ):
        procs = [p0, p1, p2, p3]
        for proc in procs:
            expect_line(proc, "READY")
        go.touch()  # all four start writing at once
        began = time.perf_counter()
        for proc in procs:
            expect_line(proc, "DONE")
            assert proc.wait(timeout=60) == 0
        elapsed = time.perf_counter() - began

    approved: set[str] = set()
    pending: set[str] = set()
    for name in names:
        mine_approved, mine_pending = expected(name, OPS)
        approved |= mine_approved
        pending |= mine_pending

    store = open_store(state_dir, backend=kind, dsn=dsn)
    with store.transaction() as txn:
        allow = txn.allow_from("telegram")
        requests = txn.requests("telegram")
    assert len(allow) == len(set(allow))
    assert set(allow) == approved
    assert {r.id for r in requests} == pending
    assert len(requests) == len(pending)
    for sender in approved:
        assert store.allowed_until("telegram", sender)
    if isinstance(store, JsonFileStore):  # what is on disk, not only what the store reads
        assert load(store.allow_path("telegram"))["allowFrom"] == allow
        assert len(load(store.pairing_path("telegram"))["requests"]) == len(pending)
        assert len(store.audit_path.read_text().splitlines()) == WORKERS * OPS

    audit = store.read_audit()
    assert len(audit) == WORKERS * OPS
    outcomes = [r["outcome"] for r in audit]
    assert outcomes.count("approved") == len(approved)
    assert outcomes.count("created") == len(approved) + len(pending)
    assert {r["subject"] for r in audit if r["outcome"] == "approved"} == approved
    # The writes really interleaved (not four runs one after the other).
    workers = [str(r["subject"]).split("-")[0] for r in audit]
    switches = sum(a != b for a, b in itertools.pairwise(workers))
    assert switches >= WORKERS * OPS // 4, switches  # waiters queue: no starvation
    store.close()
    print(
        f"{kind}: {WORKERS * OPS} writes from {WORKERS} processes in {elapsed:.2f}s, "
        f"{switches} switches between writers"
    )
