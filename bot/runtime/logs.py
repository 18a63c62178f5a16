"""Logging set-up and redaction: no log line of the process carries a secret or a chat text.

pairbot never logs codes, tokens or message texts on purpose, but the SDKs do at DEBUG (PTB
prints every update and every call's parameters, slack-sdk and discord.py every payload). So
every record is redacted when it is *made*: :func:`install_redaction` puts a hook in
:func:`logging.setLogRecordFactory`, which every logger calls before any handler or filter
sees the record, whatever its handlers, levels or ``propagate``. A :class:`RedactFilter` on
the root handler catches records made another way (``logging.makeLogRecord``).

The rules themselves (what is masked, and how) are :mod:`bot.runtime.redact`; the secrets
learned at run time are :mod:`bot.runtime.remembered`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from bot.runtime.redact import Redactor, is_redacted, redact_or_drop
from bot.runtime.remembered import REGISTRY


class RedactFilter(logging.Filter):
    """A handler filter applying a :class:`Redactor`; it never drops a record."""

    def __init__(self, secrets: Iterable[str] = (), *, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor if redactor is not None else Redactor(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask the record (unless the record factory already did and nothing changed)."""
        if not is_redacted(record):
            redact_or_drop(self.redactor, record)
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
        redact_or_drop(ACTIVE, record)
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
    "ACTIVE",
    "RedactFilter",
    "add_secrets",
    "install_redaction",
    "reset_redaction",
    "setup_logging",
]
