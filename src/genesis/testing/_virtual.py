"""A virtual-time soak of the market-data path against the whole simulator, in memory.

:func:`run_virtual_soak` wires the real pieces together without a socket::

    build_simulator ── market feed (steps the market maker, publishes into the hub)
         │   └── exchange trade listener ──► ground truth: every public trade id, and whether
         │                                   any server connection was delivering data then
         └── sim.connect_ws_memory ◄── in-memory connector ◄── run_market_data (3 roles + merger)
                                                                    └──► EventBus ──► tally
    fault schedule (sim/faults.py, seeded): drop / stall / ignore pongs / serverShutdown, one or
    all connections, and the REST faults (which nothing here calls)

Run it under ``trio.testing.MockClock(autojump_threshold=0)``: every sleep, ping, backoff and
age cap then happens in virtual time. Wall time grows with the number of frames, not with
virtual time (ARCHITECTURE.md §7): a chaos day with two symbols takes about half an hour at the
simulator's 100 ms market step and about five minutes at a 1 s step (``market_step_s``).

Accounting. Only trades printed during ``duration_s`` count; afterwards the faults stop and
the run goes on for ``settle_s`` so trades held by the merger or still in flight arrive. A
recorded trade that never reached the bus is *lost*, and classified by what the simulator's
stream server was doing when it printed:

- *in an outage*: no live, unstalled connection subscribed to that trade stream (every
  connection gone, reconnecting or stalled: nothing could carry it). Acceptable.
- *in flight*: some were, but every one of them closed in that same instant (virtual time
  stands still while frames travel, so the trade was on its way when the last connection went,
  e.g. a stale-feed timeout that fires in the instant the feed resumes). Acceptable.
- *while up*: a connection that carried it was still live an instant later. A bug: must be 0.

Duplicates and out-of-order deliveries are counted per kind and must be 0.

Reproducibility. The market, the fault schedule and the connector are seeded and use only
virtual time, so two runs with the same arguments give equal reports, with one exception: the
role *names*. Trio wakes tasks that become runnable in the same instant in a randomised order,
so connections opened in the same instant get their server-side ids in a different order from
run to run. Faults therefore pick a role (each role connects from an address of its own), not a
connection id; and since the three roles start alike, which name ends up behind which address
is the only thing left to chance (:meth:`SoakReport.without_role_names`). For the same reason
the measured window and the once-a-second samples sit half a feed step off the feed's grid.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
from typing import TYPE_CHECKING, Final, NoReturn

import attrs
import httpx
import trio

from genesis.bus import EventBus
from genesis.config import Secret, Settings
from genesis.exchange.gateway import open_gateway
from genesis.exchange.signing import HmacSigner
from genesis.exchange.streams import market_streams
from genesis.exchange.ws_manager import (
    DEFAULT_ROLES,
    MarketDataConfig,
    MarketDataHandle,
    run_market_data,
)
from genesis.models.market import Depth, Kline, Ticker, Trade
from genesis.sim.clock import DEFAULT_VIRTUAL_EPOCH_MS, SimClock
from genesis.sim.faults import FAULT_PROFILES, FaultProfile, FaultSchedule
from genesis.sim.feed import MarketFeed, run_market_feed
from genesis.sim.server import SimConfig, Simulator, build_simulator
from genesis.sim.testing import MemoryConnector
from genesis.testing._accounting import Sampler, Tally, Truth, check_record, losses, merger_counts

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from genesis.exchange.gateway import Gateway

__all__ = [
    "DEFAULT_SOAK_SYMBOLS",
    "SoakProgress",
    "SoakReport",
    "SoakRole",
    "profile_of",
    "run_virtual_soak",
]

logger = logging.getLogger(__name__)

DEFAULT_SOAK_SYMBOLS: Final = ("BTCUSDT", "ETHUSDT")
_STREAM_BASE_URL: Final = "ws://sim.invalid"  # the in-memory connector never resolves it
_BUS_BUFFER: Final = 65_536
"""The tally's channel; it drains every instant, so this only has to hold one instant's events."""
_SAMPLE_EVERY_S: Final = 1.0


@attrs.frozen(kw_only=True)
class SoakRole:
    """One role's counters at the end of a soak (from :meth:`MarketDataHandle.statistics`)."""

    role: str
    reconnects: int
    rotations: int
    messages_received: int


@attrs.frozen(kw_only=True)
class SoakProgress:
    """A snapshot handed to ``on_progress`` every ``progress_every_s`` virtual seconds."""

    virtual_s: float
    trades_published: int
    events_delivered: int
    reconnects: int
    rotations: int


@attrs.frozen(kw_only=True)
class SoakReport:
    """What a soak measured. Times (``*_s``) are virtual seconds since the window opened.

    Attributes:
        seed: Seeds the market maker and the fault schedule.
        profile: The fault schedule's name.
        window_start_s: When the window opened, in virtual seconds after the call: once the
            first connection delivered a frame, plus half a market step.
        duration_s: The measured window (trades printed in it are accounted).
        stopped_early: ``on_progress`` ended the window before ``duration_s``.
        symbols: The symbols subscribed.
        market_step_s: The market feed's step.
        trades_published: Public trades the exchange printed in the window.
        trades_delivered: Trades of the exchange's own record of the window (its trade
            history, not the listener that counts ``trades_published``) that reached the bus,
            counted from the bus.
        trades_in_record: Trades of the window the exchange's history holds (its last 10,000
            per symbol): equal to ``trades_published`` unless the window printed more.
        trades_unrecorded: Trades delivered with an id inside the window the record lacks
            (must be 0).
        trades_lost_in_outage: Lost while no connection was delivering data (acceptable).
        trades_lost_in_flight: Lost while some were, but all of them closed in that instant
            (acceptable; see the module docstring).
        trades_lost_while_up: Lost although a connection that carried it stayed up (must be 0).
        lost_in_flight_samples: Up to 20 ``(symbol, trade_id, printed_at_s)`` lost in flight.
        lost_while_up_samples: Up to 20 ``(symbol, trade_id, printed_at_s)`` lost while up.
        duplicates: Events delivered twice (trade id, depth ``lastUpdateId``, ticker ``E``,
            a closed kline); must be 0.
        out_of_order: Events delivered after a newer one of the same stream; must be 0. A
            closed kline delivered after updates of the next kline is allowed (it is counted in
            ``late_kline_closes`` instead).
        late_kline_closes: Closed klines delivered after the next kline's first update.
        events_by_type: Events received on the bus, by class name.
        bus_dropped: Events the bus dropped for the soak's subscriber (must be 0, or the tally
            is not trustworthy).
        longest_feed_gap_s: The longest time without any event on the bus.
        longest_feed_gap_end_s: When that gap ended.
        uncovered_s: Once-a-second samples that found no live, unstalled connection.
        reconnects: Reconnects after failures, all roles.
        rotations: Make-before-break rotations (age cap and ``serverShutdown``), all roles.
        roles: Per role; see the module docstring on reproducibility.
        connections_accepted: Handshakes the simulator's stream server accepted.
        max_connection_age_s: The oldest server-side connection seen (sampled once a second);
            the client rotates at ``rotate_after_s``, before the server's age cap.
        faults: Faults injected, by action.
        merger: The merger's counters at the end (``MergerStatistics`` as a mapping).
    """

    seed: int
    profile: str
    window_start_s: float
    duration_s: float
    stopped_early: bool
    symbols: tuple[str, ...]
    market_step_s: float
    trades_published: int
    trades_delivered: int
    trades_in_record: int
    trades_unrecorded: int
    trades_lost_in_outage: int
    trades_lost_in_flight: int
    trades_lost_while_up: int
    lost_in_flight_samples: tuple[tuple[str, int, float], ...]
    lost_while_up_samples: tuple[tuple[str, int, float], ...]
    duplicates: Mapping[str, int]
    out_of_order: Mapping[str, int]
    late_kline_closes: int
    events_by_type: Mapping[str, int]
    bus_dropped: int
    longest_feed_gap_s: float
    longest_feed_gap_end_s: float
    uncovered_s: int
    reconnects: int
    rotations: int
    roles: tuple[SoakRole, ...]
    connections_accepted: int
    max_connection_age_s: float
    faults: Mapping[str, int]
    merger: Mapping[str, int]

    @property
    def trades_lost(self) -> int:
        return self.trades_lost_in_outage + self.trades_lost_in_flight + self.trades_lost_while_up

    def without_role_names(self) -> SoakReport:
        """This report with the per-role rows unnamed and sorted: equal for equal arguments.

        Which role name a run's first connection belongs to is up to Trio's scheduler (see
        the module docstring); everything else, per-role counters included, is reproducible.
        """
        rows = sorted(
            (attrs.evolve(row, role="") for row in self.roles),
            key=lambda row: (row.reconnects, row.rotations, row.messages_received),
        )
        return attrs.evolve(self, roles=tuple(rows))

    def to_json(self) -> dict[str, object]:
        """The report as JSON-ready builtins (tuples become lists)."""
        data = attrs.asdict(self)
        data["trades_lost"] = self.trades_lost
        return data


async def _run_feed(
    sim: Simulator,
    step_s: float,
    *,
    task_status: trio.TaskStatus[MarketFeed] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """The simulator's market feed, or the same loop on a coarser grid (a multiple of 100 ms).

    With a coarse step each tick steps the market maker once and calls
    :meth:`MarketFeed.tick` with the elapsed time, so every stream due at that multiple of
    100 ms is published: with a 1 s step the ``@100ms`` depth and the ticker go out once a
    second, klines every 2 s.
    """
    step_ms = round(step_s * 1000)
    if step_ms <= 100:
        await run_market_feed(
            sim.exchange,
            sim.market_maker,
            sim.hub,
            sim.clock,
            step_s=step_s,
            task_status=task_status,
        )
    feed = MarketFeed(sim.exchange, sim.hub, sim.clock)
    try:
        start = trio.current_time()
        k = 0
        while True:
            now_ms = sim.clock.now_ms()
            sim.market_maker.step(now_ms)
            feed.tick(k * step_ms, now_ms)
            if k == 0:
                task_status.started(feed)
            k += 1
            await trio.sleep_until(start + k * step_ms / 1000)
    finally:
        feed.close()


def _check_step(market_step_s: float) -> None:
    step_ms = round(market_step_s * 1000)
    if (
        step_ms <= 0
        or abs(step_ms - market_step_s * 1000) > 1e-6
        or not (100 % step_ms == 0 or (step_ms % 100 == 0 and 1000 % step_ms == 0))
    ):
        raise ValueError(
            "market_step_s must divide 0.1 s (0.1, 0.05 ...) or be 0.2, 0.5 or 1.0, "
            f"got {market_step_s!r}"
        )


def profile_of(profile: str | FaultProfile) -> FaultProfile:
    """``profile`` itself, or the :data:`~genesis.sim.faults.FAULT_PROFILES` entry it names.

    Raises:
        ValueError: no such profile.
    """
    if isinstance(profile, FaultProfile):
        return profile
    try:
        return FAULT_PROFILES[profile]
    except KeyError:
        raise ValueError(
            f"unknown fault profile {profile!r}; choose from {sorted(FAULT_PROFILES)}"
        ) from None


def _memory_gateway(sim: Simulator) -> contextlib.AbstractAsyncContextManager[Gateway]:
    """A gateway to the simulator's REST app in memory, on the simulator's clock."""
    return open_gateway(
        Settings(),
        rest_url="http://sim.invalid",
        api_key=Secret(sim.api_key),
        signer=HmacSigner(Secret(sim.api_secret)),
        transport=httpx.ASGITransport(app=sim.http_app, client=("127.0.0.1", 40000)),
        wall_clock_ms=sim.clock.now_ms,
        prepare=False,
    )


async def run_virtual_soak(
    *,
    duration_s: float,
    seed: int = 1,
    profile: str | FaultProfile = "chaos",
    symbols: Sequence[str] = DEFAULT_SOAK_SYMBOLS,
    market_step_s: float = 0.1,
    max_connection_age_s: float = 24 * 3600.0,
    config: MarketDataConfig | None = None,
    settle_s: float = 2.0,
    epoch_ms: int = DEFAULT_VIRTUAL_EPOCH_MS,
    progress_every_s: float = 3600.0,
    on_progress: Callable[[SoakProgress], bool | None] | None = None,
    backfill: bool = False,
) -> SoakReport:
    """Soak the market-data path against the in-memory simulator and report what arrived.

    Meant for ``trio.testing.MockClock(autojump_threshold=0)`` (``autojump_clock`` in tests):
    it sleeps ``duration_s + settle_s`` of Trio time.

    Args:
        duration_s: The measured window of virtual time.
        seed: Seeds the simulator's market maker and the fault schedule.
        profile: A name from :data:`~genesis.sim.faults.FAULT_PROFILES` (``none``,
            ``flaky``, ``chaos``: the schedules of ``genesis sim --faults``) or a
            :class:`~genesis.sim.faults.FaultProfile`.
        symbols: Symbols to subscribe (each has trade, ticker, depth20 and kline_1m streams).
        market_step_s: The market feed's step. 0.1 s is the simulator's own feed; a multiple
            of 0.1 s steps the market less often and publishes the ``@100ms`` depth once per
            step, which cuts the frames (and the wall time) of long soaks.
        max_connection_age_s: The simulator's age cap on connections (Binance: 24 h).
        config: The market-data configuration (default :class:`MarketDataConfig`, which
            rotates at 23.5 h).
        settle_s: Fault-free time after the window, for trades still held or in flight.
        epoch_ms: The simulator's epoch at the start (fixed, for reproducible event times).
        progress_every_s: Interval of ``on_progress`` calls, in virtual seconds.
        on_progress: Called synchronously with a :class:`SoakProgress` (e.g. to print); when it
            returns True the window ends there (a wall-time budget), and the report's
            ``duration_s`` is the window actually measured.
        backfill: Give market data the gateway (in memory, over the simulator's REST app) as
            its backfill source, as ``genesis run`` does: trades no connection delivered are
            then fetched from ``historicalTrades`` instead of lost.

    Returns:
        The :class:`SoakReport`.

    Raises:
        ValueError: a bad profile, step or duration.
        ExceptionGroup: whatever crashed a service of the soak (the market-data service
            included) propagates, as from any nursery.

    Everything it starts runs in its own nursery and is cancelled before it returns.
    """
    if not duration_s > 0 or settle_s < 0 or not progress_every_s > 0:
        raise ValueError("duration_s and progress_every_s must be > 0, settle_s >= 0")
    _check_step(market_step_s)
    soak_profile = profile_of(profile)
    sim = build_simulator(
        SimConfig(
            seed=seed,
            symbols=tuple(symbols),
            max_connection_age_s=max_connection_age_s,
            epoch_ms=epoch_ms,
        ),
        clock=SimClock.start(epoch_ms),
    )
    names = sim.config.symbols
    called_at = trio.current_time()
    truth = Truth(sim, {s: market_streams([s])[0] for s in names})
    tally = Tally()
    bus = EventBus()
    schedule = FaultSchedule(sim.faults, soak_profile, random.Random(seed))
    sampler = Sampler(sim)
    remove_listener = sim.exchange.add_trade_listener(truth.on_trades)
    try:
        async with contextlib.AsyncExitStack() as stack, trio.open_nursery() as nursery:
            await nursery.start(_run_feed, sim, market_step_s)
            nursery.start_soon(truth.check_survivors)
            subscription = bus.subscribe(Trade, Ticker, Depth, Kline, buffer_size=_BUS_BUFFER)
            nursery.start_soon(tally.consume, subscription)
            connector = MemoryConnector(sim.connect_ws_memory, nursery, roles=DEFAULT_ROLES)
            gateway = None
            if backfill:
                gateway = await stack.enter_async_context(_memory_gateway(sim))
            handle: MarketDataHandle = await nursery.start(
                functools.partial(
                    run_market_data,
                    _STREAM_BASE_URL,
                    names,
                    bus,
                    config=config,
                    connector=connector,
                    wall_clock_ms=sim.clock.now_ms,
                    backfill=gateway,
                    rng=random.Random(seed + 1),  # the backoff's jitter, reproducible too
                )
            )
            # The window (and the once-a-second samples) sit half a step off the feed's grid, so
            # no boundary or sample shares an instant with a tick (whose order within the
            # instant Trio randomises).
            await trio.sleep(market_step_s / 2)
            truth.start = trio.current_time()
            truth.recording = True
            tally.open_window(truth.start)
            logger.info(
                "soak.start profile=%s seed=%d duration_s=%g symbols=%s",
                soak_profile.name,
                seed,
                duration_s,
                ",".join(names),
            )
            async with trio.open_nursery() as faults_nursery:
                await faults_nursery.start(schedule.run)
                window_s = await _measure(
                    sim, handle, truth, tally, sampler, duration_s, progress_every_s, on_progress
                )
                truth.recording = False
                tally.close_window(trio.current_time())
                faults_nursery.cancel_scope.cancel()
            sim.faults.reset()
            await trio.sleep(settle_s)
            statistics = handle.statistics()
            nursery.cancel_scope.cancel()
    finally:
        remove_listener()
    lost = losses(truth, tally)
    record = check_record(sim, truth, tally)
    merger = statistics.merger
    report = SoakReport(
        seed=seed,
        profile=soak_profile.name,
        window_start_s=truth.start - called_at,
        duration_s=window_s,
        stopped_early=window_s < duration_s,
        symbols=names,
        market_step_s=market_step_s,
        trades_published=truth.published,
        trades_delivered=record.trades_delivered,
        trades_in_record=record.trades_in_record,
        trades_unrecorded=record.trades_unrecorded,
        trades_lost_in_outage=lost.outage,
        trades_lost_in_flight=lost.in_flight,
        trades_lost_while_up=lost.while_up,
        lost_in_flight_samples=tuple(lost.in_flight_samples),
        lost_while_up_samples=tuple(lost.while_up_samples),
        duplicates=dict(sorted(tally.duplicates.items())),
        out_of_order=dict(sorted(tally.out_of_order.items())),
        late_kline_closes=tally.late_kline_closes,
        events_by_type=dict(sorted(tally.events.items())),
        bus_dropped=bus.statistics().dropped,
        longest_feed_gap_s=round(tally.longest_gap_s, 6),
        longest_feed_gap_end_s=round(tally.longest_gap_end_s, 6),
        uncovered_s=sampler.uncovered_s,
        reconnects=sum(c.reconnects for c in statistics.connections),
        rotations=sum(c.rotations for c in statistics.connections),
        roles=tuple(
            SoakRole(
                role=c.role,
                reconnects=c.reconnects,
                rotations=c.rotations,
                messages_received=c.messages_received,
            )
            for c in statistics.connections
        ),
        connections_accepted=sim.streams.statistics().connections_accepted,
        max_connection_age_s=sampler.max_age_ms / 1000,
        faults=dict(sorted(schedule.injected.items())),
        merger=merger_counts(merger),
    )
    logger.info(
        "soak.done published=%d lost_outage=%d lost_in_flight=%d lost_while_up=%d reconnects=%d",
        report.trades_published,
        lost.outage,
        lost.in_flight,
        lost.while_up,
        report.reconnects,
    )
    return report


async def _measure(
    sim: Simulator,
    handle: MarketDataHandle,
    truth: Truth,
    tally: Tally,
    sampler: Sampler,
    duration_s: float,
    progress_every_s: float,
    on_progress: Callable[[SoakProgress], bool | None] | None,
) -> float:
    """Sample once a second until the window ends; returns its length."""
    start = truth.start
    end = start + duration_s
    next_progress = start + progress_every_s
    sample_at = start
    while sample_at < end:
        sample_at = min(sample_at + _SAMPLE_EVERY_S, end)
        await trio.sleep_until(sample_at)
        sampler.sample()
        if on_progress is not None and sample_at >= next_progress:
            next_progress += progress_every_s
            if on_progress(_progress(handle, truth, tally, sample_at - start)):
                logger.info("soak.stopped_early virtual_s=%g", sample_at - start)
                break
    return sample_at - start


def _progress(
    handle: MarketDataHandle, truth: Truth, tally: Tally, virtual_s: float
) -> SoakProgress:
    statistics = handle.statistics()
    return SoakProgress(
        virtual_s=virtual_s,
        trades_published=truth.published,
        events_delivered=tally.events_total,
        reconnects=sum(c.reconnects for c in statistics.connections),
        rotations=sum(c.rotations for c in statistics.connections),
    )
