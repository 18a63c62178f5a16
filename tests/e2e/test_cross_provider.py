"""Several providers in one process: one owner approves strangers from any platform."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.cli.compose import open_app
from bot.cli.demo import available_platforms, load_platform
from bot.core.config import Config
from bot.runtime.app import App
from providers.fakebase import DemoPlatform
from tests.e2e.support import code_in, texts

pytestmark = pytest.mark.e2e

NEEDED = ("telegram", "slack", "discord")


@pytest.fixture
async def platforms() -> AsyncIterator[dict[str, DemoPlatform]]:
    missing = [p for p in NEEDED if p not in available_platforms()]
    assert not missing, f"no fake for {missing}"
    started: dict[str, DemoPlatform] = {}
    try:
        for name in NEEDED:
            platform = load_platform(name)
            await platform.start()
            started[name] = platform
        yield started
    finally:
        for platform in started.values():
            await platform.stop()


@pytest.fixture
async def app(platforms: dict[str, DemoPlatform], state_dir: Path) -> AsyncIterator[App]:
    telegram = platforms["telegram"]
    config = Config.model_validate(
        {
            "owners": [{"provider": "telegram", "user_id": telegram.owner_id}],
            "gateway": {"port": 0},
            "providers": {name: p.provider_config() for name, p in platforms.items()},
        }
    )
    running = open_app(config, state_dir=state_dir)
    await running.start()
    yield running
    await running.stop()


async def texts_to(platform: DemoPlatform, user: str, count: int) -> list[str]:
    return await texts(lambda: platform.texts_to(user), count, wait=10.0)


async def test_owner_on_telegram_approves_a_discord_and_a_slack_stranger(platforms, app):
    telegram = platforms["telegram"]
    owner = telegram.owner_id
    for name in ("discord", "slack"):
        platform = platforms[name]
        stranger = platform.user_id(1)
        platform.dm(stranger, "hello from afar", name="Dana")
        code = code_in((await texts_to(platform, stranger, 1))[0])
        notices = await texts_to(telegram, owner, 1)
        while not any(code[:4] in t for t in notices):
            notices = await texts_to(telegram, owner, len(notices) + 1)
        notice = next(t for t in notices if code[:4] in t)
        assert f"Sender id: {stranger}" in notice
        telegram.dm(owner, f"/approve {code}", name="Owner")
        got = await texts_to(platform, stranger, 2)
        assert got[1] == "You're approved. Send a message to start chatting."
        platform.dm(stranger, "now it works", name="Dana")
        assert (await texts_to(platform, stranger, 3))[2] == "now it works"
        assert app.pairing.is_allowed(name, stranger)
        assert not app.pairing.is_allowed("telegram", stranger)


async def test_an_owner_id_on_one_platform_is_a_stranger_on_another(platforms, app):
    telegram, discord = platforms["telegram"], platforms["discord"]
    impostor = discord.user_id(7)
    discord.dm(impostor, "/pending", name="Owner")
    assert "pairing code:" in (await texts_to(discord, impostor, 1))[0]
    assert not any("Nothing is pending" in t for t in telegram.texts_to(telegram.owner_id))
