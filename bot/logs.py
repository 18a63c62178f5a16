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


class RedactFilter(logging.Filter):
    """Replaces secrets in a record's final message with ``[redacted]``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message with secrets masked; never drop a record."""
        message = record.getMessage()
        cleaned = _BOT_TOKEN.sub("[redacted]", message)
        for secret in self._secrets:
            cleaned = cleaned.replace(secret, "[redacted]")
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


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
