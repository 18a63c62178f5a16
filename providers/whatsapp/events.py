"""What WhatsApp POSTs to the webhook, read: the messages and statuses of one body.

A body is untrusted JSON (its signature proves it came from Meta, not that it has the shape
the documentation shows), so every value is read through the readers of
:mod:`providers._json`, which turn anything unexpected into an empty value. Nothing here does
I/O or logs; :class:`~providers.whatsapp.provider.WhatsAppProvider` decides what a
change means for it (another business number, a status it waits for, a re-delivery).

``text`` messages, media messages (image, video, document, audio, sticker: an
:class:`~bot.core.models.Inbound` with ``media`` set and the caption, or nothing, as its text)
and ``interactive`` reply-button presses become :class:`~bot.core.models.Inbound` values; a
message carrying a ``group_id`` is a group. The business number's own messages, system
messages (:class:`NumberChange`) and every other message type (reactions, locations,
contacts, ...) never do.

Who wrote: since April 2026 Meta adds the sender's business-scoped user id (BSUID,
``US.13491208655302741918``) to every message, as ``messages[].from_user_id`` and
``contacts[].user_id``; a user who adopted a username may have no phone number in it at all:
``from`` and ``contacts[].wa_id`` are then omitted, not filled with the BSUID (Meta's webhook
references, e.g. "Image messages": ``wa_id`` "omitted if user's phone number is
unavailable"). One rule gives each message one sender id: **the phone number (``wa_id``)
when Meta sends it, the BSUID only when it does not.** So the ids allowed before BSUIDs
existed keep working for as long as Meta shows the number, and someone it never shows is
still someone. The chat of a DM is the sender id, so a reply goes where the message came from.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.core.models import ChatKind, Inbound
from providers._json import as_dict, as_int, as_str, dicts

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


def failed(statuses: list[dict[str, Any]]) -> Iterator[tuple[str, str, int]]:
    """``(callback key or "", wamid, Graph error code or 0)`` of each ``failed`` status (its
    ``errors[]``, as Meta's error reference shows them in webhooks)."""
    for status in statuses:
        if status.get("status") == "failed":
            errors = dicts(status.get("errors"))
            code = as_int(errors[0].get("code")) if errors else 0
            key = as_str(status.get("biz_opaque_callback_data"))
            yield key, as_str(status.get("id")), code


def stamped(change: Change) -> datetime | None:
    """The newest ``timestamp`` of a change's messages and statuses: Meta's clock."""
    stamps = [_sent_at(item.get("timestamp")) for item in change.messages + change.statuses]
    return max((stamp for stamp in stamps if stamp is not None), default=None)


def read_message(
    name: str, message: dict[str, Any], change: Change
) -> Inbound | NumberChange | None:
    """What one message of ``change`` is to pairbot (``name``: the provider's name)."""
    phone = as_str(message.get("from"))
    if phone and change.business and _digits(phone) == change.business:
        return None  # the business number's own messages
    if message.get("type") == "system":
        system = as_dict(message.get("system"))
        if not phone or system.get("type") not in _NUMBER_CHANGED:
            return None
        new = as_str(system.get("wa_id")) or as_str(system.get("new_wa_id")) or "?"
        return NumberChange(old=phone, new=new)
    bsuid = as_str(message.get("from_user_id"))
    contact = _contact(phone, bsuid, change.contacts)
    sender = phone or bsuid or as_str(contact.get("user_id"))
    content = _content(message)
    if not sender or content is None:
        return None
    group = as_str(message.get("group_id"))
    profile = as_dict(contact.get("profile"))
    sender_name = as_str(profile.get("name"))
    username = as_str(profile.get("username")).lstrip("@")
    meta = {"name": sender_name, "username": username}
    return Inbound(
        provider=name,
        chat_id=group or sender,
        chat_kind=ChatKind.GROUP if group else ChatKind.DM,
        sender_id=sender,
        sender_name=sender_name,
        text=content.text,
        message_id=content.message_id,
        is_button=content.is_button,
        meta={key: value for key, value in meta.items() if value},
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


def _contact(phone: str, bsuid: str, contacts: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``contacts[]`` entry of the sender (by phone number or BSUID), or empty: a lone
    entry counts unless it names someone else."""
    for contact in contacts:
        if (phone and as_str(contact.get("wa_id")) == phone) or (
            bsuid and as_str(contact.get("user_id")) == bsuid
        ):
            return contact
    if len(contacts) == 1:
        lone = contacts[0]
        if not (phone and lone.get("wa_id")) and not (bsuid and lone.get("user_id")):
            return lone
    return {}


__all__ = ["Change", "NumberChange", "changes", "failed", "read_message", "stamped", "went_out"]
