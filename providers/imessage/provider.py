"""iMessage, through a BlueBubbles server: its ``new-message`` webhook in, its REST API out.

:class:`IMessageProvider` serves the webhook BlueBubbles POSTs events to and turns each
``new-message`` from someone else into an :class:`~bot.core.models.Inbound`. The sender is the
handle's address (a ``+E.164`` phone number as BlueBubbles gives it, or an e-mail address,
lower-cased), never a contact name. Only ``<service>;-;<handle>`` chats are DMs; group chats
(``iMessage;+;chat…``) arrive as GROUP and the core drops them. The bot's own messages
(``isFromMe``), tapbacks, attachment-only messages and every other event type are ignored.

BlueBubbles does not sign its webhooks, so the endpoint requires the ``password`` query
parameter to equal the server password (register
``http://HOST:PORT/bluebubbles/webhook?password=…`` in BlueBubbles); anything else is
answered 401 and not looked at. BlueBubbles may deliver a message twice: inbound messages are
deduplicated on their ``guid`` (the base's dedupe). Accepted messages are handed to the core
one at a time, in order, by the base's worker, so a slow reply never holds up BlueBubbles'
POST.

Outbound text goes through the REST API (:mod:`providers.imessage.bluebubbles`) with a fresh
``tempGuid`` per message. When the server is unreachable or answers 429/502/503/504, the same
request (same ``tempGuid``) is retried with exponential backoff until it succeeds or
``send_retry_for`` seconds have passed; a 500 (iMessage itself failed) is retried a few times
only. iMessage has no buttons: :meth:`IMessageProvider.send` drops them and
:meth:`IMessageProvider.edit` sends the new text as a new message.

The password never appears in what this module logs or raises: URLs are logged without their
query, and client errors are reported by type only.
"""

from __future__ import annotations

import hmac
import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
from aiohttp import web

from bot.core.models import Button, ChatKind, Inbound
from bot.core.schema import WebhookConfig
from providers.imessage.bluebubbles import BlueBubbles, BlueBubblesError, ServerError
from providers.retry import Retry, RetryPolicy
from providers.webhook import WebhookProvider, WebhookServer

_LOG = logging.getLogger(__name__)

SendMethod = Literal["auto", "apple-script", "private-api"]

_DM_STYLE = 45
_OBJECT_REPLACEMENT = "\ufffc"  # stands in for an attachment inside a message's text
_MAX_SERVER_ERRORS = 3  # a 500 from BlueBubbles means iMessage failed; try that often at most

DEFAULT_WEBHOOK = WebhookConfig(port=8082, path="/bluebubbles/webhook")
"""Where the webhook listens unless told (the config block's default too)."""


def _chat_kind(chat: Mapping[str, Any]) -> ChatKind:
    """DM only for ``<service>;-;<handle>`` chats that nothing else marks as a group."""
    parts = str(chat.get("guid", "")).split(";", 2)
    participants = chat.get("participants")
    if (
        len(parts) == 3
        and parts[1] == "-"
        and parts[2]
        and chat.get("style") in (None, _DM_STYLE)
        and not (isinstance(participants, list) and len(participants) > 1)
    ):
        return ChatKind.DM
    return ChatKind.GROUP


def _sent_at(value: object) -> datetime | None:
    """``dateCreated`` is milliseconds since the Unix epoch."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    try:
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _answer(status: int, message: str) -> web.Response:
    """A webhook answer in BlueBubbles' own envelope."""
    return web.json_response({"status": status, "message": message}, status=status)


class IMessageProvider(WebhookProvider):
    """The iMessage provider: a webhook endpoint for BlueBubbles and a REST client to it.

    Args:
        server_url: the BlueBubbles server root, e.g. ``http://mac-mini.lan:1234``.
        password: the BlueBubbles server password; it authenticates both directions.
        webhook: where the webhook endpoint listens (port 0 picks a free one: read
            :attr:`webhook_port` after start); BlueBubbles must POST to its path with
            ``?password=<password>``.
        name: the provider name carried by every :class:`~bot.core.models.Inbound`.
        send_method: ``apple-script``, ``private-api``, or ``auto`` (the Private API when
            ``/api/v1/server/info`` says it is enabled and its helper connected).
        request_timeout: seconds one REST request may take (an AppleScript send can be slow).
        send_retry_for: seconds a send keeps retrying while BlueBubbles is unreachable.
        retry_initial: the first backoff delay in seconds; it doubles up to ``retry_max``.
        retry_max: the longest backoff delay in seconds.
        dedupe_size: how many inbound message guids are remembered to drop redeliveries.
        stop_grace: seconds :meth:`stop` gives the messages already accepted to be handled.

    :meth:`start` can be called again after :meth:`stop`.
    """

    platform = "iMessage"

    def __init__(
        self,
        *,
        server_url: str,
        password: str,
        webhook: WebhookConfig = DEFAULT_WEBHOOK,
        name: str = "imessage",
        send_method: SendMethod = "auto",
        request_timeout: float = 60.0,
        send_retry_for: float = 300.0,
        retry_initial: float = 0.5,
        retry_max: float = 10.0,
        dedupe_size: int = 10_000,
        stop_grace: float = 5.0,
    ) -> None:
        super().__init__(
            name=name,
            webhook=WebhookServer.at(webhook),
            dedupe_size=dedupe_size,
            drain_timeout=stop_grace,
        )
        self._check_settings(server_url, password, send_method)
        for field, value in (
            ("request_timeout", request_timeout),
            ("send_retry_for", send_retry_for),
            ("retry_initial", retry_initial),
            ("retry_max", retry_max),
        ):
            if not value > 0:
                raise self._config_error(field, "must be positive")
        self.send_retry = RetryPolicy(
            attempts=None,
            first_delay=retry_initial,
            max_delay=retry_max,
            give_up_after=send_retry_for,
        )
        self._root = server_url.strip().rstrip("/")
        self._password = password
        self._send_method: SendMethod = send_method
        self._method = "private-api" if send_method == "private-api" else "apple-script"
        self._api: BlueBubbles = BlueBubbles(
            root=self._root,
            password=password,
            timeout=aiohttp.ClientTimeout(total=request_timeout),
            name=name,
        )

    def _check_settings(self, server_url: str, password: str, send_method: str) -> None:
        self._required("server_url", server_url, "the BlueBubbles server URL is empty")
        if not server_url.strip().lower().startswith(("http://", "https://")):
            raise self._config_error("server_url", "must start with http:// or https://")
        if "?" in server_url or "#" in server_url:
            raise self._config_error(
                "server_url", "must not carry a query (the password is passed separately)"
            )
        if not password:
            raise self._config_error("password", "the BlueBubbles password is empty")
        if send_method not in ("auto", "apple-script", "private-api"):
            raise self._config_error("send_method", "must be auto, apple-script or private-api")

    def __repr__(self) -> str:
        return f"IMessageProvider(name={self.name!r}, server_url={self._root!r})"

    @property
    def send_method(self) -> str:
        """The ``method`` sends use (``apple-script`` or ``private-api``)."""
        return self._method

    # -- lifecycle (the hooks of BaseProvider) -----------------------------------------------

    async def _connect(self) -> None:
        """Check the password, serve the webhook endpoint, and return once it listens.

        An unreachable BlueBubbles server is only logged: webhooks arrive once it is back,
        and sends retry until then.

        Raises:
            ConfigError: BlueBubbles rejected the password, or the webhook port is taken.
        """
        self._api.open()
        await self._check_server()
        try:
            await self._serve(self._on_webhook)
        except OSError as exc:
            raise self._config_error(
                "webhook.port",
                f"cannot listen on {self._webhook.host}:{self.webhook_port} ({exc.strerror})",
            ) from None
        _LOG.info(
            "%s: webhook listening on %s (send method %s)",
            self.name,
            self.webhook_url,
            self._method,
        )

    async def _check_server(self) -> None:
        """Check the password and, for ``auto``, whether the Private API is usable."""
        try:
            status, payload = await self._api.server_info()
        except (aiohttp.ClientError, TimeoutError) as exc:
            _LOG.warning(
                "%s: BlueBubbles at %s is not reachable (%s); sends will retry",
                self.name,
                self._root,
                type(exc).__name__,
            )
            return
        if status in (401, 403):
            raise self._config_error(
                "password",
                "BlueBubbles rejected the password",
                hint="use the server password set in BlueBubbles",
            )
        if status != 200 or not isinstance(payload, dict):
            _LOG.warning(
                "%s: BlueBubbles server info answered HTTP %d; using %s",
                self.name,
                status,
                self._method,
            )
            return
        data = payload.get("data")
        if self._send_method == "auto" and isinstance(data, dict):
            usable = data.get("private_api") is True and data.get("helper_connected") is True
            self._method = "private-api" if usable else "apple-script"
        version = data.get("server_version") if isinstance(data, dict) else None
        _LOG.info("%s: BlueBubbles server %s reachable", self.name, version or "(unknown)")

    # -- outbound ----------------------------------------------------------------------------

    async def dm_chat_id(self, user_id: str) -> str:
        """The one-to-one iMessage chat with a handle: ``iMessage;-;<handle>``."""
        return f"iMessage;-;{user_id}"

    async def _send_text(self, chat_id: str, text: str, buttons: Sequence[Button]) -> str:
        """Send ``text`` to a chat guid with a fresh ``tempGuid``; return the message guid.

        Retries (same ``tempGuid``) while BlueBubbles is unreachable, up to ``send_retry_for``;
        a 500 (iMessage failed) is tried three times in all.

        Raises:
            ProviderStateError: the provider is not running.
            BlueBubblesError: BlueBubbles refused the message, or stayed unreachable.
        """
        del buttons  # none: iMessage has no buttons, so the base already dropped them
        body = {
            "chatGuid": chat_id,
            "message": text,
            "tempGuid": f"pairbot-{uuid.uuid4()}",
            "method": self._method,
        }
        tries = server_errors = 0

        async def attempt() -> str:
            nonlocal tries, server_errors
            tries += 1
            try:
                return await self._api.send_text(body)
            except ServerError as failure:
                server_errors += 1
                if server_errors < _MAX_SERVER_ERRORS:
                    raise
                reason = failure.reason
            raise BlueBubblesError(
                f"{self.name}: message not sent after {tries} attempts ({reason})"
            )

        return await self._retrying(attempt, what="send", give_up=self._gave_up)

    def _gave_up(self, failure: Retry, tries: int) -> BlueBubblesError:
        if self._stopping.is_set():
            return BlueBubblesError(
                f"{self.name}: message not sent, provider stopped ({failure.reason})"
            )
        return BlueBubblesError(
            f"{self.name}: message not sent after {tries} attempts ({failure.reason})"
        )

    # -- inbound -----------------------------------------------------------------------------

    async def _on_webhook(self, request: web.Request) -> web.Response:
        """Authenticate, parse, deduplicate and queue one webhook event; answer at once."""
        given = request.query.get("password", "")
        if not hmac.compare_digest(given.encode(), self._password.encode()):
            _LOG.warning(
                "%s: refused a webhook POST without the right password from %s",
                self.name,
                request.remote,
            )
            return _answer(401, "Unauthorized")
        try:
            event = await request.json()
        except ValueError:
            return _answer(400, "Body is not JSON")
        if not isinstance(event, dict):
            return _answer(400, "Body is not an event")
        data = event.get("data")
        if event.get("type") != "new-message" or not isinstance(data, dict):
            return _answer(200, "Ignored")
        guid = data.get("guid")
        if not isinstance(guid, str) or not guid:
            return _answer(200, "Ignored")
        if not self._first_time(guid):
            return _answer(200, "Duplicate")
        inbound = self._from_message(data, guid)
        if inbound is not None:
            self._enqueue(inbound)
        return _answer(200, "Accepted")

    def _from_message(self, data: Mapping[str, Any], guid: str) -> Inbound | None:
        """Turn a ``new-message`` payload into an Inbound, or None for what must be ignored."""
        if data.get("isFromMe"):
            return None
        if data.get("associatedMessageGuid") or data.get("associatedMessageType") not in (
            None,
            0,
            "",
        ):
            return None  # a tapback or another reaction to a message
        if data.get("itemType") not in (None, 0):
            return None  # group renames, members joining, and other chat events
        text = data.get("text")
        if not isinstance(text, str):
            return None
        text = text.replace(_OBJECT_REPLACEMENT, "")
        if not text.strip():
            return None  # attachments only
        handle = data.get("handle")
        address = handle.get("address") if isinstance(handle, dict) else None
        if not isinstance(address, str) or not address.strip():
            return None
        chats = data.get("chats")
        chat = chats[0] if isinstance(chats, list) and chats else None
        if not isinstance(chat, dict) or not isinstance(chat.get("guid"), str):
            return None  # no chat to answer in
        meta: dict[str, str] = {}
        service = handle.get("service") if isinstance(handle, dict) else None
        if isinstance(service, str) and service:
            meta["service"] = service
        return Inbound(
            provider=self.name,
            chat_id=chat["guid"],
            chat_kind=_chat_kind(chat),
            sender_id=address,
            text=text,
            message_id=guid,
            meta=meta,
            sent_at=_sent_at(data.get("dateCreated")),
        )


__all__ = ["BlueBubblesError", "IMessageProvider", "SendMethod"]
