"""End-to-end figures: stranger DM → code reply latency through the loopback Bot API, and the
gate's decisions per second for known senders.

Usage: python benchmarks/e2e_bench.py [--rate 50] [--seconds 10]

The latency run offers ``rate`` new strangers per second (each a distinct user, cap raised
so every one gets a code) to the real python-telegram-bot app through the fake, and measures
from the moment the update is queued to the moment the fake receives the sendMessage with the
code. The gate run times the full per-message decision (policy, owner check, allowlist from
memory, ``gate.decide``) for allowlisted senders, in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.app import App
from bot.config import Config
from bot.gate import decide
from bot.models import ChatKind, DmPolicy, Inbound
from providers.fakes.telegram import FakeTelegramServer


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


async def latency(rate: float, seconds: float, send_rate: float) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        async with FakeTelegramServer() as fake:
            config = Config.model_validate({
                "owners": [{"provider": "telegram", "user_id": "111"}],
                "pairing": {"max_pending_per_provider": 10_000},
                "gateway": {"enabled": False},
                "providers": {"telegram": {"token": fake.token, "api_base_url": fake.base_url,
                                           "max_send_rate": send_rate}},
            })
            app = App(config, state_dir=Path(tmp) / "state")
            await app.start()
            try:
                queued: dict[int, float] = {}

                total = int(rate * seconds)
                start = time.perf_counter()
                for i in range(total):
                    user = 10_000_000 + i
                    target = start + i / rate
                    delay = target - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    queued[user] = time.perf_counter()
                    fake.dm(user, "hi")
                await fake.wait_until(lambda: sum(1 for m in fake.sent
                                                  if int(m["chat_id"]) in queued) >= total,
                                      timeout=120)
                arrival = {int(m["chat_id"]): m["received_at"] for m in fake.sent}
                return [arrival[u] - queued[u] for u in queued if u in arrival]
            finally:
                await app.stop()


def gate_rate(n_allowed: int, rounds: int = 200_000) -> float:
    from bot.clock import SystemClock
    from bot.pairing import PairingService
    from stores.jsonfile import JsonFileStore

    with tempfile.TemporaryDirectory() as tmp:
        store = JsonFileStore(Path(tmp))
        with store.transaction() as txn:
            for i in range(n_allowed):
                txn.allow("telegram", str(20_000_000 + i))
        pairing = PairingService(store, clock=SystemClock())
        msg = Inbound(provider="telegram", chat_id="20000007", chat_kind=ChatKind.DM,
                      sender_id="20000007", text="hi")
        owners = {("telegram", "111")}
        start = time.perf_counter()
        for _ in range(rounds):
            is_owner = (msg.provider, msg.sender_id) in owners
            allowed = pairing.is_allowed(msg.provider, msg.sender_id)
            decide(msg, policy=DmPolicy.PAIRING, is_owner=is_owner, is_allowed=allowed)
        return rounds / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    expected = int(args.rate * args.seconds)
    for send_rate, label in ((10_000.0, "pipeline (send limiter lifted)"),
                             (30.0, "as deployed (sends capped at 30/s, Telegram's limit)")):
        samples = asyncio.run(latency(args.rate, args.seconds, send_rate))
        print(f"stranger DM -> code reply, {args.rate:g} new strangers/s for "
              f"{args.seconds:g}s, {label}: {len(samples)}/{expected} answered")
        print(f"  p50 {percentile(samples, 50) * 1000:8.1f} ms   p99 "
              f"{percentile(samples, 99) * 1000:8.1f} ms   max {max(samples) * 1000:8.1f} ms"
              f"   mean {statistics.mean(samples) * 1000:8.1f} ms")
    for n in (1_000, 10_000, 100_000):
        print(f"gate decisions for a known sender, {n:>7,} allowed: {gate_rate(n):>12,.0f}/s")


if __name__ == "__main__":
    main()
