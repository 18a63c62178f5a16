"""Who wrote lately: whether a send surely falls inside WhatsApp's 24-hour window.

WhatsApp delivers a free-form message only to someone who wrote to the business in the last
24 hours (Graph error 131047 otherwise). The Cloud API usually takes such a send and reports
the refusal a moment later in a ``failed`` status webhook, so a send to someone whose window
this process cannot vouch for waits for that verdict
(:class:`~providers.whatsapp.provider.WhatsAppProvider`). :class:`RecentWriters` vouches for
whoever it saw write within 23 hours (an hour kept for clock skew and webhook delays), by two
clocks: this process's own, and Meta's (the newest webhook timestamp seen), so a message
delivered late after an outage counts from when it was written.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timedelta

WITHIN = timedelta(hours=23)
"""How recent a message must be to vouch for its sender's window (24 hours, less a margin)."""
NEWS_EVERY = timedelta(hours=1)
"""How often a sender who keeps writing is news for the other instances (within this of the
last time, they vouch for the window anyway)."""


class RecentWriters:
    """The last message seen from each sender (the newest ``size`` senders), and Meta's clock.

    Args:
        size: senders remembered; one forgotten is no longer vouched for (a send to them
            waits for its verdict, nothing worse).
        within: how recent a message vouches for its sender.
        news_every: how long after a sender's message another one is news again.
        now: this process's clock, in seconds (monotonic).
    """

    def __init__(
        self,
        *,
        size: int = 10_000,
        within: timedelta = WITHIN,
        news_every: timedelta = NEWS_EVERY,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._size = size
        self._within = within
        self._news_every = news_every
        self._now = now
        self._wrote: OrderedDict[str, tuple[float, datetime | None]] = OrderedDict()
        self._meta_now: datetime | None = None

    def saw(self, at: datetime | None) -> None:
        """A webhook Meta stamped ``at``: its clock is at least there."""
        if at is not None and (self._meta_now is None or at > self._meta_now):
            self._meta_now = at

    def wrote(self, sender: str, at: datetime | None) -> bool:
        """``sender`` wrote to the business, at ``at`` by Meta's clock (if it said). True if
        that is news: nothing was recorded of ``sender`` in the last ``news_every``."""
        self.saw(at)
        now = self._now()
        before = self._wrote.get(sender)
        self._wrote[sender] = (now, at)
        self._wrote.move_to_end(sender)
        while len(self._wrote) > self._size:
            self._wrote.popitem(last=False)
        return before is None or now - before[0] >= self._news_every.total_seconds()

    def vouch(self, recipient: str) -> bool:
        """Whether ``recipient`` surely wrote within the window, by both clocks."""
        seen = self._wrote.get(recipient)
        if seen is None:
            return False
        here, at = seen
        if self._now() - here >= self._within.total_seconds():
            return False
        return at is None or self._meta_now is None or self._meta_now - at < self._within


__all__ = ["NEWS_EVERY", "WITHIN", "RecentWriters"]
