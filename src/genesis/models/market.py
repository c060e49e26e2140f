"""Market data events: what the bus carries for the public feeds.

All prices and quantities are :class:`~decimal.Decimal`; times are epoch milliseconds in
fields named ``*_ms``. Models know nothing about JSON: :mod:`genesis.models.codec` turns
Binance's wire format into them.
"""

from __future__ import annotations

from decimal import Decimal  # noqa: TC003  # cattrs resolves these annotations at run time
from typing import Protocol, TypeAlias

import attrs

from genesis.models._checks import non_negative_decimal, upper_symbol

__all__ = [
    "DeferredLevels",
    "Depth",
    "DepthUpdate",
    "Kline",
    "OrderBook",
    "PriceLevel",
    "Ticker",
    "Trade",
]


_money = attrs.field(validator=non_negative_decimal)


@attrs.frozen
class PriceLevel:
    """One book level: ``price`` and the total ``quantity`` resting there."""

    price: Decimal = _money
    quantity: Decimal = _money


@attrs.frozen(kw_only=True)
class Trade:
    """One public trade (``<symbol>@trade``)."""

    symbol: str = attrs.field(validator=upper_symbol)
    trade_id: int
    price: Decimal = _money
    quantity: Decimal = _money
    trade_time_ms: int
    event_time_ms: int
    buyer_is_maker: bool

    @property
    def dedup_key(self) -> int:
        return self.trade_id


@attrs.frozen(kw_only=True)
class Ticker:
    """Rolling 24-hour statistics (``<symbol>@ticker``)."""

    symbol: str = attrs.field(validator=upper_symbol)
    event_time_ms: int
    price_change: Decimal
    price_change_percent: Decimal
    weighted_avg_price: Decimal = _money
    last_price: Decimal = _money
    last_quantity: Decimal = _money
    best_bid: Decimal = _money
    best_bid_quantity: Decimal = _money
    best_ask: Decimal = _money
    best_ask_quantity: Decimal = _money
    open_price: Decimal = _money
    high_price: Decimal = _money
    low_price: Decimal = _money
    volume: Decimal = _money
    quote_volume: Decimal = _money
    open_time_ms: int
    close_time_ms: int
    first_trade_id: int
    last_trade_id: int
    trade_count: int

    @property
    def spread(self) -> Decimal:
        return self.best_ask - self.best_bid

    @property
    def spread_bps(self) -> Decimal | None:
        """Spread in basis points of the mid price; ``None`` when there is no two-sided quote."""
        mid = (self.best_ask + self.best_bid) / 2
        if self.best_bid <= 0 or self.best_ask <= 0 or mid <= 0:
            return None
        return (self.best_ask - self.best_bid) / mid * 10_000


class DeferredLevels(Protocol):
    """Book levels checked on arrival whose :class:`PriceLevel` objects are built on first read.

    The codec's validated slice of the wire text (:mod:`genesis.models.codec`): building cannot
    fail, so a :class:`Depth` is as valid on arrival as one built eagerly.
    """

    def build(self) -> tuple[PriceLevel, ...]:
        """The levels, best first (called at most once per side)."""
        ...


_Levels: TypeAlias = "tuple[PriceLevel, ...] | DeferredLevels"


def _levels_repr(levels: _Levels) -> str:
    return repr(levels if isinstance(levels, tuple) else levels.build())


@attrs.frozen(kw_only=True, eq=False)
class Depth:
    """A partial book snapshot, best levels first (``<symbol>@depth<N>[@100ms]``).

    Binance's partial-depth payload carries neither symbol nor event time: the symbol comes from
    the stream name and ``received_ms`` is when Genesis received the frame.

    ``bids`` and ``asks`` are always ``tuple[PriceLevel, ...]`` to a reader. The feed builds
    them lazily (issue 12): the bus conflates depth snapshots, so most are replaced before a
    subscriber takes them, and turning 80 strings into ``Decimal`` levels was most of a
    snapshot's decode. The frame is validated in full on arrival (``bids=``/``asks=`` may be a
    :class:`DeferredLevels` that cannot fail); the levels are built on the first read of a
    side and kept. Equality, hashing and repr see the built levels.
    """

    symbol: str = attrs.field(validator=upper_symbol)
    last_update_id: int
    _bids: _Levels = attrs.field(alias="bids", repr=_levels_repr)
    _asks: _Levels = attrs.field(alias="asks", repr=_levels_repr)
    received_ms: int = 0

    @property
    def bids(self) -> tuple[PriceLevel, ...]:
        levels = self._bids
        if isinstance(levels, tuple):
            return levels
        built = levels.build()
        object.__setattr__(self, "_bids", built)  # a cache of the same value: still frozen
        return built

    @property
    def asks(self) -> tuple[PriceLevel, ...]:
        levels = self._asks
        if isinstance(levels, tuple):
            return levels
        built = levels.build()
        object.__setattr__(self, "_asks", built)
        return built

    def _key(self) -> tuple[object, ...]:
        return (self.symbol, self.last_update_id, self.bids, self.asks, self.received_ms)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Depth)
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def best_bid(self) -> PriceLevel | None:
        return self.bids[0] if self.bids else None

    @property
    def best_ask(self) -> PriceLevel | None:
        return self.asks[0] if self.asks else None

    @property
    def spread_bps(self) -> Decimal | None:
        """Spread in basis points of the mid price; ``None`` when one side is empty."""
        if not self.bids or not self.asks:
            return None
        bid, ask = self.bids[0].price, self.asks[0].price
        mid = (bid + ask) / 2
        if mid <= 0:
            return None
        return (ask - bid) / mid * 10_000


@attrs.frozen(kw_only=True)
class Kline:
    """One candlestick update (``<symbol>@kline_<interval>``); ``closed`` marks the final one."""

    symbol: str = attrs.field(validator=upper_symbol)
    interval: str
    event_time_ms: int
    open_time_ms: int
    close_time_ms: int
    first_trade_id: int
    last_trade_id: int
    open_price: Decimal = _money
    close_price: Decimal = _money
    high_price: Decimal = _money
    low_price: Decimal = _money
    volume: Decimal = _money
    quote_volume: Decimal = _money
    taker_buy_volume: Decimal = _money
    taker_buy_quote_volume: Decimal = _money
    trade_count: int
    closed: bool


@attrs.frozen(kw_only=True)
class DepthUpdate:
    """One diff-depth event (``<symbol>@depth[@100ms]``): levels changed by updates ``U``..``u``.

    Quantities are absolute (the new total at that price); zero removes the level. Binance
    may remove a level a local book never had (FACTS.md §9).

    Attributes:
        symbol: Upper-case symbol.
        first_update_id: ``U``, the first book update id in this event.
        final_update_id: ``u``, the last one.
        bids: Changed bid levels.
        asks: Changed ask levels.
        event_time_ms: ``E``.
    """

    symbol: str = attrs.field(validator=upper_symbol)
    first_update_id: int
    final_update_id: int
    bids: tuple[PriceLevel, ...]
    asks: tuple[PriceLevel, ...]
    event_time_ms: int = 0


@attrs.frozen(kw_only=True)
class OrderBook:
    """The local order book of one symbol after an applied diff event, best levels first.

    Built from ``<symbol>@depth@100ms`` diff events on top of a REST snapshot (FACTS.md §9);
    ``bids`` and ``asks`` hold the top of the book (100 levels by default).

    Attributes:
        symbol: Upper-case symbol.
        last_update_id: The book's update id after the last applied event (``u``).
        bids: Price levels, highest price first.
        asks: Price levels, lowest price first.
        event_time_ms: ``E`` of the last applied diff event (0 for a bare snapshot).
    """

    symbol: str = attrs.field(validator=upper_symbol)
    last_update_id: int
    bids: tuple[PriceLevel, ...]
    asks: tuple[PriceLevel, ...]
    event_time_ms: int = 0

    @property
    def best_bid(self) -> PriceLevel | None:
        return self.bids[0] if self.bids else None

    @property
    def best_ask(self) -> PriceLevel | None:
        return self.asks[0] if self.asks else None
