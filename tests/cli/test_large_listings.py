"""Listings of hundreds of thousands of entries: streamed, never one table or one string."""

from __future__ import annotations

import io
import json
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.cli import main as cli
from bot.cli import output
from bot.core.clock import FakeClock, SystemClock
from bot.core.models import AuditEvent
from bot.core.text import moment
from bot.services.pairing import PairingService
from stores.jsonfile import JsonFileStore
from tests.cli.test_cli import run
from tests.process import PAIRBOT

LARGE = 200_000
MAX_WRITE = 1 << 20  # the largest write a streamed listing may make (the whole is ~15 MB)


def seed_allowlist(state_dir: Path, provider: str, ids: list[str]) -> None:
    """Write an allowlist file directly, in the shape pairbot writes (fast for 200k ids)."""
    credentials = state_dir / "credentials"
    credentials.mkdir(mode=0o700, parents=True, exist_ok=True)
    (credentials / f"{provider}-allowFrom.json").write_text(
        json.dumps({"version": 1, "allowFrom": ids}, indent=2) + "\n"
    )


def large_ids(count: int = LARGE) -> list[str]:
    return [str(1_000_000_000 + i) for i in range(count)]


class Sink(io.TextIOBase):
    """Standard output for an in-process run: keeps the text and the size of every write."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.sizes: list[int] = []

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.parts.append(text)
        self.sizes.append(len(text))
        return len(text)

    @property
    def text(self) -> str:
        return "".join(self.parts)


def main(monkeypatch: pytest.MonkeyPatch, state_dir: Path, *args: str) -> tuple[int, Sink]:
    """Run ``pairbot ARGS`` in this process with standard output going to a Sink.

    (Set in the test's own call: pytest puts its capture back on sys.stdout after fixtures.)
    """
    out = Sink()
    monkeypatch.setattr("sys.stdout", out)
    return cli.main(["--state-dir", str(state_dir), *args]), out


def no_table(*_args: Any, **_kwargs: Any) -> None:
    raise AssertionError("a table was built")


def test_allowlist_json_of_a_large_list_is_the_store_as_json_dumps_lays_it_out(
    state_dir, tmp_path
):
    ids = large_ids()
    seed_allowlist(state_dir, "telegram", ids)
    seed_allowlist(state_dir, "slack", ["U2", "U1"])
    config = tmp_path / "pairbot.yaml"
    config.write_text("providers:\n  telegram: {token: x, allow_from: ['7', '1000000005']}\n")

    result = run(state_dir, "--config", str(config), "allowlist", "list", "--json")

    assert result.returncode == 0, result.stderr
    expected = [{"provider": "telegram", "id": i, "source": "store"} for i in ids]
    expected.append({"provider": "telegram", "id": "7", "source": "config"})
    expected += [{"provider": "slack", "id": i, "source": "store"} for i in ("U2", "U1")]
    assert json.loads(result.stdout) == expected
    assert result.stdout == json.dumps(expected, indent=2) + "\n"


def test_allowlist_json_is_written_element_by_element(state_dir, monkeypatch):
    seed_allowlist(state_dir, "telegram", large_ids())
    monkeypatch.setattr(output, "Table", no_table)

    status, sink = main(monkeypatch, state_dir, "allowlist", "list", "--json")

    assert status == 0

    assert [row["id"] for row in json.loads(sink.text)] == large_ids()
    assert len(sink.sizes) > 10
    assert max(sink.sizes) <= MAX_WRITE


def test_human_listing_of_a_large_list_prints_aligned_lines_not_a_table(state_dir, monkeypatch):
    ids = large_ids()
    seed_allowlist(state_dir, "telegram", ids)
    monkeypatch.setattr(output, "Table", no_table)

    status, sink = main(monkeypatch, state_dir, "allowlist", "list")

    assert status == 0

    lines = sink.text.splitlines()
    assert lines[0] == "Provider  Sender id   Source"
    assert lines[1] == "telegram  1000000000  store"
    assert len(lines) == 1 + LARGE
    assert [line.split() for line in lines[1:]] == [["telegram", i, "store"] for i in ids]
    assert max(sink.sizes) <= MAX_WRITE


def test_a_table_up_to_table_rows_and_lines_past_it(state_dir, monkeypatch):
    seed_allowlist(state_dir, "telegram", large_ids(output.TABLE_ROWS))
    _, sink = main(monkeypatch, state_dir, "allowlist", "list")
    assert sink.text.startswith(f"Allowed senders ({output.TABLE_ROWS})")

    seed_allowlist(state_dir, "telegram", large_ids(output.TABLE_ROWS + 1))
    _, sink = main(monkeypatch, state_dir, "allowlist", "list")
    assert sink.text.startswith("Provider  Sender id   Source\n")
    assert len(sink.text.splitlines()) == 2 + output.TABLE_ROWS


def test_grants_that_end_add_an_until_column_to_the_lines(state_dir, monkeypatch):
    seed_allowlist(state_dir, "telegram", large_ids(output.TABLE_ROWS))
    clock = SystemClock()
    end = clock.now() + timedelta(days=7)
    PairingService(JsonFileStore(state_dir), clock=clock).allow(
        "telegram", "555", actor="owner", until=end
    )
    _, sink = main(monkeypatch, state_dir, "allowlist", "list")
    lines = sink.text.splitlines()
    assert lines[0] == "Provider  Sender id   Source  Until"
    assert lines[1] == "telegram  1000000000  store   -"
    assert lines[-1] == f"telegram  555         store   {moment(end)}, 7d left"
    assert len(lines) == 2 + output.TABLE_ROWS


def test_lines_show_an_unprintable_id_escaped_never_raw(state_dir, monkeypatch):
    evil = "evil\nimessage  forged  store\x1b[2J"
    seed_allowlist(state_dir, "telegram", [*large_ids(output.TABLE_ROWS), evil])
    _, sink = main(monkeypatch, state_dir, "allowlist", "list")
    lines = sink.text.splitlines()
    assert len(lines) == 2 + output.TABLE_ROWS
    assert lines[-1] == f"telegram  {json.dumps(evil)}  store"
    assert "\x1b" not in sink.text


@pytest.mark.parametrize(
    "args",
    [["allowlist", "list"], ["allowlist", "list", "--json"], ["audit", "--limit", "100000"]],
)
def test_a_reader_that_goes_away_ends_the_listing_quietly(state_dir, args):
    seed_allowlist(state_dir, "telegram", large_ids())
    store = JsonFileStore(state_dir)
    with store.transaction() as txn:
        for i in range(20_000):
            txn.audit(
                AuditEvent(
                    ts=FakeClock().now(),
                    event="allow",
                    actor="cli:test",
                    provider="telegram",
                    subject=str(i),
                    outcome="added",
                )
            )
    proc = subprocess.Popen(
        [str(PAIRBOT), "--state-dir", str(state_dir), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # as `| head -1` does after its line
    stderr = proc.stderr.read()
    proc.stderr.close()

    assert proc.wait(timeout=60) == 141  # 128 + SIGPIPE, as `yes | head` ends
    assert first.strip()
    assert stderr.decode() == ""


def test_audit_streams_the_last_records_as_lines_past_table_rows(state_dir, monkeypatch):
    store = JsonFileStore(state_dir)
    clock = FakeClock()
    with store.transaction() as txn:
        for i in range(1000):
            txn.audit(
                AuditEvent(
                    ts=clock.now(),
                    event="allow",
                    actor="cli:test",
                    provider="telegram",
                    subject=str(i),
                    outcome="added",
                )
            )
    monkeypatch.setattr(output, "Table", no_table)

    status, sink = main(monkeypatch, state_dir, "audit", "--limit", "300")

    assert status == 0
    lines = sink.text.splitlines()
    assert lines[0].split() == ["Time", "Event", "Actor", "Provider", "Subject", "Outcome"]
    assert [line.split()[-2] for line in lines[1:]] == [str(i) for i in range(700, 1000)]

    status, sink = main(monkeypatch, state_dir, "audit", "--limit", "300", "--json")
    assert status == 0
    assert json.loads(sink.text) == store.read_audit(limit=300)
    assert sink.text == json.dumps(store.read_audit(limit=300), indent=2) + "\n"


def test_iter_allowed_is_the_list_form_one_at_a_time(store, clock):
    pairing = PairingService(store, clock=clock, static_allow={"telegram": ["9", "1"]})
    for sender in ("1", "2"):
        pairing.allow("telegram", sender, actor="owner")
    pairing.allow("slack", "U1", actor="owner")

    entries = pairing.iter_allowed()
    first = next(entries)

    assert (first.provider, first.id, first.source.value) == ("telegram", "1", "store")
    assert [first, *entries] == pairing.allowed()
    assert [(g.provider, g.source.value, list(g.ids)) for g in pairing.allowed_groups()] == [
        ("telegram", "store", ["1", "2"]),
        ("telegram", "config", ["9"]),
        ("slack", "store", ["U1"]),
    ]


def test_a_broken_pipe_elsewhere_is_not_taken_for_a_closed_output(state_dir, monkeypatch):
    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise BrokenPipeError(32, "Broken pipe")  # e.g. a socket, while stdout is fine

    monkeypatch.setattr(PairingService, "allowed_groups", broken)
    with pytest.raises(BrokenPipeError):
        main(monkeypatch, state_dir, "allowlist", "list")
