"""What pairbot's messages are on Slack: escaped plain text, Block Kit sections and buttons.

A message's ``text`` goes out with Slack's three control characters escaped (:func:`escape`),
so a stranger's name cannot mention ``@channel``, link or format; what users type arrives
escaped and is read back with :func:`unescape`. Escaped, a text is cut into messages of at
most :data:`MAX_TEXT` characters (:data:`MESSAGE_SPLIT`, never inside an entity). A message
with buttons also carries :func:`blocks`: the same text as plain-text sections (never parsed;
longer than one section takes several), then one actions block of at most :data:`MAX_BUTTONS`.
An edit carries :func:`sections` alone: ``chat.update`` has no ``mrkdwn`` switch and parses a
bare ``text`` as markup, so only plain-text blocks show a name as written. Each button's
``action_id`` is :data:`ACTION_PREFIX` plus its command and its ``value`` the command;
:func:`pressed_command` reads a press back. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.core.models import Button
from providers.limits import TextSplit, clip

ACTION_PREFIX = "pairbot:"
"""Every button the provider renders has an ``action_id`` of this prefix plus its command."""
MAX_COMMAND_CHARS = 255 - len(ACTION_PREFIX)
"""A button's command must fit in an ``action_id`` (255 characters) after the prefix."""
MAX_LABEL_CHARS = 75
"""Slack refuses button labels longer than this; longer ones are cut."""
MAX_SECTION_CHARS = 3000
"""Slack's limit on the text of one section block; longer texts take several sections."""
MAX_TEXT = 40_000
"""chat.postMessage: "Slack will truncate messages containing more than 40,000 characters"
(changelog 2018-04 "Truncating really long messages": "Split intentionally long messages into
multiple postings of no more than 40,000 characters each")."""
MAX_BUTTONS = 25
"""Actions block: "There is a maximum of 25 elements in each action block" (slack_sdk
``ActionsBlock.elements_max_length``)."""

_ENTITY = r"&(?:amp|lt|gt);"
MESSAGE_SPLIT = TextSplit(limit=MAX_TEXT, lines_from=0.5, keep_breaks=True, atom=_ENTITY)
"""How an escaped text is cut into messages: at a line end in the last half, else hard, never
inside an entity; nothing is dropped, so the parts join back to the text."""
_SECTIONS = TextSplit(limit=MAX_SECTION_CHARS, lines_from=None, keep_breaks=True)


def escape(text: str) -> str:
    """Slack's three control characters as entities, so the text is shown, never parsed."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def unescape(text: str) -> str:
    """Undo the escaping Slack applies to what users type (``&lt;`` back to ``<``)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": False}


def sections(text: str) -> list[dict[str, Any]]:
    """``text`` as plain-text sections, shown as written (none if it is empty)."""
    parts = _SECTIONS.split(text) if text else []
    return [{"type": "section", "text": _plain(part)} for part in parts]


def blocks(text: str, buttons: Sequence[Button]) -> list[dict[str, Any]]:
    """``text`` as plain-text :func:`sections` and one actions block of ``buttons`` (already
    checked against the provider's ``button_limits``)."""
    elements = [
        {
            "type": "button",
            "action_id": ACTION_PREFIX + button.command,
            "text": _plain(clip(button.label, MAX_LABEL_CHARS) or "?"),
            "value": button.command,
        }
        for button in buttons
    ]
    actions = {"type": "actions", "block_id": "pairbot_actions", "elements": elements}
    return [*sections(text), actions]


def pressed_command(action: dict[str, Any]) -> str:
    """The command of a pressed pairbot button (one ``block_actions`` action); ``""`` for
    anything else."""
    action_id = action.get("action_id")
    if action.get("type") != "button" or not isinstance(action_id, str):
        return ""
    if not action_id.startswith(ACTION_PREFIX):
        return ""
    value = action.get("value")
    return value if isinstance(value, str) and value else action_id.removeprefix(ACTION_PREFIX)


__all__ = [
    "ACTION_PREFIX",
    "MAX_BUTTONS",
    "MAX_COMMAND_CHARS",
    "MAX_LABEL_CHARS",
    "MAX_SECTION_CHARS",
    "MAX_TEXT",
    "MESSAGE_SPLIT",
    "blocks",
    "escape",
    "pressed_command",
    "sections",
    "unescape",
]
