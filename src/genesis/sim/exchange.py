"""The simulator's exchange core: accounts, order books, matching, market data, user events.

Pure and synchronous: every call that depends on time takes ``now_ms`` (epoch ms, from
:class:`genesis.sim.clock.SimClock`), so the REST server, the WS API and the market maker drive it
from their Trio tasks and tests drive it with plain numbers. Nothing here blocks or awaits.

Contract for the other simulator modules (REST, streams, WS API, market feed):

* Validation follows Binance (FACTS.md §3, §5). A rejected request raises :class:`SimReject`
  (``code``, ``msg``); REST answers ``{"code": code, "msg": msg}`` with HTTP 400. Numeric
  parameters may be passed as the raw wire strings (the engine owns -1100/-1111/-1013 checks).
* Results are frozen snapshots (:class:`Order`, :class:`Fill`, :class:`AccountTrade`). Wire
  forms come from :func:`result_to_wire` (ACK/RESULT/FULL), :func:`order_to_wire` (GET order,
  openOrders, allOrders, cancel responses), :func:`account_trade_to_wire` (myTrades rows) and the
  market-data methods, which return wire objects directly.
* Listeners are plain sync callables called after each engine operation completes (never in the
  middle of matching), in this order: public trades, the book diff, user events, first fills.
  They must not block; they may call back into the exchange.
  - ``add_trade_listener(cb(symbol, trades))``: public trades of one operation (for ``@trade``
    and ``@aggTrade``);
  - ``add_book_listener(cb(diff))``: one :class:`BookDiff` per operation that changed a book
    (``@depth`` diffs and ``@bookTicker``); ``U``/``u`` chain without gaps;
  - ``add_user_listener(api_key, cb(event))``: wire-form ``executionReport`` and
    ``outboundAccountPosition`` dicts for that account (the WS API wraps them as
    ``{"subscriptionId": N, "event": {...}}``); built only when someone listens;
  - ``add_first_fill_listener(cb(api_key, order))``: an order got its first fill in an operation
    *other than its own placement* (a resting order hit later, a stop order triggered later).
    First fills during placement are reported in :attr:`OrderResult.first_fill` instead, so the
    rate limiter decrements the unfilled-order count exactly once per order.
* Memory is bounded: public trades per symbol (:data:`MAX_TRADES_PER_SYMBOL`), closed orders and
  own trades per account (:data:`MAX_CLOSED_ORDERS_PER_ACCOUNT`, :data:`MAX_TRADES_PER_ACCOUNT`),
  1-second buckets (:data:`SECOND_BUCKETS`) and 1-minute buckets (:data:`MINUTE_BUCKETS`) per
  symbol for klines and the rolling 24 h ticker. Older history is forgotten (queries for it
  return nothing, and ``GET order`` for a forgotten order answers -2013).

Beyond the names in the brief: ``place_order(..., test=True)`` serves ``POST order/test``;
``ticker_stats``, ``kline``, ``book_levels``, ``top_of_book``, ``update_id`` and
``last_price`` feed the stream payloads; ``open_order_ids`` serves the market maker;
``statistics()`` counts orders and trades. ``execution_report`` takes ``on_book`` (``w``)
instead of an ``orig_client_order_id`` argument: a CANCELED report takes ``c``/``C`` from the
order snapshot's ``cancel_client_order_id``/``client_order_id``.

Deviations from Binance are listed in :data:`KNOWN_DEVIATIONS`.
"""

from __future__ import annotations

import bisect
import calendar
import contextlib
import datetime as dt
import enum
import logging
import random
import re
import string
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Final, Literal, Protocol, TypeVar

import attrs

from genesis.exchange.endpoints import KLINE_INTERVAL_MS
from genesis.sim.errors import SimReject
from genesis.sim.symbols import SymbolSpec, fmt_decimal

__all__ = [
    "DEFAULT_BALANCES",
    "DEFAULT_COMMISSION_RATE",
    "DEFAULT_OTHER_ASSET_BALANCE",
    "KNOWN_DEVIATIONS",
    "MAX_CLOSED_ORDERS_PER_ACCOUNT",
    "MAX_TRADES_PER_ACCOUNT",
    "MAX_TRADES_PER_SYMBOL",
    "MINUTE_BUCKETS",
    "SECOND_BUCKETS",
    "Account",
    "AccountTrade",
    "Balance",
    "BookDiff",
    "BookListener",
    "Exchange",
    "ExchangeStatistics",
    "ExecutionType",
    "Fill",
    "FirstFillListener",
    "JsonObject",
    "Order",
    "OrderResult",
    "OrderStatus",
    "OrderType",
    "PublicTrade",
    "Side",
    "TickerStats",
    "TimeInForce",
    "TradeListener",
    "UserListener",
    "WireKind",
    "account_trade_to_wire",
    "execution_report",
    "kline_next_open",
    "kline_open_time",
    "order_to_wire",
    "result_to_wire",
]

logger = logging.getLogger(__name__)

JsonObject = dict[str, object]
"""A JSON object in wire form, ready for ``orjson.dumps``."""

MAX_TRADES_PER_SYMBOL: Final = 10_000
MAX_CLOSED_ORDERS_PER_ACCOUNT: Final = 10_000
MAX_TRADES_PER_ACCOUNT: Final = 10_000
SECOND_BUCKETS: Final = 3_600
"""1-second kline buckets kept per symbol (one hour of ``1s`` klines)."""
MINUTE_BUCKETS: Final = 10_080
"""1-minute kline buckets kept per symbol (seven days; every other interval aggregates them)."""

DEFAULT_COMMISSION_RATE: Final = Decimal("0.001")
"""0.1 % maker and taker, charged in the asset the account receives."""

DEFAULT_BALANCES: Final[dict[str, Decimal]] = {
    "BTC": Decimal(10),
    "ETH": Decimal(100),
    "BNB": Decimal(1000),
    "USDT": Decimal(1_000_000),
}
"""Funding of an account created without explicit balances (other assets of configured
symbols get :data:`DEFAULT_OTHER_ASSET_BALANCE`)."""

DEFAULT_OTHER_ASSET_BALANCE: Final = Decimal(1000)

KNOWN_DEVIATIONS: Final = (
    "No iceberg orders, order lists (OCO/OTO/OPO), trailing stops, pegged orders, amend or "
    "cancel-replace; exchangeInfo advertises them as not allowed.",
    "Self-trade prevention is always NONE (self-trades execute, as on Binance with NONE).",
    "Filters enforced: PRICE_FILTER, LOT_SIZE, MARKET_LOT_SIZE, NOTIONAL, MAX_NUM_ORDERS.",
    "One book update id per engine operation (a placement with its whole match, a cancel).",
    "Rolling 24 h ticker and klines aggregate 1-minute buckets (1s klines: 1-second buckets); "
    "history older than the bucket caps is forgotten.",
    "A triggered STOP_LOSS/TAKE_PROFIT BUY executes as far as the account's free quote balance "
    "allows and expires the rest; at placement it locks quantity × stopPrice.",
    "Cancels are accepted while a symbol is halted (like CANCEL_ONLY).",
    "newClientOrderId uniqueness is checked per account and symbol among open orders.",
    "DELETE order with orderId and a non-matching origClientOrderId answers -2011 (GET order "
    "answers -2039 as documented).",
    "A quote-quantity MARKET order is FILLED when what is left cannot buy one more lot step at "
    "the next price, EXPIRED when the book ran out.",
    "A triggered stop order reports x=NEW with w=true before its trades.",
    "executionReport omits v (prevented match id): there is no STP.",
    "The NOTIONAL filter is skipped for MARKET orders before the symbol's first trade (no "
    "average price yet).",
)

_T = TypeVar("_T")
_ZERO: Final = Decimal(0)
_CLIENT_ID_RE: Final = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
_NUMBER_RE: Final = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")
_CLIENT_ID_ALPHABET: Final = string.ascii_letters + string.digits


class Side(enum.StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(enum.StrEnum):
    LIMIT = "LIMIT"
    LIMIT_MAKER = "LIMIT_MAKER"
    MARKET = "MARKET"
    STOP_LOSS = "STOP_LOSS"
    STOP_LOSS_LIMIT = "STOP_LOSS_LIMIT"
    TAKE_PROFIT = "TAKE_PROFIT"
    TAKE_PROFIT_LIMIT = "TAKE_PROFIT_LIMIT"


class TimeInForce(enum.StrEnum):
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"


class OrderStatus(enum.StrEnum):
    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"

    @property
    def is_open(self) -> bool:
        return self in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)


class ExecutionType(enum.StrEnum):
    NEW = "NEW"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    TRADE = "TRADE"
    EXPIRED = "EXPIRED"


WireKind = Literal["ACK", "RESULT", "FULL", "GET", "CANCEL"]
"""Which wire shape :func:`order_to_wire` produces."""


@attrs.frozen
class Balance:
    free: Decimal
    locked: Decimal


@attrs.frozen(kw_only=True)
class Order:
    """A snapshot of one order, as ``GET /api/v3/order`` reports it.

    ``working_time_ms`` is -1 while a stop order waits for its trigger. ``cancel_client_order_id``
    is the cancel request's client id (the ``clientOrderId`` of a cancel response).
    ``expiry_reason`` is set for EXPIRED orders (``INSUFFICIENT_LIQUIDITY``,
    ``UNFILLED_IOC_QUANTITY_EXPIRED``, ``UNFILLED_FOK_ORDER_EXPIRED``).
    """

    symbol: str
    order_id: int
    client_order_id: str
    side: Side
    type: OrderType
    time_in_force: TimeInForce
    price: Decimal
    stop_price: Decimal
    orig_qty: Decimal
    orig_quote_order_qty: Decimal
    executed_qty: Decimal
    cummulative_quote_qty: Decimal
    status: OrderStatus
    time_ms: int
    update_time_ms: int
    working_time_ms: int
    is_working: bool
    cancel_client_order_id: str | None = None
    expiry_reason: str | None = None


@attrs.frozen(kw_only=True)
class Fill:
    """One fill of a taker order (the ``fills[]`` entries of a FULL response)."""

    price: Decimal
    qty: Decimal
    commission: Decimal
    commission_asset: str
    trade_id: int


@attrs.frozen(kw_only=True)
class OrderResult:
    """What :meth:`Exchange.place_order` returns.

    Attributes:
        order: the order right after placement (and its immediate matching).
        fills: fills of this order during placement, in execution order.
        resp_type: the effective ``newOrderRespType`` (MARKET/LIMIT default FULL, others ACK).
        first_fill: the order got its first fill during placement (the rate limiter decrements
            the unfilled-order count); later first fills go to the first-fill listeners.
        transact_time_ms: ``transactTime``.
    """

    order: Order
    fills: tuple[Fill, ...]
    resp_type: Literal["ACK", "RESULT", "FULL"]
    first_fill: bool
    transact_time_ms: int


@attrs.frozen(kw_only=True)
class PublicTrade:
    """A public trade (``@trade``, ``GET trades``). ``agg_id`` groups one taker's fills at one
    price into one aggregate trade (``@aggTrade``)."""

    symbol: str
    trade_id: int
    agg_id: int
    price: Decimal
    qty: Decimal
    time_ms: int
    is_buyer_maker: bool

    @property
    def quote_qty(self) -> Decimal:
        return self.price * self.qty


@attrs.frozen(kw_only=True)
class AccountTrade:
    """One of an account's own trades (a ``GET myTrades`` row)."""

    symbol: str
    trade_id: int
    order_id: int
    price: Decimal
    qty: Decimal
    commission: Decimal
    commission_asset: str
    time_ms: int
    is_buyer: bool
    is_maker: bool


@attrs.frozen(kw_only=True)
class BookDiff:
    """The levels one engine operation changed (``@depth`` diff content).

    ``bids``/``asks`` hold ``(price, new absolute qty)``; qty 0 means the level was removed.
    ``first_update_id``/``last_update_id`` are ``U``/``u``; consecutive diffs of a symbol chain
    (``U == previous u + 1``).
    """

    symbol: str
    first_update_id: int
    last_update_id: int
    bids: tuple[tuple[Decimal, Decimal], ...]
    asks: tuple[tuple[Decimal, Decimal], ...]
    time_ms: int


TradeListener = Callable[[str, Sequence[PublicTrade]], None]
BookListener = Callable[[BookDiff], None]
UserListener = Callable[[JsonObject], None]
FirstFillListener = Callable[[str, Order], None]


@attrs.frozen(kw_only=True)
class TickerStats:
    """Rolling 24 h statistics of one symbol (``ticker/24hr``, ``@ticker``, ``@miniTicker``).

    With no trade in the window, open/high/low equal the last price, volumes are 0 and
    ``first_id``/``last_id`` are -1 (as Binance reports an idle symbol).
    """

    symbol: str
    open_time_ms: int
    close_time_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    last: Decimal
    last_qty: Decimal
    prev_close: Decimal
    volume: Decimal
    quote_volume: Decimal
    first_id: int
    last_id: int
    count: int
    bid_price: Decimal
    bid_qty: Decimal
    ask_price: Decimal
    ask_qty: Decimal

    @property
    def price_change(self) -> Decimal:
        return self.last - self.open

    @property
    def price_change_percent(self) -> str:
        """Binance's 3-decimal percent string (``"-95.960"``)."""
        if self.open == 0:
            return "0.000"
        pct = (self.price_change / self.open * 100).quantize(Decimal("0.001"), ROUND_HALF_UP)
        return f"{pct:.3f}"

    @property
    def weighted_avg_price(self) -> Decimal:
        return self.quote_volume / self.volume if self.volume else _ZERO


@attrs.frozen(kw_only=True)
class ExchangeStatistics:
    """Counters for the whole exchange."""

    orders_placed: int
    orders_rejected: int
    trades: int
    accounts: int
    open_orders: int


@attrs.define(eq=False)
class _OrderState:
    api_key: str
    symbol: str
    order_id: int
    client_order_id: str
    side: Side
    type: OrderType
    tif: TimeInForce
    price: Decimal
    stop_price: Decimal
    orig_qty: Decimal
    orig_quote_qty: Decimal
    time_ms: int
    update_time_ms: int
    working_time_ms: int
    executed_qty: Decimal = _ZERO
    cum_quote: Decimal = _ZERO
    status: OrderStatus = OrderStatus.NEW
    is_working: bool = False
    locked: Decimal = _ZERO
    lock_price: Decimal = _ZERO
    cancel_client_order_id: str | None = None
    expiry_reason: str | None = None
    has_fill: bool = False
    on_book: bool = False

    @property
    def remaining(self) -> Decimal:
        return self.orig_qty - self.executed_qty

    @property
    def quote_mode(self) -> bool:
        return self.orig_quote_qty > 0

    def snapshot(self) -> Order:
        return Order(
            symbol=self.symbol,
            order_id=self.order_id,
            client_order_id=self.client_order_id,
            side=self.side,
            type=self.type,
            time_in_force=self.tif,
            price=self.price,
            stop_price=self.stop_price,
            orig_qty=self.orig_qty,
            orig_quote_order_qty=self.orig_quote_qty,
            executed_qty=self.executed_qty,
            cummulative_quote_qty=self.cum_quote,
            status=self.status,
            time_ms=self.time_ms,
            update_time_ms=self.update_time_ms,
            working_time_ms=self.working_time_ms,
            is_working=self.is_working,
            cancel_client_order_id=self.cancel_client_order_id,
            expiry_reason=self.expiry_reason,
        )


def _trades_deque() -> deque[AccountTrade]:
    return deque(maxlen=MAX_TRADES_PER_ACCOUNT)


@attrs.define(eq=False)
class Account:
    """An account: balances, commission rates, its orders and its own trades.

    Read it through :meth:`Exchange.balances` / :meth:`Exchange.account`; only the exchange
    mutates it. ``free``/``locked`` hold exact Decimals per asset.
    """

    api_key: str
    free: dict[str, Decimal]
    locked: dict[str, Decimal] = attrs.field(factory=dict)
    maker_rate: Decimal = DEFAULT_COMMISSION_RATE
    taker_rate: Decimal = DEFAULT_COMMISSION_RATE
    can_trade: bool = True
    uid: int = 0
    update_time_ms: int = 0
    orders: dict[tuple[str, int], _OrderState] = attrs.field(factory=dict, repr=False)
    open_orders: dict[tuple[str, int], _OrderState] = attrs.field(factory=dict, repr=False)
    open_count: dict[str, int] = attrs.field(factory=dict, repr=False)
    closed: deque[tuple[str, int]] = attrs.field(factory=deque, repr=False)
    client_open: dict[tuple[str, str], int] = attrs.field(factory=dict, repr=False)
    client_latest: dict[tuple[str, str], int] = attrs.field(factory=dict, repr=False)
    trades: deque[AccountTrade] = attrs.field(factory=_trades_deque, repr=False)


@attrs.define(eq=False)
class _BookSide:
    """One side of a book: price levels (ascending list + FIFO queues) and level totals."""

    is_bid: bool
    prices: list[Decimal] = attrs.field(factory=list)
    orders: dict[Decimal, deque[_OrderState]] = attrs.field(factory=dict)
    qty: dict[Decimal, Decimal] = attrs.field(factory=dict)

    def best(self) -> Decimal | None:
        if not self.prices:
            return None
        return self.prices[-1] if self.is_bid else self.prices[0]

    def prices_best_first(self) -> list[Decimal]:
        return self.prices[::-1] if self.is_bid else list(self.prices)

    def top(self, n: int) -> list[tuple[Decimal, Decimal]]:
        ps = self.prices[: -n - 1 : -1] if self.is_bid else self.prices[:n]
        return [(p, self.qty[p]) for p in ps]

    def add(self, order: _OrderState) -> None:
        p = order.price
        queue = self.orders.get(p)
        if queue is None:
            bisect.insort(self.prices, p)
            queue = self.orders[p] = deque()
            self.qty[p] = _ZERO
        queue.append(order)
        self.qty[p] += order.remaining

    def reduce(self, price: Decimal, qty: Decimal) -> None:
        self.qty[price] -= qty

    def remove(self, order: _OrderState) -> None:
        p = order.price
        queue = self.orders[p]
        queue.remove(order)
        self.qty[p] -= order.remaining
        if not queue:
            del self.orders[p]
            del self.qty[p]
            del self.prices[bisect.bisect_left(self.prices, p)]


@attrs.define(eq=False)
class _Bucket:
    open_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    taker_buy_base: Decimal
    taker_buy_quote: Decimal
    first_id: int
    last_id: int
    count: int


def _merge_buckets(
    buckets: Sequence[_Bucket], open_ms: int, *, flat_price: Decimal, taker_volumes: bool
) -> _Bucket:
    """One bucket (opening at ``open_ms``) for consecutive ``buckets``; with none, a flat one at
    ``flat_price`` with no volume, no trades and ids -1.

    ``taker_volumes=False`` leaves the taker-buy sums at 0: the rolling 24 h ticker, computed
    every second for every symbol over up to 1440 buckets, has no use for them.
    """
    if buckets:
        open_, close = buckets[0].open, buckets[-1].close
        first_id, last_id = buckets[0].first_id, buckets[-1].last_id
    else:
        open_ = close = flat_price
        first_id = last_id = -1
    taker_base = taker_quote = _ZERO
    if taker_volumes:
        taker_base = sum((b.taker_buy_base for b in buckets), _ZERO)
        taker_quote = sum((b.taker_buy_quote for b in buckets), _ZERO)
    return _Bucket(
        open_ms=open_ms,
        open=open_,
        high=max((b.high for b in buckets), default=flat_price),
        low=min((b.low for b in buckets), default=flat_price),
        close=close,
        volume=sum((b.volume for b in buckets), _ZERO),
        quote_volume=sum((b.quote_volume for b in buckets), _ZERO),
        taker_buy_base=taker_base,
        taker_buy_quote=taker_quote,
        first_id=first_id,
        last_id=last_id,
        count=sum(b.count for b in buckets),
    )


@attrs.define(eq=False)
class _Series:
    """Fixed-width OHLCV buckets (only buckets with trades are stored), capped in length."""

    width_ms: int
    cap: int
    opens: list[int] = attrs.field(factory=list)
    buckets: list[_Bucket] = attrs.field(factory=list)

    def add(self, trade: PublicTrade) -> None:
        open_ms = trade.time_ms // self.width_ms * self.width_ms
        quote = trade.quote_qty
        taker_buy = not trade.is_buyer_maker
        if self.buckets and open_ms <= self.opens[-1]:
            # Same bucket, or the clock went backwards (skew fault): fold into the latest one.
            b = self.buckets[-1]
            b.high = max(b.high, trade.price)
            b.low = min(b.low, trade.price)
            b.close = trade.price
            b.volume += trade.qty
            b.quote_volume += quote
            if taker_buy:
                b.taker_buy_base += trade.qty
                b.taker_buy_quote += quote
            b.last_id = trade.trade_id
            b.count += 1
            return
        self.opens.append(open_ms)
        self.buckets.append(
            _Bucket(
                open_ms=open_ms,
                open=trade.price,
                high=trade.price,
                low=trade.price,
                close=trade.price,
                volume=trade.qty,
                quote_volume=quote,
                taker_buy_base=trade.qty if taker_buy else _ZERO,
                taker_buy_quote=quote if taker_buy else _ZERO,
                first_id=trade.trade_id,
                last_id=trade.trade_id,
                count=1,
            )
        )
        if len(self.buckets) > self.cap + self.cap // 4:
            excess = len(self.buckets) - self.cap
            del self.buckets[:excess]
            del self.opens[:excess]

    def span(self, start_ms: int, end_ms: int) -> list[_Bucket]:
        """Buckets with ``start_ms <= open < end_ms``."""
        lo = bisect.bisect_left(self.opens, start_ms)
        hi = bisect.bisect_left(self.opens, end_ms)
        return self.buckets[lo:hi]

    def close_before(self, t_ms: int) -> Decimal | None:
        i = bisect.bisect_left(self.opens, t_ms)
        return self.buckets[i - 1].close if i > 0 else None


@attrs.define(eq=False)
class _SymbolState:
    spec: SymbolSpec
    bids: _BookSide = attrs.field(factory=lambda: _BookSide(is_bid=True))
    asks: _BookSide = attrs.field(factory=lambda: _BookSide(is_bid=False))
    update_id: int = 1
    next_order_id: int = 1
    next_trade_id: int = 1
    next_agg_id: int = 1
    trades: deque[PublicTrade] = attrs.field(factory=lambda: deque(maxlen=MAX_TRADES_PER_SYMBOL))
    seconds: _Series = attrs.field(factory=lambda: _Series(width_ms=1000, cap=SECOND_BUCKETS))
    minutes: _Series = attrs.field(factory=lambda: _Series(width_ms=60_000, cap=MINUTE_BUCKETS))
    stops: dict[int, _OrderState] = attrs.field(factory=dict)
    last_price: Decimal | None = None
    last_qty: Decimal = _ZERO

    def opposite(self, side: Side) -> _BookSide:
        return self.asks if side is Side.BUY else self.bids

    def own(self, side: Side) -> _BookSide:
        return self.bids if side is Side.BUY else self.asks


@attrs.define(eq=False)
class _Op:
    """What one engine operation did; dispatched to listeners when it completes."""

    now_ms: int
    trades: dict[str, list[PublicTrade]] = attrs.field(factory=dict)
    touched: dict[str, tuple[set[Decimal], set[Decimal]]] = attrs.field(factory=dict)
    user_events: list[tuple[str, JsonObject]] = attrs.field(factory=list)
    changed: dict[str, set[str]] = attrs.field(factory=dict)
    first_fills: list[_OrderState] = attrs.field(factory=list)
    placing: _OrderState | None = None
    placing_first_fill: bool = False
    placing_fills: list[Fill] = attrs.field(factory=list)
    agg_key: tuple[str, int, Decimal] | None = None

    def touch(self, symbol: str, is_bid: bool, price: Decimal) -> None:
        sides = self.touched.get(symbol)
        if sides is None:
            sides = self.touched[symbol] = (set(), set())
        sides[0 if is_bid else 1].add(price)


_Q8: Final = Decimal("0.00000001")
_NUMBER_RANGE: Final = r"^([0-9]{1,20})(\.[0-9]{1,20})?$"
_CLIENT_ID_RANGE: Final = r"^[\.A-Z\:/a-z0-9_-]{1,36}$"
_DAY_MS: Final = 86_400_000
_WEEK_OFFSET_MS: Final = 4 * _DAY_MS  # 1970-01-01 was a Thursday; weeks open on Monday
_AVG_PRICE_MINS: Final = 5


def _q8_down(value: Decimal) -> Decimal:
    return value.quantize(_Q8, rounding=ROUND_DOWN)


def _floor_step(value: Decimal, step: Decimal) -> Decimal:
    if step == 0:
        return value
    return (value // step) * step


def _f8(value: Decimal) -> str:
    return fmt_decimal(value)


def _mandatory(name: str) -> SimReject:
    return SimReject(
        -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def _not_required(name: str) -> SimReject:
    return SimReject(-1106, f"Parameter '{name}' sent when not required.")


def _illegal(name: str, legal: str) -> SimReject:
    return SimReject(
        -1100, f"Illegal characters found in parameter '{name}'; legal range is '{legal}'."
    )


def _filter_failure(name: str) -> SimReject:
    return SimReject(-1013, f"Filter failure: {name}")


def _engine_reject(msg: str) -> SimReject:
    return SimReject(-2010, msg)


_BOTH_IDS_EMPTY: Final = (
    "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"
)
_INSUFFICIENT: Final = "Account has insufficient balance for requested action."
_UNKNOWN_ORDER: Final = "Unknown order sent."


def _parse_decimal(name: str, value: Decimal | str | None) -> Decimal | None:
    """A numeric parameter: None when not sent; -1100 malformed; -1111 more than 8 decimals."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        if not value.is_finite() or value < 0:
            raise _illegal(name, _NUMBER_RANGE)
        number = value
    else:
        if value == "":
            return None
        if _NUMBER_RE.match(value) is None:
            raise _illegal(name, _NUMBER_RANGE)
        try:
            number = Decimal(value)
        except InvalidOperation as exc:  # pragma: no cover - the regex admits only numbers
            raise _illegal(name, _NUMBER_RANGE) from exc
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -8:
        raise SimReject(-1111, f"Parameter '{name}' has too much precision.")
    return number


def _check_client_id(name: str, value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if _CLIENT_ID_RE.match(value) is None:
        raise _illegal(name, _CLIENT_ID_RANGE)
    return value


def _check_price(spec: SymbolSpec, price: Decimal) -> None:
    pf = spec.price_filter
    if (
        price <= 0
        or (pf.min_price and price < pf.min_price)
        or (pf.max_price and price > pf.max_price)
        or (pf.tick_size and price % pf.tick_size != 0)
    ):
        raise _filter_failure("PRICE_FILTER")


def _check_lot(lot_min: Decimal, lot_max: Decimal, step: Decimal, qty: Decimal, name: str) -> None:
    if (
        qty <= 0
        or (lot_min and qty < lot_min)
        or (lot_max and qty > lot_max)
        or (step and qty % step != 0)
    ):
        raise _filter_failure(name)


def _stop_triggered(order_type: OrderType, side: Side, stop: Decimal, last: Decimal) -> bool:
    """Whether the last trade price has reached a stop order's trigger (FACTS.md §3).

    STOP_LOSS BUY and TAKE_PROFIT SELL sit above the market (trigger when last >= stop);
    STOP_LOSS SELL and TAKE_PROFIT BUY sit below it (trigger when last <= stop).
    """
    is_stop_loss = order_type in (OrderType.STOP_LOSS, OrderType.STOP_LOSS_LIMIT)
    above = is_stop_loss == (side is Side.BUY)
    return last >= stop if above else last <= stop


def kline_open_time(interval: str, t_ms: int) -> int:
    """The open time of the ``interval`` kline containing ``t_ms`` (UTC; weeks open Monday,
    ``1M`` on the first of the calendar month)."""
    if interval == "1M":
        d = dt.datetime.fromtimestamp(t_ms // 1000, tz=dt.UTC)
        return calendar.timegm((d.year, d.month, 1, 0, 0, 0)) * 1000
    width = KLINE_INTERVAL_MS[interval]
    if interval == "1w":
        return (t_ms - _WEEK_OFFSET_MS) // width * width + _WEEK_OFFSET_MS
    return t_ms // width * width


def kline_next_open(interval: str, open_ms: int) -> int:
    """The open time of the kline after the one opening at ``open_ms``."""
    if interval == "1M":
        d = dt.datetime.fromtimestamp(open_ms // 1000, tz=dt.UTC)
        year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
        return calendar.timegm((year, month, 1, 0, 0, 0)) * 1000
    return open_ms + KLINE_INTERVAL_MS[interval]


class Exchange:
    """The exchange: symbols, accounts, books, matching and market-data history.

    Args:
        symbols: the tradable symbols (see :func:`genesis.sim.symbols.default_symbols`).
        seed: seeds generated client order ids (the market maker has its own RNG).
    """

    def __init__(self, symbols: Iterable[SymbolSpec], *, seed: int = 0) -> None:
        self._symbols: dict[str, _SymbolState] = {s.symbol: _SymbolState(spec=s) for s in symbols}
        self._accounts: dict[str, Account] = {}
        self._rng = random.Random(seed)
        self._fees: dict[str, Decimal] = {}
        self._op: _Op | None = None
        self._trade_listeners: list[TradeListener] = []
        self._book_listeners: list[BookListener] = []
        self._user_listeners: dict[str, list[UserListener]] = {}
        self._first_fill_listeners: list[FirstFillListener] = []
        self._execution_id = 0
        self._next_uid = 1_000_001
        self._orders_placed = 0
        self._orders_rejected = 0
        self._trade_count = 0

    # --- configuration -------------------------------------------------------------------

    def symbol_specs(self) -> list[SymbolSpec]:
        """All symbols in configuration order (with their current status)."""
        return [st.spec for st in self._symbols.values()]

    def spec(self, symbol: str) -> SymbolSpec:
        """The spec of ``symbol``. Raises :class:`SimReject` -1121 "Invalid symbol."."""
        return self._symbol(symbol).spec

    def set_symbol_status(self, symbol: str, status: str) -> None:
        """Set a symbol's status (``TRADING``, ``HALT``, ``BREAK``...). Orders on a symbol that is
        not ``TRADING`` are rejected with -2010 "Market is closed."; resting orders stay."""
        st = self._symbol(symbol)
        st.spec = attrs.evolve(st.spec, status=status)
        logger.info("sim.symbol.status symbol=%s status=%s", symbol, status)

    def add_account(
        self,
        api_key: str,
        balances: dict[str, Decimal] | None = None,
        *,
        maker_rate: Decimal = DEFAULT_COMMISSION_RATE,
        taker_rate: Decimal = DEFAULT_COMMISSION_RATE,
    ) -> Account:
        """Create (or replace) the account of ``api_key``.

        ``balances=None`` funds it with :data:`DEFAULT_BALANCES` plus
        :data:`DEFAULT_OTHER_ASSET_BALANCE` of every other asset of the configured symbols.
        """
        if balances is None:
            balances = dict(DEFAULT_BALANCES)
            for st in self._symbols.values():
                for asset in (st.spec.base_asset, st.spec.quote_asset):
                    balances.setdefault(asset, DEFAULT_OTHER_ASSET_BALANCE)
        acct = Account(
            api_key=api_key,
            free={a: Decimal(v) for a, v in balances.items()},
            maker_rate=maker_rate,
            taker_rate=taker_rate,
            uid=self._next_uid,
        )
        self._next_uid += 1
        self._accounts[api_key] = acct
        return acct

    def has_account(self, api_key: str) -> bool:
        return api_key in self._accounts

    def balances(self, api_key: str) -> dict[str, Balance]:
        """A copy of the account's balances. Raises -2015 for an unknown key."""
        acct = self._account(api_key)
        assets = sorted(set(acct.free) | set(acct.locked))
        return {a: Balance(acct.free.get(a, _ZERO), acct.locked.get(a, _ZERO)) for a in assets}

    def fees_collected(self) -> dict[str, Decimal]:
        """Commissions charged so far, per asset (they leave the accounts)."""
        return dict(self._fees)

    def statistics(self) -> ExchangeStatistics:
        return ExchangeStatistics(
            orders_placed=self._orders_placed,
            orders_rejected=self._orders_rejected,
            trades=self._trade_count,
            accounts=len(self._accounts),
            open_orders=sum(len(a.open_orders) for a in self._accounts.values()),
        )

    # --- listeners ------------------------------------------------------------------------

    def add_trade_listener(self, cb: TradeListener) -> Callable[[], None]:
        """Call ``cb(symbol, trades)`` after every operation that traded; returns a remover."""
        self._trade_listeners.append(cb)
        return lambda: _discard(self._trade_listeners, cb)

    def add_book_listener(self, cb: BookListener) -> Callable[[], None]:
        """Call ``cb(diff)`` after every operation that changed a book; returns a remover."""
        self._book_listeners.append(cb)
        return lambda: _discard(self._book_listeners, cb)

    def add_user_listener(self, api_key: str, cb: UserListener) -> Callable[[], None]:
        """Call ``cb(event)`` with each user-data event of ``api_key``; returns a remover."""
        self._user_listeners.setdefault(api_key, []).append(cb)

        def remove() -> None:
            cbs = self._user_listeners.get(api_key)
            if cbs is not None:
                _discard(cbs, cb)
                if not cbs:
                    del self._user_listeners[api_key]

        return remove

    def add_first_fill_listener(self, cb: FirstFillListener) -> Callable[[], None]:
        """Call ``cb(api_key, order)`` when a resting/triggered order gets its first fill."""
        self._first_fill_listeners.append(cb)
        return lambda: _discard(self._first_fill_listeners, cb)

    # --- trading --------------------------------------------------------------------------

    def place_order(
        self,
        api_key: str,
        *,
        symbol: str | None,
        side: str | None,
        type: str | None,
        quantity: Decimal | str | None = None,
        quote_order_qty: Decimal | str | None = None,
        price: Decimal | str | None = None,
        stop_price: Decimal | str | None = None,
        time_in_force: str | None = None,
        new_client_order_id: str | None = None,
        new_order_resp_type: str | None = None,
        now_ms: int,
        test: bool = False,
    ) -> OrderResult:
        """Validate and execute a new order (``POST /api/v3/order``).

        Parameters are the request's values (raw wire strings are fine; ``None`` or ``""``
        means "not sent"). ``test=True`` validates only (``POST /api/v3/order/test``): all
        API-level checks run, nothing reaches the engine, and the returned result is a dummy.

        Raises:
            SimReject: -1102 mandatory parameter missing; -1100 malformed number or client id;
                -1106 parameter sent when not required; -1111 too much precision; -1115/-1116/
                -1117 invalid timeInForce/type/side; -1121 invalid symbol; -1013 filter failure;
                -1130 bad newOrderRespType; -2010 engine rejection ("Market is closed.",
                "Duplicate order sent.", "Account has insufficient balance for requested
                action.", "Order would immediately match and take.", "Order would trigger
                immediately.", "Order book liquidity is less than symbol minimum quantity.");
                -2015 unknown API key.
        """
        try:
            return self._place(
                api_key,
                symbol=symbol,
                side=side,
                type_=type,
                quantity=quantity,
                quote_order_qty=quote_order_qty,
                price=price,
                stop_price=stop_price,
                time_in_force=time_in_force,
                new_client_order_id=new_client_order_id,
                new_order_resp_type=new_order_resp_type,
                now_ms=now_ms,
                test=test,
            )
        except SimReject as exc:
            self._orders_rejected += 1
            logger.debug("sim.order.rejected code=%d msg=%s", exc.code, exc.msg)
            raise

    def _place(
        self,
        api_key: str,
        *,
        symbol: str | None,
        side: str | None,
        type_: str | None,
        quantity: Decimal | str | None,
        quote_order_qty: Decimal | str | None,
        price: Decimal | str | None,
        stop_price: Decimal | str | None,
        time_in_force: str | None,
        new_client_order_id: str | None,
        new_order_resp_type: str | None,
        now_ms: int,
        test: bool,
    ) -> OrderResult:
        acct = self._account(api_key)
        st = self._symbol(symbol)
        spec = st.spec
        if not side:
            raise _mandatory("side")
        if side not in Side.__members__:
            raise SimReject(-1117, "Invalid side.")
        side_e = Side(side)
        if not type_:
            raise _mandatory("type")
        if type_ not in OrderType.__members__:
            raise SimReject(-1116, "Invalid orderType.")
        otype = OrderType(type_)
        qty = _parse_decimal("quantity", quantity)
        quote_qty = _parse_decimal("quoteOrderQty", quote_order_qty)
        px = _parse_decimal("price", price)
        stop_px = _parse_decimal("stopPrice", stop_price)
        resp_raw = new_order_resp_type or None
        if resp_raw is not None and resp_raw not in ("ACK", "RESULT", "FULL"):
            raise SimReject(-1130, "Data sent for parameter 'newOrderRespType' is not valid.")
        client_id = _check_client_id("newClientOrderId", new_client_order_id)

        limit_types = (OrderType.LIMIT, OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT_LIMIT)
        needs_price = otype in (*limit_types, OrderType.LIMIT_MAKER)
        needs_stop = otype in (
            OrderType.STOP_LOSS,
            OrderType.STOP_LOSS_LIMIT,
            OrderType.TAKE_PROFIT,
            OrderType.TAKE_PROFIT_LIMIT,
        )
        market_exec = otype in (OrderType.MARKET, OrderType.STOP_LOSS, OrderType.TAKE_PROFIT)

        tif = TimeInForce.GTC
        if otype in limit_types:
            if not time_in_force:
                raise _mandatory("timeInForce")
            if time_in_force not in TimeInForce.__members__:
                raise SimReject(-1115, "Invalid timeInForce.")
            tif = TimeInForce(time_in_force)
        elif time_in_force:
            raise _not_required("timeInForce")
        if otype is OrderType.MARKET:
            if qty is None and quote_qty is None:
                raise SimReject(
                    -1102,
                    "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!",
                )
            if qty is not None and quote_qty is not None:
                raise _not_required("quoteOrderQty")
        else:
            if qty is None:
                raise _mandatory("quantity")
            if quote_qty is not None:
                raise _not_required("quoteOrderQty")
        if needs_price and px is None:
            raise _mandatory("price")
        if not needs_price and px is not None:
            raise _not_required("price")
        if needs_stop and stop_px is None:
            raise _mandatory("stopPrice")
        if not needs_stop and stop_px is not None:
            raise _not_required("stopPrice")

        # API-level filters (-1013), in exchangeInfo's filter order.
        if px is not None:
            _check_price(spec, px)
        if stop_px is not None:
            _check_price(spec, stop_px)
        if qty is not None:
            lot = spec.lot_size
            _check_lot(lot.min_qty, lot.max_qty, lot.step_size, qty, "LOT_SIZE")
            if market_exec:
                mlot = spec.market_lot_size
                _check_lot(mlot.min_qty, mlot.max_qty, mlot.step_size, qty, "MARKET_LOT_SIZE")
        self._check_notional(st, otype, market_exec, qty, quote_qty, px, stop_px, now_ms)
        if acct.open_count.get(spec.symbol, 0) >= spec.max_num_orders:
            raise _filter_failure("MAX_NUM_ORDERS")

        resp_type: Literal["ACK", "RESULT", "FULL"]
        if resp_raw == "ACK":
            resp_type = "ACK"
        elif resp_raw == "RESULT":
            resp_type = "RESULT"
        elif resp_raw == "FULL" or otype in (OrderType.MARKET, OrderType.LIMIT):
            resp_type = "FULL"
        else:
            resp_type = "ACK"

        if test:
            return OrderResult(
                order=self._dummy_order(spec.symbol, side_e, otype, tif, now_ms),
                fills=(),
                resp_type=resp_type,
                first_fill=False,
                transact_time_ms=now_ms,
            )

        # Matching-engine checks (-2010). Nothing has been mutated yet.
        if spec.status != "TRADING":
            raise _engine_reject("Market is closed.")
        if client_id is not None and (spec.symbol, client_id) in acct.client_open:
            raise _engine_reject("Duplicate order sent.")
        if otype is OrderType.LIMIT_MAKER and px is not None and self._crosses(st, side_e, px):
            raise _engine_reject("Order would immediately match and take.")
        if (
            needs_stop
            and stop_px is not None
            and st.last_price is not None
            and _stop_triggered(otype, side_e, stop_px, st.last_price)
        ):
            raise _engine_reject("Order would trigger immediately.")
        lock_asset, need = self._required_funds(st, otype, side_e, qty, quote_qty, px, stop_px)
        if acct.free.get(lock_asset, _ZERO) < need:
            raise _engine_reject(_INSUFFICIENT)

        order = _OrderState(
            api_key=api_key,
            symbol=spec.symbol,
            order_id=st.next_order_id,
            client_order_id=client_id or self._new_client_id(),
            side=side_e,
            type=otype,
            tif=tif,
            price=px if px is not None else _ZERO,
            stop_price=stop_px if stop_px is not None else _ZERO,
            orig_qty=qty if qty is not None else _ZERO,
            orig_quote_qty=quote_qty if quote_qty is not None else _ZERO,
            time_ms=now_ms,
            update_time_ms=now_ms,
            working_time_ms=-1 if needs_stop else now_ms,
            is_working=not needs_stop,
        )
        st.next_order_id += 1
        self._orders_placed += 1
        with self._operation(now_ms) as op:
            op.placing = order
            self._register(acct, order)
            if otype is not OrderType.MARKET:
                self._lock(acct, order, lock_asset, need)
                if side_e is Side.BUY:
                    order.lock_price = (
                        px if px is not None and not market_exec else order.stop_price
                    )
            self._report(order, ExecutionType.NEW)
            if needs_stop:
                st.stops[order.order_id] = order
            elif otype is OrderType.MARKET:
                self._execute_market(st, order, quote_target=quote_qty)
            else:
                self._execute_limit(st, order)
            snapshot = order.snapshot()
            fills = tuple(op.placing_fills)
            first_fill = op.placing_first_fill
            op.placing = None
            self._run_stops(st)
        logger.debug(
            "sim.order.placed symbol=%s id=%d type=%s status=%s",
            spec.symbol,
            order.order_id,
            otype.value,
            snapshot.status.value,
        )
        return OrderResult(
            order=snapshot,
            fills=fills,
            resp_type=resp_type,
            first_fill=first_fill,
            transact_time_ms=now_ms,
        )

    def cancel_order(
        self,
        api_key: str,
        *,
        symbol: str | None,
        order_id: int | None = None,
        orig_client_order_id: str | None = None,
        new_client_order_id: str | None = None,
        cancel_restrictions: str | None = None,
        now_ms: int,
    ) -> Order:
        """Cancel one open order (``DELETE /api/v3/order``); returns the canceled order.

        Raises:
            SimReject: -1102 "Param 'origClientOrderId' or 'orderId' must be sent, but both were
                empty/null!"; -2011 "Unknown order sent." (also for an id mismatch or a closed
                order); -2011 "Order was not canceled due to cancel restrictions."; -1145 bad
                cancelRestrictions; -1121 invalid symbol; -2015 unknown API key.
        """
        acct = self._account(api_key)
        st = self._symbol(symbol)
        orig_cid = orig_client_order_id or None
        if order_id is None and orig_cid is None:
            raise SimReject(-1102, _BOTH_IDS_EMPTY)
        if cancel_restrictions and cancel_restrictions not in ("ONLY_NEW", "ONLY_PARTIALLY_FILLED"):
            raise SimReject(-1145, "Invalid cancelRestrictions")
        cancel_cid = _check_client_id("newClientOrderId", new_client_order_id)
        sym = st.spec.symbol
        order: _OrderState | None
        if order_id is not None:
            order = acct.open_orders.get((sym, order_id))
            if order is not None and orig_cid is not None and order.client_order_id != orig_cid:
                order = None
        else:
            oid = acct.client_open.get((sym, orig_cid or ""))
            order = acct.open_orders.get((sym, oid)) if oid is not None else None
        if order is None:
            raise SimReject(-2011, _UNKNOWN_ORDER)
        if (cancel_restrictions == "ONLY_NEW" and order.status is not OrderStatus.NEW) or (
            cancel_restrictions == "ONLY_PARTIALLY_FILLED"
            and order.status is not OrderStatus.PARTIALLY_FILLED
        ):
            raise SimReject(-2011, "Order was not canceled due to cancel restrictions.")
        with self._operation(now_ms):
            self._cancel(st, order, cancel_cid or self._new_client_id())
        return order.snapshot()

    def cancel_all(self, api_key: str, *, symbol: str | None, now_ms: int) -> list[Order]:
        """Cancel every open order of the account on ``symbol`` (``DELETE openOrders``).

        Raises:
            SimReject: -2011 "Unknown order sent." when nothing is open; -1121; -1102; -2015.
        """
        acct = self._account(api_key)
        st = self._symbol(symbol)
        orders = [o for (s, _), o in acct.open_orders.items() if s == st.spec.symbol]
        if not orders:
            raise SimReject(-2011, _UNKNOWN_ORDER)
        cancel_cid = self._new_client_id()
        with self._operation(now_ms):
            for order in orders:
                self._cancel(st, order, cancel_cid)
        return [o.snapshot() for o in orders]

    def query_order(
        self,
        api_key: str,
        *,
        symbol: str | None,
        order_id: int | None = None,
        orig_client_order_id: str | None = None,
    ) -> Order:
        """``GET /api/v3/order``: look up by orderId (preferred) or origClientOrderId.

        Raises:
            SimReject: -2013 "Order does not exist."; -2039 "Client order ID is not correct for
                this order ID." when both are given and disagree; -1102 when neither is.
        """
        acct = self._account(api_key)
        sym = self._symbol(symbol).spec.symbol
        orig_cid = orig_client_order_id or None
        if order_id is None and orig_cid is None:
            raise SimReject(-1102, _BOTH_IDS_EMPTY)
        if order_id is None:
            key = (sym, orig_cid or "")
            found = acct.client_open.get(key, acct.client_latest.get(key))
            order = acct.orders.get((sym, found)) if found is not None else None
        else:
            order = acct.orders.get((sym, order_id))
            if order is not None and orig_cid is not None and order.client_order_id != orig_cid:
                raise SimReject(-2039, "Client order ID is not correct for this order ID.")
        if order is None:
            raise SimReject(-2013, "Order does not exist.")
        return order.snapshot()

    def open_orders(self, api_key: str, symbol: str | None = None) -> list[Order]:
        """Open orders of the account (all symbols when ``symbol`` is None), oldest first."""
        acct = self._account(api_key)
        sym = self._symbol(symbol).spec.symbol if symbol else None
        return [o.snapshot() for (s, _), o in acct.open_orders.items() if sym is None or s == sym]

    def open_order_ids(self, api_key: str, symbol: str) -> set[int]:
        """Ids of the account's open orders on ``symbol`` (cheap; used by the market maker)."""
        acct = self._account(api_key)
        return {oid for (s, oid) in acct.open_orders if s == symbol}

    def all_orders(
        self,
        api_key: str,
        symbol: str | None,
        *,
        order_id: int | None = None,
        start_time: int | None = None,
        end_time: int | None = None,
        limit: int = 500,
    ) -> list[Order]:
        """``GET /api/v3/allOrders``: open and remembered closed orders, by orderId ascending.

        With ``order_id``: orders with id >= it; else the most recent ``limit`` (clamped to
        1..1000) within the optional time range (at most 24 h: -1127 otherwise).
        """
        acct = self._account(api_key)
        sym = self._symbol(symbol).spec.symbol
        limit = max(1, min(limit, 1000))
        _check_range(start_time, end_time, 24)
        orders = sorted(
            (o for (s, _), o in acct.orders.items() if s == sym), key=lambda o: o.order_id
        )
        if order_id is not None:
            return [o.snapshot() for o in orders if o.order_id >= order_id][:limit]
        return [o.snapshot() for o in _time_window(orders, start_time, end_time, limit)]

    def my_trades(
        self,
        api_key: str,
        symbol: str | None,
        *,
        order_id: int | None = None,
        from_id: int | None = None,
        start_time: int | None = None,
        end_time: int | None = None,
        limit: int = 500,
    ) -> list[AccountTrade]:
        """``GET /api/v3/myTrades`` rows (oldest first), with Binance's parameter combinations.

        Allowed: none, orderId, startTime, endTime, fromId, startTime+endTime, orderId+fromId.

        Raises:
            SimReject: -1128 for another combination; -1127 for a time range above 24 h;
                -1121; -1102; -2015.
        """
        acct = self._account(api_key)
        sym = self._symbol(symbol).spec.symbol
        timed = start_time is not None or end_time is not None
        if timed and (from_id is not None or order_id is not None):
            raise SimReject(-1128, "Combination of optional parameters invalid.")
        _check_range(start_time, end_time, 24)
        limit = max(1, min(limit, 1000))
        rows = [t for t in acct.trades if t.symbol == sym]
        if order_id is not None:
            rows = [t for t in rows if t.order_id == order_id]
        if from_id is not None:
            return [t for t in rows if t.trade_id >= from_id][:limit]
        return _time_window(rows, start_time, end_time, limit)

    def account(self, api_key: str, *, now_ms: int, omit_zero_balances: bool = False) -> JsonObject:
        """``GET /api/v3/account`` in wire form (keys as samples.json ``rest.account``).

        ``now_ms`` is unused today (``updateTime`` is the last balance change) and kept for the
        REST layer's uniform calling convention.
        """
        del now_ms
        acct = self._account(api_key)
        rows: list[JsonObject] = []
        for asset, bal in self.balances(api_key).items():
            if omit_zero_balances and bal.free == 0 and bal.locked == 0:
                continue
            rows.append({"asset": asset, "free": _f8(bal.free), "locked": _f8(bal.locked)})
        return {
            "makerCommission": int(acct.maker_rate * 10_000),
            "takerCommission": int(acct.taker_rate * 10_000),
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {
                "maker": _f8(acct.maker_rate),
                "taker": _f8(acct.taker_rate),
                "buyer": _f8(_ZERO),
                "seller": _f8(_ZERO),
            },
            "canTrade": acct.can_trade,
            "canWithdraw": True,
            "canDeposit": True,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": acct.update_time_ms,
            "accountType": "SPOT",
            "balances": rows,
            "permissions": ["SPOT"],
            "uid": acct.uid,
        }

    # --- market data (wire form) ----------------------------------------------------------

    def depth(self, symbol: str | None, limit: int = 100) -> JsonObject:
        """``{"lastUpdateId", "bids", "asks"}``; ``limit`` is clamped to 1..5000."""
        st = self._symbol(symbol)
        limit = max(1, min(limit, 5000))
        return {
            "lastUpdateId": st.update_id,
            "bids": [[_f8(p), _f8(q)] for p, q in st.bids.top(limit)],
            "asks": [[_f8(p), _f8(q)] for p, q in st.asks.top(limit)],
        }

    def update_id(self, symbol: str) -> int:
        """The book's current ``lastUpdateId``."""
        return self._symbol(symbol).update_id

    def top_of_book(
        self, symbol: str
    ) -> tuple[tuple[Decimal, Decimal] | None, tuple[Decimal, Decimal] | None]:
        """``(best bid (price, qty) or None, best ask (price, qty) or None)``."""
        st = self._symbol(symbol)
        bid = st.bids.best()
        ask = st.asks.best()
        return (
            (bid, st.bids.qty[bid]) if bid is not None else None,
            (ask, st.asks.qty[ask]) if ask is not None else None,
        )

    def book_levels(
        self, symbol: str, limit: int
    ) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        """The top ``limit`` bid levels (best first) and ask levels (best first)."""
        st = self._symbol(symbol)
        return st.bids.top(limit), st.asks.top(limit)

    def last_price(self, symbol: str) -> Decimal | None:
        """The price of the last trade, or None before the first trade."""
        return self._symbol(symbol).last_price

    def recent_trades(self, symbol: str | None, limit: int = 500) -> list[JsonObject]:
        """``GET /api/v3/trades`` rows, oldest first (``limit`` clamped to 1..1000)."""
        st = self._symbol(symbol)
        limit = max(1, min(limit, 1000))
        trades = list(st.trades)[-limit:]
        return [_public_trade_wire(t) for t in trades]

    def historical_trades(
        self, symbol: str | None, limit: int = 500, from_id: int | None = None
    ) -> list[JsonObject]:
        """``GET /api/v3/historicalTrades``: from ``from_id`` (inclusive) or the most recent."""
        st = self._symbol(symbol)
        limit = max(1, min(limit, 1000))
        if from_id is None:
            return self.recent_trades(symbol, limit)
        if not st.trades:
            return []
        start = max(0, from_id - st.trades[0].trade_id)
        end = min(len(st.trades), start + limit)
        return [_public_trade_wire(st.trades[i]) for i in range(start, end)]

    def agg_trades(
        self,
        symbol: str | None,
        *,
        from_id: int | None = None,
        start_time: int | None = None,
        end_time: int | None = None,
        limit: int = 500,
    ) -> list[JsonObject]:
        """``GET /api/v3/aggTrades`` rows (keys a, p, q, f, l, T, m, M).

        Raises:
            SimReject: -1127 when startTime and endTime are more than 1 hour apart.
        """
        st = self._symbol(symbol)
        limit = max(1, min(limit, 1000))
        _check_range(start_time, end_time, 1)
        groups: list[list[PublicTrade]] = []
        for t in st.trades:
            if groups and groups[-1][0].agg_id == t.agg_id:
                groups[-1].append(t)
            else:
                groups.append([t])
        rows = [_agg_wire(g) for g in groups]
        if from_id is not None:
            return [r for r in rows if _int(r["a"]) >= from_id][:limit]
        if start_time is not None:
            rows = [r for r in rows if _int(r["T"]) >= start_time]
        if end_time is not None:
            rows = [r for r in rows if _int(r["T"]) <= end_time]
        return rows[:limit] if start_time is not None else rows[-limit:]

    def klines(
        self,
        symbol: str | None,
        interval: str | None,
        *,
        start_time: int | None = None,
        end_time: int | None = None,
        limit: int = 500,
        now_ms: int,
    ) -> list[list[object]]:
        """``GET /api/v3/klines`` 12-element arrays, oldest first, up to the current kline.

        Klines start at the first remembered trade; intervals without trades after it repeat
        the previous close with zero volume (as Binance does).

        Raises:
            SimReject: -1120 "Invalid interval."; -1121; -1102.
        """
        st = self._symbol(symbol)
        iv = self._interval(interval)
        limit = max(1, min(limit, 1000))
        series = st.seconds if iv == "1s" else st.minutes
        if not series.buckets:
            return []
        first_open = kline_open_time(iv, series.opens[0])
        last_open = kline_open_time(iv, now_ms if end_time is None else min(now_ms, end_time))
        if last_open < first_open:
            return []
        opens: list[int] = []
        if start_time is not None:
            t = kline_open_time(iv, start_time)
            if t < start_time:
                t = kline_next_open(iv, t)
            t = max(t, first_open)
            while t <= last_open and len(opens) < limit:
                opens.append(t)
                t = kline_next_open(iv, t)
        else:
            t = last_open
            while t >= first_open and len(opens) < limit:
                opens.append(t)
                t = kline_open_time(iv, t - 1)
            opens.reverse()
        return [_kline_array(*self._kline_agg(st, iv, t)) for t in opens]

    def kline(self, symbol: str, interval: str, open_time_ms: int, now_ms: int) -> JsonObject:
        """The ``k`` object of a ``@kline_<interval>`` event for the kline opening at
        ``open_time_ms`` (``x`` is true once ``now_ms`` is past its close time)."""
        st = self._symbol(symbol)
        iv = self._interval(interval)
        k, close_ms = self._kline_agg(st, iv, open_time_ms)
        return {
            "t": k.open_ms,
            "T": close_ms,
            "s": st.spec.symbol,
            "i": iv,
            "f": k.first_id,
            "L": k.last_id,
            "o": _f8(k.open),
            "c": _f8(k.close),
            "h": _f8(k.high),
            "l": _f8(k.low),
            "v": _f8(k.volume),
            "n": k.count,
            "x": now_ms > close_ms,
            "q": _f8(k.quote_volume),
            "V": _f8(k.taker_buy_base),
            "Q": _f8(k.taker_buy_quote),
            "B": "0",
        }

    def ticker_stats(self, symbol: str | None, *, now_ms: int) -> TickerStats:
        """Rolling 24 h statistics ending at ``now_ms`` (from 1-minute buckets)."""
        st = self._symbol(symbol)
        open_ms = now_ms - _DAY_MS
        first_bucket = open_ms // 60_000 * 60_000
        buckets = st.minutes.span(first_bucket, now_ms + 1)
        last = st.last_price if st.last_price is not None else _ZERO
        prev = st.minutes.close_before(first_bucket)
        agg = _merge_buckets(buckets, open_ms, flat_price=last, taker_volumes=False)
        bid = st.bids.best()
        ask = st.asks.best()
        return TickerStats(
            symbol=st.spec.symbol,
            open_time_ms=open_ms,
            close_time_ms=now_ms,
            open=agg.open,
            high=agg.high,
            low=agg.low,
            last=agg.close,
            last_qty=st.last_qty if buckets else _ZERO,
            prev_close=prev if prev is not None else _ZERO,
            volume=agg.volume,
            quote_volume=agg.quote_volume,
            first_id=agg.first_id,
            last_id=agg.last_id,
            count=agg.count,
            bid_price=bid if bid is not None else _ZERO,
            bid_qty=st.bids.qty[bid] if bid is not None else _ZERO,
            ask_price=ask if ask is not None else _ZERO,
            ask_qty=st.asks.qty[ask] if ask is not None else _ZERO,
        )

    def ticker_24hr(self, symbol: str | None, *, now_ms: int, mini: bool = False) -> JsonObject:
        """``GET /api/v3/ticker/24hr`` (FULL, or MINI with ``mini=True``) over the rolling
        24 h window ending at ``now_ms``."""
        s = self.ticker_stats(symbol, now_ms=now_ms)
        if mini:
            return {
                "symbol": s.symbol,
                "openPrice": _f8(s.open),
                "highPrice": _f8(s.high),
                "lowPrice": _f8(s.low),
                "lastPrice": _f8(s.last),
                **_ticker_window(s),
            }
        return {
            "symbol": s.symbol,
            "priceChange": _f8(s.price_change),
            "priceChangePercent": s.price_change_percent,
            "weightedAvgPrice": _f8(s.weighted_avg_price),
            "prevClosePrice": _f8(s.prev_close),
            "lastPrice": _f8(s.last),
            "lastQty": _f8(s.last_qty),
            "bidPrice": _f8(s.bid_price),
            "bidQty": _f8(s.bid_qty),
            "askPrice": _f8(s.ask_price),
            "askQty": _f8(s.ask_qty),
            "openPrice": _f8(s.open),
            "highPrice": _f8(s.high),
            "lowPrice": _f8(s.low),
            **_ticker_window(s),
        }

    def ticker_price(self, symbol: str | None) -> JsonObject:
        """``{"symbol", "price"}`` (the last trade price; 0 before the first trade)."""
        st = self._symbol(symbol)
        last = st.last_price if st.last_price is not None else _ZERO
        return {"symbol": st.spec.symbol, "price": _f8(last)}

    def book_ticker(self, symbol: str | None) -> JsonObject:
        """``{"symbol", "bidPrice", "bidQty", "askPrice", "askQty"}``."""
        st = self._symbol(symbol)
        bid, ask = self.top_of_book(st.spec.symbol)
        bp, bq = bid if bid is not None else (_ZERO, _ZERO)
        ap, aq = ask if ask is not None else (_ZERO, _ZERO)
        return {
            "symbol": st.spec.symbol,
            "bidPrice": _f8(bp),
            "bidQty": _f8(bq),
            "askPrice": _f8(ap),
            "askQty": _f8(aq),
        }

    def avg_price(self, symbol: str | None, *, now_ms: int) -> JsonObject:
        """``{"mins": 5, "price", "closeTime"}``: VWAP of the last 5 minutes of trades (the last
        price when there were none; ``closeTime`` is the last trade time in the window)."""
        st = self._symbol(symbol)
        price, close_ms = self._avg_price(st, now_ms)
        return {"mins": _AVG_PRICE_MINS, "price": _f8(price), "closeTime": close_ms}

    # --- internals: lookups and validation -----------------------------------------------

    def _account(self, api_key: str) -> Account:
        acct = self._accounts.get(api_key)
        if acct is None:
            raise SimReject(-2015, "Invalid API-key, IP, or permissions for action.")
        return acct

    def _symbol(self, symbol: str | None) -> _SymbolState:
        if not symbol:
            raise _mandatory("symbol")
        st = self._symbols.get(symbol)
        if st is None:
            raise SimReject(-1121, "Invalid symbol.")
        return st

    @staticmethod
    def _interval(interval: str | None) -> str:
        if not interval:
            raise _mandatory("interval")
        if interval not in KLINE_INTERVAL_MS:
            raise SimReject(-1120, "Invalid interval.")
        return interval

    def _new_client_id(self) -> str:
        return "".join(self._rng.choices(_CLIENT_ID_ALPHABET, k=22))

    def _avg_price(self, st: _SymbolState, now_ms: int) -> tuple[Decimal, int]:
        """VWAP over the last 5 minutes (from 1-second buckets: at most 300 to sum)."""
        since = now_ms - _AVG_PRICE_MINS * 60_000
        buckets = st.seconds.span(since // 1000 * 1000, now_ms + 1)
        last_ms = st.trades[-1].time_ms if st.trades else now_ms
        qty = sum((b.volume for b in buckets), _ZERO)
        if qty:
            quote = sum((b.quote_volume for b in buckets), _ZERO)
            return _q8_down(quote / qty), last_ms
        last = st.last_price if st.last_price is not None else _ZERO
        return last, last_ms

    def _check_notional(
        self,
        st: _SymbolState,
        otype: OrderType,
        market_exec: bool,
        qty: Decimal | None,
        quote_qty: Decimal | None,
        px: Decimal | None,
        stop_px: Decimal | None,
        now_ms: int,
    ) -> None:
        nf = st.spec.notional
        if quote_qty is not None:
            notional: Decimal | None = quote_qty
        elif qty is None:  # pragma: no cover - mandatory checks ran before
            return
        elif px is not None:
            notional = px * qty
        elif otype is OrderType.MARKET:
            ref = self._avg_price(st, now_ms)[0] if st.trades else None
            notional = ref * qty if ref else None
        else:
            notional = stop_px * qty if stop_px is not None else None
        if notional is None:
            return  # no reference price yet: the filter cannot be evaluated
        check_min = nf.apply_min_to_market or not market_exec
        check_max = nf.apply_max_to_market or not market_exec
        if (check_min and nf.min_notional and notional < nf.min_notional) or (
            check_max and nf.max_notional and notional > nf.max_notional
        ):
            raise _filter_failure("NOTIONAL")

    def _crosses(self, st: _SymbolState, side: Side, price: Decimal) -> bool:
        best = st.opposite(side).best()
        if best is None:
            return False
        return best <= price if side is Side.BUY else best >= price

    def _simulate(
        self,
        st: _SymbolState,
        side: Side,
        *,
        limit: Decimal | None = None,
        qty: Decimal | None = None,
        quote: Decimal | None = None,
    ) -> tuple[Decimal, Decimal]:
        """Dry-run a taker against the book: (base filled, quote amount). No mutation."""
        book = st.opposite(side)
        step = st.spec.lot_size.step_size
        filled = _ZERO
        cost = _ZERO
        for p in book.prices_best_first():
            if limit is not None and (p > limit if side is Side.BUY else p < limit):
                break
            level = book.qty[p]
            if quote is not None:
                take = min(level, _floor_step((quote - cost) / p, step))
            else:
                assert qty is not None
                take = min(level, qty - filled)
            if take <= 0:
                break
            filled += take
            cost += take * p
            if take < level:
                break
        return filled, cost

    def _required_funds(
        self,
        st: _SymbolState,
        otype: OrderType,
        side: Side,
        qty: Decimal | None,
        quote_qty: Decimal | None,
        px: Decimal | None,
        stop_px: Decimal | None,
    ) -> tuple[str, Decimal]:
        spec = st.spec
        # quoteOrderQty (MARKET only) is sized against the opposite side: it must have a level.
        if quote_qty is not None and st.opposite(side).best() is None:
            raise _engine_reject("Order book liquidity is less than symbol minimum quantity.")
        if side is Side.SELL:
            if quote_qty is not None:
                return spec.base_asset, self._simulate(st, side, quote=quote_qty)[0]
            assert qty is not None
            return spec.base_asset, qty
        if otype is OrderType.MARKET:
            if quote_qty is not None:
                return spec.quote_asset, quote_qty
            return spec.quote_asset, self._simulate(st, side, qty=qty)[1]
        assert qty is not None
        unit = (
            px
            if px is not None and otype not in (OrderType.STOP_LOSS, OrderType.TAKE_PROFIT)
            else stop_px
        )
        assert unit is not None
        return spec.quote_asset, qty * unit

    def _dummy_order(
        self, symbol: str, side: Side, otype: OrderType, tif: TimeInForce, now_ms: int
    ) -> Order:
        return Order(
            symbol=symbol,
            order_id=-1,
            client_order_id="",
            side=side,
            type=otype,
            time_in_force=tif,
            price=_ZERO,
            stop_price=_ZERO,
            orig_qty=_ZERO,
            orig_quote_order_qty=_ZERO,
            executed_qty=_ZERO,
            cummulative_quote_qty=_ZERO,
            status=OrderStatus.NEW,
            time_ms=now_ms,
            update_time_ms=now_ms,
            working_time_ms=now_ms,
            is_working=False,
        )

    # --- internals: operations, balances, order lifecycle --------------------------------

    @contextlib.contextmanager
    def _operation(self, now_ms: int) -> Iterator[_Op]:
        if self._op is not None:
            raise RuntimeError("re-entrant exchange operation")
        op = _Op(now_ms=now_ms)
        self._op = op
        try:
            yield op
        finally:
            self._op = None
        self._finish(op)

    def _cur(self) -> _Op:
        op = self._op
        assert op is not None, "engine mutation outside an operation"
        return op

    def _move(
        self, acct: Account, asset: str, *, free: Decimal = _ZERO, locked: Decimal = _ZERO
    ) -> None:
        op = self._cur()
        if free:
            acct.free[asset] = acct.free.get(asset, _ZERO) + free
        if locked:
            acct.locked[asset] = acct.locked.get(asset, _ZERO) + locked
        acct.update_time_ms = op.now_ms
        if acct.api_key in self._user_listeners:
            op.changed.setdefault(acct.api_key, set()).add(asset)

    def _lock_asset(self, order: _OrderState) -> str:
        spec = self._symbols[order.symbol].spec
        return spec.quote_asset if order.side is Side.BUY else spec.base_asset

    def _lock(self, acct: Account, order: _OrderState, asset: str, amount: Decimal) -> None:
        self._move(acct, asset, free=-amount, locked=amount)
        order.locked = amount

    def _unlock_all(self, order: _OrderState) -> None:
        if order.locked:
            acct = self._accounts[order.api_key]
            amount = order.locked
            order.locked = _ZERO
            self._move(acct, self._lock_asset(order), free=amount, locked=-amount)

    def _register(self, acct: Account, order: _OrderState) -> None:
        key = (order.symbol, order.order_id)
        acct.orders[key] = order
        acct.open_orders[key] = order
        acct.open_count[order.symbol] = acct.open_count.get(order.symbol, 0) + 1
        acct.client_open[(order.symbol, order.client_order_id)] = order.order_id
        acct.client_latest[(order.symbol, order.client_order_id)] = order.order_id

    def _close(self, order: _OrderState, status: OrderStatus, reason: str | None = None) -> None:
        """Move an order to a final status, release what it still locks, and forget the
        oldest closed orders beyond the cap."""
        op = self._cur()
        order.status = status
        order.update_time_ms = op.now_ms
        if reason is not None:
            order.expiry_reason = reason
        self._unlock_all(order)
        acct = self._accounts[order.api_key]
        key = (order.symbol, order.order_id)
        if acct.open_orders.pop(key, None) is not None:
            acct.open_count[order.symbol] -= 1
        ckey = (order.symbol, order.client_order_id)
        if acct.client_open.get(ckey) == order.order_id:
            del acct.client_open[ckey]
        acct.closed.append(key)
        while len(acct.closed) > MAX_CLOSED_ORDERS_PER_ACCOUNT:
            old_key = acct.closed.popleft()
            old = acct.orders.pop(old_key, None)
            if old is not None:
                okey = (old.symbol, old.client_order_id)
                if acct.client_latest.get(okey) == old.order_id:
                    del acct.client_latest[okey]

    def _cancel(self, st: _SymbolState, order: _OrderState, cancel_cid: str) -> None:
        op = self._cur()
        if order.on_book:
            book = st.own(order.side)
            book.remove(order)
            order.on_book = False
            op.touch(st.spec.symbol, book.is_bid, order.price)
        st.stops.pop(order.order_id, None)
        order.cancel_client_order_id = cancel_cid
        self._close(order, OrderStatus.CANCELED)
        self._report(order, ExecutionType.CANCELED)

    def _report(
        self, order: _OrderState, xtype: ExecutionType, fill: AccountTrade | None = None
    ) -> None:
        self._execution_id += 1
        if order.api_key not in self._user_listeners:
            return
        op = self._cur()
        event = execution_report(
            order.snapshot(),
            execution_type=xtype,
            event_time_ms=op.now_ms,
            execution_id=self._execution_id,
            fill=fill,
            on_book=order.on_book or (order.is_working and order.status.is_open),
        )
        op.user_events.append((order.api_key, event))

    # --- internals: matching ----------------------------------------------------------------

    def _expire(self, order: _OrderState, reason: str) -> None:
        """Close ``order`` as EXPIRED (``reason`` is its ``expiryReason``) and report it."""
        self._close(order, OrderStatus.EXPIRED, reason)
        self._report(order, ExecutionType.EXPIRED)

    def _execute_limit(self, st: _SymbolState, order: _OrderState) -> None:
        if order.tif is TimeInForce.FOK:
            filled, _ = self._simulate(st, order.side, limit=order.price, qty=order.remaining)
            if filled < order.remaining:
                self._expire(order, "UNFILLED_FOK_ORDER_EXPIRED")
                return
        self._match(st, order, limit=order.price)
        if not order.status.is_open:
            return
        if order.tif is TimeInForce.GTC:
            book = st.own(order.side)
            book.add(order)
            order.on_book = True
            self._cur().touch(st.spec.symbol, book.is_bid, order.price)
        else:
            self._expire(order, "UNFILLED_IOC_QUANTITY_EXPIRED")

    def _execute_market(
        self,
        st: _SymbolState,
        order: _OrderState,
        *,
        quote_target: Decimal | None = None,
        budget: Decimal | None = None,
    ) -> None:
        self._match(st, order, limit=None, quote_target=quote_target, budget=budget)
        if order.quote_mode:
            order.orig_qty = order.executed_qty
        if order.status.is_open:
            self._expire(order, "INSUFFICIENT_LIQUIDITY")

    def _match(
        self,
        st: _SymbolState,
        taker: _OrderState,
        *,
        limit: Decimal | None,
        quote_target: Decimal | None = None,
        budget: Decimal | None = None,
    ) -> None:
        """Cross ``taker`` with the opposite side in price-time priority.

        Qty mode fills up to ``taker.remaining``; quote mode (``quote_target``) spends or
        receives up to that much quote asset in whole steps; ``budget`` caps a buyer's spend.
        Sets the taker FILLED when done; leaves it open otherwise.
        """
        book = st.opposite(taker.side)
        step = st.spec.lot_size.step_size
        is_buy = taker.side is Side.BUY
        while True:
            p = book.best()
            if p is None or (limit is not None and (p > limit if is_buy else p < limit)):
                return
            maker = book.orders[p][0]
            if quote_target is not None:
                qty = _floor_step((quote_target - taker.cum_quote) / p, step)
            else:
                qty = taker.remaining
            if budget is not None:
                qty = min(qty, _floor_step((budget - taker.cum_quote) / p, step))
            qty = min(qty, maker.remaining)
            if qty <= 0:
                return
            fill = self._trade(st, taker, maker, qty, p)
            if quote_target is not None:
                nxt = book.best()
                left = quote_target - taker.cum_quote
                done = left <= 0 or (nxt is not None and _floor_step(left / nxt, step) <= 0)
            else:
                done = taker.remaining <= 0
            if done:
                self._close(taker, OrderStatus.FILLED)
            self._report(taker, ExecutionType.TRADE, fill)
            if done:
                return

    def _trade(
        self, st: _SymbolState, taker: _OrderState, maker: _OrderState, qty: Decimal, price: Decimal
    ) -> AccountTrade:
        """Execute one fill between ``taker`` and the first ``maker`` of its level.

        Settles both accounts (locks released at the order's lock price, commissions charged
        in the received asset), records the public and private trades and the kline buckets,
        and finishes the maker. Returns the taker's side of the trade; the caller finishes
        the taker.
        """
        op = self._cur()
        spec = st.spec
        base, quote_asset = spec.base_asset, spec.quote_asset
        quote = qty * price
        buyer, seller = (taker, maker) if taker.side is Side.BUY else (maker, taker)
        bacct = self._accounts[buyer.api_key]
        sacct = self._accounts[seller.api_key]

        if buyer.locked:
            release = min(buyer.locked, qty * buyer.lock_price)
            buyer.locked -= release
            self._move(bacct, quote_asset, free=release, locked=-release)
        self._move(bacct, quote_asset, free=-quote)
        brate = bacct.maker_rate if buyer is maker else bacct.taker_rate
        bcomm = _q8_down(qty * brate)
        self._move(bacct, base, free=qty - bcomm)
        if seller.locked:
            release = min(seller.locked, qty)
            seller.locked -= release
            self._move(sacct, base, free=release, locked=-release)
        self._move(sacct, base, free=-qty)
        srate = sacct.maker_rate if seller is maker else sacct.taker_rate
        scomm = _q8_down(quote * srate)
        self._move(sacct, quote_asset, free=quote - scomm)
        if bcomm:
            self._fees[base] = self._fees.get(base, _ZERO) + bcomm
        if scomm:
            self._fees[quote_asset] = self._fees.get(quote_asset, _ZERO) + scomm

        trade_id = st.next_trade_id
        st.next_trade_id += 1
        agg_key = (spec.symbol, taker.order_id, price)
        if op.agg_key == agg_key:
            agg_id = st.next_agg_id - 1
        else:
            agg_id = st.next_agg_id
            st.next_agg_id += 1
            op.agg_key = agg_key
        public = PublicTrade(
            symbol=spec.symbol,
            trade_id=trade_id,
            agg_id=agg_id,
            price=price,
            qty=qty,
            time_ms=op.now_ms,
            is_buyer_maker=buyer is maker,
        )
        st.trades.append(public)
        st.seconds.add(public)
        st.minutes.add(public)
        st.last_price = price
        st.last_qty = qty
        op.trades.setdefault(spec.symbol, []).append(public)
        self._trade_count += 1

        fills: dict[int, AccountTrade] = {}
        for order, acct, comm, comm_asset in (
            (buyer, bacct, bcomm, base),
            (seller, sacct, scomm, quote_asset),
        ):
            row = AccountTrade(
                symbol=spec.symbol,
                trade_id=trade_id,
                order_id=order.order_id,
                price=price,
                qty=qty,
                commission=comm,
                commission_asset=comm_asset,
                time_ms=op.now_ms,
                is_buyer=order is buyer,
                is_maker=order is maker,
            )
            acct.trades.append(row)
            fills[id(order)] = row
            order.executed_qty += qty
            order.cum_quote += quote
            order.update_time_ms = op.now_ms
            order.status = OrderStatus.PARTIALLY_FILLED
            if not order.has_fill:
                order.has_fill = True
                if order is op.placing:
                    op.placing_first_fill = True
                else:
                    op.first_fills.append(order)
        taker_fill = fills[id(taker)]
        if taker is op.placing:
            op.placing_fills.append(
                Fill(
                    price=price,
                    qty=qty,
                    commission=taker_fill.commission,
                    commission_asset=taker_fill.commission_asset,
                    trade_id=trade_id,
                )
            )

        book = st.own(maker.side)
        book.reduce(price, qty)
        op.touch(spec.symbol, book.is_bid, price)
        if maker.remaining <= 0:
            book.remove(maker)
            maker.on_book = False
            self._close(maker, OrderStatus.FILLED)
        self._report(maker, ExecutionType.TRADE, fills[id(maker)])
        return taker_fill

    def _run_stops(self, st: _SymbolState) -> None:
        """Trigger the stop orders the last trade price has reached, until none is left
        (a triggered order's own trades may trigger more)."""
        for _ in range(10_000):
            last = st.last_price
            if last is None or not st.stops:
                return
            fired = [
                o for o in st.stops.values() if _stop_triggered(o.type, o.side, o.stop_price, last)
            ]
            if not fired:
                return
            for order in fired:
                if st.stops.pop(order.order_id, None) is not None:
                    self._trigger(st, order)
        logger.warning("sim.stops.cascade_cut symbol=%s", st.spec.symbol)  # pragma: no cover

    def _trigger(self, st: _SymbolState, order: _OrderState) -> None:
        op = self._cur()
        order.is_working = True
        order.working_time_ms = op.now_ms
        order.update_time_ms = op.now_ms
        self._report(order, ExecutionType.NEW)
        logger.debug("sim.order.triggered symbol=%s id=%d", order.symbol, order.order_id)
        if order.type in (OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT_LIMIT):
            self._execute_limit(st, order)
            return
        if order.side is Side.BUY:
            self._unlock_all(order)
            order.lock_price = _ZERO
            acct = self._accounts[order.api_key]
            budget = acct.free.get(st.spec.quote_asset, _ZERO)
            self._execute_market(st, order, budget=budget)
        else:
            self._execute_market(st, order)

    # --- internals: dispatch --------------------------------------------------------------

    def _finish(self, op: _Op) -> None:
        diffs: list[BookDiff] = []
        for sym, (bid_prices, ask_prices) in op.touched.items():
            st = self._symbols[sym]
            st.update_id += 1
            diffs.append(
                BookDiff(
                    symbol=sym,
                    first_update_id=st.update_id,
                    last_update_id=st.update_id,
                    bids=tuple(
                        (p, st.bids.qty.get(p, _ZERO)) for p in sorted(bid_prices, reverse=True)
                    ),
                    asks=tuple((p, st.asks.qty.get(p, _ZERO)) for p in sorted(ask_prices)),
                    time_ms=op.now_ms,
                )
            )
        user_events = list(op.user_events)
        for api_key, assets in op.changed.items():
            acct = self._accounts[api_key]
            user_events.append(
                (
                    api_key,
                    {
                        "e": "outboundAccountPosition",
                        "E": op.now_ms,
                        "u": acct.update_time_ms,
                        "B": [
                            {
                                "a": a,
                                "f": _f8(acct.free.get(a, _ZERO)),
                                "l": _f8(acct.locked.get(a, _ZERO)),
                            }
                            for a in sorted(assets)
                        ],
                    },
                )
            )
        for sym, trades in op.trades.items():
            batch = tuple(trades)
            for trade_cb in list(self._trade_listeners):
                trade_cb(sym, batch)
        for diff in diffs:
            for book_cb in list(self._book_listeners):
                book_cb(diff)
        for api_key, event in user_events:
            for user_cb in list(self._user_listeners.get(api_key, ())):
                user_cb(event)
        for order in op.first_fills:
            snap = order.snapshot()
            for fill_cb in list(self._first_fill_listeners):
                fill_cb(order.api_key, snap)

    # --- internals: klines -------------------------------------------------------------------

    def _kline_agg(self, st: _SymbolState, interval: str, open_ms: int) -> tuple[_Bucket, int]:
        """The kline opening at ``open_ms`` and its close time; without trades it is flat at
        the previous close (0 before the first trade)."""
        series = st.seconds if interval == "1s" else st.minutes
        close_ms = kline_next_open(interval, open_ms) - 1
        buckets = series.span(open_ms, close_ms + 1)
        prev = series.close_before(open_ms) if not buckets else None
        flat_price = prev if prev is not None else _ZERO
        merged = _merge_buckets(buckets, open_ms, flat_price=flat_price, taker_volumes=True)
        return merged, close_ms


def _discard(items: list[_T], item: _T) -> None:
    if item in items:
        items.remove(item)


class _Timed(Protocol):
    @property
    def time_ms(self) -> int: ...


_TimedT = TypeVar("_TimedT", bound=_Timed)


def _time_window(
    rows: list[_TimedT], start_time: int | None, end_time: int | None, limit: int
) -> list[_TimedT]:
    """Rows (oldest first) within the optional time range: the first ``limit`` from
    ``start_time`` when it is given, else the most recent ``limit``."""
    if start_time is not None:
        rows = [r for r in rows if r.time_ms >= start_time]
    if end_time is not None:
        rows = [r for r in rows if r.time_ms <= end_time]
    return rows[:limit] if start_time is not None else rows[-limit:]


def _check_range(start_time: int | None, end_time: int | None, hours: int) -> None:
    if (
        start_time is not None
        and end_time is not None
        and end_time - start_time > hours * 3_600_000
    ):
        raise SimReject(-1127, f"More than {hours} hours between startTime and endTime.")


def _int(value: object) -> int:
    assert isinstance(value, int)
    return value


def _public_trade_wire(t: PublicTrade) -> JsonObject:
    return {
        "id": t.trade_id,
        "price": _f8(t.price),
        "qty": _f8(t.qty),
        "quoteQty": _f8(t.quote_qty),
        "time": t.time_ms,
        "isBuyerMaker": t.is_buyer_maker,
        "isBestMatch": True,
    }


def _agg_wire(group: Sequence[PublicTrade]) -> JsonObject:
    first = group[0]
    return {
        "a": first.agg_id,
        "p": _f8(first.price),
        "q": _f8(sum((t.qty for t in group), _ZERO)),
        "f": first.trade_id,
        "l": group[-1].trade_id,
        "T": first.time_ms,
        "m": first.is_buyer_maker,
        "M": True,
    }


def _ticker_window(s: TickerStats) -> JsonObject:
    """``volume`` .. ``count``: how both 24 h ticker shapes (FULL and MINI) end."""
    return {
        "volume": _f8(s.volume),
        "quoteVolume": _f8(s.quote_volume),
        "openTime": s.open_time_ms,
        "closeTime": s.close_time_ms,
        "firstId": s.first_id,
        "lastId": s.last_id,
        "count": s.count,
    }


def _kline_array(k: _Bucket, close_ms: int) -> list[object]:
    return [
        k.open_ms,
        _f8(k.open),
        _f8(k.high),
        _f8(k.low),
        _f8(k.close),
        _f8(k.volume),
        close_ms,
        _f8(k.quote_volume),
        k.count,
        _f8(k.taker_buy_base),
        _f8(k.taker_buy_quote),
        "0",
    ]


_STOP_TYPES: Final = frozenset(
    {
        OrderType.STOP_LOSS,
        OrderType.STOP_LOSS_LIMIT,
        OrderType.TAKE_PROFIT,
        OrderType.TAKE_PROFIT_LIMIT,
    }
)


def _order_terms(o: Order) -> JsonObject:
    """``price`` .. ``side`` (and ``stopPrice`` for stop types) as CANCEL rows and the
    RESULT/FULL responses list them (GET rows use another order)."""
    out: JsonObject = {
        "price": _f8(o.price),
        "origQty": _f8(o.orig_qty),
        "executedQty": _f8(o.executed_qty),
        "origQuoteOrderQty": _f8(o.orig_quote_order_qty),
        "cummulativeQuoteQty": _f8(o.cummulative_quote_qty),
        "status": o.status.value,
        "timeInForce": o.time_in_force.value,
        "type": o.type.value,
        "side": o.side.value,
    }
    if o.type in _STOP_TYPES:
        out["stopPrice"] = _f8(o.stop_price)
    return out


def order_to_wire(order: Order, kind: WireKind, fills: Sequence[Fill] = ()) -> JsonObject:
    """An order in one of Binance's wire shapes.

    ``ACK``/``RESULT``/``FULL``: the ``POST /api/v3/order`` responses (``transactTime`` is the
    order's creation time); ``GET``: ``GET order`` / ``openOrders`` / ``allOrders`` rows;
    ``CANCEL``: the ``DELETE order`` / ``DELETE openOrders`` rows (``transactTime`` is the
    cancel time, ``clientOrderId`` the cancel's id).
    """
    o = order
    if kind == "GET":
        out: JsonObject = {
            "symbol": o.symbol,
            "orderId": o.order_id,
            "orderListId": -1,
            "clientOrderId": o.client_order_id,
            "price": _f8(o.price),
            "origQty": _f8(o.orig_qty),
            "executedQty": _f8(o.executed_qty),
            "cummulativeQuoteQty": _f8(o.cummulative_quote_qty),
            "status": o.status.value,
            "timeInForce": o.time_in_force.value,
            "type": o.type.value,
            "side": o.side.value,
            "stopPrice": _f8(o.stop_price),
            "icebergQty": _f8(_ZERO),
            "time": o.time_ms,
            "updateTime": o.update_time_ms,
            "isWorking": o.is_working,
            "workingTime": o.working_time_ms,
            "origQuoteOrderQty": _f8(o.orig_quote_order_qty),
            "selfTradePreventionMode": "NONE",
        }
        if o.expiry_reason is not None:
            out["expiryReason"] = o.expiry_reason
        return out
    if kind == "CANCEL":
        out = {
            "symbol": o.symbol,
            "origClientOrderId": o.client_order_id,
            "orderId": o.order_id,
            "orderListId": -1,
            "clientOrderId": o.cancel_client_order_id or "",
            "transactTime": o.update_time_ms,
            **_order_terms(o),
            "selfTradePreventionMode": "NONE",
        }
        return out
    out = {
        "symbol": o.symbol,
        "orderId": o.order_id,
        "orderListId": -1,
        "clientOrderId": o.client_order_id,
        "transactTime": o.time_ms,
    }
    if kind == "ACK":
        return out
    out.update(_order_terms(o))
    out["workingTime"] = o.working_time_ms
    out["selfTradePreventionMode"] = "NONE"
    if o.expiry_reason is not None:
        out["expiryReason"] = o.expiry_reason
    if kind == "FULL":
        out["fills"] = [
            {
                "price": _f8(f.price),
                "qty": _f8(f.qty),
                "commission": _f8(f.commission),
                "commissionAsset": f.commission_asset,
                "tradeId": f.trade_id,
            }
            for f in fills
        ]
    return out


def result_to_wire(result: OrderResult) -> JsonObject:
    """The ``POST /api/v3/order`` response body for ``result`` in its ``resp_type``."""
    return order_to_wire(result.order, result.resp_type, result.fills)


def account_trade_to_wire(trade: AccountTrade) -> JsonObject:
    """A ``GET /api/v3/myTrades`` row."""
    return {
        "symbol": trade.symbol,
        "id": trade.trade_id,
        "orderId": trade.order_id,
        "orderListId": -1,
        "price": _f8(trade.price),
        "qty": _f8(trade.qty),
        "quoteQty": _f8(trade.price * trade.qty),
        "commission": _f8(trade.commission),
        "commissionAsset": trade.commission_asset,
        "time": trade.time_ms,
        "isBuyer": trade.is_buyer,
        "isMaker": trade.is_maker,
        "isBestMatch": True,
    }


def execution_report(
    order: Order,
    *,
    execution_type: ExecutionType,
    event_time_ms: int,
    execution_id: int,
    fill: AccountTrade | None = None,
    on_book: bool | None = None,
) -> JsonObject:
    """An ``executionReport`` event in wire form (FACTS.md §10; samples.json
    ``user.executionReport``'s event object, minus ``v`` which Binance sends only for STP).

    For a CANCELED report ``c`` is the cancel request's client id and ``C`` the order's own.
    ``W`` is present once the order has been working; ``eR`` only for EXPIRED orders.
    ``on_book`` is ``w``; by default an open order that is working.
    """
    canceled = execution_type is ExecutionType.CANCELED
    last_qty = fill.qty if fill is not None else _ZERO
    last_price = fill.price if fill is not None else _ZERO
    event: JsonObject = {
        "e": "executionReport",
        "E": event_time_ms,
        "s": order.symbol,
        "c": (order.cancel_client_order_id or order.client_order_id)
        if canceled
        else order.client_order_id,
        "S": order.side.value,
        "o": order.type.value,
        "f": order.time_in_force.value,
        "q": _f8(order.orig_qty),
        "p": _f8(order.price),
        "P": _f8(order.stop_price),
        "F": _f8(_ZERO),
        "g": -1,
        "C": order.client_order_id if canceled else "",
        "x": execution_type.value,
        "X": order.status.value,
        "r": "NONE",
        "i": order.order_id,
        "l": _f8(last_qty),
        "z": _f8(order.executed_qty),
        "L": _f8(last_price),
        "n": _f8(fill.commission) if fill is not None else "0",
        "N": fill.commission_asset if fill is not None else None,
        "T": fill.time_ms if fill is not None else event_time_ms,
        "t": fill.trade_id if fill is not None else -1,
        "I": execution_id,
        "w": on_book if on_book is not None else (order.is_working and order.status.is_open),
        "m": fill.is_maker if fill is not None else False,
        "M": False,
        "O": order.time_ms,
        "Z": _f8(order.cummulative_quote_qty),
        "Y": _f8(last_qty * last_price),
        "Q": _f8(order.orig_quote_order_qty),
    }
    if order.working_time_ms >= 0:
        event["W"] = order.working_time_ms
    event["V"] = "NONE"
    if order.status is OrderStatus.EXPIRED and order.expiry_reason is not None:
        event["eR"] = order.expiry_reason
    return event
