"""A writer process for the multi-process store tests (run as ``python -m tests.stores.writer``).

Usage: ``python -m tests.stores.writer [--backend=json|sqlite|postgres] [--dsn=DSN] MODE DIR
...`` (the store is ``open_store(DIR, backend=..., dsn=...)``: the JSON files of DIR,
DIR/pairbot.db, or the database of the DSN).

Modes (all take the state dir first)::

    storm DIR WORKER OPS GO_FILE  wait for GO_FILE, then OPS interleaved writes: for each
                                  j, j % 3 == 2 approves sender j-2, else sender j requests
    loop DIR PREFIX               request/request/approve forever, "ACK <sender>" after each
                                  approve returned (flushed); meant to be killed with -9
    hold DIR SECONDS              take the state lock, print "LOCKED", sleep, release
    allow DIR SENDER              add a sender to the telegram allowlist
    revoke DIR SENDER             remove a sender from the telegram allowlist
    approve-revoke DIR CODE       approve the telegram request with CODE, then revoke its
                                  sender at once (before a running bot tells them)
    open DIR GO_FILE              wait for GO_FILE, then use the store once (a first use
                                  creates or migrates the schema)
    die DIR SENDER POINT          SENDER requests, then is approved by a process that kills
                                  itself (SIGKILL) at POINT of the commit: "append" (half of
                                  the audit lines written), "replace1" or "replace2" (before
                                  the first or second file is put in place)

Every mode prints "READY" once its store is open.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path

from bot.core.clock import FakeClock
from bot.services.pairing import PairingService, PairingSettings
from stores import open_store

PROVIDER = "telegram"
SETTINGS = PairingSettings(pending_ttl=timedelta(days=3650), max_pending_per_provider=10**6)


def sender(worker: str, j: int) -> str:
    """The sender id a worker uses for its j-th write."""
    return f"{worker}-{j}"


def expected(worker: str, ops: int) -> tuple[set[str], set[str]]:
    """Return (approved, still pending) senders after a storm worker did ``ops`` writes."""
    requested = {sender(worker, j) for j in range(ops) if j % 3 != 2}
    approved = {sender(worker, j - 2) for j in range(ops) if j % 3 == 2}
    return approved, requested - approved


def say(line: str) -> None:
    print(line, flush=True)


def storm(service: PairingService, worker: str, ops: int, go: Path) -> None:
    while not go.exists():
        time.sleep(0.005)
    codes: dict[str, str] = {}
    for j in range(ops):
        if j % 3 == 2:
            approved = service.approve(
                codes[sender(worker, j - 2)], provider=PROVIDER, actor="owner"
            )
            assert approved.id == sender(worker, j - 2)
        else:
            result = service.request(PROVIDER, sender(worker, j), {"username": f"u{j}"})
            assert result.request is not None, result
            codes[sender(worker, j)] = result.request.code


def loop(service: PairingService, prefix: str) -> None:
    j = 0
    while True:
        first = service.request(PROVIDER, sender(prefix, j)).request
        service.request(PROVIDER, sender(prefix, j + 1))
        assert first is not None
        service.approve(first.code, provider=PROVIDER, actor="owner")
        say(f"ACK {first.id}")
        j += 2


def die_at(point: str) -> None:
    """Make this process kill itself with SIGKILL at ``point`` of its next commit."""
    from stores import _files

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "append":
        real_write = _files._write_all

        def torn(fd: int, data: bytes) -> None:
            real_write(fd, data[: len(data) // 2])
            die()

        _files._write_all = torn
        return
    nth = int(point.removeprefix("replace"))
    real_replace, calls = os.replace, 0

    def replace(src: str, dst: str) -> None:
        nonlocal calls
        calls += 1
        if calls == nth:
            die()
        real_replace(src, dst)

    os.replace = replace  # type: ignore[assignment]


def main(argv: list[str]) -> int:
    backend = "json"
    dsn = None
    if argv and argv[0].startswith("--backend="):
        backend = argv.pop(0).partition("=")[2]
    if argv and argv[0].startswith("--dsn="):
        dsn = argv.pop(0).partition("=")[2]
    mode, state_dir, *rest = argv
    store = open_store(Path(state_dir), backend=backend, dsn=dsn)
    service = PairingService(store, clock=FakeClock(), settings=SETTINGS)
    say("READY")
    if mode == "storm":
        worker, ops, go = rest
        storm(service, worker, int(ops), Path(go))
    elif mode == "loop":
        loop(service, rest[0])
    elif mode == "hold":
        with store.transaction():
            say("LOCKED")
            time.sleep(float(rest[0]))
    elif mode == "allow":
        service.allow(PROVIDER, rest[0], actor="other-process")
    elif mode == "revoke":
        service.revoke(PROVIDER, rest[0], actor="other-process")
    elif mode == "approve-revoke":
        approved = service.approve(rest[0], provider=PROVIDER, actor="other-process")
        service.revoke(PROVIDER, approved.id, actor="other-process")
    elif mode == "open":
        start = Path(rest[0])
        while not start.exists():
            time.sleep(0.001)
        service.is_allowed(PROVIDER, "nobody")
    elif mode == "die":
        sender_id, point = rest
        created = service.request(PROVIDER, sender_id).request
        assert created is not None
        die_at(point)
        service.approve(created.code, provider=PROVIDER, actor="owner")
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    say("DONE")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
