"""Webhook binding for the platforms that call pairbot: :class:`WebhookServer`.

Slack's HTTP mode, WhatsApp and iMessage (BlueBubbles) each serve an aiohttp application on
a host, port and path; the routes are the platform's, the serving is this.
"""

from __future__ import annotations

import asyncio

from aiohttp import web


class WebhookServer:
    """An aiohttp server for one platform's webhook on ``host:port`` + ``path``.

    Port 0 binds a free port; after the first start :attr:`port` is the bound one, so a
    restart binds it again and the URL registered with the platform stays right.
    """

    def __init__(self, *, host: str, port: int, path: str) -> None:
        self.host = host
        self.port = port
        self.path = path
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """Where the webhook listens, e.g. ``http://127.0.0.1:8081/whatsapp/webhook``."""
        return f"http://{self.host}:{self.port}{self.path}"

    @property
    def serving(self) -> bool:
        """Whether the server is listening."""
        return self._runner is not None

    async def start(self, app: web.Application) -> None:
        """Serve ``app`` (its routes are the platform's) and return once listening.

        Raises:
            OSError: the address cannot be bound.
        """
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = int(runner.addresses[0][1])
        self._runner = runner

    async def stop(self) -> None:
        """Stop listening and close the connections; the requests in hand are answered.

        asyncio makes the transport of an accepted connection one loop turn after accepting
        it; if the listener closed in between, Python 3.11 would drop that socket unclosed,
        so accepted connections get a few turns to register first.
        """
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for _ in range(3):
            await asyncio.sleep(0)
        await runner.cleanup()


__all__ = ["WebhookServer"]
