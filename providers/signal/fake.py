"""A loopback fake of a signal-cli daemon in HTTP mode, for ``pairbot demo`` and the e2e tests.

It serves what ``signal-cli [-a ACCOUNT] daemon --http`` serves (``signal-cli-jsonrpc(5)``;
the source cited is AsamK/signal-cli, ``src/main/java/org/asamk/signal/``):

* ``POST /api/v1/rpc``: JSON-RPC 2.0, single or batch; methods ``send`` (to ``recipient`` or
  ``groupId``, with optional ``editTimestamp``), ``version`` and ``listAccounts``; any other
  method answers ``-32601``. Started with ``-a`` (one account) the daemon ignores an
  ``account`` param and answers ``listAccounts`` with ``-32601``, since that is a
  multi-account command (``jsonrpc/SignalJsonRpcCommandHandler.handleRequest``); started
  without, ``listAccounts`` lists the numbers it serves and an unknown ``account`` is
  ``-32602 Specified account does not exist``.
* ``GET /api/v1/events``: Server-Sent Events, one per envelope, written as signal-cli writes
  them: ``event:receive``, ``data:{"envelope": ..., "account": <the account's number>}``, no
  ``id`` (``http/HttpServerHandler.subscribeReceiveHandlers``, ``json/
  JsonReceiveMessageHandler``: ``account`` is ``m.getSelfNumber()``), and a ``:`` keep-alive
  after every quiet interval. There is no buffer and ``Last-Event-ID`` is not read: an event
  is written to the streams subscribed when the daemon receives it, and to no other.
* ``GET /api/v1/check``: 200 while the daemon is up.

When a message reaches the daemon is its ``receive_mode`` (``commands/DaemonCommand``,
``manager/internal/ManagerImpl.addReceiveHandler``/``removeReceiveHandler``):

* ``on-start`` (signal-cli's default): the daemon receives from Signal's server from its
  start, stream or not; what arrives while no stream is subscribed goes to the daemon's own
  handler (its stdout) and is acknowledged to the server: gone for the bot (:attr:`unseen`).
* ``on-connection``: it receives only while a stream is subscribed; meanwhile messages wait on
  Signal's server and come to the next stream that subscribes.

Either way, while the daemon is down messages wait on the server; one that comes back in
``on-start`` mode receives them at once, before any client can subscribe (:attr:`unseen`).

A stream the client closed stays subscribed until a write to it fails: the daemon's stream
handler waits on its keep-alive timer and learns of a closed connection only from the
``IOException`` of ``sendEvent``/``sendKeepAlive``. Over TCP the first write after the client
closed still succeeds (the client's answer is a reset) and the second fails, so the first two
writes after a client went away are lost: an envelope among them is in :attr:`unseen`.

Tests and the demo play people through the injection API (:meth:`FakeSignalDaemon.dm`,
:meth:`~FakeSignalDaemon.attachment`, :meth:`~FakeSignalDaemon.sticker`,
:meth:`~FakeSignalDaemon.group_message`, :meth:`~FakeSignalDaemon.sync_message`,
:meth:`~FakeSignalDaemon.receipt`, :meth:`~FakeSignalDaemon.typing`,
:meth:`~FakeSignalDaemon.push`) and read what the bot did from ``sent`` and ``calls``.
:meth:`~FakeSignalDaemon.go_down`, :meth:`~FakeSignalDaemon.come_up` and
:meth:`~FakeSignalDaemon.restart` play the daemon dying and starting again,
:meth:`~FakeSignalDaemon.drop_streams` the daemon ending its streams.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal

from aiohttp import web

from bot.core.clock import Clock
from providers.fakebase import DemoSpec, FakeDemo, NoButtons, Written, wait_until
from providers.fakes_http import LoopbackFake

JsonDict = dict[str, Any]

ReceiveMode = Literal["on-start", "on-connection"]
"""``--receive-mode`` of ``signal-cli daemon`` (``manual`` acts as ``on-connection`` over
HTTP: the SSE handler subscribes whatever the mode)."""

DEFAULT_ACCOUNT = "+15550100000"
"""The bot's number on a :class:`FakeSignalDaemon` unless told otherwise."""
DEFAULT_ACCOUNT_UUID = "0b0b0b0b-0000-4000-8000-000000000001"

_PARSE_ERROR, _INVALID_REQUEST, _NO_METHOD, _INVALID_PARAMS = -32700, -32600, -32601, -32602
_USER_ERROR = -1
_KEEPALIVE = object()


class _RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True)
class _Client:
    """One subscribed ``/api/v1/events`` stream, as the daemon sees it."""

    queue: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    writes_after_close: int = 0


class FakeSignalDaemon(LoopbackFake):
    """A signal-cli HTTP daemon on 127.0.0.1, played by the tests.

    Use as ``async with FakeSignalDaemon() as fake:`` or call :meth:`start` and :meth:`stop`;
    point the provider's ``http_url`` at :attr:`base_url`. Everything runs on the caller's
    event loop.

    Args:
        account: the bot's number.
        account_uuid: the bot's ACI.
        multi_account: behave like ``signal-cli daemon`` started without ``-a``.
        others: further numbers a multi-account daemon serves (nobody writes to them here).
        receive_mode: the daemon's ``--receive-mode`` (see the module's doc).
        keepalive: seconds between ``:`` keep-alive lines on quiet streams (signal-cli: 15).
        version: what ``version`` answers.

    Attributes:
        sent: every message the bot sent, in order, as ``{"recipient": [...] | None,
            "groupId": str | None, "message", "timestamp", "editTimestamp": int | None}``.
        calls: every JSON-RPC call in order, as ``(method, params)``.
        opened: how many event streams were opened.
        unseen: every event payload the daemon received and acknowledged with no open stream
            to write it to (or wrote into a closed one): lost for the bot.
    """

    def __init__(
        self,
        account: str = DEFAULT_ACCOUNT,
        *,
        account_uuid: str = DEFAULT_ACCOUNT_UUID,
        port: int = 0,
        multi_account: bool = False,
        others: Sequence[str] = (),
        receive_mode: ReceiveMode = "on-start",
        keepalive: float = 15.0,
        version: str = "0.13.22",
        clock: Clock | None = None,
    ) -> None:
        super().__init__(port=port, clock=clock, shutdown_timeout=0.5)
        self.account = account
        self.account_uuid = account_uuid
        self.receive_mode: ReceiveMode = receive_mode
        self.version = version
        self.calls: list[tuple[str, JsonDict]] = []
        self.opened = 0
        self.unseen: list[JsonDict] = []
        self._multi = multi_account
        self._others = tuple(others)
        self._keepalive = keepalive
        self._held: list[str] = []  # waiting on Signal's server
        self._clients: list[_Client] = []
        self._transports: set[asyncio.BaseTransport] = set()
        self._last_ts = 0
        self._fail_sends = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start serving on 127.0.0.1 (port 0 picks a free port; read :attr:`base_url`)."""
        app = web.Application()
        app.router.add_post("/api/v1/rpc", self._rpc)
        app.router.add_get("/api/v1/events", self._stream)
        app.router.add_get("/api/v1/check", self._check)
        await self._serve(app)
        self._started_receiving()

    async def stop(self) -> None:
        """End every stream, stop serving and free the port. Safe to call twice."""
        await self._end_streams()
        await self._http.stop()

    @property
    def up(self) -> bool:
        """Whether the daemon accepts connections now."""
        return self._http.listening

    @property
    def streams(self) -> int:
        """How many event streams the daemon has subscribed now (one the client closed
        counts until a write to it failed)."""
        return len(self._clients)

    @property
    def held(self) -> int:
        """How many messages wait on Signal's server for the daemon to receive them."""
        return len(self._held)

    @property
    def written(self) -> bool:
        """Whether every event given to a subscribed stream was written (or found it gone)."""
        return all(c.queue.empty() for c in self._clients)

    async def go_down(self) -> None:
        """Play the daemon dying: end every stream and refuse connections until
        :meth:`come_up`. Messages sent meanwhile wait on Signal's server."""
        await self._end_streams()
        await self._http.unlisten()
        # A dead daemon takes its keep-alive connections with it.
        for transport in self._transports:
            transport.close()
        self._transports.clear()

    async def come_up(self) -> None:
        """Accept connections again on the same port, as a new run of the daemon: in
        ``on-start`` mode it receives what waited on the server at once, with no stream
        subscribed yet."""
        if not self._http.serving or self._http.listening:
            raise RuntimeError("FakeSignalDaemon is not down")
        await self._http.listen()
        self._started_receiving()

    async def restart(self, *, down_for: float = 0.2) -> None:
        """:meth:`go_down`, wait ``down_for`` seconds, :meth:`come_up`."""
        await self.go_down()
        await asyncio.sleep(down_for)
        await self.come_up()

    async def drop_streams(self) -> None:
        """End every open event stream (the daemon closes them); it stays up."""
        await self._end_streams()

    # -- injection: what people do -----------------------------------------------------------

    def dm(
        self,
        uuid: str,
        text: str,
        *,
        name: str = "",
        number: str | None = None,
        timestamp: int | None = None,
    ) -> JsonDict:
        """Person ``uuid`` sends ``text`` to the bot 1:1; return the event payload."""
        ts = timestamp if timestamp is not None else self._timestamp()
        return self.push(self._envelope(uuid, name, number, ts, dataMessage=_data(ts, text)))

    def attachment(
        self,
        uuid: str,
        *,
        caption: str | None = None,
        name: str = "",
        content_type: str = "image/jpeg",
    ) -> JsonDict:
        """Person ``uuid`` sends the bot a file 1:1 (a photo unless told), with ``caption``
        as the message's text or none (``JsonDataMessage``, ``JsonAttachment``)."""
        ts = self._timestamp()
        data = _data(ts, caption)
        data["attachments"] = [
            {
                "contentType": content_type,
                "filename": None,
                "id": f"att{ts}",
                "size": 48_213,
                "width": 640 if content_type.startswith("image/") else None,
                "height": 480 if content_type.startswith("image/") else None,
                "caption": None,
                "uploadTimestamp": ts - 20,
            }
        ]
        return self.push(self._envelope(uuid, name, None, ts, dataMessage=data))

    def sticker(self, uuid: str, *, name: str = "") -> JsonDict:
        """Person ``uuid`` sends the bot a sticker 1:1: no message (``JsonSticker``)."""
        ts = self._timestamp()
        data = _data(ts, None)
        data["sticker"] = {"packId": "9acc9e8aba563d26a4994e69263e3b25", "stickerId": 3}
        return self.push(self._envelope(uuid, name, None, ts, dataMessage=data))

    def group_message(
        self, group_id: str, uuid: str, text: str, *, name: str = "", number: str | None = None
    ) -> JsonDict:
        """Person ``uuid`` writes ``text`` in a group the bot is in."""
        ts = self._timestamp()
        data = _data(ts, text)
        data["groupInfo"] = {
            "groupId": group_id,
            "groupName": "Group",
            "revision": 1,
            "type": "DELIVER",
        }
        return self.push(self._envelope(uuid, name, number, ts, dataMessage=data))

    def own_message(self, text: str) -> JsonDict:
        """A data message whose source is the bot's own account."""
        ts = self._timestamp()
        return self.push(
            self._envelope(self.account_uuid, "Bot", self.account, ts, dataMessage=_data(ts, text))
        )

    def sync_message(self, text: str, *, destination: str, device: int = 2) -> JsonDict:
        """The account's owner writes ``text`` to ``destination`` from a linked device (a
        ``syncMessage.sentMessage``, as signal-cli reports it to every other device)."""
        ts = self._timestamp()
        sent = {
            "destination": destination,
            "destinationUuid": destination,
            "timestamp": ts,
            "message": text,
            "expiresInSeconds": 0,
            "viewOnce": False,
        }
        envelope = self._envelope(
            self.account_uuid, "Bot", self.account, ts, syncMessage={"sentMessage": sent}
        )
        envelope["sourceDevice"] = device
        return self.push(envelope)

    def receipt(self, uuid: str, timestamps: list[int], *, kind: str = "DELIVERY") -> JsonDict:
        """``uuid``'s phone reports ``kind`` (DELIVERY, READ, VIEWED) for bot messages."""
        ts = self._timestamp()
        receipt = {
            "when": ts,
            "isDelivery": kind == "DELIVERY",
            "isRead": kind == "READ",
            "isViewed": kind == "VIEWED",
            "timestamps": list(timestamps),
        }
        return self.push(self._envelope(uuid, "", None, ts, receiptMessage=receipt))

    def typing(self, uuid: str, *, action: str = "STARTED") -> JsonDict:
        """``uuid`` starts (or stops) typing to the bot."""
        ts = self._timestamp()
        return self.push(
            self._envelope(uuid, "", None, ts, typingMessage={"action": action, "timestamp": ts})
        )

    def push(self, envelope: JsonDict) -> JsonDict:
        """Signal's server hands the daemon any envelope for the account; return the event
        payload ``{"envelope": ..., "account": <the account's number>}``."""
        payload = {"envelope": copy.deepcopy(envelope), "account": self.account}
        self._receive(json.dumps(payload, separators=(",", ":")))
        return payload

    def replay(self, payload: JsonDict) -> None:
        """Hand the daemon an event payload as it is (again, or in another shape)."""
        self._receive(json.dumps(payload, separators=(",", ":")))

    def fail_next_sends(self, n: int) -> None:
        """Make the next ``n`` ``send`` calls fail with signal-cli's user error (-1)."""
        self._fail_sends = n

    # -- reading what the bot did ------------------------------------------------------------

    def messages_to(self, recipient: str) -> list[str]:
        """Texts the bot sent 1:1 to ``recipient`` (an ACI or number), edits included."""
        want = recipient.lower()
        return [
            m["message"]
            for m in self.sent
            if m["recipient"] and want in (r.lower() for r in m["recipient"])
        ]

    def messages_to_group(self, group_id: str) -> list[str]:
        """Texts the bot sent to a group."""
        return [m["message"] for m in self.sent if m["groupId"] == group_id]

    # -- receiving ---------------------------------------------------------------------------

    def _receive(self, data: str) -> None:
        """A message for the account reaches Signal's server: the daemon takes it now and
        writes it to every subscribed stream, or it waits on the server, or the daemon takes
        it with nobody to write it to."""
        if not self.up or (not self._clients and self.receive_mode == "on-connection"):
            self._held.append(data)
        elif not self._clients:
            self.unseen.append(json.loads(data))
        else:
            for client in self._clients:
                client.queue.put_nowait(data)

    def _started_receiving(self) -> None:
        """The daemon (re)started: in ``on-start`` mode it receives at once."""
        if self.receive_mode == "on-start":
            held, self._held = self._held, []
            self.unseen.extend(json.loads(data) for data in held)

    async def _end_streams(self) -> None:
        clients, self._clients = self._clients, []
        for client in clients:
            client.queue.put_nowait(None)
        for client in clients:
            try:
                await asyncio.wait_for(client.done.wait(), 1.0)
            except TimeoutError:
                pass

    # -- HTTP --------------------------------------------------------------------------------

    def _track(self, request: web.Request) -> None:
        if request.transport is not None:
            self._transports.add(request.transport)

    async def _check(self, request: web.Request) -> web.Response:
        self._track(request)
        return web.Response(status=200)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        self._track(request)
        wanted = request.query.get("account")
        # HttpServerHandler.getManagerFromQuery: started with -a, the query is not read;
        # without, an account it does not serve is a bare 400.
        if self._multi and wanted and wanted not in (self.account, self.account_uuid):
            return web.Response(status=400)
        self.opened += 1
        client = _Client()
        held, self._held = self._held, []  # on-connection: receiving starts now
        for data in held:
            client.queue.put_nowait(data)
        self._clients.append(client)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        try:
            await response.prepare(request)
            while True:
                try:
                    item: str | object | None = await asyncio.wait_for(
                        client.queue.get(), self._keepalive
                    )
                except TimeoutError:
                    item = _KEEPALIVE
                if item is None or not await self._write(request, response, client, item):
                    break
        finally:
            if client in self._clients:
                self._clients.remove(client)
            while not client.queue.empty():  # taken from the server, written nowhere
                if isinstance(left := client.queue.get_nowait(), str):
                    self.unseen.append(json.loads(left))
            client.done.set()
            if request.transport is not None:
                request.transport.close()  # a dropped stream is cut, not ended
        return response

    async def _write(
        self, request: web.Request, response: web.StreamResponse, client: _Client, item: object
    ) -> bool:
        """Write one event or keep-alive; False once the daemon learns the client is gone."""
        chunk = b":\n" if item is _KEEPALIVE else f"event:receive\ndata:{item}\n\n".encode()
        transport = request.transport
        if transport is not None and not transport.is_closing():
            try:
                await response.write(chunk)
                return True
            except ConnectionResetError:
                pass
        # The client went away: this write is lost, and the daemon notices at the second.
        if isinstance(item, str):
            self.unseen.append(json.loads(item))
        client.writes_after_close += 1
        return client.writes_after_close < 2

    async def _rpc(self, request: web.Request) -> web.Response:
        self._track(request)
        if not request.content_type.startswith("application/json"):
            return web.Response(status=415)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response(_error(None, _PARSE_ERROR, "Parse error"))
        if isinstance(body, list):
            answers = [self._answer(item) for item in body]
            return web.json_response([a for a in answers if a is not None])
        answer = self._answer(body)
        if answer is None:
            return web.Response(status=201)  # a notification: no answer
        return web.json_response(answer)

    def _answer(self, request: object) -> JsonDict | None:
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return _error(None, _INVALID_REQUEST, "method field must be set")
        method: str = request["method"]
        req_id = request.get("id")
        params = request.get("params") or {}
        if not isinstance(params, dict):
            return _error(req_id, _INVALID_PARAMS, "params must be an object")
        self.calls.append((method, copy.deepcopy(params)))
        try:
            result = self._dispatch(method, dict(params))
        except _RpcError as exc:
            return _error(req_id, exc.code, exc.message)
        if req_id is None:
            return None  # a notification gets no answer
        return {"jsonrpc": "2.0", "result": result, "id": req_id}

    def _dispatch(self, method: str, params: JsonDict) -> object:
        if method == "version":
            return {"version": self.version}
        if method == "listAccounts" and self._multi:
            return [{"number": number} for number in (self.account, *self._others)]
        if method != "send":  # listAccounts too, on a daemon started with -a
            raise _RpcError(_NO_METHOD, "Method not implemented")
        account = params.pop("account", None)
        if self._multi:
            served = (self.account, self.account_uuid, *self._others)
            if account is not None and account not in served:
                raise _RpcError(_INVALID_PARAMS, "Specified account does not exist")
            if account is None and self._others:
                raise _RpcError(_INVALID_PARAMS, "Method requires valid account parameter")
        return self._send(params)

    def _send(self, params: JsonDict) -> JsonDict:
        message = params.get("message")
        if not isinstance(message, str) or not message:
            raise _RpcError(_USER_ERROR, "No message given")
        recipients = params.get("recipient")
        if isinstance(recipients, str):
            recipients = [recipients]
        group = params.get("groupId")
        if bool(recipients) == bool(group):
            raise _RpcError(_USER_ERROR, "Specify either recipients or a group id")
        if self._fail_sends > 0:
            self._fail_sends -= 1
            raise _RpcError(_USER_ERROR, "Failed to send message")
        edit = params.get("editTimestamp")
        ts = self._timestamp()
        self.sent.append(
            {
                "recipient": list(recipients) if recipients else None,
                "groupId": group,
                "message": message,
                "timestamp": ts,
                "editTimestamp": edit if isinstance(edit, int) else None,
            }
        )
        results = [
            {"recipientAddress": {"uuid": r, "number": None}, "type": "SUCCESS"}
            for r in (recipients or [])
        ]
        return {"timestamp": ts, "results": results}

    # -- helpers -----------------------------------------------------------------------------

    def _timestamp(self) -> int:
        """Milliseconds now, strictly increasing (Signal timestamps double as message ids)."""
        now = int(self._clock.now().timestamp() * 1000)
        self._last_ts = max(now, self._last_ts + 1)
        return self._last_ts

    def _envelope(
        self, uuid: str, name: str, number: str | None, ts: int, **content: JsonDict
    ) -> JsonDict:
        # signal-cli writes the ACI with Java's UUID.toString(), always in lower case, however
        # it was written to it (JsonMessageEnvelope: sourceAddress.uuid().map(UUID::toString)).
        aci = uuid.lower()
        envelope: JsonDict = {
            "source": number or aci,
            "sourceNumber": number,
            "sourceUuid": aci,
            "sourceName": name or None,
            "sourceDevice": 1,
            "timestamp": ts,
            "serverReceivedTimestamp": ts + 5,
            "serverDeliveredTimestamp": ts + 9,
        }
        envelope.update(content)
        return envelope


def _data(ts: int, text: str | None) -> JsonDict:
    return {"timestamp": ts, "message": text, "expiresInSeconds": 0, "viewOnce": False}


def _error(req_id: object, code: int, message: str) -> JsonDict:
    return {
        "jsonrpc": "2.0",
        "error": {"code": code, "message": message, "data": None},
        "id": req_id,
    }


SIGNAL = DemoSpec(
    provider="signal",
    owner_id="0a11ce00-0000-4000-8000-00000000000a",
    user_id=lambda n: f"5e000000-0000-4000-8000-{n:012d}",  # an ACI, a UUID
    fake=partial(FakeSignalDaemon, receive_mode="on-connection"),  # as the guide says to run it
    config=lambda fake: {"http_url": fake.base_url, "account": fake.account},
)
"""Signal's demo people, and the block that points the provider at the fake daemon."""


# contract (issue 10): NoButtons, as signal-cli-jsonrpc(5)'s ``send`` takes no buttons
class SignalDemo(NoButtons, FakeDemo[FakeSignalDaemon], spec=SIGNAL):
    """The Signal fake as :class:`providers.DemoPlatform.fake` (people, not API calls)."""

    def dm(self, user_id: str, text: str, *, name: str) -> None:
        """A 1:1 message to the bot."""
        self.fake.dm(user_id, text, name=name)

    def texts_to(self, user_id: str) -> list[str]:
        """What the bot sent to that person."""
        return self.fake.messages_to(user_id)

    # -- contract capabilities (issue 10: providers.ContractPlatform.fake) -------------------
    # Played as signal-cli-jsonrpc(5) and signal-cli's JsonReceiveMessageHandler shape events.

    def dm_written(self, user_id: str, text: str, *, name: str) -> Written:
        """A ``dataMessage`` envelope; Signal's message identity is the sender plus the
        ``timestamp`` (ms) the sender gave it."""
        stamp = self.fake.dm(user_id, text, name=name)["envelope"]["timestamp"]
        return Written(str(stamp), datetime.fromtimestamp(stamp / 1000, UTC))

    async def dm_delivered_twice(self, user_id: str, text: str, *, name: str) -> None:
        """The Signal service sends an envelope again until the account's device acknowledges
        it, and signal-cli emits it again (same sender and timestamp); played as the same
        event payload sent twice down the stream."""
        self.fake.replay(self.fake.dm(user_id, text, name=name))
        await self.handed_over()

    def group_message(self, user_id: str, text: str, *, name: str) -> None:
        """A ``dataMessage`` with ``groupInfo`` (a group the account is in)."""
        self.fake.group_message("Y29udHJhY3QtZ3JvdXAtaWQ=", user_id, text, name=name)

    def own_message(self, text: str) -> None:
        """Both ways the account's own messages arrive: a ``syncMessage.sentMessage`` from a
        linked device, and a ``dataMessage`` whose source is the account itself."""
        self.fake.sync_message(text, destination=self.owner_id)
        self.fake.own_message(text)

    def non_text_dm(self, user_id: str, *, name: str) -> None:
        """A ``dataMessage`` with an attachment and no ``message``."""
        self.fake.attachment(user_id, name=name)

    async def handed_over(self) -> None:
        """Every event the daemon took written to the streams it had (or found them gone);
        what it did not take waits on Signal's server."""
        await wait_until(lambda: self.fake.written)

    def shown_to(self, user_id: str) -> list[str]:
        """The bot's messages to that person; a message sent with ``editTimestamp`` replaces
        the one it names, as Signal clients show an edit."""
        shown: dict[int, str] = {}
        for sent in self.fake.sent:
            if sent["recipient"] and user_id in sent["recipient"]:
                shown[sent["editTimestamp"] or sent["timestamp"]] = sent["message"]
        return list(shown.values())
