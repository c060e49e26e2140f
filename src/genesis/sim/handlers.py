"""One implementation of each Binance query, for both transports (REST and the WS API).

A handler takes a :class:`Call` (the exchange, the limiter, the request's :class:`Params`, the
time and the authenticated account) and returns the JSON-ready result, or raises
:class:`~genesis.sim.errors.SimReject`. It knows nothing of HTTP or WebSocket frames:
:mod:`genesis.sim.rest` answers it as an HTTP body, :mod:`genesis.sim.ws_api` as a ``result``.
So ``GET /api/v3/depth`` and the WS API's ``depth`` read the same parameters, charge the same
weight (:func:`request_weight`), answer the same shape and fail with the same errors.

:data:`HANDLERS` is keyed like :data:`genesis.exchange.endpoints.ENDPOINTS` (method, path);
:func:`routes_for` pairs the two and refuses, at import, an endpoint without a handler or a
handler without an endpoint.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

import attrs
import orjson

from genesis.exchange.endpoints import (
    API_PREFIX,
    ENDPOINTS,
    Endpoint,
    depth_weight,
    open_orders_weight,
    ticker_weight,
)
from genesis.sim.errors import (
    INVALID_PARAMETER,
    INVALID_SYMBOLSTATUS,
    INVALID_TICKER_TYPE,
    MANDATORY_PARAM_EMPTY_OR_MALFORMED,
    MSG_INVALID_PARAMETER,
    MSG_MANDATORY_PARAM,
    OPTIONAL_PARAMS_BAD_COMBO,
    SYMBOL_DOES_NOT_MATCH_STATUS,
    UNSUPPORTED_OPERATION,
    SimReject,
)
from genesis.sim.exchange import (
    OrderResult,
    account_trade_to_wire,
    order_to_wire,
    result_to_wire,
)
from genesis.sim.params import UINT_RE, Params, count_symbols, symbol_list
from genesis.sim.symbols import SYMBOL_STATUSES, exchange_info_symbol

if TYPE_CHECKING:
    from genesis.sim.exchange import Exchange, JsonObject
    from genesis.sim.ratelimit import RateLimiter

__all__ = [
    "HANDLERS",
    "ROUTES",
    "Call",
    "Handler",
    "RouteMismatchError",
    "cancel_order_request",
    "place_counted_order",
    "query_order_request",
    "read_order_fields",
    "request_weight",
    "rolling_ticker",
    "rolling_ticker_weight",
    "routes_for",
]

logger = logging.getLogger(__name__)

JsonValue = object

_PERMISSIONS: Final = frozenset(
    {"SPOT", "MARGIN", "LEVERAGED", *(f"TRD_GRP_{i:03d}" for i in range(2, 26))}
)
_ZERO_OFFSETS: Final = frozenset({"0", "+0", "-0", "00:00", "+00:00", "-00:00", "0:00"})
_WINDOW_SIZE: Final = re.compile(r"([1-9][0-9]?)([mhd])")
_WINDOW_LIMITS: Final = {"m": 59, "h": 23, "d": 7}
_ROLLING_MAX_SYMBOLS: Final = 200


@attrs.define(kw_only=True)
class Call:
    """One request as a handler sees it, whichever transport carried it.

    Attributes:
        exchange: The exchange core.
        limiter: The rate limiter (ORDERS windows for order placement and their report).
        params: The request's parameters; the handler reads them and calls
            :meth:`Params.check_all_read`.
        now_ms: Simulator epoch ms of the request.
        api_key: The authenticated account of a signed request (empty otherwise).
        order_counted: Set by a handler once the request reached the ORDERS limits (its
            parameters were read); the transports then report the account's order counts
            (REST ``X-MBX-ORDER-COUNT-*``, WS API ``rateLimits``).
    """

    exchange: Exchange
    limiter: RateLimiter
    params: Params
    now_ms: int
    api_key: str = ""
    order_counted: bool = False


Handler = Callable[[Call], JsonValue]


class RouteMismatchError(RuntimeError):
    """``exchange/endpoints.py`` and :data:`HANDLERS` disagree (raised at import or start)."""


# --- orders: shared by POST /api/v3/order and order.place -------------------------------------


def read_order_fields(params: Params) -> dict[str, str | None]:
    """Read every order-placement parameter; refuse the features the simulator lacks.

    Shared by REST ``POST /api/v3/order`` and the WS API ``order.place``, so both accept the
    same orders.
    """
    if params.get("icebergQty") is not None:
        raise SimReject(-2010, "Iceberg orders are not supported for this symbol.")
    if params.get("trailingDelta") is not None:
        raise SimReject(-2010, "Trailing stop orders are not supported for this symbol.")
    for name in ("pegPriceType", "pegOffsetValue", "pegOffsetType"):
        if params.get(name) is not None:
            raise SimReject(UNSUPPORTED_OPERATION)
    stp = params.get("selfTradePreventionMode")
    if stp is not None and stp != "NONE":
        # exchangeInfo lists allowedSelfTradePreventionModes ["NONE"] only.
        raise SimReject.of(INVALID_PARAMETER, MSG_INVALID_PARAMETER, "selfTradePreventionMode")
    params.get("strategyId")  # accepted and ignored (not echoed back)
    params.get("strategyType")
    return {
        "symbol": params.symbol(required=False),
        "side": params.get("side"),
        "type": params.get("type"),
        "quantity": params.get("quantity"),
        "quote_order_qty": params.get("quoteOrderQty"),
        "price": params.get("price"),
        "stop_price": params.get("stopPrice"),
        "time_in_force": params.get("timeInForce"),
        "new_client_order_id": params.get("newClientOrderId"),
        "new_order_resp_type": params.get("newOrderRespType"),
    }


def _place(
    exchange: Exchange,
    api_key: str,
    fields: Mapping[str, str | None],
    *,
    now_ms: int,
    test: bool = False,
) -> OrderResult:
    """:meth:`Exchange.place_order` with what :func:`read_order_fields` read."""
    return exchange.place_order(
        api_key,
        symbol=fields["symbol"],
        side=fields["side"],
        type=fields["type"],
        quantity=fields["quantity"],
        quote_order_qty=fields["quote_order_qty"],
        price=fields["price"],
        stop_price=fields["stop_price"],
        time_in_force=fields["time_in_force"],
        new_client_order_id=fields["new_client_order_id"],
        new_order_resp_type=fields["new_order_resp_type"],
        now_ms=now_ms,
        test=test,
    )


def place_counted_order(
    exchange: Exchange,
    limiter: RateLimiter,
    api_key: str,
    fields: Mapping[str, str | None],
    *,
    now_ms: int,
) -> OrderResult:
    """Place an order that ``limiter.admit_order`` already counted, keeping ORDERS exact.

    Shared by REST ``POST /api/v3/order`` and the WS API ``order.place``. Binance counts the
    orders that reach the matching engine and are not filled: a rejection before the engine
    (any code but -2010) and a first fill during placement both take the order back out.

    Args:
        exchange: Where the order goes.
        limiter: The limiter that admitted it.
        api_key: The account.
        fields: From :func:`read_order_fields`.
        now_ms: Simulator time of the request.

    Raises:
        SimReject: The exchange refused the order.
    """
    try:
        result = _place(exchange, api_key, fields, now_ms=now_ms)
    except SimReject as exc:
        if exc.code != -2010:
            limiter.uncount_order(api_key, now_ms)
        raise
    if result.first_fill:
        limiter.order_filled(api_key, now_ms)
    return result


def query_order_request(exchange: Exchange, api_key: str, params: Params) -> JsonObject:
    """Answer ``GET /api/v3/order`` (WS API ``order.status``): the order's ``GET`` row.

    Reads ``symbol``, ``orderId`` and ``origClientOrderId`` (nothing else may be sent).

    Raises:
        SimReject: A parameter is missing, malformed or not read.
        SimReject: The exchange knows no such order.
    """
    symbol = params.require_symbol()
    order_id = params.uint("orderId")
    client_id = params.get("origClientOrderId")
    params.check_all_read()
    order = exchange.query_order(
        api_key, symbol=symbol, order_id=order_id, orig_client_order_id=client_id
    )
    return order_to_wire(order, "GET")


def cancel_order_request(
    exchange: Exchange, api_key: str, params: Params, *, now_ms: int
) -> JsonObject:
    """Answer ``DELETE /api/v3/order`` (WS API ``order.cancel``): the canceled order's row.

    Reads ``symbol``, ``orderId``, ``origClientOrderId``, ``newClientOrderId`` and
    ``cancelRestrictions`` (nothing else may be sent).

    Raises:
        SimReject: A parameter is missing, malformed or not read.
        SimReject: The exchange refused the cancel.
    """
    symbol = params.require_symbol()
    order_id = params.uint("orderId")
    client_id = params.get("origClientOrderId")
    new_client_id = params.get("newClientOrderId")
    restrictions = params.get("cancelRestrictions")
    params.check_all_read()
    order = exchange.cancel_order(
        api_key,
        symbol=symbol,
        order_id=order_id,
        orig_client_order_id=client_id,
        new_client_order_id=new_client_id,
        cancel_restrictions=restrictions,
        now_ms=now_ms,
    )
    return order_to_wire(order, "CANCEL")


def request_weight(endpoint: Endpoint, values: Mapping[str, str]) -> int:
    """The request weight Binance charges, from parameters where it depends on them.

    Never raises: malformed parameters fall back to the endpoint's base weight (the parameter
    error is reported after the weight was counted).
    """
    name = endpoint.path[len(API_PREFIX) + 1 :]
    if name == "depth":
        raw = values.get("limit", "100")
        limit = int(raw) if UINT_RE.fullmatch(raw) else 100
        return depth_weight(min(max(limit, 1), 5000))
    if name == "ticker/24hr":
        if "symbol" in values:
            return ticker_weight(1)
        if "symbols" in values:
            count = count_symbols(values["symbols"])
            return ticker_weight(count if count is not None else 1)
        return ticker_weight(None)
    if name in ("ticker/price", "ticker/bookTicker"):
        return 2 if "symbol" in values else 4
    if name == "openOrders" and endpoint.method == "GET":
        return open_orders_weight(with_symbol="symbol" in values)
    if name == "myTrades":
        return 5 if "orderId" in values else endpoint.weight
    if name == "order/test":
        return 20 if values.get("computeCommissionRates", "").lower() == "true" else 1
    return endpoint.weight


# --- general ------------------------------------------------------------------------------


def ping(call: Call) -> JsonValue:
    call.params.check_all_read()
    return {}


def server_time(call: Call) -> JsonValue:
    call.params.check_all_read()
    return {"serverTime": call.now_ms}


def exchange_info(call: Call) -> JsonValue:
    params = call.params
    symbol = params.symbol(required=False)
    symbols = symbol_list(params)
    permissions = _permissions(params)
    show_sets = params.boolean("showPermissionSets", default=True)
    status = params.get("symbolStatus")
    params.check_all_read()
    if symbol is not None and symbols is not None:
        raise SimReject(OPTIONAL_PARAMS_BAD_COMBO)
    if status is not None:
        if status not in SYMBOL_STATUSES:
            raise SimReject(INVALID_SYMBOLSTATUS)
        if symbol is not None or symbols is not None:
            raise SimReject(OPTIONAL_PARAMS_BAD_COMBO)
    wanted = [symbol] if symbol is not None else symbols
    if wanted is not None:
        specs = [call.exchange.spec(name) for name in wanted]
    else:
        specs = call.exchange.symbol_specs()
    infos: list[dict[str, object]] = []
    for spec in specs:
        if status is not None and spec.status != status:
            continue
        info = exchange_info_symbol(spec)
        sets = info.get("permissionSets")
        flat = (
            {p for group in sets if isinstance(group, list) for p in group}
            if isinstance(sets, list)
            else set()
        )
        if permissions is not None and not flat & permissions:
            continue
        if not show_sets:
            info["permissionSets"] = []
        infos.append(info)
    return {
        "timezone": "UTC",
        "serverTime": call.now_ms,
        "rateLimits": call.limiter.rate_limits_wire(),
        "exchangeFilters": [],
        "symbols": infos,
    }


def _permissions(params: Params) -> set[str] | None:
    raw = params.get("permissions")
    if raw is None:
        return None
    values: list[str]
    if raw.startswith("["):
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, list) or not parsed:
            raise SimReject.of(INVALID_PARAMETER, MSG_INVALID_PARAMETER, "permissions")
        values = [str(item) for item in parsed]
    else:
        values = [raw]
    if not set(values) <= _PERMISSIONS:
        raise SimReject.of(INVALID_PARAMETER, MSG_INVALID_PARAMETER, "permissions")
    return set(values)


# --- market data ------------------------------------------------------------------------


def _check_symbol_status(exchange: Exchange, symbol: str, status: str | None) -> None:
    if status is None:
        return
    if status not in SYMBOL_STATUSES:
        raise SimReject(INVALID_SYMBOLSTATUS)
    if exchange.spec(symbol).status != status:
        raise SimReject(SYMBOL_DOES_NOT_MATCH_STATUS)


def depth(call: Call) -> JsonValue:
    params = call.params
    symbol = params.require_symbol()
    limit = params.limit(100, 5000)
    status = params.get("symbolStatus")
    params.check_all_read()
    _check_symbol_status(call.exchange, symbol, status)
    return call.exchange.depth(symbol, limit)


def trades(call: Call) -> JsonValue:
    params = call.params
    symbol = params.require_symbol()
    limit = params.limit(500, 1000)
    params.check_all_read()
    return call.exchange.recent_trades(symbol, limit)


def historical_trades(call: Call) -> JsonValue:
    params = call.params
    symbol = params.require_symbol()
    limit = params.limit(500, 1000)
    from_id = params.uint("fromId")
    params.check_all_read()
    return call.exchange.historical_trades(symbol, limit, from_id)


def agg_trades(call: Call) -> JsonValue:
    params = call.params
    symbol = params.require_symbol()
    from_id = params.uint("fromId")
    start = params.uint("startTime")
    end = params.uint("endTime")
    limit = params.limit(500, 1000)
    params.check_all_read()
    return call.exchange.agg_trades(
        symbol,
        from_id=from_id,
        start_time=start,
        end_time=end,
        limit=limit,
    )


def klines(call: Call) -> JsonValue:
    params = call.params
    symbol = params.require_symbol()
    interval = params.require("interval")
    start = params.uint("startTime")
    end = params.uint("endTime")
    limit = params.limit(500, 1000)
    time_zone = params.get("timeZone")
    params.check_all_read()
    if time_zone is not None and time_zone not in _ZERO_OFFSETS:
        # Only UTC klines are simulated; Binance would shift the interval boundaries.
        raise SimReject(UNSUPPORTED_OPERATION)
    return call.exchange.klines(
        symbol,
        interval,
        start_time=start,
        end_time=end,
        limit=limit,
        now_ms=call.now_ms,
    )


def avg_price(call: Call) -> JsonValue:
    params = call.params
    symbol = params.require_symbol()
    params.check_all_read()
    return call.exchange.avg_price(symbol, now_ms=call.now_ms)


def _symbols_selection(exchange: Exchange, params: Params) -> tuple[list[str], bool]:
    """(symbols, single): ``symbol`` → one object; ``symbols`` / nothing → an array.

    ``symbolStatus`` (TRADING, HALT, BREAK): a single symbol in another status is -1220; from
    several or all symbols, the others are left out (web-socket-api.md, rest-api.md).
    """
    symbol = params.symbol(required=False)
    symbols = symbol_list(params)
    status = params.get("symbolStatus")
    if symbol is not None and symbols is not None:
        raise SimReject(OPTIONAL_PARAMS_BAD_COMBO)
    if status is not None and status not in SYMBOL_STATUSES:
        raise SimReject(INVALID_SYMBOLSTATUS)
    if symbol is not None:
        _check_symbol_status(exchange, symbol, status)
        return [symbol], True
    if symbols is not None:
        names = [exchange.spec(name).symbol for name in symbols]
    else:
        names = [spec.symbol for spec in exchange.symbol_specs()]
    if status is not None:
        names = [name for name in names if exchange.spec(name).status == status]
    return names, False


def ticker_24hr(call: Call) -> JsonValue:
    params = call.params
    names, single = _symbols_selection(call.exchange, params)
    kind = params.get("type") or "FULL"
    params.check_all_read()
    if kind not in ("FULL", "MINI"):
        raise SimReject(INVALID_TICKER_TYPE)
    rows = [
        call.exchange.ticker_24hr(name, now_ms=call.now_ms, mini=kind == "MINI") for name in names
    ]
    return rows[0] if single else rows


def ticker_price(call: Call) -> JsonValue:
    names, single = _symbols_selection(call.exchange, call.params)
    call.params.check_all_read()
    rows = [call.exchange.ticker_price(name) for name in names]
    return rows[0] if single else rows


def book_ticker(call: Call) -> JsonValue:
    names, single = _symbols_selection(call.exchange, call.params)
    call.params.check_all_read()
    rows = [call.exchange.book_ticker(name) for name in names]
    return rows[0] if single else rows


# --- trading ----------------------------------------------------------------------------


def new_order(call: Call) -> JsonValue:
    """``POST /api/v3/order`` / ``order.place``: admitted in ORDERS, then placed.

    Raises:
        SimReject: -1015 (429) over an ORDERS limit; the exchange's refusal otherwise.
    """
    fields = read_order_fields(call.params)
    call.params.check_all_read()
    call.order_counted = True
    call.limiter.admit_order(call.api_key, call.now_ms)
    result = place_counted_order(
        call.exchange, call.limiter, call.api_key, fields, now_ms=call.now_ms
    )
    logger.debug(
        "sim.order_placed symbol=%s order_id=%d status=%s",
        result.order.symbol,
        result.order.order_id,
        result.order.status,
    )
    return result_to_wire(result)


def test_order(call: Call) -> JsonValue:
    fields = read_order_fields(call.params)
    commission = call.params.boolean("computeCommissionRates")
    call.params.check_all_read()
    _place(call.exchange, call.api_key, fields, now_ms=call.now_ms, test=True)
    if not commission:
        return {}
    account = call.exchange.account(call.api_key, now_ms=call.now_ms)
    rates = account.get("commissionRates")
    maker = taker = "0.00000000"
    if isinstance(rates, dict):
        maker = str(rates.get("maker", maker))
        taker = str(rates.get("taker", taker))
    zero = "0.00000000"
    return {
        "standardCommissionForOrder": {"maker": maker, "taker": taker},
        "specialCommissionForOrder": {"maker": zero, "taker": zero},
        "taxCommissionForOrder": {"maker": zero, "taker": zero},
        "discount": {
            "enabledForAccount": False,
            "enabledForSymbol": False,
            "discountAsset": "BNB",
            "discount": zero,
        },
    }


def query_order(call: Call) -> JsonValue:
    return query_order_request(call.exchange, call.api_key, call.params)


def cancel_order(call: Call) -> JsonValue:
    return cancel_order_request(call.exchange, call.api_key, call.params, now_ms=call.now_ms)


def open_orders(call: Call) -> JsonValue:
    params = call.params
    symbol = params.symbol(required=False)
    params.check_all_read()
    if symbol is not None:
        call.exchange.spec(symbol)
    return [
        order_to_wire(order, "GET") for order in call.exchange.open_orders(call.api_key, symbol)
    ]


def cancel_open_orders(call: Call) -> JsonValue:
    params = call.params
    symbol = params.require_symbol()
    params.check_all_read()
    orders = call.exchange.cancel_all(call.api_key, symbol=symbol, now_ms=call.now_ms)
    return [order_to_wire(order, "CANCEL") for order in orders]


def _history_query(call: Call) -> tuple[str, int | None, int | None, int | None]:
    """``symbol``, ``orderId``, ``startTime``, ``endTime`` of an order or trade history query,
    read in Binance's order (the first bad one is the error)."""
    params = call.params
    return (
        params.require_symbol(),
        params.uint("orderId"),
        params.uint("startTime"),
        params.uint("endTime"),
    )


def all_orders(call: Call) -> JsonValue:
    params = call.params
    symbol, order_id, start, end = _history_query(call)
    limit = params.limit(500, 1000)
    params.check_all_read()
    orders = call.exchange.all_orders(
        call.api_key,
        symbol,
        order_id=order_id,
        start_time=start,
        end_time=end,
        limit=limit,
    )
    return [order_to_wire(order, "GET") for order in orders]


def account(call: Call) -> JsonValue:
    params = call.params
    omit = params.boolean("omitZeroBalances")
    params.check_all_read()
    return call.exchange.account(call.api_key, now_ms=call.now_ms, omit_zero_balances=omit)


def my_trades(call: Call) -> JsonValue:
    params = call.params
    symbol, order_id, start, end = _history_query(call)
    from_id = params.uint("fromId")
    limit = params.limit(500, 1000)
    params.check_all_read()
    trades = call.exchange.my_trades(
        call.api_key,
        symbol,
        order_id=order_id,
        from_id=from_id,
        start_time=start,
        end_time=end,
        limit=limit,
    )
    return [account_trade_to_wire(trade) for trade in trades]


def rate_limit_order(call: Call) -> JsonValue:
    call.params.check_all_read()
    return [
        {**limit.to_wire(), "count": count}
        for limit, count in call.limiter.order_counts(call.api_key, call.now_ms)
    ]


# --- rolling window ticker (WS API ``ticker``) --------------------------------------------------

_ROLLING_EXTRA_FIELDS: Final = (
    "prevClosePrice",
    "lastQty",
    "bidPrice",
    "bidQty",
    "askPrice",
    "askQty",
)


def _window_ms(raw: str | None) -> int:
    """``windowSize`` (``1m``..``59m``, ``1h``..``23h``, ``1d``..``7d``; default ``1d``) in ms."""
    if raw is None:
        return 86_400_000
    match = _WINDOW_SIZE.fullmatch(raw)
    if match is None or int(match[1]) > _WINDOW_LIMITS[match[2]]:
        raise SimReject.of(INVALID_PARAMETER, MSG_INVALID_PARAMETER, "windowSize")
    unit_ms = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}[match[2]]
    return int(match[1]) * unit_ms


def rolling_ticker(call: Call) -> JsonValue:
    """WS API ``ticker``: rolling window statistics (``windowSize``, ``type``, ``symbol(s)``).

    Only the 24 h window (``1d``, the default) is kept by the exchange (its minute history is
    24 h deep); any other valid ``windowSize`` is refused with -1020 (a known deviation). The
    24 h answer is ``ticker.24hr``'s without its book and previous-close fields, as documented.
    """
    params = call.params
    if not params.has("symbol") and not params.has("symbols"):
        raise SimReject.of(MANDATORY_PARAM_EMPTY_OR_MALFORMED, MSG_MANDATORY_PARAM, "symbol")
    names, single = _symbols_selection(call.exchange, params)
    kind = params.get("type") or "FULL"
    window_ms = _window_ms(params.get("windowSize"))
    params.check_all_read()
    if kind not in ("FULL", "MINI"):
        raise SimReject(INVALID_TICKER_TYPE)
    if len(names) > _ROLLING_MAX_SYMBOLS:
        raise SimReject.of(INVALID_PARAMETER, MSG_INVALID_PARAMETER, "symbols")
    if window_ms != 86_400_000:
        raise SimReject(UNSUPPORTED_OPERATION)
    rows: list[JsonObject] = []
    for name in names:
        row = call.exchange.ticker_24hr(name, now_ms=call.now_ms, mini=kind == "MINI")
        rows.append({k: v for k, v in row.items() if k not in _ROLLING_EXTRA_FIELDS})
    return rows[0] if single else rows


def rolling_ticker_weight(values: Mapping[str, str]) -> int:
    """4 per symbol, 200 from 51 symbols on (web-socket-api.md, rolling window statistics)."""
    count = 1 if "symbol" in values else (count_symbols(values.get("symbols")) or 1)
    return 200 if count > 50 else 4 * count


# --- the table -------------------------------------------------------------------------------


def _key(method: str, name: str) -> tuple[str, str]:
    return method, f"{API_PREFIX}/{name}"


HANDLERS: Final[Mapping[tuple[str, str], Handler]] = {
    _key("GET", "ping"): ping,
    _key("GET", "time"): server_time,
    _key("GET", "exchangeInfo"): exchange_info,
    _key("GET", "depth"): depth,
    _key("GET", "trades"): trades,
    _key("GET", "historicalTrades"): historical_trades,
    _key("GET", "aggTrades"): agg_trades,
    _key("GET", "klines"): klines,
    _key("GET", "uiKlines"): klines,
    _key("GET", "avgPrice"): avg_price,
    _key("GET", "ticker/24hr"): ticker_24hr,
    _key("GET", "ticker/price"): ticker_price,
    _key("GET", "ticker/bookTicker"): book_ticker,
    _key("POST", "order"): new_order,
    _key("POST", "order/test"): test_order,
    _key("GET", "order"): query_order,
    _key("DELETE", "order"): cancel_order,
    _key("GET", "openOrders"): open_orders,
    _key("DELETE", "openOrders"): cancel_open_orders,
    _key("GET", "allOrders"): all_orders,
    _key("GET", "account"): account,
    _key("GET", "myTrades"): my_trades,
    _key("GET", "rateLimit/order"): rate_limit_order,
}
"""Every REST endpoint the simulator serves, keyed like ``ENDPOINTS``."""


def routes_for(
    endpoints: Mapping[tuple[str, str], Endpoint],
    handlers: Mapping[tuple[str, str], Handler] = HANDLERS,
) -> dict[tuple[str, str], tuple[Endpoint, Handler]]:
    """Pair each endpoint with its handler.

    Raises:
        RouteMismatchError: An endpoint has no handler, or a handler no endpoint.
    """
    missing = sorted(set(endpoints) - set(handlers))
    extra = sorted(set(handlers) - set(endpoints))
    if missing or extra:
        raise RouteMismatchError(
            "exchange/endpoints.py and the simulator's handlers disagree: "
            f"no handler for {missing}, no endpoint for {extra}"
        )
    return {key: (endpoint, handlers[key]) for key, endpoint in endpoints.items()}


ROUTES: Final = routes_for(ENDPOINTS)
"""The REST routes, derived from ``exchange/endpoints.py`` when this module is imported."""
