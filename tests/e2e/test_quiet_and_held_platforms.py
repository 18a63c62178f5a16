"""Issue 14, parts 1 and 2, on every platform's people (its DemoPlatform on the loopback fake,
the real provider, the whole app): a silent platform sends a stranger nothing, not even
"you're approved", while the owner is told so and approves as usual; a custom text is what a
stranger gets; what a pending stranger wrote reaches the handler once, in order, right after
the approval."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.cli.demo import load_platform
from bot.core import messages
from providers.fakebase import DemoPlatform
from tests.e2e.support import app_config, app_running, settle, texts
from tests.providers.platforms import FACTS

pytestmark = pytest.mark.e2e

FIRST = "Hello! It's Zoë, Sam gave me this number.\nIs this the right place?"


@pytest.fixture(params=list(FACTS))
async def people(request: pytest.FixtureRequest) -> AsyncIterator[DemoPlatform]:
    demo = load_platform(request.param)
    await demo.start()
    try:
        yield demo
    finally:
        await demo.stop()


def notice_code(notice: str) -> str:
    line = next(ln for ln in notice.splitlines() if ln.startswith("Code: "))
    return line.split()[1].replace("-", "")


def approve(people: DemoPlatform, code: str) -> None:
    slash = "" if FACTS[people.provider].bare_commands else "/"
    people.dm(people.owner_id, f"{slash}approve {code}", name="Owner")


async def test_silence_and_held_messages(people: DemoPlatform, state_dir: Path) -> None:
    name = people.provider
    block = {**people.provider_config(), "unpaired_response": "silent"}
    config = app_config(
        name, people.owner_id, block, pairing={"hold_messages": 2, "notice_preview": True}
    )
    stranger = people.user_id(1)
    async with app_running(config, state_dir) as app:
        people.dm(stranger, FIRST, name="Zoë")
        people.dm(stranger, "second", name="Zoë")
        [notice] = await texts(lambda: people.texts_to(people.owner_id), 1)
        assert "They were told nothing" in notice
        assert "First message (as the sender wrote it, unverified): Hello! It's Zoë" in notice
        await settle(0.3)
        assert people.texts_to(stranger) == []
        approve(people, notice_code(notice))
        handed = await texts(lambda: people.texts_to(stranger), 2)
        assert handed == [FIRST, "second"], "echoed by the handler, in order, no approval text"
        await texts(lambda: people.texts_to(people.owner_id), 2)
        assert "They were not told (silent mode)." in people.texts_to(people.owner_id)[1]
        people.dm(stranger, "third", name="Zoë")
        await texts(lambda: people.texts_to(stranger), 3)
        await settle(0.3)
        assert people.texts_to(stranger) == [FIRST, "second", "third"]
        assert app.pairing.is_allowed(name, stranger)


async def test_a_custom_text_then_held_messages_after_being_told(
    people: DemoPlatform, state_dir: Path
) -> None:
    name = people.provider
    block = {**people.provider_config(), "unpaired_response": "custom"}
    config = app_config(
        name,
        people.owner_id,
        block,
        pairing={"hold_messages": 1},
        messages={"stranger": "{provider}: hand the owner {code} ({ttl})."},
    )
    stranger = people.user_id(2)
    async with app_running(config, state_dir) as app:
        people.dm(stranger, "hi", name="Sam")
        [reply] = await texts(lambda: people.texts_to(stranger), 1)
        [request] = app.pairing.pending()
        label = messages.label(name)
        assert reply == f"{label}: hand the owner {request.code[:4]}-{request.code[4:]} (1h)."
        await texts(lambda: people.texts_to(people.owner_id), 1)
        approve(people, request.code)
        told = await texts(lambda: people.texts_to(stranger), 3)
        assert told[1:] == [messages.approved_sender(), "hi"]
