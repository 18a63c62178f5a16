"""``pairbot node pair|connect`` and ``pairbot nodes approve`` against a running bot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.cli.compose import open_app
from bot.core.config import Config
from bot.gateway.client import GatewayClient
from bot.runtime.app import App
from providers.telegram.fake import FakeTelegramServer
from tests.process import node_pair_pixel_9, pairbot_exits, pairbot_running

pytestmark = pytest.mark.e2e

OWNER = 111


@pytest.fixture
async def running(state_dir: Path) -> AsyncIterator[tuple[App, FakeTelegramServer]]:
    async with FakeTelegramServer() as tg:
        tg.started_before(OWNER)
        config = Config.model_validate(
            {
                "owners": [{"provider": "telegram", "user_id": str(OWNER)}],
                "gateway": {"port": 0},
                "providers": {"telegram": {"token": tg.token, "api_base_url": tg.base_url}},
            }
        )
        app = open_app(config, state_dir=state_dir)
        await app.start()
        try:
            yield app, tg
        finally:
            await app.stop()


async def test_node_pair_waits_gets_the_token_from_the_owner_chat_and_connects(running, tmp_path):
    app, tg = running
    assert app.gateway is not None
    url = f"ws://127.0.0.1:{app.gateway.port}"
    node_dir = tmp_path / "node"
    async with pairbot_running(*node_pair_pixel_9(url, node_dir)) as proc:
        notice = (await tg.wait_for_sent(lambda m: m["chat_id"] == OWNER, timeout=20))[0]
        assert "New node pairing request" in notice["text"]
        assert "Pixel 9" in notice["text"]
        request_id = app.nodes.pending()[0].request_id
        tg.dm(OWNER, f"/nodes approve {request_id}")
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=20)
    assert proc.returncode == 0, stderr.decode()
    token = stdout.decode().strip().splitlines()[-1]
    paired = app.nodes.paired()[0]
    assert app.nodes.holds_token(paired.node_id, token) is not None
    assert app.nodes.verify(paired.node_id, token) is None, "a keyed node's token opens nothing"
    assert paired.extra["publicKey"], "node pair made a key and sent its public half"
    assert (node_dir / "node.json").stat().st_mode & 0o777 == 0o600
    assert (node_dir / "node.key").stat().st_mode & 0o777 == 0o600
    owner_texts = tg.messages_to(OWNER)
    assert any("its token was sent to the waiting node" in t for t in owner_texts)
    assert not any(token in t for t in owner_texts)

    connected = await pairbot_exits(
        "node", "connect", "--gateway", url, "--node-dir", str(node_dir)
    )
    assert connected.returncode == 0, connected.stderr
    assert "Connected to" in connected.stdout

    node_id = app.nodes.paired()[0].node_id
    tg.dm(OWNER, f"/nodes revoke {node_id}")
    await tg.wait_for_sent(lambda m: m["chat_id"] == OWNER and m["text"].startswith("Revoked"))
    refused = await pairbot_exits("node", "connect", "--gateway", url, "--node-dir", str(node_dir))
    assert refused.returncode == 1
    assert "refused this node" in refused.stderr


async def test_cli_approval_while_the_bot_runs_reaches_the_waiting_node(running, state_dir):
    app, _ = running
    assert app.gateway is not None
    async with GatewayClient.open(f"ws://127.0.0.1:{app.gateway.port}") as node:
        ask = await node.call("node.pair.request", {"nodeId": "esp32", "displayName": "Kitchen"})
        result = await pairbot_exits(
            "--state-dir", str(state_dir), "nodes", "approve", ask["requestId"].lower()
        )
        started = asyncio.get_running_loop().time()
        resolved = await node.next_event("node.pair.resolved", wait=2)
        assert asyncio.get_running_loop().time() - started < 2
    assert result.returncode == 0, result.stderr
    assert "its token went to the waiting node over the gateway" in result.stdout
    assert resolved["decision"] == "approved"
    assert resolved["token"] not in result.stdout
    assert app.nodes.verify("esp32", resolved["token"]) is not None


async def test_cli_reject_and_revoke_while_the_bot_runs(running, state_dir):
    app, _ = running
    assert app.gateway is not None
    url = f"ws://127.0.0.1:{app.gateway.port}"
    async with GatewayClient.open(url) as node:
        ask = await node.call("node.pair.request", {"nodeId": "watch"})
        result = await pairbot_exits(
            "--state-dir", str(state_dir), "nodes", "reject", ask["requestId"]
        )
        assert result.returncode == 0, result.stderr
        assert (await node.next_event("node.pair.resolved", wait=2))["decision"] == "rejected"
    unknown = await pairbot_exits("--state-dir", str(state_dir), "nodes", "approve", "NOPE2345AB")
    assert unknown.returncode == 1
    assert "no pending node request" in unknown.stderr
    async with GatewayClient.open(url) as node:
        ask = await node.call("node.pair.request", {"nodeId": "watch"})
        await pairbot_exits("--state-dir", str(state_dir), "nodes", "approve", ask["requestId"])
        token = (await node.next_event("node.pair.resolved", wait=2))["token"]
        await node.call("node.connect", {"nodeId": "watch", "token": token})
        revoked = await pairbot_exits("--state-dir", str(state_dir), "nodes", "revoke", "watch")
        assert revoked.returncode == 0, revoked.stderr
        assert (await node.next_event("node.pair.resolved", wait=2))["decision"] == "revoked"
    assert app.nodes.verify("watch", token) is None


async def test_node_pair_reports_a_rejection(running, tmp_path):
    app, tg = running
    assert app.gateway is not None
    gateway = f"ws://127.0.0.1:{app.gateway.port}"
    async with pairbot_running(
        "node", "pair", "--gateway", gateway, "--node-dir", str(tmp_path / "n")
    ) as proc:
        await tg.wait_for_sent(lambda m: m["chat_id"] == OWNER, timeout=20)
        tg.dm(OWNER, f"/nodes reject {app.nodes.pending()[0].request_id}")
        stdout, _ = await asyncio.wait_for(proc.communicate(), timeout=20)
    assert proc.returncode == 1
    assert "the request was rejected" in stdout.decode()
    assert not (tmp_path / "n" / "node.json").read_text().count("token")


async def test_node_pair_without_a_gateway_is_a_clear_error(tmp_path):
    result = await pairbot_exits(
        "node", "pair", "--gateway", "ws://127.0.0.1:9", "--node-dir", str(tmp_path / "n")
    )
    assert result.returncode == 2
    assert "cannot reach the gateway at ws://127.0.0.1:9" in result.stderr
