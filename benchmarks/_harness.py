"""What the end-to-end benchmarks share: the bot's config against a platform's fake, and
percentiles. The bot itself runs on :func:`bot.cli.demo.bot_on_fake`, as the demo does."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.cli.demo import fake_config
from bot.core.config import Config
from providers.fakebase import DemoPlatform


def bench_config(
    platform: DemoPlatform,
    *,
    max_send_rate: float | None = None,
    allow_from: list[str] | None = None,
    **sections: Any,
) -> Config:
    """The bot's config on ``platform``'s fake for a benchmark: no gateway, the platform's
    send limiter at ``max_send_rate`` if given (else as deployed), ``allow_from`` if given,
    and ``sections``."""
    block = platform.provider_config()
    if max_send_rate is not None:
        block["max_send_rate"] = max_send_rate
    if allow_from is not None:
        block["allow_from"] = allow_from
    return fake_config(platform, block, gateway={"enabled": False}, **sections)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


class FsyncCounter:
    """Counts os.fsync calls while installed (the store's durable writes)."""

    def __init__(self) -> None:
        self.count = 0
        self._real = os.fsync

    def __enter__(self) -> FsyncCounter:
        def counting(fd: Any) -> None:
            self.count += 1
            self._real(fd)

        os.fsync = counting
        return self

    def __exit__(self, *_exc: object) -> None:
        os.fsync = self._real
