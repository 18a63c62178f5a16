"""Reading the audit log as it grows, whoever writes it: this bot, the CLI, another instance.

:class:`AuditTail` asks the store for the records after the position it reached
(:meth:`~bot.core.protocols.StateStore.audit_since`, in a worker thread: never on the event
loop) and hands them on. The metrics count what it reads; the events sent out are what it
reads (:mod:`bot.runtime.events`). Nothing on a message's path waits for it: an allowed
sender costs it nothing, and an audit line is read within one ``interval`` of its commit.

A database may show a record before one numbered below it commits (PostgreSQL's strangers'
asks commit side by side): the page then stops at the gap (:attr:`AuditPage.gap`). A gap that
is still there after :data:`GAP_WAIT` is a transaction that rolled back, and is stepped over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from bot.core.clock import Clock
from bot.core.errors import StoreError, StoreUnavailableError
from bot.core.protocols import StateStore
from bot.runtime.outage import StoreOutage

log = logging.getLogger(__name__)

GAP_WAIT = timedelta(seconds=10)
"""How long a gap in the log's numbering is waited for before it is stepped over."""

Records = list[tuple[str, dict[str, Any]]]
"""(the position after the record, the record), oldest first."""


class AuditTail:
    """The audit log after ``position``, read on demand (:meth:`read`) or every ``interval``
    (:meth:`run_forever`); each page goes to ``on_records``."""

    def __init__(
        self,
        store: StateStore,
        *,
        clock: Clock,
        on_records: Callable[[Records], None],
        outage: StoreOutage,
        position: str | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._on_records = on_records
        self._outage = outage
        self.position = position
        """Where the next read starts (None: at the log's end as the first read finds it)."""
        self._gap_since: tuple[str, datetime] | None = None
        self._failing = False

    async def read(self) -> None:
        """Hand on every record committed since the last read (page by page)."""
        if self.position is None:
            self.position = (await asyncio.to_thread(self._store.audit_since, None)).end
            return
        while True:
            page = await asyncio.to_thread(
                self._store.audit_since, self.position, skip_gap=self._gap_waited()
            )
            if page.records:
                self._on_records(page.records)
            self.position = page.end
            if not page.gap:
                self._gap_since = None
            elif self._gap_since is None or self._gap_since[0] != page.end:
                self._gap_since = (page.end, self._clock.now())  # a new gap: wait for it
            if not page.more:
                return

    def _gap_waited(self) -> bool:
        since = self._gap_since
        if since is None or since[0] != self.position:
            return False
        if self._clock.now() - since[1] < GAP_WAIT:
            return False
        log.debug("audit log: stepped over a gap after %s", self.position)
        return True

    async def run_forever(self, interval: float) -> None:
        """:meth:`read` every ``interval`` seconds; a store that fails is logged once."""
        while True:
            await self.read_logged()
            await asyncio.sleep(interval)

    async def read_logged(self) -> None:
        """:meth:`read`; an unreachable store goes to the outage log, another failure is logged
        once until a read succeeds again."""
        try:
            await self.read()
        except StoreUnavailableError as exc:
            self._outage.failed(exc)
        except StoreError as exc:
            if not self._failing:
                log.error("could not read the audit log: %s", exc)
            self._failing = True
        else:
            self._failing = False


__all__ = ["GAP_WAIT", "AuditTail", "Records"]
