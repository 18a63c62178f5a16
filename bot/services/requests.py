"""What DM pairing and node pairing share: requests that expire a TTL after they were made,
and the audit line each change to the state writes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TypeVar

from bot.core.models import AuditEvent, Expiring
from bot.core.protocols import StateTxn

R = TypeVar("R", bound=Expiring)


def split_expired(requests: list[R], *, now: datetime, ttl: timedelta) -> tuple[list[R], list[R]]:
    """Return ``(expired, live)``: expired once ``now >= expires_at(ttl)``.

    Compared against one cutoff, one comparison per request (this runs on every stranger's
    message); when nothing expired, ``live`` is ``requests`` itself, not a copy.
    """
    cutoff = now - ttl
    expired = [r for r in requests if r.created_at <= cutoff]
    return expired, [r for r in requests if r.created_at > cutoff] if expired else requests


def audit(
    txn: StateTxn,
    now: datetime,
    event: str,
    outcome: str,
    *,
    actor: str,
    subject: str,
    provider: str | None = None,
    request_id: str | None = None,
) -> None:
    """Write one line of the audit log in ``txn``, stamped ``now``."""
    txn.audit(
        AuditEvent(
            ts=now,
            event=event,
            actor=actor,
            subject=subject,
            outcome=outcome,
            provider=provider,
            request_id=request_id,
        )
    )
