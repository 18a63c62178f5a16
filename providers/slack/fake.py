"""A loopback fake of Slack for ``pairbot demo`` and the e2e tests: the Web API, the Socket
Mode websocket, and the Events API sender, on 127.0.0.1.

:class:`FakeSlackServer` serves ``/api/{method}`` (GET query, POST form or JSON, token in the
``Authorization`` header or the ``token`` field) with Slack's shapes (``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}``; 429 with ``Retry-After`` when told to rate-limit), so the
real slack-sdk / slack-bolt run against it unmodified: only the API root changes.
``apps.connections.open`` (app token only) hands out a one-time ``ws://127.0.0.1`` URL; the
websocket there says ``hello``, pushes ``events_api`` / ``interactive`` / ``slash_commands``
envelopes and records the client's ``{"envelope_id": ...}`` acks. Like Slack, it re-sends an
envelope that was not acked when a new connection opens (with ``retry_attempt`` raised), and
it can ask for a reconnect (a ``disconnect`` message) or drop the socket. When
:attr:`FakeSlackServer.events_url` is set it POSTs the same payloads to the bot over HTTP
instead, signed as Slack signs them (``X-Slack-Signature: v0=HMAC-SHA256("v0:{ts}:{body}")``).

Tests and the demo play the people through :meth:`~FakeSlackServer.dm`,
:meth:`~FakeSlackServer.channel_message`, :meth:`~FakeSlackServer.press_button`,
:meth:`~FakeSlackServer.slash_command` and :meth:`~FakeSlackServer.event`, and read what the
bot did from ``sent``, ``edits``, ``calls``, ``acks`` and ``deliveries``, and what a person
sees from :meth:`~FakeSlackServer.shown`. Anyone may press any button on any message, so forged
presses can be played. By default the bot's own posts and edits in IMs come back to it as
``message`` events, as they do on Slack.

Where Slack's reference and the SDKs say what Slack does, the fake does it too:

* A message's ``text`` over 40,000 characters (counted as sent, entities included) is cut to
  40,000 and still posted, with a ``message_truncated`` warning (changelog 2018-04
  "Truncating really long messages"; chat.postMessage "Truncating content").
* Blocks: at most 50 in a message, 25 elements in an actions block, 3,000 characters in a
  section's text, 75 in a button's, 255 in an ``action_id``; else ``invalid_blocks``
  (Block Kit reference; slack_sdk ``ActionsBlock.elements_max_length``,
  ``SectionBlock.text_max_length``).
* What a client shows (:meth:`~FakeSlackServer.shown`): the section blocks when there are any
  (``plain_text`` as written, ``mrkdwn`` rendered), else the ``text``: as written when posted
  with ``mrkdwn: false``, else rendered as markup, ``*b*`` bold, ``<url|label>`` a link. That
  is always so after ``chat.update``, which has no ``mrkdwn`` argument ("text: New text for
  the message, using the default formatting rules"; slack_sdk ``chat_update``'s signature).
* A person's upload is a ``message`` of subtype ``file_share`` with ``files`` (and its text,
  maybe empty): slack_bolt's ``AsyncApp.message`` ("If an end-user posts a message with
  attached files, the message event comes with this subtype").
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import re
import uuid
from collections import OrderedDict, deque
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import ClientSession, WSMsgType, web

from bot.core.clock import Clock, SystemClock
from providers.fakebase import DemoSpec, FakeDemo, Written, wait_until
from providers.fakes_http import LoopbackFake, call_params

JsonDict = dict[str, Any]

DEFAULT_BOT_TOKEN = "xoxb-0000-fake-bot-token"  # noqa: S105 (the fake's, not a secret)
DEFAULT_APP_TOKEN = "xapp-1-A0FAKE-fake-app-token"  # noqa: S105
DEFAULT_SIGNING_SECRET = "fake-signing-secret-0123456789"  # noqa: S105
TEAM_ID, TEAM_DOMAIN, APP_ID = "T0FAKE", "fake", "A0FAKE"
BOT_USER_ID, BOT_ID = "U0BOT", "B0BOT"

_MAX_TEXT = 40_000
_MAX_SECTION = 3000
_MAX_LABEL = 75
_MAX_ACTION_ID = 255
_MAX_VALUE = 2000
_FORM = "application/x-www-form-urlencoded"
_TRUNCATED = {
    "warnings": ["message_truncated"],
    "messages": [
        "[WARN] Your message was truncated but still posted. The `text` field accepts up to "
        "40,000 characters."
    ],
}
_CONTROL = re.compile(r"<([^<>|]*)(?:\|([^<>]*))?>")
_EMPHASIS = re.compile(r"(?<![^\s(\[])([*_~`])(?!\s)(.+?)(?<!\s)\1(?![^\s).,!?:;\]])")


class _ApiError(Exception):
    """A Web API error answer (``{"ok": false, "error": code}``)."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def rendered(mrkdwn: str) -> str:
    """A ``mrkdwn`` text as a Slack client shows it: emphasis marks (``*b*``, ``_i_``,
    ``~s~``, `` `c` ``) gone, ``<url|label>`` its label, ``<!channel>`` and ``<@U…>`` their
    names, entities decoded ("Formatting text for app surfaces")."""
    shown = _CONTROL.sub(lambda m: m[2] if m[2] is not None else m[1].lstrip("!@#"), mrkdwn)
    return _unescape(_EMPHASIS.sub(r"\2", shown))


def _flag(value: object) -> bool | None:
    """A boolean argument as posted: JSON ``false``, or a form's ``"false"``/``"0"``."""
    if value is None:
        return None
    return str(value).lower() not in ("false", "0")


def sign(secret: str, timestamp: str, body: str) -> str:
    """Slack's request signature: ``v0=`` + hex HMAC-SHA256 of ``v0:{timestamp}:{body}``."""
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256)
    return "v0=" + digest.hexdigest()


def _check_blocks(blocks: object) -> list[JsonDict]:
    """Refuse blocks Slack would refuse (the subset pairbot uses is checked in depth)."""
    if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
        raise _ApiError("invalid_blocks_format")
    if len(blocks) > 50:
        raise _ApiError("invalid_blocks")
    action_ids: set[str] = set()
    for block in blocks:
        kind = block.get("type")
        if kind == "section":
            text = block.get("text")
            if (
                not isinstance(text, dict)
                or text.get("type") not in ("plain_text", "mrkdwn")
                or not 1 <= len(str(text.get("text", ""))) <= _MAX_SECTION
            ):
                raise _ApiError("invalid_blocks")
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 25:
                raise _ApiError("invalid_blocks")
            for element in elements:
                label = element.get("text") if isinstance(element, dict) else None
                action_id = str(element.get("action_id", "")) if isinstance(element, dict) else ""
                if (
                    not isinstance(label, dict)
                    or label.get("type") != "plain_text"
                    or not 1 <= len(str(label.get("text", ""))) <= _MAX_LABEL
                    or not 1 <= len(action_id) <= _MAX_ACTION_ID
                    or len(str(element.get("value", ""))) > _MAX_VALUE
                    or action_id in action_ids
                ):
                    raise _ApiError("invalid_blocks")
                action_ids.add(action_id)
        else:
            raise _ApiError("invalid_blocks")
    return blocks


class FakeSlackServer(LoopbackFake):
    """Slack's Web API, Socket Mode websocket and Events API sender, on 127.0.0.1.

    Args:
        bot_token: the bot token every method but ``apps.connections.open`` requires.
        app_token: the app-level token ``apps.connections.open`` requires.
        signing_secret: what HTTP deliveries are signed with.
        clock: where message timestamps come from (a FakeClock in the app tests). Request
            signatures always use the real time, as Slack's verifier does.
        echo_own_messages: send the bot's own posts and edits in IMs back to it as events.
    """

    def __init__(
        self,
        *,
        bot_token: str = DEFAULT_BOT_TOKEN,
        app_token: str = DEFAULT_APP_TOKEN,
        signing_secret: str = DEFAULT_SIGNING_SECRET,
        clock: Clock | None = None,
        echo_own_messages: bool = True,
    ) -> None:
        super().__init__(clock=clock)
        self.bot_token, self.app_token, self.signing_secret = bot_token, app_token, signing_secret
        self.echo_own_messages = echo_own_messages
        self.events_url: str | None = None
        """Set it (to the bot's HTTP URL) to deliver over the Events API instead of the socket."""
        # what the bot did
        self.calls: list[tuple[str, JsonDict]] = []
        self.edits: list[JsonDict] = []
        self.acks: list[JsonDict] = []
        self.envelopes: list[JsonDict] = []
        """Every envelope written to a websocket (re-sends included), in order."""
        self.deliveries: list[JsonDict] = []
        """Every HTTP delivery: ``{"kind", "status", "body", "payload"}``."""
        self.connections = 0
        self.ignore_acks = False
        """Record acks but act as if they were lost: the envelopes are re-sent on reconnect."""
        # the world
        self.users: dict[str, JsonDict] = {}
        self._channels: dict[str, JsonDict] = {}
        self._messages: dict[tuple[str, str], JsonDict] = {}
        self._literal: set[tuple[str, str]] = set()  # posted with mrkdwn off
        self._buttons: dict[tuple[str, str], list[JsonDict]] = {}
        self._seq = 0
        self._tickets: set[str] = set()
        self._fail: dict[str, tuple[int, int]] = {}
        # the socket
        self._ws: web.WebSocketResponse | None = None
        self._outbox: deque[JsonDict] = deque()
        self._unacked: OrderedDict[str, JsonDict] = OrderedDict()
        self._wake = asyncio.Event()
        self._posts: set[asyncio.Task[None]] = set()
        self._session: ClientSession | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self.add_user(BOT_USER_ID, name="pairbot", is_bot=True)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def api_base_url(self) -> str:
        """The Web API root to give the SDK (``AsyncWebClient(base_url=...)``)."""
        return f"{self.base_url}/api/"

    async def start(self) -> None:
        """Listen on 127.0.0.1 (a free port)."""
        app = web.Application()
        app.router.add_post("/api/{method}", self._handle_api)
        app.router.add_get("/api/{method}", self._handle_api)  # slack-sdk GETs users.info
        app.router.add_get("/link/", self._handle_socket)
        await self._serve(app)
        self._session = ClientSession()

    async def stop(self) -> None:
        """Close sockets, finish HTTP deliveries, stop listening. Safe to call twice."""
        for task in list(self._posts):
            task.cancel()
        await asyncio.gather(*self._posts, return_exceptions=True)
        for ws in list(self._sockets):
            await ws.close()
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._http.stop()

    # -- the world ---------------------------------------------------------------------------

    def add_user(
        self, user_id: str, *, name: str, display_name: str = "", is_bot: bool = False
    ) -> JsonDict:
        """Make a workspace member (``name`` is their real name, as they typed it)."""
        user = {
            "id": user_id,
            "team_id": TEAM_ID,
            "name": name.lower().replace(" ", "."),
            "deleted": False,
            "real_name": name,
            "is_bot": is_bot,
            "profile": {"real_name": name, "display_name": display_name, "team": TEAM_ID},
        }
        self.users[user_id] = user
        return user

    def add_channel(
        self, channel_id: str, *, kind: str = "channel", name: str = "general"
    ) -> None:
        """Make a channel the bot is in: ``kind`` is ``channel``, ``group`` or ``mpim``."""
        self._channels[channel_id] = {"id": channel_id, "type": kind, "name": name}

    @staticmethod
    def im_channel(user_id: str) -> str:
        """The id of the bot's IM with ``user_id`` (``U0ALICE`` → ``D0ALICE``)."""
        return "D" + user_id[1:]

    def _user_of_im(self, channel_id: str) -> str | None:
        for user_id in self.users:
            if self.im_channel(user_id) == channel_id and user_id != BOT_USER_ID:
                return user_id
        return None

    def _channel_info(self, channel_id: str) -> JsonDict | None:
        if channel_id in self._channels:
            return self._channels[channel_id]
        if self._user_of_im(channel_id) is not None:
            return {"id": channel_id, "type": "im", "name": "directmessage"}
        return None

    def _now(self) -> float:
        return self._clock.now().timestamp()

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _ts(self) -> str:
        return f"{int(self._now())}.{self._next():06d}"

    # -- the people side ---------------------------------------------------------------------

    def dm(
        self, user_id: str, text: str, *, name: str | None = None, deliver: bool = True
    ) -> JsonDict:
        """``user_id`` writes ``text`` in their IM with the bot; return the event body
        (delivered unless ``deliver`` is false: then it is only built, e.g. to post it)."""
        if user_id not in self.users:
            self.add_user(user_id, name=name or user_id)
        return self._user_message(user_id, self.im_channel(user_id), "im", text, deliver)

    def upload(self, user_id: str, text: str = "", *, filename: str = "photo.png") -> JsonDict:
        """``user_id`` uploads a file to their IM with the bot, ``text`` its message (maybe
        none): a ``file_share`` message, shaped as Slack sends one (no ``team``:
        slack-api-specs#62); return the event body."""
        if user_id not in self.users:
            self.add_user(user_id, name=user_id)
        ts, channel = self._ts(), self.im_channel(user_id)
        file = {
            "id": f"F{self._next():08d}",
            "created": int(self._now()),
            "name": filename,
            "title": filename,
            "mimetype": "image/png",
            "filetype": "png",
            "user": user_id,
            "mode": "hosted",
            "size": 1024,
        }
        event = {
            "type": "message",
            "subtype": "file_share",
            "text": _escape(text),
            "files": [file],
            "upload": True,
            "user": user_id,
            "display_as_bot": False,
            "ts": ts,
            "client_msg_id": str(uuid.uuid4()),
            "channel": channel,
            "event_ts": ts,
            "channel_type": "im",
        }
        self._messages[(channel, ts)] = dict(event)
        return self.event(event)

    def channel_message(
        self, channel_id: str, user_id: str, text: str, *, kind: str = "channel"
    ) -> JsonDict:
        """``user_id`` writes in a channel (``kind``: ``channel``, ``group`` or ``mpim``)."""
        if user_id not in self.users:
            self.add_user(user_id, name=user_id)
        if channel_id not in self._channels:
            self.add_channel(channel_id, kind=kind, name=f"{kind}-{channel_id.lower()}")
        return self._user_message(
            user_id, channel_id, self._channels[channel_id]["type"], text, True
        )

    def _user_message(
        self, user_id: str, channel: str, channel_type: str, text: str, deliver: bool
    ) -> JsonDict:
        ts = self._ts()
        event = {
            "client_msg_id": str(uuid.uuid4()),
            "type": "message",
            "text": _escape(text),
            "user": user_id,
            "ts": ts,
            "team": TEAM_ID,
            "channel": channel,
            "event_ts": ts,
            "channel_type": channel_type,
        }
        self._messages[(channel, ts)] = dict(event)
        return self.event(event, deliver=deliver)

    def event(self, event: JsonDict, *, deliver: bool = True) -> JsonDict:
        """Deliver any event (``message`` with a subtype, ``reaction_added``, ...) as an
        ``event_callback``; return the body."""
        body = {
            "token": "legacy-verification-token",
            "team_id": TEAM_ID,
            "api_app_id": APP_ID,
            "event": copy.deepcopy(event),
            "type": "event_callback",
            "event_id": f"Ev{self._next():08d}",
            "event_time": int(self._now()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": TEAM_ID,
                    "user_id": BOT_USER_ID,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
        }
        if deliver:
            self.deliver("events_api", body)
        return body

    def press_button(
        self,
        user_id: str,
        message_ts: str,
        *,
        index: int = 0,
        channel: str | None = None,
        value: str | None = None,
    ) -> JsonDict:
        """``user_id`` presses button ``index`` of the bot's message ``message_ts``.

        ``channel`` and ``value`` forge the press (another chat, another command).
        """
        found = [
            key
            for key in self._messages
            if key[1] == message_ts and (channel is None or key[0] == channel)
        ]
        message: JsonDict = (
            copy.deepcopy(self._messages[found[0]])
            if found
            else {"type": "message", "ts": message_ts}
        )
        channel_id = channel or str(message.get("channel", ""))
        # A client that has not refreshed still shows the buttons an edit removed.
        buttons = self._buttons.get(found[0], []) if found else []
        button: JsonDict = (
            copy.deepcopy(buttons[index])
            if index < len(buttons)
            else {
                "type": "button",
                "action_id": "forged",
                "text": {"type": "plain_text", "text": "?"},
            }
        )
        if value is not None:
            button["value"] = value
        button.update(block_id="pairbot_actions", action_ts=f"{self._now():.6f}")
        info = self._channel_info(channel_id) or {"name": "unknown"}
        user = self.users.get(user_id, {"name": user_id})
        payload: JsonDict = {
            "type": "block_actions",
            "user": {
                "id": user_id,
                "username": user["name"],
                "name": user["name"],
                "team_id": TEAM_ID,
            },
            "api_app_id": APP_ID,
            "token": "legacy-verification-token",
            "container": {
                "type": "message",
                "message_ts": message_ts,
                "channel_id": channel_id,
                "is_ephemeral": False,
            },
            "trigger_id": f"{self._next()}.{TEAM_ID}.{uuid.uuid4().hex}",
            "team": {"id": TEAM_ID, "domain": TEAM_DOMAIN},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel_id, "name": info["name"]},
            "message": message,
            "state": {"values": {}},
            "response_url": f"{self.base_url}/actions/{self._seq}",
            "actions": [button],
        }
        self.deliver("interactive", payload)
        return payload

    def slash_command(
        self, user_id: str, text: str, *, channel_id: str | None = None, command: str = "/pairbot"
    ) -> JsonDict:
        """``user_id`` types ``{command} {text}`` (in their IM with the bot by default)."""
        if user_id not in self.users:
            self.add_user(user_id, name=user_id)
        channel_id = channel_id or self.im_channel(user_id)
        info = self._channel_info(channel_id)
        name = (
            "directmessage"
            if channel_id.startswith("D")
            else (info["name"] if info else "unknown")
        )
        payload = {
            "token": "legacy-verification-token",
            "team_id": TEAM_ID,
            "team_domain": TEAM_DOMAIN,
            "channel_id": channel_id,
            "channel_name": name,
            "user_id": user_id,
            "user_name": self.users[user_id]["name"],
            "command": command,
            "text": _escape(text),
            "api_app_id": APP_ID,
            "is_enterprise_install": "false",
            "response_url": f"{self.base_url}/commands/{self._next()}",
            "trigger_id": f"{self._next()}.{TEAM_ID}.{uuid.uuid4().hex}",
        }
        self.deliver("slash_commands", payload)
        return payload

    # -- delivery ----------------------------------------------------------------------------

    def deliver(self, kind: str, payload: JsonDict, *, retry_num: int | None = None) -> str:
        """Send ``payload`` as a ``kind`` envelope (socket) or POST (HTTP, when
        :attr:`events_url` is set); return the envelope id (``""`` over HTTP)."""
        if self.events_url is not None:
            task = asyncio.get_running_loop().create_task(
                self._post_quietly(kind, payload, retry_num)
            )
            self._posts.add(task)
            task.add_done_callback(self._posts.discard)
            return ""
        envelope = {
            "envelope_id": str(uuid.uuid4()),
            "type": kind,
            "payload": copy.deepcopy(payload),
            "accepts_response_payload": kind != "events_api",
        }
        if kind == "events_api":
            envelope.update(retry_attempt=0, retry_reason="")
        self._outbox.append(envelope)
        self._wake.set()
        return str(envelope["envelope_id"])

    def redeliver(self, envelope_id: str) -> None:
        """Send an envelope again, same id, ``retry_attempt`` raised (Slack's retry)."""
        sent = next(e for e in reversed(self.envelopes) if e["envelope_id"] == envelope_id)
        again = copy.deepcopy(sent)
        again["retry_attempt"] = int(again.get("retry_attempt", 0)) + 1
        again["retry_reason"] = "timeout"
        self._outbox.append(again)
        self._wake.set()

    async def request_reconnect(self, reason: str = "refresh_requested") -> None:
        """Send a ``disconnect`` message: the client must open a new connection."""
        if self._ws is not None:
            await self._ws.send_json(
                {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-fake"}}
            )

    async def drop_socket(self) -> None:
        """Close the current websocket from the server side."""
        if self._ws is not None:
            await self._ws.close()

    async def post(
        self,
        kind: str,
        payload: JsonDict,
        *,
        timestamp: int | None = None,
        signature: str | None = None,
        retry_num: int | None = None,
    ) -> tuple[int, str]:
        """POST one payload to :attr:`events_url`, signed unless ``signature`` is given;
        return the status and body. ``timestamp`` overrides the (real) current time."""
        if self.events_url is None or self._session is None:
            raise RuntimeError("events_url is not set or the fake is not started")
        if kind == "events_api" or payload.get("type") == "url_verification":
            body, content_type = json.dumps(payload), "application/json"
        elif kind == "interactive":
            body, content_type = urlencode({"payload": json.dumps(payload)}), _FORM
        else:
            body, content_type = urlencode(payload), _FORM
        ts = str(timestamp if timestamp is not None else int(SystemClock().now().timestamp()))
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature or sign(self.signing_secret, ts, body),
        }
        if retry_num is not None:
            headers.update(
                {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"}
            )
        async with self._session.post(
            self.events_url, data=body.encode(), headers=headers
        ) as response:
            status, text = response.status, await response.text()
        self.deliveries.append({"kind": kind, "status": status, "body": text, "payload": payload})
        return status, text

    async def _post_quietly(self, kind: str, payload: JsonDict, retry_num: int | None) -> None:
        try:
            await self.post(kind, payload, retry_num=retry_num)
        except (OSError, RuntimeError) as exc:  # recorded: the bot may be down
            self.deliveries.append(
                {"kind": kind, "status": 0, "body": type(exc).__name__, "payload": payload}
            )

    # -- reading what the bot did ------------------------------------------------------------

    def messages_to(self, channel_or_user: str) -> list[str]:
        """The texts (as Slack shows them) the bot posted to a channel, or a user's IM."""
        channel = (
            self.im_channel(channel_or_user) if channel_or_user in self.users else channel_or_user
        )
        return [m["text"] for m in self.sent if m["channel"] == channel]

    def message(self, channel: str, ts: str) -> JsonDict:
        """A copy of a message as it is now (after edits). Raises KeyError if unknown."""
        return copy.deepcopy(self._messages[(channel, ts)])

    def shown(self, channel: str, ts: str) -> str:
        """What a person sees of a message now: its section blocks if it has any, else its
        ``text``, as written only where it was posted with ``mrkdwn: false``."""
        message = self._messages[(channel, ts)]
        texts = [b["text"] for b in message.get("blocks") or [] if b.get("type") == "section"]
        if texts:
            return "".join(
                t["text"] if t["type"] == "plain_text" else rendered(t["text"]) for t in texts
            )
        text = str(message.get("text", ""))
        return _unescape(text) if (channel, ts) in self._literal else rendered(text)

    def methods_called(self) -> list[str]:
        """The API method names called so far, in order."""
        return [method for method, _ in self.calls]

    def fail_next(self, method: str, count: int = 1, *, retry_after: int = 1) -> None:
        """Answer the next ``count`` calls of ``method`` with 429 ``ratelimited``."""
        self._fail[method] = (count, retry_after)

    # -- the Web API -------------------------------------------------------------------------

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        try:
            params = await self._params(request)
        except _ApiError as error:
            return web.json_response({"ok": False, "error": error.error})
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip() or str(
            params.pop("token", "")
        )
        self.calls.append((method, params))
        pending, retry_after = self._fail.get(method, (0, 0))
        if pending > 0:
            self._fail[method] = (pending - 1, retry_after)
            return web.json_response(
                {"ok": False, "error": "ratelimited"},
                status=429,
                headers={"Retry-After": str(retry_after)},
            )
        handler = {
            "auth.test": self._auth_test,
            "apps.connections.open": self._open_connection,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "conversations.open": self._open_conversation,
            "users.info": self._users_info,
        }.get(method)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"}, status=404)
        wanted = self.app_token if method == "apps.connections.open" else self.bot_token
        try:
            if not token:
                raise _ApiError("not_authed")
            if token != wanted:
                raise _ApiError(
                    "not_allowed_token_type"
                    if token in (self.app_token, self.bot_token)
                    else "invalid_auth"
                )
            result = await handler(params, request)
        except _ApiError as error:
            return web.json_response({"ok": False, "error": error.error})
        return web.json_response({"ok": True, **result})

    @staticmethod
    async def _params(request: web.Request) -> JsonDict:
        params = await call_params(request)
        for key in ("blocks", "attachments"):  # form posts carry these JSON-encoded
            if isinstance(params.get(key), str):
                try:
                    params[key] = json.loads(params[key])
                except ValueError:
                    raise _ApiError("invalid_blocks_format") from None
        return params

    async def _auth_test(self, _params: JsonDict, _request: web.Request) -> JsonDict:
        return {
            "url": f"https://{TEAM_DOMAIN}.slack.test/",
            "team": "Fake",
            "user": "pairbot",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    async def _open_connection(self, _params: JsonDict, _request: web.Request) -> JsonDict:
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        socket_url = "ws" + self.base_url.removeprefix("http") + "/link/"
        return {"url": f"{socket_url}?ticket={ticket}&app_id={APP_ID}"}

    def _resolve_channel(self, value: object) -> str:
        channel = str(value or "")
        if not channel:
            raise _ApiError("channel_not_found")
        if channel in self.users and channel != BOT_USER_ID:
            return self.im_channel(channel)
        if self._channel_info(channel) is None:
            raise _ApiError("channel_not_found")
        return channel

    async def _post_message(self, params: JsonDict, _request: web.Request) -> JsonDict:
        channel = self._resolve_channel(params.get("channel"))
        text = str(params.get("text") or "")
        blocks = _check_blocks(params["blocks"]) if "blocks" in params else None
        if not text and not blocks:
            raise _ApiError("no_text")
        text, truncated = text[:_MAX_TEXT], len(text) > _MAX_TEXT
        ts = self._ts()
        message: JsonDict = {
            "type": "message",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "app_id": APP_ID,
            "text": text,
            "ts": ts,
            "team": TEAM_ID,
            "channel": channel,
        }
        if blocks:
            message["blocks"] = copy.deepcopy(blocks)
            self._remember_buttons(channel, ts, blocks)
        self._messages[(channel, ts)] = message
        if _flag(params.get("mrkdwn")) is False:
            self._literal.add((channel, ts))
        self.sent.append(
            {
                "channel": channel,
                "text": _unescape(text),
                "raw_text": text,
                "ts": ts,
                "blocks": copy.deepcopy(blocks),
                "mrkdwn": params.get("mrkdwn"),
                "unfurl_links": params.get("unfurl_links"),
            }
        )
        self._echo(message, channel)
        answer = {"channel": channel, "ts": ts, "message": copy.deepcopy(message)}
        return {**answer, "response_metadata": _TRUNCATED} if truncated else answer

    async def _update(self, params: JsonDict, _request: web.Request) -> JsonDict:
        channel = self._resolve_channel(params.get("channel"))
        ts = str(params.get("ts") or "")
        message = self._messages.get((channel, ts))
        if message is None:
            raise _ApiError("message_not_found")
        if message.get("bot_id") != BOT_ID:
            raise _ApiError("cant_update_message")
        if "text" not in params and "blocks" not in params:
            raise _ApiError("no_text")
        before = copy.deepcopy(message)
        truncated = False
        if "text" in params:
            text = str(params["text"] or "")
            message["text"], truncated = text[:_MAX_TEXT], len(text) > _MAX_TEXT
            self._literal.discard((channel, ts))  # no mrkdwn argument: parsed from now on
        # An empty blocks list removes them; text without blocks drops them as well.
        blocks = _check_blocks(params["blocks"]) if "blocks" in params else []
        if blocks:
            message["blocks"] = copy.deepcopy(blocks)
            self._remember_buttons(channel, ts, blocks)
        else:
            message.pop("blocks", None)
        message["edited"] = {"user": BOT_USER_ID, "ts": self._ts()}
        self.edits.append(
            {
                "channel": channel,
                "ts": ts,
                "text": _unescape(message["text"]),
                "raw_text": message["text"],
                "blocks": message.get("blocks"),
            }
        )
        self._echo(
            {
                "type": "message",
                "subtype": "message_changed",
                "hidden": True,
                "message": copy.deepcopy(message),
                "previous_message": before,
                "ts": self._ts(),
            },
            channel,
        )
        answer = {
            "channel": channel,
            "ts": ts,
            "text": message["text"],
            "message": copy.deepcopy(message),
        }
        return {**answer, "response_metadata": _TRUNCATED} if truncated else answer

    def _remember_buttons(self, channel: str, ts: str, blocks: list[JsonDict]) -> None:
        buttons = [
            copy.deepcopy(e) for b in blocks if b.get("type") == "actions" for e in b["elements"]
        ]
        if buttons:
            self._buttons[(channel, ts)] = buttons

    def _echo(self, event: JsonDict, channel: str) -> None:
        info = self._channel_info(channel)
        if self.echo_own_messages and info is not None and info["type"] == "im":
            event = {
                **copy.deepcopy(event),
                "channel": channel,
                "channel_type": "im",
                "event_ts": event["ts"],
            }
            event.setdefault(
                "bot_profile",
                {"id": BOT_ID, "app_id": APP_ID, "name": "pairbot", "team_id": TEAM_ID},
            )
            self.event(event)

    async def _open_conversation(self, params: JsonDict, _request: web.Request) -> JsonDict:
        users = [u for u in str(params.get("users") or "").split(",") if u]
        if len(users) != 1:
            raise _ApiError("not_supported" if users else "users_list_not_supplied")
        if users[0] not in self.users or users[0] == BOT_USER_ID:
            raise _ApiError("user_not_found")
        return {"channel": {"id": self.im_channel(users[0])}}

    async def _users_info(self, params: JsonDict, _request: web.Request) -> JsonDict:
        user = self.users.get(str(params.get("user") or ""))
        if user is None:
            raise _ApiError("user_not_found")
        return {"user": copy.deepcopy(user)}

    # -- Socket Mode -------------------------------------------------------------------------

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            raise web.HTTPUnauthorized(text="invalid ticket")
        self._tickets.discard(ticket)  # one connection per URL, as on Slack
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.add(ws)
        self._ws = ws
        self.connections += 1
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": 1,
                "debug_info": {
                    "host": "applink-fake",
                    "build_number": 1,
                    "approximate_connection_time": 18060,
                },
                "connection_info": {"app_id": APP_ID},
            }
        )
        # What the last connection never acked is sent again, as Slack retries it.
        for envelope in reversed(list(self._unacked.values())):
            again = copy.deepcopy(envelope)
            if "retry_attempt" in again:
                again["retry_attempt"] = int(again["retry_attempt"]) + 1
                again["retry_reason"] = "timeout"
            self._outbox.appendleft(again)
        self._unacked.clear()
        pump = asyncio.create_task(self._pump(ws))
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    data = json.loads(message.data)
                    if isinstance(data, dict) and "envelope_id" in data:
                        self.acks.append(data)
                        if not self.ignore_acks:
                            self._unacked.pop(str(data["envelope_id"]), None)
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            self._sockets.discard(ws)
            if self._ws is ws:
                self._ws = None
        return ws

    async def _pump(self, ws: web.WebSocketResponse) -> None:
        while not ws.closed:
            while self._outbox and self._ws is ws and not ws.closed:
                envelope = self._outbox.popleft()
                try:
                    await ws.send_json(envelope)
                except (ConnectionError, RuntimeError):
                    self._outbox.appendleft(envelope)
                    return
                self.envelopes.append(copy.deepcopy(envelope))
                self._unacked[str(envelope["envelope_id"])] = envelope
            self._wake.clear()
            await self._wake.wait()

    async def wait_connected(
        self,
        count: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> None:
        """Wait until ``count`` websocket connections were made and one is open."""
        await self.wait_until(
            lambda: self.connections >= count and self._ws is not None and not self._ws.closed,
            timeout=timeout,
        )


SLACK = DemoSpec(
    provider="slack",
    owner_id="U0OWNER",
    user_id=lambda n: f"U0DEMO{n:03d}",
    fake=FakeSlackServer,
    config=lambda fake: {  # over Socket Mode
        "bot_token": fake.bot_token,
        "app_token": fake.app_token,
        "api_base_url": fake.api_base_url,
    },
)
"""Slack's demo people, and the block that points slack-bolt at the fake."""


class SlackDemo(FakeDemo[FakeSlackServer], spec=SLACK):
    """The Slack fake as :class:`providers.fakebase.DemoPlatform` (people, not API calls)."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        super().__init__(clock=clock)
        self.fake.add_user(self.owner_id, name="Owner")

    def dm(self, user_id: str, text: str, *, name: str) -> None:
        """A message in the person's IM with the bot."""
        if user_id not in self.fake.users:
            self.fake.add_user(user_id, name=name)
        self.fake.dm(user_id, text)

    def texts_to(self, user_id: str) -> list[str]:
        """What the bot posted in that person's IM."""
        return self.fake.messages_to(user_id)

    # -- contract capabilities (issue 10: providers.ContractPlatform.fake) -------------------
    # Played as Slack's Events API and Web API document it (api.slack.com), over Socket Mode.

    def dm_written(self, user_id: str, text: str, *, name: str) -> Written:
        """A ``message.im`` event; its ``ts`` is the message's id and its time."""
        self._meet(user_id, name)
        ts = self.fake.dm(user_id, text)["event"]["ts"]
        return Written(ts, datetime.fromtimestamp(float(ts), UTC))

    async def dm_delivered_twice(self, user_id: str, text: str, *, name: str) -> None:
        """Both of Slack's re-deliveries of one event: Socket Mode sends an envelope again
        (same ``envelope_id``) when it saw no ack in time, and the Events API retries an event
        (same ``event_id``, ``retry_attempt`` raised) in a new envelope ("Using Socket Mode",
        "The Events API: Retries")."""
        self._meet(user_id, name)
        body = self.fake.dm(user_id, text)
        await self.handed_over()
        envelope = next(e for e in self.fake.envelopes if e["payload"] == body)
        self.fake.redeliver(envelope["envelope_id"])
        self.fake.deliver("events_api", body)
        await wait_until(lambda: sum(e["payload"] == body for e in self.fake.envelopes) >= 3)

    def group_message(self, user_id: str, text: str, *, name: str) -> None:
        """A ``message.mpim`` event: a multi-person direct message the bot is in."""
        self._meet(user_id, name)
        self.fake.channel_message("G0CONTRACT", user_id, text, kind="mpim")

    def own_message(self, text: str) -> None:
        """The bot user's own post in an IM comes back as a ``message`` event carrying its
        ``bot_id`` (and the app's ``bot_profile``), as every post of an app does."""
        ts = self.fake._ts()
        self.fake.event(
            {
                "type": "message",
                "user": BOT_USER_ID,
                "bot_id": BOT_ID,
                "bot_profile": {"id": BOT_ID, "app_id": APP_ID, "name": "pairbot"},
                "text": _escape(text),
                "ts": ts,
                "event_ts": ts,
                "channel": self.fake.im_channel(self.owner_id),
                "channel_type": "im",
            }
        )

    def non_text_dm(self, user_id: str, *, name: str) -> None:
        """A ``message`` of subtype ``file_share`` with an empty ``text`` (an upload)."""
        self._meet(user_id, name)
        self.fake.upload(user_id)

    async def handed_over(self) -> None:
        """Over Socket Mode: every envelope written and acked (none waits in the outbox while
        a socket is open). With no socket open, Slack holds them for the next connection."""

        def offered() -> bool:
            if self.fake._ws is None or self.fake._ws.closed:
                return True
            acked = {a["envelope_id"] for a in self.fake.acks}
            return not self.fake._outbox and all(
                e["envelope_id"] in acked for e in self.fake.envelopes
            )

        await wait_until(offered)

    def shown_to(self, user_id: str) -> list[str]:
        """What each post in the IM shows now (:meth:`FakeSlackServer.shown`)."""
        channel = self.fake.im_channel(user_id)
        return [
            self.fake.shown(channel, m["ts"]) for m in self.fake.sent if m["channel"] == channel
        ]

    def buttons_on(self, message_id: str) -> list[str]:
        """The button elements of the post's ``actions`` blocks now, by their text."""
        return [e["text"]["text"] for e in self._buttons(message_id)]

    def press(self, user_id: str, message_id: str, label: str) -> None:
        """A ``block_actions`` payload for the pressed button."""
        labels = self.buttons_on(message_id)
        if label not in labels:
            raise LookupError(f"message {message_id} shows no button {label!r}")
        self.fake.press_button(user_id, message_id, index=labels.index(label))

    def _buttons(self, ts: str) -> list[JsonDict]:
        channel = next(m["channel"] for m in self.fake.sent if m["ts"] == ts)
        blocks = self.fake.message(channel, ts).get("blocks") or []
        return [e for b in blocks if b["type"] == "actions" for e in b["elements"]]

    def _meet(self, user_id: str, name: str) -> None:
        if user_id not in self.fake.users:
            self.fake.add_user(user_id, name=name)


__all__ = ["FakeSlackServer", "SlackDemo", "sign"]
