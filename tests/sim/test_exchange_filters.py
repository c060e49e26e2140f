"""The simulator's symbol filters as Binance lists and enforces them (filters.md; FACTS.md §3),
and its rejections as the error catalog (sim/errors.py) words them."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import TYPE_CHECKING

import pytest

from genesis.models.codec import decode_exchange_info
from genesis.sim.errors import CATALOG, SimReject
from genesis.sim.exchange import Exchange, OrderResult
from genesis.sim.symbols import default_symbols, exchange_info_symbol, spec_for

if TYPE_CHECKING:
    from collections.abc import Callable

SYM = "BTCUSDT"
T0 = 1_767_225_600_000
PPBS = (-1013, "Filter failure: PERCENT_PRICE_BY_SIDE")


def make_exchange(*keys: str) -> Exchange:
    ex = Exchange(default_symbols(), seed=7)
    for key in keys:
        ex.add_account(key)
    return ex


def limit_order(
    ex: Exchange,
    side: str,
    price: str,
    *,
    key: str = "user",
    qty: str = "0.001",
    now_ms: int,
    test: bool = False,
    **extra: str,
) -> OrderResult:
    """A GTC LIMIT order (``extra``: more wire parameters, such as ``type``/``stop_price``)."""
    params = {"type": "LIMIT", "time_in_force": "GTC", **extra}
    return ex.place_order(
        key,
        symbol=SYM,
        side=side,
        quantity=qty,
        price=price,
        now_ms=now_ms,
        test=test,
        **params,
    )


def place_limit(
    ex: Exchange, side: str, price: str, *, qty: str = "0.001", now_ms: int, test: bool = False
) -> None:
    limit_order(ex, side, price, qty=qty, now_ms=now_ms, test=test)


def trade_at(ex: Exchange, price: str, now_ms: int) -> None:
    """One public trade of 0.001 at ``price`` between two fresh accounts."""
    ex.add_account("maker")
    ex.add_account("taker")
    limit_order(ex, "SELL", price, key="maker", now_ms=now_ms)
    limit_order(ex, "BUY", price, key="taker", now_ms=now_ms)


def rejection(fn: Callable[..., object], *args: object, **kwargs: object) -> tuple[int, str]:
    """``(code, msg)`` of the :class:`SimReject` that ``fn(*args, **kwargs)`` raises."""
    with pytest.raises(SimReject) as exc:
        fn(*args, **kwargs)
    return exc.value.code, exc.value.msg


# --- exchangeInfo ---------------------------------------------------------------------------


def test_exchange_info_lists_btcusdt_filters_in_binance_order_with_its_values() -> None:
    filters = exchange_info_symbol(spec_for(SYM))["filters"]
    assert isinstance(filters, list)
    by_type = {f["filterType"]: f for f in filters}
    assert [f["filterType"] for f in filters] == [
        "PRICE_FILTER",
        "LOT_SIZE",
        "ICEBERG_PARTS",
        "MARKET_LOT_SIZE",
        "TRAILING_DELTA",
        "PERCENT_PRICE_BY_SIDE",
        "NOTIONAL",
        "MAX_NUM_ORDERS",
        "MAX_NUM_ALGO_ORDERS",
    ]
    assert by_type["PERCENT_PRICE_BY_SIDE"] == {
        "filterType": "PERCENT_PRICE_BY_SIDE",
        "bidMultiplierUp": "5",
        "bidMultiplierDown": "0.2",
        "askMultiplierUp": "5",
        "askMultiplierDown": "0.2",
        "avgPriceMins": 1,
    }
    assert by_type["TRAILING_DELTA"] == {
        "filterType": "TRAILING_DELTA",
        "minTrailingAboveDelta": 10,
        "maxTrailingAboveDelta": 2000,
        "minTrailingBelowDelta": 10,
        "maxTrailingBelowDelta": 2000,
    }
    assert by_type["MAX_NUM_ALGO_ORDERS"] == {
        "filterType": "MAX_NUM_ALGO_ORDERS",
        "maxNumAlgoOrders": 5,
    }
    # 10 in filters.md's example; 100 on every symbol since 2026-03-12 (FACTS.md changelog).
    assert by_type["ICEBERG_PARTS"] == {"filterType": "ICEBERG_PARTS", "limit": 100}


def test_genesis_decodes_the_new_filters_for_its_pre_trade_checks() -> None:
    info = {
        "timezone": "UTC",
        "serverTime": T0,
        "rateLimits": [],
        "exchangeFilters": [],
        "symbols": [exchange_info_symbol(spec_for(SYM))],
    }
    symbol = decode_exchange_info(info).symbol(SYM)
    assert symbol is not None
    f = symbol.filters
    assert (f.bid_multiplier_up, f.bid_multiplier_down) == (Decimal(5), Decimal("0.2"))
    assert (f.ask_multiplier_up, f.ask_multiplier_down) == (Decimal(5), Decimal("0.2"))
    assert (f.tick_size, f.step_size, f.max_num_orders) == (
        Decimal("0.01"),
        Decimal("0.00001"),
        200,
    )


# --- PERCENT_PRICE_BY_SIDE -----------------------------------------------------------------


def test_percent_price_by_side_bounds_both_sides_at_five_and_a_fifth_of_the_average() -> None:
    now = T0 + 1000
    for side in ("BUY", "SELL"):
        ex = make_exchange("user")  # one per side: a BUY at 300000 would meet the SELL there
        trade_at(ex, "60000", T0)
        assert rejection(place_limit, ex, side, "300000.01", now_ms=now) == PPBS
        assert rejection(place_limit, ex, side, "11999.99", now_ms=now) == PPBS
        place_limit(ex, side, "300000.00", qty="0.00002", now_ms=now)
        place_limit(ex, side, "12000.00", now_ms=now)
    # POST order/test runs the same filters.
    assert rejection(lambda: place_limit(ex, "BUY", "300000.01", now_ms=now, test=True)) == PPBS


def test_percent_price_by_side_uses_the_last_minute_only() -> None:
    ex = make_exchange("user")
    trade_at(ex, "60000", T0)
    trade_at(ex, "15000", T0 + 61_000)  # the 60000 trade has left the 1-minute window
    now = T0 + 62_000
    # A 5-minute VWAP (37500) would allow up to 187500; the 1-minute one (15000) caps at 75000.
    assert rejection(lambda: place_limit(ex, "BUY", "75000.01", now_ms=now)) == PPBS
    place_limit(ex, "BUY", "75000.00", qty="0.0001", now_ms=now)
    # With no trade in the last minute the bounds follow the last price.
    later = T0 + 10 * 60_000
    assert rejection(lambda: place_limit(ex, "SELL", "2999.99", now_ms=later)) == PPBS
    place_limit(ex, "SELL", "3000.00", qty="0.002", now_ms=later)


def test_percent_price_by_side_is_not_evaluated_before_the_first_trade() -> None:
    ex = make_exchange("user")
    place_limit(ex, "BUY", "0.01", qty="500", now_ms=T0)
    place_limit(ex, "SELL", "900000.00", now_ms=T0)


def test_percent_price_by_side_does_not_bound_market_orders() -> None:
    ex = make_exchange("user")
    trade_at(ex, "60000", T0)
    ex.add_account("far")
    limit_order(ex, "SELL", "200000", key="far", now_ms=T0)
    result = ex.place_order(
        "user", symbol=SYM, side="BUY", type="MARKET", quantity="0.001", now_ms=T0 + 1
    )
    assert result.fills[0].price == Decimal(200000)


# --- MAX_NUM_ALGO_ORDERS -------------------------------------------------------------------


def _stop(ex: Exchange, now_ms: int) -> int:
    result = limit_order(
        ex, "SELL", "50000", type="STOP_LOSS_LIMIT", stop_price="50000", now_ms=now_ms
    )
    return result.order.order_id


def test_max_num_algo_orders_caps_open_stop_orders_at_five() -> None:
    ex = make_exchange("user")
    trade_at(ex, "60000", T0)
    ids = [_stop(ex, T0) for _ in range(5)]
    assert rejection(lambda: _stop(ex, T0)) == (-1013, "Filter failure: MAX_NUM_ALGO_ORDERS")
    place_limit(ex, "BUY", "59000", now_ms=T0)  # plain orders are not algo orders
    ex.cancel_order("user", symbol=SYM, order_id=ids[0], now_ms=T0)
    _stop(ex, T0)
    assert rejection(lambda: _stop(ex, T0)) == (-1013, "Filter failure: MAX_NUM_ALGO_ORDERS")


# --- one error catalog ---------------------------------------------------------------------


def _in_catalog(code: int, msg: str) -> bool:
    entry = CATALOG.get(code)
    if entry is None:
        return False
    for template in entry.messages:
        pattern = "^" + ".+".join(re.escape(part) for part in template.split("%s")) + "$"
        if re.match(pattern, msg):
            return True
    return False


def test_every_engine_rejection_is_worded_as_the_catalog_words_it() -> None:
    ex = make_exchange("user")
    trade_at(ex, "60000", T0)
    ex.add_account("poor", {"USDT": Decimal(1)})
    ex.add_account("ask")
    limit_order(ex, "SELL", "60500", key="ask", now_ms=T0)
    resting = limit_order(ex, "BUY", "59000", new_client_order_id="dup", now_ms=T0).order

    def order(key: str = "user", **params: str) -> None:
        base = {"symbol": SYM, "side": "BUY", "type": "LIMIT", "time_in_force": "GTC"}
        base |= {"quantity": "0.001", "price": "59000"}
        base |= params
        ex.place_order(key, now_ms=T0, **base)  # type: ignore[arg-type]  # str params

    cases: list[Callable[[], object]] = [
        lambda: order(side="UP"),
        lambda: order(type="LIMITED"),
        lambda: order(time_in_force="GTX"),
        lambda: order(quantity=""),
        lambda: order(quantity="1e3"),
        lambda: order(quantity="0.000000001"),
        lambda: order(stop_price="1"),
        lambda: order(new_order_resp_type="ALL"),
        lambda: order(new_client_order_id="a b"),
        lambda: order(price="59000.001"),
        lambda: order(quantity="0.000001"),
        lambda: order(price="1000000"),
        lambda: order(new_client_order_id="dup"),
        lambda: order("poor"),
        lambda: order(type="LIMIT_MAKER", time_in_force="", price="61000"),
        lambda: order(type="STOP_LOSS", time_in_force="", price="", stop_price="59000"),
        lambda: order(symbol="NOPE"),
        lambda: order("nobody"),
        lambda: order(
            symbol="ETHUSDT",
            type="MARKET",
            time_in_force="",
            price="",
            quantity="",
            quote_order_qty="10",
        ),
        lambda: ex.cancel_order("user", symbol=SYM, now_ms=T0),
        lambda: ex.cancel_order("user", symbol=SYM, order_id=999, now_ms=T0),
        lambda: ex.cancel_order(
            "user", symbol=SYM, order_id=resting.order_id, cancel_restrictions="NEVER", now_ms=T0
        ),
        lambda: ex.cancel_order(
            "user",
            symbol=SYM,
            order_id=resting.order_id,
            cancel_restrictions="ONLY_PARTIALLY_FILLED",
            now_ms=T0,
        ),
        lambda: ex.cancel_all("user", symbol="ETHUSDT", now_ms=T0),
        lambda: ex.query_order("user", symbol=SYM, order_id=999),
        lambda: ex.query_order(
            "user", symbol=SYM, order_id=resting.order_id, orig_client_order_id="other"
        ),
        lambda: ex.my_trades("user", SYM, from_id=1, start_time=T0),
        lambda: ex.all_orders("user", SYM, start_time=T0, end_time=T0 + 25 * 3_600_000),
        lambda: ex.klines(SYM, "7m", now_ms=T0),
        lambda: ex.klines(SYM, None, now_ms=T0),
    ]
    seen: set[tuple[int, str]] = set()
    for case in cases:
        with pytest.raises(SimReject) as exc:
            case()
        code, msg = exc.value.code, exc.value.msg
        assert _in_catalog(code, msg), (code, msg)
        seen.add((code, msg))
    ex.set_symbol_status(SYM, "HALT")
    code, msg = rejection(order)
    assert (code, msg) == (-2010, "Market is closed.")
    assert _in_catalog(code, msg)
    codes = {c for c, _ in seen}
    assert codes == {
        *(-1100, -1102, -1106, -1111, -1115, -1116, -1117, -1120, -1121, -1127, -1128),
        *(-1013, -1130, -1145, -2010, -2011, -2013, -2015, -2039),
    }
    assert len({m for c, m in seen if c == -2010}) == 5  # each engine rejection once
