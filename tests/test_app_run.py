"""The nursery tree and its app-level pieces: recorder, heartbeat (order task:
tests/test_order_task.py; dashboard: tests/test_dashboard.py).

Unit tests run under ``autojump_clock`` and assert exact virtual times. The tree itself runs
against the embedded simulator over loopback for a few real seconds; the shutdown test sends
SIGTERM/SIGINT to a real ``genesis run`` subprocess and measures the wall time to exit.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs
import orjson
import pytest
import trio

from genesis.app.record import encode_event, run_recorder
from genesis.app.run import run_genesis
from genesis.bus import EventBus
from genesis.config import ENV_VARS, Mode, Settings
from genesis.errors import ConfigError
from genesis.exchange.health_monitor import run_heartbeat
from genesis.exchange.ws_manager import (
    ConnectionHealth,
    ConnectionState,
    MarketDataStatistics,
    MergerStatistics,
)
from genesis.models.events import BreakerState, OrderUpdate
from genesis.models.market import Depth, Kline, PriceLevel, Ticker, Trade
from genesis.models.orders import OrderRequest, OrderSide
from genesis.orders.manager import CancelOrder, PlaceOrder
from genesis.sim.server import SimConfig, run_simulator
from genesis.testing import settings_for
from tests.gateway_support import memory_gateway
from tests.test_ws_manager import poll_until

if TYPE_CHECKING:
    from pathlib import Path

D = Decimal


def trade(symbol: str = "BTCUSDT", trade_id: int = 1, price: str = "60000.10") -> Trade:
    return Trade(
        symbol=symbol,
        trade_id=trade_id,
        price=D(price),
        quantity=D("0.5"),
        trade_time_ms=1_767_225_600_000 + trade_id,
        event_time_ms=1_767_225_600_001 + trade_id,
        buyer_is_maker=False,
    )


def depth(symbol: str = "BTCUSDT", bid: str = "60000.00", ask: str = "60000.20") -> Depth:
    return Depth(
        symbol=symbol,
        last_update_id=7,
        bids=(PriceLevel(D(bid), D("1.5")), PriceLevel(D("59999.99"), D("2"))),
        asks=(PriceLevel(D(ask), D("0.25")),),
        received_ms=1_767_225_600_500,
    )


def ticker(symbol: str = "BTCUSDT", last: str = "59990.00") -> Ticker:
    return Ticker(
        symbol=symbol,
        event_time_ms=1_767_225_601_000,
        price_change=D("-10"),
        price_change_percent=D("-0.02"),
        weighted_avg_price=D("59995"),
        last_price=D(last),
        last_quantity=D("0.1"),
        best_bid=D("59989.00"),
        best_bid_quantity=D("1"),
        best_ask=D("59991.00"),
        best_ask_quantity=D("1"),
        open_price=D("60000"),
        high_price=D("60100"),
        low_price=D("59900"),
        volume=D("1000"),
        quote_volume=D("60000000"),
        open_time_ms=1_767_139_201_000,
        close_time_ms=1_767_225_601_000,
        first_trade_id=1,
        last_trade_id=100,
        trade_count=100,
    )


def kline(symbol: str = "BTCUSDT", close: str = "60000.05", interval: str = "1m") -> Kline:
    return Kline(
        symbol=symbol,
        interval=interval,
        event_time_ms=1_767_225_602_000,
        open_time_ms=1_767_225_600_000,
        close_time_ms=1_767_225_659_999,
        first_trade_id=1,
        last_trade_id=9,
        open_price=D("60000"),
        close_price=D(close),
        high_price=D("60001"),
        low_price=D("59999"),
        volume=D("3"),
        quote_volume=D("180000"),
        taker_buy_volume=D("1"),
        taker_buy_quote_volume=D("60000"),
        trade_count=9,
        closed=False,
    )


class FakeTerminal(io.StringIO):
    def __init__(self, *, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


# --- live display: tests/test_dashboard.py ----------------------------------------------------


# --- recorder ----------------------------------------------------------------------------------


def test_encode_event_is_one_json_line_with_decimal_strings() -> None:
    line = encode_event(depth())
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    record = orjson.loads(line)
    assert list(record)[:2] == ["type", "symbol"]
    assert record == {
        "type": "Depth",
        "symbol": "BTCUSDT",
        "last_update_id": 7,
        "bids": [["60000.00", "1.5"], ["59999.99", "2"]],
        "asks": [["60000.20", "0.25"]],
        "received_ms": 1_767_225_600_500,
    }


async def test_recorder_writes_every_event_in_order_and_flushes(tmp_path: Path) -> None:
    # Real clock: file writes run in a worker thread, which an autojump clock would skip past.
    path = tmp_path / "events.jsonl"
    bus = EventBus()
    events = [trade(trade_id=i) for i in range(1, 6)] + [ticker(), depth(), kline()]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            recorder = await nursery.start(partial(run_recorder, bus, path, flush_interval_s=0.02))
            for event in events:
                bus.publish_nowait(event)
            # Flushed periodically, without closing the file: every line arrives, over at least
            # two flushes (waited for, not slept on: the writes run in a worker thread).
            await poll_until(
                lambda: (
                    path.read_bytes().count(b"\n") >= len(events)
                    and recorder.statistics().flushes >= 2
                )
            )
            assert path.read_bytes().count(b"\n") == len(events)
            bus.publish_nowait(trade(trade_id=6))
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()  # the last event is written by the final flush
    records = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [r["type"] for r in records] == ["Trade"] * 5 + ["Ticker", "Depth", "Kline", "Trade"]
    assert [r["trade_id"] for r in records if r["type"] == "Trade"] == [1, 2, 3, 4, 5, 6]
    assert records[0]["price"] == "60000.10"
    stats = recorder.statistics()
    assert stats.recorded == len(events) + 1
    assert stats.dropped == 0
    assert stats.written_bytes == path.stat().st_size


async def test_recorder_drops_and_counts_instead_of_growing_without_bound(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    bus = EventBus()
    line_size = len(encode_event(trade(trade_id=1)))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            recorder = await nursery.start(partial(run_recorder, bus, path, flush_interval_s=60))
            recorder.max_pending_bytes = 3 * line_size
            for i in range(1, 11):
                bus.publish_nowait(trade(trade_id=i))
            await trio.testing.wait_all_tasks_blocked()  # read all ten; no flush is due yet
            assert recorder.statistics().recorded == 3
            assert recorder.statistics().dropped == 7
            nursery.cancel_scope.cancel()
    assert [orjson.loads(x)["trade_id"] for x in path.read_bytes().splitlines()] == [1, 2, 3]


async def test_recorder_fails_when_the_file_cannot_be_opened(tmp_path: Path) -> None:
    bus = EventBus()
    with trio.fail_after(10), pytest.raises(FileNotFoundError):
        await run_recorder(bus, tmp_path / "missing" / "x.jsonl")


# --- heartbeat ---------------------------------------------------------------------------------


@attrs.define
class FakeHealth:
    """A market-data handle stand-in that records when it was asked."""

    asked_at: list[float] = attrs.field(factory=list)
    probed_at: list[float] = attrs.field(factory=list)

    async def probe_connections(self) -> None:
        self.probed_at.append(trio.current_time())
        await trio.sleep(0.5)  # the pongs take a while: the report waits for them

    def statistics(self) -> MarketDataStatistics:
        self.asked_at.append(trio.current_time())
        return MarketDataStatistics(
            connections=(
                ConnectionHealth(
                    role="execution",
                    state=ConnectionState.CONNECTED,
                    uptime_s=29.6,
                    messages_received=900,
                    messages_per_s=30.25,
                    latency_ms=3,
                    reconnects=0,
                    rotations=0,
                    last_error=None,
                    receiving=True,
                    last_frame_age_s=0.25,
                    ping_rtt_ms=1.5,
                    first_share=0.75,
                ),
                ConnectionHealth(
                    role="monitoring",
                    state=ConnectionState.CONNECTED,
                    uptime_s=29.6,
                    messages_received=300,
                    messages_per_s=0.5,
                    latency_ms=3,
                    reconnects=0,
                    rotations=0,
                    last_error=None,
                    receiving=True,
                    last_frame_age_s=0.75,
                    stale=True,
                ),
                ConnectionHealth(
                    role="backup",
                    state=ConnectionState.BACKOFF,
                    uptime_s=0.0,
                    messages_received=10,
                    messages_per_s=0.0,
                    latency_ms=None,
                    reconnects=2,
                    rotations=1,
                    last_error="ConnectError: refused",
                    receiving=False,
                ),
            ),
            merger=MergerStatistics(
                frames=910,
                published=450,
                duplicates_dropped=460,
                gaps=0,
                trades_missing=0,
                decode_errors=1,
                held=0,
                bus_rejected=0,
                backfills=3,
                backfill_failures=1,
                catch_ups=2,
            ),
        )


async def test_heartbeat_logs_each_connection_every_30_s(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="genesis.exchange.health_monitor")
    source = FakeHealth()
    bus = EventBus()
    published = bus.subscribe(ConnectionHealth)
    with trio.fail_after(200):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(run_heartbeat, source, bus, prober=source, publish=bus.publish)
            )
            await trio.sleep(95)
            nursery.cancel_scope.cancel()
    assert source.probed_at == [30.0, 60.0, 90.0]
    assert source.asked_at == [30.5, 60.5, 90.5]  # the fixed grid is kept despite the probes
    health = []
    while True:
        try:
            health.append(published.receive_nowait())
        except trio.WouldBlock:
            break
    assert [h.role for h in health] == ["execution", "monitoring", "backup"] * 3
    assert health[0].ping_rtt_ms == 1.5
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert lines[:5] == [
        (
            logging.INFO,
            "heartbeat.connection role=execution state=connected uptime_s=30 msg_per_s=30.2 "
            "latency_ms=3 last_frame_age_s=0.2 ping_rtt_ms=1.5 first_share=0.75 reconnects=0 "
            "rotations=0 last_error=-",
        ),
        (
            logging.WARNING,
            "heartbeat.connection role=monitoring state=connected stale uptime_s=30 "
            "msg_per_s=0.5 latency_ms=3 last_frame_age_s=0.8 ping_rtt_ms=- first_share=0.00 "
            "reconnects=0 rotations=0 last_error=-",
        ),
        (
            logging.WARNING,
            "heartbeat.connection role=backup state=backoff uptime_s=0 msg_per_s=0.0 "
            "latency_ms=- last_frame_age_s=- ping_rtt_ms=- first_share=0.00 reconnects=2 "
            "rotations=1 last_error=ConnectError: refused",
        ),
        (
            logging.INFO,
            "heartbeat.merger frames=910 published=450 duplicates=460 gaps=0 decode_errors=1 "
            "held=0 backfills=3 catch_ups=2 backfill_failures=1",
        ),
        (logging.INFO, "heartbeat.bus published=0 delivered=0 dropped=0 subscribers=1"),
    ]
    assert len(lines) == 15


async def test_heartbeat_refreshes_the_clock_offset_and_reports_the_gateway(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="genesis.exchange.health_monitor")
    async with memory_gateway() as m:
        opened_at = trio.current_time()
        synced: list[int | None] = []
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(run_heartbeat, FakeHealth(), None, 30.0, gateway=m.gateway))
            m.sim.faults.clock_skew(250)  # the exchange's clock moves: the refresh must see it
            for _ in range(2):
                await trio.sleep(300)
                synced.append(m.gateway.statistics().time_sync.last_sync_ms)
            nursery.cancel_scope.cancel()
        # One refresh at each 300 s mark of the client's clock, and the new offset adopted.
        assert synced[0] is not None
        assert synced[1] == synced[0] + 300_000
        assert m.gateway.statistics().time_sync.offset_ms == pytest.approx(250, abs=1)
        m.sim.faults.error_burst(1000)  # a failed refresh is a warning, never the end
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(run_heartbeat, FakeHealth(), None, 30.0, gateway=m.gateway))
            await trio.sleep(301)
            nursery.cancel_scope.cancel()
        assert trio.current_time() - opened_at == 901
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    gateway_lines = [m for m in messages if m[1].startswith("heartbeat.gateway ")]
    assert gateway_lines[0][0] == logging.INFO
    assert "breaker=closed" in gateway_lines[0][1]
    assert "REQUEST_WEIGHT/1M=" in gateway_lines[0][1]
    assert any(
        level == logging.WARNING and m.startswith("heartbeat.time_sync_failed")
        for level, m in messages
    )
    # The 5xx burst opened the REST breaker: the gateway line says so at WARNING.
    assert gateway_lines[-1][0] == logging.WARNING
    assert "breaker=open" in gateway_lines[-1][1]


# --- the tree ----------------------------------------------------------------------------------

KINDS = {"Trade", "Ticker", "Depth", "Kline"}


Record: TypeAlias = dict[str, Any]


def check_recording(path: Path, symbols: tuple[str, ...]) -> dict[str, dict[str, list[Record]]]:
    """Per symbol and kind, the recorded events; asserts each stream is in order."""
    by_symbol: dict[str, dict[str, list[Record]]] = {s: {} for s in symbols}
    for line in path.read_bytes().splitlines():
        record = orjson.loads(line)
        if record["type"] not in KINDS:
            continue  # breaker transitions, user-stream status, balances: not market data
        by_symbol[record["symbol"]].setdefault(record["type"], []).append(record)
    for symbol, kinds in by_symbol.items():
        assert set(kinds) == KINDS, f"{symbol}: got {sorted(kinds)}"
        trade_ids = [r["trade_id"] for r in kinds["Trade"]]
        assert trade_ids == sorted(set(trade_ids)), f"{symbol} trades out of order or repeated"
        update_ids = [r["last_update_id"] for r in kinds["Depth"]]
        assert update_ids == sorted(set(update_ids)), f"{symbol} depth out of order or repeated"
        ticker_times = [r["event_time_ms"] for r in kinds["Ticker"]]
        assert ticker_times == sorted(set(ticker_times)), f"{symbol} tickers out of order"
        kline_keys = [(r["open_time_ms"], r["event_time_ms"]) for r in kinds["Kline"]]
        assert kline_keys == sorted(set(kline_keys)), f"{symbol} klines out of order"
        for record in kinds["Trade"]:
            assert isinstance(record["price"], str)
            Decimal(record["price"])
    return by_symbol


async def wait_for_every_kind(bus: EventBus, symbols: tuple[str, ...]) -> None:
    missing = {(s, k) for s in symbols for k in KINDS}
    async with bus.subscribe(Trade, Ticker, Depth, Kline) as sub:
        async for event in sub:
            missing.discard((getattr(event, "symbol", ""), type(event).__name__))
            if not missing:
                return


async def test_tree_delivers_every_kind_for_every_symbol_in_order(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    settings = Settings(symbols=("BTCUSDT", "ETHUSDT"))
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(
                partial(
                    run_genesis,
                    settings,
                    record_path=path,
                    handle_signals=False,
                    heartbeat_interval_s=0.5,
                )
            )
            assert handle.simulator is not None
            assert handle.stream_url == handle.simulator.stream_url
            assert handle.stream_url.startswith("ws://127.0.0.1:")
            await wait_for_every_kind(handle.bus, settings.symbols)
            await handle.market_data.wait_all_receiving()
            stats = handle.market_data.statistics()
            nursery.cancel_scope.cancel()
    assert {c.role for c in stats.connections} == {"execution", "monitoring", "backup"}
    assert stats.merger.decode_errors == 0
    assert stats.merger.duplicates_dropped > 0  # three connections, one copy each delivered
    check_recording(path, settings.symbols)


async def test_duration_ends_a_testnet_mode_tree_cleanly() -> None:
    # Testnet mode with BINANCE_WS_URL pointing at a standalone simulator: no embedded one.
    out = FakeTerminal(tty=False)
    with trio.fail_after(30):  # a hang detector: the run itself ends after 1.5 s
        async with trio.open_nursery() as nursery:
            sim = await nursery.start(run_simulator, SimConfig(symbols=("BTCUSDT",)))
            settings = settings_for(sim)
            started = trio.current_time()
            await run_genesis(settings, duration_s=1.5, display=out, handle_signals=False)
            elapsed = trio.current_time() - started
            nursery.cancel_scope.cancel()
    # The duration was honoured (a slow machine only makes the run longer); how soon after it
    # the tree was down is not asserted here: the bound above catches a wedged shutdown.
    assert elapsed >= 1.5
    assert "dashboard.price symbol=BTCUSDT last=" in out.getvalue().splitlines()[0]
    assert sim.sim.streams.statistics().connections_accepted == 3
    # The gateway synced its clock and read exchangeInfo from the same standalone simulator.
    assert sim.sim.rest.statistics().ok >= 2


async def test_an_order_command_becomes_order_updates_on_the_bus() -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(
                partial(run_genesis, Settings(symbols=("BTCUSDT",)), handle_signals=False)
            )
            updates = handle.bus.subscribe(OrderUpdate)
            request = OrderRequest.limit(
                symbol="BTCUSDT",
                side=OrderSide.BUY,
                quantity=D("0.001"),
                price=D("30000"),
                client_order_id="tree-1",
            )
            assert handle.user_stream is not None
            await handle.user_stream.wait_subscribed()
            await handle.orders.send(PlaceOrder(request=request))
            placed = await updates.receive()
            assert (placed.order.client_order_id, placed.order.status_name) == ("tree-1", "NEW")
            await handle.orders.send(CancelOrder(symbol="BTCUSDT", client_order_id="tree-1"))
            # The REST answers and the user stream's execution reports both arrive, in either
            # order; the journal keeps the most advanced state.
            seen = {(placed.source, placed.order.status_name)}
            while ("rest", "CANCELED") not in {(s.value, n) for s, n in seen} or (
                "user_stream",
                "CANCELED",
            ) not in {(s.value, n) for s, n in seen}:
                update = await updates.receive()
                seen.add((update.source, update.order.status_name))
            entry = await handle.journal.get("tree-1")
            assert entry is not None
            assert entry.exchange_status == "CANCELED"
            assert handle.simulator is not None
            sim_orders = handle.simulator.sim.exchange.open_orders(handle.simulator.api_key)
            assert sim_orders == []
            assert handle.gateway.statistics().breaker.state is BreakerState.CLOSED
            assert set(handle.breakers) == {"rest", "streams", "ws_api"}
            nursery.cancel_scope.cancel()


async def test_a_failing_child_stops_the_tree_and_its_error_reaches_the_caller(
    tmp_path: Path,
) -> None:
    settings = Settings(symbols=("BTCUSDT",))
    with trio.fail_after(10), pytest.raises(FileNotFoundError):
        await run_genesis(
            settings, duration_s=30, record_path=tmp_path / "nope" / "x.jsonl", handle_signals=False
        )


async def test_settings_the_tree_cannot_run_raise_config_error() -> None:
    with trio.fail_after(10):
        with pytest.raises(ConfigError, match="the simulator cannot trade them"):
            await run_genesis(Settings(symbols=("BTC",)), handle_signals=False)
        with pytest.raises(ConfigError, match="testnet mode needs a stream URL"):
            await run_genesis(Settings(mode=Mode.TESTNET), handle_signals=False)


async def test_signal_ends_a_genesis_subprocess_within_seconds(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env["GENESIS_SYMBOLS"] = "BTCUSDT"
    stderr: dict[str, bytes] = {}

    async def run_and_stop(sig: signal.Signals) -> None:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "genesis.app.cli", "run", "--no-display", "--duration", "60"],
            cwd=tmp_path,
            env=env,
            stderr=subprocess.PIPE,
        )
        assert proc.stderr is not None
        output = bytearray()
        try:
            while b"genesis.ready" not in output:
                chunk = await proc.stderr.receive_some()
                assert chunk, f"genesis exited early: {bytes(output)!r}"
                output += chunk
            proc.send_signal(sig)
            async for chunk in proc.stderr:
                output += chunk
            code = await proc.wait()
            stderr[sig.name] = bytes(output)
            assert code == 0, bytes(output)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    # A hang detector, well under the children's --duration 60: a signal that did not stop a
    # child fails the test here, however slowly a loaded machine starts and tears them down.
    with trio.fail_after(45):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_and_stop, signal.SIGTERM)
            nursery.start_soon(run_and_stop, signal.SIGINT)
    for name in ("SIGTERM", "SIGINT"):
        assert f"genesis.signal name={name}".encode() in stderr[name]
        assert b"genesis.stop reason=signal" in stderr[name]
        assert b"Traceback" not in stderr[name]
