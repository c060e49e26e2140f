"""The simulator's REST API through ``httpx.ASGITransport`` (no socket) and one real socket.

Every test drives :class:`genesis.sim.rest.RestApp` over the real :class:`Exchange`; requests are
signed the way Binance documents (HMAC over the raw query + body). Time-dependent tests run under
``autojump_clock`` and assert exact virtual times.
"""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import TYPE_CHECKING, Final
from urllib.parse import quote

import attrs
import httpx
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from genesis.exchange.endpoints import ENDPOINTS, Endpoint
from genesis.sim.auth import ApiKey, hmac_signature
from genesis.sim.clock import SimClock
from genesis.sim.exchange import Exchange
from genesis.sim.handlers import ROUTES, RouteMismatchError, routes_for
from genesis.sim.rest import RestApp, RestFaults, serve_rest
from genesis.sim.symbols import default_symbols
from genesis.sim.testing import SignedRestClient
from tests.sim.threads import in_thread

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

T0: Final = 1_767_225_600_000  # 2026-01-01T00:00:00Z
API_KEY: Final = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
SECRET: Final = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
MAKER: Final = "makerAccount1"
JSON_TYPE: Final = "application/json;charset=UTF-8"
ORDER_FULL_KEYS: Final = {
    "symbol",
    "orderId",
    "orderListId",
    "clientOrderId",
    "transactTime",
    "price",
    "origQty",
    "executedQty",
    "origQuoteOrderQty",
    "cummulativeQuoteQty",
    "status",
    "timeInForce",
    "type",
    "side",
    "workingTime",
    "selfTradePreventionMode",
    "fills",
}


@attrs.define(eq=False, kw_only=True)
class Sim(SignedRestClient):
    """The app, its exchange and clock, and the kit's signing client (``signed``/``public``)."""

    app: RestApp
    exchange: Exchange
    clock: SimClock


def seed_book(exchange: Exchange, now_ms: int) -> None:
    """A maker account with asks 60000.00-60004.00 and bids 59990.00-59994.00 on BTCUSDT."""
    exchange.add_account(MAKER)
    for i in range(5):
        exchange.place_order(
            MAKER,
            symbol="BTCUSDT",
            side="SELL",
            type="LIMIT",
            time_in_force="GTC",
            quantity="0.5",
            price=str(60000 + i),
            now_ms=now_ms,
        )
        exchange.place_order(
            MAKER,
            symbol="BTCUSDT",
            side="BUY",
            type="LIMIT",
            time_in_force="GTC",
            quantity="0.5",
            price=str(59990 + i),
            now_ms=now_ms,
        )


def make_sim_parts(epoch_ms: int | None = T0) -> tuple[Exchange, SimClock, RestApp]:
    exchange = Exchange(default_symbols(), seed=7)
    clock = SimClock.start(epoch_ms)
    app = RestApp(exchange, clock=clock)
    app.add_api_key(ApiKey.hmac(API_KEY, SECRET))
    seed_book(exchange, clock.now_ms())
    return exchange, clock, app


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    """The app anchored at T0. Tests that use it also take ``autojump_clock`` (pytest-trio only
    hands the test's own arguments to ``trio.run``), so "now" is exactly T0 until they sleep."""
    exchange, clock, app = make_sim_parts()
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as http:
        yield Sim(
            http=http,
            now_ms=clock.now_ms,
            api_key=API_KEY,
            api_secret=SECRET,
            app=app,
            exchange=exchange,
            clock=clock,
        )


def error_of(response: httpx.Response) -> tuple[int, int, str]:
    body = response.json()
    return response.status_code, body["code"], body["msg"]


# --- general endpoints and headers ----------------------------------------------------------


async def test_ping_time_and_standard_headers(
    sim: Sim, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        ping = await sim.public("ping")
        assert (ping.status_code, ping.json()) == (200, {})
        assert ping.headers["content-type"] == JSON_TYPE
        assert ping.headers["x-mbx-used-weight-1m"] == "1"
        assert ping.headers["x-mbx-used-weight"] == "1"
        time = await sim.public("time")
        assert time.json() == {"serverTime": sim.clock.now_ms()}
        assert time.headers["x-mbx-used-weight-1m"] == "2"


async def test_exchange_info_lists_symbols_and_current_limits(
    sim: Sim, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        sim.app.limiter.set_limit("REQUEST_WEIGHT", "MINUTE", 1, 1200)
        info = await sim.public("exchangeInfo")
        body = info.json()
        assert info.headers["x-mbx-used-weight-1m"] == "20"
        assert body["timezone"] == "UTC"
        assert body["serverTime"] == T0
        assert body["exchangeFilters"] == []
        assert body["rateLimits"][0] == {
            "rateLimitType": "REQUEST_WEIGHT",
            "interval": "MINUTE",
            "intervalNum": 1,
            "limit": 1200,
        }
        assert [s["symbol"] for s in body["symbols"]] == ["BTCUSDT", "ETHUSDT", "BNBUSDT"]
        one = (await sim.public("exchangeInfo", {"symbol": "ETHUSDT"})).json()
        assert [s["symbol"] for s in one["symbols"]] == ["ETHUSDT"]
        two = await sim.public("exchangeInfo", {"symbols": '["BNBUSDT","BTCUSDT"]'})
        assert [s["symbol"] for s in two.json()["symbols"]] == ["BNBUSDT", "BTCUSDT"]
        margin = await sim.public("exchangeInfo", {"permissions": "MARGIN"})
        assert margin.json()["symbols"] == []
        hidden = await sim.public("exchangeInfo", {"showPermissionSets": "false"})
        assert hidden.json()["symbols"][0]["permissionSets"] == []


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"symbol": "NOPEUSDT"}, (400, -1121, "Invalid symbol.")),
        ({"symbols": '["BTCUSDT","NOPE"]'}, (400, -1121, "Invalid symbol.")),
        (
            {"symbols": '["BTCUSDT","BTCUSDT"]'},
            (400, -1151, "Symbol is present multiple times in the list."),
        ),
        (
            {"symbols": "BTCUSDT"},
            (
                400,
                -1100,
                "Illegal characters found in parameter 'symbols'; legal range is "
                '\'^\\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\\]$\'.',
            ),
        ),
        (
            {"symbol": "btcusdt"},
            (
                400,
                -1100,
                "Illegal characters found in parameter 'symbol'; legal range is "
                "'^[A-Z0-9-_.]{1,20}$'.",
            ),
        ),
        ({"symbolStatus": "SLEEPING"}, (400, -1122, "Invalid symbolStatus.")),
    ],
)
async def test_exchange_info_errors(
    sim: Sim, params: dict[str, str], expected: tuple[int, int, str]
) -> None:
    with trio.fail_after(10):
        assert error_of(await sim.public("exchangeInfo", params)) == expected


# --- market data ----------------------------------------------------------------------------


async def test_depth_snapshot_and_weight_by_limit(
    sim: Sim, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        depth = await sim.public("depth", {"symbol": "BTCUSDT", "limit": "3"})
        body = depth.json()
        assert depth.headers["x-mbx-used-weight-1m"] == "5"
        assert body["bids"][0][0] == "59994.00000000"
        assert body["asks"][0][0] == "60000.00000000"
        assert len(body["asks"]) == 3
        assert isinstance(body["lastUpdateId"], int)
        big = await sim.public("depth", {"symbol": "BTCUSDT", "limit": "5000"})
        assert big.headers["x-mbx-used-weight-1m"] == str(5 + 250)
        mid = await sim.public("depth", {"symbol": "BTCUSDT", "limit": "500"})
        assert mid.headers["x-mbx-used-weight-1m"] == str(5 + 250 + 25)


async def test_depth_parameter_errors(sim: Sim, autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(10):
        missing = await sim.public("depth")
        assert error_of(missing) == (
            400,
            -1102,
            "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
        )
        assert error_of(await sim.public("depth", {"symbol": "XXXYYY"}))[1] == -1121
        bad_limit = await sim.public("depth", {"symbol": "BTCUSDT", "limit": "ten"})
        assert error_of(bad_limit) == (
            400,
            -1100,
            "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.",
        )
        unknown = await sim.public("depth", {"symbol": "BTCUSDT", "foo": "1"})
        assert error_of(unknown) == (
            400,
            -1104,
            "Not all sent parameters were read; read '1' parameter(s) but was sent '2'.",
        )
        empty = await sim.http.get("/api/v3/depth?symbol=")
        assert error_of(empty) == (400, -1105, "Parameter 'symbol' was empty.")
        dup = await sim.http.get("/api/v3/depth?symbol=BTCUSDT&symbol=ETHUSDT")
        assert error_of(dup) == (400, -1101, "Duplicate values for a parameter detected.")
        status = await sim.public("depth", {"symbol": "BTCUSDT", "symbolStatus": "HALT"})
        assert error_of(status)[1] == -1220


async def test_trades_klines_tickers_after_a_trade(
    sim: Sim, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        bought = await sim.signed(
            "POST",
            "order",
            {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.6"},
        )
        assert bought.status_code == 200, bought.text
        trades = (await sim.public("trades", {"symbol": "BTCUSDT"})).json()
        assert [t["price"] for t in trades] == ["60000.00000000", "60001.00000000"]
        hist = await sim.public("historicalTrades", {"symbol": "BTCUSDT", "limit": "1"})
        assert hist.status_code == 200
        assert len(hist.json()) == 1
        aggs = (await sim.public("aggTrades", {"symbol": "BTCUSDT"})).json()
        assert {"a", "p", "q", "f", "l", "T", "m", "M"} <= set(aggs[0])
        for path in ("klines", "uiKlines"):
            klines = await sim.public(path, {"symbol": "BTCUSDT", "interval": "1m"})
            rows = klines.json()
            assert klines.headers["content-type"] == JSON_TYPE
            assert len(rows[-1]) == 12
            assert rows[-1][0] == T0
        bad_interval = await sim.public("klines", {"symbol": "BTCUSDT", "interval": "7m"})
        assert error_of(bad_interval) == (400, -1120, "Invalid interval.")
        tz = await sim.public("klines", {"symbol": "BTCUSDT", "interval": "1m", "timeZone": "0"})
        assert tz.status_code == 200
        avg = (await sim.public("avgPrice", {"symbol": "BTCUSDT"})).json()
        assert avg["mins"] == 5
        one = await sim.public("ticker/24hr", {"symbol": "BTCUSDT"})
        assert one.json()["symbol"] == "BTCUSDT"
        assert one.json()["lastPrice"] == "60001.00000000"
        used = int(one.headers["x-mbx-used-weight-1m"])
        every = await sim.public("ticker/24hr")
        assert [t["symbol"] for t in every.json()] == ["BTCUSDT", "ETHUSDT", "BNBUSDT"]
        assert int(every.headers["x-mbx-used-weight-1m"]) == used + 80
        mini = await sim.public("ticker/24hr", {"symbol": "BTCUSDT", "type": "MINI"})
        assert "priceChange" not in mini.json()
        bad_type = await sim.public("ticker/24hr", {"symbol": "BTCUSDT", "type": "HUGE"})
        assert error_of(bad_type) == (400, -1139, "Invalid ticker type.")
        some = await sim.public("ticker/24hr", {"symbols": '["ETHUSDT","BTCUSDT"]'})
        assert [t["symbol"] for t in some.json()] == ["ETHUSDT", "BTCUSDT"]
        price = (await sim.public("ticker/price", {"symbol": "BTCUSDT"})).json()
        assert price == {"symbol": "BTCUSDT", "price": "60001.00000000"}
        prices = await sim.public("ticker/price")
        assert len(prices.json()) == 3
        book = (await sim.public("ticker/bookTicker", {"symbol": "BTCUSDT"})).json()
        assert book["bidPrice"] == "59994.00000000"
        assert book["askPrice"] == "60001.00000000"
        both = await sim.public(
            "ticker/bookTicker", {"symbol": "BTCUSDT", "symbols": '["BTCUSDT"]'}
        )
        assert error_of(both)[1] == -1128


# --- trading --------------------------------------------------------------------------------


async def test_limit_order_lifecycle(sim: Sim, autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(10):
        params = {
            "symbol": "BTCUSDT",
            "side": "BUY",
            "type": "LIMIT",
            "timeInForce": "GTC",
            "quantity": "0.01000",
            "price": "59000.00",
            "newClientOrderId": "myOrder1",
        }
        placed = await sim.signed("POST", "order", params)
        assert placed.status_code == 200, placed.text
        body = placed.json()
        assert set(body) >= ORDER_FULL_KEYS
        assert (body["status"], body["fills"], body["clientOrderId"]) == ("NEW", [], "myOrder1")
        assert placed.headers["x-mbx-used-weight-1m"] == "0"  # success costs 0 weight
        assert placed.headers["x-mbx-order-count-10s"] == "1"
        assert placed.headers["x-mbx-order-count-1d"] == "1"
        order_id = str(body["orderId"])

        queried = await sim.signed("GET", "order", {"symbol": "BTCUSDT", "orderId": order_id})
        assert queried.json()["status"] == "NEW"
        assert queried.headers["x-mbx-used-weight-1m"] == "4"
        by_client = await sim.signed(
            "GET", "order", {"symbol": "BTCUSDT", "origClientOrderId": "myOrder1"}
        )
        assert by_client.json()["orderId"] == body["orderId"]
        open_orders = await sim.signed("GET", "openOrders", {"symbol": "BTCUSDT"})
        assert [o["orderId"] for o in open_orders.json()] == [body["orderId"]]
        assert open_orders.headers["x-mbx-used-weight-1m"] == str(4 + 4 + 6)
        all_open = await sim.signed("GET", "openOrders")
        assert all_open.headers["x-mbx-used-weight-1m"] == str(4 + 4 + 6 + 80)

        limits = (await sim.signed("GET", "rateLimit/order")).json()
        assert [(r["interval"], r["count"]) for r in limits] == [("SECOND", 1), ("DAY", 1)]

        canceled = await sim.signed(
            "DELETE", "order", {"symbol": "BTCUSDT", "orderId": order_id}, in_body=True
        )
        assert canceled.status_code == 200, canceled.text
        assert canceled.json()["status"] == "CANCELED"
        assert canceled.json()["origClientOrderId"] == "myOrder1"
        again = await sim.signed("DELETE", "order", {"symbol": "BTCUSDT", "orderId": order_id})
        assert error_of(again) == (400, -2011, "Unknown order sent.")
        history = await sim.signed("GET", "allOrders", {"symbol": "BTCUSDT"})
        assert [o["status"] for o in history.json()] == ["CANCELED"]
        missing = await sim.signed("GET", "order", {"symbol": "BTCUSDT", "orderId": "999999"})
        assert error_of(missing) == (400, -2013, "Order does not exist.")


async def test_market_order_fills_and_leaves_no_unfilled_count(
    sim: Sim, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        placed = await sim.signed(
            "POST",
            "order",
            {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.001"},
            in_body=True,
        )
        body = placed.json()
        assert placed.status_code == 200, placed.text
        assert body["status"] == "FILLED"
        assert body["fills"][0]["price"] == "60000.00000000"
        assert placed.headers["x-mbx-order-count-10s"] == "0"
        trades = await sim.signed("GET", "myTrades", {"symbol": "BTCUSDT"})
        assert len(trades.json()) == 1
        assert trades.json()[0]["isBuyer"] is True
        with_order = await sim.signed(
            "GET", "myTrades", {"symbol": "BTCUSDT", "orderId": str(body["orderId"])}
        )
        used = int(trades.headers["x-mbx-used-weight-1m"])
        assert int(with_order.headers["x-mbx-used-weight-1m"]) == used + 5
        account = (await sim.signed("GET", "account")).json()
        btc = next(b for b in account["balances"] if b["asset"] == "BTC")
        assert Decimal(btc["free"]) > Decimal(10)


async def test_later_fill_of_a_resting_order_decrements_the_order_count(
    sim: Sim, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        placed = await sim.signed(
            "POST",
            "order",
            {
                "symbol": "BTCUSDT",
                "side": "SELL",
                "type": "LIMIT",
                "timeInForce": "GTC",
                "quantity": "0.01",
                "price": "59995.00",
            },
        )
        assert placed.headers["x-mbx-order-count-10s"] == "1"
        sim.exchange.place_order(
            MAKER, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.01", now_ms=T0
        )
        limits = (await sim.signed("GET", "rateLimit/order")).json()
        assert [r["count"] for r in limits] == [0, 0]


async def test_response_types_and_rejections(
    sim: Sim, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        base = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC"}
        ack = await sim.signed(
            "POST",
            "order",
            {**base, "quantity": "0.01", "price": "59000", "newOrderRespType": "ACK"},
        )
        assert set(ack.json()) == {
            "symbol",
            "orderId",
            "orderListId",
            "clientOrderId",
            "transactTime",
        }
        tick = await sim.signed("POST", "order", {**base, "quantity": "0.01", "price": "59000.001"})
        assert error_of(tick)[1] in (-1013, -1111)
        assert "x-mbx-order-count-10s" in tick.headers
        assert tick.headers["x-mbx-used-weight-1m"] == "1"  # failed placements are charged
        missing = await sim.signed("POST", "order", {"symbol": "BTCUSDT", "side": "BUY"})
        assert error_of(missing)[1] == -1102
        poor = await sim.signed("POST", "order", {**base, "quantity": "100", "price": "59000"})
        assert error_of(poor) == (
            400,
            -2010,
            "Account has insufficient balance for requested action.",
        )
        counts = (await sim.signed("GET", "rateLimit/order")).json()
        # ACK order and the engine rejection count; the API-level rejections do not.
        assert [r["count"] for r in counts] == [2, 2]
        iceberg = await sim.signed(
            "POST", "order", {**base, "quantity": "0.01", "price": "59000", "icebergQty": "0.001"}
        )
        assert error_of(iceberg)[1] == -2010
        stp = await sim.signed(
            "POST",
            "order",
            {
                **base,
                "quantity": "0.01",
                "price": "59000",
                "selfTradePreventionMode": "EXPIRE_TAKER",
            },
        )
        assert error_of(stp)[1] == -1130
        sim.exchange.set_symbol_status("BTCUSDT", "HALT")
        halted = await sim.signed("POST", "order", {**base, "quantity": "0.01", "price": "59000"})
        assert error_of(halted) == (400, -2010, "Market is closed.")


async def test_test_order_validates_without_trading(
    sim: Sim, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        params = {
            "symbol": "BTCUSDT",
            "side": "BUY",
            "type": "LIMIT",
            "timeInForce": "GTC",
            "quantity": "0.01",
            "price": "59000",
        }
        ok = await sim.signed("POST", "order/test", params)
        assert (ok.status_code, ok.json()) == (200, {})
        assert ok.headers["x-mbx-used-weight-1m"] == "1"
        rates = await sim.signed("POST", "order/test", {**params, "computeCommissionRates": "true"})
        body = rates.json()
        assert set(body) == {
            "standardCommissionForOrder",
            "specialCommissionForOrder",
            "taxCommissionForOrder",
            "discount",
        }
        assert rates.headers["x-mbx-used-weight-1m"] == str(1 + 20)
        opened = await sim.signed("GET", "openOrders", {"symbol": "BTCUSDT"})
        assert opened.json() == []
        bad = await sim.signed("POST", "order/test", {**params, "price": "59000.001"})
        assert error_of(bad)[1] in (-1013, -1111)


async def test_cancel_all_open_orders(sim: Sim, autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(10):
        for price in ("58000", "58001"):
            await sim.signed(
                "POST",
                "order",
                {
                    "symbol": "BTCUSDT",
                    "side": "BUY",
                    "type": "LIMIT",
                    "timeInForce": "GTC",
                    "quantity": "0.01",
                    "price": price,
                },
            )
        canceled = await sim.signed("DELETE", "openOrders", {"symbol": "BTCUSDT"})
        assert [o["status"] for o in canceled.json()] == ["CANCELED", "CANCELED"]
        assert canceled.headers["x-mbx-used-weight-1m"] == "0"
        none_left = await sim.signed("DELETE", "openOrders", {"symbol": "BTCUSDT"})
        assert error_of(none_left)[1] == -2011
        assert none_left.headers["x-mbx-used-weight-1m"] == "1"


# --- security -------------------------------------------------------------------------------


async def test_api_key_errors(sim: Sim, autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(10):
        query = sim.sign({})
        no_key = await sim.http.get(f"/api/v3/account?{query}")
        assert error_of(no_key) == (401, -2015, "Invalid API-key, IP, or permissions for action.")
        unknown = await sim.signed("GET", "account", api_key="someOtherKey")
        assert error_of(unknown)[:2] == (401, -2015)
        malformed = await sim.signed("GET", "account", api_key="bad key!")
        assert error_of(malformed) == (401, -2014, "API-key format invalid.")


async def test_signature_and_timestamp_errors(
    sim: Sim, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        bad = await sim.signed("GET", "account", secret="wrong")
        assert error_of(bad) == (400, -1022, "Signature for this request is not valid.")
        old = await sim.signed("GET", "account", timestamp=T0 - 5001)
        assert error_of(old) == (
            400,
            -1021,
            "Timestamp for this request is outside of the recvWindow.",
        )
        ahead = await sim.signed("GET", "account", timestamp=T0 + 1000)
        assert error_of(ahead) == (
            400,
            -1021,
            "Timestamp for this request was 1000ms ahead of the server's time.",
        )
        wide = await sim.signed("GET", "account", {"recvWindow": "70000"})
        assert error_of(wide) == (400, -1131, "recvWindow must be less than 60000")
        unsigned = await sim.http.get(
            "/api/v3/account", params={"timestamp": str(T0)}, headers={"X-MBX-APIKEY": API_KEY}
        )
        assert error_of(unsigned)[1] == -1102
        no_ts = f"recvWindow=5000&signature={hmac_signature(SECRET, 'recvWindow=5000')}"
        missing_ts = await sim.http.get(
            f"/api/v3/account?{no_ts}", headers={"X-MBX-APIKEY": API_KEY}
        )
        assert error_of(missing_ts) == (
            400,
            -1102,
            "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.",
        )


async def test_signature_over_query_plus_body_and_query_wins(
    sim: Sim, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        query = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC"
        body = f"quantity=0.01&price=59000&recvWindow=5000&timestamp={T0}"
        signature = hmac_signature(SECRET, query + body)
        placed = await sim.http.post(
            f"/api/v3/order?{query}",
            content=f"{body}&signature={signature}".encode(),
            headers={
                "X-MBX-APIKEY": API_KEY,
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        assert placed.status_code == 200, placed.text
        assert placed.json()["price"] == "59000.00000000"
        # price in both parts: the query's value is the one used.
        query2 = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&price=58000"
        body2 = f"quantity=0.01&price=1&timestamp={T0}"
        signature2 = hmac_signature(SECRET, query2 + body2)
        placed2 = await sim.http.post(
            f"/api/v3/order?{query2}&signature={signature2}",
            content=body2.encode(),
            headers={
                "X-MBX-APIKEY": API_KEY,
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        assert placed2.status_code == 200, placed2.text
        assert placed2.json()["price"] == "58000.00000000"


async def test_json_body_is_ignored_like_binance(
    sim: Sim, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        query = sim.sign({})
        response = await sim.http.post(
            f"/api/v3/order?{query}",
            content=json.dumps({"symbol": "BTCUSDT"}).encode(),
            headers={"X-MBX-APIKEY": API_KEY, "Content-Type": "application/json"},
        )
        assert error_of(response)[1] == -1102


async def test_ed25519_key_signs_requests(sim: Sim, autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(10):
        private = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
        sim.app.add_api_key(ApiKey.ed25519("edKey1", private.public_key()))
        query = f"omitZeroBalances=true&timestamp={sim.clock.now_ms()}"
        sig = quote(base64.b64encode(private.sign(query.encode())).decode(), safe="")
        response = await sim.http.get(
            f"/api/v3/account?{query}&signature={sig}", headers={"X-MBX-APIKEY": "edKey1"}
        )
        assert response.status_code == 200, response.text
        assert {b["asset"] for b in response.json()["balances"]} >= {"BTC", "USDT"}
        tampered = await sim.http.get(
            f"/api/v3/account?{query}0&signature={sig}", headers={"X-MBX-APIKEY": "edKey1"}
        )
        assert error_of(tampered)[1] == -1022


async def test_non_ascii_symbol_must_be_percent_encoded(
    sim: Sim, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        encoded = await sim.signed("GET", "openOrders", {"symbol": "１２３４５６"})
        assert error_of(encoded) == (400, -1121, "Invalid symbol.")
        bad_utf8 = await sim.http.get("/api/v3/depth?symbol=%FF%FE")
        assert error_of(bad_utf8) == (400, -1100, "Illegal characters found in a parameter.")


# --- routing --------------------------------------------------------------------------------


async def test_unknown_path_wrong_method_and_removed_listen_key(
    sim: Sim, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        missing = await sim.http.get("/api/v3/nothingHere")
        assert error_of(missing) == (404, -1020, "This operation is not supported.")
        assert missing.headers["content-type"] == JSON_TYPE
        wrong = await sim.http.put("/api/v3/ping")
        assert error_of(wrong) == (405, -1020, "This operation is not supported.")
        for method in ("POST", "PUT", "DELETE"):
            gone = await sim.http.request(
                method, "/api/v3/userDataStream", headers={"X-MBX-APIKEY": API_KEY}
            )
            assert gone.status_code == 410
            assert gone.headers["content-type"] == "text/html"
            assert b"410 Gone" in gone.content


# --- rate limits over HTTP ------------------------------------------------------------------


async def test_weight_limit_429_then_418_ban(
    sim: Sim, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        sim.app.limiter.set_limit("REQUEST_WEIGHT", "MINUTE", 1, 2)
        for _ in range(2):
            assert (await sim.public("ping")).status_code == 200
        limited = await sim.public("ping")
        assert error_of(limited) == (
            429,
            -1003,
            "Too much request weight used; current limit is 2 request weight per 1 MINUTE. "
            "Please use WebSocket Streams for live updates to avoid polling the API.",
        )
        assert limited.headers["retry-after"] == "60"
        assert limited.headers["x-mbx-used-weight-1m"] == "3"
        for _ in range(2):
            assert (await sim.public("ping")).status_code == 429
        banned = await sim.public("ping")
        status, code, msg = error_of(banned)
        assert (status, code) == (418, -1003)
        assert msg.startswith(f"Way too much request weight used; IP banned until {T0 + 120_000}.")
        assert banned.headers["retry-after"] == "120"


async def test_order_rate_limit_429_with_1015(
    sim: Sim, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        sim.app.limiter.set_limit("ORDERS", "SECOND", 10, 1)
        params = {
            "symbol": "BTCUSDT",
            "side": "BUY",
            "type": "LIMIT",
            "timeInForce": "GTC",
            "quantity": "0.01",
            "price": "59000",
        }
        assert (await sim.signed("POST", "order", params)).status_code == 200
        limited = await sim.signed("POST", "order", params)
        assert error_of(limited) == (
            429,
            -1015,
            "Too many new orders; current limit is 1 orders per 10 SECOND.",
        )
        assert limited.headers["retry-after"] == "10"


# --- faults ---------------------------------------------------------------------------------


async def test_error_burst_answers_5xx_then_recovers(
    sim: Sim, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        sim.app.faults.error_burst = 2
        first = await sim.public("ping")
        assert error_of(first) == (
            503,
            -1008,
            "Server is currently overloaded with other requests. "
            "Please try again in a few minutes.",
        )
        sim.app.faults.error_status = 500
        assert error_of(await sim.public("ping"))[:2] == (500, -1000)
        assert (await sim.public("ping")).status_code == 200
        assert sim.app.statistics().injected_errors == 2


async def test_error_rate_is_deterministic_under_a_seed(
    sim: Sim, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):

        async def pattern() -> list[int]:
            sim.app.faults = RestFaults(error_rate=0.5, seed=42)
            return [(await sim.public("ping")).status_code for _ in range(12)]

        first = await pattern()
        assert first == await pattern()
        assert {200, 503} == set(first)


async def test_added_latency_delays_the_answer(
    sim: Sim, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        sim.app.faults.latency_s = 2.5
        start = trio.current_time()
        await sim.public("ping")
        assert trio.current_time() == start + 2.5


async def test_execute_then_503_executes_the_order(
    sim: Sim, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        sim.app.faults.execute_then_503 = 1
        params = {
            "symbol": "BTCUSDT",
            "side": "BUY",
            "type": "LIMIT",
            "timeInForce": "GTC",
            "quantity": "0.01",
            "price": "59000",
            "newClientOrderId": "unknownOutcome1",
        }
        hidden = await sim.signed("POST", "order", params)
        assert error_of(hidden) == (
            503,
            -1007,
            "Timeout waiting for response from backend server. "
            "Send status unknown; execution status unknown.",
        )
        found = await sim.signed(
            "GET", "order", {"symbol": "BTCUSDT", "origClientOrderId": "unknownOutcome1"}
        )
        assert found.json()["status"] == "NEW"
        assert sim.app.faults.execute_then_503 == 0


async def test_clock_skew_moves_server_time(
    sim: Sim, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        client_time = sim.clock.now_ms()
        sim.clock.skew_ms = 6000
        assert (await sim.public("time")).json() == {"serverTime": client_time + 6000}
        skewed = await sim.signed("GET", "account", timestamp=client_time)
        assert error_of(skewed)[1] == -1021


# --- malformed input never produces a 5xx ---------------------------------------------------

_junk = st.binary(max_size=80)
_paths = st.sampled_from(
    [
        "/api/v3/ping",
        "/api/v3/depth",
        "/api/v3/order",
        "/api/v3/exchangeInfo",
        "/api/v3/klines",
        "/api/v3/ticker/24hr",
        "/api/v3/account",
        "/api/v3/nope",
    ]
)


@settings(max_examples=40, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "DELETE", "PUT"]),
    path=_paths,
    query=_junk,
    body=_junk,
    content_type=st.sampled_from(["application/x-www-form-urlencoded", "text/plain", ""]),
    api_key=st.sampled_from([None, API_KEY, "x y", "unknownKey"]),
)
def test_malformed_requests_never_get_5xx(
    method: str, path: str, query: bytes, body: bytes, content_type: str, api_key: str | None
) -> None:
    async def run() -> int:
        exchange = Exchange(default_symbols(), seed=1)
        app = RestApp(exchange, clock=SimClock.start(T0))
        app.add_api_key(ApiKey.hmac(API_KEY, SECRET))
        sent: list[dict[str, object]] = []
        headers = [(b"content-type", content_type.encode())] if content_type else []
        if api_key is not None:
            headers.append((b"x-mbx-apikey", api_key.encode()))
        scope: dict[str, object] = {
            "type": "http",
            "method": method,
            "path": path,
            "query_string": query,
            "headers": headers,
            "client": ("127.0.0.9", 1),
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, object]:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        with trio.fail_after(5):
            await app(scope, receive, send)
        status = sent[0]["status"]
        assert isinstance(status, int)
        return status

    assert trio.run(run) < 500


async def test_oversized_body_is_413(sim: Sim, autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(10):
        response = await sim.http.post(
            "/api/v3/order",
            content=b"a=" + b"1" * 70_000,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert error_of(response)[:2] == (413, -1101)


# --- real socket ----------------------------------------------------------------------------


async def test_serve_rest_on_a_real_loopback_socket() -> None:
    _, _, app = make_sim_parts(epoch_ms=None)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_rest, app)
            assert port > 0
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                ping = await client.get("/api/v3/ping")
                assert (ping.status_code, ping.json()) == (200, {})
                assert ping.headers["content-type"] == JSON_TYPE
                assert ping.headers["x-mbx-used-weight-1m"] == "1"
                depth = await client.get("/api/v3/depth", params={"symbol": "BTCUSDT", "limit": 5})
                assert len(depth.json()["asks"]) == 5
                gone = await client.post("/api/v3/userDataStream")
                assert gone.status_code == 410
            nursery.cancel_scope.cancel()


async def test_python_binance_client_against_the_socket() -> None:
    """python-binance's sync client (requests) in a worker thread: the conformance target."""
    from binance.client import Client
    from binance.exceptions import BinanceAPIException

    _, _, app = make_sim_parts(epoch_ms=None)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_rest, app)

            def drive() -> dict[str, object]:
                client = Client(API_KEY, SECRET, ping=False)
                client.API_URL = f"http://127.0.0.1:{port}/api"
                client.session.trust_env = False
                out: dict[str, object] = {
                    "time": client.get_server_time(),
                    "info": client.get_symbol_info("BTCUSDT"),
                    "book": client.get_order_book(symbol="BTCUSDT", limit=5),
                }
                order = client.create_order(
                    symbol="BTCUSDT",
                    side="BUY",
                    type="LIMIT",
                    timeInForce="GTC",
                    quantity="0.01",
                    price="59000",
                )
                out["order"] = order
                out["get"] = client.get_order(symbol="BTCUSDT", orderId=order["orderId"])
                out["cancel"] = client.cancel_order(symbol="BTCUSDT", orderId=order["orderId"])
                out["account"] = client.get_account()
                try:
                    client.get_order(symbol="BTCUSDT", orderId=123456789)
                except BinanceAPIException as exc:
                    out["error"] = (exc.status_code, exc.code, exc.message)
                return out

            results = await in_thread(drive)
            nursery.cancel_scope.cancel()
    info = results["info"]
    assert isinstance(info, dict)
    assert info["symbol"] == "BTCUSDT"
    order = results["order"]
    assert isinstance(order, dict)
    assert order["status"] == "NEW"
    cancel = results["cancel"]
    assert isinstance(cancel, dict)
    assert cancel["status"] == "CANCELED"
    assert results["error"] == (400, -2013, "Order does not exist.")


# --- conformance layer: samples.json ---------------------------------------------------------


@pytest.mark.shared
async def test_error_bodies_match_documented_samples(
    sim: Sim, autojump_clock: trio.testing.MockClock, shared_dir: Path
) -> None:
    samples = json.loads((shared_dir / "binance" / "samples.json").read_text())
    with trio.fail_after(10):
        invalid = await sim.public("depth", {"symbol": "NOSUCH"})
        assert invalid.json() == samples["rest.error.-1121"]
        bad_sig = await sim.signed("GET", "account", secret="wrong")
        assert bad_sig.json() == samples["rest.error.-1022"]
        key = await sim.signed("GET", "account", api_key="someOtherKey")
        assert key.json() == samples["rest.error.-2015"]
        old = await sim.signed("GET", "account", timestamp=T0 - 10_000)
        assert old.json() == samples["rest.error.-1021"]
        ahead = await sim.signed("GET", "account", timestamp=T0 + 5000)
        assert ahead.json() == samples["rest.error.-1021.ahead"]
        ping = await sim.public("ping")
        assert ping.json() == samples["rest.ping"]
        info = (await sim.public("exchangeInfo")).json()
        documented = samples["rest.exchangeInfo.BNBBTC"]
        assert set(info) >= set(documented) - {"sors"}
        assert set(info["symbols"][0]) == set(documented["symbols"][0])


async def test_python_binance_ed25519_key_against_the_socket() -> None:
    """python-binance signing with an Ed25519 key: GET (encoded once) and POST (encoded twice)."""
    from binance.client import Client
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    private = Ed25519PrivateKey.from_private_bytes(bytes(range(2, 34)))
    pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    _, _, app = make_sim_parts(epoch_ms=None)
    app.add_api_key(ApiKey.ed25519("edKeyBinance", private.public_key()))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_rest, app)

            def drive() -> tuple[dict[str, object], dict[str, object]]:
                client = Client("edKeyBinance", private_key=pem, ping=False)
                client.API_URL = f"http://127.0.0.1:{port}/api"
                client.session.trust_env = False
                order = client.create_order(
                    symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.01"
                )
                return order, client.get_account()

            order, account = await in_thread(drive)
            nursery.cancel_scope.cancel()
    assert order["status"] == "FILLED"
    assert isinstance(account["balances"], list)


# --- routes derived from exchange/endpoints.py ----------------------------------------------


def test_every_listed_endpoint_has_a_route_and_every_route_an_endpoint() -> None:
    assert set(ROUTES) == set(ENDPOINTS)
    for key, (endpoint, _handler) in ROUTES.items():
        assert (endpoint.method, endpoint.path) == key


def test_an_endpoint_without_a_handler_is_refused_before_any_request() -> None:
    extra = Endpoint(method="GET", path="/api/v3/ticker", weight=4)
    with pytest.raises(RouteMismatchError, match=r"no handler for \[\('GET', '/api/v3/ticker'\)\]"):
        routes_for({**ENDPOINTS, ("GET", "/api/v3/ticker"): extra})
    fewer = {k: v for k, v in ENDPOINTS.items() if k != ("GET", "/api/v3/depth")}
    with pytest.raises(RouteMismatchError, match=r"no endpoint for \[\('GET', '/api/v3/depth'\)\]"):
        routes_for(fewer)


async def test_order_counts_come_once_the_order_reached_the_orders_limits(
    sim: Sim, autojump_clock: trio.testing.MockClock
) -> None:
    order = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.001"}
    with trio.fail_after(10):
        unread = await sim.signed("POST", "order", {**order, "colour": "red"})
        assert error_of(unread)[1] == -1104
        assert "x-mbx-order-count-10s" not in unread.headers  # never reached the limits
        refused = await sim.signed("POST", "order", {**order, "quantity": "0.0000001"})
        assert refused.status_code == 400
        assert refused.headers["x-mbx-order-count-10s"] == "0"  # counted, then taken back
