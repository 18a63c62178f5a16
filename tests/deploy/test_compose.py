"""deploy/compose.yaml, deploy/.env.example and deploy/config/pairbot.yaml: they parse, name
what they must, and the config loads with pairbot's own loader (no Docker here to run them)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from bot.core.config import GatewayConfig
from bot.runtime.config import load_config
from tests.deploy.files import DEPLOY, ENV_REF, ROOT, env_file

COMPOSE = DEPLOY / "compose.yaml"
CONFIG = DEPLOY / "config" / "pairbot.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def service(name: str) -> dict[str, Any]:
    found = compose()["services"][name]
    assert isinstance(found, dict)
    return found


def mounts(svc: dict[str, Any]) -> dict[str, str]:
    """Where each volume of a service is mounted: ``{source: target}``."""
    out: dict[str, str] = {}
    for entry in svc.get("volumes", []):
        source, target, *_ = str(entry).split(":")
        out[source] = target
    return out


def strings(node: object) -> list[str]:
    """Every string value in a loaded YAML document (comments are not values)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in strings(value)]
    return []


def test_it_runs_postgresql_and_exactly_one_pairbot() -> None:
    doc = compose()
    assert set(doc["services"]) == {"db", "pairbot"}
    pairbot = service("pairbot")
    assert "scale" not in pairbot
    assert pairbot.get("deploy", {}).get("replicas", 1) == 1
    text = COMPOSE.read_text(encoding="utf-8")
    assert "two pairbot instances on one database is not supported yet" in " ".join(text.split())


def test_the_database_keeps_its_data_on_a_named_volume_and_has_a_healthcheck() -> None:
    db = service("db")
    assert str(db["image"]).startswith("postgres:")
    assert mounts(db)["pgdata"] == "/var/lib/postgresql/data"
    assert "pgdata" in compose()["volumes"]
    check = db["healthcheck"]["test"]
    assert "pg_isready" in " ".join(check)
    assert "ports" not in db, "only pairbot reaches the database"


def test_pairbot_waits_for_a_healthy_database_and_keeps_its_state_on_a_volume() -> None:
    pairbot = service("pairbot")
    assert pairbot["depends_on"]["db"]["condition"] == "service_healthy"
    assert mounts(pairbot)["state"] == "/var/lib/pairbot"
    assert "state" in compose()["volumes"]
    assert mounts(pairbot)["./config"] == "/etc/pairbot"
    assert (DEPLOY / "config").is_dir()
    assert (DEPLOY / pairbot["build"]["context"] / pairbot["build"]["dockerfile"]).is_file()


def test_secrets_come_from_the_env_file_never_from_the_compose_file() -> None:
    pairbot = service("pairbot")
    assert pairbot["env_file"] == [".env"]
    url = pairbot["environment"]["PAIRBOT_DATABASE_URL"]
    assert re.fullmatch(
        r"postgresql://pairbot:\$\{POSTGRES_PASSWORD:\?[^}]*\}@db:5432/pairbot", url
    )
    assert service("db")["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")


def test_the_env_example_names_every_variable_with_placeholders_only() -> None:
    example = env_file(ENV_EXAMPLE)
    used = {
        name
        for path in (COMPOSE, CONFIG)
        for text in strings(yaml.safe_load(path.read_text(encoding="utf-8")))
        for name in ENV_REF.findall(text)
    }
    set_by_compose = set(service("pairbot")["environment"])
    assert used - set_by_compose <= set(example), "every ${VAR} has a line in .env.example"
    assert all(value.startswith("replace-") for value in example.values()), example


def test_the_containers_config_loads_and_uses_postgres_through_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    password = "s3cret-in-the-environment"
    monkeypatch.setenv("PAIRBOT_DATABASE_URL", f"postgresql://pairbot:{password}@db:5432/pairbot")
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123456:ABCdefGhIJKlmnoPQRstuVWXyz0123456789")
    monkeypatch.setenv("PAIRBOT_OWNER_TELEGRAM_ID", "111111111")
    config = load_config(CONFIG)
    assert config.store.backend == "postgres"
    assert config.store.dsn is not None
    assert password in config.store.dsn
    assert password not in config.store.described()
    assert config.state_dir == "/var/lib/pairbot"
    assert config.gateway.enabled
    assert config.gateway.host == "0.0.0.0"  # inside the container
    assert config.gateway.port == GatewayConfig().port
    published = service("pairbot")["ports"]
    assert published == [f"127.0.0.1:{config.gateway.port}:{config.gateway.port}"]


def test_the_committed_files_hold_no_real_secret() -> None:
    for path in (COMPOSE, CONFIG, ENV_EXAMPLE):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"postgresql://[^:\s]+:(?!\$\{)[^@\s]+@", text), path
        assert not re.search(r"\d{6,}:[A-Za-z0-9_-]{30,}", text), f"{path}: a bot token?"
    assert "deploy/.env" in (ROOT / ".gitignore").read_text(encoding="utf-8").split()
