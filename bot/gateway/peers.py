"""The gateway's peers, and who hears what: each decision goes to the one it concerns.

Every ``node.pair.request`` is bound to the connection that made it. A request's decision
goes to that connection only; if it went away, an approval's token is held in memory (never
on disk) for the pending TTL, for whoever comes back showing the request's pickup secret. A
revocation goes to the node's own connections, which are then closed. A decision that
reaches nobody who waited for it (the asker left, or the send failed) is logged as a warning
with the request and node ids, never with the token.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bot.core import codes
from bot.core.clock import Clock
from bot.core.models import NodeDecision, NodeRequest, NodeVerdict
from bot.gateway import frames
from bot.gateway.frames import Conn
from bot.services import seal

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Asked:
    """A request handed out (or come back for) here and not yet decided."""

    node_id: str
    until: datetime
    pickup_hash: str = field(repr=False)
    opener: seal.Opener | None = field(repr=False)
    """Opens the request's sealed token (derived from the pickup secret this gateway saw)."""


@dataclass(frozen=True, slots=True)
class _Held:
    """A token approved while its asker was away: only the pickup secret collects it."""

    node_id: str
    token: str = field(repr=False)
    pickup_hash: str = field(repr=False)
    until: datetime


class Peers:
    """The connections of one gateway, the askers among them, and the tokens held for askers
    who went away."""

    def __init__(
        self, *, clock: Clock, pending_ttl: timedelta, on_secret: Callable[[str], None]
    ) -> None:
        self._clock = clock
        self._pending_ttl = pending_ttl
        self._on_secret = on_secret
        """Told every token before it is sent: the logs never show it."""
        self.conns: set[Conn] = set()
        self._askers: dict[str, Conn] = {}
        """requestId → the connection that hears its decision."""
        self._asked: dict[str, _Asked] = {}
        """requestId → each request handed out here (or come back for) and not yet decided."""
        self._held: dict[str, _Held] = {}
        """requestId → a token approved while the asker was away."""

    def attach(self, conn: Conn, req: NodeRequest, pickup: str | None = None) -> None:
        """Make ``conn`` the one that hears ``req``'s decision. ``pickup``, the request's
        pickup secret as the asker showed it, makes the key that opens its sealed token (kept
        from an earlier attach when not given)."""
        self._askers[req.request_id] = conn
        conn.asked[req.node_id] = req.request_id
        before = self._asked.get(req.request_id)
        opener = (
            seal.opener(pickup)
            if pickup is not None
            else before.opener
            if before is not None
            else None
        )
        self._asked[req.request_id] = _Asked(
            req.node_id, req.expires_at(self._pending_ttl), req.pickup_hash, opener
        )

    def opener_of(self, request_id: str) -> seal.Opener | None:
        """The key that opens ``request_id``'s sealed token, if its asker is this gateway's
        (waiting here, or gone away from here and not yet back elsewhere)."""
        asked = self._asked.get(request_id)
        return asked.opener if asked is not None else None

    def let_go(self, request_id: str) -> None:
        """Another instance has the asker of ``request_id`` now: its decision is not ours."""
        self._asked.pop(request_id, None)
        self._askers.pop(request_id, None)

    def drop_held(self, request_id: str) -> None:
        """The token held for ``request_id`` was collected elsewhere: forget it."""
        self._held.pop(request_id, None)

    def add(self, conn: Conn) -> None:
        """A new connection."""
        self.conns.add(conn)

    def remove(self, conn: Conn) -> None:
        """``conn`` closed: its requests wait for their asker to come back with the pickup."""
        self.conns.discard(conn)
        for request_id in [r for r, c in self._askers.items() if c is conn]:
            del self._askers[request_id]

    def waiting(self, conn: Conn) -> bool:
        """Whether ``conn`` waits for a decision."""
        return any(c is conn for c in self._askers.values())

    def connected_nodes(self) -> set[str]:
        """The node ids proved on a connection (``node.connect``)."""
        return {c.node_id for c in self.conns if c.node_id}

    async def broadcast_operators(self, event: str, payload: dict[str, Any]) -> None:
        """Send an event to every operator connection."""
        for conn in [c for c in self.conns if c.operator]:
            await conn.send(frames.event(event, payload))

    async def deliver(self, decision: NodeDecision) -> bool:
        """Tell ``decision`` to the one it concerns; True if it heard.

        A request's decision goes to its asker only; an approval whose asker is not there is
        held for the request's pickup secret (if it has one) for the pending TTL. Only a
        request handed out here and not yet decided has someone to miss the decision; one
        decided before, or asked of another process, is passed over in silence.
        """
        request_id = decision.request_id
        if request_id is None:
            return await self._revoke(decision)
        if decision.token is not None:
            self._on_secret(decision.token)  # never logged, by any logger
        asked = self._asked.pop(request_id, None)
        waited = asked is not None
        asker = self._askers.pop(request_id, None)
        if asker is not None and await asker.send(frames.resolved(decision)):
            return True
        held = ""
        pickup_hash = decision.pickup_hash or (asked.pickup_hash if asked is not None else "")
        if decision.verdict is NodeVerdict.APPROVED and decision.token and pickup_hash:
            until = self._clock.now() + self._pending_ttl
            self._held[request_id] = _Held(decision.node_id, decision.token, pickup_hash, until)
            held = "; its token is held for the asker's pickup secret"
        if asker is not None or waited:
            log.warning(
                "node %s: %s on request %s not delivered: %s%s",
                decision.node_id,
                decision.verdict.value,
                request_id,
                "the send failed" if asker is not None else "its asker is gone",
                held,
            )
        return False

    async def _revoke(self, decision: NodeDecision) -> bool:
        """Drop any token held for the node; tell and close the node's connections."""
        return await self.revoke(decision.node_id, current_hash=None)

    async def revoke(self, node_id: str, *, current_hash: str | None) -> bool:
        """Drop the tokens held for ``node_id`` and close its connections, all but those
        proved with its current token (``current_hash``: None when it is paired no more);
        True if a closed connection heard why."""
        for request_id in [
            r
            for r, h in self._held.items()
            if h.node_id == node_id
            and (current_hash is None or not codes.token_matches(h.token, current_hash))
        ]:
            del self._held[request_id]
        decision = NodeDecision.revocation(node_id)
        heard = False
        for conn in [
            c
            for c in self.conns
            if c.node_id == node_id and (current_hash is None or c.token_hash != current_hash)
        ]:
            if await conn.send(frames.resolved(decision)):
                heard = True
            else:
                log.warning("node %s: revoked, and the send to its connection failed", node_id)
            await conn.ws.close(code=4001, message=b"revoked")
        return heard

    def take_held(self, node_id: str, pickup: str) -> tuple[str, str] | None:
        """Pop the token held for ``node_id`` whose pickup secret is ``pickup`` (single use;
        every held entry of the node is compared in constant time)."""
        now = self._clock.now()
        found: tuple[str, str] | None = None
        for request_id, held in list(self._held.items()):
            if now >= held.until:
                del self._held[request_id]
            elif (
                held.node_id == node_id
                and codes.token_matches(pickup, held.pickup_hash)
                and found is None
            ):
                found = (request_id, held.token)
        if found is not None:
            del self._held[found[0]]
        return found

    async def sweep(self) -> None:
        """Tell waiting nodes their request expired, however it left the store.

        The scheduled prune tells them too, but a request can also be dropped as expired on
        the way by another request or an approval (or by another process), and then nothing
        else would: the node would wait forever.
        """
        now = self._clock.now()
        for request_id, held in list(self._held.items()):
            if now >= held.until:
                del self._held[request_id]
        for request_id, asked in list(self._asked.items()):
            if now < asked.until:
                continue
            expired = NodeDecision(
                verdict=NodeVerdict.EXPIRED, node_id=asked.node_id, request_id=request_id
            )
            await self.deliver(expired)
