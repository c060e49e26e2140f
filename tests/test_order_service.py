"""The order service: journal before sending, checks before the journal, one send, recorded
outcomes; the exchangeInfo cache that spares a slow exchange a round trip.

Against the simulator in memory under ``autojump_clock``; expected states come from the
simulator's books and the journal's own history, never from the service's return values alone.
"""

from __future__ import annotations

from decimal import Decimal

import attrs
import httpx
import orjson
import pytest
import trio
import trio.testing

from genesis.bus import EventBus
from genesis.config import Settings
from genesis.errors import ExchangeRejectedError, OrderOutcomeUnknownError, PreTradeCheckError
from genesis.exchange.gateway import GatewayConfig, open_gateway
from genesis.models.events import OrderUpdate, OrderUpdateSource
from genesis.models.orders import Order, OrderRequest, OrderSide, OrderStatus
from genesis.orders.journal import JournalEventKind, open_journal
from genesis.orders.service import FILTER_REFRESH_INTERVAL_S, OrderService
from genesis.sim.clock import SimClock
from genesis.sim.server import SimConfig, build_simulator
from tests.gateway_support import T0, memory_gateway

D = Decimal


def limit_buy(
    price: str = "50000", quantity: str = "0.001", symbol: str = "BTCUSDT"
) -> OrderRequest:
    return OrderRequest.limit(
        symbol=symbol, side=OrderSide.BUY, quantity=D(quantity), price=D(price)
    )


async def test_the_intent_is_journaled_before_the_request_leaves(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = EventBus()
    updates = bus.subscribe(OrderUpdate)
    async with memory_gateway() as m, open_journal(":memory:") as journal:
        service = OrderService(m.gateway, journal, bus.publish)
        order = await service.place(limit_buy(price="50000.009"))  # snapped down to the tick
        assert order.price == D("50000.00")
        kinds = [e.kind for e in await journal.history(order.client_order_id)]
        assert kinds == [JournalEventKind.INTENT, JournalEventKind.SENT, JournalEventKind.UPDATE]
        entry = await journal.get(order.client_order_id)
        assert entry is not None
        assert entry.request is not None
        assert entry.request.price == D("50000.00")
        assert (entry.status, entry.exchange_status) == (OrderStatus.PENDING, "NEW")
        assert order.client_order_id.startswith(journal.prefix + "-")
        [sim_order] = m.sim.exchange.open_orders(m.sim.api_key)
        assert sim_order.client_order_id == order.client_order_id
        assert (await updates.receive()).order.client_order_id == order.client_order_id
        cancelled = await service.cancel("BTCUSDT", order_id=order.exchange_order_id)
        assert cancelled.status is OrderStatus.CANCELLED
        queried = await service.query("BTCUSDT", client_order_id=order.client_order_id)
        assert queried.exchange_status == "CANCELED"
        final = await journal.get(order.client_order_id)
        assert final is not None
        assert final.status is OrderStatus.CANCELLED


async def test_a_filter_violation_is_refused_before_any_request_and_journaled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_gateway() as m, open_journal(":memory:") as journal:
        service = OrderService(m.gateway, journal, EventBus().publish)
        sent_before = m.sim.rest.statistics().requests
        with pytest.raises(PreTradeCheckError) as info:
            await service.place(limit_buy(quantity="0.00001"))  # 0.5 USDT < NOTIONAL 5
        assert info.value.filter_name == "NOTIONAL"
        with pytest.raises(PreTradeCheckError, match="SYMBOL"):
            await service.place(limit_buy(symbol="DOGEUSDT"))
        assert m.sim.rest.statistics().requests == sent_before
        rejected = [e for e in await journal.unfinished()]
        assert rejected == []  # both intents ended REJECTED
        assert journal.statistics().orders == 2


async def test_an_exchange_filter_rejection_refreshes_the_cached_filters(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_gateway() as m, open_journal(":memory:") as journal:
        service = OrderService(m.gateway, journal, EventBus().publish)
        info_before = m.gateway.cached_exchange_info
        m.sim.faults.halt("BTCUSDT")  # not a filter failure: no refresh
        with pytest.raises(ExchangeRejectedError) as halted:
            await service.place(limit_buy())
        assert halted.value.code == -2010
        assert m.gateway.cached_exchange_info is info_before
        m.sim.faults.reset()
        # Filters that disagree with the exchange's (a tick ten times finer, as if the exchange
        # had changed it since they were read): our check passes, the exchange says -1013.
        assert info_before is not None
        btc = info_before.symbols["BTCUSDT"]
        finer = attrs.evolve(btc, filters=attrs.evolve(btc.filters, tick_size=D("0.001")))
        m.gateway.adopt_exchange_info(
            attrs.evolve(info_before, symbols={**info_before.symbols, "BTCUSDT": finer})
        )
        with pytest.raises(ExchangeRejectedError) as filtered:
            await service.place(limit_buy(price="50000.005"))
        assert filtered.value.code == -1013
        refreshed = m.gateway.cached_exchange_info
        assert refreshed is not None
        assert refreshed.symbols["BTCUSDT"].filters.tick_size == D("0.01")  # read again
        # A refresh that fails (a minute later: refreshes are spaced) keeps the old filters
        # and is only a warning.
        await trio.sleep(FILTER_REFRESH_INTERVAL_S)
        kept = m.gateway.cached_exchange_info
        m.sim.faults.error_burst(1)
        await service._refresh_filters()
        assert m.gateway.cached_exchange_info is kept


async def test_filter_rejections_read_the_filters_again_at_most_once_a_minute(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A BUY far above the average price: our checks pass (they have no reference price), the
    # exchange refuses it with -1013 PERCENT_PRICE_BY_SIDE every time, and every time the
    # filters are the same: only the first refusal of a minute reads them again.
    async with memory_gateway() as m, open_journal(":memory:") as journal:
        service = OrderService(m.gateway, journal, EventBus().publish)
        trade = OrderRequest.market(symbol="BTCUSDT", side=OrderSide.BUY, quantity=D("0.001"))
        sent: list[int] = []
        for wait_s in (0.0, 1.0, FILTER_REFRESH_INTERVAL_S):
            await trio.sleep(wait_s)
            await service.place(trade)  # a trade this minute: there is an average price
            before = m.sim.rest.statistics().requests
            with pytest.raises(ExchangeRejectedError, match="PERCENT_PRICE_BY_SIDE"):
                await service.place(limit_buy(price="900000"))
            sent.append(m.sim.rest.statistics().requests - before)
    assert sent == [2, 1, 2]  # the order, and exchangeInfo: read, skipped, read again


async def test_without_exchange_info_the_exchange_checks_alone(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with memory_gateway(prepare=False) as m, open_journal(":memory:") as journal:
        service = OrderService(m.gateway, journal, EventBus().publish)
        order = await service.place(limit_buy())
        assert order.exchange_status == "NEW"
    assert any(r.getMessage().startswith("orders.unchecked") for r in caplog.records)


async def test_a_user_stream_report_that_beats_the_timeout_settles_the_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = EventBus()
    updates = bus.subscribe(OrderUpdate)
    async with memory_gateway() as m, open_journal(":memory:") as journal:
        service = OrderService(m.gateway, journal, bus.publish)
        m.sim.faults.latency(45.0)

        async def stream_reports_it() -> None:
            # What the user stream would do: the exchange's report arrives first.
            await trio.sleep(1)
            [placed] = m.sim.exchange.open_orders(m.sim.api_key)
            report = Order(
                client_order_id=placed.client_order_id,
                exchange_order_id=placed.order_id,
                symbol="BTCUSDT",
                type=limit_buy().type,
                side=OrderSide.BUY,
                price=D("50000"),
                quantity=D("0.001"),
                status=OrderStatus.PENDING,
                exchange_status="NEW",
            )
            await service.recorder.record(report, OrderUpdateSource.USER_STREAM)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream_reports_it)
            with pytest.raises(OrderOutcomeUnknownError):
                await service.place(limit_buy())
        first = await updates.receive()
        assert first.source is OrderUpdateSource.USER_STREAM
        # No UNKNOWN was published: the journal already knew the order was live.
        with pytest.raises(trio.WouldBlock):
            updates.receive_nowait()


async def test_an_order_the_journal_never_saw_is_recorded_as_external(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_gateway() as m, open_journal(":memory:") as journal:
        service = OrderService(m.gateway, journal, EventBus().publish)
        placed = await m.gateway.place_order(limit_buy().with_client_order_id("by-hand-1"))
        found = await service.query("BTCUSDT", order_id=placed.exchange_order_id)
        entry = await journal.get("by-hand-1")
        assert entry is not None
        assert entry.external
        assert entry.exchange_order_id == found.exchange_order_id


async def test_exchange_info_comes_from_the_journal_cache_when_fresh(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_gateway(prepare=False) as m, open_journal(":memory:") as journal:
        gw = m.gateway
        assert await gw.load_exchange_info(journal) is not None  # read and cached
        cached = await journal.cached_exchange_info()
        assert cached is not None
        assert orjson.loads(cached[0])["serverTime"] == T0
        reads = m.sim.rest.statistics().requests
        assert await gw.load_exchange_info(journal) is not None
        assert m.sim.rest.statistics().requests == reads  # from the cache: no round trip
        await trio.sleep(3601)  # older than an hour: read again
        assert await gw.load_exchange_info(journal) is not None
        assert m.sim.rest.statistics().requests == reads + 1
        await journal.cache_exchange_info(b"{not json", fetched_ms=gw.server_time_ms())
        assert await gw.load_exchange_info(journal) is not None  # unreadable cache: read
        assert m.sim.rest.statistics().requests == reads + 2
        m.sim.faults.error_burst(1)
        kept = gw.cached_exchange_info
        await trio.sleep(3601)
        assert await gw.load_exchange_info(journal) is kept  # failed read: the old one stays


async def test_the_gateway_opens_from_a_fresh_cache_without_reading_exchange_info(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limit = {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 7}
    body = orjson.dumps({"serverTime": T0, "rateLimits": [limit], "symbols": []})
    async with open_journal(":memory:") as journal:
        await journal.cache_exchange_info(body, fetched_ms=T0)
        sim = build_simulator(SimConfig(epoch_ms=T0))
        transport = httpx.ASGITransport(app=sim.http_app, client=("127.0.0.1", 40000))
        async with open_gateway(
            Settings(),
            rest_url="http://sim.test",
            transport=transport,
            wall_clock_ms=SimClock.start(T0).now_ms,
            config=GatewayConfig(time_sync_samples=1),
            exchange_info_cache=journal,
        ) as gw:
            limits = {(b.type.value, b.interval): b.limit for b in gw.statistics().limiter.buckets}
            assert limits[("ORDERS", "10S")] == 7  # the cached limits, not the live 50
            assert sim.rest.statistics().requests == 1  # only the time sync went out
