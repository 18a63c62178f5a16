"""Two instances of the whole app taking turns on a connector that allows one consumer.

Each test runs two :class:`~bot.runtime.app.App` in this process on one state dir, sharing
one cluster, each with its own provider against the one loopback fake of the platform. The
cluster is ``LocalCluster`` siblings (one memory) and, for the tests that take ``clusters``,
also two ``PostgresCluster`` on one schema of the test server: what two ``pairbot run`` on one
PostgreSQL share. The leases run
out on the shared FakeClock, which the tests move; the lease loops pause for real, briefly.
The allowed sender's messages are echoed: a message handled twice is answered twice.

A holder that dies is played in-process by :func:`die`: everything of it stops running at
once, and nothing is given up or confirmed (the two-process ``kill -9`` suite plays the real
thing).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.cli import compose
from bot.core.clock import FakeClock
from bot.core.models import Inbound
from bot.core.protocols import Cluster, Provider
from bot.runtime.app import App
from bot.runtime.leases import LeaseTiming
from providers.discord.fake import FakeDiscordServer
from providers.discord.provider import DiscordProvider
from providers.fakebase import wait_until
from providers.signal.fake import FakeSignalDaemon
from providers.signal.provider import SignalProvider
from providers.telegram.fake import FakeTelegramServer
from providers.telegram.provider import TelegramProvider
from stores.cluster import LocalCluster
from tests.e2e.support import PACE, app_config, settle, texts

pytestmark = pytest.mark.e2e

QUICK = LeaseTiming(ttl=timedelta(seconds=10), renew_every=0.05, try_every=0.05)
TG_ALICE, TG_OWNER = 4242, 111
SIGNAL_ALICE = "a11ce000-0000-4000-8000-000000000001"
SIGNAL_OWNER = "0a11ce00-0000-4000-8000-00000000000a"
DISCORD_ALICE, DISCORD_OWNER = "190000000000000022", "190000000000000011"


@dataclass
class Pair:
    """Two instances on one state and one cluster; ``a`` started first (it holds)."""

    a: App
    b: App
    name: str

    def holds(self, app: App) -> bool:
        return app.leases[self.name].held

    def provider(self, app: App) -> Any:
        return app.providers[self.name]


def instance(
    platform: str,
    block: Mapping[str, Any],
    owner: str,
    provider: Callable[[], Provider],
    *,
    state_dir: Path,
    cluster: Cluster,
    clock: FakeClock,
    timing: LeaseTiming = QUICK,
) -> App:
    """One instance: its own store on the shared state dir, its own provider, no gateway
    (its socket lives in the state dir), the allowed sender echoed."""
    config = app_config(platform, owner, block, gateway={"enabled": False})
    return App(
        config,
        store=lambda: compose.configured_store(config, state_dir),
        providers=lambda: {platform: provider()},
        cluster=lambda _store: cluster,
        state_dir=state_dir,
        clock=clock,
        lease_timing=timing,
        **PACE,
    )


@asynccontextmanager
async def pair(
    name: str,
    make: Callable[[Cluster, LeaseTiming], App],
    clusters: tuple[Cluster, Cluster] | None = None,
    *,
    b_timing: LeaseTiming = QUICK,
) -> AsyncIterator[Pair]:
    """Start ``a`` (it takes the lease), then ``b``, on ``clusters`` (LocalCluster siblings
    unless given); stop both on the way out."""
    if clusters is None:
        first = LocalCluster("a")
        clusters = (first, first.sibling("b"))
    a = make(clusters[0], QUICK)
    b = make(clusters[1], b_timing)
    await a.start()
    try:
        await b.start()
        try:
            yield Pair(a, b, name)
        finally:
            await b.stop()
    finally:
        await a.stop()


def die(app: App, name: str) -> None:
    """Play ``kill -9`` on ``app`` as far as its connector goes: its lease is no longer
    renewed nor given up, and its provider takes nothing more from the platform and confirms
    nothing (Telegram's poller, Signal's stream reader). What it had in hand stays there (a
    test that needs it so holds it with a handler that never returns)."""
    provider = app.providers[name]
    for task in (
        app.leases[name]._task,
        *(getattr(provider, a, None) for a in ("_poller", "_reader")),
    ):
        if task is not None:
            task.cancel()


# -- Telegram -------------------------------------------------------------------------------


@pytest.fixture
async def tg(fake_clock: FakeClock) -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer(clock=fake_clock) as fake:
        fake.started_before(TG_OWNER, TG_ALICE)
        yield fake


def telegram(
    fake: FakeTelegramServer, state_dir: Path, clock: FakeClock
) -> Callable[[Cluster, LeaseTiming], App]:
    block = {"token": fake.token, "api_base_url": fake.base_url, "allow_from": [str(TG_ALICE)]}

    def provider() -> Provider:
        return TelegramProvider(token=fake.token, api_base_url=fake.base_url, poll_timeout=1)

    def make(cluster: Cluster, timing: LeaseTiming) -> App:
        return instance(
            "telegram",
            block,
            str(TG_OWNER),
            provider,
            state_dir=state_dir,
            cluster=cluster,
            clock=clock,
            timing=timing,
        )

    return make


async def echoes(read: Callable[[], list[str]], *wanted: str) -> None:
    """Each of ``wanted`` comes back exactly once, and nothing else does."""
    await texts(read, len(wanted))
    await settle(0.3)  # a second answer would show up by now
    assert sorted(read()) == sorted(wanted)


async def test_one_instance_polls_telegram_and_both_send(tg, state_dir, fake_clock, clusters):
    async with pair("telegram", telegram(tg, state_dir, fake_clock), clusters) as two:
        assert (two.holds(two.a), two.holds(two.b)) == (True, False)
        assert two.provider(two.b).running
        assert not two.provider(two.b).receiving
        for n in range(5):
            tg.dm(TG_ALICE, f"m{n}")
        await echoes(lambda: tg.messages_to(TG_ALICE), *(f"m{n}" for n in range(5)))
        assert await two.provider(two.b).send(str(TG_ALICE), "from b")  # sendMessage: no poll
        await asyncio.sleep(QUICK.try_every * 4)  # b went on trying for the lease
        assert tg.conflicts == 0  # never two getUpdates at once
        assert (two.holds(two.a), two.holds(two.b)) == (True, False)


async def test_a_clean_stop_hands_telegram_over_and_nothing_is_lost_or_repeated(
    tg, state_dir, fake_clock, clusters
):
    async with pair("telegram", telegram(tg, state_dir, fake_clock), clusters) as two:
        tg.dm(TG_ALICE, "before")
        await texts(lambda: tg.messages_to(TG_ALICE), 1)
        stopping = asyncio.create_task(two.a.stop())
        tg.dm(TG_ALICE, "during")  # a is stopping: it may handle it, or leave it to b
        await stopping
        started = time.monotonic()
        await wait_until(lambda: two.holds(two.b), timeout=2)
        took = time.monotonic() - started
        tg.dm(TG_ALICE, "after")
        await echoes(lambda: tg.messages_to(TG_ALICE), "before", "during", "after")
        assert took < 1  # the next try, once a gave the lease up
        assert tg.conflicts == 0


async def test_an_update_in_hand_when_the_holder_dies_goes_to_the_next_one(
    tg, state_dir, fake_clock, clusters
):
    async with pair("telegram", telegram(tg, state_dir, fake_clock), clusters) as two:
        dead: TelegramProvider = two.provider(two.a)
        in_hand = asyncio.Event()

        async def stuck(inbound: Inbound) -> None:  # a stops dead in the middle of it
            in_hand.set()
            await asyncio.Event().wait()

        dead._deliver = stuck  # type: ignore[method-assign]
        dead.drain_timeout = 0.1  # at the test's end: stuck, then cancelled
        update = tg.dm(TG_ALICE, "in hand")
        await asyncio.wait_for(in_hand.wait(), 5)
        tg.dm(TG_ALICE, "queued behind")
        die(two.a, "telegram")
        await asyncio.sleep(QUICK.try_every * 4)
        assert not two.holds(two.b)  # a's lease still runs

        fake_clock.advance(QUICK.ttl)
        await wait_until(lambda: two.holds(two.b), timeout=2)
        await echoes(lambda: tg.messages_to(TG_ALICE), "in hand", "queued behind")
        assert tg.times_served(update["update_id"]) == 2  # fetched by a, then by b


async def test_a_refused_renewal_stops_polling_and_the_new_holder_takes_the_rest(
    tg, state_dir, fake_clock
):
    async with pair("telegram", telegram(tg, state_dir, fake_clock)) as two:
        tg.dm(TG_ALICE, "one")
        await texts(lambda: tg.messages_to(TG_ALICE), 1)
        # b took the lease after a's ran out, before a renewed it (a stalled, say).
        assert two.b.cluster.hold(
            "connector:telegram", now=fake_clock.now() + QUICK.ttl, ttl=QUICK.ttl
        )
        await wait_until(lambda: not two.provider(two.a).receiving, timeout=2)
        await wait_until(lambda: two.holds(two.b), timeout=2)
        tg.dm(TG_ALICE, "two")
        await echoes(lambda: tg.messages_to(TG_ALICE), "one", "two")
        assert await two.provider(two.a).send(str(TG_ALICE), "a still sends")


async def test_takeover_after_a_silent_death_within_ttl_and_a_try(tg, state_dir, fake_clock):
    """On real time, with a short ttl: the takeover comes when the ttl has run out, within
    one try and the start of polling after it."""
    timing = LeaseTiming(ttl=timedelta(seconds=0.6), renew_every=0.15, try_every=0.1)
    make = telegram(tg, state_dir, fake_clock)

    def real_time(cluster: Cluster, _timing: LeaseTiming) -> App:
        app = make(cluster, timing)
        app.clock = _Monotonic()
        return app

    async with pair("telegram", real_time) as two:
        die(two.a, "telegram")
        died = time.monotonic()
        await wait_until(lambda: two.holds(two.b), timeout=5)
        took = time.monotonic() - died
        tg.dm(TG_ALICE, "after")
        await echoes(lambda: tg.messages_to(TG_ALICE), "after")
        assert took < timing.ttl.total_seconds() + timing.try_every + 0.5


class _Monotonic(FakeClock):
    """The wall clock's pace (a FakeClock that moves by itself)."""

    def __init__(self) -> None:
        super().__init__()
        self._zero = time.monotonic()
        self._start = super().now()

    def now(self) -> Any:
        return self._start + timedelta(seconds=time.monotonic() - self._zero)


# -- Signal ---------------------------------------------------------------------------------


@pytest.fixture
async def daemon() -> AsyncIterator[FakeSignalDaemon]:
    async with FakeSignalDaemon(keepalive=0.05, receive_mode="on-connection") as fake:
        yield fake


def signal(
    fake: FakeSignalDaemon, state_dir: Path, clock: FakeClock
) -> Callable[[Cluster, LeaseTiming], App]:
    block = {"http_url": fake.base_url, "account": fake.account, "allow_from": [SIGNAL_ALICE]}

    def provider() -> Provider:
        return SignalProvider(
            http_url=fake.base_url, account=fake.account, reconnect_min=0.05, reconnect_max=0.2
        )

    def make(cluster: Cluster, timing: LeaseTiming) -> App:
        return instance(
            "signal",
            block,
            SIGNAL_OWNER,
            provider,
            state_dir=state_dir,
            cluster=cluster,
            clock=clock,
            timing=timing,
        )

    return make


async def test_one_instance_holds_the_signal_stream_and_both_send(daemon, state_dir, fake_clock):
    async with pair("signal", signal(daemon, state_dir, fake_clock)) as two:
        assert daemon.streams == 1
        daemon.dm(SIGNAL_ALICE, "m1")
        daemon.dm(SIGNAL_ALICE, "m2")
        await echoes(lambda: daemon.messages_to(SIGNAL_ALICE), "m1", "m2")
        assert await two.provider(two.b).send(SIGNAL_ALICE, "from b")  # JSON-RPC send
        assert daemon.opened == 1  # b never opened a stream


async def test_what_arrives_while_nobody_holds_signal_waits_for_the_next_holder(
    daemon, state_dir, fake_clock
):
    async with pair("signal", signal(daemon, state_dir, fake_clock)) as two:
        daemon.dm(SIGNAL_ALICE, "before")
        await texts(lambda: daemon.messages_to(SIGNAL_ALICE), 1)
        die(two.a, "signal")  # its stream is closed; the daemon learns it at its next writes
        await wait_until(lambda: daemon.streams == 0, timeout=2)
        daemon.dm(SIGNAL_ALICE, "while nobody holds")
        assert daemon.held == 1  # on-connection: it waits on Signal's server
        fake_clock.advance(QUICK.ttl)
        await wait_until(lambda: two.holds(two.b), timeout=2)
        daemon.dm(SIGNAL_ALICE, "after")
        await echoes(
            lambda: daemon.messages_to(SIGNAL_ALICE), "before", "while nobody holds", "after"
        )
        assert daemon.unseen == []


async def test_a_clean_signal_handover(daemon, state_dir, fake_clock):
    async with pair("signal", signal(daemon, state_dir, fake_clock)) as two:
        await two.a.stop()
        await wait_until(lambda: two.holds(two.b), timeout=2)
        daemon.dm(SIGNAL_ALICE, "after")
        await echoes(lambda: daemon.messages_to(SIGNAL_ALICE), "after")


# -- Discord --------------------------------------------------------------------------------


@pytest.fixture
async def gateway(fake_clock: FakeClock) -> AsyncIterator[FakeDiscordServer]:
    async with FakeDiscordServer(clock=fake_clock) as fake:
        fake.user(DISCORD_OWNER, "Owner")
        fake.user(DISCORD_ALICE, "Alice")
        yield fake


def discord(
    fake: FakeDiscordServer, state_dir: Path, clock: FakeClock
) -> Callable[[Cluster, LeaseTiming], App]:
    urls = {"api_base_url": fake.api_base_url, "gateway_url": fake.gateway_url}
    block = {"token": fake.token, **urls, "allow_from": [DISCORD_ALICE]}

    def provider() -> Provider:
        return DiscordProvider(token=fake.token, **urls)

    def make(cluster: Cluster, timing: LeaseTiming) -> App:
        return instance(
            "discord",
            block,
            DISCORD_OWNER,
            provider,
            state_dir=state_dir,
            cluster=cluster,
            clock=clock,
            timing=timing,
        )

    return make


async def test_a_discord_takeover_identifies_anew_and_the_gap_is_not_replayed(
    gateway, state_dir, fake_clock
):
    slow = LeaseTiming(ttl=QUICK.ttl, renew_every=QUICK.renew_every, try_every=0.5)
    async with pair("discord", discord(gateway, state_dir, fake_clock), b_timing=slow) as two:
        assert len(gateway.identifies) == 1  # only a is on the gateway
        channel = await two.provider(two.b).dm_chat_id(DISCORD_ALICE)  # over REST
        assert await two.provider(two.b).send(channel, "from b")
        gateway.dm(DISCORD_ALICE, "before")
        await texts(lambda: gateway.texts_to(DISCORD_ALICE), 2)

        await two.a.stop()
        gap = gateway.dm(DISCORD_ALICE, "in the gap")  # before b's next try
        await wait_until(lambda: two.holds(two.b), timeout=3)
        assert len(gateway.identifies) == 2  # a new session, not a RESUME of a's
        gateway.dm(DISCORD_ALICE, "after")
        await echoes(lambda: gateway.texts_to(DISCORD_ALICE), "from b", "before", "after")
        # Discord replays missed events only on a RESUME of the same session.
        assert any(lost["d"]["id"] == gap["id"] for lost in gateway.lost)
