"""What the e2e tests share: a platform's app config, the app at test pace, waiting for what
the bot sent, the code in a stranger's reply, and the app's store wrapped for a test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

from bot.cli import compose
from bot.cli.compose import open_app
from bot.core.clock import Clock
from bot.core.config import Config
from bot.core.protocols import StateStore
from bot.runtime.app import App
from providers.fakebase import wait_until

T = TypeVar("T")
W = TypeVar("W")

PACE: dict[str, Any] = {
    "watch_interval": 0.1,
    "capped_delay": 0.2,
    "notice_window": timedelta(seconds=60),
}
"""App options that keep a test quick: the outbox looked at every 0.1 s, turned-away
strangers counted after 0.2 s, owner notices throttled per minute."""


def app_config(
    platform: str,
    owner: str,
    block: Mapping[str, Any],
    *,
    pairing: Mapping[str, Any] | None = None,
    **sections: Any,
) -> Config:
    """The config of an app with one platform and its owner, its gateway on a free port.

    ``pairing`` is merged into the pairing section; ``sections`` replace whole sections. Any
    positive duration is allowed (a 0.2 s pruner, which no user may set).
    """
    raw: dict[str, Any] = {
        "owners": [{"provider": platform, "user_id": owner}],
        "pairing": dict(pairing or {}),
        "gateway": {"port": 0},
        "providers": {platform: dict(block)},
    }
    raw.update(sections)
    return Config.with_any_durations(raw)


async def start_app(
    config: Config, state_dir: Path, clock: Clock | None = None, **options: Any
) -> App:
    """Start the whole app at test pace (:data:`PACE`, overridden by ``options``)."""
    app = open_app(config, state_dir=state_dir, clock=clock, **{**PACE, **options})
    await app.start()
    return app


@asynccontextmanager
async def app_running(
    config: Config, state_dir: Path, clock: Clock | None = None, **options: Any
) -> AsyncIterator[App]:
    """:func:`start_app`, stopped on the way out."""
    app = await start_app(config, state_dir, clock, **options)
    try:
        yield app
    finally:
        await app.stop()


async def texts(read: Callable[[], list[T]], count: int, *, wait: float = 5.0) -> list[T]:
    """Wait until ``read()`` holds ``count`` items (what the bot sent someone); return all."""
    await wait_until(lambda: len(read()) >= count, timeout=wait)
    return read()


def code_in(text: str) -> str:
    """The pairing code in a reply to a stranger, without its dash."""
    line = next(ln for ln in text.splitlines() if "pairing code:" in ln)
    return line.split(":", 1)[1].strip().replace("-", "")


async def settle(seconds: float = 0.3) -> None:
    """Give traffic that must not come the time it would need to show up."""
    await asyncio.sleep(seconds)


def wrap_stores(monkeypatch: Any, wrap: Callable[[StateStore], W]) -> list[W]:
    """Make every app (and command) built in this test open its configured store wrapped by
    ``wrap`` (a store in its own right, by delegation); return the wrappers, as made."""
    made: list[W] = []
    real = compose.configured_store

    def wrapped(config: Config | None, state_dir: Path) -> StateStore:
        store = wrap(real(config, state_dir))
        made.append(store)
        return cast(StateStore, store)

    monkeypatch.setattr(compose, "configured_store", wrapped)
    return made
