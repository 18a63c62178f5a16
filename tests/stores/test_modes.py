"""The state dir is 0700 and every file in it 0600, whatever the umask, after every write."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bot.core.clock import FakeClock
from bot.services.nodes import NodeService
from bot.services.pairing import PairingService
from stores.jsonfile import JsonFileStore


@pytest.fixture(params=[0o022, 0o002], ids=["umask022", "umask002"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_private(state_dir: Path) -> int:
    """Check every dir and file under the state dir; return how many files there are."""
    assert mode(state_dir) == 0o700
    files = 0
    for path in state_dir.rglob("*"):
        if path.is_dir():
            assert mode(path) == 0o700, path
        else:
            assert mode(path) == 0o600, path
            files += 1
    return files


@pytest.mark.usefixtures("umask")
def test_private_after_every_write(tmp_path: Path) -> None:
    state_dir = tmp_path / "deep" / "state"
    store = JsonFileStore(state_dir)
    clock = FakeClock()
    pairing = PairingService(store, clock=clock)
    nodes = NodeService(store, clock=clock)
    assert {p.name for p in state_dir.iterdir()} >= {"credentials", "nodes"}
    assert_private(state_dir)

    codes: list[str] = []

    def request() -> None:
        result = pairing.request("telegram", f"s{len(codes)}")
        assert result.request is not None
        codes.append(result.request.code)

    steps: list[Callable[[], object]] = [
        request,
        request,
        lambda: pairing.approve(codes[0], actor="owner"),
        lambda: pairing.reject(codes[1], actor="owner"),
        lambda: pairing.allow("discord", "d1", actor="owner"),
        lambda: pairing.revoke("discord", "d1", actor="owner"),
        lambda: nodes.approve(nodes.request("n1").request.request_id, actor="owner"),
        lambda: nodes.request("n2"),
        lambda: nodes.touch("n1"),
    ]
    for step in steps:
        step()
        assert_private(state_dir)
    # pairing + allow (telegram, discord), nodes pending + paired, audit, lock
    assert assert_private(state_dir) == 7


@pytest.mark.usefixtures("umask")
def test_existing_loose_modes_are_tightened(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    (state_dir / "credentials").mkdir(parents=True)
    state_dir.chmod(0o755)
    (state_dir / "credentials").chmod(0o775)
    allow_file = state_dir / "credentials" / "telegram-allowFrom.json"
    allow_file.write_text('{"version": 1, "allowFrom": ["1"]}')
    allow_file.chmod(0o644)
    audit = state_dir / "audit.jsonl"
    audit.write_text("")
    audit.chmod(0o666)

    store = JsonFileStore(state_dir)
    assert mode(state_dir) == 0o700
    assert mode(state_dir / "credentials") == 0o700
    assert mode(state_dir / "nodes") == 0o700
    assert mode(allow_file) == 0o644  # only read so far: pairbot does not touch it

    PairingService(store, clock=FakeClock()).allow("telegram", "2", actor="owner")
    assert mode(allow_file) == 0o600
    assert mode(audit) == 0o600
    assert_private(state_dir)
