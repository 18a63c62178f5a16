"""The gateway under a hostile test: concurrent askers, token guessing, slow and idle sockets.

Issue 9 items 4, 5 and 6, over real sockets with the whole app running.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path

import pytest

from bot.core.clock import FakeClock
from tests.gateway.support import OP_TOKEN, Closed, GwWith, within

pytestmark = pytest.mark.e2e


# --- item 5: the pending caps hold under concurrency -------------------------------------------


async def test_a_hundred_concurrent_askers_never_overshoot_the_pending_caps(
    gw_with: GwWith,
) -> None:
    """The caps used to be checked, then written, in separate steps (17-116 pending)."""
    async with gw_with(gateway={"max_connections_per_address": 200}) as gw:
        peers = await asyncio.gather(*(gw.peer() for _ in range(100)))
        answers = await asyncio.gather(
            *(
                peer.call("node.pair.request", {"nodeId": f"node-{i}"})
                for i, peer in enumerate(peers)
            )
        )
        ok = [a for a in answers if a["ok"]]
        limited = [a for a in answers if not a["ok"]]
        assert len(ok) == 3, "all from 127.0.0.1: at most 3 pending from one address"
        assert {a["error"]["code"] for a in limited} == {"RATE_LIMITED"}
        assert len(gw.app.nodes.pending()) == 3


async def test_the_cap_in_all_holds_under_concurrency_across_addresses(gw_with: GwWith) -> None:
    async with gw_with(
        nodes={"max_pending_per_address": 100, "max_pending": 10},
        gateway={"max_connections_per_address": 200},
    ) as gw:
        peers = await asyncio.gather(*(gw.peer() for _ in range(60)))
        answers = await asyncio.gather(
            *(
                peer.call("node.pair.request", {"nodeId": f"node-{i}"})
                for i, peer in enumerate(peers)
            )
        )
        assert sum(1 for a in answers if a["ok"]) == 10
        assert len(gw.app.nodes.pending()) == 10


# --- item 6: operator token guesses ------------------------------------------------------------


async def test_operator_token_guesses_are_limited_per_address_across_connections(
    gw_with: GwWith, fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Guesses used to run at ~1,000/s across reconnects, each one logged."""
    caplog.set_level(logging.WARNING, logger="bot.gateway.server")
    async with gw_with() as gw:
        codes = []
        for _ in range(20):  # 20 connections, 3 guesses each (a connection closes after 3)
            peer = await gw.peer()
            codes += [
                (await peer.fail("operator.connect", {"token": "guess" * 9}))["code"]
                for _ in range(3)
            ]
            with pytest.raises(Closed):
                await peer.answer()
        assert codes[:5] == ["UNAUTHORIZED"] * 5
        assert set(codes[5:]) == {"RATE_LIMITED"}, "the sixth guess in a minute is not tried"

        honest = await gw.peer()
        refused = await honest.fail("operator.connect", {"token": OP_TOKEN})
        assert refused["code"] == "RATE_LIMITED", "even the right token waits out the window"
        fake_clock.advance(timedelta(minutes=1, seconds=1))
        assert await honest.ok("operator.connect", {"token": OP_TOKEN}) == {"role": "operator"}

    lines = [r.getMessage() for r in caplog.records if "operator" in r.getMessage()]
    assert 1 <= len(lines) <= 2, lines
    assert "guess" not in " ".join(lines)
    assert OP_TOKEN not in caplog.text


# --- item 4: slow, idle and too many connections -----------------------------------------------


async def half_a_request(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
    await writer.drain()
    return reader, writer


async def closed_by_server(reader: asyncio.StreamReader, within_s: float) -> bool:
    try:
        data = await asyncio.wait_for(reader.read(), within_s)
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return data == b"" or data.startswith(b"HTTP/1.1 4")


async def test_a_socket_that_never_finishes_its_request_is_closed(gw_with: GwWith) -> None:
    """Half an HTTP request used to hold a socket open forever."""
    async with gw_with(gateway={"handshake_timeout": "0.3s"}) as gw:
        reader, writer = await half_a_request(gw.port)
        try:
            assert await closed_by_server(reader, 3.0)
        finally:
            writer.close()
        node = await gw.peer()
        await asyncio.sleep(0.5)
        assert (await node.ok("node.pair.request", {"nodeId": "pixel-9"}))[
            "status"
        ] == "pending", "a finished handshake is not timed out"


async def test_connections_over_the_per_address_cap_are_refused_and_logged_once(
    gw_with: GwWith, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.gateway.server")
    async with gw_with(gateway={"max_connections_per_address": 5}) as gw:
        held = [await half_a_request(gw.port) for _ in range(5)]
        extra = [await half_a_request(gw.port) for _ in range(30)]
        for reader, _ in extra:
            assert await closed_by_server(reader, 2.0)
        for reader, _ in held:
            assert not await closed_by_server(reader, 0.05), "admitted ones stay"
        for _, writer in held:
            writer.close()
        assert gw.app.gateway is not None
        await within(2.0, lambda: gw.app.gateway is not None and gw.app.gateway._guard.open == 0)
        peer = await gw.peer()
        assert (await peer.ok("node.pair.request", {"nodeId": "after"}))["status"] == "pending"
        for _, writer in extra:
            writer.close()
    refusals = [r for r in caplog.records if "refused connections" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in refusals]


async def test_the_connection_cap_follows_the_file_limit(
    gw_with: GwWith, monkeypatch: pytest.MonkeyPatch
) -> None:
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda _which: (256, 4096))
    async with gw_with(gateway={"max_connections": 1000}) as gw:
        assert gw.app.gateway is not None
        assert gw.app.gateway.max_connections == 64, "(256 - 128 reserved) / 2"


async def test_idle_connections_are_closed_but_waiting_ones_are_not(gw_with: GwWith) -> None:
    async with gw_with(gateway={"idle_timeout": "0.6s"}) as gw:
        idle = await gw.peer()
        waiting, ask = await gw.ask("pixel-9")
        operator = await gw.operator()
        with pytest.raises(Closed):
            await idle.answer(wait=3.0)
        assert idle.close_code == 4008
        await asyncio.sleep(0.9)
        await operator.ok("node.pair.approve", {"requestId": ask["requestId"]})
        event = await waiting.event("node.pair.resolved")
        # Told a decision, the asker is no longer waiting: it has a whole idle timeout from
        # the decision (not from its last frame) to act on it.
        assert event["payload"]["decision"] == "approved", "a waiting asker is never idle"
        token = event["payload"]["token"]
        await waiting.ok("node.connect", {"nodeId": "pixel-9", "token": token})
        assert await waiting.quiet(1.0) == [], "a connected node is never idle"
        assert not waiting.ws.closed


async def test_an_asker_whose_request_expired_is_idle_again(gw_with: GwWith) -> None:
    async with gw_with(gateway={"idle_timeout": "0.3s"}) as gw:
        waiting, _ = await gw.ask("pixel-9")
        gw.clock.advance(timedelta(minutes=6))
        assert (await waiting.event("node.pair.resolved"))["payload"]["decision"] == "expired"
        with pytest.raises(Closed):
            await waiting.answer(wait=3.0)


async def test_a_state_file_gone_bad_is_one_line_per_burst_not_a_traceback_per_frame(
    gw_with: GwWith, state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with gw_with() as gw:
        (state_dir / "nodes" / "pending.json").write_text('{"version": 1, "requests": [')
        node = await gw.peer()
        for i in range(20):
            error = await node.fail("node.pair.request", {"nodeId": f"n{i}"})
            assert error == {"code": "INTERNAL", "message": "pairing state is unavailable"}
    assert "Traceback" not in caplog.text
    lines = [r for r in caplog.records if "pending.json" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert all(r.exc_info is None for r in caplog.records)
