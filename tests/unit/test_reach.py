"""The check at start of each owner's chat (bot.runtime.reach), on any provider that can tell."""

from __future__ import annotations

import logging

import pytest

from bot.runtime.reach import check_owners


class Telling:
    """A provider that can tell: ``answers`` per user id (an exception is raised)."""

    def __init__(self, answers: dict[str, str | Exception | None]) -> None:
        self.answers = answers

    async def why_unreachable(self, user_id: str) -> str | None:
        answer = self.answers[user_id]
        if isinstance(answer, Exception):
            raise answer
        return answer


class Silent:
    """A provider that cannot tell (no ``why_unreachable``)."""


async def test_one_line_per_owner_not_reached_and_a_failed_check_never_stops_the_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.runtime.reach")
    telling = Telling({"1": None, "2": "open t.me/b and press Start", "3": OSError("token x")})
    providers = {"telegram": telling, "slack": Silent()}

    found = await check_owners(
        providers,  # type: ignore[arg-type]
        {("telegram", "1"), ("telegram", "2"), ("telegram", "3"), ("slack", "U1")},
    )

    assert found == {("telegram", "2"): "open t.me/b and press Start"}
    assert [r.getMessage() for r in caplog.records] == [
        "owner 2 on telegram gets no notices: open t.me/b and press Start",
        "owner 3 on telegram: could not check that notices reach them (OSError)",
    ]
