"""Targets for the ``python`` handler in tests/unit/test_handlers.py."""

from __future__ import annotations

import asyncio

from bot.core.models import Inbound

NOT_CALLABLE = 42


def sync_reply(msg: Inbound) -> str:
    return f"sync:{msg.sender_id}:{msg.text}"


async def async_reply(msg: Inbound) -> str:
    await asyncio.sleep(0)
    return f"async:{msg.sender_id}:{msg.text}"


def sync_none(msg: Inbound) -> None:
    return None


async def async_none(msg: Inbound) -> None:
    return None


def sync_empty(msg: Inbound) -> str:
    return ""


def sync_not_text(msg: Inbound) -> int:
    return 42


def sync_raises(msg: Inbound) -> str:
    raise RuntimeError(f"boom {msg.text}")


async def async_raises(msg: Inbound) -> str:
    raise RuntimeError(f"boom {msg.text}")


async def async_slow(msg: Inbound) -> str:
    await asyncio.sleep(30)
    return "too late"


class _AsyncCallable:
    async def __call__(self, msg: Inbound) -> str:
        return f"object:{msg.text}"


async_object = _AsyncCallable()


def sync_returning_coroutine(msg: Inbound) -> object:
    return async_reply(msg)
