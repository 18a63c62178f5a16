"""Node connects per second: by token and by signature, over ws:// and over pinned wss://.

The real bot runs on the Telegram fake (:func:`bot.cli.demo.bot_on_fake`) with its gateway on
127.0.0.1; two nodes are paired through the operator methods, one with a token, one with an
Ed25519 key. Then ``--clients`` connections at once each repeat, for ``--seconds``:

- token: ``node.connect {nodeId, token}``;
- signature: ``node.challenge``, then ``node.connect {nodeId, signature, certFingerprint}``
  (two round trips and an Ed25519 verify on the server, a sign on the client).

Each connection is opened once and reused (the figure is the gateway's work per connect, not
TCP's or TLS's handshake); every connect also writes the node's ``lastConnectedAt`` to the
store, which dominates on the JSON store. The per-address limits are raised out of the way.

    python benchmarks/connect_bench.py [--seconds 5] [--clients 8] [--tls]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from _harness import percentile
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bot.cli.demo import bot_on_fake, fake_config
from bot.gateway.client import GatewayClient
from bot.services import keys

OP_TOKEN = "bench-operator-token-0123456789abcdefghijklmnop"


async def pair(url: str, pin: str | None, node_id: str, **params: str) -> str:
    async with (
        GatewayClient.open(url, pin=pin) as node,
        GatewayClient.open(url, pin=pin) as operator,
    ):
        ask = await node.call("node.pair.request", {"nodeId": node_id, **params})
        await operator.call("operator.connect", {"token": OP_TOKEN})
        await operator.call("node.pair.approve", {"requestId": ask["requestId"]})
        resolved = await node.next_event("node.pair.resolved", wait=5)
        return str(resolved["token"])


async def run(
    url: str, pin: str | None, seconds: float, clients: int, prove: Any
) -> tuple[int, list[float]]:
    latencies: list[float] = []
    done = 0
    deadline = time.perf_counter() + seconds

    async def one() -> None:
        nonlocal done
        async with GatewayClient.open(url, pin=pin) as client:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                await client.call("node.connect", await prove(client))
                latencies.append(time.perf_counter() - start)
                done += 1

    await asyncio.gather(*(one() for _ in range(clients)))
    return done, latencies


async def main(seconds: float, clients: int, tls: bool) -> None:
    gateway = {
        "enabled": True,
        "port": 0,
        "operator_token": OP_TOKEN,
        "pair_requests_per_minute": 100_000,
        "connects_per_minute": 100_000,
        **({"tls": "auto"} if tls else {}),
    }
    async with bot_on_fake(
        "telegram", lambda platform: fake_config(platform, gateway=gateway)
    ) as (_, app):
        assert app.gateway is not None
        pin = app.gateway.fingerprint or None
        url = f"{'wss' if pin else 'ws'}://127.0.0.1:{app.gateway.port}/"
        token = await pair(url, pin, "token-node")
        key = Ed25519PrivateKey.generate()
        await pair(url, pin, "key-node", publicKey=keys.public_key(key))

        async def by_token(_client: GatewayClient) -> dict[str, str]:
            return {"nodeId": "token-node", "token": token}

        async def by_signature(client: GatewayClient) -> dict[str, str]:
            return {"nodeId": "key-node", **await client.signed(keys.CONNECT, "key-node", key)}

        print(
            f"gateway {url} ({'TLS, pinned' if pin else 'plain'}), {clients} clients, "
            f"{seconds:g}s each, JSON store"
        )
        for name, prove in (("token", by_token), ("signature", by_signature)):
            done, lat = await run(url, pin, seconds, clients, prove)
            p50, p99 = (percentile(lat, pct) * 1000 for pct in (50, 99))
            print(
                f"  {name:<9} {done / seconds:8.0f} connects/s   "
                f"p50 {p50:6.2f} ms   p99 {p99:6.2f} ms"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--tls", action="store_true", help="serve wss:// (tls: auto), pinned")
    options = parser.parse_args()
    asyncio.run(main(options.seconds, options.clients, options.tls))
