"""Every error pairbot raises on purpose, under one root.

The tree::

    PairbotError
    ├── ConfigError (ValueError)          a config file, field or argument is wrong
    ├── StoreError                        the state dir cannot be used
    │   ├── StoreCorruptError             a state file does not parse or has the wrong shape
    │   ├── SchemaVersionError            a state file was written by a newer pairbot
    │   ├── StoreLockTimeoutError         another process held the state lock too long
    │   └── StoreUnavailableError         the state's database cannot be reached (PostgreSQL)
    ├── StartupError                      the gateway or a provider could not start
    ├── ProviderError                     a chat platform refused or failed what was asked
    │   ├── ProviderStateError (RuntimeError)  used while not running, or started twice
    │   ├── ButtonError (ValueError)      buttons the platform cannot show
    │   └── RecipientUnreachable          the person must write first (WhatsApp's 24 hours)
    ├── AllowedByConfigError              a sender allowed by the config, not the store
    ├── LookupFailed (LookupError)        the thing asked for is not there (CLI exit 1)
    │   ├── UnknownCodeError              no live pairing request has this code
    │   ├── CodeExpiredError              the request with this code expired
    │   ├── UnknownRequestError           no pending node request has this id
    │   └── UnknownSubjectError           no such sender in the allowlist / no such node
    ├── NodeRefused                       a node's request is refused as asked (gateway)
    │   ├── AlreadyPairedError            the node id is paired; no proof of its token
    │   ├── WrongCredentialError          a token or pickup secret that does not match
    │   │   ├── BadSignatureError         not the node key's signature over this nonce
    │   │   └── InviteRefusedError        an invite that is unknown, spent or expired
    │   └── RateLimitedError              a pending-request cap is full
    │
    │   defined beside the code that raises them:
    ├── GatewayError                      bot.gateway.frames: an error answer to a peer
    ├── GatewayCallError                  bot.gateway.client: a gateway answered ok=false
    ├── GatewayUnavailable                bot.gateway.client: no gateway, or it went away
    │   └── GatewayNotTrusted             its certificate is not the pinned (or a vouched) one
    ├── UsageError                        bot.cli.context: a command line not runnable (exit 2)
    ├── DemoFailed                        bot.cli.demo: a demo step did not behave
    ├── DocumentError (ValueError)        bot.services.transfer: a state document's bad field
    ├── NotEmptyError                     bot.services.transfer: an import into a store that
    │                                     holds state, without --merge
    └── _Bad                              stores.jsonfile: one bad field, always re-raised as
                                          StoreCorruptError naming the file

Messages name the file, field, argument or request id; they never carry a pairing code or a
token, so they are safe to log.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path


class PairbotError(Exception):
    """Root of every error pairbot raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(PairbotError, ValueError):
    """A configuration file, field or command-line argument is wrong."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        where = ": ".join(part for part in (source, field) if part)
        super().__init__(f"{where}: {message}" if where else message, hint=hint)
        self.source = source
        self.field = field


class StoreError(PairbotError):
    """The state dir or one of its files cannot be used as it is."""

    def __init__(self, message: str, *, path: Path | None = None, hint: str | None = None):
        super().__init__(f"{path}: {message}" if path else message, hint=hint)
        self.path = path


class StoreCorruptError(StoreError):
    """A state file does not parse or has the wrong shape; it was left byte-identical."""


class SchemaVersionError(StoreError):
    """A state file declares a version this pairbot does not know."""


class StoreLockTimeoutError(StoreError):
    """The cross-process state lock could not be taken in time."""


class StoreUnavailableError(StoreError):
    """The state's database cannot be reached (down, refusing, the connection lost).

    The call failed as a whole: a transaction it was in was rolled back, or, if the connection
    was lost while committing, its outcome is unknown until the database is back. The store
    reconnects on its own; a later call may succeed.
    """


class StartupError(PairbotError):
    """The gateway or a provider could not start: a port in use, a platform unreachable."""

    @classmethod
    def cannot_listen(
        cls, host: str, port: int, exc: OSError, *, section: str = "gateway"
    ) -> StartupError:
        """The gateway (or ``section``'s listener) could not listen on ``host:port`` (in use,
        not allowed, no such host)."""
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        field = f"{section}.host" if exc.errno == errno.EADDRNOTAVAIL else f"{section}.port"
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return cls(f"{section}: cannot listen on {where}: {reason}", hint=field)

    @classmethod
    def cannot_start(
        cls, name: str, exc: BaseException, *, redact: Callable[[str], str]
    ) -> StartupError:
        """Provider ``name`` failed to start with an SDK or network error (not one of ours).

        The error's text is made one line, passed through ``redact`` (SDK errors may quote a
        URL with the bot token in it) and only then shortened, so no secret is cut in half.
        """
        detail = redact(" ".join(str(exc).split())) or "no detail"
        if len(detail) > _DETAIL_MAX:
            detail = detail[: _DETAIL_MAX - 3] + "..."
        return cls(f"{name}: cannot start: {type(exc).__name__}: {detail}")


_DETAIL_MAX = 200


class ProviderError(PairbotError):
    """A chat platform refused or failed what a provider asked of it.

    A platform's own API error derives from it (``SignalRpcError``, ...); errors an SDK
    raises pass through as they are, or chained (``raise ProviderError(...) from exc``).
    """


class ProviderStateError(ProviderError, RuntimeError):
    """A provider was asked to send while not running, or to start while running."""


class ButtonError(ProviderError, ValueError):
    """Buttons the platform cannot show: too many, a command too long, two alike."""


class RecipientUnreachable(ProviderError):
    """The platform delivers nothing to this person until they write to the bot again.

    WhatsApp's 24-hour window is one such rule: a bot may write freely only to someone who
    wrote to it in the last 24 hours. Nothing was delivered; a send after they write will be.
    Whoever sent (the owner notices) keeps what was missed and tells them then.
    """


class AllowedByConfigError(PairbotError):
    """A sender can't be revoked here: the config's ``allow_from`` lets them in (CLI exit 1)."""


class LookupFailed(PairbotError, LookupError):
    """What was asked for is not there (the CLI exits 1)."""


class UnknownCodeError(LookupFailed):
    """No live pairing request carries this code."""


class CodeExpiredError(LookupFailed):
    """The pairing request with this code has expired and can no longer be approved."""


class UnknownRequestError(LookupFailed):
    """No pending node request has this id."""


class UnknownSubjectError(LookupFailed):
    """The sender is not in the allowlist, or the node is not paired."""


class NodeRefused(PairbotError):
    """A node's request is refused as asked; ``code`` is the gateway's error code."""

    code = "INVALID_REQUEST"


class AlreadyPairedError(NodeRefused):
    """The node id is already paired and the caller did not prove it holds its token."""

    code = "ALREADY_PAIRED"


class WrongCredentialError(NodeRefused):
    """A presented node token or pickup secret does not match."""

    code = "UNAUTHORIZED"


class BadSignatureError(WrongCredentialError):
    """A signature that is not by the node's key over this connection's nonce, node id and
    certificate."""


class InviteRefusedError(WrongCredentialError):
    """An invite secret that opens nothing: unknown, already used, or expired. The message is
    the same for all three (the peer learns nothing); ``reason`` says which, for the audit."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            "this invite is not valid (unknown, already used or expired); ask the owner "
            "for a new one"
        )
        self.reason = reason


class RateLimitedError(NodeRefused):
    """A cap on pending requests (per address, per node id, in all) is full."""

    code = "RATE_LIMITED"
