"""WhatsAppProvider against the loopback Cloud API fake: what is WhatsApp's own (what every
provider does is in tests/providers/test_contract.py), then inside the whole app."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.core.clock import Clock, FakeClock
from bot.core.config import Config
from bot.core.errors import ConfigError, RecipientUnreachable
from bot.core.models import ChatKind
from bot.core.platforms import WhatsAppConfig
from bot.core.schema import WebhookConfig
from bot.runtime.app import App
from providers.whatsapp.fake import FakeWhatsAppServer, first_message, sign
from providers.whatsapp.provider import WhatsAppApiError, WhatsAppProvider
from tests.e2e import support
from tests.e2e.support import app_config, code_in, texts
from tests.helpers import APPROVE, REJECT, Inbox

pytestmark = pytest.mark.e2e

REFUSALS = ("status", "answer")
"""How Meta refuses a send outside the 24-hour window: a failed status webhook after taking
it (the Cloud API's usual way), or the send's own answer."""
DAY_LATER = timedelta(hours=25)

OWNER, ALICE, MALLORY, BOB = "15550000001", "15550004242", "15550006666", "15550005151"
GROUP = "120363025246125486"


def make_fake(clock: Clock) -> FakeWhatsAppServer:
    """The fake, where the owner and Alice wrote lately: free text reaches them (strangers
    write before they are answered)."""
    made = FakeWhatsAppServer(clock=clock)
    made.wrote(OWNER)
    made.wrote(ALICE)
    return made


def make_provider(fake: FakeWhatsAppServer, **overrides: Any) -> WhatsAppProvider:
    kwargs: dict[str, Any] = {
        "access_token": fake.access_token,
        "app_secret": fake.app_secret,
        "verify_token": fake.verify_token,
        "phone_number_id": fake.phone_number_id,
        "api_base_url": fake.base_url,
        "webhook": WebhookConfig(port=0, path="/whatsapp/webhook"),
        "retry_base_delay": 0.05,
    }
    kwargs.update(overrides)
    return WhatsAppProvider(**kwargs)


async def connect(fake: FakeWhatsAppServer, provider: WhatsAppProvider) -> None:
    fake.webhook_url = provider.webhook_url


async def delivered(fake: FakeWhatsAppServer) -> None:
    """Wait until the fake's queued webhooks were all taken, then let the worker run."""
    await fake.wait_delivered()
    await asyncio.sleep(0.05)


# --- the provider alone ----------------------------------------------------------------------


async def test_verification_get_echoes_the_challenge_only_for_the_right_token(
    fake, running
) -> None:
    assert running.webhook_port != 0  # port 0: the one bound is read back
    assert await fake.verify(challenge="8675309") == (200, "8675309")
    assert (await fake.verify(token="guess"))[0] == 403
    assert (await fake.verify(mode="unsubscribe"))[0] == 403
    assert (await fake.verify(token=""))[0] == 403


async def test_unsigned_and_forged_posts_get_401_and_change_nothing(fake, running, inbox) -> None:
    payload = fake._payload(
        [fake._contact(ALICE, "Alice")],
        messages=[fake._message(ALICE, "text", {"text": {"body": "x"}})],
    )
    raw = json.dumps(payload).encode()
    other = json.dumps({**payload, "object": "whatsapp_business_account "}).encode()

    assert await fake.post_webhook(payload, signature=None) == 401
    assert await fake.post_webhook(payload, secret="not-the-app-secret") == 401
    assert await fake.post_webhook(payload, signature="sha256=" + "0" * 64) == 401
    assert await fake.post_webhook(payload, signature=sign(fake.app_secret, raw)[7:]) == 401
    assert await fake.post_webhook(raw, signature=sign(fake.app_secret, other)) == 401
    assert await fake.post_webhook(payload, signature="sha256=é") == 401
    await asyncio.sleep(0.05)
    assert inbox.items == []

    # A forged copy must not mark the genuine message as seen.
    assert await fake.post_webhook(payload) == 200
    [inbound] = await inbox.wait()
    assert inbound.text == "x"


async def test_group_message_is_group_kind(fake, running, inbox) -> None:
    fake.group_message(GROUP, ALICE, "hi all", name="Alice")

    [inbound] = await inbox.wait()

    assert (inbound.chat_kind, inbound.chat_id, inbound.sender_id) == (
        ChatKind.GROUP,
        GROUP,
        ALICE,
    )


async def test_a_sender_meta_shows_no_number_of_is_their_bsuid_and_is_answered_there(
    fake, running, inbox
) -> None:
    """Issue 11, item 8: a user who adopted a username may come with no phone number at all,
    only their BSUID. Such a message used to be dropped (no ``from``); a reply must go in
    ``recipient``, since ``to`` takes phone numbers only."""
    bsuid = fake.hide_number(ALICE, "alice.w")
    payload = fake.dm(ALICE, "hi", name="Alice")
    assert "from" not in payload["entry"][0]["changes"][0]["value"]["messages"][0]

    [inbound] = await inbox.wait()
    await running.send(inbound.chat_id, "hello there")

    assert (inbound.sender_id, inbound.chat_id, inbound.chat_kind) == (bsuid, bsuid, ChatKind.DM)
    assert (inbound.sender_name, inbound.meta) == (
        "Alice",
        {"name": "Alice", "username": "alice.w"},
    )
    [sent] = fake.sent
    assert (sent["to"], sent["text"]) == (bsuid, "hello there")
    assert sent["payload"]["recipient"] == bsuid
    assert "to" not in sent["payload"]


async def test_the_phone_number_wins_when_a_message_carries_both_ids(fake, running, inbox) -> None:
    """One id per person: while Meta sends the phone number it is the sender id (and the
    chat), so ids allowed before BSUIDs existed keep working; the BSUID beside it is unused."""
    payload = fake.dm(ALICE, "hi", name="Alice")
    message = payload["entry"][0]["changes"][0]["value"]["messages"][0]
    assert (message["from"], message["from_user_id"]) == (ALICE, fake.bsuid(ALICE))

    [inbound] = await inbox.wait()
    await running.send(inbound.chat_id, "hello")

    assert (inbound.sender_id, inbound.chat_id, inbound.meta) == (ALICE, ALICE, {"name": "Alice"})
    assert fake.sent[0]["payload"]["to"] == ALICE
    assert "recipient" not in fake.sent[0]["payload"]


def test_the_config_takes_bsuids_as_owners_and_allowed_senders() -> None:
    bsuid = "US.13491208655302741918"
    base: dict[str, Any] = {
        "access_token": "t",
        "app_secret": "s",
        "verify_token": "v",
        "phone_number_id": "1",
    }
    config = Config.model_validate(
        {
            "owners": [{"provider": "whatsapp", "user_id": bsuid}],
            "providers": {"whatsapp": {**base, "allow_from": [ALICE, "BR.1502576394655843"]}},
        }
    )
    assert config.owners[0].user_id == bsuid
    assert config.providers.whatsapp is not None
    assert config.providers.whatsapp.allow_from == [ALICE, "BR.1502576394655843"]
    # A phone number written with + is its wa_id (the id rule's phone form); a BSUID is not one.
    written = WhatsAppConfig.model_validate({**base, "allow_from": ["+1 555 000 4242", bsuid]})
    assert written.allow_from == ["15550004242", bsuid]
    for wrong in ("US.ENT.11815799212886844830", "us.1349", "@alice.w", "+1555abc"):
        with pytest.raises(ValueError, match=r"WhatsApp id|not a @username"):
            Config.model_validate({"owners": [{"provider": "whatsapp", "user_id": wrong}]})
        with pytest.raises(ValueError, match="WhatsApp id"):
            WhatsAppConfig.model_validate({**base, "allow_from": [wrong]})


async def test_every_media_message_is_one_inbound_with_its_caption(fake, running, inbox) -> None:
    """Issue 11, item 13: an image, video, document, voice note or sticker is someone writing
    to the bot, caption or not; it used to be dropped, so a stranger who sent one got no code."""
    fake.media(ALICE, "image", caption="look at this", name="Alice")
    fake.media(ALICE, "document", name="Alice")
    fake.media(ALICE, "video", caption="and this")
    fake.media(ALICE, "audio")
    fake.media(ALICE, "sticker")

    inbounds = await inbox.wait(5)

    assert [(i.text, i.media, i.is_button, i.sender_id) for i in inbounds] == [
        ("look at this", True, False, ALICE),
        ("", True, False, ALICE),
        ("and this", True, False, ALICE),
        ("", True, False, ALICE),
        ("", True, False, ALICE),
    ]
    assert inbounds[0].chat_kind is ChatKind.DM
    assert inbounds[0].sender_name == "Alice"


async def test_statuses_system_messages_and_other_numbers_produce_nothing(
    fake, running, inbox
) -> None:
    sent_id = await running.send(ALICE, "hi")
    fake.status(sent_id, "delivered")
    fake.status(sent_id, "read")
    fake.number_changed(ALICE, "15550009999", name="Alice")
    other_number = fake.dm(BOB, "to another number of the account")
    other_number["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = "999"
    fake.dm(ALICE, "sentinel")

    await inbox.wait()
    await delivered(fake)

    assert [i.text for i in inbox.items] == ["sentinel"]


async def test_send_is_plain_text_without_link_previews(fake, running) -> None:
    text = "*not bold* <b>x</b> https://example.com"

    message_id = await running.send(ALICE, text)

    [sent] = fake.sent
    assert sent["message_id"] == message_id
    assert sent["payload"]["text"] == {"body": text, "preview_url": False}
    assert (sent["to"], sent["type"], sent["context"]) == (ALICE, "text", None)


async def test_reply_buttons_carry_their_commands_and_an_edit_is_a_reply(
    fake, running, inbox
) -> None:
    notice_id = await running.send(OWNER, "Approve Alice?", buttons=[APPROVE, REJECT])
    [sent] = fake.sent
    assert (sent["type"], sent["text"]) == ("interactive", "Approve Alice?")
    assert sent["buttons"] == [
        {"id": "/approve ABCD2345", "title": "Approve"},
        {"id": "/reject ABCD2345", "title": "Reject"},
    ]

    fake.press_button(OWNER, notice_id, "/approve ABCD2345", name="Owner")
    [inbound] = await inbox.wait()
    assert (inbound.sender_name, inbound.meta) == ("Owner", {"name": "Owner"})

    await running.edit(OWNER, notice_id, "Approved.")
    assert (fake.sent[-1]["text"], fake.sent[-1]["context"]) == ("Approved.", notice_id)


async def test_a_notice_too_long_for_buttons_goes_first_as_text(fake, running) -> None:
    notice = "New pairing request\n" + "x" * 1500
    await running.send(OWNER, notice, buttons=[APPROVE, REJECT])
    assert [(m["type"], m["text"]) for m in fake.sent] == [
        ("text", notice),
        ("interactive", "New pairing request"),
    ]


async def test_a_webhook_whose_200_was_lost_is_handled_once(fake, running, inbox) -> None:
    fake.lose_next_acks(1)
    fake.dm(ALICE, "twice")  # its 200 is "lost": delivered again
    await delivered(fake)

    assert [i.text for i in inbox.items] == ["twice"]
    assert sum(d["status"] == 200 for d in fake.deliveries) == 2


async def test_the_ids_of_handled_messages_outlive_a_restart(fake, running, inbox) -> None:
    payload = fake.dm(ALICE, "before")
    await inbox.wait()
    await running.stop()
    await running.start(inbox)
    fake.webhook_url = running.webhook_url

    fake.deliver(payload)  # re-delivered after the restart: still once
    fake.dm(ALICE, "after")
    await inbox.wait(2)
    await delivered(fake)

    assert [i.text for i in inbox.items] == ["before", "after"]


async def test_graph_5xx_is_retried_and_sent_once(fake, running) -> None:
    fake.fail_next_sends(2, status=503)
    fake.fail_next_sends(1, status=400, code=130429)

    message_id = await running.send(ALICE, "hello")

    assert [m["message_id"] for m in fake.sent] == [message_id]
    assert len([c for c in fake.calls if c[1].endswith("/messages")]) == 4


@pytest.mark.parametrize("refusal", REFUSALS)
async def test_a_send_outside_the_24_hour_window_is_recipient_unreachable(
    fake, running, inbox, fake_clock, refusal
) -> None:
    """Issue 11, item 9: 131047. Meta usually takes the send and posts a failed status; the
    provider used to return the wamid as if delivered (or, refused in the answer, raise an
    error nobody could tell from any other)."""
    fake.window_refusal = refusal
    fake_clock.advance(DAY_LATER)  # Alice last wrote more than 24 hours ago

    with pytest.raises(RecipientUnreachable) as caught:
        await running.send(ALICE, "are you there?")

    assert isinstance(caught.value, WhatsAppApiError)
    assert caught.value.code == 131047
    assert "until they write" in str(caught.value)
    assert fake.sent == []
    assert [m["text"] for m in fake.refused] == (["are you there?"] if refusal == "status" else [])

    fake.dm(ALICE, "back", name="Alice")  # her window opens again
    await inbox.wait()
    await running.send(ALICE, "welcome back")
    assert fake.texts_to(ALICE) == ["welcome back"]


async def test_a_reply_to_someone_who_just_wrote_waits_for_no_status(fake, inbox) -> None:
    """Only a send to someone not seen writing lately waits for its verdict: replies to a
    sender who just wrote go out at the pace they always did."""
    fake.send_statuses = False  # a verdict would never come: a wait would hang the send
    provider = make_provider(fake, status_wait=30)
    await provider.start(inbox)
    try:
        await connect(fake, provider)
        fake.dm(BOB, "hi", name="Bob")
        [inbound] = await inbox.wait()

        await asyncio.wait_for(provider.send(inbound.chat_id, "hello Bob"), 5)

        assert fake.texts_to(BOB) == ["hello Bob"]
    finally:
        await provider.stop()


async def test_a_failed_status_is_logged_with_what_it_means(fake, running, caplog) -> None:
    sent_id = await running.send(ALICE, "hi")

    fake.status(sent_id, code=131026)
    await delivered(fake)

    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert line == (
        f"whatsapp: message {sent_id} was not delivered (Graph error code 131026: the "
        "recipient cannot receive this message (not on WhatsApp, or an old client))"
    )


async def test_the_spam_rate_limit_is_not_retried_and_is_logged(fake, running, caplog) -> None:
    """131048 "Spam rate limit hit" is no passing throttle: Meta restricts the number because
    too many of its messages were blocked or reported, and each retry is one more message
    held against it (issue 11, item 10). It used to be retried until a try went through."""
    fake.fail_next_sends(1, status=400, code=131048)

    with pytest.raises(WhatsAppApiError) as caught:
        await running.send(ALICE, "hello")

    assert caught.value.code == 131048
    assert "spam rate limit" in str(caught.value)
    assert fake.sent == []
    assert len([c for c in fake.calls if c[1].endswith("/messages")]) == 1
    [line] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "spam rate limit (131048)" in line
    assert "hello" not in line


async def test_graph_down_then_back_loses_and_duplicates_nothing(fake, running) -> None:
    await fake.go_down()
    sending = asyncio.create_task(running.send(ALICE, "through the outage"))
    await asyncio.sleep(0.3)
    assert not sending.done()
    await fake.come_back()

    message_id = await asyncio.wait_for(sending, 5)

    assert fake.texts_to(ALICE) == ["through the outage"]
    assert fake.sent[0]["message_id"] == message_id


async def test_a_lost_answer_is_not_resent_when_a_status_proves_delivery(
    fake, running, inbox
) -> None:
    fake.drop_next_sends(1, after_taking=True)

    message_id = await running.send(ALICE, "exactly once")

    await delivered(fake)
    assert fake.texts_to(ALICE) == ["exactly once"]
    assert fake.sent[0]["message_id"] == message_id
    assert inbox.items == []  # the status webhook made no inbound


async def test_a_cut_before_the_message_is_taken_is_retried(fake, running) -> None:
    fake.drop_next_sends(2)

    await running.send(ALICE, "after two cuts")

    assert fake.texts_to(ALICE) == ["after two cuts"]


async def test_refusals_are_not_retried_and_outages_give_up(fake, running) -> None:
    with pytest.raises(WhatsAppApiError, match="HTTP 400"):
        await running.send("not-a-number", "x")
    assert len(fake.calls) == 2  # the start-up check and the one refused send

    await fake.go_down()
    impatient = make_provider(fake, send_attempts=2)
    await impatient.start(Inbox())
    try:
        with pytest.raises(WhatsAppApiError, match="failed 2 times"):
            await impatient.send(ALICE, "x")
    finally:
        await impatient.stop()


async def test_start_checks_the_token_and_phone_number(fake) -> None:
    for overrides, field in (
        ({"access_token": "wrong"}, "access_token"),
        ({"phone_number_id": "123"}, "phone_number_id"),
    ):
        bad = make_provider(fake, **overrides)
        with pytest.raises(ConfigError) as caught:
            await bad.start(Inbox())
        assert caught.value.field == field
        assert "wrong" not in str(caught.value)
        await bad.stop()
    for empty in ("access_token", "app_secret", "verify_token", "phone_number_id"):
        with pytest.raises(ConfigError):
            make_provider(fake, **{empty: " "})


async def test_start_without_graph_still_serves_the_webhook(fake, inbox) -> None:
    await fake.go_down()
    provider = make_provider(fake)
    await provider.start(inbox)
    try:
        fake.webhook_url = provider.webhook_url
        fake.dm(ALICE, "hi")
        assert [i.text for i in await inbox.wait()] == ["hi"]
    finally:
        await provider.stop()


async def test_retries_and_refused_signatures_log_no_secret_or_text(
    fake, running, inbox, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.fail_next_sends(1)
    await running.send(ALICE, "secret words")
    await fake.post_webhook(fake._payload(None, messages=[]), secret="forged")
    fake.dm(ALICE, "private words")
    await inbox.wait()
    text = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (
        fake.access_token,
        fake.app_secret,
        fake.verify_token,
        "secret words",
        "private words",
    ):
        assert secret not in text
    assert "retry 1" in text
    assert "signature refused" in text


def test_the_config_block_gives_the_webhook_its_defaults() -> None:
    block = WhatsAppConfig.model_validate(
        {"access_token": "t", "app_secret": "s", "verify_token": "v", "phone_number_id": "1"}
    )
    made = WhatsAppProvider(**block.provider_kwargs())
    assert (made.name, made.webhook_port, made.webhook_path) == (
        "whatsapp",
        8081,
        "/whatsapp/webhook",
    )


# --- the whole app ---------------------------------------------------------------------------


def make_config(fake: FakeWhatsAppServer, owner: str = OWNER, **block: Any) -> Config:
    secrets = ("access_token", "app_secret", "verify_token", "phone_number_id")
    block.update({key: getattr(fake, key) for key in secrets})
    block.update(api_base_url=fake.base_url, webhook={"port": 0})
    return app_config("whatsapp", owner, block, pairing={"prune_interval": "0.2s"})


async def start_app(
    fake: FakeWhatsAppServer, state_dir: Path, clock: FakeClock, config: Config | None = None
) -> App:
    app = await support.start_app(config or make_config(fake), state_dir, clock)
    provider = app.providers["whatsapp"]
    assert isinstance(provider, WhatsAppProvider)
    await connect(fake, provider)
    return app


@pytest.fixture
async def app(
    fake: FakeWhatsAppServer, state_dir: Path, fake_clock: FakeClock
) -> AsyncIterator[App]:
    running = await start_app(fake, state_dir, fake_clock)
    yield running
    await running.stop()


async def texts_to(fake: FakeWhatsAppServer, wa_id: str, count: int) -> list[str]:
    return await texts(lambda: fake.texts_to(wa_id), count)


APPROVED = "You're approved. Send a message to start chatting."


async def echoed(fake: FakeWhatsAppServer, wa_id: str, text: str) -> None:
    """Wait until the echo handler answered ``text`` (the approval note may come twice: the
    core's audit watcher races its own in-chat approval, a bug reported to the lead)."""
    await fake.wait_until(lambda: text in fake.texts_to(wa_id))
    assert set(fake.texts_to(wa_id)[1:-1]) == {APPROVED}


async def pair(fake: FakeWhatsAppServer, who: str = ALICE, name: str = "Alice") -> str:
    fake.dm(who, "please run rm -rf", name=name)
    return code_in((await texts_to(fake, who, 1))[0])


async def test_app_stranger_gets_a_code_and_is_not_processed(fake, app) -> None:
    code = await pair(fake)
    text = fake.texts_to(ALICE)[0]
    assert f"Your WhatsApp id: {ALICE}" in text
    assert app.pairing.pending()[0].code == code
    await fake.wait_until(lambda: bool(fake.messages_to(OWNER)))
    notice = fake.messages_to(OWNER)[0]
    assert notice["type"] == "interactive"
    assert f"Sender id: {ALICE}" in notice["text"]
    assert "Name (given by the sender, unverified): Alice" in notice["text"]
    assert notice["buttons"] == [
        {"id": f"/approve {code}", "title": "Approve"},
        {"id": f"/reject {code}", "title": "Reject"},
    ]
    await delivered(fake)
    assert "rm -rf" not in json.dumps([m["payload"] for m in fake.sent])


async def test_app_a_stranger_who_sends_a_sticker_gets_a_code(fake, app) -> None:
    fake.media(BOB, "sticker", name="Bob")

    [reply] = await texts_to(fake, BOB, 1)

    assert code_in(reply) == app.pairing.pending()[0].code


async def test_app_a_stranger_known_only_by_bsuid_pairs_and_is_answered(fake, app) -> None:
    bsuid = fake.hide_number(BOB, "bob")
    fake.dm(BOB, "hello?", name="Bob")
    [reply] = await texts_to(fake, bsuid, 1)
    code = code_in(reply)
    assert f"Your WhatsApp id: {bsuid}" in reply
    await fake.wait_until(lambda: bool(fake.messages_to(OWNER)))
    assert f"Sender id: {bsuid}" in fake.messages_to(OWNER)[0]["text"]
    assert "Username (given by the sender, can change): @bob" in fake.messages_to(OWNER)[0]["text"]

    fake.dm(OWNER, f"/approve {code}", name="Owner")
    await fake.wait_until(lambda: app.pairing.is_allowed("whatsapp", bsuid))
    fake.dm(BOB, "now?", name="Bob")
    await echoed(fake, bsuid, "now?")
    assert all(m["payload"]["recipient"] == bsuid for m in fake.messages_to(bsuid))


async def test_app_an_owner_known_by_bsuid_runs_commands(fake, state_dir, fake_clock) -> None:
    owner = fake.hide_number(OWNER, "the.owner")
    app = await start_app(fake, state_dir, fake_clock, make_config(fake, owner=owner))
    try:
        fake.dm(OWNER, "/pending", name="Owner")
        assert await texts_to(fake, owner, 1) == ["Nothing is pending."]
    finally:
        await app.stop()


async def test_app_a_phone_number_allowed_before_bsuids_keeps_working(
    fake, state_dir, fake_clock
) -> None:
    """The allowlist entry is a phone number; messages now carry a BSUID beside it."""
    config = make_config(fake, allow_from=[ALICE])
    app = await start_app(fake, state_dir, fake_clock, config)
    try:
        payload = fake.dm(ALICE, "still me", name="Alice")
        assert "from_user_id" in first_message(payload)
        assert await texts_to(fake, ALICE, 1) == ["still me"]  # echoed: no code
        assert app.pairing.pending() == []
    finally:
        await app.stop()


@pytest.mark.parametrize("refusal", REFUSALS)
async def test_app_an_owner_out_of_the_window_is_told_what_they_missed_when_they_write(
    fake, app, fake_clock, caplog, refusal
) -> None:
    """Issue 11, item 9: notices to an owner who has not written for 24 hours fail with
    131047. They used to vanish (one warning each, or nothing at all when Meta took the send);
    now one log line per burst, and the owner is told what they missed when they write."""
    fake.window_refusal = refusal
    fake_clock.advance(DAY_LATER)  # the owner last wrote more than 24 hours ago
    caplog.set_level(logging.WARNING, logger="bot.runtime")
    for who, name in ((BOB, "Bob"), (MALLORY, "Mallory")):
        fake.dm(who, "hello?", name=name)
        await texts_to(fake, who, 1)  # strangers just wrote: their codes reach them
    await fake.wait_until(lambda: len(app.pairing.pending()) == 2)
    await delivered(fake)

    assert fake.messages_to(OWNER) == []
    await fake.wait_until(
        lambda: any("cannot be written to" in r.getMessage() for r in caplog.records)
    )
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("bot.runtime")]
    assert len([line for line in lines if "cannot be written to" in line]) == 1
    assert not any("could not reach owner" in line for line in lines)

    fake.dm(OWNER, "/pending", name="Owner")
    told, pending = await texts_to(fake, OWNER, 2)

    assert told == (
        "While WhatsApp would not let pairbot write to you, these did not reach you: 2 "
        "pairing requests (WhatsApp). Send /pending to see what still waits. WhatsApp lets a "
        "bot write only to people who wrote to it lately: writing here now and then keeps "
        "notices coming."
    )
    assert BOB in pending
    assert MALLORY in pending
    fake.dm(OWNER, "/pending", name="Owner")
    await texts_to(fake, OWNER, 3)
    assert "did not reach you" not in fake.texts_to(OWNER)[2]  # told once


async def test_app_owner_approves_by_command(fake, app) -> None:
    code = await pair(fake)
    fake.dm(OWNER, f"/approve {code[:4].lower()}-{code[4:].lower()}", name="Owner")
    await fake.wait_until(lambda: any(t.startswith("Approved") for t in fake.texts_to(OWNER)))
    assert (await texts_to(fake, ALICE, 2))[1] == APPROVED
    fake.dm(ALICE, "what's the weather?")
    await echoed(fake, ALICE, "what's the weather?")


async def test_app_owner_approves_by_button_and_a_second_press_changes_nothing(fake, app) -> None:
    code = await pair(fake)
    await fake.wait_until(lambda: bool(fake.messages_to(OWNER)))
    notice = fake.messages_to(OWNER)[0]
    fake.press_button(MALLORY, notice["message_id"], f"/approve {code}")
    await delivered(fake)
    assert not app.pairing.is_allowed("whatsapp", ALICE)

    fake.press_button(OWNER, notice["message_id"], f"/approve {code}", name="Owner")
    await fake.wait_until(lambda: len(fake.messages_to(OWNER)) >= 2)
    outcome = fake.messages_to(OWNER)[1]
    assert outcome["text"].startswith(f"Approved WhatsApp sender {ALICE}")
    assert outcome["context"] == notice["message_id"]  # "edit" = a reply to the notice
    assert app.pairing.is_allowed("whatsapp", ALICE)
    assert (await texts_to(fake, ALICE, 2))[1] == APPROVED
    fake.dm(ALICE, "hello at last")
    await echoed(fake, ALICE, "hello at last")

    fake.press_button(OWNER, notice["message_id"], f"/approve {code}")
    await fake.wait_until(lambda: len(fake.messages_to(OWNER)) >= 3)
    assert (
        fake.messages_to(OWNER)[2]["text"] == "This request was already handled; nothing changed."
    )


async def test_app_non_owner_group_forged_and_status_traffic_change_nothing(fake, app) -> None:
    code = await pair(fake)
    fake.dm(MALLORY, f"/approve {code}", name="Mallory")
    assert "pairing code" in (await texts_to(fake, MALLORY, 1))[0]
    fake.group_message(GROUP, OWNER, f"/approve {code}")
    fake.group_message(GROUP, MALLORY, "hello group")
    fake.own_message(f"/approve {code}")
    for message in list(fake.sent):
        fake.status(message["message_id"], "read")
    forged = fake._payload(
        [fake._contact(OWNER, "Owner")],
        messages=[fake._message(OWNER, "text", {"text": {"body": f"/approve {code}"}})],
    )
    assert await fake.post_webhook(forged, secret="guessed") == 401
    assert await fake.post_webhook(forged, signature=None) == 401
    await delivered(fake)
    await asyncio.sleep(0.2)
    assert not app.pairing.is_allowed("whatsapp", ALICE)
    assert not app.pairing.is_allowed("whatsapp", MALLORY)
    assert {r.id for r in app.pairing.pending()} == {ALICE, MALLORY}
    assert fake.messages_to(GROUP) == []
    assert not any(t.startswith("Approved") for t in fake.texts_to(OWNER))


async def test_app_graph_outage_loses_and_duplicates_nothing(fake, app) -> None:
    await fake.go_down()
    fake.dm(ALICE, "hi during the outage", name="Alice")
    await fake.wait_delivered()
    await asyncio.sleep(0.3)
    await fake.come_back()
    await texts_to(fake, ALICE, 1)
    await fake.wait_until(lambda: bool(fake.messages_to(OWNER)), timeout=10)
    fake.fail_next_sends(2, status=500)
    fake.dm(BOB, "hi during the errors", name="Bob")
    await texts_to(fake, BOB, 1)
    await fake.wait_until(lambda: len(fake.messages_to(OWNER)) >= 2, timeout=10)
    await delivered(fake)
    await asyncio.sleep(0.3)
    assert len(fake.texts_to(ALICE)) == 1
    assert len(fake.texts_to(BOB)) == 1
    assert [m["text"].splitlines()[0] for m in fake.messages_to(OWNER)] == [
        "New pairing request"
    ] * 2


async def test_app_restart_takes_the_webhook_redelivered_after_a_failed_delivery_once(
    fake, state_dir, fake_clock
) -> None:
    app = await start_app(fake, state_dir, fake_clock)
    try:
        code = await pair(fake)
        fake.dm(OWNER, f"/approve {code}")
        await fake.wait_until(lambda: app.pairing.is_allowed("whatsapp", ALICE))
        await texts_to(fake, ALICE, 2)
    finally:
        await app.stop()
    fake.dm(ALICE, "sent while pairbot was down")
    await fake.wait_until(lambda: any(d["status"] is None for d in fake.deliveries))
    again = await start_app(fake, state_dir, fake_clock)
    try:
        fake.lose_next_acks(1)
        await echoed(fake, ALICE, "sent while pairbot was down")
        await delivered(fake)
        await asyncio.sleep(0.2)
        assert fake.texts_to(ALICE).count("sent while pairbot was down") == 1
    finally:
        await again.stop()
