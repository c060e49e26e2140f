"""The WS API's market data, account and trading queries: the REST answers, over a WebSocket.

Each query runs the REST API's own handler (one implementation, two transports), so these tests
ask both transports the same question about the same exchange and compare: the result, the
weight charged (each transport has its own limiter here, so the counts start from the same
place; the WS API's count includes the connection's 2), and the errors. Helpers, rules and
fixtures are ``test_ws_api.py``'s (in-memory connections, autojump clock, trio deadlines).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final, cast

import httpx
import pytest
import trio

from genesis.sim.ratelimit import RateLimiter
from genesis.sim.rest import RestApp
from genesis.sim.testing import SignedRestClient
from genesis.sim.ws_api_methods import METHOD_WEIGHTS, METHODS, SHARED
from tests.sim.test_ws_api import (
    BUY_60000,
    DOC_API_KEY,
    DOC_SECRET,
    Json,
    Sim,
    connect,
    error_of,
    make_sim,
    weight_count,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

WS_CONNECTION_WEIGHT: Final = 2


@asynccontextmanager
async def open_rest(sim: Sim) -> AsyncIterator[SignedRestClient]:
    """A REST app on the same exchange, keys and clock as ``sim`` (its own rate limiter)."""
    app = RestApp(sim.exchange, clock=sim.clock, keys=sim.ctx.keys, limiter=RateLimiter())
    transport = httpx.ASGITransport(app=app, client=("10.0.0.8", 40_000))
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as http:
        yield SignedRestClient(
            http=http, now_ms=sim.clock.now_ms, api_key=DOC_API_KEY, api_secret=DOC_SECRET
        )


def trade(sim: Sim, price: str = "60000.00", qty: str = "0.00100000") -> None:
    """One public trade on BTCUSDT: the maker's resting SELL, lifted by DOC_API_KEY."""
    sim.rest_sell(price, qty)
    sim.exchange.place_order(
        DOC_API_KEY,
        symbol="BTCUSDT",
        side="BUY",
        type="MARKET",
        quantity=qty,
        now_ms=sim.clock.now_ms(),
    )


def rest_params(params: Json) -> dict[str, str]:
    """The WS API's JSON params as REST's query values (arrays as compact JSON text)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        if isinstance(value, list):
            out[key] = "[" + ",".join(f'"{v}"' for v in value) + "]"
        else:
            out[key] = str(value)
    return out


PUBLIC_CASES: Final[list[tuple[str, Json]]] = [
    ("exchangeInfo", {"symbol": "BTCUSDT"}),
    ("exchangeInfo", {"symbols": ["BTCUSDT", "ETHUSDT"], "showPermissionSets": "false"}),
    ("depth", {"symbol": "BTCUSDT", "limit": 5}),
    ("depth", {"symbol": "BTCUSDT", "limit": 500}),  # weight 25
    ("trades.recent", {"symbol": "BTCUSDT", "limit": 2}),
    ("trades.historical", {"symbol": "BTCUSDT", "fromId": 0}),
    ("trades.aggregate", {"symbol": "BTCUSDT", "limit": 10}),
    ("klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 3}),
    ("uiKlines", {"symbol": "BTCUSDT", "interval": "1h"}),
    ("avgPrice", {"symbol": "BTCUSDT"}),
    ("ticker.24hr", {"symbol": "BTCUSDT"}),
    ("ticker.24hr", {"symbols": ["BTCUSDT", "ETHUSDT"], "type": "MINI"}),
    ("ticker.24hr", {}),  # every symbol: weight 80
    ("ticker.price", {"symbol": "BTCUSDT"}),
    ("ticker.price", {}),
    ("ticker.book", {"symbols": ["ETHUSDT", "BTCUSDT"]}),
    ("ticker.book", {"symbol": "BTCUSDT", "symbolStatus": "TRADING"}),
    ("ticker.price", {"symbolStatus": "TRADING"}),
    ("ticker.24hr", {"symbols": ["BTCUSDT", "ETHUSDT"], "symbolStatus": "TRADING"}),
    ("ping", {}),
    ("time", {}),
]


@pytest.mark.parametrize(("method", "params"), PUBLIC_CASES)
async def test_market_data_methods_answer_and_charge_what_rest_does(
    method: str, params: Json, autojump_clock: trio.abc.Clock
) -> None:
    sim = make_sim()
    trade(sim)
    trade(sim, "60001.00")
    _http_method, name = SHARED[method]
    with trio.fail_after(10):
        async with connect(sim) as client, open_rest(sim) as rest:
            answer = await client.call(method, params)
            expected = await rest.public(name, rest_params(params))
    assert expected.status_code == 200, expected.text
    assert answer["status"] == 200, answer
    assert answer["result"] == expected.json()
    rest_weight = int(expected.headers["x-mbx-used-weight-1m"])
    assert weight_count(answer) == WS_CONNECTION_WEIGHT + rest_weight


SIGNED_CASES: Final[list[tuple[str, Json]]] = [
    ("account.status", {}),
    ("account.status", {"omitZeroBalances": "true"}),
    ("account.rateLimits.orders", {}),
    ("openOrders.status", {"symbol": "BTCUSDT"}),
    ("openOrders.status", {}),  # every symbol: weight 80
    ("allOrders", {"symbol": "BTCUSDT"}),
    ("myTrades", {"symbol": "BTCUSDT"}),
    ("myTrades", {"symbol": "BTCUSDT", "orderId": 1}),  # weight 5
    ("order.test", BUY_60000),
    ("order.test", {**BUY_60000, "computeCommissionRates": "true"}),  # weight 20
    ("order.status", {"symbol": "BTCUSDT", "orderId": 2}),
]


@pytest.mark.parametrize(("method", "params"), SIGNED_CASES)
async def test_account_and_trading_queries_answer_and_charge_what_rest_does(
    method: str, params: Json, autojump_clock: trio.abc.Clock
) -> None:
    sim = make_sim()
    trade(sim)
    sim.exchange.place_order(  # an open order of the account (orderId 3)
        DOC_API_KEY,
        symbol="BTCUSDT",
        side="BUY",
        type="LIMIT",
        time_in_force="GTC",
        quantity="0.00100000",
        price="50000.00",
        now_ms=sim.clock.now_ms(),
    )
    http_method, name = SHARED[method]
    with trio.fail_after(10):
        async with connect(sim) as client, open_rest(sim) as rest:
            answer = await client.call(method, sim.signed(params))
            expected = await rest.signed(http_method, name, rest_params(params))
    assert expected.status_code == 200, expected.text
    assert answer["status"] == 200, answer
    assert answer["result"] == expected.json()
    rest_weight = int(expected.headers["x-mbx-used-weight-1m"])
    assert weight_count(answer) == WS_CONNECTION_WEIGHT + rest_weight


async def test_errors_are_rest_errors_with_a_ws_status(autojump_clock: trio.abc.Clock) -> None:
    sim = make_sim()
    cases: list[tuple[str, Json]] = [
        ("depth", {}),  # -1102 symbol
        ("depth", {"symbol": "BTCUSDT", "depth": 5}),  # -1104 not read
        ("depth", {"symbol": "NOPEUSDT"}),  # -1121
        ("klines", {"symbol": "BTCUSDT", "interval": "2s"}),  # -1120
        ("ticker.24hr", {"symbol": "BTCUSDT", "symbols": ["ETHUSDT"]}),  # -1128
        ("ticker.price", {"symbols": ["BTCUSDT", "BTCUSDT"]}),  # -1101 duplicates
        ("trades.historical", {"symbol": "BTCUSDT", "fromId": -1}),  # -1100
        ("ticker.book", {"symbol": "BTCUSDT", "symbolStatus": "HALT"}),  # -1220
        ("ticker.price", {"symbolStatus": "ASLEEP"}),  # -1122
    ]
    with trio.fail_after(10):
        async with connect(sim) as client, open_rest(sim) as rest:
            for method, params in cases:
                answer = await client.call(method, params)
                expected = await rest.public(SHARED[method][1], rest_params(params))
                body = expected.json()
                assert error_of(answer) == (expected.status_code, body["code"], body["msg"])


async def test_symbol_status_leaves_other_symbols_out_on_both_transports(
    autojump_clock: trio.abc.Clock,
) -> None:
    sim = make_sim()
    sim.exchange.set_symbol_status("ETHUSDT", "HALT")
    with trio.fail_after(10):
        async with connect(sim) as client, open_rest(sim) as rest:
            halted = await client.call("ticker.price", {"symbolStatus": "HALT"})
            assert [row["symbol"] for row in cast("list[Json]", halted["result"])] == ["ETHUSDT"]
            rest_halted = await rest.public("ticker/price", {"symbolStatus": "HALT"})
            assert rest_halted.json() == halted["result"]
            rolling = await client.call(
                "ticker", {"symbols": ["BTCUSDT", "ETHUSDT"], "symbolStatus": "TRADING"}
            )
            assert [row["symbol"] for row in cast("list[Json]", rolling["result"])] == ["BTCUSDT"]


async def test_signed_queries_need_a_signature_or_a_session(
    autojump_clock: trio.abc.Clock,
) -> None:
    sim = make_sim()
    with trio.fail_after(10):
        async with connect(sim) as client:
            unsigned = await client.call("account.status", {"timestamp": sim.clock.now_ms()})
            assert error_of(unsigned)[1] == -1102  # apiKey: no session, no signature
            forged = {**sim.signed(), "signature": "0" * 64}
            assert error_of(await client.call("account.status", forged))[1] == -1022
            assert (await client.call("session.logon", sim.ed_signed()))["status"] == 200
            status = await client.call("account.status", {"timestamp": sim.clock.now_ms()})
            assert status["status"] == 200
            assert "balances" in cast("Json", status["result"])


async def test_cancel_all_cancels_every_open_order_and_costs_nothing_when_it_succeeds(
    autojump_clock: trio.abc.Clock,
) -> None:
    sim = make_sim()
    with trio.fail_after(10):
        async with connect(sim) as client:
            for price in ("50000.00", "50001.00"):
                order = {**BUY_60000, "price": price}
                assert (await client.call("order.place", sim.signed(order)))["status"] == 200
            before = cast("int", weight_count(await client.call("time")))
            cancel = await client.call("openOrders.cancelAll", sim.signed({"symbol": "BTCUSDT"}))
            rows = cast("list[Json]", cancel["result"])
            assert [(r["price"], r["status"]) for r in rows] == [
                ("50000.00000000", "CANCELED"),
                ("50001.00000000", "CANCELED"),
            ]
            assert weight_count(cancel) == before  # refunded: 0 weight on success
            left = await client.call("openOrders.status", sim.signed({"symbol": "BTCUSDT"}))
            assert left["result"] == []
            assert weight_count(left) == before + 6
            nothing = await client.call("openOrders.cancelAll", sim.signed({"symbol": "BTCUSDT"}))
            assert error_of(nothing) == (400, -2011, "Unknown order sent.")
            assert weight_count(nothing) == before + 6 + 1  # a failed cancel is charged


async def test_rolling_ticker_is_the_24h_ticker_without_book_fields(
    autojump_clock: trio.abc.Clock,
) -> None:
    sim = make_sim()
    trade(sim)
    with trio.fail_after(10):
        async with connect(sim) as client:
            full = await client.call("ticker.24hr", {"symbol": "BTCUSDT"})
            rolling = await client.call("ticker", {"symbol": "BTCUSDT", "windowSize": "1d"})
            mini = await client.call("ticker", {"symbols": ["BTCUSDT"], "type": "MINI"})
            day = cast("Json", full["result"])
            book = {"prevClosePrice", "lastQty", "bidPrice", "bidQty", "askPrice", "askQty"}
            assert rolling["result"] == {k: v for k, v in day.items() if k not in book}
            spent = cast("int", weight_count(rolling)) - cast("int", weight_count(full))
            assert spent == 4  # 4 per symbol
            mini_day = await client.call("ticker.24hr", {"symbol": "BTCUSDT", "type": "MINI"})
            assert mini["result"] == [mini_day["result"]]
            week = await client.call("ticker", {"symbol": "BTCUSDT", "windowSize": "7d"})
            assert error_of(week) == (400, -1020, "This operation is not supported.")
            bad = await client.call("ticker", {"symbol": "BTCUSDT", "windowSize": "8d"})
            assert error_of(bad)[1] == -1130
            assert error_of(await client.call("ticker", {}))[1] == -1102


def test_every_documented_method_is_served() -> None:
    documented = {
        *("ping", "time", "exchangeInfo", "depth", "trades.recent", "trades.historical"),
        *("trades.aggregate", "klines", "uiKlines", "avgPrice", "ticker.24hr", "ticker.price"),
        *("ticker.book", "ticker", "account.status", "account.rateLimits.orders"),
        *("openOrders.status", "openOrders.cancelAll", "allOrders", "myTrades", "order.test"),
        *("order.place", "order.cancel", "order.status", "session.logon", "session.status"),
        *("session.logout", "session.subscriptions", "userDataStream.subscribe"),
        *("userDataStream.subscribe.signature", "userDataStream.unsubscribe"),
    }
    assert documented <= set(METHODS)
    # The documented weights without parameters (web-socket-api.md).
    assert {m: METHOD_WEIGHTS[m] for m in ("exchangeInfo", "trades.recent", "account.status")} == {
        "exchangeInfo": 20,
        "trades.recent": 25,
        "account.status": 20,
    }
    assert METHOD_WEIGHTS["account.rateLimits.orders"] == 40
    assert METHOD_WEIGHTS["openOrders.status"] == 80
