"""The redaction rules: what no log line of the process may carry, and how it is masked.

What is masked (``[redacted]``):

- the config's secrets (bot and app tokens, passwords, the operator token; as written and
  URL-encoded), given to :func:`~bot.runtime.logs.setup_logging` or
  :func:`~bot.runtime.logs.add_secrets`;
- secrets known only at run time, fed by the running bot to
  :func:`~bot.runtime.remembered.remember_secret` (each pairing code issued or loaded, each
  node token minted; the newest :data:`~bot.runtime.remembered.REGISTRY_LIMIT` are kept).
  A code is masked in any form a person types it: ``ABCD2345``, ``ABCD-2345``,
  ``abcd-2345``, ``abcd 2345``;
- message texts where an SDK prints a payload: the string value of any text-like key
  (``text``, ``caption``, ``content``, ``body``, ``message``, also prefixed:
  ``raw_text``) or secret-like key (``token``, ``access_token``, ``password``, ``secret``,
  ``authorization``) in JSON, a Python ``repr`` (``{'text': '...'}``, ``text='...'``), a
  URL-encoded form or query (``text=hi+there&``), including a value cut short by a
  truncating logger; ``Bearer``/``Bot``/``Basic`` credentials; Telegram-bot-token shapes;
- as a backstop, anything shaped like a pairing code that is not a plain word or number
  (8 symbols of :data:`bot.core.codes.ALPHABET`, optional dash in the middle, upper case or with
  a digit in it).

Ids, provider names, event and method names, URLs and status codes stay. Every rule is a
single pass of a regex without nested ambiguity (possessive quantifiers), so the cost is
linear in the length of a line, however hostile.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

from bot.core.codes import ALPHABET, CODE_LENGTH
from bot.runtime.remembered import MASK, MIN_SECRET, REGISTRY, SecretRegistry

_FORMATTER = logging.Formatter()
_HALF = CODE_LENGTH // 2
_SYMBOLS = "".join(sorted(set(ALPHABET + ALPHABET.lower())))
_SYM = re.escape(_SYMBOLS)
# A code-shaped run: exactly 8 code symbols (any case), optionally split in the middle by a
# dash or a space, with no code symbol on either side.
_CODE = re.compile(rf"(?<![{_SYM}])([{_SYM}]{{{_HALF}}})([- ]?)([{_SYM}]{{{_HALF}}})(?![{_SYM}])")
# What must not touch a code-shaped word for the backstop to mask it (parts of ids, UUIDs).
_WORDISH = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_BOT_TOKEN = re.compile(r"(?<!\d)\d{5,}+:[A-Za-z0-9_-]{20,}+")
_CREDENTIAL = re.compile(r"(?i)(?<![A-Za-z0-9_-])(bearer|basic|bot)(\s++)[A-Za-z0-9._~+/=-]{16,}+")
_TEXT_KEYS = "text|caption|content|body|message"
_SECRET_KEYS = "token|password|passwd|secret|authorization"  # noqa: S105 (key names)
_KEYED = re.compile(
    r"(?i)(?<![A-Za-z0-9_.-])"
    rf"(?P<key>(?:[A-Za-z0-9]++[_.-])*+(?:(?P<text>{_TEXT_KEYS})|{_SECRET_KEYS}))"
    r"(?P<kq>\\?[\"'])?+[ \t]*+(?P<sep>[:=])[ \t]*+"
    r"(?:"
    r"(?P<dqo>b?\")(?P<dq>[^\"\\]*+(?:\\[\s\S][^\"\\]*+)*+)"
    r"|(?P<sqo>b?')(?P<sq>[^'\\]*+(?:\\[\s\S][^'\\]*+)*+)"
    r"|(?P<eqo>\\[\"'])(?P<eq>(?:[^\\]++|\\(?![\"'])[\s\S])*+)"
    r"|(?P<bare>[^\s&,;()\[\]{}'\"<>]++)(?!\()"
    r")"
)
_LITERALS = frozenset({"None", "True", "False", "null", "true", "false", "Bearer", "Basic", "Bot"})
"""Bare values after ``text=`` or ``token:`` that are not the text or the secret itself."""


class Redactor:
    """Masks the static secrets it was given, the registry's, and the shape rules."""

    def __init__(
        self, secrets: Iterable[str] = (), *, registry: SecretRegistry | None = None
    ) -> None:
        self._registry = REGISTRY if registry is None else registry
        self._static: tuple[str, ...] = ()
        self._lock = threading.Lock()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Also mask ``secrets`` (each as written and URL-encoded)."""
        with self._lock:
            found = set(self._static)
            for secret in secrets:
                if isinstance(secret, str) and len(secret) >= MIN_SECRET:
                    found |= {secret, quote(secret, safe=""), quote_plus(secret)}
            self._static = tuple(sorted(found, key=len, reverse=True))

    def clear(self) -> None:
        """Forget the static secrets."""
        with self._lock:
            self._static = ()

    def redact(self, text: str) -> str:
        """Return ``text`` with every secret, message text and code-shaped string masked."""
        if not text:
            return text
        cleaned = _BOT_TOKEN.sub(MASK, text)
        cleaned = _CREDENTIAL.sub(_mask_credential, cleaned)
        for secret in self._static:
            if secret in cleaned:
                cleaned = cleaned.replace(secret, MASK)
        cleaned = self._registry.redact(cleaned)
        cleaned = _KEYED.sub(_mask_keyed, cleaned)
        codes = self._registry.codes
        return _CODE.sub(lambda m: _mask_code(m, codes), cleaned)

    def redact_record(self, record: logging.LogRecord) -> None:
        """Rewrite ``record`` in place with its message, traceback and stack masked.

        A record with nothing to mask keeps its ``msg`` and ``args`` as they were.
        """
        try:
            message = record.getMessage()
        except Exception:  # a bad %-format: mask what would be printed about it
            message = f"{record.msg} {record.args}"
        cleaned = self.redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        record.__dict__[_CLEAN] = (record.msg, record.args, record.exc_text, record.stack_info)


_CLEAN = "_pairbot_redacted"


def is_redacted(record: logging.LogRecord) -> bool:
    """Whether ``record`` was masked already and has not changed since."""
    seen = record.__dict__.get(_CLEAN)
    return seen is not None and all(
        a is b
        for a, b in zip(
            seen, (record.msg, record.args, record.exc_text, record.stack_info), strict=True
        )
    )


def _mask_credential(match: re.Match[str]) -> str:
    return f"{match.group(1)}{match.group(2)}{MASK}"


def _mask_keyed(match: re.Match[str]) -> str:
    bare = match.group("bare")
    if bare is not None:
        # ``text: ...`` unquoted is prose ("message: too long"); ``text=...`` is a form field.
        if (match.group("sep") == ":" and match.group("text")) or bare in _LITERALS:
            return match.group(0)
        return match.group(0)[: match.start("bare") - match.start()] + MASK
    for opener, body in (("dqo", "dq"), ("sqo", "sq"), ("eqo", "eq")):
        if match.group(opener) is not None:
            if not match.group(body):
                return match.group(0)
            start, end = match.start(body) - match.start(), match.end(body) - match.start()
            whole = match.group(0)
            return whole[:start] + MASK + whole[end:]
    return match.group(0)  # pragma: no cover (the regex always takes one branch)


def _mask_code(match: re.Match[str], codes: set[str]) -> str:
    head, sep, tail = match.groups()
    word = head + tail
    upper = word.upper()
    if upper in codes:
        return MASK
    if sep == " " or word.isdigit():
        return match.group(0)  # two words, or a number: only a registered code is masked
    text, start, end = match.string, match.start(), match.end()
    if (start and text[start - 1] in _WORDISH) or (end < len(text) and text[end] in _WORDISH):
        return match.group(0)  # part of a longer id (a UUID, a snowflake, a path)
    if word == upper or any(c.isdigit() for c in word):
        return MASK
    return match.group(0)  # a plain lowercase word ("telegram", "requests")


def redact_or_drop(redactor: Redactor, record: logging.LogRecord) -> None:
    """Mask ``record`` in place; if masking fails, replace its text instead of passing it."""
    try:
        redactor.redact_record(record)
    except Exception:  # never let a record through unmasked, never raise into a caller
        record.msg, record.args = "[record dropped: redaction failed]", None
        record.exc_info = record.exc_text = record.stack_info = None
        record.__dict__[_CLEAN] = (record.msg, None, None, None)


__all__ = ["MASK", "Redactor", "is_redacted", "redact_or_drop"]
