"""Connectors that allow one consumer, received on by one instance at a time.

Telegram's getUpdates, Discord's gateway and signal-cli's event stream hand each event to
one consumer only (or to every one, which is as bad): a provider says so with
``one_consumer`` (:class:`~bot.core.protocols.TakesTurns`). Every instance starts such a
provider, and all of them send on it; the one that holds the cluster's lease
``connector:<name>`` (:meth:`~bot.core.protocols.Cluster.hold`) also receives.

:class:`ConnectorLease` is that turn-taking for one provider. At start it tries the lease
once: held, the provider starts receiving (and a failure to start fails the app's start, as
without a lease); not held, it starts for sending only (a bad token still fails the start).
Then, every :attr:`LeaseTiming.renew_every` seconds while it holds the lease, it renews it,
and the moment a renewal fails or is refused it stops receiving (the events in hand are
handled and confirmed, the provider goes on sending). While another instance holds the
lease it tries to take it every :attr:`LeaseTiming.try_every` seconds and, once it has it,
starts receiving. A stop stops the provider, then gives the lease up, so another instance
takes over at its next try.

The takeover when the holder dies without a word (``kill -9``): its lease runs out at most
``ttl`` after its last renewal (10 s), an instance standing by tries within ``try_every``
after that (2 s), and starting to receive takes a few hundred milliseconds: under 13 s, with
room for a slow start within 15 s. A holder that cannot renew stops receiving after at most
``renew_every`` plus ``answer_within`` (6 s: a pause and a renewal that did not answer in
time), well before its
lease runs out, so two instances receive at once only if their clocks disagree by more than
the ``ttl`` minus that.

On a JSON or SQLite state the cluster is this process alone (``LocalCluster``): the lease is
always this instance's, the provider starts receiving at once, and nothing changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta

from bot.core.clock import Clock
from bot.core.protocols import Cluster, OnInbound, TakesTurns

log = logging.getLogger(__name__)

LEASE_TTL = timedelta(seconds=10)
"""How long a connector's lease lasts after each renewal."""
RENEW_EVERY = 3.0
"""Seconds between two renewals by the holder (three tries before the lease runs out)."""
TRY_EVERY = 2.0
"""Seconds between two tries to take the lease while another instance holds it."""
ANSWER_WITHIN = 3.0
"""Seconds the cluster has to answer a try or a renewal before it counts as refused."""


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    """The lease's numbers (tests make them short)."""

    ttl: timedelta = LEASE_TTL
    renew_every: float = RENEW_EVERY
    try_every: float = TRY_EVERY
    answer_within: float = ANSWER_WITHIN


def lease_name(provider: str) -> str:
    """The cluster lease of the connector ``provider`` (a provider name: no secret)."""
    return f"connector:{provider}"


class ConnectorLease:
    """One provider that allows one consumer, received on while this instance holds its
    lease (see the module's doc)."""

    def __init__(
        self,
        name: str,
        provider: TakesTurns,
        *,
        cluster: Cluster,
        clock: Clock,
        timing: LeaseTiming = LeaseTiming(),
    ) -> None:
        self.name = name
        self.lease = lease_name(name)
        self._provider = provider
        self._cluster = cluster
        self._clock = clock
        self._timing = timing
        self._held = False
        self._failing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def held(self) -> bool:
        """Whether this instance holds the lease (as of its last renewal) and receives."""
        return self._held and self._provider.receiving

    async def start(self, on_inbound: OnInbound) -> None:
        """Start the provider, receiving if the lease could be taken, else for sending; then
        keep the lease, or keep trying to take it.

        Raises:
            Exception: whatever the provider's start raises (the lease is given up).
        """
        held = await self._hold()
        try:
            await self._provider.start(on_inbound, receive=held)
        except BaseException:
            if held:
                await self._release()
            raise
        self._held = held
        if not held:
            log.info(
                "%s: %s receives on it; this instance sends, and takes over if it goes",
                self.name,
                await self._holder() or "another instance",
            )
        self._task = asyncio.create_task(self._keep(), name=f"pairbot-lease-{self.name}")

    async def stop(self) -> None:
        """Stop keeping the lease, stop the provider (the events in hand are handled and
        confirmed), then give the lease up: another instance takes over at its next try."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await self._provider.stop()
        finally:
            if self._held:
                self._held = False
                await self._release()

    async def _keep(self) -> None:
        timing = self._timing
        while True:
            await asyncio.sleep(timing.renew_every if self._held else timing.try_every)
            held = await self._hold()
            if held and not self._provider.receiving:
                try:
                    await self._provider.start_receiving()
                except Exception as exc:  # let another instance try
                    log.error(
                        "%s: took over, but could not start receiving (%s); giving the turn up",
                        self.name,
                        type(exc).__name__,
                    )
                    await self._release()
                    held = False
                else:
                    log.info("%s: took over: this instance receives", self.name)
            elif not held and self._provider.receiving:
                log.warning(
                    "%s: the lease could not be renewed: this instance stops receiving (and "
                    "goes on sending)",
                    self.name,
                )
                await self._provider.stop_receiving()
            self._held = held

    async def _hold(self) -> bool:
        """Take or renew the lease; False if another holds it, or if the cluster did not
        answer within ``answer_within`` (it may hold it then: the next try says)."""
        try:
            async with asyncio.timeout(self._timing.answer_within):
                held = await asyncio.to_thread(
                    self._cluster.hold, self.lease, now=self._clock.now(), ttl=self._timing.ttl
                )
        except Exception as exc:
            if not self._failing:
                log.warning(
                    "%s: the cluster did not answer for the lease (%s)",
                    self.name,
                    type(exc).__name__,
                )
            self._failing = True
            return False
        if self._failing:
            log.info("%s: the cluster answers for the lease again", self.name)
            self._failing = False
        return held

    async def _release(self) -> None:
        try:
            await asyncio.to_thread(self._cluster.release, self.lease)
        except Exception as exc:  # it runs out by itself within the ttl
            log.warning("%s: giving the lease up failed (%s)", self.name, type(exc).__name__)

    async def _holder(self) -> str | None:
        try:
            holders = await asyncio.to_thread(self._cluster.holders, now=self._clock.now())
        except Exception:
            return None
        return holders.get(self.lease)


__all__ = [
    "ANSWER_WITHIN",
    "LEASE_TTL",
    "RENEW_EVERY",
    "TRY_EVERY",
    "ConnectorLease",
    "LeaseTiming",
    "lease_name",
]
