"""Fixtures of the gateway tests: the Telegram fake, a fake clock, a running app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.core.clock import FakeClock, SystemClock
from providers.telegram.fake import FakeTelegramServer
from tests.gateway.support import Gw, running


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer() as fake:
        yield fake


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock(SystemClock().now())


@pytest.fixture
async def gw(tg: FakeTelegramServer, state_dir: Path, fake_clock: FakeClock) -> AsyncIterator[Gw]:
    async with running(tg, state_dir, fake_clock) as started:
        yield started
