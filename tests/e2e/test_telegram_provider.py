"""TelegramProvider alone on real python-telegram-bot, against the loopback fake Bot API: what
is Telegram's own (what every provider does is in tests/providers/test_contract.py)."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

import providers.telegram.provider as telegram_module
from bot.core.clock import Clock
from bot.core.errors import ConfigError
from bot.core.models import Button, ChatKind
from providers.telegram.fake import FakeTelegramServer
from providers.telegram.provider import TelegramProvider
from tests.helpers import APPROVE, Inbox

pytestmark = pytest.mark.e2e

ALICE = 42
DENY = Button(label="Deny", command="/deny ABCD2345")


def make_fake(clock: Clock) -> FakeTelegramServer:
    """A Bot API where Alice pressed Start before: the bot may write to her."""
    fake = FakeTelegramServer(clock=clock)
    fake.started_before(ALICE)
    return fake


def make_provider(fake: FakeTelegramServer) -> TelegramProvider:
    return TelegramProvider(token=fake.token, api_base_url=fake.base_url, poll_timeout=1)


async def test_a_dms_name_joins_first_and_last_and_its_meta_holds_the_username(
    fake: FakeTelegramServer, running: TelegramProvider, inbox: Inbox
) -> None:
    fake.dm(ALICE, "hello", first_name="Alice", last_name="Liddell", username="alice")

    [inbound] = await inbox.wait()

    assert (inbound.sender_id, inbound.sender_name) == ("42", "Alice Liddell")
    assert inbound.meta == {"username": "alice", "firstName": "Alice", "lastName": "Liddell"}


@pytest.mark.parametrize("chat_type", ["group", "supergroup"])
async def test_group_message_arrives_as_group(
    fake: FakeTelegramServer, running: TelegramProvider, inbox: Inbox, chat_type: str
) -> None:
    fake.group_message(-1001, ALICE, "hi all", chat_type=chat_type, first_name="Alice")

    [inbound] = await inbox.wait()

    assert (inbound.chat_kind, inbound.chat_id, inbound.sender_id) == (
        ChatKind.GROUP,
        "-1001",
        "42",
    )


async def test_channel_post_uses_the_chat_as_sender(
    fake: FakeTelegramServer, running: TelegramProvider, inbox: Inbox
) -> None:
    fake.channel_post(-1002, "news", title="Announcements")

    [inbound] = await inbox.wait()

    assert (inbound.chat_kind, inbound.chat_id, inbound.sender_id, inbound.sender_name) == (
        ChatKind.CHANNEL,
        "-1002",
        "-1002",
        "Announcements",
    )


async def test_edits_are_neither_asked_for_nor_handed_on(
    fake: FakeTelegramServer, running: TelegramProvider, inbox: Inbox
) -> None:
    alice = {"id": ALICE, "is_bot": False, "first_name": "Alice"}
    alice_chat = {"id": ALICE, "type": "private", "first_name": "Alice"}
    fake.queue_update(
        {
            "edited_message": {
                "message_id": 902,
                "date": 0,
                "edit_date": 1,
                "chat": alice_chat,
                "from": alice,
                "text": "edited",
            }
        }
    )
    fake.dm(ALICE, "sentinel")

    await inbox.wait()
    await fake.wait_until(lambda: fake.unconfirmed == 0)

    assert inbox.texts == ["sentinel"]
    polls = [p for m, p in fake.calls if m == "getUpdates"]
    assert "edited_message" not in polls[-1]["allowed_updates"]


async def test_send_is_plain_text_with_no_parse_mode(
    fake: FakeTelegramServer, running: TelegramProvider
) -> None:
    text = "<b>*not bold*</b> [x](http://e.com)"

    message_id = await running.send("42", text)

    assert [{k: v for k, v in m.items() if k != "received_at"} for m in fake.sent] == [
        {
            "chat_id": ALICE,
            "text": text,
            "message_id": int(message_id),
            "reply_markup": None,
            "parse_mode": None,
        }
    ]


async def test_buttons_are_one_inline_keyboard_row_and_a_press_is_answered(
    fake: FakeTelegramServer, running: TelegramProvider, inbox: Inbox
) -> None:
    fake.dm(ALICE, "hi", first_name="Alice", username="alice")
    await inbox.wait()
    message_id = await running.send("42", "Approve Bob?", buttons=[APPROVE, DENY])
    assert fake.sent[-1]["message_id"] == int(message_id)
    assert fake.sent[-1]["reply_markup"] == {
        "inline_keyboard": [
            [
                {"text": "Approve", "callback_data": "/approve ABCD2345"},
                {"text": "Deny", "callback_data": "/deny ABCD2345"},
            ]
        ]
    }

    query_id = fake.press_button(ALICE, int(message_id), APPROVE.command)
    _, pressed = await inbox.wait(2)

    assert (pressed.text, pressed.message_id, pressed.is_button) == (
        APPROVE.command,
        message_id,
        True,
    )
    assert (pressed.sender_name, pressed.sent_at) == ("Alice", None)
    assert pressed.meta == {"username": "alice", "firstName": "Alice"}
    assert fake.callback_answers == [
        {"callback_query_id": query_id, "text": None, "show_alert": False}
    ]


async def test_an_edit_that_changes_nothing_is_no_error(
    fake: FakeTelegramServer, running: TelegramProvider
) -> None:
    message_id = await running.send("42", "Approve Bob?", buttons=[APPROVE, DENY])

    await running.edit("42", message_id, "Approved Bob (7)")
    await running.edit("42", message_id, "Approved Bob (7)")  # "not modified" is success

    assert [(e["method"], e["text"], e["reply_markup"]) for e in fake.edits] == [
        ("editMessageText", "Approved Bob (7)", None)
    ]


@pytest.mark.parametrize("rate_limiter", [True, False], ids=["AIORateLimiter", "own-retry"])
async def test_flood_limit_429_is_waited_out_and_the_message_arrives(
    fake: FakeTelegramServer,
    inbox: Inbox,
    monkeypatch: pytest.MonkeyPatch,
    rate_limiter: bool,
) -> None:
    if rate_limiter and not telegram_module._HAVE_AIOLIMITER:
        pytest.skip("aiolimiter is not installed")
    monkeypatch.setattr(telegram_module, "_HAVE_AIOLIMITER", rate_limiter)
    provider = make_provider(fake)
    await provider.start(inbox)
    try:
        fake.fail_next_sends(1, retry_after=1)
        loop = asyncio.get_running_loop()
        started = loop.time()

        message_id = await provider.send("42", "after the flood")

        waited = loop.time() - started
    finally:
        await provider.stop()
    assert fake.messages_to(ALICE) == ["after the flood"]
    assert fake.sent[-1]["message_id"] == int(message_id)
    assert fake.methods_called().count("sendMessage") == 2
    assert waited >= 1.0


async def test_wrong_token_fails_start_with_a_clear_error_without_the_token(
    fake: FakeTelegramServer, inbox: Inbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = "999999:definitely-not-the-token"
    provider = TelegramProvider(token=token, api_base_url=fake.base_url)

    with pytest.raises(ConfigError, match="rejected the bot token") as raised:
        await provider.start(inbox)

    assert token not in str(raised.value)
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__
    assert not provider.running
    assert token not in caplog.text
    await provider.stop()  # nothing to stop: still fine


async def test_the_long_poll_is_held_not_spun_and_ends_with_stop(
    fake: FakeTelegramServer, provider: TelegramProvider, inbox: Inbox
) -> None:
    await provider.start(inbox)
    await asyncio.sleep(0.3)  # idle: the long poll is held, not spun
    assert fake.methods_called().count("getUpdates") <= 3

    await provider.stop()
    polls = fake.methods_called().count("getUpdates")
    fake.dm(ALICE, "while stopped")
    await asyncio.sleep(0.1)
    assert fake.methods_called().count("getUpdates") == polls
    assert inbox.items == []


async def test_fake_answers_like_the_bot_api(fake: FakeTelegramServer) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{fake.base_url}/botWRONG/getMe") as wrong:
            assert (wrong.status, await wrong.json()) == (
                401,
                {"ok": False, "error_code": 401, "description": "Unauthorized"},
            )
        async with session.post(f"{fake.base_url}/bot{fake.token}/noSuchMethod") as unknown:
            assert unknown.status == 404
        form = {"chat_id": "42", "text": "42"}  # PTB's encoding: the text stays a string
        async with session.post(f"{fake.base_url}/bot{fake.token}/sendMessage", data=form) as ok:
            body = await ok.json()
    assert body["ok"] is True
    assert body["result"]["text"] == "42"
    assert fake.sent[-1]["chat_id"] == 42
