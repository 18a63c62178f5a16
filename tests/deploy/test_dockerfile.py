"""deploy/Dockerfile and .dockerignore, read as Docker reads them (no daemon runs here, so the
image is not built; see docs/deploy.md), and the image's healthcheck command run for real."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import shlex
import sys
import tomllib
from pathlib import Path

import pytest

from bot.core.clock import FakeClock
from bot.core.config import GatewayConfig
from providers.telegram.fake import FakeTelegramServer
from tests.deploy.files import ROOT, SECRET_NAME, Instruction, dockerfile, env_pairs
from tests.gateway.support import running

STATE = "/var/lib/pairbot"
CONFIG = "/etc/pairbot/pairbot.yaml"


def only(instructions: list[Instruction], keyword: str) -> list[Instruction]:
    return [i for i in instructions if i.keyword == keyword]


def final(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in only(final(dockerfile()), "ENV"):
        env |= env_pairs(ins.args)
    return env


def healthcheck_argv() -> list[str]:
    (check,) = only(final(dockerfile()), "HEALTHCHECK")
    _, _, command = check.args.partition("CMD ")
    argv = json.loads(command)  # the exec form: no shell needed in the image
    assert isinstance(argv, list)
    return [str(a) for a in argv]


def test_every_stage_is_python_3_11_slim() -> None:
    froms = only(dockerfile(), "FROM")
    assert froms
    assert all(shlex.split(i.args)[0] == "python:3.11-slim" for i in froms)


def test_it_runs_as_a_user_that_is_not_root() -> None:
    stage = final(dockerfile())
    users = [n for n, i in enumerate(stage) if i.keyword == "USER"]
    assert users, "no USER: the container would run as root"
    assert stage[users[-1]].args.split(":")[0] not in {"root", "0"}
    (entry,) = [n for n, i in enumerate(stage) if i.keyword == "ENTRYPOINT"]
    assert users[-1] < entry


def test_state_and_config_are_volumes_and_the_environment_points_at_them() -> None:
    volumes = [v for i in only(final(dockerfile()), "VOLUME") for v in json.loads(i.args)]
    assert STATE in volumes
    assert str(Path(CONFIG).parent) in volumes
    env = image_env()
    assert env["PAIRBOT_STATE_DIR"] == STATE
    assert env["PAIRBOT_CONFIG"] == CONFIG


def test_it_exposes_the_gateways_default_port() -> None:
    (expose,) = only(final(dockerfile()), "EXPOSE")
    assert expose.args == str(GatewayConfig().port)
    assert image_env()["PAIRBOT_HEALTH_URL"] == f"http://127.0.0.1:{GatewayConfig().port}/healthz"


def test_it_installs_pairbot_without_the_test_extras() -> None:
    runs = " ".join(i.args for i in only(dockerfile(), "RUN"))
    assert "pip install ." in runs
    assert "[test]" not in runs
    assert "-e " not in runs, "an editable install would need the sources at run time"


def test_it_copies_every_package_pyproject_installs() -> None:
    copied = {
        source
        for i in only(dockerfile(), "COPY")
        if "--from" not in i.args
        for source in shlex.split(i.args)[:-1]
    }
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {
        p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert packages <= copied
    assert project["project"]["readme"] in copied, "pip install . reads the readme"
    for name in copied:
        assert (ROOT / name).exists(), name


def test_pairbot_run_is_the_default_command() -> None:
    (entry,) = only(final(dockerfile()), "ENTRYPOINT")
    (cmd,) = only(final(dockerfile()), "CMD")
    assert json.loads(entry.args) + json.loads(cmd.args) == ["pairbot", "run"]


def test_no_secret_is_baked_into_the_image() -> None:
    for ins in dockerfile():
        if ins.keyword in {"ENV", "ARG", "LABEL"}:
            for key in env_pairs(ins.args):
                assert not SECRET_NAME.search(key), f"{ins.keyword} {key} would be in the image"
        if ins.keyword in {"COPY", "ADD"}:
            assert ".env" not in ins.args
            assert ".yaml" not in ins.args, "the config is mounted, never copied in"


def test_dockerignore_keeps_secrets_and_state_out_and_the_sources_in() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        return any(
            fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.removeprefix("**/"))
            for p in patterns
        )

    for secret in (".env", "deploy/.env", ".git", ".venv", "pairbot.db"):
        assert ignored(secret), secret
    for needed in ("pyproject.toml", "README.md", "bot", "providers", "stores"):
        assert not ignored(needed), needed


async def healthcheck(url: str) -> int:
    """Run the image's HEALTHCHECK command here (``python`` is this interpreter)."""
    argv = healthcheck_argv()
    assert argv[0] == "python"
    assert "curl" not in " ".join(argv)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *argv[1:], env={**os.environ, "PAIRBOT_HEALTH_URL": url}
    )
    return await proc.wait()


@pytest.mark.e2e
async def test_the_healthcheck_passes_on_a_running_gateway_and_fails_without_one(
    state_dir: Path, fake_clock: FakeClock, unused_tcp_port: int
) -> None:
    async with FakeTelegramServer() as tg, running(tg, state_dir, fake_clock) as gw:
        assert await healthcheck(f"http://127.0.0.1:{gw.port}/healthz") == 0
        assert await healthcheck(f"http://127.0.0.1:{gw.port}/no-such-route") != 0
    assert await healthcheck(f"http://127.0.0.1:{unused_tcp_port}/healthz") != 0
