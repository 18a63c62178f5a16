"""The SQL backends' shared layer: the whole :class:`bot.core.protocols.StateStore` written once.

A SQL backend is this layer plus two small parts of its own:

- a :class:`Dialect`: the placeholder, the column words of :mod:`stores.sql.schema`, how to
  begin the exclusive transaction, and which of the driver's errors mean "busy", "corrupt" or
  "gone" (each translated into the :class:`bot.core.errors.StoreError` the other backends
  raise);
- a subclass of :class:`SqlStore` that opens its connections (:meth:`SqlStore._open`) and
  says cheaply whether another connection may have changed the allowlists since it last
  looked (:meth:`SqlStore._allow_may_have_changed`).

Everything else is here, in SQL both SQLite and PostgreSQL run as written: ``INSERT ... ON
CONFLICT ... DO UPDATE`` keeps a replaced row (and its place), ``RETURNING`` hands back a new
row's sequence number, times are integers (microseconds since the epoch, UTC), flags are 0/1
and unknown keys are JSON text. Every query a transaction makes is answered by an index; no
method loads a table to answer a question about one row.

The gate (:meth:`SqlStore.allowed_until`) answers from a set per provider and the ends of the
grants that end, built once and then kept current from ``allowlist_log``: the grants (with
their ends) and revocations in commit order, read from the last sequence number applied, and
only when the backend's change check says something was committed. The log is trimmed to
its last :attr:`SqlStore.log_keep` rows; a cache that fell further behind than that
(``allowlist_log_floor``) reloads the allowlists whole.
"""

from __future__ import annotations

import contextlib
import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from bot.core import codes
from bot.core.errors import (
    SchemaVersionError,
    StoreCorruptError,
    StoreError,
    StoreLockTimeoutError,
)
from bot.core.models import (
    FOREVER,
    ApprovalNotice,
    AskView,
    AuditEvent,
    AuditPage,
    HeldMessage,
    NodeInvite,
    NodeRequest,
    PairedNode,
    PendingRequest,
)
from bot.core.platforms import KNOWN_PROVIDERS
from stores._records import (
    HELD_KEY,
    NEVER_ALLOWED,
    TOLD_KEY,
    audit_record,
    check_provider,
    unknown_provider,
)
from stores.sql.schema import (
    CURSORS_TABLE,
    LOG_FLOOR_KEY,
    META_TABLE,
    MIGRATIONS,
    SCHEMA_VERSION,
    SCHEMA_VERSION_KEY,
)


class Cursor(Protocol):
    """What the layer uses of a DB-API cursor (:mod:`sqlite3`, psycopg 3)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What the layer uses of a DB-API connection: ``execute`` returning its cursor."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


class Dialect(ABC):
    """What one database says its own way. Statements are written with ``?`` placeholders."""

    placeholder = "?"
    words: Mapping[str, str] = {
        "serial": "INTEGER PRIMARY KEY",
        "time": "BIGINT",
        "text": "TEXT",
    }
    """The column words of :mod:`stores.sql.schema`'s statements."""

    pending_count = "SELECT COUNT(*) FROM pending_requests WHERE provider = ?"
    """A provider's pending count (its one ``?``: the provider)."""

    def __init__(self) -> None:
        self._sql: dict[str, str] = {}
        self.ask_view = (
            f"SELECT {', '.join('r.' + c.strip() for c in _REQUEST_COLS.split(','))}, "  # noqa: S608 (constant names)
            "EXISTS (SELECT 1 FROM allowlist WHERE provider = ? AND sender_id = ?), "
            f"({self.pending_count}), "
            "(SELECT ends_at FROM allowlist WHERE provider = ? AND sender_id = ?) "
            "FROM (SELECT 1) AS one "
            "LEFT JOIN pending_requests AS r ON r.provider = ? AND r.sender_id = ?"
        )
        """:meth:`SqlTxn.ask_view`'s one statement: the request (NULLs if none), whether
        the allowlist lists the sender, the provider's pending count, the end of the sender's
        grant (NULL if it does not end, or if they are not listed)."""

    def sql(self, statement: str) -> str:
        """Return ``statement`` with this dialect's placeholder (converted once, then cached)."""
        done = self._sql.get(statement)
        if done is None:
            done = self._sql[statement] = statement.replace("?", self.placeholder)
        return done

    def migrations(self) -> list[list[str]]:
        """Return :data:`stores.sql.schema.MIGRATIONS` in this dialect's words."""
        return [[stmt.format(**self.words) for stmt in step] for step in MIGRATIONS]

    @abstractmethod
    def begin_exclusive(self, conn: Connection) -> None:
        """Begin a transaction that holds the store's write lock until it ends: one at a
        time across every process using the database. Waits up to the lock timeout."""

    def begin_shared(self, conn: Connection) -> int:
        """Begin a transaction that may run beside other shared ones but never beside an
        exclusive one; return how many others may run beside it (see
        :attr:`bot.core.protocols.StateTxn.peers`). A database that writes one transaction
        at a time (SQLite) begins an exclusive one and returns 0."""
        self.begin_exclusive(conn)
        return 0

    def begin_read(self, conn: Connection) -> None:
        """Begin a read-only transaction whose reads all see one committed state (SQLite's
        ``BEGIN`` does; PostgreSQL needs ``REPEATABLE READ``: the gate reads the log's floor
        and then the log, and a trim committed in between must not be half seen)."""
        conn.execute("BEGIN")

    def end(self, conn: Connection, *, commit: bool) -> None:
        """End the transaction ``conn`` is in."""
        conn.execute("COMMIT" if commit else "ROLLBACK")

    def commit(self, conn: Connection, tail: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Run ``tail`` (statements with ``?`` placeholders), then commit. If any fails, the
        transaction is left for the caller to roll back."""
        for statement, params in tail:
            conn.execute(self.sql(statement), params)
        self.end(conn, commit=True)

    @abstractmethod
    def table_exists(self, conn: Connection, name: str) -> bool:
        """Return whether the database has a table called ``name`` (read only)."""

    @staticmethod
    def encode_time(value: datetime) -> int:
        """A time as stored: microseconds since the epoch (a naive time is taken as UTC)."""
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return (aware - _EPOCH) // _MICRO

    @staticmethod
    def decode_time(value: int) -> datetime:
        """A stored time back as an aware UTC datetime, to the microsecond."""
        return _EPOCH + timedelta(microseconds=value)


def _json(value: Mapping[str, Any]) -> str | None:
    return json.dumps(value, ensure_ascii=False) if value else None


def _unjson(text: str | None) -> dict[str, Any]:
    return {} if text is None else dict(json.loads(text))


def _held(extra: str | None, table: str) -> tuple[tuple[HeldMessage, ...], dict[str, Any]]:
    """A row's held messages, kept in its ``extra`` column (:data:`HELD_KEY`), and the rest
    of that column."""
    rest = _unjson(extra)
    if HELD_KEY not in rest:
        return (), rest
    held = HeldMessage.read_all(rest.pop(HELD_KEY), f"{table}.extra.{HELD_KEY}", _corrupt)
    return held, rest


def _corrupt(field: str, problem: str) -> StoreCorruptError:
    return StoreCorruptError(f"{field}: {problem}")


def _with_held(extra: Mapping[str, Any], held: Sequence[HeldMessage]) -> dict[str, Any]:
    """What :func:`_held` reads back: ``extra`` with the held messages, if any."""
    return {**extra, HELD_KEY: [m.as_json() for m in held]} if held else dict(extra)


# --- rows <-> models ----------------------------------------------------------------------------

_REQUEST_COLS = "provider, sender_id, code, created_at, last_seen_at, last_sent_at, meta, extra"
_NODE_REQUEST_COLS = (
    "request_id, node_id, display_name, platform, version, created_at, remote, pickup_hash, "
    "is_repair, extra"
)
_PAIRED_COLS = (
    "node_id, display_name, platform, version, token_hash, created_at, approved_at, "
    "last_connected_at, extra"
)
_NOTICE_COLS = "provider, sender_id, approved_at, chat_id, extra"
_INVITE_COLS = "invite_id, secret_hash, name, created_at, expires_at, used_at, used_by, extra"


def _upsert(table: str, cols: str, key: str) -> str:
    """``INSERT`` a row, or update the row of the same ``key`` in place (keeping its ``seq``)."""
    names = [c.strip() for c in cols.split(",")]
    keys = {k.strip() for k in key.split(",")}
    updates = ", ".join(f"{c} = excluded.{c}" for c in names if c not in keys)
    marks = ", ".join("?" for _ in names)
    return (
        f"INSERT INTO {table} ({cols}) VALUES ({marks}) "  # noqa: S608 (constant names)
        f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
    )


_PUT_REQUEST = _upsert("pending_requests", _REQUEST_COLS, "provider, sender_id")
_ADD_REQUEST = (
    f"INSERT INTO pending_requests ({_REQUEST_COLS}) "  # noqa: S608 (constant names)
    f"VALUES ({', '.join('?' for _ in _REQUEST_COLS.split(','))}) ON CONFLICT DO NOTHING"
)
"""A new request, unless the sender's or the code's unique index already holds one: a
concurrent insert of either waits for the other to end, then inserts nothing."""
_PUT_NODE_REQUEST = _upsert("node_requests", _NODE_REQUEST_COLS, "request_id")
_PUT_PAIRED = _upsert("paired_nodes", _PAIRED_COLS, "node_id")
_PUT_NOTICE = _upsert("approval_notices", _NOTICE_COLS, "provider, sender_id")
_PUT_INVITE = _upsert("node_invites", _INVITE_COLS, "invite_id")
_SET_META = _upsert(META_TABLE, "key, value", "key")
_PUT_CURSOR = _upsert(CURSORS_TABLE, "key, value", "key")
_GET_CURSOR = f"SELECT value FROM {CURSORS_TABLE} WHERE key = ?"  # noqa: S608 (a constant name)
_GET_META = f"SELECT value FROM {META_TABLE} WHERE key = ?"  # noqa: S608 (a constant name)


class SqlTxn:
    """The view a transaction hands out; see :class:`bot.core.protocols.StateTxn`.

    Every call is one or two indexed statements inside the store's SQL transaction: what it
    changes is seen by the view at once and by everyone else when the transaction commits.
    """

    __slots__ = ("_conn", "_d", "_store", "peers", "tail")

    def __init__(self, conn: Connection, store: SqlStore, *, peers: int = 0) -> None:
        self._conn: Connection | None = conn
        self._d = store.dialect
        self._store = store
        self.peers = peers
        self.tail: list[tuple[str, Sequence[Any]]] = []
        """Statements (``?`` placeholders) whose results nobody reads, run at the commit."""

    def end(self) -> None:
        """Refuse any use of this view once its transaction is over."""
        self._conn = None

    def _run(self, statement: str, params: Sequence[Any] = ()) -> Cursor:
        conn = self._conn
        if conn is None:
            raise RuntimeError("the transaction has ended; open a new one")
        return conn.execute(self._d.sql(statement), params)

    # --- pending DM requests

    def _request(self, row: Sequence[Any]) -> PendingRequest:
        provider, sender_id, code, created, seen, sent, meta, extra = row
        decode = self._d.decode_time
        held, rest = _held(extra, "pending_requests")
        return PendingRequest(
            provider=provider,
            id=sender_id,
            code=code,
            created_at=decode(created),
            last_seen_at=decode(seen),
            meta=_unjson(meta),
            last_sent_at=None if sent is None else decode(sent),
            held=held,
            extra=rest,
        )

    def requests(self, provider: str) -> list[PendingRequest]:
        check_provider(provider)
        rows = self._run(
            f"SELECT {_REQUEST_COLS} FROM pending_requests WHERE provider = ? ORDER BY seq",  # noqa: S608
            (provider,),
        )
        return [self._request(row) for row in rows.fetchall()]

    def request(self, provider: str, sender_id: str) -> PendingRequest | None:
        check_provider(provider)
        row = self._run(
            f"SELECT {_REQUEST_COLS} FROM pending_requests WHERE provider = ? AND sender_id = ?",  # noqa: S608
            (provider, sender_id),
        ).fetchone()
        return None if row is None else self._request(row)

    def request_count(self, provider: str) -> int:
        check_provider(provider)
        row = self._run(self._d.pending_count, (provider,)).fetchone()
        return int(row[0])

    def ask_view(self, provider: str, sender_id: str) -> AskView:
        check_provider(provider)
        row = self._run(
            self._d.ask_view,
            (provider, sender_id, provider, provider, sender_id, provider, sender_id),
        ).fetchone()
        return AskView(
            request=None if row[0] is None else self._request(row[:8]),
            allowed=bool(row[8]),
            pending=int(row[9]),
            allowed_end=None if row[10] is None else self._d.decode_time(row[10]),
        )

    def requests_created_before(self, provider: str, cutoff: datetime) -> list[PendingRequest]:
        check_provider(provider)
        rows = self._run(
            f"SELECT {_REQUEST_COLS} FROM pending_requests "  # noqa: S608
            "WHERE provider = ? AND created_at <= ? ORDER BY seq",
            (provider, self._d.encode_time(cutoff)),
        )
        return [self._request(row) for row in rows.fetchall()]

    def request_with_code(self, code: str, providers: Sequence[str]) -> PendingRequest | None:
        row = self._run(
            f"SELECT {_REQUEST_COLS} FROM pending_requests WHERE code = ?",  # noqa: S608
            (code,),
        ).fetchone()
        if row is None or row[0] not in providers:
            return None
        # Found by the index; confirmed in constant time as the other backends compare codes.
        return self._request(row) if codes.find_code(code, [row[2]]) == 0 else None

    def code_taken(self, code: str) -> bool:
        found = self._run("SELECT 1 FROM pending_requests WHERE code = ?", (code,)).fetchone()
        return found is not None

    def put_request(self, request: PendingRequest) -> None:
        self._run(_PUT_REQUEST, self._request_row(request))

    def add_request(self, request: PendingRequest) -> bool:
        return self._run(_ADD_REQUEST, self._request_row(request)).rowcount > 0

    def _request_row(self, request: PendingRequest) -> tuple[Any, ...]:
        check_provider(request.provider)
        encode = self._d.encode_time
        return (
            request.provider,
            request.id,
            request.code,
            encode(request.created_at),
            encode(request.last_seen_at),
            None if request.last_sent_at is None else encode(request.last_sent_at),
            _json(request.meta),
            _json(_with_held(request.extra, request.held)),
        )

    def drop_request(self, provider: str, sender_id: str, *, code: str | None = None) -> bool:
        check_provider(provider)
        if code is None:
            cur = self._run(
                "DELETE FROM pending_requests WHERE provider = ? AND sender_id = ?",
                (provider, sender_id),
            )
        else:  # the request read, not one made since by another transaction
            cur = self._run(
                "DELETE FROM pending_requests WHERE provider = ? AND sender_id = ? AND code = ?",
                (provider, sender_id, code),
            )
        return cur.rowcount > 0

    # --- allowlists: every change also goes to the log the gate caches catch up from

    def allow_from(self, provider: str) -> list[str]:
        check_provider(provider)
        rows = self._run(
            "SELECT sender_id FROM allowlist WHERE provider = ? ORDER BY seq", (provider,)
        )
        return [row[0] for row in rows.fetchall()]

    def allow_has(self, provider: str, sender_id: str) -> bool:
        check_provider(provider)
        found = self._run(
            "SELECT 1 FROM allowlist WHERE provider = ? AND sender_id = ?", (provider, sender_id)
        ).fetchone()
        return found is not None

    def allow_end(self, provider: str, sender_id: str) -> datetime | None:
        check_provider(provider)
        row = self._run(
            "SELECT ends_at FROM allowlist WHERE provider = ? AND sender_id = ?",
            (provider, sender_id),
        ).fetchone()
        return None if row is None or row[0] is None else self._d.decode_time(row[0])

    def allow_ends(self, provider: str, *, by: datetime | None = None) -> dict[str, datetime]:
        check_provider(provider)
        rows = self._run(  # by the partial index of the rows with an end
            "SELECT sender_id, ends_at FROM allowlist "
            "WHERE provider = ? AND ends_at IS NOT NULL AND ends_at <= ? ORDER BY seq",
            (provider, self._d.encode_time(FOREVER if by is None else by)),
        )
        decode = self._d.decode_time
        return {sender_id: decode(end) for sender_id, end in rows.fetchall()}

    def allow(self, provider: str, sender_id: str, *, until: datetime | None = None) -> bool:
        check_provider(provider)
        end = None if until is None else self._d.encode_time(until)
        cur = self._run(
            "INSERT INTO allowlist (provider, sender_id, ends_at) VALUES (?, ?, ?) "
            "ON CONFLICT (provider, sender_id) DO NOTHING",
            (provider, sender_id, end),
        )
        if cur.rowcount > 0:
            self._log(provider, sender_id, added=True, end=end)
            return True
        row = self._run(
            "SELECT ends_at FROM allowlist WHERE provider = ? AND sender_id = ?",
            (provider, sender_id),
        ).fetchone()
        if row[0] != end:  # listed with another end: this one replaces it
            self._run(
                "UPDATE allowlist SET ends_at = ? WHERE provider = ? AND sender_id = ?",
                (end, provider, sender_id),
            )
            self._log(provider, sender_id, added=True, end=end)
        return False

    def disallow(self, provider: str, sender_id: str, *, ending: datetime | None = None) -> bool:
        check_provider(provider)
        if ending is None:
            cur = self._run(
                "DELETE FROM allowlist WHERE provider = ? AND sender_id = ?",
                (provider, sender_id),
            )
        else:  # the ended grant read, not one renewed since by another transaction
            cur = self._run(
                "DELETE FROM allowlist WHERE provider = ? AND sender_id = ? AND ends_at = ?",
                (provider, sender_id, self._d.encode_time(ending)),
            )
        if cur.rowcount <= 0:
            return False
        self._log(provider, sender_id, added=False, end=None)
        return True

    def _log(self, provider: str, sender_id: str, *, added: bool, end: int | None) -> None:
        seq = int(
            self._run(
                "INSERT INTO allowlist_log (provider, sender_id, added, ends_at) "
                "VALUES (?, ?, ?, ?) RETURNING seq",
                (provider, sender_id, int(added), end),
            ).fetchone()[0]
        )
        keep, every = self._store.log_keep, self._store.log_trim_every
        if seq % every == 0 and seq > keep:
            floor = seq - keep
            self._run("DELETE FROM allowlist_log WHERE seq <= ?", (floor,))
            self._run(_SET_META, (LOG_FLOOR_KEY, str(floor)))

    # --- nodes

    def node_requests(self) -> list[NodeRequest]:
        rows = self._run(f"SELECT {_NODE_REQUEST_COLS} FROM node_requests ORDER BY seq")  # noqa: S608
        decode = self._d.decode_time
        return [
            NodeRequest(
                request_id=request_id,
                node_id=node_id,
                display_name=display_name,
                platform=platform,
                version=version,
                created_at=decode(created),
                remote=remote,
                pickup_hash=pickup_hash,
                is_repair=bool(is_repair),
                extra=_unjson(extra),
            )
            for (
                request_id,
                node_id,
                display_name,
                platform,
                version,
                created,
                remote,
                pickup_hash,
                is_repair,
                extra,
            ) in rows.fetchall()
        ]

    def put_node_request(self, request: NodeRequest) -> None:
        self._run(
            _PUT_NODE_REQUEST,
            (
                request.request_id,
                request.node_id,
                request.display_name,
                request.platform,
                request.version,
                self._d.encode_time(request.created_at),
                request.remote,
                request.pickup_hash,
                int(request.is_repair),
                _json(request.extra),
            ),
        )

    def drop_node_request(self, request_id: str) -> bool:
        cur = self._run("DELETE FROM node_requests WHERE request_id = ?", (request_id,))
        return cur.rowcount > 0

    def paired_nodes(self) -> list[PairedNode]:
        rows = self._run(f"SELECT {_PAIRED_COLS} FROM paired_nodes ORDER BY seq")  # noqa: S608
        decode = self._d.decode_time
        return [
            PairedNode(
                node_id=node_id,
                display_name=display_name,
                platform=platform,
                version=version,
                token_hash=token_hash,
                created_at=decode(created),
                approved_at=decode(approved),
                last_connected_at=None if connected is None else decode(connected),
                extra=_unjson(extra),
            )
            for (
                node_id,
                display_name,
                platform,
                version,
                token_hash,
                created,
                approved,
                connected,
                extra,
            ) in rows.fetchall()
        ]

    def put_paired_node(self, node: PairedNode) -> None:
        encode = self._d.encode_time
        self._run(
            _PUT_PAIRED,
            (
                node.node_id,
                node.display_name,
                node.platform,
                node.version,
                node.token_hash,
                encode(node.created_at),
                encode(node.approved_at),
                None if node.last_connected_at is None else encode(node.last_connected_at),
                _json(node.extra),
            ),
        )

    def drop_paired_node(self, node_id: str) -> bool:
        cur = self._run("DELETE FROM paired_nodes WHERE node_id = ?", (node_id,))
        return cur.rowcount > 0

    # --- approval notices

    def notices(self) -> list[ApprovalNotice]:
        rows = self._run(
            f"SELECT {_NOTICE_COLS} FROM approval_notices ORDER BY approved_at, seq"  # noqa: S608
        )
        decode = self._d.decode_time
        notices = []
        for provider, sender_id, approved, chat_id, extra in rows.fetchall():
            held, rest = _held(extra, "approval_notices")
            told = rest.pop(TOLD_KEY, None) is True
            notices.append(
                ApprovalNotice(
                    provider=provider,
                    sender_id=sender_id,
                    approved_at=decode(approved),
                    chat_id=chat_id,
                    held=held,
                    told=told,
                    extra=rest,
                )
            )
        return notices

    def put_notice(self, notice: ApprovalNotice) -> None:
        check_provider(notice.provider)
        self._run(
            _PUT_NOTICE,
            (
                notice.provider,
                notice.sender_id,
                self._d.encode_time(notice.approved_at),
                notice.chat_id,
                _json(
                    _with_held(
                        {**notice.extra, **({TOLD_KEY: True} if notice.told else {})},
                        notice.held,
                    )
                ),
            ),
        )

    def drop_notice(self, provider: str, sender_id: str) -> bool:
        check_provider(provider)
        cur = self._run(
            "DELETE FROM approval_notices WHERE provider = ? AND sender_id = ?",
            (provider, sender_id),
        )
        return cur.rowcount > 0

    # --- node invites

    def _invite(self, row: Sequence[Any]) -> NodeInvite:
        invite_id, secret_hash, name, created, expires, used, used_by, extra = row
        decode = self._d.decode_time
        return NodeInvite(
            invite_id=invite_id,
            secret_hash=secret_hash,
            name=name,
            created_at=decode(created),
            expires_at=decode(expires),
            used_at=None if used is None else decode(used),
            used_by=used_by or "",
            extra=_unjson(extra),
        )

    def invites(self) -> list[NodeInvite]:
        rows = self._run(f"SELECT {_INVITE_COLS} FROM node_invites ORDER BY seq")  # noqa: S608
        return [self._invite(row) for row in rows.fetchall()]

    def invite_with_hash(self, secret_hash: str) -> NodeInvite | None:
        row = self._run(
            f"SELECT {_INVITE_COLS} FROM node_invites WHERE secret_hash = ?",  # noqa: S608
            (secret_hash,),
        ).fetchone()
        # Found by the index; confirmed in constant time as the other backends compare.
        if row is None or codes.find_code(secret_hash.upper(), [row[1]]) != 0:
            return None
        return self._invite(row)

    def put_invite(self, invite: NodeInvite) -> None:
        encode = self._d.encode_time
        self._run(
            _PUT_INVITE,
            (
                invite.invite_id,
                invite.secret_hash,
                invite.name,
                encode(invite.created_at),
                encode(invite.expires_at),
                None if invite.used_at is None else encode(invite.used_at),
                invite.used_by or None,
                _json(invite.extra),
            ),
        )

    def spend_invite(self, invite_id: str, *, node_id: str, at: datetime) -> bool:
        when = self._d.encode_time(at)
        cur = self._run(
            "UPDATE node_invites SET used_at = ?, used_by = ? "
            "WHERE invite_id = ? AND used_at IS NULL AND expires_at > ?",
            (when, node_id, invite_id, when),
        )
        return cur.rowcount > 0

    def drop_invite(self, invite_id: str) -> bool:
        cur = self._run("DELETE FROM node_invites WHERE invite_id = ?", (invite_id,))
        return cur.rowcount > 0

    # --- audit

    def audit(self, event: AuditEvent) -> None:
        # Encoded here: an event that cannot be written as JSON fails the body, changing nothing.
        record = json.dumps(audit_record(event), ensure_ascii=False)
        if self._conn is None:
            raise RuntimeError("the transaction has ended; open a new one")
        # Written with the commit (the dialect may send both at once): nothing reads it before.
        self.tail.append((_AUDIT_INSERT, (self._d.encode_time(event.ts), event.event, record)))


_AUDIT_INSERT = "INSERT INTO audit_log (ts, event, record) VALUES (?, ?, ?)"


_AUDIT_PAGE = 512
"""Audit records read per query by :meth:`SqlStore.iter_audit`: its memory, whatever the log."""


class SqlStore(ABC):
    """The :class:`bot.core.protocols.StateStore` of a SQL database; see the module docstring.

    Two connections: the writer runs transactions (one at a time in this process, under a
    thread lock, and one at a time across processes, under the dialect's exclusive begin);
    the reader answers the gate and the audit log, and sees only what is committed. The
    database is opened (created, migrated) on first use, not by the constructor.
    """

    log_keep = 10_000
    """Allowlist-log rows kept: a gate cache fewer changes behind catches up row by row."""
    log_trim_every = 1_000
    """Trim the allowlist log when a change's sequence number is a multiple of this."""

    def __init__(self, dialect: Dialect, where: Path, *, lock_timeout: float) -> None:
        self.dialect = dialect
        self.where = where
        """What errors name: the database file, or where the database is."""
        self.lock_timeout = lock_timeout
        self._txn_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._setup_lock = threading.Lock()
        self._conns: tuple[Connection, Connection] | None = None  # (writer, reader)
        self._allowed: dict[str, set[str]] | None = None
        """Per provider, the cached senders whose grant does not end."""
        self._ends: dict[str, dict[str, datetime]] = {}
        """Per provider, the cached senders whose grant ends, and its end."""
        self._seen = 0  # the last allowlist-log seq applied to _allowed and _ends

    # --- what a backend provides ----------------------------------------------------------

    @abstractmethod
    def _open(self) -> tuple[Connection, Connection]:
        """Open the database, call :meth:`_check_version` and :meth:`_migrate` on the writer,
        and return ``(writer, reader)``."""

    @abstractmethod
    def _close(self, conns: tuple[Connection, Connection]) -> None:
        """Close what :meth:`_open` opened."""

    @abstractmethod
    def _allow_may_have_changed(self, reader: Connection) -> bool:
        """Whether anything may have been committed since the last call (cheap: the gate asks
        on every message). Called under the read lock; True on the first call."""

    def _committed(self, writer: Connection) -> None:  # noqa: B027 (optional)
        """Called after each commit, the write lock still held (nothing by default)."""

    @abstractmethod
    def _translate(self, exc: Exception) -> Exception | None:
        """The :class:`~bot.core.errors.StoreError` a driver error means, naming
        :attr:`where`; None for an exception that is not the driver's."""

    # --- opening ----------------------------------------------------------------------------

    def _connections(self) -> tuple[Connection, Connection]:
        conns = self._conns
        if conns is None:
            with self._setup_lock:
                conns = self._conns
                if conns is None:
                    with self._errors():
                        conns = self._conns = self._open()
        return conns

    def _schema_version(self, conn: Connection) -> int:
        """The schema version the database holds (0 for a new one); reads only."""
        if not self.dialect.table_exists(conn, META_TABLE):
            return 0
        row = conn.execute(self.dialect.sql(_GET_META), (SCHEMA_VERSION_KEY,)).fetchone()
        return 0 if row is None else int(row[0])

    def _check_version(self, conn: Connection) -> int:
        """Return the database's schema version; refuse one newer than this code knows."""
        version = self._schema_version(conn)
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"database schema version {version} is newer than this pairbot's "
                f"({SCHEMA_VERSION})",
                path=self.where,
                hint="upgrade pairbot; the database was left as it is",
            )
        return version

    def _schema_current(self, conn: Connection) -> bool:
        """Whether the database's schema is this code's (refusing a newer one); reads only."""
        return self._check_version(conn) == SCHEMA_VERSION

    def _migrate(self, conn: Connection, *, locked: bool = False) -> None:
        """Bring the schema to :data:`SCHEMA_VERSION`, one numbered migration after the other,
        in one transaction under the write lock. The version is read again under the lock: a
        process that started at the same moment may have done it meanwhile."""
        if self._schema_current(conn):
            return
        if locked:  # the caller holds the write lock already
            self._migrate_locked(conn)
            return
        with self._write_lock():
            self._migrate_locked(conn)

    def _migrate_locked(self, conn: Connection) -> None:
        self.dialect.begin_exclusive(conn)
        try:
            version = self._check_version(conn)
            for step in self.dialect.migrations()[version:]:
                for statement in step:
                    conn.execute(statement)
            if version != SCHEMA_VERSION:  # else another process did it while this one waited
                conn.execute(
                    self.dialect.sql(_SET_META), (SCHEMA_VERSION_KEY, str(SCHEMA_VERSION))
                )
        except BaseException:
            self.dialect.end(conn, commit=False)
            raise
        self.dialect.end(conn, commit=True)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Raise a driver's error as the :class:`StoreError` it means."""
        try:
            yield
        except Exception as exc:
            translated = self._translate(exc)
            if translated is None:
                raise
            raise translated from exc

    # --- transactions -----------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self, *, shared: bool = False) -> Iterator[SqlTxn]:
        """Take the write lock (or, ``shared``, the dialect's shared one) and hand out a view;
        commit on a clean exit, else roll back.

        Waiting longer than ``lock_timeout`` (for another thread of this process, or for
        another process) raises :class:`~bot.core.errors.StoreLockTimeoutError`.
        """
        writer, _ = self._connections()
        with self._write_lock(), self._errors():
            if shared:
                peers = self.dialect.begin_shared(writer)
            else:
                self.dialect.begin_exclusive(writer)
                peers = 0
            txn = SqlTxn(writer, self, peers=peers)
            try:
                yield txn
            except BaseException:
                txn.end()
                with contextlib.suppress(Exception):
                    self.dialect.end(writer, commit=False)
                raise
            txn.end()
            try:
                self.dialect.commit(writer, txn.tail)
            except BaseException:
                with contextlib.suppress(Exception):
                    self.dialect.end(writer, commit=False)
                raise
            with contextlib.suppress(Exception):  # committed: nothing after it may deny that
                self._committed(writer)

    @contextlib.contextmanager
    def _write_lock(self) -> Iterator[None]:
        """Hold this process's turn to write: one transaction at a time among its threads.

        Across processes the dialect's exclusive begin decides; a backend whose database
        does not queue its waiters fairly queues them here too (SQLite).
        """
        if not self._txn_lock.acquire(timeout=self.lock_timeout):
            raise StoreLockTimeoutError(
                f"state lock busy in this process for over {self.lock_timeout:g}s",
                path=self.where,
                hint="a transaction is open in another thread, or this one opened one inside it",
            )
        try:
            yield
        finally:
            self._txn_lock.release()

    # --- the gate ---------------------------------------------------------------------------

    def allowed_until(self, provider: str, sender_id: str) -> datetime | None:
        """Answer from the cached allowlists; catch up first if anything was committed.

        Thread-safe: the gate may ask from the event loop while transactions run in worker
        threads (they use the other connection).
        """
        _, reader = self._connections()
        with self._read_lock:
            try:
                if self._allow_may_have_changed(reader) or self._allowed is None:
                    self._catch_up(reader)
            except Exception as exc:
                translated = self._translate(exc)
                if translated is None:
                    raise
                raise translated from exc
            allowed = self._allowed.get(provider) if self._allowed is not None else None
        if allowed is None:
            raise unknown_provider(provider)
        if sender_id in allowed:  # for good: the one lookup this costs, as before ends
            return FOREVER
        ends = self._ends.get(provider)
        return ends.get(sender_id) if ends else None

    def pending_epoch(self, provider: str) -> int:
        """Always 0: a database has no marker of its pending requests as cheap as a ``stat``
        (a rejection by another process is not seen by a pending stranger's quiet memory
        until it runs out: at the next reminder)."""
        check_provider(provider)
        return 0

    def allowed_soon(self, provider: str, sender_id: str) -> datetime | None:
        """:meth:`allowed_until`: a change costs the gate a small indexed read of the log,
        not a reload, so it is made on the caller's thread."""
        return self.allowed_until(provider, sender_id)

    def _catch_up(self, reader: Connection) -> None:
        """Apply the allowlist log from the last change applied, in one read transaction; or
        reload the allowlists whole if there is no cache yet or the log was trimmed past it."""
        d = self.dialect
        d.begin_read(reader)
        try:
            row = reader.execute(d.sql(_GET_META), (LOG_FLOOR_KEY,)).fetchone()
            floor = 0 if row is None else int(row[0])
            allowed = self._allowed
            if allowed is None or self._seen < floor:
                self._allowed, self._ends, self._seen = self._load_allowed(reader, floor)
            else:
                changes = reader.execute(
                    d.sql(
                        "SELECT seq, provider, sender_id, added, ends_at FROM allowlist_log "
                        "WHERE seq > ? ORDER BY seq"
                    ),
                    (self._seen,),
                ).fetchall()
                for seq, provider, sender_id, added, end in changes:
                    ids = allowed.setdefault(provider, set())
                    ends = self._ends.setdefault(provider, {})
                    ids.discard(sender_id)  # a sender is in one of the two, or neither
                    ends.pop(sender_id, None)
                    if added and sender_id not in NEVER_ALLOWED:
                        if end is None:
                            ids.add(sender_id)
                        else:
                            ends[sender_id] = d.decode_time(end)
                    self._seen = seq
        finally:
            d.end(reader, commit=False)

    def _load_allowed(
        self, reader: Connection, floor: int
    ) -> tuple[dict[str, set[str]], dict[str, dict[str, datetime]], int]:
        d = self.dialect
        last = reader.execute(d.sql("SELECT MAX(seq) FROM allowlist_log")).fetchone()[0]
        allowed: dict[str, set[str]] = {name: set() for name in KNOWN_PROVIDERS}
        ends: dict[str, dict[str, datetime]] = {name: {} for name in KNOWN_PROVIDERS}
        for provider in KNOWN_PROVIDERS:
            rows = reader.execute(
                d.sql("SELECT sender_id FROM allowlist WHERE provider = ?"), (provider,)
            )
            everyone = {row[0] for row in rows} - NEVER_ALLOWED
            ending = reader.execute(
                d.sql(
                    "SELECT sender_id, ends_at FROM allowlist "
                    "WHERE provider = ? AND ends_at IS NOT NULL"
                ),
                (provider,),
            )
            timed = {s: d.decode_time(end) for s, end in ending if s not in NEVER_ALLOWED}
            allowed[provider] = everyone - timed.keys() if timed else everyone
            ends[provider] = timed
        return allowed, ends, max(floor, 0 if last is None else int(last))

    # --- the audit log ----------------------------------------------------------------------

    def read_audit(self, *, limit: int | None = None) -> list[dict[str, object]]:
        """Return the last ``limit`` audit records (all when None), oldest first."""
        return list(self.iter_audit(limit=limit))

    def iter_audit(self, *, limit: int | None = None) -> Iterator[dict[str, object]]:
        """Yield the last ``limit`` audit records (all when None), oldest first.

        Read a page at a time by sequence number, with no transaction held between pages: the
        memory used does not grow with the log, and records committed after the first one is
        asked for are left out.
        """
        if limit is not None and limit <= 0:
            return
        d = self.dialect
        with self._reading() as reader:
            end = reader.execute(d.sql("SELECT MAX(seq) FROM audit_log")).fetchone()[0]
            if end is None:
                return
            after = 0
            if limit is not None:
                row = reader.execute(
                    d.sql(
                        "SELECT seq FROM audit_log WHERE seq <= ? ORDER BY seq DESC "
                        "LIMIT 1 OFFSET ?"
                    ),
                    (end, limit - 1),
                ).fetchone()
                after = 0 if row is None else int(row[0]) - 1
        while after < end:
            with self._reading() as reader:
                page = reader.execute(
                    d.sql(
                        "SELECT seq, record FROM audit_log WHERE seq > ? AND seq <= ? "
                        "ORDER BY seq LIMIT ?"
                    ),
                    (after, end, _AUDIT_PAGE),
                ).fetchall()
            if not page:
                return
            for _, record in page:
                yield json.loads(record)
            after = int(page[-1][0])

    def audit_since(
        self, position: str | None, *, limit: int = _AUDIT_PAGE, skip_gap: bool = False
    ) -> AuditPage:
        """The records after ``position`` (a sequence number), up to the first gap.

        Sequence numbers are handed out as records are inserted, before their transaction
        commits: a record may be seen while one numbered before it is still to come (or never
        comes: its transaction rolled back). The page stops at such a gap and says so.
        """
        d = self.dialect
        with self._reading() as reader:
            last = reader.execute(d.sql("SELECT MAX(seq) FROM audit_log")).fetchone()[0]
            last = 0 if last is None else int(last)
            if position is None:
                return AuditPage(records=[], end=str(last))
            after = int(position) if position.isdigit() else 0
            after = after if after <= last else 0
            rows = reader.execute(
                d.sql("SELECT seq, record FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?"),
                (after, max(limit, 0)),
            ).fetchall()
        records: list[tuple[str, dict[str, Any]]] = []
        gap = False
        for seq, record in rows:
            if int(seq) != after + 1:
                if not skip_gap:
                    gap = True
                    break
                skip_gap = False  # only the first gap
            after = int(seq)
            records.append((str(after), json.loads(record)))
        return AuditPage(
            records=records, end=str(after), more=not gap and len(rows) >= limit, gap=gap
        )

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Connection]:
        _, reader = self._connections()
        with self._read_lock, self._errors():
            yield reader

    # --- the providers' cursors (outside the pairing transactions) --------------------------

    def cursor(self, key: str) -> str | None:
        """Return the value last saved under ``key``, or None if none was."""
        with self._reading() as reader:
            row = reader.execute(self.dialect.sql(_GET_CURSOR), (key,)).fetchone()
        return None if row is None else str(row[0])

    def save_cursor(self, key: str, value: str) -> None:
        """Store ``value`` under ``key`` in a transaction of its own: durable on return."""
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError("a cursor's key and value are strings")
        with self.transaction() as txn:
            txn._run(_PUT_CURSOR, (key, value))

    # --- the rest of the protocol -----------------------------------------------------------

    @abstractmethod
    def check(self) -> None:
        """Raise a :class:`~bot.core.errors.StoreError` if the database cannot be used."""

    def _holds(self, where: Path) -> bool:
        """Whether a :class:`~bot.core.errors.StoreError`'s ``path`` names this database."""
        return where == self.where

    def recheck(self, where: Path) -> bool:
        """True if ``where`` is this database (:meth:`_holds`) and it still cannot be used."""
        if not self._holds(where):
            return False
        try:
            self.check()
        except StoreError:
            return True
        return False

    def close(self) -> None:
        """Close the connections; the next use opens them again."""
        with self._setup_lock, self._read_lock:
            conns, self._conns = self._conns, None
            self._allowed = None
            self._ends = {}
            self._seen = 0
            if conns is not None:
                self._close(conns)
