"""The provider contract suite (tests/providers/test_contract.py), run once more on Telegram in
``mode: webhook`` (:data:`tests.providers.platforms.TELEGRAM_WEBHOOK`).

Its tests are imported here, so pytest collects them in this module, where ``rig`` is the
fixture below: the contract fixture's rig, on the webhook-mode facts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.providers.conftest import Rig, rigged
from tests.providers.platforms import TELEGRAM_WEBHOOK
from tests.providers.test_contract import *  # noqa: F403 (the suite, collected here)

pytestmark = pytest.mark.e2e


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with rigged(TELEGRAM_WEBHOOK) as made:
        assert made.people.provider_config()["mode"] == "webhook"  # not polling by mistake
        yield made
