"""The simulator's market feed: steps the market maker and publishes stream payloads.

:func:`run_market_feed` runs on a fixed grid of Trio time (``start + k × step_s``, so it never
drifts) and, at each tick, steps the market maker and publishes the periodic streams
(FACTS.md §7 "Update speeds"):

=====================================  ==============================================
stream                                 when
=====================================  ==============================================
``<s>@trade``, ``<s>@aggTrade``        real time: from the exchange's trade listener
``<s>@bookTicker``                     real time: when best bid/ask price or qty changes
``<s>@depth@100ms``, ``<s>@depthN@100ms``  every 100 ms
``<s>@depth``, ``<s>@depthN``          every 1000 ms
``<s>@ticker``, ``<s>@miniTicker``     every 1000 ms
``<s>@kline_1s``                       every 1000 ms
``<s>@kline_<other>``                  every 2000 ms, plus one ``x=true`` frame when a
                                       kline closes (within one tick of its close)
=====================================  ==============================================

Real-time streams are published from exchange listeners, so trades caused by REST orders go
out at once, between ticks. Periodic cadences count from the feed's start.

Only streams with subscribers (:meth:`StreamHub.has_subscribers`) get payloads built, so an
idle feed costs little. Diff-depth changes are *accumulated* regardless, so the ``U``/``u``
chain of each ``@depth`` speed has no gaps (FACTS.md §9): every book update id belongs to
exactly one event of each speed, whether or not anyone received it.

Time comes only from :class:`~genesis.sim.clock.SimClock` (epoch ms) and ``trio.sleep_until``,
so the feed runs unchanged under ``trio.testing.MockClock``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final, NoReturn

import attrs
import trio

from genesis.exchange.endpoints import KLINE_INTERVALS, StreamName
from genesis.sim.exchange import kline_open_time
from genesis.sim.payloads import (
    agg_trade_payload,
    book_ticker_payload,
    depth_update_payload,
    kline_payload,
    mini_ticker_payload,
    partial_depth_payload,
    ticker_payload,
    trade_payload,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from decimal import Decimal

    from genesis.sim.clock import SimClock
    from genesis.sim.exchange import BookDiff, Exchange, PublicTrade
    from genesis.sim.hub import StreamHub
    from genesis.sim.market import MarketMaker

__all__ = ["DEPTH_LEVELS", "FeedStatistics", "MarketFeed", "run_market_feed"]

logger = logging.getLogger(__name__)

DEPTH_LEVELS: Final = (5, 10, 20)
_SPEEDS_MS: Final = (100, 1000)


@attrs.frozen(kw_only=True)
class FeedStatistics:
    ticks: int
    payloads: int


@attrs.define(eq=False)
class _DepthAcc:
    """Changes since the last emitted diff event of one symbol and speed."""

    first_update_id: int | None = None
    last_update_id: int = 0
    bids: dict[Decimal, Decimal] = attrs.field(factory=dict)
    asks: dict[Decimal, Decimal] = attrs.field(factory=dict)

    def add(self, diff: BookDiff) -> None:
        if self.first_update_id is None:
            self.first_update_id = diff.first_update_id
        self.last_update_id = diff.last_update_id
        self.bids.update(diff.bids)
        self.asks.update(diff.asks)

    def reset(self) -> None:
        self.first_update_id = None
        self.bids = {}
        self.asks = {}


@attrs.frozen
class _Names:
    """Precomputed stream names of one symbol."""

    trade: str
    agg_trade: str
    book_ticker: str
    ticker: str
    mini_ticker: str
    depth: dict[int, str]
    partial: dict[tuple[int, int], str]
    kline: dict[str, str]

    @classmethod
    def of(cls, symbol: str) -> _Names:
        def simple(kind: str) -> str:
            return str(StreamName(symbol=symbol, kind=kind))

        return cls(
            trade=simple("trade"),
            agg_trade=simple("aggTrade"),
            book_ticker=simple("bookTicker"),
            ticker=simple("ticker"),
            mini_ticker=simple("miniTicker"),
            depth={
                ms: str(StreamName(symbol=symbol, kind="depth", speed_ms=ms)) for ms in _SPEEDS_MS
            },
            partial={
                (n, ms): str(StreamName(symbol=symbol, kind="partialDepth", levels=n, speed_ms=ms))
                for n in DEPTH_LEVELS
                for ms in _SPEEDS_MS
            },
            kline={
                iv: str(StreamName(symbol=symbol, kind="kline", interval=iv))
                for iv in KLINE_INTERVALS
            },
        )


class MarketFeed:
    """Turns exchange events and periodic snapshots into hub payloads.

    Creating it registers listeners on ``exchange``; :meth:`close` removes them.
    :func:`run_market_feed` owns one; tests may drive :meth:`tick` directly.
    """

    def __init__(self, exchange: Exchange, hub: StreamHub, clock: SimClock) -> None:
        self._exchange = exchange
        self._hub = hub
        self._clock = clock
        self._names = {s.symbol: _Names.of(s.symbol) for s in exchange.symbol_specs()}
        self._depth = {ms: {s: _DepthAcc() for s in self._names} for ms in _SPEEDS_MS}
        self._top: dict[str, tuple[tuple[Decimal, Decimal] | None, ...]] = {}
        self._kline_open: dict[str, int] = {}
        self._ticks = 0
        self._payloads = 0
        self._removers: list[Callable[[], None]] = [
            exchange.add_trade_listener(self._on_trades),
            exchange.add_book_listener(self._on_book),
        ]

    def close(self) -> None:
        """Detach from the exchange (idempotent)."""
        for remove in self._removers:
            remove()
        self._removers = []

    @property
    def symbols(self) -> list[str]:
        return list(self._names)

    def statistics(self) -> FeedStatistics:
        return FeedStatistics(ticks=self._ticks, payloads=self._payloads)

    def _publish(self, stream: str, payload: bytes) -> None:
        self._payloads += 1
        self._hub.publish(stream, payload)

    # --- real time --------------------------------------------------------------------------

    def _on_trades(self, symbol: str, trades: Sequence[PublicTrade]) -> None:
        names = self._names.get(symbol)
        if names is None or not trades:
            return
        event_ms = self._clock.now_ms()
        hub = self._hub
        if hub.has_subscribers(names.trade):
            for t in trades:
                self._publish(names.trade, trade_payload(t, event_ms))
        if hub.has_subscribers(names.agg_trade):
            group: list[PublicTrade] = []
            for t in trades:
                if group and group[0].agg_id != t.agg_id:
                    self._publish(names.agg_trade, agg_trade_payload(group, event_ms))
                    group = []
                group.append(t)
            self._publish(names.agg_trade, agg_trade_payload(group, event_ms))

    def _on_book(self, diff: BookDiff) -> None:
        names = self._names.get(diff.symbol)
        if names is None:
            return
        for accs in self._depth.values():
            accs[diff.symbol].add(diff)
        if not self._hub.has_subscribers(names.book_ticker):
            self._top.pop(diff.symbol, None)
            return
        top = self._exchange.top_of_book(diff.symbol)
        if top[0] is None or top[1] is None or self._top.get(diff.symbol) == top:
            return  # a one-sided book has no best bid/ask to report (only while seeding)
        self._top[diff.symbol] = top
        self._publish(
            names.book_ticker,
            book_ticker_payload(diff.symbol, diff.last_update_id, top[0], top[1]),
        )

    # --- periodic ---------------------------------------------------------------------------

    def tick(self, elapsed_ms: int, now_ms: int) -> None:
        """Publish what is due ``elapsed_ms`` after the feed started (a multiple of 100 ms
        fires the 100 ms streams, of 1000 ms the 1 s streams, of 2000 ms the klines); kline
        closes are checked on every call."""
        self._ticks += 1
        hub = self._hub
        ex = self._exchange
        due = {ms: elapsed_ms % ms == 0 for ms in (*_SPEEDS_MS, 2000)}
        for symbol, names in self._names.items():
            for ms in _SPEEDS_MS:
                if not due[ms]:
                    continue
                acc = self._depth[ms][symbol]
                if acc.first_update_id is not None:
                    if hub.has_subscribers(names.depth[ms]):
                        self._publish(
                            names.depth[ms],
                            depth_update_payload(
                                symbol,
                                now_ms,
                                acc.first_update_id,
                                acc.last_update_id,
                                sorted(acc.bids.items(), reverse=True),
                                sorted(acc.asks.items()),
                            ),
                        )
                    acc.reset()
                for levels in DEPTH_LEVELS:
                    name = names.partial[(levels, ms)]
                    if hub.has_subscribers(name):
                        bids, asks = ex.book_levels(symbol, levels)
                        self._publish(name, partial_depth_payload(ex.update_id(symbol), bids, asks))
            if due[1000]:
                want_full = hub.has_subscribers(names.ticker)
                want_mini = hub.has_subscribers(names.mini_ticker)
                if want_full or want_mini:
                    stats = ex.ticker_stats(symbol, now_ms=now_ms)
                    if want_full:
                        self._publish(names.ticker, ticker_payload(stats, now_ms))
                    if want_mini:
                        self._publish(names.mini_ticker, mini_ticker_payload(stats, now_ms))
            for interval, name in names.kline.items():
                if not hub.has_subscribers(name):
                    self._kline_open.pop(name, None)
                    continue
                current = kline_open_time(interval, now_ms)
                previous = self._kline_open.get(name)
                if previous is not None and current > previous:
                    k = ex.kline(symbol, interval, previous, now_ms)
                    self._publish(name, kline_payload(symbol, k, now_ms))
                # A skew fault may move the clock back; never re-open an older kline.
                self._kline_open[name] = max(current, previous or current)
                if due[1000 if interval == "1s" else 2000]:
                    k = ex.kline(symbol, interval, current, now_ms)
                    self._publish(name, kline_payload(symbol, k, now_ms))


async def run_market_feed(
    exchange: Exchange,
    market_maker: MarketMaker | None,
    hub: StreamHub,
    clock: SimClock,
    *,
    step_s: float = 0.1,
    task_status: trio.TaskStatus[MarketFeed] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Step the market and publish stream payloads until cancelled.

    The first tick runs at once (so the book is populated), then ``task_status.started(feed)``
    reports the :class:`MarketFeed`; later ticks run at ``start + k × step_s`` on Trio's clock.

    Args:
        exchange: the engine whose events and books are published.
        market_maker: stepped once per tick (None: publish user-driven activity only).
        hub: where payloads go.
        clock: epoch-ms source for event times and klines.
        step_s: tick length; 1000 ms must be a multiple of it and it must divide 100 ms.
        task_status: receives the feed handle.

    Raises:
        ValueError: ``step_s`` does not divide 100 ms.

    Cancellation: safe at any point; the feed's exchange listeners are removed on exit.
    """
    step_ms = round(step_s * 1000)
    if step_ms <= 0 or 100 % step_ms != 0:
        raise ValueError("step_s must divide 0.1 s (e.g. 0.1, 0.05)")
    feed = MarketFeed(exchange, hub, clock)
    try:
        start = trio.current_time()
        k = 0
        while True:
            now_ms = clock.now_ms()
            if market_maker is not None:
                market_maker.step(now_ms)
            feed.tick(k * step_ms, now_ms)
            if k == 0:
                logger.info("sim.feed.started step_ms=%d symbols=%d", step_ms, len(feed.symbols))
                task_status.started(feed)
            k += 1
            await trio.sleep_until(start + k * step_ms / 1000)
    finally:
        feed.close()
