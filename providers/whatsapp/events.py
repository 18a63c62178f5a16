"""What WhatsApp POSTs to the webhook, read: the messages and statuses of one body.

A body is untrusted JSON (its signature proves it came from Meta, not that it has the shape
the documentation shows), so every value is read through the readers of
:mod:`providers._json`, which turn anything unexpected into an empty value. Nothing here does
I/O or logs; :class:`~providers.whatsapp.provider.WhatsAppProvider` decides what a
change means for it (another business number, a status it waits for, a re-delivery).

``text`` messages, media messages (image, video, document, audio, sticker: an
:class:`~bot.core.models.Inbound` with ``media`` set and the caption, or nothing, as its text)
and ``interactive`` reply-button presses become :class:`~bot.core.models.Inbound` values; the
sender is the ``wa_id``, the chat of a DM is the ``wa_id`` too, a message carrying a
``group_id`` is a group. The business number's own messages, system messages
(:class:`NumberChange`) and every other message type (reactions, locations, contacts, ...)
never do.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.core.models import ChatKind, Inbound
from providers._json import as_dict, as_str, dicts

_NUMBER_CHANGED = frozenset({"user_changed_number", "customer_changed_number"})
_MEDIA = frozenset({"image", "video", "document", "audio", "sticker"})
"""Message types that carry a file (Meta's webhook reference, one page per type: image,
video and document have an optional ``caption``; audio and sticker have none)."""


def _digits(value: object) -> str:
    return "".join(ch for ch in str(value or "") if ch.isdigit())


def _sent_at(value: object) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(str(value)), tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None


@dataclass(frozen=True, slots=True)
class Change:
    """One ``messages`` change of a webhook body: what happened on one business number."""

    phone_number_id: str
    business: str
    """The business number's digits (its own messages are not inbound)."""
    messages: list[dict[str, Any]]
    contacts: list[dict[str, Any]]
    statuses: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class NumberChange:
    """A system message: the sender's WhatsApp account moved to another number."""

    old: str
    new: str


def changes(body: object) -> Iterator[Change]:
    """The ``messages`` changes of a webhook body (echoes, account and template updates and
    anything not from a WhatsApp Business Account are skipped)."""
    payload = as_dict(body)
    if payload.get("object") != "whatsapp_business_account":
        return
    for entry in dicts(payload.get("entry")):
        for change in dicts(entry.get("changes")):
            if change.get("field") != "messages":
                continue
            value = as_dict(change.get("value"))
            metadata = as_dict(value.get("metadata"))
            yield Change(
                phone_number_id=str(metadata.get("phone_number_id", "")),
                business=_digits(metadata.get("display_phone_number")),
                messages=dicts(value.get("messages")),
                contacts=dicts(value.get("contacts")),
                statuses=dicts(value.get("statuses")),
            )


def went_out(statuses: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    """``(callback key, wamid)`` of each status showing a message went out (any but failed)."""
    for status in statuses:
        key = as_str(status.get("biz_opaque_callback_data"))
        message_id = as_str(status.get("id"))
        if key and message_id and status.get("status") != "failed":
            yield key, message_id


def read_message(
    name: str, message: dict[str, Any], change: Change
) -> Inbound | NumberChange | None:
    """What one message of ``change`` is to pairbot (``name``: the provider's name)."""
    sender = as_str(message.get("from"))
    if not sender or (change.business and _digits(sender) == change.business):
        return None  # the business number's own messages
    if message.get("type") == "system":
        system = as_dict(message.get("system"))
        if system.get("type") not in _NUMBER_CHANGED:
            return None
        new = as_str(system.get("wa_id")) or as_str(system.get("new_wa_id")) or "?"
        return NumberChange(old=sender, new=new)
    content = _content(message)
    if content is None:
        return None
    group = as_str(message.get("group_id"))
    sender_name = _name(sender, change.contacts)
    return Inbound(
        provider=name,
        chat_id=group or sender,
        chat_kind=ChatKind.GROUP if group else ChatKind.DM,
        sender_id=sender,
        sender_name=sender_name,
        text=content.text,
        message_id=content.message_id,
        is_button=content.is_button,
        meta={"name": sender_name} if sender_name else {},
        sent_at=_sent_at(message.get("timestamp")),
        media=content.media,
    )


@dataclass(frozen=True, slots=True)
class _Content:
    text: str
    message_id: str | None
    is_button: bool = False
    media: bool = False


def _content(message: dict[str, Any]) -> _Content | None:
    """What a message says; None for what is not pairbot's to read.

    A button press's text is the button id (the command), its message id the notice's. A
    media message's text is its caption, or empty: from a stranger it is a contact attempt
    like any text (issue 11).
    """
    kind = as_str(message.get("type"))
    message_id = as_str(message.get("id")) or None
    if kind == "text":
        text = as_str(as_dict(message.get("text")).get("body"))
        return _Content(text, message_id) if text else None
    if kind in _MEDIA:
        caption = as_str(as_dict(message.get(kind)).get("caption"))
        return _Content(caption, message_id, media=True)
    if kind != "interactive":
        return None  # reactions, locations, contacts, template quick replies, ...
    interactive = as_dict(message.get("interactive"))
    if interactive.get("type") != "button_reply":
        return None
    text = as_str(as_dict(interactive.get("button_reply")).get("id"))
    notice = as_str(as_dict(message.get("context")).get("id"))
    return _Content(text, notice, is_button=True) if text and notice else None


def _name(sender: str, contacts: list[dict[str, Any]]) -> str:
    """The profile name the sender gave (unverified), or empty."""
    for contact in contacts:
        if as_str(contact.get("wa_id")) == sender:
            return as_str(as_dict(contact.get("profile")).get("name"))
    if len(contacts) == 1 and not contacts[0].get("wa_id"):
        return as_str(as_dict(contacts[0].get("profile")).get("name"))
    return ""


__all__ = ["Change", "NumberChange", "changes", "read_message", "went_out"]
