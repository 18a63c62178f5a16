"""A state file that does not parse is never read as empty, never rewritten, and named."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.core.clock import FakeClock
from bot.core.errors import SchemaVersionError, StoreCorruptError, StoreError
from bot.services.nodes import NodeService
from bot.services.pairing import PairingService
from stores.jsonfile import JsonFileStore
from tests.stores.helpers import snapshot

GOOD_ENTRY = {
    "id": "1",
    "code": "AAAA2222",
    "createdAt": "2026-01-01T11:59:00.000Z",
    "lastSeenAt": "2026-01-01T11:59:00.000Z",
    "meta": {},
}

# (case id, file, content, error type, words the message must contain)
CASES = [
    (
        "invalid-json",
        "credentials/telegram-pairing.json",
        '{"version": 1, "requests": [',
        StoreCorruptError,
        ["not valid JSON", "line 1"],
    ),
    (
        "not-utf8",
        "credentials/telegram-pairing.json",
        b'{"version": 1, "x": "\xff"}',
        StoreCorruptError,
        ["UTF-8"],
    ),
    (
        "top-level-list",
        "credentials/telegram-pairing.json",
        [GOOD_ENTRY],
        StoreCorruptError,
        ["top level must be a JSON object"],
    ),
    (
        "top-level-string",
        "credentials/telegram-allowFrom.json",
        "allow everyone",
        StoreCorruptError,
        ["top level must be a JSON object"],
    ),
    (
        "requests-not-list",
        "credentials/telegram-pairing.json",
        {"version": 1, "requests": {"1": GOOD_ENTRY}},
        StoreCorruptError,
        ["requests: must be a list"],
    ),
    (
        "bad-createdAt",
        "credentials/telegram-pairing.json",
        {"version": 1, "requests": [{**GOOD_ENTRY, "createdAt": "yesterday\nat noon"}]},
        StoreCorruptError,
        ["requests[0].createdAt", "ISO-8601"],
    ),
    (
        "second-entry-missing-id",
        "credentials/telegram-pairing.json",
        {
            "version": 1,
            "requests": [GOOD_ENTRY, {k: v for k, v in GOOD_ENTRY.items() if k != "id"}],
        },
        StoreCorruptError,
        ["requests[1].id", "missing"],
    ),
    (
        "entry-not-object",
        "credentials/telegram-pairing.json",
        {"version": 1, "requests": ["1"]},
        StoreCorruptError,
        ["requests[0]", "must be an object"],
    ),
    (
        "version-2",
        "credentials/telegram-pairing.json",
        {"version": 2, "requests": []},
        SchemaVersionError,
        ["version 2", "newer"],
    ),
    (
        "version-not-int",
        "credentials/telegram-pairing.json",
        {"version": "1", "requests": []},
        StoreCorruptError,
        ["version"],
    ),
    (
        "allow-entry-object",
        "credentials/telegram-allowFrom.json",
        {"version": 1, "allowFrom": ["1", {"id": "2"}]},
        StoreCorruptError,
        ["allowFrom[1]"],
    ),
    (
        "allow-version-2",
        "credentials/telegram-allowFrom.json",
        {"version": 2, "allowFrom": []},
        SchemaVersionError,
        ["version 2"],
    ),
    (
        "deep-nesting",
        "credentials/telegram-pairing.json",
        b"[" * 100_000,
        StoreCorruptError,
        ["nested too deeply"],
    ),
    (
        "deep-allow",
        "credentials/telegram-allowFrom.json",
        b'{"version": 1, "allowFrom": ["1", ' + b"[" * 100_000,
        StoreCorruptError,
        ["nested too deeply"],
    ),
]


def write_raw(path: Path, content: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str) and not content.startswith("{"):
        path.write_text(json.dumps(content))
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text(json.dumps(content, indent=2))


def assert_names(exc: StoreError, path: Path, words: list[str]) -> None:
    message = str(exc)
    assert "\n" not in message
    assert str(path) in message
    assert exc.path == path
    for word in words:
        assert word in message, message


@pytest.mark.parametrize(
    ("relpath", "content", "error", "words"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_corrupt_file_raises_and_is_left_alone(
    state_dir: Path, relpath: str, content: object, error: type[StoreError], words: list[str]
) -> None:
    path = state_dir / relpath
    other = state_dir / "credentials" / "slack-allowFrom.json"
    write_raw(other, {"version": 1, "allowFrom": ["U1"]})
    store = JsonFileStore(state_dir)  # opening does not read (or judge) any state file
    pairing = PairingService(store, clock=FakeClock())
    attempts: list[Callable[[], object]]
    if "allowFrom" in relpath:
        # Asked while the allowlist was sound (a stranger's ask reads it: no code for a
        # sender it already lists), then the file went bad.
        code = pairing.request("telegram", "waiting").request.code  # type: ignore[union-attr]
        write_raw(path, content)
        attempts = [
            lambda: pairing.request("telegram", "another"),
            lambda: pairing.approve(code, actor="owner"),
            lambda: pairing.approve(code, actor="owner"),  # no "empty" cached by the first
            lambda: pairing.allow("telegram", "x", actor="owner"),
            lambda: pairing.revoke("telegram", "1", actor="owner"),
            lambda: pairing.allowed("telegram"),
            lambda: store.allowed_until("telegram", "1"),
        ]
    else:
        write_raw(path, content)
        attempts = [
            lambda: pairing.request("telegram", "newcomer"),
            lambda: pairing.request("telegram", "newcomer"),  # no "empty" cached by the first
            lambda: pairing.approve("AAAA2222", actor="owner"),
            lambda: pairing.allow("telegram", "x", actor="owner"),
            lambda: pairing.pending(),
            lambda: pairing.prune(),
        ]
    before = snapshot(state_dir)

    with pytest.raises(error) as caught:
        store.load_check(path)
    assert_names(caught.value, path, words)
    for attempt in attempts:
        with pytest.raises(error) as caught:
            attempt()
        assert_names(caught.value, path, words)
        assert snapshot(state_dir) == before  # byte-identical, same mtime; no audit line

    # Files that parse stay usable; a fresh store over the same dir refuses the same way.
    assert store.allowed_until("slack", "U1")
    with pytest.raises(error):
        attempts[0]()
    fresh = PairingService(JsonFileStore(state_dir), clock=FakeClock())
    with pytest.raises(error):
        fresh.pending("telegram") if "pairing" in relpath else fresh.allowed("telegram")
    assert snapshot(state_dir) == before
    assert not list(state_dir.rglob("*.pairbot-tmp"))


@pytest.mark.parametrize(
    ("relpath", "content", "error", "words"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES if "allowFrom" in case[1]],
)
def test_the_gate_on_a_corrupt_allowlist_raises(
    state_dir: Path,
    store: JsonFileStore,
    relpath: str,
    content: object,
    error: type[StoreError],
    words: list[str],
) -> None:
    with store.transaction() as txn:
        txn.allow("telegram", "1")
    assert store.allowed_until("telegram", "1")  # cached as allowed...
    path = state_dir / relpath
    write_raw(path, content)  # ...then the file goes bad behind the store's back
    before = snapshot(state_dir)
    for _ in range(2):  # every call, not just the first: the gate fails closed
        with pytest.raises(error) as caught:
            store.allowed_until("telegram", "1")
        assert_names(caught.value, path, words)
    assert snapshot(state_dir) == before


def test_corrupt_node_files(state_dir: Path) -> None:
    paired = state_dir / "nodes" / "paired.json"
    write_raw(
        paired,
        {
            "version": 1,
            "nodes": [
                {
                    "nodeId": "n1",
                    "tokenHash": "abc",
                    "createdAt": "2026-01-01T00:00:00Z",
                    "approvedAt": "2026-01-01T00:00:00Z",
                }
            ],
        },
    )
    store = JsonFileStore(state_dir)
    nodes = NodeService(store, clock=FakeClock())
    before = snapshot(state_dir)
    with pytest.raises(StoreCorruptError) as caught:
        nodes.request("n2")
    assert_names(caught.value, paired, ["nodes[0].tokenHash"])
    with pytest.raises(StoreCorruptError):
        nodes.verify("n1", "token")
    assert snapshot(state_dir) == before

    pending = state_dir / "nodes" / "pending.json"
    write_raw(pending, {"version": 1, "requests": [{"requestId": "R1", "nodeId": "n1"}]})
    with pytest.raises(StoreCorruptError) as caught:
        store.load_check(pending)
    assert_names(caught.value, pending, ["requests[0].createdAt", "missing"])


def test_audit_check_names_the_bad_line(store: JsonFileStore) -> None:
    store.audit_path.write_text('{"event": "a"}\n[1]\n')
    with pytest.raises(StoreCorruptError) as caught:
        store.load_check(store.audit_path)
    assert_names(caught.value, store.audit_path, ["line 2"])
    assert store.read_audit() == [{"event": "a"}]  # reading skips it


def test_a_value_that_parses_but_is_too_deep_to_write_is_refused(
    state_dir: Path, store: JsonFileStore, pairing: PairingService
) -> None:
    """Nesting just under the limit where it was read can exceed it where it is written."""
    path = store.pairing_path("telegram")
    for depth in range(sys.getrecursionlimit(), 0, -10):  # the deepest that parses here
        path.write_text(f'{{"version": 1, "x": {"[" * depth}{"]" * depth}, "requests": []}}')
        try:
            pairing.pending("telegram")
        except StoreCorruptError:
            continue
        break
    before = snapshot(state_dir)

    def from_deeper_in_the_stack(frames: int) -> None:
        if frames:
            from_deeper_in_the_stack(frames - 1)
        else:
            pairing.request("telegram", "42")

    with pytest.raises(StoreCorruptError) as caught:
        from_deeper_in_the_stack(100)
    assert_names(caught.value, path, ["nested too deeply"])
    assert snapshot(state_dir) == before
    assert pairing.pending("telegram") == []  # memory still matches the disk
