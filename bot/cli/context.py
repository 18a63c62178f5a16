"""What every ``pairbot`` command shares: exit statuses, the usage error, the context.

The context is the composition root's work for a command: the config (if any), the state
dir's store, the services over it, the clock and the console.
"""

from __future__ import annotations

import argparse
import getpass
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from bot.core.clock import Clock, SystemClock
from bot.core.config import Config
from bot.core.errors import PairbotError
from bot.core.platforms import KNOWN_PROVIDERS
from bot.core.protocols import Cluster, StateStore
from bot.runtime.config import find_config, load_config
from bot.runtime.logs import add_secrets
from bot.services.nodes import NodeService, NodeSettings
from bot.services.pairing import PairingService, PairingSettings
from stores import STATE_DIR_ENV, resolve_state_dir

EXIT_OK, EXIT_LOOKUP, EXIT_USAGE, EXIT_PIPE = 0, 1, 2, 141
"""Success; unknown or expired; a usage, config or state error; the reader went away."""


class UsageError(PairbotError):
    """A command line that cannot be run as written (exit 2)."""


@dataclass(slots=True)
class Context:
    """What every command gets: the services, the store, the clock and where to print."""

    args: argparse.Namespace
    config: Config | None
    store: StateStore
    state_dir: Path
    pairing: PairingService
    nodes: NodeService
    clock: Clock
    out: Console
    actor: str
    shared_cluster: Callable[[], Cluster] | None = None
    """Opens the cluster the running instances on this state share, when decisions reach
    them through it (a PostgreSQL state); None when a running bot is reached through the
    state dir's socket (JSON, SQLite)."""


def provider_name(value: str) -> str:
    """A provider name given on the command line (an argparse ``type``)."""
    if value not in KNOWN_PROVIDERS:
        raise argparse.ArgumentTypeError(
            f"unknown provider {value!r} (choose from {', '.join(KNOWN_PROVIDERS)})"
        )
    return value


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid{os.getuid()}"


def cli_state_dir(args: argparse.Namespace, config: Config | None) -> Path:
    """The state dir: ``--state-dir``, else ``$PAIRBOT_STATE_DIR``, else the config's."""
    explicit = getattr(args, "state_dir", None) or os.environ.get(STATE_DIR_ENV)
    return resolve_state_dir(explicit or (config.state_dir if config else None))


def make_context(args: argparse.Namespace, *, clock: Clock | None = None) -> Context:
    """Load the config (if any), open the store and build the services for a command."""
    config_path = find_config(getattr(args, "config", None))
    config = load_config(config_path) if config_path else None
    if config is not None:
        add_secrets(config.secrets())
    from bot.cli.compose import (  # the composition root names the store and the cluster
        configured_store,
        shared_cluster,
    )

    state_dir = cli_state_dir(args, config)
    store = configured_store(config, state_dir)
    clock = clock or SystemClock()
    pairing_settings = PairingSettings.of(config.pairing) if config else PairingSettings()
    node_settings = NodeSettings.of(config.nodes) if config else NodeSettings()
    return Context(
        args=args,
        config=config,
        store=store,
        state_dir=state_dir,
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
        shared_cluster=shared_cluster(config, store),
    )
