"""Node pairing rules: devices ask to join, the owner approves or rejects, tokens are minted.

Every ask is its own request with its own pickup secret (handed to that asker alone, stored
only as a hash), so a decision can reach only the asker the owner saw. A node id that is
already paired can ask again only with proof of its current token (a re-pair, which rotates
the token); a lost device is revoked first. A token is returned once, to the caller of
:meth:`NodeService.approve`, and stored only as its SHA-256 (the approval also carries it
sealed to the request's seal key, for the instance that holds the asker: :mod:`.seal`);
revoking a node makes the token fail at once.

The owner may also hand a device a one-time invite (:meth:`NodeService.invite`): a node that
shows its secret is paired at once (:meth:`NodeService.join`), the invite standing for the
owner's approval. The secret is stored only as its SHA-256; the invite is spent in the same
transaction that pairs the node, by one conditional update, so it pairs one node even when
several race for it; an unknown, spent or expired one pairs nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from bot.core import codes
from bot.core.clock import Clock, iso
from bot.core.durations import INVITE_BOUNDS, bounded, span
from bot.core.errors import (
    AlreadyPairedError,
    BadSignatureError,
    InviteRefusedError,
    NodeRefused,
    PairbotError,
    RateLimitedError,
    UnknownRequestError,
    UnknownSubjectError,
    WrongCredentialError,
)
from bot.core.invites import GatewayAddress, Invitation, SetupCode
from bot.core.models import NodeApproval, NodeAsk, NodeInvite, NodeRequest, PairedNode
from bot.core.protocols import StateStore, StateTxn
from bot.services import keys, seal
from bot.services.keys import KeyProof
from bot.services.requests import RequestSettings, audit, split_expired

log = logging.getLogger(__name__)

MAX_FIELD = 128


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSettings(RequestSettings):
    """The knobs of node pairing (``nodes:`` in the config)."""

    pending_ttl: timedelta = timedelta(minutes=5)
    max_pending_per_address: int = 3
    max_pending: int = 50
    max_pending_per_node: int = 3
    """Live requests one node id may have at once (each from a different asker)."""
    invite_ttl: timedelta = timedelta(minutes=10)
    """How long an invite lasts unless its maker says."""
    max_invites: int = 20
    """Invites neither used nor expired at once."""


class NodeService:
    """Node pairing over a :class:`~bot.core.protocols.StateStore`."""

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
        proof: str | None = None,
        public_key: str | None = None,
        key_proof: KeyProof | None = None,
    ) -> NodeAsk:
        """Ask to join: always a new request, with a pickup secret for this asker alone.

        ``public_key`` is the node's Ed25519 key (kept with the request, then with the paired
        node, which from then on connects by signature only). A node id that is already
        paired is refused (:class:`AlreadyPairedError`) unless the request proves it is that
        node (``proof``, its current token; or ``key_proof``, a signature by its current
        key): then it is a re-pair (``is_repair``), and approving it rotates the token. A
        request that names a paired node id with another public key and no such proof is a
        new request marked ``keyChanged`` (the owner is told; approving it replaces the
        node). Another live request for the same node id does not
        stop this one; it is returned in ``conflicts`` so the owner is warned. The caps (per
        address, per node id, in all) are checked and the request written in one
        transaction, so concurrent askers cannot overshoot them.

        Raises:
            AlreadyPairedError: the node is paired and no proof was given.
            WrongCredentialError: a proof was given and it is not the node's current token.
            RateLimitedError: a cap is full.
        """
        node_id, display_name, platform, version, remote, public_key = _said(
            node_id, display_name, platform, version, remote, public_key
        )
        pickup = codes.new_token()
        now = self._clock.now()
        outcome: NodeRequest | NodeRefused
        with self._store.transaction() as txn:
            # Expired requests are dropped (and audited) even when this ask is refused.
            live = self._drop_expired(txn, now, actor="system:expiry")
            paired = next((n for n in txn.paired_nodes() if n.node_id == node_id), None)
            conflicts = tuple(r for r in live if r.node_id == node_id)
            key_changed = _key_changed(paired, public_key, proof, key_proof)
            outcome = self._refusal(
                live,
                paired,
                node_id,
                remote,
                proof,
                key_proof,
                key_changed=key_changed,
                public_key=public_key or "",
            ) or NodeRequest(
                request_id=_fresh_id(r.request_id for r in live),
                node_id=node_id,
                display_name=display_name,
                platform=platform,
                version=version,
                created_at=now,
                remote=remote,
                pickup_hash=codes.hash_token(pickup),
                is_repair=paired is not None and not key_changed,
                extra={
                    seal.SEAL_KEY: seal.public_key(pickup),
                    **({keys.PUBLIC_KEY: public_key} if public_key else {}),
                    **({keys.KEY_CHANGED: True} if key_changed else {}),
                },
            )
            if isinstance(outcome, NodeRefused):
                audit(
                    txn,
                    now,
                    "node.request",
                    _REFUSED[type(outcome)],
                    actor=_remote_actor(remote),
                    subject=node_id,
                )
            else:
                txn.put_node_request(outcome)
                state = (
                    "repair"
                    if outcome.is_repair
                    else "key_changed"
                    if key_changed
                    else "conflict"
                    if conflicts
                    else "pending"
                )
                audit(
                    txn,
                    now,
                    "node.request",
                    state,
                    actor=f"node:{node_id}",
                    subject=node_id,
                    request_id=outcome.request_id,
                )
        if isinstance(outcome, NodeRefused):
            raise outcome
        log.info(
            "node pairing request id=%s node=%s%s",
            outcome.request_id,
            node_id,
            " (conflicts with another request)" if conflicts else "",
        )
        return NodeAsk(request=outcome, created=True, pickup=pickup, conflicts=conflicts)

    def _refusal(
        self,
        live: list[NodeRequest],
        paired: PairedNode | None,
        node_id: str,
        remote: str,
        proof: str | None,
        key_proof: KeyProof | None,
        *,
        key_changed: bool,
        public_key: str,
    ) -> NodeRefused | None:
        if paired is not None and not key_changed:
            paired_key = keys.key_of(paired.extra)
            if key_proof is not None:
                if paired_key is None or not _signed_by(
                    paired_key, keys.PAIR, key_proof, node_id=node_id, new_key=public_key
                ):
                    return BadSignatureError(f"that is not node {node_id!r}'s signature")
            elif proof is None or paired_key is not None:
                return AlreadyPairedError(
                    f"node {node_id!r} is already paired: connect with its "
                    f"{'key' if paired_key else 'token'}, prove it to ask for a new token, "
                    "or have the owner revoke it"
                )
            elif not codes.token_matches(proof, paired.token_hash):
                return WrongCredentialError(f"that is not node {node_id!r}'s current token")
        settings = self.settings
        if (
            remote
            and sum(1 for r in live if r.remote == remote) >= settings.max_pending_per_address
        ):
            return RateLimitedError("too many pending requests from this address")
        if sum(1 for r in live if r.node_id == node_id) >= settings.max_pending_per_node:
            return RateLimitedError("too many pending requests for this node id")
        if len(live) >= settings.max_pending:
            return RateLimitedError("too many pending requests")
        return None

    def refused(self, event: str, outcome: str, *, remote: str, subject: str = "") -> None:
        """Audit an attempt the gateway refused: its method, why, from where, and the node id
        it named (never what it showed)."""
        now = self._clock.now()
        with self._store.transaction() as txn:
            audit(
                txn,
                now,
                event,
                outcome,
                actor=_remote_actor(remote),
                subject=_field("nodeId", subject) or "-",
            )

    def claim(self, node_id: str, pickup: str) -> NodeRequest | None:
        """Return the live request of ``node_id`` whose pickup secret is ``pickup``, or None.

        Every candidate is compared in constant time; nothing is written.
        """
        now = self._clock.now()
        ttl = self.settings.pending_ttl
        with self._store.transaction() as txn:
            candidates = [
                r
                for r in txn.node_requests()
                if r.node_id == node_id and now < r.expires_at(ttl) and r.pickup_hash
            ]
        found = None
        for req in candidates:
            if codes.token_matches(pickup, req.pickup_hash) and found is None:
                found = req
        return found

    def approve(self, request_id: str, *, actor: str) -> NodeApproval:
        """Approve a pending request; return the paired node and its new token (shown once).

        Other live requests for the same node id are dropped in the same transaction
        (``superseded``): one node id, one approved asker.

        Raises:
            UnknownRequestError: no live request has this id.
            AlreadyPairedError: the node was paired meanwhile and this is no re-pair.
        """
        now = self._clock.now()
        token = codes.new_token()
        outcome: NodeApproval | PairbotError
        with self._store.transaction() as txn:
            req = self._live(txn, request_id, now)
            old = (
                None
                if req is None
                else next((n for n in txn.paired_nodes() if n.node_id == req.node_id), None)
            )
            if req is None:
                outcome = UnknownRequestError(
                    f"no pending node request {request_id!r}", hint="see `pairbot nodes pending`"
                )
            elif old is not None and not req.is_repair and not req.key_changed:
                outcome = AlreadyPairedError(
                    f"node {req.node_id!r} was paired in the meantime; revoke it first "
                    f"(`pairbot nodes revoke {req.node_id}`) if this request is the real one"
                )
            else:
                outcome = self._pair(txn, req, old, token, now, actor)
        if isinstance(outcome, PairbotError):
            raise outcome
        log.info(
            "node approved id=%s node=%s by=%s",
            outcome.request.request_id,
            outcome.node.node_id,
            actor,
        )
        return outcome

    @staticmethod
    def _pair(
        txn: StateTxn,
        req: NodeRequest,
        old: PairedNode | None,
        token: str,
        now: datetime,
        actor: str,
    ) -> NodeApproval:
        node = PairedNode(
            node_id=req.node_id,
            # a repair request that leaves a field out keeps what the node had
            display_name=req.display_name or (old.display_name if old else ""),
            platform=req.platform or (old.platform if old else ""),
            version=req.version or (old.version if old else ""),
            token_hash=codes.hash_token(token),
            created_at=old.created_at if old else req.created_at,
            approved_at=now,
            extra=_with_key(old.extra if old else {}, keys.key_of(req.extra)),
        )
        txn.put_paired_node(node)
        _close(txn, req, now, "node.approve", "rotated" if old else "approved", actor=actor)
        superseded = tuple(r for r in txn.node_requests() if r.node_id == req.node_id)
        for other in superseded:
            _close(txn, other, now, "node.reject", "superseded", actor="system:superseded")
        sealed = seal.request_seal(
            req.extra, token, node_id=req.node_id, request_id=req.request_id
        )
        return NodeApproval(
            node=node, token=token, request=req, superseded=superseded, sealed=sealed
        )

    def reject(self, request_id: str, *, actor: str) -> NodeRequest:
        """Drop a pending request; the node gets no token."""
        now = self._clock.now()
        with self._store.transaction() as txn:
            req = self._live(txn, request_id, now)
            if req is not None:
                _close(txn, req, now, "node.reject", "rejected", actor=actor)
        if req is None:
            raise UnknownRequestError(
                f"no pending node request {request_id!r}", hint="see `pairbot nodes pending`"
            )
        return req

    def revoke(self, node_id: str, *, actor: str) -> PairedNode:
        """Unpair a node: its token stops verifying immediately."""
        now = self._clock.now()
        with self._store.transaction() as txn:
            node = next((n for n in txn.paired_nodes() if n.node_id == node_id), None)
            if node is not None:
                txn.drop_paired_node(node_id)
                audit(txn, now, "node.revoke", "revoked", actor=actor, subject=node_id)
        if node is None:
            raise UnknownSubjectError(
                f"no paired node {node_id!r}", hint="see `pairbot nodes list`"
            )
        return node

    def verify(self, node_id: str, token: str) -> PairedNode | None:
        """Return the paired node if ``token`` is its current token and it proves itself by
        token: a node with a key proves itself by signature only (:meth:`verify_signature`),
        so its token, wherever it leaked, opens nothing."""
        node = self.holds_token(node_id, token)
        return node if node is not None and keys.key_of(node.extra) is None else None

    def holds_token(self, node_id: str, token: str) -> PairedNode | None:
        """Return the paired node if ``token`` is its current token (constant-time compare),
        keyed or not: whether an approval carried this node's token, not a login."""
        with self._store.transaction() as txn:
            node = next((n for n in txn.paired_nodes() if n.node_id == node_id), None)
        probe = node.token_hash if node is not None else "0" * 64
        ok = codes.token_matches(token, probe)
        return node if ok and node is not None else None

    def verify_signature(self, node_id: str, proof: KeyProof) -> PairedNode | None:
        """Return the paired node if ``proof`` is its key's signature for ``node.connect``
        over this nonce and certificate."""
        node = self.paired_node(node_id)
        key = keys.key_of(node.extra) if node is not None else None
        if node is None or key is None:
            return None
        return node if _signed_by(key, keys.CONNECT, proof, node_id=node_id) else None

    def paired_node(self, node_id: str) -> PairedNode | None:
        """Return the paired node ``node_id`` as the store has it now, or None."""
        with self._store.transaction() as txn:
            return next((n for n in txn.paired_nodes() if n.node_id == node_id), None)

    def touch(self, node_id: str) -> None:
        """Record that a paired node connected now."""
        now = self._clock.now()
        with self._store.transaction() as txn:
            node = next((n for n in txn.paired_nodes() if n.node_id == node_id), None)
            if node is not None:
                txn.put_paired_node(replace(node, last_connected_at=now))

    # --- one-time invites -----------------------------------------------------------------

    def invite(
        self,
        address: GatewayAddress,
        *,
        actor: str,
        lasting: timedelta | None = None,
        name: str = "",
    ) -> Invitation:
        """Make a one-time invite for a device to join through the gateway at ``address``;
        return it with its setup code, shown once (only the secret's hash is stored).

        It lasts ``lasting`` (:attr:`NodeSettings.invite_ttl` if None), within
        :data:`~bot.core.durations.INVITE_BOUNDS`; ``name`` is what the owner calls the device
        (the paired node's name). Audited (``node.invite`` ``created``), never with its secret.

        Raises:
            ValueError: ``lasting`` is out of bounds, or ``name`` too long (one line; the
                caller names its argument).
            RateLimitedError: :attr:`NodeSettings.max_invites` invites are live.
        """
        lasting = bounded(self.settings.invite_ttl if lasting is None else lasting, *INVITE_BOUNDS)
        name = _field("name", name)
        secret = codes.new_token()
        now = self._clock.now()
        made: NodeInvite | RateLimitedError
        with self._store.transaction() as txn:
            live = self._drop_expired_invites(txn, now, actor="system:expiry")
            if sum(1 for i in live if i.live(now)) >= self.settings.max_invites:
                made = RateLimitedError(
                    f"{self.settings.max_invites} invites are live already: wait for one to "
                    "be used or to expire"
                )
            else:
                made = NodeInvite(
                    invite_id=_fresh_id(i.invite_id for i in live),
                    secret_hash=codes.hash_token(secret),
                    name=name,
                    created_at=now,
                    expires_at=now + lasting,
                )
                txn.put_invite(made)
                audit(
                    txn,
                    now,
                    "node.invite",
                    "created",
                    actor=actor,
                    subject=name or "-",
                    request_id=made.invite_id,
                    detail={"expiresAt": iso(made.expires_at)},
                )
        if isinstance(made, RateLimitedError):
            raise made
        log.info("node invite made id=%s by=%s (for %s)", made.invite_id, actor, span(lasting))
        return Invitation(invite=made, code=SetupCode(address=address, secret=secret))

    def join(
        self,
        node_id: str,
        secret: str,
        *,
        display_name: str = "",
        platform: str = "",
        version: str = "",
        remote: str = "",
        public_key: str | None = None,
    ) -> NodeApproval:
        """Pair ``node_id`` at once with the invite whose secret is ``secret``, spending it.

        One transaction finds the invite by its secret's hash, spends it (a conditional
        update: of several nodes racing for it, one wins) and pairs the node as an approval
        would (its name the invite's, else the node's; other requests for the node id are
        superseded). Audited: ``node.invite`` ``used``, then ``node.approve`` by
        ``invite:<id>``; a refusal is ``node.invite`` ``refused`` with why (``unknown``,
        ``used``, ``expired``), never the secret.

        Raises:
            InviteRefusedError: no invite has this secret, or it is spent or expired (one
                message for all three).
            AlreadyPairedError: the node id is paired (the invite is left unspent: revoke
                the node first, or join under another id).
        """
        node_id, display_name, platform, version, remote, public_key = _said(
            node_id, display_name, platform, version, remote, public_key
        )
        secret_hash = codes.hash_token(secret)
        token = codes.new_token()
        now = self._clock.now()
        outcome: NodeApproval | NodeRefused
        with self._store.transaction() as txn:
            found = txn.invite_with_hash(secret_hash)
            self._drop_expired_invites(txn, now, actor="system:expiry")
            self._drop_expired(txn, now, actor="system:expiry")
            paired = any(n.node_id == node_id for n in txn.paired_nodes())
            why = _invite_refusal(found, now)
            if found is not None and why is None and paired:
                outcome = AlreadyPairedError(
                    f"node {node_id!r} is already paired: have the owner revoke it first, "
                    "or join under another node id"
                )
                audit(
                    txn,
                    now,
                    "node.request",
                    "already_paired",
                    actor=_remote_actor(remote),
                    subject=node_id,
                    request_id=found.invite_id,
                )
            elif (
                found is None
                or why is not None
                or not txn.spend_invite(found.invite_id, node_id=node_id, at=now)
            ):
                why = why or "used"
                outcome = InviteRefusedError(why)
                audit(
                    txn,
                    now,
                    "node.invite",
                    "refused",
                    actor=_remote_actor(remote),
                    subject=node_id,
                    request_id=found.invite_id if found is not None else None,
                    detail={"reason": why},
                )
            else:
                audit(
                    txn,
                    now,
                    "node.invite",
                    "used",
                    actor=_remote_actor(remote),
                    subject=node_id,
                    request_id=found.invite_id,
                )
                req = NodeRequest(
                    request_id=found.invite_id,
                    node_id=node_id,
                    display_name=found.name or display_name,
                    platform=platform,
                    version=version,
                    created_at=now,
                    remote=remote,
                    extra={keys.PUBLIC_KEY: public_key} if public_key else {},
                )
                outcome = self._pair(txn, req, None, token, now, f"invite:{found.invite_id}")
        if isinstance(outcome, NodeRefused):
            raise outcome
        log.info(
            "node joined with an invite id=%s node=%s from=%s",
            outcome.request.request_id,
            node_id,
            remote or "?",
        )
        return outcome

    def invites(self) -> list[NodeInvite]:
        """Return the invites neither used nor expired, oldest first."""
        now = self._clock.now()
        with self._store.transaction() as txn:
            return [i for i in txn.invites() if i.live(now)]

    def _drop_expired_invites(
        self, txn: StateTxn, now: datetime, *, actor: str
    ) -> list[NodeInvite]:
        """Drop the invites past their time, auditing ``expired`` each that was never used
        (once: the drop that removed it); return the rest."""
        kept = []
        for invite in txn.invites():
            if now < invite.expires_at:
                kept.append(invite)
            elif txn.drop_invite(invite.invite_id) and invite.used_at is None:
                audit(
                    txn,
                    now,
                    "node.invite",
                    "expired",
                    actor=actor,
                    subject=invite.name or "-",
                    request_id=invite.invite_id,
                )
        return kept

    def pending(self) -> list[NodeRequest]:
        """Return live node requests, oldest first."""
        now = self._clock.now()
        with self._store.transaction() as txn:
            _, live = split_expired(txn.node_requests(), now=now, ttl=self.settings.pending_ttl)
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
        """Drop expired requests and invites (audited); return the requests."""
        now = self._clock.now()
        with self._store.transaction() as txn:
            before = txn.node_requests()
            live = self._drop_expired(txn, now, actor=actor)
            self._drop_expired_invites(txn, now, actor=actor)
        ids = {r.request_id for r in live}
        return [r for r in before if r.request_id not in ids]

    def _live(
        self, txn: StateTxn, request_id: str, now: datetime, *, drop_expired: bool = True
    ) -> NodeRequest | None:
        wanted = request_id.strip().upper()
        live = (
            self._drop_expired(txn, now, actor="system:expiry")
            if drop_expired
            else split_expired(txn.node_requests(), now=now, ttl=self.settings.pending_ttl)[1]
        )
        return next((r for r in live if r.request_id.upper() == wanted), None)

    def _drop_expired(self, txn: StateTxn, now: datetime, *, actor: str) -> list[NodeRequest]:
        expired, live = split_expired(txn.node_requests(), now=now, ttl=self.settings.pending_ttl)
        for req in expired:
            _close(txn, req, now, "node.expire", "expired", actor=actor)
        return live


def _close(
    txn: StateTxn, req: NodeRequest, now: datetime, event: str, outcome: str, *, actor: str
) -> None:
    """Drop a request (approved, rejected, superseded, expired) and audit how it ended."""
    txn.drop_node_request(req.request_id)
    audit(txn, now, event, outcome, actor=actor, subject=req.node_id, request_id=req.request_id)


_REFUSED: dict[type[NodeRefused], str] = {
    AlreadyPairedError: "already_paired",
    WrongCredentialError: "wrong_token",
    RateLimitedError: "capped",
    BadSignatureError: "bad_signature",
}
"""The audit outcome of each refusal of a node's request."""


def _fresh_id(taken: Iterable[str]) -> str:
    """A new request (or invite) id that is none of ``taken``."""
    ids = set(taken)
    fresh = codes.new_request_id()
    while fresh in ids:
        fresh = codes.new_request_id()
    return fresh


def _said(
    node_id: str,
    display_name: str,
    platform: str,
    version: str,
    remote: str,
    public_key: str | None,
) -> tuple[str, str, str, str, str, str | None]:
    """What an asker says of itself, checked: printable, bounded, a key that is one.

    Raises:
        ValueError: naming the field.
    """
    return (
        _field("nodeId", node_id, required=True),
        _field("displayName", display_name),
        _field("platform", platform),
        _field("version", version),
        _field("remote", remote),
        keys.parse_public_key(public_key) if public_key else None,
    )


def _invite_refusal(invite: NodeInvite | None, now: datetime) -> str | None:
    """Why an invite shown at ``now`` pairs nothing (for the audit), or None if it pairs."""
    if invite is None:
        return "unknown"
    if invite.used_at is not None:
        return "used"
    return None if now < invite.expires_at else "expired"


def _key_changed(
    paired: PairedNode | None,
    public_key: str | None,
    proof: str | None,
    key_proof: KeyProof | None,
) -> bool:
    """Whether a request names a paired node id with another key and proves nothing: a new
    device (or someone else) for that id, for the owner to decide on."""
    if paired is None or public_key is None or proof is not None or key_proof is not None:
        return False
    return public_key != keys.key_of(paired.extra)


def _signed_by(
    key: str, purpose: str, proof: KeyProof, *, node_id: str, new_key: str = ""
) -> bool:
    message = keys.signed_message(
        purpose,
        nonce=proof.nonce,
        node_id=node_id,
        fingerprint=proof.fingerprint,
        new_key=new_key,
    )
    return keys.verify(key, proof.signature, message)


def _with_key(extra: Mapping[str, Any], key: str | None) -> dict[str, Any]:
    """A paired node's ``extra`` with its public key as the approved request named it
    (none: a token node)."""
    kept = {k: v for k, v in extra.items() if k != keys.PUBLIC_KEY}
    return {**kept, keys.PUBLIC_KEY: key} if key else kept


def _remote_actor(remote: str) -> str:
    """Who an audit line says acted, for a peer of the gateway: its address."""
    return f"remote:{remote or '?'}"


def _field(name: str, value: str, *, required: bool = False) -> str:
    text = "".join(ch for ch in str(value) if ch.isprintable()).strip()
    if required and not text:
        raise ValueError(f"{name}: required")
    if len(text) > MAX_FIELD:
        raise ValueError(f"{name}: longer than {MAX_FIELD} characters")
    return text
