"""DM pairing rules: who gets a code, when it is (re)sent, approval, rejection, revocation, expiry.

:class:`PairingService` owns the rules; the store owns durability. Every time comes from the
injected clock and every code from :func:`bot.core.codes.new_code`.

A grant may end (``/approve CODE 7d``, ``allowlist add … --for 24h``): the sender is allowed
until that moment by the injected clock, to the microsecond, whether or not the prune has run;
after it they are a stranger again (a new code under the pairing policy). The prune then
removes the ended grant from the store and audits it, once, whichever instance does it.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from itertools import filterfalse

from bot.core import codes
from bot.core.clock import Clock, iso
from bot.core.errors import (
    AllowedByConfigError,
    CodeExpiredError,
    UnknownCodeError,
    UnknownSubjectError,
)
from bot.core.models import (
    FOREVER,
    HELD_TEXT_LIMIT,
    ApprovalNotice,
    AuditEvent,
    HeldMessage,
    PendingRequest,
    RequestOutcome,
    RequestResult,
)
from bot.core.platforms import KNOWN_PROVIDERS, platform
from bot.core.protocols import StateStore, StateTxn
from bot.services.requests import RequestSettings, audit, split_expired

log = logging.getLogger(__name__)

_CODE_ATTEMPTS = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class PairingSettings(RequestSettings):
    """The knobs of DM pairing (``pairing:`` in the config; its ``prune_interval`` is the
    scheduler's)."""

    not_knobs = frozenset({"prune_interval", "notice_preview"})
    pending_ttl: timedelta = timedelta(hours=1)
    resend_after: timedelta = timedelta(minutes=10)
    max_pending_per_provider: int = 3
    hold_messages: int = 0
    """How many of a pending stranger's text messages are kept with their request, to be
    handed to the handler once they are approved."""


class AllowSource(StrEnum):
    """Where an allowlist entry comes from."""

    STORE = "store"
    CONFIG = "config"


class Granted(StrEnum):
    """What :meth:`PairingService.allow` did (the value is the audit line's outcome)."""

    ADDED = "added"
    """The sender was not allowed (not listed, or their grant had ended); now they are."""
    CHANGED = "changed"
    """The sender was allowed; their grant now ends at another time, or no longer ends."""
    UNCHANGED = "unchanged"
    """The sender was allowed just so already: nothing was written."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AllowEntry:
    """One allowed sender, whether the store or the config allows them, and until when
    (None: for good)."""

    provider: str
    id: str
    source: AllowSource
    until: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AllowGroup:
    """Consecutive allowlist entries with one provider, one source and one end: the ids, in
    order.

    A listing of millions of senders is a few of these, not millions of objects: ``ids`` is
    one list of the ids themselves, a snapshot that later changes to the allowlist leave as
    it is. Grants that end are few; each makes a group of its own, with its ``until``.
    """

    provider: str
    source: AllowSource
    ids: Sequence[str]
    until: datetime | None = None

    def entries(self) -> Iterator[AllowEntry]:
        """Yield the group's entries one by one."""
        for sender_id in self.ids:
            yield AllowEntry(
                provider=self.provider, id=sender_id, source=self.source, until=self.until
            )


class PairingService:
    """DM pairing over a :class:`~bot.core.protocols.StateStore`, safe to share between threads.

    Sender ids are in their platform's normal form (:meth:`bot.core.schema.IdRule.normalise`):
    the inbound pipeline normalises each sender once, the config its ids when it is read, the
    store each entry it reads; :meth:`allow` and :meth:`revoke` take ids as people wrote them.
    """

    def __init__(
        self,
        store: StateStore,
        *,
        clock: Clock,
        settings: PairingSettings | None = None,
        static_allow: Mapping[str, Iterable[str]] | None = None,
        new_code: Callable[[], str] = codes.new_code,
    ) -> None:
        self._store = store
        self._clock = clock
        self.settings = settings or PairingSettings()
        self._static = {p: frozenset(ids) for p, ids in (static_allow or {}).items()}
        self._new_code = new_code
        self._capped: Counter[str] = Counter()
        self._capped_seen: dict[tuple[str, str], datetime] = {}
        self._counter_lock = threading.Lock()
        self._quiet: dict[tuple[str, str], tuple[datetime, PendingRequest, Hashable]] = {}
        """(provider, sender) → until when their repeat messages need no transaction, their
        request as last read, and the store's :meth:`~StateStore.pending_epoch` then: a
        chatty pending stranger costs a dict lookup and the epoch's check (a ``stat``), and
        a change made elsewhere (the CLI rejected the request) ends the quiet at once."""
        self._seen: dict[tuple[str, str], datetime] = {}
        """(provider, sender) → their latest message not yet on disk (``lastSeenAt`` is not
        worth an fsync per message; it is written with the next write of that file)."""

    # --- the gate's questions ----------------------------------------------------------------

    def is_allowed(self, provider: str, sender_id: str) -> bool:
        """Return whether the sender is on the config or the stored allowlist (from memory),
        with a grant that has not ended by now. A grant that does not end reads no clock."""
        static = self._static.get(provider)
        if static is not None and sender_id in static:
            return True
        return self._in_force(self._store.allowed_until(provider, sender_id))

    def allowed_soon(self, provider: str, sender_id: str) -> bool | Future[None]:
        """:meth:`is_allowed` for the event loop: the answer, or a future to wait for off the
        loop (the store is reading a changed allowlist in a worker thread) before asking
        again (:meth:`bot.core.protocols.StateStore.allowed_soon`)."""
        static = self._static.get(provider)
        if static is not None and sender_id in static:
            return True
        until = self._store.allowed_soon(provider, sender_id)
        return until if isinstance(until, Future) else self._in_force(until)

    def _in_force(self, until: datetime | None) -> bool:
        """Whether a stored grant that lasts ``until`` lets its sender in now (a grant for
        good reads no clock)."""
        return until is FOREVER or (until is not None and self._clock.now() < until)

    def request(
        self,
        provider: str,
        sender_id: str,
        meta: Mapping[str, str] | None = None,
        *,
        text: str | None = None,
    ) -> RequestResult:
        """Record that a stranger wrote; create their request or refresh the pending one.

        ``send_code`` is true when the request is created and again only once
        ``resend_after`` has passed since the code was last sent: never on every message.

        ``text`` is the message's text when it is text alone (None for a photo, a file):
        while the request holds fewer than ``hold_messages`` messages, it is held with it.
        """
        _check_provider(provider)
        now = self._clock.now()
        ttl = self.settings.pending_ttl
        clean_meta = {k: v for k, v in (meta or {}).items() if v}
        key = (provider, sender_id)
        held = self._holdable(text, now, clean_meta)
        quiet = self._settled(key, now, clean_meta, held)
        if quiet is not None:
            return RequestResult(outcome=RequestOutcome.PENDING, request=quiet, send_code=False)
        # First in a shared transaction, beside other strangers' asks (a database that can
        # runs them at once); near the cap, or to hold a message, again holding the state
        # alone, so the cap holds and no held message is lost to a concurrent one.
        with self._store.transaction(shared=True) as txn:
            result = self._ask(txn, provider, sender_id, now, clean_meta, held)
            epoch = self._store.pending_epoch(provider)  # what this transaction saw
        while result is None:  # an exclusive transaction always decides
            with self._store.transaction() as txn:
                result = self._ask(txn, provider, sender_id, now, clean_meta, held)
                epoch = self._store.pending_epoch(provider)
        if result.outcome is not RequestOutcome.CREATED or result.request is None:
            return result
        created = result.request
        with self._counter_lock:
            self._quiet[key] = (
                min(now + self.settings.resend_after, created.expires_at(ttl)),
                created,
                epoch,
            )
        log.info("pairing request created provider=%s sender=%s", provider, sender_id)
        return RequestResult(outcome=RequestOutcome.CREATED, request=created, send_code=True)

    def _ask(
        self,
        txn: StateTxn,
        provider: str,
        sender_id: str,
        now: datetime,
        meta: Mapping[str, str],
        held: HeldMessage | None,
    ) -> RequestResult | None:
        """A stranger's ask in ``txn``: None if a shared transaction came too near the cap,
        or would add a held message to a request, to decide it (the caller asks again,
        alone)."""
        ttl = self.settings.pending_ttl
        if txn.peers == 0:
            self._drop_expired(txn, provider, now, actor="system:expiry")
        view = txn.ask_view(provider, sender_id)  # one statement on a SQL backend
        mine, pending = view.request, view.pending
        if mine is not None and mine.created_at <= now - ttl:  # expired, not yet dropped
            if _close(txn, mine, now, "expire", "expired", actor="system:expiry"):
                pending -= 1
            mine = None
        if mine is not None:
            return self._repeat(txn, mine, now, meta, held)
        if view.allowed and _in_force(view.allowed_end, now):  # granted elsewhere, in force,
            # not yet heard by our gate
            return RequestResult(outcome=RequestOutcome.ALLOWED, request=None, send_code=False)
        if pending + txn.peers >= self.settings.max_pending_per_provider:
            if txn.peers:
                return None
            self._count_capped(txn, provider, sender_id, now, ttl)
            return RequestResult(outcome=RequestOutcome.CAPPED, request=None, send_code=False)
        for _ in range(_CODE_ATTEMPTS):
            created = PendingRequest(
                provider=provider,
                id=sender_id,
                code=self._new_code(),
                created_at=now,
                last_seen_at=now,
                meta=dict(meta),
                last_sent_at=now,
                held=() if held is None else (held,),
            )
            if txn.add_request(created):
                _stranger_audit(txn, now, provider, sender_id, "created")
                return RequestResult(
                    outcome=RequestOutcome.CREATED, request=created, send_code=True
                )
            mine = txn.request(provider, sender_id)
            if mine is not None:  # the sender's ask, handled at the same moment elsewhere
                return self._repeat(txn, mine, now, meta, held)
        raise RuntimeError(f"no unique pairing code after {_CODE_ATTEMPTS} draws")

    def settled_in_memory(
        self,
        provider: str,
        sender_id: str,
        meta: Mapping[str, str] | None = None,
        *,
        text: str | None = None,
    ) -> bool:
        """Answer a pending stranger's repeat message from memory when nothing is due.

        True when :meth:`request` would neither send the code again nor write anything (the
        stranger's request is pending, the reminder is not due, the name did not change, no
        message is to be held): the message is then settled with no store access and no
        thread hop. False means :meth:`request` must run.
        """
        clean_meta = {k: v for k, v in (meta or {}).items() if v}
        now = self._clock.now()
        held = self._holdable(text, now, clean_meta)
        return self._settled((provider, sender_id), now, clean_meta, held) is not None

    def _settled(
        self,
        key: tuple[str, str],
        now: datetime,
        meta: Mapping[str, str],
        held: HeldMessage | None,
    ) -> PendingRequest | None:
        with self._counter_lock:
            quiet = self._quiet.get(key)
            if quiet is None or now >= quiet[0] or (meta and meta != quiet[1].meta):
                return None
            if held is not None and len(quiet[1].held) < self.settings.hold_messages:
                return None
        if self._store.pending_epoch(key[0]) != quiet[2]:  # changed elsewhere: ask the store
            return None
        with self._counter_lock:
            self._seen[key] = now
        return replace(quiet[1], last_seen_at=now)

    def _holdable(
        self, text: str | None, now: datetime, meta: Mapping[str, str]
    ) -> HeldMessage | None:
        """The message to hold if messages are held and ``text`` may be (text alone, not
        empty, at most :data:`~bot.core.models.HELD_TEXT_LIMIT` bytes); else None."""
        if not self.settings.hold_messages or not text or not text.strip():
            return None
        if len(text) > HELD_TEXT_LIMIT or len(text.encode("utf-8")) > HELD_TEXT_LIMIT:
            return None
        name = PendingRequest.name_in(meta)
        return HeldMessage(text=text, at=now, name=name)

    def _repeat(
        self,
        txn: StateTxn,
        mine: PendingRequest,
        now: datetime,
        meta: Mapping[str, str],
        held: HeldMessage | None,
    ) -> RequestResult | None:
        """A pending stranger wrote again: write only what must survive a crash.

        That is the time the code was last sent (so a restart does not re-send it early), a
        changed name and a message to hold; the time of the message itself waits for the
        next write. None: a message to hold, in a shared transaction (where a concurrent
        message of the same sender could replace the request too and lose one of them).
        """
        if held is not None and len(mine.held) >= self.settings.hold_messages:
            held = None  # as many held as kept: this one is not
        if held is not None and txn.peers:
            return None
        last_sent = mine.last_sent_at or mine.created_at
        resend = now - last_sent >= self.settings.resend_after
        request = replace(
            mine,
            last_seen_at=now,
            meta=meta or mine.meta,
            last_sent_at=now if resend else mine.last_sent_at,
            held=mine.held if held is None else (*mine.held, held),
        )
        written = resend or held is not None or (bool(meta) and meta != mine.meta)
        if written:
            txn.put_request(request)
        key = (mine.provider, mine.id)
        next_send = (request.last_sent_at or request.created_at) + self.settings.resend_after
        with self._counter_lock:
            if written:
                self._seen.pop(key, None)
            else:
                self._seen[key] = now
            self._quiet[key] = (
                min(next_send, mine.expires_at(self.settings.pending_ttl)),
                request,
                self._store.pending_epoch(mine.provider),  # in the transaction that read it
            )
        return RequestResult(outcome=RequestOutcome.PENDING, request=request, send_code=resend)

    def _forget(self, provider: str, sender_id: str) -> None:
        """Drop what this process remembers of a sender's request (decided, allowed)."""
        with self._counter_lock:
            self._quiet.pop((provider, sender_id), None)
            self._seen.pop((provider, sender_id), None)

    def record(self, event: AuditEvent) -> None:
        """Write one audit line for something decided outside a pairing operation."""
        with self._store.transaction() as txn:
            txn.audit(event)

    def take_capped(self, provider: str) -> int:
        """Return how many strangers the cap turned away since the last call, and reset.

        A stranger counts once per pending TTL, however many messages they send."""
        with self._counter_lock:
            return self._capped.pop(provider, 0)

    # --- the owner's actions -----------------------------------------------------------------

    def approve(
        self,
        code: str,
        *,
        provider: str | None = None,
        actor: str,
        until: datetime | None = None,
    ) -> PendingRequest:
        """Approve the live request with this code: the sender joins the allowlist, for good
        or ``until`` then (a grant that ends).

        The allowlist is written before the request is dropped (see the store), so a crash
        can leave the request pending but never consume it without the grant.

        Raises:
            UnknownCodeError: no request (of ``provider``, if given) has this code.
            CodeExpiredError: the request expired; it is removed and cannot be approved.
            ValueError: ``until`` is not after now.
        """
        self._check_until(until)
        return self._decide(code, provider=provider, actor=actor, approve=True, until=until)

    def reject(self, code: str, *, provider: str | None = None, actor: str) -> PendingRequest:
        """Drop the live request with this code; the sender stays a stranger."""
        return self._decide(code, provider=provider, actor=actor, approve=False)

    def _decide(
        self,
        raw_code: str,
        *,
        provider: str | None,
        actor: str,
        approve: bool,
        until: datetime | None = None,
    ) -> PendingRequest:
        providers = [provider] if provider else list(KNOWN_PROVIDERS)
        for name in providers:
            _check_provider(name)
        code = codes.normalize_code(raw_code)
        now = self._clock.now()
        event, outcome = ("approve", "approved") if approve else ("reject", "rejected")
        expired: PendingRequest | None = None
        with self._store.transaction() as txn:
            found = self._find(txn, providers, code) if code else None
            if found is None:
                audit(txn, now, event, "unknown-code", actor=actor, provider=provider, subject="-")
            elif now >= found.expires_at(self.settings.pending_ttl):
                _close(txn, found, now, "expire", "expired", actor=actor)
                expired = found
            else:
                if approve:
                    txn.allow(found.provider, found.id, until=until)
                    txn.put_notice(_notice(found, now))
                _close(txn, found, now, event, outcome, actor=actor, detail=_until(until))
        if found is not None:
            self._forget(found.provider, found.id)
        where = f" for {provider}" if provider else ""
        if expired is not None:
            raise CodeExpiredError(
                f"the pairing request{where} from {expired.provider} sender {expired.id} "
                "expired; ask them to write again for a new code"
            )
        if found is None:
            raise UnknownCodeError(f"no pending pairing request{where} has that code")
        log.info(
            "pairing %s provider=%s sender=%s by=%s",
            "approved" if approve else "rejected",
            found.provider,
            found.id,
            actor,
        )
        return found

    def revoke(self, provider: str, sender_id: str, *, actor: str) -> str:
        """Remove a sender from the stored allowlist; their next message is a stranger's.

        ``sender_id`` as the owner or the ``pairbot`` command wrote it: taken in the
        platform's normal form, so it removes the entry whatever case either was written in.
        Return that form (the id revoked).
        """
        sender_id = _normal_id(provider, sender_id)
        now = self._clock.now()
        self._forget(provider, sender_id)
        with self._store.transaction() as txn:
            removed = txn.disallow(provider, sender_id)
            txn.drop_notice(provider, sender_id)  # never tell a revoked sender they may write
            if removed:
                audit(
                    txn,
                    now,
                    "revoke",
                    "revoked",
                    actor=actor,
                    provider=provider,
                    subject=sender_id,
                )
        if not removed:
            if sender_id in self._static.get(provider, frozenset()):
                raise AllowedByConfigError(
                    f"{provider} sender {sender_id} is allowed by the config's allow_from; "
                    "remove it there"
                )
            raise UnknownSubjectError(f"{provider} sender {sender_id} is not in the allowlist")
        return sender_id

    def allow(
        self, provider: str, sender_id: str, *, actor: str, until: datetime | None = None
    ) -> Granted:
        """Allow a sender directly (in the platform's normal form), for good or ``until``
        then. A sender allowed already gets this end instead of theirs (:attr:`Granted.CHANGED`).

        Raises:
            ValueError: ``until`` is not after now; an unknown provider.
        """
        sender_id = _normal_id(provider, sender_id)
        self._check_until(until)
        now = self._clock.now()
        with self._store.transaction() as txn:
            listed = txn.allow_has(provider, sender_id)
            before = txn.allow_end(provider, sender_id) if listed else None
            if not (listed and _in_force(before, now)):
                granted = Granted.ADDED
            else:
                granted = Granted.UNCHANGED if before == until else Granted.CHANGED
            if granted is not Granted.UNCHANGED:
                txn.allow(provider, sender_id, until=until)
            if granted is Granted.ADDED:
                asked = txn.request(provider, sender_id)
                if asked is not None:  # they asked: tell them, as an approval would
                    txn.put_notice(_notice(asked, now))
                txn.drop_request(provider, sender_id)
            if granted is not Granted.UNCHANGED:
                audit(
                    txn,
                    now,
                    "allow",
                    granted.value,
                    actor=actor,
                    provider=provider,
                    subject=sender_id,
                    detail=_until(until),
                )
        if granted is Granted.ADDED:
            self._forget(provider, sender_id)
        return granted

    def _check_until(self, until: datetime | None) -> None:
        if until is not None and until <= self._clock.now():
            raise ValueError("a grant that ends must end after now")

    # --- approved senders to tell ------------------------------------------------------------

    def notices(self) -> list[ApprovalNotice]:
        """Return the senders approved and not yet told, oldest approval first.

        What this process remembered of their requests is forgotten: an approval made by
        another process (the CLI) ended that request, and a revocation after it must find the
        sender a stranger again (a new code), not a pending request nobody can approve.
        """
        with self._store.transaction() as txn:
            notices = txn.notices()
        for notice in notices:
            self._forget(notice.provider, notice.sender_id)
        return notices

    def notice_sent(self, provider: str, sender_id: str) -> None:
        """Forget a notice once the sender has been told (they are told once) and every
        message held for them handed over."""
        with self._store.transaction() as txn:
            txn.drop_notice(provider, sender_id)

    def notice_progress(self, notice: ApprovalNotice) -> bool:
        """Write how far telling ``notice``'s sender got (:attr:`ApprovalNotice.told`, the
        held messages not yet handed over) if that approval still waits to be told; return
        whether it does. False: it was dropped meanwhile (a revocation) or replaced (a new
        approval), and nothing is written: nothing more is handed over for it."""
        with self._store.transaction() as txn:
            current = next(
                (
                    n
                    for n in txn.notices()
                    if n.provider == notice.provider and n.sender_id == notice.sender_id
                ),
                None,
            )
            if current is None or current.approved_at != notice.approved_at:
                return False
            txn.put_notice(notice)
        return True

    # --- listing and expiry ------------------------------------------------------------------

    def pending(self, provider: str | None = None) -> list[PendingRequest]:
        """Return live (unexpired) requests, oldest first."""
        now = self._clock.now()
        with self._store.transaction() as txn:
            everything = [r for name in _providers(provider) for r in txn.requests(name)]
        _, live = split_expired(everything, now=now, ttl=self.settings.pending_ttl)
        return sorted(live, key=lambda r: (r.created_at, r.provider, r.id))

    def find(self, code: str) -> PendingRequest | None:
        """Return the live request with this code, whatever its provider, or None."""
        normalized = codes.normalize_code(code)
        if normalized is None:
            return None
        now = self._clock.now()
        with self._store.transaction() as txn:
            found = self._find(txn, list(KNOWN_PROVIDERS), normalized)
        if found is None or now >= found.expires_at(self.settings.pending_ttl):
            return None
        return found

    def allowed_groups(self, provider: str | None = None) -> list[AllowGroup]:
        """Return who is allowed now: per provider, the stored grants that do not end (in
        file order), the config's entries those do not hold, then the stored grants that end
        and have not ended (soonest first), each sender once, by their longest grant.

        One consistent snapshot, taken under the store's lock and released before the caller
        shows anything: a slow reader of a long listing never holds up the bot.
        """
        now = self._clock.now()
        groups: list[AllowGroup] = []
        with self._store.transaction() as txn:
            for name in _providers(provider):
                static = self._static.get(name, frozenset())
                stored = txn.allow_from(name)
                ends = txn.allow_ends(name)
                if ends:  # a C loop: millions of grants for good are not walked in Python
                    stored = list(filterfalse(ends.__contains__, stored))
                config = [
                    i
                    for i in sorted(static)
                    if not txn.allow_has(name, i) or i in ends  # else held for good
                ]
                timed = sorted(
                    (end, i) for i, end in ends.items() if now < end and i not in static
                )
                groups += [
                    AllowGroup(provider=name, source=source, ids=ids)
                    for source, ids in ((AllowSource.STORE, stored), (AllowSource.CONFIG, config))
                    if ids
                ]
                groups += [
                    AllowGroup(provider=name, source=AllowSource.STORE, ids=[i], until=end)
                    for end, i in timed
                ]
        return groups

    def iter_allowed(self, provider: str | None = None) -> Iterator[AllowEntry]:
        """Yield the allowlist entry by entry, from one snapshot (see :meth:`allowed_groups`)."""
        for group in self.allowed_groups(provider):
            yield from group.entries()

    def allowed(self, provider: str | None = None) -> list[AllowEntry]:
        """Return the whole allowlist as a list (see :meth:`iter_allowed`)."""
        return list(self.iter_allowed(provider))

    def prune(self, *, actor: str = "system:scheduler") -> list[PendingRequest]:
        """Drop every expired request and every ended grant of every provider (each audited
        once, by the transaction that dropped it); return the requests dropped.

        Also writes the ``lastSeenAt`` of pending strangers who wrote since their request was
        last written (kept in memory until now, to spare a write per message).
        """
        now = self._clock.now()
        before: list[PendingRequest] = []
        with self._counter_lock:
            seen, self._seen = self._seen, {}
        try:
            with self._store.transaction() as txn:
                for name in KNOWN_PROVIDERS:
                    before += self._drop_expired(txn, name, now, actor=actor)
                    _end_grants(txn, name, now, actor=actor)
                for (name, sender_id), when in seen.items():
                    req = txn.request(name, sender_id)
                    if req is not None and when > req.last_seen_at:
                        txn.put_request(replace(req, last_seen_at=when))
        except BaseException:
            with self._counter_lock:
                for key, when in seen.items():
                    self._seen.setdefault(key, when)
            raise
        with self._counter_lock:
            horizon = now - self.settings.pending_ttl
            self._capped_seen = {k: t for k, t in self._capped_seen.items() if t > horizon}
            self._quiet = {k: v for k, v in self._quiet.items() if v[0] > now}
        return before

    # --- helpers -----------------------------------------------------------------------------

    def _drop_expired(
        self, txn: StateTxn, provider: str, now: datetime, *, actor: str
    ) -> list[PendingRequest]:
        """Drop the provider's expired requests (audited); return them."""
        expired = txn.requests_created_before(provider, now - self.settings.pending_ttl)
        for req in expired:
            _close(txn, req, now, "expire", "expired", actor=actor)
        return expired

    def _find(self, txn: StateTxn, providers: list[str], code: str) -> PendingRequest | None:
        return txn.request_with_code(code, providers)

    def _count_capped(
        self, txn: StateTxn, provider: str, sender_id: str, now: datetime, ttl: timedelta
    ) -> None:
        with self._counter_lock:  # each stranger counts once per TTL, however often they write
            first = self._capped_seen.get((provider, sender_id))
            if first is not None and now - first < ttl:
                return
            self._capped_seen[(provider, sender_id)] = now
            self._capped[provider] += 1
        _stranger_audit(txn, now, provider, sender_id, "capped")


def _in_force(end: datetime | None, now: datetime) -> bool:
    """Whether a stored grant ending at ``end`` (None: it does not end) lets its sender in
    at ``now``: up to, not at, the moment it ends."""
    return end is None or now < end


def _until(until: datetime | None) -> dict[str, str]:
    """The audit detail of a grant: when it ends, if it does."""
    return {} if until is None else {"until": iso(until)}


def _end_grants(txn: StateTxn, provider: str, now: datetime, *, actor: str) -> None:
    """Remove the provider's grants that ended by ``now``, each audited once: by the
    transaction that removed it, as :func:`_close` audits an expired request."""
    for sender_id, end in txn.allow_ends(provider, by=now).items():
        if txn.disallow(provider, sender_id, ending=end):
            txn.drop_notice(provider, sender_id)  # never tell "you're approved" after the end
            audit(
                txn,
                now,
                "grant.expire",
                "expired",
                actor=actor,
                provider=provider,
                subject=sender_id,
                detail=_until(end),
            )
            log.info("grant ended provider=%s sender=%s", provider, sender_id)


def _notice(req: PendingRequest, now: datetime) -> ApprovalNotice:
    """The notice of approving ``req``: its held messages move to it, in the same write."""
    return ApprovalNotice(
        provider=req.provider,
        sender_id=req.id,
        approved_at=now,
        chat_id=req.meta.get("chatId"),
        held=req.held,
    )


def _close(
    txn: StateTxn,
    req: PendingRequest,
    now: datetime,
    event: str,
    outcome: str,
    *,
    actor: str,
    detail: Mapping[str, str] | None = None,
) -> bool:
    """Drop a request (approved, rejected, expired) and audit how it ended: once, by the
    transaction that dropped it (a shared one may find it dropped by another). True if this
    transaction dropped it."""
    if not txn.drop_request(req.provider, req.id, code=req.code):
        return False
    audit(
        txn,
        now,
        event,
        outcome,
        actor=actor,
        provider=req.provider,
        subject=req.id,
        detail=detail,
    )
    return True


def _stranger_audit(
    txn: StateTxn, now: datetime, provider: str, sender_id: str, outcome: str
) -> None:
    """Audit a stranger's ask (``created``, or ``capped``: turned away over the cap)."""
    actor = f"{provider}:{sender_id}"
    audit(txn, now, "request", outcome, actor=actor, provider=provider, subject=sender_id)


def _check_provider(name: str) -> None:
    platform(name)  # ValueError naming the known ones


def _normal_id(provider: str, sender_id: str) -> str:
    """A sender id an owner or the ``pairbot`` command wrote, in the platform's normal form."""
    return platform(provider).ids.normalise(sender_id)  # ValueError naming the known ones


def _providers(provider: str | None) -> list[str]:
    if provider is None:
        return list(KNOWN_PROVIDERS)
    _check_provider(provider)
    return [provider]
