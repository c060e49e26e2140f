"""REST: order requests out; orders, exchangeInfo, account, trades, errors, usage headers in."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Final, TypeVar

import attrs
import orjson

from genesis.errors import ExchangeProtocolError
from genesis.models.account import Account, AccountTrade, Balance
from genesis.models.codec._wire import (
    _bool,
    _guard,
    _int,
    _optional_decimal,
    _str,
    decimal_to_wire,
    parse_decimal,
)
from genesis.models.exchange_info import (
    ExchangeInfo,
    RateLimit,
    RateLimitType,
    SymbolFilters,
    SymbolInfo,
)
from genesis.models.market import Kline, Trade
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

if TYPE_CHECKING:
    from genesis.models.codec._wire import Wire

_T = TypeVar("_T")

__all__ = [
    "UsageReport",
    "decode_account",
    "decode_error_body",
    "decode_exchange_info",
    "decode_historical_trades",
    "decode_klines",
    "decode_my_trades",
    "decode_order",
    "decode_orders",
    "decode_server_time",
    "order_request_params",
    "parse_ban_until_ms",
    "parse_usage_headers",
]


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


def _array(what: str, data: object, decode: Callable[[object], _T]) -> tuple[_T, ...]:
    if not isinstance(data, list):
        raise ExchangeProtocolError(f"{what}: expected a JSON array, got {type(data).__name__}")
    try:
        return tuple(decode(item) for item in data)
    except (KeyError, IndexError) as exc:
        raise ExchangeProtocolError(f"{what}: missing key {exc.args[0]!r}") from exc
    except (ValueError, TypeError) as exc:
        raise ExchangeProtocolError(f"{what}: {exc}") from exc


def decode_historical_trades(data: object, *, symbol: str) -> tuple[Trade, ...]:
    """``GET /api/v3/historicalTrades`` rows (``id, price, qty, quoteQty, time, isBuyerMaker,
    isBestMatch``) as the stream's :class:`Trade` events of ``symbol``, oldest first.

    REST has no event time: a backfilled trade carries its trade time in both fields.
    """

    def trade(d: object) -> Trade:
        if not isinstance(d, Mapping):
            raise ValueError("trade is not an object")
        time_ms = _int(d["time"])
        return Trade(
            symbol=symbol,
            trade_id=_int(d["id"]),
            price=parse_decimal(d["price"]),
            quantity=parse_decimal(d["qty"]),
            trade_time_ms=time_ms,
            event_time_ms=time_ms,
            buyer_is_maker=_bool(d["isBuyerMaker"]),
        )

    return _array("historicalTrades", data, trade)


def decode_klines(data: object, *, symbol: str, interval: str, now_ms: int) -> tuple[Kline, ...]:
    """``GET /api/v3/klines`` 12-element arrays as :class:`Kline` events, oldest first.

    A kline whose close time is before ``now_ms`` is ``closed`` (its event time is its close
    time); the last row is usually the kline still open. REST gives no trade ids: ``-1``, as
    the stream sends for a kline without trades.
    """

    def kline(row: object) -> Kline:
        if not isinstance(row, list) or len(row) < 11:
            raise ValueError("kline is not a 12-element array")
        close_ms = _int(row[6])
        return Kline(
            symbol=symbol,
            interval=interval,
            event_time_ms=min(close_ms, now_ms),
            open_time_ms=_int(row[0]),
            close_time_ms=close_ms,
            first_trade_id=-1,
            last_trade_id=-1,
            open_price=parse_decimal(row[1]),
            high_price=parse_decimal(row[2]),
            low_price=parse_decimal(row[3]),
            close_price=parse_decimal(row[4]),
            volume=parse_decimal(row[5]),
            quote_volume=parse_decimal(row[7]),
            trade_count=_int(row[8]),
            taker_buy_volume=parse_decimal(row[9]),
            taker_buy_quote_volume=parse_decimal(row[10]),
            closed=close_ms < now_ms,
        )

    return _array("klines", data, kline)
