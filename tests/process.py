"""The installed ``pairbot`` command as a process, for the tests that run it for real.

Every run gets this environment less the developer's own ``PAIRBOT_*`` settings (a state dir,
a config, a node dir), plus what the test adds. :func:`run_pairbot` runs a command to its end;
:func:`pairbot_exits` does so in a thread while the test's event loop serves a fake or an app;
:func:`pairbot_running` keeps one running for an ``async with`` block and kills it if the
block leaves it running. A ``pairbot run`` reads its config from :func:`write_config`.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

PAIRBOT = Path(sys.executable).with_name("pairbot")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any ``PAIRBOT_*`` variable, then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAIRBOT_")}
    env.update(extra or {})
    return env


def run_pairbot(
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``pairbot *args`` to its end; its output is captured as text, its status not checked."""
    return subprocess.run(
        [str(PAIRBOT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=clean_env(env),
        cwd=cwd,
    )


async def pairbot_exits(
    *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """:func:`run_pairbot` in a thread, so the test's event loop goes on serving meanwhile."""
    return await asyncio.to_thread(run_pairbot, *args, env=env)


async def start_pairbot(
    *args: str,
    env: Mapping[str, str] | None = None,
    stdout: Any = subprocess.PIPE,
    stderr: Any = subprocess.PIPE,
    **options: Any,
) -> asyncio.subprocess.Process:
    """Start ``pairbot *args`` (stdout and stderr piped unless said otherwise)."""
    return await asyncio.create_subprocess_exec(
        str(PAIRBOT), *args, stdout=stdout, stderr=stderr, env=clean_env(env), **options
    )


@asynccontextmanager
async def pairbot_running(
    *args: str, env: Mapping[str, str] | None = None, **options: Any
) -> AsyncIterator[asyncio.subprocess.Process]:
    """:func:`start_pairbot` for the block; a process still running at its end is killed."""
    proc = await start_pairbot(*args, env=env, **options)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def node_pair_pixel_9(gateway: str, node_dir: Path, *options: str) -> list[str]:
    """The arguments of ``pairbot node pair`` for the phone the tests pair: a Pixel 9."""
    return [
        "node",
        "pair",
        *options,
        "--gateway",
        gateway,
        "--name",
        "Pixel 9",
        "--platform",
        "android",
        "--node-dir",
        str(node_dir),
    ]


# --- a config for `pairbot run` ----------------------------------------------------------------


def telegram_config(
    state: Path,
    api_base_url: str,
    *,
    owner: int | str = 111,
    gateway: Mapping[str, Any] | None = None,
    **telegram: Any,
) -> dict[str, Any]:
    """A config serving Telegram at ``api_base_url`` (its token from ``${TG_TOKEN}``), one
    owner, the gateway on a free port; ``gateway`` and ``telegram`` add to those blocks."""
    return {
        "state_dir": str(state),
        "owners": [{"provider": "telegram", "user_id": str(owner)}],
        "gateway": {"port": 0, **(gateway or {})},
        "providers": {
            "telegram": {"token": "${TG_TOKEN}", "api_base_url": api_base_url, **telegram}
        },
    }


def write_config(path: Path, config: Mapping[str, Any]) -> Path:
    """Write ``config`` where ``pairbot run --config`` reads it: private (0600), as JSON
    (which YAML reads)."""
    path.write_text(json.dumps(config, indent=1))
    path.chmod(0o600)
    return path
