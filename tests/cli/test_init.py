"""``pairbot init``: a first config, asked for on a terminal or given by flags, that the real
loader reads and ``pairbot run`` starts with; secrets never echoed, printed or put on a
command line; bad input one line naming the argument; an existing file kept."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.cli.demo import load_platform
from bot.cli.init import SECRET_ENVS
from bot.cli.main import main
from bot.core.config import Owner
from bot.core.platforms import PLATFORMS, Platform, TelegramConfig
from bot.core.schema import secret_fields
from bot.runtime.config import load_config
from providers.telegram.fake import FakeTelegramServer
from stores._files import place, staged
from tests.e2e.support import texts
from tests.process import pairbot_exits, pairbot_in_terminal, pairbot_running

REPO = Path(__file__).resolve().parents[2]

PLAIN_SAMPLES = {
    ("whatsapp", "phone_number_id"): "106540352242922",
    ("signal", "account"): "+15550001111",
    ("imessage", "server_url"): "http://127.0.0.1:1234",
}
"""A value for each plain (not secret) field a platform's block asks for without a default."""

OWNERS = {
    "telegram": "111111111",
    "slack": "U0OWNER",
    "discord": "190000000000000001",
    "whatsapp": "15550000001",
    "signal": "0a11ce00-0000-4000-8000-00000000000a",
    "imessage": "+15550000001",
}


@pytest.fixture(autouse=True)
def _no_secrets_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own tokens stay out: each test sets what it means to."""
    for name in SECRET_ENVS:
        monkeypatch.delenv(name, raising=False)


def secret_value(platform: Platform, field: str) -> str:
    return f"{platform.name}-{field}-s3cret-value-9f2c"


def init(*args: str) -> int:
    return main(["init", *args])


def refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run ``pairbot init *args``, which must refuse (exit 2); return its one error line."""
    try:
        status = init(*args)
    except SystemExit as ended:  # a usage error leaves through argparse's exit
        status = int(ended.code or 0)
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1, err
    assert err.startswith("pairbot: error: ")
    return err.removeprefix("pairbot: error: ").rstrip("\n")


# --- --yes: flags and the environment, every platform ------------------------------------------


@pytest.mark.parametrize("platform", PLATFORMS, ids=lambda p: p.name)
def test_yes_writes_a_private_commented_config_the_real_loader_reads(
    platform: Platform,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "conf" / "pairbot.yaml"
    sets: list[str] = []
    secrets: dict[str, str] = {}
    for ask in platform.config.asks:
        if ask.env is not None:
            secrets[ask.field] = secret_value(platform, ask.field)
            monkeypatch.setenv(ask.env, secrets[ask.field])
        elif (platform.name, ask.field) in PLAIN_SAMPLES:
            sets += ["--set", f"providers.{platform.name}.{ask.field}="
                     f"{PLAIN_SAMPLES[platform.name, ask.field]}"]  # fmt: skip
    owner = OWNERS[platform.name]
    status = init(
        "--yes",
        "--provider",
        platform.name,
        "--owner",
        f"{platform.name}:{owner}",
        "--config",
        str(path),
        "--state-dir",
        str(tmp_path / "state"),
        "--skip-doctor",
        *sets,
    )
    out = capsys.readouterr().out
    assert status == 0, out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    for field, value in secrets.items():
        assert value not in text
        assert value not in out
        env = next(a.env for a in platform.config.asks if a.field == field)
        assert f'{field}: "${{{env}}}"' in text
    assert "\n# " in text
    assert "    # " in text  # the block's keys are commented too

    config = load_config(path)  # the loader `pairbot run` uses
    block = config.providers.blocks()[platform.name]
    for field, value in secrets.items():
        assert getattr(block, field) == value
    assert config.owners == [Owner(provider=platform.name, user_id=owner)]
    assert config.state_dir == str(tmp_path / "state")
    assert [ln for ln in out.splitlines() if "pairbot run" in ln][-1] == (
        f"  pairbot run --config {path}"
    )
    assert [p.name for p in tmp_path.joinpath("conf").iterdir()] == ["pairbot.yaml"]  # no temp


def test_yes_without_provider_takes_each_platform_whose_secrets_are_all_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "DISCORD_BOT_TOKEN", "WHATSAPP_APP_SECRET"):
        monkeypatch.setenv(name, "x" * 20)  # WhatsApp's other two are missing: not taken
    path = tmp_path / "p.yaml"
    assert init("--yes", "--config", str(path), "--skip-doctor") == 0
    assert set(load_config(path).providers.blocks()) == {"slack", "discord"}
    assert "No owner yet" in capsys.readouterr().out


def test_set_writes_any_other_key_and_values_come_back_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:abc")
    monkeypatch.setenv("MY_DSN", "postgresql://u:pw@127.0.0.1/db")
    odd = 'http://h/p?q="a b" #x\u2028y\x85é\\'  # quotes, a comment sign, YAML line breaks
    path = tmp_path / "p.yaml"
    status = init(
        "--yes",
        "--config",
        str(path),
        "--skip-doctor",
        "--set",
        f"providers.telegram.api_base_url={json.dumps(odd)}",
        "--set",
        "pairing={pending_ttl: 2h, resend_after: 5m}",
        "--set",
        "providers.telegram.webhook.port=8443",
        "--set",
        "store.backend=postgres",
        "--set",
        "store.dsn=${MY_DSN}",
        "--set",
        "gateway.port=0",
    )
    assert status == 0
    config = load_config(path)
    telegram = config.providers.telegram
    assert isinstance(telegram, TelegramConfig)
    assert telegram.api_base_url == odd
    assert telegram.webhook.port == 8443
    assert telegram.webhook.path == "/telegram/webhook"  # a partial block keeps its defaults
    assert config.pairing.pending_ttl.total_seconds() == 7200
    assert config.store.dsn == "postgresql://u:pw@127.0.0.1/db"
    assert "${MY_DSN}" in path.read_text()
    assert config.gateway.port == 0


# --- bad input: one line naming the argument, nothing written ----------------------------------


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--provider", "tg"], "--provider: unknown provider 'tg' (choose from "
         "telegram, slack, discord, whatsapp, signal, imessage)"),
        (["--owner", "@me"], "--owner @me: must be the platform's immutable user id, "
         "not a @username"),
        (["--owner", "12ab"], "--owner 12ab: '12ab' is not a numeric Telegram user id (names, "
         "usernames and phone numbers can change hands)"),
        (["--owner", "slack:U012AB3CD"], "--owner slack:U012AB3CD: slack is not among the "
         "platforms chosen"),
        (["--set", "gateway.prot=1"], "--set gateway.prot: no such key (config.example.yaml "
         "lists them)"),
        (["--set", "gateway.port"], "--set gateway.port: give KEY=VALUE, e.g. --set "
         "gateway.port=18790"),
        (["--set", "gateway.port=70000"], "--set gateway.port: Input should be less than or "
         "equal to 65535"),
        (["--set", "gateway.port.x=1"], "--set gateway.port.x: gateway.port is a value, not a "
         "section"),
        (["--set", "owners=[]"], "--set owners: use --owner"),
        (["--set", "providers.telegram.token=123:literal"], "--set providers.telegram.token: a "
         "secret: give it as ${VAR} (quoted for the shell) and put it in the environment, "
         "never on a command line"),
        (["--set", "providers.slack.mode=http"], "--set providers.slack.mode: slack is not "
         "among the platforms"),
        (["--set", "providers.telegram.max_send_rate=-1"], "--set "
         "providers.telegram.max_send_rate: Input should be greater than 0"),
        (["--set", "store.dsn=${NOT_SET_ANYWHERE}"], "--set store.dsn: environment variable "
         "NOT_SET_ANYWHERE is not set"),
        (["--set", "pairing.pending_ttl=forever"], "--set pairing.pending_ttl: not a duration: "
         "'forever' (use e.g. 90s, 5m, 1h)"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_naming_the_argument_and_nothing_is_written(
    args: list[str],
    line: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:abc")
    path = tmp_path / "p.yaml"
    assert refused(capsys, "--yes", "--provider", "telegram", "--config", str(path), *args) == line
    assert list(tmp_path.iterdir()) == []  # not the file, and no temp file either


def test_a_missing_secret_names_its_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "p.yaml"
    assert refused(capsys, "--yes", "--provider", "discord", "--config", str(path)) == (
        "providers.discord.token: set DISCORD_BOT_TOKEN in the environment (with --yes a "
        "secret is read only from there)"
    )


def test_a_missing_plain_value_names_the_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BLUEBUBBLES_PASSWORD", "pw-1234567")
    path = tmp_path / "p.yaml"
    assert refused(capsys, "--yes", "--provider", "imessage", "--config", str(path)) == (
        "providers.imessage.server_url: required: give --set providers.imessage.server_url=VALUE"
    )


def test_without_yes_it_needs_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert refused(capsys, "--config", str(tmp_path / "p.yaml")) == (
        "--yes: no terminal to ask on; pass --yes with the flags (pairbot init --help)"
    )


def test_an_existing_file_is_kept_unless_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:abc")
    path = tmp_path / "p.yaml"
    path.write_text("mine\n")
    path.chmod(0o640)
    assert refused(capsys, "--yes", "--config", str(path), "--skip-doctor") == (
        f"--config: {path} exists; pass --force to overwrite it"
    )
    assert path.read_text() == "mine\n"

    assert init("--yes", "--config", str(path), "--skip-doctor", "--force") == 0
    assert load_config(path).providers.telegram is not None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("what", ["file", "dangling symlink"])
def test_placing_never_replaces_what_appeared_meanwhile(tmp_path: Path, what: str) -> None:
    path = tmp_path / "p.yaml"
    if what == "file":
        path.write_text("theirs\n")
    else:
        path.symlink_to(tmp_path / "nowhere")
    with staged(path, b"ours\n") as tmp, pytest.raises(FileExistsError):
        place(tmp, path, replace=False)
    assert os.path.lexists(path)
    assert (path.read_text() == "theirs\n") if what == "file" else path.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]


# --- the table init reads ----------------------------------------------------------------------


@pytest.mark.parametrize("platform", PLATFORMS, ids=lambda p: p.name)
def test_each_platform_says_what_init_asks_and_how_to_find_the_owner_id(
    platform: Platform,
) -> None:
    example = (REPO / "config.example.yaml").read_text()
    block = platform.config
    asked = {a.field for a in block.asks}
    required = {n for n, info in block.model_fields.items() if info.is_required()}
    assert required <= asked  # nothing the block needs is left for the file to miss
    for ask in block.asks:
        assert ask.field in block.model_fields
        assert (ask.env is not None) == (ask.field in secret_fields(block)), ask.field
        if ask.env is not None:  # the same variable the example file names
            assert re.search(rf"\b{ask.field}: \$\{{{ask.env}\}}", example), ask.env
        elif block.model_fields[ask.field].is_required():
            assert (platform.name, ask.field) in PLAIN_SAMPLES
    assert platform.ids.find.endswith(".")


# --- a person at a terminal ---------------------------------------------------------------------

TOKEN = "987654321:AAH-init-test-token-typed-0001"


@pytest.mark.e2e
async def test_in_a_terminal_the_typed_token_is_not_echoed_and_pairbot_runs_on_the_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "pairbot.yaml"
    async with FakeTelegramServer(token=TOKEN) as fake:
        fake.started_before(111)  # the owner pressed Start, as init tells them to
        async with pairbot_in_terminal(
            "init",
            "--config",
            str(path),
            "--state-dir",
            str(tmp_path / "state"),
            "--set",
            f"providers.telegram.api_base_url={fake.base_url}",
            "--set",
            "gateway.port=0",
            unset=SECRET_ENVS,
        ) as terminal:
            await terminal.expect("Which to connect (comma-separated) [telegram]: ")
            terminal.type("")
            await terminal.expect("TELEGRAM_BOT_TOKEN is not set")
            await terminal.expect("token (typing is not shown): ")
            terminal.type(TOKEN)
            shown = await terminal.expect("Your Telegram id (blank: none for now): ")
            assert "@userinfobot" in shown  # how to find it, before the question
            terminal.type("@me")
            await terminal.expect("not a @username")
            await terminal.expect("Your Telegram id (blank: none for now): ")  # asked again
            terminal.type("111")
            await terminal.expect("(0600)? [Y/n]: ")
            terminal.type("y")
            shown = await terminal.expect("No problems found.")
            assert "ok   providers.telegram: owner 111 gets notices" in shown  # doctor asked
            await terminal.expect(f"pairbot run --config {path}")
            assert await terminal.exit_status() == 0
        transcript = terminal.transcript
        assert TOKEN not in transcript
        assert TOKEN.split(":")[1] not in transcript
        assert "(blank: none for now): 111\n" in transcript  # an answer in the open is echoed
        assert "getMe" in fake.methods_called()

        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        config = load_config(path)
        assert isinstance(config.providers.telegram, TelegramConfig)
        assert config.providers.telegram.token == TOKEN  # typed, so kept in the file
        assert config.owners == [Owner(provider="telegram", user_id="111")]

        stranger = 4242
        async with pairbot_running("run", "--config", str(path)) as proc:
            await running(proc)
            fake.dm(stranger, "hello", first_name="Alice")
            [reply] = await texts(lambda: fake.messages_to(stranger), 1, wait=15)
            assert "pairing code" in reply
            await stops(proc)


async def running(proc: asyncio.subprocess.Process) -> str:
    """Wait until ``pairbot run`` says it runs; return its log so far."""
    assert proc.stderr is not None
    lines: list[str] = []
    async with asyncio.timeout(30):
        while "pairbot running" not in (lines[-1] if lines else ""):
            line = (await proc.stderr.readline()).decode()
            assert line, "".join(lines)  # it ended before it ran
            lines.append(line)
    return "".join(lines)


async def stops(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, err.decode()


# --- every platform: init --yes, then pairbot run on its fake -----------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("platform", PLATFORMS, ids=lambda p: p.name)
async def test_a_config_init_wrote_runs_on_every_platform(
    platform: Platform, tmp_path: Path
) -> None:
    demo = load_platform(platform.name)
    await demo.start()
    try:
        env: dict[str, str] = {}
        sets: list[str] = []
        asks = {a.field: a for a in platform.config.asks}
        block: dict[str, Any] = demo.provider_config()
        for key, value in block.items():
            ask = asks.get(key)
            if ask is not None and ask.env is not None:
                env[ask.env] = str(value)
            else:
                sets += ["--set", f"providers.{platform.name}.{key}={json.dumps(value)}"]
        path = tmp_path / "pairbot.yaml"
        done = await pairbot_exits(
            "init",
            "--yes",
            "--provider",
            platform.name,
            "--owner",
            demo.owner_id,
            "--config",
            str(path),
            "--state-dir",
            str(tmp_path / "state"),
            "--set",
            "gateway.port=0",
            *sets,
            env=env,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "No problems found." in done.stdout  # the doctor's checks ran on the file
        for value in env.values():
            assert value not in done.stdout + done.stderr + path.read_text()
        async with pairbot_running("run", "--config", str(path), env=env) as proc:
            log = await running(proc)
            assert "literal secret" not in log  # the secrets came from the environment
            stranger = demo.user_id(1)
            demo.dm(stranger, "hello", name="Alice")
            [reply] = await texts(lambda: demo.texts_to(stranger), 1, wait=15)
            assert "pairing code" in reply
            await stops(proc)
    finally:
        await demo.stop()


def test_the_written_file_is_what_the_yaml_parser_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:abc")
    path = tmp_path / "p.yaml"
    assert init("--yes", "--config", str(path), "--skip-doctor", "--owner", "111") == 0
    raw = yaml.safe_load(path.read_text())
    assert raw["providers"]["telegram"] == {
        "token": "${TELEGRAM_BOT_TOKEN}",
        "dm_policy": "pairing",
    }
    assert raw["owners"] == [{"provider": "telegram", "user_id": "111"}]
    assert raw["handler"] == {"kind": "echo"}
