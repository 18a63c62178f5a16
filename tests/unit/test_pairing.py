"""DM pairing rules (bot/services/pairing.py) over every store backend, with a fake clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.core import codes
from bot.core.clock import FakeClock
from bot.core.errors import (
    AllowedByConfigError,
    CodeExpiredError,
    LookupFailed,
    StoreError,
    UnknownCodeError,
    UnknownSubjectError,
)
from bot.core.models import RequestOutcome
from bot.core.protocols import StateStore
from bot.services.pairing import (
    AllowEntry,
    AllowSource,
    Granted,
    PairingService,
    PairingSettings,
)
from stores._files import stage
from stores.jsonfile import format_time
from tests.backends import Backend
from tests.helpers import OWNER, SECOND, compared_codes, requested

TTL = timedelta(hours=1)
RESEND = timedelta(minutes=10)


def drawing(*drawn: str) -> Callable[[], str]:
    """A ``new_code`` that hands out ``drawn`` in order (and fails the test if it runs dry)."""
    supply: Iterator[str] = iter(drawn)

    def new_code() -> str:
        return next(supply)

    return new_code


@pytest.fixture
def scripted(store: StateStore, clock: FakeClock) -> Callable[..., PairingService]:
    """Build a PairingService whose codes are the given strings, in order."""

    def build(*drawn: str) -> PairingService:
        return PairingService(store, clock=clock, new_code=drawing(*drawn))

    return build


def still_pending(backend: Backend, provider: str, sender_id: str) -> bool:
    """Ask another store (what the next process would see) whether the request is on file."""
    with backend.other().transaction() as txn:
        return any(r.id == sender_id for r in txn.requests(provider))


def allowed_elsewhere(backend: Backend, provider: str, sender_id: str) -> bool:
    return backend.other().allowed_until(provider, sender_id) is not None


# --- request --------------------------------------------------------------------------------


def test_new_sender_gets_a_new_request(pairing: PairingService, clock: FakeClock) -> None:
    result = pairing.request("telegram", "100", {"username": "ann", "firstName": ""})

    assert result.outcome == RequestOutcome.CREATED
    assert result.send_code is True
    assert result.request is not None
    assert result.request.provider == "telegram"
    assert result.request.id == "100"
    assert codes.normalize_code(result.request.code) == result.request.code
    assert result.request.created_at == clock.now()
    assert result.request.last_seen_at == clock.now()
    assert result.request.meta == {"username": "ann"}
    assert pairing.pending() == [result.request]


def test_same_sender_again_keeps_code_and_created_at(
    pairing: PairingService, clock: FakeClock, backend: Backend
) -> None:
    first = requested(pairing, "telegram", "100")
    clock.advance(60)

    again = pairing.request("telegram", "100")

    assert again.outcome == RequestOutcome.PENDING
    assert again.send_code is False
    assert again.request is not None
    assert again.request.code == first.code
    assert again.request.created_at == first.created_at
    assert again.request.last_seen_at == clock.now()
    with backend.other().transaction() as txn:
        [on_disk] = txn.requests("telegram")
    assert (on_disk.code, on_disk.created_at, on_disk.last_seen_at) == (
        first.code,
        first.created_at,
        first.created_at,
    ), "lastSeenAt waits for a write"
    pairing.prune()
    with backend.other().transaction() as txn:
        [on_disk] = txn.requests("telegram")
    assert on_disk.last_seen_at == clock.now(), "the prune writes it"


@pytest.mark.json_files
def test_a_repeat_message_from_a_pending_stranger_costs_no_write(
    pairing: PairingService, clock: FakeClock, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 9 item 7: every message of a pending stranger used to be an fsync'd rewrite."""
    import os

    pairing.request("telegram", "100", {"firstName": "Mallory"})
    syncs: list[int] = []
    real_fsync = os.fsync

    def counting(fd: int) -> None:
        syncs.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting)
    before = (state_dir / "credentials" / "telegram-pairing.json").read_bytes()

    for _ in range(2000):
        clock.advance(0.1)  # 200 s: inside the resend window
        assert pairing.request("telegram", "100", {"firstName": "Mallory"}).send_code is False

    assert syncs == []
    assert (state_dir / "credentials" / "telegram-pairing.json").read_bytes() == before
    assert pairing.settled_in_memory("telegram", "100", {"firstName": "Mallory"}) is True
    assert pairing.settled_in_memory("telegram", "100", {"firstName": "Eve"}) is False, (
        "a new name is worth writing"
    )
    assert pairing.settled_in_memory("telegram", "200") is False, "unknown: ask the store"


def test_what_must_survive_a_crash_is_still_written(
    pairing: PairingService, clock: FakeClock, backend: Backend
) -> None:
    pairing.request("telegram", "100", {"firstName": "Mallory"})
    clock.advance(RESEND)
    assert pairing.settled_in_memory("telegram", "100") is False, "a reminder is due"
    assert pairing.request("telegram", "100").send_code is True
    again = PairingService(backend.other(), clock=clock)  # a restarted process
    assert again.request("telegram", "100").send_code is False, "no early re-send"
    pairing.request("telegram", "100", {"firstName": "Eve"})
    with backend.other().transaction() as txn:
        [on_disk] = txn.requests("telegram")
    assert on_disk.meta == {"firstName": "Eve"}


def test_a_decision_ends_the_quiet_window(pairing: PairingService, clock: FakeClock) -> None:
    req = requested(pairing, "telegram", "100")
    assert pairing.settled_in_memory("telegram", "100") is True
    pairing.reject(req.code, actor="owner")
    assert pairing.settled_in_memory("telegram", "100") is False
    assert pairing.request("telegram", "100").outcome == RequestOutcome.CREATED


def test_code_is_resent_once_per_resend_window(pairing: PairingService, clock: FakeClock) -> None:
    start = clock.now()
    assert pairing.request("telegram", "100").send_code is True
    sent = []
    for offset in (
        RESEND - SECOND,
        RESEND,
        RESEND + SECOND,
        2 * RESEND - SECOND,
        2 * RESEND,
        2 * RESEND + SECOND,
    ):
        clock.advance(start + offset - clock.now())
        sent.append(pairing.request("telegram", "100").send_code)

    assert sent == [False, True, False, False, True, False]


def test_sender_repeated_100_times_gets_one_code_sent(
    pairing: PairingService, clock: FakeClock
) -> None:
    results = []
    for _ in range(100):
        results.append(pairing.request("telegram", "100"))
        clock.advance(5)  # 100 messages in 500 s: inside the 10 min resend window

    first = results[0].request
    assert first is not None
    assert [r.send_code for r in results] == [True] + [False] * 99
    assert [r.outcome for r in results] == [RequestOutcome.CREATED] + [RequestOutcome.PENDING] * 99
    assert {(r.request.code, r.request.created_at) for r in results if r.request} == {
        (first.code, first.created_at)
    }
    assert [(r.id, r.code, r.created_at) for r in pairing.pending()] == [
        ("100", first.code, first.created_at)
    ]


def test_unknown_provider_is_a_value_error(pairing: PairingService) -> None:
    with pytest.raises(ValueError, match="unknown provider"):
        pairing.request("myspace", "100")


# --- codes: uniqueness and matching ---------------------------------------------------------


@pytest.mark.parametrize(
    "second_provider", ["telegram", "slack"], ids=["same-provider", "across-providers"]
)
def test_code_live_anywhere_is_never_reused(
    scripted: Callable[..., PairingService], second_provider: str
) -> None:
    pairing = scripted("AAAA2222", "AAAA2222", "BBBB3333")

    first = requested(pairing, "telegram", "100")
    second = requested(pairing, second_provider, "200")

    assert (first.code, second.code) == ("AAAA2222", "BBBB3333")


def test_code_of_an_unpruned_expired_request_is_not_reused(
    scripted: Callable[..., PairingService], clock: FakeClock
) -> None:
    """Telegram's expired request is still on file; a slack code equal to it must not be drawn,
    or approving slack's live code would find telegram's expired request first."""
    pairing = scripted("AAAA2222", "AAAA2222", "BBBB3333")
    pairing.request("telegram", "100")
    clock.advance(TTL + SECOND)
    live = requested(pairing, "slack", "200")

    approved = pairing.approve(live.code, actor=OWNER)

    assert (approved.provider, approved.id) == ("slack", "200")
    assert pairing.is_allowed("slack", "200") is True


def test_no_unique_code_is_an_error_not_a_duplicate(
    scripted: Callable[..., PairingService],
) -> None:
    pairing = scripted(*["AAAA2222"] * 300)
    pairing.request("telegram", "100")

    with pytest.raises(RuntimeError, match="no unique pairing code"):
        pairing.request("slack", "200")
    assert [(r.provider, r.id) for r in pairing.pending()] == [("telegram", "100")]


@pytest.mark.parametrize(
    "typed", ["ABCD2345", "abcd2345", " abcd-2345 ", "Abcd 2345", "ABCD-2345\n"]
)
def test_approve_matches_what_the_owner_typed(
    scripted: Callable[..., PairingService], typed: str
) -> None:
    pairing = scripted("ABCD2345")
    pairing.request("telegram", "100")

    assert pairing.approve(typed, actor=OWNER).id == "100"
    assert pairing.is_allowed("telegram", "100") is True


@pytest.mark.parametrize("typed", ["ab-cd-2345", "ABCD234", "ABCD23456", "ABCE2345", ""])
def test_approve_rejects_what_is_not_the_code(
    scripted: Callable[..., PairingService], typed: str
) -> None:
    pairing = scripted("ABCD2345")
    pairing.request("telegram", "100")

    with pytest.raises(UnknownCodeError):
        pairing.approve(typed, actor=OWNER)
    assert pairing.is_allowed("telegram", "100") is False
    assert [r.id for r in pairing.pending()] == ["100"]


def test_approve_compares_codes_with_compare_digest(
    scripted: Callable[..., PairingService], monkeypatch: pytest.MonkeyPatch
) -> None:
    pairing = scripted("ABCD2345")
    pairing.request("telegram", "100")
    compared = compared_codes(monkeypatch)
    pairing.approve("abcd-2345", actor=OWNER)

    assert compared == [(b"ABCD2345", b"ABCD2345")]


def test_find_returns_the_live_request_by_code(
    scripted: Callable[..., PairingService], clock: FakeClock
) -> None:
    pairing = scripted("ABCD2345")
    pairing.request("slack", "U1")

    found = pairing.find("abcd-2345")
    assert found is not None
    assert (found.provider, found.id) == ("slack", "U1")
    assert pairing.find("ABCD2346") is None
    assert pairing.find("not a code") is None
    clock.advance(TTL)
    assert pairing.find("ABCD2345") is None


# --- TTL ------------------------------------------------------------------------------------


def test_approve_works_just_before_the_ttl(pairing: PairingService, clock: FakeClock) -> None:
    req = requested(pairing, "telegram", "100")
    clock.advance(TTL - SECOND)

    assert pairing.approve(req.code, actor=OWNER).id == "100"
    assert pairing.is_allowed("telegram", "100") is True


def test_approve_just_after_the_ttl_expires_the_request(
    pairing: PairingService, clock: FakeClock, store: StateStore, backend: Backend
) -> None:
    req = requested(pairing, "telegram", "100")
    clock.advance(TTL + SECOND)

    with pytest.raises(CodeExpiredError) as caught:
        pairing.approve(req.code, actor=OWNER)

    assert req.code not in str(caught.value)
    assert pairing.is_allowed("telegram", "100") is False
    assert still_pending(backend, "telegram", "100") is False
    with pytest.raises(UnknownCodeError):
        pairing.approve(req.code, actor=OWNER)
    expire = [r for r in store.read_audit() if r["event"] == "expire"]
    assert [(r["provider"], r["subject"], r["outcome"], r["actor"]) for r in expire] == [
        ("telegram", "100", "expired", OWNER)
    ]


def test_last_seen_does_not_extend_the_ttl(pairing: PairingService, clock: FakeClock) -> None:
    req = requested(pairing, "telegram", "100")
    for _ in range(5):
        clock.advance(RESEND)
        pairing.request("telegram", "100")
    clock.advance(RESEND - SECOND)
    seen = pairing.request("telegram", "100").request  # lastSeenAt is TTL - 1 s
    assert seen is not None
    assert (seen.code, seen.last_seen_at) == (req.code, req.created_at + TTL - SECOND)
    clock.advance(2 * SECOND)

    with pytest.raises(CodeExpiredError):
        pairing.approve(req.code, actor=OWNER)


def test_after_expiry_the_same_sender_gets_a_fresh_code(
    scripted: Callable[..., PairingService], clock: FakeClock
) -> None:
    pairing = scripted("AAAA2222", "BBBB3333")
    first = pairing.request("telegram", "100")
    clock.advance(TTL + SECOND)

    again = pairing.request("telegram", "100")

    assert first.request is not None
    assert again.outcome == RequestOutcome.CREATED
    assert again.send_code is True
    assert again.request is not None
    assert again.request.code == "BBBB3333"
    assert again.request.created_at == clock.now()
    assert pairing.pending() == [again.request]


# --- pending cap ----------------------------------------------------------------------------


def test_fourth_sender_is_capped(pairing: PairingService) -> None:
    for sender in ("1", "2", "3"):
        assert pairing.request("telegram", sender).outcome == RequestOutcome.CREATED

    capped = pairing.request("telegram", "4")

    assert capped.outcome == RequestOutcome.CAPPED
    assert capped.request is None
    assert capped.send_code is False
    assert [r.id for r in pairing.pending("telegram")] == ["1", "2", "3"]
    assert pairing.request("telegram", "3").outcome == RequestOutcome.PENDING


def test_take_capped_counts_strangers_not_messages_and_resets(pairing: PairingService) -> None:
    """Issue 9 item 9: "241 turned away" was reported for 997 strangers."""
    for sender in ("1", "2", "3"):
        pairing.request("telegram", sender)
    for _ in range(10):
        pairing.request("telegram", "4")
    pairing.request("telegram", "5")

    assert pairing.take_capped("slack") == 0
    assert pairing.take_capped("telegram") == 2
    assert pairing.take_capped("telegram") == 0
    pairing.request("telegram", "4")
    assert pairing.take_capped("telegram") == 0, "already counted in this TTL"


def test_cap_is_per_provider(pairing: PairingService) -> None:
    for sender in ("1", "2", "3"):
        pairing.request("telegram", sender)

    assert pairing.request("slack", "U4").outcome == RequestOutcome.CREATED
    assert pairing.take_capped("telegram") == 0


def test_cap_setting_is_honoured(store: StateStore, clock: FakeClock) -> None:
    pairing = PairingService(
        store, clock=clock, settings=PairingSettings(max_pending_per_provider=1)
    )
    pairing.request("telegram", "1")

    assert pairing.request("telegram", "2").outcome == RequestOutcome.CAPPED


def test_expired_request_frees_a_place(pairing: PairingService, clock: FakeClock) -> None:
    for sender in ("1", "2", "3"):
        pairing.request("telegram", sender)
        clock.advance(timedelta(minutes=10))
    assert pairing.request("telegram", "4").outcome == RequestOutcome.CAPPED

    clock.advance(TTL - timedelta(minutes=30) + SECOND)  # only "1" is past its TTL now

    assert pairing.request("telegram", "4").outcome == RequestOutcome.CREATED
    assert [r.id for r in pairing.pending("telegram")] == ["2", "3", "4"]


# --- approve, reject, revoke ----------------------------------------------------------------


def test_approve_adds_to_the_allowlist_and_drops_the_request(
    pairing: PairingService, backend: Backend
) -> None:
    req = requested(pairing, "telegram", "100")

    approved = pairing.approve(req.code, actor=OWNER)

    assert approved == req
    assert pairing.is_allowed("telegram", "100") is True
    assert pairing.allowed() == [
        AllowEntry(provider="telegram", id="100", source=AllowSource.STORE)
    ]
    assert pairing.pending() == []
    assert allowed_elsewhere(backend, "telegram", "100") is True
    assert still_pending(backend, "telegram", "100") is False


def test_reject_drops_the_request_and_allows_nobody(
    pairing: PairingService, backend: Backend
) -> None:
    req = requested(pairing, "telegram", "100")

    rejected = pairing.reject(req.code, actor=OWNER)

    assert rejected.id == "100"
    assert pairing.pending() == []
    assert pairing.is_allowed("telegram", "100") is False
    assert pairing.allowed() == []
    assert still_pending(backend, "telegram", "100") is False


def test_revoke_removes_the_sender(pairing: PairingService, backend: Backend) -> None:
    req = requested(pairing, "telegram", "100")
    pairing.approve(req.code, actor=OWNER)

    pairing.revoke("telegram", "100", actor=OWNER)

    assert pairing.is_allowed("telegram", "100") is False
    assert pairing.allowed() == []
    assert allowed_elsewhere(backend, "telegram", "100") is False


def test_revoke_of_an_unknown_sender(pairing: PairingService) -> None:
    with pytest.raises(UnknownSubjectError):
        pairing.revoke("telegram", "100", actor=OWNER)


def test_approve_with_the_wrong_provider_is_unknown(pairing: PairingService) -> None:
    req = requested(pairing, "telegram", "100")

    with pytest.raises(UnknownCodeError):
        pairing.approve(req.code, provider="slack", actor=OWNER)

    assert pairing.is_allowed("telegram", "100") is False
    assert pairing.pending() == [req]
    assert pairing.approve(req.code, provider="telegram", actor=OWNER) == req


def test_approve_of_an_unknown_code(pairing: PairingService) -> None:
    pairing.request("telegram", "100")

    with pytest.raises(UnknownCodeError):
        pairing.approve("ZZZZ9999", actor=OWNER)  # not drawn: one chance in 2**40


def test_allow_adds_directly_and_drops_the_request(pairing: PairingService) -> None:
    pairing.request("telegram", "100")

    assert pairing.allow("telegram", "100", actor=OWNER) is Granted.ADDED
    assert pairing.allow("telegram", "100", actor=OWNER) is Granted.UNCHANGED
    assert pairing.is_allowed("telegram", "100") is True
    assert pairing.pending() == []


# --- listing and pruning --------------------------------------------------------------------


def test_pending_lists_live_requests_oldest_first(
    pairing: PairingService, clock: FakeClock
) -> None:
    pairing.request("signal", "old")
    clock.advance(timedelta(minutes=50))
    pairing.request("telegram", "a")
    clock.advance(timedelta(minutes=5))
    pairing.request("discord", "b")
    pairing.request("slack", "c")
    clock.advance(timedelta(minutes=6))  # "old" is 61 minutes old
    pairing.request("telegram", "a")  # lastSeenAt moves; the order does not

    assert [(r.provider, r.id) for r in pairing.pending()] == [
        ("telegram", "a"),
        ("discord", "b"),
        ("slack", "c"),
    ]
    assert [r.id for r in pairing.pending("telegram")] == ["a"]
    assert pairing.pending("signal") == []


def test_prune_drops_expired_of_every_provider(
    pairing: PairingService, clock: FakeClock, store: StateStore, backend: Backend
) -> None:
    allowed = requested(pairing, "telegram", "friend")
    pairing.approve(allowed.code, actor=OWNER)
    pairing.request("telegram", "1")
    pairing.request("slack", "U2")
    clock.advance(TTL - timedelta(minutes=1))
    pairing.request("discord", "3")
    clock.advance(timedelta(minutes=1))

    dropped = pairing.prune()

    assert sorted((r.provider, r.id) for r in dropped) == [("slack", "U2"), ("telegram", "1")]
    assert [(r.provider, r.id) for r in pairing.pending()] == [("discord", "3")]
    assert still_pending(backend, "telegram", "1") is False
    assert still_pending(backend, "slack", "U2") is False
    assert pairing.allowed() == [
        AllowEntry(provider="telegram", id="friend", source=AllowSource.STORE)
    ]
    assert pairing.prune() == []
    expire = [
        (r["provider"], r["subject"], r["actor"])
        for r in store.read_audit()
        if r["event"] == "expire"
    ]
    assert sorted(expire) == [
        ("slack", "U2", "system:scheduler"),
        ("telegram", "1", "system:scheduler"),
    ]


# --- allow_from from the config -------------------------------------------------------------


def test_config_allow_from_is_merged(store: StateStore, clock: FakeClock) -> None:
    pairing = PairingService(store, clock=clock, static_allow={"telegram": ["42", "7"]})
    pairing.allow("telegram", "7", actor=OWNER)
    pairing.allow("telegram", "100", actor=OWNER)

    assert pairing.is_allowed("telegram", "42") is True
    assert pairing.is_allowed("slack", "42") is False
    assert pairing.allowed("telegram") == [
        AllowEntry(provider="telegram", id="7", source=AllowSource.STORE),
        AllowEntry(provider="telegram", id="100", source=AllowSource.STORE),
        AllowEntry(provider="telegram", id="42", source=AllowSource.CONFIG),
    ]


def test_revoke_of_a_config_only_sender_says_so(store: StateStore, clock: FakeClock) -> None:
    pairing = PairingService(store, clock=clock, static_allow={"telegram": ["42"]})

    with pytest.raises(AllowedByConfigError, match="config") as caught:
        pairing.revoke("telegram", "42", actor=OWNER)

    assert not isinstance(caught.value, LookupFailed), "the sender is there, in the config"
    assert pairing.is_allowed("telegram", "42") is True


# --- durability: the grant is written before the request is dropped -------------------------


@pytest.mark.json_files
@pytest.mark.parametrize("failing_write", [1, 2], ids=["first-write-fails", "second-write-fails"])
def test_failed_approve_never_loses_both_grant_and_request(
    pairing: PairingService,
    backend: Backend,
    monkeypatch: pytest.MonkeyPatch,
    failing_write: int,
) -> None:
    req = requested(pairing, "telegram", "100")
    writes: list[Path] = []

    def flaky_stage(path: Path, data: bytes, **kwargs: Any) -> Any:
        writes.append(path)
        if len(writes) == failing_write:
            raise OSError(28, "No space left on device")
        return stage(path, data, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr("stores.jsonfile.stage", flaky_stage)
        with pytest.raises(StoreError):
            pairing.approve(req.code, actor=OWNER)

    allowed = allowed_elsewhere(backend, "telegram", "100")
    pending = still_pending(backend, "telegram", "100")
    assert (allowed, pending) != (False, False)
    # Both new files are written before either is put in place (the grant first, see
    # tests/stores/test_write_failure.py): a failure while writing them changes nothing, and
    # nothing is audited.
    assert (allowed, pending) == (False, True)
    approvals = [r for r in pairing._store.read_audit() if r["event"] == "approve"]
    assert approvals == []
    # And the owner can simply approve again.
    assert pairing.approve(req.code, actor=OWNER) == req
    assert allowed_elsewhere(backend, "telegram", "100") is True
    assert still_pending(backend, "telegram", "100") is False


# --- audit ----------------------------------------------------------------------------------


def test_every_decision_is_audited(
    pairing: PairingService, clock: FakeClock, store: StateStore
) -> None:
    t0 = clock.now()
    ann = requested(pairing, "telegram", "100")
    bob = requested(pairing, "slack", "U200")
    clock.advance(60)
    pairing.approve(ann.code, actor=OWNER)
    pairing.reject(bob.code, actor="owner:telegram:1")
    clock.advance(60)
    pairing.revoke("telegram", "100", actor=OWNER)
    pairing.request("discord", "300")
    clock.advance(TTL)
    pairing.prune()

    t1, t2, t3 = t0 + 60 * SECOND, t0 + 120 * SECOND, t0 + 120 * SECOND + TTL
    records = [
        {k: r.get(k) for k in ("ts", "event", "actor", "provider", "subject", "outcome")}
        for r in store.read_audit()
    ]
    assert records == [
        {
            "ts": format_time(t0),
            "event": "request",
            "actor": "telegram:100",
            "provider": "telegram",
            "subject": "100",
            "outcome": "created",
        },
        {
            "ts": format_time(t0),
            "event": "request",
            "actor": "slack:U200",
            "provider": "slack",
            "subject": "U200",
            "outcome": "created",
        },
        {
            "ts": format_time(t1),
            "event": "approve",
            "actor": OWNER,
            "provider": "telegram",
            "subject": "100",
            "outcome": "approved",
        },
        {
            "ts": format_time(t1),
            "event": "reject",
            "actor": "owner:telegram:1",
            "provider": "slack",
            "subject": "U200",
            "outcome": "rejected",
        },
        {
            "ts": format_time(t2),
            "event": "revoke",
            "actor": OWNER,
            "provider": "telegram",
            "subject": "100",
            "outcome": "revoked",
        },
        {
            "ts": format_time(t2),
            "event": "request",
            "actor": "discord:300",
            "provider": "discord",
            "subject": "300",
            "outcome": "created",
        },
        {
            "ts": format_time(t3),
            "event": "expire",
            "actor": "system:scheduler",
            "provider": "discord",
            "subject": "300",
            "outcome": "expired",
        },
    ]


def files_containing(state_dir: Path, needle: str) -> list[str]:
    return sorted(
        str(p.relative_to(state_dir))
        for p in state_dir.rglob("*")
        if p.is_file() and needle.encode() in p.read_bytes()
    )


@pytest.mark.json_files
@pytest.mark.parametrize("decide", ["approve", "reject"])
def test_code_is_only_ever_in_the_pairing_file(
    pairing: PairingService, state_dir: Path, decide: str
) -> None:
    req = requested(pairing, "telegram", "100")
    with pytest.raises(UnknownCodeError) as caught:  # a wrong guess is audited, not its text
        pairing.approve(req.code, provider="slack", actor=OWNER)
    assert req.code not in str(caught.value)

    assert files_containing(state_dir, req.code) == ["credentials/telegram-pairing.json"]
    assert files_containing(state_dir, codes.format_code(req.code)) == []

    getattr(pairing, decide)(req.code, actor=OWNER)

    assert files_containing(state_dir, req.code) == []
    assert files_containing(state_dir, codes.format_code(req.code)) == []
    assert (state_dir / "audit.jsonl").read_text().count("\n") == 3
