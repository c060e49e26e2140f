"""The simulator's REST API (``/api/v3/*``): the request pipeline, as a raw ASGI app.

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
6. The endpoint's handler (:mod:`genesis.sim.handlers`, the same code the WS API calls; the
   routes are derived from :mod:`genesis.exchange.endpoints` at import, so a path listed there
   without a handler fails the import, not a request); its :class:`SimReject` becomes
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

The modules: :mod:`genesis.sim.asgi` (the ASGI adapter: reading the request, writing the answer,
hypercorn), this module (the pipeline above, faults and counters), :mod:`genesis.sim.params`
(parameters) and :mod:`genesis.sim.handlers` (the endpoints).

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
- ``GET /api/v3/ticker`` (rolling window) is not served: ``exchange/endpoints.py`` does not list
  it. The WS API's ``ticker`` is, for the 24 h window.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Final

import attrs
import trio

from genesis.exchange.endpoints import API_PREFIX, Endpoint
from genesis.sim.asgi import (
    CONTENT_TYPE_JSON,
    MAX_BODY_BYTES,
    AsgiApp,
    HttpReply,
    HttpRequest,
    Receive,
    Scope,
    Send,
    method_and_path,
    read_request,
    send_reply,
    serve_lifespan,
    serve_rest,
)
from genesis.sim.auth import ApiKey, KeyStore, check_timestamp, split_signature, verify_signature
from genesis.sim.errors import TIMEOUT, UNKNOWN, UNSUPPORTED_OPERATION, SimReject, error_body
from genesis.sim.handlers import (
    ROUTES,
    Call,
    Handler,
    cancel_order_request,
    place_counted_order,
    query_order_request,
    read_order_fields,
    request_weight,
)
from genesis.sim.params import Params, dumps
from genesis.sim.ratelimit import RateLimiter, UsageSnapshot

if TYPE_CHECKING:
    from collections.abc import Mapping
    from decimal import Decimal

    from genesis.sim.clock import SimClock
    from genesis.sim.exchange import Exchange, Order

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
# Params, the order helpers and serve_rest live in params/handlers/asgi; they stay importable
# from here for existing callers.

logger = logging.getLogger(__name__)

USER_DATA_STREAM_PATH: Final = f"{API_PREFIX}/userDataStream"
_GONE_BODY: Final = (
    b"<html><head><title>410 Gone</title></head>"
    b"<body><center><h1>410 Gone</h1></center></body></html>"
)
_MSG_UNSUPPORTED: Final = "This operation is not supported."
_PLACE_ORDER: Final = ("POST", f"{API_PREFIX}/order")

_FORGET_EVERY: Final = 10_000
"""Every this many requests, the limiter forgets idle IPs (bounded memory in long soaks)."""


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


# --- the app --------------------------------------------------------------------------------


def _error_reply(error: SimReject) -> HttpReply:
    return HttpReply(status=error.status, body=error.body(), headers=list(error.headers))


def _unknown_outcome() -> SimReject:
    return SimReject(TIMEOUT, status=503)


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
        self._paths = {path for _, path in ROUTES}
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
            await serve_lifespan(receive, send)
            return
        if kind != "http":
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1000})
            return
        reply = await self._respond(scope, receive)
        if self.faults.latency_s > 0:
            await trio.sleep(self.faults.latency_s)
        await send_reply(send, reply)

    # --- the pipeline -----------------------------------------------------------------------

    async def _respond(self, scope: Scope, receive: Receive) -> HttpReply:
        self._requests += 1
        reply = await self._route(scope, receive)
        if reply.status < 400:
            self._ok += 1
        elif reply.status < 500:
            self._client_errors += 1
        else:
            self._server_errors += 1
        return reply

    async def _route(self, scope: Scope, receive: Receive) -> HttpReply:
        method, path = method_and_path(scope)
        if path == USER_DATA_STREAM_PATH:
            logger.info("sim.rest.gone method=%s path=%s", method, path)
            return HttpReply(status=410, body=_GONE_BODY, content_type="text/html")
        route = ROUTES.get((method, path))
        if route is None:
            status = 405 if path in self._paths else 404
            logger.info("sim.rest.no_route method=%s path=%s status=%d", method, path[:100], status)
            return HttpReply(
                status=status, body=error_body(UNSUPPORTED_OPERATION, _MSG_UNSUPPORTED)
            )
        if self.faults.take_error():
            self._injected += 1
            status = self.faults.error_status
            code = -1008 if status == 503 else UNKNOWN
            logger.info("sim.rest.injected_error path=%s status=%d", path, status)
            return HttpReply(status=status, body=SimReject(code, status=status).body())
        try:
            request = await read_request(scope, receive)
        except SimReject as exc:
            logger.info("sim.rest.rejected path=%s code=%d", path, exc.code)
            return _error_reply(exc)
        endpoint, handler = route
        return self._dispatch(endpoint, handler, request)

    def _dispatch(self, endpoint: Endpoint, handler: Handler, request: HttpRequest) -> HttpReply:
        now_ms = self.clock.now_ms()
        if self._requests % _FORGET_EVERY == 0:
            self.limiter.forget_idle(now_ms)
        parse_error: SimReject | None = None
        try:
            params = Params.parse(request.raw_query, request.raw_body)
        except SimReject as exc:
            parse_error = exc
            params = Params({})
        weight = request_weight(endpoint, params.values)
        call = Call(exchange=self.exchange, limiter=self.limiter, params=params, now_ms=now_ms)
        try:
            usage = self.limiter.admit_request(request.client_ip, weight, now_ms)
        except SimReject as exc:
            return _error_reply(exc)
        try:
            if parse_error is not None:
                raise parse_error
            if endpoint.signed:
                call.api_key = self._authenticate(request, params, now_ms)
            reply = HttpReply(body=dumps(self._call(endpoint, handler, call)))
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
        if call.order_counted:
            usage = UsageSnapshot(
                used_weight=usage.used_weight,
                order_count=self.limiter.order_count_snapshot(call.api_key, now_ms),
            )
        reply.headers = [*usage.headers(), *reply.headers]
        return reply

    def _call(self, endpoint: Endpoint, handler: Handler, call: Call) -> object:
        """Run ``handler``; an ``execute_then_503`` fault hides a placement's outcome."""
        if (endpoint.method, endpoint.path) != _PLACE_ORDER:
            return handler(call)
        try:
            result = handler(call)
        except SimReject as exc:
            # A limit refusal (429/418) never reached the engine: the fault waits for the next.
            if exc.status < 429 and self.faults.take_execute_then_503():
                raise _unknown_outcome() from exc
            raise
        if self.faults.take_execute_then_503():
            logger.info("sim.rest.execute_then_503 path=%s", endpoint.path)
            raise _unknown_outcome()
        return result

    def _authenticate(self, request: HttpRequest, params: Params, now_ms: int) -> str:
        key = self.keys.authenticate(request.api_key_header)
        signed = split_signature(request.raw_query, request.raw_body)
        params.read.add("signature")
        verify_signature(key, signed)
        check_timestamp(params.get("timestamp"), params.get("recvWindow"), now_ms=now_ms)
        return key.api_key
