"""Helpers shared by the tests: what providers hand the core, and what they are handed."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest

from bot.core.models import Button, Inbound, PendingRequest
from bot.services.pairing import PairingService
from providers.fakebase import wait_until

OWNER = "owner:cli"
"""The actor the service tests give for the owner's decisions."""
SECOND = timedelta(seconds=1)
"""What a test puts just before or past a time limit."""

APPROVE = Button(label="Approve", command="/approve ABCD2345")
REJECT = Button(label="Reject", command="/reject ABCD2345")
"""The two buttons of an owner notice, as the provider tests send them."""


class Inbox:
    """An ``on_inbound`` callback that keeps what it is given."""

    def __init__(self) -> None:
        self.items: list[Inbound] = []

    async def __call__(self, inbound: Inbound) -> None:
        self.items.append(inbound)

    async def wait(self, count: int = 1) -> list[Inbound]:
        """Wait (5 s at most) until ``count`` inbounds arrived; return them all."""
        await wait_until(lambda: len(self.items) >= count)
        return self.items

    @property
    def texts(self) -> list[str]:
        """The texts received, in order."""
        return [i.text for i in self.items]


def dm(
    text: str,
    *,
    provider: str = "telegram",
    sender: str = "4242",
    chat: str | None = None,
    name: str = "",
    message_id: str | None = None,
    meta: Mapping[str, str] | None = None,
) -> Inbound:
    """:meth:`Inbound.dm` with the tests' defaults: from Telegram sender ``4242``."""
    return Inbound.dm(
        provider, sender, text, chat_id=chat, sender_name=name, message_id=message_id, meta=meta
    )


def compared_codes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    """From now on, every pair ``bot.core.codes`` hands ``hmac.compare_digest`` (which still
    compares them), in order."""
    compared: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr("bot.core.codes.hmac.compare_digest", spy)
    return compared


def requested(pairing: PairingService, provider: str, sender: str) -> PendingRequest:
    """``sender`` writes: their request, checked to be on file."""
    result = pairing.request(provider, sender)
    assert result.request is not None
    return result.request
