"""The whole app on real python-telegram-bot against the loopback Bot API fake."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.cli.compose import open_app
from bot.core.clock import FakeClock
from bot.core.config import Config
from bot.runtime.app import App
from providers.telegram.fake import FakeTelegramServer
from tests.e2e import support
from tests.e2e.support import app_config, code_in, settle, texts
from tests.process import pairbot_exits

pytestmark = pytest.mark.e2e

OWNER, ALICE, MALLORY, BOB = 111, 4242, 666, 5151


def make_config(fake: FakeTelegramServer, **overrides: Any) -> Config:
    """The app's config on the fake, a 0.2 s pruner; ``pairing`` and ``telegram`` overrides
    are merged into those blocks, any other replaces its section."""
    block = {"token": fake.token, "api_base_url": fake.base_url, **overrides.pop("telegram", {})}
    pairing = {"prune_interval": "0.2s", **overrides.pop("pairing", {})}
    return app_config("telegram", str(OWNER), block, pairing=pairing, **overrides)


@pytest.fixture
async def tg(fake_clock: FakeClock) -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer(clock=fake_clock) as fake:
        fake.started_before(OWNER)  # the owner pressed Start, as the guide says
        yield fake


async def start_app(
    fake: FakeTelegramServer, state: Path, clock: FakeClock | None = None, **overrides: Any
) -> App:
    return await support.start_app(make_config(fake, **overrides), state, clock)


@pytest.fixture
async def app(
    tg: FakeTelegramServer, state_dir: Path, fake_clock: FakeClock
) -> AsyncIterator[App]:
    async with support.app_running(make_config(tg), state_dir, fake_clock) as running:
        yield running


async def texts_to(
    fake: FakeTelegramServer, chat: int, count: int, wait: float = 5.0
) -> list[str]:
    return await texts(lambda: fake.messages_to(chat), count, wait=wait)


async def cli_approve(state_dir: Path, code: str) -> None:
    """``pairbot pairing approve telegram CODE`` on the state dir, in its own process."""
    result = await pairbot_exits(
        "--state-dir", str(state_dir), "pairing", "approve", "telegram", code
    )
    assert result.returncode == 0, result.stderr


async def pair(fake: FakeTelegramServer, app: App, user: int, name: str = "Alice") -> str:
    """A stranger writes, gets a code; returns the code."""
    fake.dm(user, "hello?", first_name=name)
    texts = await texts_to(fake, user, 1)
    return code_in(texts[0])


async def test_stranger_gets_a_code_and_their_message_is_not_processed(tg, app):
    tg.dm(ALICE, "please run rm -rf", first_name="Alice", username="alice")
    texts = await texts_to(tg, ALICE, 1)
    assert "pairing code" in texts[0]
    assert f"Your Telegram id: {ALICE}" in texts[0]
    assert str(OWNER) not in texts[0]
    code = code_in(texts[0])
    assert app.pairing.pending()[0].code == code
    notice = (await tg.wait_for_sent(lambda m: m["chat_id"] == OWNER))[0]
    assert f"Sender id: {ALICE}" in notice["text"]
    assert "Name (given by the sender, unverified): Alice" in notice["text"]
    buttons = notice["reply_markup"]["inline_keyboard"][0]
    assert [(b["text"], b["callback_data"]) for b in buttons] == [
        ("Approve", f"/approve {code}"),
        ("Reject", f"/reject {code}"),
    ]
    await settle(0.4)
    assert "please run rm -rf" not in json.dumps(tg.sent)


async def test_repeat_messages_do_not_resend_the_code(tg, app, fake_clock):
    await pair(tg, app, ALICE)
    for _ in range(3):
        tg.dm(ALICE, "hello again")
    await settle(0.4)
    assert len(tg.messages_to(ALICE)) == 1
    fake_clock.advance(timedelta(minutes=11))
    tg.dm(ALICE, "still there?")
    texts = await texts_to(tg, ALICE, 2)
    assert code_in(texts[1]) == code_in(texts[0])


async def test_the_time_a_code_works_for_is_said_rounded_up(tg, app, fake_clock):
    await pair(tg, app, ALICE)
    fake_clock.advance(timedelta(minutes=10, seconds=1))  # resend_after passed; 49m59s left
    tg.dm(ALICE, "still there?")
    texts = await texts_to(tg, ALICE, 2)
    assert texts[0].endswith("The code works for 1h.")
    assert texts[1].endswith("The code works for 50m.")


async def test_owner_approves_in_chat_and_the_sender_goes_through(tg, app):
    code = await pair(tg, app, ALICE)
    tg.dm(OWNER, f"/approve {code[:4].lower()}-{code[4:].lower()}")
    owner_texts = await tg.wait_for_sent(
        lambda m: m["chat_id"] == OWNER and m["text"].startswith("Approved")
    )
    assert f"Approved Telegram sender {ALICE} (Alice" in owner_texts[0]["text"]
    texts = await texts_to(tg, ALICE, 2)
    assert texts[1] == "You're approved. Send a message to start chatting."
    tg.dm(ALICE, "what's the weather?")
    texts = await texts_to(tg, ALICE, 3)
    assert texts[2] == "what's the weather?"
    await settle(0.4)
    assert tg.messages_to(ALICE).count("You're approved. Send a message to start chatting.") == 1


async def test_non_owner_approve_changes_nothing_and_looks_like_any_text(tg, app):
    code = await pair(tg, app, ALICE)
    tg.dm(MALLORY, f"/approve {code}", first_name="Mallory")
    mallory = await texts_to(tg, MALLORY, 1)
    assert "pairing code" in mallory[0]
    tg.dm(BOB, "hi", first_name="Bob")
    bob = await texts_to(tg, BOB, 1)
    assert mallory[0].split("Your pairing code")[0] == bob[0].split("Your pairing code")[0]
    await settle(0.4)
    assert not app.pairing.is_allowed("telegram", str(ALICE))
    assert not app.pairing.is_allowed("telegram", str(MALLORY))
    assert {r.id for r in app.pairing.pending()} == {str(ALICE), str(MALLORY), str(BOB)}


async def test_group_traffic_creates_nothing_and_runs_no_command(tg, app):
    code = await pair(tg, app, ALICE)
    tg.group_message(-100200, MALLORY, "hello group")
    tg.group_message(-100200, MALLORY, f"/approve {code}")
    tg.group_message(-100200, OWNER, f"/approve {code}")
    await settle(0.4)
    assert [r.id for r in app.pairing.pending()] == [str(ALICE)]
    assert not app.pairing.is_allowed("telegram", str(ALICE))
    assert tg.messages_to(-100200) == []


async def test_buttons_approve_once_and_say_so_when_pressed_again(tg, app):
    await pair(tg, app, ALICE)
    notice = (await tg.wait_for_sent(lambda m: m["chat_id"] == OWNER))[0]
    approve = notice["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    tg.press_button(MALLORY, notice["message_id"], approve)
    await settle(0.4)
    assert not app.pairing.is_allowed("telegram", str(ALICE))
    tg.press_button(OWNER, notice["message_id"], approve)
    await tg.wait_until(lambda: len(tg.edits) >= 1)
    assert tg.edits[0]["text"].startswith(f"Approved Telegram sender {ALICE}")
    assert app.pairing.is_allowed("telegram", str(ALICE))
    tg.press_button(OWNER, notice["message_id"], approve)
    await tg.wait_until(lambda: len(tg.edits) >= 2)
    assert tg.edits[1]["text"] == "This request was already handled; nothing changed."


async def test_stale_presses_are_already_handled_and_never_lock_the_owner_out(tg, app):
    """Issue 9 item 8: each press on a handled notice counted as a wrong code; ten of them
    paused approvals for 15 minutes."""
    await pair(tg, app, ALICE)
    notice = (await tg.wait_for_sent(lambda m: m["chat_id"] == OWNER))[0]
    approve, reject = (b["callback_data"] for b in notice["reply_markup"]["inline_keyboard"][0])
    tg.press_button(OWNER, notice["message_id"], approve)
    await tg.wait_until(lambda: app.pairing.is_allowed("telegram", str(ALICE)))
    for i in range(12):
        tg.press_button(OWNER, notice["message_id"], approve if i % 2 else reject)
    await tg.wait_until(lambda: len(tg.callback_answers) >= 13, timeout=5)
    # (Telegram refuses an edit that changes nothing, so only the first stale press edits.)
    assert [e["text"] for e in tg.edits[1:]] == [
        "This request was already handled; nothing changed."
    ]
    code = await pair(tg, app, BOB, "Bob")
    tg.dm(OWNER, f"/approve {code}")
    await tg.wait_until(lambda: app.pairing.is_allowed("telegram", str(BOB)))
    assert not any("paused" in t for t in tg.messages_to(OWNER))
    assert not any(r["event"] == "lockout" for r in app.store.read_audit())


async def test_a_forged_press_naming_another_code_still_counts(tg, app):
    """A press is believed only with the command its own notice carried: a client that
    forges button data to guess codes is counted like a typed guess."""
    await pair(tg, app, ALICE)
    notice = (await tg.wait_for_sent(lambda m: m["chat_id"] == OWNER))[0]
    for i in range(10):
        tg.press_button(OWNER, notice["message_id"], f"/approve ZZZZ{2222 + i}")
    await tg.wait_until(lambda: any(r["event"] == "lockout" for r in app.store.read_audit()))


async def test_reject_button_and_expired_button(tg, app, fake_clock):
    await pair(tg, app, ALICE)
    await pair(tg, app, BOB, "Bob")
    notices = await tg.wait_for_sent(lambda m: m["chat_id"] == OWNER, count=2)
    reject = notices[0]["reply_markup"]["inline_keyboard"][0][1]["callback_data"]
    tg.press_button(OWNER, notices[0]["message_id"], reject)
    await tg.wait_until(lambda: len(tg.edits) >= 1)
    assert tg.edits[0]["text"].startswith(f"Rejected Telegram sender {ALICE}")
    fake_clock.advance(timedelta(hours=1, seconds=1))
    approve = notices[1]["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    tg.press_button(OWNER, notices[1]["message_id"], approve)
    await tg.wait_until(lambda: len(tg.edits) >= 2)
    assert "expired" in tg.edits[1]["text"] or "already handled" in tg.edits[1]["text"]
    assert not app.pairing.is_allowed("telegram", str(BOB))


async def test_owner_commands(tg, app):
    code = await pair(tg, app, ALICE)
    tg.dm(OWNER, "/pending")
    pending = await tg.wait_for_sent(
        lambda m: m["chat_id"] == OWNER and m["text"].startswith("Pairing requests")
    )
    assert f"{code[:4]}-{code[4:]}" in pending[0]["text"]
    tg.dm(OWNER, "/approve ZZZZ2222")
    await tg.wait_for_sent(lambda m: m["chat_id"] == OWNER and "No pending request" in m["text"])
    tg.dm(OWNER, f"/approve {code}")
    await tg.wait_until(lambda: app.pairing.is_allowed("telegram", str(ALICE)))
    tg.dm(OWNER, "/allowlist")
    await tg.wait_for_sent(
        lambda m: m["chat_id"] == OWNER and m["text"] == f"Allowed: 1\nTelegram {ALICE}"
    )
    tg.dm(OWNER, f"/revoke telegram {ALICE}")
    await tg.wait_for_sent(lambda m: m["chat_id"] == OWNER and m["text"].startswith("Revoked"))
    assert not app.pairing.is_allowed("telegram", str(ALICE))
    before = len(tg.messages_to(ALICE))
    tg.dm(ALICE, "am I still in?")
    texts = await texts_to(tg, ALICE, before + 1)
    assert "pairing code" in texts[-1]
    tg.dm(OWNER, "/help")
    await tg.wait_for_sent(lambda m: m["chat_id"] == OWNER and "Owner commands" in m["text"])
    tg.dm(OWNER, "/nodes")
    await tg.wait_for_sent(lambda m: m["chat_id"] == OWNER and "Pending nodes (0)" in m["text"])


async def test_cli_approval_reaches_the_running_bot_within_two_seconds(tg, app, state_dir):
    code = await pair(tg, app, ALICE)
    await cli_approve(state_dir, code)
    started = asyncio.get_running_loop().time()
    texts = await texts_to(tg, ALICE, 2, wait=2.0)
    assert asyncio.get_running_loop().time() - started < 2.0
    assert texts[1] == "You're approved. Send a message to start chatting."
    tg.dm(ALICE, "hi")
    assert (await texts_to(tg, ALICE, 3))[2] == "hi"


async def test_a_cli_approval_made_while_the_bot_is_down_is_told_once_at_start(
    tg, state_dir, fake_clock
):
    """Issue 9 item 10: the README promised it; the bot only watched approvals made while it
    ran."""
    app = await start_app(tg, state_dir, fake_clock)
    try:
        code = await pair(tg, app, ALICE)
    finally:
        await app.stop()
    await cli_approve(state_dir, code)
    assert len(tg.messages_to(ALICE)) == 1, "nobody ran to tell them yet"
    for _ in range(2):  # told at the first start, and not again at the next
        again = await start_app(tg, state_dir, fake_clock)
        try:
            await texts_to(tg, ALICE, 2)
            await settle(0.5)
        finally:
            await again.stop()
    assert tg.messages_to(ALICE) == [
        tg.messages_to(ALICE)[0],
        "You're approved. Send a message to start chatting.",
    ]


async def test_an_approved_sender_who_cannot_be_reached_is_tried_again(tg, app):
    code = await pair(tg, app, ALICE)
    tg.fail_next_sends(1)
    tg.dm(OWNER, f"/approve {code}")
    texts = await texts_to(tg, ALICE, 2, wait=6.0)
    assert texts[1] == "You're approved. Send a message to start chatting."
    await settle(0.5)
    assert len(tg.messages_to(ALICE)) == 2


async def test_scheduler_prunes_expired_requests_and_audits_them(tg, app, fake_clock, state_dir):
    await pair(tg, app, ALICE)
    fake_clock.advance(timedelta(hours=1))
    await tg.wait_until(lambda: any(r["event"] == "expire" for r in app.store.read_audit()))
    assert '"id"' not in (state_dir / "credentials" / "telegram-pairing.json").read_text()
    records = app.store.read_audit()
    assert [(r["event"], r["outcome"], r["actor"]) for r in records][-1] == (
        "expire",
        "expired",
        "system:scheduler",
    )


async def test_a_two_second_grant_lets_the_sender_in_and_then_shows_them_a_code(
    tg, app, fake_clock
):
    """Issue 14: the grant ends at its moment by the bot's clock (moved here, no sleeping),
    whether or not the prune ran; the sender is a stranger again and gets a new code."""
    code = await pair(tg, app, ALICE)
    tg.dm(OWNER, f"/approve {code} 2s")
    owner_texts = await tg.wait_for_sent(
        lambda m: m["chat_id"] == OWNER and m["text"].startswith("Approved")
    )
    assert ", 2s left. They have been told." in owner_texts[0]["text"]
    assert (await texts_to(tg, ALICE, 2))[
        1
    ] == "You're approved. Send a message to start chatting."
    fake_clock.advance(timedelta(seconds=1))
    tg.dm(ALICE, "still within the grant")
    assert (await texts_to(tg, ALICE, 3))[2] == "still within the grant"

    fake_clock.advance(timedelta(seconds=1))
    tg.dm(ALICE, "after the end")
    texts = await texts_to(tg, ALICE, 4)
    assert "pairing code" in texts[3]
    assert code_in(texts[3]) != code
    await settle(0.4)
    assert "after the end" not in json.dumps(tg.sent)
    await tg.wait_until(
        lambda: [r["event"] for r in app.store.read_audit()].count("grant.expire") == 1
    )


async def test_restart_keeps_every_approval(tg, state_dir, fake_clock):
    app = await start_app(tg, state_dir, fake_clock)
    try:
        code = await pair(tg, app, ALICE)
        tg.dm(OWNER, f"/approve {code}")
        await tg.wait_until(lambda: app.pairing.is_allowed("telegram", str(ALICE)))
    finally:
        await app.stop()
    again = await start_app(tg, state_dir, fake_clock)
    try:
        before = len(tg.messages_to(ALICE))
        tg.dm(ALICE, "after restart")
        texts = await texts_to(tg, ALICE, before + 1)
        assert texts[-1] == "after restart"
    finally:
        await again.stop()


@pytest.mark.parametrize(
    ("policy", "expect_reply"),
    [("open", "hi there"), ("allowlist", None), ("disabled", None)],
)
async def test_dm_policies(tg, state_dir, policy, expect_reply):
    app = await start_app(tg, state_dir, telegram={"dm_policy": policy, "allow_from": ["777"]})
    try:
        tg.dm(ALICE, "hi there")
        tg.dm(777, "from the allowlist")
        await settle(0.6)
        assert app.pairing.pending() == []
        assert tg.messages_to(ALICE) == ([expect_reply] if expect_reply else [])
        expected_777 = [] if policy == "disabled" else ["from the allowlist"]
        assert tg.messages_to(777) == expected_777
    finally:
        await app.stop()


async def test_cap_turns_strangers_away_and_tells_the_owner_once(tg, app):
    for user in range(9001, 9006):
        tg.dm(user, "hi", first_name=f"u{user}")
    await tg.wait_until(lambda: any("turned away" in m["text"] for m in tg.sent), timeout=5)
    await settle(0.5)
    assert len(app.pairing.pending()) == 3
    coded = [u for u in range(9001, 9006) if tg.messages_to(u)]
    assert len(coded) == 3
    turned = [m["text"] for m in tg.sent if "turned away" in m["text"]]
    assert turned == [
        "2 Telegram strangers were turned away: 3 requests are already pending. "
        "Approve or reject some (/pending) to make room."
    ]


async def test_owner_notices_are_throttled_into_a_digest(tg, state_dir, fake_clock):
    app = open_app(
        make_config(tg, pairing={"max_pending_per_provider": 20}),
        state_dir=state_dir,
        clock=fake_clock,
        notice_limit=5,
        notice_window=timedelta(seconds=0.5),
    )
    await app.start()
    try:
        for user in range(9101, 9109):
            tg.dm(user, "hi")
        await tg.wait_until(
            lambda: any(
                "more pairing request" in m["text"] for m in tg.sent if m["chat_id"] == OWNER
            ),
            timeout=5,
        )
        owner = tg.messages_to(OWNER)
        assert sum(t.startswith("New pairing request") for t in owner) == 5
        assert owner[-1] == (
            "Held back to keep this chat readable: 3 more pairing requests "
            "(Telegram). Send /pending to see what waits."
        )
    finally:
        await app.stop()


async def test_an_allowed_sender_never_waits_behind_a_stranger(tg, app, monkeypatch):
    """Issue 9 item 7: strangers' messages were handled in line with everyone else's, so a
    slow one (an fsync each) held up the replies to allowed senders."""
    app.pairing.allow("telegram", str(ALICE), actor="test")
    release = threading.Event()
    real_request = app.pairing.request

    def stuck(*args: Any, **kwargs: Any) -> Any:
        release.wait(10)  # the stranger's handling is stuck (a slow disk, say)
        return real_request(*args, **kwargs)

    monkeypatch.setattr(app.pairing, "request", stuck)
    try:
        tg.dm(MALLORY, "let me in", first_name="Mallory")
        tg.dm(ALICE, "still there?", first_name="Alice")
        assert (await texts_to(tg, ALICE, 1, wait=2.0)) == ["still there?"]
        assert tg.messages_to(MALLORY) == []
    finally:
        release.set()
    assert "pairing code" in (await texts_to(tg, MALLORY, 1))[0], "the stranger's turn comes"


async def test_a_flood_is_reported_as_it_happened(tg, state_dir, fake_clock):
    """Issue 9 item 9: a flood digest said "9 more pairing requests" when none came, and
    "241 turned away" for 997 strangers."""
    app = open_app(
        make_config(tg),
        state_dir=state_dir,
        clock=fake_clock,
        notice_limit=2,
        notice_window=timedelta(seconds=0.6),
        capped_delay=0.2,
    )
    await app.start()
    try:
        for round_ in range(3):
            for user in range(9201, 9241):  # 40 strangers, 3 messages each
                tg.dm(user, f"hi {round_}")
        await tg.wait_until(
            lambda: any("Held back" in t for t in tg.messages_to(OWNER)), timeout=10
        )
        await settle(1.0)
        owner = tg.messages_to(OWNER)
        assert sum(t.startswith("New pairing request") for t in owner) == 2
        said = "\n".join(owner)
        assert "1 more pairing request (Telegram)" in said, owner
        assert (
            "37 more strangers turned away by the pending cap (Telegram)" in said
            or "37 Telegram strangers were turned away" in said
        ), owner
        assert "more pairing requests" not in said, "only one request was held back"
        assert len(app.pairing.pending()) == 3
    finally:
        await app.stop()


async def test_lockout_after_ten_wrong_codes(tg, app):
    code = await pair(tg, app, ALICE)
    for i in range(10):
        tg.dm(OWNER, f"/approve ZZZZ{2222 + i}")
    await tg.wait_until(
        lambda: sum("No pending request" in t for t in tg.messages_to(OWNER)) >= 10
    )
    tg.dm(OWNER, f"/approve {code}")
    await tg.wait_for_sent(lambda m: m["chat_id"] == OWNER and "approvals are paused" in m["text"])
    assert not app.pairing.is_allowed("telegram", str(ALICE))


async def test_a_backlog_of_old_stranger_messages_gets_no_codes(tg, app):
    carol = 7777
    old = tg.dm(carol, "written while the bot was down", first_name="Carol")
    old["message"]["date"] -= 6 * 60
    tg.dm(ALICE, "fresh", first_name="Alice")
    await texts_to(tg, ALICE, 1)
    await settle(0.4)
    assert [r.id for r in app.pairing.pending()] == [str(ALICE)]
    assert tg.messages_to(carol) == []
    assert sum("New pairing request" in t for t in tg.messages_to(OWNER)) == 1


async def test_start_warns_when_state_is_readable_by_others(tg, state_dir, caplog):
    from stores.jsonfile import JsonFileStore

    JsonFileStore(state_dir).close()
    allow = state_dir / "credentials" / "telegram-allowFrom.json"
    allow.write_text('{"version": 1, "allowFrom": ["42"]}\n')
    allow.chmod(0o644)
    caplog.set_level("WARNING", logger="bot.runtime.app")
    app = await start_app(tg, state_dir)
    try:
        warnings = [r.getMessage() for r in caplog.records if r.name == "bot.runtime.app"]
        assert warnings == [f"state is too open: {allow} mode 0644 (run `pairbot doctor`)"]
    finally:
        await app.stop()
