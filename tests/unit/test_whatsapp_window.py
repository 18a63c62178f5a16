"""Who wrote lately (providers/whatsapp/window.py): whose 24-hour window a send may count on,
and when a sender's message is news for the other instances."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from providers.whatsapp.window import NEWS_EVERY, WITHIN, RecentWriters

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class Seconds:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_sender_is_vouched_for_until_the_window_less_its_margin() -> None:
    clock = Seconds()
    writers = RecentWriters(now=clock)
    assert not writers.vouch("alice")
    writers.wrote("alice", T0)
    assert writers.vouch("alice")
    clock.now += WITHIN.total_seconds() - 1
    assert writers.vouch("alice")
    clock.now += 1
    assert not writers.vouch("alice")


def test_a_message_delivered_late_counts_from_when_meta_stamped_it() -> None:
    writers = RecentWriters(now=Seconds())
    writers.wrote("alice", T0)
    writers.saw(T0 + WITHIN)  # a later webhook: Meta's clock is a day on
    assert not writers.vouch("alice")


def test_a_sender_is_news_once_per_news_every_by_this_process_clock() -> None:
    clock = Seconds()
    writers = RecentWriters(now=clock)
    assert writers.wrote("alice", T0)
    assert not writers.wrote("alice", T0)
    clock.now += NEWS_EVERY.total_seconds() - 1
    assert not writers.wrote("alice", T0 + NEWS_EVERY)
    assert writers.wrote("bob", None)
    clock.now += NEWS_EVERY.total_seconds()
    assert writers.wrote("alice", T0 + 2 * NEWS_EVERY)


def test_the_oldest_sender_is_forgotten_past_the_size_and_is_news_again() -> None:
    writers = RecentWriters(size=2, now=Seconds())
    for sender in ("a", "b", "c"):
        writers.wrote(sender, T0)
    assert (writers.vouch("a"), writers.vouch("c")) == (False, True)
    assert writers.wrote("a", T0 + timedelta(minutes=1))
