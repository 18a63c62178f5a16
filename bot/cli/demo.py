"""``pairbot demo``: the whole flow on one machine, with no accounts and no network.

It starts a loopback fake of a chat platform and the real bot (the platform's real SDK)
against it, on a temporary state dir, then plays the people: a stranger who gets a code, a
non-owner who tries to approve it, the owner who approves, the stranger whose next message
goes through, a request that expires and is pruned by the scheduler, a device that asks
to join through the node gateway (``wss://``, its certificate pinned) and gets its token once
the owner approves, and a second device that joins at once with a one-time invite the owner
made in the shell, shown as a QR code, which nobody can use twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO, cast

from rich.console import Console
from rich.text import Text

from bot.cli.compose import open_app
from bot.core import platforms
from bot.core.config import Config
from bot.core.errors import PairbotError
from bot.core.models import NodeVerdict
from bot.runtime.app import App
from bot.runtime.logs import add_secrets
from providers.fakebase import DemoPlatform

WAIT = 10.0


def available_platforms() -> list[str]:
    """The platforms whose fake is installed."""
    found = []
    for known in platforms.PLATFORMS:
        module, _, cls = known.demo.partition(":")
        try:
            if hasattr(importlib.import_module(module), cls):
                found.append(known.name)
        except ImportError:
            continue
    return found


def load_platform(name: str) -> DemoPlatform:
    """Instantiate the named platform's demo fake."""
    module, _, cls = platforms.platform(name).demo.partition(":")
    platform: DemoPlatform = getattr(importlib.import_module(module), cls)()
    return platform


def fake_config(
    platform: DemoPlatform, block: dict[str, Any] | None = None, **sections: Any
) -> Config:
    """The bot's config against ``platform``'s fake: its owner there, ``block`` (by default
    the fake's own ``providers.<name>`` block) and ``sections``; any positive duration goes."""
    return Config.with_any_durations(
        {
            "owners": [{"provider": platform.provider, "user_id": platform.owner_id}],
            "providers": {
                platform.provider: platform.provider_config() if block is None else block
            },
            **sections,
        }
    )


@contextlib.asynccontextmanager
async def bot_on_fake(
    provider: str, configure: Callable[[DemoPlatform], Config], **tuning: Any
) -> AsyncIterator[tuple[DemoPlatform, App]]:
    """Run the real bot against ``provider``'s loopback fake, on a temporary state dir.

    The fake starts first (its config block says where it listens), then ``configure`` gives
    the bot's config and the bot starts (``tuning`` goes to :class:`~bot.runtime.app.App`);
    on the way out the bot stops, then the fake. The demo plays on it, the benchmarks measure.
    """
    platform = load_platform(provider)
    with tempfile.TemporaryDirectory(prefix="pairbot-demo-") as tmp:
        await platform.start()
        try:
            config = configure(platform)
            add_secrets(config.secrets())
            app = open_app(config, state_dir=Path(tmp) / "state", **tuning)
            await app.start()
            try:
                yield platform, app
            finally:
                await app.stop()
        finally:
            await platform.stop()


class Transcript:
    """Prints the conversation as it happens: who wrote, what the bot answered."""

    def __init__(self, platform: DemoPlatform, out: Console, names: dict[str, str]) -> None:
        self._platform = platform
        self._out = out
        self._names = names
        self._shown = dict.fromkeys(names, 0)

    def scene(self, title: str) -> None:
        self._out.print()
        self._out.print(Text(f"── {title} ", style="bold"))

    def note(self, text: str) -> None:
        self._out.print(Text(f"   ({text})", style="dim"))

    def says(self, user: str, text: str) -> None:
        self._out.print(Text(f"{self._names[user]:>8} → bot: ", style="cyan") + Text(text))

    def node(self, text: str, *, device: str = "Pixel 9") -> None:
        self._out.print(Text(f" {device} → gateway: ", style="magenta") + Text(text))

    def node_hears(self, text: str, *, device: str = "Pixel 9") -> None:
        self._out.print(Text(f" gateway → {device}: ", style="magenta") + Text(text))

    def shell(self, command: str) -> None:
        self._out.print(Text(f"   owner $ {command}", style="yellow"))

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait (bounded) until ``condition`` holds."""
        deadline = asyncio.get_running_loop().time() + WAIT
        while not condition():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("the bot did not answer in time")
            await asyncio.sleep(0.02)

    async def bot_replies(self, *users: str) -> dict[str, list[str]]:
        """Wait until the bot wrote to every one of ``users``; print all it wrote meanwhile."""

        def new(user: str) -> list[str]:
            return self._platform.texts_to(user)[self._shown[user] :]

        await self.until(lambda: all(new(u) for u in users))
        replies: dict[str, list[str]] = {}
        for user, name in self._names.items():
            texts = new(user)
            self._shown[user] += len(texts)
            replies[user] = texts
            for text in texts:
                lines = text.splitlines() or [""]
                self._out.print(Text(f"     bot → {name}: ", style="green") + Text(lines[0]))
                for line in lines[1:]:
                    self._out.print(Text("              " + line))
        return replies


def _code(text: str) -> str:
    line = next(ln for ln in text.splitlines() if "pairing code:" in ln)
    return line.split(":", 1)[1].strip()


async def run_demo(
    out: Console, *, provider: str = "telegram", ttl_seconds: int = 4, with_node: bool = True
) -> int:
    """Play the demo on one platform; return 0 when every step behaved as it should."""
    root = logging.getLogger()
    if root.level != logging.DEBUG:  # `pairbot demo --debug` keeps its debug lines
        root.setLevel(logging.WARNING)

    def configure(platform: DemoPlatform) -> Config:
        return fake_config(
            platform,
            pairing={"pending_ttl": f"{ttl_seconds}s", "prune_interval": "1s"},
            handler={"kind": "echo"},
            gateway={"port": 0, "tls": "auto"},
        )

    async with bot_on_fake(provider, configure, watch_interval=0.2) as (platform, app):
        return await _play(app, platform, out, ttl_seconds, with_node)


async def _play(
    app: App, platform: DemoPlatform, out: Console, ttl_seconds: int, with_node: bool
) -> int:
    owner, alice, mallory = platform.owner_id, platform.user_id(1), platform.user_id(2)
    t = Transcript(platform, out, {owner: "Owner", alice: "Alice", mallory: "Mallory"})
    name = platform.provider
    slash = "" if platforms.platform(name).bare_commands else "/"
    out.print(
        Text(
            f"pairbot demo on {name}: the real {name} connector against a loopback "
            "fake of its API. Echo is the assistant behind pairbot.",
            style="bold",
        )
    )
    out.print(Text(f"State dir: {app.state_dir}   Owner: {name} user {owner}", style="dim"))

    t.scene("1. A stranger writes to the bot")
    t.says(alice, "Hi! Can you summarise my inbox?")
    platform.dm(alice, "Hi! Can you summarise my inbox?", name="Alice")
    replies = await t.bot_replies(alice, owner)
    code = _code(replies[alice][0])
    t.note("Alice's message was not passed to the assistant; the owner got a notice")

    t.scene("2. Someone else tries to approve that code")
    t.says(mallory, f"/approve {code}")
    platform.dm(mallory, f"/approve {code}", name="Mallory")
    await t.bot_replies(mallory, owner)
    check(not app.pairing.is_allowed(name, alice), "Mallory approved Alice")
    t.note("only the owner, in their own chat, can approve: Mallory just got a code of her own")

    t.scene("3. The owner approves Alice in their chat with the bot")
    t.says(owner, f"{slash}approve {code}")
    platform.dm(owner, f"{slash}approve {code}", name="Owner")
    await t.bot_replies(owner, alice)
    check(app.pairing.is_allowed(name, alice), "Alice was not approved")

    t.scene("4. Alice's next message goes through")
    t.says(alice, "Hi again!")
    platform.dm(alice, "Hi again!", name="Alice")
    replies = await t.bot_replies(alice)
    check(replies[alice][-1] == "Hi again!", "Alice's message did not reach the assistant")
    t.note("the echo assistant answered: Alice is on the allowlist now")

    t.scene(f"5. Mallory's request expires ({ttl_seconds}s TTL in this demo; 1h by default)")
    await t.until(lambda: any(r["event"] == "expire" for r in app.store.read_audit()))
    t.note("the APScheduler prune job removed it and wrote an audit line")
    t.says(owner, f"{slash}pending")
    platform.dm(owner, f"{slash}pending", name="Owner")
    pending = await t.bot_replies(owner)
    check(pending[owner][-1] == "Nothing is pending.", "a request did not expire")

    if with_node:
        await _node_scene(app, platform, t, slash)
        await _invite_scene(app, platform, t, out)

    t.scene("Audit log (no codes, no tokens)")
    for record in app.store.read_audit():
        out.print(
            Text(
                f"   {record['ts']}  {record['event']:<12} {record['outcome']:<9} "
                f"actor={record['actor']}  subject={record['subject']}"
            )
        )
    out.print()
    out.print(
        Text(f"Demo complete on {name}: every step behaved as expected.", style="bold green")
    )
    return 0


async def _node_scene(app: App, platform: DemoPlatform, t: Transcript, slash: str) -> None:
    """A device asks to join over the gateway; the owner approves it in chat."""
    from bot.gateway.client import GatewayClient

    if app.gateway is None:
        raise DemoFailed("the gateway is not running")
    owner = platform.owner_id
    t.scene("6. A device asks to join through the gateway")
    url, pin = f"wss://127.0.0.1:{app.gateway.port}", app.gateway.fingerprint
    t.note(f"wss://, the certificate pinned by its fingerprint {pin[:19]}…")
    async with GatewayClient.open(url, pin=pin) as node:
        t.node("node.pair.request {nodeId: pixel-9, displayName: Pixel 9, platform: android}")
        ask = await node.call(
            "node.pair.request",
            {"nodeId": "pixel-9", "displayName": "Pixel 9", "platform": "android"},
        )
        t.node_hears(f"pending, request {ask['requestId']}")
        await t.bot_replies(owner)
        command = f"{slash}nodes approve {ask['requestId']}"
        t.says(owner, command)
        platform.dm(owner, command, name="Owner")
        resolved = await node.next_event("node.pair.resolved", wait=WAIT)
        token = str(resolved.get("token", ""))
        check(
            resolved.get("decision") == NodeVerdict.APPROVED and len(token) >= 43,
            "the node did not get its token",
        )
        t.node_hears(
            f"node.pair.resolved: approved, token {token[:6]}… ({len(token)} chars, "
            "sent only to this node; pairbot keeps its hash)"
        )
        await t.bot_replies(owner)
    async with GatewayClient.open(url, pin=pin) as node:
        t.node("node.connect {nodeId: pixel-9, token: …}")
        hello = await node.call("node.connect", {"nodeId": "pixel-9", "token": token})
        t.node_hears(f"connected as {hello['nodeId']} ({hello['displayName']})")


async def _invite_scene(app: App, platform: DemoPlatform, t: Transcript, out: Console) -> None:
    """The owner invites a tablet from the shell (a QR code); it joins at once, once."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from bot.cli.nodes import show_invite
    from bot.core.invites import SetupCode
    from bot.gateway.client import GatewayCallError, GatewayClient
    from bot.runtime.remembered import remember_secret
    from bot.services import keys

    t.scene("7. The owner invites a tablet with a QR code; it joins at once, and only once")
    t.shell("pairbot nodes invite --for 10m --name Tablet")
    made = app.nodes.invite(
        app.invite_address(), actor="cli:owner", lasting=timedelta(minutes=10), name="Tablet"
    )
    for secret in made.secrets:
        remember_secret(secret)
    show_invite(out, made, qr_out=cast("TextIO", out.file))
    code = SetupCode.parse(made.code.text)  # what the tablet's camera read
    key = Ed25519PrivateKey.generate()
    device = "  Tablet"
    t.note("the tablet scans it: the gateway's URL, the certificate to pin, the secret")
    async with GatewayClient.open(code.address.url, pin=code.address.fingerprint) as node:
        t.node("node.pair.request {nodeId: tablet, publicKey: …, invite: …}", device=device)
        joined = await node.call(
            "node.pair.request",
            {"nodeId": "tablet", "publicKey": keys.public_key(key), "invite": code.secret},
        )
        check(joined.get("status") == "paired", "the invite did not pair the tablet")
        t.node_hears(f"paired at once by invite {joined['requestId']}", device=device)
    await t.bot_replies(platform.owner_id)
    async with GatewayClient.open(code.address.url, pin=code.address.fingerprint) as node:
        proof = await node.signed(keys.CONNECT, "tablet", key)
        t.node("node.connect {nodeId: tablet, signature: …}", device=device)
        hello = await node.call("node.connect", {"nodeId": "tablet", **proof})
        t.node_hears(f"connected as {hello['nodeId']} ({hello['displayName']})", device=device)
    async with GatewayClient.open(code.address.url, pin=code.address.fingerprint) as node:
        t.node("node.pair.request {nodeId: laptop, invite: <the same code>}", device=" Laptop")
        try:
            with _unwarned("bot.gateway.server"):  # the transcript shows the refusal
                await node.call("node.pair.request", {"nodeId": "laptop", "invite": code.secret})
        except GatewayCallError as exc:
            t.node_hears(f"refused: {exc.code}", device=" Laptop")
        else:
            raise DemoFailed("an invite paired a second device")
    t.note("an invite pairs one device; the second try is audited (node.invite refused)")


@contextlib.contextmanager
def _unwarned(name: str) -> Iterator[None]:
    """Keep the logger ``name``'s warnings out of the transcript for the block (not at
    ``--debug``), and its level as it was after."""
    logger = logging.getLogger(name)
    before = logger.level
    if logging.getLogger().level != logging.DEBUG:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(before)


def check(ok: bool, failure: str) -> None:
    """Stop the demo with an error if a step did not behave."""
    if not ok:
        raise DemoFailed(failure)


class DemoFailed(PairbotError):
    """A demo step did not behave as it should."""


def main(provider: str = "telegram", out: Console | None = None) -> int:
    """Run the demo from the CLI (``provider`` may be ``all``)."""
    console = out or Console(highlight=False, soft_wrap=True)
    names = available_platforms() if provider == "all" else [provider]
    for index, name in enumerate(names):
        try:
            status = asyncio.run(
                run_demo(console, provider=name, with_node=index == len(names) - 1)
            )
        except (DemoFailed, TimeoutError) as exc:
            console.print(Text(f"demo failed on {name}: {exc}", style="bold red"))
            return 1
        if status:
            return status
        if index < len(names) - 1:
            console.rule()
    return 0


__all__ = [
    "available_platforms",
    "bot_on_fake",
    "fake_config",
    "load_platform",
    "main",
    "run_demo",
]
