"""The gateway over real TLS on 127.0.0.1: its own certificate, pinning, and plain text refused
where the network reaches (issue 15, section 1)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
import pytest

from bot.cli.tls import PEM_NAME, TLS_DIR, auto_tls
from bot.core.clock import FakeClock
from bot.core.config import Config
from bot.core.errors import ConfigError
from bot.gateway.client import GatewayClient, GatewayNotTrusted
from bot.gateway.tls import GatewayTls, parse_fingerprint, self_signed
from tests.gateway.support import GwWith, within
from tests.process import node_pair_pixel_9, pairbot_exits, pairbot_running

pytestmark = pytest.mark.e2e

OTHER = "sha256:" + "ab" * 32


async def test_auto_makes_a_private_certificate_once_and_nodes_pinning_it_pair(
    gw_with: GwWith, state_dir: Path
) -> None:
    async with gw_with(gateway={"tls": "auto"}) as gw:
        pem = state_dir / TLS_DIR / PEM_NAME
        assert pem.stat().st_mode & 0o777 == 0o600
        assert pem.parent.stat().st_mode & 0o777 == 0o700
        assert gw.fingerprint == GatewayTls.load(pem, pem).fingerprint
        assert gw.url.startswith("wss://")
        first = gw.fingerprint
        _, ask = await gw.ask("pixel-9")  # over TLS, pinned by the test's peer
        assert ask["status"] == "pending"
        async with GatewayClient.open(gw.url, pin=first) as client:
            assert client.fingerprint == first
            answer = await client.call("node.pair.request", {"nodeId": "esp32"})
            assert answer["status"] == "pending"
    async with gw_with(gateway={"tls": "auto"}) as again:  # restarted: the same certificate
        assert again.fingerprint == first


async def test_a_wrong_pin_is_refused_in_one_line_and_nothing_is_sent(gw_with: GwWith) -> None:
    async with gw_with(gateway={"tls": "auto"}) as gw:
        with pytest.raises(GatewayNotTrusted) as refused:
            async with GatewayClient.open(gw.url, pin=OTHER) as client:
                await client.call("node.pair.request", {"nodeId": "pixel-9"})
        message = str(refused.value)
        assert "\n" not in message
        assert gw.fingerprint in message
        assert OTHER in message
        assert gw.app.nodes.pending() == []


async def test_without_a_pin_a_self_signed_gateway_is_refused(gw_with: GwWith) -> None:
    async with gw_with(gateway={"tls": "auto"}) as gw:
        with pytest.raises(GatewayNotTrusted, match="--fingerprint"):
            async with GatewayClient.open(gw.url):
                pass
        assert gw.app.nodes.pending() == []


async def test_plain_websocket_to_the_tls_port_gets_nothing(gw_with: GwWith) -> None:
    async with gw_with(gateway={"tls": "auto"}) as gw:
        with pytest.raises(aiohttp.ClientError):
            await gw.session.ws_connect(f"ws://127.0.0.1:{gw.port}/")
        assert gw.app.nodes.pending() == []


async def test_configured_certificate_files(
    gw_with: GwWith, tmp_path: Path, fake_clock: FakeClock
) -> None:
    cert, key = self_signed(now=fake_clock.now())
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(key)
    tls = {"cert_file": str(tmp_path / "c.pem"), "key_file": str(tmp_path / "k.pem")}
    async with gw_with(gateway={"tls": tls}) as gw:
        expected = GatewayTls.load(tmp_path / "c.pem", tmp_path / "k.pem").fingerprint
        assert gw.fingerprint == expected
        _, ask = await gw.ask("pixel-9")
        assert ask["status"] == "pending"


def test_a_key_that_does_not_go_with_the_certificate_is_one_line(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    cert, _ = self_signed(now=fake_clock.now())
    _, other_key = self_signed(now=fake_clock.now())
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(other_key)
    with pytest.raises(ConfigError) as bad:
        GatewayTls.load(tmp_path / "c.pem", tmp_path / "k.pem")
    assert "gateway.tls" in str(bad.value)
    assert "\n" not in str(bad.value)
    assert "PRIVATE" not in str(bad.value)


def test_two_processes_making_the_automatic_certificate_end_with_one(
    state_dir: Path, fake_clock: FakeClock
) -> None:
    first = auto_tls(state_dir, host="127.0.0.1", clock=fake_clock)
    second = auto_tls(state_dir, host="127.0.0.1", clock=fake_clock)
    assert first == second


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "pairbot.lan"])
def test_plaintext_on_an_address_the_network_reaches_is_refused(host: str) -> None:
    with pytest.raises(ValueError, match=r"reaches the network.*gateway\.tls") as refused:
        Config.model_validate({"gateway": {"host": host}})
    assert "allow_plaintext" in str(refused.value)
    Config.model_validate({"gateway": {"host": host, "tls": "auto"}})
    Config.model_validate({"gateway": {"host": host, "allow_plaintext": True}})
    Config.model_validate({"gateway": {"host": host, "enabled": False}})


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_loopback_needs_no_tls(host: str) -> None:
    assert not Config.model_validate({"gateway": {"host": host}}).gateway.plaintext_on_network


async def test_plaintext_allowed_on_the_network_is_warned_about_at_start(
    gw_with: GwWith, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="bot.runtime.app"):
        async with gw_with(gateway={"host": "0.0.0.0", "allow_plaintext": True}):
            pass
    assert any("without TLS" in r.getMessage() for r in caplog.records)


def test_fingerprints_are_read_in_either_form() -> None:
    hexed = "ab" * 32
    colons = ":".join(["AB"] * 32)
    assert parse_fingerprint(f"sha256:{hexed}") == f"sha256:{hexed}"
    assert parse_fingerprint(colons) == f"sha256:{hexed}"
    with pytest.raises(ValueError, match="64 hex digits"):
        parse_fingerprint("sha256:abc")


async def test_cli_prints_the_fingerprint_and_a_node_pins_it(
    gw_with: GwWith, state_dir: Path, tmp_path: Path
) -> None:
    async with gw_with(gateway={"tls": "auto"}) as gw:
        config = tmp_path / "pairbot.yaml"
        config.write_text("gateway: {tls: auto}\n")
        config.chmod(0o600)
        printed = await pairbot_exits(
            "gateway", "fingerprint", "--config", str(config), "--state-dir", str(state_dir)
        )
        assert printed.returncode == 0, printed.stderr
        assert printed.stdout.strip() == gw.fingerprint

        node_dir = tmp_path / "node"
        wrong = await pairbot_exits(*node_pair_pixel_9(gw.url, node_dir, "--fingerprint", OTHER))
        assert wrong.returncode == 2
        assert wrong.stderr.count("\n") == 1
        assert "not the pinned" in wrong.stderr
        assert gw.app.nodes.pending() == []

        pin = printed.stdout.strip()
        args = node_pair_pixel_9(gw.url, node_dir, "--fingerprint", pin, "--wait", "20")
        async with pairbot_running(*args) as proc:
            await within(20, lambda: bool(gw.app.nodes.pending()))
            request_id = gw.app.nodes.pending()[0].request_id
            await gw.approve(request_id, gw.app.nodes.pending()[0].node_id)
            _, stderr = await asyncio.wait_for(proc.communicate(), timeout=20)
        assert proc.returncode == 0, stderr.decode()
        # the pin was kept with the keyring: connect needs no --fingerprint
        connected = await pairbot_exits(
            "node", "connect", "--gateway", gw.url, "--node-dir", str(node_dir)
        )
        assert connected.returncode == 0, connected.stderr


async def test_cli_fingerprint_without_tls_says_so(tmp_path: Path) -> None:
    config = tmp_path / "pairbot.yaml"
    config.write_text("gateway: {port: 0}\n")
    config.chmod(0o600)
    printed = await pairbot_exits("gateway", "fingerprint", "--config", str(config))
    assert printed.returncode == 2
    assert "gateway.tls" in printed.stderr
    assert printed.stderr.count("\n") == 1


async def test_status_reads_readyz_over_tls_from_the_gateways_own_certificate(
    gw_with: GwWith, state_dir: Path, tmp_path: Path
) -> None:
    async with gw_with(gateway={"tls": "auto"}) as gw:
        config = tmp_path / "pairbot.yaml"
        config.write_text(f"state_dir: {state_dir}\ngateway: {{tls: auto, port: {gw.port}}}\n")
        config.chmod(0o600)
        done = await pairbot_exits("status", "--json", "--config", str(config))
        assert done.returncode == 0, done.stdout + done.stderr
        assert '"ready": true' in done.stdout


async def test_half_open_tls_handshakes_count_toward_the_caps_and_the_deadline(
    gw_with: GwWith,
) -> None:
    gateway = {
        "tls": "auto",
        "max_connections_per_address": 2,
        "handshake_timeout": "0.5s",
    }
    async with gw_with(gateway=gateway) as gw:
        opened = [await asyncio.open_connection("127.0.0.1", gw.port) for _ in range(3)]
        # the third is over the per-address cap before any TLS byte: closed at once
        assert await asyncio.wait_for(opened[2][0].read(), 2) == b""
        # the two admitted never start their handshake: closed at the deadline
        for reader, _ in opened[:2]:
            assert await asyncio.wait_for(reader.read(), 3) == b""
        for _, writer in opened:
            writer.close()
        # and a real node still gets in afterwards
        _, ask = await gw.ask("pixel-9")
        assert ask["status"] == "pending"


async def test_pairbot_run_refuses_plaintext_on_a_network_address_in_one_line(
    tmp_path: Path,
) -> None:
    config = tmp_path / "pairbot.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        "gateway: {host: 0.0.0.0, port: 0}\n"
        "providers: {telegram: {token: '123:abc'}}\n"
    )
    config.chmod(0o600)
    done = await pairbot_exits("run", "--config", str(config))
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("pairbot: error:")]
    assert len(errors) == 1, done.stderr
    assert "gateway: host 0.0.0.0 reaches the network" in errors[0]
    assert "allow_plaintext" in errors[0]
    assert not (tmp_path / "state").exists(), "refused before anything started"
