"""The running bot: wires config, store, services, gateway, providers and scheduler; runs them.

``async with App(config, store=..., providers=..., state_dir=...) as app`` starts everything
(store → cluster → services → owner notices → gateway → providers → scheduler → teller →
heartbeat) and stops it in reverse, also when start-up fails half-way. The gateway is up
before any provider delivers a message, so an owner's ``/nodes approve`` can always reach
the waiting node.

The jobs are modules of their own: the inbound pipeline (:mod:`bot.runtime.inbound`), the
owner notices (:mod:`bot.runtime.notices`), telling approved senders
(:mod:`bot.runtime.telling`), the prune job (:mod:`bot.runtime.scheduler`), the heartbeat
(:mod:`bot.runtime.beats`). The app names no concrete store, cluster or provider: the
composition root (:mod:`bot.cli.compose`) hands it a factory of each, called at start.

The gateway's ``GET /readyz`` reads the app's :attr:`App.phase`, the store's check and the
providers' states through :meth:`App.readiness_sources` (plain callables: the gateway names no
store and no provider).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from bot import __version__
from bot.core.clock import Clock, SystemClock
from bot.core.config import Config
from bot.core.errors import ConfigError, PairbotError, StartupError, StoreUnavailableError
from bot.core.invites import GatewayAddress
from bot.core.models import DmPolicy, NodeDecision, NodeVerdict
from bot.core.protocols import Cluster, HasPeers, OnInbound, Provider, StateStore, TakesTurns
from bot.gateway.guard import GuardSettings
from bot.gateway.health import RUNNING, Phase, Readiness, ReadinessSources
from bot.gateway.limits import LimitSettings
from bot.gateway.server import Gateway, GatewaySettings
from bot.gateway.tls import GatewayTls
from bot.runtime.audittail import AuditTail
from bot.runtime.badstate import BadStateFiles
from bot.runtime.beats import BEAT_EVERY, Heartbeat
from bot.runtime.events import EventsOut, EventsTiming
from bot.runtime.handlers import Handler, build_handler
from bot.runtime.inbound import InboundPipeline
from bot.runtime.leases import ConnectorLease, LeaseTiming
from bot.runtime.logs import RedactFilter
from bot.runtime.metrics import AuditCounts, Latency, Metrics, MetricSources, StateCounts
from bot.runtime.news import ClusterPeers
from bot.runtime.notices import NoticePacing, OwnerNotices
from bot.runtime.outage import StoreOutage
from bot.runtime.reach import check_owners
from bot.runtime.remembered import remember_secret
from bot.runtime.scheduler import PruneScheduler
from bot.runtime.shared import Shared
from bot.runtime.telling import ApprovedTeller
from bot.services.nodes import NodeService, NodeSettings
from bot.services.owner import OwnerCommands
from bot.services.pairing import PairingService, PairingSettings

log = logging.getLogger(__name__)


class App:
    """pairbot, running."""

    def __init__(
        self,
        config: Config,
        *,
        store: Callable[[], StateStore],
        providers: Callable[[], Mapping[str, Provider]],
        cluster: Callable[[StateStore], Cluster],
        state_dir: Path,
        clock: Clock | None = None,
        notice_limit: int = 5,
        notice_window: timedelta = timedelta(minutes=1),
        watch_interval: float = 0.5,
        capped_delay: float = 5.0,
        ready_timeout: float = 2.0,
        beat_every: float = BEAT_EVERY,
        lease_timing: LeaseTiming | None = None,
        events_timing: EventsTiming | None = None,
        tls: Callable[[], GatewayTls | None] | None = None,
    ) -> None:
        self.config = config
        self._tls = tls
        """Reads (or makes) the certificate ``gateway.tls`` names: the composition root's
        (:func:`bot.cli.tls.gateway_tls`), as the certificate of ``auto`` lives in the state
        dir."""
        self.clock = clock or SystemClock()
        self._open_store = store
        self._open_cluster = cluster
        self._build_providers = providers
        self.state_dir = state_dir
        """Where the gateway's local operator socket lives (the state dir)."""
        self._pacing = NoticePacing(
            limit=notice_limit, window=notice_window, capped_delay=capped_delay
        )
        self._watch_interval = watch_interval
        self._ready_timeout = ready_timeout
        self._beat_every = beat_every
        self._heartbeat: Heartbeat | None = None
        self._lease_timing = lease_timing or LeaseTiming()
        self._events_timing = events_timing or EventsTiming()
        self.metrics: Metrics | None = None
        """This app's metrics (a registry of its own), when ``metrics.enabled``."""
        self.events: EventsOut | None = None
        """The audit events sent out, when the config has ``events``."""
        self.phase = Phase.STARTING
        """Starting until every part runs; stopping from the first moment of :meth:`stop`."""
        self._owners = {(o.provider, o.user_id) for o in config.owners}
        self._policies: dict[str, DmPolicy] = {}
        self.providers: dict[str, Provider] = {}
        """The running providers, by name; the jobs share this mapping. A provider whose
        lease another instance holds is here too: it sends, and does not receive."""
        self.leases: dict[str, ConnectorLease] = {}
        """The providers that allow one consumer, by name, with their lease: which of them
        this instance receives on now (:attr:`ConnectorLease.held`)."""
        self._notices: OwnerNotices | None = None
        self.outage = StoreOutage()
        """Whether the state store is unreachable now: one log line when an outage begins, one
        when it ends."""
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start everything; on failure, undo what was started and re-raise."""
        self.phase = Phase.STARTING
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        cfg = self.config
        self.started_at = self.clock.now()
        self.store: StateStore = await asyncio.to_thread(self._open_store)
        self._stack.callback(self.store.close)
        await asyncio.to_thread(self.store.check)  # a bad file refuses the start, unchanged
        self.cluster: Cluster = await asyncio.to_thread(self._open_cluster, self.store)
        self._stack.callback(self.cluster.close)
        for ok, message in await asyncio.to_thread(self.store.access_report):
            if not ok:
                log.warning("state is too open: %s (run `pairbot doctor`)", message)
        self.pairing = PairingService(
            self.store,
            clock=self.clock,
            static_allow=cfg.static_allow(),
            settings=PairingSettings.of(cfg.pairing),
        )
        for pending in await asyncio.to_thread(self.pairing.pending):
            remember_secret(pending.code)  # codes issued before this start are secrets too
        self.nodes = NodeService(self.store, clock=self.clock, settings=NodeSettings.of(cfg.nodes))
        replies = cfg.stranger_replies()
        self.owner = OwnerCommands(
            self.pairing,
            self.nodes,
            clock=self.clock,
            cluster=self.cluster,
            silent=[name for name, reply in replies.items() if not reply.tells],
            gateway=self.invite_address if cfg.gateway.enabled else None,
        )
        shared = Shared(
            owners=self._owners,
            providers=self.providers,
            clock=self.clock,
            pairing=self.pairing,
            cluster=self.cluster,
            outage=self.outage,
            stranger_replies=replies,
        )
        notices = self._notices = OwnerNotices(
            shared=shared,
            nodes=self.nodes,
            pacing=self._pacing,
            preview=cfg.pairing.notice_preview,
        )
        self._stack.push_async_callback(notices.aclose)
        self.handler: Handler = build_handler(cfg.handler, notices.send_to_owners)
        self._stack.push_async_callback(self.handler.aclose)
        metrics = self.metrics = Metrics() if cfg.metrics.enabled else None

        self.gateway: Gateway | None = None
        if cfg.gateway.enabled:
            if cfg.gateway.tls is not None and self._tls is None:
                raise ConfigError(
                    "this caller gave the app no way to read the certificate",
                    field="gateway.tls",
                )
            tls = await asyncio.to_thread(self._tls) if self._tls is not None else None
            if cfg.gateway.plaintext_on_network:
                log.warning(
                    "gateway: listening on %s without TLS (gateway.allow_plaintext): what "
                    "nodes send crosses the network in the clear unless a TLS proxy is in "
                    "front; set gateway.tls to serve wss:// itself",
                    cfg.gateway.host,
                )
            gateway = Gateway(
                self.nodes,
                clock=self.clock,
                settings=GatewaySettings(
                    host=cfg.gateway.host,
                    port=cfg.gateway.port,
                    operator_token=cfg.gateway.operator_token,
                    socket_dir=self.state_dir,
                    idle_timeout=cfg.gateway.idle_timeout.total_seconds(),
                    tls=tls,
                    limits=LimitSettings(
                        failures=cfg.gateway.failures_per_minute,
                        pair_requests=cfg.gateway.pair_requests_per_minute,
                        connects=cfg.gateway.connects_per_minute,
                    ),
                    guard=GuardSettings(
                        max_connections=cfg.gateway.max_connections,
                        max_per_address=cfg.gateway.max_connections_per_address,
                        handshake_timeout=cfg.gateway.handshake_timeout.total_seconds(),
                    ),
                ),
                on_request=notices.node_request,
                on_joined=notices.node_joined,
                on_secret=remember_secret,
                cluster=self.cluster,
                readiness=Readiness(
                    self.readiness_sources(), clock=self.clock, timeout=self._ready_timeout
                ),
                metrics=metrics.handle if metrics and cfg.metrics.port is None else None,
            )
            try:
                await gateway.start()
            except OSError as exc:
                await gateway.stop()
                raise StartupError.cannot_listen(cfg.gateway.host, cfg.gateway.port, exc) from exc
            self._stack.push_async_callback(gateway.stop)
            self.gateway = gateway
        teller = ApprovedTeller(
            shared=shared, watch_interval=self._watch_interval, handler=self.handler
        )
        self._stack.push_async_callback(teller.aclose)
        inbound = self.inbound = InboundPipeline(
            shared=shared,
            policies=self._policies,
            owner=self.owner,
            handler=self.handler,
            notices=notices,
            teller=teller,
            gateway=self.gateway,
            bad_state=BadStateFiles(self.store, notices),
        )
        if cfg.events is not None:
            self.events = EventsOut(
                config=cfg.events,
                store=self.store,
                cluster=self.cluster,
                clock=self.clock,
                outage=self.outage,
                interval=self._watch_interval,
                timing=self._events_timing,
            )
        if metrics is not None:
            await self._start_metrics(metrics, inbound, notices)
        providers = self._build_providers()
        # Runs after every provider has stopped (the stack unwinds in reverse): no message
        # can arrive for a stranger worker that is gone, and no claim is in flight.
        self._stack.push_async_callback(inbound.stop)
        for name, provider in providers.items():
            block = getattr(cfg.providers, name, None)
            self._policies[name] = block.dm_policy if block is not None else DmPolicy.PAIRING
            try:
                stop = await self._start_provider(name, provider, inbound.on_inbound)
            except PairbotError:
                raise
            except Exception as exc:
                raise StartupError.cannot_start(
                    name, exc, redact=RedactFilter(cfg.secrets()).redact
                ) from exc
            self.providers[name] = provider
            self._stack.push_async_callback(stop)
        await check_owners(self.providers, self._owners)  # one line per owner not reached
        self.scheduler = PruneScheduler(self.prune, interval=cfg.pairing.prune_interval)
        await self.scheduler.start()
        self._stack.push_async_callback(self.scheduler.stop)
        telling = asyncio.create_task(teller.run_forever(), name="pairbot-tell")
        self._stack.push_async_callback(_cancel, telling)
        if self.events is not None:
            await self.events.start()
            self._stack.push_async_callback(self.events.aclose)
        self.phase = Phase.RUNNING
        heartbeat = self._heartbeat = Heartbeat(
            self.cluster,
            clock=self.clock,
            phase=lambda: self.phase,
            ready=self._ready,
            outage=self.outage,
            every=self._beat_every,
        )
        beating = asyncio.create_task(heartbeat.run_forever(), name="pairbot-beat")
        self._stack.push_async_callback(_cancel, beating)
        log.info(
            "pairbot running: providers=%s state_dir=%s", ",".join(self.providers), self.state_dir
        )

    async def _start_provider(
        self, name: str, provider: Provider, on_inbound: OnInbound
    ) -> Callable[[], Awaitable[None]]:
        """Start ``provider``; return what stops it. One that allows one consumer receives
        only while this instance holds its lease (:mod:`bot.runtime.leases`); one that tells
        the other instances what its webhook learnt is met with them first
        (:mod:`bot.runtime.news`), and stops hearing them after it stops."""
        if isinstance(provider, HasPeers):
            peers = ClusterPeers(name, provider, cluster=self.cluster)
            await peers.start()
            try:
                stop = await self._start_alone(name, provider, on_inbound)
            except BaseException:
                await peers.stop()
                raise

            async def stop_both() -> None:
                try:
                    await stop()
                finally:
                    await peers.stop()

            return stop_both
        return await self._start_alone(name, provider, on_inbound)

    async def _start_alone(
        self, name: str, provider: Provider, on_inbound: OnInbound
    ) -> Callable[[], Awaitable[None]]:
        if not (isinstance(provider, TakesTurns) and provider.one_consumer):
            await provider.start(on_inbound)
            return provider.stop
        lease = ConnectorLease(
            name, provider, cluster=self.cluster, clock=self.clock, timing=self._lease_timing
        )
        await lease.start(on_inbound)
        self.leases[name] = lease
        return lease.stop

    async def _start_metrics(
        self, metrics: Metrics, inbound: InboundPipeline, notices: OwnerNotices
    ) -> None:
        """Feed ``metrics`` from the running parts; serve them on a port of their own if the
        config gives one (else the gateway serves them)."""
        audit = AuditCounts()
        tail = AuditTail(self.store, clock=self.clock, on_records=audit.add, outage=self.outage)
        await tail.read_logged()  # counts start at the log's end now
        reading = asyncio.create_task(
            tail.run_forever(self._watch_interval), name="pairbot-metrics-audit"
        )
        self._stack.push_async_callback(_cancel, reading)
        inbound.latency = Latency()
        notifier, gateway, events = notices.notifier, self.gateway, self.events
        metrics.sources = MetricSources(
            decisions=inbound.decisions,
            requests=inbound.requests,
            latency=inbound.latency,
            notices=lambda: (notifier.sent_count, notifier.folded_count),
            providers=self.providers,
            audit=audit,
            strangers_dropped=lambda: inbound.dropped_strangers,
            state=self._state_counts,
            connected_nodes=gateway.connected_nodes if gateway is not None else None,
            events=events.stats if events is not None else None,
        )
        port = self.config.metrics.port
        if port is None:
            return
        host = self.config.metrics.host
        try:
            await metrics.serve(host, port)
        except OSError as exc:
            raise StartupError.cannot_listen(host, port, exc, section="metrics") from exc
        self._stack.push_async_callback(metrics.aclose)

    def _state_counts(self) -> StateCounts:
        """What the metrics' gauges show of the store (blocking: read in a worker thread)."""
        pending = Counter(r.provider for r in self.pairing.pending())
        return StateCounts(
            pending=pending,
            node_requests=len(self.nodes.pending()),
            paired_nodes=len(self.nodes.paired()),
        )

    def invite_address(self) -> GatewayAddress:
        """Where nodes reach this instance's gateway, as its invites tell them: the URL
        (``gateway.public_url``, else the host and the port it listens on) and the
        certificate's fingerprint.

        Raises:
            ConfigError: no gateway runs, or its host is no address a node can reach.
        """
        gateway = self.gateway
        if gateway is None or gateway.port is None:
            raise ConfigError("the node gateway is not running", field="gateway.enabled")
        url = self.config.gateway.node_url(gateway.port)
        return GatewayAddress(url=url, fingerprint=gateway.fingerprint)

    def readiness_sources(self) -> ReadinessSources:
        """What ``GET /readyz`` judges by: the store's backend and check (the store opened
        at start), the providers' states and :attr:`phase`; and who answers
        (:meth:`instance_facts`)."""
        return ReadinessSources(
            backend=self.config.store.backend,
            check_store=lambda: self.store.check(),
            providers=lambda: {name: _state_of(p) for name, p in self.providers.items()},
            phase=lambda: self.phase,
            instance=self.instance_facts,
        )

    def _ready(self) -> bool:
        """Ready as this instance knows it without a check (what its heartbeat says): running,
        every provider running, the store not known to be unreachable. ``GET /readyz`` also
        checks the store; a beat every 10 s does not, so a large JSON state costs it nothing
        and a state file gone bad is logged by its own paths only."""
        return (
            self.phase is Phase.RUNNING
            and not self.outage.down
            and all(_state_of(p) == RUNNING for p in self.providers.values())
        )

    def instance_facts(self) -> dict[str, object]:
        """This instance as ``pairbot status`` shows it: its cluster id, pairbot's version,
        the host, the process id, when it started (ISO 8601, UTC) and the leases of the
        connectors it receives on (the ones only one instance at a time may)."""
        return {
            "id": self.cluster.instance_id,
            "version": __version__,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": self.started_at.isoformat(),
            "held": sorted(lease.lease for lease in self.leases.values() if lease.held),
        }

    async def stop(self) -> None:
        """Stop in reverse order of start (providers finish the update in hand first); the
        other instances hear first that this one is stopping."""
        self.phase = Phase.STOPPING
        if self._heartbeat is not None:
            await self._heartbeat.last()
        if self._notices is not None:
            self._notices.cancel_capped()
        await self._stack.aclose()

    async def prune(self) -> None:
        """Drop expired DM and node requests and node invites (audited); tell waiting nodes
        theirs expired.

        While the store cannot be reached there is nothing to prune: the next run does it."""
        try:
            await asyncio.to_thread(self.pairing.prune)
            expired = await asyncio.to_thread(self.nodes.prune)
        except StoreUnavailableError as exc:
            self.outage.failed(exc)
            return
        if self.gateway is not None:
            for req in expired:
                await self.gateway.deliver(NodeDecision.on_request(req, NodeVerdict.EXPIRED))


def _state_of(provider: Provider) -> str:
    """A provider's lifecycle state as a word: its ``state`` (the providers' base keeps one),
    else ``running`` (it started and has not been stopped)."""
    state = getattr(provider, "state", None)
    value = getattr(state, "value", state)
    return value if isinstance(value, str) else RUNNING


async def _cancel(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it ends. It is cancelled again until it does: on Python
    3.11 an ``asyncio.wait_for`` anywhere in the task swallows a cancellation that arrives
    just as what it waits for completes, and the task would go on (a stop hung on it)."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    with contextlib.suppress(asyncio.CancelledError):
        await task


__all__ = ["App"]
