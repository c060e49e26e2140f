"""The heartbeat task: a periodic health report of the market-data connections.

Every ``interval_s`` (30 s by default, on a fixed grid that does not drift) it logs one line per
connection (role, state, uptime, messages per second, latency, reconnects, rotations, last
error), one line of merger counters and, when given a bus, one line of bus counters. A
connection that is not connected is reported at WARNING, the rest at INFO.

Only reporting for now; liveness probes, RTT and time sync (ARCHITECTURE.md §1) come later.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final, NoReturn, Protocol

import trio

from genesis.exchange.ws_manager import ConnectionState

if TYPE_CHECKING:
    from genesis.bus import BusStatistics
    from genesis.exchange.ws_manager import MarketDataStatistics

__all__ = [
    "HEARTBEAT_INTERVAL_S",
    "BusStatisticsSource",
    "HealthSource",
    "log_health",
    "run_heartbeat",
]

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S: Final = 30.0


class HealthSource(Protocol):
    """Anything with market-data statistics, like :class:`.ws_manager.MarketDataHandle`."""

    def statistics(self) -> MarketDataStatistics: ...


class BusStatisticsSource(Protocol):
    """Anything with bus statistics (:class:`~genesis.bus.EventBus`)."""

    def statistics(self) -> BusStatistics: ...


def log_health(source: HealthSource, bus: BusStatisticsSource | None = None) -> None:
    """Log one health report now (what each heartbeat does)."""
    stats = source.statistics()
    for conn in stats.connections:
        level = logging.INFO if conn.state is ConnectionState.CONNECTED else logging.WARNING
        logger.log(
            level,
            "heartbeat.connection role=%s state=%s uptime_s=%.0f msg_per_s=%.1f latency_ms=%s "
            "reconnects=%d rotations=%d last_error=%s",
            conn.role,
            conn.state.value,
            conn.uptime_s,
            conn.messages_per_s,
            "-" if conn.latency_ms is None else conn.latency_ms,
            conn.reconnects,
            conn.rotations,
            conn.last_error or "-",
        )
    merger = stats.merger
    logger.info(
        "heartbeat.merger frames=%d published=%d duplicates=%d gaps=%d decode_errors=%d held=%d",
        merger.frames,
        merger.published,
        merger.duplicates_dropped,
        merger.gaps,
        merger.decode_errors,
        merger.held,
    )
    if bus is not None:
        bus_stats = bus.statistics()
        logger.info(
            "heartbeat.bus published=%d delivered=%d dropped=%d subscribers=%d",
            bus_stats.published,
            bus_stats.delivered,
            bus_stats.dropped,
            bus_stats.subscribers,
        )


async def run_heartbeat(
    source: HealthSource,
    bus: BusStatisticsSource | None = None,
    interval_s: float = HEARTBEAT_INTERVAL_S,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Log the health of ``source`` (and ``bus``) every ``interval_s`` until cancelled.

    The first report comes ``interval_s`` after the start, then one every ``interval_s`` on a
    fixed grid.

    Args:
        source: the market-data handle.
        bus: the event bus, for its counters; ``None`` to leave them out.
        interval_s: seconds between reports.
        task_status: ``started()`` at once; the task holds no resources.
    """
    if not interval_s > 0:
        raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
    task_status.started()
    next_at = trio.current_time() + interval_s
    while True:
        await trio.sleep_until(next_at)
        next_at += interval_s
        log_health(source, bus)
