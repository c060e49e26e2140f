"""The REST half of the codec: order requests out; orders, exchangeInfo, account, errors in.

Fixtures are Binance's documented shapes written here as literals (a fresh clone has no
../shared); where ../shared exists its samples.json is decoded too.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import TYPE_CHECKING

import pytest

from genesis.errors import ExchangeProtocolError
from genesis.models.codec import (
    UsageReport,
    decode_account,
    decode_error_body,
    decode_exchange_info,
    decode_json,
    decode_my_trades,
    decode_order,
    decode_orders,
    decode_server_time,
    order_request_params,
    parse_usage_headers,
)
from genesis.models.exchange_info import RateLimitType
from genesis.models.orders import (
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    TimeInForce,
)

if TYPE_CHECKING:
    from pathlib import Path

D = Decimal

FULL = {
    "symbol": "BTCUSDT",
    "orderId": 28,
    "orderListId": -1,
    "clientOrderId": "6gCrw2kRUAF9CvJDGP16IP",
    "transactTime": 1507725176595,
    "price": "0.00000000",
    "origQty": "10.00000000",
    "executedQty": "10.00000000",
    "origQuoteOrderQty": "0.000000",
    "cummulativeQuoteQty": "39990.00000000",
    "status": "FILLED",
    "timeInForce": "GTC",
    "type": "MARKET",
    "side": "SELL",
    "workingTime": 1507725176595,
    "selfTradePreventionMode": "NONE",
    "fills": [
        {
            "price": "4000.00000000",
            "qty": "1.00000000",
            "commission": "4.00000000",
            "commissionAsset": "USDT",
            "tradeId": 56,
        },
        {
            "price": "3999.00000000",
            "qty": "9.00000000",
            "commission": "35.99100000",
            "commissionAsset": "USDT",
            "tradeId": 57,
        },
    ],
}
CANCEL = {
    "symbol": "LTCBTC",
    "origClientOrderId": "myOrder1",
    "orderId": 4,
    "orderListId": -1,
    "clientOrderId": "cancelMyOrder1",
    "transactTime": 1684804350068,
    "price": "2.00000000",
    "origQty": "1.00000000",
    "executedQty": "0.00000000",
    "origQuoteOrderQty": "0.000000",
    "cummulativeQuoteQty": "0.00000000",
    "status": "CANCELED",
    "timeInForce": "GTC",
    "type": "LIMIT",
    "side": "BUY",
    "selfTradePreventionMode": "NONE",
}
QUERY = {
    "symbol": "LTCBTC",
    "orderId": 1,
    "orderListId": -1,
    "clientOrderId": "myOrder1",
    "price": "0.1",
    "origQty": "1.0",
    "executedQty": "0.0",
    "cummulativeQuoteQty": "0.0",
    "status": "NEW",
    "timeInForce": "GTC",
    "type": "LIMIT",
    "side": "BUY",
    "stopPrice": "0.0",
    "icebergQty": "0.0",
    "time": 1499827319559,
    "updateTime": 1499827319560,
    "isWorking": True,
    "workingTime": 1499827319559,
    "origQuoteOrderQty": "0.000000",
    "selfTradePreventionMode": "NONE",
}
EXCHANGE_INFO = {
    "timezone": "UTC",
    "serverTime": 1565246363776,
    "rateLimits": [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 50},
        {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 160000},
        {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 300000},
        {"rateLimitType": "SOMETHING_NEW", "interval": "MINUTE", "intervalNum": 1, "limit": 1},
    ],
    "exchangeFilters": [],
    "symbols": [
        {
            "symbol": "BNBBTC",
            "status": "TRADING",
            "baseAsset": "BNB",
            "baseAssetPrecision": 8,
            "quoteAsset": "BTC",
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": "0.00000100",
                    "maxPrice": "100000.00000000",
                    "tickSize": "0.00000100",
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": "0.00100000",
                    "maxQty": "100000.00000000",
                    "stepSize": "0.00100000",
                },
                {
                    "filterType": "NOTIONAL",
                    "minNotional": "0.00010000",
                    "applyMinToMarket": True,
                    "maxNotional": "9000000.00000000",
                    "applyMaxToMarket": False,
                    "avgPriceMins": 5,
                },
                {
                    "filterType": "PERCENT_PRICE_BY_SIDE",
                    "bidMultiplierUp": "5",
                    "bidMultiplierDown": "0.2",
                    "askMultiplierUp": "5",
                    "askMultiplierDown": "0.2",
                    "avgPriceMins": 5,
                },
                {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
                {"filterType": "ICEBERG_PARTS", "limit": 100},
            ],
            "permissions": [],
        }
    ],
}


def test_order_request_params_are_positional_decimals_in_binance_order() -> None:
    request = OrderRequest.limit(
        symbol="BTCUSDT", side=OrderSide.BUY, quantity=D("1E-5"), price=D("60000.10")
    )
    assert order_request_params(request, client_order_id="c-1") == [
        ("symbol", "BTCUSDT"),
        ("side", "BUY"),
        ("type", "LIMIT"),
        ("timeInForce", "GTC"),
        ("quantity", "0.00001"),
        ("price", "60000.10"),
        ("newClientOrderId", "c-1"),
        ("newOrderRespType", "FULL"),
    ]
    quote = OrderRequest.market_quote(
        symbol="BTCUSDT", side=OrderSide.SELL, quote_order_qty=D("100")
    )
    assert ("quoteOrderQty", "100") in order_request_params(quote, client_order_id="q")
    stop = OrderRequest(
        symbol="BTCUSDT",
        side=OrderSide.SELL,
        type=OrderType.STOP_LOSS_LIMIT,
        quantity=D("1"),
        price=D("50000"),
        stop_price=D("50100"),
        time_in_force=TimeInForce.GTC,
    )
    assert ("stopPrice", "50100") in order_request_params(stop, client_order_id="s")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"type": OrderType.LIMIT, "quantity": D(1)}, "needs price"),
        ({"type": OrderType.MARKET, "quantity": D(1), "price": D(1)}, "takes no price"),
        ({"type": OrderType.MARKET}, "exactly one of quantity"),
        (
            {"type": OrderType.MARKET, "quantity": D(1), "quote_order_qty": D(1)},
            "exactly one of quantity",
        ),
        ({"type": OrderType.STOP_LOSS, "quantity": D(1)}, "needs stop price"),
        (
            {
                "type": OrderType.LIMIT_MAKER,
                "quantity": D(1),
                "price": D(1),
                "time_in_force": TimeInForce.GTC,
            },
            "takes no time in force",
        ),
        ({"type": OrderType.LIMIT_MAKER, "price": D(1)}, "needs a quantity"),
        (
            {"type": OrderType.LIMIT_MAKER, "price": D(1), "quote_order_qty": D(1)},
            "quote_order_qty is for MARKET",
        ),
        ({"type": OrderType.MARKET, "quantity": D(0)}, "positive"),
        ({"type": OrderType.MARKET, "quantity": D("NaN")}, "positive"),
        ({"type": OrderType.MARKET, "quantity": D(1), "client_order_id": "has space"}, "pattern"),
    ],
)
def test_order_requests_enforce_per_type_parameters(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        OrderRequest(symbol="BTCUSDT", side=OrderSide.BUY, **kwargs)  # type: ignore[arg-type]


def test_full_answer_decodes_fills_average_and_status() -> None:
    order = decode_order(FULL)
    assert order.exchange_status == "FILLED"
    assert order.status is OrderStatus.FILLED
    assert order.price is None  # a MARKET order's "0.00000000"
    assert order.quantity == order.filled_quantity == D("10")
    assert [f.trade_id for f in order.fills] == [56, 57]
    assert order.fills[1].commission == D("35.991")
    assert order.average_price == D("39990") / D("10")
    assert order.created_ms == order.updated_ms == 1507725176595


def test_cancel_answer_uses_the_original_client_order_id() -> None:
    order = decode_order(CANCEL)
    assert order.client_order_id == "myOrder1"
    assert order.status is OrderStatus.CANCELLED
    assert order.price == D("2")


def test_query_answer_keeps_times_and_no_stop_price_for_a_limit() -> None:
    order = decode_order(QUERY)
    assert (order.created_ms, order.updated_ms) == (1499827319559, 1499827319560)
    assert order.stop_price is None
    assert order.time_in_force is TimeInForce.GTC


def test_ack_answer_takes_the_rest_from_the_request() -> None:
    request = OrderRequest.limit(
        symbol="BTCUSDT", side=OrderSide.BUY, quantity=D("1"), price=D("2"), client_order_id="a"
    )
    ack = {
        "symbol": "BTCUSDT",
        "orderId": 5,
        "orderListId": -1,
        "clientOrderId": "a",
        "transactTime": 7,
    }
    order = decode_order(ack, request=request)
    assert (order.exchange_order_id, order.price, order.exchange_status) == (5, D("2"), None)
    with pytest.raises(ExchangeProtocolError, match="ACK"):
        decode_order(ack)


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.pop("orderId"), "missing key 'orderId'"),
        (lambda d: d.update(executedQty=10.0), "expected a decimal string"),
        (lambda d: d.update(status="WEIRD"), "unknown Binance order status"),
        (lambda d: d.update(type="ICEBERG"), "ICEBERG"),
        (lambda d: d.update(fills={}), "'fills' is not a list"),
        (lambda d: d.update(fills=[1]), "fill is not an object"),
        (lambda d: d.update(executedQty="11"), "exceeds quantity"),
    ],
)
def test_hostile_order_answers_are_protocol_errors(mutate: object, needle: str) -> None:
    data = json.loads(json.dumps(FULL))
    mutate(data)  # type: ignore[operator]
    with pytest.raises(ExchangeProtocolError, match=needle):
        decode_order(data)


def test_order_lists_are_skipped_in_cancel_all_answers() -> None:
    orders = decode_orders([CANCEL, {"orderListId": 1, "orderReports": []}])
    assert [o.client_order_id for o in orders] == ["myOrder1"]
    with pytest.raises(ExchangeProtocolError, match="array"):
        decode_orders({})


def test_exchange_info_decodes_limits_and_filters() -> None:
    info = decode_exchange_info(EXCHANGE_INFO)
    assert [(r.type, r.header_suffix, r.limit) for r in info.rate_limits] == [
        (RateLimitType.REQUEST_WEIGHT, "1M", 6000),
        (RateLimitType.ORDERS, "10S", 50),
        (RateLimitType.ORDERS, "1D", 160000),
        (RateLimitType.RAW_REQUESTS, "5M", 300000),
    ]
    bnb = info.symbol("BNBBTC")
    assert bnb is not None
    f = bnb.filters
    assert (f.tick_size, f.step_size, f.min_notional, f.max_notional) == (
        D("0.000001"),
        D("0.001"),
        D("0.0001"),
        D("9000000"),
    )
    assert (f.bid_multiplier_up, f.ask_multiplier_down, f.max_num_orders) == (D(5), D("0.2"), 200)
    assert bnb.order_types == frozenset({"LIMIT", "LIMIT_MAKER", "MARKET"})
    assert info.symbol("NOPE") is None


def test_account_and_trades_decode() -> None:
    account = decode_account(
        {
            "canTrade": True,
            "canWithdraw": False,
            "canDeposit": True,
            "accountType": "SPOT",
            "updateTime": 123,
            "balances": [{"asset": "BTC", "free": "1.5", "locked": "0.5"}],
        }
    )
    assert account.balance("BTC").total == D("2")
    assert account.balance("XRP").total == D("0")
    trades = decode_my_trades(
        [
            {
                "symbol": "BNBBTC",
                "id": 28457,
                "orderId": 100234,
                "orderListId": -1,
                "price": "4.00000100",
                "qty": "12.00000000",
                "quoteQty": "48.000012",
                "commission": "10.10000000",
                "commissionAsset": "BNB",
                "time": 1499865549590,
                "isBuyer": True,
                "isMaker": False,
                "isBestMatch": True,
            }
        ]
    )
    assert (trades[0].trade_id, trades[0].quote_quantity) == (28457, D("48.000012"))
    with pytest.raises(ExchangeProtocolError, match="missing key 'id'"):
        decode_my_trades([{"symbol": "X"}])
    with pytest.raises(ExchangeProtocolError, match="array"):
        decode_my_trades({})


def test_errors_time_and_json() -> None:
    assert decode_error_body(b'{"code":-1121,"msg":"Invalid symbol."}') == (
        -1121,
        "Invalid symbol.",
    )
    assert decode_error_body(b"<html>502</html>") is None
    assert decode_error_body(b'{"code":"x"}') is None
    assert decode_error_body(b'{"code":true}') is None
    assert decode_error_body(b"[1]") is None
    assert decode_error_body(b'{"code":-1}') == (-1, "")
    assert decode_server_time({"serverTime": 5}) == 5
    with pytest.raises(ExchangeProtocolError, match="time"):
        decode_server_time({"serverTime": "5"})
    with pytest.raises(ExchangeProtocolError, match="/api/v3/ping: invalid JSON"):
        decode_json(b"{", what="/api/v3/ping")


def test_usage_headers() -> None:
    headers = [
        ("X-MBX-USED-WEIGHT-1M", "42"),
        ("x-mbx-order-count-10s", "3"),
        ("X-MBX-ORDER-COUNT-1D", "9"),
        ("X-MBX-USED-WEIGHT", "42"),  # legacy, no interval
        ("X-MBX-USED-WEIGHT-1X", "1"),  # no such unit
        ("X-MBX-USED-WEIGHT-1M", "lots"),
        ("Content-Type", "application/json"),
    ]
    assert parse_usage_headers(headers) == [
        UsageReport(RateLimitType.REQUEST_WEIGHT, 60_000, 42),
        UsageReport(RateLimitType.ORDERS, 10_000, 3),
        UsageReport(RateLimitType.ORDERS, 86_400_000, 9),
    ]


@pytest.mark.shared
def test_documented_rest_samples_decode(shared_dir: Path) -> None:
    samples = json.loads((shared_dir / "binance" / "samples.json").read_text())

    def sample(key: str) -> object:
        entry = samples[key]
        return entry["payload"] if isinstance(entry, dict) and "payload" in entry else entry

    for key in ("rest.order.full", "rest.order.result", "rest.cancel", "rest.order.get"):
        order = decode_order(sample(key))
        assert order.exchange_status in {"FILLED", "CANCELED", "NEW"}
    assert decode_orders(sample("rest.openOrders"))
    assert decode_account(sample("rest.account")).balances
    assert decode_my_trades(sample("rest.myTrades"))
    assert decode_server_time(sample("rest.time")) > 0
