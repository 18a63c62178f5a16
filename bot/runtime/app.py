"""The running bot: wires config, store, services, providers, gate, owner chat and scheduler.

``async with App(config, store=..., providers=..., state_dir=...) as app`` starts everything
(store → services → gateway → providers → scheduler → teller) and stops it in reverse, also
when start-up fails half-way. The gateway is up before any provider delivers a message, so an
owner's ``/nodes approve`` can always reach the waiting node.

The app names no concrete store or provider: the composition root (:mod:`bot.cli.compose`)
hands it a factory of each, called at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from bot.core import messages
from bot.core.clock import Clock, SystemClock
from bot.core.errors import PairbotError, StartupError, StoreError
from bot.core.gate import Decision, decide, owner_command_text
from bot.core.messages import NoticeKind
from bot.core.models import (
    Button,
    DmPolicy,
    Inbound,
    NodeAsk,
    NodeDecision,
    NodeVerdict,
    PendingRequest,
)
from bot.core.protocols import Provider, StateStore
from bot.core.text import remaining
from bot.gateway.guard import GuardSettings
from bot.gateway.server import Gateway, GatewaySettings
from bot.runtime.config import Config
from bot.runtime.handlers import Handler, build_handler
from bot.runtime.logs import RedactFilter, remember_secret
from bot.runtime.scheduler import PruneScheduler
from bot.services.nodes import NodeService, NodeSettings
from bot.services.owner import OwnerCommands, OwnerReply
from bot.services.pairing import PairingService, PairingSettings

log = logging.getLogger(__name__)

STALE_STRANGER = timedelta(minutes=5)
"""A stranger's message older than this when it arrives (a backlog) creates no request."""
STRANGER_QUEUE = 1000
"""Strangers' messages waiting per platform; beyond that they are dropped (and counted)."""
NOTICE_GIVE_UP = timedelta(days=7)
"""An approved sender who could not be told within this long is no longer tried."""
BUTTON_MEMORY = 10_000
"""Owner notices with buttons remembered, to tell a stale press from a guess."""


class OwnerNotifier:
    """Sends notices to every owner chat, at most ``limit`` per ``window``; folds the rest.

    Notices beyond the limit are counted by what they tell of (a pairing request, a node
    request, strangers turned away; per platform) and sent as one digest when the window frees
    up, so a flood of strangers becomes one message that says what happened, not a wall of
    prompts to approve. Urgent notices (a state file gone bad) are never folded.
    """

    def __init__(
        self,
        send: Callable[[str, Sequence[Button]], Awaitable[None]],
        *,
        clock: Clock,
        limit: int = 5,
        window: timedelta = timedelta(minutes=1),
    ) -> None:
        self._send = send
        self._clock = clock
        self._limit = limit
        self._window = window
        self._sent: deque[datetime] = deque()
        self._folded: Counter[tuple[NoticeKind, str]] = Counter()
        self._flush_task: asyncio.Task[None] | None = None

    async def notify(
        self,
        text: str,
        buttons: Sequence[Button] = (),
        *,
        kind: NoticeKind,
        provider: str = "",
        count: int = 1,
    ) -> None:
        """Send a notice now if the rate allows, else count it (``count`` of ``kind`` on
        ``provider``) into the next digest."""
        now = self._clock.now()
        while self._sent and now - self._sent[0] >= self._window:
            self._sent.popleft()
        if kind is NoticeKind.URGENT or (len(self._sent) < self._limit and not self._folded):
            self._sent.append(now)
            await self._send(text, buttons)
            return
        self._folded[(kind, provider)] += count
        if self._flush_task is None or self._flush_task.done():
            wait = (self._sent[0] + self._window - now).total_seconds() if self._sent else 0
            self._flush_task = asyncio.create_task(self._flush_after(max(wait, 0.0)))

    async def _flush_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        folded, self._folded = self._folded, Counter()
        if folded:
            self._sent.append(self._clock.now())
            await self._send(messages.owner_digest(folded), ())

    async def aclose(self) -> None:
        """Cancel a pending digest."""
        if self._flush_task is not None:
            self._flush_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flush_task


class App:
    """pairbot, running."""

    def __init__(
        self,
        config: Config,
        *,
        store: Callable[[], StateStore],
        providers: Callable[[], Mapping[str, Provider]],
        state_dir: Path,
        clock: Clock | None = None,
        notice_limit: int = 5,
        notice_window: timedelta = timedelta(minutes=1),
        watch_interval: float = 0.5,
        capped_delay: float = 5.0,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self._open_store = store
        self._build_providers = providers
        self.state_dir = state_dir
        """Where the gateway's local operator socket lives (the state dir)."""
        self._notice_limit = notice_limit
        self._notice_window = notice_window
        self._watch_interval = watch_interval
        self._capped_delay = capped_delay
        self._owners = {(o.provider, o.user_id) for o in config.owners}
        self._policies: dict[str, DmPolicy] = {}
        self.providers: dict[str, Provider] = {}
        self._capped_tasks: dict[str, asyncio.Task[None]] = {}
        self._strangers: dict[str, asyncio.Queue[Inbound]] = {}
        self._stranger_workers: dict[str, asyncio.Task[None]] = {}
        self._buttons: OrderedDict[tuple[str, str, str], frozenset[str]] = OrderedDict()
        """(provider, chat, message) of each owner notice with buttons → their commands."""
        self._notice_retry: dict[tuple[str, str], tuple[int, datetime]] = {}
        """(provider, sender) → (failed sends, not before) for approved senders not told."""
        self._telling = asyncio.Lock()
        self._stack = contextlib.AsyncExitStack()
        self._stopped = asyncio.Event()

    # --- lifecycle -------------------------------------------------------------------------

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
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        cfg = self.config
        self.store: StateStore = await asyncio.to_thread(self._open_store)
        self._stack.callback(self.store.close)
        await asyncio.to_thread(self.store.check)  # a bad file refuses the start, unchanged
        for ok, message in await asyncio.to_thread(self.store.access_report):
            if not ok:
                log.warning("state is too open: %s (run `pairbot doctor`)", message)
        self.pairing = PairingService(
            self.store,
            clock=self.clock,
            static_allow=cfg.static_allow(),
            settings=PairingSettings(
                pending_ttl=cfg.pairing.pending_ttl,
                resend_after=cfg.pairing.resend_after,
                max_pending_per_provider=cfg.pairing.max_pending_per_provider,
            ),
        )
        for pending in await asyncio.to_thread(self.pairing.pending):
            remember_secret(pending.code)  # codes issued before this start are secrets too
        self.nodes = NodeService(
            self.store, clock=self.clock, settings=NodeSettings(**cfg.nodes.model_dump())
        )
        self.owner = OwnerCommands(self.pairing, self.nodes, clock=self.clock)
        self.notifier = OwnerNotifier(
            self._send_to_owners,
            clock=self.clock,
            limit=self._notice_limit,
            window=self._notice_window,
        )
        self._stack.push_async_callback(self.notifier.aclose)
        self.handler: Handler = build_handler(cfg.handler, self._forward_to_owners)
        self._stack.push_async_callback(self.handler.aclose)

        self.gateway: Gateway | None = None
        if cfg.gateway.enabled:
            gateway = Gateway(
                self.nodes,
                clock=self.clock,
                settings=GatewaySettings(
                    host=cfg.gateway.host,
                    port=cfg.gateway.port,
                    operator_token=cfg.gateway.operator_token,
                    socket_dir=self.state_dir,
                    idle_timeout=cfg.gateway.idle_timeout.total_seconds(),
                    guard=GuardSettings(
                        max_connections=cfg.gateway.max_connections,
                        max_per_address=cfg.gateway.max_connections_per_address,
                        handshake_timeout=cfg.gateway.handshake_timeout.total_seconds(),
                    ),
                ),
                on_request=self.notice_node_request,
                on_secret=remember_secret,
            )
            try:
                await gateway.start()
            except OSError as exc:
                await gateway.stop()
                raise StartupError.cannot_listen(cfg.gateway.host, cfg.gateway.port, exc) from exc
            self._stack.push_async_callback(gateway.stop)
            self.gateway = gateway
        providers = self._build_providers()
        # Runs after every provider has stopped (the stack unwinds in reverse): no message
        # can arrive for a stranger worker that is gone.
        self._stack.push_async_callback(self._stop_stranger_workers)
        for name, provider in providers.items():
            block = getattr(cfg.providers, name, None)
            self._policies[name] = block.dm_policy if block is not None else DmPolicy.PAIRING
            try:
                await provider.start(self.on_inbound)
            except PairbotError:
                raise
            except Exception as exc:
                raise StartupError.cannot_start(
                    name, exc, redact=RedactFilter(cfg.secrets()).redact
                ) from exc
            self.providers[name] = provider
            self._stack.push_async_callback(provider.stop)
        self.scheduler = PruneScheduler(self.prune, interval=cfg.pairing.prune_interval)
        await self.scheduler.start()
        self._stack.push_async_callback(self.scheduler.stop)
        teller = asyncio.create_task(self._tell_approved_forever(), name="pairbot-tell")
        self._stack.push_async_callback(_cancel, teller)
        log.info(
            "pairbot running: providers=%s state_dir=%s", ",".join(self.providers), self.state_dir
        )

    async def stop(self) -> None:
        """Stop in reverse order of start (providers finish the update in hand first)."""
        for task in self._capped_tasks.values():
            task.cancel()
        await self._stack.aclose()
        self._stopped.set()

    # --- inbound -----------------------------------------------------------------------------

    async def on_inbound(self, msg: Inbound) -> None:
        """Handle one inbound message or button press; never raises into the provider.

        A stranger's message is handed to that platform's stranger worker, so no stranger's
        traffic delays an allowed sender or the owner; a repeat from a stranger already
        pending and not due a reminder is settled in memory, without touching the store.
        """
        await self._guarded(msg, self._on_inbound)

    async def _guarded(self, msg: Inbound, handle: Callable[[Inbound], Awaitable[None]]) -> None:
        try:
            await handle(msg)
        except StoreError as exc:  # refused closed: no code sent, nothing granted
            log.error("refused a %s message from %s: %s", msg.provider, msg.sender_id, exc)
            await self._track_bad_state(exc)
        except Exception:
            log.exception("failed to handle a %s message from %s", msg.provider, msg.sender_id)
        else:
            if self._bad_state_files:
                await self._track_bad_state(None)

    async def _on_inbound(self, msg: Inbound) -> None:
        is_owner = (msg.provider, msg.sender_id) in self._owners
        policy = self._policies.get(msg.provider, DmPolicy.PAIRING)
        allowed = False
        if not is_owner and policy in (DmPolicy.PAIRING, DmPolicy.ALLOWLIST):
            allowed = self.pairing.is_allowed(msg.provider, msg.sender_id)
        provider = self.providers.get(msg.provider)
        bare = bool(getattr(provider, "bare_commands", False))
        decision = decide(
            msg, policy=policy, is_owner=is_owner, is_allowed=allowed, bare_commands=bare
        )
        log.debug("decision=%s provider=%s sender=%s", decision, msg.provider, msg.sender_id)
        if decision is Decision.OWNER_COMMAND:
            await self._owner_command(msg)
        elif decision is Decision.FORWARD:
            reply = await self.handler(msg)
            if reply:
                await self.providers[msg.provider].send(msg.chat_id, reply)
        elif decision is Decision.CHALLENGE:
            if msg.sent_at is not None and self.clock.now() - msg.sent_at > STALE_STRANGER:
                # Platforms keep undelivered messages (Telegram: 24 h); a backlog of old
                # stranger messages after downtime gets no codes and no owner notices.
                log.info(
                    "ignored a stale message from stranger %s on %s", msg.sender_id, msg.provider
                )
                return
            if self.pairing.settled_in_memory(
                msg.provider, msg.sender_id, self._stranger_meta(msg)
            ):
                return
            self._queue_stranger(msg)

    def _queue_stranger(self, msg: Inbound) -> None:
        queue = self._strangers.get(msg.provider)
        if queue is None:
            queue = self._strangers[msg.provider] = asyncio.Queue(STRANGER_QUEUE)
            self._stranger_workers[msg.provider] = asyncio.create_task(
                self._stranger_worker(queue), name=f"pairbot-strangers-{msg.provider}"
            )
        try:
            queue.put_nowait(msg)
        except asyncio.QueueFull:
            self._dropped_strangers += 1
            if self._dropped_strangers in (1, 10, 100) or self._dropped_strangers % 1000 == 0:
                log.warning(
                    "%s: %d stranger messages dropped so far: more than %d waited "
                    "(a flood); allowed senders are not affected",
                    msg.provider,
                    self._dropped_strangers,
                    STRANGER_QUEUE,
                )

    _dropped_strangers = 0

    async def _stranger_worker(self, queue: asyncio.Queue[Inbound]) -> None:
        """One platform's strangers, in the order they wrote, off the providers' path."""
        while True:
            msg = await queue.get()
            try:
                await self._guarded(msg, self._challenge)
            finally:
                queue.task_done()

    async def _stop_stranger_workers(self) -> None:
        for task in self._stranger_workers.values():
            task.cancel()
        for task in self._stranger_workers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._stranger_workers.clear()
        self._strangers.clear()

    async def strangers_settled(self) -> None:
        """Wait until every stranger message received so far has been handled (tests)."""
        for queue in list(self._strangers.values()):
            await queue.join()

    @staticmethod
    def _stranger_meta(msg: Inbound) -> dict[str, str]:
        meta = dict(msg.meta)
        if msg.chat_id != msg.sender_id:
            meta["chatId"] = msg.chat_id
        return meta

    async def _challenge(self, msg: Inbound) -> None:
        result = await asyncio.to_thread(
            self.pairing.request, msg.provider, msg.sender_id, self._stranger_meta(msg)
        )
        req = result.request
        if req is not None:
            remember_secret(req.code)  # before any SDK logs the reply that carries it
        if result.send_code and req is not None:
            left = remaining(req.expires_at(self.pairing.settings.pending_ttl) - self.clock.now())
            await self.providers[msg.provider].send(
                msg.chat_id, messages.stranger_code(req, valid_for=left)
            )
        if result.outcome == "created" and req is not None:
            await self._notice_request(req)
        elif result.outcome == "capped":
            self._schedule_capped_notice(msg.provider)

    async def _notice_request(self, req: PendingRequest) -> None:
        expires = remaining(req.expires_at(self.pairing.settings.pending_ttl) - self.clock.now())
        buttons = (
            Button(label="Approve", command=f"/approve {req.code}"),
            Button(label="Reject", command=f"/reject {req.code}"),
        )
        await self.notifier.notify(
            messages.owner_notice(req, expires_in=expires),
            buttons,
            kind=NoticeKind.PAIRING_REQUEST,
            provider=req.provider,
        )

    async def notice_node_request(self, ask: NodeAsk) -> None:
        """Tell the owner a node asks to join, with Approve / Reject buttons."""
        req = ask.request
        expires = remaining(req.expires_at(self.nodes.settings.pending_ttl) - self.clock.now())
        buttons = (
            Button(label="Approve", command=f"/nodes approve {req.request_id}"),
            Button(label="Reject", command=f"/nodes reject {req.request_id}"),
        )
        await self.notifier.notify(
            messages.node_notice(req, expires_in=expires, conflicts=ask.conflicts),
            buttons,
            kind=NoticeKind.NODE_REQUEST,
        )

    def _schedule_capped_notice(self, provider: str) -> None:
        task = self._capped_tasks.get(provider)
        if task is None or task.done():
            self._capped_tasks[provider] = asyncio.create_task(self._capped_notice(provider))

    async def _capped_notice(self, provider: str) -> None:
        await asyncio.sleep(self._capped_delay)
        count = self.pairing.take_capped(provider)
        if count:
            cap = self.pairing.settings.max_pending_per_provider
            await self.notifier.notify(
                messages.owner_capped(provider, count, cap),
                kind=NoticeKind.TURNED_AWAY,
                provider=provider,
                count=count,
            )

    async def _owner_command(self, msg: Inbound) -> None:
        actor = f"owner:{msg.provider}:{msg.sender_id}"
        provider = self.providers[msg.provider]
        line = owner_command_text(msg.text, bare_commands=provider.bare_commands) or msg.text
        # A press on one of our own notices, with the command that notice carried: a stale
        # press is "already handled", not a wrong code (a guess cannot name a real notice).
        pressed = bool(
            msg.is_button
            and msg.message_id
            and " ".join(line.split())
            in self._buttons.get((msg.provider, msg.chat_id, msg.message_id), ())
        )
        reply = await asyncio.to_thread(self.owner.run, line, actor=actor, pressed=pressed)
        text = reply.text
        if reply.approved is not None:
            await self._tell_approved()
        if reply.node_approved is not None or reply.node_rejected or reply.node_revoked:
            text = await self._node_effects(reply) or text
        if provider.bare_commands:
            text = messages.without_slashes(text)
        if msg.is_button and msg.message_id:
            if reply.failure in ("unknown", "handled"):
                text = messages.already_handled()
            await provider.edit(msg.chat_id, msg.message_id, text)
        else:
            await provider.send(msg.chat_id, text)

    async def _node_effects(self, reply: OwnerReply) -> str | None:
        """Carry an owner's node decision to the asker over the gateway."""
        gateway = self.gateway
        if reply.node_approved is not None:
            approval = reply.node_approved
            delivered = await gateway.deliver_approval(approval) if gateway is not None else False
            return messages.node_approved(approval.node, delivered=delivered)
        if gateway is None:
            return None
        if reply.node_rejected is not None:
            await gateway.deliver(
                NodeDecision.on_request(reply.node_rejected, NodeVerdict.REJECTED)
            )
        if reply.node_revoked is not None:
            await gateway.deliver(NodeDecision.revocation(reply.node_revoked.node_id))
        return None

    # --- telling approved senders (once, whoever approved them, whenever) --------------------

    async def _tell_approved_forever(self) -> None:
        """Tell senders approved by anyone (the owner chat, the CLI, while the bot was down)."""
        while True:
            try:
                await self._tell_approved()
            except StoreError as exc:
                log.error("could not read the approved senders to tell: %s", exc)
            except Exception:
                log.exception("telling approved senders failed")
            await asyncio.sleep(self._watch_interval)

    async def _tell_approved(self) -> None:
        """Send "you're approved" to each approved sender not yet told, on the platforms this
        process runs, then forget the notice. A send that fails is retried with a growing
        pause; after :data:`NOTICE_GIVE_UP` the notice is dropped with a warning."""
        async with self._telling:
            notices = await asyncio.to_thread(self.pairing.notices)
            now = self.clock.now()
            for notice in notices:
                provider = self.providers.get(notice.provider)
                key = (notice.provider, notice.sender_id)
                retry = self._notice_retry.get(key)
                if provider is None or (retry is not None and now < retry[1]):
                    continue
                if now - notice.approved_at > NOTICE_GIVE_UP:
                    log.warning(
                        "gave up telling %s sender %s they were approved: not reachable for %s",
                        notice.provider,
                        notice.sender_id,
                        NOTICE_GIVE_UP,
                    )
                elif not await self._tell_one(provider, notice.chat_id, notice.sender_id):
                    failures = retry[0] + 1 if retry is not None else 1
                    pause = min(timedelta(seconds=2**failures), timedelta(minutes=10))
                    self._notice_retry[key] = (failures, now + pause)
                    continue
                self._notice_retry.pop(key, None)
                await asyncio.to_thread(
                    self.pairing.notice_sent, notice.provider, notice.sender_id
                )

    async def _tell_one(self, provider: Provider, chat_id: str | None, sender_id: str) -> bool:
        try:
            await provider.send(
                chat_id or await provider.dm_chat_id(sender_id), messages.approved_sender()
            )
        except Exception:
            log.warning(
                "could not tell %s sender %s they were approved (will retry)",
                provider.name,
                sender_id,
            )
            return False
        return True

    # --- scheduled work ----------------------------------------------------------------------

    async def prune(self) -> None:
        """Drop expired DM and node requests (audited); tell waiting nodes theirs expired."""
        await asyncio.to_thread(self.pairing.prune)
        expired = await asyncio.to_thread(self.nodes.prune)
        if self.gateway is not None:
            for req in expired:
                await self.gateway.deliver(NodeDecision.on_request(req, NodeVerdict.EXPIRED))

    # --- owner chat ----------------------------------------------------------------------------

    async def _send_to_owners(self, text: str, buttons: Sequence[Button] = ()) -> None:
        for provider_name, user_id in sorted(self._owners):
            provider = self.providers.get(provider_name)
            if provider is None:
                continue
            shown = messages.without_slashes(text) if provider.bare_commands else text
            try:
                chat_id = await provider.dm_chat_id(user_id)
                message_id = await provider.send(chat_id, shown, buttons=buttons)
            except Exception:
                log.warning("could not reach owner %s on %s", user_id, provider_name)
                continue
            if buttons and message_id:
                self._buttons[(provider_name, chat_id, message_id)] = frozenset(
                    " ".join(b.command.split()) for b in buttons
                )
                while len(self._buttons) > BUTTON_MEMORY:
                    self._buttons.popitem(last=False)

    async def _forward_to_owners(self, text: str) -> None:
        await self._send_to_owners(text)

    async def wait_stopped(self) -> None:
        """Wait until :meth:`stop` has run."""
        await self._stopped.wait()

    # --- state files that go bad while running ------------------------------------------------

    _bad_state_files: frozenset[Path] = frozenset()
    """State files found unusable while running, whose owners were told (replaced, not mutated)."""

    async def _track_bad_state(self, exc: StoreError | None) -> None:
        """Tell the owners once about a state file that went bad; forget files good again.

        A file counts as bad only if it still fails to load now: a failed write or a busy lock
        is not a bad file. It is reported again only once it was seen good in between.
        """
        unusable = self.store.recheck
        path = exc.path if exc is not None else None
        if path is not None and path not in self._bad_state_files:
            self._bad_state_files |= {path}  # before any await: concurrent messages tell once
            if await asyncio.to_thread(unusable, path):
                await self.notifier.notify(
                    messages.state_file_unusable(str(exc)), kind=NoticeKind.URGENT
                )
            else:
                self._bad_state_files -= {path}
        for other in self._bad_state_files - {path}:
            if not await asyncio.to_thread(unusable, other):
                self._bad_state_files -= {other}


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


__all__ = ["App", "OwnerNotifier"]
