"""The APScheduler job that prunes expired DM and node requests and node invites every
``prune_interval``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.core.errors import PairbotError

log = logging.getLogger(__name__)

PRUNE_JOB_ID = "pairbot.prune"


class PruneScheduler:
    """Runs ``prune`` once at start and then every ``interval`` on the running event loop.

    The job is code, not data: a memory job store, re-added at each start, never two runs at
    once, missed runs coalesced into one.
    """

    def __init__(self, prune: Callable[[], Awaitable[object]], *, interval: timedelta) -> None:
        self._prune = prune
        self._interval = interval
        self._scheduler = AsyncIOScheduler(timezone=UTC)

    async def start(self) -> None:
        """Prune now, then start the interval job (call from inside the running loop)."""
        await self._run()
        self._scheduler.add_job(
            self._run,
            "interval",
            seconds=self._interval.total_seconds(),
            id=PRUNE_JOB_ID,
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=max(1, int(self._interval.total_seconds())),
        )
        self._scheduler.start()

    async def stop(self) -> None:
        """Stop scheduling; a prune already running finishes its (atomic) write."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    async def _run(self) -> None:
        try:
            await self._prune()
        except PairbotError as exc:  # e.g. a state file went bad: it names itself, one line
            log.warning("prune failed: %s", exc)
        except Exception:
            log.exception("prune failed")
