"""``pairbot nodes …``, the owner's side of node pairing, and ``pairbot node …``, a device's.

``nodes approve|reject|revoke`` act through the running bot when one listens on the state
dir's gateway socket, so that a node's token goes straight to the waiting node; with no bot
running they act on the store. On a state several instances share (PostgreSQL) they act on
the store and publish the decision through the cluster, where the instance holding the node's
connection hears it (:mod:`bot.gateway.relay`): no socket, no state dir needed.
``nodes invite`` makes a one-time invite and prints its setup code as text and as a QR
code; ``node pair --invite CODE`` joins with one at once (the code gives the gateway's URL
and the certificate to pin).

``node pair|connect`` play a device: ask a gateway to join, wait for the owner, keep the
token; connect with it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.text import Text

from bot.cli.context import EXIT_LOOKUP, EXIT_OK, Context, UsageError
from bot.cli.keyring import NodeKeyring
from bot.cli.output import print_json, print_listing
from bot.core.durations import invite_length, span
from bot.core.errors import ConfigError, LookupFailed
from bot.core.invites import GatewayAddress, Invitation, SetupCode
from bot.core.models import NodeDecision, NodeRequest, NodeVerdict, PairedNode
from bot.core.protocols import Cluster
from bot.core.text import ago, clean, clean_name
from bot.gateway.frames import ErrorCode

log = logging.getLogger("bot.cli.main")
"""One logger for the whole command: its lines read ``bot.cli.main``, as they always have."""


DEFAULT_GATEWAY = "ws://127.0.0.1:18789"


def _invite_code(args: argparse.Namespace) -> SetupCode | None:
    """The setup code ``--invite`` gives, its gateway and pin set as ``args.gateway`` and
    ``args.fingerprint`` (naming others as well is a usage error); None without one."""
    text = getattr(args, "invite", None)
    if not text:
        args.gateway = args.gateway or DEFAULT_GATEWAY
        return None
    try:
        code = SetupCode.parse(text)
    except ValueError as exc:
        raise UsageError(f"--invite: {exc}") from None
    address = code.address
    if args.gateway not in (None, address.url):
        raise UsageError(f"--invite is for {address.url}; leave --gateway out")
    if args.fingerprint and args.fingerprint != address.fingerprint:
        raise UsageError("--invite pins its own certificate; leave --fingerprint out")
    args.gateway, args.fingerprint = address.url, address.fingerprint or None
    return code


def _pin(args: argparse.Namespace, keyring: NodeKeyring) -> str | None:
    """The certificate fingerprint the gateway must show: ``--fingerprint``, else the one
    the keyring pinned for this gateway, else none (a certificate an authority vouches for)."""
    from bot.gateway.tls import parse_fingerprint

    args.gateway = args.gateway or DEFAULT_GATEWAY
    given = getattr(args, "fingerprint", None)
    if not given:
        return keyring.pin(args.gateway)
    if not str(args.gateway).startswith("wss://"):
        raise UsageError(f"--fingerprint pins a wss:// gateway, and {args.gateway} is not one")
    try:
        return parse_fingerprint(given)
    except ValueError as exc:
        raise UsageError(f"--fingerprint: {exc}") from None


def cmd_node_pair(args: argparse.Namespace) -> int:
    """``pairbot node pair``: ask to join, wait for the decision, save the token.

    The request's pickup secret is kept (0600) while it waits, so a ``node pair`` stopped and
    run again comes back for the same request instead of making a new one. With a saved
    token, ``--rotate`` asks the owner for a new token, proving the node holds the current one
    (its key's signature, or its token). The node's Ed25519 key (``node.key``, 0600) is made
    the first time and sent with the request, so the node connects by signature; ``--no-key``
    pairs with a token alone.

    With ``--invite CODE`` (a setup code from ``pairbot nodes invite`` or ``/nodes invite``)
    the node goes to the code's gateway, pins the code's certificate, and is paired at once:
    the owner's invite is the approval.
    """
    import asyncio

    from bot.cli.keyring import NodeCredentials
    from bot.gateway.client import GatewayCallError, GatewayClient
    from bot.services import keys

    keyring = NodeKeyring(Path(args.node_dir) if args.node_dir else None)
    invite = _invite_code(args)
    pin = _pin(args, keyring)
    node_id = args.node_id or keyring.node_id()
    saved = keyring.get(args.gateway)
    key = None if args.no_key else keyring.key(make=True)
    public = keys.public_key(key) if key is not None else ""
    out = Console(highlight=False, soft_wrap=True)
    if saved is not None and saved.node_id == node_id and not args.rotate and invite is None:
        out.print(
            Text(
                f"Node {node_id} is already paired with {args.gateway}; use `pairbot "
                "node connect` (or `pairbot node pair --rotate` for a new token)."
            )
        )
        return EXIT_OK

    async def ask(client: GatewayClient) -> dict[str, Any]:
        if invite is not None:
            params = {
                "nodeId": node_id,
                "displayName": args.name,
                "platform": args.platform,
                "version": args.node_version,
                "invite": invite.secret,
            }
            return await client.call(
                "node.pair.request", {**params, **({"publicKey": public} if public else {})}
            )
        pickup = keyring.pickup(args.gateway, node_id)
        if pickup is not None:
            try:
                return await client.call(
                    "node.pair.request", {"nodeId": node_id, "pickup": pickup}
                )
            except GatewayCallError as exc:
                if exc.code != ErrorCode.NOT_FOUND:
                    raise
                keyring.keep_pickup(args.gateway, node_id, None)
        params = {
            "nodeId": node_id,
            "displayName": args.name,
            "platform": args.platform,
            "version": args.node_version,
        }
        if public:
            params["publicKey"] = public
        if saved is not None and saved.node_id == node_id:
            if saved.public_key and key is not None:
                params |= await client.signed(keys.PAIR, node_id, key, new_key=public)
            else:
                params["token"] = saved.token
        answer = await client.call("node.pair.request", params)
        if answer.get("pickup"):
            keyring.keep_pickup(args.gateway, node_id, str(answer["pickup"]))
        return answer

    async def pair() -> int:
        async with GatewayClient.open(args.gateway, pin=pin) as client:
            if pin is not None:
                keyring.keep_pin(args.gateway, pin)
            answer = await ask(client)
            if answer.get("status") == "pending":
                out.print(
                    Text(
                        f"Asked {args.gateway} to pair node {node_id}. Request "
                        f"{answer.get('requestId')}: waiting for the owner (until "
                        f"{answer.get('expiresAt')})..."
                    )
                )
                decision = await client.next_event("node.pair.resolved", wait=args.wait)
            else:
                decision = {"decision": NodeVerdict.APPROVED, "token": answer.get("token")}
                if invite is not None:
                    out.print(
                        Text(
                            f"Paired node {node_id} with {args.gateway} by the owner's "
                            f"invite {answer.get('requestId')}."
                        )
                    )
        if decision.get("decision") != NodeVerdict.APPROVED or not decision.get("token"):
            keyring.keep_pickup(args.gateway, node_id, None)
            out.print(Text(f"Not paired: the request was {decision.get('decision')}."))
            return EXIT_LOOKUP
        token = str(decision["token"])
        keyring.save(
            NodeCredentials(
                gateway=args.gateway,
                node_id=node_id,
                token=token,
                display_name=args.name,
                public_key=public,
            )
        )
        out.print(Text(f"Approved. Token saved in {keyring.path}:"))
        sys.stdout.write(token + "\n")
        return EXIT_OK

    try:
        return asyncio.run(pair())
    except TimeoutError:
        sys.stderr.write(
            f"pairbot: error: no decision within {args.wait:g}s (run it again to "
            "keep waiting for the same request)\n"
        )
        return EXIT_LOOKUP
    except GatewayCallError as exc:
        if exc.code == ErrorCode.ALREADY_PAIRED:
            sys.stderr.write(
                f"pairbot: error: node {node_id} is already paired with "
                f"{args.gateway} and this node has no token for it; ask the "
                f"owner to revoke it (`pairbot nodes revoke {node_id}`), then pair "
                "again\n"
            )
            return EXIT_LOOKUP
        if exc.code == ErrorCode.UNAUTHORIZED and invite is not None:
            sys.stderr.write(
                "pairbot: error: the gateway refused this invite (already used, expired or "
                "never made); ask the owner for a new one\n"
            )
            return EXIT_LOOKUP
        raise


def cmd_node_connect(args: argparse.Namespace) -> int:
    """``pairbot node connect``: authenticate with the token saved by ``node pair``."""
    import asyncio

    from bot.gateway.client import GatewayCallError, GatewayClient

    keyring = NodeKeyring(Path(args.node_dir) if args.node_dir else None)
    pin = _pin(args, keyring)
    creds = keyring.get(args.gateway)
    if creds is None:
        raise UsageError(f"no token saved for {args.gateway}; run `pairbot node pair` first")

    key = keyring.key() if creds.public_key else None
    if creds.public_key and key is None:
        raise UsageError(f"{keyring.directory}: the node key this node paired with is gone")

    async def connect() -> dict[str, Any]:
        from bot.services import keys

        async with GatewayClient.open(args.gateway, pin=pin) as client:
            if pin is not None:
                keyring.keep_pin(args.gateway, pin)
            proof = (
                await client.signed(keys.CONNECT, creds.node_id, key)
                if key is not None
                else {"token": creds.token}
            )
            return await client.call("node.connect", {"nodeId": creds.node_id, **proof})

    try:
        answer = asyncio.run(connect())
    except GatewayCallError as exc:
        if exc.code == ErrorCode.UNAUTHORIZED:
            sys.stderr.write(
                "pairbot: error: the gateway refused this node's key or token (revoked?); "
                "pair again with `pairbot node pair`\n"
            )
            return EXIT_LOOKUP
        raise
    Console(highlight=False).print(
        Text(f"Connected to {args.gateway} as node {clean(str(answer.get('nodeId')))}.")
    )
    return EXIT_OK


_NODE_COLUMNS = ("Node id", "Name", "Platform", "Version")


def _node_cells(node: NodeRequest | PairedNode) -> tuple[str, ...]:
    """What a listing shows of the node itself (cleaned: the node chose these)."""
    return (
        clean(node.node_id),
        clean_name(node.display_name),
        clean(node.platform),
        clean(node.version),
    )


def cmd_nodes_pending(ctx: Context) -> int:
    """``pairbot nodes pending``."""
    print_listing(
        ctx,
        ctx.nodes.pending(),
        "Pending nodes ({})",
        ("Request", *_NODE_COLUMNS, "Requested"),
        lambda r, now: (r.request_id, *_node_cells(r), f"{ago(now - r.created_at)} ago"),
        empty="No pending node pairing requests.",
    )
    return EXIT_OK


def _via_gateway(ctx: Context, method: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """Run an operator method on the running bot's gateway, if one listens on the state dir.

    Returns None when no bot runs (the caller then acts on the store directly).
    """
    import asyncio

    from bot.gateway.client import GatewayCallError, GatewayClient, GatewayUnavailable
    from bot.gateway.server import SOCKET_NAME

    socket = ctx.state_dir / SOCKET_NAME
    if not socket.exists():
        return None

    async def call() -> dict[str, Any]:
        async with GatewayClient.open(unix_socket=socket, wait=5) as client:
            return await client.call(method, {**params, "actor": ctx.actor})

    try:
        return asyncio.run(call())
    except GatewayUnavailable:
        log.debug("gateway socket present but not answering; acting on the store")
        return None
    except GatewayCallError as exc:
        if exc.code in (ErrorCode.NOT_FOUND, ErrorCode.ALREADY_PAIRED):
            raise LookupFailed(str(exc).removeprefix("gateway: ")) from None
        raise


def _publish(cluster: Cluster, decisions: Sequence[NodeDecision], what: str) -> bool | None:
    """Publish ``decisions`` to the running instances (:func:`publish_decisions`); a cluster
    that cannot be reached is a warning (the decision is made: the store has it)."""
    from bot.gateway.relay import publish_decisions

    try:
        return publish_decisions(cluster, decisions)
    except Exception as exc:  # the decision stands; only the telling failed
        log.warning("the running instances could not be told of this %s (%s)", what, exc)
        return None


def _approved(ctx: Context, node_id: str, delivered: bool) -> int:
    if ctx.args.json:
        print_json(ctx, {"nodeId": node_id, "delivered": delivered})
        return EXIT_OK
    where = (
        "its token went to the waiting node over the gateway"
        if delivered
        else "the node is not connected; it receives its token if it asks again "
        "before its request would have expired"
    )
    ctx.out.print(Text(f"Approved node {clean(node_id)}: {where}."))
    return EXIT_OK


def cmd_nodes_approve(ctx: Context) -> int:
    """``pairbot nodes approve``: through the running bot if any, else the token is printed.

    With the bot running, the token goes to the waiting node over its connection; nobody
    else sees it. On a shared state it crosses to the instance holding that connection only
    sealed for the node's pickup secret. With no bot running (or, on a shared state, no
    instance holding the request), the token is printed here, once.
    """
    if ctx.shared_cluster is not None:
        with contextlib.closing(ctx.shared_cluster()) as cluster:
            approval = ctx.nodes.approve(ctx.args.request_id, actor=ctx.actor)
            decisions = approval.decisions()
            sendable = [d for d in decisions if d.verdict is not NodeVerdict.APPROVED]
            outcome = _publish(cluster, decisions if approval.sealed else sendable, "approval")
        if outcome is not None:
            return _approved(ctx, approval.node.node_id, outcome)
        if not ctx.args.json:
            ctx.out.print("No running instance holds this node's request.")
        return _print_token(ctx, approval.node, approval.token)
    answer = _via_gateway(ctx, "node.pair.approve", {"requestId": ctx.args.request_id})
    if answer is not None:
        return _approved(ctx, str(answer.get("nodeId")), bool(answer.get("delivered")))
    approval = ctx.nodes.approve(ctx.args.request_id, actor=ctx.actor)
    return _print_token(ctx, approval.node, approval.token)


def _print_token(ctx: Context, node: PairedNode, token: str) -> int:
    """Show a new token once (pairbot keeps only its hash)."""
    if ctx.args.json:
        print_json(ctx, {**node.as_json(), "token": token})
        return EXIT_OK
    name = clean_name(node.display_name)
    ctx.out.print(Text(f"Approved node {clean(node.node_id)}{f' ({name})' if name else ''}."))
    ctx.out.print("Its token, shown once (pairbot keeps only a hash):")
    sys.stdout.write(token + "\n")
    return EXIT_OK


def cmd_nodes_invite(ctx: Context) -> int:
    """``pairbot nodes invite``: a one-time invite, its setup code printed once, as text and
    as a QR code. The config says where nodes reach the gateway (``gateway.public_url``, or
    its host and port) and, with ``gateway.tls``, the certificate they pin; the invite goes
    to the store, where every running instance's gateway finds it."""
    from bot.cli.tls import gateway_tls
    from bot.runtime.remembered import remember_secret

    config = ctx.config
    if config is None:
        raise UsageError(
            "no config: an invite tells the node where the gateway is (pass --config PATH "
            "or set PAIRBOT_CONFIG)"
        )
    gateway = config.gateway
    if not gateway.enabled:
        raise ConfigError("is false: no gateway for an invite to reach", field="gateway.enabled")
    if gateway.port == 0 and not gateway.public_url:
        raise ConfigError(
            "is 0 (a free port, known only to the running bot): set a port, or gateway.public_url",
            field="gateway.port",
        )
    try:
        lasting = None if ctx.args.lasting is None else invite_length(ctx.args.lasting)
    except ValueError as exc:
        raise UsageError(f"--for: {exc}") from None
    tls = gateway_tls(config, ctx.state_dir)
    address = GatewayAddress(
        url=gateway.node_url(gateway.port), fingerprint=tls.fingerprint if tls else ""
    )
    made = ctx.nodes.invite(address, actor=ctx.actor, lasting=lasting, name=ctx.args.name)
    for secret in made.secrets:
        remember_secret(secret)
    if ctx.args.json:
        print_json(
            ctx,
            {**made.invite.as_json(), "code": made.code.text, **_address_json(address)},
        )
        return EXIT_OK
    show_invite(ctx.out, made, qr_out=sys.stdout)
    return EXIT_OK


def _address_json(address: GatewayAddress) -> dict[str, str]:
    return {"url": address.url, "fingerprint": address.fingerprint}


def show_invite(out: Console, made: Invitation, *, qr_out: TextIO) -> None:
    """Print an invite for its maker: what it is for and until when, its setup code as
    text, then as a QR code (``qr_out``: where the terminal is), then what the device runs."""
    import segno

    invite, code = made.invite, made.code
    name = clean_name(invite.name)
    lasts = span(invite.expires_at - invite.created_at)
    out.print(
        Text(
            f"Invite {invite.invite_id}{f' for {name}' if name else ''}: one device may join "
            f"with it, until {invite.expires_at:%Y-%m-%d %H:%M:%S} UTC ({lasts}), once."
        )
    )
    out.print(
        f"Gateway: {code.address.url}"
        + (f"  (certificate {code.address.fingerprint})" if code.address.fingerprint else "")
    )
    out.print("Setup code (shown once; pairbot keeps only a hash of its secret):")
    out.file.flush()
    qr_out.write(code.text + "\n\n")
    segno.make(code.text, error="m").terminal(out=qr_out, compact=True, border=2)
    qr_out.write("\n")
    qr_out.flush()
    out.print(Text(f"On the device: pairbot node pair --invite {code.text}"))


def cmd_nodes_reject(ctx: Context) -> int:
    """``pairbot nodes reject``."""
    if ctx.shared_cluster is not None:
        with contextlib.closing(ctx.shared_cluster()) as cluster:
            req = ctx.nodes.reject(ctx.args.request_id, actor=ctx.actor)
            _publish(cluster, [NodeDecision.on_request(req, NodeVerdict.REJECTED)], "rejection")
        ctx.out.print(
            Text(
                f"Rejected node {clean(req.node_id)} (request {req.request_id}); the "
                "instance holding it tells the node."
            )
        )
        return EXIT_OK
    answer = _via_gateway(ctx, "node.pair.reject", {"requestId": ctx.args.request_id})
    if answer is not None:
        ctx.out.print(
            Text(
                f"Rejected node {clean(str(answer.get('nodeId')))} (request "
                f"{answer.get('requestId')}); the node was told."
            )
        )
        return EXIT_OK
    req = ctx.nodes.reject(ctx.args.request_id, actor=ctx.actor)
    ctx.out.print(Text(f"Rejected node {clean(req.node_id)} (request {req.request_id})."))
    return EXIT_OK


def cmd_nodes_list(ctx: Context) -> int:
    """``pairbot nodes list``."""

    def row(n: PairedNode, now: datetime) -> tuple[str, ...]:
        connected = n.last_connected_at
        return (
            *_node_cells(n),
            f"{ago(now - n.approved_at)} ago",
            f"{ago(now - connected)} ago" if connected else "never",
        )

    print_listing(
        ctx,
        ctx.nodes.paired(),
        "Paired nodes ({})",
        (*_NODE_COLUMNS, "Approved", "Last connected"),
        row,
        empty="No paired nodes.",
    )
    return EXIT_OK


def cmd_nodes_revoke(ctx: Context) -> int:
    """``pairbot nodes revoke``."""
    if ctx.shared_cluster is not None:
        with contextlib.closing(ctx.shared_cluster()) as cluster:
            node_id = ctx.nodes.revoke(ctx.args.node_id, actor=ctx.actor).node_id
            _publish(cluster, [NodeDecision.revocation(node_id)], "revocation")
    else:
        answer = _via_gateway(ctx, "node.revoke", {"nodeId": ctx.args.node_id})
        node_id = (
            str(answer.get("nodeId"))
            if answer is not None
            else ctx.nodes.revoke(ctx.args.node_id, actor=ctx.actor).node_id
        )
    ctx.out.print(Text(f"Revoked node {clean(node_id)}; its token no longer works."))
    return EXIT_OK
