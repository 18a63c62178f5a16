"""What WhatsApp POSTs to the webhook, read: the messages and statuses of one body.

A body is untrusted JSON (its signature proves it came from Meta, not that it has the shape
the documentation shows), so every value is read through the readers of
:mod:`providers._json`, which turn anything unexpected into an empty value. Nothing here does
I/O or logs; :class:`~providers.whatsapp.provider.WhatsAppProvider` decides what a
change means for it (another business number, a status it waits for, a re-delivery).

Only ``text`` messages and ``interactive`` reply-button presses become
:class:`~bot.core.models.Inbound` values; the sender is the ``wa_id``, the chat of a DM is the
``wa_id`` too, a message carrying a ``group_id`` is a group. The business number's own
messages, system messages (:class:`NumberChange`) and every other message type never do.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.core.models import ChatKind, Inbound
from providers._json import as_dict, as_str, dicts

_NUMBER_CHANGED = frozenset({"user_changed_number", "customer_changed_number"})


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
    text, message_id, is_button = content
    group = as_str(message.get("group_id"))
    sender_name = _name(sender, change.contacts)
    return Inbound(
        provider=name,
        chat_id=group or sender,
        chat_kind=ChatKind.GROUP if group else ChatKind.DM,
        sender_id=sender,
        sender_name=sender_name,
        text=text,
        message_id=message_id,
        is_button=is_button,
        meta={"name": sender_name} if sender_name else {},
        sent_at=_sent_at(message.get("timestamp")),
    )


def _content(message: dict[str, Any]) -> tuple[str, str | None, bool] | None:
    """``(text, message id, is a button press)``; None for what is not pairbot's to read.

    A button press's text is the button id (the command), its message id the notice's.
    """
    kind = message.get("type")
    if kind == "text":
        text = as_str(as_dict(message.get("text")).get("body"))
        return (text, as_str(message.get("id")) or None, False) if text else None
    if kind != "interactive":
        return None  # media, reactions, locations, template quick replies, ...
    interactive = as_dict(message.get("interactive"))
    if interactive.get("type") != "button_reply":
        return None
    text = as_str(as_dict(interactive.get("button_reply")).get("id"))
    notice = as_str(as_dict(message.get("context")).get("id"))
    return (text, notice, True) if text and notice else None


def _name(sender: str, contacts: list[dict[str, Any]]) -> str:
    """The profile name the sender gave (unverified), or empty."""
    for contact in contacts:
        if as_str(contact.get("wa_id")) == sender:
            return as_str(as_dict(contact.get("profile")).get("name"))
    if len(contacts) == 1 and not contacts[0].get("wa_id"):
        return as_str(as_dict(contacts[0].get("profile")).get("name"))
    return ""


__all__ = ["Change", "NumberChange", "changes", "read_message", "went_out"]
