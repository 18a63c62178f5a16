"""SlackProvider on real slack-bolt / slack-sdk against the loopback Slack fake: what is
Slack's own (Socket Mode and HTTP; what every provider does is in
tests/providers/test_contract.py), then the whole app."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.clock import Clock, FakeClock, SystemClock
from bot.core.config import Config
from bot.core.errors import ConfigError
from bot.core.models import Button, ChatKind, Inbound
from bot.core.schema import WebhookConfig
from bot.runtime.app import App
from providers.slack.blocks import blocks
from providers.slack.fake import FakeSlackServer
from providers.slack.provider import SlackProvider
from tests.e2e.support import app_config, app_running, code_in, settle, texts
from tests.helpers import APPROVE, REJECT, Inbox

pytestmark = pytest.mark.e2e

OWNER, ALICE, MALLORY, BOB, EVE = "U0OWNER", "U0ALICE", "U0MALLORY", "U0BOB", "U0EVE"


def all_acked(fake: FakeSlackServer) -> bool:
    return {e["envelope_id"] for e in fake.envelopes} <= {a["envelope_id"] for a in fake.acks}


def make_fake(_clock: Clock) -> FakeSlackServer:
    fake = FakeSlackServer()  # on the real clock: a frozen one repeats a press's action_ts
    fake.add_user(OWNER, name="The Owner")
    fake.add_user(ALICE, name="Alice Liddell", display_name="alice")
    fake.add_user(MALLORY, name="Mallory")
    fake.add_user(BOB, name="Bob")
    return fake


def make_provider(fake: FakeSlackServer) -> SlackProvider:
    return SlackProvider(
        bot_token=fake.bot_token,
        app_token=fake.app_token,
        api_base_url=fake.api_base_url,
        ping_interval=1,
    )


async def connect(fake: FakeSlackServer, _provider: SlackProvider) -> None:
    await fake.wait_connected()


@pytest.fixture
async def http_provider(fake: FakeSlackServer, inbox: Inbox) -> AsyncIterator[SlackProvider]:
    made = SlackProvider(
        bot_token=fake.bot_token,
        signing_secret=fake.signing_secret,
        mode="http",
        api_base_url=fake.api_base_url,
        webhook=WebhookConfig(port=0, path="/slack/events"),
    )
    await made.start(inbox)
    fake.events_url = made.webhook_url
    yield made
    await made.stop()


# -- the provider alone, Socket Mode ---------------------------------------------------------


async def test_a_dm_carries_the_profile_and_is_acked(
    fake: FakeSlackServer, running: SlackProvider, inbox: Inbox
) -> None:
    body = fake.dm(ALICE, "hello <b> & all")

    [inbound] = await inbox.wait()

    assert (inbound.sender_name, inbound.meta) == (
        "Alice Liddell",
        {"name": "Alice Liddell", "username": "alice"},
    )
    assert inbound.text == "hello <b> & all"
    assert body["event"]["text"] == "hello &lt;b&gt; &amp; all"  # as Slack sends it
    await fake.wait_until(lambda: all_acked(fake))


@pytest.mark.parametrize(
    ("kind", "channel", "expected"),
    [
        ("mpim", "G0MPIM", ChatKind.GROUP),
        ("group", "C0PRIVATE", ChatKind.GROUP),
        ("channel", "C0GENERAL", ChatKind.CHANNEL),
    ],
)
async def test_channel_messages_arrive_as_group_or_channel(
    fake: FakeSlackServer,
    running: SlackProvider,
    inbox: Inbox,
    kind: str,
    channel: str,
    expected: ChatKind,
) -> None:
    fake.channel_message(channel, ALICE, "hi all", kind=kind)

    [inbound] = await inbox.wait()

    assert (inbound.chat_kind, inbound.chat_id, inbound.sender_id) == (expected, channel, ALICE)


async def test_other_bots_edits_deletions_and_other_events_are_ignored_and_acked(
    fake: FakeSlackServer, running: SlackProvider, inbox: Inbox
) -> None:
    im = {"channel": "D0ALICE", "channel_type": "im", "team": "T0FAKE"}
    fake.event(
        {
            **im,
            "type": "message",
            "subtype": "bot_message",
            "bot_id": "B0OTHER",
            "text": "/approve ABCD2345",
            "ts": "1.000001",
        }
    )
    fake.event(
        {
            **im,
            "type": "message",
            "bot_id": "B0OTHER",
            "user": "U0OTHERBOT",
            "text": "approve ABCD2345",
            "ts": "1.000002",
        }
    )
    fake.event(
        {
            **im,
            "type": "message",
            "subtype": "message_changed",
            "hidden": True,
            "message": {
                "type": "message",
                "user": ALICE,
                "text": "approve ABCD2345",
                "ts": "1.000004",
            },
            "ts": "1.000005",
        }
    )
    fake.event(
        {
            **im,
            "type": "message",
            "subtype": "message_deleted",
            "hidden": True,
            "deleted_ts": "1.000004",
            "ts": "1.000006",
        }
    )
    fake.event({**im, "type": "message", "user": ALICE, "text": "", "ts": "1.000008"})
    fake.event(
        {
            "type": "reaction_added",
            "user": ALICE,
            "reaction": "thumbsup",
            "item": {"type": "message", "channel": "D0ALICE", "ts": "1.000001"},
            "event_ts": "1.000009",
        }
    )
    fake.event({"type": "user_typing", "channel": "D0ALICE", "user": ALICE})
    fake.dm(ALICE, "sentinel")

    await inbox.wait()

    assert [i.text for i in inbox.items] == ["sentinel"]
    assert len(fake.envelopes) == 8
    await fake.wait_until(lambda: all_acked(fake))  # ignored events are acked, never re-sent


async def test_send_is_escaped_plain_text_without_markup_or_unfurling(
    fake: FakeSlackServer, running: SlackProvider
) -> None:
    text = "<!channel> *bold* <https://evil.example|click> & co"

    ts = await running.send("D0ALICE", text)

    [sent] = fake.sent
    assert (sent["ts"], sent["text"], sent["blocks"]) == (ts, text, None)
    assert sent["raw_text"] == (
        "&lt;!channel&gt; *bold* &lt;https://evil.example|click&gt; &amp; co"
    )
    assert (sent["mrkdwn"], sent["unfurl_links"]) == (False, False)


async def test_send_to_a_user_id_lands_in_their_im(
    fake: FakeSlackServer, running: SlackProvider
) -> None:
    await running.send(ALICE, "hi")

    assert fake.messages_to(ALICE) == ["hi"]
    assert fake.sent[0]["channel"] == "D0ALICE"


async def test_send_with_buttons_renders_block_kit(
    fake: FakeSlackServer, running: SlackProvider
) -> None:
    ts = await running.send("D0OWNER", "Approve <Bob>?", buttons=[APPROVE, REJECT])

    assert fake.sent[-1]["ts"] == ts
    assert fake.sent[-1]["blocks"] == [
        {
            "type": "section",
            "text": {"type": "plain_text", "text": "Approve <Bob>?", "emoji": False},
        },
        {
            "type": "actions",
            "block_id": "pairbot_actions",
            "elements": [
                {
                    "type": "button",
                    "action_id": "pairbot:/approve ABCD2345",
                    "text": {"type": "plain_text", "text": "Approve", "emoji": False},
                    "value": "/approve ABCD2345",
                },
                {
                    "type": "button",
                    "action_id": "pairbot:/reject ABCD2345",
                    "text": {"type": "plain_text", "text": "Reject", "emoji": False},
                    "value": "/reject ABCD2345",
                },
            ],
        },
    ]


async def test_a_long_text_with_buttons_takes_several_sections_and_an_empty_one_none(
    fake: FakeSlackServer, running: SlackProvider
) -> None:
    text = "a" * 3000 + "\n" + "b" * 2999 + "c" * 5

    await running.send("D0OWNER", text, buttons=[APPROVE])

    [sent] = fake.sent
    assert sent["text"] == text  # the message's own text is sent whole
    sections = [b["text"]["text"] for b in sent["blocks"] if b["type"] == "section"]
    assert sections == [text[:3000], text[3000:6000], text[6000:]]
    assert [b["type"] for b in blocks("", [APPROVE])] == ["actions"]  # no empty section


@pytest.mark.parametrize(
    ("buttons", "match"),
    [
        ([Button(label="empty", command="")], "0 characters"),
        ([APPROVE, Button(label="again", command=APPROVE.command)], "same command"),
    ],
)
async def test_empty_or_repeated_commands_are_refused_before_sending(
    fake: FakeSlackServer, running: SlackProvider, buttons: list[Button], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        await running.send("D0OWNER", "x", buttons=buttons)

    assert fake.sent == []


async def test_a_long_text_is_cut_as_sent_escaped_never_inside_an_entity(
    fake: FakeSlackServer, running: SlackProvider
) -> None:
    """Slack cuts a text over 40,000 characters (the fake too: it counts the text as sent);
    escaped, this one is 13 characters a triple, and a hard cut must not split ``&amp;``."""
    text = "<&>" * 10_000  # 130,000 characters escaped

    last = await running.send("D0OWNER", text, buttons=[APPROVE])

    raw = [m["raw_text"] for m in fake.sent]
    assert len(raw) == 4
    assert all(40_000 - 5 < len(part) <= 40_000 for part in raw[:-1])  # cut back, not more
    assert all(not re.search(r"&(?!amp;|lt;|gt;)", part) for part in raw)
    assert "".join(fake.shown("D0OWNER", m["ts"]) for m in fake.sent) == text
    assert [bool(m["blocks"]) for m in fake.sent] == [False, False, False, True]
    assert fake.sent[-1]["ts"] == last


async def test_25_buttons_fit_an_actions_block_and_26_are_refused_before_sending(
    fake: FakeSlackServer, running: SlackProvider
) -> None:
    buttons = [Button(label=f"B{n}", command=f"/b {n}") for n in range(26)]

    with pytest.raises(ValueError, match="Slack allows 25 buttons in an actions block, got 26"):
        await running.send("D0OWNER", "Choose", buttons=buttons)
    assert fake.sent == []
    ts = await running.send("D0OWNER", "Choose", buttons=buttons[:25])
    [actions] = [b for b in fake.message("D0OWNER", ts)["blocks"] if b["type"] == "actions"]
    assert len(actions["elements"]) == 25


async def test_an_upload_is_a_media_inbound_with_its_text_or_none(
    fake: FakeSlackServer, running: SlackProvider, inbox: Inbox
) -> None:
    fake.upload(ALICE)
    fake.upload(ALICE, "look <here> & there", filename="cat.png")
    fake.upload(BOB)
    items = await inbox.wait(3)

    assert [(i.sender_id, i.text, i.media, i.chat_kind) for i in items] == [
        (ALICE, "", True, ChatKind.DM),
        (ALICE, "look <here> & there", True, ChatKind.DM),
        (BOB, "", True, ChatKind.DM),
    ]
    assert items[0].sender_name == "Alice Liddell"
    assert items[0].message_id != items[1].message_id


async def test_a_button_press_is_acked_at_once_and_carries_the_profile(
    fake: FakeSlackServer, running: SlackProvider, inbox: Inbox
) -> None:
    ts = await running.send("D0OWNER", "Approve Bob?", buttons=[APPROVE, REJECT])

    fake.press_button(OWNER, ts, index=1)
    [pressed] = await inbox.wait()

    assert (pressed.sender_name, pressed.meta, pressed.sent_at) == (
        "The Owner",
        {"name": "The Owner"},
        None,
    )
    [envelope] = [e for e in fake.envelopes if e["type"] == "interactive"]
    await fake.wait_until(lambda: envelope["envelope_id"] in {a["envelope_id"] for a in fake.acks})


async def test_an_edit_is_plain_text_blocks_so_a_name_shows_as_written(
    fake: FakeSlackServer, running: SlackProvider
) -> None:
    """chat.update has no mrkdwn switch: a bare text would show ``*Bob*`` as a bold Bob (and
    did: the fake renders it so), so the edit carries plain-text sections."""
    ts = await running.send("D0OWNER", "Approve Bob?", buttons=[APPROVE, REJECT])
    text = "Approved Slack sender U0BOB (*Bob* _the_ ~builder~ `x` <https://e.example|y> & co)"

    await running.edit("D0OWNER", ts, text)

    assert fake.shown("D0OWNER", ts) == text
    message = fake.message("D0OWNER", ts)
    assert message["blocks"] == [
        {"type": "section", "text": {"type": "plain_text", "text": text, "emoji": False}}
    ]
    assert message["text"] == (
        "Approved Slack sender U0BOB (*Bob* _the_ ~builder~ `x` "
        "&lt;https://e.example|y&gt; &amp; co)"
    )  # only the notification's fallback


async def test_the_fake_shows_an_updated_bare_text_as_markup(
    fake: FakeSlackServer, running: SlackProvider
) -> None:
    """What the provider no longer sends, played through the Web API: chat.update's text
    follows the default formatting rules; chat.postMessage's with mrkdwn off does not."""
    ts = await running.send("D0OWNER", "*as written*")
    client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_base_url)

    assert fake.shown("D0OWNER", ts) == "*as written*"
    await client.chat_update(channel="D0OWNER", ts=ts, text="Approved *Bob* <https://e.x|here>")
    assert fake.shown("D0OWNER", ts) == "Approved Bob here"


async def test_a_long_edit_is_cut_to_one_message_of_sections(
    fake: FakeSlackServer, running: SlackProvider
) -> None:
    ts = await running.send("D0OWNER", "Approve?", buttons=[APPROVE])

    await running.edit("D0OWNER", ts, "first line\n" + "&" * 40_000)

    # Escaped, 40,000 characters hold 7997 "&amp;" (and "…"): the cut falls before an entity.
    kept = 7997
    message = fake.message("D0OWNER", ts)
    assert message["text"] == "first line\n" + "&amp;" * kept + "…"
    assert fake.shown("D0OWNER", ts) == "first line\n" + "&" * kept + "…"
    assert [b["type"] for b in message["blocks"]] == ["section"] * 3


async def test_slash_command_in_the_bots_im_is_a_dm_command(
    fake: FakeSlackServer, running: SlackProvider, inbox: Inbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.slash_command(OWNER, "approve abcd-2345")
    fake.slash_command(OWNER, "")
    fake.slash_command(OWNER, "/pending")

    first, empty, doubled = await inbox.wait(3)

    assert first == Inbound(
        provider="slack",
        chat_id="D0OWNER",
        chat_kind=ChatKind.DM,
        sender_id=OWNER,
        sender_name="The Owner",
        text="/approve abcd-2345",
        meta={"name": "The Owner"},
    )
    assert (empty.text, doubled.text) == ("/help", "/pending")
    await fake.wait_until(lambda: len(fake.acks) == 3)
    assert all("payload" not in a for a in fake.acks)  # acked silently: the answer is a post
    shown = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    assert "abcd-2345" not in shown


async def test_slash_command_elsewhere_is_no_dm_and_gets_a_private_hint(
    fake: FakeSlackServer, running: SlackProvider, inbox: Inbox
) -> None:
    fake.add_channel("C0GENERAL", name="general")
    fake.slash_command(OWNER, "approve ABCD2345", channel_id="C0GENERAL")
    fake.slash_command(OWNER, "approve ABCD2345", channel_id="D0SOMEONEELSE")  # a human's IM

    in_channel, other_im = await inbox.wait(2)

    assert (in_channel.chat_kind, other_im.chat_kind) == (ChatKind.CHANNEL, ChatKind.GROUP)
    await fake.wait_until(lambda: len(fake.acks) == 2)
    assert fake.acks[0]["payload"]["text"].startswith("pairbot only takes commands")


async def test_dm_chat_id_opens_the_im_once(fake: FakeSlackServer, running: SlackProvider) -> None:
    assert await running.dm_chat_id(BOB) == "D0BOB"
    assert await running.dm_chat_id(BOB) == "D0BOB"

    assert fake.methods_called().count("conversations.open") == 1
    assert fake.calls[-1] == ("conversations.open", {"users": BOB})


async def test_reconnects_after_a_disconnect_message_and_a_dropped_socket(
    fake: FakeSlackServer, running: SlackProvider, inbox: Inbox
) -> None:
    fake.dm(ALICE, "one")
    await inbox.wait(1)

    await fake.request_reconnect()
    await fake.wait_connected(2)
    fake.dm(ALICE, "two")
    await inbox.wait(2)

    fake.ignore_acks = True  # the ack of "three" is lost with the socket: Slack re-sends it
    fake.dm(ALICE, "three")
    await inbox.wait(3)
    await fake.drop_socket()
    fake.ignore_acks = False
    await fake.wait_connected(3)
    fake.dm(ALICE, "four")
    await inbox.wait(4)
    await settle()

    assert [i.text for i in inbox.items] == ["one", "two", "three", "four"]
    resent = [e for e in fake.envelopes if e.get("retry_attempt")]
    assert [e["payload"]["event"]["text"] for e in resent] == ["three"]
    assert fake.methods_called().count("apps.connections.open") == 3


async def test_a_rate_limited_post_is_retried_after_retry_after(
    fake: FakeSlackServer, running: SlackProvider
) -> None:
    fake.fail_next("chat.postMessage", 1, retry_after=1)
    loop = asyncio.get_running_loop()
    started = loop.time()

    ts = await running.send("D0ALICE", "after the limit")

    assert loop.time() - started >= 1.0
    assert fake.messages_to(ALICE) == ["after the limit"]
    assert fake.sent[-1]["ts"] == ts
    assert fake.methods_called().count("chat.postMessage") == 2


@pytest.mark.parametrize("which", ["bot_token", "app_token"])
async def test_a_rejected_token_fails_start_with_a_clear_error_without_the_token(
    fake: FakeSlackServer, inbox: Inbox, caplog: pytest.LogCaptureFixture, which: str
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = {
        "bot_token": fake.bot_token,
        "app_token": fake.app_token,
        which: "xoxb-definitely-wrong",
    }
    provider = SlackProvider(
        bot_token=tokens["bot_token"],
        app_token=tokens["app_token"],
        api_base_url=fake.api_base_url,
    )

    with pytest.raises(ConfigError, match="rejected the") as raised:
        await provider.start(inbox)

    assert raised.value.field == which
    assert "definitely-wrong" not in str(raised.value)
    assert raised.value.__suppress_context__
    assert not provider.running
    assert "definitely-wrong" not in caplog.text
    await provider.stop()


async def test_each_start_opens_its_own_socket(
    fake: FakeSlackServer, running: SlackProvider, inbox: Inbox
) -> None:
    await running.stop()
    await running.start(inbox)

    fake.dm(ALICE, "on the new socket")
    [inbound] = await inbox.wait()

    assert inbound.text == "on the new socket"
    assert fake.connections == 2
    assert fake.methods_called().count("apps.connections.open") == 2


def test_a_mode_without_its_credential_is_refused() -> None:
    with pytest.raises(ConfigError, match="app_token is required"):
        SlackProvider(bot_token="xoxb-1")
    with pytest.raises(ConfigError, match="signing_secret is required"):
        SlackProvider(bot_token="xoxb-1", mode="http")


async def test_fake_answers_like_the_web_api(fake: FakeSlackServer) -> None:
    async def call(method: str, token: str, **data: str) -> tuple[int, dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{fake.api_base_url}{method}",
                data=data,
                headers={"Authorization": f"Bearer {token}"},
            ) as response,
        ):
            return response.status, await response.json()

    assert await call("auth.test", "xoxb-wrong") == (200, {"ok": False, "error": "invalid_auth"})
    assert (await call("apps.connections.open", fake.bot_token))[1][
        "error"
    ] == "not_allowed_token_type"
    assert (await call("chat.postMessage", fake.bot_token, channel="C0NOPE", text="x"))[1] == {
        "ok": False,
        "error": "channel_not_found",
    }
    assert (await call("no.such", fake.bot_token))[1]["error"] == "unknown_method"
    status, body = await call("chat.postMessage", fake.bot_token, channel=ALICE, text="a &amp; b")
    assert (status, body["ok"], body["channel"]) == (200, True, "D0ALICE")
    assert fake.messages_to(ALICE) == ["a & b"]
    status, body = await call("chat.postMessage", fake.bot_token, channel=ALICE, text="y" * 40_001)
    assert (status, body["ok"], body["response_metadata"]["warnings"]) == (
        200,
        True,
        ["message_truncated"],
    )  # cut, still posted (changelog 2018-04 "Truncating really long messages")
    assert fake.messages_to(ALICE)[-1] == "y" * 40_000


# -- the provider alone, HTTP Events API ----------------------------------------------------


async def test_http_signed_event_is_accepted_and_bad_or_stale_signatures_get_401(
    fake: FakeSlackServer,
    http_provider: SlackProvider,
    inbox: Inbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)

    def dm_body(text: str) -> dict[str, Any]:
        return fake.dm(ALICE, text, deliver=False)

    now = int(SystemClock().now().timestamp())
    assert (await fake.post("events_api", dm_body("forged"), signature="v0=" + "0" * 64))[0] == 401
    assert (await fake.post("events_api", dm_body("stale"), timestamp=now - 6 * 60))[0] == 401
    challenge = {"token": "legacy", "challenge": "chal-123", "type": "url_verification"}
    status, text = await fake.post("events_api", challenge)
    assert (status, json.loads(text)) == (200, {"challenge": "chal-123"})

    good = dm_body("signed and fresh")
    assert (await fake.post("events_api", good))[0] == 200
    assert (await fake.post("events_api", good, retry_num=1))[0] == 200  # Slack's retry
    [inbound] = await inbox.wait()
    await settle()

    assert [i.text for i in inbox.items] == ["signed and fresh"]
    assert (inbound.chat_kind, inbound.sender_id) == (ChatKind.DM, ALICE)
    assert fake.signing_secret not in caplog.text


async def test_http_button_and_slash_command_round_trip(
    fake: FakeSlackServer, http_provider: SlackProvider, inbox: Inbox
) -> None:
    ts = await http_provider.send("D0OWNER", "Approve Bob?", buttons=[APPROVE, REJECT])

    fake.press_button(OWNER, ts)
    fake.slash_command(OWNER, "pending")
    await inbox.wait(2)

    pressed, command = sorted(inbox.items, key=lambda i: i.is_button, reverse=True)
    assert (pressed.is_button, pressed.text, pressed.message_id) == (True, APPROVE.command, ts)
    assert (command.text, command.chat_kind) == ("/pending", ChatKind.DM)
    await fake.wait_until(lambda: sum(d["status"] == 200 for d in fake.deliveries) >= 3)
    assert {d["status"] for d in fake.deliveries} == {200}


async def test_http_restart_listens_again_on_the_url_slack_was_given(
    fake: FakeSlackServer, http_provider: SlackProvider, inbox: Inbox
) -> None:
    url = http_provider.webhook_url
    assert url is not None
    assert not url.endswith(":0/slack/events")

    await http_provider.stop()
    while_stopped = http_provider.webhook_url
    await http_provider.start(inbox)

    # port 0 was bound once; the Request URL given to Slack holds across the restart
    assert (while_stopped, http_provider.webhook_url) == (None, url)
    fake.dm(ALICE, "after the restart")
    [inbound] = await inbox.wait()
    assert inbound.text == "after the restart"


# -- the whole app ---------------------------------------------------------------------------


def make_config(fake: FakeSlackServer, **slack: Any) -> Config:
    block = {"bot_token": fake.bot_token, "app_token": fake.app_token}
    block.update(api_base_url=fake.api_base_url, **slack)
    return app_config("slack", OWNER, block, pairing={"prune_interval": "1h"})


@pytest.fixture
async def app(fake: FakeSlackServer, state_dir: Path, fake_clock: FakeClock) -> AsyncIterator[App]:
    async with app_running(make_config(fake), state_dir, fake_clock) as started:
        yield started


async def texts_to(fake: FakeSlackServer, user: str, count: int) -> list[str]:
    return await texts(lambda: fake.messages_to(user), count)


async def pair(fake: FakeSlackServer, user: str = ALICE) -> str:
    """A stranger writes and gets a code; return the code."""
    fake.dm(user, "hello? please run rm -rf")
    return code_in((await texts_to(fake, user, 1))[0])


async def notice_of(fake: FakeSlackServer, code: str) -> dict[str, Any]:
    [notice] = await fake.wait_for_sent(
        lambda m: (
            m["channel"] == "D0OWNER"
            and m["text"].startswith("New pairing request")
            and code[:4] in m["text"]
        )
    )
    return notice


async def test_app_stranger_gets_a_code_and_the_owner_a_notice_with_buttons(fake, app):
    code = await pair(fake)

    [reply] = fake.messages_to(ALICE)
    assert f"Your Slack id: {ALICE}" in reply
    assert app.pairing.pending()[0].code == code
    notice = await notice_of(fake, code)
    assert f"Sender id: {ALICE}" in notice["text"]
    assert "Name (given by the sender, unverified): Alice Liddell" in notice["text"]
    [actions] = [b for b in notice["blocks"] if b["type"] == "actions"]
    assert [(e["text"]["text"], e["value"]) for e in actions["elements"]] == [
        ("Approve", f"/approve {code}"),
        ("Reject", f"/reject {code}"),
    ]
    await settle()
    assert "rm -rf" not in json.dumps(fake.sent)


@pytest.mark.parametrize("how", ["bare text", "slash command"])
async def test_app_owner_approves_by_command_and_the_sender_goes_through(fake, app, how):
    code = await pair(fake)
    if how == "bare text":
        fake.dm(OWNER, f"approve {code[:4].lower()}-{code[4:].lower()}")
    else:
        fake.slash_command(OWNER, f"approve {code}")

    [done] = await fake.wait_for_sent(
        lambda m: m["channel"] == "D0OWNER" and m["text"].startswith("Approved")
    )
    assert done["text"].startswith(f"Approved Slack sender {ALICE} (Alice Liddell")
    texts = await texts_to(fake, ALICE, 2)
    assert texts[1] == "You're approved. Send a message to start chatting."
    fake.dm(ALICE, "what's the weather <today>?")
    texts = await texts_to(fake, ALICE, 3)
    assert texts[2] == "what's the weather <today>?"
    assert app.pairing.is_allowed("slack", ALICE)


async def test_app_owner_approves_by_button_and_the_notice_is_updated(fake, app):
    code = await pair(fake)
    notice = await notice_of(fake, code)

    fake.press_button(OWNER, notice["ts"])

    await fake.wait_until(lambda: len(fake.edits) == 1)
    assert fake.edits[0]["text"].startswith(f"Approved Slack sender {ALICE}")
    assert fake.shown("D0OWNER", notice["ts"]) == fake.edits[0]["text"]
    assert [b["type"] for b in fake.message("D0OWNER", notice["ts"])["blocks"]] == ["section"]
    assert app.pairing.is_allowed("slack", ALICE)
    fake.dm(ALICE, "hi now")
    assert (await texts_to(fake, ALICE, 3))[2] == "hi now"
    fake.press_button(OWNER, notice["ts"])  # pressed again, on a client not yet refreshed
    await fake.wait_until(lambda: len(fake.edits) == 2)
    assert fake.edits[1]["text"] == "This request was already handled; nothing changed."


async def test_app_a_strangers_markup_name_shows_as_written_in_the_edited_notice(fake, app):
    name = "*Eve* _the_ ~builder~"
    fake.add_user(EVE, name=name)
    code = await pair(fake, EVE)
    notice = await notice_of(fake, code)
    assert f"Name (given by the sender, unverified): {name}" in fake.shown("D0OWNER", notice["ts"])

    fake.press_button(OWNER, notice["ts"])
    await fake.wait_until(lambda: len(fake.edits) == 1)

    assert fake.shown("D0OWNER", notice["ts"]) == (
        f"Approved Slack sender {EVE} ({name}, as given by the sender). They have been told."
    )


async def test_app_a_strangers_upload_without_text_gets_a_code(fake, app):
    fake.upload(BOB)

    [reply] = await texts_to(fake, BOB, 1)
    assert f"Your Slack id: {BOB}" in reply
    await notice_of(fake, code_in(reply))


async def test_app_non_owner_approvals_and_channel_traffic_change_nothing(fake, app):
    code = await pair(fake)
    notice = await notice_of(fake, code)
    fake.add_channel("C0GENERAL", name="general")

    fake.dm(MALLORY, f"approve {code}")
    fake.slash_command(MALLORY, f"approve {code}")
    fake.press_button(MALLORY, notice["ts"])  # forged: the owner's notice
    fake.press_button(MALLORY, notice["ts"], channel="D0MALLORY", value=f"/approve {code}")
    fake.channel_message("C0GENERAL", OWNER, f"approve {code}")
    fake.channel_message("C0GENERAL", MALLORY, "hello channel")
    fake.slash_command(OWNER, f"approve {code}", channel_id="C0GENERAL")
    mallory = await texts_to(fake, MALLORY, 1)
    await settle(0.5)

    assert "pairing code" in mallory[0]
    assert len(fake.messages_to(MALLORY)) == 1  # one code, whatever she tried
    assert not app.pairing.is_allowed("slack", ALICE)
    assert not app.pairing.is_allowed("slack", MALLORY)
    assert {r.id for r in app.pairing.pending()} == {ALICE, MALLORY}
    assert fake.edits == []
    assert fake.messages_to("C0GENERAL") == []
    assert not any(m["text"].startswith("Approved") for m in fake.sent)


async def test_app_survives_reconnects_and_handles_each_message_once(fake, app):
    code = await pair(fake)
    fake.dm(OWNER, f"approve {code}")
    await fake.wait_until(lambda: app.pairing.is_allowed("slack", ALICE))
    await texts_to(fake, ALICE, 2)

    await fake.request_reconnect()
    await fake.wait_connected(2)
    fake.ignore_acks = True
    fake.dm(ALICE, "echo me once")
    await texts_to(fake, ALICE, 3)
    await fake.drop_socket()  # the lost ack makes the fake re-send the envelope
    fake.ignore_acks = False
    await fake.wait_connected(3)
    fake.dm(ALICE, "and me")
    await texts_to(fake, ALICE, 4)
    await settle()

    assert fake.messages_to(ALICE)[2:] == ["echo me once", "and me"]
    assert any(e.get("retry_attempt") for e in fake.envelopes)


async def test_app_over_http_events(fake, state_dir):
    config = make_config(
        fake, mode="http", signing_secret=fake.signing_secret, app_token=None, webhook={"port": 0}
    )
    async with app_running(config, state_dir) as app:
        provider = app.providers["slack"]
        assert isinstance(provider, SlackProvider)
        fake.events_url = provider.webhook_url
        code = await pair(fake)
        notice = await notice_of(fake, code)
        fake.press_button(OWNER, notice["ts"])
        await fake.wait_until(lambda: len(fake.edits) == 1)
        assert app.pairing.is_allowed("slack", ALICE)
        fake.dm(ALICE, "over http")
        assert (await texts_to(fake, ALICE, 3))[2] == "over http"
