"""The alert task over a real bus: conditions → one typed Alert each, logs, counts, a command.

Conditions come from the bus's own events and from a real gateway against the in-memory
simulator (MockClock); the command tests run real processes, so they use the real clock with
trio-clock deadlines.
"""

from __future__ import annotations

import logging
import shlex
import sys
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import TYPE_CHECKING

import httpx
import orjson
import pytest
import trio
import trio.testing

from genesis.app.alerts import AlertConfig, AlertHandle, parse_alert_command, run_alerts
from genesis.bus import EventBus
from genesis.errors import IpBannedError, RateLimitedError
from genesis.models.codec import record_to_event
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
from genesis.models.market import Trade
from tests.gateway_support import memory_gateway

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from genesis.bus import Subscription
    from genesis.exchange.gateway import GatewayStatistics


def trade(symbol: str = "BTCUSDT", trade_id: int = 1) -> Trade:
    return Trade(
        symbol=symbol,
        trade_id=trade_id,
        price=Decimal(100),
        quantity=Decimal(1),
        trade_time_ms=1,
        event_time_ms=1,
        buyer_is_maker=False,
    )


def transition(state: BreakerState, previous: BreakerState) -> BreakerTransition:
    return BreakerTransition(
        name="rest", previous=previous, state=state, at=0.0, failures=5, reason="5 failures"
    )


@asynccontextmanager
async def alert_task(
    bus: EventBus,
    config: AlertConfig | None = None,
    gateway_statistics: Callable[[], GatewayStatistics] | None = None,
) -> AsyncIterator[tuple[AlertHandle, Subscription[Alert]]]:
    """The alert task on ``bus`` plus a subscriber of Alert (what the dashboard would see)."""
    seen = bus.subscribe(Alert)
    async with trio.open_nursery() as nursery:
        handle: AlertHandle = await nursery.start(
            lambda task_status: run_alerts(
                bus,
                config=config,
                gateway_statistics=gateway_statistics,
                wall_clock_ms=lambda: 1_767_225_600_000,
                task_status=task_status,
            )
        )
        yield handle, seen
        nursery.cancel_scope.cancel()


def drain(subscription: Subscription[Alert]) -> list[Alert]:
    out = []
    while True:
        try:
            out.append(subscription.receive_nowait())
        except trio.WouldBlock:
            return out


async def test_breaker_open_alerts_once_until_it_closes(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    bus = EventBus()
    with trio.fail_after(60):
        async with alert_task(bus) as (handle, seen):
            await bus.publish(transition(BreakerState.OPEN, BreakerState.CLOSED))
            await handle.wait_seen(1)
            # Half-open probe fails: open again, still the same condition.
            await bus.publish(transition(BreakerState.HALF_OPEN, BreakerState.OPEN))
            await bus.publish(transition(BreakerState.OPEN, BreakerState.HALF_OPEN))
            await trio.sleep(1)
            assert handle.is_active(AlertKind.BREAKER_OPEN, "rest")
            await bus.publish(transition(BreakerState.CLOSED, BreakerState.HALF_OPEN))
            await trio.sleep(1)
            assert not handle.is_active(AlertKind.BREAKER_OPEN, "rest")
            await bus.publish(transition(BreakerState.OPEN, BreakerState.CLOSED))
            await handle.wait_seen(2)
            alerts = drain(seen)
    assert [(a.kind, a.severity, a.subject) for a in alerts] == [
        (AlertKind.BREAKER_OPEN, AlertSeverity.ERROR, "rest")
    ] * 2
    assert alerts[0].details == (("retry_after_s", "0"),)
    lines = [
        r for r in caplog.records if r.name == "genesis.app.alerts" and r.msg.startswith("alert ")
    ]
    assert [r.levelno for r in lines] == [logging.ERROR, logging.ERROR]
    assert "kind=breaker_open" in lines[0].getMessage()
    assert handle.statistics().raised_by_kind == {"breaker_open": 2}


async def test_feed_down_is_an_error_until_feed_up(autojump_clock: trio.testing.MockClock) -> None:
    bus = EventBus()
    with trio.fail_after(60):
        async with alert_task(bus) as (handle, seen):
            await bus.publish(FeedDown(at=0.0, reason="no frames for 2 s", last_event_age_s=2.0))
            await bus.publish(FeedDown(at=0.5, reason="still down"))
            await handle.wait_seen(1)
            await trio.sleep(5)  # silence of every symbol is the outage, not a gap
            assert handle.statistics().active == ("feed_down:",)
            await bus.publish(FeedUp(at=6.0, down_for_s=6.0, role="execution"))
            await trio.sleep(1)
            assert handle.statistics().active == ()
            alerts = drain(seen)
    assert [(a.kind, a.severity) for a in alerts] == [(AlertKind.FEED_DOWN, AlertSeverity.ERROR)]
    assert alerts[0].details == (("last_event_age_s", "2.0"),)


async def test_a_silent_symbol_while_connected_is_a_feed_gap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = EventBus()
    with trio.fail_after(300):
        async with alert_task(bus, AlertConfig(check_s=0.25, silence_s=1.0)) as (handle, seen):
            bus.publish_nowait(trade("BTCUSDT"))
            bus.publish_nowait(trade("ETHUSDT"))
            for _ in range(8):  # ETHUSDT keeps trading every 0.5 s, BTCUSDT goes quiet
                await trio.sleep(0.5)
                bus.publish_nowait(trade("ETHUSDT"))
            await handle.wait_seen(1)
            raised = drain(seen)
            assert trio.current_time() == 4.0
            bus.publish_nowait(trade("BTCUSDT", 2))
            await trio.sleep(0.1)
            assert not handle.is_active(AlertKind.FEED_GAP, "BTCUSDT")
            # Silent again at once: the same symbol pages again only 60 s after the first.
            for _ in range(130):
                await trio.sleep(0.5)
                bus.publish_nowait(trade("ETHUSDT"))
            await handle.wait_seen(2)
            again = drain(seen)
    assert [(a.kind, a.subject) for a in raised] == [(AlertKind.FEED_GAP, "BTCUSDT")]
    assert raised[0].details == (("silent_s", "1.2"),)  # first check past 1 s: t=1.25
    # Checks every 0.25 s: 61.25 is the first 60 s after 1.25; silent since 4.0.
    assert [(a.subject, a.details) for a in again] == [("BTCUSDT", (("silent_s", "57.2"),))]


async def test_feed_gap_events_alert_once_per_subject_within_the_repeat_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = EventBus()

    def gap(first: int) -> FeedGap:
        return FeedGap(
            symbol="BTCUSDT",
            stream="trade",
            first_missing_id=first,
            last_missing_id=first + 4,
            reason="backfill failed",
            at=trio.current_time(),
        )

    with trio.fail_after(300):
        async with alert_task(bus, AlertConfig(repeat_s=60)) as (handle, seen):
            await bus.publish(gap(10))
            await trio.sleep(30)
            await bus.publish(gap(20))  # within 60 s: the same incident
            await trio.sleep(31)
            await bus.publish(gap(30))  # 61 s after the first: raised again
            await handle.wait_seen(2)
            alerts = drain(seen)
            assert handle.statistics().active == ("feed_gap:BTCUSDT/trade",)
            await trio.sleep(59)
            assert handle.statistics().active == ("feed_gap:BTCUSDT/trade",)
            await trio.sleep(2)  # the first check (every 0.5 s) 60 s after it was raised
            assert handle.statistics().active == ()  # an incident, not a state: it expires
    assert [(a.subject, a.details[0]) for a in alerts] == [
        ("BTCUSDT/trade", ("first_missing_id", "10")),
        ("BTCUSDT/trade", ("first_missing_id", "30")),
    ]
    assert "5 ids never arrived" in alerts[0].message


async def test_gateway_429_limiter_and_clock_offset_alerts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = EventBus()
    with trio.fail_after(600):
        async with memory_gateway() as m:
            m.sim.faults.lower_limit("REQUEST_WEIGHT", "MINUTE", 1, 100)
            await m.gateway.exchange_info()  # the gateway adopts 100/min: budget 80
            async with alert_task(bus, gateway_statistics=m.gateway.statistics) as (handle, seen):
                await trio.sleep(61)  # a fresh minute
                for _ in range(65):  # 65 of 80: 81 %
                    await m.gateway.ping()
                await handle.wait_seen(1)
                await trio.sleep(61)
                assert not handle.is_active(AlertKind.LIMITER_HIGH, "REQUEST_WEIGHT 1M")
                # 429: lowered behind the gateway's back.
                m.sim.faults.lower_limit("REQUEST_WEIGHT", "MINUTE", 1, 5)

                async def flood() -> None:
                    for _ in range(10):
                        await m.gateway.ping()

                with pytest.raises(RateLimitedError):
                    await flood()
                await handle.wait_seen(2)
                # The clock: the exchange is 900 ms behind (and the limit back to normal).
                m.sim.faults.reset()
                m.sim.faults.clock_skew(-900)
                await m.gateway.sync_time()
                await handle.wait_seen(3)
                alerts = drain(seen)
    assert [(a.kind, a.subject) for a in alerts] == [
        (AlertKind.LIMITER_HIGH, "REQUEST_WEIGHT 1M"),
        (AlertKind.RATE_LIMITED, ""),
        (AlertKind.CLOCK_OFFSET, ""),
    ]
    assert dict(alerts[0].details) == {"used": "65", "budget": "80", "limit": "100"}
    assert alerts[1].severity is AlertSeverity.ERROR
    offset = int(dict(alerts[2].details)["offset_ms"])
    assert -1000 < offset < -800


async def test_an_ip_ban_is_critical(autojump_clock: trio.testing.MockClock) -> None:
    bus = EventBus()
    with trio.fail_after(600):
        async with memory_gateway() as m:
            m.sim.faults.lower_limit("REQUEST_WEIGHT", "MINUTE", 1, 45)
            # Another client on the same IP ignores the 429s and gets the IP banned.
            transport = httpx.ASGITransport(app=m.sim.http_app, client=("127.0.0.1", 40001))
            async with (
                httpx.AsyncClient(transport=transport, base_url="http://sim.test") as other,
                alert_task(bus, gateway_statistics=m.gateway.statistics) as (handle, seen),
            ):
                while (await other.get("/api/v3/ping")).status_code != 418:
                    pass
                with pytest.raises(IpBannedError):
                    await m.gateway.ping()
                await handle.wait_seen(1)
                alerts = drain(seen)
    assert [(a.kind, a.severity) for a in alerts] == [(AlertKind.IP_BANNED, AlertSeverity.CRITICAL)]
    assert dict(alerts[0].details)["banned_until_ms"].isdigit()


# --- the command --------------------------------------------------------------------------


def foreign_alert(n: int = 0) -> Alert:
    return Alert(
        kind=AlertKind.RECORDER_FAILED,
        severity=AlertSeverity.ERROR,
        message=f"recorder: disk full ({n})",
        at_ms=1_767_225_600_000 + n,
        subject="rec.jsonl",
        details=(("path", "rec.jsonl"),),
    )


def command(script: str) -> tuple[str, ...]:
    return parse_alert_command(f"{shlex.quote(sys.executable)} -c {shlex.quote(script)}")


async def test_other_producers_alerts_run_the_command_with_the_alert_as_json(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "alert.json"
    script = f"import sys; open({str(out)!r}, 'wb').write(sys.stdin.buffer.read())"
    bus = EventBus()
    with trio.fail_after(30):
        async with alert_task(bus, AlertConfig(command=command(script))) as (handle, _seen):
            await bus.publish(foreign_alert())
            await handle.wait_command_done(1)
    assert handle.statistics().command_runs == 1
    assert record_to_event(orjson.loads(out.read_bytes())) == foreign_alert()
    assert any(
        r.levelno == logging.ERROR and "kind=recorder_failed" in r.getMessage()
        for r in caplog.records
    )


async def test_a_failing_or_hanging_command_is_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    failing = AlertConfig(command=command("raise SystemExit(3)"))
    with trio.fail_after(30):
        async with alert_task(bus, failing) as (handle, _seen):
            await bus.publish(foreign_alert())
            await handle.wait_command_done(1)
        assert handle.statistics().command_failures == 1
        hanging = AlertConfig(command=command("import time; time.sleep(30)"), command_timeout_s=0.5)
        # Killed at its timeout, not waited for: the 30 s sleep outlasts the test's bound, and
        # the reason below says "killed".
        async with alert_task(bus, hanging) as (handle, _seen):
            await bus.publish(foreign_alert())
            await handle.wait_command_done(1)
        missing = AlertConfig(command=("/nonexistent/pager",))
        async with alert_task(bus, missing) as (handle, _seen):
            await bus.publish(foreign_alert())
            await handle.wait_command_done(1)
    reasons = [r.getMessage() for r in caplog.records if "alerts.command_failed" in r.msg]
    assert len(reasons) == 3
    assert "exit status 3" in reasons[0]
    assert "killed" in reasons[1]
    assert "could not start" in reasons[2]
    assert all(r.levelno == logging.WARNING for r in caplog.records if "command_failed" in r.msg)


async def test_a_full_command_queue_drops_for_the_command_only() -> None:
    bus = EventBus()
    slow = AlertConfig(command=command("import time; time.sleep(30)"), command_queue=1)
    seen_by_bus = bus.subscribe(Alert)
    with trio.fail_after(30):
        async with alert_task(bus, slow) as (handle, _seen):
            for n in range(4):  # one runs, one waits, two are dropped
                await bus.publish(foreign_alert(n))
            await handle.wait_seen(4)
            assert handle.statistics().command_dropped == 2
    assert len(drain(seen_by_bus)) == 4  # the bus and its subscribers lost nothing


def test_parse_alert_command() -> None:
    assert parse_alert_command("notify --team 'on call'") == ("notify", "--team", "on call")
    with pytest.raises(ValueError, match="empty"):
        parse_alert_command("  ")
    with pytest.raises(ValueError):
        parse_alert_command("'unbalanced")
