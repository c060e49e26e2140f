"""The publisher bridge: bus events onto NATS JetStream, never blocking the bus.

```
run_bridge
├── reader      bus subscription → market data into a bounded buffer (drop oldest, counted)
│                                → order events the journal did not keep into its outbox (on
│                                  disk); updates and balances are there already, written by
│                                  the order side before they reached the bus
└── publisher   connect (backoff) → ensure the stream → outbox first, then market data,
                in batches, pipelined, each message with its Nats-Msg-Id; wait for the acks
```

Policies per kind (:data:`~genesis.bridge.ORDER_KINDS` are fixed):

- market data (trade, ticker, depth, kline, book): a buffer of ``market_buffer`` events; when
  it is full the oldest event is dropped and counted (:attr:`BridgeStatistics.dropped`). A
  batch that the broker did not acknowledge goes back to the front of the buffer: its ids make
  a second publish harmless.
- order events (order, balance): written to the journal's outbox before anything else and
  removed only once the broker acknowledged them, so a broker outage, or a restart during
  one, loses none; they are published when the broker is back, oldest first. An order update
  goes into the outbox *in the transaction that journals it*
  (:meth:`~genesis.orders.journal.Journal.keep_updates_in_outbox`, set when the bridge starts),
  so a process that dies after journaling an update and before the bus handed it to the
  reader still bridges it at its next start; the reader skips the bus's copy of an update the
  journal kept. An update published on the bus without the journal is kept by the reader.
  Balance events have no journal record: the order side puts each in the outbox before it
  publishes it (:meth:`~genesis.orders.journal.Journal.keep_balances_in_outbox`, set when the
  bridge starts), and the reader skips the bus's copy the same way.

The reader only appends to memory or to the outbox in batches, so the bus (and the order task
behind it) never waits for the broker. An unreachable broker publishes one
:class:`~genesis.models.events.Alert` (``BROKER_UNREACHABLE``) per outage and logs a WARNING;
reconnects back off (:class:`~genesis.resilience.backoff.Backoff`). When it is back, a second
alert (WARNING) gives the number of market-data events the outage cost, if any.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections import Counter, deque
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, NoReturn
from urllib.parse import urlsplit

import attrs
import orjson
import trio

from genesis.bridge._host import lone_error_bare, open_asyncio_thread
from genesis.bridge._ids import KINDS, ORDER_KINDS, kind_of, message_id, subject_for
from genesis.bridge._nats import NatsSession, StreamSpec
from genesis.errors import BrokerUnavailableError
from genesis.models.codec import event_to_record
from genesis.models.events import AccountBalances, Alert, AlertKind, AlertSeverity, OrderUpdate
from genesis.orders.journal import OutboxMessage
from genesis.resilience.backoff import Backoff, BackoffPolicy

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from genesis.bridge._host import AsyncioHost
    from genesis.bus import EventBus, Subscription
    from genesis.orders.journal import Journal, OutboxEntry

__all__ = [
    "CLEANUP_S",
    "Bridge",
    "BridgeConfig",
    "BridgeStatistics",
    "encode_message",
    "run_bridge",
]

logger = logging.getLogger(__name__)

CLEANUP_S: Final = 1.0
MAX_IN_FLIGHT: Final = 8
"""Market batches sent and not yet acknowledged at once (the next is sent without waiting)."""
_READ_BATCH: Final = 1024
_JOURNALED_KEPT: Final = 4096
"""Message ids of journaled updates remembered until the bus hands the reader their copy."""


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _kinds(value: frozenset[str] | set[str] | tuple[str, ...]) -> frozenset[str]:
    return frozenset(value)


def _known_kinds(
    _inst: object, _attribute: attrs.Attribute[frozenset[str]], value: frozenset[str]
) -> None:
    unknown = value - set(KINDS.values())
    if unknown or not value:
        raise ValueError(f"kinds must be a non-empty subset of {sorted(KINDS.values())}")


@attrs.frozen(kw_only=True)
class BridgeConfig:
    """How the publisher bridge runs.

    Attributes:
        url: the NATS server (``nats://host:4222``); credentials never appear in logs.
        name: this instance's connection name (shown by ``nats server report``).
        stream: the JetStream stream (created if missing, else checked).
        kinds: the event kinds to publish (default: all of :data:`~genesis.bridge.KINDS`).
        market_buffer: market-data events held while the broker is slow or away; past it the
            oldest is dropped and counted.
        batch_max: messages per publish batch (pipelined, one wait for all acks).
        ack_timeout_s: how long a batch waits for its acks before the broker counts as away.
        connect_timeout_s: the connect deadline of one attempt.
        backoff: the reconnect schedule.
    """

    url: str
    name: str = "genesis"
    stream: StreamSpec = attrs.field(factory=StreamSpec)
    kinds: frozenset[str] = attrs.field(
        default=frozenset(KINDS.values()), converter=_kinds, validator=_known_kinds
    )
    market_buffer: int = attrs.field(default=20_000, validator=attrs.validators.gt(0))
    batch_max: int = attrs.field(default=512, validator=attrs.validators.gt(0))
    ack_timeout_s: float = attrs.field(default=2.0, validator=attrs.validators.gt(0))
    connect_timeout_s: float = attrs.field(default=2.0, validator=attrs.validators.gt(0))
    backoff: BackoffPolicy = attrs.field(
        factory=lambda: BackoffPolicy(initial_s=0.25, max_s=5.0, jitter=0.2, reset_after_s=10.0)
    )


@attrs.frozen(kw_only=True)
class BridgeStatistics:
    """Counters since the bridge started; per-kind maps are keyed by kind (``trade`` …).

    Attributes:
        connected: a session to the broker is up.
        published: messages the broker acknowledged (stored, or recognised as duplicates).
        duplicates: acknowledged messages the broker already had (the redundant twin's copy).
        published_by_kind: ``published`` per kind.
        dropped: market-data events dropped because the buffer was full.
        dropped_by_kind: ``dropped`` per kind.
        buffered: market-data events waiting now.
        outbox: order events waiting in the journal's outbox now.
        connects: sessions established.
        outages: times the broker became unreachable (each raised one alert).
        last_error: why the last attempt or session failed, if one did.
    """

    connected: bool
    published: int
    duplicates: int
    published_by_kind: Mapping[str, int]
    dropped: int
    dropped_by_kind: Mapping[str, int]
    buffered: int
    outbox: int
    connects: int
    outages: int
    last_error: str | None


def encode_message(event: object) -> OutboxMessage:
    """``event`` as a broker message: its subject, its ``Nats-Msg-Id`` and the record JSON."""
    subject = subject_for(event)  # first: it refuses a type the bridge does not carry
    record = event_to_record(event)
    return OutboxMessage(
        subject=subject, msg_id=message_id(event, record), payload=orjson.dumps(record)
    )


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}:{parts.port}" if parts.port else f"{parts.scheme}://{host}"


@attrs.define(eq=False)
class Bridge:
    """A running publisher bridge (from ``await nursery.start(run_bridge, ...)``)."""

    config: BridgeConfig
    bus: EventBus
    journal: Journal
    host: AsyncioHost
    wall_ms: Callable[[], int] = _wall_ms
    session: NatsSession | None = None
    subscription: Subscription[object] | None = None
    unreachable: bool = False
    connects: int = 0
    outages: int = 0
    duplicates: int = 0
    last_error: str | None = None
    _buffer: deque[tuple[str, object]] = attrs.field(factory=deque)
    _in_flight: deque[tuple[int, list[tuple[str, object]]]] = attrs.field(factory=deque)
    _token: int = 0
    _batch_failed: bool = False
    _outage_started: float = 0.0
    _dropped_before_outage: int = 0
    _published: Counter[str] = attrs.field(factory=Counter)
    _dropped: Counter[str] = attrs.field(factory=Counter)
    _wake: trio.Event = attrs.field(factory=trio.Event)
    _changed: trio.Event = attrs.field(factory=trio.Event)
    _journaled: Counter[str] = attrs.field(factory=Counter)

    def statistics(self) -> BridgeStatistics:
        """A snapshot of the counters."""
        return BridgeStatistics(
            connected=self.session is not None and not self.unreachable,
            published=self._published.total(),
            duplicates=self.duplicates,
            published_by_kind=MappingProxyType(dict(self._published)),
            dropped=self._dropped.total(),
            dropped_by_kind=MappingProxyType(dict(self._dropped)),
            buffered=len(self._buffer) + sum(len(items) for _, items in self._in_flight),
            outbox=self.journal.statistics().outbox,
            connects=self.connects,
            outages=self.outages,
            last_error=self.last_error,
        )

    def encode_journaled(self, event: OrderUpdate | AccountBalances) -> OutboxMessage:
        """The journal's encoder: ``event``'s message, which the journal keeps in its outbox.

        Its id is remembered, so the reader does not keep the bus's copy of the event a second
        time (the oldest of :data:`_JOURNALED_KEPT` ids is forgotten: an event whose publish
        failed after it was kept never reaches the bus).
        """
        message = encode_message(event)
        journaled = self._journaled
        journaled[message.msg_id] += 1
        if len(journaled) > _JOURNALED_KEPT:
            del journaled[next(iter(journaled))]
        return message

    def _kept_by_journal(self, message: OutboxMessage) -> bool:
        journaled = self._journaled
        count = journaled.get(message.msg_id, 0)
        if count == 0:
            return False
        if count == 1:
            del journaled[message.msg_id]
        else:
            journaled[message.msg_id] = count - 1
        return True

    async def wait_connected(self) -> None:
        """Return once a session to the broker is up (at once if it is)."""
        while self.session is None or self.unreachable:
            await self._changed.wait()
        await trio.lowlevel.checkpoint()

    def _state_changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_idle(self) -> None:
        """Return once nothing waits for the broker: the buffer and the outbox are empty."""
        while (
            self._buffer
            or self._in_flight
            or self.journal.statistics().outbox
            or self.unreachable
            or (self.subscription is not None and self.subscription.queued)
        ):
            await self._changed.wait()
        await trio.lowlevel.checkpoint()

    # --- reader -------------------------------------------------------------------------

    def _buffer_market(self, kind: str, event: object) -> None:
        if len(self._buffer) >= self.config.market_buffer:
            dropped_kind, _ = self._buffer.popleft()
            self._dropped[dropped_kind] += 1
        self._buffer.append((kind, event))

    async def read(self, sub: Subscription[object]) -> NoReturn:
        """Drain ``sub`` in batches: market data to the buffer, order events to the outbox."""
        kinds = self.config.kinds
        while True:
            events = [await sub.receive()]
            while len(events) < _READ_BATCH:
                try:
                    events.append(sub.receive_nowait())
                except trio.WouldBlock:
                    break
            outbox: list[OutboxMessage] = []
            for event in events:
                kind = kind_of(event)
                if kind is None or kind not in kinds:
                    continue
                if kind in ORDER_KINDS:
                    message = encode_message(event)
                    if not self._kept_by_journal(message):
                        outbox.append(message)
                else:
                    self._buffer_market(kind, event)
            if outbox:
                await self.journal.outbox_put(outbox, now_ms=self.wall_ms())
            self._wake.set()

    # --- publisher ----------------------------------------------------------------------

    async def _connect(self) -> None:
        config = self.config
        session = await self.host.call(
            lambda: NatsSession.connect(
                config.url, name=config.name, connect_timeout_s=config.connect_timeout_s
            )
        )
        try:
            created = await self.host.call(lambda: session.ensure_stream(config.stream))
        except BaseException:
            with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_S):
                await self.host.call(session.close)
            raise
        self.session = session
        self.connects += 1
        was_unreachable, self.unreachable = self.unreachable, False
        self._state_changed()
        if was_unreachable:
            await self._report_recovery()
        logger.info(
            "bridge.connected url=%s stream=%s created=%s",
            _safe_url(config.url),
            config.stream.name,
            created,
        )

    async def _drop_session(self) -> None:
        session, self.session = self.session, None
        self._state_changed()
        if session is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_S):
                await self.host.call(session.close)

    async def _report_recovery(self) -> None:
        """The broker is back: say so, and alert with the market data the outage cost."""
        url = _safe_url(self.config.url)
        down_for_s = trio.current_time() - self._outage_started
        lost = self._dropped.total() - self._dropped_before_outage
        if not lost:
            logger.info("bridge.broker_reachable url=%s down_for_s=%.1f", url, down_for_s)
            return
        logger.warning(
            "bridge.market_data_lost url=%s down_for_s=%.1f dropped=%d", url, down_for_s, lost
        )
        await self.bus.publish(
            Alert(
                kind=AlertKind.BROKER_UNREACHABLE,
                severity=AlertSeverity.WARNING,
                message=(
                    f"NATS broker {url} reachable again after {down_for_s:.1f} s;"
                    f" {lost} market-data events were dropped meanwhile (no order event)"
                ),
                at_ms=self.wall_ms(),
                subject=url,
                details=(("dropped", str(lost)), ("down_for_s", f"{down_for_s:.1f}")),
            )
        )

    async def _mark_unreachable(self, exc: BrokerUnavailableError) -> None:
        self.last_error = str(exc)
        if self.unreachable:
            return
        self.unreachable = True
        self.outages += 1
        self._outage_started = trio.current_time()
        self._dropped_before_outage = self._dropped.total()
        url = _safe_url(self.config.url)
        logger.warning(
            "bridge.broker_unreachable url=%s error=%s buffered=%d outbox=%d",
            url,
            exc,
            len(self._buffer),
            self.journal.statistics().outbox,
        )
        await self.bus.publish(
            Alert(
                kind=AlertKind.BROKER_UNREACHABLE,
                severity=AlertSeverity.ERROR,
                message=(
                    f"NATS broker {url} unreachable ({exc}): order events wait in the outbox,"
                    " market data is buffered and dropped past the limit"
                ),
                at_ms=self.wall_ms(),
                subject=url,
                details=(("error", str(exc)[:200]),),
            )
        )

    async def _publish(self, messages: list[OutboxMessage]) -> tuple[bool, ...]:
        session = self.session
        assert session is not None
        batch = [(m.subject, m.msg_id, m.payload) for m in messages]
        timeout_s = self.config.ack_timeout_s
        outcome = await self.host.call(lambda: session.publish(batch, timeout_s=timeout_s))
        self.duplicates += outcome.duplicates
        return outcome.acked

    async def _publish_outbox(self) -> bool:
        if not self.journal.statistics().outbox:
            return False  # the journal counts in memory: no disk read while nothing waits
        entries: list[OutboxEntry] = await self.journal.outbox_pending(self.config.batch_max)
        acked = await self._publish([e.message for e in entries])
        # Only the acknowledged prefix is done: a later message must not overtake an earlier
        # one of the same order, so the rest is published again (same ids) in order.
        done = []
        for entry, ok in zip(entries, acked, strict=True):
            if not ok:
                break
            done.append(entry.id)
            self._published[entry.message.subject.split(".")[1]] += 1
        await self.journal.outbox_done(done)
        if len(done) < len(entries):
            raise BrokerUnavailableError("publish: acks missing from the outbox batch")
        return True

    def _on_confirmed(self, token: int, ok: bool, duplicate: bool) -> None:
        """A market batch's acknowledgement (on the Trio loop); stale tokens are ignored."""
        if not self._in_flight or self._in_flight[0][0] > token:
            return  # a batch of a session given up already (requeued then)
        if not ok:
            self._batch_failed = True
        else:
            while self._in_flight and self._in_flight[0][0] <= token:
                _, items = self._in_flight.popleft()
                for kind, _event in items:
                    self._published[kind] += 1
            self.duplicates += duplicate
        self._wake.set()
        self._state_changed()

    def _requeue_in_flight(self) -> None:
        """Put every unconfirmed batch back, in order, before what waits (ids make it safe)."""
        while self._in_flight:
            _, items = self._in_flight.pop()
            self._buffer.extendleft(reversed(items))
        while len(self._buffer) > self.config.market_buffer:
            dropped_kind, _ = self._buffer.popleft()
            self._dropped[dropped_kind] += 1
        self._batch_failed = False

    async def _publish_market(self) -> bool:
        if self._batch_failed:
            raise BrokerUnavailableError("publish: a market batch was not acknowledged")
        if not self._buffer or len(self._in_flight) >= MAX_IN_FLIGHT:
            return False
        session = self.session
        assert session is not None
        count = min(self.config.batch_max, len(self._buffer))
        items = [self._buffer.popleft() for _ in range(count)]
        self._token += 1
        token, token_run = self._token, trio.lowlevel.current_trio_token()
        self._in_flight.append((token, items))
        batch = [
            (m.subject, m.msg_id, m.payload) for m in map(encode_message, (e for _, e in items))
        ]

        def on_confirmed(ok: bool, duplicate: bool) -> None:  # called on the asyncio loop
            with contextlib.suppress(trio.RunFinishedError):
                token_run.run_sync_soon(self._on_confirmed, token, ok, duplicate)

        self.host.call_soon(session.enqueue_batch, batch, self.config.ack_timeout_s, on_confirmed)
        await trio.lowlevel.checkpoint()
        return True

    async def publish_forever(self) -> NoReturn:
        """Connect, then publish what waits; reconnect with backoff after any failure."""
        backoff = Backoff(self.config.backoff, rng=random.Random())
        while True:
            try:
                if self.session is None or not self.session.connected:
                    if self.session is not None:
                        raise BrokerUnavailableError("the connection was lost")
                    await self._connect()
                    backoff.mark_healthy(trio.current_time())
                progressed = await self._publish_outbox()
                progressed = await self._publish_market() or progressed
                if progressed:
                    self._state_changed()
            except BrokerUnavailableError as exc:
                self._requeue_in_flight()
                await self._drop_session()
                await self._mark_unreachable(exc)
                await backoff.sleep_after_failure()
                continue
            if not progressed:
                # Wake on new events, and look at the connection at least once a second.
                with trio.move_on_after(1.0):
                    await self._wake.wait()
                self._wake = trio.Event()


async def run_bridge(
    config: BridgeConfig,
    bus: EventBus,
    journal: Journal,
    *,
    wall_ms: Callable[[], int] = _wall_ms,
    task_status: trio.TaskStatus[Bridge] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Publish ``bus`` events of ``config.kinds`` to JetStream until cancelled.

    Subscribes before ``started``, so nothing published after ``await nursery.start(...)`` is
    missed; it does not wait for the broker (an unreachable broker at start is an alert, not a
    failed start). On cancellation the NATS connection is closed under a bounded shield; what
    was not acknowledged stays in the outbox (order events) or is lost with the process
    (market data, counted only while running).

    Args:
        config: the broker, the stream and the policies.
        bus: the bus to read; alerts are published on it too.
        journal: holds the outbox of order events; from the bridge's start it keeps each order
            update's message with the update's record (for the journal's life).
        wall_ms: wall-clock epoch milliseconds (alerts, outbox rows).
        task_status: receives the :class:`Bridge`.

    Raises:
        ConfigError: the stream exists with settings the bridge cannot use.
    """
    types = tuple(t for t, kind in KINDS.items() if kind in config.kinds)
    sub: Subscription[object] = bus.subscribe(*types, buffer_size=_READ_BATCH * 8)
    async with open_asyncio_thread() as host, sub:
        bridge = Bridge(
            config=config, bus=bus, journal=journal, host=host, wall_ms=wall_ms, subscription=sub
        )
        if "order" in config.kinds:
            # From now on the journal keeps each update's message with its record.
            journal.keep_updates_in_outbox(bridge.encode_journaled)
        if "balance" in config.kinds:
            journal.keep_balances_in_outbox(bridge.encode_journaled)
        try:
            with lone_error_bare():
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(bridge.read, sub)
                    nursery.start_soon(bridge.publish_forever)
                    logger.info(
                        "bridge.start url=%s kinds=%s outbox=%d",
                        _safe_url(config.url),
                        ",".join(sorted(config.kinds)),
                        journal.statistics().outbox,
                    )
                    task_status.started(bridge)
        finally:
            await bridge._drop_session()
            stats = bridge.statistics()
            logger.info(
                "bridge.stop published=%d duplicates=%d dropped=%d outbox=%d",
                stats.published,
                stats.duplicates,
                stats.dropped,
                stats.outbox,
            )
    raise AssertionError("the bridge's tasks run until cancelled")  # pragma: no cover
