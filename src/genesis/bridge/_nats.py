"""The only module that imports nats-py: a session on the asyncio side, errors translated once.

Every ``async`` method of :class:`NatsSession` runs on the bridge's asyncio loop (call it through
:meth:`genesis.bridge._host.AsyncioThread.call`). nats-py's own reconnection is switched off:
the bridge reconnects with :class:`~genesis.resilience.backoff.Backoff` and raises its alert, so
one place decides what an outage means. Foreign errors become
:class:`~genesis.errors.BrokerUnavailableError` (the broker is away or slow: retry) or
:class:`~genesis.errors.ConfigError` (the stream exists with settings the bridge cannot use).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING, Final

import attrs
import nats
import nats.errors
import nats.js.errors
from nats.js import api

from genesis.errors import BrokerUnavailableError, ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

__all__ = [
    "MIN_DUPLICATE_WINDOW_S",
    "ConsumerSpec",
    "NatsSession",
    "PublishOutcome",
    "PushFeed",
    "Received",
    "StreamSpec",
]

logger = logging.getLogger(__name__)

MIN_DUPLICATE_WINDOW_S: Final = 120.0
"""Two minutes: redundant instances publish the same event within this window of each other."""
MSG_ID_HEADER: Final = "Nats-Msg-Id"


@attrs.frozen(kw_only=True)
class StreamSpec:
    """The JetStream stream the bridge publishes into (created if missing, else checked).

    Attributes:
        name: stream name.
        subjects: subjects it captures (``genesis.>``).
        max_age_s: messages older than this are removed (limits retention).
        max_bytes: the stream keeps at most this many bytes (oldest removed first).
        duplicate_window_s: the broker drops a message whose ``Nats-Msg-Id`` it has seen
            within this window; at least :data:`MIN_DUPLICATE_WINDOW_S`.
        replicas: copies in a JetStream cluster (1 for a single server).
    """

    name: str = "GENESIS"
    subjects: tuple[str, ...] = ("genesis.>",)
    max_age_s: float = 24 * 3600.0
    max_bytes: int = 1 << 30
    duplicate_window_s: float = attrs.field(default=MIN_DUPLICATE_WINDOW_S)
    replicas: int = 1

    @duplicate_window_s.validator
    def _long_enough(self, _attribute: attrs.Attribute[float], value: float) -> None:
        if value < MIN_DUPLICATE_WINDOW_S:
            raise ValueError(f"duplicate_window_s must be >= {MIN_DUPLICATE_WINDOW_S:g}")


@attrs.frozen(kw_only=True)
class ConsumerSpec:
    """A push consumer on the stream (ack-all, bounded by ``max_ack_pending``).

    Attributes:
        subjects: filter subjects (``genesis.trade.>``, ``genesis.*.BTCUSDT``).
        durable: the durable name (the broker remembers where it is); ``None``: ephemeral.
        start_seq: for an ephemeral consumer, the first stream sequence to deliver (``None``:
            from the beginning, or from ``deliver_new``).
        deliver_new: start with messages published after the consumer was created.
        max_ack_pending: unacknowledged messages the broker lets out at once (backpressure).
        ack_wait_s: an unacknowledged message is redelivered after this long.
    """

    subjects: tuple[str, ...]
    durable: str | None = None
    start_seq: int | None = None
    deliver_new: bool = False
    max_ack_pending: int = 20_000
    ack_wait_s: float = 30.0
    inactive_threshold_s: float = 60.0


@attrs.frozen
class PublishOutcome:
    """Per message of a batch: acknowledged (stored or a duplicate) or not; duplicates seen."""

    acked: tuple[bool, ...]
    duplicates: int


@attrs.frozen
class Received:
    """A message from a consumer: subject, body, stream sequence (0 when unknown)."""

    subject: str
    data: bytes
    stream_seq: int
    msg: Msg = attrs.field(repr=False)


_UNAVAILABLE: Final = (nats.errors.Error, OSError, asyncio.TimeoutError)


@attrs.frozen
class _Batch:
    messages: Sequence[tuple[str, str, bytes]]
    timeout_s: float
    on_confirmed: Callable[[bool, bool], None]


class PushFeed:
    """Messages of a push consumer, handed on in batches as they arrive (asyncio side).

    Each burst of messages the client reads is handed to ``sink`` as one list, called on the
    asyncio loop once the burst is read (``sink`` must be thread-safe: the consumer's posts
    the list to the Trio loop). What is handed on is bounded by the consumer's
    ``max_ack_pending``: the broker sends no more while that many are unacknowledged, and the
    bridge acknowledges only what it delivered.
    """

    def __init__(self, sink: Callable[[list[Received]], None]) -> None:
        self._sink = sink
        self._queue: list[Received] = []

    async def on_message(self, msg: Msg) -> None:
        try:
            seq = msg.metadata.sequence.stream
        except (nats.errors.Error, ValueError, AttributeError, IndexError):
            seq = 0
        if not self._queue:
            asyncio.get_running_loop().call_soon(self._hand_on)
        self._queue.append(Received(msg.subject, msg.data, seq, msg))

    def _hand_on(self) -> None:
        batch, self._queue = self._queue, []
        if batch:
            self._sink(batch)


@contextlib.contextmanager
def _map_errors(what: str) -> Iterator[None]:
    try:
        yield
    except nats.js.errors.APIError as exc:
        if isinstance(exc, nats.js.errors.ServiceUnavailableError):
            raise BrokerUnavailableError(f"{what}: JetStream unavailable") from exc
        raise BrokerUnavailableError(
            f"{what}: JetStream said {exc.code} {exc.description}"
        ) from exc
    except _UNAVAILABLE as exc:
        raise BrokerUnavailableError(f"{what}: {type(exc).__name__}") from exc


async def _quiet_error(exc: Exception) -> None:
    # The bridge reports outages itself (one alert, a WARNING); nats-py's own error callback
    # would log every failed attempt at ERROR.
    logger.debug("bridge.nats.error %s", type(exc).__name__)


class NatsSession:
    """One NATS connection and its JetStream context (asyncio side; never reconnects itself)."""

    def __init__(self, nc: Client, js: JetStreamContext) -> None:
        self._nc = nc
        self._js = js
        self._outgoing: deque[_Batch] = deque()
        self._outgoing_ready = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    @classmethod
    async def connect(cls, url: str, *, name: str, connect_timeout_s: float) -> NatsSession:
        """Connect once to ``url`` (no automatic reconnects).

        Raises:
            BrokerUnavailableError: the server cannot be reached.
        """
        with _map_errors("connect"):
            nc = await nats.connect(
                servers=[url],
                name=name,
                allow_reconnect=False,
                connect_timeout=max(1, round(connect_timeout_s)),
                # nats-py retries a refused first connect forever with 0 here: 1 means two
                # quick attempts and then NoServersError; the bridge's backoff takes over.
                max_reconnect_attempts=1,
                reconnect_time_wait=0.05,
                error_cb=_quiet_error,
                ping_interval=5,
                max_outstanding_pings=2,
            )
        return cls(nc, nc.jetstream())

    async def close(self) -> None:
        """Close the connection (flushing what is buffered); errors of a dead link are ignored.

        Batches still queued by :meth:`enqueue_batch` are reported as not confirmed.
        """
        if self._sender is not None:
            self._sender.cancel()
        while self._outgoing:
            self._outgoing.popleft().on_confirmed(False, False)
        with contextlib.suppress(*_UNAVAILABLE):
            await self._nc.close()

    def enqueue_batch(
        self,
        messages: Sequence[tuple[str, str, bytes]],
        timeout_s: float,
        on_confirmed: Callable[[bool, bool], None],
    ) -> None:
        """Queue a batch for :meth:`send_batch`, in order, without waiting (on the loop).

        One sender task sends the queued batches one after the other, so they reach the stream
        in the order they were queued. ``on_confirmed`` is called once for every batch.
        """
        self._outgoing.append(_Batch(messages, timeout_s, on_confirmed))
        self._outgoing_ready.set()
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send_queued())

    async def _send_queued(self) -> None:
        while True:
            await self._outgoing_ready.wait()
            self._outgoing_ready.clear()
            while self._outgoing:
                batch = self._outgoing.popleft()
                try:
                    await self.send_batch(
                        batch.messages, timeout_s=batch.timeout_s, on_confirmed=batch.on_confirmed
                    )
                except BrokerUnavailableError:
                    batch.on_confirmed(False, False)

    async def ensure_stream(self, spec: StreamSpec) -> bool:
        """Create the stream if it is missing, else check it can serve the bridge.

        Returns:
            Whether it was created.

        Raises:
            ConfigError: the stream exists with other retention, too short a duplicate window,
                or without the bridge's subjects (a person must fix it; the bridge will not
                change a stream someone else configured).
            BrokerUnavailableError: the broker or JetStream cannot be reached.
        """
        with _map_errors("stream"):
            try:
                info = await self._js.stream_info(spec.name)
            except nats.js.errors.NotFoundError:
                await self._js.add_stream(
                    api.StreamConfig(
                        name=spec.name,
                        subjects=list(spec.subjects),
                        retention=api.RetentionPolicy.LIMITS,
                        max_age=spec.max_age_s,
                        max_bytes=spec.max_bytes,
                        duplicate_window=spec.duplicate_window_s,
                        storage=api.StorageType.FILE,
                        discard=api.DiscardPolicy.OLD,
                        num_replicas=spec.replicas,
                    )
                )
                return True
        config = info.config
        problems: list[str] = []
        if config.retention not in (None, api.RetentionPolicy.LIMITS):
            problems.append(f"stream {spec.name} has {config.retention} retention, not limits")
        if (config.duplicate_window or 0) < MIN_DUPLICATE_WINDOW_S:
            problems.append(
                f"stream {spec.name} has a duplicate window of {config.duplicate_window or 0:g} s,"
                f" under {MIN_DUPLICATE_WINDOW_S:g} s"
            )
        missing = [s for s in spec.subjects if s not in (config.subjects or ())]
        if missing:
            problems.append(f"stream {spec.name} does not capture {', '.join(missing)}")
        if problems:
            raise ConfigError(problems)
        return False

    async def publish(
        self, messages: Sequence[tuple[str, str, bytes]], *, timeout_s: float
    ) -> PublishOutcome:
        """Publish ``(subject, msg_id, payload)`` messages, pipelined, each acknowledged.

        The messages leave in order on the one connection, and the server handles one
        connection's messages in order, so the stream stores them in order (order events).

        Raises:
            BrokerUnavailableError: not connected, or sending failed (nothing is known to be
                stored; messages with ids are safe to publish again).
        """
        if not self._nc.is_connected:
            raise BrokerUnavailableError("publish: not connected")
        futures: list[asyncio.Future[api.PubAck]] = []
        with _map_errors("publish"):
            for subject, msg_id, payload in messages:
                futures.append(
                    await self._js.publish_async(
                        subject, payload, headers={MSG_ID_HEADER: msg_id}, wait_stall=timeout_s
                    )
                )
        if futures:
            await asyncio.wait(futures, timeout=timeout_s)
        acked: list[bool] = []
        duplicates = 0
        for future in futures:
            if not future.done():
                future.cancel()
                acked.append(False)
            elif future.cancelled() or future.exception() is not None:
                acked.append(False)
            else:
                acked.append(True)
                duplicates += bool(future.result().duplicate)
        return PublishOutcome(tuple(acked), duplicates)

    async def send_batch(
        self,
        messages: Sequence[tuple[str, str, bytes]],
        *,
        timeout_s: float,
        on_confirmed: Callable[[bool, bool], None],
    ) -> None:
        """Publish ``(subject, msg_id, payload)`` messages and return once they are written.

        All but the last are plain publishes; the last is a JetStream publish whose
        acknowledgement confirms the batch (the server handles one connection's messages in
        order). ``on_confirmed(ok, duplicate)`` is called once, from the asyncio loop, when
        that acknowledgement arrives (``ok``) or fails or ``timeout_s`` passes (not ``ok``).
        Several batches may be in flight at once.

        Raises:
            BrokerUnavailableError: not connected, or writing failed.
        """
        if not self._nc.is_connected:
            raise BrokerUnavailableError("publish: not connected")
        with _map_errors("publish"):
            for subject, msg_id, payload in messages[:-1]:
                await self._nc.publish(subject, payload, headers={MSG_ID_HEADER: msg_id})
            subject, msg_id, payload = messages[-1]
            future = await self._js.publish_async(
                subject, payload, headers={MSG_ID_HEADER: msg_id}, wait_stall=timeout_s
            )
        timer = asyncio.get_running_loop().call_later(timeout_s, future.cancel)

        def confirmed(done: asyncio.Future[api.PubAck]) -> None:
            timer.cancel()
            if done.cancelled() or done.exception() is not None:
                on_confirmed(False, False)
            else:
                on_confirmed(True, bool(done.result().duplicate))

        future.add_done_callback(confirmed)

    async def push_consumer(
        self, stream: str, spec: ConsumerSpec, sink: Callable[[list[Received]], None]
    ) -> PushFeed:
        """Create (or bind to) the push consumer ``spec`` on ``stream``; messages queue in a feed.

        Raises:
            BrokerUnavailableError: the broker or JetStream cannot be reached.
        """
        if spec.start_seq is not None and spec.durable is None:
            deliver = api.DeliverPolicy.BY_START_SEQUENCE
        elif spec.deliver_new:
            deliver = api.DeliverPolicy.NEW
        else:
            deliver = api.DeliverPolicy.ALL
        config = api.ConsumerConfig(
            deliver_policy=deliver,
            opt_start_seq=spec.start_seq
            if deliver is api.DeliverPolicy.BY_START_SEQUENCE
            else None,
            ack_policy=api.AckPolicy.ALL,
            ack_wait=spec.ack_wait_s,
            max_ack_pending=spec.max_ack_pending,
            filter_subjects=list(spec.subjects) if len(spec.subjects) > 1 else None,
            filter_subject=spec.subjects[0] if len(spec.subjects) == 1 else None,
            inactive_threshold=None if spec.durable else spec.inactive_threshold_s,
        )
        feed = PushFeed(sink)
        with _map_errors("consumer"):
            await self._js.subscribe(
                spec.subjects[0],
                cb=feed.on_message,
                durable=spec.durable,
                stream=stream,
                config=config,
                manual_ack=True,
            )
        return feed

    def ack_soon(self, msg: Msg) -> None:
        """Acknowledge ``msg`` (and every earlier one) without waiting (on the loop)."""
        if self._nc.is_connected:
            asyncio.get_running_loop().create_task(self._ack_quietly(msg))

    async def _ack_quietly(self, msg: Msg) -> None:
        # A lost ack only means a redelivery to a durable consumer after a restart.
        with contextlib.suppress(*_UNAVAILABLE):
            await msg.ack()

    async def publish_raw(self, subject: str, payload: bytes) -> None:
        """A plain core-NATS publish, flushed (tests and tools: no id, no ack)."""
        with _map_errors("publish"):
            await self._nc.publish(subject, payload)
            await self._nc.flush()
