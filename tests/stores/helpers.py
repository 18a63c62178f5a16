"""Helpers shared by the store tests: snapshots of a state dir, and the writer subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]

Snapshot = dict[str, tuple[bytes, int]]


def snapshot(state_dir: Path) -> Snapshot:
    """Every file under the state dir (the lock file aside): its bytes and mtime in ns."""
    found: Snapshot = {}
    for path in sorted(state_dir.rglob("*")):
        if path.is_file() and path.name != ".lock":
            found[str(path.relative_to(state_dir))] = (path.read_bytes(), path.stat().st_mtime_ns)
    return found


def load(path: Path) -> Any:
    """Parse one JSON file."""
    return json.loads(path.read_text(encoding="utf-8"))


def writer_cmd(
    mode: str, state_dir: Path, *args: object, backend: str = "json", dsn: str | None = None
) -> list[str]:
    """The command line that runs ``tests/stores/writer.py`` in one mode, on one backend."""
    return [
        sys.executable,
        "-m",
        "tests.stores.writer",
        f"--backend={backend}",
        *([f"--dsn={dsn}"] if dsn else []),
        mode,
        str(state_dir),
        *(str(a) for a in args),
    ]


def writer_env() -> dict[str, str]:
    """The environment for a writer: the repo importable, output unbuffered."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextlib.contextmanager
def writer_process(
    mode: str, state_dir: Path, *args: object, backend: str = "json", dsn: str | None = None
) -> Iterator[subprocess.Popen[str]]:
    """Run a writer for the ``with`` block (stdout a text pipe); kill it at the end if alive."""
    proc = subprocess.Popen(
        writer_cmd(mode, state_dir, *args, backend=backend, dsn=dsn),
        cwd=REPO_ROOT,
        env=writer_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    with proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def run_writer(
    mode: str, state_dir: Path, *args: object, backend: str = "json", dsn: str | None = None
) -> str:
    """Run a writer to completion; return its stdout (fails the test if it failed)."""
    done = subprocess.run(
        writer_cmd(mode, state_dir, *args, backend=backend, dsn=dsn),
        cwd=REPO_ROOT,
        env=writer_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def expect_line(proc: subprocess.Popen[str], wanted: str) -> None:
    """Read the writer's stdout until the line ``wanted`` (fails if it exits first)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == wanted:
            return
    raise AssertionError(f"writer exited ({proc.wait()}) before printing {wanted!r}")
