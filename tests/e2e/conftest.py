"""The fixtures of a platform's e2e tests: its fake, an inbox, its provider built and running.

A test module says what its platform is with two functions (pytest's fixtures may read the
requesting module, see "Fixtures can introspect the requesting test context"):

* ``make_fake(clock)``: the platform's loopback fake, not started;
* ``make_provider(fake, **options)``: the real provider pointed at it;

and, when the fake must learn where the started provider listens (a webhook), an async
``connect(fake, provider)``. ``fake`` is started and stopped here, ``provider`` stopped,
``running`` started with ``inbox`` as its callback and connected.

``clusters`` is what two instances on one state share, to run two of them in this process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from bot.core.clock import FakeClock
from bot.core.protocols import Cluster
from stores.cluster import LocalCluster
from stores.sql.cluster import PostgresCluster
from stores.sql.postgres import PostgresStore
from tests.backends import pg_schema
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


@pytest.fixture(params=["local", "postgres"])
def clusters(request: pytest.FixtureRequest) -> Iterator[tuple[Cluster, Cluster]]:
    """Instance a's and instance b's cluster: LocalCluster siblings, or two PostgresCluster
    on one new schema of the test server (each on its own store: its own connections)."""
    if request.param == "local":
        first = LocalCluster("a")
        yield first, first.sibling("b")
        return
    with pg_schema() as dsn:
        stores = [PostgresStore(dsn), PostgresStore(dsn)]
        try:
            yield (
                PostgresCluster(stores[0], instance_id="a"),
                PostgresCluster(stores[1], instance_id="b"),
            )
        finally:
            for store in stores:
                store.close()
