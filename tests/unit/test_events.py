"""Events out (bot/runtime/events.py) against a loopback HTTP receiver: signed, in order per
subject, retried on a short backoff and given up on by the injected clock, a full queue
dropping its oldest; and the documented verifier (docs/observability.md) accepting them."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.core.clock import FakeClock
from bot.core.config import EventsConfig
from bot.core.models import AuditEvent
from bot.core.protocols import StateStore
from bot.runtime.events import CURSOR_KEY, EventsOut, EventsTiming, signature
from bot.runtime.outage import StoreOutage
from providers.fakebase import wait_until
from stores.cluster import LocalCluster
from stores.jsonfile import JsonFileStore
from stores.memory import MemoryStore
from tests.helpers import SECRET, Receiver, documented_verifier

QUICK = EventsTiming(first_pause=0.01, longest_pause=0.02, save_every=timedelta(0))


@pytest.fixture
async def receiver(fake_clock: FakeClock) -> AsyncIterator[Receiver]:
    async with Receiver(fake_clock) as running:
        yield running


def audit(
    store: StateStore, *subjects: str, event: str = "approve", provider: str = "telegram"
) -> None:
    with store.transaction() as txn:
        for subject in subjects:
            txn.audit(
                AuditEvent(
                    ts=FakeClock().now(),
                    event=event,
                    actor="owner:telegram:111",
                    subject=subject,
                    outcome="approved",
                    provider=provider,
                )
            )


def events_out(
    store: StateStore,
    receiver: Receiver,
    clock: FakeClock,
    *,
    kinds: list[str] | None = None,
    timing: EventsTiming = QUICK,
) -> EventsOut:
    return EventsOut(
        config=EventsConfig(url=receiver.url, secret=SECRET, kinds=kinds or []),
        store=store,
        cluster=LocalCluster(),
        clock=clock,
        outage=StoreOutage(),
        interval=0.01,
        timing=timing,
    )


@asynccontextmanager
async def sending(
    store: StateStore,
    receiver: Receiver,
    clock: FakeClock,
    *,
    kinds: list[str] | None = None,
    timing: EventsTiming = QUICK,
) -> AsyncIterator[EventsOut]:
    """:func:`events_out`, started (its first position saved), closed on the way out."""
    out = events_out(store, receiver, clock, kinds=kinds, timing=timing)
    await out.start()
    try:
        await wait_until(lambda: store.cursor(CURSOR_KEY) is not None)
        yield out
    finally:
        await out.aclose()


async def test_events_arrive_signed_with_the_audit_records_fields(
    receiver: Receiver, fake_clock: FakeClock
) -> None:
    store = MemoryStore()
    audit(store, "before")  # before the first start: not sent (the start is at the log's end)
    async with sending(store, receiver, fake_clock) as out:
        audit(store, "4242", "5151")
        await wait_until(lambda: out.sent == 2)
    records = store.read_audit()[1:]
    assert [{k: v for k, v in r.items() if k != "_id"} for r in receiver.got] == records
    assert out.stats() == (2, 0, 0, 0)


async def test_only_the_kinds_chosen_are_sent(receiver: Receiver, fake_clock: FakeClock) -> None:
    store = MemoryStore()
    async with sending(store, receiver, fake_clock, kinds=["revoke"]):
        audit(store, "a")
        audit(store, "b", event="revoke")
        await wait_until(lambda: len(receiver.got) == 1)
        await asyncio.sleep(0.05)
    assert [(r["event"], r["subject"]) for r in receiver.got] == [("revoke", "b")]


async def test_a_receiver_that_fails_then_recovers_gets_every_event_in_order_per_subject(
    receiver: Receiver, fake_clock: FakeClock
) -> None:
    store = MemoryStore()
    failing = {"n": 0}

    async def flaky(record: dict[str, Any]) -> int:
        # One subject is refused until the other's four events are in: they never wait for it.
        if record["subject"] == "slow" and receiver.subjects().count("quick") < 4:
            failing["n"] += 1
            return 503
        return 200

    receiver.answer = flaky
    async with sending(store, receiver, fake_clock) as out:
        with store.transaction() as txn:
            for n in range(4):
                for subject in ("slow", "quick"):
                    txn.audit(
                        AuditEvent(
                            ts=fake_clock.now(),
                            event="allow",
                            actor=str(n),
                            subject=subject,
                            outcome="added",
                            provider="telegram",
                        )
                    )
        await wait_until(lambda: out.sent == 8)
    per_subject = {
        s: [r["actor"] for r in receiver.got if r["subject"] == s] for s in ("slow", "quick")
    }
    assert per_subject == {"slow": ["0", "1", "2", "3"], "quick": ["0", "1", "2", "3"]}
    assert failing["n"] >= 1
    assert receiver.subjects()[:4] == ["quick"] * 4
    assert receiver.tries == 8 + failing["n"]
    assert out.stats() == (8, 0, 0, 0)


async def test_an_event_refused_for_an_hour_is_given_up_on_and_the_next_one_sent(
    receiver: Receiver, fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryStore()

    async def down_for_an_hour(record: dict[str, Any]) -> int:
        if record["subject"] == "doomed":
            fake_clock.advance(timedelta(minutes=25))  # each try comes much later (the clock)
            return 500
        return 200

    receiver.answer = down_for_an_hour
    async with sending(store, receiver, fake_clock) as out:
        audit(store, "doomed", "doomed")
        await wait_until(lambda: out.failed == 2)
        receiver.answer = None
        audit(store, "doomed")
        await wait_until(lambda: out.sent == 1)
    assert receiver.tries == 2 * 3 + 1  # three tries each over an hour (0, 25, 50 min, out at 75)
    assert out.stats() == (1, 2, 0, 0)
    gave_up = [r.getMessage() for r in caplog.records if "gave up" in r.getMessage()]
    assert (
        gave_up
        == ["events: gave up on a approve event after 3 tries over 1:00:00 (last: HTTP 500)"] * 2
    )
    assert SECRET not in caplog.text
    assert receiver.url not in caplog.text


async def test_a_full_queue_drops_the_oldest_counts_them_and_says_so_once(
    receiver: Receiver, fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryStore()
    release = asyncio.Event()

    async def stuck(_record: dict[str, Any]) -> int:
        await release.wait()
        return 200

    receiver.answer = stuck
    timing = EventsTiming(first_pause=0.01, queue=3, senders=1, save_every=timedelta(0))
    caplog.set_level(logging.WARNING, logger="bot.runtime.events")
    async with sending(store, receiver, fake_clock, timing=timing) as out:
        audit(store, "first")
        await wait_until(lambda: receiver.tries == 1)  # being sent: not waiting, never dropped
        audit(store, *(f"s{n}" for n in range(10)))
        await wait_until(lambda: out.dropped == 7)
        assert out.queued == 3
        release.set()
        await wait_until(lambda: out.sent == 4)
    assert receiver.subjects() == ["first", "s7", "s8", "s9"]  # the newest were kept
    assert out.stats() == (4, 0, 7, 0)
    full = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(full) == 1


async def test_what_was_not_sent_goes_out_after_a_restart_from_the_saved_position(
    receiver: Receiver, fake_clock: FakeClock, state_dir: Path
) -> None:
    store = JsonFileStore(state_dir)
    down = {"on": False}

    async def maybe_down(_record: dict[str, Any]) -> int:
        return 503 if down["on"] else 200

    receiver.answer = maybe_down
    out = events_out(store, receiver, fake_clock)
    await out.start()
    await wait_until(lambda: store.cursor(CURSOR_KEY) is not None)
    audit(store, "a")
    await wait_until(lambda: len(receiver.got) == 1)
    down["on"] = True
    audit(store, "b")
    await wait_until(lambda: receiver.tries >= 2)
    await out.aclose()  # "b" is not delivered: the position saved is before it
    audit(JsonFileStore(state_dir), "c")  # written while the bot is down (the CLI)
    down["on"] = False
    again = events_out(JsonFileStore(state_dir), receiver, fake_clock)
    await again.start()
    try:
        await wait_until(lambda: len(receiver.got) == 3)
    finally:
        await again.aclose()
    assert receiver.subjects() == ["a", "b", "c"]
    ids = [r["_id"] for r in receiver.got]
    assert len(set(ids)) == 3


def test_the_signature_is_hmac_sha256_over_the_timestamp_and_the_body() -> None:
    body = b'{"event":"approve"}'
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature(SECRET, "1700000000", body) == f"sha256={expected}"
    verify = documented_verifier()
    now = 1_700_000_100.0
    assert verify(SECRET, body, "1700000000", f"sha256={expected}", now)
    assert not verify(SECRET, body + b" ", "1700000000", f"sha256={expected}", now)
    assert not verify(SECRET, body, "1700000001", f"sha256={expected}", now)
