"""StartupError: the one line ``pairbot run`` prints when the gateway or a provider fails."""

from __future__ import annotations

import errno

from bot.core.errors import StartupError
from bot.runtime.logs import RedactFilter

SECRET = "xoxb-0123456789-abcdefghijklmnop"


def test_provider_error_is_one_redacted_line_cut_after_redaction():
    exc = ConnectionError(f"GET https://api.example/{SECRET}/auth.test\nfailed: " + "x" * 500)
    message = str(StartupError.cannot_start("slack", exc, redact=RedactFilter([SECRET]).redact))
    assert message.startswith(
        "slack: cannot start: ConnectionError: GET https://api.example/"
        "[redacted]/auth.test failed: xxx"
    )
    assert "\n" not in message
    assert len(message) < 260
    assert message.endswith("...")
    assert SECRET[:12] not in message


def test_secret_at_the_cut_is_not_half_shown():
    exc = RuntimeError("y" * 190 + SECRET)
    message = str(StartupError.cannot_start("slack", exc, redact=RedactFilter([SECRET]).redact))
    assert "xoxb" not in message


def test_listen_error_names_host_port_and_field():
    in_use = OSError(errno.EADDRINUSE, "error while attempting to bind: address in use")
    assert str(StartupError.cannot_listen("127.0.0.1", 18789, in_use)) == (
        "gateway: cannot listen on 127.0.0.1:18789: address already in use (gateway.port)"
    )
    no_host = OSError(errno.EADDRNOTAVAIL, "cannot assign")
    assert str(StartupError.cannot_listen("::1", 80, no_host)) == (
        "gateway: cannot listen on [::1]:80: cannot assign requested address (gateway.host)"
    )
