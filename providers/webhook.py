"""Webhook binding for the platforms that call pairbot: :class:`WebhookServer`,
:class:`WebhookProvider`, the base of a provider whose events only come that way, and
:class:`RestClient`, the base of its client for the platform's REST API (the way back).

Slack's HTTP mode, WhatsApp and iMessage (BlueBubbles) each serve an aiohttp application on
a host, port and path (a :class:`~providers.server.HttpServer`); the routes are the
platform's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ClassVar

import aiohttp
from aiohttp import web

from bot.core.schema import WebhookConfig
from providers.base import BaseProvider, need
from providers.server import HttpServer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
"""What answers one request on the webhook's path."""


class WebhookServer(HttpServer):
    """An aiohttp server for one platform's webhook on ``host:port`` + ``path``.

    Port 0 binds a free port; after the first start :attr:`port` is the bound one, so a
    restart binds it again and the URL registered with the platform stays right.
    """

    def __init__(self, *, host: str, port: int, path: str) -> None:
        super().__init__(host=host, port=port)
        self.path = path

    @classmethod
    def at(cls, address: WebhookConfig) -> WebhookServer:
        """A server where a provider's ``webhook:`` block says."""
        return cls(host=address.host, port=address.port, path=address.path)

    @property
    def url(self) -> str:
        """Where the webhook listens, e.g. ``http://127.0.0.1:8081/whatsapp/webhook``."""
        return super().url + self.path


class RestClient:
    """A webhook platform's REST API, pairbot's way back to it, over one HTTP session.

    A platform's client adds the calls and what their answers mean. The provider makes it
    once, as its :attr:`WebhookProvider._api`; the session is open while the provider runs:
    :meth:`open` in the platform's ``_connect`` (inside the running loop), :meth:`close` in
    :meth:`WebhookProvider._disconnect`.

    Args:
        root: the URL every call starts with.
        name: the provider's name, for errors.
        timeout: how long one call may take.
    """

    def __init__(self, *, root: str, name: str, timeout: aiohttp.ClientTimeout) -> None:
        self._root = root
        self._name = name
        self._timeout = timeout
        self._open: aiohttp.ClientSession | None = None

    def open(self) -> None:
        """Open the HTTP session."""
        self._open = aiohttp.ClientSession(timeout=self._timeout)

    async def close(self) -> None:
        """Close the HTTP session, if it is open (also that of a start that failed)."""
        session, self._open = self._open, None
        if session is not None:
            await session.close()

    @property
    def _session(self) -> aiohttp.ClientSession:
        """The open session.

        Raises:
            ProviderStateError: it is closed: the provider is not running.
        """
        return need(self._name, self._open)


class WebhookProvider(BaseProvider):
    """A :class:`~providers.base.BaseProvider` whose platform calls it on one webhook.

    The platform writes the handlers of its path (auth, reading the event) and calls
    :meth:`_serve` at the end of ``_connect``; :meth:`_stop_receiving` stops the server, so a
    stop takes no request after the ones in hand. A restart binds the port bound first.
    The way back is :attr:`_api`: the platform makes it in ``__init__`` and opens it first
    thing in ``_connect``; :meth:`_disconnect` closes it.

    Args:
        name: as for :class:`~providers.base.BaseProvider`, with ``dedupe_size`` and
            ``drain_timeout``.
        webhook: the server, not yet started: its host, port (0 picks a free one: read
            :attr:`webhook_port` after start) and path (every other one answers 404).

    Raises:
        ConfigError: the path does not start with ``/`` (field ``webhook.path``).
    """

    max_body: ClassVar[int] = 1024 * 1024
    """The largest request body taken, in bytes; a larger one is answered 413."""

    _api: RestClient
    """The platform's REST API (a :class:`RestClient` of the platform's own)."""

    def __init__(
        self,
        *,
        name: str,
        webhook: WebhookServer,
        dedupe_size: int | None = None,
        drain_timeout: float | None = None,
    ) -> None:
        super().__init__(name=name, dedupe_size=dedupe_size, drain_timeout=drain_timeout)
        if not webhook.path.startswith("/"):
            raise self._config_error("webhook.path", "must start with /")
        self._webhook = webhook

    @property
    def webhook_port(self) -> int:
        """The webhook's port: the bound one once started (useful with port 0)."""
        return self._webhook.port

    @property
    def webhook_path(self) -> str:
        """The path the platform calls."""
        return self._webhook.path

    @property
    def webhook_url(self) -> str:
        """Where the webhook listens, e.g. ``http://127.0.0.1:8081/whatsapp/webhook``."""
        return self._webhook.url

    async def _serve(self, post: Handler, *, get: Handler | None = None) -> None:
        """Answer POSTs (and GETs, if given) on the path; return once listening.

        Raises:
            OSError: the address cannot be bound.
        """
        app = web.Application(client_max_size=self.max_body)
        app.router.add_post(self._webhook.path, post)
        if get is not None:
            app.router.add_get(self._webhook.path, get)
        await self._webhook.start(app)

    async def _stop_receiving(self) -> None:
        """Stop listening; the requests in hand are answered (and what they accept queued)."""
        await self._webhook.stop()

    async def _disconnect(self) -> None:
        """Close the REST API's session (also that of a start that failed half-way)."""
        await self._api.close()


__all__ = ["Handler", "RestClient", "WebhookProvider", "WebhookServer"]
