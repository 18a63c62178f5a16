"""The whole app while its state store cannot be reached (a database server down).

The store here is the JSON store behind a switch that makes every transaction fail with
StoreUnavailableError, as the PostgreSQL store's calls do while its server is down, while its
gate keeps answering from memory, as every backend's does.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.core import messages
from bot.core.clock import FakeClock
from bot.core.errors import StoreUnavailableError
from bot.core.protocols import StateStore, StateTxn
from bot.runtime.app import App
from providers.telegram.fake import FakeTelegramServer
from tests.e2e import support
from tests.e2e.support import app_config, code_in, settle, texts

pytestmark = pytest.mark.e2e

OWNER, ALICE, BOB = 111, 4242, 5151


class Switched:
    """A store whose transactions fail while ``down``; everything else is the store's."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self.down = False

    @contextmanager
    def transaction(self, *, shared: bool = False) -> Iterator[StateTxn]:
        if self.down:
            raise StoreUnavailableError("postgresql://pairbot@db/pairbot: connection refused")
        with self._store.transaction(shared=shared) as txn:
            yield txn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.fixture
async def tg(fake_clock: FakeClock) -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer(clock=fake_clock) as fake:
        fake.started_before(OWNER)
        yield fake


@pytest.fixture
def switch(monkeypatch: pytest.MonkeyPatch) -> list[Switched]:
    return support.wrap_stores(monkeypatch, Switched)


@pytest.fixture
async def app(
    tg: FakeTelegramServer, state_dir: Path, fake_clock: FakeClock, switch: list[Switched]
) -> AsyncIterator[App]:
    block = {"token": tg.token, "api_base_url": tg.base_url}
    config = app_config("telegram", str(OWNER), block, pairing={"prune_interval": "0.2s"})
    async with support.app_running(config, state_dir, fake_clock) as running:
        running.pairing.allow("telegram", str(BOB), actor="test")
        yield running


async def test_while_the_store_is_down_allowed_senders_go_on_and_nothing_is_granted(
    tg: FakeTelegramServer, app: App, switch: list[Switched], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    tg.dm(ALICE, "hello?", first_name="Alice")
    code = code_in((await texts(lambda: tg.messages_to(ALICE), 1))[0])
    store = switch[0]
    store.down = True

    tg.dm(BOB, "still here")  # the gate answers from memory: Bob's message goes through
    assert (await texts(lambda: tg.messages_to(BOB), 1))[0] == "still here"
    tg.dm(OWNER, f"/approve {code}")  # refused, and the owner is told why
    owner = await texts(lambda: tg.messages_to(OWNER), 2)
    assert owner[-1] == messages.store_unavailable()
    tg.dm(555, "a new stranger")  # no code while nothing can be recorded
    await settle(0.6)  # several prune runs and teller looks fail meanwhile
    assert tg.messages_to(555) == []
    assert len(tg.messages_to(ALICE)) == 1
    down = [r for r in caplog.records if "cannot be reached" in r.getMessage()]
    assert len(down) == 1  # one line for the whole outage
    assert down[0].levelno == logging.ERROR

    store.down = False
    await settle(0.6)  # the teller's next look sees the store back
    back = [r for r in caplog.records if "reachable again" in r.getMessage()]
    assert len(back) == 1
    tg.dm(OWNER, f"/approve {code}")  # the code is still good: nothing was lost
    assert (await texts(lambda: tg.messages_to(ALICE), 2))[1] == messages.approved_sender()
    tg.dm(555, "again")
    assert "pairing code" in (await texts(lambda: tg.messages_to(555), 1))[0]
