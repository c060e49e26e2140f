"""Binance wire JSON ⇄ Genesis models: the only module that knows Binance's payload format.

Decoding is hand-written per event kind (the measured hot path: a generic cattrs structure of
depth20 costs ~20x orjson's parse; see ARCHITECTURE.md §7) and registered into a cattrs
converter by :func:`make_converter`, so callers that want cattrs get the same rules.

Rules:
- prices and quantities arrive as JSON strings and become :class:`~decimal.Decimal`; a JSON
  float where Binance sends a string is rejected (a float near money is a bug);
- unknown keys are ignored (Binance adds fields; old captures carry removed ones);
- every failure raises :class:`~genesis.errors.ExchangeProtocolError` naming the kind and key.
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Final, TypeAlias, TypeVar

import attrs
import cattrs
import orjson

from genesis.errors import ExchangeProtocolError
from genesis.models.account import Account, AccountTrade, Balance
from genesis.models.events import (
    AccountBalances,
    ExecutionReport,
    ServerShutdown,
    StreamTerminated,
)
from genesis.models.exchange_info import (
    ExchangeInfo,
    RateLimit,
    RateLimitType,
    SymbolFilters,
    SymbolInfo,
)
from genesis.models.market import Depth, Kline, PriceLevel, Ticker, Trade
from genesis.models.orders import (
    Fill,
    Order,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    TimeInForce,
    slippage_percent,
)
from genesis.models.streams import parse_stream_name

__all__ = [
    "MARKET_EVENT_TYPES",
    "MarketEvent",
    "UsageReport",
    "UserEvent",
    "UserEventFrame",
    "WsApiResponse",
    "decimal_to_wire",
    "decode_account",
    "decode_account_position",
    "decode_depth",
    "decode_error_body",
    "decode_exchange_info",
    "decode_execution_report",
    "decode_frame",
    "decode_json",
    "decode_kline",
    "decode_my_trades",
    "decode_order",
    "decode_orders",
    "decode_server_time",
    "decode_stream_payload",
    "decode_subscription_id",
    "decode_ticker",
    "decode_trade",
    "decode_user_event",
    "decode_ws_api_frame",
    "encode_ws_api_request",
    "event_to_record",
    "make_converter",
    "order_request_params",
    "parse_ban_until_ms",
    "parse_decimal",
    "parse_usage_headers",
]

MarketEvent: TypeAlias = Trade | Ticker | Depth | Kline
MARKET_EVENT_TYPES: Final = (Trade, Ticker, Depth, Kline)

Wire: TypeAlias = Mapping[str, object]
_E = TypeVar("_E")


def parse_decimal(value: object) -> Decimal:
    """A finite Decimal from a wire string (or int); floats and junk raise ``ValueError``."""
    if isinstance(value, str):
        try:
            result = Decimal(value)
        except decimal.InvalidOperation:
            raise ValueError(f"not a decimal string: {value[:40]!r}") from None
    elif isinstance(value, int) and not isinstance(value, bool):
        result = Decimal(value)
    else:
        raise ValueError(f"expected a decimal string, got {type(value).__name__}")
    if not result.is_finite():
        raise ValueError(f"not a finite decimal: {value!r}")
    return result


def _int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"expected an integer, got {type(value).__name__}")


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"expected a boolean, got {type(value).__name__}")


def _str(value: object) -> str:
    if isinstance(value, str):
        return value
    raise ValueError(f"expected a string, got {type(value).__name__}")


def _guard(kind: str, fn: Callable[[Wire], _E], data: object) -> _E:
    if not isinstance(data, Mapping):
        raise ExchangeProtocolError(f"{kind}: expected a JSON object, got {type(data).__name__}")
    try:
        return fn(data)
    except KeyError as exc:
        raise ExchangeProtocolError(f"{kind}: missing key {exc.args[0]!r}") from exc
    except (ValueError, TypeError) as exc:
        raise ExchangeProtocolError(f"{kind}: {exc}") from exc


def _trade(d: Wire) -> Trade:
    if d.get("e") != "trade":
        raise ValueError(f"event type is {d.get('e')!r}, not 'trade'")
    return Trade(
        symbol=_str(d["s"]),
        trade_id=_int(d["t"]),
        price=parse_decimal(d["p"]),
        quantity=parse_decimal(d["q"]),
        trade_time_ms=_int(d["T"]),
        event_time_ms=_int(d["E"]),
        buyer_is_maker=_bool(d["m"]),
    )


def _ticker(d: Wire) -> Ticker:
    if d.get("e") != "24hrTicker":
        raise ValueError(f"event type is {d.get('e')!r}, not '24hrTicker'")
    return Ticker(
        symbol=_str(d["s"]),
        event_time_ms=_int(d["E"]),
        price_change=parse_decimal(d["p"]),
        price_change_percent=parse_decimal(d["P"]),
        weighted_avg_price=parse_decimal(d["w"]),
        last_price=parse_decimal(d["c"]),
        last_quantity=parse_decimal(d["Q"]),
        best_bid=parse_decimal(d["b"]),
        best_bid_quantity=parse_decimal(d["B"]),
        best_ask=parse_decimal(d["a"]),
        best_ask_quantity=parse_decimal(d["A"]),
        open_price=parse_decimal(d["o"]),
        high_price=parse_decimal(d["h"]),
        low_price=parse_decimal(d["l"]),
        volume=parse_decimal(d["v"]),
        quote_volume=parse_decimal(d["q"]),
        open_time_ms=_int(d["O"]),
        close_time_ms=_int(d["C"]),
        first_trade_id=_int(d["F"]),
        last_trade_id=_int(d["L"]),
        trade_count=_int(d["n"]),
    )


def _levels(raw: object) -> tuple[PriceLevel, ...]:
    if not isinstance(raw, list):
        raise ValueError("book side is not a list")
    out = []
    for level in raw:
        if not isinstance(level, list) or len(level) < 2:
            raise ValueError("book level is not a [price, quantity] pair")
        out.append(PriceLevel(parse_decimal(level[0]), parse_decimal(level[1])))
    return tuple(out)


def _kline(d: Wire) -> Kline:
    if d.get("e") != "kline":
        raise ValueError(f"event type is {d.get('e')!r}, not 'kline'")
    k = d["k"]
    if not isinstance(k, Mapping):
        raise ValueError("'k' is not an object")
    return Kline(
        symbol=_str(d["s"]),
        interval=_str(k["i"]),
        event_time_ms=_int(d["E"]),
        open_time_ms=_int(k["t"]),
        close_time_ms=_int(k["T"]),
        first_trade_id=_int(k["f"]),
        last_trade_id=_int(k["L"]),
        open_price=parse_decimal(k["o"]),
        close_price=parse_decimal(k["c"]),
        high_price=parse_decimal(k["h"]),
        low_price=parse_decimal(k["l"]),
        volume=parse_decimal(k["v"]),
        quote_volume=parse_decimal(k["q"]),
        taker_buy_volume=parse_decimal(k["V"]),
        taker_buy_quote_volume=parse_decimal(k["Q"]),
        trade_count=_int(k["n"]),
        closed=_bool(k["x"]),
    )


def decode_trade(data: object) -> Trade:
    """Decode a ``<symbol>@trade`` payload."""
    return _guard("trade", _trade, data)


def decode_ticker(data: object) -> Ticker:
    """Decode a ``<symbol>@ticker`` (24hrTicker) payload."""
    return _guard("ticker", _ticker, data)


def decode_kline(data: object) -> Kline:
    """Decode a ``<symbol>@kline_<interval>`` payload."""
    return _guard("kline", _kline, data)


def decode_depth(data: object, *, symbol: str, received_ms: int = 0) -> Depth:
    """Decode a partial-depth payload (``{lastUpdateId, bids, asks}``) for ``symbol``.

    Also accepts the REST ``GET /api/v3/depth`` response, which has the same shape.
    """

    def build(d: Wire) -> Depth:
        return Depth(
            symbol=symbol,
            last_update_id=_int(d["lastUpdateId"]),
            bids=_levels(d["bids"]),
            asks=_levels(d["asks"]),
            received_ms=received_ms,
        )

    return _guard("depth", build, data)


def decode_stream_payload(stream: str, data: object, *, received_ms: int = 0) -> MarketEvent:
    """Decode ``data`` as the payload of market stream ``stream`` (e.g. ``btcusdt@trade``).

    Raises:
        ExchangeProtocolError: unknown or unsupported stream, or a malformed payload.
    """
    name = parse_stream_name(stream)
    if name is None:
        raise ExchangeProtocolError(f"unknown stream name {stream[:80]!r}")
    kind = name.kind
    if kind == "trade":
        return decode_trade(data)
    if kind == "ticker":
        return decode_ticker(data)
    if kind == "partialDepth":
        return decode_depth(data, symbol=name.symbol, received_ms=received_ms)
    if kind == "kline":
        return decode_kline(data)
    raise ExchangeProtocolError(f"stream kind {kind!r} is not decoded by Genesis yet")


def decode_frame(raw: bytes | str, *, received_ms: int = 0) -> tuple[str, MarketEvent]:
    """Decode one combined-stream frame ``{"stream": ..., "data": ...}``.

    Returns:
        The stream name and the decoded event.

    Raises:
        ExchangeProtocolError: invalid JSON, not a combined frame, or a malformed payload.
    """
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ExchangeProtocolError(f"invalid JSON frame: {exc}") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("stream"), str) or "data" not in obj:
        raise ExchangeProtocolError("not a combined-stream frame")
    stream: str = obj["stream"]
    return stream, decode_stream_payload(stream, obj["data"], received_ms=received_ms)


def decimal_to_wire(value: Decimal) -> str:
    """Plain positional notation, never exponent form (``str(Decimal("0.00000000"))`` is '0E-8')."""
    return format(value, "f")


def _unstructure_value(value: object) -> object:
    if isinstance(value, Decimal):
        return decimal_to_wire(value)
    if isinstance(value, tuple):
        return [_unstructure_value(v) for v in value]
    if isinstance(value, PriceLevel):
        return [decimal_to_wire(value.price), decimal_to_wire(value.quantity)]
    return value


def event_to_record(event: object) -> dict[str, object]:
    """A JSON-ready dict ``{"type": "<EventClass>", "symbol": ..., <fields>}``.

    Decimals become strings (exact, never floats); book levels become ``[price, qty]`` pairs.
    Works for any attrs event class.
    """
    cls = type(event)
    if not attrs.has(cls):
        raise TypeError(f"not an attrs event: {cls.__name__}")
    record: dict[str, object] = {"type": cls.__name__}
    for field in attrs.fields(cls):
        record[field.name] = _unstructure_value(getattr(event, field.name))
    return record


def make_converter() -> cattrs.Converter:
    """A cattrs converter holding Binance's wire rules for the market events.

    ``converter.structure(payload, Trade)`` etc. use the same hand-written decoders as the
    hot path; Decimals structure from strings and unstructure to strings.
    """
    converter = cattrs.Converter()
    converter.register_structure_hook(Decimal, lambda v, _t: parse_decimal(v))
    converter.register_unstructure_hook(Decimal, decimal_to_wire)
    converter.register_structure_hook(Trade, lambda v, _t: decode_trade(v))
    converter.register_structure_hook(Ticker, lambda v, _t: decode_ticker(v))
    converter.register_structure_hook(Kline, lambda v, _t: decode_kline(v))
    return converter


# --- REST: requests, responses, errors, usage headers ----------------------------------------


def decode_json(raw: bytes | str, *, what: str) -> object:
    """Parse a JSON body; invalid JSON raises :class:`ExchangeProtocolError` naming ``what``."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ExchangeProtocolError(f"{what}: invalid JSON: {exc}") from exc


def decode_error_body(raw: bytes) -> tuple[int, str] | None:
    """Binance's error body ``{"code": -1121, "msg": "Invalid symbol."}``, or ``None``.

    Anything else (HTML from a proxy, an empty body, a JSON object without an integer code)
    gives ``None``: the caller reports the HTTP status instead.
    """
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, Mapping):
        return None
    code, msg = obj.get("code"), obj.get("msg")
    if not isinstance(code, int) or isinstance(code, bool):
        return None
    return code, msg if isinstance(msg, str) else ""


_BANNED_UNTIL: Final = re.compile(r"banned until (\d{12,16})")


def parse_ban_until_ms(msg: str) -> int | None:
    """The epoch ms in -1003 "Way too much request weight used; IP banned until %s.", if any."""
    match = _BANNED_UNTIL.search(msg)
    return int(match.group(1)) if match else None


@attrs.frozen
class UsageReport:
    """One usage header: ``used`` of the bucket ``(type, window_ms)`` in its current window."""

    type: RateLimitType
    window_ms: int
    used: int


_USAGE_PREFIXES: Final = (
    ("x-mbx-used-weight-", RateLimitType.REQUEST_WEIGHT),
    ("x-mbx-order-count-", RateLimitType.ORDERS),
)
_UNIT_MS: Final = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_usage_headers(headers: Iterable[tuple[str, str]]) -> list[UsageReport]:
    """The ``X-MBX-USED-WEIGHT-(n)(unit)`` and ``X-MBX-ORDER-COUNT-(n)(unit)`` headers.

    Header names are case-insensitive; malformed ones (no interval, a non-integer value) are
    skipped, as is the legacy ``X-MBX-USED-WEIGHT`` without an interval.
    """
    reports: list[UsageReport] = []
    for name, value in headers:
        lowered = name.lower()
        for prefix, kind in _USAGE_PREFIXES:
            if not lowered.startswith(prefix):
                continue
            interval = lowered[len(prefix) :]
            unit_ms = _UNIT_MS.get(interval[-1:])
            number = interval[:-1]
            if unit_ms is None or not number.isdigit() or not value.strip().isdigit():
                break
            reports.append(UsageReport(kind, int(number) * unit_ms, int(value.strip())))
            break
    return reports


def order_request_params(
    request: OrderRequest, *, client_order_id: str, response_type: str = "FULL"
) -> list[tuple[str, str]]:
    """``POST /api/v3/order`` parameters for ``request`` (without timestamp and signature).

    Decimals are written in plain positional notation, never exponent form.
    """
    params = [
        ("symbol", request.symbol),
        ("side", request.side.value),
        ("type", request.type.value),
    ]
    if request.time_in_force is not None:
        params.append(("timeInForce", request.time_in_force.value))
    if request.quantity is not None:
        params.append(("quantity", decimal_to_wire(request.quantity)))
    if request.quote_order_qty is not None:
        params.append(("quoteOrderQty", decimal_to_wire(request.quote_order_qty)))
    if request.price is not None:
        params.append(("price", decimal_to_wire(request.price)))
    if request.stop_price is not None:
        params.append(("stopPrice", decimal_to_wire(request.stop_price)))
    params.append(("newClientOrderId", client_order_id))
    params.append(("newOrderRespType", response_type))
    return params


def decode_server_time(data: object) -> int:
    """``GET /api/v3/time``: ``{"serverTime": 1499827319559}`` → epoch ms."""
    return _guard("time", lambda d: _int(d["serverTime"]), data)


def _optional_decimal(value: object) -> Decimal | None:
    if value is None:
        return None
    result = parse_decimal(value)
    return result if result > 0 else None


def _fill(d: object) -> Fill:
    if not isinstance(d, Mapping):
        raise ValueError("fill is not an object")
    asset = d.get("commissionAsset")
    return Fill(
        price=parse_decimal(d["price"]),
        quantity=parse_decimal(d["qty"]),
        commission=parse_decimal(d["commission"]),
        commission_asset=asset if isinstance(asset, str) else None,
        trade_id=_int(d["tradeId"]),
    )


def _order(
    d: Wire,
    request: OrderRequest | None,
    latency_ms: float | None = None,
    expected_price: Decimal | None = None,
) -> Order:
    client_order_id = _str(d.get("origClientOrderId") or d["clientOrderId"])
    symbol = _str(d["symbol"])
    transact_ms = d.get("transactTime", d.get("updateTime", d.get("time", 0)))
    # A cancel answer's transactTime is the cancel's, not the order's creation (unknown: 0).
    created_default = 0 if "origClientOrderId" in d else transact_ms
    created_ms = _int(d.get("time", created_default))
    updated_ms = _int(d.get("updateTime", transact_ms))
    if "status" not in d:
        # An ACK carries only ids and a time: the rest is what was asked for.
        if request is None:
            raise ValueError("an ACK response needs the request it answers")
        return Order.from_request(
            request,
            client_order_id=client_order_id,
            exchange_order_id=_int(d["orderId"]),
            created_ms=created_ms,
            updated_ms=updated_ms,
            latency_ms=latency_ms,
        )
    status = _str(d["status"])
    order_type = OrderType(_str(d["type"]))
    tif = d.get("timeInForce")
    fills = d.get("fills", [])
    if not isinstance(fills, list):
        raise ValueError("'fills' is not a list")
    side = OrderSide(_str(d["side"]))
    filled = parse_decimal(d["executedQty"])
    quote_filled = max(parse_decimal(d["cummulativeQuoteQty"]), Decimal(0))
    average = quote_filled / filled if filled > 0 else None
    return Order(
        client_order_id=client_order_id,
        exchange_order_id=_int(d["orderId"]),
        symbol=symbol,
        type=order_type,
        side=side,
        price=_optional_decimal(d.get("price")) if order_type.has_price else None,
        stop_price=(_optional_decimal(d.get("stopPrice")) if order_type.has_stop_price else None),
        quantity=parse_decimal(d["origQty"]),
        filled_quantity=filled,
        quote_filled_quantity=quote_filled,
        time_in_force=TimeInForce(tif) if isinstance(tif, str) and tif else None,
        status=OrderStatus.from_binance(status),
        exchange_status=status,
        fills=tuple(_fill(f) for f in fills),
        created_ms=created_ms,
        updated_ms=updated_ms,
        latency_ms=latency_ms,
        slippage_percent=slippage_percent(side, expected_price, average),
    )


def decode_order(
    data: object,
    *,
    request: OrderRequest | None = None,
    latency_ms: float | None = None,
    expected_price: Decimal | None = None,
) -> Order:
    """An order from any REST order answer: place (ACK/RESULT/FULL), query, cancel.

    For a cancel answer the order's client id is ``origClientOrderId`` (``clientOrderId`` is the
    cancel request's own id). ``request`` fills in what an ACK leaves out; ``latency_ms`` and
    ``expected_price`` (for ``slippage_percent``) are the caller's measurements.
    """
    return _guard("order", lambda d: _order(d, request, latency_ms, expected_price), data)


def decode_orders(data: object) -> tuple[Order, ...]:
    """A JSON array of orders (``openOrders``, ``DELETE openOrders``); order lists are skipped."""
    if not isinstance(data, list):
        raise ExchangeProtocolError(f"orders: expected a JSON array, got {type(data).__name__}")
    return tuple(
        decode_order(item)
        for item in data
        if not (isinstance(item, Mapping) and "orderReports" in item)
    )


def _filters(raw: object) -> SymbolFilters:
    if not isinstance(raw, list):
        raise ValueError("'filters' is not a list")
    fields: dict[str, Decimal | bool | int | None] = {}
    for f in raw:
        if not isinstance(f, Mapping):
            raise ValueError("filter is not an object")
        kind = f.get("filterType")
        if kind == "PRICE_FILTER":
            fields["min_price"] = parse_decimal(f["minPrice"])
            fields["max_price"] = parse_decimal(f["maxPrice"])
            fields["tick_size"] = parse_decimal(f["tickSize"])
        elif kind == "LOT_SIZE":
            fields["min_qty"] = parse_decimal(f["minQty"])
            fields["max_qty"] = parse_decimal(f["maxQty"])
            fields["step_size"] = parse_decimal(f["stepSize"])
        elif kind == "MARKET_LOT_SIZE":
            fields["market_min_qty"] = parse_decimal(f["minQty"])
            fields["market_max_qty"] = parse_decimal(f["maxQty"])
            fields["market_step_size"] = parse_decimal(f["stepSize"])
        elif kind == "NOTIONAL":
            fields["min_notional"] = parse_decimal(f["minNotional"])
            fields["max_notional"] = parse_decimal(f["maxNotional"])
            fields["apply_min_to_market"] = _bool(f.get("applyMinToMarket", True))
            fields["apply_max_to_market"] = _bool(f.get("applyMaxToMarket", False))
        elif kind == "MIN_NOTIONAL" and "min_notional" not in fields:
            fields["min_notional"] = parse_decimal(f["minNotional"])
            fields["apply_min_to_market"] = _bool(f.get("applyToMarket", True))
        elif kind == "PERCENT_PRICE_BY_SIDE":
            fields["bid_multiplier_up"] = parse_decimal(f["bidMultiplierUp"])
            fields["bid_multiplier_down"] = parse_decimal(f["bidMultiplierDown"])
            fields["ask_multiplier_up"] = parse_decimal(f["askMultiplierUp"])
            fields["ask_multiplier_down"] = parse_decimal(f["askMultiplierDown"])
        elif kind == "MAX_NUM_ORDERS":
            fields["max_num_orders"] = _int(f.get("maxNumOrders", f.get("limit")))
    return SymbolFilters(**fields)  # type: ignore[arg-type]  # keys are SymbolFilters fields


def _symbol_info(d: object) -> SymbolInfo:
    if not isinstance(d, Mapping):
        raise ValueError("symbol entry is not an object")
    order_types = d.get("orderTypes", [])
    if not isinstance(order_types, list):
        raise ValueError("'orderTypes' is not a list")
    return SymbolInfo(
        symbol=_str(d["symbol"]),
        status=_str(d["status"]),
        base_asset=_str(d["baseAsset"]),
        quote_asset=_str(d["quoteAsset"]),
        base_asset_precision=_int(d["baseAssetPrecision"]),
        quote_asset_precision=_int(d.get("quoteAssetPrecision", d.get("quotePrecision"))),
        order_types=frozenset(_str(t) for t in order_types),
        filters=_filters(d["filters"]),
    )


def _rate_limit(d: object) -> RateLimit | None:
    if not isinstance(d, Mapping):
        raise ValueError("rate limit entry is not an object")
    try:
        kind = RateLimitType(d["rateLimitType"])
    except ValueError:
        return None  # a limit type Genesis does not know: Binance adds them
    return RateLimit(
        type=kind,
        interval=_str(d["interval"]),
        interval_num=_int(d["intervalNum"]),
        limit=_int(d["limit"]),
    )


def _exchange_info(d: Wire) -> ExchangeInfo:
    limits = d["rateLimits"]
    symbols = d["symbols"]
    if not isinstance(limits, list) or not isinstance(symbols, list):
        raise ValueError("'rateLimits' and 'symbols' must be lists")
    decoded = (_rate_limit(entry) for entry in limits)
    infos = [_symbol_info(entry) for entry in symbols]
    return ExchangeInfo(
        server_time_ms=_int(d["serverTime"]),
        rate_limits=tuple(limit for limit in decoded if limit is not None),
        symbols={info.symbol: info for info in infos},
    )


def decode_exchange_info(data: object) -> ExchangeInfo:
    """``GET /api/v3/exchangeInfo``: rate limits and each symbol's trading rules."""
    return _guard("exchangeInfo", _exchange_info, data)


def _account(d: Wire) -> Account:
    balances = d["balances"]
    if not isinstance(balances, list):
        raise ValueError("'balances' is not a list")
    decoded: dict[str, Balance] = {}
    for b in balances:
        if not isinstance(b, Mapping):
            raise ValueError("balance is not an object")
        asset = _str(b["asset"])
        decoded[asset] = Balance(
            asset=asset, free=parse_decimal(b["free"]), locked=parse_decimal(b["locked"])
        )
    return Account(
        can_trade=_bool(d["canTrade"]),
        can_withdraw=_bool(d["canWithdraw"]),
        can_deposit=_bool(d["canDeposit"]),
        account_type=_str(d["accountType"]),
        update_time_ms=_int(d["updateTime"]),
        balances=decoded,
    )


def decode_account(data: object) -> Account:
    """``GET /api/v3/account``."""
    return _guard("account", _account, data)


def _my_trade(d: object) -> AccountTrade:
    if not isinstance(d, Mapping):
        raise ValueError("trade is not an object")
    return AccountTrade(
        symbol=_str(d["symbol"]),
        trade_id=_int(d["id"]),
        order_id=_int(d["orderId"]),
        price=parse_decimal(d["price"]),
        quantity=parse_decimal(d["qty"]),
        quote_quantity=parse_decimal(d["quoteQty"]),
        commission=parse_decimal(d["commission"]),
        commission_asset=_str(d["commissionAsset"]),
        time_ms=_int(d["time"]),
        is_buyer=_bool(d["isBuyer"]),
        is_maker=_bool(d["isMaker"]),
    )


def decode_my_trades(data: object) -> tuple[AccountTrade, ...]:
    """``GET /api/v3/myTrades``: the account's trades, oldest first as Binance sends them."""
    if not isinstance(data, list):
        raise ExchangeProtocolError(f"myTrades: expected a JSON array, got {type(data).__name__}")
    try:
        return tuple(_my_trade(item) for item in data)
    except KeyError as exc:
        raise ExchangeProtocolError(f"myTrades: missing key {exc.args[0]!r}") from exc
    except (ValueError, TypeError) as exc:
        raise ExchangeProtocolError(f"myTrades: {exc}") from exc


# --- user data stream (WebSocket API): requests, responses, wrapped events --------------------
#
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
