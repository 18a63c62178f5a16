"""Store tests use the shared fixtures (tests/conftest.py) with a higher pending cap."""

from __future__ import annotations

import pytest

from bot.core.clock import FakeClock
from bot.services.pairing import PairingService, PairingSettings
from stores.jsonfile import JsonFileStore


@pytest.fixture
def pairing(store: JsonFileStore, clock: FakeClock) -> PairingService:
    return PairingService(
        store, clock=clock, settings=PairingSettings(max_pending_per_provider=100)
    )
