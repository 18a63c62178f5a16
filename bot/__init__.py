"""pairbot: explicit owner approval in front of a chat assistant."""

from __future__ import annotations

__version__ = "0.1.0"
