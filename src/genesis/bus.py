"""The event bus: typed topics, one bounded channel per subscriber, per-kind overflow policy.

Publishers hand frozen attrs events to :class:`EventBus`; each subscriber gets the events whose
type is a subclass of one it subscribed to, on its own bounded channel, in publish order per
publisher. What happens when a subscriber's channel is full is decided per event type by a
frozen mapping ``type -> OverflowPolicy`` given to the bus (looked up along the event's MRO):

- ``NEVER_DROP`` (the default for unregistered types, e.g. order updates): the event is never
  dropped. ``await bus.publish(event)`` waits until every subscriber has room (backpressure);
  ``bus.publish_nowait(event)`` raises :class:`trio.WouldBlock` and delivers to nobody.
- ``DROP_OLDEST`` (trades, klines): the oldest *droppable* event queued for that subscriber is
  discarded and counted; never-drop events already queued are never evicted.
- ``CONFLATE`` (tickers, depth snapshots): at most one event per ``(type, symbol)`` waits in a
  subscriber's channel; a newer one replaces it *in place* (counted as a drop). A conflated
  value is therefore delivered at the queue position of the value it replaced. When the
  channel is full and no value of that key is queued, the oldest droppable event goes.

A never-drop event that finds a full channel evicts a droppable one if there is any, so market
data can never starve order events; it waits only when the channel is full of never-drop
events. Market data is published with :meth:`EventBus.publish_nowait`, which never blocks.

Why not a bare :func:`trio.open_memory_channel`: a memory channel can neither evict its oldest
item from the sending side nor replace a queued item, which drop-oldest and conflation need. Each
subscriber therefore owns a small bounded channel (a deque woken through two
``trio.lowlevel.ParkingLot`` objects) with the memory-channel contract: bounded, FIFO,
``EndOfChannel`` once the bus is closed and drained, ``ClosedResourceError`` after the
subscriber closed it.

Subscribers only ever see :class:`Subscription` (``receive``, async iteration, ``aclose``) and
the events themselves, never channels or bus internals, so the transport can later move onto an
external broker (NATS JetStream, Redis Streams) with the typed events as the schema.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter, deque
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Generic, TypeVar

import attrs
import trio

from genesis.models.market import Depth, Kline, OrderBook, Ticker, Trade
from genesis.models.state import MarketState

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import TracebackType

__all__ = [
    "DEFAULT_BUFFER_SIZE",
    "MARKET_DATA_POLICIES",
    "BusStatistics",
    "EventBus",
    "OverflowPolicy",
    "Subscription",
]

logger = logging.getLogger(__name__)

_E = TypeVar("_E")
_E_co = TypeVar("_E_co", covariant=True)

DEFAULT_BUFFER_SIZE: Final = 1024


class OverflowPolicy(enum.Enum):
    """What a full subscriber channel does with one more event of a kind."""

    NEVER_DROP = "never_drop"
    """Never dropped: ``publish`` waits for room, ``publish_nowait`` raises ``WouldBlock``."""
    DROP_OLDEST = "drop_oldest"
    """The oldest droppable queued event is discarded (counted)."""
    CONFLATE = "conflate"
    """Keep only the latest queued event per ``(type, symbol)`` (replacements counted)."""


MARKET_DATA_POLICIES: Final[Mapping[type, OverflowPolicy]] = MappingProxyType(
    {
        Trade: OverflowPolicy.DROP_OLDEST,
        Kline: OverflowPolicy.DROP_OLDEST,
        Ticker: OverflowPolicy.CONFLATE,
        Depth: OverflowPolicy.CONFLATE,
        OrderBook: OverflowPolicy.CONFLATE,
        MarketState: OverflowPolicy.CONFLATE,
    }
)
"""The default policies: market data may drop; everything unregistered is never-drop."""


@attrs.frozen(kw_only=True)
class BusStatistics:
    """Counters since the bus was created; per-type maps are keyed by class name.

    ``published`` counts ``publish``/``publish_nowait`` calls that were accepted; ``delivered``
    counts events received by subscribers; ``dropped`` counts events discarded by an overflow
    policy (drop-oldest evictions and conflation replacements, per subscriber).
    """

    published: int
    delivered: int
    dropped: int
    published_by_type: Mapping[str, int]
    delivered_by_type: Mapping[str, int]
    dropped_by_type: Mapping[str, int]
    subscribers: int


@attrs.define(eq=False, slots=True)
class _Entry:
    """One queued event; ``key`` is set for conflated events (then ``event`` may be replaced)."""

    event: object
    droppable: bool
    key: tuple[type, object] | None = None


@attrs.define(eq=False)
class _Counters:
    published: Counter[str] = attrs.field(factory=Counter)
    delivered: Counter[str] = attrs.field(factory=Counter)
    dropped: Counter[str] = attrs.field(factory=Counter)


@attrs.define(eq=False)
class _Mailbox:
    """A subscriber's bounded channel; owned by the bus, drained by one :class:`Subscription`."""

    event_types: tuple[type, ...]
    capacity: int
    counters: _Counters
    entries: deque[_Entry] = attrs.field(factory=deque)
    conflated: dict[tuple[type, object], _Entry] = attrs.field(factory=dict)
    not_empty: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot)
    not_full: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot)
    send_closed: bool = False  # the bus was closed: drain, then EndOfChannel
    receive_closed: bool = False  # the subscriber left: nothing more is queued

    def wants(self, event_type: type) -> bool:
        return issubclass(event_type, self.event_types)

    def has_room(self) -> bool:
        return len(self.entries) < self.capacity

    def _evict_oldest_droppable(self) -> bool:
        for index, entry in enumerate(self.entries):
            if entry.droppable:
                del self.entries[index]
                if entry.key is not None:
                    del self.conflated[entry.key]
                self.counters.dropped[type(entry.event).__name__] += 1
                return True
        return False

    def can_take_never_drop(self) -> bool:
        return self.has_room() or any(entry.droppable for entry in self.entries)

    def put_never_drop(self, event: object) -> None:
        """Queue ``event``; the caller checked :meth:`can_take_never_drop`."""
        if not self.has_room():
            self._evict_oldest_droppable()
        self._append(_Entry(event, droppable=False))

    def put_droppable(self, event: object, policy: OverflowPolicy) -> None:
        """Queue a droppable ``event`` per ``policy``; never blocks."""
        key: tuple[type, object] | None = None
        if policy is OverflowPolicy.CONFLATE:
            key = (type(event), getattr(event, "symbol", None))
            queued = self.conflated.get(key)
            if queued is not None:
                self.counters.dropped[type(queued.event).__name__] += 1
                queued.event = event
                return
        if not self.has_room() and not self._evict_oldest_droppable():
            # Full of never-drop events: the new droppable event is the one that goes.
            self.counters.dropped[type(event).__name__] += 1
            return
        entry = _Entry(event, droppable=True, key=key)
        if key is not None:
            self.conflated[key] = entry
        self._append(entry)

    def _append(self, entry: _Entry) -> None:
        self.entries.append(entry)
        self.not_empty.unpark()

    def pop(self) -> object:
        entry = self.entries.popleft()
        if entry.key is not None:
            del self.conflated[entry.key]
        self.not_full.unpark()
        self.counters.delivered[type(entry.event).__name__] += 1
        return entry.event

    def close_receive(self) -> None:
        self.receive_closed = True
        self.entries.clear()
        self.conflated.clear()
        self.not_full.unpark_all()
        self.not_empty.unpark_all()

    def close_send(self) -> None:
        self.send_closed = True
        self.not_empty.unpark_all()
        self.not_full.unpark_all()


class Subscription(Generic[_E_co]):
    """A subscriber's view of the bus: receive events, iterate, close.

    Use it as ``async with bus.subscribe(Trade) as sub: async for trade in sub: ...``. Events
    published after :meth:`EventBus.subscribe` returned are queued, even before ``async with``.
    Closing (``aclose``, ``close`` or leaving the ``async with``) unregisters it and discards
    what is still queued; iteration ends cleanly once the bus is closed and the queue drained.
    One task should receive from a subscription; events are not shared between subscriptions.
    """

    def __init__(self, bus: EventBus, mailbox: _Mailbox) -> None:
        self._bus = bus
        self._mailbox = mailbox

    @property
    def event_types(self) -> tuple[type, ...]:
        """The types this subscription receives (and their subclasses)."""
        return self._mailbox.event_types

    @property
    def queued(self) -> int:
        """Events waiting to be received."""
        return len(self._mailbox.entries)

    def receive_nowait(self) -> _E_co:
        """The next queued event without waiting.

        Raises:
            trio.WouldBlock: nothing is queued.
            trio.EndOfChannel: the bus was closed and everything queued was received.
            trio.ClosedResourceError: this subscription was closed.
        """
        box = self._mailbox
        if box.receive_closed:
            raise trio.ClosedResourceError("subscription is closed")
        if box.entries:
            # The mailbox only ever holds events of the subscribed types (see EventBus._route).
            return box.pop()  # type: ignore[return-value]  # routed by type at publish time
        if box.send_closed:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> _E_co:
        """Wait for the next event. Cancellation leaves the queue untouched.

        Raises:
            trio.EndOfChannel: the bus was closed and everything queued was received.
            trio.ClosedResourceError: this subscription was closed (also while waiting).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            event = self.receive_nowait()
        except trio.WouldBlock:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()  # one was queued: still a yield
            return event
        while True:
            # The park was the schedule point: the event it waited for is handed over at once
            # (a second yield would cost every woken subscriber another pass of the run loop).
            await self._mailbox.not_empty.park()
            try:
                return self.receive_nowait()
            except trio.WouldBlock:
                continue

    def __aiter__(self) -> Subscription[_E_co]:
        return self

    async def __anext__(self) -> _E_co:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Unregister and discard queued events; idempotent. A blocked ``receive`` raises."""
        self._bus._unsubscribe(self._mailbox)

    async def aclose(self) -> None:
        """:meth:`close`, then a checkpoint."""
        self.close()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Subscription[_E_co]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


class EventBus:
    """Typed publish/subscribe over bounded per-subscriber channels.

    Args:
        policies: Overflow policy per event type, looked up along the event's MRO. Defaults to
            :data:`MARKET_DATA_POLICIES`.
        default_policy: The policy for types not in ``policies``; ``NEVER_DROP`` is the safe
            default (an unknown event is assumed to matter).
        default_buffer_size: Channel size for subscriptions that do not give one.

    The bus holds no tasks; it needs no ``async with``. :meth:`close` ends every subscription's
    iteration once its queue is drained.
    """

    def __init__(
        self,
        policies: Mapping[type, OverflowPolicy] = MARKET_DATA_POLICIES,
        *,
        default_policy: OverflowPolicy = OverflowPolicy.NEVER_DROP,
        default_buffer_size: int = DEFAULT_BUFFER_SIZE,
    ) -> None:
        if default_buffer_size < 1:
            raise ValueError("default_buffer_size must be >= 1")
        self._policies: Mapping[type, OverflowPolicy] = MappingProxyType(dict(policies))
        self._default_policy = default_policy
        self._default_buffer_size = default_buffer_size
        self._mailboxes: list[_Mailbox] = []
        self._routes: dict[type, tuple[_Mailbox, ...]] = {}
        self._policy_cache: dict[type, OverflowPolicy] = {}
        self._counters = _Counters()
        self._closed = False

    def policy_for(self, event_type: type) -> OverflowPolicy:
        """The overflow policy applied to events of ``event_type``."""
        policy = self._policy_cache.get(event_type)
        if policy is None:
            policy = next(
                (self._policies[t] for t in event_type.__mro__ if t in self._policies),
                self._default_policy,
            )
            self._policy_cache[event_type] = policy
        return policy

    def subscribe(self, *event_types: type[_E], buffer_size: int | None = None) -> Subscription[_E]:
        """Register a subscriber for ``event_types`` (and their subclasses).

        Args:
            event_types: One or more event classes; ``object`` receives everything.
            buffer_size: The subscriber's channel size (default: the bus's).

        Returns:
            The subscription; the caller closes it (``async with`` does).

        Raises:
            ValueError: no type given, or ``buffer_size < 1``.
            trio.ClosedResourceError: the bus is closed.
        """
        if not event_types:
            raise ValueError("subscribe to at least one event type")
        size = self._default_buffer_size if buffer_size is None else buffer_size
        if size < 1:
            raise ValueError("buffer_size must be >= 1")
        if self._closed:
            raise trio.ClosedResourceError("the event bus is closed")
        mailbox = _Mailbox(event_types=tuple(event_types), capacity=size, counters=self._counters)
        self._mailboxes.append(mailbox)
        self._routes.clear()
        logger.debug("bus.subscribe types=%s buffer_size=%d", mailbox.event_types, size)
        return Subscription(self, mailbox)

    def _unsubscribe(self, mailbox: _Mailbox) -> None:
        if mailbox.receive_closed:
            return
        mailbox.close_receive()
        if mailbox in self._mailboxes:
            self._mailboxes.remove(mailbox)
            self._routes.clear()

    def _route(self, event_type: type) -> tuple[_Mailbox, ...]:
        route = self._routes.get(event_type)
        if route is None:
            route = tuple(box for box in self._mailboxes if box.wants(event_type))
            self._routes[event_type] = route
        return route

    def publish_nowait(self, event: object) -> None:
        """Publish without waiting; what a full subscriber does is the type's policy.

        Delivery is all-or-nothing for never-drop events: if any subscriber of a ``NEVER_DROP``
        type is full of never-drop events, nobody receives it and ``WouldBlock`` is raised.

        Raises:
            trio.WouldBlock: a never-drop event found a subscriber with no room.
            trio.ClosedResourceError: the bus is closed.
        """
        if self._closed:
            raise trio.ClosedResourceError("the event bus is closed")
        event_type = type(event)
        policy = self.policy_for(event_type)
        route = self._route(event_type)
        if policy is OverflowPolicy.NEVER_DROP:
            if not all(box.can_take_never_drop() for box in route):
                raise trio.WouldBlock
            for box in route:
                box.put_never_drop(event)
        else:
            for box in route:
                box.put_droppable(event, policy)
        self._counters.published[event_type.__name__] += 1

    async def publish(self, event: object) -> None:
        """Publish, waiting for room where the type is never-drop (backpressure).

        Droppable types behave as :meth:`publish_nowait` plus a checkpoint. A never-drop event
        is queued for each subscriber in turn, waiting while that subscriber is full; a
        subscriber that closes meanwhile is skipped. If cancelled while waiting, the event has
        reached the subscribers before the one that was full, and not the others.

        Raises:
            trio.ClosedResourceError: the bus is (or got) closed.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        event_type = type(event)
        if self.policy_for(event_type) is not OverflowPolicy.NEVER_DROP:
            self.publish_nowait(event)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        if self._closed:
            raise trio.ClosedResourceError("the event bus is closed")
        for box in self._route(event_type):
            while not box.receive_closed and not box.can_take_never_drop():
                await box.not_full.park()
                if self._closed:
                    raise trio.ClosedResourceError("the event bus is closed")
            if not box.receive_closed:
                box.put_never_drop(event)
        self._counters.published[event_type.__name__] += 1
        await trio.lowlevel.cancel_shielded_checkpoint()

    def close(self) -> None:
        """Stop accepting events; subscribers drain their queues and then see end-of-channel.

        Publishers waiting for room raise ``ClosedResourceError``. Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        for box in self._mailboxes:
            box.close_send()
        logger.info("bus.closed subscribers=%d", len(self._mailboxes))

    def statistics(self) -> BusStatistics:
        """A snapshot of the bus counters."""
        counters = self._counters
        return BusStatistics(
            published=counters.published.total(),
            delivered=counters.delivered.total(),
            dropped=counters.dropped.total(),
            published_by_type=MappingProxyType(dict(counters.published)),
            delivered_by_type=MappingProxyType(dict(counters.delivered)),
            dropped_by_type=MappingProxyType(dict(counters.dropped)),
            subscribers=len(self._mailboxes),
        )
