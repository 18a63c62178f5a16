"""Pairing codes, node request ids and node tokens: drawing, normalising, comparing, hashing.

All randomness in pairbot comes from :mod:`secrets`, and all of it is drawn here.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import string
from collections.abc import Iterable

ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
"""32 symbols, no 0/O/1/I: 8 of them carry 40 bits."""
CODE_LENGTH = 8
TOKEN_BYTES = 32
"""Node tokens carry 256 bits."""

_ALPHABET_SET = frozenset(ALPHABET)

MIN_SECRET_BITS = 128
"""What a secret that guards a network endpoint (the operator token) must carry at least."""
MIN_DISTINCT = 8
RANDOM_STRING_COMMAND = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
"""The command the docs and errors give for making a strong secret."""

_DIGITS = frozenset(string.digits)
_LOWER = frozenset(string.ascii_lowercase)
_UPPER = frozenset(string.ascii_uppercase)
_URL_SYMBOLS = frozenset("-_")
_HEX = (frozenset(string.digits + "abcdef"), frozenset(string.digits + "ABCDEF"))
_OTHER_PRINTABLE = 31
"""Printable ASCII (95) less digits, letters and ``-_``; any other character counts as one of
these, which underrates non-ASCII secrets rather than flattering them."""


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


def estimate_bits(secret: str) -> float:
    """Estimate a secret's entropy as length x log2(the alphabet of the classes it uses).

    The classes: hex digits (16, when nothing else is used), digits (10), lower case (26),
    upper case (26), the base64url symbols ``-_`` (2), anything else (31). A uniformly drawn
    secret scores what it carries; a word or a pattern scores more than it carries, which is
    why :func:`weakness` also looks for repetition and a small set of characters.
    """
    chars = set(secret)
    if not chars:
        return 0.0
    if not chars <= _DIGITS and any(chars <= hex_digits for hex_digits in _HEX):
        return len(secret) * 4.0
    size = sum(
        n
        for cls, n in ((_DIGITS, 10), (_LOWER, 26), (_UPPER, 26), (_URL_SYMBOLS, 2))
        if chars & cls
    )
    if chars - _DIGITS - _LOWER - _UPPER - _URL_SYMBOLS:
        size += _OTHER_PRINTABLE
    return len(secret) * math.log2(size) if size > 1 else 0.0


def _period(text: str) -> int:
    """The shortest p such that ``text`` is a prefix of its first p characters repeated."""
    border = [0] * len(text)  # Knuth-Morris-Pratt failure function
    k = 0
    for i in range(1, len(text)):
        while k and text[i] != text[k]:
            k = border[k - 1]
        if text[i] == text[k]:
            k += 1
        border[i] = k
    return len(text) - (border[-1] if text else 0)


def weakness(secret: str, *, bits: int = MIN_SECRET_BITS) -> str | None:
    """Say why ``secret`` is too weak to guard a network endpoint, or return None.

    Refused whatever the length: fewer than :data:`MIN_DISTINCT` distinct characters, or a
    pattern repeated at least twice (``abcabc...``). Otherwise the :func:`estimate_bits` must
    reach ``bits``. The reason never quotes the secret.
    """
    if len(set(secret)) < MIN_DISTINCT:
        return f"fewer than {MIN_DISTINCT} distinct characters"
    if _period(secret) <= len(secret) // 2:
        return "a short repeated pattern"
    estimate = estimate_bits(secret)
    if estimate < bits:
        return f"about {round(estimate)} bits"
    return None
