"""Fixtures of the gateway tests: the Telegram fake, a running app, and one with config
sections of the test's own (the fake clock is tests/conftest.py's)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.core.clock import FakeClock
from providers.telegram.fake import FakeTelegramServer
from tests.gateway.support import OWNER, Gw, GwWith, running


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer() as fake:
        fake.started_before(OWNER)  # the owner pressed Start: notices reach them
        yield fake


@pytest.fixture
async def gw(tg: FakeTelegramServer, state_dir: Path, fake_clock: FakeClock) -> AsyncIterator[Gw]:
    async with running(tg, state_dir, fake_clock) as started:
        yield started


@pytest.fixture
def gw_with(tg: FakeTelegramServer, state_dir: Path, fake_clock: FakeClock) -> GwWith:
    """``async with gw_with(gateway={...}) as gw``: the app of ``gw`` on this test's fake,
    state dir and clock, with the config sections given."""
    return functools.partial(running, tg, state_dir, fake_clock)
