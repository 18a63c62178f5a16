"""Every seam in pairbot, in one file: what a provider, a store and an audit log must do.

The core (``bot/``) talks to platforms only through :class:`Provider` and to disk only
through :class:`StateStore`; it imports no platform SDK and no storage code. A provider that
must remember where it got to across a restart (a catch-up cursor) is handed a
:class:`Cursors` by the composition root, never a store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from bot.core.models import (
    ApprovalNotice,
    AuditEvent,
    Button,
    Inbound,
    NodeRequest,
    PairedNode,
    PendingRequest,
)

OnInbound = Callable[[Inbound], Awaitable[None]]


class Provider(Protocol):
    """One chat platform. Turns platform events into :class:`Inbound` values; sends text.

    A provider knows nothing of pairing or storage. Button presses come back as an
    :class:`Inbound` whose ``text`` is the button's command and ``is_button`` is true. Its
    ``sender_id`` is the id as the platform gives it; the core puts it in the platform's one
    normal form (:meth:`bot.core.schema.IdRule.normalise`), and every user id the core hands a
    provider back (``dm_chat_id``) is in that form.
    """

    name: str
    bare_commands: bool
    """True where the platform's clients eat a leading ``/`` (Slack): the owner may then type
    owner commands without it (``approve CODE``) in their DM."""

    async def start(self, on_inbound: OnInbound) -> None:
        """Connect and begin delivering inbound messages to ``on_inbound``; return once running."""
        ...

    async def stop(self) -> None:
        """Stop receiving and close connections. Safe to call twice."""
        ...

    async def send(self, chat_id: str, text: str, *, buttons: Sequence[Button] = ()) -> str | None:
        """Send ``text`` (plain, never parsed as markup) to a chat; return the message id."""
        ...

    async def edit(self, chat_id: str, message_id: str, text: str) -> None:
        """Replace the text of a message the bot sent, removing its buttons."""
        ...

    async def dm_chat_id(self, user_id: str) -> str:
        """Return the chat id of the bot's one-to-one chat with ``user_id``, opening it if
        the platform needs that (Slack ``conversations.open``, a Discord DM channel)."""
        ...


@runtime_checkable
class ToldReach(Protocol):
    """A provider that can say, without sending a message, whether a person's chat with the
    bot takes its messages."""

    async def why_unreachable(self, user_id: str) -> str | None:
        """None if the bot can write to ``user_id``; else what they must do, in one line."""
        ...


class Cursors(Protocol):
    """Small strings kept across restarts, one per key: where a provider got to.

    A provider that reads missed messages back from its platform (iMessage's catch-up) saves
    its cursor here and loads it on the next start. The value is the provider's own (opaque
    to the store); a key is the provider's name and what the cursor is for. A save is durable
    when it returns and replaces the key's value as a whole. Every store backend provides it.
    """

    def cursor(self, key: str) -> str | None:
        """Return the value last saved under ``key``, or None if none was."""
        ...

    def save_cursor(self, key: str, value: str) -> None:
        """Store ``value`` under ``key``, replacing what was there."""
        ...


class StateTxn(Protocol):
    """A view of the whole state, taken under the store's exclusive cross-process lock.

    Reads see every write committed before the lock was taken. Changes are written when the
    transaction ends without an exception: allowlists and paired nodes first, then pending
    requests together with the notices of approvals, so a crash in between leaves "still
    pending", never "approved and lost" nor a notice of an approval that did not happen.

    Sender ids are in their platform's normal form (:meth:`bot.core.schema.IdRule.normalise`):
    the services hand them so, and a store reads what another writer stored in another form
    (an older pairbot, Clawdbot) in that form too, so it is found by the id the sender has.
    """

    def requests(self, provider: str) -> list[PendingRequest]:
        """Return the provider's pending DM requests, in file order."""
        ...

    def request(self, provider: str, sender_id: str) -> PendingRequest | None:
        """Return the sender's pending request, or None."""
        ...

    def request_count(self, provider: str) -> int:
        """Return how many requests the provider has on file (expired ones not yet dropped
        included)."""
        ...

    def requests_created_before(self, provider: str, cutoff: datetime) -> list[PendingRequest]:
        """Return the provider's requests created at or before ``cutoff`` (those a TTL ending
        at ``cutoff`` has expired), in file order."""
        ...

    def request_with_code(self, code: str, providers: Sequence[str]) -> PendingRequest | None:
        """Return the request of one of ``providers`` whose code is ``code`` (upper case),
        expired or not, or None. Codes are unique across providers, so there is at most one."""
        ...

    def code_taken(self, code: str) -> bool:
        """Return whether any provider's request on file (expired included) has ``code``."""
        ...

    def put_request(self, request: PendingRequest) -> None:
        """Insert or replace (by sender id) a pending DM request."""
        ...

    def drop_request(self, provider: str, sender_id: str) -> bool:
        """Remove a pending DM request; return whether it was there."""
        ...

    def allow_from(self, provider: str) -> list[str]:
        """Return the provider's stored allowlist, in file order (a copy: later changes to
        the allowlist leave it as it is)."""
        ...

    def allow_has(self, provider: str, sender_id: str) -> bool:
        """Return whether the provider's stored allowlist lists the sender (no copy, O(1))."""
        ...

    def allow(self, provider: str, sender_id: str) -> bool:
        """Add a sender to the allowlist; return False if already there."""
        ...

    def disallow(self, provider: str, sender_id: str) -> bool:
        """Remove a sender from the allowlist; return whether it was there."""
        ...

    def node_requests(self) -> list[NodeRequest]:
        """Return pending node requests."""
        ...

    def put_node_request(self, request: NodeRequest) -> None:
        """Insert or replace (by request id) a pending node request."""
        ...

    def drop_node_request(self, request_id: str) -> bool:
        """Remove a pending node request; return whether it was there."""
        ...

    def paired_nodes(self) -> list[PairedNode]:
        """Return paired nodes."""
        ...

    def put_paired_node(self, node: PairedNode) -> None:
        """Insert or replace (by node id) a paired node."""
        ...

    def drop_paired_node(self, node_id: str) -> bool:
        """Remove a paired node; return whether it was there."""
        ...

    def notices(self) -> list[ApprovalNotice]:
        """Return the approved senders not yet told, oldest first."""
        ...

    def put_notice(self, notice: ApprovalNotice) -> None:
        """Insert or replace (by provider and sender id) a notice to send."""
        ...

    def drop_notice(self, provider: str, sender_id: str) -> bool:
        """Remove a notice once sent; return whether it was there."""
        ...

    def audit(self, event: AuditEvent) -> None:
        """Queue an audit line, written durably after the state files when the txn commits."""
        ...


class StateStore(Cursors, Protocol):
    """Where pairing state lives. Each transaction is atomic and safe across processes.

    It also keeps the providers' :class:`Cursors` (outside transactions: a cursor is saved
    on its own).

    Unreadable data raises :class:`bot.core.errors.StoreCorruptError` and is never read as empty.
    Stores never read a clock: times arrive inside the values.
    """

    def transaction(self) -> AbstractContextManager[StateTxn]:
        """Take the exclusive lock and return a view of the state; commit on clean exit."""
        ...

    def is_allowed(self, provider: str, sender_id: str) -> bool:
        """Answer from memory whether the stored allowlist has the sender.

        Must be cheap (the gate calls it per message) and must notice writes made by other
        processes without being told.
        """
        ...

    def read_audit(self, *, limit: int | None = None) -> list[dict[str, object]]:
        """Return the last ``limit`` audit records (all when None), oldest first."""
        ...

    def iter_audit(self, *, limit: int | None = None) -> Iterator[dict[str, object]]:
        """Yield what :meth:`read_audit` returns, record by record, in memory that does not
        grow with the log."""
        ...

    def check(self) -> None:
        """Raise :class:`bot.core.errors.StoreError` (naming the part) if any part of the state
        cannot be used as it is; change nothing. The bot calls it before it starts."""
        ...

    def access_report(self) -> list[tuple[bool, str]]:
        """Say, as ``(ok, message)`` lines, whether the state is private to its owner (modes,
        owners); an empty list when the backend has nothing of the kind to check."""
        ...

    def recheck(self, where: Path) -> bool:
        """True if the part a :class:`~bot.core.errors.StoreError` named (its ``path``) still
        cannot be used; False if it can be again, or if it is no part of this store."""
        ...

    def close(self) -> None:
        """Release anything held open."""
        ...
