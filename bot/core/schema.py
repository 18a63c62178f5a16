"""What the config models are built from: the strict base model, the error that quotes the
value it refuses, secret fields, and the parts every ``providers.<name>:`` block shares.

The blocks themselves sit beside their platform in :mod:`bot.core.platforms`; the file's
whole shape is :class:`bot.core.config.Config`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.core.models import DmPolicy


class Model(BaseModel):
    """A config section: unknown keys are refused, values never change once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class InvalidValue(ValueError):
    """A validation message that quotes the value it refuses, where ``{value}`` stands.

    Rendered with the value's repr; :func:`bot.runtime.config.load_config` renders it again
    with "the value from ${VAR}" when the value came from the environment, so such a value is
    never echoed.
    """

    def __init__(self, template: str, value: Any) -> None:
        super().__init__(template.replace("{value}", repr(value)))
        self.template = template
        self.value = value


class _SecretMark:
    """Metadata that marks a field as a secret (see :func:`secret_fields`)."""


SECRET = _SecretMark()
"""Put in a field's ``Annotated[...]``: its value is a secret. The redaction of the logs gets
it, and a literal value in the file (not ``${VAR}``) is warned about."""

Secret = Annotated[str, SECRET]
OptionalSecret = Annotated[str | None, SECRET]


def secret_fields(model: type[BaseModel]) -> frozenset[str]:
    """The names of ``model``'s fields marked :data:`SECRET`."""
    return frozenset(name for name, info in model.model_fields.items() if SECRET in info.metadata)


@dataclass(frozen=True, slots=True, kw_only=True)
class IdRule:
    """What a platform's immutable user id looks like, and how the config's errors name it.

    ``owners:`` and ``allow_from`` accept only ids that match: names, usernames and phone
    numbers can change hands, so an approval must never hang on one.
    """

    pattern: re.Pattern[str]
    what: str
    """The id as an owner's error names it: ``a numeric Telegram user id``."""
    allow_from: str = ""
    """The id as an ``allow_from`` error names it, where it says more than :attr:`what`."""
    allow_from_list: str = ""
    """What an ``allow_from`` that is not a list is told, where it says more than
    ``a list of`` + the id."""
    numeric: bool = False
    """The ``pairbot`` command refuses a sender id that is not a number (the usual mistake
    is a @username)."""

    def matches(self, value: str) -> bool:
        """Return whether ``value`` looks like an id of this platform."""
        return self.pattern.match(value) is not None

    def allow_list(self, value: Any) -> list[str]:
        """Validate an ``allow_from`` list: each id as a string, stripped, matching."""
        what = self.allow_from or self.what
        if value is None:
            return []
        if not isinstance(value, list):
            raise ValueError(f"must be {self.allow_from_list or f'a list of {what}'}")
        items = [str(v).strip() for v in value]
        for item in items:
            if not self.matches(item):
                raise InvalidValue(f"{{value}} is not {what}", item)
        return items


class WebhookConfig(Model):
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


class ProviderBlock(Model):
    """What every ``providers.<name>:`` block has: its DM policy and its static allowlist,
    checked against the platform's :class:`IdRule`."""

    ids: ClassVar[IdRule]
    """What a user id looks like on this platform."""

    dm_policy: DmPolicy = DmPolicy.PAIRING
    allow_from: list[str] = Field(default_factory=list)

    @field_validator("allow_from", mode="before")
    @classmethod
    def _ids(cls, value: Any) -> list[str]:
        return cls.ids.allow_list(value)

    @field_validator("webhook", mode="before", check_fields=False)
    @classmethod
    def _webhook_over_defaults(cls, value: Any) -> Any:
        """A partial ``webhook:`` block keeps this platform's defaults for what it omits."""
        if isinstance(value, dict):
            default = cls.model_fields["webhook"].default
            return {**default.model_dump(), **value}
        return value

    def provider_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the provider class: every other field, a ``webhook:`` block
        as its :class:`WebhookConfig`."""
        kwargs = self.model_dump(exclude={"dm_policy", "allow_from", "webhook"})
        webhook = getattr(self, "webhook", None)
        if webhook is not None:
            kwargs["webhook"] = webhook
        return kwargs
