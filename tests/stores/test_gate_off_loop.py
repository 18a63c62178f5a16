"""A 100,000-entry allowlist changed by another process is read in a worker thread, never on
the event loop, and other senders' messages are answered meanwhile (issue 16)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from bot.core.clock import FakeClock
from bot.runtime.shared import Shared
from bot.services.pairing import PairingService
from stores import jsonfile
from stores.cluster import LocalCluster
from stores.jsonfile import JsonFileStore
from tests.stores.helpers import run_writer

SIZE = 100_000


class HeldRead:
    """Makes the gate's allowlist reads wait until :meth:`release` (the 100,000 entries
    take some ms to read; held, the test sees what happens meanwhile), noting their
    threads."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.threads: list[threading.Thread] = []
        self.started = threading.Event()
        self._go = threading.Event()
        real = jsonfile._gate_ids

        def held(*args: object) -> set[str]:
            self.threads.append(threading.current_thread())
            self.started.set()
            self._go.wait(30)
            return real(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(jsonfile, "_gate_ids", held)

    def release(self) -> None:
        self._go.set()


@pytest.fixture
def big(state_dir: Path) -> Path:
    with JsonFileStore(state_dir).transaction() as txn:
        for i in range(SIZE):
            txn.allow("telegram", f"{1000 + i}")
    return state_dir


def gate(store: JsonFileStore) -> Shared:
    pairing = PairingService(store, clock=FakeClock())
    return Shared(
        owners=set(), providers={}, clock=FakeClock(), pairing=pairing, cluster=LocalCluster()
    )


@pytest.fixture
def opened(big: Path) -> Iterator[Callable[[float], JsonFileStore]]:
    stores: list[JsonFileStore] = []

    def open_with(grace: float) -> JsonFileStore:
        stores.append(JsonFileStore(big, gate_grace=grace))
        return stores[-1]

    yield open_with
    for store in stores:
        store.close()


async def test_other_senders_are_answered_while_a_changed_allowlist_is_read(
    big: Path, opened: Callable[[float], JsonFileStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = gate(opened(3600.0))  # the version held was seen current "just now"
    assert await shared.is_allowed("telegram", "1007")  # the first read (in a thread too)
    reads = HeldRead(monkeypatch)
    run_writer("revoke", big, "1007")  # another process: 1007 goes
    run_writer("allow", big, "555")  # and 555 comes

    # Other senders' messages: answered at once from the version held, while the changed
    # file is being read in a worker thread (held there until released).
    loop_thread = threading.current_thread()
    assert await shared.is_allowed("telegram", "1001")
    assert reads.started.wait(10)
    for sender in ("1002", "1003", "100999"):
        assert await shared.is_allowed("telegram", sender)
    assert not await shared.is_allowed("telegram", "nobody")
    assert reads.threads
    assert all(thread is not loop_thread for thread in reads.threads)

    reads.release()
    await _until(lambda: not shared.pairing.allowed_soon("telegram", "1007"))
    assert await shared.is_allowed("telegram", "555")
    assert await shared.is_allowed("telegram", "1002")


async def test_past_the_grace_a_message_waits_for_the_read_off_the_loop(
    big: Path, opened: Callable[[float], JsonFileStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The version held was not seen current within the grace (0 here): nobody is answered
    from it, so a revocation is never missed; the message waits, the loop does not."""
    store = opened(0.0)
    shared = gate(store)
    assert await shared.is_allowed("telegram", "1007")
    reads = HeldRead(monkeypatch)
    run_writer("revoke", big, "1007")

    asked = asyncio.create_task(shared.is_allowed("telegram", "1007"))
    await _until(reads.started.is_set)  # the loop runs while the read is held
    assert isinstance(store.allowed_soon("telegram", "1002"), Future)
    assert not asked.done()

    reads.release()
    assert not await asked
    assert await shared.is_allowed("telegram", "1002")


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not met")


def test_a_large_list_read_in_steps_is_the_list_read_whole(tmp_path: Path) -> None:
    """The gate reads a list laid out as pairbot writes it in steps (letting the event loop's
    thread have the GIL between them); the ids it finds are exactly those of a whole parse,
    normal forms (Slack's upper case) and entries that never match included."""
    ids = [f"u{n:06d}x" for n in range(60_000)] + ["*", "", "  U7  ", "u000001X"]
    text = b'{\n  "version": 1,\n  "allowFrom": [\n    '
    text += b",\n    ".join(json.dumps(i).encode() for i in ids) + b'\n  ],\n  "note": 1\n}\n'
    path = tmp_path / "slack-allowFrom.json"

    steps = jsonfile._gate_steps(text)
    found = jsonfile._gate_ids(path, "slack", text)

    assert steps is not None
    assert len(list(steps[1])) > 5
    whole = jsonfile._decode_all(path, jsonfile.ALLOW, "slack", json.loads(text)["allowFrom"])
    assert found == set(whole)
    assert "U000001X" in found
    assert "U7" in found
