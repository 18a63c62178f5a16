"""Chat platform providers: one package per platform, each with a class satisfying ``Provider``.

This package owns everything platform-specific: the SDK imports (nowhere else in pairbot),
the conversion of platform events into :class:`~bot.core.models.Inbound` values
(``providers/<name>/provider.py``, on the shared base in :mod:`providers.base`), and the
loopback fakes of the platforms' APIs (``providers/<name>/fake.py``, on
:mod:`providers.fakebase` and :mod:`providers.fakes_http`). :data:`REGISTRY` maps a provider
name to its class as ``"module:Class"`` (from :data:`bot.core.platforms.PLATFORMS`), imported
only when asked for, so a missing SDK breaks only the provider that needs it.
"""

from __future__ import annotations

import importlib
from typing import cast

from bot.core.errors import ConfigError
from bot.core.platforms import PLATFORMS
from bot.core.protocols import Provider

REGISTRY: dict[str, str] = {p.name: p.provider for p in PLATFORMS}
"""Provider name → ``"module:Class"`` of its implementation (from the platforms table)."""


def load_provider_class(name: str) -> type[Provider]:
    """Import and return the provider class registered under ``name``.

    Raises:
        ConfigError: ``name`` is not a provider pairbot knows, or the SDK it needs is not
            installed.
    """
    target = REGISTRY.get(name)
    if target is None:
        implemented = ", ".join(sorted(REGISTRY))
        raise ConfigError(
            f"unknown provider {name!r}", field="providers", hint=f"available: {implemented}"
        )
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise  # a broken registry entry is a bug, not a configuration problem
        raise ConfigError(
            f"provider {name!r} needs the {exc.name!r} package, which is not installed",
            field="providers",
            hint="reinstall pairbot with its dependencies",
        ) from exc
    return cast(type[Provider], getattr(module, class_name))
