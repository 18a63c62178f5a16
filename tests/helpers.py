"""Helpers shared by the provider tests."""

from __future__ import annotations

from bot.core.models import Button, Inbound
from providers.fakebase import wait_until

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
