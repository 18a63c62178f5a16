"""The running app when the state or the platform is not usable (real PTB against the fake).

At start, a state file that does not parse, a gateway port in use and an unreachable
platform API refuse the start with one error, before any provider delivers a message. While
running, a state file that goes bad refuses (closed) only the messages that need it: one log
line each, and the owner is told once per bad file.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator

import pytest

from bot.cli.compose import open_app
from bot.core.clock import FakeClock
from bot.core.errors import StartupError, StoreCorruptError
from providers.fakebase import free_port
from providers.telegram.fake import FakeTelegramServer
from stores.jsonfile import JsonFileStore
from tests.e2e.support import settle
from tests.e2e.test_app_telegram import (
    ALICE,
    BOB,
    MALLORY,
    OWNER,
    make_config,
    start_app,
    texts_to,
)

pytestmark = pytest.mark.e2e

CAROL, DAVE = 7777, 8888
BROKEN = '{"version": 1, "requests": [\n'


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer() as fake:
        fake.started_before(OWNER)
        yield fake


def unusable_notices(fake: FakeTelegramServer) -> list[str]:
    return [t for t in fake.messages_to(OWNER) if t.startswith("pairbot cannot use")]


# --- at start ------------------------------------------------------------------------------------


async def test_start_refuses_a_corrupt_state_file_before_any_provider(tg, state_dir):
    JsonFileStore(state_dir).close()
    bad = state_dir / "nodes" / "paired.json"
    bad.write_text('{"version": 1, "nodes": [{"nodeId": "pixel-9"}]}\n')
    before = bad.read_bytes()
    app = open_app(make_config(tg), state_dir=state_dir)

    with pytest.raises(StoreCorruptError) as caught:
        await app.start()

    assert caught.value.path == bad
    assert "nodes[0].tokenHash" in str(caught.value)
    assert tg.calls == []  # Telegram was never contacted: no message was taken and dropped
    assert bad.read_bytes() == before


async def test_start_refuses_a_gateway_port_in_use(tg, state_dir):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        app = open_app(make_config(tg, gateway={"port": port}), state_dir=state_dir)
        with pytest.raises(StartupError) as caught:
            await app.start()
    assert str(caught.value) == (
        f"gateway: cannot listen on 127.0.0.1:{port}: address already in use (gateway.port)"
    )
    assert tg.calls == []


async def test_start_refuses_an_unreachable_platform_api(tg, state_dir):
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    app = open_app(make_config(tg, telegram={"api_base_url": closed}), state_dir=state_dir)

    with pytest.raises(StartupError) as caught:
        await app.start()

    message = str(caught.value)
    assert message.startswith("telegram: cannot start: NetworkError: ")
    assert "\n" not in message
    assert tg.token not in message
    assert tg.token.split(":")[1] not in message


# --- while running -------------------------------------------------------------------------------


async def test_a_state_file_that_goes_bad_refuses_only_what_needs_it(
    tg, state_dir, caplog: pytest.LogCaptureFixture
):
    app = await start_app(tg, state_dir, FakeClock())
    try:
        caplog.set_level(logging.INFO, logger="bot.runtime.inbound")
        app.pairing.allow("telegram", str(BOB), actor="test")
        pairing_file = state_dir / "credentials" / "telegram-pairing.json"
        pairing_file.write_text(BROKEN)

        tg.dm(MALLORY, "hello", first_name="Mallory")
        tg.dm(CAROL, "hello", first_name="Carol")
        await tg.wait_until(lambda: len(unusable_notices(tg)) >= 1)
        tg.dm(BOB, "still here?")  # an allowed sender needs only allowFrom: served
        assert await texts_to(tg, BOB, 1) == ["still here?"]
        await settle(0.4)

        # Closed: the strangers got nothing, nothing was granted, the file is as it was.
        assert tg.messages_to(MALLORY) == []
        assert tg.messages_to(CAROL) == []
        assert not app.pairing.is_allowed("telegram", str(MALLORY))
        assert pairing_file.read_text() == BROKEN
        notices = unusable_notices(tg)
        assert len(notices) == 1  # once per bad file, not once per message
        assert str(pairing_file) in notices[0]
        refused = [r for r in caplog.records if "refused" in r.getMessage()]
        assert len(refused) == 2
        for record in refused:
            assert str(pairing_file) in record.getMessage()
            assert "\n" not in record.getMessage()
            assert record.exc_info is None
        assert not [r for r in caplog.records if r.exc_info]

        # Fixed: strangers get codes again. Broken again: the owner is told again.
        pairing_file.write_text('{"version": 1, "requests": []}\n')
        tg.dm(ALICE, "hello", first_name="Alice")
        assert "pairing code" in (await texts_to(tg, ALICE, 1))[0]
        tg.dm(BOB, "ping")  # updates are handled one at a time: Alice's is wholly done now
        assert (await texts_to(tg, BOB, 2))[1] == "ping"
        pairing_file.write_text(BROKEN)
        tg.dm(DAVE, "hello", first_name="Dave")
        await tg.wait_until(lambda: len(unusable_notices(tg)) >= 2)
        await settle(0.4)
        assert tg.messages_to(DAVE) == []
        assert len(unusable_notices(tg)) == 2
    finally:
        await app.stop()


async def test_a_bad_allowlist_shuts_its_senders_out_not_in(tg, state_dir):
    app = await start_app(tg, state_dir, FakeClock())
    try:
        app.pairing.allow("telegram", str(BOB), actor="test")
        allow_file = state_dir / "credentials" / "telegram-allowFrom.json"
        allow_file.write_text('{"version": 1, "allowFrom": "*"}\n')
        tg.dm(BOB, "hi")
        tg.dm(MALLORY, "hi", first_name="Mallory")
        await tg.wait_until(lambda: len(unusable_notices(tg)) >= 1)
        await settle(0.4)
        assert tg.messages_to(BOB) == []
        assert tg.messages_to(MALLORY) == []
        assert len(unusable_notices(tg)) == 1
        assert str(allow_file) in unusable_notices(tg)[0]
    finally:
        await app.stop()
