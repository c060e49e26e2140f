"""Market-data history of one symbol: public trades, kline buckets and rolling windows.

The engine records each public trade once (:meth:`SymbolHistory.record`); every market-data
query (recent/historical/aggregate trades, klines, the rolling 24 h ticker, the average price)
reads typed values from here, and :mod:`genesis.sim.payloads` turns them into wire form.

Klines aggregate fixed-width buckets: 1-second buckets for ``1s`` klines and the short average
price windows, 1-minute buckets for everything else. Only buckets with trades are stored, and
both series are capped (:data:`~genesis.sim.model.SECOND_BUCKETS`,
:data:`~genesis.sim.model.MINUTE_BUCKETS`).

The rolling windows (24 h ticker, ``avgPriceMins`` VWAPs) are served in O(1) amortised time per
trade and per query, whatever the window's length: running sums of volume, quote volume and
count, and monotonic deques of buckets for the high and the low (the front is the window's
extreme; a bucket leaves from the front when the window slides past it, and a new or raised
extreme evicts the smaller ones from the back). The sums are kept in a 60-digit context, so
adding and later subtracting a bucket's totals is exact. A query whose window starts before the
previous one (the clock went back: a skew fault) or ends before the newest bucket is answered
by merging the buckets once, without disturbing the window.
"""

from __future__ import annotations

import bisect
import calendar
import datetime as dt
from collections import deque
from decimal import ROUND_DOWN, Context, Decimal
from typing import TYPE_CHECKING, Final

import attrs

from genesis.exchange.endpoints import KLINE_INTERVAL_MS
from genesis.sim.model import MAX_TRADES_PER_SYMBOL, MINUTE_BUCKETS, SECOND_BUCKETS

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from genesis.sim.model import PublicTrade

__all__ = [
    "DAY_MS",
    "Bucket",
    "SymbolHistory",
    "kline_next_open",
    "kline_open_time",
    "merge_buckets",
]

DAY_MS: Final = 86_400_000
_WEEK_OFFSET_MS: Final = 4 * DAY_MS  # 1970-01-01 was a Thursday; weeks open on Monday
_ZERO: Final = Decimal(0)
_Q8: Final = Decimal("0.00000001")
_EXACT: Final = Context(prec=60)
"""Volumes and quote volumes of every bucket and window: wide enough that sums never round."""


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


@attrs.define(eq=False, kw_only=True)
class Bucket:
    """OHLCV of the trades in one interval (``first_id``/``last_id`` -1 when there were none)."""

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


def merge_buckets(buckets: Sequence[Bucket], open_ms: int, *, flat_price: Decimal) -> Bucket:
    """One bucket (opening at ``open_ms``) for consecutive ``buckets``; with none, a flat one at
    ``flat_price`` with no volume, no trades and ids -1."""
    if buckets:
        open_, close = buckets[0].open, buckets[-1].close
        first_id, last_id = buckets[0].first_id, buckets[-1].last_id
    else:
        open_ = close = flat_price
        first_id = last_id = -1
    return Bucket(
        open_ms=open_ms,
        open=open_,
        high=max((b.high for b in buckets), default=flat_price),
        low=min((b.low for b in buckets), default=flat_price),
        close=close,
        volume=_sum(b.volume for b in buckets),
        quote_volume=_sum(b.quote_volume for b in buckets),
        taker_buy_base=_sum(b.taker_buy_base for b in buckets),
        taker_buy_quote=_sum(b.taker_buy_quote for b in buckets),
        first_id=first_id,
        last_id=last_id,
        count=sum(b.count for b in buckets),
    )


def _sum(values: Iterable[Decimal]) -> Decimal:
    total = _ZERO
    for v in values:
        total = _EXACT.add(total, v)
    return total


@attrs.define(eq=False)
class _Series:
    """Fixed-width OHLCV buckets (only buckets with trades are stored), capped in length."""

    width_ms: int
    cap: int
    opens: list[int] = attrs.field(factory=list)
    buckets: list[Bucket] = attrs.field(factory=list)

    def add(self, trade: PublicTrade) -> tuple[Bucket, bool]:
        """Fold ``trade`` in; returns its bucket and whether the bucket is new."""
        open_ms = trade.time_ms // self.width_ms * self.width_ms
        quote = trade.quote_qty
        taker_buy = not trade.is_buyer_maker
        if self.buckets and open_ms <= self.opens[-1]:
            # Same bucket, or the clock went backwards (skew fault): fold into the latest one.
            b = self.buckets[-1]
            b.high = max(b.high, trade.price)
            b.low = min(b.low, trade.price)
            b.close = trade.price
            b.volume = _EXACT.add(b.volume, trade.qty)
            b.quote_volume = _EXACT.add(b.quote_volume, quote)
            if taker_buy:
                b.taker_buy_base = _EXACT.add(b.taker_buy_base, trade.qty)
                b.taker_buy_quote = _EXACT.add(b.taker_buy_quote, quote)
            b.last_id = trade.trade_id
            b.count += 1
            return b, False
        b = Bucket(
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
        self.opens.append(open_ms)
        self.buckets.append(b)
        if len(self.buckets) > self.cap + self.cap // 4:
            excess = len(self.buckets) - self.cap
            del self.buckets[:excess]
            del self.opens[:excess]
        return b, True

    def span(self, start_ms: int, end_ms: int) -> list[Bucket]:
        """Buckets with ``start_ms <= open < end_ms``."""
        lo = bisect.bisect_left(self.opens, start_ms)
        hi = bisect.bisect_left(self.opens, end_ms)
        return self.buckets[lo:hi]

    def close_before(self, t_ms: int) -> Decimal | None:
        i = bisect.bisect_left(self.opens, t_ms)
        return self.buckets[i - 1].close if i > 0 else None


@attrs.define(eq=False)
class _RollingWindow:
    """The buckets of a series from ``start`` (``now - span`` floored to the bucket width) to
    the newest one, with running totals and monotonic high/low deques."""

    series: _Series
    span_ms: int
    start_ms: int = -1
    buckets: deque[Bucket] = attrs.field(factory=deque)
    highs: deque[Bucket] = attrs.field(factory=deque)
    lows: deque[Bucket] = attrs.field(factory=deque)
    volume: Decimal = _ZERO
    quote_volume: Decimal = _ZERO
    count: int = 0
    built: bool = False

    def on_trade(self, trade: PublicTrade, bucket: Bucket, new: bool) -> None:
        if not self.built:
            return
        if new:
            self.buckets.append(bucket)
        elif not self.buckets or self.buckets[-1] is not bucket:
            # The window holds every bucket from its start on, so the newest bucket is its
            # last one unless the window already slid past it: a trade folded into that
            # bucket (the clock went back) is outside the window.
            return
        self.volume = _EXACT.add(self.volume, trade.qty)
        self.quote_volume = _EXACT.add(self.quote_volume, trade.quote_qty)
        self.count += 1
        self._push_extremes(bucket)

    def _push_extremes(self, bucket: Bucket) -> None:
        highs, lows = self.highs, self.lows
        if highs and highs[-1] is bucket:
            highs.pop()
        while highs and highs[-1].high <= bucket.high:
            highs.pop()
        highs.append(bucket)
        if lows and lows[-1] is bucket:
            lows.pop()
        while lows and lows[-1].low >= bucket.low:
            lows.pop()
        lows.append(bucket)

    def slide(self, now_ms: int) -> bool:
        """Move the window to end at ``now_ms``; False when it cannot serve that window."""
        width = self.series.width_ms
        start = (now_ms - self.span_ms) // width * width
        newest = self.series.buckets[-1].open_ms if self.series.buckets else None
        if newest is not None and newest > now_ms:
            return False
        if not self.built:
            self._build(start)
            return True
        if start < self.start_ms:
            return False
        buckets = self.buckets
        while buckets and buckets[0].open_ms < start:
            old = buckets.popleft()
            self.volume = _EXACT.subtract(self.volume, old.volume)
            self.quote_volume = _EXACT.subtract(self.quote_volume, old.quote_volume)
            self.count -= old.count
        while self.highs and self.highs[0].open_ms < start:
            self.highs.popleft()
        while self.lows and self.lows[0].open_ms < start:
            self.lows.popleft()
        self.start_ms = start
        return True

    def _build(self, start: int) -> None:
        for b in self.series.span(start, self.series.opens[-1] + 1 if self.series.opens else 0):
            self.buckets.append(b)
            self.volume = _EXACT.add(self.volume, b.volume)
            self.quote_volume = _EXACT.add(self.quote_volume, b.quote_volume)
            self.count += b.count
            self._push_extremes(b)
        self.start_ms = start
        self.built = True

    def merged(self, open_ms: int, flat_price: Decimal) -> Bucket:
        """The window as one bucket (taker-buy sums are not tracked: 0)."""
        if not self.buckets:
            return merge_buckets((), open_ms, flat_price=flat_price)
        first, last = self.buckets[0], self.buckets[-1]
        return Bucket(
            open_ms=open_ms,
            open=first.open,
            high=self.highs[0].high,
            low=self.lows[0].low,
            close=last.close,
            volume=self.volume,
            quote_volume=self.quote_volume,
            taker_buy_base=_ZERO,
            taker_buy_quote=_ZERO,
            first_id=first.first_id,
            last_id=last.last_id,
            count=self.count,
        )


@attrs.define(eq=False)
class SymbolHistory:
    """Everything one symbol remembers of its public trades."""

    trades: deque[PublicTrade] = attrs.field(factory=lambda: deque(maxlen=MAX_TRADES_PER_SYMBOL))
    seconds: _Series = attrs.field(factory=lambda: _Series(width_ms=1000, cap=SECOND_BUCKETS))
    minutes: _Series = attrs.field(factory=lambda: _Series(width_ms=60_000, cap=MINUTE_BUCKETS))
    last_price: Decimal | None = None
    last_qty: Decimal = _ZERO
    _day: _RollingWindow | None = None
    _vwaps: dict[int, _RollingWindow] = attrs.field(factory=dict)

    def record(self, trade: PublicTrade) -> None:
        """Remember one public trade (the engine calls this once per trade, in id order)."""
        self.trades.append(trade)
        bucket, new = self.seconds.add(trade)
        for window in self._vwaps.values():
            window.on_trade(trade, bucket, new)
        bucket, new = self.minutes.add(trade)
        if self._day is not None:
            self._day.on_trade(trade, bucket, new)
        self.last_price = trade.price
        self.last_qty = trade.qty

    def rolling_day(self, now_ms: int) -> tuple[Bucket, bool]:
        """The 24 h window ending at ``now_ms`` as one bucket (opening at ``now - 24 h``; flat
        at the last price without trades), and whether it holds any trade."""
        open_ms = now_ms - DAY_MS
        flat = self.last_price if self.last_price is not None else _ZERO
        if self._day is None:
            self._day = _RollingWindow(self.minutes, DAY_MS)
        if self._day.slide(now_ms):
            return self._day.merged(open_ms, flat), bool(self._day.buckets)
        first = open_ms // 60_000 * 60_000
        buckets = self.minutes.span(first, now_ms + 1)
        return merge_buckets(buckets, open_ms, flat_price=flat), bool(buckets)

    def prev_close(self, now_ms: int) -> Decimal | None:
        """The close of the last bucket before the 24 h window ending at ``now_ms``."""
        return self.minutes.close_before((now_ms - DAY_MS) // 60_000 * 60_000)

    def avg_price(self, mins: int, now_ms: int) -> Decimal | None:
        """VWAP of the last ``mins`` minutes (8 decimals, rounded down); the last price when
        there was no trade in them; None before the first trade."""
        if self.last_price is None:
            return None
        window = self._vwaps.get(mins)
        if window is None:
            window = self._vwaps[mins] = _RollingWindow(self.seconds, mins * 60_000)
        if window.slide(now_ms):
            qty, quote = window.volume, window.quote_volume
        else:
            since = (now_ms - mins * 60_000) // 1000 * 1000
            buckets = self.seconds.span(since, now_ms + 1)
            qty = _sum(b.volume for b in buckets)
            quote = _sum(b.quote_volume for b in buckets)
        if qty:
            return (quote / qty).quantize(_Q8, rounding=ROUND_DOWN)
        return self.last_price

    def last_trade_ms(self, default_ms: int) -> int:
        return self.trades[-1].time_ms if self.trades else default_ms

    def series_for(self, interval: str) -> _Series:
        return self.seconds if interval == "1s" else self.minutes

    def kline(self, interval: str, open_ms: int) -> tuple[Bucket, int]:
        """The kline opening at ``open_ms`` and its close time; without trades it is flat at
        the previous close (0 before the first trade)."""
        series = self.series_for(interval)
        close_ms = kline_next_open(interval, open_ms) - 1
        buckets = series.span(open_ms, close_ms + 1)
        prev = series.close_before(open_ms) if not buckets else None
        flat_price = prev if prev is not None else _ZERO
        return merge_buckets(buckets, open_ms, flat_price=flat_price), close_ms

    def kline_opens(
        self, interval: str, *, start_time: int | None, end_ms: int, limit: int
    ) -> list[int]:
        """Open times of the klines to list (oldest first): from the first remembered trade's
        kline up to the one containing ``end_ms``; the first ``limit`` from ``start_time``
        when given, else the most recent ``limit``."""
        series = self.series_for(interval)
        if not series.buckets:
            return []
        first_open = kline_open_time(interval, series.opens[0])
        last_open = kline_open_time(interval, end_ms)
        opens: list[int] = []
        if last_open < first_open:
            return opens
        if start_time is not None:
            t = kline_open_time(interval, start_time)
            if t < start_time:
                t = kline_next_open(interval, t)
            t = max(t, first_open)
            while t <= last_open and len(opens) < limit:
                opens.append(t)
                t = kline_next_open(interval, t)
        else:
            t = last_open
            while t >= first_open and len(opens) < limit:
                opens.append(t)
                t = kline_open_time(interval, t - 1)
            opens.reverse()
        return opens

    def recent(self, limit: int) -> list[PublicTrade]:
        """The most recent ``limit`` trades, oldest first."""
        return list(self.trades)[-limit:]

    def from_id(self, from_id: int, limit: int) -> list[PublicTrade]:
        """Up to ``limit`` trades from id ``from_id`` on (inclusive)."""
        if not self.trades:
            return []
        start = max(0, from_id - self.trades[0].trade_id)
        end = min(len(self.trades), start + limit)
        return [self.trades[i] for i in range(start, end)]

    def aggregates(self) -> list[list[PublicTrade]]:
        """The remembered trades grouped by aggregate id, oldest first."""
        groups: list[list[PublicTrade]] = []
        for t in self.trades:
            if groups and groups[-1][0].agg_id == t.agg_id:
                groups[-1].append(t)
            else:
                groups.append([t])
        return groups
