"""Telegram's ``mode: webhook``: the real provider (python-telegram-bot for the Bot API) and
the whole app against the loopback fake, which registers the webhook with setWebhook and
POSTs each Update to it the way the Bot API server does.

The fake takes an ``http://`` loopback URL only because the tests turn on its test-only
``allow_http_webhooks`` (a self-hosted Bot API server in ``--local`` mode); api.telegram.org
takes only HTTPS, as the last tests show.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from telegram import Bot
from telegram.error import BadRequest, Conflict

import providers.telegram.provider as telegram_module
from bot.core.clock import Clock, FakeClock
from bot.core.errors import ConfigError
from bot.core.models import Button
from bot.core.schema import WebhookConfig
from bot.runtime.config import load_config
from providers.fakebase import free_port, wait_until
from providers.telegram.fake import FakeTelegramServer
from providers.telegram.provider import TelegramProvider
from tests.e2e import support
from tests.e2e.support import app_config, code_in, texts
from tests.helpers import Inbox

pytestmark = pytest.mark.e2e

ALICE, OWNER = 42, 111
SECRET = secrets.token_urlsafe(32)
PATH = "/telegram/webhook"


def make_fake(clock: Clock) -> FakeTelegramServer:
    """A Bot API in local mode (http loopback webhooks), where Alice pressed Start before."""
    fake = FakeTelegramServer(clock=clock, allow_http_webhooks=True)
    fake.started_before(ALICE, OWNER)
    return fake


def webhook_block(fake: FakeTelegramServer) -> dict[str, Any]:
    """A ``providers.telegram`` block in webhook mode on the fake, on a free loopback port."""
    port = free_port()
    return {
        "token": fake.token,
        "api_base_url": fake.base_url,
        "mode": "webhook",
        "webhook_url": f"http://127.0.0.1:{port}{PATH}",
        "secret_token": SECRET,
        "webhook": {"host": "127.0.0.1", "port": port, "path": PATH},
    }


def make_provider(fake: FakeTelegramServer) -> TelegramProvider:
    block = webhook_block(fake)
    return TelegramProvider(**{**block, "webhook": WebhookConfig(**block["webhook"])})


async def through(fake: FakeTelegramServer, inbox: Inbox) -> list[str]:
    """A last DM; once it is handed on, return the texts that came before it (updates are
    posted and handled in order)."""
    fake.dm(7, "the last word", first_name="Sam")
    await wait_until(lambda: "the last word" in inbox.texts)
    return inbox.texts[:-1]


# -- the provider ----------------------------------------------------------------------------


async def test_start_registers_the_webhook_and_a_posted_update_becomes_an_inbound(
    fake: FakeTelegramServer, running: TelegramProvider, inbox: Inbox
) -> None:
    hook = fake.webhook
    assert hook is not None
    assert hook["url"] == running.webhook_url
    assert hook["secret_token"] == SECRET
    # The same allowed_updates as polling.
    assert hook["allowed_updates"] == {"message", "channel_post", "callback_query"}

    fake.dm(ALICE, "hello", first_name="Alice", username="alice")

    [inbound] = await inbox.wait()
    assert (inbound.sender_id, inbound.text, inbound.meta) == (
        "42",
        "hello",
        {"username": "alice", "firstName": "Alice"},
    )
    await wait_until(lambda: fake.unconfirmed == 0)  # answered 2xx: delivered
    assert [d["status"] for d in fake.deliveries] == [200]
    await running.stop()  # a 2xx confirmed it: nothing to confirm with getUpdates
    assert "getUpdates" not in fake.methods_called()


async def test_a_button_press_comes_by_webhook_too(
    fake: FakeTelegramServer, running: TelegramProvider, inbox: Inbox
) -> None:
    sent = await running.send(
        "42", "approve?", buttons=[Button(label="Approve", command="/approve AB")]
    )
    fake.press_button(ALICE, int(sent), "/approve AB")

    [inbound] = await inbox.wait()
    assert (inbound.is_button, inbound.text) == (True, "/approve AB")


@pytest.mark.parametrize("secret", [None, "", "Forged-Secret_0123", SECRET[:-1], SECRET + "x"])
async def test_a_post_without_the_secret_token_is_refused_and_nothing_is_handled(
    fake: FakeTelegramServer,
    running: TelegramProvider,
    inbox: Inbox,
    secret: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    forged = {
        "update_id": 9000,
        "message": {
            "message_id": 9000,
            "date": 0,
            "chat": {"id": ALICE, "type": "private", "first_name": "Eve"},
            "from": {"id": ALICE, "is_bot": False, "first_name": "Eve"},
            "text": "/approve FORGED01",
        },
    }
    caplog.set_level(logging.DEBUG)

    assert await fake.post_update(forged, secret=secret) == 403

    assert await through(fake, inbox) == []
    assert "secret token refused" in caplog.text
    if secret:
        assert secret not in caplog.text


async def test_a_retried_update_is_handled_once(
    fake: FakeTelegramServer, running: TelegramProvider, inbox: Inbox
) -> None:
    """Telegram posts an update again when the answer is lost (same update_id)."""
    fake.lose_next_webhook_acks(1)
    update = fake.dm(ALICE, "once", first_name="Alice")
    await wait_until(lambda: fake.times_posted(update["update_id"]) >= 2)

    assert await through(fake, inbox) == ["once"]
    assert [d["status"] for d in fake.deliveries if d["update_id"] == update["update_id"]] == [
        200,
        200,
    ]


async def test_a_dm_written_while_stopped_is_delivered_after_the_restart(
    fake: FakeTelegramServer, provider: TelegramProvider, inbox: Inbox
) -> None:
    """stop() leaves the webhook registered: Telegram keeps what arrives meanwhile and posts
    it again until the restarted provider takes it."""
    await provider.start(inbox)
    await provider.stop()
    assert fake.webhook is not None  # still registered
    assert "deleteWebhook" not in fake.methods_called()

    update = fake.dm(ALICE, "while stopped", first_name="Alice")
    await wait_until(lambda: fake.times_posted(update["update_id"]) >= 1)
    assert inbox.items == []
    async with _bot(fake) as bot:
        info = await bot.get_webhook_info()
    assert info.last_error_message == "Webhook connection closed"  # nobody listens

    await provider.start(inbox)
    assert await through(fake, inbox) == ["while stopped"]


async def test_the_secret_token_is_never_logged(
    fake: FakeTelegramServer, provider: TelegramProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """PTB logs every call's parameters at DEBUG, setWebhook's secret_token among them."""
    caplog.set_level(logging.DEBUG)
    await provider.start(Inbox())
    assert "setWebhook" in caplog.text  # the DEBUG line was written
    assert SECRET not in caplog.text
    assert fake.token not in caplog.text


async def test_polling_after_webhook_mode_deletes_the_webhook(
    fake: FakeTelegramServer, running: TelegramProvider
) -> None:
    await running.stop()
    polling = TelegramProvider(token=fake.token, api_base_url=fake.base_url, poll_timeout=1)
    inbox = Inbox()
    try:
        await polling.start(inbox)
        assert fake.webhook is None
        fake.dm(ALICE, "polled", first_name="Alice")
        await wait_until(lambda: inbox.texts == ["polled"])
    finally:
        await polling.stop()


# -- the fake, as the Bot API answers --------------------------------------------------------


def _bot(fake: FakeTelegramServer) -> Bot:
    return Bot(fake.token, base_url=f"{fake.base_url}/bot")


async def raw_call(fake: FakeTelegramServer, method: str, **params: Any) -> tuple[int, Any]:
    """A Bot API call as JSON, answered as the wire carries it (PTB rewrites descriptions)."""
    url = f"{fake.base_url}/bot{fake.token}/{method}"
    async with aiohttp.ClientSession() as session, session.post(url, json=params) as resp:
        return resp.status, await resp.json()


async def test_get_updates_conflicts_while_a_webhook_is_set(
    fake: FakeTelegramServer, running: TelegramProvider
) -> None:
    async with _bot(fake) as bot:
        with pytest.raises(Conflict):
            await bot.get_updates(timeout=0)
        assert await raw_call(fake, "getUpdates") == (
            409,
            {
                "ok": False,
                "error_code": 409,
                "description": "Conflict: can't use getUpdates method while webhook is "
                "active; use deleteWebhook to delete the webhook first",
            },
        )
        info = await bot.get_webhook_info()
        assert info.url == running.webhook_url
        assert info.pending_update_count == 0
        assert await bot.delete_webhook()
        assert await bot.get_updates(timeout=0) == ()


ACCEPTED = (200, {"ok": True, "result": True})


@pytest.mark.parametrize(
    ("secret", "answer"),
    [
        ("a+b/c=", "secret token contains unallowed characters"),
        ("with space", "secret token contains unallowed characters"),
        ("x" * 257, "secret token is too long"),
        ("x" * 256, None),
        ("Az09_-", None),
    ],
)
async def test_the_fake_refuses_a_secret_token_set_webhook_refuses(
    fake: FakeTelegramServer, secret: str, answer: str | None
) -> None:
    """(One setWebhook per fake: the Bot API takes one a second.)"""
    said = await raw_call(
        fake, "setWebhook", url="https://bot.example.com/hook", secret_token=secret
    )
    if answer is None:
        assert said == ACCEPTED
        assert fake.webhook is not None
    else:
        assert said == (
            400,
            {"ok": False, "error_code": 400, "description": f"Bad Request: {answer}"},
        )
        assert fake.webhook is None


@pytest.mark.parametrize(
    ("url", "answer"),
    [
        ("http://bot.example.com/hook", "bad webhook: An HTTPS URL must be provided for webhook"),
        (
            "https://bot.example.com:8080/hook",
            "bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443",
        ),
        ("ftp://bot.example.com/hook", "invalid webhook URL specified"),
        ("https://bot.example.com:8443/hook", None),
        ("https://bot.example.com/hook", None),
    ],
)
async def test_the_real_api_takes_only_https_on_its_ports(
    fake_clock: FakeClock, url: str, answer: str | None
) -> None:
    async with FakeTelegramServer(clock=fake_clock) as fake, _bot(fake) as bot:
        if answer is None:
            assert await bot.set_webhook(url)
            assert (await bot.get_webhook_info()).url == url
            return
        with pytest.raises(BadRequest):  # PTB rewrites the description: the wire's below
            await bot.set_webhook(url)
        fake.allow_set_webhook_now()
        assert await raw_call(fake, "setWebhook", url=url) == (
            400,
            {"ok": False, "error_code": 400, "description": f"Bad Request: {answer}"},
        )
        assert fake.webhook is None


# -- pairbot refuses before it calls ---------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (
            "mode: webhook, webhook_url: 'https://bot.example.com/h', secret_token: 'a+b/c='",
            "providers.telegram.secret_token: must be 1 to 256 characters of A-Z, a-z, 0-9, _ "
            "and - (what setWebhook takes)",
        ),
        (
            "mode: webhook, webhook_url: 'https://bot.example.com/h', secret_token: 'abcabcabc'",
            "providers.telegram.secret_token: too weak (",
        ),
        (
            "mode: webhook, webhook_url: 'https://bot.example.com/h'",
            "providers.telegram: secret_token is required when mode is webhook",
        ),
        (
            f"mode: webhook, secret_token: '{SECRET}'",
            "providers.telegram: webhook_url is required when mode is webhook",
        ),
        (
            f"mode: webhook, webhook_url: 'http://bot.example.com/h', secret_token: '{SECRET}'",
            "providers.telegram: webhook_url must be an https:// URL",
        ),
        (
            "webhook_url: 'https://bot.example.com/h'",
            "providers.telegram: webhook_url is only used when mode is webhook",
        ),
        ("mode: hook", "providers.telegram.mode: "),
    ],
)
def test_the_config_refuses_a_bad_webhook_block_in_one_line(
    tmp_path: Path, block: str, message: str
) -> None:
    path = tmp_path / "pairbot.yaml"
    path.write_text(
        "owners: [{provider: telegram, user_id: '111'}]\n"
        f"providers:\n  telegram: {{token: '1:t', {block}}}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    said = str(caught.value).removeprefix(f"{path}: ")
    assert "\n" not in said
    assert said.startswith(message)
    assert "a+b/c=" not in said
    assert "abcabcabc" not in said


async def test_the_provider_refuses_a_bad_secret_token_before_any_call(
    fake: FakeTelegramServer,
) -> None:
    block = webhook_block(fake)
    block["webhook"] = WebhookConfig(**block["webhook"])
    block["secret_token"] = "not allowed!"
    with pytest.raises(ConfigError, match="secret_token: must be 1 to 256 characters"):
        TelegramProvider(**block)
    assert fake.calls == []


# -- the whole app ---------------------------------------------------------------------------


@pytest.fixture
async def tg(fake_clock: FakeClock) -> AsyncIterator[FakeTelegramServer]:
    async with make_fake(fake_clock) as server:
        yield server


async def test_a_stranger_gets_a_code_and_the_owner_approves_in_webhook_mode(
    tg: FakeTelegramServer, state_dir: Path, fake_clock: FakeClock
) -> None:
    config = app_config("telegram", str(OWNER), webhook_block(tg))
    async with support.app_running(config, state_dir, fake_clock) as app:
        assert tg.webhook is not None
        tg.dm(ALICE, "hello?", first_name="Alice")
        [reply] = await texts(lambda: tg.messages_to(ALICE), 1)
        assert "pairing code" in reply
        code = code_in(reply)
        notice = (await tg.wait_for_sent(lambda m: m["chat_id"] == OWNER))[0]
        [approve, _reject] = notice["reply_markup"]["inline_keyboard"][0]

        tg.press_button(OWNER, notice["message_id"], approve["callback_data"])

        approved = await texts(lambda: tg.messages_to(ALICE), 2)
        assert approved[1] == "You're approved. Send a message to start chatting."
        assert app.pairing.is_allowed("telegram", str(ALICE))
        assert code not in [p.code for p in app.pairing.pending()]
        assert "getUpdates" not in tg.methods_called()


# -- pairbot doctor --------------------------------------------------------------------------


async def test_doctor_says_whether_telegram_posts_to_the_webhook(
    fake: FakeTelegramServer, provider: TelegramProvider
) -> None:
    from providers.telegram.doctor import check_owners  # (imported here: pairbot doctor's way)

    made = webhook_block(fake)
    block = {
        **made,
        "webhook_url": provider.public_url,
        "webhook": WebhookConfig(**made["webhook"]),
    }

    # doctor runs its own event loop; the fake serves on this one
    before = await asyncio.to_thread(check_owners, block, [])
    await provider.start(Inbox())
    registered = await asyncio.to_thread(check_owners, block, [])
    await provider.stop()
    fake.dm(ALICE, "nobody listens", first_name="Alice")
    await wait_until(lambda: fake.deliveries != [])
    failing = await asyncio.to_thread(check_owners, block, [])

    where = "providers.telegram"
    assert before[1] == (
        None,
        f"{where}: no webhook is registered yet: pairbot registers it at start",
    )
    assert registered[1] == (True, f"{where}: Telegram posts updates to the webhook_url")
    assert failing[1] == (
        False,
        f"{where}: Telegram's last webhook delivery failed: Webhook connection closed "
        "(1 update(s) waiting)",
    )
    assert SECRET not in repr([before, registered, failing])


@pytest.mark.parametrize("rate_limiter", [True, False], ids=["AIORateLimiter", "own retry"])
async def test_a_second_set_webhook_within_a_second_is_waited_out(
    fake: FakeTelegramServer, monkeypatch: pytest.MonkeyPatch, rate_limiter: bool
) -> None:
    """The Bot API takes one setWebhook a second: another process's (or a quick restart's)
    makes the next one a 429 with retry_after 1, which start waits out, with PTB's rate
    limiter or without (python-telegram-bot[rate-limiter] not installed)."""
    if rate_limiter and not telegram_module._HAVE_AIOLIMITER:
        pytest.skip("aiolimiter is not installed")
    monkeypatch.setattr(telegram_module, "_HAVE_AIOLIMITER", rate_limiter)
    provider = make_provider(fake)
    url = "https://other.example.com/hook"
    assert (await raw_call(fake, "setWebhook", url=url))[0] == 200
    assert await raw_call(fake, "setWebhook", url=url) == (
        429,
        {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 1",
            "parameters": {"retry_after": 1},
        },
    )

    try:
        await provider.start(Inbox())
    finally:
        await provider.stop()

    assert fake.webhook is not None
    assert fake.webhook["url"] == provider.public_url
    assert fake.methods_called().count("setWebhook") == 4  # 2 here, 2 by start
