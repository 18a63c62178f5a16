"""What an owner missed while their platform would not let the bot write to them
(bot.runtime.missed), for any platform whose provider raises RecipientUnreachable."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import timedelta

import pytest

from bot.core import messages
from bot.core.clock import FakeClock
from bot.core.errors import RecipientUnreachable
from bot.core.messages import NoticeKind
from bot.core.models import Button
from bot.runtime.missed import MissedNotices
from bot.runtime.notices import OwnerNotifier
from stores.cluster import LocalCluster

OWNER = "15550000001"
PAIRING = (NoticeKind.PAIRING_REQUEST, "whatsapp")


class Chat:
    """A provider's sending side: what it sent, and whether the owner can be reached."""

    bare_commands = False

    def __init__(self, *, reachable: bool = True) -> None:
        self.reachable = reachable
        self.sent: list[tuple[str, str]] = []

    async def dm_chat_id(self, user_id: str) -> str:
        return user_id

    async def send(self, chat_id: str, text: str, *, buttons: Sequence[Button] = ()) -> str:
        if not self.reachable:
            raise RecipientUnreachable(f"cannot write to {chat_id} until they write")
        self.sent.append((chat_id, text))
        return "m1"


def missed_with(chat: Chat) -> MissedNotices:
    return MissedNotices({"whatsapp": chat})  # type: ignore[dict-item]


async def test_one_log_line_a_burst_and_the_owner_is_told_once_when_they_write(
    caplog: pytest.LogCaptureFixture,
) -> None:
    chat = Chat()
    missed = missed_with(chat)
    why = RecipientUnreachable("window closed")

    missed.add("whatsapp", OWNER, {PAIRING: 1}, why)
    missed.add("whatsapp", OWNER, {(NoticeKind.NODE_REQUEST, ""): 1}, why)
    missed.add("whatsapp", OWNER, {PAIRING: 3, (NoticeKind.TURNED_AWAY, "whatsapp"): 7}, why)
    await missed.owner_wrote("whatsapp", "15559999999")  # another owner missed nothing
    assert chat.sent == []

    await missed.owner_wrote("whatsapp", OWNER)
    await missed.owner_wrote("whatsapp", OWNER)

    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert f"owner {OWNER} on whatsapp cannot be written to" in warning.getMessage()
    assert chat.sent == [
        (
            OWNER,
            messages.owner_missed(
                "whatsapp",
                {
                    PAIRING: 4,
                    (NoticeKind.NODE_REQUEST, ""): 1,
                    (NoticeKind.TURNED_AWAY, "whatsapp"): 7,
                },
            ),
        )
    ]
    assert (
        "4 pairing requests (WhatsApp); 1 node request; 7 strangers turned away"
        in (chat.sent[0][1])
    )
    missed.add("whatsapp", OWNER, {PAIRING: 1}, why)  # a new burst is logged again
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


async def test_what_could_not_be_told_is_kept_for_the_next_time() -> None:
    chat = Chat(reachable=False)
    missed = missed_with(chat)
    missed.add("whatsapp", OWNER, {PAIRING: 2}, RecipientUnreachable("closed"))

    await missed.owner_wrote("whatsapp", OWNER)  # still refused: nothing is lost
    chat.reachable = True
    await missed.owner_wrote("whatsapp", OWNER)

    [(_, text)] = chat.sent
    assert "2 pairing requests (WhatsApp)" in text


def test_the_missed_text_names_every_kind_and_says_where_to_look() -> None:
    text = messages.owner_missed(
        "whatsapp",
        {
            (NoticeKind.PAIRING_REQUEST, "telegram"): 1,
            (NoticeKind.URGENT, ""): 1,
            (NoticeKind.FORWARDED, ""): 2,
        },
    )
    assert text.startswith(
        "While WhatsApp would not let pairbot write to you, these did not reach you: 1 "
        "pairing request (Telegram); 1 warning that a state file went bad (see `pairbot "
        "doctor`); 2 forwarded messages. Send /pending to see what still waits."
    )
    assert messages.without_slashes(text).count("Send pending") == 1


async def test_the_notifier_says_what_each_message_tells_of(clock: FakeClock) -> None:
    told: list[messages.Told] = []

    async def send(text: str, buttons: Sequence[Button], what: messages.Told) -> None:
        told.append(what)

    window = timedelta(seconds=0.05)
    notifier = OwnerNotifier(send, clock=clock, cluster=LocalCluster(), limit=1, window=window)
    await notifier.notify("one", kind=NoticeKind.PAIRING_REQUEST, provider="whatsapp")
    await notifier.notify("two", kind=NoticeKind.PAIRING_REQUEST, provider="whatsapp")
    await notifier.notify("three", kind=NoticeKind.NODE_REQUEST)
    clock.advance(timedelta(seconds=1))
    try:
        for _ in range(200):  # the digest goes out once the (real-time) window is over
            if len(told) == 2:
                break
            await asyncio.sleep(0.01)
    finally:
        await notifier.aclose()

    assert told[0] == {PAIRING: 1}
    assert told[1] == {PAIRING: 1, (NoticeKind.NODE_REQUEST, ""): 1}
