"""Alerts: conditions a person on call must see, as typed ``Alert`` events, log lines and counts.

```
run_alerts                       (nursery.start → AlertHandle)
├── watcher     bus (breaker, feed, market data) + gateway statistics every check_s → Alert
├── reporter    every Alert on the bus (ours and other producers') → log + count (+ command)
└── [command]   --alert-command CMD, one run per alert, JSON on stdin, bounded queue + timeout
```

The watcher raises one alert per *condition* (kind + subject) and raises it again only after
the condition has cleared (de-duplication):

==================  ======================================================  ===================
kind                raised when                                            cleared when
==================  ======================================================  ===================
breaker_open        a ``BreakerTransition`` to OPEN (subject: breaker)     it closes again
limiter_high        a limiter bucket's usage ≥ 80 % of its budget          below 70 %
rate_limited        the gateway counted a new HTTP 429                     the 429 hold ends
ip_banned           the gateway counted a new HTTP 418 (CRITICAL)          the ban ends
feed_gap            a ``FeedGap`` (subject ``SYMBOL/stream``); or no       an event of that
                    market event for a symbol for > ``silence_s`` while    symbol (silence);
                    the feed is up (subject ``SYMBOL``); each at most      after ``repeat_s``
                    once per ``repeat_s``
feed_down           ``FeedDown`` (ERROR)                                   ``FeedUp``
clock_offset        the synced clock offset is beyond ±500 ms              back within ±400 ms
==================  ======================================================  ===================

Alerts raised elsewhere (``Alert(kind=RECORDER_FAILED)`` from the recorder, …) are not
re-raised: the reporter logs, counts and commands every ``Alert`` it sees on the bus, ours and
theirs alike, so there is one path for all of them. ``Alert`` is never dropped by the bus, so
the watcher publishes with ``await bus.publish`` (it does not subscribe to ``Alert`` itself, so
it can never wait on its own mailbox).

The command (``--alert-command "notify-pager --team markets"``) gets one alert as a JSON object
(:func:`genesis.models.codec.event_to_record`) on stdin. It never holds up the tree: the
reporter hands alerts to it through a bounded queue (``command_queue``; when full the alert is
dropped for the command only, logged and counted), and each run is killed after
``command_timeout_s``. A failed run (exit status, timeout, not found) is logged and counted.
"""

from __future__ import annotations

import logging
import math
import shlex
import subprocess
import time
from collections import Counter
from typing import TYPE_CHECKING, Final, NoReturn

import attrs
import orjson
import trio

from genesis.models.codec import event_to_record
from genesis.models.events import (
    Alert,
    AlertKind,
    AlertSeverity,
    BreakerState,
    BreakerTransition,
    FeedDown,
    FeedGap,
    FeedUp,
)
from genesis.models.market import Depth, Kline, OrderBook, Ticker, Trade

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from genesis.bus import EventBus, Subscription
    from genesis.exchange.gateway import GatewayStatistics

__all__ = [
    "AlertConfig",
    "AlertHandle",
    "AlertStatistics",
    "parse_alert_command",
    "run_alerts",
]

logger = logging.getLogger(__name__)

_LEVELS: Final = {
    AlertSeverity.WARNING: logging.WARNING,
    AlertSeverity.ERROR: logging.ERROR,
    AlertSeverity.CRITICAL: logging.CRITICAL,
}
_MARKET: Final = (Trade, Kline, Ticker, Depth, OrderBook)
SUBSCRIPTION_SIZE: Final = 4096


@attrs.frozen(kw_only=True)
class AlertConfig:
    """Thresholds and the command's bounds (the module docstring has the rules).

    Attributes:
        check_s: how often gateway statistics and symbol silence are checked.
        limiter_high: usage share of a limiter bucket's budget (the part of Binance's limit
            Genesis allows itself) that raises ``limiter_high``.
        limiter_clear: ... and below which it clears.
        clock_offset_ms: absolute offset that raises ``clock_offset``.
        clock_clear_ms: ... and within which it clears.
        silence_s: no market event of a symbol for this long, while the feed is up, is a
            subscriber-visible gap (Binance's depth streams push every 100 ms, tickers every
            1000 ms, so 1 s of nothing is a gap, not a quiet market).
        repeat_s: a ``FeedGap`` alert of the same subject is raised again only after this.
        command: argv of ``--alert-command``; ``None`` for none.
        command_timeout_s: a run is killed after this.
        command_queue: alerts waiting for the command; more are dropped (counted).
    """

    check_s: float = attrs.field(default=0.5, validator=attrs.validators.gt(0.0))
    limiter_high: float = 0.8
    limiter_clear: float = 0.7
    clock_offset_ms: float = 500.0
    clock_clear_ms: float = 400.0
    silence_s: float = attrs.field(default=1.0, validator=attrs.validators.gt(0.0))
    repeat_s: float = 60.0
    command: tuple[str, ...] | None = None
    command_timeout_s: float = attrs.field(default=10.0, validator=attrs.validators.gt(0.0))
    command_queue: int = attrs.field(default=64, validator=attrs.validators.ge(1))


def parse_alert_command(text: str) -> tuple[str, ...]:
    """``--alert-command`` as argv (shell-like quoting, no shell).

    Raises:
        ValueError: empty, or unbalanced quotes.
    """
    argv = tuple(shlex.split(text))
    if not argv:
        raise ValueError("the alert command is empty")
    return argv


@attrs.frozen(kw_only=True)
class AlertStatistics:
    """Counts since start.

    Attributes:
        raised_by_kind: alerts seen on the bus (ours and other producers'), by kind value.
        by_severity: the same by severity value.
        active: conditions raised by the watcher and not cleared, as ``kind:subject``.
        command_runs: command runs that exited 0.
        command_failures: runs that failed (exit status, timeout, could not start).
        command_dropped: alerts not given to the command because its queue was full.
    """

    raised_by_kind: Mapping[str, int]
    by_severity: Mapping[str, int]
    active: tuple[str, ...]
    command_runs: int
    command_failures: int
    command_dropped: int


@attrs.define(eq=False)
class AlertHandle:
    """The alert tasks' shared state; read it through :meth:`statistics`."""

    config: AlertConfig
    latest: list[Alert] = attrs.field(factory=list)
    """The newest alerts seen on the bus, newest last (at most 20)."""
    active_since: dict[tuple[AlertKind, str], float] = attrs.field(factory=dict)
    """Conditions raised by the watcher and not cleared: (kind, subject) → Trio time raised."""
    _raised: Counter[str] = attrs.field(factory=Counter)
    _severity: Counter[str] = attrs.field(factory=Counter)
    command_runs: int = 0
    command_failures: int = 0
    command_dropped: int = 0
    _seen: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot)

    def statistics(self) -> AlertStatistics:
        return AlertStatistics(
            raised_by_kind=dict(self._raised),
            by_severity=dict(self._severity),
            active=tuple(f"{k.value}:{s}" for k, s in self.active_since),
            command_runs=self.command_runs,
            command_failures=self.command_failures,
            command_dropped=self.command_dropped,
        )

    def is_active(self, kind: AlertKind, subject: str = "") -> bool:
        return (kind, subject) in self.active_since

    async def wait_seen(self, count: int) -> None:
        """Wait until the reporter has seen at least ``count`` alerts (tests, dashboards)."""
        await trio.lowlevel.checkpoint()
        while sum(self._raised.values()) < count:
            await self._seen.park()

    async def wait_command_done(self, count: int) -> None:
        """Wait until ``count`` command runs have ended (succeeded or failed)."""
        await trio.lowlevel.checkpoint()
        while self.command_runs + self.command_failures < count:
            await self._seen.park()

    def changed(self) -> None:
        self._seen.unpark_all()

    def record(self, alert: Alert) -> None:
        self._raised[alert.kind.value] += 1
        self._severity[alert.severity.value] += 1
        self.latest.append(alert)
        del self.latest[:-20]
        self._seen.unpark_all()


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


async def run_alerts(
    bus: EventBus,
    *,
    config: AlertConfig | None = None,
    gateway_statistics: Callable[[], GatewayStatistics] | None = None,
    wall_clock_ms: Callable[[], int] = _wall_ms,
    task_status: trio.TaskStatus[AlertHandle] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Watch for alert conditions, publish ``Alert`` s, and report every alert on the bus.

    Args:
        bus: where conditions are read and alerts are published.
        config: thresholds and the optional command.
        gateway_statistics: the REST gateway's ``statistics`` (limiter, 429/418, clock);
            ``None`` leaves those conditions unwatched.
        wall_clock_ms: epoch ms for ``Alert.at_ms``.
        task_status: receives an :class:`AlertHandle` once both subscriptions are in place.

    Runs until cancelled; a command run in flight is killed on cancellation.
    """
    cfg = config if config is not None else AlertConfig()
    handle = AlertHandle(cfg)
    alerts = bus.subscribe(Alert)
    events = bus.subscribe(
        BreakerTransition, FeedGap, FeedDown, FeedUp, *_MARKET, buffer_size=SUBSCRIPTION_SIZE
    )
    command_send, command_recv = trio.open_memory_channel[Alert](cfg.command_queue)
    watcher = _Watcher(bus, handle, gateway_statistics, wall_clock_ms)
    async with alerts, events, command_send, trio.open_nursery() as nursery:
        nursery.start_soon(watcher.run, events)
        if cfg.command is not None:
            nursery.start_soon(_run_commands, handle, cfg.command, command_recv)
        task_status.started(handle)
        async for alert in alerts:
            _report(handle, alert)
            if cfg.command is not None:
                try:
                    command_send.send_nowait(alert)
                except trio.WouldBlock:
                    handle.command_dropped += 1
                    logger.warning(
                        "alerts.command_dropped kind=%s queue=%d",
                        alert.kind.value,
                        cfg.command_queue,
                    )
    raise AssertionError("the bus closed under a running alert task")  # pragma: no cover


def _report(handle: AlertHandle, alert: Alert) -> None:
    handle.record(alert)
    details = " ".join(f"{k}={v}" for k, v in alert.details)
    logger.log(
        _LEVELS[alert.severity],
        "alert kind=%s severity=%s subject=%s message=%s%s",
        alert.kind.value,
        alert.severity.value,
        alert.subject or "-",
        alert.message,
        " " + details if details else "",
    )


async def _run_commands(
    handle: AlertHandle, argv: Sequence[str], recv_chan: trio.MemoryReceiveChannel[Alert]
) -> None:
    timeout_s = handle.config.command_timeout_s
    async with recv_chan:
        async for alert in recv_chan:
            payload = orjson.dumps(event_to_record(alert)) + b"\n"
            outcome: str | None = None
            with trio.move_on_after(timeout_s) as scope:
                try:
                    done = await trio.run_process(
                        list(argv),
                        stdin=payload,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        check=False,
                    )
                except OSError as exc:
                    outcome = f"could not start: {type(exc).__name__}"
                else:
                    if done.returncode != 0:
                        outcome = f"exit status {done.returncode}"
            if scope.cancelled_caught:
                outcome = f"no exit within {timeout_s:g} s (killed)"
            if outcome is None:
                handle.command_runs += 1
            else:
                handle.command_failures += 1
                logger.warning(
                    "alerts.command_failed kind=%s command=%s reason=%s",
                    alert.kind.value,
                    argv[0],
                    outcome,
                )
            handle.changed()


@attrs.define(eq=False)
class _Watcher:
    bus: EventBus
    handle: AlertHandle
    gateway_statistics: Callable[[], GatewayStatistics] | None
    wall_clock_ms: Callable[[], int]
    feed_up: bool = True
    last_event: dict[str, float] = attrs.field(factory=dict)
    silence_raised: dict[str, float] = attrs.field(factory=dict)
    rate_limited_seen: int = 0
    ip_banned_seen: int = 0

    @property
    def config(self) -> AlertConfig:
        return self.handle.config

    async def raise_alert(
        self,
        kind: AlertKind,
        severity: AlertSeverity,
        message: str,
        *,
        subject: str = "",
        details: Mapping[str, str] | None = None,
    ) -> None:
        key = (kind, subject)
        if key in self.handle.active_since:
            return
        self.handle.active_since[key] = trio.current_time()
        await self.bus.publish(
            Alert(
                kind=kind,
                severity=severity,
                message=message,
                at_ms=self.wall_clock_ms(),
                subject=subject,
                details=tuple(sorted((details or {}).items())),
            )
        )

    def clear(self, kind: AlertKind, subject: str = "") -> None:
        if self.handle.active_since.pop((kind, subject), None) is not None:
            logger.info("alert.cleared kind=%s subject=%s", kind.value, subject or "-")

    async def run(self, events: Subscription[object]) -> None:
        next_check = trio.current_time() + self.config.check_s
        while True:
            event: object | None = None
            with trio.move_on_at(next_check):
                event = await events.receive()
            if event is not None:
                await self.on_event(event)
            now = trio.current_time()
            if now >= next_check:
                next_check = now + self.config.check_s
                await self.check(now)

    async def on_event(self, event: object) -> None:
        now = trio.current_time()
        if isinstance(event, _MARKET):
            symbol = event.symbol
            self.last_event[symbol] = now
            self.clear(AlertKind.FEED_GAP, symbol)
        elif isinstance(event, BreakerTransition):
            await self.on_breaker(event)
        elif isinstance(event, FeedGap):
            subject = f"{event.symbol}/{event.stream}"
            raised_at = self.handle.active_since.get((AlertKind.FEED_GAP, subject))
            if raised_at is not None and now - raised_at >= self.config.repeat_s:
                self.clear(AlertKind.FEED_GAP, subject)
            await self.raise_alert(
                AlertKind.FEED_GAP,
                AlertSeverity.WARNING,
                f"{event.symbol} {event.stream}: {event.missing} ids never arrived "
                f"({event.reason})",
                subject=subject,
                details={
                    "first_missing_id": str(event.first_missing_id),
                    "last_missing_id": str(event.last_missing_id),
                },
            )
        elif isinstance(event, FeedDown):
            self.feed_up = False
            await self.raise_alert(
                AlertKind.FEED_DOWN,
                AlertSeverity.ERROR,
                f"no market-data connection is live: {event.reason}",
                details={"last_event_age_s": f"{event.last_event_age_s or 0:.1f}"},
            )
        elif isinstance(event, FeedUp):
            self.feed_up = True
            # Silence while down was the outage, not a gap: restart every symbol's clock.
            self.last_event = dict.fromkeys(self.last_event, now)
            self.clear(AlertKind.FEED_DOWN)

    async def on_breaker(self, event: BreakerTransition) -> None:
        if event.state is BreakerState.OPEN:
            await self.raise_alert(
                AlertKind.BREAKER_OPEN,
                AlertSeverity.ERROR,
                f"circuit breaker {event.name} opened: {event.reason}",
                subject=event.name,
                details={"retry_after_s": f"{event.retry_after_s:g}"},
            )
        elif event.state is BreakerState.CLOSED:
            self.clear(AlertKind.BREAKER_OPEN, event.name)

    async def check(self, now: float) -> None:
        # A FeedGap is an incident, not a state: it counts as active for repeat_s, then clears.
        for kind, subject in list(self.handle.active_since):
            raised_at = self.handle.active_since[(kind, subject)]
            if (
                kind is AlertKind.FEED_GAP
                and "/" in subject
                and now - raised_at >= self.config.repeat_s
            ):
                self.clear(kind, subject)
        if self.feed_up:
            for symbol, seen in self.last_event.items():
                silent_s = now - seen
                if silent_s <= self.config.silence_s or self.handle.is_active(
                    AlertKind.FEED_GAP, symbol
                ):
                    continue
                # A symbol that flaps (silent, one event, silent) pages once per repeat_s.
                if now - self.silence_raised.get(symbol, -math.inf) >= self.config.repeat_s:
                    self.silence_raised[symbol] = now
                    await self.raise_alert(
                        AlertKind.FEED_GAP,
                        AlertSeverity.WARNING,
                        f"{symbol}: no market event for {silent_s:.1f} s while connected",
                        subject=symbol,
                        details={"silent_s": f"{silent_s:.1f}"},
                    )
        if self.gateway_statistics is not None:
            await self.check_gateway(self.gateway_statistics())

    async def check_gateway(self, stats: GatewayStatistics) -> None:
        cfg = self.config
        for bucket in stats.limiter.buckets:
            name = f"{bucket.type.value} {bucket.interval}"
            usage = bucket.used / bucket.budget if bucket.budget > 0 else 0.0
            if usage >= cfg.limiter_high:
                await self.raise_alert(
                    AlertKind.LIMITER_HIGH,
                    AlertSeverity.WARNING,
                    f"rate limiter {name} at {usage:.0%} of its budget ({bucket.used} of "
                    f"{bucket.budget}; Binance's limit {bucket.limit}): requests will queue",
                    subject=name,
                    details={
                        "used": str(bucket.used),
                        "budget": str(bucket.budget),
                        "limit": str(bucket.limit),
                    },
                )
            elif usage < cfg.limiter_clear:
                self.clear(AlertKind.LIMITER_HIGH, name)
        if stats.rate_limited > self.rate_limited_seen:
            self.rate_limited_seen = stats.rate_limited
            await self.raise_alert(
                AlertKind.RATE_LIMITED,
                AlertSeverity.ERROR,
                "Binance answered HTTP 429: requests are held until Retry-After; keep going "
                "and the IP is banned (418)",
                details={"count": str(stats.rate_limited)},
            )
        elif stats.limiter.held_until_ms is None:
            self.clear(AlertKind.RATE_LIMITED)
        if stats.ip_banned > self.ip_banned_seen:
            self.ip_banned_seen = stats.ip_banned
            until = stats.limiter.banned_until_ms
            await self.raise_alert(
                AlertKind.IP_BANNED,
                AlertSeverity.CRITICAL,
                "Binance answered HTTP 418: this IP is banned; nothing is sent until the ban ends",
                details={"banned_until_ms": str(until) if until is not None else "unknown"},
            )
        elif stats.limiter.banned_until_ms is None:
            self.clear(AlertKind.IP_BANNED)
        sync = stats.time_sync
        offset = abs(sync.offset_ms)
        if sync.synced and math.isfinite(offset) and offset > cfg.clock_offset_ms:
            await self.raise_alert(
                AlertKind.CLOCK_OFFSET,
                AlertSeverity.WARNING,
                f"local clock is {sync.offset_ms:+.0f} ms off the exchange's "
                f"(over {cfg.clock_offset_ms:g} ms): sync NTP, signed requests risk -1021",
                details={"offset_ms": f"{sync.offset_ms:.0f}"},
            )
        elif offset <= cfg.clock_clear_ms:
            self.clear(AlertKind.CLOCK_OFFSET)
