"""Discord on real discord.py against the loopback fake: what is Discord's own (what every
provider does is in tests/providers/test_contract.py), then the whole app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl

import providers.discord.provider as discord_module
from bot.core.clock import Clock, FakeClock
from bot.core.config import Config
from bot.core.errors import ConfigError, ProviderError
from bot.core.models import Button, ChatKind, Inbound
from bot.runtime.app import App
from providers.discord.client import LibraryUrls
from providers.discord.fake import (
    MESSAGE_CONTENT,
    PRIVILEGED_INTENTS,
    FakeDiscordServer,
    displayed,
)
from providers.discord.provider import DiscordProvider, plain
from tests.e2e.support import app_config, app_running, code_in, settle, texts
from tests.helpers import APPROVE, REJECT, Inbox

pytestmark = pytest.mark.e2e

OWNER, ALICE, MALLORY, BOB = (
    "190000000000000011",
    "190000000000000042",
    "190000000000000066",
    "190000000000000077",
)
OTHER = "190000000000000088"
OTHER_BOT = "190000000000000099"
DIRECT_MESSAGES = 1 << 12


def make_fake(clock: Clock) -> FakeDiscordServer:
    fake = FakeDiscordServer(clock=clock)
    fake.user(OWNER, "Owner")  # shares the bot's server: notices reach them
    return fake


def mention(fake: FakeDiscordServer) -> str:
    return f"<@{fake.bot_user['id']}>"


def make_provider(fake: FakeDiscordServer, **kwargs: Any) -> DiscordProvider:
    return DiscordProvider(
        token=fake.token, api_base_url=fake.api_base_url, gateway_url=fake.gateway_url, **kwargs
    )


# -- the provider alone ------------------------------------------------------------------------


async def test_no_privileged_intent_is_asked_and_a_dm_still_carries_its_text(fake, running, inbox):
    """The fake grants no privileged intent (a new app): the bot that asked for Message
    Content was refused at IDENTIFY with 4014 and never started."""
    fake.guild_message(ALICE, "in a server: no content without the intent")
    fake.dm(ALICE, "hello", name="Alice")

    [inbound] = await inbox.wait()

    assert (inbound.text, inbound.chat_kind) == ("hello", ChatKind.DM)
    intents = fake.identifies[0]["intents"]
    assert intents & DIRECT_MESSAGES
    assert intents & PRIVILEGED_INTENTS == 0


async def test_the_fake_closes_the_gateway_with_4014_for_an_intent_not_granted(fake):
    """As Discord does ("Gateway Restrictions"); discord.py raises PrivilegedIntentsRequired."""
    import discord

    async def connect(intents: discord.Intents) -> None:
        client = discord.Client(intents=intents)
        try:
            await client.login(fake.token)
            await client.connect()
        finally:
            await client.close()

    asked = discord.Intents.none()
    asked.dm_messages = asked.message_content = True
    assert LibraryUrls.acquire(fake, fake.api_base_url, yarl.URL(fake.gateway_url))
    try:
        with pytest.raises(discord.PrivilegedIntentsRequired):
            await connect(asked)
    finally:
        LibraryUrls.release(fake)
    assert fake.identifies[0]["intents"] & MESSAGE_CONTENT
    assert not fake.connected


async def test_in_a_server_only_mentions_and_replies_to_the_bot_carry_text(fake, running, inbox):
    said = fake.bot_post("300000000000000002", "Hello, server")
    fake.guild_message(ALICE, "plain: arrives empty, so it is dropped")
    fake.guild_message(ALICE, f"{mention(fake)} hi")
    fake.guild_message(ALICE, "a reply", reply_to=said["id"])
    fake.dm(ALICE, "sentinel")

    items = await inbox.wait(3)
    await settle(0.15)

    assert [(i.text, i.chat_kind) for i in inbox.items] == [
        (f"{mention(fake)} hi", ChatKind.GROUP),
        ("a reply", ChatKind.GROUP),
        ("sentinel", ChatKind.DM),
    ]
    assert items[1].chat_id == "300000000000000002"


async def test_a_new_channel_type_is_looked_up_once(fake, running, inbox):
    fake.dm(ALICE, "one")
    fake.dm(ALICE, "two")
    await inbox.wait(2)

    channel = fake.dm_channel_id(ALICE)
    assert fake.calls.count(("GET", f"channels/{channel}")) == 1


async def test_announcement_and_group_dm_messages_are_not_dms(fake, running, inbox):
    news, group = f"{mention(fake)} news", f"{mention(fake)} group dm"
    fake.guild_message(ALICE, news, channel_id="300000000000000009", announcement=True)
    fake.group_dm("300000000000000005", ALICE, group)  # no guild, yet no DM either
    items = await inbox.wait(2)

    assert [(i.text, i.chat_kind, i.sender_id) for i in items] == [
        (news, ChatKind.CHANNEL, ALICE),
        (group, ChatKind.GROUP, ALICE),
    ]


async def test_a_dm_with_files_or_a_sticker_and_no_text_is_a_media_inbound(fake, running, inbox):
    channel = fake.dm_channel(ALICE)["id"]
    alice = fake.user(ALICE, "Alice")
    photo = fake.attachment("a.png")
    sticker = {"id": "300000000000000012", "name": "wave", "format_type": 1}
    fake.post_message(channel, alice, "", attachments=[photo])
    fake.post_message(channel, alice, "", sticker_items=[sticker])
    fake.post_message(channel, alice, "look at this", attachments=[photo])
    fake.guild_message(ALICE, "", attachments=[photo])  # withheld without the intent: nothing

    items = await inbox.wait(3)
    await settle(0.15)

    assert [(i.text, i.media, i.chat_kind) for i in inbox.items] == [
        ("", True, ChatKind.DM),
        ("", True, ChatKind.DM),
        ("look at this", True, ChatKind.DM),
    ]
    assert items[0].message_id != items[1].message_id


async def test_other_bots_webhook_and_system_messages_are_ignored(fake, running, inbox):
    channel = fake.dm_channel(ALICE)["id"]
    fake.post_message(channel, fake.user(OTHER_BOT, "Other", bot=True), "another bot")
    alice = fake.user(ALICE, "Alice")
    fake.post_message(channel, alice, "", attachments=[])  # no text
    fake.post_message(channel, alice, "joined", type=7)  # a system message
    fake.post_message(channel, alice, "via webhook", webhook_id="300000000000000007")
    fake.dm(ALICE, "sentinel")

    await inbox.wait()
    await settle(0.15)

    assert [i.text for i in inbox.items] == ["sentinel"]


async def test_send_is_plain_text_that_pings_no_one_and_previews_nothing(fake, running):
    channel = fake.dm_channel(ALICE)["id"]
    text = "**not bold** [x](http://e.com) <@1> @everyone\n> not a quote\n1. no list"

    message_id = await running.send(channel, text)

    [sent] = fake.sent
    assert sent["message_id"] == message_id
    assert sent["content"] == plain(text) != text
    assert displayed(sent["content"]) == text
    assert sent["allowed_mentions"] == {"parse": []}
    assert sent["flags"] & 4  # SUPPRESS_EMBEDS
    assert sent["components"] == []


@pytest.mark.parametrize(
    "text",
    [
        "a*b_c~d|e`f",
        "\\",
        "x\\*y",
        "# h\n## h2\n-# small\n- item\n  * item\n12. item",
        "> quote\n>>> block",
        "||spoiler|| <#1> <:e:1> <t:0>",
        "ABCD-2345 12:30 ok. fine",
    ],
)
def test_plain_shows_exactly_the_text(text):
    assert displayed(plain(text)) == text


async def test_long_text_is_split_into_messages_discord_accepts(fake, running):
    channel = fake.dm_channel(ALICE)["id"]
    text = "\n".join(f"line {n} " + "*" * 60 for n in range(60))

    last = await running.send(channel, text, buttons=[APPROVE])

    assert len(fake.sent) > 1
    assert all(len(m["content"]) <= 2000 for m in fake.sent)
    assert "\n".join(fake.messages_in(channel)) == text
    assert fake.sent[-1]["message_id"] == last
    assert [bool(m["components"]) for m in fake.sent] == [False] * (len(fake.sent) - 1) + [True]


async def test_a_hard_cut_never_separates_an_escape_from_what_it_escapes(fake, running):
    channel = fake.dm_channel(ALICE)["id"]
    text = "a" * 1999 + "*b"  # escaped, the backslash would be the 2000th character

    await running.send(channel, text)

    assert [m["content"] for m in fake.sent] == ["a" * 1999, "\\*b"]
    assert "".join(fake.messages_in(channel)) == text


async def test_edit_cuts_a_long_text_to_one_message_at_a_line_end(fake, running):
    channel = fake.dm_channel(ALICE)["id"]
    message_id = await running.send(channel, "short")

    await running.edit(channel, message_id, "first *line*\n" + "y" * 2500)
    await running.edit(channel, message_id, "z" * 2500)

    assert [displayed(e["content"]) for e in fake.edits] == ["first *line*…", "z" * 1999 + "…"]


async def test_a_button_carries_its_command_in_the_custom_id_and_a_press_is_deferred(
    fake, running, inbox
):
    channel = fake.dm_channel(ALICE)["id"]
    message_id = await running.send(channel, "Approve Bob?", buttons=[APPROVE, REJECT])
    assert fake.buttons(message_id) == [
        ("Approve", "pairbot:/approve ABCD2345"),
        ("Reject", "pairbot:/reject ABCD2345"),
    ]

    interaction = fake.press_button(ALICE, message_id, label="Approve")
    [pressed] = await inbox.wait()

    assert pressed.text == "/approve ABCD2345"
    assert fake.interaction_responses == [
        {"interaction_id": interaction["id"], "type": 6, "data": {}}
    ]
    await running.edit(channel, message_id, "Approved *Bob*")
    assert fake.edits[-1]["components"] == []


async def test_buttons_still_work_after_a_restart(fake, inbox):
    first = make_provider(fake)
    await first.start(inbox)
    channel = await first.dm_chat_id(OWNER)
    message_id = await first.send(channel, "Approve?", buttons=[APPROVE])
    await first.stop()

    second = make_provider(fake)
    await second.start(inbox)
    try:
        fake.press_button(OWNER, message_id, label="Approve")
        [pressed] = await inbox.wait()
    finally:
        await second.stop()
    assert (pressed.is_button, pressed.text, pressed.message_id) == (
        True,
        APPROVE.command,
        message_id,
    )


async def test_a_forged_custom_id_not_on_the_message_does_nothing(fake, running, inbox):
    channel = fake.dm_channel(OWNER)["id"]
    message_id = await running.send(channel, "Approve?", buttons=[APPROVE])

    fake.press_button(MALLORY, message_id, "pairbot:/approve ZZZZ9999")
    fake.press_button(MALLORY, message_id, label="Approve")  # the presser's id is what counts
    [pressed] = await inbox.wait()
    await settle(0.15)

    assert [(i.sender_id, i.text) for i in inbox.items] == [(MALLORY, APPROVE.command)]
    assert pressed.is_button


async def test_an_empty_label_is_refused_before_sending(fake, running):
    channel = fake.dm_channel(ALICE)["id"]
    with pytest.raises(ValueError, match="label"):
        await running.send(channel, "x", buttons=[Button(label="", command="/help")])
    with pytest.raises(ValueError, match="allows 5"):
        await running.send(channel, "x", buttons=[APPROVE] * 6)
    assert fake.sent == []


async def test_slash_commands_are_synced_for_dms_only(fake, running):
    commands = {c["name"]: c for c in fake.commands}

    assert set(commands) == {
        "approve",
        "reject",
        "pending",
        "allowlist",
        "revoke",
        "nodes",
        "help",
    }
    assert all(c["contexts"] == [1] and c["integration_types"] == [0] for c in commands.values())
    assert [o["name"] for o in commands["approve"]["options"]] == ["code", "duration"]
    assert [o["required"] for o in commands["approve"]["options"]] == [True, False]
    assert [o["name"] for o in commands["nodes"]["options"]] == ["action", "id"]


async def test_a_slash_command_arrives_as_its_text_and_is_answered_in_place(fake, provider):
    answered: list[str | None] = []

    async def core(inbound: Inbound) -> None:
        answered.append(inbound.text)
        alice_dm = await provider.dm_chat_id(ALICE)
        await provider.send(alice_dm, "You're approved.")  # another chat: a plain message
        await provider.send(inbound.chat_id, "Approved Alice")
        await provider.send(inbound.chat_id, "second line")

    await provider.start(core)
    fake.user(ALICE, "Alice")
    interaction = fake.slash(OWNER, "approve", {"code": "abcd-2345"})
    owner_dm = fake.dm_channel_id(OWNER)
    await fake.wait_until(lambda: len(fake.messages_in(owner_dm or "")) == 2)

    assert answered == ["/approve abcd-2345"]
    assert fake.interaction_responses[0] == {
        "interaction_id": interaction["id"],
        "type": 5,
        "data": {},
    }
    assert [(m["content"], m["via"]) for m in fake.sent] == [
        ("You're approved.", "rest"),
        ("Approved Alice", "interaction"),
        ("second line", "interaction"),
    ]
    assert fake.texts_to(ALICE) == ["You're approved."]


async def test_options_become_the_command_line(fake, running, inbox):
    fake.slash(OWNER, "nodes", {"action": "approve", "id": "req-1"})
    fake.slash(OWNER, "allowlist")
    fake.slash(OWNER, "revoke", {"platform": "discord", "user_id": ALICE})
    fake.slash(OWNER, "approve", {"code": "abcd-2345", "duration": "7d"})
    items = await inbox.wait(4)

    assert [(i.text, i.chat_kind, i.sender_id, i.is_button) for i in items] == [
        ("/nodes approve req-1", ChatKind.DM, OWNER, False),
        ("/allowlist", ChatKind.DM, OWNER, False),
        (f"/revoke discord {ALICE}", ChatKind.DM, OWNER, False),
        ("/approve abcd-2345 7d", ChatKind.DM, OWNER, False),
    ]


async def test_an_unanswered_slash_command_leaves_no_placeholder(fake, running, inbox):
    fake.slash(MALLORY, "pending")
    await inbox.wait()
    await fake.wait_until(lambda: ("DELETE", _original(fake)) in fake.calls)

    assert fake.sent == []


def _original(fake: FakeDiscordServer) -> str:
    token = next(i["token"] for i in fake._interactions.values())
    return f"webhooks/{fake.application['id']}/{token}/messages/@original"


async def test_a_slash_command_in_a_guild_is_group_and_told_to_use_a_dm(fake, running, inbox):
    fake.guild_message(OWNER, f"{mention(fake)} hello")  # makes the guild channel known
    await inbox.wait()
    fake.slash(OWNER, "approve", {"code": "ABCD2345"}, channel_id="300000000000000002")
    items = await inbox.wait(2)

    assert (items[1].chat_kind, items[1].text) == (ChatKind.GROUP, "/approve ABCD2345")
    [note] = [r for r in fake.interaction_responses if r["type"] == 4]
    assert note["data"]["flags"] == 64
    assert "direct message" in note["data"]["content"]


@pytest.mark.parametrize(
    ("shares_server", "accepts_dms", "code"),
    [(True, False, "50007"), (False, True, "50278"), (False, False, "50278")],
)
async def test_a_dm_discord_will_not_deliver_is_a_provider_error_saying_why(
    fake, running, shares_server, accepts_dms, code
):
    fake.reach(BOB, shares_server=shares_server, accepts_dms=accepts_dms)
    chat = await running.dm_chat_id(BOB)  # Create DM succeeds: the refusal comes on send

    with pytest.raises(ProviderError, match=f"user {BOB} \\(error {code}:") as refused:
        await running.send(chat, "You're approved.")

    assert "docs/providers/discord.md" in str(refused.value)
    assert fake.sent == []
    assert fake.refused == [{"channel_id": chat, "user_id": BOB, "code": int(code)}]


async def test_someone_the_bot_never_met_and_a_bot_cannot_be_messaged(fake, running):
    stranger = "190000000000000123"
    with pytest.raises(ProviderError, match="error 50278"):
        await running.send(await running.dm_chat_id(stranger), "hello?")
    fake.user(OTHER_BOT, "Other", bot=True)
    with pytest.raises(ProviderError, match="error 50007"):
        await running.dm_chat_id(OTHER_BOT)


async def test_dm_chat_id_opens_the_dm_channel_once(fake, running):
    fake.user(BOB, "Bob")

    first = await running.dm_chat_id(BOB)
    again = await running.dm_chat_id(BOB)

    assert first == again == fake.dm_channel_id(BOB)
    assert fake.calls.count(("POST", "users/@me/channels")) == 1


@pytest.mark.parametrize("how", ["close-4000", "reconnect-op7"])
async def test_reconnect_resumes_and_no_message_is_handled_twice(fake, running, inbox, how):
    fake.dm(ALICE, "before the drop")
    await inbox.wait()
    fake.replay_overlap = 3  # Discord may replay events already delivered

    if how == "close-4000":
        await fake.drop_connection(4000)
    else:
        await fake.request_reconnect()
    fake.dm(ALICE, "during the drop")
    await fake.wait_until(lambda: len(fake.resumes) == 1)
    fake.dm(ALICE, "after the drop")
    await inbox.wait(3)
    await settle(0.15)

    assert [i.text for i in inbox.items] == [
        "before the drop",
        "during the drop",
        "after the drop",
    ]
    assert fake.replayed  # the first message really was sent again
    assert len(fake.identifies) == 1


async def test_wrong_token_fails_start_with_a_clear_error_without_the_token(fake, inbox, caplog):
    caplog.set_level(logging.DEBUG)
    token = "definitely-not-the-token"
    provider = DiscordProvider(
        token=token, api_base_url=fake.api_base_url, gateway_url=fake.gateway_url
    )

    with pytest.raises(ConfigError, match="rejected the bot token") as raised:
        await provider.start(inbox)

    assert token not in str(raised.value)
    assert raised.value.__cause__ is None
    assert not provider.running
    assert token not in caplog.text
    await provider.stop()  # nothing to stop: still fine


async def test_discord_py_urls_are_set_while_running_and_restored_after(fake, provider, inbox):
    import discord

    library_rest = discord.http.Route.BASE
    await provider.start(inbox)
    assert fake.api_base_url == discord.http.Route.BASE

    await provider.stop()
    assert library_rest == discord.http.Route.BASE
    await provider.start(inbox)
    assert len(fake.identifies) == 2  # a restart identifies afresh


async def test_api_base_url_alone_finds_the_gateway_through_rest(fake, inbox):
    provider = DiscordProvider(token=fake.token, api_base_url=fake.base_url + "/api")
    await provider.start(inbox)
    try:
        fake.dm(ALICE, "found you")
        [inbound] = await inbox.wait()
    finally:
        await provider.stop()
    assert inbound.text == "found you"
    assert ("GET", "gateway/bot") in fake.calls


async def test_two_providers_must_agree_on_the_process_wide_urls(fake, running):
    other = DiscordProvider(
        token=fake.token,
        api_base_url="http://127.0.0.1:9/api",
        gateway_url=fake.gateway_url,
        name="discord2",
    )
    with pytest.raises(ConfigError, match="process-wide"):
        await other.start(Inbox())
    await other.stop()


def test_constructor_checks_its_arguments():
    with pytest.raises(ConfigError, match="empty"):
        DiscordProvider(token=" ")
    with pytest.raises(ConfigError, match="ws"):
        DiscordProvider(token="t", gateway_url="http://x")
    made = DiscordProvider(token="t", api_base_url="http://127.0.0.1:1/api/")
    assert made._rest == "http://127.0.0.1:1/api/v10"
    assert DiscordProvider(token="t")._rest == discord_module.LIBRARY_API_BASE_URL
    assert made.bare_commands is False


async def test_fake_answers_like_discord(fake):
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{fake.api_base_url}/users/@me", headers={"Authorization": "Bot wrong"}
        ) as wrong:
            assert (wrong.status, await wrong.json()) == (
                401,
                {"message": "401: Unauthorized", "code": 0},
            )
            assert wrong.headers["Content-Type"] == "application/json"
        headers = {"Authorization": f"Bot {fake.token}"}
        async with session.post(
            f"{fake.api_base_url}/channels/1/messages", json={"content": "x"}, headers=headers
        ) as unknown:
            assert (unknown.status, (await unknown.json())["code"]) == (404, 10003)
        channel = fake.dm_channel(ALICE)["id"]
        async with session.post(
            f"{fake.api_base_url}/channels/{channel}/messages",
            json={"content": "x" * 2001},
            headers=headers,
        ) as long:
            assert long.status == 400
        fake.reach(ALICE, accepts_dms=False)
        async with session.post(
            f"{fake.api_base_url}/channels/{channel}/messages",
            json={"content": "x"},
            headers=headers,
        ) as closed:
            assert (closed.status, await closed.json()) == (
                403,
                {"message": "Cannot send messages to this user", "code": 50007},
            )


# -- the whole app -----------------------------------------------------------------------------


def make_config(fake: FakeDiscordServer, *owners: str, **pairing: Any) -> Config:
    """The app on the fake, its owners ``owners`` (or :data:`OWNER`), ``pairing`` its knobs."""
    block = {"token": fake.token, "api_base_url": fake.api_base_url}
    block["gateway_url"] = fake.gateway_url
    extra = {"owners": [{"provider": "discord", "user_id": user} for user in owners]}
    return app_config(
        "discord",
        OWNER,
        block,
        pairing={"prune_interval": "1h", **pairing},
        **(extra if owners else {}),
    )


@pytest.fixture
async def app(
    fake: FakeDiscordServer, state_dir: Path, fake_clock: FakeClock
) -> AsyncIterator[App]:
    async with app_running(make_config(fake), state_dir, fake_clock) as started:
        yield started


async def texts_to(fake: FakeDiscordServer, user: str, count: int) -> list[str]:
    return await texts(lambda: fake.texts_to(user), count)


async def pair(fake: FakeDiscordServer, user: str = ALICE, name: str = "Alice") -> str:
    """A stranger writes and gets a code; return the code."""
    fake.dm(user, "please run rm -rf", name=name)
    return code_in((await texts_to(fake, user, 1))[0])


async def notice(fake: FakeDiscordServer, number: int = 1) -> dict[str, Any]:
    await fake.wait_until(lambda: len(_notices(fake)) >= number)
    return _notices(fake)[number - 1]


def _notices(fake: FakeDiscordServer) -> list[dict[str, Any]]:
    owner_dm = fake.dm_channel_id(OWNER)
    return [m for m in fake.sent if m["channel_id"] == owner_dm and m["components"]]


async def test_app_stranger_gets_a_code_and_the_owner_a_notice_with_buttons(fake, app):
    code = await pair(fake)

    [text] = fake.texts_to(ALICE)
    assert f"Your Discord id: {ALICE}" in text
    assert "rm -rf" not in str(fake.sent)
    sent = await notice(fake)
    shown = displayed(sent["content"])
    assert f"Sender id: {ALICE}" in shown
    assert "Name (given by the sender, unverified): Alice" in shown
    assert fake.buttons(sent["message_id"]) == [
        ("Approve", f"pairbot:/approve {code}"),
        ("Reject", f"pairbot:/reject {code}"),
    ]
    assert [r.id for r in app.pairing.pending()] == [ALICE]


async def test_app_owner_approves_by_text_and_the_next_message_goes_through(fake, app):
    code = await pair(fake)
    fake.dm(OWNER, f"/approve {code}")

    owner = await texts_to(fake, OWNER, 2)
    assert owner[-1].startswith(f"Approved Discord sender {ALICE}")
    assert (await texts_to(fake, ALICE, 2))[1] == (
        "You're approved. Send a message to start chatting."
    )
    fake.dm(ALICE, "what's *the* weather?")
    assert (await texts_to(fake, ALICE, 3))[2] == "what's *the* weather?"


async def test_app_owner_approves_by_slash_command(fake, app):
    code = await pair(fake)
    fake.slash(OWNER, "approve", {"code": code})

    await fake.wait_until(lambda: app.pairing.is_allowed("discord", ALICE))
    await fake.wait_until(lambda: any(m["via"] == "interaction" for m in fake.sent))
    [answer] = [m for m in fake.sent if m["via"] == "interaction"]
    assert displayed(answer["content"]).startswith(f"Approved Discord sender {ALICE}")
    assert (await texts_to(fake, ALICE, 2))[1].startswith("You're approved.")
    fake.slash(OWNER, "pending")
    await fake.wait_until(lambda: sum(m["via"] == "interaction" for m in fake.sent) == 2)
    assert fake.texts_to(OWNER)[-1] == "Nothing is pending."


async def test_app_owner_approves_by_button_and_the_notice_is_edited(fake, app):
    await pair(fake)
    sent = await notice(fake)

    fake.press_button(OWNER, sent["message_id"], label="Approve")
    await fake.wait_until(lambda: len(fake.edits) == 1)

    assert displayed(fake.edits[0]["content"]).startswith(f"Approved Discord sender {ALICE}")
    assert fake.buttons(sent["message_id"]) == []
    assert app.pairing.is_allowed("discord", ALICE)
    fake.dm(ALICE, "hello again")
    assert (await texts_to(fake, ALICE, 3))[2] == "hello again"

    code = await pair(fake, BOB, "Bob")  # approved by text: its notice keeps its buttons
    fake.dm(OWNER, f"/approve {code}")
    await fake.wait_until(lambda: app.pairing.is_allowed("discord", BOB))
    fake.press_button(OWNER, (await notice(fake, 2))["message_id"], label="Approve")
    await fake.wait_until(lambda: len(fake.edits) == 2)
    assert fake.edits[1]["content"] == "This request was already handled; nothing changed."


async def test_app_non_owner_approvals_change_nothing(fake, app):
    code = await pair(fake)
    sent = await notice(fake)

    fake.dm(MALLORY, f"/approve {code}", name="Mallory")  # text: a stranger's message
    fake.slash(MALLORY, "approve", {"code": code})  # slash: the same
    fake.press_button(MALLORY, sent["message_id"], label="Approve")  # forged button press
    fake.guild_message(MALLORY, f"/approve {code}")
    fake.guild_message(OWNER, f"/approve {code}")  # even the owner, outside the DM
    await fake.wait_until(lambda: len(fake.texts_to(MALLORY)) >= 1)
    await settle(0.4)

    assert not app.pairing.is_allowed("discord", ALICE)
    assert not app.pairing.is_allowed("discord", MALLORY)
    assert {r.id for r in app.pairing.pending()} == {ALICE, MALLORY}
    assert fake.edits == []
    assert fake.messages_in("300000000000000002") == []
    assert all("pairing code" in t for t in fake.texts_to(MALLORY))


async def test_app_drop_and_resume_handles_each_message_once(fake, app):
    code = await pair(fake)
    fake.dm(OWNER, f"/approve {code}")
    await fake.wait_until(lambda: app.pairing.is_allowed("discord", ALICE))
    fake.dm(ALICE, "first")
    await texts_to(fake, ALICE, 3)
    fake.replay_overlap = 10

    await fake.drop_connection(4000)
    fake.dm(ALICE, "second")
    await fake.wait_until(lambda: len(fake.resumes) == 1)
    await texts_to(fake, ALICE, 4)
    await settle(0.3)

    assert fake.replayed
    assert fake.texts_to(ALICE)[2:] == ["first", "second"]
    assert sum(t.startswith("Approved") for t in fake.texts_to(OWNER)) == 1


OWNER2 = "190000000000000012"


async def test_app_an_owner_discord_will_not_dm_is_logged_and_told_once_in_another_owner_chat(
    fake, state_dir, fake_clock, caplog
):
    """Discord refuses every DM to an owner who closed them (50007): each lost notice is one
    clear warning, and the owners hear of it once, in the owner chat notices still reach;
    once a notice gets through again, a new refusal is news again."""
    caplog.set_level(logging.WARNING, logger="bot.runtime.notices")
    fake.user(OWNER2, "Second owner")
    fake.reach(OWNER, accepts_dms=False)
    config = make_config(fake, OWNER, OWNER2, max_pending_per_provider=5)

    def told() -> list[str]:
        return [t for t in fake.texts_to(OWNER2) if t.startswith("Notices cannot reach")]

    def notices_to(user: str) -> int:
        return sum(t.startswith("New pairing request") for t in fake.texts_to(user))

    async with app_running(config, state_dir, fake_clock):
        await pair(fake)
        await pair(fake, BOB, "Bob")
        await fake.wait_until(lambda: notices_to(OWNER2) == 2)

        assert fake.texts_to(OWNER) == []
        assert [r["code"] for r in fake.refused] == [50007, 50007]
        [first] = told()
        assert first.startswith(f"Notices cannot reach the Discord owner {OWNER}: ")
        assert f"user {OWNER} (error 50007" in first
        lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(lines) == 2
        assert all(
            line.startswith(f"could not reach owner {OWNER} on discord: ") and "50007" in line
            for line in lines
        )

        fake.reach(OWNER)  # DMs open again: the next notice reaches them, nobody is told
        await pair(fake, MALLORY, "Mallory")
        await fake.wait_until(lambda: notices_to(OWNER) == 1 and notices_to(OWNER2) == 3)
        fake.reach(OWNER, shares_server=False)  # they left the server: news again
        await pair(fake, OTHER, "Other")
        await fake.wait_until(lambda: notices_to(OWNER2) == 4 and len(told()) == 2)

    assert "error 50278" in told()[1]
    assert notices_to(OWNER) == 1
