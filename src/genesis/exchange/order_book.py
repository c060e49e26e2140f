"""Local order books from ``<symbol>@depth@100ms`` diff events and REST snapshots (FACTS.md §9).

```
run_order_books                     one connection of its own, role "order_book"
├── reader                          /stream?streams=<s1>@depth@100ms/<s2>@depth@100ms/...
│   └── LocalBook.on_update         per symbol: buffer, or apply; a gap → that symbol resyncs
│       └── bus.publish(OrderBook)  after every applied event (top ``levels``; CONFLATE)
└── one resync task per symbol      waits until its book needs a snapshot, fetches
                                    GET /api/v3/depth through the gateway, hands it over
```

Why a connection of its own: the three market-data connections carry ``depth20`` snapshots
that any one of them may deliver first; a diff stream cannot be merged that way (its events
chain by ``U``/``u`` on one connection), and one lost event means a resync anyway. A book
costs one extra connection for all its symbols, and a failure of that connection never
touches the trade feed. A book asks for its snapshot once its first event is buffered (so a
symbol whose book never changes has no book yet). When the connection drops, every book
resyncs from the new connection's events (a snapshot in flight across the drop is discarded);
when a single symbol's chain breaks (``U`` > book id + 1), only that symbol does, while the
reader goes on applying the others' events: the snapshot is fetched by that symbol's resync
task, and its events are buffered meanwhile.

:class:`LocalBook` is the pure core: no trio, no I/O, driven by :meth:`LocalBook.on_update`
and :meth:`LocalBook.on_snapshot` (property-tested). The procedure, per FACTS.md §9:

1. buffer the events; 2. fetch a snapshot; 3. if its ``lastUpdateId`` is below the first
buffered ``U``, fetch again; 4. drop buffered events with ``u`` <= ``lastUpdateId``;
5. the book is the snapshot, book id = ``lastUpdateId``; 6. apply buffered then live events:
``u`` <= book id is ignored, ``U`` > book id + 1 is a gap (throw the book away, back to 1),
else set every level's quantity (zero removes it) and book id = ``u``.

A snapshot holds at most ``snapshot_limit`` levels a side, so levels deeper than that stay
unknown until they change; publish fewer levels (``levels``) than you fetch.
"""

from __future__ import annotations

import enum
import heapq
import logging
import math
from collections import deque
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Final, NoReturn

import attrs
import trio
import trio_websocket
from wsproto.utilities import LocalProtocolError

from genesis.errors import CircuitOpenError, ExchangeError, ExchangeProtocolError, TransportError
from genesis.exchange.streams import combined_stream_url
from genesis.exchange.ws_connect import dial_guarded
from genesis.exchange.ws_errors import describe_error, first_leaf, translate_connect_error
from genesis.exchange.ws_manager import connect_tcp_websocket
from genesis.models.codec import decode_depth_update
from genesis.models.market import OrderBook, PriceLevel
from genesis.resilience.backoff import Backoff, BackoffPolicy

if TYPE_CHECKING:
    import random
    from collections.abc import Awaitable, Callable, Iterable, Sequence

    from genesis.bus import EventBus
    from genesis.exchange.ws_manager import WebSocket, WebSocketConnector
    from genesis.models.market import Depth, DepthUpdate
    from genesis.resilience.circuit_breaker import CircuitBreaker
    from genesis.resilience.connect_limiter import ConnectAttemptLimiter

__all__ = [
    "BookState",
    "LocalBook",
    "OrderBookConfig",
    "OrderBookStatistics",
    "OrderBooksHandle",
    "SnapshotVerdict",
    "UpdateVerdict",
    "order_book_streams",
    "run_order_books",
]

logger = logging.getLogger(__name__)

ROLE: Final = "order_book"
_WARN_EVERY_S: Final = 60.0
_ZERO: Final = Decimal(0)


class BookState(enum.Enum):
    """Where a book is in the procedure."""

    SYNCING = "syncing"
    """Buffering events until a usable snapshot arrives."""
    LIVE = "live"
    """Initialised; every event is applied or ignored, or is a gap."""


class UpdateVerdict(enum.Enum):
    """What :meth:`LocalBook.on_update` did with an event."""

    BUFFERED = "buffered"
    APPLIED = "applied"
    IGNORED = "ignored"
    """Older than the book (``u`` <= book id)."""
    GAP = "gap"
    """Events were missed: the book was thrown away; this event starts the new buffer."""


class SnapshotVerdict(enum.Enum):
    """What :meth:`LocalBook.on_snapshot` did with a snapshot."""

    LIVE = "live"
    TOO_OLD = "too_old"
    """``lastUpdateId`` < the first buffered ``U``: fetch again (FACTS.md §9 step 3)."""
    GAP = "gap"
    """The buffered events do not chain onto it: resync (the buffer restarts)."""
    NOT_SYNCING = "not_syncing"
    """The book was already live (a late snapshot): ignored."""


@attrs.define(eq=False)
class LocalBook:
    """One symbol's local book: the pure core of FACTS.md §9 (no trio, no I/O).

    Attributes:
        symbol: Upper-case symbol.
        max_buffer: Events buffered while syncing; beyond it the oldest are dropped, and
            since the first ``U`` then moves on, a snapshot must be newer (counted in
            ``buffer_overflows``).
    """

    symbol: str
    max_buffer: int = 10_000
    state: BookState = BookState.SYNCING
    last_update_id: int = 0
    event_time_ms: int = 0
    bids: dict[Decimal, Decimal] = attrs.field(factory=dict)
    asks: dict[Decimal, Decimal] = attrs.field(factory=dict)
    buffer: deque[DepthUpdate] = attrs.field(factory=deque)
    applied: int = 0
    ignored: int = 0
    gaps: int = 0
    syncs: int = 0
    snapshots_too_old: int = 0
    buffer_overflows: int = 0

    def reset(self) -> None:
        """Throw the book away and start buffering again (e.g. the connection was lost)."""
        self.state = BookState.SYNCING
        self.bids.clear()
        self.asks.clear()
        self.buffer.clear()
        self.last_update_id = 0

    def on_update(self, update: DepthUpdate) -> UpdateVerdict:
        """One diff event, in the order the connection delivered it."""
        if self.state is BookState.SYNCING:
            self.buffer.append(update)
            if len(self.buffer) > self.max_buffer:
                self.buffer.popleft()
                self.buffer_overflows += 1
            return UpdateVerdict.BUFFERED
        verdict = self._apply(update)
        if verdict is UpdateVerdict.GAP:
            self._gap(update)
        return verdict

    def on_snapshot(self, snapshot: Depth) -> SnapshotVerdict:
        """A REST snapshot (``GET /api/v3/depth``) fetched while syncing."""
        if self.state is not BookState.SYNCING:
            return SnapshotVerdict.NOT_SYNCING
        snapshot_id = snapshot.last_update_id
        if self.buffer and snapshot_id < self.buffer[0].first_update_id:
            self.snapshots_too_old += 1
            return SnapshotVerdict.TOO_OLD
        while self.buffer and self.buffer[0].final_update_id <= snapshot_id:
            self.buffer.popleft()
        self.bids = {level.price: level.quantity for level in snapshot.bids if level.quantity}
        self.asks = {level.price: level.quantity for level in snapshot.asks if level.quantity}
        self.last_update_id = snapshot_id
        self.event_time_ms = 0
        self.state = BookState.LIVE
        pending, self.buffer = self.buffer, deque()
        for update in pending:
            if self._apply(update) is UpdateVerdict.GAP:
                # The buffer itself has a hole (a lost event): start again from this event.
                self._gap(update)
                self.buffer.extend(u for u in pending if u.first_update_id > update.first_update_id)
                return SnapshotVerdict.GAP
        self.syncs += 1
        return SnapshotVerdict.LIVE

    def _apply(self, update: DepthUpdate) -> UpdateVerdict:
        if update.final_update_id <= self.last_update_id:
            self.ignored += 1
            return UpdateVerdict.IGNORED
        if update.first_update_id > self.last_update_id + 1:
            return UpdateVerdict.GAP
        _set_levels(self.bids, update.bids)
        _set_levels(self.asks, update.asks)
        self.last_update_id = update.final_update_id
        self.event_time_ms = update.event_time_ms
        self.applied += 1
        return UpdateVerdict.APPLIED

    def _gap(self, update: DepthUpdate) -> None:
        self.gaps += 1
        self.reset()
        self.buffer.append(update)

    def top(self, levels: int) -> OrderBook:
        """The best ``levels`` a side as an :class:`OrderBook` event (only when live)."""
        if self.state is not BookState.LIVE:
            raise RuntimeError(f"book {self.symbol} is not live")
        bid_prices = heapq.nlargest(levels, self.bids)
        ask_prices = heapq.nsmallest(levels, self.asks)
        return OrderBook(
            symbol=self.symbol,
            last_update_id=self.last_update_id,
            bids=tuple(PriceLevel(p, self.bids[p]) for p in bid_prices),
            asks=tuple(PriceLevel(p, self.asks[p]) for p in ask_prices),
            event_time_ms=self.event_time_ms,
        )


def _set_levels(side: dict[Decimal, Decimal], levels: Iterable[PriceLevel]) -> None:
    for level in levels:
        if level.quantity == _ZERO:
            side.pop(level.price, None)  # removing a level we never had is normal (FACTS §9)
        else:
            side[level.price] = level.quantity


# --- the task -------------------------------------------------------------------------------


def _positive_int(_inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be >= 1, got {value}")


@attrs.frozen(kw_only=True)
class OrderBookConfig:
    """Sizes and protocol deadlines of :func:`run_order_books`.

    Attributes:
        levels: Levels a side in each published :class:`OrderBook` (top of the book).
        snapshot_limit: ``limit`` of the REST snapshot (weight 5 up to 100, 25 to 500, 50 to
            1000, 250 to 5000); more than ``levels`` so removals deep in the top are known.
        speed_ms: The diff stream's speed (100 or 1000).
        connect_timeout_s: One connection attempt, handshake included.
        stale_after_s: No frame for this long ends the connection (a diff event comes every
            ``speed_ms`` while the book changes; the server pings every 20 s).
        snapshot_retry_s: Wait before fetching again after a snapshot older than the buffer.
        max_buffer: Events buffered per symbol while its snapshot is fetched.
        message_queue_size: trio-websocket's queue of received messages.
        backoff: Reconnect and snapshot-retry schedule.
    """

    levels: int = attrs.field(default=100, validator=_positive_int)
    snapshot_limit: int = attrs.field(default=1000, validator=_positive_int)
    speed_ms: int = attrs.field(default=100, validator=attrs.validators.in_((100, 1000)))
    connect_timeout_s: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    stale_after_s: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    snapshot_retry_s: float = attrs.field(default=0.25, validator=attrs.validators.ge(0))
    max_buffer: int = attrs.field(default=10_000, validator=_positive_int)
    message_queue_size: int = attrs.field(default=1024, validator=_positive_int)
    backoff: BackoffPolicy = attrs.field(factory=BackoffPolicy)


@attrs.frozen(kw_only=True)
class OrderBookStatistics:
    """One book's counters (:meth:`OrderBooksHandle.statistics`)."""

    symbol: str
    state: BookState
    last_update_id: int
    applied: int
    ignored: int
    gaps: int
    syncs: int
    snapshots: int
    snapshots_too_old: int
    snapshot_errors: int
    buffer_overflows: int
    published: int


def order_book_streams(symbols: Sequence[str], speed_ms: int = 100) -> list[str]:
    """``<symbol>@depth@100ms`` (or ``@depth`` at 1000 ms) for each symbol."""
    suffix = "@depth@100ms" if speed_ms == 100 else "@depth"
    return [f"{symbol.lower()}{suffix}" for symbol in symbols]


@attrs.define(eq=False)
class _Book:
    core: LocalBook
    wanted: trio.Event = attrs.field(factory=trio.Event)
    """Set when the book needs a snapshot; the resync task clears it (a new Event)."""
    generation: int = 0
    """Counts connection losses; a snapshot fetched across one is discarded."""
    snapshots: int = 0
    snapshot_errors: int = 0
    published: int = 0

    def want_snapshot(self) -> None:
        self.wanted.set()


@attrs.define(eq=False)
class OrderBooksHandle:
    """What :func:`run_order_books` hands to ``nursery.start``."""

    _books: dict[str, _Book]
    reconnects: int = 0
    decode_errors: int = 0
    _warned_at: float = -math.inf

    def bad_frame(self, reason: str) -> None:
        """Count a frame that is no usable diff event; log it at most once a minute."""
        self.decode_errors += 1
        now = trio.current_time()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            logger.warning("book.bad_frame count=%d reason=%s", self.decode_errors, reason)

    def statistics(self) -> tuple[OrderBookStatistics, ...]:
        """One row per symbol, in configuration order."""
        return tuple(
            OrderBookStatistics(
                symbol=symbol,
                state=book.core.state,
                last_update_id=book.core.last_update_id,
                applied=book.core.applied,
                ignored=book.core.ignored,
                gaps=book.core.gaps,
                syncs=book.core.syncs,
                snapshots=book.snapshots,
                snapshots_too_old=book.core.snapshots_too_old,
                snapshot_errors=book.snapshot_errors,
                buffer_overflows=book.core.buffer_overflows,
                published=book.published,
            )
            for symbol, book in self._books.items()
        )

    def book(self, symbol: str) -> OrderBook | None:
        """``symbol``'s whole local book now (every level), or None while it syncs."""
        core = self._books[symbol].core
        return core.top(10**9) if core.state is BookState.LIVE else None


async def run_order_books(
    stream_base_url: str,
    symbols: Sequence[str],
    bus: EventBus,
    fetch_depth: Callable[[str, int], Awaitable[Depth]],
    *,
    config: OrderBookConfig | None = None,
    connector: WebSocketConnector = connect_tcp_websocket,
    breaker: CircuitBreaker | None = None,
    attempt_limiter: ConnectAttemptLimiter | None = None,
    rng: random.Random | None = None,
    task_status: trio.TaskStatus[OrderBooksHandle] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Keep a local book per symbol and publish an :class:`OrderBook` after every applied event.

    Args:
        stream_base_url: The market-stream base (``wss://stream.binance.com:9443``).
        symbols: Upper-case symbols, one book each.
        bus: Where the :class:`OrderBook` events go (CONFLATE per symbol on the bus).
        fetch_depth: ``Gateway.depth`` (``symbol, limit``): the REST snapshot, through the
            gateway's limiter and breaker.
        config: Sizes and deadlines (default :class:`OrderBookConfig`).
        connector: The WebSocket seam (role ``order_book``).
        breaker: Wraps every connect (the market data's ``streams`` breaker in ``genesis run``:
            one exchange surface, one breaker); while it is open an attempt is refused without
            dialling and counts as a lost connection (backoff).
        attempt_limiter: The connection-attempt budget shared with the market data and the user
            stream (Binance: 300 per 5 minutes per IP); a token is taken before each attempt,
            outside its connect timeout.
        rng: Backoff jitter when ``config.backoff`` asks for it.
        task_status: Receives the :class:`OrderBooksHandle` once the stream is connected.

    Runs until cancelled; never raises for the exchange's failures (a lost connection
    reconnects with backoff, a failed snapshot is retried). Cancellation closes the connection.
    """
    config = config or OrderBookConfig()
    if not symbols:
        raise ValueError("run_order_books needs at least one symbol")
    books = {s: _Book(LocalBook(s, max_buffer=config.max_buffer)) for s in symbols}
    handle = OrderBooksHandle(books)
    url = combined_stream_url(stream_base_url, order_book_streams(symbols, config.speed_ms))
    backoff = Backoff(config.backoff, rng)
    dial = _Dialler(url, config, connector, breaker, attempt_limiter)
    async with trio.open_nursery() as nursery:
        for book in books.values():
            nursery.start_soon(_resync, book, bus, fetch_depth, config, rng)
        started = False

        def on_connected() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started(handle)

        while True:
            error = await _session(dial, books, handle, bus, config, backoff, on_connected)
            # Started once connected, or after a first attempt that failed: the books are an
            # optional view and must never hold up the tree's start.
            on_connected()
            for book in books.values():
                # Not live again before the new connection delivers: its first event asks
                # for the snapshot; one in flight now is stale (``generation``).
                book.core.reset()
                book.generation += 1
            handle.reconnects += 1
            delay = backoff.mark_failed(trio.current_time())
            logger.warning("book.reconnect delay_s=%.1f reason=%s", delay, error)
            await trio.sleep(delay)


async def _session(
    dial: _Dialler,
    books: dict[str, _Book],
    handle: OrderBooksHandle,
    bus: EventBus,
    config: OrderBookConfig,
    backoff: Backoff,
    on_connected: Callable[[], None],
) -> str:
    """One connection: dial, read until it fails; returns why it ended."""
    error = "ended"
    try:
        async with trio.open_nursery() as nursery:
            ws = await dial(nursery)
            try:
                logger.info("book.connected symbols=%s", ",".join(books))
                on_connected()
                await _read(ws, books, handle, bus, config, backoff)
            finally:
                await _close(ws)
                nursery.cancel_scope.cancel()
    except* (TransportError, CircuitOpenError, trio_websocket.ConnectionClosed) as group:
        error = describe_error(first_leaf(group))
    except* (trio_websocket.HandshakeError, OSError) as group:
        error = describe_error(translate_connect_error(first_leaf(group)))
    except* LocalProtocolError as group:
        # trio-websocket#184 (see ws_manager): a ping crossing our close frame; the connection
        # is over either way.
        error = describe_error(first_leaf(group))
    return error


@attrs.frozen
class _Dialler:
    """One connect attempt: the budget's token, then the breaker's guard around the timeout."""

    url: str
    config: OrderBookConfig
    connector: WebSocketConnector
    breaker: CircuitBreaker | None
    attempt_limiter: ConnectAttemptLimiter | None

    async def __call__(self, nursery: trio.Nursery) -> WebSocket:
        if self.attempt_limiter is not None:
            await self.attempt_limiter.acquire(ROLE)
        return await dial_guarded(self.breaker, partial(self._dial, nursery), _close)

    async def _dial(self, nursery: trio.Nursery) -> WebSocket:
        config = self.config
        with trio.move_on_after(config.connect_timeout_s):
            try:
                return await self.connector(
                    nursery, self.url, message_queue_size=config.message_queue_size, role=ROLE
                )
            except (trio_websocket.HandshakeError, OSError) as exc:
                raise translate_connect_error(exc) from exc
        raise TransportError(f"connect timed out after {config.connect_timeout_s:g} s")


async def _close(ws: WebSocket) -> None:
    """Close ``ws``, shielded and bounded (also while the task is being cancelled)."""
    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
        await ws.aclose()


async def _read(
    ws: WebSocket,
    books: dict[str, _Book],
    handle: OrderBooksHandle,
    bus: EventBus,
    config: OrderBookConfig,
    backoff: Backoff,
) -> NoReturn:
    while True:
        with trio.move_on_after(config.stale_after_s) as stale_scope:
            message = await ws.get_message()
        if stale_scope.cancelled_caught:
            raise TransportError(f"no frame for {config.stale_after_s:g} s")
        backoff.mark_healthy(trio.current_time())
        await _on_message(message, books, handle, bus, config)


async def _on_message(
    message: str | bytes,
    books: dict[str, _Book],
    handle: OrderBooksHandle,
    bus: EventBus,
    config: OrderBookConfig,
) -> None:
    try:
        update = decode_depth_update(message)
    except ExchangeProtocolError as exc:
        handle.bad_frame(str(exc))
        return
    book = books.get(update.symbol)
    if book is None:
        handle.bad_frame(f"unknown symbol {update.symbol[:20]!r}")
        return
    verdict = book.core.on_update(update)
    if verdict is UpdateVerdict.BUFFERED and len(book.core.buffer) == 1:
        # FACTS §9 steps 1-2: the first event is buffered, now the snapshot.
        book.want_snapshot()
    elif verdict is UpdateVerdict.APPLIED:
        book.published += 1
        await bus.publish(book.core.top(config.levels))
    elif verdict is UpdateVerdict.GAP:
        logger.warning(
            "book.gap symbol=%s first_update_id=%d book_id_was_below=%d",
            update.symbol,
            update.first_update_id,
            update.first_update_id - 1,
        )
        book.want_snapshot()


async def _resync(
    book: _Book,
    bus: EventBus,
    fetch_depth: Callable[[str, int], Awaitable[Depth]],
    config: OrderBookConfig,
    rng: random.Random | None,
) -> NoReturn:
    """Fetch a snapshot whenever ``book`` needs one; retries until it is live again."""
    failures = Backoff(config.backoff, rng)
    while True:
        await book.wanted.wait()
        book.wanted = trio.Event()
        while book.core.state is BookState.SYNCING and book.core.buffer:
            generation = book.generation
            try:
                snapshot = await fetch_depth(book.core.symbol, config.snapshot_limit)
            except ExchangeError as exc:
                book.snapshot_errors += 1
                delay = failures.mark_failed(trio.current_time())
                logger.warning(
                    "book.snapshot_failed symbol=%s delay_s=%.1f error=%s",
                    book.core.symbol,
                    delay,
                    describe_error(exc),
                )
                await trio.sleep(delay)
                continue
            book.snapshots += 1
            if book.generation != generation:
                logger.info(
                    "book.snapshot_discarded symbol=%s reason=reconnected", book.core.symbol
                )
                break
            verdict = book.core.on_snapshot(snapshot)
            logger.info(
                "book.snapshot symbol=%s last_update_id=%d verdict=%s",
                book.core.symbol,
                snapshot.last_update_id,
                verdict.value,
            )
            if verdict is SnapshotVerdict.LIVE:
                failures = Backoff(config.backoff, rng)
                book.published += 1
                await bus.publish(book.core.top(config.levels))
            elif verdict is SnapshotVerdict.TOO_OLD:
                await trio.sleep(config.snapshot_retry_s)
            else:
                await trio.lowlevel.checkpoint()
