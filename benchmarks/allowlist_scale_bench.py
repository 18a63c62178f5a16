"""How the JSON store scales with a large allowlist: CLI commands timed as subprocesses.

Usage::

    python benchmarks/allowlist_scale_bench.py [--sizes 100000,1000000,4300000]
        [--src DIR] [--runs 1] [--profile COMMAND --profile-size N]

For each size, a fresh state dir under /tmp gets a Telegram allowlist of that many numeric
sender ids (written directly, in the shape pairbot writes), and each command below runs as
its own process, as the owner would run it. Printed per command: wall time, time to the first
byte of output (listings), and the process's peak RSS (``wait4``), each the median of
``--runs`` runs; output goes to a pipe this script drains, like ``| less`` would.

    start       ``pairbot allowlist list slack``: an empty list (interpreter + imports)
    list        ``pairbot allowlist list telegram``
    list-json   ``pairbot allowlist list telegram --json``
    approve     ``pairbot pairing approve telegram CODE``: one stranger, the large allowlist
    add         ``pairbot allowlist add telegram ID``
    gate        a new process's first ``JsonFileStore.allowed_until``: the bot's first message

``--src DIR`` runs the code in DIR (a checkout holding ``bot/`` and ``stores/``) instead of
this tree, to compare before and after on the same machine. ``--profile COMMAND`` runs one
command under cProfile at ``--profile-size`` entries and prints the top of the profile.
Writes are real (temp file, fsync, rename, dir fsync), so figures depend on the disk.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROVIDER = "telegram"
CODE = "BENCH234"  # a valid code (alphabet without 0/O/1/I)
FIRST_ID = 1_000_000_000  # ten-digit numeric ids, like Telegram's

GATE_SNIPPET = """
import sys, time
from pathlib import Path
from stores.jsonfile import JsonFileStore
began = time.perf_counter()
store = JsonFileStore(Path(sys.argv[1]))
assert store.allowed_until("telegram", sys.argv[2])
assert not store.allowed_until("telegram", "nobody")
print(f"{time.perf_counter() - began:.3f}")
"""


@dataclass(frozen=True, slots=True)
class Run:
    """One process: wall seconds, seconds to the first output byte, peak RSS in MiB."""

    wall: float
    first_byte: float | None
    rss_mib: float
    timed_out: bool = False


def write_private(path: Path, data: bytes) -> None:
    """Write a state file as pairbot would find it: 0600 in a 0700 dir."""
    for directory in (path.parent.parent, path.parent):
        directory.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def seed_allowlist(state: Path, size: int) -> None:
    """Write ``credentials/telegram-allowFrom.json`` with ``size`` ids, one per line.

    Written in slices, so this process stays small: ``wait4`` reports a child's peak RSS as
    at least this process's RSS at the fork.
    """
    path = state / "credentials" / f"{PROVIDER}-allowFrom.json"
    write_private(path, b'{\n  "version": 1,\n  "allowFrom": [')
    with path.open("a") as out:
        for start in range(0, size, 100_000):
            ids = range(FIRST_ID + start, FIRST_ID + min(size, start + 100_000))
            out.write(("," if start else "") + ",".join(f'\n    "{i}"' for i in ids))
        out.write("\n  ]\n}\n" if size else "]\n}\n")


def seed_stranger(state: Path, run: int) -> None:
    """Write one live pending request (code ``CODE``) from a new stranger."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    doc = {
        "version": 1,
        "requests": [
            {"id": f"stranger{run}", "code": CODE, "createdAt": now, "lastSeenAt": now, "meta": {}}
        ],
    }
    write_private(
        state / "credentials" / f"{PROVIDER}-pairing.json", json.dumps(doc, indent=2).encode()
    )


def measure(argv: list[str], src: Path, *, timeout: float) -> Run:
    """Run one process in ``src``, drain its stdout, and return its figures."""
    began = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            argv,
            cwd=src,
            stdout=subprocess.PIPE,
            stderr=err,
            env={**os.environ, "PYTHONPATH": str(src)},
        )
        assert proc.stdout is not None
        killed = threading.Event()

        def kill() -> None:
            killed.set()
            proc.kill()

        killer = threading.Timer(timeout, kill)
        killer.start()
        first: float | None = None
        fd = proc.stdout.fileno()
        while os.read(fd, 1 << 16):
            if first is None:
                first = time.perf_counter() - began
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)
        killer.cancel()
        killer.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - began
        if killed.is_set():
            return Run(wall=wall, first_byte=first, rss_mib=usage.ru_maxrss / 1024, timed_out=True)
        if proc.returncode != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip().splitlines()[-1:]
            raise RuntimeError(f"{' '.join(argv[-4:])}: exit {proc.returncode}: {tail}")
    return Run(wall=wall, first_byte=first, rss_mib=usage.ru_maxrss / 1024)


def pairbot(state: Path, *args: str) -> list[str]:
    """The command line of ``pairbot ARGS`` on ``state``, run with this interpreter."""
    return [sys.executable, "-m", "bot", "--state-dir", str(state), *args]


def commands(
    state: Path, size: int
) -> dict[str, tuple[Callable[[int], None], Callable[[int], list[str]]]]:
    """Each command: (prepare run n, argv of run n)."""

    def nothing(_run: int) -> None:
        return None

    def stranger(run: int) -> None:
        seed_stranger(state, run)

    snippet = state / "gate.py"  # a file, not -c: cProfile can run a file
    snippet.write_text(GATE_SNIPPET)
    gate = [sys.executable, str(snippet), str(state), str(FIRST_ID + size // 2)]
    return {
        "start": (nothing, lambda _r: pairbot(state, "allowlist", "list", "slack")),
        "list": (nothing, lambda _r: pairbot(state, "allowlist", "list", PROVIDER)),
        "list-json": (nothing, lambda _r: pairbot(state, "allowlist", "list", PROVIDER, "--json")),
        "approve": (stranger, lambda _r: pairbot(state, "pairing", "approve", PROVIDER, CODE)),
        "add": (
            nothing,
            lambda r: pairbot(state, "allowlist", "add", PROVIDER, str(FIRST_ID - 1 - r)),
        ),
        "gate": (nothing, lambda _r: gate),
    }


def bench(
    tmp: Path, src: Path, sizes: list[int], runs: int, only: list[str], timeout: float
) -> None:
    """Print one table row per (size, command)."""
    print(f"allowlist scale: code in {src}; median of {runs} run(s); load average {_load()}")
    header = f"{'N':>10}  {'command':<10}  {'wall s':>8}  {'first byte s':>12}  {'peak MiB':>9}"
    print(header)
    print("-" * len(header))
    for size in sizes:
        state = tmp / f"state-{size}"
        seed_allowlist(state, size)
        for name, (prepare, argv) in commands(state, size).items():
            if only and name not in only:
                continue
            results = []
            for run in range(runs):
                prepare(run)
                results.append(measure(argv(run), src, timeout=timeout))
            wall = statistics.median(r.wall for r in results)
            firsts = [r.first_byte for r in results if r.first_byte is not None]
            first = "-"
            if name.startswith("list"):
                first = f"{statistics.median(firsts):.2f}" if firsts else "none"
            rss = statistics.median(r.rss_mib for r in results)
            late = ">" if any(r.timed_out for r in results) else " "
            print(
                f"{size:>10,}  {name:<10}  {late}{wall:>7.2f}  {first:>12}  {rss:>9.0f}",
                flush=True,
            )
    print(f"load average after: {_load()} (other work on the machine skews the figures)")
    print(f"'>' marks a command killed after --timeout {timeout:g}s (its figures are partial)")


def profile(tmp: Path, src: Path, name: str, size: int, timeout: float) -> None:
    """Run one command under cProfile and print its top functions."""
    state = tmp / f"state-{size}"
    seed_allowlist(state, size)
    prepare, argv = commands(state, size)[name]
    prepare(0)
    out = tmp / "profile.out"
    line = argv(0)
    profiled = [line[0], "-m", "cProfile", "-o", str(out), *line[1:]]
    measure(profiled, src, timeout=timeout)
    pstats.Stats(str(out)).sort_stats("tottime").print_stats(15)
    pstats.Stats(str(out)).sort_stats("cumulative").print_stats(25)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="100000,1000000,4300000", help="allowlist sizes (comma-separated)"
    )
    parser.add_argument(
        "--src", type=Path, default=ROOT, help="source tree to run (default: this one)"
    )
    parser.add_argument("--runs", type=int, default=1, help="runs per figure (median)")
    parser.add_argument("--only", default="", help="commands to run (comma-separated)")
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="kill a command after this many seconds"
    )
    parser.add_argument(
        "--profile",
        default=None,
        choices=["start", "list", "list-json", "approve", "add", "gate"],
        help="profile one command instead of the table",
    )
    parser.add_argument("--profile-size", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    only = [c for c in args.only.split(",") if c]
    src = args.src.resolve()
    with tempfile.TemporaryDirectory(prefix="pairbot-scale-", dir="/tmp") as raw:
        if args.profile:
            profile(Path(raw), src, args.profile, args.profile_size, args.timeout)
        else:
            bench(Path(raw), src, sizes, args.runs, only, args.timeout)
    return 0


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    raise SystemExit(main())
