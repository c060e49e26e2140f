"""Market regime as the strategy layer sees it."""

from __future__ import annotations

import enum
from decimal import Decimal

import attrs

__all__ = ["MarketCondition", "MarketState"]


class MarketCondition(enum.Enum):
    DEAD = "DEAD"
    NORMAL = "NORMAL"
    VOLATILE = "VOLATILE"
    PANIC = "PANIC"
    MAINTENANCE = "MAINTENANCE"


def _ge0(_inst: object, attribute: attrs.Attribute[Decimal], value: Decimal) -> None:
    if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
        raise ValueError(f"{attribute.name} must be a finite non-negative Decimal, got {value!r}")


def _unit_interval(_inst: object, attribute: attrs.Attribute[Decimal], value: Decimal) -> None:
    if not isinstance(value, Decimal) or not (0 <= value <= 1):
        raise ValueError(f"{attribute.name} must be a Decimal in [0, 1], got {value!r}")


@attrs.frozen(kw_only=True)
class MarketState:
    """A symbol's regime: ``state`` plus the measures it was judged from."""

    symbol: str
    state: MarketCondition
    volatility_atr: Decimal = attrs.field(validator=_ge0)
    spread_basis_points: Decimal = attrs.field(validator=_ge0)
    volume_24h: Decimal = attrs.field(validator=_ge0)
    liquidity_score: Decimal = attrs.field(validator=_unit_interval)
    updated_ms: int = 0
