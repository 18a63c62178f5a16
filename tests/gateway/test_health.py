"""``GET /healthz`` (alive) and ``GET /readyz`` (ready) on the gateway's HTTP port, against a
running app: the store's check, the providers' states and the app's phase."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bot import __version__
from bot.cli.compose import open_app
from bot.core.clock import FakeClock
from bot.core.errors import (
    SchemaVersionError,
    StoreCorruptError,
    StoreError,
    StoreLockTimeoutError,
    StoreUnavailableError,
)
from bot.core.models import Button
from bot.core.protocols import OnInbound, StateStore
from bot.runtime.app import App
from providers.telegram.fake import FakeTelegramServer
from stores.sql.schema import SCHEMA_VERSION
from tests.e2e import support
from tests.gateway.support import Gw, make_config, running, within
from tests.pgproxy import Proxy

pytestmark = pytest.mark.e2e

PASSWORD = "hunter2-not-for-a-body"
DSN = f"postgresql://pairbot:{PASSWORD}@db.internal:5432/pairbot"


class Checked:
    """A store whose :meth:`check` raises ``fails`` (when set) or waits for ``gate`` (when
    set), and counts its calls; everything else is the real store's."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self.fails: StoreError | None = None
        self.gate: threading.Event | None = None
        self.calls = 0
        self.done = 0
        self.clock: FakeClock | None = None
        self.takes = timedelta(0)
        """How far each check moves ``clock`` on (a check that takes that long)."""

    def check(self) -> None:
        self.calls += 1
        try:
            if self.gate is not None:
                self.gate.wait(60)
            if self.clock is not None:
                self.clock.advance(self.takes)
            if self.fails is not None:
                raise self.fails
            self._store.check()
        finally:
            self.done += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> list[Checked]:
    return support.wrap_stores(monkeypatch, Checked)


@pytest.fixture
async def gwc(
    checked: list[Checked], tg: FakeTelegramServer, state_dir: Path, fake_clock: FakeClock
) -> AsyncIterator[Gw]:
    """The running app of ``gw`` over a :class:`Checked` store."""
    assert checked == []
    async with running(tg, state_dir, fake_clock) as started:
        yield started


async def get(gw: Gw, path: str, *, instance: bool = False) -> tuple[int, dict[str, Any]]:
    """The status and body of a request; the body without who answers (``instance``: its
    own test checks it) unless ``instance``."""
    async with gw.session.get(f"http://127.0.0.1:{gw.port}{path}") as resp:
        body = await resp.json()
        assert isinstance(body, dict)
        if not instance:
            body.pop("instance", None)
        return resp.status, body


READY = {
    "status": "ready",
    "store": {"backend": "json", "ok": True},
    "providers": {"telegram": "running"},
}


async def test_healthz_stays_alive_and_readyz_is_ready_while_running(gw: Gw) -> None:
    assert await get(gw, "/healthz") == (200, {"status": "ok"})
    assert await get(gw, "/readyz") == (200, READY)


async def test_readyz_names_the_instance_that_answers(gw: Gw) -> None:
    """``pairbot status`` reads these on a single-machine state (no other instance to ask)."""
    _, body = await get(gw, "/readyz", instance=True)
    assert body["instance"] == {
        "id": gw.app.cluster.instance_id,
        "version": __version__,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": gw.app.started_at.isoformat(),
        "held": ["connector:telegram"],  # polling: one instance at a time, and it is this one
    }


@pytest.mark.parametrize(
    ("error", "problem"),
    [
        (StoreUnavailableError(f"{DSN}: connection refused"), "unreachable"),
        (
            SchemaVersionError(f"{DSN}: schema version 9 is newer"),
            "schema newer than this pairbot",
        ),
        (StoreCorruptError("damaged", path=Path("/var/lib/pairbot/pairing.json")), "damaged"),
        (StoreLockTimeoutError("held for 10s"), "lock held too long"),
    ],
)
async def test_readyz_is_503_naming_the_store_while_its_check_fails(
    gwc: Gw,
    checked: list[Checked],
    fake_clock: FakeClock,
    error: StoreError,
    problem: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert (await get(gwc, "/readyz"))[0] == 200
    checked[0].fails = error
    fake_clock.advance(timedelta(seconds=1))
    status, body = await get(gwc, "/readyz")
    assert status == 503
    assert body == {
        "status": "not ready",
        "store": {"backend": "json", "ok": False, "problem": problem},
        "providers": {"telegram": "running"},
        "problems": [f"store: {problem}"],
    }
    assert PASSWORD not in json.dumps(body)
    assert "db.internal" not in json.dumps(body), "no host, no path: the log says those"
    assert [r for r in caplog.records if "fails its check" in r.getMessage()]

    checked[0].fails = None  # back: ready again at the next check
    fake_clock.advance(timedelta(seconds=1))
    assert await get(gwc, "/readyz") == (200, READY)


async def test_the_store_is_checked_at_most_once_a_second_however_often_polled(
    gwc: Gw, checked: list[Checked], fake_clock: FakeClock
) -> None:
    store = checked[0]
    before = store.calls  # the app's own check at start
    answers = await asyncio.gather(*(get(gwc, "/readyz") for _ in range(20)))
    assert {status for status, _ in answers} == {200}
    assert store.calls == before + 1
    store.fails = StoreUnavailableError("down")  # not seen until the second is over
    assert (await get(gwc, "/readyz"))[0] == 200
    assert store.calls == before + 1
    fake_clock.advance(timedelta(seconds=1))
    assert (await get(gwc, "/readyz"))[0] == 503
    assert store.calls == before + 2


async def test_a_long_store_check_is_run_at_most_a_tenth_of_the_time(
    gwc: Gw, checked: list[Checked], fake_clock: FakeClock
) -> None:
    store = checked[0]
    store.clock, store.takes = fake_clock, timedelta(seconds=0.5)  # a big state to read
    fake_clock.advance(timedelta(seconds=1))
    assert (await get(gwc, "/readyz"))[0] == 200
    ran = store.calls
    fake_clock.advance(timedelta(seconds=4.9))  # 10 x 0.5 s: not yet
    assert (await get(gwc, "/readyz"))[0] == 200
    assert store.calls == ran
    store.takes = timedelta(0)
    fake_clock.advance(timedelta(seconds=0.2))
    assert (await get(gwc, "/readyz"))[0] == 200
    assert store.calls == ran + 1
    fake_clock.advance(timedelta(seconds=1))  # a quick check again: once a second
    assert (await get(gwc, "/readyz"))[0] == 200
    assert store.calls == ran + 2


async def test_a_slow_store_check_never_blocks_the_event_loop(
    checked: list[Checked], tg: FakeTelegramServer, state_dir: Path, fake_clock: FakeClock
) -> None:
    # A timeout far beyond the test: /readyz waits for the check, only the gate ends it.
    app = open_app(make_config(tg), state_dir=state_dir, clock=fake_clock, ready_timeout=60)
    async with app_on(app, tg) as gw:
        gate = checked[0].gate = threading.Event()
        try:
            ready = asyncio.create_task(get(gw, "/readyz"))
            await within(2.0, lambda: checked[0].calls == 2)  # the check waits in its thread
            assert await get(gw, "/healthz") == (200, {"status": "ok"})
            assert not ready.done()
            gate.set()
            assert await ready == (200, READY)
        finally:
            gate.set()


async def test_a_store_check_without_an_answer_in_time_is_not_ready_and_runs_once(
    checked: list[Checked], tg: FakeTelegramServer, state_dir: Path, fake_clock: FakeClock
) -> None:
    app = open_app(make_config(tg), state_dir=state_dir, clock=fake_clock, ready_timeout=0.1)
    async with app_on(app, tg) as gw:
        store = checked[0]
        gate = store.gate = threading.Event()
        try:
            status, body = await get(gw, "/readyz")
            assert status == 503
            assert body["store"] == {
                "backend": "json",
                "ok": False,
                "problem": "no answer within 0.1s",
            }
            fake_clock.advance(timedelta(seconds=1))
            assert (await get(gw, "/readyz"))[0] == 503
            assert store.calls == 2, "the check still running is waited for, not started again"
            gate.set()
            await within(2.0, lambda: store.done == 2)
            fake_clock.advance(timedelta(seconds=1))
            assert await get(gw, "/readyz") == (200, READY)
        finally:
            gate.set()


async def test_readyz_is_503_naming_a_provider_that_is_not_running(gw: Gw) -> None:
    await gw.app.providers["telegram"].stop()
    status, body = await get(gw, "/readyz")
    assert status == 503
    assert body == {
        "status": "not ready",
        "store": {"backend": "json", "ok": True},
        "providers": {"telegram": "stopped"},
        "problems": ["telegram: stopped"],
    }
    assert await get(gw, "/healthz") == (200, {"status": "ok"}), "alive all the same"


class Slow:
    """A provider whose start and stop wait for their gate (no state of its own: running
    once started, by the app's reckoning)."""

    name = "slow"
    bare_commands = False

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.stopping = asyncio.Event()
        self.start_gate = asyncio.Event()
        self.stop_gate = asyncio.Event()

    async def start(self, on_inbound: OnInbound) -> None:
        self.started.set()
        await self.start_gate.wait()

    async def stop(self) -> None:
        self.stopping.set()
        await self.stop_gate.wait()

    async def send(self, chat_id: str, text: str, *, buttons: Sequence[Button] = ()) -> str:
        return "1"

    async def edit(self, chat_id: str, message_id: str, text: str) -> None:
        return None

    async def dm_chat_id(self, user_id: str) -> str:
        return user_id


async def test_readyz_says_starting_then_ready_then_stopping(
    tg: FakeTelegramServer, state_dir: Path, fake_clock: FakeClock
) -> None:
    slow = Slow()
    app = open_app(
        make_config(tg), state_dir=state_dir, clock=fake_clock, providers={"slow": slow}
    )
    starting = asyncio.create_task(app.start())
    session = aiohttp.ClientSession()
    stopping: asyncio.Task[None] | None = None
    try:
        await asyncio.wait_for(slow.started.wait(), 5)  # the gateway is up before providers
        assert app.gateway is not None
        gw = Gw(app=app, tg=tg, clock=fake_clock, session=session)
        status, body = await get(gw, "/readyz")
        assert (status, body["status"]) == (503, "starting")
        assert body["problems"] == ["pairbot is starting"]

        slow.start_gate.set()
        await starting
        assert await get(gw, "/readyz") == (
            200,
            {**READY, "providers": {"slow": "running"}},
        )

        stopping = asyncio.create_task(app.stop())
        await asyncio.wait_for(slow.stopping.wait(), 5)  # providers drain; the gateway serves
        status, body = await get(gw, "/readyz")
        assert (status, body["status"]) == (503, "stopping")
        assert "pairbot is stopping" in body["problems"]
    finally:
        slow.start_gate.set()
        slow.stop_gate.set()
        await session.close()
        if stopping is not None:
            await stopping
        else:
            with contextlib.suppress(Exception):
                await starting
            await app.stop()


@contextlib.asynccontextmanager
async def app_on(app: App, tg: FakeTelegramServer) -> AsyncIterator[Gw]:
    """``app`` (built with tuning of the test's own) started, as a :class:`Gw`."""
    await app.start()
    assert isinstance(app.clock, FakeClock)
    session = aiohttp.ClientSession()
    try:
        yield Gw(app=app, tg=tg, clock=app.clock, session=session)
    finally:
        await session.close()
        await app.stop()


async def test_readyz_on_postgresql_follows_the_database_going_away_and_coming_back(
    pg_dsn: str, tg: FakeTelegramServer, state_dir: Path, fake_clock: FakeClock
) -> None:
    """A real PostgreSQL behind a TCP proxy the test stops (the database "goes away") and
    starts again; then a schema newer than this pairbot's, and back."""
    fields = conninfo_to_dict(pg_dsn)
    proxy = Proxy(str(fields.get("host") or "127.0.0.1"), int(str(fields.get("port") or 5432)))
    proxy.start()
    via_proxy = make_conninfo(pg_dsn, host="127.0.0.1", port=proxy.port, password=PASSWORD)
    config = make_config(tg, store={"backend": "postgres", "dsn": via_proxy})
    app = open_app(config, state_dir=state_dir, clock=fake_clock)
    postgres_ready = {**READY, "store": {"backend": "postgres", "ok": True}}
    try:
        async with app_on(app, tg) as gw:
            assert await get(gw, "/readyz") == (200, postgres_ready)

            proxy.stop()
            fake_clock.advance(timedelta(seconds=1))
            status, body = await get(gw, "/readyz")
            assert (status, body["store"]) == (
                503,
                {"backend": "postgres", "ok": False, "problem": "unreachable"},
            )
            assert PASSWORD not in json.dumps(body)

            proxy.start()  # the same port again
            fake_clock.advance(timedelta(seconds=1))
            assert await get(gw, "/readyz") == (200, postgres_ready)

            set_version = "UPDATE pairbot_meta SET value = %s WHERE key = 'schema_version'"
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                conn.execute(set_version, (str(SCHEMA_VERSION + 1),))
            fake_clock.advance(timedelta(seconds=1))
            status, body = await get(gw, "/readyz")
            assert (status, body["problems"]) == (503, ["store: schema newer than this pairbot"])
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                conn.execute(set_version, (str(SCHEMA_VERSION),))
            fake_clock.advance(timedelta(seconds=1))
            assert await get(gw, "/readyz") == (200, postgres_ready)
    finally:
        proxy.stop()
