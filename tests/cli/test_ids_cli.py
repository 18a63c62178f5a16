"""The ``pairbot`` command's sender ids: taken in the platform's normal form, refused in one line
when they can never be a sender of that platform."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bot.core.clock import SystemClock
from bot.services.pairing import PairingService
from stores.jsonfile import JsonFileStore
from tests.process import run_pairbot

ACI = "0a11ce00-0000-4000-8000-00000000000a"


def run(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_pairbot("--state-dir", str(state), *args)


@pytest.fixture
def pairing(state_dir: Path) -> PairingService:
    return PairingService(JsonFileStore(state_dir), clock=SystemClock())


@pytest.mark.parametrize(
    ("provider", "written", "stored"),
    [
        ("signal", ACI.upper(), ACI),
        ("imessage", "Alice@Example.COM", "alice@example.com"),
        ("whatsapp", "+1 555 010 0001", "15550100001"),
        ("slack", "u012ab3cd", "U012AB3CD"),
    ],
    ids=["signal", "imessage", "whatsapp", "slack"],
)
def test_allowlist_add_and_remove_take_the_normal_form(
    state_dir: Path, pairing: PairingService, provider: str, written: str, stored: str
) -> None:
    added = run(state_dir, "allowlist", "add", provider, written)
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == f"Added {provider} sender {stored}."
    rows = json.loads(run(state_dir, "allowlist", "list", "--json").stdout)
    assert rows == [{"provider": provider, "id": stored, "source": "store"}]
    assert pairing.is_allowed(provider, stored)

    again = run(state_dir, "allowlist", "add", provider, stored)
    assert "already allowed" in again.stdout

    removed = run(state_dir, "allowlist", "remove", provider, written)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.strip() == f"Removed {provider} sender {stored}."
    assert not pairing.is_allowed(provider, stored)


@pytest.mark.parametrize(
    ("provider", "written", "error"),
    [
        (
            "signal",
            "+15550100001",
            "ID '+15550100001' is not a Signal account UUID (ACI) (usernames can change hands)",
        ),
        (
            "telegram",
            "-1001234567",
            "ID '-1001234567' is not a numeric Telegram user id (usernames can change hands)",
        ),
        (
            "imessage",
            "5550100001",
            "ID '5550100001' is not an iMessage handle (+E.164 number or email) (usernames can "
            "change hands)",
        ),
        ("slack", "@alice", "slack sender ids are immutable ids, not @usernames"),
    ],
    ids=["signal-phone", "telegram-group", "imessage-national", "slack-username"],
)
def test_allowlist_add_refuses_an_id_that_can_never_match_in_one_line(
    state_dir: Path, provider: str, written: str, error: str
) -> None:
    result = run(state_dir, "allowlist", "add", provider, written)
    assert result.returncode == 2
    assert result.stderr.strip() == f"pairbot: error: {error}"
    assert json.loads(run(state_dir, "allowlist", "list", "--json").stdout) == []
