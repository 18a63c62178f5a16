"""Node pairing rules: devices ask to join, the owner approves or rejects, tokens are minted.

A token is returned once, to the caller of :meth:`NodeService.approve`, and stored only as
its SHA-256. Re-pairing a node rotates its token; revoking it makes the token fail at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from bot import codes
from bot.clock import Clock
from bot.errors import UnknownRequestError, UnknownSubjectError
from bot.logs import remember_secret
from bot.models import AuditEvent, NodeRequest, PairedNode
from bot.protocols import StateStore, StateTxn

log = logging.getLogger(__name__)

MAX_FIELD = 128


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSettings:
    """The knobs of node pairing (``nodes:`` in the config)."""

    pending_ttl: timedelta = timedelta(minutes=5)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeAsk:
    """The answer to a node asking to join."""

    request: NodeRequest
    created: bool
    already_paired: bool


class NodeService:
    """Node pairing over a :class:`~bot.protocols.StateStore`."""

    def __init__(
        self, store: StateStore, *, clock: Clock, settings: NodeSettings | None = None
    ) -> None:
        self._store = store
        self._clock = clock
        self.settings = settings or NodeSettings()

    def request(
        self,
        node_id: str,
        *,
        display_name: str = "",
        platform: str = "",
        version: str = "",
        remote: str = "",
    ) -> NodeAsk:
        """Ask to join. A node already pending gets its same request back, unchanged."""
        node_id = _field("nodeId", node_id, required=True)
        display_name = _field("displayName", display_name)
        platform = _field("platform", platform)
        version = _field("version", version)
        remote = _field("remote", remote)
        now = self._clock.now()
        with self._store.transaction() as txn:
            live = self._drop_expired(txn, now, actor="system:expiry")
            paired = any(n.node_id == node_id for n in txn.paired_nodes())
            mine = next((r for r in live if r.node_id == node_id), None)
            if mine is not None:
                return NodeAsk(request=mine, created=False, already_paired=paired)
            taken = {r.request_id for r in live}
            request_id = codes.new_request_id()
            while request_id in taken:
                request_id = codes.new_request_id()
            created = NodeRequest(
                request_id=request_id,
                node_id=node_id,
                display_name=display_name,
                platform=platform,
                version=version,
                created_at=now,
                remote=remote,
            )
            txn.put_node_request(created)
            txn.audit(AuditEvent(ts=now, event="node.request", actor=f"node:{node_id}",
                                 subject=node_id, request_id=request_id, outcome="pending"))
        log.info("node pairing request id=%s node=%s", request_id, node_id)
        return NodeAsk(request=created, created=True, already_paired=paired)

    def approve(self, request_id: str, *, actor: str) -> tuple[PairedNode, str]:
        """Approve a pending request; return the paired node and its new token (shown once)."""
        now = self._clock.now()
        token = codes.new_token()
        remember_secret(token)  # never logged, by any logger (bot/logs.py)
        with self._store.transaction() as txn:
            req = self._live(txn, request_id, now)
            if req is not None:
                old = next((n for n in txn.paired_nodes() if n.node_id == req.node_id), None)
                node = PairedNode(
                    node_id=req.node_id,
                    # a repair request that leaves a field out keeps what the node had
                    display_name=req.display_name or (old.display_name if old else ""),
                    platform=req.platform or (old.platform if old else ""),
                    version=req.version or (old.version if old else ""),
                    token_hash=codes.hash_token(token),
                    created_at=old.created_at if old else req.created_at,
                    approved_at=now,
                    extra=old.extra if old else {},
                )
                txn.put_paired_node(node)
                txn.drop_node_request(req.request_id)
                txn.audit(AuditEvent(ts=now, event="node.approve", actor=actor,
                                     subject=req.node_id, request_id=req.request_id,
                                     outcome="rotated" if old else "approved"))
        if req is None:
            raise UnknownRequestError(f"no pending node request {request_id!r}",
                                      hint="see `pairbot nodes pending`")
        log.info("node approved id=%s node=%s by=%s", req.request_id, req.node_id, actor)
        return node, token

    def reject(self, request_id: str, *, actor: str) -> NodeRequest:
        """Drop a pending request; the node gets no token."""
        now = self._clock.now()
        with self._store.transaction() as txn:
            req = self._live(txn, request_id, now)
            if req is not None:
                txn.drop_node_request(req.request_id)
                txn.audit(AuditEvent(ts=now, event="node.reject", actor=actor,
                                     subject=req.node_id, request_id=req.request_id,
                                     outcome="rejected"))
        if req is None:
            raise UnknownRequestError(f"no pending node request {request_id!r}",
                                      hint="see `pairbot nodes pending`")
        return req

    def revoke(self, node_id: str, *, actor: str) -> PairedNode:
        """Unpair a node: its token stops verifying immediately."""
        now = self._clock.now()
        with self._store.transaction() as txn:
            node = next((n for n in txn.paired_nodes() if n.node_id == node_id), None)
            if node is not None:
                txn.drop_paired_node(node_id)
                txn.audit(AuditEvent(ts=now, event="node.revoke", actor=actor,
                                     subject=node_id, outcome="revoked"))
        if node is None:
            raise UnknownSubjectError(f"no paired node {node_id!r}",
                                      hint="see `pairbot nodes list`")
        return node

    def verify(self, node_id: str, token: str) -> PairedNode | None:
        """Return the paired node if ``token`` is its current token (constant-time compare)."""
        with self._store.transaction() as txn:
            node = next((n for n in txn.paired_nodes() if n.node_id == node_id), None)
        probe = node.token_hash if node is not None else "0" * 64
        ok = codes.token_matches(token, probe)
        return node if ok and node is not None else None

    def touch(self, node_id: str) -> None:
        """Record that a paired node connected now."""
        now = self._clock.now()
        with self._store.transaction() as txn:
            node = next((n for n in txn.paired_nodes() if n.node_id == node_id), None)
            if node is not None:
                txn.put_paired_node(replace(node, last_connected_at=now))

    def pending(self) -> list[NodeRequest]:
        """Return live node requests, oldest first."""
        now = self._clock.now()
        ttl = self.settings.pending_ttl
        with self._store.transaction() as txn:
            live = [r for r in txn.node_requests() if now < r.created_at + ttl]
        return sorted(live, key=lambda r: r.created_at)

    def get_pending(self, request_id: str) -> NodeRequest | None:
        """Return one live request by id (case-insensitive), or None."""
        now = self._clock.now()
        with self._store.transaction() as txn:
            return self._live(txn, request_id, now, drop_expired=False)

    def paired(self) -> list[PairedNode]:
        """Return paired nodes, oldest approval first."""
        with self._store.transaction() as txn:
            return sorted(txn.paired_nodes(), key=lambda n: n.approved_at)

    def prune(self, *, actor: str = "system:scheduler") -> list[NodeRequest]:
        """Drop expired requests (audited); return them."""
        now = self._clock.now()
        with self._store.transaction() as txn:
            before = txn.node_requests()
            live = self._drop_expired(txn, now, actor=actor)
        ids = {r.request_id for r in live}
        return [r for r in before if r.request_id not in ids]

    def _live(
        self, txn: StateTxn, request_id: str, now: datetime, *, drop_expired: bool = True
    ) -> NodeRequest | None:
        wanted = request_id.strip().upper()
        live = (self._drop_expired(txn, now, actor="system:expiry") if drop_expired
                else [r for r in txn.node_requests()
                      if now < r.created_at + self.settings.pending_ttl])
        return next((r for r in live if r.request_id.upper() == wanted), None)

    def _drop_expired(self, txn: StateTxn, now: datetime, *, actor: str) -> list[NodeRequest]:
        live = []
        for req in txn.node_requests():
            if now >= req.created_at + self.settings.pending_ttl:
                txn.drop_node_request(req.request_id)
                txn.audit(AuditEvent(ts=now, event="node.expire", actor=actor,
                                     subject=req.node_id, request_id=req.request_id,
                                     outcome="expired"))
            else:
                live.append(req)
        return live


def _field(name: str, value: str, *, required: bool = False) -> str:
    text = "".join(ch for ch in str(value) if ch.isprintable()).strip()
    if required and not text:
        raise ValueError(f"{name}: required")
    if len(text) > MAX_FIELD:
        raise ValueError(f"{name}: longer than {MAX_FIELD} characters")
    return text
