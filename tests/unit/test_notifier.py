"""The owner notifier (bot.runtime.notices): a rate limit, one digest for the overflow.

The limit is counted on the FakeClock; the digest waits in real time (``asyncio.sleep``), so
the window here is 0.2 s to keep the tests fast.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest

from bot.core import messages
from bot.core.clock import FakeClock
from bot.core.errors import StoreUnavailableError
from bot.core.messages import NoticeKind
from bot.core.models import Button
from bot.runtime.notices import OwnerNotifier
from bot.runtime.outage import StoreOutage
from stores.cluster import LocalCluster

WINDOW = timedelta(seconds=0.2)
LIMIT = 5
BUTTONS = (
    Button(label="Approve", command="/approve ABCD2345"),
    Button(label="Reject", command="/reject ABCD2345"),
)


class Outbox:
    """A recording ``send``: every (text, buttons) the notifier sent to the owners, and what
    each told of."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple[Button, ...]]] = []
        self.told: list[messages.Told] = []

    async def __call__(self, text: str, buttons: Sequence[Button], told: messages.Told) -> None:
        self.sent.append((text, tuple(buttons)))
        self.told.append(told)

    def texts(self) -> list[str]:
        return [text for text, _ in self.sent]


@pytest.fixture
def outbox() -> Outbox:
    return Outbox()


@pytest.fixture
async def notifier(outbox: Outbox, clock: FakeClock):
    made = OwnerNotifier(outbox, clock=clock, cluster=LocalCluster(), limit=LIMIT, window=WINDOW)
    yield made
    await made.aclose()


async def until(condition: Callable[[], bool], within: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


PAIRING: dict[str, Any] = {"kind": NoticeKind.PAIRING_REQUEST, "provider": "telegram"}


def digest(pairing: int) -> str:
    return messages.owner_digest({(NoticeKind.PAIRING_REQUEST, "telegram"): pairing})


def notice(i: int) -> str:
    return f"New pairing request {i}"


async def test_up_to_the_limit_goes_out_at_once_with_buttons(
    notifier: OwnerNotifier, outbox: Outbox
) -> None:
    for i in range(LIMIT):
        await notifier.notify(notice(i), BUTTONS, **PAIRING)
    assert outbox.sent == [(notice(i), BUTTONS) for i in range(LIMIT)]
    await asyncio.sleep(WINDOW.total_seconds() * 1.25)
    assert len(outbox.sent) == LIMIT  # nothing was folded, so no digest follows


async def test_overflow_becomes_one_digest_after_the_window(
    notifier: OwnerNotifier, outbox: Outbox, clock: FakeClock
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    for i in range(LIMIT + 7):
        await notifier.notify(notice(i), BUTTONS, **PAIRING)
    assert outbox.texts() == [notice(i) for i in range(LIMIT)]

    clock.advance(WINDOW / 2)  # a notice inside the window still folds (no jumping the queue)
    await notifier.notify(notice(99), BUTTONS, **PAIRING)
    await asyncio.sleep(0.05)
    assert len(outbox.sent) == LIMIT

    await until(lambda: len(outbox.sent) > LIMIT)
    assert loop.time() - started >= WINDOW.total_seconds() * 0.9
    assert outbox.sent[LIMIT:] == [(digest(8), ())]
    assert digest(8) == (
        "Held back to keep this chat readable: 8 more pairing requests "
        "(Telegram). Send /pending to see what waits."
    )

    await asyncio.sleep(WINDOW.total_seconds() * 1.25)
    assert len(outbox.sent) == LIMIT + 1  # exactly one digest

    clock.advance(WINDOW)  # the window has passed on the clock: normal notices resume
    for i in range(LIMIT):
        await notifier.notify(notice(100 + i), BUTTONS, **PAIRING)
    assert outbox.sent[LIMIT + 1 :] == [(notice(100 + i), BUTTONS) for i in range(LIMIT)]


async def test_single_overflow_digest_is_singular(notifier: OwnerNotifier, outbox: Outbox) -> None:
    for i in range(LIMIT + 1):
        await notifier.notify(notice(i), **PAIRING)
    await until(lambda: len(outbox.sent) == LIMIT + 1)
    assert outbox.sent[-1] == (
        "Held back to keep this chat readable: 1 more pairing request (Telegram). Send "
        "/pending to see what waits.",
        (),
    )


async def test_digest_waits_only_until_the_oldest_notice_leaves_the_window(
    notifier: OwnerNotifier, outbox: Outbox, clock: FakeClock
) -> None:
    loop = asyncio.get_running_loop()
    await notifier.notify(notice(0), **PAIRING)
    clock.advance(WINDOW * 0.75)
    for i in range(1, LIMIT + 1):
        await notifier.notify(notice(i), **PAIRING)
    started = loop.time()
    await until(lambda: len(outbox.sent) == LIMIT + 1)
    # The oldest notice leaves the window WINDOW/4 after the overflow, not a whole WINDOW.
    assert loop.time() - started < WINDOW.total_seconds() * 0.9
    assert outbox.texts()[-1] == digest(1)


async def test_burst_after_a_digest_in_the_same_window_folds_again(
    notifier: OwnerNotifier, outbox: Outbox
) -> None:
    for i in range(LIMIT + 2):
        await notifier.notify(notice(i), **PAIRING)
    await until(lambda: len(outbox.sent) == LIMIT + 1)
    for i in range(3):  # the clock did not move: still the same window
        await notifier.notify(notice(50 + i), **PAIRING)
    assert len(outbox.sent) == LIMIT + 1
    await until(lambda: len(outbox.sent) == LIMIT + 2)
    assert outbox.texts()[LIMIT:] == [digest(2), digest(3)]


async def test_aclose_cancels_a_pending_digest(outbox: Outbox, clock: FakeClock) -> None:
    notifier = OwnerNotifier(
        outbox, clock=clock, cluster=LocalCluster(), limit=LIMIT, window=WINDOW
    )
    for i in range(LIMIT + 3):
        await notifier.notify(notice(i), **PAIRING)
    await notifier.aclose()
    await asyncio.sleep(WINDOW.total_seconds() * 1.25)
    assert outbox.texts() == [notice(i) for i in range(LIMIT)]
    await notifier.aclose()  # closing twice is harmless


async def test_aclose_without_a_digest_is_harmless(outbox: Outbox, clock: FakeClock) -> None:
    notifier = OwnerNotifier(
        outbox, clock=clock, cluster=LocalCluster(), limit=LIMIT, window=WINDOW
    )
    await notifier.aclose()
    await notifier.notify(notice(0), **PAIRING)
    assert outbox.texts() == [notice(0)]


async def test_the_digest_counts_what_happened_by_kind_and_platform(
    notifier: OwnerNotifier, outbox: Outbox
) -> None:
    """Issue 9 item 9: the digest used to call every folded notice a pairing request, and
    strangers turned away were counted by notice, not by stranger."""
    for i in range(LIMIT):
        await notifier.notify(notice(i), BUTTONS, **PAIRING)
    await notifier.notify("Slack request", kind=NoticeKind.PAIRING_REQUEST, provider="slack")
    await notifier.notify("Node asks", kind=NoticeKind.NODE_REQUEST)
    await notifier.notify(
        "12 turned away", kind=NoticeKind.TURNED_AWAY, provider="telegram", count=12
    )
    await notifier.notify(
        "985 turned away", kind=NoticeKind.TURNED_AWAY, provider="telegram", count=985
    )
    await notifier.notify(
        "3 turned away", kind=NoticeKind.TURNED_AWAY, provider="discord", count=3
    )
    await until(lambda: len(outbox.sent) == LIMIT + 1)
    assert outbox.texts()[-1] == (
        "Held back to keep this chat readable: 1 more pairing request (Slack); 1 more node "
        "request; 1000 more strangers turned away by the pending cap (Discord 3, Telegram "
        "997). Send /pending to see what waits."
    )


async def test_urgent_notices_are_never_folded(notifier: OwnerNotifier, outbox: Outbox) -> None:
    for i in range(LIMIT):
        await notifier.notify(notice(i), BUTTONS, **PAIRING)
    await notifier.notify("A state file went bad", kind=NoticeKind.URGENT)
    assert outbox.texts()[-1] == "A state file went bad"


# --- several instances (issue 13) ---------------------------------------------------------------


async def test_two_instances_send_the_limit_between_them_and_each_its_digest(
    clock: FakeClock,
) -> None:
    """N instances on one state must not send N times the limit: the count is the cluster's.
    What each instance held back it tells in its own digest."""
    here = LocalCluster()
    boxes = [Outbox(), Outbox()]
    pair = [
        OwnerNotifier(box, clock=clock, cluster=cluster, limit=LIMIT, window=WINDOW)
        for box, cluster in zip(boxes, (here, here.sibling()), strict=True)
    ]
    try:
        for i in range(3 * LIMIT):  # a flood, alternating between the instances
            await pair[i % 2].notify(notice(i), BUTTONS, **PAIRING)
        sent = [text for box in boxes for text in box.texts()]
        assert sorted(sent) == sorted(notice(i) for i in range(LIMIT))

        await until(lambda: sum(len(box.sent) for box in boxes) == LIMIT + 2)
        assert boxes[0].texts()[-1] == digest(5)  # 5, 7, 9, 11, 13 (0-4 went out)
        assert boxes[1].texts()[-1] == digest(5)  # 6, 8, 10, 12, 14

        clock.advance(WINDOW)  # a fresh window: the limit again, between them
        for i in range(2 * LIMIT):
            await pair[i % 2].notify(notice(100 + i), BUTTONS, **PAIRING)
        assert sum(len(box.sent) for box in boxes) == 2 * LIMIT + 2
    finally:
        for notifier in pair:
            await notifier.aclose()


class Unreachable(LocalCluster):
    """A cluster whose database is down: counting fails as the PostgreSQL one's would."""

    def bump(self, key: str, *, now: Any, window: Any) -> int:
        raise StoreUnavailableError("postgresql://pairbot@db/pairbot: connection refused")


async def test_while_the_cluster_is_away_an_instance_keeps_its_own_limit(
    outbox: Outbox, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    outage = StoreOutage()
    notifier = OwnerNotifier(
        outbox, clock=clock, cluster=Unreachable(), limit=LIMIT, window=WINDOW, outage=outage
    )
    try:
        for i in range(LIMIT + 3):
            await notifier.notify(notice(i), BUTTONS, **PAIRING)
        assert outbox.texts() == [notice(i) for i in range(LIMIT)]
        await until(lambda: len(outbox.sent) == LIMIT + 1)
        assert outbox.texts()[-1] == digest(3)
    finally:
        await notifier.aclose()
    assert outage.down
    assert len([r for r in caplog.records if "cannot be reached" in r.getMessage()]) == 1
