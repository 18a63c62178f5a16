"""``pairbot run`` and ``pairbot demo`` as real processes."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from providers.fakebase import free_port
from providers.telegram.fake import FakeTelegramServer
from tests.process import (
    pairbot_exits,
    pairbot_running,
    run_pairbot,
    telegram_config,
    write_config,
)

TOKEN = "987654321:AAH-run-test-token-not-real-000"
TOKEN_ENV = {"TG_TOKEN": TOKEN}


def config_for(tmp_path: Path, api_base_url: str, *, state: Path, port: int = 0) -> Path:
    config = telegram_config(state, api_base_url, gateway={"port": port})
    return write_config(tmp_path / "pairbot.yaml", config)


async def run_until_exit(config: Path) -> subprocess.CompletedProcess[str]:
    return await pairbot_exits("run", "--config", str(config), env=TOKEN_ENV)


def test_demo_plays_the_whole_flow_and_exits_0():
    result = run_pairbot("demo", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for expected in (
        "Your pairing code:",
        "Mallory → bot: /approve",
        "Owner → bot: /approve",
        "You're approved.",
        "bot → Alice: Hi again!",
        "Nothing is pending.",
        "expire",
        "gateway → Pixel 9: node.pair.resolved: approved",
        "connected as pixel-9",
        "owner $ pairbot nodes invite --for 10m --name Tablet",
        "pairbot-invite:",
        "▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀",  # the QR code's last row
        "Tablet: paired at once by invite",
        "joined with your invite",
        "connected as tablet (Tablet)",
        "Laptop: refused: UNAUTHORIZED",
        "node.invite  refused",
        "Demo complete",
    ):
        assert expected in out, expected
    assert "WARNING" not in result.stderr


def test_run_without_a_config_is_a_usage_error(tmp_path):
    result = run_pairbot("run")
    assert result.returncode == 2
    assert "no config" in result.stderr


def test_run_with_a_bad_config_names_the_field(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("providers:\n  telegram: {token: x, dm_policy: everyone}\n")
    result = run_pairbot("run", "--config", str(config))
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"pairbot: error: {config}: providers.telegram.dm_policy:")


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666, 0o620], ids=oct)
def test_run_refuses_a_config_others_can_write(tmp_path, mode):
    config = tmp_path / "pairbot.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        "owners: [{provider: telegram, user_id: '111'}]\n"
        "providers:\n  telegram: {token: '${TG_TOKEN}'}\n"
    )
    config.chmod(mode)
    result = run_pairbot("run", "--config", str(config), env=TOKEN_ENV)
    assert result.returncode == 2
    assert result.stderr == (
        f"pairbot: error: {config}: group or others can write it (mode {mode:04o}), and "
        "whoever can write it can make themselves owner (chmod 600 the file)\n"
    )
    assert not (tmp_path / "state").exists()


def test_run_warns_at_start_of_a_config_others_can_read_and_of_no_owners(tmp_path):
    config = tmp_path / "pairbot.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\ngateway: {{port: 0}}\n")
    config.chmod(0o644)
    result = run_pairbot("run", "--config", str(config))
    lines = result.stderr.splitlines()
    warnings = [
        line.split(" WARNING bot.cli.main: ", 1)[1]
        for line in lines
        if " WARNING bot.cli.main: " in line
    ]
    assert warnings == [
        f"{config}: group or others can read it (mode 0644), and it may hold secrets "
        "(chmod 600 the file)",
        "no owners configured: nobody can approve from chat; use the CLI",
    ]
    # ... and then it went on to start, which stops here only for want of a provider.
    assert (result.returncode, lines[-1]) == (
        2,
        "pairbot: error: providers: no provider configured",
    )


@pytest.mark.e2e
async def test_run_serves_telegram_and_stops_cleanly_on_sigterm(tmp_path):
    async with FakeTelegramServer(token=TOKEN) as fake:
        fake.started_before(111)  # the config's owner pressed Start
        config = config_for(tmp_path, fake.base_url, state=tmp_path / "state")
        async with pairbot_running("run", "--config", str(config), env=TOKEN_ENV) as proc:
            await fake.wait_for_call("getUpdates", timeout=20)
            fake.dm(4242, "hello", first_name="Alice")
            sent = await fake.wait_for_sent(lambda m: m["chat_id"] == 4242, timeout=10)
            assert "Your pairing code:" in sent[0]["text"]
            await fake.wait_for_sent(lambda m: m["chat_id"] == 111, timeout=10)
            proc.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(proc.communicate(), timeout=20)
        assert proc.returncode == 0, stderr.decode()
        log = stderr.decode()
        assert "pairbot running" in log
        assert "WARNING" not in log  # a private config with an owner: nothing to warn about
        assert TOKEN not in log
        assert TOKEN.split(":")[1] not in log
        pairing = (tmp_path / "state" / "credentials" / "telegram-pairing.json").read_text()
        assert '"id": "4242"' in pairing


# --- `pairbot run` refuses to start, with one line, on what would break it ------------------


def the_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one ``pairbot: error:`` line (log lines may precede it), after common checks."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert TOKEN.split(":")[1] not in result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("pairbot: error: ")]
    assert len(errors) == 1, result.stderr
    assert result.stderr.splitlines()[-1] == errors[0]
    return errors[0]


@pytest.mark.e2e
async def test_run_refuses_a_corrupt_state_file_before_taking_any_message(tmp_path):
    from stores.jsonfile import JsonFileStore

    state = tmp_path / "state"
    JsonFileStore(state).close()
    bad = state / "credentials" / "slack-pairing.json"
    bad.write_text('{"version": 1, "requests": [\n')
    before = bad.read_bytes()
    async with FakeTelegramServer(token=TOKEN) as fake:
        fake.started_before(111)  # the config's owner pressed Start
        result = await run_until_exit(config_for(tmp_path, fake.base_url, state=state))
        assert fake.calls == []  # Telegram was never polled: no update taken and dropped
    assert result.stderr.splitlines() == [
        f"pairbot: error: {bad}: not valid JSON: Expecting value (line 2, column 1) "
        "(pairbot left the file as it is; fix it or move it away)"
    ]
    assert result.returncode == 2
    assert bad.read_bytes() == before


@pytest.mark.e2e
@pytest.mark.parametrize("where", ["file", "under-a-file"])
async def test_run_names_a_state_dir_that_cannot_be_used(tmp_path, where):
    blocker = tmp_path / "state"
    blocker.write_text("a file\n")
    state = blocker if where == "file" else blocker / "sub"
    async with FakeTelegramServer(token=TOKEN) as fake:
        fake.started_before(111)  # the config's owner pressed Start
        result = await run_until_exit(config_for(tmp_path, fake.base_url, state=state))
        assert fake.calls == []
    line = the_error_line(result)
    assert line.startswith(f"pairbot: error: {state}: ")
    assert str(blocker) in line
    assert blocker.read_text() == "a file\n"


@pytest.mark.e2e
async def test_run_names_a_gateway_port_in_use(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        async with FakeTelegramServer(token=TOKEN) as fake:
            fake.started_before(111)  # the config's owner pressed Start
            result = await run_until_exit(
                config_for(tmp_path, fake.base_url, state=tmp_path / "state", port=port)
            )
            assert fake.calls == []
    assert the_error_line(result) == (
        f"pairbot: error: gateway: cannot listen on 127.0.0.1:"
        f"{port}: address already in use (gateway.port)"
    )


@pytest.mark.e2e
async def test_run_names_an_unreachable_platform_api(tmp_path):
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = await run_until_exit(config_for(tmp_path, closed, state=tmp_path / "state"))
    line = the_error_line(result)
    assert line.startswith("pairbot: error: telegram: cannot start: NetworkError: ")
    assert TOKEN not in result.stderr
