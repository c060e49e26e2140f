"""Backfill and sequence resets against the whole simulator, in memory, in virtual time.

The simulator runs its own market (market maker, feed) under ``autojump_clock``; market data
connects through ``sim.connect_ws_memory`` and backfills through a real gateway over
``httpx.ASGITransport`` to the simulator's REST app, so the limiter and breaker are in the
path. Faults are the simulator's admin API (``POST /sim/faults/drop``). The ground truth is the
simulator's own trade record (its trade listener), never the merger's counters.
"""

from __future__ import annotations

import functools
import itertools
import urllib.parse
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import TYPE_CHECKING

import attrs
import httpx
import pytest
import trio
import trio.testing
import trio_websocket

from genesis.bus import EventBus
from genesis.config import Secret, Settings
from genesis.errors import ConnectError, ExchangeUnavailableError
from genesis.exchange.backfill import RETRY_DELAYS_S, fetch_klines, fetch_trades
from genesis.exchange.gateway import Gateway, open_gateway
from genesis.exchange.merger import KlineBackfillRequest, MergerConfig, TradeBackfillRequest
from genesis.exchange.signing import HmacSigner
from genesis.exchange.ws_manager import MarketDataHandle, WebSocket, run_market_data
from genesis.models.events import FeedGap, SequenceReset
from genesis.models.market import Kline, Trade
from genesis.sim.clock import DEFAULT_VIRTUAL_EPOCH_MS, SimClock
from genesis.sim.feed import MarketFeed, run_market_feed
from genesis.sim.server import SimConfig, Simulator, build_simulator

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from genesis.sim.exchange import PublicTrade

SYMBOL = "BTCUSDT"


@attrs.define(eq=False)
class SimConnector:
    """Connects to the current simulator in memory; refuses while ``down_until`` is ahead."""

    sim: Simulator
    server_nursery: trio.Nursery
    down_until: float = 0.0

    async def __call__(
        self, nursery: trio.Nursery, url: str, *, message_queue_size: int, role: str = ""
    ) -> WebSocket:
        await trio.lowlevel.checkpoint()
        if trio.current_time() < self.down_until:
            raise OSError(111, "Connection refused")
        parts = urllib.parse.urlsplit(url)
        ws: WebSocket = await trio_websocket.wrap_client_stream(
            nursery,
            self.sim.connect_ws_memory(self.server_nursery),  # type: ignore[arg-type]
            parts.hostname or "sim",
            f"{parts.path}?{parts.query}",
            message_queue_size=message_queue_size,
        )
        return ws


@attrs.define(eq=False)
class Truth:
    """Every trade the simulator printed, by its own trade listener."""

    ids: list[int] = attrs.field(factory=list)

    def on_trades(self, symbol: str, trades: Sequence[PublicTrade]) -> None:
        if symbol == SYMBOL:
            self.ids.extend(t.trade_id for t in trades)


@attrs.define(eq=False)
class Received:
    events: list[object] = attrs.field(factory=list)
    changed: trio.Event = attrs.field(factory=trio.Event)

    def trade_ids(self) -> list[int]:
        return [e.trade_id for e in self.events if isinstance(e, Trade)]

    async def wait_for_trade(self, trade_id: int) -> None:
        while trade_id not in self.trade_ids():
            await self.changed.wait()

    async def wait_for_reset(self) -> SequenceReset:
        while True:
            for event in self.events:
                if isinstance(event, SequenceReset) and event.stream == "trade":
                    return event
            await self.changed.wait()


@attrs.define(eq=False)
class Harness:
    sim: Simulator
    truth: Truth
    received: Received
    connector: SimConnector
    handle: MarketDataHandle
    feed_scope: trio.CancelScope


@asynccontextmanager
async def sim_gateway(sim: Simulator) -> AsyncIterator[Gateway]:
    async with open_gateway(
        Settings(),
        rest_url="http://sim.test",
        api_key=Secret(sim.api_key),
        signer=HmacSigner(Secret(sim.api_secret)),
        transport=httpx.ASGITransport(app=sim.http_app, client=("127.0.0.1", 40000)),
        wall_clock_ms=sim.clock.now_ms,
        prepare=False,
    ) as gateway:
        yield gateway


def new_simulator(seed: int = 1) -> tuple[Simulator, Truth]:
    sim = build_simulator(
        SimConfig(seed=seed, symbols=(SYMBOL,), epoch_ms=DEFAULT_VIRTUAL_EPOCH_MS),
        clock=SimClock.start(DEFAULT_VIRTUAL_EPOCH_MS),
    )
    truth = Truth()
    sim.exchange.add_trade_listener(truth.on_trades)
    return sim, truth


async def run_feed(
    sim: Simulator, step_s: float = 0.1, *, task_status: trio.TaskStatus[trio.CancelScope]
) -> None:
    """The simulator's market: its own feed (100 ms), or the same loop on a coarser grid."""
    with trio.CancelScope() as scope:
        task_status.started(scope)
        if step_s <= 0.1:
            await run_market_feed(sim.exchange, sim.market_maker, sim.hub, sim.clock)
        feed = MarketFeed(sim.exchange, sim.hub, sim.clock)
        try:
            start, step_ms = trio.current_time(), round(step_s * 1000)
            for k in itertools.count():
                now_ms = sim.clock.now_ms()
                sim.market_maker.step(now_ms)
                feed.tick(k * step_ms, now_ms)
                await trio.sleep_until(start + (k + 1) * step_s)
        finally:
            feed.close()


@asynccontextmanager
async def harness(
    merger_config: MergerConfig | None = None, *, step_s: float = 0.1, roles: int = 3
) -> AsyncIterator[Harness]:
    sim, truth = new_simulator()
    received = Received()
    bus = EventBus({})
    subscription = bus.subscribe(Trade, Kline, FeedGap, SequenceReset, buffer_size=100_000)
    async with trio.open_nursery() as nursery, sim_gateway(sim) as gateway:

        async def consume() -> None:
            async for event in subscription:
                received.events.append(event)
                received.changed.set()
                received.changed = trio.Event()

        nursery.start_soon(consume)
        feed_scope: trio.CancelScope = await nursery.start(run_feed, sim, step_s)
        connector = SimConnector(sim, nursery)
        handle: MarketDataHandle = await nursery.start(
            functools.partial(
                run_market_data,
                "ws://sim.invalid",
                [SYMBOL],
                bus,
                connector=connector,
                wall_clock_ms=sim.clock.now_ms,
                backfill=gateway,
                merger_config=merger_config,
                roles=("execution", "monitoring", "backup")[:roles],
            )
        )
        yield Harness(sim, truth, received, connector, handle, feed_scope)
        nursery.cancel_scope.cancel()


async def admin_drop_all(sim: Simulator) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim.http_app), base_url="http://sim.test"
    ) as client:
        answer = await client.post("/sim/faults/drop")
    assert answer.status_code == 200


@pytest.mark.parametrize(
    ("down_s", "market_for_s"),
    [(6.0, 10.0), (10.0, 3.0)],
    ids=["market-stops-after-the-outage", "market-stops-during-the-outage"],
)
async def test_every_trade_arrives_once_in_order_after_every_connection_was_down(
    autojump_clock: trio.testing.MockClock, down_s: float, market_for_s: float
) -> None:
    # When the market stops during the outage (a quiet market), no live trade will ever reveal
    # the hole: the trades it cost must come from the catch-up of the first connection up.
    with trio.fail_after(120):
        async with harness() as h:
            await trio.sleep(5.0)
            first_seen = h.received.trade_ids()[0]
            h.connector.down_until = trio.current_time() + down_s
            await admin_drop_all(h.sim)
            down_from = len(h.truth.ids)
            await trio.sleep(min(down_s, market_for_s))  # every connect attempt is refused
            made_while_down = len(h.truth.ids) - down_from
            await trio.sleep(market_for_s - min(down_s, market_for_s))
            h.feed_scope.cancel()  # the market stops; what it printed must all arrive
            await h.received.wait_for_trade(h.truth.ids[-1])
            stats = h.handle.statistics().merger
    assert made_while_down > 10  # the outage really cost trades on every connection
    expected = h.truth.ids[h.truth.ids.index(first_seen) :]
    assert h.received.trade_ids() == expected
    assert not [e for e in h.received.events if isinstance(e, FeedGap)]
    assert stats.backfills >= 1
    assert stats.backfilled_trades >= made_while_down  # and any in flight at the drop
    assert stats.gaps == 0


async def test_a_restarted_simulator_resets_the_sequence_and_fresh_trades_flow_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(120):
        async with harness(MergerConfig(reset_min_drop=20)) as h:
            await trio.sleep(20.0)
            old_high = h.received.trade_ids()[-1]
            # The exchange restarts: a new simulator (its trade ids start again) takes the
            # place of the old one, and every connection to the old one is cut.
            new_sim, new_truth = new_simulator(seed=2)
            async with trio.open_nursery() as nursery:
                new_feed: trio.CancelScope = await nursery.start(run_feed, new_sim)
                h.feed_scope.cancel()
                h.connector.sim = new_sim
                await admin_drop_all(h.sim)
                restarted_at = trio.current_time()
                await h.received.wait_for_reset()
                fresh_after_s = trio.current_time() - restarted_at
                await trio.sleep(3.0)
                new_feed.cancel()
                await h.received.wait_for_trade(new_truth.ids[-1])
            stats = h.handle.statistics().merger
    assert new_truth.ids[-1] < old_high - 20  # the new ids really are far below the old ones
    resets = [e for e in h.received.events if isinstance(e, SequenceReset)]
    assert sorted(e.stream for e in resets) == ["depth20@100ms", "trade"]
    (reset,) = [e for e in resets if e.stream == "trade"]
    before_reset = h.received.events[: h.received.events.index(reset)]
    old_published = [e.trade_id for e in before_reset if isinstance(e, Trade)]
    assert (reset.symbol, reset.previous_high) == (SYMBOL, old_published[-1])
    # The old exchange's last trades may come from its REST (the catch-up after the drop).
    assert old_high <= reset.previous_high <= h.truth.ids[-1]
    after_reset = h.received.events[h.received.events.index(reset) + 1 :]
    assert [e.trade_id for e in after_reset if isinstance(e, Trade)] == new_truth.ids[
        new_truth.ids.index(reset.new_first) :
    ]
    assert fresh_after_s < 3.0  # one reconnect (1 s backoff), not until ids pass the old high
    assert stats.sequence_resets == 2


async def test_closed_klines_missed_by_every_connection_come_from_rest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(600):
        async with harness(step_s=1.0, roles=1) as h:
            await trio.sleep(61.0)
            h.connector.down_until = trio.current_time() + 150.0  # over two minute boundaries
            await admin_drop_all(h.sim)
            await trio.sleep(330.0)
            stats = h.handle.statistics().merger
            bus_klines = [e for e in h.received.events if isinstance(e, Kline)]
            now_ms = h.sim.clock.now_ms()
            wire = h.sim.exchange.klines(SYMBOL, "1m", now_ms=now_ms)
    closed = sorted(k.open_time_ms for k in bus_klines if k.closed)
    assert stats.backfilled_klines >= 2
    assert stats.kline_gaps == 0
    # Every kline the exchange closed after the first one seen arrived closed, exactly once.
    first_open = min(k.open_time_ms for k in bus_klines)
    rows = [(int(str(row[0])), int(str(row[6]))) for row in wire]
    expected = [
        open_ms for open_ms, close_ms in rows if first_open <= open_ms and close_ms < now_ms
    ]
    assert closed == expected


@attrs.define
class PagedHistory:
    """A backfill source with ``ids`` in its history that fails after ``fail_after`` pages."""

    ids: range
    fail_after: int | None = None
    pages: list[tuple[int, int]] = attrs.field(factory=list)

    async def historical_trades(
        self, symbol: str, *, from_id: int, limit: int = 1000
    ) -> tuple[Trade, ...]:
        await trio.lowlevel.checkpoint()
        if self.fail_after is not None and len(self.pages) == self.fail_after:
            raise ConnectError("connect failed: refused")
        self.pages.append((from_id, limit))
        return tuple(
            Trade(
                symbol=symbol,
                trade_id=i,
                price=Decimal(1),
                quantity=Decimal(1),
                trade_time_ms=i,
                event_time_ms=i,
                buyer_is_maker=False,
            )
            for i in self.ids
            if from_id <= i < from_id + limit
        )

    async def klines(
        self,
        symbol: str,
        interval: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> tuple[Kline, ...]:
        await trio.lowlevel.checkpoint()
        raise ConnectError("connect failed: refused")


async def test_fetch_trades_pages_until_the_hole_is_covered() -> None:
    source = PagedHistory(range(1, 5000))
    trades, error = await fetch_trades(source, TradeBackfillRequest(SYMBOL, "s", 100, 2600))
    assert error is None
    assert [t.trade_id for t in trades] == list(range(100, 2601))
    assert source.pages == [(100, 1000), (1100, 1000), (2100, 501)]


async def test_fetch_trades_stops_at_the_end_of_history_and_reports_failures(
    autojump_clock: trio.abc.Clock,
) -> None:
    short = PagedHistory(range(1, 150))
    trades, error = await fetch_trades(short, TradeBackfillRequest(SYMBOL, "s", 100, 2600))
    assert ([t.trade_id for t in trades], error) == (list(range(100, 150)), None)
    assert short.pages == [(100, 1000)]  # a short page is the end: no second request
    failing = PagedHistory(range(1, 5000), fail_after=1)
    trades, error = await fetch_trades(failing, TradeBackfillRequest(SYMBOL, "s", 100, 2600))
    assert len(trades) == 1000
    assert error == "ConnectError: connect failed: refused"
    klines, error = await fetch_klines(failing, KlineBackfillRequest(SYMBOL, "s", 0, 60_000))
    assert (klines, error) == ((), "ConnectError: connect failed: refused")


@attrs.define
class FlakyHistory(PagedHistory):
    """Answers 503 to the first ``errors`` calls, like the simulator's REST 5xx burst."""

    errors: int = 0
    calls: list[float] = attrs.field(factory=list)

    async def historical_trades(
        self, symbol: str, *, from_id: int, limit: int = 1000
    ) -> tuple[Trade, ...]:
        self.calls.append(trio.current_time())
        if self.errors:
            self.errors -= 1
            await trio.lowlevel.checkpoint()
            raise ExchangeUnavailableError(-1000, "Service unavailable", http_status=503)
        return await super().historical_trades(symbol, from_id=from_id, limit=limit)


async def test_a_burst_of_5xx_is_retried_with_growing_waits_and_the_hole_still_filled(
    autojump_clock: trio.abc.Clock,
) -> None:
    source = FlakyHistory(range(1, 5000), errors=3)
    start = trio.current_time()
    trades, error = await fetch_trades(source, TradeBackfillRequest(SYMBOL, "s", 100, 600))
    assert error is None
    assert [t.trade_id for t in trades] == list(range(100, 601))
    waits = [round(b - a, 3) for a, b in zip([start, *source.calls], source.calls, strict=False)]
    assert waits == [0.0, *RETRY_DELAYS_S[:3]]


async def test_a_source_that_keeps_failing_is_given_up_after_every_retry(
    autojump_clock: trio.abc.Clock,
) -> None:
    source = FlakyHistory(range(1, 5000), errors=100)
    trades, error = await fetch_trades(source, TradeBackfillRequest(SYMBOL, "s", 100, 600))
    assert trades == []
    assert error is not None
    assert error.startswith("ExchangeUnavailableError")
    assert len(source.calls) == len(RETRY_DELAYS_S) + 1
