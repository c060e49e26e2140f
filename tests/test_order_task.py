"""The order task and unknown-outcome resolution, against the simulator in memory.

Under ``autojump_clock``: the simulator's faults make outcomes unknown, and the expected state
comes from the simulator's own books, never from the task under test.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
import trio
import trio.testing

from genesis.errors import OrderOutcomeUnknownError
from genesis.models.events import OrderUpdateSource
from genesis.models.orders import OrderRequest, OrderSide, OrderStatus
from genesis.orders.manager import (
    CancelOrder,
    PlaceOrder,
    QueryOrder,
)
from genesis.orders.service import RESOLVE_MARGIN_MS, resolve_unknown_order
from tests.gateway_support import T0, memory_gateway, order_task_harness

D = Decimal


def limit_buy(client_order_id: str | None = None, price: str = "50000") -> OrderRequest:
    return OrderRequest.limit(
        symbol="BTCUSDT",
        side=OrderSide.BUY,
        quantity=D("0.001"),
        price=D(price),
        client_order_id=client_order_id,
    )


def test_commands_need_exactly_one_order_reference() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        CancelOrder(symbol="BTCUSDT")
    with pytest.raises(ValueError, match="exactly one"):
        QueryOrder(symbol="BTCUSDT", client_order_id="a", order_id=1)
    assert CancelOrder(symbol="BTCUSDT", order_id=7).order_id == 7


async def test_place_cancel_query_publish_updates_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with order_task_harness() as h:
        m, journal, send, state, updates = h.m, h.journal, h.send, h.state, h.updates
        async with send:
            await send.send(PlaceOrder(request=limit_buy("task-1")))
            await send.send(QueryOrder(symbol="BTCUSDT", client_order_id="task-1"))
            await send.send(CancelOrder(symbol="BTCUSDT", client_order_id="task-1"))
            await send.send(PlaceOrder(request=limit_buy(price="5")))  # NOTIONAL failure
            await send.send(CancelOrder(symbol="BTCUSDT", client_order_id="never"))
        seen = [await updates.receive() for _ in range(4)]
        assert [(u.order.client_order_id, u.order.status_name) for u in seen[:3]] == [
            ("task-1", "NEW"),
            ("task-1", "NEW"),
            ("task-1", "CANCELED"),
        ]
        assert seen[3].order.status is OrderStatus.REJECTED
        assert seen[3].reason is not None
        assert seen[3].reason.startswith("NOTIONAL: ")  # refused locally, before any request
        assert seen[3].order.client_order_id.startswith(journal.prefix + "-")  # the journal's
        assert {u.source for u in seen} == {OrderUpdateSource.REST}
        await trio.testing.wait_all_tasks_blocked()
        stats = state.statistics()
        assert (stats.received, stats.placed, stats.rejected, stats.failed) == (5, 1, 1, 1)
        assert stats.channel_closed
        assert m.sim.exchange.open_orders(m.sim.api_key, "BTCUSDT") == []


async def test_an_unknown_placement_is_resolved_not_resent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with order_task_harness() as h:
        m, send, state, updates = h.m, h.send, h.state, h.updates
        m.sim.faults.execute_then_503(1)
        start = trio.current_time()
        await send.send(PlaceOrder(request=limit_buy("maybe-1")))
        first = await updates.receive()
        assert (first.order.status, first.order.client_order_id) == (OrderStatus.UNKNOWN, "maybe-1")
        second = await updates.receive()
        assert second.order.exchange_status == "NEW"
        assert second.order.exchange_order_id is not None
        # Queried only once recvWindow (+ margin) had passed on the exchange's clock.
        waited_ms = (trio.current_time() - start) * 1000
        assert waited_ms == pytest.approx(m.gateway.recv_window_ms + RESOLVE_MARGIN_MS)
        # Exactly one order exists under that id: it was never sent twice.
        assert [o.client_order_id for o in m.sim.exchange.open_orders(m.sim.api_key)] == ["maybe-1"]
        # The resolver counts the settled order once its update is published (the subscriber
        # may see the update first).
        await trio.testing.wait_all_tasks_blocked()
        assert state.statistics().resolved == 1


async def test_a_placement_that_never_arrived_resolves_to_rejected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_gateway() as m:
        unknown = OrderOutcomeUnknownError("ghost-1", "read timeout", sent_at_ms=T0)
        m.sim.faults.error_burst(3, status=502)  # the first queries fail too: retried
        found = await resolve_unknown_order(m.gateway, "BTCUSDT", unknown)
        assert found is None
        assert m.sim.rest.statistics().injected_errors == 3


async def test_the_resolver_outlasts_a_silent_exchange(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_gateway() as m:
        unknown = OrderOutcomeUnknownError("ghost-2", "read timeout", sent_at_ms=T0)
        m.sim.faults.latency(45.0)  # every query times out at the 30 s call deadline

        async def heal() -> None:
            await trio.sleep(100)
            m.sim.faults.latency(0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(heal)
            start = trio.current_time()
            assert await resolve_unknown_order(m.gateway, "BTCUSDT", unknown) is None
        # Asked at 6 s (recvWindow 5 s + 1 s margin); each query times out 30 s later, then the
        # backoff waits 1, 2, 4 s: 6→36, 37→67, 69→99; the query at 103 (after the heal at 100)
        # is answered at once.
        assert trio.current_time() - start == 103.0
