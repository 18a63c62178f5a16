"""Loopback fakes of the chat platforms' APIs, one module per platform.

They ship in the product so that ``pairbot demo`` and the e2e tests can drive the real SDKs
with no account and no network: only the SDK's base URL changes. Each module also offers a
:class:`DemoPlatform`: the fake, played by people, as the demo and cross-provider tests use it.
This module holds what those share on the people side; how a fake is served and calls pairbot
is :mod:`providers.fakes_http`.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from bot.core.clock import Clock


async def wait_until(
    condition: Callable[[], bool],
    *,
    timeout: float = 5.0,  # noqa: ASYNC109 (a deadline for polling, not an I/O timeout)
    interval: float = 0.01,
) -> None:
    """Poll ``condition`` every ``interval`` s until it holds; TimeoutError at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() >= deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


class DemoPlatform(Protocol):
    """A platform fake seen from the people side: who writes, and what the bot answered."""

    provider: str
    """The provider name (``telegram``, ``slack``, ...)."""
    owner_id: str
    """The owner's immutable id on this platform (put it in ``owners:``)."""

    async def start(self) -> None:
        """Start the fake's servers on 127.0.0.1."""
        ...

    async def stop(self) -> None:
        """Stop them."""
        ...

    def provider_config(self) -> dict[str, Any]:
        """The ``providers.<name>`` config block that points the real SDK at this fake."""
        ...

    def user_id(self, n: int) -> str:
        """An immutable id for demo person ``n`` (1, 2, ...), distinct from the owner's."""
        ...

    def dm(self, user_id: str, text: str, *, name: str) -> None:
        """Person ``user_id`` (calling themselves ``name``) writes ``text`` to the bot 1:1."""
        ...

    def texts_to(self, user_id: str) -> list[str]:
        """Every text the bot sent to that person's one-to-one chat, oldest first."""
        ...


# -- contract capabilities (issue 10: tests/providers/test_contract.py) ------------------------


@dataclass(frozen=True, slots=True)
class Written:
    """A message a person wrote, as the platform stamped it."""

    message_id: str
    """The platform's id for it, as a provider reports it in ``Inbound.message_id``."""
    sent_at: datetime
    """When the platform says it was sent (``Inbound.sent_at``)."""


class ContractPlatform(DemoPlatform, Protocol):
    """A platform fake as the provider contract suite plays it: the people of
    :class:`DemoPlatform`, plus what every platform can do to a bot and show of what it did.

    Each fake writes these from its platform's own documentation or source (cited there).
    """

    def dm_written(self, user_id: str, text: str, *, name: str) -> Written:
        """Like :meth:`dm`; return the id and time the platform gave the message."""
        ...

    async def dm_delivered_twice(self, user_id: str, text: str, *, name: str) -> None:
        """Person ``user_id`` writes ``text`` once and the platform delivers it twice, the
        way its transport re-delivers; return once the second delivery was made."""
        ...

    def group_message(self, user_id: str, text: str, *, name: str) -> None:
        """Person ``user_id`` writes ``text`` in a group chat the bot is in."""
        ...

    def own_message(self, text: str) -> None:
        """The bot's own account writes ``text`` in a one-to-one chat (from another device
        or app), arriving every way the platform reports such messages."""
        ...

    def non_text_dm(self, user_id: str, *, name: str) -> None:
        """Person ``user_id`` sends the bot a one-to-one message with no text (a picture)."""
        ...

    async def handed_over(self) -> None:
        """Wait until the platform has offered the bot every event injected so far, as far as
        it does now: events the bot must take (a long poll, a socket) wait until taken and
        acknowledged; events pushed once, or held for a session the bot may resume, count
        once tried or held. TimeoutError after 5 s."""
        ...

    def shown_to(self, user_id: str) -> list[str]:
        """The bot's messages in that person's one-to-one chat as it shows them now, oldest
        first: edits applied in place, markup escapes undone."""
        ...

    def buttons_on(self, message_id: str) -> list[str]:
        """The labels of the buttons a message of the bot shows now (none where the platform
        has no buttons)."""
        ...

    def press(self, user_id: str, message_id: str, label: str) -> None:
        """Person ``user_id`` presses the button ``label`` on a message of the bot.

        Raises:
            LookupError: the message shows no such button.
        """
        ...


class NoButtons:
    """:class:`ContractPlatform`'s buttons on a platform that has none: a message shows none,
    and there is nothing to press."""

    provider: str

    def buttons_on(self, message_id: str) -> list[str]:
        """None, on any message."""
        del message_id
        return []

    def press(self, user_id: str, message_id: str, label: str) -> None:
        """Raises LookupError: no message shows a button."""
        del user_id
        raise LookupError(
            f"message {message_id} shows no button {label!r}: {self.provider} has none"
        )


class _Server(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


S = TypeVar("S", bound=_Server)


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoSpec(Generic[S]):
    """What makes one platform's :class:`DemoPlatform` its own, as values.

    A platform's demo class names its spec (``class TelegramDemo(FakeDemo[FakeTelegramServer],
    spec=TELEGRAM)``) and keeps as methods only how its platform plays what people do.
    """

    provider: str
    """The provider name (``telegram``, ``slack``, ...)."""
    owner_id: str
    """The owner's immutable id on this platform."""
    user_id: Callable[[int], str]
    """Demo person ``n``'s id (1, 2, ...), in the platform's own format."""
    fake: Callable[..., S]
    """Makes the fake, called with ``clock=``."""
    config: Callable[[S], dict[str, Any]]
    """The ``providers.<name>`` block that points the real SDK at the fake (a webhook
    platform's without its ``webhook:``, which :class:`WebhookDemo` adds)."""


class FakeDemo(Generic[S]):
    """Base of the platforms' DemoPlatform classes: made from the platform's :class:`DemoSpec`
    (the class keyword ``spec=``), they start and stop its fake server."""

    spec: ClassVar[DemoSpec[Any]]
    provider: str
    owner_id: str
    fake: S

    def __init_subclass__(cls, *, spec: DemoSpec[Any] | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if spec is not None:
            cls.spec, cls.provider, cls.owner_id = spec, spec.provider, spec.owner_id

    def __init__(self, *, clock: Clock | None = None) -> None:
        self.fake = self.spec.fake(clock=clock)

    async def start(self) -> None:
        """Start the fake's servers."""
        await self.fake.start()

    async def stop(self) -> None:
        """Stop them."""
        await self.fake.stop()

    def provider_config(self) -> dict[str, Any]:
        """The spec's ``providers.<name>`` block for this fake."""
        return self.spec.config(self.fake)

    def user_id(self, n: int) -> str:
        """The spec's id for demo person ``n``."""
        return self.spec.user_id(n)


class _PeopleServer(_Server, Protocol):
    def dm(self, user_id: str, text: str, /, *, name: str) -> object: ...
    def texts_to(self, user_id: str, /) -> list[str]: ...


P = TypeVar("P", bound=_PeopleServer)


class PeopleDemo(FakeDemo[P]):
    """A :class:`FakeDemo` whose fake already speaks of people as :class:`DemoPlatform` does:
    its ``dm(user_id, text, name=...)`` and ``texts_to(user_id)`` serve as they are."""

    def dm(self, user_id: str, text: str, *, name: str) -> None:
        """The fake's ``dm``: a one-to-one message to the bot."""
        self.fake.dm(user_id, text, name=name)

    def texts_to(self, user_id: str) -> list[str]:
        """The fake's ``texts_to``: what the bot sent to that person, as they see it."""
        return self.fake.texts_to(user_id)


class _WebhookServer(_Server, Protocol):
    def webhook_for(self, port: int, path: str, /) -> str: ...


W = TypeVar("W", bound=_WebhookServer)


class WebhookDemo(FakeDemo[W]):
    """A :class:`FakeDemo` whose platform calls pairbot on a webhook: the port pairbot will
    listen on is picked before the fake starts, and the fake posts there."""

    webhook_path: ClassVar[str]
    """Where pairbot's webhook listens (the provider's default path)."""
    webhook_port = 0
    """The port pairbot's webhook will listen on; picked at :meth:`start`."""

    async def start(self) -> None:
        """Pick the webhook's port, point the fake at it, and start the fake."""
        self.webhook_port = free_port()
        self.fake.webhook_for(self.webhook_port, self.webhook_path)
        await self.fake.start()

    def provider_config(self) -> dict[str, Any]:
        """The spec's block, with the provider's ``webhook:`` where the fake posts."""
        webhook = {"host": "127.0.0.1", "port": self.webhook_port, "path": self.webhook_path}
        return {**super().provider_config(), "webhook": webhook}


_GIVEN: set[int] = set()
"""Every port :func:`free_port` handed out in this process."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago, and that no earlier call in this process gave:
    for a webhook address a fake must know before the bot binds it. (The kernel may offer a
    port again as soon as the probe closes it, so two calls a moment apart could otherwise
    give two servers one port.)"""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            port = int(probe.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port
    raise OSError("no free TCP port that was not already given out")


__all__ = [
    "ContractPlatform",
    "DemoPlatform",
    "DemoSpec",
    "FakeDemo",
    "NoButtons",
    "PeopleDemo",
    "WebhookDemo",
    "Written",
    "free_port",
    "wait_until",
]
