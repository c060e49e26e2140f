"""The simulator's WebSocket API (``/ws-api/v3``): sessions, user data subscriptions, orders.

What a client sees (``shared/binance/FACTS.md`` §2 "HMAC on the WebSocket API", §4, §5, §10;
``web-socket-api.md``; payload shapes from ``samples.json`` ``wsapi.*`` / ``user.*``):

- Requests are JSON text frames ``{"id": .., "method": .., "params": {..}}``; ``id`` is an
  integer, a string or ``null`` and is echoed back. A method may carry the ``v3/`` prefix.
  Answers are ``{"id":..,"status":200,"result":..,"rateLimits":[..]}`` or
  ``{"id":..,"status":4xx,"error":{"code":..,"msg":..[,"data":{..}]},"rateLimits":[..]}``.
  ``rateLimits`` lists the REQUEST_WEIGHT windows (and, for ``order.place``, the account's
  ORDERS windows first, as the docs show); it is left out when the connection URL has
  ``returnRateLimits=false`` or the request has ``"returnRateLimits": false``.
- Methods: ``ping``, ``time``, ``session.logon``, ``session.status``, ``session.logout``,
  ``session.subscriptions``, ``userDataStream.subscribe``, ``userDataStream.subscribe.signature``,
  ``userDataStream.unsubscribe``, ``order.place``, ``order.cancel``, ``order.status``. Their
  parameters are read like REST's (:class:`genesis.sim.rest.Params`: ``-1102`` missing, ``-1100``
  malformed, ``-1104`` "Not all sent parameters were read", which Binance's WS API sends too).
- Signing differs from REST: every ``params`` entry except ``signature`` (``apiKey`` included),
  sorted by name, joined ``k=v&...`` over the UTF-8 text with **no** percent-encoding; HMAC-SHA256
  hex, or Ed25519 base64 over the same bytes (:func:`signature_payload`). Compatibility: a
  signature over the ``urllib.parse.urlencode`` form of the same sorted pairs is accepted too,
  because python-binance signs WS API requests that way (identical for plain ASCII values).
  Keys, signature verification and the timestamp/recvWindow rules are :mod:`genesis.sim.auth`'s,
  so ``-2014``/``-2015``/``-1022``/``-1021`` match REST exactly.
- ``session.logon`` is Ed25519-only. Binance documents no code for an HMAC key; clients report
  "Signature for this request is not valid." (sieblyio/binance PR #626), so the simulator answers
  ``-1022``. After a logon, ``order.*`` requests need no ``apiKey``/``signature`` (still a
  ``timestamp``); an explicit ``apiKey`` overrides the session key. A key removed from the key
  store revokes the session on its next use with ``{"id":null,"status":401,...-2015}`` (documented).
- User data: ``userDataStream.subscribe`` (needs a logon; otherwise ``-1002`` "You are not
  authorized to execute this request.", status 401 — Binance documents no code, simulator's
  choice) and ``userDataStream.subscribe.signature`` (any key type) answer
  ``{"subscriptionId": N}``; ids count up from 0 per connection. One subscription per account per
  connection (``-2035``), at most 1000 active and 65,535 over a connection's life (``-2042``).
  ``userDataStream.unsubscribe`` ends one (``subscriptionId``) or all; nothing to end is ``-2036``.
  ``session.logout`` (and a ``session.logon`` with another key) ends the logon-based one only.
  Events arrive as ``{"subscriptionId":N,"event":{..}}``: ``executionReport`` and
  ``outboundAccountPosition`` exactly as the exchange builds them, in the exchange's order per
  account; an ended subscription gets ``{"e":"eventStreamTerminated","E":..}`` *before* the
  answer to the request that ended it. ``balanceUpdate`` is never sent: the exchange has no
  deposits, withdrawals or transfers.
- Request-level errors (decisions where Binance documents none, all status 400): a frame that is
  not JSON, not an object or a binary frame → ``id`` null, ``-1135`` "Invalid JSON Request"; a
  bad ``id`` → ``-1135`` "Invalid 'id' in JSON request; expected an integer, a string or null."; a
  missing or non-string ``method`` → ``-1102`` for ``method``; ``params`` not an object →
  ``-1135`` "Invalid 'params' in JSON request; expected an object." (the wording Binance's server
  uses, seen in binance-us/binance-us-api-docs#126); an unknown method → ``-1020`` "Unknown
  method." (status 400, charged weight 1).
- Limits: the connection costs 2 REQUEST_WEIGHT, each request its documented weight (ping/time
  1, order.place/order.cancel 1 and 0 once they succeed, order.status 4, session.* and
  userDataStream.* 2), all in the :class:`~genesis.sim.ratelimit.RateLimiter` shared with REST
  (per IP; ORDERS per account). Over the limit: status 429 ``-1003``/``-1015`` with
  ``error.data = {"serverTime", "retryAfter"}`` (epoch ms of the window reset); a ban: 418 with
  ``retryAfter`` = the ban's end, and every connection of that IP is closed (Binance disconnects
  banned IPs). 300 connection attempts per 5 minutes per IP; the 301st handshake is refused with
  HTTP 429 (HTTP 418/429 likewise while the IP is banned or over its weight).
- Connection rules as the market streams (:mod:`genesis.sim.streams`; the mechanics both share
  are :mod:`genesis.sim._wsconn`'s): a ping every 20 s with a 12-byte payload; a ping not
  echoed by a pong within 60 s closes the connection (1008);
  unsolicited pongs change nothing (trio-websocket matches pong payloads to pings itself). At
  ``max_age_s`` (24 h) and on :meth:`WsApiContext.shutdown` the server sends
  ``{"event":{"e":"serverShutdown","E":..}}`` and closes with 1001. A client that does not read
  (outbound buffer full) is a slow consumer: closed with 1008, or dropped without a close frame
  when a single frame cannot be written for ``slow_send_timeout_s``. Binance's "5 messages per
  second" rule belongs to the market streams only and is not applied here.
- Unsupported (refused at the handshake with HTTP 400 and a ``{"code","msg"}`` body):
  ``timeUnit=MICROSECOND`` (``-1020``; an invalid value is ``-1194``) and ``responseFormat=sbe``
  (``-1020``).

Entry points: :func:`handle_ws_api` serves one handshake that a top-level trio-websocket server
has already read (it dispatches ``/ws-api/v3`` here); :func:`handle_ws_api_stream` serves one raw
byte stream (TCP or ``trio.testing.memory_stream_pair()``, for MockClock tests);
:func:`serve_ws_api` listens on TCP by itself.
"""

from __future__ import annotations

import functools
import logging
import urllib.parse
from decimal import Decimal
from typing import TYPE_CHECKING, Final, NoReturn

import attrs
import orjson
import trio
import trio_websocket

from genesis.exchange.endpoints import WS_API_PATH
from genesis.sim._wsconn import (
    CLOSE_POLICY,
    PEER_GONE,
    Close,
    ConnectionRegistry,
    ConnLog,
    WsConnection,
    close_gracefully,
    receive_message,
    run_pings,
    send_frame,
    serve_handshake,
    shutdown_event,
    socket_handler,
    watch_age,
)
from genesis.sim.auth import (
    ApiKey,
    KeyKind,
    KeyStore,
    SignedPayload,
    check_timestamp,
    parse_timestamp_us,
    verify_signature,
)
from genesis.sim.errors import (
    INVALID_JSON,
    INVALID_SIGNATURE,
    INVALID_TIME_UNIT,
    MANDATORY_PARAM_EMPTY_OR_MALFORMED,
    MAXIMUM_SUBSCRIPTION_IDS,
    MSG_INVALID_ID,
    MSG_INVALID_JSON,
    MSG_INVALID_PARAMS,
    MSG_INVALID_TIME_UNIT,
    MSG_MANDATORY_PARAM,
    MSG_MAX_SUBSCRIPTION_IDS,
    MSG_NOT_AUTHORIZED,
    MSG_SUBSCRIPTION_ACTIVE,
    MSG_SUBSCRIPTION_INACTIVE,
    MSG_TOO_MANY_SUBSCRIPTIONS,
    MSG_UNKNOWN_METHOD,
    MSG_UNSUPPORTED,
    REJECTED_MBX_KEY,
    SUBSCRIPTION_ACTIVE,
    SUBSCRIPTION_INACTIVE,
    TOO_MANY_ORDERS,
    TOO_MANY_REQUESTS,
    UNAUTHORIZED,
    UNKNOWN,
    UNSUPPORTED_OPERATION,
    SimReject,
    fmt,
)
from genesis.sim.exchange import result_to_wire
from genesis.sim.limits import AttemptLimiter
from genesis.sim.ratelimit import RateLimiter, window_start_ms
from genesis.sim.rest import (
    Params,
    cancel_order_request,
    place_counted_order,
    query_order_request,
    read_order_fields,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from genesis.sim.clock import SimClock
    from genesis.sim.exchange import Exchange, JsonObject, Order

__all__ = [
    "DEFAULT_WS_API_CONFIG",
    "METHOD_WEIGHTS",
    "MSG_INVALID_JSON",
    "MSG_NOT_AUTHORIZED",
    "MSG_SUBSCRIPTION_ACTIVE",
    "MSG_SUBSCRIPTION_INACTIVE",
    "MSG_UNKNOWN_METHOD",
    "WsApiConfig",
    "WsApiConnectionInfo",
    "WsApiContext",
    "WsApiStatistics",
    "handle_ws_api",
    "handle_ws_api_stream",
    "serve_ws_api",
    "signature_payload",
]
# The MSG_* texts are genesis.sim.errors' (the catalog); they stay importable from here.

logger = logging.getLogger(__name__)
_LOG: Final = ConnLog(logger, "sim.wsapi")

METHOD_WEIGHTS: Final[dict[str, int]] = {
    "ping": 1,
    "time": 1,
    "session.logon": 2,
    "session.status": 2,
    "session.logout": 2,
    "session.subscriptions": 2,
    "userDataStream.subscribe": 2,
    "userDataStream.subscribe.signature": 2,
    "userDataStream.unsubscribe": 2,
    "order.place": 1,
    "order.cancel": 1,
    "order.status": 4,
}
"""REQUEST_WEIGHT per method (web-socket-api.md); unknown methods are charged 1."""

_FREE_ON_SUCCESS: Final = frozenset({"order.place", "order.cancel"})
"""Successful placements and cancels cost 0 weight since 2026-04-02 (CHANGELOG 2026-03-27)."""

_UNKNOWN_METHOD_WEIGHT: Final = 1
_JSON_BODY: Final = [(b"Content-Type", b"application/json;charset=UTF-8")]


# --- configuration and public values --------------------------------------------------------


@attrs.frozen(kw_only=True)
class WsApiConfig:
    """Limits and timings of the WS API server (Binance's values by default).

    Attributes:
        ping_interval_s: The server pings every 20 s, counted from the handshake.
        pong_timeout_s: A ping not echoed within 60 s closes the connection with 1008.
        max_age_s: Connection lifetime (24 h); then ``serverShutdown`` and a 1001 close.
        max_connect_attempts: Handshakes per IP per ``connect_window_s`` (300 per 5 minutes).
        connect_window_s: Length of the sliding window for connection attempts.
        connection_weight: REQUEST_WEIGHT charged for each accepted handshake (2).
        max_active_subscriptions: Active user data subscriptions per connection (1000).
        max_subscription_ids: Subscriptions over a connection's lifetime (65,535).
        outbound_buffer: Frames (answers and events) queued per connection; when an event
            finds it full the client is a slow consumer and the connection is closed.
        slow_send_timeout_s: A frame that cannot be written for this long drops the connection.
        handshake_timeout_s: Time a raw stream has to send its HTTP upgrade request
            (:func:`handle_ws_api_stream` only).
        disconnect_timeout_s: Time the client has to answer our close frame.
        message_queue_size: trio-websocket's inbound queue (used where this module wraps the
            stream; a dispatcher that wraps it should use the same value).
        max_message_size: Largest inbound message (trio-websocket closes with 1009).
    """

    ping_interval_s: float = attrs.field(default=20.0, validator=attrs.validators.gt(0))
    pong_timeout_s: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    max_age_s: float = attrs.field(default=86_400.0, validator=attrs.validators.gt(0))
    max_connect_attempts: int = attrs.field(default=300, validator=attrs.validators.ge(1))
    connect_window_s: float = attrs.field(default=300.0, validator=attrs.validators.gt(0))
    connection_weight: int = attrs.field(default=2, validator=attrs.validators.ge(0))
    max_active_subscriptions: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    max_subscription_ids: int = attrs.field(default=65_535, validator=attrs.validators.ge(1))
    outbound_buffer: int = attrs.field(default=1024, validator=attrs.validators.ge(1))
    slow_send_timeout_s: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    handshake_timeout_s: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    disconnect_timeout_s: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    message_queue_size: int = attrs.field(default=32, validator=attrs.validators.ge(1))
    max_message_size: int = attrs.field(default=1 << 20, validator=attrs.validators.ge(1))


DEFAULT_WS_API_CONFIG: Final = WsApiConfig()


@attrs.frozen(kw_only=True)
class WsApiConnectionInfo:
    """A snapshot of one live WS API connection.

    Attributes:
        id: Connection id (also in the ``sim.wsapi.*`` log lines).
        remote: Client IP (or the label given to :func:`handle_ws_api`).
        connected_at_ms: Simulator epoch ms of the handshake.
        api_key: The key authenticated by ``session.logon``, or ``None``.
        subscriptions: ``(subscriptionId, api key)`` of the active user data subscriptions.
        requests: Requests answered so far.
        events_sent: User data events queued for the client so far.
        outstanding_pings: Pings not yet echoed.
    """

    id: int
    remote: str
    connected_at_ms: int
    api_key: str | None
    subscriptions: tuple[tuple[int, str], ...]
    requests: int
    events_sent: int
    outstanding_pings: int


@attrs.frozen(kw_only=True)
class WsApiStatistics:
    """Counters of one :class:`WsApiContext` since creation."""

    connections_open: int
    connections_accepted: int
    handshakes_rejected: int
    requests: int
    errors: int
    events_sent: int


# --- per-connection state -------------------------------------------------------------------


@attrs.define(eq=False, kw_only=True)
class _Subscription:
    id: int
    api_key: str
    via_logon: bool
    remove_listener: Callable[[], None]


@attrs.define(eq=False, kw_only=True)
class _Connection(WsConnection):
    return_rate_limits: bool
    send_chan: trio.MemorySendChannel[str]
    logon: ApiKey | None = None
    authorized_since_ms: int | None = None
    subscriptions: dict[int, _Subscription] = attrs.field(factory=dict)
    next_subscription_id: int = 0
    outstanding_pings: int = 0
    requests: int = 0
    events_sent: int = 0

    def subscription_for(self, api_key: str) -> _Subscription | None:
        return next((s for s in self.subscriptions.values() if s.api_key == api_key), None)

    def info(self) -> WsApiConnectionInfo:
        return WsApiConnectionInfo(
            id=self.id,
            remote=self.remote,
            connected_at_ms=self.connected_at_ms,
            api_key=None if self.logon is None else self.logon.api_key,
            subscriptions=tuple((s.id, s.api_key) for s in self.subscriptions.values()),
            requests=self.requests,
            events_sent=self.events_sent,
            outstanding_pings=self.outstanding_pings,
        )


# --- the context ----------------------------------------------------------------------------


@attrs.define(eq=False, kw_only=True)
class WsApiContext:
    """What the WS API serves from, plus its live-connection registry.

    One context serves any number of connections (and may be shared by several listeners).

    Attributes:
        exchange: The exchange core (shared with REST, streams and the market feed).
        clock: Simulator clock: ``serverTime``, event times, recvWindow checks, rate windows.
        keys: Registered API keys (usually the REST app's :class:`~genesis.sim.auth.KeyStore`,
            so one key works on both APIs); accounts must exist in ``exchange``.
        limiter: Rate limits, shared with REST (REQUEST_WEIGHT per IP, ORDERS per account).
        config: Limits and timings.
        count_later_first_fills: Register an exchange first-fill listener that lowers the
            unfilled order count when a resting order fills later. Leave it False when a
            :class:`~genesis.sim.rest.RestApp` shares ``limiter`` (it registers one already;
            two would decrement twice); set it when the WS API runs without REST.
    """

    exchange: Exchange
    clock: SimClock
    keys: KeyStore
    limiter: RateLimiter = attrs.field(factory=RateLimiter)
    config: WsApiConfig = DEFAULT_WS_API_CONFIG
    count_later_first_fills: bool = False
    _attempts: AttemptLimiter = attrs.field(init=False)
    _conns: ConnectionRegistry[_Connection] = attrs.field(
        factory=lambda: ConnectionRegistry(_LOG, "dropped"), init=False
    )
    _accepted: int = attrs.field(default=0, init=False)
    _rejected: int = attrs.field(default=0, init=False)
    _requests: int = attrs.field(default=0, init=False)
    _errors: int = attrs.field(default=0, init=False)
    _events: int = attrs.field(default=0, init=False)

    @_attempts.default
    def _make_attempts(self) -> AttemptLimiter:
        return AttemptLimiter(self.config.max_connect_attempts, self.config.connect_window_s)

    def __attrs_post_init__(self) -> None:
        if self.count_later_first_fills:
            self.exchange.add_first_fill_listener(self._on_first_fill)

    def _on_first_fill(self, api_key: str, order: Order) -> None:
        self.limiter.order_filled(api_key, order.update_time_ms)

    # --- registry and controls ------------------------------------------------------------

    def connections(self) -> tuple[WsApiConnectionInfo, ...]:
        """Snapshots of the live connections, oldest first."""
        return tuple(conn.info() for conn in self._conns.live())

    def statistics(self) -> WsApiStatistics:
        """Counters since creation."""
        return WsApiStatistics(
            connections_open=len(self._conns),
            connections_accepted=self._accepted,
            handshakes_rejected=self._rejected,
            requests=self._requests,
            errors=self._errors,
            events_sent=self._events,
        )

    def shutdown(self, conn_id: int) -> bool:
        """Planned close of ``conn_id``: ``serverShutdown``, then a 1001 close frame.

        Never blocks (the connection's own task closes it). Returns whether it was live.
        """
        return self._conns.shutdown(conn_id)

    def shutdown_all(self) -> int:
        """:meth:`shutdown` every live connection; returns how many there were."""
        return self._conns.shutdown_all()

    def drop(self, conn_id: int) -> bool:
        """Drop ``conn_id`` without a close frame (the client sees 1006). Never blocks."""
        return self._conns.drop(conn_id)

    # --- connection lifecycle (used by handle_ws_api) --------------------------------------

    def _register(
        self, remote: str, return_rate_limits: bool, send_chan: trio.MemorySendChannel[str]
    ) -> _Connection:
        conn = self._conns.register(
            lambda conn_id: _Connection(
                id=conn_id,
                remote=remote,
                connected_at_ms=self.clock.now_ms(),
                opened_at=trio.current_time(),
                return_rate_limits=return_rate_limits,
                send_chan=send_chan,
            )
        )
        self._accepted += 1
        return conn

    def _unregister(self, conn: _Connection) -> None:
        for sub in conn.subscriptions.values():
            sub.remove_listener()
        conn.subscriptions.clear()
        self._conns.unregister(conn)
        conn.send_chan.close()

    def _drop_ip(self, ip: str) -> None:
        for conn in self._conns.live():
            if conn.remote == ip:
                conn.request_close(Close("IP banned", code=CLOSE_POLICY))


# --- signing ------------------------------------------------------------------------------


def _param_text(value: object) -> str:
    """A JSON parameter value as the text that is signed and parsed."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return orjson.dumps(value).decode()


def signature_payload(params: dict[str, str]) -> str:
    """The WS API signature payload: every param but ``signature``, sorted, ``k=v&...``.

    No percent-encoding: the HMAC (or Ed25519) runs over the UTF-8 bytes of this text.

    >>> signature_payload({"symbol": "BTCUSDT", "apiKey": "k", "signature": "x"})
    'apiKey=k&symbol=BTCUSDT'
    """
    return "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "signature")


def _urlencoded_payload(params: dict[str, str], raw: dict[str, object]) -> str:
    # python-binance signs urlencode(sorted params) with Python's str() of each value.
    pairs = [
        (k, raw[k] if isinstance(raw[k], str) else str(raw[k]))
        for k in sorted(params)
        if k != "signature"
    ]
    return urllib.parse.urlencode(pairs)


def _verify(key: ApiKey, params: dict[str, str], raw: dict[str, object]) -> None:
    signature = params.get("signature")
    sig = None if signature is None else signature.encode()
    payload = signature_payload(params)
    try:
        verify_signature(key, SignedPayload(payload.encode(), sig))
    except SimReject as exc:
        alternative = _urlencoded_payload(params, raw)
        if exc.code != INVALID_SIGNATURE or alternative == payload:
            raise
        verify_signature(key, SignedPayload(alternative.encode(), sig))


# --- frames ---------------------------------------------------------------------------------


def _json_default(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _dumps(value: object) -> str:
    return orjson.dumps(value, default=_json_default).decode()


RequestId = int | str | None


@attrs.define(kw_only=True)
class _Failure(Exception):
    """A WS API error answer raised inside request processing (never escapes it)."""

    status: int
    code: int
    msg: str
    data: dict[str, int] | None = None
    revoke: bool = False  # answer with id null (a revoked session)

    @classmethod
    def of(cls, error: SimReject) -> _Failure:
        return cls(status=error.status, code=error.code, msg=error.msg)


def _error_frame(
    req_id: RequestId, failure: _Failure, rate_limits: list[dict[str, object]] | None
) -> str:
    error: dict[str, object] = {"code": failure.code, "msg": failure.msg}
    if failure.data is not None:
        error["data"] = failure.data
    body: dict[str, object] = {"id": req_id, "status": failure.status, "error": error}
    if rate_limits is not None:
        body["rateLimits"] = rate_limits
    return _dumps(body)


def _result_frame(
    req_id: RequestId, result: object, rate_limits: list[dict[str, object]] | None
) -> str:
    body: dict[str, object] = {"id": req_id, "status": 200, "result": result}
    if rate_limits is not None:
        body["rateLimits"] = rate_limits
    return _dumps(body)


def _valid_id(value: object) -> bool:
    if value is None or isinstance(value, str):
        return True
    return isinstance(value, int) and not isinstance(value, bool)


# --- request processing -----------------------------------------------------------------------


@attrs.define(kw_only=True)
class _Request:
    req_id: RequestId
    method: str
    raw: dict[str, object]
    params: Params
    now_ms: int
    return_rate_limits: bool
    account: str | None = None  # ORDERS windows to report (order.place)
    succeeded: bool = False


class _Handler:
    """Processes the requests of one connection; every method is sync and never blocks."""

    def __init__(self, ctx: WsApiContext, conn: _Connection) -> None:
        self.ctx = ctx
        self.conn = conn
        self.methods: dict[str, Callable[[_Request], object]] = {
            "ping": self._ping,
            "time": self._time,
            "session.logon": self._session_logon,
            "session.status": self._session_status,
            "session.logout": self._session_logout,
            "session.subscriptions": self._session_subscriptions,
            "userDataStream.subscribe": self._uds_subscribe,
            "userDataStream.subscribe.signature": self._uds_subscribe_signature,
            "userDataStream.unsubscribe": self._uds_unsubscribe,
            "order.place": self._order_place,
            "order.cancel": self._order_cancel,
            "order.status": self._order_status,
        }

    # --- entry ------------------------------------------------------------------------------

    def process(self, message: str | bytes) -> str:
        """Answer one inbound frame (user data events it causes are queued before it)."""
        ctx = self.ctx
        ctx._requests += 1
        self.conn.requests += 1
        now_ms = ctx.clock.now_ms()
        parsed = self._parse(message)
        if isinstance(parsed, tuple):
            req_id, failure = parsed
            return self._answer_failure(req_id, failure, now_ms)
        request = parsed
        request.now_ms = now_ms
        handler = self.methods.get(request.method)
        weight = METHOD_WEIGHTS.get(request.method, _UNKNOWN_METHOD_WEIGHT)
        try:
            self.ctx.limiter.admit_request(self.conn.remote, weight, now_ms)
        except SimReject as exc:
            return self._limited(request, exc)
        try:
            if handler is None:
                raise _Failure(status=400, code=UNSUPPORTED_OPERATION, msg=MSG_UNKNOWN_METHOD)
            result = handler(request)
        except _Failure as failure:
            return self._answer_error(request, failure)
        except SimReject as exc:
            return self._answer_error(request, _Failure.of(exc))
        except Exception:
            logger.exception(
                "sim.wsapi.internal_error id=%d method=%s", self.conn.id, request.method
            )
            return self._answer_error(request, _Failure.of(SimReject(UNKNOWN)))
        if request.succeeded and request.method in _FREE_ON_SUCCESS:
            ctx.limiter.refund_weight(self.conn.remote, weight, now_ms)
        return _result_frame(request.req_id, result, self._rate_limits(request))

    def _parse(self, message: str | bytes) -> _Request | tuple[RequestId, _Failure]:
        bad_json = _Failure(status=400, code=INVALID_JSON, msg=MSG_INVALID_JSON)
        if isinstance(message, bytes):  # requests must be text frames
            return None, bad_json
        try:
            decoded: object = orjson.loads(message)
        except orjson.JSONDecodeError:
            return None, bad_json
        if not isinstance(decoded, dict):
            return None, bad_json
        if "id" not in decoded:
            return None, _mandatory("id")
        req_id: object = decoded["id"]
        if not _valid_id(req_id) or not isinstance(req_id, int | str | None):
            return None, _Failure(status=400, code=INVALID_JSON, msg=MSG_INVALID_ID)
        method: object = decoded.get("method")
        if not isinstance(method, str) or not method:
            return req_id, _mandatory("method")
        raw: object = decoded.get("params", {})
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            return req_id, _Failure(status=400, code=INVALID_JSON, msg=MSG_INVALID_PARAMS)
        values = {str(k): _param_text(v) for k, v in raw.items() if v is not None}
        raw_values = {str(k): v for k, v in raw.items() if v is not None}
        return_rate_limits = self.conn.return_rate_limits
        flag = raw_values.get("returnRateLimits")
        if flag is not None and values["returnRateLimits"].lower() in ("true", "false"):
            return_rate_limits = values["returnRateLimits"].lower() == "true"
        params = Params(values)
        params.read.add("returnRateLimits")
        return _Request(
            req_id=req_id,
            method=method.removeprefix("v3/"),
            raw=raw_values,
            params=params,
            now_ms=0,
            return_rate_limits=return_rate_limits,
        )

    # --- answers ----------------------------------------------------------------------------

    def _rate_limits(self, request: _Request) -> list[dict[str, object]] | None:
        if not request.return_rate_limits:
            return None
        return self._rate_limit_entries(request.account, request.now_ms)

    def _rate_limit_entries(self, account: str | None, now_ms: int) -> list[dict[str, object]]:
        limiter = self.ctx.limiter
        entries: list[dict[str, object]] = []
        if account is not None:
            entries += [
                {**limit.to_wire(), "count": count}
                for limit, count in limiter.order_counts(account, now_ms)
            ]
        usage = limiter.usage(self.conn.remote, None, now_ms)
        entries += [
            {**limit.to_wire(), "count": usage.used_weight.get(limit.header_suffix, 0)}
            for limit in limiter.limits
            if limit.kind == "REQUEST_WEIGHT"
        ]
        return entries

    def _answer_error(self, request: _Request, failure: _Failure) -> str:
        self.ctx._errors += 1
        logger.info(
            "sim.wsapi.rejected id=%d method=%s status=%d code=%d",
            self.conn.id,
            request.method,
            failure.status,
            failure.code,
        )
        req_id = None if failure.revoke else request.req_id
        return _error_frame(req_id, failure, self._rate_limits(request))

    def _answer_failure(self, req_id: RequestId, failure: _Failure, now_ms: int) -> str:
        """An error for a frame that never became a request (bad JSON, bad id...)."""
        try:
            self.ctx.limiter.admit_request(self.conn.remote, _UNKNOWN_METHOD_WEIGHT, now_ms)
        except SimReject as exc:
            failure = self._limit_failure(exc, now_ms, None)
        self.ctx._errors += 1
        logger.info("sim.wsapi.bad_request id=%d code=%d", self.conn.id, failure.code)
        rate_limits = (
            self._rate_limit_entries(None, now_ms) if self.conn.return_rate_limits else None
        )
        return _error_frame(req_id, failure, rate_limits)

    def _limited(self, request: _Request, exc: SimReject) -> str:
        return self._answer_error(request, self._limit_failure(exc, request.now_ms, None))

    def _limit_failure(self, exc: SimReject, now_ms: int, account: str | None) -> _Failure:
        """A 429/418 from the limiter, with ``data.retryAfter`` in epoch ms."""
        limiter = self.ctx.limiter
        retry_after = now_ms
        if exc.status == 418:
            retry_after = limiter.banned_until_ms(self.conn.remote, now_ms) or now_ms
            logger.warning("sim.wsapi.ip_banned ip=%s until_ms=%d", self.conn.remote, retry_after)
            self.ctx._drop_ip(self.conn.remote)
        elif exc.code == TOO_MANY_ORDERS and account is not None:
            retry_after = _orders_reset_ms(limiter, account, now_ms)
        elif exc.code == TOO_MANY_REQUESTS:
            retry_after = _weight_reset_ms(limiter, self.conn.remote, now_ms)
        return _Failure(
            status=exc.status,
            code=exc.code,
            msg=exc.msg,
            data={"serverTime": now_ms, "retryAfter": retry_after},
        )

    # --- authentication ---------------------------------------------------------------------

    def _authenticated_key(self, request: _Request) -> str:
        """The account a signed request acts for: explicit ``apiKey`` or the session's."""
        params = request.params
        if params.has("apiKey"):
            key = self._signed_key(request)
        else:
            key = self._session_key(request)
            check_timestamp(
                params.get("timestamp"), params.get("recvWindow"), now_ms=request.now_ms
            )
        return key.api_key

    def _signed_key(self, request: _Request) -> ApiKey:
        """``apiKey`` + ``signature`` + ``timestamp`` checked exactly as REST checks them."""
        params = request.params
        key = self.ctx.keys.authenticate(params.require("apiKey"))
        params.read.add("signature")
        _verify(key, params.values, request.raw)
        check_timestamp(params.get("timestamp"), params.get("recvWindow"), now_ms=request.now_ms)
        return key

    def _session_key(self, request: _Request) -> ApiKey:
        conn = self.conn
        if conn.logon is None:
            raise SimReject.of(MANDATORY_PARAM_EMPTY_OR_MALFORMED, MSG_MANDATORY_PARAM, "apiKey")
        if self.ctx.keys.get(conn.logon.api_key) is not conn.logon:
            # Binance: a session whose key became invalid is revoked on its next request,
            # answered with id null and -2015.
            logger.info("sim.wsapi.session_revoked id=%d", conn.id)
            self._end_logon(request.now_ms)
            raise _Failure(
                status=401,
                code=REJECTED_MBX_KEY,
                msg=SimReject(REJECTED_MBX_KEY).msg,
                revoke=True,
            )
        return conn.logon

    # --- general ----------------------------------------------------------------------------

    def _ping(self, request: _Request) -> object:
        request.params.check_all_read()
        return {}

    def _time(self, request: _Request) -> object:
        request.params.check_all_read()
        return {"serverTime": request.now_ms}

    # --- session ----------------------------------------------------------------------------

    def _status(self, now_ms: int) -> dict[str, object]:
        conn = self.conn
        return {
            "apiKey": None if conn.logon is None else conn.logon.api_key,
            "authorizedSince": conn.authorized_since_ms,
            "connectedSince": conn.connected_at_ms,
            "returnRateLimits": conn.return_rate_limits,
            "serverTime": now_ms,
            "userDataStream": bool(conn.subscriptions),
        }

    def _session_logon(self, request: _Request) -> object:
        params = request.params
        key = self.ctx.keys.authenticate(params.require("apiKey"))
        if key.kind is not KeyKind.ED25519:
            # Ed25519 only (FACTS.md §2); Binance answers other key types as a bad signature.
            logger.info("sim.wsapi.logon_key_type id=%d kind=%s", self.conn.id, key.kind.value)
            raise SimReject(INVALID_SIGNATURE)
        params.read.add("signature")
        _verify(key, params.values, request.raw)
        timestamp = params.get("timestamp")
        check_timestamp(timestamp, params.get("recvWindow"), now_ms=request.now_ms)
        params.check_all_read()
        conn = self.conn
        if conn.logon is not None and conn.logon.api_key != key.api_key:
            self._end_logon(request.now_ms)
        conn.logon = key
        conn.authorized_since_ms = parse_timestamp_us(timestamp) // 1000
        logger.info("sim.wsapi.logon id=%d api_key=%s", conn.id, key.api_key[:8])
        return self._status(request.now_ms)

    def _session_status(self, request: _Request) -> object:
        request.params.check_all_read()
        return self._status(request.now_ms)

    def _session_logout(self, request: _Request) -> object:
        request.params.check_all_read()
        if self.conn.logon is not None:
            logger.info("sim.wsapi.logout id=%d", self.conn.id)
        self._end_logon(request.now_ms)
        return self._status(request.now_ms)

    def _end_logon(self, now_ms: int) -> None:
        conn = self.conn
        for sub in [s for s in conn.subscriptions.values() if s.via_logon]:
            self._terminate(sub, now_ms)
        conn.logon = None
        conn.authorized_since_ms = None

    def _session_subscriptions(self, request: _Request) -> object:
        request.params.check_all_read()
        return [{"subscriptionId": sub_id} for sub_id in self.conn.subscriptions]

    # --- user data stream -------------------------------------------------------------------

    def _uds_subscribe(self, request: _Request) -> object:
        request.params.check_all_read()
        if self.conn.logon is None:
            raise _Failure(status=401, code=UNAUTHORIZED, msg=MSG_NOT_AUTHORIZED)
        key = self._session_key(request)
        return {"subscriptionId": self._subscribe(key.api_key, via_logon=True)}

    def _uds_subscribe_signature(self, request: _Request) -> object:
        key = self._signed_key(request)
        request.params.check_all_read()
        return {"subscriptionId": self._subscribe(key.api_key, via_logon=False)}

    def _subscribe(self, api_key: str, *, via_logon: bool) -> int:
        conn = self.conn
        config = self.ctx.config
        if conn.subscription_for(api_key) is not None:
            raise _Failure(status=400, code=SUBSCRIPTION_ACTIVE, msg=MSG_SUBSCRIPTION_ACTIVE)
        if len(conn.subscriptions) >= config.max_active_subscriptions:
            raise _Failure(
                status=400, code=MAXIMUM_SUBSCRIPTION_IDS, msg=MSG_TOO_MANY_SUBSCRIPTIONS
            )
        if conn.next_subscription_id >= config.max_subscription_ids:
            raise _Failure(status=400, code=MAXIMUM_SUBSCRIPTION_IDS, msg=MSG_MAX_SUBSCRIPTION_IDS)
        sub_id = conn.next_subscription_id
        conn.next_subscription_id += 1
        remove = self.ctx.exchange.add_user_listener(
            api_key, functools.partial(self._on_event, sub_id)
        )
        conn.subscriptions[sub_id] = _Subscription(
            id=sub_id, api_key=api_key, via_logon=via_logon, remove_listener=remove
        )
        logger.info(
            "sim.wsapi.subscribed id=%d subscription=%d api_key=%s logon=%s",
            conn.id,
            sub_id,
            api_key[:8],
            via_logon,
        )
        return sub_id

    def _uds_unsubscribe(self, request: _Request) -> object:
        params = request.params
        wanted = params.uint("subscriptionId")
        params.check_all_read()
        conn = self.conn
        if wanted is None:
            targets = list(conn.subscriptions.values())
        else:
            found = conn.subscriptions.get(wanted)
            targets = [] if found is None else [found]
        if not targets:
            raise _Failure(status=400, code=SUBSCRIPTION_INACTIVE, msg=MSG_SUBSCRIPTION_INACTIVE)
        for sub in targets:
            self._terminate(sub, request.now_ms)
        return {}

    def _terminate(self, sub: _Subscription, now_ms: int) -> None:
        """End ``sub``: stop its events, then queue its ``eventStreamTerminated``."""
        sub.remove_listener()
        del self.conn.subscriptions[sub.id]
        self._on_event(sub.id, {"e": "eventStreamTerminated", "E": now_ms})
        logger.info("sim.wsapi.unsubscribed id=%d subscription=%d", self.conn.id, sub.id)

    def _on_event(self, sub_id: int, event: JsonObject) -> None:
        """Exchange listener: queue ``{"subscriptionId":N,"event":{..}}``; never blocks."""
        conn = self.conn
        if conn.close is not None:
            return
        frame = f'{{"subscriptionId":{sub_id},"event":{_dumps(event)}}}'
        try:
            conn.send_chan.send_nowait(frame)
        except trio.WouldBlock:
            logger.warning(
                "sim.wsapi.slow_consumer id=%d buffer=%d", conn.id, self.ctx.config.outbound_buffer
            )
            conn.request_close(Close("slow consumer", code=CLOSE_POLICY))
            return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the connection is going away; its listeners are being removed
        conn.events_sent += 1
        self.ctx._events += 1

    # --- trading ----------------------------------------------------------------------------

    def _order_place(self, request: _Request) -> object:
        params = request.params
        api_key = self._authenticated_key(request)
        fields = read_order_fields(params)
        params.check_all_read()
        limiter = self.ctx.limiter
        request.account = api_key
        try:
            limiter.admit_order(api_key, request.now_ms)
        except SimReject as exc:
            raise self._limit_failure(exc, request.now_ms, api_key) from None
        result = place_counted_order(
            self.ctx.exchange, limiter, api_key, fields, now_ms=request.now_ms
        )
        request.succeeded = True
        return result_to_wire(result)

    def _order_cancel(self, request: _Request) -> object:
        api_key = self._authenticated_key(request)
        row = cancel_order_request(
            self.ctx.exchange, api_key, request.params, now_ms=request.now_ms
        )
        request.succeeded = True
        return row

    def _order_status(self, request: _Request) -> object:
        api_key = self._authenticated_key(request)
        return query_order_request(self.ctx.exchange, api_key, request.params)


def _mandatory(name: str) -> _Failure:
    return _Failure(
        status=400,
        code=MANDATORY_PARAM_EMPTY_OR_MALFORMED,
        msg=fmt(MSG_MANDATORY_PARAM, name),
    )


def _weight_reset_ms(limiter: RateLimiter, ip: str, now_ms: int) -> int:
    """When the exhausted REQUEST_WEIGHT window (or, failing that, RAW_REQUESTS) resets."""
    used = limiter.usage(ip, None, now_ms).used_weight
    resets = [
        window_start_ms(now_ms, limit.window_ms) + limit.window_ms
        for limit in limiter.limits
        if limit.kind == "REQUEST_WEIGHT" and used.get(limit.header_suffix, 0) > limit.limit
    ]
    if not resets:
        resets = [
            window_start_ms(now_ms, limit.window_ms) + limit.window_ms
            for limit in limiter.limits
            if limit.kind == "RAW_REQUESTS"
        ]
    return max(resets, default=now_ms)


def _orders_reset_ms(limiter: RateLimiter, account: str, now_ms: int) -> int:
    """When the exhausted ORDERS window resets (the longest one if several are full)."""
    resets = [
        window_start_ms(now_ms, limit.window_ms) + limit.window_ms
        for limit, count in limiter.order_counts(account, now_ms)
        if count >= limit.limit
    ]
    return max(resets, default=now_ms)


# --- handshake ------------------------------------------------------------------------------


@attrs.frozen
class _Refusal:
    status: int
    code: int
    msg: str


def _connection_options(target: str) -> bool | _Refusal:
    """``returnRateLimits`` for a request target, or why the handshake is refused."""
    parts = urllib.parse.urlsplit(target)
    if urllib.parse.unquote(parts.path).rstrip("/") != WS_API_PATH:
        return _Refusal(404, UNSUPPORTED_OPERATION, MSG_UNSUPPORTED)
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    time_unit = query.get("timeUnit", ["MILLISECOND"])[-1]
    if time_unit.upper() != "MILLISECOND":
        if time_unit in ("MICROSECOND", "microsecond"):
            return _Refusal(400, UNSUPPORTED_OPERATION, MSG_UNSUPPORTED)
        return _Refusal(400, INVALID_TIME_UNIT, MSG_INVALID_TIME_UNIT)
    if query.get("responseFormat", ["json"])[-1].lower() == "sbe":
        return _Refusal(400, UNSUPPORTED_OPERATION, MSG_UNSUPPORTED)
    return query.get("returnRateLimits", ["true"])[-1].lower() != "false"


def _remote_of(request: trio_websocket.WebSocketRequest) -> str:
    remote = request.remote
    if isinstance(remote, trio_websocket.Endpoint):
        return str(remote.address)
    return "local"


async def _refuse(
    ctx: WsApiContext, request: trio_websocket.WebSocketRequest, refusal: _Refusal, ip: str
) -> None:
    ctx._rejected += 1
    logger.info(
        "sim.wsapi.reject status=%d code=%d remote=%s path=%s",
        refusal.status,
        refusal.code,
        ip,
        request.path[:200],
    )
    body = orjson.dumps({"code": refusal.code, "msg": refusal.msg})
    await request.reject(refusal.status, extra_headers=list(_JSON_BODY), body=body)


async def handle_ws_api(
    request: trio_websocket.WebSocketRequest,
    ctx: WsApiContext,
    *,
    remote_ip: str | None = None,
) -> None:
    """Serve one ``/ws-api/v3`` connection from its handshake until it ends.

    Checks the connection-attempt limit, the path and URL options and the IP's weight (the
    connection costs 2), then accepts and answers requests, delivers user data events, pings,
    and enforces the pong deadline and the age cap. Returns when the client leaves, a limit or
    :meth:`WsApiContext.shutdown`/``drop`` closes the connection (after a close handshake
    bounded by ``disconnect_timeout_s``; an abrupt close returns without one and leaves it to the
    stream's owner to close the transport), or the caller cancels. Every client behaviour ends
    in a normal return. Subscriptions are removed from the exchange in every case.

    Args:
        request: The handshake, e.g. from ``trio_websocket.wrap_server_stream`` (use
            ``ctx.config.message_queue_size``) or a trio-websocket server handler.
        ctx: What to serve from; shared by all connections.
        remote_ip: Client address for the per-IP limits; by default the socket's peer
            address (``"local"`` for streams that are not sockets).
    """
    ip = remote_ip if remote_ip is not None else _remote_of(request)
    if not ctx._attempts.try_acquire(ip, trio.current_time()):
        await _refuse(ctx, request, _Refusal(429, TOO_MANY_REQUESTS, "Too many connections."), ip)
        return
    options = _connection_options(request.path)
    if isinstance(options, _Refusal):
        await _refuse(ctx, request, options, ip)
        return
    try:
        ctx.limiter.admit_request(ip, ctx.config.connection_weight, ctx.clock.now_ms())
    except SimReject as exc:
        await _refuse(ctx, request, _Refusal(exc.status, exc.code, exc.msg), ip)
        return
    ws = await request.accept()
    send_chan, recv_chan = trio.open_memory_channel[str](ctx.config.outbound_buffer)
    conn = ctx._register(ip, options, send_chan)
    logger.info("sim.wsapi.connect id=%d remote=%s path=%s", conn.id, ip, request.path[:200])
    handler = _Handler(ctx, conn)
    try:
        with conn.cancel_scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_send_loop, ws, conn, recv_chan, ctx.config)
                nursery.start_soon(_receive_loop, ws, conn, handler)
                nursery.start_soon(_ping_loop, ws, conn, ctx, nursery)
                nursery.start_soon(
                    functools.partial(watch_age, conn, max_age_s=ctx.config.max_age_s, log=_LOG)
                )
        await _close(ws, conn, recv_chan, ctx)
    finally:
        ctx._unregister(conn)


async def _send_loop(
    ws: trio_websocket.WebSocketConnection,
    conn: _Connection,
    recv_chan: trio.MemoryReceiveChannel[str],
    config: WsApiConfig,
) -> None:
    async for frame in recv_chan:
        # Shielded: a frame is written whole or not at all; a close request (cancellation of
        # the connection scope) waits for it, bounded by the slow-send deadline.
        sent = await send_frame(
            ws, conn, frame, timeout_s=config.slow_send_timeout_s, shield=True, log=_LOG
        )
        if not sent:
            return


async def _receive_loop(
    ws: trio_websocket.WebSocketConnection, conn: _Connection, handler: _Handler
) -> None:
    while (message := await receive_message(ws, conn)) is not None:
        answer = handler.process(message)
        # Events the request caused were queued (send_nowait) before this answer. The answer
        # is queued without a checkpoint first, so it is flushed even when the request closed
        # the connection (an IP ban answers 418, then disconnects).
        try:
            conn.send_chan.send_nowait(answer)
        except trio.WouldBlock:
            await conn.send_chan.send(answer)


async def _ping_loop(
    ws: trio_websocket.WebSocketConnection,
    conn: _Connection,
    ctx: WsApiContext,
    nursery: trio.Nursery,
) -> None:

    def send_ping(payload: bytes) -> None:
        # ws.ping() sends and then waits for the pong echoing this payload (trio-websocket
        # matches payloads and ignores unsolicited pongs), so each ping gets its own task and
        # its own deadline.
        nursery.start_soon(_ping_once, ws, conn, payload, ctx.config.pong_timeout_s)

    await run_pings(
        conn, interval_s=ctx.config.ping_interval_s, clock=ctx.clock, send_ping=send_ping
    )


async def _ping_once(
    ws: trio_websocket.WebSocketConnection, conn: _Connection, payload: bytes, timeout_s: float
) -> None:
    conn.outstanding_pings += 1
    try:
        with trio.move_on_after(timeout_s) as scope:
            await ws.ping(payload)
    except trio_websocket.ConnectionClosed:
        conn.request_close(PEER_GONE)
        return
    finally:
        conn.outstanding_pings -= 1
    if scope.cancelled_caught:
        logger.warning("sim.wsapi.pong_timeout id=%d timeout_s=%g", conn.id, timeout_s)
        conn.request_close(Close("pong timeout", code=CLOSE_POLICY))


async def _close(
    ws: trio_websocket.WebSocketConnection,
    conn: _Connection,
    recv_chan: trio.MemoryReceiveChannel[str],
    ctx: WsApiContext,
) -> None:
    close = conn.close or PEER_GONE
    if close.code is not None and not close.abrupt:
        frames = _final_frames(recv_chan, ctx.clock, notice=close.notice)
        await close_gracefully(
            ws, close.code, close.reason, frames, timeout_s=ctx.config.disconnect_timeout_s
        )
    logger.info(
        "sim.wsapi.disconnect id=%d code=%s reason=%s requests=%d events=%d",
        conn.id,
        "none" if close.code is None else close.code,
        close.reason,
        conn.requests,
        conn.events_sent,
    )


def _final_frames(
    recv_chan: trio.MemoryReceiveChannel[str], clock: SimClock, *, notice: bool
) -> Iterator[str]:
    """What goes out before a graceful close, produced as it is sent (times are send times)."""
    # Answers and events already queued go out before the close (e.g. a 418).
    while True:
        try:
            frame = recv_chan.receive_nowait()
        except trio.WouldBlock:
            break
        yield frame
    if notice:
        yield '{"event":' + shutdown_event(clock.now_ms()) + "}"


# --- serving raw streams and TCP ------------------------------------------------------------


async def handle_ws_api_stream(
    stream: trio.abc.Stream, ctx: WsApiContext, *, remote_ip: str
) -> None:
    """Serve one WS API client on a raw byte stream; always closes ``stream``.

    Reads the HTTP upgrade request within ``handshake_timeout_s`` and runs
    :func:`handle_ws_api`. Works on TCP streams and on ``trio.testing.memory_stream_pair()``
    under ``MockClock``. An abrupt close (slow consumer, :meth:`WsApiContext.drop`) closes the
    transport without a close frame; cancellation closes it at once.

    Args:
        stream: A connected byte stream.
        ctx: What to serve from.
        remote_ip: Client address for the per-IP limits.
    """
    try:
        await serve_handshake(
            stream,
            ctx.config,
            remote_ip=remote_ip,
            log=_LOG,
            serve=functools.partial(handle_ws_api, ctx=ctx, remote_ip=remote_ip),
        )
    finally:
        await trio.aclose_forcefully(stream)


async def serve_ws_api(
    ctx: WsApiContext,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve the WS API over TCP (any path but ``/ws-api/v3`` is refused 404) until cancelled.

    Use ``port = await nursery.start(serve_ws_api, ctx)``. Each connection runs
    :func:`handle_ws_api_stream` in this service's own nursery; cancelling the service closes
    every connection at once (no close frames).

    Args:
        ctx: What to serve from.
        host: Interface to bind, ``127.0.0.1`` by default.
        port: TCP port; 0 picks a free one.
        task_status: Receives the bound port once listening.

    Raises:
        OSError: The address could not be bound.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = int(listeners[0].socket.getsockname()[1])

    handle = socket_handler(functools.partial(handle_ws_api_stream, ctx=ctx))
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        logger.info("sim.wsapi.listening host=%s port=%d", host, bound)
        task_status.started(bound)
        await trio.sleep_forever()
