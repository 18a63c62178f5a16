"""Telegram as the Bot API behaves (issue 11, points 11-13): a bot cannot write first, long
texts are split by characters as Telegram counts them, and a DM without text is a contact
attempt. Real python-telegram-bot against the loopback fake."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from telegram.error import BadRequest

from bot.core.clock import Clock, FakeClock
from bot.core.errors import RecipientUnreachable
from bot.core.models import ChatKind
from providers.fakebase import wait_until
from providers.telegram.fake import FakeTelegramServer
from providers.telegram.provider import TelegramProvider
from tests.e2e import support
from tests.e2e.support import app_config, code_in, texts
from tests.helpers import Inbox

pytestmark = pytest.mark.e2e

OWNER = 111111111
ALICE = 42
BOT_CHAT = "t.me/pairbot_demo_bot"


def make_fake(clock: Clock) -> FakeTelegramServer:
    """A Bot API where nobody has pressed Start yet."""
    return FakeTelegramServer(clock=clock)


def make_provider(fake: FakeTelegramServer) -> TelegramProvider:
    return TelegramProvider(token=fake.token, api_base_url=fake.base_url, poll_timeout=1)


# --- point 11: the owner must press Start ----------------------------------------------------


async def test_a_send_to_someone_who_never_pressed_start_is_unreachable_and_says_what_to_do(
    fake: FakeTelegramServer, running: TelegramProvider, inbox: Inbox
) -> None:
    with pytest.raises(RecipientUnreachable, match=f"open {BOT_CHAT} and press Start"):
        await running.send(str(OWNER), "a notice")  # never met: "chat not found"
    fake.group_message(-1001, ALICE, "hi all", first_name="Alice")  # met, in a group only
    await inbox.wait()
    with pytest.raises(RecipientUnreachable, match="can't initiate conversation") as caught:
        await running.send(str(ALICE), "a notice")
    assert f"user {ALICE}: they have not started the bot: open {BOT_CHAT}" in str(caught.value)
    assert fake.sent == []

    fake.dm(ALICE, "/start", first_name="Alice")  # the Start button sends /start
    await inbox.wait(2)
    await running.send(str(ALICE), "now it arrives")
    assert fake.messages_to(ALICE) == ["now it arrives"]


async def test_a_send_to_someone_who_blocked_the_bot_is_unreachable(
    fake: FakeTelegramServer, running: TelegramProvider
) -> None:
    fake.started_before(ALICE)
    await running.send(str(ALICE), "first")
    fake.block(ALICE)

    with pytest.raises(RecipientUnreachable, match=f"blocked the bot: open {BOT_CHAT} and press"):
        await running.send(str(ALICE), "second")

    assert fake.messages_to(ALICE) == ["first"]


async def test_whether_a_chat_takes_messages_is_asked_without_sending_one(
    fake: FakeTelegramServer, running: TelegramProvider
) -> None:
    fake.started_before(ALICE)
    assert await running.why_unreachable(str(ALICE)) is None
    why = await running.why_unreachable(str(OWNER))
    assert why is not None
    assert f"open {BOT_CHAT} and press Start" in why
    fake.block(ALICE)
    assert "blocked the bot" in (await running.why_unreachable(str(ALICE)) or "")
    assert fake.sent == []
    assert "sendChatAction" in fake.methods_called()


async def test_at_start_each_owner_who_never_pressed_start_is_one_line_and_told_on_writing(
    fake: FakeTelegramServer,
    state_dir: Path,
    fake_clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    block = {"token": fake.token, "api_base_url": fake.base_url}
    config = app_config("telegram", str(OWNER), block)
    async with support.app_running(config, state_dir, fake_clock):
        lines = [r.getMessage() for r in caplog.records if "gets no notices" in r.getMessage()]
        assert len(lines) == 1
        assert lines[0].startswith(f"owner {OWNER} on telegram gets no notices: ")
        assert f"open {BOT_CHAT} and press Start" in lines[0]

        fake.dm(ALICE, "hello", first_name="Alice")  # a stranger: a notice the owner misses
        [reply] = await texts(lambda: fake.messages_to(ALICE), 1)
        assert code_in(reply)
        await fake.wait_for_call("sendMessage", count=2)
        assert fake.messages_to(OWNER) == []

        def missed_lines() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.name == "bot.runtime.missed"]

        # the refused send's answer is read after the fake counted the call: wait for it
        await wait_until(lambda: bool(missed_lines()), timeout=5.0)
        await asyncio.sleep(0.2)  # and nothing more comes
        missed = missed_lines()
        assert len(missed) == 1
        assert "press Start" in missed[0]

        fake.dm(OWNER, "/start", first_name="Owner")  # the owner presses Start
        told = await texts(lambda: fake.messages_to(OWNER), 1)
        assert "pairing request" in "\n".join(told)


async def test_doctor_says_which_owner_must_press_start(fake: FakeTelegramServer) -> None:
    from providers.telegram.doctor import check_owners  # (imported here: pairbot doctor's way)

    fake.started_before(ALICE)
    block = {"token": fake.token, "api_base_url": fake.base_url}

    # doctor runs its own event loop; the fake serves on this one
    findings = await asyncio.to_thread(check_owners, block, [str(ALICE), str(OWNER)])

    assert findings[0] == (True, "providers.telegram: the token is @pairbot_demo_bot's")
    assert findings[1] == (True, f"providers.telegram: owner {ALICE} gets notices")
    ok, line = findings[2]
    assert ok is False
    assert line.startswith(f"providers.telegram: owner {OWNER} gets no notices: ")
    assert f"open {BOT_CHAT} and press Start" in line
    assert fake.sent == []


# --- point 12: 4096 characters, as Telegram counts them --------------------------------------


@pytest.mark.parametrize(("size", "parts"), [(4096, 1), (4097, 2)])
async def test_characters_outside_the_bmp_count_one_each(
    fake: FakeTelegramServer, running: TelegramProvider, size: int, parts: int
) -> None:
    """TDLib counts code points (utf8_length), not UTF-16 units: 4096 emoji are one message."""
    fake.started_before(ALICE)
    text = "\N{GRINNING FACE}" * size

    await running.send(str(ALICE), text)

    shown = fake.messages_to(ALICE)
    assert len(shown) == parts
    assert "".join(shown) == text


async def test_the_fake_refuses_a_text_over_4096_characters(fake: FakeTelegramServer) -> None:
    fake.started_before(ALICE)
    provider = make_provider(fake)
    await provider.start(Inbox())
    try:
        bot = provider._bot()
        with pytest.raises(BadRequest, match="Message is too long"):
            await bot.send_message(chat_id=ALICE, text="x" * 4097)
    finally:
        await provider.stop()


# --- point 13: a DM without text is a contact attempt ----------------------------------------


@pytest.mark.parametrize(
    ("kind", "caption"),
    [
        ("photo", "my cat"),
        ("photo", None),
        ("document", "my CV"),
        ("document", None),
        ("sticker", None),
        ("voice", None),
    ],
)
async def test_a_dm_with_media_is_an_inbound_its_caption_the_text(
    fake: FakeTelegramServer,
    running: TelegramProvider,
    inbox: Inbox,
    kind: str,
    caption: str | None,
) -> None:
    fake.dm_media(ALICE, kind, caption=caption, first_name="Alice")  # type: ignore[arg-type]

    [inbound] = await inbox.wait()

    assert (inbound.sender_id, inbound.chat_kind, inbound.media) == ("42", ChatKind.DM, True)
    assert inbound.text == (caption or "")
    assert inbound.sender_name == "Alice"


async def test_a_stranger_who_sends_a_sticker_gets_a_code(
    fake: FakeTelegramServer, state_dir: Path, fake_clock: FakeClock
) -> None:
    fake.started_before(OWNER)
    block = {"token": fake.token, "api_base_url": fake.base_url}
    async with support.app_running(
        app_config("telegram", str(OWNER), block), state_dir, fake_clock
    ):
        fake.dm_media(ALICE, "sticker", first_name="Alice")
        [reply] = await texts(lambda: fake.messages_to(ALICE), 1)
        assert code_in(reply)
