"""Never an order placed twice, never an order lost: the order path under the simulator's faults.

Each example runs the simulator in memory under a MockClock, places orders through the real
``OrderService`` (journal, checks, gateway) while a random schedule of faults plays — answers
slower than the call deadline, 5xx bursts, execute-then-503 — and settles every unknown outcome
the way the service does. Then it compares the journal with the simulator's own books: every
client order id is on the exchange at most once, every order the exchange has is in the
journal with the exchange's own state, and nothing the journal calls REJECTED exists.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import hypothesis.strategies as st
import trio
import trio.testing
from hypothesis import given, settings

from genesis.bus import EventBus
from genesis.errors import GenesisError, OrderOutcomeUnknownError
from genesis.models.orders import OrderRequest, OrderSide, OrderStatus
from genesis.orders.journal import Journal, open_journal
from genesis.orders.service import OrderService
from tests.gateway_support import MemorySim, memory_gateway

D = Decimal

FAULTS = st.sampled_from(["none", "slow", "burst", "execute_then_503"])


def request(i: int, market: bool) -> OrderRequest:
    """A MARKET order fills at once (so a resend under the same id would be accepted by the
    exchange: the first is no longer open); a LIMIT far below the market rests."""
    if market:
        return OrderRequest.market(symbol="BTCUSDT", side=OrderSide.BUY, quantity=D("0.001"))
    return OrderRequest.limit(
        symbol="BTCUSDT", side=OrderSide.BUY, quantity=D("0.001"), price=D(50000 + i)
    )


def apply_fault(m: MemorySim, fault: str, latency_s: float) -> None:
    m.sim.faults.reset()
    if fault == "slow":
        m.sim.faults.latency(latency_s)  # past the 30 s call deadline: outcome unknown
    elif fault == "burst":
        m.sim.faults.error_burst(2, status=503)
    elif fault == "execute_then_503":
        m.sim.faults.execute_then_503(1)


async def place_all(
    m: MemorySim, journal: Journal, schedule: list[tuple[str, float, bool]]
) -> None:
    service = OrderService(m.gateway, journal, EventBus().publish)
    async with trio.open_nursery() as resolvers:
        for i, (fault, latency_s, market) in enumerate(schedule):
            apply_fault(m, fault, latency_s)
            req = request(i, market)
            try:
                await service.place(req)
            except OrderOutcomeUnknownError as exc:
                resolvers.start_soon(settle, service, req, exc)
            except GenesisError:
                pass  # refused or not sent: journaled REJECTED
        m.sim.faults.reset()


async def settle(service: OrderService, req: OrderRequest, exc: OrderOutcomeUnknownError) -> None:
    with trio.move_on_after(600):
        await service.resolve(req, exc)


async def check(m: MemorySim, journal: Journal) -> None:
    placed = m.sim.exchange.all_orders(m.sim.api_key, "BTCUSDT", order_id=1, limit=1000)
    counts = Counter(o.client_order_id for o in placed)
    assert all(n == 1 for n in counts.values()), counts  # never twice on the exchange
    for order in placed:
        entry = await journal.get(order.client_order_id)
        assert entry is not None, f"{order.client_order_id} is on the exchange, not in the journal"
        assert entry.exchange_order_id == order.order_id
        assert entry.exchange_status == order.status, order.client_order_id
    on_exchange = {o.client_order_id for o in placed}
    assert {e.client_order_id for e in await journal.unfinished()} <= on_exchange  # none UNKNOWN
    assert journal.statistics().orders >= len(on_exchange)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(FAULTS, st.sampled_from([31.0, 45.0, 120.0]), st.booleans()),
        min_size=1,
        max_size=8,
    )
)
def test_timeouts_and_5xx_never_create_duplicates(
    schedule: list[tuple[str, float, bool]],
) -> None:
    async def main() -> None:
        async with memory_gateway() as m, open_journal(":memory:") as journal:
            await place_all(m, journal, schedule)
            await trio.sleep(200)  # any abandoned request the simulator still sleeps on ends
            await check(m, journal)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_execute_then_503_leaves_exactly_one_order_known_to_the_journal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_gateway() as m, open_journal(":memory:") as journal:
        await place_all(m, journal, [("execute_then_503", 0.0, False)])
        [order] = m.sim.exchange.all_orders(m.sim.api_key, "BTCUSDT", order_id=1)
        entry = await journal.get(order.client_order_id)
        assert entry is not None
        assert (entry.status, entry.exchange_status) == (OrderStatus.PENDING, "NEW")
        assert entry.exchange_order_id == order.order_id
        kinds = [e.kind.value for e in await journal.history(order.client_order_id)]
        assert kinds == ["INTENT", "SENT", "UNKNOWN", "RESOLVED"]
