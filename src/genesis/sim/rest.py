"""The simulator's REST API (``/api/v3/*``): a raw ASGI app plus a hypercorn-on-Trio server.

:class:`RestApp` speaks Binance Spot's REST protocol closely enough for unmodified clients
(python-binance is the conformance target): the same paths, parameters, weights, security rules,
headers, error codes and messages (``shared/binance/FACTS.md`` §2-§5). It is a raw ASGI app, so it
controls every byte of every response and needs no socket: tests drive it through
``httpx.ASGITransport`` (also under ``trio.testing.MockClock``), and :func:`serve_rest` runs it on
hypercorn's Trio worker on a real port.

Request pipeline, in order:

1. Route by method and path. Unknown path: HTTP 404 ``-1020``; known path, wrong method: HTTP 405
   ``-1020`` ("This operation is not supported."). Binance does not document either body; these
   are the simulator's choice. The removed listenKey endpoints (``/api/v3/userDataStream``, any
   method) answer what Binance answers since 2026-02-20: **HTTP 410 Gone with an HTML body**
   (seen in the wild, e.g. siebly.io's "Binance User Data Stream 410 Gone" write-up), so legacy
   clients fail the way they would in production.
2. Faults (:class:`RestFaults`): an injected 5xx burst answers before anything else happens.
3. Parameters from the query string **and** an ``application/x-www-form-urlencoded`` body, for
   every method; the query wins on a duplicate across the two. A body of another content type is
   ignored (neither parsed nor signed), which is what makes Binance answer ``-1102`` to clients
   that send JSON. Raw non-ASCII bytes, bad UTF-8 after percent-decoding: ``-1100``; a parameter
   twice in one part: ``-1101``; an empty value: ``-1105``; parameters the endpoint does not read:
   ``-1104`` ("Not all sent parameters were read; read 'n' parameter(s) but was sent 'm'.").
   Bodies above :data:`MAX_BODY_BYTES`: HTTP 413 ``-1101``.
4. Rate limits (:mod:`genesis.sim.ratelimit`): the request's weight (from
   :mod:`genesis.exchange.endpoints`, by parameters where Binance's weight depends on them) is
   counted against the client IP (ASGI ``scope["client"]``) *before* parameter errors are
   reported, so malformed requests are charged too. 429/418 with ``Retry-After``.
5. Security for signed endpoints (:mod:`genesis.sim.auth`): ``X-MBX-APIKEY``, the signature over
   the exact raw bytes, then ``timestamp``/``recvWindow``.
6. The endpoint, through :class:`genesis.sim.exchange.Exchange`; its :class:`SimReject` becomes
   ``{"code", "msg"}`` with HTTP 400 (401 for -2015). New orders are counted in the ORDERS
   limits before they reach the exchange and un-counted when the API layer rejects them before
   the engine (anything but ``-2010``); a first fill takes them out again.
7. Successful order placements and cancels get their weight back (0 weight since 2026-04-02).
8. Headers on every answer: ``Content-Type: application/json;charset=UTF-8``,
   ``X-MBX-USED-WEIGHT-1M`` and the legacy ``X-MBX-USED-WEIGHT``; ``X-MBX-ORDER-COUNT-10S`` /
   ``-1D`` on ``POST /api/v3/order`` answers once the account is known.

Faults: besides the 5xx burst (next N requests or a seeded rate), ``latency_s`` delays every
answer (after the request was processed: a client that times out may still have had its order
executed), and ``execute_then_503`` executes the next N order placements and answers HTTP 503
with ``-1007`` "Timeout waiting for response from backend server. Send status unknown; execution
status unknown." — the spot code for "unknown outcome" (the futures-only 503 texts do not apply to
spot). Lowered limits go through :attr:`RestApp.limiter`, clock skew through
:attr:`genesis.sim.clock.SimClock.skew_ms`, a halted symbol through
``Exchange.set_symbol_status``.

Never a traceback: an unexpected exception inside an endpoint is logged once with ``exc_info``
and answered HTTP 500 ``-1000`` (an unknown outcome, as any 5XX is on Binance).

Known deviations (the simulator's choices where Binance is silent or the simulator is smaller):

- Unexpected parameters get ``-1104`` (what Binance sends for parameters an endpoint did not
  read) on every endpoint; ``-1103 UNKNOWN_PARAM`` is never sent.
- The second recvWindow check "just before the matching engine" cannot differ from the arrival
  check: there is no queue between them in the simulator.
- ``klines``/``uiKlines`` accept ``timeZone`` only as a zero offset (other offsets: ``-1020``).
- ``strategyId``/``strategyType`` are accepted and ignored (not echoed in responses);
  ``icebergQty`` and ``trailingDelta`` are refused with the documented ``-2010`` engine messages,
  pegged-order parameters with ``-1020``, any STP mode but ``NONE`` with ``-1130``.
- ``X-MBX-TIME-UNIT`` (µs responses) and SBE are not supported; responses are JSON in ms.
- ``symbolStatus`` together with ``symbol``/``symbols`` on exchangeInfo is ``-1128``.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Final, NoReturn, cast
from urllib.parse import unquote_to_bytes

import attrs
import orjson
import trio

from genesis.exchange.endpoints import (
    API_PREFIX,
    ENDPOINTS,
    Endpoint,
    depth_weight,
    open_orders_weight,
    ticker_weight,
)
from genesis.sim.auth import (
    ApiKey,
    KeyStore,
    check_timestamp,
    split_signature,
    verify_signature,
)
from genesis.sim.errors import (
    DUPLICATE_SYMBOLS,
    ILLEGAL_CHARS,
    INVALID_PARAMETER,
    INVALID_SYMBOLSTATUS,
    INVALID_TICKER_TYPE,
    MANDATORY_PARAM_EMPTY_OR_MALFORMED,
    MSG_DUPLICATE_PARAM,
    MSG_ILLEGAL_CHARS,
    MSG_ILLEGAL_CHARS_PARAM,
    MSG_INVALID_PARAMETER,
    MSG_MANDATORY_PARAM,
    MSG_PARAM_EMPTY,
    MSG_UNREAD_PARAMETERS,
    OPTIONAL_PARAMS_BAD_COMBO,
    PARAM_EMPTY,
    SYMBOL_DOES_NOT_MATCH_STATUS,
    TIMEOUT,
    TOO_MANY_PARAMETERS,
    UNKNOWN,
    UNREAD_PARAMETERS,
    UNSUPPORTED_OPERATION,
    SimReject,
    error_body,
)
from genesis.sim.exchange import (
    Exchange,
    OrderResult,
    account_trade_to_wire,
    order_to_wire,
    result_to_wire,
)
from genesis.sim.ratelimit import RateLimiter, UsageSnapshot
from genesis.sim.symbols import SYMBOL_STATUSES, exchange_info_symbol

if TYPE_CHECKING:
    from genesis.sim.clock import SimClock
    from genesis.sim.exchange import JsonObject, Order

__all__ = [
    "CONTENT_TYPE_JSON",
    "MAX_BODY_BYTES",
    "USER_DATA_STREAM_PATH",
    "AsgiApp",
    "Params",
    "Receive",
    "RestApp",
    "RestFaults",
    "RestStatistics",
    "Scope",
    "Send",
    "cancel_order_request",
    "place_counted_order",
    "query_order_request",
    "read_order_fields",
    "serve_rest",
]

logger = logging.getLogger(__name__)

CONTENT_TYPE_JSON: Final = "application/json;charset=UTF-8"
MAX_BODY_BYTES: Final = 64 * 1024
"""Largest request body read; bigger ones are answered 413 -1101."""
USER_DATA_STREAM_PATH: Final = f"{API_PREFIX}/userDataStream"
_GONE_BODY: Final = (
    b"<html><head><title>410 Gone</title></head>"
    b"<body><center><h1>410 Gone</h1></center></body></html>"
)
_FORM: Final = "application/x-www-form-urlencoded"
_SYMBOL_RANGE: Final = "^[A-Z0-9-_.]{1,20}$"
_SYMBOL_RE: Final = re.compile(r"[A-Z0-9\-_.]{1,20}")
_SYMBOLS_RANGE: Final = '^\\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\\]$'
_UINT_RANGE: Final = "^[0-9]{1,20}$"
_UINT_RE: Final = re.compile(r"[0-9]{1,20}")
_INT64_MAX: Final = 2**63 - 1
_PERMISSIONS: Final = frozenset(
    {"SPOT", "MARGIN", "LEVERAGED", *(f"TRD_GRP_{i:03d}" for i in range(2, 26))}
)
_ZERO_OFFSETS: Final = frozenset({"0", "+0", "-0", "00:00", "+00:00", "-00:00", "0:00"})

_FORGET_EVERY: Final = 10_000
"""Every this many requests, the limiter forgets idle IPs (bounded memory in long soaks)."""

# ASGI, typed without Any: scope/messages are read defensively.
Scope = Mapping[str, object]
Message = Mapping[str, object]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[dict[str, object]], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]
JsonValue = object


# --- faults ---------------------------------------------------------------------------------


@attrs.define(kw_only=True)
class RestFaults:
    """Mutable fault-injection state of one :class:`RestApp` (deterministic under ``seed``).

    Attributes:
        error_burst: the next N requests (to known endpoints) are answered ``error_status``
            without being processed.
        error_rate: probability (0..1) that any other request is answered ``error_status``,
            drawn from a ``random.Random(seed)``.
        error_status: 500, 502, 503 or 504. 503 carries ``-1008`` (server busy), others
            ``-1000``; the request had no effect.
        latency_s: added before every answer (after processing).
        execute_then_503: the next N order placements reach the exchange (and execute), but the
            client gets HTTP 503 ``-1007`` (send status unknown; execution status unknown).
    """

    error_burst: int = 0
    error_rate: float = attrs.field(
        default=0.0, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )
    error_status: int = attrs.field(
        default=503, validator=attrs.validators.in_({500, 502, 503, 504})
    )
    latency_s: float = attrs.field(default=0.0, validator=attrs.validators.ge(0.0))
    execute_then_503: int = 0
    seed: int = 0
    _rng: random.Random = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def reseed(self, seed: int) -> None:
        """Restart the error-rate RNG from ``seed``."""
        self.seed = seed
        self._rng = random.Random(seed)

    def clear(self) -> None:
        """Switch every fault off (the RNG keeps its position)."""
        self.error_burst = 0
        self.error_rate = 0.0
        self.latency_s = 0.0
        self.execute_then_503 = 0

    def take_error(self) -> bool:
        """Whether this request gets an injected 5xx (consumes the burst / draws the RNG)."""
        if self.error_burst > 0:
            self.error_burst -= 1
            return True
        return self.error_rate > 0.0 and self._rng.random() < self.error_rate

    def take_execute_then_503(self) -> bool:
        """Whether this order placement executes but is answered 503 (consumes one)."""
        if self.execute_then_503 > 0:
            self.execute_then_503 -= 1
            return True
        return False


@attrs.frozen(kw_only=True)
class RestStatistics:
    """Counters of one :class:`RestApp` since creation."""

    requests: int
    ok: int
    client_errors: int
    server_errors: int
    injected_errors: int


# --- requests and parameters ----------------------------------------------------------------


@attrs.frozen(kw_only=True)
class _Request:
    method: str
    path: str
    raw_query: bytes
    raw_body: bytes
    api_key_header: str | None
    client_ip: str


def _decode_component(raw: bytes) -> str:
    try:
        return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        raise SimReject(ILLEGAL_CHARS, MSG_ILLEGAL_CHARS) from None


def _parse_part(raw: bytes) -> dict[str, str]:
    if not raw.isascii():
        raise SimReject(ILLEGAL_CHARS, MSG_ILLEGAL_CHARS)
    out: dict[str, str] = {}
    for piece in raw.split(b"&"):
        if not piece:
            continue
        raw_name, _, raw_value = piece.partition(b"=")
        name = _decode_component(raw_name)
        value = _decode_component(raw_value)
        if name in out:
            raise SimReject(TOO_MANY_PARAMETERS, MSG_DUPLICATE_PARAM)
        if value == "":
            raise SimReject.of(PARAM_EMPTY, MSG_PARAM_EMPTY, name)
        out[name] = value
    return out


@attrs.define
class Params:
    """A request's parameters (query string over form body) with read tracking for ``-1104``."""

    values: dict[str, str]
    read: set[str] = attrs.field(factory=set)

    @classmethod
    def parse(cls, raw_query: bytes, raw_body: bytes) -> Params:
        """Parse the raw query and form body; the query wins on a name present in both.

        Raises:
            SimReject: -1100 raw non-ASCII or invalid UTF-8; -1101 a name twice in one part;
                -1105 an empty value.
        """
        body = _parse_part(raw_body)
        query = _parse_part(raw_query)
        return cls({**body, **query})

    def get(self, name: str) -> str | None:
        """The value of ``name`` (marks it read), or ``None``."""
        self.read.add(name)
        return self.values.get(name)

    def has(self, name: str) -> bool:
        """Whether ``name`` was sent (does not mark it read)."""
        return name in self.values

    def require(self, name: str) -> str:
        """The value of a mandatory parameter. Raises -1102 when missing."""
        value = self.get(name)
        if value is None:
            raise SimReject.of(MANDATORY_PARAM_EMPTY_OR_MALFORMED, MSG_MANDATORY_PARAM, name)
        return value

    def symbol(self, name: str = "symbol", *, required: bool = True) -> str | None:
        """A symbol parameter: mandatory by default; ASCII must match ``^[A-Z0-9-_.]{1,20}$``.

        Non-ASCII symbols (Binance lists Unicode symbols since 2025-12) pass through to the
        exchange, which answers -1121 for ones it does not know.
        """
        value = self.require(name) if required else self.get(name)
        if value is not None and value.isascii() and _SYMBOL_RE.fullmatch(value) is None:
            raise SimReject.of(ILLEGAL_CHARS, MSG_ILLEGAL_CHARS_PARAM, name, _SYMBOL_RANGE)
        return value

    def require_symbol(self, name: str = "symbol") -> str:
        """A mandatory symbol parameter (see :meth:`symbol`)."""
        value = self.symbol(name)
        if value is None:  # pragma: no cover - symbol(required=True) raised already
            raise SimReject.of(MANDATORY_PARAM_EMPTY_OR_MALFORMED, MSG_MANDATORY_PARAM, name)
        return value

    def uint(self, name: str) -> int | None:
        """An optional unsigned 64-bit integer parameter. Raises -1100 for anything else."""
        value = self.get(name)
        if value is None:
            return None
        if _UINT_RE.fullmatch(value) is None or int(value) > _INT64_MAX:
            raise SimReject.of(ILLEGAL_CHARS, MSG_ILLEGAL_CHARS_PARAM, name, _UINT_RANGE)
        return int(value)

    def limit(self, default: int, maximum: int) -> int:
        """The ``limit`` parameter, ``default`` when absent, clamped to ``1..maximum``."""
        value = self.uint("limit")
        return default if value is None else min(max(value, 1), maximum)

    def boolean(self, name: str, default: bool = False) -> bool:
        """``true``/``false`` (any case). Raises -1130 for anything else."""
        value = self.get(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered not in ("true", "false"):
            raise SimReject.of(INVALID_PARAMETER, MSG_INVALID_PARAMETER, name)
        return lowered == "true"

    def check_all_read(self) -> None:
        """Raises -1104 when a sent parameter was never read by the endpoint."""
        unread = set(self.values) - self.read
        if unread:
            sent = len(self.values)
            raise SimReject.of(UNREAD_PARAMETERS, MSG_UNREAD_PARAMETERS, sent - len(unread), sent)


def _symbol_list(params: Params, name: str = "symbols") -> list[str] | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, list) or not all(isinstance(item, str) for item in parsed):
        raise SimReject.of(ILLEGAL_CHARS, MSG_ILLEGAL_CHARS_PARAM, name, _SYMBOLS_RANGE)
    symbols = [str(item) for item in parsed]
    for symbol in symbols:
        if symbol.isascii() and _SYMBOL_RE.fullmatch(symbol) is None:
            raise SimReject.of(ILLEGAL_CHARS, MSG_ILLEGAL_CHARS_PARAM, name, _SYMBOLS_RANGE)
    if not symbols:
        raise SimReject.of(MANDATORY_PARAM_EMPTY_OR_MALFORMED, MSG_MANDATORY_PARAM, name)
    if len(set(symbols)) != len(symbols):
        raise SimReject(DUPLICATE_SYMBOLS)
    return symbols


def _count_symbols(raw: str | None) -> int | None:
    """How many symbols a ``symbols`` JSON array names (for the weight); None when malformed."""
    if raw is None:
        return None
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return len(parsed) if isinstance(parsed, list) else None


def _json_default(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _dumps(value: JsonValue) -> bytes:
    return orjson.dumps(value, default=_json_default)


# --- responses ------------------------------------------------------------------------------


@attrs.define(kw_only=True)
class _Reply:
    status: int = 200
    body: bytes = b"{}"
    content_type: str = CONTENT_TYPE_JSON
    headers: list[tuple[str, str]] = attrs.field(factory=list)


def _error_reply(error: SimReject) -> _Reply:
    return _Reply(status=error.status, body=error.body(), headers=list(error.headers))


@attrs.define(kw_only=True)
class _Ctx:
    request: _Request
    params: Params
    now_ms: int
    endpoint: Endpoint
    api_key: str = ""
    order_headers: bool = False


Handler = Callable[[_Ctx], Awaitable[JsonValue]]


# --- the app --------------------------------------------------------------------------------


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


class RestApp:
    """Binance Spot's ``/api/v3`` REST API over an :class:`Exchange`, as an ASGI app.

    Args:
        exchange: the exchange core (shared with the stream server and the market feed).
        clock: the simulator's clock; every "now" (serverTime, recvWindow, rate-limit windows)
            comes from ``clock.now_ms()`` (skew fault included).
        keys: registered API keys (see :meth:`add_api_key`); empty by default.
        limiter: rate limits; Binance's documented defaults when omitted.
        faults: fault-injection state; all off when omitted.

    The app is stateless per request apart from these objects; use one per simulator. It
    registers a first-fill listener on ``exchange`` so later first fills lower the unfilled order
    count.
    """

    def __init__(
        self,
        exchange: Exchange,
        *,
        clock: SimClock,
        keys: KeyStore | None = None,
        limiter: RateLimiter | None = None,
        faults: RestFaults | None = None,
    ) -> None:
        self.exchange = exchange
        self.clock = clock
        self.keys = keys if keys is not None else KeyStore()
        self.limiter = limiter if limiter is not None else RateLimiter()
        self.faults = faults if faults is not None else RestFaults()
        self._requests = 0
        self._ok = 0
        self._client_errors = 0
        self._server_errors = 0
        self._injected = 0
        self._routes: dict[tuple[str, str], Handler] = {
            ("GET", "ping"): self._ping,
            ("GET", "time"): self._time,
            ("GET", "exchangeInfo"): self._exchange_info,
            ("GET", "depth"): self._depth,
            ("GET", "trades"): self._trades,
            ("GET", "historicalTrades"): self._historical_trades,
            ("GET", "aggTrades"): self._agg_trades,
            ("GET", "klines"): self._klines,
            ("GET", "uiKlines"): self._klines,
            ("GET", "avgPrice"): self._avg_price,
            ("GET", "ticker/24hr"): self._ticker_24hr,
            ("GET", "ticker/price"): self._ticker_price,
            ("GET", "ticker/bookTicker"): self._book_ticker,
            ("POST", "order"): self._new_order,
            ("POST", "order/test"): self._test_order,
            ("GET", "order"): self._query_order,
            ("DELETE", "order"): self._cancel_order,
            ("GET", "openOrders"): self._open_orders,
            ("DELETE", "openOrders"): self._cancel_open_orders,
            ("GET", "allOrders"): self._all_orders,
            ("GET", "account"): self._account,
            ("GET", "myTrades"): self._my_trades,
            ("GET", "rateLimit/order"): self._rate_limit_order,
        }
        self._paths = {f"{API_PREFIX}/{name}" for _, name in self._routes}
        exchange.add_first_fill_listener(self._on_first_fill)

    # --- administration ---------------------------------------------------------------------

    def add_api_key(self, key: ApiKey, balances: Mapping[str, Decimal] | None = None) -> None:
        """Register ``key`` and give it an exchange account if it has none.

        Args:
            key: an HMAC or Ed25519 key.
            balances: initial balances of a new account (the exchange's defaults when None);
                ignored when the account already exists.
        """
        self.keys.add(key)
        if not self.exchange.has_account(key.api_key):
            self.exchange.add_account(key.api_key, None if balances is None else dict(balances))

    def statistics(self) -> RestStatistics:
        """Request counters since creation."""
        return RestStatistics(
            requests=self._requests,
            ok=self._ok,
            client_errors=self._client_errors,
            server_errors=self._server_errors,
            injected_errors=self._injected,
        )

    def _on_first_fill(self, api_key: str, order: Order) -> None:
        self.limiter.order_filled(api_key, order.update_time_ms)

    # --- ASGI -------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point: ``http`` requests and the ``lifespan`` protocol."""
        kind = scope.get("type")
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1000})
            return
        reply = await self._respond(scope, receive)
        if self.faults.latency_s > 0:
            await trio.sleep(self.faults.latency_s)
        headers = [
            (b"content-type", reply.content_type.encode()),
            (b"content-length", str(len(reply.body)).encode()),
        ]
        headers += [(name.lower().encode(), value.encode()) for name, value in reply.headers]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})

    @staticmethod
    async def _lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message.get("type") == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message.get("type") == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _respond(self, scope: Scope, receive: Receive) -> _Reply:
        self._requests += 1
        method = str(scope.get("method", "GET")).upper()
        path = str(scope.get("path", ""))
        reply = await self._route(method, path, scope, receive)
        if reply.status < 400:
            self._ok += 1
        elif reply.status < 500:
            self._client_errors += 1
        else:
            self._server_errors += 1
        return reply

    async def _route(self, method: str, path: str, scope: Scope, receive: Receive) -> _Reply:
        if path == USER_DATA_STREAM_PATH:
            logger.info("sim.rest.gone method=%s path=%s", method, path)
            return _Reply(status=410, body=_GONE_BODY, content_type="text/html")
        endpoint = ENDPOINTS.get((method, path))
        if endpoint is None:
            status = 405 if path in self._paths else 404
            logger.info("sim.rest.no_route method=%s path=%s status=%d", method, path[:100], status)
            return _Reply(status=status, body=error_body(UNSUPPORTED_OPERATION, _MSG_UNSUPPORTED))
        if self.faults.take_error():
            self._injected += 1
            status = self.faults.error_status
            code = -1008 if status == 503 else UNKNOWN
            logger.info("sim.rest.injected_error path=%s status=%d", path, status)
            return _Reply(status=status, body=SimReject(code, status=status).body())
        try:
            request = await self._read_request(method, path, scope, receive)
        except SimReject as exc:
            logger.info("sim.rest.rejected path=%s code=%d", path, exc.code)
            return _error_reply(exc)
        return await self._dispatch(endpoint, request)

    async def _read_request(
        self, method: str, path: str, scope: Scope, receive: Receive
    ) -> _Request:
        raw_query = scope.get("query_string", b"")
        if not isinstance(raw_query, bytes):
            raw_query = b""
        api_key: str | None = None
        content_type: str | None = None
        headers = scope.get("headers", ())
        if isinstance(headers, list | tuple):
            for item in headers:
                if not isinstance(item, list | tuple) or len(item) != 2:
                    continue
                name, value = item
                if not isinstance(name, bytes) or not isinstance(value, bytes):
                    continue
                lowered = name.lower()
                if lowered == b"x-mbx-apikey" and api_key is None:
                    api_key = value.decode("latin-1").strip()
                elif lowered == b"content-type" and content_type is None:
                    content_type = value.decode("latin-1").strip().lower()
        body = await self._read_body(receive)
        if body and content_type is not None and not content_type.startswith(_FORM):
            logger.info("sim.rest.body_ignored path=%s content_type=%s", path, content_type[:60])
            body = b""
        client = scope.get("client")
        ip = "unknown"
        if isinstance(client, list | tuple) and client and isinstance(client[0], str):
            ip = client[0]
        return _Request(
            method=method,
            path=path,
            raw_query=raw_query,
            raw_body=body,
            api_key_header=api_key,
            client_ip=ip,
        )

    @staticmethod
    async def _read_body(receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message.get("type") != "http.request":
                break
            chunk = message.get("body", b"")
            if isinstance(chunk, bytes) and chunk:
                size += len(chunk)
                if size <= MAX_BODY_BYTES:
                    chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if size > MAX_BODY_BYTES:  # drained to the end, not kept
            raise SimReject(
                TOO_MANY_PARAMETERS, "Too many parameters sent for this endpoint.", status=413
            )
        return b"".join(chunks)

    async def _dispatch(self, endpoint: Endpoint, request: _Request) -> _Reply:
        now_ms = self.clock.now_ms()
        if self._requests % _FORGET_EVERY == 0:
            self.limiter.forget_idle(now_ms)
        parse_error: SimReject | None = None
        try:
            params = Params.parse(request.raw_query, request.raw_body)
        except SimReject as exc:
            parse_error = exc
            params = Params({})
        weight = _weight(endpoint, params)
        ctx = _Ctx(request=request, params=params, now_ms=now_ms, endpoint=endpoint)
        try:
            usage = self.limiter.admit_request(request.client_ip, weight, now_ms)
        except SimReject as exc:
            return _error_reply(exc)
        try:
            if parse_error is not None:
                raise parse_error
            if endpoint.signed:
                self._authenticate(ctx)
            name = endpoint.path[len(API_PREFIX) + 1 :]
            handler = self._routes[(endpoint.method, name)]
            result = await handler(ctx)
            reply = _Reply(body=_dumps(result))
        except SimReject as exc:
            reply = _error_reply(exc)
        except Exception:
            logger.exception("sim.rest.internal_error path=%s", endpoint.path)
            reply = _error_reply(SimReject(UNKNOWN))
        if reply.status < 400 and endpoint.free_on_success:
            usage = self.limiter.refund_weight(request.client_ip, weight, now_ms)
        elif reply.status >= 400:
            logger.info(
                "sim.rest.rejected method=%s path=%s status=%d body=%s",
                endpoint.method,
                endpoint.path,
                reply.status,
                reply.body[:120],
            )
        if ctx.order_headers:
            usage = UsageSnapshot(
                used_weight=usage.used_weight,
                order_count=self.limiter.order_count_snapshot(ctx.api_key, now_ms),
            )
        reply.headers = [*usage.headers(), *reply.headers]
        return reply

    def _authenticate(self, ctx: _Ctx) -> None:
        request = ctx.request
        key = self.keys.authenticate(request.api_key_header)
        signed = split_signature(request.raw_query, request.raw_body)
        ctx.params.read.add("signature")
        verify_signature(key, signed)
        check_timestamp(
            ctx.params.get("timestamp"), ctx.params.get("recvWindow"), now_ms=ctx.now_ms
        )
        ctx.api_key = key.api_key

    # --- general endpoints ------------------------------------------------------------------

    async def _ping(self, ctx: _Ctx) -> JsonValue:
        ctx.params.check_all_read()
        return {}

    async def _time(self, ctx: _Ctx) -> JsonValue:
        ctx.params.check_all_read()
        return {"serverTime": ctx.now_ms}

    async def _exchange_info(self, ctx: _Ctx) -> JsonValue:
        params = ctx.params
        symbol = params.symbol(required=False)
        symbols = _symbol_list(params)
        permissions = self._permissions(params)
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
            specs = [self.exchange.spec(name) for name in wanted]
        else:
            specs = self.exchange.symbol_specs()
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
            "serverTime": ctx.now_ms,
            "rateLimits": self.limiter.rate_limits_wire(),
            "exchangeFilters": [],
            "symbols": infos,
        }

    @staticmethod
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

    def _check_symbol_status(self, symbol: str, status: str | None) -> None:
        if status is None:
            return
        if status not in SYMBOL_STATUSES:
            raise SimReject(INVALID_SYMBOLSTATUS)
        if self.exchange.spec(symbol).status != status:
            raise SimReject(SYMBOL_DOES_NOT_MATCH_STATUS)

    async def _depth(self, ctx: _Ctx) -> JsonValue:
        params = ctx.params
        symbol = params.require_symbol()
        limit = params.limit(100, 5000)
        status = params.get("symbolStatus")
        params.check_all_read()
        self._check_symbol_status(symbol, status)
        return self.exchange.depth(symbol, limit)

    async def _trades(self, ctx: _Ctx) -> JsonValue:
        params = ctx.params
        symbol = params.require_symbol()
        limit = params.limit(500, 1000)
        params.check_all_read()
        return self.exchange.recent_trades(symbol, limit)

    async def _historical_trades(self, ctx: _Ctx) -> JsonValue:
        params = ctx.params
        symbol = params.require_symbol()
        limit = params.limit(500, 1000)
        from_id = params.uint("fromId")
        params.check_all_read()
        return self.exchange.historical_trades(symbol, limit, from_id)

    async def _agg_trades(self, ctx: _Ctx) -> JsonValue:
        params = ctx.params
        symbol = params.require_symbol()
        from_id = params.uint("fromId")
        start = params.uint("startTime")
        end = params.uint("endTime")
        limit = params.limit(500, 1000)
        params.check_all_read()
        return self.exchange.agg_trades(
            symbol,
            from_id=from_id,
            start_time=start,
            end_time=end,
            limit=limit,
        )

    async def _klines(self, ctx: _Ctx) -> JsonValue:
        params = ctx.params
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
        return self.exchange.klines(
            symbol,
            interval,
            start_time=start,
            end_time=end,
            limit=limit,
            now_ms=ctx.now_ms,
        )

    async def _avg_price(self, ctx: _Ctx) -> JsonValue:
        params = ctx.params
        symbol = params.require_symbol()
        params.check_all_read()
        return self.exchange.avg_price(symbol, now_ms=ctx.now_ms)

    def _symbols_selection(self, params: Params) -> tuple[list[str], bool]:
        """(symbols, single): ``symbol`` → one object; ``symbols`` / nothing → an array."""
        symbol = params.symbol(required=False)
        symbols = _symbol_list(params)
        if symbol is not None and symbols is not None:
            raise SimReject(OPTIONAL_PARAMS_BAD_COMBO)
        if symbol is not None:
            return [symbol], True
        if symbols is not None:
            for name in symbols:
                self.exchange.spec(name)
            return symbols, False
        return [spec.symbol for spec in self.exchange.symbol_specs()], False

    async def _ticker_24hr(self, ctx: _Ctx) -> JsonValue:
        params = ctx.params
        names, single = self._symbols_selection(params)
        kind = params.get("type") or "FULL"
        params.check_all_read()
        if kind not in ("FULL", "MINI"):
            raise SimReject(INVALID_TICKER_TYPE)
        rows = [
            self.exchange.ticker_24hr(name, now_ms=ctx.now_ms, mini=kind == "MINI")
            for name in names
        ]
        return rows[0] if single else rows

    async def _ticker_price(self, ctx: _Ctx) -> JsonValue:
        names, single = self._symbols_selection(ctx.params)
        ctx.params.check_all_read()
        rows = [self.exchange.ticker_price(name) for name in names]
        return rows[0] if single else rows

    async def _book_ticker(self, ctx: _Ctx) -> JsonValue:
        names, single = self._symbols_selection(ctx.params)
        ctx.params.check_all_read()
        rows = [self.exchange.book_ticker(name) for name in names]
        return rows[0] if single else rows

    # --- trading ----------------------------------------------------------------------------

    async def _new_order(self, ctx: _Ctx) -> JsonValue:
        fields = read_order_fields(ctx.params)
        ctx.params.check_all_read()
        ctx.order_headers = True
        self.limiter.admit_order(ctx.api_key, ctx.now_ms)
        hide_outcome = self.faults.take_execute_then_503()
        try:
            result = place_counted_order(
                self.exchange, self.limiter, ctx.api_key, fields, now_ms=ctx.now_ms
            )
        except SimReject as exc:
            if hide_outcome:
                raise _unknown_outcome() from exc
            raise
        logger.debug(
            "sim.rest.order_placed symbol=%s order_id=%d status=%s",
            result.order.symbol,
            result.order.order_id,
            result.order.status,
        )
        if hide_outcome:
            logger.info(
                "sim.rest.execute_then_503 symbol=%s order_id=%d",
                result.order.symbol,
                result.order.order_id,
            )
            raise _unknown_outcome()
        return result_to_wire(result)

    async def _test_order(self, ctx: _Ctx) -> JsonValue:
        fields = read_order_fields(ctx.params)
        commission = ctx.params.boolean("computeCommissionRates")
        ctx.params.check_all_read()
        _place(self.exchange, ctx.api_key, fields, now_ms=ctx.now_ms, test=True)
        if not commission:
            return {}
        account = self.exchange.account(ctx.api_key, now_ms=ctx.now_ms)
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

    async def _query_order(self, ctx: _Ctx) -> JsonValue:
        return query_order_request(self.exchange, ctx.api_key, ctx.params)

    async def _cancel_order(self, ctx: _Ctx) -> JsonValue:
        return cancel_order_request(self.exchange, ctx.api_key, ctx.params, now_ms=ctx.now_ms)

    async def _open_orders(self, ctx: _Ctx) -> JsonValue:
        params = ctx.params
        symbol = params.symbol(required=False)
        params.check_all_read()
        if symbol is not None:
            self.exchange.spec(symbol)
        return [
            order_to_wire(order, "GET") for order in self.exchange.open_orders(ctx.api_key, symbol)
        ]

    async def _cancel_open_orders(self, ctx: _Ctx) -> JsonValue:
        params = ctx.params
        symbol = params.require_symbol()
        params.check_all_read()
        orders = self.exchange.cancel_all(ctx.api_key, symbol=symbol, now_ms=ctx.now_ms)
        return [order_to_wire(order, "CANCEL") for order in orders]

    async def _all_orders(self, ctx: _Ctx) -> JsonValue:
        params = ctx.params
        symbol = params.require_symbol()
        order_id = params.uint("orderId")
        start = params.uint("startTime")
        end = params.uint("endTime")
        limit = params.limit(500, 1000)
        params.check_all_read()
        orders = self.exchange.all_orders(
            ctx.api_key,
            symbol,
            order_id=order_id,
            start_time=start,
            end_time=end,
            limit=limit,
        )
        return [order_to_wire(order, "GET") for order in orders]

    async def _account(self, ctx: _Ctx) -> JsonValue:
        params = ctx.params
        omit = params.boolean("omitZeroBalances")
        params.check_all_read()
        return self.exchange.account(ctx.api_key, now_ms=ctx.now_ms, omit_zero_balances=omit)

    async def _my_trades(self, ctx: _Ctx) -> JsonValue:
        params = ctx.params
        symbol = params.require_symbol()
        order_id = params.uint("orderId")
        start = params.uint("startTime")
        end = params.uint("endTime")
        from_id = params.uint("fromId")
        limit = params.limit(500, 1000)
        params.check_all_read()
        trades = self.exchange.my_trades(
            ctx.api_key,
            symbol,
            order_id=order_id,
            from_id=from_id,
            start_time=start,
            end_time=end,
            limit=limit,
        )
        return [account_trade_to_wire(trade) for trade in trades]

    async def _rate_limit_order(self, ctx: _Ctx) -> JsonValue:
        ctx.params.check_all_read()
        return [
            {**limit.to_wire(), "count": count}
            for limit, count in self.limiter.order_counts(ctx.api_key, ctx.now_ms)
        ]


_MSG_UNSUPPORTED: Final = "This operation is not supported."


def _unknown_outcome() -> SimReject:
    return SimReject(TIMEOUT, status=503)


def _weight(endpoint: Endpoint, params: Params) -> int:
    """The request weight Binance charges, from parameters where it depends on them.

    Never raises: malformed parameters fall back to the endpoint's base weight (the parameter
    error is reported after the weight was counted).
    """
    values = params.values
    name = endpoint.path[len(API_PREFIX) + 1 :]
    if name == "depth":
        raw = values.get("limit", "100")
        limit = int(raw) if _UINT_RE.fullmatch(raw) else 100
        return depth_weight(min(max(limit, 1), 5000))
    if name == "ticker/24hr":
        if "symbol" in values:
            return ticker_weight(1)
        if "symbols" in values:
            count = _count_symbols(values["symbols"])
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


# --- serving --------------------------------------------------------------------------------


def _port_of(bind: str) -> int:
    return int(bind.rsplit(":", 1)[1])


async def serve_rest(
    app: AsgiApp,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve ``app`` over HTTP/1.1 on hypercorn's Trio worker until cancelled.

    ``port=0`` binds an ephemeral port. hypercorn's ``serve`` reports its binds through its own
    ``task_status`` (``["http://127.0.0.1:54321"]``, read back from the bound socket with
    ``getsockname``), so the real port is parsed from there and handed to ``task_status.started``.

    Args:
        app: the REST app (or any ASGI app wrapping it, e.g. with the admin API).
        host: interface to bind (keep ``127.0.0.1`` in tests).
        port: TCP port, 0 for an ephemeral one.
        task_status: receives the bound port.

    Cancellation: cancelling the caller's scope stops accepting and closes every connection
    (hypercorn's graceful timeout is set to 1 s). Nothing outlives the call.
    """
    from hypercorn.config import Config
    from hypercorn.trio import serve

    if TYPE_CHECKING:
        from hypercorn.typing import ASGIFramework

    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 1.0
    config.include_server_header = False
    async with trio.open_nursery() as nursery:
        # hypercorn types ASGI messages as TypedDicts; the app reads them as plain mappings.
        asgi_app = cast("ASGIFramework", app)
        binds = await nursery.start(partial(serve, asgi_app, config, mode="asgi"))
        bound = _port_of(binds[0]) if binds else port
        logger.info("sim.rest.listening host=%s port=%d", host, bound)
        task_status.started(bound)
        await trio.sleep_forever()
    raise AssertionError("unreachable")  # pragma: no cover
