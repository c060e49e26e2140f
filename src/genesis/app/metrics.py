"""Prometheus metrics on ``http://127.0.0.1:9108/metrics`` (``--metrics-port``, ``--no-metrics``).

```
run_metrics                      (nursery.start → MetricsHandle)
├── observer    bus subscriber: feed latency histograms, order updates by status
└── server      a small HTTP/1.1 server on Trio: GET /metrics → the text exposition
```

Most figures are read at scrape time from the components' own ``statistics()`` by one custom
collector (:class:`MetricsSources` names them), so nothing is counted twice and a scrape always
agrees with the heartbeat log. The server is a Trio task, not prometheus-client's thread: the
collector then reads the components from the Trio thread that changes them (no races), and the
server is a child of the tree like any other task. A scrape costs well under a millisecond for
a few symbols, so it never holds up the loop noticeably.

Every exporter uses its own :class:`prometheus_client.CollectorRegistry`, never the global
default, so two trees in one process (tests, a bridge) never collide.

A port that is already taken is a WARNING and the run goes on without metrics, so a second
instance on one host never fails for it. Only loopback by default: the figures name symbols and
limits, not secrets, but a metrics port is not for the Internet.

Names (all prefixed ``genesis_``): ``connection_state{role,state}``,
``connection_frames_total{role}``, ``connection_reconnects_total{role}``,
``connection_rotations_total{role}``, ``connection_last_frame_age_seconds{role}``,
``connection_ping_rtt_seconds{role}``; ``bus_events_published_total{kind}``,
``bus_events_delivered_total{kind}``, ``bus_events_dropped_total{kind}``, ``bus_subscribers``;
``merger_frames_total``, ``merger_duplicates_total``, ``merger_gaps_total``,
``merger_backfills_total``, ``merger_catch_ups_total``, ``merger_backfill_failures_total``,
``merger_backfilled_trades_total``;
``feed_latency_seconds{kind}`` (histogram); ``breaker_state{name,state}``,
``breaker_transitions_total{name}``, ``breaker_rejected_total{name}``;
``limiter_used{bucket}``, ``limiter_budget{bucket}``, ``limiter_limit{bucket}``,
``limiter_usage_ratio{bucket}``, ``limiter_admitted_total``, ``limiter_waited_total``,
``limiter_queued``, ``limiter_longest_wait_seconds``; ``rest_requests_total{outcome}``;
``order_updates_total{status}``; ``errors_total{kind}``; ``clock_offset_seconds``,
``clock_offset_uncertainty_seconds``; ``alerts_total{kind}``, ``alerts_active``;
``market_state{symbol,state}``; ``order_side_state{service,state}``,
``order_side_crashes_total{service}``, ``order_side_restarts_total{service}`` (the supervised
reconciler and user data stream, app/supervisor.py).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Final, NoReturn

import attrs
import trio
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from genesis.app.supervisor import SupervisedState
from genesis.models.events import BreakerState, ConnectionState, OrderUpdate
from genesis.models.market import Depth, Kline, Ticker, Trade
from genesis.models.state import MarketCondition

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping

    from prometheus_client.metrics_core import Metric

    from genesis.app.alerts import AlertStatistics
    from genesis.app.supervisor import SupervisorStatistics
    from genesis.bus import EventBus
    from genesis.exchange.gateway import GatewayStatistics
    from genesis.exchange.ws_manager import MarketDataStatistics
    from genesis.models.state import MarketState
    from genesis.resilience.circuit_breaker import BreakerStatistics

__all__ = [
    "DEFAULT_METRICS_HOST",
    "DEFAULT_METRICS_PORT",
    "LATENCY_BUCKETS_S",
    "MetricsHandle",
    "MetricsSources",
    "build_registry",
    "run_metrics",
]

logger = logging.getLogger(__name__)

DEFAULT_METRICS_HOST: Final = "127.0.0.1"
DEFAULT_METRICS_PORT: Final = 9108
LATENCY_BUCKETS_S: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
REQUEST_HEAD_MAX: Final = 8192
REQUEST_TIMEOUT_S: Final = 5.0
OBSERVER_BUFFER: Final = 4096
OFFSET_REFRESH_S: Final = 1.0


@attrs.frozen(kw_only=True)
class MetricsSources:
    """Where the scrape-time figures come from; each ``None`` leaves its metrics out.

    Attributes:
        bus: the event bus (its statistics; the observer subscribes to it).
        market_data: the market-data handle's ``statistics``.
        gateway: the REST gateway's ``statistics`` (limiter, breaker "rest", clock, errors).
        breakers: every circuit breaker's ``statistics`` by surface name.
        alerts: the alert task's ``statistics``.
        market_states: the latest MarketState per symbol.
        order_side: each supervised order-side service's ``statistics`` by name.
    """

    bus: EventBus
    market_data: Callable[[], MarketDataStatistics] | None = None
    gateway: Callable[[], GatewayStatistics] | None = None
    breakers: Mapping[str, Callable[[], BreakerStatistics]] = attrs.field(factory=dict)
    alerts: Callable[[], AlertStatistics] | None = None
    market_states: Callable[[], Mapping[str, MarketState]] | None = None
    order_side: Mapping[str, Callable[[], SupervisorStatistics]] = attrs.field(factory=dict)


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"genesis_{name}", doc, labels=list(labels))


def _counter(name: str, doc: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(f"genesis_{name}", doc, labels=list(labels))


class _StatisticsCollector(Collector):
    """Reads every source's statistics at scrape time."""

    def __init__(self, sources: MetricsSources) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        s = self._sources
        yield from self._bus(s.bus)
        if s.market_data is not None:
            yield from self._market_data(s.market_data())
        breakers = {name: stats() for name, stats in s.breakers.items()}
        gateway = s.gateway() if s.gateway is not None else None
        if gateway is not None:
            breakers.setdefault(gateway.breaker.name, gateway.breaker)
            yield from self._gateway(gateway)
        yield from self._breakers(breakers)
        yield from self._errors(s, gateway)
        if s.alerts is not None:
            yield from self._alerts(s.alerts())
        if s.market_states is not None:
            states = _gauge(
                "market_state", "1 for the state each symbol is in", ["symbol", "state"]
            )
            for symbol, state in sorted(s.market_states().items()):
                for condition in MarketCondition:
                    states.add_metric([symbol, condition.value], float(state.state is condition))
            yield states
        if s.order_side:
            yield from self._order_side({name: stats() for name, stats in s.order_side.items()})

    def _bus(self, bus: EventBus) -> Iterator[Metric]:
        stats = bus.statistics()
        for name, doc, by_type in (
            ("bus_events_published_total", "events accepted by the bus", stats.published_by_type),
            (
                "bus_events_delivered_total",
                "events received by subscribers",
                stats.delivered_by_type,
            ),
            (
                "bus_events_dropped_total",
                "events discarded by an overflow policy (per subscriber)",
                stats.dropped_by_type,
            ),
        ):
            family = _counter(name.removesuffix("_total"), doc, ["kind"])
            for kind, count in sorted(by_type.items()):
                family.add_metric([kind], count)
            yield family
        subscribers = _gauge("bus_subscribers", "subscriptions open on the bus")
        subscribers.add_metric([], stats.subscribers)
        yield subscribers

    def _market_data(self, stats: MarketDataStatistics) -> Iterator[Metric]:
        state = _gauge("connection_state", "1 for the state each role is in", ["role", "state"])
        frames = _counter("connection_frames", "frames received", ["role"])
        reconnects = _counter("connection_reconnects", "reconnects after failures", ["role"])
        rotations = _counter("connection_rotations", "make-before-break rotations", ["role"])
        age = _gauge("connection_last_frame_age_seconds", "age of the newest frame", ["role"])
        rtt = _gauge("connection_ping_rtt_seconds", "last active ping round trip", ["role"])
        for c in stats.connections:
            for candidate in ConnectionState:
                state.add_metric([c.role, candidate.value], float(c.state is candidate))
            frames.add_metric([c.role], c.messages_received)
            reconnects.add_metric([c.role], c.reconnects)
            rotations.add_metric([c.role], c.rotations)
            if c.last_frame_age_s is not None:
                age.add_metric([c.role], c.last_frame_age_s)
            if c.ping_rtt_ms is not None:
                rtt.add_metric([c.role], c.ping_rtt_ms / 1000)
        yield from (state, frames, reconnects, rotations, age, rtt)
        m = stats.merger
        for name, doc, value in (
            ("merger_frames", "frames from all connections", m.frames),
            (
                "merger_duplicates",
                "copies dropped (another connection was first)",
                m.duplicates_dropped,
            ),
            ("merger_gaps", "trade id holes no connection filled", m.gaps),
            (
                "merger_backfills",
                "REST backfills asked (holes, closed klines, catch-ups)",
                m.backfills,
            ),
            ("merger_catch_ups", "REST catch-ups after every connection was down", m.catch_ups),
            ("merger_backfill_failures", "backfills that failed or timed out", m.backfill_failures),
            ("merger_backfilled_trades", "trades published from REST", m.backfilled_trades),
        ):
            family = _counter(name, doc)
            family.add_metric([], value)
            yield family

    def _gateway(self, stats: GatewayStatistics) -> Iterator[Metric]:
        requests = _counter("rest_requests", "REST attempts by outcome", ["outcome"])
        requests.add_metric(["answered"], stats.answered)
        requests.add_metric(["rejected"], stats.rejected)
        requests.add_metric(["failed"], stats.failed)
        yield requests
        limiter = stats.limiter
        used = _gauge("limiter_used", "usage in the current window", ["bucket"])
        budget = _gauge("limiter_budget", "what Genesis allows itself per window", ["bucket"])
        limit = _gauge("limiter_limit", "Binance's limit per window", ["bucket"])
        ratio = _gauge("limiter_usage_ratio", "used / budget", ["bucket"])
        for b in limiter.buckets:
            name = f"{b.type.value} {b.interval}"
            used.add_metric([name], b.used)
            budget.add_metric([name], b.budget)
            limit.add_metric([name], b.limit)
            ratio.add_metric([name], b.used / b.budget if b.budget else 0.0)
        yield from (used, budget, limit, ratio)
        for name, doc, value in (
            ("limiter_admitted", "requests admitted", limiter.admitted_total),
            ("limiter_waited", "admitted requests that queued first", limiter.waited_total),
        ):
            family = _counter(name, doc)
            family.add_metric([], value)
            yield family
        queued = _gauge("limiter_queued", "requests waiting now")
        queued.add_metric([], limiter.queued)
        longest = _gauge("limiter_longest_wait_seconds", "longest queue time so far")
        longest.add_metric([], limiter.longest_wait_ms / 1000)
        offset = _gauge("clock_offset_seconds", "exchange clock minus local clock")
        uncertainty = _gauge("clock_offset_uncertainty_seconds", "bound on the offset's error")
        if stats.time_sync.synced:
            offset.add_metric([], stats.time_sync.offset_ms / 1000)
            uncertainty.add_metric([], stats.time_sync.uncertainty_ms / 1000)
        yield from (queued, longest, offset, uncertainty)

    def _breakers(self, breakers: Mapping[str, BreakerStatistics]) -> Iterator[Metric]:
        state = _gauge("breaker_state", "1 for the state each breaker is in", ["name", "state"])
        transitions = _counter("breaker_transitions", "state changes", ["name"])
        rejected = _counter("breaker_rejected", "calls refused fast", ["name"])
        for name, b in sorted(breakers.items()):
            for candidate in BreakerState:
                state.add_metric([name, candidate.value], float(b.state is candidate))
            transitions.add_metric([name], b.transitions)
            rejected.add_metric([name], b.rejected)
        yield from (state, transitions, rejected)

    def _errors(self, s: MetricsSources, gateway: GatewayStatistics | None) -> Iterator[Metric]:
        errors = _counter("errors", "errors by kind", ["kind"])
        if gateway is not None:
            errors.add_metric(["rest_rejected"], gateway.rejected)
            errors.add_metric(["rest_failed"], gateway.failed)
            errors.add_metric(["rest_429"], gateway.rate_limited)
            errors.add_metric(["rest_418"], gateway.ip_banned)
            errors.add_metric(["rest_unknown_outcome"], gateway.unknown_outcomes)
            errors.add_metric(["rest_resync_1021"], gateway.resyncs)
        if s.market_data is not None:
            merger = s.market_data().merger
            errors.add_metric(["feed_decode"], merger.decode_errors)
            errors.add_metric(["feed_bus_rejected"], merger.bus_rejected)
        if s.alerts is not None:
            alerts = s.alerts()
            errors.add_metric(["alert_command_failed"], alerts.command_failures)
            errors.add_metric(["alert_command_dropped"], alerts.command_dropped)
        yield errors

    def _order_side(self, services: Mapping[str, SupervisorStatistics]) -> Iterator[Metric]:
        state = _gauge(
            "order_side_state",
            "1 for the state each supervised service is in",
            ["service", "state"],
        )
        crashes = _counter("order_side_crashes", "crashes after the first start", ["service"])
        restarts = _counter("order_side_restarts", "restarts after a crash", ["service"])
        for name, stats in sorted(services.items()):
            for candidate in SupervisedState:
                state.add_metric([name, candidate.value], float(stats.state is candidate))
            crashes.add_metric([name], stats.crashes)
            restarts.add_metric([name], stats.restarts)
        yield from (state, crashes, restarts)

    def _alerts(self, stats: AlertStatistics) -> Iterator[Metric]:
        total = _counter("alerts", "alerts seen on the bus", ["kind"])
        for kind, count in sorted(stats.raised_by_kind.items()):
            total.add_metric([kind], count)
        active = _gauge("alerts_active", "alert conditions raised and not cleared")
        active.add_metric([], len(stats.active))
        yield from (total, active)


@attrs.frozen(kw_only=True)
class _Live:
    """The metrics the observer updates event by event."""

    latency: Histogram
    order_updates: Counter


def build_registry(sources: MetricsSources) -> tuple[CollectorRegistry, _Live]:
    """A fresh registry with the scrape-time collector and the observer's live metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatisticsCollector(sources))
    live = _Live(
        latency=Histogram(
            "genesis_feed_latency_seconds",
            "exchange event time E (offset-corrected) to a bus subscriber; depth: frame receipt "
            "to a bus subscriber",
            ["kind"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        ),
        order_updates=Counter(
            "genesis_order_updates",
            "order updates published, by the order's status",
            ["status"],
            registry=registry,
        ),
    )
    return registry, live


@attrs.define(eq=False)
class MetricsHandle:
    """What :func:`run_metrics` hands to ``nursery.start``.

    Attributes:
        registry: the exporter's own registry (``generate_latest(handle.registry)``).
        port: the port it serves on, ``None`` when it could not bind (then no server runs).
        scrapes: ``/metrics`` requests answered.
    """

    registry: CollectorRegistry
    port: int | None
    scrapes: int = 0

    @property
    def url(self) -> str | None:
        return None if self.port is None else f"http://{DEFAULT_METRICS_HOST}:{self.port}/metrics"


def _wall_ms() -> float:
    return time.time_ns() / 1_000_000


async def run_metrics(
    sources: MetricsSources,
    *,
    port: int = DEFAULT_METRICS_PORT,
    host: str = DEFAULT_METRICS_HOST,
    wall_clock_ms: Callable[[], float] = _wall_ms,
    task_status: trio.TaskStatus[MetricsHandle] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve the metrics of ``sources`` until cancelled.

    Args:
        sources: where the figures come from.
        port: TCP port (``0``: any free one, see ``handle.port``).
        host: the address to bind (loopback by default).
        wall_clock_ms: epoch ms, for the feed latency of each event.
        task_status: receives a :class:`MetricsHandle` once it serves (or once it knows it
            cannot: the port is taken, logged at WARNING; it then only keeps its place).
    """
    registry, live = build_registry(sources)
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        logger.warning(
            "metrics.unavailable host=%s port=%d error=%s: running without metrics",
            host,
            port,
            exc.strerror or type(exc).__name__,
        )
        task_status.started(MetricsHandle(registry=registry, port=None))
        await trio.sleep_forever()
    bound = listeners[0].socket.getsockname()[1]
    handle = MetricsHandle(registry=registry, port=bound)
    async with trio.open_nursery() as nursery:
        await nursery.start(_observe, sources, live, wall_clock_ms)
        await nursery.start(
            trio.serve_listeners, lambda stream: _serve_one(stream, handle), listeners
        )
        logger.info("metrics.serving url=http://%s:%d/metrics", host, bound)
        task_status.started(handle)
        await trio.sleep_forever()
    raise AssertionError("unreachable")  # pragma: no cover


async def _observe(
    sources: MetricsSources,
    live: _Live,
    wall_clock_ms: Callable[[], float],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    subscription = sources.bus.subscribe(
        Trade, Kline, Ticker, Depth, OrderUpdate, buffer_size=OBSERVER_BUFFER
    )
    histograms: dict[type, Histogram] = {
        cls: live.latency.labels(cls.__name__.lower()) for cls in (Trade, Kline, Ticker, Depth)
    }
    offset_ms = 0.0
    offset_at = -float("inf")
    async with subscription:
        task_status.started()
        async for event in subscription:
            now_ms = wall_clock_ms()
            if isinstance(event, OrderUpdate):
                live.order_updates.labels(event.order.status.value).inc()
            elif isinstance(event, Depth):
                histograms[Depth].observe(max(0.0, now_ms - event.received_ms) / 1000)
            elif isinstance(event, Trade | Kline | Ticker):
                if sources.gateway is not None and trio.current_time() - offset_at >= 1:
                    offset_at = trio.current_time()
                    sync = sources.gateway().time_sync
                    offset_ms = sync.offset_ms if sync.synced else 0.0
                latency_ms = now_ms + offset_ms - event.event_time_ms
                histograms[type(event)].observe(max(0.0, latency_ms) / 1000)


async def _serve_one(stream: trio.SocketStream, handle: MetricsHandle) -> None:
    async with stream:
        head = b""
        with trio.move_on_after(REQUEST_TIMEOUT_S):
            while b"\r\n\r\n" not in head and len(head) < REQUEST_HEAD_MAX:
                try:
                    chunk = await stream.receive_some(4096)
                except trio.BrokenResourceError:
                    return
                if not chunk:
                    break
                head += chunk
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            status, content_type, body = "400 Bad Request", "text/plain", b"bad request\n"
        elif parts[0] not in ("GET", "HEAD"):
            status, content_type, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
        elif parts[1].split("?", 1)[0] == "/metrics":
            handle.scrapes += 1
            status, content_type, body = (
                "200 OK",
                CONTENT_TYPE_LATEST,
                generate_latest(handle.registry),
            )
        elif parts[1] == "/":
            status, content_type, body = "200 OK", "text/plain", b"genesis: see /metrics\n"
        else:
            status, content_type, body = "404 Not Found", "text/plain", b"not found\n"
        response = (
            f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode("latin-1")
        if parts[0] != "HEAD":
            response += body
        try:
            await stream.send_all(response)
        except trio.BrokenResourceError:
            return
