"""Durations as people write them: ``90s``, ``5m``, ``1h``, ``2d``, ``1w``; one parser for the
config's durations (:mod:`bot.core.config`), for how long an owner's grant lasts
(``/approve CODE 7d``, ``--for 24h``: :func:`grant_length`) and for how long a node invite
does (``/nodes invite 30m``, ``--for 30m``: :func:`invite_length`)."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Any

from bot.core.schema import InvalidValue

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604_800, None: 1}


def parse_duration(value: Any) -> timedelta:
    """Read ``90s``/``5m``/``1h``/``2d``/``1w`` (or a number of seconds) as a positive
    timedelta."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise InvalidValue("not a duration: {value} (use e.g. 90s, 5m, 1h)", value)
    if not math.isfinite(seconds):
        raise InvalidValue("not a duration: {value} (use e.g. 90s, 5m, 1h)", value)
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise InvalidValue("too long: {value}", value) from None


def span(value: timedelta) -> str:
    """Write a duration the way the config does, in its largest whole unit: ``90s``, ``1d``."""
    ms = round(value.total_seconds() * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


GRANT_BOUNDS = (timedelta(seconds=1), timedelta(days=3650))
"""How long a grant that ends may last (``/approve CODE 7d``, ``--for 24h``): a second at least
(a test's grant), ten years at most (longer is "for good", which is a grant without an end)."""
_GRANT_EXAMPLES = "use e.g. 30m, 24h, 7d, 2w"


INVITE_BOUNDS = (timedelta(minutes=1), timedelta(days=1))
"""How long a one-time node invite may last (``nodes.invite_ttl``, ``/nodes invite 30m``,
``--for``): long enough to carry the code to the device, and dead by tomorrow."""
_INVITE_EXAMPLES = "use e.g. 10m, 1h"


def grant_length(text: str) -> timedelta:
    """Read how long an owner's grant lasts: a duration with its unit (``s``, ``m``, ``h``,
    ``d``, ``w``; a bare number is refused, ``/approve CODE 60`` being too easy to mistype),
    within :data:`GRANT_BOUNDS`.

    Raises:
        ValueError: one line saying what is wrong; the caller names the argument.
    """
    return _length(text, GRANT_BOUNDS, _GRANT_EXAMPLES)


def invite_length(text: str) -> timedelta:
    """Read how long a node invite lasts, as :func:`grant_length` reads a grant's, within
    :data:`INVITE_BOUNDS`.

    Raises:
        ValueError: one line saying what is wrong; the caller names the argument.
    """
    return _length(text, INVITE_BOUNDS, _INVITE_EXAMPLES)


def has_unit(text: str) -> bool:
    """Whether ``text`` is written as a duration with its unit (``30m``, ``7D``): a word that
    says how long, not a name's word."""
    match = _DURATION.match(text.lower())
    return match is not None and match.group(2) is not None


def _length(text: str, bounds: tuple[timedelta, timedelta], examples: str) -> timedelta:
    if not has_unit(text):  # a phone's keyboard may write 7D
        raise ValueError(f"not a duration: {text!r} ({examples})")
    try:
        return bounded(parse_duration(text.lower()), *bounds)
    except ValueError as exc:
        raise ValueError(f"duration {text!r}: {exc}") from None


def bounded(value: timedelta, low: timedelta, high: timedelta) -> timedelta:
    """``value`` if it is from ``low`` to ``high``; else one line saying the range."""
    if not low <= value <= high:
        raise ValueError(f"must be from {span(low)} to {span(high)}")
    return value
