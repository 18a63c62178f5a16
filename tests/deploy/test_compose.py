"""deploy/compose.yaml (PostgreSQL and two pairbot instances), deploy/.env.example and
deploy/config/pairbot.yaml: they parse, name what they must, and the config loads with
pairbot's own loader (no Docker here to run them)."""

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


INSTANCES = ("pairbot-a", "pairbot-b")
"""The pairbot services: two instances on one database."""


def published(svc: dict[str, Any]) -> list[tuple[str, int, int]]:
    """A service's published ports as ``(host address, host port, container port)``."""
    out: list[tuple[str, int, int]] = []
    for entry in svc.get("ports", []):
        address, host, container = str(entry).split(":")
        out.append((address, int(host), int(container)))
    return out


def test_it_runs_postgresql_and_two_pairbot_instances_from_one_definition() -> None:
    doc = compose()
    assert set(doc["services"]) == {"db", *INSTANCES}
    text = COMPOSE.read_text(encoding="utf-8")
    assert "not supported" not in " ".join(text.split())
    shared = doc["x-pairbot"]
    assert isinstance(shared, dict)
    for name in INSTANCES:
        pairbot = service(name)
        assert "scale" not in pairbot
        assert pairbot.get("deploy", {}).get("replicas", 1) == 1
        # Everything of the shared definition, as it is there (the YAML merge key): the
        # image, the env file, the DSN, the hardening.
        assert {key: pairbot[key] for key in shared} == shared
        assert re.search(rf"^  {re.escape(name)}:\n    <<: \*pairbot$", text, re.M), name
    assert len({service(name)["hostname"] for name in INSTANCES}) == len(INSTANCES)


def test_every_instance_is_hardened_and_stops_cleanly() -> None:
    for name in INSTANCES:
        pairbot = service(name)
        assert pairbot["read_only"] is True
        assert pairbot["cap_drop"] == ["ALL"]
        assert pairbot["security_opt"] == ["no-new-privileges:true"]
        assert pairbot["tmpfs"] == ["/tmp"]
        assert pairbot["init"] is True
        assert pairbot["stop_grace_period"] == "30s"
        assert pairbot["restart"] == "unless-stopped"


def test_the_database_keeps_its_data_on_a_named_volume_and_has_a_healthcheck() -> None:
    db = service("db")
    assert str(db["image"]).startswith("postgres:")
    assert mounts(db)["pgdata"] == "/var/lib/postgresql/data"
    assert "pgdata" in compose()["volumes"]
    check = db["healthcheck"]["test"]
    assert "pg_isready" in " ".join(check)
    assert "ports" not in db, "only the pairbot instances reach the database"


def test_each_instance_waits_for_a_healthy_database_and_keeps_its_own_state_volume() -> None:
    volumes = compose()["volumes"]
    states: list[str] = []
    for name in INSTANCES:
        pairbot = service(name)
        assert pairbot["depends_on"]["db"]["condition"] == "service_healthy"
        state = [
            source for source, target in mounts(pairbot).items() if target == "/var/lib/pairbot"
        ]
        assert len(state) == 1, f"{name}: one state volume"
        assert state[0] in volumes, f"{name}: {state[0]} is a named volume"
        states.append(state[0])
        assert mounts(pairbot)["./config"] == "/etc/pairbot"
        assert "./config:/etc/pairbot:ro" in pairbot["volumes"], "the config is read-only"
        assert (DEPLOY / pairbot["build"]["context"] / pairbot["build"]["dockerfile"]).is_file()
    assert len(set(states)) == len(INSTANCES), "a state volume each: none is shared"
    assert "pgdata" not in states
    assert len({service(name)["image"] for name in INSTANCES}) == 1, "one image for all"
    assert (DEPLOY / "config").is_dir()


def test_each_instance_publishes_its_own_gateway_port_on_loopback_only() -> None:
    ports = {name: published(service(name)) for name in INSTANCES}
    assert all(len(p) == 1 for p in ports.values()), ports
    assert {address for p in ports.values() for address, _, _ in p} == {"127.0.0.1"}
    hosts = [host for p in ports.values() for _, host, _ in p]
    assert sorted(hosts) == [18789, 18790], "distinct host ports"
    assert {container for p in ports.values() for _, _, container in p} == {18789}


def test_secrets_come_from_the_env_file_never_from_the_compose_file() -> None:
    for name in INSTANCES:
        pairbot = service(name)
        assert pairbot["env_file"] == [".env"]
        url = pairbot["environment"]["PAIRBOT_DATABASE_URL"]
        assert re.fullmatch(
            r"postgresql://pairbot:\$\{POSTGRES_PASSWORD:\?[^}]*\}@db:5432/pairbot", url
        ), name
        assert set(pairbot["environment"]) == {"PAIRBOT_DATABASE_URL"}, name
    assert service("db")["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")


def test_the_env_example_names_every_variable_with_placeholders_only() -> None:
    example = env_file(ENV_EXAMPLE)
    used = {
        name
        for path in (COMPOSE, CONFIG)
        for text in strings(yaml.safe_load(path.read_text(encoding="utf-8")))
        for name in ENV_REF.findall(text)
    }
    set_by_compose = {var for name in INSTANCES for var in service(name)["environment"]}
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
    for name in INSTANCES:
        assert [port for _, _, port in published(service(name))] == [config.gateway.port], name


def test_the_committed_files_hold_no_real_secret() -> None:
    for path in (COMPOSE, CONFIG, ENV_EXAMPLE):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"postgresql://[^:\s]+:(?!\$\{)[^@\s]+@", text), path
        assert not re.search(r"\d{6,}:[A-Za-z0-9_-]{30,}", text), f"{path}: a bot token?"
    assert "deploy/.env" in (ROOT / ".gitignore").read_text(encoding="utf-8").split()
