"""The simulator's value types: enums, order and trade snapshots, listener signatures, limits.

Everything here is a plain value (``@attrs.frozen``) or an enum; the engine
(:mod:`genesis.sim.engine`), the ledger (:mod:`genesis.sim.ledger`), the history
(:mod:`genesis.sim.history`) and the wire builders (:mod:`genesis.sim.payloads`) share them, and
:mod:`genesis.sim.exchange` re-exports them under their historical names.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Final, Literal

import attrs

__all__ = [
    "DEFAULT_BALANCES",
    "DEFAULT_COMMISSION_RATE",
    "DEFAULT_OTHER_ASSET_BALANCE",
    "MAX_CLOSED_ORDERS_PER_ACCOUNT",
    "MAX_TRADES_PER_ACCOUNT",
    "MAX_TRADES_PER_SYMBOL",
    "MINUTE_BUCKETS",
    "SECOND_BUCKETS",
    "AccountTrade",
    "Balance",
    "BookDiff",
    "BookListener",
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
    "RespType",
    "Side",
    "TickerStats",
    "TimeInForce",
    "TradeListener",
    "UserListener",
    "WireKind",
]

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


_ZERO: Final = Decimal(0)


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
RespType = Literal["ACK", "RESULT", "FULL"]
"""A ``newOrderRespType``."""


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
    resp_type: RespType
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
