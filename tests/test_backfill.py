"""Backfill and sequence resets against the whole simulator, in memory, in virtual time.

The simulator runs its own market (market maker, feed) under ``autojump_clock``; market data
connects through ``sim.connect_ws_memory`` and backfills through a real gateway over
``httpx.ASGITransport`` to the simulator's REST app, so the limiter and breaker are in the
path. Faults are the simulator's admin API (``POST /sim/faults/drop``). The ground truth is the
simulator's own trade record (its trade listener), never the merger's counters.
"""

from __future__ import annotations

import functools
import urllib.parse
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import attrs
import httpx
import trio
import trio.testing
import trio_websocket

from genesis.bus import EventBus
from genesis.config import Secret, Settings
from genesis.exchange.gateway import Gateway, open_gateway
from genesis.exchange.merger import MergerConfig
from genesis.exchange.signing import HmacSigner
from genesis.exchange.ws_manager import MarketDataHandle, WebSocket, run_market_data
from genesis.models.events import FeedGap, SequenceReset
from genesis.models.market import Trade
from genesis.sim.clock import DEFAULT_VIRTUAL_EPOCH_MS, SimClock
from genesis.sim.feed import run_market_feed
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


async def run_feed(sim: Simulator, *, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
    with trio.CancelScope() as scope:
        task_status.started(scope)
        await run_market_feed(sim.exchange, sim.market_maker, sim.hub, sim.clock)


@asynccontextmanager
async def harness(merger_config: MergerConfig | None = None) -> AsyncIterator[Harness]:
    sim, truth = new_simulator()
    received = Received()
    bus = EventBus({})
    subscription = bus.subscribe(Trade, FeedGap, SequenceReset, buffer_size=100_000)
    async with trio.open_nursery() as nursery, sim_gateway(sim) as gateway:

        async def consume() -> None:
            async for event in subscription:
                received.events.append(event)
                received.changed.set()
                received.changed = trio.Event()

        nursery.start_soon(consume)
        feed_scope: trio.CancelScope = await nursery.start(run_feed, sim)
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


async def test_every_trade_arrives_once_in_order_after_every_connection_was_down(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(120):
        async with harness() as h:
            await trio.sleep(5.0)
            first_seen = h.received.trade_ids()[0]
            h.connector.down_until = trio.current_time() + 6.0
            await admin_drop_all(h.sim)
            down_from = len(h.truth.ids)
            await trio.sleep(6.0)  # every connect attempt is refused meanwhile
            made_while_down = len(h.truth.ids) - down_from
            await trio.sleep(4.0)
            h.feed_scope.cancel()  # the market stops; what it printed must all arrive
            await h.received.wait_for_trade(h.truth.ids[-1])
            stats = h.handle.statistics().merger
    assert made_while_down > 20  # the outage really cost trades on every connection
    expected = h.truth.ids[h.truth.ids.index(first_seen) :]
    assert h.received.trade_ids() == expected
    assert not [e for e in h.received.events if isinstance(e, FeedGap)]
    assert stats.backfills >= 1
    assert stats.backfilled_trades >= made_while_down
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
    assert (reset.symbol, reset.previous_high) == (SYMBOL, old_high)
    after_reset = h.received.events[h.received.events.index(reset) + 1 :]
    assert [e.trade_id for e in after_reset if isinstance(e, Trade)] == new_truth.ids[
        new_truth.ids.index(reset.new_first) :
    ]
    assert fresh_after_s < 3.0  # one reconnect (1 s backoff), not until ids pass the old high
    assert stats.sequence_resets == 2
