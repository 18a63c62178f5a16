"""Benchmark the JSON file store through PairingService: durable requests/s, approvals/s, gate µs.

Usage::

    python benchmarks/store_bench.py [--sizes 100,1000,10000] [--runs 3]

Every figure is the median of ``--runs`` runs, each in a fresh state dir under /tmp. Writes are
real (temp file, fsync, rename, dir fsync, audit append + fsync), so figures depend on the disk.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.core.clock import FakeClock
from bot.core.codes import ALPHABET, CODE_LENGTH
from bot.core.models import PendingRequest
from bot.services.pairing import PairingService, PairingSettings
from stores.jsonfile import JsonFileStore

PROVIDER = "telegram"
START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SETTINGS = PairingSettings(pending_ttl=timedelta(days=365), max_pending_per_provider=10**9)

TARGET_REQUESTS = 650.0  # per second, at 1,000 pending
TARGET_APPROVALS = 450.0  # per second, at 1,000 pending
TARGET_DECISION_US = 9.0  # per call, at 1,000 entries, flat to 100,000


def code_for(n: int) -> str:
    """Return a distinct valid pairing code for each ``n`` (base-32 digits of ``n``)."""
    digits = []
    for _ in range(CODE_LENGTH):
        n, d = divmod(n, len(ALPHABET))
        digits.append(ALPHABET[d])
    return "".join(digits)


def seed_pending(store: JsonFileStore, count: int, *, first: int = 0) -> list[str]:
    """Write ``count`` pending requests in one transaction; return their codes."""
    codes = [code_for(first + i) for i in range(count)]
    with store.transaction() as txn:
        for i, code in enumerate(codes):
            txn.put_request(
                PendingRequest(
                    provider=PROVIDER,
                    id=f"seed{first + i}",
                    code=code,
                    created_at=START,
                    last_seen_at=START,
                    meta={"username": f"user{first + i}"},
                    last_sent_at=START,
                )
            )
    return codes


def seed_allow(store: JsonFileStore, count: int) -> None:
    """Write an allowlist of ``count`` senders in one transaction."""
    with store.transaction() as txn:
        for i in range(count):
            txn.allow(PROVIDER, f"allowed{i}")


def fresh(tmp: Path, name: str) -> tuple[JsonFileStore, PairingService]:
    """Open a new store in its own dir and a PairingService over it."""
    store = JsonFileStore(tmp / name)
    service = PairingService(
        store, clock=FakeClock(START), settings=SETTINGS, new_code=_counter_codes()
    )
    return store, service


def _counter_codes() -> Callable[[], str]:
    counter = iter(range(10**7, 10**9))
    return lambda: code_for(next(counter))


def requests_per_s(tmp: Path, size: int, ops: int, run: int) -> float:
    """Time ``ops`` requests from new senders with ``size`` already pending."""
    store, service = fresh(tmp, f"req-{size}-{run}")
    seed_pending(store, size)
    service.request(PROVIDER, "warmup")
    began = time.perf_counter()
    for i in range(ops):
        service.request(PROVIDER, f"new{i}", {"username": f"new{i}"})
    return ops / (time.perf_counter() - began)


def approvals_per_s(tmp: Path, size: int, ops: int, run: int, *, provider: str | None) -> float:
    """Time ``ops`` approvals by code with ``size`` (+ the ones to approve) pending."""
    store, service = fresh(tmp, f"app-{size}-{run}-{provider}")
    codes = seed_pending(store, size + ops + 1)
    service.approve(codes[-1], provider=provider, actor="bench")
    began = time.perf_counter()
    for code in codes[size : size + ops]:
        service.approve(code, provider=provider, actor="bench")
    return ops / (time.perf_counter() - began)


def decision_us(tmp: Path, size: int, run: int, calls: int = 200_000) -> float:
    """Time PairingService.is_allowed for a known sender with ``size`` allowlist entries."""
    store, service = fresh(tmp, f"gate-{size}-{run}")
    seed_allow(store, size)
    known = f"allowed{size // 2}"
    if not service.is_allowed(PROVIDER, known):
        raise AssertionError("known sender not allowed")
    is_allowed = service.is_allowed
    began = time.perf_counter()
    for _ in range(calls):
        is_allowed(PROVIDER, known)
    return (time.perf_counter() - began) / calls * 1e6


def median(runs: int, measure: Callable[[int], float]) -> float:
    """Median of ``runs`` measurements."""
    return statistics.median(measure(run) for run in range(runs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="100,1000,10000", help="pending / allowlist sizes (comma-separated)"
    )
    parser.add_argument(
        "--gate-sizes",
        default=None,
        help="allowlist sizes for the decision time (default: sizes + 100000)",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--ops", type=int, default=200, help="writes timed per run")
    parser.add_argument(
        "--profile",
        choices=["request", "approve"],
        default=None,
        help="profile one operation at the first size instead of the table",
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    gate_sizes = (
        [int(s) for s in args.gate_sizes.split(",") if s]
        if args.gate_sizes
        else sorted({*sizes, 100_000})
    )

    with tempfile.TemporaryDirectory(prefix="pairbot-bench-", dir="/tmp") as raw:
        tmp = Path(raw)
        if args.profile:
            return profile(tmp, args.profile, sizes[0], args.ops)
        print(
            f"store benchmark: median of {args.runs} runs, {args.ops} writes per run, "
            f"state dir under {tmp.parent}; load average {_load()}"
        )
        print()
        header = (
            f"{'N':>8}  {'requests/s':>11}  {'approvals/s':>11}  "
            f"{'approvals/s (any provider)':>26}  {'decision µs':>11}"
        )
        print(header)
        print("-" * len(header))
        rows: dict[int, tuple[float | None, float | None, float | None]] = {}
        for size in sorted({*sizes, *gate_sizes}):
            req = app = app_any = gate = None
            if size in sizes:
                ops = max(20, min(args.ops, args.ops * 1000 // max(size, 1)))
                req = median(args.runs, partial(requests_per_s, tmp, size, ops))
                app = median(
                    args.runs, partial(approvals_per_s, tmp, size, ops, provider=PROVIDER)
                )
                app_any = median(
                    args.runs, partial(approvals_per_s, tmp, size, ops, provider=None)
                )
            if size in gate_sizes:
                gate = median(args.runs, partial(decision_us, tmp, size))
            rows[size] = (req, app, gate)
            print(
                f"{size:>8,}  {_fmt(req, '.0f'):>11}  {_fmt(app, '.0f'):>11}  "
                f"{_fmt(app_any, '.0f'):>26}  {_fmt(gate, '.2f'):>11}"
            )
        print()
        print(
            f"targets: >= {TARGET_REQUESTS:.0f} requests/s and >= {TARGET_APPROVALS:.0f} "
            f"approvals/s at 1,000 pending; decision <= {TARGET_DECISION_US:g} µs at 1,000 "
            "entries and flat to 100,000"
        )
        print(f"load average after: {_load()} (other work on the machine skews the figures)")
        return report_targets(rows)


def report_targets(rows: dict[int, tuple[float | None, float | None, float | None]]) -> int:
    """Print a verdict per target measured; return 1 if any was missed."""
    missed = 0

    def verdict(name: str, ok: bool, detail: str) -> None:
        nonlocal missed
        missed += not ok
        print(f"  {'ok  ' if ok else 'MISS'} {name}: {detail}")

    req, app, gate = rows.get(1000, (None, None, None))
    if req is not None:
        verdict("requests/s at 1,000", req >= TARGET_REQUESTS, f"{req:.0f}")
    if app is not None:
        verdict("approvals/s at 1,000", app >= TARGET_APPROVALS, f"{app:.0f}")
    if gate is not None:
        verdict("decision at 1,000", gate <= TARGET_DECISION_US, f"{gate:.2f} µs")
        largest = max(rows)
        big = rows[largest][2]
        if largest > 1000 and big is not None:
            # "flat": within 2x of the 1,000-entry figure and under the target
            flat = big <= max(2 * gate, gate + 1.0) and big <= TARGET_DECISION_US
            verdict(f"decision flat to {largest:,}", flat, f"{big:.2f} µs")
    return 1 if missed else 0


def profile(tmp: Path, op: str, size: int, ops: int) -> int:
    """Print a cProfile of ``ops`` requests or approvals at ``size`` pending."""
    profiler = cProfile.Profile()
    if op == "request":
        store, service = fresh(tmp, "profile")
        seed_pending(store, size)
        profiler.enable()
        for i in range(ops):
            service.request(PROVIDER, f"new{i}")
    else:
        store, service = fresh(tmp, "profile")
        codes = seed_pending(store, size + ops)
        profiler.enable()
        for code in codes[size:]:
            service.approve(code, actor="bench")
    profiler.disable()
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(35)
    return 0


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


if __name__ == "__main__":
    raise SystemExit(main())
