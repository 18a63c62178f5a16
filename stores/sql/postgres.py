"""The PostgreSQL store: one state shared by several machines (psycopg 3 and its pool).

What is PostgreSQL's own here (the rest is :mod:`stores.sql.base`):

- connections: a :class:`psycopg_pool.ConnectionPool` of two (a transaction and the gate's
  catch-up, the most this process runs at once), each lent for one transaction or one
  statement and given back when it is idle again; a lent connection found dead is handed
  back (the pool drops it and connects anew in the background, with backoff) and the next
  one is taken. Plus one connection of its own for the listener (below);
- the write lock: ``pg_advisory_xact_lock`` on a key of the store's schema, right after
  ``BEGIN``: transactions are one at a time across every process using that schema, the
  lock goes with the transaction (commit, rollback, or a killed client whose connection the
  server closes), and a wait longer than ``lock_timeout`` (the session's ``lock_timeout``)
  raises :class:`~bot.core.errors.StoreLockTimeoutError`. Migrations take the same lock, in
  one transaction with the version read again under it (PostgreSQL's DDL is transactional);
- the gate's change check: ``LISTEN``. A statement trigger on ``allowlist_log`` (added to the
  first migration, PostgreSQL's alone) sends ``NOTIFY pairbot_allowlist, '<schema>'`` in
  every transaction that grants or revokes, delivered when it commits. A daemon thread
  listens on its own connection and marks the cache stale; this process's commits mark it
  (and every other store of this process on the same schema) stale at once. While the
  listener is not listening (its connection lost, reconnecting with backoff) the cache
  counts as changed on every call, so the gate catches up from the log each time; once it
  listens again the next call catches up once more;
- an outage: a store call fails fast with :class:`~bot.core.errors.StoreUnavailableError`
  (one line, the DSN's password never in it), the gate keeps answering from its cache, the
  pool and the listener reconnect with backoff, and one warning is logged when the database
  goes away and one when it is back;
- ``diagnose()`` for ``pairbot doctor``: reachable, schema version, privileges.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import select
import threading
import weakref
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from time import monotonic
from typing import Any

import psycopg
import psycopg.errors
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool

from bot.core.errors import (
    ConfigError,
    StoreError,
    StoreLockTimeoutError,
    StoreUnavailableError,
)
from stores.sql.base import Connection, Cursor, Dialect, SqlStore
from stores.sql.schema import CLUSTER_MIGRATION, MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger(__name__)

PgConnection = psycopg.Connection[Any]

CHANNEL = "pairbot_allowlist"
"""The ``NOTIFY`` channel of allowlist changes; the payload is the schema changed."""
LOCK_CLASS = 0x70616972  # "pair": the first half of the advisory lock's key
"""The advisory locks' first key; the second is :func:`schema_key` of the store's schema."""

_NOTIFY_ON_CHANGE = [
    "CREATE FUNCTION pairbot_allowlist_notify() RETURNS trigger LANGUAGE plpgsql AS "
    f"$$ BEGIN PERFORM pg_notify('{CHANNEL}', TG_TABLE_SCHEMA); RETURN NULL; END $$",
    "CREATE TRIGGER allowlist_log_notify AFTER INSERT ON allowlist_log "
    "FOR EACH STATEMENT EXECUTE FUNCTION pairbot_allowlist_notify()",
]
"""Appended to the first migration: every committed grant or revocation is announced."""

_COUNT_PENDING = [
    "CREATE TABLE pending_counts (provider TEXT PRIMARY KEY, n BIGINT NOT NULL)",
    """CREATE FUNCTION pairbot_pending_count() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO pending_counts AS c (provider, n) VALUES (NEW.provider, 1)
            ON CONFLICT (provider) DO UPDATE SET n = c.n + 1;
        ELSIF TG_OP = 'DELETE' THEN
            UPDATE pending_counts SET n = n - 1 WHERE provider = OLD.provider;
        ELSE
            DELETE FROM pending_counts;
        END IF;
        RETURN NULL;
    END $$""",
    # A replace (INSERT ... ON CONFLICT DO UPDATE) fires no AFTER INSERT: the count stays.
    "CREATE TRIGGER pending_count AFTER INSERT OR DELETE ON pending_requests "
    "FOR EACH ROW EXECUTE FUNCTION pairbot_pending_count()",
    "CREATE TRIGGER pending_count_truncate AFTER TRUNCATE ON pending_requests "
    "FOR EACH STATEMENT EXECUTE FUNCTION pairbot_pending_count()",
]
"""Appended to the first migration: each provider's pending count, kept by the database.
``COUNT(*)`` reads every pending row of the provider (0.5-0.8 ms at 10,000, inside the
exclusive lock on every stranger's request); this is one indexed row."""

STRIPES = 64
"""Rows each provider's pending count is spread over (migration 3)."""

_STRIPED_COUNTS = [
    "ALTER TABLE pending_counts ADD COLUMN stripe INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE pending_counts DROP CONSTRAINT pending_counts_pkey",
    "ALTER TABLE pending_counts ADD PRIMARY KEY (provider, stripe)",
    f"""CREATE OR REPLACE FUNCTION pairbot_pending_count() RETURNS trigger LANGUAGE plpgsql
    AS $$ DECLARE s INTEGER := floor(random() * {STRIPES}); BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO pending_counts AS c (provider, stripe, n) VALUES (NEW.provider, s, 1)
            ON CONFLICT (provider, stripe) DO UPDATE SET n = c.n + 1;
        ELSIF TG_OP = 'DELETE' THEN
            INSERT INTO pending_counts AS c (provider, stripe, n) VALUES (OLD.provider, s, -1)
            ON CONFLICT (provider, stripe) DO UPDATE SET n = c.n - 1;
        ELSE
            DELETE FROM pending_counts;
        END IF;
        RETURN NULL;
    END $$""",  # noqa: S608 (a constant number)
]
"""Migration 3: each provider's count spread over :data:`STRIPES` rows, each change to a
random one. A count row is locked from the change until the commit; with one row per provider
every stranger's request queued behind the one before it, commit and all, even in shared
transactions. The count is the sum of the provider's rows."""

_SHARED_SLOTS = 8
"""Shared transactions that may run at once across every process on a schema: each holds one
of this many advisory locks, so a limit checked in one holds with this many others in
flight (:attr:`bot.core.protocols.StateTxn.peers`)."""

CLUSTER_CHANNEL = "pairbot_cluster"
"""The ``NOTIFY`` channel of the cluster's messages; the payload is the schema, never a body."""
CLUSTER_LOCK_CLASS = 0x636C7573  # "clus"
"""The first key of the advisory lock that puts the cluster's messages in commit order."""

_CLUSTER = [
    # A claim on an event (handled once): who holds it, until when (µs). Ended ones are swept.
    "CREATE TABLE cluster_claims (key TEXT PRIMARY KEY, holder TEXT NOT NULL, "
    "until BIGINT NOT NULL)",
    "CREATE INDEX cluster_claims_until ON cluster_claims (until)",
    # A sliding-window counter: the times of its events in the window, one row per key (the
    # row lock of ``ON CONFLICT DO UPDATE`` counts concurrent bumps one after the other), and
    # when its newest event leaves the window (then the row is swept).
    "CREATE TABLE cluster_counts (key TEXT PRIMARY KEY, events BIGINT[] NOT NULL, "
    "ends BIGINT NOT NULL)",
    "CREATE INDEX cluster_counts_ends ON cluster_counts (ends)",
    # Published messages in commit order (``seq``), kept a while for listeners cut off.
    "CREATE TABLE cluster_messages (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
    "topic TEXT NOT NULL, at BIGINT NOT NULL, body TEXT NOT NULL)",
    "CREATE INDEX cluster_messages_at ON cluster_messages (at)",
    "CREATE TABLE cluster_leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, "
    "until BIGINT NOT NULL)",
    "CREATE TABLE cluster_beats (instance_id TEXT PRIMARY KEY, started_at BIGINT NOT NULL, "
    "last_beat BIGINT NOT NULL, facts TEXT NOT NULL)",
    "CREATE INDEX cluster_beats_last ON cluster_beats (last_beat)",
    # One statement publishes: under a transaction-scoped advisory lock, so sequence numbers
    # are handed out in commit order (a reader that has seen seq n has seen every seq below
    # it), trimming what is older than ``keep_us`` by the database's clock (``publish`` is
    # given no time), and announcing the schema on the channel at commit.
    f"""CREATE FUNCTION pairbot_cluster_publish(
            lock_class INTEGER, lock_key INTEGER, t TEXT, b TEXT, keep_us BIGINT)
        RETURNS BIGINT LANGUAGE plpgsql AS $$
        DECLARE
            now_us BIGINT := floor(extract(epoch FROM clock_timestamp()) * 1000000);
            s BIGINT;
        BEGIN
            PERFORM pg_advisory_xact_lock(lock_class, lock_key);
            INSERT INTO cluster_messages (topic, at, body) VALUES (t, now_us, b)
                RETURNING seq INTO s;
            DELETE FROM cluster_messages WHERE at < now_us - keep_us;
            PERFORM pg_notify('{CLUSTER_CHANNEL}', current_schema());
            RETURN s;
        END $$""",  # noqa: S608 (a constant name)
]
"""The cluster's tables (:mod:`stores.sql.cluster`): migration
:data:`~stores.sql.schema.CLUSTER_MIGRATION`, PostgreSQL's alone."""

TABLES = tuple(
    dict.fromkeys(
        match.group(1)
        for step in [*MIGRATIONS, _COUNT_PENDING, _CLUSTER]
        for statement in step
        for match in [re.match(r"\s*CREATE TABLE (\w+)", statement)]
        if match
    )
)
"""The tables of the schema, in the order the migrations make them."""

_DOWN_WAIT = 0.2
"""Seconds a call waits for a connection while the database is known to be away."""
_GATE_RETRY = 1.0
"""Seconds between the gate's tries to reach a database known to be away."""
_PING_EVERY = 5.0
"""Seconds of quiet after which the listener checks that its connection still works."""
_BACKOFF = (0.1, 5.0)
"""The listener's reconnection delays: the first, doubled after each failure up to the last."""
_DETAIL_MAX = 200


# --- the DSN ------------------------------------------------------------------------------------


def dsn_fields(dsn: str) -> dict[str, str]:
    """The DSN's fields (a URL or ``key=value`` words), checked by libpq's own parser.

    Raises:
        ConfigError: not a DSN (the text is not echoed: it may hold a password).
    """
    try:
        return {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    except psycopg.Error:
        raise ConfigError(
            "not a PostgreSQL DSN",
            field="store.dsn",
            hint="e.g. postgresql://pairbot@db.example:5432/pairbot",
        ) from None


def dsn_target(dsn: str) -> str:
    """Where a DSN points, safe to show: ``user@host:port/dbname``, never the password."""
    try:
        fields = dsn_fields(dsn)
    except ConfigError:
        return "postgresql (an invalid DSN)"
    user = fields.get("user") or os.environ.get("PGUSER", "")
    host = fields.get("host") or fields.get("hostaddr") or os.environ.get("PGHOST", "localhost")
    port = fields.get("port") or os.environ.get("PGPORT", "5432")
    dbname = fields.get("dbname") or os.environ.get("PGDATABASE", "") or user
    return f"{user + '@' if user else ''}{host}:{port}/{dbname}"


def schema_key(schema: str) -> int:
    """The advisory lock key of a schema: a signed 32-bit number (stable across processes)."""
    value = zlib.crc32(schema.encode())
    return value - (1 << 32) if value >= 1 << 31 else value


class PostgresDialect(Dialect):
    """PostgreSQL's words: ``%s``, an identity column, an advisory lock after ``BEGIN``."""

    placeholder = "%s"
    pending_count = "SELECT COALESCE(SUM(n), 0)::BIGINT FROM pending_counts WHERE provider = ?"
    words = {
        "serial": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        "time": "BIGINT",
        "text": "TEXT",
    }

    def __init__(self) -> None:
        super().__init__()
        self.lock_key = 0
        """:func:`schema_key` of the store's schema, set when the store opens."""

    def migrations(self) -> list[list[str]]:
        steps = super().migrations()
        steps[0] = [*steps[0], *_NOTIFY_ON_CHANGE, *_COUNT_PENDING]
        steps[2] = [*steps[2], *_STRIPED_COUNTS]
        steps[CLUSTER_MIGRATION - 1] = [*steps[CLUSTER_MIGRATION - 1], *_CLUSTER]
        return steps

    def begin_exclusive(self, conn: Connection) -> None:
        self._begin_locked(conn, f"pg_advisory_xact_lock({LOCK_CLASS}, {self.lock_key})")

    def begin_shared(self, conn: Connection) -> int:
        """The schema's advisory lock in shared mode (an exclusive holder or waiter keeps it
        out), then one of :data:`_SHARED_SLOTS` slot locks: the first free, else a random one
        waited for. Both end with the transaction."""
        base = (self.lock_key & 0xFFFFFFFF) << 8  # one-key locks: a space apart from the two-key
        row = self._begin_locked(
            conn,
            f"pg_advisory_xact_lock_shared({LOCK_CLASS}, {self.lock_key}), (SELECT s FROM "  # noqa: S608 (integers)
            f"generate_series(0, {_SHARED_SLOTS - 1}) AS s "
            f"WHERE pg_try_advisory_xact_lock({base} + s) LIMIT 1)",
        )
        if row is None or row[1] is None:
            try:
                slot = secrets.randbelow(_SHARED_SLOTS)
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (base + slot,))
            except BaseException:
                self.end(conn, commit=False)
                raise
        return _SHARED_SLOTS - 1

    def _begin_locked(self, conn: Connection, locks: str) -> Any:
        """``BEGIN`` and take ``locks`` (a select list of lock calls on integers this code
        made) in one round trip; return the select's row."""
        try:
            cur: Any = conn.execute(f"BEGIN; SELECT {locks}")  # no parameters: one trip for both
            cur.nextset()
            return cur.fetchone()
        except BaseException:
            # Not begun, as far as the caller knows: leave no aborted transaction behind.
            with contextlib.suppress(Exception):
                self.end(conn, commit=False)
            raise

    def commit(self, conn: Connection, tail: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """The tail and the ``COMMIT`` in one round trip: one simple query of several
        statements, the tail's values bound as literals by psycopg (no parameters may go
        with several statements). An error in the tail stops the query before the commit."""
        if not tail:
            self.end(conn, commit=True)
            return
        statements = [
            pgsql.SQL(self.sql(text).replace("%s", "{}")).format(*map(pgsql.Literal, params))
            for text, params in tail
        ]
        conn.execute(pgsql.SQL("; ").join([*statements, pgsql.SQL("COMMIT")]).as_string(None))

    def begin_read(self, conn: Connection) -> None:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def table_exists(self, conn: Connection, name: str) -> bool:
        found = conn.execute(
            "SELECT 1 FROM pg_catalog.pg_tables "
            "WHERE schemaname = current_schema() AND tablename = %s",
            (name,),
        ).fetchone()
        return found is not None


# --- connections ----------------------------------------------------------------------------


def _alive(conn: PgConnection) -> bool:
    """Whether an idle connection still works. Free unless the server sent something (its
    goodbye when it shut down or ended the session): then one empty query tells."""
    if conn.closed or conn.broken:
        return False
    ready, _, _ = select.select([conn.fileno()], [], [], 0)
    if not ready:
        return True
    try:
        conn.execute("")
    except psycopg.Error:
        return False
    return True


class _Lent:
    """One of the two connections :class:`SqlStore` uses, lent by the pool use by use.

    A statement outside a transaction, or a transaction from its ``BEGIN`` to its end, runs
    on a connection borrowed from the pool, which goes back as soon as it is idle again. So
    no connection is held between uses, and one the server dropped meanwhile is found when it
    is next borrowed and replaced, not used.
    """

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._conn: PgConnection | None = None
        self.wait: float | None = None
        """How long to wait for a connection; None: the store's rule (:meth:`_Database.borrow`)."""

    def execute(self, sql: str, parameters: Any = None, /) -> Cursor:
        conn = self._conn
        if conn is None:
            conn = self._conn = self._store._borrow(self.wait)
        try:
            cursor = conn.execute(sql, parameters)
        except BaseException:
            if conn.info.transaction_status not in _IN_TRANSACTION:
                self.give_back()
            raise
        if conn.info.transaction_status == TransactionStatus.IDLE:
            self.give_back()
        return cursor

    def give_back(self) -> None:
        """Return the connection to the pool (a broken one is dropped and replaced there)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._store._give_back(conn)


_IN_TRANSACTION = (TransactionStatus.INTRANS, TransactionStatus.INERROR, TransactionStatus.ACTIVE)


class _Health:
    """Whether the database is known to be away; logs once when it goes and once when back."""

    def __init__(self, where: str) -> None:
        self._where = where
        self._lock = threading.Lock()
        self._down_at: float | None = None

    @property
    def down(self) -> bool:
        return self._down_at is not None

    def failed(self, reason: str) -> None:
        with self._lock:
            if self._down_at is not None:
                return
            self._down_at = monotonic()
        log.warning(
            "store: PostgreSQL %s is unreachable (%s); store calls fail until it is back, "
            "allowed senders are answered from memory, reconnecting with backoff",
            self._where,
            reason,
        )

    def ok(self) -> None:
        if self._down_at is None:
            return
        with self._lock:
            began, self._down_at = self._down_at, None
        if began is not None:
            log.warning(
                "store: PostgreSQL %s is reachable again (away %.1fs)",
                self._where,
                monotonic() - began,
            )


class _QuietPoolReconnects(logging.Filter):
    """The pool logs each failed reconnection; the store logs an outage once instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("error connecting in", "reconnection attempt"))


logging.getLogger("psycopg.pool").addFilter(_QuietPoolReconnects())


class _Database:
    """What the stores of one process share on one DSN: the pool, the listener, the outage.

    A process opens as many stores on a DSN as it likes (the services' tests open a hundred
    at once, as a hundred processes would); they share these, so each process holds at most
    :data:`_POOL_MAX` + 1 connections to the database. Each store keeps its own gate cache;
    the listener marks every one of them stale.
    """

    def __init__(self, key: tuple[str, float, float], display: str) -> None:
        self.dsn, self.lock_timeout, self.connect_timeout = key
        self.key = key
        self.display = display
        self.health = _Health(display)
        self.stores: weakref.WeakSet[PostgresStore] = weakref.WeakSet()
        self.stores_lock = threading.Lock()  # the listener thread reads the set
        self.users = 0
        self.schema = ""
        self.listening = False
        self.pool: ConnectionPool[PgConnection] | None = None
        self.listener: _Listener | None = None

    def connect_kwargs(self) -> dict[str, Any]:
        return {
            "autocommit": True,  # the layer begins and ends its transactions itself
            "connect_timeout": max(1, round(self.connect_timeout)),
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        }

    def configure(self, conn: PgConnection) -> None:
        """Set a new connection up: how long a lock wait may last (the advisory lock's)."""
        ms = max(1, round(self.lock_timeout * 1000))
        conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{ms}ms",))

    def connect(self) -> PgConnection:
        """A connection of its own (the listener's, a check's), set up as the pool's are."""
        conn = psycopg.connect(self.dsn, **self.connect_kwargs())
        try:
            self.configure(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def open(self, store: PostgresStore) -> None:
        """Connect, make the schema ready (through ``store``: the layer's migrations), then
        start the pool and the listener."""
        conn = self.connect()
        try:
            found = conn.execute("SELECT current_schema()").fetchone()
            if found is None or found[0] is None:
                raise StoreError(
                    "no schema to use: the search_path names none that exists",
                    path=store.where,
                    hint="create the schema, or fix options=-csearch_path=... in store.dsn",
                )
            self.schema = str(found[0])
            store._pg.lock_key = schema_key(self.schema)
            store._check_version(conn)  # a newer schema is refused before anything is written
            store._migrate(conn)
            pool: ConnectionPool[PgConnection] = ConnectionPool(
                self.dsn,
                kwargs=self.connect_kwargs(),
                min_size=2,
                max_size=_POOL_MAX,
                open=False,
                configure=self.configure,
                timeout=self.connect_timeout,
                reconnect_timeout=max(self.connect_timeout, 5.0),
                num_workers=1,
                name=f"pairbot {self.display}",
            )
            pool.open(wait=False)
            self.pool = pool
            self.listener = _Listener(self, conn)
        except BaseException:
            conn.close()
            self.close()
            raise

    def close(self) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.stop()
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.close()
        self.listening = False

    def changed(self) -> None:
        """Something was committed (or may have been): every store's cache is stale."""
        with self.stores_lock:
            stores = list(self.stores)
        for store in stores:
            store._stale = True

    def borrow(self, wait: float | None = None) -> PgConnection:
        """A live connection from the pool, waiting at most ``wait``: by default the connect
        timeout, much less while the database is known to be away (calls fail fast)."""
        pool = self.pool
        if pool is None:
            raise psycopg.OperationalError("the store was closed")
        if wait is None:
            wait = _DOWN_WAIT if self.health.down else self.connect_timeout
        deadline = monotonic() + wait
        while True:
            conn = pool.getconn(timeout=max(deadline - monotonic(), 0.001))
            if _alive(conn):
                return conn
            pool.putconn(conn)  # dropped there; the pool connects anew, with backoff

    def give_back(self, conn: PgConnection) -> None:
        pool = self.pool
        if pool is None or pool.closed:
            conn.close()
        else:
            pool.putconn(conn)


_POOL_MAX = 4
"""Connections a process's pool may hold: a transaction at a time per store, and the gates."""
_DATABASES: dict[tuple[str, float, float], _Database] = {}
_DATABASES_LOCK = threading.Lock()


class _Listener:
    """A daemon thread on its own connection: ``LISTEN``, and mark the caches stale on each
    notification about the schema; reconnect with backoff when the connection is lost (the
    caches count as changed until it listens again)."""

    def __init__(self, db: _Database, conn: PgConnection) -> None:
        self._db = db
        self._conn: PgConnection | None = conn
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(
            target=self._run, name=f"pairbot-listen {db.display}", daemon=True
        )
        conn.execute(f"LISTEN {CHANNEL}")
        db.listening = True
        db.changed()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=10)
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _run(self) -> None:
        db = self._db
        delay = _BACKOFF[0]
        while not self._stop.is_set():
            conn = self._conn
            if conn is None:
                try:
                    conn = db.connect()
                    conn.execute(f"LISTEN {CHANNEL}")
                except psycopg.Error as exc:
                    # Not an outage by itself: the gate checks on every call meanwhile, and a
                    # call that cannot reach the database says so (and logs it).
                    log.debug("store: listener cannot reconnect: %s", _reason(exc))
                    self._stop.wait(delay)
                    delay = min(delay * 2, _BACKOFF[1])
                    continue
                self._conn, delay = conn, _BACKOFF[0]
                db.listening = True
                db.changed()  # what was committed while away: caught up once
            try:
                self._listen(conn)
            except psycopg.Error:
                db.listening = False
                db.changed()
                self._conn = None
                conn.close()
        if self._conn is not None:
            self._conn.close()

    def _listen(self, conn: PgConnection) -> None:
        ready, _, _ = select.select([conn.fileno(), self._wake_r], [], [], _PING_EVERY)
        if self._stop.is_set():
            return
        if not ready:
            conn.execute("SELECT 1")  # a quiet connection: still there?
            return
        for note in conn.notifies(timeout=0):
            if note.channel == CHANNEL and note.payload == self._db.schema:
                self._db.changed()


def _reason(exc: BaseException, password: str | None = None) -> str:
    """A driver's message as one short line: the server's primary message (never its DETAIL,
    which quotes values such as a code), with the DSN's password masked."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None)
    text = " ".join(str(primary or exc).split()) or type(exc).__name__
    if password:
        text = text.replace(password, "***")
    if len(text) > _DETAIL_MAX:
        text = text[: _DETAIL_MAX - 3] + "..."
    return text


# --- the store -------------------------------------------------------------------------------


class PostgresStore(SqlStore):
    """The state in a PostgreSQL schema (the first of the DSN's ``search_path`` that exists,
    ``public`` by default), shared by every process that uses the same DSN."""

    def __init__(
        self,
        dsn: str,
        *,
        lock_timeout: float = 10.0,
        connect_timeout: float = 5.0,
    ) -> None:
        fields = dsn_fields(dsn)  # a bad DSN is refused now, naming the field
        self.dsn = dsn
        self.display = dsn_target(dsn)
        """Where the database is, safe to show (no password): errors and logs name it."""
        self._pg = PostgresDialect()
        super().__init__(self._pg, Path(self.display), lock_timeout=lock_timeout)
        self.connect_timeout = connect_timeout
        self._password = fields.get("password") or None
        self._db: _Database | None = None
        self._stale = True
        self._unopened = _Health(self.display)  # the outage state before the first open
        self._gate_retry_at = 0.0

    @property
    def _health(self) -> _Health:
        db = self._db
        return db.health if db is not None else self._unopened

    def _reason(self, exc: BaseException) -> str:
        return _reason(exc, self._password)

    def _connect(self) -> PgConnection:
        return _Database((self.dsn, self.lock_timeout, self.connect_timeout), "").connect()

    def _borrow(self, wait: float | None) -> PgConnection:
        db = self._db
        if db is None:
            raise psycopg.OperationalError("the store was closed")
        return db.borrow(wait)

    def _give_back(self, conn: PgConnection) -> None:
        db = self._db
        if db is None:
            conn.close()
        else:
            db.give_back(conn)

    @contextlib.contextmanager
    def lend(self) -> Iterator[PgConnection]:
        """A connection of the pool for a statement or two outside the store's transactions
        (the cluster's: each one statement, committed on its own), given back after; the
        database is opened (and migrated) first if it was not. A driver error leaves as the
        :class:`~bot.core.errors.StoreError` it means, as the store's own would."""
        self._connections()
        with self._errors():
            conn = self._borrow(None)
            try:
                yield conn
            finally:
                self._give_back(conn)
            self._health.ok()

    @property
    def schema(self) -> str:
        """The schema the store uses (the database is opened first if it was not)."""
        self._connections()
        db = self._db
        if db is None:
            raise StoreUnavailableError("the store was closed", path=self.where)
        return db.schema

    # --- opening ----------------------------------------------------------------------------

    def _open(self) -> tuple[Connection, Connection]:
        key = (self.dsn, self.lock_timeout, self.connect_timeout)
        with _DATABASES_LOCK:
            db = _DATABASES.get(key)
            if db is None:
                db = _Database(key, self.display)
                db.open(self)
                _DATABASES[key] = db
            else:
                self._pg.lock_key = schema_key(db.schema)
            db.users += 1
            with db.stores_lock:
                db.stores.add(self)
            self._db = db
        self._stale = True
        self._unopened.ok()  # if a first use had found the database away
        return _Lent(self), _Lent(self)  # (writer, reader) as the layer names them

    def _close(self, conns: tuple[Connection, Connection]) -> None:
        for conn in conns:
            if isinstance(conn, _Lent):
                conn.give_back()
        with _DATABASES_LOCK:
            db, self._db = self._db, None
            if db is None:
                return
            with db.stores_lock:
                db.stores.discard(self)
            db.users -= 1
            if db.users > 0:
                return
            del _DATABASES[db.key]
        db.close()

    def _committed(self, writer: Connection) -> None:  # noqa: ARG002 (the layer's signature)
        db = self._db
        if db is not None:
            db.health.ok()
            db.changed()  # this process's gates see it at once, not when notified

    # --- the gate's change check ------------------------------------------------------------

    def _allow_may_have_changed(self, reader: Connection) -> bool:  # noqa: ARG002 (as above)
        db = self._db
        changed = self._stale or db is None or not db.listening
        self._stale = False
        return changed

    def _catch_up(self, reader: Connection) -> None:
        """Catch up as the layer does. With a cache to fall back on, the gate waits briefly
        for a connection, and while the database is away it answers from the cache, asking
        again at most every :data:`_GATE_RETRY` seconds (the listener, once back, says so)."""
        cached = self._allowed is not None
        if cached and self._health.down and monotonic() < self._gate_retry_at:
            self._stale = True
            return
        lent = reader if isinstance(reader, _Lent) else None
        if lent is not None and cached:
            lent.wait = _DOWN_WAIT
        try:
            super()._catch_up(reader)
        except psycopg.OperationalError as exc:
            self._stale = True
            if not cached or not self._unavailable(exc):
                raise
            self._gate_retry_at = monotonic() + _GATE_RETRY
            self._health.failed(self._reason(exc))
            return
        finally:
            if lent is not None:
                lent.wait = None
        self._health.ok()

    # --- errors -----------------------------------------------------------------------------

    @staticmethod
    def _unavailable(exc: BaseException) -> bool:
        return isinstance(exc, psycopg.OperationalError) and not isinstance(
            exc, psycopg.errors.LockNotAvailable | psycopg.errors.QueryCanceled
        )

    def _translate(self, exc: Exception) -> Exception | None:
        if not isinstance(exc, psycopg.Error):
            return None
        reason = self._reason(exc)
        if isinstance(exc, psycopg.errors.LockNotAvailable):
            return StoreLockTimeoutError(
                f"another process held the database lock for over {self.lock_timeout:g}s",
                path=self.where,
                hint="another pairbot command or the bot is writing; try again",
            )
        if self._unavailable(exc) or isinstance(exc, psycopg.InterfaceError):
            self._health.failed(reason)
            return StoreUnavailableError(
                f"PostgreSQL unreachable: {reason}",
                path=self.where,
                hint="nothing was changed; pairbot reconnects on its own",
            )
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            return StoreError(
                f"not allowed: {reason}",
                path=self.where,
                hint="grant the DSN's user its tables (run `pairbot doctor`)",
            )
        if isinstance(exc, psycopg.IntegrityError):
            return StoreError(f"the database refused the change: {reason}", path=self.where)
        return StoreError(f"database error: {reason}", path=self.where)

    # --- health -----------------------------------------------------------------------------

    def check(self) -> None:
        """Raise if the database cannot be used now: unreachable, or of a newer schema.
        Read-only: a schema not made yet is fine (it is made on first use)."""
        with self._errors():
            conn = self._connect()
            try:
                self._check_version(conn)
            finally:
                conn.close()

    def access_report(self) -> list[tuple[bool, str]]:
        """Nothing on disk to check: the database's own roles say who may read it (see
        :meth:`diagnose` for what the DSN's user may do)."""
        return []

    def diagnose(self) -> list[tuple[bool, str]]:
        """What ``pairbot doctor`` says of the database, as ``(ok, line)``: reachable, the
        schema version (current, older: migrated on first use, newer: refused), and whether
        the DSN's user may read and write the tables (and create them when they are missing).
        Never raises; no line carries the password."""
        where = self.display
        try:
            conn = self._connect()
        except Exception as exc:
            return [(False, f"PostgreSQL {where}: unreachable: {self._reason(exc)}")]
        lines: list[tuple[bool, str]] = []
        try:
            server, schema, user = conn.execute(
                "SELECT current_setting('server_version'), current_schema(), current_user"
            ).fetchone() or ("?", None, "?")
            if schema is None:
                return [
                    (False, f"PostgreSQL {where}: the search_path names no schema that exists")
                ]
            lines.append(
                (
                    True,
                    f"PostgreSQL {where}: reachable (server {server}, user {user}, "
                    f"schema {schema})",
                )
            )
            version = self._schema_version(conn)
            lines.append(self._version_line(version))
            lines.extend(self._privilege_lines(conn, str(schema), version))
        except Exception as exc:
            lines.append((False, f"PostgreSQL {where}: {self._reason(exc)}"))
        finally:
            conn.close()
        return lines

    @staticmethod
    def _version_line(version: int) -> tuple[bool, str]:
        if version > SCHEMA_VERSION:
            return (
                False,
                f"schema version {version} is newer than this pairbot's ({SCHEMA_VERSION}): "
                "refused, left as it is; upgrade pairbot",
            )
        if version == SCHEMA_VERSION:
            return True, f"schema version {version} (current)"
        if version == 0:
            return True, "no pairbot tables yet: they are made on first use"
        return True, f"schema version {version} (older): migrated to {SCHEMA_VERSION} on first use"

    @staticmethod
    def _privilege_lines(conn: PgConnection, schema: str, version: int) -> list[tuple[bool, str]]:
        lines: list[tuple[bool, str]] = []
        present = {
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = %s", (schema,)
            )
        }
        if version < SCHEMA_VERSION:
            (may_create,) = conn.execute(
                "SELECT has_schema_privilege(current_user, %s, 'CREATE')", (schema,)
            ).fetchone() or (False,)
            lines.append(
                (True, f"may create the missing tables in schema {schema}")
                if may_create
                else (
                    False,
                    f"may not create tables in schema {schema} (GRANT CREATE ON "
                    f"SCHEMA {schema} TO the user, or let its owner run pairbot once)",
                )
            )
        denied = []
        for table in TABLES:
            if table not in present:
                continue
            name = f'"{schema}"."{table}"'
            # Each alone: given several privileges, has_table_privilege says if any is held.
            (ok,) = conn.execute(
                "SELECT has_table_privilege(current_user, %s, 'SELECT') "
                "AND has_table_privilege(current_user, %s, 'INSERT') "
                "AND has_table_privilege(current_user, %s, 'UPDATE') "
                "AND has_table_privilege(current_user, %s, 'DELETE')",
                (name, name, name, name),
            ).fetchone() or (False,)
            if not ok:
                denied.append(table)
        if present & set(TABLES):
            lines.append(
                (
                    False,
                    f"may not read and write: {', '.join(denied)} (GRANT SELECT, INSERT, "
                    "UPDATE, DELETE)",
                )
                if denied
                else (True, "may read and write its tables")
            )
        return lines


__all__ = ["CHANNEL", "LOCK_CLASS", "PostgresDialect", "PostgresStore", "dsn_target"]
