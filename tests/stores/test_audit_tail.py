"""The audit log's last records are found by reading back from its end, never the whole log."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from stores._files import last_lines_offset
from stores.jsonfile import JsonFileStore

LOGS = [
    b"",
    b"\n",
    b'{"n": 1}',
    b'{"n": 1}\n',
    b'{"n": 1}\n{"n": 2}',
    b'{"n": 1}\n\n{"n": 2}\nnot json\n[3]\n{"n": 4}\n',
    b"".join(b'{"n": %d}\n' % i for i in range(50)),
]


@pytest.mark.parametrize("data", LOGS)
@pytest.mark.parametrize("block", [1, 3, 7, 1 << 16])
def test_the_last_lines_start_where_splitting_the_whole_file_says(data: bytes, block: int) -> None:
    lines = data.splitlines(keepends=True)
    for count in range(len(lines) + 2):
        offset = last_lines_offset(io.BytesIO(data), count, block=block)
        assert data[offset:] == b"".join(lines[-count:] if count else [])


def test_iter_audit_yields_the_last_records_and_skips_bad_lines(state_dir: Path) -> None:
    store = JsonFileStore(state_dir)
    store.audit_path.write_bytes(
        b'{"n": 1}\nnot json\n{"n": 2}\n\xff\xfe\n{"n": 3}\n[4]\n{"n": "\xc3\xa9"}'
    )
    assert store.read_audit() == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": "é"}]
    assert list(store.iter_audit(limit=4)) == [{"n": 3}, {"n": "é"}]
    assert list(store.iter_audit(limit=0)) == []
    assert list(JsonFileStore(state_dir / "other").iter_audit(limit=5)) == []


class CountingReader(io.BufferedReader):
    """A binary file that counts the bytes handed out by ``read`` and line iteration."""

    handed_out = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        CountingReader.handed_out += len(chunk)
        return chunk

    def __next__(self) -> bytes:
        line = super().__next__()
        CountingReader.handed_out += len(line)
        return line


def test_iter_audit_reads_only_the_end_of_a_long_log(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JsonFileStore(state_dir)
    with store.audit_path.open("wb") as log:
        for i in range(100_000):
            log.write(json.dumps({"n": i}).encode() + b"\n")
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: CountingReader(io.FileIO(fd, mode)))
    CountingReader.handed_out = 0

    assert [r["n"] for r in store.iter_audit(limit=3)] == [99_997, 99_998, 99_999]
    assert 0 < CountingReader.handed_out < 1 << 17  # a block or two, not the 1.5 MB log
