"""Where the store puts each file, and the exact shapes it writes (Clawdbot's)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

from bot.core.clock import FakeClock
from bot.core.invites import GatewayAddress
from bot.core.platforms import KNOWN_PROVIDERS
from bot.services.nodes import NodeService
from bot.services.pairing import PairingService
from stores.jsonfile import JsonFileStore
from tests.stores.helpers import load

ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def assert_iso(value: object) -> None:
    assert isinstance(value, str)
    assert ISO_Z.match(value), value
    assert datetime.fromisoformat(value).utcoffset() is not None


def test_pairing_file_shape(
    state_dir: Path, store: JsonFileStore, pairing: PairingService, clock: FakeClock
) -> None:
    created = pairing.request("telegram", "42", {"username": "zoë", "firstName": ""})
    clock.advance(30)
    pairing.request("telegram", "42")
    pairing.prune()  # a repeat's lastSeenAt is written with the next write: here, the prune
    path = state_dir / "credentials" / "telegram-pairing.json"
    assert store.pairing_path("telegram") == path
    doc = load(path)
    assert list(doc) == ["version", "requests"]
    assert doc["version"] == 1
    [entry] = doc["requests"]
    assert {"id", "code", "createdAt", "lastSeenAt", "meta"} <= set(entry)
    assert entry["id"] == "42"
    assert created.request is not None
    assert entry["code"] == created.request.code
    assert entry["meta"] == {"username": "zoë"}  # empty values dropped, UTF-8 kept
    for key in ("createdAt", "lastSeenAt"):
        assert_iso(entry[key])
    assert entry["createdAt"] == "2026-01-01T12:00:00.000Z"
    assert entry["lastSeenAt"] == "2026-01-01T12:00:30.000Z"
    assert "zoë".encode() in path.read_bytes()


def test_allow_file_shape(state_dir: Path, store: JsonFileStore, pairing: PairingService) -> None:
    for sender in ("1", "2", "3"):
        result = pairing.request("slack", f"U{sender}")
        assert result.request is not None
        pairing.approve(result.request.code, actor="owner")
    path = state_dir / "credentials" / "slack-allowFrom.json"
    assert store.allow_path("slack") == path
    assert load(path) == {"version": 1, "allowFrom": ["U1", "U2", "U3"]}
    # Approved, not yet told (the running bot tells them and drops the list): the request and
    # its notice swap places in one write of the pairing file.
    when = "2026-01-01T12:00:00.000Z"
    assert load(store.pairing_path("slack")) == {
        "version": 1,
        "requests": [],
        "approvedToTell": [{"id": f"U{n}", "approvedAt": when} for n in (1, 2, 3)],
    }
    for sender in ("U1", "U2", "U3"):
        pairing.notice_sent("slack", sender)
    assert load(store.pairing_path("slack")) == {"version": 1, "requests": []}


def test_first_write_of_a_new_file_keeps_its_entries(store: JsonFileStore) -> None:
    # A store that had never seen the file once wrote {"version": 1} and lost the list.
    with store.transaction() as txn:
        txn.allow("discord", "d1")
    assert load(store.allow_path("discord")) == {"version": 1, "allowFrom": ["d1"]}
    assert JsonFileStore(store.state_dir).allowed_until("discord", "d1")


def test_node_files_shape(state_dir: Path, nodes: NodeService, clock: FakeClock) -> None:
    ask = nodes.request("laptop-1", display_name="Laptop", platform="linux", version="1.2")
    pending = load(state_dir / "nodes" / "pending.json")
    assert pending["version"] == 1
    [entry] = pending["requests"]
    assert entry["requestId"] == ask.request.request_id
    assert entry["nodeId"] == "laptop-1"
    assert entry["displayName"] == "Laptop"
    assert_iso(entry["createdAt"])

    clock.advance(5)
    approval = nodes.approve(ask.request.request_id, actor="owner")
    node, token = approval.node, approval.token
    paired = load(state_dir / "nodes" / "paired.json")
    assert list(paired) == ["version", "nodes"]
    assert paired["version"] == 1
    [stored] = paired["nodes"]
    assert stored["nodeId"] == "laptop-1"
    assert stored["tokenHash"] == node.token_hash
    assert len(stored["tokenHash"]) == 64
    assert token not in (state_dir / "nodes" / "paired.json").read_text()
    assert_iso(stored["createdAt"])
    assert stored["approvedAt"] == "2026-01-01T12:00:05.000Z"
    assert load(state_dir / "nodes" / "pending.json") == {"version": 1, "requests": []}


def test_invites_file_shape(state_dir: Path, nodes: NodeService, clock: FakeClock) -> None:
    address = GatewayAddress(url="wss://127.0.0.1:18789", fingerprint="sha256:" + "0" * 64)
    made = nodes.invite(address, actor="owner", name="Tablet")
    path = state_dir / "nodes" / "invites.json"
    doc = load(path)
    assert list(doc) == ["version", "invites"]
    assert doc["invites"] == [
        {
            "inviteId": made.invite.invite_id,
            "secretHash": made.invite.secret_hash,
            "name": "Tablet",
            "createdAt": "2026-01-01T12:00:00.000Z",
            "expiresAt": "2026-01-01T12:10:00.000Z",
        }
    ]
    assert path.stat().st_mode & 0o777 == 0o600
    clock.advance(5)
    nodes.join("tablet", made.code.secret)
    [spent] = load(path)["invites"]
    assert (spent["usedAt"], spent["usedBy"]) == ("2026-01-01T12:00:05.000Z", "tablet")
    for secret in made.secrets:
        assert secret not in path.read_text()


def test_audit_lines(store: JsonFileStore, pairing: PairingService) -> None:
    """One line per record, each the JSON object read back (the records: tests/contracts)."""
    result = pairing.request("telegram", "7")
    assert result.request is not None
    pairing.approve(result.request.code, actor="owner")
    lines = (store.state_dir / "audit.jsonl").read_text().splitlines()
    assert len(lines) == 2
    assert [json.loads(line) for line in lines] == store.read_audit()
    store.load_check(store.audit_path)  # every line is one JSON object


def test_state_files_lists_every_file(state_dir: Path, store: JsonFileStore) -> None:
    files = store.state_files()
    for name in KNOWN_PROVIDERS:
        assert state_dir / "credentials" / f"{name}-pairing.json" in files
        assert state_dir / "credentials" / f"{name}-allowFrom.json" in files
    assert state_dir / "nodes" / "pending.json" in files
    assert state_dir / "nodes" / "paired.json" in files
    assert state_dir / "nodes" / "invites.json" in files
    assert state_dir / "audit.jsonl" in files
    for path in files:  # nothing exists yet, and a missing file checks clean
        store.load_check(path)
