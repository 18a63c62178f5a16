"""SignalProvider against the loopback signal-cli daemon fake: what is Signal's own (what every
provider does is in tests/providers/test_contract.py), and inside the whole app."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.core.clock import Clock, FakeClock, SystemClock
from bot.core.errors import ConfigError
from bot.core.models import ChatKind
from bot.core.platforms import SignalConfig
from bot.runtime.app import App
from providers import load_provider_class
from providers.signal.fake import FakeSignalDaemon
from providers.signal.provider import SignalProvider, SignalRpcError
from tests.e2e.support import app_config, app_running, code_in, settle, texts
from tests.helpers import APPROVE, Inbox

pytestmark = pytest.mark.e2e

ALICE = "a11ce000-0000-4000-8000-000000000001"
BOB = "b0b00000-0000-4000-8000-000000000002"
MALLORY = "3a110000-0000-4000-8000-000000000666"
OWNER = "0a11ce00-0000-4000-8000-00000000000a"
GROUP = "c2lnbmFsLWdyb3VwLWlkLWJhc2U2NA=="


def make_fake(_clock: Clock) -> FakeSignalDaemon:
    return FakeSignalDaemon(keepalive=0.2)  # on the real clock, which the provider's floor reads


def make_provider(fake: FakeSignalDaemon, **kwargs: Any) -> SignalProvider:
    return SignalProvider(
        http_url=fake.base_url,
        account=fake.account,
        reconnect_min=0.05,
        reconnect_max=0.2,
        **kwargs,
    )


# -- provider alone: inbound ---------------------------------------------------------------


async def test_a_hidden_number_changes_nothing_and_the_aci_is_lowercased(fake, running, inbox):
    fake.dm(ALICE.upper(), "no number", name="Alice")
    fake.dm(ALICE, "new number", name="Alice", number="+15559999999")

    first, second = await inbox.wait(2)

    assert (first.sender_id, first.chat_id, first.meta) == (ALICE, ALICE, {"name": "Alice"})
    assert second.sender_id == ALICE
    assert second.meta["number"] == "+15559999999"


async def test_group_message_arrives_as_group(fake, running, inbox):
    fake.group_message(GROUP, ALICE, "hi all", name="Alice")

    [inbound] = await inbox.wait()

    assert (inbound.chat_kind, inbound.chat_id, inbound.sender_id) == (
        ChatKind.GROUP,
        f"group:{GROUP}",
        ALICE,
    )


async def test_receipts_typing_reactions_edits_and_strangers_without_an_aci_are_ignored(
    fake, running, inbox
):
    sent = await running.send(ALICE, "hi")
    fake.receipt(ALICE, [int(sent)])
    fake.receipt(ALICE, [int(sent)], kind="READ")
    fake.typing(ALICE)
    base = {"sourceUuid": ALICE, "sourceNumber": None, "sourceName": "Alice", "sourceDevice": 1}
    fake.push(
        {
            **base,
            "timestamp": 1,
            "dataMessage": {
                "timestamp": 1,
                "message": None,
                "reaction": {"emoji": "👍", "targetTimestamp": int(sent)},
            },
        }
    )
    fake.push(
        {
            **base,
            "timestamp": 3,
            "editMessage": {
                "targetSentTimestamp": 9,
                "dataMessage": {"timestamp": 3, "message": "edited"},
            },
        }
    )
    fake.push({**base, "timestamp": 4, "storyMessage": {"textAttachment": {"text": "story"}}})
    fake.push({**base, "timestamp": 5, "callMessage": {"offerMessage": {"id": 1}}})
    fake.push(
        {
            "source": "+15550000001",
            "sourceNumber": "+15550000001",
            "sourceUuid": None,
            "timestamp": 6,
            "dataMessage": {"timestamp": 6, "message": "no aci"},
        }
    )
    fake.push(
        {
            "sourceServiceId": "PNI:" + BOB,
            "timestamp": 7,
            "dataMessage": {"timestamp": 7, "message": "pni only"},
        }
    )
    fake.push(
        {**base, "timestamp": 8, "dataMessage": {"timestamp": 8, "message": "other"}},
        account="+15557777777",
    )
    fake.dm(ALICE, "sentinel")

    await inbox.wait()
    await settle(0.1)  # a wrongly delivered envelope would have come before the sentinel

    assert inbox.texts == ["sentinel"]


async def test_the_json_rpc_receive_notification_shapes_are_read_too(fake, running, inbox):
    envelope = {
        "sourceUuid": ALICE,
        "sourceName": "Alice",
        "timestamp": 11,
        "dataMessage": {"timestamp": 11, "message": "notification"},
    }
    fake.replay(
        {
            "jsonrpc": "2.0",
            "method": "receive",
            "params": {"envelope": envelope, "account": fake.account},
        }
    )
    subscribed = {
        **envelope,
        "timestamp": 12,
        "dataMessage": {"timestamp": 12, "message": "subscription"},
    }
    fake.replay(
        {
            "jsonrpc": "2.0",
            "method": "receive",
            "params": {"subscription": 0, "result": {"envelope": subscribed}},
        }
    )

    await inbox.wait(2)

    assert inbox.texts == ["notification", "subscription"]


async def test_source_service_id_is_the_aci_when_source_uuid_is_absent(fake, running, inbox):
    fake.push(
        {
            "sourceServiceId": BOB,
            "sourceName": "Bob",
            "timestamp": 21,
            "dataMessage": {"timestamp": 21, "message": "hi"},
        }
    )

    [inbound] = await inbox.wait()

    assert (inbound.sender_id, inbound.chat_kind) == (BOB, ChatKind.DM)


# -- provider alone: outbound --------------------------------------------------------------


async def test_send_is_one_json_rpc_send_of_plain_text_buttons_ignored(fake, running):
    text = "<b>*not bold*</b> /approve ABCD2345"

    message_id = await running.send(ALICE, text, buttons=[APPROVE])

    assert fake.sent == [
        {
            "recipient": [ALICE],
            "groupId": None,
            "message": text,
            "timestamp": int(message_id),
            "editTimestamp": None,
        }
    ]
    assert fake.calls == [
        ("send", {"account": fake.account, "recipient": [ALICE], "message": text})
    ]
    assert fake.messages_to(ALICE) == [text]


async def test_send_to_a_group_chat_id_uses_the_group_id(fake, running):
    await running.send(f"group:{GROUP}", "to the group")

    assert fake.messages_to_group(GROUP) == ["to the group"]


async def test_a_refused_send_raises_with_the_daemons_code(fake, running):
    fake.fail_next_sends(1)

    with pytest.raises(SignalRpcError) as raised:
        await running.send(ALICE, "x")

    assert raised.value.code == -1


async def test_edit_of_an_old_or_unknown_message_or_a_refused_edit_sends_a_new_one(fake):
    clock = FakeClock(SystemClock().now())
    provider = make_provider(fake, clock=clock)
    await provider.start(Inbox())
    try:
        message_id = await provider.send(OWNER, "Approve Alice?")
        clock.advance(timedelta(days=2))
        await provider.edit(OWNER, message_id, "too old to edit")
        await provider.edit(OWNER, "not-a-timestamp", "unknown")
        clock.advance(timedelta(days=-2))
        fake.fail_next_sends(1)
        await provider.edit(OWNER, message_id, "edit refused")
    finally:
        await provider.stop()
    assert [(m["message"], m["editTimestamp"]) for m in fake.sent[1:]] == [
        ("too old to edit", None),
        ("unknown", None),
        ("edit refused", None),
    ]
    assert [m for m, _ in fake.calls].count("send") == 5  # the refused edit, then a new one


async def test_multi_account_daemon_gets_the_account_on_every_call() -> None:
    async with FakeSignalDaemon(multi_account=True) as fake:
        provider = make_provider(fake)
        inbox = Inbox()
        await provider.start(inbox)
        try:
            fake.dm(ALICE, "hi")
            await inbox.wait()
            await provider.send(ALICE, "hello")
        finally:
            await provider.stop()
        assert fake.messages_to(ALICE) == ["hello"]


# -- provider alone: the daemon coming and going -------------------------------------------


async def test_a_daemon_restart_loses_nothing_and_duplicates_nothing(fake, running, inbox):
    fake.dm(ALICE, "one")
    fake.dm(BOB, "two")
    await inbox.wait(2)

    await fake.go_down()
    fake.dm(ALICE, "three, sent while the daemon was down")
    await settle(0.15)  # the provider is retrying against a closed port
    await fake.come_up()  # a new run that still holds "one" and "two"
    await inbox.wait(3)
    await settle(0.2)

    assert inbox.texts == ["one", "two", "three, sent while the daemon was down"]
    assert len(fake.connects) >= 2
    assert fake.connects[-1] is not None
    assert fake.connects[-1].startswith("1-")

    fake.drop_streams()  # a blip within the same run: only what was missed comes back
    await FakeSignalDaemon.wait_until(lambda: fake.streams == 1 and len(fake.connects) >= 3)
    fake.dm(BOB, "four")
    await inbox.wait(4)
    await settle(0.2)

    assert inbox.texts == ["one", "two", "three, sent while the daemon was down", "four"]


async def test_reopened_before_any_event_it_gets_what_was_missed_but_no_history(
    fake, provider, inbox
):
    an_hour_ago = int(SystemClock().now().timestamp() * 1000) - 3_600_000
    fake.dm(ALICE, "history: handled by an earlier pairbot", timestamp=an_hour_ago)
    await provider.start(inbox)  # a first stream gets no kept events
    await fake.go_down()
    fake.dm(BOB, "sent while the daemon was down")
    await fake.come_up(new_run=False)  # the provider has no event id to offer

    await inbox.wait()
    await settle(0.2)

    assert fake.connects[-1] == "0"
    assert inbox.texts == ["sent while the daemon was down"]


async def test_restarts_during_a_burst_deliver_each_message_exactly_once(fake, running, inbox):
    expected = []
    for round_ in range(3):
        for i in range(5):
            text = f"r{round_} m{i}"
            expected.append(text)
            fake.dm(ALICE if i % 2 else BOB, text)
        await fake.restart(down_for=0.05)
    await inbox.wait(len(expected))
    await settle(0.2)

    assert inbox.texts == expected


async def test_a_send_while_the_daemon_restarts_waits_for_it(fake, running):
    await fake.go_down()
    sending = asyncio.create_task(running.send(ALICE, "after the restart"))
    await settle(0.1)
    await fake.come_up()

    message_id = await sending

    assert fake.messages_to(ALICE) == ["after the restart"]
    assert fake.sent[-1]["timestamp"] == int(message_id)


async def test_a_daemon_that_stays_down_fails_sends_after_a_few_tries(fake, running):
    await fake.go_down()
    with pytest.raises(aiohttp.ClientConnectorError):
        await running.send(ALICE, "nobody home")
    await fake.come_up()


async def test_a_silent_stream_is_reopened(fake, inbox):
    async with FakeSignalDaemon(keepalive=30) as quiet:
        provider = make_provider(quiet, idle_timeout=0.2)
        await provider.start(inbox)
        try:
            await FakeSignalDaemon.wait_until(lambda: len(quiet.connects) >= 2)
            quiet.dm(ALICE, "still here")
            await inbox.wait()
        finally:
            await provider.stop()
    assert inbox.texts == ["still here"]


# -- provider alone: lifecycle and hygiene -------------------------------------------------


async def test_a_daemon_restart_logs_no_message_text(fake, running, inbox, caplog):
    caplog.set_level(logging.DEBUG)
    fake.dm(ALICE, "secret text 1234")
    await inbox.wait()
    await fake.restart(down_for=0.05)
    fake.dm(ALICE, "secret text 3456")
    await inbox.wait(2)
    await running.stop()

    assert "event stream reopened" in caplog.text
    assert "secret text" not in caplog.text


async def test_an_unreachable_daemon_fails_start_with_a_clear_error(fake, inbox):
    await fake.go_down()
    provider = make_provider(fake)

    with pytest.raises(ConfigError, match="cannot open the signal-cli event stream"):
        await provider.start(inbox)

    assert not provider.running
    await provider.stop()
    await fake.come_up()


def test_bad_config_is_refused() -> None:
    with pytest.raises(ConfigError, match="account is empty"):
        SignalProvider(account=" ")
    with pytest.raises(ConfigError, match="http_url"):
        SignalProvider(account="+15550100000", http_url="127.0.0.1:8080")


async def test_the_registry_and_the_config_block_build_the_provider(fake) -> None:
    assert load_provider_class("signal") is SignalProvider
    block = SignalConfig.model_validate(
        {"http_url": fake.base_url, "account": fake.account, "allow_from": [ALICE]}
    )
    provider = SignalProvider(**block.provider_kwargs())
    assert (provider.name, provider.bare_commands, provider.account) == (
        "signal",
        False,
        fake.account,
    )


async def test_the_fake_answers_like_signal_cli(fake) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{fake.base_url}/api/v1/check") as check:
            assert check.status == 200
        rpc = f"{fake.base_url}/api/v1/rpc"
        async with session.post(rpc, json={"jsonrpc": "2.0"}) as bad:
            assert (await bad.json())["error"]["code"] == -32600
        async with session.post(rpc, json={"jsonrpc": "2.0", "method": "nope", "id": 1}) as r:
            assert (await r.json())["error"] == {
                "code": -32601,
                "message": "Method not implemented",
                "data": None,
            }
        send = {
            "jsonrpc": "2.0",
            "method": "send",
            "id": 4,
            "params": {"recipient": ["+15550199999"], "message": "MESSAGE"},
        }
        async with session.post(rpc, json=[send, {**send, "id": 5}]) as batch:
            answers = await batch.json()
    assert [a["id"] for a in answers] == [4, 5]
    assert all(isinstance(a["result"]["timestamp"], int) for a in answers)


# -- the whole app -------------------------------------------------------------------------


@pytest.fixture
async def daemon(fake_clock: FakeClock) -> AsyncIterator[FakeSignalDaemon]:
    async with FakeSignalDaemon(clock=fake_clock, keepalive=0.5) as fake:
        yield fake


@pytest.fixture
async def app(
    daemon: FakeSignalDaemon, state_dir: Path, fake_clock: FakeClock
) -> AsyncIterator[App]:
    block = {"http_url": daemon.base_url, "account": daemon.account}
    async with app_running(app_config("signal", OWNER, block), state_dir, fake_clock) as started:
        yield started


async def texts_to(fake: FakeSignalDaemon, user: str, count: int) -> list[str]:
    return await texts(lambda: fake.messages_to(user), count)


async def pair(fake: FakeSignalDaemon, user: str, name: str = "Alice") -> str:
    fake.dm(user, "please run rm -rf", name=name, number="+15550123456")
    return code_in((await texts_to(fake, user, 1))[0])


async def test_app_stranger_gets_a_code_and_the_owner_approves_by_command(daemon, app):
    code = await pair(daemon, ALICE)
    [reply] = daemon.messages_to(ALICE)
    assert f"Your Signal id: {ALICE}" in reply
    assert "+15550123456" not in reply
    assert OWNER not in reply
    [notice] = await texts_to(daemon, OWNER, 1)
    assert f"Sender id: {ALICE}" in notice
    assert "Name (given by the sender, unverified): Alice" in notice
    assert f"/approve {code}" in notice
    await settle(0.2)
    assert not any("rm -rf" in m["message"] for m in daemon.sent)

    daemon.dm(OWNER, f"/approve {code[:4].lower()}-{code[4:].lower()}", name="Owner")
    owner = await texts_to(daemon, OWNER, 2)
    assert owner[1].startswith(f"Approved Signal sender {ALICE} (Alice")
    alice = await texts_to(daemon, ALICE, 2)
    assert alice[1] == "You're approved. Send a message to start chatting."
    assert app.pairing.is_allowed("signal", ALICE)

    daemon.dm(ALICE, "what's the weather?", name="Alice")
    assert (await texts_to(daemon, ALICE, 3))[2] == "what's the weather?"


async def test_app_non_owner_approve_changes_nothing(daemon, app):
    code = await pair(daemon, ALICE)
    daemon.dm(MALLORY, f"/approve {code}", name="Mallory")
    mallory = await texts_to(daemon, MALLORY, 1)
    assert "pairing code" in mallory[0]
    await settle(0.2)
    assert not app.pairing.is_allowed("signal", ALICE)
    assert not app.pairing.is_allowed("signal", MALLORY)
    assert {r.id for r in app.pairing.pending()} == {ALICE, MALLORY}


async def test_app_groups_sync_messages_receipts_and_typing_change_nothing(daemon, app):
    code = await pair(daemon, ALICE)
    await texts_to(daemon, OWNER, 1)
    daemon.group_message(GROUP, MALLORY, "hello group")
    daemon.group_message(GROUP, OWNER, f"/approve {code}")
    daemon.group_message(GROUP, BOB, "a stranger in a group")
    daemon.sync_message(f"/approve {code}", destination=OWNER)  # from the bot's own devices
    daemon.own_message(f"/approve {code}")
    daemon.receipt(OWNER, [daemon.sent[-1]["timestamp"]], kind="READ")
    daemon.typing(BOB)
    await settle(0.5)

    assert [r.id for r in app.pairing.pending()] == [ALICE]
    assert not app.pairing.is_allowed("signal", ALICE)
    assert daemon.messages_to_group(GROUP) == []
    assert daemon.messages_to(BOB) == []
    assert len(daemon.messages_to(OWNER)) == 1  # the notice, nothing since


async def test_app_daemon_restart_loses_and_duplicates_nothing(daemon, app):
    code = await pair(daemon, ALICE)
    daemon.dm(OWNER, f"/approve {code}")
    await texts_to(daemon, ALICE, 2)
    daemon.dm(ALICE, "before the restart")
    await texts_to(daemon, ALICE, 3)

    await daemon.go_down()
    daemon.dm(ALICE, "while the daemon was down")
    daemon.dm(BOB, "a stranger while it was down", name="Bob")
    await settle(0.3)
    await daemon.come_up()  # replays everything it kept, old and new
    await texts_to(daemon, ALICE, 4)
    await texts_to(daemon, BOB, 1)
    await settle(0.5)

    assert daemon.messages_to(ALICE)[2:] == ["before the restart", "while the daemon was down"]
    assert len(daemon.messages_to(BOB)) == 1
    assert len(daemon.messages_to(OWNER)) == 3  # notice, approval, Bob's notice: once each
    assert {r.id for r in app.pairing.pending()} == {BOB}
