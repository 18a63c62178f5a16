"""Handlers (bot/handlers.py): echo, forward, a webhook against a real loopback server, python."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web

from bot.core.config import HandlerConfig
from bot.core.errors import ConfigError
from bot.core.models import Inbound
from bot.runtime.handlers import (
    EchoHandler,
    ForwardHandler,
    PythonHandler,
    WebhookHandler,
    build_handler,
)
from tests.helpers import dm

SAMPLES = "tests.unit.sample_handlers"
SECRET_TEXT = "my secret message 12345"


def message(text: str = "hello bot", *, name: str = "Alice") -> Inbound:
    return dm(text, sender="4242", name=name, message_id="9")


class Recorder:
    """An async ``to_owners`` that remembers what it was given."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def __call__(self, text: str) -> None:
        self.sent.append(text)


async def no_owners(text: str) -> None:
    raise AssertionError("not expected to reach the owners")


# --- echo and forward ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["hello", "", "  spaced  ", "line1\nline2", "😀 ünïcode"],
    ids=["plain", "empty", "spaces", "newline", "unicode"],
)
async def test_echo_returns_exactly_the_text(text: str) -> None:
    handler = EchoHandler()
    assert await handler(message(text)) == text
    await handler.aclose()


@pytest.mark.parametrize(
    ("name", "want"),
    [
        ("Alice", "From telegram 4242 (Alice):\nhello bot"),
        ("", "From telegram 4242:\nhello bot"),
        ("Eve\n/approve ABCD2345\u202e", "From telegram 4242 (Eve /approve ABCD2345):\nhello bot"),
        ("\u3164\u2800", "From telegram 4242 ([blank name]):\nhello bot"),
    ],
    ids=["named", "no-name", "hostile-name-cleaned", "blank-looking-name"],
)
async def test_forward_tells_the_owners_who_sent_it(name: str, want: str) -> None:
    owners = Recorder()
    handler = ForwardHandler(owners)
    assert await handler(message(name=name)) is None
    assert owners.sent == [want]


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("", "From telegram 4242 (Alice):\n[a photo, file or sticker]"),
        ("look", "From telegram 4242 (Alice):\n[a photo, file or sticker] look"),
    ],
    ids=["no-caption", "caption"],
)
async def test_forward_says_what_a_textless_message_carried(text: str, want: str) -> None:
    owners = Recorder()
    assert await ForwardHandler(owners)(replace(message(), text=text, media=True)) is None
    assert owners.sent == [want]


async def test_echo_has_nothing_to_say_to_a_photo() -> None:
    assert not await EchoHandler()(replace(message(), text="", media=True))


# --- webhook against a real aiohttp server ----------------------------------------------------


@dataclass
class Hook:
    """A loopback webhook server; ``received`` holds each JSON body posted to it."""

    base: str
    received: list[dict[str, Any]] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str) -> str:
        return f"{self.base}/{path}"


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    state = Hook(base="")

    def replying(
        respond: Callable[[], web.Response],
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            state.received.append(await request.json())
            state.content_types.append(request.content_type)
            return respond()

        return handle

    async def slow(request: web.Request) -> web.Response:
        state.received.append(await request.json())
        await state.release.wait()
        return web.json_response({"text": "too late"})

    app = web.Application()
    routes = {
        "text": lambda: web.json_response({"text": "hi from the hook"}),
        "reply": lambda: web.json_response({"reply": "hi via reply"}),
        "both": lambda: web.json_response({"text": "text wins", "reply": "reply loses"}),
        "null-text": lambda: web.json_response({"text": None, "reply": "fallback"}),
        "empty-text": lambda: web.json_response({"text": "", "reply": "fallback"}),
        "number-text": lambda: web.json_response({"text": 5}),
        "no-key": lambda: web.json_response({"other": "x"}),
        "json-string": lambda: web.json_response("just a string"),
        "json-list": lambda: web.json_response(["a", "b"]),
        "bad-json": lambda: web.Response(body=b"{not json", content_type="application/json"),
        "plain": lambda: web.Response(text="plain reply"),
        "html": lambda: web.Response(text="<p>hi</p>", content_type="text/html"),
        "empty": lambda: web.Response(body=b""),
        "blank": lambda: web.Response(text="  \n "),
        "no-content": lambda: web.Response(status=204),
        "error": lambda: web.Response(status=500, text="internal error"),
        "not-found": lambda: web.Response(status=404, text="nope"),
        "redirect": lambda: web.Response(status=302, headers={"Location": "/text"}),
    }
    for path, respond in routes.items():
        app.router.add_post(f"/{path}", replying(respond))
    app.router.add_post("/slow", slow)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    state.base = f"http://{host}:{port}"
    yield state
    state.release.set()
    await runner.cleanup()


@pytest.fixture
async def webhook_for(hook: Hook) -> AsyncIterator[Callable[..., WebhookHandler]]:
    made: list[WebhookHandler] = []

    def build(path: str, timeout: float = 2.0) -> WebhookHandler:
        handler = WebhookHandler(hook.url(path), timeout=timedelta(seconds=timeout))
        made.append(handler)
        return handler

    yield build
    for handler in made:
        await handler.aclose()


async def test_webhook_posts_exactly_the_documented_fields(
    hook: Hook, webhook_for: Callable[..., WebhookHandler]
) -> None:
    msg = dm(
        "hello\nthere",
        sender="4242",
        chat="-100",
        name="Alice ✨",
        message_id="9",
        meta={"username": "alice"},
    )
    assert await webhook_for("text")(msg) == "hi from the hook"
    assert hook.received == [
        {
            "provider": "telegram",
            "sender_id": "4242",
            "sender_name": "Alice ✨",
            "chat_id": "-100",
            "text": "hello\nthere",
        }
    ]
    assert hook.content_types == ["application/json"]


@pytest.mark.parametrize(
    ("path", "want"),
    [
        ("text", "hi from the hook"),
        ("reply", "hi via reply"),
        ("both", "text wins"),
        ("null-text", "fallback"),
        ("empty-text", "fallback"),
        ("number-text", None),
        ("no-key", None),
        ("json-string", "just a string"),
        ("json-list", None),
        ("bad-json", None),
        ("plain", "plain reply"),
        ("html", "<p>hi</p>"),
        ("empty", None),
        ("blank", None),
        ("no-content", None),
        ("error", None),
        ("not-found", None),
        ("redirect", None),
    ],
    ids=lambda v: str(v),
)
async def test_webhook_reply(
    hook: Hook, webhook_for: Callable[..., WebhookHandler], path: str, want: str | None
) -> None:
    assert await webhook_for(path)(message()) == want
    assert len(hook.received) == 1


async def test_webhook_500_is_logged_without_the_message(
    webhook_for: Callable[..., WebhookHandler], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.runtime.handlers")
    assert await webhook_for("error")(message(SECRET_TEXT)) is None
    assert [r.getMessage() for r in caplog.records if r.name == "bot.runtime.handlers"] == [
        "webhook handler failed: HTTPStatusError"
    ]
    assert SECRET_TEXT not in caplog.text


async def test_webhook_slower_than_the_timeout_gives_none(
    hook: Hook, webhook_for: Callable[..., WebhookHandler], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.runtime.handlers")
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await webhook_for("slow", timeout=0.2)(message(SECRET_TEXT)) is None
    assert loop.time() - started < 1.5
    assert len(hook.received) == 1
    assert [r.getMessage() for r in caplog.records if r.name == "bot.runtime.handlers"] == [
        "webhook handler failed: ReadTimeout"
    ]
    assert SECRET_TEXT not in caplog.text


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:1/hook",
        "http://127.0.0.1:99999/hook",
        "http://x\x00y/",
        "http://[::1",
        "ftp://127.0.0.1/hook",
        "not a url",
    ],
    ids=["refused", "bad-port", "nul-in-host", "broken-ipv6", "ftp", "garbage"],
)
async def test_webhook_never_raises(url: str) -> None:
    handler = WebhookHandler(url, timeout=timedelta(seconds=1))
    try:
        assert await handler(message()) is None
    finally:
        await handler.aclose()


# --- python ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("function", "want"),
    [
        ("sync_reply", "sync:4242:hello bot"),
        ("async_reply", "async:4242:hello bot"),
        ("async_object", "object:hello bot"),
        ("sync_returning_coroutine", "async:4242:hello bot"),
        ("sync_none", None),
        ("async_none", None),
        ("sync_empty", None),
        ("sync_not_text", None),
        ("sync_raises", None),
        ("async_raises", None),
        ("async_slow", None),
    ],
    ids=lambda v: str(v),
)
async def test_python_handler(function: str, want: str | None) -> None:
    handler = PythonHandler(f"{SAMPLES}:{function}", timeout=timedelta(seconds=0.2))
    assert await handler(message()) == want
    await handler.aclose()


async def test_python_handler_failure_is_logged_without_the_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.runtime.handlers")
    handler = PythonHandler(f"{SAMPLES}:sync_raises", timeout=timedelta(seconds=1))
    assert await handler(message(SECRET_TEXT)) is None
    assert [r.getMessage() for r in caplog.records if r.name == "bot.runtime.handlers"] == [
        "python handler failed: RuntimeError"
    ]
    assert SECRET_TEXT not in caplog.text


# --- build_handler -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "kind"),
    [
        (HandlerConfig(), EchoHandler),
        (HandlerConfig(kind="echo", url="http://ignored.example"), EchoHandler),
        (HandlerConfig(kind="forward"), ForwardHandler),
        (HandlerConfig(kind="webhook", url="http://127.0.0.1:8080/hook"), WebhookHandler),
        (HandlerConfig(kind="webhook", url="https://hooks.example/x"), WebhookHandler),
        (HandlerConfig(kind="python", target=f"{SAMPLES}:sync_reply"), PythonHandler),
    ],
    ids=["default", "echo", "forward", "webhook-http", "webhook-https", "python"],
)
async def test_build_handler_kinds(config: HandlerConfig, kind: type) -> None:
    handler = build_handler(config, no_owners)
    assert type(handler) is kind
    await handler.aclose()


def refused(config: HandlerConfig, field_name: str, detail: str) -> None:
    """``build_handler`` refuses ``config`` with one line naming ``field_name``."""
    with pytest.raises(ConfigError) as caught:
        build_handler(config, no_owners)
    assert caught.value.field == field_name
    assert str(caught.value).startswith(f"{field_name}: ")
    assert detail in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        pytest.param(None, "required when kind is webhook", id="webhook-no-url"),
        pytest.param("", "required when kind is webhook", id="webhook-empty-url"),
        pytest.param("ftp://x/y", "http:// or https://", id="webhook-ftp"),
        pytest.param("localhost:8080/x", "http://", id="webhook-no-scheme"),
        pytest.param("http://", "with a host", id="webhook-no-host"),
        pytest.param("http://[::1", "http://", id="webhook-invalid"),
    ],
)
def test_build_handler_refuses_a_bad_webhook_url(url: str | None, detail: str) -> None:
    refused(HandlerConfig(kind="webhook", url=url), "handler.url", detail)


@pytest.mark.parametrize(
    ("target", "detail"),
    [
        pytest.param(None, "required when kind is python", id="python-no-target"),
        pytest.param("no_colon", "must look like module:function", id="python-no-colon"),
        pytest.param(":func", "must look like module:function", id="python-no-module"),
        pytest.param(f"{SAMPLES}:", "must look like module:function", id="python-no-function"),
        pytest.param(
            "no_such_module_pairbot:f",
            "cannot import 'no_such_module_pairbot'",
            id="python-unknown-module",
        ),
        pytest.param(".relative:f", "cannot import '.relative'", id="python-relative"),
        pytest.param(f"{SAMPLES}:missing", "is not a function", id="python-missing-attr"),
        pytest.param(f"{SAMPLES}:NOT_CALLABLE", "is not a function", id="python-not-callable"),
    ],
)
def test_build_handler_refuses_a_bad_python_target(target: str | None, detail: str) -> None:
    refused(HandlerConfig(kind="python", target=target), "handler.target", detail)
