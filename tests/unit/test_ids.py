"""Each platform's one id rule (bot/core/platforms.py): its normal form, and the config's ids
(``owners:``, ``allow_from``) taken in it or refused with one line naming the field."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.cli.demo import load_platform
from bot.core.clock import FakeClock
from bot.core.commands import parse
from bot.core.config import Config, Owner
from bot.core.platforms import PLATFORMS, Platform, platform
from bot.services.nodes import NodeService
from bot.services.owner import OwnerCommands
from bot.services.pairing import PairingService
from providers.fakebase import DemoPlatform
from stores.cluster import LocalCluster
from stores.memory import MemoryStore

ACI = "0a11ce00-0000-4000-8000-00000000000a"
BSUID = "US.13491208655302741918"  # a two-letter country, a period, Meta's id: as given


def normal(provider: str, raw: str) -> str:
    return platform(provider).ids.normalise(raw)


# --- one rule per platform ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normal_form"),
    [(" 123456789 ", "123456789"), ("123456789", "123456789")],
)
def test_telegram_ids_are_digits(raw: str, normal_form: str) -> None:
    assert normal("telegram", raw) == normal_form
    assert platform("telegram").ids.matches(normal_form)


@pytest.mark.parametrize(
    "never",
    ["+15550100001", "-1001234567", "0123", "alice"],
    ids=["phone-number", "group-chat-id", "leading-zero", "name"],
)
def test_telegram_refuses_what_is_never_a_sender(never: str) -> None:
    assert not platform("telegram").ids.matches(normal("telegram", never))


def test_discord_ids_are_digits() -> None:
    assert normal("discord", " 123456789012345678\n") == "123456789012345678"


def test_slack_user_ids_are_upper_case() -> None:
    assert normal("slack", " u012ab3cd ") == "U012AB3CD"
    assert platform("slack").ids.matches("U012AB3CD")


@pytest.mark.parametrize(
    ("raw", "normal_form"),
    [
        ("15550100001", "15550100001"),
        ("+15550100001", "15550100001"),
        ("+1 (555) 010-0001", "15550100001"),
        ("+49 30.1234.5678", "493012345678"),
        (BSUID, BSUID),
        ("US.ENT.11815799212886844830", "US.ENT.11815799212886844830"),
        ("br.1502576394655843", "br.1502576394655843"),  # kept exactly as written
    ],
)
def test_whatsapp_ids_are_wa_id_digits_and_bsuids_as_given(raw: str, normal_form: str) -> None:
    assert normal("whatsapp", raw) == normal_form


def test_signal_acis_are_lower_case() -> None:
    assert normal("signal", f" {ACI.upper()} ") == ACI
    assert platform("signal").ids.matches(ACI)
    assert not platform("signal").ids.matches(normal("signal", "+15550100001"))


@pytest.mark.parametrize(
    ("raw", "normal_form"),
    [
        ("  Alice.Smith@iCloud.COM ", "alice.smith@icloud.com"),
        ("+15550100001", "+15550100001"),
        ("+1 (555) 010-0001", "+15550100001"),
        ("15550100001", "15550100001"),  # no +: a national number is not guessed into one
    ],
)
def test_imessage_handles_are_lower_case_e_mails_and_e164(raw: str, normal_form: str) -> None:
    assert normal("imessage", raw) == normal_form


def test_an_imessage_number_without_its_plus_is_refused() -> None:
    assert not platform("imessage").ids.matches(normal("imessage", "15550100001"))


_SAMPLES = [
    " 123 ",
    "+1 (555) 010-0001",
    "+15550100001",
    BSUID,
    ACI.upper(),
    "Alice@Example.COM",
    "u012ab3cd",
    "*",
    "",
    "a-b.c@d.e",
]


@pytest.mark.parametrize("entry", PLATFORMS, ids=lambda p: p.name)
@given(
    ids=st.lists(st.one_of(st.sampled_from(_SAMPLES), st.text(alphabet="+-.() 0123456789aAeE@Uu")))
)
def test_the_bulk_form_is_the_one_form_and_normal_is_a_fixed_point(
    entry: Platform, ids: list[str]
) -> None:
    rule = entry.ids
    once = [rule.normalise(i) for i in ids]
    assert rule.normalise_all(ids) == once
    assert [rule.normalise(i) for i in once] == once


@pytest.mark.parametrize("entry", PLATFORMS, ids=lambda p: p.name)
def test_the_demo_ids_are_already_in_normal_form(entry: Platform) -> None:
    demo: DemoPlatform = load_platform(entry.name)
    for user_id in (demo.owner_id, demo.user_id(1)):
        assert entry.ids.normalise(user_id) == user_id


# --- the config: taken in normal form ----------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "written", "normal_form"),
    [
        ("signal", ACI.upper(), ACI),
        ("imessage", "Owner@Example.COM", "owner@example.com"),
        ("whatsapp", "+1 555 010 0001", "15550100001"),
        ("slack", "u012ab3cd", "U012AB3CD"),
        ("telegram", 111111111, "111111111"),
    ],
)
def test_an_owner_written_in_any_accepted_form_is_kept_in_normal_form(
    provider: str, written: object, normal_form: str
) -> None:
    assert Owner.model_validate({"provider": provider, "user_id": written}).user_id == normal_form


def test_allow_from_is_kept_in_normal_form() -> None:
    config = Config.model_validate(
        {
            "providers": {
                "signal": {"account": "+15550000000", "allow_from": [ACI.upper()]},
                "imessage": {
                    "server_url": "http://127.0.0.1:1234",
                    "password": "x",
                    "allow_from": ["Bob@Example.com", "+44 20 7946 0958"],
                },
            }
        }
    )
    assert config.static_allow() == {
        "signal": [ACI],
        "imessage": ["bob@example.com", "+442079460958"],
    }


# --- the owner chat --------------------------------------------------------------------------


def test_an_owner_revokes_a_sender_written_in_another_case() -> None:
    clock = FakeClock()
    store = MemoryStore()
    pairing = PairingService(store, clock=clock)
    owner = OwnerCommands(
        pairing, NodeService(store, clock=clock), clock=clock, cluster=LocalCluster()
    )
    pairing.allow("signal", f" {ACI.upper()}", actor="cli")
    assert pairing.is_allowed("signal", ACI)

    reply = owner.run(parse(f"/revoke signal {ACI.upper()}"), actor=f"owner:signal:{ACI}")

    assert reply.text == f"Revoked Signal sender {ACI}; their next message gets a new code."
    assert not pairing.is_allowed("signal", ACI)
