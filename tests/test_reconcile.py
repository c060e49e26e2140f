"""Reconciliation: the journal checked against the exchange, one bounded cycle at a time.

Against the simulator in memory under ``autojump_clock``. Orders change "behind Genesis's back"
by calls that bypass the service and its journal: the raw gateway (``m.gateway``), or another
account trading on the simulator's exchange directly. Expected states come from the simulator
and the journal; times are exact virtual times.
"""

from __future__ import annotations

import functools
import logging
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import TYPE_CHECKING

import attrs
import pytest
import trio
import trio.testing

from genesis.errors import ExchangeUnavailableError, GenesisError, OrderOutcomeUnknownError
from genesis.models.events import OrderUpdate, OrderUpdateSource
from genesis.models.orders import Order, OrderRequest, OrderSide, OrderStatus
from genesis.orders.journal import JournalEventKind, open_journal
from genesis.orders.reconcile import (
    ReconcileConfig,
    ReconcileReport,
    reconcile_once,
    reconcile_trigger,
    run_reconciler,
)
from genesis.orders.service import OrderService
from tests.gateway_support import memory_gateway

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from genesis.exchange.gateway import Gateway
    from genesis.models.exchange_info import ExchangeInfo
    from genesis.orders.journal import Journal
    from tests.gateway_support import MemorySim

D = Decimal
OTHER_ACCOUNT = "another-trader"
NOTHING = ReconcileReport(
    symbols=("BTCUSDT",),
    open_on_exchange=0,
    checked=0,
    changed=(),
    external=(),
    never_sent=(),
    never_existed=(),
    still_unknown=(),
    errors=(),
)
"""The report of a cycle that finds nothing to do in BTCUSDT."""
READY_S = 6.0
"""recvWindow (5000 ms, the gateway's default) + RESOLVE_MARGIN_MS (1000 ms)."""


def limit_buy(price: str = "50000", client_order_id: str | None = None) -> OrderRequest:
    return OrderRequest.limit(
        symbol="BTCUSDT",
        side=OrderSide.BUY,
        quantity=D("0.001"),
        price=D(price),
        client_order_id=client_order_id,
    )


class DelegatingGateway:
    """The memory gateway seen through :class:`~genesis.orders.service.OrderGateway` only."""

    def __init__(self, inner: Gateway) -> None:
        self.inner = inner

    @property
    def recv_window_ms(self) -> int:
        return self.inner.recv_window_ms

    @property
    def cached_exchange_info(self) -> ExchangeInfo | None:
        return self.inner.cached_exchange_info

    def server_time_ms(self) -> int:
        return self.inner.server_time_ms()

    async def exchange_info(self, symbols: list[str] | None = None) -> ExchangeInfo:
        return await self.inner.exchange_info(symbols)

    async def place_order(
        self, request: OrderRequest, *, expected_price: Decimal | None = None
    ) -> Order:
        return await self.inner.place_order(request, expected_price=expected_price)

    async def get_order(
        self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None
    ) -> Order:
        return await self.inner.get_order(
            symbol, client_order_id=client_order_id, order_id=order_id
        )

    async def cancel_order(
        self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None
    ) -> Order:
        return await self.inner.cancel_order(
            symbol, client_order_id=client_order_id, order_id=order_id
        )


class RecordingGateway(DelegatingGateway):
    """Notes when each single-order query starts; can fail the next ones with given errors."""

    def __init__(self, inner: Gateway) -> None:
        super().__init__(inner)
        self.queries: list[tuple[float, str]] = []
        self.query_errors: list[GenesisError] = []

    async def get_order(
        self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None
    ) -> Order:
        assert client_order_id is not None
        self.queries.append((trio.current_time(), client_order_id))
        if self.query_errors:
            raise self.query_errors.pop(0)
        return await super().get_order(symbol, client_order_id=client_order_id)

    async def open_orders(self, symbol: str | None = None) -> tuple[Order, ...]:
        return await self.inner.open_orders(symbol)


@attrs.define
class World:
    m: MemorySim
    journal: Journal
    service: OrderService
    gateway: RecordingGateway
    published: list[OrderUpdate]

    def requests(self) -> int:
        """Requests the simulator has answered so far."""
        return self.m.sim.rest.statistics().requests

    async def entry_status(self, client_order_id: str) -> tuple[OrderStatus, str | None]:
        entry = await self.journal.get(client_order_id)
        assert entry is not None
        return entry.status, entry.exchange_status

    async def last_event(self, client_order_id: str) -> tuple[object, ...]:
        event = (await self.journal.history(client_order_id))[-1]
        return event.kind, event.source, event.status, event.reason

    async def intent(self, *, sent: bool) -> str:
        """An intent in the journal that never reached the exchange (claimed if ``sent``)."""
        now_ms = self.m.gateway.server_time_ms()
        entry = await self.journal.record_intent(limit_buy(), now_ms=now_ms)
        if sent:
            await self.journal.record_sent(entry.client_order_id, sent_at_ms=now_ms)
        return entry.client_order_id

    def other_account_sells(self, quantity: str) -> None:
        """Another trader sells at market on the simulator itself: it takes the best bids."""
        sim = self.m.sim
        sim.exchange.place_order(
            OTHER_ACCOUNT,
            symbol="BTCUSDT",
            side="SELL",
            type="MARKET",
            quantity=quantity,
            now_ms=sim.clock.now_ms(),
        )


@asynccontextmanager
async def world() -> AsyncIterator[World]:
    async with memory_gateway() as m, open_journal(":memory:") as journal:
        published: list[OrderUpdate] = []

        async def publish(event: OrderUpdate) -> None:
            await trio.lowlevel.checkpoint()
            published.append(event)

        gateway = RecordingGateway(m.gateway)
        m.sim.exchange.add_account(OTHER_ACCOUNT)
        yield World(m, journal, OrderService(gateway, journal, publish), gateway, published)


def best_bid_plus_tick(m: MemorySim) -> str:
    """A price that rests alone at the top of the bids (the spread is wider than a tick)."""
    (bid, _), ask = m.sim.exchange.top_of_book("BTCUSDT")  # type: ignore[misc]  # seeded book
    price = bid + D("0.01")
    assert ask is not None
    assert price < ask[0]
    return str(price)


async def test_orders_filled_or_cancelled_behind_our_back_are_updated(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with world() as w:
        filled = await w.service.place(limit_buy(best_bid_plus_tick(w.m)))
        cancelled = await w.service.place(limit_buy("50000"))
        w.other_account_sells("0.001")  # takes our bid, the best one
        await w.m.gateway.cancel_order("BTCUSDT", client_order_id=cancelled.client_order_id)
        w.published.clear()
        start = trio.current_time()
        report = await reconcile_once(w.service, symbols=["BTCUSDT"])
        ids = (filled.client_order_id, cancelled.client_order_id)
        assert report == attrs.evolve(NOTHING, checked=2, changed=ids)
        assert [t - start for t, _ in w.gateway.queries] == [0.0, 0.1]  # oldest first, spaced
        assert await w.entry_status(ids[0]) == (OrderStatus.FILLED, "FILLED")
        assert await w.entry_status(ids[1]) == (OrderStatus.CANCELLED, "CANCELED")
        update = (JournalEventKind.UPDATE, OrderUpdateSource.RECONCILE)
        assert (await w.last_event(ids[0]))[:2] == update
        assert [(u.order.client_order_id, u.source) for u in w.published] == [
            (ids[0], OrderUpdateSource.RECONCILE),
            (ids[1], OrderUpdateSource.RECONCILE),
        ]
        # Settled: the next cycle has nothing to ask for.
        assert await reconcile_once(w.service, symbols=["BTCUSDT"]) == NOTHING
        assert len(w.gateway.queries) == 2


async def test_an_order_placed_by_another_client_is_journaled_as_external(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with world() as w:
        await w.m.gateway.place_order(limit_buy(client_order_id="by-hand-1"))
        report = await reconcile_once(w.service, symbols=["BTCUSDT"])
        assert report == attrs.evolve(NOTHING, open_on_exchange=1, external=("by-hand-1",))
        entry = await w.journal.get("by-hand-1")
        assert entry is not None
        assert (entry.external, entry.status, entry.exchange_status) == (
            True,
            OrderStatus.PENDING,
            "NEW",
        )
        # Known now, and unchanged: not recorded (nor published) again.
        again = await reconcile_once(w.service, symbols=["BTCUSDT"])
        assert again == attrs.evolve(NOTHING, open_on_exchange=1)
        assert len(await w.journal.history("by-hand-1")) == 1
        assert len(w.published) == 1
        # Cancelled by its owner: the journal follows, by a query (external: no recvWindow wait).
        await w.m.gateway.cancel_order("BTCUSDT", client_order_id="by-hand-1")
        gone = await reconcile_once(w.service, symbols=["BTCUSDT"])
        assert gone == attrs.evolve(NOTHING, checked=1, changed=("by-hand-1",))
        assert await w.entry_status("by-hand-1") == (OrderStatus.CANCELLED, "CANCELED")


async def test_an_intent_that_never_left_is_rejected_without_a_query(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with world() as w:
        cid = await w.intent(sent=False)
        before = w.requests()
        # Young: a placement in this process may be about to claim it.
        await trio.sleep(READY_S - 0.5)
        report = await reconcile_once(w.service, symbols=[])
        assert report == attrs.evolve(NOTHING, still_unknown=(cid,))
        await trio.sleep(1.0)
        report = await reconcile_once(w.service, symbols=[])
        assert report == attrs.evolve(NOTHING, never_sent=(cid,))
        assert w.requests() == before + 2  # one openOrders (its symbol) per cycle, nothing else
        assert w.gateway.queries == []
        assert await w.entry_status(cid) == (OrderStatus.REJECTED, None)
        assert await w.last_event(cid) == (
            JournalEventKind.UPDATE,
            OrderUpdateSource.RECONCILE,
            OrderStatus.REJECTED,
            "never sent (found by reconciliation)",
        )
        assert w.m.sim.exchange.open_orders(w.m.sim.api_key) == []


async def test_an_unknown_outcome_is_left_until_recv_window_has_passed_then_settled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with world() as w:
        w.m.sim.faults.execute_then_503()  # executed (filled at once), answered 503 -1007
        market = OrderRequest.market(symbol="BTCUSDT", side=OrderSide.BUY, quantity=D("0.001"))
        with pytest.raises(OrderOutcomeUnknownError) as unknown:
            await w.service.place(market)
        cid = unknown.value.client_order_id
        assert await w.entry_status(cid) == (OrderStatus.UNKNOWN, None)
        sent_at = trio.current_time()
        await trio.sleep(READY_S - 0.5)
        report = await reconcile_once(w.service, symbols=["BTCUSDT"])
        assert report == attrs.evolve(NOTHING, still_unknown=(cid,))
        assert w.gateway.queries == []  # not asked: it could still have arrived
        await trio.sleep(0.5)
        report = await reconcile_once(w.service, symbols=["BTCUSDT"])
        assert report == attrs.evolve(NOTHING, checked=1, changed=(cid,))
        assert [t - sent_at for t, _ in w.gateway.queries] == [READY_S]
        assert await w.entry_status(cid) == (OrderStatus.FILLED, "FILLED")
        assert (await w.last_event(cid))[:2] == (
            JournalEventKind.RESOLVED,
            OrderUpdateSource.RECONCILE,
        )


async def test_an_unknown_outcome_resting_on_the_book_is_settled_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with world() as w:
        w.m.sim.faults.execute_then_503()
        with pytest.raises(OrderOutcomeUnknownError) as unknown:
            await w.service.place(limit_buy())
        cid = unknown.value.client_order_id
        report = await reconcile_once(w.service, symbols=[])
        assert report == attrs.evolve(NOTHING, open_on_exchange=1, changed=(cid,))
        assert await w.entry_status(cid) == (OrderStatus.PENDING, "NEW")


async def test_minus_2013_after_recv_window_means_it_never_existed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with world() as w:
        cid = await w.intent(sent=True)  # claimed, then the process died before sending
        await trio.sleep(READY_S - 0.5)
        report = await reconcile_once(w.service, symbols=["BTCUSDT"])
        assert report == attrs.evolve(NOTHING, still_unknown=(cid,))
        await trio.sleep(0.5)
        report = await reconcile_once(w.service, symbols=["BTCUSDT"])
        assert report == attrs.evolve(NOTHING, checked=1, never_existed=(cid,))
        assert await w.last_event(cid) == (
            JournalEventKind.UPDATE,
            OrderUpdateSource.RECONCILE,
            OrderStatus.REJECTED,
            "never reached the exchange (-2013 after recvWindow, reconciliation)",
        )


async def test_at_most_ten_queries_per_cycle_a_tenth_of_a_second_apart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with world() as w:
        cids = [await w.intent(sent=True) for _ in range(25)]
        await trio.sleep(READY_S)
        for first, last in ((0, 10), (10, 20), (20, 25)):
            start = trio.current_time()
            w.gateway.queries.clear()
            report = await reconcile_once(w.service, symbols=["BTCUSDT"])
            assert report.never_existed == tuple(cids[first:last])  # oldest first
            assert report.still_unknown == tuple(cids[last:])
            assert report.checked == last - first
            times = [round(t - start, 9) for t, _ in w.gateway.queries]
            assert times == [k / 10 for k in range(last - first)]
        assert await w.journal.unfinished() == []


async def test_an_acknowledged_order_the_exchange_has_never_heard_of_is_an_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Binance archives old cancelled orders without fills: -2013 then is no "never existed".
    async with world() as w:
        cid = await w.intent(sent=True)
        acknowledged = Order.from_request(
            limit_buy(), client_order_id=cid, exchange_order_id=987654
        )
        acknowledged = attrs.evolve(acknowledged, exchange_status="NEW")
        await w.service.recorder.record(acknowledged, OrderUpdateSource.REST)
        report = await reconcile_once(w.service, symbols=["BTCUSDT"])  # no recvWindow wait
        assert report == attrs.evolve(
            NOTHING,
            checked=1,
            still_unknown=(cid,),
            errors=(f"{cid}: ExchangeRejectedError: Binance error -2013: Order does not exist.",),
        )
        assert await w.entry_status(cid) == (OrderStatus.PENDING, "NEW")


async def test_a_journal_view_newer_than_the_exchange_list_is_kept_and_a_terminal_one_flagged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with world() as w:
        # A partial fill the user stream reported after the exchange's list was taken.
        newer = await w.intent(sent=True)
        placed = await w.m.gateway.place_order(limit_buy(client_order_id=newer))
        partial = attrs.evolve(
            placed,
            status=OrderStatus.PARTIAL,
            exchange_status="PARTIALLY_FILLED",
            filled_quantity=D("0.0005"),
        )
        await w.service.recorder.record(partial, OrderUpdateSource.USER_STREAM)
        # An order the journal concluded REJECTED that is nonetheless open on the exchange.
        concluded = await w.intent(sent=True)
        rejected = Order.from_request(
            limit_buy(), client_order_id=concluded, status=OrderStatus.REJECTED
        )
        await w.service.recorder.record(rejected, OrderUpdateSource.REST, reason="test")
        await w.m.gateway.place_order(limit_buy(client_order_id=concluded))
        report = await reconcile_once(w.service, symbols=["BTCUSDT"])
        assert report == attrs.evolve(
            NOTHING,
            open_on_exchange=2,
            errors=(f"{concluded}: the journal has it REJECTED, the exchange lists it NEW",),
        )
        assert await w.entry_status(newer) == (OrderStatus.PARTIAL, "PARTIALLY_FILLED")
        assert await w.entry_status(concluded) == (OrderStatus.REJECTED, None)


async def test_an_order_settled_while_the_cycle_runs_is_not_queried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with world() as w:
        placed = await w.service.place(limit_buy())
        cancelled = await w.m.gateway.cancel_order("BTCUSDT", order_id=placed.exchange_order_id)
        w.m.sim.faults.latency(1.0)  # the open-orders answer takes a second

        async def stream_reports_it() -> None:
            await trio.sleep(0.5)
            await w.service.recorder.record(cancelled, OrderUpdateSource.USER_STREAM)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream_reports_it)
            report = await reconcile_once(w.service, symbols=[])
        assert report == NOTHING
        assert w.gateway.queries == []


async def test_a_refused_symbol_is_reported_and_the_others_still_reconciled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with world() as w:
        await w.m.gateway.place_order(limit_buy(client_order_id="by-hand-2"))
        report = await reconcile_once(w.service, symbols=["DOGEUSDT", "BTCUSDT"])
        assert report == attrs.evolve(
            NOTHING,
            symbols=("DOGEUSDT", "BTCUSDT"),
            open_on_exchange=1,
            external=("by-hand-2",),
            errors=("DOGEUSDT: ExchangeRejectedError: Binance error -1121: Invalid symbol.",),
        )


async def test_many_symbols_take_one_all_symbols_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with world() as w:
        await w.m.gateway.place_order(limit_buy(client_order_id="by-hand-3"))
        symbols = [f"S{i}USDT" for i in range(13)]  # 14 × weight 6 > 80
        before = w.requests()
        report = await reconcile_once(w.service, symbols=[*symbols, "BTCUSDT"])
        assert w.requests() == before + 1
        assert (report.open_on_exchange, report.external) == (1, ("by-hand-3",))


async def test_exchange_trouble_fails_the_whole_cycle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with world() as w:
        w.m.sim.faults.error_burst(1)
        with pytest.raises(ExchangeUnavailableError):
            await reconcile_once(w.service, symbols=["BTCUSDT"])
        cid = await w.intent(sent=True)
        await trio.sleep(READY_S)
        w.gateway.query_errors.append(ExchangeUnavailableError(-1008, "Server is busy"))
        with pytest.raises(ExchangeUnavailableError):
            await reconcile_once(w.service, symbols=["BTCUSDT"])
        assert await w.entry_status(cid) == (OrderStatus.PENDING, None)  # left for later


# --- run_reconciler ---------------------------------------------------------------------------


async def test_the_reconciler_runs_at_start_and_after_each_gap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with world() as w, trio.open_nursery() as nursery:
        on_gap, trigger = reconcile_trigger()
        start = trio.current_time()
        handle = await nursery.start(
            functools.partial(run_reconciler, w.service, symbols=["BTCUSDT"], trigger=trigger)
        )
        stats = handle.statistics()
        assert (stats.cycles, stats.failures, stats.last_success_at) == (1, 0, start)
        assert stats.last_report == NOTHING
        placed = await w.service.place(limit_buy())
        await w.m.gateway.cancel_order("BTCUSDT", order_id=placed.exchange_order_id)
        await trio.sleep(10)
        assert handle.statistics().cycles == 1  # nothing pending: no cycle without a gap
        await on_gap()
        await trio.sleep(1)
        stats = handle.statistics()
        assert (stats.cycles, stats.last_success_at) == (2, start + 10)
        assert stats.last_report == attrs.evolve(
            NOTHING, checked=1, changed=(placed.client_order_id,)
        )
        nursery.cancel_scope.cancel()


async def test_gaps_during_a_cycle_coalesce_into_one_more_cycle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with world() as w, trio.open_nursery() as nursery:
        on_gap, trigger = reconcile_trigger()
        start = trio.current_time()
        handle = await nursery.start(
            functools.partial(run_reconciler, w.service, symbols=["BTCUSDT"], trigger=trigger)
        )
        w.m.sim.faults.latency(1.0)  # a cycle (one openOrders call) now takes a second
        await on_gap()  # cycle 2: [0, 1]
        await trio.sleep(0.5)
        for _ in range(3):
            await on_gap()  # one pending, two dropped: all covered by cycle 3, [1, 2]
        await trio.sleep(10)
        stats = handle.statistics()
        assert (stats.cycles, stats.last_success_at) == (3, start + 2)
        nursery.cancel_scope.cancel()


async def test_triggers_queued_on_a_larger_channel_are_taken_together(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with world() as w, trio.open_nursery() as nursery:
        send_chan, recv_chan = trio.open_memory_channel[None](4)
        start = trio.current_time()
        handle = await nursery.start(
            functools.partial(run_reconciler, w.service, symbols=["BTCUSDT"], trigger=recv_chan)
        )
        w.m.sim.faults.latency(1.0)
        send_chan.send_nowait(None)  # cycle 2: [0, 1]
        await trio.sleep(0.5)
        for _ in range(3):
            send_chan.send_nowait(None)  # all three: cycle 3, [1, 2]
        await send_chan.aclose()  # and then no more triggers: timers only
        await trio.sleep(10)
        stats = handle.statistics()
        assert (stats.cycles, stats.last_success_at) == (3, start + 2)
        nursery.cancel_scope.cancel()


async def test_unknown_orders_are_rechecked_until_settled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with world() as w, trio.open_nursery() as nursery:
        cid = await w.intent(sent=True)
        send_chan, recv_chan = trio.open_memory_channel[None](1)
        start = trio.current_time()
        handle = await nursery.start(
            functools.partial(run_reconciler, w.service, symbols=["BTCUSDT"], trigger=recv_chan)
        )
        assert handle.statistics().last_report == attrs.evolve(NOTHING, still_unknown=(cid,))
        await trio.sleep(20)  # rechecks at 5 (still within recvWindow + margin) and at 10
        stats = handle.statistics()
        assert (stats.cycles, stats.last_success_at) == (3, start + 10)
        assert stats.last_report == attrs.evolve(NOTHING, checked=1, never_existed=(cid,))
        await send_chan.aclose()  # the trigger's end: one more cycle, then timers only
        await trio.sleep(20)
        stats = handle.statistics()
        assert (stats.cycles, stats.last_success_at) == (4, start + 20)
        nursery.cancel_scope.cancel()


async def test_failed_cycles_are_retried_with_backoff_and_never_raise(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="genesis.orders.reconcile")
    async with world() as w, trio.open_nursery() as nursery:
        w.m.sim.faults.error_burst(3)  # the first three cycles' openOrders answer 503
        on_gap, trigger = reconcile_trigger()
        start = trio.current_time()
        handle = await nursery.start(
            functools.partial(run_reconciler, w.service, symbols=["BTCUSDT"], trigger=trigger)
        )
        stats = handle.statistics()  # started after the first attempt, failed as it was
        assert (stats.cycles, stats.failures, stats.consecutive_failures) == (0, 1, 1)
        assert stats.last_error is not None
        assert stats.last_error.startswith("ExchangeUnavailableError: Binance error -1008")
        await trio.sleep(0.5)
        await on_gap()  # does not cut the backoff short; the retry covers it
        await trio.sleep(10)
        stats = handle.statistics()
        assert (stats.cycles, stats.failures, stats.consecutive_failures) == (1, 3, 0)
        assert stats.last_success_at == start + 1 + 2 + 4
        retries = [
            r.getMessage().rsplit("retry_in_s=", 1)[1]
            for r in caplog.records
            if r.getMessage().startswith("reconcile.failed")
        ]
        assert retries == ["1", "2", "4"]
        assert all(
            r.levelno == logging.WARNING
            for r in caplog.records
            if r.getMessage().startswith("reconcile.failed")
        )
        nursery.cancel_scope.cancel()


async def test_a_cycle_with_errors_is_repeated_on_the_backoff_schedule(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with world() as w, trio.open_nursery() as nursery:
        start = trio.current_time()
        handle = await nursery.start(
            functools.partial(
                run_reconciler,
                w.service,
                symbols=["DOGEUSDT"],
                config=ReconcileConfig(recheck_s=2.0),
            )
        )
        await trio.sleep(7.5)
        stats = handle.statistics()
        assert (stats.cycles, stats.failures) == (4, 0)  # at 0, 1, 3 and 7
        assert stats.last_success_at == start + 7
        assert stats.last_report is not None
        assert len(stats.last_report.errors) == 1
        nursery.cancel_scope.cancel()
