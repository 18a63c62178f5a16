"""The installed ``pairbot`` command as a process, for the tests that run it for real.

Every run gets this environment less the developer's own ``PAIRBOT_*`` settings (a state dir,
a config, a node dir), plus what the test adds. :func:`run_pairbot` runs a command to its end;
:func:`pairbot_exits` does so in a thread while the test's event loop serves a fake or an app;
:func:`pairbot_running` keeps one running for an ``async with`` block and kills it if the
block leaves it running; :func:`pairbot_in_terminal` runs one on a pseudo-terminal, typed
at. A ``pairbot run`` reads its config from :func:`write_config`.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable, Mapping
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
    async with _ended(await start_pairbot(*args, env=env, **options)) as proc:
        yield proc


@asynccontextmanager
async def _ended(proc: asyncio.subprocess.Process) -> AsyncIterator[asyncio.subprocess.Process]:
    """``proc`` for the block, killed at its end if it still runs."""
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


_WITH_TERMINAL = (
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)
"""Run by the child of :func:`pairbot_in_terminal` before ``pairbot``: in its own session, it
takes the pseudo-terminal on its standard input as its controlling terminal (as a login
shell's is), so ``/dev/tty`` is that terminal, as ``getpass`` wants it."""


class Terminal:
    """The far side of a pseudo-terminal a ``pairbot`` runs in: what it showed, and typing."""

    WAIT = 20.0
    """How long :meth:`expect` waits for a text."""

    def __init__(self, master: int, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._master = master
        self._shown = bytearray()
        self._seen = 0
        self._changed = asyncio.Event()
        self.closed = False
        asyncio.get_running_loop().add_reader(master, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self._master, 65536)
        except OSError:  # EIO: every process holding the terminal has gone
            data = b""
        if not data:
            self.closed = True
            asyncio.get_running_loop().remove_reader(self._master)
        self._shown += data
        self._changed.set()

    @property
    def transcript(self) -> str:
        """Everything the terminal showed so far (the echo of what was typed included)."""
        return self._shown.decode("utf-8", "replace").replace("\r\n", "\n")

    async def expect(self, text: str) -> str:
        """Wait until ``text`` is shown after what earlier calls consumed; return what was
        shown up to its end, and consume it."""
        wanted = text.encode()
        async with asyncio.timeout(self.WAIT):
            while (at := self._shown.find(wanted, self._seen)) < 0:
                if self.closed:
                    raise AssertionError(f"{text!r} never shown:\n{self.transcript}")
                self._changed.clear()
                await self._changed.wait()
        start, self._seen = self._seen, at + len(wanted)
        return self._shown[start : self._seen].decode("utf-8", "replace").replace("\r\n", "\n")

    def type(self, line: str) -> None:
        """Type ``line`` and Enter."""
        os.write(self._master, line.encode() + b"\r")

    async def exit_status(self) -> int:
        """Wait for the process to end and the terminal to show all it wrote."""
        async with asyncio.timeout(self.WAIT):
            status = await self.proc.wait()
            while not self.closed:
                self._changed.clear()
                await self._changed.wait()
        return status


@asynccontextmanager
async def pairbot_in_terminal(
    *args: str, env: Mapping[str, str] | None = None, unset: Iterable[str] = ()
) -> AsyncIterator[Terminal]:
    """Run ``pairbot *args`` on a new pseudo-terminal (its controlling terminal, standard
    input, output and error), as a person at a terminal would; killed if still running at
    the end of the block. ``unset`` names variables taken out of its environment."""
    master, slave = pty.openpty()
    environment = clean_env({"TERM": "dumb", **(env or {})})
    for name in unset:
        environment.pop(name, None)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _WITH_TERMINAL,
            str(PAIRBOT),
            *args,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=environment,
            start_new_session=True,
        )
    finally:
        os.close(slave)  # the child holds it now: when it ends, the master reads EIO
    terminal = Terminal(master, proc)
    try:
        async with _ended(proc):
            yield terminal
    finally:
        if not terminal.closed:
            asyncio.get_running_loop().remove_reader(master)
        os.close(master)


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
