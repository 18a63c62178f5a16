"""One retry loop for what a provider sends: :func:`retrying`, :class:`Retry`, :class:`Backoff`.

An attempt that failed in a way worth another try raises :class:`Retry`, with the pause the
platform asked for (Retry-After) if it gave one; :func:`retrying` pauses (that, or a
doubling backoff) and tries again until the :class:`RetryPolicy` says stop. Providers call it
through :meth:`providers.base.BaseProvider._retrying`, which ends the pauses when the
provider stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from bot.core.errors import ProviderError

_T = TypeVar("_T")

GiveUp = Callable[["Retry", int], BaseException]
"""Makes the error raised when no try is left, from the last failure and the tries made."""


class Retry(Exception):
    """Raised by one attempt given to :func:`retrying`: worth another try.

    Args:
        reason: what went wrong, for the log and the final error (no secret, no text).
        after: seconds the platform asked to wait (Retry-After); the backoff otherwise.
        error: the exception to raise as it is if this was the last try (an SDK's own).
    """

    def __init__(
        self, reason: str, *, after: float | None = None, error: BaseException | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.after = after
        self.error = error


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How long :func:`retrying` keeps trying.

    Attributes:
        attempts: tries in all, the first included (None: no limit but ``give_up_after``).
        first_delay: seconds before the second try; doubled after each failure.
        max_delay: the longest pause.
        give_up_after: seconds after the first try past which no pause starts (None: none).
    """

    attempts: int | None = 4
    first_delay: float = 0.5
    max_delay: float = 8.0
    give_up_after: float | None = None


class Backoff:
    """A pause that doubles after each failure, up to a ceiling, and resets on success."""

    def __init__(self, first: float, most: float) -> None:
        self.first = first
        self.most = max(most, first)
        self.delay = first

    def grow(self) -> float:
        """Double the pause (up to the ceiling) and return it."""
        self.delay = min(self.delay * 2, self.most)
        return self.delay

    def reset(self) -> None:
        """Back to the first pause."""
        self.delay = self.first


async def retrying(
    attempt: Callable[[], Awaitable[_T]],
    *,
    policy: RetryPolicy,
    what: str,
    log: logging.Logger,
    stopping: asyncio.Event,
    give_up: GiveUp | None = None,
    proof: asyncio.Future[_T] | None = None,
) -> _T:
    """Run ``attempt`` until it returns, pausing after each :class:`Retry` it raises.

    The pause is the failure's ``after`` if it has one, else the backoff of ``policy``. It
    ends early when ``stopping`` is set (no try follows) or when ``proof`` (a future resolved
    by whoever learns the thing was done after all) is done: its result is then returned.
    When no try is left, the error raised is the failure's own ``error``, else
    ``give_up(failure, tries)``, else a :class:`~bot.core.errors.ProviderError` naming
    ``what``.
    """
    loop = asyncio.get_running_loop()
    deadline = None if policy.give_up_after is None else loop.time() + policy.give_up_after
    backoff = Backoff(policy.first_delay, policy.max_delay)
    tries = 0
    while True:
        tries += 1
        try:
            return await attempt()
        except Retry as retry:
            failure = retry
        left = None if deadline is None else deadline - loop.time()
        pause = backoff.delay if failure.after is None else failure.after
        pause = pause if left is None else min(pause, left)
        spent = policy.attempts is not None and tries >= policy.attempts
        if spent or (left is not None and left <= 0) or stopping.is_set():
            raise _final(failure, tries, what, give_up)
        log.warning(
            "%s failed (%s), retrying in %.1f s (retry %d)", what, failure.reason, pause, tries
        )
        if await _pause(pause, stopping, proof) and proof is not None:
            log.info("%s was done after all; not tried again", what)
            return proof.result()
        if stopping.is_set():
            raise _final(failure, tries, what, give_up)
        backoff.grow()


async def _pause(
    seconds: float, stopping: asyncio.Event, proof: asyncio.Future[Any] | None
) -> bool:
    """Sleep ``seconds``, or less if ``stopping`` is set or ``proof`` is done; True if the
    proof came."""
    stop = asyncio.ensure_future(stopping.wait())
    waiting: set[asyncio.Future[Any]] = {stop} if proof is None else {stop, proof}
    try:
        await asyncio.wait(waiting, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    return proof is not None and proof.done() and not proof.cancelled()


def _final(failure: Retry, tries: int, what: str, give_up: GiveUp | None) -> BaseException:
    if failure.error is not None:
        return failure.error
    if give_up is not None:
        return give_up(failure, tries)
    return ProviderError(f"{what} failed {tries} times ({failure.reason})")


__all__ = ["Backoff", "GiveUp", "Retry", "RetryPolicy", "retrying"]
