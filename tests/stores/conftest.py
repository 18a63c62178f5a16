"""Fixtures of the store tests, defined here so these tests depend on nothing outside."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.clock import FakeClock
from bot.nodes import NodeService
from bot.pairing import PairingService, PairingSettings
from stores.jsonfile import JsonFileStore

START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def store(state_dir: Path) -> Iterator[JsonFileStore]:
    opened = JsonFileStore(state_dir)
    yield opened
    opened.close()


@pytest.fixture
def pairing(store: JsonFileStore, clock: FakeClock) -> PairingService:
    return PairingService(store, clock=clock,
                          settings=PairingSettings(max_pending_per_provider=100))


@pytest.fixture
def nodes(store: JsonFileStore, clock: FakeClock) -> NodeService:
    return NodeService(store, clock=clock)
