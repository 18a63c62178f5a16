"""``pairbot status``: every instance of pairbot that reported in the last minute.

On PostgreSQL every instance beats into the database (:meth:`~bot.core.protocols.Cluster.beat`)
and holds its connectors by lease, so the command reads the cluster's
:meth:`~bot.core.protocols.Cluster.instances` and :meth:`~bot.core.protocols.Cluster.holders`,
from any machine that has the config. On a single-machine state (JSON, SQLite) the only
instance is the local ``pairbot run``, whose cluster lives in its own memory: the command asks
its gateway's ``GET /readyz`` (which names who answers), so the gateway must be on.

Exit status: 0 if at least one instance is running, 1 if none reported in the last minute.
"""

from __future__ import annotations

import ipaddress
import json
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx

from bot.cli.context import EXIT_LOOKUP, EXIT_OK, Context, UsageError
from bot.cli.output import print_json, print_rows
from bot.cli.tls import gateway_tls
from bot.core.config import GatewayConfig
from bot.core.models import InstanceBeat
from bot.core.text import ago, clean
from bot.gateway.tls import peer_fingerprint

WITHIN = timedelta(minutes=1)
"""An instance whose last beat is older than this is not shown (it stopped, or died)."""
NONE_RUNNING = "no instance has reported in the last minute"
ASK_TIMEOUT = 3.0
"""Seconds to wait for the local gateway's answer."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceStatus:
    """One instance as the command shows it."""

    instance_id: str
    host: str = ""
    pid: int | None = None
    version: str = ""
    started: datetime | None = None
    last_beat: datetime | None = None
    phase: str = ""
    ready: bool | None = None
    holds: Sequence[str] = field(default_factory=tuple)

    def as_json(self, now: datetime) -> dict[str, Any]:
        """The ``--json`` view."""
        return {
            "instanceId": self.instance_id,
            "host": self.host,
            "pid": self.pid,
            "version": self.version,
            "startedAt": self.started.isoformat() if self.started else None,
            "lastBeatAt": self.last_beat.isoformat() if self.last_beat else None,
            "lastBeatAgeSeconds": (
                round((now - self.last_beat).total_seconds(), 1) if self.last_beat else None
            ),
            "phase": self.phase,
            "ready": self.ready,
            "holds": list(self.holds),
        }

    def row(self, now: datetime) -> list[str]:
        """The table's cells."""
        age = "" if self.last_beat is None else f"{ago(now - self.last_beat)} ago"
        if self.ready is None:
            readiness = self.phase or "?"
        elif self.ready:
            readiness = "ready"
        else:  # say why, when the phase does ("starting", "stopping")
            words = self.phase if self.phase not in ("", "running", "not ready") else ""
            readiness = f"not ready ({words})" if words else "not ready"
        return [
            clean(self.instance_id, limit=40),
            clean(self.host, limit=40),
            "" if self.pid is None else str(self.pid),
            clean(self.version, limit=20),
            "" if self.started is None else self.started.isoformat(sep=" ")[:19],
            age,
            readiness,
            clean(", ".join(self.holds), limit=80) or "-",
        ]


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _pid(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _when(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def from_beat(beat: InstanceBeat, holders: Mapping[str, str]) -> InstanceStatus:
    """An instance as its last beat and the leases held now say."""
    facts = beat.facts
    ready = facts.get("ready")
    return InstanceStatus(
        instance_id=beat.instance_id,
        host=_text(facts.get("host")),
        pid=_pid(facts.get("pid")),
        version=_text(facts.get("version")),
        started=beat.started_at,
        last_beat=beat.last_beat,
        phase=_text(facts.get("phase")),
        ready=ready if isinstance(ready, bool) else None,
        holds=sorted(name for name, who in holders.items() if who == beat.instance_id),
    )


def from_readyz(body: Mapping[str, Any], now: datetime) -> InstanceStatus:
    """The local instance as its gateway's ``/readyz`` says (it answered: it is alive now).
    It alone runs its connectors: those running are the ones it holds."""
    instance = body.get("instance")
    facts: Mapping[str, Any] = instance if isinstance(instance, Mapping) else {}
    providers = body.get("providers")
    status = _text(body.get("status"))
    return InstanceStatus(
        instance_id=_text(facts.get("id")) or "?",
        host=_text(facts.get("host")),
        pid=_pid(facts.get("pid")),
        version=_text(facts.get("version")),
        started=_when(facts.get("started")),
        last_beat=now,
        phase=status,
        ready=status == "ready",
        holds=sorted(
            name
            for name, state in (providers.items() if isinstance(providers, Mapping) else ())
            if state == "running"
        ),
    )


def _cluster_statuses(ctx: Context, now: datetime) -> list[InstanceStatus]:
    from bot.cli.compose import configured_cluster  # the composition root names the cluster

    cluster = configured_cluster(ctx.store)
    try:
        beats = cluster.instances(now=now, within=WITHIN)
        holders = cluster.holders(now=now)
    finally:
        cluster.close()
    return [from_beat(beat, holders) for beat in beats]


def readyz_url(gateway: GatewayConfig) -> str:
    """Where the local gateway answers ``/readyz`` (an address it listens on everywhere is
    asked on loopback; over https when it serves TLS)."""
    scheme = "https" if gateway.tls is not None else "http"
    host = gateway.host.strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"{scheme}://{host}:{gateway.port}/readyz"
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    shown = f"[{address}]" if address.version == 6 else str(address)
    return f"{scheme}://{shown}:{gateway.port}/readyz"


def _pinned_get(url: str, pin: str) -> httpx.Response:
    """GET ``url``, over TLS only from the certificate with fingerprint ``pin`` (the gateway's
    own, read from the config and the state dir: no authority vouches for it)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # checked below, by fingerprint, before it is read
    with httpx.Client(timeout=ASK_TIMEOUT, trust_env=False, verify=context) as client:
        answer = client.get(url)
        stream = answer.extensions.get("network_stream")
        shown = peer_fingerprint(stream.get_extra_info("ssl_object") if stream else None)
        if shown != pin:
            raise httpx.HTTPError(f"certificate {shown or 'none'} is not the gateway's {pin}")
        return answer


def _local_statuses(ctx: Context, now: datetime) -> tuple[list[InstanceStatus], str]:
    """The local instance, asked through its gateway; or none, with why."""
    gateway = ctx.config.gateway if ctx.config is not None else GatewayConfig()
    backend = ctx.config.store.backend if ctx.config is not None else "json"
    if not gateway.enabled or gateway.port == 0:
        why = "gateway.enabled is false" if not gateway.enabled else "gateway.port is 0"
        raise UsageError(
            f"status needs the gateway on a single-machine state ({backend}): the running "
            f"bot answers through its GET /readyz, and {why}"
        )
    url = readyz_url(gateway)
    tls = gateway_tls(ctx.config, ctx.state_dir) if ctx.config is not None else None
    try:
        if tls is not None:
            answer = _pinned_get(url, tls.fingerprint)
        else:
            with httpx.Client(timeout=ASK_TIMEOUT, trust_env=False) as client:
                answer = client.get(url)
        body = answer.json()
    except httpx.HTTPError as exc:
        return [], f"nothing answers at {url} ({type(exc).__name__})"
    except json.JSONDecodeError:
        return [], f"{url} answered, but not as pairbot's /readyz"
    if not isinstance(body, Mapping) or "status" not in body:
        return [], f"{url} answered, but not as pairbot's /readyz"
    return [from_readyz(body, now)], ""


def cmd_status(ctx: Context) -> int:
    """``pairbot status``."""
    now = ctx.clock.now()
    why = ""
    if ctx.config is not None and ctx.config.store.backend == "postgres":
        statuses = _cluster_statuses(ctx, now)
    else:
        statuses, why = _local_statuses(ctx, now)
    if ctx.args.json:
        print_json(ctx, [s.as_json(now) for s in statuses])
    else:
        print_rows(
            ctx,
            "Instances that reported in the last minute ({})",
            ("Instance", "Host", "PID", "Version", "Started", "Last beat", "Ready", "Holds"),
            (s.row(now) for s in statuses),
            empty=f"{NONE_RUNNING[0].upper()}{NONE_RUNNING[1:]}" + (f": {why}." if why else "."),
            plain=True,
        )
    return EXIT_OK if statuses else EXIT_LOOKUP


__all__ = ["NONE_RUNNING", "WITHIN", "InstanceStatus", "cmd_status", "readyz_url"]
