"""The composition root: the one place that names the concrete store and provider classes.

``pairbot run``, every ``pairbot`` command, the demo, the benchmarks and the tests build what
they run on here: the store the config's ``store:`` names (the JSON state dir by default;
:func:`configured_store`), and each configured platform's provider from the lazy registry
(:mod:`providers`). A provider that keeps a cursor across restarts (it takes a
``cursors`` argument: iMessage's catch-up) is handed the opened store as its
:class:`~bot.core.protocols.Cursors`; providers never import a store.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bot.cli.tls import gateway_tls
from bot.core.clock import Clock
from bot.core.config import Config
from bot.core.errors import ConfigError
from bot.core.protocols import Cluster, Cursors, Provider, StateStore
from bot.runtime.app import App
from stores import STATE_DIR_ENV, open_store, resolve_state_dir
from stores.cluster import LocalCluster
from stores.sql.cluster import PostgresCluster
from stores.sql.postgres import PostgresStore


def state_dir_of(config: Config, explicit: Path | None = None) -> Path:
    """The state dir: ``explicit``, else ``$PAIRBOT_STATE_DIR``, else the config's."""
    return explicit or resolve_state_dir(os.environ.get(STATE_DIR_ENV) or config.state_dir)


def configured_store(config: Config | None, state_dir: Path) -> StateStore:
    """The store the config's ``store:`` names (JSON in ``state_dir`` without a config):
    opened, nothing read or created until first used."""
    if config is None:
        return open_store(state_dir)
    chosen = config.store
    path = Path(chosen.path).expanduser() if chosen.path else None
    return open_store(state_dir, backend=chosen.backend, path=path, dsn=chosen.dsn)


def configured_cluster(store: StateStore) -> Cluster:
    """The cluster the instances on ``store`` share: on PostgreSQL, every instance on the
    same schema (:class:`~stores.sql.cluster.PostgresCluster`); on any other store this
    process alone, in memory (:class:`~stores.cluster.LocalCluster`)."""
    if isinstance(store, PostgresStore):
        return PostgresCluster(store)
    return LocalCluster()


def shared_cluster(config: Config | None, store: StateStore) -> Callable[[], Cluster] | None:
    """How a command reaches the running instances on ``store``: through the cluster they
    share when the state is one several instances can share (PostgreSQL: opened only when
    called), else None (a running bot on a JSON or SQLite state is reached through its state
    dir's socket)."""
    if config is None or config.store.backend != "postgres":
        return None
    return lambda: configured_cluster(store)


def open_app(
    config: Config,
    *,
    state_dir: Path | None = None,
    clock: Clock | None = None,
    providers: Mapping[str, Provider] | None = None,
    **tuning: Any,
) -> App:
    """Build the running bot over the JSON store of ``state_dir`` (see :func:`state_dir_of`)
    and the configured providers (or ``providers``, already built); ``tuning`` goes to
    :class:`~bot.runtime.app.App` (notice limits, intervals). Nothing starts until
    ``App.start``: the store opens and the providers are built there."""
    chosen = state_dir_of(config, state_dir)
    given = dict(providers) if providers is not None else None
    opened: list[StateStore] = []  # App opens the store, then builds the providers

    def store() -> StateStore:
        made = configured_store(config, chosen)
        opened[:] = [made]
        return made

    def built() -> dict[str, Provider]:
        return build_providers(config, cursors=opened[0] if opened else None)

    return App(
        config,
        store=store,
        providers=(lambda: given) if given is not None else built,
        cluster=configured_cluster,
        state_dir=chosen,
        clock=clock,
        tls=lambda: gateway_tls(config, chosen, clock=clock),
        **tuning,
    )


def build_providers(config: Config, *, cursors: Cursors | None = None) -> dict[str, Provider]:
    """Instantiate every provider configured, through the lazy registry; those that take
    ``cursors`` get it."""
    from providers import load_provider_class

    built: dict[str, Provider] = {}
    for name in type(config.providers).model_fields:
        block = getattr(config.providers, name)
        if block is None:
            continue
        try:
            cls = load_provider_class(name)
            kwargs = block.provider_kwargs()
            if cursors is not None and "cursors" in inspect.signature(cls).parameters:
                kwargs["cursors"] = cursors
            built[name] = cls(**kwargs)
        except ImportError as exc:
            raise ConfigError(
                f"cannot load the {name} provider: {exc}", field=f"providers.{name}"
            ) from None
    if not built:
        raise ConfigError("no provider configured", field="providers")
    return built
