"""A loopback fake of Discord's REST API and gateway, for ``pairbot demo`` and the e2e tests.

It serves ``/api/v10/...`` and the gateway websocket on 127.0.0.1 the way discord.com and
gateway.discord.gg do, so the real discord.py runs against it unmodified (only its REST root
and gateway URL change). Tests and the demo play the human side through the injection API
(:meth:`FakeDiscordServer.dm`, :meth:`~FakeDiscordServer.guild_message`,
:meth:`~FakeDiscordServer.group_dm`, :meth:`~FakeDiscordServer.press_button`,
:meth:`~FakeDiscordServer.slash`) and read what the bot did from the records (``sent``,
``edits``, ``interaction_responses``, ``commands``, ``calls``).

Shapes follow the official docs: every gateway frame is ``{"op", "d", "s", "t"}`` (HELLO,
heartbeat ACK, IDENTIFY → READY, RESUME → the missed dispatches then RESUMED, INVALID_SESSION
for an unknown session, RECONNECT on request); REST errors are ``{"message", "code"}`` with the
HTTP status; JSON answers carry exactly ``Content-Type: application/json`` (discord.py compares
it with ``==``). Like Discord, the fake echoes the bot's own messages back as MESSAGE_CREATE,
forgets a session's undelivered events when the bot identifies afresh, and replays the missed
ones on RESUME (plus ``replay_overlap`` already delivered ones, to play at-least-once
delivery). Snowflakes carry the fake clock's time, so ``Message.created_at`` is meaningful.

Two refusals are played as Discord makes them ("A fake is a claim about a platform"):

* **Privileged intents.** An IDENTIFY asking for a privileged intent the app was not granted in
  the Developer Portal (:attr:`FakeDiscordServer.granted_intents`, none by default, as on a new
  app) closes the gateway with 4014 "Disallowed intent(s)"; and without ``MESSAGE_CONTENT`` a
  message's content fields arrive empty unless the message is in a DM with the app, by the app,
  or mentions it (a reply to the app with its ping on does). Source: discord-api-docs,
  ``events/gateway.mdx`` ("Gateway Restrictions", "Message Content Intent"),
  ``topics/opcodes-and-status-codes.mdx`` (close codes), ``gateway/you-might-not-need-a-
  privileged-intent.mdx`` ("Exceptions").
* **DMs nobody can receive.** Create DM (``POST /users/@me/channels``) answers a channel for any
  person (a bot: 400, 50007), but a message in it fails with 403 when the person shares no
  server with the bot (50278, "Cannot send messages to this user due to having no mutual
  guilds", documented since discord-api-docs#8212; 50007 before) or does not accept DMs from
  its server, or blocked it (50007 "Cannot send messages to this user"). Source:
  ``topics/opcodes-and-status-codes.mdx`` (JSON error codes); discord-api-docs#2247 ("you
  need to dm a user and wait for a 403"). Everyone the fake has been told about shares the
  bot's server with DMs open (:meth:`FakeDiscordServer.reach` says otherwise); a user id it has
  never heard of, met first through Create DM, shares none.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

from bot.core.clock import Clock
from providers.fakebase import DemoSpec, PeopleDemo, Written, wait_until
from providers.fakes_http import LoopbackFake

JsonDict = dict[str, Any]
_Handler = Callable[[web.Request, re.Match[str]], Awaitable[web.Response]]
_Route = tuple[str, re.Pattern[str], _Handler]
_ORIGINAL = r"webhooks/(\d+)/([^/]+)/messages/@original"  # an interaction's first answer

DEFAULT_TOKEN = "fake-discord-bot-token"  # noqa: S105 (the fake's, not a secret)
"""The token a :class:`FakeDiscordServer` accepts unless told otherwise (not a secret)."""

API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1_420_070_400_000
MAX_CONTENT = 2000
HEARTBEAT_INTERVAL_MS = 41_250
DEFAULT_GUILD_ID = "300000000000000001"
DEFAULT_GUILD_CHANNEL_ID = "300000000000000002"

# Channel types (https://discord.com/developers/docs/resources/channel#channel-object-channel-types)
GUILD_TEXT, DM, GROUP_DM, GUILD_ANNOUNCEMENT = 0, 1, 3, 5
# Interaction types and callback types
APPLICATION_COMMAND, MESSAGE_COMPONENT = 2, 3
_LOADING_FLAG = 1 << 7
# Gateway intents ("Gateway Intents"); the privileged ones ("Privileged Intents")
GUILD_MEMBERS, GUILD_PRESENCES, MESSAGE_CONTENT = 1 << 1, 1 << 8, 1 << 15
PRIVILEGED_INTENTS = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT
# JSON error codes ("Opcodes and Status Codes")
CANNOT_MESSAGE_USER = 50007
"""403 "Cannot send messages to this user": DMs closed to the bot's server, or blocked it."""
NO_MUTUAL_GUILDS = 50278
"""403 "Cannot send messages to this user due to having no mutual guilds"."""
_CONTENT_FIELDS = {"content": "", "embeds": [], "attachments": [], "components": []}
_MENTION = re.compile(r"<@!?(\d+)>")
_ESCAPED = re.compile(r"\\([!-/:-@\[-`{-~])")


def displayed(content: str) -> str:
    r"""Return ``content`` as a Discord client shows it: ``\*`` is ``*`` (markdown escapes)."""
    return _ESCAPED.sub(r"\1", content)


def _json(body: object, status: int = 200) -> web.Response:
    # Exactly "application/json": aiohttp's json_response adds "; charset=utf-8", and
    # discord.py then treats the body as text.
    return web.Response(
        body=json.dumps(body).encode(),
        status=status,
        headers={"Content-Type": "application/json"},
    )


def _error(status: int, message: str, code: int = 0) -> web.Response:
    return _json({"message": message, "code": code}, status)


class FakeDiscordServer(LoopbackFake):
    """Discord's REST API and gateway on 127.0.0.1, for one bot; tests play the users.

    Use as ``async with FakeDiscordServer() as fake:`` or call :meth:`start` and :meth:`stop`;
    point discord.py at :attr:`api_base_url` and :attr:`gateway_url`. Everything runs on the
    caller's event loop.

    Attributes:
        token: the only bot token accepted; REST answers 401 and the gateway closes with 4004
            for any other.
        sent: every message the bot created, in order, as ``{"channel_id", "message_id",
            "content", "components", "flags", "allowed_mentions", "via"}`` (``via`` is
            ``"rest"`` or ``"interaction"``).
        edits: every edit, as ``{"channel_id", "message_id", "content", "components"}``
            (as they are after the edit).
        interaction_responses: every interaction callback, as ``{"interaction_id", "type",
            "data"}``.
        commands: the application commands last synced (``PUT .../commands``).
        calls: every REST call, as ``(method, path)`` (path after ``/api/v10/``).
        identifies: the ``d`` of every IDENTIFY; ``resumes``: of every accepted RESUME.
        replayed: sequence numbers re-sent on RESUME that had already been delivered.
        lost: dispatches that were never delivered (no session, or a fresh IDENTIFY).
        replay_overlap: how many already delivered dispatches a RESUME re-sends (0: none).
        granted_intents: the privileged intents the app may ask for (none unless given).
        refused: every message the bot could not create in a DM, as ``{"channel_id",
            "user_id", "code"}`` (Discord's JSON error code).
    """

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        port: int = 0,
        clock: Clock | None = None,
        bot_id: str = "150000000000000001",
        bot_name: str = "pairbot",
        granted_intents: int = 0,
    ) -> None:
        super().__init__(port=port, clock=clock)
        self.token = token
        self.granted_intents = granted_intents
        """The privileged intents switched on for the app in the Developer Portal."""
        self.edits: list[JsonDict] = []
        self.interaction_responses: list[JsonDict] = []
        self.commands: list[JsonDict] = []
        self.calls: list[tuple[str, str]] = []
        self.refused: list[JsonDict] = []
        self.bot_user: JsonDict = {
            "id": bot_id,
            "username": bot_name,
            "discriminator": "0",
            "global_name": None,
            "avatar": None,
            "bot": True,
            "verified": True,
            "mfa_enabled": False,
            "flags": 0,
        }
        self.application: JsonDict = {
            "id": bot_id,
            "name": bot_name,
            "description": "",
            "icon": None,
            "bot_public": False,
            "bot_require_code_grant": False,
            "verify_key": "00" * 32,
            "flags": 0,
            "owner": {
                "id": "150000000000000002",
                "username": "owner",
                "discriminator": "0",
                "global_name": None,
                "avatar": None,
            },
            "team": None,
        }
        self._last_snowflake = 0
        self._users: dict[str, JsonDict] = {bot_id: self.bot_user}
        self._channels: dict[str, JsonDict] = {}
        self._dm_by_user: dict[str, str] = {}
        self._no_server: set[str] = set()  # users who share no server with the bot
        self._dms_closed: set[str] = set()  # users who take no DM from it
        self._messages: dict[str, JsonDict] = {}
        self._interactions: dict[str, JsonDict] = {}
        # gateway
        self._ws: web.WebSocketResponse | None = None
        self._live = False
        self._wake = asyncio.Event()
        self._session_id: str | None = None
        self._intents = 0  # what the session identified with
        self._log: list[JsonDict] = []
        self._delivered = 0
        self.identifies: list[JsonDict] = []
        self.resumes: list[JsonDict] = []
        self.replayed: list[int] = []
        self.lost: list[JsonDict] = []
        self.replay_overlap = 0
        # REST routes, as (method, path after /api/v10/, handler). The bot's routes answer 401
        # without "Authorization: Bot <token>". The open ones ask for no bot token: the
        # interaction callback and webhooks carry the interaction's token in the path, and
        # the gateway's URL is open here (Discord wants the token for /gateway/bot).
        self._bot_routes: list[_Route] = [
            ("GET", re.compile(r"users/@me"), self._get_me),
            ("GET", re.compile(r"oauth2/applications/@me"), self._get_application),
            ("GET", re.compile(r"users/(\d+)"), self._get_user),
            ("POST", re.compile(r"users/@me/channels"), self._open_dm),
            ("GET", re.compile(r"channels/(\d+)"), self._get_channel),
            ("POST", re.compile(r"channels/(\d+)/messages"), self._create_message),
            ("PATCH", re.compile(r"channels/(\d+)/messages/(\d+)"), self._edit_message),
            ("PUT", re.compile(r"applications/(\d+)/commands"), self._put_commands),
            ("GET", re.compile(r"applications/(\d+)/commands"), self._get_commands),
        ]
        self._open_routes: list[_Route] = [
            ("GET", re.compile(r"gateway(/bot)?"), self._get_gateway),
            ("POST", re.compile(r"interactions/(\d+)/([^/]+)/callback"), self._callback),
            ("POST", re.compile(r"webhooks/(\d+)/([^/]+)"), self._followup),
            ("PATCH", re.compile(_ORIGINAL), self._edit_original),
            ("DELETE", re.compile(_ORIGINAL), self._delete_original),
        ]

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start serving on 127.0.0.1 (port 0 picks a free port)."""
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", API_PREFIX + "/{path:.*}", self._rest)
        await self._serve(app)

    async def stop(self) -> None:
        """Close the gateway socket, stop serving and free the port. Safe to call twice."""
        ws, self._ws, self._live = self._ws, None, False
        if ws is not None and not ws.closed:
            await ws.close(code=1001)
        await self._http.stop()

    @property
    def api_base_url(self) -> str:
        """The REST root discord.py is pointed at (``.../api/v10``)."""
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        """The gateway websocket URL (``ws://127.0.0.1:PORT/gateway``)."""
        return "ws" + self.base_url.removeprefix("http") + "/gateway"

    @property
    def connected(self) -> bool:
        """Whether a bot is identified (or resumed) on the gateway right now."""
        return self._live

    # -- injection: what users do ------------------------------------------------------------

    def user(self, user_id: str, name: str = "", *, bot: bool = False) -> JsonDict:
        """Register (or update) a user; ``name`` becomes the username and global name.

        A user registered here shares the bot's server with DMs open (anyone who writes to a
        bot does): see :meth:`reach`."""
        handle = (name or f"user{user_id[-4:]}").lower().replace(" ", "_")
        user: JsonDict = {
            "id": user_id,
            "username": handle,
            "discriminator": "0",
            "global_name": name or None,
            "avatar": None,
        }
        if bot:
            user["bot"] = True
        self._users[user_id] = user
        return user

    def reach(self, user_id: str, *, shares_server: bool = True, accepts_dms: bool = True) -> None:
        """Say whether ``user_id`` shares a server with the bot (they left it, or never
        joined: ``shares_server=False``) and takes DMs from it (privacy setting "Allow direct
        messages from server members" off, or the bot blocked: ``accepts_dms=False``)."""
        if user_id not in self._users:
            self.user(user_id)
        for flagged, wanted in ((self._no_server, shares_server), (self._dms_closed, accepts_dms)):
            if wanted:
                flagged.discard(user_id)
            else:
                flagged.add(user_id)

    def dm_channel(self, user_id: str) -> JsonDict:
        """Return the DM channel between the bot and ``user_id``, opening it if needed."""
        channel_id = self._dm_by_user.get(user_id)
        if channel_id is None:
            channel_id = self.snowflake()
            user = self._users.get(user_id) or self.user(user_id)
            self._channels[channel_id] = {
                "id": channel_id,
                "type": DM,
                "flags": 0,
                "recipients": [user],
                "last_message_id": None,
            }
            self._dm_by_user[user_id] = channel_id
        return self._channels[channel_id]

    def dm(self, user_id: str, text: str, *, name: str = "") -> JsonDict:
        """``user_id`` writes ``text`` to the bot in their DM; return the MESSAGE_CREATE data."""
        author = (
            self.user(user_id, name) if name else self._users.get(user_id) or self.user(user_id)
        )
        channel = self.dm_channel(user_id)
        return self.post_message(channel["id"], author, text)

    def group_dm(self, channel_id: str, user_id: str, text: str, *, name: str = "") -> JsonDict:
        """``user_id`` writes in a group DM (type 3, no guild) the bot is in."""
        author = (
            self.user(user_id, name) if name else self._users.get(user_id) or self.user(user_id)
        )
        if channel_id not in self._channels:
            self._channels[channel_id] = {
                "id": channel_id,
                "type": GROUP_DM,
                "name": "group",
                "icon": None,
                "owner_id": user_id,
                "flags": 0,
                "recipients": [author],
                "last_message_id": None,
            }
        return self.post_message(channel_id, author, text)

    def guild_message(
        self,
        user_id: str,
        text: str,
        *,
        name: str = "",
        guild_id: str = DEFAULT_GUILD_ID,
        channel_id: str = DEFAULT_GUILD_CHANNEL_ID,
        announcement: bool = False,
        reply_to: str | None = None,
        **extra: Any,
    ) -> JsonDict:
        """``user_id`` writes in a guild text (or announcement) channel the bot can read; with
        ``reply_to``, as a reply (ping on, the default) to that message. ``extra``: more
        message fields (``attachments``)."""
        author = (
            self.user(user_id, name) if name else self._users.get(user_id) or self.user(user_id)
        )
        self._guild_channel(guild_id, channel_id, announcement=announcement)
        if reply_to is not None:
            replied = self._messages[reply_to]
            reference = {"type": 0, "message_id": reply_to, "channel_id": channel_id}
            extra.update(
                type=19,  # REPLY
                message_reference={**reference, "guild_id": guild_id},
                referenced_message=copy.deepcopy(replied),
                mentions=[copy.deepcopy(replied["author"])],  # "ping on reply"
            )
        return self.post_message(channel_id, author, text, **extra)

    def bot_post(self, channel_id: str, text: str) -> JsonDict:
        """The bot's own message in a guild channel (as if it had posted it), dispatched."""
        self._guild_channel(DEFAULT_GUILD_ID, channel_id, announcement=False)
        return self.own_message(channel_id, text)

    def attachment(self, filename: str = "photo.png", content_type: str = "image/png") -> JsonDict:
        """A file as a message carries it ("Attachment Object"), for ``attachments=[...]``."""
        attachment_id = self.snowflake()
        path = f"attachments/{DEFAULT_GUILD_CHANNEL_ID}/{attachment_id}/{filename}"
        return {
            "id": attachment_id,
            "filename": filename,
            "size": 1024,
            "url": f"https://cdn.discordapp.com/{path}",
            "proxy_url": f"https://media.discordapp.net/{path}",
            "content_type": content_type,
        }

    def own_message(self, channel_id: str, text: str) -> JsonDict:
        """A message authored by the bot itself appears (as when it posts from elsewhere)."""
        return self.post_message(channel_id, self.bot_user, text)

    def post_message(self, channel_id: str, author: JsonDict, text: str, **extra: Any) -> JsonDict:
        """Create a message in a known channel and dispatch MESSAGE_CREATE; return its data."""
        message = self._new_message(channel_id, author, text, **extra)
        return self.dispatch("MESSAGE_CREATE", self._create_event(message))

    def press_button(
        self,
        user_id: str,
        message_id: str,
        custom_id: str | None = None,
        *,
        label: str | None = None,
    ) -> JsonDict:
        """``user_id`` presses a button on a message; return the INTERACTION_CREATE data.

        The button is named by ``custom_id`` (used as given, so forged ids can be played)
        or found by ``label`` among the message's components.
        """
        message = self._messages[message_id]
        if custom_id is None:
            buttons = [c for row in message.get("components", []) for c in row["components"]]
            custom_id = next(b["custom_id"] for b in buttons if label in (None, b["label"]))
        data = {"custom_id": custom_id, "component_type": 2}
        return self._interact(
            user_id, MESSAGE_COMPONENT, message["channel_id"], data, message=copy.deepcopy(message)
        )

    def slash(
        self,
        user_id: str,
        name: str,
        options: Mapping[str, str] | None = None,
        *,
        channel_id: str | None = None,
    ) -> JsonDict:
        """``user_id`` runs the slash command ``/name`` (string options) in their DM with the
        bot, or in ``channel_id``; return the INTERACTION_CREATE data."""
        channel_id = channel_id or self.dm_channel(user_id)["id"]
        synced = next((c for c in self.commands if c["name"] == name), None)
        data: JsonDict = {
            "id": synced["id"] if synced else self.snowflake(),
            "name": name,
            "type": 1,
            "options": [{"name": k, "type": 3, "value": v} for k, v in (options or {}).items()],
        }
        return self._interact(user_id, APPLICATION_COMMAND, channel_id, data)

    def dispatch(self, event: str, data: JsonDict) -> JsonDict:
        """Queue a gateway dispatch (``op`` 0) for the bot; return ``data``.

        With no session it is lost, as on Discord; while the socket is down it waits for the
        RESUME.
        """
        if self._session_id is None:
            self.lost.append({"t": event, "d": data})
            return data
        self._append(event, data)
        return data

    async def drop_connection(self, code: int = 4000) -> None:
        """Close the gateway socket with ``code`` (4000: unknown error, the bot resumes)."""
        ws, self._live = self._ws, False
        if ws is not None and not ws.closed:
            await ws.close(code=code)

    async def request_reconnect(self) -> None:
        """Send RECONNECT (op 7): the bot closes the socket and resumes."""
        ws, self._live = self._ws, False
        if ws is not None and not ws.closed:
            await ws.send_json({"op": 7, "d": None, "s": None, "t": None})

    # -- reading what the bot did ------------------------------------------------------------

    def snowflake(self) -> str:
        """A fresh, increasing snowflake carrying the fake clock's time."""
        millis = int(self._clock.now().timestamp() * 1000) - DISCORD_EPOCH_MS
        self._last_snowflake = max(self._last_snowflake + 1, millis << 22)
        return str(self._last_snowflake)

    def dm_channel_id(self, user_id: str) -> str | None:
        """The id of the bot's DM channel with ``user_id``, if one exists."""
        return self._dm_by_user.get(user_id)

    def messages_in(self, channel_id: str) -> list[str]:
        """The texts the bot put in ``channel_id`` as a client shows them, oldest first."""
        return [displayed(m["content"]) for m in self.sent if m["channel_id"] == channel_id]

    def texts_to(self, user_id: str) -> list[str]:
        """The texts the bot put in its DM with ``user_id`` as shown, oldest first."""
        channel_id = self._dm_by_user.get(user_id)
        return self.messages_in(channel_id) if channel_id else []

    def message(self, message_id: str) -> JsonDict:
        """A copy of a message as it is now (after edits). Raises KeyError if unknown."""
        return copy.deepcopy(self._messages[message_id])

    def buttons(self, message_id: str) -> list[tuple[str, str]]:
        """The ``(label, custom_id)`` of every button the message carries now."""
        rows = self._messages[message_id].get("components", [])
        return [(c["label"], c["custom_id"]) for row in rows for c in row["components"]]

    # -- gateway -----------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        old, self._ws, self._live = self._ws, ws, False
        if old is not None and not old.closed:
            await old.close(code=4000)
        wake = self._wake = asyncio.Event()
        await ws.send_json(
            {"op": 10, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}, "s": None, "t": None}
        )
        pump = asyncio.create_task(self._pump(ws, wake))
        try:
            async for raw in ws:
                if raw.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(raw.data)
                op, data = frame.get("op"), frame.get("d")
                if op == 1:
                    await ws.send_json({"op": 11, "d": None, "s": None, "t": None})
                elif op == 2 and isinstance(data, dict):
                    await self._identify(ws, request, data)
                elif op == 6 and isinstance(data, dict):
                    await self._resume(ws, data)
        finally:
            pump.cancel()
            if self._ws is ws:
                self._live = False
        return ws

    async def _identify(
        self, ws: web.WebSocketResponse, request: web.Request, data: JsonDict
    ) -> None:
        if data.get("token") != self.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return
        self.identifies.append(data)
        intents = data.get("intents")
        if not isinstance(intents, int) or intents < 0:
            await ws.close(code=4013, message=b"Invalid intent(s).")
            return
        if intents & PRIVILEGED_INTENTS & ~self.granted_intents:
            await ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        self._intents = intents
        # A fresh session: whatever the old one had not delivered is gone, as on Discord.
        self.lost += [{"t": f["t"], "d": f["d"]} for f in self._log[self._delivered :]]
        self._session_id = secrets.token_hex(8)
        self._log, self._delivered = [], 0
        self._append(
            "READY",
            {
                "v": 10,
                "user": self.bot_user,
                "guilds": [],
                "session_id": self._session_id,
                "resume_gateway_url": f"ws://{request.host}/gateway",
                "application": {"id": self.application["id"], "flags": 0},
                "private_channels": [],
                "relationships": [],
            },
        )
        self._live = True

    async def _resume(self, ws: web.WebSocketResponse, data: JsonDict) -> None:
        if data.get("token") != self.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return
        if self._session_id is None or data.get("session_id") != self._session_id:
            await ws.send_json({"op": 9, "d": False, "s": None, "t": None})
            return
        self.resumes.append(data)
        seq = data.get("seq")
        start = max(1, (seq if isinstance(seq, int) else 0) - self.replay_overlap)
        self.replayed += list(range(start + 1, min(self._delivered, seq or 0) + 1))
        self._delivered = start
        self._append("RESUMED", {})
        self._live = True
        self._wake.set()

    def _append(self, event: str, data: JsonDict) -> None:
        self._log.append({"op": 0, "s": len(self._log) + 1, "t": event, "d": data})
        self._wake.set()

    async def _pump(self, ws: web.WebSocketResponse, wake: asyncio.Event) -> None:
        """Write the session's dispatches to the socket in order, as they come."""
        while not ws.closed:
            await wake.wait()
            wake.clear()
            while self._ws is ws and self._live and self._delivered < len(self._log):
                frame = self._log[self._delivered]
                self._delivered += 1
                try:
                    await ws.send_json(frame)
                except ConnectionError:
                    return

    # -- REST --------------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        self.calls.append((request.method, path))
        for routes, needs_auth in ((self._bot_routes, True), (self._open_routes, False)):
            for method, pattern, handler in routes:
                match = pattern.fullmatch(path)
                if match is None or method != request.method:
                    continue
                if needs_auth and request.headers.get("Authorization") != f"Bot {self.token}":
                    return _error(401, "401: Unauthorized")
                return await handler(request, match)
        return _error(404, "404: Not Found")

    async def _get_me(self, _request: web.Request, _match: re.Match[str]) -> web.Response:
        return _json(self.bot_user)

    async def _get_application(self, _r: web.Request, _m: re.Match[str]) -> web.Response:
        return _json(self.application)

    async def _get_gateway(self, _request: web.Request, _match: re.Match[str]) -> web.Response:
        return _json(
            {
                "url": self.gateway_url,
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 0,
                    "max_concurrency": 1,
                },
            }
        )

    async def _get_user(self, _request: web.Request, match: re.Match[str]) -> web.Response:
        user = self._users.get(match[1])
        return _json(user) if user else _error(404, "Unknown User", 10013)

    async def _open_dm(self, request: web.Request, _match: re.Match[str]) -> web.Response:
        body = await _body(request)
        recipient = str(body.get("recipient_id", ""))
        if not recipient.isdigit() or recipient == self.bot_user["id"]:
            return _error(400, "Invalid Recipient(s)", 50033)
        known = self._users.get(recipient)
        if known is not None and known.get("bot"):
            return _error(400, "Cannot send messages to this user", CANNOT_MESSAGE_USER)
        if known is None:
            self.reach(recipient, shares_server=False)  # somebody the bot never met
        return _json(self.dm_channel(recipient))

    async def _get_channel(self, _request: web.Request, match: re.Match[str]) -> web.Response:
        channel = self._channels.get(match[1])
        return _json(channel) if channel else _error(404, "Unknown Channel", 10003)

    async def _create_message(self, request: web.Request, match: re.Match[str]) -> web.Response:
        channel_id = match[1]
        if channel_id not in self._channels:
            return _error(404, "Unknown Channel", 10003)
        body = await _body(request)
        problem = _check_message(body)
        if problem:
            return _error(400, problem, 50035)
        refusal = self._refusal(self._channels[channel_id])
        if refusal is not None:
            return _error(403, refusal[1], refusal[0])
        return _json(self._bot_message(channel_id, body, via="rest"))

    def _refusal(self, channel: JsonDict) -> tuple[int, str] | None:
        """Why Discord refuses the bot's message in ``channel`` (a DM nobody can receive)."""
        if channel["type"] != DM:
            return None
        user_id = channel["recipients"][0]["id"]
        if user_id in self._no_server:
            code, why = NO_MUTUAL_GUILDS, " due to having no mutual guilds"
        elif user_id in self._dms_closed:
            code, why = CANNOT_MESSAGE_USER, ""
        else:
            return None
        self.refused.append({"channel_id": channel["id"], "user_id": user_id, "code": code})
        return code, f"Cannot send messages to this user{why}"

    async def _edit_message(self, request: web.Request, match: re.Match[str]) -> web.Response:
        message = self._messages.get(match[2])
        if message is None or message["channel_id"] != match[1]:
            return _error(404, "Unknown Message", 10008)
        if message["author"]["id"] != self.bot_user["id"]:
            return _error(403, "Cannot edit a message authored by another user", 50005)
        body = await _body(request)
        problem = _check_message(body)
        if problem:
            return _error(400, problem, 50035)
        return _json(self._apply_edit(message, body))

    async def _put_commands(self, request: web.Request, match: re.Match[str]) -> web.Response:
        if match[1] != self.application["id"]:
            return _error(403, "Missing Access", 50001)
        body = await _body(request)
        commands = body if isinstance(body, list) else []
        self.commands = [
            {
                **c,
                "id": self.snowflake(),
                "application_id": self.application["id"],
                "version": self.snowflake(),
                "default_member_permissions": None,
                "type": c.get("type", 1),
                "description": c.get("description", ""),
            }
            for c in commands
            if isinstance(c, dict)
        ]
        return _json(self.commands)

    async def _get_commands(self, _request: web.Request, _match: re.Match[str]) -> web.Response:
        return _json(self.commands)

    async def _callback(self, request: web.Request, match: re.Match[str]) -> web.Response:
        interaction = self._interactions.get(match[1])
        if interaction is None or interaction["token"] != match[2]:
            return _error(404, "Unknown interaction", 10062)
        if interaction["responded"] is not None:
            return _error(400, "Interaction has already been acknowledged.", 40060)
        body = await _body(request)
        kind, data = body.get("type"), body.get("data") or {}
        self.interaction_responses.append(
            {"interaction_id": match[1], "type": kind, "data": copy.deepcopy(data)}
        )
        interaction["responded"] = kind
        answer: JsonDict = {
            "interaction": {
                "id": match[1],
                "type": interaction["type"],
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool(int(data.get("flags", 0)) & 64),
            },
            "resource": {"type": kind},
        }
        if kind in (4, 5):  # a message, or the "thinking" placeholder for one
            fields = data if kind == 4 else {"content": "", "flags": _LOADING_FLAG}
            message = self._bot_message(
                interaction["channel_id"], fields, via="interaction", record=kind == 4
            )
            interaction["original"] = message["id"]
            answer["interaction"]["response_message_id"] = message["id"]
            answer["resource"]["message"] = message
        elif kind not in (6, 7):
            return _error(400, "Invalid interaction response type", 50035)
        return _json(answer)

    async def _followup(self, request: web.Request, match: re.Match[str]) -> web.Response:
        interaction = self._by_token(match[1], match[2])
        if interaction is None:
            return _error(404, "Unknown Webhook", 10015)
        if interaction["responded"] is None:
            return _error(404, "Unknown Webhook", 10015)  # no response yet: no webhook
        body = await _body(request)
        problem = _check_message(body)
        if problem:
            return _error(400, problem, 50035)
        original = self._messages.get(interaction.get("original") or "")
        if original is not None and int(original.get("flags", 0)) & _LOADING_FLAG:
            # Documented: the first followup after a deferred response edits that response.
            original["flags"] = int(body.get("flags", 0))
            message = self._apply_edit(original, body, record=False)
            self._record_sent(message, body, via="interaction")
            return _json(message)
        return _json(self._bot_message(interaction["channel_id"], body, via="interaction"))

    async def _edit_original(self, request: web.Request, match: re.Match[str]) -> web.Response:
        interaction = self._by_token(match[1], match[2])
        original = self._messages.get((interaction or {}).get("original") or "")
        if original is None:
            return _error(404, "Unknown Message", 10008)
        body = await _body(request)
        problem = _check_message(body)
        if problem:
            return _error(400, problem, 50035)
        if int(original.get("flags", 0)) & _LOADING_FLAG:
            original["flags"] = 0
            message = self._apply_edit(original, body, record=False)
            self._record_sent(message, body, via="interaction")
            return _json(message)
        return _json(self._apply_edit(original, body))

    async def _delete_original(self, _request: web.Request, match: re.Match[str]) -> web.Response:
        interaction = self._by_token(match[1], match[2])
        original = (interaction or {}).get("original")
        if interaction is None or original not in self._messages:
            return _error(404, "Unknown Message", 10008)
        message = self._messages.pop(original)
        interaction["original"] = None
        self.dispatch("MESSAGE_DELETE", {"id": message["id"], "channel_id": message["channel_id"]})
        return web.Response(status=204)

    # -- helpers -----------------------------------------------------------------------------

    def _guild_channel(self, guild_id: str, channel_id: str, *, announcement: bool) -> None:
        if channel_id not in self._channels:
            self._channels[channel_id] = {
                "id": channel_id,
                "type": GUILD_ANNOUNCEMENT if announcement else GUILD_TEXT,
                "guild_id": guild_id,
                "name": "general",
                "position": 0,
                "permission_overwrites": [],
                "nsfw": False,
                "parent_id": None,
                "topic": None,
                "rate_limit_per_user": 0,
                "flags": 0,
                "last_message_id": None,
            }

    def _new_message(
        self, channel_id: str, author: JsonDict, content: str, **extra: Any
    ) -> JsonDict:
        channel = self._channels[channel_id]
        message: JsonDict = {
            "id": self.snowflake(),
            "channel_id": channel_id,
            "type": 0,
            "content": content,
            "author": copy.deepcopy(author),
            "timestamp": self._clock.now().isoformat(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [
                copy.deepcopy(self._users[user_id])
                for user_id in dict.fromkeys(_MENTION.findall(content))
                if user_id in self._users
            ],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "components": [],
            "pinned": False,
            "flags": 0,
            **extra,
        }
        if "guild_id" in channel:
            message["guild_id"] = channel["guild_id"]
        self._messages[message["id"]] = message
        channel["last_message_id"] = message["id"]
        return message

    def _create_event(self, message: JsonDict) -> JsonDict:
        """MESSAGE_CREATE data: the message plus the gateway's extra fields."""
        channel = self._channels[message["channel_id"]]
        event = copy.deepcopy(message)
        if not self._content_seen(message, channel):
            event.update(copy.deepcopy(_CONTENT_FIELDS))
            event.pop("poll", None)
        event["channel_type"] = channel["type"]
        if "guild_id" in channel:
            event["member"] = {
                "roles": [],
                "joined_at": self._clock.now().isoformat(),
                "deaf": False,
                "mute": False,
                "flags": 0,
            }
        return event

    def _content_seen(self, message: JsonDict, channel: JsonDict) -> bool:
        """Whether the session gets ``message``'s content: with the Message Content intent,
        or in a DM with the app, for the app's own message, or one that mentions it."""
        bot_id = self.bot_user["id"]
        return (
            bool(self._intents & MESSAGE_CONTENT)
            or channel["type"] == DM
            or message["author"]["id"] == bot_id
            or any(user["id"] == bot_id for user in message.get("mentions", []))
        )

    def _bot_message(
        self, channel_id: str, body: Mapping[str, Any], *, via: str, record: bool = True
    ) -> JsonDict:
        message = self._new_message(
            channel_id,
            self.bot_user,
            str(body.get("content") or ""),
            components=copy.deepcopy(body.get("components") or []),
            flags=int(body.get("flags") or 0),
        )
        if via == "interaction":
            message["webhook_id"] = self.application["id"]
            message["application_id"] = self.application["id"]
        if record:
            self._record_sent(message, body, via=via)
        self.dispatch("MESSAGE_CREATE", self._create_event(message))  # Discord echoes it
        return copy.deepcopy(message)

    def _record_sent(self, message: JsonDict, body: Mapping[str, Any], *, via: str) -> None:
        self.sent.append(
            {
                "channel_id": message["channel_id"],
                "message_id": message["id"],
                "content": message["content"],
                "components": copy.deepcopy(message["components"]),
                "flags": message["flags"],
                "allowed_mentions": body.get("allowed_mentions"),
                "via": via,
            }
        )

    def _apply_edit(
        self, message: JsonDict, body: Mapping[str, Any], *, record: bool = True
    ) -> JsonDict:
        if "content" in body:
            message["content"] = str(body["content"] or "")
        if "components" in body:
            message["components"] = copy.deepcopy(body["components"] or [])
        message["edited_timestamp"] = self._clock.now().isoformat()
        if record:
            self.edits.append(
                {
                    "channel_id": message["channel_id"],
                    "message_id": message["id"],
                    "content": message["content"],
                    "components": copy.deepcopy(message["components"]),
                }
            )
        self.dispatch("MESSAGE_UPDATE", self._create_event(message))
        return copy.deepcopy(message)

    def _interact(
        self, user_id: str, kind: int, channel_id: str, data: JsonDict, **extra: Any
    ) -> JsonDict:
        user = self._users.get(user_id) or self.user(user_id)
        channel = self._channels[channel_id]
        interaction: JsonDict = {
            "id": self.snowflake(),
            "application_id": self.application["id"],
            "type": kind,
            "token": "itok-" + secrets.token_urlsafe(16),
            "version": 1,
            "data": data,
            "channel_id": channel_id,
            "channel": copy.deepcopy(channel),
            "locale": "en-US",
            "app_permissions": "0",
            "attachment_size_limit": 8 * 1024 * 1024,
            "entitlements": [],
            "authorizing_integration_owners": {},
            **extra,
        }
        if "guild_id" in channel:
            interaction["guild_id"] = channel["guild_id"]
            interaction["guild_locale"] = "en-US"
            interaction["member"] = {
                "user": user,
                "roles": [],
                "permissions": "0",
                "joined_at": self._clock.now().isoformat(),
                "deaf": False,
                "mute": False,
                "flags": 0,
            }
            interaction["context"] = 0
        else:
            interaction["user"] = user
            interaction["context"] = 1 if channel["type"] == DM else 2
        self._interactions[interaction["id"]] = {
            "token": interaction["token"],
            "channel_id": channel_id,
            "type": kind,
            "responded": None,
            "original": None,
        }
        return self.dispatch("INTERACTION_CREATE", interaction)

    def _by_token(self, application_id: str, token: str) -> JsonDict | None:
        if application_id != self.application["id"]:
            return None
        return next((i for i in self._interactions.values() if i["token"] == token), None)


def _check_message(body: Mapping[str, Any]) -> str | None:
    """Validate a message body the way Discord does; return the problem, or None."""
    content = body.get("content")
    if content is not None and len(str(content)) > MAX_CONTENT:
        return "Invalid Form Body: content: Must be 2000 or fewer in length."
    for row in body.get("components") or []:
        for component in row.get("components", []):
            custom_id = component.get("custom_id")
            if custom_id is not None and not 1 <= len(custom_id) <= 100:
                return "Invalid Form Body: custom_id: Must be between 1 and 100 in length."
            if len(component.get("label") or "") > 80:
                return "Invalid Form Body: label: Must be 80 or fewer in length."
    return None


async def _body(request: web.Request) -> Any:
    """The JSON body of a request (or of its ``payload_json`` part for multipart)."""
    if request.content_type == "multipart/form-data":
        form = await request.post()
        raw = form.get("payload_json")
        return json.loads(raw) if isinstance(raw, str) else {}
    if not request.can_read_body:
        return {}
    try:
        return await request.json()
    except ValueError:
        return {}


DISCORD = DemoSpec(
    provider="discord",
    owner_id="190000000000000001",
    user_id=lambda n: str(190000000000000001 + n),  # Discord user ids are snowflakes
    fake=FakeDiscordServer,
    config=lambda fake: {
        "token": fake.token,
        "api_base_url": fake.api_base_url,
        "gateway_url": fake.gateway_url,
    },
)
"""Discord's demo people, and the block that points discord.py at the fake."""


class DiscordDemo(PeopleDemo[FakeDiscordServer], spec=DISCORD):
    """The Discord fake as :class:`providers.fakebase.DemoPlatform` (people, not API calls)."""

    async def start(self) -> None:
        """Start the fake, the owner a member of the bot's server (or no notice reaches them:
        Discord delivers a bot's DM only to someone who shares a server with it)."""
        self.fake.user(self.owner_id, "Owner")
        await super().start()

    # -- contract capabilities (issue 10: providers.ContractPlatform.fake) -------------------
    # Played as discord-api-docs describe the gateway and REST API.

    def dm_written(self, user_id: str, text: str, *, name: str) -> Written:
        """A MESSAGE_CREATE in the DM channel; a snowflake carries its creation time in
        milliseconds since the Discord epoch, shifted left 22 bits ("Snowflakes")."""
        message_id = self.fake.dm(user_id, text, name=name)["id"]
        millis = (int(message_id) >> 22) + DISCORD_EPOCH_MS
        return Written(message_id, datetime.fromtimestamp(millis / 1000, UTC))

    async def dm_delivered_twice(self, user_id: str, text: str, *, name: str) -> None:
        """The gateway connection drops after the MESSAGE_CREATE went out; the bot RESUMEs and
        the gateway replays the session's events from the sequence number the bot gives,
        this one included ("Gateway: Resuming")."""
        message_id = self.fake.dm(user_id, text, name=name)["id"]
        await self.handed_over()
        seq = next(
            f["s"]
            for f in self.fake._log
            if f["t"] == "MESSAGE_CREATE" and f["d"]["id"] == message_id
        )
        resumed, overlap = len(self.fake.resumes), self.fake.replay_overlap
        self.fake.replay_overlap = len(self.fake._log) - seq + 1
        try:
            await self.fake.drop_connection(4000)
            await wait_until(lambda: len(self.fake.resumes) > resumed and self.fake.connected)
            await self.handed_over()
        finally:
            self.fake.replay_overlap = overlap
        if seq not in self.fake.replayed:
            raise AssertionError(f"the RESUME did not replay dispatch {seq}")

    def group_message(self, user_id: str, text: str, *, name: str) -> None:
        """A MESSAGE_CREATE in a guild text channel (type 0): a reply, ping on, to one of the
        bot's messages there. Without the Message Content intent that is a guild message whose
        text an app still gets ("Replies to your app's messages"); any other arrives empty."""
        said = self.fake.bot_post(DEFAULT_GUILD_CHANNEL_ID, "Hello, server")
        self.fake.guild_message(user_id, text, name=name, reply_to=said["id"])

    def own_message(self, text: str) -> None:
        """A MESSAGE_CREATE authored by the bot's own user: the gateway sends the bot its own
        messages like any other."""
        self.fake.own_message(self.fake.dm_channel(self.owner_id)["id"], text)

    def non_text_dm(self, user_id: str, *, name: str) -> None:
        """A DM with an attachment and empty ``content`` ("Attachment Object")."""
        author = self.fake.user(user_id, name)
        channel = self.fake.dm_channel(user_id)["id"]
        self.fake.post_message(channel, author, "", attachments=[self.fake.attachment()])

    async def handed_over(self) -> None:
        """Every dispatch of the live session written to the socket. With no live session the
        gateway holds them for a RESUME (a fresh IDENTIFY forgets them)."""
        await wait_until(
            lambda: not self.fake.connected or self.fake._delivered >= len(self.fake._log)
        )

    def shown_to(self, user_id: str) -> list[str]:
        """The bot's messages in the DM channel as the client shows them now (markdown
        escapes undone, edits applied; deleted ones gone)."""
        channel = self.fake.dm_channel_id(user_id)
        return [
            displayed(self.fake.message(m["message_id"])["content"])
            for m in self.fake.sent
            if m["channel_id"] == channel and m["message_id"] in self.fake._messages
        ]

    def buttons_on(self, message_id: str) -> list[str]:
        """The labels of the message's button components now."""
        return [label for label, _ in self.fake.buttons(message_id)]

    def press(self, user_id: str, message_id: str, label: str) -> None:
        """An INTERACTION_CREATE of type MESSAGE_COMPONENT for the pressed button."""
        if label not in self.buttons_on(message_id):
            raise LookupError(f"message {message_id} shows no button {label!r}")
        self.fake.press_button(user_id, message_id, label=label)
