"""Taking turns on a connector that allows one consumer: the provider base's receiving apart
from running, and the runtime's lease (bot/runtime/leases.py) over LocalCluster siblings.

Time: the leases run out on a FakeClock the tests move; the loops pause for real, briefly
(:data:`QUICK`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from bot.core.clock import FakeClock
from bot.core.errors import ProviderStateError
from bot.core.models import Button
from bot.core.protocols import TakesTurns
from bot.runtime.leases import ConnectorLease, LeaseTiming, lease_name
from providers.base import BaseProvider
from providers.fakebase import wait_until
from stores.cluster import LocalCluster
from tests.helpers import Inbox, dm

QUICK = LeaseTiming(ttl=timedelta(seconds=10), renew_every=0.02, try_every=0.02)
LEASE = lease_name("turns")


class Turns(BaseProvider):
    """A platform in memory that allows one consumer: ``arrive`` is an event coming in."""

    platform = "Turns"
    one_consumer = True

    def __init__(self, *, fail_listen: bool = False) -> None:
        super().__init__(name="turns")
        self.fail_listen = fail_listen
        self.calls: list[str] = []
        self.sent: list[str] = []
        self.connected = False

    async def _connect(self) -> None:
        self.calls.append("connect")
        self.connected = True

    async def _listen(self) -> None:
        self.calls.append("listen")
        if self.fail_listen:
            raise ConnectionRefusedError("no stream")

    async def _stop_receiving(self) -> None:
        self.calls.append("stop_receiving")

    async def _received(self) -> None:
        self.calls.append("received")

    async def _disconnect(self) -> None:
        self.calls.append("disconnect")
        self.connected = False

    async def _send_text(self, chat_id: str, text: str, buttons: Sequence[Button]) -> str:
        self._need(True if self.connected else None)
        self.sent.append(text)
        return str(len(self.sent))

    def arrive(self, text: str) -> bool:
        return self._enqueue(dm(text, provider="turns"))


class Failing(LocalCluster):
    """A cluster member whose ``hold`` raises while ``down`` (the database is away)."""

    down = False

    def hold(self, lease: str, *, now: datetime, ttl: timedelta) -> bool:
        if self.down:
            raise ConnectionError("database away")
        return super().hold(lease, now=now, ttl=ttl)


class Slow(LocalCluster):
    """A cluster member whose ``hold`` answers after ``delay`` seconds (a loaded database)."""

    delay = 0.0

    def hold(self, lease: str, *, now: datetime, ttl: timedelta) -> bool:
        time.sleep(self.delay)  # called on a worker thread, as a database call is
        return super().hold(lease, now=now, ttl=ttl)


# -- the provider base ------------------------------------------------------------------------


async def test_a_provider_started_to_send_receives_nothing_until_told() -> None:
    provider, inbox = Turns(), Inbox()
    assert isinstance(provider, TakesTurns)
    await provider.start(inbox, receive=False)
    assert (provider.running, provider.receiving) == (True, False)
    assert not provider.arrive("lost")
    assert await provider.send("c1", "hi") == "1"

    await provider.start_receiving()
    await provider.start_receiving()  # receiving already: nothing
    assert provider.receiving
    assert provider.arrive("taken")
    assert [i.text for i in await inbox.wait()] == ["taken"]

    await provider.stop_receiving()
    assert (provider.running, provider.receiving) == (True, False)
    assert await provider.send("c1", "still sends") == "2"
    await provider.stop()
    assert provider.calls == [
        "connect",
        "listen",
        "stop_receiving",
        "received",
        "stop_receiving",
        "received",
        "disconnect",
    ]


async def test_stop_receiving_lets_the_work_in_hand_finish_and_goes_on_sending() -> None:
    release, done = asyncio.Event(), list[str]()

    async def slow(inbound: object) -> None:
        await release.wait()
        done.append("handled")

    provider = Turns()
    await provider.start(slow)
    provider.arrive("one")
    stopping = asyncio.create_task(provider.stop_receiving())
    finished, _ = await asyncio.wait({stopping}, timeout=0.1)
    assert not finished  # waits for the message in hand
    release.set()
    await stopping
    assert done == ["handled"]
    assert provider.running
    assert not provider.receiving
    await provider.stop()


async def test_a_failed_start_of_receiving_leaves_it_sending() -> None:
    provider = Turns(fail_listen=True)
    await provider.start(Inbox(), receive=False)
    with pytest.raises(ConnectionRefusedError):
        await provider.start_receiving()
    assert (provider.running, provider.receiving) == (True, False)
    assert await provider.send("c1", "hi") == "1"
    await provider.stop()
    with pytest.raises(ProviderStateError):
        await provider.start_receiving()


# -- the lease --------------------------------------------------------------------------------


@pytest.fixture
async def pair(clock: FakeClock) -> AsyncIterator[tuple[ConnectorLease, ConnectorLease]]:
    """Two instances' leases on one provider each, sharing one cluster's memory; the first
    started first."""
    first = LocalCluster("a")
    made = [
        ConnectorLease("turns", Turns(), cluster=cluster, clock=clock, timing=QUICK)
        for cluster in (first, first.sibling("b"))
    ]
    for lease in made:
        await lease.start(Inbox())
    yield made[0], made[1]
    for lease in made:
        await lease.stop()


def provider_of(lease: ConnectorLease) -> Turns:
    provider = lease._provider
    assert isinstance(provider, Turns)
    return provider


async def test_the_first_instance_receives_and_the_other_only_sends(pair, clock) -> None:
    a, b = pair
    assert (a.held, b.held) == (True, False)
    assert (provider_of(a).receiving, provider_of(b).receiving) == (True, False)
    assert provider_of(b).running
    assert await provider_of(b).send("c1", "from b") == "1"
    await asyncio.sleep(QUICK.try_every * 5)  # b keeps trying, a keeps renewing
    assert (a.held, b.held) == (True, False)
    assert a._cluster.holders(now=clock.now()) == {LEASE: "a"}


async def test_a_clean_stop_hands_over_at_the_next_try(pair, clock) -> None:
    a, b = pair
    await a.stop()
    assert a._cluster.holders(now=clock.now()) in ({}, {LEASE: "b"})  # given up at once
    await wait_until(lambda: b.held, timeout=1)
    assert provider_of(b).receiving
    assert not provider_of(a).running


async def test_a_holder_that_dies_is_taken_over_once_its_lease_runs_out(pair, clock) -> None:
    a, b = pair
    assert a._task is not None
    a._task.cancel()  # a dies: no renewal, nothing given up
    await asyncio.sleep(QUICK.try_every * 5)
    assert not b.held  # the lease still runs
    clock.advance(QUICK.ttl)
    await wait_until(lambda: b.held, timeout=1)
    assert b._cluster.holders(now=clock.now()) == {LEASE: "b"}


async def test_a_refused_renewal_stops_receiving_at_once_and_sending_goes_on(pair, clock) -> None:
    a, b = pair
    # b took the lease after a's ran out, before a renewed it (a paused too long).
    assert b._cluster.hold(LEASE, now=clock.now() + QUICK.ttl, ttl=QUICK.ttl)
    await wait_until(lambda: not provider_of(a).receiving, timeout=1)
    assert provider_of(a).running
    assert await provider_of(a).send("c1", "a still sends") == "1"
    await wait_until(lambda: b.held, timeout=1)


async def test_a_cluster_that_does_not_answer_stops_receiving_until_it_does(clock) -> None:
    cluster = Failing("a")
    lease = ConnectorLease("turns", Turns(), cluster=cluster, clock=clock, timing=QUICK)
    await lease.start(Inbox())
    try:
        assert lease.held
        cluster.down = True
        await wait_until(lambda: not provider_of(lease).receiving, timeout=1)
        assert provider_of(lease).running
        cluster.down = False
        await wait_until(lambda: lease.held, timeout=1)
    finally:
        await lease.stop()


async def test_an_answer_slower_than_the_renewal_pace_but_in_time_holds(clock) -> None:
    """A loaded database answers after the next renewal is due: still an answer (the try's
    deadline is ``answer_within``, not ``renew_every``)."""
    cluster = Slow("a")
    cluster.delay = 0.1
    timing = replace(QUICK, answer_within=1.0)
    lease = ConnectorLease("turns", Turns(), cluster=cluster, clock=clock, timing=timing)
    await lease.start(Inbox())
    try:
        assert lease.held
    finally:
        await lease.stop()


async def test_an_answer_later_than_answer_within_counts_as_refused(clock) -> None:
    cluster = Slow("a")
    cluster.delay = 0.3
    timing = replace(QUICK, answer_within=0.05)
    lease = ConnectorLease("turns", Turns(), cluster=cluster, clock=clock, timing=timing)
    await lease.start(Inbox())
    try:
        assert (provider_of(lease).running, lease.held) == (True, False)
        cluster.delay = 0.0
        await wait_until(lambda: lease.held, timeout=2)
    finally:
        await lease.stop()


async def test_a_cluster_down_at_start_starts_the_provider_for_sending(clock) -> None:
    cluster = Failing("a")
    cluster.down = True
    lease = ConnectorLease("turns", Turns(), cluster=cluster, clock=clock, timing=QUICK)
    await lease.start(Inbox())
    try:
        assert (provider_of(lease).running, lease.held) == (True, False)
        cluster.down = False
        await wait_until(lambda: lease.held, timeout=1)
    finally:
        await lease.stop()


async def test_a_takeover_that_cannot_receive_gives_the_turn_up(clock) -> None:
    first = LocalCluster("a")
    a = ConnectorLease("turns", Turns(), cluster=first, clock=clock, timing=QUICK)
    b = ConnectorLease(
        "turns", Turns(fail_listen=True), cluster=first.sibling("b"), clock=clock, timing=QUICK
    )
    await a.start(Inbox())
    await b.start(Inbox())
    try:
        await a.stop()
        await wait_until(lambda: provider_of(b).calls.count("listen") >= 2, timeout=1)
        assert not b.held
        assert first.holders(now=clock.now()) == {}  # given up after each failure
    finally:
        await b.stop()


async def test_a_start_that_fails_gives_the_lease_up(clock) -> None:
    cluster = LocalCluster("a")
    lease = ConnectorLease(
        "turns", Turns(fail_listen=True), cluster=cluster, clock=clock, timing=QUICK
    )
    with pytest.raises(ConnectionRefusedError):
        await lease.start(Inbox())
    assert cluster.holders(now=clock.now()) == {}
    assert not provider_of(lease).running


async def test_a_stop_stops_the_provider_before_giving_the_lease_up(pair, clock) -> None:
    a, _ = pair
    seen: list[dict[str, str]] = []
    provider = provider_of(a)
    real = provider._disconnect

    async def disconnect() -> None:
        seen.append(a._cluster.holders(now=clock.now()))
        await real()

    provider._disconnect = disconnect  # type: ignore[method-assign]
    await a.stop()
    assert seen == [{LEASE: "a"}]  # still held while the provider stopped
