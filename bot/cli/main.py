"""The ``pairbot`` command: the owner's shell over the same services and store as the bot.

Exit status: 0 success; 1 the code, request, sender or node is unknown or expired; 2 a usage,
configuration or state-file error; 141 (128 + SIGPIPE, as ``yes | head`` gives) the reader of
the output went away before it ended. Errors are one line on stderr (``--debug`` adds the
traceback) and never contain a code or a token.

Listings stream: past :data:`TABLE_ROWS` rows they print plain aligned lines as they go instead
of a table, and ``--json`` writes its array element by element, so a listing of millions starts
at once and its memory does not grow with its length.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import select
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, islice, repeat
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bot import __version__
from bot.core.clock import Clock, SystemClock
from bot.core.config import Config
from bot.core.errors import (
    AllowedByConfigError,
    ConfigError,
    LookupFailed,
    NodeRefused,
    PairbotError,
)
from bot.core.platforms import KNOWN_PROVIDERS, platform
from bot.core.text import ago, clean, clean_name, remaining
from bot.runtime.config import NO_OWNERS, check_file_mode, find_config, load_config
from bot.runtime.logs import add_secrets, install_redaction
from bot.services.nodes import NodeService, NodeSettings
from bot.services.pairing import AllowGroup, PairingService, PairingSettings
from stores import STATE_DIR_ENV, JsonFileStore, open_store, resolve_state_dir

EXIT_OK, EXIT_LOOKUP, EXIT_USAGE, EXIT_PIPE = 0, 1, 2, 141

TABLE_ROWS = 200
"""Longer listings print plain aligned lines, one per row, as they go. Rich lays a table out
whole before its first line appears (over 20 s for 100,000 rows), and a table longer than a
few screens reads no better than lines, which ``grep`` and ``head`` handle too."""
_SLICE = 4096
"""Rows laid out per write in a long listing: few writes, and each of them small."""

log = logging.getLogger("bot.cli.main")


class UsageError(Exception):
    """A command line that cannot be run as written (exit 2)."""


@dataclass(slots=True)
class Context:
    """What every command gets: the services, the store, the clock and where to print."""

    args: argparse.Namespace
    config: Config | None
    store: JsonFileStore
    pairing: PairingService
    nodes: NodeService
    clock: Clock
    out: Console
    actor: str


# --- argument parsing --------------------------------------------------------------------------


def _provider(value: str) -> str:
    if value not in KNOWN_PROVIDERS:
        raise argparse.ArgumentTypeError(
            f"unknown provider {value!r} (choose from {', '.join(KNOWN_PROVIDERS)})"
        )
    return value


def _limit(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return number


def build_parser() -> argparse.ArgumentParser:
    """Build the whole ``pairbot`` argument parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state-dir",
        default=argparse.SUPPRESS,
        metavar="DIR",
        help=f"state dir (default: ${STATE_DIR_ENV}, else ~/.pairbot)",
    )
    common.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        metavar="PATH",
        help="config file (default: $PAIRBOT_CONFIG); for TTLs and allow_from",
    )
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks and debug logs",
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print a JSON array")
    provider_opt = argparse.ArgumentParser(add_help=False)
    provider_opt.add_argument(
        "--provider",
        "--channel",
        dest="provider_opt",
        type=_provider,
        metavar="P",
        help=f"one of: {', '.join(KNOWN_PROVIDERS)}",
    )

    parser = argparse.ArgumentParser(
        prog="pairbot",
        parents=[common],
        description="Owner approval in front of a chat assistant: DM pairing and node pairing.",
    )
    parser.add_argument("--version", action="version", version=f"pairbot {__version__}")
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)

    def leaf(
        sub: Any,
        name: str,
        func: Callable[[Context], int],
        help_text: str,
        parents: Sequence[argparse.ArgumentParser] = (),
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(
            name, help=help_text, description=help_text, parents=[common, *parents]
        )
        p.set_defaults(func=func)
        return p

    pairing = groups.add_parser("pairing", help="pending DM pairing requests")
    psub = pairing.add_subparsers(dest="command", metavar="ACTION", required=True)
    p = leaf(psub, "list", cmd_pairing_list, "list pending requests", [as_json, provider_opt])
    p.add_argument("provider_pos", nargs="?", type=_provider, metavar="PROVIDER")
    for name, func, verb in (
        ("approve", cmd_pairing_approve, "approve"),
        ("reject", cmd_pairing_reject, "reject"),
    ):
        p = leaf(psub, name, func, f"{verb} a request by its code", [provider_opt])
        p.add_argument("words", nargs="+", metavar="[PROVIDER] CODE")

    allow = groups.add_parser("allowlist", help="senders allowed to reach the assistant")
    asub = allow.add_subparsers(dest="command", metavar="ACTION", required=True)
    p = leaf(asub, "list", cmd_allow_list, "list allowed senders", [as_json, provider_opt])
    p.add_argument("provider_pos", nargs="?", type=_provider, metavar="PROVIDER")
    for name, func, verb in (
        ("add", cmd_allow_add, "allow a sender by immutable id"),
        ("remove", cmd_allow_remove, "revoke a sender"),
    ):
        p = leaf(asub, name, func, verb, [provider_opt])
        p.add_argument("words", nargs="+", metavar="[PROVIDER] ID")

    nodes = groups.add_parser("nodes", help="devices paired with the gateway")
    nsub = nodes.add_subparsers(dest="command", metavar="ACTION", required=True)
    leaf(nsub, "pending", cmd_nodes_pending, "list node pairing requests", [as_json])
    p = leaf(
        nsub, "approve", cmd_nodes_approve, "approve a node; prints its token once", [as_json]
    )
    p.add_argument("request_id", metavar="REQUEST_ID")
    p = leaf(nsub, "reject", cmd_nodes_reject, "reject a node pairing request")
    p.add_argument("request_id", metavar="REQUEST_ID")
    leaf(nsub, "list", cmd_nodes_list, "list paired nodes", [as_json])
    p = leaf(nsub, "revoke", cmd_nodes_revoke, "unpair a node; its token stops working")
    p.add_argument("node_id", metavar="NODE_ID")

    node = groups.add_parser("node", help="play a node: ask a gateway to join, connect")
    node_sub = node.add_subparsers(dest="command", metavar="ACTION", required=True)
    node_common = argparse.ArgumentParser(add_help=False)
    node_common.add_argument(
        "--gateway",
        default="ws://127.0.0.1:18789",
        metavar="URL",
        help="gateway WebSocket URL (default ws://127.0.0.1:18789)",
    )
    node_common.add_argument(
        "--node-dir",
        default=None,
        metavar="DIR",
        help="where the node keeps its id and tokens "
        "(default $PAIRBOT_NODE_DIR, else ~/.pairbot-node)",
    )
    p = node_sub.add_parser(
        "pair",
        parents=[common, node_common],
        help="ask to join; wait for the owner; print and save the token",
        description="Ask the gateway to pair this node and wait.",
    )
    p.add_argument("--name", default="", help="display name shown to the owner")
    p.add_argument("--platform", default="", help="e.g. android, ios, linux")
    p.add_argument("--version", dest="node_version", default="", help="app version")
    p.add_argument("--node-id", default=None, help="node id (default: a saved random id)")
    p.add_argument(
        "--wait",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="give up after this long (default 600)",
    )
    p.add_argument(
        "--rotate",
        action="store_true",
        help="already paired: ask the owner for a new token (proves the old one)",
    )
    p.set_defaults(plain=cmd_node_pair)
    p = node_sub.add_parser(
        "connect",
        parents=[common, node_common],
        help="connect with the saved token",
        description="Authenticate to the gateway with the saved token.",
    )
    p.set_defaults(plain=cmd_node_connect)

    p = leaf(groups, "audit", cmd_audit, "show the audit log", [as_json])
    p.add_argument(
        "--limit", type=_limit, default=50, metavar="N", help="last N entries (default 50)"
    )
    p = groups.add_parser(
        "doctor",
        help="check permissions, state files and config",
        parents=[common],
        description="Check permissions, state files and "
        "config; change nothing. Exit 1 if anything is wrong.",
    )
    p.set_defaults(plain=cmd_doctor)
    p = groups.add_parser(
        "run",
        help="run the bot (needs a config)",
        parents=[common],
        description="Run the bot until SIGINT/SIGTERM.",
    )
    p.set_defaults(plain=cmd_run)
    p = groups.add_parser(
        "demo",
        help="watch the whole flow on a loopback platform, no account",
        parents=[common],
        description="Play the pairing flow end to end.",
    )
    p.add_argument(
        "--provider",
        dest="demo_provider",
        default="telegram",
        choices=[*KNOWN_PROVIDERS, "all"],
        help="which platform to play (default telegram; all = each in turn)",
    )
    p.set_defaults(plain=cmd_demo)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    """``pairbot run``: serve until SIGINT or SIGTERM, then stop cleanly."""
    import asyncio
    import signal

    from bot.cli.compose import open_app
    from bot.runtime.logs import setup_logging

    config_path = find_config(getattr(args, "config", None))
    if config_path is None:
        raise UsageError(
            "no config: pass --config PATH or set PAIRBOT_CONFIG (see config.example.yaml)"
        )
    config = load_config(config_path)
    mode = check_file_mode(config_path)
    if mode.verdict == "refuse":
        raise ConfigError(mode.message, source=str(config_path))
    setup_logging(
        level=logging.DEBUG if getattr(args, "debug", False) else logging.INFO,
        secrets=config.secrets(),
    )
    if mode.verdict == "warn":
        log.warning("%s: %s", config_path, mode.message)
    if not config.owners:
        log.warning("%s", NO_OWNERS)
    state_dir = getattr(args, "state_dir", None)
    chosen = Path(state_dir).expanduser() if state_dir else None

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        app = open_app(config, state_dir=chosen)
        async with app:
            install_redaction()  # again: handlers (or a record factory) the SDKs set up
            await stop.wait()
            log.info("stopping")

    asyncio.run(serve())
    return EXIT_OK


def cmd_node_pair(args: argparse.Namespace) -> int:
    """``pairbot node pair``: ask to join, wait for the decision, save the token.

    The request's pickup secret is kept (0600) while it waits, so a ``node pair`` stopped and
    run again comes back for the same request instead of making a new one. With a saved
    token, ``--rotate`` asks the owner for a new token, proving the node holds the current one.
    """
    import asyncio

    from bot.cli.keyring import NodeCredentials, NodeKeyring
    from bot.gateway.client import GatewayCallError, GatewayClient

    keyring = NodeKeyring(Path(args.node_dir) if args.node_dir else None)
    node_id = args.node_id or keyring.node_id()
    saved = keyring.get(args.gateway)
    out = Console(highlight=False, soft_wrap=True)
    if saved is not None and saved.node_id == node_id and not args.rotate:
        out.print(
            Text(
                f"Node {node_id} is already paired with {args.gateway}; use `pairbot "
                "node connect` (or `pairbot node pair --rotate` for a new token)."
            )
        )
        return EXIT_OK

    async def ask(client: GatewayClient) -> dict[str, Any]:
        pickup = keyring.pickup(args.gateway, node_id)
        if pickup is not None:
            try:
                return await client.call(
                    "node.pair.request", {"nodeId": node_id, "pickup": pickup}
                )
            except GatewayCallError as exc:
                if exc.code != "NOT_FOUND":
                    raise
                keyring.keep_pickup(args.gateway, node_id, None)
        params = {
            "nodeId": node_id,
            "displayName": args.name,
            "platform": args.platform,
            "version": args.node_version,
        }
        if saved is not None and saved.node_id == node_id:
            params["token"] = saved.token
        answer = await client.call("node.pair.request", params)
        if answer.get("pickup"):
            keyring.keep_pickup(args.gateway, node_id, str(answer["pickup"]))
        return answer

    async def pair() -> int:
        async with GatewayClient.open(args.gateway) as client:
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
                decision = {"decision": "approved", "token": answer.get("token")}
        if decision.get("decision") != "approved" or not decision.get("token"):
            keyring.keep_pickup(args.gateway, node_id, None)
            out.print(Text(f"Not paired: the request was {decision.get('decision')}."))
            return EXIT_LOOKUP
        token = str(decision["token"])
        keyring.save(
            NodeCredentials(
                gateway=args.gateway, node_id=node_id, token=token, display_name=args.name
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
        if exc.code == "ALREADY_PAIRED":
            sys.stderr.write(
                f"pairbot: error: node {node_id} is already paired with "
                f"{args.gateway} and this node has no token for it; ask the "
                f"owner to revoke it (`pairbot nodes revoke {node_id}`), then pair "
                "again\n"
            )
            return EXIT_LOOKUP
        raise


def cmd_node_connect(args: argparse.Namespace) -> int:
    """``pairbot node connect``: authenticate with the token saved by ``node pair``."""
    import asyncio

    from bot.cli.keyring import NodeKeyring
    from bot.gateway.client import GatewayCallError, GatewayClient

    keyring = NodeKeyring(Path(args.node_dir) if args.node_dir else None)
    creds = keyring.get(args.gateway)
    if creds is None:
        raise UsageError(f"no token saved for {args.gateway}; run `pairbot node pair` first")

    async def connect() -> dict[str, Any]:
        async with GatewayClient.open(args.gateway) as client:
            return await client.call(
                "node.connect", {"nodeId": creds.node_id, "token": creds.token}
            )

    try:
        answer = asyncio.run(connect())
    except GatewayCallError as exc:
        if exc.code == "UNAUTHORIZED":
            sys.stderr.write(
                "pairbot: error: the gateway refused this node's token (revoked?); "
                "pair again with `pairbot node pair`\n"
            )
            return EXIT_LOOKUP
        raise
    Console(highlight=False).print(
        Text(f"Connected to {args.gateway} as node {clean(str(answer.get('nodeId')))}.")
    )
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """``pairbot demo``."""
    from bot.cli.demo import available_platforms
    from bot.cli.demo import main as demo_main

    provider = args.demo_provider
    if provider != "all" and provider not in available_platforms():
        raise UsageError(
            f"no demo for {provider} yet (available: {', '.join(available_platforms())})"
        )
    return demo_main(provider)


def _provider_and_value(args: argparse.Namespace, what: str) -> tuple[str, str]:
    """Accept ``--provider P VALUE`` and ``P VALUE``, refuse anything else."""
    words: list[str] = args.words
    if args.provider_opt:
        if len(words) != 1:
            raise UsageError(f"expected one {what} after --provider, got {len(words)} words")
        return args.provider_opt, words[0]
    if len(words) != 2:
        raise UsageError(f"expected PROVIDER {what} (or --provider PROVIDER {what})")
    try:
        return _provider(words[0]), words[1]
    except argparse.ArgumentTypeError as exc:
        raise UsageError(str(exc)) from None


def _list_provider(args: argparse.Namespace) -> str | None:
    if args.provider_opt and args.provider_pos and args.provider_opt != args.provider_pos:
        raise UsageError("two different providers given")
    return args.provider_opt or args.provider_pos  # type: ignore[no-any-return]


# --- commands ----------------------------------------------------------------------------------


def cmd_pairing_list(ctx: Context) -> int:
    """``pairbot pairing list``."""
    provider = _list_provider(ctx.args)
    requests = ctx.pairing.pending(provider)
    if ctx.args.json:
        _print_json_array(ctx, _json_elements(r.as_json() for r in requests))
        return EXIT_OK
    now = ctx.clock.now()
    ttl = ctx.pairing.settings.pending_ttl
    _print_rows(
        ctx,
        "Pairing requests ({})",
        ("Code", "Provider", "Sender id", "Name (as given)", "Requested", "Expires"),
        (
            (
                r.code,
                r.provider,
                r.id,
                clean_name(r.display_name()),
                f"{ago(now - r.created_at)} ago",
                f"in {remaining(r.expires_at(ttl) - now)}",
            )
            for r in requests
        ),
        empty=f"No pending {provider + ' ' if provider else ''}pairing requests.",
    )
    return EXIT_OK


def cmd_pairing_approve(ctx: Context) -> int:
    """``pairbot pairing approve``."""
    provider, code = _provider_and_value(ctx.args, "CODE")
    req = ctx.pairing.approve(code, provider=provider, actor=ctx.actor)
    name = clean_name(req.display_name())
    ctx.out.print(Text(f"Approved {req.provider} sender {req.id}{f' ({name})' if name else ''}."))
    return EXIT_OK


def cmd_pairing_reject(ctx: Context) -> int:
    """``pairbot pairing reject``."""
    provider, code = _provider_and_value(ctx.args, "CODE")
    req = ctx.pairing.reject(code, provider=provider, actor=ctx.actor)
    ctx.out.print(Text(f"Rejected {req.provider} sender {req.id}."))
    return EXIT_OK


def cmd_allow_list(ctx: Context) -> int:
    """``pairbot allowlist list``: millions of entries are laid out in slices by C loops."""
    groups = ctx.pairing.allowed_groups(_list_provider(ctx.args))
    if ctx.args.json:
        _print_json_array(ctx, _allow_json(groups))
        return EXIT_OK
    columns = ("Provider", "Sender id", "Source")
    count = sum(len(g.ids) for g in groups)
    if count <= TABLE_ROWS:
        _print_rows(
            ctx,
            "Allowed senders ({})",
            columns,
            ((e.provider, e.id, e.source.value) for g in groups for e in g.entries()),
            empty="The allowlist is empty.",
        )
        return EXIT_OK
    widths = [
        max(len(columns[0]), *(len(g.provider) for g in groups)),
        min(_ID_WIDTH, max(len(columns[1]), *(max(map(len, g.ids)) for g in groups))),
    ]
    _print_lines(ctx, columns, widths, _allow_lines(groups, widths))
    return EXIT_OK


def cmd_allow_add(ctx: Context) -> int:
    """``pairbot allowlist add``."""
    provider, sender = _provider_and_value(ctx.args, "ID")
    sender = _check_sender_id(provider, sender)
    if ctx.pairing.allow(provider, sender, actor=ctx.actor):
        ctx.out.print(Text(f"Added {provider} sender {sender}."))
    else:
        ctx.out.print(Text(f"{provider} sender {sender} was already allowed."))
    return EXIT_OK


def cmd_allow_remove(ctx: Context) -> int:
    """``pairbot allowlist remove``."""
    provider, sender = _provider_and_value(ctx.args, "ID")
    ctx.pairing.revoke(provider, sender.strip(), actor=ctx.actor)
    ctx.out.print(Text(f"Removed {provider} sender {sender.strip()}."))
    return EXIT_OK


def cmd_nodes_pending(ctx: Context) -> int:
    """``pairbot nodes pending``."""
    pending = ctx.nodes.pending()
    if ctx.args.json:
        _print_json_array(ctx, _json_elements(r.as_json() for r in pending))
        return EXIT_OK
    now = ctx.clock.now()
    _print_rows(
        ctx,
        "Pending nodes ({})",
        ("Request", "Node id", "Name", "Platform", "Version", "Requested"),
        (
            (
                r.request_id,
                clean(r.node_id),
                clean_name(r.display_name),
                clean(r.platform),
                clean(r.version),
                f"{ago(now - r.created_at)} ago",
            )
            for r in pending
        ),
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

    socket = ctx.store.state_dir / SOCKET_NAME
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
        if exc.code in ("NOT_FOUND", "ALREADY_PAIRED"):
            raise LookupFailed(str(exc).removeprefix("gateway: ")) from None
        raise


def cmd_nodes_approve(ctx: Context) -> int:
    """``pairbot nodes approve``: through the running bot if any, else the token is printed.

    With the bot running, the gateway mints the token and hands it to the waiting node over
    its connection; nobody else sees it. Without, the token is printed here, once.
    """
    answer = _via_gateway(ctx, "node.pair.approve", {"requestId": ctx.args.request_id})
    if answer is not None:
        if ctx.args.json:
            _print_json(
                ctx, {"nodeId": answer.get("nodeId"), "delivered": bool(answer.get("delivered"))}
            )
            return EXIT_OK
        where = (
            "its token went to the waiting node over the gateway"
            if answer.get("delivered")
            else "the node is not connected; it receives its token if it asks again "
            "before its request would have expired"
        )
        ctx.out.print(Text(f"Approved node {clean(str(answer.get('nodeId')))}: {where}."))
        return EXIT_OK
    approval = ctx.nodes.approve(ctx.args.request_id, actor=ctx.actor)
    node, token = approval.node, approval.token
    if ctx.args.json:
        _print_json(ctx, {**node.as_json(), "token": token})
        return EXIT_OK
    name = clean_name(node.display_name)
    ctx.out.print(Text(f"Approved node {clean(node.node_id)}{f' ({name})' if name else ''}."))
    ctx.out.print("Its token, shown once (pairbot keeps only a hash):")
    sys.stdout.write(token + "\n")
    return EXIT_OK


def cmd_nodes_reject(ctx: Context) -> int:
    """``pairbot nodes reject``."""
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
    paired = ctx.nodes.paired()
    if ctx.args.json:
        _print_json_array(ctx, _json_elements(n.as_json() for n in paired))
        return EXIT_OK
    now = ctx.clock.now()
    _print_rows(
        ctx,
        "Paired nodes ({})",
        ("Node id", "Name", "Platform", "Version", "Approved", "Last connected"),
        (
            (
                clean(n.node_id),
                clean_name(n.display_name),
                clean(n.platform),
                clean(n.version),
                f"{ago(now - n.approved_at)} ago",
                f"{ago(now - n.last_connected_at)} ago" if n.last_connected_at else "never",
            )
            for n in paired
        ),
        empty="No paired nodes.",
    )
    return EXIT_OK


def cmd_nodes_revoke(ctx: Context) -> int:
    """``pairbot nodes revoke``."""
    answer = _via_gateway(ctx, "node.revoke", {"nodeId": ctx.args.node_id})
    node_id = (
        str(answer.get("nodeId"))
        if answer is not None
        else ctx.nodes.revoke(ctx.args.node_id, actor=ctx.actor).node_id
    )
    ctx.out.print(Text(f"Revoked node {clean(node_id)}; its token no longer works."))
    return EXIT_OK


def cmd_audit(ctx: Context) -> int:
    """``pairbot audit``."""
    records = ctx.store.iter_audit(limit=ctx.args.limit)
    if ctx.args.json:
        _print_json_array(ctx, _json_elements(records))
        return EXIT_OK
    keys = ("event", "actor", "provider", "subject", "outcome")
    _print_rows(
        ctx,
        "Audit (last {})",
        ("Time", "Event", "Actor", "Provider", "Subject", "Outcome"),
        (
            (
                str(r.get("ts", "")).replace("T", " ")[:19],
                *(clean(str(r.get(k, "") or ""), limit=40) for k in keys),
            )
            for r in records
        ),
        empty="The audit log is empty.",
    )
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    """``pairbot doctor``: report what would stop pairbot or weaken it; exit 1 on problems.

    It never fails on what it inspects: a config that does not load and a state dir that
    cannot be opened are reported as FAIL lines like every other problem. It opens nothing
    for writing and takes no lock, so it also works while the bot runs.
    """
    out = Console(highlight=False, soft_wrap=True)
    problems = 0

    def report(ok: bool, message: str) -> None:
        nonlocal problems
        problems += 0 if ok else 1
        out.print(Text(f"{'ok  ' if ok else 'FAIL'} {message}"))

    config_path = find_config(getattr(args, "config", None))
    config = None
    if config_path is None:
        out.print("info no config file given (--config or $PAIRBOT_CONFIG)")
    else:
        try:
            config = load_config(config_path)
        except (PairbotError, ValueError, OSError) as exc:
            report(False, str(exc))
    for ok, message in JsonFileStore.inspect(_state_dir(args, config)):
        report(ok, message)
    if config_path is not None and config is not None:
        report(True, f"{config_path} is valid")
        mode = check_file_mode(config_path)
        report(mode.verdict == "ok", f"{config_path}: {mode.message}")
        if not config.owners:
            report(False, NO_OWNERS)
    out.print("No problems found." if not problems else f"{problems} problem(s) found.")
    return EXIT_OK if not problems else EXIT_LOOKUP


# --- helpers -----------------------------------------------------------------------------------


def _check_sender_id(provider: str, sender: str) -> str:
    sender = sender.strip()
    if not sender or sender.startswith("@"):
        raise UsageError(f"{provider} sender ids are immutable ids, not @usernames")
    if platform(provider).ids.numeric and not sender.lstrip("-").isdigit():
        raise UsageError(f"{provider} sender ids are numeric (usernames can change hands)")
    return sender


def _print_json(ctx: Context, value: Any) -> None:
    ctx.out.file.write(json.dumps(value, indent=2) + "\n")


def _print_json_array(ctx: Context, runs: Iterable[str]) -> None:
    """Print one JSON array, laid out as ``json.dumps(..., indent=2)`` would, as it comes.

    ``runs`` are elements already encoded and indented, one or more per run (joined by
    ``",\n  "``); the whole array is never held in memory.
    """
    out = ctx.out.file
    opening = "[\n  "
    for run in runs:
        out.write(opening + run)
        opening = ",\n  "
    out.write("[]\n" if opening == "[\n  " else "\n]\n")


def _json_elements(values: Iterable[Any]) -> Iterator[str]:
    """Encode values one by one as elements of an indented array (see _print_json_array)."""
    for value in values:
        yield json.dumps(value, indent=2).replace("\n", "\n  ")  # JSON strings hold no newline


def _allow_json(groups: Sequence[AllowGroup]) -> Iterator[str]:
    """Encode allowlist entries as array elements, a slice of ids per call of the C encoder.

    Every element of a group differs only by its id, so the text between two ids is fixed:
    it is the encoder's item separator, and a slice of ids encodes into a run of elements.
    """
    for group in groups:
        head = f'{{\n    "provider": {json.dumps(group.provider)},\n    "id": '
        tail = f',\n    "source": {json.dumps(group.source.value)}\n  }}'
        encoder = json.JSONEncoder(separators=(f"{tail},\n  {head}", ": "))
        for start in range(0, len(group.ids), _SLICE):
            yield head + encoder.encode(group.ids[start : start + _SLICE])[1:-1] + tail


def _print_rows(
    ctx: Context, title: str, columns: Sequence[str], rows: Iterable[Sequence[str]], *, empty: str
) -> None:
    """Print a listing: a table (``title`` gets the count) up to TABLE_ROWS rows, else plain
    aligned lines as the rows come.

    Only the first TABLE_ROWS + 1 rows are read before printing starts (to choose, and to
    size the columns), so memory does not grow with the listing.
    """
    rows = iter(rows)
    ahead = list(islice(rows, TABLE_ROWS + 1))
    if not ahead:
        ctx.out.print(Text(empty))
    elif len(ahead) <= TABLE_ROWS:
        table = Table(title=title.format(len(ahead)), title_justify="left")
        for column in columns:
            table.add_column(column)
        for row in ahead:
            table.add_row(*map(Text, row))
        ctx.out.print(table)
    else:
        shown = [[_shown(cell) for cell in row] for row in ahead]
        widths = [max(map(len, column)) for column in zip(columns, *shown, strict=False)]
        _print_lines(ctx, columns, widths, _aligned(chain(ahead, rows), widths))


def _print_lines(
    ctx: Context, columns: Sequence[str], widths: Sequence[int], blocks: Iterable[str]
) -> None:
    """Print a header line and then ``blocks``: lines joined by newlines, none at the end."""
    out = ctx.out.file
    out.write(_line(columns, widths) + "\n")
    for block in blocks:
        out.write(block + "\n")


def _aligned(rows: Iterable[Sequence[str]], widths: Sequence[int]) -> Iterator[str]:
    """Lay rows out as aligned lines, _SLICE rows per block."""
    rows = iter(rows)
    while block := list(islice(rows, _SLICE)):
        yield "\n".join(_line([_shown(cell) for cell in row], widths) for row in block)


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    """Pad every cell but the last to its column's width, two spaces apart."""
    return "  ".join([*map(str.ljust, cells[:-1], widths), cells[-1]])


_ID_WIDTH = 40
"""Sender ids are padded to the longest, up to this: one odd id does not widen every line."""


def _allow_lines(groups: Sequence[AllowGroup], widths: Sequence[int]) -> Iterator[str]:
    """Lay allowlist entries out as aligned lines, a slice of ids per block, in C loops."""
    for group in groups:
        prefix = group.provider.ljust(widths[0]) + "  "
        suffix = "  " + group.source.value
        glue = f"{suffix}\n{prefix}"
        for start in range(0, len(group.ids), _SLICE):
            ids = group.ids[start : start + _SLICE]
            if not "".join(ids).isprintable():
                ids = [_shown(i) for i in ids]
            yield prefix + glue.join(map(str.ljust, ids, repeat(widths[1]))) + suffix


def _shown(cell: str) -> str:
    """A cell as a plain line shows it: as is, or JSON-escaped if it holds anything that is
    not printable (a newline, an escape sequence, an invisible character)."""
    return cell if cell.isprintable() else json.dumps(cell)


def _stdout_closed() -> bool:
    """Whether nobody reads standard output any more (the far end of its pipe is closed)."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid{os.getuid()}"


def _state_dir(args: argparse.Namespace, config: Config | None) -> Path:
    explicit = getattr(args, "state_dir", None) or os.environ.get(STATE_DIR_ENV)
    return resolve_state_dir(explicit or (config.state_dir if config else None))


def make_context(args: argparse.Namespace, *, clock: Clock | None = None) -> Context:
    """Load the config (if any), open the store and build the services for a command."""
    config_path = find_config(getattr(args, "config", None))
    config = load_config(config_path) if config_path else None
    if config is not None:
        add_secrets(config.secrets())
    store = open_store(_state_dir(args, config))
    clock = clock or SystemClock()
    pairing_settings = PairingSettings()
    node_settings = NodeSettings()
    if config is not None:
        pairing_settings = PairingSettings(
            pending_ttl=config.pairing.pending_ttl,
            resend_after=config.pairing.resend_after,
            max_pending_per_provider=config.pairing.max_pending_per_provider,
        )
        node_settings = NodeSettings(**config.nodes.model_dump())
    return Context(
        args=args,
        config=config,
        store=store,
        clock=clock,
        pairing=PairingService(
            store,
            clock=clock,
            settings=pairing_settings,
            static_allow=config.static_allow() if config else None,
        ),
        nodes=NodeService(store, clock=clock, settings=node_settings),
        out=Console(highlight=False, soft_wrap=True),
        actor=_actor(),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pairbot``; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="pairbot: %(levelname)s: %(message)s",
    )
    install_redaction()  # the same masking as `pairbot run`, for every logger at every level
    try:
        plain = getattr(args, "plain", None)
        if plain is not None:
            return int(plain(args))
        ctx = make_context(args)
        try:
            return int(args.func(ctx))
        finally:
            ctx.store.close()
    except UsageError as exc:
        parser.exit(EXIT_USAGE, f"pairbot: error: {exc}\n")
    except (LookupFailed, NodeRefused, AllowedByConfigError) as exc:
        return _fail(exc, EXIT_LOOKUP, debug)
    except (PairbotError, ValueError) as exc:
        return _fail(exc, EXIT_USAGE, debug)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        if not _stdout_closed():
            raise
        # The reader went away (`pairbot allowlist list | head`): stop quietly, as `yes | head`
        # does. Standard output now leads nowhere, so the final flush at exit cannot fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_PIPE


def _fail(exc: Exception, status: int, debug: bool) -> int:
    if debug:
        log.exception("failed")
    sys.stderr.write(f"pairbot: error: {exc}\n")
    return status
