"""The node side's own files (``pairbot node pair|connect``): its id, tokens, pickups and
the certificate fingerprints it pins.

These belong to the device playing a node, not to the bot's state, and are written with the
same durable primitives as the state dir (atomic, 0600 in a 0700 dir).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bot.core.errors import PairbotError
from stores._files import atomic_write, ensure_private_dir, read_versioned

NODE_DIR_ENV = "PAIRBOT_NODE_DIR"
KEY_NAME = "node.key"
DEFAULT_NODE_DIR = "~/.pairbot-node"


@dataclass(frozen=True, slots=True)
class NodeCredentials:
    """What a node keeps after pairing with one gateway (``public_key``: paired with the
    node's key, so it connects by signature)."""

    gateway: str
    node_id: str
    token: str
    display_name: str = ""
    public_key: str = ""


class NodeKeyring:
    """The node side's private files: its stable node id and one token per gateway.

    ``<dir>/node.json`` = ``{"version": 1, "nodeId": ..., "gateways": {url: {token, ...}},
    "pickups": {url: {nodeId, pickup}}, "pins": {url: "sha256:..."}}``, 0600 in a 0700 dir,
    written atomically. A pickup secret is kept only while a request waits for the owner, so
    a node stopped meanwhile can come back for its decision. A pin is the fingerprint of the
    certificate a ``wss://`` gateway must show, kept once a connection with it succeeded.
    """

    def __init__(self, directory: Path | None = None) -> None:
        chosen = directory or Path(os.environ.get(NODE_DIR_ENV) or DEFAULT_NODE_DIR)
        self.directory = chosen.expanduser()
        self.path = self.directory / "node.json"

    def _load(self) -> dict[str, Any]:
        loaded = read_versioned(self.path)
        if loaded is None:
            return {"version": 1, "gateways": {}}
        try:
            doc = json.loads(loaded[1])
        except (ValueError, RecursionError):
            raise PairbotError(f"{self.path}: not valid JSON; fix or move it away") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("gateways", {}), dict):
            raise PairbotError(f"{self.path}: unexpected shape; fix or move it away")
        doc.setdefault("gateways", {})
        return doc

    def node_id(self) -> str:
        """Return this node's id, creating and saving one the first time."""
        doc = self._load()
        node_id = doc.get("nodeId")
        if isinstance(node_id, str) and node_id:
            return node_id
        doc["nodeId"] = f"node-{secrets.token_hex(6)}"
        self._save(doc)
        return str(doc["nodeId"])

    def get(self, gateway: str) -> NodeCredentials | None:
        """Return the saved credentials for a gateway URL, if any."""
        entry = self._load()["gateways"].get(gateway)
        if not isinstance(entry, dict) or not entry.get("token"):
            return None
        return NodeCredentials(
            gateway=gateway,
            node_id=str(entry.get("nodeId")),
            token=str(entry["token"]),
            display_name=str(entry.get("displayName", "")),
            public_key=str(entry.get("publicKey", "")),
        )

    def save(self, creds: NodeCredentials) -> None:
        """Store (or replace) the token for a gateway; a pickup secret kept for it is spent."""
        doc = self._load()
        doc["gateways"][creds.gateway] = {
            "nodeId": creds.node_id,
            "token": creds.token,
            "displayName": creds.display_name,
            **({"publicKey": creds.public_key} if creds.public_key else {}),
        }
        doc.get("pickups", {}).pop(creds.gateway, None)
        self._save(doc)

    def pickup(self, gateway: str, node_id: str) -> str | None:
        """Return the pickup secret of a request this node made to ``gateway`` and has not
        heard the answer to (the node was stopped while it waited)."""
        entry = self._load().get("pickups", {}).get(gateway)
        if not isinstance(entry, dict) or entry.get("nodeId") != node_id:
            return None
        value = entry.get("pickup")
        return value if isinstance(value, str) and value else None

    def keep_pickup(self, gateway: str, node_id: str, pickup: str | None) -> None:
        """Remember (or, with None, forget) the pickup secret of a pending request."""
        doc = self._load()
        pickups = doc.setdefault("pickups", {})
        if not isinstance(pickups, dict):
            raise PairbotError(f"{self.path}: unexpected shape; fix or move it away")
        if pickup is None:
            if pickups.pop(gateway, None) is None:
                return
        else:
            pickups[gateway] = {"nodeId": node_id, "pickup": pickup}
        self._save(doc)

    def key(self, *, make: bool = False) -> Ed25519PrivateKey | None:
        """This node's Ed25519 key (``<dir>/node.key``, PEM, 0600), made first if ``make``
        and there is none."""
        path = self.directory / KEY_NAME
        try:
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except FileNotFoundError:
            if not make:
                return None
            made = Ed25519PrivateKey.generate()
            ensure_private_dir(self.directory)
            pem = made.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            atomic_write(path, pem)
            return made
        except (OSError, ValueError):
            raise PairbotError(f"{path}: not a readable node key; fix or move it away") from None
        if not isinstance(loaded, Ed25519PrivateKey):
            raise PairbotError(f"{path}: not an Ed25519 key; fix or move it away")
        return loaded

    def pin(self, gateway: str) -> str | None:
        """Return the certificate fingerprint pinned for ``gateway``, if any."""
        value = self._load().get("pins", {}).get(gateway)
        return value if isinstance(value, str) and value else None

    def keep_pin(self, gateway: str, pin: str) -> None:
        """Pin ``gateway`` to the certificate with fingerprint ``pin`` from now on."""
        doc = self._load()
        pins = doc.setdefault("pins", {})
        if not isinstance(pins, dict):
            raise PairbotError(f"{self.path}: unexpected shape; fix or move it away")
        if pins.get(gateway) == pin:
            return
        pins[gateway] = pin
        self._save(doc)

    def _save(self, doc: dict[str, Any]) -> None:
        ensure_private_dir(self.directory)
        atomic_write(self.path, (json.dumps(doc, indent=2) + "\n").encode())
