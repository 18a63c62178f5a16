"""A store that keeps the whole state in this process's memory: for tests and demos.

It keeps every promise of :class:`bot.core.protocols.StateStore` that has a meaning without a
disk, so the services' tests run on it as they run on the JSON store: transactions are atomic
and one at a time, changes are seen only once committed, entries keep the order the JSON
files keep, and audit records have the same keys in the same order. Nothing survives the
process; "another process" is simply another caller of the same object.

The state is a set of parts (one provider's pending requests, one provider's allowlist, the
node requests, the paired nodes, the notices), each a dict in entry order; an allowlist maps
each sender to the end of their grant (:data:`~bot.core.models.FOREVER` for one that does
not end; None for an id that is kept but never lets anyone in, ``*`` or empty), so a grant
and its end change together and the gate's answer is one lookup. A transaction
copies a part the first time it changes it and commit puts the copies in place, so the
committed parts are never changed in place: :meth:`MemoryStore.allowed_until` reads them
without the lock and never sees a change that is not committed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from bot.core.errors import StoreLockTimeoutError
from bot.core.models import (
    FOREVER,
    ApprovalNotice,
    AuditEvent,
    AuditPage,
    NodeInvite,
    NodeRequest,
    PairedNode,
    PendingRequest,
)
from bot.core.protocols import AUDIT_PAGE
from stores._records import (
    NEVER_ALLOWED,
    ScannedRequests,
    audit_record,
    check_provider,
    invite_with_hash,
)

_Part = dict[Any, Any]
_PartKey = tuple[str, str]

_NODE_REQUESTS: _PartKey = ("nodes", "pending")
_PAIRED: _PartKey = ("nodes", "paired")
_NOTICES: _PartKey = ("notices", "")
_INVITES: _PartKey = ("nodes", "invites")


def _requests_key(provider: str) -> _PartKey:
    return ("requests", provider)


def _allow_key(provider: str) -> _PartKey:
    return ("allow", provider)


def _commit_rank(key: _PartKey) -> int:
    """Spent invites first, grants next, then the notices that tell of them, pending last: a
    commit cut short (an interrupt between two parts) never loses a grant, nor tells of one
    that did not happen, nor leaves an invite unspent by the pairing it made."""
    if key == _INVITES:
        return -1
    if key[0] == "allow" or key == _PAIRED:
        return 0
    return 1 if key == _NOTICES else 2


class MemoryStore:
    """The whole state in memory. Thread-safe: one lock, one transaction at a time."""

    def __init__(self, *, lock_timeout: float = 10.0) -> None:
        self._lock = threading.Lock()
        self._lock_timeout = lock_timeout
        # A provider's parts are made by the first commit that changes them.
        self._parts: dict[_PartKey, _Part] = {
            _NODE_REQUESTS: {},
            _PAIRED: {},
            _NOTICES: {},
            _INVITES: {},
        }
        self._audit: list[str] = []  # one JSON text per record, as audit.jsonl holds them
        self._cursors: dict[str, str] = {}

    @contextlib.contextmanager
    def transaction(self, *, shared: bool = False) -> Iterator[_Txn]:
        """Take the lock and hand out a view; commit what changed on a clean exit.

        A body that raises changes nothing. Waiting longer than ``lock_timeout`` for the lock
        raises :class:`~bot.core.errors.StoreLockTimeoutError`: another thread held it that
        long, or this one opened a transaction inside its own (which would wait forever).
        One transaction runs at a time: a ``shared`` one is exclusive.
        """
        del shared
        if not self._lock.acquire(timeout=self._lock_timeout):
            raise StoreLockTimeoutError(
                f"state lock busy in this process for over {self._lock_timeout:g}s",
                hint="a transaction is open in another thread, or this one opened one inside it",
            )
        txn = _Txn(self._parts)
        try:
            yield txn
            self._commit(txn)
        finally:
            txn.end()
            self._lock.release()

    def _commit(self, txn: _Txn) -> None:
        # Encoded first: an event that cannot be written as JSON fails before anything changed.
        lines = [json.dumps(audit_record(e), ensure_ascii=False) for e in txn.events]
        for key in sorted(txn.changed, key=_commit_rank):
            self._parts[key] = txn.changed[key]
        self._audit += lines

    def cursor(self, key: str) -> str | None:
        """Return the value last saved under ``key``, or None."""
        return self._cursors.get(key)

    def save_cursor(self, key: str, value: str) -> None:
        """Store ``value`` under ``key`` (one dict assignment: atomic for every reader)."""
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError("a cursor's key and value are strings")
        self._cursors[key] = value

    def allowed_until(self, provider: str, sender_id: str) -> datetime | None:
        """Answer from the committed allowlist: two dict lookups, no lock."""
        allowed = self._parts.get(_allow_key(provider))
        if allowed is None:
            check_provider(provider)
            return None
        end: datetime | None = allowed.get(sender_id)  # None for "*" and "" (see allow)
        return end

    def pending_epoch(self, provider: str) -> int:
        """Always 0: every change to this store is made in this process, through the pairing
        service, which forgets what its own changes end."""
        check_provider(provider)
        return 0

    def allowed_soon(self, provider: str, sender_id: str) -> datetime | None:
        """:meth:`allowed_until`: memory never reads first."""
        return self.allowed_until(provider, sender_id)

    def read_audit(self, *, limit: int | None = None) -> list[dict[str, object]]:
        """Return the last ``limit`` audit records (all when None), oldest first."""
        return list(self.iter_audit(limit=limit))

    def iter_audit(self, *, limit: int | None = None) -> Iterator[dict[str, object]]:
        """Yield the last ``limit`` audit records (all when None), oldest first; each a new
        dict, decoded as the JSON store decodes its lines."""
        end = len(self._audit)  # records committed after the first one is asked for are left out
        start = 0 if limit is None else max(end - max(limit, 0), 0)
        for line in itertools.islice(self._audit, start, end):
            yield cast("dict[str, object]", json.loads(line))

    def audit_since(
        self,
        position: str | None,
        *,
        limit: int = AUDIT_PAGE,
        skip_gap: bool = False,  # noqa: ARG002 (a list has no gaps)
    ) -> AuditPage:
        """The records after ``position`` (a record's index in the log, as a string)."""
        end = len(self._audit)
        if position is None:
            return AuditPage(records=[], end=str(end))
        start = int(position) if position.isdigit() else 0
        start = start if start <= end else 0
        stop = min(end, start + max(limit, 0))
        records = [
            (str(index + 1), cast("dict[str, Any]", json.loads(self._audit[index])))
            for index in range(start, stop)
        ]
        return AuditPage(records=records, end=str(stop), more=stop < end)

    def check(self) -> None:
        """Memory is always usable: nothing to raise."""

    def access_report(self) -> list[tuple[bool, str]]:
        """Nothing in memory has modes or owners to check."""
        return []

    def recheck(self, where: Path) -> bool:  # noqa: ARG002
        """No path is part of this store."""
        return False

    def close(self) -> None:
        """Nothing is held open; the state stays (it lives as long as the object)."""


class _Txn(ScannedRequests):
    """The view a transaction hands out; see :class:`bot.core.protocols.StateTxn`.

    Reads go to the part this transaction changed, else to the committed one; the first
    change of a part copies it.
    """

    __slots__ = ("_committed", "changed", "events")

    def __init__(self, committed: dict[_PartKey, _Part]) -> None:
        self._committed: dict[_PartKey, _Part] | None = committed
        self.changed: dict[_PartKey, _Part] = {}
        self.events: list[AuditEvent] = []

    def end(self) -> None:
        """Refuse any use of this view once its transaction is over."""
        self._committed = None

    def _open(self) -> dict[_PartKey, _Part]:
        if self._committed is None:
            raise RuntimeError("the transaction has ended; open a new one")
        return self._committed

    def _read(self, key: _PartKey) -> _Part:
        committed = self._open()
        part = self.changed.get(key)
        if part is None:
            part = committed.get(key)
            if part is None:  # a provider's part that no commit has made yet
                check_provider(key[1])
                part = {}
        return part

    def _write(self, key: _PartKey) -> _Part:
        part = self._read(key)
        if key not in self.changed:
            part = self.changed[key] = dict(part)
        return part

    def _put(self, key: _PartKey, ident: object, value: object) -> None:
        self._write(key)[ident] = value

    def _drop(self, key: _PartKey, ident: object) -> bool:
        if ident not in self._read(key):
            return False
        del self._write(key)[ident]
        return True

    # reading: lists are copies, so later changes leave them as they are

    def requests(self, provider: str) -> list[PendingRequest]:
        return list(self._read(_requests_key(provider)).values())

    def allow_from(self, provider: str) -> list[str]:
        return list(self._read(_allow_key(provider)))

    def allow_has(self, provider: str, sender_id: str) -> bool:
        return sender_id in self._read(_allow_key(provider))

    def allow_end(self, provider: str, sender_id: str) -> datetime | None:
        end = self._read(_allow_key(provider)).get(sender_id)
        return None if end is FOREVER else end

    def allow_ends(self, provider: str, *, by: datetime | None = None) -> dict[str, datetime]:
        return {
            sender_id: end
            for sender_id, end in self._read(_allow_key(provider)).items()
            if end is not FOREVER and end is not None and (by is None or end <= by)
        }

    def node_requests(self) -> list[NodeRequest]:
        return list(self._read(_NODE_REQUESTS).values())

    def paired_nodes(self) -> list[PairedNode]:
        return list(self._read(_PAIRED).values())

    def notices(self) -> list[ApprovalNotice]:
        notices: list[ApprovalNotice] = list(self._read(_NOTICES).values())
        return sorted(notices, key=lambda n: n.approved_at)

    def invites(self) -> list[NodeInvite]:
        return list(self._read(_INVITES).values())

    def invite_with_hash(self, secret_hash: str) -> NodeInvite | None:
        return invite_with_hash(self.invites(), secret_hash)

    def spend_invite(self, invite_id: str, *, node_id: str, at: datetime) -> bool:
        invite = self._read(_INVITES).get(invite_id)
        if invite is None or not invite.live(at):
            return False
        self._put(_INVITES, invite_id, replace(invite, used_at=at, used_by=node_id))
        return True

    def put_invite(self, invite: NodeInvite) -> None:
        self._put(_INVITES, invite.invite_id, invite)

    def drop_invite(self, invite_id: str) -> bool:
        return self._drop(_INVITES, invite_id)

    # adding or replacing: a known identity keeps its place, a new one goes last

    def put_request(self, request: PendingRequest) -> None:
        self._put(_requests_key(request.provider), request.id, request)

    def allow(self, provider: str, sender_id: str, *, until: datetime | None = None) -> bool:
        key = _allow_key(provider)
        end: datetime | None = FOREVER if until is None else until
        if sender_id in NEVER_ALLOWED:
            end = None  # listed as written, never let in: the gate reads None
        listed = self._read(key)
        if sender_id in listed:
            if listed[sender_id] != end:
                self._put(key, sender_id, end)  # a known key keeps its place in a dict
            return False
        self._put(key, sender_id, end)
        return True

    def put_node_request(self, request: NodeRequest) -> None:
        self._put(_NODE_REQUESTS, request.request_id, request)

    def put_paired_node(self, node: PairedNode) -> None:
        self._put(_PAIRED, node.node_id, node)

    def put_notice(self, notice: ApprovalNotice) -> None:
        check_provider(notice.provider)
        self._put(_NOTICES, (notice.provider, notice.sender_id), notice)

    # removing: whether it was there

    def drop_request(self, provider: str, sender_id: str, *, code: str | None = None) -> bool:
        if code is not None and self._same_code(provider, sender_id, code) is False:
            return False
        return self._drop(_requests_key(provider), sender_id)

    def disallow(self, provider: str, sender_id: str, *, ending: datetime | None = None) -> bool:
        if ending is not None and self.allow_end(provider, sender_id) != ending:
            return False
        return self._drop(_allow_key(provider), sender_id)

    def drop_node_request(self, request_id: str) -> bool:
        return self._drop(_NODE_REQUESTS, request_id)

    def drop_paired_node(self, node_id: str) -> bool:
        return self._drop(_PAIRED, node_id)

    def drop_notice(self, provider: str, sender_id: str) -> bool:
        check_provider(provider)
        return self._drop(_NOTICES, (provider, sender_id))

    def audit(self, event: AuditEvent) -> None:
        self._open()
        self.events.append(event)
