"""The config file's shape: validated, frozen pydantic models, or one line saying what is wrong.

Durations are written ``90s``, ``5m``, ``1h``, ``2d``, ``1w`` (or plain seconds), within the
bounds of :data:`DURATION_BOUNDS`; :mod:`bot.core.durations` reads them, and how long an
owner's grant lasts too. The ``providers:`` section
and the owners' ids come from the platforms table (:mod:`bot.core.platforms`). Reading the
file and the environment is :mod:`bot.runtime.config`'s job.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from bot.core.codes import MIN_SECRET_BITS, RANDOM_STRING_COMMAND, weakness
from bot.core.durations import INVITE_BOUNDS, bounded, parse_duration
from bot.core.errors import ConfigError
from bot.core.invites import is_gateway_url
from bot.core.messages import StrangerReply, stranger_template_problem
from bot.core.models import AUDIT_EVENTS, UnpairedResponse
from bot.core.platforms import KNOWN_PROVIDERS, PLATFORMS, platform
from bot.core.schema import (
    InvalidValue,
    Model,
    OptionalSecret,
    ProviderBlock,
    Secret,
    secret_fields,
)

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
        # An invite must outlive carrying it to the device, and be dead by tomorrow (also the
        # bounds of `pairbot nodes invite --for` and `/nodes invite 30m`).
        "nodes.invite_ttl": INVITE_BOUNDS,
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


def _within(field: str) -> Callable[[timedelta, ValidationInfo], timedelta]:
    low, high = DURATION_BOUNDS[field]

    def check(value: timedelta, info: ValidationInfo) -> timedelta:
        if isinstance(info.context, dict) and info.context.get(_ANY_DURATIONS):
            return value
        return bounded(value, low, high)

    return check


class Owner(Model):
    """Who may send owner commands; their DM with the bot is the owner chat."""

    provider: str
    user_id: str

    @field_validator("provider")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in KNOWN_PROVIDERS:
            raise InvalidValue("unknown provider {value}", value)
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
        """The platform's normal form of the id (an owner written in any accepted form is
        recognised on the sender's messages), or a refusal naming the field."""
        provider = info.data.get("provider")  # absent when the provider itself was refused
        if provider is None:
            return value
        ids = platform(provider).ids
        return ids.accept(
            value,
            refusal=f"{{value}} is not {ids.what} (names, usernames and phone numbers "
            "can change hands)",
        )


MAX_HELD = 20
"""The most messages ``pairing.hold_messages`` may keep per pending stranger."""


class PairingConfig(Model):
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
    hold_messages: int = Field(default=0, ge=0, le=MAX_HELD)
    """How many of a pending stranger's text messages are kept for the handler."""
    notice_preview: bool = False
    """The owner's notice shows the first line of the first message held."""

    @field_validator("notice_preview")
    @classmethod
    def _something_held(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("hold_messages") == 0:
            raise ValueError(
                "shows the first message held: set pairing.hold_messages to 1 or more"
            )
        return value

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


class NodesConfig(Model):
    """``nodes:`` — node pairing knobs."""

    pending_ttl: Annotated[Duration, AfterValidator(_within("nodes.pending_ttl"))] = timedelta(
        minutes=5
    )
    max_pending_per_address: int = Field(default=3, ge=1, le=1000)
    max_pending: int = Field(default=50, ge=1, le=10_000)
    max_pending_per_node: int = Field(default=3, ge=1, le=100)
    invite_ttl: Annotated[Duration, AfterValidator(_within("nodes.invite_ttl"))] = timedelta(
        minutes=10
    )
    """How long a one-time invite lasts unless its maker says (``--for``)."""
    max_invites: int = Field(default=20, ge=1, le=1000)
    """Invites not yet used nor expired at once."""


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` reaches this machine only (``localhost``, 127.0.0.0/8,
    ``::1``); a wildcard (``0.0.0.0``, ``::``) or any other name reaches the network."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


class TlsFiles(Model):
    """``gateway.tls: {cert_file, key_file}`` — a certificate (PEM, the chain after it) and
    its private key, served as ``wss://``."""

    cert_file: str
    key_file: str


AUTO_TLS = "auto"
"""``gateway.tls: auto``: a self-signed certificate pairbot makes once and keeps in the state
dir (nodes pin its fingerprint)."""


class GatewayConfig(Model):
    """``gateway:`` — where nodes connect."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=18789, ge=0, le=65535)
    tls: Literal["auto"] | TlsFiles | None = None
    allow_plaintext: bool = False
    """Listen without TLS on an address that reaches the network (a TLS proxy in front)."""
    public_url: str | None = None
    """Where nodes reach the gateway (``wss://pairbot.lan:18789``), as invites tell them;
    unset: ``host`` and ``port``, with ``wss://`` when ``tls`` is set."""
    operator_token: OptionalSecret = None
    max_connections: int = Field(default=256, ge=4, le=100_000)
    max_connections_per_address: int = Field(default=32, ge=1, le=100_000)
    handshake_timeout: Annotated[
        Duration, AfterValidator(_within("gateway.handshake_timeout"))
    ] = timedelta(seconds=10)
    idle_timeout: Annotated[Duration, AfterValidator(_within("gateway.idle_timeout"))] = timedelta(
        seconds=60
    )
    failures_per_minute: int = Field(default=5, ge=1, le=10_000)
    """Failed verifications (wrong tokens, signatures, pickups, invites; the operator token's
    too) one address may make in a minute before everything it shows is refused unseen."""
    pair_requests_per_minute: int = Field(default=30, ge=1, le=100_000)
    connects_per_minute: int = Field(default=120, ge=1, le=100_000)

    @field_validator("operator_token")
    @classmethod
    def _strong(cls, value: str | None) -> str | None:
        """Anyone who reaches the port may guess it: refuse what can be guessed."""
        return _strong_secret(value, "or set null to turn remote operators off")

    @field_validator("public_url")
    @classmethod
    def _reachable(cls, value: str | None) -> str | None:
        if value is not None and not is_gateway_url(value):
            raise ValueError("must be a ws:// or wss:// URL with a host")
        return value

    @model_validator(mode="after")
    def _private_or_tls(self) -> GatewayConfig:
        """Tokens, pickups and invites cross the wire: never in the clear on a network."""
        if self.plaintext_on_network and not self.allow_plaintext:
            raise ValueError(
                f"host {self.host} reaches the network, and without TLS what nodes send "
                "(tokens, invites) crosses it in the clear: set gateway.tls (auto, or "
                "cert_file and key_file), or gateway.allow_plaintext: true if a TLS "
                "proxy is in front"
            )
        if self.tls is not None and self.public_url and not self.public_url.startswith("wss"):
            raise ValueError(
                "public_url: the gateway serves TLS (gateway.tls), so nodes reach it at a "
                "wss:// URL"
            )
        return self

    def node_url(self, port: int) -> str:
        """Where nodes reach the gateway listening on ``port`` (an invite's URL):
        ``public_url``, else ``host`` and ``port``, ``wss://`` when it serves TLS.

        Raises:
            ConfigError: the host is a wildcard, no address a node can reach, and
                ``public_url`` is not set.
        """
        if self.public_url:
            return self.public_url
        host = self.host.strip().strip("[]")
        if host in ("", "0.0.0.0", "::"):  # noqa: S104 (recognised, not bound to)
            raise ConfigError(
                f"not set, and gateway.host {self.host or '(empty)'} is no address a node "
                "can reach: set it to where nodes reach the gateway, e.g. "
                f"wss://192.168.1.20:{port}",
                field="gateway.public_url",
            )
        shown = f"[{host}]" if ":" in host else host
        return f"{'wss' if self.tls is not None else 'ws'}://{shown}:{port}"

    @property
    def plaintext_on_network(self) -> bool:
        """Listening without TLS where the network reaches (allowed, and warned about)."""
        return self.enabled and self.tls is None and not is_loopback(self.host)


def _strong_secret(value: str | None, instead: str) -> str | None:
    """``value`` unless it can be guessed (:func:`bot.core.codes.weakness`); ``instead`` says
    what else the owner may do."""
    if value is not None and (reason := weakness(value)):
        raise ValueError(
            f"too weak ({reason}; at least {MIN_SECRET_BITS} bits of "
            f"randomness needed): make one with {RANDOM_STRING_COMMAND}, {instead}"
        )
    return value


class MetricsConfig(Model):
    """``metrics:`` — Prometheus metrics at ``GET /metrics``, off unless ``enabled``.

    Served on the gateway's port unless ``port`` gives the metrics a listener of their own
    (on ``host``).
    """

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=0, le=65535)


class EventsConfig(Model):
    """``events:`` — every audit event (``kinds``: only these) POSTed as JSON to ``url``,
    signed with ``secret`` (HMAC-SHA256)."""

    url: str
    secret: Secret
    kinds: list[str] = Field(default_factory=list)
    """The audit events to send (:data:`bot.core.models.AUDIT_EVENTS`); empty: every one."""

    @field_validator("url")
    @classmethod
    def _web(cls, value: str) -> str:
        try:
            parts = urlsplit(value)
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            # never quoted: a URL may carry a password or a token
            raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @field_validator("secret")
    @classmethod
    def _strong(cls, value: str) -> str:
        """Whoever guesses it can forge events: refuse what can be guessed."""
        _strong_secret(value, "or remove the events block")
        return value

    @field_validator("kinds")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        for kind in value:
            if kind not in AUDIT_EVENTS:
                raise InvalidValue(
                    f"{{value}} is not an audit event (known: {', '.join(AUDIT_EVENTS)})", kind
                )
        return value


_DSN_SCHEMES = ("postgresql://", "postgres://")
_CONNINFO_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")
_URL_PASSWORD = re.compile(r"^([a-z]+://[^:/@?#]*:)([^@/?#]*)(@)")
_QUERY_PASSWORD = re.compile(r"([?&]password=)([^&#]*)")


def _is_url(dsn: str) -> bool:
    return dsn.startswith(_DSN_SCHEMES)


def dsn_password(dsn: str) -> str | None:
    """The password a PostgreSQL DSN carries (URL or ``key=value`` form), or None."""
    patterns = (_URL_PASSWORD, _QUERY_PASSWORD) if _is_url(dsn) else (_CONNINFO_PASSWORD,)
    for pattern in patterns:
        found = pattern.search(dsn)
        if found and found.group(2):
            value = found.group(2)
            return value[1:-1] if value.startswith("'") else value
    return None


def dsn_secrets(dsn: str) -> list[str]:
    """The forms in which a DSN's password may appear in a log line: as written, and decoded
    (``%40`` → ``@``; ``\\'`` → ``'``), as the driver uses it."""
    password = dsn_password(dsn)
    if not password:
        return []
    decoded = unquote(password) if _is_url(dsn) else re.sub(r"\\(.)", r"\1", password)
    return list(dict.fromkeys((password, decoded)))


def redact_dsn(dsn: str) -> str:
    """``dsn`` with its password (if any) as ``***``: what a log, an error or ``doctor`` shows."""
    if _is_url(dsn):
        return _QUERY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***\3", dsn))
    return _CONNINFO_PASSWORD.sub(r"\1***", dsn)


class StoreConfig(Model):
    """``store:`` — which backend keeps the state.

    ``json`` (the default) is the state dir in Clawdbot's file shapes; ``sqlite`` one database
    file (``path``, default ``<state_dir>/pairbot.db``); ``postgres`` a PostgreSQL database
    (``dsn``, a ``postgresql://`` URL or a ``key=value`` string, whose password is never shown).
    """

    backend: Literal["json", "sqlite", "postgres"] = "json"
    path: str | None = None
    dsn: str | None = None

    @field_validator("dsn")
    @classmethod
    def _dsn_form(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise ValueError("must not be empty")
        if not value.startswith(_DSN_SCHEMES) and "=" not in value:
            # never quote it: it may hold a password
            raise ValueError("must be a postgresql:// URL or a key=value connection string")
        return value

    @model_validator(mode="after")
    def _fits_backend(self) -> StoreConfig:
        if self.backend == "postgres" and self.dsn is None:
            raise ValueError("backend postgres needs store.dsn (e.g. ${PAIRBOT_DATABASE_URL})")
        return self  # a path or dsn of another backend stays unused (switching back is easy)

    def described(self) -> str:
        """The backend and where it keeps the state, for logs and ``doctor`` (no password)."""
        if self.backend == "postgres" and self.dsn is not None:
            return f"postgres ({redact_dsn(self.dsn)})"
        if self.backend == "sqlite" and self.path is not None:
            return f"sqlite ({self.path})"
        return self.backend


class HandlerConfig(Model):
    """``handler:`` — where approved messages go."""

    kind: Literal["echo", "forward", "webhook", "python"] = "echo"
    url: str | None = None
    target: str | None = None
    timeout: Annotated[Duration, AfterValidator(_within("handler.timeout"))] = timedelta(
        seconds=10
    )


class MessagesConfig(Model):
    """``messages:`` — texts of the owner's own."""

    stranger: str | None = Field(default=None, min_length=1, max_length=4000)
    """What a stranger is sent where ``unpaired_response`` is ``custom``: a template with
    ``{code}``, ``{ttl}``, ``{sender_id}``, ``{provider}``."""

    @field_validator("stranger")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None and (problem := stranger_template_problem(value)):
            raise ValueError(problem)
        return value


class _Providers(Model):
    """``providers:`` — one block per platform pairbot connects to, each optional."""

    def blocks(self) -> dict[str, ProviderBlock]:
        """The configured blocks by platform name, in the table's order."""
        found = ((name, getattr(self, name)) for name in type(self).model_fields)
        return {name: block for name, block in found if block is not None}

    if TYPE_CHECKING:

        def __getattr__(self, name: str) -> ProviderBlock | None: ...


# One field per platform, made from the table when the module loads; a type checker sees
# the base, where reading ``providers.<name>`` gives a block or None.
if TYPE_CHECKING:
    ProvidersConfig = _Providers
else:
    ProvidersConfig = create_model(
        "ProvidersConfig",
        __base__=_Providers,
        __module__=__name__,
        __doc__=_Providers.__doc__,
        **{p.name: (p.config | None, None) for p in PLATFORMS},
    )

SECRET_KEYS: frozenset[str] = secret_fields(GatewayConfig).union(
    secret_fields(EventsConfig), *(secret_fields(p.config) for p in PLATFORMS)
)
"""The keys whose values are secrets, wherever they stand in the file."""


def _error_at(loc: tuple[str, ...], message: str, value: Any) -> ValidationError:
    """A validation error about the field at ``loc``, for a check that spans sections (the
    error names that field, not the section that checked it)."""
    return ValidationError.from_exception_data(
        "Config",
        [InitErrorDetails(type=PydanticCustomError("value_error", message), loc=loc, input=value)],
    )


class Config(Model):
    """The whole configuration file."""

    state_dir: str = "~/.pairbot"
    store: StoreConfig = StoreConfig()
    owners: list[Owner] = Field(default_factory=list)
    pairing: PairingConfig = PairingConfig()
    nodes: NodesConfig = NodesConfig()
    gateway: GatewayConfig = GatewayConfig()
    handler: HandlerConfig = HandlerConfig()
    messages: MessagesConfig = MessagesConfig()
    providers: ProvidersConfig = ProvidersConfig()
    metrics: MetricsConfig = MetricsConfig()
    events: EventsConfig | None = None

    @field_validator("metrics")
    @classmethod
    def _served(cls, value: MetricsConfig, info: ValidationInfo) -> MetricsConfig:
        gateway = info.data.get("gateway")
        if value.enabled and value.port is None and gateway is not None and not gateway.enabled:
            raise ValueError(
                "metrics.port is needed: the metrics are served on the gateway's port unless "
                "given one of their own, and the gateway is off"
            )
        return value

    @model_validator(mode="after")
    def _stranger_text_used(self) -> Config:
        """``custom`` needs ``messages.stranger``, and a ``messages.stranger`` nobody uses
        is a mistake said at once (the strangers would get the default text)."""
        blocks = self.providers.blocks()
        custom = [n for n, b in blocks.items() if b.unpaired_response is UnpairedResponse.CUSTOM]
        if custom and self.messages.stranger is None:
            raise _error_at(
                ("providers", custom[0], "unpaired_response"),
                "custom needs messages.stranger (the text strangers are sent)",
                "custom",
            )
        if not custom and self.messages.stranger is not None:
            raise _error_at(
                ("messages", "stranger"),
                "no provider uses it: set unpaired_response: custom in a providers block",
                self.messages.stranger,
            )
        return self

    def stranger_replies(self) -> dict[str, StrangerReply]:
        """How each configured provider answers a stranger."""
        return {
            name: StrangerReply(
                mode=block.unpaired_response, template=self.messages.stranger or ""
            )
            for name, block in self.providers.blocks().items()
        }

    @classmethod
    def with_any_durations(cls, data: Any) -> Config:
        """Validate ``data`` as a file would be, except that durations need only be positive.

        For trusted Python callers that need a pace no user should configure: the demo shows
        a 4 s code expire, tests run the pruner every 0.2 s. Loading a file
        (:func:`bot.runtime.config.load_config`) never uses it.
        """
        return cls.model_validate(data, context={_ANY_DURATIONS: True})

    def secrets(self) -> list[str]:
        """Every secret value in the config (for the log redaction filter)."""
        found = [self.gateway.operator_token or ""]
        if self.events is not None:  # the URL too: many hook URLs carry their token
            found += [self.events.secret, self.events.url]
        if self.store.dsn:
            found += dsn_secrets(self.store.dsn)
        for block in self.providers.blocks().values():
            found += [str(v) for k, v in block.model_dump().items() if k in SECRET_KEYS and v]
        return [s for s in found if s]

    def static_allow(self) -> dict[str, list[str]]:
        """Return each provider's ``allow_from`` from the config."""
        return {name: list(block.allow_from) for name, block in self.providers.blocks().items()}
