"""Shared fixtures: a fake clock, a private state dir, a real JSON store and the services."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.core.clock import FakeClock, SystemClock
from bot.runtime.logs import reset_redaction
from bot.services.nodes import NodeService
from bot.services.pairing import PairingService
from stores.jsonfile import JsonFileStore


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's own state dir and config out of every test."""
    monkeypatch.delenv("PAIRBOT_STATE_DIR", raising=False)
    monkeypatch.delenv("PAIRBOT_CONFIG", raising=False)
    # PTB 22 warns about its float/timedelta switch on a 429; opt into the new behaviour.
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


@pytest.fixture(autouse=True)
def _no_redaction_left_behind() -> Iterator[None]:
    """A test that ran ``pairbot`` in-process leaves no log record factory or secrets behind."""
    yield
    reset_redaction()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake_clock() -> FakeClock:
    """A fake clock that starts at the real now (for fakes whose times a real SDK reads)."""
    return FakeClock(SystemClock().now())


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
    return PairingService(store, clock=clock)


@pytest.fixture
def nodes(store: JsonFileStore, clock: FakeClock) -> NodeService:
    return NodeService(store, clock=clock)
