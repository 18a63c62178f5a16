"""Device keys: a node proves itself by signing a fresh server nonce, so nothing reusable
crosses the wire.

A node may send an Ed25519 public key (32 bytes, URL-safe base64 without padding) with
``node.pair.request``; it is stored with the request and, once approved, with the paired
node (``extra["publicKey"]``: not a secret). Afterwards its ``node.connect`` carries a
signature over :func:`signed_message`: the purpose, the nonce the gateway handed this
connection (``node.challenge``, single use), the node id, the fingerprint of the TLS
certificate the node saw ("" over plain ``ws://``) and, for a pair request, the public key
it asks for. The gateway builds the same message with the nonce it issued and, when it
serves TLS itself, its own certificate's fingerprint: a signature made for another
connection, another node, another certificate (someone in between) or another key does
not verify.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bot.core.models import KEY_CHANGED, PUBLIC_KEY
from bot.services.seal import b64, unb64

__all__ = ["KEY_CHANGED", "PUBLIC_KEY", "KeyProof"]

_CONTEXT = b"pairbot node signature v1"

CONNECT = "node.connect"
PAIR = "node.pair.request"


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyProof:
    """A signature a peer sent, with what the gateway knows it must be over."""

    nonce: str = field(repr=False)
    """The nonce this connection was handed (spent by this proof)."""
    fingerprint: str
    """The certificate fingerprint the signature must be bound to ("" without TLS)."""
    signature: str = field(repr=False)


def parse_public_key(text: str) -> str:
    """A public key as a node sends it, checked: 32 bytes of Ed25519, URL-safe base64.

    Raises:
        ValueError: it is not one.
    """
    try:
        raw = unb64(text)
        Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, binascii.Error):
        raise ValueError("publicKey: not an Ed25519 public key (32 bytes, base64url)") from None
    return b64(raw)


def public_key(key: Ed25519PrivateKey) -> str:
    """The public half of a node's key, as it is sent and stored."""
    return b64(key.public_key().public_bytes_raw())


def key_of(extra: Mapping[str, object]) -> str | None:
    """The public key a request or paired node carries in its ``extra``, if any."""
    value = extra.get(PUBLIC_KEY)
    return value if isinstance(value, str) and value else None


def signed_message(
    purpose: str, *, nonce: str, node_id: str, fingerprint: str, new_key: str = ""
) -> bytes:
    """What a node signs (and the gateway verifies): each part length-prefixed, so no two
    different sets of parts make the same bytes."""
    parts = (_CONTEXT, purpose, nonce, node_id, fingerprint, new_key)
    out = bytearray()
    for part in parts:
        data = part if isinstance(part, bytes) else part.encode()
        out += len(data).to_bytes(4, "big") + data
    return bytes(out)


def sign(key: Ed25519PrivateKey, message: bytes) -> str:
    """A node's signature over ``message``."""
    return b64(key.sign(message))


def verify(public: str, signature: str, message: bytes) -> bool:
    """Whether ``signature`` is ``public``'s over ``message`` (False for anything malformed)."""
    try:
        Ed25519PublicKey.from_public_bytes(unb64(public)).verify(unb64(signature), message)
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True
