"""Prometheus metrics: ``GET /metrics``, on the gateway's port or a listener of its own.

Counted where it happens, as plain integers the jobs own (an allowed sender's message costs
one dict increment, and the handler's latency two clock reads and a bucket increment while
metrics are on); read into families only when scraped, by :class:`Metrics`' collector, in a
registry of this app's own (several apps in one process, as in the tests, never share one).

What each family counts and from where:

* ``pairbot_gate_decisions_total{outcome}``: every inbound message, by the gate's decision
  (the inbound pipeline).
* ``pairbot_pairing_requests_total{provider,outcome}``: strangers' messages that asked for a
  code, by what pairing did (``created``, ``pending``: a repeat, ``capped``, ``allowed``).
* ``pairbot_approvals_total{kind}``, ``…_rejections_total``, ``…_revocations_total``,
  ``…_expiries_total`` (``kind`` ``dm`` or ``node``; an expiry also ``grant``: a grant that
  ended) and ``pairbot_lockouts_total``: the audit
  log as this instance reads it (:mod:`bot.runtime.audittail`), so the CLI's approvals count
  too; with several instances on one PostgreSQL each counts every one (take ``max``).
* ``pairbot_owner_notices_total{result}``: owner notices ``sent``, and ``folded`` into a digest.
* ``pairbot_provider_send_failures_total{platform,reason}``: sends that failed, by a word of
  :class:`~bot.core.models.SendFailure` (the providers count them).
* ``pairbot_handler_latency_seconds``: how long the handler took per allowed message.
* Gauges read from the store when scraped: ``pairbot_pending_requests{provider}`` (live DM
  requests), ``pairbot_pending_node_requests``, ``pairbot_paired_nodes``; and from the
  gateway ``pairbot_connected_nodes``.
* The events sent out (:mod:`bot.runtime.events`): ``pairbot_events_sent_total``,
  ``…_failed_total`` (given up), ``…_dropped_total`` (the queue was full),
  ``pairbot_events_queued``.

No label holds an id, a code or a name: providers come from the platforms table, outcomes
and reasons from fixed enums.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from bot import __version__
from bot.core.errors import StoreError
from bot.core.gate import Decision
from bot.core.models import RequestOutcome, SendFailure
from bot.core.platforms import KNOWN_PROVIDERS
from bot.core.protocols import CountsSendFailures, Provider
from bot.runtime.audittail import Records

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""The handler latency histogram's upper bounds, in seconds (the last bucket is +Inf)."""

_AUDITED: Mapping[tuple[str, str], tuple[str, str]] = {
    ("approve", "approved"): ("approvals", "dm"),
    ("node.approve", "approved"): ("approvals", "node"),
    ("node.approve", "rotated"): ("approvals", "node"),
    ("reject", "rejected"): ("rejections", "dm"),
    ("node.reject", "rejected"): ("rejections", "node"),
    ("revoke", "revoked"): ("revocations", "dm"),
    ("node.revoke", "revoked"): ("revocations", "node"),
    ("expire", "expired"): ("expiries", "dm"),
    ("node.expire", "expired"): ("expiries", "node"),
    ("grant.expire", "expired"): ("expiries", "grant"),
}
"""Audit (event, outcome) → (family, kind) of the decision families."""
_DECISION_FAMILIES = ("approvals", "rejections", "revocations", "expiries")
_KINDS = {
    name: tuple(dict.fromkeys(k for family, k in _AUDITED.values() if family == name))
    for name in _DECISION_FAMILIES
}
"""Each decision family's kinds, as the audit table gives them (an expiry is also a grant's
end: ``grant``)."""


class Latency:
    """A histogram kept as plain counts: one bucket increment per observation, no lock (it is
    fed on the event loop alone)."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        """Count one observation of ``seconds``."""
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.sum += seconds


class AuditCounts:
    """The decision families, counted from the audit records read (:meth:`add`)."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        """(family, kind) → count; ``("lockouts", "")`` for the lockouts."""

    def add(self, records: Records) -> None:
        """Count the records that tell of a decision (the others are passed over)."""
        for _, record in records:
            event, outcome = record.get("event"), record.get("outcome")
            if event == "lockout":
                self.counts[("lockouts", "")] += 1
                continue
            found = _AUDITED.get((str(event), str(outcome)))
            if found is not None:
                self.counts[found] += 1


@dataclass(frozen=True, slots=True)
class StateCounts:
    """What the store holds now, as the gauges show it."""

    pending: Mapping[str, int]
    """Live DM requests by provider."""
    node_requests: int
    paired_nodes: int


@dataclass(kw_only=True)
class MetricSources:
    """Where the families are read from, as the app hands them over (plain values and
    callables: the metrics name no store and no provider class)."""

    decisions: Mapping[Decision, int]
    requests: Mapping[tuple[str, RequestOutcome], int]
    latency: Latency
    notices: Callable[[], tuple[int, int]]
    """(sent, folded) owner notices so far."""
    providers: Mapping[str, Provider]
    audit: AuditCounts
    strangers_dropped: Callable[[], int]
    state: Callable[[], StateCounts]
    """Blocking (it reads the store): called in a worker thread when scraped."""
    connected_nodes: Callable[[], int] | None = None
    events: Callable[[], tuple[int, int, int, int]] | None = None
    """(sent, failed, dropped, queued) events, when events are sent out."""


@dataclass(eq=False)
class Metrics:
    """This app's metrics: a registry of its own and the text a scrape gets."""

    sources: MetricSources | None = None
    """Where the families are read from; None until the app has started its parts."""
    registry: CollectorRegistry = field(init=False)
    _state: StateCounts | None = field(default=None, init=False)
    _runner: web.AppRunner | None = field(default=None, init=False)
    port: int | None = field(default=None, init=False)
    """The port of the metrics' own listener, once started (None on the gateway's)."""

    def __post_init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    async def render(self) -> tuple[bytes, str]:
        """The scrape's body and content type; the store is read in a worker thread."""
        if self.sources is None:
            return b"", CONTENT_TYPE_LATEST
        try:
            self._state = await asyncio.to_thread(self.sources.state)
        except StoreError as exc:  # the store's own paths log it; the gauges are left out
            log.debug("metrics: the state could not be read: %s", exc)
            self._state = None
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    async def serve(self, host: str, port: int) -> None:
        """Serve ``GET /metrics`` on a listener of its own at ``host:port``."""
        app = web.Application()
        app.router.add_get("/metrics", self.handle)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])  # the port bound (0 picks a free one)
        log.info("metrics served on %s:%s/metrics", host, self.port)

    async def handle(self, _request: web.Request) -> web.Response:
        """``GET /metrics``."""
        body, content_type = await self.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def aclose(self) -> None:
        """Stop the metrics' own listener, if it runs."""
        runner, self._runner = self._runner, None
        if runner is not None:
            with contextlib.suppress(Exception):
                await runner.cleanup()

    def families(self) -> Iterator[Metric]:
        """Every family, read from the sources now."""
        src = self.sources
        if src is None:
            return
        info = GaugeMetricFamily("pairbot_build_info", "pairbot's version.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        gate = CounterMetricFamily(
            "pairbot_gate_decisions",
            "Inbound messages by the gate's decision.",
            labels=["outcome"],
        )
        for decision in Decision:
            gate.add_metric([decision.value], src.decisions.get(decision, 0))
        yield gate
        requests = CounterMetricFamily(
            "pairbot_pairing_requests",
            "Strangers' messages that asked for a code, by what pairing did.",
            labels=["provider", "outcome"],
        )
        for (provider, outcome), count in sorted(src.requests.items()):
            if provider in KNOWN_PROVIDERS:
                requests.add_metric([provider, outcome.value], count)
        yield requests
        for name in _DECISION_FAMILIES:
            family = CounterMetricFamily(
                f"pairbot_{name}", f"Pairing {name} in the audit log, by kind.", labels=["kind"]
            )
            for kind in _KINDS[name]:
                family.add_metric([kind], src.audit.counts[(name, kind)])
            yield family
        yield CounterMetricFamily(
            "pairbot_lockouts",
            "Owners paused for wrong codes, in the audit log.",
            value=src.audit.counts[("lockouts", "")],
        )
        sent, folded = src.notices()
        notices = CounterMetricFamily(
            "pairbot_owner_notices",
            "Owner notices sent, and folded into a digest.",
            labels=["result"],
        )
        notices.add_metric(["sent"], sent)
        notices.add_metric(["folded"], folded)
        yield notices
        failures = CounterMetricFamily(
            "pairbot_provider_send_failures",
            "Sends a provider could not make, by why.",
            labels=["platform", "reason"],
        )
        for name in sorted(src.providers):
            running = src.providers[name]
            if name not in KNOWN_PROVIDERS or not isinstance(running, CountsSendFailures):
                continue
            counted = dict(running.send_failures)
            for reason in SendFailure:
                failures.add_metric([name, reason.value], counted.get(reason, 0))
        yield failures
        yield _histogram(src.latency)
        yield CounterMetricFamily(
            "pairbot_stranger_messages_dropped",
            "Strangers' messages dropped because their queue was full (a flood).",
            value=src.strangers_dropped(),
        )
        yield from self._state_families()
        if src.connected_nodes is not None:
            yield GaugeMetricFamily(
                "pairbot_connected_nodes",
                "Paired nodes connected to this instance's gateway.",
                value=src.connected_nodes(),
            )
        if src.events is not None:
            yield from _event_families(*src.events())

    def _state_families(self) -> Iterator[Metric]:
        state = self._state
        if state is None:
            return
        pending = GaugeMetricFamily(
            "pairbot_pending_requests", "Live DM pairing requests.", labels=["provider"]
        )
        for provider in KNOWN_PROVIDERS:
            pending.add_metric([provider], state.pending.get(provider, 0))
        yield pending
        yield GaugeMetricFamily(
            "pairbot_pending_node_requests",
            "Live node pairing requests.",
            value=state.node_requests,
        )
        yield GaugeMetricFamily("pairbot_paired_nodes", "Paired nodes.", value=state.paired_nodes)


def _histogram(latency: Latency) -> HistogramMetricFamily:
    buckets: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip((*LATENCY_BUCKETS, float("inf")), latency.counts, strict=True):
        total += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), total))
    return HistogramMetricFamily(
        "pairbot_handler_latency_seconds",
        "How long the handler took per allowed sender's message.",
        buckets=buckets,
        sum_value=latency.sum,
    )


def _event_families(sent: int, failed: int, dropped: int, queued: int) -> Iterator[Metric]:
    yield CounterMetricFamily("pairbot_events_sent", "Events delivered.", value=sent)
    yield CounterMetricFamily(
        "pairbot_events_failed", "Events given up on after an hour of retries.", value=failed
    )
    yield CounterMetricFamily(
        "pairbot_events_dropped", "Events dropped because the queue was full.", value=dropped
    )
    yield GaugeMetricFamily("pairbot_events_queued", "Events waiting to be sent.", value=queued)


class _Collector(Collector):
    """The registry's one collector: the families of one :class:`Metrics`."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics.families()


__all__ = ["LATENCY_BUCKETS", "AuditCounts", "Latency", "MetricSources", "Metrics", "StateCounts"]
