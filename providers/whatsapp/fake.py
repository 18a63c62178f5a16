"""A loopback fake of the WhatsApp Business Cloud API, for ``pairbot demo`` and the e2e tests.

It plays both of Meta's sides on 127.0.0.1:

* the Graph API the bot calls: ``POST /{version}/{phone_number_id}/messages`` (bearer token
  checked, text and reply-button messages validated against the documented limits, every send
  recorded in :attr:`FakeWhatsAppServer.sent`, answered with the official
  ``{"messaging_product", "contacts", "messages": [{"id": "wamid..."}]}``) and
  ``GET /{version}/{phone_number_id}`` (the phone number's details);
* the webhook sender: payloads in Meta's ``whatsapp_business_account`` envelope, signed with
  ``X-Hub-Signature-256`` over the raw body, POSTed to :attr:`FakeWhatsAppServer.webhook_url`.
  :meth:`~FakeWhatsAppServer.deliver` queues a payload and, like Meta, re-delivers it until it
  gets a 200 (in order, one at a time); :meth:`~FakeWhatsAppServer.post_webhook` sends one
  POST now, signed, unsigned or forged, and returns the HTTP status.

People are written to by phone number (``wa_id``). As Meta has done since April 2026, every
message also carries the sender's business-scoped user id (BSUID, :meth:`~FakeWhatsAppServer.
bsuid`) as ``messages[].from_user_id`` and ``contacts[].user_id``; after
:meth:`~FakeWhatsAppServer.hide_number` (a user who adopted a username and is out of the
business's contact book) the phone number fields are omitted and only the BSUID and the
username remain. Sends take a phone number in ``to`` or a BSUID in ``recipient``.

By default every accepted send is followed by a ``sent`` status webhook that carries the
send's ``biz_opaque_callback_data``, as Meta's are. Outages are played with
:meth:`~FakeWhatsAppServer.go_down` / :meth:`~FakeWhatsAppServer.come_back` (connections
refused or cut), :meth:`~FakeWhatsAppServer.fail_next_sends` (5xx answers),
:meth:`~FakeWhatsAppServer.drop_next_sends` (the connection cut before or after the message
is taken) and :meth:`~FakeWhatsAppServer.lose_next_acks` (a 200 the sender never sees, so it
re-delivers).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import aiohttp
from aiohttp import web

from bot.core.clock import Clock
from providers.fakebase import DemoSpec, PeopleDemo, WebhookDemo, Written
from providers.fakes_http import LoopbackFake, Webhooks

JsonDict = dict[str, Any]

DEFAULT_ACCESS_TOKEN = "EAAfake-whatsapp-access-token"  # noqa: S105 (the fake's, not a secret)
DEFAULT_APP_SECRET = "fake-whatsapp-app-secret"  # noqa: S105
DEFAULT_VERIFY_TOKEN = "fake-whatsapp-verify-token"  # noqa: S105
DEFAULT_PHONE_NUMBER_ID = "106540352242922"
DEFAULT_DISPLAY_NUMBER = "15550001234"
DEFAULT_WABA_ID = "102290129340398"

_MAX_TEXT = 4096
_MEDIA = {
    "image": "image/jpeg",
    "video": "video/mp4",
    "document": "application/pdf",
    "audio": "audio/ogg; codecs=opus",
    "sticker": "image/webp",
}
"""Media message types a user can send, with a MIME type of each."""
_MAX_BODY = 1024
WINDOW = timedelta(hours=24)
"""WhatsApp's customer service window: free-form messages only within 24 hours of the user's
last message; after it Graph error 131047 (Meta's error codes reference)."""
WINDOW_CLOSED = 131047
_BSUID = re.compile(r"[A-Z]{2}\.(ENT\.)?[A-Za-z0-9]{1,128}\Z")
"""A BSUID (``US.13491208655302741918``) or a parent BSUID (``US.ENT.1181...``): "a two-letter
ISO country code, a period, and up to 128 alphanumeric characters" (Meta, "Business-scoped
user IDs")."""
_MAX_BUTTONS = 3
_MAX_ID = 256
_MAX_TITLE = 20


def sign(app_secret: str, raw: bytes) -> str:
    """The ``X-Hub-Signature-256`` header Meta sends: ``sha256=`` + HMAC-SHA256 hex."""
    return "sha256=" + hmac.new(app_secret.encode(), raw, hashlib.sha256).hexdigest()


def first_message(payload: JsonDict) -> JsonDict:
    """The first ``messages[]`` item of a webhook payload (e.g. to read its ``id``)."""
    value = payload["entry"][0]["changes"][0]["value"]
    items = value.get("messages") or value.get("message_echoes") or []
    return dict(items[0])


# Meta, "WhatsApp error codes" (developers.facebook.com/documentation/business-messaging/
# whatsapp/support/error-codes): a code's title (in ``message`` after "(#code)") and its
# ``error_data.details``, for the codes this fake plays.
_TITLES = {
    2: "Service temporarily unavailable",
    130429: "Rate limit hit",
    131047: "Re-engagement message",
    131048: "Spam rate limit hit",
    131056: "(Business Account, Consumer Account) pair rate limit hit",
}
_DETAILS = {
    131047: "Message failed to send because more than 24 hours have passed since the customer "
    "last replied to this number.",
    131048: "Message failed to send because there are restrictions on how many messages can "
    "be sent from this phone number. This may be because too many previous messages were "
    "blocked or flagged as spam.",
}


class _GraphError(Exception):
    """A Graph API error answer: ``{"error": {"message", "type", "code", "error_data",
    "fbtrace_id"}}``."""

    def __init__(self, status: int, code: int, message: str, kind: str = "OAuthException") -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.kind = status, code, message, kind

    @classmethod
    def of(cls, status: int, code: int) -> _GraphError:
        """Graph's answer with error ``code``, titled and detailed as Meta's reference says."""
        return cls(status, code, f"(#{code}) {_TITLES.get(code, 'Error')}")

    def response(self) -> web.Response:
        error: JsonDict = {"message": self.message, "type": self.kind, "code": self.code}
        if self.code in _DETAILS:
            error["error_data"] = {"messaging_product": "whatsapp", "details": _DETAILS[self.code]}
        error["fbtrace_id"] = "AFakeTraceId"
        return web.json_response({"error": error}, status=self.status)


def _invalid(message: str) -> _GraphError:
    return _GraphError(400, 131009, f"(#131009) Parameter value is not valid: {message}")


class FakeWhatsAppServer(LoopbackFake):
    """The Graph API on 127.0.0.1 plus Meta's webhook sender, for one business number.

    Use as ``async with FakeWhatsAppServer() as fake:``; point the provider's
    ``api_base_url`` at :attr:`base_url`, and set :attr:`webhook_url` to where the provider
    listens. Everything runs on the caller's event loop.

    A free-form send (text, reply buttons) reaches only someone who wrote in the last 24
    hours on the fake's clock (:meth:`wrote`); anyone else is refused with 131047, as Meta
    does on the Cloud API: by default the send is taken (200, a wamid) and a ``failed`` status
    webhook follows; with ``window_refusal="answer"`` the send's answer is the error (Meta's
    error reference: "returned either synchronously as a Graph API response, asynchronously
    via Webhook, or sometimes through both methods").

    Attributes:
        sent: every message the bot sent, in order, as ``{"to", "type", "text", "buttons",
            "message_id", "context", "biz_opaque_callback_data", "payload"}`` (``text`` is the
            body of a text or interactive message; ``buttons`` is ``[{"id", "title"}]``;
            ``context`` the wamid replied to, or None; ``to`` the phone number or BSUID it was
            addressed to).
        calls: every authorised Graph API call, as ``(method, path, JSON body or {})``.
        refused: free-form sends to someone who had not written for 24 hours, recorded like
            ``sent`` (with ``"error": 131047``) but never shown to them.
        deliveries: every webhook POST attempt, as ``{"ids", "status"}`` (``status`` None
            when the connection failed).
        webhook_url: where payloads are POSTed; None until set.
    """

    def __init__(
        self,
        *,
        access_token: str = DEFAULT_ACCESS_TOKEN,
        app_secret: str = DEFAULT_APP_SECRET,
        verify_token: str = DEFAULT_VERIFY_TOKEN,
        phone_number_id: str = DEFAULT_PHONE_NUMBER_ID,
        display_phone_number: str = DEFAULT_DISPLAY_NUMBER,
        waba_id: str = DEFAULT_WABA_ID,
        port: int = 0,
        clock: Clock | None = None,
        send_statuses: bool = True,
        window_refusal: Literal["status", "answer"] = "status",
    ) -> None:
        super().__init__(port=port, clock=clock, shutdown_timeout=0.5)
        self.access_token = access_token
        self.app_secret = app_secret
        self.verify_token = verify_token
        self.phone_number_id = phone_number_id
        self.display_phone_number = display_phone_number
        self.waba_id = waba_id
        self.send_statuses = send_statuses
        self.window_refusal = window_refusal
        self.refused: list[JsonDict] = []
        self._wrote: dict[str, datetime] = {}
        self.webhook_url: str | None = None
        self.calls: list[tuple[str, str, JsonDict]] = []
        self.deliveries: list[JsonDict] = []
        self._webhooks = Webhooks("FakeWhatsAppServer", self._deliver, timeout=5)
        self._messages: dict[str, JsonDict] = {}
        self._next_id = 1
        self._down = False
        self._hidden: dict[str, str] = {}
        self._fail: list[tuple[int, int]] = []
        self._drop: list[bool] = []
        self._lose_acks = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Serve the Graph API (port 0 picks a free one) and start the webhook sender."""
        app = web.Application()
        app.router.add_post("/{version}/{phone_id}/messages", self._post_messages)
        app.router.add_get("/{version}/{phone_id}", self._get_phone)
        await self._serve(app)
        await self._webhooks.start()

    async def stop(self) -> None:
        """Stop the webhook sender and the server. Safe to call twice."""
        await self._webhooks.stop()
        await self._http.stop()

    def webhook_for(self, port: int, path: str) -> str:
        """Set and return :attr:`webhook_url` for pairbot's endpoint on 127.0.0.1."""
        self.webhook_url = f"http://127.0.0.1:{port}{path}"
        return self.webhook_url

    # -- outages -----------------------------------------------------------------------------

    async def go_down(self) -> None:
        """The Graph API goes away: new connections are refused, open ones cut."""
        self._down = True
        await self._http.unlisten()

    async def come_back(self) -> None:
        """The Graph API answers again, on the same port."""
        if not self._http.serving:
            raise RuntimeError("FakeWhatsAppServer is not started")
        await self._http.listen()
        self._down = False

    def fail_next_sends(self, n: int, *, status: int = 503, code: int = 2) -> None:
        """Answer the next ``n`` sends with a Graph error (default: 503, service code 2)."""
        self._fail += [(status, code)] * n

    def drop_next_sends(self, n: int, *, after_taking: bool = False) -> None:
        """Cut the connection of the next ``n`` sends without an answer; with
        ``after_taking`` the message is sent (and recorded) first, so the answer is lost."""
        self._drop += [after_taking] * n

    def lose_next_acks(self, n: int) -> None:
        """Treat the next ``n`` 200 answers to webhooks as lost: the payload is re-delivered."""
        self._lose_acks += n

    # -- who people are ----------------------------------------------------------------------

    def bsuid(self, wa_id: str) -> str:
        """The BSUID of the person with phone number ``wa_id``: stable, and scoped to this
        business (its portfolio; the WABA id stands in for it here)."""
        digest = hashlib.sha256(f"{self.waba_id}:{wa_id}".encode()).digest()
        return f"US.{int.from_bytes(digest[:8], 'big'):020d}"

    def hide_number(self, wa_id: str, username: str) -> str:
        """``wa_id`` adopts ``username`` and is not in the business's contact book: from now
        on Meta omits their phone number (``from``, ``contacts[].wa_id``) and their messages
        carry only their BSUID and username (Meta, "Business-scoped user IDs"). Return the
        BSUID, the one id left to reach them by."""
        self._hidden[wa_id] = username
        return self.bsuid(wa_id)

    def _who(self, sender: str) -> tuple[str, str, str]:
        """``(phone number or "", BSUID, username or "")`` of someone writing as ``sender``:
        a phone number, or the BSUID of someone Meta shows no number of."""
        if not sender.isdigit():
            return "", sender, ""
        if sender in self._hidden:
            return "", self.bsuid(sender), self._hidden[sender]
        return sender, self.bsuid(sender), ""

    # -- what users do -----------------------------------------------------------------------

    def dm(self, wa_id: str, text: str, *, name: str = "") -> JsonDict:
        """Queue a 1:1 text message from ``wa_id`` (a phone number, or a BSUID) to the
        business; return the payload."""
        message = self._message(wa_id, "text", {"text": {"body": text}})
        return self._from_person(wa_id, name, message)

    def group_message(self, group_id: str, wa_id: str, text: str, *, name: str = "") -> JsonDict:
        """Queue a text message from ``wa_id`` in a group (it carries ``group_id``)."""
        message = self._message(wa_id, "text", {"text": {"body": text}, "group_id": group_id})
        return self.deliver(self._payload([self._contact(wa_id, name)], messages=[message]))

    def own_message(self, text: str) -> JsonDict:
        """Queue a text message whose sender is the business number itself."""
        number = self.display_phone_number
        message = self._message(number, "text", {"text": {"body": text}})
        return self.deliver(self._payload([self._contact(number, "Business")], messages=[message]))

    def echo(self, to: str, text: str) -> JsonDict:
        """Queue an ``smb_message_echoes`` webhook: the business app wrote to ``to``."""
        message = self._message(
            self.display_phone_number, "text", {"to": to, "text": {"body": text}}
        )
        return self.deliver(
            self._payload([], field="smb_message_echoes", message_echoes=[message])
        )

    def media(
        self, wa_id: str, kind: str = "image", *, caption: str = "", name: str = ""
    ) -> JsonDict:
        """Queue a media message of ``kind`` (image, video, document, audio, sticker) from
        ``wa_id``, as Meta's webhook reference for that type shows it: image, video and
        document may carry a caption; audio and sticker never do.

        Raises:
            ValueError: not one of those kinds, or a caption on audio or a sticker.
        """
        if kind not in _MEDIA:
            raise ValueError(f"no media message of type {kind!r}")
        item: JsonDict = {"mime_type": _MEDIA[kind], "sha256": "0" * 64, "id": "1234567890"}
        if kind == "document":
            item["filename"] = "notes.pdf"
        elif kind == "audio":
            item["voice"] = True
        elif kind == "sticker":
            item["animated"] = False
        if caption and kind in ("audio", "sticker"):
            raise ValueError(f"a {kind} message has no caption")
        if caption:
            item["caption"] = caption
        message = self._message(wa_id, kind, {kind: item})
        return self._from_person(wa_id, name, message)

    def number_changed(self, old: str, new: str, *, name: str = "") -> JsonDict:
        """Queue the ``system`` message Meta sends when a user changes number."""
        system = {
            "body": f"User {name or old} changed from {old} to {new}",
            "wa_id": new,
            "type": "user_changed_number",
        }
        message = self._message(old, "system", {"system": system})
        return self.deliver(self._payload(None, messages=[message]))

    def press_button(
        self, wa_id: str, message_id: str, command: str, *, name: str = ""
    ) -> JsonDict:
        """Queue ``wa_id`` tapping the reply button ``command`` on a message the bot sent.

        Raises:
            KeyError: the bot sent no message with this id.
            ValueError: that message has no button with this id.
        """
        sent = self._messages[message_id]
        title = next((b["title"] for b in sent["buttons"] if b["id"] == command), None)
        if title is None:
            raise ValueError(f"message {message_id} has no button {command!r}")
        reply = {"type": "button_reply", "button_reply": {"id": command, "title": title}}
        message = self._message(
            wa_id,
            "interactive",
            {
                "context": {"from": self.display_phone_number, "id": message_id},
                "interactive": reply,
            },
        )
        return self._from_person(wa_id, name, message)

    def wrote(self, sender: str, at: datetime | None = None) -> None:
        """``sender`` wrote to the business at ``at`` (default: now), long handled: no
        webhook, but their 24-hour window runs from then. What people do through this fake
        (a DM, media, a button) counts by itself."""
        self._wrote[self._who(sender)[1]] = at or self._clock.now()

    def _window_open(self, to: str) -> bool:
        """Whether ``to`` wrote less than 24 hours ago (WhatsApp's customer service window:
        free-form messages only within 24 hours of the user's last message)."""
        last = self._wrote.get(self._who(to)[1])
        return last is not None and self._clock.now() - last < WINDOW

    def _from_person(self, sender: str, name: str, message: JsonDict) -> JsonDict:
        """Queue ``message``, written by ``sender`` to the business: their window opens."""
        self.wrote(sender)
        return self.deliver(self._payload([self._contact(sender, name)], messages=[message]))

    def status(
        self,
        message_id: str,
        status: str = "delivered",
        *,
        key: str | None = None,
        code: int | None = None,
    ) -> JsonDict:
        """Queue a status webhook (``sent``, ``delivered``, ``read``) for a sent message, or
        with ``code`` a ``failed`` one carrying that Graph error in ``errors[]`` (no
        conversation or pricing; the BSUID only for a send to a BSUID)."""
        to = str(self._messages.get(message_id, {}).get("to", ""))
        item: JsonDict = {"id": message_id, "status": status, "timestamp": self._timestamp()}
        if code is not None:
            item["status"] = "failed"
            title = _TITLES.get(code, "Error")
            item["errors"] = [
                {
                    "code": code,
                    "title": title,
                    "message": title,
                    "error_data": {"details": _DETAILS.get(code, title)},
                    "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/"
                    "error-codes/",
                }
            ]
        else:
            item["conversation"] = {"id": "CONVERSATION_ID", "origin": {"type": "service"}}
            item["pricing"] = {
                "billable": False,
                "pricing_model": "PMP",
                "category": "service",
                "type": "free_customer_service",
            }
        if to.isdigit():  # the phone number only for a send to it
            item["recipient_id"] = to
        if to and (code is None or not to.isdigit()):
            item["recipient_user_id"] = self._who(to)[1]
        if key is not None:
            item["biz_opaque_callback_data"] = key
        return self.deliver(self._payload(None, statuses=[item]))

    def deliver(self, payload: JsonDict) -> JsonDict:
        """Queue ``payload`` for delivery, re-delivered until answered 200; return it.

        Queuing the same payload again plays Meta re-delivering it.
        """
        self._webhooks.put(payload)
        return payload

    async def post_webhook(
        self,
        payload: JsonDict | bytes,
        *,
        secret: str | None = None,
        signature: str | None = "sign",
        url: str | None = None,
    ) -> int:
        """POST one payload now and return the HTTP status (no retry).

        ``signature="sign"`` signs with ``secret`` (default: the real app secret); None
        sends no signature header; any other string is sent as the header as is.
        """
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "facebookexternalua"}
        if signature == "sign":
            headers["X-Hub-Signature-256"] = sign(secret or self.app_secret, raw)
        elif signature is not None:
            headers["X-Hub-Signature-256"] = signature
        target = url or self.webhook_url
        if target is None:
            raise RuntimeError("webhook_url is not set")
        async with self._webhooks.session.post(target, data=raw, headers=headers) as resp:
            await resp.read()
            return resp.status

    async def verify(
        self, *, token: str | None = None, challenge: str = "1158201444", mode: str = "subscribe"
    ) -> tuple[int, str]:
        """Play Meta's subscription check (GET with ``hub.*``); return (status, body)."""
        if self.webhook_url is None:
            raise RuntimeError("webhook_url is not set")
        params = {
            "hub.mode": mode,
            "hub.challenge": challenge,
            "hub.verify_token": self.verify_token if token is None else token,
        }
        async with self._webhooks.session.get(self.webhook_url, params=params) as resp:
            return resp.status, await resp.text()

    # -- reading what the bot did ------------------------------------------------------------

    def messages_to(self, wa_id: str) -> list[JsonDict]:
        """Every message the bot sent to ``wa_id``, in order."""
        return [m for m in self.sent if m["to"] == str(wa_id)]

    def texts_to(self, wa_id: str) -> list[str]:
        """The text (or interactive body) of every message the bot sent to ``wa_id``."""
        return [m["text"] for m in self.messages_to(wa_id)]

    async def wait_delivered(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until every queued webhook was answered 200."""
        await self.wait_until(lambda: self._webhooks.idle, timeout=timeout)

    # -- Graph API ---------------------------------------------------------------------------

    async def _post_messages(self, request: web.Request) -> web.StreamResponse:
        try:
            self._authorise(request)
            if self._down:
                return self._cut(request)
            body = await self._json(request)
            self.calls.append(("POST", request.path, body))
            if self._fail:
                raise _GraphError.of(*self._fail.pop(0))
            after_taking = self._drop.pop(0) if self._drop else None
            if after_taking is False:
                return self._cut(request)
            record = self._take(body)
        except _GraphError as error:
            return error.response()
        if self.send_statuses:
            key, code = record["biz_opaque_callback_data"], record.get("error")
            self.status(record["message_id"], "sent", key=key, code=code)
        if after_taking:
            return self._cut(request)
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [self._answered(record["to"])],
                "messages": [{"id": record["message_id"]}],
            }
        )

    @staticmethod
    def _answered(to: str) -> JsonDict:
        """The answer's ``contacts[]`` entry: ``wa_id`` for a send to a phone number,
        ``user_id`` for one to a BSUID (Meta, "Business-scoped user IDs")."""
        return {"input": to, "wa_id" if to.isdigit() else "user_id": to}

    async def _get_phone(self, request: web.Request) -> web.StreamResponse:
        try:
            self._authorise(request)
        except _GraphError as error:
            return error.response()
        if self._down:
            return self._cut(request)
        self.calls.append(("GET", request.path, {}))
        return web.json_response(
            {
                "verified_name": "Pairbot Demo",
                "display_phone_number": "+1 555-000-1234",
                "id": self.phone_number_id,
                "quality_rating": "GREEN",
            }
        )

    def _authorise(self, request: web.Request) -> None:
        if request.headers.get("Authorization") != f"Bearer {self.access_token}":
            raise _GraphError(401, 190, "Invalid OAuth access token - Cannot parse access token")
        if request.match_info["phone_id"] != self.phone_number_id:
            raise _GraphError(
                400,
                100,
                "Unsupported post request. Object with ID "
                f"'{request.match_info['phone_id']}' does not exist",
                "GraphMethodException",
            )

    @staticmethod
    async def _json(request: web.Request) -> JsonDict:
        try:
            body = await request.json()
        except ValueError:
            raise _GraphError(400, 100, "(#100) Invalid parameter") from None
        if not isinstance(body, dict):
            raise _GraphError(400, 100, "(#100) Invalid parameter")
        return body

    @staticmethod
    def _cut(request: web.Request) -> web.Response:
        """Close the connection without an answer."""
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=500)  # never reaches the client

    def _take(self, body: JsonDict) -> JsonDict:
        """Validate a send like the Cloud API does; record it; return the record."""
        if body.get("messaging_product") != "whatsapp":
            raise _GraphError(400, 100, "(#100) The parameter messaging_product is required.")
        if body.get("recipient_type", "individual") != "individual":
            raise _invalid("recipient_type")
        to = self._recipient(body)
        kind = body.get("type")
        buttons: list[JsonDict] = []
        if kind == "text":
            text = body.get("text", {}).get("body") if isinstance(body.get("text"), dict) else None
            if not isinstance(text, str) or not 1 <= len(text) <= _MAX_TEXT:
                raise _invalid("text.body must be 1 to 4096 characters")
        elif kind == "interactive":
            text, buttons = self._interactive(body.get("interactive"))
        else:
            raise _GraphError(400, 100, f"(#100) Unsupported message type {kind!r} in fake")
        context = body.get("context")
        reply_to = context.get("message_id") if isinstance(context, dict) else None
        key = body.get("biz_opaque_callback_data")
        if key is not None and (not isinstance(key, str) or len(key) > 512):
            raise _invalid("biz_opaque_callback_data")
        if not self._window_open(to) and self.window_refusal == "answer":
            raise _GraphError.of(400, WINDOW_CLOSED)
        record: JsonDict = {
            "to": to,
            "type": kind,
            "text": text,
            "buttons": buttons,
            "message_id": self._new_id(),
            "context": reply_to,
            "biz_opaque_callback_data": key,
            "payload": copy.deepcopy(body),
        }
        self._messages[record["message_id"]] = record
        if self._window_open(to):
            self.sent.append(record)
        else:  # taken, then refused in a failed status webhook: never shown
            record["error"] = WINDOW_CLOSED
            self.refused.append(record)
        return record

    @staticmethod
    def _recipient(body: JsonDict) -> str:
        """Whom a send is for: ``to`` takes a phone number, ``recipient`` a BSUID; with both,
        ``to`` wins (Meta, "Business-scoped user IDs", Messages API). A BSUID in ``to`` is
        refused here: the reference gives ``to`` phone numbers only."""
        to, recipient = body.get("to"), body.get("recipient")
        if to is not None:
            if not isinstance(to, str) or not to.lstrip("+").isdigit():
                raise _GraphError(400, 100, "(#100) Invalid parameter: to")
            return to.lstrip("+")
        if recipient is not None:
            if not isinstance(recipient, str) or not _BSUID.match(recipient):
                raise _GraphError(400, 100, "(#100) Invalid parameter: recipient")
            return recipient
        raise _GraphError(400, 100, "(#100) The parameter to is required.")

    @staticmethod
    def _interactive(interactive: object) -> tuple[str, list[JsonDict]]:
        if not isinstance(interactive, dict) or interactive.get("type") != "button":
            raise _invalid("interactive.type must be button in this fake")
        body = interactive.get("body")
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str) or not 1 <= len(text) <= _MAX_BODY:
            raise _invalid("interactive.body.text must be 1 to 1024 characters")
        action = interactive.get("action")
        raw = action.get("buttons") if isinstance(action, dict) else None
        if not isinstance(raw, list) or not 1 <= len(raw) <= _MAX_BUTTONS:
            raise _invalid("interactive.action.buttons must hold 1 to 3 buttons")
        buttons = []
        for button in raw:
            reply = button.get("reply") if isinstance(button, dict) else None
            if not isinstance(reply, dict) or button.get("type") != "reply":
                raise _invalid("button type must be reply")
            button_id, title = reply.get("id"), reply.get("title")
            if not isinstance(button_id, str) or not 1 <= len(button_id) <= _MAX_ID:
                raise _invalid("button id must be 1 to 256 characters")
            if not isinstance(title, str) or not 1 <= len(title) <= _MAX_TITLE:
                raise _invalid("button title must be 1 to 20 characters")
            buttons.append({"id": button_id, "title": title})
        if len({b["id"] for b in buttons}) != len(buttons) or len(
            {b["title"] for b in buttons}
        ) != len(buttons):
            raise _invalid("button ids and titles must be unique")
        return text, buttons

    # -- webhook sending ---------------------------------------------------------------------

    async def _deliver(self, payload: JsonDict) -> None:
        """Deliver one queued payload; retry it until a 200 (as Meta does)."""
        delay = 0.05
        while True:
            status: int | None = None
            if self.webhook_url is not None:
                try:
                    status = await self.post_webhook(payload)
                except (aiohttp.ClientError, TimeoutError, OSError):
                    status = None
            self.deliveries.append({"ids": self._ids(payload), "status": status})
            if status == 200 and self._lose_acks == 0:
                return
            if status == 200:
                self._lose_acks -= 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    @staticmethod
    def _ids(payload: JsonDict) -> list[str]:
        ids = []
        for entry in payload.get("entry", []):
            for change in entry.get("changes", []):
                value = change.get("value", {})
                for key in ("messages", "statuses", "message_echoes"):
                    ids += [str(item.get("id")) for item in value.get(key, [])]
        return ids

    # -- payload building --------------------------------------------------------------------

    def _payload(
        self, contacts: list[JsonDict] | None, *, field: str = "messages", **items: list[JsonDict]
    ) -> JsonDict:
        value: JsonDict = {
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": self.display_phone_number,
                "phone_number_id": self.phone_number_id,
            },
        }
        if contacts is not None:
            value["contacts"] = contacts
        value.update(items)
        return {
            "object": "whatsapp_business_account",
            "entry": [{"id": self.waba_id, "changes": [{"field": field, "value": value}]}],
        }

    def _contact(self, sender: str, name: str) -> JsonDict:
        """The ``contacts[]`` entry of ``sender`` (Meta's webhook references: ``wa_id``
        "omitted if user's phone number is unavailable", ``user_id`` the BSUID,
        ``profile.username`` "only included if user has adopted a username")."""
        if sender == self.display_phone_number:
            return {"profile": {"name": name}, "wa_id": sender}
        phone, bsuid, username = self._who(sender)
        profile = {"name": name, **({"username": username} if username else {})}
        return {"profile": profile, **({"wa_id": phone} if phone else {}), "user_id": bsuid}

    def _message(self, sender: str, kind: str, fields: JsonDict) -> JsonDict:
        """A ``messages[]`` item from ``sender``: ``from`` (the phone number, omitted when
        Meta withholds it) and ``from_user_id`` (the BSUID)."""
        ids: JsonDict = {"from": sender}
        if sender != self.display_phone_number:
            phone, bsuid, _ = self._who(sender)
            ids = {"from": phone, "from_user_id": bsuid} if phone else {"from_user_id": bsuid}
        return {
            **ids,
            "id": self._new_id(),
            "timestamp": self._timestamp(),
            "type": kind,
            **fields,
        }

    def _new_id(self) -> str:
        number = self._next_id
        self._next_id += 1
        return f"wamid.HBgLFAKE{number:010d}"

    def _timestamp(self) -> str:
        return str(int(self._clock.now().timestamp()))


WHATSAPP = DemoSpec(
    provider="whatsapp",
    owner_id="15550000001",
    user_id=lambda n: str(15550001000 + n),  # a wa_id is a phone number in digits
    fake=FakeWhatsAppServer,
    config=lambda fake: {
        "access_token": fake.access_token,
        "app_secret": fake.app_secret,
        "verify_token": fake.verify_token,
        "phone_number_id": fake.phone_number_id,
        "api_base_url": fake.base_url,
    },
)
"""WhatsApp's demo people, and the block that points the provider at the fake Graph API."""


class WhatsAppDemo(WebhookDemo[FakeWhatsAppServer], PeopleDemo[FakeWhatsAppServer], spec=WHATSAPP):
    """The WhatsApp fake as :class:`providers.fakebase.DemoPlatform` (people, not API calls)."""

    webhook_path = "/whatsapp/webhook"

    async def start(self) -> None:
        """Start the fake with the owner's 24-hour window open: they wrote to the bot when
        setting it up, as the WhatsApp guide asks, so notices reach them."""
        await super().start()
        self.fake.wrote(self.owner_id)

    # -- contract capabilities (issue 10: providers.ContractPlatform.fake) -------------------
    # Played as Meta's Cloud API reference describes webhooks and messages.

    def dm_written(self, user_id: str, text: str, *, name: str) -> Written:
        """A ``messages`` webhook; the message's ``id`` (wamid) and ``timestamp`` (Unix s)."""
        message = first_message(self.fake.dm(user_id, text, name=name))
        return Written(message["id"], datetime.fromtimestamp(int(message["timestamp"]), UTC))

    async def dm_delivered_twice(self, user_id: str, text: str, *, name: str) -> None:
        """Meta delivers a webhook again, same payload, until it gets a 200 in time (Webhooks:
        "retries ... for up to 7 days"); played as the answered payload posted again."""
        payload = self.fake.dm(user_id, text, name=name)
        await self.fake.wait_delivered()
        self.fake.deliver(payload)
        await self.fake.wait_delivered()

    def group_message(self, user_id: str, text: str, *, name: str) -> None:
        """A text message carrying the ``group_id`` of a group the business number is in."""
        self.fake.group_message("120363025246125486", user_id, text, name=name)

    def own_message(self, text: str) -> None:
        """Both ways the business number's own messages arrive: a ``messages`` item whose
        ``from`` is the business number, and an ``smb_message_echoes`` webhook (a message
        written in the WhatsApp Business app)."""
        self.fake.own_message(text)
        self.fake.echo(self.owner_id, text)

    def non_text_dm(self, user_id: str, *, name: str) -> None:
        """An ``image`` message without caption."""
        self.fake.media(user_id, name=name)

    async def handed_over(self) -> None:
        """Meta posts each webhook until it is answered 200: wait until every one was."""
        await self.fake.wait_delivered()

    def shown_to(self, user_id: str) -> list[str]:
        """The bot's messages to that wa_id (WhatsApp cannot edit: none changes)."""
        return self.fake.texts_to(user_id)

    def buttons_on(self, message_id: str) -> list[str]:
        """The reply buttons' titles (a sent message keeps them for good)."""
        sent = next(m for m in self.fake.sent if m["message_id"] == message_id)
        return [button["title"] for button in sent["buttons"]]

    def press(self, user_id: str, message_id: str, label: str) -> None:
        """An ``interactive`` message of type ``button_reply`` with the button's id, its
        ``context.id`` the message it was on."""
        sent = next(m for m in self.fake.sent if m["message_id"] == message_id)
        found = [b["id"] for b in sent["buttons"] if b["title"] == label]
        if not found:
            raise LookupError(f"message {message_id} shows no button {label!r}")
        self.fake.press_button(user_id, message_id, found[0])
