"""Several ``pairbot run`` on one PostgreSQL schema, behind a load balancer: allowed-sender
messages/s, stranger requests/s, and the approval-to-told latency, with 1, 2 and 4 instances.

Usage::

    python benchmarks/cluster_bench.py [--instances 1,2,4] [--seconds 20] [--strangers 300]
                                       [--approvals 100] [--probes 20] [--redeliver 20]
                                       [--late 12] [--statuses balanced|to-sender]
                                       [--dsn DSN] [--quick] [--json PATH] [--logs DIR]

For each instance count N: a schema of its own on ``--dsn`` (made for the run, dropped
after), N real ``pairbot run`` processes (the ``pairbot`` beside this Python) on it, each with
the WhatsApp connector in webhook mode on a port of its own and an access token of its own
(so the fake knows who sent what), all sending to ONE loopback WhatsApp fake
(:mod:`providers.whatsapp.fake`) run by this process. This process plays the load balancer in
front of them: every webhook the fake sends (people's messages, and the ``sent`` status of
every message the bot sent) is POSTed, signed as Meta signs it, to the next instance in turn,
by ``4 N`` concurrent lanes; a POST not answered 200 goes to the next instance. Every
``--redeliver``-th message is delivered a second time, to whichever instance is next, as Meta
does when an answer is lost: half of those copies at once (both may be in flight together),
half ``--late`` s later (past the 10 s an inbound claim lasts in flight). Each must still be
handled once. ``--statuses to-sender`` sends each status to the instance that made the send
instead (no balancer can: it shows the cluster without WhatsApp's status routing).

Measured, in order, on each N:

1. **Allowed senders** (200 of them, approved in the store beforehand; ``handler: echo``):
   messages offered for ``--seconds`` s with at most 64 per instance waiting for their echo.
   The figure is echoes received per second at the fake; every message must be echoed
   exactly once (losses counted when the phase drains, duplicates at the very end).
2. **Strangers**: ``--strangers`` new senders write once each (same window); the figure is
   code replies per second; each stranger must get exactly one code.
3. **Approvals**: ``--approvals`` of those strangers approved one after another, every
   0.1 s, by a :class:`~bot.services.pairing.PairingService` over a ``PostgresStore`` opened
   on the same schema by this process (what ``pairbot pairing approve`` does on another
   machine with only the database config). Measured from the approval's commit to the
   "You're approved" message arriving at the fake; each sender must be told exactly once
   (counted after a grace of 2 s); nobody writes meanwhile, as a person waits to be told.
   Then ``--probes`` more approvals, each followed at once by the sender writing to every
   instance (directly, not round robin), again every 20 ms until that instance echoes one:
   the first probe echoed bounds when that instance's gate saw the approval. (A probe also
   shows the instance that the sender wrote lately, so these are not timed to told.)

Also printed: the CPU used during phase 1 by the instances, by PostgreSQL (every
``postgres`` process of the machine), by this process, and the machine's busy share of its
cores, with the load average: other work on the machine skews every figure. Targets: an
approved sender told within 1 s p99 and once, every instance's gate seeing the approval
within 1 s; every message handled exactly once, every stranger one code; the allowed
throughput is reported as a curve (it grows with N until the cores are busy; no target
number). Exit status 1 if a target was missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field
from math import inf
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from aiohttp import web

from bot.core.clock import SystemClock
from bot.core.codes import normalize_code
from bot.core.messages import approved_sender
from bot.services.pairing import PairingService
from providers.fakebase import free_port
from providers.whatsapp.fake import (
    DEFAULT_ACCESS_TOKEN,
    DEFAULT_APP_SECRET,
    DEFAULT_VERIFY_TOKEN,
    FakeWhatsAppServer,
)
from stores import open_store

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PROVIDER = "whatsapp"
WEBHOOK_PATH = "/whatsapp/webhook"
OWNER = "15550000001"
ALLOWED = 200
"""Allowed senders the messages of phase 1 rotate over."""
WINDOW_PER_INSTANCE = 64
"""Messages (or strangers) offered and not yet answered, per instance."""
LANES_PER_INSTANCE = 4
"""Concurrent webhook POSTs the balancer keeps going, per instance."""
APPROVAL_GAP = 0.1
"""Seconds between two approvals."""
PROBE_EVERY = 0.02
"""Seconds between two probes of one instance's gate."""
TOLD_GRACE = 2.0
"""Seconds waited after the last "approved" message for a second one (4 looks at the
outbox by every instance)."""
DRAIN = 30.0
"""Seconds a phase waits for the replies still owed when it stops offering (10 with
``--quick``)."""
TOLD_P99_TARGET = 1.0
CODE = re.compile(r"Your pairing code: ([A-Z2-9]{4}-[A-Z2-9]{4})")
APPROVED = approved_sender()
ENV = {"WA_APP_SECRET": DEFAULT_APP_SECRET, "WA_VERIFY_TOKEN": DEFAULT_VERIFY_TOKEN}
"""The fake's (not secret) credentials, handed to the instances as ``${ENV}``, as a deployment
hands its secrets (the access token, one per instance, is ``$WA_ACCESS_TOKEN``)."""


# --- what the fake sent, as it arrives ------------------------------------------------------


SENDER: contextvars.ContextVar[int | None] = contextvars.ContextVar("sender", default=None)
"""Which instance made the Graph API call being handled (each has an access token of its
own); set for the call's task, so the status webhooks it queues know it too."""


def access_token(instance: int) -> str:
    """Instance ``instance``'s access token: the fake's, numbered."""
    return f"{DEFAULT_ACCESS_TOKEN}-{instance}"


@dataclass
class Replies:
    """Every message the bot sent to the fake, sorted as it is taken: echoes, codes,
    "approved" messages, the owner's notices; and which instance sent each."""

    echoes: Counter[str] = field(default_factory=Counter)
    echoed_at: dict[str, float] = field(default_factory=dict)
    codes: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    coded_at: dict[str, float] = field(default_factory=dict)
    told: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    told_by: Counter[int | None] = field(default_factory=Counter)
    sent_by: Counter[int | None] = field(default_factory=Counter)
    to_owner: int = 0
    other: int = 0
    answered: asyncio.Semaphore | None = None
    """Released once per first reply to an offered message (the offer's window)."""

    def take(self, record: dict[str, Any], instance: int | None) -> None:
        now = time.perf_counter()
        to, text = str(record["to"]), str(record["text"])
        self.sent_by[instance] += 1
        if to == OWNER:
            self.to_owner += 1
        elif text.startswith(("m:", "probe:")):
            self.echoes[text] += 1
            if text not in self.echoed_at:
                self.echoed_at[text] = now
                self._release()
        elif found := CODE.search(text):
            self.codes[to].append(normalize_code(found.group(1)) or "")
            if to not in self.coded_at:
                self.coded_at[to] = now
                self._release()
        elif text == APPROVED:
            self.told[to].append(now)
            self.told_by[instance] += 1
        else:
            self.other += 1

    def _release(self) -> None:
        if self.answered is not None:
            self.answered.release()


class BenchWhatsApp(FakeWhatsAppServer):
    """The WhatsApp fake whose webhooks go through the :class:`Balancer`, which knows each
    instance by its access token, and sorts every accepted send into :class:`Replies`.

    With ``statuses_to_sender``, the status webhooks of a send go to the instance that made
    it (no load balancer can do that for Meta's webhooks: it shows what a connector that
    shared the statuses between instances would see)."""

    def __init__(self, replies: Replies, *, statuses_to_sender: bool = False) -> None:
        super().__init__()
        self.replies = replies
        self.balancer = Balancer(self)
        self.statuses_to_sender = statuses_to_sender
        self._tokens = {f"Bearer {access_token(i)}": i for i in range(64)}

    def deliver(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.balancer.put(payload, SENDER.get() if self.statuses_to_sender else None)
        return payload

    def _authorise(self, request: web.Request) -> None:
        instance = self._tokens.get(request.headers.get("Authorization", ""))
        if instance is not None:
            SENDER.set(instance)
            own = {**request.headers, "Authorization": f"Bearer {self.access_token}"}
            request = request.clone(headers=own)
        super()._authorise(request)

    def _take(self, body: dict[str, Any]) -> dict[str, Any]:
        record = super()._take(body)
        self.replies.take(record, SENDER.get())
        return record


class Balancer:
    """The load balancer in front of the instances, fed by the fake's webhook sender.

    Each payload is POSTed to the next instance in turn (or to the one it is pinned to) by
    one of the lanes; one not answered 200 is tried again on the next instance after 50 ms,
    as Meta re-delivers. Every ``redeliver``-th message payload (0: none) is delivered a
    second time, to whichever instance is next: a retry after a lost answer. Every other
    such copy is queued right behind the first (both may be in flight at once, on two
    instances); the rest ``late`` seconds later (by default past the 10 s an inbound claim
    lasts while its message is handled: the claim must have been kept by then).
    """

    def __init__(self, fake: FakeWhatsAppServer) -> None:
        self.fake = fake
        self.urls: list[str] = []
        self.redeliver = 0
        self.late = 0.0
        self.posts = 0
        self.refused = 0
        self.again = 0
        self._queue: deque[tuple[dict[str, Any], int | None]] = deque()
        self._wake = asyncio.Event()
        self._turn = 0
        self._messages = 0
        self._busy = 0
        self._lanes: list[asyncio.Task[None]] = []
        self._pin: int | None = None
        self._later: set[asyncio.TimerHandle] = set()

    def put(self, payload: dict[str, Any], pin: int | None = None) -> None:
        """Queue ``payload`` for the next instance in turn, or for instance ``pin``."""
        pin = self._pin if pin is None else pin
        self._queue.append((payload, pin))
        self._wake.set()
        value = payload["entry"][0]["changes"][0]["value"]
        if self.redeliver and "messages" in value and pin is None:
            self._messages += 1
            if self._messages % self.redeliver == 0:
                self.again += 1
                if self.again % 2 or not self.late:
                    self._queue.append((payload, None))
                else:
                    self._put_later(payload)

    def _put_later(self, payload: dict[str, Any]) -> None:
        def put() -> None:
            self._later.discard(handle)
            self._queue.append((payload, None))
            self._wake.set()

        handle = asyncio.get_running_loop().call_later(self.late, put)
        self._later.add(handle)

    @contextlib.contextmanager
    def pinned(self, instance: int) -> Iterator[None]:
        """Payloads queued in the block go to ``instance`` only."""
        self._pin = instance
        try:
            yield
        finally:
            self._pin = None

    @property
    def idle(self) -> bool:
        return not self._queue and self._busy == 0 and not self._later

    def start(self, urls: list[str], lanes: int) -> None:
        self.urls = urls
        self._lanes = [asyncio.create_task(self._lane()) for _ in range(lanes)]

    async def stop(self) -> None:
        for lane in self._lanes:
            lane.cancel()
        await asyncio.gather(*self._lanes, return_exceptions=True)
        self._lanes = []
        self._queue.clear()
        for handle in self._later:
            handle.cancel()
        self._later.clear()

    async def _lane(self) -> None:
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            payload, pin = self._queue.popleft()
            self._busy += 1
            try:
                await self._post(payload, pin)
            finally:
                self._busy -= 1

    async def _post(self, payload: dict[str, Any], pin: int | None) -> None:
        while True:
            if pin is None:
                url = self.urls[self._turn % len(self.urls)]
                self._turn += 1
            else:
                url = self.urls[pin]
            try:
                status = await self.fake.post_webhook(payload, url=url)
            except (aiohttp.ClientError, TimeoutError, OSError):
                status = None
            self.posts += 1
            if status == 200:
                return
            self.refused += 1
            await asyncio.sleep(0.05)


# --- the instances ----------------------------------------------------------------------------


def pairbot_command() -> str:
    """The ``pairbot`` installed beside this Python (the venv's)."""
    return str(Path(sys.executable).with_name("pairbot"))


def instance_config(
    fake: FakeWhatsAppServer, *, dsn: str, state: Path, port: int, cap: int
) -> dict[str, Any]:
    """One instance's config: the schema's DSN, its own state dir and webhook port."""
    return {
        "state_dir": str(state),
        "store": {"backend": "postgres", "dsn": dsn},
        "owners": [{"provider": PROVIDER, "user_id": OWNER}],
        "gateway": {"enabled": False},
        "handler": {"kind": "echo"},
        "pairing": {"max_pending_per_provider": cap},
        "providers": {
            PROVIDER: {
                "access_token": "${WA_ACCESS_TOKEN}",
                "app_secret": "${WA_APP_SECRET}",
                "verify_token": "${WA_VERIFY_TOKEN}",
                "phone_number_id": fake.phone_number_id,
                "api_base_url": fake.base_url,
                "webhook": {"host": "127.0.0.1", "port": port, "path": WEBHOOK_PATH},
            }
        },
    }


@dataclass
class Instance:
    """One ``pairbot run`` process."""

    number: int
    url: str
    log: Path
    proc: asyncio.subprocess.Process

    def problems(self) -> list[str]:
        """The log's ERROR and CRITICAL lines, and any traceback's last line."""
        lines = self.log.read_text(errors="replace").splitlines()
        found = [ln for ln in lines if " ERROR " in ln or " CRITICAL " in ln]
        found += [lines[i + 1] for i, ln in enumerate(lines[:-1]) if ln.startswith("Traceback")]
        return found


@contextlib.asynccontextmanager
async def instances(
    fake: FakeWhatsAppServer, n: int, *, dsn: str, where: Path, cap: int
) -> AsyncIterator[list[Instance]]:
    """Start ``n`` instances, wait until each webhook answers, stop them (SIGTERM, then
    SIGKILL after 15 s) at the end."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PAIRBOT_")} | ENV
    started: list[Instance] = []
    try:
        for i in range(n):
            port = free_port()
            config = where / f"instance{i}.yaml"
            made = instance_config(fake, dsn=dsn, state=where / f"state{i}", port=port, cap=cap)
            config.write_text(json.dumps(made, indent=1))
            config.chmod(0o600)
            log = where / f"instance{i}.log"
            env = clean | {"WA_ACCESS_TOKEN": access_token(i)}
            with log.open("wb") as out:
                proc = await asyncio.create_subprocess_exec(
                    pairbot_command(),
                    "run",
                    "--config",
                    str(config),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
            started.append(Instance(i, url, log, proc))
        for one in started:
            await _ready(fake, one)
        yield started
    finally:
        for one in started:
            if one.proc.returncode is None:
                one.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for one in started:
            try:
                await asyncio.wait_for(one.proc.wait(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                one.proc.kill()
                await one.proc.wait()


async def _ready(fake: FakeWhatsAppServer, one: Instance, within: float = 60.0) -> None:
    """Wait until the instance answers Meta's subscription check (its webhook is up)."""
    params = {"hub.mode": "subscribe", "hub.challenge": "1", "hub.verify_token": fake.verify_token}
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while True:
            if one.proc.returncode is not None:
                tail = one.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(
                    f"instance {one.number} exited ({one.proc.returncode}):\n{tail}"
                )
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(one.url, params=params) as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                raise TimeoutError(f"instance {one.number} did not start within {within:g} s")
            await asyncio.sleep(0.1)


# --- the schema, and the CPU ------------------------------------------------------------------


@contextlib.contextmanager
def schema(dsn: str) -> Iterator[str]:
    """A new schema on ``dsn``, as the DSN of a state in it; dropped at the end."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    name = f"bench_cluster_{secrets.token_hex(4)}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield make_conninfo(dsn, options=f"-csearch_path={name}")
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def where_dsn(dsn: str) -> str:
    """``user@host:port/db`` of a DSN, never its password."""
    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(dsn)
    return (
        f"{parts.get('user', '')}@{parts.get('host', 'localhost')}:{parts.get('port', 5432)}"
        f"/{parts.get('dbname', '')}"
    )


_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(stat: str) -> float:
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def process_cpu(pid: int) -> float:
    """CPU seconds used by a process so far (0 if it is gone)."""
    try:
        return _proc_cpu(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, ValueError, IndexError):
        return 0.0


def postgres_cpu() -> float:
    """CPU seconds used so far by every ``postgres`` process of the machine."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if "(postgres)" in text[: text.find(")") + 1]:
            total += _proc_cpu(text)
    return total


def machine_cpu() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine so far, every core."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values[:8]) - idle) / _TICK, sum(values[:8]) / _TICK


@dataclass
class Cpu:
    """CPU used between :meth:`start` and :meth:`stop`, as a share of one core."""

    pids: list[int]
    began: float = 0.0
    marks: tuple[float, float, float, float, float] = (0, 0, 0, 0, 0)
    instances: float = 0.0
    postgres: float = 0.0
    bench: float = 0.0
    machine: float = 0.0
    """Busy share of all the machine's cores (1.0: every core busy)."""

    def _read(self) -> tuple[float, float, float, float, float]:
        busy, every = machine_cpu()
        own = os.times()
        return (
            sum(process_cpu(p) for p in self.pids),
            postgres_cpu(),
            own.user + own.system,
            busy,
            every,
        )

    def start(self) -> None:
        self.began = time.perf_counter()
        self.marks = self._read()

    def stop(self) -> None:
        wall = time.perf_counter() - self.began
        now = self._read()
        inst, pg, own, busy, every = (b - a for a, b in zip(self.marks, now, strict=True))
        self.instances, self.postgres, self.bench = inst / wall, pg / wall, own / wall
        self.machine = busy / every if every else 0.0


# --- the phases -------------------------------------------------------------------------------


@dataclass
class Figures:
    """What one instance count measured."""

    instances: int
    allowed_offered: int = 0
    allowed_per_s: float = 0.0
    allowed_duplicates: int = 0
    allowed_lost: int = 0
    allowed_p50_ms: float = 0.0
    strangers_offered: int = 0
    strangers_per_s: float = 0.0
    strangers_codes_twice: int = 0
    strangers_no_code: int = 0
    approvals: int = 0
    probed: int = 0
    told_p50_ms: float = 0.0
    told_p99_ms: float = 0.0
    told_max_ms: float = 0.0
    told_ms: list[float] = field(default_factory=list)
    """Each approval's commit to its "approved" message, in the order approved (inf: never)."""
    told_twice: int = 0
    not_told: int = 0
    gate_p99_ms: float = 0.0
    gate_not_seen: int = 0
    codes_after_approval: int = 0
    owner_notices: int = 0
    webhook_posts: int = 0
    webhook_refused: int = 0
    redelivered: int = 0
    cpu_instances: float = 0.0
    cpu_postgres: float = 0.0
    cpu_bench: float = 0.0
    cpu_machine: float = 0.0
    sent_by: list[int] = field(default_factory=list)
    """Messages each instance sent, every phase."""
    told_by: list[int] = field(default_factory=list)
    """"Approved" messages each instance sent."""
    problems: list[str] = field(default_factory=list)


@dataclass
class Settings:
    instances: list[int]
    seconds: float
    strangers: int
    approvals: int
    probed: int
    redeliver: int
    late: float
    drain: float
    """Seconds a phase waits for the replies still owed once it stops offering."""
    statuses: str
    dsn: str
    logs: Path | None


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))]


def allowed_id(i: int) -> str:
    return str(15551000000 + i)


def stranger_id(i: int) -> str:
    return str(15552000000 + i)


def stranger_name(sender: str) -> str:
    """The name a stranger writes under, always the same (a new name is a new write)."""
    return f"Stranger {int(sender) - 15552000000}"


async def measure(settings: Settings, n: int, where: Path) -> Figures:
    """Every phase with ``n`` instances on a fresh schema."""
    figures = Figures(instances=n)
    replies = Replies()
    cap = max(10, settings.strangers + 10)
    with schema(settings.dsn) as dsn:
        store = open_store(where, backend="postgres", dsn=dsn)
        try:
            with store.transaction() as txn:
                for i in range(ALLOWED):
                    txn.allow(PROVIDER, allowed_id(i))
            pairing = PairingService(store, clock=SystemClock())
            to_sender = settings.statuses == "to-sender"
            async with BenchWhatsApp(replies, statuses_to_sender=to_sender) as fake:
                fake.wrote(OWNER)  # the owner wrote when setting the bot up: notices reach them
                async with instances(fake, n, dsn=dsn, where=where, cap=cap) as running:
                    fake.webhook_url = running[0].url
                    fake.balancer.start([one.url for one in running], LANES_PER_INSTANCE * n)
                    fake.balancer.redeliver = settings.redeliver
                    fake.balancer.late = settings.late
                    try:
                        await _warm_up(fake, replies, n, settings.drain)
                        offered = await _allowed(settings, fake, replies, figures, running)
                        ids = await _strangers(settings, fake, replies, figures)
                        coded = [s for s in ids if s in replies.coded_at]
                        after = await _approvals(settings, fake, replies, figures, pairing, coded)
                        # Late copies are still to come: count duplicates once they landed.
                        await _until(lambda: fake.balancer.idle, settings.late + settings.drain)
                        await asyncio.sleep(0.5)
                        figures.allowed_duplicates = sum(replies.echoes[t] - 1 for t in offered)
                        figures.strangers_codes_twice = sum(
                            1 for s in ids if len(replies.codes.get(s, [])) - after.get(s, 0) > 1
                        )
                        figures.owner_notices = replies.to_owner
                        figures.webhook_posts = fake.balancer.posts
                        figures.webhook_refused = fake.balancer.refused
                        figures.redelivered = fake.balancer.again
                        figures.sent_by = [replies.sent_by[i] for i in range(n)]
                        figures.told_by = [replies.told_by[i] for i in range(n)]
                    finally:
                        await fake.balancer.stop()
                for one in running:
                    figures.problems += [f"instance {one.number}: {p}" for p in one.problems()]
                    if one.proc.returncode not in (0, None):
                        figures.problems.append(
                            f"instance {one.number} exited {one.proc.returncode}"
                        )
        finally:
            store.close()
    return figures


async def _warm_up(fake: BenchWhatsApp, replies: Replies, n: int, drain: float) -> None:
    """A few messages through every instance, so pools and caches are warm; not counted."""
    texts = [f"m:warm-{i}" for i in range(8 * n)]
    for i, text in enumerate(texts):
        fake.dm(allowed_id(i % ALLOWED), text, name="Warm")
    await _until(lambda: all(t in replies.echoed_at for t in texts), drain)


async def _offer(
    replies: Replies,
    window: int,
    seconds: float | None,
    count: int | None,
    send: Any,
    drain: float,
) -> tuple[float, int]:
    """Offer items (``send(i)``) with at most ``window`` unanswered, for ``seconds`` or
    ``count`` items; return (start, offered)."""
    replies.answered = asyncio.Semaphore(window)
    start = time.perf_counter()
    offered = 0
    while True:
        if count is not None and offered >= count:
            break
        left = None if seconds is None else start + seconds - time.perf_counter()
        if left is not None and left <= 0:
            break
        try:
            await asyncio.wait_for(replies.answered.acquire(), timeout=left or drain)
        except TimeoutError:
            break
        send(offered)
        offered += 1
        if offered % 16 == 0:
            await asyncio.sleep(0)  # let the lanes post
    return start, offered


async def _allowed(
    settings: Settings,
    fake: BenchWhatsApp,
    replies: Replies,
    figures: Figures,
    running: list[Instance],
) -> list[str]:
    """Phase 1; return the texts offered (each must be echoed once)."""
    sent_at: dict[str, float] = {}

    def send(i: int) -> None:
        text = f"m:{i}"
        sent_at[text] = time.perf_counter()
        fake.dm(allowed_id(i % ALLOWED), text, name=f"Allowed {i % ALLOWED}")

    cpu = Cpu([one.proc.pid for one in running])
    cpu.start()
    start, offered = await _offer(
        replies, WINDOW_PER_INSTANCE * len(running), settings.seconds, None, send, settings.drain
    )
    end = time.perf_counter()
    cpu.stop()
    done_in_time = sum(1 for t in sent_at if replies.echoed_at.get(t, end + 1) <= end)
    await _until(lambda: all(t in replies.echoed_at for t in sent_at), settings.drain)
    figures.allowed_offered = offered
    figures.allowed_per_s = done_in_time / (end - start)
    figures.allowed_lost = sum(1 for t in sent_at if t not in replies.echoed_at)
    latencies = [replies.echoed_at[t] - s for t, s in sent_at.items() if t in replies.echoed_at]
    figures.allowed_p50_ms = percentile(latencies, 50) * 1000
    figures.cpu_instances, figures.cpu_postgres = cpu.instances, cpu.postgres
    figures.cpu_bench, figures.cpu_machine = cpu.bench, cpu.machine
    return list(sent_at)


async def _strangers(
    settings: Settings, fake: BenchWhatsApp, replies: Replies, figures: Figures
) -> list[str]:
    """Phase 2; return the strangers, in the order they wrote."""
    ids = [stranger_id(i) for i in range(settings.strangers)]

    def send(i: int) -> None:
        fake.dm(ids[i], "hello", name=stranger_name(ids[i]))

    window = WINDOW_PER_INSTANCE * len(fake.balancer.urls)
    start, offered = await _offer(replies, window, None, len(ids), send, settings.drain)
    await _until(lambda: all(s in replies.coded_at for s in ids), settings.drain)
    answered = [replies.coded_at[s] for s in ids if s in replies.coded_at]
    figures.strangers_offered = offered
    figures.strangers_per_s = len(answered) / (max(answered) - start) if answered else 0.0
    figures.strangers_no_code = sum(1 for s in ids if s not in replies.coded_at)
    return ids


async def _approvals(
    settings: Settings,
    fake: BenchWhatsApp,
    replies: Replies,
    figures: Figures,
    pairing: PairingService,
    coded: list[str],
) -> dict[str, int]:
    """Phase 3: approvals told (nobody writes meanwhile), then approvals probed. Return the
    codes each approved sender was sent after their approval."""
    chosen = coded[: settings.approvals]
    probed = coded[settings.approvals : settings.approvals + settings.probed]
    codes_before = {s: len(replies.codes.get(s, [])) for s in chosen + probed}
    committed: dict[str, float] = {}
    gates: list[float] = []
    n = len(fake.balancer.urls)

    def approve(sender: str) -> float:
        pairing.approve(replies.codes[sender][0], provider=PROVIDER, actor="cli:bench")
        return time.perf_counter()

    async def probe(sender: str, instance: int, at: float) -> None:
        """Write to one instance until it echoes: when its gate had the approval."""
        sent: dict[str, float] = {}
        deadline = at + 2.0
        k = 0
        while time.perf_counter() < deadline:
            text = f"probe:{sender}:{instance}:{k}"
            sent[text] = time.perf_counter()
            with fake.balancer.pinned(instance):
                fake.dm(sender, text, name=stranger_name(sender))
            k += 1
            await asyncio.sleep(PROBE_EVERY)
            echoed = [s for t, s in sent.items() if t in replies.echoed_at]
            if echoed:
                gates.append(min(echoed) - at)
                return
        figures.gate_not_seen += 1

    for sender in chosen:
        began = time.perf_counter()
        committed[sender] = await asyncio.to_thread(approve, sender)
        await asyncio.sleep(max(0.0, began + APPROVAL_GAP - time.perf_counter()))
    await _until(lambda: all(s in replies.told for s in chosen), settings.drain)
    probes: list[asyncio.Task[None]] = []
    for sender in probed:
        began = time.perf_counter()
        at = committed[sender] = await asyncio.to_thread(approve, sender)
        probes += [asyncio.create_task(probe(sender, i, at)) for i in range(n)]
        await asyncio.sleep(max(0.0, began + APPROVAL_GAP - time.perf_counter()))
    await asyncio.gather(*probes)
    await _until(lambda: all(s in replies.told for s in chosen + probed), settings.drain)
    await asyncio.sleep(TOLD_GRACE)
    # Never told counts as never: it is the slowest, whatever the others took.
    told = [replies.told[s][0] - committed[s] if replies.told.get(s) else inf for s in chosen]
    figures.told_ms = [round(t * 1000, 1) for t in told]
    figures.approvals = len(chosen)
    figures.probed = len(probed)
    figures.told_p50_ms = percentile(told, 50) * 1000
    figures.told_p99_ms = percentile(told, 99) * 1000
    figures.told_max_ms = max(told, default=float("nan")) * 1000
    figures.told_twice = sum(1 for s in chosen + probed if len(replies.told.get(s, [])) > 1)
    figures.not_told = sum(1 for s in chosen + probed if not replies.told.get(s))
    figures.gate_p99_ms = percentile(gates, 99) * 1000
    after = {s: len(replies.codes.get(s, [])) - codes_before[s] for s in chosen + probed}
    figures.codes_after_approval = sum(after.values())
    return after


async def _until(condition: Any, within: float) -> bool:
    deadline = time.perf_counter() + within
    while not condition():
        if time.perf_counter() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


# --- the report -------------------------------------------------------------------------------


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def print_tables(rows: list[Figures]) -> None:
    cores = os.cpu_count() or 1
    print()
    header = (
        f"{'N':>2}  {'allowed msg/s':>13}  {'p50 ms':>7}  {'dup':>4}  {'lost':>4}  "
        f"{'CPU: pairbot':>12}  {'postgres':>8}  {'bench':>6}  {f'machine ({cores} cores)':>17}"
    )
    print(header)
    print("-" * len(header))
    for f in rows:
        print(
            f"{f.instances:>2}  {f.allowed_per_s:>13.0f}  {f.allowed_p50_ms:>7.1f}  "
            f"{f.allowed_duplicates:>4}  {f.allowed_lost:>4}  {f.cpu_instances:>11.0%}  "
            f"{f.cpu_postgres:>8.0%}  {f.cpu_bench:>6.0%}  {f.cpu_machine:>17.0%}"
        )
    print("(CPU as a share of one core, the machine's of all of them, during the allowed run)")
    print()
    header = (
        f"{'N':>2}  {'strangers/s':>11}  {'2 codes':>7}  {'no code':>7}  {'approvals':>9}  "
        f"{'told p50 ms':>11}  {'p99 ms':>7}  {'max ms':>7}  {'told 2x':>7}  {'not told':>8}  "
        f"{'gates p99 ms':>12}"
    )
    print(header)
    print("-" * len(header))
    for f in rows:
        print(
            f"{f.instances:>2}  {f.strangers_per_s:>11.0f}  {f.strangers_codes_twice:>7}  "
            f"{f.strangers_no_code:>7}  {f.approvals:>9}  {f.told_p50_ms:>11.1f}  "
            f"{f.told_p99_ms:>7.1f}  {f.told_max_ms:>7.1f}  {f.told_twice:>7}  "
            f"{f.not_told:>8}  {f.gate_p99_ms:>12.1f}"
        )
    print()
    for f in rows:
        print(
            f"N={f.instances}: {f.allowed_offered} allowed messages, {f.strangers_offered} "
            f"strangers, {f.webhook_posts} webhook POSTs ({f.webhook_refused} refused, "
            f"{f.redelivered} messages delivered twice on purpose), {f.owner_notices} owner "
            f"notices, {f.codes_after_approval} codes sent to senders already approved; sent by "
            f"each instance: {f.sent_by}, approvals told by each: {f.told_by}"
        )
        for problem in f.problems[:10]:
            print(f"    {problem}")
        if len(f.problems) > 10:
            print(f"    ... {len(f.problems) - 10} more error lines")


def report_targets(rows: list[Figures]) -> int:
    """Print a verdict per target; return 1 if any was missed."""
    missed = 0

    def verdict(name: str, ok: bool, detail: str) -> None:
        nonlocal missed
        missed += not ok
        print(f"  {'ok  ' if ok else 'MISS'} {name}: {detail}")

    print("targets:")
    for f in rows:
        at = f"N={f.instances}"
        verdict(
            f"{at} approval told <= {TOLD_P99_TARGET * 1000:.0f} ms p99",
            f.told_p99_ms <= TOLD_P99_TARGET * 1000 and f.not_told == 0,
            f"{f.told_p99_ms:.1f} ms ({f.approvals} approved, {f.not_told} never told)",
        )
        verdict(
            f"{at} each approved sender told once",
            f.told_twice == 0 and f.not_told == 0,
            f"{f.told_twice} told twice, {f.not_told} not told",
        )
        verdict(
            f"{at} every instance's gate saw each approval within 1 s",
            f.gate_not_seen == 0 and f.gate_p99_ms <= 1000,
            f"p99 {f.gate_p99_ms:.1f} ms ({f.probed} probed, {f.gate_not_seen} not seen)",
        )
        verdict(
            f"{at} each allowed message handled once",
            f.allowed_duplicates == 0 and f.allowed_lost == 0,
            f"{f.allowed_duplicates} duplicates, {f.allowed_lost} lost",
        )
        verdict(
            f"{at} each stranger one code",
            f.strangers_codes_twice == 0 and f.strangers_no_code == 0,
            f"{f.strangers_codes_twice} twice, {f.strangers_no_code} none",
        )
    curve = ", ".join(f"N={f.instances}: {f.allowed_per_s:.0f}/s" for f in rows)
    print(f"  (no target) allowed messages/s by instances: {curve}")
    return 1 if missed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", default="1,2,4", help="instance counts, e.g. 1,2,4")
    parser.add_argument("--seconds", type=float, default=None, help="allowed run (default 20)")
    parser.add_argument("--strangers", type=int, default=None, help="new senders (default 300)")
    parser.add_argument(
        "--approvals", type=int, default=None, help="approvals timed to told (default 100)"
    )
    parser.add_argument(
        "--probes", type=int, default=None, help="approvals whose gates are probed (default 20)"
    )
    parser.add_argument(
        "--redeliver",
        type=int,
        default=20,
        help="deliver every Nth message twice, to the next instance (0: never; default 20)",
    )
    parser.add_argument(
        "--late",
        type=float,
        default=12.0,
        help="seconds after which every other second delivery comes (0: all at once; "
        "default 12, past the 10 s an inbound claim lasts in flight)",
    )
    parser.add_argument(
        "--statuses",
        choices=["balanced", "to-sender"],
        default="balanced",
        help="where the status webhooks of a send go: round robin like the rest (default), "
        "or to the instance that sent it",
    )
    parser.add_argument("--dsn", default=DEFAULT_DSN, help=f"PostgreSQL (default {DEFAULT_DSN})")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 3 s, 40 strangers, 20 approvals, 5 probed, copies 4 s late",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--logs", type=Path, default=None, help="keep the instances' logs here")
    args = parser.parse_args(argv)
    quick = {"seconds": 3.0, "strangers": 40, "approvals": 20, "probes": 5}
    full = {"seconds": 20.0, "strangers": 300, "approvals": 100, "probes": 20}
    chosen = quick if args.quick else full

    def given(name: str) -> Any:
        value = getattr(args, name)
        return chosen[name] if value is None else value

    settings = Settings(
        instances=sorted({int(s) for s in args.instances.split(",") if s.strip()}),
        seconds=float(given("seconds")),
        strangers=int(given("strangers")),
        approvals=int(given("approvals")),
        probed=int(given("probes")),
        redeliver=args.redeliver,
        drain=10.0 if args.quick else DRAIN,
        late=4.0 if args.quick and args.late == parser.get_default("late") else args.late,
        statuses=args.statuses,
        dsn=args.dsn,
        logs=args.logs,
    )
    if settings.approvals + settings.probed > settings.strangers:
        parser.error("--approvals and --probes must not exceed --strangers (they approve them)")
    print(
        f"cluster benchmark: 1 PostgreSQL schema on {where_dsn(settings.dsn)}, WhatsApp fake "
        f"behind a round-robin balancer (statuses {settings.statuses}); {settings.seconds:g} s "
        f"of allowed messages, {settings.strangers} strangers, {settings.approvals} approvals "
        f"timed and {settings.probed} probed; every {settings.redeliver or 'no'}th message "
        f"delivered twice (half of them {settings.late:g} s late); {os.cpu_count()} cores; "
        f"load average before: {load()}"
    )
    rows: list[Figures] = []
    began = time.perf_counter()
    for n in settings.instances:
        with tempfile.TemporaryDirectory(prefix="pairbot-cluster-bench-") as raw:
            where = Path(raw)
            try:
                rows.append(asyncio.run(measure(settings, n, where)))
            finally:
                if settings.logs is not None:
                    settings.logs.mkdir(parents=True, exist_ok=True)
                    for log in where.glob("instance*.log"):
                        target = settings.logs / f"n{n}-{log.name}"
                        target.write_bytes(log.read_bytes())
        print(f"  N={n} done ({time.perf_counter() - began:.0f} s in all; load {load()})")
    print_tables(rows)
    print(f"load average after: {load()} (other work on the machine skews the figures)")
    missed = report_targets(rows)
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(f) for f in rows], indent=1))
    return missed


if __name__ == "__main__":
    raise SystemExit(main())
