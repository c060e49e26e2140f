"""User data stream over the WebSocket API: request frames out; answers and wrapped events in."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, TypeAlias

import attrs
import orjson

from genesis.errors import ExchangeProtocolError
from genesis.models.account import Balance
from genesis.models.codec._wire import (
    _bool,
    _guard,
    _int,
    _optional_decimal,
    _str,
    decode_json,
    parse_decimal,
)
from genesis.models.events import (
    AccountBalances,
    ExecutionReport,
    ServerShutdown,
    StreamTerminated,
)
from genesis.models.orders import (
    Fill,
    Order,
    OrderSide,
    OrderStatus,
    OrderType,
    TimeInForce,
)

if TYPE_CHECKING:
    from genesis.models.codec._wire import Wire

__all__ = [
    "UserEvent",
    "UserEventFrame",
    "WsApiResponse",
    "decode_account_position",
    "decode_execution_report",
    "decode_subscription_id",
    "decode_user_event",
    "decode_ws_api_frame",
    "encode_ws_api_request",
]

# FACTS.md §10, web-socket-api.md, user-data-stream.md. Every frame on a WS API connection is
# either the answer to one of our requests, ``{"id":..,"status":..,"result"|"error":..}``, or a
# user data event wrapped as ``{"subscriptionId":N,"event":{..}}`` (``serverShutdown`` comes
# without ``subscriptionId``). :func:`decode_ws_api_frame` tells them apart with one parse.

UserEvent: TypeAlias = ExecutionReport | AccountBalances | StreamTerminated | ServerShutdown


@attrs.frozen(kw_only=True)
class WsApiResponse:
    """The answer to one WS API request.

    Attributes:
        id: The request's ``id`` echoed back (``None`` for a frame the server could not read as
            a request, or a revoked session).
        status: HTTP-like status: 200, 4xx, 5xx.
        result: The ``result`` value on success (its shape is the method's).
        error_code: Binance's ``error.code`` on failure.
        error_msg: ``error.msg`` on failure.
        retry_after_ms: ``error.data.retryAfter`` (epoch ms) of a 429/418, when sent.
    """

    id: int | str | None
    status: int
    result: object = None
    error_code: int | None = None
    error_msg: str = ""
    retry_after_ms: int | None = None

    @property
    def ok(self) -> bool:
        return self.error_code is None and 200 <= self.status < 300


@attrs.frozen(kw_only=True)
class UserEventFrame:
    """A wrapped user data event.

    Attributes:
        subscription_id: ``subscriptionId`` (``None`` for ``serverShutdown``).
        event_type: The event's ``e``.
        event: The decoded event, or ``None`` for a type Genesis does not decode
            (``balanceUpdate``, ``listStatus``, ``externalLockUpdate`` …).
    """

    subscription_id: int | None
    event_type: str
    event: UserEvent | None


def encode_ws_api_request(
    request_id: int | str, method: str, params: Mapping[str, str | int] | None = None
) -> str:
    """The text frame of one WS API request ``{"id":..,"method":..,"params":{..}}``."""
    body: dict[str, object] = {"id": request_id, "method": method}
    if params:
        body["params"] = dict(params)
    return orjson.dumps(body).decode()


def _report_fill(d: Wire) -> Fill:
    asset = d.get("N")
    return Fill(
        price=parse_decimal(d["L"]),
        quantity=parse_decimal(d["l"]),
        commission=parse_decimal(d["n"]),
        commission_asset=asset if isinstance(asset, str) else None,
        trade_id=_int(d["t"]),
    )


def _execution_report(d: Wire) -> ExecutionReport:
    if d.get("e") != "executionReport":
        raise ValueError(f"event type is {d.get('e')!r}, not 'executionReport'")
    execution_type = _str(d["x"])
    status = _str(d["X"])
    order_type = OrderType(_str(d["o"]))
    event_ms = _int(d["E"])
    transaction_ms = _int(d.get("T", event_ms))
    # A cancel's report carries the cancel request's id in ``c`` and the order's own in ``C``.
    original = d.get("C")
    client_order_id = original if isinstance(original, str) and original else _str(d["c"])
    fill = _report_fill(d) if execution_type == "TRADE" else None
    tif = d.get("f")
    reject = d.get("r", "NONE")
    expiry = d.get("eR")
    execution_id = d.get("I")
    order = Order(
        client_order_id=client_order_id,
        exchange_order_id=_int(d["i"]),
        symbol=_str(d["s"]),
        type=order_type,
        side=OrderSide(_str(d["S"])),
        # Binance sends "0.00000000" for the price of a MARKET order and the stop of a LIMIT.
        price=_optional_decimal(d.get("p")) if order_type.has_price else None,
        stop_price=_optional_decimal(d.get("P")) if order_type.has_stop_price else None,
        quantity=parse_decimal(d["q"]),
        filled_quantity=parse_decimal(d["z"]),
        quote_filled_quantity=max(parse_decimal(d["Z"]), Decimal(0)),
        time_in_force=TimeInForce(tif) if isinstance(tif, str) and tif else None,
        status=OrderStatus.from_binance(status),
        exchange_status=status,
        fills=() if fill is None else (fill,),
        created_ms=_int(d.get("O", transaction_ms)),
        updated_ms=transaction_ms,
    )
    return ExecutionReport(
        order=order,
        execution_type=execution_type,
        fill=fill,
        reject_reason=None if reject == "NONE" else _str(reject),
        expiry_reason=None if expiry is None else _str(expiry),
        event_time_ms=event_ms,
        transaction_time_ms=transaction_ms,
        execution_id=None if execution_id is None else _int(execution_id),
        is_maker=_bool(d.get("m", False)),
    )


def decode_execution_report(event: object) -> ExecutionReport:
    """An ``executionReport`` event object (the ``event`` of a wrapped frame).

    The order's client id is ``C`` when non-empty (a cancel), else ``c``; the last fill is
    decoded for ``x == "TRADE"`` only; average price is ``Z``/``z`` (``Order.average_price``).
    """
    return _guard("executionReport", _execution_report, event)


def _account_position(d: Wire) -> AccountBalances:
    if d.get("e") != "outboundAccountPosition":
        raise ValueError(f"event type is {d.get('e')!r}, not 'outboundAccountPosition'")
    raw = d["B"]
    if not isinstance(raw, list):
        raise ValueError("'B' is not a list")
    balances: list[Balance] = []
    for b in raw:
        if not isinstance(b, Mapping):
            raise ValueError("balance is not an object")
        balances.append(
            Balance(asset=_str(b["a"]), free=parse_decimal(b["f"]), locked=parse_decimal(b["l"]))
        )
    event_ms = _int(d["E"])
    return AccountBalances(
        event_time_ms=event_ms, update_time_ms=_int(d.get("u", event_ms)), balances=tuple(balances)
    )


def decode_account_position(event: object) -> AccountBalances:
    """An ``outboundAccountPosition`` event object: free and locked per listed asset."""
    return _guard("outboundAccountPosition", _account_position, event)


def _user_payload(event_type: str, event: object, subscription_id: int | None) -> UserEvent | None:
    if event_type == "executionReport":
        return decode_execution_report(event)
    if event_type == "outboundAccountPosition":
        return decode_account_position(event)
    if event_type == "eventStreamTerminated":
        return _guard(
            event_type,
            lambda d: StreamTerminated(subscription_id=subscription_id, event_time_ms=_int(d["E"])),
            event,
        )
    if event_type == "serverShutdown":
        return _guard(event_type, lambda d: ServerShutdown(event_time_ms=_int(d["E"])), event)
    return None


def _request_id(value: object) -> int | str | None:
    if value is None or isinstance(value, str):
        return value
    return _int(value)


def _response(d: Wire) -> WsApiResponse:
    request_id = _request_id(d.get("id"))
    status = _int(d["status"])
    error = d.get("error")
    if error is None:
        return WsApiResponse(id=request_id, status=status, result=d.get("result"))
    if not isinstance(error, Mapping):
        raise ValueError("'error' is not an object")
    data = error.get("data")
    retry_after = data.get("retryAfter") if isinstance(data, Mapping) else None
    msg = error.get("msg", "")
    return WsApiResponse(
        id=request_id,
        status=status,
        error_code=_int(error["code"]),
        error_msg=msg if isinstance(msg, str) else "",
        retry_after_ms=None if retry_after is None else _int(retry_after),
    )


def decode_ws_api_frame(raw: bytes | str) -> WsApiResponse | UserEventFrame:
    """One frame of a WS API connection: a request's answer or a wrapped user data event.

    Raises:
        ExchangeProtocolError: invalid JSON, neither shape, or a malformed known event.
    """
    obj = decode_json(raw, what="WS API frame")
    if not isinstance(obj, Mapping):
        raise ExchangeProtocolError(
            f"WS API frame: expected a JSON object, got {type(obj).__name__}"
        )
    if "status" in obj:
        return _guard("WS API response", _response, obj)
    event = obj.get("event")
    if not isinstance(event, Mapping):
        raise ExchangeProtocolError("WS API frame: neither a response nor a wrapped event")
    event_type = event.get("e")
    if not isinstance(event_type, str):
        raise ExchangeProtocolError("user data event: missing or non-string 'e'")
    raw_id = obj.get("subscriptionId")
    try:
        subscription_id = None if raw_id is None else _int(raw_id)
    except ValueError as exc:
        raise ExchangeProtocolError(f"user data event: subscriptionId: {exc}") from exc
    return UserEventFrame(
        subscription_id=subscription_id,
        event_type=event_type,
        event=_user_payload(event_type, event, subscription_id),
    )


def decode_user_event(frame: bytes | str) -> UserEvent | None:
    """A wrapped user data event frame ``{"subscriptionId":N,"event":{..}}``.

    Returns:
        The decoded event, or ``None`` for an event type Genesis does not decode (the caller
        counts it by :attr:`UserEventFrame.event_type` when it uses :func:`decode_ws_api_frame`).

    Raises:
        ExchangeProtocolError: invalid JSON, a request's answer, or a malformed known event.
    """
    decoded = decode_ws_api_frame(frame)
    if isinstance(decoded, WsApiResponse):
        raise ExchangeProtocolError("WS API frame: a request's answer, not a user data event")
    return decoded.event


def decode_subscription_id(result: object) -> int:
    """``userDataStream.subscribe[.signature]`` result ``{"subscriptionId": 0}`` → the id."""
    return _guard("subscribe result", lambda d: _int(d["subscriptionId"]), result)
