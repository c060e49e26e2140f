"""A user data stream that is down for 30 s while orders fill loses no fill.

The whole order half against one simulator in memory under ``autojump_clock``: the REST
gateway, the journal, the order service, the user data stream and the reconciler wired as the
tree wires them. The stream's connections are refused for 30 s while the market fills every
resting order; when it comes back, the gap is reconciled and the journal holds what the
exchange did — checked against the simulator's own order records.
"""

from __future__ import annotations

from decimal import Decimal
from functools import partial

import trio
import trio.testing

from genesis.bus import EventBus
from genesis.config import Secret
from genesis.exchange.signing import HmacSigner
from genesis.exchange.user_stream import UserStreamEvent, run_user_stream
from genesis.models.events import OrderUpdate, OrderUpdateSource
from genesis.models.orders import OrderRequest, OrderSide, OrderStatus
from genesis.orders.journal import open_journal
from genesis.orders.reconcile import reconcile_trigger, run_reconciler
from genesis.orders.service import OrderService
from genesis.sim.server import SimConfig, build_simulator
from tests.gateway_support import T0, memory_gateway
from tests.test_user_stream import MAKER, SIM_URL, SimConnector

D = Decimal


async def test_a_user_stream_down_for_30_s_while_orders_fill_loses_no_fill(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sim = build_simulator(SimConfig(epoch_ms=T0))
    sim.exchange.add_account(MAKER)
    bus = EventBus()
    async with (
        memory_gateway(sim=sim, seed_book=False) as m,
        open_journal(":memory:") as journal,
        trio.open_nursery() as servers,
        trio.open_nursery() as tree,
    ):
        service = OrderService(m.gateway, journal, bus.publish)

        async def route(event: UserStreamEvent) -> None:
            if isinstance(event, OrderUpdate):
                await service.recorder.record(event.order, event.source, event.reason)
            else:
                await bus.publish(event)

        on_gap, gaps = reconcile_trigger()
        reconciler = await tree.start(
            partial(run_reconciler, service, symbols=["BTCUSDT"], trigger=gaps)
        )
        connector = SimConnector(sim, servers)
        stream = await tree.start(
            partial(
                run_user_stream,
                SIM_URL,
                api_key=Secret(sim.api_key),
                signer=HmacSigner(Secret(sim.api_secret)),
                publish=route,
                on_gap=on_gap,
                connector=connector,
                server_time_ms=sim.clock.now_ms,
            )
        )
        placed = [
            await service.place(
                OrderRequest.limit(
                    symbol="BTCUSDT", side=OrderSide.BUY, quantity=D("0.002"), price=D(59_990 + i)
                )
            )
            for i in range(3)
        ]
        down_at = trio.current_time()
        connector.refuse = True
        assert sim.faults.drop_connections(ws_api=True) == 1
        await trio.sleep(1)
        # The market fills them while nobody listens: one partially, two completely.
        now_ms = sim.clock.now_ms()
        for qty, price in (("0.002", "59992"), ("0.002", "59991"), ("0.001", "59990")):
            sim.exchange.place_order(
                MAKER,
                symbol="BTCUSDT",
                side="SELL",
                type="LIMIT",
                time_in_force="GTC",
                quantity=qty,
                price=price,
                now_ms=now_ms,
            )
        await trio.sleep_until(down_at + 30)
        connector.refuse = False
        await stream.wait_subscribed(subscriptions=2)
        await trio.sleep(10)  # the gap's reconciliation (a few spaced queries) is done by then
        assert reconciler.statistics().cycles >= 2  # at start, and for the gap
        for order in placed:
            assert order.client_order_id is not None
            on_exchange = sim.exchange.query_order(
                sim.api_key, symbol="BTCUSDT", orig_client_order_id=order.client_order_id
            )
            entry = await journal.get(order.client_order_id)
            assert entry is not None
            assert entry.exchange_status == str(on_exchange.status)
            assert entry.filled_quantity == on_exchange.executed_qty
            sources = {e.source for e in await journal.history(order.client_order_id)}
            assert OrderUpdateSource.RECONCILE in sources
        entries = [await journal.get(o.client_order_id) for o in placed]
        statuses = sorted(str(e.exchange_status) for e in entries if e is not None)
        assert statuses == ["FILLED", "FILLED", "PARTIALLY_FILLED"]
        assert {e.status for e in await journal.unfinished()} == {OrderStatus.PARTIAL}
        tree.cancel_scope.cancel()
        servers.cancel_scope.cancel()
