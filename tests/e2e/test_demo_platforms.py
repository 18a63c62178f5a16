"""Every platform's DemoPlatform plays people the app understands: a stranger writes and gets a
code, the owner gets a notice and approves the code the way that platform's owner types it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli.demo import load_platform
from tests.e2e.support import app_config, app_running, code_in, texts
from tests.providers.platforms import FACTS

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("name", list(FACTS))
async def test_a_platforms_people_pair_through_the_app(name: str, state_dir: Path) -> None:
    demo = load_platform(name)
    await demo.start()
    try:
        config = app_config(name, demo.owner_id, demo.provider_config())
        stranger = demo.user_id(1)
        assert stranger != demo.owner_id
        async with app_running(config, state_dir) as app:
            demo.dm(stranger, "hi", name="Alice")
            [reply] = await texts(lambda: demo.texts_to(stranger), 1)
            assert "pairing code" in reply
            await texts(lambda: demo.texts_to(demo.owner_id), 1)  # the notice
            slash = "" if FACTS[name].bare_commands else "/"
            demo.dm(demo.owner_id, f"{slash}approve {code_in(reply)}", name="Owner")
            await texts(lambda: demo.texts_to(stranger), 2)
            assert app.pairing.is_allowed(name, stranger)
    finally:
        await demo.stop()
