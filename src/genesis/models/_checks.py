"""attrs validators shared by the models: money is a finite Decimal, symbols are upper case.

One place for them (they were written once per module before). Floats use
``attrs.validators.gt``/``ge`` directly.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import attrs

__all__ = [
    "non_negative_decimal",
    "optional_non_negative_decimal",
    "optional_positive_decimal",
    "positive_decimal",
    "upper_symbol",
]


def non_negative_decimal(
    _inst: object, attribute: attrs.Attribute[Decimal], value: Decimal
) -> None:
    """A finite Decimal ``>= 0`` (a float near money is a bug, so a float fails too)."""
    if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
        raise ValueError(f"{attribute.name} must be a finite non-negative Decimal, got {value!r}")


def positive_decimal(_inst: object, attribute: attrs.Attribute[Decimal], value: Decimal) -> None:
    """A finite Decimal ``> 0``."""
    if not isinstance(value, Decimal) or not value.is_finite() or value <= 0:
        raise ValueError(f"{attribute.name} must be a finite positive Decimal, got {value!r}")


def optional_non_negative_decimal(
    inst: object, attribute: attrs.Attribute[Decimal | None], value: Decimal | None
) -> None:
    """``None``, or a finite Decimal ``>= 0``."""
    if value is not None:
        non_negative_decimal(inst, attribute, value)  # type: ignore[arg-type]  # narrowed


def optional_positive_decimal(
    inst: object, attribute: attrs.Attribute[Decimal | None], value: Decimal | None
) -> None:
    """``None``, or a finite Decimal ``> 0``."""
    if value is not None:
        positive_decimal(inst, attribute, value)  # type: ignore[arg-type]  # narrowed


def upper_symbol(_inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    """An upper-case alphanumeric symbol such as ``BTCUSDT``."""
    if not value or not value.isalnum() or value != value.upper():
        raise ValueError(f"{attribute.name} must be an upper-case alphanumeric symbol: {value!r}")
