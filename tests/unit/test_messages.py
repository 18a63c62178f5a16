"""Texts the owner reads, as adapted per platform."""

from __future__ import annotations

import pytest

from bot.core.messages import HELP, label, without_slashes


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
        "/help                         this text"
    )


@pytest.mark.parametrize(
    ("provider", "shown"),
    [("telegram", "Telegram"), ("whatsapp", "WhatsApp"), ("imessage", "iMessage"), ("icq", "icq")],
)
def test_a_platform_is_shown_by_its_proper_name(provider, shown):
    assert label(provider) == shown
