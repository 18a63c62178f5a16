"""One id per sender, whatever form the config, the store or the platform writes it in: the
whole app on the Signal and BlueBubbles fakes (which write ids as signal-cli and BlueBubbles
do), with owners and stored entries written in another case."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.core.clock import FakeClock
from providers.imessage.fake import WEBHOOK_PATH, FakeBlueBubbles
from providers.imessage.provider import IMessageProvider
from providers.signal.fake import FakeSignalDaemon
from tests.e2e.support import app_config, app_running, code_in, texts

pytestmark = pytest.mark.e2e

OWNER_ACI = "0a11ce00-0000-4000-8000-00000000000a"
ALICE_ACI = "a11ce000-0000-4000-8000-000000000001"
OWNER_MAIL = "owner@example.com"
ALICE_PHONE = "+15551230001"


@pytest.fixture
async def daemon(fake_clock: FakeClock) -> AsyncIterator[FakeSignalDaemon]:
    async with FakeSignalDaemon(clock=fake_clock, keepalive=0.5) as fake:
        yield fake


@pytest.fixture
async def bluebubbles(fake_clock: FakeClock) -> AsyncIterator[FakeBlueBubbles]:
    async with FakeBlueBubbles(clock=fake_clock) as fake:
        yield fake


def stored_allowlist(state_dir: Path, provider: str, *ids: str) -> tuple[Path, str]:
    """Write ``<provider>-allowFrom.json`` as another writer would; return it and its text."""
    path = state_dir / "credentials" / f"{provider}-allowFrom.json"
    path.parent.mkdir(parents=True, mode=0o700)
    state_dir.chmod(0o700)
    text = json.dumps({"version": 1, "allowFrom": list(ids)}, indent=2) + "\n"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path, text


def signal_block(daemon: FakeSignalDaemon) -> dict[str, str]:
    return {"http_url": daemon.base_url, "account": daemon.account}


async def test_a_signal_owner_written_in_upper_case_approves_from_their_chat(
    daemon: FakeSignalDaemon, state_dir: Path, fake_clock: FakeClock
) -> None:
    # signal-cli writes every ACI in lower case (UUID::toString), as the fake does.
    config = app_config("signal", OWNER_ACI.upper(), signal_block(daemon))
    async with app_running(config, state_dir, fake_clock) as app:
        daemon.dm(ALICE_ACI, "hello?", name="Alice")
        code = code_in((await texts(lambda: daemon.messages_to(ALICE_ACI), 1))[0])
        await texts(lambda: daemon.messages_to(OWNER_ACI), 1)  # the notice

        daemon.dm(OWNER_ACI, f"/approve {code}", name="Owner")

        owner = await texts(lambda: daemon.messages_to(OWNER_ACI), 2)
        assert owner[1].startswith(f"Approved Signal sender {ALICE_ACI}")
        assert app.pairing.is_allowed("signal", ALICE_ACI)


async def test_an_imessage_owner_e_mail_written_in_mixed_case_approves_from_their_chat(
    bluebubbles: FakeBlueBubbles, state_dir: Path, fake_clock: FakeClock
) -> None:
    block = {
        "server_url": bluebubbles.base_url,
        "password": bluebubbles.password,
        "webhook": {"port": 0, "path": WEBHOOK_PATH},
    }
    config = app_config("imessage", "  Owner@Example.COM ", block)
    async with app_running(config, state_dir, fake_clock) as app:
        provider = app.providers["imessage"]
        assert isinstance(provider, IMessageProvider)
        bluebubbles.webhook_for(provider.webhook_port, provider.webhook_path)
        bluebubbles.existing_chat(OWNER_MAIL)  # the owner wrote to the bot's Apple ID once

        def to(handle: str) -> list[str]:
            return bluebubbles.messages_to_handle(handle)

        bluebubbles.dm(ALICE_PHONE, "hello?")
        code = code_in((await texts(lambda: to(ALICE_PHONE), 1))[0])
        await texts(lambda: to(OWNER_MAIL), 1)  # the notice, in the owner's chat

        bluebubbles.dm(OWNER_MAIL, f"/approve {code}")

        owner = await texts(lambda: to(OWNER_MAIL), 2)
        assert owner[1].startswith(f"Approved iMessage sender {ALICE_PHONE}")
        assert app.pairing.is_allowed("imessage", ALICE_PHONE)


async def test_a_stored_allowlist_entry_in_upper_case_admits_the_sender(
    daemon: FakeSignalDaemon, state_dir: Path, fake_clock: FakeClock
) -> None:
    # As an older pairbot (which kept a configured id's case) or a hand edit left it.
    path, text = stored_allowlist(state_dir, "signal", ALICE_ACI.upper())
    config = app_config("signal", OWNER_ACI, signal_block(daemon))
    async with app_running(config, state_dir, fake_clock):
        daemon.dm(ALICE_ACI, "what's the weather?", name="Alice")

        [reply] = await texts(lambda: daemon.messages_to(ALICE_ACI), 1)

        assert reply == "what's the weather?"  # echoed: allowed, not challenged
        assert daemon.messages_to(OWNER_ACI) == []  # no pairing request to tell of
    assert path.read_text(encoding="utf-8") == text  # and the file was left as it was
