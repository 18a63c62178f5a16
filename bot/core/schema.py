"""What the config models are built from: the strict base model, the error that quotes the
value it refuses, secret fields, and the parts every ``providers.<name>:`` block shares.

The blocks themselves sit beside their platform in :mod:`bot.core.platforms`; the file's
whole shape is :class:`bot.core.config.Config`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.core.models import DmPolicy, UnpairedResponse


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


Case = Literal["lower", "upper"]
"""How a platform folds the letters of its ids: they are case-blind there."""
Phone = Literal["digits", "e164"]
"""How a platform writes a phone number that is an id: bare digits (WhatsApp's ``wa_id``) or
``+`` and digits (E.164, iMessage handles)."""

_FOLD: dict[Case, Callable[[str], str]] = {"lower": str.lower, "upper": str.upper}
_PHONE = re.compile(r"\+?[0-9][0-9 ().-]*\Z")
"""A phone number as people write it: digits, with spaces, dots, dashes or brackets."""
_PHONE_MARKS = (" ", ".", "-", "(", ")")
"""What a written phone number has that its normal form has not (besides WhatsApp's ``+``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class IdRule:
    """What a platform's immutable user id looks like, its one normal form, and how the config's
    errors name it.

    Every id that enters pairbot (``owners:``, ``allow_from``, the ``pairbot`` command's
    arguments, each inbound sender, each stored entry read back) goes through
    :meth:`normalise` (or :meth:`normalise_all`), so one sender has one id wherever it is
    written, whatever case or punctuation it was written in. ``owners:`` and ``allow_from``
    then accept only ids whose normal form matches: names, usernames and phone numbers can
    change hands (where a phone number is not itself the platform's id), so an approval must
    never hang on one, and an id that can never match a sender is refused at start.
    """

    pattern: re.Pattern[str]
    """What an id looks like in its normal form."""
    what: str
    """The id as an owner's error names it: ``a numeric Telegram user id``."""
    find: str
    """How a person finds their own id there, in a sentence or two (``pairbot init`` says it
    when it asks for the owner's id)."""
    allow_from: str = ""
    """The id as an ``allow_from`` error names it, where it says more than :attr:`what`."""
    allow_from_list: str = ""
    """What an ``allow_from`` that is not a list is told, where it says more than
    ``a list of`` + the id."""
    case: Case | None = None
    """The platform's ids are case-blind: letters are folded to this case (Signal's ACIs,
    e-mail handles: lower; Slack's user ids: upper). None: ids are kept as written."""
    phone: Phone | None = None
    """A phone number is an id here: one written with spaces, dots, dashes or brackets
    becomes its plain form (``digits``: ``+1 555-0100`` → ``15550100``; ``e164``: →
    ``+15550100``, and only a number written with its ``+``). Anything else is kept as
    written (a WhatsApp BSUID ``US.1234`` stays as given)."""

    def normalise(self, raw: str) -> str:
        """Return ``raw`` in the platform's normal form: stripped, case folded, a phone
        number written plain. Pure; an id already normal comes back unchanged."""
        value = raw.strip()
        if self.case is not None:
            value = _FOLD[self.case](value)
        return self._phone_form(value) if self.phone is not None else value

    def normalise_all(self, raws: Iterable[str]) -> list[str]:
        """:meth:`normalise` of each, in order, at the speed of C loops where it can be.

        A stored allowlist can hold millions of ids, nearly all already normal: stripping
        and folding are ``str`` methods mapped in C; the phone rule runs entry by entry only
        when one C scan of the whole list finds a character it could change.
        """
        values = list(map(str.strip, raws))
        if self.case is not None:
            values = list(map(_FOLD[self.case], values))
        if self.phone is not None:
            text = "\n".join(values)
            marks = (*_PHONE_MARKS, "+") if self.phone == "digits" else _PHONE_MARKS
            if any(mark in text for mark in marks):
                values = list(map(self._phone_form, values))
        return values

    def _phone_form(self, value: str) -> str:
        if self.phone == "e164" and not value.startswith("+"):
            return value  # a national number is a guess at a country: not turned into one
        if _PHONE.match(value) is None:
            return value
        digits = "".join(c for c in value if c.isdigit())
        return f"+{digits}" if self.phone == "e164" else digits

    def matches(self, value: str) -> bool:
        """Return whether ``value``, in normal form, looks like an id of this platform."""
        return self.pattern.match(value) is not None

    def accept(self, raw: str, *, refusal: str) -> str:
        """Return ``raw``'s normal form if it looks like an id of this platform.

        Raises:
            InvalidValue: it does not; ``refusal`` is the message, with ``{value}`` where
                ``raw`` (as written, stripped) is quoted.
        """
        value = self.normalise(raw)
        if not self.matches(value):
            raise InvalidValue(refusal, raw.strip())
        return value

    def allow_list(self, value: Any) -> list[str]:
        """Validate an ``allow_from`` list: each id as a string, in normal form, matching."""
        what = self.allow_from or self.what
        if value is None:
            return []
        if not isinstance(value, list):
            raise ValueError(f"must be {self.allow_from_list or f'a list of {what}'}")
        return [self.accept(str(v), refusal=f"{{value}} is not {what}") for v in value]


@dataclass(frozen=True, slots=True, kw_only=True)
class Ask:
    """A value of a platform's block that a first run (``pairbot init``) asks for.

    A secret (a field marked :data:`SECRET`) names the environment variable it is read from
    (the one ``config.example.yaml`` writes as ``${VAR}``): init writes that reference when the
    variable is set, and asks without echo when it is not. Any other value is asked in the
    open, its field's default (if any) offered.
    """

    field: str
    """The block's field."""
    what: str
    """What it is and where to get it, as the question says it: ``bot token (@BotFather
    answers /newbot with it)``."""
    env: str | None = None
    """For a secret: the environment variable that holds it."""


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
    """What every ``providers.<name>:`` block has: its DM policy, what a stranger is sent,
    and its static allowlist, checked against the platform's :class:`IdRule`."""

    ids: ClassVar[IdRule]
    """What a user id looks like on this platform."""
    pairing_keys: ClassVar[frozenset[str]] = frozenset(
        {"dm_policy", "allow_from", "unpaired_response"}
    )
    """The keys pairbot reads itself; the provider gets the others."""
    asks: ClassVar[tuple[Ask, ...]]
    """What ``pairbot init`` asks for to write this block, in order: every field the
    platform's default mode needs (its defaults cover the rest)."""

    dm_policy: DmPolicy = DmPolicy.PAIRING
    allow_from: list[str] = Field(default_factory=list)
    unpaired_response: UnpairedResponse = UnpairedResponse.CODE
    """What a stranger is sent in ``pairing``: their code, nothing (``silent``), or the
    config's ``messages.stranger`` (``custom``)."""

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
        kwargs = self.model_dump(exclude={*self.pairing_keys, "webhook"})
        webhook = getattr(self, "webhook", None)
        if webhook is not None:
            kwargs["webhook"] = webhook
        return kwargs
