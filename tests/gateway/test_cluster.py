"""Node pairing across instances: two running apps on one state, each with its own gateway
(its own port) and its own sibling of one in-memory cluster (``LocalCluster.sibling``).

A node waits on instance A; the decision is made on instance B (its owner chat, its
operator, its prune), or by ``pairbot nodes …`` with only the cluster (no socket, no state
dir of A's). A third sibling listens to every message published, to show that no token and
no pickup secret ever crosses the cluster in the clear.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar, cast

import aiohttp
import pytest
from rich.console import Console

from bot.cli.compose import build_providers, configured_store
from bot.cli.context import Context
from bot.cli.nodes import cmd_nodes_approve, cmd_nodes_reject, cmd_nodes_revoke
from bot.core.clock import FakeClock
from bot.gateway import relay
from bot.runtime.app import App
from bot.services import seal
from bot.services.nodes import NodeService
from bot.services.pairing import PairingService
from providers.telegram.fake import FakeTelegramServer
from stores import open_store
from stores.cluster import LocalCluster
from tests.gateway.support import (
    OWNER,
    TTL,
    WAIT,
    Closed,
    Gw,
    Peer,
    connected_nodes,
    disconnect,
    make_config,
    resolved,
    within,
)

pytestmark = pytest.mark.e2e

T = TypeVar("T")


class Spy:
    """Every message published on the nodes topic, as a database administrator reads them."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.messages: list[dict[str, str]] = []
        cluster.subscribe(relay.TOPIC, lambda m: self.messages.append(dict(m)))

    def text(self) -> str:
        return json.dumps(self.messages)

    def of(self, kind: str) -> list[dict[str, str]]:
        return [m for m in self.messages if m.get("kind") == kind]


class Pair:
    """Instances A (a gateway, no chat) and B (a gateway and the owner's Telegram chat) on
    one SQLite state, with one cluster between them."""

    def __init__(
        self,
        tg: FakeTelegramServer,
        tmp_path: Path,
        clock: FakeClock,
        cluster: LocalCluster,
        *,
        clock_b: FakeClock | None = None,
    ) -> None:
        self.tg = tg
        self.tmp_path = tmp_path
        self.db = tmp_path / "shared" / "pairbot.db"
        self.clock = clock
        self.clock_b = clock_b or clock
        self.cluster = cluster
        self.spy = Spy(cluster.sibling("spy"))
        self.a: Gw
        self.b: Gw

    @contextlib.asynccontextmanager
    async def instance(
        self, name: str, clock: FakeClock, *, chat: bool, **sections: dict[str, object]
    ) -> AsyncIterator[Gw]:
        config = make_config(
            self.tg, store={"backend": "sqlite", "path": str(self.db)}, **sections
        )
        state_dir = self.tmp_path / name  # its own: the gateway's socket lives there
        providers = build_providers(config) if chat else {}
        member = self.cluster.sibling(name)
        app = App(
            config,
            store=lambda: configured_store(config, state_dir),
            providers=lambda: providers,
            cluster=lambda _store: member,
            state_dir=state_dir,
            clock=clock,
            watch_interval=0.1,
        )
        await app.start()
        gw = Gw(app=app, tg=self.tg, clock=clock, session=aiohttp.ClientSession())
        try:
            yield gw
        finally:
            await gw.aclose()
            await app.stop()

    def cli(self, capsys: pytest.CaptureFixture[str], **args: object) -> CliRun:
        """``pairbot nodes …`` on a machine with only the shared state and the cluster."""
        store = open_store(self.tmp_path / "cli", backend="sqlite", path=self.db)
        out = io.StringIO()
        member = self.cluster.sibling("cli")
        ctx = Context(
            args=argparse.Namespace(**{"json": False, **args}),
            config=None,
            store=store,
            state_dir=self.tmp_path / "cli",
            pairing=PairingService(store, clock=self.clock_b),
            nodes=NodeService(store, clock=self.clock_b),
            clock=self.clock_b,
            out=Console(file=out, highlight=False, soft_wrap=True),
            actor="cli:test",
            shared_cluster=lambda: member,
        )
        return CliRun(ctx, out, capsys)


class CliRun:
    def __init__(self, ctx: Context, out: io.StringIO, capsys: pytest.CaptureFixture[str]):
        self.ctx = ctx
        self._out = out
        self._capsys = capsys

    async def run(self, command: Callable[[Context], int]) -> str:
        """Run ``command`` off the event loop (it waits for the instances, which run on it);
        return all it printed."""
        try:
            assert await asyncio.to_thread(command, self.ctx) == 0
        finally:
            self.ctx.store.close()
        return self._out.getvalue() + self._capsys.readouterr().out


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer() as fake:
        fake.started_before(OWNER)
        yield fake


@pytest.fixture
async def pair(
    tg: FakeTelegramServer, tmp_path: Path, fake_clock: FakeClock
) -> AsyncIterator[Pair]:
    both = Pair(tg, tmp_path, fake_clock, LocalCluster("root"))
    async with (
        both.instance("a", fake_clock, chat=False) as a,
        both.instance("b", fake_clock, chat=True) as b,
    ):
        both.a, both.b = a, b
        yield both


def assert_no_secret_crossed(pair: Pair, *secrets: str) -> None:
    text = pair.spy.text()
    for secret in secrets:
        assert secret not in text


async def timed(seconds: float, waiting: Awaitable[T]) -> T:
    """Await ``waiting`` and check it took less than ``seconds``."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await waiting
    assert loop.time() - started < seconds
    return result


# --- approvals ---------------------------------------------------------------------------------


async def test_owner_chat_on_b_approves_a_node_waiting_on_a(pair: Pair) -> None:
    node, ask = await pair.a.ask("pixel-9", displayName="Pixel 9")
    rid = ask["requestId"]
    loop = asyncio.get_running_loop()
    started = loop.time()
    pair.tg.dm(OWNER, f"/nodes approve {rid}")
    event = await node.event("node.pair.resolved", wait=WAIT)
    assert loop.time() - started < 2.0
    token = event["payload"]["token"]
    assert event == resolved(rid, "pixel-9", "approved", token)
    await pair.tg.wait_for_sent(
        lambda m: (
            m["chat_id"] == OWNER
            and m["text"]
            == "Approved node pixel-9 (Pixel 9): its token was sent to the waiting node."
        ),
        timeout=WAIT,
    )
    for gw in (pair.a, pair.b):  # the token works on every instance
        checker = await gw.peer()
        assert (await checker.ok("node.connect", {"nodeId": "pixel-9", "token": token}))[
            "nodeId"
        ] == "pixel-9"

    await within(WAIT, lambda: bool(pair.spy.of("heard")))
    [approval] = [m for m in pair.spy.of("decision") if m["verdict"] == "approved"]
    assert approval["sealed"].startswith("v1.")
    assert_no_secret_crossed(pair, token, ask["pickup"])
    assert [m["kind"] for m in pair.spy.messages if m.get("requestId") == rid] == [
        "decision",
        "heard",
    ]
    [stored] = [n for n in pair.b.app.nodes.paired() if n.node_id == "pixel-9"]
    assert token not in json.dumps(stored.as_json())
    assert ask["pickup"] not in pair.db.read_bytes().decode("latin-1")


async def test_cli_with_only_the_cluster_approves_a_node_waiting_on_a(
    pair: Pair, capsys: pytest.CaptureFixture[str]
) -> None:
    node, ask = await pair.a.ask("pixel-9")
    waiting = asyncio.ensure_future(node.event("node.pair.resolved", wait=WAIT))
    printed = await timed(
        2.0, pair.cli(capsys, request_id=ask["requestId"]).run(cmd_nodes_approve)
    )
    event = await waiting
    token = event["payload"]["token"]
    assert event == resolved(ask["requestId"], "pixel-9", "approved", token)
    assert printed == (
        "Approved node pixel-9: its token went to the waiting node over the gateway.\n"
    )
    assert token not in printed
    assert_no_secret_crossed(pair, token, ask["pickup"])


async def test_cli_prints_the_token_when_no_instance_holds_the_request(
    pair: Pair, capsys: pytest.CaptureFixture[str]
) -> None:
    store = open_store(pair.tmp_path / "x", backend="sqlite", path=pair.db)
    try:  # asked of a pairbot that is gone: no instance has its asker
        orphan = NodeService(store, clock=pair.clock).request("tab-1")
    finally:
        store.close()
    printed = await pair.cli(capsys, request_id=orphan.request.request_id).run(cmd_nodes_approve)
    lines = printed.splitlines()
    assert lines[:3] == [
        "No running instance holds this node's request.",
        "Approved node tab-1.",
        "Its token, shown once (pairbot keeps only a hash):",
    ]
    assert pair.b.app.nodes.verify("tab-1", lines[3]) is not None
    assert lines[3] not in pair.spy.text()


async def test_reject_on_b_reaches_the_node_on_a(pair: Pair) -> None:
    node, ask = await pair.a.ask("tab-1")
    op = await pair.b.op()
    await timed(2.0, op.ok("node.pair.reject", {"requestId": ask["requestId"]}))
    assert await timed(2.0, node.event("node.pair.resolved")) == resolved(
        ask["requestId"], "tab-1", "rejected"
    )
    assert pair.a.app.nodes.paired() == []


async def test_cli_reject_reaches_the_node_on_a(
    pair: Pair, capsys: pytest.CaptureFixture[str]
) -> None:
    node, ask = await pair.a.ask("tab-1")
    await pair.cli(capsys, request_id=ask["requestId"]).run(cmd_nodes_reject)
    assert await timed(2.0, node.event("node.pair.resolved")) == resolved(
        ask["requestId"], "tab-1", "rejected"
    )


async def test_approving_on_b_tells_the_superseded_asker_on_a(pair: Pair) -> None:
    first, one = await pair.a.ask("pixel-9")
    second, two = await pair.b.ask("pixel-9")
    await pair.b.approve(two["requestId"], "pixel-9")
    assert await first.event("node.pair.resolved") == resolved(
        one["requestId"], "pixel-9", "rejected"
    )
    token = (await second.event("node.pair.resolved"))["payload"]["token"]
    assert isinstance(token, str)
    assert await first.quiet() == []


async def test_expiry_pruned_on_b_reaches_the_node_on_a(
    tg: FakeTelegramServer, tmp_path: Path, fake_clock: FakeClock
) -> None:
    """B's clock passes the request's expiry; A's has not (A's own sweep would not tell)."""
    clock_b = FakeClock(fake_clock.now())
    both = Pair(tg, tmp_path, fake_clock, LocalCluster("root"), clock_b=clock_b)
    async with (
        both.instance("a", fake_clock, chat=False, pairing={"prune_interval": "1h"}) as a,
        both.instance("b", clock_b, chat=True) as _b,
    ):
        node, ask = await a.ask("pixel-9")
        clock_b.advance(TTL + timedelta(seconds=1))
        assert await timed(2.0, node.event("node.pair.resolved")) == resolved(
            ask["requestId"], "pixel-9", "expired"
        )
        assert await node.quiet() == [], "told once"


# --- revocations -------------------------------------------------------------------------------


async def paired_on_a(pair: Pair, node_id: str) -> tuple[Peer, str]:
    node, token = await pair.a.pair(node_id)
    await node.ok("node.connect", {"nodeId": node_id, "token": token})
    return node, token


async def test_revoke_on_b_closes_the_nodes_connection_on_a(pair: Pair) -> None:
    node, _ = await paired_on_a(pair, "pixel-9")
    other, _ = await paired_on_a(pair, "tab-1")
    pair.tg.dm(OWNER, "/nodes revoke pixel-9")
    assert await timed(2.0, node.event("node.pair.resolved")) == resolved(
        None, "pixel-9", "revoked"
    )
    with pytest.raises(Closed):
        await node.answer()
    assert node.close_code == 4001
    await within(WAIT, lambda: "pixel-9" not in connected_nodes(pair.a))
    assert "tab-1" in connected_nodes(pair.a)
    assert await other.quiet() == []


async def test_cli_revoke_closes_the_nodes_connection_on_a(
    pair: Pair, capsys: pytest.CaptureFixture[str]
) -> None:
    node, token = await paired_on_a(pair, "pixel-9")
    printed = await pair.cli(capsys, node_id="pixel-9").run(cmd_nodes_revoke)
    assert printed == "Revoked node pixel-9; its token no longer works.\n"
    assert await timed(2.0, node.event("node.pair.resolved")) == resolved(
        None, "pixel-9", "revoked"
    )
    with pytest.raises(Closed):
        await node.answer()
    assert node.close_code == 4001
    checker = await pair.a.peer()
    assert (await checker.fail("node.connect", {"nodeId": "pixel-9", "token": token}))[
        "code"
    ] == "UNAUTHORIZED"


async def test_a_replayed_revocation_leaves_a_re_paired_node_connected(pair: Pair) -> None:
    await paired_on_a(pair, "pixel-9")
    op = await pair.b.op()
    await op.ok("node.revoke", {"nodeId": "pixel-9"})
    await within(WAIT, lambda: "pixel-9" not in connected_nodes(pair.a))
    await within(WAIT, lambda: any(m["verdict"] == "revoked" for m in pair.spy.of("decision")))
    [revocation] = [m for m in pair.spy.of("decision") if m["verdict"] == "revoked"]

    again, _ = await paired_on_a(pair, "pixel-9")  # the owner paired it anew
    pair.cluster.sibling("replayer").publish(relay.TOPIC, revocation)
    assert await again.quiet(0.5) == [], "the store says it is paired with this token"
    assert "pixel-9" in connected_nodes(pair.a)


# --- askers who went away ----------------------------------------------------------------------


async def test_a_node_away_at_decision_time_gets_its_token_from_b_with_its_pickup(
    pair: Pair, capsys: pytest.CaptureFixture[str]
) -> None:
    node, ask = await pair.a.ask("pixel-9")
    await disconnect(pair.a, node)
    printed = await pair.cli(capsys, request_id=ask["requestId"]).run(cmd_nodes_approve)
    assert printed.startswith("Approved node pixel-9: the node is not connected"), printed

    back, got = await pair.b.ask("pixel-9", pickup=ask["pickup"])
    token = got.pop("token")
    assert got == {"status": "paired", "requestId": ask["requestId"]}
    assert (await back.ok("node.connect", {"nodeId": "pixel-9", "token": token}))[
        "nodeId"
    ] == "pixel-9"
    assert token not in printed
    await within(WAIT, lambda: len(pair.spy.of("heard")) == 1)
    late = await pair.a.peer()  # single use, across the instances
    assert (await late.fail("node.pair.request", {"nodeId": "pixel-9", "pickup": ask["pickup"]}))[
        "code"
    ] == "NOT_FOUND"
    assert_no_secret_crossed(pair, token, ask["pickup"])


async def test_the_instance_holding_the_asker_dies_and_the_node_collects_from_b(
    tg: FakeTelegramServer,
    tmp_path: Path,
    fake_clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    both = Pair(tg, tmp_path, fake_clock, LocalCluster("root"))
    async with both.instance("b", fake_clock, chat=True) as b:
        async with both.instance("a", fake_clock, chat=False) as a:
            node, ask = await a.ask("pixel-9")
        # A is gone (its connections with it) before the decision
        with contextlib.suppress(Closed, AssertionError):
            await node.answer(0.2)
        cli = both.cli(capsys, request_id=ask["requestId"], json=True)
        printed = json.loads(await cli.run(cmd_nodes_approve))  # nobody answers for the asker
        assert set(printed) >= {"nodeId", "token"}, "printed, as with no bot running"
        _, got = await b.ask("pixel-9", pickup=ask["pickup"])
        assert got["status"] == "paired"
        assert got["token"] == printed["token"]
        assert b.app.nodes.verify("pixel-9", got["token"]) is not None


async def test_an_asker_back_on_b_while_pending_hears_its_approval_there(pair: Pair) -> None:
    node, ask = await pair.a.ask("pixel-9")
    await disconnect(pair.a, node)
    back, again = await pair.b.ask("pixel-9", pickup=ask["pickup"])
    assert again["status"] == "pending"
    await within(WAIT, lambda: bool(pair.spy.of("attached")))
    op = await pair.a.op()  # decided on A, where it was first asked
    assert (await op.ok("node.pair.approve", {"requestId": ask["requestId"]}))["delivered"]
    event = await back.event("node.pair.resolved")
    assert event["payload"]["decision"] == "approved"
    assert pair.b.app.nodes.verify("pixel-9", event["payload"]["token"]) is not None


async def test_a_replayed_approval_gives_nobody_a_token(pair: Pair) -> None:
    node, ask = await pair.a.ask("pixel-9")
    await disconnect(pair.a, node)
    await pair.b.approve(ask["requestId"], "pixel-9", delivered=False)
    await within(WAIT, lambda: bool(pair.spy.of("missed")))
    [approval] = [m for m in pair.spy.of("decision") if m["verdict"] == "approved"]
    op = await pair.b.op()
    await op.ok("node.revoke", {"nodeId": "pixel-9"})
    pair.cluster.sibling("replayer").publish(relay.TOPIC, approval)
    await within(WAIT, lambda: pair.spy.messages[-1] == approval)
    await asyncio.sleep(0.1)
    for gw in (pair.a, pair.b):
        late = await gw.peer()
        assert (
            await late.fail("node.pair.request", {"nodeId": "pixel-9", "pickup": ask["pickup"]})
        )["code"] == "NOT_FOUND"


# --- the seal ----------------------------------------------------------------------------------


def test_a_sealed_token_opens_only_with_its_pickup_for_its_request() -> None:
    pickup, other = "p" * 43, "q" * 43
    sealed = seal.seal("the-token", seal.public_key(pickup), node_id="n1", request_id="R1")
    assert "the-token" not in sealed
    assert seal.open_sealed(sealed, seal.opener(pickup), node_id="n1", request_id="R1") == (
        "the-token"
    )
    assert seal.open_sealed(sealed, seal.opener(other), node_id="n1", request_id="R1") is None
    assert seal.open_sealed(sealed, seal.opener(pickup), node_id="n1", request_id="R2") is None
    assert seal.open_sealed(sealed, seal.opener(pickup), node_id="n2", request_id="R1") is None
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    assert seal.open_sealed(flipped, seal.opener(pickup), node_id="n1", request_id="R1") is None
    assert seal.seal("the-token", seal.public_key(pickup), node_id="n1", request_id="R1") != (
        sealed
    ), "a fresh ephemeral key each time"
    with pytest.raises(ValueError, match="not a seal public key"):
        seal.seal("t", "not-a-key", node_id="n1", request_id="R1")


def test_a_request_stores_its_seal_public_key_never_its_pickup(nodes: NodeService) -> None:
    ask = nodes.request("pixel-9")
    assert ask.pickup is not None
    key = ask.request.extra[seal.SEAL_KEY]
    assert key == seal.public_key(ask.pickup)
    [stored] = nodes.pending()
    assert stored.extra == {seal.SEAL_KEY: key}, "every backend keeps it"
    assert ask.pickup not in key
    approval = nodes.approve(ask.request.request_id, actor="test")
    assert approval.token not in approval.sealed
    assert (
        seal.open_sealed(
            approval.sealed,
            seal.opener(ask.pickup),
            node_id="pixel-9",
            request_id=ask.request.request_id,
        )
        == approval.token
    )


def test_messages_never_carry_a_token() -> None:
    from bot.core.models import NodeDecision, NodeVerdict

    plain = NodeDecision(
        verdict=NodeVerdict.APPROVED, node_id="n", request_id="R", token="secret-token"
    )
    with pytest.raises(ValueError, match="sealed"):
        relay.decision_message(plain, sender="me")
    sealed = NodeDecision(
        verdict=NodeVerdict.APPROVED,
        node_id="n",
        request_id="R",
        token="secret-token",
        sealed="v1.xyz",
    )
    message = relay.decision_message(sealed, sender="me")
    assert "secret-token" not in json.dumps(message)
    assert message == {
        "kind": "decision",
        "verdict": "approved",
        "nodeId": "n",
        "requestId": "R",
        "sealed": "v1.xyz",
        "from": "me",
    }


def test_only_a_postgresql_config_makes_the_cli_publish_through_the_cluster(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bot.cli import compose
    from bot.core.config import Config

    opened: list[object] = []

    def configured(store: object) -> object:
        opened.append(store)
        return store  # stands for the cluster the composition root makes of it

    monkeypatch.setattr(compose, "configured_cluster", configured)

    def config(store: dict[str, str]) -> Config:
        return Config.model_validate(
            {"owners": [{"provider": "telegram", "user_id": "1"}], "store": store}
        )

    store = open_store(tmp_path, backend="sqlite", path=tmp_path / "x.db")
    try:
        assert compose.shared_cluster(None, store) is None
        assert compose.shared_cluster(config({"backend": "json"}), store) is None
        assert compose.shared_cluster(config({"backend": "sqlite"}), store) is None
        pg = config({"backend": "postgres", "dsn": "postgresql://u@127.0.0.1:1/x"})
        shared = compose.shared_cluster(pg, store)
        assert shared is not None
        assert opened == [], "opened only when a command needs it"
        assert shared() is cast("object", store)
        assert opened == [store], "the composition root's cluster of the store"
    finally:
        store.close()
