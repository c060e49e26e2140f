"""MarketState: the pure core's properties (hypothesis) and the task over a real bus (MockClock)."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import TYPE_CHECKING

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from genesis.app.market_state import run_market_state
from genesis.bus import EventBus
from genesis.market_state import (
    MarketStateConfig,
    MarketStateTracker,
    average_true_range,
    classify,
    liquidity_score,
)
from genesis.models.market import Depth, Kline, PriceLevel, Ticker, Trade
from genesis.models.state import MarketCondition, MarketState
from tests.gateway_support import memory_gateway

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

SEVERITY = {MarketCondition.NORMAL: 0, MarketCondition.VOLATILE: 1, MarketCondition.PANIC: 2}
CONFIG = MarketStateConfig()

prices = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal(100_000), places=4)
quantities = st.decimals(min_value=Decimal(0), max_value=Decimal(1000), places=3)
bps = st.decimals(min_value=Decimal(0), max_value=Decimal(10_000), places=2)


def bars() -> SearchStrategy[list[tuple[Decimal, Decimal, Decimal]]]:
    def bar(values: list[Decimal]) -> tuple[Decimal, Decimal, Decimal]:
        low, close, high = sorted(values)
        return high, low, close

    return st.lists(st.lists(prices, min_size=3, max_size=3).map(bar), max_size=30)


levels = st.lists(st.builds(PriceLevel, prices, quantities), max_size=30)


def kline(minute: int, high: str, low: str, close: str, *, closed: bool = True) -> Kline:
    return Kline(
        symbol="BTCUSDT",
        interval="1m",
        event_time_ms=minute * 60_000 + 59_999,
        open_time_ms=minute * 60_000,
        close_time_ms=minute * 60_000 + 59_999,
        first_trade_id=1,
        last_trade_id=2,
        open_price=Decimal(close),
        close_price=Decimal(close),
        high_price=Decimal(high),
        low_price=Decimal(low),
        volume=Decimal(1),
        quote_volume=Decimal(1),
        taker_buy_volume=Decimal(0),
        taker_buy_quote_volume=Decimal(0),
        trade_count=2,
        closed=closed,
    )


def trade(trade_id: int, price: str = "100") -> Trade:
    return Trade(
        symbol="BTCUSDT",
        trade_id=trade_id,
        price=Decimal(price),
        quantity=Decimal(1),
        trade_time_ms=trade_id,
        event_time_ms=trade_id,
        buyer_is_maker=False,
    )


def depth(bid: str, ask: str, quantity: str = "10") -> Depth:
    return Depth(
        symbol="BTCUSDT",
        last_update_id=1,
        bids=(PriceLevel(Decimal(bid), Decimal(quantity)),),
        asks=(PriceLevel(Decimal(ask), Decimal(quantity)),),
        received_ms=5,
    )


# --- pure core: properties -------------------------------------------------------------------


@given(bars())
def test_atr_is_non_negative_and_at_least_the_smallest_range(
    series: list[tuple[Decimal, Decimal, Decimal]],
) -> None:
    atr = average_true_range(series)
    assert atr >= 0
    if series:
        assert atr >= min(high - low for high, low, _ in series)


@given(bars(), st.integers(min_value=1, max_value=1000))
def test_atr_scales_with_price(series: list[tuple[Decimal, Decimal, Decimal]], k: int) -> None:
    scaled = [(h * k, low * k, c * k) for h, low, c in series]
    expected = average_true_range(series) * k
    # Equal up to the mean's rounding in the 28th significant digit.
    assert abs(average_true_range(scaled) - expected) <= expected * Decimal("1e-26")


@given(prices, st.integers(min_value=1, max_value=30))
def test_atr_of_a_flat_market_is_zero(price: Decimal, n: int) -> None:
    assert average_true_range([(price, price, price)] * n) == 0


def test_atr_counts_gaps_between_bars() -> None:
    # The second bar's range is 1, but it opened 10 above the first close: true range 11.
    series = [
        (Decimal(101), Decimal(100), Decimal(100)),
        (Decimal(111), Decimal(110), Decimal(111)),
    ]
    assert average_true_range(series) == Decimal(6)


@given(levels, levels, st.decimals(min_value=1, max_value=10**9, places=0))
def test_liquidity_score_is_in_the_unit_interval(
    bids: list[PriceLevel], asks: list[PriceLevel], half: Decimal
) -> None:
    score = liquidity_score(bids, asks, half)
    assert 0 <= score < 1
    MarketState(
        symbol="BTCUSDT",
        state=MarketCondition.NORMAL,
        volatility_atr=Decimal(0),
        spread_basis_points=Decimal(0),
        volume_24h=Decimal(0),
        liquidity_score=score,
    )


@given(levels, levels, st.builds(PriceLevel, prices, quantities))
def test_more_depth_never_lowers_the_liquidity_score(
    bids: list[PriceLevel], asks: list[PriceLevel], extra: PriceLevel
) -> None:
    before = liquidity_score(bids, asks, Decimal(100_000))
    deeper_bids = [PriceLevel(b.price, b.quantity + extra.quantity) for b in bids]
    assert liquidity_score(deeper_bids, asks, Decimal(100_000)) >= before


def test_liquidity_score_is_one_half_at_the_half_notional_and_uses_the_thinner_side() -> None:
    thin = [PriceLevel(Decimal(100), Decimal(1000))]  # 100,000 quote
    deep = [PriceLevel(Decimal(100), Decimal(10**6))]
    assert liquidity_score(thin, deep, Decimal(100_000)) == Decimal("0.5")
    assert liquidity_score(deep, thin, Decimal(100_000)) == Decimal("0.5")
    assert liquidity_score([], deep, Decimal(100_000)) == 0


def test_liquidity_score_reads_only_the_top_twenty_levels() -> None:
    book = [PriceLevel(Decimal(1), Decimal(1))] * 20
    deeper = [*book, PriceLevel(Decimal(1), Decimal(10**9))]
    assert liquidity_score(deeper, deeper, Decimal(20)) == liquidity_score(book, book, Decimal(20))


@given(
    st.sampled_from(["HALT", "BREAK", "END_OF_DAY", "PRE_TRADING"]),
    st.none() | st.floats(min_value=0, max_value=10**6),
    bps,
    bps,
)
def test_a_symbol_not_trading_is_maintenance_whatever_its_market(
    status: str, age: float | None, atr: Decimal, spread: Decimal
) -> None:
    got = classify(
        CONFIG, status=status, trade_age_s=age, atr_bps=atr, spread_bps=spread, liquidity=None
    )
    assert got is MarketCondition.MAINTENANCE


@given(st.sampled_from([None, "TRADING"]), st.floats(min_value=300, max_value=10**6), bps, bps)
def test_no_trade_for_the_configured_time_is_dead(
    status: str | None, age: float, atr: Decimal, spread: Decimal
) -> None:
    got = classify(
        CONFIG, status=status, trade_age_s=age, atr_bps=atr, spread_bps=spread, liquidity=None
    )
    assert got is MarketCondition.DEAD


@given(bps, bps, bps, bps)
def test_more_volatility_or_spread_never_calms_the_state(
    atr: Decimal, spread: Decimal, more_atr: Decimal, more_spread: Decimal
) -> None:
    def judge(a: Decimal, s: Decimal) -> int:
        got = classify(
            CONFIG, status="TRADING", trade_age_s=1.0, atr_bps=a, spread_bps=s, liquidity=None
        )
        return SEVERITY[got]

    assert judge(atr + more_atr, spread + more_spread) >= judge(atr, spread)


@pytest.mark.parametrize(
    ("atr", "spread", "liquidity", "expected"),
    [
        ("0", "1", "0.5", MarketCondition.NORMAL),
        ("24.99", "19.99", "0.05", MarketCondition.NORMAL),
        ("25", "1", "0.5", MarketCondition.VOLATILE),
        ("1", "20", "0.5", MarketCondition.VOLATILE),
        ("1", "1", "0.049", MarketCondition.VOLATILE),
        ("100", "1", "0.5", MarketCondition.PANIC),
        ("1", "100", "0.5", MarketCondition.PANIC),
    ],
)
def test_documented_thresholds(
    atr: str, spread: str, liquidity: str, expected: MarketCondition
) -> None:
    got = classify(
        CONFIG,
        status="TRADING",
        trade_age_s=299.9,
        atr_bps=Decimal(atr),
        spread_bps=Decimal(spread),
        liquidity=Decimal(liquidity),
    )
    assert got is expected


def test_config_rejects_inverted_thresholds() -> None:
    with pytest.raises(ValueError, match="panic_atr_bps"):
        MarketStateConfig(volatile_atr_bps=Decimal(50), panic_atr_bps=Decimal(40))
    with pytest.raises(ValueError, match="panic_spread_bps"):
        MarketStateConfig(volatile_spread_bps=Decimal(50), panic_spread_bps=Decimal(40))
    with pytest.raises(ValueError, match="thin_liquidity_score"):
        MarketStateConfig(thin_liquidity_score=Decimal(1))
    with pytest.raises(ValueError, match="atr_period"):
        MarketStateConfig(atr_period=0)


# --- the tracker ------------------------------------------------------------------------------


def test_tracker_judges_atr_from_closed_and_open_one_minute_klines() -> None:
    tracker = MarketStateTracker("BTCUSDT")
    tracker.on_trade(trade(1), 0.0)
    for minute in range(14):
        tracker.on_kline(kline(minute, "100.1", "99.9", "100"), 0.0)
    quiet = tracker.snapshot(1.0)
    assert quiet.volatility_atr == Decimal("0.2")
    assert quiet.state is MarketCondition.NORMAL  # 20 bps < 25
    # The open minute falls 5 %: it counts before it closes, diluted over 14 minutes.
    tracker.on_kline(kline(14, "100", "95", "95", closed=False), 1.0)
    falling = tracker.snapshot(1.0)
    assert falling.volatility_atr == (Decimal("0.2") * 13 + 5) / 14  # the oldest bar left
    assert falling.state is MarketCondition.VOLATILE  # 57 bps of 95
    # The same minute goes on to fall 20 %: PANIC (161 bps of 80).
    tracker.on_kline(kline(14, "100", "80", "80", closed=False), 2.0)
    assert tracker.snapshot(2.0).state is MarketCondition.PANIC
    # Klines of other intervals are ignored.
    tracker.on_kline(attrs.evolve(kline(14, "1000", "1", "500"), interval="5m"), 2.0)
    assert tracker.snapshot(2.0).volatility_atr == (Decimal("0.2") * 13 + 20) / 14
    # It closes, and the next open minute replaces nothing of it.
    tracker.on_kline(kline(14, "100", "80", "80"), 3.0)
    tracker.on_kline(kline(15, "80.1", "79.9", "80", closed=False), 3.0)
    assert tracker.snapshot(3.0).volatility_atr == (Decimal("0.2") * 12 + 20 + Decimal("0.2")) / 14


def test_tracker_spread_volume_and_liquidity_come_from_depth_and_ticker() -> None:
    tracker = MarketStateTracker("BTCUSDT")
    tracker.on_depth(depth("99.9", "100.1", quantity="1000"), 0.0)
    state = tracker.snapshot(0.0)
    assert state.spread_basis_points == Decimal(20)
    assert state.liquidity_score == Decimal(99900) / Decimal(199900)
    assert state.state is MarketCondition.VOLATILE  # 20 bps spread
    assert state.updated_ms == 5


def test_tracker_takes_volume_and_spread_from_the_ticker() -> None:
    tracker = MarketStateTracker("BTCUSDT")
    ticker = Ticker(
        symbol="BTCUSDT",
        event_time_ms=9,
        price_change=Decimal(0),
        price_change_percent=Decimal(0),
        weighted_avg_price=Decimal(100),
        last_price=Decimal(100),
        last_quantity=Decimal(1),
        best_bid=Decimal("99.95"),
        best_bid_quantity=Decimal(1),
        best_ask=Decimal("100.05"),
        best_ask_quantity=Decimal(1),
        open_price=Decimal(100),
        high_price=Decimal(100),
        low_price=Decimal(100),
        volume=Decimal("1234.5"),
        quote_volume=Decimal(123450),
        open_time_ms=0,
        close_time_ms=9,
        first_trade_id=1,
        last_trade_id=2,
        trade_count=2,
    )
    tracker.on_ticker(ticker, 0.0)
    state = tracker.snapshot(0.0)
    assert (state.volume_24h, state.spread_basis_points, state.updated_ms) == (
        Decimal("1234.5"),
        Decimal(10),
        9,
    )
    # A later depth snapshot's spread replaces the ticker's.
    tracker.on_depth(depth("99.99", "100.01", quantity="10000"), 1.0)
    assert tracker.snapshot(1.0).spread_basis_points == Decimal(2)


def test_tracker_is_dead_after_no_trade_and_maintenance_when_halted() -> None:
    tracker = MarketStateTracker("BTCUSDT", MarketStateConfig(dead_after_s=60))
    assert tracker.snapshot(1000.0).state is MarketCondition.NORMAL  # nothing seen: no evidence
    tracker.on_depth(depth("100", "100.01", quantity="10000"), 10.0)
    assert tracker.snapshot(69.9).state is MarketCondition.NORMAL
    assert tracker.snapshot(70.0).state is MarketCondition.DEAD  # 60 s since first seen
    tracker.on_trade(trade(7), 70.0)
    assert tracker.snapshot(129.0).state is MarketCondition.NORMAL
    tracker.status = "HALT"
    assert tracker.snapshot(129.0).state is MarketCondition.MAINTENANCE


# --- the task over a real bus ---------------------------------------------------------------


async def test_task_publishes_on_change_and_periodically(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = EventBus()
    status = {"BTCUSDT": "TRADING"}
    seen: list[tuple[float, MarketCondition]] = []
    config = MarketStateConfig(dead_after_s=30)
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            states = bus.subscribe(MarketState)
            handle = await nursery.start(
                lambda task_status: run_market_state(
                    bus,
                    ["BTCUSDT"],
                    config=config,
                    symbol_status=status.get,
                    publish_interval_s=10.0,
                    task_status=task_status,
                )
            )
            bus.publish_nowait(trade(1))
            bus.publish_nowait(depth("100", "100.01", quantity="10000"))

            async def collect() -> None:
                async for state in states:
                    seen.append((trio.current_time(), state.state))  # noqa: PERF401  # the time

            nursery.start_soon(collect)
            await trio.sleep(15.5)
            status["BTCUSDT"] = "HALT"
            await trio.sleep(5)
            status["BTCUSDT"] = "TRADING"
            await trio.sleep(25)
            nursery.cancel_scope.cancel()
    # t=1 first judgement, t=11 periodic, t=16 HALT (change), t=21 back (change),
    # t=31 DEAD (30 s after the trade at t=0: change), t=41 periodic.
    assert seen == [
        (1.0, MarketCondition.NORMAL),
        (11.0, MarketCondition.NORMAL),
        (16.0, MarketCondition.MAINTENANCE),
        (21.0, MarketCondition.NORMAL),
        (30.0, MarketCondition.DEAD),
        (40.0, MarketCondition.DEAD),
    ]
    assert handle.state_of("BTCUSDT") is not None


async def test_a_symbol_halted_mid_session_turns_maintenance_at_the_next_refresh(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    bus = EventBus()
    changes: list[tuple[float, MarketCondition]] = []
    with trio.fail_after(600):
        async with memory_gateway() as m, trio.open_nursery() as nursery:

            def status(symbol: str) -> str | None:
                info = m.gateway.cached_exchange_info
                found = info.symbol(symbol) if info is not None else None
                return found.status if found is not None else None

            states = bus.subscribe(MarketState)
            start = trio.current_time()
            await nursery.start(
                lambda task_status: run_market_state(
                    bus,
                    ["BTCUSDT"],
                    symbol_status=status,
                    publish_interval_s=1000.0,
                    refresh=lambda: m.gateway.exchange_info(["BTCUSDT"]),
                    refresh_interval_s=59.5,
                    task_status=task_status,
                )
            )
            bus.publish_nowait(trade(1))

            async def collect() -> None:
                async for state in states:
                    changes.append((trio.current_time() - start, state.state))  # noqa: PERF401

            nursery.start_soon(collect)
            await trio.sleep(5)
            m.sim.faults.halt("BTCUSDT")
            await trio.sleep(60)  # refreshed at 59.5: MAINTENANCE at the tick of 60
            m.sim.faults.halt("BTCUSDT", "TRADING")
            m.sim.faults.error_burst(1)  # the refresh at 119 fails: the last status stays
            await trio.sleep(120)  # the one at 178.5 succeeds
            nursery.cancel_scope.cancel()
    assert changes == [
        (1.0, MarketCondition.NORMAL),
        (60.0, MarketCondition.MAINTENANCE),
        (179.0, MarketCondition.NORMAL),
    ]
    assert any(
        r.levelno == logging.WARNING and "market_state.refresh_failed" in r.getMessage()
        for r in caplog.records
    )
