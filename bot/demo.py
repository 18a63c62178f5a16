"""``pairbot demo``: the whole flow on one machine, with no accounts and no network.

It starts the loopback Telegram Bot API fake and the real bot (real python-telegram-bot)
against it, on a temporary state dir, then plays the people: a stranger who gets a code, a
non-owner who tries to approve it, the owner who approves, the stranger whose next message
goes through, a request that expires and is pruned by the scheduler, and a device that asks
to join through the node gateway and gets its token once the owner approves.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from bot.app import App
from bot.config import Config
from providers.fakes.telegram import FakeTelegramServer

OWNER, ALICE, MALLORY = 111111111, 4242, 6666
NAMES = {OWNER: "Owner", ALICE: "Alice", MALLORY: "Mallory"}
WAIT = 10.0


class Transcript:
    """Prints the conversation as it happens: who wrote, what the bot answered."""

    def __init__(self, fake: FakeTelegramServer, out: Console) -> None:
        self._fake = fake
        self._out = out
        self._shown = 0
        self._edits = 0

    def scene(self, title: str) -> None:
        self._out.print()
        self._out.print(Text(f"── {title} ", style="bold"))

    def note(self, text: str) -> None:
        self._out.print(Text(f"   ({text})", style="dim"))

    def says(self, user: int, text: str) -> None:
        self._out.print(Text(f"{NAMES[user]:>8} → bot: ", style="cyan") + Text(text))

    def node(self, text: str) -> None:
        self._out.print(Text(" Pixel 9 → gateway: ", style="magenta") + Text(text))

    def node_hears(self, text: str) -> None:
        self._out.print(Text(" gateway → Pixel 9: ", style="magenta") + Text(text))

    def presses(self, user: int, label: str) -> None:
        self._out.print(Text(f"{NAMES[user]:>8} presses ", style="cyan") + Text(f"[{label}]"))

    async def bot_replies(self, *chats: int) -> dict[int, list[dict[str, Any]]]:
        """Wait until the bot wrote to every chat in ``chats``; print all it wrote meanwhile."""
        fake = self._fake
        await self.until(lambda: all(any(m["chat_id"] == chat for m in fake.sent[self._shown:])
                                     for chat in chats))
        new = fake.sent[self._shown:]
        self._shown = len(fake.sent)
        by_chat: dict[int, list[dict[str, Any]]] = {}
        for message in new:
            self._print_bot(message)
            by_chat.setdefault(int(message["chat_id"]), []).append(message)
        return by_chat

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait (bounded) until ``condition`` holds."""
        await self._fake.wait_until(condition, timeout=WAIT)

    async def bot_edits(self) -> None:
        await self._fake.wait_until(lambda: len(self._fake.edits) > self._edits, timeout=WAIT)
        for edit in self._fake.edits[self._edits:]:
            who = NAMES.get(int(edit["chat_id"]), str(edit["chat_id"]))
            self._out.print(Text(f"bot edits its message to {who}: ", style="green") +
                            Text(edit["text"]))
        self._edits = len(self._fake.edits)

    def _print_bot(self, message: dict[str, Any]) -> None:
        who = NAMES.get(int(message["chat_id"]), str(message["chat_id"]))
        lines = message["text"].splitlines() or [""]
        self._out.print(Text(f"     bot → {who}: ", style="green") + Text(lines[0]))
        for line in lines[1:]:
            self._out.print(Text("              " + line))
        markup = message.get("reply_markup") or {}
        for row in markup.get("inline_keyboard", []):
            self._out.print(Text("              " + "  ".join(f"[{b['text']}]" for b in row),
                                 style="bold"))


def _code(text: str) -> str:
    line = next(ln for ln in text.splitlines() if "pairing code:" in ln)
    return line.split(":", 1)[1].strip()


async def run_demo(out: Console, *, ttl_seconds: int = 4) -> int:
    """Play the demo; return 0 when every step behaved as it should."""
    logging.getLogger().setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="pairbot-demo-") as tmp:
        async with FakeTelegramServer() as fake:
            config = Config.model_validate({
                "owners": [{"provider": "telegram", "user_id": str(OWNER)}],
                "pairing": {"pending_ttl": f"{ttl_seconds}s", "prune_interval": "1s"},
                "handler": {"kind": "echo"},
                "gateway": {"port": 0},
                "providers": {"telegram": {"token": fake.token,
                                           "api_base_url": fake.base_url}},
            })
            app = App(config, state_dir=Path(tmp) / "state", watch_interval=0.2)
            await app.start()
            try:
                return await _play(app, fake, Transcript(fake, out), out, ttl_seconds)
            finally:
                await app.stop()


async def _play(app: App, fake: FakeTelegramServer, t: Transcript, out: Console,
                ttl_seconds: int) -> int:
    out.print(Text("pairbot demo: a real Telegram bot (python-telegram-bot) against a loopback "
                   "Bot API. Echo is the assistant behind pairbot.", style="bold"))
    out.print(Text(f"State dir: {app.state_dir}   Owner: Telegram user {OWNER}", style="dim"))

    t.scene("1. A stranger writes to the bot")
    t.says(ALICE, "Hi! Can you summarise my inbox?")
    fake.dm(ALICE, "Hi! Can you summarise my inbox?", first_name="Alice")
    replies = await t.bot_replies(ALICE, OWNER)
    code = _code(replies[ALICE][0]["text"])
    t.note("Alice's message was not passed to the assistant; the owner got a notice")

    t.scene("2. Someone else tries to approve that code")
    t.says(MALLORY, f"/approve {code}")
    fake.dm(MALLORY, f"/approve {code}", first_name="Mallory")
    await t.bot_replies(MALLORY, OWNER)
    check(not app.pairing.is_allowed("telegram", str(ALICE)), "Mallory approved Alice")
    t.note("only the owner, in their own chat, can approve: Mallory just got a code of her own")

    t.scene("3. The owner approves Alice in their chat with the bot")
    t.says(OWNER, f"/approve {code}")
    fake.dm(OWNER, f"/approve {code}")
    await t.bot_replies(OWNER, ALICE)
    check(app.pairing.is_allowed("telegram", str(ALICE)), "Alice was not approved")

    t.scene("4. Alice's next message goes through")
    t.says(ALICE, "Hi again!")
    fake.dm(ALICE, "Hi again!", first_name="Alice")
    replies = await t.bot_replies(ALICE)
    check(replies[ALICE][-1]["text"] == "Hi again!", "Alice's message did not reach the assistant")
    t.note("the echo assistant answered: Alice is on the allowlist now")

    t.scene(f"5. Mallory's request expires ({ttl_seconds}s TTL in this demo; 1h by default)")
    await fake.wait_until(lambda: any(r["event"] == "expire" for r in app.store.read_audit()),
                          timeout=ttl_seconds + WAIT)
    t.note("the APScheduler prune job removed it and wrote an audit line")
    t.says(OWNER, "/pending")
    fake.dm(OWNER, "/pending")
    pending = await t.bot_replies(OWNER)
    check(pending[OWNER][-1]["text"] == "Nothing is pending.", "a request did not expire")

    await _node_scene(app, fake, t)

    t.scene("Audit log (no codes, no tokens)")
    for record in app.store.read_audit():
        out.print(Text(f"   {record['ts']}  {record['event']:<12} {record['outcome']:<9} "
                       f"actor={record['actor']}  subject={record['subject']}"))
    out.print()
    out.print(Text("Demo complete: every step behaved as expected.", style="bold green"))
    return 0


async def _node_scene(app: App, fake: FakeTelegramServer, t: Transcript) -> None:
    """A device asks to join over the gateway; the owner approves it in chat."""
    from bot.nodeclient import GatewayClient

    if app.gateway is None:
        raise DemoFailed("the gateway is not running")
    t.scene("6. A device asks to join through the gateway")
    async with GatewayClient.open(f"ws://127.0.0.1:{app.gateway.port}") as node:
        t.node("node.pair.request {nodeId: pixel-9, displayName: Pixel 9, platform: android}")
        ask = await node.call("node.pair.request", {"nodeId": "pixel-9",
                                                    "displayName": "Pixel 9",
                                                    "platform": "android"})
        t.node_hears(f"pending, request {ask['requestId']}")
        await t.bot_replies(OWNER)
        t.says(OWNER, f"/nodes approve {ask['requestId']}")
        fake.dm(OWNER, f"/nodes approve {ask['requestId']}")
        resolved = await node.next_event("node.pair.resolved", wait=WAIT)
        token = str(resolved.get("token", ""))
        check(resolved.get("decision") == "approved" and len(token) >= 43,
              "the node did not get its token")
        t.node_hears(f"node.pair.resolved: approved, token {token[:6]}… ({len(token)} chars, "
                     "sent only to this node; pairbot keeps its hash)")
        await t.bot_replies(OWNER)
    async with GatewayClient.open(f"ws://127.0.0.1:{app.gateway.port}") as node:
        t.node("node.connect {nodeId: pixel-9, token: …}")
        hello = await node.call("node.connect", {"nodeId": "pixel-9", "token": token})
        t.node_hears(f"connected as {hello['nodeId']} ({hello['displayName']})")


def check(ok: bool, failure: str) -> None:
    """Stop the demo with an error if a step did not behave."""
    if not ok:
        raise DemoFailed(failure)


class DemoFailed(RuntimeError):
    """A demo step did not behave as it should."""


def main(out: Console | None = None) -> int:
    """Run the demo from the CLI."""
    console = out or Console(highlight=False, soft_wrap=True)
    try:
        return asyncio.run(run_demo(console))
    except (DemoFailed, TimeoutError) as exc:
        console.print(Text(f"demo failed: {exc or 'timed out waiting for the bot'}",
                           style="bold red"))
        return 1


__all__ = ["main", "run_demo"]
