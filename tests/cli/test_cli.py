"""The installed ``pairbot`` command, run as a subprocess on a temp state dir."""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from bot.core.clock import FakeClock, SystemClock, iso
from bot.core.models import FOREVER, RequestResult
from bot.core.text import moment
from bot.services.nodes import NodeService
from bot.services.pairing import PairingService, PairingSettings
from stores.jsonfile import JsonFileStore
from tests.process import run_pairbot


def run(
    state: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``pairbot`` on the state dir ``state`` (unless ``env`` names one)."""
    if "PAIRBOT_STATE_DIR" not in (env or {}):
        args = ("--state-dir", str(state), *args)
    return run_pairbot(*args, env=env, cwd=cwd)


def code_of(result: RequestResult) -> str:
    assert result.request is not None
    return result.request.code


@pytest.fixture
def live(state_dir: Path) -> tuple[JsonFileStore, PairingService, NodeService]:
    store = JsonFileStore(state_dir)
    clock = SystemClock()
    return store, PairingService(store, clock=clock), NodeService(store, clock=clock)


def test_the_command_is_installed_and_has_help(state_dir):
    result = run(state_dir, "--help")
    assert result.returncode == 0
    for group in ("pairing", "allowlist", "nodes", "audit", "doctor"):
        assert group in result.stdout


def test_empty_state_lists_nothing(state_dir):
    result = run(state_dir, "pairing", "list")
    assert (result.returncode, result.stdout.strip()) == (0, "No pending pairing requests.")
    assert json.loads(run(state_dir, "pairing", "list", "--json").stdout) == []


def test_pairing_list_json_has_the_documented_fields(state_dir, live):
    _, pairing, _ = live
    made = pairing.request("telegram", "42", {"firstName": "Alice", "username": "alice"})
    pairing.request("slack", "U0SLACK", {"name": "Bob"})
    everything = json.loads(run(state_dir, "pairing", "list", "--json").stdout)
    assert {r["provider"] for r in everything} == {"telegram", "slack"}
    for form in (
        ["pairing", "list", "telegram", "--json"],
        ["pairing", "list", "--provider", "telegram", "--json"],
    ):
        rows = json.loads(run(state_dir, *form).stdout)
        assert [sorted(r) for r in rows] == [
            ["code", "createdAt", "id", "lastSeenAt", "meta", "provider"]
        ]
        assert rows[0]["code"] == code_of(made)
        assert rows[0]["id"] == "42"
        assert rows[0]["meta"] == {"firstName": "Alice", "username": "alice"}
    table = run(state_dir, "pairing", "list")
    assert code_of(made) in table.stdout
    assert "Alice" in table.stdout


@pytest.mark.parametrize("form", ["positional", "option"])
def test_approve_by_code_in_either_form_and_tolerant_input(state_dir, live, form):
    _, pairing, _ = live
    code = code_of(pairing.request("telegram", "42", {"firstName": "Alice"}))
    typed = f" {code[:4].lower()}-{code[4:].lower()} "
    args = (
        ["pairing", "approve", "telegram", typed]
        if form == "positional"
        else ["pairing", "approve", "--provider", "telegram", typed]
    )
    result = run(state_dir, *args)
    assert result.returncode == 0, result.stderr
    assert "Approved telegram sender 42 (Alice)." in result.stdout
    assert pairing.is_allowed("telegram", "42")
    again = run(state_dir, *args)
    assert again.returncode == 1
    assert (
        again.stderr.strip() == "pairbot: error: no pending pairing request for telegram "
        "has that code"
    )
    assert code not in again.stderr


def test_approve_counts_the_messages_held_and_never_shows_them(state_dir, live):
    store, _, _ = live
    settings = PairingSettings(hold_messages=3)
    holding = PairingService(store, clock=SystemClock(), settings=settings)
    code = code_of(holding.request("telegram", "42", text="my words"))
    holding.request("telegram", "42", text="more words")
    result = run(state_dir, "pairing", "approve", "telegram", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == (
        "The 2 messages they wrote while waiting go to the handler once a running bot tells them."
    )
    assert "words" not in result.stdout


def test_approve_for_the_wrong_provider_is_unknown(state_dir, live):
    _, pairing, _ = live
    code = code_of(pairing.request("telegram", "42"))
    result = run(state_dir, "pairing", "approve", "slack", code)
    assert result.returncode == 1
    assert pairing.pending("telegram")


def test_expired_code_says_expired(state_dir):
    store = JsonFileStore(state_dir)
    past = FakeClock(SystemClock().now() - timedelta(hours=2))
    code = code_of(PairingService(store, clock=past).request("telegram", "42"))
    result = run(state_dir, "pairing", "approve", "telegram", code)
    assert result.returncode == 1
    assert "expired" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_reject_drops_the_request(state_dir, live):
    _, pairing, _ = live
    code = code_of(pairing.request("discord", "1234"))
    result = run(state_dir, "pairing", "reject", "--provider", "discord", code)
    assert result.returncode == 0, result.stderr
    assert "Rejected discord sender 1234." in result.stdout
    assert pairing.pending() == []
    assert not pairing.is_allowed("discord", "1234")


@pytest.mark.parametrize(
    "args",
    [
        ["pairing", "list", "matrix"],
        ["pairing", "approve", "--provider", "matrix", "ABCD2345"],
        ["pairing", "approve", "ABCD2345"],
        ["pairing", "approve", "telegram", "ABCD2345", "extra"],
        ["pairing", "approve", "--provider", "telegram", "telegram", "ABCD2345"],
        ["allowlist", "add", "--provider", "telegram", "@alice"],
        ["allowlist", "add", "telegram", "alice"],
        ["audit", "--limit", "0"],
        ["nodes"],
    ],
    ids=[
        "unknown-provider",
        "unknown-provider-option",
        "missing-provider",
        "too-many",
        "both-forms",
        "username",
        "non-numeric-id",
        "bad-limit",
        "no-action",
    ],
)
def test_usage_errors_exit_2_with_one_line(state_dir, args):
    result = run(state_dir, *args)
    assert result.returncode == 2
    assert "error:" in result.stderr.strip().splitlines()[-1]


def test_allowlist_add_list_remove(state_dir, live):
    _, pairing, _ = live
    assert run(state_dir, "allowlist", "add", "--provider", "telegram", "42").returncode == 0
    assert run(state_dir, "allowlist", "add", "slack", "U0SLACK").returncode == 0
    again = run(state_dir, "allowlist", "add", "telegram", "42")
    assert (again.returncode, "already allowed" in again.stdout) == (0, True)
    rows = json.loads(run(state_dir, "allowlist", "list", "--json").stdout)
    assert rows == [
        {"provider": "telegram", "id": "42", "source": "store"},
        {"provider": "slack", "id": "U0SLACK", "source": "store"},
    ]
    only = json.loads(run(state_dir, "allowlist", "list", "--provider", "slack", "--json").stdout)
    assert only == [{"provider": "slack", "id": "U0SLACK", "source": "store"}]
    assert pairing.is_allowed("telegram", "42")
    assert run(state_dir, "allowlist", "remove", "--provider", "telegram", "42").returncode == 0
    assert not pairing.is_allowed("telegram", "42")
    missing = run(state_dir, "allowlist", "remove", "telegram", "42")
    assert missing.returncode == 1
    assert "not in the allowlist" in missing.stderr


def test_grants_that_end_from_the_command_line(state_dir, live):
    store, pairing, _ = live
    code = code_of(pairing.request("telegram", "42", {"firstName": "Alice"}))
    approved = run(state_dir, "pairing", "approve", "--provider", "telegram", code, "--for", "7d")
    assert approved.returncode == 0, approved.stderr
    end = store.allowed_until("telegram", "42")
    assert end is not None
    assert end is not FOREVER
    assert approved.stdout.strip() == (
        f"Approved telegram sender 42 (Alice) until {moment(end)}, 7d left."
    )
    added = run(state_dir, "allowlist", "add", "slack", "U0SLACK", "--for", "24h")
    assert added.stdout.startswith("Added slack sender U0SLACK until "), added.stdout
    assert run(state_dir, "allowlist", "add", "telegram", "7").returncode == 0
    for_good = run(state_dir, "allowlist", "add", "slack", "U0SLACK")
    assert for_good.stdout.strip() == "slack sender U0SLACK is now allowed for good."

    rows = json.loads(run(state_dir, "allowlist", "list", "--json").stdout)
    assert rows == [
        {"provider": "telegram", "id": "7", "source": "store"},
        {"provider": "telegram", "id": "42", "source": "store", "until": iso(end)},
        {"provider": "slack", "id": "U0SLACK", "source": "store"},
    ]
    table = run(state_dir, "allowlist", "list").stdout
    assert "Until" in table
    assert f"{moment(end)}, 7d left" in table


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["pairing", "approve", "telegram", "ABCD2345", "--for", "7x"], "not a duration: '7x'"),
        (["allowlist", "add", "telegram", "42", "--for", "60"], "not a duration: '60'"),
        (["allowlist", "add", "telegram", "42", "--for", "0s"], "duration '0s': must be longer"),
    ],
    ids=["approve-no-unit", "add-bare-number", "add-zero"],
)
def test_a_bad_for_is_one_line_naming_the_argument(state_dir, args, problem):
    result = run(state_dir, *args)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"pairbot: error: --for: {problem}")
    assert JsonFileStore(state_dir).allowed_until("telegram", "42") is None


def test_nodes_approve_prints_the_token_once_and_stores_only_its_hash(state_dir, live):
    _, _, nodes = live
    ask = nodes.request("pixel-9", display_name="Pixel 9", platform="android", version="1.0")
    pending = json.loads(run(state_dir, "nodes", "pending", "--json").stdout)
    assert [(p["requestId"], p["nodeId"], p["displayName"], p["platform"]) for p in pending] == [
        (ask.request.request_id, "pixel-9", "Pixel 9", "android")
    ]
    result = run(state_dir, "nodes", "approve", ask.request.request_id.lower())
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip().splitlines()[-1]
    assert len(token) >= 43
    assert nodes.verify("pixel-9", token) is not None
    for path in state_dir.rglob("*"):
        if path.is_file():
            assert token not in path.read_text(errors="replace"), path
    listed = json.loads(run(state_dir, "nodes", "list", "--json").stdout)
    assert [n["nodeId"] for n in listed] == ["pixel-9"]
    assert "token" not in json.dumps(listed).lower().replace("tokenhash", "")
    assert run(state_dir, "nodes", "pending", "--json").stdout.strip() == "[]"
    assert run(state_dir, "nodes", "revoke", "pixel-9").returncode == 0
    assert nodes.verify("pixel-9", token) is None
    assert run(state_dir, "nodes", "revoke", "pixel-9").returncode == 1


def test_nodes_reject_and_unknown_ids(state_dir, live):
    _, _, nodes = live
    ask = nodes.request("esp32-kitchen")
    assert run(state_dir, "nodes", "reject", ask.request.request_id).returncode == 0
    assert nodes.paired() == []
    unknown = run(state_dir, "nodes", "approve", ask.request.request_id)
    assert unknown.returncode == 1
    assert "no pending node request" in unknown.stderr


def test_audit_lists_events_without_secrets(state_dir, live):
    _, pairing, _ = live
    code = code_of(pairing.request("telegram", "42"))
    run(state_dir, "pairing", "approve", "telegram", code)
    records = json.loads(run(state_dir, "audit", "--json").stdout)
    assert [(r["event"], r["outcome"]) for r in records] == [
        ("request", "created"),
        ("approve", "approved"),
    ]
    assert records[1]["actor"].startswith("cli:")
    assert all({"ts", "actor", "provider", "subject", "outcome"} <= r.keys() for r in records)
    assert len(json.loads(run(state_dir, "audit", "--json", "--limit", "1").stdout)) == 1
    assert code not in (state_dir / "audit.jsonl").read_text()
    assert "approve" in run(state_dir, "audit").stdout


def test_state_dir_from_environment(tmp_path):
    env_dir = tmp_path / "from-env"
    result = run(
        tmp_path, "allowlist", "add", "telegram", "7", env={"PAIRBOT_STATE_DIR": str(env_dir)}
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((env_dir / "credentials" / "telegram-allowFrom.json").read_text()) == {
        "version": 1,
        "allowFrom": ["7"],
    }


def test_corrupt_state_file_is_reported_and_left_byte_identical(state_dir, live):
    path = state_dir / "credentials" / "telegram-pairing.json"
    path.write_bytes(b'{"version": 1, "requests": [')
    before = path.read_bytes()
    result = run(state_dir, "pairing", "list")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(path) in lines[0]
    assert "not valid JSON" in lines[0]
    assert path.read_bytes() == before
    assert run(state_dir, "pairing", "approve", "telegram", "ABCD2345").returncode == 2
    assert path.read_bytes() == before


def test_doctor_passes_on_a_clean_dir_and_flags_loose_modes(state_dir, live):
    _, pairing, _ = live
    pairing.request("telegram", "42")
    ok = run(state_dir, "doctor")
    assert ok.returncode == 0, ok.stdout
    assert "No problems found." in ok.stdout
    loose = state_dir / "credentials" / "telegram-pairing.json"
    loose.chmod(0o644)
    bad = run(state_dir, "doctor")
    assert bad.returncode == 1
    assert "0644" in bad.stdout


def test_pairing_list_shows_a_blank_name_and_rounds_the_time_left_up(state_dir):
    store = JsonFileStore(state_dir)
    ten_minutes_ago = FakeClock(SystemClock().now() - timedelta(minutes=10))
    PairingService(store, clock=ten_minutes_ago).request(
        "telegram", "42", {"firstName": "\u3164\u2800"}
    )
    store.close()
    result = run(state_dir, "pairing", "list")
    [row] = [line for line in result.stdout.splitlines() if " 42 " in line]
    assert "[blank name]" in row
    assert "10m ago" in row
    assert "in 50m" in row  # 49m59.x left: said as 50m, not 49m


def private_config(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    config = tmp_path / "pairbot.yaml"
    config.write_text(text)
    config.chmod(mode)
    return config


OWNED = "owners: [{provider: telegram, user_id: '111'}]\n"


@pytest.mark.parametrize(
    ("mode", "line"),
    [
        (0o600, "ok   {config}: mode 0600, only its owner can read or write it"),
        (0o400, "ok   {config}: mode 0400, only its owner can read or write it"),
        (
            0o640,
            "FAIL {config}: group or others can read it (mode 0640), and it may hold secrets "
            "(chmod 600 the file)",
        ),
        (
            0o664,
            "FAIL {config}: group or others can write it (mode 0664), and whoever can write "
            "it can make themselves owner (chmod 600 the file)",
        ),
    ],
    ids=["0600", "0400", "0640", "0664"],
)
def test_doctor_says_what_run_says_of_the_config_mode(state_dir, tmp_path, mode, line):
    config = private_config(tmp_path, OWNED, mode)
    result = run(state_dir, "--config", str(config), "doctor")
    assert line.format(config=config) in result.stdout.splitlines()
    assert result.returncode == (0 if mode in (0o600, 0o400) else 1), result.stdout


def test_doctor_says_what_run_says_of_no_owners(state_dir, tmp_path):
    result = run(state_dir, "--config", str(private_config(tmp_path, "")), "doctor")
    assert "FAIL no owners configured: nobody can approve from chat; use the CLI" in (
        result.stdout.splitlines()
    )
    assert result.returncode == 1


@pytest.mark.parametrize(
    "command",
    [["pairing", "list"], ["allowlist", "list"], ["nodes", "pending"], ["run"]],
    ids=["pairing-list", "allowlist-list", "nodes", "run"],
)
def test_a_weak_operator_token_stops_every_command_that_loads_the_config(
    state_dir, tmp_path, command
):
    config = private_config(tmp_path, OWNED + "gateway: {operator_token: '${PB_OP}'}\n")
    result = run(state_dir, "--config", str(config), *command, env={"PB_OP": "hunter42hunter42"})
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"pairbot: error: {config}: gateway.operator_token: too weak (a short repeated "
        "pattern; at least 128 bits of randomness needed): make one with python3 -c 'import "
        "secrets; print(secrets.token_urlsafe(32))', or set null to turn remote operators off "
        "(the value from ${PB_OP})"
    )
    assert result.stderr.count("\n") == 1
    assert "hunter" not in result.stderr


def test_doctor_reports_a_weak_operator_token_as_a_problem(state_dir, tmp_path):
    config = private_config(tmp_path, OWNED + "gateway: {operator_token: '${PB_OP}'}\n")
    result = run(state_dir, "--config", str(config), "doctor", env={"PB_OP": "hunter42hunter42"})
    assert result.returncode == 1
    assert f"FAIL {config}: gateway.operator_token: too weak" in result.stdout
    assert "hunter" not in result.stdout + result.stderr


def test_config_errors_name_the_field(state_dir, tmp_path):
    config = tmp_path / "pairbot.yaml"
    config.write_text("pairing:\n  pending_ttl: soon\n")
    result = run(state_dir, "--config", str(config), "pairing", "list")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"pairbot: error: {config}: pairing.pending_ttl: not a duration: 'soon' "
        "(use e.g. 90s, 5m, 1h)"
    )


def test_config_ttl_and_allow_from_are_used(state_dir, tmp_path):
    config = tmp_path / "pairbot.yaml"
    config.write_text(
        "pairing: {pending_ttl: 3h}\nproviders:\n  telegram: {token: x, allow_from: ['99']}\n"
    )
    store = JsonFileStore(state_dir)
    past = FakeClock(SystemClock().now() - timedelta(hours=2))
    code = code_of(PairingService(store, clock=past).request("telegram", "42"))
    rows = json.loads(
        run(state_dir, "--config", str(config), "allowlist", "list", "--json").stdout
    )
    assert rows == [{"provider": "telegram", "id": "99", "source": "config"}]
    result = run(state_dir, "pairing", "approve", "--config", str(config), "telegram", code)
    assert result.returncode == 0, result.stderr


def test_removing_a_sender_the_config_allows_says_where_it_comes_from(state_dir, tmp_path):
    config = tmp_path / "pairbot.yaml"
    config.write_text("providers:\n  telegram: {token: x, allow_from: ['99']}\n")
    result = run(state_dir, "--config", str(config), "allowlist", "remove", "telegram", "99")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "pairbot: error: telegram sender 99 is allowed by the config's allow_from; remove it there"
    )


def test_unwritable_audit_log_still_approves_and_prints_the_token(state_dir, live):
    _, pairing, nodes = live
    code = code_of(pairing.request("telegram", "42"))
    ask = nodes.request("pixel-9", display_name="Pixel 9")
    audit = state_dir / "audit.jsonl"
    audit.unlink()
    audit.mkdir()  # tests run as root: only a directory stops the append

    approved = run(state_dir, "pairing", "approve", "telegram", code)
    assert approved.returncode == 0, approved.stderr
    assert "Approved telegram sender 42" in approved.stdout
    node = run(state_dir, "nodes", "approve", ask.request.request_id)
    assert node.returncode == 0, node.stderr
    token = node.stdout.strip().splitlines()[-1]
    assert nodes.verify("pixel-9", token) is not None

    for result, secret in ((approved, code), (node, token)):
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"pairbot: WARNING: {audit}: ")
        assert secret not in result.stderr
    assert JsonFileStore(state_dir).allowed_until("telegram", "42")
