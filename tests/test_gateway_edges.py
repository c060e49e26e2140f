"""The gateway's boundary with httpx and with hostile answers, driven by ``httpx.MockTransport``.

The simulator never breaks a connection halfway or answers HTML, so these transports play the
network's and a proxy's part. What is faked is httpx's transport (the library's own seam), not
Genesis code: every request still goes through the real gateway, limiter and breaker.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import httpx
import pytest
import trio
import trio.testing

from genesis.config import Secret, Settings
from genesis.errors import (
    ConfigError,
    ConnectError,
    ConnectionLostError,
    ExchangeProtocolError,
    ExchangeRejectedError,
    ExchangeUnavailableError,
    OrderOutcomeUnknownError,
    RateLimitedError,
    ReadTimeoutError,
)
from genesis.exchange.gateway import GatewayConfig, GatewayTimeouts, open_gateway
from genesis.exchange.signing import HmacSigner
from genesis.models.orders import OrderRequest, OrderSide, OrderStatus
from genesis.orders.manager import PlaceOrder
from genesis.orders.service import resolve_unknown_order
from genesis.sim.clock import SimClock
from tests.gateway_support import T0, memory_gateway, order_task_harness

D = Decimal
Handler = Callable[[httpx.Request], httpx.Response]


def order(client_order_id: str = "edge-1") -> OrderRequest:
    return OrderRequest.limit(
        symbol="BTCUSDT",
        side=OrderSide.BUY,
        quantity=D("0.001"),
        price=D("50000"),
        client_order_id=client_order_id,
    )


def raising(exc: Exception) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


async def with_transport(handler: Handler) -> tuple[BaseException, int]:
    """Run one ``place_order`` through ``handler``; return its error and the requests made."""
    calls = 0

    def counting(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return handler(request)

    async with open_gateway(
        Settings(),
        rest_url="http://edge.test",
        api_key=Secret("k"),
        signer=HmacSigner(Secret("s")),
        transport=httpx.MockTransport(counting),
        prepare=False,
    ) as gw:
        with pytest.raises(Exception) as info:  # each caller asserts the type
            await gw.place_order(order())
    return info.value, calls


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ConnectTimeout("slow"), ConnectError),
        (httpx.PoolTimeout("busy"), ConnectError),
        (httpx.ConnectError("refused"), ConnectError),
        (httpx.ReadTimeout("silent"), OrderOutcomeUnknownError),
        (httpx.WriteTimeout("stuck"), OrderOutcomeUnknownError),
        (httpx.RemoteProtocolError("Server disconnected"), OrderOutcomeUnknownError),
        (httpx.ReadError("reset"), OrderOutcomeUnknownError),
    ],
)
async def test_transport_errors_say_whether_the_order_may_exist(
    exc: Exception, expected: type[BaseException]
) -> None:
    with trio.fail_after(10):
        error, calls = await with_transport(raising(exc))
    assert type(error) is expected
    assert calls == 1  # never resent
    if isinstance(error, OrderOutcomeUnknownError):
        assert error.client_order_id == "edge-1"
        assert isinstance(error.__cause__, ReadTimeoutError | ConnectionLostError)


async def test_reads_map_transport_errors_to_the_transport_tree() -> None:
    async with open_gateway(
        Settings(),
        rest_url="http://edge.test",
        transport=httpx.MockTransport(raising(httpx.ReadError("reset"))),
        prepare=False,
    ) as gw:
        with pytest.raises(ConnectionLostError):
            await gw.ping()
    async with open_gateway(
        Settings(),
        rest_url="http://edge.test",
        transport=httpx.MockTransport(raising(httpx.ReadTimeout("silent"))),
        prepare=False,
    ) as gw:
        with pytest.raises(ReadTimeoutError):
            await gw.ping()


@pytest.mark.parametrize(
    ("status", "body", "expected", "code"),
    [
        (502, b"<html>Bad gateway</html>", OrderOutcomeUnknownError, None),
        (400, b"<html>no</html>", ExchangeRejectedError, 0),
        (
            408,
            b'{"code":-1007,"msg":"Timeout waiting for response from backend server."}',
            OrderOutcomeUnknownError,
            -1007,
        ),
        (200, b"not json", ExchangeProtocolError, None),
    ],
)
async def test_hostile_answers_are_typed(
    status: int, body: bytes, expected: type[BaseException], code: int | None
) -> None:
    with trio.fail_after(10):
        error, _ = await with_transport(lambda request: httpx.Response(status, content=body))
    assert type(error) is expected
    if isinstance(error, OrderOutcomeUnknownError):
        assert error.code == code
        assert error.http_status == status
    if isinstance(error, ExchangeRejectedError):
        assert (error.code, error.msg) == (0, "HTTP 400 Bad Request")


async def test_a_5xx_on_a_read_is_unavailable_with_the_status_phrase() -> None:
    async with open_gateway(
        Settings(),
        rest_url="http://edge.test",
        transport=httpx.MockTransport(lambda r: httpx.Response(503, content=b"")),
        prepare=False,
    ) as gw:
        with pytest.raises(ExchangeUnavailableError) as info:
            await gw.ping()
    assert (info.value.code, info.value.msg) == (0, "HTTP 503 Service Unavailable")


@pytest.mark.parametrize(
    ("header", "expected_s"),
    [(None, 60.0), ("soon", 60.0), ("-5", 60.0), ("inf", 60.0), ("7", 7.0)],
)
async def test_retry_after_is_read_defensively(
    autojump_clock: trio.testing.MockClock, header: str | None, expected_s: float
) -> None:
    headers = {} if header is None else {"Retry-After": header}
    answers = [httpx.Response(429, headers=headers, json={"code": -1003, "msg": "Too much"})]

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop() if answers else httpx.Response(200, json={})

    async with open_gateway(
        Settings(),
        rest_url="http://edge.test",
        transport=httpx.MockTransport(handler),
        wall_clock_ms=SimClock.start(T0).now_ms,  # follows the virtual clock
        prepare=False,
    ) as gw:
        with pytest.raises(RateLimitedError) as info:
            await gw.ping()
        assert info.value.retry_after_s == expected_s
        start = trio.current_time()
        await gw.ping()
        assert trio.current_time() - start == pytest.approx(expected_s, abs=0.002)


async def test_configuration_errors() -> None:
    with pytest.raises(ConfigError, match="no REST URL"):
        async with open_gateway(Settings()):
            pass  # pragma: no cover
    with pytest.raises(ValueError, match="call_s"):
        GatewayTimeouts(call_s=0)
    async with open_gateway(
        Settings(),
        rest_url="http://edge.test",
        transport=httpx.MockTransport(lambda r: httpx.Response(200, json={})),
        prepare=False,
    ) as gw:
        with pytest.raises(ValueError, match="not a valid client order id"):
            await gw.get_order("BTCUSDT", client_order_id="has space")
        assert gw.limiter.statistics().queued == 0
        assert gw.statistics().base_url == "http://edge.test"


async def test_my_trades_sends_limit_and_exchange_info_without_limits_keeps_the_old(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[str] = []
    info = {"serverTime": T0, "rateLimits": [], "symbols": []}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        if request.url.path.endswith("exchangeInfo"):
            return httpx.Response(200, json=info)
        return httpx.Response(200, json=[])

    async with open_gateway(
        Settings(),
        rest_url="http://edge.test",
        api_key=Secret("k"),
        signer=HmacSigner(Secret("s")),
        transport=httpx.MockTransport(handler),
        config=GatewayConfig(time_sync_samples=1),
        wall_clock_ms=SimClock.start(T0).now_ms,
        prepare=False,
    ) as gw:

        def limits() -> list[tuple[object, str, int]]:
            return [(b.type, b.interval, b.limit) for b in gw.limiter.statistics().buckets]

        before = limits()
        await gw.exchange_info(["BTCUSDT"])
        assert limits() == before
        assert await gw.my_trades("BTCUSDT", limit=5) == ()
    assert seen[0] == "/api/v3/exchangeInfo?symbols=%5B%22BTCUSDT%22%5D"
    assert seen[1].startswith("/api/v3/myTrades?symbol=BTCUSDT&limit=5&recvWindow=5000&timestamp=")


# --- unknown outcomes: every branch of the resolver ----------------------------------------------


async def test_resolving_late_asks_at_once_and_a_hard_rejection_propagates(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_gateway() as m:
        await trio.sleep(10)  # recvWindow has long passed
        start = trio.current_time()
        stale = OrderOutcomeUnknownError("old-1", "timeout", sent_at_ms=T0)
        assert await resolve_unknown_order(m.gateway, "BTCUSDT", stale) is None
        assert trio.current_time() == start  # no wait
        with pytest.raises(ExchangeRejectedError) as info:
            await resolve_unknown_order(m.gateway, "NOSUCHSYMBOL", stale)
        assert info.value.code == -1121


async def test_unknown_placements_settle_as_rejected_or_stay_unknown_on_a_hard_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with order_task_harness() as h:
        m, journal, send, state, updates = h.m, h.journal, h.send, h.state, h.updates
        # The simulator refuses the order at once (halted market), but its answer arrives after
        # the 30 s call deadline: Genesis cannot know, so the order is UNKNOWN until asked.
        m.sim.faults.halt("BTCUSDT")
        m.sim.faults.latency(45.0)
        await send.send(PlaceOrder(request=order()))
        first = await updates.receive()
        assert first.order.status is OrderStatus.UNKNOWN
        m.sim.faults.latency(0)
        second = await updates.receive()
        assert second.order.status is OrderStatus.REJECTED
        assert second.reason is not None
        assert "-2013" in second.reason
        assert m.sim.exchange.open_orders(m.sim.api_key) == []
        # The key is revoked while an outcome is unknown: the query is refused for good
        # (-2015), so the order stays UNKNOWN in the journal, an ERROR for a person.
        m.sim.faults.reset()
        m.sim.faults.latency(45.0)
        await send.send(PlaceOrder(request=order("edge-3")))
        with trio.fail_after(120):
            third = await updates.receive()
        assert third.order.status is OrderStatus.UNKNOWN
        m.sim.rest.keys.remove(m.sim.api_key)
        m.sim.faults.latency(0)
        await trio.sleep(3600)  # far longer than recvWindow and any resolver backoff
        assert state.statistics().resolving == 0
        entry = await journal.get(third.order.client_order_id)
        assert entry is not None
        assert entry.status is OrderStatus.UNKNOWN
        stats = state.statistics()
        assert (stats.unknown, stats.resolved, stats.failed) == (2, 1, 1)
