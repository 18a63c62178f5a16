"""Allowlists are decoded and encoded in bulk, and a write reuses the list's text as read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.core.models import FOREVER
from stores.jsonfile import JsonFileStore
from tests.stores.helpers import load


def allow_file(state_dir: Path) -> Path:
    path = state_dir / "credentials" / "telegram-allowFrom.json"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def add(state_dir: Path, *senders: str) -> JsonFileStore:
    store = JsonFileStore(state_dir)
    with store.transaction() as txn:
        for sender in senders:
            txn.allow("telegram", sender)
    return store


def test_an_add_appends_to_the_text_read_instead_of_re_encoding_it(state_dir: Path) -> None:
    # Escaped as another writer (ensure_ascii) left them; pairbot itself writes "é" as is.
    path = allow_file(state_dir)
    before = json.dumps({"version": 1, "allowFrom": ["caf\u00e9", "2"]}, indent=2) + "\n"
    assert "\\u00e9" in before
    path.write_text(before)

    add(state_dir, "z\u00e9")

    assert path.read_text() == before.replace('"2"\n', '"2",\n    "z\u00e9"\n')


def test_a_second_write_reuses_the_text_of_the_first(state_dir: Path) -> None:
    path = allow_file(state_dir)
    path.write_text(json.dumps({"version": 1, "allowFrom": ["caf\u00e9"]}, indent=2) + "\n")
    store = add(state_dir, "1")
    with store.transaction() as txn:
        txn.allow("telegram", "2")
    assert path.read_text() == (
        '{\n  "version": 1,\n  "allowFrom": [\n    "caf\\u00e9",\n    "1",\n    "2"\n  ]\n}\n'
    )


def test_a_drop_re_encodes_the_list_the_way_pairbot_writes_it(state_dir: Path) -> None:
    path = allow_file(state_dir)
    path.write_text(json.dumps({"version": 1, "allowFrom": ["caf\u00e9", "2"]}, indent=2) + "\n")
    store = JsonFileStore(state_dir)
    with store.transaction() as txn:
        txn.disallow("telegram", "2")
    assert path.read_text() == '{\n  "version": 1,\n  "allowFrom": [\n    "caf\u00e9"\n  ]\n}\n'


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        # another writer's layout: one line, no final newline
        ('{"version": 1, "allowFrom": ["a", "b"]}', ["a", "b", "c"]),
        # Clawdbot's bare list
        ('["a", "b"]', ["a", "b", "c"]),
        # a key after the list
        (
            '{\n  "version": 1,\n  "allowFrom": [\n    "a"\n  ],\n  "note": [\n    "b"\n  ]\n}\n',
            ["a", "c"],
        ),
        # entries pairbot changes on reading: stripped, numbers, repeats
        (
            '{\n  "version": 1,\n  "allowFrom": [\n    " a ",\n    7,\n    "a"\n  ]\n}\n',
            ["a", "7", "c"],
        ),
        # a repeated key that makes the list look as if it ended later than it does
        (
            '{\n  "zz": ["b"],\n  "version": 1,\n  "allowFrom": [\n    "a"\n  ],\n'
            '  "zz": ["b"\n  ]\n}\n',
            ["a", "c"],
        ),
    ],
)
def test_any_other_layout_gets_the_right_list(
    state_dir: Path, written: str, expected: list[str]
) -> None:
    path = allow_file(state_dir)
    path.write_text(written)

    store = add(state_dir, "c")

    assert load(path)["allowFrom"] == expected
    assert [store.allowed_until("telegram", s) is FOREVER for s in ("a", "b", "c")] == [
        s in expected for s in ("a", "b", "c")
    ]
    fresh = JsonFileStore(state_dir)
    with fresh.transaction() as txn:
        assert txn.allow_from("telegram") == expected


def test_the_gate_of_a_process_sees_its_own_writes_and_other_writers(state_dir: Path) -> None:
    path = allow_file(state_dir)
    path.write_text(json.dumps({"version": 1, "allowFrom": ["*", "", " 1 "]}))
    gate = JsonFileStore(state_dir)
    assert [gate.allowed_until("telegram", s) is FOREVER for s in ("1", "*", "", "2")] == [
        True,
        False,
        False,
        False,
    ]
    with gate.transaction() as txn:
        txn.allow("telegram", "2")
    assert gate.allowed_until("telegram", "2")  # the set was rebuilt by the commit

    add(state_dir, "3")  # another process
    assert gate.allowed_until("telegram", "3")
    assert not gate.allowed_until("telegram", "*")
