"""A loopback fake of a signal-cli daemon in HTTP mode, for ``pairbot demo`` and the e2e tests.

It serves what ``signal-cli -a ACCOUNT daemon --http`` serves (``signal-cli-jsonrpc(5)``):

* ``POST /api/v1/rpc``: JSON-RPC 2.0, single or batch; methods ``send`` (to ``recipient`` or
  ``groupId``, with optional ``editTimestamp``), ``version`` and ``listAccounts``; any other
  method answers ``-32601``.
* ``GET /api/v1/events``: Server-Sent Events, one per envelope, written as signal-cli writes
  them (``id:<run>-<n>``, ``event:receive``, ``data:{"envelope": ..., "account": ...}``,
  ``:`` keep-alives). Like signal-cli it keeps the last 1000 events; a client that comes back
  with ``Last-Event-ID`` first gets the events after that id, or every kept event when the
  id is unknown (another run of the daemon). A client without the header gets only new
  events.
* ``GET /api/v1/check``: 200 while the daemon is up.

Tests and the demo play people through the injection API (:meth:`FakeSignalDaemon.dm`,
:meth:`~FakeSignalDaemon.group_message`, :meth:`~FakeSignalDaemon.sync_message`,
:meth:`~FakeSignalDaemon.receipt`, :meth:`~FakeSignalDaemon.typing`,
:meth:`~FakeSignalDaemon.push`) and read what the bot did from ``sent`` and ``calls``.
:meth:`~FakeSignalDaemon.restart` plays a daemon restart: every stream is dropped, the port
refuses connections for a moment, and the daemon comes back as a new run that still holds its
kept events, so a reconnecting client is sent them all again (the duplicates a client must
not handle twice) along with whatever arrived while it was down.
"""

from __future__ import annotations

import asyncio
import copy
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from bot.core.clock import Clock
from providers.fakebase import DemoSpec, FakeDemo, NoButtons, Written, wait_until
from providers.fakes_http import LoopbackFake

JsonDict = dict[str, Any]

DEFAULT_ACCOUNT = "+15550100000"
"""The bot's number on a :class:`FakeSignalDaemon` unless told otherwise."""
DEFAULT_ACCOUNT_UUID = "0b0b0b0b-0000-4000-8000-000000000001"

MAX_EVENTS = 1000
"""Events the daemon keeps for clients that reconnect (signal-cli's number)."""

_PARSE_ERROR, _INVALID_REQUEST, _NO_METHOD, _INVALID_PARAMS = -32700, -32600, -32601, -32602
_USER_ERROR = -1


class _RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True)
class _Client:
    """One open ``/api/v1/events`` stream."""

    queue: asyncio.Queue[tuple[int, str] | None] = field(default_factory=asyncio.Queue)
    response: web.StreamResponse | None = None


class FakeSignalDaemon(LoopbackFake):
    """A signal-cli HTTP daemon on 127.0.0.1 for one account, played by the tests.

    Use as ``async with FakeSignalDaemon() as fake:`` or call :meth:`start` and :meth:`stop`;
    point the provider's ``http_url`` at :attr:`base_url`. Everything runs on the caller's
    event loop.

    Args:
        account: the bot's number.
        multi_account: behave like ``signal-cli daemon`` started without ``-a``: every
            single-account call must then name the account.
        keepalive: seconds between ``:`` keep-alive lines on idle streams.

    Attributes:
        sent: every message the bot sent, in order, as ``{"recipient": [...] | None,
            "groupId": str | None, "message", "timestamp", "editTimestamp": int | None}``.
        calls: every JSON-RPC call in order, as ``(method, params)``.
        connects: the ``Last-Event-ID`` header (or None) of every events stream opened.
    """

    def __init__(
        self,
        account: str = DEFAULT_ACCOUNT,
        *,
        account_uuid: str = DEFAULT_ACCOUNT_UUID,
        port: int = 0,
        multi_account: bool = False,
        keepalive: float = 15.0,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(port=port, clock=clock, shutdown_timeout=0.5)
        self.account = account
        self.account_uuid = account_uuid
        self.calls: list[tuple[str, JsonDict]] = []
        self.connects: list[str | None] = []
        self._multi = multi_account
        self._keepalive = keepalive
        self._events: list[tuple[int, str]] = []
        self._next_seq = 1
        self._run = 1
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

    async def stop(self) -> None:
        """Drop every stream, stop serving and free the port. Safe to call twice."""
        self._drop_clients()
        await self._http.stop()

    @property
    def up(self) -> bool:
        """Whether the daemon accepts connections now."""
        return self._http.listening

    @property
    def streams(self) -> int:
        """How many event streams are open now."""
        return len(self._clients)

    async def go_down(self) -> None:
        """Play the daemon dying: drop every stream and refuse connections until
        :meth:`come_up`. Envelopes pushed meanwhile are kept for after."""
        self._drop_clients()
        await self._http.unlisten()
        # A dead daemon takes its keep-alive connections with it.
        for transport in self._transports:
            transport.close()
        self._transports.clear()

    async def come_up(self, *, new_run: bool = True) -> None:
        """Accept connections again on the same port. With ``new_run`` (a restart), the
        event ids start a new run, so a client's old ``Last-Event-ID`` is unknown and it is
        sent every kept event again."""
        if not self._http.serving or self._http.listening:
            raise RuntimeError("FakeSignalDaemon is not down")
        if new_run:
            self._run += 1
        await self._http.listen()

    async def restart(self, *, down_for: float = 0.2) -> None:
        """:meth:`go_down`, wait ``down_for`` seconds, :meth:`come_up` as a new run."""
        await self.go_down()
        await asyncio.sleep(down_for)
        await self.come_up()

    def drop_streams(self) -> None:
        """Cut every open event stream (a network blip); the daemon stays up."""
        self._drop_clients()

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
        """Person ``uuid`` sends ``text`` to the bot 1:1; return the pushed event payload."""
        ts = timestamp if timestamp is not None else self._timestamp()
        return self.push(self._envelope(uuid, name, number, ts, dataMessage=_data(ts, text)))

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

    def push(self, envelope: JsonDict, *, account: str | None = None) -> JsonDict:
        """Deliver any envelope as the daemon does (kept, and sent to every open stream);
        return the event payload ``{"envelope": ..., "account": ...}``."""
        payload = {"envelope": copy.deepcopy(envelope), "account": account or self.account}
        self._emit(json.dumps(payload, separators=(",", ":")))
        return payload

    def replay(self, payload: JsonDict) -> None:
        """Deliver an already delivered event payload again, as a new event."""
        self._emit(json.dumps(payload, separators=(",", ":")))

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
        if wanted is not None and wanted not in (self.account, self.account_uuid):
            return web.Response(status=400, text="Specified account does not exist")
        last_id = request.headers.get("Last-Event-ID")
        self.connects.append(last_id)
        client = _Client()
        if last_id is not None:
            after = self._sequence(last_id)
            for event in self._events:
                if event[0] > after:
                    client.queue.put_nowait(event)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        client.response = response
        self._clients.append(client)
        try:
            await response.prepare(request)
            while True:
                try:
                    item = await asyncio.wait_for(client.queue.get(), self._keepalive)
                except TimeoutError:
                    await response.write(b":\n")
                    continue
                if item is None:
                    break
                seq, data = item
                await response.write(
                    f"id:{self._run}-{seq}\nevent:receive\ndata:{data}\n\n".encode()
                )
        except ConnectionResetError:
            pass  # the client went away
        finally:
            if client in self._clients:
                self._clients.remove(client)
            # A dropped stream is cut, not ended: the client sees the connection go.
            if request.transport is not None:
                request.transport.close()
        return response

    async def _rpc(self, request: web.Request) -> web.Response:
        self._track(request)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response(_error(None, _PARSE_ERROR, "Parse error"))
        if isinstance(body, list):
            answers = [self._answer(item) for item in body]
            return web.json_response([a for a in answers if a is not None])
        answer = self._answer(body)
        if answer is None:
            return web.Response(status=200)
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
            return {"version": "0.13.22"}
        if method == "listAccounts":
            return [{"number": self.account}]
        if method != "send":
            raise _RpcError(_NO_METHOD, "Method not implemented")
        account = params.pop("account", None)
        if account is not None and account not in (self.account, self.account_uuid):
            raise _RpcError(_INVALID_PARAMS, "Specified account does not exist")
        if account is None and self._multi:
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

    def _emit(self, data: str) -> None:
        event = (self._next_seq, data)
        self._next_seq += 1
        self._events.append(event)
        del self._events[:-MAX_EVENTS]
        for client in self._clients:
            client.queue.put_nowait(event)

    def _drop_clients(self) -> None:
        for client in self._clients:
            client.queue.put_nowait(None)
        self._clients.clear()

    def _sequence(self, event_id: str) -> int:
        run, _, seq = event_id.partition("-")
        if run == str(self._run) and seq.isdigit():
            return int(seq)
        return 0  # unknown (another run): every kept event

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


def _data(ts: int, text: str) -> JsonDict:
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
    fake=FakeSignalDaemon,
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
        stamp = self.fake._timestamp()
        attachment = {"contentType": "image/jpeg", "id": "a1", "size": 1024}
        data = {"timestamp": stamp, "message": None, "attachments": [attachment]}
        self.fake.push(self.fake._envelope(user_id, name, None, stamp, dataMessage=data))

    async def handed_over(self) -> None:
        """Every event emitted so far taken off each open stream's queue to be written."""
        await wait_until(lambda: all(c.queue.empty() for c in self.fake._clients))

    def shown_to(self, user_id: str) -> list[str]:
        """The bot's messages to that person; a message sent with ``editTimestamp`` replaces
        the one it names, as Signal clients show an edit."""
        shown: dict[int, str] = {}
        for sent in self.fake.sent:
            if sent["recipient"] and user_id in sent["recipient"]:
                shown[sent["editTimestamp"] or sent["timestamp"]] = sent["message"]
        return list(shown.values())
