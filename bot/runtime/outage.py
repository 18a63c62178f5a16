"""A state store that cannot be reached (a database server down): one outage, logged twice.

While it lasts the bot refuses closed: strangers get no code, an owner's command is answered
that nothing was changed, and allowed senders go on (the gate answers from memory). The store
reconnects by itself; :class:`StoreOutage` only keeps the log to one line when the outage is
first seen and one when a store call succeeds again, however many calls failed between.
"""

from __future__ import annotations

import logging
import time

from bot.core.errors import StoreUnavailableError

log = logging.getLogger(__name__)


class StoreOutage:
    """Whether the store is known to be unreachable, and since when (monotonic seconds)."""

    def __init__(self) -> None:
        self._since: float | None = None
        self._failed_calls = 0

    @property
    def down(self) -> bool:
        """Whether the last store call that said anything failed for want of the store."""
        return self._since is not None

    def failed(self, exc: StoreUnavailableError) -> None:
        """A store call failed because the store cannot be reached: logged the first time."""
        self._failed_calls += 1
        if self._since is None:
            self._since = time.monotonic()
            log.error(
                "the state store cannot be reached: %s. Until it is back, strangers get no "
                "code and approvals are refused; allowed senders go on. Retrying.",
                exc,
            )

    def ok(self) -> None:
        """A store call succeeded: the end of an outage, if there was one, is logged."""
        if self._since is None:
            return
        lasted, calls = time.monotonic() - self._since, self._failed_calls
        self._since, self._failed_calls = None, 0
        log.warning(
            "the state store is reachable again after %.0f s (%d call(s) refused meanwhile)",
            lasted,
            calls,
        )


__all__ = ["StoreOutage"]
