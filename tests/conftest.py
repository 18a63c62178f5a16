"""Shared fixtures: a fake clock, a private state dir, a store of each backend and the services.

A test that asks for ``backend`` (or ``store``, ``pairing``, ``nodes``) runs once per store
backend, unless it is marked ``json_files``: it is about the JSON store's files on disk and
runs on that backend alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.core.clock import FakeClock, SystemClock
from bot.core.protocols import StateStore
from bot.runtime.logs import reset_redaction
from bot.services.nodes import NodeService
from bot.services.pairing import PairingService
from tests.backends import BACKENDS, Backend, JsonBackend, pg_schema


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        names = [JsonBackend.name] if metafunc.definition.get_closest_marker("json_files") else []
        metafunc.parametrize("backend", names or list(BACKENDS), indirect=True)


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
def backend(request: pytest.FixtureRequest, state_dir: Path) -> Iterator[Backend]:
    made = BACKENDS[request.param](state_dir)
    yield made
    made.close()


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """A DSN of a new schema on the test PostgreSQL server, dropped after the test (skipped
    when no server is reachable, unless ``$PAIRBOT_REQUIRE_POSTGRES=1``)."""
    with pg_schema() as dsn:
        yield dsn


@pytest.fixture
def store(backend: Backend) -> StateStore:
    return backend.open()


@pytest.fixture
def pairing(store: StateStore, clock: FakeClock) -> PairingService:
    return PairingService(store, clock=clock)


@pytest.fixture
def nodes(store: StateStore, clock: FakeClock) -> NodeService:
    return NodeService(store, clock=clock)
