"""Pairing codes, request ids and node tokens (bot/codes.py)."""

from __future__ import annotations

import base64
import hashlib
import math
import secrets
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.core import codes
from bot.core.codes import ALPHABET, CODE_LENGTH
from tests.helpers import compared_codes

CHI2_CRITICAL_31_DOF_P001 = 61.1
"""Chi-square critical value for 31 degrees of freedom at p = 0.001."""


def test_alphabet_has_32_distinct_symbols_without_look_alikes() -> None:
    assert len(ALPHABET) == 32
    assert len(set(ALPHABET)) == 32
    assert set(ALPHABET).isdisjoint("0O1I")


def test_new_code_is_8_symbols_of_the_alphabet() -> None:
    for _ in range(200):
        code = codes.new_code()
        assert len(code) == CODE_LENGTH
        assert set(code) <= set(ALPHABET)


def test_new_code_draws_every_symbol_with_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Sequence[str]] = []
    real_choice = secrets.choice

    def spy(seq: Sequence[str]) -> str:
        calls.append(seq)
        return real_choice(seq)

    monkeypatch.setattr("bot.core.codes.secrets.choice", spy)
    codes.new_code()
    assert calls == [ALPHABET] * CODE_LENGTH


def _chi_square_per_position(samples: int) -> list[float]:
    counts = [Counter[str]() for _ in range(CODE_LENGTH)]
    for _ in range(samples):
        for position, symbol in enumerate(codes.new_code()):
            counts[position][symbol] += 1
    expected = samples / len(ALPHABET)
    return [sum((count[s] - expected) ** 2 / expected for s in ALPHABET) for count in counts]


def test_new_code_is_uniform_at_every_position() -> None:
    """Chi-square per position over 100,000 codes (31 dof), p > 0.001 at each position.

    Eight positions at p = 0.001 raise a false alarm about 0.8 % of the time, so a failing
    sample is redrawn once: a real bias (e.g. one symbol twice as likely gives a statistic in
    the thousands) fails both draws; chance fails both about once in 15,000 runs.
    """
    stats = _chi_square_per_position(100_000)
    if max(stats) >= CHI2_CRITICAL_31_DOF_P001:
        stats = _chi_square_per_position(100_000)
    assert [s < CHI2_CRITICAL_31_DOF_P001 for s in stats] == [True] * CODE_LENGTH, stats


def test_chi_square_notices_a_biased_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    """The uniformity check above can fail: a generator that never draws '9' is caught."""
    skewed = ALPHABET[:-1]
    real_choice = secrets.choice
    monkeypatch.setattr("bot.core.codes.secrets.choice", lambda _seq: real_choice(skewed))
    assert min(_chi_square_per_position(10_000)) > CHI2_CRITICAL_31_DOF_P001


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ABCD2345", "ABCD2345"),
        ("abcd2345", "ABCD2345"),
        (" abcd-2345 ", "ABCD2345"),
        ("AbCd-2345", "ABCD2345"),
        ("ab cd 23 45", "ABCD2345"),
        ("\tABCD2345\n", "ABCD2345"),
        ("ab-cd-2345", None),
        ("ABCD--2345", None),
        ("ABCD234", None),
        ("ABCD23456", None),
        ("ABCD2340", None),
        ("ABCD234O", None),
        ("ABCD2341", None),
        ("ABCD234I", None),
        ("ABCD_2345", None),
        ("", None),
        ("   ", None),
        ("ÄBCD2345", None),
    ],
    ids=lambda v: repr(v) if isinstance(v, str) else str(v),
)
def test_normalize_code(raw: str, expected: str | None) -> None:
    assert codes.normalize_code(raw) == expected


@settings(database=None, max_examples=300)
@given(st.text())
def test_normalize_code_never_raises_and_returns_only_canonical_codes(raw: str) -> None:
    result = codes.normalize_code(raw)
    if result is not None:
        assert len(result) == CODE_LENGTH
        assert set(result) <= set(ALPHABET)


@settings(database=None, max_examples=300)
@given(st.text(alphabet=ALPHABET + ALPHABET.lower(), min_size=CODE_LENGTH, max_size=CODE_LENGTH))
def test_normalize_code_reads_back_any_formatted_code(typed: str) -> None:
    assert codes.normalize_code(codes.format_code(typed)) == typed.upper()
    assert codes.normalize_code(f"  {typed} ") == typed.upper()


@pytest.mark.parametrize(
    ("code", "shown"),
    [("ABCD2345", "ABCD-2345"), ("ABC", "ABC")],
    ids=["eight", "not-a-code"],
)
def test_format_code(code: str, shown: str) -> None:
    assert codes.format_code(code) == shown


def test_find_code_returns_the_index_of_the_match() -> None:
    assert codes.find_code("CCCC2222", ["AAAA2222", "BBBB2222", "CCCC2222"]) == 2
    assert codes.find_code("CCCC2222", ["AAAA2222", "cccc2222"]) == 1
    assert codes.find_code("DDDD2222", ["AAAA2222", "BBBB2222"]) is None
    assert codes.find_code("AAAA2222", []) is None


def test_find_code_compares_every_entry_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared = compared_codes(monkeypatch)
    assert codes.find_code("AAAA2222", ["AAAA2222", "BBBB2222", "CCCC2222"]) == 0
    assert compared == [
        (b"AAAA2222", b"AAAA2222"),
        (b"AAAA2222", b"BBBB2222"),
        (b"AAAA2222", b"CCCC2222"),
    ]


def test_new_request_id_is_10_symbols_of_the_alphabet() -> None:
    ids = {codes.new_request_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 10 and set(i) <= set(ALPHABET) for i in ids)


def test_new_token_carries_256_bits() -> None:
    token = codes.new_token()
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert len(raw) == 32
    assert codes.new_token() != token


def test_hash_token_is_sha256_hex() -> None:
    assert codes.hash_token("abc") == hashlib.sha256(b"abc").hexdigest()


def test_token_matches_only_its_own_hash() -> None:
    token = codes.new_token()
    stored = codes.hash_token(token)
    assert codes.token_matches(token, stored) is True
    assert codes.token_matches(token + "x", stored) is False
    assert codes.token_matches(codes.new_token(), stored) is False
    assert codes.token_matches(token, "0" * 64) is False


# --- how strong a secret is (the operator token check) ---------------------------------------


@pytest.mark.parametrize(
    "draw",
    [
        lambda: secrets.token_urlsafe(32),
        lambda: secrets.token_hex(16),
        lambda: secrets.token_hex(32),
    ],
    ids=["token_urlsafe(32)", "token_hex(16)", "token_hex(32)"],
)
def test_tokens_the_docs_suggest_are_strong_enough(draw: Any) -> None:
    for _ in range(20):
        token = draw()
        assert codes.weakness(token) is None, token
        assert codes.estimate_bits(token) >= codes.MIN_SECRET_BITS


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("1", "fewer than 8 distinct characters"),
        ("", "fewer than 8 distinct characters"),
        ("password", "fewer than 8 distinct characters"),
        ("Password123!", "about 78 bits"),
        ("a" * 64, "fewer than 8 distinct characters"),
        ("abcabcabc" * 10, "fewer than 8 distinct characters"),
        ("abcdefgh" * 8, "a short repeated pattern"),
        ("Tr0ub4dor&3" * 4, "a short repeated pattern"),
        ("operator-secret", "about 72 bits"),
        ("1234567890" * 3, "a short repeated pattern"),
        ("31415926535897932384626433832795", "about 106 bits"),
        ("correct-horse-battery", "about 101 bits"),
    ],
    ids=[
        "one",
        "empty",
        "password",
        "password123",
        "64-a",
        "abc-repeated",
        "8-chars-repeated",
        "phrase-repeated",
        "short-phrase",
        "digits-repeated",
        "32-digits",
        "passphrase",
    ],
)
def test_weak_secrets_are_named_with_a_reason(token: str, reason: str) -> None:
    assert codes.weakness(token) == reason


@pytest.mark.parametrize(
    ("token", "alphabet"),
    [
        ("0123456789abcdef", 16),
        ("0123456789ABCDEF", 16),
        ("0123456789", 10),
        ("abcdefghij", 26),
        ("ABCDEFGHIJ", 26),
        ("abcdefGHIJ", 52),
        ("abcdef0123-_", 38),
        ("abc123XYZ-_!", 95),
        ("abcdefghé", 57),
    ],
    ids=[
        "hex",
        "hex-upper",
        "digits",
        "lower",
        "upper",
        "mixed-case",
        "urlsafe",
        "punctuation",
        "non-ascii",
    ],
)
def test_estimate_is_length_times_log2_of_the_classes_used(token: str, alphabet: int) -> None:
    assert codes.estimate_bits(token) == pytest.approx(len(token) * math.log2(alphabet))


def test_hex_letters_alone_count_as_hex() -> None:
    assert codes.estimate_bits("abcdefabcdfe") == pytest.approx(12 * 4)
