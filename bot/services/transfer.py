"""Moving the whole state between backends: one versioned JSON document, out and in.

:func:`export_state` reads everything a :class:`~bot.core.protocols.StateStore` holds (the
pending requests, the allowlists, the notices still to send, the pending and paired nodes with
their hashes, the audit log) into a :class:`StateDocument`; :func:`document_json` is its JSON
form and :func:`read_document` reads one back, naming the field of anything it refuses.
:func:`import_state` writes a document into a store in one transaction: refused when the store
already holds state unless merging, and, merging, nothing already stored is replaced.

The document (``"format": "pairbot-state"``, ``"version"`` 2, or 1 when no grant ends)::

    {"format": "pairbot-state", "version": 2, "exportedAt": "…Z",
     "requests": [{"provider", "id", "code", "createdAt", "lastSeenAt", "lastSentAt"?,
                   "meta", "extra", "held"?}],
     "allowlists": {"telegram": ["123", …], …},
     "allowEnds": {"telegram": {"123": "…Z"}, …},
     "notices": [{"provider", "senderId", "approvedAt", "chatId"?, "held"?, "told"?}],
     "nodes": {"pending": [{"requestId", "nodeId", "displayName", "platform", "version",
                            "createdAt", "remote", "pickupHash", "isRepair", "extra"}],
               "paired": [{"nodeId", "displayName", "platform", "version", "tokenHash",
                           "createdAt", "approvedAt", "lastConnectedAt"?, "extra"}]},
     "audit": [<the audit records, as `pairbot audit --json` prints them>]}

It holds node token hashes and pickup hashes (never a token), pairing codes (whoever reads it
can approve a pending stranger) and the text of held messages
(:class:`~bot.core.models.HeldMessage`, ``[{"text", "at", "name"?}]``), so the CLI writes it
0600.

``allowEnds`` (version 2) holds when the grants that end do end, by provider and sender, each
sender one the document's allowlist lists. A document with none is written as version 1, which
an older pairbot reads whole; one with ends is version 2, which an older pairbot refuses
rather than read those grants as grants for good.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.core import codes
from bot.core.clock import iso
from bot.core.errors import PairbotError
from bot.core.models import (
    ApprovalNotice,
    AuditEvent,
    HeldMessage,
    NodeRequest,
    PairedNode,
    PendingRequest,
)
from bot.core.platforms import KNOWN_PROVIDERS, platform
from bot.core.protocols import StateStore, StateTxn

FORMAT = "pairbot-state"
VERSION = 2
"""The newest document version this pairbot writes and reads (2: ``allowEnds``)."""
_NO_ENDS_VERSION = 1
"""The version of a document without ``allowEnds``: what an older pairbot reads as it is."""

_AUDIT_KEYS = ("ts", "event", "actor", "provider", "subject", "requestId", "outcome")


class DocumentError(PairbotError, ValueError):
    """A state document that cannot be read as it is (the message names the field)."""


class NotEmptyError(PairbotError):
    """An import into a store that already holds state, without ``merge``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StateDocument:
    """Everything a store holds, as values."""

    requests: list[PendingRequest] = field(default_factory=list)
    allowlists: dict[str, list[str]] = field(default_factory=dict)
    allow_ends: dict[str, dict[str, datetime]] = field(default_factory=dict)
    """Per provider, the grants that end: sender id → end (senders the allowlist lists)."""
    notices: list[ApprovalNotice] = field(default_factory=list)
    node_requests: list[NodeRequest] = field(default_factory=list)
    paired_nodes: list[PairedNode] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """How many of each part, for the CLI's one-line summary."""
        return {
            "requests": len(self.requests),
            "allowed": sum(len(ids) for ids in self.allowlists.values()),
            "notices": len(self.notices),
            "node requests": len(self.node_requests),
            "paired nodes": len(self.paired_nodes),
            "audit records": len(self.audit),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportReport:
    """What :func:`import_state` wrote, and what it kept because the store had it already."""

    written: dict[str, int]
    kept: dict[str, int]


# --- out -------------------------------------------------------------------------------------


def export_state(store: StateStore) -> StateDocument:
    """Read the whole state of ``store``: the entries from one transaction, then the audit."""
    with store.transaction() as txn:
        document = StateDocument(
            requests=[r for name in KNOWN_PROVIDERS for r in txn.requests(name)],
            allowlists={n: ids for n in KNOWN_PROVIDERS if (ids := txn.allow_from(n))},
            allow_ends={n: ends for n in KNOWN_PROVIDERS if (ends := txn.allow_ends(n))},
            notices=txn.notices(),
            node_requests=txn.node_requests(),
            paired_nodes=txn.paired_nodes(),
        )
    document.audit.extend(store.iter_audit())
    return document


def document_json(document: StateDocument, *, now: datetime) -> dict[str, Any]:
    """The JSON form of ``document`` (see the module's docstring)."""
    ends = {
        name: {sender: iso(end) for sender, end in by_sender.items()}
        for name, by_sender in document.allow_ends.items()
        if by_sender
    }
    return {
        "format": FORMAT,
        "version": VERSION if ends else _NO_ENDS_VERSION,
        "exportedAt": iso(now),
        "requests": [_request_json(r) for r in document.requests],
        "allowlists": {name: list(ids) for name, ids in document.allowlists.items()},
        **({"allowEnds": ends} if ends else {}),
        "notices": [_notice_json(n) for n in document.notices],
        "nodes": {
            "pending": [_node_request_json(r) for r in document.node_requests],
            "paired": [_paired_json(n) for n in document.paired_nodes],
        },
        "audit": list(document.audit),
    }


def _request_json(req: PendingRequest) -> dict[str, Any]:
    out: dict[str, Any] = {
        "provider": req.provider,
        "id": req.id,
        "code": req.code,
        "createdAt": iso(req.created_at),
        "lastSeenAt": iso(req.last_seen_at),
        "meta": dict(req.meta),
        "extra": dict(req.extra),
    }
    if req.last_sent_at is not None:
        out["lastSentAt"] = iso(req.last_sent_at)
    if req.held:
        out["held"] = [m.as_json() for m in req.held]
    return out


def _notice_json(notice: ApprovalNotice) -> dict[str, Any]:
    out: dict[str, Any] = {
        "provider": notice.provider,
        "senderId": notice.sender_id,
        "approvedAt": iso(notice.approved_at),
    }
    if notice.chat_id is not None:
        out["chatId"] = notice.chat_id
    if notice.held:
        out["held"] = [m.as_json() for m in notice.held]
    if notice.told:
        out["told"] = True
    return out


def _node_request_json(req: NodeRequest) -> dict[str, Any]:
    return {
        **req.as_json(),
        "pickupHash": req.pickup_hash,
        "extra": dict(req.extra),
    }


def _paired_json(node: PairedNode) -> dict[str, Any]:
    out = {**node.as_json(), "tokenHash": node.token_hash, "extra": dict(node.extra)}
    if out["lastConnectedAt"] is None:
        del out["lastConnectedAt"]
    return out


# --- reading a document ------------------------------------------------------------------------


class _Reader:
    """Reads one JSON object, naming ``where`` (``requests[3]``) in every error."""

    def __init__(self, raw: object, where: str) -> None:
        if not isinstance(raw, dict):
            raise DocumentError(f"{where}: must be an object")
        self.raw: dict[str, Any] = raw
        self.where = where

    def _fail(self, key: str, problem: str) -> DocumentError:
        return DocumentError(f"{self.where}.{key}: {problem}")

    def text(self, key: str, *, default: str | None = None, empty: bool = True) -> str:
        value = self.raw.get(key, default)
        if not isinstance(value, str) or (not empty and not value):
            raise self._fail(
                key, "must be a non-empty string" if not empty else "must be a string"
            )
        return value

    def opt_text(self, key: str) -> str | None:
        return None if self.raw.get(key) is None else self.text(key)

    def time(self, key: str) -> datetime:
        value = self.text(key, empty=False)
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise self._fail(key, f"not an ISO-8601 time: {value[:40]!r}") from None
        if parsed.tzinfo is None:
            raise self._fail(key, "has no time zone")
        return parsed.astimezone(UTC)

    def opt_time(self, key: str) -> datetime | None:
        return None if self.raw.get(key) is None else self.time(key)

    def flag(self, key: str) -> bool:
        value = self.raw.get(key, False)
        if not isinstance(value, bool):
            raise self._fail(key, "must be true or false")
        return value

    def strings(self, key: str) -> dict[str, str]:
        value = self.raw.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise self._fail(key, "must be an object of strings")
        return dict(value)

    def held(self, key: str = "held") -> tuple[HeldMessage, ...]:
        return HeldMessage.read_all(self.raw.get(key), f"{self.where}.{key}", _document_error)

    def obj(self, key: str) -> dict[str, Any]:
        value = self.raw.get(key, {})
        if not isinstance(value, dict):
            raise self._fail(key, "must be an object")
        return dict(value)

    def provider(self, key: str = "provider") -> str:
        name = self.text(key, empty=False)
        if name not in KNOWN_PROVIDERS:
            raise self._fail(key, f"unknown provider {name[:20]!r}")
        return name

    def sender(self, provider: str, key: str) -> str:
        try:
            return platform(provider).ids.normalise(self.text(key, empty=False))
        except ValueError as exc:
            raise self._fail(key, str(exc)) from None


def _document_error(field: str, problem: str) -> DocumentError:
    return DocumentError(f"{field}: {problem}")


def _items(raw: object, where: str) -> Iterator[_Reader]:
    if not isinstance(raw, list):
        raise DocumentError(f"{where}: must be a list")
    for index, item in enumerate(raw):
        yield _Reader(item, f"{where}[{index}]")


def read_document(raw: object, *, source: str = "document") -> StateDocument:
    """Read a document made by :func:`document_json` (of this version or an older one).

    Raises:
        DocumentError: it is not one, or a field is wrong; the message names ``source`` and
            the field (``state.json: requests[3].createdAt: not an ISO-8601 time``).
    """
    try:
        return _read(raw)
    except DocumentError as exc:
        raise DocumentError(f"{source}: {exc}") from None


def _read(raw: object) -> StateDocument:
    top = _Reader(raw, "document")
    if top.raw.get("format") != FORMAT:
        raise DocumentError(f"format: not a pairbot state document (want {FORMAT!r})")
    version = top.raw.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise DocumentError("version: must be a whole number")
    if version > VERSION:
        raise DocumentError(
            f"version: {version} is newer than this pairbot reads ({VERSION}); upgrade pairbot"
        )
    document = StateDocument()
    for r in _items(top.raw.get("requests", []), "requests"):
        name = r.provider()
        code = codes.normalize_code(r.text("code", empty=False))
        if code is None:
            raise DocumentError(f"{r.where}.code: not a pairing code")
        document.requests.append(
            PendingRequest(
                provider=name,
                id=r.sender(name, "id"),
                code=code,
                created_at=r.time("createdAt"),
                last_seen_at=r.time("lastSeenAt"),
                last_sent_at=r.opt_time("lastSentAt"),
                meta=r.strings("meta"),
                held=r.held(),
                extra=r.obj("extra"),
            )
        )
    allow = _Reader(top.raw.get("allowlists", {}), "allowlists")
    for name, ids in allow.raw.items():
        if name not in KNOWN_PROVIDERS:
            raise DocumentError(f"allowlists.{name[:20]}: unknown provider")
        if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
            raise DocumentError(f"allowlists.{name}: must be a list of ids")
        rule = platform(name).ids
        document.allowlists[name] = list(dict.fromkeys(rule.normalise(i) for i in ids))
    ends = _Reader(top.raw.get("allowEnds", {}), "allowEnds")
    for name in ends.raw:
        if name not in KNOWN_PROVIDERS:
            raise DocumentError(f"allowEnds.{name[:20]}: unknown provider")
        by_sender = _Reader(ends.raw[name], f"allowEnds.{name}")
        listed = set(document.allowlists.get(name, ()))
        read: dict[str, datetime] = {}
        for raw_id in by_sender.raw:
            sender = platform(name).ids.normalise(raw_id)
            if sender not in listed:
                raise DocumentError(f"allowEnds.{name}.{raw_id[:40]}: not in allowlists.{name}")
            read[sender] = by_sender.time(raw_id)
        document.allow_ends[name] = read
    for n in _items(top.raw.get("notices", []), "notices"):
        name = n.provider()
        document.notices.append(
            ApprovalNotice(
                provider=name,
                sender_id=n.sender(name, "senderId"),
                approved_at=n.time("approvedAt"),
                chat_id=n.opt_text("chatId"),
                held=n.held(),
                told=n.flag("told"),
            )
        )
    nodes = _Reader(top.raw.get("nodes", {}), "nodes")
    for q in _items(nodes.raw.get("pending", []), "nodes.pending"):
        document.node_requests.append(
            NodeRequest(
                request_id=q.text("requestId", empty=False),
                node_id=q.text("nodeId", empty=False),
                display_name=q.text("displayName", default=""),
                platform=q.text("platform", default=""),
                version=q.text("version", default=""),
                created_at=q.time("createdAt"),
                remote=q.text("remote", default=""),
                pickup_hash=q.text("pickupHash", default=""),
                is_repair=q.flag("isRepair"),
                extra=q.obj("extra"),
            )
        )
    for p in _items(nodes.raw.get("paired", []), "nodes.paired"):
        document.paired_nodes.append(
            PairedNode(
                node_id=p.text("nodeId", empty=False),
                display_name=p.text("displayName", default=""),
                platform=p.text("platform", default=""),
                version=p.text("version", default=""),
                token_hash=p.text("tokenHash", empty=False),
                created_at=p.time("createdAt"),
                approved_at=p.time("approvedAt"),
                last_connected_at=p.opt_time("lastConnectedAt"),
                extra=p.obj("extra"),
            )
        )
    for a in _items(top.raw.get("audit", []), "audit"):
        a.time("ts")
        for key in ("event", "actor", "subject", "outcome"):
            a.text(key)
        document.audit.append(a.raw)
    return document


# --- in --------------------------------------------------------------------------------------


def import_state(store: StateStore, document: StateDocument, *, merge: bool) -> ImportReport:
    """Write ``document`` into ``store`` in one transaction.

    Without ``merge`` the store must hold nothing (no entry, no audit record). With it, what
    the store holds stays as it is: a sender already pending or allowed, a node request or a
    paired node of the same id, a notice for the same sender, an audit record the store has
    already keep the store's version (counted in :attr:`ImportReport.kept`); the other audit
    records are appended after the store's own, so a document merged twice adds nothing.

    Raises:
        NotEmptyError: the store holds state and ``merge`` is false; nothing was written.
        DocumentError: an imported request's code is held by another request in the store;
            nothing was written.
    """
    written = dict.fromkeys(document.counts(), 0)
    kept = dict.fromkeys(document.counts(), 0)

    def count(part: str, wrote: bool) -> bool:
        (written if wrote else kept)[part] += 1
        return wrote

    stored_audit = {_audit_key(r) for r in store.iter_audit()} if merge else set()
    if not merge and next(iter(store.iter_audit(limit=1)), None) is not None:
        raise NotEmptyError(_NOT_EMPTY)
    with store.transaction() as txn:
        if not merge and _holds_entries(txn):
            raise NotEmptyError(_NOT_EMPTY)
        for req in document.requests:
            known = txn.request(req.provider, req.id) is not None
            if count("requests", not known and not txn.allow_has(req.provider, req.id)):
                if txn.code_taken(req.code):
                    raise DocumentError(
                        f"requests: the {req.provider} request of {req.id} has a code another "
                        "request in the store holds; nothing was imported"
                    )
                txn.put_request(req)
        for name, ids in document.allowlists.items():
            ends = document.allow_ends.get(name, {})
            for sender in ids:
                if count("allowed", not (merge and txn.allow_has(name, sender))):
                    txn.allow(name, sender, until=ends.get(sender))
        told = {(n.provider, n.sender_id) for n in txn.notices()}
        for notice in document.notices:
            if count("notices", (notice.provider, notice.sender_id) not in told):
                txn.put_notice(notice)
        pending_ids = {r.request_id for r in txn.node_requests()}
        for node_req in document.node_requests:
            if count("node requests", node_req.request_id not in pending_ids):
                txn.put_node_request(node_req)
        paired_ids = {n.node_id for n in txn.paired_nodes()}
        for node in document.paired_nodes:
            if count("paired nodes", node.node_id not in paired_ids):
                txn.put_paired_node(node)
        for record in document.audit:
            if count("audit records", _audit_key(record) not in stored_audit):
                txn.audit(audit_event(record))
    return ImportReport(written=written, kept=kept)


_NOT_EMPTY = "the store already holds state; import with --merge to add to it"


def _audit_key(record: Mapping[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=True)


def _holds_entries(txn: StateTxn) -> bool:
    return bool(
        any(txn.request_count(n) or txn.allow_from(n) for n in KNOWN_PROVIDERS)
        or txn.notices()
        or txn.node_requests()
        or txn.paired_nodes()
    )


def audit_event(record: Mapping[str, Any]) -> AuditEvent:
    """The :class:`AuditEvent` whose audit record is ``record`` (a record read back, as
    ``read_audit`` returns it): its keys past the known ones are the detail, in order."""
    provider = record.get("provider")
    request_id = record.get("requestId")
    return AuditEvent(
        ts=datetime.fromisoformat(str(record["ts"])),
        event=str(record["event"]),
        actor=str(record["actor"]),
        subject=str(record["subject"]),
        outcome=str(record["outcome"]),
        provider=None if provider is None else str(provider),
        request_id=None if request_id is None else str(request_id),
        detail={k: v for k, v in record.items() if k not in _AUDIT_KEYS},
    )


def encode(document: StateDocument, *, now: datetime) -> bytes:
    """The document as UTF-8 JSON text (indented, ending in a newline), to write to a file."""
    text = json.dumps(document_json(document, now=now), ensure_ascii=False, indent=2)
    return (text + "\n").encode()


def decode(data: bytes, *, source: str) -> StateDocument:
    """Read a document from the bytes of ``source`` (a file name, for the error)."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DocumentError(f"{source}: not JSON ({exc})") from None
    return read_document(raw, source=source)


def summary(counts: Mapping[str, int]) -> str:
    """``3 requests, 120 allowed, …`` (the parts with a count)."""
    return ", ".join(f"{n} {what}" for what, n in counts.items() if n) or "nothing"


__all__: Sequence[str] = [
    "FORMAT",
    "VERSION",
    "DocumentError",
    "ImportReport",
    "NotEmptyError",
    "StateDocument",
    "audit_event",
    "decode",
    "document_json",
    "encode",
    "export_state",
    "import_state",
    "read_document",
    "summary",
]
