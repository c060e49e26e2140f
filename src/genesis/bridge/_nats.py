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
from typing import TYPE_CHECKING, Final

import attrs
import nats
import nats.errors
import nats.js.errors
from nats.js import api

from genesis.errors import BrokerUnavailableError, ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

__all__ = [
    "MIN_DUPLICATE_WINDOW_S",
    "ConsumerSpec",
    "NatsSession",
    "PublishOutcome",
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
    """A pull consumer on the stream.

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
    """A message from a pull consumer: subject, body, stream sequence (0 when unknown)."""

    subject: str
    data: bytes
    stream_seq: int
    msg: Msg = attrs.field(repr=False)


_UNAVAILABLE: Final = (nats.errors.Error, OSError, asyncio.TimeoutError)


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
        """Close the connection (flushing what is buffered); errors of a dead link are ignored."""
        with contextlib.suppress(*_UNAVAILABLE):
            await self._nc.close()

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
        """Publish ``(subject, msg_id, payload)`` messages, pipelined, and wait for their acks.

        The messages leave in order on the one connection, so the stream stores them in order.

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

    async def pull_consumer(
        self, stream: str, spec: ConsumerSpec
    ) -> JetStreamContext.PullSubscription:
        """Create (or bind to) the pull consumer ``spec`` on ``stream``.

        Raises:
            BrokerUnavailableError: the broker or JetStream cannot be reached.
        """
        if spec.durable is not None:
            deliver = api.DeliverPolicy.ALL
        elif spec.start_seq is not None:
            deliver = api.DeliverPolicy.BY_START_SEQUENCE
        else:
            deliver = api.DeliverPolicy.NEW if spec.deliver_new else api.DeliverPolicy.ALL
        if spec.durable is not None and spec.deliver_new:
            deliver = api.DeliverPolicy.NEW
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
        with _map_errors("consumer"):
            return await self._js.pull_subscribe(
                spec.subjects[0], durable=spec.durable, stream=stream, config=config
            )

    async def fetch(
        self, sub: JetStreamContext.PullSubscription, *, batch: int, timeout_s: float
    ) -> list[Received]:
        """Up to ``batch`` messages, waiting at most ``timeout_s`` for the first (``[]``: none).

        Raises:
            BrokerUnavailableError: the connection is gone.
        """
        if not self._nc.is_connected:
            raise BrokerUnavailableError("fetch: not connected")
        try:
            msgs = await sub.fetch(batch, timeout=timeout_s)
        except nats.errors.TimeoutError:
            return []
        except _UNAVAILABLE as exc:
            raise BrokerUnavailableError(f"fetch: {type(exc).__name__}") from exc
        received: list[Received] = []
        for msg in msgs:
            try:
                seq = msg.metadata.sequence.stream
            except (nats.errors.Error, ValueError, AttributeError, IndexError):
                seq = 0
            received.append(Received(msg.subject, msg.data, seq, msg))
        return received

    async def ack(self, msg: Msg) -> None:
        """Acknowledge ``msg`` and every earlier one (the consumers use ack-all).

        Raises:
            BrokerUnavailableError: the connection is gone (the broker will redeliver).
        """
        with _map_errors("ack"):
            await msg.ack()

    async def publish_raw(self, subject: str, payload: bytes) -> None:
        """A plain core-NATS publish, flushed (tests and tools: no id, no ack)."""
        with _map_errors("publish"):
            await self._nc.publish(subject, payload)
            await self._nc.flush()
