"""The default store: JSON files in the state dir, in the shapes the Clawdbot project writes.

Layout (``~/.pairbot`` or ``$PAIRBOT_STATE_DIR``)::

    credentials/<provider>-pairing.json   {"version": 1, "requests": [{id, code, createdAt,
                                                                     lastSeenAt, meta}]}
                                          (pairbot's own keys beside them: lastSentAt,
                                          heldMessages; approvedToTell, the outbox)
    credentials/<provider>-allowFrom.json {"version": 1, "allowFrom": ["<sender id>", ...]}
    credentials/<provider>-allowEnds.json {"version": 1, "ends": [{id, endsAt}]}
    nodes/pending.json                    {"version": 1, "requests": [{requestId, nodeId, ...}]}
    nodes/paired.json                     {"version": 1, "nodes": [{nodeId, tokenHash, ...}]}
    nodes/invites.json                    {"version": 1, "invites": [{inviteId, secretHash,
                                                                    expiresAt, usedAt?, ...}]}
    cursors.json                          {"version": 1, "cursors": {"<key>": "<value>"}}
    audit.jsonl                           one JSON object per line, append-only

``<provider>-allowEnds.json`` is pairbot's own file too: when the grants in ``allowFrom`` that
end do end (``/approve CODE 7d``). ``allowFrom`` stays the list of ids Clawdbot reads (Clawdbot
sees every listed sender as allowed, until pairbot's prune removes an ended one); the ends are
beside it in a file of their own, not in a key of ``allowFrom.json``, because Clawdbot rewrites
that file as ``{version, allowFrom}`` and a key there would be lost, turning grants that end
into grants for good. The two files are written in the order that never lets a crash do that
either (see :meth:`JsonFileStore._commit`), and every change to the ends rewrites
``allowFrom.json`` too, so a gate in another process, which watches only that file, sees it.
An end whose id ``allowFrom`` does not list is ignored, and dropped by the next write.

``nodes/invites.json`` holds the owner's one-time node invites (pairbot's own file: only each
secret's SHA-256, kept until the invite would have expired, spent or not).

``cursors.json`` holds the providers' :class:`~bot.core.protocols.Cursors` (pairbot's own
file, not Clawdbot's): where a provider's catch-up got to, saved on its own, outside any
transaction, under the same lock and with the same atomic 0600 write.

Parsed files are kept in memory with the key (inode, size, mtime) of the version read; every
transaction re-checks the key under the lock and re-reads only files another process changed.
Entries are serialised once and their text reused, so a write costs a join, not a re-encode of
every entry. Unknown keys, at the top level and inside entries, survive every rewrite.

Allowlists can hold millions of entries, all plain strings: they are decoded, checked and
encoded in bulk by the C json module, never entry by entry in Python, and the text of the list
read from disk is reused, so adding a sender appends to it instead of re-encoding the rest.

Every sender id read (allowlist entries, request and approved-to-tell ids) is taken in its
platform's normal form, so an id another writer stored in another case still matches; the
file is left as it is until the next change pairbot writes to it, which stores that form.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import operator
import os
import stat
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from itertools import compress, repeat
from pathlib import Path
from typing import Any, BinaryIO, Generic, TypedDict, TypeVar, cast

import msgspec

from bot.core.clock import iso
from bot.core.errors import PairbotError, SchemaVersionError, StoreCorruptError, StoreError
from bot.core.models import (
    FOREVER,
    ApprovalNotice,
    AuditEvent,
    AuditPage,
    HeldMessage,
    NodeInvite,
    NodeRequest,
    PairedNode,
    PendingRequest,
)
from bot.core.platforms import KNOWN_PROVIDERS, find
from bot.core.protocols import AUDIT_PAGE
from stores._files import (
    FileKey,
    Finished,
    Held,
    Staged,
    StateLock,
    access_lines,
    access_report,
    append_durably,
    atomic_write,
    check_readable,
    commit,
    ensure_private_dir,
    file_type,
    finish,
    last_lines_offset,
    open_for_reading,
    os_error,
    read_versioned,
    remove_debris,
    stage,
    stat_key,
    unstage,
)
from stores._records import (
    HELD_KEY,
    NEVER_ALLOWED,
    TOLD_KEY,
    ScannedRequests,
    audit_record,
    invite_with_hash,
    unknown_provider,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
INVITES_NAME = "invites.json"
"""The node invites' file, in ``nodes/`` beside ``pending.json`` and ``paired.json``."""
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# Time and field codecs


format_time = iso
"""ISO-8601 in UTC with milliseconds and a ``Z``, as Clawdbot writes it."""


class _Bad(PairbotError):
    """A field of one entry is wrong; carries the field path for the error message.

    Always caught and re-raised as :class:`StoreCorruptError` naming the file; rooted in
    :class:`PairbotError` so that one that ever slipped through is still one line, not a
    traceback.
    """

    def __init__(self, field_path: str, problem: str) -> None:
        super().__init__(f"{field_path}: {problem}")


def _time(raw: Mapping[str, Any], key: str, where: str) -> datetime:
    value = raw.get(key)
    if value is None:
        raise _Bad(f"{where}.{key}", "missing")
    return _parse_time(value, f"{where}.{key}")


def _opt_time(raw: Mapping[str, Any], key: str, where: str) -> datetime | None:
    value = raw.get(key)
    return None if value is None else _parse_time(value, f"{where}.{key}")


def _opt_time_entry(key: str, value: datetime | None) -> dict[str, str]:
    """What :func:`_opt_time` reads back: ``{key: time}``, or nothing for an unset time (the
    key is left out of the file)."""
    return {} if value is None else {key: format_time(value)}


def _parse_time(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise _Bad(where, "must be an ISO-8601 time string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _Bad(where, f"not an ISO-8601 time: {value[:40]!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _str(raw: Mapping[str, Any], key: str, where: str, *, default: str | None = None) -> str:
    value = raw.get(key, default)
    if value is None:
        raise _Bad(f"{where}.{key}", "missing")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _Bad(f"{where}.{key}", "must be a string")
    return str(value).strip()


def _sha256(raw: Mapping[str, Any], key: str, where: str) -> str:
    """A stored SHA-256 hex digest (of a token or a secret, never the thing itself)."""
    value = _str(raw, key, where)
    if len(value) != 64:
        raise _Bad(f"{where}.{key}", "must be a SHA-256 hex digest")
    return value


def _meta(raw: Mapping[str, Any], where: str) -> dict[str, str]:
    value = raw.get("meta") or {}
    if not isinstance(value, dict):
        raise _Bad(f"{where}.meta", "must be an object")
    return {str(k): str(v) for k, v in value.items() if v is not None and str(v) != ""}


def _extra(raw: Mapping[str, Any], known: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if k not in known}


def _held(raw: Mapping[str, Any], where: str) -> tuple[HeldMessage, ...]:
    return HeldMessage.read_all(raw.get(HELD_KEY), f"{where}.{HELD_KEY}", _Bad)


def _held_entry(held: tuple[HeldMessage, ...]) -> dict[str, Any]:
    """What :func:`_held` reads back: ``{heldMessages: [...]}``, or nothing when none are."""
    return {HELD_KEY: [m.as_json() for m in held]} if held else {}


_REQUEST_KEYS = frozenset(
    {"id", "code", "createdAt", "lastSeenAt", "meta", "lastSentAt", HELD_KEY}
)
_NODE_KEYS = ("nodeId", "displayName", "platform", "version")
"""What a node says it is: the same keys in a node request and in a paired node."""
_NODE_REQUEST_KEYS = frozenset(
    {"requestId", *_NODE_KEYS, "createdAt", "remote", "pickupHash", "isRepair"}
)
_PAIRED_KEYS = frozenset({*_NODE_KEYS, "tokenHash", "createdAt", "approvedAt", "lastConnectedAt"})


class _NodeFields(TypedDict):
    node_id: str
    display_name: str
    platform: str
    version: str


def _decode_node(raw: Mapping[str, Any], where: str) -> _NodeFields:
    """The :data:`_NODE_KEYS` of a node request or a paired node; only ``nodeId`` is required."""
    return _NodeFields(
        node_id=_str(raw, "nodeId", where),
        display_name=_str(raw, "displayName", where, default=""),
        platform=_str(raw, "platform", where, default=""),
        version=_str(raw, "version", where, default=""),
    )


def _encode_node(node: NodeRequest | PairedNode) -> dict[str, Any]:
    """The :data:`_NODE_KEYS` of a node request or a paired node, in their order on disk."""
    return {
        "nodeId": node.node_id,
        "displayName": node.display_name,
        "platform": node.platform,
        "version": node.version,
    }


@dataclass(frozen=True, slots=True)
class _Kind(Generic[T]):
    """How one kind of file maps to models: its list key, entry codec and identity.

    ``plain`` kinds hold bare strings that are their own identity (allowlists): they are
    decoded and encoded in bulk, and their list's text is kept whole instead of per entry.
    """

    list_key: str
    decode: Callable[[Any, str, str], T]  # (raw entry, field path, provider) -> model
    encode: Callable[[T], Any]
    ident: Callable[[T], str]
    plain: bool = False


def _normal_ids(provider: str, ids: list[str]) -> list[str]:
    """Stored sender ids in their platform's normal form
    (:meth:`bot.core.schema.IdRule.normalise_all`).

    An older pairbot or Clawdbot may have written an id in another case (a Signal ACI in upper
    case, an e-mail handle as typed): read in normal form, it matches the sender, the owner's
    revoke and a new approval. The file is left as it is; the next write pairbot makes to it
    (for a change) stores every entry in normal form.
    """
    found = find(provider)
    return found.ids.normalise_all(ids) if found is not None else list(map(str.strip, ids))


def _normal_id(provider: str, sender_id: str) -> str:
    """One stored sender id in its platform's normal form (see :func:`_normal_ids`)."""
    return _normal_ids(provider, [sender_id])[0]


def _decode_request(raw: Any, where: str, provider: str) -> PendingRequest:
    if not isinstance(raw, dict):
        raise _Bad(where, "must be an object")
    created = _time(raw, "createdAt", where)
    return PendingRequest(
        provider=provider,
        id=_normal_id(provider, _str(raw, "id", where)),
        code=_str(raw, "code", where).upper(),
        created_at=created,
        last_seen_at=_opt_time(raw, "lastSeenAt", where) or created,
        meta=_meta(raw, where),
        last_sent_at=_opt_time(raw, "lastSentAt", where),
        held=_held(raw, where),
        extra=_extra(raw, _REQUEST_KEYS),
    )


def _encode_request(req: PendingRequest) -> dict[str, Any]:
    return {
        "id": req.id,
        "code": req.code,
        "createdAt": format_time(req.created_at),
        "lastSeenAt": format_time(req.last_seen_at),
        "meta": dict(req.meta),
        **_opt_time_entry("lastSentAt", req.last_sent_at),
        **_held_entry(req.held),
        **req.extra,
    }


def _decode_allow(raw: Any, where: str, provider: str) -> str:
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise _Bad(where, "must be a sender id string")
    return _normal_id(provider, str(raw))


@dataclass(frozen=True, slots=True, kw_only=True)
class _End:
    """One entry of ``<provider>-allowEnds.json``: when a listed sender's grant ends."""

    id: str
    ends_at: datetime
    extra: Mapping[str, Any] = field(default_factory=dict)


_END_KEYS = frozenset({"id", "endsAt"})


def _decode_end(raw: Any, where: str, provider: str) -> _End:
    if not isinstance(raw, dict):
        raise _Bad(where, "must be an object")
    return _End(
        id=_normal_id(provider, _str(raw, "id", where)),
        ends_at=_time(raw, "endsAt", where),
        extra=_extra(raw, _END_KEYS),
    )


def _encode_end(end: _End) -> dict[str, Any]:
    return {"id": end.id, "endsAt": format_time(end.ends_at), **end.extra}


def _decode_node_request(raw: Any, where: str, provider: str) -> NodeRequest:  # noqa: ARG001
    if not isinstance(raw, dict):
        raise _Bad(where, "must be an object")
    return NodeRequest(
        request_id=_str(raw, "requestId", where),
        **_decode_node(raw, where),
        created_at=_time(raw, "createdAt", where),
        remote=_str(raw, "remote", where, default=""),
        pickup_hash=_str(raw, "pickupHash", where, default=""),
        is_repair=raw.get("isRepair") is True,
        extra=_extra(raw, _NODE_REQUEST_KEYS),
    )


def _encode_node_request(req: NodeRequest) -> dict[str, Any]:
    out: dict[str, Any] = {
        "requestId": req.request_id,
        **_encode_node(req),
        "createdAt": format_time(req.created_at),
    }
    if req.remote:
        out["remote"] = req.remote
    if req.pickup_hash:
        out["pickupHash"] = req.pickup_hash
    if req.is_repair:
        out["isRepair"] = True
    out.update(req.extra)
    return out


def _decode_paired(raw: Any, where: str, provider: str) -> PairedNode:  # noqa: ARG001
    if not isinstance(raw, dict):
        raise _Bad(where, "must be an object")
    return PairedNode(
        **_decode_node(raw, where),
        token_hash=_sha256(raw, "tokenHash", where),
        created_at=_time(raw, "createdAt", where),
        approved_at=_time(raw, "approvedAt", where),
        last_connected_at=_opt_time(raw, "lastConnectedAt", where),
        extra=_extra(raw, _PAIRED_KEYS),
    )


def _encode_paired(node: PairedNode) -> dict[str, Any]:
    return {
        **_encode_node(node),
        "tokenHash": node.token_hash,
        "createdAt": format_time(node.created_at),
        "approvedAt": format_time(node.approved_at),
        **_opt_time_entry("lastConnectedAt", node.last_connected_at),
        **node.extra,
    }


_INVITE_KEYS = frozenset(
    {"inviteId", "secretHash", "name", "createdAt", "expiresAt", "usedAt", "usedBy"}
)


def _decode_invite(raw: Any, where: str, provider: str) -> NodeInvite:  # noqa: ARG001
    if not isinstance(raw, dict):
        raise _Bad(where, "must be an object")
    return NodeInvite(
        invite_id=_str(raw, "inviteId", where),
        secret_hash=_sha256(raw, "secretHash", where),
        name=_str(raw, "name", where, default=""),
        created_at=_time(raw, "createdAt", where),
        expires_at=_time(raw, "expiresAt", where),
        used_at=_opt_time(raw, "usedAt", where),
        used_by=_str(raw, "usedBy", where, default=""),
        extra=_extra(raw, _INVITE_KEYS),
    )


def _encode_invite(invite: NodeInvite) -> dict[str, Any]:
    return {
        "inviteId": invite.invite_id,
        "secretHash": invite.secret_hash,
        "name": invite.name,
        "createdAt": format_time(invite.created_at),
        "expiresAt": format_time(invite.expires_at),
        **_opt_time_entry("usedAt", invite.used_at),
        **({"usedBy": invite.used_by} if invite.used_by else {}),
        **invite.extra,
    }


APPROVED_KEY = "approvedToTell"
"""Top-level key of ``<provider>-pairing.json``: senders approved and not yet told. It is
written in the same atomic write that drops their request, so "request → approved, to tell"
is one step on disk, after the grant."""
_NOTICE_KEYS = frozenset({"id", "chatId", "approvedAt", HELD_KEY, TOLD_KEY})


def _decode_notices(path: Path, provider: str, raw: Any) -> list[ApprovalNotice]:
    """Read the approved-to-tell list of a pairing file; a bad entry names its field."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise StoreCorruptError(f"{APPROVED_KEY}: must be a list", path=path, hint=_HINT)
    notices = []
    try:
        for i, entry in enumerate(raw):
            where = f"{APPROVED_KEY}[{i}]"
            if not isinstance(entry, dict):
                raise _Bad(where, "must be an object")
            chat_id = entry.get("chatId")
            notices.append(
                ApprovalNotice(
                    provider=provider,
                    sender_id=_normal_id(provider, _str(entry, "id", where)),
                    approved_at=_time(entry, "approvedAt", where),
                    chat_id=None if chat_id is None else _str(entry, "chatId", where),
                    held=_held(entry, where),
                    told=entry.get(TOLD_KEY) is True,
                    extra=_extra(entry, _NOTICE_KEYS),
                )
            )
    except _Bad as exc:
        raise StoreCorruptError(str(exc), path=path, hint=_HINT) from None
    return notices


def _encode_notice(notice: ApprovalNotice) -> dict[str, Any]:
    out: dict[str, Any] = {"id": notice.sender_id, "approvedAt": format_time(notice.approved_at)}
    if notice.chat_id is not None:
        out["chatId"] = notice.chat_id
    out.update(_held_entry(notice.held))
    if notice.told:
        out[TOLD_KEY] = True
    out.update(notice.extra)
    return out


REQUESTS: _Kind[PendingRequest] = _Kind(
    "requests", _decode_request, _encode_request, lambda r: r.id
)
ALLOW: _Kind[str] = _Kind("allowFrom", _decode_allow, lambda s: s, lambda s: s, plain=True)
ENDS: _Kind[_End] = _Kind("ends", _decode_end, _encode_end, lambda e: e.id)
NODE_REQUESTS: _Kind[NodeRequest] = _Kind(
    "requests", _decode_node_request, _encode_node_request, lambda r: r.request_id
)
PAIRED: _Kind[PairedNode] = _Kind("nodes", _decode_paired, _encode_paired, lambda n: n.node_id)
INVITES: _Kind[NodeInvite] = _Kind(
    "invites", _decode_invite, _encode_invite, lambda i: i.invite_id
)


# ---------------------------------------------------------------------------------------------
# One file, parsed

_SEP = b",\n    "  # between two entries of the list
_OPEN, _CLOSE = b"[\n    ", b"\n  ]"  # around a non-empty list
_PLAIN_LIST = json.JSONEncoder(ensure_ascii=False, separators=(_SEP.decode(), ": "))
"""Encodes a list of strings in one C call, laid out exactly as the entries joined by ``_SEP``."""

_Text = bytes | memoryview


@dataclass(slots=True)
class _Doc(ABC, Generic[T]):
    """One state file in memory: its entries, the text to write them with, the version read.

    Entries keep file order: a put of a known identity replaces it in place, a new one goes
    to the end, a drop removes it. Lookups are O(1), and a write reuses the entries' text
    instead of re-encoding every entry (how depends on the kind: see the two subclasses).
    """

    path: Path
    kind: _Kind[T]
    provider: str
    key: FileKey | None = None
    head: dict[str, Any] = field(default_factory=lambda: {"version": SCHEMA_VERSION})
    dirty: bool = False

    @abstractmethod
    def items(self) -> list[T]:
        """Return the entries in file order (a copy)."""

    @abstractmethod
    def identities(self) -> Collection[str]:
        """Return the entries' identities (a view: no copy)."""

    @abstractmethod
    def __contains__(self, ident: str) -> bool:
        """Return whether an entry has this identity."""

    @abstractmethod
    def put(self, item: T) -> None:
        """Insert or replace an entry."""

    @abstractmethod
    def drop(self, ident: str) -> bool:
        """Remove an entry; return whether it was there."""

    @abstractmethod
    def _runs(self) -> list[_Text]:
        """Return the text of the entries, in runs to be joined by ``_SEP``."""

    def frame(self) -> tuple[bytes, bytes]:
        """Return the file's text before and after the list: top-level keys one per line."""
        list_key = self.kind.list_key
        self.head.setdefault(list_key, None)  # a new file: the list goes after "version"
        parts, before = [b"{\n"], b""
        for number, (name, value) in enumerate(self.head.items()):
            if number:
                parts.append(b",\n")
            parts.append(f"  {json.dumps(name, ensure_ascii=False)}: ".encode())
            if name == list_key:
                before, parts = b"".join(parts), []
            else:
                parts.append(json.dumps(value, ensure_ascii=False).encode())
        parts.append(b"\n}\n")
        return before, b"".join(parts)

    def render(self) -> bytes:
        """Serialise: top-level keys one per line, one entry per line (readable, diffable).

        The entries' text is reused and joined once, straight into the output: no re-encoding
        and no intermediate copies of the (possibly large) list.
        """
        before, after = self.frame()
        runs = self._runs()
        if not runs:
            return before + b"[]" + after
        parts: list[_Text] = [before, _OPEN]
        for run in runs:
            parts += (run, _SEP)
        parts[-1] = _CLOSE
        parts.append(after)
        text = b"".join(parts)
        self._rendered(text, before, after)
        return text

    def _rendered(self, text: bytes, before: bytes, after: bytes) -> None:
        """Called with each rendering of the file (to keep its text for the next one)."""


@dataclass(slots=True)
class _ObjectDoc(_Doc[T]):
    """A file of objects (requests, nodes): a dict by identity, and one text per entry.

    ``texts`` has the same keys in the same order as ``entries``; it is None until the first
    write after a load (a read-only load never encodes).
    """

    entries: dict[str, T] = field(default_factory=dict)
    texts: dict[str, bytes] | None = None
    listed: bytes = b""
    """The text of the list's entries in the version on disk, as last written or read (the
    entries joined by ``_SEP``); a re-read that finds it unchanged at the start of the new
    list decodes only what follows it (see :func:`_entries`)."""

    def items(self) -> list[T]:
        return list(self.entries.values())

    def identities(self) -> Collection[str]:
        return self.entries.keys()

    def __contains__(self, ident: str) -> bool:
        return ident in self.entries

    def put(self, item: T) -> None:
        ident = self.kind.ident(item)
        self.entries[ident] = item
        if self.texts is not None:
            self.texts[ident] = json.dumps(self.kind.encode(item), ensure_ascii=False).encode()
        self.dirty = True

    def drop(self, ident: str) -> bool:
        if self.entries.pop(ident, _MISSING) is _MISSING:
            return False
        if self.texts is not None:
            del self.texts[ident]
        self.dirty = True
        return True

    def _runs(self) -> list[_Text]:
        if self.texts is None:
            encode = self.kind.encode
            self.texts = {
                ident: json.dumps(encode(item), ensure_ascii=False).encode()
                for ident, item in self.entries.items()
            }
        return [_SEP.join(self.texts.values())] if self.texts else []

    def _rendered(self, text: bytes, before: bytes, after: bytes) -> None:
        self.listed = bytes(_list_text(text, before, after))


@dataclass(slots=True)
class _PlainDoc(_Doc[str]):
    """A file of plain strings (an allowlist of millions): a list in file order, a set to
    look up, and the text of the whole list.

    ``runs`` is the list's text as last read or written (a slice of that file's bytes) plus
    one run per entry added since; None when unknown (after a drop, or when the file read
    was not laid out as pairbot writes it), and then encoded in bulk at the next write.
    """

    ids: list[str] = field(default_factory=list)
    index: set[str] = field(default_factory=set)
    runs: list[_Text] | None = None

    def items(self) -> list[str]:
        return self.ids.copy()

    def identities(self) -> Collection[str]:
        return self.index

    def __contains__(self, ident: str) -> bool:
        return ident in self.index

    def put(self, item: str) -> None:
        if item not in self.index:  # a known one is the same string: nothing to replace
            self.index.add(item)
            self.ids.append(item)
            if self.runs is not None:
                self.runs.append(_encode_plain([item]))
        self.dirty = True

    def drop(self, ident: str) -> bool:
        if ident not in self.index:
            return False
        self.index.remove(ident)
        self.ids.remove(ident)
        self.runs = None
        self.dirty = True
        return True

    def _runs(self) -> list[_Text]:
        if self.runs is None:
            self.runs = [_encode_plain(self.ids)] if self.ids else []
        return self.runs

    def _rendered(self, text: bytes, before: bytes, after: bytes) -> None:
        self.runs = [_list_text(text, before, after)]


@dataclass(slots=True)
class _EndsDoc(_ObjectDoc[_End]):
    """``<provider>-allowEnds.json``, which also remembers, within a transaction, what of it
    must reach the disk before the provider's allowlist and what after it.

    ``early``: an end was given, changed, or taken off a sender who stays listed; written
    before ``allowFrom``, so a crash never leaves a sender listed without the end given. ``late``:
    the ends of the senders this transaction removed from ``allowFrom``, as they were; they
    stay on disk until ``allowFrom`` no longer lists those senders, for the same reason.
    """

    early: bool = False
    late: dict[str, _End] = field(default_factory=dict)

    def before_allowlist(self) -> bytes:
        """The text to write before ``allowFrom``: the ends, those of the senders being
        removed still among them."""
        if not self.late:
            return self.render()
        held = _ObjectDoc(self.path, self.kind, self.provider, self.key, self.head)
        held.entries = {**self.late, **self.entries}
        return held.render()

    def settled(self) -> None:
        """The transaction's changes are on disk: nothing more to order."""
        self.early = False
        self.late.clear()


_MISSING: Any = object()
_HINT = "pairbot left the file as it is; fix it or move it away"


def _new_doc(
    path: Path,
    kind: _Kind[T],
    provider: str,
    key: FileKey | None = None,
    head: dict[str, Any] | None = None,
) -> _Doc[T]:
    """Return an empty doc of the class that holds this kind."""
    doc: _Doc[Any]
    if kind.plain:
        doc = _PlainDoc(path, cast("_Kind[str]", kind), provider, key)
    elif kind is ENDS:
        doc = _EndsDoc(path, ENDS, provider, key)
    else:
        doc = _ObjectDoc(path, kind, provider, key)
    if head is not None:
        doc.head = head
    return cast("_Doc[T]", doc)


def _encode_plain(items: list[str]) -> bytes:
    """Encode strings as list entries joined by ``_SEP``, in one call of the C encoder."""
    return _PLAIN_LIST.encode(items)[1:-1].encode()


def _list_text(text: bytes, before: bytes, after: bytes) -> memoryview:
    """The entries' part of a file rendered as ``before + _OPEN + entries + _CLOSE + after``."""
    return memoryview(text)[len(before) + len(_OPEN) : len(text) - len(_CLOSE) - len(after)]


def _read_top(path: Path, kind: _Kind[Any], data: bytes) -> tuple[dict[str, Any], list[Any], bool]:
    """Parse a file and check its top level; return it, its list, and whether no JSON object
    in it repeats a key. Any problem raises with the file and field named."""
    unique = True

    def no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal unique
        obj = dict(pairs)
        unique = unique and len(obj) == len(pairs)
        return obj

    try:
        doc = json.loads(data, object_pairs_hook=no_repeats if kind.plain else None)
    except RecursionError:  # e.g. 100000 "[": the decoder recurses per level
        raise StoreCorruptError(
            "nested too deeply to be a state file", path=path, hint=_HINT
        ) from None
    except UnicodeDecodeError:
        raise StoreCorruptError("not valid UTF-8", path=path, hint=_HINT) from None
    except json.JSONDecodeError as exc:
        raise StoreCorruptError(
            f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
            path=path,
            hint=_HINT,
        ) from None
    if isinstance(doc, list) and kind is ALLOW:  # Clawdbot's migration reader accepts a bare list
        doc = {"version": SCHEMA_VERSION, kind.list_key: doc}
    if not isinstance(doc, dict):
        raise StoreCorruptError("top level must be a JSON object", path=path, hint=_HINT)
    _check_version(path, doc)
    raw_items = doc.get(kind.list_key, [])
    if not isinstance(raw_items, list):
        raise StoreCorruptError(f"{kind.list_key}: must be a list", path=path, hint=_HINT)
    return doc, raw_items, unique


def _decode_all(path: Path, kind: _Kind[T], provider: str, raw_items: list[Any]) -> list[T]:
    """Decode every entry, in order; a bad one raises with its index and field named.

    A plain list of nothing but strings (every allowlist pairbot writes) is checked and
    put in normal form by C loops; anything else goes entry by entry, to name the bad one.
    """
    if kind.plain and set(map(type, raw_items)) <= {str}:
        return cast("list[T]", _normal_ids(provider, raw_items))
    decode, list_key = kind.decode, kind.list_key
    try:
        return [decode(raw, f"{list_key}[{i}]", provider) for i, raw in enumerate(raw_items)]
    except _Bad as exc:
        raise StoreCorruptError(str(exc), path=path, hint=_HINT) from None


def _parse(path: Path, kind: _Kind[T], provider: str, key: FileKey, data: bytes) -> _Doc[T]:
    """Parse one file; any problem raises with the file and field named, file untouched."""
    top, raw_items, unique = _read_top(path, kind, data)
    items = _decode_all(path, kind, provider, raw_items)
    if kind is REQUESTS:  # refuse a bad approved-to-tell list now, not when the bot reads it
        _decode_notices(path, provider, top.get(APPROVED_KEY))
    head = dict(top)
    head.setdefault("version", SCHEMA_VERSION)
    head.setdefault(kind.list_key, None)
    doc = _new_doc(path, kind, provider, key, head)
    if isinstance(doc, _PlainDoc):  # of repeats, the first place is kept (a set, not a dict:
        ids = cast("list[str]", items)  # ordered dicts of millions build twice as slowly)
        doc.index = set(ids)
        doc.ids = ids if len(doc.index) == len(ids) else list(dict.fromkeys(ids))
        kept = len(doc.ids)
    else:
        entries = cast("_ObjectDoc[T]", doc).entries
        ident = kind.ident
        for item in items:
            entries.setdefault(ident(item), item)  # the first one wins, as every lookup did
        kept = len(entries)
    duplicates = len(items) - kept
    if duplicates:
        log.warning(
            "%s: %d duplicate %s entr%s ignored (kept the first of each)",
            path,
            duplicates,
            kind.list_key,
            "y" if duplicates == 1 else "ies",
        )
    if isinstance(doc, _PlainDoc) and unique and not duplicates and items == raw_items:
        doc.runs = _verbatim_runs(doc, data)
    return doc


def _verbatim_runs(doc: _PlainDoc, data: bytes) -> list[_Text] | None:
    """Return the text of the list exactly as read, if the rest of the file is as pairbot
    would write it; else None (the list is then encoded in bulk at the first write).

    Safe because the caller checked that the list read is exactly the entries (nothing
    stripped, repeated or converted) and that no object in the file repeats a key; with the
    list the last top-level key and the text around it the rendering of every other key, the
    bytes between ``_OPEN`` and ``_CLOSE`` can only be the list's own entries.
    """
    before, after = doc.frame()
    if after != b"\n}\n" or not (
        data.startswith(before + _OPEN) and data.endswith(_CLOSE + after)
    ):
        return None
    return [_list_text(data, before, after)]


def _reparse(old: _ObjectDoc[T], key: FileKey, data: bytes) -> _ObjectDoc[T] | None:
    """Read a new version of a file of objects, decoding only the entries that changed.

    pairbot writes one entry per line (and one top-level key per line), so an entry whose
    text is the text this process holds for an entry is that entry: it is taken as it is,
    and only new or changed entries are parsed and checked. The entries are split, looked up
    and collected by C loops, not line by line in Python. None when the file is not laid out
    as pairbot writes it (Clawdbot's indented entries, a repeated key or entry, a line that
    does not parse): the caller then parses it whole, which names any problem. Another
    writer adding one request to 1,000 costs one entry's decoding, not 1,000.
    """
    if old.texts is None:
        return None  # nothing known to reuse
    try:
        parsed = _split_file(old.kind, data)
        if parsed is None:
            return None
        head, start, end = parsed
        entries = _entries(old, data, start, end)
    except (ValueError, RecursionError, _Bad):  # JSONDecodeError, UnicodeDecodeError too
        return None
    if entries is None:
        return None
    _check_version(old.path, head)
    head.setdefault("version", SCHEMA_VERSION)
    if old.kind is REQUESTS:  # as _parse: a bad approved-to-tell list is refused now
        _decode_notices(old.path, old.provider, head.get(APPROVED_KEY))
    doc = cast("_ObjectDoc[T]", _new_doc(old.path, old.kind, old.provider, key, head))
    doc.entries, doc.texts = entries
    doc.listed = data[start:end]
    return doc


def _split_file(kind: _Kind[Any], data: bytes) -> tuple[dict[str, Any], int, int] | None:
    """A file laid out as pairbot writes it, split: its top-level keys (the list's value a
    placeholder, in its place) and where the text of the list's entries starts and ends;
    None if it is laid out otherwise. Raises what parsing a line raises."""
    if not (data.startswith(b"{\n") and data.endswith(b"\n}\n")):
        return None
    opening = f"\n  {json.dumps(kind.list_key, ensure_ascii=False)}: [\n    ".encode()
    start = data.find(opening)
    if start < 0:  # an empty list is written on its key's line
        head = _head_lines(data[2:-3].split(b"\n"))
        if head is None or head.get(kind.list_key, _MISSING) != []:
            return None
        head[kind.list_key] = None
        return head, 0, 0
    end = data.find(b"\n  ]", start)  # no entry holds a line break: JSON escapes them
    if end < 0:
        return None
    after = data[end + len(b"\n  ]") : -3]  # the keys after the list, if any
    if after and not after.startswith(b",\n"):
        return None
    placeholder = f"  {json.dumps(kind.list_key)}: null{',' if after else ''}".encode()
    lines = [*data[2 : start + 1].split(b"\n")[:-1], placeholder]
    if after:
        lines += after[2:].split(b"\n")
    head = _head_lines(lines)
    return None if head is None else (head, start + len(opening), end)


def _head_lines(lines: list[bytes]) -> dict[str, Any] | None:
    """Top-level keys written one a line (``  "key": value,``, the last without a comma);
    None if they are not. A key repeated is None too (the whole parse takes the last)."""
    head: dict[str, Any] = {}
    for number, line in enumerate(lines):
        last = number == len(lines) - 1
        if not line.startswith(b'  "') or line.endswith(b",") == last:
            return None
        pair = json.loads(b"{" + line.removesuffix(b",") + b"}")
        if not isinstance(pair, dict) or len(pair) != 1 or pair.keys() & head.keys():
            return None
        head.update(pair)
    return head


def _entries(
    old: _ObjectDoc[T], data: bytes, start: int, end: int
) -> tuple[dict[str, T], dict[str, bytes]] | None:
    """The entries of the list text ``data[start:end]`` by identity, and their texts in
    pairbot's form: known ones taken from ``old`` (C loops), the others decoded. None if an
    identity repeats.

    The usual change of another writer adds entries at the end (a request): when the list
    starts with the list ``old`` holds, its entries are taken whole and only the rest is
    split and read."""
    prior = old.listed
    if prior and data.startswith(prior, start):
        if start + len(prior) == end:
            return dict(old.entries), dict(old.texts or {})
        if data.startswith(_SEP, start + len(prior)):
            rest = start + len(prior) + len(_SEP)
            added = _entries(_ObjectDoc(old.path, old.kind, old.provider), data, rest, end)
            if added is None or not added[0].keys().isdisjoint(old.entries):
                return None
            return {**old.entries, **added[0]}, {**(old.texts or {}), **added[1]}
    texts = data[start:end].split(_SEP) if end > start else []
    held = old.texts or {}
    known = dict(zip(held.values(), held.keys(), strict=True))
    idents = list(map(known.get, texts))
    items = list(map(old.entries.get, idents))  # type: ignore[arg-type]  # None: unknown
    kind = old.kind
    for number in compress(range(len(idents)), map(operator.is_, idents, repeat(None))):
        raw = json.loads(texts[number])
        item = kind.decode(raw, f"{kind.list_key}[{number}]", old.provider)
        items[number] = item
        idents[number] = kind.ident(item)
        texts[number] = json.dumps(kind.encode(item), ensure_ascii=False).encode()
    entries = dict(zip(cast("list[str]", idents), cast("list[T]", items), strict=True))
    if len(entries) != len(idents):
        return None  # repeated: the whole parse keeps the first, and warns
    return entries, dict(zip(entries, texts, strict=True))


# ---------------------------------------------------------------------------------------------
# The store


GATE_GRACE = 0.05
"""Seconds for which the gate on the event loop (:meth:`JsonFileStore.allowed_soon`) may answer
from the allowlist version it holds after that version was last seen current, while the
changed file is read in a worker thread."""


class _GateFile(msgspec.Struct):
    """What the gate needs of an allowlist file: its version and its list of ids. Other keys
    are skipped unread; a file of another shape is read the slow way, which names the
    problem (or accepts what Clawdbot may write: ids as numbers, a bare list)."""

    version: int = SCHEMA_VERSION
    allow_from: list[str] = msgspec.field(default_factory=list, name="allowFrom")


_GATE_FILE = msgspec.json.Decoder(_GateFile)


class JsonFileStore:
    """The JSON state dir store. Thread-safe; safe across processes sharing the dir."""

    def __init__(
        self, state_dir: Path, *, lock_timeout: float = 10.0, gate_grace: float = GATE_GRACE
    ) -> None:
        self._set_paths(state_dir, lock_timeout)
        self._gate_grace = gate_grace
        for directory in (state_dir, self.credentials_dir, self.nodes_dir):
            ensure_private_dir(directory)
        with self._hold():  # a commit a killed writer left is finished before the sweep
            remove_debris(self.state_dir)
            remove_debris(self.credentials_dir)
            remove_debris(self.nodes_dir)

    def _set_paths(self, state_dir: Path, lock_timeout: float) -> None:
        self.state_dir = state_dir
        self.credentials_dir = state_dir / "credentials"
        self.nodes_dir = state_dir / "nodes"
        self.audit_path = state_dir / "audit.jsonl"
        self._pairing_paths = {
            name: self.credentials_dir / f"{name}-pairing.json" for name in KNOWN_PROVIDERS
        }
        self._allow_paths = {
            name: self.credentials_dir / f"{name}-allowFrom.json" for name in KNOWN_PROVIDERS
        }
        self._allow_strs = {name: str(path) for name, path in self._allow_paths.items()}
        self._ends_paths = {
            name: self.credentials_dir / f"{name}-allowEnds.json" for name in KNOWN_PROVIDERS
        }
        self._pending_path = self.nodes_dir / "pending.json"
        self._paired_path = self.nodes_dir / "paired.json"
        self._invites_path = self.nodes_dir / INVITES_NAME
        self.cursors_path = state_dir / "cursors.json"
        self._lock = StateLock(state_dir / ".lock", timeout=lock_timeout)
        self._docs: dict[Path, _Doc[Any]] = {}
        self._checked: set[Path] = set()  # docs re-validated against disk in this transaction
        self._allow_cache: dict[str, _GateEntry] = {}
        """Per provider, for the gate: the key of the allowlist read, the senders it lists
        whose grant does not end, and those whose grant ends, with the end."""
        self._gate_grace = GATE_GRACE
        self._gate_seen: dict[str, float] = {}
        """Per provider, when (``time.monotonic``) the gate's version was last seen current."""
        self._gate_reads: dict[str, Future[None]] = {}
        """Per provider, the allowlist read running in a worker thread, if one is."""
        self._gate_lock = threading.Lock()
        self._epochs: dict[str, int] = {}
        """Per provider, how many versions of its pairing file this store has read from disk
        (not written itself): see :meth:`pending_epoch`."""

    # paths -----------------------------------------------------------------------------------

    def pairing_path(self, provider: str) -> Path:
        """Return ``credentials/<provider>-pairing.json``."""
        try:
            return self._pairing_paths[provider]
        except KeyError:
            raise unknown_provider(provider) from None

    def allow_path(self, provider: str) -> Path:
        """Return ``credentials/<provider>-allowFrom.json``."""
        try:
            return self._allow_paths[provider]
        except KeyError:
            raise unknown_provider(provider) from None

    def ends_path(self, provider: str) -> Path:
        """Return ``credentials/<provider>-allowEnds.json``."""
        try:
            return self._ends_paths[provider]
        except KeyError:
            raise unknown_provider(provider) from None

    def access_report(self) -> list[tuple[bool, str]]:
        """Check modes and owners of the state dirs and files: ``(ok, message)`` each.

        Anything group- or world-accessible, or owned by another user, is a problem: these
        files decide who reaches the owner's assistant.
        """
        dirs = [self.state_dir, self.credentials_dir, self.nodes_dir]
        return access_report([*dirs, *self.state_files()])

    @classmethod
    def inspect(cls, state_dir: Path) -> list[tuple[bool, str]]:
        """Everything ``pairbot doctor`` checks in a state dir: ``(ok, message)`` each.

        Read-only and lock-free: it creates, locks and changes nothing, so it also works on a
        dir the store cannot open, and reports every problem it finds, not just the first.
        Checked: what each path is (a symlinked dir, file or lock is a problem), modes and
        owners, that every state file parses, and that every audit line is a JSON object.
        """
        unopened = cls.__new__(cls)
        unopened._set_paths(state_dir, lock_timeout=0.0)
        return unopened._inspect()

    def _inspect(self) -> list[tuple[bool, str]]:
        report: list[tuple[bool, str]] = []
        unusable: list[Path] = []
        for directory in (self.state_dir, self.credentials_dir, self.nodes_dir):
            if any(p in unusable for p in directory.parents):
                continue
            st = _lstat(directory, report)
            if st is not None and stat.S_ISLNK(st.st_mode):
                # The state dir itself may live elsewhere (another disk); the dirs inside it
                # are pairbot's own and never links. Either way, look at what it points to.
                if directory != self.state_dir:
                    report.append(
                        (
                            False,
                            f"{directory} is a symlink; state dirs inside "
                            f"{self.state_dir} must be real directories",
                        )
                    )
                st = _lstat(directory, report, follow=True)
                if st is None:
                    report.append((False, f"{directory} is a symlink to nothing"))
                    unusable.append(directory)
                    continue
            if st is None:
                if directory == self.state_dir and not report:
                    report.append((True, f"{directory} does not exist yet (made on first use)"))
                unusable.append(directory)
            elif not stat.S_ISDIR(st.st_mode):
                report.append((False, f"{directory} is {file_type(st)}, not a directory"))
                unusable.append(directory)
            else:
                report += access_lines(directory, st)
        if self.state_dir in unusable:
            return report
        lock = _lstat(self._lock.path, report)
        if lock is not None and stat.S_ISLNK(lock.st_mode):
            report.append(
                (
                    False,
                    f"{self._lock.path}: lock file is a symlink; pairbot does "
                    "not follow it (remove it; pairbot makes a new one)",
                )
            )
        elif lock is not None and not stat.S_ISREG(lock.st_mode):
            report.append(
                (False, f"{self._lock.path}: lock file is {file_type(lock)}, not a regular file")
            )
        for path in self.state_files():
            if path.parent in unusable:
                continue
            st = _lstat(path, report)
            if st is None:
                continue
            if stat.S_ISLNK(st.st_mode):
                report.append(
                    (
                        False,
                        f"{path} is a symlink; state files must be regular "
                        "files (a link can point pairbot anywhere)",
                    )
                )
                if not path.exists():
                    continue  # a dangling link: nothing to parse
            elif stat.S_ISREG(st.st_mode):
                report += access_lines(path, st)
            report.append(self._check_file(path))
        return report

    def _check_file(self, path: Path) -> tuple[bool, str]:
        try:
            doc = self._load(path)
        except StoreError as exc:
            return False, str(exc)
        if doc is not None and doc.kind is ALLOW and "*" in doc.identities():
            return False, f'{path} contains "*"; pairbot ignores it (allow senders by id)'
        return True, f"{path} parses"

    def state_files(self) -> list[Path]:
        """Return every state file pairbot may write, existing or not."""
        files = [
            p
            for name in KNOWN_PROVIDERS
            for p in (self.pairing_path(name), self.allow_path(name), self.ends_path(name))
        ]
        return [
            *files,
            self._pending_path,
            self._paired_path,
            self._invites_path,
            self.cursors_path,
            self.audit_path,
        ]

    # reading ---------------------------------------------------------------------------------

    def _doc(self, path: Path, kind: _Kind[T], provider: str = "") -> _Doc[T]:
        """Return the current version of a file (cached unless another writer changed it).

        Called only under the lock: a file checked once in a transaction cannot change until
        the transaction ends, so it is stat'ed at most once per transaction.
        """
        cached = self._docs.get(path)
        if cached is not None and (
            path in self._checked or cached.dirty or cached.key == stat_key(path)
        ):
            self._checked.add(path)
            return cached
        loaded = read_versioned(path)
        if kind is REQUESTS:  # a version this store did not write (see pending_epoch)
            self._epochs[provider] = self._epochs.get(provider, 0) + 1
        if loaded is None:
            doc = _new_doc(path, kind, provider)
        elif isinstance(cached, _ObjectDoc) and not cached.dirty:  # another writer changed it
            doc = _reparse(cached, *loaded) or _parse(path, kind, provider, *loaded)
        else:
            doc = _parse(path, kind, provider, *loaded)
        self._docs[path] = doc
        self._checked.add(path)
        return doc

    def load_check(self, path: Path) -> None:
        """Parse one state file and raise if it is unusable (used by ``pairbot doctor``).

        For ``audit.jsonl`` every line must be one JSON object (the first bad line is named).
        """
        self._load(path)

    def _load(self, path: Path) -> _Doc[Any] | None:
        loaded = read_versioned(path)
        if loaded is None:
            return None
        if path == self.audit_path:
            _check_audit(path, loaded[1])
            return None
        if path == self.cursors_path:
            _decode_cursors(path, loaded[1])
            return None
        kind, provider = self._kind_of(path)
        return _parse(path, kind, provider, *loaded)

    def recheck(self, where: Path) -> bool:
        """True if ``where`` is one of this store's files and still cannot be loaded."""
        if where not in self.state_files():
            return False
        try:
            self.load_check(where)
        except StoreError:
            return True
        return False

    def check(self) -> None:
        """Raise the error of the first state file that cannot be used (the start-up check).

        Every JSON state file must parse. ``audit.jsonl`` must be a readable regular file; its
        lines are not checked (readers skip a bad line, such as one torn by a crash).

        Raises:
            StoreError: naming the file and its problem; nothing is changed on disk.
        """
        for path in self.state_files():
            if path == self.audit_path:
                check_readable(path)
            else:
                self.load_check(path)

    def _kind_of(self, path: Path) -> tuple[_Kind[Any], str]:
        if path.parent == self.nodes_dir:
            nodes: dict[str, _Kind[Any]] = {"pending.json": NODE_REQUESTS, INVITES_NAME: INVITES}
            return nodes.get(path.name, PAIRED), ""
        provider, _, suffix = path.name.rpartition("-")
        kinds: dict[str, _Kind[Any]] = {"allowFrom.json": ALLOW, "allowEnds.json": ENDS}
        return kinds.get(suffix, REQUESTS), provider

    def allowed_until(self, provider: str, sender_id: str) -> datetime | None:
        """Answer from memory; re-read the allowlist (and its ends) only when its file changed
        on disk (every change to the ends rewrites it too).

        The hot path is one ``stat`` and three dict lookups: no Path objects are built.
        The re-read, if one is needed, is made on the caller's thread: the event loop asks
        :meth:`allowed_soon` instead.
        """
        path = self._allow_strs.get(provider)
        if path is None:
            raise unknown_provider(provider)
        key = stat_key(path)
        cached = self._allow_cache.get(provider)
        if cached is None or cached[0] != key:
            cached = self._read_allow_set(provider, self._allow_paths[provider])
        return _gate_answer(cached, sender_id)

    def allowed_soon(self, provider: str, sender_id: str) -> datetime | Future[None] | None:
        """:meth:`allowed_until` for the event loop: never reads a file on the caller's thread.

        If the allowlist changed on disk, it is read in a worker thread. Meanwhile the answer
        comes from the version held, if that was seen current within the last
        ``gate_grace`` seconds (:data:`GATE_GRACE`); otherwise (the gate had not looked for
        longer, or the read takes longer) the read's future is returned, for the caller to
        wait on off the loop and ask again. So no message is answered from a version that
        was superseded more than ``gate_grace`` before it, and no message waits while the
        gate is looked at that often.
        """
        path = self._allow_strs.get(provider)
        if path is None:
            raise unknown_provider(provider)
        key = stat_key(path)
        cached = self._allow_cache.get(provider)
        now = time.monotonic()
        if cached is not None and cached[0] == key:
            self._gate_seen[provider] = now
        else:
            # Whether the version held was seen current lately, asked before the read starts
            # (a quick read would make the version it reads look "seen" just now).
            held = now - self._gate_seen.get(provider, -math.inf) <= self._gate_grace
            reading = self._read_soon(provider)
            if cached is None or not held:
                return reading
        return _gate_answer(cached, sender_id)

    def pending_epoch(self, provider: str) -> Hashable:
        """How many versions of the provider's pairing file this store has read from disk,
        while the one it holds is the one on disk (one ``stat``); the key of the file on
        disk while it is not (another process changed it, and this store has not read it
        yet). Its own writes change neither: they are its own."""
        path = self.pairing_path(provider)
        key = stat_key(path)
        doc = self._docs.get(path)
        if doc is None or (doc.key != key and not doc.dirty):
            return ("on disk", key)
        return self._epochs.get(provider, 0)

    def _read_soon(self, provider: str) -> Future[None]:
        """The allowlist read in a worker thread: the one running, or a new one."""
        with self._gate_lock:
            reading = self._gate_reads.get(provider)
            if reading is None:
                reading = self._gate_reads[provider] = Future()
                threading.Thread(
                    target=self._read_in_thread,
                    args=(provider, reading),
                    name=f"pairbot-gate-{provider}",
                    daemon=True,
                ).start()
        return reading

    def _read_in_thread(self, provider: str, reading: Future[None]) -> None:
        failed: BaseException | None = None
        try:
            self._read_allow_set(provider, self._allow_paths[provider])
        except BaseException as exc:  # handed to whoever waits (a bad file: a StoreError)
            failed = exc
        with self._gate_lock:
            del self._gate_reads[provider]
        if failed is None:
            reading.set_result(None)
        else:
            reading.set_exception(failed)

    def _read_allow_set(self, provider: str, path: Path) -> _GateEntry:
        # Straight from the JSON list to the set: the gate needs no order, no repeats removed
        # and no text, so only the set is built. The ends are read after the list: a writer
        # writes them before a list that lists their senders (see _commit).
        began = time.monotonic()  # the version read was current then, at least
        loaded = read_versioned(path)
        if loaded is None:
            key: FileKey | None = None
            ids: set[str] = set()
        else:
            key, data = loaded
            ids = _gate_ids(path, provider, data)
            ids.difference_update(NEVER_ALLOWED)
        ends_path = self._ends_paths[provider]
        read = read_versioned(ends_path)
        ends = {} if read is None else _end_times(_parse(ends_path, ENDS, provider, *read))
        entry = _gate_entry(key, ids, ends)
        self._allow_cache[provider] = entry
        self._gate_seen[provider] = began
        return entry

    def read_audit(self, *, limit: int | None = None) -> list[dict[str, object]]:
        """Return the last ``limit`` audit records, oldest first (unparsable lines skipped)."""
        return list(self.iter_audit(limit=limit))

    def iter_audit(self, *, limit: int | None = None) -> Iterator[dict[str, object]]:
        """Yield the last ``limit`` audit records (all when None), oldest first.

        The log is read line by line from where those records start (found by reading back
        from the end), so memory does not grow with the log or with ``limit``. Lines that are
        not a JSON object are skipped.
        """
        fd = open_for_reading(self.audit_path)
        if fd is None:
            return
        with os.fdopen(fd, "rb") as file:
            if limit is not None:
                file.seek(last_lines_offset(file, limit))
            for line in file:
                record = _audit_record(line)
                if record is not None:
                    yield record

    def audit_since(
        self,
        position: str | None,
        *,
        limit: int = AUDIT_PAGE,
        skip_gap: bool = False,  # noqa: ARG002 (an appended file has no gaps)
    ) -> AuditPage:
        """The records after ``position`` (``<inode>:<byte offset>`` in ``audit.jsonl``).

        Only whole lines are read: a line still being appended is left for the next read.
        Lines that are not a JSON object are passed over. Another file at the path (a new
        inode) or one shorter than the offset is read from its start.
        """
        fd = open_for_reading(self.audit_path)
        if fd is None:
            return AuditPage(records=[], end="0:0")
        with os.fdopen(fd, "rb") as file:
            st = os.fstat(file.fileno())
            if position is None:
                return AuditPage(records=[], end=f"{st.st_ino}:{_whole_lines_end(file)}")
            inode, _, offset_text = position.partition(":")
            offset = int(offset_text) if offset_text.isdigit() else 0
            if inode != str(st.st_ino) or offset > st.st_size:
                offset = 0
            file.seek(offset)
            records: list[tuple[str, dict[str, Any]]] = []
            while len(records) < limit:
                line = file.readline()
                if not line.endswith(b"\n"):
                    break
                offset += len(line)
                record = _audit_record(line)
                if record is not None:
                    records.append((f"{st.st_ino}:{offset}", record))
        return AuditPage(records=records, end=f"{st.st_ino}:{offset}", more=len(records) >= limit)

    # cursors ---------------------------------------------------------------------------------

    def cursor(self, key: str) -> str | None:
        """Return the value last saved under ``key`` in ``cursors.json``, or None.

        Raises:
            StoreError: the file is unreadable or not a cursors file (named, left as it is).
        """
        with self._hold():
            return self._read_cursors().get(key)

    def save_cursor(self, key: str, value: str) -> None:
        """Store ``value`` under ``key``: ``cursors.json`` rewritten atomically (0600), the
        other keys and any unknown top-level keys kept.

        Raises:
            StoreError: the file is unreadable (left as it is), or the write failed.
        """
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError("a cursor's key and value are strings")
        with self._hold():
            loaded = read_versioned(self.cursors_path)
            top = {} if loaded is None else _decode_cursors(self.cursors_path, loaded[1])
            cursors = dict(top.get("cursors", {}))
            cursors[key] = value
            data = {**top, "version": SCHEMA_VERSION, "cursors": cursors}
            text = json.dumps(data, ensure_ascii=False, indent=2).encode() + b"\n"
            try:
                atomic_write(self.cursors_path, text, after=None if loaded is None else loaded[0])
            except OSError as exc:
                raise os_error(exc, self.cursors_path, "write failed") from exc

    def _read_cursors(self) -> dict[str, str]:
        loaded = read_versioned(self.cursors_path)
        if loaded is None:
            return {}
        return dict(_decode_cursors(self.cursors_path, loaded[1]).get("cursors", {}))

    # writing ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self, *, shared: bool = False) -> Iterator[_Txn]:
        """Take the lock, hand out a view, and commit what changed on a clean exit.

        If the body or the commit fails in any way (including KeyboardInterrupt mid-write),
        every uncommitted change is dropped from memory, so the next transaction sees exactly
        what is on disk. One transaction runs at a time: a ``shared`` one is exclusive.
        """
        del shared  # one writer at a time is what the state dir's lock file allows
        with self._hold() as held:
            self._checked.clear()
            try:
                txn = _Txn(self)
                yield txn
                self._commit(txn, held)
            except BaseException:
                self._forget_dirty()
                raise
            finally:
                self._checked.clear()

    @contextlib.contextmanager
    def _hold(self) -> Iterator[Held]:
        """Hold the state lock, having first finished a commit whose writer was killed."""
        with self._lock.hold() as held:
            if held.journal:
                self._finished(finish(held))
            yield held

    def _finished(self, done: Finished | None) -> None:
        """Say what finishing an interrupted commit did; if none of its files could be put
        in place, mark each of its audit lines not applied (a line saying so, after it)."""
        if done is None:
            return
        if not done.refused:
            log.info("finished a commit its writer left: %d file(s) put in place", done.placed)
            return
        log.warning(
            "a commit could not be finished: %s was changed by another writer or could not "
            "be replaced; %d of its %d file(s) are in place",
            done.first_refused,
            done.already + done.placed,
            done.already + done.placed + done.refused,
        )
        if done.already or done.placed or not done.lines:
            return  # the first files (the grants) are in place: the lines stand
        marks = [_not_applied(line) for line in done.lines.splitlines()]
        try:
            append_durably(self.audit_path, "".join(marks).encode())
        except OSError as exc:
            self._audit_failed(len(marks), exc)

    def _forget_dirty(self) -> None:
        for path in [p for p, d in self._docs.items() if d.dirty]:
            del self._docs[path]

    def _commit(self, txn: _Txn, held: Held) -> None:
        dirty = [d for d in self._docs.values() if d.dirty]
        # Grants first, pending second: a crash between them leaves "still pending", never
        # "request consumed and grant lost". (The notice that tells of an approval is in the
        # pending file, swapped for the request in one write, so it never precedes its grant.)
        # A grant's end goes before the allowlist that lists its sender, and stays until after
        # the allowlist that no longer does: a crash never leaves a sender listed without the
        # end they were given (allowed for good). A spent invite goes before even the grant it
        # made: a crash between them leaves it spent with nothing paired (the owner makes
        # another), never usable twice.
        invites = [d for d in dirty if d.kind is INVITES]
        ends = [d for d in dirty if isinstance(d, _EndsDoc)]
        grants = [d for d in dirty if d.kind is ALLOW or d.kind is PAIRED]
        rest = [d for d in dirty if all(d.kind is not k for k in (ALLOW, PAIRED, ENDS, INVITES))]
        writes: list[tuple[_Doc[Any], Callable[[], bytes]]] = [
            *((d, partial(_render, d)) for d in invites),
            *((d, d.before_allowlist) for d in ends if d.early),
            *((d, partial(_render, d)) for d in grants),
            *((d, partial(_render, d)) for d in ends if d.late or not d.early),
            *((d, partial(_render, d)) for d in rest),
        ]
        rendered = [(doc, write()) for doc, write in writes]  # a failure here writes nothing
        staged = self._stage(rendered)
        lines = "".join(_audit_line(e) for e in txn.events).encode()
        failed = commit(
            held,
            staged,
            self.audit_path,
            lines,
            on_log_error=partial(self._audit_failed, len(txn.events)),
        )
        if failed is not None and failed.refused:
            self._finished(failed)
            where = failed.first_refused or staged[0].path
            if failed.error is None:
                raise StoreError("changed by another writer during the commit", path=where)
            raise os_error(failed.error, where, "write failed") from failed.error
        for (doc, _), one in zip(rendered, staged, strict=True):
            doc.key = one.key
        for doc in dirty:
            if doc.kind is ALLOW and doc.provider in self._allow_cache:
                # A gate in this process answers from the new version without a re-read; a
                # process that never asked (the CLI) builds no set.
                self._allow_cache[doc.provider] = _gate_entry(
                    doc.key, _allow_set(doc.identities()), self._gate_ends(doc.provider)
                )
                self._gate_seen[doc.provider] = time.monotonic()
            doc.dirty = False
            if isinstance(doc, _EndsDoc):
                doc.settled()

    @staticmethod
    def _stage(rendered: list[tuple[_Doc[Any], bytes]]) -> list[Staged]:
        """Each new text written beside its file, fsynced; nothing left behind on a failure.
        A file written twice (a grant's end, before and after the allowlist) is staged over
        its first new version."""
        staged: list[Staged] = []
        keys: dict[Path, FileKey | None] = {}
        try:
            for doc, data in rendered:
                one = stage(doc.path, data, after=keys.get(doc.path, doc.key))
                keys[doc.path] = one.key
                staged.append(one)
        except OSError as exc:
            unstage(staged)
            raise os_error(exc, doc.path, "write failed") from exc
        except BaseException:
            unstage(staged)
            raise
        return staged

    def _gate_ends(self, provider: str) -> dict[str, datetime]:
        """The ends the gate keeps for ``provider``, as this commit leaves them (called under
        the lock: the doc is the one the transaction changed, or the one on disk)."""
        return _end_times(self._doc(self._ends_paths[provider], ENDS, provider))

    def _audit_failed(self, count: int, exc: OSError) -> None:
        """The audit lines of a change could not be appended. The change goes ahead: a failed
        append does not undo or deny it, so the caller goes on to report what was done (an
        approved node's token included), and a one-line warning (no code, no token) says the
        audit log is missing these lines."""
        log.warning(
            "%s: %d audit line(s) could not be written: %s; the audit log does "
            "not show this change",
            self.audit_path,
            count,
            exc.strerror or exc,
        )

    def close(self) -> None:
        """Drop cached state (the lock file is kept; it is reused by every process)."""
        self._docs.clear()
        self._allow_cache.clear()


class _Txn(ScannedRequests):
    """The view a transaction hands out; see :class:`bot.core.protocols.StateTxn`."""

    __slots__ = ("_store", "events")

    def __init__(self, store: JsonFileStore) -> None:
        self._store = store
        self.events: list[AuditEvent] = []

    def _requests(self, provider: str) -> _Doc[PendingRequest]:
        return self._store._doc(self._store.pairing_path(provider), REQUESTS, provider)

    def _allow(self, provider: str) -> _Doc[str]:
        return self._store._doc(self._store.allow_path(provider), ALLOW, provider)

    def _ends(self, provider: str) -> _EndsDoc:
        return cast("_EndsDoc", self._store._doc(self._store.ends_path(provider), ENDS, provider))

    def _node_requests(self) -> _Doc[NodeRequest]:
        return self._store._doc(self._store._pending_path, NODE_REQUESTS)

    def _paired(self) -> _Doc[PairedNode]:
        return self._store._doc(self._store._paired_path, PAIRED)

    def _invites(self) -> _Doc[NodeInvite]:
        return self._store._doc(self._store._invites_path, INVITES)

    # reading: lists are copies, so later changes leave them as they are

    def requests(self, provider: str) -> list[PendingRequest]:
        return self._requests(provider).items()

    # the questions ScannedRequests answers by scanning, answered from the doc's dict instead

    def request(self, provider: str, sender_id: str) -> PendingRequest | None:
        return cast("_ObjectDoc[PendingRequest]", self._requests(provider)).entries.get(sender_id)

    def request_count(self, provider: str) -> int:
        return len(self._requests(provider).identities())

    def code_taken(self, code: str) -> bool:
        return any(
            r.code == code
            for name in KNOWN_PROVIDERS
            for r in cast("_ObjectDoc[PendingRequest]", self._requests(name)).entries.values()
        )

    def allow_from(self, provider: str) -> list[str]:
        return self._allow(provider).items()

    def allow_has(self, provider: str, sender_id: str) -> bool:
        return sender_id in self._allow(provider)

    def allow_end(self, provider: str, sender_id: str) -> datetime | None:
        if sender_id not in self._allow(provider):
            return None  # an end of a sender not listed (left by a crash) is no grant's
        end = self._ends(provider).entries.get(sender_id)
        return None if end is None else end.ends_at

    def allow_ends(self, provider: str, *, by: datetime | None = None) -> dict[str, datetime]:
        listed = self._allow(provider)
        return {
            sender_id: end.ends_at
            for sender_id, end in self._ends(provider).entries.items()
            if sender_id in listed and (by is None or end.ends_at <= by)
        }

    def node_requests(self) -> list[NodeRequest]:
        return self._node_requests().items()

    def paired_nodes(self) -> list[PairedNode]:
        return self._paired().items()

    def notices(self) -> list[ApprovalNotice]:
        found = [
            n
            for name in KNOWN_PROVIDERS
            for n in _decode_notices(
                self._store.pairing_path(name), name, self._requests(name).head.get(APPROVED_KEY)
            )
        ]
        return sorted(found, key=lambda n: n.approved_at)

    def invites(self) -> list[NodeInvite]:
        return self._invites().items()

    def invite_with_hash(self, secret_hash: str) -> NodeInvite | None:
        return invite_with_hash(self.invites(), secret_hash)

    # adding, or replacing the entry of the same identity

    def put_request(self, request: PendingRequest) -> None:
        self._requests(request.provider).put(request)

    def allow(self, provider: str, sender_id: str, *, until: datetime | None = None) -> bool:
        doc, ends = self._allow(provider), self._ends(provider)
        added = sender_id not in doc
        had = ends.entries.get(sender_id)  # when added: an end a crash left, replaced
        if until is not None:
            until = until.replace(microsecond=until.microsecond // 1000 * 1000)  # as written
        if (had.ends_at if had is not None else None) != until:
            if until is None:
                ends.drop(sender_id)
            else:
                ends.put(_End(id=sender_id, ends_at=until, extra=had.extra if had else {}))
            ends.early = True
            doc.dirty = True  # rewritten, so gates elsewhere (they watch it) see the new end
        if added:
            doc.put(sender_id)
        return added

    def put_node_request(self, request: NodeRequest) -> None:
        self._node_requests().put(request)

    def put_paired_node(self, node: PairedNode) -> None:
        self._paired().put(node)

    def put_invite(self, invite: NodeInvite) -> None:
        self._invites().put(invite)

    def spend_invite(self, invite_id: str, *, node_id: str, at: datetime) -> bool:
        doc = cast("_ObjectDoc[NodeInvite]", self._invites())
        invite = doc.entries.get(invite_id)
        if invite is None or not invite.live(at):
            return False
        doc.put(replace(invite, used_at=at, used_by=node_id))
        return True

    def put_notice(self, notice: ApprovalNotice) -> None:
        doc = self._requests(notice.provider)
        listed = doc.head.get(APPROVED_KEY) or []
        kept = [e for e in listed if not _is_notice_of(e, notice.provider, notice.sender_id)]
        doc.head[APPROVED_KEY] = [*kept, _encode_notice(notice)]
        doc.dirty = True

    # removing: whether it was there

    def drop_request(self, provider: str, sender_id: str, *, code: str | None = None) -> bool:
        if code is not None and self._same_code(provider, sender_id, code) is False:
            return False
        return self._requests(provider).drop(sender_id)

    def disallow(self, provider: str, sender_id: str, *, ending: datetime | None = None) -> bool:
        if ending is not None and self.allow_end(provider, sender_id) != ending:
            return False
        if not self._allow(provider).drop(sender_id):
            return False
        ends = self._ends(provider)
        end = ends.entries.get(sender_id)
        if end is not None and ends.drop(sender_id):
            ends.late[sender_id] = end  # off the disk only once allowFrom no longer lists them
        return True

    def drop_node_request(self, request_id: str) -> bool:
        return self._node_requests().drop(request_id)

    def drop_paired_node(self, node_id: str) -> bool:
        return self._paired().drop(node_id)

    def drop_invite(self, invite_id: str) -> bool:
        return self._invites().drop(invite_id)

    def drop_notice(self, provider: str, sender_id: str) -> bool:
        doc = self._requests(provider)
        listed = doc.head.get(APPROVED_KEY) or []
        kept = [e for e in listed if not _is_notice_of(e, provider, sender_id)]
        if len(kept) == len(listed):
            return False
        if kept:
            doc.head[APPROVED_KEY] = kept
        else:
            del doc.head[APPROVED_KEY]  # an empty list leaves Clawdbot's shape as it was
        doc.dirty = True
        return True

    def audit(self, event: AuditEvent) -> None:
        self.events.append(event)


def _is_notice_of(entry: Mapping[str, Any], provider: str, sender_id: str) -> bool:
    """Whether an approved-to-tell entry (checked when its file was read) is this sender's,
    whatever case an older writer stored its id in."""
    return _normal_id(provider, str(entry.get("id"))) == sender_id


def _lstat(
    path: Path, report: list[tuple[bool, str]], *, follow: bool = False
) -> os.stat_result | None:
    """``lstat`` (or ``stat``) a path; None if missing, or (reported) if it cannot be used."""
    try:
        return path.stat() if follow else path.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        report.append((False, str(os_error(exc, path, "cannot be used"))))
        return None


def _render(doc: _Doc[Any]) -> bytes:
    try:
        return doc.render()
    except RecursionError:  # a kept unknown value parsed just under the limit, not over it
        raise StoreCorruptError(
            "nested too deeply to be written back",
            path=doc.path,
            hint="pairbot left the file as it is; fix it or move it away",
        ) from None


_GateEntry = tuple[FileKey | None, AbstractSet[str], dict[str, datetime]]


def _gate_answer(entry: _GateEntry, sender_id: str) -> datetime | None:
    """The gate's answer from what it keeps of an allowlist (see :func:`_gate_entry`)."""
    if sender_id in entry[1]:  # for good: the one lookup this costs, as before ends
        return FOREVER
    ends = entry[2]
    return ends.get(sender_id) if ends else None


_GATE_STEP = 1 << 17
"""Bytes of an allowlist's entries the gate's read decodes in one step (about 7,000 ids,
well under a millisecond) before it lets other threads (the event loop's) have the GIL."""
_GATE_LIST = msgspec.json.Decoder(list[str])
_GATE_KEY = f"{json.dumps(ALLOW.list_key)}: ".encode()


def _gate_ids(path: Path, provider: str, data: bytes) -> set[str]:
    """The ids an allowlist file lists, in normal form, read for the gate: by msgspec, which
    checks only what the gate needs (a version it knows, a list of strings) and skips the
    rest unread (about 0.1 µs an entry); a file of another shape the slow way, which names
    what is wrong with it.

    A file laid out as pairbot writes it (one id a line) is read in steps of
    :data:`_GATE_STEP` bytes, each a few C calls, with the GIL let go between them: read in a
    worker thread, one long C call would hold up the event loop's thread as surely as a
    read on the loop (by the whole read: 10 ms and more at 100,000 ids)."""
    steps = _gate_steps(data)
    if steps is None:
        try:
            top = _GATE_FILE.decode(data)
        except msgspec.MsgspecError:
            return set(_decode_all(path, ALLOW, provider, _read_top(path, ALLOW, data)[1]))
        _check_version(path, {"version": top.version})
        return set(_normal_ids(provider, top.allow_from))
    version, runs = steps
    _check_version(path, {"version": version})
    ids: set[str] = set()
    for run in runs:
        try:
            listed = _GATE_LIST.decode(run)
        except msgspec.MsgspecError:  # an entry that is not a string: the slow way names it
            return set(_decode_all(path, ALLOW, provider, _read_top(path, ALLOW, data)[1]))
        ids.update(_normal_ids(provider, listed))
        time.sleep(0)  # lets a thread waiting for the GIL (the event loop's) have it now
    return ids


def _gate_steps(data: bytes) -> tuple[int, Iterator[bytes]] | None:
    """An allowlist file laid out as pairbot writes it: its version, and its entries as JSON
    lists of about :data:`_GATE_STEP` bytes each (split between two entries); None if it is
    laid out otherwise, or its frame (the file with an empty list) does not parse.

    The list found is the top-level one: the frame must decode with an empty top-level
    ``allowFrom`` where the list was cut out (JSON strings hold no line break, and pairbot
    writes every other key on one line, so the list ends at the last line that closes
    one)."""
    found = data.find(_GATE_KEY + _OPEN)
    if found < 0:
        return None
    start = found + len(_GATE_KEY) + len(_OPEN)
    end = data.rfind(_CLOSE, start)  # the last: no value after the list spans lines
    if end < 0:
        return None
    try:
        frame = _GATE_FILE.decode(
            data[: found + len(_GATE_KEY)] + b"[]" + data[end + len(_CLOSE) :]
        )
    except msgspec.MsgspecError:
        return None
    if frame.allow_from:
        return None

    view = memoryview(data)

    def runs() -> Iterator[bytes]:
        position = start
        while position < end:
            cut = data.find(_SEP, min(position + _GATE_STEP, end), end)
            stop = end if cut < 0 else cut
            yield b"".join((b"[", view[position:stop], b"]"))  # one copy of the step
            position = stop + len(_SEP)

    return frame.version, runs()


def _gate_entry(
    key: FileKey | None, ids: AbstractSet[str], ends: dict[str, datetime]
) -> _GateEntry:
    """What the gate keeps of a provider's allowlist: its key, the listed senders whose grant
    does not end (a set: one lookup answers them), and the listed ones whose grant ends."""
    timed = {ident: end for ident, end in ends.items() if ident in ids}
    if timed and isinstance(ids, set):
        ids.difference_update(timed)  # a set of its own, just read: no copy of millions
    elif timed:
        ids = ids - timed.keys()
    return key, ids, timed


def _end_times(doc: _Doc[Any]) -> dict[str, datetime]:
    """The ends an ends doc holds: sender id → end (a sender not listed included: the gate
    asks only about listed ones)."""
    return {ident: end.ends_at for ident, end in cast("_EndsDoc", doc).entries.items()}


def _allow_set(ids: Iterable[str]) -> frozenset[str]:
    allowed = frozenset(ids)
    return allowed if allowed.isdisjoint(NEVER_ALLOWED) else allowed - NEVER_ALLOWED


def _check_version(path: Path, doc: Mapping[str, Any]) -> None:
    """Refuse a state file whose ``version`` is not an integer, or newer than this pairbot's.

    Raises:
        StoreCorruptError: it is not an integer.
        SchemaVersionError: it is newer.
    """
    version = doc.get("version", SCHEMA_VERSION)
    if isinstance(version, bool) or not isinstance(version, int):
        raise StoreCorruptError("version: must be an integer", path=path, hint=_HINT)
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"version {version} is newer than this pairbot knows ({SCHEMA_VERSION})",
            path=path,
            hint="upgrade pairbot; the file was left as it is",
        )


def _decode_cursors(path: Path, data: bytes) -> dict[str, Any]:
    """The top level of ``cursors.json``, its ``cursors`` checked: an object of strings.

    Raises:
        StoreCorruptError: it does not parse or has another shape.
        SchemaVersionError: it declares a version newer than this pairbot knows.
    """
    try:
        top = json.loads(data)
    except (ValueError, RecursionError):
        raise StoreCorruptError("not valid JSON", path=path, hint=_HINT) from None
    if not isinstance(top, dict):
        raise StoreCorruptError("top level must be a JSON object", path=path, hint=_HINT)
    _check_version(path, top)
    cursors = top.get("cursors", {})
    if not isinstance(cursors, dict) or not all(isinstance(v, str) for v in cursors.values()):
        raise StoreCorruptError("cursors: must be an object of strings", path=path, hint=_HINT)
    return top


def _check_audit(path: Path, data: bytes) -> None:
    for number, line in enumerate(data.splitlines(), 1):
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # bad JSON or UTF-8; nested too deeply
            record = None
        if not isinstance(record, dict):
            raise StoreCorruptError(
                f"line {number}: not a JSON object",
                path=path,
                hint="read_audit skips such lines; pairbot only appends",
            )


def _audit_record(line: bytes) -> dict[str, Any] | None:
    """One line of ``audit.jsonl`` as its record; None if it is not a JSON object."""
    try:
        record = json.loads(line.decode(errors="replace"))
    except (ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def _whole_lines_end(file: BinaryIO) -> int:
    """Where the last whole line of ``file`` ends (a line still being appended is not one)."""
    end = file.seek(0, os.SEEK_END)
    position = end
    while position > 0:
        start = max(position - 4096, 0)
        file.seek(start)
        found = file.read(position - start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        position = start
    return 0


def _audit_line(event: AuditEvent) -> str:
    return json.dumps(audit_record(event), ensure_ascii=False) + "\n"


_MARKED = ("ts", "event", "actor", "provider", "subject", "requestId")


def _not_applied(line: bytes) -> str:
    """The line that marks an audit line's change as not applied: its record's keys up to
    the subject, outcome ``not-applied``, and the outcome it had said (``was``)."""
    record = _audit_record(line) or {}
    mark = {key: record[key] for key in _MARKED if key in record}
    mark.update(outcome="not-applied", was=record.get("outcome"))
    return json.dumps(mark, ensure_ascii=False) + "\n"
