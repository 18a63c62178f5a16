"""The gateway's TLS: its certificate, the fingerprint nodes pin, and both ends' contexts.

A gateway that nodes reach over the network serves ``wss://`` with either a certificate the
owner supplies (``gateway.tls: {cert_file, key_file}``) or one pairbot makes itself
(``gateway.tls: auto``: a self-signed ECDSA P-256 certificate, made by :func:`self_signed`
and kept in the state dir by the composition root). No authority vouches for a self-signed
certificate, so a node pins it: it is given the certificate's SHA-256 fingerprint out of
band (``pairbot gateway fingerprint``, or an invite's setup code) and refuses any other
(:func:`pinned`). A node given no pin verifies the certificate as a browser would (a proxy
with a public certificate in front of the gateway).

The fingerprint is written ``sha256:`` and 64 lower-case hex digits; :func:`parse_fingerprint`
(:mod:`bot.core.invites`, where setup codes carry it) also takes the colon-separated upper-case
form ``openssl x509 -fingerprint -sha256`` prints.
"""

from __future__ import annotations

import hashlib
import ipaddress
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bot.core.errors import ConfigError
from bot.core.invites import PREFIX, parse_fingerprint

AUTO_VALIDITY = timedelta(days=3650)
"""How long a certificate made by ``gateway.tls: auto`` is valid: pinned, it is trusted for
what it is, not for its dates, and replacing it means re-pinning every node."""


def fingerprint(der: bytes) -> str:
    """The fingerprint of a certificate in DER form: ``sha256:<64 hex digits>``."""
    return PREFIX + hashlib.sha256(der).hexdigest()


def digest(pin: str) -> bytes:
    """The 32 bytes of a fingerprint (what :class:`aiohttp.Fingerprint` compares)."""
    return bytes.fromhex(parse_fingerprint(pin).removeprefix(PREFIX))


def self_signed(*, now: datetime, hosts: tuple[str, ...] = ("localhost",)) -> tuple[bytes, bytes]:
    """A new self-signed certificate and its private key, both PEM: ECDSA P-256, valid from
    an hour before ``now`` for :data:`AUTO_VALIDITY`, naming ``hosts`` (names or addresses)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pairbot gateway")])
    alt: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + AUTO_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayTls:
    """A certificate and key the gateway serves with, read and checked, and its fingerprint."""

    cert_file: Path
    key_file: Path
    fingerprint: str

    @classmethod
    def load(cls, cert_file: Path, key_file: Path, *, field: str = "gateway.tls") -> GatewayTls:
        """Read the certificate (its first, if a chain) and check the key goes with it.

        Raises:
            ConfigError: a file cannot be read, is not PEM, or the two do not match (naming
                ``field`` and the file; never the key's content).
        """
        try:
            cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        except OSError as exc:
            raise ConfigError(f"{cert_file}: cannot read ({exc.strerror})", field=field) from None
        except ValueError:
            raise ConfigError(f"{cert_file}: not a PEM certificate", field=field) from None
        tls = cls(
            cert_file=cert_file,
            key_file=key_file,
            fingerprint=fingerprint(cert.public_bytes(serialization.Encoding.DER)),
        )
        tls.server_context()  # the key is read (and matched) here, once, at start
        return tls

    def server_context(self) -> ssl.SSLContext:
        """A server context serving this certificate (TLS 1.2 at least).

        Raises:
            ConfigError: the key cannot be read or does not go with the certificate.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
        except OSError as exc:
            raise ConfigError(
                f"{self.key_file}: cannot use the key with {self.cert_file} "
                f"({exc.strerror or 'not a PEM key for that certificate'})",
                field="gateway.tls",
            ) from None
        return context


def peer_fingerprint(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str:
    """The fingerprint of the certificate the other end of a TLS connection showed ("" when
    the connection is not TLS)."""
    if ssl_object is None:
        return ""
    der = ssl_object.getpeercert(True)  # positional: the raw _ssl socket takes no keywords
    return fingerprint(der) if der else ""


__all__ = [
    "PREFIX",
    "GatewayTls",
    "digest",
    "fingerprint",
    "parse_fingerprint",
    "peer_fingerprint",
    "self_signed",
]
