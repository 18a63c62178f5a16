"""Every seam in pairbot, in one file: what a provider, a store and an audit log must do.

The core (``bot/``) talks to platforms only through :class:`Provider` and to disk only
through :class:`StateStore`; it imports no platform SDK and no storage code. A provider that
must remember where it got to across a restart (a catch-up cursor) is handed a
:class:`Cursors` by the composition root, never a store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol, runtime_checkable

from bot.core.models import (
    ApprovalNotice,
    AskView,
    AuditEvent,
    AuditPage,
    Button,
    Inbound,
    InstanceBeat,
    NodeInvite,
    NodeRequest,
    PairedNode,
    PendingRequest,
    SendFailure,
)

OnInbound = Callable[[Inbound], Awaitable[None]]
OnMessage = Callable[[dict[str, str]], None]

AUDIT_PAGE = 512
"""Audit records one :meth:`StateStore.audit_since` returns at most, unless told otherwise."""
CLUSTER_KEEP = timedelta(hours=1)
"""How long a cluster keeps a published message for subscribers that were cut off."""


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
class TakesTurns(Provider, Protocol):
    """A provider that can receive apart from running: where its platform hands each event
    to one consumer only (:attr:`one_consumer`), the instances on one state take turns
    receiving on it, and every one of them sends.

    While it runs for sending alone, :meth:`Provider.send`, :meth:`Provider.edit` and
    :meth:`Provider.dm_chat_id` work as usual and nothing is received.
    """

    one_consumer: bool
    """True where two consumers would steal events from each other or both get them
    (Telegram's getUpdates, Discord's gateway, signal-cli's event stream)."""

    @property
    def receiving(self) -> bool:
        """Whether events are taken now."""
        ...

    async def start(self, on_inbound: OnInbound, *, receive: bool = True) -> None:
        """:meth:`Provider.start`; with ``receive=False``, connect for sending only."""
        ...

    async def start_receiving(self) -> None:
        """Begin receiving (events go to the ``on_inbound`` given at start); return once
        events flow. A failure leaves it sending."""
        ...

    async def stop_receiving(self) -> None:
        """Stop receiving, let the events accepted be handled, confirm them to the platform
        where it takes a confirmation, and go on sending."""
        ...


class Peers(Protocol):
    """The same provider on the other instances of pairbot on one state (none on a JSON or
    SQLite state): what one instance's webhook learnt that another instance needs."""

    def tell(self, news: Mapping[str, str]) -> None:
        """Hand ``news`` (short strings; never a secret, never message text) to the same
        provider on every other instance, through :meth:`HasPeers.heard`. Returns at once;
        the news goes out in the background, in order, and may be lost (a full queue, the
        state's database away): news speeds things up, it never carries a decision."""
        ...


@runtime_checkable
class HasPeers(Protocol):
    """A provider whose platform hands an event to whichever instance its load balancer
    picks, when another instance is the one waiting for it (WhatsApp's status webhooks of a
    message another instance sent)."""

    def meet(self, peers: Peers) -> None:
        """From now on, tell ``peers`` what they need to know (called before start)."""
        ...

    def heard(self, news: Mapping[str, str]) -> None:
        """What the same provider on another instance told (called on the event loop)."""
        ...


@runtime_checkable
class ToldReach(Protocol):
    """A provider that can say, without sending a message, whether a person's chat with the
    bot takes its messages."""

    async def why_unreachable(self, user_id: str) -> str | None:
        """None if the bot can write to ``user_id``; else what they must do, in one line."""
        ...


@runtime_checkable
class CountsSendFailures(Protocol):
    """A provider that counts the sends that failed, by why (the providers' base does)."""

    send_failures: Mapping[SendFailure, int]


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
    """A view of the whole state, taken under the store's cross-process lock.

    An exclusive transaction (the default) holds the state alone: reads see every write
    committed before the lock was taken, and nothing else commits until it ends. A shared
    one (:meth:`StateStore.transaction` with ``shared=True``: a stranger's ask) may run
    beside other shared ones, never beside an exclusive one; each read sees what was
    committed when it ran, and :attr:`peers` says how many others may commit meanwhile. A
    shared transaction only adds requests (:meth:`add_request`, where a concurrent insert
    decides), replaces a request it read, drops a request (whose result says whether *this*
    transaction dropped it) and audits. A backend that runs one transaction at a time runs
    a shared one as an exclusive one (``peers`` 0).

    Changes are written when the transaction ends without an exception: spent invites first,
    then allowlists and paired nodes, then pending requests together with the notices of
    approvals, so a crash in between leaves "still pending", never "approved and lost" nor a
    notice of an approval that did not happen; and an invite is never left unspent by a
    pairing it made (an invite errs toward "spent, nothing paired": the owner makes another).
    A grant and its end are one change: a crash never leaves a sender listed without the end
    they were given (allowed for good by accident).

    Sender ids are in their platform's normal form (:meth:`bot.core.schema.IdRule.normalise`):
    the services hand them so, and a store reads what another writer stored in another form
    (an older pairbot, Clawdbot) in that form too, so it is found by the id the sender has.
    """

    @property
    def peers(self) -> int:
        """How many other transactions may commit while this one runs: 0 when it holds the
        state alone; in a shared transaction, a bound on the others (so a limit checked
        against a count read here holds if ``count + peers`` is within it)."""
        ...

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

    def ask_view(self, provider: str, sender_id: str) -> AskView:
        """:meth:`request`, :meth:`allow_has` (with :meth:`allow_end`) and
        :meth:`request_count` read at once (one statement on a SQL backend: a stranger's ask
        reads them all)."""
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

    def add_request(self, request: PendingRequest) -> bool:
        """Insert a new pending DM request unless the sender already has one or its code is
        on file (any provider's request, expired included); return whether it was inserted.
        Between concurrent inserts of one sender or one code, exactly one wins."""
        ...

    def drop_request(self, provider: str, sender_id: str, *, code: str | None = None) -> bool:
        """Remove a pending DM request (only the one with ``code``, if given: the request a
        shared transaction read, not one another made since); return whether it was there."""
        ...

    def allow_from(self, provider: str) -> list[str]:
        """Return the provider's stored allowlist, in file order (a copy: later changes to
        the allowlist leave it as it is), every sender listed, whether their grant ends or
        not (an ended one included until it is removed)."""
        ...

    def allow_has(self, provider: str, sender_id: str) -> bool:
        """Return whether the provider's stored allowlist lists the sender (no copy, O(1)),
        whether their grant ends or not."""
        ...

    def allow_end(self, provider: str, sender_id: str) -> datetime | None:
        """Return when the sender's grant ends; None if it does not end, or if the sender is
        not listed (:meth:`allow_has` tells which). One lookup, O(1)."""
        ...

    def allow_ends(self, provider: str, *, by: datetime | None = None) -> dict[str, datetime]:
        """Return the provider's grants that end (only those ending at or before ``by``, if
        given): sender id → end, in allowlist order."""
        ...

    def allow(self, provider: str, sender_id: str, *, until: datetime | None = None) -> bool:
        """Add a sender to the allowlist, their grant ending at ``until`` (None: it does not
        end). A sender already listed keeps their place and gets this end instead of theirs.
        Return False if the sender was already listed."""
        ...

    def disallow(self, provider: str, sender_id: str, *, ending: datetime | None = None) -> bool:
        """Remove a sender from the allowlist; return whether *this* call removed them.

        With ``ending``, only a grant that ends at exactly that time is removed (the ended
        grant a prune read, never one renewed since), so of several instances dropping one
        ended grant at once, one is told it did, and audits it."""
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

    def invites(self) -> list[NodeInvite]:
        """Return the node invites on file (spent and expired ones not yet dropped
        included), oldest first."""
        ...

    def invite_with_hash(self, secret_hash: str) -> NodeInvite | None:
        """Return the invite whose secret has this SHA-256 (spent or expired included), or
        None; the hash is compared in constant time."""
        ...

    def put_invite(self, invite: NodeInvite) -> None:
        """Insert or replace (by invite id) a node invite."""
        ...

    def spend_invite(self, invite_id: str, *, node_id: str, at: datetime) -> bool:
        """Mark the invite spent by ``node_id`` at ``at``, only if it is not spent and
        expires after ``at``; return whether *this* call spent it. One conditional update:
        of several transactions spending one invite at once (instances on one database),
        exactly one is told it did."""
        ...

    def drop_invite(self, invite_id: str) -> bool:
        """Remove an invite; return whether *this* call removed it."""
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

    def transaction(self, *, shared: bool = False) -> AbstractContextManager[StateTxn]:
        """Take the lock (exclusive, or ``shared``: see :class:`StateTxn`) and return a view
        of the state; commit on clean exit."""
        ...

    def allowed_until(self, provider: str, sender_id: str) -> datetime | None:
        """Answer from memory until when the stored allowlist lets the sender in: None if it
        does not list them, :data:`bot.core.models.FOREVER` (that very object) if their grant
        does not end, else its end (which may be past: an ended grant not yet removed).

        Must be cheap (the gate calls it per message: a grant that does not end costs no more
        than a set lookup, and its caller compares ``FOREVER`` by identity, reading no clock)
        and must notice writes made by other processes without being told. The store reads no
        clock: whether a time is past is the caller's question.
        """
        ...

    def allowed_soon(self, provider: str, sender_id: str) -> datetime | Future[None] | None:
        """:meth:`allowed_until` as the event loop asks it: the same answer, or, where this
        store would first have to read a changed allowlist, a future done once it has read
        it (in a worker thread), for the caller to wait on off the loop and ask again. It
        may answer from the version it holds while the read runs, for a bound it documents;
        a store that never reads much to answer returns :meth:`allowed_until`'s answer."""
        ...

    def pending_epoch(self, provider: str) -> Hashable:
        """A marker, cheap to ask (no read), that changes whenever the provider's pending
        requests may have been changed other than by this store's own transactions (by
        another process, the ``pairbot`` command). Asked inside a transaction, it is the
        marker of what that transaction sees. The pairing service settles a pending
        stranger's repeat from memory only while the marker is the one it saw then. A store
        with no such marker returns a constant (what it cannot see, memory cannot either)."""
        ...

    def read_audit(self, *, limit: int | None = None) -> list[dict[str, object]]:
        """Return the last ``limit`` audit records (all when None), oldest first."""
        ...

    def iter_audit(self, *, limit: int | None = None) -> Iterator[dict[str, object]]:
        """Yield what :meth:`read_audit` returns, record by record, in memory that does not
        grow with the log."""
        ...

    def audit_since(
        self, position: str | None, *, limit: int = AUDIT_PAGE, skip_gap: bool = False
    ) -> AuditPage:
        """Return the audit records committed after ``position``, by any process, oldest
        first, at most ``limit`` (a tail of the log: cheap when nothing was added).

        ``position`` is a page's ``end`` or a record's position, as this store made it. None
        reads nothing and returns the log's end now (where a reader starts). A position this
        log cannot have (the log was replaced or shortened) reads from the log's start.
        ``skip_gap`` steps over the first :attr:`~bot.core.models.AuditPage.gap`.
        """
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


class Cluster(Protocol):
    """What the instances of pairbot running on one state share besides the state itself.

    One ``pairbot run`` on a JSON or SQLite state is the only instance there is: its cluster
    lives in that process's memory. On PostgreSQL, every instance on the same schema shares
    one, in the database, so N instances behave as one bot: a platform event handled once
    (:meth:`claim`), one set of limits (:meth:`bump`), events that reach the instance they
    concern (:meth:`publish`), one consumer of a connector that allows one (:meth:`hold`), and
    a list of who is running (:meth:`beat`).

    Blocking and thread-safe like a :class:`StateStore`: the runtime calls it from worker
    threads. It never reads a clock: ``now`` comes from the caller's injected clock, so
    instances on several machines need clocks kept in step (NTP) to well within the shortest
    ``ttl`` they use. Keys, topics and lease names are short strings chosen by the caller;
    they never carry a secret (a code, a token), since a database administrator can read them.
    """

    instance_id: str
    """This instance: unique among every instance that ever shares the cluster."""
    in_memory: bool
    """True when no call waits on I/O (a cluster of one, in this process's memory): a caller
    on an event loop may make its calls there, without a hop to a thread."""

    def claim(self, key: str, *, now: datetime, ttl: timedelta) -> bool:
        """Take ``key`` until ``now + ttl`` if no claim on it is running: True if this call
        took it; False if a claim (this instance's or another's) holds it until after
        ``now``. Two instances claiming one key at once: exactly one gets True."""
        ...

    def keep(self, key: str, *, now: datetime, ttl: timedelta) -> None:
        """Make this instance's claim on ``key`` last until ``now + ttl`` (longer or shorter);
        a key it does not hold is left as it is."""
        ...

    def claimed_until(self, key: str, *, now: datetime) -> datetime | None:
        """When the running claim on ``key`` ends, or None if none runs at ``now``."""
        ...

    def unclaim(self, key: str) -> None:
        """End this instance's claim on ``key`` now (the work failed: another may take it)."""
        ...

    def bump(self, key: str, *, now: datetime, window: timedelta) -> int:
        """Count one event under ``key`` at ``now``; return how many events were counted
        under it in the ``window`` before ``now`` (this one included), by every instance."""
        ...

    def clear(self, key: str) -> None:
        """Forget every event counted under ``key``."""
        ...

    def publish(self, topic: str, message: Mapping[str, str]) -> None:
        """Send ``message`` to every subscriber of ``topic`` on every instance (this one
        included). Each subscriber gets each message once, in the order they were published.
        Returns once the message is durable: a subscriber that was cut off gets it when it
        is back (messages are kept for at least :data:`CLUSTER_KEEP`)."""
        ...

    def subscribe(self, topic: str, handler: OnMessage) -> Callable[[], None]:
        """Call ``handler`` with each message published on ``topic`` from now on, from a
        thread of the cluster's, one at a time; return a function that stops it. After a
        lost connection the messages published meanwhile are delivered first (catch-up)."""
        ...

    def hold(self, lease: str, *, now: datetime, ttl: timedelta) -> bool:
        """Take or renew ``lease`` for this instance until ``now + ttl``: True if this
        instance holds it now; False while another holds it (until its ttl runs out)."""
        ...

    def release(self, lease: str) -> None:
        """Give ``lease`` up at once if this instance holds it (a clean stop)."""
        ...

    def holders(self, *, now: datetime) -> dict[str, str]:
        """Every lease held at ``now``: its name → the holder's instance id."""
        ...

    def beat(self, *, now: datetime, facts: Mapping[str, object]) -> None:
        """Say this instance is alive at ``now``, with what :meth:`instances` shows of it
        (JSON-able facts: version, host, readiness, the connectors it holds)."""
        ...

    def instances(self, *, now: datetime, within: timedelta) -> list[InstanceBeat]:
        """The instances whose last beat is within ``within`` before ``now``, oldest first."""
        ...

    def close(self) -> None:
        """Stop subscriptions and release what is held open (not the leases: see
        :meth:`release`)."""
        ...
