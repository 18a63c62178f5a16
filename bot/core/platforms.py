"""The chat platforms pairbot knows: one table, everything else is derived from it.

Each :class:`Platform` names its config block (``providers.<name>:``, defined above the table,
with what a user id looks like there), its provider and its demo fake (as ``"module:Class"``,
named after the block's class and imported only when asked for: the core imports no provider
and no SDK), its proper name, and the two facts the core needs about its client. The config's
``providers:`` and ``owners:``, the ``pairbot`` command's choices, the texts, the provider
registry, the demo and the state dir's files all come from :data:`PLATFORMS`.

Adding a platform is one block and one entry here, plus its provider and fake. The block also
says what ``pairbot init`` asks for to write it (``asks``, each secret with the environment
variable that holds it, as ``config.example.yaml`` names it) and how a person finds their own
id there (its id rule's ``find``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator, model_validator

from bot.core.codes import MIN_SECRET_BITS, RANDOM_STRING_COMMAND, weakness
from bot.core.schema import (
    Ask,
    IdRule,
    OptionalSecret,
    ProviderBlock,
    Secret,
    WebhookConfig,
)

# --- the config blocks -------------------------------------------------------------------------


TELEGRAM_API = "https://api.telegram.org"
"""The Bot API server a Telegram block talks to unless ``api_base_url`` names another."""

_TELEGRAM_SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}\Z")
"""What setWebhook takes as ``secret_token``: "1-256 characters. Only characters A-Z, a-z,
0-9, _ and - are allowed" (core.telegram.org/bots/api#setwebhook; the Bot API server refuses
others: tdlib/telegram-bot-api Client.cpp, do_set_webhook, "secret token is too long",
"secret token contains unallowed characters")."""


def telegram_secret_token_problem(value: str) -> str | None:
    """Why setWebhook would refuse ``value`` as its ``secret_token``, or None. Never quotes it."""
    if _TELEGRAM_SECRET_TOKEN.match(value) is None:
        return "must be 1 to 256 characters of A-Z, a-z, 0-9, _ and - (what setWebhook takes)"
    return None


def telegram_webhook_url_problem(url: str, api_base_url: str | None) -> str | None:
    """Why ``url`` cannot be the URL Telegram posts updates to, or None.

    api.telegram.org posts only to HTTPS ("bad webhook: An HTTPS URL must be provided for
    webhook": tdlib/telegram-bot-api WebhookActor.cpp). A self-hosted Bot API server
    (``api_base_url`` set) started with ``--local`` also posts to plain HTTP on any port
    (the same check is skipped in local mode), so there an ``http://`` URL is let through and
    the server itself refuses it if it is not in local mode.
    """
    scheme, _, rest = url.partition("://")
    if not rest or "/" in scheme or rest.startswith("/"):
        return "must be a full URL, e.g. https://bot.example.com/telegram/webhook"
    local = (api_base_url or TELEGRAM_API).rstrip("/") != TELEGRAM_API
    if scheme.lower() != "https" and not (local and scheme.lower() == "http"):
        return "must be an https:// URL: Telegram posts updates only to HTTPS"
    return None


class TelegramConfig(ProviderBlock):
    """``providers.telegram:`` — a Telegram bot (python-telegram-bot): long polling (default)
    or a webhook Telegram POSTs updates to (``mode: webhook``)."""

    # A user id is a positive number, written in digits as the Bot API gives ``from.id``: a
    # negative one is a group's chat id and a ``+`` begins a phone number, never a sender.
    ids = IdRule(
        pattern=re.compile(r"[1-9][0-9]*\Z"),
        what="a numeric Telegram user id",
        allow_from="a numeric Telegram user id (usernames can change hands)",
        allow_from_list="a list of numeric Telegram user ids, e.g. [123456789]",
        find="your numeric Telegram user id, not your @username: message @userinfobot in "
        "Telegram and it answers with it. Then open your bot's chat and press Start: a bot "
        "cannot write to anyone first.",
    )
    asks = (
        Ask(
            field="token",
            what="bot token (@BotFather answers /newbot with it: 123456789:AA…)",
            env="TELEGRAM_BOT_TOKEN",
        ),
    )

    token: Secret
    api_base_url: str | None = None
    max_send_rate: float = Field(default=30.0, gt=0)
    mode: Literal["polling", "webhook"] = "polling"
    webhook_url: str | None = None
    """The public URL Telegram POSTs updates to (setWebhook ``url``); webhook mode only."""
    secret_token: OptionalSecret = None
    """Sent by Telegram in ``X-Telegram-Bot-Api-Secret-Token`` with each update; webhook mode
    only, and required there."""
    webhook: WebhookConfig = WebhookConfig(port=8083, path="/telegram/webhook")

    @field_validator("secret_token")
    @classmethod
    def _secret_token(cls, value: str | None) -> str | None:
        """What setWebhook takes, and not guessable: anyone who reaches the port may try."""
        if value is None:
            return None
        if problem := telegram_secret_token_problem(value):
            raise ValueError(problem)
        if reason := weakness(value):
            raise ValueError(
                f"too weak ({reason}; at least {MIN_SECRET_BITS} bits of randomness needed): "
                f"make one with {RANDOM_STRING_COMMAND}"
            )
        return value

    @model_validator(mode="after")
    def _mode_needs(self) -> TelegramConfig:
        """Webhook mode needs the URL and the secret token; polling mode takes neither."""
        if self.mode == "polling":
            for field in ("webhook_url", "secret_token"):
                if getattr(self, field) is not None:
                    raise ValueError(f"{field} is only used when mode is webhook")
            return self
        if not self.webhook_url:
            raise ValueError("webhook_url is required when mode is webhook")
        if problem := telegram_webhook_url_problem(self.webhook_url, self.api_base_url):
            raise ValueError(f"webhook_url {problem}")
        if not self.secret_token:
            raise ValueError(
                f"secret_token is required when mode is webhook: make one with "
                f"{RANDOM_STRING_COMMAND}"
            )
        return self


class SlackConfig(ProviderBlock):
    """``providers.slack:`` — a Slack app over Socket Mode (default) or the HTTP Events API."""

    # Slack writes user ids in upper case (``U012AB3CD``): one written in lower case is the same.
    ids = IdRule(
        pattern=re.compile(r"^[UW][A-Z0-9]{2,}$"),
        what="a Slack user id (U…)",
        allow_from="a Slack user id (U…), e.g. U012AB3CD",
        case="upper",
        find="your Slack member id (U…): open your profile in Slack, then ⋮ → Copy member ID.",
    )
    asks = (
        Ask(
            field="bot_token",
            what="Bot User OAuth Token (xoxb-…: Install App in your app's settings)",
            env="SLACK_BOT_TOKEN",
        ),
        Ask(
            field="app_token",
            what="app-level token for Socket Mode (xapp-…: Basic Information → App-Level "
            "Tokens, scope connections:write)",
            env="SLACK_APP_TOKEN",
        ),
    )

    bot_token: Secret
    app_token: OptionalSecret = None
    signing_secret: OptionalSecret = None
    mode: Literal["socket", "http"] = "socket"
    api_base_url: str | None = None
    webhook: WebhookConfig = WebhookConfig(port=3000, path="/slack/events")

    @model_validator(mode="after")
    def _mode_needs(self) -> SlackConfig:
        """Socket Mode needs the app token; HTTP mode needs the signing secret."""
        if self.mode == "socket" and not self.app_token:
            raise ValueError("app_token is required when mode is socket")
        if self.mode == "http" and not self.signing_secret:
            raise ValueError("signing_secret is required when mode is http")
        return self


class DiscordConfig(ProviderBlock):
    """``providers.discord:`` — a Discord bot (discord.py)."""

    ids = IdRule(
        pattern=re.compile(r"^\d{15,22}$"),
        what="a numeric Discord user id (a snowflake)",
        find="your Discord user id (a long number): turn on User Settings → Advanced → "
        "Developer Mode, then right-click your name and choose Copy User ID.",
    )
    asks = (
        Ask(
            field="token",
            what="bot token (Developer Portal → your application → Bot → Reset Token)",
            env="DISCORD_BOT_TOKEN",
        ),
    )

    token: Secret
    api_base_url: str | None = None
    gateway_url: str | None = None


class WhatsAppConfig(ProviderBlock):
    """``providers.whatsapp:`` — the WhatsApp Business Cloud API."""

    # A sender is their wa_id (the phone number in digits) when Meta sends it, else their
    # business-scoped user id (BSUID: two capitals, a period, up to 128 letters and digits;
    # Meta, "Business-scoped user IDs"), so both may be owners and allowed. A parent BSUID
    # (US.ENT.…) never names a sender and is refused. ``numeric`` stays off: a BSUID is not.
    # A phone number written ``+1 555 010 0001`` is taken as the wa_id ``15550100001``; a
    # BSUID has letters, so the phone rule leaves it as given.
    ids = IdRule(
        pattern=re.compile(r"^(\d{6,20}|[A-Z]{2}\.[A-Za-z0-9]{1,128})$"),
        what="a WhatsApp id (a wa_id: the phone number in digits, no +; or a BSUID such as "
        "US.13491208655302741918)",
        phone="digits",
        find="your WhatsApp number with its country code, in digits (15551234567 for "
        "+1 555 123 4567). Then send the bot a message: WhatsApp lets it write to you only "
        "within 24 hours of your last one.",
    )
    asks = (
        Ask(
            field="access_token",
            what="access token (a system user's permanent token with whatsapp_business_messaging)",
            env="WHATSAPP_ACCESS_TOKEN",
        ),
        Ask(
            field="app_secret",
            what="app secret (App settings → Basic); it verifies every webhook POST",
            env="WHATSAPP_APP_SECRET",
        ),
        Ask(
            field="verify_token",
            what="verify token (any string you choose; you enter the same in Meta's webhook "
            "settings)",
            env="WHATSAPP_VERIFY_TOKEN",
        ),
        Ask(
            field="phone_number_id",
            what="phone number id of the business number (WhatsApp → API Setup; the id, not "
            "the number)",
        ),
    )

    access_token: Secret
    app_secret: Secret
    verify_token: Secret
    phone_number_id: str
    api_base_url: str | None = None
    api_version: str = "v21.0"
    webhook: WebhookConfig = WebhookConfig(port=8081, path="/whatsapp/webhook")


class SignalConfig(ProviderBlock):
    """``providers.signal:`` — a signal-cli JSON-RPC daemon (``signal-cli daemon --http``)."""

    # signal-cli writes an ACI as Java's ``UUID.toString()`` does, in lower case
    # (JsonMessageEnvelope: ``sourceAddress.uuid().map(UUID::toString)``), and reads one in
    # any case (``UUID.fromString``): an ACI written in upper case is the same account.
    ids = IdRule(
        pattern=re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
        what="a Signal account UUID (ACI)",
        allow_from="a Signal account UUID (ACI), not a phone number",
        case="lower",
        find="your Signal ACI (account UUID), not your number. Not known yet? Leave it out: "
        'write to the bot once, its reply says "Your Signal id: …", and add that to owners:.',
    )
    asks = (
        Ask(
            field="account",
            what="the bot's own number, with + and country code (as signal-cli names it)",
        ),
        Ask(field="http_url", what="where the signal-cli daemon (daemon --http) listens"),
    )

    http_url: str = "http://127.0.0.1:8080"
    account: str


class IMessageConfig(ProviderBlock):
    """``providers.imessage:`` — a BlueBubbles server."""

    # A handle is an Apple ID e-mail (case-blind: lower case) or a phone number in E.164
    # (``+1 (555) 010-0001`` is ``+15550100001``; one without its ``+`` is refused, as a
    # national number would be a guess at the country).
    ids = IdRule(
        pattern=re.compile(r"^(\+\d{6,15}|[^@\s]+@[^@\s]+\.[^@\s]+)$"),
        what="an iMessage handle (+E.164 number or email)",
        case="lower",
        phone="e164",
        find="your own handle: your phone number with + and country code (+15551234567) or "
        "your Apple ID e-mail. Then write to the bot's Apple ID once.",
    )
    asks = (
        Ask(field="server_url", what="the BlueBubbles server's URL (http://mac.lan:1234)"),
        Ask(
            field="password",
            what="the BlueBubbles server password",
            env="BLUEBUBBLES_PASSWORD",
        ),
    )

    server_url: str
    password: Secret
    send_method: Literal["auto", "apple-script", "private-api"] = "auto"
    webhook: WebhookConfig = WebhookConfig(port=8082, path="/bluebubbles/webhook")
    # BlueBubbles answers a send once Messages shows it, or after 120 s (the provider refuses
    # a request_timeout that gives up first). Catch-up reads what webhooks missed this often.
    request_timeout: float = Field(default=130.0, gt=0)
    catch_up_every: float = Field(default=60.0, gt=0)


# --- the table ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Platform:
    """One chat platform pairbot connects to."""

    name: str
    """The provider name: config key, state file prefix, ``--provider`` choice."""
    label: str
    """Its proper name, as texts show it."""
    config: type[ProviderBlock]
    """Its ``providers.<name>:`` block."""
    provider: str
    """``"module:Class"`` of its provider (see :func:`providers.load_provider_class`)."""
    demo: str
    """``"module:Class"`` of its :class:`providers.fakebase.DemoPlatform` (the demo's fake)."""
    buttons: bool
    """Owner notices carry Approve / Reject buttons here; without, the notice's text alone
    says the command (the provider ignores buttons)."""
    bare_commands: bool = False
    """Its clients take a leading ``/`` for their own slash commands (Slack), so the owner
    types ``approve CODE`` and the texts shown there drop the slash."""

    @property
    def ids(self) -> IdRule:
        """What a user id looks like here (from the config block)."""
        return self.config.ids


def _platform(
    name: str,
    label: str,
    config: type[ProviderBlock],
    *,
    buttons: bool,
    bare_commands: bool = False,
) -> Platform:
    """One row of the table. Its provider and its fake are named after its config block:
    ``<Stem>Config`` has ``<Stem>Provider`` in ``providers/<name>/provider.py`` and
    ``<Stem>Demo`` in ``providers/<name>/fake.py``."""
    stem = config.__name__.removesuffix("Config")
    return Platform(
        name=name,
        label=label,
        config=config,
        provider=f"providers.{name}.provider:{stem}Provider",
        demo=f"providers.{name}.fake:{stem}Demo",
        buttons=buttons,
        bare_commands=bare_commands,
    )


PLATFORMS: tuple[Platform, ...] = (
    _platform("telegram", "Telegram", TelegramConfig, buttons=True),
    _platform("slack", "Slack", SlackConfig, buttons=True, bare_commands=True),
    _platform("discord", "Discord", DiscordConfig, buttons=True),
    _platform("whatsapp", "WhatsApp", WhatsAppConfig, buttons=True),
    _platform("signal", "Signal", SignalConfig, buttons=False),
    _platform("imessage", "iMessage", IMessageConfig, buttons=False),
)
"""Every chat platform pairbot knows, in the order lists show them."""

KNOWN_PROVIDERS: tuple[str, ...] = tuple(p.name for p in PLATFORMS)
"""Every platform's name; any other provider name is a usage error."""

_BY_NAME = {p.name: p for p in PLATFORMS}


def platform(name: str) -> Platform:
    """Return the platform called ``name``.

    Raises:
        ValueError: no platform has that name (the message lists the known ones).
    """
    found = _BY_NAME.get(name)
    if found is None:
        raise ValueError(f"unknown provider {name!r} (known: {', '.join(KNOWN_PROVIDERS)})")
    return found


def find(name: str) -> Platform | None:
    """Return the platform called ``name``, or None."""
    return _BY_NAME.get(name)
