"""Hostile state dirs: every command gives one line naming the path; ``doctor`` never crashes.

Each bad state is built on a temp dir, then every command that touches the store is run
in-process through :func:`bot.cli.main.main` (stderr captured). The command must exit 2 with
exactly one ``pairbot: error:`` line that names the culprit, no traceback, and must leave
every byte on disk as it was. A few cases also run as the installed ``pairbot`` process.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.cli.main import main
from stores.jsonfile import JsonFileStore
from tests.process import run_pairbot, telegram_config, write_config

DEEP = "[" * 100_000  # far beyond the interpreter's recursion limit


# --- the bad states: (state dir, the paths an error may name) ---------------------------------


def _bare_dir(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    for sub in ("", "credentials", "nodes"):
        (state / sub).mkdir(mode=0o700, exist_ok=True)
    return state


def _every_file(tmp_path: Path, make: Callable[[Path], object]) -> tuple[Path, list[Path]]:
    state = tmp_path / "state"
    store = JsonFileStore(state)
    files = store.state_files()
    store.close()
    for path in files:
        make(path)
        path.chmod(0o600)  # so that doctor's only complaint about it is the one under test
    return state, files


def state_dir_is_a_file(tmp_path: Path) -> tuple[Path, list[Path]]:
    state = tmp_path / "state"
    state.write_text("not a directory\n")
    return state, [state]


def state_dir_under_a_file(tmp_path: Path) -> tuple[Path, list[Path]]:
    (tmp_path / "file").write_text("not a directory\n")
    return tmp_path / "file" / "state", [tmp_path / "file"]


def lock_is_a_directory(tmp_path: Path) -> tuple[Path, list[Path]]:
    state = _bare_dir(tmp_path)
    (state / ".lock").mkdir()
    return state, [state / ".lock"]


def lock_is_a_symlink(tmp_path: Path) -> tuple[Path, list[Path]]:
    state = _bare_dir(tmp_path)
    (state / ".lock").symlink_to(tmp_path / "victim")  # dangling: must not be created
    return state, [state / ".lock"]


def files_are_directories(tmp_path: Path) -> tuple[Path, list[Path]]:
    return _every_file(tmp_path, lambda p: p.mkdir())


def files_are_deeply_nested(tmp_path: Path) -> tuple[Path, list[Path]]:
    return _every_file(tmp_path, lambda p: p.write_text(DEEP))


def files_do_not_parse(tmp_path: Path) -> tuple[Path, list[Path]]:
    return _every_file(tmp_path, lambda p: p.write_text('{"version": 1, "requests": [\n'))


STATES = [
    state_dir_is_a_file,
    state_dir_under_a_file,
    lock_is_a_directory,
    lock_is_a_symlink,
    files_are_directories,
    files_are_deeply_nested,
    files_do_not_parse,
]

COMMANDS = {
    "pairing-list": ["pairing", "list"],
    "pairing-approve": ["pairing", "approve", "telegram", "ABCD2345"],
    "pairing-reject": ["pairing", "reject", "telegram", "ABCD2345"],
    "allowlist-list": ["allowlist", "list"],
    "allowlist-add": ["allowlist", "add", "telegram", "42"],
    "allowlist-remove": ["allowlist", "remove", "telegram", "42"],
    "nodes-pending": ["nodes", "pending"],
    "nodes-approve": ["nodes", "approve", "req-1"],
    "nodes-reject": ["nodes", "reject", "req-1"],
    "nodes-list": ["nodes", "list"],
    "nodes-revoke": ["nodes", "revoke", "node-1"],
    "audit": ["audit"],
}


def expected_status(state: Callable[..., object], command: str) -> int:
    """2, except ``audit``: it skips audit lines that do not parse, by design."""
    readable_audit = state in (files_are_deeply_nested, files_do_not_parse)
    return 0 if command == "audit" and readable_audit else 2


def disk(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` (symlinks not followed) and its bytes."""
    return {
        str(p): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("state", STATES, ids=lambda f: f.__name__)
def test_bad_state_is_one_line_naming_the_path(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    state: Callable[[Path], tuple[Path, list[Path]]],
    command: str,
) -> None:
    state_dir, culprits = state(tmp_path)
    before = disk(tmp_path)

    status = main(["--state-dir", str(state_dir), *COMMANDS[command]])

    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert status == expected_status(state, command), out + err
    assert disk(tmp_path) == before
    assert not (tmp_path / "victim").exists()
    if status == 2:
        lines = err.splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("pairbot: error: ")
        assert any(str(path) in lines[0] for path in culprits), lines[0]


@pytest.mark.parametrize("state", STATES, ids=lambda f: f.__name__)
def test_doctor_reports_a_bad_state_and_never_crashes(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    state: Callable[[Path], tuple[Path, list[Path]]],
) -> None:
    state_dir, culprits = state(tmp_path)
    before = disk(tmp_path)

    status = main(["--state-dir", str(state_dir), "doctor"])

    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert status == 1, out + err
    assert err == ""
    fails = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert fails, out
    for path in culprits:  # every bad file is reported, not just the first one
        assert any(str(path) in line for line in fails), (path, out)
    assert disk(tmp_path) == before
    assert not (tmp_path / "victim").exists()


def test_doctor_checks_the_audit_log(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = JsonFileStore(state_dir)
    store.audit_path.write_text('{"event": "approve"}\n[1, 2]\n{"event": "revoke"}\n')
    store.audit_path.chmod(0o600)
    store.close()

    status = main(["--state-dir", str(state_dir), "doctor"])

    out = capsys.readouterr().out
    assert status == 1
    assert f"FAIL {store.audit_path}: line 2: not a JSON object" in out


def test_doctor_flags_symlinked_state_files_and_dirs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real = tmp_path / "real-state"
    store = JsonFileStore(real)
    store.close()
    state = tmp_path / "state"
    state.symlink_to(real)  # the state dir itself may live elsewhere: not a problem
    allow = state / "credentials" / "telegram-allowFrom.json"
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text('{"version": 1, "allowFrom": ["42", "*"]}\n')
    elsewhere.chmod(0o600)
    allow.symlink_to(elsewhere)
    real_nodes = tmp_path / "real-nodes"
    (real / "nodes").rename(real_nodes)
    (real / "nodes").symlink_to(real_nodes)
    (real_nodes / "paired.json").write_text("[" * 100_000)
    (real_nodes / "paired.json").chmod(0o600)

    status = main(["--state-dir", str(state), "doctor"])

    out = capsys.readouterr().out
    assert status == 1
    fails = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert len(fails) == 4, out
    assert any(str(allow) in line and "symlink" in line for line in fails)
    assert any(str(allow) in line and '"*"' in line for line in fails)  # still checked
    assert any(str(state / "nodes") in line and "symlink" in line for line in fails)
    assert any(
        str(state / "nodes" / "paired.json") in line and "nested too deeply" in line
        for line in fails
    )  # files under a symlinked dir are still checked


def test_doctor_reports_a_bad_config_as_a_fail_line(
    state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "pairbot.yaml"
    config.write_text("pairing:\n  pending_ttl: soon\n")

    status = main(["--state-dir", str(state_dir), "--config", str(config), "doctor"])

    out = capsys.readouterr().out
    assert status == 1
    assert f"FAIL {config}: pairing.pending_ttl: not a duration" in out


def test_a_fifo_where_a_state_file_belongs_does_not_hang(tmp_path: Path) -> None:
    state, files = _every_file(tmp_path, lambda p: os.mkfifo(p, 0o600))
    for command in (
        ["pairing", "list"],
        ["allowlist", "add", "telegram", "42"],
        ["audit"],
        ["doctor"],
    ):
        result = run_pairbot("--state-dir", str(state), *command, timeout=30)
        assert "Traceback" not in result.stderr
        if command == ["doctor"]:
            assert result.returncode == 1
            assert sum(line.startswith("FAIL") for line in result.stdout.splitlines()) >= len(
                files
            )
        else:
            assert result.returncode == 2, result.stderr
            assert len(result.stderr.splitlines()) == 1, result.stderr
            assert "not a regular file" in result.stderr


@pytest.mark.parametrize(
    "state",
    [state_dir_is_a_file, lock_is_a_symlink, files_are_directories],
    ids=lambda f: f.__name__,
)
def test_installed_command_prints_one_line(
    tmp_path: Path, state: Callable[[Path], tuple[Path, list[Path]]]
) -> None:
    state_dir, culprits = state(tmp_path)
    result = run_pairbot("--state-dir", str(state_dir), "pairing", "list", timeout=30)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert any(str(path) in lines[0] for path in culprits)


@pytest.mark.parametrize("state", STATES, ids=lambda f: f.__name__)
def test_run_refuses_a_bad_state_with_one_line(
    tmp_path: Path, state: Callable[[Path], tuple[Path, list[Path]]]
) -> None:
    state_dir, culprits = state(tmp_path)
    before = disk(tmp_path)
    # The platform is never reached: the state is checked first.
    config = write_config(
        tmp_path / "pairbot.yaml", telegram_config(state_dir, "http://127.0.0.1:9")
    )

    result = run_pairbot("run", "--config", str(config), env={"TG_TOKEN": "1:not-a-real-token"})

    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pairbot: error: ")
    assert any(str(path) in lines[0] for path in culprits), lines[0]
    assert disk(tmp_path) == {**before, str(config): config.read_bytes()}
    assert not (tmp_path / "victim").exists()
