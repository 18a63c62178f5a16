"""``pairbot store export`` / ``import``, run as the installed command on temp state dirs."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from bot.core.clock import SystemClock
from bot.services.nodes import NodeService
from bot.services.pairing import PairingService
from stores.jsonfile import JsonFileStore
from tests.cli.test_cli import run
from tests.process import run_pairbot
from tests.stores.helpers import snapshot
from tests.stores.test_clawdbot_compat import CLAWDBOT_ALLOW, CLAWDBOT_PAIRING

LISTINGS = (
    ("pairing", "list", "--json"),
    ("allowlist", "list", "--json"),
    ("nodes", "list", "--json"),
    ("nodes", "pending", "--json"),
)


def listings(state: Path) -> list[object]:
    return [json.loads(run(state, *cmd).stdout) for cmd in LISTINGS]


def filled(state: Path) -> Path:
    store = JsonFileStore(state)
    clock = SystemClock()
    pairing, nodes = PairingService(store, clock=clock), NodeService(store, clock=clock)
    pairing.request("telegram", "42", {"firstName": "Alice"})
    asked = pairing.request("slack", "U0BOB", {"name": "Bob"}).request
    assert asked is not None
    pairing.approve(asked.code, actor="owner")
    pairing.allow("signal", "+15550001111", actor="owner")
    ask = nodes.request("n1", display_name="Phone")
    nodes.approve(ask.request.request_id, actor="owner")
    nodes.request("n2", display_name="Laptop")
    store.close()
    return state


def test_export_then_import_gives_the_same_listings(tmp_path: Path) -> None:
    source = filled(tmp_path / "a")
    out = tmp_path / "state.json"
    exported = run(source, "store", "export", "--output", str(out))
    assert exported.returncode == 0, exported.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "Exported" in exported.stdout
    assert "to " in exported.stdout
    imported = run(tmp_path / "b", "store", "import", str(out))
    assert imported.returncode == 0, imported.stderr
    assert listings(tmp_path / "b") == listings(source)
    audit = [json.loads(run(s, "audit", "--json").stdout) for s in (source, tmp_path / "b")]
    assert audit[0] == audit[1]
    assert audit[0]


def test_export_to_stdout_is_the_document(tmp_path: Path) -> None:
    source = filled(tmp_path / "a")
    document = json.loads(run(source, "store", "export").stdout)
    assert (document["format"], document["version"]) == ("pairbot-state", 1)
    assert [r["id"] for r in document["requests"]] == ["42"]


def test_import_into_a_store_with_state_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "state.json"
    run(filled(tmp_path / "a"), "store", "export", "--output", str(out))
    target = tmp_path / "b"
    run(target, "allowlist", "add", "telegram", "7")
    before = snapshot(target)
    refused = run(target, "store", "import", str(out))
    assert refused.returncode == 2
    assert "--merge" in refused.stderr
    assert "nothing was written" in refused.stderr
    assert snapshot(target) == before
    merged = run(target, "store", "import", str(out), "--merge")
    assert merged.returncode == 0, merged.stderr
    allowed = json.loads(run(target, "allowlist", "list", "--json").stdout)
    assert {(e["provider"], e["id"]) for e in allowed} >= {("telegram", "7"), ("slack", "U0BOB")}


def test_a_bad_document_is_one_line_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "pairbot-state", "version": 1, "requests": [{}]}))
    result = run(tmp_path / "b", "store", "import", str(bad))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert f"{bad}: requests[0].provider" in result.stderr


def test_import_from_a_clawdbot_state_dir_leaves_it_untouched(tmp_path: Path) -> None:
    clawdbot = tmp_path / "clawdbot"
    (clawdbot / "credentials").mkdir(parents=True)
    (clawdbot / "credentials" / "telegram-pairing.json").write_text(json.dumps(CLAWDBOT_PAIRING))
    (clawdbot / "credentials" / "telegram-allowFrom.json").write_text(json.dumps(CLAWDBOT_ALLOW))
    before = snapshot(clawdbot)
    result = run(tmp_path / "b", "store", "import", "--from-state-dir", str(clawdbot))
    assert result.returncode == 0, result.stderr
    assert snapshot(clawdbot) == before
    with JsonFileStore(tmp_path / "b").transaction() as txn:
        # (long expired by the real clock, so not listed; kept until pruned, as they were)
        assert [r.code for r in txn.requests("telegram")] == ["K7QH2RXP", "M4ZT8WQA"]
        assert txn.allow_from("telegram") == ["555"]


def test_neither_or_both_sources_is_a_usage_error(tmp_path: Path) -> None:
    for args in ((), ("x.json", "--from-state-dir", str(tmp_path))):
        result = run(tmp_path / "b", "store", "import", *args)
        assert result.returncode == 2
        assert "either FILE or --from-state-dir" in result.stderr


def backend_config(tmp_path: Path, name: str, store: dict[str, str]) -> Path:
    """A config file whose ``store:`` is ``store``, over its own state dir."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps({"state_dir": str(tmp_path / name), "store": store}))
    path.chmod(0o600)
    return path


def test_a_round_trip_through_every_backend_gives_the_same_listings(
    tmp_path: Path, pg_dsn: str
) -> None:
    """json → sqlite → postgres → json: the listings and the audit are the same at every
    step, and the last document is the first."""
    source = filled(tmp_path / "a")
    expected = listings(source)
    chain = [
        backend_config(tmp_path, "db", {"backend": "sqlite"}),
        backend_config(tmp_path, "pg", {"backend": "postgres", "dsn": pg_dsn}),
        backend_config(tmp_path, "back", {"backend": "json"}),
    ]
    document = tmp_path / "step0.json"
    assert run(source, "store", "export", "-o", str(document)).returncode == 0
    for step, config in enumerate(chain, start=1):
        imported = run_pairbot("--config", str(config), "store", "import", str(document))
        assert imported.returncode == 0, imported.stderr
        shown = [json.loads(run_pairbot("--config", str(config), *cmd).stdout) for cmd in LISTINGS]
        assert shown == expected, f"step {step}"
        document = tmp_path / f"step{step}.json"
        exported = run_pairbot("--config", str(config), "store", "export", "-o", str(document))
        assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "db" / "pairbot.db").exists()
    first, last = (json.loads((tmp_path / f"step{n}.json").read_text()) for n in (0, 3))
    del first["exportedAt"], last["exportedAt"]
    assert last == first


def test_doctor_checks_the_configured_sqlite_store(tmp_path: Path) -> None:
    config = backend_config(tmp_path, "db", {"backend": "sqlite"})
    assert (
        run_pairbot("--config", str(config), "allowlist", "add", "telegram", "7").returncode == 0
    )
    (tmp_path / "db" / "credentials").mkdir()
    (tmp_path / "db" / "credentials" / "telegram-allowFrom.json").write_text('{"allowFrom": []}')
    doctor = run_pairbot("--config", str(config), "doctor")
    assert "info store: sqlite" in doctor.stdout
    assert "ok   the database is readable" in doctor.stdout
    assert "pairbot store import --from-state-dir" in doctor.stdout
    assert "FAIL" not in doctor.stdout.replace("FAIL no owners", "")
    (tmp_path / "db" / "pairbot.db").write_bytes(b"not a database at all" * 100)
    damaged = run_pairbot("--config", str(config), "doctor")
    assert damaged.returncode == 1
    assert f"FAIL {tmp_path / 'db' / 'pairbot.db'}" in damaged.stdout
