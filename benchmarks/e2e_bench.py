"""End-to-end figures: stranger DM → code reply latency through each platform's loopback
fake, and the gate's decisions per second for known senders.

Usage: python benchmarks/e2e_bench.py [--rate 50] [--seconds 10] [--only allowed] [--dsn DSN]
                                     [--observe]

For every platform with a demo fake, the latency run offers ``rate`` new strangers per
second (each a distinct user, cap raised so every one gets a code) to the whole app on the
platform's real SDK, and measures from the moment the message is injected to the moment the
fake has the code reply (polled every millisecond). Telegram runs twice: with the flood
limiter lifted (what pairbot costs) and as deployed (30 sends/s, what Telegram allows). The
gate run times the full per-message decision (policy, owner check, allowlist from memory,
``gate.decide``) for allowlisted senders, in-process.

The allowed-sender runs measure what an allowed sender's message costs the running bot,
inbound dedupe through the cluster included: on WhatsApp's fake (a webhook) and Telegram's
(long polling), the round trip of one message at a time to its echo; and, in-process, the
inbound pipeline's messages/s for an allowed sender whose handler answers nothing (no send:
the pipeline alone, its cluster claim included), once for a sender of the config's
``allow_from`` and once for one approved (on the store's allowlist); with ``--dsn``, that run
again on a PostgreSQL state in a schema of its own (dropped after), whose cluster is the
database's. With ``--observe`` the allowed-sender runs have metrics on (a listener of their
own) and events out configured (an allowed sender's message is audited by nothing: this
measures what the two cost a message that makes no event).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _harness import bench_config, percentile  # first: it puts the repo root on sys.path

from bot.cli.demo import available_platforms, bot_on_fake
from bot.core.config import Config
from bot.core.gate import decide
from bot.core.models import DmPolicy, Inbound
from providers.fakebase import DemoPlatform


async def latency(
    provider: str, rate: float, seconds: float, send_rate: float | None = None
) -> list[float]:
    """Offer ``rate`` new strangers per second for ``seconds``; return each code's latency.

    Replies are noticed by polling the fake every millisecond for the strangers still
    waiting (a handful at a time), so figures carry about a millisecond of resolution.
    """

    def configure(platform: DemoPlatform) -> Config:
        cap = {"max_pending_per_provider": 10_000}
        return bench_config(platform, max_send_rate=send_rate, pairing=cap)

    async with bot_on_fake(provider, configure) as (platform, _app):
        return await _offer(platform, rate, seconds)


async def _offer(platform: DemoPlatform, rate: float, seconds: float) -> list[float]:
    total = int(rate * seconds)
    waiting: dict[str, float] = {}
    samples: list[float] = []

    def collect() -> None:
        now = time.perf_counter()
        answered = [u for u in waiting if platform.texts_to(u)]
        samples.extend(now - waiting.pop(u) for u in answered)

    start = time.perf_counter()
    for i in range(total):
        user = platform.user_id(1000 + i)
        while time.perf_counter() < start + i / rate:
            collect()
            await asyncio.sleep(0.001)
        waiting[user] = time.perf_counter()
        platform.dm(user, "hi", name=f"s{i}")
    deadline = time.perf_counter() + 120
    while waiting and time.perf_counter() < deadline:
        collect()
        await asyncio.sleep(0.001)
    return samples


ALLOWED = 7


OBSERVE: dict[str, Any] = {}
"""Config sections added to the allowed-sender runs (``--observe``)."""


async def allowed_round_trips(provider: str, count: int) -> list[float]:
    """``count`` messages from an allowed sender, each sent once the previous one's echo is
    back; return each round trip in seconds."""

    def configure(platform: DemoPlatform) -> Config:
        lifted = 10_000.0 if provider == "telegram" else None  # only Telegram's has a limiter
        return bench_config(platform, max_send_rate=lifted, allow_from=[user(platform)], **OBSERVE)

    def user(platform: DemoPlatform) -> str:
        return platform.user_id(ALLOWED)

    async with bot_on_fake(provider, configure) as (platform, _app):
        samples = []
        for i in range(count):
            began = time.perf_counter()
            platform.dm(user(platform), f"m{i}", name="allowed")
            while len(platform.texts_to(user(platform))) <= i:  # noqa: ASYNC110 (a fake's list)
                await asyncio.sleep(0.0002)
            samples.append(time.perf_counter() - began)
        return samples


async def silent(msg: Inbound) -> None:
    """The handler of the pipeline run: takes the message, answers nothing (a coroutine, so
    no worker thread is spent on it)."""
    del msg


async def pipeline_rate(count: int, dsn: str | None = None, *, stored: bool = False) -> float:
    """Allowed-sender messages/s through the inbound pipeline (gate, cluster claim, handler),
    handed in directly as the providers' worker hands them, one after the other; on the
    PostgreSQL state of ``dsn`` if given. The sender is in the config's ``allow_from``, or,
    ``stored``, approved (on the store's allowlist, for good: what a paired sender costs)."""

    def configure(platform: DemoPlatform) -> Config:
        store: dict[str, Any] = {"store": {"backend": "postgres", "dsn": dsn}} if dsn else {}
        return bench_config(
            platform,
            allow_from=[] if stored else [platform.user_id(ALLOWED)],
            handler={"kind": "python", "target": "e2e_bench:silent"},
            **store,
            **OBSERVE,
        )

    async with bot_on_fake("whatsapp", configure) as (platform, app):
        on_inbound = app.providers["whatsapp"]._on_inbound  # type: ignore[attr-defined]
        sender = platform.user_id(ALLOWED)
        if stored:
            await asyncio.to_thread(app.pairing.allow, "whatsapp", sender, actor="bench")
        messages = [Inbound.dm("whatsapp", sender, "hi", message_id=f"w{i}") for i in range(count)]
        start = time.perf_counter()
        for msg in messages:
            await on_inbound(msg)
        return count / (time.perf_counter() - start)


@contextlib.contextmanager
def pg_schema(dsn: str) -> Iterator[str]:
    """A DSN on a new schema of ``dsn``'s database, dropped after."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    schema = f"bench_{secrets.token_hex(6)}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield make_conninfo(dsn, options=f"-csearch_path={schema}")
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def gate_rate(n_allowed: int, rounds: int = 200_000) -> float:
    from bot.core.clock import SystemClock
    from bot.services.pairing import PairingService
    from stores.jsonfile import JsonFileStore

    with tempfile.TemporaryDirectory() as tmp:
        store = JsonFileStore(Path(tmp))
        with store.transaction() as txn:
            for i in range(n_allowed):
                txn.allow("telegram", str(20_000_000 + i))
        pairing = PairingService(store, clock=SystemClock())
        msg = Inbound.dm("telegram", "20000007", "hi")
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
    parser.add_argument("--only", choices=["allowed"], help="only the allowed-sender runs")
    parser.add_argument("--dsn", help="also run the pipeline on a PostgreSQL state here")
    parser.add_argument(
        "--observe", action="store_true", help="metrics on and events out in the allowed runs"
    )
    args = parser.parse_args()
    if args.observe:
        OBSERVE["metrics"] = {"enabled": True, "port": 0}
        OBSERVE["events"] = {
            "url": "http://127.0.0.1:9/events",
            "secret": secrets.token_urlsafe(32),
        }
    for name in ("whatsapp", "telegram"):
        trips = asyncio.run(allowed_round_trips(name, 500))
        print(
            f"allowed sender -> echo, one at a time, {name:<9} "
            f"p50 {percentile(trips, 50) * 1000:6.2f} ms   "
            f"p99 {percentile(trips, 99) * 1000:6.2f} ms"
        )
    rates = sorted(asyncio.run(pipeline_rate(20_000)) for _ in range(3))
    print(
        f"inbound pipeline, allowed sender, no reply: {rates[1]:>9,.0f} messages/s (median of 3)"
    )
    rates = sorted(asyncio.run(pipeline_rate(20_000, stored=True)) for _ in range(3))
    print(f"  the same, an approved (stored) sender:   {rates[1]:>9,.0f} messages/s")
    if args.dsn:
        with pg_schema(args.dsn) as where:
            rates = sorted(asyncio.run(pipeline_rate(2_000, where)) for _ in range(3))
        print(f"  the same on PostgreSQL (its cluster):      {rates[1]:>9,.0f} messages/s")
    if args.only == "allowed":
        return
    expected = int(args.rate * args.seconds)
    runs: list[tuple[str, float | None, str]] = [
        ("telegram", 10_000.0, "send limiter lifted"),
        ("telegram", 30.0, "as deployed: sends capped at 30/s, Telegram's limit"),
    ]
    runs += [(name, None, "") for name in available_platforms() if name != "telegram"]
    print(f"stranger DM -> code reply, {args.rate:g} new strangers/s for {args.seconds:g}s")
    for provider, send_rate, label in runs:
        samples = asyncio.run(latency(provider, args.rate, args.seconds, send_rate))
        title = f"{provider} ({label})" if label else provider
        if not samples:
            print(f"  {title:<62} no replies")
            continue
        print(
            f"  {title:<62} {len(samples):>4}/{expected} answered   "
            f"p50 {percentile(samples, 50) * 1000:8.1f} ms   "
            f"p99 {percentile(samples, 99) * 1000:8.1f} ms"
        )
    for n in (1_000, 10_000, 100_000):
        print(f"gate decisions for a known sender, {n:>7,} allowed: {gate_rate(n):>12,.0f}/s")


if __name__ == "__main__":
    main()
