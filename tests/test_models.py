"""Model invariants: Decimal money, validated fields, Binance status mapping."""

from __future__ import annotations

from decimal import Decimal

import attrs
import pytest

from genesis.models import (
    MarketCondition,
    MarketState,
    Order,
    OrderSide,
    OrderStatus,
    OrderType,
    PriceLevel,
)


def make_order(**overrides: object) -> Order:
    fields: dict[str, object] = {
        "client_order_id": "gen-1",
        "symbol": "BTCUSDT",
        "type": OrderType.LIMIT,
        "side": OrderSide.BUY,
        "price": Decimal("60000.00"),
        "quantity": Decimal("0.01000"),
    }
    fields.update(overrides)
    return Order(**fields)  # type: ignore[arg-type]  # fields are checked by the validators


def test_order_defaults_are_pending_and_unfilled() -> None:
    order = make_order()
    assert order.status is OrderStatus.PENDING
    assert order.filled_quantity == 0
    assert order.remaining_quantity == Decimal("0.01")
    assert make_order().order_id != order.order_id


@pytest.mark.parametrize(
    "overrides",
    [
        {"quantity": 0.01},
        {"price": 60000.0},
        {"price": Decimal("-1")},
        {"quantity": Decimal("NaN")},
        {"filled_quantity": Decimal("0.02")},
    ],
)
def test_order_rejects_floats_negatives_and_overfill(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        make_order(**overrides)


def test_order_is_immutable_and_evolves() -> None:
    order = make_order()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        order.status = OrderStatus.FILLED  # type: ignore[misc]
    filled = attrs.evolve(order, filled_quantity=order.quantity, status=OrderStatus.FILLED)
    assert filled.status.is_terminal
    assert filled.remaining_quantity == 0


@pytest.mark.parametrize(
    ("wire", "ours"),
    [
        ("NEW", OrderStatus.PENDING),
        ("PARTIALLY_FILLED", OrderStatus.PARTIAL),
        ("FILLED", OrderStatus.FILLED),
        ("CANCELED", OrderStatus.CANCELLED),
        ("REJECTED", OrderStatus.REJECTED),
        ("EXPIRED", OrderStatus.EXPIRED),
        ("EXPIRED_IN_MATCH", OrderStatus.EXPIRED),
    ],
)
def test_binance_statuses_map(wire: str, ours: OrderStatus) -> None:
    assert OrderStatus.from_binance(wire) is ours


def test_unknown_binance_status_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown Binance order status"):
        OrderStatus.from_binance("HALF_FILLED")
    assert not OrderStatus.UNKNOWN.is_terminal


def test_market_state_validates_measures() -> None:
    state = MarketState(
        symbol="BTCUSDT",
        state=MarketCondition.VOLATILE,
        volatility_atr=Decimal("120.5"),
        spread_basis_points=Decimal("1.2"),
        volume_24h=Decimal("1000"),
        liquidity_score=Decimal("0.8"),
    )
    assert state.state is MarketCondition.VOLATILE
    with pytest.raises(ValueError):
        attrs.evolve(state, liquidity_score=Decimal("1.5"))
    with pytest.raises(ValueError):
        attrs.evolve(state, volatility_atr=Decimal("-1"))


def test_price_level_rejects_float() -> None:
    with pytest.raises(ValueError):
        PriceLevel(1.5, Decimal(1))  # type: ignore[arg-type]
