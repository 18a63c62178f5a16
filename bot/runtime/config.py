"""Configuration: YAML in, validated pydantic models out, or one line saying what is wrong.

``${VAR}`` in any string is read from the environment; durations are written ``90s``, ``5m``,
``1h``, ``2d`` (or plain seconds). Secrets belong in the environment: a literal token in the
file is accepted with a warning.
"""

from __future__ import annotations

import logging
import math
import os
import re
import stat
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, NamedTuple

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bot.core.codes import MIN_SECRET_BITS, RANDOM_STRING_COMMAND, weakness
from bot.core.errors import ConfigError
from bot.core.models import KNOWN_PROVIDERS, DmPolicy
from bot.runtime.logs import add_secrets

log = logging.getLogger(__name__)

CONFIG_ENV = "PAIRBOT_CONFIG"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_TELEGRAM_ID = re.compile(r"-?[0-9]+\Z")
_SECRET_KEYS = frozenset(
    {
        "token",
        "bot_token",
        "app_token",
        "operator_token",
        "signing_secret",
        "access_token",
        "app_secret",
        "verify_token",
        "password",
    }
)


class _Invalid(ValueError):
    """A validation message that quotes the value it refuses, where ``{value}`` stands.

    Rendered with the value's repr; :func:`load_config` renders it again with "the value
    from ${VAR}" when the value came from the environment, so such a value is never echoed.
    """

    def __init__(self, template: str, value: Any) -> None:
        super().__init__(template.replace("{value}", repr(value)))
        self.template = template
        self.value = value


def parse_duration(value: Any) -> timedelta:
    """Read ``90s``/``5m``/``1h``/``2d`` (or a number of seconds) as a positive timedelta."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise _Invalid("not a duration: {value} (use e.g. 90s, 5m, 1h)", value)
    if not math.isfinite(seconds):
        raise _Invalid("not a duration: {value} (use e.g. 90s, 5m, 1h)", value)
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise _Invalid("too long: {value}", value) from None


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]

DURATION_BOUNDS: Mapping[str, tuple[timedelta, timedelta]] = MappingProxyType(
    {
        # A code must outlive the owner's reply, and not linger for a month.
        "pairing.pending_ttl": (timedelta(minutes=1), timedelta(days=30)),
        # Under a second the pruner only burns CPU (1 ms took 40 %); over a day, nothing is pruned.
        "pairing.prune_interval": (timedelta(seconds=1), timedelta(days=1)),
        # Sooner than 10 s is a reply to every message; the code also must not outlive pending_ttl.
        "pairing.resend_after": (timedelta(seconds=10), timedelta(days=1)),
        # A node waits on an open connection while the owner decides.
        "nodes.pending_ttl": (timedelta(seconds=10), timedelta(days=1)),
        # Each approved message waits for the handler this long at most.
        "handler.timeout": (timedelta(milliseconds=100), timedelta(minutes=5)),
        # A connection must finish its HTTP request this soon; a slow link needs a second or two.
        "gateway.handshake_timeout": (timedelta(seconds=1), timedelta(minutes=5)),
        # A silent connection with nothing to wait for is closed after this.
        "gateway.idle_timeout": (timedelta(seconds=5), timedelta(days=1)),
    }
)
"""The range a config file may give each duration, in one place: the example file and the
error quote it. Trusted Python callers can step outside it: :meth:`Config.with_any_durations`."""

_ANY_DURATIONS = "any_durations"


def span(value: timedelta) -> str:
    """Write a duration the way the config does, in its largest whole unit: ``90s``, ``1d``."""
    ms = round(value.total_seconds() * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _within(field: str) -> Callable[[timedelta, ValidationInfo], timedelta]:
    low, high = DURATION_BOUNDS[field]

    def check(value: timedelta, info: ValidationInfo) -> timedelta:
        if isinstance(info.context, dict) and info.context.get(_ANY_DURATIONS):
            return value
        if not low <= value <= high:
            raise ValueError(f"must be from {span(low)} to {span(high)}")
        return value

    return check


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Owner(_Model):
    """Who may send owner commands; their DM with the bot is the owner chat."""

    provider: str
    user_id: str

    @field_validator("provider")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in KNOWN_PROVIDERS:
            raise _Invalid("unknown provider {value}", value)
        return value

    @field_validator("user_id", mode="before")
    @classmethod
    def _immutable(cls, value: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValueError("must be the platform's immutable user id (a string or number)")
        text = str(value).strip()
        if not text or text.startswith("@"):
            raise ValueError("must be the platform's immutable user id, not a @username")
        return text

    @field_validator("user_id")
    @classmethod
    def _platform_id(cls, value: str, info: ValidationInfo) -> str:
        provider = info.data.get("provider")  # absent when the provider itself was refused
        if provider is not None:
            pattern, what = _OWNER_IDS[provider]
            if not pattern.match(value):
                raise _Invalid(
                    f"{{value}} is not {what} (names, usernames and phone numbers "
                    "can change hands)",
                    value,
                )
        return value


class PairingConfig(_Model):
    """``pairing:`` — DM pairing knobs."""

    pending_ttl: Annotated[Duration, AfterValidator(_within("pairing.pending_ttl"))] = timedelta(
        hours=1
    )
    prune_interval: Annotated[Duration, AfterValidator(_within("pairing.prune_interval"))] = (
        timedelta(minutes=5)
    )
    max_pending_per_provider: int = Field(default=3, ge=1, le=10_000)
    resend_after: Annotated[Duration, AfterValidator(_within("pairing.resend_after"))] = timedelta(
        minutes=10
    )

    @field_validator("resend_after")
    @classmethod
    def _before_expiry(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        """Only when written: the default (10m) with a shorter TTL just means "never resent"."""
        ttl = info.data.get("pending_ttl")
        if ttl is not None and value > ttl:
            raise ValueError(
                "must not be longer than pairing.pending_ttl (the code would "
                "expire before it is sent again)"
            )
        return value


class NodesConfig(_Model):
    """``nodes:`` — node pairing knobs."""

    pending_ttl: Annotated[Duration, AfterValidator(_within("nodes.pending_ttl"))] = timedelta(
        minutes=5
    )
    max_pending_per_address: int = Field(default=3, ge=1, le=1000)
    max_pending: int = Field(default=50, ge=1, le=10_000)
    max_pending_per_node: int = Field(default=3, ge=1, le=100)


class GatewayConfig(_Model):
    """``gateway:`` — where nodes connect."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=18789, ge=0, le=65535)
    operator_token: str | None = None
    max_connections: int = Field(default=256, ge=4, le=100_000)
    max_connections_per_address: int = Field(default=32, ge=1, le=100_000)
    handshake_timeout: Annotated[
        Duration, AfterValidator(_within("gateway.handshake_timeout"))
    ] = timedelta(seconds=10)
    idle_timeout: Annotated[Duration, AfterValidator(_within("gateway.idle_timeout"))] = timedelta(
        seconds=60
    )

    @field_validator("operator_token")
    @classmethod
    def _strong(cls, value: str | None) -> str | None:
        """Anyone who reaches the port may guess it: refuse what can be guessed."""
        if value is not None and (reason := weakness(value)):
            raise ValueError(
                f"too weak ({reason}; at least {MIN_SECRET_BITS} bits of "
                f"randomness needed): make one with {RANDOM_STRING_COMMAND}, "
                "or set null to turn remote operators off"
            )
        return value


class StoreConfig(_Model):
    """``store:`` — which backend keeps the state."""

    backend: Literal["json"] = "json"


class HandlerConfig(_Model):
    """``handler:`` — where approved messages go."""

    kind: Literal["echo", "forward", "webhook", "python"] = "echo"
    url: str | None = None
    target: str | None = None
    timeout: Annotated[Duration, AfterValidator(_within("handler.timeout"))] = timedelta(
        seconds=10
    )


class TelegramConfig(_Model):
    """``providers.telegram:``."""

    token: str
    dm_policy: DmPolicy = DmPolicy.PAIRING
    allow_from: list[str] = Field(default_factory=list)
    api_base_url: str | None = None

    def provider_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`providers.telegram.TelegramProvider`."""
        return self.model_dump(exclude={"dm_policy", "allow_from"})

    max_send_rate: float = Field(default=30.0, gt=0)

    @field_validator("allow_from", mode="before")
    @classmethod
    def _ids(cls, value: Any) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise ValueError("must be a list of numeric Telegram user ids, e.g. [123456789]")
        items = [str(v).strip() for v in value]
        for item in items:
            if not _TELEGRAM_ID.match(item):
                raise _Invalid(
                    "{value} is not a numeric Telegram user id (usernames can change hands)", item
                )
        return items


class WebhookConfig(_Model):
    """Where pairbot listens for a platform's webhook POSTs."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    path: str = "/webhook"

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with /")
        return value


def _id_list(value: Any, pattern: re.Pattern[str], what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"must be a list of {what}")
    items = [str(v).strip() for v in value]
    for item in items:
        if not pattern.match(item):
            raise _Invalid(f"{{value}} is not {what}", item)
    return items


class _ProviderBlock(_Model):
    """What every provider block has: its DM policy and its static allowlist."""

    dm_policy: DmPolicy = DmPolicy.PAIRING
    allow_from: list[str] = Field(default_factory=list)

    @field_validator("webhook", mode="before", check_fields=False)
    @classmethod
    def _webhook_over_defaults(cls, value: Any) -> Any:
        """A partial ``webhook:`` block keeps this platform's defaults for what it omits."""
        if isinstance(value, dict):
            default = cls.model_fields["webhook"].default
            return {**default.model_dump(), **value}
        return value

    def provider_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the provider class: every other field, webhooks flattened
        to ``webhook_host``, ``webhook_port``, ``webhook_path``."""
        kwargs = self.model_dump(exclude={"dm_policy", "allow_from", "webhook"})
        webhook = getattr(self, "webhook", None)
        if webhook is not None:
            kwargs.update(
                webhook_host=webhook.host, webhook_port=webhook.port, webhook_path=webhook.path
            )
        return kwargs


_SLACK_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_DISCORD_ID = re.compile(r"^\d{15,22}$")
_WA_ID = re.compile(r"^\d{6,20}$")
_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_HANDLE = re.compile(r"^(\+\d{6,15}|[^@\s]+@[^@\s]+\.[^@\s]+)$")


_OWNER_IDS: dict[str, tuple[re.Pattern[str], str]] = {
    "telegram": (_TELEGRAM_ID, "a numeric Telegram user id"),
    "slack": (_SLACK_ID, "a Slack user id (U…)"),
    "discord": (_DISCORD_ID, "a numeric Discord user id (a snowflake)"),
    "whatsapp": (_WA_ID, "a WhatsApp id (wa_id: digits, no +)"),
    "signal": (_UUID, "a Signal account UUID (ACI)"),
    "imessage": (_HANDLE, "an iMessage handle (+E.164 number or email)"),
}


class SlackConfig(_ProviderBlock):
    """``providers.slack:`` — a Slack app over Socket Mode (default) or the HTTP Events API."""

    bot_token: str
    app_token: str | None = None
    signing_secret: str | None = None
    mode: Literal["socket", "http"] = "socket"
    api_base_url: str | None = None
    webhook: WebhookConfig = WebhookConfig(port=3000, path="/slack/events")

    @field_validator("allow_from", mode="before")
    @classmethod
    def _ids(cls, value: Any) -> list[str]:
        return _id_list(value, _SLACK_ID, "a Slack user id (U…), e.g. U012AB3CD")

    @model_validator(mode="after")
    def _mode_needs(self) -> SlackConfig:
        """Socket Mode needs the app token; HTTP mode needs the signing secret."""
        if self.mode == "socket" and not self.app_token:
            raise ValueError("app_token is required when mode is socket")
        if self.mode == "http" and not self.signing_secret:
            raise ValueError("signing_secret is required when mode is http")
        return self


class DiscordConfig(_ProviderBlock):
    """``providers.discord:`` — a Discord bot (discord.py)."""

    token: str
    api_base_url: str | None = None
    gateway_url: str | None = None

    @field_validator("allow_from", mode="before")
    @classmethod
    def _ids(cls, value: Any) -> list[str]:
        return _id_list(value, _DISCORD_ID, "a numeric Discord user id (a snowflake)")


class WhatsAppConfig(_ProviderBlock):
    """``providers.whatsapp:`` — the WhatsApp Business Cloud API."""

    access_token: str
    app_secret: str
    verify_token: str
    phone_number_id: str
    api_base_url: str | None = None
    api_version: str = "v21.0"
    webhook: WebhookConfig = WebhookConfig(port=8081, path="/whatsapp/webhook")

    @field_validator("allow_from", mode="before")
    @classmethod
    def _ids(cls, value: Any) -> list[str]:
        return _id_list(value, _WA_ID, "a WhatsApp id (wa_id: digits, no +)")


class SignalConfig(_ProviderBlock):
    """``providers.signal:`` — a signal-cli JSON-RPC daemon (``signal-cli daemon --http``)."""

    http_url: str = "http://127.0.0.1:8080"
    account: str

    @field_validator("allow_from", mode="before")
    @classmethod
    def _ids(cls, value: Any) -> list[str]:
        return _id_list(value, _UUID, "a Signal account UUID (ACI), not a phone number")


class IMessageConfig(_ProviderBlock):
    """``providers.imessage:`` — a BlueBubbles server."""

    server_url: str
    password: str
    send_method: Literal["auto", "apple-script", "private-api"] = "auto"
    webhook: WebhookConfig = WebhookConfig(port=8082, path="/bluebubbles/webhook")

    @field_validator("allow_from", mode="before")
    @classmethod
    def _ids(cls, value: Any) -> list[str]:
        return _id_list(value, _HANDLE, "an iMessage handle (+E.164 number or email)")


class ProvidersConfig(_Model):
    """``providers:`` — one block per platform pairbot connects to."""

    telegram: TelegramConfig | None = None
    slack: SlackConfig | None = None
    discord: DiscordConfig | None = None
    whatsapp: WhatsAppConfig | None = None
    signal: SignalConfig | None = None
    imessage: IMessageConfig | None = None


class Config(_Model):
    """The whole configuration file."""

    state_dir: str = "~/.pairbot"
    store: StoreConfig = StoreConfig()
    owners: list[Owner] = Field(default_factory=list)
    pairing: PairingConfig = PairingConfig()
    nodes: NodesConfig = NodesConfig()
    gateway: GatewayConfig = GatewayConfig()
    handler: HandlerConfig = HandlerConfig()
    providers: ProvidersConfig = ProvidersConfig()

    @classmethod
    def with_any_durations(cls, data: Any) -> Config:
        """Validate ``data`` as a file would be, except that durations need only be positive.

        For trusted Python callers that need a pace no user should configure: the demo shows
        a 4 s code expire, tests run the pruner every 0.2 s. :func:`load_config` never uses it.
        """
        return cls.model_validate(data, context={_ANY_DURATIONS: True})

    def secrets(self) -> list[str]:
        """Every secret value in the config (for the log redaction filter)."""
        found = [self.gateway.operator_token or ""]
        for name in type(self.providers).model_fields:
            block = getattr(self.providers, name)
            if block is not None:
                found += [str(v) for k, v in block.model_dump().items() if k in _SECRET_KEYS and v]
        return [s for s in found if s]

    def static_allow(self) -> dict[str, list[str]]:
        """Return each provider's ``allow_from`` from the config."""
        out: dict[str, list[str]] = {}
        for name in type(self.providers).model_fields:
            block = getattr(self.providers, name)
            if block is not None:
                out[name] = list(block.allow_from)
        return out


def _interpolate(
    value: Any, path: str, source: str, used: dict[str, dict[str, str]] | None = None
) -> Any:
    """Replace each ``${VAR}``; note in ``used`` which variables (and values) each path took."""
    if isinstance(value, dict):
        return {
            k: _interpolate(v, f"{path}.{k}" if path else str(k), source, used)
            for k, v in value.items()
        }
    if isinstance(value, list):
        # owners.0.user_id: the same dotted form validation errors use.
        return [_interpolate(v, f"{path}.{i}", source, used) for i, v in enumerate(value)]
    if isinstance(value, str):

        def lookup(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise ConfigError(
                    f"environment variable {name} is not set", source=source, field=path
                )
            if used is not None:
                used.setdefault(path, {})[name] = os.environ[name]
            return os.environ[name]

        return _ENV_REF.sub(lookup, value)
    return value


def _env_refs(value: Any) -> set[str]:
    """The names of the environment variables ``${NAME}`` in the raw config."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return set().union(*(_env_refs(v) for v in value))
    return set(_ENV_REF.findall(value)) if isinstance(value, str) else set()


def _warn_literal_secrets(value: Any, path: str, source: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if key in _SECRET_KEYS and isinstance(item, str) and item and "${" not in item:
                log.warning("%s: %s holds a literal secret; use ${ENV_VAR} instead", source, where)
            _warn_literal_secrets(item, where, source)


def load_config(path: Path) -> Config:
    """Load and validate a config file; any problem raises one-line :class:`ConfigError`."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", source=source) from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", source=source) from None
    except OSError as exc:
        raise ConfigError(f"cannot be read: {exc.strerror}", source=source) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"not valid YAML: {problem}{where}", source=source) from None
    except RecursionError:  # the parser, like the walks below, recurses once per level
        raise ConfigError("nested too deeply to be a config", source=source) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("top level must be a mapping of keys", source=source)
    used: dict[str, dict[str, str]] = {}
    try:
        _warn_literal_secrets(raw, "", source)
        data = _interpolate(raw, "", source, used)
        add_secrets(os.environ[name] for name in _env_refs(raw))  # never logged, whatever key
        return Config.model_validate(data)
    except RecursionError:
        raise ConfigError("nested too deeply to be a config", source=source) from None
    except ValidationError as exc:
        field, message = _explain(exc.errors()[0], used)
        raise ConfigError(message, source=source, field=field or None) from None


_MASK_FROM = 6
"""Environment values this long are masked wherever they appear in an error; shorter ones
("1", "json") would also hit words and numbers the message says on its own."""


def _explain(error: Any, used: Mapping[str, Mapping[str, str]]) -> tuple[str, str]:
    """The field and one-line message of a validation error, with no environment value in it.

    A refused value that came from ``${VAR}`` is named by its variable: a templated message
    says "the value from ${VAR}" where it would quote the value, any other gets the variable
    appended. Last, any longer environment value still in the text is masked: a secret is
    never echoed, however a message was built.
    """
    field = ".".join(str(part) for part in error["loc"])
    message = " ".join(error["msg"].removeprefix("Value error, ").split())
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    cause = (error.get("ctx") or {}).get("error")
    refused = cause.value if isinstance(cause, _Invalid) else error.get("input")
    names: list[str] = []
    if isinstance(refused, str):
        for path, variables in used.items():
            if field and path != field and not path.startswith(f"{field}."):
                continue
            names += [
                name
                for name, value in variables.items()
                if value and (value in refused or refused in value)
            ]
    if names:
        where = "the value from " + ", ".join(f"${{{name}}}" for name in dict.fromkeys(names))
        if isinstance(cause, _Invalid) and "{value}" in cause.template:
            message = " ".join(cause.template.replace("{value}", where).split())
        else:
            message = f"{message} ({where})"
    for variables in used.values():
        for name, value in variables.items():
            if len(value) >= _MASK_FROM:
                message = message.replace(value, f"${{{name}}}")
    return field, message


NO_OWNERS = "no owners configured: nobody can approve from chat; use the CLI"
"""Said by ``pairbot run`` at start (a warning) and by ``pairbot doctor``."""


class FileModeCheck(NamedTuple):
    """What the config file's mode means: ``ok``, ``warn`` (others can read it) or
    ``refuse`` (others can write it); ``message`` says why in one line."""

    verdict: Literal["ok", "warn", "refuse"]
    message: str


def check_file_mode(path: Path) -> FileModeCheck:
    """Judge who besides its owner may read or write the config file.

    Writable by group or others: refused, since the owners list is in it. Readable: a
    warning, since tokens may be in it (or in the environment it names).
    """
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o022:
        return FileModeCheck(
            "refuse",
            f"group or others can write it (mode {mode:04o}), and "
            "whoever can write it can make themselves owner (chmod 600 the "
            "file)",
        )
    if mode & 0o044:
        return FileModeCheck(
            "warn",
            f"group or others can read it (mode {mode:04o}), and it "
            "may hold secrets (chmod 600 the file)",
        )
    return FileModeCheck("ok", f"mode {mode:04o}, only its owner can read or write it")


def find_config(explicit: str | None) -> Path | None:
    """Return the config path from ``--config`` or ``$PAIRBOT_CONFIG``, if either is set."""
    chosen = explicit or os.environ.get(CONFIG_ENV)
    return Path(chosen).expanduser() if chosen else None
