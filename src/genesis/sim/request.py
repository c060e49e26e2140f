"""Raw request parameters → typed requests, with Binance's syntax rejections.

The REST and WebSocket API layers hand the exchange the parameters as they came off the wire
(strings, or ``None``/``""`` for "not sent"). This module is where they become typed values: a
:class:`NewOrder` for ``POST /api/v3/order`` (and ``order.place``), a checked client order id
for cancels. It owns the API-level syntax errors (-1100, -1102, -1106, -1111, -1115, -1116,
-1117, -1130), with the messages of :mod:`genesis.sim.errors`. What a request *means* for a
symbol (filters) is :mod:`genesis.sim.filters`; whether the engine accepts it is
:mod:`genesis.sim.engine`.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Final, TypeVar

import attrs

from genesis.sim.errors import (
    BAD_PRECISION,
    ILLEGAL_CHARS,
    INVALID_ORDER_TYPE,
    INVALID_PARAMETER,
    INVALID_SIDE,
    INVALID_TIF,
    MANDATORY_PARAM_EMPTY_OR_MALFORMED,
    MORE_THAN_XX_HOURS,
    MSG_BOTH_PARAMS_EMPTY,
    MSG_ILLEGAL_CHARS_PARAM,
    MSG_INVALID_PARAMETER,
    MSG_MANDATORY_PARAM,
    MSG_MORE_THAN_HOURS,
    MSG_PARAM_NOT_REQUIRED,
    MSG_TOO_MUCH_PRECISION,
    PARAM_NOT_REQUIRED,
    SimReject,
)
from genesis.sim.model import OrderType, RespType, Side, TimeInForce

__all__ = [
    "LIMIT_TYPES",
    "STOP_TYPES",
    "NewOrder",
    "both_empty",
    "check_client_id",
    "check_range",
    "mandatory",
    "parse_decimal",
    "parse_new_order",
]

LIMIT_TYPES: Final = frozenset(
    {OrderType.LIMIT, OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT_LIMIT}
)
"""Order types that take ``timeInForce``."""
STOP_TYPES: Final = frozenset(
    {
        OrderType.STOP_LOSS,
        OrderType.STOP_LOSS_LIMIT,
        OrderType.TAKE_PROFIT,
        OrderType.TAKE_PROFIT_LIMIT,
    }
)
"""Order types that take ``stopPrice`` and wait for their trigger."""
_PRICED_TYPES: Final = LIMIT_TYPES | {OrderType.LIMIT_MAKER}
_MARKET_EXEC_TYPES: Final = frozenset(
    {OrderType.MARKET, OrderType.STOP_LOSS, OrderType.TAKE_PROFIT}
)
_NUMBER_RANGE: Final = r"^([0-9]{1,20})(\.[0-9]{1,20})?$"
_CLIENT_ID_RANGE: Final = r"^[\.A-Z\:/a-z0-9_-]{1,36}$"
_NUMBER_RE: Final = re.compile(_NUMBER_RANGE)
_CLIENT_ID_RE: Final = re.compile(_CLIENT_ID_RANGE)
_E = TypeVar("_E", Side, OrderType, TimeInForce)
_RESP_TYPES: Final[dict[str, RespType]] = {"ACK": "ACK", "RESULT": "RESULT", "FULL": "FULL"}


@attrs.frozen(kw_only=True)
class NewOrder:
    """A syntactically valid new order: every field typed, the combination allowed.

    ``quantity`` is None only for a MARKET order by ``quote_order_qty``; ``price`` is set exactly
    for the priced types, ``stop_price`` exactly for the stop types. ``client_order_id`` None
    means "generate one". ``resp_type`` is the effective ``newOrderRespType`` (MARKET and LIMIT
    default to FULL, the others to ACK).
    """

    symbol: str
    side: Side
    type: OrderType
    time_in_force: TimeInForce
    quantity: Decimal | None
    quote_order_qty: Decimal | None
    price: Decimal | None
    stop_price: Decimal | None
    client_order_id: str | None
    resp_type: RespType

    @property
    def is_stop(self) -> bool:
        """The order waits for ``stop_price`` before it works."""
        return self.type in STOP_TYPES

    @property
    def market_exec(self) -> bool:
        """The order executes at market (MARKET, STOP_LOSS, TAKE_PROFIT)."""
        return self.type in _MARKET_EXEC_TYPES


def mandatory(name: str) -> SimReject:
    """-1102 "Mandatory parameter '<name>' was not sent, was empty/null, or malformed."."""
    return SimReject.of(MANDATORY_PARAM_EMPTY_OR_MALFORMED, MSG_MANDATORY_PARAM, name)


def both_empty(first: str, second: str) -> SimReject:
    """-1102 "Param '<first>' or '<second>' must be sent, but both were empty/null!"."""
    return SimReject.of(MANDATORY_PARAM_EMPTY_OR_MALFORMED, MSG_BOTH_PARAMS_EMPTY, first, second)


def _not_required(name: str) -> SimReject:
    return SimReject.of(PARAM_NOT_REQUIRED, MSG_PARAM_NOT_REQUIRED, name)


def _illegal(name: str, legal: str) -> SimReject:
    return SimReject.of(ILLEGAL_CHARS, MSG_ILLEGAL_CHARS_PARAM, name, legal)


def parse_decimal(name: str, value: Decimal | str | None) -> Decimal | None:
    """A numeric parameter: None when not sent; -1100 malformed; -1111 more than 8 decimals."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        if not value.is_finite() or value < 0:
            raise _illegal(name, _NUMBER_RANGE)
        number = value
    else:
        if value == "":
            return None
        if _NUMBER_RE.match(value) is None:
            raise _illegal(name, _NUMBER_RANGE)
        try:
            number = Decimal(value)
        except InvalidOperation as exc:  # pragma: no cover - the regex admits only numbers
            raise _illegal(name, _NUMBER_RANGE) from exc
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -8:
        raise SimReject.of(BAD_PRECISION, MSG_TOO_MUCH_PRECISION, name)
    return number


def check_client_id(name: str, value: str | None) -> str | None:
    """A client order id parameter: None when not sent; -1100 outside Binance's legal range."""
    if value is None or value == "":
        return None
    if _CLIENT_ID_RE.match(value) is None:
        raise _illegal(name, _CLIENT_ID_RANGE)
    return value


def check_range(start_time: int | None, end_time: int | None, hours: int) -> None:
    """-1127 when ``startTime`` and ``endTime`` are more than ``hours`` apart."""
    if (
        start_time is not None
        and end_time is not None
        and end_time - start_time > hours * 3_600_000
    ):
        raise SimReject.of(MORE_THAN_XX_HOURS, MSG_MORE_THAN_HOURS, hours)


def _enum_param(name: str, value: str | None, enum_type: type[_E], code: int) -> _E:
    if not value:
        raise mandatory(name)
    if value not in enum_type.__members__:
        raise SimReject(code)
    return enum_type(value)


def parse_new_order(
    symbol: str,
    *,
    side: str | None,
    type: str | None,
    quantity: Decimal | str | None = None,
    quote_order_qty: Decimal | str | None = None,
    price: Decimal | str | None = None,
    stop_price: Decimal | str | None = None,
    time_in_force: str | None = None,
    new_client_order_id: str | None = None,
    new_order_resp_type: str | None = None,
) -> NewOrder:
    """The typed :class:`NewOrder` for one request's raw parameters (``symbol`` already known).

    Checks run in Binance's order: side, type, the numbers, ``newOrderRespType``, the client
    id, then which parameters the type requires or forbids.

    Raises:
        SimReject: -1102 mandatory parameter missing; -1100 malformed number or client id;
            -1106 parameter sent when not required; -1111 too much precision; -1115/-1116/-1117
            invalid timeInForce/type/side; -1130 bad newOrderRespType.
    """
    side_e = _enum_param("side", side, Side, INVALID_SIDE)
    otype = _enum_param("type", type, OrderType, INVALID_ORDER_TYPE)
    qty = parse_decimal("quantity", quantity)
    quote_qty = parse_decimal("quoteOrderQty", quote_order_qty)
    px = parse_decimal("price", price)
    stop_px = parse_decimal("stopPrice", stop_price)
    resp_raw = new_order_resp_type or None
    if resp_raw is not None and resp_raw not in _RESP_TYPES:
        raise SimReject.of(INVALID_PARAMETER, MSG_INVALID_PARAMETER, "newOrderRespType")
    client_id = check_client_id("newClientOrderId", new_client_order_id)

    tif = TimeInForce.GTC
    if otype in LIMIT_TYPES:
        tif = _enum_param("timeInForce", time_in_force, TimeInForce, INVALID_TIF)
    elif time_in_force:
        raise _not_required("timeInForce")
    if otype is OrderType.MARKET:
        if qty is None and quote_qty is None:
            raise both_empty("quantity", "quoteOrderQty")
        if qty is not None and quote_qty is not None:
            raise _not_required("quoteOrderQty")
    else:
        if qty is None:
            raise mandatory("quantity")
        if quote_qty is not None:
            raise _not_required("quoteOrderQty")
    needs_price = otype in _PRICED_TYPES
    if needs_price and px is None:
        raise mandatory("price")
    if not needs_price and px is not None:
        raise _not_required("price")
    needs_stop = otype in STOP_TYPES
    if needs_stop and stop_px is None:
        raise mandatory("stopPrice")
    if not needs_stop and stop_px is not None:
        raise _not_required("stopPrice")

    if resp_raw is not None:
        resp_type = _RESP_TYPES[resp_raw]
    elif otype in (OrderType.MARKET, OrderType.LIMIT):
        resp_type = "FULL"
    else:
        resp_type = "ACK"
    return NewOrder(
        symbol=symbol,
        side=side_e,
        type=otype,
        time_in_force=tif,
        quantity=qty,
        quote_order_qty=quote_qty,
        price=px,
        stop_price=stop_px,
        client_order_id=client_id,
        resp_type=resp_type,
    )
