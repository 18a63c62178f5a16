"""What Slack sends, read: which events count, where they were written, how a re-delivery is
recognised, and what a button press or a ``/pairbot`` command says.

Pure functions over the request bodies Bolt hands its listeners (Socket Mode envelopes and
Events API posts alike); no I/O. What needs the Web API (whose IM a channel is, the name a
user gives) is the provider's.

* :func:`is_person_message`: only messages a person wrote count, with text or files: those
  without a ``subtype``, and file uploads (``file_share``: "If an end-user posts a message
  with attached files, the message event comes with this subtype", slack_bolt's
  ``AsyncApp.message``); any other ``subtype`` (edits, deletions, joins, ``bot_message``),
  a ``bot_id``, or the bot itself does not. :func:`carries_files`: it has files (a photo, an
  upload), shown as ``media``. :data:`CHANNEL_KINDS`: ``im`` is a DM, ``mpim`` and private
  ``group`` channels GROUP, public channels CHANNEL.
* Dedupe keys (:func:`message_keys`, :func:`action_keys`, :func:`command_keys`): Slack
  delivers at least once, so an event is known again by any of ``event_id``, its channel and
  ``ts``, ``client_msg_id``, ``trigger_id`` or the action's ``action_ts``; a key whose id is
  missing is None (never remembered).
* :func:`read_press` and :func:`read_command`: the fields of a ``block_actions`` press of a
  pairbot button and of a slash command, or None if one is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.core.commands import umbrella_line
from bot.core.models import ChatKind
from providers._json import as_dict, as_str
from providers.slack.blocks import pressed_command, unescape

CHANNEL_KINDS = {
    "im": ChatKind.DM,
    "mpim": ChatKind.GROUP,
    "group": ChatKind.GROUP,
    "channel": ChatKind.CHANNEL,
}
"""A message event's ``channel_type`` → the kind of chat; other types are not read."""

Key = tuple[str, ...]
"""A dedupe key: what it is keyed by, then the ids."""


def ts_time(ts: object) -> datetime | None:
    """A message ``ts`` (``"1700000000.000100"``) as an aware datetime."""
    try:
        return datetime.fromtimestamp(float(str(ts)), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


PERSON_SUBTYPES = frozenset({"file_share"})
"""The ``subtype`` values of messages a person wrote (those without one are too)."""


def carries_files(event: dict[str, Any]) -> bool:
    """Whether a message event carries files (``files``, or the ``file_share`` subtype)."""
    files = event.get("files")
    return event.get("subtype") == "file_share" or (isinstance(files, list) and bool(files))


def is_person_message(event: dict[str, Any], bot_user_id: str) -> bool:
    """A message a person (not the bot) wrote, with text or files, in a channel type we read."""
    if event.get("type") != "message" or event.get("hidden"):
        return False
    if "subtype" in event and event["subtype"] not in PERSON_SUBTYPES:
        return False
    if event.get("bot_id") or event.get("bot_profile"):
        return False
    user = as_str(event.get("user"))
    if not user or user == bot_user_id:
        return False
    text = event.get("text")
    written = isinstance(text, str) and bool(text.strip())
    return (written or carries_files(event)) and as_str(event.get("channel_type")) in CHANNEL_KINDS


def looks_like_im(channel_id: str, channel_name: str) -> bool:
    """Whether a channel (of a press or a command) is someone's IM with the bot."""
    return channel_id.startswith("D") or channel_name == "directmessage"


def shared_kind(channel_id: str, channel_name: str) -> ChatKind:
    """The kind of a channel that is no IM: GROUP if private or a group DM, else CHANNEL."""
    if (
        channel_id.startswith("G")
        or channel_name.startswith("mpdm-")
        or channel_name == "privategroup"
    ):
        return ChatKind.GROUP
    return ChatKind.CHANNEL


def _key(kind: str, *ids: str) -> Key | None:
    return (kind, *ids) if ids[-1] else None


def message_keys(body: dict[str, Any], event: dict[str, Any]) -> tuple[Key | None, ...]:
    """The keys of a message event: its ``event_id``, channel and ``ts``, ``client_msg_id``."""
    return (
        _key("event", as_str(body.get("event_id"))),
        _key("ts", as_str(event.get("channel")), as_str(event.get("ts"))),
        _key("msg", as_str(event.get("client_msg_id"))),
    )


def action_keys(body: dict[str, Any]) -> tuple[Key | None, ...]:
    """The keys of a ``block_actions`` body: its ``trigger_id``, the first action's time."""
    actions = body.get("actions")
    action = actions[0] if isinstance(actions, list) and actions else None
    first = (
        _key("action", as_str(action.get("action_ts")), as_str(action.get("action_id")))
        if isinstance(action, dict)
        else None
    )
    return (*command_keys(body), first)


def command_keys(body: dict[str, Any]) -> tuple[Key | None, ...]:
    """The key of a slash command (or a press): its ``trigger_id``."""
    return (_key("trigger", as_str(body.get("trigger_id"))),)


@dataclass(frozen=True, slots=True)
class Interaction:
    """What a person did without writing a message: pressed a button, or typed ``/pairbot``."""

    user_id: str
    channel_id: str
    channel_name: str
    text: str
    """The press's command, or the line the slash command stands for."""
    message_ts: str | None = None
    """The pressed message's ``ts``; None for a slash command."""


def read_press(body: dict[str, Any]) -> Interaction | None:
    """A press of a pairbot button, or None (someone else's button, a field missing)."""
    user, actions = body.get("user"), body.get("actions")
    container, channel = as_dict(body.get("container")), as_dict(body.get("channel"))
    if not isinstance(user, dict) or not isinstance(actions, list) or not actions:
        return None
    press = Interaction(
        user_id=as_str(user.get("id")),
        channel_id=as_str(channel.get("id")) or as_str(container.get("channel_id")),
        channel_name=as_str(channel.get("name")),
        text=pressed_command(as_dict(actions[0])),
        message_ts=(
            as_str(container.get("message_ts")) or as_str(as_dict(body.get("message")).get("ts"))
        ),
    )
    return (
        press if press.user_id and press.channel_id and press.message_ts and press.text else None
    )


def read_command(body: dict[str, Any]) -> Interaction | None:
    """A slash command as the owner line it stands for, or None (no user or channel)."""
    command = Interaction(
        user_id=as_str(body.get("user_id")),
        channel_id=as_str(body.get("channel_id")),
        channel_name=as_str(body.get("channel_name")),
        text=umbrella_line(unescape(as_str(body.get("text")))),
    )
    return command if command.user_id and command.channel_id else None


__all__ = [
    "CHANNEL_KINDS",
    "Interaction",
    "Key",
    "action_keys",
    "carries_files",
    "command_keys",
    "is_person_message",
    "looks_like_im",
    "message_keys",
    "read_command",
    "read_press",
    "shared_kind",
    "ts_time",
]
