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
from providers.signal.doctor import RECEIVE_MODE_NOTE
from providers.signal.fake import FakeSignalDaemon
from providers.signal.provider import SignalProvider, SignalRpcError
from tests.e2e.support import app_config, app_running, code_in, settle, texts
from tests.helpers import APPROVE, Inbox
from tests.process import pairbot_exits, write_config

pytestmark = pytest.mark.e2e

ALICE = "a11ce000-0000-4000-8000-000000000001"
BOB = "b0b00000-0000-4000-8000-000000000002"
MALLORY = "3a110000-0000-4000-8000-000000000666"
OWNER = "0a11ce00-0000-4000-8000-00000000000a"
GROUP = "c2lnbmFsLWdyb3VwLWlkLWJhc2U2NA=="
OTHER_NUMBER = "+15550100001"


def make_fake(_clock: Clock) -> FakeSignalDaemon:
    # The daemon as the guide says to run it; on the real clock, as the provider's edit window.
    return FakeSignalDaemon(keepalive=0.2, receive_mode="on-connection")


def make_provider(fake: FakeSignalDaemon, **kwargs: Any) -> SignalProvider:
    options = {"account": fake.account, "reconnect_min": 0.05, "reconnect_max": 0.2, **kwargs}
    return SignalProvider(http_url=fake.base_url, **options)


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


async def test_receipts_typing_reactions_edits_deletes_and_strangers_without_an_aci_are_ignored(
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
    fake.push({**base, "timestamp": 8, "dataMessage": {"timestamp": 8, "message": None}})
    fake.push(
        {
            **base,
            "timestamp": 9,
            "dataMessage": {"timestamp": 9, "message": None, "remoteDelete": {"timestamp": 8}},
        }
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


async def test_a_photo_file_or_sticker_without_text_is_one_inbound_with_media(
    fake, running, inbox
):
    fake.attachment(ALICE, name="Alice")
    fake.attachment(BOB, caption="my cv", content_type="application/pdf")
    fake.sticker(MALLORY)
    fake.attachment(ALICE, content_type="audio/aac")  # a voice note
    fake.dm(ALICE, "sentinel")

    items = await inbox.wait(5)

    assert [(i.sender_id, i.chat_kind, i.text, i.media) for i in items] == [
        (ALICE, ChatKind.DM, "", True),
        (BOB, ChatKind.DM, "my cv", True),
        (MALLORY, ChatKind.DM, "", True),
        (ALICE, ChatKind.DM, "", True),
        (ALICE, ChatKind.DM, "sentinel", False),
    ]
    assert items[0].sender_name == "Alice"


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
        ("version", {}),
        ("listAccounts", {}),  # at start: which accounts the daemon serves
        ("send", {"account": fake.account, "recipient": [ALICE], "message": text}),
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
    async with FakeSignalDaemon(multi_account=True, others=[OTHER_NUMBER]) as fake:
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


async def test_on_connection_a_daemon_restart_or_a_dropped_stream_loses_nothing(
    fake, running, inbox
):
    fake.dm(ALICE, "one")
    await inbox.wait()

    await fake.go_down()
    fake.dm(ALICE, "two, sent while the daemon was down")
    await settle(0.15)  # the provider is retrying against a closed port
    await fake.come_up()  # receives nothing until a stream subscribes
    await inbox.wait(2)

    await fake.drop_streams()
    fake.dm(BOB, "three, sent while no stream was open")
    await inbox.wait(3)
    fake.dm(BOB, "four")
    await inbox.wait(4)

    assert inbox.texts == [
        "one",
        "two, sent while the daemon was down",
        "three, sent while no stream was open",
        "four",
    ]
    assert fake.unseen == []


async def test_on_start_what_arrives_while_no_stream_is_open_is_lost(inbox):
    """signal-cli's default: the daemon receives and acknowledges messages from its start,
    whether a stream is open or not (so the guide requires on-connection)."""
    async with FakeSignalDaemon(keepalive=0.2) as fake:
        provider = make_provider(fake)
        await provider.start(inbox)
        try:
            await fake.go_down()
            down = fake.dm(ALICE, "sent while the daemon was down")
            await fake.come_up()  # takes it at once, before any stream is back
            await fake.drop_streams()
            blip = fake.dm(ALICE, "sent while no stream was open")
            await FakeSignalDaemon.wait_until(lambda: fake.streams == 1)
            fake.dm(BOB, "sentinel")
            await inbox.wait()
        finally:
            await provider.stop()
    assert inbox.texts == ["sentinel"]
    assert fake.unseen == [down, blip]


@pytest.mark.parametrize(
    ("mode", "kept"),
    [("on-connection", True), ("on-start", False)],
    ids=["on-connection", "on-start"],
)
async def test_a_dm_sent_while_pairbot_is_stopped_is_kept_only_on_connection(inbox, mode, kept):
    async with FakeSignalDaemon(keepalive=0.05, receive_mode=mode) as fake:
        provider = make_provider(fake)
        await provider.start(inbox)
        fake.dm(ALICE, "before")
        await inbox.wait()
        await provider.stop()
        await FakeSignalDaemon.wait_until(lambda: fake.streams == 0)  # its keep-alives failed

        stopped = fake.dm(ALICE, "while pairbot was stopped")
        await provider.start(inbox)
        try:
            fake.dm(BOB, "sentinel")
            await FakeSignalDaemon.wait_until(lambda: "sentinel" in inbox.texts)
        finally:
            await provider.stop()
    if kept:
        assert inbox.texts == ["before", "while pairbot was stopped", "sentinel"]
    else:
        assert inbox.texts == ["before", "sentinel"]
        assert fake.unseen == [stopped]


async def test_a_dm_before_the_daemon_notices_the_closed_stream_is_lost_even_on_connection(
    inbox,
):
    """The daemon learns a stream is gone only from a write that fails, its second over TCP
    (what the guide says of a restart of pairbot)."""
    async with FakeSignalDaemon(keepalive=30, receive_mode="on-connection") as fake:
        provider = make_provider(fake)
        await provider.start(inbox)
        await provider.stop()
        first = fake.dm(ALICE, "right after the stop")
        await FakeSignalDaemon.wait_until(lambda: fake.written)
        assert fake.streams == 1  # a write went into the closed connection: not noticed yet
        second = fake.dm(ALICE, "still before it noticed")
        await FakeSignalDaemon.wait_until(lambda: fake.streams == 0)
        fake.dm(ALICE, "after it noticed")
        await provider.start(inbox)
        try:
            await inbox.wait()
        finally:
            await provider.stop()
    assert inbox.texts == ["after it noticed"]
    assert fake.unseen == [first, second]


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
            await FakeSignalDaemon.wait_until(lambda: quiet.opened >= 2)
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


@pytest.mark.parametrize("account", [OWNER, "15550100000", "+1 555 010 0000", "+0555010000"])
def test_an_account_that_is_not_the_bots_number_is_refused_in_one_line(account) -> None:
    """signal-cli names the account by its number in every event (``account``), so nothing
    else can be matched to it."""
    with pytest.raises(ConfigError) as refused:
        SignalProvider(account=account)

    assert str(refused.value).startswith(
        f"providers.signal: account: not a phone number with its country code: {account!r}"
    )
    assert "\n" not in str(refused.value)


async def test_a_multi_account_daemon_that_does_not_serve_the_account_refuses_start(inbox):
    async with FakeSignalDaemon(multi_account=True, others=[OTHER_NUMBER]) as fake:
        provider = make_provider(fake, account="+15550199999")

        with pytest.raises(ConfigError) as refused:
            await provider.start(inbox)

        assert not provider.running
        assert fake.opened == 0
    assert str(refused.value).startswith(
        f"providers.signal: account: the signal-cli daemon at {fake.base_url} serves "
        f"{fake.account}, {OTHER_NUMBER}, not +15550199999"
    )


async def test_a_single_account_daemon_serving_another_number_is_the_bots_number(inbox, caplog):
    """A daemon started with ``-a`` serves that account whatever is asked, does not say which
    (``listAccounts`` is -32601) and names it by its number in every event."""
    async with FakeSignalDaemon(receive_mode="on-connection") as fake:
        provider = make_provider(fake, account="+15550199999")
        await provider.start(inbox)
        try:
            fake.dm(ALICE, "to the daemon's number")
            fake.own_message("from the daemon's number")
            fake.dm(BOB, "again")
            await inbox.wait(2)
            await settle(0.1)
            await provider.send(ALICE, "reply")
        finally:
            await provider.stop()
    assert inbox.texts == ["to the daemon's number", "again"]
    assert fake.messages_to(ALICE) == ["reply"]
    [warning] = [r for r in caplog.records if "the signal-cli daemon serves" in r.getMessage()]
    assert warning.getMessage() == (
        f"signal: the signal-cli daemon serves {fake.account}, not +15550199999: its messages "
        f"are handled as the bot's (set providers.signal.account to {fake.account})"
    )


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
        async with session.post(rpc, data=b"{}") as untyped:
            assert untyped.status == 415
        listing = {"jsonrpc": "2.0", "method": "listAccounts", "id": 2}
        async with session.post(rpc, json=listing) as single:
            assert (await single.json())["error"]["code"] == -32601  # started with -a
        async with session.post(rpc, json={"jsonrpc": "2.0", "method": "version"}) as note:
            assert note.status == 201
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


# -- pairbot doctor: one short request to the configured daemon ----------------------------


async def doctor(state_dir: Path, block: dict[str, Any]) -> tuple[int, list[str]]:
    """``pairbot doctor`` on a config holding ``block`` as ``providers.signal``: its status
    and its lines about Signal."""
    config = {
        "state_dir": str(state_dir),
        "owners": [{"provider": "signal", "user_id": OWNER}],
        "providers": {"signal": block},
    }
    path = write_config(state_dir.parent / "pairbot.yaml", config)
    done = await pairbot_exits("--config", str(path), "doctor")
    assert done.stderr == ""
    return done.returncode, [ln for ln in done.stdout.splitlines() if "providers.signal" in ln]


async def test_doctor_asks_the_daemon_and_says_to_check_its_receive_mode(fake, state_dir):
    status, lines = await doctor(state_dir, {"http_url": fake.base_url, "account": fake.account})

    assert lines == [
        f"ok   providers.signal: signal-cli 0.13.22 at {fake.base_url} serves the one account "
        "it was started for (-a), and names it only in its messages: pairbot warns if that is "
        f"not {fake.account}",
        f"info {RECEIVE_MODE_NOTE}",
    ]
    assert status == 0
    assert [method for method, _ in fake.calls] == ["version", "listAccounts"]


async def test_doctor_fails_an_account_the_daemon_does_not_serve(state_dir):
    async with FakeSignalDaemon(multi_account=True, others=[OTHER_NUMBER]) as fake:
        status, lines = await doctor(
            state_dir, {"http_url": fake.base_url, "account": "+15550199999"}
        )

    assert lines[0] == (
        f"FAIL providers.signal: account: the signal-cli daemon at {fake.base_url} serves "
        f"{fake.account}, {OTHER_NUMBER}, not +15550199999"
    )
    assert status == 1


async def test_doctor_says_in_one_line_that_the_daemon_is_down(fake, state_dir):
    await fake.go_down()
    status, lines = await doctor(state_dir, {"http_url": fake.base_url, "account": fake.account})
    await fake.come_up()

    assert lines[0].startswith(
        f"FAIL providers.signal: no signal-cli daemon answers at {fake.base_url} "
        "(ClientConnectorError): `pairbot run` would stop there"
    )
    assert lines[1:] == [f"info {RECEIVE_MODE_NOTE}"]
    assert status == 1


async def test_doctor_fails_an_account_that_is_not_a_number_without_asking(fake, state_dir):
    status, lines = await doctor(state_dir, {"http_url": fake.base_url, "account": OWNER})

    assert lines == [
        f"FAIL providers.signal: account: not a phone number with its country code: '{OWNER}' "
        "(the number the bot is registered with in signal-cli, e.g. +15551234567: signal-cli "
        "names the account by its number)"
    ]
    assert status == 1
    assert fake.calls == []


# -- the whole app -------------------------------------------------------------------------


@pytest.fixture
async def daemon(fake_clock: FakeClock) -> AsyncIterator[FakeSignalDaemon]:
    async with FakeSignalDaemon(
        clock=fake_clock, keepalive=0.5, receive_mode="on-connection"
    ) as fake:
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
    before = daemon.dm(ALICE, "before the restart")
    await texts_to(daemon, ALICE, 3)

    await daemon.go_down()
    daemon.dm(ALICE, "while the daemon was down")
    daemon.dm(BOB, "a stranger while it was down", name="Bob")
    await settle(0.3)
    await daemon.come_up()  # on-connection: they waited on Signal's server
    daemon.replay(before)  # the server sends again what the daemon did not acknowledge
    await texts_to(daemon, ALICE, 4)
    await texts_to(daemon, BOB, 1)
    await settle(0.5)

    assert daemon.messages_to(ALICE)[2:] == ["before the restart", "while the daemon was down"]
    assert len(daemon.messages_to(BOB)) == 1
    assert len(daemon.messages_to(OWNER)) == 3  # notice, approval, Bob's notice: once each
    assert {r.id for r in app.pairing.pending()} == {BOB}


async def test_app_a_strangers_photo_gets_a_code_and_is_not_passed_on(daemon, app):
    daemon.attachment(ALICE, name="Alice")

    [reply] = await texts_to(daemon, ALICE, 1)
    [notice] = await texts_to(daemon, OWNER, 1)

    code = code_in(reply)
    assert f"/approve {code}" in notice
    assert [r.id for r in app.pairing.pending()] == [ALICE]
