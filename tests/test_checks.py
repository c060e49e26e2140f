"""Pre-trade checks (genesis.orders.checks) and the Decimal helpers under them (genesis.money).

Three layers:

- unit tests, one filter at a time, both sides, on and just past each boundary, with rules
  switched off (0) and filters missing (``None``);
- hypothesis properties of the snapping, checked with :class:`fractions.Fraction` (exact and
  independent of the decimal module the code uses);
- agreement with the simulator's own filter logic: BTCUSDT's rules are read from the
  simulator's REST ``exchangeInfo`` (in memory, ``httpx.ASGITransport``), random requests are
  prepared, and the simulator validates (``POST /api/v3/order/test`` semantics, nothing
  executes) the request as snapped by an independent oracle. ``prepare_order`` accepts exactly
  what the simulator accepts, and when it rejects, the simulator names the same filter.
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, ROUND_DOWN, Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Final

import attrs
import httpx
import pytest
import trio
from hypothesis import assume, event, given
from hypothesis import strategies as st

from genesis.errors import GenesisError, PreTradeCheckError
from genesis.models.codec import decode_exchange_info, order_request_params
from genesis.models.exchange_info import SymbolFilters, SymbolInfo
from genesis.models.orders import OrderRequest, OrderSide, OrderType, TimeInForce
from genesis.money import ceil_to_step, common_step, exact_product, is_multiple, truncate_to_step
from genesis.orders.checks import MARKET_EXECUTED_TYPES, prepare_order
from genesis.sim.errors import SimReject
from genesis.sim.server import SimConfig, Simulator, build_simulator
from tests.gateway_support import T0

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

BUY, SELL = OrderSide.BUY, OrderSide.SELL
ALL_TYPES: Final = frozenset(t.value for t in OrderType)


def make_symbol(
    *, status: str = "TRADING", order_types: frozenset[str] = ALL_TYPES, **filters: object
) -> SymbolInfo:
    """BTCUSDT with only the filters named (everything else missing, i.e. ``None``)."""
    return SymbolInfo(
        symbol="BTCUSDT",
        status=status,
        base_asset="BTC",
        quote_asset="USDT",
        base_asset_precision=8,
        quote_asset_precision=8,
        order_types=order_types,
        filters=SymbolFilters(**filters),  # type: ignore[arg-type]  # names checked by attrs
    )


def limit(side: OrderSide, quantity: str, price: str) -> OrderRequest:
    return OrderRequest.limit(
        symbol="BTCUSDT", side=side, quantity=Decimal(quantity), price=Decimal(price)
    )


def market(side: OrderSide, quantity: str) -> OrderRequest:
    return OrderRequest.market(symbol="BTCUSDT", side=side, quantity=Decimal(quantity))


def market_quote(side: OrderSide, quote: str) -> OrderRequest:
    return OrderRequest.market_quote(symbol="BTCUSDT", side=side, quote_order_qty=Decimal(quote))


def stop(order_type: OrderType, side: OrderSide, quantity: str, stop_price: str) -> OrderRequest:
    return OrderRequest(
        symbol="BTCUSDT",
        side=side,
        type=order_type,
        quantity=Decimal(quantity),
        stop_price=Decimal(stop_price),
    )


def stop_limit(side: OrderSide, quantity: str, price: str, stop_price: str) -> OrderRequest:
    return OrderRequest(
        symbol="BTCUSDT",
        side=side,
        type=OrderType.STOP_LOSS_LIMIT,
        quantity=Decimal(quantity),
        price=Decimal(price),
        stop_price=Decimal(stop_price),
        time_in_force=TimeInForce.GTC,
    )


def rejection(
    request: OrderRequest,
    symbol: SymbolInfo,
    *,
    reference_price: Decimal | None = None,
    open_orders: int | None = None,
) -> PreTradeCheckError:
    with pytest.raises(PreTradeCheckError) as info:
        prepare_order(request, symbol, reference_price=reference_price, open_orders=open_orders)
    return info.value


def outcome(
    request: OrderRequest,
    symbol: SymbolInfo,
    *,
    reference_price: Decimal | None = None,
    open_orders: int | None = None,
) -> OrderRequest | PreTradeCheckError:
    """The prepared request, or the error that rejected it (for properties that take both)."""
    try:
        return prepare_order(
            request, symbol, reference_price=reference_price, open_orders=open_orders
        )
    except PreTradeCheckError as exc:
        return exc


# -- money ----------------------------------------------------------------------------------


def test_truncate_to_step_keeps_the_steps_exponent() -> None:
    assert str(truncate_to_step(Decimal("0.0012345"), Decimal("0.00001"))) == "0.00123"
    assert str(truncate_to_step(Decimal("0.0012345"), Decimal("0.00001000"))) == "0.00123000"
    assert str(truncate_to_step(Decimal("60000"), Decimal("0.01"))) == "60000.00"


def test_truncate_to_step_moves_toward_zero_without_a_signed_zero() -> None:
    assert truncate_to_step(Decimal("7.3"), Decimal("0.5")) == Decimal("7.0")
    assert truncate_to_step(Decimal("-7.3"), Decimal("0.5")) == Decimal("-7.0")
    assert str(truncate_to_step(Decimal("-0.3"), Decimal(1))) == "0"
    assert str(truncate_to_step(Decimal("0.3"), Decimal(1))) == "0"


def test_ceil_to_step_moves_up_and_keeps_values_on_the_grid() -> None:
    assert str(ceil_to_step(Decimal("100.001"), Decimal("0.01"))) == "100.01"
    assert str(ceil_to_step(Decimal("100.00"), Decimal("0.01"))) == "100.00"
    assert ceil_to_step(Decimal("-7.3"), Decimal("0.5")) == Decimal("-7.0")
    assert str(ceil_to_step(Decimal("-0.3"), Decimal(1))) == "0"


def test_a_zero_step_is_no_grid() -> None:
    value = Decimal("1.23456789123")
    assert truncate_to_step(value, Decimal(0)) is value
    assert ceil_to_step(value, Decimal("0E-8")) is value
    assert is_multiple(value, Decimal(0))


def test_snapping_is_exact_beyond_the_default_28_digits() -> None:
    value = Decimal("123456789012345678901234567890.123456789")
    assert truncate_to_step(value, Decimal("0.01")) == Decimal("123456789012345678901234567890.12")
    assert ceil_to_step(value, Decimal("0.01")) == Decimal("123456789012345678901234567890.13")
    assert exact_product(value, Decimal(10)) == Decimal("1234567890123456789012345678901.23456789")


def test_is_multiple_is_exact() -> None:
    assert is_multiple(Decimal("0.3"), Decimal("0.1"))
    assert not is_multiple(Decimal("0.30000001"), Decimal("0.1"))
    assert is_multiple(Decimal("60000.00"), Decimal("0.01000000"))


def test_common_step_is_the_lcm_of_the_live_steps() -> None:
    assert common_step(Decimal("0.001"), Decimal("0.0004")) == Decimal("0.002")
    assert str(common_step(Decimal("0.00001000"), Decimal(0))) == "0.00001000"
    assert common_step(Decimal(10), Decimal("0.3")) == Decimal(30)
    assert common_step() == 0
    assert common_step(Decimal(0), Decimal("0E-8")) == 0


@pytest.mark.parametrize(
    ("value", "step"),
    [
        (Decimal("Infinity"), Decimal(1)),
        (Decimal("NaN"), Decimal(1)),
        (Decimal(1), Decimal(-1)),
        (Decimal(1), Decimal("Infinity")),
        (Decimal(1), Decimal("NaN")),
    ],
)
def test_money_rejects_non_finite_values_and_bad_steps(value: Decimal, step: Decimal) -> None:
    for helper in (truncate_to_step, ceil_to_step, is_multiple):
        with pytest.raises(ValueError, match="must be a finite"):
            helper(value, step)


def test_common_step_and_exact_product_reject_non_finite_operands() -> None:
    with pytest.raises(ValueError, match="step must be"):
        common_step(Decimal("0.01"), Decimal(-1))
    with pytest.raises(ValueError, match="operands must be finite"):
        exact_product(Decimal("Infinity"), Decimal(1))
    with pytest.raises(ValueError, match="operands must be finite"):
        exact_product(Decimal(1), Decimal("NaN"))


def decimals(
    max_mantissa: int, max_places: int, *, min_mantissa: int = 0
) -> SearchStrategy[Decimal]:
    """``mantissa × 10**-places``: any digit pattern, not only powers of ten."""
    return st.builds(
        lambda mantissa, places: Decimal(mantissa).scaleb(-places),
        st.integers(min_mantissa, max_mantissa),
        st.integers(0, max_places),
    )


VALUES: Final = decimals(10**15, 12)
STEPS: Final = st.builds(
    lambda mantissa, exponent: Decimal(mantissa).scaleb(exponent),
    st.integers(1, 999),
    st.integers(-10, 3),
)


def _is_multiple_of(value: Decimal, step: Decimal) -> bool:
    return (Fraction(value) / Fraction(step)).denominator == 1


@given(value=VALUES, step=STEPS)
def test_truncation_never_exceeds_and_lands_within_one_step(value: Decimal, step: Decimal) -> None:
    result = truncate_to_step(value, step)
    assert 0 <= Fraction(value) - Fraction(result) < Fraction(step)
    assert _is_multiple_of(result, step)
    assert result.as_tuple().exponent == step.as_tuple().exponent
    assert truncate_to_step(-value, step) == -result


@given(value=VALUES, step=STEPS)
def test_ceiling_never_undercuts_and_lands_within_one_step(value: Decimal, step: Decimal) -> None:
    result = ceil_to_step(value, step)
    assert 0 <= Fraction(result) - Fraction(value) < Fraction(step)
    assert _is_multiple_of(result, step)
    assert result.as_tuple().exponent == step.as_tuple().exponent


@given(value=VALUES, step=STEPS)
def test_is_multiple_agrees_with_fractions(value: Decimal, step: Decimal) -> None:
    assert is_multiple(value, step) == _is_multiple_of(value, step)


@given(steps=st.lists(STEPS, min_size=1, max_size=3))
def test_common_step_is_the_least_common_multiple(steps: list[Decimal]) -> None:
    result = common_step(*steps)
    fractions = [Fraction(s) for s in steps]
    assert all(_is_multiple_of(result, s) for s in steps)
    # lcm of n/d in lowest terms is lcm(numerators) / gcd(denominators).
    numerator, denominator = fractions[0].numerator, fractions[0].denominator
    for f in fractions[1:]:
        numerator = math.lcm(numerator, f.numerator)
        denominator = math.gcd(denominator, f.denominator)
    assert Fraction(result) == Fraction(numerator, denominator)


# -- symbol rules ---------------------------------------------------------------------------


def test_a_symbol_that_is_not_trading_is_rejected() -> None:
    error = rejection(limit(BUY, "1", "100"), make_symbol(status="HALT"))
    assert error.filter_name == "SYMBOL_STATUS"
    assert str(error) == "SYMBOL_STATUS: BTCUSDT is HALT, not TRADING"


def test_an_order_type_the_symbol_does_not_list_is_rejected() -> None:
    symbol = make_symbol(order_types=frozenset({"LIMIT", "MARKET"}))
    error = rejection(stop(OrderType.STOP_LOSS, SELL, "1", "100"), symbol)
    assert error.filter_name == "ORDER_TYPE"
    assert error.reason == "BTCUSDT does not take STOP_LOSS orders (allowed: LIMIT, MARKET)"
    assert "allowed: none" in str(rejection(market(BUY, "1"), make_symbol(order_types=frozenset())))


def test_the_error_is_a_genesis_error_with_its_filter_and_reason() -> None:
    error = rejection(
        market(BUY, "0.001"),
        make_symbol(min_notional=Decimal(5), max_notional=Decimal(0)),
        reference_price=Decimal(1000),
    )
    assert isinstance(error, GenesisError)
    assert error.filter_name == "NOTIONAL"
    assert error.reason == "0.001 × 1000 = 1 is below minNotional 5"
    assert str(error) == "NOTIONAL: 0.001 × 1000 = 1 is below minNotional 5"


def test_misuse_raises_value_error() -> None:
    symbol = make_symbol()
    other = OrderRequest.limit(symbol="ETHUSDT", side=BUY, quantity=Decimal(1), price=Decimal(1))
    with pytest.raises(ValueError, match="ETHUSDT"):
        prepare_order(other, symbol)
    for bad in (Decimal(-1), Decimal("NaN"), Decimal("Infinity")):
        with pytest.raises(ValueError, match="reference_price"):
            prepare_order(market(BUY, "1"), symbol, reference_price=bad)
    with pytest.raises(ValueError, match="open_orders"):
        prepare_order(market(BUY, "1"), symbol, open_orders=-1)


# -- PRICE_FILTER ---------------------------------------------------------------------------

PRICE_RULES: Final = make_symbol(
    min_price=Decimal("0.01000000"),
    max_price=Decimal("1000000.00000000"),
    tick_size=Decimal("0.01000000"),
)


def test_a_request_already_on_the_grid_comes_back_as_the_same_object() -> None:
    request = limit(BUY, "0.5", "60000")
    assert prepare_order(request, PRICE_RULES) is request
    assert prepare_order(request, make_symbol()) is request  # no filters at all


def test_a_buy_price_is_truncated_down_and_a_sell_price_rounded_up() -> None:
    bought = prepare_order(limit(BUY, "1", "60000.019"), PRICE_RULES)
    sold = prepare_order(limit(SELL, "1", "60000.011"), PRICE_RULES)
    assert str(bought.price) == "60000.01000000"
    assert str(sold.price) == "60000.02000000"


def test_snapping_changes_nothing_but_the_numbers() -> None:
    request = limit(SELL, "1", "60000.011").with_client_order_id("keep-me")
    prepared = prepare_order(request, PRICE_RULES)
    assert attrs.evolve(prepared, price=request.price) == request
    assert prepared.quantity is request.quantity  # unchanged values keep their own exponent


@pytest.mark.parametrize("side", [BUY, SELL])
def test_prices_exactly_at_the_bounds_pass(side: OrderSide) -> None:
    for price in ("0.01", "1000000"):
        request = limit(side, "1", price)
        assert prepare_order(request, PRICE_RULES) is request


@pytest.mark.parametrize(
    ("side", "price", "reason"),
    [
        (BUY, "0.009", "price 0.009 truncates to 0 at tickSize 0.01"),
        (BUY, "1000000.01", "price 1000000.01 is above maxPrice 1000000"),
        (SELL, "1000000.001", "price 1000000.01 is above maxPrice 1000000"),  # rounded up past
    ],
)
def test_price_bounds_apply_to_the_snapped_price(side: OrderSide, price: str, reason: str) -> None:
    error = rejection(limit(side, "1", price), PRICE_RULES)
    assert (error.filter_name, error.reason) == ("PRICE_FILTER", reason)


@pytest.mark.parametrize(
    ("side", "price", "snapped"),
    [
        (SELL, "0.001", "0.01"),  # rounded up onto minPrice
        (BUY, "1000000.009", "1000000"),  # truncated down onto maxPrice
    ],
)
def test_a_price_snapped_onto_a_bound_passes(side: OrderSide, price: str, snapped: str) -> None:
    assert prepare_order(limit(side, "1", price), PRICE_RULES).price == Decimal(snapped)


def test_min_price_binds_below_a_coarse_minimum() -> None:
    symbol = make_symbol(min_price=Decimal(1), max_price=Decimal(0), tick_size=Decimal("0.01"))
    assert rejection(limit(BUY, "1", "0.99"), symbol).reason == "price 0.99 is below minPrice 1"
    assert prepare_order(limit(BUY, "1", "10000000"), symbol).price == Decimal(10_000_000)


def test_stop_prices_are_snapped_and_bounded_like_prices() -> None:
    symbol = make_symbol(min_price=Decimal(1), max_price=Decimal(100), tick_size=Decimal("0.5"))
    prepared = prepare_order(stop_limit(SELL, "1", "10.1", "10.6"), symbol)
    assert (prepared.price, prepared.stop_price) == (Decimal("10.5"), Decimal("11.0"))
    prepared = prepare_order(stop_limit(BUY, "1", "10.9", "10.6"), symbol)
    assert (prepared.price, prepared.stop_price) == (Decimal("10.5"), Decimal("10.5"))
    error = rejection(stop(OrderType.TAKE_PROFIT, BUY, "1", "0.9"), symbol)
    assert (error.filter_name, error.reason) == (
        "PRICE_FILTER",
        "stopPrice 0.5 is below minPrice 1",
    )


def test_without_a_tick_prices_are_truncated_to_the_quote_precision() -> None:
    for symbol in (make_symbol(tick_size=Decimal(0)), make_symbol()):
        prepared = prepare_order(limit(SELL, "1", "0.000000001"), symbol)
        assert str(prepared.price) == "1E-8"
        assert prepare_order(limit(BUY, "1", "1.123456789"), symbol).price == Decimal("1.12345678")


# -- LOT_SIZE and MARKET_LOT_SIZE -----------------------------------------------------------

LOT_RULES: Final = make_symbol(
    min_qty=Decimal("0.00001000"),
    max_qty=Decimal("9000.00000000"),
    step_size=Decimal("0.00001000"),
    market_min_qty=Decimal("0.001"),
    market_max_qty=Decimal("100.00000000"),
    market_step_size=Decimal("0E-8"),
)


@pytest.mark.parametrize("side", [BUY, SELL])
def test_quantity_is_truncated_to_the_step(side: OrderSide) -> None:
    prepared = prepare_order(limit(side, "0.0012345", "60000"), LOT_RULES)
    assert str(prepared.quantity) == "0.00123000"
    assert prepare_order(market(side, "1.0000099"), LOT_RULES).quantity == Decimal(1)


@pytest.mark.parametrize(
    ("request_", "filter_name", "reason"),
    [
        (
            limit(BUY, "0.000009", "1"),
            "LOT_SIZE",
            "quantity 0.000009 truncates to 0 at stepSize 0.00001",
        ),
        (limit(SELL, "9000.00001", "1"), "LOT_SIZE", "quantity 9000.00001 is above maxQty 9000"),
        (market(BUY, "0.00099"), "MARKET_LOT_SIZE", "quantity 0.00099 is below minQty 0.001"),
        (market(SELL, "100.00001"), "MARKET_LOT_SIZE", "quantity 100.00001 is above maxQty 100"),
        (
            stop(OrderType.STOP_LOSS, SELL, "100.00001", "1"),
            "MARKET_LOT_SIZE",
            "quantity 100.00001 is above maxQty 100",
        ),
    ],
)
def test_quantity_bounds(request_: OrderRequest, filter_name: str, reason: str) -> None:
    error = rejection(request_, LOT_RULES)
    assert (error.filter_name, error.reason) == (filter_name, reason)


def test_quantities_exactly_at_the_bounds_pass() -> None:
    for request in (
        limit(BUY, "0.00001", "1"),
        limit(SELL, "9000", "1"),
        market(BUY, "0.001"),
        market(SELL, "100"),
        stop(OrderType.TAKE_PROFIT, BUY, "100", "1"),
    ):
        assert prepare_order(request, LOT_RULES) is request


def test_limit_orders_ignore_market_lot_size() -> None:
    request = stop_limit(SELL, "5000", "1", "1")
    assert prepare_order(request, LOT_RULES) is request


def test_min_qty_binds_above_the_step() -> None:
    symbol = make_symbol(min_qty=Decimal("0.001"), max_qty=Decimal(0), step_size=Decimal("0.00001"))
    assert (
        rejection(limit(BUY, "0.00099", "1"), symbol).reason
        == "quantity 0.00099 is below minQty 0.001"
    )
    assert prepare_order(limit(BUY, "10000000", "1"), symbol).quantity == Decimal(10_000_000)


def test_a_market_order_is_truncated_to_both_steps() -> None:
    symbol = make_symbol(step_size=Decimal("0.001"), market_step_size=Decimal("0.0004"))
    assert prepare_order(market(BUY, "0.0059"), symbol).quantity == Decimal("0.004")
    assert prepare_order(limit(BUY, "0.0059", "1"), symbol).quantity == Decimal("0.005")


def test_the_step_that_swallows_a_quantity_is_the_filter_named() -> None:
    both = make_symbol(step_size=Decimal("0.001"), market_step_size=Decimal("0.01"))
    assert rejection(market(BUY, "0.0009"), both).filter_name == "LOT_SIZE"
    assert rejection(market(BUY, "0.009"), both).filter_name == "MARKET_LOT_SIZE"
    market_only = make_symbol(step_size=Decimal(0), market_step_size=Decimal("0.01"))
    assert rejection(market(BUY, "0.009"), market_only).filter_name == "MARKET_LOT_SIZE"
    assert prepare_order(limit(BUY, "0.009", "1"), market_only).quantity == Decimal("0.009")


def test_without_a_step_quantities_are_truncated_to_the_base_precision() -> None:
    prepared = prepare_order(limit(BUY, "0.123456789", "1"), make_symbol(step_size=Decimal(0)))
    assert prepared.quantity == Decimal("0.12345678")
    error = rejection(market(BUY, "0.000000001"), make_symbol())
    assert (error.filter_name, error.reason) == (
        "LOT_SIZE",
        "quantity 0.000000001 truncates to 0 at stepSize 0.00000001",
    )


# -- NOTIONAL / MIN_NOTIONAL ----------------------------------------------------------------

NOTIONAL_RULES: Final = make_symbol(
    min_notional=Decimal("5.00000000"),
    max_notional=Decimal("9000000.00000000"),
    apply_min_to_market=True,
    apply_max_to_market=False,
)


@pytest.mark.parametrize("side", [BUY, SELL])
def test_limit_notional_bounds(side: OrderSide) -> None:
    assert prepare_order(limit(side, "0.0001", "50000"), NOTIONAL_RULES).price == 50000
    assert prepare_order(limit(side, "90", "100000"), NOTIONAL_RULES).quantity == 90
    low = rejection(limit(side, "0.0001", "49999.99"), NOTIONAL_RULES)
    assert str(low) == "NOTIONAL: 0.0001 × 49999.99 = 4.999999 is below minNotional 5"
    high = rejection(limit(side, "90.00001", "100000"), NOTIONAL_RULES)
    assert str(high) == "NOTIONAL: 90.00001 × 100000 = 9000001 is above maxNotional 9000000"


def test_notional_is_checked_on_the_snapped_values() -> None:
    symbol = make_symbol(
        tick_size=Decimal("0.01"),
        step_size=Decimal("0.001"),
        min_notional=Decimal(5),
        max_notional=Decimal(0),
    )
    # 0.0019 × 4000 = 7.6 as asked, but only 0.001 can be sent, and 4 is too little.
    assert rejection(limit(BUY, "0.0019", "4000"), symbol).reason == (
        "0.001 × 4000 = 4 is below minNotional 5"
    )
    # A SELL at 4.999 goes out at 5.00, and 1 × 5 is enough.
    assert prepare_order(limit(SELL, "1", "4.999"), symbol).price == 5


def test_the_older_min_notional_filter_is_named_as_such() -> None:
    symbol = make_symbol(min_notional=Decimal(10), apply_min_to_market=True)
    assert rejection(limit(BUY, "0.001", "100"), symbol).filter_name == "MIN_NOTIONAL"
    assert rejection(market_quote(BUY, "9.99"), symbol).filter_name == "MIN_NOTIONAL"
    request = limit(BUY, "1000", "1000000")
    assert prepare_order(request, symbol) is request  # MIN_NOTIONAL has no maximum


@pytest.mark.parametrize("side", [BUY, SELL])
def test_a_market_order_by_quantity_needs_a_reference_price(side: OrderSide) -> None:
    request = market(side, "0.00001")
    assert prepare_order(request, NOTIONAL_RULES) is request
    assert prepare_order(request, NOTIONAL_RULES, reference_price=Decimal(0)) is request
    error = rejection(request, NOTIONAL_RULES, reference_price=Decimal(60000))
    assert error.reason == "0.00001 × 60000 = 0.6 is below minNotional 5"
    big = market(side, "1000")
    assert prepare_order(big, NOTIONAL_RULES, reference_price=Decimal(60000)) is big


def test_the_apply_to_market_flags_decide_which_bounds_bind_market_orders() -> None:
    flags_off = attrs.evolve(NOTIONAL_RULES.filters, apply_min_to_market=False)
    symbol = attrs.evolve(NOTIONAL_RULES, filters=flags_off)
    small = market(BUY, "0.00001")
    assert prepare_order(small, symbol, reference_price=Decimal(60000)) is small
    assert prepare_order(market_quote(SELL, "1"), symbol).quote_order_qty == 1
    max_on = attrs.evolve(NOTIONAL_RULES.filters, apply_max_to_market=True)
    symbol = attrs.evolve(NOTIONAL_RULES, filters=max_on)
    error = rejection(market(SELL, "151"), symbol, reference_price=Decimal(60000))
    assert error.reason == "151 × 60000 = 9060000 is above maxNotional 9000000"
    assert str(rejection(market_quote(BUY, "9000000.01"), symbol)) == (
        "NOTIONAL: quoteOrderQty 9000000.01 is above maxNotional 9000000"
    )


@pytest.mark.parametrize("side", [BUY, SELL])
def test_a_quote_quantity_is_its_own_notional(side: OrderSide) -> None:
    assert prepare_order(market_quote(side, "5"), NOTIONAL_RULES).quote_order_qty == 5
    error = rejection(market_quote(side, "4.99999999"), NOTIONAL_RULES)
    assert error.reason == "quoteOrderQty 4.99999999 is below minNotional 5"
    # The maximum does not bind MARKET orders here (applyMaxToMarket false).
    assert prepare_order(market_quote(side, "1E+8"), NOTIONAL_RULES).quote_order_qty == 10**8


def test_a_quote_quantity_is_truncated_to_the_quote_precision() -> None:
    prepared = prepare_order(market_quote(BUY, "10.123456789"), NOTIONAL_RULES)
    assert str(prepared.quote_order_qty) == "10.12345678"
    error = rejection(market_quote(BUY, "0.000000009"), make_symbol())
    assert (error.filter_name, error.reason) == (
        "NOTIONAL",
        "quoteOrderQty 0.000000009 truncates to 0 at quoteAssetPrecision 8",
    )


def test_a_stop_market_order_is_valued_at_its_stop_price_under_the_market_flags() -> None:
    request = stop(OrderType.STOP_LOSS, SELL, "0.0001", "40000")
    assert rejection(request, NOTIONAL_RULES).reason == "0.0001 × 40000 = 4 is below minNotional 5"
    flags_off = attrs.evolve(NOTIONAL_RULES.filters, apply_min_to_market=False)
    assert prepare_order(request, attrs.evolve(NOTIONAL_RULES, filters=flags_off)) is request
    # A stop-limit order is valued at its limit price and both bounds bind it.
    limit_request = stop_limit(SELL, "0.0001", "40000", "60000")
    assert rejection(limit_request, NOTIONAL_RULES).reason == (
        "0.0001 × 40000 = 4 is below minNotional 5"
    )


def test_disabled_notional_rules_do_not_bind() -> None:
    symbol = make_symbol(min_notional=Decimal(0), max_notional=Decimal(0))
    for request in (limit(BUY, "0.00001", "0.01"), market_quote(SELL, "0.01")):
        assert prepare_order(request, symbol, reference_price=Decimal(1)) is request


# -- PERCENT_PRICE_BY_SIDE ------------------------------------------------------------------

PERCENT_RULES: Final = make_symbol(
    bid_multiplier_up=Decimal("1.2"),
    bid_multiplier_down=Decimal("0.2"),
    ask_multiplier_up=Decimal("5"),
    ask_multiplier_down=Decimal("0.8"),
)
REF: Final = Decimal(100)


@pytest.mark.parametrize(
    ("side", "low", "high", "below", "above"),
    [
        (
            BUY,
            "20",
            "120",
            "BUY price 19.99 is below 100 × bidMultiplierDown 0.2 = 20",
            "BUY price 120.01 is above 100 × bidMultiplierUp 1.2 = 120",
        ),
        (
            SELL,
            "80",
            "500",
            "SELL price 79.99 is below 100 × askMultiplierDown 0.8 = 80",
            "SELL price 500.01 is above 100 × askMultiplierUp 5 = 500",
        ),
    ],
)
def test_percent_price_by_side_uses_the_sides_multipliers(
    side: OrderSide, low: str, high: str, below: str, above: str
) -> None:
    for price in (low, high):
        request = limit(side, "1", price)
        assert prepare_order(request, PERCENT_RULES, reference_price=REF) is request
    low_error = rejection(
        limit(side, "1", str(Decimal(low) - Decimal("0.01"))), PERCENT_RULES, reference_price=REF
    )
    assert (low_error.filter_name, low_error.reason) == ("PERCENT_PRICE_BY_SIDE", below)
    high_error = rejection(
        limit(side, "1", str(Decimal(high) + Decimal("0.01"))), PERCENT_RULES, reference_price=REF
    )
    assert (high_error.filter_name, high_error.reason) == ("PERCENT_PRICE_BY_SIDE", above)


def test_percent_price_needs_a_reference_and_a_live_multiplier() -> None:
    request = limit(BUY, "1", "1000")
    assert prepare_order(request, PERCENT_RULES) is request
    assert prepare_order(request, PERCENT_RULES, reference_price=Decimal(0)) is request
    off = make_symbol(bid_multiplier_up=Decimal(0), bid_multiplier_down=Decimal(0))
    assert prepare_order(request, off, reference_price=REF) is request
    assert prepare_order(market(BUY, "1"), PERCENT_RULES, reference_price=REF).price is None


# -- MAX_NUM_ORDERS -------------------------------------------------------------------------


def test_max_num_orders_counts_the_order_being_placed() -> None:
    symbol = make_symbol(max_num_orders=200)
    request = limit(BUY, "1", "1")
    assert prepare_order(request, symbol, open_orders=199) is request
    assert prepare_order(request, symbol) is request
    error = rejection(request, symbol, open_orders=200)
    assert (
        str(error)
        == "MAX_NUM_ORDERS: 200 open orders on BTCUSDT; one more is above maxNumOrders 200"
    )
    assert prepare_order(request, make_symbol(max_num_orders=0), open_orders=10**6) is request
    assert prepare_order(request, make_symbol(), open_orders=10**6) is request


# -- order of the checks --------------------------------------------------------------------

EVERY_RULE: Final = make_symbol(
    order_types=frozenset({"LIMIT", "MARKET", "STOP_LOSS_LIMIT"}),
    min_price=Decimal(1),
    max_price=Decimal(1000),
    tick_size=Decimal("0.01"),
    min_qty=Decimal("0.01"),
    max_qty=Decimal(100),
    step_size=Decimal("0.01"),
    market_min_qty=Decimal(0),
    market_max_qty=Decimal(10),
    market_step_size=Decimal(0),
    min_notional=Decimal(10),
    max_notional=Decimal(10000),
    bid_multiplier_up=Decimal("1.5"),
    bid_multiplier_down=Decimal("0.5"),
    ask_multiplier_up=Decimal("1.5"),
    ask_multiplier_down=Decimal("0.5"),
    max_num_orders=5,
)


@pytest.mark.parametrize(
    ("request_", "filter_name", "subject"),
    [
        (stop(OrderType.TAKE_PROFIT, SELL, "1", "1"), "ORDER_TYPE", "BTCUSDT"),
        (stop_limit(BUY, "0.001", "2000", "0.5"), "PRICE_FILTER", "price"),
        (stop_limit(BUY, "0.001", "100", "0.5"), "PRICE_FILTER", "stopPrice"),
        (limit(BUY, "0.001", "10"), "LOT_SIZE", "quantity"),
        (market(BUY, "11"), "MARKET_LOT_SIZE", "quantity"),
        (limit(BUY, "0.01", "10"), "PERCENT_PRICE_BY_SIDE", "BUY"),
        (limit(BUY, "0.01", "100"), "NOTIONAL", "0.01"),
        (limit(BUY, "1", "100"), "MAX_NUM_ORDERS", "5"),
    ],
)
def test_checks_run_in_exchange_info_order(
    request_: OrderRequest, filter_name: str, subject: str
) -> None:
    # open_orders=5 is the maximum, so each request also breaks MAX_NUM_ORDERS (and most break
    # NOTIONAL): the rule named is the first one broken, and it wins.
    error = rejection(request_, EVERY_RULE, reference_price=Decimal(100), open_orders=5)
    assert (error.filter_name, error.reason.split()[0]) == (filter_name, subject)
    halted = attrs.evolve(EVERY_RULE, status="BREAK")
    assert rejection(request_, halted, reference_price=Decimal(100)).filter_name == "SYMBOL_STATUS"


# -- properties of prepare_order on random grids --------------------------------------------

TICKS: Final = st.builds(
    lambda mantissa, exponent: Decimal(mantissa).scaleb(exponent),
    st.integers(1, 99),
    st.integers(-8, 1),
)
AMOUNTS: Final = decimals(10**14, 12, min_mantissa=1)


def grid_symbol(tick: Decimal, step: Decimal, market_step: Decimal) -> SymbolInfo:
    return make_symbol(tick_size=tick, step_size=step, market_step_size=market_step)


@given(
    tick=TICKS,
    step=TICKS,
    side=st.sampled_from(OrderSide),
    quantity=AMOUNTS,
    price=AMOUNTS,
)
def test_a_limit_order_is_snapped_within_one_tick_and_one_step_on_the_callers_side(
    tick: Decimal, step: Decimal, side: OrderSide, quantity: Decimal, price: Decimal
) -> None:
    request = OrderRequest.limit(symbol="BTCUSDT", side=side, quantity=quantity, price=price)
    prepared = outcome(request, grid_symbol(tick, step, Decimal(0)))
    if isinstance(prepared, PreTradeCheckError):
        event(f"rejected {prepared.filter_name}")
        if prepared.filter_name == "PRICE_FILTER":
            assert side is BUY
            assert Fraction(price) < Fraction(tick)
        else:
            assert prepared.filter_name == "LOT_SIZE"
            assert Fraction(quantity) < Fraction(step)
        return
    event("prepared")
    assert prepared.quantity is not None
    assert prepared.price is not None
    assert 0 <= Fraction(quantity) - Fraction(prepared.quantity) < Fraction(step)
    assert _is_multiple_of(prepared.quantity, step)
    assert _is_multiple_of(prepared.price, tick)
    moved = Fraction(prepared.price) - Fraction(price)
    if side is BUY:
        assert -Fraction(tick) < moved <= 0
    else:
        assert 0 <= moved < Fraction(tick)
    assert (prepared.side, prepared.type, prepared.time_in_force) == (
        side,
        OrderType.LIMIT,
        TimeInForce.GTC,
    )
    assert (prepared is request) == (prepared.price == price and prepared.quantity == quantity)


@given(step=TICKS, market_step=TICKS, quantity=AMOUNTS, side=st.sampled_from(OrderSide))
def test_a_market_quantity_lands_on_both_steps_and_never_grows(
    step: Decimal, market_step: Decimal, quantity: Decimal, side: OrderSide
) -> None:
    request = OrderRequest.market(symbol="BTCUSDT", side=side, quantity=quantity)
    prepared = outcome(request, grid_symbol(Decimal("0.01"), step, market_step))
    if isinstance(prepared, PreTradeCheckError):
        event(f"rejected {prepared.filter_name}")
        assert prepared.filter_name in ("LOT_SIZE", "MARKET_LOT_SIZE")
        assert Fraction(quantity) < Fraction(common_step(step, market_step))
        return
    event("prepared")
    assert prepared.quantity is not None
    assert prepared.quantity <= quantity
    assert _is_multiple_of(prepared.quantity, step)
    assert _is_multiple_of(prepared.quantity, market_step)


# -- agreement with the simulator -----------------------------------------------------------

SIM_SYMBOL: Final = "BTCUSDT"
SIM_TICK: Final = Decimal("0.01")
SIM_STEP: Final = Decimal("0.00001")
SIM_QUOTE_UNIT: Final = Decimal("0.00000001")
SHARED_FILTERS: Final = frozenset(
    {
        "PRICE_FILTER",
        "LOT_SIZE",
        "MARKET_LOT_SIZE",
        "PERCENT_PRICE_BY_SIDE",
        "NOTIONAL",
        "MAX_NUM_ORDERS",
    }
)
"""The filters both prepare_order and the simulator's engine evaluate."""


@attrs.frozen(kw_only=True)
class SimWorld:
    """A simulator with one BTCUSDT trade behind it (so MARKET notionals are evaluated) and
    accounts holding 0, 199 and 200 open orders (MAX_NUM_ORDERS is 200)."""

    sim: Simulator
    symbol: SymbolInfo
    reference_price: Decimal
    now_ms: int
    api_keys: dict[int, str]


async def _build_world() -> SimWorld:
    with trio.fail_after(10):
        sim = build_simulator(SimConfig(epoch_ms=T0))
        now_ms = sim.clock.now_ms()
        sim.market_maker.step(now_ms)
        exchange = sim.exchange
        exchange.place_order(
            sim.api_key,
            symbol=SIM_SYMBOL,
            side="BUY",
            type="MARKET",
            quantity="0.01000",
            now_ms=now_ms,
        )
        api_keys = {0: sim.api_key}
        for count in (199, 200):
            key = f"precheck-{count}"
            exchange.add_account(key)
            for _ in range(count):
                exchange.place_order(
                    key,
                    symbol=SIM_SYMBOL,
                    side="BUY",
                    type="LIMIT",
                    time_in_force="GTC",
                    quantity="0.00100",
                    price="30000.00",
                    now_ms=now_ms,
                )
            api_keys[count] = key
        transport = httpx.ASGITransport(app=sim.http_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim.test") as client:
            info = await client.get("/api/v3/exchangeInfo", params={"symbol": SIM_SYMBOL})
            avg = await client.get("/api/v3/avgPrice", params={"symbol": SIM_SYMBOL})
    symbol = decode_exchange_info(info.json()).symbol(SIM_SYMBOL)
    assert symbol is not None
    reference_price = Decimal(avg.json()["price"])
    assert reference_price == Decimal(str(exchange.avg_price(SIM_SYMBOL, now_ms=now_ms)["price"]))
    return SimWorld(
        sim=sim, symbol=symbol, reference_price=reference_price, now_ms=now_ms, api_keys=api_keys
    )


@pytest.fixture(scope="module")
def world() -> SimWorld:
    built = trio.run(_build_world)
    filters = built.symbol.filters
    # The oracle below snaps with these grids; they must be the simulator's.
    assert filters.tick_size == SIM_TICK
    assert filters.step_size == SIM_STEP
    assert filters.market_step_size == 0
    assert built.symbol.quote_asset_precision == 8
    assert filters.max_num_orders == 200
    assert built.reference_price > 0
    for count, key in built.api_keys.items():
        assert len(built.sim.exchange.open_orders(key, SIM_SYMBOL)) == count
    return built


def sim_verdict(world: SimWorld, api_key: str, wire: dict[str, str]) -> str | None:
    """The simulator's answer to ``POST /api/v3/order/test`` with ``wire``: None or its msg."""
    try:
        world.sim.exchange.place_order(
            api_key,
            symbol=wire.get("symbol"),
            side=wire.get("side"),
            type=wire.get("type"),
            quantity=wire.get("quantity"),
            quote_order_qty=wire.get("quoteOrderQty"),
            price=wire.get("price"),
            stop_price=wire.get("stopPrice"),
            time_in_force=wire.get("timeInForce"),
            new_client_order_id=wire.get("newClientOrderId"),
            now_ms=world.now_ms,
            test=True,
        )
    except SimReject as exc:
        return exc.msg
    return None


def wire_of(request: OrderRequest) -> dict[str, str]:
    return dict(order_request_params(request, client_order_id="precheck-1"))


def oracle_snap(request: OrderRequest) -> dict[str, str]:
    """``request`` on BTCUSDT's grid, snapped by ``quantize`` (not by genesis.money):
    quantities and quote quantities down, a BUY's prices down and a SELL's up."""
    wire = wire_of(request)
    price_rounding = ROUND_DOWN if request.side is BUY else ROUND_CEILING
    for key, unit, rounding in (
        ("quantity", SIM_STEP, ROUND_DOWN),
        ("quoteOrderQty", SIM_QUOTE_UNIT, ROUND_DOWN),
        ("price", SIM_TICK, price_rounding),
        ("stopPrice", SIM_TICK, price_rounding),
    ):
        if key in wire:
            wire[key] = format(Decimal(wire[key]).quantize(unit, rounding=rounding), "f")
    return wire


def assert_agrees_with_the_simulator(
    world: SimWorld, request: OrderRequest, open_orders: int
) -> str:
    """Assert prepare_order and the simulator agree on ``request``; return the verdict."""
    api_key = world.api_keys[open_orders]
    snapped = oracle_snap(request)
    expected = sim_verdict(world, api_key, snapped)
    prepared = outcome(
        request, world.symbol, reference_price=world.reference_price, open_orders=open_orders
    )
    if isinstance(prepared, PreTradeCheckError):
        assert prepared.filter_name in SHARED_FILTERS
        assert expected == f"Filter failure: {prepared.filter_name}", str(prepared)
        return prepared.filter_name
    assert expected is None, f"prepare_order accepted what the simulator rejects: {expected}"
    sent = wire_of(prepared)
    assert sim_verdict(world, api_key, sent) is None
    assert sent.keys() == snapped.keys()
    for key in ("quantity", "quoteOrderQty", "price", "stopPrice"):
        if key in sent:
            assert Decimal(sent[key]) == Decimal(snapped[key])
    return "accepted"


def _off_grid(unit: Decimal) -> SearchStrategy[Decimal]:
    """0, or a fraction of ``unit`` with up to four more digits."""
    return st.one_of(st.just(Decimal(0)), st.integers(1, 9999).map(lambda r: unit * r / 10_000))


def _counts(typical: tuple[int, int], *boundaries: int) -> SearchStrategy[int]:
    """A count of grid units: in the typical range, next to a boundary, or anywhere."""
    low, high = typical
    return st.one_of(
        st.integers(low, high),
        st.sampled_from(boundaries).flatmap(lambda c: st.integers(max(c - 2, 0), c + 2)),
        st.integers(0, max(boundaries) * 2),
    )


def sim_prices() -> SearchStrategy[Decimal]:
    # minPrice 0.01 (1 tick), maxPrice 1,000,000 (10^8 ticks); the market trades near 60,000.
    ticks = _counts((3_000_000, 9_000_000), 1, 10**8)
    return st.tuples(ticks, _off_grid(SIM_TICK)).map(lambda t: t[0] * SIM_TICK + t[1])


def sim_quantities(unit_price: Decimal) -> SearchStrategy[Decimal]:
    # minQty one step, maxQty 9000, MARKET maxQty 100; minNotional 5, maxNotional 9,000,000.
    low, high = (int(n / unit_price / SIM_STEP) for n in (Decimal(5), Decimal(9_000_000)))
    typical = (low + 1, max(low + 1, min(high, 10**7)))
    steps = _counts(typical, 1, 10**7, 9 * 10**8, low, high)
    return st.tuples(steps, _off_grid(SIM_STEP)).map(lambda t: t[0] * SIM_STEP + t[1])


def sim_quotes() -> SearchStrategy[Decimal]:
    units = _counts((5 * 10**8, 10**12), 1, 5 * 10**8)
    return st.tuples(units, _off_grid(SIM_QUOTE_UNIT)).map(lambda t: t[0] * SIM_QUOTE_UNIT + t[1])


@st.composite
def sim_requests(draw: st.DrawFn, reference_price: Decimal) -> OrderRequest:
    order_type = draw(st.sampled_from(OrderType))
    side = draw(st.sampled_from(OrderSide))
    price = draw(sim_prices()) if order_type.has_price else None
    stop_price = draw(sim_prices()) if order_type.has_stop_price else None
    quantity = quote = None
    if order_type is OrderType.MARKET and draw(st.booleans()):
        quote = draw(sim_quotes())
        assume(quote > 0)
    else:
        unit = price or stop_price or reference_price
        assume(unit > 0)
        quantity = draw(sim_quantities(unit))
        assume(quantity > 0)
    assume(price is None or price > 0)
    assume(stop_price is None or stop_price > 0)
    with_tif = order_type in (
        OrderType.LIMIT,
        OrderType.STOP_LOSS_LIMIT,
        OrderType.TAKE_PROFIT_LIMIT,
    )
    return OrderRequest(
        symbol=SIM_SYMBOL,
        side=side,
        type=order_type,
        quantity=quantity,
        quote_order_qty=quote,
        price=price,
        stop_price=stop_price,
        time_in_force=TimeInForce.GTC if with_tif else None,
    )


@given(data=st.data(), open_orders=st.sampled_from([0, 199, 200]))
def test_prepare_order_accepts_exactly_what_the_simulator_accepts(
    world: SimWorld, data: st.DataObject, open_orders: int
) -> None:
    request = data.draw(sim_requests(world.reference_price))
    verdict = assert_agrees_with_the_simulator(world, request, open_orders)
    event(f"{request.type.value} {verdict}")


def _boundary_requests(reference_price: Decimal) -> list[OrderRequest]:
    min_market_qty = (Decimal(5) / reference_price).quantize(SIM_STEP, rounding=ROUND_CEILING)
    return [
        limit(BUY, "0.00001", "1000000"),  # min qty, max price, notional 10
        limit(SELL, "0.00001", "1000000.001"),  # SELL rounds up past maxPrice
        limit(BUY, "0.00001", "1000000.009"),  # BUY truncates down to maxPrice
        limit(BUY, "9000", "1000"),  # max qty, max notional exactly
        limit(SELL, "9000.00001", "1000"),  # past max qty
        limit(BUY, "9000", "1000.01"),  # past max notional
        limit(BUY, "0.0001", "50000"),  # min notional exactly
        limit(SELL, "0.0001", "49999.99"),  # just below min notional
        limit(BUY, "0.000009", "60000"),  # truncates to 0
        limit(BUY, "1", "0.009"),  # BUY price truncates to 0
        limit(SELL, "500", "0.001"),  # SELL price rounds up to minPrice
        market(BUY, "100"),  # MARKET max qty exactly
        market(SELL, "100.00001"),  # past MARKET max qty
        market(BUY, format(min_market_qty, "f")),  # smallest MARKET qty worth minNotional
        market(SELL, format(min_market_qty - SIM_STEP, "f")),
        market_quote(BUY, "5"),
        market_quote(SELL, "4.999999999"),
        market_quote(BUY, "0.000000001"),
        stop(OrderType.STOP_LOSS, SELL, "100.00001", "50000"),
        stop(OrderType.TAKE_PROFIT, BUY, "0.0001", "49999.999"),
        stop_limit(SELL, "0.0001", "50000", "1000000.001"),
    ]


def test_boundary_requests_agree_with_the_simulator(world: SimWorld) -> None:
    for request in _boundary_requests(world.reference_price):
        for open_orders in (0, 199, 200):
            assert_agrees_with_the_simulator(world, request, open_orders)


def test_market_executed_types_are_the_ones_without_a_limit_price() -> None:
    assert {t for t in OrderType if not t.has_price} == MARKET_EXECUTED_TYPES
