"""Pairing codes, node request ids and node tokens: drawing, normalising, comparing, hashing.

All randomness in pairbot comes from :mod:`secrets`, and all of it is drawn here.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
"""32 symbols, no 0/O/1/I: 8 of them carry 40 bits."""
CODE_LENGTH = 8
TOKEN_BYTES = 32
"""Node tokens carry 256 bits."""

_ALPHABET_SET = frozenset(ALPHABET)


def new_code() -> str:
    """Draw a fresh pairing code (8 symbols of :data:`ALPHABET`)."""
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def normalize_code(raw: str) -> str | None:
    """Turn what a person typed into a canonical code, or None if it cannot be one.

    Case is ignored, spaces anywhere are dropped and one dash is tolerated, so ``" abcd-2345 "``
    gives ``"ABCD2345"``.
    """
    text = "".join(raw.split()).upper()
    if text.count("-") > 1:
        return None
    text = text.replace("-", "")
    if len(text) != CODE_LENGTH or not set(text) <= _ALPHABET_SET:
        return None
    return text


def format_code(code: str) -> str:
    """Show a code in two groups of four (``ABCD-2345``), the way people read it back."""
    return f"{code[:4]}-{code[4:]}" if len(code) == CODE_LENGTH else code


def find_code(candidate: str, codes: Iterable[str]) -> int | None:
    """Return the index of ``candidate`` in ``codes``, comparing every one in constant time.

    The loop never stops early, so the time taken does not tell how many leading entries
    differ.
    """
    found: int | None = None
    probe = candidate.encode()
    for index, code in enumerate(codes):
        if hmac.compare_digest(probe, code.upper().encode()) and found is None:
            found = index
    return found


def new_request_id() -> str:
    """Draw a node request id: 10 symbols of :data:`ALPHABET` (50 bits), easy to type."""
    return "".join(secrets.choice(ALPHABET) for _ in range(10))


def new_token() -> str:
    """Draw a node token: 256 bits, URL-safe base64."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    """Hash a node token for storage (SHA-256 hex); 256-bit tokens need no salt."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, token_hash: str) -> bool:
    """Check a presented token against a stored hash in constant time."""
    return hmac.compare_digest(hash_token(token).encode(), token_hash.encode())
