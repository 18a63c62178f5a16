"""A loopback fake of a BlueBubbles server, for ``pairbot demo`` and the e2e tests.

It serves the REST routes pairbot uses (``GET /api/v1/ping``, ``GET /api/v1/server/info``,
``POST /api/v1/message/text``, ``POST /api/v1/message/query``, ``POST /api/v1/chat/query``) on
127.0.0.1 with BlueBubbles' envelopes (``{"status", "message", "data"}``, errors with
``{"error": {"type", "message"}}``) and its ``?password=`` authentication (a wrong or missing
one answers 401), and it plays BlueBubbles' webhook sender: every event is POSTed as
``{"type": ..., "data": ...}`` to :attr:`FakeBlueBubbles.webhook_url`, one at a time, in
order, never retried on failure (``services/webhookService/index.ts``: one ``axios.post``, a
failure only logged). The payloads follow BlueBubbles' message, handle and chat serializers.
Every message is also kept, as the Mac's ``chat.db`` keeps it, for the message query.

The Mac it plays runs macOS ``macos`` (26 unless told): there Messages names every one-to-one
chat ``any;-;<handle>``; before, ``iMessage;-;<handle>`` or ``SMS;-;<handle>`` by service.

Tests and the demo play people through :meth:`~FakeBlueBubbles.dm`,
:meth:`~FakeBlueBubbles.group_message`, :meth:`~FakeBlueBubbles.own_message`,
:meth:`~FakeBlueBubbles.tapback`, :meth:`~FakeBlueBubbles.attachment_only`,
:meth:`~FakeBlueBubbles.event` (any other event type) and :meth:`~FakeBlueBubbles.redeliver`,
and read what the bot sent from :attr:`~FakeBlueBubbles.sent`. Like the real server, each
message the bot sends comes back as a ``new-message`` webhook with ``isFromMe: true``.

Sends, as ``MessageRouter.sendText`` → ``MessageInterface.sendMessageSync`` do them
(``api/interfaces/messageInterface.ts``): the AppleScript sends to ``chat id "<guid>"``; when
no chat has that guid, ``ActionHandler.sendMessage`` (``api/apple/actions.ts``) falls back to
``sendMessageFallback`` (``api/apple/scripts.ts``), which sends to the handle through the
service named in the guid (``iMessage`` or ``SMS``; nothing for a group or another word):
the message lands in the chat macOS has for that handle. The answer waits for a
``MessagePromise`` (``managers/outgoingMessageManager/messagePromise.ts``) to see the message
in the chat guid asked for (``isSameChatGuid``); a message that landed elsewhere, or that
:meth:`~FakeBlueBubbles.leave_unconfirmed` leaves unseen, is answered after
:attr:`~FakeBlueBubbles.confirm_wait` seconds (120 on the real server) with a 500 "Message
Send Error", though it went out. A ``tempGuid`` is refused with 400 "already queued" only
while its send is in hand (``httpService.sendCache``); once answered, the same ``tempGuid``
sends again.

Outages: :meth:`~FakeBlueBubbles.go_down` makes the REST API answer 503 (``mode="error"``, a
proxy in front of a dead server) or stops listening altogether (``mode="refuse"``) until
:meth:`~FakeBlueBubbles.come_back`; webhooks are held meanwhile unless told otherwise.
:meth:`~FakeBlueBubbles.lose_next_responses` sends a message and then answers 504, as when the
reply is lost on the way back.
"""

from __future__ import annotations

import asyncio
import copy
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
from aiohttp import web

from bot.core.clock import Clock
from providers.fakebase import DemoSpec, NoButtons, WebhookDemo, Written
from providers.fakes_http import LoopbackFake, Webhooks

JsonDict = dict[str, Any]

DEFAULT_PASSWORD = "fake-bluebubbles-password"  # noqa: S105 (the fake's, not a secret)
"""The server password a :class:`FakeBlueBubbles` accepts unless told otherwise."""

WEBHOOK_PATH = "/bluebubbles/webhook"

_GROUP_STYLE = 43
_DM_STYLE = 45


def _envelope(data: object, message: str = "Success", status: int = 200) -> web.Response:
    return web.json_response({"status": status, "message": message, "data": data}, status=status)


_SEND_FAILED = "Failed to send message! See attached message error code."
"""``MessageRouter.sendText``'s error for a send that failed or was never seen to go out."""


async def _json_body(request: web.Request) -> JsonDict:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _page_problem(body: Mapping[str, Any], *, sorts: tuple[str, ...]) -> str | None:
    """What the validators' paging rules refuse (``limit`` 1-1000, ``offset``/``after`` at
    least 0, ``sort`` one of ``sorts``, ``with`` an array), or None."""
    limit = body.get("limit")
    if limit is not None and (not isinstance(limit, int) or not 1 <= limit <= 1000):
        return "The limit must be between 1 and 1000."
    for name in ("offset", "after"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int | float) or value < 0):
            return f"The {name} must be at least 0."
    if body.get("sort") is not None and body.get("sort") not in sorts:
        return "The selected sort is invalid."
    if body.get("with") is not None and not isinstance(body.get("with"), list):
        return "The with must be an array."
    return None


def _error(status: int, kind: str, message: str, error: str) -> web.Response:
    return web.json_response(
        {"status": status, "message": message, "error": {"type": kind, "message": error}},
        status=status,
    )


class FakeBlueBubbles(LoopbackFake):
    """A BlueBubbles server on 127.0.0.1 that one pairbot talks to and tests play people on.

    Use as ``async with FakeBlueBubbles() as fake:`` or call :meth:`start` and :meth:`stop`;
    point the provider at :attr:`base_url` and set :attr:`webhook_url` to its endpoint
    (with ``?password=``). Everything runs on the caller's event loop.

    Attributes:
        password: the only password the REST API accepts.
        webhook_url: where events are POSTed; None holds them until it is set.
        sent: every message that went out from the bot, as ``{"chatGuid", "text", "guid",
            "tempGuid", "method", "received_at"}`` (``received_at``: ``time.perf_counter()``);
            ``chatGuid`` is the chat it landed in.
        confirm_wait: seconds a send that is never seen in its chat waits before its 500.
        send_attempts: every ``/api/v1/message/text`` request that reached the handler, in
            order, as ``(tempGuid, HTTP status answered)``.
        deliveries: every webhook POST made, as ``(event type, message guid or None,
            HTTP status or None when it could not be delivered)``.
        unauthorized: how many REST requests were refused for their password.
    """

    def __init__(
        self,
        password: str = DEFAULT_PASSWORD,
        *,
        port: int = 0,
        clock: Clock | None = None,
        private_api: bool = False,
        icloud: str = "pairbot@icloud.com",
        echo_own_messages: bool = True,
        macos: int = 26,
        confirm_wait: float = 120.0,
    ) -> None:
        super().__init__(port=port, clock=clock, shutdown_timeout=0.5)
        self.password = password
        self.webhook_url: str | None = None
        self.send_attempts: list[tuple[str, int]] = []
        self.deliveries: list[tuple[str, str | None, int | None]] = []
        self.unauthorized = 0
        self.private_api = private_api
        self.icloud = icloud
        self.echo_own_messages = echo_own_messages
        self.macos = macos
        self.confirm_wait = confirm_wait
        # BlueBubbles (axios) opens a connection per POST; so does the fake.
        self._webhooks = Webhooks(
            "FakeBlueBubbles", self._post, ready=self._may_post, timeout=10, force_close=True
        )
        self._down: Literal["error", "refuse"] | None = None
        self._hold_webhooks = False
        self._lose_responses = 0
        self._fail_sends: list[int] = []
        self._unconfirmed = 0
        self._in_flight: set[str] = set()
        self._rowid = 100
        self._handles: dict[str, JsonDict] = {}
        self._chats: dict[str, JsonDict] = {}
        self._db: dict[str, JsonDict] = {}  # message guid -> the message, as chat.db has it

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start serving on 127.0.0.1 (port 0 picks a free port; read :attr:`base_url`)."""
        await self._serve(self._app())
        await self._webhooks.start()

    async def stop(self) -> None:
        """Stop serving and sending webhooks, free the port. Safe to call twice."""
        await self._webhooks.stop()
        await self._http.stop()

    def webhook_for(
        self,
        port: int,
        path: str = WEBHOOK_PATH,
        *,
        host: str = "127.0.0.1",
        password: str | None = None,
    ) -> str:
        """Set and return :attr:`webhook_url` for pairbot's endpoint, with the password."""
        secret = self.password if password is None else password
        self.webhook_url = f"http://{host}:{port}{path}?password={quote(secret, safe='')}"
        self._webhooks.wake()
        return self.webhook_url

    # -- outages -----------------------------------------------------------------------------

    async def go_down(
        self, mode: Literal["error", "refuse"] = "error", *, hold_webhooks: bool = True
    ) -> None:
        """Make the REST API fail until :meth:`come_back`.

        ``error``: every request answers 503. ``refuse``: the server stops listening and drops
        its open connections. With ``hold_webhooks`` (the default) events injected meanwhile
        wait and are delivered on :meth:`come_back`, as BlueBubbles catches up on restart.
        """
        self._down = mode
        self._hold_webhooks = hold_webhooks
        if mode == "refuse":
            await self._http.stop()

    async def come_back(self) -> None:
        """End an outage: serve again (on the same port) and deliver held webhooks."""
        mode, self._down = self._down, None
        self._hold_webhooks = False
        if mode == "refuse":
            await self._http.start(self._app())
        self._webhooks.wake()

    def lose_next_responses(self, n: int) -> None:
        """The next ``n`` sends go out, but their answer is a 504 (lost on the way back)."""
        self._lose_responses = n

    def fail_next_sends(self, n: int, status: int = 500) -> None:
        """The next ``n`` sends are not sent and answer ``status`` (500: iMessage failed)."""
        self._fail_sends = [status] * n

    def leave_unconfirmed(self, n: int) -> None:
        """The next ``n`` sends go out but are never seen in their chat: each is answered 500
        "Message Send Error" after :attr:`confirm_wait` seconds."""
        self._unconfirmed = n

    # -- the Mac's chats ---------------------------------------------------------------------

    def dm_chat_guid(self, address: str, service: str = "iMessage") -> str:
        """The guid of ``address``'s one-to-one chat: the one the Mac has, else the one it
        would make (``any;-;`` on macOS 26, ``<service>;-;`` before)."""
        for guid, chat in self._chats.items():
            if chat["style"] == _DM_STYLE and chat["chatIdentifier"] == address:
                return guid
        return f"any;-;{address}" if self.macos >= 26 else f"{service};-;{address}"

    def existing_chat(self, address: str, service: str = "iMessage") -> str:
        """Give the Mac a one-to-one chat with ``address`` (as after an earlier conversation);
        return its guid."""
        guid = self.dm_chat_guid(address, service)
        self._chat(guid, _DM_STYLE, address, participants=(address,), service=service)
        return guid

    # -- injection: what people (and BlueBubbles) do -----------------------------------------

    def dm(self, address: str, text: str, *, service: str = "iMessage") -> JsonDict:
        """``address`` writes ``text`` to the bot one-to-one; return the queued event."""
        event = self.dm_event(address, text, service=service)
        return self.queue_event(event["type"], event["data"])

    def dm_event(self, address: str, text: str, *, service: str = "iMessage") -> JsonDict:
        """Build the ``new-message`` event :meth:`dm` would send, without sending it."""
        guid = self.existing_chat(address, service)
        data = self._message(text, self._chats[guid], sender=address, service=service)
        return {"type": "new-message", "data": data}

    def group_message(
        self,
        chat_guid: str,
        address: str,
        text: str,
        *,
        participants: tuple[str, ...] = (),
        title: str = "",
    ) -> JsonDict:
        """``address`` writes ``text`` in the group chat ``chat_guid`` (``iMessage;+;chat…``)."""
        chat = self._chat(
            chat_guid,
            _GROUP_STYLE,
            chat_guid.split(";")[-1],
            title=title,
            participants=participants or (address,),
        )
        return self.queue_event("new-message", self._message(text, chat, sender=address))

    def own_message(self, chat_guid: str, text: str) -> JsonDict:
        """A message the bot's own Apple ID sent (``isFromMe: true``, no handle)."""
        address = chat_guid.split(";")[-1]
        chat = self._chat(chat_guid, _DM_STYLE, address, participants=(address,))
        return self.queue_event("new-message", self._message(text, chat, sender=None))

    def tapback(self, address: str, target_guid: str, reaction: str = "love") -> JsonDict:
        """``address`` reacts to a message with a tapback (a ``new-message`` with an
        ``associatedMessageGuid``)."""
        chat = self._chats[self.existing_chat(address)]
        data = self._message(f"Loved \u201c{reaction}\u201d", chat, sender=address)
        data["associatedMessageGuid"] = f"p:0/{target_guid}"
        data["associatedMessageType"] = reaction
        return self.queue_event("new-message", data)

    def attachment_only(self, address: str) -> JsonDict:
        """``address`` sends a photo without text (the text is U+FFFC, the attachment's
        placeholder in ``message.text``)."""
        chat = self._chats[self.existing_chat(address)]
        data = self._message("\ufffc", chat, sender=address)
        data["attachments"] = [
            {
                "guid": str(uuid.uuid4()).upper(),
                "mimeType": "image/jpeg",
                "transferName": "IMG_0001.jpeg",
                "totalBytes": 1024,
            }
        ]
        return self.queue_event("new-message", data)

    def event(self, kind: str, data: Mapping[str, Any]) -> JsonDict:
        """Queue any other webhook event (``typing-indicator``, ``updated-message``,
        ``chat-read-status-changed``, ``group-name-change``, ...)."""
        return self.queue_event(kind, dict(data))

    def queue_event(self, kind: str, data: Mapping[str, Any]) -> JsonDict:
        """Queue ``{"type": kind, "data": data}`` for delivery; return it."""
        event: JsonDict = {"type": kind, "data": copy.deepcopy(dict(data))}
        guid = event["data"].get("guid")
        if kind == "new-message" and isinstance(guid, str):
            self._db[guid] = copy.deepcopy(event["data"])  # stored before it is posted
        self._webhooks.put(event)
        return event

    def redeliver(self, event: Mapping[str, Any]) -> None:
        """Deliver an event again, as BlueBubbles sometimes does."""
        self.queue_event(str(event["type"]), event["data"])

    async def post_webhook(
        self, event: Mapping[str, Any], *, password: str | None, url: str | None = None
    ) -> int:
        """POST ``event`` to pairbot now with ``password`` (None: none at all); return the
        status. For forged and unauthenticated requests; bypasses the outbox."""
        base = (url or self.webhook_url or "").split("?", 1)[0]
        if not base:
            raise RuntimeError("no webhook URL set")
        params = {} if password is None else {"password": password}
        async with self._webhooks.session.post(base, params=params, json=dict(event)) as resp:
            return resp.status

    # -- reading what the bot did ------------------------------------------------------------

    def messages_to(self, chat_guid: str) -> list[str]:
        """Return the texts the bot sent that landed in ``chat_guid``, in order."""
        return [m["text"] for m in self.sent if m["chatGuid"] == chat_guid]

    def messages_to_handle(self, address: str) -> list[str]:
        """Return the texts the bot sent that landed in ``address``'s one-to-one chat."""
        return self.messages_to(self.dm_chat_guid(address))

    def delivered(self) -> int:
        """How many webhook POSTs were answered 2xx."""
        return sum(1 for _, _, status in self.deliveries if status and 200 <= status < 300)

    @property
    def pending_events(self) -> int:
        """Events queued and not yet POSTed."""
        return self._webhooks.pending

    async def wait_delivered(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until every queued event has been POSTed (whatever the answer)."""
        await self.wait_until(lambda: self._webhooks.idle, timeout=timeout)

    # -- REST API ----------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/api/v1/ping", self._ping)
        app.router.add_get("/api/v1/server/info", self._server_info)
        app.router.add_post("/api/v1/message/text", self._send_text)
        app.router.add_post("/api/v1/message/query", self._query_messages)
        app.router.add_post("/api/v1/chat/query", self._query_chats)
        return app

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        if self._down is not None:
            return _error(503, "Server Error", "Service Unavailable", "BlueBubbles is down")
        given = request.query.get("password") or request.query.get("guid")
        if given != self.password:
            self.unauthorized += 1
            return _error(
                401,
                "Authentication Error",
                "You are not authorized to access this resource",
                "Unauthorized",
            )
        response: web.StreamResponse = await handler(request)
        return response

    async def _ping(self, _request: web.Request) -> web.Response:
        return _envelope("pong", "Ping received!")

    async def _server_info(self, _request: web.Request) -> web.Response:
        return _envelope(
            {
                "computer_id": "FakeMac",
                "os_version": f"{self.macos}.0",
                "server_version": "1.9.9",
                "private_api": self.private_api,
                "helper_connected": self.private_api,
                "proxy_service": "dynamic-dns",
                "detected_icloud": self.icloud,
                "detected_imessage": self.icloud,
                "macos_time_sync": None,
                "local_ipv4s": ["127.0.0.1"],
                "local_ipv6s": [],
            },
            "Successfully fetched metadata",
        )

    async def _send_text(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _error(400, "Validation Error", "Bad request", "Body must be JSON")
        temp_guid = body.get("tempGuid")
        chat_guid, text = body.get("chatGuid"), body.get("message")
        method = body.get("method") or "apple-script"
        problem = None
        if not isinstance(chat_guid, str) or not chat_guid:
            problem = "The chatGuid field is required."
        elif not isinstance(text, str):
            problem = "The message field must be present."
        elif method not in ("apple-script", "private-api"):
            problem = "The selected method is invalid."
        elif method == "apple-script" and not temp_guid:
            problem = "A 'tempGuid' is required when sending via AppleScript"
        elif not text:
            problem = "A 'message' is required"
        if problem is not None:
            return self._answered(str(temp_guid), 400, problem)
        key = str(temp_guid or uuid.uuid4())
        if key in self._in_flight:  # validateText: httpService.sendCache
            return self._answered(
                key, 400, f"Message is already queued to be sent! (Temp GUID: {key})"
            )
        if method == "private-api" and not self.private_api:
            return self._answered(key, 500, "iMessage Private API Helper is not connected!")
        if self._fail_sends:
            return self._answered(key, self._fail_sends.pop(0), _SEND_FAILED)
        self._in_flight.add(key)
        try:
            landed = self._landing(str(chat_guid))
            if landed is None:  # the fallback script refuses a group or an unknown service
                return self._answered(key, 500, f"Can't send to chat id {chat_guid}: no such chat")
            await asyncio.sleep(0)  # the AppleScript round trip
            sent = self._record_sent(landed, str(text), key, str(method))
            # MessagePromise.isSame: the message must show up in the chat guid asked for.
            seen = landed == chat_guid and self._unconfirmed == 0
            self._unconfirmed = max(self._unconfirmed - (landed == chat_guid), 0)
            if not seen:
                await asyncio.sleep(self.confirm_wait)  # MessagePromise: "Message send timeout"
                return self._answered(key, 500, _SEND_FAILED)
        finally:
            self._in_flight.discard(key)
        if self._lose_responses > 0:
            self._lose_responses -= 1
            self.send_attempts.append((key, 504))
            return _error(504, "Server Error", "Gateway Timeout", "upstream timed out")
        self.send_attempts.append((key, 200))
        return _envelope({**copy.deepcopy(sent), "tempGuid": key}, "Message sent!")

    def _answered(self, temp_guid: str, status: int, error: str) -> web.Response:
        """Record a send refused with ``status``: a 400 ``Validation Error`` or, from 500 up,
        ``IMessageError``'s "Message Send Error"."""
        self.send_attempts.append((temp_guid, status))
        if status < 500:
            return _error(status, "Validation Error", "Bad request", error)
        return _error(status, "iMessage Error", "Message Send Error", error)

    def _landing(self, chat_guid: str) -> str | None:
        """The chat a send to ``chat_guid`` lands in: that chat if the Mac has it; else, for
        a one-to-one guid naming ``iMessage`` or ``SMS``, the handle's chat (made if need be)
        by ``sendMessageFallback``; else None (the scripts fail)."""
        if chat_guid in self._chats:
            return chat_guid
        service, _, address = chat_guid.partition(";-;")
        if not address or service not in ("iMessage", "SMS"):
            return None
        return self.existing_chat(address, service)

    def _record_sent(self, chat_guid: str, text: str, temp_guid: str, method: str) -> JsonDict:
        data = self._message(text, self._chats[chat_guid], sender=None)
        self._db[data["guid"]] = copy.deepcopy(data)
        self.sent.append(
            {
                "chatGuid": chat_guid,
                "text": text,
                "guid": data["guid"],
                "tempGuid": temp_guid,
                "method": method,
                "received_at": time.perf_counter(),
            }
        )
        if self.echo_own_messages:
            self._webhooks.put({"type": "new-message", "data": copy.deepcopy(data)})
        return data

    async def _query_messages(self, request: web.Request) -> web.Response:
        """``MessageRouter.query`` over what the fake's Mac stored, after
        ``MessageValidator.queryBodyRules``; ``after``/``before`` are inclusive
        (``applyMessageDateQuery``: ``message.date >= :after``); newest first unless
        ``sort`` is ``ASC``. SQL ``where`` clauses are not run by the fake: refused."""
        body = await _json_body(request)
        problem = _page_problem(body, sorts=("ASC", "DESC"))
        if problem is None and body.get("where"):
            problem = "the fake runs no SQL where clauses"
        if problem is not None:
            return _error(400, "Validation Error", "Bad request", problem)
        with_ = {str(w).lower() for w in body.get("with") or []}
        found = list(self._db.values())
        chat_guid = body.get("chatGuid")
        if chat_guid:
            if chat_guid not in self._chats:
                return _envelope([], f"No chat found with GUID: {chat_guid}")
            found = [m for m in found if any(c["guid"] == chat_guid for c in m["chats"])]
        if body.get("after") is not None:
            found = [m for m in found if m["dateCreated"] >= int(body["after"])]
        if body.get("before") is not None:
            found = [m for m in found if m["dateCreated"] <= int(body["before"])]
        found.sort(
            key=lambda m: (m["dateCreated"], m["originalROWID"]),
            reverse=body.get("sort", "DESC") == "DESC",
        )
        offset, limit = int(body.get("offset") or 0), int(body.get("limit") or 100)
        page = []
        for message in found[offset : offset + limit]:
            shown = copy.deepcopy(message)
            if not with_ & {"chat", "chats"}:
                shown.pop("chats", None)
            if not with_ & {"attachment", "attachments"}:
                shown["attachments"] = []
            page.append(shown)
        meta = {"offset": offset, "limit": limit, "total": len(found), "count": len(page)}
        return web.json_response(
            {
                "status": 200,
                "message": "Successfully fetched messages!",
                "data": page,
                "metadata": meta,
            }
        )

    async def _query_chats(self, request: web.Request) -> web.Response:
        """``ChatRouter.query`` after ``ChatValidator.queryRules``: ``guid`` matches one chat
        exactly (``getChats``: ``chat.guid = :guid``); participants come with each chat."""
        body = await _json_body(request)
        problem = _page_problem(body, sorts=("lastmessage",))
        if problem is not None:
            return _error(400, "Validation Error", "Bad request", problem)
        guid = body.get("guid")
        chats = [c for g, c in self._chats.items() if not guid or g == guid]
        chats.sort(key=lambda c: c["originalROWID"], reverse=True)
        offset, limit = int(body.get("offset") or 0), int(body.get("limit") or 1000)
        page = copy.deepcopy(chats[offset : offset + limit])
        meta = {"count": len(page), "total": len(chats), "offset": offset, "limit": limit}
        return web.json_response(
            {"status": 200, "message": "Success", "data": page, "metadata": meta}
        )

    # -- webhooks ----------------------------------------------------------------------------

    def _may_post(self) -> bool:
        """Events go out once pairbot's URL is known, and not while an outage holds them."""
        return bool(self.webhook_url) and not (self._down is not None and self._hold_webhooks)

    async def _post(self, event: JsonDict) -> None:
        """POST one event and record how it went; a failed POST is not retried (BlueBubbles
        does not)."""
        url, status = self.webhook_url, None
        try:
            if url is not None:  # ``_may_post`` saw it set
                async with self._webhooks.session.post(url, json=event) as resp:
                    await resp.read()
                    status = resp.status
        except (aiohttp.ClientError, TimeoutError):
            pass
        data = event.get("data")
        guid = data.get("guid") if isinstance(data, dict) else None
        self.deliveries.append((str(event.get("type")), guid, status))

    # -- payloads (BlueBubbles' serializers) -------------------------------------------------

    def _next_rowid(self) -> int:
        self._rowid += 1
        return self._rowid

    def _handle(self, address: str, service: str = "iMessage") -> JsonDict:
        known = self._handles.get(address)
        if known is None:
            known = self._handles[address] = {
                "originalROWID": len(self._handles) + 1,
                "address": address,
                "service": service,
                "country": "us",
                "uncanonicalizedId": None,
            }
        return dict(known)

    def _chat(
        self,
        guid: str,
        style: int,
        identifier: str,
        *,
        title: str = "",
        participants: tuple[str, ...] = (),
        service: str = "iMessage",
    ) -> JsonDict:
        """The chat ``guid``, made the first time (``ChatSerializer``'s fields)."""
        chat = self._chats.get(guid)
        if chat is None:
            chat = self._chats[guid] = {
                "originalROWID": len(self._chats) + 1,
                "guid": guid,
                "style": style,
                "chatIdentifier": identifier,
                "isArchived": False,
                "displayName": title,
                "participants": [self._handle(a, service) for a in participants],
            }
        return chat

    def _message(
        self, text: str, chat: JsonDict, *, sender: str | None, service: str = "iMessage"
    ) -> JsonDict:
        handle = self._handle(sender, service) if sender is not None else None
        return {
            "originalROWID": self._next_rowid(),
            "guid": str(uuid.uuid4()).upper(),
            "text": text,
            "attributedBody": None,
            "handle": handle,
            "handleId": handle["originalROWID"] if handle else 0,
            "otherHandle": 0,
            "attachments": [],
            "subject": None,
            "error": 0,
            "dateCreated": int(self._clock.now().timestamp() * 1000),
            "dateRead": None,
            "dateDelivered": None,
            "isFromMe": sender is None,
            "hasDdResults": False,
            "isArchived": False,
            "itemType": 0,
            "groupTitle": None,
            "groupActionType": 0,
            "balloonBundleId": None,
            "associatedMessageGuid": None,
            "associatedMessageType": None,
            "expressiveSendStyleId": None,
            "threadOriginatorGuid": None,
            "hasPayloadData": False,
            "chats": [{k: v for k, v in chat.items() if k != "participants"}],
        }


IMESSAGE = DemoSpec(
    provider="imessage",
    owner_id="+15550000001",
    # iMessage handles are phone numbers (+E.164) or e-mail addresses
    user_id=lambda n: f"+1555{2000000 + n}",
    fake=FakeBlueBubbles,
    config=lambda fake: {"server_url": fake.base_url, "password": fake.password},
)
"""iMessage's demo people, and the block that points the provider at the fake."""


# contract (issue 10): NoButtons, as iMessage has none (BlueBubbles' message/text takes none)
class IMessageDemo(NoButtons, WebhookDemo[FakeBlueBubbles], spec=IMESSAGE):
    """The BlueBubbles fake as :class:`providers.DemoPlatform.fake` (people, not API calls)."""

    webhook_path = WEBHOOK_PATH

    def dm(self, user_id: str, text: str, *, name: str) -> None:
        """A one-to-one iMessage to the bot (iMessage carries no display name)."""
        del name
        self.fake.dm(user_id, text)

    async def start(self) -> None:
        """Start the fake, whose Mac has a chat with the owner (who wrote to the bot's Apple
        ID while setting it up, as the guide asks)."""
        await super().start()
        self.fake.existing_chat(self.owner_id)

    def texts_to(self, user_id: str) -> list[str]:
        """What the bot sent to that handle's one-to-one chat."""
        return self.fake.messages_to_handle(user_id)

    # -- contract capabilities (issue 10: providers.ContractPlatform.fake) -------------------
    # Played as bluebubbles-server's webhookService and message serializer shape events.

    def dm_written(self, user_id: str, text: str, *, name: str) -> Written:
        """A ``new-message`` webhook (iMessage carries no display name); the message's
        ``guid`` and ``dateCreated`` (ms)."""
        del name
        data = self.fake.dm(user_id, text)["data"]
        return Written(data["guid"], datetime.fromtimestamp(data["dateCreated"] / 1000, UTC))

    async def dm_delivered_twice(self, user_id: str, text: str, *, name: str) -> None:
        """BlueBubbles posts a ``new-message`` webhook for the same message guid more than
        once (seen when both its Private API helper and its database watcher report the
        message); played as the same event posted twice."""
        del name
        self.fake.redeliver(self.fake.dm(user_id, text))
        await self.fake.wait_delivered()

    def group_message(self, user_id: str, text: str, *, name: str) -> None:
        """A ``new-message`` in an ``iMessage;+;chat…`` group chat (style 43)."""
        del name
        participants = (user_id, self.owner_id)
        self.fake.group_message(
            "iMessage;+;chat000000contract", user_id, text, participants=participants
        )

    def own_message(self, text: str) -> None:
        """A ``new-message`` with ``isFromMe`` true: the bot's Apple ID wrote it elsewhere."""
        self.fake.own_message(self.fake.dm_chat_guid(self.owner_id), text)

    def non_text_dm(self, user_id: str, *, name: str) -> None:
        """A photo alone: the text is just U+FFFC, the attachment placeholder."""
        del name
        self.fake.attachment_only(user_id)

    async def handed_over(self) -> None:
        """BlueBubbles posts each webhook once, never again if it fails: wait until every
        queued event was posted, whatever the answer."""
        await self.fake.wait_delivered()

    def shown_to(self, user_id: str) -> list[str]:
        """The bot's messages in the one-to-one chat (nothing is edited)."""
        return self.texts_to(user_id)
