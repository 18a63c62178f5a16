"""What one network address may try: pair requests, connects, and failed verifications.

Every address has three budgets per window (a minute by default), counted across
connections (:class:`~bot.gateway.guard.WindowLimiter`):

- failed verifications: a wrong operator token, a wrong node token or signature, an unknown
  pickup, a spent or expired invite. They share one budget, the operator token's included,
  so guessing one kind of secret spends the budget for all; once it is used up, every
  attempt that shows a secret (``operator.connect``, ``node.connect``, ``node.pair.verify``,
  ``node.pair.request``) is refused unseen (``RATE_LIMITED``, the right secret included)
  until the window moves on;
- pair requests (``node.pair.request``);
- connects (``node.connect``, ``node.pair.verify``).

Every failure is audited (the method, why, the address, the node id asked for; never what
was sent), and so is the first refusal of an address over a budget in a window; the rest
of a burst is counted in the logs (:class:`~bot.gateway.guard.BurstLog`), so a flood costs
the disk at most a budget's worth of audit lines per address and window.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from bot.core.clock import Clock
from bot.gateway.frames import ErrorCode, GatewayError
from bot.gateway.guard import BurstLog, WindowLimiter

log = logging.getLogger(__name__)


class Attempt(StrEnum):
    """What a peer tries (``node.pair.request``, ``node.connect``, ``node.pair.verify``,
    ``operator.connect``), named as the audit log names it."""

    PAIR = "node.request"
    CONNECT = "node.connect"
    VERIFY = "node.verify"
    OPERATOR = "operator.connect"


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitSettings:
    """The budgets of one address per ``window`` (``gateway:`` in the config)."""

    failures: int = 5
    pair_requests: int = 30
    connects: int = 120
    window: timedelta = timedelta(minutes=1)


Audit = Callable[[Attempt, str, str, str], Awaitable[None]]
"""Writes one audit line: (attempt, outcome, address, node id or "")."""


class AddressLimits:
    """The three budgets of every address, and the audit of what they refuse."""

    def __init__(
        self, settings: LimitSettings, *, clock: Clock, burst: BurstLog, audit: Audit
    ) -> None:
        self.failures = WindowLimiter(clock=clock, limit=settings.failures, window=settings.window)
        self._attempts = {
            Attempt.PAIR: WindowLimiter(
                clock=clock, limit=settings.pair_requests, window=settings.window
            ),
            Attempt.CONNECT: WindowLimiter(
                clock=clock, limit=settings.connects, window=settings.window
            ),
        }
        self._attempts[Attempt.VERIFY] = self._attempts[Attempt.CONNECT]
        self._burst = burst
        self._audit = audit
        self._seconds = int(settings.window.total_seconds())

    async def admit(self, remote: str, attempt: Attempt, *, subject: str = "") -> None:
        """Count an attempt from ``remote``; refuse it if the address is locked out by its
        failures or over its budget for this kind of attempt.

        Raises:
            GatewayError: ``RATE_LIMITED``.
        """
        if self.failures.blocked(remote):
            self._burst.note(
                "locked",
                remote,
                f"gateway: {attempt} refused unseen from {remote}: too many failed "
                f"verifications in {self._seconds}s",
            )
            raise GatewayError(
                ErrorCode.RATE_LIMITED,
                "too many failed verifications from this address; try again later",
            )
        limiter = self._attempts.get(attempt)
        if limiter is None:
            return
        before = limiter.count(remote)
        if before < limiter.limit:
            return
        if before == limiter.limit:  # the first refusal in this window: audited
            await self._audit(attempt, "rate_limited", remote, subject)
        self._burst.note(
            "over",
            remote,
            f"gateway: {attempt} refused from {remote}: more than {limiter.limit} "
            f"in {self._seconds}s",
        )
        raise GatewayError(
            ErrorCode.RATE_LIMITED, f"too many {attempt} from this address; try again later"
        )

    async def failed(
        self, remote: str, attempt: Attempt, outcome: str, *, subject: str = "", audited: bool
    ) -> None:
        """Count a failed verification from ``remote`` (audited here unless ``audited``
        says the service already wrote its line), and audit the lockout it may begin."""
        before = self.failures.count(remote)
        if not audited:
            await self._audit(attempt, outcome, remote, subject)
        if before + 1 == self.failures.limit:
            await self._audit(attempt, "locked_out", remote, subject)
        self._burst.note(
            "failed",
            remote,
            f"gateway: {attempt} failed from {remote} ({outcome}; {before + 1} failed "
            f"verifications in the last {self._seconds}s)",
        )
