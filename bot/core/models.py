"""The values that flow between layers: frozen, slotted, keyword-only."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from bot.core.clock import iso


class DmPolicy(StrEnum):
    """What a provider does with a direct message from someone not yet allowed."""

    PAIRING = "pairing"
    ALLOWLIST = "allowlist"
    OPEN = "open"
    DISABLED = "disabled"


class UnpairedResponse(StrEnum):
    """What a stranger who writes to a provider in pairing mode is sent."""

    CODE = "code"
    """Their pairing code, with what to do with it (the default)."""
    SILENT = "silent"
    """Nothing at all, ever: the request is recorded and the owners are told."""
    CUSTOM = "custom"
    """The config's own text (``messages.stranger``), its placeholders filled in."""


class ChatKind(StrEnum):
    """The kind of chat a message arrived in. Only ``dm`` can create a pairing request."""

    DM = "dm"
    GROUP = "group"
    CHANNEL = "channel"


@dataclass(frozen=True, slots=True, kw_only=True)
class Button:
    """An inline button; pressing it sends ``command`` back as if the owner had typed it."""

    label: str
    command: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Inbound:
    """One message (or button press) as a provider hands it to the core.

    ``sender_id`` is the platform's immutable id (never a username or display name);
    ``sender_name`` is whatever the sender calls themselves and is untrusted.
    """

    provider: str
    chat_id: str
    chat_kind: ChatKind
    sender_id: str
    text: str
    sender_name: str = ""
    message_id: str | None = None
    is_button: bool = False
    meta: Mapping[str, str] = field(default_factory=dict)
    sent_at: datetime | None = None
    """When the platform says the message was sent (to ignore a backlog after downtime)."""
    media: bool = False
    """The message carries something besides text (a photo, a file, a sticker, a voice note);
    ``text`` is its caption, or empty. From a stranger it is a contact attempt like any text."""

    @classmethod
    def dm(
        cls,
        provider: str,
        sender_id: str,
        text: str,
        *,
        chat_id: str | None = None,
        sender_name: str = "",
        message_id: str | None = None,
        meta: Mapping[str, str] | None = None,
    ) -> Inbound:
        """A direct message from ``sender_id``, in the chat of the same id unless ``chat_id``
        says: what tests and benchmarks hand the core without a platform in between."""
        return cls(
            provider=provider,
            chat_id=sender_id if chat_id is None else chat_id,
            chat_kind=ChatKind.DM,
            sender_id=sender_id,
            text=text,
            sender_name=sender_name,
            message_id=message_id,
            meta=meta or {},
        )


FOREVER = datetime.max.replace(tzinfo=UTC)
"""When a grant without an end ends: later than any time there is. What
:meth:`bot.core.protocols.StateStore.allowed_until` answers for a sender allowed for good (the
one value compared by identity on the gate's path); never stored (a store keeps no end)."""


class Expiring:
    """A request, of a stranger or of a node: it stops being approvable a TTL after it was
    made (the TTL is the service's setting, not the request's)."""

    __slots__ = ()
    created_at: datetime

    def expires_at(self, ttl: timedelta) -> datetime:
        """Return when this request stops being approvable (TTL counts from ``created_at``)."""
        return self.created_at + ttl


HELD_TEXT_LIMIT = 4096
"""The longest text a pending stranger's message may have (in UTF-8 bytes) to be held."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldMessage:
    """A message a stranger wrote while pending, kept to be handed to the handler once they
    are approved (``pairing.hold_messages``). Its text is message text: never logged, never
    audited, never in a repr."""

    text: str = field(repr=False)
    at: datetime
    """When it arrived."""
    name: str = ""
    """The name the sender gave with it (untrusted), for the handler."""

    def as_json(self) -> dict[str, str]:
        """The stored form (what :meth:`read_all` reads back): ``{text, at, name?}``."""
        out = {"text": self.text, "at": iso(self.at)}
        if self.name:
            out["name"] = self.name
        return out

    @classmethod
    def read_all(
        cls, raw: Any, where: str, fail: Callable[[str, str], Exception]
    ) -> tuple[HeldMessage, ...]:
        """Held messages as stored: a list of :meth:`as_json` forms (None: none).

        One not so raises ``fail(field, problem)``, the field named under ``where`` (never
        the message's text): each store and reader makes its own error.
        """
        if raw is None:
            return ()
        if not isinstance(raw, list):
            raise fail(where, "must be a list")
        held = []
        for i, entry in enumerate(raw):
            at = f"{where}[{i}]"
            if not isinstance(entry, dict):
                raise fail(at, "must be an object")
            text, when, name = entry.get("text"), entry.get("at"), entry.get("name", "")
            if not isinstance(text, str):
                raise fail(f"{at}.text", "must be a string")
            if not isinstance(name, str):
                raise fail(f"{at}.name", "must be a string")
            try:
                parsed = datetime.fromisoformat(when) if isinstance(when, str) else None
            except ValueError:
                parsed = None
            if parsed is None:
                raise fail(f"{at}.at", "must be an ISO-8601 time string")
            when_utc = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
            held.append(cls(text=text, at=when_utc, name=name))
        return tuple(held)


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingRequest(Expiring):
    """A stranger waiting for the owner's approval (one entry of ``<provider>-pairing.json``)."""

    provider: str
    id: str
    code: str
    created_at: datetime
    last_seen_at: datetime
    meta: Mapping[str, str] = field(default_factory=dict)
    last_sent_at: datetime | None = None
    held: tuple[HeldMessage, ...] = field(default=(), repr=False)
    """The stranger's messages kept for the handler, oldest first (``pairing.hold_messages``):
    they move to the approval's notice, and go when the request is rejected or expires."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Keys pairbot does not know, kept as they were so other tools' data survives a rewrite."""

    def as_json(self) -> dict[str, Any]:
        """The public JSON view (``pairbot pairing list --json``)."""
        return {
            "provider": self.provider,
            "id": self.id,
            "code": self.code,
            "createdAt": iso(self.created_at),
            "lastSeenAt": iso(self.last_seen_at),
            "meta": dict(self.meta),
        }

    def display_name(self) -> str:
        """Return the name the sender gave, best effort (untrusted)."""
        return self.name_in(self.meta)

    @staticmethod
    def name_in(meta: Mapping[str, str]) -> str:
        """Return the name a sender gave in a message's ``meta``, best effort (untrusted)."""
        full = " ".join(p for p in (meta.get("firstName", ""), meta.get("lastName", "")) if p)
        return meta.get("name") or full or meta.get("username") or meta.get("tag") or ""


class RequestOutcome(StrEnum):
    """What :meth:`PairingService.request` did."""

    CREATED = "created"
    PENDING = "pending"
    CAPPED = "capped"
    ALLOWED = "allowed"
    """The sender is on the stored allowlist: approved by another process a moment before,
    whose grant this process's gate had not heard of yet. Their message is an allowed one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AskView:
    """What a stranger's ask reads before deciding (:meth:`StateTxn.ask_view`): the sender's
    pending request, whether the stored allowlist lists them (and until when), the provider's
    pending count."""

    request: PendingRequest | None
    allowed: bool
    pending: int
    allowed_end: datetime | None = None
    """When the sender's grant ends, if the allowlist lists them with one that ends."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestResult:
    """The answer to a stranger's message: their request, and whether to (re)send the code."""

    outcome: RequestOutcome
    request: PendingRequest | None
    send_code: bool


PUBLIC_KEY = "publicKey"
"""The key of a node request's and a paired node's ``extra`` holding the node's Ed25519
public key (:mod:`bot.services.keys`)."""
KEY_CHANGED = "keyChanged"
"""The key of a node request's ``extra`` saying it names a paired node id with another key
and proves nothing (approving it replaces that node)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeRequest(Expiring):
    """A device asking to join (one entry of ``nodes/pending.json``)."""

    request_id: str
    node_id: str
    display_name: str
    platform: str
    version: str
    created_at: datetime
    remote: str = ""
    pickup_hash: str = field(default="", repr=False)
    """SHA-256 of the pickup secret handed to the asker alone: only whoever shows it may come
    back for this request's decision (and its token)."""
    is_repair: bool = False
    """Asked for a node that is already paired, by a caller that proved it holds the node's
    current token: approving it rotates the token."""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key_changed(self) -> bool:
        """It names a paired node id with another public key, and proved nothing."""
        return self.extra.get(KEY_CHANGED) is True

    def as_json(self) -> dict[str, Any]:
        """The public JSON view (CLI ``--json``, gateway ``node.pair.list``); no pickup hash."""
        return {
            "requestId": self.request_id,
            "nodeId": self.node_id,
            "displayName": self.display_name,
            "platform": self.platform,
            "version": self.version,
            "remote": self.remote,
            "isRepair": self.is_repair,
            "createdAt": iso(self.created_at),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PairedNode:
    """A device the owner approved (one entry of ``nodes/paired.json``); only a token hash."""

    node_id: str
    display_name: str
    platform: str
    version: str
    token_hash: str
    created_at: datetime
    approved_at: datetime
    last_connected_at: datetime | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The public JSON view, without the token hash (CLI ``--json``, the gateway)."""
        return {
            "nodeId": self.node_id,
            "displayName": self.display_name,
            "platform": self.platform,
            "version": self.version,
            "createdAt": iso(self.created_at),
            "approvedAt": iso(self.approved_at),
            "lastConnectedAt": iso(self.last_connected_at) if self.last_connected_at else None,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeInvite:
    """A one-time invite the owner made (one entry of ``nodes/invites.json``): a node that
    shows its secret is paired at once, the invite being the owner's approval.

    Only the secret's SHA-256 is kept. A spent invite stays (``used_at``, ``used_by``) until
    it would have expired, so a second try with it is told apart from a guess in the audit
    log; then the prune drops it.
    """

    invite_id: str
    secret_hash: str = field(repr=False)
    name: str = ""
    """What the owner called the device it is for (``--name``): the paired node's name."""
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None
    used_by: str = ""
    """The node id paired with it."""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def live(self, now: datetime) -> bool:
        """Not spent, and ``now`` is before it expires."""
        return self.used_at is None and now < self.expires_at

    def as_json(self) -> dict[str, Any]:
        """The public JSON view (CLI ``--json``): no hash."""
        return {
            "inviteId": self.invite_id,
            "name": self.name,
            "createdAt": iso(self.created_at),
            "expiresAt": iso(self.expires_at),
            "usedAt": iso(self.used_at) if self.used_at else None,
            "usedBy": self.used_by or None,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalNotice:
    """A sender approved and not yet told (``approvedToTell`` in their pairing file).

    Written in the same transaction as the grant, dropped once the running bot has told the
    sender, so an approval made while the bot is down (the CLI) is told when it next runs.
    """

    provider: str
    sender_id: str
    approved_at: datetime
    chat_id: str | None = None
    """Where the sender wrote from, when that is not their DM id (a Slack DM channel)."""
    held: tuple[HeldMessage, ...] = field(default=(), repr=False)
    """The messages the sender wrote while pending, moved here from the request by the
    approval, not yet handed to the handler; each leaves once handed."""
    told: bool = False
    """The sender has been told they are approved; what is left is :attr:`held`."""
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeApproval:
    """What approving a node request did: the node as paired now, its new token (shown once,
    to the asker only), the request approved, and the other requests for the same node id
    that the approval superseded (dropped, to be told "rejected")."""

    node: PairedNode
    token: str = field(repr=False)
    request: NodeRequest
    superseded: tuple[NodeRequest, ...] = ()
    sealed: str = field(default="", repr=False)
    """The token sealed to the request's seal key (:mod:`bot.services.seal`): what may cross
    to another instance; "" when the request carries no seal key."""

    def decisions(self) -> tuple[NodeDecision, ...]:
        """What the askers are told: each superseded request, then the approval (with the
        token, for the approved asker only)."""
        req = self.request
        approval = NodeDecision(
            verdict=NodeVerdict.APPROVED,
            node_id=req.node_id,
            request_id=req.request_id,
            token=self.token,
            pickup_hash=req.pickup_hash,
            sealed=self.sealed,
        )
        others = (NodeDecision.on_request(r, NodeVerdict.SUPERSEDED) for r in self.superseded)
        return (*others, approval)


class NodeVerdict(StrEnum):
    """What became of a node's request (or of a paired node), as its asker is told."""

    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    REVOKED = "revoked"
    SUPERSEDED = "superseded"
    """Another asker's request for the same node id was approved; this asker hears
    ``rejected`` (:attr:`told`)."""

    @property
    def told(self) -> str:
        """The ``decision`` a node hears in ``node.pair.resolved``."""
        return NodeVerdict.REJECTED.value if self is NodeVerdict.SUPERSEDED else self.value


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeDecision:
    """One decision on a node, to be delivered to the one it concerns.

    Every node decision, whoever made it (the owner chat, an operator over the gateway, the
    CLI through the gateway's socket, the prune, the expiry sweep), becomes one of these, and
    the gateway delivers it: to the connection that made the request, or, for ``revoked``, to
    the node's own connections. ``token`` comes only with ``approved`` (never in a repr), and
    ``pickup_hash`` lets the gateway hold that token for an asker who went away.
    """

    verdict: NodeVerdict
    node_id: str
    request_id: str | None = None
    """The request decided; None only for ``revoked`` (a node, not a request)."""
    token: str | None = field(default=None, repr=False)
    pickup_hash: str = field(default="", repr=False)
    sealed: str = field(default="", repr=False)
    """With ``approved``: the token sealed for the asker (what another instance gets)."""

    def __post_init__(self) -> None:
        approved = self.verdict is NodeVerdict.APPROVED
        if (self.token is not None) != approved:
            raise ValueError("a node decision carries a token if and only if it approves")
        if (self.request_id is None) != (self.verdict is NodeVerdict.REVOKED):
            raise ValueError("a node decision names a request unless it revokes a node")

    @classmethod
    def on_request(cls, req: NodeRequest, verdict: NodeVerdict) -> NodeDecision:
        """``req`` was rejected, expired or superseded (no token)."""
        return cls(verdict=verdict, node_id=req.node_id, request_id=req.request_id)

    @classmethod
    def revocation(cls, node_id: str) -> NodeDecision:
        """Paired node ``node_id`` was revoked."""
        return cls(verdict=NodeVerdict.REVOKED, node_id=node_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeAsk:
    """The answer to a node asking to join.

    ``pickup`` is the plain pickup secret, present only when the request was just created:
    it goes to the asker alone and is stored only as a hash. ``conflicts`` are the other live
    requests for the same node id (the owner is warned: only one of them can be approved).
    """

    request: NodeRequest
    created: bool
    pickup: str | None = field(default=None, repr=False)
    conflicts: tuple[NodeRequest, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEvent:
    """One line of ``audit.jsonl``. Never carries a code, a token or message text."""

    ts: datetime
    event: str
    actor: str
    subject: str
    outcome: str
    provider: str | None = None
    request_id: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


class SendFailure(StrEnum):
    """Why a provider's send failed, in words few enough to count by (metrics)."""

    UNREACHABLE = "unreachable"
    """The platform will not deliver to that person now (blocked, window closed)."""
    RATE_LIMITED = "rate_limited"
    TIMEOUT = "timeout"
    NETWORK = "network"
    FORBIDDEN = "forbidden"
    REFUSED = "refused"
    """The platform answered with an error (after the retries)."""
    BUTTONS = "buttons"
    NOT_RUNNING = "not_running"
    OTHER = "other"


AUDIT_EVENTS: tuple[str, ...] = (
    "request",
    "approve",
    "reject",
    "expire",
    "revoke",
    "allow",
    "grant.expire",
    "lockout",
    "node.request",
    "node.approve",
    "node.reject",
    "node.expire",
    "node.revoke",
    "node.invite",
)
"""Every ``event`` an audit line may name (what ``events.kinds`` chooses from)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditPage:
    """Audit records read after a position (:meth:`~bot.core.protocols.StateStore.audit_since`).

    A position is the store's own opaque string; each record comes with the position just
    after it, so a reader that handled some of them knows where to go on from.
    """

    records: list[tuple[str, dict[str, Any]]]
    """(the position after the record, the record), oldest first."""
    end: str
    """Where the next read starts: after the last record, or where the read began."""
    more: bool = False
    """The page was full: more records may follow at once."""
    gap: bool = False
    """A later record is committed while one before it is not (yet): the page stops there.
    A transaction still running (PostgreSQL's strangers' asks commit side by side) fills it
    soon; one rolled back never does (read again with ``skip_gap``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceBeat:
    """One running instance as its last heartbeat told of it (:meth:`Cluster.beat`)."""

    instance_id: str
    started_at: datetime
    """When the instance's first beat was recorded."""
    last_beat: datetime
    facts: Mapping[str, Any] = field(default_factory=dict)
    """What the instance said of itself: version, host, readiness, the connectors it holds."""
