"""Where messages from allowed senders go: ``echo``, ``forward``, ``webhook`` or ``python``.

A handler gets the :class:`~bot.core.models.Inbound` and returns the reply text, or None for no
reply. A handler that fails is logged and answered with nothing; it never stops the bot.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Protocol

import httpx

from bot.core import messages
from bot.core.config import HandlerConfig
from bot.core.errors import ConfigError
from bot.core.models import Inbound
from bot.core.text import clean_name

log = logging.getLogger(__name__)


class Handler(Protocol):
    """Turns an allowed sender's message into a reply (or None)."""

    async def __call__(self, msg: Inbound) -> str | None:
        """Handle one message."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class EchoHandler:
    """Replies with exactly the text received."""

    async def __call__(self, msg: Inbound) -> str | None:
        """Return the text unchanged."""
        return msg.text

    async def aclose(self) -> None:
        """Nothing to release."""


class ForwardHandler:
    """Passes each message to the owner chat, saying who sent it; no reply to the sender."""

    def __init__(self, to_owners: Callable[[str], Awaitable[None]]) -> None:
        self._to_owners = to_owners

    async def __call__(self, msg: Inbound) -> str | None:
        """Forward to the owners."""
        name = clean_name(msg.sender_name)
        who = f"{msg.provider} {msg.sender_id}{f' ({name})' if name else ''}"
        shown = msg.text if not msg.media else f"{messages.WITHOUT_TEXT} {msg.text}".rstrip()
        await self._to_owners(f"From {who}:\n{shown}")
        return None

    async def aclose(self) -> None:
        """Nothing to release."""


class WebhookHandler:
    """POSTs ``{provider, sender_id, sender_name, chat_id, text}`` as JSON to a URL.

    A response body that is JSON with a ``text`` (or ``reply``) string, or plain text, is
    sent back as the reply. Timeouts and errors are logged without the message text.
    """

    def __init__(self, url: str, *, timeout: timedelta) -> None:
        self._url = url
        self._client = httpx.AsyncClient(timeout=timeout.total_seconds())

    async def __call__(self, msg: Inbound) -> str | None:
        """Call the webhook."""
        payload = {
            "provider": msg.provider,
            "sender_id": msg.sender_id,
            "sender_name": msg.sender_name,
            "chat_id": msg.chat_id,
            "text": msg.text,
        }
        try:
            response = await self._client.post(self._url, json=payload)
            response.raise_for_status()
        except Exception as exc:  # httpx.HTTPError, but also InvalidURL, ExceptionGroup ...
            log.warning("webhook handler failed: %s", type(exc).__name__)
            return None
        if not response.content.strip():
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            try:
                body = response.json()
            except ValueError:
                log.warning("webhook handler returned invalid JSON")
                return None
            if isinstance(body, dict):
                for key in ("text", "reply"):
                    reply = body.get(key)
                    if isinstance(reply, str) and reply:
                        return reply
                return None
            return body if isinstance(body, str) and body else None
        return response.text

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()


class PythonHandler:
    """Calls ``module:function`` (async or sync) with the Inbound; returns its reply."""

    def __init__(self, target: str, *, timeout: timedelta) -> None:
        self._func = load_callable(target)
        self._timeout = timeout.total_seconds()

    async def __call__(self, msg: Inbound) -> str | None:
        """Call the function, off the event loop if it is synchronous."""
        func = self._func
        try:
            async with asyncio.timeout(self._timeout):
                if _is_async(func):
                    result = await func(msg)
                else:
                    result = await asyncio.to_thread(func, msg)
                if inspect.isawaitable(result):  # e.g. a sync wrapper returning a coroutine
                    result = await result
        except Exception as exc:
            log.warning("python handler failed: %s", type(exc).__name__)
            return None
        return result if isinstance(result, str) and result else None

    async def aclose(self) -> None:
        """Nothing to release."""


def load_callable(target: str) -> Callable[..., Any]:
    """Import ``module:function``; a bad target is a :class:`ConfigError` naming it."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigError(
            f"must look like module:function, got {target!r}", field="handler.target"
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, but also a relative name or a module that fails
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(
            f"cannot import {module_name!r}: {detail}", field="handler.target"
        ) from None
    func = getattr(module, attr, None)
    if not callable(func):
        raise ConfigError(f"{target!r} is not a function", field="handler.target")
    return func  # type: ignore[no-any-return]


def build_handler(config: HandlerConfig, to_owners: Callable[[str], Awaitable[None]]) -> Handler:
    """Build the configured handler."""
    if config.kind == "forward":
        return ForwardHandler(to_owners)
    if config.kind == "webhook":
        if not config.url:
            raise ConfigError("required when kind is webhook", field="handler.url")
        _check_url(config.url)
        return WebhookHandler(config.url, timeout=config.timeout)
    if config.kind == "python":
        if not config.target:
            raise ConfigError("required when kind is python", field="handler.target")
        return PythonHandler(config.target, timeout=config.timeout)
    return EchoHandler()


def _check_url(url: str) -> None:
    """Refuse a webhook URL that could never be called, at start-up rather than per message."""
    try:
        parsed = httpx.URL(url)
    except Exception:
        parsed = None
    if (
        parsed is None
        or parsed.scheme not in ("http", "https")
        or not parsed.host
        or not 0 <= (parsed.port or 0) <= 65535
    ):
        raise ConfigError("must be an http:// or https:// URL with a host", field="handler.url")


def _is_async(func: Callable[..., Any]) -> bool:
    """True for an ``async def`` function, or an object whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(type(func).__call__)
