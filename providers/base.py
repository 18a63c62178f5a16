"""The provider base: what every chat connector does the same way, written once.

A platform subclasses :class:`BaseProvider` and writes only what is its own: the SDK wiring
(the hooks :meth:`~BaseProvider._connect`, :meth:`~BaseProvider._stop_receiving`,
:meth:`~BaseProvider._disconnect`, :meth:`~BaseProvider._send_text`), turning its events into
:class:`~bot.core.models.Inbound` values, the key it deduplicates re-delivered events by, its
auth, its buttons, and its limits, declared as class attributes. In return it gets:

* **Lifecycle**: ``start``/``stop``, start again after stop, one :class:`State` instead of
  flags; ``stop`` is idempotent and waits for a start or stop in progress, and a start that
  fails runs the same teardown.
* **Taking turns**: a platform that hands each event to one consumer only (Telegram's
  getUpdates, Discord's gateway, signal-cli's event stream) says so
  (:attr:`~BaseProvider.one_consumer`); such a provider can run for sending alone
  (``start(..., receive=False)``) and begin and end receiving while it runs
  (:meth:`~BaseProvider.start_receiving`, :meth:`~BaseProvider.stop_receiving`), so that
  several instances of pairbot take turns on it and all of them send.
* **One ordered inbound worker**: :meth:`~BaseProvider._enqueue` takes an ``Inbound`` (or a
  :data:`Convert`, for a conversion that needs the network) and one task hands them to the
  callback in order. A failing callback is logged (never the text) and the next item taken;
  ``stop`` lets accepted items be handled for :attr:`~BaseProvider.drain_timeout` seconds,
  then drops the rest with a warning.
* **Dedupe**: :meth:`~BaseProvider._first_time` over one bounded LRU (:class:`Dedupe`,
  :attr:`~BaseProvider.dedupe_size` keys), kept across a stop and start.
* **Retry**: :meth:`~BaseProvider._retrying`, the loop of :mod:`providers.retry`, whose
  pauses end when the provider stops.
* **Limits and text**: ``send`` checks :attr:`~BaseProvider.button_limits`, cuts the text by
  :attr:`~BaseProvider.text_split` (:mod:`providers.limits`) and puts the buttons under the
  last part. A platform without buttons (``button_limits = None``) drops them: every text
  offering buttons spells out the command.
* **Errors**: :class:`~bot.core.errors.ProviderStateError` and
  :class:`~bot.core.errors.ButtonError`, both :class:`~bot.core.errors.ProviderError`.

Webhook platforms bind their server with :class:`providers.webhook.WebhookServer`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from abc import ABC, abstractmethod
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import ClassVar, TypeVar, cast

from bot.core.errors import (
    ButtonError,
    ConfigError,
    ProviderError,
    ProviderStateError,
    RecipientUnreachable,
)
from bot.core.models import Button, Inbound, SendFailure
from bot.core.protocols import OnInbound
from providers.limits import ButtonLimits, TextSplit
from providers.retry import GiveUp, RetryPolicy, retrying

_T = TypeVar("_T")

Convert = Callable[[], Awaitable[Inbound | None]]
"""A conversion the worker runs in order (it may call the platform); None: nothing to hand on."""

_STOP = object()  # the worker's end-of-queue mark


def need(name: str, resource: _T | None) -> _T:
    """``resource`` (a client, a session) if the provider ``name`` holds it, which it does
    while it runs; else :class:`~bot.core.errors.ProviderStateError`."""
    if resource is None:
        raise ProviderStateError(f"{name}: provider is not running")
    return resource


class State(enum.Enum):
    """Where a provider is in its lifecycle."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"


class Dedupe:
    """The last ``size`` keys seen, oldest forgotten first."""

    def __init__(self, size: int) -> None:
        self._keys: OrderedDict[Hashable, None] = OrderedDict()
        self._size = max(1, size)

    def first_time(self, *keys: Hashable) -> bool:
        """Remember ``keys``; False if any was seen before. Empty keys (``""``, None) are
        skipped: an event without an id cannot be recognised again."""
        known = [key for key in keys if key not in ("", None)]
        if any(key in self._keys for key in known):
            return False
        for key in known:
            self._keys[key] = None
        while len(self._keys) > self._size:
            self._keys.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._keys


class BaseProvider(ABC):
    """The mechanics every provider shares; a platform subclass adds what is its own.

    Subclasses implement :meth:`_connect`, :meth:`_disconnect` and :meth:`_send_text`; they
    may override :meth:`_listen`, :meth:`_stop_receiving`, :meth:`_received`,
    :meth:`_outgoing`, :meth:`edit` and :meth:`dm_chat_id`, and set the class attributes
    below. The callback given to :meth:`start` must not call :meth:`stop` (stop waits for it).

    Args:
        name: the provider name carried by every :class:`~bot.core.models.Inbound`.
        dedupe_size: this instance's :attr:`dedupe_size`, if its config sets one.
        drain_timeout: this instance's :attr:`drain_timeout`, if its config sets one.
    """

    platform: ClassVar[str]
    """The platform's name as people write it (``Telegram``), for errors."""
    one_consumer: bool = False
    """True where the platform hands each event to one consumer only, and two would steal
    events from each other or both get them (Telegram's getUpdates, Discord's gateway,
    signal-cli's event stream): instances of pairbot on one state then receive on it one at
    a time (the runtime's lease), and the others start it with ``receive=False``, to send.
    False where every instance may receive (webhooks, Slack's Socket Mode)."""
    bare_commands: bool = False
    """See :class:`~bot.core.protocols.Provider`: True where clients eat a leading ``/``."""
    button_limits: ClassVar[ButtonLimits | None] = None
    """What the platform accepts as buttons; None: it has none and they are dropped."""
    text_split: ClassVar[TextSplit | None] = None
    """How :meth:`send` cuts a long text into messages; None: it is sent whole."""
    dedupe_size: ClassVar[int] = 10_000
    """How many keys :meth:`_first_time` remembers."""
    drain_timeout: float = 5.0
    """Seconds :meth:`stop` lets accepted items be handled before dropping the rest."""
    send_retry: RetryPolicy = RetryPolicy()
    """The policy of :meth:`_retrying` unless it is given one."""

    def __init__(
        self, *, name: str, dedupe_size: int | None = None, drain_timeout: float | None = None
    ) -> None:
        self.name = name
        if drain_timeout is not None:
            self.drain_timeout = drain_timeout
        self._log = logging.getLogger(type(self).__module__)
        self._state = State.STOPPED
        self._lock = asyncio.Lock()
        self._on_inbound: OnInbound | None = None
        self._queue: asyncio.Queue[object] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._receiving = False
        self._unhandled = 0
        self._stopping = asyncio.Event()
        self._seen = Dedupe(self.dedupe_size if dedupe_size is None else dedupe_size)
        self.send_failures: Counter[SendFailure] = Counter()
        """Sends that failed, by why (:func:`send_failure`): what the metrics count."""

    @property
    def state(self) -> State:
        """Where the provider is in its lifecycle."""
        return self._state

    @property
    def running(self) -> bool:
        """Whether :meth:`start` has returned and :meth:`stop` has not begun."""
        return self._state is State.RUNNING

    @property
    def receiving(self) -> bool:
        """Whether events are taken: from the start of receiving (:meth:`start`,
        :meth:`start_receiving`) until it stops (:meth:`stop_receiving`, :meth:`stop`)."""
        return self._receiving

    # -- hooks -------------------------------------------------------------------------------

    @abstractmethod
    async def _connect(self) -> None:
        """Connect and return once events flow (the worker already runs: what arrives is
        queued). Raise to fail :meth:`start`; :meth:`_stop_receiving` and
        :meth:`_disconnect` then run, so both must cope with a half-made connection.

        A provider that overrides :meth:`_listen` (a :attr:`one_consumer` one) connects here
        only for sending (checking its credentials), and receives in :meth:`_listen`."""

    async def _listen(self) -> None:  # noqa: B027 (an optional hook)
        """Begin receiving on a connection :meth:`_connect` made; return once events flow
        (the worker already runs). Raise to fail the start of receiving: :meth:`_stop_receiving`
        and :meth:`_received` then run. Here nothing: :meth:`_connect` receives."""

    async def _stop_receiving(self) -> None:  # noqa: B027 (an optional hook)
        """Take no new events; what the platform still hands over meanwhile is queued."""

    async def _received(self) -> None:  # noqa: B027 (an optional hook)
        """Receiving has ended and the accepted items were handled (or dropped): confirm
        what was handled to the platform, close what only receiving needed. The provider
        may still send afterwards (:meth:`stop_receiving`), or disconnect."""

    @abstractmethod
    async def _disconnect(self) -> None:
        """Release everything :meth:`_connect` made; runs after the accepted items drained."""

    @abstractmethod
    async def _send_text(self, chat_id: str, text: str, buttons: Sequence[Button]) -> str:
        """Send one message (``text`` fits, ``buttons`` were checked); return its id."""

    def _outgoing(self, text: str) -> str:
        """``text`` as the platform must receive it (escaped), before it is split."""
        return text

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, on_inbound: OnInbound, *, receive: bool = True) -> None:
        """Connect and begin handing inbound messages to ``on_inbound``; return once running.

        With ``receive=False`` (a :attr:`one_consumer` provider whose events another instance
        takes), connect for sending only: :meth:`start_receiving` begins receiving later.

        Raises:
            ProviderStateError: the provider is already running.
            ConfigError: the platform refused the credentials or settings.
        """
        async with self._lock:
            if self._state is not State.STOPPED:
                raise ProviderStateError(f"{self.name}: provider is already running")
            self._state = State.STARTING
            self._on_inbound = on_inbound
            self._stopping = asyncio.Event()
            try:
                if receive:
                    self._begin_worker()
                await self._connect()
                if receive:
                    await self._listen()
            except BaseException:
                await self._shut(drain=False)
                raise
            self._state = State.RUNNING

    async def start_receiving(self) -> None:
        """Begin receiving on a provider started with ``receive=False``; return once events
        flow. Nothing if it receives already. A failure leaves it sending, not receiving.

        Raises:
            ProviderStateError: the provider is not running.
        """
        async with self._lock:
            if self._state is not State.RUNNING:
                raise ProviderStateError(f"{self.name}: provider is not running")
            if self._receiving:
                return
            self._begin_worker()
            try:
                await self._listen()
            except BaseException:
                await self._end_receiving(drain=False)
                raise
        self._log.info("%s: receiving", self.name)

    async def stop_receiving(self) -> None:
        """Stop receiving, let accepted items be handled (within :attr:`drain_timeout`), and
        go on sending. Nothing if it does not receive."""
        async with self._lock:
            if self._state is not State.RUNNING or not self._receiving:
                return
            await self._end_receiving(drain=True)
        self._log.info("%s: stopped receiving (still sending)", self.name)

    async def stop(self) -> None:
        """Stop receiving, let accepted items be handled (within :attr:`drain_timeout`), and
        close every connection. Safe to call twice, before a start, or during one."""
        async with self._lock:
            if self._state is not State.RUNNING:
                return
            self._state = State.STOPPING
            await self._shut(drain=True)
        self._log.info("%s: stopped", self.name)

    async def _shut(self, *, drain: bool) -> None:
        try:
            await self._end_receiving(drain=drain)
        finally:
            self._stopping.set()  # a send still retrying gives up now
            try:
                await self._disconnect()
            finally:
                self._on_inbound = None
                self._state = State.STOPPED

    def _begin_worker(self) -> None:
        self._receiving = True
        self._queue = queue = asyncio.Queue[object]()
        self._worker = asyncio.create_task(self._work(queue), name=f"{self.name}-inbound")

    async def _end_receiving(self, *, drain: bool) -> None:
        try:
            try:
                await self._stop_receiving()
            finally:
                await self._end_worker(drain=drain)
        finally:
            self._receiving = False
            await self._received()

    async def _end_worker(self, *, drain: bool) -> None:
        queue, worker = self._queue, self._worker
        self._queue = self._worker = None
        if queue is None or worker is None:
            return
        queue.put_nowait(_STOP)
        if drain:
            try:
                await asyncio.wait_for(asyncio.shield(worker), self.drain_timeout)
            except TimeoutError:  # the worker is still in one item: cancelled below
                self._log.warning(
                    "%s: stopped with %d accepted message(s) not handled after %.0f s; "
                    "the one in hand was cancelled",
                    self.name,
                    self._unhandled - 1,
                    self.drain_timeout,
                )
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        self._unhandled = 0

    # -- inbound -----------------------------------------------------------------------------

    def _enqueue(self, item: Inbound | Convert) -> bool:
        """Queue an ``Inbound`` (or a conversion making one) for the callback, in order.

        False, and nothing queued, once the provider takes no events: stopped, or stopping
        and past :meth:`_stop_receiving`.
        """
        if self._queue is None:
            return False
        self._queue.put_nowait(item)
        self._unhandled += 1
        return True

    def _first_time(self, *keys: Hashable) -> bool:
        """Remember the keys of an event; False (a re-delivery, logged) if any was seen."""
        if self._seen.first_time(*keys):
            return True
        self._log.debug("%s: dropped a re-delivered event", self.name)
        return False

    async def _work(self, queue: asyncio.Queue[object]) -> None:
        while (item := await queue.get()) is not _STOP:
            try:
                if isinstance(item, Inbound):
                    await self._deliver(item)
                elif (inbound := await cast(Convert, item)()) is not None:
                    await self._deliver(inbound)
            except Exception:
                self._log.exception("%s: reading an event failed", self.name)
            finally:
                self._unhandled -= 1

    async def _deliver(self, inbound: Inbound) -> None:
        """Hand one inbound to the callback; a failure is logged, without the text."""
        callback = self._on_inbound
        if callback is None:
            return
        try:
            await callback(inbound)
        except Exception:
            self._log.exception(
                "%s: handling message %s from %s failed",
                self.name,
                inbound.message_id or "(no id)",
                inbound.sender_id,
            )

    # -- outbound ----------------------------------------------------------------------------

    async def send(self, chat_id: str, text: str, *, buttons: Sequence[Button] = ()) -> str:
        """Send plain ``text`` (split by :attr:`text_split`, buttons under the last part);
        return the id of the last message.

        Raises:
            ButtonError: the platform cannot show these buttons (nothing was sent).
            ProviderStateError: the provider is not running.
            ProviderError: the platform refused the message (an SDK may raise its own).
        """
        try:
            if self.button_limits is None:
                buttons = ()
            else:
                self.button_limits.check(self.platform, buttons)
            text = self._outgoing(text)
            parts = [text] if self.text_split is None else self.text_split.split(text)
            message_id = ""
            for index, part in enumerate(parts):
                last = index == len(parts) - 1
                message_id = await self._send_text(chat_id, part, buttons if last else ())
        except Exception as exc:
            self.send_failures[send_failure(exc)] += 1
            raise
        return message_id

    async def edit(self, chat_id: str, message_id: str, text: str) -> None:
        """Replace a sent message's text; here (a platform that cannot edit) send it anew."""
        del message_id
        await self.send(chat_id, text)

    async def dm_chat_id(self, user_id: str) -> str:
        """The one-to-one chat with ``user_id``; here, as on most platforms, the user id."""
        return user_id

    async def _retrying(
        self,
        attempt: Callable[[], Awaitable[_T]],
        *,
        what: str,
        policy: RetryPolicy | None = None,
        give_up: GiveUp | None = None,
        proof: asyncio.Future[_T] | None = None,
    ) -> _T:
        """:func:`providers.retry.retrying` with :attr:`send_retry`, this provider's log, and
        pauses that end when it stops."""
        return await retrying(
            attempt,
            policy=policy or self.send_retry,
            what=f"{self.name}: {what}",
            log=self._log,
            stopping=self._stopping,
            give_up=give_up,
            proof=proof,
        )

    # -- helpers -----------------------------------------------------------------------------

    def _need(self, resource: _T | None) -> _T:
        """``resource`` (a client, a session) if the provider holds it, else the error."""
        return need(self.name, resource)

    def _required(
        self,
        field: str,
        value: str | None,
        message: str = "must not be empty",
        *,
        hint: str | None = None,
    ) -> str:
        """``value`` as given, if it holds more than white space.

        Raises:
            ConfigError: it is missing or blank (see :meth:`_config_error`).
        """
        if not value or not value.strip():
            raise self._config_error(field, message, hint=hint)
        return value

    def _config_error(self, field: str, message: str, *, hint: str | None = None) -> ConfigError:
        """A :class:`~bot.core.errors.ConfigError` about ``providers.<name>.<field>``."""
        return ConfigError(message, source=f"providers.{self.name}", field=field, hint=hint)


def send_failure(exc: BaseException) -> SendFailure:
    """Why a send failed, in one of a few words: pairbot's own errors by their class, an
    SDK's by the words in its class names (``TimedOut``, ``RetryAfter``, ``Forbidden``, ...)."""
    if isinstance(exc, RecipientUnreachable):
        return SendFailure.UNREACHABLE
    if isinstance(exc, ButtonError):
        return SendFailure.BUTTONS
    if isinstance(exc, ProviderStateError):
        return SendFailure.NOT_RUNNING
    names = " ".join(cls.__name__ for cls in type(exc).__mro__).lower()
    if isinstance(exc, TimeoutError) or "timeout" in names or "timedout" in names:
        return SendFailure.TIMEOUT
    if "retryafter" in names or "ratelimit" in names or "flood" in names:
        return SendFailure.RATE_LIMITED
    if "forbidden" in names:
        return SendFailure.FORBIDDEN
    if isinstance(exc, OSError) or "network" in names or "connect" in names:
        return SendFailure.NETWORK
    if isinstance(exc, ProviderError) or "api" in names or "http" in names:
        return SendFailure.REFUSED
    return SendFailure.OTHER


__all__ = ["BaseProvider", "Convert", "Dedupe", "State", "need", "send_failure"]
