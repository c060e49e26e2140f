"""A CI-sized virtual soak: the market-data path against the whole simulator, in memory.

Rules for these tests:

- the soak (:func:`genesis.testing.run_virtual_soak`) runs under
  ``MockClock(autojump_threshold=0)``; the exact virtual start of the measured window is
  asserted, and the end up to one bounded close handshake;
- the chaos soak runs once per module (a fixture with its own ``trio.run`` and a fresh clock at
  0, so the second run of the reproducibility test starts from the same virtual time: float
  sums of virtual times are only reproducible from the same origin);
- one symbol, and a market that steps once a virtual second (``market_step_s=1.0``), keep the
  frames, and so the wall time, low: 20 virtual minutes of chaos take under two seconds;
- every run has a deadline on the trio clock;
- the last test is a minimal reproduction of a bug the soak found (now fixed).
"""

from __future__ import annotations

import ast
import functools
import logging
from pathlib import Path
from typing import Final

import attrs
import orjson
import pytest
import trio
import trio.testing
from wsproto.utilities import LocalProtocolError

import genesis
from genesis.bus import EventBus
from genesis.exchange.ws_manager import DEFAULT_ROLES, MarketDataConfig, run_market_data
from genesis.sim.clock import DEFAULT_VIRTUAL_EPOCH_MS, SimClock
from genesis.sim.faults import FAULT_PROFILES, FaultProfile
from genesis.sim.hub import StreamHub
from genesis.sim.streams import StreamServer, StreamServerConfig
from genesis.sim.testing import MemoryConnector
from genesis.testing import SoakReport, run_virtual_soak

CHAOS_S: Final = 20 * 60.0
STEP_S: Final = 1.0
SETTLE_S: Final = 2.0
FIRST_FRAME_S: Final = STEP_S
"""The feed ticks at 0 (before anyone subscribed), then at 1 s: the first frame, the start."""
WINDOW_START_S: Final = FIRST_FRAME_S + STEP_S / 2
CLOSE_BOUND_S: Final = MarketDataConfig().disconnect_timeout_s
MARGIN_S: Final = 60.0
"""Deadlines are the virtual time a run needs plus this."""


def _chaos_soak() -> tuple[SoakReport, float]:
    """One chaos soak in a fresh ``trio.run``; returns the report and the virtual end time."""

    async def soak() -> tuple[SoakReport, float]:
        with trio.fail_after(CHAOS_S + MARGIN_S):
            report = await run_virtual_soak(
                duration_s=CHAOS_S,
                seed=7,
                profile="chaos",
                symbols=["BTCUSDT"],
                market_step_s=STEP_S,
                settle_s=SETTLE_S,
            )
        return report, trio.current_time()

    return trio.run(soak, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.fixture(scope="module")
def chaos() -> tuple[SoakReport, float]:
    return _chaos_soak()


def test_chaos_soak_loses_no_trade_while_a_connection_is_up(
    chaos: tuple[SoakReport, float],
) -> None:
    report, _ = chaos
    assert report.trades_published > 500
    assert report.trades_lost_while_up == 0, report.lost_while_up_samples
    assert report.duplicates == {}
    assert report.out_of_order == {}
    assert report.bus_dropped == 0
    assert report.merger["bus_rejected"] == 0
    assert report.merger["decode_errors"] == 0
    assert report.merger["held"] == 0
    # Against the exchange's own trade history (not the listener that counts what it printed):
    # it holds every trade of the window, the bus delivered no trade it lacks, and what the bus
    # missed is exactly what the listener explained by an outage (or a connection's last
    # instant).
    assert report.trades_in_record == report.trades_published
    assert report.trades_unrecorded == 0
    assert report.trades_in_record - report.trades_delivered == (
        report.trades_lost_in_outage + report.trades_lost_in_flight
    )
    assert set(report.events_by_type) == {"Depth", "Kline", "Ticker", "Trade"}


def test_chaos_soak_survives_every_kind_of_fault(chaos: tuple[SoakReport, float]) -> None:
    report, end = chaos
    # The first frame, half a market step to get off the feed's grid, the window, the
    # settling time, and at most one bounded close handshake on the way out.
    assert report.window_start_s == WINDOW_START_S
    assert report.duration_s == CHAOS_S
    assert 0 <= end - (WINDOW_START_S + CHAOS_S + SETTLE_S) <= CLOSE_BOUND_S
    assert not report.stopped_early
    # The one schedule of sim/faults.py: every action of chaos was drawn, REST ones included.
    assert set(report.faults) == set(FAULT_PROFILES["chaos"].actions)
    assert sum(report.faults.values()) >= CHAOS_S / 30  # chaos: one fault every 5 to 30 s
    # Total outages happened (drop_all, stall_all, ignore_pongs_all) and cost trades...
    assert report.trades_lost_in_outage > 0
    assert report.uncovered_s > 0
    # ... but each was bounded: the longest silence on the bus is a stall plus the stale-feed
    # timeout and a capped backoff, not an unbounded hang.
    assert 10.0 < report.longest_feed_gap_s < 60.0
    assert report.reconnects > len(DEFAULT_ROLES)
    assert report.rotations > 0  # serverShutdown rotations
    assert report.connections_accepted == len(DEFAULT_ROLES) + report.reconnects + (
        report.rotations
    )
    assert sorted(r.role for r in report.roles) == sorted(DEFAULT_ROLES)
    assert sum(r.reconnects for r in report.roles) == report.reconnects


def test_the_same_seed_gives_the_same_report(chaos: tuple[SoakReport, float]) -> None:
    first, _ = chaos
    second, _ = _chaos_soak()
    assert second.without_role_names() == first.without_role_names()
    assert second.to_json()["trades_published"] == first.to_json()["trades_published"]


async def test_age_cap_rotations_lose_nothing(autojump_clock: trio.abc.Clock) -> None:
    # A 5-minute age cap and a client that rotates at 4 min 45 s: two rotations per role in
    # 10 minutes, make-before-break, with no fault to hide behind.
    with trio.fail_after(600.0 + MARGIN_S):
        report = await run_virtual_soak(
            duration_s=600.0,
            seed=3,
            profile="none",
            symbols=["BTCUSDT"],
            market_step_s=STEP_S,
            max_connection_age_s=300.0,
            config=MarketDataConfig(rotate_after_s=285.0),
            settle_s=SETTLE_S,
        )
    assert report.window_start_s == WINDOW_START_S
    assert 0 <= trio.current_time() - (WINDOW_START_S + 600.0 + SETTLE_S) <= CLOSE_BOUND_S
    assert report.rotations == 2 * len(DEFAULT_ROLES)
    assert all(r.rotations == 2 and r.reconnects == 0 for r in report.roles)
    assert report.reconnects == 0
    assert report.connections_accepted == 3 * len(DEFAULT_ROLES)
    # The simulator's age cap never fires: the old connection is retired 1 s
    # (rotation_overlap_s) after its successor's first frame (the next tick), before 300 s.
    assert 285.0 < report.max_connection_age_s <= 285.0 + 2 * STEP_S
    assert report.trades_published > 100
    assert report.trades_lost == 0
    assert report.trades_delivered == report.trades_in_record == report.trades_published
    assert report.duplicates == {}
    assert report.out_of_order == {}
    assert report.uncovered_s == 0
    assert report.longest_feed_gap_s <= 2 * STEP_S


async def test_a_total_stall_is_an_outage_not_a_loss(autojump_clock: trio.abc.Clock) -> None:
    stalls = FaultProfile(name="stalls", min_gap_s=40, max_gap_s=60, actions=("stall_all",))
    with trio.fail_after(300.0 + MARGIN_S):
        report = await run_virtual_soak(
            duration_s=300.0,
            seed=5,
            profile=stalls,
            symbols=["ETHUSDT"],
            market_step_s=STEP_S,
            settle_s=SETTLE_S,
        )
    assert report.profile == "stalls"
    assert report.faults["stall_all"] >= 5
    assert report.trades_lost_in_outage > 0
    assert report.trades_lost_while_up == 0
    assert report.duplicates == {}
    assert report.out_of_order == {}
    assert report.uncovered_s >= 5 * report.faults["stall_all"]  # each stall lasts 5-15 s
    assert report.longest_feed_gap_s >= 5.0


async def test_bad_arguments_are_refused(autojump_clock: trio.abc.Clock) -> None:
    with trio.fail_after(1):
        with pytest.raises(ValueError, match="unknown fault profile"):
            await run_virtual_soak(duration_s=10, profile="mayhem")
        for step in (0.3, 0.15, 2.0, 0.0):
            with pytest.raises(ValueError, match="market_step_s"):
                await run_virtual_soak(duration_s=10, market_step_s=step)
        with pytest.raises(ValueError, match="duration_s"):
            await run_virtual_soak(duration_s=0)
    assert trio.current_time() == 0.0


def test_report_is_json_ready(chaos: tuple[SoakReport, float]) -> None:
    report, _ = chaos
    data = orjson.loads(orjson.dumps(report.to_json()))
    assert data["trades_lost"] == report.trades_lost
    assert data["roles"][0].keys() == attrs.asdict(report.roles[0]).keys()
    assert data["merger"] == dict(report.merger)


# --- a bug the soak found ------------------------------------------------------------------
#
# trio-websocket#184: a ping that arrives after ws_manager sent its close frame makes
# trio-websocket's reader answer with a pong that wsproto refuses (LOCAL_CLOSING); the
# LocalProtocolError escaped into ws_manager's connection nursery and run_market_data died.
# ws_manager now treats it as the end of that one connection.


def test_close_meeting_a_ping_ends_only_that_connection(caplog: pytest.LogCaptureFixture) -> None:
    # A sync test with its own trio.run, so a crash is reported as the LocalProtocolError
    # group it is, not as whatever else the wrapping nursery of pytest-trio makes of it.
    caplog.set_level(logging.INFO, logger="genesis.exchange.ws_manager")
    crash = trio.run(
        _crash_of_close_meeting_a_ping, clock=trio.testing.MockClock(autojump_threshold=0)
    )
    assert crash is None, f"run_market_data crashed: {crash!r}"
    # The race did happen (this test is not passing vacuously): the retired connection ended
    # with wsproto's refusal.
    ends = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ws.disconnect")]
    assert len(ends) == 2  # the retired connection, then its successor when cancelled
    assert "session=0" in ends[0]
    assert "LOCAL_CLOSING" in ends[0]


async def _crash_of_close_meeting_a_ping() -> BaseExceptionGroup[LocalProtocolError] | None:
    hub = StreamHub()
    clock = SimClock.start(DEFAULT_VIRTUAL_EPOCH_MS)
    server = StreamServer(hub, clock, StreamServerConfig(symbols=frozenset({"BTCUSDT"})))
    crash: BaseExceptionGroup[LocalProtocolError] | None = None
    try:
        await _close_at_the_instant_of_a_ping(server, hub, clock)
    except* LocalProtocolError as group:
        crash = group
    return crash


async def _close_at_the_instant_of_a_ping(
    server: StreamServer, hub: StreamHub, clock: SimClock
) -> None:
    async with trio.open_nursery() as server_nursery:

        async def feed() -> None:
            for trade_id in range(1, 40):  # one trade at every x.5 s
                await trio.sleep_until(trade_id - 0.5)
                now_ms = clock.now_ms()
                payload = {"e": "trade", "E": now_ms, "s": "BTCUSDT", "t": trade_id}
                payload |= {"p": "1.0", "q": "1.0", "T": now_ms, "m": True, "M": True}
                hub.publish("btcusdt@trade", orjson.dumps(payload))

        with trio.fail_after(60):
            server_nursery.start_soon(feed)
            # Rotation at 19 s; the successor's first frame arrives at 19.5 s, so the old
            # connection is closed rotation_overlap_s = 0.5 s later: at 20 s, the instant of
            # the server's first ping on it (FACTS.md: a ping every 20 s).
            handle = await server_nursery.start(
                functools.partial(
                    run_market_data,
                    "ws://sim.invalid",
                    ["BTCUSDT"],
                    EventBus(),
                    config=MarketDataConfig(rotate_after_s=19.0, rotation_overlap_s=0.5),
                    roles=("execution",),
                    connector=MemoryConnector(server.connect_memory_stream, server_nursery),
                    wall_clock_ms=clock.now_ms,
                )
            )
            await trio.sleep(30.0)
            health = handle.health("execution")
            assert (health.rotations, health.reconnects) == (1, 0)
            server_nursery.cancel_scope.cancel()


def test_production_modules_do_not_import_the_test_kit() -> None:
    # genesis.testing sits above app, exchange and sim; only the `genesis soak` handler loads
    # it, lazily, when the command runs. genesis.sim.testing stays inside sim's layer (the
    # import-direction test in test_exports.py).
    src = Path(genesis.__file__).parent
    offenders: list[str] = []
    for path in src.rglob("*.py"):
        module = ".".join(path.relative_to(src).with_suffix("").parts)
        if module.startswith("testing"):
            continue
        # Imports that run when the module is imported: its top-level statements (a function
        # body, or an ``if TYPE_CHECKING:`` block, runs later or never).
        offenders += [
            module
            for node in ast.parse(path.read_text()).body
            if isinstance(node, ast.ImportFrom | ast.Import)
            and any(
                name.startswith("genesis.testing")
                for name in (
                    [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else [alias.name for alias in node.names]
                )
            )
        ]
    assert offenders == []
