"""Orders as Genesis tracks them.

``OrderStatus`` is Genesis's lifecycle, not Binance's wire enum: ``PENDING`` (sent, not yet
acknowledged), ``UNKNOWN`` (the outcome of a placement is unknown: a timeout, a 5xx, -1006 or
-1007; see ARCHITECTURE.md "Unknown outcomes") and the exchange's terminal states.
"""

from __future__ import annotations

import enum
import re
import uuid
from decimal import Decimal
from typing import Final

import attrs

from genesis.models._checks import (
    non_negative_decimal,
    optional_non_negative_decimal,
    optional_positive_decimal,
    upper_symbol,
)

__all__ = [
    "BINANCE_ORDER_STATUSES",
    "Fill",
    "Order",
    "OrderRequest",
    "OrderSide",
    "OrderStatus",
    "OrderType",
    "TimeInForce",
    "is_valid_client_order_id",
    "slippage_percent",
]


class OrderType(enum.Enum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    LIMIT_MAKER = "LIMIT_MAKER"
    STOP_LOSS = "STOP_LOSS"
    STOP_LOSS_LIMIT = "STOP_LOSS_LIMIT"
    TAKE_PROFIT = "TAKE_PROFIT"
    TAKE_PROFIT_LIMIT = "TAKE_PROFIT_LIMIT"

    @property
    def has_price(self) -> bool:
        """Whether orders of this type carry a limit price."""
        return self in _PRICED

    @property
    def has_stop_price(self) -> bool:
        """Whether orders of this type carry a stop (trigger) price."""
        return self in _STOPPED


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


_PRICED = frozenset(
    {
        OrderType.LIMIT,
        OrderType.LIMIT_MAKER,
        OrderType.STOP_LOSS_LIMIT,
        OrderType.TAKE_PROFIT_LIMIT,
    }
)
_STOPPED = frozenset(
    {
        OrderType.STOP_LOSS,
        OrderType.STOP_LOSS_LIMIT,
        OrderType.TAKE_PROFIT,
        OrderType.TAKE_PROFIT_LIMIT,
    }
)
_TIF_REQUIRED = frozenset({OrderType.LIMIT, OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT_LIMIT})

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
BINANCE_ORDER_STATUSES: Final = frozenset(_FROM_BINANCE)
"""Every order status Binance documents (enums.md)."""

_CLIENT_ORDER_ID_RE: Final = re.compile(r"[.A-Z:/a-z0-9_-]{1,36}")
"""Binance's documented pattern for ``newClientOrderId``: ``^[\\.A-Z\\:/a-z0-9_-]{1,36}$``."""


def is_valid_client_order_id(value: str) -> bool:
    """Whether ``value`` is a client order id Binance accepts."""
    return _CLIENT_ORDER_ID_RE.fullmatch(value) is not None


def _optional_client_order_id(
    _inst: object, _attribute: attrs.Attribute[str | None], value: str | None
) -> None:
    if value is not None and not is_valid_client_order_id(value):
        raise ValueError(f"client_order_id must match Binance's pattern, got {value[:40]!r}")


@attrs.frozen(kw_only=True)
class OrderRequest:
    """What a caller asks the exchange to do: one new order. Prices and quantities are Decimal.

    Build one with :meth:`limit`, :meth:`market` or :meth:`market_quote`; the validators enforce
    Binance's per-type mandatory parameters (a LIMIT has a price and a time in force, a MARKET
    has a quantity or a quote quantity but no price, a stop type has a stop price).
    ``client_order_id`` is ``None`` to let the sender choose one (it always sends one: an order
    without a known client id cannot be looked up after a timeout).
    """

    symbol: str = attrs.field(validator=upper_symbol)
    side: OrderSide
    type: OrderType
    quantity: Decimal | None = attrs.field(default=None, validator=optional_positive_decimal)
    quote_order_qty: Decimal | None = attrs.field(default=None, validator=optional_positive_decimal)
    price: Decimal | None = attrs.field(default=None, validator=optional_positive_decimal)
    stop_price: Decimal | None = attrs.field(default=None, validator=optional_positive_decimal)
    time_in_force: TimeInForce | None = None
    client_order_id: str | None = attrs.field(default=None, validator=_optional_client_order_id)

    def __attrs_post_init__(self) -> None:
        kind = self.type.value
        if self.type.has_price != (self.price is not None):
            need = "needs" if self.type.has_price else "takes no"
            raise ValueError(f"a {kind} order {need} price")
        if self.type.has_stop_price != (self.stop_price is not None):
            need = "needs" if self.type.has_stop_price else "takes no"
            raise ValueError(f"a {kind} order {need} stop price")
        if (self.type in _TIF_REQUIRED) != (self.time_in_force is not None):
            need = "needs" if self.type in _TIF_REQUIRED else "takes no"
            raise ValueError(f"a {kind} order {need} time in force")
        if self.type is OrderType.MARKET:
            if (self.quantity is None) == (self.quote_order_qty is None):
                raise ValueError("a MARKET order needs exactly one of quantity and quote_order_qty")
        elif self.quote_order_qty is not None:
            raise ValueError(f"quote_order_qty is for MARKET orders, not {kind}")
        elif self.quantity is None:
            raise ValueError(f"a {kind} order needs a quantity")

    @classmethod
    def limit(
        cls,
        *,
        symbol: str,
        side: OrderSide,
        quantity: Decimal,
        price: Decimal,
        time_in_force: TimeInForce = TimeInForce.GTC,
        client_order_id: str | None = None,
    ) -> OrderRequest:
        """A LIMIT order."""
        return cls(
            symbol=symbol,
            side=side,
            type=OrderType.LIMIT,
            quantity=quantity,
            price=price,
            time_in_force=time_in_force,
            client_order_id=client_order_id,
        )

    @classmethod
    def market(
        cls,
        *,
        symbol: str,
        side: OrderSide,
        quantity: Decimal,
        client_order_id: str | None = None,
    ) -> OrderRequest:
        """A MARKET order for ``quantity`` of the base asset."""
        return cls(
            symbol=symbol,
            side=side,
            type=OrderType.MARKET,
            quantity=quantity,
            client_order_id=client_order_id,
        )

    @classmethod
    def market_quote(
        cls,
        *,
        symbol: str,
        side: OrderSide,
        quote_order_qty: Decimal,
        client_order_id: str | None = None,
    ) -> OrderRequest:
        """A MARKET order spending (BUY) or receiving (SELL) ``quote_order_qty`` of the quote."""
        return cls(
            symbol=symbol,
            side=side,
            type=OrderType.MARKET,
            quote_order_qty=quote_order_qty,
            client_order_id=client_order_id,
        )

    def with_client_order_id(self, client_order_id: str) -> OrderRequest:
        """The same request under ``client_order_id``."""
        return attrs.evolve(self, client_order_id=client_order_id)


@attrs.frozen(kw_only=True)
class Fill:
    """One execution of an order (a ``fills[]`` entry, or a user-stream trade)."""

    price: Decimal = attrs.field(validator=non_negative_decimal)
    quantity: Decimal = attrs.field(validator=non_negative_decimal)
    commission: Decimal = attrs.field(validator=non_negative_decimal)
    commission_asset: str | None
    trade_id: int


@attrs.frozen(kw_only=True)
class Order:
    """An order and what is known of it.

    ``order_id`` is Genesis's own id; ``client_order_id`` is what Binance sees as
    ``newClientOrderId`` (the idempotency handle); ``exchange_order_id`` is Binance's ``orderId``
    once known. ``price`` is ``None`` for MARKET orders. ``exchange_status`` is Binance's own
    status name (``NEW``, ``PARTIALLY_FILLED``, ``CANCELED`` …) as last reported, ``None`` while
    the exchange has not said (``PENDING`` before an answer, ``UNKNOWN`` after a lost one).
    ``quantity`` is ``0`` for a MARKET order placed by quote quantity until the exchange reports
    what it executed. ``latency_ms`` is the round trip of the request that produced this view;
    ``slippage_percent`` compares the average fill price with the price the caller expected
    (positive: worse for the caller).
    """

    order_id: uuid.UUID = attrs.field(factory=uuid.uuid4)
    client_order_id: str
    exchange_order_id: int | None = None
    symbol: str
    type: OrderType
    side: OrderSide
    price: Decimal | None = attrs.field(default=None, validator=optional_non_negative_decimal)
    stop_price: Decimal | None = attrs.field(default=None, validator=optional_non_negative_decimal)
    quantity: Decimal = attrs.field(validator=non_negative_decimal)
    filled_quantity: Decimal = attrs.field(default=Decimal(0), validator=non_negative_decimal)
    quote_filled_quantity: Decimal = attrs.field(default=Decimal(0), validator=non_negative_decimal)
    time_in_force: TimeInForce | None = None
    status: OrderStatus = OrderStatus.PENDING
    exchange_status: str | None = attrs.field(default=None)
    fills: tuple[Fill, ...] = ()
    created_ms: int = 0
    updated_ms: int = 0
    latency_ms: float | None = None
    slippage_percent: Decimal | None = None

    @filled_quantity.validator
    def _not_overfilled(self, _attribute: attrs.Attribute[Decimal], value: Decimal) -> None:
        if value > self.quantity and self.quantity > 0:
            raise ValueError(f"filled_quantity {value} exceeds quantity {self.quantity}")

    @exchange_status.validator
    def _known_status(self, _attribute: attrs.Attribute[str | None], value: str | None) -> None:
        if value is not None and value not in _FROM_BINANCE:
            raise ValueError(f"unknown Binance order status {value[:40]!r}")

    @classmethod
    def from_request(
        cls,
        request: OrderRequest,
        *,
        client_order_id: str,
        status: OrderStatus = OrderStatus.PENDING,
        exchange_order_id: int | None = None,
        created_ms: int = 0,
        updated_ms: int | None = None,
        latency_ms: float | None = None,
    ) -> Order:
        """What is known of an order the exchange has not described (yet): the request.

        Used for an ACK answer (ids only), a rejection and an unknown outcome.
        """
        return cls(
            client_order_id=client_order_id,
            exchange_order_id=exchange_order_id,
            symbol=request.symbol,
            type=request.type,
            side=request.side,
            price=request.price,
            stop_price=request.stop_price,
            quantity=request.quantity or Decimal(0),
            time_in_force=request.time_in_force,
            status=status,
            created_ms=created_ms,
            updated_ms=created_ms if updated_ms is None else updated_ms,
            latency_ms=latency_ms,
        )

    @property
    def remaining_quantity(self) -> Decimal:
        return max(self.quantity - self.filled_quantity, Decimal(0))

    @property
    def average_price(self) -> Decimal | None:
        """Average fill price (cumulative quote / cumulative quantity); ``None`` before a fill."""
        if self.filled_quantity <= 0:
            return None
        return self.quote_filled_quantity / self.filled_quantity

    @property
    def status_name(self) -> str:
        """Binance's status name when known, else Genesis's (``PENDING``, ``UNKNOWN``)."""
        return self.exchange_status or self.status.value


def slippage_percent(
    side: OrderSide, expected_price: Decimal | None, average_price: Decimal | None
) -> Decimal | None:
    """How much worse than ``expected_price`` the average fill was, in percent of it.

    Positive is worse for the caller (paid more on a BUY, received less on a SELL); ``None``
    without an expected price or a fill.
    """
    if expected_price is None or average_price is None or expected_price <= 0:
        return None
    worse = (
        average_price - expected_price if side is OrderSide.BUY else expected_price - average_price
    )
    return worse / expected_price * 100
