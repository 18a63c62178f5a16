"""Issue 14, parts 1 and 2, end to end on Telegram's fake: how a stranger is answered
(``unpaired_response``: code, silent, a custom text) and the messages a pending stranger wrote,
held and handed to the handler once after the approval, whoever approves; dropped when the
request is rejected or expires. Every platform's part of the same is in
``test_quiet_and_held_platforms.py``."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.core import messages
from bot.core.clock import FakeClock
from bot.runtime.app import App
from providers.telegram.fake import FakeTelegramServer
from stores.jsonfile import JsonFileStore
from tests.e2e import held_handler, support
from tests.e2e.support import code_in, settle, texts
from tests.e2e.test_app_telegram import ALICE, BOB, OWNER, cli_approve, make_config
from tests.process import pairbot_exits, pairbot_running, telegram_config, write_config
from tests.stores.helpers import run_writer

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]

APPROVED = messages.approved_sender()
CUSTOM = "Ask the owner to let you in: {code} (for {ttl}; {provider} id {sender_id})."
HOLD: dict[str, Any] = {"hold_messages": 2, "notice_preview": True}
FIRST = "Hi, Alice from the choir here.\nCould you send me the rota?"
MARK = b"Alice from the choir"
"""A part of :data:`FIRST` as any state file would hold it (no character JSON escapes)."""


@pytest.fixture
async def tg(fake_clock: FakeClock) -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer(clock=fake_clock) as fake:
        fake.started_before(OWNER)
        yield fake


def running(
    tg: FakeTelegramServer, state_dir: Path, clock: FakeClock, **overrides: Any
) -> AbstractAsyncContextManager[App]:
    """The app on ``tg`` with ``overrides`` (see :func:`make_config`), stopped on the way out."""
    return support.app_running(make_config(tg, **overrides), state_dir, clock)


async def owner_notices(tg: FakeTelegramServer, count: int = 1) -> list[dict[str, Any]]:
    return await tg.wait_for_sent(
        lambda m: m["chat_id"] == OWNER and m["text"].startswith("New pairing request"),
        count=count,
    )


def code_of(notice: dict[str, Any]) -> str:
    """The code an owner notice shows (``Code: ABCD-2345  (expires in 1h)``)."""
    text: str = notice["text"]
    line = next(ln for ln in text.splitlines() if ln.startswith("Code: "))
    return line.split()[1].replace("-", "")


async def approved_while_down(
    tg: FakeTelegramServer,
    state_dir: Path,
    clock: FakeClock,
    user: int,
    *written: str,
    pairing: dict[str, Any] = HOLD,
) -> None:
    """A bot that holds messages runs while stranger ``user`` writes ``written`` (each held,
    up to the limit), then stops; ``pairbot pairing approve`` approves them meanwhile."""
    async with running(tg, state_dir, clock, pairing=pairing):
        for text in written:
            tg.dm(user, text, first_name="Alice")
        code = code_in((await texts(lambda: tg.messages_to(user), 1))[0])
        await owner_notices(tg)
        await settle(0.3)  # every message handled
    await cli_approve(state_dir, code)


def everything_stored(state_dir: Path) -> bytes:
    """Every byte of the state dir (the audit log included)."""
    return b"".join(p.read_bytes() for p in sorted(state_dir.rglob("*")) if p.is_file())


# --- how a stranger is answered -------------------------------------------------------------


async def test_a_silent_platform_tells_a_stranger_nothing_and_the_owner_that(
    tg: FakeTelegramServer, state_dir: Path, fake_clock: FakeClock
) -> None:
    async with running(tg, state_dir, fake_clock, telegram={"unpaired_response": "silent"}) as app:
        tg.dm(ALICE, "hello?", first_name="Alice")
        [notice] = await owner_notices(tg)
        assert (
            "They were told nothing (this platform answers strangers with silence)."
            in (notice["text"])
        )
        assert "Nobody was given this code" in notice["text"]
        fake_clock.advance(timedelta(minutes=11))  # a reminder would be due: none is sent
        tg.dm(ALICE, "anyone there?")
        await settle(0.4)
        assert tg.messages_to(ALICE) == []
        tg.dm(OWNER, f"/approve {code_of(notice)}")
        confirmed = await tg.wait_for_sent(
            lambda m: m["chat_id"] == OWNER and m["text"].startswith("Approved")
        )
        assert confirmed[0]["text"].endswith("They were not told (silent mode).")
        assert app.pairing.is_allowed("telegram", str(ALICE))
        await settle(0.4)
        assert tg.messages_to(ALICE) == [], 'not even "you\'re approved"'
        tg.dm(ALICE, "so, the rota?")
        assert await texts(lambda: tg.messages_to(ALICE), 1) == ["so, the rota?"]


async def test_a_custom_text_is_what_a_stranger_gets_and_again_as_the_reminder(
    tg: FakeTelegramServer, state_dir: Path, fake_clock: FakeClock
) -> None:
    async with running(
        tg,
        state_dir,
        fake_clock,
        telegram={"unpaired_response": "custom"},
        messages={"stranger": CUSTOM},
    ) as app:
        tg.dm(ALICE, "hello?", first_name="Alice")
        [first] = await texts(lambda: tg.messages_to(ALICE), 1)
        [request] = app.pairing.pending()
        dashed = f"{request.code[:4]}-{request.code[4:]}"
        assert first == (f"Ask the owner to let you in: {dashed} (for 1h; Telegram id {ALICE}).")
        [notice] = await owner_notices(tg)
        assert "Approve only if you know who holds this code" in notice["text"]
        fake_clock.advance(timedelta(minutes=10, seconds=1))
        tg.dm(ALICE, "still there?")
        reminded = await texts(lambda: tg.messages_to(ALICE), 2)
        assert reminded[1] == (
            f"Ask the owner to let you in: {dashed} (for 50m; Telegram id {ALICE})."
        )
        tg.dm(OWNER, f"/approve {request.code}")
        assert (await texts(lambda: tg.messages_to(ALICE), 3))[2] == APPROVED


# --- held messages ----------------------------------------------------------------------------


async def test_held_messages_reach_the_handler_once_right_after_the_button_approval(
    tg: FakeTelegramServer, state_dir: Path, fake_clock: FakeClock
) -> None:
    async with running(tg, state_dir, fake_clock, pairing=HOLD) as app:
        tg.dm(ALICE, FIRST, first_name="Alice")
        tg.dm(ALICE, "second")
        tg.dm(ALICE, "third: past hold_messages, not kept")
        [notice] = await owner_notices(tg)
        assert (
            "First message (as the sender wrote it, unverified): Hi, Alice from the choir here."
            in notice["text"]
        )
        assert "rota" not in notice["text"]
        await settle(0.3)
        assert tg.messages_to(ALICE)[1:] == [], "nothing reached the handler before approval"
        approve = notice["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        tg.press_button(OWNER, notice["message_id"], approve)
        told = await texts(lambda: tg.messages_to(ALICE), 4)
        assert told[1:] == [APPROVED, FIRST, "second"]
        await tg.wait_until(lambda: len(tg.edits) >= 1)
        assert tg.edits[0]["text"].endswith(
            "The 2 messages they wrote while waiting go to the handler now."
        )
        tg.dm(ALICE, "and now?")
        await texts(lambda: tg.messages_to(ALICE), 5)
        await settle(0.4)
        assert tg.messages_to(ALICE)[1:] == [APPROVED, FIRST, "second", "and now?"]
        assert app.pairing.notices() == []
        assert MARK not in everything_stored(state_dir), "handed over: gone from the state"


async def test_held_messages_are_in_the_state_and_never_in_the_logs_or_the_audit(
    tg: FakeTelegramServer,
    state_dir: Path,
    fake_clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """(Third-party loggers at DEBUG are searched by ``test_debug_logs.py``.)"""
    caplog.set_level("DEBUG", logger="bot")
    caplog.set_level("DEBUG", logger="stores")
    async with running(tg, state_dir, fake_clock, pairing=HOLD):
        tg.dm(ALICE, "my private words", first_name="Alice")
        await owner_notices(tg)
        with JsonFileStore(state_dir).transaction() as txn:
            [request] = txn.requests("telegram")
        assert [m.text for m in request.held] == ["my private words"]
        pairing_file = state_dir / "credentials" / "telegram-pairing.json"
        assert pairing_file.stat().st_mode & 0o777 == 0o600
        tg.dm(OWNER, f"/approve {request.code}")
        await texts(lambda: tg.messages_to(ALICE), 3)
    ours = [r.getMessage() for r in caplog.records if r.name.startswith(("bot", "stores"))]
    assert ours, "pairbot logged what it did"
    assert not any("private words" in line for line in ours)
    assert "private words" not in json.dumps(JsonFileStore(state_dir).read_audit())
    assert "private words" not in repr(request)


async def test_held_messages_reach_the_handler_after_an_approval_by_the_cli(
    tg: FakeTelegramServer, state_dir: Path, fake_clock: FakeClock
) -> None:
    """``pairbot pairing approve`` in a process of its own, which knows nothing of
    hold_messages: the approval carries the messages to the running bot's outbox."""
    async with running(tg, state_dir, fake_clock, pairing=HOLD):
        tg.dm(ALICE, "one", first_name="Alice")
        tg.dm(ALICE, "two")
        code = code_in((await texts(lambda: tg.messages_to(ALICE), 1))[0])
        await owner_notices(tg)
        await settle(0.3)
        await cli_approve(state_dir, code)
        told = await texts(lambda: tg.messages_to(ALICE), 4)
        await settle(0.4)
        assert told[1:] == tg.messages_to(ALICE)[1:] == [APPROVED, "one", "two"]


async def test_held_messages_wait_for_the_bot_when_it_was_down_at_the_approval(
    tg: FakeTelegramServer, state_dir: Path, fake_clock: FakeClock
) -> None:
    await approved_while_down(tg, state_dir, fake_clock, ALICE, "while you were out")
    async with running(tg, state_dir, fake_clock, pairing=HOLD):
        told = await texts(lambda: tg.messages_to(ALICE), 3)
        assert told[1:] == [APPROVED, "while you were out"]


@pytest.mark.parametrize("end", ["reject", "expire"])
async def test_held_messages_are_dropped_when_the_request_is_rejected_or_expires(
    tg: FakeTelegramServer, state_dir: Path, fake_clock: FakeClock, end: str
) -> None:
    async with running(tg, state_dir, fake_clock, pairing=HOLD) as app:
        tg.dm(ALICE, "before the end", first_name="Alice")
        [notice] = await owner_notices(tg)
        if end == "reject":
            tg.dm(OWNER, f"/reject {code_of(notice)}")
            await tg.wait_for_sent(
                lambda m: m["chat_id"] == OWNER and m["text"].startswith("Rejected")
            )
        else:
            fake_clock.advance(timedelta(hours=1))
            await tg.wait_until(  # the pruner, every 0.2 s
                lambda: any(r["event"] == "expire" for r in app.store.read_audit()), timeout=5
            )
        assert b"before the end" not in everything_stored(state_dir)
        tg.dm(ALICE, "after the end")
        [_, again] = await owner_notices(tg, count=2)
        assert code_of(again) != code_of(notice)
        assert "after the end" in again["text"]
        tg.dm(OWNER, f"/approve {code_of(again)}")
        await texts(lambda: tg.messages_to(ALICE), 4)
        await settle(0.4)
        assert tg.messages_to(ALICE)[2:] == [APPROVED, "after the end"]


async def test_a_sender_revoked_before_being_told_gets_nothing_of_what_was_held(
    tg: FakeTelegramServer, state_dir: Path, fake_clock: FakeClock
) -> None:
    """Approved by the CLI, then revoked by the CLI, both while the bot was down."""
    await approved_while_down(tg, state_dir, fake_clock, BOB, "held for nobody")
    with JsonFileStore(state_dir).transaction() as txn:
        assert [m.text for m in txn.notices()[0].held] == ["held for nobody"]
    result = await pairbot_exits(
        "--state-dir", str(state_dir), "allowlist", "remove", "telegram", str(BOB)
    )
    assert result.returncode == 0, result.stderr
    assert b"held for nobody" not in everything_stored(state_dir)
    before = len(tg.sent)  # the code, and the notice with its preview
    async with running(tg, state_dir, fake_clock, pairing=HOLD, handler={"kind": "forward"}):
        await settle(0.4)
        assert tg.messages_to(BOB)[1:] == []
        assert "held for nobody" not in json.dumps(tg.sent[before:])


async def test_a_process_killed_while_handing_over_hands_that_one_again_and_tells_once(
    tg: FakeTelegramServer, state_dir: Path, fake_clock: FakeClock, tmp_path: Path
) -> None:
    """The documented crash window: a bot dies after handing a held message to the handler
    and before writing that it did. The next start tells nobody twice, hands the message it
    had in hand again (at least once), and the ones after it once; none is lost."""
    await approved_while_down(
        tg, state_dir, fake_clock, ALICE, "one", "two", "three", pairing={"hold_messages": 3}
    )
    record = tmp_path / "handed.txt"
    config = telegram_config(state_dir, tg.base_url, owner=OWNER)
    config["handler"] = {"kind": "python", "target": "tests.e2e.held_handler:record"}
    run = ("run", "--config", str(write_config(tmp_path / "pairbot.yaml", config)))
    env = {"TG_TOKEN": tg.token, "HELD_RECORD": str(record), "PYTHONPATH": str(REPO)}
    async with pairbot_running(*run, env={**env, "HELD_DIE_ON": "two"}, cwd=REPO) as proc:
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 9
    assert record.read_text().splitlines() == ["one", "two"]
    assert tg.messages_to(ALICE)[1:] == [APPROVED]
    async with pairbot_running(*run, env=env, cwd=REPO) as proc:
        await tg.wait_until(lambda: len(record.read_text().splitlines()) >= 4, timeout=30)
        await settle(0.5)
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), timeout=30)
    assert record.read_text().splitlines() == ["one", "two", "two", "three"]
    assert tg.messages_to(ALICE)[1:] == [APPROVED], "told once"
    with JsonFileStore(state_dir).transaction() as txn:
        assert txn.notices() == []


async def test_a_slow_handler_holds_up_neither_the_owner_nor_other_senders(
    tg: FakeTelegramServer, state_dir: Path, fake_clock: FakeClock
) -> None:
    """The held messages are handed over off the provider's path: the owner's confirmation
    and another sender's message do not wait for the handler to finish with them."""
    held_handler.GATE.clear()
    held_handler.SEEN.clear()
    async with running(
        tg,
        state_dir,
        fake_clock,
        pairing=HOLD,
        handler={"kind": "python", "target": "tests.e2e.held_handler:gated", "timeout": "30s"},
        telegram={"allow_from": [str(BOB)]},
    ):
        try:
            tg.dm(ALICE, "one", first_name="Alice")
            tg.dm(ALICE, "two")
            [notice] = await owner_notices(tg)
            await settle(0.3)
            tg.dm(OWNER, f"/approve {code_of(notice)}")
            await tg.wait_until(lambda: held_handler.SEEN == ["one"])
            await tg.wait_for_sent(
                lambda m: m["chat_id"] == OWNER and m["text"].startswith("Approved")
            )
            assert tg.messages_to(ALICE)[1:] == [APPROVED]
            tg.dm(BOB, "not held up", first_name="Bob")
            await tg.wait_until(lambda: "not held up" in held_handler.SEEN)
            held_handler.GATE.set()
            told = await texts(lambda: tg.messages_to(ALICE), 4)
            assert told[1:] == [APPROVED, "answered: one", "answered: two"]
            assert await texts(lambda: tg.messages_to(BOB), 1) == ["answered: not held up"]
        finally:
            held_handler.GATE.set()


async def cli(state_dir: Path, *args: str) -> None:
    """``pairbot ARGS`` on the state dir, in a process of its own."""
    result = await pairbot_exits("--state-dir", str(state_dir), *args)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("elsewhere", ["reject", "approve-then-revoke"])
async def test_a_change_by_another_process_ends_a_pending_strangers_quiet(
    tg: FakeTelegramServer, state_dir: Path, fake_clock: FakeClock, elsewhere: str
) -> None:
    """Issue 16: the running bot remembered the stranger as pending and quiet, so after the
    CLI rejected the request (or approved, then revoked the sender) their next messages were
    settled from that memory, silently, instead of getting a new code."""
    async with running(tg, state_dir, fake_clock):
        tg.dm(ALICE, "hello?", first_name="Alice")
        first = code_in((await texts(lambda: tg.messages_to(ALICE), 1))[0])
        tg.dm(ALICE, "anyone?")  # pending and quiet: settled from memory, no answer
        await settle(0.3)
        assert len(tg.messages_to(ALICE)) == 1
        if elsewhere == "reject":
            await cli(state_dir, "pairing", "reject", "telegram", first)
        else:  # at once: the revocation drops the notice before the bot comes to tell it
            await asyncio.to_thread(run_writer, "approve-revoke", state_dir, first)
        await settle(0.3)
        answered = len(tg.messages_to(ALICE))

        tg.dm(ALICE, "hello again")

        again = (await texts(lambda: tg.messages_to(ALICE), answered + 1))[-1]
        assert code_in(again) != first
