"""``python`` handlers for the held-message tests.

:func:`record` notes each message it is given in ``$HELD_RECORD`` (one per line) and, when
one's text is ``$HELD_DIE_ON``, dies at once (``os._exit``: no cleanup, as ``kill -9``)
right after noting it, before it returns: for a ``pairbot run`` of its own.

:func:`gated` (in the test's process) notes each text in :data:`SEEN` and answers it only
once :data:`GATE` is set: a handler as slow as the test wants.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from bot.core.models import Inbound

GATE = threading.Event()
SEEN: list[str] = []


def record(msg: Inbound) -> str | None:
    with Path(os.environ["HELD_RECORD"]).open("a", encoding="utf-8") as out:
        out.write(msg.text + "\n")
        out.flush()
        os.fsync(out.fileno())
    if msg.text == os.environ.get("HELD_DIE_ON"):
        os._exit(9)
    return None


def gated(msg: Inbound) -> str:
    SEEN.append(msg.text)
    GATE.wait(30)
    return f"answered: {msg.text}"
