"""The REST gateway against the simulator: every method, every error mapping, every fault.

Time-heavy cases run the simulator in memory under ``autojump_clock`` (``memory_gateway``) and
assert exact virtual times; the round trip through real sockets runs over loopback
(``loopback_gateway``). Expected figures come from the simulator's own records (its order book,
its rate-limit headers, its clock), never from the gateway under test.
"""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
import trio
import trio.testing

from genesis.bus import EventBus
from genesis.config import Settings
from genesis.errors import (
    CircuitOpenError,
    ConfigError,
    ConnectError,
    ExchangeRejectedError,
    ExchangeUnavailableError,
    IpBannedError,
    OrderOutcomeUnknownError,
    RateLimitedError,
    ReadTimeoutError,
)
from genesis.exchange.gateway import GatewayConfig, GatewayTimeouts, open_gateway
from genesis.models.events import BreakerState, BreakerTransition
from genesis.models.exchange_info import RateLimitType
from genesis.models.orders import OrderRequest, OrderSide, OrderStatus
from tests.gateway_support import T0, loopback_gateway, memory_gateway

D = Decimal

pytestmark = pytest.mark.filterwarnings("error")


def limit_buy(price: str = "50000", quantity: str = "0.001", **kw: object) -> OrderRequest:
    return OrderRequest.limit(
        symbol="BTCUSDT",
        side=OrderSide.BUY,
        quantity=D(quantity),
        price=D(price),
        **kw,  # type: ignore[arg-type]
    )


# --- over loopback ------------------------------------------------------------------------------


async def test_place_status_cancel_over_real_sockets() -> None:
    with trio.fail_after(20):
        async with loopback_gateway() as (handle, gw):
            placed = await gw.place_order(limit_buy())
            assert placed.exchange_status == "NEW"
            assert placed.status is OrderStatus.PENDING
            assert placed.exchange_order_id is not None
            assert (placed.price, placed.quantity) == (D("50000"), D("0.001"))
            assert placed.latency_ms is not None
            assert placed.latency_ms > 0
            # The simulator's own record of the account's orders agrees.
            book = handle.sim.exchange.open_orders(handle.api_key, "BTCUSDT")
            assert [o.client_order_id for o in book] == [placed.client_order_id]

            by_client = await gw.get_order("BTCUSDT", client_order_id=placed.client_order_id)
            by_id = await gw.get_order("BTCUSDT", order_id=placed.exchange_order_id)
            assert (
                by_client.exchange_order_id == by_id.exchange_order_id == placed.exchange_order_id
            )
            assert by_client.exchange_status == "NEW"

            cancelled = await gw.cancel_order("BTCUSDT", client_order_id=placed.client_order_id)
            assert cancelled.exchange_status == "CANCELED"
            assert cancelled.status is OrderStatus.CANCELLED
            assert cancelled.client_order_id == placed.client_order_id
            assert handle.sim.exchange.open_orders(handle.api_key, "BTCUSDT") == []
            stats = gw.statistics()
            assert stats.breaker.state is BreakerState.CLOSED
            assert stats.time_sync.synced


async def test_unreachable_exchange_is_a_connect_error_and_never_fatal_on_open() -> None:
    with trio.fail_after(20):
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        port = listener.socket.getsockname()[1]
        await listener.aclose()  # nothing listens there now: connections are refused
        config = GatewayConfig(time_sync_samples=1)
        async with open_gateway(
            Settings(), rest_url=f"http://127.0.0.1:{port}", config=config
        ) as gw:
            # open_gateway logged the failures and kept the fallback limits.
            limits = {(b.type, b.interval): b.limit for b in gw.statistics().limiter.buckets}
            assert limits[(RateLimitType.REQUEST_WEIGHT, "1M")] == 1200
            assert limits[(RateLimitType.ORDERS, "10S")] == 50
            with pytest.raises(ConnectError):
                await gw.ping()
            with pytest.raises(ConfigError, match="needs credentials"):
                await gw.account()


# --- in memory, virtual time ---------------------------------------------------------------------


async def test_open_reads_live_limits_and_syncs_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_gateway() as m:
        buckets = {
            (b.type, b.interval): (b.limit, b.budget)
            for b in m.gateway.statistics().limiter.buckets
        }
        assert buckets[(RateLimitType.REQUEST_WEIGHT, "1M")] == (6000, 4800)
        assert buckets[(RateLimitType.ORDERS, "10S")] == (50, 40)
        assert buckets[(RateLimitType.ORDERS, "1D")] == (160_000, 128_000)
        # The simulator's clock and the client's agree exactly in memory.
        assert m.gateway.server_time_ms() == m.sim.clock.now_ms()
        info = m.gateway.cached_exchange_info
        assert info is not None
        btc = info.symbol("BTCUSDT")
        assert btc is not None
        assert (btc.filters.tick_size, btc.filters.step_size) == (D("0.01"), D("0.00001"))
        assert btc.filters.min_notional == D("5")


async def test_market_order_fills_with_fills_slippage_and_trades(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_gateway() as m:
        best_ask = m.sim.exchange.depth("BTCUSDT", 5)["asks"][0][0]  # type: ignore[index]
        expected = D(str(best_ask))
        order = await m.gateway.place_order(
            OrderRequest.market(symbol="BTCUSDT", side=OrderSide.BUY, quantity=D("0.01")),
            expected_price=expected,
        )
        assert order.exchange_status == "FILLED"
        assert order.filled_quantity == D("0.01")
        assert order.fills
        assert sum(f.quantity for f in order.fills) == D("0.01")
        average = sum(f.price * f.quantity for f in order.fills) / D("0.01")
        assert order.average_price == average
        assert order.slippage_percent == (average - expected) / expected * 100
        assert order.slippage_percent >= 0
        trades = await m.gateway.my_trades("BTCUSDT", order_id=order.exchange_order_id)
        assert sum(t.quantity for t in trades) == D("0.01")
        assert {t.order_id for t in trades} == {order.exchange_order_id}
        account = await m.gateway.account()
        assert account.balance("BTC").free == D("10") + D("0.01") - sum(
            f.commission for f in order.fills if f.commission_asset == "BTC"
        )


async def test_open_orders_and_cancel_all(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_gateway() as m:
        placed = [await m.gateway.place_order(limit_buy(price=str(50000 + i))) for i in range(3)]
        opened = await m.gateway.open_orders("BTCUSDT")
        assert {o.client_order_id for o in opened} == {o.client_order_id for o in placed}
        everywhere = await m.gateway.open_orders()
        assert {o.client_order_id for o in everywhere} == {o.client_order_id for o in placed}
        cancelled = await m.gateway.cancel_open_orders("BTCUSDT")
        assert {o.exchange_status for o in cancelled} == {"CANCELED"}
        assert await m.gateway.open_orders("BTCUSDT") == ()


async def test_test_order_validates_without_placing(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_gateway() as m:
        await m.gateway.test_order(limit_buy())
        assert m.sim.exchange.open_orders(m.sim.api_key, "BTCUSDT") == []
        with pytest.raises(ExchangeRejectedError) as info:
            await m.gateway.test_order(limit_buy(price="50000.001"))
        assert (info.value.code, info.value.http_status) == (-1013, 400)
        assert info.value.msg == "Filter failure: PRICE_FILTER"


async def test_depth_and_ping_and_time(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_gateway() as m:
        await m.gateway.ping()
        assert await m.gateway.server_time() == m.sim.clock.now_ms()
        depth = await m.gateway.depth("BTCUSDT", limit=5)
        wire = m.sim.exchange.depth("BTCUSDT", 5)
        bids = wire["bids"]
        assert isinstance(bids, list)
        assert [str(level.price) for level in depth.bids] == [p for p, _ in bids]
        assert depth.last_update_id == wire["lastUpdateId"]


@pytest.mark.parametrize(
    ("request_", "code", "fragment"),
    [
        (limit_buy(price="5"), -1013, "NOTIONAL"),
        (limit_buy(quantity="0.000000001"), -1111, "precision"),
        (limit_buy(quantity="1000000"), -1013, "LOT_SIZE"),
        (limit_buy(quantity="30"), -2010, "insufficient balance"),
    ],
)
async def test_rejections_keep_binance_code_message_and_status(
    autojump_clock: trio.testing.MockClock, request_: OrderRequest, code: int, fragment: str
) -> None:
    async with memory_gateway() as m:
        with pytest.raises(ExchangeRejectedError) as info:
            await m.gateway.place_order(request_)
        assert info.value.code == code
        assert info.value.http_status == 400
        assert fragment in info.value.msg
        assert type(info.value) is ExchangeRejectedError
        # Business rejections are the caller's problem: the breaker stays closed.
        assert m.gateway.breaker.statistics().failures_in_window == 0


async def test_unknown_orders_answer_2013_and_2011(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_gateway() as m:
        with pytest.raises(ExchangeRejectedError) as query:
            await m.gateway.get_order("BTCUSDT", client_order_id="never-placed")
        assert query.value.code == -2013
        with pytest.raises(ExchangeRejectedError) as cancel:
            await m.gateway.cancel_order("BTCUSDT", order_id=987654321)
        assert cancel.value.code == -2011
        with pytest.raises(ValueError, match="exactly one"):
            await m.gateway.get_order("BTCUSDT")


async def test_execute_then_503_is_an_unknown_outcome_and_exactly_one_order_exists(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_gateway() as m:
        m.sim.faults.execute_then_503(1)
        request = limit_buy(client_order_id="exec-then-503")
        with pytest.raises(OrderOutcomeUnknownError) as info:
            await m.gateway.place_order(request)
        assert info.value.client_order_id == "exec-then-503"
        assert (info.value.http_status, info.value.code) == (503, -1007)
        assert info.value.sent_at_ms == T0
        # Never resent: the exchange holds exactly one order under that id.
        found = await m.gateway.get_order("BTCUSDT", client_order_id="exec-then-503")
        assert found.exchange_status == "NEW"
        assert [
            o.client_order_id for o in m.sim.exchange.open_orders(m.sim.api_key, "BTCUSDT")
        ] == ["exec-then-503"]
        assert m.gateway.statistics().unknown_outcomes == 1


async def test_a_5xx_burst_opens_the_breaker_which_half_opens_after_60_s(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = EventBus()
    transitions = bus.subscribe(BreakerTransition)
    async with memory_gateway(bus=bus) as m:
        start = trio.current_time()
        m.sim.faults.error_burst(5, status=503)
        for _ in range(5):
            with pytest.raises(ExchangeUnavailableError) as info:
                await m.gateway.ping()
            assert info.value.http_status == 503
        requests_before = m.sim.rest.statistics().requests
        with pytest.raises(CircuitOpenError) as fast:
            await m.gateway.ping()
        assert fast.value.retry_after_s == pytest.approx(60.0)
        assert m.sim.rest.statistics().requests == requests_before  # failed fast, not sent
        await trio.sleep_until(start + 60.0)
        await m.gateway.ping()  # the probe
        assert m.gateway.breaker.statistics().state is BreakerState.CLOSED
        seen = [transitions.receive_nowait() for _ in range(3)]
        assert [(t.previous, t.state) for t in seen] == [
            (BreakerState.CLOSED, BreakerState.OPEN),
            (BreakerState.OPEN, BreakerState.HALF_OPEN),
            (BreakerState.HALF_OPEN, BreakerState.CLOSED),
        ]
        assert seen[0].at == start
        assert seen[1].at == seen[2].at == start + 60.0


async def test_two_hundred_orders_at_once_never_draw_a_429_or_exceed_40_per_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_gateway() as m:
        placed: list[tuple[int, int]] = []  # (transactTime as the simulator stamped it, ...)
        rejected: list[BaseException] = []
        symbols = ("BTCUSDT", "ETHUSDT", "BNBUSDT")
        prices = {"BTCUSDT": "50000", "ETHUSDT": "2000", "BNBUSDT": "400"}

        async def one(i: int) -> None:
            symbol = symbols[i % 3]
            request = OrderRequest.limit(
                symbol=symbol,
                side=OrderSide.BUY,
                quantity={"BTCUSDT": D("0.001"), "ETHUSDT": D("0.01"), "BNBUSDT": D("0.02")}[
                    symbol
                ],
                price=D(prices[symbol]),
            )
            try:
                order = await m.gateway.place_order(request)
            except Exception as exc:  # collected and asserted below
                rejected.append(exc)
            else:
                placed.append((order.created_ms, i))

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(one, i)
        assert rejected == []
        assert len(placed) == 200
        per_window: dict[int, int] = {}
        for created_ms, _ in placed:
            per_window[created_ms // 10_000] = per_window.get(created_ms // 10_000, 0) + 1
        assert max(per_window.values()) <= 40
        # The simulator's own counter of 429s and order-count rejections saw none.
        assert m.sim.rest.statistics().client_errors == 0
        # 40 per window, five windows: the last one waits for the fifth window to open.
        assert trio.current_time() - start == pytest.approx(
            (T0 // 10_000 * 10_000 + 40_000 - T0) / 1000
        )


async def test_a_lowered_weight_limit_is_respected(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_gateway() as m:
        m.sim.faults.lower_limit("REQUEST_WEIGHT", "MINUTE", 1, 100)
        await m.gateway.exchange_info()  # weight 20: the gateway now knows the limit is 100
        start = trio.current_time()
        for _ in range(100):
            await m.gateway.ping()  # weight 1 each; budget 80 per minute
        assert m.sim.rest.statistics().client_errors == 0
        # 80 of the minute went to exchangeInfo (20+20 at open and now, 40 pings); the rest waited.
        assert trio.current_time() > start


async def test_429_holds_every_request_until_retry_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_gateway() as m:
        # Lowered behind the gateway's back: it still believes 6000/min, so the simulator 429s.
        m.sim.faults.lower_limit("REQUEST_WEIGHT", "MINUTE", 1, 45)

        async def flood() -> None:
            for _ in range(100):
                await m.gateway.ping()

        with pytest.raises(RateLimitedError) as info:
            await flood()
        retry_after = info.value.retry_after_s
        assert retry_after > 0
        assert (m.gateway.statistics().rate_limited, m.gateway.statistics().ip_banned) == (1, 0)
        held_at = trio.current_time()
        m.sim.faults.reset()
        await m.gateway.ping()  # waits in the limiter, not sent until the hold ends
        assert trio.current_time() == pytest.approx(held_at + retry_after)


async def test_418_stops_everything_until_the_ban_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_gateway() as m:
        m.sim.faults.lower_limit("REQUEST_WEIGHT", "MINUTE", 1, 45)
        # Another client on the same IP ignores the 429s and gets the IP banned.
        transport = httpx.ASGITransport(app=m.sim.http_app, client=("127.0.0.1", 40001))
        async with httpx.AsyncClient(transport=transport, base_url="http://sim.test") as other:
            status = 200
            while status != 418:
                status = (await other.get("/api/v3/ping")).status_code
        with pytest.raises(IpBannedError) as info:
            await m.gateway.ping()
        assert info.value.until_ms is not None
        assert info.value.until_ms == m.sim.rest.limiter.banned_until_ms(
            "127.0.0.1", m.sim.clock.now_ms()
        )
        sent = m.sim.rest.statistics().requests
        with pytest.raises(IpBannedError):
            await m.gateway.ping()  # refused locally: not sent
        assert m.sim.rest.statistics().requests == sent
        assert (m.gateway.statistics().rate_limited, m.gateway.statistics().ip_banned) == (0, 1)


async def test_clock_skew_gives_1021_then_resync_then_success(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_gateway() as m:
        m.sim.faults.clock_skew(-7_000)  # the exchange is 7 s behind: our timestamps are ahead
        order = await m.gateway.place_order(limit_buy())
        assert order.exchange_status == "NEW"
        stats = m.gateway.statistics()
        assert stats.resyncs == 1
        assert stats.time_sync.offset_ms == pytest.approx(-7_000, abs=1)
        assert len(m.sim.exchange.open_orders(m.sim.api_key, "BTCUSDT")) == 1


async def test_a_silent_exchange_times_out_at_the_call_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = GatewayConfig(timeouts=GatewayTimeouts(call_s=30.0))
    async with memory_gateway(config=config) as m:
        m.sim.faults.latency(45.0)
        start = trio.current_time()
        with pytest.raises(ReadTimeoutError):
            await m.gateway.account()
        assert trio.current_time() == start + 30.0
        with pytest.raises(OrderOutcomeUnknownError) as info:
            await m.gateway.place_order(limit_buy(client_order_id="slow-one"))
        assert info.value.client_order_id == "slow-one"
        assert trio.current_time() == start + 60.0
        m.sim.faults.latency(0)
        await trio.sleep(20)  # the simulator finishes the abandoned request meanwhile
        found = await m.gateway.get_order("BTCUSDT", client_order_id="slow-one")
        assert found.exchange_status == "NEW"  # the timeout did not mean "not placed"
