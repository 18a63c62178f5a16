"""One pending stranger floods the bot; how long does an allowed sender wait for a reply?

Usage: python benchmarks/stranger_flood_bench.py [--messages 2000] [--rate 1000]
                                                 [--provider telegram|all]

A stranger writes once (and gets a code), then sends ``messages`` more at ``rate`` per
second; meanwhile the allowed sender writes every 50 ms (a person typing fast), and the time
from injecting each of their messages to the fake holding the echo reply is measured. The
target (issue 9, item 7): allowed sender p99 <= 100 ms. Also printed: the durable writes
(fsync calls in the bot's process) that the stranger's repeat messages cost.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

from _harness import FsyncCounter, bench_config, percentile  # first: the repo root on sys.path

from bot.cli.demo import available_platforms, bot_on_fake
from bot.core.config import Config
from providers.fakebase import DemoPlatform


async def flood(provider: str, messages: int, rate: float) -> tuple[list[float], int, float]:

    def configure(platform: DemoPlatform) -> Config:
        lifted = 10_000.0 if provider == "telegram" else None  # what pairbot costs, not Telegram
        return bench_config(platform, max_send_rate=lifted, allow_from=[platform.user_id(5002)])

    async with bot_on_fake(provider, configure) as (platform, _app):
        stranger, allowed = platform.user_id(5001), platform.user_id(5002)
        platform.dm(stranger, "hello?", name="Mallory")
        await _until(lambda: bool(platform.texts_to(stranger)))
        with FsyncCounter() as syncs:
            started = time.perf_counter()
            samples = await _interleave(platform, stranger, allowed, messages, rate)
            elapsed = time.perf_counter() - started
        return samples, syncs.count, elapsed


async def _interleave(
    platform: DemoPlatform, stranger: str, allowed: str, messages: int, rate: float
) -> list[float]:
    waiting: dict[str, float] = {}
    samples: list[float] = []

    def collect() -> None:
        got = platform.texts_to(allowed)
        now = time.perf_counter()
        answered = [t for t in waiting if any(t in g for g in got)]
        samples.extend(now - waiting.pop(t) for t in answered)

    start = time.perf_counter()
    next_question = start
    sent = 0
    while sent < messages:
        now = time.perf_counter()
        due = min(messages, int((now - start) * rate) + 1)
        for i in range(sent, due):
            platform.dm(stranger, f"spam {i}", name="Mallory")
        sent = due
        if now >= next_question:
            text = f"question {len(samples) + len(waiting)}"
            waiting[text] = time.perf_counter()
            platform.dm(allowed, text, name="Alice")
            next_question += 0.05
        collect()
        await asyncio.sleep(0.001)
    deadline = time.perf_counter() + 300
    while waiting and time.perf_counter() < deadline:
        collect()
        await asyncio.sleep(0.001)
    return samples


async def _until(condition: Callable[[], bool], within: float = 30.0) -> None:
    deadline = time.perf_counter() + within
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError("the stranger got no code")
        await asyncio.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument(
        "--rate", type=float, default=1000.0, help="stranger messages per second (default 1000)"
    )
    parser.add_argument("--provider", default="telegram", choices=[*available_platforms(), "all"])
    args = parser.parse_args()
    names = available_platforms() if args.provider == "all" else [args.provider]
    print(
        f"one pending stranger sends {args.messages} messages at {args.rate:g}/s; the "
        "allowed sender writes every 50 ms"
    )
    for name in names:
        samples, syncs, elapsed = asyncio.run(flood(name, args.messages, args.rate))
        if not samples:
            print(f"  {name:<10} no replies to the allowed sender")
            continue
        print(
            f"  {name:<10} allowed sender: {len(samples):>4} replies   "
            f"p50 {percentile(samples, 50) * 1000:8.1f} ms   "
            f"p99 {percentile(samples, 99) * 1000:8.1f} ms   "
            f"fsyncs during the flood: {syncs:>5}   ({elapsed:.1f} s)"
        )


if __name__ == "__main__":
    main()
