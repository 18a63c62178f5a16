"""One error tree: every exception class pairbot defines derives from PairbotError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import pytest

import bot
import stores
from bot.core.errors import PairbotError

OUTSIDE_THE_TREE = {
    "bot.core.schema.InvalidValue": "pydantic turns only ValueError into a validation error",
}
"""Exception classes that may not derive from PairbotError, and why."""


def defined_exceptions() -> list[type[BaseException]]:
    found = []
    for package in (bot, stores):
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
            if info.name.endswith(".__main__"):  # runs the command when imported
                continue
            module = importlib.import_module(info.name)
            found += [
                cls
                for _, cls in inspect.getmembers(module, inspect.isclass)
                if issubclass(cls, BaseException) and cls.__module__ == module.__name__
            ]
    return found


@pytest.mark.parametrize("cls", defined_exceptions(), ids=lambda c: c.__qualname__)
def test_every_exception_pairbot_defines_is_a_pairbot_error(cls: type[BaseException]) -> None:
    name = f"{cls.__module__}.{cls.__qualname__}"
    assert issubclass(cls, PairbotError) or name in OUTSIDE_THE_TREE, name


def test_the_tree_is_drawn_with_every_error() -> None:
    import bot.core.errors as errors

    drawn = errors.__doc__ or ""
    for cls in defined_exceptions():
        name = f"{cls.__module__}.{cls.__qualname__}"
        if name not in OUTSIDE_THE_TREE:
            assert re.search(rf"\s{cls.__name__}\s", drawn), f"{name} is missing from the drawing"
