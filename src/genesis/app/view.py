"""What the operator's dashboard shows, as a pure, synchronous model (no I/O, no rendering).

:class:`OpsView` folds bus events (:meth:`OpsView.apply`) and polled statistics
(:meth:`OpsView.observe`) into state, and :meth:`OpsView.snapshot` turns it into a frozen
:class:`ViewSnapshot` for a given Trio time ``now``. :mod:`genesis.app.dashboard` renders
snapshots with rich (terminal) or as log lines (pipe, file); tests assert on snapshots directly.

Sources, freshest first:

- **symbols**: last price from :class:`Trade` (a :class:`Ticker`'s until the first trade), with
  the tick direction of the last change; bid/ask/spread from :class:`OrderBook` or
  :class:`Depth` (the ticker's until the first book); 24 h change % and volume from the ticker;
  the current 1-minute :class:`Kline`; the :class:`MarketState`. A row's age is the time since
  any market event for the symbol; a row is *stale* when that exceeds :data:`STALE_AFTER_S`
  (counted from the start before the first event), or at once for every row while the feed is
  down (:class:`FeedDown` until :class:`FeedUp`).
- **connections**: :class:`ConnectionHealth`, published by the heartbeat or polled from the
  market-data handle; the last-frame age keeps counting between snapshots.
- **breakers**: :class:`BreakerTransition` events and polled breaker statistics, with the time
  until an open breaker half-opens.
- **limiter**: usage per bucket of the gateway's rate limiter (polled), and the clock offset.
- **account**: balances (an initial account query, then :class:`AccountBalances`) and open
  orders (:class:`OrderUpdate` until a terminal status).
- **alerts**: the newest :data:`MAX_ALERTS` :class:`Alert` events, newest first.
- **order side**: the supervisor's record of the reconciler and the user data stream (polled):
  crashes, restarts, the last error and when a crashed one restarts. The user stream's header
  state is ``crashed`` while it waits to restart and ``restarting`` until it is up again, then
  again the state of its latest :class:`UserStreamStatus`.
"""

from __future__ import annotations

import enum
from collections import deque
from decimal import Decimal
from typing import TYPE_CHECKING, Final, Protocol

import attrs

from genesis.app.supervisor import SupervisedState
from genesis.models.events import (
    AccountBalances,
    Alert,
    BreakerState,
    BreakerTransition,
    ConnectionHealth,
    FeedDown,
    FeedGap,
    FeedUp,
    OrderUpdate,
    SequenceReset,
    UserStreamStatus,
)
from genesis.models.market import Depth, Kline, OrderBook, Ticker, Trade
from genesis.models.state import MarketCondition, MarketState

if TYPE_CHECKING:
    from collections.abc import Mapping

    from genesis.app.supervisor import SupervisorStatistics
    from genesis.exchange.gateway import GatewayStatistics
    from genesis.exchange.ws_manager import MarketDataStatistics
    from genesis.models.account import Account, Balance
    from genesis.models.orders import Order
    from genesis.resilience.circuit_breaker import BreakerStatistics

__all__ = [
    "KLINE_INTERVAL",
    "MAX_ALERTS",
    "MAX_ORDERS",
    "STALE_AFTER_S",
    "VIEW_EVENT_TYPES",
    "AlertRow",
    "BreakerRow",
    "BreakerSource",
    "ConnectionRow",
    "GatewayStatisticsSource",
    "Header",
    "LimiterBar",
    "MarketDataSource",
    "OpsView",
    "OrderRow",
    "OrderSideRow",
    "Sources",
    "SupervisionSource",
    "SymbolRow",
    "Tick",
    "ViewSnapshot",
]

STALE_AFTER_S: Final = 5.0
"""A symbol without any market event for this long is shown stale (ticker and depth20 arrive
every second or faster on a live feed)."""
MAX_ALERTS: Final = 8
MAX_ORDERS: Final = 12
KLINE_INTERVAL: Final = "1m"

VIEW_EVENT_TYPES: Final[tuple[type[object], ...]] = (
    Trade,
    Ticker,
    Depth,
    OrderBook,
    Kline,
    MarketState,
    ConnectionHealth,
    FeedDown,
    FeedUp,
    FeedGap,
    SequenceReset,
    BreakerTransition,
    AccountBalances,
    OrderUpdate,
    Alert,
    UserStreamStatus,
)
"""Every event type :meth:`OpsView.apply` understands (what the dashboard subscribes to)."""


class Tick(enum.Enum):
    """Direction of the last change of the last price."""

    UP = "up"
    DOWN = "down"
    FLAT = "flat"


class MarketDataSource(Protocol):
    """Anything with market-data statistics (the ``MarketDataHandle``)."""

    def statistics(self) -> MarketDataStatistics: ...


class GatewayStatisticsSource(Protocol):
    """Anything with gateway statistics (:class:`~genesis.exchange.gateway.Gateway`)."""

    def statistics(self) -> GatewayStatistics: ...


class BreakerSource(Protocol):
    """Anything with breaker statistics (a ``CircuitBreaker``)."""

    def statistics(self) -> BreakerStatistics: ...


class SupervisionSource(Protocol):
    """Anything with supervisor statistics (:class:`~genesis.app.supervisor.Supervision`)."""

    def statistics(self) -> SupervisorStatistics: ...


@attrs.define(kw_only=True)
class Sources:
    """What the dashboard polls besides the bus; any of them may be attached later.

    ``order_side``: the supervised order-side services by name (``reconciler``, ``user_stream``).
    """

    market_data: MarketDataSource | None = None
    gateway: GatewayStatisticsSource | None = None
    breakers: Mapping[str, BreakerSource] = attrs.field(factory=dict)
    order_side: Mapping[str, SupervisionSource] = attrs.field(factory=dict)


# --- the snapshot --------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class OrderSideRow:
    """One supervised order-side service; ``restart_in_s`` while a crashed one waits."""

    name: str
    state: SupervisedState
    crashes: int
    restarts: int
    last_error: str | None
    restart_in_s: float | None


@attrs.frozen(kw_only=True)
class Header:
    """mode: ``SIMULATOR``, ``TESTNET``, ``PRODUCTION`` or ``REPLAY``.

    user_stream: the user stream's state (``subscribed``, ``backoff`` … or ``crashed`` /
    ``restarting`` after a crash); ``None`` before anything is known. order_side: each
    supervised service, by name.
    """

    mode: str
    uptime_s: float
    clock_offset_ms: float | None
    feed_down: bool
    feed_down_reason: str | None
    feed_gaps: int
    sequence_resets: int
    user_stream: str | None
    order_side: tuple[OrderSideRow, ...] = ()


@attrs.frozen(kw_only=True)
class SymbolRow:
    symbol: str
    last: Decimal | None = None
    tick: Tick = Tick.FLAT
    bid: Decimal | None = None
    ask: Decimal | None = None
    spread_bps: Decimal | None = None
    change_pct: Decimal | None = None
    volume: Decimal | None = None
    kline_open: Decimal | None = None
    kline_high: Decimal | None = None
    kline_low: Decimal | None = None
    kline_close: Decimal | None = None
    state: MarketCondition | None = None
    age_s: float | None = None
    stale: bool = False

    @property
    def has_data(self) -> bool:
        return any(v is not None for v in (self.last, self.bid, self.ask, self.kline_close))


@attrs.frozen(kw_only=True)
class ConnectionRow:
    role: str
    state: str
    uptime_s: float
    frames_per_s: float
    last_frame_age_s: float | None
    ping_rtt_ms: float | None
    reconnects: int
    first_share: float
    last_error: str | None


@attrs.frozen(kw_only=True)
class BreakerRow:
    """half_open_in_s: seconds until an open breaker lets a probe through (else ``None``)."""

    name: str
    state: BreakerState
    half_open_in_s: float | None
    reason: str | None


@attrs.frozen(kw_only=True)
class LimiterBar:
    """One rate-limit bucket: ``name`` like ``REQUEST_WEIGHT/1M``."""

    name: str
    used: int
    limit: int

    @property
    def fraction(self) -> float:
        return min(1.0, self.used / self.limit) if self.limit > 0 else 0.0


@attrs.frozen(kw_only=True)
class OrderRow:
    client_order_id: str
    symbol: str
    side: str
    type: str
    price: Decimal | None
    quantity: Decimal
    filled: Decimal
    status: str


@attrs.frozen(kw_only=True)
class AlertRow:
    kind: str
    severity: str
    subject: str
    message: str
    at_ms: int


@attrs.frozen(kw_only=True)
class ViewSnapshot:
    header: Header
    symbols: tuple[SymbolRow, ...]
    connections: tuple[ConnectionRow, ...]
    breakers: tuple[BreakerRow, ...]
    limiter: tuple[LimiterBar, ...]
    balances: tuple[Balance, ...]
    orders: tuple[OrderRow, ...]
    alerts: tuple[AlertRow, ...]


# --- the model -----------------------------------------------------------------------------


@attrs.define(kw_only=True)
class _SymbolState:
    row: SymbolRow
    last_from_trade: bool = False
    book_from_depth: bool = False
    last_event_at: float | None = None


@attrs.define(kw_only=True)
class _BreakerState:
    state: BreakerState
    half_open_at: float | None
    reason: str | None


def _order_row(order: Order) -> OrderRow:
    return OrderRow(
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=order.side.value,
        type=order.type.value,
        price=order.price,
        quantity=order.quantity,
        filled=order.filled_quantity,
        status=order.status_name,
    )


@attrs.define
class OpsView:
    """The dashboard's state. Pure and synchronous: every method takes Trio time ``now``.

    Args:
        symbols: the symbols shown, in this order (events for others are ignored); empty to
            show every symbol that appears, in order of appearance (a replay).
        mode: the header's mode label.
        started_at: Trio time of the start (uptime and staleness before the first event).
    """

    symbols: tuple[str, ...]
    mode: str
    started_at: float
    _symbols: dict[str, _SymbolState] = attrs.field(init=False)
    _connections: dict[str, tuple[ConnectionHealth, float]] = attrs.field(init=False, factory=dict)
    _breakers: dict[str, _BreakerState] = attrs.field(init=False, factory=dict)
    _limiter: tuple[LimiterBar, ...] = attrs.field(init=False, default=())
    _clock_offset_ms: float | None = attrs.field(init=False, default=None)
    _feed_down: FeedDown | None = attrs.field(init=False, default=None)
    _feed_gaps: int = attrs.field(init=False, default=0)
    _sequence_resets: int = attrs.field(init=False, default=0)
    _user_stream: str | None = attrs.field(init=False, default=None)
    _order_side: dict[str, SupervisorStatistics] = attrs.field(init=False, factory=dict)
    _balances: dict[str, Balance] = attrs.field(init=False, factory=dict)
    _orders: dict[str, OrderRow] = attrs.field(init=False, factory=dict)
    _alerts: deque[AlertRow] = attrs.field(init=False, factory=lambda: deque(maxlen=MAX_ALERTS))

    def __attrs_post_init__(self) -> None:
        self._symbols = {s: _SymbolState(row=SymbolRow(symbol=s)) for s in self.symbols}

    # -- events ------------------------------------------------------------------------------

    def apply(self, event: object, now: float) -> bool:
        """Fold ``event`` in. Returns whether anything shown may have changed."""
        if isinstance(event, Trade | Ticker | Depth | OrderBook | Kline | MarketState):
            return self._apply_market(event, now)
        if isinstance(event, ConnectionHealth):
            self._connections[event.role] = (event, now)
        elif isinstance(event, BreakerTransition):
            half_open_at = (
                event.at + event.retry_after_s if event.state is BreakerState.OPEN else None
            )
            self._breakers[event.name] = _BreakerState(
                state=event.state, half_open_at=half_open_at, reason=event.reason
            )
        elif isinstance(event, FeedDown):
            self._feed_down = event
        elif isinstance(event, FeedUp):
            self._feed_down = None
        elif isinstance(event, FeedGap):
            self._feed_gaps += 1
        elif isinstance(event, SequenceReset):
            self._sequence_resets += 1
        elif isinstance(event, AccountBalances):
            self._balances.update({b.asset: b for b in event.balances})
        elif isinstance(event, OrderUpdate):
            self._apply_order(event.order)
        elif isinstance(event, Alert):
            self._alerts.appendleft(
                AlertRow(
                    kind=event.kind.value,
                    severity=event.severity.value,
                    subject=event.subject,
                    message=event.message,
                    at_ms=event.at_ms,
                )
            )
        elif isinstance(event, UserStreamStatus):
            self._user_stream = event.state.value
        else:
            return False
        return True

    def _apply_order(self, order: Order) -> None:
        if order.status.is_terminal:
            self._orders.pop(order.client_order_id, None)
        else:
            self._orders[order.client_order_id] = _order_row(order)

    def _apply_market(
        self, event: Trade | Ticker | Depth | OrderBook | Kline | MarketState, now: float
    ) -> bool:
        state = self._symbols.get(event.symbol)
        if state is None:
            if self.symbols:
                return False
            state = self._symbols[event.symbol] = _SymbolState(row=SymbolRow(symbol=event.symbol))
        state.last_event_at = now
        row = state.row
        if isinstance(event, Trade):
            row = _with_last(row, event.price)
            state.last_from_trade = True
        elif isinstance(event, Depth | OrderBook):
            bid, ask = event.best_bid, event.best_ask
            row = attrs.evolve(
                row,
                bid=bid.price if bid else None,
                ask=ask.price if ask else None,
                spread_bps=_spread_bps(bid.price if bid else None, ask.price if ask else None),
            )
            state.book_from_depth = True
        elif isinstance(event, Ticker):
            row = attrs.evolve(row, change_pct=event.price_change_percent, volume=event.volume)
            if not state.last_from_trade:
                row = _with_last(row, event.last_price)
            if not state.book_from_depth:
                row = attrs.evolve(
                    row, bid=event.best_bid, ask=event.best_ask, spread_bps=event.spread_bps
                )
        elif isinstance(event, Kline):
            if event.interval != KLINE_INTERVAL:
                return False
            row = attrs.evolve(
                row,
                kline_open=event.open_price,
                kline_high=event.high_price,
                kline_low=event.low_price,
                kline_close=event.close_price,
            )
        else:
            row = attrs.evolve(row, state=event.state)
        state.row = row
        return True

    def adopt_account(self, account: Account) -> None:
        """Balances from an account query (the initial one; events update them later)."""
        self._balances = dict(account.balances)

    # -- polled statistics -------------------------------------------------------------------

    def observe(self, sources: Sources, now: float) -> None:
        """Read what the sources know now (connections, breakers, limiter, clock offset)."""
        if sources.market_data is not None:
            for health in sources.market_data.statistics().connections:
                self._connections[health.role] = (health, now)
        if sources.gateway is not None:
            stats = sources.gateway.statistics()
            self._limiter = tuple(
                LimiterBar(name=f"{b.type.value}/{b.interval}", used=b.used, limit=b.limit)
                for b in stats.limiter.buckets
            )
            if stats.time_sync.synced:
                self._clock_offset_ms = stats.time_sync.offset_ms
        for name, supervision in sources.order_side.items():
            self._order_side[name] = supervision.statistics()
        for name, breaker in sources.breakers.items():
            b = breaker.statistics()
            previous = self._breakers.get(name)
            self._breakers[name] = _BreakerState(
                state=b.state,
                half_open_at=now + b.retry_after_s if b.state is BreakerState.OPEN else None,
                reason=previous.reason if previous is not None else None,
            )

    # -- the snapshot ------------------------------------------------------------------------

    def snapshot(self, now: float) -> ViewSnapshot:
        """Everything shown, as of ``now``."""
        down = self._feed_down
        header = Header(
            mode=self.mode,
            uptime_s=max(0.0, now - self.started_at),
            clock_offset_ms=self._clock_offset_ms,
            feed_down=down is not None,
            feed_down_reason=None if down is None else down.reason,
            feed_gaps=self._feed_gaps,
            sequence_resets=self._sequence_resets,
            user_stream=self._user_stream_state(),
            order_side=tuple(
                _order_side_row(self._order_side[name], now) for name in sorted(self._order_side)
            ),
        )
        return ViewSnapshot(
            header=header,
            symbols=tuple(self._symbol_row(state, now) for state in self._symbols.values()),
            connections=tuple(
                _connection_row(health, seen_at, now)
                for health, seen_at in (self._connections[r] for r in sorted(self._connections))
            ),
            breakers=tuple(
                BreakerRow(
                    name=name,
                    state=b.state,
                    half_open_in_s=None
                    if b.half_open_at is None
                    else max(0.0, b.half_open_at - now),
                    reason=b.reason,
                )
                for name, b in sorted(self._breakers.items())
            ),
            limiter=self._limiter,
            balances=tuple(
                b for _, b in sorted(self._balances.items()) if b.free != 0 or b.locked != 0
            ),
            orders=tuple(self._orders[k] for k in sorted(self._orders))[:MAX_ORDERS],
            alerts=tuple(self._alerts),
        )

    def _user_stream_state(self) -> str | None:
        supervised = self._order_side.get("user_stream")
        if supervised is not None and supervised.crashes:
            # The crashed service published nothing: its last status is stale until it is up.
            if supervised.state is SupervisedState.BACKOFF:
                return "crashed"
            if supervised.state is SupervisedState.STARTING:
                return "restarting"
        return self._user_stream

    def _symbol_row(self, state: _SymbolState, now: float) -> SymbolRow:
        since = state.last_event_at if state.last_event_at is not None else self.started_at
        age_s = None if state.last_event_at is None else max(0.0, now - state.last_event_at)
        stale = self._feed_down is not None or now - since > STALE_AFTER_S
        return attrs.evolve(state.row, age_s=age_s, stale=stale)


def _order_side_row(stats: SupervisorStatistics, now: float) -> OrderSideRow:
    return OrderSideRow(
        name=stats.name,
        state=stats.state,
        crashes=stats.crashes,
        restarts=stats.restarts,
        last_error=stats.last_error,
        restart_in_s=None if stats.restart_at is None else max(0.0, stats.restart_at - now),
    )


def _with_last(row: SymbolRow, price: Decimal) -> SymbolRow:
    tick = row.tick
    if row.last is not None and price != row.last:
        tick = Tick.UP if price > row.last else Tick.DOWN
    return attrs.evolve(row, last=price, tick=tick)


_BPS: Final = Decimal(10_000)


def _spread_bps(bid: Decimal | None, ask: Decimal | None) -> Decimal | None:
    if bid is None or ask is None or bid <= 0 or ask <= 0:
        return None
    mid = (bid + ask) / 2
    return (ask - bid) / mid * _BPS


def _connection_row(health: ConnectionHealth, seen_at: float, now: float) -> ConnectionRow:
    elapsed = max(0.0, now - seen_at)
    connected = health.state.value == "connected"
    return ConnectionRow(
        role=health.role,
        state=health.state.value,
        uptime_s=health.uptime_s + elapsed if connected else 0.0,
        frames_per_s=health.messages_per_s,
        last_frame_age_s=None
        if health.last_frame_age_s is None
        else health.last_frame_age_s + elapsed,
        ping_rtt_ms=health.ping_rtt_ms,
        reconnects=health.reconnects,
        first_share=health.first_share,
        last_error=health.last_error,
    )
