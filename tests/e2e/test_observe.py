"""Metrics and events out, with the whole app on python-telegram-bot and the Bot API fake:
``/metrics`` parsed by Prometheus' own text parser; events signed and verified by the
documented verifier, the CLI's decisions among them, on every backend."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot import __version__
from bot.core.clock import FakeClock
from bot.core.config import Config
from providers.fakebase import wait_until
from providers.telegram.fake import FakeTelegramServer
from tests.e2e import support
from tests.e2e.support import app_config, code_in, texts
from tests.helpers import SECRET, Receiver
from tests.process import pairbot_exits

pytestmark = pytest.mark.e2e

OWNER, ALICE, BOB = 111, 4242, 5151

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def config_on(fake: FakeTelegramServer, **sections: Any) -> Config:
    block = {"token": fake.token, "api_base_url": fake.base_url}
    return app_config("telegram", str(OWNER), block, **sections)


@pytest.fixture
async def tg(fake_clock: FakeClock) -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer(clock=fake_clock) as fake:
        fake.started_before(OWNER)
        yield fake


async def scrape(url: str) -> tuple[int, Samples, str]:
    """GET ``url``; the status, every sample parsed by prometheus-client's parser, the text."""
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    if response.status_code != 200:
        return response.status_code, {}, response.text
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return 200, samples, response.text


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_metrics_on_the_gateways_port_count_what_happened_and_name_nobody(
    tg: FakeTelegramServer, state_dir: Path, fake_clock: FakeClock
) -> None:
    config = config_on(tg, metrics={"enabled": True})
    async with support.app_running(config, state_dir, fake_clock) as app:
        assert app.gateway is not None
        url = f"http://127.0.0.1:{app.gateway.port}/metrics"
        tg.dm(ALICE, "hello?", first_name="Alice")
        code = code_in((await texts(lambda: tg.messages_to(ALICE), 1))[0])
        tg.dm(ALICE, "still there?", first_name="Alice")  # a repeat: no new code
        tg.dm(OWNER, f"/approve {code}")
        await texts(lambda: tg.messages_to(ALICE), 2)  # "you're approved"
        tg.dm(ALICE, "hi", first_name="Alice")
        await texts(lambda: tg.messages_to(ALICE), 3)  # the echo
        tg.dm(BOB, "me too", first_name="Bob")
        await texts(lambda: tg.messages_to(BOB), 1)

        for _ in range(100):  # the audit log is read every watch_interval
            _, samples, _ = await scrape(url)
            if value(samples, "pairbot_approvals_total", kind="dm") == 1:
                break
            await support.settle(0.05)
        status, samples, text = await scrape(url)
    assert status == 200
    assert value(samples, "pairbot_build_info", version=__version__) == 1
    assert value(samples, "pairbot_gate_decisions_total", outcome="owner_command") == 1
    assert value(samples, "pairbot_gate_decisions_total", outcome="forward") == 1
    assert value(samples, "pairbot_gate_decisions_total", outcome="challenge") == 3
    assert value(samples, "pairbot_gate_decisions_total", outcome="drop") == 0
    assert (
        value(samples, "pairbot_pairing_requests_total", provider="telegram", outcome="created")
        == 2
    )
    assert (
        value(samples, "pairbot_pairing_requests_total", provider="telegram", outcome="pending")
        == 1
    )
    assert value(samples, "pairbot_approvals_total", kind="dm") == 1
    assert value(samples, "pairbot_approvals_total", kind="node") == 0
    assert value(samples, "pairbot_rejections_total", kind="dm") == 0
    assert value(samples, "pairbot_lockouts_total") == 0
    assert value(samples, "pairbot_owner_notices_total", result="sent") == 2
    assert value(samples, "pairbot_owner_notices_total", result="folded") == 0
    assert value(samples, "pairbot_handler_latency_seconds_count") == 1
    assert value(samples, "pairbot_handler_latency_seconds_bucket", le="+Inf") == 1
    assert value(samples, "pairbot_pending_requests", provider="telegram") == 1  # Bob
    assert value(samples, "pairbot_pending_node_requests") == 0
    assert value(samples, "pairbot_paired_nodes") == 0
    assert value(samples, "pairbot_connected_nodes") == 0
    assert (
        value(
            samples, "pairbot_provider_send_failures_total", platform="telegram", reason="timeout"
        )
        == 0
    )
    labels = {v for (_, pairs) in samples for _, v in pairs}
    for secret in (code, str(ALICE), str(BOB), str(OWNER), "Alice", "Bob", tg.token):
        assert secret not in text
        assert secret not in labels


async def test_metrics_on_a_port_of_their_own_and_a_registry_per_app(
    state_dir: Path, tmp_path: Path, fake_clock: FakeClock
) -> None:
    async with (
        FakeTelegramServer(clock=fake_clock) as one,
        FakeTelegramServer(clock=fake_clock) as two,
    ):
        own = config_on(one, metrics={"enabled": True, "port": 0})
        off = config_on(two)
        async with (
            support.app_running(own, state_dir, fake_clock) as app,
            support.app_running(off, tmp_path / "other", fake_clock) as quiet,
        ):
            assert app.metrics is not None
            assert app.metrics.registry is not prometheus_client.REGISTRY
            one.dm(ALICE, "hello?", first_name="Alice")
            await texts(lambda: one.messages_to(ALICE), 1)
            status, samples, _ = await scrape(f"http://127.0.0.1:{app.metrics.port}/metrics")
            assert status == 200
            assert value(samples, "pairbot_gate_decisions_total", outcome="challenge") == 1
            assert app.gateway is not None
            assert quiet.gateway is not None
            for gateway_port in (app.gateway.port, quiet.gateway.port):  # not on the gateway
                assert (await scrape(f"http://127.0.0.1:{gateway_port}/metrics"))[0] == 404
            assert quiet.metrics is None  # off by default
    assert prometheus_client.generate_latest().count(b"pairbot_") == 0  # the global is untouched


@pytest.fixture(params=["json", "sqlite", "postgres"])
def store_section(request: pytest.FixtureRequest, state_dir: Path) -> dict[str, Any]:
    if request.param == "sqlite":
        return {"backend": "sqlite", "path": str(state_dir / "bot.db")}
    if request.param == "postgres":
        return {"backend": "postgres", "dsn": request.getfixturevalue("pg_dsn")}
    return {"backend": "json"}


async def test_events_arrive_signed_and_include_the_clis_decisions(
    tg: FakeTelegramServer,
    state_dir: Path,
    tmp_path: Path,
    fake_clock: FakeClock,
    store_section: dict[str, Any],
) -> None:
    async with Receiver(fake_clock) as receiver:
        events = {"url": receiver.url, "secret": SECRET}
        config = config_on(tg, events=events, store=store_section)
        cli_config = tmp_path / "pairbot.yaml"
        cli_config.write_text(json.dumps({"state_dir": str(state_dir), "store": store_section}))
        cli_config.chmod(0o600)
        async with support.app_running(config, state_dir, fake_clock) as app:
            assert app.events is not None
            tg.dm(ALICE, "hello?", first_name="Alice")
            tg.dm(BOB, "hello?", first_name="Bob")
            code = code_in((await texts(lambda: tg.messages_to(ALICE), 1))[0])
            await texts(lambda: tg.messages_to(BOB), 1)
            for args in (
                ("pairing", "approve", "telegram", code),  # another process decides
                ("allowlist", "remove", "telegram", str(ALICE)),
            ):
                result = await pairbot_exits("--config", str(cli_config), *args)
                assert result.returncode == 0, result.stderr
            await wait_until(lambda: len(receiver.got) == 4, timeout=10)
            audited = app.store.read_audit()
    got = [(r["event"], r["subject"], r["outcome"]) for r in receiver.got]
    assert [g for g in got if g[1] == str(ALICE)] == [
        ("request", "4242", "created"),
        ("approve", "4242", "approved"),
        ("revoke", "4242", "revoked"),
    ]
    assert ("request", "5151", "created") in got
    sent = [{k: v for k, v in r.items() if k != "_id"} for r in receiver.got]
    assert sorted(map(repr, sent)) == sorted(map(repr, audited))  # the audit lines, exactly
    assert code not in repr(sent)
