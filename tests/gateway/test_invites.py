"""One-time invites over real TLS on 127.0.0.1 (issue 15, section 3): an invite pairs exactly
one of two nodes racing for it, a used or expired one pairs none, a wrong one spends the
address's budget, and its secret is never in a log line, an audit line or an error."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import segno
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bot.cli.keyring import NodeKeyring
from bot.core import codes
from bot.core.invites import Invitation, SetupCode
from bot.gateway.client import GatewayClient
from bot.runtime.logs import install_redaction
from bot.services import keys
from tests.gateway.support import OWNER, WAIT, Gw, GwWith, Peer
from tests.process import pairbot_exits, write_config

pytestmark = pytest.mark.e2e


@pytest.fixture
async def tls_gw(gw_with: GwWith) -> AsyncIterator[Gw]:
    async with gw_with(gateway={"tls": "auto"}) as gw:
        yield gw


def make_invite(gw: Gw, **options: Any) -> Invitation:
    return gw.app.nodes.invite(gw.app.invite_address(), actor="owner:test", **options)


async def join(gw: Gw, node_id: str, secret: str, peer: Peer | None = None) -> dict[str, Any]:
    """A node showing an invite's secret: the whole answer frame."""
    node = peer or await gw.peer()
    return await node.call("node.pair.request", {"nodeId": node_id, "invite": secret})


def refused(frame: dict[str, Any]) -> bool:
    return frame["ok"] is False and frame["error"]["code"] == "UNAUTHORIZED"


def invite_outcomes(gw: Gw) -> list[tuple[object, ...]]:
    return [
        (r["outcome"], r["subject"], r.get("reason"))
        for r in gw.app.store.read_audit()
        if r["event"] == "node.invite"
    ]


async def test_the_address_an_invite_gives_is_the_pinned_wss_gateway(tls_gw: Gw) -> None:
    made = make_invite(tls_gw)
    assert made.code.address.url == f"wss://127.0.0.1:{tls_gw.port}"
    assert made.code.address.fingerprint == tls_gw.fingerprint
    code = SetupCode.parse(made.code.text)
    async with GatewayClient.open(code.address.url, pin=code.address.fingerprint) as client:
        answer = await client.call(
            "node.pair.request", {"nodeId": "pixel-9", "invite": code.secret}
        )
    assert answer["status"] == "paired"
    assert answer["nodeId"] == "pixel-9"
    assert answer["requestId"] == made.invite.invite_id
    node = tls_gw.app.nodes.paired_node("pixel-9")
    assert node is not None
    assert codes.token_matches(answer["token"], node.token_hash)


async def test_an_invite_pairs_exactly_one_of_two_racing_nodes(tls_gw: Gw) -> None:
    for round_ in range(5):
        secret = make_invite(tls_gw).code.secret
        first, second = await tls_gw.peer(), await tls_gw.peer()
        answers = await asyncio.gather(
            join(tls_gw, f"a-{round_}", secret, first), join(tls_gw, f"b-{round_}", secret, second)
        )
        won = [a for a in answers if a["ok"]]
        assert len(won) == 1, answers
        assert [refused(a) for a in answers].count(True) == 1, answers
        winner = won[0]["payload"]["nodeId"]
        paired = [n.node_id for n in tls_gw.app.nodes.paired() if n.node_id.endswith(f"-{round_}")]
        assert paired == [winner]
    assert [o[0] for o in invite_outcomes(tls_gw)].count("used") == 5
    assert [o[2] for o in invite_outcomes(tls_gw) if o[0] == "refused"] == ["used"] * 5


async def test_a_used_invite_pairs_no_one_else_and_the_paired_node_connects(tls_gw: Gw) -> None:
    key = Ed25519PrivateKey.generate()
    secret = make_invite(tls_gw, name="Pixel 9").code.secret
    first = await tls_gw.peer()
    answer = await first.ok(
        "node.pair.request",
        {"nodeId": "pixel-9", "invite": secret, "publicKey": keys.public_key(key)},
    )
    assert answer["status"] == "paired"
    assert refused(await join(tls_gw, "tablet", secret))
    assert refused(await join(tls_gw, "pixel-9", secret))
    assert [n.node_id for n in tls_gw.app.nodes.paired()] == ["pixel-9"]
    async with GatewayClient.open(tls_gw.url, pin=tls_gw.fingerprint) as client:
        proof = await client.signed(keys.CONNECT, "pixel-9", key)
        hello = await client.call("node.connect", {"nodeId": "pixel-9", **proof})
    assert hello == {"nodeId": "pixel-9", "displayName": "Pixel 9"}


async def test_an_expired_invite_pairs_none(tls_gw: Gw) -> None:
    secret = make_invite(tls_gw, lasting=timedelta(minutes=2)).code.secret
    tls_gw.clock.advance(timedelta(minutes=2))
    assert refused(await join(tls_gw, "pixel-9", secret))
    assert tls_gw.app.nodes.paired() == []
    assert invite_outcomes(tls_gw)[-2:] == [
        ("expired", "-", None),
        ("refused", "pixel-9", "expired"),
    ]


async def test_wrong_invites_spend_the_addresss_failure_budget(tls_gw: Gw) -> None:
    good = make_invite(tls_gw).code.secret
    peer = await tls_gw.peer()
    for n in range(5):  # gateway.failures_per_minute
        assert refused(await join(tls_gw, f"guess-{n}", codes.new_token(), peer))
    locked = await join(tls_gw, "pixel-9", good, peer)
    assert locked["error"]["code"] == "RATE_LIMITED", locked
    assert tls_gw.app.nodes.paired() == []
    assert len(tls_gw.app.nodes.invites()) == 1, "the good invite is still unspent"
    audit = tls_gw.app.store.read_audit()
    assert [r["outcome"] for r in audit if r["event"] == "node.request"] == ["locked_out"]
    assert [o[2] for o in invite_outcomes(tls_gw) if o[0] == "refused"] == ["unknown"] * 5
    tls_gw.clock.advance(timedelta(minutes=1))
    assert (await join(tls_gw, "pixel-9", good, peer))["ok"]


async def test_an_invite_comes_alone(tls_gw: Gw) -> None:
    secret = make_invite(tls_gw).code.secret
    node = await tls_gw.peer()
    error = await node.fail(
        "node.pair.request", {"nodeId": "pixel-9", "invite": secret, "pickup": "x" * 43}
    )
    assert error["code"] == "INVALID_REQUEST"
    assert len(tls_gw.app.nodes.invites()) == 1


async def test_joining_supersedes_an_asker_for_the_same_node_id(tls_gw: Gw) -> None:
    asker, ask = await tls_gw.ask("pixel-9")
    assert (await join(tls_gw, "pixel-9", make_invite(tls_gw).code.secret))["ok"]
    resolved = await asker.event("node.pair.resolved")
    assert resolved["payload"] == {
        "requestId": ask["requestId"],
        "nodeId": "pixel-9",
        "decision": "rejected",
    }


async def test_the_owner_invites_in_chat_and_hears_who_joined(tls_gw: Gw) -> None:
    tls_gw.tg.dm(OWNER, "/nodes invite 30m Pixel 9")
    [reply] = await tls_gw.tg.wait_for_sent(
        lambda m: m["chat_id"] == OWNER and m["text"].startswith("Invite "), timeout=WAIT
    )
    text = reply["text"]
    assert "within 30m" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("pairbot-invite:"))
    code = SetupCode.parse(line)
    assert code.address.fingerprint == tls_gw.fingerprint
    async with GatewayClient.open(code.address.url, pin=code.address.fingerprint) as client:
        await client.call("node.pair.request", {"nodeId": "pixel-9", "invite": code.secret})
    [notice] = await tls_gw.tg.wait_for_sent(
        lambda m: m["chat_id"] == OWNER and "joined with your invite" in m["text"], timeout=WAIT
    )
    assert notice["text"].startswith("Node pixel-9 (Pixel 9) joined with your invite ")
    assert "/nodes revoke pixel-9" in notice["text"]


async def test_the_secret_is_in_no_log_line_audit_line_or_error(
    tls_gw: Gw, caplog: pytest.LogCaptureFixture
) -> None:
    install_redaction()  # as `pairbot run` does: the SDKs log whole payloads at DEBUG
    with caplog.at_level(logging.DEBUG):
        tls_gw.tg.dm(OWNER, "/nodes invite Tablet")
        [reply] = await tls_gw.tg.wait_for_sent(
            lambda m: m["chat_id"] == OWNER and m["text"].startswith("Invite "), timeout=WAIT
        )
        line = next(ln for ln in reply["text"].splitlines() if ln.startswith("pairbot-invite:"))
        code = SetupCode.parse(line)
        ok = await join(tls_gw, "tablet", code.secret)
        again = await join(tls_gw, "intruder", code.secret)
        tls_gw.clock.advance(timedelta(hours=1))
        await tls_gw.app.prune()
    assert ok["ok"]
    assert refused(again)
    shown = [json.dumps(again), caplog.text, json.dumps(tls_gw.app.store.read_audit())]
    for secret in code.secrets:
        for where in shown:
            assert secret not in where
    assert not await asyncio.to_thread(files_holding, tls_gw.app.state_dir, code.secret)


async def test_cli_invite_prints_a_qr_code_and_node_pair_joins_with_it(
    tls_gw: Gw, state_dir: Path, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "pairbot.yaml",
        {"state_dir": str(state_dir), "gateway": {"tls": "auto", "port": tls_gw.port}},
    )
    made = await pairbot_exits(
        "nodes", "invite", "--for", "15m", "--name", "Pixel 9", "--config", str(config)
    )
    assert made.returncode == 0, made.stderr
    lines = made.stdout.splitlines()
    text = next(ln for ln in lines if ln.startswith("pairbot-invite:"))
    code = SetupCode.parse(text)
    assert code.address.url == f"wss://127.0.0.1:{tls_gw.port}"
    assert code.address.fingerprint == tls_gw.fingerprint
    qr = segno.make(text, error="m")
    drawn = _terminal(qr)
    assert drawn in made.stdout, "the QR code of the very setup code"
    assert f"pairbot node pair --invite {text}" in made.stdout
    assert "(15m)" in made.stdout

    node_dir = tmp_path / "node"
    joined = await pairbot_exits(
        "node", "pair", "--invite", text, "--node-id", "pixel-9", "--node-dir", str(node_dir)
    )
    assert joined.returncode == 0, joined.stderr
    assert "by the owner's invite" in joined.stdout
    paired = tls_gw.app.nodes.paired_node("pixel-9")
    assert paired is not None
    assert paired.display_name == "Pixel 9"
    keyring = NodeKeyring(node_dir)
    assert keyring.pin(code.address.url) == tls_gw.fingerprint
    key = keyring.key()
    assert key is not None
    assert keys.key_of(paired.extra) == keys.public_key(key)
    assert (node_dir / "node.key").stat().st_mode & 0o777 == 0o600
    connected = await pairbot_exits(
        "node", "connect", "--gateway", code.address.url, "--node-dir", str(node_dir)
    )
    assert connected.returncode == 0, connected.stderr

    again = await pairbot_exits(
        "node", "pair", "--invite", text, "--node-id", "tablet", "--node-dir", str(tmp_path / "t")
    )
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1
    assert "refused this invite" in again.stderr
    assert code.secret not in again.stderr + again.stdout
    assert tls_gw.app.nodes.paired_node("tablet") is None


def files_holding(directory: Path, secret: str) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def _terminal(qr: segno.QRCode) -> str:
    import io

    out = io.StringIO()
    qr.terminal(out=out, compact=True, border=2)
    return out.getvalue()
