"""The JSON store's ``cursors.json``: private, atomic, refused (and left as it is) when bad.
(What every backend must do with cursors is in tests/contracts/test_store.py.)"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from bot.core.errors import SchemaVersionError, StoreCorruptError
from stores.jsonfile import JsonFileStore


def test_cursors_are_one_private_file_that_keeps_what_it_does_not_know(
    store: JsonFileStore, state_dir: Path
) -> None:
    path = state_dir / "cursors.json"
    path.write_text('{"version": 1, "cursors": {"a": "1"}, "later": true}')
    path.chmod(0o600)

    store.save_cursor("imessage.catch-up", "2")

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {
        "version": 1,
        "cursors": {"a": "1", "imessage.catch-up": "2"},
        "later": True,
    }
    assert path in store.state_files()
    assert [p.name for p in state_dir.iterdir() if p.name.startswith(".cursors")] == []


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("not json", StoreCorruptError),
        ('["a"]', StoreCorruptError),
        ('{"cursors": {"a": 1}}', StoreCorruptError),
        ('{"version": 9, "cursors": {}}', SchemaVersionError),
    ],
)
def test_a_bad_cursors_file_is_refused_and_left_as_it_is(
    store: JsonFileStore, state_dir: Path, text: str, error: type[Exception]
) -> None:
    path = state_dir / "cursors.json"
    path.write_text(text)

    with pytest.raises(error, match=r"cursors\.json"):
        store.cursor("a")
    with pytest.raises(error):
        store.save_cursor("a", "1")
    with pytest.raises(error):
        store.check()
    assert path.read_text() == text
