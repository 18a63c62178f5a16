"""Helpers shared by the tests: what providers hand the core, and what they are handed."""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.core.clock import Clock
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
SECRET = "Zq3kR9vX2mW7pL4tN8bY1cH6dF5gJ0sA-uE_iOw"
"""A secret strong enough for the config (the events' signing key in the tests)."""
DOCS = Path(__file__).resolve().parents[1] / "docs"


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


def documented_verifier() -> Callable[..., bool]:
    """The verifier as the docs print it (the first python block after "Verifying")."""
    text = (DOCS / "observability.md").read_text()
    block = re.search(r"### Verifying.*?```python\n(.*?)```", text, re.S)
    assert block is not None
    namespace: dict[str, Any] = {}
    exec(block.group(1), namespace)  # the docs' own lines, run as a receiver would
    verify = namespace["verify"]
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(lines) == 6  # the import and five lines
    return verify  # type: ignore[no-any-return]


class Receiver:
    """A loopback HTTP receiver: checks each POST's signature, keeps what it was sent, and
    answers what ``answer`` says (200 unless told otherwise)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.got: list[dict[str, Any]] = []
        self.tries = 0
        self.answer: Callable[[dict[str, Any]], Awaitable[int]] | None = None
        self.verify = documented_verifier()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _post(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.tries += 1
        timestamp = request.headers["X-Pairbot-Timestamp"]
        signed, now = request.headers["X-Pairbot-Signature"], self.clock.now().timestamp()
        assert self.verify(SECRET, body, timestamp, signed, now)
        assert not self.verify("another secret", body, timestamp, signed, now)
        assert not self.verify(SECRET, body, timestamp, signed, now + 301)  # stale: refused
        record = json.loads(body)
        record["_id"] = request.headers["X-Pairbot-Event-Id"]
        status = 200 if self.answer is None else await self.answer(record)
        if status == 200:
            self.got.append(record)
        return web.Response(status=status)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._post)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def subjects(self) -> list[str]:
        return [r["subject"] for r in self.got]
