"""News between the same provider on several instances (bot/runtime/news.py), over
LocalCluster siblings: heard by the others and never by the teller, in order; a slow or
failing cluster drops news (logged once) and never blocks the teller."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import pytest

from bot.core.protocols import HasPeers, Peers
from bot.runtime.news import ClusterPeers
from providers.fakebase import wait_until
from stores.cluster import LocalCluster


class Listener:
    """A provider that only tells and hears."""

    def __init__(self) -> None:
        self.peers: Peers | None = None
        self.heard_news: list[dict[str, str]] = []

    def meet(self, peers: Peers) -> None:
        self.peers = peers

    def heard(self, news: Mapping[str, str]) -> None:
        self.heard_news.append(dict(news))


class Down(LocalCluster):
    """A cluster member whose publish fails while ``down`` (the database is away)."""

    down = False

    def publish(self, topic: str, message: Mapping[str, str]) -> None:
        if self.down:
            raise ConnectionError("database away")
        super().publish(topic, message)


async def test_news_reaches_the_others_in_order_and_not_the_teller() -> None:
    a_cluster = LocalCluster("a")
    a, b, c = Listener(), Listener(), Listener()
    peers = [
        ClusterPeers("wa", a, cluster=a_cluster),
        ClusterPeers("wa", b, cluster=a_cluster.sibling("b")),
        ClusterPeers("other", c, cluster=a_cluster.sibling("c")),  # another provider
    ]
    for each in peers:
        await each.start()
    try:
        assert isinstance(a, HasPeers)
        assert a.peers is peers[0]
        for n in range(5):
            peers[0].tell({"n": str(n)})
        await wait_until(lambda: len(b.heard_news) == 5, timeout=2)
        assert b.heard_news == [{"n": str(n)} for n in range(5)]
        assert a.heard_news == []
        assert c.heard_news == []
    finally:
        for each in peers:
            await each.stop()


async def test_a_full_queue_drops_the_oldest_and_says_so_once(caplog) -> None:
    peers = ClusterPeers("wa", Listener(), cluster=LocalCluster("a"), size=2)
    for n in range(4):
        peers.tell({"n": str(n)})  # not started: nothing goes out, as on a stalled cluster
    assert peers.waiting == 2
    assert [r.message for r in caplog.records].count(
        "wa: news for the other instances is dropped (2 waiting): the cluster is slow or "
        "away; they wait for what it would have told"
    ) == 1
    assert list(peers._queue) == [{"n": "2", "from": "a"}, {"n": "3", "from": "a"}]


async def test_a_cluster_that_fails_loses_that_news_logs_once_and_goes_on(caplog) -> None:
    caplog.set_level(logging.WARNING)
    first = Down("a")
    listener, other = Listener(), Listener()
    a = ClusterPeers("wa", listener, cluster=first)
    b = ClusterPeers("wa", other, cluster=first.sibling("b"))
    await a.start()
    await b.start()
    try:
        first.down = True
        a.tell({"n": "lost"})
        a.tell({"n": "lost too"})
        await wait_until(lambda: a.waiting == 0, timeout=2)
        first.down = False
        a.tell({"n": "after"})
        await wait_until(lambda: other.heard_news == [{"n": "after"}], timeout=2)
        failures = [r for r in caplog.records if "not published" in r.message]
        assert [r.message for r in failures] == [
            "wa: news for the other instances not published (ConnectionError)"
        ]
    finally:
        await a.stop()
        await b.stop()


@pytest.mark.parametrize("bad", [ValueError("bad news"), KeyError("key")])
async def test_news_a_provider_cannot_read_does_not_stop_the_next(bad, caplog) -> None:
    first = LocalCluster("a")

    class Picky(Listener):
        def heard(self, news: Mapping[str, str]) -> None:
            if news.get("n") == "bad":
                raise bad
            super().heard(news)

    listener = Picky()
    a = ClusterPeers("wa", Listener(), cluster=first)
    b = ClusterPeers("wa", listener, cluster=first.sibling("b"))
    await a.start()
    await b.start()
    try:
        a.tell({"n": "bad"})
        a.tell({"n": "good"})
        await wait_until(lambda: listener.heard_news == [{"n": "good"}], timeout=2)
        assert f"news from another instance not read ({type(bad).__name__})" in caplog.text
    finally:
        await a.stop()
        await b.stop()
