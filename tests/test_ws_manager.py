"""Market data: stream names, redundant connections against the simulator, the merger's rules.

Rules for these tests (after trio-websocket's own test suite):

- the simulator's stream server (``genesis.sim.streams``) is the peer; payloads are published
  into its ``StreamHub`` by the tests, wire-exact as in Binance's docs but synthetic;
- time-dependent scenarios run over ``trio.testing.memory_stream_pair()`` under the
  ``autojump_clock`` and assert exact virtual times; feeds publish at ``x.5`` seconds so no
  publish races a reconnect or rotation scheduled at a whole second;
- one test uses a real socket on ``127.0.0.1:0``;
- merger edge cases (out-of-order ids across connections) use :class:`ScriptedSocket`, a fake
  behind the ``WebSocket`` protocol seam, because the simulator sends every connection the
  same frames in the same order;
- every test has a deadline on the trio clock.
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import orjson
import pytest
import trio
import trio.testing
import trio_websocket

from genesis.bus import EventBus
from genesis.errors import StreamRejectedError
from genesis.exchange.streams import (
    MAX_STREAMS_PER_CONNECTION,
    StreamKind,
    StreamRoute,
    combined_stream_url,
    is_server_shutdown,
    market_streams,
    route_for,
)
from genesis.exchange.ws_manager import (
    CLOSE_ON_CANCEL_S,
    ConnectionState,
    MarketDataConfig,
    MarketDataHandle,
    WebSocket,
    run_market_data,
)
from genesis.models.events import BreakerState, BreakerTransition
from genesis.models.market import Depth, Kline, Ticker, Trade
from genesis.resilience.backoff import BackoffPolicy
from genesis.resilience.circuit_breaker import CircuitBreaker
from genesis.sim.clock import DEFAULT_VIRTUAL_EPOCH_MS, SimClock
from genesis.sim.hub import StreamHub
from genesis.sim.streams import StreamServer, StreamServerConfig, serve_market_streams
from genesis.sim.testing import MemoryConnector

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

SYMBOLS = ("BTCUSDT", "ETHUSDT")
EXACT_BACKOFF = BackoffPolicy(reset_after_s=10.0)
"""The market-data schedule without its jitter, for tests that assert exact attempt times."""


def exact_config(**kwargs: Any) -> MarketDataConfig:
    return MarketDataConfig(backoff=EXACT_BACKOFF, **kwargs)


SIM_URL = "ws://sim.invalid"  # the memory connector never resolves it
LOGGER = "genesis.exchange.ws_manager"

# --- wire-exact payloads (shapes from web-socket-streams.md / samples.json) -----------------


def trade_payload(symbol: str, trade_id: int, event_ms: int, price: str = "0.00100000") -> bytes:
    return orjson.dumps(
        {
            "e": "trade",
            "E": event_ms,
            "s": symbol,
            "t": trade_id,
            "p": price,
            "q": "100.00000000",
            "T": event_ms - 1,
            "m": True,
            "M": True,
        }
    )


def ticker_payload(symbol: str, event_ms: int, last: str = "0.0025") -> bytes:
    return orjson.dumps(
        {
            "e": "24hrTicker",
            "E": event_ms,
            "s": symbol,
            "p": "0.0015",
            "P": "250.00",
            "w": "0.0018",
            "x": "0.0009",
            "c": last,
            "Q": "10",
            "b": "0.0024",
            "B": "10",
            "a": "0.0026",
            "A": "100",
            "o": "0.0010",
            "h": "0.0025",
            "l": "0.0010",
            "v": "10000",
            "q": "18",
            "O": event_ms - 86_400_000,
            "C": event_ms,
            "F": 0,
            "L": 18150,
            "n": 18151,
        }
    )


def depth_payload(update_id: int) -> bytes:
    return orjson.dumps(
        {
            "lastUpdateId": update_id,
            "bids": [["0.0024", "10"], ["0.0023", "5"]],
            "asks": [["0.0026", "100"]],
        }
    )


def kline_payload(symbol: str, open_ms: int, event_ms: int, *, closed: bool) -> bytes:
    return orjson.dumps(
        {
            "e": "kline",
            "E": event_ms,
            "s": symbol,
            "k": {
                "t": open_ms,
                "T": open_ms + 59_999,
                "s": symbol,
                "i": "1m",
                "f": 100,
                "L": 200,
                "o": "0.0010",
                "c": "0.0020",
                "h": "0.0025",
                "l": "0.0015",
                "v": "1000",
                "n": 100,
                "x": closed,
                "q": "1.0000",
                "V": "500",
                "Q": "0.500",
                "B": "123456",
            },
        }
    )


def publish_round(
    hub: StreamHub, round_no: int, event_ms: int, symbols: Sequence[str] = SYMBOLS
) -> int:
    """All four kinds for every symbol; round ``r`` carries trade id ``r + 1``. Returns count."""
    open_ms = DEFAULT_VIRTUAL_EPOCH_MS + (round_no // 5) * 60_000
    for symbol in symbols:
        name = symbol.lower()
        hub.publish(f"{name}@trade", trade_payload(symbol, round_no + 1, event_ms))
        hub.publish(f"{name}@ticker", ticker_payload(symbol, event_ms))
        hub.publish(f"{name}@depth20@100ms", depth_payload(10_000 + round_no))
        hub.publish(
            f"{name}@kline_1m",
            kline_payload(symbol, open_ms, event_ms, closed=round_no % 5 == 4),
        )
    return 4 * len(symbols)


def expected_keys(
    rounds: range, first_event_ms: int, step_ms: int
) -> dict[tuple[str, str], list[object]]:
    keys: dict[tuple[str, str], list[object]] = defaultdict(list)
    for r in rounds:
        event_ms = first_event_ms + (r - rounds.start) * step_ms
        open_ms = DEFAULT_VIRTUAL_EPOCH_MS + (r // 5) * 60_000
        for symbol in SYMBOLS:
            keys[symbol, "trade"].append(r + 1)
            keys[symbol, "ticker"].append(event_ms)
            keys[symbol, "depth"].append(10_000 + r)
            keys[symbol, "kline"].append((open_ms, event_ms, r % 5 == 4))
    return dict(keys)


def keys_of(events: Sequence[object]) -> dict[tuple[str, str], list[object]]:
    keys: dict[tuple[str, str], list[object]] = defaultdict(list)
    for event in events:
        if isinstance(event, Trade):
            keys[event.symbol, "trade"].append(event.trade_id)
        elif isinstance(event, Ticker):
            keys[event.symbol, "ticker"].append(event.event_time_ms)
        elif isinstance(event, Depth):
            keys[event.symbol, "depth"].append(event.last_update_id)
        elif isinstance(event, Kline):
            keys[event.symbol, "kline"].append(
                (event.open_time_ms, event.event_time_ms, event.closed)
            )
    return dict(keys)


def collecting_bus() -> tuple[EventBus, Callable[[], list[object]]]:
    """A bus that never drops (no conflation), and a function draining what it received."""
    bus = EventBus({})
    sub = bus.subscribe(Trade, Ticker, Depth, Kline, buffer_size=100_000)

    def drain() -> list[object]:
        out: list[object] = []
        while True:
            try:
                out.append(sub.receive_nowait())
            except trio.WouldBlock:
                return out

    return bus, drain


# --- the simulator over memory streams --------------------------------------------------------


@attrs.define(eq=False)
class MemorySim:
    hub: StreamHub
    clock: SimClock
    server: StreamServer
    connector: MemoryConnector

    def connection_ids(self) -> list[int]:
        return [info.id for info in self.server.connections()]


@asynccontextmanager
async def open_memory_sim(
    config: StreamServerConfig | None = None,
) -> AsyncIterator[MemorySim]:
    async with trio.open_nursery() as nursery:
        hub = StreamHub()
        clock = SimClock.start(DEFAULT_VIRTUAL_EPOCH_MS)
        server = StreamServer(hub, clock, config or StreamServerConfig(symbols=frozenset(SYMBOLS)))
        yield MemorySim(hub, clock, server, MemoryConnector(server.connect_memory_stream, nursery))
        nursery.cancel_scope.cancel()


async def feed_rounds(
    sim: MemorySim, rounds: range, *, start: float, interval: float = 1.0
) -> None:
    """Publish ``publish_round`` for each round at ``start + i * interval`` (virtual time)."""
    for i, r in enumerate(rounds):
        await trio.sleep_until(start + i * interval)
        publish_round(sim.hub, r, sim.clock.now_ms())


async def start_market_data(
    nursery: trio.Nursery,
    sim: MemorySim,
    bus: EventBus,
    *,
    config: MarketDataConfig | None = None,
    roles: Sequence[str] = ("execution", "monitoring", "backup"),
    symbols: Sequence[str] = SYMBOLS,
) -> MarketDataHandle:
    handle: MarketDataHandle = await nursery.start(
        functools.partial(
            run_market_data,
            SIM_URL,
            symbols,
            bus,
            config=exact_config() if config is None else config,
            roles=roles,
            connector=sim.connector,
            wall_clock_ms=sim.clock.now_ms,
        )
    )
    return handle


def role_with(handle: MarketDataHandle, **expected: object) -> list[str]:
    return [
        health.role
        for health in handle.statistics().connections
        if all(getattr(health, name) == value for name, value in expected.items())
    ]


def launch_in_background(
    nursery: trio.Nursery,
    url: str,
    bus: EventBus,
    symbols: Sequence[str] = SYMBOLS,
    **options: Any,
) -> list[MarketDataHandle]:
    """Start :func:`run_market_data` (``options`` are its keywords) in ``nursery``; its handle
    joins the returned list once a connection receives (publish first: it is started only then).
    """
    handles: list[MarketDataHandle] = []

    async def launch() -> None:
        handles.append(
            await nursery.start(functools.partial(run_market_data, url, symbols, bus, **options))
        )

    nursery.start_soon(launch)
    return handles


async def poll_until(predicate: Callable[[], bool]) -> None:
    """For real-socket tests only: wait (in real time) until ``predicate()`` holds."""
    while True:
        if predicate():
            return
        await trio.sleep(0.005)


# --- streams.py ------------------------------------------------------------------------------


def test_market_streams_are_four_lowercase_streams_per_symbol() -> None:
    assert market_streams(["BTCUSDT", "ethusdt", "BTCUSDT"]) == (
        "btcusdt@trade",
        "btcusdt@ticker",
        "btcusdt@depth20@100ms",
        "btcusdt@kline_1m",
        "ethusdt@trade",
        "ethusdt@ticker",
        "ethusdt@depth20@100ms",
        "ethusdt@kline_1m",
    )
    assert market_streams(["BNBBTC"], [StreamKind.TRADE]) == ("bnbbtc@trade",)


@pytest.mark.parametrize(
    "symbols", [[], ["BTC-USDT"], ["BTCUSDT/x"], [f"S{i}" for i in range(257)]]
)
def test_market_streams_rejects_bad_symbol_sets(symbols: list[str]) -> None:
    with pytest.raises(ValueError):
        market_streams(symbols)


def test_combined_stream_url() -> None:
    streams = market_streams(["BTCUSDT"])
    assert combined_stream_url("wss://stream.binance.com:9443/", streams) == (
        "wss://stream.binance.com:9443/stream?streams="
        "btcusdt@trade/btcusdt@ticker/btcusdt@depth20@100ms/btcusdt@kline_1m"
    )
    with pytest.raises(ValueError):
        combined_stream_url("ws://x", [])
    with pytest.raises(ValueError):
        combined_stream_url("ws://x", ["a@trade"] * (MAX_STREAMS_PER_CONNECTION + 1))


def test_route_for_knows_only_the_consumed_streams() -> None:
    assert route_for("btcusdt@trade") == StreamRoute("btcusdt@trade", StreamKind.TRADE, "BTCUSDT")
    assert route_for("ethusdt@depth20@100ms") == StreamRoute(
        "ethusdt@depth20@100ms", StreamKind.DEPTH, "ETHUSDT"
    )
    assert route_for("ethusdt@kline_1m") is not None
    assert route_for("btcusdt@ticker") is not None
    for other in ("btcusdt@depth20", "btcusdt@kline_5m", "btcusdt@aggTrade", "!serverShutdown"):
        assert route_for(other) is None


def test_server_shutdown_is_recognised_without_parsing() -> None:
    assert is_server_shutdown('{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1}}')
    assert is_server_shutdown(b'{"e":"serverShutdown","E":1770123456789}')
    assert not is_server_shutdown(
        '{"stream":"btcusdt@trade","data":' + trade_payload("A", 1, 1).decode() + "}"
    )


# --- against the simulator -------------------------------------------------------------------


async def test_every_event_arrives_once_and_in_order_over_loopback() -> None:
    bus, drain = collecting_bus()
    hub = StreamHub()
    clock = SimClock.start()
    rounds = range(40)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            server: StreamServer = await nursery.start(
                functools.partial(
                    serve_market_streams,
                    hub,
                    clock,
                    config=StreamServerConfig(symbols=frozenset(SYMBOLS)),
                )
            )
            handles = launch_in_background(nursery, f"ws://127.0.0.1:{server.port}", bus)
            # Publish only once all three connections are subscribed in the hub.
            await poll_until(lambda: len(server.connections()) == 3)
            base_ms = clock.now_ms()
            total = sum(publish_round(hub, r, base_ms + r) for r in rounds)
            await poll_until(lambda: bool(handles))
            handle = handles[0]
            await handle.wait_published(total)
            # The other connections' copies follow: wait for all of them, never for a while.
            await poll_until(lambda: handle.statistics().merger.frames >= 3 * total)
            stats = handle.statistics()
            nursery.cancel_scope.cancel()
    events = drain()
    assert keys_of(events) == expected_keys(rounds, base_ms, 1)
    assert len(events) == total == 320
    assert stats.merger.published == total
    assert stats.merger.frames == 3 * total
    assert stats.merger.duplicates_dropped == 2 * total
    assert stats.merger.gaps == stats.merger.decode_errors == 0
    assert {h.role for h in stats.connections} == {"execution", "monitoring", "backup"}
    assert all(h.messages_received == total for h in stats.connections)
    assert all(h.state is ConnectionState.CONNECTED and h.receiving for h in stats.connections)
    assert all(h.reconnects == 0 and h.last_error is None for h in stats.connections)


async def test_started_only_once_a_connection_receives(autojump_clock: trio.abc.Clock) -> None:
    bus, drain = collecting_bus()
    with trio.fail_after(60):
        async with open_memory_sim() as sim, trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(feed_rounds, sim, range(3), start=3.5))
            handle = await start_market_data(nursery, sim, bus)
            # Connected at 0.0, but nothing was received before the first frame at 3.5.
            assert trio.current_time() == 3.5
            assert sim.connector.attempts == [0.0, 0.0, 0.0]
            assert handle.roles == ("execution", "monitoring", "backup")
            await handle.wait_all_receiving()
            await handle.wait_receiving("backup")
            assert trio.current_time() == 3.5
            await trio.sleep_until(6.0)
            assert handle.streams == market_streams(SYMBOLS)
            assert handle.url == SIM_URL + "/stream?streams=" + "/".join(handle.streams)
            health = handle.health("monitoring")
            assert health.state is ConnectionState.CONNECTED
            assert health.uptime_s == 6.0
            assert health.messages_received == 24
            assert health.latency_ms == 0  # event time from the same (virtual) wall clock
            nursery.cancel_scope.cancel()
    assert len(drain()) == 24


async def test_dropping_one_connection_loses_nothing(autojump_clock: trio.abc.Clock) -> None:
    bus, drain = collecting_bus()
    rounds = range(30)
    with trio.fail_after(120):
        async with open_memory_sim() as sim, trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(feed_rounds, sim, rounds, start=0.5))
            handle = await start_market_data(nursery, sim, bus)
            await trio.sleep_until(10.0)
            assert sim.server.faults.drop(sim.connection_ids()[0])
            await trio.sleep_until(31.0)
            stats = handle.statistics()
            nursery.cancel_scope.cancel()
    assert keys_of(drain()) == expected_keys(rounds, DEFAULT_VIRTUAL_EPOCH_MS + 500, 1000)
    assert sim.connector.attempts == [0.0, 0.0, 0.0, 11.0]  # 1 s backoff after the drop
    dropped = [h for h in stats.connections if h.reconnects == 1]
    others = [h for h in stats.connections if h.reconnects == 0]
    assert len(dropped) == 1
    assert len(others) == 2
    assert dropped[0].last_error is not None
    assert "ConnectionLostError" in dropped[0].last_error
    assert dropped[0].messages_received == 240 - 8  # missed the round at 10.5
    assert all(h.messages_received == 240 for h in others)  # the other two carried on
    assert all(h.receiving for h in stats.connections)
    assert stats.merger.gaps == 0
    assert stats.merger.published == 240


async def test_dropping_all_reconnects_on_the_backoff_schedule(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    bus, drain = collecting_bus()
    with trio.fail_after(120):
        async with open_memory_sim() as sim, trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(feed_rounds, sim, range(20), start=0.5))
            handle = await start_market_data(nursery, sim, bus)
            await trio.sleep_until(5.25)
            sim.connector.refuse_next = 6  # the server is down for two rounds of attempts
            assert sim.server.faults.drop_all() == 3
            await trio.sleep_until(7.0)
            assert all(h.state is ConnectionState.BACKOFF for h in handle.statistics().connections)
            await trio.sleep_until(20.0)
            stats = handle.statistics()
            nursery.cancel_scope.cancel()
    assert sim.connector.attempts == [0.0] * 3 + [6.25] * 3 + [8.25] * 3 + [12.25] * 3
    for role in ("execution", "monitoring", "backup"):
        lines = [
            r.getMessage()
            for r in caplog.records
            if r.getMessage().startswith(f"ws.reconnect role={role} ")
        ]
        assert [line.split(" reason=")[0] for line in lines] == [
            f"ws.reconnect role={role} attempt=1 delay_s=1.0",
            f"ws.reconnect role={role} attempt=2 delay_s=2.0",
            f"ws.reconnect role={role} attempt=3 delay_s=4.0",
        ]
        assert "ConnectionLostError" in lines[0]
        assert "ConnectError" in lines[1]
    assert all(h.reconnects == 3 and h.receiving for h in stats.connections)
    # Rounds at 5.5 … 11.5 were published while every connection was down: one gap per symbol.
    assert stats.merger.gaps == 2
    assert stats.merger.trades_missing == 14
    trades = keys_of(drain())["BTCUSDT", "trade"]
    assert trades == [*range(1, 6), *range(13, 21)]


async def test_stalled_feed_is_detected_and_reconnected(autojump_clock: trio.abc.Clock) -> None:
    bus, drain = collecting_bus()
    rounds = range(45)
    # Longer than the server's 20 s ping interval, to show pings alone do not count as alive.
    config = exact_config(stale_after_s=25.0)
    with trio.fail_after(120):
        async with open_memory_sim() as sim, trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(feed_rounds, sim, rounds, start=0.5))
            handle = await start_market_data(nursery, sim, bus, config=config)
            await trio.sleep_until(10.0)
            stalled_id = sim.connection_ids()[1]
            sim.server.faults.stalled_ids.add(stalled_id)
            await trio.sleep_until(34.0)
            info = {c.id: c for c in sim.server.connections()}[stalled_id]
            # Data stopped after 9.5; the ping at 20 s was answered, so the socket looks alive.
            assert info.stalled
            assert info.outstanding_pings == 0
            assert info.messages_received == 1  # our automatic pong
            assert role_with(handle, reconnects=0) == ["execution", "monitoring", "backup"]
            await trio.sleep_until(46.0)
            stats = handle.statistics()
            nursery.cancel_scope.cancel()
    # Last frame 9.5 + stale_after_s 25 = 34.5: ReadTimeoutError, reconnect 1 s later.
    assert sim.connector.attempts == [0.0, 0.0, 0.0, 35.5]
    stale = [h for h in stats.connections if h.reconnects == 1]
    assert len(stale) == 1
    assert stale[0].last_error == "ReadTimeoutError: no frame for 25 s"
    assert stalled_id not in sim.connection_ids()
    assert keys_of(drain()) == expected_keys(rounds, DEFAULT_VIRTUAL_EPOCH_MS + 500, 1000)
    assert stats.merger.gaps == 0


async def test_malformed_frames_are_counted_and_skipped(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    bus, drain = collecting_bus()
    rounds = range(6)
    with trio.fail_after(60):
        async with open_memory_sim() as sim, trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(feed_rounds, sim, rounds, start=0.5))
            handle = await start_market_data(nursery, sim, bus)
            await trio.sleep_until(2.0)
            now_ms = sim.clock.now_ms()
            sim.hub.publish("btcusdt@trade", b'{"e":"trade","E":1,"s":"BTCUSDT","t":')
            sim.hub.publish("btcusdt@trade", b'{"e":"trade","E":1,"s":"BTCUSDT","p":"1"}')
            bad_ticker = orjson.loads(ticker_payload("ETHUSDT", now_ms))
            bad_ticker["c"] = 0.0025  # a JSON number where Binance sends a string
            sim.hub.publish("ethusdt@ticker", orjson.dumps(bad_ticker))
            await trio.sleep_until(7.0)
            stats = handle.statistics()
            nursery.cancel_scope.cancel()
    assert stats.merger.decode_errors == 9  # three malformed payloads × three connections
    assert stats.merger.faults == {"invalid_json": 3, "missing_field": 3, "bad_type": 3}
    malformed = [r for r in caplog.records if r.getMessage().startswith("ws.merger.fault ")]
    assert len(malformed) == 3  # once per kind per minute
    assert keys_of(drain()) == expected_keys(rounds, DEFAULT_VIRTUAL_EPOCH_MS + 500, 1000)
    assert stats.merger.gaps == 0
    assert all(h.reconnects == 0 for h in stats.connections)


async def test_rotation_before_the_age_cap_has_no_gap(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    bus, drain = collecting_bus()
    rounds = range(90)
    config = exact_config(rotate_after_s=60.0, rotation_overlap_s=1.0)
    with trio.fail_after(300):
        async with open_memory_sim() as sim, trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(feed_rounds, sim, rounds, start=0.5))
            # A single connection, so the successor alone must cover the switch-over.
            handle = await start_market_data(nursery, sim, bus, config=config, roles=("execution",))
            old_id = sim.connection_ids()[0]
            await handle.wait_rotations("execution", 1)
            assert trio.current_time() == 60.0
            await trio.sleep_until(61.0)
            assert len(sim.connection_ids()) == 2  # overlap: the new one delivers since 60.5
            await trio.sleep_until(62.0)
            assert sim.connection_ids() != [old_id]
            assert len(sim.connection_ids()) == 1  # the old one closed at 61.5
            await trio.sleep_until(91.0)
            health = handle.health("execution")
            stats = handle.statistics()
            nursery.cancel_scope.cancel()
    assert sim.connector.attempts == [0.0, 60.0]
    assert health.rotations == 1
    assert health.reconnects == 0
    assert health.last_error is None
    assert health.uptime_s == 31.0
    messages = [r.getMessage() for r in caplog.records]
    assert "ws.rotate role=execution reason=age" in messages
    assert any(
        m.startswith("ws.disconnect role=execution ") and m.endswith("reason=rotated")
        for m in messages
    )
    assert keys_of(drain()) == expected_keys(rounds, DEFAULT_VIRTUAL_EPOCH_MS + 500, 1000)
    assert stats.merger.gaps == 0


@pytest.mark.parametrize("trigger", ["fault", "age_cap"])
async def test_server_shutdown_reconnects_promptly(
    autojump_clock: trio.abc.Clock, trigger: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    bus, drain = collecting_bus()
    rounds = range(40)
    server_config = StreamServerConfig(symbols=frozenset(SYMBOLS), max_age_s=20.25)
    if trigger == "fault":
        server_config = StreamServerConfig(symbols=frozenset(SYMBOLS))
    with trio.fail_after(300):
        async with open_memory_sim(server_config) as sim, trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(feed_rounds, sim, rounds, start=0.5))
            handle = await start_market_data(nursery, sim, bus, roles=("execution",))
            if trigger == "fault":
                await trio.sleep_until(20.25)
                assert sim.server.faults.shutdown(sim.connection_ids()[0])
            await trio.sleep_until(35.0)
            health = handle.health("execution")
            stats = handle.statistics()
            nursery.cancel_scope.cancel()
    # No backoff: the successor is opened the moment the notice arrives.
    assert sim.connector.attempts[:2] == [0.0, 20.25]
    assert health.rotations >= 1
    assert health.reconnects == 0
    assert any(
        "ws.rotate role=execution reason=serverShutdown" in r.getMessage() for r in caplog.records
    )
    assert keys_of(drain()) == expected_keys(rounds[:35], DEFAULT_VIRTUAL_EPOCH_MS + 500, 1000)
    assert stats.merger.gaps == 0


async def test_a_handshake_rejected_on_every_connection_ends_the_feed_with_the_reason(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    bus, _drain = collecting_bus()
    with trio.fail_after(60):
        async with open_memory_sim() as sim:
            # XRPUSDT is not listed by this simulator: HTTP 400 on the handshake.
            with pytest.raises(StreamRejectedError) as info:
                await run_market_data(
                    SIM_URL,
                    ["XRPUSDT"],
                    bus,
                    config=exact_config(),
                    connector=sim.connector,
                )
            ended_at = trio.current_time()
    # Three roles, each rejected at 0, 1 and 3 s: the third time on every role ends it.
    assert ended_at == 3.0
    assert sim.connector.attempts == [0.0] * 3 + [1.0] * 3 + [3.0] * 3
    assert sim.server.statistics().rejected_bad_request == 9
    assert info.value.status_code == 400
    assert "Invalid request: invalid stream" in str(info.value)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    for role in ("execution", "monitoring", "backup"):
        lines = [m for m in errors if m.startswith(f"ws.rejected role={role} ")]
        assert [m.split(" status=")[1] for m in lines] == [
            f"400 consecutive={n} reason=Invalid request: invalid stream" for n in (1, 2, 3)
        ]
    assert [m for m in errors if m.startswith("ws.rejected_everywhere")] == [
        "ws.rejected_everywhere attempts=3 roles=3 "
        "reason=StreamRejectedError: stream handshake rejected with HTTP 400: "
        "Invalid request: invalid stream"
    ]


async def test_a_rejection_on_some_roles_only_keeps_the_feed_running(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    bus, drain = collecting_bus()

    @attrs.define(eq=False)
    class OneRoleRejected:
        inner: MemoryConnector

        async def __call__(
            self, nursery: trio.Nursery, url: str, *, message_queue_size: int, role: str = ""
        ) -> WebSocket:
            if role == "backup":  # a broken path for one role: its handshake gets HTTP 403
                url = url.replace("/stream?", "/nope?")
            return await self.inner(nursery, url, message_queue_size=message_queue_size, role=role)

    with trio.fail_after(120):
        async with open_memory_sim() as sim, trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(feed_rounds, sim, range(20), start=0.5))
            handle: MarketDataHandle = await nursery.start(
                functools.partial(
                    run_market_data,
                    SIM_URL,
                    SYMBOLS,
                    bus,
                    config=exact_config(),
                    connector=OneRoleRejected(sim.connector),
                    wall_clock_ms=sim.clock.now_ms,
                )
            )
            await trio.sleep_until(20.0)
            stats = handle.statistics()
            nursery.cancel_scope.cancel()
    backup = next(h for h in stats.connections if h.role == "backup")
    assert backup.state is not ConnectionState.CONNECTED
    assert backup.reconnects >= 4
    assert "StreamRejectedError: stream handshake rejected with HTTP 404" in (
        backup.last_error or ""
    )
    assert keys_of(drain()) == expected_keys(range(20), DEFAULT_VIRTUAL_EPOCH_MS + 500, 1000)


async def test_connect_timeout_is_a_cancel_scope(autojump_clock: trio.abc.Clock) -> None:
    bus, _drain = collecting_bus()
    with trio.fail_after(60):
        async with open_memory_sim() as sim, trio.open_nursery() as nursery:
            sim.connector.hang_next = 1
            nursery.start_soon(functools.partial(feed_rounds, sim, range(10), start=0.5))
            handle = await start_market_data(nursery, sim, bus, roles=("execution",))
            # Hung until the 5 s connect timeout, 1 s backoff, connected at 6.0, data at 6.5.
            assert trio.current_time() == 6.5
            assert sim.connector.attempts == [0.0, 6.0]
            health = handle.health("execution")
            assert health.last_error == "ConnectError: connect timed out after 5 s"
            assert health.reconnects == 1
            nursery.cancel_scope.cancel()


async def test_breaker_opens_on_failed_connects_refuses_fast_and_one_probe_closes_it(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    bus, _drain = collecting_bus()
    transitions: list[tuple[float, BreakerTransition]] = []

    async def sink(event: BreakerTransition, /) -> None:
        transitions.append((trio.current_time(), event))
        await trio.lowlevel.checkpoint()

    breaker = CircuitBreaker("streams", on_transition=sink)  # 5 failures / 30 s, 60 s cooldown
    with trio.fail_after(300):
        async with open_memory_sim() as sim, trio.open_nursery() as nursery:
            sim.connector.refuse_next = 4  # refused at 0, 1, 3, 7 (backoff 1, 2, 4) ...
            sim.connector.hang_next = 1  # ... and at 15 hung until the 5 s connect timeout
            nursery.start_soon(functools.partial(feed_rounds, sim, range(100), start=0.5))
            handle: MarketDataHandle = await nursery.start(
                functools.partial(
                    run_market_data,
                    SIM_URL,
                    SYMBOLS,
                    bus,
                    config=exact_config(),
                    roles=("execution",),
                    connector=sim.connector,
                    wall_clock_ms=sim.clock.now_ms,
                    breaker=breaker,
                )
            )
            # The timeout at 20 is the 5th failure within 30 s: open until 80. The attempts at
            # 36 (backoff 16 s) and 66 (30 s) are refused without dialling; the one at 96 is
            # the probe, it connects, and the first frame arrives at 96.5.
            assert trio.current_time() == 96.5
            assert sim.connector.attempts == [0.0, 1.0, 3.0, 7.0, 15.0, 96.0]
            health = handle.health("execution")
            assert health.state is ConnectionState.CONNECTED
            assert health.reconnects == 7
            assert health.last_error == (
                "CircuitOpenError: circuit 'streams' is open, retry after 14 s"
            )
            stats = breaker.statistics()
            assert (stats.state, stats.rejected, stats.failures, stats.successes) == (
                BreakerState.CLOSED,
                2,
                5,
                1,
            )
            nursery.cancel_scope.cancel()
    assert [(t, e.previous, e.state, e.at) for t, e in transitions] == [
        (20.0, BreakerState.CLOSED, BreakerState.OPEN, 20.0),
        (96.0, BreakerState.OPEN, BreakerState.HALF_OPEN, 80.0),  # stamped when it was due
        (96.0, BreakerState.HALF_OPEN, BreakerState.CLOSED, 96.0),
    ]
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    refused = [m for m in messages if m.startswith("ws.connect_failed") and "CircuitOpen" in m]
    assert refused == [
        "ws.connect_failed role=execution session=5 "
        "reason=CircuitOpenError: circuit 'streams' is open, retry after 44 s",
        "ws.connect_failed role=execution session=6 "
        "reason=CircuitOpenError: circuit 'streams' is open, retry after 14 s",
    ]
    assert [m.split(" reason=")[0] for m in messages if m.startswith("ws.reconnect ")] == [
        f"ws.reconnect role=execution attempt={n} delay_s={d:.1f}"
        for n, d in enumerate([1, 2, 4, 8, 16, 30, 30], start=1)
    ]


async def test_cancellation_closes_every_connection_at_once(autojump_clock: trio.abc.Clock) -> None:
    bus, _drain = collecting_bus()
    with trio.fail_after(60):
        async with open_memory_sim() as sim:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(functools.partial(feed_rounds, sim, range(10), start=0.5))
                await start_market_data(nursery, sim, bus)
                await trio.sleep_until(5.25)
                assert len(sim.connection_ids()) == 3
                nursery.cancel_scope.cancel()
            # Each connection sends its close frame and waits no longer than CLOSE_ON_CANCEL_S
            # (the answer could not be read: the reader task is cancelled too).
            assert trio.current_time() == 5.25 + CLOSE_ON_CANCEL_S
            await trio.testing.wait_all_tasks_blocked()
            assert sim.connection_ids() == []
            assert trio.current_time() == 5.25 + CLOSE_ON_CANCEL_S


def test_invalid_arguments_are_refused_before_connecting() -> None:
    async def main() -> None:
        bus = EventBus()
        with pytest.raises(ValueError, match="roles"):
            await run_market_data(SIM_URL, SYMBOLS, bus, roles=("a", "a"))
        with pytest.raises(ValueError, match="symbol"):
            await run_market_data(SIM_URL, [], bus)

    trio.run(main)


# --- merger edge cases with scripted connections ------------------------------------------


@attrs.define(eq=False)
class ScriptedSocket:
    """A fake ``WebSocket``: frames are pushed by the test; closing ends ``get_message``."""

    send_chan: trio.MemorySendChannel[str]
    recv_chan: trio.MemoryReceiveChannel[str]
    closed_with: int | None = None
    mute_pongs: bool = False

    @classmethod
    def create(cls) -> ScriptedSocket:
        send_chan, recv_chan = trio.open_memory_channel[str](100)
        return cls(send_chan, recv_chan)

    def push(self, stream: str, payload: bytes) -> None:
        self.send_chan.send_nowait('{"stream":"' + stream + '","data":' + payload.decode() + "}")

    def push_raw(self, frame: str) -> None:
        self.send_chan.send_nowait(frame)

    async def get_message(self) -> str | bytes:
        try:
            return await self.recv_chan.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise trio_websocket.ConnectionClosed(
                trio_websocket.CloseReason(1006, "scripted end")
            ) from None

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed_with = code
        self.recv_chan.close()
        await trio.lowlevel.checkpoint()

    async def ping(self, payload: bytes | None = None) -> None:
        await trio.lowlevel.checkpoint()
        if self.mute_pongs:
            await trio.sleep_forever()


@attrs.define(eq=False)
class ScriptedConnector:
    sockets: list[ScriptedSocket] = attrs.field(factory=list)

    async def __call__(
        self, nursery: trio.Nursery, url: str, *, message_queue_size: int, role: str = ""
    ) -> WebSocket:
        await trio.lowlevel.checkpoint()
        sock = ScriptedSocket.create()
        self.sockets.append(sock)
        return sock


SCRIPTED_CONFIG = exact_config(stale_after_s=1000.0, gap_hold_s=0.2, max_held_trades=3)


@asynccontextmanager
async def open_scripted(
    bus: EventBus, roles: Sequence[str] = ("a", "b"), wall_ms: int = 0
) -> AsyncIterator[tuple[ScriptedConnector, list[MarketDataHandle]]]:
    connector = ScriptedConnector()
    async with trio.open_nursery() as nursery:
        handles = launch_in_background(
            nursery,
            SIM_URL,
            bus,
            ["BTCUSDT"],
            config=SCRIPTED_CONFIG,
            roles=roles,
            connector=connector,
            wall_clock_ms=lambda: wall_ms,
        )
        await trio.sleep(0.5)  # both connections are open (at 0.0) but idle
        assert len(connector.sockets) == len(roles)
        yield connector, handles
        nursery.cancel_scope.cancel()


async def test_trade_gap_waits_for_the_other_connection(autojump_clock: trio.abc.Clock) -> None:
    bus = EventBus({})
    sub = bus.subscribe(Trade)
    received: list[tuple[float, int]] = []
    with trio.fail_after(60):
        async with open_scripted(bus) as (connector, handles), trio.open_nursery() as nursery:

            async def consume() -> None:
                while True:
                    trade = await sub.receive()
                    received.append((trio.current_time(), trade.trade_id))

            nursery.start_soon(consume)
            s0, s1 = connector.sockets
            await trio.sleep_until(1.0)
            s0.push("btcusdt@trade", trade_payload("BTCUSDT", 1, 1))
            s0.push("btcusdt@trade", trade_payload("BTCUSDT", 3, 3))  # 2 is missing on s0
            await trio.sleep_until(1.1)
            s1.push("btcusdt@trade", trade_payload("BTCUSDT", 1, 1))
            s1.push("btcusdt@trade", trade_payload("BTCUSDT", 2, 2))  # fills the hole
            s1.push("btcusdt@trade", trade_payload("BTCUSDT", 3, 3))
            await trio.sleep_until(2.0)
            s0.push("btcusdt@trade", trade_payload("BTCUSDT", 5, 5))  # nobody has 4
            await trio.sleep_until(3.0)
            s1.push("btcusdt@trade", trade_payload("BTCUSDT", 4, 4))  # too late: dropped
            s1.push("btcusdt@trade", trade_payload("BTCUSDT", 6, 6))
            await trio.sleep_until(4.0)
            for trade_id in (8, 9, 10, 11):  # more than max_held_trades=3 held: released now
                s0.push("btcusdt@trade", trade_payload("BTCUSDT", trade_id, trade_id))
            await trio.sleep_until(5.0)
            stats = handles[0].statistics().merger
            nursery.cancel_scope.cancel()
    assert received == [
        (1.0, 1),
        (1.1, 2),
        (1.1, 3),
        (2.2, 5),  # held for gap_hold_s, then released with the hole counted
        (3.0, 6),
        (4.0, 8),
        (4.0, 9),
        (4.0, 10),
        (4.0, 11),
    ]
    assert stats.gaps == 2
    assert stats.trades_missing == 2
    assert stats.duplicates_dropped == 3
    assert stats.held == 0


async def test_depth_ticker_and_kline_keep_the_newest(autojump_clock: trio.abc.Clock) -> None:
    bus, drain = collecting_bus()
    k0 = DEFAULT_VIRTUAL_EPOCH_MS
    k1 = k0 + 60_000
    with trio.fail_after(60):
        async with open_scripted(bus) as (connector, handles):
            s0, s1 = connector.sockets
            script: list[tuple[ScriptedSocket, str, bytes]] = [
                (s0, "btcusdt@depth20@100ms", depth_payload(10)),
                (s1, "btcusdt@depth20@100ms", depth_payload(10)),  # copy
                (s1, "btcusdt@depth20@100ms", depth_payload(9)),  # older: dropped
                (s1, "btcusdt@depth20@100ms", depth_payload(12)),
                (s0, "btcusdt@depth20@100ms", depth_payload(11)),  # older than 12
                (s0, "btcusdt@ticker", ticker_payload("BTCUSDT", 1000)),
                (s1, "btcusdt@ticker", ticker_payload("BTCUSDT", 1000)),
                (s1, "btcusdt@ticker", ticker_payload("BTCUSDT", 2000)),
                (s0, "btcusdt@ticker", ticker_payload("BTCUSDT", 1500)),
                (s0, "btcusdt@kline_1m", kline_payload("BTCUSDT", k0, k0 + 1000, closed=False)),
                (s1, "btcusdt@kline_1m", kline_payload("BTCUSDT", k0, k0 + 1000, closed=False)),
                # s0 missed k0's final frame and already shows the next kline ...
                (s0, "btcusdt@kline_1m", kline_payload("BTCUSDT", k1, k1 + 1000, closed=False)),
                # ... s1 delivers k0's closed frame late: never dropped.
                (s1, "btcusdt@kline_1m", kline_payload("BTCUSDT", k0, k0 + 59_999, closed=True)),
                (s0, "btcusdt@kline_1m", kline_payload("BTCUSDT", k0, k0 + 59_999, closed=True)),
                (s1, "btcusdt@kline_1m", kline_payload("BTCUSDT", k1, k1 + 1000, closed=False)),
                (s1, "btcusdt@kline_1m", kline_payload("BTCUSDT", k1, k1 + 2000, closed=False)),
                (s1, "btcusdt@kline_1m", kline_payload("BTCUSDT", k1, k1 + 59_999, closed=True)),
                (s0, "btcusdt@kline_1m", kline_payload("BTCUSDT", k1, k1 + 2000, closed=False)),
            ]
            for sock, stream, payload in script:
                sock.push(stream, payload)
                await trio.sleep(0.01)
            stats = handles[0].statistics().merger
    keys = keys_of(drain())
    assert keys["BTCUSDT", "depth"] == [10, 12]
    assert keys["BTCUSDT", "ticker"] == [1000, 2000]
    assert keys["BTCUSDT", "kline"] == [
        (k0, k0 + 1000, False),
        (k1, k1 + 1000, False),
        (k0, k0 + 59_999, True),
        (k1, k1 + 2000, False),
        (k1, k1 + 59_999, True),
    ]
    assert stats.published == 9
    assert stats.duplicates_dropped == len(script) - 9


async def test_bad_copy_does_not_shadow_a_good_one(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    bus, drain = collecting_bus()
    with trio.fail_after(60):
        async with open_scripted(bus) as (connector, handles):
            s0, s1 = connector.sockets
            s0.push("btcusdt@trade", trade_payload("BTCUSDT", 1, 1))
            await trio.sleep(0.01)
            s0.push("btcusdt@trade", trade_payload("BTCUSDT", 2, 2, price="1e"))  # corrupt copy
            await trio.sleep(0.01)
            s1.push("btcusdt@trade", trade_payload("BTCUSDT", 2, 2))  # the good copy wins
            s1.push_raw('{"stream":"btcusdt@aggTrade","data":{}}')  # not a stream we asked for
            s1.push_raw('["not", "a", "frame"]')
            await trio.sleep(0.01)
            stats = handles[0].statistics().merger
    assert keys_of(drain())["BTCUSDT", "trade"] == [1, 2]
    assert stats.decode_errors == 3
    assert stats.gaps == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("ws.merger.fault kind=unknown_stream" in m for m in messages)


async def test_health_reports_latency_rate_and_state(autojump_clock: trio.abc.Clock) -> None:
    bus, _drain = collecting_bus()
    with trio.fail_after(60):
        async with open_scripted(bus, roles=("execution",), wall_ms=10_000) as (connector, handles):
            (sock,) = connector.sockets
            for i in range(20):  # 4 frames per second from 1.0 to 5.75
                await trio.sleep_until(1.0 + i * 0.25)
                sock.push("btcusdt@trade", trade_payload("BTCUSDT", i + 1, 9_990))
            await trio.sleep_until(6.0)
            handle = handles[0]
            health = handle.health("execution")
            assert health.state is ConnectionState.CONNECTED
            assert health.latency_ms == 10  # wall clock 10_000 − event time 9_990
            assert health.messages_received == 20
            assert health.messages_per_s == 4.0  # seconds 1 … 5, all complete by 6.0
            assert health.uptime_s == 6.0
            assert health.rotations == health.reconnects == 0
            with pytest.raises(KeyError):
                handle.health("nope")
            await sock.send_chan.aclose()  # the peer goes away
            await handle.wait_state("execution", ConnectionState.BACKOFF)
            assert trio.current_time() == 6.0
            await handle.wait_reconnects("execution", 1)
            assert handle.health("execution").uptime_s == 0.0
            assert "1006" in (handle.health("execution").last_error or "")
            await handle.wait_state("execution", ConnectionState.CONNECTED)
            assert trio.current_time() == 7.0
            # The window [2, 7) now includes the silent second 6: 16 frames / 5 s.
            assert handle.health("execution").messages_per_s == 16 / 5


async def test_a_bus_refusing_market_data_does_not_stall_the_merger(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger=LOGGER)
    bus = EventBus({})  # misconfigured: trades are never-drop here
    sub = bus.subscribe(Trade, buffer_size=1)
    with trio.fail_after(60):
        async with open_scripted(bus, roles=("execution",)) as (connector, handles):
            (sock,) = connector.sockets
            for trade_id in (1, 2, 3):
                sock.push("btcusdt@trade", trade_payload("BTCUSDT", trade_id, trade_id))
            await trio.sleep(0.01)
            assert sub.receive_nowait().trade_id == 1
            sock.push("btcusdt@trade", trade_payload("BTCUSDT", 4, 4))
            await trio.sleep(0.01)
            stats = handles[0].statistics().merger
    assert sub.receive_nowait().trade_id == 4
    assert stats.bus_rejected == 2
    assert stats.published == 2
    assert "ws.merger.bus_rejected type=Trade" in caplog.text
