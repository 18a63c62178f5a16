"""A ``python`` handler for the held-message crash test: it notes each message it is given in
``$HELD_RECORD`` (one per line) and, when one's text is ``$HELD_DIE_ON``, dies at once
(``os._exit``: no cleanup, as ``kill -9``) right after noting it, before it returns."""

from __future__ import annotations

import os
from pathlib import Path

from bot.core.models import Inbound


def record(msg: Inbound) -> str | None:
    with Path(os.environ["HELD_RECORD"]).open("a", encoding="utf-8") as out:
        out.write(msg.text + "\n")
        out.flush()
        os.fsync(out.fileno())
    if msg.text == os.environ.get("HELD_DIE_ON"):
        os._exit(9)
    return None
