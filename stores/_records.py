"""What every backend must say the same way: the audit record, the provider check, the
allowlist entries that never let anyone in, the held messages of a request or a notice.

A backend keeps its own layout; these are the parts a caller sees through
:class:`bot.core.protocols.StateStore`, so a record read from one backend is the record read
from any other.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bot.core import codes
from bot.core.clock import iso
from bot.core.models import AskView, AuditEvent, NodeInvite, PendingRequest
from bot.core.platforms import KNOWN_PROVIDERS

NEVER_ALLOWED = frozenset({"*", ""})
"""Allowlist entries kept as they were written but never matched by ``allowed_until``: a
wildcard (Clawdbot's "everyone") or an empty id must not open the gate to anyone."""


class ScannedRequests(ABC):
    """The request queries of :class:`bot.core.protocols.StateTxn`, answered by scanning
    :meth:`requests`: for the backends that hold each provider's requests as one list (the
    JSON files, memory). A database answers them with its indexes instead."""

    __slots__ = ()

    @abstractmethod
    def requests(self, provider: str) -> list[PendingRequest]:
        """The provider's pending requests, in file order."""

    def request(self, provider: str, sender_id: str) -> PendingRequest | None:
        return next((r for r in self.requests(provider) if r.id == sender_id), None)

    def request_count(self, provider: str) -> int:
        return len(self.requests(provider))

    def ask_view(self, provider: str, sender_id: str) -> AskView:
        return AskView(
            request=self.request(provider, sender_id),
            allowed=self.allow_has(provider, sender_id),
            pending=self.request_count(provider),
            allowed_end=self.allow_end(provider, sender_id),
        )

    @abstractmethod
    def allow_has(self, provider: str, sender_id: str) -> bool:
        """See :meth:`bot.core.protocols.StateTxn.allow_has`."""

    @abstractmethod
    def allow_end(self, provider: str, sender_id: str) -> datetime | None:
        """See :meth:`bot.core.protocols.StateTxn.allow_end`."""

    def requests_created_before(self, provider: str, cutoff: datetime) -> list[PendingRequest]:
        return [r for r in self.requests(provider) if r.created_at <= cutoff]

    def request_with_code(self, code: str, providers: Sequence[str]) -> PendingRequest | None:
        everything = [r for name in providers for r in self.requests(name)]
        index = codes.find_code(code, [r.code for r in everything])  # constant time
        return None if index is None else everything[index]

    def code_taken(self, code: str) -> bool:
        return any(r.code == code for name in KNOWN_PROVIDERS for r in self.requests(name))

    def _same_code(self, provider: str, sender_id: str, code: str) -> bool | None:
        """Whether the sender's request has ``code`` (None: the sender has none)."""
        mine = self.request(provider, sender_id)
        return None if mine is None else mine.code == code

    @property
    def peers(self) -> int:
        return 0  # these backends run one transaction at a time

    @abstractmethod
    def put_request(self, request: PendingRequest) -> None:
        """Insert or replace (by sender id) a pending DM request."""

    def add_request(self, request: PendingRequest) -> bool:
        if self.request(request.provider, request.id) is not None or self.code_taken(request.code):
            return False
        self.put_request(request)
        return True


def invite_with_hash(invites: Sequence[NodeInvite], secret_hash: str) -> NodeInvite | None:
    """The invite whose secret has ``secret_hash``, every one compared in constant time (for
    the backends that hold the invites as one list)."""
    index = codes.find_code(secret_hash.upper(), [i.secret_hash for i in invites])
    return None if index is None else invites[index]


def audit_record(event: AuditEvent) -> dict[str, Any]:
    """Return the audit record of ``event``: what ``read_audit`` yields and ``audit.jsonl``
    holds, key by key in this order (``provider`` and ``requestId`` only when set; the detail
    keys last)."""
    record: dict[str, Any] = {
        "ts": iso(event.ts),
        "event": event.event,
        "actor": event.actor,
    }
    if event.provider is not None:
        record["provider"] = event.provider
    record["subject"] = event.subject
    if event.request_id is not None:
        record["requestId"] = event.request_id
    record["outcome"] = event.outcome
    record.update(event.detail)
    return record


HELD_KEY = "heldMessages"
"""The key of a request's (or a notice's) held messages, as
:meth:`~bot.core.models.HeldMessage.as_json` writes each (``[{"text", "at", "name"?}]``), left
out when there are none. Beside the entry's other keys in a JSON file, in the ``extra``
column of a database row: held messages need no column of their own."""
TOLD_KEY = "told"
"""The key of a notice whose sender was told and whose held messages are not all handed
over: ``true``, left out otherwise."""


def unknown_provider(name: str) -> ValueError:
    """The error for a provider name pairbot does not know (a usage error, not a store one)."""
    return ValueError(f"unknown provider {name!r} (known: {', '.join(KNOWN_PROVIDERS)})")


def check_provider(name: str) -> None:
    """Raise :func:`unknown_provider`'s error unless pairbot knows ``name``."""
    if name not in KNOWN_PROVIDERS:
        raise unknown_provider(name)
