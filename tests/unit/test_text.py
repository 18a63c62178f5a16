"""bot/text.py: hostile names render inert (goal 13), normal names survive, ``ago`` units."""

from __future__ import annotations

import itertools
import unicodedata
from datetime import UTC, datetime, timedelta

import pytest

from bot.core import messages
from bot.core.models import PendingRequest
from bot.core.text import BLANK_NAME, MAX_MARKS, NAME_LIMIT, ago, clean, clean_name, remaining

BIDI = [chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C]]
ZERO_WIDTH = [chr(c) for c in [*range(0x200B, 0x2010), 0xFEFF, 0x2060, 0x180E]]
C0 = [chr(c) for c in [*range(0x20), 0x7F]]
C1 = [chr(c) for c in range(0x80, 0xA0)]

HOSTILE: dict[str, str] = {
    "newline": "Alice\nBob",
    "crlf": "Alice\r\nBob",
    "cr-only": "Alice\rOwner",
    "tab": "Alice\tBob",
    "vertical-tab-formfeed": "A\vB\fC",
    "nel": "Alice\x85Bob",
    "line-separator": "Alice\u2028Bob",
    "paragraph-separator": "Alice\u2029Bob",
    "rlo": "\u202eevil.exe",
    "rlo-mid": "invoice\u202etxt.exe",
    "lre-pdf": "\u202aleft\u202c",
    "rle": "\u202bright",
    "lro": "\u202doverride",
    "lri-pdi": "\u2066isolate\u2069",
    "rli": "\u2067rtl",
    "fsi": "\u2068first",
    "all-bidi": "".join(BIDI) + "name",
    "zwsp": "Ad\u200bmin",
    "zwnj": "Ad\u200cmin",
    "zwj": "Ad\u200dmin",
    "lrm-rlm": "\u200eA\u200fB",
    "bom": "\ufeffOwner",
    "word-joiner": "Own\u2060er",
    "mongolian-vs": "Own\u180eer",
    "all-zero-width": "".join(ZERO_WIDTH) + "x",
    "nul": "Ali\x00ce",
    "bell": "Alice\x07",
    "backspace": "Owner\x08\x08\x08\x08\x08Alice",
    "escape": "\x1bc",
    "delete": "Alice\x7f",
    "all-c0": "".join(C0) + "x",
    "all-c1": "".join(C1) + "x",
    "csi-c1": "\x9b31mred",
    "ansi-red": "\x1b[31mred\x1b[0m",
    "ansi-clear-screen": "\x1b[2J\x1b[HOwner",
    "ansi-cursor-up": "x\x1b[1A\x1b[2KApproved",
    "osc-title": "\x1b]0;owner\x07name",
    "osc8-link": "\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\",
    "fake-approve-line": "Bob\n/approve ABCD2345\n",
    "fake-approve-crlf": "Bob\r\n/approve ABCD-2345\r\n",
    "fake-system-line": "x\nNew pairing request\nProvider: Telegram\nSender id: 1",
    "fake-nodes-approve": "node\n/nodes approve ABCDEFGHJK",
    "markdown": "*bold* _it_ `code` [link](https://evil.example)",
    "markdown-fence": "```\n/approve ABCD2345\n```",
    "html": "<b>Owner</b><script>alert(1)</script>",
    "html-link": '<a href="tg://user?id=1">Owner</a>',
    "mention": "@everyone @here @owner",
    "very-long": "A" * 10_000,
    "very-long-words": "word " * 5_000,
    "long-with-newlines": "line\n" * 1_000,
    "long-zero-width": "\u200b" * 10_000 + "x",
    "private-use": "Own\ue000er",
    "lone-surrogate": "Own\ud800er",
    "tag-chars": "Own\U000e0041\U000e0042er",
    "interlinear": "\ufff9Own\ufffaer\ufffb",
    "soft-hyphen": "Ow\u00adner",
    "only-controls": "\n\r\t\u202e\u200b\x00",
    "mixed-everything": "\u202e\x1b[31m<b>\n/approve ABCD2345\u200b\r\n@owner\t" + "Z" * 200,
    "zalgo": "Z" + "\u0301\u0302\u0316\u0317" * 40 + "algo" + "\u0489" * 30,
    "zalgo-lines": ("O" + "\u030d" * 80 + "wner\n") * 5,
    "combining-first": "\u0301\u0302Owner",
    "combining-after-space": "Al ice \u0308\u0308\u0308 Bob",
    "hangul-filler-padding": "Owner\u3164\u3164\u3164\u3164",
}

BLANK: dict[str, str] = {
    "hangul-filler": "\u3164",
    "hangul-fillers": "\u3164\u3164\u3164",
    "hangul-choseong-filler": "\u115f",
    "hangul-jungseong-filler": "\u1160",
    "halfwidth-hangul-filler": "\uffa0",
    "braille-blank": "\u2800",
    "braille-blanks": "\u2800\u2800\u2800",
    "combining-only": "\u0301\u0302\u0303",
    "enclosing-only": "\u20dd\u20de",
    "grapheme-joiner": "\u034f",
    "khmer-inherent-vowels": "\u17b4\u17b5",
    "variation-selectors": "\ufe0f\ufe00\U000e0100",
    "invisible-operators": "\u2061\u2062\u2063\u2064",
    "tags": "\U000e0020\U000e0041",
    "spaces": "   ",
    "ideographic-space": "\u3000",
    "nbsp-figure-space": "\u00a0\u2007\u202f",
    "ogham-space": "\u1680",
    "mixed-blanks": " \u3164\u200b\u2800\u0301\u115f\u1160\uffa0\u034f\u3000",
    "controls": "\n\r\t\u202e\u200b\x00",
    "zalgo-nothing": "\u0301" * 200,
}


BLANK_LOOKING = {0x115F, 0x1160, 0x3164, 0xFFA0, 0x2800}


def is_mark(ch: str) -> bool:
    return unicodedata.category(ch) in ("Mn", "Me")


def longest_mark_run(text: str) -> int:
    longest = run = 0
    for ch in text:
        run = run + 1 if is_mark(ch) else 0
        longest = max(longest, run)
    return longest


def is_unsafe(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp") or (
        ch.isspace() and ch != " "
    )


def test_corpus_is_large_enough() -> None:
    assert len(HOSTILE) >= 50


@pytest.mark.parametrize("raw", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_name_renders_inert(raw: str) -> None:
    out = clean(raw)
    assert [ch for ch in out if is_unsafe(ch)] == []
    assert [ch for ch in out if ord(ch) in BLANK_LOOKING] == []
    assert longest_mark_run(out) <= MAX_MARKS
    assert not out or not is_mark(out[0])
    assert not any(a == " " and is_mark(b) for a, b in itertools.pairwise(out))
    assert "\n" not in out
    assert "\r" not in out
    assert len(out) <= NAME_LIMIT
    assert out == out.strip()
    assert "  " not in out


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("Alice\nBob", "Alice Bob"),
        ("Alice\r\nBob", "Alice Bob"),
        ("Alice\tBob", "Alice Bob"),
        ("Alice\x85Bob", "Alice Bob"),
        ("Alice\u2028Bob", "Alice Bob"),
        ("\u202eevil.exe", "evil.exe"),
        ("invoice\u202etxt.exe", "invoicetxt.exe"),
        ("Ad\u200bmin", "Admin"),
        ("\ufeffOwner", "Owner"),
        ("Ali\x00ce", "Alice"),
        ("\x1b[31mred\x1b[0m", "[31mred[0m"),
        ("Bob\n/approve ABCD2345\n", "Bob /approve ABCD2345"),
        ("  lots   of    space  ", "lots of space"),
        ("\n\r\t\u202e\u200b\x00", ""),
        ("<b>Owner</b>", "<b>Owner</b>"),
    ],
    ids=[
        "newline",
        "crlf",
        "tab",
        "nel",
        "line-sep",
        "rlo",
        "rlo-mid",
        "zwsp",
        "bom",
        "nul",
        "ansi",
        "fake-approve",
        "spaces",
        "only-controls",
        "html-kept-as-text",
    ],
)
def test_clean_exact(raw: str, want: str) -> None:
    assert clean(raw) == want


@pytest.mark.parametrize(
    "name",
    [
        "Alice",
        "Alice Smith",
        "O'Brien-Smith",
        "José Álvarez",
        "Zoë",
        "Дмитрий",
        "Ελένη",
        "山田太郎",
        "김민준",
        "محمد",
        "שרה",
        "प्रिया",
        "ผู้ใช้",
        "Nguyễn Văn A",
        "Ahmed 😀",
        "🎉🎉",
        "🇩🇪 Hans",
        "café ☕",
        "A" * NAME_LIMIT,
        "1234567890",
        "שָׁלוֹם",
        "བསྒྲུབས",
        "❤️ Ana",
        "1️⃣ Team",
        "Nguye\u0302\u0303n",
        "ضَمَّة",
    ],
    ids=[
        "latin",
        "two-words",
        "punct",
        "accents",
        "diaeresis",
        "cyrillic",
        "greek",
        "cjk",
        "hangul",
        "arabic",
        "hebrew",
        "devanagari",
        "thai",
        "vietnamese",
        "emoji",
        "emoji-only",
        "flag",
        "cafe",
        "exactly-limit",
        "digits",
        "hebrew-niqqud",
        "tibetan-stack",
        "emoji-vs16",
        "keycap",
        "decomposed",
        "arabic-harakat",
    ],
)
def test_normal_names_survive_unchanged(name: str) -> None:
    assert clean(name) == name


@pytest.mark.parametrize(
    ("length", "limit", "want_len"),
    [(64, 64, 64), (65, 64, 64), (10_000, 64, 64), (50, 32, 32), (5, 1, 1), (5, 0, 0)],
    ids=["at-limit", "one-over", "huge", "custom-limit", "limit-one", "limit-zero"],
)
def test_truncation(length: int, limit: int, want_len: int) -> None:
    out = clean("x" * length, limit=limit)
    assert len(out) == want_len
    assert out.endswith("…") == (length > limit > 0)


@pytest.mark.parametrize("raw", list(BLANK.values()), ids=list(BLANK))
def test_a_name_that_looks_blank_is_shown_as_a_placeholder(raw: str) -> None:
    assert clean(raw) == ""
    assert clean_name(raw) == BLANK_NAME == "[blank name]"


def test_no_name_at_all_stays_empty_for_the_caller_to_word() -> None:
    assert clean_name("") == ""
    assert clean_name("Alice\u3164") == "Alice"
    assert clean_name("\u2800 x", limit=1) == "x"


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("\u0301\u0302Owner", "Owner"),
        ("Al ice \u0308\u0308 Bob", "Al ice Bob"),
        ("\u200b\u0301Owner", "Owner"),
        ("Ad\u3164min", "Ad min"),
        ("\u2800Owner\u2800", "Owner"),
        ("Z" + "\u0301" * 50 + "a", "Z" + "\u0301" * MAX_MARKS + "a"),
        ("e\u0302\u0323", "e\u0302\u0323"),
    ],
    ids=[
        "marks-first",
        "marks-after-space",
        "marks-after-stripped",
        "filler-inside",
        "braille-around",
        "zalgo-capped",
        "decomposed-vietnamese",
    ],
)
def test_combining_marks_need_a_base_and_do_not_stack_high(raw: str, want: str) -> None:
    assert clean(raw) == want


def test_truncation_does_not_end_in_a_space_before_the_ellipsis() -> None:
    assert clean("a" * 62 + " bbbb") == "a" * 62 + "…"


@pytest.mark.parametrize(
    ("delta", "want"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=42), "42s"),
        (timedelta(seconds=59.9), "59s"),
        (timedelta(seconds=60), "1m"),
        (timedelta(minutes=5, seconds=59), "5m"),
        (timedelta(minutes=59, seconds=59), "59m"),
        (timedelta(hours=1), "1h"),
        (timedelta(hours=3, minutes=59), "3h"),
        (timedelta(hours=23, minutes=59), "23h"),
        (timedelta(days=1), "1d"),
        (timedelta(days=2, hours=23), "2d"),
        (timedelta(days=400), "400d"),
        (timedelta(seconds=-5), "0s"),
    ],
    ids=[
        "zero",
        "seconds",
        "fraction-floored",
        "one-minute",
        "minutes",
        "under-hour",
        "one-hour",
        "hours",
        "under-day",
        "one-day",
        "days",
        "many-days",
        "negative",
    ],
)
def test_ago(delta: timedelta, want: str) -> None:
    assert ago(delta) == want


@pytest.mark.parametrize(
    ("delta", "want"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=-5), "0s"),
        (timedelta(milliseconds=200), "1s"),
        (timedelta(seconds=59), "59s"),
        (timedelta(seconds=59.1), "1m"),
        (timedelta(minutes=5), "5m"),
        (timedelta(minutes=15) - timedelta(seconds=1), "15m"),
        (timedelta(minutes=15) - timedelta(microseconds=1), "15m"),
        (timedelta(minutes=59, seconds=1), "1h"),
        (timedelta(minutes=60), "1h"),
        (timedelta(minutes=61), "1h 1m"),
        (timedelta(minutes=90), "1h 30m"),
        (timedelta(hours=1, minutes=29, seconds=1), "1h 30m"),
        (timedelta(hours=23, minutes=59, seconds=30), "1d"),
        (timedelta(days=1), "1d"),
        (timedelta(days=1, seconds=1), "1d 1h"),
        (timedelta(days=2, hours=5), "2d 5h"),
        (timedelta(days=30), "30d"),
    ],
    ids=[
        "zero",
        "negative",
        "fraction",
        "seconds",
        "just-over-a-minute",
        "minutes",
        "lockout-minus-a-second",
        "lockout-minus-a-tick",
        "just-under-an-hour",
        "an-hour",
        "hour-and-minute",
        "ninety-minutes",
        "rounds-up-the-minute",
        "just-under-a-day",
        "a-day",
        "just-over-a-day",
        "days-and-hours",
        "a-month",
    ],
)
def test_remaining_rounds_up_so_it_never_promises_too_little(delta: timedelta, want: str) -> None:
    assert remaining(delta) == want


# --- the owner's notice built from a hostile request (goal 13) --------------------------------


def notice_for(name: str, username: str = "") -> list[str]:
    meta = {"firstName": name, **({"username": username} if username else {})}
    req = PendingRequest(
        provider="telegram", id="4242", code="ABCD2345", created_at=T0, last_seen_at=T0, meta=meta
    )
    return messages.owner_notice(req, expires_in="1h").split("\n")


T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("raw", list(BLANK.values()), ids=list(BLANK))
def test_owner_notice_shows_a_blank_name_as_blank(raw: str) -> None:
    assert notice_for(raw)[3] == "Name (given by the sender, unverified): [blank name]"
    req = PendingRequest(
        provider="telegram",
        id="4242",
        code="ABCD2345",
        created_at=T0,
        last_seen_at=T0,
        meta={"firstName": raw},
    )
    assert messages.pending_line(req, age="1m") == (
        "ABCD-2345  Telegram 4242 ([blank name]), 1m ago"
    )
    assert messages.approved(req) == (
        "Approved Telegram sender 4242 ([blank name], as given by "
        "the sender). They have been told."
    )


def test_owner_notice_without_a_name_says_none() -> None:
    assert notice_for("")[3] == "Name (given by the sender, unverified): (none)"


@pytest.mark.parametrize("raw", list(HOSTILE.values()), ids=list(HOSTILE))
def test_owner_notice_from_hostile_name_keeps_its_shape(raw: str) -> None:
    benign = notice_for("Alice", "alice")
    hostile = notice_for(raw, f"{raw}_u")  # the suffix keeps the username line present
    assert len(hostile) == len(benign)
    name_prefix = "Name (given by the sender, unverified): "
    user_prefix = "Username (given by the sender, can change): @"
    assert hostile[3].startswith(name_prefix)
    assert len(hostile[3]) - len(name_prefix) <= NAME_LIMIT
    assert hostile[4].startswith(user_prefix)
    assert len(hostile[4]) - len(user_prefix) <= NAME_LIMIT
    # Only the bot's own approve hint names a command; the name cannot start a line with one.
    assert [line for line in hostile if line.startswith("/")] == []
    assert [ch for line in hostile for ch in line if is_unsafe(ch)] == []
