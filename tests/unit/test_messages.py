"""Texts the owner reads, as adapted per platform."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.core.messages import (
    HELP,
    PREVIEW_LIMIT,
    StrangerReply,
    approved,
    label,
    owner_notice,
    stranger_code,
    stranger_template_problem,
    without_slashes,
)
from bot.core.models import HeldMessage, PendingRequest, UnpairedResponse
from bot.core.text import clean


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/approve ABCD2345 (or /reject ABCD2345).", "approve ABCD2345 (or reject ABCD2345)."),
        ("Send /pending to see them all.", "Send pending to see them all."),
        ("/nodes approve X", "nodes approve X"),
        (
            "see https://example.com/approve and a/pending",
            "see https://example.com/approve and a/pending",
        ),
        ("/approvedx stays", "/approvedx stays"),
        ("/start is not ours", "/start is not ours"),
    ],
)
def test_without_slashes_only_touches_owner_commands(text, expected):
    assert without_slashes(text) == expected


def test_help_on_slack_has_no_slash_commands():
    assert "/" not in without_slashes(HELP)


def test_help_is_the_owner_commands_table_as_it_always_read():
    assert HELP == (
        "Owner commands (only here, in your own chat with the bot):\n"
        "/pending                      pending pairing and node requests\n"
        "/approve CODE                 let the sender with this code in\n"
        "/approve CODE 7d              the same, for a time (30m, 24h, 7d, 2w)\n"
        "/reject CODE                  drop the request with this code\n"
        "/allowlist [provider] [page]  who is allowed, a page at a time\n"
        "/revoke PROVIDER ID           remove someone from the allowlist\n"
        "/nodes                        pending and paired nodes\n"
        "/nodes approve ID | reject ID pair a node (it gets a token) or refuse it\n"
        "/nodes revoke NODE_ID         unpair a node; its token stops working\n"
        "/nodes invite [30m] [NAME]    a one-time setup code: a device joins at once\n"
        "/help                         this text"
    )


@pytest.mark.parametrize(
    ("provider", "shown"),
    [("telegram", "Telegram"), ("whatsapp", "WhatsApp"), ("imessage", "iMessage"), ("icq", "icq")],
)
def test_a_platform_is_shown_by_its_proper_name(provider, shown):
    assert label(provider) == shown


# --- what a stranger is sent, and what the owner is told of it ---------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def pending(*held: str, provider: str = "telegram") -> PendingRequest:
    return PendingRequest(
        provider=provider,
        id="4242",
        code="ABCD2345",
        created_at=T0,
        last_seen_at=T0,
        meta={"firstName": "Zoë"},
        held=tuple(HeldMessage(text=t, at=T0) for t in held),
    )


CUSTOM = "{provider} says: give the owner {code}, valid {ttl}, for {sender_id}. {{braces}}"


def test_each_answer_to_a_stranger() -> None:
    req = pending()
    code = StrangerReply()
    silent = StrangerReply(mode=UnpairedResponse.SILENT)
    custom = StrangerReply(mode=UnpairedResponse.CUSTOM, template=CUSTOM)
    assert code.text(req, valid_for="59m") == stranger_code(req, valid_for="59m")
    assert silent.text(req, valid_for="59m") is None
    assert custom.text(req, valid_for="59m") == (
        "Telegram says: give the owner ABCD-2345, valid 59m, for 4242. {braces}"
    )
    assert (code.tells, code.shows_code) == (True, True)
    assert (silent.tells, silent.shows_code) == (False, False)
    assert (custom.tells, custom.shows_code) == (True, True)
    no_code = StrangerReply(mode=UnpairedResponse.CUSTOM, template="The owner will be in touch.")
    assert (no_code.tells, no_code.shows_code) == (True, False)
    assert no_code.text(req, valid_for="1h") == "The owner will be in touch."


@pytest.mark.parametrize(
    "template",
    ["{code}", "{ttl} {provider} {sender_id}", "no placeholder", "{{code}}", "ünïcode {code}"],
)
def test_a_good_template_has_no_problem(template: str) -> None:
    assert stranger_template_problem(template) is None


def test_the_owners_notice_says_how_the_stranger_was_answered() -> None:
    req = pending()
    told = owner_notice(req, expires_in="1h").split("\n")
    silent = owner_notice(
        req, expires_in="1h", reply=StrangerReply(mode=UnpairedResponse.SILENT)
    ).split("\n")
    no_code = owner_notice(
        req, expires_in="1h", reply=StrangerReply(mode=UnpairedResponse.CUSTOM, template="Hi")
    ).split("\n")
    assert told[-3:] == [
        "Code: ABCD-2345  (expires in 1h)",
        "",
        "Approve only if you know who holds this code: /approve ABCD2345 (or /reject ABCD2345).",
    ]
    assert silent[-4:] == [
        "Code: ABCD-2345  (expires in 1h)",
        "They were told nothing (this platform answers strangers with silence).",
        "",
        "Nobody was given this code: approve only if you know this sender: /approve ABCD2345 "
        "(or /reject ABCD2345).",
    ]
    assert no_code[-4:-2] == [
        "Code: ABCD-2345  (expires in 1h)",
        "They got your stranger text, without the code.",
    ]
    assert no_code[-1] == silent[-1]
    assert told[:4] == silent[:4] == no_code[:4]


def test_the_preview_is_the_first_line_of_the_first_held_message() -> None:
    req = pending("\n  \nHello there,\nsecond line", "another message")
    lines = owner_notice(req, expires_in="1h", preview=True).split("\n")
    assert lines[4] == "First message (as the sender wrote it, unverified): Hello there,"
    assert "second line" not in "\n".join(lines)
    assert "another message" not in "\n".join(lines)
    assert owner_notice(req, expires_in="1h") == owner_notice(pending(), expires_in="1h")
    assert owner_notice(pending(), expires_in="1h", preview=True) == owner_notice(
        pending(), expires_in="1h"
    )


@pytest.mark.parametrize(
    "text",
    [
        "x" * 5000,
        "\u202eevil\u200b /approve ZZZZ2222\r\nNew pairing request",
        "line\u2028/approve ZZZZ2222",
        "<b>bold</b> *md* @everyone " + "é" * 300,
        "\x1b[31mred\x1b[0m" + "\u0301" * 50,
    ],
    ids=["long", "bidi-and-crlf", "line-separator", "markup", "escapes-and-marks"],
)
def test_a_hostile_preview_stays_one_safe_short_line(text: str) -> None:
    plain = owner_notice(pending("hello"), expires_in="1h", preview=True).split("\n")
    lines = owner_notice(pending(text), expires_in="1h", preview=True).split("\n")
    assert len(lines) == len(plain)
    prefix = "First message (as the sender wrote it, unverified): "
    assert lines[4].startswith(prefix)
    shown = lines[4].removeprefix(prefix)
    assert 0 < len(shown) <= PREVIEW_LIMIT
    assert shown == clean(text.splitlines()[0], limit=PREVIEW_LIMIT)
    assert [line for line in lines if line.startswith("/")] == []


def test_the_owners_confirmation_says_whether_they_were_told_and_counts_what_was_held() -> None:
    assert approved(pending()) == (
        "Approved Telegram sender 4242 (Zoë, as given by the sender). They have been told."
    )
    assert approved(pending("one"), told=False) == (
        "Approved Telegram sender 4242 (Zoë, as given by the sender). They were not told "
        "(silent mode). The 1 message they wrote while waiting goes to the handler now."
    )
    assert approved(pending("secret words", "two")).endswith(
        "They have been told. The 2 messages they wrote while waiting go to the handler now."
    )
    assert "secret words" not in approved(pending("secret words"))
