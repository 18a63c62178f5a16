"""The ``pairbot`` command: the owner's shell over the same services and store as the bot.

Exit status: 0 success; 1 the code, request, sender or node is unknown or expired (for
``status``: no instance is running); 2 a usage, configuration or state-file error; 141 (128 +
SIGPIPE, as ``yes | head`` gives) the reader of the output went away before it ended. Errors
are one line on stderr (``--debug`` adds the traceback) and never contain a code or a token.

This module builds the parser and runs a command; the commands live by group:
:mod:`bot.cli.pairing` (pairing, allowlist), :mod:`bot.cli.nodes` (nodes, node),
:mod:`bot.cli.run` (run, demo, doctor, audit), :mod:`bot.cli.init` (init),
:mod:`bot.cli.status` (status) and
:mod:`bot.cli.store` (store export, import), over :mod:`bot.cli.context` (what every
command gets) and :mod:`bot.cli.output` (listings that stream).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from bot import __version__
from bot.cli.context import (
    EXIT_LOOKUP,
    EXIT_PIPE,
    EXIT_USAGE,
    Context,
    UsageError,
    make_context,
    provider_name,
)
from bot.cli.init import DESCRIPTION as INIT_DESCRIPTION
from bot.cli.init import EPILOG as INIT_EPILOG
from bot.cli.init import cmd_init
from bot.cli.nodes import (
    cmd_node_connect,
    cmd_node_pair,
    cmd_nodes_approve,
    cmd_nodes_invite,
    cmd_nodes_list,
    cmd_nodes_pending,
    cmd_nodes_reject,
    cmd_nodes_revoke,
)
from bot.cli.output import stdout_closed
from bot.cli.pairing import (
    cmd_allow_add,
    cmd_allow_list,
    cmd_allow_remove,
    cmd_pairing_approve,
    cmd_pairing_list,
    cmd_pairing_reject,
)
from bot.cli.run import cmd_audit, cmd_demo, cmd_doctor, cmd_gateway_fingerprint, cmd_run
from bot.cli.status import cmd_status
from bot.cli.store import cmd_store_export, cmd_store_import
from bot.core.errors import AllowedByConfigError, LookupFailed, NodeRefused, PairbotError
from bot.core.platforms import KNOWN_PROVIDERS
from bot.runtime.logs import install_redaction
from stores import STATE_DIR_ENV

log = logging.getLogger("bot.cli.main")


def _limit(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return number


def _common(*, state_dir: str, config: str) -> argparse.ArgumentParser:
    """The options every command takes, with what ``--state-dir`` and ``--config`` mean to it
    (left unset when not given, so one given before the command holds)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", default=argparse.SUPPRESS, metavar="DIR", help=state_dir)
    common.add_argument("--config", default=argparse.SUPPRESS, metavar="PATH", help=config)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks and debug logs",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    """Build the whole ``pairbot`` argument parser."""
    common = _common(
        state_dir=f"state dir (default: ${STATE_DIR_ENV}, else ~/.pairbot)",
        config="config file (default: $PAIRBOT_CONFIG); for TTLs and allow_from",
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print a JSON array")
    provider_opt = argparse.ArgumentParser(add_help=False)
    provider_opt.add_argument(
        "--provider",
        "--channel",
        dest="provider_opt",
        type=provider_name,
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
        func: Callable[[Context], int] | Callable[[argparse.Namespace], int],
        help_text: str,
        parents: Sequence[argparse.ArgumentParser] = (),
        *,
        description: str = "",
        plain: bool = False,
    ) -> argparse.ArgumentParser:
        """One command: it runs on the context (the store and the services), or, ``plain``,
        on its arguments alone, building what it needs itself."""
        p: argparse.ArgumentParser = sub.add_parser(
            name,
            help=help_text,
            description=description or help_text,
            parents=[common, *parents],
        )
        if plain:
            p.set_defaults(plain=func)
        else:
            p.set_defaults(func=func)
        return p

    def by_provider(
        name: str, help_text: str, listing: Callable[[Context], int], what: str
    ) -> Any:
        """A group whose ``list`` takes ``[PROVIDER]``; return its subparsers, for its actions."""
        group = groups.add_parser(name, help=help_text)
        sub = group.add_subparsers(dest="command", metavar="ACTION", required=True)
        p = leaf(sub, "list", listing, what, [as_json, provider_opt])
        p.add_argument("provider_pos", nargs="?", type=provider_name, metavar="PROVIDER")
        return sub

    def on_provider(
        sub: Any,
        name: str,
        func: Callable[[Context], int],
        help_text: str,
        value: str,
        parents: Sequence[argparse.ArgumentParser] = (),
    ) -> None:
        """An action of a :func:`by_provider` group: ``[PROVIDER] VALUE``."""
        p = leaf(sub, name, func, help_text, [provider_opt, *parents])
        p.add_argument("words", nargs="+", metavar=f"[PROVIDER] {value}")

    lasting = argparse.ArgumentParser(add_help=False)
    lasting.add_argument(
        "--for",
        dest="lasting",
        metavar="DURATION",
        help="a grant that ends after this long (30m, 24h, 7d, 2w); without it, for good",
    )

    psub = by_provider(
        "pairing", "pending DM pairing requests", cmd_pairing_list, "list pending requests"
    )
    on_provider(
        psub, "approve", cmd_pairing_approve, "approve a request by its code", "CODE", [lasting]
    )
    on_provider(psub, "reject", cmd_pairing_reject, "reject a request by its code", "CODE")
    asub = by_provider(
        "allowlist",
        "senders allowed to reach the assistant",
        cmd_allow_list,
        "list allowed senders",
    )
    on_provider(asub, "add", cmd_allow_add, "allow a sender by immutable id", "ID", [lasting])
    on_provider(asub, "remove", cmd_allow_remove, "revoke a sender", "ID")

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
    p = leaf(
        nsub,
        "invite",
        cmd_nodes_invite,
        "a one-time setup code (text and QR code): a device joins with it at once",
        [as_json],
        description="Make a one-time invite: a setup code carrying the gateway's URL, the "
        "fingerprint of its certificate and a secret (pairbot keeps only its hash). A node "
        "that shows it (`pairbot node pair --invite CODE`) is paired at once, once. Needs the "
        "config (where nodes reach the gateway: gateway.public_url, or its host and port).",
    )
    p.add_argument(
        "--for",
        dest="lasting",
        default=None,
        metavar="DURATION",
        help="how long it lasts, e.g. 30m (1m..1d; default nodes.invite_ttl, 10m)",
    )
    p.add_argument("--name", default="", help="what you call the device (its name once paired)")

    node = groups.add_parser("node", help="play a node: ask a gateway to join, connect")
    node_sub = node.add_subparsers(dest="command", metavar="ACTION", required=True)
    node_common = argparse.ArgumentParser(add_help=False)
    node_common.add_argument(
        "--gateway",
        default=None,
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
    node_common.add_argument(
        "--fingerprint",
        default=None,
        metavar="sha256:HEX",
        help="the certificate a wss:// gateway must show (`pairbot gateway fingerprint` "
        "prints it); kept with the node's keyring once it connected",
    )
    p = leaf(
        node_sub,
        "pair",
        cmd_node_pair,
        "ask to join; wait for the owner; print and save the token",
        [node_common],
        description="Ask the gateway to pair this node and wait.",
        plain=True,
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
    p.add_argument(
        "--invite",
        default=None,
        metavar="CODE",
        help="join at once with a one-time invite's setup code (`pairbot nodes invite`); it "
        "gives the gateway and the certificate to pin",
    )
    p.add_argument(
        "--no-key",
        action="store_true",
        help="pair with a token alone (by default the node makes an Ed25519 key, node.key "
        "0600, and connects by signature: nothing reusable crosses the wire)",
    )
    leaf(
        node_sub,
        "connect",
        cmd_node_connect,
        "connect with the saved token",
        [node_common],
        description="Authenticate to the gateway with the saved token.",
        plain=True,
    )

    gateway = groups.add_parser("gateway", help="the node gateway's certificate")
    gsub = gateway.add_subparsers(dest="command", metavar="ACTION", required=True)
    leaf(
        gsub,
        "fingerprint",
        cmd_gateway_fingerprint,
        "print the SHA-256 fingerprint of the gateway's certificate (for nodes to pin)",
        description="Print the SHA-256 fingerprint nodes pin (`pairbot node pair "
        "--fingerprint`). With gateway.tls: auto the certificate is made first if the bot "
        "has not run yet.",
        plain=True,
    )

    store = groups.add_parser("store", help="the whole state: export it, import it")
    ssub = store.add_subparsers(dest="command", metavar="ACTION", required=True)
    p = leaf(
        ssub,
        "export",
        cmd_store_export,
        "write the whole state as one JSON document (it holds codes and held messages: "
        "keep it private)",
    )
    p.add_argument(
        "--output", "-o", default=None, metavar="FILE", help="write FILE (0600); default stdout"
    )
    p = leaf(
        ssub,
        "import",
        cmd_store_import,
        "read a document (or a state dir) into the configured store",
        description="Read a document made by `pairbot store export`, or a pairbot or Clawdbot "
        "state dir, into the configured store. Refused (exit 2, nothing written) when the "
        "store already holds state, unless --merge.",
    )
    p.add_argument(
        "file", nargs="?", default=None, metavar="FILE", help="the document (- for stdin)"
    )
    p.add_argument(
        "--from-state-dir", default=None, metavar="DIR", help="a pairbot or Clawdbot state dir"
    )
    p.add_argument(
        "--merge", action="store_true", help="add to the state the store holds; replace nothing"
    )

    p = leaf(groups, "audit", cmd_audit, "show the audit log", [as_json])
    p.add_argument(
        "--limit", type=_limit, default=50, metavar="N", help="last N entries (default 50)"
    )
    leaf(
        groups,
        "status",
        cmd_status,
        "the instances running, with what they hold",
        [as_json],
        description="Show every instance of pairbot that reported in the last minute: its id, "
        "host, pid, version, start, last beat, readiness and the connectors it holds. On "
        "PostgreSQL, every instance on the database; on a JSON or SQLite state, the local bot, "
        "asked through its gateway. Exit 1 if none is running.",
    )
    leaf(
        groups,
        "doctor",
        cmd_doctor,
        "check permissions, state files and config",
        description="Check permissions, state files and config; change nothing. Exit 1 if "
        "anything is wrong.",
        plain=True,
    )
    leaf(
        groups,
        "run",
        cmd_run,
        "run the bot (needs a config)",
        description="Run the bot until SIGINT/SIGTERM.",
        plain=True,
    )
    p = groups.add_parser(
        "init",
        help="write a first config: asks, or --yes takes flags and the environment",
        description=INIT_DESCRIPTION,
        epilog=INIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[
            _common(
                state_dir=f"the state dir the file names (default: ${STATE_DIR_ENV}, else "
                "~/.pairbot)",
                config="the file to write (default: $PAIRBOT_CONFIG, else ~/.config/pairbot.yaml)",
            )
        ],
    )
    p.set_defaults(plain=cmd_init)
    p.add_argument(
        "--provider",
        dest="providers",
        action="append",
        metavar="P[,P...]",
        help=f"a platform to connect (again, or comma-separated, for more): "
        f"{', '.join(KNOWN_PROVIDERS)}; default: asked, or with --yes each whose secrets are "
        "all in the environment",
    )
    p.add_argument(
        "--owner",
        action="append",
        metavar="[P:]ID",
        help="an owner: their immutable id on platform P (P may be left out when one platform "
        "is chosen); again for more. Default: asked, or with --yes none",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="any other key of the config, dotted, with a YAML value (e.g. gateway.port=18790, "
        "providers.telegram.api_base_url=URL); a secret key takes only '${VAR}'",
    )
    p.add_argument("--yes", "-y", action="store_true", help="ask nothing (for scripts)")
    p.add_argument("--force", action="store_true", help="overwrite the file if it exists")
    p.add_argument(
        "--skip-doctor",
        action="store_true",
        help="do not check the file after writing it (the checks call the platforms' APIs)",
    )
    p = leaf(
        groups,
        "demo",
        cmd_demo,
        "watch the whole flow on a loopback platform, no account",
        description="Play the pairing flow end to end.",
        plain=True,
    )
    p.add_argument(
        "--provider",
        dest="demo_provider",
        default="telegram",
        choices=[*KNOWN_PROVIDERS, "all"],
        help="which platform to play (default telegram; all = each in turn)",
    )
    return parser


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
        if not stdout_closed():
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
