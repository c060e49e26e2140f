"""The heartbeat task: a periodic health report of the market-data connections.

Every ``interval_s`` (30 s by default, on a fixed grid that does not drift) it logs one line per
connection (role, state, uptime, messages per second, latency, last-frame age, ping round trip,
reconnects, rotations, last error), one line of merger counters (backfills and catch-ups
included) and, when given a bus, one line of bus counters. A connection that is not
connected, or stale (its depth20 went silent), is reported at WARNING, the rest at INFO.

Given a ``prober`` (the market-data handle), each report is preceded by an active ping of every
connection (:meth:`~genesis.exchange.ws_manager.MarketDataHandle.probe_connections`), whose
round trip the report shows. Given ``publish`` (``bus.publish``), every connection's
:class:`~genesis.models.events.ConnectionHealth` goes on the bus with each report.

Given the order side's supervision records (``order_side``), each report adds one line per
supervised service (state, crashes, restarts, last error); one that is not running, or has
crashed since the last report, is a WARNING.

Given the REST gateway, each report adds one line of gateway state (breaker, limiter usage,
clock offset), and every ``time_sync_interval_s`` (5 minutes) the heartbeat refreshes the
gateway's clock offset from fresh ``GET /api/v3/time`` samples. A failed refresh is a WARNING
and the old offset stays; it never ends the task. A breaker that is not closed is a WARNING.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final, NoReturn, Protocol

import trio

from genesis.errors import GenesisError
from genesis.exchange.ws_manager import ConnectionState
from genesis.models.events import BreakerState

if TYPE_CHECKING:
    import enum
    from collections.abc import Awaitable, Callable, Sequence

    from genesis.bus import BusStatistics
    from genesis.exchange.gateway import GatewayStatistics
    from genesis.exchange.time_sync import TimeSyncStatistics
    from genesis.exchange.user_stream import UserStreamStatistics
    from genesis.exchange.ws_manager import MarketDataStatistics

__all__ = [
    "HEARTBEAT_INTERVAL_S",
    "TIME_SYNC_INTERVAL_S",
    "BusStatisticsSource",
    "ConnectionProber",
    "GatewaySource",
    "HealthSource",
    "SupervisedSource",
    "SupervisedStatistics",
    "UserStreamSource",
    "log_gateway",
    "log_health",
    "log_order_side",
    "log_user_stream",
    "run_heartbeat",
]

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S: Final = 30.0
TIME_SYNC_INTERVAL_S: Final = 300.0


class HealthSource(Protocol):
    """Anything with market-data statistics, like :class:`.ws_manager.MarketDataHandle`."""

    def statistics(self) -> MarketDataStatistics: ...


class ConnectionProber(Protocol):
    """Pings every connection and records the round trips (the market-data handle)."""

    async def probe_connections(self) -> None: ...


class BusStatisticsSource(Protocol):
    """Anything with bus statistics (:class:`~genesis.bus.EventBus`)."""

    def statistics(self) -> BusStatistics: ...


class UserStreamSource(Protocol):
    """Anything with user-stream statistics (:class:`.user_stream.UserStreamHandle`)."""

    def statistics(self) -> UserStreamStatistics: ...


class SupervisedStatistics(Protocol):
    """What the heartbeat reads of a supervised service
    (:class:`~genesis.app.supervisor.SupervisorStatistics`)."""

    @property
    def name(self) -> str: ...
    @property
    def state(self) -> enum.Enum: ...
    @property
    def crashes(self) -> int: ...
    @property
    def restarts(self) -> int: ...
    @property
    def last_error(self) -> str | None: ...


class SupervisedSource(Protocol):
    """A supervised service's record (:class:`~genesis.app.supervisor.Supervision`)."""

    def statistics(self) -> SupervisedStatistics: ...


def log_order_side(sources: Sequence[SupervisedSource], crashes_before: dict[str, int]) -> None:
    """Log one line per supervised order-side service.

    WARNING while it is not running (starting again, or waiting to restart), or when it crashed
    since the last report (``crashes_before``: the crash counts seen then, updated here), so a
    crash and restart between two reports still shows; INFO otherwise.
    """
    for source in sources:
        stats = source.statistics()
        crashed = stats.crashes > crashes_before.get(stats.name, 0)
        crashes_before[stats.name] = stats.crashes
        level = logging.INFO if stats.state.value == "running" and not crashed else logging.WARNING
        logger.log(
            level,
            "heartbeat.order_side service=%s state=%s crashes=%d restarts=%d last_error=%s",
            stats.name,
            stats.state.value,
            stats.crashes,
            stats.restarts,
            stats.last_error or "-",
        )


def log_user_stream(source: UserStreamSource) -> None:
    """Log one line of user-stream state (WARNING unless subscribed: order reports are not
    arriving, and orders fall back to REST queries for their outcome)."""
    stats = source.statistics()
    level = logging.INFO if stats.subscribed else logging.WARNING
    logger.log(
        level,
        "heartbeat.user_stream state=%s uptime_s=%.0f reconnects=%d rejections=%d gaps=%d "
        "malformed=%d last_error=%s",
        stats.state.value,
        stats.uptime_s,
        stats.reconnects,
        stats.rejections,
        stats.gaps,
        stats.malformed,
        stats.last_error or "-",
    )


class GatewaySource(Protocol):
    """The part of :class:`~genesis.exchange.gateway.Gateway` the heartbeat reads and drives."""

    def statistics(self) -> GatewayStatistics: ...

    async def sync_time(self) -> TimeSyncStatistics: ...


def log_gateway(gateway: GatewaySource) -> None:
    """Log one line of gateway state (WARNING while its breaker is not closed)."""
    stats = gateway.statistics()
    breaker = stats.breaker
    usage = " ".join(
        f"{b.type.value}/{b.interval}={b.used}/{b.limit}" for b in stats.limiter.buckets
    )
    level = logging.INFO if breaker.state is BreakerState.CLOSED else logging.WARNING
    logger.log(
        level,
        "heartbeat.gateway breaker=%s requests=%d failed=%d unknown=%d offset_ms=%s "
        "uncertainty_ms=%s queued=%d usage=%s",
        breaker.state.value,
        stats.requests,
        stats.failed,
        stats.unknown_outcomes,
        stats.time_sync.offset_ms,
        stats.time_sync.uncertainty_ms,
        stats.limiter.queued,
        usage,
    )


async def _refresh_time(gateway: GatewaySource) -> None:
    try:
        await gateway.sync_time()
    except GenesisError as exc:
        logger.warning("heartbeat.time_sync_failed error=%s: %s", type(exc).__name__, exc)


def _optional(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def log_health(
    source: HealthSource, bus: BusStatisticsSource | None = None
) -> MarketDataStatistics:
    """Log one health report now (what each heartbeat does); returns the statistics logged."""
    stats = source.statistics()
    for conn in stats.connections:
        healthy = conn.state is ConnectionState.CONNECTED and not conn.stale
        level = logging.INFO if healthy else logging.WARNING
        logger.log(
            level,
            "heartbeat.connection role=%s state=%s%s uptime_s=%.0f msg_per_s=%.1f latency_ms=%s "
            "last_frame_age_s=%s ping_rtt_ms=%s first_share=%.2f reconnects=%d rotations=%d "
            "last_error=%s",
            conn.role,
            conn.state.value,
            " stale" if conn.stale else "",
            conn.uptime_s,
            conn.messages_per_s,
            "-" if conn.latency_ms is None else conn.latency_ms,
            _optional(conn.last_frame_age_s, ".1f"),
            _optional(conn.ping_rtt_ms, ".1f"),
            conn.first_share,
            conn.reconnects,
            conn.rotations,
            conn.last_error or "-",
        )
    merger = stats.merger
    logger.info(
        "heartbeat.merger frames=%d published=%d duplicates=%d gaps=%d decode_errors=%d held=%d "
        "backfills=%d catch_ups=%d backfill_failures=%d",
        merger.frames,
        merger.published,
        merger.duplicates_dropped,
        merger.gaps,
        merger.decode_errors,
        merger.held,
        merger.backfills,
        merger.catch_ups,
        merger.backfill_failures,
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
    return stats


async def run_heartbeat(
    source: HealthSource,
    bus: BusStatisticsSource | None = None,
    interval_s: float = HEARTBEAT_INTERVAL_S,
    *,
    gateway: GatewaySource | None = None,
    user_stream: UserStreamSource | None = None,
    time_sync_interval_s: float = TIME_SYNC_INTERVAL_S,
    prober: ConnectionProber | None = None,
    publish: Callable[[object], Awaitable[None]] | None = None,
    order_side: Sequence[SupervisedSource] = (),
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Log the health of ``source`` (and ``bus``, ``gateway``) every ``interval_s``.

    The first report comes ``interval_s`` after the start, then one every ``interval_s`` on a
    fixed grid. With a gateway, its clock offset is refreshed every ``time_sync_interval_s``
    (on the same grid, before that report).

    Args:
        source: the market-data handle.
        bus: the event bus, for its counters; ``None`` to leave them out.
        interval_s: seconds between reports.
        gateway: the REST gateway, for its state and time sync; ``None`` for none.
        user_stream: the user data stream, for its state; ``None`` for none.
        time_sync_interval_s: seconds between time syncs.
        prober: pings every connection before each report (the market-data handle).
        publish: where each report's ``ConnectionHealth`` events go (``bus.publish``).
        order_side: the supervision records of the order side (reconciler, user stream).
        task_status: ``started()`` at once; the task holds no resources.
    """
    if not interval_s > 0:
        raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
    if not time_sync_interval_s > 0:
        raise ValueError(f"time_sync_interval_s must be > 0, got {time_sync_interval_s!r}")
    task_status.started()
    start = trio.current_time()
    next_at = start + interval_s
    next_sync_at = start + time_sync_interval_s
    crashes_seen: dict[str, int] = {}
    while True:
        await trio.sleep_until(min(next_at, next_sync_at) if gateway is not None else next_at)
        now = trio.current_time()
        if gateway is not None and now >= next_sync_at:
            next_sync_at += time_sync_interval_s
            await _refresh_time(gateway)
        if now >= next_at:
            next_at += interval_s
            if prober is not None:
                await prober.probe_connections()
            stats = log_health(source, bus)
            if publish is not None:
                for conn in stats.connections:
                    await publish(conn)
            if gateway is not None:
                log_gateway(gateway)
            if user_stream is not None:
                log_user_stream(user_stream)
            if order_side:
                log_order_side(order_side, crashes_seen)
