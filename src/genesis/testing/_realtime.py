"""The wall-clock soak: the whole tree against the embedded simulator, over loopback sockets.

:func:`run_soak` is ``genesis soak`` and ``scripts/soak.py``::

    run_soak
    └── nursery
        ├── run_genesis (app/run.py: simulator, market data, orders, user stream, heartbeat)
        ├── tally            every bus event: order and uniqueness per stream, gaps
        ├── survivor check   (accounting) which lost trades were in a connection's last instant
        ├── sampler          once a second: is any stream connection delivering; RSS
        └── fault schedule   sim/faults.py, the same schedule as ``genesis sim --faults``

The exchange's trade listener is the ground truth (every trade id the simulator printed, and
whether a connection was carrying that stream then); after the window the faults stop and the
tree runs ``settle_s`` longer, so trades in flight arrive. What the report holds is listed on
:class:`RealSoakReport`. Unlike the virtual soak this one is not reproducible: real sockets,
real scheduling, wall-clock time. The loss classes are approximate for the same reason (a
trade counts as *in flight* only if its connections closed within 1 ms of its print; a frame
still in a socket buffer when its connection is dropped later is counted *while up*).
"""

from __future__ import annotations

import contextlib
import logging
import re
import resource
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs
import trio

from genesis.app.run import run_genesis, watch_signals
from genesis.config import Settings
from genesis.exchange.streams import market_streams
from genesis.sim.faults import run_fault_profile
from genesis.sim.testing import loopback_tls, trusted_by_default
from genesis.testing._accounting import (
    LOST_SAMPLES,
    Sampler,
    Tally,
    Truth,
    check_record,
    losses,
    merger_counts,
)
from genesis.testing._virtual import profile_of

if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable, Mapping, Sequence

    from genesis.app.run import GenesisHandle
    from genesis.bus import Subscription
    from genesis.sim.faults import FaultProfile, FaultSchedule
    from genesis.sim.server import Simulator

__all__ = ["RealSoakReport", "SoakTick", "run_soak"]

logger = logging.getLogger(__name__)

DEFAULT_DURATION_S: Final = 3600.0
_BUS_BUFFER: Final = 65_536
_MIB: Final = 1024 * 1024
_DELAY = re.compile(r"\bdelay_s=([0-9.]+)")


@attrs.frozen(kw_only=True)
class SoakTick:
    """Handed to ``on_progress`` every ``progress_every_s`` of the window."""

    elapsed_s: float
    trades_published: int
    events: int
    reconnects: int
    rss_mib: float


@attrs.frozen(kw_only=True)
class RealSoakReport:
    """What a wall-clock soak measured. Times are seconds since the window opened.

    Attributes:
        started_at: UTC start of the window (ISO 8601).
        duration_s: The window actually measured (shorter after a stop signal).
        stopped_early: A signal ended the window before ``duration_s``.
        profile: The fault schedule (:data:`~genesis.sim.faults.FAULT_PROFILES`).
        seed: Seeds the simulator's market and the fault schedule.
        symbols: The symbols of the tree.
        settle_s: Fault-free time after the window before the counts were taken.
        events_by_kind: Events received on the bus in the window and the settling time.
        trades_published: Trades the simulator printed in the window (its trade listener).
        trades_lost: Of those, trades that never reached the bus.
        trades_lost_in_outage: Printed while no stream connection carried the trade stream.
        trades_lost_in_flight: Printed while some did, but all of them closed within 1 ms.
        trades_lost_while_up: The rest (see the module docstring on their accuracy).
        lost_samples: Up to 20 ``(symbol, trade_id, printed_at_s)`` of the lost trades.
        trades_in_record: Trades of the window in the exchange's history (last 10,000 per
            symbol), checked independently of the listener.
        trades_delivered: Of those, the trades that reached the bus.
        trades_unrecorded: Trades on the bus the exchange's record lacks (must be 0).
        duplicated: Events delivered twice, by stream kind.
        out_of_order: Events delivered after a newer one of their stream, by kind.
        late_kline_closes: Closed klines after the next kline's first update (allowed).
        longest_gap_s: The longest time without any market event on the bus.
        longest_gap_end_s: When it ended.
        uncovered_s: Once-a-second samples that found no live, unstalled stream connection.
        reconnects: Reconnects after failures, per market-data connection (role).
        rotations: Make-before-break rotations per role.
        largest_backoff_s: The longest reconnect delay any connection waited.
        rss_start_mib: Resident set size when the window opened.
        rss_end_mib: At the end.
        rss_peak_mib: The process's peak.
        errors_by_kind: WARNING-or-worse log lines by event name (``logger: event``).
        faults: Faults injected, by action.
        merger: The merger's counters.
        bus_dropped: Events the bus dropped (any subscriber).
        order_books: Per symbol with a local book (``order_book=``): gaps, syncs, snapshots,
            events applied and books published (exchange/order_book.py statistics).
        tls: The streams and the WS API ran over TLS (``wss://``).
    """

    started_at: str
    duration_s: float
    stopped_early: bool
    profile: str
    seed: int
    symbols: tuple[str, ...]
    settle_s: float
    events_by_kind: Mapping[str, int]
    trades_published: int
    trades_lost: int
    trades_lost_in_outage: int
    trades_lost_in_flight: int
    trades_lost_while_up: int
    lost_samples: tuple[tuple[str, int, float], ...]
    trades_in_record: int
    trades_delivered: int
    trades_unrecorded: int
    duplicated: Mapping[str, int]
    out_of_order: Mapping[str, int]
    late_kline_closes: int
    longest_gap_s: float
    longest_gap_end_s: float
    uncovered_s: int
    reconnects: Mapping[str, int]
    rotations: Mapping[str, int]
    largest_backoff_s: float
    rss_start_mib: float
    rss_end_mib: float
    rss_peak_mib: float
    errors_by_kind: Mapping[str, int]
    faults: Mapping[str, int]
    merger: Mapping[str, int]
    bus_dropped: int
    order_books: Mapping[str, Mapping[str, int]] = attrs.field(factory=dict)
    tls: bool = False

    @property
    def ok(self) -> bool:
        """Nothing lost, duplicated or out of order (the exit status of ``genesis soak``)."""
        return not (
            self.trades_lost or self.duplicated or self.out_of_order or self.trades_unrecorded
        )

    def to_json(self) -> dict[str, object]:
        """JSON-ready builtins, with ``ok``."""
        data = attrs.asdict(self)
        data["ok"] = self.ok
        return data


class _LogCounter(logging.Handler):
    """Counts WARNING+ records by event name and keeps the largest reconnect delay."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.by_kind: dict[str, int] = {}
        self.largest_backoff_s = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        text = str(record.msg)
        if text.startswith("ws.reconnect"):
            match = _DELAY.search(record.getMessage())
            if match is not None:
                self.largest_backoff_s = max(self.largest_backoff_s, float(match.group(1)))
        if record.levelno >= logging.WARNING:
            kind = f"{record.name}: {text.split(' ', 1)[0]}"
            self.by_kind[kind] = self.by_kind.get(kind, 0) + 1


def _rss_mib() -> float:
    """The current resident set size (Linux ``/proc``; the peak elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / _MIB
    except OSError:  # pragma: no cover  # not Linux
        pass
    return _peak_rss_mib()  # pragma: no cover


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / _MIB  # Linux: KiB


async def _tally(tally: Tally, subscription: Subscription[object]) -> None:
    async with subscription:
        async for event in subscription:
            tally.on_event(event, trio.current_time())


async def _sample(sampler: Sampler, rss: list[float]) -> None:
    while True:
        await trio.sleep(1.0)
        sampler.sample()
        rss[0] = _rss_mib()


async def run_soak(
    *,
    duration_s: float = DEFAULT_DURATION_S,
    profile: str | FaultProfile = "chaos",
    seed: int = 1,
    symbols: Sequence[str] = ("BTCUSDT", "ETHUSDT"),
    order_book: Sequence[str] = (),
    settle_s: float = 5.0,
    settings: Settings | None = None,
    record_path: str | None = None,
    handle_signals: bool = False,
    progress_every_s: float = 60.0,
    on_progress: Callable[[SoakTick], None] | None = None,
    tls: bool = False,
) -> RealSoakReport:
    """Run the whole tree against the embedded simulator for ``duration_s`` of wall time.

    Args:
        duration_s: The measured window.
        profile: A name from :data:`~genesis.sim.faults.FAULT_PROFILES` or a profile.
        seed: The simulator's seed (market and fault schedule).
        symbols: The tree's symbols (ignored when ``settings`` is given).
        order_book: Symbols (of ``symbols``) with a local order book, soaked too.
        settle_s: Fault-free time after the window, for trades still in flight.
        settings: The tree's settings; simulator mode, default ``Settings(symbols=...)``.
        record_path: ``--record`` for the tree (every bus event as JSON lines).
        handle_signals: SIGINT/SIGTERM end the window early (the report is still made).
        progress_every_s: Interval of ``on_progress`` calls.
        on_progress: Called with a :class:`SoakTick` (e.g. to print a line).
        tls: The simulator serves its streams and WS API over TLS with a certificate from a
            throw-away CA (:func:`~genesis.sim.testing.loopback_tls`), which the tree trusts
            through ``SSL_CERT_FILE`` while the soak runs (needs ``trustme``).

    Returns:
        The report; check :attr:`RealSoakReport.ok`.

    Raises:
        ValueError: a bad profile or duration.
        Exception: whatever crashed the tree.

    Everything it starts runs in its own nursery and is cancelled before it returns.
    """
    if not duration_s > 0 or settle_s < 0 or not progress_every_s > 0:
        raise ValueError("duration_s and progress_every_s must be > 0, settle_s >= 0")
    fault_profile = profile_of(profile)
    if settings is None:
        settings = Settings(symbols=tuple(symbols), order_book=tuple(order_book))
    counter = _LogCounter()
    root_logger = logging.getLogger("genesis")
    root_logger.addHandler(counter)
    # The reconnect delays are INFO records: let them through to the counter (handlers
    # configured elsewhere keep their own levels).
    ws_logger = logging.getLogger("genesis.exchange.ws_manager")
    ws_level = ws_logger.level
    if ws_logger.getEffectiveLevel() > logging.INFO:
        ws_logger.setLevel(logging.INFO)
    try:
        with contextlib.ExitStack() as stack:
            sim_ssl_context = None
            if tls:
                made = stack.enter_context(loopback_tls())
                stack.enter_context(trusted_by_default(made))
                sim_ssl_context = made.server_context
            return await _soak(
                settings,
                duration_s,
                fault_profile,
                seed,
                settle_s,
                record_path,
                handle_signals,
                progress_every_s,
                on_progress,
                counter,
                sim_ssl_context,
            )
    finally:
        root_logger.removeHandler(counter)
        ws_logger.setLevel(ws_level)


async def _soak(
    settings: Settings,
    duration_s: float,
    fault_profile: FaultProfile,
    seed: int,
    settle_s: float,
    record_path: str | None,
    handle_signals: bool,
    progress_every_s: float,
    on_progress: Callable[[SoakTick], None] | None,
    counter: _LogCounter,
    sim_ssl_context: ssl.SSLContext | None,
) -> RealSoakReport:
    tally = Tally()
    window = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        if handle_signals:
            await nursery.start(watch_signals, window)
        handle: GenesisHandle = await nursery.start(
            partial(
                run_genesis,
                settings,
                record_path=record_path,
                sim_seed=seed,
                sim_ssl_context=sim_ssl_context,
                handle_signals=False,
            )
        )
        assert handle.simulator is not None, "the soak runs against the embedded simulator"
        sim: Simulator = handle.simulator.sim
        truth = Truth(sim, {s: market_streams([s])[0] for s in settings.symbols})
        sampler = Sampler(sim)
        rss = [_rss_mib()]
        remove_listener = sim.exchange.add_trade_listener(truth.on_trades)
        try:
            nursery.start_soon(_tally, tally, handle.bus.subscribe(object, buffer_size=_BUS_BUFFER))
            nursery.start_soon(truth.check_survivors)
            nursery.start_soon(_sample, sampler, rss)
            started_at = datetime.now(UTC).isoformat(timespec="seconds")
            start = trio.current_time()
            rss_start = rss[0]
            truth.start = start
            truth.recording = True
            tally.open_window(start)
            logger.info(
                "soak.start profile=%s seed=%d duration_s=%g symbols=%s",
                fault_profile.name,
                seed,
                duration_s,
                ",".join(settings.symbols),
            )
            async with trio.open_nursery() as faults_nursery:
                schedule: FaultSchedule = await faults_nursery.start(
                    partial(run_fault_profile, sim.faults, fault_profile, seed=seed)
                )
                with window:
                    window.deadline = start + duration_s
                    next_progress = start + progress_every_s
                    while True:
                        await trio.sleep_until(min(next_progress, window.deadline))
                        if on_progress is not None:
                            on_progress(_tick(handle, truth, tally, start, rss[0]))
                        next_progress += progress_every_s
                end = trio.current_time()
                truth.recording = False
                tally.close_window(end)
                faults_nursery.cancel_scope.cancel()
            sim.faults.reset()
            logger.info("soak.settle seconds=%g", settle_s)
            await trio.sleep(settle_s)
            statistics = handle.market_data.statistics()
            lost = losses(truth, tally)
            record = check_record(sim, truth, tally)
            bus_dropped = handle.bus.statistics().dropped
            order_books = (
                {}
                if handle.order_books is None
                else {
                    row.symbol: {
                        "gaps": row.gaps,
                        "syncs": row.syncs,
                        "snapshots": row.snapshots,
                        "snapshot_errors": row.snapshot_errors,
                        "applied": row.applied,
                        "published": row.published,
                    }
                    for row in handle.order_books.statistics()
                }
            )
        finally:
            remove_listener()
        nursery.cancel_scope.cancel()
    merger = statistics.merger
    samples = sorted(lost.in_flight_samples + lost.while_up_samples)
    report = RealSoakReport(
        started_at=started_at,
        duration_s=round(end - start, 3),
        stopped_early=end - start < duration_s - 0.5,
        profile=fault_profile.name,
        seed=seed,
        symbols=settings.symbols,
        settle_s=settle_s,
        events_by_kind=dict(sorted(tally.events.items())),
        trades_published=truth.published,
        trades_lost=lost.total,
        trades_lost_in_outage=lost.outage,
        trades_lost_in_flight=lost.in_flight,
        trades_lost_while_up=lost.while_up,
        lost_samples=tuple(samples[:LOST_SAMPLES]),
        trades_in_record=record.trades_in_record,
        trades_delivered=record.trades_delivered,
        trades_unrecorded=record.trades_unrecorded,
        duplicated=dict(sorted(tally.duplicates.items())),
        out_of_order=dict(sorted(tally.out_of_order.items())),
        late_kline_closes=tally.late_kline_closes,
        longest_gap_s=round(tally.longest_gap_s, 3),
        longest_gap_end_s=round(tally.longest_gap_end_s, 3),
        uncovered_s=sampler.uncovered_s,
        reconnects={c.role: c.reconnects for c in statistics.connections},
        rotations={c.role: c.rotations for c in statistics.connections},
        largest_backoff_s=counter.largest_backoff_s,
        rss_start_mib=round(rss_start, 1),
        rss_end_mib=round(_rss_mib(), 1),
        rss_peak_mib=round(_peak_rss_mib(), 1),
        errors_by_kind=dict(sorted(counter.by_kind.items())),
        faults=dict(sorted(schedule.injected.items())),
        merger=merger_counts(merger),
        bus_dropped=bus_dropped,
        order_books=order_books,
        tls=sim_ssl_context is not None,
    )
    logger.log(
        logging.INFO if report.ok else logging.WARNING,
        "soak.done ok=%s published=%d lost=%d duplicated=%d out_of_order=%d",
        report.ok,
        report.trades_published,
        report.trades_lost,
        sum(report.duplicated.values()),
        sum(report.out_of_order.values()),
    )
    return report


def _tick(handle: GenesisHandle, truth: Truth, tally: Tally, start: float, rss: float) -> SoakTick:
    statistics = handle.market_data.statistics()
    return SoakTick(
        elapsed_s=round(trio.current_time() - start, 1),
        trades_published=truth.published,
        events=tally.events_total,
        reconnects=sum(c.reconnects for c in statistics.connections),
        rss_mib=round(rss, 1),
    )
