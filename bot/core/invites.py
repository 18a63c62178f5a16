"""What a node is handed out of band to join: a one-time invite's setup code.

A setup code carries the gateway's URL (``wss://`` when the gateway serves TLS), the SHA-256
fingerprint of the certificate to pin ("" when there is none to pin: plain ``ws://`` on
loopback, or a proxy with a certificate an authority vouches for) and the invite's secret
(256 bits from :func:`bot.core.codes.new_token`; pairbot keeps only its hash). Written as
text it is one word that survives copying, typing into a shell and a QR code::

    pairbot-invite:<base64url of {"v": 1, "url": ..., "fingerprint": ..., "secret": ...}>

The node sends only the secret (``invite`` in ``node.pair.request``); the URL and the
fingerprint tell it where to go and which certificate to accept. The fingerprint's one
written form (``sha256:`` and 64 lower-case hex digits) is defined here, for the gateway's
TLS (:mod:`bot.gateway.tls`) and the codes alike.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bot.core.models import NodeInvite

PREFIX = "sha256:"
"""How a certificate fingerprint begins."""
_HEX = re.compile(r"^[0-9a-f]{64}$")

CODE_PREFIX = "pairbot-invite:"
CODE_VERSION = 1
MIN_SECRET_CHARS = 22
"""URL-safe base64 characters a secret has at least: 22 carry 132 bits."""
_SECRET = re.compile(r"^[A-Za-z0-9_-]{%d,256}$" % MIN_SECRET_CHARS)  # noqa: UP031 (a regex)
_MAX_CODE = 2048
"""The longest text read as a setup code (a real one is about 230 characters)."""


def parse_fingerprint(text: str) -> str:
    """A fingerprint as written by a person, in its one form (``sha256:`` + 64 hex digits).

    Also takes the colon-separated upper-case form ``openssl x509 -fingerprint -sha256``
    prints.

    Raises:
        ValueError: not a SHA-256 fingerprint (the message says what one looks like).
    """
    raw = text.strip().lower()
    raw = raw.removeprefix(PREFIX).replace(":", "")
    if not _HEX.match(raw):
        raise ValueError(
            "not a SHA-256 certificate fingerprint (expected sha256: and 64 hex digits, "
            "as `pairbot gateway fingerprint` prints)"
        )
    return PREFIX + raw


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayAddress:
    """Where nodes reach the gateway, as a setup code tells them: its URL, and the
    fingerprint of the certificate to pin ("" for none)."""

    url: str
    fingerprint: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class SetupCode:
    """A setup code: the gateway's address and an invite's secret (never in a repr)."""

    address: GatewayAddress
    secret: str = field(repr=False)

    @property
    def text(self) -> str:
        """The code as one word (what is printed, sent to the owner and put in a QR code)."""
        body = {
            "v": CODE_VERSION,
            "url": self.address.url,
            "fingerprint": self.address.fingerprint,
            "secret": self.secret,
        }
        raw = json.dumps(body, separators=(",", ":")).encode()
        return CODE_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @property
    def secrets(self) -> tuple[str, ...]:
        """What logs must never show of it: the secret, the code's text, and the code's
        encoded part alone (what is left of it where a ``:`` was escaped)."""
        text = self.text
        return self.secret, text, text.removeprefix(CODE_PREFIX)

    @classmethod
    def parse(cls, text: str) -> SetupCode:
        """Read a setup code as printed (spaces and line breaks anywhere are ignored).

        Raises:
            ValueError: one line saying what is wrong; never the code or its secret.
        """
        word = "".join(str(text).split())
        if len(word) > _MAX_CODE or not word.startswith(CODE_PREFIX):
            raise ValueError(f"not a pairbot setup code (it begins {CODE_PREFIX})")
        payload = word.removeprefix(CODE_PREFIX)
        try:
            raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
            body = json.loads(raw)
        except (binascii.Error, ValueError, RecursionError):
            raise ValueError("not a pairbot setup code (cut short or mistyped?)") from None
        if not isinstance(body, dict) or body.get("v") != CODE_VERSION:
            raise ValueError(
                f"a setup code of another version than {CODE_VERSION}: use the pairbot that "
                "made it"
            )
        url, fingerprint, secret = body.get("url"), body.get("fingerprint"), body.get("secret")
        if not isinstance(url, str) or not is_gateway_url(url):
            raise ValueError("the setup code's gateway URL is not a ws:// or wss:// URL")
        if not isinstance(fingerprint, str):
            raise ValueError("the setup code's fingerprint is not text")
        if fingerprint:
            fingerprint = parse_fingerprint(fingerprint)
            if not url.startswith("wss://"):
                raise ValueError("the setup code pins a certificate for a gateway without TLS")
        if not isinstance(secret, str) or not _SECRET.match(secret):
            raise ValueError("the setup code's secret is not one pairbot makes")
        return cls(address=GatewayAddress(url=url, fingerprint=fingerprint), secret=secret)


def is_gateway_url(url: str) -> bool:
    """Whether ``url`` is a ``ws://`` or ``wss://`` URL with a host (and, if any, a port)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        return False
    return parts.scheme in ("ws", "wss") and bool(parts.hostname)


@dataclass(frozen=True, slots=True, kw_only=True)
class Invitation:
    """A one-time invite just made: what was stored (no secret) and its setup code (shown
    once, to its maker)."""

    invite: NodeInvite
    code: SetupCode

    @property
    def secrets(self) -> tuple[str, ...]:
        """What logs must never show of it (:attr:`SetupCode.secrets`)."""
        return self.code.secrets
