"""``pairbot nodes invite`` and ``pairbot node pair --invite`` as processes: what they print,
and bad input refused in one line that names the argument or the field."""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from bot.core.invites import SetupCode
from stores.jsonfile import JsonFileStore
from tests.process import run_pairbot, write_config


def config(tmp_path: Path, **gateway: object) -> Path:
    return write_config(
        tmp_path / "pairbot.yaml",
        {"state_dir": str(tmp_path / "state"), "gateway": {"port": 18799, **gateway}},
    )


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    stderr = result.stderr
    assert stderr.count("\n") == 1, stderr
    assert stderr.startswith("pairbot: error: ")
    for needle in needles:
        assert needle in stderr, stderr


def test_json_gives_the_code_the_address_and_no_hash(tmp_path: Path) -> None:
    path = config(tmp_path, tls="auto")
    made = run_pairbot(
        "nodes", "invite", "--json", "--for", "1h", "--name", "Tablet", "--config", str(path)
    )
    assert made.returncode == 0, made.stderr
    shown = json.loads(made.stdout)
    code = SetupCode.parse(shown["code"])
    assert shown["url"] == code.address.url == "wss://127.0.0.1:18799"
    assert shown["fingerprint"] == code.address.fingerprint
    assert shown["name"] == "Tablet"
    assert "secretHash" not in shown
    with JsonFileStore(tmp_path / "state").transaction() as txn:
        [stored] = txn.invites()
    assert stored.invite_id == shown["inviteId"]
    assert stored.expires_at - stored.created_at == timedelta(hours=1)
    audit = (tmp_path / "state" / "audit.jsonl").read_text()
    assert code.secret not in audit
    assert shown["code"] not in audit


def test_a_plain_loopback_gateway_gives_a_ws_code_with_nothing_to_pin(tmp_path: Path) -> None:
    made = run_pairbot("nodes", "invite", "--json", "--config", str(config(tmp_path)))
    assert made.returncode == 0, made.stderr
    code = SetupCode.parse(json.loads(made.stdout)["code"])
    assert (code.address.url, code.address.fingerprint) == ("ws://127.0.0.1:18799", "")


def test_a_public_url_is_what_the_code_gives(tmp_path: Path) -> None:
    path = config(tmp_path, host="0.0.0.0", tls="auto", public_url="wss://pairbot.lan:443")
    made = run_pairbot("nodes", "invite", "--json", "--config", str(path))
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["url"] == "wss://pairbot.lan:443"


@pytest.mark.parametrize(
    ("gateway", "args", "needles"),
    [
        ({"host": "0.0.0.0", "tls": "auto"}, (), ("gateway.public_url", "0.0.0.0")),
        ({"port": 0}, (), ("gateway.port", "public_url")),
        ({"enabled": False}, (), ("gateway.enabled",)),
        ({}, ("--for", "30s"), ("--for", "must be from 1m to 1d")),
        ({}, ("--for", "600"), ("--for", "not a duration")),
        ({}, ("--name", "x" * 129), ("name", "128")),
    ],
    ids=["wildcard-host", "free-port", "gateway-off", "too-short", "bare-number", "long-name"],
)
def test_bad_input_is_one_line_naming_it(
    tmp_path: Path, gateway: dict[str, object], args: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    result = run_pairbot("nodes", "invite", *args, "--config", str(config(tmp_path, **gateway)))
    one_line_error(result, *needles)
    store = JsonFileStore(tmp_path / "state")
    with store.transaction() as txn:
        assert txn.invites() == []


def test_without_a_config_there_is_no_address_to_give(tmp_path: Path) -> None:
    result = run_pairbot("nodes", "invite", "--state-dir", str(tmp_path / "state"))
    one_line_error(result, "no config")


@pytest.mark.parametrize(
    ("code", "extra", "needle"),
    [
        ("pairbot-invite:nonsense", (), "--invite: not a pairbot setup code"),
        ("hello", (), "--invite: not a pairbot setup code"),
    ],
)
def test_node_pair_refuses_a_bad_code_in_one_line(
    tmp_path: Path, code: str, extra: tuple[str, ...], needle: str
) -> None:
    result = run_pairbot("node", "pair", "--invite", code, "--node-dir", str(tmp_path), *extra)
    one_line_error(result, needle)


def test_node_pair_refuses_another_gateway_or_pin_beside_a_code(tmp_path: Path) -> None:
    made = run_pairbot("nodes", "invite", "--json", "--config", str(config(tmp_path, tls="auto")))
    code = json.loads(made.stdout)["code"]
    node = ("node", "pair", "--invite", code, "--node-dir", str(tmp_path / "node"))
    other = run_pairbot(*node, "--gateway", "wss://elsewhere:1")
    one_line_error(other, "--invite is for wss://127.0.0.1:18799")
    pinned = run_pairbot(*node, "--fingerprint", "sha256:" + "ab" * 32)
    one_line_error(pinned, "--invite pins its own certificate")
    assert SetupCode.parse(code).secret not in other.stderr + pinned.stderr
