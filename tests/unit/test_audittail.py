"""The audit log read as it grows (bot/runtime/audittail.py): from the end at the first read,
page by page, and a gap in a database's numbering waited for, then stepped over."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bot.core.clock import FakeClock
from bot.core.models import AuditEvent, AuditPage
from bot.runtime.audittail import GAP_WAIT, AuditTail, Records
from bot.runtime.outage import StoreOutage
from stores.memory import MemoryStore


def add(store: MemoryStore, *subjects: str) -> None:
    with store.transaction() as txn:
        for subject in subjects:
            txn.audit(
                AuditEvent(
                    ts=FakeClock().now(), event="allow", actor="a", subject=subject, outcome="x"
                )
            )


async def test_the_first_read_starts_at_the_end_and_later_ones_take_every_page() -> None:
    store = MemoryStore()
    add(store, "old")
    seen: list[str] = []
    tail = AuditTail(
        store,
        clock=FakeClock(),
        on_records=lambda records: seen.extend(r["subject"] for _, r in records),
        outage=StoreOutage(),
    )
    await tail.read()
    assert seen == []
    add(store, *(str(n) for n in range(1200)))  # more than two pages
    await tail.read()
    assert seen == [str(n) for n in range(1200)]
    await tail.read()
    assert len(seen) == 1200


class Gappy:
    """A store whose log has record 1, a gap at 2, and record 3."""

    def __init__(self) -> None:
        self.asked: list[tuple[str | None, bool]] = []

    def audit_since(self, position: str | None, *, skip_gap: bool = False, **_: Any) -> AuditPage:
        self.asked.append((position, skip_gap))
        if position == "0":
            return AuditPage(records=[("1", {"n": 1})], end="1", gap=True)
        if position == "1" and skip_gap:
            return AuditPage(records=[("3", {"n": 3})], end="3")
        if position == "1":
            return AuditPage(records=[], end="1", gap=True)
        return AuditPage(records=[], end=position or "0")


async def test_a_gap_is_waited_for_then_stepped_over() -> None:
    clock = FakeClock()
    store = Gappy()
    seen: Records = []
    tail = AuditTail(
        store,  # type: ignore[arg-type]
        clock=clock,
        on_records=seen.extend,
        outage=StoreOutage(),
        position="0",
    )
    await tail.read()
    await tail.read()
    clock.advance(GAP_WAIT - timedelta(seconds=1))
    await tail.read()
    assert [r for _, r in seen] == [{"n": 1}]
    clock.advance(timedelta(seconds=1))
    await tail.read()
    assert [r for _, r in seen] == [{"n": 1}, {"n": 3}]
    assert store.asked == [("0", False), ("1", False), ("1", False), ("1", True)]
