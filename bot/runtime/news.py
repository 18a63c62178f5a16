"""News between the same provider on the instances of pairbot on one state, over the cluster.

Behind a load balancer a platform hands an event to whichever instance the balancer picks,
while another instance may be the one that needs it: WhatsApp posts the status of a message
to any instance, not to the one that sent it and waits for it. A provider that says so
(:class:`~bot.core.protocols.HasPeers`) is handed a :class:`ClusterPeers`, which publishes
what it is told on the cluster topic ``news:<provider>`` and hands what the other instances
published to the provider's :meth:`~bot.core.protocols.HasPeers.heard`, on the event loop.

News is a hint that saves waiting, never a decision: it goes out from a bounded queue by one
task, in order, and a full queue drops the oldest (logged once) rather than slow the
provider down. On a JSON or SQLite state the cluster is this process alone and nobody hears.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from bot.core.protocols import Cluster, HasPeers

_T = TypeVar("_T")

log = logging.getLogger(__name__)

QUEUE = 1_000
"""News waiting to go out, at most; past that the oldest is dropped."""
FROM = "from"
"""The field every published news carries: the instance that told it (not handed on)."""


def topic(provider: str) -> str:
    """The cluster topic of ``provider``'s news (a provider name: no secret)."""
    return f"news:{provider}"


class ClusterPeers:
    """The :class:`~bot.core.protocols.Peers` of one provider, over the cluster.

    Args:
        name: the provider's name (the topic is :func:`topic` of it).
        provider: the provider that tells and hears.
        cluster: the cluster the instances share.
        size: news waiting to go out, at most.
    """

    def __init__(
        self, name: str, provider: HasPeers, *, cluster: Cluster, size: int = QUEUE
    ) -> None:
        self.name = name
        self._topic = topic(name)
        self._provider = provider
        self._cluster = cluster
        self._size = size
        self._queue: deque[dict[str, str]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._dropped = 0
        self._failing = False

    async def start(self) -> None:
        """Listen to the other instances' news, then start telling: the provider is met."""
        loop = asyncio.get_running_loop()
        me = self._cluster.instance_id

        def on_message(message: dict[str, str]) -> None:  # a thread of the cluster's
            if message.get(FROM) != me:
                loop.call_soon_threadsafe(self._hear, message)

        self._unsubscribe = await self._call(self._cluster.subscribe, self._topic, on_message)
        self._task = asyncio.create_task(self._send_forever(), name=f"pairbot-news-{self.name}")
        self._provider.meet(self)

    async def stop(self) -> None:
        """Stop telling (what waits is dropped) and stop listening."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        stop, self._unsubscribe = self._unsubscribe, None
        if stop is not None:
            with contextlib.suppress(Exception):
                await self._call(stop)

    def tell(self, news: Mapping[str, str]) -> None:
        """Queue ``news`` for the other instances; drop the oldest waiting if full."""
        if len(self._queue) >= self._size:
            self._queue.popleft()
            self._dropped += 1
            if self._dropped == 1:
                log.warning(
                    "%s: news for the other instances is dropped (%d waiting): the cluster "
                    "is slow or away; they wait for what it would have told",
                    self.name,
                    self._size,
                )
        self._queue.append({**news, FROM: self._cluster.instance_id})
        self._wake.set()

    @property
    def waiting(self) -> int:
        """News queued and not yet published."""
        return len(self._queue)

    def _hear(self, message: Mapping[str, str]) -> None:
        news = {key: value for key, value in message.items() if key != FROM}
        try:
            self._provider.heard(news)
        except Exception as exc:  # one bad news must not stop the next
            log.warning(
                "%s: news from another instance not read (%s)", self.name, type(exc).__name__
            )

    async def _send_forever(self) -> None:
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            news = self._queue[0]
            try:
                await self._call(self._cluster.publish, self._topic, news)
            except Exception as exc:  # news is a hint: it is not retried
                if not self._failing:
                    log.warning(
                        "%s: news for the other instances not published (%s)",
                        self.name,
                        type(exc).__name__,
                    )
                self._failing = True
            else:
                self._failing = False
                self._dropped = 0
            if self._queue and self._queue[0] is news:
                self._queue.popleft()

    async def _call(self, call: Callable[..., _T], *args: Any) -> _T:
        """Call the cluster on the loop when it waits on nothing, else on a thread."""
        if self._cluster.in_memory:
            return call(*args)
        return await asyncio.to_thread(call, *args)


__all__ = ["FROM", "QUEUE", "ClusterPeers", "topic"]
