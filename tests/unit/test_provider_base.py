"""The provider base (providers/base.py, limits.py, retry.py, webhook.py) on a loopback platform.

The splitters are checked against the three the providers had before the base (kept here,
verbatim, as the reference), so moving a platform onto :class:`TextSplit` changes no cut.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import ClassVar

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from bot.core.errors import (
    ButtonError,
    ConfigError,
    PairbotError,
    ProviderError,
    ProviderStateError,
    RecipientUnreachable,
)
from bot.core.models import Button, Inbound, SendFailure
from providers.base import BaseProvider, Dedupe, State, send_failure
from providers.limits import ButtonLimits, TextSplit, clip
from providers.retry import Backoff, Retry, RetryPolicy, retrying
from providers.webhook import WebhookProvider, WebhookServer
from tests.helpers import Inbox, dm

# -- the splitters as they were (reference) ------------------------------------------------------


def discord_split_before(content: str, limit: int) -> list[str]:
    chunks: list[str] = []
    while len(content) > limit:
        cut = content.rfind("\n", 0, limit)
        if cut <= 0:
            cut = limit
            run = len(content[:cut]) - len(content[:cut].rstrip("\\"))
            cut -= run % 2
        chunks.append(content[:cut])
        content = content[cut:].lstrip("\n")
    chunks.append(content)
    return chunks


def whatsapp_chunks_before(text: str, limit: int) -> list[str]:
    chunks = []
    while len(text) > limit:
        cut = text.rfind("\n", limit // 2, limit)
        cut = cut + 1 if cut > 0 else limit
        chunks.append(text[:cut])
        text = text[cut:]
    chunks.append(text)
    return chunks


def slack_chunks_before(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


TEXTS = st.text(alphabet="ab \n\\", max_size=80)
LIMITS = st.integers(min_value=2, max_value=17)


@given(TEXTS, LIMITS)
def test_the_discord_rule_cuts_as_discord_did(text: str, limit: int) -> None:
    rule = TextSplit(limit=limit, lines_from=0.0, keep_breaks=False, escape="\\")
    assert rule.split(text) == discord_split_before(text, limit)


@given(TEXTS, LIMITS)
def test_the_whatsapp_rule_cuts_as_whatsapp_did(text: str, limit: int) -> None:
    rule = TextSplit(limit=limit, lines_from=0.5, keep_breaks=True)
    assert rule.split(text) == whatsapp_chunks_before(text, limit)


@given(TEXTS.filter(bool), LIMITS)
def test_the_slack_section_rule_cuts_as_slack_did(text: str, limit: int) -> None:
    rule = TextSplit(limit=limit, lines_from=None, keep_breaks=True)
    assert rule.split(text) == slack_chunks_before(text, limit)


def test_split_keeps_a_short_text_whole_and_never_cuts_an_escape() -> None:
    assert TextSplit(limit=10).split("short") == ["short"]
    assert TextSplit(limit=10).split("") == [""]
    assert TextSplit(limit=3, lines_from=None, escape="\\").split("ab\\*c") == ["ab", "\\*c"]


def test_clip_cuts_with_an_ellipsis_and_strips_if_asked() -> None:
    assert clip("Approve this request", 20) == "Approve this request"
    assert clip("Approve this request now", 20) == "Approve this reques…"
    assert clip("Approve this   request", 16) == "Approve this   …"
    assert clip("Approve this   request", 16, strip=True) == "Approve this…"


# -- button limits --------------------------------------------------------------------------------

APPROVE = Button(label="Approve", command="/approve ABCD2345")


@pytest.mark.parametrize(
    ("limits", "buttons", "message"),
    [
        (
            ButtonLimits(command=64, command_in_bytes=True),
            [Button(label="long", command="é" * 32 + "a")],
            "button 'long': command is 65 bytes, Telegram allows 1 to 64",
        ),
        (
            ButtonLimits(command=247),
            [Button(label="empty", command="")],
            "button 'empty': command is 0 characters, Telegram allows 1 to 247",
        ),
        (
            ButtonLimits(command=64, distinct=True),
            [APPROVE, Button(label="again", command=APPROVE.command)],
            "button 'again': two buttons carry the same command",
        ),
        (
            ButtonLimits(command=64, count=3, count_noun="reply buttons"),
            [APPROVE] * 4,
            "Telegram allows 3 reply buttons, got 4",
        ),
        (
            ButtonLimits(command=64, label=80),
            [Button(label="", command="/help")],
            "button label must be 1 to 80 characters",
        ),
    ],
)
def test_button_limits_refuse_with_a_message_naming_the_limit(
    limits: ButtonLimits, buttons: list[Button], message: str
) -> None:
    with pytest.raises(ButtonError) as raised:
        limits.check("Telegram", buttons)

    assert str(raised.value) == message
    assert isinstance(raised.value, ValueError)
    assert isinstance(raised.value, PairbotError)


def test_button_limits_accept_what_fits() -> None:
    ButtonLimits(command=64, count=2, distinct=True, label=10).check("X", [APPROVE])


# -- dedupe and backoff ---------------------------------------------------------------------------


def test_dedupe_remembers_every_key_forgets_the_oldest_and_skips_empty_ones() -> None:
    seen = Dedupe(3)

    assert seen.first_time("a", "b")
    assert not seen.first_time("b")  # one known key is enough
    assert not seen.first_time("x", "a")
    assert seen.first_time("", None)  # no id: cannot be recognised
    assert seen.first_time("c", "d")  # "a" is forgotten now
    assert len(seen) == 3
    assert seen.first_time("a")


def test_backoff_doubles_to_its_ceiling_and_resets() -> None:
    backoff = Backoff(0.5, 3.0)
    assert [backoff.grow() for _ in range(4)] == [1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.delay == 0.5


# -- retry ---------------------------------------------------------------------------------------

QUICK = RetryPolicy(attempts=3, first_delay=0.001, max_delay=0.002)
LOG = logging.getLogger("tests.retry")


def failing(
    times: int, *, after: float | None = None, error: BaseException | None = None
) -> tuple[list[int], Callable[[], Awaitable[str]]]:
    """An attempt that raises Retry ``times`` times, then returns "done"; and its calls."""
    calls: list[int] = []

    async def attempt() -> str:
        calls.append(len(calls))
        if len(calls) <= times:
            raise Retry("busy", after=after, error=error)
        return "done"

    return calls, attempt


async def test_retrying_tries_again_until_it_works() -> None:
    calls, attempt = failing(2)

    done = await retrying(attempt, policy=QUICK, what="x: send", log=LOG, stopping=asyncio.Event())

    assert (done, len(calls)) == ("done", 3)


async def test_retrying_honours_retry_after(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tests.retry")
    _, attempt = failing(1, after=0.2)

    await retrying(attempt, policy=QUICK, what="x: send", log=LOG, stopping=asyncio.Event())

    assert caplog.messages == ["x: send failed (busy), retrying in 0.2 s (retry 1)"]


async def test_retrying_gives_up_with_the_sdks_error_the_callbacks_or_a_provider_error() -> None:
    sdk_error = ConnectionError("daemon unreachable")
    _, attempt = failing(9, error=sdk_error)
    with pytest.raises(ConnectionError) as raised:
        await retrying(attempt, policy=QUICK, what="x", log=LOG, stopping=asyncio.Event())
    assert raised.value is sdk_error

    calls, attempt = failing(9)
    with pytest.raises(LookupError, match="busy after 3"):
        await retrying(
            attempt,
            policy=QUICK,
            what="x",
            log=LOG,
            stopping=asyncio.Event(),
            give_up=lambda failure, tries: LookupError(f"{failure.reason} after {tries}"),
        )
    assert len(calls) == 3

    _, attempt = failing(9)
    with pytest.raises(ProviderError, match=r"^x: send failed 3 times \(busy\)$"):
        await retrying(attempt, policy=QUICK, what="x: send", log=LOG, stopping=asyncio.Event())


async def test_retrying_stops_at_its_deadline() -> None:
    calls, attempt = failing(10_000)
    policy = RetryPolicy(attempts=None, first_delay=0.01, max_delay=0.01, give_up_after=0.05)

    with pytest.raises(ProviderError):
        await retrying(attempt, policy=policy, what="x", log=LOG, stopping=asyncio.Event())

    assert 2 <= len(calls) <= 7


async def test_a_proof_ends_the_pause_and_nothing_is_tried_again() -> None:
    calls, attempt = failing(1)
    proof: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(0.01, proof.set_result, "went out")
    slow = RetryPolicy(attempts=3, first_delay=30.0)

    done = await asyncio.wait_for(
        retrying(attempt, policy=slow, what="x", log=LOG, stopping=asyncio.Event(), proof=proof),
        5.0,
    )

    assert (done, len(calls)) == ("went out", 1)


async def test_stopping_ends_the_pause_and_gives_up() -> None:
    calls, attempt = failing(1)
    stopping = asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, stopping.set)
    slow = RetryPolicy(attempts=3, first_delay=30.0)

    with pytest.raises(ProviderError):
        await asyncio.wait_for(
            retrying(attempt, policy=slow, what="x", log=LOG, stopping=stopping),
            5.0,
        )

    assert len(calls) == 1


# -- the base, on a loopback platform -------------------------------------------------------------


class Loopback(BaseProvider):
    """A platform in memory: ``arrive`` is an event coming in, ``sent`` what went out."""

    platform = "Loopback"
    button_limits: ClassVar[ButtonLimits | None] = ButtonLimits(command=20, count=2)
    text_split = TextSplit(limit=10, lines_from=0.0)

    def __init__(
        self,
        *,
        fail_connect: bool = False,
        slow_connect: bool = False,
        dedupe_size: int | None = None,
        drain_timeout: float | None = None,
    ) -> None:
        super().__init__(name="loop", dedupe_size=dedupe_size, drain_timeout=drain_timeout)
        self.fail_connect = fail_connect
        self.slow_connect = slow_connect
        self.session: list[tuple[str, str, tuple[str, ...]]] | None = None
        self.calls: list[str] = []
        self.sent: list[tuple[str, str, tuple[str, ...]]] = []

    async def _connect(self) -> None:
        self.calls.append("connect")
        self.session = self.sent
        if self.slow_connect:
            await asyncio.sleep(0.02)
        if self.fail_connect:
            raise ConnectionRefusedError("no platform")

    async def _stop_receiving(self) -> None:
        self.calls.append("stop_receiving")

    async def _disconnect(self) -> None:
        self.calls.append("disconnect")
        self.session = None

    async def _send_text(self, chat_id: str, text: str, buttons: Sequence[Button]) -> str:
        session = self._need(self.session)
        session.append((chat_id, text, tuple(b.command for b in buttons)))
        return str(len(session))

    def arrive(self, text: str, *, key: str | None = None) -> bool:
        if key is not None and not self._first_time(key):
            return False
        return self._enqueue(inbound(text))


def inbound(text: str) -> Inbound:
    return dm(text, provider="loop", sender="u1", chat="c1", message_id=f"m-{text}")


async def test_lifecycle_is_one_state_stop_is_idempotent_and_start_works_again() -> None:
    provider = Loopback()
    await provider.stop()  # before start: nothing to do
    await provider.start(Inbox())
    assert (provider.state, provider.running) == (State.RUNNING, True)
    with pytest.raises(ProviderStateError, match="loop: provider is already running"):
        await provider.start(Inbox())

    await asyncio.gather(provider.stop(), provider.stop())
    await provider.stop()
    assert (provider.state, provider.running) == (State.STOPPED, False)
    assert provider.calls == ["connect", "stop_receiving", "disconnect"]
    with pytest.raises(ProviderStateError, match="not running"):
        await provider.send("c1", "x")

    inbox = Inbox()
    await provider.start(inbox)
    provider.arrive("again")
    assert [i.text for i in await inbox.wait()] == ["again"]
    await provider.stop()


async def test_a_stop_during_a_start_waits_for_it_and_then_stops() -> None:
    provider = Loopback(slow_connect=True)
    starting = asyncio.create_task(provider.start(Inbox()))
    await asyncio.sleep(0)
    during = provider.state
    assert during is State.STARTING

    await provider.stop()

    await starting
    assert provider.state is State.STOPPED
    assert provider.calls == ["connect", "stop_receiving", "disconnect"]


async def test_a_failed_start_tears_down_and_leaves_it_stopped() -> None:
    provider = Loopback(fail_connect=True)

    with pytest.raises(ConnectionRefusedError):
        await provider.start(Inbox())

    assert provider.state is State.STOPPED
    assert provider.calls == ["connect", "stop_receiving", "disconnect"]
    assert not provider.arrive("too late")


async def test_items_are_handled_in_order_and_a_failing_callback_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handled: list[str] = []

    async def callback(item: Inbound) -> None:
        handled.append(item.text)
        if item.text == "boom":
            raise RuntimeError("callback blew up")

    provider = Loopback()
    await provider.start(callback)

    async def converted() -> Inbound | None:
        await asyncio.sleep(0.01)  # a conversion that calls the platform
        return inbound("converted")

    async def nothing() -> Inbound | None:
        return None

    provider.arrive("one")
    provider._enqueue(converted)
    provider._enqueue(nothing)
    provider.arrive("boom")
    provider.arrive("two")
    await provider.stop()

    assert handled == ["one", "converted", "boom", "two"]
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.name == __name__  # the platform module's logger
    assert record.getMessage() == "loop: handling message m-boom from u1 failed"


async def test_dedupe_drops_a_redelivery_across_a_restart() -> None:
    inbox = Inbox()
    provider = Loopback()
    await provider.start(inbox)
    assert provider.arrive("first", key="k1")
    assert not provider.arrive("first again", key="k1")
    await provider.stop()
    await provider.start(inbox)
    assert not provider.arrive("after a restart", key="k1")
    await provider.stop()

    assert inbox.texts == ["first"]


async def test_an_instance_may_remember_fewer_keys() -> None:
    provider = Loopback(dedupe_size=1)
    await provider.start(Inbox())
    try:
        assert provider.arrive("a", key="k1")
        assert provider.arrive("b", key="k2")
        assert provider.arrive("a again", key="k1")  # forgotten: only one key is kept
    finally:
        await provider.stop()


async def test_stop_drains_within_its_bound_then_drops_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()
    handled: list[str] = []

    async def stuck(item: Inbound) -> None:
        handled.append(item.text)
        await release.wait()

    provider = Loopback(drain_timeout=0.05)
    await provider.start(stuck)
    provider.arrive("stuck")
    provider.arrive("never")

    await asyncio.wait_for(provider.stop(), 5.0)

    assert handled == ["stuck"]
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning == (
        "loop: stopped with 1 accepted message(s) not handled after 0 s; "
        "the one in hand was cancelled"
    )
    assert not provider.arrive("after stop")


async def test_send_checks_buttons_splits_and_puts_buttons_under_the_last_part() -> None:
    provider = Loopback()
    await provider.start(Inbox())
    try:
        with pytest.raises(ButtonError, match="Loopback allows 2 buttons, got 3"):
            await provider.send("c1", "x", buttons=[APPROVE] * 3)
        assert provider.sent == []

        last = await provider.send("c1", "first line\nsecond", buttons=[APPROVE])
        await provider.edit("c1", last, "edited")
    finally:
        await provider.stop()

    assert provider.sent == [
        ("c1", "first line", ()),
        ("c1", "second", (APPROVE.command,)),
        ("c1", "edited", ()),
    ]
    assert last == "2"
    assert await provider.dm_chat_id("u1") == "u1"


async def test_failed_sends_are_counted_by_a_few_fixed_words() -> None:
    class Refusing(Loopback):
        failure: BaseException = RecipientUnreachable("closed")

        async def _send_text(self, chat_id: str, text: str, buttons: Sequence[Button]) -> str:
            self._need(self.session)  # not running: ProviderStateError
            raise self.failure

    provider = Refusing()
    with pytest.raises(ProviderStateError):
        await provider.send("c1", "not started")
    await provider.start(Inbox())
    try:
        with pytest.raises(ButtonError):
            await provider.send("c1", "x", buttons=[APPROVE] * 3)
        for failure in (RecipientUnreachable("closed"), TimeoutError(), ProviderError("no")):
            provider.failure = failure
            with pytest.raises(type(failure)):
                await provider.send("c1", "hello")
    finally:
        await provider.stop()
    assert dict(provider.send_failures) == {
        SendFailure.NOT_RUNNING: 1,
        SendFailure.BUTTONS: 1,
        SendFailure.UNREACHABLE: 1,
        SendFailure.TIMEOUT: 1,
        SendFailure.REFUSED: 1,
    }


@pytest.mark.parametrize(
    ("name", "bases", "expected"),
    [
        ("TimedOut", (Exception,), SendFailure.TIMEOUT),  # python-telegram-bot
        ("RetryAfter", (Exception,), SendFailure.RATE_LIMITED),
        ("RateLimited", (Exception,), SendFailure.RATE_LIMITED),  # discord.py
        ("Forbidden", (Exception,), SendFailure.FORBIDDEN),
        ("NetworkError", (Exception,), SendFailure.NETWORK),
        ("ClientConnectorError", (Exception,), SendFailure.NETWORK),  # aiohttp
        ("SlackApiError", (Exception,), SendFailure.REFUSED),
        ("HTTPException", (Exception,), SendFailure.REFUSED),
        ("Weird", (Exception,), SendFailure.OTHER),
        ("Reset", (ConnectionResetError,), SendFailure.NETWORK),
    ],
)
def test_an_sdks_error_is_named_by_the_words_in_its_class_names(
    name: str, bases: tuple[type[BaseException], ...], expected: SendFailure
) -> None:
    assert send_failure(type(name, bases, {})()) is expected


async def test_a_platform_without_buttons_drops_them() -> None:
    class NoButtons(Loopback):
        button_limits = None

    provider = NoButtons()
    await provider.start(Inbox())
    try:
        await provider.send("c1", "/approve ABCD2345", buttons=[APPROVE] * 5)
    finally:
        await provider.stop()

    assert provider.sent == [("c1", "/approve A", ()), ("c1", "BCD2345", ())]


async def test_a_send_retrying_when_the_provider_stops_gives_up() -> None:
    provider = Loopback()
    provider.send_retry = RetryPolicy(attempts=5, first_delay=30.0)
    await provider.start(Inbox())
    tries: list[int] = []

    async def attempt() -> str:
        tries.append(1)
        raise Retry("down")

    sending = asyncio.create_task(provider._retrying(attempt, what="send"))
    await asyncio.sleep(0.01)
    await provider.stop()

    with pytest.raises(ProviderError, match=r"^loop: send failed 1 times \(down\)$"):
        await asyncio.wait_for(sending, 5.0)
    assert tries == [1]


# -- webhook -------------------------------------------------------------------------------------


async def test_webhook_server_binds_a_free_port_serves_and_rebinds_it() -> None:
    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="hi")

    def app() -> web.Application:
        made = web.Application()
        made.router.add_post("/hook", hello)
        return made

    server = WebhookServer(host="127.0.0.1", port=0, path="/hook")
    await server.start(app())
    port = server.port
    serving = server.serving
    assert port != 0
    assert serving
    async with aiohttp.ClientSession() as session, session.post(server.url) as response:
        assert (response.status, await response.text()) == (200, "hi")
    await server.stop()
    await server.stop()
    assert not server.serving

    await server.start(app())
    assert server.port == port
    await server.stop()


class Hooked(WebhookProvider):
    """A platform that calls in on a webhook: a POST's body arrives as a message's text."""

    platform = "Hooked"
    max_body = 64

    def __init__(self, *, path: str = "/hook") -> None:
        webhook = WebhookServer(host="127.0.0.1", port=0, path=path)
        super().__init__(name="hooked", webhook=webhook)

    async def _connect(self) -> None:
        await self._serve(self._post, get=self._get)

    async def _disconnect(self) -> None:
        pass

    async def _send_text(self, chat_id: str, text: str, buttons: Sequence[Button]) -> str:
        raise AssertionError("nothing is sent here")

    async def _post(self, request: web.Request) -> web.Response:
        self._enqueue(inbound((await request.read()).decode()))
        return web.Response(text="queued")

    async def _get(self, _request: web.Request) -> web.Response:
        return web.Response(text="checked")


async def test_a_webhook_provider_serves_its_path_with_a_body_limit_and_rebinds_its_port() -> None:
    inbox = Inbox()
    provider = Hooked()
    await provider.start(inbox)
    port = provider.webhook_port
    url = provider.webhook_url
    assert port != 0
    assert (url, provider.webhook_path) == (f"http://127.0.0.1:{port}/hook", "/hook")
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=b"hello") as response:
            assert (response.status, await response.text()) == (200, "queued")
        async with session.post(url, data=b"x" * 65) as response:
            assert response.status == 413
        async with session.get(url) as response:
            assert (response.status, await response.text()) == (200, "checked")
        async with session.post(url + "/other", data=b"x") as response:
            assert response.status == 404
        assert inbox.texts == ["hello"]

        await provider.stop()
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.post(url, data=b"after stop")

    await provider.start(inbox)
    assert provider.webhook_port == port
    await provider.stop()


def test_a_webhook_path_must_start_with_a_slash() -> None:
    with pytest.raises(ConfigError) as raised:
        Hooked(path="hook")

    assert (raised.value.source, raised.value.field) == ("providers.hooked", "webhook.path")


def test_free_port_never_gives_one_port_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel may offer the port a probe just closed again: two servers of one test were
    once handed one port (an instance then failed to bind its gateway)."""
    import providers.fakebase as fakebase

    offered = iter([50001, 50001, 50001, 50002])

    class Probe:
        def __enter__(self) -> Probe:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def bind(self, address: tuple[str, int]) -> None:
            self.port = next(offered)

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(fakebase, "_GIVEN", set())
    monkeypatch.setattr("providers.fakebase.socket.socket", lambda *args: Probe())
    assert [fakebase.free_port(), fakebase.free_port()] == [50001, 50002]
