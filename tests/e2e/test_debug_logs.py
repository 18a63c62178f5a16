"""``--debug`` logs of whole runs hold no code, token, configured secret or message text.

Each platform is played end to end by real ``pairbot`` processes at DEBUG (every logger,
third-party ones included) against its loopback fake: ``pairbot run --debug`` serves the
platform; a stranger writes, gets a code and the owner approves it by typing it in lowercase
with its dash; a second stranger is approved by the notice's Approve button (or, where the
platform has no buttons, by the code typed plain); a third by ``pairbot pairing approve
--debug``; the approved senders write texts the echo handler sends back; the owner asks
``/pending``; a device pairs through the gateway with ``pairbot node pair --debug`` (a token is
minted) and connects with ``pairbot node connect --debug``; the owner makes a one-time invite
in chat (``/nodes invite``) and another with ``pairbot nodes invite --debug``, and a device
joins with each (``pairbot node pair --invite --debug``). Everything every process wrote to
stderr is then searched for every secret of the run, in every form.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from bot.cli.demo import load_platform
from bot.core import platforms
from bot.core.codes import format_code
from bot.core.config import SECRET_KEYS
from bot.core.invites import SetupCode
from bot.core.platforms import KNOWN_PROVIDERS
from providers.discord.fake import FakeDiscordServer
from providers.fakebase import DemoPlatform, free_port
from providers.imessage.fake import FakeBlueBubbles
from providers.slack.fake import FakeSlackServer
from providers.telegram.fake import FakeTelegramServer
from providers.whatsapp.fake import FakeWhatsAppServer
from tests.e2e.support import code_in
from tests.process import node_pair_pixel_9, run_pairbot, start_pairbot, write_config

pytestmark = pytest.mark.e2e

WAIT = 30.0
SDKS_LOG_HTTP = ("telegram", "slack", "discord")
"""Their SDKs log each HTTP call with its status; the others use aiohttp, which does not."""
PAIRBOT_SENDS = (
    # fragments of every kind of text pairbot sends (stranger, approved sender, owner)
    "only answers people its owner has approved",
    "Your pairing code",
    "send them this code",
    "Send a message to start chatting",
    "New pairing request",
    "given by the sender",
    "Approve only if you know who holds this code",
    "They have been told",
    "Nothing is pending",
    "New node pairing request",
    "given by the node",
    "its token was sent to the waiting node",
    "one device may join with it",
    "joined with your invite",
)
LINE = re.compile(r"^\S+ \S+ (?P<level>[A-Z]+) (?P<name>[\w.\-]+): ")


def _nonce() -> str:
    # Lowercase with o/i/l/1/0 in it: no rule but the message-text one can mask it.
    return f"oil{secrets.token_hex(3)}lio"


def _with_secrets(platform: DemoPlatform) -> DemoPlatform:
    """Give the platform's fake fresh, realistic secrets (the defaults are short fakes)."""
    fake: Any = platform
    word = secrets.token_urlsafe
    if platform.provider == "telegram":
        fake.fake = FakeTelegramServer(token=f"{secrets.randbelow(10**9) + 10**9}:AA{word(24)}")
        fake.fake.started_before(int(platform.owner_id))
    elif platform.provider == "slack":
        fake.fake = FakeSlackServer(
            bot_token=f"xoxb-{word(18)}",
            app_token=f"xapp-1-{word(18)}",
            signing_secret=secrets.token_hex(16),
        )
        fake.fake.add_user(platform.owner_id, name="Owner")
    elif platform.provider == "discord":
        fake.fake = FakeDiscordServer(token=f"MT{word(18)}.{word(4)}.{word(20)}")
    elif platform.provider == "whatsapp":
        fake.fake = FakeWhatsAppServer(
            access_token=f"EAAG{word(60)}", app_secret=word(24), verify_token=word(18)
        )
    elif platform.provider == "imessage":
        fake.fake = FakeBlueBubbles(password=word(15))
    return platform


@dataclass
class Run:
    """One platform played through real processes; collects what must never be logged."""

    platform: DemoPlatform
    tmp: Path
    env: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    codes: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    stderr: dict[str, Path] = field(default_factory=dict)

    def write_config(self, gateway_port: int) -> Path:
        block: dict[str, Any] = {}
        for key, value in self.platform.provider_config().items():
            if key in SECRET_KEYS and value:
                var = f"PAIRBOT_T_{key.upper()}"
                self.env[var] = str(value)
                self.secrets[f"providers.{self.platform.provider}.{key}"] = str(value)
                value = f"${{{var}}}"
            block[key] = value
        operator = secrets.token_urlsafe(24)
        self.env["PAIRBOT_T_OPERATOR"] = operator
        self.secrets["gateway.operator_token"] = operator
        config = {
            "state_dir": str(self.tmp / "state"),
            "owners": [{"provider": self.platform.provider, "user_id": self.platform.owner_id}],
            "handler": {"kind": "echo"},
            "gateway": {"port": gateway_port, "operator_token": "${PAIRBOT_T_OPERATOR}"},
            "providers": {self.platform.provider: block},
        }
        return write_config(self.tmp / "pairbot.yaml", config)

    async def pairbot(
        self, label: str, *args: str, stdout: int = subprocess.DEVNULL
    ) -> asyncio.subprocess.Process:
        log = self.tmp / f"{label}.stderr"
        self.stderr[label] = log
        with log.open("wb") as err:
            return await start_pairbot(*args, env=self.env, stdout=stdout, stderr=err)

    def logs(self) -> dict[str, str]:
        return {label: path.read_text(errors="replace") for label, path in self.stderr.items()}


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def reply(platform: DemoPlatform, user: str, seen: int, what: str) -> str:
    """Wait for text number ``seen + 1`` the bot sent ``user``; return it."""
    await until(lambda: len(platform.texts_to(user)) > seen, what)
    return platform.texts_to(user)[seen]


async def reply_with(platform: DemoPlatform, user: str, fragment: str, what: str) -> str:
    """Wait for a text to ``user`` that contains ``fragment``; return it."""

    def found() -> list[str]:
        return [t for t in platform.texts_to(user) if fragment in t]

    await until(lambda: bool(found()), what)
    return found()[0]


def press_approve(platform: DemoPlatform, code: str) -> bool:
    """The owner presses Approve on the notice about ``code``; False if there are no buttons."""
    fake: Any = cast(Any, platform).fake
    owner = platform.owner_id
    name = platform.provider
    if not platforms.platform(name).buttons:
        return False
    if name == "telegram":
        notice = next(m for m in fake.sent if str(m["chat_id"]) == owner and code in m["text"])
        data = notice["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        fake.press_button(int(owner), notice["message_id"], data)
    elif name == "slack":
        channel = fake.im_channel(owner)
        notice = next(m for m in fake.sent if m["channel"] == channel and code in m["text"])
        fake.press_button(owner, notice["ts"], index=0)
    elif name == "discord":
        channel = fake.dm_channel_id(owner)
        notice = next(
            m
            for m in fake.sent
            if m["channel_id"] == channel and code in m["content"] and m["components"]
        )
        fake.press_button(owner, notice["message_id"], label="Approve")
    elif name == "whatsapp":
        notice = next(
            m for m in fake.messages_to(owner) if code in (m["text"] or "") and m["buttons"]
        )
        fake.press_button(owner, notice["message_id"], notice["buttons"][0]["id"], name="Owner")
    else:
        raise AssertionError(f"{name} has buttons, and this test cannot press them yet")
    return True


async def play(run: Run) -> None:
    """The whole flow on one platform, every pairbot process at DEBUG."""
    platform = run.platform
    slash = "" if platforms.platform(platform.provider).bare_commands else "/"
    owner = platform.owner_id
    alice, bob, carol = platform.user_id(1), platform.user_id(2), platform.user_id(3)
    port = free_port()
    config = run.write_config(port)
    bot = await run.pairbot("run", "run", "--debug", "--config", str(config))
    try:
        await until(
            lambda: "pairbot running:" in run.stderr["run"].read_text(errors="replace"),
            "pairbot run to start",
        )
        owner_seen = 0

        async def stranger(user: str, name: str) -> str:
            text = f"Hello there, {name} writing about the violin lesson {_nonce()}"
            run.texts.append(text)
            platform.dm(user, text, name=name)
            code = code_in(await reply(platform, user, 0, f"{name}'s code"))
            run.codes.append(code)
            await reply_with(platform, owner, format_code(code), f"the notice of {name}")
            return code

        async def writes_and_hears_back(user: str, name: str) -> None:
            text = f"Thanks! {name} would like to book a lesson {_nonce()}"
            run.texts.append(text)
            seen = len(platform.texts_to(user))
            platform.dm(user, text, name=name)
            assert await reply(platform, user, seen, f"the echo to {name}") == text

        async def owner_says(text: str, expect: str) -> str:
            nonlocal owner_seen
            owner_seen = len(platform.texts_to(owner))
            platform.dm(owner, text, name="Owner")
            return await reply_with(platform, owner, expect, f"the answer to {text!r}")

        # 1. A stranger writes; the owner approves the code typed in lowercase with its dash.
        code = await stranger(alice, "Alice")
        await owner_says(f"{slash}approve {format_code(code).lower()}", f"sender {alice}")
        await reply(platform, alice, 1, "Alice told she is approved")
        await writes_and_hears_back(alice, "Alice")

        # 2. A second stranger; the owner presses Approve (or types the code as it was sent).
        code = await stranger(bob, "Bob")
        if not press_approve(platform, code):
            await owner_says(f"{slash}approve {code}", f"sender {bob}")
        await reply(platform, bob, 1, "Bob told he is approved")
        await writes_and_hears_back(bob, "Bob")

        # 3. A third one, approved from the shell with `pairbot pairing approve --debug`.
        code = await stranger(carol, "Carol")
        cli = await run.pairbot(
            "pairing-approve",
            "pairing",
            "approve",
            "--debug",
            "--config",
            str(config),
            "--provider",
            platform.provider,
            code,
        )
        assert await asyncio.wait_for(cli.wait(), WAIT) == 0
        await reply(platform, carol, 1, "Carol told she is approved")
        await writes_and_hears_back(carol, "Carol")

        await owner_says(f"{slash}pending", "Nothing is pending")

        # 4. A device pairs through the gateway; the owner approves it in chat.
        url = f"ws://127.0.0.1:{port}"
        node_dir = run.tmp / "node"
        pair = await run.pairbot(
            "node-pair", *node_pair_pixel_9(url, node_dir, "--debug"), stdout=subprocess.PIPE
        )
        notice = await reply_with(platform, owner, "New node pairing request", "node notice")
        request_id = next(
            ln.split(":", 1)[1].split()[0]
            for ln in notice.splitlines()
            if ln.startswith("Request:")
        )
        await owner_says(f"{slash}nodes approve {request_id}", "Approved node")
        out, _ = await asyncio.wait_for(pair.communicate(), WAIT)
        assert pair.returncode == 0
        token = out.decode().strip().splitlines()[-1]
        assert len(token) >= 43
        run.secrets["node token"] = token
        connect_args = ("--debug", "--gateway", url, "--node-dir", str(node_dir))
        connect = await run.pairbot("node-connect", "node", "connect", *connect_args)
        assert await asyncio.wait_for(connect.wait(), WAIT) == 0

        # 5. The owner invites a tablet in chat; it joins with the setup code at once.
        made = await owner_says(f"{slash}nodes invite 10m Tablet", "Its setup code")
        await join_with(run, next(w for w in made.split() if w.startswith("pairbot-invite:")))
        await reply_with(platform, owner, "joined with your invite", "the joined notice")

        # 6. An invite made in the shell, with `pairbot nodes invite --debug`.
        cli = await run.pairbot(
            "nodes-invite",
            "nodes",
            "invite",
            "--debug",
            "--config",
            str(config),
            stdout=subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(cli.communicate(), WAIT)
        assert cli.returncode == 0
        await join_with(
            run, next(w for w in out.decode().split() if w.startswith("pairbot-invite:"))
        )
    finally:
        if bot.returncode is None:
            bot.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(bot.wait(), WAIT)
            except TimeoutError:
                bot.kill()
                await bot.wait()


async def join_with(run: Run, code: str) -> None:
    """A device joins with an invite's setup code (``pairbot node pair --invite --debug``);
    every form of the code and its secret joins the strings never to be logged."""
    forms = SetupCode.parse(code).secrets
    number = sum(1 for what in run.secrets if what.startswith("invite ")) // len(forms) + 1
    for n, form in enumerate(forms):
        run.secrets[f"invite {number} form {n}"] = form
    node_dir = run.tmp / f"invited-{number}"
    joined = await run.pairbot(
        f"node-invite-{number}",
        *("node", "pair", "--debug", "--invite", code, "--node-dir", str(node_dir)),
    )
    assert await asyncio.wait_for(joined.wait(), WAIT) == 0


def forbidden(run: Run) -> dict[str, str]:
    """Every string that must not be in a log, named for the report."""
    found: dict[str, str] = dict(run.secrets)
    for n, code in enumerate(run.codes, 1):
        for form in {code, format_code(code), code.lower(), format_code(code).lower()}:
            found[f"code {n} as {form}"] = form
    for n, text in enumerate(run.texts, 1):
        found[f"text {n}"] = text
        found[f"text {n} nonce"] = text.rsplit(" ", 1)[1]
    for fragment in PAIRBOT_SENDS:
        found[f"pairbot's text {fragment!r}"] = fragment
    return found


def leaks(logs: dict[str, str], needles: dict[str, str]) -> list[str]:
    """``process / logger / what`` for every forbidden string found, once each."""
    found: set[str] = set()
    for label, text in logs.items():
        logger = "?"
        for line in text.splitlines():
            head = LINE.match(line) or re.match(r"^pairbot: (?P<level>[A-Z]+): ", line)
            if head is not None:
                logger = head.groupdict().get("name") or "(cli)"
            for what, needle in needles.items():
                if needle in line:
                    found.add(f"{label} / {logger} / {what}")
    return sorted(found)


@pytest.fixture(params=KNOWN_PROVIDERS)
def platform(request: pytest.FixtureRequest) -> DemoPlatform:
    return _with_secrets(load_platform(request.param))


async def test_debug_logs_of_a_whole_run_hold_no_secret_and_no_text(platform, tmp_path):
    run = Run(platform, tmp_path)
    await platform.start()
    try:
        await play(run)
    finally:
        await platform.stop()
    logs = run.logs()
    assert len(run.codes) == 3
    assert len(run.texts) == 6
    assert not leaks(logs, forbidden(run)), "\n".join(leaks(logs, forbidden(run)))

    # The logs are still worth reading: third-party DEBUG lines, ids, events, outcomes.
    bot = logs["run"]
    name = platform.provider
    assert re.search(r"DEBUG (?!bot\.)(?!providers\.)\S+: ", bot), "no third-party DEBUG line"
    assert f"pairing request created provider={name} sender={platform.user_id(1)}" in bot
    assert f"pairing approved provider={name} sender={platform.user_id(2)}" in bot
    assert re.search(r"node approved id=[A-Z0-9]{10} node=node-", bot)
    assert f"providers={name}" in bot
    if name in SDKS_LOG_HTTP:
        assert re.search(r"\b200\b", bot), "no status code left"
    assert "DEBUG" in logs["node-pair"]


def test_demo_with_debug_logs_the_sdk_but_no_code_token_or_text():
    """``pairbot demo --debug``: the CLI's own logging set-up (``main()``), a whole flow."""
    from providers.telegram.fake import DEFAULT_TOKEN

    result = run_pairbot("demo", "--provider", "telegram", "--debug", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    codes = re.findall(r"pairing code: (\S+)", result.stdout)
    assert len(codes) == 2
    needles = {form for code in codes for form in (code, code.replace("-", ""), code.lower())}
    needles |= {"summarise my inbox", "Hi again!", DEFAULT_TOKEN, *PAIRBOT_SENDS}
    assert [n for n in sorted(needles) if n in result.stderr] == []
    assert "pairbot: DEBUG: Calling Bot API endpoint `sendMessage`" in result.stderr
    assert "pairing approved provider=telegram sender=4001" in result.stderr


async def test_the_running_bot_feeds_every_code_and_token_to_the_registry(tmp_path):
    """The registry is what masks a code typed in lowercase letters only, or a token glued to
    other text; the bot feeds it codes loaded at start, codes it issues, tokens it mints."""
    from bot.cli.compose import open_app
    from bot.core.clock import SystemClock
    from bot.core.config import Config
    from bot.gateway.client import GatewayClient
    from bot.runtime.redact import Redactor
    from bot.runtime.remembered import REGISTRY
    from bot.services.pairing import PairingService
    from stores.jsonfile import JsonFileStore

    state = tmp_path / "state"
    store = JsonFileStore(state)
    earlier = PairingService(store, clock=SystemClock()).request("telegram", "4001", {})
    store.close()
    assert earlier.request is not None
    async with FakeTelegramServer() as fake:
        fake.started_before(111)
        config = Config.model_validate(
            {
                "owners": [{"provider": "telegram", "user_id": "111"}],
                "gateway": {"port": 0},
                "providers": {"telegram": {"token": fake.token, "api_base_url": fake.base_url}},
            }
        )
        async with open_app(config, state_dir=state) as app:
            assert earlier.request.code in REGISTRY.codes  # loaded from the store at start
            fake.dm(4002, "hello", first_name="Bob")
            sent = await fake.wait_for_sent(lambda m: m["chat_id"] == 4002, timeout=10)
            issued = code_in(sent[0]["text"])
            assert issued in REGISTRY.codes  # issued by this run
            assert app.gateway is not None
            async with GatewayClient.open(f"ws://127.0.0.1:{app.gateway.port}") as node:
                ask = await node.call("node.pair.request", {"nodeId": "pixel-9"})
                fake.dm(111, f"/nodes approve {ask['requestId']}")
                token = (await node.next_event("node.pair.resolved", wait=10))["token"]
    redactor = Redactor(registry=REGISTRY)
    assert redactor.redact(f"x{token}y") == "x[redacted]y"  # minted
    assert redactor.redact(f"x{ask['pickup']}y") == "x[redacted]y"  # handed to the asker
