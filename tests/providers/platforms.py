"""The table of platform facts the provider contract suite reads.

A contract test is written once and runs on every platform; where platforms genuinely differ
(no buttons, no edits, what happens to a message sent while the bot is down), the test reads
the platform's entry here and asserts that platform's documented behaviour. Each fact cites
where the platform says so (see /work/shared/platform-sources.md and connectors.md).

``gaps`` names the contract tests a provider does not meet yet, with why: those run as strict
xfails (listed in every pytest summary), so a fix shows up as an XPASS to clear.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bot.core.protocols import Provider
from providers.discord.fake import DiscordDemo
from providers.discord.provider import DiscordProvider
from providers.fakebase import ContractPlatform
from providers.imessage.fake import IMessageDemo
from providers.imessage.provider import IMessageProvider
from providers.signal.fake import SignalDemo
from providers.signal.provider import SignalProvider
from providers.slack.fake import SlackDemo
from providers.slack.provider import SlackProvider
from providers.telegram.fake import TelegramDemo, TelegramWebhookDemo
from providers.telegram.provider import TelegramProvider
from providers.whatsapp.fake import WhatsAppDemo
from providers.whatsapp.provider import WhatsAppProvider

NAME = "Alice"
"""The name the contract's people give themselves (one word: Discord derives a username)."""


CUT = "cut"
"""``Limit.over`` of a limit the provider meets by cutting what is longer (ending in "…")."""


@dataclass(frozen=True)
class Limit:
    """The most a platform takes of something, and what its provider does with more."""

    most: int
    over: str
    """:data:`CUT`, or what the provider's ValueError says (a regex): refused before sending."""


@dataclass(frozen=True)
class Buttons:
    """What a platform's buttons can carry through its provider."""

    unit: Literal["bytes", "chars"]
    """What a command's length is counted in."""
    command: Limit
    """A command: the platform's limit on the field holding it, less the provider's prefix."""
    count: Limit | None
    """Buttons on one message (None: no documented limit)."""
    label: Limit | None
    """Characters of a label (None: no documented limit)."""


@dataclass(frozen=True, kw_only=True)
class Facts:
    """One platform, as the contract suite needs to know it."""

    name: str
    provider: type[Provider]
    """The class the registry must load for ``name``."""
    people: Callable[..., ContractPlatform]
    """The platform's fake as people (called with ``clock=``)."""
    fast: Mapping[str, Any]
    """Provider arguments beyond the config block: short retries and timeouts for tests."""
    bare_commands: bool = False
    """The owner types commands without their ``/`` (the platform's clients take a leading
    ``/`` for their own slash commands)."""
    sender_name: bool
    """Whether a DM carries the name the person gave themselves."""
    meta: Mapping[str, str]
    """``Inbound.meta`` of a DM from a person called :data:`NAME` on the fake."""
    max_text: int | None
    """Characters of one message (None: the platform takes any text the bot sends)."""
    buttons: Buttons | None
    """None: the platform has no buttons; a notice's text carries its commands."""
    edits_in_place: bool
    """False: the platform cannot edit, so an edit arrives as a new message."""
    while_stopped: Literal["kept", "lost"]
    """What becomes of a DM written while the provider is stopped: the platform keeps it for
    the next start, or it is gone."""
    sdk_logs_texts: bool = False
    """The platform's SDK logs request payloads at DEBUG (texts in them are its business;
    from INFO up, and in pairbot's own loggers, no text may appear). False where there is no
    SDK: aiohttp logs no payloads."""
    log_proof: str
    """A line the run's DEBUG log must hold: proof the logging the test searches was on."""
    gaps: Mapping[str, str] = field(default_factory=dict)
    """Contract test name → why this provider fails it (a strict xfail, reported)."""


FACTS: dict[str, Facts] = {
    facts.name: facts
    for facts in (
        Facts(
            name="telegram",
            provider=TelegramProvider,
            people=TelegramDemo,
            fast={"poll_timeout": 1},
            sender_name=True,
            meta={"firstName": NAME},
            # Bot API sendMessage: "Text of the message to be sent, 1-4096 characters after
            # entities parsing" ("400 Bad Request: message is too long" above); characters
            # are code points (tdlib/td MessageContent.cpp: utf8_length), as len() counts.
            max_text=4096,
            # Bot API InlineKeyboardButton.callback_data: "Data to be sent in a callback query
            # to the bot when the button is pressed, 1-64 bytes". No documented limit on the
            # number of buttons or on a button's text.
            buttons=Buttons(
                "bytes",
                command=Limit(64, "command is 65 bytes, Telegram allows 1 to 64"),
                count=None,
                label=None,
            ),
            edits_in_place=True,  # editMessageText; without reply_markup the keyboard goes
            # getUpdates: "Incoming updates are stored on the server until the bot receives
            # them either way, but they will not be kept longer than 24 hours."
            while_stopped="kept",
            sdk_logs_texts=True,  # python-telegram-bot logs request parameters at DEBUG
            log_proof="HTTP Request",  # httpx logs every call's URL, which holds the token
        ),
        Facts(
            name="slack",
            provider=SlackProvider,
            people=SlackDemo,
            fast={"ping_interval": 1},
            bare_commands=True,  # Slack clients take a leading "/" as a slash command
            sender_name=True,  # users.info: profile.real_name
            meta={"name": NAME},
            # chat.postMessage: "Slack will truncate messages containing more than 40,000
            # characters" (changelog 2018-04: cut, still posted, a message_truncated warning;
            # the fake counts the text as sent, entities included).
            max_text=40_000,
            # Block Kit button element: action_id "Maximum length is 255 characters", less the
            # provider's "pairbot:" (8); text "Maximum length ... is 75 characters". Actions
            # block: "There is a maximum of 25 elements in each action block."
            buttons=Buttons(
                "chars",
                command=Limit(247, "command is 248 characters, Slack allows 1 to 247"),
                count=Limit(25, "25"),
                label=Limit(75, CUT),
            ),
            edits_in_place=True,  # chat.update; "blocks": [] removes the buttons
            # Events API: Slack retries a delivery it saw no ack for (3 times, with backoff) and
            # queues Socket Mode envelopes for the next connection (bolt-python#1071: "Slack's
            # API server ... does retries for Events API messages").
            while_stopped="kept",
            sdk_logs_texts=True,  # slack_sdk logs request bodies at DEBUG
            log_proof="Sending a request",  # slack_sdk's DEBUG line for every Web API call
        ),
        Facts(
            name="discord",
            provider=DiscordProvider,
            people=DiscordDemo,
            fast={},
            sender_name=True,  # the user's global_name
            meta={"username": NAME.lower(), "name": NAME},
            max_text=2000,  # Create Message: content "up to 2000 characters"
            # Message components: a button's custom_id "max 100 characters" (less "pairbot:"),
            # its label "max 80 characters"; "An Action Row can contain up to 5 buttons".
            buttons=Buttons(
                "chars",
                command=Limit(92, "command must start with '/' and be at most 92 characters"),
                count=Limit(5, "Discord allows 5 buttons in a row, got 6"),
                label=Limit(80, "button label must be 1 to 80 characters"),
            ),
            edits_in_place=True,  # Edit Message; components [] removes the buttons
            # Gateway: a new session (IDENTIFY) receives nothing of a closed one; only a RESUME
            # replays missed events, and stop() closes the session.
            while_stopped="lost",
            sdk_logs_texts=True,  # discord.py logs gateway payloads and REST bodies at DEBUG
            log_proof="has received",  # discord.py's DEBUG line for every REST answer
        ),
        Facts(
            name="whatsapp",
            provider=WhatsAppProvider,
            people=WhatsAppDemo,
            fast={"retry_base_delay": 0.05},
            sender_name=True,  # contacts[].profile.name
            meta={"name": NAME},
            max_text=4096,  # Cloud API text object: body "Maximum 4096 characters"
            # Interactive reply buttons: "You can have up to 3 buttons", button id "Maximum
            # length: 256 characters", title "Maximum length: 20 characters".
            buttons=Buttons(
                "chars",
                command=Limit(256, "command is 257 characters, WhatsApp allows 1 to 256"),
                count=Limit(3, "WhatsApp allows 3 reply buttons, got 4"),
                label=Limit(20, CUT),
            ),
            edits_in_place=False,  # the Cloud API cannot edit: a reply to the message instead
            while_stopped="kept",  # Webhooks: Meta retries a failed delivery for up to 7 days
            log_proof="webhook listening",
        ),
        Facts(
            name="signal",
            provider=SignalProvider,
            people=SignalDemo,
            fast={"reconnect_min": 0.05, "reconnect_max": 0.2},
            sender_name=True,  # envelope.sourceName
            meta={"name": NAME},
            # No limit to meet: signal-cli sends a text over 2000 bytes as a 2000-byte body plus
            # a text/x-signal-plain "long text" attachment, as Signal's own clients do
            # (ManagerImpl; AsamK/signal-cli#1598).
            max_text=None,
            buttons=None,  # signal-cli-jsonrpc(5): send takes no buttons
            edits_in_place=True,  # send with editTimestamp: clients show the edit in place
            # signal-cli keeps nothing for a stream that comes back (HttpServerHandler: events
            # with no id, Last-Event-ID never read, no buffer). With --receive-mode
            # on-connection (the guide's set-up, the fake's here) messages wait on Signal's
            # server while no stream is subscribed; but the daemon learns that a stream the
            # client closed is gone only from a write that fails (its second, over TCP), so
            # the DM written right after stop() goes into the closed stream: lost. (One
            # written after the daemon noticed waits for the next start: tests/e2e/test_signal.)
            while_stopped="lost",
            log_proof="receiving from the signal-cli daemon",
            # (Closed by the provider base: the event stream is read ahead into the ordered
            # worker, so a DM behind the one in hand is handled before stop() returns.)
        ),
        Facts(
            name="imessage",
            provider=IMessageProvider,
            people=IMessageDemo,
            fast={
                "retry_initial": 0.05,
                "retry_max": 0.2,
                "send_retry_for": 5.0,
                "stop_grace": 1.0,
            },
            sender_name=False,  # BlueBubbles' handle carries an address, no display name
            meta={"service": "iMessage"},
            max_text=None,  # BlueBubbles' message/text validates no length
            buttons=None,  # iMessage has no buttons
            edits_in_place=False,  # the bot's messages are not edited: a new message instead
            # webhookService/index.ts posts each event once and only logs a failure, but the
            # Mac keeps every message: the provider reads those written while it was stopped
            # back through POST /api/v1/message/query as it starts (its catch-up).
            while_stopped="kept",
            log_proof="webhook listening",
        ),
    )
}
"""Every platform pairbot has a provider for, by provider name."""

TELEGRAM_WEBHOOK = dataclasses.replace(
    FACTS["telegram"],
    people=TelegramWebhookDemo,
    fast={},
    # setWebhook: "In case of an unsuccessful request ... we will repeat the request and give
    # up after a reasonable number of attempts"; stop() leaves the webhook set, so what is
    # written meanwhile is posted again until the restarted bot answers 2xx.
    while_stopped="kept",
    log_proof="webhook set",  # the provider's INFO line once setWebhook took the URL
)
"""Telegram in ``mode: webhook``: the same platform and provider, updates POSTed by Telegram.

Not an entry of :data:`FACTS`: that table is keyed by provider name, and the name is also the
config key the contract fixture builds the block under and the demo platform
``tests/e2e/test_demo_platforms.py`` loads, so a second ``telegram`` entry needs a key that is
no provider. tests/e2e/test_telegram_webhook_contract.py runs the contract suite on it."""
