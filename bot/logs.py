"""Logging set-up, with a redaction filter as the backstop for secrets.

pairbot never logs codes, tokens or message text on purpose; this filter also masks any
known secret (bot tokens, the operator token) and anything shaped like a Telegram bot token
that a library might log (httpx logs request URLs, which carry the bot token).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

_BOT_TOKEN = re.compile(r"\d{5,}:[A-Za-z0-9_-]{20,}")
_FORMATTER = logging.Formatter()


class RedactFilter(logging.Filter):
    """Replaces secrets in a record's final message with ``[redacted]``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message with secrets masked; never drop a record.

        The traceback of ``log.exception`` (an httpx error names the URL, which carries the
        bot token) and ``stack_info`` are masked too.
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
        return True

    def redact(self, text: str) -> str:
        """Return ``text`` with every known secret and bot-token-shaped string masked."""
        cleaned = _BOT_TOKEN.sub("[redacted]", text)
        for secret in self._secrets:
            cleaned = cleaned.replace(secret, "[redacted]")
        return cleaned


def setup_logging(*, level: int = logging.INFO, secrets: Iterable[str] = ()) -> None:
    """Log to stderr with the redaction filter on every handler; quiet chatty libraries."""
    root = logging.getLogger()
    root.setLevel(level)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactFilter(secrets))
    root.handlers[:] = [handler]
    for noisy in ("httpx", "httpcore", "apscheduler", "telegram.ext.Updater"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
