"""The consumer side: JetStream messages back into typed events on a local :class:`EventBus`.

A strategy process subscribes to its own :class:`~genesis.bus.EventBus` exactly as it would
inside Genesis, and :func:`run_consumer` (or :func:`subscribe`) fills that bus from a JetStream
push consumer (measured: a pull consumer's fetch waits for a full batch once it has to linger,
which added milliseconds of latency at 2,000 events/s):

- one consumer, one task: messages arrive in stream order, so the order per symbol and kind
  is the order the broker stored them in, and they are published on the bus in that order;
- a *durable* consumer (``durable="risk"``) is remembered by the broker: a restarted process
  resumes after the last acknowledged message (at least once: a batch received but not yet
  acknowledged when the process died is delivered again). An *ephemeral* one starts at the
  beginning of the stream (or with new messages) and, after a reconnect, resumes after the
  last sequence it delivered;
- a message redelivered within one run (stream sequence not above the last delivered one) is
  skipped and counted;
- a malformed message (not JSON, not a record, or a record whose type is not the subject's
  kind) is counted, logged at WARNING and skipped; the consumer keeps running.

Market data goes onto the bus with ``publish_nowait`` (the bus's policy may drop it for a slow
subscriber, and the bus counts that); order events with ``await publish`` (never dropped: the
consumer waits, and the broker holds the rest). Each burst the client reads crosses to the Trio
loop as one list (no round trip); after it is delivered one ack-all acknowledges it. At most
``max_ack_pending`` messages are out unacknowledged, which bounds the queue on this side.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections import deque
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final, NoReturn

import attrs
import orjson
import trio

from genesis.bridge._host import lone_error_bare, open_asyncio_thread
from genesis.bridge._ids import KINDS, ORDER_KINDS, SUBJECT_PREFIX
from genesis.bridge._nats import ConsumerSpec, NatsSession
from genesis.bridge._publisher import CLEANUP_S, _safe_url
from genesis.errors import BrokerUnavailableError, RecordFormatError
from genesis.models.codec import record_to_event
from genesis.resilience.backoff import Backoff, BackoffPolicy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from genesis.bridge._host import AsyncioHost
    from genesis.bridge._nats import PushFeed, Received
    from genesis.bus import EventBus

__all__ = ["Consumer", "ConsumerConfig", "ConsumerStatistics", "run_consumer", "subscribe"]

logger = logging.getLogger(__name__)

_KIND_OF_TYPE: Final = {t.__name__: kind for t, kind in KINDS.items()}


@attrs.frozen(kw_only=True)
class ConsumerConfig:
    """What to consume and how.

    Attributes:
        url: the NATS server.
        subjects: filter subjects (``genesis.>``, ``genesis.trade.BTCUSDT``, ``genesis.*.ETHUSDT``).
        durable: a durable consumer's name (resumes across restarts); ``None``: ephemeral.
        stream: the stream to read.
        deliver_new: start with messages published from now on, not the stream's beginning.
        batch_max: messages per fetch.
        fetch_timeout_s: how long one wait for a batch lasts before the connection is checked.
        connect_timeout_s: the connect deadline of one attempt.
        backoff: the reconnect schedule.
        name: the connection's name.
    """

    url: str
    subjects: tuple[str, ...] = (f"{SUBJECT_PREFIX}.>",)
    durable: str | None = None
    stream: str = "GENESIS"
    deliver_new: bool = False
    batch_max: int = 512
    fetch_timeout_s: float = 1.0
    connect_timeout_s: float = 2.0
    backoff: BackoffPolicy = attrs.field(
        factory=lambda: BackoffPolicy(initial_s=0.25, max_s=5.0, jitter=0.2, reset_after_s=10.0)
    )
    name: str = "genesis-consumer"


@attrs.frozen(kw_only=True)
class ConsumerStatistics:
    """Counters since the consumer started.

    Attributes:
        connected: a session is up.
        received: messages fetched.
        delivered: events published on the local bus.
        malformed: messages skipped because they do not decode to an event of their subject.
        redelivered: messages skipped because they were delivered before in this run.
        last_stream_seq: the stream sequence of the last delivered message.
        connects: sessions established.
        outages: times the broker became unreachable.
    """

    connected: bool
    received: int
    delivered: int
    malformed: int
    redelivered: int
    last_stream_seq: int
    connects: int
    outages: int


def decode_message(subject: str, data: bytes) -> object:
    """The event a bridged message carries.

    Raises:
        RecordFormatError: not JSON, not a valid record, or not of the subject's kind.
    """
    try:
        record = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise RecordFormatError("a bridged message must be one JSON object") from exc
    event = record_to_event(record)
    kind = _KIND_OF_TYPE.get(type(event).__name__)
    parts = subject.split(".")
    if kind is None or len(parts) != 3 or parts[1] != kind:
        raise RecordFormatError(f"a {type(event).__name__} record does not belong on this subject")
    return event


@attrs.define(eq=False)
class Consumer:
    """A running consumer (``await nursery.start(run_consumer, ...)``); events go to ``bus``."""

    config: ConsumerConfig
    bus: EventBus
    host: AsyncioHost
    session: NatsSession | None = None
    unreachable: bool = False
    received: int = 0
    delivered: int = 0
    malformed: int = 0
    redelivered: int = 0
    last_stream_seq: int = 0
    connects: int = 0
    outages: int = 0
    _feed: PushFeed | None = None
    _incoming: deque[Received] = attrs.field(factory=deque)
    _arrived: trio.Event = attrs.field(factory=trio.Event)

    def statistics(self) -> ConsumerStatistics:
        return ConsumerStatistics(
            connected=self.session is not None and not self.unreachable,
            received=self.received,
            delivered=self.delivered,
            malformed=self.malformed,
            redelivered=self.redelivered,
            last_stream_seq=self.last_stream_seq,
            connects=self.connects,
            outages=self.outages,
        )

    async def connect(self) -> None:
        config = self.config
        session = await self.host.call(
            lambda: NatsSession.connect(
                config.url, name=config.name, connect_timeout_s=config.connect_timeout_s
            )
        )
        start = self.last_stream_seq + 1 if self.last_stream_seq and not config.durable else None
        spec = ConsumerSpec(
            subjects=config.subjects,
            durable=config.durable,
            start_seq=start,
            deliver_new=config.deliver_new and start is None,
        )
        token = trio.lowlevel.current_trio_token()

        def sink(batch: list[Received]) -> None:  # called on the asyncio loop
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._on_batch, batch)

        try:
            self._feed = await self.host.call(
                lambda: session.push_consumer(config.stream, spec, sink)
            )
        except BaseException:
            with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_S):
                await self.host.call(session.close)
            raise
        self.session = session
        self.connects += 1
        if self.unreachable:
            logger.info("bridge.consumer.reachable url=%s", _safe_url(config.url))
        self.unreachable = False
        logger.info(
            "bridge.consumer.connected url=%s durable=%s subjects=%s start_seq=%s",
            _safe_url(config.url),
            config.durable,
            ",".join(config.subjects),
            start,
        )

    async def drop_session(self) -> None:
        session, self.session, self._feed = self.session, None, None
        if session is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_S):
                await self.host.call(session.close)

    def _on_batch(self, batch: list[Received]) -> None:
        # Bounded by the consumer's max_ack_pending: the broker sends no more than that many
        # unacknowledged messages, and they are acknowledged only once delivered.
        self._incoming.extend(batch)
        self._arrived.set()

    def mark_unreachable(self, exc: BrokerUnavailableError) -> None:
        if self.unreachable:
            return
        self.unreachable = True
        self.outages += 1
        logger.warning(
            "bridge.consumer.broker_unreachable url=%s error=%s last_stream_seq=%d",
            _safe_url(self.config.url),
            exc,
            self.last_stream_seq,
        )

    async def _deliver(self, message: Received) -> None:
        if message.stream_seq and message.stream_seq <= self.last_stream_seq:
            self.redelivered += 1
            return
        try:
            event = decode_message(message.subject, message.data)
        except RecordFormatError as exc:
            self.malformed += 1
            logger.warning(
                "bridge.consumer.malformed subject=%.80s stream_seq=%d error=%s",
                message.subject,
                message.stream_seq,
                exc,
            )
        else:
            if _KIND_OF_TYPE[type(event).__name__] in ORDER_KINDS:
                await self.bus.publish(event)
            else:
                self.bus.publish_nowait(event)
            self.delivered += 1
        if message.stream_seq:
            self.last_stream_seq = message.stream_seq

    async def fetch_once(self) -> None:
        """Deliver what has arrived (waiting up to ``fetch_timeout_s``), then acknowledge it."""
        session = self.session
        assert session is not None
        if not self._incoming:
            with trio.move_on_after(self.config.fetch_timeout_s):
                await self._arrived.wait()
            self._arrived = trio.Event()
            if not self._incoming:
                if not session.connected:
                    raise BrokerUnavailableError("consume: the connection was lost")
                return
        count = min(self.config.batch_max, len(self._incoming))
        messages = [self._incoming.popleft() for _ in range(count)]
        self.received += count
        for message in messages:
            await self._deliver(message)
        self.host.call_soon(session.ack_soon, messages[-1].msg)

    async def consume_forever(self, task_status: trio.TaskStatus[Consumer]) -> NoReturn:
        backoff = Backoff(self.config.backoff, rng=random.Random())
        started = False
        while True:
            try:
                if self.session is None:
                    await self.connect()
                    backoff.mark_healthy(trio.current_time())
                    if not started:
                        started = True
                        task_status.started(self)
                await self.fetch_once()
            except BrokerUnavailableError as exc:
                await self.drop_session()
                self.mark_unreachable(exc)
                await backoff.sleep_after_failure()


async def run_consumer(
    config: ConsumerConfig,
    bus: EventBus,
    *,
    task_status: trio.TaskStatus[Consumer] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Consume ``config.subjects`` into ``bus`` until cancelled.

    Subscribe to ``bus`` before starting this, as with any publisher. ``started`` is called once
    the consumer exists on the broker (connection failures before that are retried with
    backoff and logged at WARNING). On cancellation the last batch is acknowledged and the
    connection closed under a bounded shield. The bus is not closed (the caller owns it).

    Raises:
        ConfigError: none of its own; errors of the broker are retried.
    """
    async with open_asyncio_thread() as host:
        consumer = Consumer(config=config, bus=bus, host=host)
        try:
            await consumer.consume_forever(task_status)
        finally:
            await consumer.drop_session()
            logger.info(
                "bridge.consumer.stop delivered=%d malformed=%d last_stream_seq=%d",
                consumer.delivered,
                consumer.malformed,
                consumer.last_stream_seq,
            )


@asynccontextmanager
async def subscribe(
    url: str,
    bus: EventBus,
    *,
    subjects: tuple[str, ...] = (f"{SUBJECT_PREFIX}.>",),
    durable: str | None = None,
    deliver_new: bool = False,
    stream: str = "GENESIS",
) -> AsyncIterator[Consumer]:
    """Feed ``bus`` from JetStream for the duration of the block.

    ``async with subscribe(url, bus, subjects=("genesis.trade.>",), durable="strat"):`` and then
    read ``bus`` subscriptions made *before* the block (as in-process observers subscribe before
    the feed starts). The block is entered once the consumer exists on the broker; leaving it
    stops the consumer (its last batch acknowledged).
    """
    config = ConsumerConfig(
        url=url, subjects=subjects, durable=durable, deliver_new=deliver_new, stream=stream
    )
    with lone_error_bare():
        async with trio.open_nursery() as nursery:
            consumer: Consumer = await nursery.start(run_consumer, config, bus)
            try:
                yield consumer
            finally:
                nursery.cancel_scope.cancel()
