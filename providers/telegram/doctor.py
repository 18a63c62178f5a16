"""What ``pairbot doctor`` says of a ``providers.telegram`` block, the bot not running.

It checks the block as the provider would (:class:`~providers.telegram.provider.TelegramProvider`),
the token with getMe, and, for each Telegram owner, whether the bot can write to them without
sending a message (:func:`~providers.telegram.provider.reach`: sendChatAction). An owner who
has not pressed Start in the bot's chat gets no notice until they do. In webhook mode it also
asks getWebhookInfo whether Telegram posts to the configured ``webhook_url`` and whether its
last delivery failed. Safe while the bot runs: no call touches getUpdates or the webhook.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from telegram import Bot
from telegram.error import InvalidToken, TelegramError

from bot.core.errors import ConfigError
from providers.telegram.provider import TelegramProvider, reach

Finding = tuple[bool | None, str]
"""``(ok, message)``: True fine, False a problem, None something the owner must know."""

WHERE = "providers.telegram"


def check_owners(
    block: Mapping[str, Any], owners: Sequence[str], *, timeout: float = 5.0
) -> list[Finding]:
    """Check a Telegram config block (its provider arguments), its token, and whether each
    owner in ``owners`` (user ids) started the bot's chat.

    Never raises: an unreachable Bot API is one problem line.
    """
    try:
        provider = TelegramProvider(**block)
    except ConfigError as exc:
        return [(False, str(exc))]
    try:
        return asyncio.run(asyncio.wait_for(_ask(provider, owners), timeout))
    except InvalidToken:
        return [(False, f"{WHERE}: token: Telegram rejected the bot token (ask @BotFather)")]
    except (TelegramError, OSError) as exc:  # (TimeoutError too) its text may quote a URL
        where = f"{WHERE}: the Bot API at {provider.api_root}"
        return [(False, f"{where} did not answer ({type(exc).__name__})")]


async def _ask(provider: TelegramProvider, owners: Sequence[str]) -> list[Finding]:
    bot = provider.lone_bot()
    async with bot:  # initialize(): getMe
        findings: list[Finding] = [(True, f"{WHERE}: the token is @{bot.username}'s")]
        if provider.public_url is not None:
            findings.append(await _webhook(bot, provider.public_url))
        for user_id in owners:
            why = await reach(bot, user_id)
            if why is None:
                findings.append((True, f"{WHERE}: owner {user_id} gets notices"))
            else:
                findings.append((False, f"{WHERE}: owner {user_id} gets no notices: {why}"))
        return findings


async def _webhook(bot: Bot, url: str) -> Finding:
    """What Telegram says of the webhook (getWebhookInfo: ``url``, ``last_error_message``)."""
    info = await bot.get_webhook_info()
    if not info.url:
        return (None, f"{WHERE}: no webhook is registered yet: pairbot registers it at start")
    if info.url != url:
        return (False, f"{WHERE}: webhook_url: Telegram posts updates to {info.url}, not here")
    if info.last_error_message:
        return (
            False,
            f"{WHERE}: Telegram's last webhook delivery failed: {info.last_error_message} "
            f"({info.pending_update_count} update(s) waiting)",
        )
    return (True, f"{WHERE}: Telegram posts updates to the webhook_url")


__all__ = ["Finding", "check_owners"]
