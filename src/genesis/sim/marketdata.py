"""Market data in wire form, read from the engine's books and each symbol's history.

:class:`MarketDataView` serves ``depth``, the trade lists, klines, the tickers and the average
price (REST and the WS API share these, one implementation, two transports), and the typed reads
the stream payloads need (``ticker_stats``, ``kline``, ``book_levels``, ``top_of_book``,
``update_id``, ``last_price``). :class:`genesis.sim.exchange.Exchange` is one.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Final

from genesis.exchange.endpoints import KLINE_INTERVAL_MS
from genesis.sim.errors import BAD_INTERVAL, SimReject
from genesis.sim.model import TickerStats
from genesis.sim.payloads import (
    agg_trade_wire,
    book_ticker_wire,
    depth_wire,
    kline_array,
    kline_object,
    public_trade_wire,
    ticker_24hr_wire,
)
from genesis.sim.request import check_range, mandatory
from genesis.sim.symbols import fmt_decimal

if TYPE_CHECKING:
    from genesis.sim.engine import Engine, SymbolState
    from genesis.sim.model import JsonObject

__all__ = ["MarketDataView"]

_ZERO: Final = Decimal(0)


class MarketDataView:
    """Market-data queries over ``engine``'s symbols (raises -1102/-1121 for a bad symbol)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def _symbol(self, symbol: str | None) -> SymbolState:
        return self._engine.symbol(symbol)

    def depth(self, symbol: str | None, limit: int = 100) -> JsonObject:
        """``{"lastUpdateId", "bids", "asks"}``; ``limit`` is clamped to 1..5000."""
        st = self._symbol(symbol)
        limit = max(1, min(limit, 5000))
        return depth_wire(st.update_id, st.bids.top(limit), st.asks.top(limit))

    def update_id(self, symbol: str) -> int:
        """The book's current ``lastUpdateId``."""
        return self._symbol(symbol).update_id

    def top_of_book(
        self, symbol: str
    ) -> tuple[tuple[Decimal, Decimal] | None, tuple[Decimal, Decimal] | None]:
        """``(best bid (price, qty) or None, best ask (price, qty) or None)``."""
        st = self._symbol(symbol)
        return st.bids.best_level(), st.asks.best_level()

    def book_levels(
        self, symbol: str, limit: int
    ) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        """The top ``limit`` bid levels (best first) and ask levels (best first)."""
        st = self._symbol(symbol)
        return st.bids.top(limit), st.asks.top(limit)

    def last_price(self, symbol: str) -> Decimal | None:
        """The price of the last trade, or None before the first trade."""
        return self._symbol(symbol).history.last_price

    def recent_trades(self, symbol: str | None, limit: int = 500) -> list[JsonObject]:
        """``GET /api/v3/trades`` rows, oldest first (``limit`` clamped to 1..1000)."""
        st = self._symbol(symbol)
        return [public_trade_wire(t) for t in st.history.recent(max(1, min(limit, 1000)))]

    def historical_trades(
        self, symbol: str | None, limit: int = 500, from_id: int | None = None
    ) -> list[JsonObject]:
        """``GET /api/v3/historicalTrades``: from ``from_id`` (inclusive) or the most recent."""
        st = self._symbol(symbol)
        limit = max(1, min(limit, 1000))
        if from_id is None:
            return self.recent_trades(symbol, limit)
        return [public_trade_wire(t) for t in st.history.from_id(from_id, limit)]

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
        check_range(start_time, end_time, 1)
        groups = st.history.aggregates()
        if from_id is not None:
            return [agg_trade_wire(g) for g in groups if g[0].agg_id >= from_id][:limit]
        if start_time is not None:
            groups = [g for g in groups if g[0].time_ms >= start_time]
        if end_time is not None:
            groups = [g for g in groups if g[0].time_ms <= end_time]
        groups = groups[:limit] if start_time is not None else groups[-limit:]
        return [agg_trade_wire(g) for g in groups]

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
        iv = _interval(interval)
        end_ms = now_ms if end_time is None else min(now_ms, end_time)
        opens = st.history.kline_opens(
            iv, start_time=start_time, end_ms=end_ms, limit=max(1, min(limit, 1000))
        )
        return [kline_array(*st.history.kline(iv, t)) for t in opens]

    def kline(self, symbol: str, interval: str, open_time_ms: int, now_ms: int) -> JsonObject:
        """The ``k`` object of a ``@kline_<interval>`` event for the kline opening at
        ``open_time_ms`` (``x`` is true once ``now_ms`` is past its close time)."""
        st = self._symbol(symbol)
        iv = _interval(interval)
        k, close_ms = st.history.kline(iv, open_time_ms)
        return kline_object(st.spec.symbol, iv, k, close_ms, closed=now_ms > close_ms)

    def ticker_stats(self, symbol: str | None, *, now_ms: int) -> TickerStats:
        """Rolling 24 h statistics ending at ``now_ms`` (O(1): a sliding 1-minute window)."""
        st = self._symbol(symbol)
        h = st.history
        day, traded = h.rolling_day(now_ms)
        prev = h.prev_close(now_ms)
        bid = st.bids.best_level() or (_ZERO, _ZERO)
        ask = st.asks.best_level() or (_ZERO, _ZERO)
        return TickerStats(
            symbol=st.spec.symbol,
            open_time_ms=day.open_ms,
            close_time_ms=now_ms,
            open=day.open,
            high=day.high,
            low=day.low,
            last=day.close,
            last_qty=h.last_qty if traded else _ZERO,
            prev_close=prev if prev is not None else _ZERO,
            volume=day.volume,
            quote_volume=day.quote_volume,
            first_id=day.first_id,
            last_id=day.last_id,
            count=day.count,
            bid_price=bid[0],
            bid_qty=bid[1],
            ask_price=ask[0],
            ask_qty=ask[1],
        )

    def ticker_24hr(self, symbol: str | None, *, now_ms: int, mini: bool = False) -> JsonObject:
        """``GET /api/v3/ticker/24hr`` (FULL, or MINI with ``mini=True``) over the rolling
        24 h window ending at ``now_ms``."""
        return ticker_24hr_wire(self.ticker_stats(symbol, now_ms=now_ms), mini=mini)

    def ticker_price(self, symbol: str | None) -> JsonObject:
        """``{"symbol", "price"}`` (the last trade price; 0 before the first trade)."""
        st = self._symbol(symbol)
        last = st.history.last_price
        return {"symbol": st.spec.symbol, "price": _f8(last if last is not None else _ZERO)}

    def book_ticker(self, symbol: str | None) -> JsonObject:
        """``{"symbol", "bidPrice", "bidQty", "askPrice", "askQty"}``."""
        st = self._symbol(symbol)
        return book_ticker_wire(st.spec.symbol, st.bids.best_level(), st.asks.best_level())

    def avg_price(self, symbol: str | None, *, now_ms: int) -> JsonObject:
        """``{"mins", "price", "closeTime"}``: VWAP over the NOTIONAL filter's ``avgPriceMins``
        (5) of trades (the last price when there were none; ``closeTime`` is the last trade
        time)."""
        st = self._symbol(symbol)
        mins = st.spec.notional.avg_price_mins
        price = st.history.avg_price(mins, now_ms)
        return {
            "mins": mins,
            "price": _f8(price if price is not None else _ZERO),
            "closeTime": st.history.last_trade_ms(now_ms),
        }


def _f8(value: Decimal) -> str:
    return fmt_decimal(value)


def _interval(interval: str | None) -> str:
    if not interval:
        raise mandatory("interval")
    if interval not in KLINE_INTERVAL_MS:
        raise SimReject(BAD_INTERVAL)
    return interval
