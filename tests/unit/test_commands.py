"""The owner commands table and its parser (bot/core/commands.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.core.commands import (
    COMMANDS,
    Allowlist,
    Approve,
    Help,
    Invite,
    NodeAction,
    NodeDecision,
    Nodes,
    OwnerCommand,
    Pending,
    Reject,
    Revoke,
    Usage,
    command_word,
    is_command,
    parse,
    umbrella_line,
)

# --- parse -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("/approve ABCD2345", Approve(line="/approve ABCD2345", code="ABCD2345")),
        ("  /approve ABCD 2345 ", Approve(line="/approve ABCD 2345", code="ABCD2345")),
        ("/APPROVE@my_bot abcd-2345", Approve(line="/APPROVE@my_bot abcd-2345", code="abcd-2345")),
        (
            "/approve abcd-2345 7d",
            Approve(line="/approve abcd-2345 7d", code="abcd-2345", lasting=timedelta(days=7)),
        ),
        (
            "/approve ABCD 2345 2W",
            Approve(line="/approve ABCD 2345 2W", code="ABCD2345", lasting=timedelta(days=14)),
        ),
        ("/approve ABCD 2345", Approve(line="/approve ABCD 2345", code="ABCD2345")),
        ("/approve ABC 7d", Approve(line="/approve ABC 7d", code="ABC7d")),
        ("/reject X", Reject(line="/reject X", code="X")),
        ("/pending", Pending(line="/pending")),
        ("/pending everything", Pending(line="/pending everything")),
        ("/allowlist", Allowlist(line="/allowlist", provider=None)),
        ("/allowlist Slack extra", Allowlist(line="/allowlist Slack extra", provider="slack")),
        ("/allowlist myspace", Allowlist(line="/allowlist myspace", provider="myspace")),
        ("/allowlist 3", Allowlist(line="/allowlist 3", provider=None, page=3)),
        ("/allowlist Slack 2", Allowlist(line="/allowlist Slack 2", provider="slack", page=2)),
        (
            "/revoke Telegram 42",
            Revoke(line="/revoke Telegram 42", provider="telegram", sender_id="42"),
        ),
        ("/nodes", Nodes(line="/nodes")),
        (
            "/nodes APPROVE req-1",
            NodeDecision(line="/nodes APPROVE req-1", action=NodeAction.APPROVE, ident="req-1"),
        ),
        (
            "/nodes revoke node-1",
            NodeDecision(line="/nodes revoke node-1", action=NodeAction.REVOKE, ident="node-1"),
        ),
        ("/help me", Help(line="/help me")),
    ],
    ids=[
        "approve",
        "approve-split-code",
        "approve-upper-suffix",
        "approve-for-a-week",
        "approve-split-code-for-two-weeks",
        "approve-split-code-is-no-duration",
        "approve-short-code-is-all-code",
        "reject",
        "pending",
        "pending-ignores-words",
        "allowlist",
        "allowlist-lowered-first-word-only",
        "allowlist-unknown-is-not-usage",
        "allowlist-page",
        "allowlist-provider-page",
        "revoke",
        "nodes",
        "nodes-approve",
        "nodes-revoke",
        "help",
    ],
)
def test_a_line_becomes_its_typed_command(text: str, want: OwnerCommand) -> None:
    assert parse(text) == want


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("/nodes invite", Invite(line="/nodes invite")),
        ("/nodes INVITE 30M", Invite(line="/nodes INVITE 30M", lasting=timedelta(minutes=30))),
        (
            "/nodes invite 2h Pixel 9",
            Invite(line="/nodes invite 2h Pixel 9", lasting=timedelta(hours=2), name="Pixel 9"),
        ),
        ("/nodes invite Pixel 9", Invite(line="/nodes invite Pixel 9", name="Pixel 9")),
        ("/nodes invite 90 Pixel", Invite(line="/nodes invite 90 Pixel", name="90 Pixel")),
        ("/nodes invite 1D", Invite(line="/nodes invite 1D", lasting=timedelta(days=1))),
    ],
    ids=["default", "lasting", "lasting-and-name", "name", "a-bare-number-is-a-name", "upper"],
)
def test_nodes_invite_reads_how_long_and_a_name(text: str, want: Invite) -> None:
    assert parse(text) == want


@pytest.mark.parametrize(
    ("text", "usage"),
    [
        ("/approve", "Usage: /approve CODE [DURATION]"),
        (
            "/approve ABCD-2345 7x",
            "Not a duration: '7x' (use e.g. 30m, 24h, 7d, 2w). Usage: /approve CODE [DURATION]",
        ),
        (
            "/approve ABCD-2345 60",
            "Not a duration: '60' (use e.g. 30m, 24h, 7d, 2w). Usage: /approve CODE [DURATION]",
        ),
        (
            "/approve ABCD-2345 0s",
            "Duration '0s': must be longer than zero. Usage: /approve CODE [DURATION]",
        ),
        (
            "/approve ABCD-2345 3651d",
            "Duration '3651d': must be from 1s to 3650d. Usage: /approve CODE [DURATION]",
        ),
        ("/reject   ", "Usage: /reject CODE"),
        ("/revoke", "Usage: /revoke PROVIDER ID"),
        ("/revoke myspace 42", "Usage: /revoke PROVIDER ID"),
        ("/revoke telegram 42 extra", "Usage: /revoke PROVIDER ID"),
        (
            "/nodes list",
            "Usage: /nodes [approve ID | reject ID | revoke NODE_ID | invite [30m] [NAME]]",
        ),
        (
            "/nodes approve",
            "Usage: /nodes [approve ID | reject ID | revoke NODE_ID | invite [30m] [NAME]]",
        ),
        (
            "/nodes approve A B",
            "Usage: /nodes [approve ID | reject ID | revoke NODE_ID | invite [30m] [NAME]]",
        ),
    ],
)
def test_a_known_command_written_wrong_is_a_usage(text: str, usage: str) -> None:
    parsed = parse(text)
    assert isinstance(parsed, Usage)
    assert (parsed.text, parsed.line) == (usage, text.strip())


@pytest.mark.parametrize(
    "text",
    ["", "   ", "hello /approve X", "approve X", "/start", "/approvedx", "/ approve", "/"],
)
def test_anything_else_is_no_command(text: str) -> None:
    assert parse(text) is None
    assert parse(text, bare=False) is None


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("approve ABCD2345", Approve(line="/approve ABCD2345", code="ABCD2345")),
        ("  Pending ", Pending(line="/Pending")),
        ("/approve X", Approve(line="/approve X", code="X")),
        (
            "nodes reject r1",
            NodeDecision(line="/nodes reject r1", action=NodeAction.REJECT, ident="r1"),
        ),
        ("revoke", Usage(line="/revoke", command=next(c for c in COMMANDS if c.name == "revoke"))),
    ],
    ids=["bare", "bare-padded-mixed-case", "slashed-still-works", "bare-nodes", "bare-usage"],
)
def test_bare_commands_get_their_slash_back(text: str, want: OwnerCommand) -> None:
    assert parse(text, bare=True) == want


@pytest.mark.parametrize("text", ["hello there", "approve@bot X", "approvedx", "/unknown x", ""])
def test_bare_mode_still_knows_plain_text(text: str) -> None:
    assert parse(text, bare=True) is None


words = st.sampled_from([c.name for c in COMMANDS] + ["start", "approvedx", "", "APPROVE"])
lines = st.builds(
    lambda pad, slash, word, rest: f"{pad}{slash}{word} {rest}",
    st.sampled_from(["", " ", "\n", "\t"]),
    st.sampled_from(["", "/"]),
    words,
    st.text(max_size=20),
)


@given(text=st.one_of(lines, st.text(max_size=30)), bare=st.booleans())
def test_is_command_is_what_parse_recognises(text: str, bare: bool) -> None:
    parsed = parse(text, bare=bare)
    assert is_command(text, bare=bare) == (parsed is not None)
    if parsed is not None:
        assert parsed.line.startswith("/")
        assert parsed.line.removeprefix("/").strip() in (text.strip(), text.strip()[1:])


# --- the table ---------------------------------------------------------------------------------


def test_every_command_is_listed_once_with_help_and_a_summary() -> None:
    names = [c.name for c in COMMANDS]
    assert len(names) == len(set(names))
    for command in COMMANDS:
        assert command.help
        assert all(how.startswith(command.word) for how, _ in command.help)
        assert command.summary
        assert len(command.summary) <= 100  # Discord's limit for a command's description


# --- command_word ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("/approve ABCD2345", "/approve"),
        ("/approve@my_bot ABCD2345", "/approve"),
        ("/Approve@My_Bot", "/approve"),
        ("   /pending", "/pending"),
        ("\n\t/nodes approve X", "/nodes"),
        ("/help", "/help"),
        ("", ""),
        ("   ", ""),
        ("hello /approve X", ""),
        ("approve", ""),
        ("/", "/"),
        ("/approve\nABCD2345", "/approve"),
    ],
    ids=[
        "plain",
        "bot-suffix",
        "mixed-case-suffix",
        "leading-spaces",
        "leading-newline-tab",
        "bare",
        "empty",
        "blank",
        "not-first-word",
        "no-slash",
        "slash-only",
        "newline-arg",
    ],
)
def test_command_word(text: str, want: str) -> None:
    assert command_word(text) == want


@pytest.mark.parametrize(
    ("words", "line"),
    [
        ("approve abcd-2345", "/approve abcd-2345"),
        ("  pending ", "/pending"),
        ("/pending", "/pending"),
        ("//nodes approve r1", "/nodes approve r1"),
        ("weather today", "/weather today"),
    ],
    ids=["approve", "padded", "slash-too-many", "slashes-too-many", "no-command"],
)
def test_an_umbrella_command_stands_for_the_line_of_its_words(words: str, line: str) -> None:
    assert umbrella_line(words) == line


@pytest.mark.parametrize("words", ["", "   ", "/"])
def test_an_umbrella_command_without_words_asks_for_help(words: str) -> None:
    assert parse(umbrella_line(words)) == Help(line="/help")
