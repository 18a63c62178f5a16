"""What every provider must do, written once and run on all six platforms.

Each test drives a real provider (its real SDK) against its platform's loopback fake, played
as people through :class:`providers.ContractPlatform.fake`, and speaks to the provider only
through the :class:`bot.core.protocols.Provider` protocol. Where platforms differ, the test
reads the platform's facts (``tests/providers/platforms.py``) and asserts that platform's
documented behaviour: it never skips one.

"Nothing else arrived" is proven without sleeping: a last DM (:func:`through`) is handed on
only after every message its platform delivered before it, since every platform here
delivers a bot's events in order and every provider hands messages on one at a time, in
order. (A button press may come later: Discord's provider answers the interaction first.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest

from bot.core.errors import ConfigError
from bot.core.models import HELD_TEXT_LIMIT, Button, ChatKind, Inbound
from providers import load_provider_class
from providers.fakebase import wait_until
from tests.helpers import APPROVE, REJECT
from tests.providers.conftest import Rig
from tests.providers.platforms import CUT, NAME

pytestmark = pytest.mark.e2e

LAST = "the last word"


async def through(rig: Rig) -> list[Inbound]:
    """A last DM, from someone else; once it is handed on, return what came before it."""
    rig.people.dm(rig.people.user_id(9), LAST, name="Sam")
    await wait_until(lambda: LAST in rig.inbox.texts)
    assert rig.inbox.texts[-1] == LAST
    return rig.inbox.items[:-1]


async def owner_chat(rig: Rig) -> str:
    """The owner's one-to-one chat, where the bot sends notices."""
    return await rig.provider.dm_chat_id(rig.people.owner_id)


async def to_owner(rig: Rig, text: str, buttons: Sequence[Button] = ()) -> str:
    """Send ``text`` to the owner's chat; return the message's id (every platform gives one)."""
    sent = await rig.provider.send(await owner_chat(rig), text, buttons=buttons)
    assert isinstance(sent, str)
    assert sent
    return sent


def running(rig: Rig) -> bool:
    return rig.provider.running


def command_of(size: int, unit: str) -> str:
    """A command of exactly ``size`` characters, or bytes (UTF-8, two per ``é``)."""
    if unit == "chars":
        return "/" + "x" * (size - 1)
    return "/" + "é" * ((size - 1) // 2) + "x" * ((size - 1) % 2)


# -- inbound ---------------------------------------------------------------------------------


async def test_a_strangers_dm_becomes_one_inbound(rig: Rig) -> None:
    await rig.start()
    alice = rig.people.user_id(1)
    text = "hello <b> & *all* [x](http://e.com) @everyone"

    written = rig.people.dm_written(alice, text, name=NAME)

    [inbound] = await through(rig)
    assert inbound == Inbound(
        provider=rig.facts.name,
        chat_id=await rig.provider.dm_chat_id(alice),
        chat_kind=ChatKind.DM,
        sender_id=alice,
        sender_name=NAME if rig.facts.sender_name else "",
        text=text,
        message_id=written.message_id,
        meta=dict(rig.facts.meta),
        sent_at=written.sent_at,
    )
    assert (rig.provider.name, rig.provider.bare_commands) == (
        rig.facts.name,
        rig.facts.bare_commands,
    )
    assert type(rig.provider) is load_provider_class(rig.facts.name) is rig.facts.provider


def test_the_registry_refuses_a_platform_it_does_not_know() -> None:
    with pytest.raises(ConfigError, match="unknown provider 'icq'"):
        load_provider_class("icq")


async def test_a_group_message_is_never_a_dm(rig: Rig) -> None:
    """Every provider hands a group message on as GROUP (the gate then drops it): it must
    never pass for a DM, the one kind of chat where a stranger can ask to pair."""
    await rig.start()
    alice = rig.people.user_id(1)

    rig.people.group_message(alice, "hi all", name=NAME)

    [inbound] = await through(rig)
    assert (inbound.chat_kind, inbound.sender_id, inbound.text, inbound.is_button) == (
        ChatKind.GROUP,
        alice,
        "hi all",
        False,
    )
    assert inbound.chat_id != await rig.provider.dm_chat_id(alice)


async def test_own_and_outbound_messages_make_no_inbound(rig: Rig) -> None:
    await rig.start()
    chat = await owner_chat(rig)

    rig.people.own_message("/approve ABCD2345")
    sent = await to_owner(rig, "the bot's own words", buttons=[APPROVE])
    await rig.provider.edit(chat, sent, "the bot's own words, edited")

    assert await through(rig) == []


async def test_a_long_dm_of_many_lines_arrives_whole_as_text(rig: Rig) -> None:
    """What a pending stranger wrote is held as it arrived and handed to the handler after
    the approval, and its first line previewed to the owner (issue 14): the provider hands
    on the whole text, its line breaks kept, up to the most either the platform lets a
    person write or pairbot holds (4 KB)."""
    await rig.start()
    alice = rig.people.user_id(1)
    most = min(rig.facts.max_text or HELD_TEXT_LIMIT, HELD_TEXT_LIMIT)
    lines = [f"line {n}: Zoë says «hi» 🎶 *not bold* <b>" for n in range(200)]
    text = "\n".join(lines)
    while len(text) > most or len(text.encode()) > HELD_TEXT_LIMIT:
        text = text.rsplit("\n", 1)[0]

    rig.people.dm(alice, text, name=NAME)

    [inbound] = await through(rig)
    assert (inbound.text, inbound.media, inbound.chat_kind) == (text, False, ChatKind.DM)
    assert inbound.text.splitlines()[0] == lines[0]


async def test_a_textless_dm_is_a_contact_attempt(rig: Rig) -> None:
    """A photo, file or sticker with no text is still someone writing to the bot: it becomes
    one Inbound marked ``media``, so a stranger gets a code for it like for text (issue 11)."""
    await rig.start()
    alice = rig.people.user_id(1)

    rig.people.non_text_dm(alice, name=NAME)

    [inbound] = await through(rig)
    assert (inbound.sender_id, inbound.chat_kind, inbound.media) == (alice, ChatKind.DM, True)
    assert inbound.text == ""


async def test_a_redelivered_event_is_handled_once(rig: Rig) -> None:
    """Each platform re-delivers its own way (see each fake's ``dm_delivered_twice``)."""
    await rig.start()
    alice = rig.people.user_id(1)

    await rig.people.dm_delivered_twice(alice, "only once", name=NAME)

    assert [i.text for i in await through(rig)] == ["only once"]


async def test_a_failing_callback_is_logged_and_handling_goes_on(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    async def handler(inbound: Inbound) -> None:
        seen.append(inbound.text)
        if len(seen) == 1:
            raise RuntimeError("handler blew up")

    await rig.start(handler)
    alice = rig.people.user_id(1)
    rig.people.dm(alice, "first private words", name=NAME)
    rig.people.dm(alice, "second", name=NAME)
    await wait_until(lambda: len(seen) == 2)

    assert seen == ["first private words", "second"]
    [record] = [
        r
        for r in caplog.records
        if r.name.startswith(f"providers.{rig.facts.name}") and r.levelno >= logging.WARNING
    ]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert "first private words" not in caplog.text


# -- lifecycle -------------------------------------------------------------------------------


async def test_stop_lets_the_work_in_hand_finish(rig: Rig) -> None:
    started: list[str] = []
    done: list[str] = []
    release = asyncio.Event()

    async def slow(inbound: Inbound) -> None:
        started.append(inbound.text)
        await release.wait()
        done.append(inbound.text)

    await rig.start(slow)
    alice = rig.people.user_id(1)
    rig.people.dm(alice, "one", name=NAME)
    rig.people.dm(alice, "two", name=NAME)
    await wait_until(lambda: started == ["one"])
    await rig.people.handed_over()  # "two" is the provider's now, behind "one"

    stopping = asyncio.create_task(rig.provider.stop())
    finished, _ = await asyncio.wait({stopping}, timeout=0.2)
    assert not finished  # stop() waits for the message in hand
    release.set()
    await stopping

    assert done == started == ["one", "two"]
    await rig.start(slow)
    rig.people.dm(alice, "three", name=NAME)
    await wait_until(lambda: "three" in done)
    assert done == ["one", "two", "three"]


async def test_start_stop_start(rig: Rig) -> None:
    await rig.provider.stop()  # before start: nothing to do
    await rig.start()
    with pytest.raises(RuntimeError, match="already running"):
        await rig.start()
    alice = rig.people.user_id(1)
    rig.people.dm(alice, "before", name=NAME)
    await rig.inbox.wait()
    chat = await rig.provider.dm_chat_id(alice)

    await asyncio.gather(rig.provider.stop(), rig.provider.stop())
    await rig.provider.stop()
    assert not running(rig)
    with pytest.raises(RuntimeError, match="not running"):
        await rig.provider.send(chat, "x")
    rig.people.dm(alice, "while stopped", name=NAME)
    if rig.facts.while_stopped == "lost":
        await rig.people.handed_over()  # tried (and failed), or held for a session now gone

    await rig.start()
    assert running(rig)
    expected = ["before", "while stopped"] if rig.facts.while_stopped == "kept" else ["before"]
    assert [i.text for i in await through(rig)] == expected


async def test_stop_right_after_start_leaves_nothing_open(rig: Rig) -> None:
    for _ in range(3):  # an unclosed session or socket would warn, an error here
        await rig.start()
        await rig.provider.stop()
    assert not running(rig)


# -- outbound --------------------------------------------------------------------------------


async def test_a_text_is_shown_exactly_as_written(rig: Rig) -> None:
    await rig.start()
    text = "<b>*not bold*</b> _x_ [link](http://e.com) <!channel> @everyone &amp; \\ `y`"

    await to_owner(rig, text)

    assert rig.people.shown_to(rig.people.owner_id) == [text]


async def test_a_long_text_is_split_to_the_platforms_limit(rig: Rig) -> None:
    await rig.start()
    limit = rig.facts.max_text
    size = 2 * limit + 17 if limit else 10_000
    text = ("pairbot " * (size // 8 + 1))[:size]

    await to_owner(rig, text)

    shown = rig.people.shown_to(rig.people.owner_id)
    assert "".join(shown) == text
    if limit is None:
        assert shown == [text]
    else:
        assert len(shown) == 3
        assert all(len(part) <= limit for part in shown)


async def test_buttons_are_shown_and_a_press_comes_back_as_a_button_inbound(rig: Rig) -> None:
    await rig.start()
    owner = rig.people.owner_id
    chat = await owner_chat(rig)

    notice = await to_owner(rig, "Approve Bob?", buttons=[APPROVE, REJECT])

    assert rig.people.shown_to(owner) == ["Approve Bob?"]
    if rig.facts.buttons is None:  # no buttons: the person types the command instead
        assert rig.people.buttons_on(notice) == []
        with pytest.raises(LookupError):
            rig.people.press(owner, notice, "Reject")
        rig.people.dm(owner, REJECT.command, name="Owner")
        [typed] = await through(rig)
        assert (typed.text, typed.is_button, typed.chat_id) == (REJECT.command, False, chat)
        return
    assert rig.people.buttons_on(notice) == ["Approve", "Reject"]
    rig.people.press(owner, notice, "Reject")
    [pressed] = await rig.inbox.wait()
    assert await through(rig) == [pressed]
    assert (pressed.provider, pressed.chat_id, pressed.chat_kind, pressed.sender_id) == (
        rig.facts.name,
        chat,
        ChatKind.DM,
        owner,
    )
    assert (pressed.text, pressed.is_button, pressed.message_id) == (REJECT.command, True, notice)


async def test_an_edit_replaces_the_text_and_takes_the_buttons_away(rig: Rig) -> None:
    await rig.start()
    owner = rig.people.owner_id
    chat = await owner_chat(rig)
    notice = await to_owner(rig, "Approve Bob?", buttons=[APPROVE, REJECT])

    await rig.provider.edit(chat, notice, "Approved <Bob> & co")

    if rig.facts.edits_in_place:
        assert rig.people.shown_to(owner) == ["Approved <Bob> & co"]
        assert rig.people.buttons_on(notice) == []
    else:  # the outcome comes as a new message; the old one stays as it was
        assert rig.people.shown_to(owner) == ["Approve Bob?", "Approved <Bob> & co"]
        kept = ["Approve", "Reject"] if rig.facts.buttons else []
        assert rig.people.buttons_on(notice) == kept


async def test_the_longest_command_a_button_takes_round_trips(rig: Rig) -> None:
    await rig.start()
    owner = rig.people.owner_id
    facts = rig.facts.buttons
    command = command_of(facts.command.most, facts.unit) if facts else "/x" * 500

    notice = await to_owner(rig, "Press it", buttons=[Button(label="Go", command=command)])

    if facts is None:  # no buttons: typed, any length comes back
        rig.people.dm(owner, command, name="Owner")
    else:
        rig.people.press(owner, notice, "Go")
    [back] = await rig.inbox.wait()
    assert await through(rig) == [back]
    assert (back.text, back.is_button) == (command, facts is not None)


async def test_a_command_over_the_limit_is_refused_before_sending(rig: Rig) -> None:
    await rig.start()
    facts = rig.facts.buttons
    if facts is None:  # no buttons to overflow: the text goes, the commands unseen
        await to_owner(rig, "Press it", buttons=[Button(label="Go", command="/x" * 500)])
        assert rig.people.shown_to(rig.people.owner_id) == ["Press it"]
        return
    command = command_of(facts.command.most + 1, facts.unit)

    with pytest.raises(ValueError, match=rf"button 'Go': {facts.command.over}"):
        await to_owner(rig, "Press it", buttons=[Button(label="Go", command=command)])

    assert rig.people.shown_to(rig.people.owner_id) == []


async def test_too_many_buttons_are_refused_before_sending(rig: Rig) -> None:
    await rig.start()
    facts = rig.facts.buttons
    limit = facts.count if facts else None
    buttons = [
        Button(label=f"B{n}", command=f"/b {n}") for n in range((limit.most if limit else 5) + 1)
    ]

    if limit is not None:
        with pytest.raises(ValueError, match=limit.over):
            await to_owner(rig, "Choose", buttons=buttons)
        assert rig.people.shown_to(rig.people.owner_id) == []
        return
    notice = await to_owner(rig, "Choose", buttons=buttons)
    assert rig.people.buttons_on(notice) == ([b.label for b in buttons] if facts else [])
    assert rig.people.shown_to(rig.people.owner_id) == ["Choose"]


async def test_a_long_label_is_cut_to_fit_or_refused(rig: Rig) -> None:
    await rig.start()
    limit = rig.facts.buttons.label if rig.facts.buttons else None
    label = "Approve this request from a person you know " * 3
    buttons = [Button(label=label, command="/approve X")]

    if limit is not None and limit.over != CUT:
        with pytest.raises(ValueError, match=limit.over):
            await to_owner(rig, "Approve?", buttons=buttons)
        assert rig.people.shown_to(rig.people.owner_id) == []
        return
    notice = await to_owner(rig, "Approve?", buttons=buttons)
    if rig.facts.buttons is None:
        assert rig.people.buttons_on(notice) == []
    elif limit is None:  # no documented limit: shown as given
        assert rig.people.buttons_on(notice) == [label]
    else:
        [shown] = rig.people.buttons_on(notice)
        assert len(shown) <= limit.most
        assert shown.endswith("…")
        assert label.startswith(shown.removesuffix("…").rstrip())


# -- logs ------------------------------------------------------------------------------------


async def test_logs_carry_no_secret(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await rig.start()
    owner, alice = rig.people.owner_id, rig.people.user_id(1)
    rig.people.dm(alice, "secret text 1234", name=NAME)
    await rig.inbox.wait()
    chat = await owner_chat(rig)
    notice = await to_owner(rig, "reply text 5678", buttons=[APPROVE])
    if rig.facts.buttons is not None:
        rig.people.press(owner, notice, "Approve")
        await rig.inbox.wait(2)
    await rig.provider.edit(chat, notice, "edited text 9012")
    await rig.provider.stop()

    for secret in rig.secrets:  # none on Signal: signal-cli's local daemon takes no credential
        assert secret not in caplog.text
    assert rig.facts.log_proof in caplog.text
    shown = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("providers.")]
    for text in ("secret text 1234", "reply text 5678", "edited text 9012", "ABCD2345"):
        assert not any(text in line for line in shown + ours)
        if not rig.facts.sdk_logs_texts:
            assert text not in caplog.text
