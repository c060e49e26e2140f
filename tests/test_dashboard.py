"""The operator's dashboard: the pure view model, its rich rendering, and the running task.

The model is driven with events built here and explicit Trio times; the rendering is printed to
a ``rich`` console with ``record=True`` and asserted as text; the task runs under
``autojump_clock`` on a bus we publish to ourselves (the heartbeat, merger, alert manager and
order book publish the same event types in a real run).
"""

from __future__ import annotations

import io
import logging
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING

import orjson
import pytest
import trio
from rich.console import Console

from genesis.app.dashboard import LiveDisplay, render, run_dashboard
from genesis.app.logging import configure_logging, reset_logging
from genesis.app.supervisor import Supervision, supervise_order_side
from genesis.app.view import MAX_ALERTS, STALE_AFTER_S, OpsView, Sources, Tick
from genesis.bus import EventBus
from genesis.errors import ConnectError, ExchangeRejectedError
from genesis.models.account import Balance
from genesis.models.events import (
    AccountBalances,
    Alert,
    AlertKind,
    AlertSeverity,
    BreakerState,
    BreakerTransition,
    ConnectionHealth,
    ConnectionState,
    FeedDown,
    FeedGap,
    FeedUp,
    OrderUpdate,
    OrderUpdateSource,
    SequenceReset,
    UserStreamState,
    UserStreamStatus,
)
from genesis.models.market import OrderBook, PriceLevel
from genesis.models.orders import Order, OrderSide, OrderStatus, OrderType
from genesis.models.state import MarketCondition, MarketState
from genesis.resilience.circuit_breaker import BreakerConfig, CircuitBreaker
from tests.gateway_support import memory_gateway
from tests.test_app_run import FakeTerminal, depth, kline, ticker, trade
from tests.test_order_side_restart import CrashOnce, idle_service

if TYPE_CHECKING:
    from collections.abc import Iterator

    from genesis.app.view import ViewSnapshot
    from genesis.models.account import Account

D = Decimal


@pytest.fixture(autouse=True)
def _logging_reset() -> Iterator[None]:
    yield
    reset_logging()


def shown(snapshot: ViewSnapshot, width: int = 200) -> str:
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(render(snapshot))
    return console.export_text()


def health(role: str, state: ConnectionState = ConnectionState.CONNECTED) -> ConnectionHealth:
    return ConnectionHealth(
        role=role,
        state=state,
        uptime_s=12.0,
        messages_received=500,
        messages_per_s=41.5,
        latency_ms=3,
        reconnects=2,
        rotations=0,
        last_error=None if state is ConnectionState.CONNECTED else "connection refused",
        receiving=state is ConnectionState.CONNECTED,
        last_frame_age_s=0.5,
        ping_rtt_ms=1.25,
        first_share=0.62,
    )


def order(client_id: str, status: OrderStatus) -> Order:
    return Order(
        client_order_id=client_id,
        symbol="BTCUSDT",
        type=OrderType.LIMIT,
        side=OrderSide.BUY,
        price=D("30000"),
        quantity=D("0.01"),
        status=status,
    )


def alert(n: int) -> Alert:
    return Alert(
        kind=AlertKind.BREAKER_OPEN,
        severity=AlertSeverity.ERROR,
        message=f"breaker rest open #{n}",
        at_ms=1_767_225_600_000 + n * 1000,
        subject="rest",
    )


# --- the model -------------------------------------------------------------------------------


def test_symbols_prefer_trades_and_books_over_the_ticker_and_show_tick_direction() -> None:
    view = OpsView(("BTCUSDT", "ETHUSDT"), "SIMULATOR", 0.0)
    assert view.apply(ticker(last="59990.00"), 1.0)
    btc = view.snapshot(1.0).symbols[0]
    assert (btc.last, btc.bid, btc.ask) == (D("59990.00"), D("59989.00"), D("59991.00"))
    assert (btc.change_pct, btc.volume, btc.tick) == (D("-0.02"), D("1000"), Tick.FLAT)

    view.apply(trade(trade_id=1, price="60000.10"), 1.1)
    assert view.snapshot(1.1).symbols[0].tick is Tick.UP
    view.apply(trade(trade_id=2, price="60000.00"), 1.2)
    view.apply(trade(trade_id=3, price="60000.00"), 1.3)  # unchanged: the direction stays
    assert view.snapshot(1.3).symbols[0].tick is Tick.DOWN
    view.apply(depth(bid="60000.00", ask="60000.20"), 1.4)
    view.apply(kline(close="60000.05"), 1.5)
    assert not view.apply(kline(close="1", interval="5m"), 1.5)
    view.apply(ticker(last="1.00"), 1.6)  # no longer overrides the trade and the book
    assert not view.apply(trade(symbol="XRPUSDT"), 1.6)
    view.apply(
        MarketState(
            symbol="BTCUSDT",
            state=MarketCondition.VOLATILE,
            volatility_atr=D("12"),
            spread_basis_points=D("0.03"),
            volume_24h=D("1000"),
            liquidity_score=D("0.8"),
        ),
        1.7,
    )
    btc, eth = view.snapshot(2.0).symbols
    assert (btc.last, btc.bid, btc.ask) == (D("60000.00"), D("60000.00"), D("60000.20"))
    assert btc.spread_bps == depth().spread_bps
    assert (btc.kline_close, btc.kline_high, btc.kline_low) == (
        D("60000.05"),
        D("60001"),
        D("59999"),
    )
    assert btc.state is MarketCondition.VOLATILE
    assert btc.age_s == pytest.approx(0.3)
    assert not btc.stale
    assert not eth.has_data
    assert eth.age_s is None


def test_an_order_book_sets_bid_ask_and_spread() -> None:
    view = OpsView(("BTCUSDT",), "TESTNET", 0.0)
    view.apply(
        OrderBook(
            symbol="BTCUSDT",
            last_update_id=9,
            bids=(PriceLevel(D("100"), D("1")),),
            asks=(PriceLevel(D("100.10"), D("1")),),
        ),
        0.5,
    )
    row = view.snapshot(0.5).symbols[0]
    assert (row.bid, row.ask) == (D("100"), D("100.10"))
    assert row.spread_bps is not None
    assert round(row.spread_bps, 3) == D("9.995")  # 0.10 / 100.05 mid


def test_rows_go_stale_without_events_and_at_once_when_the_feed_is_down() -> None:
    view = OpsView(("BTCUSDT", "ETHUSDT"), "SIMULATOR", 0.0)
    view.apply(trade(), 1.0)
    snap = view.snapshot(STALE_AFTER_S)
    assert [r.stale for r in snap.symbols] == [False, False]  # exactly at the limit: fresh
    snap = view.snapshot(1.0 + STALE_AFTER_S)
    assert [r.stale for r in snap.symbols] == [False, True]  # ETH: nothing since the start
    snap = view.snapshot(1.0 + STALE_AFTER_S + 0.1)
    assert [r.stale for r in snap.symbols] == [True, True]
    view.apply(trade(trade_id=2), 7.0)
    assert [r.stale for r in view.snapshot(7.0).symbols] == [False, True]

    view.apply(FeedDown(at=7.5, reason="no frames for 2 s", last_event_age_s=0.5), 7.5)
    snap = view.snapshot(7.5)
    assert [r.stale for r in snap.symbols] == [True, True]
    assert snap.symbols[0].age_s == pytest.approx(0.5)
    assert (snap.header.feed_down, snap.header.feed_down_reason) == (True, "no frames for 2 s")
    view.apply(FeedUp(at=8.0, down_for_s=0.5, role="backup"), 8.0)
    snap = view.snapshot(8.0)
    assert not snap.header.feed_down
    assert [r.stale for r in snap.symbols] == [False, True]


def test_connections_keep_counting_ages_between_health_reports() -> None:
    view = OpsView(("BTCUSDT",), "SIMULATOR", 0.0)
    view.apply(health("monitoring"), 10.0)
    view.apply(health("execution", ConnectionState.BACKOFF), 10.0)
    execution, monitoring = view.snapshot(12.0).connections
    assert (execution.role, execution.state, execution.uptime_s) == ("execution", "backoff", 0.0)
    assert execution.last_error == "connection refused"
    assert monitoring.uptime_s == pytest.approx(14.0)
    assert monitoring.last_frame_age_s == pytest.approx(2.5)
    assert (monitoring.ping_rtt_ms, monitoring.reconnects, monitoring.first_share) == (
        1.25,
        2,
        0.62,
    )


def test_breakers_count_down_to_half_open() -> None:
    view = OpsView(("BTCUSDT",), "SIMULATOR", 0.0)
    view.apply(
        BreakerTransition(
            name="rest",
            previous=BreakerState.CLOSED,
            state=BreakerState.OPEN,
            at=100.0,
            failures=5,
            reason="5 failures in 30 s",
            retry_after_s=60.0,
        ),
        100.0,
    )
    [rest] = view.snapshot(115.0).breakers
    assert (rest.state, rest.half_open_in_s, rest.reason) == (
        BreakerState.OPEN,
        45.0,
        "5 failures in 30 s",
    )
    assert view.snapshot(200.0).breakers[0].half_open_in_s == 0.0


async def test_polled_breakers_limiter_and_connections(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = CircuitBreaker("streams", BreakerConfig(failure_threshold=1, cooldown_s=30.0))
    with pytest.raises(ConnectError):
        async with breaker.guard():
            raise ConnectError("refused")
    view = OpsView(("BTCUSDT",), "SIMULATOR", trio.current_time())
    await trio.sleep(10)
    view.observe(Sources(breakers={"streams": breaker}), trio.current_time())
    [streams] = view.snapshot(trio.current_time()).breakers
    assert streams.state is BreakerState.OPEN
    assert streams.half_open_in_s == pytest.approx(20.0)


def test_balances_orders_and_alerts() -> None:
    view = OpsView(("BTCUSDT",), "SIMULATOR", 0.0)
    view.apply(
        AccountBalances(
            event_time_ms=1,
            update_time_ms=1,
            balances=(
                Balance(asset="USDT", free=D("990"), locked=D("10")),
                Balance(asset="XRP", free=D("0"), locked=D("0")),
            ),
        ),
        1.0,
    )
    for client_id, status in (("a", OrderStatus.PENDING), ("b", OrderStatus.PARTIAL)):
        view.apply(OrderUpdate(order=order(client_id, status), source=OrderUpdateSource.REST), 1)
    view.apply(
        OrderUpdate(order=order("a", OrderStatus.FILLED), source=OrderUpdateSource.USER_STREAM),
        2.0,
    )
    for n in range(MAX_ALERTS + 2):
        view.apply(alert(n), 3.0)
    snap = view.snapshot(3.0)
    assert [(b.asset, b.free, b.locked) for b in snap.balances] == [("USDT", D("990"), D("10"))]
    assert [o.client_order_id for o in snap.orders] == ["b"]
    assert len(snap.alerts) == MAX_ALERTS
    assert snap.alerts[0].message == f"breaker rest open #{MAX_ALERTS + 1}"  # newest first


# --- rendering -------------------------------------------------------------------------------


def test_render_shows_every_section() -> None:
    view = OpsView(("BTCUSDT", "ETHUSDT"), "PRODUCTION", 0.0)
    view.apply(trade(trade_id=1, price="60000.00"), 1.0)
    view.apply(trade(trade_id=2, price="60010.50"), 1.0)
    view.apply(ticker(), 1.0)
    view.apply(kline(close="60000.05"), 1.0)
    view.apply(health("backup"), 1.0)
    view.apply(
        BreakerTransition(
            name="ws_api",
            previous=BreakerState.CLOSED,
            state=BreakerState.OPEN,
            at=1.0,
            failures=5,
            reason="5 failures",
            retry_after_s=60.0,
        ),
        1.0,
    )
    view.apply(
        OrderUpdate(order=order("buy-1", OrderStatus.PENDING), source=OrderUpdateSource.REST), 1.0
    )
    view.apply(alert(1), 1.0)
    text = shown(view.snapshot(10.0))
    assert "PRODUCTION" in text
    assert "uptime 10.0s" in text
    btc_line = next(line for line in text.splitlines() if "BTCUSDT" in line)
    assert "60010.50 ▲" in btc_line
    assert "-0.02" in btc_line  # 24 h change %
    assert "60000.05" in btc_line
    assert "STALE 9.0s" in btc_line  # 9 s without an event
    eth_line = next(line for line in text.splitlines() if "ETHUSDT" in line)
    assert "STALE -" in eth_line
    backup = next(line for line in text.splitlines() if line.lstrip().startswith("backup"))
    assert backup.split("│")[1].strip() == "connected"
    assert "41.5" in backup
    assert "1.2ms" in backup
    assert "62%" in backup
    assert "half-open in 51.0s" in text
    assert "buy-1" in text
    assert "breaker rest open #1" in text


def test_render_of_an_empty_view_says_no_alerts() -> None:
    text = shown(OpsView(("BTCUSDT",), "SIMULATOR", 0.0).snapshot(0.0))
    assert "SIMULATOR" in text
    assert "no alerts" in text
    assert "Balances" not in text  # nothing to show, no section


# --- the task --------------------------------------------------------------------------------


async def test_line_form_prints_one_price_log_line_per_symbol_each_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    out = FakeTerminal(tty=False)
    bus = EventBus()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(run_dashboard, bus, ("BTCUSDT", "ETHUSDT"), out)
            await trio.sleep(0.5)
            assert out.getvalue() == ""  # nothing known yet, nothing printed
            bus.publish_nowait(trade())
            bus.publish_nowait(depth())
            await trio.sleep(0.6)  # t = 1.1: one line for the symbol with data
            [line] = out.getvalue().splitlines()
            assert " INFO    genesis.app.dashboard dashboard.price symbol=BTCUSDT " in line
            assert "last=60000.10 tick=flat bid=60000.00 ask=60000.20 spread_bps=0.03" in line
            assert line.endswith("age_s=0.5 stale=false")
            await trio.sleep(STALE_AFTER_S)  # no events since: the line says so, at WARNING
            last = out.getvalue().splitlines()[-1]
            assert " WARNING " in last
            assert last.endswith("stale=true")
            assert "\x1b" not in out.getvalue()
            nursery.cancel_scope.cancel()


async def test_line_form_with_log_json_writes_only_json_objects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    configure_logging("INFO", stream=io.StringIO(), json=True)
    out = FakeTerminal(tty=False)
    bus = EventBus()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(run_dashboard, bus, ("BTCUSDT", "ETHUSDT"), out)
            bus.publish_nowait(trade())
            bus.publish_nowait(ticker(symbol="ETHUSDT", last="3000.5"))
            await trio.sleep(2.5)
            nursery.cancel_scope.cancel()
    records = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert len(records) == 4
    assert {r["event"] for r in records} == {"dashboard.price"}
    eth = next(r for r in records if r["symbol"] == "ETHUSDT")
    assert (eth["last"], eth["level"], eth["change_pct"]) == ("3000.50", "INFO", "-0.02")


async def test_terminal_form_redraws_the_live_view_and_prints_logs_above_it(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # rich's terminal width where it cannot ask the TTY
    configure_logging("INFO", stream=io.StringIO())
    out = FakeTerminal(tty=True)
    bus = EventBus()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            display: LiveDisplay = await nursery.start(
                partial(run_dashboard, bus, ("BTCUSDT",), out, capture_logs=True, mode="TESTNET")
            )
            bus.publish_nowait(trade(price="61234.50"))
            await trio.sleep(1.0)
            logging.getLogger("genesis.test").warning("test.hello who=operator")
            await trio.sleep(1.0)
            nursery.cancel_scope.cancel()
    assert 7 <= display.redraws <= 10  # 4 a second for 2 s, plus the first and the last
    text = out.getvalue()
    assert "61234.50" in text
    assert "TESTNET" in text
    assert "test.hello who=operator" in text
    assert "\x1b[" in text  # cursor movement by rich, not by us


def test_header_shows_feed_trouble_and_the_user_stream() -> None:
    view = OpsView(("BTCUSDT",), "TESTNET", 0.0)
    view.apply(FeedDown(at=1.0, reason="all connections down"), 1.0)
    view.apply(
        FeedGap(
            symbol="BTCUSDT",
            stream="trade",
            first_missing_id=5,
            last_missing_id=9,
            reason="REST backfill failed",
            at=1.0,
        ),
        1.0,
    )
    view.apply(
        SequenceReset(
            symbol="BTCUSDT", stream="trade", previous_high=900, new_first=1, role="backup", at=1
        ),
        1.0,
    )
    view.apply(UserStreamStatus(state=UserStreamState.BACKOFF, at=1.0, reason="refused"), 1.0)
    header = shown(view.snapshot(3725.0)).splitlines()[0]
    assert "TESTNET" in header
    assert "uptime 1h02m" in header
    assert "FEED DOWN (all connections down)" in header
    assert "gaps 1 resets 1" in header
    assert "user stream backoff" in header


async def test_header_shows_a_crashed_order_side_service_until_it_is_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = EventBus()
    records = {name: Supervision(name) for name in ("reconciler", "user_stream")}
    services = {name: CrashOnce(idle_service) for name in records}
    view = OpsView(("BTCUSDT",), "TESTNET", 0.0)
    sources = Sources(order_side=records)
    view.apply(UserStreamStatus(state=UserStreamState.SUBSCRIBED, at=0.0), 0.0)

    def header() -> str:
        view.observe(sources, trio.current_time())
        return shown(view.snapshot(trio.current_time()), width=400).splitlines()[0]

    async with trio.open_nursery() as nursery:
        services["reconciler"].release.set()
        for name, service in services.items():
            await nursery.start(
                partial(supervise_order_side, bus, name, service, supervision=records[name])
            )
        up = header()
        services["user_stream"].crash.set()
        await trio.sleep(0.25)
        down = header()
        await trio.sleep(1)
        restarting = header()  # its restart has not started yet
        services["user_stream"].release.set()
        services["reconciler"].crash.set()
        await trio.sleep(0.5)
        back = header()
        nursery.cancel_scope.cancel()
    assert "user stream subscribed" in up
    assert "restart" not in up
    assert "reconciler" not in up  # nothing to say about a service that never crashed
    assert "user stream crashed restart in 0.8s (RuntimeError: a bug in the order side)" in down
    assert "user stream restarting (restarts 1, last RuntimeError: a bug in the order " in (
        restarting
    )
    assert "user stream subscribed (restarts 1, last RuntimeError: a bug in the order " in back
    assert "reconciler crashed restart in 0.5s (RuntimeError: a bug in the order side)" in back


def test_with_no_symbols_given_every_symbol_that_appears_is_shown() -> None:
    view = OpsView((), "REPLAY", 0.0)
    view.apply(trade(symbol="SOLUSDT"), 1.0)
    view.apply(depth(symbol="BTCUSDT"), 1.0)
    view.apply(trade(symbol="SOLUSDT", trade_id=2), 1.0)
    assert [r.symbol for r in view.snapshot(1.0).symbols] == ["SOLUSDT", "BTCUSDT"]


async def test_limits_clock_and_balances_come_from_the_gateway(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = EventBus()
    out = FakeTerminal(tty=False)
    with trio.fail_after(30):
        async with memory_gateway() as m, trio.open_nursery() as nursery:
            display: LiveDisplay = await nursery.start(
                partial(
                    run_dashboard,
                    bus,
                    ("BTCUSDT",),
                    out,
                    sources=Sources(gateway=m.gateway),
                    account=m.gateway,
                )
            )
            await trio.sleep(1.0)
            snap = display.snapshot()
            nursery.cancel_scope.cancel()
    weight = next(b for b in snap.limiter if b.name == "REQUEST_WEIGHT/1M")
    assert weight.used >= 20  # the account query's weight
    assert weight.limit == 6000
    assert snap.header.clock_offset_ms is not None
    usdt = next(b for b in snap.balances if b.asset == "USDT")
    assert usdt.free > 0
    text = shown(snap)
    assert "REQUEST_WEIGHT/1M" in text
    assert f"{weight.used}/6000" in text


class RefusingAccount:
    async def account(self) -> Account:
        await trio.lowlevel.checkpoint()
        raise ExchangeRejectedError(-2015, "Invalid API-key, IP, or permissions for action.")


async def test_a_refused_account_query_is_a_warning_and_the_dashboard_goes_on(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    bus = EventBus()
    out = FakeTerminal(tty=False)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            display: LiveDisplay = await nursery.start(
                partial(run_dashboard, bus, ("BTCUSDT",), out, account=RefusingAccount())
            )
            bus.publish_nowait(trade())
            await trio.sleep(1.5)
            nursery.cancel_scope.cancel()
    [warning] = [r for r in caplog.records if r.getMessage().startswith("dashboard.account_")]
    assert warning.levelno == logging.WARNING
    assert "-2015" in warning.getMessage()
    assert display.snapshot().balances == ()
    assert "dashboard.price symbol=BTCUSDT" in out.getvalue()
