"""Node decisions across instances: the cluster's ``nodes`` topic.

Several ``pairbot run`` on one state are one bot, but a node's connection is held by one of
them, and the decision on its request may be made on another (its owner chat, its operator
socket, its prune) or by ``pairbot nodes approve`` on a machine with only the database
config. So every decision a gateway delivers is published on the cluster
(:meth:`bot.core.protocols.Cluster.publish`), and every gateway, the deciding one included,
hears it (:class:`Relay`) and does its part:

- ``approved``: the instance holding the request (its asker waits here, or went away from
  here) opens the sealed token with the key derived from the pickup secret it saw
  (:mod:`bot.services.seal`), checks it is the node's current token in the store, and hands
  it to the asker (or holds it for the asker's pickup, as before); then it says ``heard`` or
  ``missed``, which the decider reports. Every other instance keeps the sealed token, which
  it cannot open, for the pending TTL: if the holder dies, the node comes back with its
  pickup secret to any of them and gets its token there (:meth:`Relay.take_sealed`).
- ``rejected``, ``superseded``, ``expired``: the instance holding the request tells its asker.
- ``revoked``: each instance closes that node's connections, unless the store says the node
  is still paired with the token the connection proved (a stale or replayed revocation).

A message never carries a token in the clear (only sealed), nor a pickup secret: the
cluster's messages sit in a table a database administrator can read. Messages are hints, the
store is the truth: a token is delivered only if its hash is the node's current one, so a
replayed or forged approval gives nobody anything.

Message shapes (all values strings): ``{"kind": "decision", "verdict", "nodeId",
"requestId"?, "sealed"?, "from"}``, ``{"kind": "heard" | "missed", "requestId", "nodeId",
"from"}``, ``{"kind": "attached", "requestId", "nodeId", "from"}`` (an asker came back with
its pickup to the instance ``from``: the others let go of its request).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from bot.core.clock import Clock
from bot.core.models import NodeApproval, NodeDecision, NodeVerdict
from bot.core.protocols import Cluster
from bot.gateway.peers import Peers
from bot.services import seal
from bot.services.nodes import NodeService

log = logging.getLogger(__name__)

TOPIC = "nodes"
"""The cluster topic of node decisions."""
OUTCOME_WAIT = 2.0
"""Seconds a decider waits to hear whether the approved asker got its token."""

Message = dict[str, str]


def decision_message(decision: NodeDecision, *, sender: str) -> Message:
    """What is published for ``decision``: never its token, only its sealed form.

    Raises:
        ValueError: an approval with no sealed token (it cannot cross instances).
    """
    if decision.verdict is NodeVerdict.APPROVED and not decision.sealed:
        raise ValueError("an approval crosses instances only with its token sealed")
    message = {
        "kind": "decision",
        "verdict": decision.verdict.value,
        "nodeId": decision.node_id,
        "from": sender,
    }
    if decision.request_id is not None:
        message["requestId"] = decision.request_id
    if decision.sealed:
        message["sealed"] = decision.sealed
    return message


def publish_decisions(
    cluster: Cluster, decisions: Iterable[NodeDecision], *, wait: float = OUTCOME_WAIT
) -> bool | None:
    """Publish ``decisions`` from outside a running bot (the CLI on a shared state) and, if
    one of them approves, wait up to ``wait`` seconds to hear of its asker.

    Returns True if the approved asker got its token, False if the instance holding its
    request keeps it for the asker's pickup, None if no instance answered (none holds the
    request, or none runs) or nothing was approved.
    """
    decisions = list(decisions)
    approved = next((d for d in decisions if d.verdict is NodeVerdict.APPROVED), None)
    answered = threading.Event()
    outcome: list[bool] = []

    def on_message(message: Mapping[str, str]) -> None:
        if approved is None or message.get("requestId") != approved.request_id:
            return
        kind = message.get("kind")
        if kind in ("heard", "missed") and not answered.is_set():
            outcome.append(kind == "heard")
            answered.set()

    stop = cluster.subscribe(TOPIC, on_message) if approved is not None else None
    try:
        for decision in decisions:
            cluster.publish(TOPIC, decision_message(decision, sender=cluster.instance_id))
        if approved is None or not answered.wait(wait):
            return None
        return outcome[0]
    finally:
        if stop is not None:
            stop()


@dataclass(frozen=True, slots=True)
class _Sealed:
    """An approval whose asker is not ours: kept, sealed, for its pickup secret."""

    node_id: str
    sealed: str = field(repr=False)
    until: datetime


class Relay:
    """One gateway's side of the ``nodes`` topic: publishes its decisions, carries out what
    concerns its own connections, keeps sealed approvals for askers who may come back."""

    def __init__(
        self,
        cluster: Cluster,
        *,
        nodes: NodeService,
        peers: Peers,
        clock: Clock,
        on_secret: Callable[[str], None],
        outcome_wait: float = OUTCOME_WAIT,
    ) -> None:
        self._cluster = cluster
        self._nodes = nodes
        self._peers = peers
        self._clock = clock
        self._on_secret = on_secret
        self._outcome_wait = outcome_wait
        self._sealed: dict[str, _Sealed] = {}
        """requestId → a sealed approval whose asker was not ours when it came."""
        self._outcomes: dict[str, asyncio.Future[bool]] = {}
        """requestId → what this instance, the decider, waits to hear of its asker."""
        self._inbox: asyncio.Queue[Message] | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None

    @property
    def instance_id(self) -> str:
        """This instance's id in the cluster."""
        return self._cluster.instance_id

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to the topic; messages are handled on this event loop, one at a time, in
        the order they were published."""
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._inbox = inbox

        def on_message(message: Mapping[str, str]) -> None:  # a thread of the cluster's
            with contextlib.suppress(RuntimeError):  # the loop closed: we are stopping
                loop.call_soon_threadsafe(inbox.put_nowait, dict(message))

        self._consumer = asyncio.create_task(self._consume(inbox), name="pairbot-nodes-relay")
        self._unsubscribe = await asyncio.to_thread(self._cluster.subscribe, TOPIC, on_message)

    async def stop(self) -> None:
        """Unsubscribe and stop handling messages."""
        if self._unsubscribe is not None:
            with contextlib.suppress(Exception):  # a cluster already closed
                await asyncio.to_thread(self._unsubscribe)
            self._unsubscribe = None
        if self._consumer is not None:
            self._consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer
            self._consumer = None
        for future in self._outcomes.values():
            future.cancel()

    async def _consume(self, inbox: asyncio.Queue[Message]) -> None:
        while True:
            message = await inbox.get()
            try:
                await self._handle(message)
            except Exception:  # one bad message or a store hiccup must not stop the relay
                log.exception("gateway: a node message could not be handled")

    # --- deciding ------------------------------------------------------------------------------

    async def deliver(self, decision: NodeDecision) -> None:
        """Carry ``decision`` out here at once, and publish it for the other instances (a
        rejection, an expiry or a revocation: hearing it again here changes nothing more).
        An approval goes through :meth:`deliver_approval`; one with no sealed token can only
        be carried out here."""
        if decision.verdict is NodeVerdict.APPROVED:
            if decision.sealed:
                await self._publish(decision_message(decision, sender=self.instance_id))
            else:
                await self._peers.deliver(decision)
            return
        if decision.verdict is NodeVerdict.REVOKED:
            await self._revoked(decision.node_id)
        else:
            self._sealed.pop(decision.request_id or "", None)
            await self._peers.deliver(decision)
        await self._publish(decision_message(decision, sender=self.instance_id))

    async def deliver_approval(self, approval: NodeApproval) -> bool:
        """Publish what an approval decided (the superseded askers first); True if the
        approved asker got its token within :data:`OUTCOME_WAIT` seconds."""
        *others, approved = approval.decisions()
        for decision in others:
            await self.deliver(decision)
        request_id = approval.request.request_id
        if not approved.sealed:
            return await self._peers.deliver(approved)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._outcomes[request_id] = future
        try:
            message = decision_message(approved, sender=self.instance_id)
            if not await self._publish(message):
                return await self._peers.deliver(approved)
            try:
                return await asyncio.wait_for(asyncio.shield(future), self._outcome_wait)
            except TimeoutError:
                return False
        finally:
            if self._outcomes.get(request_id) is future:
                del self._outcomes[request_id]

    async def _publish(self, message: Message) -> bool:
        try:
            await asyncio.to_thread(self._cluster.publish, TOPIC, message)
        except Exception as exc:  # the cluster's database away: this instance still works
            log.warning(
                "gateway: node %s: could not tell the other instances (%s); carried out here only",
                message.get("nodeId", "?"),
                type(exc).__name__,
            )
            return False
        return True

    # --- hearing -------------------------------------------------------------------------------

    async def _handle(self, message: Message) -> None:
        kind = message.get("kind")
        node_id = message.get("nodeId", "")
        request_id = message.get("requestId", "")
        if not node_id:
            return
        if kind == "decision":
            try:
                verdict = NodeVerdict(message.get("verdict", ""))
            except ValueError:
                log.warning("gateway: a node message with an unknown verdict was ignored")
                return
            if verdict is NodeVerdict.REVOKED:
                await self._revoked(node_id)
            elif not request_id:
                return
            elif verdict is NodeVerdict.APPROVED:
                await self._approved(node_id, request_id, message.get("sealed", ""))
            else:
                self._sealed.pop(request_id, None)
                decision = NodeDecision(verdict=verdict, node_id=node_id, request_id=request_id)
                await self._peers.deliver(decision)
        elif kind in ("heard", "missed") and request_id:
            heard = kind == "heard"
            if heard:  # the token reached its asker: no copy is wanted any more
                self._sealed.pop(request_id, None)
                self._peers.drop_held(request_id)
            future = self._outcomes.get(request_id)
            if future is not None and not future.done():
                future.set_result(heard)
        elif kind == "attached" and request_id and message.get("from") != self.instance_id:
            self._peers.let_go(request_id)

    async def _approved(self, node_id: str, request_id: str, sealed: str) -> None:
        opener = self._peers.opener_of(request_id)
        if opener is None:  # not our asker: keep it, sealed, in case the asker comes here
            if sealed:
                until = self._clock.now() + self._nodes.settings.pending_ttl
                self._sealed[request_id] = _Sealed(node_id, sealed, until)
            return
        token = seal.open_sealed(sealed, opener, node_id=node_id, request_id=request_id)
        if token is None:
            log.warning(
                "node %s: an approval of request %s does not open with its pickup key "
                "(altered, or not for it): ignored",
                node_id,
                request_id,
            )
            return
        if not await self._current(node_id, token):
            return
        approved = NodeDecision(
            verdict=NodeVerdict.APPROVED, node_id=node_id, request_id=request_id, token=token
        )
        heard = await self._peers.deliver(approved)
        await self._publish(
            {
                "kind": "heard" if heard else "missed",
                "requestId": request_id,
                "nodeId": node_id,
                "from": self.instance_id,
            }
        )

    async def _current(self, node_id: str, token: str) -> bool:
        """Whether ``token`` is the node's token in the store now (else the approval was
        replayed, forged, or overtaken by a revocation or a rotation: given to nobody)."""
        if await asyncio.to_thread(self._nodes.holds_token, node_id, token) is not None:
            return True
        log.warning(
            "node %s: an approval whose token is not the node's current one "
            "(replayed, or revoked since): ignored",
            node_id,
        )
        return False

    async def _revoked(self, node_id: str) -> None:
        for request_id in [r for r, s in self._sealed.items() if s.node_id == node_id]:
            del self._sealed[request_id]
        node = await asyncio.to_thread(self._nodes.paired_node, node_id)
        await self._peers.revoke(node_id, current_hash=node.token_hash if node else None)

    # --- askers coming back --------------------------------------------------------------------

    async def take_sealed(self, node_id: str, pickup: str) -> tuple[str, str] | None:
        """The token approved for ``node_id`` whose request's pickup secret is ``pickup``,
        kept sealed here because its asker was elsewhere: (requestId, token), once (the caller
        then says so: :meth:`collected`)."""
        now = self._clock.now()
        opener: seal.Opener | None = None
        for request_id, kept in list(self._sealed.items()):
            if now >= kept.until:
                del self._sealed[request_id]
                continue
            if kept.node_id != node_id:
                continue
            opener = opener or seal.opener(pickup)
            token = seal.open_sealed(kept.sealed, opener, node_id=node_id, request_id=request_id)
            if token is None:
                continue
            del self._sealed[request_id]
            if not await self._current(node_id, token):
                continue
            self._on_secret(token)  # never logged, by any logger
            return request_id, token
        return None

    async def collected(self, request_id: str, node_id: str) -> None:
        """The asker of ``request_id`` took its token here: the others drop their copies."""
        await self._publish(
            {"kind": "heard", "requestId": request_id, "nodeId": node_id, "from": self.instance_id}
        )

    async def attached(self, request_id: str, node_id: str) -> None:
        """The asker of ``request_id`` came back here with its pickup: the decision is ours."""
        await self._publish(
            {
                "kind": "attached",
                "requestId": request_id,
                "nodeId": node_id,
                "from": self.instance_id,
            }
        )

    def sweep(self, now: datetime | None = None) -> None:
        """Forget sealed approvals past the pending TTL."""
        now = now or self._clock.now()
        for request_id in [r for r, s in self._sealed.items() if now >= s.until]:
            del self._sealed[request_id]


__all__ = ["OUTCOME_WAIT", "TOPIC", "Relay", "decision_message", "publish_decisions"]
