"""The rolling windows of genesis.sim.history against a model computed from the raw trades.

The 24 h ticker and the ``avgPriceMins`` VWAPs are served by sliding windows with running sums
and monotonic deques; the oracle here recomputes each figure from the list of trades itself
(which trades fall in the window, then plain min/max/sum), so a window that forgets to evict,
evicts too early, or loses an extreme fails. Trades may go back in time (a skew fault): the
series folds such a trade into its newest bucket, and the oracle models exactly that.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING

from hypothesis import given
from hypothesis import strategies as st

from genesis.sim.history import DAY_MS, SymbolHistory
from genesis.sim.model import PublicTrade

if TYPE_CHECKING:
    from collections.abc import Iterator

T0 = 1_767_225_600_000
MIN_MS = 60_000

# (ms since the previous step (negative: the clock went back), price in ticks, qty in steps,
# query offset from the step's time (negative: a query for an earlier moment))
_steps = st.lists(
    st.tuples(
        st.one_of(
            st.integers(0, 90_000),
            st.integers(0, 6 * 3_600_000),
            st.integers(0, 30 * 60_000),
            st.integers(-120_000, -1),
        ),
        st.integers(1, 400),
        st.integers(1, 50),
        st.one_of(
            st.just(0),
            st.integers(-3 * 3_600_000, 26 * 3_600_000),
            st.integers(DAY_MS - 2 * 3_600_000, DAY_MS + 2 * 3_600_000),
        ),
    ),
    min_size=10,
    max_size=60,
)


def _trade(i: int, t_ms: int, ticks: int, steps: int) -> PublicTrade:
    return PublicTrade(
        symbol="BTCUSDT",
        trade_id=i + 1,
        agg_id=i + 1,
        price=Decimal(ticks) * Decimal("0.5"),
        qty=Decimal(steps) * Decimal("0.001"),
        time_ms=t_ms,
        is_buyer_maker=i % 2 == 0,
    )


def _effective_opens(trades: list[PublicTrade], width_ms: int) -> list[int]:
    """The bucket each trade lands in: its own, or the newest one if the clock went back."""
    opens: list[int] = []
    for t in trades:
        own = t.time_ms // width_ms * width_ms
        opens.append(max(own, opens[-1]) if opens else own)
    return opens


def _day_oracle(trades: list[PublicTrade], now_ms: int) -> dict[str, object]:
    start = (now_ms - DAY_MS) // MIN_MS * MIN_MS
    opens = _effective_opens(trades, MIN_MS)
    window = [t for t, o in zip(trades, opens, strict=True) if start <= o <= now_ms]
    last = trades[-1].price
    if not window:
        return {"open": last, "high": last, "low": last, "close": last, "volume": 0,
                "quote": 0, "count": 0, "first": -1, "last": -1}  # fmt: skip
    return {
        "open": window[0].price,
        "high": max(t.price for t in window),
        "low": min(t.price for t in window),
        "close": window[-1].price,
        "volume": sum(t.qty for t in window),
        "quote": sum(t.price * t.qty for t in window),
        "count": len(window),
        "first": window[0].trade_id,
        "last": window[-1].trade_id,
    }


def _vwap_oracle(trades: list[PublicTrade], mins: int, now_ms: int) -> Decimal:
    start = (now_ms - mins * MIN_MS) // 1000 * 1000
    opens = _effective_opens(trades, 1000)
    window = [t for t, o in zip(trades, opens, strict=True) if start <= o <= now_ms]
    qty = sum((t.qty for t in window), Decimal(0))
    if not qty:
        return trades[-1].price
    quote = sum((t.price * t.qty for t in window), Decimal(0))
    return (quote / qty).quantize(Decimal("0.00000001"), rounding=ROUND_DOWN)


def _replay(
    steps: list[tuple[int, int, int, int]],
) -> Iterator[tuple[SymbolHistory, list[PublicTrade], int, int]]:
    """Record each step's trade; yield the history, the trades so far, now and the query
    offset after each."""
    history = SymbolHistory()
    trades: list[PublicTrade] = []
    now = T0
    for i, (dt_ms, ticks, qty_steps, query_offset) in enumerate(steps):
        now += dt_ms
        trade = _trade(i, now, ticks, qty_steps)
        history.record(trade)
        trades.append(trade)
        yield history, trades, now, query_offset


@given(_steps)
def test_rolling_day_matches_the_trades_in_the_window(
    steps: list[tuple[int, int, int, int]],
) -> None:
    for history, trades, now, query_offset in _replay(steps):
        for query_ms in (now, now + query_offset, now + query_offset + MIN_MS):
            day, traded = history.rolling_day(query_ms)
            expected = _day_oracle(trades, query_ms)
            got = {
                "open": day.open,
                "high": day.high,
                "low": day.low,
                "close": day.close,
                "volume": day.volume,
                "quote": day.quote_volume,
                "count": day.count,
                "first": day.first_id,
                "last": day.last_id,
            }
            assert got == expected, (len(trades), query_ms - T0)
            assert traded == (expected["count"] != 0)
            assert day.open_ms == query_ms - DAY_MS


@given(_steps, st.sampled_from([1, 5]))
def test_avg_price_matches_the_vwap_of_the_last_minutes(
    steps: list[tuple[int, int, int, int]], mins: int
) -> None:
    assert SymbolHistory().avg_price(mins, T0) is None
    for history, trades, now, query_offset in _replay(steps):
        for query_ms in (now, now + query_offset // 100):
            assert history.avg_price(mins, query_ms) == _vwap_oracle(trades, mins, query_ms)


def test_rolling_day_forgets_a_trade_exactly_when_its_minute_leaves_the_window() -> None:
    history = SymbolHistory()
    history.record(_trade(0, T0 + 30_000, 100, 1))  # minute T0
    history.record(_trade(1, T0 + 90_000, 300, 2))  # minute T0 + 1 min, the high
    history.record(_trade(2, T0 + 150_000, 200, 4))  # minute T0 + 2 min
    # The window opens at (now - 24 h) floored to the minute: minute T0 stays in until
    # now - 24 h reaches T0 + 1 min.
    day, _ = history.rolling_day(T0 + DAY_MS + MIN_MS - 1)
    assert (day.count, day.open, day.high) == (3, Decimal(50), Decimal(150))
    day, _ = history.rolling_day(T0 + DAY_MS + MIN_MS)
    assert (day.count, day.open, day.high, day.low) == (2, Decimal(150), Decimal(150), Decimal(100))
    day, _ = history.rolling_day(T0 + DAY_MS + 2 * MIN_MS)
    assert (day.count, day.open, day.high, day.low) == (1, Decimal(100), Decimal(100), Decimal(100))
    day, traded = history.rolling_day(T0 + DAY_MS + 3 * MIN_MS)
    assert (day.count, traded, day.open, day.volume) == (0, False, Decimal(100), Decimal(0))
