"""The whole app on each backend: the bot and the ``pairbot`` command share one store.

The bot runs in this process and the CLI in its own, both on the store the config names.
"""

from __future__ import annotations

import json
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.core.clock import FakeClock
from bot.runtime.app import App
from providers.telegram.fake import FakeTelegramServer
from tests.e2e import support
from tests.e2e.support import app_config, code_in, texts
from tests.process import pairbot_exits

pytestmark = pytest.mark.e2e

OWNER, ALICE = 111, 4242
APPROVED = "You're approved. Send a message to start chatting."


@pytest.fixture(params=["json", "sqlite", "postgres"])
def store_section(request: pytest.FixtureRequest, state_dir: Path) -> dict[str, Any]:
    if request.param == "sqlite":
        return {"backend": "sqlite", "path": str(state_dir / "bot.db")}
    if request.param == "postgres":  # a schema of its own on the test server
        return {"backend": "postgres", "dsn": request.getfixturevalue("pg_dsn")}
    return {"backend": request.param}


@pytest.fixture
async def tg(fake_clock: FakeClock) -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer(clock=fake_clock) as fake:
        fake.started_before(OWNER)
        yield fake


@pytest.fixture
def cli_config(tmp_path: Path, state_dir: Path, store_section: dict[str, Any]) -> Path:
    """The config the ``pairbot`` command reads: the same store as the bot's."""
    path = tmp_path / "pairbot.yaml"
    path.write_text(json.dumps({"state_dir": str(state_dir), "store": store_section}))
    path.chmod(0o600)
    return path


@pytest.fixture
async def app(
    tg: FakeTelegramServer, state_dir: Path, fake_clock: FakeClock, store_section: dict[str, Any]
) -> AsyncIterator[App]:
    block = {"token": tg.token, "api_base_url": tg.base_url}
    config = app_config(
        "telegram",
        str(OWNER),
        block,
        pairing={"prune_interval": "0.2s"},
        store=store_section,
    )
    async with support.app_running(config, state_dir, fake_clock) as running:
        yield running


async def cli(config: Path, *args: str) -> str:
    result = await pairbot_exits("--config", str(config), *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_the_bot_and_the_cli_share_the_store(
    tg: FakeTelegramServer,
    app: App,
    cli_config: Path,
    state_dir: Path,
    store_section: dict[str, Any],
) -> None:
    tg.dm(ALICE, "hello?", first_name="Alice")
    code = code_in((await texts(lambda: tg.messages_to(ALICE), 1))[0])
    pending = json.loads(await cli(cli_config, "pairing", "list", "--json"))
    assert [(r["id"], r["code"]) for r in pending] == [(str(ALICE), code)]

    await cli(cli_config, "pairing", "approve", "telegram", code)
    assert (await texts(lambda: tg.messages_to(ALICE), 2, wait=2.0))[1] == APPROVED
    tg.dm(ALICE, "hi")
    assert (await texts(lambda: tg.messages_to(ALICE), 3))[2] == "hi"

    await cli(cli_config, "allowlist", "remove", "telegram", str(ALICE))
    tg.dm(ALICE, "still there?")  # the gate sees the CLI's revocation on the next message
    assert "pairing code" in (await texts(lambda: tg.messages_to(ALICE), 4))[3]

    if store_section["backend"] == "sqlite":
        db = state_dir / "bot.db"
        assert stat.S_IMODE(db.stat().st_mode) == 0o600
        assert not (state_dir / "credentials").exists()  # nothing went to the JSON files
    audit = json.loads(await cli(cli_config, "audit", "--json"))
    events = [(r["event"], r["outcome"]) for r in audit]
    assert [e for e in events if e[0] != "request"] == [
        ("approve", "approved"),
        ("revoke", "revoked"),
    ]
