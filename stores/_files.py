"""Durable file primitives: atomic writes, private modes, the cross-process lock, debris.

Every state file pairbot writes is a temp file in the same directory, ``fsync``ed, renamed
over the target, and the directory ``fsync``ed: alone (:func:`atomic_write`), or with the other
files and the audit lines of one transaction (:func:`stage`, then :func:`commit`, which a
writer killed midway leaves for the next one to :func:`finish`). The lock is a kernel
``flock`` (taken with :mod:`fcntl`), so a writer killed with ``kill -9`` releases it at once and
the next writer never waits on a stale lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from bot.core.errors import StoreError, StoreLockTimeoutError

log = logging.getLogger(__name__)

FILE_MODE = 0o600
DIR_MODE = 0o700
TEMP_SUFFIX = ".pairbot-tmp"

FileKey = tuple[int, int, int]
"""(inode, size, mtime in ns) of a state file: changes on every write pairbot makes."""


def file_key(st: os.stat_result) -> FileKey:
    """Return the identity of one version of a file, from its stat."""
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) as 0700, and bring an existing dir down to 0700.

    Raises:
        StoreError: ``path`` is a file, or cannot be created or changed (named, one line).
    """
    try:
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode != DIR_MODE:
            if mode & 0o077:
                log.warning("state dir %s was mode %o; set to 0700", path, mode)
            path.chmod(DIR_MODE)
    except FileExistsError:  # mkdir(exist_ok=True) raises it only for a non-directory
        raise StoreError(
            "is not a directory", path=path, hint="pairbot keeps its state in a directory here"
        ) from None
    except OSError as exc:
        raise os_error(exc, path, "cannot be created or used") from exc


def os_error(exc: OSError, path: Path, what: str) -> StoreError:
    """Turn an ``OSError`` on ``path`` into the one-line :class:`StoreError` naming it.

    ``ENOTDIR`` (a file where a parent directory should be) names that file too.
    """
    if isinstance(exc, NotADirectoryError):
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            return StoreError(f"{what}: {blocker} is not a directory", path=path)
    return StoreError(f"{what}: {exc.strerror or exc}", path=path)


def atomic_write(path: Path, data: bytes, *, after: FileKey | None = None) -> FileKey:
    """Replace ``path`` with ``data`` durably and atomically; return the new file's key.

    ``after`` is the key of the version being replaced: the new file's mtime is set strictly
    later than it, so two writes never share a key even when the filesystem's clock is coarse
    and the inode number is reused (readers rely on the key to notice changes).
    """
    tmp, st = _private_temp(path, data, after)
    try:
        os.replace(tmp, path)  # a rename keeps the inode and its mtime: the key holds
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)
    return file_key(st)


def _private_temp(path: Path, data: bytes, after: FileKey | None) -> tuple[Path, os.stat_result]:
    """Write ``data`` to a new temp file beside ``path``, 0600 and fsynced; return it and its
    stat (its mtime later than ``after``'s, if given). Nothing is left behind on a failure."""
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        try:
            os.fchmod(fd, FILE_MODE)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            st = os.fstat(fd)
            if after is not None and st.st_mtime_ns <= after[2]:
                mtime = after[2] + 1
                os.utime(fd, ns=(mtime, mtime))
                st = os.fstat(fd)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp, st


@contextlib.contextmanager
def staged(path: Path, data: bytes) -> Iterator[Path]:
    """``data`` in a private temp file beside ``path`` (0600, fsynced), for the block to check
    before :func:`place` puts it at ``path``; removed on the way out if it was not placed."""
    tmp, _ = _private_temp(path, data, None)
    try:
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def place(tmp: Path, path: Path, *, replace: bool) -> None:
    """Move a :func:`staged` file to ``path`` atomically, then flush the directory.

    ``replace`` False never touches what is at ``path`` (a file, a directory, a symlink, even
    a dangling one): a hard link cannot be made over anything, so it fails with
    ``FileExistsError`` with no window between a check and the write. Where the filesystem
    has no hard links, the check is made just before a rename instead.
    """
    if replace:
        os.replace(tmp, path)
    else:
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:  # no hard links here (EPERM, ENOTSUP): check, then rename
            if os.path.lexists(path):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
            os.replace(tmp, path)
        else:
            tmp.unlink()
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry change (a rename) to disk."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def append_durably(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` (created 0600), then fsync it (and, if this created it, its
    directory).

    Raises ``OSError`` if ``path`` is anything but a regular file (a FIFO is refused at once,
    never waited on).
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NONBLOCK
    created = False
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        fd = os.open(path, flags | os.O_CREAT, FILE_MODE)
        created = True
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"is {file_type(st)}, not a regular file")
        if stat.S_IMODE(st.st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_dir(path.parent)


def read_versioned(path: Path) -> tuple[FileKey, bytes] | None:
    """Read a whole file and the key of exactly the version read; None if it does not exist.

    Raises:
        StoreError: ``path`` is not a regular file (a directory, a FIFO: never waited on) or
            cannot be read; the message names it.
    """
    opened = _open_regular(path)
    if opened is None:
        return None
    fd, st = opened
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return file_key(st), b"".join(chunks)
    except OSError as exc:
        raise os_error(exc, path, "cannot be read") from exc
    finally:
        os.close(fd)


def check_readable(path: Path) -> None:
    """Raise what :func:`read_versioned` would about ``path``, without reading it."""
    opened = _open_regular(path)
    if opened is not None:
        os.close(opened[0])


def open_for_reading(path: Path) -> int | None:
    """Open a state file read-only if it is a regular file; None if it does not exist.

    Raises:
        StoreError: as :func:`read_versioned` does.
    """
    opened = _open_regular(path)
    return None if opened is None else opened[0]


def _open_regular(path: Path) -> tuple[int, os.stat_result] | None:
    """Open ``path`` for reading if it is a regular file; None if it does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except PermissionError as exc:
        raise StoreError(
            "cannot be read by this user",
            path=path,
            hint=f"owned by uid {_owner(path)}; chown it to uid {os.getuid()} or run as its owner",
        ) from exc
    except OSError as exc:
        raise os_error(exc, path, "cannot be read") from exc
    try:
        st = os.fstat(fd)
        check_regular(path, st)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def check_regular(path: Path, st: os.stat_result) -> None:
    """Raise :class:`StoreError` unless ``st`` (of ``path``) is a regular file."""
    if not stat.S_ISREG(st.st_mode):
        raise StoreError(
            f"is {file_type(st)}, not a regular file",
            path=path,
            hint="pairbot left it as it is; move it away",
        )


def file_type(st: os.stat_result) -> str:
    """Name what kind of file ``st`` describes: "a directory", "a FIFO", ..."""
    for test, name in (
        (stat.S_ISREG, "a file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(st.st_mode):
            return name
    return "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "special"


def last_lines_offset(file: BinaryIO, count: int, *, block: int = 1 << 16) -> int:
    """Return where the last ``count`` lines of ``file`` start, reading back from its end.

    A final newline ends the last line rather than starting an empty one. Reads only the
    blocks that hold those lines, so the cost follows ``count``, not the file's size.
    """
    end = file.seek(0, os.SEEK_END)
    if end and count > 0:
        file.seek(end - 1)
        if file.read(1) == b"\n":
            end -= 1
    position, wanted = end, count
    while position > 0 and wanted > 0:
        start = max(0, position - block)
        file.seek(start)
        chunk = file.read(position - start)
        found = chunk.count(b"\n")
        if found >= wanted:
            cut = len(chunk)
            for _ in range(wanted):
                cut = chunk.rindex(b"\n", 0, cut)
            return start + cut + 1
        wanted -= found
        position = start
    return 0 if count > 0 else file.seek(0, os.SEEK_END)


def stat_key(path: str | Path) -> FileKey | None:
    """Return the key of the file now at ``path``, or None if there is none (one ``stat``)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise os_error(exc, Path(path), "cannot be read") from exc
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def remove_debris(directory: Path) -> int:
    """Delete temp files left by writers that died mid-write; call only under the lock."""
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            if entry.name.endswith(TEMP_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    if removed:
        log.info("removed %d stray temp file(s) from %s", removed, directory)
    return removed


def _owner(path: Path) -> str:
    try:
        return str(path.stat().st_uid)
    except OSError:
        return "?"


class StateLock:
    """The state dir's exclusive lock: in-process (threads) and cross-process (``flock``).

    ``flock`` is taken directly with :mod:`fcntl` on a descriptor opened per hold: the
    kernel drops it the moment the holder dies (even by ``kill -9``), so a lock is never
    stale. The descriptor is close-on-exec and never shared with another hold.

    An uncontended hold costs one ``open``, two ``flock`` and one ``close``. When the lock is
    busy the waiter queues in the kernel (a blocking ``flock`` in a helper thread, so the wait
    can end at the timeout) instead of polling: with polling, a busy writer that releases and
    re-takes the lock at once can starve a poller (an owner's approval) indefinitely.
    """

    __slots__ = ("_path", "_thread_lock", "_timeout")

    def __init__(self, path: Path, *, timeout: float = 10.0) -> None:
        self._path = path
        self._timeout = timeout
        self._thread_lock = threading.Lock()

    @property
    def path(self) -> Path:
        """The lock file (kept on disk; every process locks the same inode)."""
        return self._path

    @contextlib.contextmanager
    def hold(self) -> Iterator[Held]:
        """Hold the lock for the duration of the ``with`` block; the :class:`Held` lock
        carries the journal of a commit its last holder did not finish (see :func:`commit`)."""
        deadline = time.monotonic() + self._timeout
        if not self._thread_lock.acquire(timeout=self._timeout):
            raise StoreLockTimeoutError(
                f"state lock busy in this process for over {self._timeout:g}s", path=self._path
            )
        try:
            fd = self._acquire(deadline)
            try:
                try:
                    held = Held(fd)
                except OSError as exc:
                    raise os_error(exc, self._path, "lock file cannot be read") from exc
                yield held
            finally:
                try:  # unlock explicitly: a child forked meanwhile may share the descriptor
                    fcntl.flock(fd, fcntl.LOCK_UN)
                finally:
                    os.close(fd)
        finally:
            self._thread_lock.release()

    def _acquire(self, deadline: float) -> int:
        """Return a descriptor of the lock file that holds the ``flock``."""
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in _CONTENDED:
                os.close(fd)
                raise os_error(exc, self._path, "lock file cannot be locked") from exc
        else:
            return fd
        queued = _QueuedFlock(fd)  # owns fd from here on
        if queued.wait(deadline - time.monotonic()):
            return fd
        raise StoreLockTimeoutError(
            f"another process held the state lock for over {self._timeout:g}s",
            path=self._path,
            hint="another pairbot is busy or stuck; the lock frees when it exits",
        )

    def _open(self) -> int:
        # O_NOFOLLOW: a symlinked lock would let whoever planted it have pairbot open, or
        # create, a file of their choosing with pairbot's rights.
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            fd = os.open(self._path, flags, FILE_MODE)
        except PermissionError as exc:
            raise StoreError(
                "lock file cannot be opened by this user",
                path=self._path,
                hint=f"owned by uid {_owner(self._path)}; run pairbot as that user",
            ) from exc
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StoreError(
                    "lock file is a symlink; pairbot does not follow it",
                    path=self._path,
                    hint="remove it; pairbot makes a new one",
                ) from exc
            raise os_error(exc, self._path, "lock file cannot be opened") from exc
        try:
            st = os.fstat(fd)
            check_regular(self._path, st)
            if stat.S_IMODE(st.st_mode) != FILE_MODE:
                os.fchmod(fd, FILE_MODE)
        except BaseException:
            os.close(fd)
            raise
        return fd


class Held:
    """The state lock as held, and the journal of a commit kept in the lock file.

    A commit that changes more than one thing (several files; a file and its log lines)
    writes what it is about to do into the lock file first and empties it when done, so
    the next holder finds a commit its writer did not finish (killed) and finishes it
    (:func:`finish`). The journal is not fsynced: a killed process loses nothing the kernel
    holds, and a power cut is covered by the order of the writes instead (see
    :func:`commit`). An empty lock file is the normal case: one ``fstat`` says so.
    """

    __slots__ = ("_fd", "journal")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        size = os.fstat(fd).st_size
        self.journal = os.pread(fd, size, 0) if size else b""
        """What the last holder left in the lock file (empty: it finished)."""

    def note(self, journal: bytes) -> None:
        """Write ``journal`` into the lock file, in place of what it held."""
        view, at = memoryview(journal), 0
        while at < len(view):
            at += os.pwrite(self._fd, view[at:], at)
        if len(self.journal) > len(journal):
            os.ftruncate(self._fd, len(journal))
        self.journal = journal

    def clear(self) -> None:
        """Empty the lock file: nothing left to finish."""
        if self.journal:
            os.ftruncate(self._fd, 0)
            self.journal = b""


@dataclasses.dataclass(frozen=True, slots=True)
class Staged:
    """A file's new version, written and fsynced beside it, not yet in its place."""

    path: Path
    tmp: Path
    key: FileKey
    """The key the file has once in place (a rename keeps inode, size and mtime)."""
    before: FileKey | None
    """The key of the version it replaces (None: there is none): a commit finished by
    another process puts it in place only over that version."""


def stage(path: Path, data: bytes, *, after: FileKey | None) -> Staged:
    """Write ``data`` beside ``path`` (0600, fsynced) for :func:`commit` to put in place;
    ``after`` is the key of the version it will replace (its mtime is set later than it)."""
    tmp, st = _private_temp(path, data, after)
    return Staged(path=path, tmp=tmp, key=file_key(st), before=after)


def unstage(staged: Iterable[Staged]) -> None:
    """Remove staged files that will not be put in place."""
    for one in staged:
        with contextlib.suppress(OSError):
            one.tmp.unlink()


@dataclasses.dataclass(frozen=True, slots=True)
class Finished:
    """What :func:`finish` did with a commit its writer did not finish."""

    lines: bytes
    """The log lines of that commit (now all in the log, once each)."""
    already: int
    """Files the writer had put in place."""
    placed: int
    """Files it put in place that the writer had not."""
    refused: int
    """Files it could not put in place (another writer changed the file since, or the
    rename failed), nor any after them."""
    first_refused: Path | None = None
    """The first of those."""
    error: OSError | None = None
    """Why it could not be put in place, if a rename failed."""


_JOURNAL = b"pairbot-commit 1 "


def commit(
    held: Held,
    staged: Sequence[Staged],
    log: Path,
    lines: bytes,
    *,
    on_log_error: Callable[[OSError], None],
) -> Finished | None:
    """Put ``staged`` files in place, in order, and append ``lines`` to ``log`` (fsynced),
    as one step that no crash splits; None when it went through as planned.

    The commit point is the journal (in the lock file): once it is written, the commit is
    finished, by this process or, if it is killed, by the next holder of the lock
    (:func:`finish`), so after a ``kill -9`` the log never claims a change that is not on
    disk. The lines go before the files: a change is never on disk without its lines, even
    after a power cut (the lines' fsync returns before the first rename). Each directory is
    fsynced once, after its last rename.

    A failed append is handed to ``on_log_error`` and the files still go in place (the
    change is not undone for want of its lines). A failed rename is tried once more by
    :func:`finish`, whose :class:`Finished` is returned (``refused``: files not in place).
    An interrupt (``KeyboardInterrupt``) after the commit point finishes the commit before
    it goes on.
    """
    journaled = bool(lines) or len(staged) > 1
    if journaled:
        held.note(_journal(staged, log, lines))  # before the append: it says where it goes
    if lines:
        try:
            append_durably(log, lines)
        except OSError as exc:
            on_log_error(exc)
    try:
        for one in staged:
            os.replace(one.tmp, one.path)
    except OSError as exc:
        if not journaled:
            unstage(staged)
            return Finished(
                lines=b"", already=0, placed=0, refused=1, first_refused=staged[0].path, error=exc
            )
        return finish(held, error=exc)
    except BaseException:
        if journaled:
            finish(held)
        else:
            unstage(staged)
        raise
    for directory in dict.fromkeys(one.path.parent for one in staged):
        fsync_dir(directory)
    held.clear()
    return None


def _journal(staged: Sequence[Staged], log: Path, lines: bytes) -> bytes:
    """The journal of a commit: the files to place, over which versions; the log lines and
    where in the log they go."""
    at, inode = 0, None
    if lines:
        try:
            st = os.stat(log)
        except FileNotFoundError:
            pass
        else:
            at, inode = st.st_size, st.st_ino
    body = json.dumps(
        {
            "files": [[str(s.tmp), str(s.path), s.before] for s in staged],
            "log": str(log),
            "at": at,
            "inode": inode,
            "lines": lines.decode(),
        }
    ).encode()
    return _JOURNAL + str(len(body)).encode() + b"\n" + body


def finish(held: Held, *, error: OSError | None = None) -> Finished | None:
    """Finish the commit whose journal ``held`` carries, if any; None if there was none.

    Its lines are made whole in the log (appended, or the rest of a torn append: never
    twice). Its files are put in place in order, each only if its file is still the version
    it replaces (else another writer changed it meanwhile, which is kept), and none after
    the first that cannot be; staged files not placed are removed. A journal torn by a
    crash while it was written is from before anything changed: dropped. ``error`` is the
    rename failure that made this process finish its own commit, if that is the case.
    """
    journal = _read_journal(held.journal)
    if journal is None:
        held.clear()
        return None
    lines = journal["lines"].encode()
    if lines:
        try:
            _complete_lines(Path(journal["log"]), lines, journal["at"], journal["inode"])
        except OSError as exc:
            log.warning(
                "%s: audit lines of an unfinished commit not written: %s",
                journal["log"],
                exc.strerror or exc,
            )
    already, placed, refused, first_refused = 0, 0, 0, None
    for tmp, path, before in journal["files"]:
        tmp_path, target = Path(tmp), Path(path)
        if not os.path.lexists(tmp_path):
            already += 1  # put in place before the crash
            continue
        if not refused and stat_key(target) == (tuple(before) if before else None):
            try:
                os.replace(tmp_path, target)
            except OSError as exc:
                error = exc
            else:
                placed += 1
                continue
        refused += 1
        first_refused = first_refused or target
        with contextlib.suppress(OSError):
            tmp_path.unlink()
    for directory in dict.fromkeys(Path(path).parent for _, path, _ in journal["files"]):
        with contextlib.suppress(OSError):
            fsync_dir(directory)
    held.clear()
    return Finished(
        lines=lines,
        already=already,
        placed=placed,
        refused=refused,
        first_refused=first_refused,
        error=error,
    )


def _read_journal(raw: bytes) -> dict[str, Any] | None:
    """The journal in ``raw``, or None if it is empty or torn."""
    head, newline, body = raw.partition(b"\n")
    if not head.startswith(_JOURNAL) or not newline:
        return None
    length = head[len(_JOURNAL) :]
    if not length.isdigit() or int(length) != len(body):
        return None
    try:
        journal = json.loads(body)
    except ValueError:
        return None
    return journal if isinstance(journal, dict) else None


def _complete_lines(log: Path, lines: bytes, at: int, inode: int | None) -> None:
    """Make ``lines`` the end of ``log``, once: all of them, or what a torn append left out.

    The commit appended them at offset ``at`` of the file ``inode`` (None: there was no log
    yet) under the lock, so from ``at`` the log holds all of them, a first part (a ``kill
    -9`` can cut a write short), or nothing. Anything else there (another file, a shorter
    one) gets them whole, on a line of their own.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NONBLOCK
    fd = os.open(log, flags, FILE_MODE)
    try:
        st = os.fstat(fd)
        check_regular(log, st)
        size = st.st_size
        rest = lines
        same = inode is None or st.st_ino == inode
        if same and at <= size <= at + len(lines):
            written = os.pread(fd, size - at, at)
            if lines.startswith(written):
                rest = lines[len(written) :]
        if rest is lines and size and os.pread(fd, 1, size - 1) != b"\n":
            rest = b"\n" + lines  # end a line torn by something else: ours stand whole
        if rest:
            _write_all(fd, rest)
            os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _QueuedFlock:
    """A blocking ``flock`` in a daemon thread, which the caller can stop waiting for.

    If the caller gives up, the thread closes the descriptor as soon as its ``flock``
    returns, which releases the lock it got (or never got) at once.
    """

    __slots__ = ("_abandoned", "_done", "_error", "_fd", "_guard")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._guard = threading.Lock()
        self._done = threading.Event()
        self._abandoned = False
        self._error: OSError | None = None
        thread = threading.Thread(target=self._run, name="pairbot-state-lock", daemon=True)
        try:
            thread.start()
        except BaseException:
            if thread.ident is None:  # never ran: nothing else will close the descriptor
                os.close(fd)
            else:
                self._give_up()
            raise

    def _run(self) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except OSError as exc:
            self._error = exc
        with self._guard:
            if self._abandoned or self._error is not None:
                os.close(self._fd)
            self._done.set()

    def wait(self, timeout: float) -> bool:
        """Return True once the lock is held; False (and abandon it) after ``timeout``.

        If the wait itself is interrupted (Ctrl-C), the lock is given up either way.
        """
        try:
            self._done.wait(max(timeout, 0.0))
        except BaseException:
            self._give_up()
            raise
        with self._guard:
            if not self._done.is_set():
                self._abandoned = True
                return False
        if self._error is not None:
            raise self._error
        return True

    def _give_up(self) -> None:
        """Make sure the lock ends up released, whether the thread has got it yet or not."""
        with self._guard:
            if not self._done.is_set():
                self._abandoned = True  # the thread closes the descriptor when flock returns
            elif self._error is None:
                os.close(self._fd)  # got it just now, but nobody would release it


_CONTENDED = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES})


def access_lines(path: Path, st: os.stat_result) -> list[tuple[bool, str]]:
    """The mode line of one state dir or file, and an owner line if it is not ours."""
    mode = stat.S_IMODE(st.st_mode)
    report = [(mode & 0o077 == 0, f"{path} mode {mode:04o}")]
    if st.st_uid != os.getuid():
        report.append((False, f"{path} belongs to uid {st.st_uid}, not {os.getuid()}"))
    return report


def access_report(paths: Iterable[Path]) -> list[tuple[bool, str]]:
    """The :func:`access_lines` of each of ``paths`` that exists (one that is missing or
    cannot be used is left to the check and the reads, which name it)."""
    report: list[tuple[bool, str]] = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        report += access_lines(path, st)
    return report
