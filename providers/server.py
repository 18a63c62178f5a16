"""Serving an aiohttp application on ``host:port``: :class:`HttpServer`.

What the webhook providers listen with (:class:`providers.webhook.WebhookServer`) and what the
loopback fakes serve their platform's API with (:class:`providers.fakebase.LoopbackFake`):
the routes are theirs, the binding, the port kept across a restart and the careful stop are
this.
"""

from __future__ import annotations

import asyncio

from aiohttp import web


class HttpServer:
    """An aiohttp application served on ``host:port``.

    Port 0 binds a free port; after the first start :attr:`port` is the bound one, so a
    restart (or :meth:`listen` after :meth:`unlisten`) binds it again and an address handed
    out stays right.

    Args:
        host: the address to bind.
        port: the port (0: a free one).
        shutdown_timeout: seconds :meth:`stop` lets the requests in hand finish.
    """

    def __init__(self, *, host: str, port: int, shutdown_timeout: float = 1.0) -> None:
        self.host = host
        self.port = port
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def serving(self) -> bool:
        """Whether the server is started (it may refuse connections: see :meth:`unlisten`)."""
        return self._runner is not None

    @property
    def listening(self) -> bool:
        """Whether it accepts connections now."""
        return self._site is not None

    @property
    def url(self) -> str:
        """The server root, e.g. ``http://127.0.0.1:8081``."""
        return f"http://{self.host}:{self.port}"

    async def start(self, app: web.Application) -> None:
        """Serve ``app`` (its routes are the caller's) and return once listening.

        Raises:
            OSError: the address cannot be bound.
        """
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=self._shutdown_timeout)
        await runner.setup()
        self._runner = runner
        try:
            await self.listen()
        except BaseException:
            self._runner = None
            await runner.cleanup()
            raise

    async def listen(self) -> None:
        """Accept connections on :attr:`port` (again, after :meth:`unlisten`).

        Raises:
            RuntimeError: the server is not started.
            OSError: the address cannot be bound.
        """
        runner = self._runner
        if runner is None:
            raise RuntimeError(f"no server is started on {self.host}:{self.port}")
        if self._site is not None:
            return
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._site = site
        self.port = int(runner.addresses[0][1])

    async def unlisten(self) -> None:
        """Refuse new connections until :meth:`listen`; the open ones stay open."""
        site, self._site = self._site, None
        if site is not None:
            await site.stop()

    async def stop(self) -> None:
        """Stop listening and close the connections; the requests in hand are answered.
        Safe to call twice.

        asyncio makes the transport of an accepted connection one loop turn after accepting
        it; if the listener closed in between, Python 3.11 would drop that socket unclosed,
        so accepted connections get a few turns to register first.
        """
        runner, self._runner, self._site = self._runner, None, None
        if runner is None:
            return
        for _ in range(3):
            await asyncio.sleep(0)
        await runner.cleanup()


__all__ = ["HttpServer"]
