"""The platforms table against what is really there: each entry's provider and demo fake load,
the fake's config block is valid for the entry's block, and the provider built from it says
what the table says about its platform."""

from __future__ import annotations

import pytest

from bot.cli.demo import available_platforms, load_platform
from bot.core.platforms import KNOWN_PROVIDERS, PLATFORMS, Platform
from providers import load_provider_class

pytestmark = pytest.mark.e2e


def test_every_platform_has_its_demo_fake() -> None:
    assert available_platforms() == list(KNOWN_PROVIDERS)


@pytest.mark.parametrize("entry", PLATFORMS, ids=lambda p: p.name)
async def test_the_entry_matches_its_provider_and_fake(entry: Platform) -> None:
    demo = load_platform(entry.name)
    assert demo.provider == entry.name
    assert entry.ids.matches(demo.owner_id)
    assert entry.ids.matches(demo.user_id(1))
    await demo.start()
    try:
        block = entry.config.model_validate(demo.provider_config())
        provider = load_provider_class(entry.name)(**block.provider_kwargs())
    finally:
        await demo.stop()
    assert provider.name == entry.name
    assert provider.bare_commands is entry.bare_commands
