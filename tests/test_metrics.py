"""The metrics exporter: scraped over a real socket while the whole tree runs on the simulator."""

from __future__ import annotations

import logging
import socket
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING

import httpx
import trio
import trio.lowlevel
import trio.testing
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from genesis.app.metrics import MetricsSources, build_registry, run_metrics
from genesis.app.run import run_genesis
from genesis.app.supervisor import Supervision, supervise_order_side
from genesis.bus import EventBus
from genesis.config import Settings
from genesis.models.events import OrderUpdate
from genesis.models.orders import OrderRequest, OrderSide
from genesis.orders.manager import PlaceOrder
from tests.test_order_side_restart import CrashOnce, idle_service

if TYPE_CHECKING:
    import pytest


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``(name, sorted labels) → value`` of every sample in a text exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return samples(response.text)


async def test_scrape_during_a_simulator_run_shows_the_tree() -> None:
    settings = Settings(symbols=("BTCUSDT",))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(
                partial(run_genesis, settings, handle_signals=False, metrics_port=0)
            )
            assert handle.metrics is not None
            assert handle.metrics.url is not None
            await handle.market_data.wait_all_receiving()
            await handle.market_data.wait_published(50)
            request = OrderRequest.limit(
                symbol="BTCUSDT",
                side=OrderSide.BUY,
                quantity=Decimal("0.01"),
                price=Decimal(30000),
            )
            updates = handle.bus.subscribe(OrderUpdate)
            await handle.orders.send(PlaceOrder(request=request))
            placed = await updates.receive()
            order_sample = ("genesis_order_updates_total", (("status", placed.order.status.value),))
            got = await scrape(handle.metrics.url)
            while order_sample not in got:  # the exporter's subscriber sees it a moment later
                await trio.sleep(0.01)
                got = await scrape(handle.metrics.url)
            bus = handle.bus.statistics()
            nursery.cancel_scope.cancel()
    for role in ("execution", "monitoring", "backup"):
        assert got[("genesis_connection_state", (("role", role), ("state", "connected")))] == 1
        assert got[("genesis_connection_state", (("role", role), ("state", "backoff")))] == 0
        assert got[("genesis_connection_frames_total", (("role", role),))] > 0
    assert got[("genesis_bus_events_published_total", (("kind", "Trade"),))] > 0
    assert got[("genesis_bus_events_published_total", (("kind", "Trade"),))] <= bus.published
    assert got[("genesis_feed_latency_seconds_count", (("kind", "depth"),))] > 0
    assert got[("genesis_breaker_state", (("name", "rest"), ("state", "closed")))] == 1
    assert got[("genesis_breaker_state", (("name", "streams"), ("state", "open")))] == 0
    assert got[("genesis_limiter_limit", (("bucket", "REQUEST_WEIGHT 1M"),))] == 6000
    assert got[("genesis_limiter_admitted_total", ())] >= 3  # time, exchangeInfo, the order
    assert got[("genesis_rest_requests_total", (("outcome", "answered"),))] >= 3
    assert got[order_sample] >= 1  # the REST answer, and maybe already the user stream report
    assert ("genesis_clock_offset_seconds", ()) in got
    assert got[("genesis_errors_total", (("kind", "rest_429"),))] == 0
    assert got[("genesis_errors_total", (("kind", "feed_decode"),))] == 0
    assert ("genesis_merger_backfills_total", ()) in got
    assert ("genesis_merger_backfilled_trades_total", ()) in got
    assert got[("genesis_merger_catch_ups_total", ())] == 0  # no outage of every connection
    assert got[("genesis_merger_backfill_failures_total", ())] == 0
    assert ("genesis_alerts_active", ()) in got
    for service in ("reconciler", "user_stream"):
        running = (("service", service), ("state", "running"))
        assert got[("genesis_order_side_state", running)] == 1
        assert got[("genesis_order_side_restarts_total", (("service", service),))] == 0


async def test_a_port_in_use_is_a_warning_and_the_run_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                handle = await nursery.start(
                    partial(run_metrics, MetricsSources(bus=EventBus()), port=port)
                )
                await trio.lowlevel.checkpoint()
                nursery.cancel_scope.cancel()
    finally:
        taken.close()
    assert handle.port is None
    assert handle.url is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        f"port={port}" in r.getMessage() and "without metrics" in r.getMessage() for r in warnings
    )


async def test_two_exporters_in_one_process_have_their_own_registries() -> None:
    bus_a, bus_b = EventBus(), EventBus()
    bus_a.subscribe(object)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            a = await nursery.start(partial(run_metrics, MetricsSources(bus=bus_a), port=0))
            b = await nursery.start(partial(run_metrics, MetricsSources(bus=bus_b), port=0))
            assert a.url is not None
            assert b.url is not None
            got_a, got_b = await scrape(a.url), await scrape(b.url)
            async with httpx.AsyncClient(trust_env=False) as client:
                missing = await client.get(a.url.replace("/metrics", "/nope"))
                posted = await client.post(a.url)
            nursery.cancel_scope.cancel()
    # Each bus counts its own subscribers (the observer's, plus one more on bus_a).
    assert got_a[("genesis_bus_subscribers", ())] == got_b[("genesis_bus_subscribers", ())] + 1
    assert (missing.status_code, posted.status_code) == (404, 405)
    assert a.scrapes == 1


async def test_order_side_crashes_and_restarts_are_counted_per_service(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = EventBus()
    record = Supervision("user_stream")
    service = CrashOnce(idle_service)
    registry, _live = build_registry(
        MetricsSources(bus=bus, order_side={"user_stream": record.statistics})
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(supervise_order_side, bus, "user_stream", service, supervision=record)
        )
        before = samples(generate_latest(registry).decode())
        service.crash.set()
        await trio.sleep(0.5)
        down = samples(generate_latest(registry).decode())
        service.release.set()
        await trio.sleep(1)
        back = samples(generate_latest(registry).decode())
        nursery.cancel_scope.cancel()
    label = (("service", "user_stream"),)
    for got, state, crashes, restarts in (
        (before, "running", 0, 0),
        (down, "backoff", 1, 0),
        (back, "running", 1, 1),
    ):
        assert got[("genesis_order_side_state", (*label, ("state", state)))] == 1
        assert got[("genesis_order_side_crashes_total", label)] == crashes
        assert got[("genesis_order_side_restarts_total", label)] == restarts


def test_run_options_for_metrics_and_alerts() -> None:
    from genesis.app.cli import build_parser, main

    parser = build_parser()
    defaults = parser.parse_args(["run"])
    assert (defaults.metrics_port, defaults.no_metrics, defaults.alert_command) == (
        9108,
        False,
        None,
    )
    chosen = parser.parse_args(
        ["run", "--metrics-port", "0", "--no-metrics", "--alert-command", "page --to 'on call'"]
    )
    assert (chosen.metrics_port, chosen.no_metrics) == (0, True)
    assert chosen.alert_command == ("page", "--to", "on call")
    assert main(["run", "--alert-command", "'unbalanced"]) == 2
    assert main(["run", "--metrics-port", "70000"]) == 2
