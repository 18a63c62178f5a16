"""Fixtures of the gateway tests: the Telegram fake and a running app (the fake clock is
tests/conftest.py's)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.core.clock import FakeClock
from providers.telegram.fake import FakeTelegramServer
from tests.gateway.support import Gw, running


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer() as fake:
        yield fake


@pytest.fixture
async def gw(tg: FakeTelegramServer, state_dir: Path, fake_clock: FakeClock) -> AsyncIterator[Gw]:
    async with running(tg, state_dir, fake_clock) as started:
        yield started
