"""bot/text.py: hostile names render inert (goal 13), normal names survive, ``ago`` units."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime, timedelta

import pytest

from bot import messages
from bot.models import PendingRequest
from bot.text import NAME_LIMIT, ago, clean

BIDI = [chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F,
                         0x061C]]
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
}


def is_unsafe(ch: str) -> bool:
    return (unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp")
            or (ch.isspace() and ch != " "))


def test_corpus_is_large_enough() -> None:
    assert len(HOSTILE) >= 50


@pytest.mark.parametrize("raw", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_name_renders_inert(raw: str) -> None:
    out = clean(raw)
    assert [ch for ch in out if is_unsafe(ch)] == []
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
    ids=["newline", "crlf", "tab", "nel", "line-sep", "rlo", "rlo-mid", "zwsp", "bom", "nul",
         "ansi", "fake-approve", "spaces", "only-controls", "html-kept-as-text"],
)
def test_clean_exact(raw: str, want: str) -> None:
    assert clean(raw) == want


@pytest.mark.parametrize(
    "name",
    ["Alice", "Alice Smith", "O'Brien-Smith", "José Álvarez", "Zoë", "Дмитрий", "Ελένη",
     "山田太郎", "김민준", "محمد", "שרה", "प्रिया", "ผู้ใช้", "Nguyễn Văn A", "Ahmed 😀", "🎉🎉",
     "🇩🇪 Hans", "café ☕", "A" * NAME_LIMIT, "1234567890"],
    ids=["latin", "two-words", "punct", "accents", "diaeresis", "cyrillic", "greek", "cjk",
         "hangul", "arabic", "hebrew", "devanagari", "thai", "vietnamese", "emoji",
         "emoji-only", "flag", "cafe", "exactly-limit", "digits"],
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
    ids=["zero", "seconds", "fraction-floored", "one-minute", "minutes", "under-hour",
         "one-hour", "hours", "under-day", "one-day", "days", "many-days", "negative"],
)
def test_ago(delta: timedelta, want: str) -> None:
    assert ago(delta) == want


# --- the owner's notice built from a hostile request (goal 13) --------------------------------

def notice_for(name: str, username: str = "") -> list[str]:
    meta = {"firstName": name, **({"username": username} if username else {})}
    req = PendingRequest(provider="telegram", id="4242", code="ABCD2345", created_at=T0,
                         last_seen_at=T0, meta=meta)
    return messages.owner_notice(req, expires_in="1h").split("\n")


T0 = datetime(2026, 1, 1, tzinfo=UTC)


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
