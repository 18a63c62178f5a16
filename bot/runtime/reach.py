"""At start, whether each owner's chat takes notices, on platforms that can tell without a
message (Telegram: only a chat its user started).

A provider that can tell has ``why_unreachable(user_id)``
(:class:`~bot.core.protocols.ToldReach`); the app asks
it once per owner after the providers started and logs one line per owner it cannot write
to, saying what that owner must do. Notices are still tried: one that fails is kept for the
owner by :mod:`bot.runtime.missed`, and told when they write.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from bot.core.protocols import Provider, ToldReach

log = logging.getLogger(__name__)


async def check_owners(
    providers: Mapping[str, Provider], owners: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """Ask every provider that can tell about each of its ``(provider, user id)`` owners; log
    one warning per owner it cannot write to. Return those owners, with why.

    Never raises: a check that fails (the network) is logged and the start goes on.
    """
    unreachable: dict[tuple[str, str], str] = {}
    for name, user_id in sorted(owners):
        provider: object = providers.get(name)  # (mypy finds no Provider that is both)
        if not isinstance(provider, ToldReach):
            continue
        try:
            why = await provider.why_unreachable(user_id)
        except Exception as exc:  # an SDK's error may quote a request: its type only
            log.warning(
                "owner %s on %s: could not check that notices reach them (%s)",
                user_id,
                name,
                type(exc).__name__,
            )
            continue
        if why is not None:
            log.warning("owner %s on %s gets no notices: %s", user_id, name, why)
            unreachable[(name, user_id)] = why
    return unreachable


__all__ = ["check_owners"]
