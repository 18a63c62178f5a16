"""Texts the owner reads, as adapted per platform."""

from __future__ import annotations

import pytest

from bot.core.messages import HELP, without_slashes


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
