"""The simulator's exchange core: matching, balances, validation, wire shapes, market data.

Everything here is synchronous: the exchange takes ``now_ms``, so tests pass plain numbers.
Expected wire key sets are written out below from the documented shapes (FACTS.md §3/§10,
samples.json); a conformance layer additionally compares them with ``../shared`` when present.
"""

from __future__ import annotations

import itertools
import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from genesis.sim.errors import SimReject
from genesis.sim.exchange import (
    BookDiff,
    Exchange,
    ExecutionType,
    JsonObject,
    Order,
    OrderStatus,
    OrderType,
    account_trade_to_wire,
    execution_report,
    kline_next_open,
    kline_open_time,
    order_to_wire,
    result_to_wire,
)
from genesis.sim.market import MarketMaker
from genesis.sim.symbols import default_symbols, exchange_info_symbol, spec_for

if TYPE_CHECKING:
    from pathlib import Path

D = Decimal
SYM = "BTCUSDT"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def js(value: object) -> Any:
    """A wire object, for indexing into nested JSON in assertions."""
    return value


def make_exchange(*keys: str) -> Exchange:
    ex = Exchange(default_symbols(), seed=42)
    for key in keys:
        ex.add_account(key)
    return ex


def limit(
    ex: Exchange,
    key: str,
    side: str,
    qty: str,
    price: str,
    *,
    tif: str = "GTC",
    now_ms: int = T0,
    symbol: str = SYM,
    cid: str | None = None,
) -> Order:
    return ex.place_order(
        key,
        symbol=symbol,
        side=side,
        type="LIMIT",
        time_in_force=tif,
        quantity=qty,
        price=price,
        new_client_order_id=cid,
        now_ms=now_ms,
    ).order


def free(ex: Exchange, key: str, asset: str) -> Decimal:
    return ex.balances(key)[asset].free


def locked(ex: Exchange, key: str, asset: str) -> Decimal:
    return ex.balances(key)[asset].locked


# --- matching ------------------------------------------------------------------------------


def test_limit_orders_match_in_price_time_priority() -> None:
    ex = make_exchange("a", "b", "c", "d")
    first = limit(ex, "a", "SELL", "0.1", "60000", now_ms=T0)
    second = limit(ex, "b", "SELL", "0.1", "60000", now_ms=T0 + 1)
    better = limit(ex, "c", "SELL", "0.1", "59990", now_ms=T0 + 2)
    usdt_before = free(ex, "d", "USDT")

    result = ex.place_order(
        "d",
        symbol=SYM,
        side="BUY",
        type="LIMIT",
        time_in_force="GTC",
        quantity="0.25",
        price="60000",
        now_ms=T0 + 3,
    )

    assert [(f.price, f.qty) for f in result.fills] == [
        (D("59990"), D("0.1")),
        (D("60000"), D("0.1")),
        (D("60000"), D("0.05")),
    ]
    assert result.order.status is OrderStatus.FILLED
    assert result.first_fill is True
    assert ex.query_order("c", symbol=SYM, order_id=better.order_id).status is OrderStatus.FILLED
    assert ex.query_order("a", symbol=SYM, order_id=first.order_id).status is OrderStatus.FILLED
    rest = ex.query_order("b", symbol=SYM, order_id=second.order_id)
    assert rest.status is OrderStatus.PARTIALLY_FILLED
    assert rest.executed_qty == D("0.05")
    # The buyer paid the fill prices, not its limit: the price improvement came back.
    assert usdt_before - free(ex, "d", "USDT") == D("0.1") * 59990 + D("0.15") * 60000
    assert locked(ex, "d", "USDT") == 0
    assert ex.depth(SYM)["asks"] == [["60000.00000000", "0.05000000"]]


def test_partially_filled_limit_rests_and_locks_the_remainder() -> None:
    ex = make_exchange("maker", "taker")
    limit(ex, "maker", "SELL", "0.1", "60000")
    order = limit(ex, "taker", "BUY", "0.3", "60010")
    assert order.status is OrderStatus.PARTIALLY_FILLED
    assert order.executed_qty == D("0.1")
    assert ex.depth(SYM) == {
        "lastUpdateId": ex.update_id(SYM),
        "bids": [["60010.00000000", "0.20000000"]],
        "asks": [],
    }
    assert locked(ex, "taker", "USDT") == D("0.2") * 60010
    assert [o.order_id for o in ex.open_orders("taker", SYM)] == [order.order_id]


def test_ioc_fills_what_it_can_and_expires_the_rest() -> None:
    ex = make_exchange("maker", "taker")
    limit(ex, "maker", "SELL", "0.1", "60000")
    order = limit(ex, "taker", "BUY", "0.3", "60000", tif="IOC")
    assert order.status is OrderStatus.EXPIRED
    assert order.executed_qty == D("0.1")
    assert order.expiry_reason == "UNFILLED_IOC_QUANTITY_EXPIRED"
    assert ex.depth(SYM)["bids"] == []
    assert locked(ex, "taker", "USDT") == 0


def test_fok_expires_untouched_without_enough_liquidity_and_fills_with_it() -> None:
    ex = make_exchange("maker", "taker")
    limit(ex, "maker", "SELL", "0.1", "60000")
    before = ex.balances("taker")
    order = limit(ex, "taker", "BUY", "0.2", "60000", tif="FOK")
    assert order.status is OrderStatus.EXPIRED
    assert order.executed_qty == 0
    assert ex.balances("taker") == before
    assert ex.depth(SYM)["asks"] == [["60000.00000000", "0.10000000"]]

    filled = limit(ex, "taker", "BUY", "0.1", "60000", tif="FOK")
    assert filled.status is OrderStatus.FILLED


def test_limit_maker_is_rejected_when_it_would_take_and_rests_otherwise() -> None:
    ex = make_exchange("maker", "taker")
    limit(ex, "maker", "SELL", "0.1", "60000")
    with pytest.raises(SimReject) as exc:
        ex.place_order(
            "taker",
            symbol=SYM,
            side="BUY",
            type="LIMIT_MAKER",
            quantity="0.1",
            price="60000",
            now_ms=T0,
        )
    assert (exc.value.code, exc.value.msg) == (-2010, "Order would immediately match and take.")
    result = ex.place_order(
        "taker",
        symbol=SYM,
        side="BUY",
        type="LIMIT_MAKER",
        quantity="0.1",
        price="59999",
        now_ms=T0,
    )
    assert result.order.status is OrderStatus.NEW
    assert result.resp_type == "ACK"  # non-LIMIT/MARKET types default to ACK


def test_market_by_quantity_sweeps_levels_and_expires_when_liquidity_runs_out() -> None:
    ex = make_exchange("maker", "taker")
    limit(ex, "maker", "SELL", "0.1", "60000")
    limit(ex, "maker", "SELL", "0.1", "60100")
    result = ex.place_order(
        "taker", symbol=SYM, side="BUY", type="MARKET", quantity="0.15", now_ms=T0
    )
    assert result.order.status is OrderStatus.FILLED
    assert result.resp_type == "FULL"
    assert [(f.price, f.qty) for f in result.fills] == [(D(60000), D("0.1")), (D(60100), D("0.05"))]
    assert result.order.cummulative_quote_qty == D("0.1") * 60000 + D("0.05") * 60100

    short = ex.place_order("taker", symbol=SYM, side="BUY", type="MARKET", quantity="1", now_ms=T0)
    assert short.order.status is OrderStatus.EXPIRED
    assert short.order.executed_qty == D("0.05")
    assert short.order.expiry_reason == "INSUFFICIENT_LIQUIDITY"


def test_market_by_quote_quantity_spends_at_most_the_quote_and_expires_when_short() -> None:
    ex = make_exchange("maker", "taker")
    limit(ex, "maker", "SELL", "0.1", "60000")
    limit(ex, "maker", "SELL", "0.1", "60100")
    result = ex.place_order(
        "taker", symbol=SYM, side="BUY", type="MARKET", quote_order_qty="7000", now_ms=T0
    )
    order = result.order
    assert order.status is OrderStatus.FILLED
    assert order.orig_quote_order_qty == D(7000)
    assert order.cummulative_quote_qty <= D(7000)
    # Whole lot steps only; what is left cannot buy one more step at the next price.
    assert D(7000) - order.cummulative_quote_qty < D("0.00001") * 60100
    assert order.orig_qty == order.executed_qty == D("0.1") + D("0.01663")

    short = ex.place_order(
        "taker", symbol=SYM, side="BUY", type="MARKET", quote_order_qty="100000", now_ms=T0
    ).order
    assert short.status is OrderStatus.EXPIRED
    assert short.executed_qty == D("0.1") - D("0.01663")

    with pytest.raises(SimReject) as exc:
        ex.place_order(
            "taker", symbol=SYM, side="BUY", type="MARKET", quote_order_qty="10", now_ms=T0
        )
    assert exc.value.code == -2010
    assert exc.value.msg == "Order book liquidity is less than symbol minimum quantity."


def test_market_sell_by_quote_quantity_receives_about_the_quote() -> None:
    ex = make_exchange("maker", "taker")
    limit(ex, "maker", "BUY", "1", "50000")
    order = ex.place_order(
        "taker", symbol=SYM, side="SELL", type="MARKET", quote_order_qty="1000", now_ms=T0
    ).order
    assert order.status is OrderStatus.FILLED
    assert order.executed_qty == D("0.02")
    assert order.cummulative_quote_qty == D(1000)


def trade_at(ex: Exchange, price: str, now_ms: int = T0) -> None:
    """Print one public trade at ``price`` between two fresh accounts."""
    ex.add_account("p1")
    ex.add_account("p2")
    limit(ex, "p1", "SELL", "0.001", price, now_ms=now_ms)
    limit(ex, "p2", "BUY", "0.001", price, now_ms=now_ms)


def test_stop_loss_sell_triggers_on_last_price_and_executes_as_market() -> None:
    ex = make_exchange("user", "bidder")
    trade_at(ex, "60000")
    events: list[JsonObject] = []
    ex.add_user_listener("user", events.append)
    stop = ex.place_order(
        "user",
        symbol=SYM,
        side="SELL",
        type="STOP_LOSS",
        quantity="0.5",
        stop_price="59000",
        now_ms=T0,
    )
    assert stop.resp_type == "ACK"
    assert stop.order.status is OrderStatus.NEW
    assert stop.order.is_working is False
    assert stop.order.working_time_ms == -1
    assert locked(ex, "user", "BTC") == D("0.5")
    limit(ex, "bidder", "BUY", "1", "58000")

    trade_at(ex, "59500", now_ms=T0 + 1)  # above the stop: nothing happens
    assert (
        ex.query_order("user", symbol=SYM, order_id=stop.order.order_id).status is OrderStatus.NEW
    )
    trade_at(ex, "59000", now_ms=T0 + 2)  # reaches the stop

    done = ex.query_order("user", symbol=SYM, order_id=stop.order.order_id)
    assert done.status is OrderStatus.FILLED
    assert done.cummulative_quote_qty == D("0.5") * 58000
    assert done.working_time_ms == T0 + 2
    assert locked(ex, "user", "BTC") == 0
    reports = [(e["x"], e["X"], e["w"]) for e in events if e["e"] == "executionReport"]
    assert reports == [
        ("NEW", "NEW", False),
        ("NEW", "NEW", True),
        ("TRADE", "FILLED", False),
    ]


def test_stop_orders_that_would_trigger_immediately_are_rejected() -> None:
    ex = make_exchange("user")
    trade_at(ex, "60000")
    cases = [
        ("STOP_LOSS", "SELL", "60500"),  # stop below market required
        ("STOP_LOSS", "BUY", "59500"),  # stop above market required
        ("TAKE_PROFIT", "SELL", "59500"),
        ("TAKE_PROFIT", "BUY", "60500"),
    ]
    for otype, side, stop in cases:
        with pytest.raises(SimReject) as exc:
            ex.place_order(
                "user",
                symbol=SYM,
                side=side,
                type=otype,
                quantity="0.1",
                stop_price=stop,
                now_ms=T0,
            )
        assert (exc.value.code, exc.value.msg) == (-2010, "Order would trigger immediately.")


def test_stop_loss_limit_buy_triggers_and_rests_at_its_limit() -> None:
    ex = make_exchange("user")
    trade_at(ex, "60000")
    order = ex.place_order(
        "user",
        symbol=SYM,
        side="BUY",
        type="STOP_LOSS_LIMIT",
        time_in_force="GTC",
        quantity="0.2",
        price="60600",
        stop_price="60500",
        now_ms=T0,
    ).order
    assert locked(ex, "user", "USDT") == D("0.2") * 60600
    trade_at(ex, "60500", now_ms=T0 + 5)
    working = ex.query_order("user", symbol=SYM, order_id=order.order_id)
    assert working.status is OrderStatus.NEW
    assert working.is_working is True
    assert js(ex.depth(SYM))["bids"][0] == ["60600.00000000", "0.20000000"]


def test_take_profit_sell_triggers_when_price_rises() -> None:
    ex = make_exchange("user", "bidder")
    trade_at(ex, "60000")
    order = ex.place_order(
        "user",
        symbol=SYM,
        side="SELL",
        type="TAKE_PROFIT",
        quantity="0.1",
        stop_price="61000",
        now_ms=T0,
    ).order
    limit(ex, "bidder", "BUY", "1", "60900")
    trade_at(ex, "61000", now_ms=T0 + 1)
    done = ex.query_order("user", symbol=SYM, order_id=order.order_id)
    assert done.status is OrderStatus.FILLED
    assert done.cummulative_quote_qty == D("0.1") * 60900


def test_cancel_releases_the_lock_and_reports_the_cancel_ids() -> None:
    ex = make_exchange("user")
    order = limit(ex, "user", "BUY", "0.1", "50000", cid="mine")
    assert locked(ex, "user", "USDT") == D(5000)
    canceled = ex.cancel_order(
        "user", symbol=SYM, orig_client_order_id="mine", new_client_order_id="cxl", now_ms=T0 + 9
    )
    assert canceled.status is OrderStatus.CANCELED
    assert locked(ex, "user", "USDT") == 0
    wire = order_to_wire(canceled, "CANCEL")
    assert wire["origClientOrderId"] == "mine"
    assert wire["clientOrderId"] == "cxl"
    assert wire["transactTime"] == T0 + 9
    assert ex.query_order("user", symbol=SYM, order_id=order.order_id).status is (
        OrderStatus.CANCELED
    )
    assert ex.depth(SYM)["bids"] == []


def test_cancel_all_cancels_every_open_order_of_the_symbol() -> None:
    ex = make_exchange("user")
    limit(ex, "user", "BUY", "0.1", "50000")
    limit(ex, "user", "SELL", "0.1", "70000")
    limit(ex, "user", "BUY", "1", "2000", symbol="ETHUSDT")
    canceled = ex.cancel_all("user", symbol=SYM, now_ms=T0)
    assert [o.status for o in canceled] == [OrderStatus.CANCELED, OrderStatus.CANCELED]
    assert ex.open_orders("user", SYM) == []
    assert len(ex.open_orders("user")) == 1
    with pytest.raises(SimReject) as exc:
        ex.cancel_all("user", symbol=SYM, now_ms=T0)
    assert (exc.value.code, exc.value.msg) == (-2011, "Unknown order sent.")


def test_duplicate_client_order_id_is_rejected_while_open_and_accepted_after() -> None:
    ex = make_exchange("user", "other")
    limit(ex, "user", "BUY", "0.1", "50000", cid="dup")
    with pytest.raises(SimReject) as exc:
        limit(ex, "user", "BUY", "0.1", "50000", cid="dup")
    assert (exc.value.code, exc.value.msg) == (-2010, "Duplicate order sent.")
    ex.cancel_order("user", symbol=SYM, orig_client_order_id="dup", now_ms=T0)
    again = limit(ex, "user", "SELL", "0.1", "60000", cid="dup")  # reuse after cancel
    limit(ex, "other", "BUY", "0.1", "60000")  # fills it
    assert ex.query_order("user", symbol=SYM, orig_client_order_id="dup").order_id == (
        again.order_id
    )
    third = limit(ex, "user", "BUY", "0.1", "50000", cid="dup")  # reuse after fill
    assert third.status is OrderStatus.NEW


def test_generated_client_ids_look_like_binance_ones() -> None:
    ex = make_exchange("user")
    cid = limit(ex, "user", "BUY", "0.1", "50000").client_order_id
    assert len(cid) == 22
    assert cid.isalnum()


def test_order_and_trade_ids_increase_per_symbol() -> None:
    ex = make_exchange("a", "b")
    ids = [limit(ex, "a", "SELL", "0.001", "60000").order_id for _ in range(3)]
    eth = limit(ex, "a", "SELL", "0.01", "3000", symbol="ETHUSDT").order_id
    assert ids == [1, 2, 3]
    assert eth == 1
    fills = ex.place_order("b", symbol=SYM, side="BUY", type="MARKET", quantity="0.003", now_ms=T0)
    assert [f.trade_id for f in fills.fills] == [1, 2, 3]


def test_halted_symbol_rejects_new_orders_with_market_closed() -> None:
    ex = make_exchange("user")
    resting = limit(ex, "user", "BUY", "0.1", "50000")
    ex.set_symbol_status(SYM, "HALT")
    assert ex.spec(SYM).status == "HALT"
    with pytest.raises(SimReject) as exc:
        limit(ex, "user", "BUY", "0.1", "50000")
    assert (exc.value.code, exc.value.msg) == (-2010, "Market is closed.")
    assert ex.cancel_order("user", symbol=SYM, order_id=resting.order_id, now_ms=T0).status is (
        OrderStatus.CANCELED
    )
    ex.set_symbol_status(SYM, "TRADING")
    assert limit(ex, "user", "BUY", "0.1", "50000").status is OrderStatus.NEW


def test_max_num_orders_filter() -> None:
    spec = attrs.evolve(spec_for(SYM), max_num_orders=2)
    ex = Exchange([spec], seed=1)
    ex.add_account("user")
    limit(ex, "user", "BUY", "0.1", "50000")
    limit(ex, "user", "BUY", "0.1", "50001")
    with pytest.raises(SimReject) as exc:
        limit(ex, "user", "BUY", "0.1", "50002")
    assert (exc.value.code, exc.value.msg) == (-1013, "Filter failure: MAX_NUM_ORDERS")


# --- validation: every documented code and message -------------------------------------

BASE_LIMIT: dict[str, str | None] = {
    "symbol": SYM,
    "side": "BUY",
    "type": "LIMIT",
    "time_in_force": "GTC",
    "quantity": "0.01",
    "price": "50000",
}

MANDATORY = "Mandatory parameter '{}' was not sent, was empty/null, or malformed."
NUMBER = "^([0-9]{1,20})(\\.[0-9]{1,20})?$"


@pytest.mark.parametrize(
    ("changes", "code", "msg"),
    [
        ({"symbol": None}, -1102, MANDATORY.format("symbol")),
        ({"symbol": "NOPEUSDT"}, -1121, "Invalid symbol."),
        ({"side": ""}, -1102, MANDATORY.format("side")),
        ({"side": "HOLD"}, -1117, "Invalid side."),
        ({"type": None}, -1102, MANDATORY.format("type")),
        ({"type": "ICEBERG"}, -1116, "Invalid orderType."),
        ({"time_in_force": None}, -1102, MANDATORY.format("timeInForce")),
        ({"time_in_force": "GTX"}, -1115, "Invalid timeInForce."),
        ({"quantity": None}, -1102, MANDATORY.format("quantity")),
        ({"price": None}, -1102, MANDATORY.format("price")),
        (
            {"quantity": "1e3"},
            -1100,
            f"Illegal characters found in parameter 'quantity'; legal range is '{NUMBER}'.",
        ),
        (
            {"price": "-5"},
            -1100,
            f"Illegal characters found in parameter 'price'; legal range is '{NUMBER}'.",
        ),
        ({"quantity": "0.000000001"}, -1111, "Parameter 'quantity' has too much precision."),
        ({"price": "50000.001"}, -1013, "Filter failure: PRICE_FILTER"),
        ({"price": "0"}, -1013, "Filter failure: PRICE_FILTER"),
        ({"quantity": "0.000015"}, -1013, "Filter failure: LOT_SIZE"),
        ({"quantity": "0"}, -1013, "Filter failure: LOT_SIZE"),
        ({"quantity": "0.00001"}, -1013, "Filter failure: NOTIONAL"),
        ({"quantity": "10000"}, -1013, "Filter failure: LOT_SIZE"),
        ({"quantity": "21"}, -2010, "Account has insufficient balance for requested action."),
        ({"stop_price": "1"}, -1106, "Parameter 'stopPrice' sent when not required."),
        ({"quote_order_qty": "10"}, -1106, "Parameter 'quoteOrderQty' sent when not required."),
        (
            {"new_order_resp_type": "ALL"},
            -1130,
            "Data sent for parameter 'newOrderRespType' is not valid.",
        ),
        (
            {"new_client_order_id": "has space"},
            -1100,
            "Illegal characters found in parameter 'newClientOrderId'; legal range is "
            "'^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.",
        ),
        (
            {"type": "MARKET", "time_in_force": None, "price": None, "quantity": None},
            -1102,
            "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!",
        ),
        (
            {"type": "MARKET", "time_in_force": "GTC", "price": None},
            -1106,
            "Parameter 'timeInForce' sent when not required.",
        ),
        (
            {"type": "MARKET", "time_in_force": None},
            -1106,
            "Parameter 'price' sent when not required.",
        ),
        (
            {"type": "MARKET", "time_in_force": None, "price": None, "quote_order_qty": "10"},
            -1106,
            "Parameter 'quoteOrderQty' sent when not required.",
        ),
        (
            {"type": "MARKET", "time_in_force": None, "price": None, "quantity": "101"},
            -1013,
            "Filter failure: MARKET_LOT_SIZE",
        ),
        (
            {"type": "STOP_LOSS_LIMIT"},
            -1102,
            MANDATORY.format("stopPrice"),
        ),
        (
            {"type": "STOP_LOSS", "time_in_force": None, "price": None, "stop_price": "1.001"},
            -1013,
            "Filter failure: PRICE_FILTER",
        ),
    ],
)
def test_order_validation_errors(changes: dict[str, str | None], code: int, msg: str) -> None:
    ex = make_exchange("user")
    params = {**BASE_LIMIT, **changes}
    with pytest.raises(SimReject) as exc:
        ex.place_order("user", now_ms=T0, **params)  # type: ignore[arg-type]
    assert (exc.value.code, exc.value.msg) == (code, msg)
    assert exc.value.to_wire() == {"code": code, "msg": msg}
    assert ex.open_orders("user") == []


def test_unknown_api_key_is_rejected() -> None:
    ex = make_exchange()
    with pytest.raises(SimReject) as exc:
        ex.place_order("ghost", now_ms=T0, **BASE_LIMIT)  # type: ignore[arg-type]
    assert (exc.value.code, exc.value.msg) == (
        -2015,
        "Invalid API-key, IP, or permissions for action.",
    )


def test_test_orders_validate_without_reaching_the_engine() -> None:
    ex = make_exchange("user")
    result = ex.place_order("user", now_ms=T0, test=True, **BASE_LIMIT)
    assert result.order.order_id == -1
    assert ex.open_orders("user") == []
    with pytest.raises(SimReject):
        ex.place_order("user", now_ms=T0, test=True, **{**BASE_LIMIT, "price": "1.001"})


def test_cancel_and_query_errors() -> None:
    ex = make_exchange("user", "other")
    order = limit(ex, "user", "BUY", "0.1", "50000", cid="abc")
    both = "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"
    cases: list[tuple[dict[str, object], int, str]] = [
        ({}, -1102, both),
        ({"order_id": 999}, -2011, "Unknown order sent."),
        ({"order_id": order.order_id, "orig_client_order_id": "zzz"}, -2011, "Unknown order sent."),
        (
            {"order_id": order.order_id, "cancel_restrictions": "NEVER"},
            -1145,
            "Invalid cancelRestrictions",
        ),
        (
            {"order_id": order.order_id, "cancel_restrictions": "ONLY_PARTIALLY_FILLED"},
            -2011,
            "Order was not canceled due to cancel restrictions.",
        ),
    ]
    for kwargs, code, msg in cases:
        with pytest.raises(SimReject) as exc:
            ex.cancel_order("user", symbol=SYM, now_ms=T0, **kwargs)  # type: ignore[arg-type]
        assert (exc.value.code, exc.value.msg) == (code, msg), kwargs
    with pytest.raises(SimReject) as exc:
        ex.query_order("user", symbol=SYM, order_id=999)
    assert (exc.value.code, exc.value.msg) == (-2013, "Order does not exist.")
    with pytest.raises(SimReject) as exc:
        ex.query_order("user", symbol=SYM, order_id=order.order_id, orig_client_order_id="zzz")
    assert (exc.value.code, exc.value.msg) == (
        -2039,
        "Client order ID is not correct for this order ID.",
    )
    with pytest.raises(SimReject) as exc:
        ex.query_order("user", symbol=SYM)
    assert exc.value.code == -1102
    with pytest.raises(SimReject) as exc:
        ex.query_order("other", symbol=SYM, order_id=order.order_id)  # not theirs
    assert exc.value.code == -2013
    assert (
        ex.cancel_order(
            "user", symbol=SYM, order_id=order.order_id, cancel_restrictions="ONLY_NEW", now_ms=T0
        ).status
        is OrderStatus.CANCELED
    )
    with pytest.raises(SimReject) as exc:
        ex.cancel_order("user", symbol=SYM, order_id=order.order_id, now_ms=T0)  # already closed
    assert exc.value.code == -2011


# --- balances: conservation property ----------------------------------------------------

ORDER_OPS = st.one_of(
    st.tuples(
        st.just("limit"),
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from(["BUY", "SELL"]),
        st.integers(1, 40),  # quantity in 0.001 BTC
        st.integers(-5, 5),  # price offset in 10 USDT from 60000
        st.sampled_from(["GTC", "IOC", "FOK"]),
    ),
    st.tuples(
        st.just("market"),
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from(["BUY", "SELL"]),
        st.integers(1, 40),
        st.booleans(),  # by quote quantity
        st.just(""),
    ),
    st.tuples(
        st.just("stop"),
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from(["BUY", "SELL"]),
        st.integers(1, 20),
        st.integers(1, 5),
        st.sampled_from(["STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT"]),
    ),
    st.tuples(
        st.just("cancel"),
        st.sampled_from(["a", "b", "c"]),
        st.just(""),
        st.integers(0, 30),
        st.integers(0, 0),
        st.just(""),
    ),
)


def _apply(ex: Exchange, op: tuple[str, str, str, int, int | bool, str], now_ms: int) -> None:
    kind, key, side, n, x, extra = op
    try:
        if kind == "limit":
            limit(
                ex, key, side, str(D(n) / 1000), str(60000 + 10 * int(x)), tif=extra, now_ms=now_ms
            )
        elif kind == "market":
            if x:
                ex.place_order(
                    key,
                    symbol=SYM,
                    side=side,
                    type="MARKET",
                    quote_order_qty=str(n * 60),
                    now_ms=now_ms,
                )
            else:
                ex.place_order(
                    key,
                    symbol=SYM,
                    side=side,
                    type="MARKET",
                    quantity=str(D(n) / 1000),
                    now_ms=now_ms,
                )
        elif kind == "stop":
            above = extra.startswith("STOP") == (side == "BUY")
            stop = 60000 + (1 if above else -1) * 10 * int(x)
            is_limit = extra.endswith("LIMIT")
            ex.place_order(
                key,
                symbol=SYM,
                side=side,
                type=extra,
                quantity=str(D(n) / 1000),
                stop_price=str(stop),
                price=str(stop) if is_limit else None,
                time_in_force="GTC" if is_limit else None,
                now_ms=now_ms,
            )
        else:
            open_orders = ex.open_orders(key, SYM)
            if open_orders:
                target = open_orders[n % len(open_orders)]
                ex.cancel_order(key, symbol=SYM, order_id=target.order_id, now_ms=now_ms)
    except SimReject:
        pass


def _totals(ex: Exchange, keys: list[str]) -> dict[str, Decimal]:
    total: dict[str, Decimal] = {}
    for key in keys:
        for asset, bal in ex.balances(key).items():
            assert bal.free >= 0, (key, asset, bal)
            assert bal.locked >= 0, (key, asset, bal)
            total[asset] = total.get(asset, D(0)) + bal.free + bal.locked
    for asset, fee in ex.fees_collected().items():
        total[asset] = total.get(asset, D(0)) + fee
    return total


@given(st.lists(ORDER_OPS, min_size=1, max_size=40))
def test_assets_are_conserved_across_accounts_and_fees(
    ops: list[tuple[str, str, str, int, int | bool, str]],
) -> None:
    ex = make_exchange("a", "b", "c")
    trade_at(ex, "60000")
    for i in range(1, 6):  # some liquidity on both sides for the sequence to trade against
        limit(ex, "p1", "SELL", "0.01", str(60000 + 10 * i))
        limit(ex, "p2", "BUY", "0.01", str(60000 - 10 * i))
    keys = ["a", "b", "c", "p1", "p2"]
    before = _totals(ex, keys)
    for i, op in enumerate(ops):
        _apply(ex, op, T0 + i)
    assert _totals(ex, keys) == before
    # Locked funds are exactly what the open orders still need.
    for key in keys:
        want = {"BTC": D(0), "USDT": D(0)}
        for o in ex.open_orders(key, SYM):
            left = o.orig_qty - o.executed_qty
            if o.side == "SELL":
                want["BTC"] += left
            elif o.type in (OrderType.STOP_LOSS, OrderType.TAKE_PROFIT):
                want["USDT"] += left * o.stop_price
            else:
                want["USDT"] += left * o.price
        bals = ex.balances(key)
        assert {a: bals[a].locked for a in want} == want, key


# --- book diffs (FACTS.md §9) ------------------------------------------------------------


def apply_diffs(snapshot: JsonObject, diffs: list[BookDiff]) -> dict[str, dict[Decimal, Decimal]]:
    """The documented local-order-book procedure over a REST snapshot."""
    last_id = snapshot["lastUpdateId"]
    assert isinstance(last_id, int)
    book: dict[str, dict[Decimal, Decimal]] = {"bids": {}, "asks": {}}
    for side in ("bids", "asks"):
        levels = snapshot[side]
        assert isinstance(levels, list)
        for price, qty in levels:
            book[side][D(price)] = D(qty)
    live = [d for d in diffs if d.last_update_id > last_id]
    if live:
        assert live[0].first_update_id <= last_id + 1 <= live[0].last_update_id
    for d in live:
        assert d.first_update_id <= last_id + 1, "gap in the diff chain"
        for side, changes in (("bids", d.bids), ("asks", d.asks)):
            for price, qty in changes:
                if qty == 0:
                    book[side].pop(price, None)
                else:
                    book[side][price] = qty
        last_id = d.last_update_id
    return book


def test_book_diffs_chain_without_gaps_and_rebuild_the_book_from_a_snapshot() -> None:
    ex = make_exchange("user")
    maker = MarketMaker(ex, seed=3)
    diffs: list[BookDiff] = []
    ex.add_book_listener(lambda d: diffs.append(d) if d.symbol == SYM else None)
    for k in range(20):
        maker.step(T0 + 100 * k)
    snapshot = ex.depth(SYM, 5000)
    for k in range(20, 60):
        maker.step(T0 + 100 * k)
        if k == 30:
            limit(ex, "user", "BUY", "0.5", str(maker.fair_price(SYM) + 50), now_ms=T0 + 100 * k)
    ids = [(d.first_update_id, d.last_update_id) for d in diffs]
    assert all(nxt[0] == prev[1] + 1 for prev, nxt in itertools.pairwise(ids))
    rebuilt = apply_diffs(snapshot, diffs)
    final = ex.depth(SYM, 5000)
    assert final["lastUpdateId"] == ids[-1][1]
    assert rebuilt == apply_diffs(final, [])


# --- listeners and user events -----------------------------------------------------------

EXECUTION_REPORT_KEYS = set(
    "e E s c S o f q p P F g C x X r i l z L n N T t I w m M O Z Y Q W V".split()  # noqa: SIM905
)
ACCOUNT_POSITION_KEYS = {"e", "E", "u", "B"}


def test_user_events_are_binance_shaped_and_only_for_listened_accounts() -> None:
    ex = make_exchange("maker", "taker")
    events: list[JsonObject] = []
    remove = ex.add_user_listener("maker", events.append)
    order = limit(ex, "maker", "SELL", "0.1", "60000", cid="m1")
    ex.place_order("taker", symbol=SYM, side="BUY", type="MARKET", quantity="0.04", now_ms=T0 + 1)
    kinds = [(e["e"], e.get("x")) for e in events]
    assert kinds == [
        ("executionReport", "NEW"),
        ("outboundAccountPosition", None),
        ("executionReport", "TRADE"),
        ("outboundAccountPosition", None),
    ]
    new, position, trade, position2 = events
    assert set(new) == EXECUTION_REPORT_KEYS
    assert new["c"] == "m1"
    assert new["N"] is None
    assert new["n"] == "0"
    assert trade["X"] == "PARTIALLY_FILLED"
    assert trade["m"] is True
    assert trade["l"] == "0.04000000"
    assert trade["L"] == "60000.00000000"
    assert trade["n"] == "2.40000000"  # 0.1 % of the 2400 USDT received
    assert trade["N"] == "USDT"
    assert trade["i"] == order.order_id
    assert set(position) == ACCOUNT_POSITION_KEYS
    assert position["B"] == [{"a": "BTC", "f": "9.90000000", "l": "0.10000000"}]
    assert {b["a"] for b in js(position2)["B"]} == {"BTC", "USDT"}
    remove()
    ex.cancel_order("maker", symbol=SYM, order_id=order.order_id, now_ms=T0 + 2)
    assert len(events) == 4


def test_canceled_execution_report_carries_both_client_ids() -> None:
    ex = make_exchange("user")
    events: list[JsonObject] = []
    ex.add_user_listener("user", events.append)
    limit(ex, "user", "BUY", "0.1", "50000", cid="orig")
    ex.cancel_order(
        "user", symbol=SYM, orig_client_order_id="orig", new_client_order_id="cxl", now_ms=T0 + 3
    )
    report = next(e for e in events if e.get("x") == "CANCELED")
    assert (report["c"], report["C"], report["X"], report["E"]) == (
        "cxl",
        "orig",
        "CANCELED",
        T0 + 3,
    )


def test_first_fill_of_a_resting_order_goes_to_the_listener_once() -> None:
    ex = make_exchange("maker", "taker")
    seen: list[tuple[str, int]] = []
    ex.add_first_fill_listener(lambda key, order: seen.append((key, order.order_id)))
    resting = ex.place_order(
        "maker",
        symbol=SYM,
        side="SELL",
        type="LIMIT",
        time_in_force="GTC",
        quantity="0.3",
        price="60000",
        now_ms=T0,
    )
    assert resting.first_fill is False
    first = ex.place_order(
        "taker", symbol=SYM, side="BUY", type="MARKET", quantity="0.1", now_ms=T0
    )
    ex.place_order("taker", symbol=SYM, side="BUY", type="MARKET", quantity="0.1", now_ms=T0)
    assert first.first_fill is True  # the taker's own first fill is in its result
    assert seen == [("maker", resting.order.order_id)]


def test_trade_listener_gets_each_operation_with_aggregate_ids() -> None:
    ex = make_exchange("maker", "taker")
    batches: list[tuple[str, list[tuple[int, int]]]] = []
    ex.add_trade_listener(lambda s, ts: batches.append((s, [(t.trade_id, t.agg_id) for t in ts])))
    limit(ex, "maker", "SELL", "0.1", "60000")
    limit(ex, "maker", "SELL", "0.1", "60000")
    limit(ex, "maker", "SELL", "0.1", "60100")
    ex.place_order("taker", symbol=SYM, side="BUY", type="MARKET", quantity="0.3", now_ms=T0)
    assert batches == [(SYM, [(1, 1), (2, 1), (3, 2)])]
    assert [(r["a"], r["f"], r["l"], r["q"]) for r in ex.agg_trades(SYM)] == [
        (1, 1, 2, "0.20000000"),
        (2, 3, 3, "0.10000000"),
    ]


# --- market data -------------------------------------------------------------------------


def test_klines_aggregate_trades_and_fill_idle_intervals_with_the_previous_close() -> None:
    ex = make_exchange()
    trade_at(ex, "60000", now_ms=T0 + 1_000)
    trade_at(ex, "60100", now_ms=T0 + 30_000)
    trade_at(ex, "59900", now_ms=T0 + 59_999)
    trade_at(ex, "60050", now_ms=T0 + 150_000)
    rows = ex.klines(SYM, "1m", now_ms=T0 + 170_000)
    assert [r[0] for r in rows] == [T0, T0 + 60_000, T0 + 120_000]
    first, idle, third = rows
    assert first == [
        T0,
        "60000.00000000",
        "60100.00000000",
        "59900.00000000",
        "59900.00000000",
        "0.00300000",
        T0 + 59_999,
        "180.00000000",
        3,
        "0.00300000",
        "180.00000000",
        "0",
    ]
    assert idle[1:6] == ["59900.00000000"] * 4 + ["0.00000000"]
    assert idle[8] == 0
    assert third[4] == "60050.00000000"
    hour = ex.klines(SYM, "1h", now_ms=T0 + 170_000)
    assert len(hour) == 1
    assert hour[0][8] == 4
    assert hour[0][5] == "0.00400000"
    seconds = ex.klines(SYM, "1s", start_time=T0 + 30_000, limit=2, now_ms=T0 + 170_000)
    assert [r[0] for r in seconds] == [T0 + 30_000, T0 + 31_000]
    assert (
        ex.klines(SYM, "1m", start_time=T0 + 60_000, end_time=T0 + 60_000, now_ms=T0 + 170_000)[0][
            0
        ]
        == T0 + 60_000
    )
    with pytest.raises(SimReject) as exc:
        ex.klines(SYM, "7m", now_ms=T0)
    assert (exc.value.code, exc.value.msg) == (-1120, "Invalid interval.")


def test_kline_calendar_alignment() -> None:
    t = 1_767_312_000_123  # 2026-01-02T00:00:00.123Z, a Friday
    assert kline_open_time("1M", t) == T0
    assert kline_next_open("1M", T0) == T0 + 31 * 86_400_000
    assert kline_open_time("1w", t) == T0 - 3 * 86_400_000  # Monday 2025-12-29
    assert kline_open_time("15m", t) == t - 123


def test_kline_stream_object_reports_closed_once_past_its_close() -> None:
    ex = make_exchange()
    trade_at(ex, "60000", now_ms=T0 + 5)
    k = ex.kline(SYM, "1m", T0, now_ms=T0 + 10)
    assert k["x"] is False
    assert (k["f"], k["L"], k["n"]) == (1, 1, 1)
    assert ex.kline(SYM, "1m", T0, now_ms=T0 + 60_000)["x"] is True
    assert ex.kline(SYM, "1m", T0 + 60_000, now_ms=T0 + 60_001)["f"] == -1


def test_ticker_24hr_uses_a_rolling_window() -> None:
    ex = make_exchange()
    trade_at(ex, "50000", now_ms=T0)
    trade_at(ex, "60000", now_ms=T0 + 3_600_000)
    trade_at(ex, "66000", now_ms=T0 + 7_200_000)
    now = T0 + 86_400_000 + 120_000  # the first trade has left the window
    full = ex.ticker_24hr(SYM, now_ms=now)
    assert full["openPrice"] == "60000.00000000"
    assert full["lastPrice"] == "66000.00000000"
    assert full["prevClosePrice"] == "50000.00000000"
    assert full["priceChange"] == "6000.00000000"
    assert full["priceChangePercent"] == "10.000"
    assert full["highPrice"] == "66000.00000000"
    assert full["weightedAvgPrice"] == "63000.00000000"
    assert (full["firstId"], full["lastId"], full["count"]) == (2, 3, 2)
    assert (full["openTime"], full["closeTime"]) == (now - 86_400_000, now)
    mini = ex.ticker_24hr(SYM, now_ms=now, mini=True)
    assert set(mini) == TICKER_MINI_KEYS
    idle = ex.ticker_24hr(SYM, now_ms=T0 + 10 * 86_400_000)
    assert (idle["count"], idle["firstId"], idle["volume"]) == (0, -1, "0.00000000")


def test_avg_price_price_ticker_and_book_ticker() -> None:
    ex = make_exchange("maker")
    trade_at(ex, "60000", now_ms=T0)
    trade_at(ex, "60100", now_ms=T0 + 1000)
    assert ex.avg_price(SYM, now_ms=T0 + 2000) == {
        "mins": 5,
        "price": "60050.00000000",
        "closeTime": T0 + 1000,
    }
    assert ex.ticker_price(SYM) == {"symbol": SYM, "price": "60100.00000000"}
    limit(ex, "maker", "BUY", "0.5", "59000")
    assert ex.book_ticker(SYM) == {
        "symbol": SYM,
        "bidPrice": "59000.00000000",
        "bidQty": "0.50000000",
        "askPrice": "0.00000000",
        "askQty": "0.00000000",
    }


def test_recent_historical_trades_and_my_trades() -> None:
    ex = make_exchange("a", "b")
    for i in range(5):
        limit(ex, "a", "SELL", "0.001", str(60000 + i), now_ms=T0 + i)
        limit(ex, "b", "BUY", "0.001", str(60000 + i), now_ms=T0 + i)
    recent = ex.recent_trades(SYM, limit=2)
    assert [r["id"] for r in recent] == [4, 5]
    assert set(recent[0]) == {
        "id",
        "price",
        "qty",
        "quoteQty",
        "time",
        "isBuyerMaker",
        "isBestMatch",
    }
    assert recent[0]["isBuyerMaker"] is False
    assert [r["id"] for r in ex.historical_trades(SYM, limit=2, from_id=2)] == [2, 3]
    mine = ex.my_trades("b", SYM, from_id=3)
    assert [(t.trade_id, t.is_buyer, t.is_maker) for t in mine] == [
        (3, True, False),
        (4, True, False),
        (5, True, False),
    ]
    assert [t.trade_id for t in ex.my_trades("a", SYM, start_time=T0 + 3)] == [4, 5]
    with pytest.raises(SimReject) as exc:
        ex.my_trades("a", SYM, from_id=1, start_time=T0)
    assert exc.value.code == -1128
    with pytest.raises(SimReject) as exc:
        ex.my_trades("a", SYM, start_time=T0, end_time=T0 + 25 * 3_600_000)
    assert exc.value.code == -1127
    orders = ex.all_orders("a", SYM, order_id=3)  # ids are per symbol: "b" has the even ones
    assert [o.order_id for o in orders] == [3, 5, 7, 9]
    assert [o.order_id for o in ex.all_orders("a", SYM, limit=2)] == [7, 9]
    assert [o.order_id for o in ex.all_orders("a", SYM, start_time=T0 + 1, limit=2)] == [3, 5]


def test_market_data_rejects_unknown_symbols() -> None:
    ex = make_exchange()
    for call in (
        lambda: ex.depth("XXXYYY"),
        lambda: ex.recent_trades("XXXYYY"),
        lambda: ex.ticker_price("XXXYYY"),
    ):
        with pytest.raises(SimReject) as exc:
            call()
        assert (exc.value.code, exc.value.msg) == (-1121, "Invalid symbol.")


# --- wire shapes -------------------------------------------------------------------------

ACK_KEYS = {"symbol", "orderId", "orderListId", "clientOrderId", "transactTime"}
RESULT_KEYS = ACK_KEYS | {
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
}
FULL_KEYS = RESULT_KEYS | {"fills"}
FILL_KEYS = {"price", "qty", "commission", "commissionAsset", "tradeId"}
GET_KEYS = {
    "symbol",
    "orderId",
    "orderListId",
    "clientOrderId",
    "price",
    "origQty",
    "executedQty",
    "cummulativeQuoteQty",
    "status",
    "timeInForce",
    "type",
    "side",
    "stopPrice",
    "icebergQty",
    "time",
    "updateTime",
    "isWorking",
    "workingTime",
    "origQuoteOrderQty",
    "selfTradePreventionMode",
}
CANCEL_KEYS = {
    "symbol",
    "origClientOrderId",
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
    "selfTradePreventionMode",
}
MY_TRADE_KEYS = {
    "symbol",
    "id",
    "orderId",
    "orderListId",
    "price",
    "qty",
    "quoteQty",
    "commission",
    "commissionAsset",
    "time",
    "isBuyer",
    "isMaker",
    "isBestMatch",
}
ACCOUNT_KEYS = {
    "makerCommission",
    "takerCommission",
    "buyerCommission",
    "sellerCommission",
    "commissionRates",
    "canTrade",
    "canWithdraw",
    "canDeposit",
    "brokered",
    "requireSelfTradePrevention",
    "preventSor",
    "updateTime",
    "accountType",
    "balances",
    "permissions",
    "uid",
}
TICKER_MINI_KEYS = {
    "symbol",
    "openPrice",
    "highPrice",
    "lowPrice",
    "lastPrice",
    "volume",
    "quoteVolume",
    "openTime",
    "closeTime",
    "firstId",
    "lastId",
    "count",
}
TICKER_FULL_KEYS = TICKER_MINI_KEYS | {
    "priceChange",
    "priceChangePercent",
    "weightedAvgPrice",
    "prevClosePrice",
    "lastQty",
    "bidPrice",
    "bidQty",
    "askPrice",
    "askQty",
}
EXCHANGE_INFO_SYMBOL_KEYS = {
    "symbol",
    "status",
    "baseAsset",
    "baseAssetPrecision",
    "quoteAsset",
    "quotePrecision",
    "quoteAssetPrecision",
    "baseCommissionPrecision",
    "quoteCommissionPrecision",
    "orderTypes",
    "icebergAllowed",
    "ocoAllowed",
    "otoAllowed",
    "opoAllowed",
    "quoteOrderQtyMarketAllowed",
    "allowTrailingStop",
    "cancelReplaceAllowed",
    "amendAllowed",
    "pegInstructionsAllowed",
    "isSpotTradingAllowed",
    "isMarginTradingAllowed",
    "filters",
    "permissions",
    "permissionSets",
    "defaultSelfTradePreventionMode",
    "allowedSelfTradePreventionModes",
}


def _wire_samples(ex: Exchange) -> dict[str, JsonObject]:
    maker = limit(ex, "maker", "SELL", "0.1", "60000", cid="mk")
    full = ex.place_order(
        "taker", symbol=SYM, side="BUY", type="MARKET", quantity="0.01", now_ms=T0
    )
    canceled = ex.cancel_order("maker", symbol=SYM, order_id=maker.order_id, now_ms=T0 + 1)
    return {
        "ack": order_to_wire(full.order, "ACK"),
        "result": order_to_wire(full.order, "RESULT"),
        "full": result_to_wire(full),
        "get": order_to_wire(ex.query_order("maker", symbol=SYM, order_id=maker.order_id), "GET"),
        "cancel": order_to_wire(canceled, "CANCEL"),
        "trade": account_trade_to_wire(ex.my_trades("taker", SYM)[0]),
        "account": ex.account("taker", now_ms=T0),
        "ticker": ex.ticker_24hr(SYM, now_ms=T0),
        "info": exchange_info_symbol(ex.spec(SYM)),
    }


def test_wire_shapes_have_the_documented_keys() -> None:
    ex = make_exchange("maker", "taker")
    w = _wire_samples(ex)
    assert set(w["ack"]) == ACK_KEYS
    assert set(w["result"]) == RESULT_KEYS
    assert set(w["full"]) == FULL_KEYS
    fills = w["full"]["fills"]
    assert isinstance(fills, list)
    assert {frozenset(f) for f in fills} == {frozenset(FILL_KEYS)}
    assert set(w["get"]) == GET_KEYS
    assert set(w["cancel"]) == CANCEL_KEYS
    assert set(w["trade"]) == MY_TRADE_KEYS
    assert set(w["account"]) == ACCOUNT_KEYS
    assert set(w["ticker"]) == TICKER_FULL_KEYS
    assert set(w["info"]) == EXCHANGE_INFO_SYMBOL_KEYS
    assert w["full"]["price"] == "0.00000000"
    assert w["full"]["executedQty"] == "0.01000000"
    assert w["get"]["status"] == "CANCELED"
    assert w["cancel"]["origClientOrderId"] == "mk"
    assert w["account"]["commissionRates"] == {
        "maker": "0.00100000",
        "taker": "0.00100000",
        "buyer": "0.00000000",
        "seller": "0.00000000",
    }
    assert (w["account"]["makerCommission"], w["account"]["takerCommission"]) == (10, 10)
    filters = w["info"]["filters"]
    assert isinstance(filters, list)
    by_type = {f["filterType"]: f for f in filters}
    assert by_type["PRICE_FILTER"] == {
        "filterType": "PRICE_FILTER",
        "minPrice": "0.01000000",
        "maxPrice": "1000000.00000000",
        "tickSize": "0.01000000",
    }
    assert by_type["LOT_SIZE"]["stepSize"] == "0.00001000"
    assert by_type["NOTIONAL"]["minNotional"] == "5.00000000"
    assert by_type["MAX_NUM_ORDERS"] == {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200}
    stop_result = order_to_wire(
        attrs.evolve(
            ex.query_order("maker", symbol=SYM, order_id=1), type=OrderType.STOP_LOSS_LIMIT
        ),
        "RESULT",
    )
    assert "stopPrice" in stop_result


def test_execution_report_builder_matches_the_documented_shape() -> None:
    ex = make_exchange("user")
    order = limit(ex, "user", "BUY", "1", "50000")
    event = execution_report(
        order, execution_type=ExecutionType.NEW, event_time_ms=T0, execution_id=7
    )
    assert set(event) == EXECUTION_REPORT_KEYS
    assert (event["x"], event["X"], event["w"], event["I"], event["t"]) == (
        "NEW",
        "NEW",
        True,
        7,
        -1,
    )


def test_symbol_specs_for_known_and_generic_names() -> None:
    eth = spec_for("ETHUSDT")
    assert (eth.lot_size.step_size, eth.start_price) == (D("0.0001"), D(3000))
    xrp = spec_for("XRPUSDT")
    assert (xrp.base_asset, xrp.quote_asset) == ("XRP", "USDT")
    ethbtc = spec_for("ETHBTC")
    assert (ethbtc.base_asset, ethbtc.quote_asset, ethbtc.price_filter.tick_size) == (
        "ETH",
        "BTC",
        D("0.00000001"),
    )
    with pytest.raises(ValueError, match="bad symbol"):
        spec_for("btc")
    ex = Exchange([xrp], seed=0)
    acct = ex.add_account("k")
    assert acct.free["XRP"] == D(1000)
    assert acct.free["USDT"] == D(1_000_000)


@pytest.mark.shared
def test_wire_shapes_match_shared_samples(shared_dir: Path) -> None:
    samples = json.loads((shared_dir / "binance" / "samples.json").read_text())
    ex = make_exchange("maker", "taker")
    w = _wire_samples(ex)
    for ours, theirs in (
        ("ack", "rest.order.ack"),
        ("result", "rest.order.result"),
        ("full", "rest.order.full"),
        ("get", "rest.order.get"),
        ("cancel", "rest.cancel"),
        ("account", "rest.account"),
        ("ticker", "rest.ticker24hr.full"),
    ):
        assert set(w[ours]) == set(samples[theirs]), theirs
        for key, value in samples[theirs].items():
            assert type(w[ours][key]) is type(value), (theirs, key)
    assert set(w["trade"]) == set(samples["rest.myTrades"][0])
    assert set(w["full"]["fills"][0]) == set(samples["rest.order.full"]["fills"][0])  # type: ignore[index]
    info = samples["rest.exchangeInfo.BNBBTC"]["symbols"][0]
    assert set(w["info"]) == set(info)
    for name in ("PRICE_FILTER", "LOT_SIZE", "MARKET_LOT_SIZE", "NOTIONAL", "MAX_NUM_ORDERS"):
        ours_filter = next(f for f in js(w["info"])["filters"] if f["filterType"] == name)
        assert set(ours_filter) == set(samples[f"filter.{name}"]), name
    documented = samples["user.executionReport"]["event"]
    event = execution_report(
        ex.query_order("maker", symbol=SYM, order_id=1),
        execution_type=ExecutionType.NEW,
        event_time_ms=T0,
        execution_id=1,
    )
    assert set(event) == set(documented) - {"v"}  # v: prevented match id, STP only
    assert set(ex.depth(SYM)) == set(samples["rest.depth"])
    assert set(ex.avg_price(SYM, now_ms=T0)) == set(samples["rest.avgPrice"])
    assert set(ex.book_ticker(SYM)) == set(samples["rest.ticker.bookTicker"])
    assert set(ex.ticker_price(SYM)) == set(samples["rest.ticker.price"])
    assert set(ex.recent_trades(SYM)[0]) == set(samples["rest.trades"][0])
    assert set(ex.agg_trades(SYM)[0]) == set(samples["rest.aggTrades"][0])
    assert len(ex.klines(SYM, "1m", now_ms=T0)[0]) == len(samples["rest.klines"][0])


# --- market maker ----------------------------------------------------------------------------


def test_market_maker_is_deterministic_and_keeps_the_book_deep() -> None:
    def run(seed: int) -> list[tuple[int, str, str]]:
        ex = make_exchange()
        maker = MarketMaker(ex, seed=seed)
        out: list[tuple[int, str, str]] = []
        ex.add_trade_listener(lambda s, ts: out.extend((t.trade_id, s, str(t.price)) for t in ts))
        for k in range(50):
            maker.step(T0 + 100 * k)
        bids, asks = ex.book_levels(SYM, 20)
        assert len(bids) == len(asks) == 20
        assert bids[0][0] < asks[0][0]
        return out

    first = run(5)
    assert first == run(5)
    assert first != run(6)
    assert len(first) > 10  # a few trades per second per symbol


def test_market_maker_flow_fills_a_user_order_through_the_market() -> None:
    ex = make_exchange("user")
    maker = MarketMaker(ex, seed=11)
    maker.step(T0)
    ask = ex.book_levels(SYM, 1)[1][0][0]
    order = limit(ex, "user", "SELL", "0.01", str(ask - 100), now_ms=T0 + 1)  # through the bid
    assert order.status is OrderStatus.FILLED  # taken at once by the maker's bids
    resting = limit(ex, "user", "SELL", "0.01", str(ask), now_ms=T0 + 2)  # at the best ask
    for k in range(1, 600):
        maker.step(T0 + 100 * k)
        if (
            ex.query_order("user", symbol=SYM, order_id=resting.order_id).status
            is OrderStatus.FILLED
        ):
            break
    assert (
        ex.query_order("user", symbol=SYM, order_id=resting.order_id).status is OrderStatus.FILLED
    )
