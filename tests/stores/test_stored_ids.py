"""Ids an older pairbot or Clawdbot stored in another form (a Signal ACI in upper case, an
e-mail handle as typed, a WhatsApp number with its ``+``) still admit, revoke and approve the
sender; reading leaves the file as it is, and the next write stores the normal form."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot.core.clock import FakeClock, iso
from bot.core.errors import UnknownSubjectError
from bot.core.models import RequestOutcome
from bot.services.pairing import Granted, PairingService
from stores.jsonfile import JsonFileStore
from tests.stores.helpers import load, snapshot

ACI = "0a11ce00-0000-4000-8000-00000000000a"
OTHER = "b0b00000-0000-4000-8000-000000000002"
NEW = "c4a40000-0000-4000-8000-000000000003"

STORED = [
    # (provider, as an older writer stored it, the id the platform's sender has)
    ("signal", ACI.upper(), ACI),
    ("imessage", "Bob.Smith@iCloud.com", "bob.smith@icloud.com"),
    ("whatsapp", "+15550100001", "15550100001"),  # Clawdbot stores WhatsApp ids as E.164
    ("slack", "u012ab3cd", "U012AB3CD"),
]


def credentials(state_dir: Path, name: str) -> Path:
    return state_dir / "credentials" / name


def write_json(path: Path, content: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    path.chmod(0o600)


def stored_allow(state_dir: Path, provider: str, *ids: str) -> Path:
    path = credentials(state_dir, f"{provider}-allowFrom.json")
    write_json(path, {"version": 1, "allowFrom": list(ids), "note": "hand-edited"})
    return path


@pytest.mark.parametrize(("provider", "stored", "sender"), STORED, ids=[s[0] for s in STORED])
def test_a_stored_entry_in_another_form_admits_the_sender_and_is_left_as_it_is(
    state_dir: Path, store: JsonFileStore, pairing: PairingService, provider, stored, sender
) -> None:
    stored_allow(state_dir, provider, stored)
    before = snapshot(state_dir)

    assert pairing.is_allowed(provider, sender)
    assert [e.id for e in pairing.allowed(provider)] == [sender]
    assert pairing.allow(provider, sender, actor="cli") is Granted.UNCHANGED  # already there

    assert snapshot(state_dir) == before  # reading never rewrites a user's file


@pytest.mark.parametrize(("provider", "stored", "sender"), STORED, ids=[s[0] for s in STORED])
def test_revoke_removes_the_stored_entry_whatever_form_either_is_written_in(
    state_dir: Path, pairing: PairingService, provider, stored, sender
) -> None:
    path = stored_allow(state_dir, provider, stored)
    pairing.revoke(provider, stored, actor="owner")  # as the owner copied it from the file
    assert not pairing.is_allowed(provider, sender)
    assert load(path)["allowFrom"] == []

    stored_allow(state_dir, provider, stored)
    pairing.revoke(provider, sender, actor="owner")  # as the owner saw it in a notice
    assert not pairing.is_allowed(provider, sender)
    with pytest.raises(UnknownSubjectError):
        pairing.revoke(provider, stored, actor="owner")


def test_the_next_write_stores_every_entry_in_normal_form_and_keeps_the_rest(
    state_dir: Path, pairing: PairingService
) -> None:
    path = stored_allow(state_dir, "signal", ACI.upper(), f" {OTHER} ")

    assert pairing.allow("signal", NEW.upper(), actor="cli") is Granted.ADDED

    assert load(path) == {"version": 1, "allowFrom": [ACI, OTHER, NEW], "note": "hand-edited"}
    assert all(pairing.is_allowed("signal", i) for i in (ACI, OTHER, NEW))


def test_the_same_sender_stored_in_two_forms_is_one_entry(
    state_dir: Path, pairing: PairingService
) -> None:
    path = stored_allow(state_dir, "signal", ACI.upper(), ACI, OTHER)
    pairing.revoke("signal", ACI, actor="owner")
    assert not pairing.is_allowed("signal", ACI)
    assert load(path)["allowFrom"] == [OTHER]


def test_a_pending_request_stored_in_another_case_is_the_senders(
    state_dir: Path, clock: FakeClock, pairing: PairingService
) -> None:
    now = iso(clock.now())
    write_json(
        credentials(state_dir, "signal-pairing.json"),
        {
            "version": 1,
            "requests": [
                {"id": ACI.upper(), "code": "K7QH2RXP", "createdAt": now, "lastSeenAt": now}
            ],
        },
    )

    again = pairing.request("signal", ACI)  # the sender writes again: no second request

    assert again.outcome is RequestOutcome.PENDING
    assert again.request is not None
    assert again.request.code == "K7QH2RXP"
    assert [r.id for r in pairing.pending("signal")] == [ACI]
    approved = pairing.approve("K7QH2RXP", actor="owner")
    assert approved.id == ACI
    assert pairing.is_allowed("signal", ACI)
    assert [(n.provider, n.sender_id) for n in pairing.notices()] == [("signal", ACI)]


def test_an_approval_to_tell_stored_in_another_case_is_told_once_and_dropped(
    state_dir: Path, clock: FakeClock, pairing: PairingService
) -> None:
    path = credentials(state_dir, "imessage-pairing.json")
    write_json(
        path,
        {
            "version": 1,
            "requests": [],
            "approvedToTell": [{"id": "Bob@Example.com", "approvedAt": iso(clock.now())}],
        },
    )
    assert [n.sender_id for n in pairing.notices()] == ["bob@example.com"]

    pairing.notice_sent("imessage", "bob@example.com")

    assert pairing.notices() == []
    assert "approvedToTell" not in load(path)
