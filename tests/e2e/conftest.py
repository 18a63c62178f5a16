"""The fixtures of a platform's e2e tests: its fake, an inbox, its provider built and running.

A test module says what its platform is with two functions (pytest's fixtures may read the
requesting module, see "Fixtures can introspect the requesting test context"):

* ``make_fake(clock)``: the platform's loopback fake, not started;
* ``make_provider(fake, **options)``: the real provider pointed at it;

and, when the fake must learn where the started provider listens (a webhook), an async
``connect(fake, provider)``. ``fake`` is started and stopped here, ``provider`` stopped,
``running`` started with ``inbox`` as its callback and connected.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.core.clock import FakeClock
from tests.helpers import Inbox


@pytest.fixture
def inbox() -> Inbox:
    return Inbox()


@pytest.fixture
async def fake(request: pytest.FixtureRequest, fake_clock: FakeClock) -> AsyncIterator[Any]:
    async with request.module.make_fake(fake_clock) as server:
        yield server


@pytest.fixture
async def provider(request: pytest.FixtureRequest, fake: Any) -> AsyncIterator[Any]:
    made = request.module.make_provider(fake)
    try:
        yield made
    finally:
        await made.stop()


@pytest.fixture
async def running(request: pytest.FixtureRequest, fake: Any, provider: Any, inbox: Inbox) -> Any:
    await provider.start(inbox)
    connect = getattr(request.module, "connect", None)
    if connect is not None:
        await connect(fake, provider)
    return provider
