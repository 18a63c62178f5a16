"""This instance's heartbeat on the cluster: that it runs, and what it is and holds.

Every :data:`BEAT_EVERY` seconds (the first when the app is running, and one more as it
starts to stop) the instance tells the cluster (:meth:`~bot.core.protocols.Cluster.beat`)
its version, host, process id, phase, whether it is ready (running, every provider running,
the store not known to be down: ``GET /readyz`` also checks the store, a beat does not), and
the leases it holds (the connectors that allow one consumer), so ``pairbot
status`` can list every instance seen lately and what each does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from datetime import datetime

from bot import __version__
from bot.core.clock import Clock
from bot.core.errors import StoreUnavailableError
from bot.core.protocols import Cluster
from bot.gateway.health import Phase
from bot.runtime.outage import StoreOutage

log = logging.getLogger(__name__)

BEAT_EVERY = 10.0
"""Seconds between two heartbeats."""
LAST_BEAT_WAIT = 2.0
"""Seconds a stopping instance waits at most for its last beat (a cluster away must not hold
up the stop)."""


class Heartbeat:
    """Beats for this instance: :meth:`run_forever` while the app runs, :meth:`last` at stop.

    Args:
        cluster: the cluster the instances share.
        clock: the injected clock.
        phase: the app's phase now.
        ready: whether the app is ready now, as it knows without a check.
        outage: where an unreachable cluster is told (one log line per outage).
        every: seconds between two beats.
    """

    def __init__(
        self,
        cluster: Cluster,
        *,
        clock: Clock,
        phase: Callable[[], Phase],
        ready: Callable[[], bool],
        outage: StoreOutage,
        every: float = BEAT_EVERY,
    ) -> None:
        self._cluster = cluster
        self._clock = clock
        self._phase = phase
        self._ready = ready
        self._outage = outage
        self.every = every
        self._host = socket.gethostname()
        self._failing = False

    async def run_forever(self) -> None:
        """Beat now, then every :attr:`every` seconds, until cancelled."""
        while True:
            await self.beat(ready=self._ready())
            await asyncio.sleep(self.every)

    async def last(self) -> None:
        """The beat of an instance that starts to stop: not ready, whatever it still holds."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.beat(ready=False), LAST_BEAT_WAIT)

    async def beat(self, *, ready: bool) -> None:
        """Tell the cluster this instance is alive, with its facts now; a cluster that cannot
        be reached is logged once per outage, and the next beat tries again."""
        try:
            await asyncio.to_thread(self._beat, self._clock.now(), ready)
        except StoreUnavailableError as exc:
            self._outage.failed(exc)
        except Exception as exc:
            if not self._failing:  # once until a beat goes through again
                why = type(exc).__name__  # its text may quote the cluster's address
                log.warning("heartbeat failed (%s); retrying every %gs", why, self.every)
            self._failing = True
        else:
            self._failing = False

    def _beat(self, now: datetime, ready: bool) -> None:
        cluster = self._cluster
        held = sorted(
            lease
            for lease, holder in cluster.holders(now=now).items()
            if holder == cluster.instance_id
        )
        facts = {
            "version": __version__,
            "host": self._host,
            "pid": os.getpid(),
            "phase": self._phase().value,
            "ready": ready,
            "held": held,
        }
        cluster.beat(now=now, facts=facts)


__all__ = ["BEAT_EVERY", "Heartbeat"]
