"""Work that one instance of several must do alone: taken as a claim on the cluster, renewed
while it runs, then kept (done) or given back (failed).

Several instances on one state may be handed the same work: a platform event redelivered to
another instance, an approved sender every instance sees in the outbox. :class:`ClaimedWork`
takes a :meth:`~bot.core.protocols.Cluster.claim` on the work's key before it starts; the
claim is short (``ttl``), so an instance that dies mid-work holds it at most that long, and
one task renews every claim in flight every ``ttl / 3`` while the work runs. Work done keeps
its claim for ``kept`` (a late redelivery finds it taken); work that failed gives it back at
once (another instance, or a retry, may do it).

The cluster is blocking: every call runs in a worker thread, and the renewals and the keeps
of work done go in one call per round, so work done costs the work's path one call (the
claim), not two.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from bot.core.clock import Clock
from bot.core.errors import StoreUnavailableError
from bot.core.protocols import Cluster
from bot.runtime.outage import StoreOutage

_T = TypeVar("_T")

log = logging.getLogger(__name__)

UNREACHABLE_PAUSE = timedelta(seconds=1)
"""After the cluster could not be reached, how long work goes on unclaimed (fail open)
before a claim is tried again: the cluster is not waited for on every message of an outage."""
DONE_BACKLOG = 10_000
"""Claims of work done waiting to be kept, at most (past that, the oldest just run out)."""


class ClaimedWork:
    """Claims on the cluster for one kind of work (inbound events, telling approved senders).

    Args:
        cluster: the cluster the instances share.
        clock: the injected clock (every ``now`` handed to the cluster).
        outage: where an unreachable cluster is told (one log line per outage).
        ttl: how long a claim lasts unless renewed: how long the work of an instance that
            died stays taken.
        kept: how long a claim outlives the work done.
        fail_open: when the cluster cannot be reached, do the work unclaimed (True: inbound
            messages, whose duplicates are the lesser harm) or raise (False).
    """

    def __init__(
        self,
        cluster: Cluster,
        *,
        clock: Clock,
        outage: StoreOutage,
        ttl: timedelta,
        kept: timedelta,
        fail_open: bool,
    ) -> None:
        self._cluster = cluster
        self._clock = clock
        self._outage = outage
        self._ttl = ttl
        self._kept = kept
        self._fail_open = fail_open
        self._in_flight: set[str] = set()
        self._done: dict[str, None] = {}
        """Keys of work done whose claims are to be kept (in order, oldest first)."""
        self._unreachable_until: datetime | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def renew_every(self) -> float:
        """Seconds between two renewals of the claims in flight (a third of ``ttl``)."""
        return self._ttl.total_seconds() / 3

    async def take(self, key: str) -> bool:
        """Claim ``key`` for this instance: True if the work is ours (renewed until
        :meth:`done`), False if another instance (or this one) has it.

        While the cluster cannot be reached: True without a claim if ``fail_open`` (and
        :meth:`done` then does nothing), else the :class:`StoreUnavailableError`.
        """
        now = self._clock.now()
        if self._fail_open and self._unreachable_until is not None:
            if now < self._unreachable_until:
                return True
            self._unreachable_until = None
        try:
            taken = await self._call(self._cluster.claim, key, now=now, ttl=self._ttl)
        except StoreUnavailableError as exc:
            if not self._fail_open:
                raise
            self._outage.failed(exc)
            self._unreachable_until = now + UNREACHABLE_PAUSE
            return True
        if taken:
            self._in_flight.add(key)
            self._start_renewing()
        return taken

    async def done(self, key: str, *, ok: bool) -> None:
        """The work on ``key`` ended: if ``ok``, its claim is kept for ``kept`` (with the
        next renewal, at most ``ttl / 3`` later); if not, it is given back now."""
        if key not in self._in_flight:
            return  # taken while the cluster was away: nothing to keep or give back
        self._in_flight.discard(key)
        if ok:
            self._done[key] = None
            while len(self._done) > DONE_BACKLOG:
                del self._done[next(iter(self._done))]
            return
        try:
            await self._call(self._cluster.unclaim, key)
        except StoreUnavailableError as exc:  # it runs out by itself within ttl
            self._outage.failed(exc)

    async def flush(self) -> None:
        """Renew the claims in flight and keep those of work done, now (one cluster call)."""
        in_flight, done = list(self._in_flight), list(self._done)
        if not in_flight and not done:
            return
        self._done.clear()
        try:
            await self._call(self._renew, in_flight, done, self._clock.now())
        except StoreUnavailableError as exc:
            self._outage.failed(exc)
            for key in done:  # kept on the next round; claims in flight run out meanwhile
                self._done.setdefault(key, None)

    async def _call(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
        """A cluster call: made here when the cluster is in memory (a process alone: the
        message path pays no thread hop for it), else in a worker thread."""
        if self._cluster.in_memory:
            return fn(*args, **kwargs)
        return await asyncio.to_thread(fn, *args, **kwargs)

    def _renew(self, in_flight: list[str], done: list[str], now: datetime) -> None:
        cluster = self._cluster
        for key in in_flight:
            cluster.keep(key, now=now, ttl=self._ttl)
        for key in done:
            cluster.keep(key, now=now, ttl=self._kept)

    def _start_renewing(self) -> None:
        if self._renewer is None and not self._closed:
            self._renewer = asyncio.create_task(self._renew_forever(), name="pairbot-claims")

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.renew_every)
            try:
                await self.flush()
            except Exception:  # the next round tries again; claims in flight may run out
                log.exception("renewing cluster claims failed")

    async def aclose(self) -> None:
        """Stop renewing; keep the claims of work done (a clean stop loses none of them)."""
        self._closed = True
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        with contextlib.suppress(Exception):
            await self.flush()


__all__ = ["UNREACHABLE_PAUSE", "ClaimedWork"]
