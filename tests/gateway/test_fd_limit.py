"""Issue 9 item 4: gateway trouble must not take chat messages down with it.

``pairbot run`` runs as a real process under a lowered file limit (256) while hundreds of
sockets hold half an HTTP request open on the gateway. Before, the process ran out of file
descriptors, dropped chat messages for good and wrote thousands of tracebacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from providers.fakebase import free_port
from providers.telegram.fake import FakeTelegramServer
from tests.process import pairbot_running, telegram_config, write_config

pytestmark = pytest.mark.e2e

TOKEN = "987654321:AAH-fd-limit-test-token-not-real0"
FILE_LIMIT = 256
OWNER, ALLOWED, STRANGER = 111, 5555, 4242


def lower_file_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FILE_LIMIT, FILE_LIMIT))


async def slow_sockets(port: int, count: int) -> list[asyncio.StreamWriter]:
    """Open ``count`` connections that each send half a request and then nothing."""
    writers = []
    for _ in range(count):
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1)
        except (OSError, TimeoutError):
            continue
        with contextlib.suppress(OSError):
            writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        writers.append(writer)
    return writers


def sent_to(chat_id: int, needle: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m["chat_id"] == chat_id and needle in m["text"]


async def test_chat_survives_hundreds_of_slow_gateway_sockets_at_a_low_file_limit(
    tmp_path: Path,
) -> None:
    port = free_port()
    async with FakeTelegramServer(token=TOKEN) as fake:
        fake.started_before(OWNER)
        config = telegram_config(
            tmp_path / "state",
            fake.base_url,
            owner=OWNER,
            gateway={"port": port, "handshake_timeout": "2s", "max_connections_per_address": 1000},
            allow_from=[str(ALLOWED)],
        )
        run = ("run", "--config", str(write_config(tmp_path / "pairbot.yaml", config)))
        async with pairbot_running(
            *run, env={"TG_TOKEN": TOKEN}, preexec_fn=lower_file_limit
        ) as proc:
            sockets: list[asyncio.StreamWriter] = []
            try:
                await fake.wait_for_call("getUpdates", timeout=20)
                for burst in range(2):
                    sockets += await slow_sockets(port, 400)
                    fake.dm(ALLOWED, f"hello from the allowed sender {burst}", first_name="Al")
                    fake.dm(STRANGER + burst, "hello from a stranger", first_name="Stan")
                    await fake.wait_for_sent(sent_to(ALLOWED, f"sender {burst}"), timeout=15)
                    await fake.wait_for_sent(
                        sent_to(STRANGER + burst, "Your pairing code:"), timeout=15
                    )
                proc.send_signal(signal.SIGTERM)
                _, stderr_bytes = await asyncio.wait_for(proc.communicate(), timeout=30)
            finally:
                for writer in sockets:
                    writer.close()
    assert proc.returncode == 0
    stderr = stderr_bytes.decode()
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) <= 25, "\n".join(lines)
    repeats = Counter(line.split(": ", 1)[-1] for line in lines)
    assert max(repeats.values()) <= 3, repeats.most_common(3)
    assert any("refused connections" in line for line in lines), "\n".join(lines)
