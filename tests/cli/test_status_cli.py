"""``pairbot status``, run as the installed command: on PostgreSQL it lists the instances that
beat into the database in the last minute (with the leases they hold); on a single-machine
state it asks the local bot's gateway."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from psycopg.conninfo import make_conninfo

from bot import __version__
from bot.core.clock import FakeClock, SystemClock
from providers.telegram.fake import FakeTelegramServer
from stores.sql.cluster import PostgresCluster
from stores.sql.postgres import PostgresStore
from tests.gateway.support import OWNER, running
from tests.process import pairbot_exits, run_pairbot, telegram_config, write_config

PASSWORD = "status-pw-never-shown"
TOKEN_ENV = {"TG_TOKEN": "123:status-test-token"}


def pg_config(tmp_path: Path, dsn: str) -> Path:
    return write_config(
        tmp_path / "pairbot.yaml",
        {
            "state_dir": str(tmp_path / "state"),
            "owners": [{"provider": "telegram", "user_id": "111"}],
            "store": {"backend": "postgres", "dsn": "${PAIRBOT_DATABASE_URL}"},
            "providers": {"telegram": {"token": "${TG_TOKEN}"}},
        },
    )


def status(config: Path, dsn: str, *args: str) -> tuple[int, str, str]:
    done = run_pairbot(
        "status", "--config", str(config), *args, env={**TOKEN_ENV, "PAIRBOT_DATABASE_URL": dsn}
    )
    return done.returncode, done.stdout, done.stderr


Maker = Callable[[str], PostgresCluster]


@pytest.fixture
def instances(pg_dsn: str) -> Iterator[tuple[str, Maker]]:
    """The DSN (with a password the server does not ask for) and a maker of instances on it."""
    dsn = make_conninfo(pg_dsn, password=PASSWORD)
    made: list[PostgresCluster] = []
    stores: list[PostgresStore] = []

    def instance(name: str) -> PostgresCluster:
        stores.append(PostgresStore(dsn))
        made.append(PostgresCluster(stores[-1], instance_id=name))
        return made[-1]

    yield dsn, instance
    for cluster in made:
        cluster.close()
    for store in stores:
        store.close()


def facts(host: str, pid: int, *, ready: bool = True, phase: str = "running") -> dict[str, object]:
    """What the runtime says in each beat."""
    return {"version": "9.9.9", "host": host, "pid": pid, "phase": phase, "ready": ready}


def test_status_lists_the_instances_of_the_last_minute_with_their_leases(
    tmp_path: Path, instances: tuple[str, Maker]
) -> None:
    dsn, instance = instances
    now = SystemClock().now()
    a, b, gone = (instance(n) for n in ("m1-aaaa", "m2-bbbb", "m3-gone"))
    gone.beat(now=now - timedelta(minutes=5), facts=facts("m3", 3))
    a.beat(now=now - timedelta(seconds=30), facts=facts("m1", 101))
    a.beat(now=now - timedelta(seconds=3), facts=facts("m1", 101))
    b.beat(now=now - timedelta(seconds=10), facts=facts("m2", 202, ready=False, phase="starting"))
    assert a.hold("telegram", now=now, ttl=timedelta(minutes=1))
    assert a.hold("discord", now=now, ttl=timedelta(minutes=1))
    assert b.hold("signal", now=now - timedelta(minutes=2), ttl=timedelta(minutes=1))  # ended
    config = pg_config(tmp_path, dsn)

    code, out, err = status(config, dsn)
    assert code == 0, err
    lines = out.splitlines()
    row_a = next(line for line in lines if "m1-aaaa" in line)
    row_b = next(line for line in lines if "m2-bbbb" in line)
    assert "m3-gone" not in out
    assert lines.index(row_a) < lines.index(row_b)  # oldest first
    for cell in ("m1", "101", "9.9.9", "ready", "discord, telegram"):
        assert cell in row_a
    assert "s ago" in row_a
    for cell in ("m2", "202", "not ready (starting)"):
        assert cell in row_b
    assert "signal" not in out  # its lease ended

    code, out, err = status(config, dsn, "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert [s["instanceId"] for s in shown] == ["m1-aaaa", "m2-bbbb"]
    first = shown[0]
    assert first["host"] == "m1"
    assert first["pid"] == 101
    assert first["version"] == "9.9.9"
    assert first["ready"] is True
    assert first["phase"] == "running"
    assert first["holds"] == ["discord", "telegram"]
    assert first["startedAt"] == (now - timedelta(seconds=30)).isoformat()
    assert first["lastBeatAt"] == (now - timedelta(seconds=3)).isoformat()
    assert 3 <= first["lastBeatAgeSeconds"] < 60
    assert shown[1]["ready"] is False
    assert shown[1]["holds"] == []
    for text in (out, err):
        assert PASSWORD not in text


def test_status_exits_1_when_no_instance_reported(
    tmp_path: Path, instances: tuple[str, Maker]
) -> None:
    dsn, instance = instances
    instance("old").beat(now=SystemClock().now() - timedelta(minutes=2), facts={})
    config = pg_config(tmp_path, dsn)
    code, out, _ = status(config, dsn)
    assert (code, out.strip()) == (1, "No instance has reported in the last minute.")
    code, out, _ = status(config, dsn, "--json")
    assert (code, json.loads(out)) == (1, [])


def test_status_on_an_unreachable_database_says_so_without_the_password(
    tmp_path: Path, pg_dsn: str
) -> None:
    nowhere = make_conninfo(pg_dsn, port=1, password=PASSWORD)
    code, out, err = status(pg_config(tmp_path, nowhere), nowhere)
    assert code == 2
    assert out == ""
    last = err.strip().splitlines()[-1]  # after the store's one warning of the outage
    assert last.startswith("pairbot: error: postgres@127.0.0.1:1/")
    assert "PostgreSQL unreachable" in last
    assert PASSWORD not in err


# --- a single-machine state: the local bot, through its gateway ---------------------------------


def local_config(tmp_path: Path, tg: FakeTelegramServer, **gateway: object) -> Path:
    raw = telegram_config(tmp_path / "state", tg.base_url, gateway=gateway)
    return write_config(tmp_path / "pairbot.yaml", raw)


async def test_status_asks_the_running_bot_through_its_gateway(
    tmp_path: Path, state_dir: Path, fake_clock: FakeClock
) -> None:
    async with FakeTelegramServer() as tg:
        tg.started_before(OWNER)
        async with running(tg, state_dir, fake_clock) as gw:
            config = local_config(tmp_path, tg, port=gw.port)
            done = await pairbot_exits("status", "--config", str(config), env=TOKEN_ENV)
            assert done.returncode == 0, done.stderr
            row = next(line for line in done.stdout.splitlines() if "telegram" in line)
            for cell in (
                gw.app.cluster.instance_id,
                socket.gethostname()[:20],
                str(os.getpid()),
                __version__,
                "ready",
                "0s ago",
            ):
                assert cell in row, (cell, row)
            done = await pairbot_exits("status", "--config", str(config), "--json", env=TOKEN_ENV)
            assert done.returncode == 0, done.stderr
            (shown,) = json.loads(done.stdout)
            assert shown["instanceId"] == gw.app.cluster.instance_id
            assert shown["pid"] == os.getpid()
            assert shown["holds"] == ["telegram"]
            assert shown["ready"] is True
            assert shown["startedAt"] == gw.app.started_at.isoformat()

            await gw.app.providers["telegram"].stop()  # not ready: still running, shown so
            done = await pairbot_exits("status", "--config", str(config), "--json", env=TOKEN_ENV)
            assert done.returncode == 0, done.stderr
            (shown,) = json.loads(done.stdout)
            assert (shown["ready"], shown["phase"], shown["holds"]) == (False, "not ready", [])
        done = await pairbot_exits("status", "--config", str(config), env=TOKEN_ENV)
        assert done.returncode == 1
        assert done.stdout.startswith("No instance has reported in the last minute: nothing ")


def test_status_without_the_gateway_says_it_needs_it(tmp_path: Path) -> None:
    raw = telegram_config(tmp_path / "state", "http://127.0.0.1:1", gateway={"enabled": False})
    config = write_config(tmp_path / "pairbot.yaml", raw)
    done = run_pairbot("status", "--config", str(config), env=TOKEN_ENV)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "pairbot: error: status needs the gateway on a single-machine state (json): the "
        "running bot answers through its GET /readyz, and gateway.enabled is false"
    )


def test_status_with_nothing_listening_exits_1(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    raw = telegram_config(tmp_path / "state", "http://127.0.0.1:1", gateway={"port": port})
    config = write_config(tmp_path / "pairbot.yaml", raw)
    done = run_pairbot("status", "--config", str(config), env=TOKEN_ENV)
    assert done.returncode == 1
    assert f"nothing answers at http://127.0.0.1:{port}/readyz" in done.stdout


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:18789/readyz"),
        ("0.0.0.0", "http://127.0.0.1:18789/readyz"),
        ("::", "http://[::1]:18789/readyz"),
        ("::1", "http://[::1]:18789/readyz"),
        ("bot.internal", "http://bot.internal:18789/readyz"),
    ],
)
def test_status_asks_the_gateway_where_it_listens(host: str, url: str) -> None:
    from bot.cli.status import readyz_url
    from bot.core.config import GatewayConfig

    assert readyz_url(GatewayConfig(host=host, allow_plaintext=True)) == url
    tls = readyz_url(GatewayConfig(host=host, tls="auto"))
    assert tls == url.replace("http://", "https://")
