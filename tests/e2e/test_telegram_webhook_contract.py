"""The provider contract suite (tests/providers/test_contract.py), run once more on Telegram in
``mode: webhook`` (:data:`tests.providers.platforms.TELEGRAM_WEBHOOK`).

Its tests are imported here, so pytest collects them in this module, where ``rig`` is the
fixture below: the contract fixture's rig, on the webhook-mode facts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import pytest

from bot.core.clock import FakeClock, SystemClock
from bot.core.config import Config
from bot.core.platforms import TelegramConfig
from providers import load_provider_class
from tests.helpers import Inbox
from tests.providers.conftest import Rig, RunningProvider
from tests.providers.platforms import TELEGRAM_WEBHOOK
from tests.providers.test_contract import *  # noqa: F403 (the suite, collected here)

pytestmark = pytest.mark.e2e


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    facts = TELEGRAM_WEBHOOK
    people = facts.people(clock=FakeClock(SystemClock().now()))
    await people.start()
    try:
        config = Config.model_validate({"providers": {facts.name: people.provider_config()}})
        block = config.providers.telegram
        assert isinstance(block, TelegramConfig)
        assert block.mode == "webhook"
        made = load_provider_class(facts.name)(**block.provider_kwargs(), **facts.fast)
        provider = cast(RunningProvider, made)
        try:
            yield Rig(facts, people, provider, config.secrets(), Inbox())
        finally:
            await provider.stop()
    finally:
        await people.stop()
