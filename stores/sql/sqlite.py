"""The SQLite store: the state of one machine, at any size, in one file (stdlib :mod:`sqlite3`).

What is SQLite's own here (the rest is :mod:`stores.sql.base`):

- durability: WAL mode and ``synchronous = FULL`` (each commit is fsynced in the WAL before
  the transaction returns), so a ``kill -9`` or a power cut after a commit loses nothing;
- the write lock: ``BEGIN IMMEDIATE`` takes SQLite's write lock at the start of every
  transaction, so transactions are one at a time across processes. SQLite's busy handler
  polls (sleeping up to 100 ms between tries), so a process that commits and begins again at
  once keeps the lock from the others for as long as it likes: waiters therefore first queue
  in the kernel on ``<db>.lock`` (the JSON store's :class:`~stores._files.StateLock`, a
  ``flock``), and ``BEGIN IMMEDIATE`` then finds the database free unless something else (the
  ``sqlite3`` shell) writes to it. Either wait longer than the lock timeout (SQLite's busy
  timeout too) raises :class:`~bot.core.errors.StoreLockTimeoutError`. The kernel and SQLite
  release the locks of a process that dies, so a killed writer blocks nobody;
- the change check of the gate: ``PRAGMA data_version`` on the reader connection, which
  changes when any other connection (this process's writer included) commits;
- privacy: the file is created 0600 in a 0700 dir before SQLite opens it, and SQLite gives its
  ``-wal`` and ``-shm`` files the database file's mode.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from bot.core.errors import StoreCorruptError, StoreError, StoreLockTimeoutError
from stores._files import (
    FILE_MODE,
    StateLock,
    access_report,
    ensure_private_dir,
    file_type,
    os_error,
)
from stores.sql.base import Connection, Dialect, SqlStore

_CORRUPT_HINT = "pairbot left it as it is; restore it from a backup or move it away"


class SqliteDialect(Dialect):
    """SQLite's words: ``?``, ``INTEGER PRIMARY KEY`` (the rowid), ``BEGIN IMMEDIATE``."""

    def begin_exclusive(self, conn: Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def table_exists(self, conn: Connection, name: str) -> bool:
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return found is not None


class SqliteStore(SqlStore):
    """The state in one SQLite database file (default ``<state dir>/pairbot.db``)."""

    def __init__(self, path: Path, *, lock_timeout: float = 10.0) -> None:
        path = Path(path).expanduser().absolute()
        super().__init__(SqliteDialect(), path, lock_timeout=lock_timeout)
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self._lock = StateLock(self.lock_path, timeout=lock_timeout)
        self._data_version: int | None = None

    def files(self) -> list[Path]:
        """The database file and the two SQLite keeps beside it in WAL mode."""
        return [self.path, *(self.path.with_name(self.path.name + s) for s in ("-wal", "-shm"))]

    # --- opening ----------------------------------------------------------------------------

    def _open(self) -> tuple[Connection, Connection]:
        ensure_private_dir(self.path.parent)
        self._create_file()
        writer = self._connect()
        try:
            writer.execute("PRAGMA synchronous = FULL")
            # Before anything is written: a newer schema is refused, and left as it is.
            if not self._schema_current(writer) or not self._in_wal_mode(writer):
                # A new or older database: made ready by one process at a time. (Switching to
                # WAL while another process reads can fail at once, without a busy wait.)
                with self._write_lock():
                    self._check_version(writer)
                    mode = writer.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                    if str(mode).lower() != "wal":
                        raise StoreError(f"cannot use WAL mode ({mode})", path=self.path)
                    self._migrate(writer, locked=True)
            reader = self._connect()
            reader.execute("PRAGMA query_only = 1")
        except BaseException:
            writer.close()
            raise
        return writer, reader

    @staticmethod
    def _in_wal_mode(conn: Connection) -> bool:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"

    def _create_file(self) -> None:
        """Create the database file 0600 (SQLite would use the umask's mode)."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        except FileExistsError:
            return
        except OSError as exc:
            raise os_error(exc, self.path, "cannot be created") from exc
        os.close(fd)

    def _connect(self, *, read_only: bool = False) -> sqlite3.Connection:
        target = f"file:{quote(str(self.path))}{'?mode=ro' if read_only else ''}"
        return sqlite3.connect(
            target,
            uri=True,
            timeout=self.lock_timeout,  # the busy timeout: how long BEGIN IMMEDIATE waits
            isolation_level=None,  # autocommit: the layer begins and ends transactions itself
            check_same_thread=False,  # used from worker threads, one at a time (the locks)
        )

    def _close(self, conns: tuple[Connection, Connection]) -> None:
        self._data_version = None
        for conn in conns:
            if isinstance(conn, sqlite3.Connection):
                conn.close()

    @contextlib.contextmanager
    def _write_lock(self) -> Iterator[None]:
        # The kernel's queue first: fair among processes, dropped with a dead holder.
        with self._lock.hold():
            yield

    def _committed(self, writer: Connection) -> None:
        # A read right after the commit takes a WAL read mark at the new end of the log, so
        # the reads that follow (the gate, a listing command) find one and write nothing, not
        # even to the -shm file.
        writer.execute("BEGIN")
        try:
            writer.execute("SELECT 1 FROM pairbot_meta LIMIT 1").fetchone()
        finally:
            writer.execute("COMMIT")

    # --- the gate's change check ------------------------------------------------------------

    def _allow_may_have_changed(self, reader: Connection) -> bool:
        version = reader.execute("PRAGMA data_version").fetchone()[0]
        if version == self._data_version:
            return False
        self._data_version = version
        return True

    # --- errors -----------------------------------------------------------------------------

    def _translate(self, exc: Exception) -> Exception | None:
        if not isinstance(exc, sqlite3.Error):
            return None
        code = getattr(exc, "sqlite_errorcode", None)
        primary = None if code is None else code & 0xFF
        if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return StoreLockTimeoutError(
                f"another process held the database lock for over {self.lock_timeout:g}s",
                path=self.path,
                hint="another pairbot command or the bot is writing; try again",
            )
        if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            return StoreCorruptError(
                f"not a usable SQLite database: {exc}", path=self.path, hint=_CORRUPT_HINT
            )
        if primary == sqlite3.SQLITE_CANTOPEN:
            return StoreError(f"cannot be opened: {exc}", path=self.path)
        if isinstance(exc, sqlite3.IntegrityError):
            return StoreError(f"the database refused the change: {exc}", path=self.path)
        return StoreError(f"database error: {exc}", path=self.path)

    # --- health -----------------------------------------------------------------------------

    def check(self) -> None:
        """Raise if the database cannot be used: not a regular file, not a SQLite database,
        damaged (``PRAGMA quick_check``), or of a newer schema. Read-only: changes nothing; a
        database not made yet is fine (it is made on first use)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise os_error(exc, self.path, "cannot be used") from exc
        if not stat.S_ISREG(st.st_mode):
            raise StoreError(f"is {file_type(st)}, not a database file", path=self.path)
        if st.st_size == 0:
            return  # made by a first use that stopped before its first commit
        with self._errors():
            conn = self._connect(read_only=True)
            try:
                self._check_version(conn)
                problems = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
            finally:
                conn.close()
        if problems != ["ok"]:
            raise StoreCorruptError(f"damaged: {problems[0]}", path=self.path, hint=_CORRUPT_HINT)

    def _holds(self, where: Path) -> bool:
        """The database, or one of its files (``-wal``, ``-shm``)."""
        return where in self.files()

    def access_report(self) -> list[tuple[bool, str]]:
        """The modes and owners of the database's dir and files (every one must be private)."""
        return access_report([self.path.parent, *self.files(), self.lock_path])
