"""Each backend's own tests: ``store`` is a JSON store on the state dir (the SQLite store's
tests open theirs), and the pairing service has a higher pending cap. (What every backend must
do is in tests/contracts/.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.core.clock import FakeClock
from bot.services.pairing import PairingService, PairingSettings
from stores.jsonfile import JsonFileStore


@pytest.fixture
def store(state_dir: Path) -> Iterator[JsonFileStore]:
    opened = JsonFileStore(state_dir)
    yield opened
    opened.close()


@pytest.fixture
def pairing(store: JsonFileStore, clock: FakeClock) -> PairingService:
    return PairingService(
        store, clock=clock, settings=PairingSettings(max_pending_per_provider=100)
    )
