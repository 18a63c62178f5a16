"""Logging set-up and redaction: no log line of the process carries a secret or a chat text.

pairbot never logs codes, tokens or message texts on purpose, but the SDKs do at DEBUG (PTB
prints every update and every call's parameters, slack-sdk and discord.py every payload). So
every record is redacted when it is *made*: :func:`install_redaction` puts a hook in
:func:`logging.setLogRecordFactory`, which every logger calls before any handler or filter
sees the record, whatever its handlers, levels or ``propagate``. A :class:`RedactFilter` on
the root handler catches records made another way (``logging.makeLogRecord``).

What is masked (``[redacted]``):

- the config's secrets (bot and app tokens, passwords, the operator token; as written and
  URL-encoded), given to :func:`setup_logging` or :func:`add_secrets`;
- secrets known only at run time, fed by the running bot to :func:`remember_secret` (each
  pairing code issued or loaded, each node token minted; the newest
  :data:`REGISTRY_LIMIT` are kept). A code is masked in any form a person types it:
  ``ABCD2345``, ``ABCD-2345``, ``abcd-2345``, ``abcd 2345``;
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
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, quote_plus

from bot.core.codes import ALPHABET, CODE_LENGTH

MASK = "[redacted]"
REGISTRY_LIMIT = 10_000
"""How many run-time secrets the registry keeps (the oldest are forgotten first)."""
MIN_SECRET = 6
"""Shorter strings are never treated as secrets: masking them would wreck the logs."""

_FORMATTER = logging.Formatter()
_HALF = CODE_LENGTH // 2
_SYMBOLS = "".join(sorted(set(ALPHABET + ALPHABET.lower())))
_SYMBOL_SET = frozenset(_SYMBOLS)
_SYM = re.escape(_SYMBOLS)
# A code-shaped run: exactly 8 code symbols (any case), optionally split in the middle by a
# dash or a space, with no code symbol on either side.
_CODE = re.compile(rf"(?<![{_SYM}])([{_SYM}]{{{_HALF}}})([- ]?)([{_SYM}]{{{_HALF}}})(?![{_SYM}])")
# What must not touch a code-shaped word for the backstop to mask it (parts of ids, UUIDs).
_WORDISH = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_BOT_TOKEN = re.compile(r"(?<!\d)\d{5,}+:[A-Za-z0-9_-]{20,}+")
_CREDENTIAL = re.compile(r"(?i)(?<![A-Za-z0-9_-])(bearer|basic|bot)(\s++)[A-Za-z0-9._~+/=-]{16,}+")
_RUN = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{16,}+")
_RUN_CHARS = re.compile(r"[A-Za-z0-9_-]{16,}+")
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


class SecretRegistry:
    """Secrets learned while running (pairing codes, node tokens), newest ``limit`` kept.

    Codes are kept normalised and found in any case and with or without their dash; secrets
    made of ``[A-Za-z0-9_-]`` (tokens) are found as whole runs of those characters, or inside
    a longer run; anything else is searched for literally. Safe to feed from any thread:
    writers hold a lock, readers only test membership or take an immutable snapshot.
    """

    def __init__(self, limit: int = REGISTRY_LIMIT) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._order: OrderedDict[str, str] = OrderedDict()
        self.codes: set[str] = set()
        self._runs: set[str] = set()
        self._lengths: Counter[int] = Counter()
        self._run_lengths: tuple[int, ...] = ()
        self._literals: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self._order)

    def add(self, value: str) -> None:
        """Remember ``value`` as a secret (ignored if shorter than :data:`MIN_SECRET`)."""
        if not isinstance(value, str) or len(value.strip()) < MIN_SECRET:
            return
        value = value.strip()
        code = _as_code(value)
        key = code or value
        kind = "code" if code else "run" if _RUN_CHARS.fullmatch(value) else "literal"
        with self._lock:
            if key in self._order:
                self._order.move_to_end(key)
                return
            self._order[key] = kind
            self._index(key, kind, +1)
            while len(self._order) > self._limit:
                self._index(*self._order.popitem(last=False), -1)

    def clear(self) -> None:
        """Forget every run-time secret."""
        with self._lock:
            self._order.clear()
            self.codes.clear()
            self._runs.clear()
            self._lengths.clear()
            self._run_lengths = self._literals = ()

    def _index(self, key: str, kind: str, change: int) -> None:
        if kind == "code":
            (self.codes.add if change > 0 else self.codes.discard)(key)
        elif kind == "run":
            (self._runs.add if change > 0 else self._runs.discard)(key)
            self._lengths[len(key)] += change
            lengths = tuple(sorted(n for n, count in self._lengths.items() if count > 0))
            if lengths != self._run_lengths:
                self._run_lengths = lengths
        else:
            literals = [k for k, v in self._order.items() if v == "literal"]
            self._literals = tuple(sorted(literals, key=len, reverse=True))

    def redact(self, text: str) -> str:
        """Mask every token-like and literal secret of the registry in ``text``."""
        runs, lengths = self._runs, self._run_lengths
        if runs:
            text = _RUN.sub(lambda m: _mask_runs(m.group(0), runs, lengths), text)
        for literal in self._literals:
            if literal in text:
                text = text.replace(literal, MASK)
        return text


def _as_code(value: str) -> str | None:
    text = value.replace("-", "").replace(" ", "").upper()
    if len(text) == CODE_LENGTH and set(text) <= _SYMBOL_SET:
        return text
    return None


def _mask_runs(run: str, runs: set[str], lengths: tuple[int, ...]) -> str:
    """``run`` with every registered secret in it masked, also one glued to other characters.

    One pass over the run, trying each registered length at each position: linear.
    """
    if run in runs:
        return MASK
    if not lengths or len(run) <= lengths[0]:
        return run
    pieces: list[str] = []
    kept = at = 0
    while at < len(run):
        size = next(
            (n for n in reversed(lengths) if at + n <= len(run) and run[at : at + n] in runs), 0
        )
        if size:
            pieces += [run[kept:at], MASK]
            at = kept = at + size
        else:
            at += 1
    return "".join([*pieces, run[kept:]])


REGISTRY = SecretRegistry()
"""The process's run-time secrets; the running bot feeds it through :func:`remember_secret`."""


def remember_secret(value: str) -> None:
    """Never log ``value`` from now on (a pairing code when issued or loaded, a node token
    when minted). Cheap; safe from any thread."""
    REGISTRY.add(value)


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


def _is_clean(record: logging.LogRecord) -> bool:
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


def _redact_or_drop(redactor: Redactor, record: logging.LogRecord) -> None:
    try:
        redactor.redact_record(record)
    except Exception:  # never let a record through unmasked, never raise into a caller
        record.msg, record.args = "[record dropped: redaction failed]", None
        record.exc_info = record.exc_text = record.stack_info = None
        record.__dict__[_CLEAN] = (record.msg, None, None, None)


class RedactFilter(logging.Filter):
    """A handler filter applying a :class:`Redactor`; it never drops a record."""

    def __init__(self, secrets: Iterable[str] = (), *, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor if redactor is not None else Redactor(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask the record (unless the record factory already did and nothing changed)."""
        if not _is_clean(record):
            _redact_or_drop(self.redactor, record)
        return True

    def redact(self, text: str) -> str:
        """Return ``text`` masked."""
        return self.redactor.redact(text)


ACTIVE = Redactor()
"""The redactor every record of the process goes through once redaction is installed."""
_FILTER = RedactFilter(redactor=ACTIVE)


def add_secrets(secrets: Iterable[str]) -> None:
    """Never log these static secrets (a loaded config's ``Config.secrets()``)."""
    ACTIVE.add(secrets)


def _redacting(factory: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        _redact_or_drop(ACTIVE, record)
        return record

    make.pairbot_redacting = True  # type: ignore[attr-defined]
    make.wrapped = factory  # type: ignore[attr-defined]
    return make


def install_redaction() -> None:
    """Redact every record of the process from now on; idempotent.

    Hooks the log record factory (so loggers with their own handlers or ``propagate=False``
    are covered too) and puts the filter on every handler of every logger that exists.
    """
    if not getattr(logging.getLogRecordFactory(), "pairbot_redacting", False):
        logging.setLogRecordFactory(_redacting(logging.getLogRecordFactory()))
    loggers: list[Any] = [logging.getLogger()]
    loggers += list(logging.Logger.manager.loggerDict.values())
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)


def reset_redaction() -> None:
    """Undo :func:`install_redaction` and forget every secret given so far (for tests)."""
    REGISTRY.clear()
    ACTIVE.clear()
    factory = logging.getLogRecordFactory()
    if getattr(factory, "pairbot_redacting", False):
        logging.setLogRecordFactory(factory.wrapped)  # type: ignore[attr-defined]
    loggers: list[Any] = [logging.getLogger()]
    loggers += list(logging.Logger.manager.loggerDict.values())
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            handler.removeFilter(_FILTER)


def setup_logging(*, level: int = logging.INFO, secrets: Iterable[str] = ()) -> None:
    """Log to stderr, every record redacted; below DEBUG, quiet the chatty libraries.

    ``--debug`` means DEBUG on every logger, third-party ones included: that is when the SDKs
    print whole payloads, and the redaction is what keeps them clean.
    """
    add_secrets(secrets)
    root = logging.getLogger()
    root.setLevel(level)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers[:] = [handler]
    install_redaction()
    if level > logging.DEBUG:
        for noisy in ("httpx", "httpcore", "apscheduler", "telegram.ext.Updater"):
            logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


__all__ = [
    "MASK",
    "RedactFilter",
    "Redactor",
    "SecretRegistry",
    "add_secrets",
    "install_redaction",
    "remember_secret",
    "setup_logging",
]
