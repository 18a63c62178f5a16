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
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bot.errors import ConfigError
from bot.logs import add_secrets
from bot.models import KNOWN_PROVIDERS, DmPolicy

log = logging.getLogger(__name__)

CONFIG_ENV = "PAIRBOT_CONFIG"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_TELEGRAM_ID = re.compile(r"-?[0-9]+\Z")
_SECRET_KEYS = frozenset({"token", "bot_token", "app_token", "operator_token", "signing_secret",
                          "access_token", "app_secret", "verify_token", "password"})


def parse_duration(value: Any) -> timedelta:
    """Read ``90s``/``5m``/``1h``/``2d`` (or a number of seconds) as a positive timedelta."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError(f"not a duration: {value!r} (use e.g. 90s, 5m, 1h)")
    if not math.isfinite(seconds):
        raise ValueError(f"not a duration: {value!r} (use e.g. 90s, 5m, 1h)")
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"too long: {value!r}") from None


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


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
            raise ValueError(f"unknown provider {value!r}")
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

    @model_validator(mode="after")
    def _platform_id(self) -> Owner:
        pattern, what = _OWNER_IDS[self.provider]
        if not pattern.match(self.user_id):
            raise ValueError(f"user_id {self.user_id!r} is not {what} (names, usernames and "
                             "phone numbers can change hands)")
        return self


class PairingConfig(_Model):
    """``pairing:`` — DM pairing knobs."""

    pending_ttl: Duration = timedelta(hours=1)
    prune_interval: Duration = timedelta(minutes=5)
    max_pending_per_provider: int = Field(default=3, ge=1, le=10_000)
    resend_after: Duration = timedelta(minutes=10)


class NodesConfig(_Model):
    """``nodes:`` — node pairing knobs."""

    pending_ttl: Duration = timedelta(minutes=5)
    max_pending_per_address: int = Field(default=3, ge=1, le=1000)
    max_pending: int = Field(default=50, ge=1, le=10_000)


class GatewayConfig(_Model):
    """``gateway:`` — where nodes connect."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=18789, ge=0, le=65535)
    operator_token: str | None = None


class StoreConfig(_Model):
    """``store:`` — which backend keeps the state."""

    backend: Literal["json"] = "json"


class HandlerConfig(_Model):
    """``handler:`` — where approved messages go."""

    kind: Literal["echo", "forward", "webhook", "python"] = "echo"
    url: str | None = None
    target: str | None = None
    timeout: Duration = timedelta(seconds=10)


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
                raise ValueError(
                    f"{item!r} is not a numeric Telegram user id (usernames can change hands)"
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
            raise ValueError(f"{item!r} is not {what}")
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
            kwargs.update(webhook_host=webhook.host, webhook_port=webhook.port,
                          webhook_path=webhook.path)
        return kwargs


_SLACK_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_DISCORD_ID = re.compile(r"^\d{15,22}$")
_WA_ID = re.compile(r"^\d{6,20}$")
_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
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

    def secrets(self) -> list[str]:
        """Every secret value in the config (for the log redaction filter)."""
        found = [self.gateway.operator_token or ""]
        for name in type(self.providers).model_fields:
            block = getattr(self.providers, name)
            if block is not None:
                found += [str(v) for k, v in block.model_dump().items()
                          if k in _SECRET_KEYS and v]
        return [s for s in found if s]

    def static_allow(self) -> dict[str, list[str]]:
        """Return each provider's ``allow_from`` from the config."""
        out: dict[str, list[str]] = {}
        for name in type(self.providers).model_fields:
            block = getattr(self.providers, name)
            if block is not None:
                out[name] = list(block.allow_from)
        return out


def _interpolate(value: Any, path: str, source: str) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, f"{path}.{k}" if path else str(k), source)
                for k, v in value.items()}
    if isinstance(value, list):
        # owners.0.user_id: the same dotted form validation errors use.
        return [_interpolate(v, f"{path}.{i}", source) for i, v in enumerate(value)]
    if isinstance(value, str):
        def lookup(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise ConfigError(f"environment variable {name} is not set",
                                  source=source, field=path)
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
                log.warning("%s: %s holds a literal secret; use ${ENV_VAR} instead", source,
                            where)
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
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("top level must be a mapping of keys", source=source)
    _warn_literal_secrets(raw, "", source)
    data = _interpolate(raw, "", source)
    add_secrets(os.environ[name] for name in _env_refs(raw))  # never logged, whatever the key
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        message = " ".join(first["msg"].removeprefix("Value error, ").split())
        if first["type"] == "extra_forbidden":
            message = "unknown key"
        raise ConfigError(message, source=source, field=field or None) from None


def find_config(explicit: str | None) -> Path | None:
    """Return the config path from ``--config`` or ``$PAIRBOT_CONFIG``, if either is set."""
    chosen = explicit or os.environ.get(CONFIG_ENV)
    return Path(chosen).expanduser() if chosen else None
