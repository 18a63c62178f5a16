"""What ``pairbot doctor`` says of a ``providers.signal`` block, the bot not running.

It checks the block as the provider would (:class:`~providers.signal.provider.SignalProvider`)
and asks the configured daemon, in one short JSON-RPC batch, its version and the accounts it
serves (:func:`~providers.signal.daemon.daemon_info`). The daemon cannot say its
``--receive-mode`` (no RPC or HTTP route shows it: ``DaemonCommand`` hands it to no handler
but the socket and D-Bus ones), so doctor says what the owner must check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp

from bot.core.errors import ConfigError
from providers.signal.daemon import (
    RECEIVE_MODE,
    STREAM_ERRORS,
    DaemonInfo,
    SignalRpcError,
    daemon_info,
    not_served,
)
from providers.signal.provider import SignalProvider

Finding = tuple[bool | None, str]
"""``(ok, message)``: True fine, False a problem, None something the owner must know."""

WHERE = "providers.signal"

RECEIVE_MODE_NOTE = (
    f"{WHERE}: signal-cli does not say its receive mode: run the daemon with --receive-mode "
    f"{RECEIVE_MODE}, or every message that reaches it while pairbot is not connected (a "
    "restart, a reconnect) is lost, a stranger's first message and /approve included"
)


def check_daemon(block: Mapping[str, Any], *, timeout: float = 3.0) -> list[Finding]:
    """Check a Signal config block (its provider arguments) and the daemon it names.

    Never raises: an unreachable daemon is one problem line.
    """
    try:
        provider = SignalProvider(**block)
    except ConfigError as exc:
        return [(False, str(exc))]
    root, account = provider.http_url, provider.account
    try:
        info = asyncio.run(_ask(root, aiohttp.ClientTimeout(total=timeout)))
    except (*STREAM_ERRORS, OSError) as exc:
        return [
            (
                False,
                f"{WHERE}: no signal-cli daemon answers at {root} ({type(exc).__name__}): "
                f"`pairbot run` would stop there (run `signal-cli -a {account} daemon --http "
                f"HOST:PORT --receive-mode {RECEIVE_MODE}`)",
            ),
            (None, RECEIVE_MODE_NOTE),
        ]
    except SignalRpcError as exc:
        return [(False, f"{WHERE}: {root} does not answer as a signal-cli daemon ({exc})")]
    if (problem := not_served(info, root, account)) is not None:
        return [(False, f"{WHERE}: account: {problem}"), (None, RECEIVE_MODE_NOTE)]
    version = f"signal-cli {info.version}" if info.version else "signal-cli"
    if info.accounts is None:
        serves = (
            "serves the one account it was started for (-a), and names it only in its "
            f"messages: pairbot warns if that is not {account}"
        )
    else:
        serves = f"serves {account}"
    return [(True, f"{WHERE}: {version} at {root} {serves}"), (None, RECEIVE_MODE_NOTE)]


async def _ask(root: str, limit: aiohttp.ClientTimeout) -> DaemonInfo:
    async with aiohttp.ClientSession(timeout=limit) as session:
        return await daemon_info(session, root)


__all__ = ["RECEIVE_MODE_NOTE", "Finding", "check_daemon"]
