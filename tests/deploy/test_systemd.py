"""deploy/pairbot.service: the hardening it must have, and ``systemd-analyze verify`` (and its
offline security review) on it where the binary exists. systemd does not run as PID 1 here,
so the unit is verified, never started."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.files import DEPLOY, SECRET_NAME, unit

UNIT = DEPLOY / "pairbot.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
MAX_EXPOSURE = 2.0
"""The highest ``systemd-analyze security`` exposure the unit may have (0 safest, 10 worst)."""


def service() -> dict[str, list[str]]:
    """The unit's [Service] keys, each with every value it was given, in order."""
    out: dict[str, list[str]] = {}
    for section, key, value in unit(UNIT):
        if section == "Service":
            out.setdefault(key, []).append(value)
    return out


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("DynamicUser", "yes"),
        ("StateDirectory", "pairbot"),
        ("StateDirectoryMode", "0700"),
        ("ConfigurationDirectory", "pairbot"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("CapabilityBoundingSet", ""),
        ("UMask", "0077"),
        ("Restart", "on-failure"),
    ],
)
def test_the_unit_sets(key: str, value: str) -> None:
    assert service().get(key) == [value]


def test_the_environment_names_the_config_and_the_state_dir() -> None:
    env = dict(v.split("=", 1) for v in service()["Environment"])
    assert env["PAIRBOT_STATE_DIR"] == "%S/pairbot"
    assert env["PAIRBOT_CONFIG"] == "%d/pairbot.yaml"
    (credential,) = service()["LoadCredential"]
    assert credential == "pairbot.yaml:/etc/pairbot/pairbot.yaml"
    for key in env:
        assert not SECRET_NAME.search(key), f"{key}: secrets go in the EnvironmentFile"
    assert service()["EnvironmentFile"] == ["-/etc/pairbot/pairbot.env"]


def test_it_runs_an_installed_pairbot() -> None:
    (start,) = service()["ExecStart"]
    binary, *args = start.split()
    assert Path(binary).is_absolute()
    assert Path(binary).name == "pairbot"
    assert args == ["run"]


def verifiable(tmp_path: Path) -> Path:
    """A copy of the unit whose ExecStart is this venv's pairbot (verify needs it to exist)."""
    pairbot = Path(sys.executable).parent / "pairbot"
    assert pairbot.is_file(), "pairbot is installed in the test venv"
    text = UNIT.read_text(encoding="utf-8")
    text, made = re.subn(r"^ExecStart=\S+", f"ExecStart={pairbot}", text, flags=re.M)
    assert made == 1
    copy = tmp_path / "pairbot.service"
    copy.write_text(text, encoding="utf-8")
    return copy


@needs_analyze
def test_systemd_analyze_verify_finds_nothing_to_say(tmp_path: Path) -> None:
    assert ANALYZE is not None
    done = subprocess.run(
        [ANALYZE, "verify", str(verifiable(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", "an unknown key or a bad value is only a warning"


@needs_analyze
def test_systemd_analyze_rates_the_unit_well_hardened(tmp_path: Path) -> None:
    assert ANALYZE is not None
    done = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--no-pager", str(verifiable(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if "--offline" in done.stderr and "unrecognized" in done.stderr:
        pytest.skip("this systemd-analyze has no offline security review (systemd < 250)")
    found = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", done.stdout)
    assert found, done.stdout + done.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, done.stdout


CLI = DEPLOY / "pairbot-cli"


def test_the_cli_wrapper_runs_pairbot_as_the_services_user_with_its_state_and_config(
    tmp_path: Path,
) -> None:
    """deploy/pairbot-cli hands its arguments to the unit's pairbot, through systemd-run
    (a stand-in that records its argv here: systemd does not run as PID 1 on this machine)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "argv"
    fake = bin_dir / "systemd-run"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n', encoding="utf-8")
    fake.chmod(0o755)
    done = subprocess.run(
        ["sh", str(CLI), "store", "export", "--output", "a file.json"],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    argv = record.read_text(encoding="utf-8").splitlines()
    (start,) = service()["ExecStart"]
    binary = start.split()[0]
    assert argv[argv.index(binary) :] == [binary, "store", "export", "--output", "a file.json"]
    props = dict(a.removeprefix("--property=").split("=", 1) for a in argv if "--property=" in a)
    for key in ("DynamicUser", "User", "StateDirectory", "LoadCredential", "UMask"):
        assert [props[key]] == service()[key], key
    assert [props["EnvironmentFile"]] == service()["EnvironmentFile"]
    env = dict(a.removeprefix("--setenv=").split("=", 1) for a in argv if "--setenv=" in a)
    unit_name = next(a.removeprefix("--unit=") for a in argv if a.startswith("--unit="))
    assert env["PAIRBOT_CONFIG"] == f"/run/credentials/{unit_name}.service/pairbot.yaml"
    assert env["PAIRBOT_STATE_DIR"] == "/var/lib/pairbot"  # %S/pairbot of a system unit
    assert "--pipe" in argv
    assert "--wait" in argv
