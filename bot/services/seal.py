"""Sealing a node's token so that only the holder of its request's pickup secret can open it.

When several instances share one state, the instance that approves a node request is often
not the one holding the node's connection, and the decision reaches that one through the
cluster, whose messages sit in a database table an administrator can read. So the token
never travels in the clear: it is sealed with HPKE (RFC 9180, base mode: DHKEM(X25519,
HKDF-SHA256), HKDF-SHA256, AES-256-GCM, as :mod:`cryptography` implements it) to a public
key derived from the request's pickup secret.

The pickup secret (256 bits, drawn in :func:`bot.core.codes.new_token`) goes to the asker
alone and is stored only as a hash; the key pair is derived from it with HKDF, so its public
half can be stored with the request (``NodeRequest.extra["sealKey"]``) for whoever approves,
while the private half exists only where the pickup secret is: the node, and in memory the
gateway instance that answered its request (or that it came back to with the pickup). The
HPKE ``info`` names the node and the request, so a sealed token opens for that request only.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

log = logging.getLogger(__name__)

SEAL_KEY = "sealKey"
"""The key of a node request's ``extra`` holding its seal public key (URL-safe base64)."""

_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_KEY_INFO = b"pairbot node seal key v1"
_SEAL_INFO = b"pairbot node token v1"
_PREFIX = "v1."


@dataclass(frozen=True, slots=True)
class Opener:
    """The private half of a request's seal key, derived from its pickup secret (never shown,
    never stored: kept in memory by the gateway that knows the pickup)."""

    key: X25519PrivateKey = field(repr=False)


def opener(pickup: str) -> Opener:
    """The private key that opens what is sealed to :func:`public_key` of ``pickup``."""
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KEY_INFO).derive(
        pickup.encode()
    )
    return Opener(X25519PrivateKey.from_private_bytes(raw))


def public_key(pickup: str) -> str:
    """The public seal key of a request whose pickup secret is ``pickup`` (safe to store)."""
    raw = opener(pickup).key.public_key().public_bytes_raw()
    return b64(raw)


def seal(token: str, key: str, *, node_id: str, request_id: str) -> str:
    """Seal ``token`` to the public seal key ``key`` for this node and request.

    Raises:
        ValueError: ``key`` is not a seal public key.
    """
    try:
        public = X25519PublicKey.from_public_bytes(unb64(key))
    except (ValueError, binascii.Error):
        raise ValueError("not a seal public key") from None
    sealed = _SUITE.encrypt(token.encode(), public, info=_info(node_id, request_id))
    return _PREFIX + b64(sealed)


def open_sealed(sealed: str, key: Opener, *, node_id: str, request_id: str) -> str | None:
    """Open what :func:`seal` made for this node and request; None if ``key`` is not the
    one it was sealed to, or it was made for another request, or it was altered."""
    if not sealed.startswith(_PREFIX):
        return None
    try:
        plain = _SUITE.decrypt(
            unb64(sealed.removeprefix(_PREFIX)), key.key, info=_info(node_id, request_id)
        )
        return plain.decode()
    except (InvalidTag, ValueError, binascii.Error):
        return None


def request_seal(extra: Mapping[str, object], token: str, *, node_id: str, request_id: str) -> str:
    """Seal ``token`` to the key a request carries in its ``extra``; "" if it carries none
    (made by a pairbot before sealing) or a broken one (then the token goes only to a
    connection of the approving instance, as before)."""
    key = extra.get(SEAL_KEY)
    if not isinstance(key, str):
        return ""
    try:
        return seal(token, key, node_id=node_id, request_id=request_id)
    except ValueError:
        log.warning(
            "node request %s carries a broken seal key; its token is not sealed", request_id
        )
        return ""


def _info(node_id: str, request_id: str) -> bytes:
    return b"\0".join((_SEAL_INFO, node_id.encode(), request_id.encode()))


def b64(raw: bytes) -> str:
    """URL-safe base64 without padding (keys, sealed tokens, signatures)."""
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unb64(text: str) -> bytes:
    """The bytes of :func:`b64` text (padding optional)."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
