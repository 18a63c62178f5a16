"""The cluster of one: :class:`bot.core.protocols.Cluster` for a process that is the only
instance on its state (a JSON or SQLite state, or the memory store).

Everything lives in this process's memory, under one lock; a published message is handed to
the subscribers by one dispatcher thread, in order, so a handler runs as it would with the
PostgreSQL cluster (off the publisher's thread, one message at a time).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import secrets
import socket
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from bot.core.models import InstanceBeat
from bot.core.protocols import OnMessage

log = logging.getLogger(__name__)

_SWEEP_EVERY = 1024
"""Claims taken between two sweeps of the ended ones."""
CLAIMS_KEPT = 100_000
"""Claims a local cluster keeps at most: past this, the oldest taken go first. A process alone
keeps each handled message's claim for a day (the runtime's dedupe), which at a few messages
a second would otherwise grow by hundreds of thousands of entries; the providers' own dedupe
keeps fewer still, so an event redelivered after this many others was already beyond it."""


def new_instance_id() -> str:
    """A fresh instance id: the host's name and a random suffix (unique across restarts)."""
    host = socket.gethostname().split(".")[0][:32] or "host"
    return f"{host}-{secrets.token_hex(4)}"


class _Memory:
    """What the instances of one in-memory cluster share, under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.claims: dict[str, tuple[str, datetime]] = {}
        self.taken = 0
        self.counts: dict[str, deque[datetime]] = {}
        self.leases: dict[str, tuple[str, datetime]] = {}
        self.beats: dict[str, InstanceBeat] = {}
        self.members: list[LocalCluster] = []


class LocalCluster:
    """The :class:`~bot.core.protocols.Cluster` of a process that runs alone.

    :meth:`sibling` gives another instance on the same memory: tests run several instances
    in one process with it, and get the same answers the PostgreSQL cluster gives.
    """

    def __init__(self, instance_id: str | None = None, *, _memory: _Memory | None = None) -> None:
        self.instance_id = instance_id or new_instance_id()
        self.in_memory = True
        self._mem = _memory or _Memory()
        self._subscribers: dict[str, list[OnMessage]] = defaultdict(list)
        self._outbox: queue.SimpleQueue[tuple[str, dict[str, str]] | None] = queue.SimpleQueue()
        self._dispatcher: threading.Thread | None = None
        self._closed = False
        with self._mem.lock:
            self._mem.members.append(self)

    def sibling(self, instance_id: str | None = None) -> LocalCluster:
        """Another instance on this one's memory."""
        return LocalCluster(instance_id, _memory=self._mem)

    # --- claims -----------------------------------------------------------------------------

    def claim(self, key: str, *, now: datetime, ttl: timedelta) -> bool:
        mem = self._mem
        with mem.lock:
            held = mem.claims.get(key)
            if held is not None and held[1] > now:
                return False
            mem.claims.pop(key, None)  # a retaken key is the newest
            mem.claims[key] = (self.instance_id, now + ttl)
            mem.taken += 1
            if mem.taken % _SWEEP_EVERY == 0:
                mem.claims = {k: v for k, v in mem.claims.items() if v[1] > now}
            while len(mem.claims) > CLAIMS_KEPT:
                del mem.claims[next(iter(mem.claims))]
            return True

    def keep(self, key: str, *, now: datetime, ttl: timedelta) -> None:
        mem = self._mem
        with mem.lock:
            held = mem.claims.get(key)
            if held is not None and held[0] == self.instance_id:
                mem.claims[key] = (self.instance_id, now + ttl)

    def claimed_until(self, key: str, *, now: datetime) -> datetime | None:
        with self._mem.lock:
            held = self._mem.claims.get(key)
        return held[1] if held is not None and held[1] > now else None

    def unclaim(self, key: str) -> None:
        mem = self._mem
        with mem.lock:
            held = mem.claims.get(key)
            if held is not None and held[0] == self.instance_id:
                del mem.claims[key]

    # --- counters ---------------------------------------------------------------------------

    def bump(self, key: str, *, now: datetime, window: timedelta) -> int:
        with self._mem.lock:
            events = self._mem.counts.setdefault(key, deque())
            while events and now - events[0] >= window:
                events.popleft()
            events.append(now)
            return len(events)

    def clear(self, key: str) -> None:
        with self._mem.lock:
            self._mem.counts.pop(key, None)

    # --- messages ---------------------------------------------------------------------------

    def publish(self, topic: str, message: Mapping[str, str]) -> None:
        with self._mem.lock:
            if self._closed:
                raise RuntimeError("the cluster is closed")
            members = [m for m in self._mem.members if not m._closed]
        for member in members:
            member._post(topic, dict(message))

    def _post(self, topic: str, message: dict[str, str]) -> None:
        with self._mem.lock:
            if self._dispatcher is None:
                self._dispatcher = threading.Thread(
                    target=self._dispatch, name=f"pairbot-cluster-{self.instance_id}", daemon=True
                )
                self._dispatcher.start()
        self._outbox.put((topic, message))

    def subscribe(self, topic: str, handler: OnMessage) -> Callable[[], None]:
        with self._mem.lock:
            self._subscribers[topic].append(handler)

        def stop() -> None:
            with self._mem.lock, contextlib.suppress(ValueError):
                self._subscribers[topic].remove(handler)

        return stop

    def _dispatch(self) -> None:
        while (item := self._outbox.get()) is not None:
            topic, message = item
            with self._mem.lock:
                handlers = list(self._subscribers.get(topic, ()))
            for handler in handlers:
                try:
                    handler(dict(message))
                except Exception:  # one handler's failure must not stop the others
                    log.exception("a cluster subscriber failed on topic %s", topic)

    # --- leases -----------------------------------------------------------------------------

    def hold(self, lease: str, *, now: datetime, ttl: timedelta) -> bool:
        mem = self._mem
        with mem.lock:
            held = mem.leases.get(lease)
            if held is not None and held[0] != self.instance_id and held[1] > now:
                return False
            mem.leases[lease] = (self.instance_id, now + ttl)
            return True

    def release(self, lease: str) -> None:
        mem = self._mem
        with mem.lock:
            held = mem.leases.get(lease)
            if held is not None and held[0] == self.instance_id:
                del mem.leases[lease]

    def holders(self, *, now: datetime) -> dict[str, str]:
        with self._mem.lock:
            return {name: who for name, (who, until) in self._mem.leases.items() if until > now}

    # --- instances --------------------------------------------------------------------------

    def beat(self, *, now: datetime, facts: Mapping[str, object]) -> None:
        mem = self._mem
        with mem.lock:
            last = mem.beats.get(self.instance_id)
            mem.beats[self.instance_id] = InstanceBeat(
                instance_id=self.instance_id,
                started_at=last.started_at if last is not None else now,
                last_beat=now,
                facts=dict(facts),
            )

    def instances(self, *, now: datetime, within: timedelta) -> list[InstanceBeat]:
        with self._mem.lock:
            beats = [b for b in self._mem.beats.values() if now - b.last_beat <= within]
        return sorted(beats, key=lambda b: b.started_at)

    def close(self) -> None:
        mem = self._mem
        with mem.lock:
            if self._closed:
                return
            self._closed = True
            dispatcher = self._dispatcher
            with contextlib.suppress(ValueError):
                mem.members.remove(self)
        self._outbox.put(None)
        if dispatcher is not None and dispatcher is not threading.current_thread():
            dispatcher.join(timeout=5)
