"""What DM pairing and node pairing share: requests that expire a TTL after they were made,
knobs that the config's section of each sets, and the audit line each change to the state
writes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Self, TypeVar

from bot.core.models import AuditEvent, Expiring
from bot.core.protocols import StateTxn
from bot.core.schema import Model

R = TypeVar("R", bound=Expiring)


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestSettings:
    """The knobs of one kind of pairing: its requests stay approvable for ``pending_ttl``.

    A subclass adds that kind's knobs, with the config's defaults; :meth:`of` takes them all
    from the config's section of that kind.
    """

    pending_ttl: timedelta

    not_knobs: ClassVar[frozenset[str]] = frozenset()
    """Keys of the config section that are not knobs (another part reads them). Every other
    key must be a knob: :meth:`of` fails on one that is not."""

    @classmethod
    def of(cls, section: Model) -> Self:
        """The knobs as the config's section sets them."""
        return cls(**section.model_dump(exclude=set(cls.not_knobs)))


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
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Write one line of the audit log in ``txn``, stamped ``now`` (``detail``: more keys,
    never a secret)."""
    txn.audit(
        AuditEvent(
            ts=now,
            event=event,
            actor=actor,
            subject=subject,
            outcome=outcome,
            provider=provider,
            request_id=request_id,
            detail=detail or {},
        )
    )
