"""What every :class:`~bot.core.protocols.Cluster` must do (its docstrings), from two instances.

One suite over both implementations: ``local`` (a :class:`LocalCluster` and its
:meth:`~LocalCluster.sibling`: two instances on one memory) and ``postgres`` (two
:class:`PostgresCluster`, each over a store of its own, on one fresh schema: two instances
as two processes would be). Expiry is driven by the ``now`` passed in, never by sleeping.
The PostgreSQL cluster's own promises follow: catch-up after its listener connection is
terminated, an outage (logs and errors without the DSN's password), and an instance killed
with ``-9`` that leaves nothing blocking the others.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bot.core.errors import StoreUnavailableError
from bot.core.protocols import Cluster
from stores.cluster import LocalCluster
from stores.sql.cluster import SWEEP_EVERY, PostgresCluster
from stores.sql.postgres import PostgresStore, dsn_target
from stores.sql.schema import CLUSTER_MIGRATION, SCHEMA_VERSION
from tests.backends import pg_schema
from tests.pgproxy import Proxy
from tests.stores.cluster_member import TTL as MEMBER_TTL
from tests.stores.helpers import REPO_ROOT, expect_line, writer_env
from tests.stores.test_postgres import PASSWORD

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)


class Rig(ABC):
    """Instances of one cluster, as a backend makes them."""

    def __init__(self) -> None:
        self.made: list[Cluster] = []

    @abstractmethod
    def instance(self, instance_id: str) -> Cluster:
        """Another instance of the cluster."""

    def close(self) -> None:
        for cluster in self.made:
            cluster.close()


class LocalRig(Rig):
    def __init__(self) -> None:
        super().__init__()
        self._first: LocalCluster | None = None

    def instance(self, instance_id: str) -> Cluster:
        if self._first is None:
            made = self._first = LocalCluster(instance_id)
        else:
            made = self._first.sibling(instance_id)
        self.made.append(made)
        return made


class PostgresRig(Rig):
    def __init__(self) -> None:
        super().__init__()
        self._schema = pg_schema()
        self.dsn = self._schema.__enter__()
        self.stores: list[PostgresStore] = []

    def instance(self, instance_id: str) -> Cluster:
        store = PostgresStore(self.dsn)
        self.stores.append(store)
        made = PostgresCluster(store, instance_id=instance_id)
        self.made.append(made)
        return made

    def close(self) -> None:
        try:
            super().close()
            for store in self.stores:
                store.close()
        finally:
            self._schema.__exit__(None, None, None)


@pytest.fixture(params=[LocalRig, PostgresRig], ids=["local", "postgres"])
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    made: Rig = request.param()
    yield made
    made.close()


@pytest.fixture
def a(rig: Rig) -> Cluster:
    return rig.instance("inst-a")


@pytest.fixture
def b(rig: Rig, a: Cluster) -> Cluster:
    del a  # made first: "a" is the older instance
    return rig.instance("inst-b")


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {seconds}s")
        time.sleep(0.002)


def _claim(clusters: tuple[Cluster, Cluster], key: str, i: int) -> bool:
    return clusters[i % 2].claim(key, now=T0, ttl=MINUTE)


def _hold(clusters: tuple[Cluster, Cluster], lease: str, i: int) -> bool:
    return clusters[i % 2].hold(lease, now=T0, ttl=MINUTE)


def _moved_on(cluster: PostgresCluster, pid: int) -> bool:
    """Whether the cluster's listener is on a connection other than ``pid``'s."""
    return cluster.listener_pid not in (None, pid)


def race(workers: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in ``workers`` threads released at once; their results, by ``i``."""
    go = threading.Barrier(workers)
    results: list[Any] = [None] * workers
    errors: list[BaseException] = []

    def run(i: int) -> None:
        go.wait()
        try:
            results[i] = work(i)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


# --- identity ------------------------------------------------------------------------------------


def test_each_instance_has_its_own_id(a: Cluster, b: Cluster) -> None:
    assert a.instance_id == "inst-a"
    assert b.instance_id == "inst-b"


# --- claims --------------------------------------------------------------------------------------


def test_a_claim_is_taken_once_until_it_ends(a: Cluster, b: Cluster) -> None:
    assert a.claim("update:1", now=T0, ttl=10 * SECOND)
    assert not b.claim("update:1", now=T0 + SECOND, ttl=10 * SECOND)
    assert not a.claim("update:1", now=T0 + SECOND, ttl=10 * SECOND)  # its own too
    assert a.claimed_until("update:1", now=T0) == T0 + 10 * SECOND
    assert b.claimed_until("update:1", now=T0 + 9 * SECOND) == T0 + 10 * SECOND
    # It ends at now + ttl exactly: then another may take it.
    assert b.claimed_until("update:1", now=T0 + 10 * SECOND) is None
    assert b.claim("update:1", now=T0 + 10 * SECOND, ttl=5 * SECOND)
    assert a.claimed_until("update:1", now=T0 + 11 * SECOND) == T0 + 15 * SECOND
    assert not a.claim("update:1", now=T0 + 14 * SECOND, ttl=5 * SECOND)
    assert a.claimed_until("update:2", now=T0) is None
    assert a.claim("update:2", now=T0, ttl=SECOND)  # keys are apart


def test_keep_moves_only_its_own_claim(a: Cluster, b: Cluster) -> None:
    assert a.claim("k", now=T0, ttl=10 * SECOND)
    a.keep("k", now=T0 + 5 * SECOND, ttl=60 * SECOND)  # longer
    assert b.claimed_until("k", now=T0) == T0 + 65 * SECOND
    assert not b.claim("k", now=T0 + 30 * SECOND, ttl=SECOND)
    b.keep("k", now=T0, ttl=SECOND)  # not b's: left as it is
    assert a.claimed_until("k", now=T0) == T0 + 65 * SECOND
    a.keep("k", now=T0 + 30 * SECOND, ttl=SECOND)  # shorter
    assert a.claimed_until("k", now=T0 + 30 * SECOND) == T0 + 31 * SECOND
    assert b.claim("k", now=T0 + 31 * SECOND, ttl=SECOND)
    a.keep("k", now=T0 + 31 * SECOND, ttl=MINUTE)  # b's now: a's keep changes nothing
    assert a.claimed_until("k", now=T0 + 31 * SECOND) == T0 + 32 * SECOND
    a.keep("never-claimed", now=T0, ttl=MINUTE)
    assert a.claimed_until("never-claimed", now=T0) is None


def test_unclaim_ends_only_its_own_claim(a: Cluster, b: Cluster) -> None:
    assert a.claim("k", now=T0, ttl=MINUTE)
    b.unclaim("k")  # not b's
    assert not b.claim("k", now=T0, ttl=MINUTE)
    a.unclaim("k")  # the work failed: another may take it at once
    assert a.claimed_until("k", now=T0) is None
    assert b.claim("k", now=T0, ttl=MINUTE)
    a.unclaim("missing")


def test_instances_claiming_one_key_at_once_give_exactly_one_winner(
    a: Cluster, b: Cluster
) -> None:
    for round_ in range(20):
        key = f"update:{round_}"
        won = race(8, partial(_claim, (a, b), key))
        assert won.count(True) == 1, won


def test_many_ended_claims_leave_room_for_new_ones(a: Cluster, b: Cluster) -> None:
    # More claims than a sweep interval, each ended before the next: all are taken, and the
    # keys of ended claims can be claimed again.
    for i in range(SWEEP_EVERY + 10):
        assert a.claim(f"e{i}", now=T0 + i * SECOND, ttl=SECOND)
    assert b.claim("e0", now=T0 + (SWEEP_EVERY + 20) * SECOND, ttl=SECOND)


# --- counters ------------------------------------------------------------------------------------


def test_bump_counts_every_instance_within_the_window(a: Cluster, b: Cluster) -> None:
    window = 10 * SECOND
    assert a.bump("notices", now=T0, window=window) == 1
    assert b.bump("notices", now=T0 + SECOND, window=window) == 2
    assert a.bump("notices", now=T0 + 2 * SECOND, window=window) == 3
    assert b.bump("other", now=T0 + 2 * SECOND, window=window) == 1  # keys are apart
    # At T0 + 10 s the first event is a full window old: no longer counted.
    assert a.bump("notices", now=T0 + 10 * SECOND, window=window) == 3
    assert b.bump("notices", now=T0 + 12 * SECOND, window=window) == 2  # T0+10 s and this
    assert a.bump("notices", now=T0 + 60 * SECOND, window=window) == 1


def test_clear_forgets_every_event_of_its_key(a: Cluster, b: Cluster) -> None:
    for i in range(3):
        a.bump("wrong-code:owner", now=T0 + i * SECOND, window=MINUTE)
    b.bump("other", now=T0, window=MINUTE)
    b.clear("wrong-code:owner")  # by any instance
    assert a.bump("wrong-code:owner", now=T0 + 4 * SECOND, window=MINUTE) == 1
    assert a.bump("other", now=T0 + 4 * SECOND, window=MINUTE) == 2
    a.clear("never-bumped")


def test_concurrent_bumps_are_counted_exactly(a: Cluster, b: Cluster) -> None:
    def bumps(i: int) -> list[int]:
        cluster = (a, b)[i % 2]
        return [cluster.bump("k", now=T0, window=MINUTE) for _ in range(100)]

    seen = [n for counts in race(4, bumps) for n in counts]
    # Each bump sees every bump before it: the 400 answers are 1..400, each once.
    assert sorted(seen) == list(range(1, 401))
    assert a.bump("k", now=T0, window=MINUTE) == 401


# --- messages ------------------------------------------------------------------------------------


class Inbox:
    """A subscriber that records what it gets and on which thread."""

    def __init__(self) -> None:
        self.got: list[dict[str, str]] = []
        self.threads: set[int] = set()
        self._lock = threading.Lock()

    def __call__(self, message: dict[str, str]) -> None:
        with self._lock:
            self.got.append(message)
            self.threads.add(threading.get_ident())

    def wait(self, count: int, seconds: float = 10.0) -> list[dict[str, str]]:
        wait_for(lambda: len(self.got) >= count, seconds)
        return list(self.got)


def test_every_subscriber_on_every_instance_gets_each_message_once_in_order(
    a: Cluster, b: Cluster
) -> None:
    on_a, on_b, also_on_b, elsewhere = Inbox(), Inbox(), Inbox(), Inbox()
    a.subscribe("approvals", on_a)
    b.subscribe("approvals", on_b)
    b.subscribe("approvals", also_on_b)
    b.subscribe("revocations", elsewhere)
    sent = [{"n": str(i), "who": "a" if i % 2 else "b"} for i in range(50)]
    for message in sent:
        (a if message["who"] == "a" else b).publish("approvals", message)
    for inbox in (on_a, on_b, also_on_b):
        assert inbox.wait(50) == sent
        assert threading.get_ident() not in inbox.threads  # a thread of the cluster's
    time.sleep(0.2)  # nothing more arrives
    assert len(on_a.got) == len(on_b.got) == 50
    assert elsewhere.got == []


def test_concurrent_publishers_lose_nothing(a: Cluster, b: Cluster) -> None:
    """Messages published at once from several threads of both instances all arrive, each
    once, and each publisher's in its order (a listener that read a later one first must
    not skip an earlier one that committed after)."""
    inboxes = [Inbox(), Inbox()]
    a.subscribe("t", inboxes[0])
    b.subscribe("t", inboxes[1])

    def publish(i: int) -> None:
        for n in range(50):
            (a, b)[i % 2].publish("t", {"p": str(i), "n": str(n)})

    race(6, publish)
    for inbox in inboxes:
        got = inbox.wait(300)
        for i in range(6):
            assert [m["n"] for m in got if m["p"] == str(i)] == [str(n) for n in range(50)]
    time.sleep(0.1)
    assert [len(inbox.got) for inbox in inboxes] == [300, 300]


def test_a_subscriber_gets_only_what_is_published_after_it_subscribed(
    a: Cluster, b: Cluster
) -> None:
    early = Inbox()
    a.subscribe("t", early)
    a.publish("t", {"n": "before"})
    early.wait(1)
    late = Inbox()
    b.subscribe("t", late)
    a.publish("t", {"n": "after"})
    assert late.wait(1) == [{"n": "after"}]
    assert early.wait(2) == [{"n": "before"}, {"n": "after"}]


def test_a_stopped_subscription_gets_nothing_more(a: Cluster, b: Cluster) -> None:
    stopped, kept = Inbox(), Inbox()
    stop = b.subscribe("t", stopped)
    b.subscribe("t", kept)
    a.publish("t", {"n": "1"})
    stopped.wait(1)
    stop()
    stop()  # twice is harmless
    a.publish("t", {"n": "2"})
    kept.wait(2)
    time.sleep(0.1)
    assert stopped.got == [{"n": "1"}]


def test_a_failing_handler_stops_neither_the_others_nor_the_next_messages(
    a: Cluster, b: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(message: dict[str, str]) -> None:
        raise ValueError(f"handler bug on {message['n']}")

    inbox = Inbox()
    b.subscribe("t", broken)
    b.subscribe("t", inbox)
    for i in range(3):
        a.publish("t", {"n": str(i)})
    assert inbox.wait(3) == [{"n": "0"}, {"n": "1"}, {"n": "2"}]
    wait_for(lambda: caplog.text.count("a cluster subscriber failed on topic t") == 3)


def test_a_handler_may_publish_and_subscribe(a: Cluster, b: Cluster) -> None:
    """A handler runs on the cluster's thread: calling the cluster from it must not hang."""
    answers = Inbox()
    b.subscribe("answers", answers)

    def echo(message: dict[str, str]) -> None:
        a.publish("answers", {"re": message["n"]})
        a.subscribe("later", lambda _m: None)

    a.subscribe("questions", echo)
    b.publish("questions", {"n": "1"})
    assert answers.wait(1) == [{"re": "1"}]


def test_publish_after_close_is_refused(a: Cluster, b: Cluster) -> None:
    inbox = Inbox()
    b.subscribe("t", inbox)
    a.close()
    with pytest.raises(RuntimeError):
        a.publish("t", {"n": "1"})
    b.publish("t", {"n": "2"})
    assert inbox.wait(1) == [{"n": "2"}]
    a.close()  # twice is harmless


# --- leases --------------------------------------------------------------------------------------


def test_a_lease_has_one_holder_until_its_ttl_runs_out(a: Cluster, b: Cluster) -> None:
    ttl = 15 * SECOND
    assert a.hold("telegram", now=T0, ttl=ttl)
    assert not b.hold("telegram", now=T0 + SECOND, ttl=ttl)
    assert a.hold("telegram", now=T0 + 10 * SECOND, ttl=ttl)  # renewed: until T0 + 25 s
    assert not b.hold("telegram", now=T0 + 24 * SECOND, ttl=ttl)
    assert b.holders(now=T0 + 24 * SECOND) == {"telegram": "inst-a"}
    # a stopped renewing (it died): b takes over once the ttl ran out, and keeps it.
    assert b.holders(now=T0 + 25 * SECOND) == {}
    assert b.hold("telegram", now=T0 + 25 * SECOND, ttl=ttl)
    assert not a.hold("telegram", now=T0 + 26 * SECOND, ttl=ttl)
    assert a.holders(now=T0 + 26 * SECOND) == {"telegram": "inst-b"}


def test_two_instances_holding_one_lease_at_once_give_one_holder(a: Cluster, b: Cluster) -> None:
    for round_ in range(20):
        lease = f"connector-{round_}"
        held = race(8, partial(_hold, (a, b), lease))
        winners = {("inst-a", "inst-b")[i % 2] for i, ok in enumerate(held) if ok}
        assert len(winners) == 1, held
        assert a.holders(now=T0)[lease] in winners


def test_release_gives_up_only_its_own_lease(a: Cluster, b: Cluster) -> None:
    assert a.hold("discord", now=T0, ttl=MINUTE)
    assert b.hold("signal", now=T0, ttl=MINUTE)
    b.release("discord")  # not b's
    assert a.holders(now=T0) == {"discord": "inst-a", "signal": "inst-b"}
    a.release("discord")  # a clean stop: b may take it at once
    assert b.holders(now=T0) == {"signal": "inst-b"}
    assert b.hold("discord", now=T0 + SECOND, ttl=MINUTE)
    a.release("never-held")


# --- beats ---------------------------------------------------------------------------------------


def test_instances_are_those_that_beat_within_oldest_first(a: Cluster, b: Cluster) -> None:
    facts_b = {"version": "1.2.3", "host": "m2", "pid": 42, "ready": True, "held": ["slack"]}
    b.beat(now=T0, facts=facts_b)
    a.beat(now=T0 + SECOND, facts={"version": "1.2.3", "held": []})
    a.beat(now=T0 + 30 * SECOND, facts={"version": "1.2.3", "held": ["telegram"]})
    seen = b.instances(now=T0 + 40 * SECOND, within=MINUTE)
    assert [i.instance_id for i in seen] == ["inst-b", "inst-a"]  # by first beat
    assert seen[0].facts == facts_b
    assert seen[0].started_at == seen[0].last_beat == T0
    assert seen[1].started_at == T0 + SECOND  # the first beat's time is kept
    assert seen[1].last_beat == T0 + 30 * SECOND
    assert seen[1].facts == {"version": "1.2.3", "held": ["telegram"]}  # the last beat's
    # b's last beat is exactly a minute old at T0 + 60 s (still in), then too old.
    assert [i.instance_id for i in a.instances(now=T0 + MINUTE, within=MINUTE)] == [
        "inst-b",
        "inst-a",
    ]
    later = a.instances(now=T0 + MINUTE + SECOND, within=MINUTE)
    assert [i.instance_id for i in later] == ["inst-a"]
    assert a.instances(now=T0 + 10 * MINUTE, within=MINUTE) == []


# --- PostgreSQL's own ----------------------------------------------------------------------------


@pytest.fixture
def pg_rig() -> Iterator[PostgresRig]:
    made = PostgresRig()
    yield made
    made.close()


def terminate(dsn: str, pid: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_listener_cut_off_catches_up_each_message_once_in_order(
    pg_rig: PostgresRig, caplog: pytest.LogCaptureFixture
) -> None:
    a = pg_rig.instance("inst-a")
    b = pg_rig.instance("inst-b")
    assert isinstance(b, PostgresCluster)
    caplog.set_level(logging.WARNING, logger="stores.sql.cluster")
    inbox = Inbox()
    b.subscribe("t", inbox)
    wait_for(lambda: b.listening)
    sent: list[dict[str, str]] = []
    publishing = threading.Event()

    def publish() -> None:
        publishing.set()
        for i in range(300):
            message = {"n": str(i)}
            a.publish("t", message)
            sent.append(message)

    publisher = threading.Thread(target=publish)
    publisher.start()
    publishing.wait()
    for _ in range(3):  # cut b's listener three times while a publishes
        wait_for(lambda: len(inbox.got) > 20 and b.listening)
        pid = b.listener_pid
        assert pid is not None
        terminate(pg_rig.dsn, pid)
        wait_for(partial(_moved_on, b, pid))
    publisher.join()
    assert inbox.wait(300) == sent
    time.sleep(0.2)
    assert len(inbox.got) == 300  # each once
    cut = [r for r in caplog.records if "lost PostgreSQL" in r.getMessage()]
    back = [r for r in caplog.records if "listening again" in r.getMessage()]
    assert len(cut) == 3
    assert len(back) == 3


def test_old_messages_are_trimmed(pg_rig: PostgresRig) -> None:
    store = PostgresStore(pg_rig.dsn)
    pg_rig.stores.append(store)
    brief = PostgresCluster(store, keep=timedelta(milliseconds=50))
    pg_rig.made.append(brief)
    for i in range(10):
        brief.publish("t", {"n": str(i)})
    time.sleep(0.1)
    brief.publish("t", {"n": "last"})
    with psycopg.connect(pg_rig.dsn) as conn:
        rows = conn.execute("SELECT body FROM cluster_messages").fetchall()
    assert rows == [('{"n": "last"}',)]


def test_nothing_of_a_message_goes_on_the_notify_channel(pg_rig: PostgresRig) -> None:
    a = pg_rig.instance("inst-a")
    with psycopg.connect(pg_rig.dsn, autocommit=True) as spy:
        spy.execute("LISTEN pairbot_cluster")
        a.publish("t", {"secret-looking": "ABCD2345"})
        notes = list(spy.notifies(timeout=2, stop_after=1))
    schema = pg_rig.dsn.split("search_path=")[1].split()[0].strip("'")
    assert [(n.channel, n.payload) for n in notes] == [("pairbot_cluster", schema)]


def works(call: Callable[[], object]) -> bool:
    """Whether ``call`` went through (the pool reconnects on its own, with backoff)."""
    try:
        call()
    except StoreUnavailableError:
        time.sleep(0.05)
        return False
    return True


def test_an_outage_is_logged_once_without_the_password_and_caught_up(
    pg_rig: PostgresRig, caplog: pytest.LogCaptureFixture
) -> None:
    fields = conninfo_to_dict(pg_rig.dsn)
    proxy = Proxy(str(fields.get("host") or "127.0.0.1"), int(str(fields.get("port") or 5432)))
    proxy.start()
    try:
        via_proxy = make_conninfo(pg_rig.dsn, host="127.0.0.1", port=proxy.port, password=PASSWORD)
        store = PostgresStore(via_proxy, connect_timeout=2)
        pg_rig.stores.append(store)
        cut_off = PostgresCluster(store, instance_id="behind-proxy")
        pg_rig.made.append(cut_off)
        direct = pg_rig.instance("direct")
        inbox = Inbox()
        cut_off.subscribe("t", inbox)
        wait_for(lambda: cut_off.listening)
        caplog.set_level(logging.INFO)
        proxy.stop()  # the database goes away for cut_off only
        wait_for(lambda: not cut_off.listening)
        for i in range(5):
            direct.publish("t", {"n": str(i)})
        with pytest.raises(StoreUnavailableError) as caught:
            cut_off.claim("k", now=T0, ttl=MINUTE)
        assert str(caught.value).startswith(f"{dsn_target(via_proxy)}: PostgreSQL unreachable")
        assert PASSWORD not in str(caught.value)
        time.sleep(1.0)  # several reconnection attempts
        proxy.start()
        assert inbox.wait(5, seconds=20) == [{"n": str(i)} for i in range(5)]
        wait_for(lambda: works(lambda: cut_off.claim("k", now=T0, ttl=MINUTE)), 20)
        assert direct.claimed_until("k", now=T0) == T0 + MINUTE
        lost = [r for r in caplog.records if "lost PostgreSQL" in r.getMessage()]
        assert len(lost) == 1, [r.getMessage() for r in lost]  # one line, however many tries
        back = [r for r in caplog.records if "listening again" in r.getMessage()]
        assert len(back) == 1
        assert PASSWORD not in caplog.text
        cut_off.close()
    finally:
        proxy.stop()


def test_an_instance_killed_with_9_blocks_nothing_and_its_lease_passes_on(
    pg_rig: PostgresRig,
) -> None:
    survivor = pg_rig.instance("survivor")
    inbox = Inbox()
    survivor.subscribe("news", inbox)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.stores.cluster_member", pg_rig.dsn, "doomed"],
        cwd=REPO_ROOT,
        env=writer_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    with proc:
        try:
            expect_line(proc, "READY")
            expect_line(proc, "ACK 20")  # killed while it publishes
            proc.kill()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert proc.returncode == -9
    t0 = T0  # the child took its lease and claim from T0 for MEMBER_TTL
    assert survivor.holders(now=t0 + SECOND) == {"telegram": "doomed"}
    assert not survivor.hold("telegram", now=t0 + SECOND, ttl=MEMBER_TTL)
    assert not survivor.claim("update:1", now=t0 + SECOND, ttl=MEMBER_TTL)
    # Nothing it held open blocks the others: a publish (its advisory lock) goes through.
    began = time.monotonic()
    survivor.publish("news", {"from": "survivor", "n": "0"})
    assert time.monotonic() - began < 2
    # Its ttl ran out: the lease and the claim pass on.
    assert survivor.hold("telegram", now=t0 + MEMBER_TTL, ttl=MEMBER_TTL)
    assert survivor.claim("update:1", now=t0 + MEMBER_TTL, ttl=MEMBER_TTL)
    assert survivor.holders(now=t0 + MEMBER_TTL) == {"telegram": "survivor"}
    # What it published before it died arrived whole and in order, then the survivor's.
    wait_for(lambda: inbox.got[-1:] == [{"from": "survivor", "n": "0"}])
    got = list(inbox.got)
    theirs = [m for m in got if m["from"] == "doomed"]
    assert [int(m["n"]) for m in theirs] == list(range(len(theirs)))
    assert len(theirs) >= 21
    assert got[-1] == {"from": "survivor", "n": "0"}


def count_rows(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def test_ended_claims_and_counters_are_swept(pg_rig: PostgresRig) -> None:
    a = pg_rig.instance("inst-a")
    for i in range(SWEEP_EVERY):  # each ends before the next is taken
        assert a.claim(f"update:{i}", now=T0 + i * SECOND, ttl=SECOND)
        a.bump(f"limit:{i}", now=T0 + i * SECOND, window=SECOND)
    # The last sweep ran at the SWEEP_EVERY-th of each: only the last key's row is left.
    assert count_rows(pg_rig.dsn, "cluster_claims") == 1
    assert count_rows(pg_rig.dsn, "cluster_counts") == 1


def test_a_handler_may_close_its_cluster(pg_rig: PostgresRig) -> None:
    a = pg_rig.instance("inst-a")
    b = pg_rig.instance("inst-b")
    assert isinstance(b, PostgresCluster)
    closed = threading.Event()

    def close(_message: dict[str, str]) -> None:
        b.close()
        closed.set()

    b.subscribe("t", close)
    a.publish("t", {"n": "1"})
    assert closed.wait(5)
    wait_for(lambda: b.listener_pid is None)
    with pytest.raises(RuntimeError):
        b.subscribe("t", close)


def test_the_cluster_tables_come_with_the_schema(pg_rig: PostgresRig) -> None:
    pg_rig.instance("inst-a").beat(now=T0, facts={})
    with psycopg.connect(pg_rig.dsn) as conn:
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                "AND tablename LIKE 'cluster_%'"
            )
        }
    assert tables == {
        "cluster_claims",
        "cluster_counts",
        "cluster_messages",
        "cluster_leases",
        "cluster_beats",
    }


def test_a_schema_of_the_version_before_gains_the_cluster_tables(pg_rig: PostgresRig) -> None:
    first = PostgresStore(pg_rig.dsn)
    with first.transaction() as txn:
        txn.allow("telegram", "42")
    first.close()
    with psycopg.connect(pg_rig.dsn, autocommit=True) as conn:  # as the code before made it
        for table in ("claims", "counts", "messages", "leases", "beats"):
            conn.execute(f"DROP TABLE cluster_{table}")
        conn.execute("DROP FUNCTION pairbot_cluster_publish")
        for table in ("allowlist", "allowlist_log"):  # and what the migrations after it made
            conn.execute(f"ALTER TABLE {table} DROP COLUMN ends_at")
        conn.execute("DROP TABLE node_invites")
        conn.execute(
            "UPDATE pairbot_meta SET value = %s WHERE key = 'schema_version'",
            (str(CLUSTER_MIGRATION - 1),),
        )
    a = pg_rig.instance("inst-a")
    assert a.claim("k", now=T0, ttl=MINUTE)
    with psycopg.connect(pg_rig.dsn) as conn:
        row = conn.execute(
            "SELECT value FROM pairbot_meta WHERE key = 'schema_version'"
        ).fetchone()
    assert row == (str(SCHEMA_VERSION),)
    assert pg_rig.stores[-1].allowed_until("telegram", "42")
