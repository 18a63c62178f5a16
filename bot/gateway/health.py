"""Readiness of the running bot, as ``GET /readyz`` on the gateway's port tells it.

Ready means: the bot has started and is not stopping, the state store answers its
read-only :meth:`~bot.core.protocols.StateStore.check` (reachable, schema not newer than this
pairbot, nothing damaged), and every provider is running. The gateway knows no store and no
provider: the running app hands it a :class:`ReadinessSources` of plain callables.

The store check runs in a worker thread (it may wait on a database), never on the event
loop, bounded by ``timeout``; its answer is kept for ``interval`` (a load balancer polling
every 100 ms causes one check a second), or for ten times what the check took if that is
longer (a check that reads a large state, such as SQLite's ``quick_check``, then takes at
most a tenth of the time), and at most one check runs at a time, however many requests wait
for it. What is wrong is named by a short word per part (``unreachable``,
``schema newer``, ...), never by the error's text: a path, a host or a DSN stays in the log,
where one line says when the store stops (and starts again) answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot.core.clock import Clock
from bot.core.errors import (
    SchemaVersionError,
    StoreCorruptError,
    StoreError,
    StoreLockTimeoutError,
    StoreUnavailableError,
)

log = logging.getLogger(__name__)

SPACING = 10
"""A store check's answer is kept for at least this many times the check's own duration."""
RUNNING = "running"
"""A provider's state when it receives and sends (the providers' ``State.RUNNING`` value)."""


class Phase(enum.Enum):
    """Where the running app is in its life."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadinessSources:
    """What readiness is read from, as the app hands it over."""

    backend: str
    """The store's backend name (``json``, ``sqlite``, ``postgres``): no path, no DSN."""
    check_store: Callable[[], None]
    """The store's read-only check: returns if usable, raises (a StoreError) if not. Blocking."""
    providers: Callable[[], Mapping[str, str]]
    """Each provider's name and lifecycle state (``running``, ``stopped``, ...)."""
    phase: Callable[[], Phase]
    """Whether the app is starting, running or stopping."""
    instance: Callable[[], Mapping[str, object]] | None = None
    """Who answers: this instance's id, version, host, pid and start time (``pairbot status``
    reads them on a single-machine state, where no other instance can be asked)."""


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """One store check's outcome: ``problem`` is None when the store can be used."""

    problem: str | None = None
    detail: str = ""
    """The error's own text, for the log only (it may name a path or a host)."""
    took: timedelta = timedelta(0)
    """How long the check ran (zero when it gave no answer in time)."""

    @property
    def ok(self) -> bool:
        """Whether the store can be used."""
        return self.problem is None


_PROBLEMS: tuple[tuple[type[StoreError], str], ...] = (
    (StoreUnavailableError, "unreachable"),
    (SchemaVersionError, "schema newer than this pairbot"),
    (StoreCorruptError, "damaged"),
    (StoreLockTimeoutError, "lock held too long"),
)


def problem_of(exc: Exception) -> str:
    """The short word naming what a failed store check says (no text of the error's own)."""
    for kind, word in _PROBLEMS:
        if isinstance(exc, kind):
            return word
    return "unusable" if isinstance(exc, StoreError) else "check failed"


class Readiness:
    """Answers whether the bot is ready; checks the store at most once per ``interval`` (or
    per ten times the last check's duration, if longer)."""

    def __init__(
        self,
        sources: ReadinessSources,
        *,
        clock: Clock,
        interval: timedelta = timedelta(seconds=1),
        timeout: float = 2.0,
    ) -> None:
        self._sources = sources
        self._clock = clock
        self._interval = interval
        self._timeout = timeout
        self._last: StoreStatus | None = None
        self._last_at: datetime | None = None
        self._keep = interval
        self._checking: asyncio.Future[StoreStatus] | None = None

    async def report(self) -> tuple[bool, dict[str, Any]]:
        """Whether the bot is ready, and the body saying so (or what is not)."""
        store = await self._store()
        phase = self._sources.phase()
        providers = dict(self._sources.providers())
        problems: list[str] = []
        if phase is not Phase.RUNNING:
            problems.append(f"pairbot is {phase.value}")
        if store.problem is not None:
            problems.append(f"store: {store.problem}")
        problems += [f"{name}: {state}" for name, state in providers.items() if state != RUNNING]
        body: dict[str, Any] = {
            "status": "ready" if not problems else _not_ready(phase),
            "store": {"backend": self._sources.backend, "ok": store.ok},
            "providers": providers,
        }
        if store.problem is not None:
            body["store"]["problem"] = store.problem
        if self._sources.instance is not None:
            body["instance"] = dict(self._sources.instance())
        if problems:
            body["problems"] = problems
        return not problems, body

    async def _store(self) -> StoreStatus:
        now = self._clock.now()
        if (
            self._last is not None
            and self._last_at is not None
            and self._last_at <= now < self._last_at + self._keep
        ):
            return self._last
        if self._checking is None or self._checking.done():  # one check at a time
            self._checking = asyncio.ensure_future(asyncio.to_thread(self._check))
        try:
            status = await asyncio.wait_for(asyncio.shield(self._checking), self._timeout)
        except TimeoutError:
            status = StoreStatus(f"no answer within {self._timeout:g}s")
        self._note(status)
        self._last, self._last_at = status, self._clock.now()
        self._keep = max(self._interval, status.took * SPACING)
        return status

    def _check(self) -> StoreStatus:
        began = self._clock.now()
        try:
            self._sources.check_store()
        except Exception as exc:  # any failure means "not ready"; the kind is named
            return StoreStatus(problem_of(exc), detail=str(exc), took=self._clock.now() - began)
        return StoreStatus(took=self._clock.now() - began)

    def _note(self, status: StoreStatus) -> None:
        """One log line when the store stops passing its check, one when it passes again."""
        was_ok = self._last is None or self._last.ok
        if status.ok and not was_ok:
            log.info("readiness: the store passes its check again")
        elif not status.ok and was_ok:
            detail = f": {status.detail}" if status.detail else ""
            log.warning("readiness: the store fails its check (%s)%s", status.problem, detail)

    async def aclose(self) -> None:
        """Stop waiting for a check still running (its thread ends on its own)."""
        checking, self._checking = self._checking, None
        if checking is not None and not checking.done():
            checking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checking


def _not_ready(phase: Phase) -> str:
    return phase.value if phase is not Phase.RUNNING else "not ready"


__all__ = [
    "RUNNING",
    "SPACING",
    "Phase",
    "Readiness",
    "ReadinessSources",
    "StoreStatus",
    "problem_of",
]
