"""Several ``pairbot run`` on one PostgreSQL: real processes, one database, the loopback fakes.

Each instance is a ``pairbot run`` of its own, with a state dir of its own (nothing shared but
the database) and its gateway on a port of its own. The CLI runs with only the database in its
config, as it would on another machine. The instances learn of one another only through the
database: the state, and the cluster (claims, leases, messages, beats).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bot.core import messages
from bot.core.clock import SystemClock
from bot.gateway.client import GatewayCallError, GatewayClient, GatewayUnavailable
from bot.services.pairing import PairingService
from providers.fakebase import free_port
from providers.slack.fake import FakeSlackServer
from providers.telegram.fake import FakeTelegramServer
from stores.sql.cluster import PostgresCluster
from stores.sql.postgres import PostgresStore
from tests.e2e.support import code_in
from tests.gateway.support import within
from tests.pgproxy import Proxy
from tests.process import pairbot_exits, start_pairbot, telegram_config, write_config

pytestmark = pytest.mark.e2e

TOKEN = "987654321:AAH-instances-test-token-not-real"
ENV = {"TG_TOKEN": TOKEN, "SLACK_BOT": "xoxb-1", "SLACK_SIGNING": "slack-signing-secret"}
OWNER = 111
TOLD = messages.approved_sender()
CODE = "pairing code:"
TAKEOVER = 15.0
"""Seconds within which another instance takes over a connector whose holder died."""


@dataclass
class Instances:
    """The ``pairbot run`` processes of one test, on one database, and what they share."""

    tmp: Path
    dsn: str
    """Where the instances reach the database (maybe through a proxy)."""
    direct: str
    """Where the test itself reaches it."""
    procs: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    """Each instance's gateway port."""
    slack_ports: dict[str, int] = field(default_factory=dict)
    """Each instance's Slack events port (the load balancer's targets)."""
    _store: PostgresStore | None = None

    def store_block(self) -> dict[str, str]:
        return {"backend": "postgres", "dsn": self.dsn}

    async def start(self, name: str, config: dict[str, Any]) -> None:
        """Start instance ``name`` with ``config`` (its state dir and store set here)."""
        port = free_port()
        config = {
            **config,
            "state_dir": str(self.tmp / name),
            "store": self.store_block(),
            "gateway": {**config.get("gateway", {}), "port": port},
        }
        path = write_config(self.tmp / f"{name}.yaml", config)
        with (self.tmp / f"{name}.log").open("wb") as log:  # the child keeps its own copy
            self.procs[name] = await start_pairbot(
                "run", "--config", str(path), env=ENV, stdout=log, stderr=log
            )
        self.ports[name] = port

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    @property
    def store(self) -> PostgresStore:
        if self._store is None:
            self._store = PostgresStore(self.direct)
        return self._store

    def cluster(self) -> PostgresCluster:
        return PostgresCluster(self.store, instance_id="the-test")

    async def running(self, *names: str, timeout: float = 30) -> dict[str, str]:  # noqa: ASYNC109
        """Wait until every instance named beats as running; return name → instance id."""
        cluster = self.cluster()
        try:
            deadline = time.monotonic() + timeout
            while True:
                beats = await asyncio.to_thread(
                    cluster.instances, now=SystemClock().now(), within=timedelta(minutes=1)
                )
                by_pid = {
                    b.facts.get("pid"): b for b in beats if b.facts.get("phase") == "running"
                }
                found = {
                    n: by_pid[self.procs[n].pid].instance_id
                    for n in names
                    if self.procs[n].pid in by_pid
                }
                if len(found) == len(names):
                    return found
                for n in names:
                    if self.procs[n].returncode is not None:
                        pytest.fail(f"instance {n} exited: {self.log(n)[-3000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"instances not running after {timeout}s: {names}, beats {beats}")
                await asyncio.sleep(0.2)
        finally:
            cluster.close()

    async def holder(
        self,
        lease: str,
        ids: dict[str, str],
        timeout: float = 30,  # noqa: ASYNC109 (a deadline for polling)
        *,
        not_by: str | None = None,
    ) -> str:
        """The instance (by name) holding ``lease``, once one does (other than ``not_by``)."""
        cluster = self.cluster()
        names = {v: k for k, v in ids.items()}
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                held = await asyncio.to_thread(cluster.holders, now=SystemClock().now())
                if held.get(lease) in names and names[held[lease]] != not_by:
                    return names[held[lease]]
                await asyncio.sleep(0.2)
        finally:
            cluster.close()
        pytest.fail(f"nobody holds {lease}")

    def cli_config(self) -> Path:
        """A config with only the database: the CLI on another machine."""
        return write_config(
            self.tmp / "cli.yaml",
            {"state_dir": str(self.tmp / "cli"), "store": self.store_block()},
        )

    async def cli(self, *args: str) -> str:
        result = await pairbot_exits("--config", str(self.cli_config()), *args)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    async def stop(self) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                pytest.fail(f"instance {name} did not stop on SIGTERM: {self.log(name)[-2000:]}")
        if self._store is not None:
            self._store.close()


@contextlib.asynccontextmanager
async def instances(
    tmp_path: Path, dsn: str, direct: str | None = None
) -> AsyncIterator[Instances]:
    made = Instances(tmp_path, dsn, direct or dsn)
    try:
        yield made
    finally:
        await made.stop()


def tg_config(fake: FakeTelegramServer) -> dict[str, Any]:
    config = telegram_config(Path("unused"), fake.base_url, owner=OWNER)
    config["handler"] = {"kind": "echo"}
    config["pairing"] = {"max_pending_per_provider": 1000}  # the tests' strangers all get codes
    return config


def told(fake: FakeTelegramServer, chat: int) -> list[str]:
    return [t for t in fake.messages_to(chat) if t == TOLD]


def allow(inst: Instances, provider: str, *ids: str) -> None:
    pairing = PairingService(inst.store, clock=SystemClock())
    for sender in ids:
        pairing.allow(provider, sender, actor="test")


# --- telling an approved sender -------------------------------------------------------------


async def test_a_stranger_through_one_instance_approved_by_the_cli_is_told_once(
    tmp_path: Path, pg_dsn: str
) -> None:
    async with FakeTelegramServer(token=TOKEN) as fake, instances(tmp_path, pg_dsn) as inst:
        fake.started_before(OWNER)
        await inst.start("a", tg_config(fake))
        await inst.start("b", tg_config(fake))
        ids = await inst.running("a", "b")
        await inst.holder("connector:telegram", ids)
        fake.dm(4242, "hello", first_name="Alice")
        [asked] = await fake.wait_for_sent(lambda m: m["chat_id"] == 4242, timeout=10)
        code = code_in(asked["text"])

        await inst.cli("pairing", "approve", "--provider", "telegram", code)
        approved_at = time.monotonic()
        await fake.wait_for_sent(lambda m: m["chat_id"] == 4242 and m["text"] == TOLD, timeout=5)
        assert time.monotonic() - approved_at < 2.0
        await asyncio.sleep(2.0)  # both instances look at the outbox several times meanwhile
        assert len(told(fake, 4242)) == 1
        fake.dm(4242, "now?", first_name="Alice")
        await fake.wait_for_sent(
            lambda m: m["chat_id"] == 4242 and m["text"] == "now?", timeout=10
        )


# --- nodes ----------------------------------------------------------------------------------


async def test_a_node_on_one_instance_is_approved_and_revoked_through_the_other(
    tmp_path: Path, pg_dsn: str
) -> None:
    async with FakeTelegramServer(token=TOKEN) as fake, instances(tmp_path, pg_dsn) as inst:
        fake.started_before(OWNER)
        await inst.start("a", tg_config(fake))
        await inst.start("b", tg_config(fake))
        await inst.running("a", "b")
        url_a = f"ws://127.0.0.1:{inst.ports['a']}"
        async with GatewayClient.open(url_a) as node:
            ask = await node.call(
                "node.pair.request", {"nodeId": "pixel-9", "displayName": "Pixel 9"}
            )
            waiting = asyncio.ensure_future(node.next_event("node.pair.resolved", wait=10))
            began = time.monotonic()
            await inst.cli("nodes", "approve", str(ask["requestId"]))
            resolved = await waiting
            assert time.monotonic() - began < 2.0 + 2.0  # the CLI process's own start included
            token = str(resolved["token"])
        async with GatewayClient.open(url_a) as connected:
            await connected.call("node.connect", {"nodeId": "pixel-9", "token": token})
            closed = asyncio.ensure_future(connected.next_event("never", wait=10))
            began = time.monotonic()
            await inst.cli("nodes", "revoke", "pixel-9")
            with pytest.raises(GatewayUnavailable):
                await closed
            assert time.monotonic() - began < 2.0 + 2.0
        async with GatewayClient.open(f"ws://127.0.0.1:{inst.ports['b']}") as again:
            with pytest.raises(GatewayCallError):
                await again.call("node.connect", {"nodeId": "pixel-9", "token": token})


# --- one consumer: a holder killed ----------------------------------------------------------


async def test_killing_the_telegram_holder_hands_over_with_every_message_handled_once(
    tmp_path: Path, pg_dsn: str
) -> None:
    async with FakeTelegramServer(token=TOKEN) as fake, instances(tmp_path, pg_dsn) as inst:
        fake.started_before(OWNER)
        allowed = [5000 + n for n in range(4)]
        allow(inst, "telegram", *map(str, allowed))
        await inst.start("a", tg_config(fake))
        await inst.start("b", tg_config(fake))
        ids = await inst.running("a", "b")
        first = await inst.holder("connector:telegram", ids)
        other = "b" if first == "a" else "a"
        sent: list[tuple[int, str]] = []
        strangers: list[int] = []

        async def write(rounds: int, tag: str) -> None:
            for n in range(rounds):
                for sender in allowed:
                    text = f"{tag}-{n}-{sender}"
                    fake.dm(sender, text, first_name="Ally")
                    sent.append((sender, text))
                stranger = 7000 + len(strangers)
                strangers.append(stranger)
                fake.dm(stranger, "hi", first_name="Stranger")
                await asyncio.sleep(0.15)

        await write(10, "before")
        approved = await _approve_one(fake)
        os.kill(inst.procs[first].pid, signal.SIGKILL)
        killed_at = time.monotonic()
        await write(20, "during")  # ~3 s of traffic while nobody holds Telegram
        assert await inst.holder("connector:telegram", ids, TAKEOVER, not_by=first) == other
        taken_over = time.monotonic() - killed_at
        assert taken_over < TAKEOVER
        await write(10, "after")

        await within(TAKEOVER + 20, lambda: all(t in fake.messages_to(s) for s, t in sent))
        await within(
            10, lambda: all(any(CODE in t for t in fake.messages_to(s)) for s in strangers)
        )
        await asyncio.sleep(1.0)  # anything handled twice would have been answered by now
        for sender, text in sent:
            assert fake.messages_to(sender).count(text) == 1, (sender, text)
        for stranger in strangers:
            codes = [t for t in fake.messages_to(stranger) if CODE in t]
            assert len(codes) == 1, stranger
        allowed_now = PairingService(inst.store, clock=SystemClock()).allowed("telegram")
        assert str(approved) in {e.id for e in allowed_now}, "the approval survived the kill"
        inst.procs.pop(first)  # killed: nothing to stop


async def _approve_one(fake: FakeTelegramServer) -> int:
    """A stranger asks and the owner approves them in the owner chat; return their id."""
    fake.dm(6000, "let me in", first_name="Newcomer")
    [asked] = await fake.wait_for_sent(
        lambda m: m["chat_id"] == 6000 and CODE in m["text"], timeout=10
    )
    fake.dm(OWNER, f"/approve {code_in(asked['text'])}", first_name="Owner")
    await fake.wait_for_sent(lambda m: m["chat_id"] == 6000 and m["text"] == TOLD, timeout=10)
    return 6000


# --- webhooks on every instance -------------------------------------------------------------


async def test_a_slack_event_retried_to_the_other_instance_is_handled_once(
    tmp_path: Path, pg_dsn: str
) -> None:
    async with FakeSlackServer(bot_token="xoxb-1", signing_secret="slack-signing-secret") as fake:
        fake.add_user("U0OWNER", name="owner")
        async with instances(tmp_path, pg_dsn) as inst:
            allow(inst, "slack", "U0ALLY")
            for name in ("a", "b"):
                await inst.start(name, slack_config(fake, webhook_port(inst, name)))
            await inst.running("a", "b")
            event = fake.dm("U0ALLY", "hello once", name="ally", deliver=False)
            fake.events_url = f"http://127.0.0.1:{inst.slack_ports['a']}/slack/events"
            status, _ = await fake.post("events_api", event)
            assert status == 200
            fake.events_url = f"http://127.0.0.1:{inst.slack_ports['b']}/slack/events"
            status, _ = await fake.post("events_api", event, retry_num=1)
            assert status == 200

            await within(10, lambda: "hello once" in fake.messages_to("U0ALLY"))
            await asyncio.sleep(1.5)
            assert fake.messages_to("U0ALLY").count("hello once") == 1


def webhook_port(inst: Instances, name: str) -> int:
    inst.slack_ports[name] = free_port()
    return inst.slack_ports[name]


def slack_config(fake: FakeSlackServer, port: int) -> dict[str, Any]:
    return {
        "owners": [{"provider": "slack", "user_id": "U0OWNER"}],
        "handler": {"kind": "echo"},
        "providers": {
            "slack": {
                "bot_token": "${SLACK_BOT}",
                "signing_secret": "${SLACK_SIGNING}",
                "mode": "http",
                "api_base_url": fake.api_base_url,
                "webhook": {"host": "127.0.0.1", "port": port, "path": "/slack/events"},
            }
        },
    }


# --- the database restarted under load ------------------------------------------------------


@pytest.fixture
def proxy(pg_dsn: str) -> Iterator[Proxy]:
    fields = conninfo_to_dict(pg_dsn)
    made = Proxy(str(fields.get("host") or "127.0.0.1"), int(str(fields.get("port") or 5432)))
    made.start()
    yield made
    made.stop()


async def test_both_instances_ride_out_a_database_restart_and_lose_nothing(
    tmp_path: Path, pg_dsn: str, proxy: Proxy
) -> None:
    via = make_conninfo(pg_dsn, host="127.0.0.1", port=proxy.port)
    async with FakeTelegramServer(token=TOKEN) as fake, instances(tmp_path, via, pg_dsn) as inst:
        fake.started_before(OWNER)
        allow(inst, "telegram", "5001")
        await inst.start("a", tg_config(fake))
        await inst.start("b", tg_config(fake))
        ids = await inst.running("a", "b")
        await inst.holder("connector:telegram", ids)
        approved = await _approve_one(fake)

        proxy.stop()  # the server goes away: every connection cut, new ones refused
        fake.dm(5001, "while away", first_name="Ally")
        await fake.wait_for_sent(
            lambda m: m["chat_id"] == 5001 and m["text"] == "while away", timeout=10
        )  # allowed senders go on, from the gate's memory
        fake.dm(7777, "hello?", first_name="Stranger")
        await asyncio.sleep(3.0)
        assert not any(CODE in t for t in fake.messages_to(7777)), "no code while away"
        proxy.start()  # back, on the same port

        async def asks_until_told(chat: int) -> None:
            while not any(CODE in t for t in fake.messages_to(chat)):
                fake.dm(chat, "anyone?", first_name="Stranger")
                await asyncio.sleep(1.0)

        await asyncio.wait_for(asks_until_told(7777), 30)  # the instances are back by themselves
        fake.dm(OWNER, "/pending", first_name="Owner")
        await fake.wait_for_sent(
            lambda m: m["chat_id"] == OWNER and "7777" in m["text"], timeout=10
        )  # the owner chat works again too
        for name in ("a", "b"):
            assert inst.procs[name].returncode is None, inst.log(name)[-2000:]
        await inst.running("a", "b")  # both beat again, on their own
        allowed_now = PairingService(inst.store, clock=SystemClock()).allowed("telegram")
        assert str(approved) in {e.id for e in allowed_now}
