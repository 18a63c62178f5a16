"""The HTTP plumbing the loopback fakes share: :class:`LoopbackFake`, :class:`Webhooks` and
:func:`call_params`.

A fake is a claim about its platform: its routes, shapes, refusals and timing are its own
module's. What is written here is only how a fake is served and how it calls pairbot: its
aiohttp application on 127.0.0.1 (:class:`~providers.server.HttpServer`), its clock, the waits
tests use, how a Web API call's parameters are read, and, for a platform that posts
webhooks, the session and in-order queue they go out through.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Self, TypeVar

import aiohttp
from aiohttp import web

from bot.core.clock import Clock, SystemClock
from providers.fakebase import wait_until
from providers.server import HttpServer

JsonDict = dict[str, Any]

T = TypeVar("T")


class LoopbackFake(ABC):
    """Base of the platform fakes: the platform's API on 127.0.0.1, its clock, the waits.

    A fake builds its application in :meth:`start` and serves it with :meth:`_serve`; its
    :meth:`stop` undoes what the start did and ends with ``await self._http.stop()``. Use as
    ``async with Fake() as fake:`` or call :meth:`start` and :meth:`stop`. Everything runs on
    the caller's event loop.

    Args:
        port: the port to serve on (0 picks a free one: read :attr:`base_url`).
        clock: the platform's clock (what it dates messages and ids by).
        shutdown_timeout: seconds a stop lets the requests in hand finish.
    """

    wait_until = staticmethod(wait_until)
    """Poll a condition until it holds (see :func:`providers.fakebase.wait_until`)."""

    def __init__(
        self, *, port: int = 0, clock: Clock | None = None, shutdown_timeout: float = 1.0
    ) -> None:
        self._clock: Clock = clock or SystemClock()
        self._http = HttpServer(host="127.0.0.1", port=port, shutdown_timeout=shutdown_timeout)
        self._bound = False
        self.sent: list[JsonDict] = []
        """Every message the bot sent, oldest first, recorded in the fake's platform's shape."""

    @abstractmethod
    async def start(self) -> None:
        """Start serving (port 0 picks a free port; read :attr:`base_url`)."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop serving and free the port. Safe to call twice."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """The server root, e.g. ``http://127.0.0.1:PORT``; the same after a stop.

        Raises:
            RuntimeError: the fake was never started.
        """
        if not self._bound:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._http.url

    async def _serve(self, app: web.Application) -> None:
        """Serve ``app`` on 127.0.0.1 (after a stop, on the port bound before).

        Raises:
            RuntimeError: the fake is already running.
        """
        if self._http.serving:
            raise RuntimeError(f"{type(self).__name__} is already running")
        await self._http.start(app)
        self._bound = True

    async def wait_for_sent(
        self,
        predicate: Callable[[JsonDict], bool] | None = None,
        *,
        count: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109 (a deadline for polling, not an I/O timeout)
    ) -> list[JsonDict]:
        """Wait until ``count`` of the messages in :attr:`sent` match ``predicate``; return
        all that match.

        Raises:
            TimeoutError: fewer than ``count`` matched within ``timeout`` seconds.
        """

        def matching() -> list[JsonDict]:
            return [m for m in self.sent if predicate is None or predicate(m)]

        try:
            await self.wait_until(lambda: len(matching()) >= count, timeout=timeout)
        except TimeoutError:
            raise TimeoutError(
                f"{len(matching())} of {count} expected messages sent within {timeout}s "
                f"({len(self.sent)} sent in all)"
            ) from None
        return matching()


async def call_params(request: web.Request) -> JsonDict:
    """The parameters of a Web API call, taken the ways Telegram's and Slack's APIs take them:
    the query, then a JSON object body or the form fields (an uploaded file by its name only,
    as ``{"filename": ...}``).

    Raises:
        web.HTTPBadRequest: the JSON body is malformed.
    """
    params: JsonDict = dict(request.query)
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="malformed JSON body") from None
        if isinstance(body, dict):
            params.update(body)
    elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        for key, value in (await request.post()).items():
            file = {"filename": getattr(value, "filename", None)}
            params[key] = value if isinstance(value, str) else file
    return params


class Webhooks(Generic[T]):
    """A fake platform calling pairbot: one HTTP session, and a queue whose items are posted
    in order, one at a time, while the fake runs.

    How one item is posted (where, signed how, tried again or not, what is recorded) is the
    platform's ``post``; while ``ready`` says no, the queue waits (call :meth:`wake` when that
    may have changed).

    Args:
        fake: the fake's name, for errors.
        post: posts one item, through :attr:`session`.
        ready: whether queued items may be posted now (default: always).
        timeout: seconds one request may take.
        force_close: a new connection for every request (no keep-alive).
    """

    def __init__(
        self,
        fake: str,
        post: Callable[[T], Awaitable[None]],
        *,
        ready: Callable[[], bool] = lambda: True,
        timeout: float,
        force_close: bool = False,
    ) -> None:
        self._fake = fake
        self._post = post
        self._ready = ready
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._force_close = force_close
        self._queue: deque[T] = deque()
        self._wake = asyncio.Event()
        self._posting = False
        self._session: aiohttp.ClientSession | None = None
        self._sender: asyncio.Task[None] | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The session requests to pairbot go through, open while the fake runs.

        Raises:
            RuntimeError: the fake is not started.
        """
        if self._session is None:
            raise RuntimeError(f"{self._fake} is not started")
        return self._session

    @property
    def pending(self) -> int:
        """Items queued and not yet taken to be posted."""
        return len(self._queue)

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being posted."""
        return not self._queue and not self._posting

    def put(self, item: T) -> None:
        """Queue ``item`` to be posted after those queued before it."""
        self._queue.append(item)
        self._wake.set()

    def wake(self) -> None:
        """Ask ``ready`` again: what it held back may go now."""
        self._wake.set()

    async def start(self) -> None:
        """Open the session and start posting."""
        connector = aiohttp.TCPConnector(force_close=self._force_close)
        self._session = aiohttp.ClientSession(timeout=self._timeout, connector=connector)
        self._sender = asyncio.create_task(self._send(), name=f"{self._fake}-webhooks")

    async def stop(self) -> None:
        """Stop posting (the item in hand is dropped) and close the session."""
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _send(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue and self._ready():
                item = self._queue.popleft()
                self._posting = True
                try:
                    await self._post(item)
                finally:
                    self._posting = False


__all__ = ["LoopbackFake", "Webhooks", "call_params"]
