"""MarketState: a symbol's regime from its feed, as a pure core (no Trio, no I/O).

:class:`MarketStateTracker` takes market events of one symbol (1 m klines, trades, tickers,
depth snapshots) and the symbol's exchangeInfo ``status``, each with the local time ``now``
(seconds, any monotonic origin), and :meth:`MarketStateTracker.snapshot` judges a
:class:`~genesis.models.state.MarketState` at ``now``. The task that feeds it from the bus and
publishes the result lives in :mod:`genesis.app.market_state`.

Measures (all ``Decimal``):

- ``volatility_atr``: the average true range of the last ``atr_period`` closed 1 m klines, in
  price units. True range = ``max(high - low, |high - prev close|, |low - prev close|)``; the
  first kline (no previous close) uses ``high - low``. A simple mean, not Wilder's smoothing:
  it forgets a spike after ``atr_period`` minutes, which is what a regime flag wants. The open
  kline counts too (with its range so far), so a crash shows before the minute closes.
- ``spread_basis_points``: ``(ask - bid) / mid * 10_000`` from the newest depth snapshot or
  ticker, whichever came last (``0`` before any two-sided quote).
- ``volume_24h``: the ticker's rolling 24 h base-asset volume (``0`` before any ticker).
- ``liquidity_score`` in ``[0, 1)``: the quote notional ``sum(price * quantity)`` of the top 20
  levels of the *thinner* side of the book, squashed as ``n / (n + liquidity_half_notional)``:
  ``0`` for an empty side, ``0.5`` at ``liquidity_half_notional``, approaching ``1`` for deep
  books. The thinner side, because that is the one a market order of the other side eats.

The state, first rule that holds (thresholds in :class:`MarketStateConfig`):

=============== =============================================================================
MAINTENANCE     the exchangeInfo status is known and not ``TRADING`` (``HALT``, ``BREAK``, ...)
DEAD            no trade for ``dead_after_s`` (counted from the first event seen when no trade
                has come yet)
PANIC           ATR ≥ ``panic_atr_bps`` of the last price, or spread ≥ ``panic_spread_bps``
VOLATILE        ATR ≥ ``volatile_atr_bps`` of the last price, or spread ≥
                ``volatile_spread_bps``, or liquidity score < ``thin_liquidity_score``
NORMAL          otherwise
=============== =============================================================================

ATR in basis points of price makes one threshold fit BTC at 60,000 and a coin at 0.0001.
"""

from __future__ import annotations

from collections import deque
from decimal import Decimal
from typing import TYPE_CHECKING, Final

import attrs

from genesis.models.state import MarketCondition, MarketState

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from genesis.models.market import Depth, Kline, PriceLevel, Ticker, Trade

__all__ = [
    "DEPTH_LEVELS",
    "TRADING_STATUS",
    "MarketStateConfig",
    "MarketStateTracker",
    "average_true_range",
    "basis_points",
    "classify",
    "liquidity_score",
]

TRADING_STATUS: Final = "TRADING"
DEPTH_LEVELS: Final = 20
_BPS: Final = Decimal(10_000)
_ZERO: Final = Decimal(0)
_POSITIVE: Final = attrs.validators.gt(_ZERO)


@attrs.frozen(kw_only=True)
class MarketStateConfig:
    """Thresholds of the regime (see the module docstring for the rules).

    Attributes:
        atr_period: 1 m klines in the ATR (14: the usual period).
        dead_after_s: no trade for this long is DEAD.
        volatile_atr_bps: ATR over the last price, in bps, from which a symbol is VOLATILE
            (25 bps a minute is about 3x BTC's quiet-hours range).
        panic_atr_bps: ... and PANIC (100 bps, 1 % a minute on average over 14 minutes).
        volatile_spread_bps: spread from which a symbol is VOLATILE.
        panic_spread_bps: spread from which a symbol is PANIC (the book has been pulled).
        thin_liquidity_score: a liquidity score below this is VOLATILE (a thin book moves).
        liquidity_half_notional: the quote notional of the thinner side's top 20 levels that
            scores 0.5 (100,000 quote units: a small desk's order moves such a book little).
    """

    atr_period: int = attrs.field(default=14, validator=attrs.validators.gt(0))
    dead_after_s: float = attrs.field(default=300.0, validator=attrs.validators.gt(0.0))
    volatile_atr_bps: Decimal = attrs.field(default=Decimal(25), validator=_POSITIVE)
    panic_atr_bps: Decimal = attrs.field(default=Decimal(100), validator=_POSITIVE)
    volatile_spread_bps: Decimal = attrs.field(default=Decimal(20), validator=_POSITIVE)
    panic_spread_bps: Decimal = attrs.field(default=Decimal(100), validator=_POSITIVE)
    thin_liquidity_score: Decimal = attrs.field(default=Decimal("0.05"), validator=_POSITIVE)
    liquidity_half_notional: Decimal = attrs.field(default=Decimal(100_000), validator=_POSITIVE)

    def __attrs_post_init__(self) -> None:
        if self.panic_atr_bps < self.volatile_atr_bps:
            raise ValueError("panic_atr_bps must be at least volatile_atr_bps")
        if self.panic_spread_bps < self.volatile_spread_bps:
            raise ValueError("panic_spread_bps must be at least volatile_spread_bps")
        if self.thin_liquidity_score >= 1:
            raise ValueError("thin_liquidity_score must be below 1")


# --- the measures ---------------------------------------------------------------------------


def average_true_range(bars: Sequence[tuple[Decimal, Decimal, Decimal]]) -> Decimal:
    """The mean true range of ``(high, low, close)`` bars, oldest first; ``0`` for none.

    The first bar has no previous close, so its true range is ``high - low``.
    """
    if not bars:
        return _ZERO
    total = _ZERO
    previous_close: Decimal | None = None
    for high, low, close in bars:
        true_range = high - low
        if previous_close is not None:
            true_range = max(true_range, abs(high - previous_close), abs(low - previous_close))
        total += true_range
        previous_close = close
    return total / len(bars)


def basis_points(part: Decimal, of: Decimal) -> Decimal:
    """``part`` in basis points of ``of``; ``0`` when ``of`` is not positive."""
    return part / of * _BPS if of > 0 else _ZERO


def _spread_bps(bid: Decimal, ask: Decimal) -> Decimal:
    mid = (bid + ask) / 2
    if bid <= 0 or ask <= 0 or ask < bid:
        return _ZERO  # one-sided or crossed: no meaningful spread
    return basis_points(ask - bid, mid)


def _notional(levels: Iterable[PriceLevel]) -> Decimal:
    total = _ZERO
    for n, level in enumerate(levels):
        if n == DEPTH_LEVELS:
            break
        total += level.price * level.quantity
    return total


def liquidity_score(
    bids: Sequence[PriceLevel], asks: Sequence[PriceLevel], half_notional: Decimal
) -> Decimal:
    """The liquidity score in ``[0, 1)`` of a book's top 20 levels (module docstring)."""
    thinner = min(_notional(bids), _notional(asks))
    if thinner <= 0:
        return _ZERO
    score = thinner / (thinner + half_notional)
    # Decimal rounding can land a huge book on exactly 1; keep the documented [0, 1).
    return min(score, Decimal(1) - Decimal("1e-9"))


def classify(
    config: MarketStateConfig,
    *,
    status: str | None,
    trade_age_s: float | None,
    atr_bps: Decimal,
    spread_bps: Decimal,
    liquidity: Decimal | None,
) -> MarketCondition:
    """The state for these measures, by the rules in the module docstring.

    Args:
        config: the thresholds.
        status: the exchangeInfo status, ``None`` when unknown (treated as trading).
        trade_age_s: seconds since the last trade (or since tracking began), ``None`` when
            the tracker has seen nothing yet (never DEAD then: no evidence).
        atr_bps: ATR in basis points of the last price.
        spread_bps: the spread in basis points.
        liquidity: the liquidity score, ``None`` before any book (no evidence of thinness).
    """
    if status is not None and status != TRADING_STATUS:
        return MarketCondition.MAINTENANCE
    if trade_age_s is not None and trade_age_s >= config.dead_after_s:
        return MarketCondition.DEAD
    if atr_bps >= config.panic_atr_bps or spread_bps >= config.panic_spread_bps:
        return MarketCondition.PANIC
    if (
        atr_bps >= config.volatile_atr_bps
        or spread_bps >= config.volatile_spread_bps
        or (liquidity is not None and liquidity < config.thin_liquidity_score)
    ):
        return MarketCondition.VOLATILE
    return MarketCondition.NORMAL


# --- the tracker ----------------------------------------------------------------------------


@attrs.define
class MarketStateTracker:
    """One symbol's measures, fed event by event; :meth:`snapshot` judges the state.

    Only klines whose interval is ``1m`` are used. Times ``now`` are local monotonic seconds;
    ``updated_ms`` of a snapshot is the exchange time of the newest event seen.
    """

    symbol: str
    config: MarketStateConfig = attrs.field(factory=MarketStateConfig)
    status: str | None = None
    _closed: deque[tuple[Decimal, Decimal, Decimal]] = attrs.field(init=False)
    _open_bar: tuple[int, Decimal, Decimal, Decimal] | None = attrs.field(init=False, default=None)
    _last_price: Decimal = attrs.field(init=False, default=_ZERO)
    _spread_bps: Decimal = attrs.field(init=False, default=_ZERO)
    _volume_24h: Decimal = attrs.field(init=False, default=_ZERO)
    _liquidity: Decimal | None = attrs.field(init=False, default=None)
    _first_seen: float | None = attrs.field(init=False, default=None)
    _last_trade: float | None = attrs.field(init=False, default=None)
    _updated_ms: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        self._closed = deque(maxlen=self.config.atr_period)

    def _seen(self, now: float, event_ms: int) -> None:
        if self._first_seen is None:
            self._first_seen = now
        self._updated_ms = max(self._updated_ms, event_ms)

    def on_kline(self, kline: Kline, now: float) -> None:
        if kline.interval != "1m":
            return
        self._seen(now, kline.event_time_ms)
        bar = (kline.high_price, kline.low_price, kline.close_price)
        if kline.closed:
            if self._open_bar is None or self._open_bar[0] <= kline.open_time_ms:
                self._open_bar = None
            self._closed.append(bar)
        elif self._open_bar is None or self._open_bar[0] <= kline.open_time_ms:
            self._open_bar = (kline.open_time_ms, *bar)
        if kline.close_price > 0:
            self._last_price = kline.close_price

    def on_trade(self, trade: Trade, now: float) -> None:
        self._seen(now, trade.event_time_ms)
        self._last_trade = now
        self._last_price = trade.price

    def on_ticker(self, ticker: Ticker, now: float) -> None:
        self._seen(now, ticker.event_time_ms)
        self._volume_24h = ticker.volume
        self._spread_bps = _spread_bps(ticker.best_bid, ticker.best_ask)
        if self._last_price <= 0 and ticker.last_price > 0:
            self._last_price = ticker.last_price

    def on_depth(self, depth: Depth, now: float) -> None:
        self._seen(now, depth.received_ms)
        if depth.bids and depth.asks:
            self._spread_bps = _spread_bps(depth.bids[0].price, depth.asks[0].price)
        self._liquidity = liquidity_score(
            depth.bids, depth.asks, self.config.liquidity_half_notional
        )

    def atr(self) -> Decimal:
        bars = list(self._closed)
        if self._open_bar is not None:
            bars.append(self._open_bar[1:])
        return average_true_range(bars[-self.config.atr_period :])

    def snapshot(self, now: float) -> MarketState:
        """The state at ``now`` (a pure function of what was fed and ``now``)."""
        atr = self.atr()
        since = self._last_trade if self._last_trade is not None else self._first_seen
        state = classify(
            self.config,
            status=self.status,
            trade_age_s=None if since is None else max(0.0, now - since),
            atr_bps=basis_points(atr, self._last_price),
            spread_bps=self._spread_bps,
            liquidity=self._liquidity,
        )
        return MarketState(
            symbol=self.symbol,
            state=state,
            volatility_atr=atr,
            spread_basis_points=self._spread_bps,
            volume_24h=self._volume_24h,
            liquidity_score=self._liquidity if self._liquidity is not None else _ZERO,
            updated_ms=self._updated_ms,
        )
