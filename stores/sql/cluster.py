"""The cluster of several instances on one PostgreSQL schema: :class:`PostgresCluster`.

N ``pairbot run`` processes, on one machine or several, using the same DSN (the same schema)
share one :class:`~bot.core.protocols.Cluster` in the database, in the tables of migration
:data:`~stores.sql.schema.CLUSTER_MIGRATION` (``cluster_*``). Every call but the messages'
delivery is one autocommitted statement on a connection lent by the store's pool
(:meth:`~stores.sql.postgres.PostgresStore.lend`), so a call takes no lock across round trips
and an instance killed mid-call leaves nothing behind but rows that end at their ``ttl``:

- claims: ``INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE until <= now RETURNING``. The
  conflicting row is locked and its newest version judged, so of two instances claiming one
  key at once exactly one gets a row back. Ended claims are swept every
  :data:`SWEEP_EVERY` claims (the table stays bounded);
- counters: one row per key holding the times of the events in its window. The upsert locks
  the row, drops the events that left the window and appends this one: concurrent bumps are
  counted one after the other, each seeing every bump before it. Rows whose window has passed
  are swept every :data:`SWEEP_EVERY` bumps;
- messages: a table numbered in commit order (the publishing function takes an advisory lock
  for its transaction) plus ``NOTIFY pairbot_cluster, '<schema>'`` (the schema, never the
  body). Each instance has one listener thread on a connection of its own: on every
  notification, and after every (re)connection, it reads the messages numbered above the
  last one each subscription was given and hands them over in order. A dropped connection
  loses nothing: the listener reconnects with backoff, logs one line when cut off and one
  when back, and catches up. Messages older than :data:`~bot.core.protocols.CLUSTER_KEEP`
  (by the database's clock: ``publish`` is given no time) are trimmed as others are published;
- leases: a row per lease; ``hold`` takes it when free or ended, renews it when its own;
- beats: a row per instance, swept a day after its last beat.

Times are the ``now`` the caller passes, stored as the other tables store them (µs since the
epoch, :meth:`~stores.sql.base.Dialect.encode_time`). Errors are the store's
(:class:`~bot.core.errors.StoreUnavailableError` when the database is away: one line, the
DSN's password never in it).
"""

from __future__ import annotations

import json
import logging
import os
import select
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from time import monotonic
from typing import Any

import psycopg

from bot.core.models import InstanceBeat
from bot.core.protocols import CLUSTER_KEEP, OnMessage
from stores.cluster import new_instance_id
from stores.sql.base import Dialect
from stores.sql.postgres import (
    CLUSTER_CHANNEL,
    CLUSTER_LOCK_CLASS,
    PgConnection,
    PostgresStore,
    schema_key,
)

log = logging.getLogger(__name__)

SWEEP_EVERY = 1024
"""Claims (and bumps) an instance makes between two sweeps of the ended ones."""
BEAT_KEEP = timedelta(days=1)
"""How long the beat of an instance that stopped beating is kept (ids are never reused)."""
PAGE = 500
"""Messages read per query when catching up."""
_PING_EVERY = 5.0
"""Seconds of quiet after which the listener checks that its connection still works."""
_BACKOFF = (0.1, 5.0)
"""The listener's reconnection delays: the first, doubled after each failure up to the last."""

_us = Dialect.encode_time
_time = Dialect.decode_time


def _micros(span: timedelta) -> int:
    return span // timedelta(microseconds=1)


_CLAIM = """
    INSERT INTO cluster_claims AS c (key, holder, until) VALUES (%(key)s, %(me)s, %(until)s)
    ON CONFLICT (key) DO UPDATE SET holder = excluded.holder, until = excluded.until
    WHERE c.until <= %(now)s
    RETURNING 1"""
_BUMP = """
    INSERT INTO cluster_counts AS c (key, events, ends)
    VALUES (%(key)s, ARRAY[%(now)s::BIGINT], %(ends)s)
    ON CONFLICT (key) DO UPDATE SET
        events = ARRAY(SELECT e FROM unnest(c.events) AS e WHERE e > %(cutoff)s)
            || %(now)s::BIGINT,
        ends = GREATEST(c.ends, excluded.ends)
    RETURNING cardinality(events)"""
_HOLD = """
    INSERT INTO cluster_leases AS l (name, holder, until) VALUES (%(name)s, %(me)s, %(until)s)
    ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
    WHERE l.holder = excluded.holder OR l.until <= %(now)s
    RETURNING 1"""
_BEAT = """
    INSERT INTO cluster_beats (instance_id, started_at, last_beat, facts)
    VALUES (%(me)s, %(now)s, %(now)s, %(facts)s)
    ON CONFLICT (instance_id) DO UPDATE SET last_beat = excluded.last_beat,
        facts = excluded.facts"""
_FETCH = """
    SELECT seq, topic, body FROM cluster_messages
    WHERE seq > %s AND topic = ANY(%s) ORDER BY seq LIMIT %s"""


@dataclass(eq=False, slots=True)
class _Subscription:
    topic: str
    handler: OnMessage
    after: int
    """The last message number this subscription was given (or started after)."""
    active: bool = True


class PostgresCluster:
    """The :class:`~bot.core.protocols.Cluster` of every instance on one PostgreSQL schema.

    ``store`` is this instance's :class:`~stores.sql.postgres.PostgresStore`: the cluster uses
    its schema, its pool and its error translation. Nothing connects until first used; the
    listener thread starts with the first subscription.
    """

    def __init__(
        self,
        store: PostgresStore,
        *,
        instance_id: str | None = None,
        keep: timedelta = CLUSTER_KEEP,
    ) -> None:
        self.instance_id = instance_id or new_instance_id()
        self.in_memory = False
        self._store = store
        self._keep = _micros(keep)
        self._lock = threading.Lock()
        self._claims = 0
        self._bumps = 0
        self._subs: list[_Subscription] = []
        self._listener: _Listener | None = None
        self._closed = False

    def _one(self, sql: str, params: Mapping[str, Any] | tuple[Any, ...]) -> Any:
        """Run one statement; its first row (None if it returned none)."""
        with self._store.lend() as conn:
            return conn.execute(sql, params).fetchone()

    def _run(self, sql: str, params: Mapping[str, Any] | tuple[Any, ...]) -> None:
        with self._store.lend() as conn:
            conn.execute(sql, params)

    def _every(self, kind: str) -> bool:
        """Count one claim or bump; True once every :data:`SWEEP_EVERY`."""
        with self._lock:
            if kind == "claim":
                self._claims += 1
                return self._claims % SWEEP_EVERY == 0
            self._bumps += 1
            return self._bumps % SWEEP_EVERY == 0

    # --- claims -----------------------------------------------------------------------------

    def claim(self, key: str, *, now: datetime, ttl: timedelta) -> bool:
        at = _us(now)
        params = {"key": key, "me": self.instance_id, "until": _us(now + ttl), "now": at}
        taken = self._one(_CLAIM, params) is not None
        if self._every("claim"):
            self._run("DELETE FROM cluster_claims WHERE until <= %s", (at,))
        return taken

    def keep(self, key: str, *, now: datetime, ttl: timedelta) -> None:
        self._run(
            "UPDATE cluster_claims SET until = %s WHERE key = %s AND holder = %s",
            (_us(now + ttl), key, self.instance_id),
        )

    def claimed_until(self, key: str, *, now: datetime) -> datetime | None:
        row = self._one(
            "SELECT until FROM cluster_claims WHERE key = %s AND until > %s", (key, _us(now))
        )
        return None if row is None else _time(int(row[0]))

    def unclaim(self, key: str) -> None:
        self._run(
            "DELETE FROM cluster_claims WHERE key = %s AND holder = %s", (key, self.instance_id)
        )

    # --- counters ---------------------------------------------------------------------------

    def bump(self, key: str, *, now: datetime, window: timedelta) -> int:
        at = _us(now)
        params = {"key": key, "now": at, "cutoff": _us(now - window), "ends": _us(now + window)}
        row = self._one(_BUMP, params)
        if self._every("bump"):
            self._run("DELETE FROM cluster_counts WHERE ends <= %s", (at,))
        return int(row[0])

    def clear(self, key: str) -> None:
        self._run("DELETE FROM cluster_counts WHERE key = %s", (key,))

    # --- messages ---------------------------------------------------------------------------

    def publish(self, topic: str, message: Mapping[str, str]) -> None:
        if self._closed:
            raise RuntimeError("the cluster is closed")
        body = json.dumps(dict(message), ensure_ascii=False)
        key = schema_key(self._store.schema)
        self._one(
            "SELECT pairbot_cluster_publish(%s, %s, %s, %s, %s)",
            (CLUSTER_LOCK_CLASS, key, topic, body, self._keep),
        )

    def subscribe(self, topic: str, handler: OnMessage) -> Callable[[], None]:
        # From now on: after the last message committed so far. Numbers follow commit order,
        # so every message committed after this read has a larger one.
        row = self._one("SELECT COALESCE(MAX(seq), 0) FROM cluster_messages", ())
        sub = _Subscription(topic, handler, after=int(row[0]))
        with self._lock:
            if self._closed:
                raise RuntimeError("the cluster is closed")
            self._subs.append(sub)
            if self._listener is None:
                self._listener = _Listener(self, self._store.schema)

        def stop() -> None:
            with self._lock:
                sub.active = False
                if sub in self._subs:
                    self._subs.remove(sub)

        return stop

    def _subscriptions(self) -> list[_Subscription]:
        with self._lock:
            return [s for s in self._subs if s.active]

    @property
    def listener_pid(self) -> int | None:
        """The server process of the listener's connection, None while it has none (for
        diagnostics, and for tests that cut it)."""
        listener = self._listener
        conn = listener.conn if listener is not None else None
        return None if conn is None or conn.closed else conn.info.backend_pid

    @property
    def listening(self) -> bool:
        """Whether the listener is connected and listening (False before any subscription)."""
        listener = self._listener
        return listener is not None and listener.listening

    # --- leases -----------------------------------------------------------------------------

    def hold(self, lease: str, *, now: datetime, ttl: timedelta) -> bool:
        params = {"name": lease, "me": self.instance_id, "until": _us(now + ttl), "now": _us(now)}
        return self._one(_HOLD, params) is not None

    def release(self, lease: str) -> None:
        self._run(
            "DELETE FROM cluster_leases WHERE name = %s AND holder = %s",
            (lease, self.instance_id),
        )

    def holders(self, *, now: datetime) -> dict[str, str]:
        with self._store.lend() as conn:
            rows = conn.execute(
                "SELECT name, holder FROM cluster_leases WHERE until > %s ORDER BY name",
                (_us(now),),
            ).fetchall()
        return {str(name): str(holder) for name, holder in rows}

    # --- instances --------------------------------------------------------------------------

    def beat(self, *, now: datetime, facts: Mapping[str, object]) -> None:
        text = json.dumps(dict(facts), ensure_ascii=False)
        at = _us(now)
        with self._store.lend() as conn:
            conn.execute(_BEAT, {"me": self.instance_id, "now": at, "facts": text})
            conn.execute("DELETE FROM cluster_beats WHERE last_beat < %s", (_us(now - BEAT_KEEP),))

    def instances(self, *, now: datetime, within: timedelta) -> list[InstanceBeat]:
        with self._store.lend() as conn:
            rows = conn.execute(
                "SELECT instance_id, started_at, last_beat, facts FROM cluster_beats "
                "WHERE last_beat >= %s ORDER BY started_at, instance_id",
                (_us(now - within),),
            ).fetchall()
        return [
            InstanceBeat(
                instance_id=str(instance_id),
                started_at=_time(int(started)),
                last_beat=_time(int(last)),
                facts=json.loads(facts),
            )
            for instance_id, started, last, facts in rows
        ]

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            listener, self._listener = self._listener, None
            for sub in self._subs:
                sub.active = False
            self._subs.clear()
        if listener is not None:
            listener.stop()


class _Listener:
    """One instance's listener: a daemon thread on a connection of its own that ``LISTEN``\\ s,
    reads the messages published since the last one delivered when notified (and after each
    reconnection), and hands them to the subscriptions, one at a time, in order."""

    def __init__(self, cluster: PostgresCluster, schema: str) -> None:
        self._cluster = cluster
        self._store = cluster._store
        self._schema = schema
        self.conn: PgConnection | None = None
        self.listening = False
        self._dirty = True
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._own_pipe = False
        self._thread = threading.Thread(
            target=self._run, name=f"pairbot-cluster {cluster.instance_id}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        os.write(self._wake_w, b"x")
        if self._thread is threading.current_thread():  # a handler closed the cluster
            self._own_pipe = True  # closed by the thread as it ends, below
            return
        self._thread.join(timeout=10)
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _run(self) -> None:
        delay = _BACKOFF[0]
        cut_at: float | None = None
        while not self._stop.is_set():
            conn = self.conn
            if conn is None:
                try:
                    conn = self._connect()
                except psycopg.Error as exc:
                    if cut_at is None:
                        cut_at = monotonic()
                        self._cut(exc)
                    self._stop.wait(delay)
                    delay = min(delay * 2, _BACKOFF[1])
                    continue
                self.conn, delay, self._dirty, self.listening = conn, _BACKOFF[0], True, True
                if cut_at is not None:
                    log.warning(
                        "cluster: listening again on PostgreSQL %s (cut off %.1fs); catching up",
                        self._store.display,
                        monotonic() - cut_at,
                    )
                    cut_at = None
            try:
                self._serve(conn)
            except Exception as exc:  # the connection lost (or a bug): reconnect, catch up
                if not isinstance(exc, psycopg.Error):
                    log.exception("cluster: the listener failed")
                cut_at = monotonic()
                self.listening = False
                self.conn = None
                conn.close()
                if not self._stop.is_set():
                    self._cut(exc)
                    self._stop.wait(_BACKOFF[0])
        self.listening = False
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self._own_pipe:
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _connect(self) -> PgConnection:
        conn = self._store._connect()
        try:
            conn.execute(f"LISTEN {CLUSTER_CHANNEL}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _cut(self, exc: BaseException) -> None:
        log.warning(
            "cluster: the listener lost PostgreSQL %s (%s); reconnecting with backoff, the "
            "messages published meanwhile are delivered when it is back",
            self._store.display,
            self._store._reason(exc),
        )

    def _serve(self, conn: PgConnection) -> None:
        """One round: deliver what is new if notified (or just connected), then wait for a
        notification (checking a quiet connection every :data:`_PING_EVERY` seconds)."""
        if self._dirty:
            self._dirty = False
            self._deliver(conn)
        for note in conn.notifies(timeout=0):  # those that came during the reads, first
            if note.channel == CLUSTER_CHANNEL and note.payload == self._schema:
                self._dirty = True
        if self._dirty or self._stop.is_set():
            return
        ready, _, _ = select.select([conn.fileno(), self._wake_r], [], [], _PING_EVERY)
        if self._stop.is_set():
            return
        if not ready:
            conn.execute("SELECT 1")  # a quiet connection: still there?
        # What arrived is read by notifies() at the top of the next round.

    def _deliver(self, conn: PgConnection) -> None:
        subs = self._cluster._subscriptions()
        if not subs:
            return
        after = min(s.after for s in subs)
        topics = sorted({s.topic for s in subs})
        while not self._stop.is_set():
            rows = conn.execute(_FETCH, (after, topics, PAGE)).fetchall()
            for seq, topic, body in rows:
                after = seq
                try:
                    message: dict[str, str] | None = json.loads(body)
                except ValueError:  # not written by pairbot: skipped, said once
                    log.error("cluster: message %d on topic %s is not JSON; skipped", seq, topic)
                    message = None
                for sub in subs:
                    if sub.topic != topic or not sub.active or sub.after >= seq:
                        continue
                    if message is not None:
                        try:
                            sub.handler(dict(message))
                        except Exception:  # one handler's failure must not stop the others
                            log.exception("a cluster subscriber failed on topic %s", topic)
                    sub.after = seq
            if len(rows) < PAGE:
                return


__all__ = ["BEAT_KEEP", "SWEEP_EVERY", "PostgresCluster"]
