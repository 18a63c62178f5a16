"""One fixture for the provider contract suite: a platform's loopback fake, played as people,
and its real provider built from the fake's config block the way ``pairbot run`` builds it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol, cast

import pytest

from bot.core.clock import FakeClock, SystemClock
from bot.core.config import Config
from bot.core.protocols import OnInbound, Provider
from providers import load_provider_class
from providers.fakebase import ContractPlatform
from tests.helpers import Inbox
from tests.providers.platforms import FACTS, Facts


class RunningProvider(Provider, Protocol):
    """A provider and its ``running`` flag (every provider has one; the base will say so)."""

    @property
    def running(self) -> bool:
        """Whether start() has returned and stop() has not been called."""
        ...


@dataclass
class Rig:
    """A platform, its people and its provider (built, not started)."""

    facts: Facts
    people: ContractPlatform
    provider: RunningProvider
    secrets: Sequence[str]
    """Every credential in the provider's config block."""
    inbox: Inbox

    async def start(self, on_inbound: OnInbound | None = None) -> None:
        """Start the provider, handing inbound messages to ``on_inbound`` (the inbox)."""
        await self.provider.start(on_inbound or self.inbox)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the contract tests a provider does not meet yet (``Facts.gaps``) as strict xfails."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        name = callspec.params.get("rig") if callspec is not None else None
        if name in FACTS:
            reason = FACTS[name].gaps.get(getattr(item, "originalname", item.name))
            if reason is not None:
                item.add_marker(pytest.mark.xfail(reason=reason, strict=True))


@pytest.fixture(params=list(FACTS))
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    async with rigged(FACTS[request.param]) as made:
        yield made


@asynccontextmanager
async def rigged(facts: Facts) -> AsyncIterator[Rig]:
    """The rig of ``facts``: its fake started, its provider built from the fake's config block
    (not started); both stopped on the way out."""
    people = facts.people(clock=FakeClock(SystemClock().now()))
    await people.start()
    try:
        config = Config.model_validate({"providers": {facts.name: people.provider_config()}})
        block = getattr(config.providers, facts.name)
        made = load_provider_class(facts.name)(**block.provider_kwargs(), **facts.fast)
        provider = cast(RunningProvider, made)
        try:
            yield Rig(facts, people, provider, config.secrets(), Inbox())
        finally:
            await provider.stop()
    finally:
        await people.stop()
