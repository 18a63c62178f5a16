"""The gateway's certificate as the config names it, made in the state dir for ``tls: auto``.

``gateway.tls: auto`` makes a self-signed certificate the first time it is needed (``pairbot
run``, or ``pairbot gateway fingerprint`` before the first run) and reuses it afterwards:
``<state dir>/tls/gateway.pem`` (the certificate and its key, 0600 in a 0700 dir), placed
without replacing anything, so two processes starting at once end with one certificate.
"""

from __future__ import annotations

import socket
from pathlib import Path

from bot.core.clock import Clock, SystemClock
from bot.core.config import Config
from bot.gateway.tls import GatewayTls, self_signed
from stores._files import ensure_private_dir, os_error, place, staged

TLS_DIR = "tls"
PEM_NAME = "gateway.pem"
"""The automatic certificate and its key, in one file: written in one step, never apart."""


def gateway_tls(
    config: Config, state_dir: Path, *, clock: Clock | None = None
) -> GatewayTls | None:
    """The certificate the gateway serves with, or None when the config asks for no TLS.

    Raises:
        ConfigError: the configured files cannot be used (named, one line).
        StoreError: the state dir cannot hold the automatic certificate.
    """
    chosen = config.gateway.tls
    if chosen is None:
        return None
    if not isinstance(chosen, str):
        return GatewayTls.load(
            Path(chosen.cert_file).expanduser(), Path(chosen.key_file).expanduser()
        )
    return auto_tls(state_dir, host=config.gateway.host, clock=clock or SystemClock())


def auto_tls(state_dir: Path, *, host: str, clock: Clock) -> GatewayTls:
    """The state dir's own certificate, made (0600, with its key) if there is none yet."""
    directory = state_dir / TLS_DIR
    pem = directory / PEM_NAME
    if not pem.exists():
        ensure_private_dir(directory)
        hosts = tuple(dict.fromkeys(("localhost", "127.0.0.1", socket.gethostname(), host)))
        cert_pem, key_pem = self_signed(now=clock.now(), hosts=hosts)
        try:
            with staged(pem, cert_pem + key_pem) as tmp:
                place(tmp, pem, replace=False)
        except FileExistsError:
            pass  # another process made one a moment ago: use it
        except OSError as exc:
            raise os_error(exc, pem, "cannot write the gateway certificate") from exc
    return GatewayTls.load(pem, pem)
