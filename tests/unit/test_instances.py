"""Several instances of the running bot on one state, as one bot (issue 13).

Each instance is a whole :class:`~bot.runtime.app.App` with a cluster of its own on one
shared memory (:meth:`LocalCluster.sibling`), over one store; its platform is a provider in
memory (:class:`Phone`) to which the test hands events directly, as a platform would hand one
event to two instances (a webhook retried to another instance, a message handed over
between two pollers).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from bot.core import messages
from bot.core.clock import FakeClock
from bot.core.errors import StoreUnavailableError
from bot.core.models import Button, ChatKind, Inbound
from bot.core.protocols import StateStore
from bot.runtime.app import App
from bot.runtime.inbound import HANDLED_KEEP, IN_FLIGHT
from stores.cluster import LocalCluster
from stores.memory import MemoryStore
from tests.e2e.support import app_config
from tests.helpers import dm, requested

OWNER, BOB = "111", "5151"
WITHIN = timedelta(minutes=1)


class Phone:
    """One instance's connection to the platform, in memory: what it sent, and a switch that
    makes its sends fail (or take a while)."""

    name = "telegram"
    bare_commands = False

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.deliver: Any = None
        self.failing = False
        self.slow = 0.0

    async def start(self, on_inbound: Any) -> None:
        self.deliver = on_inbound

    async def stop(self) -> None:
        self.deliver = None

    async def send(self, chat_id: str, text: str, *, buttons: Sequence[Button] = ()) -> str:
        if self.slow:
            await asyncio.sleep(self.slow)
        if self.failing:
            raise ConnectionError("the platform is away")
        self.sent.append((chat_id, text))
        return str(len(self.sent))

    async def edit(self, chat_id: str, message_id: str, text: str) -> None:
        self.sent.append((chat_id, text))

    async def dm_chat_id(self, user_id: str) -> str:
        return user_id

    def texts_to(self, chat_id: str) -> list[str]:
        return [text for chat, text in self.sent if chat == chat_id]


def _same(cluster: LocalCluster, store: StateStore) -> LocalCluster:
    """The cluster factory of one instance: its own cluster, whatever the store."""
    del store
    return cluster


class Instances:
    """N apps on one store, one cluster memory, one clock."""

    def __init__(self, tmp_path: Path, clock: FakeClock, cluster: LocalCluster) -> None:
        self.store = MemoryStore()
        self.clock = clock
        self.cluster = cluster
        self.tmp_path = tmp_path
        self.apps: list[App] = []
        self.phones: list[Phone] = []

    async def start(self, count: int, **tuning: Any) -> None:
        config = app_config("telegram", OWNER, {"token": "123:abc"}, gateway={"enabled": False})
        for i in range(count):
            phone = Phone()
            cluster = self.cluster if i == 0 else self.cluster.sibling(f"instance-{i}")
            app = App(
                config,
                store=lambda: self.store,
                providers=partial(dict, telegram=phone),
                cluster=partial(_same, cluster),
                state_dir=self.tmp_path / f"i{i}",
                clock=self.clock,
                **{"watch_interval": 0.05, **tuning},
            )
            await app.start()
            self.apps.append(app)
            self.phones.append(phone)

    async def stop(self) -> None:
        for app in self.apps:
            await app.stop()

    def texts_to(self, chat_id: str) -> list[str]:
        """What every instance sent ``chat_id``."""
        return [text for phone in self.phones for text in phone.texts_to(chat_id)]


@pytest.fixture
async def two(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Instances]:
    made = Instances(tmp_path, clock, LocalCluster("instance-0"))
    await made.start(2)
    made.apps[0].pairing.allow("telegram", BOB, actor="test")
    try:
        yield made
    finally:
        await made.stop()


async def until(condition: Any, within: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def from_bob(text: str, message_id: str) -> Inbound:
    return dm(text, sender=BOB, message_id=message_id)


# --- inbound: one event, handled once --------------------------------------------------------


async def test_one_event_handed_to_two_instances_at_once_is_handled_once(
    two: Instances,
) -> None:
    a, b = two.phones
    await asyncio.gather(a.deliver(from_bob("hello", "7")), b.deliver(from_bob("hello", "7")))
    assert two.texts_to(BOB) == ["hello"]
    await b.deliver(from_bob("again", "8"))  # another message is another event
    assert two.texts_to(BOB) == ["hello", "again"]


async def test_a_handled_event_stays_handled_for_a_day(two: Instances, clock: FakeClock) -> None:
    a, b = two.phones
    await a.deliver(from_bob("hello", "7"))
    await two.apps[0].inbound.claims.flush()  # the claim's keep goes with the next renewal
    clock.advance(HANDLED_KEEP - timedelta(minutes=1))
    await b.deliver(from_bob("hello", "7"))  # a platform's late retry, to the other one
    assert two.texts_to(BOB) == ["hello"]
    clock.advance(timedelta(minutes=1))
    await b.deliver(from_bob("hello", "7"))
    assert two.texts_to(BOB) == ["hello", "hello"]


async def test_an_event_in_hand_stays_taken_while_renewed(
    two: Instances, clock: FakeClock
) -> None:
    """A handler slower than the claim's ttl: the renewal keeps the event its own."""
    a, b = two.phones
    a.slow = 0.3  # the echo takes a while
    claims = two.apps[0].inbound.claims
    handling = asyncio.create_task(a.deliver(from_bob("slow", "9")))
    await until(lambda: bool(claims._in_flight))
    clock.advance(IN_FLIGHT - timedelta(seconds=1))
    await claims.flush()  # a renewal round, as every ttl/3 while it runs
    clock.advance(timedelta(seconds=5))  # past the first ttl: still renewed
    await b.deliver(from_bob("slow", "9"))
    await handling
    assert two.texts_to(BOB) == ["slow"]


async def test_an_instance_that_died_mid_message_holds_it_ten_seconds_at_most(
    two: Instances, clock: FakeClock
) -> None:
    dead = two.cluster.sibling("dead")  # took the event, then was killed: no renewal
    assert dead.claim(f"in:telegram:{BOB}:{BOB}:7", now=clock.now(), ttl=IN_FLIGHT)
    b = two.phones[1]
    await b.deliver(from_bob("hello", "7"))
    assert two.texts_to(BOB) == []  # still the dead one's
    clock.advance(IN_FLIGHT)
    await b.deliver(from_bob("hello", "7"))  # the takeover's redelivery
    assert two.texts_to(BOB) == ["hello"]


async def test_an_event_that_failed_is_given_back_for_another_instance(
    two: Instances, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = two.phones
    a.failing = True  # the reply cannot be sent: the message was not handled
    caplog.set_level(logging.ERROR, logger="bot.runtime.inbound")
    await a.deliver(from_bob("hello", "7"))
    assert "failed to handle a telegram message" in caplog.text
    await b.deliver(from_bob("hello", "7"))
    assert b.texts_to(BOB) == ["hello"]


async def test_button_presses_are_not_taken_for_redeliveries(two: Instances) -> None:
    """A press carries its notice's message id, the same for every press on that notice."""
    press = Inbound(
        provider="telegram",
        chat_id=OWNER,
        chat_kind=ChatKind.DM,
        sender_id=OWNER,
        text="/pending",
        message_id="1",
        is_button=True,
    )
    for phone in two.phones:
        await phone.deliver(press)
    assert two.texts_to(OWNER) == ["Nothing is pending.", "Nothing is pending."]


REFUSED = "postgresql://pairbot@db/pairbot: connection refused"


class AwayCluster(LocalCluster):
    """A cluster on a database that can be down: claims then fail as PostgreSQL's would."""

    def __init__(self) -> None:
        super().__init__("away")
        self.down = False
        self.claims = 0

    def claim(self, key: str, *, now: datetime, ttl: timedelta) -> bool:
        self.claims += 1
        if self.down:
            raise StoreUnavailableError(REFUSED)
        return super().claim(key, now=now, ttl=ttl)


class AwayStore(MemoryStore):
    """The state on the same database: transactions fail while it is down (the gate goes on
    answering from memory, as every backend's does)."""

    def __init__(self, cluster: AwayCluster) -> None:
        super().__init__()
        self._cluster = cluster

    def transaction(self, *, shared: bool = False) -> Any:
        if self._cluster.down:
            raise StoreUnavailableError(REFUSED)
        return super().transaction(shared=shared)


async def test_while_the_database_is_away_allowed_senders_go_on_unclaimed(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    away = AwayCluster()
    one = Instances(tmp_path, clock, away)
    one.store = AwayStore(away)
    await one.start(1)
    try:
        one.apps[0].pairing.allow("telegram", BOB, actor="test")
        phone = one.phones[0]
        away.down = True
        for i in range(3):
            await phone.deliver(from_bob(f"m{i}", str(i)))
        assert phone.texts_to(BOB) == ["m0", "m1", "m2"]  # dedupe fails open
        assert away.claims == 1  # not asked again on every message of the outage
        clock.advance(timedelta(seconds=1))
        await phone.deliver(from_bob("m3", "3"))
        assert away.claims == 2
        await asyncio.sleep(0.2)  # the teller's looks fail meanwhile
        down = [r for r in caplog.records if "cannot be reached" in r.getMessage()]
        assert len(down) == 1  # one line for the whole outage

        away.down = False
        await until(lambda: "reachable again" in caplog.text)
        clock.advance(timedelta(seconds=1))
        await phone.deliver(from_bob("m4", "4"))
        await phone.deliver(from_bob("m4", "4"))  # claimed again: a redelivery is dropped
        assert phone.texts_to(BOB) == ["m0", "m1", "m2", "m3", "m4"]
    finally:
        await one.stop()


# --- telling approved senders: once, from one instance ---------------------------------------


async def test_an_approved_sender_is_told_once_by_one_of_two_instances(
    two: Instances,
) -> None:
    for phone in two.phones:
        phone.slow = 0.2  # both tellers read the outbox before either drops the notice
    pairing = two.apps[0].pairing
    req = requested(pairing, "telegram", "4242")
    pairing.approve(req.code, actor="cli")
    await until(lambda: pairing.notices() == [])
    await asyncio.sleep(0.3)  # both tellers looked again meanwhile
    assert two.texts_to("4242") == [messages.approved_sender()]


async def test_a_telling_that_failed_is_left_to_another_instance(two: Instances) -> None:
    a, b = two.phones
    a.failing = True
    pairing = two.apps[0].pairing
    req = requested(pairing, "telegram", "4242")
    pairing.approve(req.code, actor="cli")
    await until(lambda: b.texts_to("4242") == [messages.approved_sender()], within=2.0)
    await until(lambda: pairing.notices() == [])
    assert a.texts_to("4242") == []


# --- heartbeats ------------------------------------------------------------------------------


async def test_each_instance_beats_with_what_it_is_and_holds(
    tmp_path: Path, clock: FakeClock
) -> None:
    cluster = LocalCluster("instance-0")
    made = Instances(tmp_path, clock, cluster)
    await made.start(2, beat_every=0.05)
    try:
        assert cluster.hold("telegram", now=clock.now(), ttl=timedelta(seconds=15))

        def beats() -> dict[str, dict[str, Any]]:
            seen = cluster.instances(now=clock.now(), within=WITHIN)
            return {beat.instance_id: dict(beat.facts) for beat in seen}

        await until(lambda: beats().get("instance-0", {}).get("held") == ["telegram"])
        facts = beats()
        assert set(facts) == {"instance-0", "instance-1"}
        assert facts["instance-1"]["held"] == []  # the lease is the other's
        for one in facts.values():
            assert one["phase"] == "running"
            assert one["ready"] is True
            assert isinstance(one["pid"], int)
            assert one["version"]
            assert one["host"]
        await made.apps[1].stop()
        assert beats()["instance-1"]["phase"] == "stopping"
        assert beats()["instance-1"]["ready"] is False
    finally:
        await made.apps[0].stop()


# --- a grant another instance made a moment ago -------------------------------------------------


async def test_a_sender_approved_on_another_instance_is_answered_before_the_gate_hears(
    two: Instances, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Instance B approves Carol; A's gate has not heard yet (it lags 1 to 20 ms on
    PostgreSQL). Her message to A is hers, answered: no new code, no owner notice."""
    a, _ = two.phones
    carol = "6262"
    asked = two.apps[1].pairing.request("telegram", carol).request
    assert asked is not None
    two.apps[1].pairing.approve(asked.code, actor="owner:telegram:111")
    monkeypatch.setattr(two.apps[0].pairing, "is_allowed", lambda provider, sender: False)
    notices_before = len(two.texts_to(OWNER))
    await a.deliver(dm("hello from carol", sender=carol, message_id="9"))
    await until(lambda: "hello from carol" in two.texts_to(carol))
    assert not [t for t in two.texts_to(carol) if "pairing code" in t]
    assert len(two.texts_to(OWNER)) == notices_before
    assert two.apps[0].pairing.pending("telegram") == []
