"""Pre-trade checks: an order is snapped onto its symbol's grid and checked locally before sending.

:func:`prepare_order` does what Binance's filters would do to a request (filters.md; FACTS.md
§3 "Filter formats and rules"), without a round trip. It either returns a request the exchange's
filters accept, or raises :class:`~genesis.errors.PreTradeCheckError` naming the filter that
would reject it and the numbers involved.

Snapping. Each value moves onto its grid only in the direction that never gives the caller
more than they asked for or a worse price than they asked for:

- **Quantities are truncated toward zero**, to ``LOT_SIZE.stepSize`` (for orders that execute
  at market, also to ``MARKET_LOT_SIZE.stepSize``: both filters apply, so the grid is the least
  common multiple of the two). A quantity is never rounded up.
- **Prices and stop prices go to the tick on the caller's side: a BUY's down, a SELL's up.**
  Truncating a SELL's limit price down would offer the coins cheaper than the caller asked;
  rounding it up can only make the order fill less often, never at a worse price. The same
  rule applies to stop prices, since a triggered stop trades near its stop price (a BUY stop
  triggers at or below what was asked, a SELL stop at or above). Both prices of a stop-limit
  order move the same way, so their order (stop above limit, or below) is kept.
- ``quoteOrderQty`` is truncated to the quote asset's precision. Where a symbol has no grid (a
  step or tick of 0), values are truncated to the asset's precision instead, so the exchange's
  "too much precision" (-1111) cannot happen either.

Checks run in this fixed order, the order in which Binance lists a symbol's filters and the
simulator evaluates them, so the first failure is named as the exchange would name it:

1. ``SYMBOL_STATUS``: the symbol is not ``TRADING``.
2. ``ORDER_TYPE``: the symbol does not list the order type in ``orderTypes``.
3. ``PRICE_FILTER``: price, then stop price, below ``minPrice`` or above ``maxPrice`` (or 0).
4. ``LOT_SIZE``: the quantity truncates to 0, or is below ``minQty`` or above ``maxQty``.
5. ``MARKET_LOT_SIZE``: the same for MARKET, STOP_LOSS and TAKE_PROFIT orders (which execute
   at market).
6. ``PERCENT_PRICE_BY_SIDE``: a limit price outside ``reference × multiplier`` (bid multipliers
   for a BUY, ask multipliers for a SELL); only with a ``reference_price``.
7. ``NOTIONAL`` (or ``MIN_NOTIONAL`` for a symbol that still has the old filter): the notional
   ``price × quantity`` must lie in ``[minNotional, maxNotional]``. Orders that execute at
   market are held to a bound only when ``applyMinToMarket``/``applyMaxToMarket`` says so; their
   notional is ``quoteOrderQty`` itself, ``stopPrice × quantity`` for a stop, and
   ``reference_price × quantity`` for a MARKET order by quantity (skipped without a
   reference price, as the exchange cannot evaluate it before the symbol's first trade).
8. ``MAX_NUM_ORDERS``: ``open_orders + 1`` would exceed ``maxNumOrders``; only with
   ``open_orders``.

A rule whose value is 0 is switched off, as on Binance; a filter the symbol does not have
(``None``) is not checked. The module is pure and synchronous: nothing here blocks or awaits.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import TYPE_CHECKING, Final

import attrs

from genesis.errors import PreTradeCheckError
from genesis.models.orders import OrderSide, OrderType
from genesis.money import ceil_to_step, common_step, exact_product, truncate_to_step

if TYPE_CHECKING:
    from genesis.models.exchange_info import SymbolFilters, SymbolInfo
    from genesis.models.orders import OrderRequest

__all__ = ["MARKET_EXECUTED_TYPES", "prepare_order"]

logger = logging.getLogger(__name__)

MARKET_EXECUTED_TYPES: Final = frozenset(
    {OrderType.MARKET, OrderType.STOP_LOSS, OrderType.TAKE_PROFIT}
)
"""Order types that execute at market (a stop once triggered): MARKET_LOT_SIZE binds them and
the notional bounds only when the filter's apply-to-market flags say so."""

_TRADING: Final = "TRADING"


def prepare_order(
    request: OrderRequest,
    symbol: SymbolInfo,
    *,
    reference_price: Decimal | None = None,
    open_orders: int | None = None,
) -> OrderRequest:
    """``request`` snapped onto ``symbol``'s grid, once it passes every filter the symbol has.

    See the module docstring for the rounding rule (quantities down; prices down for a BUY and
    up for a SELL) and the order of the checks. Side, type, time in force and client order id
    are never changed.

    Args:
        request: the order as the caller asked for it.
        symbol: the symbol's rules from exchangeInfo (``request.symbol`` must name it).
        reference_price: the price Binance evaluates MARKET notionals and
            PERCENT_PRICE_BY_SIDE against: the symbol's reference price where it has one,
            else ``GET /api/v3/avgPrice`` (the volume-weighted average over ``avgPriceMins``).
            ``None``, or 0 (the average of a symbol that has never traded), skips the checks
            that need it.
        open_orders: how many orders the account has open on the symbol now; ``None`` skips
            MAX_NUM_ORDERS.

    Returns:
        ``request`` itself when no value had to move; otherwise a copy with the snapped price,
        stop price, quantity or quote quantity (each with the grid's exponent, e.g.
        ``0.00123000``).

    Raises:
        PreTradeCheckError: the order breaks a filter; ``filter_name`` names it and the
            message gives the numbers (``"NOTIONAL: 0.001 × 1000 = 1 is below minNotional
            5"``).
        ValueError: ``request`` is for another symbol, ``reference_price`` is negative or
            not finite, or ``open_orders`` is negative.
    """
    if request.symbol != symbol.symbol:
        raise ValueError(f"request is for {request.symbol}, the rules are for {symbol.symbol}")
    if reference_price is not None and (not reference_price.is_finite() or reference_price < 0):
        raise ValueError(f"reference_price must be a finite Decimal >= 0, got {reference_price!r}")
    if open_orders is not None and open_orders < 0:
        raise ValueError(f"open_orders must be >= 0, got {open_orders}")
    reference = reference_price or None
    filters = symbol.filters

    _check_symbol(request, symbol)
    price_grid = _grid(filters.tick_size, symbol.quote_asset_precision)
    price = _snap_price(request.side, request.price, price_grid)
    stop_price = _snap_price(request.side, request.stop_price, price_grid)
    _check_price("price", request.price, price, price_grid, filters)
    _check_price("stopPrice", request.stop_price, stop_price, price_grid, filters)
    at_market = request.type in MARKET_EXECUTED_TYPES
    quantity = _snap_quantity(request.quantity, symbol, at_market=at_market)
    if quantity is not None:
        _check_lot("LOT_SIZE", quantity, filters.min_qty, filters.max_qty)
        if at_market:
            _check_lot("MARKET_LOT_SIZE", quantity, filters.market_min_qty, filters.market_max_qty)
    quote_qty = _snap_quote(request.quote_order_qty, symbol)
    if price is not None and reference is not None:
        _check_percent_price(request.side, price, reference, filters)
    _check_notional(
        filters,
        quantity=quantity,
        quote_qty=quote_qty,
        price=price,
        stop_price=stop_price,
        reference=reference,
        at_market=at_market,
    )
    if open_orders is not None and filters.max_num_orders and open_orders >= filters.max_num_orders:
        raise PreTradeCheckError(
            "MAX_NUM_ORDERS",
            f"{open_orders} open orders on {symbol.symbol}; one more is above maxNumOrders "
            f"{filters.max_num_orders}",
        )

    prepared = attrs.evolve(
        request,
        price=_keep(request.price, price),
        stop_price=_keep(request.stop_price, stop_price),
        quantity=_keep(request.quantity, quantity),
        quote_order_qty=_keep(request.quote_order_qty, quote_qty),
    )
    if prepared == request:
        return request
    logger.debug(
        "orders.prepare.snapped symbol=%s side=%s type=%s",
        request.symbol,
        request.side.value,
        request.type.value,
    )
    return prepared


# --- snapping -----------------------------------------------------------------------------


def _grid(step: Decimal | None, precision: int) -> Decimal:
    """The step, or (where the symbol has none) the asset's smallest unit."""
    return step if step else Decimal(1).scaleb(-precision)


def _snap_price(side: OrderSide, value: Decimal | None, tick: Decimal) -> Decimal | None:
    if value is None:
        return None
    return truncate_to_step(value, tick) if side is OrderSide.BUY else ceil_to_step(value, tick)


def _snap_quantity(value: Decimal | None, symbol: SymbolInfo, *, at_market: bool) -> Decimal | None:
    if value is None:
        return None
    filters = symbol.filters
    lot_step = filters.step_size or Decimal(0)
    market_step = (filters.market_step_size or Decimal(0)) if at_market else Decimal(0)
    step = _grid(common_step(lot_step, market_step), symbol.base_asset_precision)
    snapped = truncate_to_step(value, step)
    if snapped <= 0:
        # Name the filter whose grid swallowed it: LOT_SIZE's own step, else MARKET_LOT_SIZE's.
        swallowed_by_lot = truncate_to_step(value, lot_step) <= 0
        name = "MARKET_LOT_SIZE" if market_step and not swallowed_by_lot else "LOT_SIZE"
        raise PreTradeCheckError(
            name, f"quantity {_fmt(value)} truncates to 0 at stepSize {_fmt(step)}"
        )
    return snapped


def _snap_quote(value: Decimal | None, symbol: SymbolInfo) -> Decimal | None:
    if value is None:
        return None
    grid = _grid(None, symbol.quote_asset_precision)
    snapped = truncate_to_step(value, grid)
    if snapped <= 0:
        raise PreTradeCheckError(
            _notional_name(symbol.filters),
            f"quoteOrderQty {_fmt(value)} truncates to 0 at quoteAssetPrecision "
            f"{symbol.quote_asset_precision}",
        )
    return snapped


def _keep(original: Decimal | None, snapped: Decimal | None) -> Decimal | None:
    """The caller's own value (and its exponent) when snapping did not move it."""
    return original if original == snapped else snapped


# --- checks -------------------------------------------------------------------------------


def _check_symbol(request: OrderRequest, symbol: SymbolInfo) -> None:
    if symbol.status != _TRADING:
        raise PreTradeCheckError(
            "SYMBOL_STATUS", f"{symbol.symbol} is {symbol.status}, not {_TRADING}"
        )
    if request.type.value not in symbol.order_types:
        allowed = ", ".join(sorted(symbol.order_types)) or "none"
        raise PreTradeCheckError(
            "ORDER_TYPE",
            f"{symbol.symbol} does not take {request.type.value} orders (allowed: {allowed})",
        )


def _check_price(
    name: str,
    original: Decimal | None,
    value: Decimal | None,
    tick: Decimal,
    filters: SymbolFilters,
) -> None:
    if original is None or value is None:
        return
    if value <= 0:
        raise PreTradeCheckError(
            "PRICE_FILTER", f"{name} {_fmt(original)} truncates to 0 at tickSize {_fmt(tick)}"
        )
    if filters.min_price and value < filters.min_price:
        raise PreTradeCheckError(
            "PRICE_FILTER", f"{name} {_fmt(value)} is below minPrice {_fmt(filters.min_price)}"
        )
    if filters.max_price and value > filters.max_price:
        raise PreTradeCheckError(
            "PRICE_FILTER", f"{name} {_fmt(value)} is above maxPrice {_fmt(filters.max_price)}"
        )


def _check_lot(
    name: str, quantity: Decimal, min_qty: Decimal | None, max_qty: Decimal | None
) -> None:
    if min_qty and quantity < min_qty:
        raise PreTradeCheckError(name, f"quantity {_fmt(quantity)} is below minQty {_fmt(min_qty)}")
    if max_qty and quantity > max_qty:
        raise PreTradeCheckError(name, f"quantity {_fmt(quantity)} is above maxQty {_fmt(max_qty)}")


def _check_percent_price(
    side: OrderSide, price: Decimal, reference: Decimal, filters: SymbolFilters
) -> None:
    prefix = "bid" if side is OrderSide.BUY else "ask"
    up, down = (
        (filters.bid_multiplier_up, filters.bid_multiplier_down)
        if side is OrderSide.BUY
        else (filters.ask_multiplier_up, filters.ask_multiplier_down)
    )
    if up and price > (bound := exact_product(reference, up)):
        raise PreTradeCheckError(
            "PERCENT_PRICE_BY_SIDE",
            f"{side.value} price {_fmt(price)} is above {_fmt(reference)} × "
            f"{prefix}MultiplierUp {_fmt(up)} = {_fmt(bound)}",
        )
    if down and price < (bound := exact_product(reference, down)):
        raise PreTradeCheckError(
            "PERCENT_PRICE_BY_SIDE",
            f"{side.value} price {_fmt(price)} is below {_fmt(reference)} × "
            f"{prefix}MultiplierDown {_fmt(down)} = {_fmt(bound)}",
        )


def _check_notional(
    filters: SymbolFilters,
    *,
    quantity: Decimal | None,
    quote_qty: Decimal | None,
    price: Decimal | None,
    stop_price: Decimal | None,
    reference: Decimal | None,
    at_market: bool,
) -> None:
    if filters.min_notional is None and filters.max_notional is None:
        return
    if quote_qty is not None:
        notional, shown = quote_qty, f"quoteOrderQty {_fmt(quote_qty)}"
    else:
        assert quantity is not None  # OrderRequest: every order has one of the two
        unit = price if price is not None else stop_price
        if unit is None:
            unit = reference  # a MARKET order by quantity
        if unit is None:
            return  # no price to evaluate it with; the exchange skips it too
        notional = exact_product(quantity, unit)
        shown = f"{_fmt(quantity)} × {_fmt(unit)} = {_fmt(notional)}"
    name = _notional_name(filters)
    low, high = filters.min_notional, filters.max_notional
    if low and (not at_market or filters.apply_min_to_market) and notional < low:
        raise PreTradeCheckError(name, f"{shown} is below minNotional {_fmt(low)}")
    if high and (not at_market or filters.apply_max_to_market) and notional > high:
        raise PreTradeCheckError(name, f"{shown} is above maxNotional {_fmt(high)}")


def _notional_name(filters: SymbolFilters) -> str:
    """NOTIONAL always carries ``maxNotional``; the older MIN_NOTIONAL never does."""
    if filters.min_notional is not None and filters.max_notional is None:
        return "MIN_NOTIONAL"
    return "NOTIONAL"


def _fmt(value: Decimal) -> str:
    """Plain notation without trailing zeros (``0.00100000`` → ``0.001``), exact."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
