"""Secrets learned while running: each pairing code issued or loaded, each node token minted.

The running bot feeds them to :func:`remember_secret`; :class:`~bot.runtime.redact.Redactor`
masks them in every log record (:mod:`bot.runtime.logs`). The newest :data:`REGISTRY_LIMIT`
are kept. A code is found in any form a person types it (``ABCD2345``, ``ABCD-2345``,
``abcd-2345``, ``abcd 2345``); a token as a whole run of ``[A-Za-z0-9_-]`` or inside a
longer one; anything else literally.
"""

from __future__ import annotations

import re
import threading
from collections import Counter, OrderedDict

from bot.core.codes import ALPHABET, CODE_LENGTH

MASK = "[redacted]"
REGISTRY_LIMIT = 10_000
"""How many run-time secrets the registry keeps (the oldest are forgotten first)."""
MIN_SECRET = 6
"""Shorter strings are never treated as secrets: masking them would wreck the logs."""

_SYMBOL_SET = frozenset(ALPHABET + ALPHABET.lower())
_RUN = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{16,}+")
_RUN_CHARS = re.compile(r"[A-Za-z0-9_-]{16,}+")


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


__all__ = ["MASK", "MIN_SECRET", "REGISTRY", "SecretRegistry", "remember_secret"]
