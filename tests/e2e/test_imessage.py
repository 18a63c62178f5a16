"""IMessageProvider against the loopback BlueBubbles fake: what is iMessage's own (what every
provider does is in tests/providers/test_contract.py), and inside the whole app."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from rich.console import Console

from bot.core.clock import Clock, FakeClock
from bot.core.config import Config
from bot.core.errors import ConfigError
from bot.core.models import ChatKind, Inbound
from bot.core.platforms import IMessageConfig
from bot.core.schema import WebhookConfig
from bot.runtime.app import App
from providers import load_provider_class
from providers.imessage.fake import WEBHOOK_PATH, FakeBlueBubbles, IMessageDemo
from providers.imessage.provider import BlueBubblesError, IMessageProvider
from stores.jsonfile import JsonFileStore
from tests.e2e.support import app_config, app_running, code_in, texts
from tests.helpers import APPROVE, Inbox

pytestmark = pytest.mark.e2e

OWNER, ALICE, BOB, MALLORY = "+15550000001", "+15551230001", "+15551230002", "+15556660000"
GROUP = "iMessage;+;chat123456789"


def dm(handle: str) -> str:
    """The one-to-one chat as macOS 26, the fake's Mac, names it."""
    return f"any;-;{handle}"


def make_provider(fake: FakeBlueBubbles, **kwargs: Any) -> IMessageProvider:
    options: dict[str, Any] = {
        "webhook": WebhookConfig(port=0, path=WEBHOOK_PATH),
        "retry_initial": 0.05,
        "retry_max": 0.2,
        "send_retry_for": 5.0,
        "stop_grace": 1.0,
    }
    options.update(kwargs)
    return IMessageProvider(server_url=fake.base_url, password=fake.password, **options)


def make_fake(clock: Clock) -> FakeBlueBubbles:
    fake = FakeBlueBubbles(clock=clock)
    for handle in (OWNER, ALICE):  # the Mac has talked with them before: sends to them land
        fake.existing_chat(handle)
    return fake


async def connect(fake: FakeBlueBubbles, provider: IMessageProvider) -> None:
    fake.webhook_for(provider.webhook_port, provider.webhook_path)


# -- the provider alone ------------------------------------------------------------------------


async def test_the_handle_is_handed_over_as_bluebubbles_gives_it(fake, running, inbox):
    # The core puts it in iMessage's one normal form (bot/core/platforms.py, tests/e2e/test_ids.py)
    event = fake.dm_event("alice@example.com", "hi")
    event["data"]["handle"]["address"] = "Alice@Example.COM"
    fake.queue_event("new-message", event["data"])

    [inbound] = await inbox.wait()

    assert (inbound.sender_id, inbound.chat_id) == (
        "Alice@Example.COM",
        "any;-;alice@example.com",
    )
    assert await running.dm_chat_id("alice@example.com") == "any;-;alice@example.com"


async def test_sms_dm_is_a_dm_too(fake, running, inbox):
    fake.dm(BOB, "via sms", service="SMS")

    [inbound] = await inbox.wait()

    assert (inbound.chat_kind, inbound.chat_id, inbound.meta) == (
        ChatKind.DM,
        f"any;-;{BOB}",  # macOS 26 names every one-to-one chat "any"
        {"service": "SMS"},
    )


@asynccontextmanager
async def on_macos_15(inbox: Inbox) -> AsyncIterator[tuple[FakeBlueBubbles, IMessageProvider]]:
    """A fake Mac on macOS 15 and a provider running against it."""
    async with FakeBlueBubbles(macos=15) as fake:
        provider = make_provider(fake)
        try:
            await provider.start(inbox)
            await connect(fake, provider)
            yield fake, provider
        finally:
            await provider.stop()


async def test_before_macos_26_a_dm_chat_is_named_by_its_service(inbox):
    async with on_macos_15(inbox) as (fake, _):
        fake.dm(BOB, "via sms", service="SMS")
        fake.dm(ALICE, "via imessage")
        sms, imessage = await inbox.wait(2)
    assert (sms.chat_kind, sms.chat_id) == (ChatKind.DM, f"SMS;-;{BOB}")
    assert (imessage.chat_kind, imessage.chat_id) == (ChatKind.DM, f"iMessage;-;{ALICE}")


async def test_group_chats_arrive_as_group(fake, running, inbox):
    fake.group_message(GROUP, ALICE, "hi all", participants=(ALICE, BOB), title="Friends")
    odd = fake.dm_event(BOB, "a one-to-one guid in a group-styled chat")
    odd["data"]["chats"][0]["style"] = 43
    fake.queue_event("new-message", odd["data"])

    first, second = await inbox.wait(2)

    assert (first.chat_kind, first.chat_id, first.sender_id) == (ChatKind.GROUP, GROUP, ALICE)
    assert second.chat_kind is ChatKind.GROUP


async def test_reactions_chat_events_and_other_event_types_make_no_inbound(fake, running, inbox):
    fake.tapback(ALICE, "SOME-GUID")
    no_handle = fake.dm_event(ALICE, "who am I?")
    no_handle["data"]["handle"] = None
    fake.queue_event("new-message", no_handle["data"])
    rename = fake.dm_event(ALICE, "")
    rename["data"]["itemType"] = 2
    fake.queue_event("new-message", rename["data"])
    fake.event(
        "updated-message",
        {**fake.dm_event(ALICE, "edited")["data"], "dateEdited": 1_700_000_000_000},
    )
    fake.event("typing-indicator", {"display": True, "guid": dm(ALICE)})
    fake.event("chat-read-status-changed", {"chatGuid": dm(ALICE), "read": True})
    fake.event("group-name-change", fake.group_message(GROUP, ALICE, "x")["data"])
    fake.event("participant-added", {"chats": [{"guid": GROUP}]})
    fake.dm(BOB, "sentinel")

    items = await inbox.wait(2)  # the group message, then the sentinel
    await fake.wait_delivered()
    await asyncio.sleep(0.1)

    assert [(i.chat_kind, i.text) for i in items] == [
        (ChatKind.GROUP, "x"),
        (ChatKind.DM, "sentinel"),
    ]


async def test_unauthenticated_webhook_posts_are_refused_and_change_nothing(fake, running, inbox):
    event = fake.dm_event(MALLORY, "/approve ABCD2345")

    statuses = [
        await fake.post_webhook(event, password=None),
        await fake.post_webhook(event, password="wrong"),
        await fake.post_webhook(event, password=""),
        await fake.post_webhook(event, password=fake.password.upper()),
    ]
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{running.webhook_port}{WEBHOOK_PATH}"
        async with session.post(url, params={"guid": fake.password}, json=event) as resp:
            statuses.append(resp.status)
        async with session.get(url, params={"password": fake.password}) as resp:
            statuses.append(resp.status)
    await asyncio.sleep(0.1)

    assert statuses == [401, 401, 401, 401, 401, 405]
    assert inbox.items == []
    # The refused POSTs did not mark the message as seen: the real delivery goes through.
    fake.queue_event("new-message", event["data"])
    [inbound] = await inbox.wait()
    assert inbound.message_id == event["data"]["guid"]


async def test_malformed_webhooks_are_answered_and_ignored(fake, running, inbox):
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{running.webhook_port}{WEBHOOK_PATH}"
        params = {"password": fake.password}
        async with session.post(url, params=params, data=b"not json") as resp:
            assert resp.status == 400
        async with session.post(url, params=params, json=["a", "list"]) as resp:
            assert resp.status == 400
        async with session.post(url, params=params, json={"type": "new-message"}) as resp:
            assert resp.status == 200
    fake.dm(ALICE, "still fine")
    [inbound] = await inbox.wait()
    assert inbound.text == "still fine"


async def test_each_send_has_its_own_temp_guid_and_returns_the_message_guid(fake, running):
    guid = await running.send(dm(OWNER), "New pairing request", buttons=(APPROVE,))
    await running.edit(dm(OWNER), guid, "Approved iMessage sender")

    first, second = fake.sent
    assert (first["chatGuid"], first["method"], guid) == (dm(OWNER), "apple-script", first["guid"])
    assert first["tempGuid"].startswith("pairbot-")
    assert first["tempGuid"] != second["tempGuid"]


async def test_the_private_api_is_used_when_the_server_has_it(inbox):
    async with FakeBlueBubbles(private_api=True) as fake:
        fake.existing_chat(ALICE)
        provider = make_provider(fake)
        try:
            await provider.start(inbox)
            await provider.send(dm(ALICE), "hi")
        finally:
            await provider.stop()
    assert provider.send_method == "private-api"
    assert fake.sent[0]["method"] == "private-api"


async def test_a_wrong_password_fails_start_and_is_never_quoted(fake, inbox, caplog):
    caplog.set_level(logging.DEBUG)
    provider = IMessageProvider(
        server_url=fake.base_url,
        password="hunter2-wrong",
        webhook=WebhookConfig(port=0, path=WEBHOOK_PATH),
    )
    with pytest.raises(ConfigError, match="rejected the password") as caught:
        await provider.start(inbox)
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in caplog.text
    assert not provider.running
    await provider.stop()  # nothing to stop, no error


async def test_config_block_builds_the_provider(fake):
    block = IMessageConfig.model_validate(
        {
            "server_url": fake.base_url,
            "password": fake.password,
            "webhook": {"port": 0, "path": "/bb"},
        }
    )
    cls = load_provider_class("imessage")
    provider = cls(**block.provider_kwargs())
    assert isinstance(provider, IMessageProvider)
    assert (provider.name, provider.bare_commands) == ("imessage", False)
    assert provider.webhook_url == "http://127.0.0.1:0/bb"
    with pytest.raises(ConfigError):
        IMessageProvider(server_url="mac.lan:1234", password="x")
    with pytest.raises(ConfigError):
        IMessageProvider(server_url="http://mac.lan?password=x", password="x")
    with pytest.raises(ConfigError):
        IMessageProvider(server_url="http://mac.lan", password="")


@pytest.mark.parametrize("mode", ["error", "refuse"])
async def test_a_send_waits_out_an_outage_and_goes_out_once(fake, running, mode, caplog):
    caplog.set_level(logging.DEBUG)
    await fake.go_down(mode)
    task = asyncio.create_task(running.send(dm(ALICE), "during the outage"))
    await asyncio.sleep(0.4)
    assert fake.sent == []
    assert not task.done()

    await fake.come_back()
    guid = await asyncio.wait_for(task, 5)

    assert [(m["text"], m["guid"]) for m in fake.sent] == [("during the outage", guid)]
    assert fake.password not in caplog.text
    assert any("retrying" in r.getMessage() for r in caplog.records)


async def test_a_lost_answer_is_looked_up_not_sent_again(fake, running):
    """BlueBubbles keeps no tempGuid once a send is answered (``sendCache``): a second try
    would send a second message. The provider finds the first one instead."""
    fake.lose_next_responses(2)

    guid = await running.send(dm(ALICE), "exactly once")

    assert [m["text"] for m in fake.sent] == ["exactly once"]
    temp = fake.sent[0]["tempGuid"]
    assert fake.send_attempts == [(temp, 504)]
    assert guid == fake.sent[0]["guid"]


async def test_imessage_failures_are_retried_a_little_and_refusals_not_at_all(fake, running):
    fake.fail_next_sends(5, status=500)
    with pytest.raises(BlueBubblesError, match="3 attempts"):
        await running.send(dm(ALICE), "doomed")
    assert len(fake.send_attempts) == 3
    fake.fail_next_sends(0)

    with pytest.raises(BlueBubblesError) as caught:
        await running.send(dm(ALICE), "")  # BlueBubbles requires a message
    assert caught.value.status == 400
    assert len(fake.send_attempts) == 4
    assert fake.sent == []


async def test_a_send_gives_up_after_send_retry_for(fake, inbox, caplog):
    caplog.set_level(logging.DEBUG)
    provider = make_provider(fake, send_retry_for=0.3)
    await provider.start(inbox)
    try:
        await fake.go_down("refuse")
        with pytest.raises(BlueBubblesError, match="not sent") as caught:
            await provider.send(dm(ALICE), "lost cause")
        assert fake.password not in str(caught.value)
        assert fake.password not in caplog.text
    finally:
        await provider.stop()
        await fake.come_back()


async def test_start_with_the_server_down_then_work_when_it_returns(fake, inbox, caplog):
    await fake.go_down("refuse")
    provider = make_provider(fake)
    try:
        await provider.start(inbox)
        assert "not reachable" in caplog.text
        fake.webhook_for(provider.webhook_port)
        sending = asyncio.create_task(provider.send(dm(ALICE), "hello"))
        fake.dm(ALICE, "written while the server was down")
        await asyncio.sleep(0.2)
        assert inbox.items == []  # held by BlueBubbles while it is down
        await fake.come_back()
        await sending
        [inbound] = await inbox.wait()
        assert inbound.text == "written while the server was down"
        assert fake.messages_to(dm(ALICE)) == ["hello"]
    finally:
        await provider.stop()


async def test_stop_does_not_wait_past_stop_grace_for_a_stuck_handler(fake, caplog):
    seen: list[str] = []

    async def slow(inbound: Inbound) -> None:
        await asyncio.sleep(0.05 if inbound.text != "stuck" else 60)
        seen.append(inbound.text)

    provider = make_provider(fake, stop_grace=0.3)
    await provider.start(slow)
    fake.webhook_for(provider.webhook_port)
    fake.dm(ALICE, "stuck")
    fake.dm(ALICE, "after the stuck one")
    await fake.wait_delivered()
    started = asyncio.get_running_loop().time()
    await provider.stop()
    assert asyncio.get_running_loop().time() - started < 1.0
    assert seen == []
    assert "1 accepted message(s) not handled" in caplog.text


# -- DM chats as the Mac names them (issue 11, point 4) ----------------------------------------


async def test_the_owners_chat_is_the_one_the_mac_has_not_an_assembled_guid(fake, running):
    """macOS 26 names one-to-one chats ``any;-;<handle>``: the owner's chat is looked up
    through the chat query, and the notice lands in it and is confirmed."""
    chat = await running.dm_chat_id(OWNER)
    guid = await running.send(chat, "New pairing request")

    assert chat == f"any;-;{OWNER}"
    assert fake.messages_to(chat) == ["New pairing request"]
    assert fake.send_attempts == [(fake.sent[0]["tempGuid"], 200)]
    assert guid == fake.sent[0]["guid"]


async def test_an_sms_owners_chat_is_learned_from_their_own_message(inbox):
    async with on_macos_15(inbox) as (fake, provider):
        fake.dm(OWNER, "hi bot", service="SMS")
        await inbox.wait()
        chat = await provider.dm_chat_id(OWNER)
        await provider.send(chat, "Approve Alice?")
    assert chat == f"SMS;-;{OWNER}"
    assert fake.messages_to(f"SMS;-;{OWNER}") == ["Approve Alice?"]


async def test_a_chat_guid_an_older_pairbot_stored_is_sent_to_the_chat_the_mac_has(fake, running):
    """A notice stored with ``iMessage;-;<owner>`` before the Mac moved to macOS 26: the Mac
    has no such chat, so the send goes to the owner's ``any;-;`` chat, and is confirmed."""
    await running.send(f"iMessage;-;{OWNER}", "Approve Alice?")

    assert fake.messages_to(dm(OWNER)) == ["Approve Alice?"]
    assert [status for _, status in fake.send_attempts] == [200]


async def test_a_handle_without_a_chat_on_the_mac_is_not_guessed_at(fake, running):
    chat = await running.dm_chat_id(BOB)

    with pytest.raises(BlueBubblesError, match="must write to the bot's Apple ID first"):
        await running.send(chat, "hello?")
    assert fake.send_attempts == []

    fake.dm(BOB, "hi, it's Bob")  # now the Mac has the chat
    await running.send(chat, "hello Bob")
    assert fake.messages_to(dm(BOB)) == ["hello Bob"]


async def test_the_fake_like_bluebubbles_never_confirms_a_send_to_a_chat_the_mac_lacks(fake):
    """``sendMessageFallback`` gets it out to the handle, in the chat the Mac has; the
    ``MessagePromise`` waits for it in the guid asked for, in vain, and the answer is a 500."""
    fake.confirm_wait = 0.05
    params = {"password": fake.password}
    body = {"chatGuid": f"iMessage;-;{ALICE}", "message": "hi", "tempGuid": "t-1"}
    async with aiohttp.ClientSession() as session:
        url = f"{fake.base_url}/api/v1/message/text"
        async with session.post(url, params=params, json=body) as resp:
            answer = (resp.status, (await resp.json())["message"])
        group = {**body, "chatGuid": "iMessage;+;chat404", "tempGuid": "t-2"}
        async with session.post(url, params=params, json=group) as resp:
            refused = resp.status

    assert answer == (500, "Message Send Error")
    assert fake.messages_to(dm(ALICE)) == ["hi"]  # it went out all the same
    assert refused == 500
    assert len(fake.sent) == 1


# -- sends: never twice (issue 11, point 5) ------------------------------------------------------


def test_a_send_may_take_longer_than_bluebubbles_waits_to_confirm_it():
    block = IMessageConfig.model_validate({"server_url": "http://mac.lan", "password": "x"})
    provider = IMessageProvider(**block.provider_kwargs())
    assert block.request_timeout == 130
    with pytest.raises(ConfigError, match="request_timeout") as caught:
        IMessageProvider(server_url="http://mac.lan", password="x", request_timeout=60)
    assert "more than 120 s" in str(caught.value)
    assert provider.running is False


async def test_a_500_for_a_send_that_went_out_is_not_sent_again(fake, running, caplog):
    """BlueBubbles answers 500 "Message Send Error" when it did not see the message go out in
    time (2 minutes; here shortened), though it did: the provider looks before it resends."""
    caplog.set_level(logging.INFO)
    fake.confirm_wait = 0.1
    fake.leave_unconfirmed(1)

    guid = await running.send(dm(ALICE), "exactly once")

    assert fake.messages_to(dm(ALICE)) == ["exactly once"]
    assert guid == fake.sent[0]["guid"]
    assert "gone out after all" in caplog.text


async def test_a_send_whose_answer_never_came_is_looked_up_not_sent_again(fake, inbox):
    """A request that timed out (a network hiccup) left the send in hand on the server: the
    provider waits until it can tell, and does not send the message twice."""
    fake.confirm_wait = 0.3
    fake.leave_unconfirmed(1)
    provider = make_provider(fake, request_timeout=0.1, confirm_wait=0.05)
    await provider.start(inbox)
    try:
        guid = await provider.send(dm(ALICE), "only one of me")
    finally:
        await provider.stop()
    assert fake.messages_to(dm(ALICE)) == ["only one of me"]
    assert guid == fake.sent[0]["guid"]


async def test_a_500_for_a_send_that_did_not_go_out_is_tried_again(fake, running):
    fake.fail_next_sends(1, status=500)

    await running.send(dm(ALICE), "second time lucky")

    assert fake.messages_to(dm(ALICE)) == ["second time lucky"]
    assert [status for _, status in fake.send_attempts] == [500, 200]


# -- catch-up: what no webhook brought (issue 11, point 6) ----------------------------------------


async def test_messages_written_while_pairbot_was_down_arrive_once_after_a_restart(
    fake, state_dir, inbox
):
    """Two processes, one after the other, on one state dir: the cursor in cursors.json says
    where the first got to, so the second hands on what it missed, and nothing twice."""
    first = make_provider(fake, cursors=JsonFileStore(state_dir))
    await first.start(inbox)
    await connect(fake, first)
    fake.dm(ALICE, "before")
    await inbox.wait()
    await first.stop()
    fake.dm(ALICE, "while down 1")
    fake.dm(BOB, "while down 2")
    await fake.wait_delivered()  # posted once, to nobody: BlueBubbles forgets them

    second = make_provider(fake, cursors=JsonFileStore(state_dir))
    await second.start(inbox)
    try:
        await connect(fake, second)
        fake.dm(ALICE, "after")
        await inbox.wait(4)
        await second.catch_up()  # again: nothing new
        fake.dm(ALICE, "last")
        await inbox.wait(5)
    finally:
        await second.stop()
    assert inbox.texts == ["before", "while down 1", "while down 2", "after", "last"]


async def test_the_first_start_ever_does_not_replay_the_macs_history(fake, inbox):
    fake.webhook_for(1, WEBHOOK_PATH)  # before pairbot: posted where nobody listens
    fake.dm(ALICE, "last year")
    await fake.wait_delivered()
    provider = make_provider(fake)
    await provider.start(inbox)
    try:
        await connect(fake, provider)
        fake.dm(ALICE, "today")
        await inbox.wait()
        assert await provider.catch_up() == 0
    finally:
        await provider.stop()
    assert inbox.texts == ["today"]


async def test_catch_up_and_webhook_racing_hand_a_message_on_once(fake, running, inbox):
    fake.webhook_url = None  # BlueBubbles has not posted it yet
    fake.dm(ALICE, "raced")

    assert await running.catch_up() == 1
    await connect(fake, running)  # now the webhook comes too
    await fake.wait_delivered()
    fake.dm(ALICE, "sentinel")
    await inbox.wait(2)

    assert inbox.texts == ["raced", "sentinel"]
    assert fake.deliveries[0][2] == 200  # answered (a duplicate), not handed on


async def test_a_webhook_that_never_came_is_caught_up_on_a_while_later(fake, inbox):
    provider = make_provider(fake, catch_up_every=0.05)
    await provider.start(inbox)
    try:
        fake.webhook_for(1, WEBHOOK_PATH)  # BlueBubbles posts where nobody listens
        fake.dm(ALICE, "lost in the post")
        [inbound] = await inbox.wait()
    finally:
        await provider.stop()
    assert (inbound.text, inbound.chat_id) == ("lost in the post", dm(ALICE))


# -- textless messages (issue 11, point 13) -------------------------------------------------------


async def test_a_photo_a_voice_note_and_an_empty_text_with_a_file_are_contact_attempts(
    fake, running, inbox
):
    fake.attachment_only(ALICE)
    voice = fake.dm_event(BOB, "")
    voice["data"]["text"] = None
    voice["data"]["attachments"] = [{"guid": "V1", "mimeType": "audio/x-caf"}]
    fake.queue_event("new-message", voice["data"])
    fake.queue_event("new-message", fake.dm_event(MALLORY, "")["data"])  # nothing at all
    fake.dm(ALICE, "sentinel")

    photo, note, sentinel = await inbox.wait(3)

    assert (photo.sender_id, photo.text, photo.media, photo.chat_kind) == (
        ALICE,
        "",
        True,
        ChatKind.DM,
    )
    assert (note.sender_id, note.text, note.media) == (BOB, "", True)
    assert (sentinel.text, sentinel.media) == ("sentinel", False)


# -- the whole app -----------------------------------------------------------------------------


def make_config(fake: FakeBlueBubbles) -> Config:
    block = {"server_url": fake.base_url, "password": fake.password, "webhook": {"port": 0}}
    return app_config("imessage", OWNER, block, pairing={"prune_interval": "0.2s"})


@pytest.fixture
async def app(fake: FakeBlueBubbles, state_dir: Path, fake_clock: FakeClock) -> AsyncIterator[App]:
    fake.existing_chat(OWNER)  # the owner wrote to the bot's Apple ID at set-up
    async with app_running(make_config(fake), state_dir, fake_clock) as running:
        provider = running.providers["imessage"]
        assert isinstance(provider, IMessageProvider)
        await connect(fake, provider)
        yield running


async def texts_to(fake: FakeBlueBubbles, handle: str, count: int) -> list[str]:
    return await texts(lambda: fake.messages_to(dm(handle)), count)


async def pair(fake: FakeBlueBubbles, handle: str) -> str:
    fake.dm(handle, "hello?")
    return code_in((await texts_to(fake, handle, 1))[0])


async def approve(fake: FakeBlueBubbles, app: App, handle: str) -> None:
    code = await pair(fake, handle)
    fake.dm(OWNER, f"/approve {code}")
    await fake.wait_until(lambda: app.pairing.is_allowed("imessage", handle))
    await texts_to(fake, handle, 2)


async def test_app_stranger_gets_a_code_and_their_message_is_not_processed(fake, app):
    fake.dm(ALICE, "please run rm -rf")

    texts = await texts_to(fake, ALICE, 1)

    assert "pairing code" in texts[0]
    assert f"Your iMessage id: {ALICE}" in texts[0]
    assert OWNER not in texts[0]
    code = code_in(texts[0])
    assert app.pairing.pending()[0].code == code
    notice = (await texts_to(fake, OWNER, 1))[0]
    assert f"Sender id: {ALICE}" in notice
    assert f"/approve {code}" in notice
    await asyncio.sleep(0.3)
    assert all("rm -rf" not in m["text"] for m in fake.sent)


async def test_app_owner_approves_by_command_and_the_sender_goes_through(fake, app):
    code = await pair(fake, ALICE)
    fake.dm(OWNER, f"/approve {code[:4].lower()}-{code[4:].lower()}")

    await fake.wait_until(
        lambda: any(
            t.startswith(f"Approved iMessage sender {ALICE}") for t in fake.messages_to(dm(OWNER))
        )
    )
    texts = await texts_to(fake, ALICE, 2)
    assert texts[1] == "You're approved. Send a message to start chatting."
    fake.dm(ALICE, "what's the weather?")
    texts = await texts_to(fake, ALICE, 3)
    assert texts[2] == "what's the weather?"


async def test_app_non_owner_approve_changes_nothing(fake, app):
    code = await pair(fake, ALICE)
    fake.dm(MALLORY, f"/approve {code}")

    mallory = await texts_to(fake, MALLORY, 1)

    assert "pairing code" in mallory[0]
    await asyncio.sleep(0.3)
    assert not app.pairing.is_allowed("imessage", ALICE)
    assert not app.pairing.is_allowed("imessage", MALLORY)
    assert {r.id for r in app.pairing.pending()} == {ALICE, MALLORY}


async def test_app_groups_own_messages_other_events_and_forged_posts_change_nothing(fake, app):
    code = await pair(fake, ALICE)
    fake.group_message(GROUP, MALLORY, "hello group", participants=(MALLORY, OWNER))
    fake.group_message(GROUP, OWNER, f"/approve {code}", participants=(MALLORY, OWNER))
    fake.own_message(dm(OWNER), f"/approve {code}")
    fake.event("updated-message", fake.dm_event(OWNER, f"/approve {code}")["data"])
    fake.event("typing-indicator", {"display": True, "guid": dm(OWNER)})
    forged = fake.dm_event(OWNER, f"/approve {code}")
    assert await fake.post_webhook(forged, password=None) == 401
    assert await fake.post_webhook(forged, password="guess") == 401
    await fake.wait_delivered()
    await asyncio.sleep(0.4)

    assert [r.id for r in app.pairing.pending()] == [ALICE]
    assert not app.pairing.is_allowed("imessage", ALICE)
    assert fake.messages_to(GROUP) == []
    assert all(not t.startswith("Approved") for t in fake.messages_to(dm(OWNER)))


async def test_app_server_dropping_and_coming_back_loses_and_duplicates_nothing(fake, app):
    await approve(fake, app, ALICE)
    before = len(fake.messages_to(dm(ALICE)))

    # 1. The REST API refuses connections; webhooks still flow. Replies wait, in order.
    await fake.go_down("refuse", hold_webhooks=False)
    events = [fake.dm(ALICE, f"m{i}") for i in (1, 2, 3)]
    fake.redeliver(events[1])
    await fake.wait_delivered()
    await asyncio.sleep(0.3)
    assert len(fake.messages_to(dm(ALICE))) == before
    await fake.come_back()
    await texts_to(fake, ALICE, before + 3)

    # 2. The whole server is down: BlueBubbles holds the webhook and replays it twice.
    await fake.wait_delivered()  # the echoes of the bot's own replies
    await fake.go_down("error")
    m4 = fake.dm(ALICE, "m4")
    fake.redeliver(m4)
    await asyncio.sleep(0.3)
    assert fake.pending_events == 2
    await fake.come_back()
    await texts_to(fake, ALICE, before + 4)

    # 3. The answer to a send is lost: the retry reuses the tempGuid.
    fake.lose_next_responses(1)
    fake.dm(ALICE, "m5")
    await texts_to(fake, ALICE, before + 5)

    await fake.wait_delivered()
    await asyncio.sleep(0.5)
    assert fake.messages_to(dm(ALICE))[before:] == ["m1", "m2", "m3", "m4", "m5"]


async def test_app_a_stranger_who_sends_only_a_photo_gets_a_code(fake, app):
    fake.attachment_only(BOB)

    [reply] = await texts_to(fake, BOB, 1)

    assert "pairing code" in reply
    assert [r.id for r in app.pairing.pending()] == [BOB]


async def test_app_keeps_the_catch_up_cursor_in_the_state_dir(fake, app, state_dir):
    fake.dm(ALICE, "hello?")
    await texts_to(fake, ALICE, 1)

    store = JsonFileStore(state_dir)
    await fake.wait_until(lambda: store.cursor("imessage.catch-up") is not None)
    assert (state_dir / "cursors.json").stat().st_mode & 0o777 == 0o600


async def test_demo_platform_plays_the_whole_demo():
    from bot.cli.demo import run_demo

    root = logging.getLogger()
    level = root.level
    out = io.StringIO()
    try:
        result = await run_demo(
            Console(file=out, width=120), provider="imessage", ttl_seconds=1, with_node=False
        )
    finally:
        root.setLevel(level)
    assert result == 0, out.getvalue()
    assert "Demo complete on imessage" in out.getvalue()
    assert IMessageDemo().user_id(1) != IMessageDemo.owner_id
