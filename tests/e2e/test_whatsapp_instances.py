"""WhatsApp on two instances behind one load balancer: what one instance's webhook learns,
the other learns too (issue 13: webhook connectors run on every instance).

Meta posts a message's status webhooks, and a sender's messages, to whichever instance the
balancer picks. Here two WhatsAppProvider run against the one loopback fake, each met with
the other through :class:`~bot.runtime.news.ClusterPeers` over the ``clusters`` fixture
(LocalCluster siblings, or two PostgresCluster on one schema); the test plays the balancer
by pointing the fake's webhook at one instance or the other. Every send that would wait for a
verdict gets ``status_wait=30`` and must end within 5 s: it waits for nothing, or learns its
verdict from the other instance.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from bot.core.clock import FakeClock
from bot.core.errors import RecipientUnreachable
from bot.core.protocols import Cluster
from bot.runtime.news import ClusterPeers
from providers.fakebase import wait_until
from providers.whatsapp.fake import FakeWhatsAppServer
from providers.whatsapp.provider import WhatsAppProvider
from tests.e2e.test_whatsapp import ALICE, BOB, DAY_LATER, OWNER, make_fake, make_provider
from tests.helpers import Inbox

pytestmark = pytest.mark.e2e

IN_TIME = 5.0
"""Seconds a send may take here; its ``status_wait`` is 30 s, so a send that waited for a
status posted to the other instance fails the test."""


@dataclass
class Instance:
    provider: WhatsAppProvider
    inbox: Inbox
    peers: ClusterPeers

    @property
    def url(self) -> str:
        return self.provider.webhook_url


@pytest.fixture
async def fake(fake_clock: FakeClock) -> AsyncIterator[FakeWhatsAppServer]:
    async with make_fake(fake_clock) as server:
        yield server


@pytest.fixture
async def two(
    fake: FakeWhatsAppServer, clusters: tuple[Cluster, Cluster]
) -> AsyncIterator[tuple[Instance, Instance]]:
    """Instances a and b, started as the runtime starts them (met, then started)."""
    made: list[Instance] = []
    try:
        for cluster in clusters:
            provider = make_provider(fake, status_wait=30)
            peers = ClusterPeers("whatsapp", provider, cluster=cluster)
            await peers.start()
            made.append(Instance(provider, Inbox(), peers))
            await provider.start(made[-1].inbox)
        yield made[0], made[1]
    finally:
        for each in made:
            await each.provider.stop()
            await each.peers.stop()


async def wrote_to(fake: FakeWhatsAppServer, one: Instance, sender: str, text: str) -> None:
    """``sender`` writes, and the balancer hands it to ``one``."""
    fake.webhook_url = one.url
    fake.dm(sender, text, name=sender)
    await one.inbox.wait()


async def test_a_sender_who_wrote_to_one_instance_is_answered_by_the_other_at_once(
    fake, two
) -> None:
    a, b = two
    await wrote_to(fake, a, BOB, "hi")
    fake.send_statuses = False  # no verdict would ever come: a send that waits hangs

    await wait_until(lambda: b.provider._writers.vouch(BOB), timeout=IN_TIME)
    await asyncio.wait_for(b.provider.send(BOB, "your code is 123"), IN_TIME)

    assert fake.texts_to(BOB) == ["your code is 123"]


async def test_a_refusal_posted_to_the_other_instance_reaches_the_sending_one(
    fake, two, fake_clock
) -> None:
    """Before: b took the send, waited 30 s for the failed status that a got, and called the
    message to someone outside their 24-hour window sent."""
    a, b = two
    fake_clock.advance(DAY_LATER)  # Alice wrote more than 24 hours ago
    fake.webhook_url = a.url  # where every status goes

    with pytest.raises(RecipientUnreachable):
        await asyncio.wait_for(b.provider.send(ALICE, "are you there?"), IN_TIME)

    assert [m["text"] for m in fake.refused] == ["are you there?"]


async def test_a_status_posted_to_the_other_instance_ends_the_wait(fake, two) -> None:
    """The owner wrote lately (the fake delivers), but to neither instance since they
    started: b's notice waits for its verdict, which a's webhook gets."""
    a, b = two
    fake.webhook_url = a.url

    sent = await asyncio.wait_for(b.provider.send(OWNER, "a stranger asked"), IN_TIME)

    assert sent
    assert fake.texts_to(OWNER) == ["a stranger asked"]


async def test_news_is_told_once_per_sender_and_never_for_others_sends(fake, two) -> None:
    """A sender writing again is no news for an hour; the later statuses of a's own send,
    and statuses of sends that wait for nothing, are nobody's news."""
    a, b = two
    told: list[dict[str, str]] = []
    heard = b.provider.heard

    def hear(news: dict[str, str]) -> None:
        told.append(dict(news))
        heard(news)

    b.provider.heard = hear
    fake.webhook_url = a.url
    await wrote_to(fake, a, BOB, "one")
    await wrote_to(fake, a, BOB, "two")
    await a.provider.send(BOB, "a reply that waits for nothing")  # a vouches for Bob
    sent = await a.provider.send(OWNER, "a notice that waits")  # verdict landed on a
    [notice] = fake.messages_to(OWNER)
    fake.status(sent, "read", key=notice["biz_opaque_callback_data"])
    [reply] = fake.messages_to(BOB)
    fake.status(reply["message_id"], "read", key=reply["biz_opaque_callback_data"])
    await fake.wait_delivered()
    await wait_until(lambda: a.peers.waiting == 0, timeout=IN_TIME)
    await asyncio.sleep(0.2)  # what would be heard by now

    assert [news.get("wrote") for news in told] == [BOB]
