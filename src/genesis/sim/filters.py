"""The API-level symbol filters (-1013 "Filter failure: <NAME>") on a typed new order.

Binance evaluates a symbol's filters before the order reaches the matching engine, in the order
``exchangeInfo`` lists them (filters.md; FACTS.md §3). The simulator enforces, in that order:
``PRICE_FILTER`` (price, then stop price), ``LOT_SIZE``, ``MARKET_LOT_SIZE`` (orders that
execute at market), ``PERCENT_PRICE_BY_SIDE`` (priced orders, against the volume-weighted
average price over the filter's ``avgPriceMins``), ``NOTIONAL``, ``MAX_NUM_ORDERS`` and
``MAX_NUM_ALGO_ORDERS`` (open stop orders). ``ICEBERG_PARTS`` and ``TRAILING_DELTA`` are listed
in exchangeInfo only: the simulator accepts no iceberg or trailing orders to hold to them.

A filter that needs an average price is skipped while the symbol has none (before its first
trade), as Binance cannot evaluate it either.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING

from genesis.sim.errors import INVALID_MESSAGE, MSG_FILTER_FAILURE, SimReject
from genesis.sim.model import OrderType, Side

if TYPE_CHECKING:
    from genesis.sim.request import NewOrder
    from genesis.sim.symbols import LotSizeFilter, SymbolSpec

__all__ = ["AvgPrice", "check_filters", "filter_failure"]

AvgPrice = Callable[[int], Decimal | None]
"""``avg_price(mins)``: the symbol's VWAP over the last ``mins`` minutes (the last price when
there was no trade in them), or None before the symbol's first trade."""


def filter_failure(name: str) -> SimReject:
    """-1013 "Filter failure: <name>"."""
    return SimReject.of(INVALID_MESSAGE, MSG_FILTER_FAILURE, name)


def check_filters(
    spec: SymbolSpec,
    order: NewOrder,
    *,
    avg_price: AvgPrice,
    open_orders: int,
    open_algo_orders: int,
) -> None:
    """Raise the first filter failure of ``order`` on ``spec``.

    Args:
        spec: the symbol.
        order: the typed request.
        avg_price: the symbol's average price source.
        open_orders: the account's open orders on the symbol.
        open_algo_orders: how many of them are stop orders (STOP_LOSS[_LIMIT],
            TAKE_PROFIT[_LIMIT]).

    Raises:
        SimReject: -1013 "Filter failure: <NAME>".
    """
    if order.price is not None:
        _check_price(spec, order.price)
    if order.stop_price is not None:
        _check_price(spec, order.stop_price)
    if order.quantity is not None:
        _check_lot(spec.lot_size, order.quantity, "LOT_SIZE")
        if order.market_exec:
            _check_lot(spec.market_lot_size, order.quantity, "MARKET_LOT_SIZE")
    pp = spec.percent_price_by_side
    if pp is not None and order.price is not None:
        avg = avg_price(pp.avg_price_mins)
        if avg is not None:
            up, down = (
                (pp.bid_multiplier_up, pp.bid_multiplier_down)
                if order.side is Side.BUY
                else (pp.ask_multiplier_up, pp.ask_multiplier_down)
            )
            if order.price > avg * up or order.price < avg * down:
                raise filter_failure("PERCENT_PRICE_BY_SIDE")
    _check_notional(spec, order, avg_price)
    if open_orders >= spec.max_num_orders:
        raise filter_failure("MAX_NUM_ORDERS")
    if order.is_stop and open_algo_orders >= spec.max_num_algo_orders:
        raise filter_failure("MAX_NUM_ALGO_ORDERS")


def _check_price(spec: SymbolSpec, price: Decimal) -> None:
    pf = spec.price_filter
    if (
        price <= 0
        or (pf.min_price and price < pf.min_price)
        or (pf.max_price and price > pf.max_price)
        or (pf.tick_size and price % pf.tick_size != 0)
    ):
        raise filter_failure("PRICE_FILTER")


def _check_lot(lot: LotSizeFilter, qty: Decimal, name: str) -> None:
    if (
        qty <= 0
        or (lot.min_qty and qty < lot.min_qty)
        or (lot.max_qty and qty > lot.max_qty)
        or (lot.step_size and qty % lot.step_size != 0)
    ):
        raise filter_failure(name)


def _check_notional(spec: SymbolSpec, order: NewOrder, avg_price: AvgPrice) -> None:
    nf = spec.notional
    qty = order.quantity
    notional: Decimal | None
    if order.quote_order_qty is not None:
        notional = order.quote_order_qty
    elif qty is None:  # pragma: no cover - parse_new_order requires one of them
        return
    elif order.price is not None:
        notional = order.price * qty
    elif order.type is OrderType.MARKET:
        ref = avg_price(nf.avg_price_mins)
        notional = ref * qty if ref else None
    else:
        notional = order.stop_price * qty if order.stop_price is not None else None
    if notional is None:
        return  # no reference price yet: the filter cannot be evaluated
    check_min = nf.apply_min_to_market or not order.market_exec
    check_max = nf.apply_max_to_market or not order.market_exec
    if (check_min and nf.min_notional and notional < nf.min_notional) or (
        check_max and nf.max_notional and notional > nf.max_notional
    ):
        raise filter_failure("NOTIONAL")
