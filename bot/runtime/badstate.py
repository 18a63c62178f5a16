"""State files that go bad while the bot runs: the owners are told once per bad file.

A message that needs an unusable file is refused closed (no code sent, nothing granted) by
the inbound pipeline; :class:`BadStateFiles` decides whether that is news for the owners.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.core.errors import StoreError
from bot.core.protocols import StateStore
from bot.runtime.notices import OwnerNotices


class BadStateFiles:
    """The state files found unusable while running: the owners are told once per bad file,
    and again only after it was seen good."""

    def __init__(self, store: StateStore, notices: OwnerNotices) -> None:
        self.store = store
        self.notices = notices
        self._bad_state_files: frozenset[Path] = frozenset()
        """State files found unusable, whose owners were told (replaced, not mutated)."""

    @property
    def known(self) -> bool:
        """Whether any state file is known to be bad (then every handled message rechecks)."""
        return bool(self._bad_state_files)

    async def track(self, exc: StoreError | None) -> None:
        """Tell the owners once about a state file that went bad; forget files good again.

        A file counts as bad only if it still fails to load now: a failed write or a busy lock
        is not a bad file. It is reported again only once it was seen good in between.
        """
        unusable = self.store.recheck
        path = exc.path if exc is not None else None
        if path is not None and path not in self._bad_state_files:
            self._bad_state_files |= {path}  # before any await: concurrent messages tell once
            if await asyncio.to_thread(unusable, path):
                await self.notices.state_file_unusable(str(exc))
            else:
                self._bad_state_files -= {path}
        for other in self._bad_state_files - {path}:
            if not await asyncio.to_thread(unusable, other):
                self._bad_state_files -= {other}


__all__ = ["BadStateFiles"]
