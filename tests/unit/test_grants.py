"""Grants that end (bot/services/pairing.py), over every store backend, with a fake clock:
the gate ends them at the very moment, the prune removes and audits them once, and the
sender is a stranger again."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from bot.core.clock import FakeClock, iso
from bot.core.models import AUDIT_EVENTS, FOREVER, RequestOutcome
from bot.core.protocols import StateStore
from bot.runtime.metrics import AuditCounts
from bot.services.pairing import AllowEntry, AllowSource, Granted, PairingService
from tests.backends import Backend
from tests.helpers import OWNER, SECOND, requested

MICRO = timedelta(microseconds=1)


def approve_for(
    pairing: PairingService, clock: FakeClock, sender: str, length: timedelta
) -> datetime:
    """A stranger asks and the owner approves them for ``length``; return the end."""
    code = requested(pairing, "telegram", sender).code
    until = clock.now() + length
    pairing.approve(code, actor=OWNER, until=until)
    return until


def grants_audited(store: StateStore) -> list[dict[str, object]]:
    return [r for r in store.read_audit() if r["event"] == "grant.expire"]


def test_a_grant_lets_the_sender_in_up_to_the_very_moment_it_ends(
    pairing: PairingService, clock: FakeClock, backend: Backend
) -> None:
    until = approve_for(pairing, clock, "100", 2 * SECOND)
    assert pairing.is_allowed("telegram", "100")
    clock.advance(2 * SECOND - MICRO)
    assert pairing.is_allowed("telegram", "100")
    clock.advance(MICRO)
    assert clock.now() == until
    assert not pairing.is_allowed("telegram", "100"), "ended, though no prune has run"
    assert backend.other().allowed_until("telegram", "100") == until, "still on file"


def test_after_the_end_the_sender_is_a_stranger_again_and_gets_a_new_code(
    pairing: PairingService, clock: FakeClock, store: StateStore
) -> None:
    code = requested(pairing, "telegram", "100").code
    pairing.approve(code, actor=OWNER, until=clock.now() + 2 * SECOND)
    clock.advance(2 * SECOND)

    again = pairing.request("telegram", "100")

    assert (again.outcome, again.send_code) == (RequestOutcome.CREATED, True)
    assert again.request is not None
    assert again.request.code != code
    pairing.approve(again.request.code, actor=OWNER)  # for good, this time
    assert store.allowed_until("telegram", "100") is FOREVER
    clock.advance(timedelta(days=3650))
    assert pairing.is_allowed("telegram", "100")


def test_an_instance_that_has_not_heard_of_the_end_gives_a_code_too(
    backend: Backend, clock: FakeClock
) -> None:
    here = PairingService(backend.open(), clock=clock)
    there = PairingService(backend.other(), clock=clock)
    code = requested(there, "telegram", "100").code
    there.approve(code, actor=OWNER, until=clock.now() + SECOND)
    assert here.request("telegram", "100").outcome is RequestOutcome.ALLOWED, "in force"
    clock.advance(SECOND)
    assert here.request("telegram", "100").outcome is RequestOutcome.CREATED


def test_the_prune_removes_ended_grants_and_audits_each_once(
    pairing: PairingService, clock: FakeClock, backend: Backend
) -> None:
    ends_soon = approve_for(pairing, clock, "1", SECOND)
    approve_for(pairing, clock, "2", timedelta(hours=1))
    pairing.allow("telegram", "3", actor=OWNER)
    clock.advance(SECOND)

    pairing.prune()
    pairing.prune()

    store = backend.other()
    assert [(r["subject"], r["actor"], r["until"]) for r in grants_audited(store)] == [
        ("1", "system:scheduler", iso(ends_soon))
    ]
    with store.transaction() as txn:
        assert txn.allow_from("telegram") == ["2", "3"]
        assert list(txn.allow_ends("telegram")) == ["2"]
    assert store.allowed_until("telegram", "1") is None


def test_a_sender_whose_grant_ended_before_they_were_told_is_never_told(
    pairing: PairingService, clock: FakeClock
) -> None:
    approve_for(pairing, clock, "100", SECOND)
    assert [n.sender_id for n in pairing.notices()] == ["100"]
    clock.advance(SECOND)
    pairing.prune()
    assert pairing.notices() == []


def test_allow_says_what_it_did_and_audits_it(
    pairing: PairingService, clock: FakeClock, store: StateStore
) -> None:
    week = clock.now() + timedelta(days=7)
    assert pairing.allow("telegram", "100", actor=OWNER, until=week) is Granted.ADDED
    assert pairing.allow("telegram", "100", actor=OWNER, until=week) is Granted.UNCHANGED
    assert pairing.allow("telegram", "100", actor=OWNER) is Granted.CHANGED
    assert store.allowed_until("telegram", "100") is FOREVER
    assert pairing.allow("telegram", "100", actor=OWNER, until=week) is Granted.CHANGED
    assert store.allowed_until("telegram", "100") == week
    clock.advance(timedelta(days=7))  # ended, not yet pruned: a new grant is an addition
    assert pairing.allow("telegram", "100", actor=OWNER) is Granted.ADDED
    assert [(r["outcome"], r.get("until")) for r in store.read_audit()] == [
        ("added", iso(week)),
        ("changed", None),
        ("changed", iso(week)),
        ("added", None),
    ]


def test_allowing_a_stranger_whose_grant_ended_answers_their_new_request(
    pairing: PairingService, clock: FakeClock
) -> None:
    approve_for(pairing, clock, "100", SECOND)
    for notice in pairing.notices():
        pairing.notice_sent(notice.provider, notice.sender_id)
    clock.advance(SECOND)
    requested(pairing, "telegram", "100")

    assert pairing.allow("telegram", "100", actor=OWNER) is Granted.ADDED

    assert pairing.pending() == []
    assert [n.sender_id for n in pairing.notices()] == ["100"], "told, as an approval would"


@pytest.mark.parametrize("offset", [timedelta(0), -SECOND], ids=["now", "past"])
def test_a_grant_must_end_after_now(
    pairing: PairingService, clock: FakeClock, backend: Backend, offset: timedelta
) -> None:
    code = requested(pairing, "telegram", "100").code
    before = backend.dump()
    with pytest.raises(ValueError, match="after now"):
        pairing.approve(code, actor=OWNER, until=clock.now() + offset)
    with pytest.raises(ValueError, match="after now"):
        pairing.allow("telegram", "200", actor=OWNER, until=clock.now() + offset)
    assert backend.dump() == before


def test_revoking_a_grant_that_ends_takes_its_end_with_it(
    pairing: PairingService, clock: FakeClock, store: StateStore
) -> None:
    approve_for(pairing, clock, "100", timedelta(days=1))
    pairing.revoke("telegram", "100", actor=OWNER)
    assert not pairing.is_allowed("telegram", "100")
    pairing.allow("telegram", "100", actor=OWNER)
    assert store.allowed_until("telegram", "100") is FOREVER


def test_the_allowlist_says_when_grants_end_and_leaves_ended_ones_out(
    store: StateStore, clock: FakeClock
) -> None:
    pairing = PairingService(store, clock=clock, static_allow={"telegram": ["9", "8"]})
    day, week = clock.now() + timedelta(days=1), clock.now() + timedelta(days=7)
    pairing.allow("telegram", "1", actor=OWNER, until=week)
    pairing.allow("telegram", "2", actor=OWNER)
    pairing.allow("telegram", "3", actor=OWNER, until=day)
    pairing.allow("telegram", "4", actor=OWNER, until=clock.now() + SECOND)
    pairing.allow("telegram", "9", actor=OWNER, until=day)  # the config lets them in for good
    clock.advance(SECOND)

    def entry(sender: str, source: AllowSource, until: datetime | None = None) -> AllowEntry:
        return AllowEntry(provider="telegram", id=sender, source=source, until=until)

    assert pairing.allowed("telegram") == [
        entry("2", AllowSource.STORE),
        entry("8", AllowSource.CONFIG),
        entry("9", AllowSource.CONFIG),
        entry("3", AllowSource.STORE, day),
        entry("1", AllowSource.STORE, week),
    ]


def test_audit_lines_of_grants_say_when_they_end_and_never_carry_the_code(
    pairing: PairingService, clock: FakeClock, store: StateStore
) -> None:
    code = requested(pairing, "telegram", "100").code
    until = clock.now() + timedelta(days=7)
    pairing.approve(code, actor=OWNER, until=until)
    clock.advance(timedelta(days=7))
    pairing.prune()
    records = store.read_audit()
    assert [(r["event"], r["outcome"], r.get("until")) for r in records] == [
        ("request", "created", None),
        ("approve", "approved", iso(until)),
        ("grant.expire", "expired", iso(until)),
    ]
    assert code not in json.dumps(records)


def test_an_ended_grant_is_an_event_kind_and_counted_as_an_expiry(
    pairing: PairingService, clock: FakeClock, store: StateStore
) -> None:
    approve_for(pairing, clock, "100", SECOND)
    clock.advance(SECOND)
    pairing.prune()
    counts = AuditCounts()
    counts.add([("", record) for record in store.read_audit()])
    assert counts.counts[("expiries", "grant")] == 1
    assert counts.counts[("expiries", "dm")] == 0
    assert "grant.expire" in AUDIT_EVENTS  # events.kinds may choose it
