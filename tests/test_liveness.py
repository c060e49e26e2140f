"""Liveness of the market-data feed: FeedDown/FeedUp, per-kind staleness, ping probes, jitter,
the shared connection-attempt budget.

Same rules as tests/test_ws_manager.py (whose simulator harness this reuses): the simulator's
stream server over memory streams under the autojump clock, exact virtual times, feeds
published at ``x.5`` seconds, a trio-clock deadline on every test.
"""

from __future__ import annotations

import functools
import logging
import random
from typing import TYPE_CHECKING

import trio

from genesis.bus import EventBus
from genesis.exchange.ws_manager import (
    MARKET_DATA_BACKOFF,
    ConnectionState,
    MarketDataConfig,
    MarketDataHandle,
    run_market_data,
)
from genesis.models.events import FeedDown, FeedUp
from genesis.resilience.connect_limiter import AttemptWindow, ConnectAttemptLimiter
from genesis.sim.clock import DEFAULT_VIRTUAL_EPOCH_MS

if TYPE_CHECKING:
    import pytest

from tests.test_ws_manager import (
    LOGGER,
    SIM_URL,
    SYMBOLS,
    ScriptedConnector,
    collecting_bus,
    depth_payload,
    exact_config,
    expected_keys,
    feed_rounds,
    keys_of,
    launch_in_background,
    open_memory_sim,
    start_market_data,
    trade_payload,
)


def is_live(handle: MarketDataHandle) -> bool:
    return handle.live


async def collect_feed_events(
    bus: EventBus, out: list[tuple[float, object]], *, task_status: trio.TaskStatus[None]
) -> None:
    async with bus.subscribe(FeedDown, FeedUp) as sub:
        task_status.started()
        async for event in sub:
            out.append((trio.current_time(), event))  # noqa: PERF401  # stamped on arrival


async def test_feed_down_the_moment_no_connection_is_live_and_up_when_one_is(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    bus, drain = collecting_bus()
    seen: list[tuple[float, object]] = []
    with trio.fail_after(120):
        async with open_memory_sim() as sim, trio.open_nursery() as nursery:
            await nursery.start(collect_feed_events, bus, seen)
            nursery.start_soon(functools.partial(feed_rounds, sim, range(20), start=0.5))
            await start_market_data(nursery, sim, bus)
            await trio.sleep_until(5.25)
            sim.connector.refuse_next = 3  # the exchange is away for one round of attempts
            assert sim.server.faults.drop_all() == 3
            await trio.sleep_until(20.0)
            nursery.cancel_scope.cancel()
    assert [(t, type(e).__name__) for t, e in seen] == [
        (0.5, "FeedUp"),  # the first frame
        (5.25, "FeedDown"),  # at once, not at the next heartbeat
        (8.5, "FeedUp"),  # refused at 6.25, connected at 8.25, first frame at 8.5
    ]
    down = seen[1][1]
    assert isinstance(down, FeedDown)
    assert "ConnectionLostError" in down.reason
    assert down.last_event_age_s == 0.75  # the last frames arrived at 4.5
    up = seen[2][1]
    assert isinstance(up, FeedUp)
    assert up.down_for_s == 3.25
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith("ws.feed_down reason=ConnectionLostError") for m in warnings)
    # Connect failures and disconnects are WARNINGs: `--log-level warning` shows the outage.
    assert sum(m.startswith("ws.disconnect ") for m in warnings) == 3
    assert sum(m.startswith("ws.connect_failed ") for m in warnings) == 3
    trades = keys_of(drain())["BTCUSDT", "trade"]
    assert trades[:5] == [1, 2, 3, 4, 5]


async def test_a_silent_depth_stream_makes_the_role_stale_while_quiet_trades_do_not(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    bus = EventBus({})
    seen: list[tuple[float, object]] = []
    connector = ScriptedConnector()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(collect_feed_events, bus, seen)
            handles = launch_in_background(
                nursery,
                SIM_URL,
                bus,
                ["BTCUSDT"],
                config=exact_config(stale_after_s=1000.0),
                roles=("execution",),
                connector=connector,
            )
            await trio.sleep(0.5)
            (sock,) = connector.sockets
            # depth20 every 0.5 s until 3.0; trades are rare (one at 1.0 and one at 6.0).
            for i in range(6):
                await trio.sleep_until(0.5 + i * 0.5)
                sock.push("btcusdt@depth20@100ms", depth_payload(100 + i))
                if i == 1:
                    sock.push("btcusdt@trade", trade_payload("BTCUSDT", 1, 1))
            await trio.sleep_until(4.75)
            handle = handles[0]
            assert is_live(handle)  # 1.75 s without depth: still live
            await trio.sleep_until(5.1)  # (at 5.0 exactly the relay may not have run yet)
            health = handle.health("execution")
            assert health.stale
            assert health.state is ConnectionState.CONNECTED
            assert not is_live(handle)
            await trio.sleep_until(6.0)
            sock.push("btcusdt@trade", trade_payload("BTCUSDT", 2, 2))  # a trade is not depth
            await trio.sleep_until(6.5)
            assert handle.health("execution").stale
            sock.push("btcusdt@depth20@100ms", depth_payload(200))
            await trio.sleep_until(7.0)
            assert not handle.health("execution").stale
            assert is_live(handle)
            nursery.cancel_scope.cancel()
    # The last depth frame came at 3.0: stale at 5.0 (2 s), live again at 6.5.
    assert [(t, type(e).__name__) for t, e in seen] == [
        (0.5, "FeedUp"),
        (5.0, "FeedDown"),
        (6.5, "FeedUp"),
    ]
    down = seen[1][1]
    assert isinstance(down, FeedDown)
    assert down.reason == "no depth20 frame for 2 s"
    stale_lines = [r for r in caplog.records if r.getMessage().startswith("ws.stale ")]
    assert [r.levelno for r in stale_lines] == [logging.WARNING]
    assert "no depth20 frame for 2.0 s" in stale_lines[0].getMessage()


async def test_ping_probe_records_the_round_trip_and_ends_a_connection_without_pong(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    bus = EventBus({})
    connector = ScriptedConnector()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            handles = launch_in_background(
                nursery,
                SIM_URL,
                bus,
                ["BTCUSDT"],
                config=exact_config(stale_after_s=1000.0, depth_stale_after_s=1000.0),
                roles=("a", "b"),
                connector=connector,
            )
            await trio.sleep(0.5)
            first, second = connector.sockets
            first.push("btcusdt@trade", trade_payload("BTCUSDT", 1, 1))
            second.push("btcusdt@trade", trade_payload("BTCUSDT", 1, 1))
            await trio.sleep_until(1.0)
            handle = handles[0]
            second.mute_pongs = True  # the peer keeps the TCP session but answers no ping
            await handle.probe_connections()
            assert trio.current_time() == 11.0  # the 10 s ping timeout bounds the probe
            await trio.sleep(0.01)
            answered, muted = sorted(
                handle.statistics().connections, key=lambda h: h.ping_rtt_ms is None
            )
            nursery.cancel_scope.cancel()
    assert answered.ping_rtt_ms == 0.0  # in memory no time passes, but it was measured
    assert answered.reconnects == 0
    assert muted.ping_rtt_ms is None
    assert muted.reconnects == 1
    assert muted.last_error == "ReadTimeoutError: no pong within 10 s"
    assert any(
        r.levelno == logging.WARNING
        and r.getMessage().startswith(f"ws.ping_timeout role={muted.role} ")
        for r in caplog.records
    )


async def test_roles_dropped_together_retry_at_different_instants(
    autojump_clock: trio.abc.Clock,
) -> None:
    bus, _drain = collecting_bus()
    config = MarketDataConfig()  # the default: full jitter
    assert config.backoff == MARKET_DATA_BACKOFF
    with trio.fail_after(120):
        async with open_memory_sim() as sim, trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(feed_rounds, sim, range(12), start=0.5))
            await nursery.start(
                functools.partial(
                    run_market_data,
                    SIM_URL,
                    SYMBOLS,
                    bus,
                    config=config,
                    connector=sim.connector,
                    wall_clock_ms=sim.clock.now_ms,
                    rng=random.Random(2026),
                )
            )
            await trio.sleep_until(5.25)
            assert sim.server.faults.drop_all() == 3
            await trio.sleep_until(12.0)
            nursery.cancel_scope.cancel()
    retries = sim.connector.attempts[3:]
    assert len(retries) == 3
    assert len(set(retries)) == 3  # never in the same instant
    # Healthy for 4.75 s (< 10 s): the first delay, 1 s with full jitter, so within (0, 1].
    assert all(5.25 < t <= 6.25 for t in retries)


async def test_a_connection_healthy_for_10_s_resets_the_backoff(
    autojump_clock: trio.abc.Clock,
) -> None:
    bus, drain = collecting_bus()
    with trio.fail_after(120):
        async with open_memory_sim() as sim, trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(feed_rounds, sim, range(40), start=0.5))
            sim.connector.refuse_next = 3  # first attempts refused: attempt counter at 1
            handle = await start_market_data(nursery, sim, bus, roles=("execution",))
            assert trio.current_time() == 7.5  # refused at 0, 1, 3; connected at 7
            await trio.sleep_until(18.25)
            assert sim.server.faults.drop_all() == 1  # after 11 s of frames (7.5 … 18.5)
            await trio.sleep_until(30.0)
            nursery.cancel_scope.cancel()
    assert sim.connector.attempts == [0.0, 1.0, 3.0, 7.0, 19.25]  # 1 s again, not 8 s
    assert handle.health("execution").reconnects == 4
    assert len(keys_of(drain())["BTCUSDT", "trade"]) > 20


async def test_every_attempt_of_every_role_takes_from_one_budget(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="genesis.resilience.connect_limiter")
    bus, _drain = collecting_bus()
    limiter = ConnectAttemptLimiter(AttemptWindow(limit=5, window_s=60.0))
    with trio.fail_after(300):
        async with open_memory_sim() as sim, trio.open_nursery() as nursery:
            sim.connector.refuse_next = 1000  # the exchange is unreachable
            nursery.start_soon(
                functools.partial(
                    run_market_data,
                    SIM_URL,
                    SYMBOLS,
                    bus,
                    config=exact_config(),
                    connector=sim.connector,
                    attempt_limiter=limiter,
                )
            )
            await trio.sleep_until(150.0)
            nursery.cancel_scope.cancel()
    attempts = sim.connector.attempts
    # Alone, three roles would have tried 3 × 8 times by 150 s (0, 1, 3, 7, 15, 31, 61, 91…).
    assert len(attempts) == 15  # 5 in each of the windows starting at 0, 60 and 120
    for t in attempts:
        assert sum(t <= u < t + 60.0 for u in attempts) <= 5
    assert limiter.statistics().delayed > 0
    assert any(r.getMessage().startswith("connect_limiter.wait ") for r in caplog.records)


async def test_trades_survive_the_liveness_machinery_unchanged(
    autojump_clock: trio.abc.Clock,
) -> None:
    # The relay's per-frame work (depth sniffing, last-frame times) loses and reorders nothing.
    bus, drain = collecting_bus()
    rounds = range(15)
    with trio.fail_after(60):
        async with open_memory_sim() as sim, trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(feed_rounds, sim, rounds, start=0.5))
            handle = await start_market_data(nursery, sim, bus)
            await trio.sleep_until(16.0)
            stats = handle.statistics()
            nursery.cancel_scope.cancel()
    assert keys_of(drain()) == expected_keys(rounds, DEFAULT_VIRTUAL_EPOCH_MS + 500, 1000)
    assert all(not h.stale and h.last_frame_age_s == 1.5 for h in stats.connections)


async def test_a_make_before_break_rotation_is_no_outage(autojump_clock: trio.abc.Clock) -> None:
    bus, drain = collecting_bus()
    seen: list[tuple[float, object]] = []
    config = exact_config(rotate_after_s=20.0, rotation_overlap_s=1.0)
    with trio.fail_after(120):
        async with open_memory_sim() as sim, trio.open_nursery() as nursery:
            await nursery.start(collect_feed_events, bus, seen)
            nursery.start_soon(functools.partial(feed_rounds, sim, range(50), start=0.5))
            # One role: while its successor connects, only the predecessor carries the feed.
            handle = await start_market_data(nursery, sim, bus, config=config, roles=("only",))
            await handle.wait_rotations("only", 2)
            await trio.sleep_until(50.0)
            nursery.cancel_scope.cancel()
    assert [(t, type(e).__name__) for t, e in seen] == [(0.5, "FeedUp")]
    assert keys_of(drain()) == expected_keys(range(50), DEFAULT_VIRTUAL_EPOCH_MS + 500, 1000)
