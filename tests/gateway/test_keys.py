"""Device keys over real TLS on 127.0.0.1: a node connects by signing a fresh nonce, and a
replayed signature, a leaked token or a copied ``paired.json`` opens nothing (issue 15,
section 2)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bot.gateway.client import GatewayClient
from bot.services import keys
from tests.gateway.support import Gw, GwWith, Peer

pytestmark = pytest.mark.e2e


@pytest.fixture
async def tls_gw(gw_with: GwWith) -> AsyncIterator[Gw]:
    async with gw_with(gateway={"tls": "auto"}) as gw:
        yield gw


async def signed(
    peer: Peer, gw: Gw, purpose: str, node_id: str, key: Ed25519PrivateKey, **parts: str
) -> dict[str, str]:
    """What a node sends to prove ``key`` on ``peer``: a fresh nonce signed."""
    nonce = (await peer.ok("node.challenge"))["nonce"]
    fingerprint = parts.pop("fingerprint", gw.fingerprint)
    message = keys.signed_message(
        purpose, nonce=nonce, node_id=node_id, fingerprint=fingerprint, **parts
    )
    return {"signature": keys.sign(key, message), "certFingerprint": fingerprint}


async def pair_keyed(gw: Gw, node_id: str, key: Ed25519PrivateKey) -> str:
    """Pair ``node_id`` with ``key``; return the token it was given anyway."""
    node, ask = await gw.ask(node_id, publicKey=keys.public_key(key))
    await gw.approve(ask["requestId"], node_id)
    token: str = (await node.event("node.pair.resolved"))["payload"]["token"]
    return token


async def connect(gw: Gw, node_id: str, key: Ed25519PrivateKey) -> dict[str, Any]:
    peer = await gw.peer()
    params = {"nodeId": node_id, **await signed(peer, gw, keys.CONNECT, node_id, key)}
    return await peer.call("node.connect", params)


async def test_a_keyed_node_connects_by_signature_and_its_key_is_stored(tls_gw: Gw) -> None:
    key = Ed25519PrivateKey.generate()
    await pair_keyed(tls_gw, "pixel-9", key)
    paired = tls_gw.app.nodes.paired_node("pixel-9")
    assert paired is not None
    assert paired.extra["publicKey"] == keys.public_key(key)
    answer = await connect(tls_gw, "pixel-9", key)
    assert answer["ok"], answer
    assert answer["payload"]["nodeId"] == "pixel-9"


async def test_the_client_signs_with_the_certificate_it_sees(tls_gw: Gw) -> None:
    key = Ed25519PrivateKey.generate()
    await pair_keyed(tls_gw, "pixel-9", key)
    async with GatewayClient.open(tls_gw.url, pin=tls_gw.fingerprint) as client:
        proof = await client.signed(keys.CONNECT, "pixel-9", key)
        assert proof["certFingerprint"] == tls_gw.fingerprint
        hello = await client.call("node.connect", {"nodeId": "pixel-9", **proof})
    assert hello["nodeId"] == "pixel-9"


async def test_a_replayed_signature_gets_nothing(tls_gw: Gw) -> None:
    key = Ed25519PrivateKey.generate()
    await pair_keyed(tls_gw, "pixel-9", key)
    first = await tls_gw.peer()
    captured = {"nodeId": "pixel-9", **await signed(first, tls_gw, keys.CONNECT, "pixel-9", key)}
    assert (await first.call("node.connect", captured))["ok"]

    again = await first.fail("node.connect", captured)  # the nonce is spent
    assert again["code"] == "UNAUTHORIZED"
    other = await tls_gw.peer()
    assert (await other.fail("node.connect", captured))["code"] == "UNAUTHORIZED"  # no nonce
    await other.ok("node.challenge")  # a fresh nonce: the old signature is not over it
    assert (await other.fail("node.connect", captured))["code"] == "UNAUTHORIZED"


async def test_a_signature_bound_to_another_certificate_is_refused(tls_gw: Gw) -> None:
    """What a node talking to someone in between signs: the in-between's certificate."""
    key = Ed25519PrivateKey.generate()
    await pair_keyed(tls_gw, "pixel-9", key)
    peer = await tls_gw.peer()
    proof = await signed(
        peer, tls_gw, keys.CONNECT, "pixel-9", key, fingerprint="sha256:" + "0" * 64
    )
    assert (await peer.fail("node.connect", {"nodeId": "pixel-9", **proof}))[
        "code"
    ] == "UNAUTHORIZED"


async def test_a_keyed_nodes_token_and_a_copied_paired_json_open_nothing(
    tls_gw: Gw, state_dir: Path
) -> None:
    key = Ed25519PrivateKey.generate()
    token = await pair_keyed(tls_gw, "pixel-9", key)
    thief = await tls_gw.peer()
    assert (await thief.fail("node.connect", {"nodeId": "pixel-9", "token": token}))[
        "code"
    ] == "UNAUTHORIZED", "a keyed node proves itself by signature only"

    stolen = json.loads((state_dir / "nodes" / "paired.json").read_text())["nodes"][0]
    assert token not in json.dumps(stolen)
    assert (await thief.fail("node.connect", {"nodeId": "pixel-9", "token": stolen["tokenHash"]}))[
        "code"
    ] == "UNAUTHORIZED"
    forger = Ed25519PrivateKey.generate()  # the public key is no help in signing
    proof = await signed(thief, tls_gw, keys.CONNECT, "pixel-9", forger)
    assert (await thief.fail("node.connect", {"nodeId": "pixel-9", **proof}))[
        "code"
    ] == "UNAUTHORIZED"
    outcomes = [
        r["outcome"] for r in tls_gw.app.store.read_audit() if r["event"] == "node.connect"
    ]
    assert outcomes == ["wrong_token", "wrong_token", "bad_signature"]


async def test_a_new_key_for_a_paired_node_id_is_a_request_the_owner_is_warned_about(
    tls_gw: Gw,
) -> None:
    old_key, new_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    await pair_keyed(tls_gw, "pixel-9", old_key)
    node, ask = await tls_gw.ask("pixel-9", publicKey=keys.public_key(new_key))
    assert ask["status"] == "pending"
    notice = (
        await tls_gw.tg.wait_for_sent(lambda m: "different key" in m.get("text", ""), timeout=5)
    )[0]
    assert "already paired with another key" in notice["text"]
    assert (await connect(tls_gw, "pixel-9", old_key))["ok"], "the paired node still works"

    await tls_gw.approve(ask["requestId"], "pixel-9")
    await node.event("node.pair.resolved")
    assert not (await connect(tls_gw, "pixel-9", old_key))["ok"], "replaced: the old key is out"
    assert (await connect(tls_gw, "pixel-9", new_key))["ok"]


async def test_the_same_key_without_proof_is_already_paired_and_a_signed_re_pair_works(
    tls_gw: Gw,
) -> None:
    key = Ed25519PrivateKey.generate()
    await pair_keyed(tls_gw, "pixel-9", key)
    public = keys.public_key(key)
    peer = await tls_gw.peer()
    refused_error = await peer.fail(
        "node.pair.request", {"nodeId": "pixel-9", "publicKey": public}
    )
    assert refused_error["code"] == "ALREADY_PAIRED"

    proof = await signed(peer, tls_gw, keys.PAIR, "pixel-9", key, new_key=public)
    ask = await peer.ok("node.pair.request", {"nodeId": "pixel-9", "publicKey": public, **proof})
    assert ask["status"] == "pending"
    assert tls_gw.app.nodes.pending()[0].is_repair
    other = await tls_gw.peer()
    forged = await signed(other, tls_gw, keys.PAIR, "pixel-9", Ed25519PrivateKey.generate())
    wrong = await other.fail("node.pair.request", {"nodeId": "pixel-9", **forged})
    assert wrong["code"] == "UNAUTHORIZED"
