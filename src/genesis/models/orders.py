"""Orders as Genesis tracks them.

``OrderStatus`` is Genesis's lifecycle, not Binance's wire enum: ``PENDING`` (sent, not yet
acknowledged), ``UNKNOWN`` (the outcome of a placement is unknown: a timeout, a 5xx, -1006 or
-1007; see ARCHITECTURE.md "Unknown outcomes") and the exchange's terminal states.
"""

from __future__ import annotations

import enum
import uuid
from decimal import Decimal

import attrs

__all__ = ["Order", "OrderSide", "OrderStatus", "OrderType", "TimeInForce"]


class OrderType(enum.Enum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    LIMIT_MAKER = "LIMIT_MAKER"
    STOP_LOSS = "STOP_LOSS"
    STOP_LOSS_LIMIT = "STOP_LOSS_LIMIT"


class OrderSide(enum.Enum):
    BUY = "BUY"
    SELL = "SELL"


class TimeInForce(enum.Enum):
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"


class OrderStatus(enum.Enum):
    PENDING = "PENDING"
    PARTIAL = "PARTIAL"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    UNKNOWN = "UNKNOWN"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    @classmethod
    def from_binance(cls, status: str) -> OrderStatus:
        """Map Binance's order status (``NEW``, ``PARTIALLY_FILLED`` ...) to ours."""
        try:
            return _FROM_BINANCE[status]
        except KeyError:
            raise ValueError(f"unknown Binance order status {status!r}") from None


_TERMINAL = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED}
)
_FROM_BINANCE = {
    "NEW": OrderStatus.PENDING,
    "PENDING_NEW": OrderStatus.PENDING,
    "PARTIALLY_FILLED": OrderStatus.PARTIAL,
    "FILLED": OrderStatus.FILLED,
    "CANCELED": OrderStatus.CANCELLED,
    "PENDING_CANCEL": OrderStatus.PARTIAL,
    "REJECTED": OrderStatus.REJECTED,
    "EXPIRED": OrderStatus.EXPIRED,
    "EXPIRED_IN_MATCH": OrderStatus.EXPIRED,
}


def _decimal_ge0(_inst: object, attribute: attrs.Attribute[Decimal], value: Decimal) -> None:
    if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
        raise ValueError(f"{attribute.name} must be a finite non-negative Decimal, got {value!r}")


def _optional_decimal_ge0(
    inst: object, attribute: attrs.Attribute[Decimal | None], value: Decimal | None
) -> None:
    if value is not None:
        _decimal_ge0(inst, attribute, value)  # type: ignore[arg-type]  # same check, narrowed


@attrs.frozen(kw_only=True)
class Order:
    """An order and what is known of it.

    ``order_id`` is Genesis's own id; ``client_order_id`` is what Binance sees as
    ``newClientOrderId`` (the idempotency handle); ``exchange_order_id`` is Binance's ``orderId``
    once known. ``price`` is ``None`` for MARKET orders.
    """

    order_id: uuid.UUID = attrs.field(factory=uuid.uuid4)
    client_order_id: str
    exchange_order_id: int | None = None
    symbol: str
    type: OrderType
    side: OrderSide
    price: Decimal | None = attrs.field(default=None, validator=_optional_decimal_ge0)
    quantity: Decimal = attrs.field(validator=_decimal_ge0)
    filled_quantity: Decimal = attrs.field(default=Decimal(0), validator=_decimal_ge0)
    status: OrderStatus = OrderStatus.PENDING
    created_ms: int = 0
    updated_ms: int = 0
    latency_ms: float | None = None
    slippage_percent: Decimal | None = None

    @filled_quantity.validator
    def _not_overfilled(self, _attribute: attrs.Attribute[Decimal], value: Decimal) -> None:
        if value > self.quantity:
            raise ValueError(f"filled_quantity {value} exceeds quantity {self.quantity}")

    @property
    def remaining_quantity(self) -> Decimal:
        return self.quantity - self.filled_quantity
