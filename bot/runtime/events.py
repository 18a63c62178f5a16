"""Events out: every audit event POSTed, signed, to the owner's URL (``events:`` in the config).

The events are the audit log itself, read as it grows (:mod:`bot.runtime.audittail`), so
what another process audits (the CLI approving, another instance) goes out too, and so does
what was audited while the bot was down: the position reached is saved in the store
(:meth:`~bot.core.protocols.Cursors.save_cursor`, key :data:`CURSOR_KEY`) once everything
before it was delivered, given up on or dropped. A first start begins at the log's end.

Each event is the audit record as ``audit.jsonl`` holds it (never a code or a token), POSTed
as JSON with the GitHub/Slack webhook signature: ``X-Pairbot-Timestamp`` (Unix seconds, made
at each try) and ``X-Pairbot-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">``
under the configured secret; ``X-Pairbot-Event-Id`` names the event (the same on every try
and after a restart: a receiver may see an event twice, and drops the second by it).

Delivery never touches a message's path: the log is read in the background, and a bounded
queue (:attr:`EventsTiming.queue`) holds what waits; when it is full the oldest waiting event
is dropped, counted (``pairbot_events_dropped_total``) and logged once per overflow. Events
of one subject (a sender on a platform, a node) are sent one at a time in the log's order,
each retried with a doubling pause for up to :attr:`EventsTiming.give_up` (1 h) before the
next; different subjects do not wait for each other (up to :attr:`EventsTiming.senders` at
once).

On PostgreSQL, instances on one state take turns: the one holding the cluster's ``events``
lease reads and sends, and a takeover goes on from the saved position.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx

from bot import __version__
from bot.core.clock import Clock
from bot.core.config import EventsConfig
from bot.core.errors import StoreError, StoreUnavailableError
from bot.core.protocols import Cluster, StateStore
from bot.runtime.audittail import AuditTail, Records
from bot.runtime.leases import LEASE_TTL, RENEW_EVERY
from bot.runtime.outage import StoreOutage

log = logging.getLogger(__name__)

CURSOR_KEY = "events:audit"
"""Where the position of the events sent is saved (:class:`~bot.core.protocols.Cursors`)."""
LEASE = "events"
"""The cluster lease of the instance that sends the events."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EventsTiming:
    """The numbers of events out (tests make them small)."""

    first_pause: float = 1.0
    """Seconds before the first retry; each next pause doubles."""
    longest_pause: float = 300.0
    give_up: timedelta = timedelta(hours=1)
    """How long one event is retried before it is given up on (on the injected clock)."""
    timeout: float = 10.0
    """Seconds one POST may take."""
    queue: int = 10_000
    """Events waiting at most; past that the oldest waiting is dropped."""
    senders: int = 8
    """Subjects whose events are sent at once."""
    save_every: timedelta = timedelta(seconds=5)
    """How often the position reached is saved while events flow."""


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Pairbot-Signature`` value of ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


@dataclass(eq=False, slots=True)
class _Event:
    before: str
    """The log's position before this event's record (where a restart sends it again)."""
    position: str
    subject: str
    kind: str
    body: bytes
    settled: bool = False
    """Delivered, given up on or dropped: the saved position may pass it."""
    taken: bool = False
    """A sender has it (it is no longer waiting, and cannot be dropped)."""


@dataclass(eq=False, kw_only=True)
class EventsOut:
    """Reads the audit log, queues each event of the chosen kinds, and sends them."""

    config: EventsConfig
    store: StateStore
    cluster: Cluster
    clock: Clock
    outage: StoreOutage
    interval: float
    """Seconds between two reads of the audit log."""
    timing: EventsTiming = field(default_factory=EventsTiming)
    transport: httpx.AsyncBaseTransport | None = None
    sent: int = field(default=0, init=False)
    failed: int = field(default=0, init=False)
    dropped: int = field(default=0, init=False)
    _waiting: int = field(default=0, init=False)
    _order: deque[_Event] = field(default_factory=deque, init=False)
    """Waiting events in the order read (the oldest first, for dropping; settled ones are
    passed over)."""
    _lanes: dict[str, deque[_Event]] = field(default_factory=dict, init=False)
    """Each subject's events not yet sent, in order; a subject is here while it has any."""
    _ready: asyncio.Queue[str] = field(default_factory=asyncio.Queue, init=False)
    _unsettled: deque[_Event] = field(default_factory=deque, init=False)
    _tail: AuditTail | None = field(default=None, init=False)
    _saved: str | None = field(default=None, init=False)
    _saved_at: datetime | None = field(default=None, init=False)
    _held: bool = field(default=False, init=False)
    _overflowing: bool = field(default=False, init=False)
    _receiver_down: bool = field(default=False, init=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, init=False)
    _client: httpx.AsyncClient | None = field(default=None, init=False)

    @property
    def queued(self) -> int:
        """Events waiting to be sent (not counting those being sent now)."""
        return self._waiting

    def stats(self) -> tuple[int, int, int, int]:
        """(sent, failed, dropped, queued), for the metrics."""
        return self.sent, self.failed, self.dropped, self._waiting

    async def start(self) -> None:
        """Begin reading the log and sending."""
        self._client = httpx.AsyncClient(timeout=self.timing.timeout, transport=self.transport)
        self._tasks = [
            asyncio.create_task(self._send_forever(), name=f"pairbot-events-{n}")
            for n in range(self.timing.senders)
        ]
        self._tasks.append(asyncio.create_task(self._read_forever(), name="pairbot-events-read"))

    async def aclose(self) -> None:
        """Stop reading and sending; save the position reached (what was not sent is sent
        after the next start) and give the lease up."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._held:
            with contextlib.suppress(StoreError):
                await self._save(force=True)
            with contextlib.suppress(Exception):
                await self._call(self.cluster.release, LEASE)
            self._held = False
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- reading ------------------------------------------------------------------------------

    async def _read_forever(self) -> None:
        renew_at: datetime | None = None
        while True:
            now = self.clock.now()
            try:
                if renew_at is None or now >= renew_at:
                    await self._take_turn()
                    renew_at = now + timedelta(seconds=RENEW_EVERY)
                if self._held and self._tail is not None:
                    await self._tail.read_logged()
                    await self._save()
            except StoreUnavailableError as exc:
                self.outage.failed(exc)
            except StoreError as exc:
                log.error("events: %s", exc)
            except Exception:
                log.exception("events: reading the audit log failed")
            await asyncio.sleep(self.interval)

    async def _take_turn(self) -> None:
        """Take or renew the lease; on taking it, go on from the saved position."""
        held = await self._call(self.cluster.hold, LEASE, now=self.clock.now(), ttl=LEASE_TTL)
        if held and not self._held:
            position = await asyncio.to_thread(self.store.cursor, CURSOR_KEY)
            if position is None:  # the first start: from the log's end
                position = (await asyncio.to_thread(self.store.audit_since, None)).end
            self._tail = AuditTail(
                self.store,
                clock=self.clock,
                on_records=self._add,
                outage=self.outage,
                position=position,
            )
            self._saved = None
            self._unsettled.clear()
            await self._save(force=True)
        elif not held and self._held:
            log.info("events: another instance sends them now")
            self._tail = None
        self._held = held

    async def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        """A cluster call: on the loop for a cluster in memory, else in a worker thread."""
        if self.cluster.in_memory:
            return method(*args, **kwargs)
        return await asyncio.to_thread(method, *args, **kwargs)

    def _add(self, records: Records) -> None:
        """Queue the events of ``records`` (read after the tail's position) of the kinds chosen."""
        kinds = self.config.kinds
        before = self._tail.position if self._tail is not None else None
        for position, record in records:
            kind = str(record.get("event", ""))
            if before is not None and (not kinds or kind in kinds):
                subject = f"{record.get('provider', '')}:{record.get('subject', '')}"
                body = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()
                self._put(_Event(before, position, subject, kind, body))
            before = position

    def _put(self, event: _Event) -> None:
        while self._waiting >= self.timing.queue and self._drop_oldest():
            pass
        self._unsettled.append(event)
        self._order.append(event)
        self._waiting += 1
        lane = self._lanes.get(event.subject)
        if lane is None:
            self._lanes[event.subject] = deque([event])
            self._ready.put_nowait(event.subject)
        else:
            lane.append(event)
        if len(self._order) > 2 * self.timing.queue:  # settled ones passed over: forget them
            self._order = deque(e for e in self._order if not (e.settled or e.taken))

    def _drop_oldest(self) -> bool:
        """Drop the oldest event still waiting; False if none waits."""
        while self._order:
            oldest = self._order.popleft()
            if oldest.settled or oldest.taken:
                continue
            oldest.settled = True
            self._waiting -= 1
            self.dropped += 1
            if not self._overflowing:
                self._overflowing = True
                log.warning(
                    "events: %d are waiting, the most kept: the oldest are dropped "
                    "(pairbot_events_dropped_total counts them); is the receiver down?",
                    self.timing.queue,
                )
            return True
        return False

    async def _save(self, *, force: bool = False) -> None:
        """Save the position before the first event not yet settled (or the tail's own, when
        every event read is settled), if it moved and ``save_every`` passed."""
        while self._unsettled and self._unsettled[0].settled:
            self._unsettled.popleft()
        tail = self._tail
        if tail is None or tail.position is None:
            return
        position = self._unsettled[0].before if self._unsettled else tail.position
        now = self.clock.now()
        due = self._saved_at is None or now - self._saved_at >= self.timing.save_every
        if position == self._saved or not (force or due):
            return
        await asyncio.to_thread(self.store.save_cursor, CURSOR_KEY, position)
        self._saved, self._saved_at = position, now

    # --- sending ------------------------------------------------------------------------------

    async def _send_forever(self) -> None:
        while True:
            subject = await self._ready.get()
            lane = self._lanes[subject]
            while lane:
                event = lane.popleft()
                if event.settled:  # dropped while it waited
                    continue
                event.taken = True
                self._waiting -= 1
                try:
                    await self._deliver(event)
                except Exception:  # never lose the sender: this event is given up on
                    self.failed += 1
                    log.exception("events: sending a %s event failed", event.kind)
                event.settled = True
            del self._lanes[subject]
            if not self._waiting:
                self._overflowing = False

    async def _deliver(self, event: _Event) -> None:
        """POST ``event`` until it is taken (2xx) or :attr:`EventsTiming.give_up` passed."""
        first = self.clock.now()
        pause = self.timing.first_pause
        tries = 0
        while True:
            tries += 1
            why = await self._post(event)
            if why is None:
                self.sent += 1
                if self._receiver_down:
                    self._receiver_down = False
                    log.info("events: the receiver takes events again")
                return
            if not self._receiver_down:
                self._receiver_down = True
                log.warning(
                    "events: the receiver did not take an event (%s); retrying with a "
                    "doubling pause for up to %s",
                    why,
                    self.timing.give_up,
                )
            if self.clock.now() - first >= self.timing.give_up:
                self.failed += 1
                log.warning(
                    "events: gave up on a %s event after %d tries over %s (last: %s)",
                    event.kind,
                    tries,
                    self.timing.give_up,
                    why,
                )
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, self.timing.longest_pause)

    async def _post(self, event: _Event) -> str | None:
        """One try; None if the receiver took it, else why not (no URL, no secret)."""
        assert self._client is not None  # noqa: S101 (started before any sender runs)
        timestamp = str(int(self.clock.now().timestamp()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"pairbot/{__version__}",
            "X-Pairbot-Event": event.kind,
            "X-Pairbot-Event-Id": event.position,
            "X-Pairbot-Timestamp": timestamp,
            "X-Pairbot-Signature": signature(self.config.secret, timestamp, event.body),
        }
        try:
            response = await self._client.post(
                self.config.url, content=event.body, headers=headers
            )
        except httpx.TimeoutException:
            return "timed out"
        except (
            Exception
        ) as exc:  # httpx.HTTPError, an invalid URL, ... (no text: it may hold the URL)
            return type(exc).__name__
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"


__all__ = ["CURSOR_KEY", "LEASE", "EventsOut", "EventsTiming", "signature"]
