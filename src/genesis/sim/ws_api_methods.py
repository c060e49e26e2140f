"""The WS API's methods: what each answers, and the REQUEST_WEIGHT it costs.

Market data, account and trading queries are the REST API's own handlers
(:mod:`genesis.sim.handlers`) with the REST endpoint's weight: one implementation of each query,
two transports. ``exchangeInfo`` is ``GET /api/v3/exchangeInfo``, ``depth`` is
``GET /api/v3/depth``, ``order.place`` is ``POST /api/v3/order`` and so on (:data:`SHARED`).
Only what exists on the WS API alone is written here: ``session.*``, ``userDataStream.*``, and
the rolling window ``ticker`` (``GET /api/v3/ticker`` is not among the REST endpoints).

Parameters are read exactly as REST reads them (the WS API sends ``symbols``/``permissions``
as JSON arrays; their JSON text is what REST receives); unread parameters are ``-1104``.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Final

import attrs

from genesis.exchange.endpoints import API_PREFIX, ENDPOINTS
from genesis.sim.auth import KeyKind, check_timestamp, parse_timestamp_us
from genesis.sim.errors import (
    INVALID_SIGNATURE,
    MSG_NOT_AUTHORIZED,
    MSG_SUBSCRIPTION_INACTIVE,
    SUBSCRIPTION_INACTIVE,
    UNAUTHORIZED,
    SimReject,
)
from genesis.sim.handlers import HANDLERS, request_weight, rolling_ticker, rolling_ticker_weight
from genesis.sim.ws_api_requests import Failure, Request, verify

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from genesis.sim.handlers import Handler
    from genesis.sim.ws_api_dispatch import Dispatcher

__all__ = ["METHODS", "METHOD_WEIGHTS", "SHARED", "WsMethod"]

logger = logging.getLogger("genesis.sim.ws_api")


@attrs.frozen(kw_only=True)
class WsMethod:
    """One WS API method.

    Attributes:
        run: Answers a request (sync; raises ``Failure`` or ``SimReject``).
        weight: REQUEST_WEIGHT for the request's parameters (never raises).
        free_on_success: A successful call gets its weight back (order.place/cancel and
            cancelAll, since 2026-04-02, as on REST).
    """

    run: Callable[[Dispatcher, Request], object]
    weight: Callable[[Mapping[str, str]], int]
    free_on_success: bool = False


def _fixed(weight: int) -> Callable[[Mapping[str, str]], int]:
    def fixed(_values: Mapping[str, str]) -> int:
        return weight

    return fixed


SHARED: Final[Mapping[str, tuple[str, str]]] = {
    "ping": ("GET", "ping"),
    "time": ("GET", "time"),
    "exchangeInfo": ("GET", "exchangeInfo"),
    "depth": ("GET", "depth"),
    "trades.recent": ("GET", "trades"),
    "trades.historical": ("GET", "historicalTrades"),
    "trades.aggregate": ("GET", "aggTrades"),
    "klines": ("GET", "klines"),
    "uiKlines": ("GET", "uiKlines"),
    "avgPrice": ("GET", "avgPrice"),
    "ticker.24hr": ("GET", "ticker/24hr"),
    "ticker.price": ("GET", "ticker/price"),
    "ticker.book": ("GET", "ticker/bookTicker"),
    "order.place": ("POST", "order"),
    "order.test": ("POST", "order/test"),
    "order.status": ("GET", "order"),
    "order.cancel": ("DELETE", "order"),
    "openOrders.status": ("GET", "openOrders"),
    "openOrders.cancelAll": ("DELETE", "openOrders"),
    "allOrders": ("GET", "allOrders"),
    "myTrades": ("GET", "myTrades"),
    "account.status": ("GET", "account"),
    "account.rateLimits.orders": ("GET", "rateLimit/order"),
}
"""WS API method → the REST endpoint (method, name under ``/api/v3``) whose handler it runs."""


def _shared(method: str, name: str) -> WsMethod:
    key = (method, f"{API_PREFIX}/{name}")
    endpoint = ENDPOINTS[key]
    handler: Handler = HANDLERS[key]

    def run(dispatcher: Dispatcher, request: Request) -> object:
        return dispatcher.run_query(endpoint, handler, request)

    return WsMethod(
        run=run,
        weight=functools.partial(request_weight, endpoint),
        free_on_success=endpoint.free_on_success,
    )


# --- the WS API's own methods -------------------------------------------------------------------


def _rolling_ticker(dispatcher: Dispatcher, request: Request) -> object:
    return dispatcher.run_query(_PUBLIC, rolling_ticker, request)


def _session_logon(dispatcher: Dispatcher, request: Request) -> object:
    params = request.params
    key = dispatcher.ctx.keys.authenticate(params.require("apiKey"))
    conn = dispatcher.conn
    if key.kind is not KeyKind.ED25519:
        # Ed25519 only (FACTS.md §2); Binance answers other key types as a bad signature.
        logger.info("sim.wsapi.logon_key_type id=%d kind=%s", conn.id, key.kind.value)
        raise SimReject(INVALID_SIGNATURE)
    params.read.add("signature")
    verify(key, params.values, request.raw)
    timestamp = params.get("timestamp")
    check_timestamp(timestamp, params.get("recvWindow"), now_ms=request.now_ms)
    params.check_all_read()
    if conn.logon is not None and conn.logon.api_key != key.api_key:
        dispatcher.end_logon(request.now_ms)
    conn.logon = key
    conn.authorized_since_ms = parse_timestamp_us(timestamp) // 1000
    logger.info("sim.wsapi.logon id=%d api_key=%s", conn.id, key.api_key[:8])
    return dispatcher.status(request.now_ms)


def _session_status(dispatcher: Dispatcher, request: Request) -> object:
    request.params.check_all_read()
    return dispatcher.status(request.now_ms)


def _session_logout(dispatcher: Dispatcher, request: Request) -> object:
    request.params.check_all_read()
    if dispatcher.conn.logon is not None:
        logger.info("sim.wsapi.logout id=%d", dispatcher.conn.id)
    dispatcher.end_logon(request.now_ms)
    return dispatcher.status(request.now_ms)


def _session_subscriptions(dispatcher: Dispatcher, request: Request) -> object:
    request.params.check_all_read()
    return [{"subscriptionId": sub_id} for sub_id in dispatcher.conn.subscriptions]


def _uds_subscribe(dispatcher: Dispatcher, request: Request) -> object:
    request.params.check_all_read()
    if dispatcher.conn.logon is None:
        raise Failure(status=401, code=UNAUTHORIZED, msg=MSG_NOT_AUTHORIZED)
    key = dispatcher.session_key(request)
    return {"subscriptionId": dispatcher.subscribe(key.api_key, via_logon=True)}


def _uds_subscribe_signature(dispatcher: Dispatcher, request: Request) -> object:
    key = dispatcher.signed_key(request)
    request.params.check_all_read()
    return {"subscriptionId": dispatcher.subscribe(key.api_key, via_logon=False)}


def _uds_unsubscribe(dispatcher: Dispatcher, request: Request) -> object:
    params = request.params
    wanted = params.uint("subscriptionId")
    params.check_all_read()
    conn = dispatcher.conn
    if wanted is None:
        targets = list(conn.subscriptions.values())
    else:
        found = conn.subscriptions.get(wanted)
        targets = [] if found is None else [found]
    if not targets:
        raise Failure(status=400, code=SUBSCRIPTION_INACTIVE, msg=MSG_SUBSCRIPTION_INACTIVE)
    for sub in targets:
        dispatcher.terminate(sub, request.now_ms)
    return {}


_PUBLIC: Final = ENDPOINTS[("GET", f"{API_PREFIX}/ping")]
"""An unsigned endpoint that counts no order: how the rolling ticker is run."""

METHODS: Final[Mapping[str, WsMethod]] = {
    **{name: _shared(*endpoint) for name, endpoint in SHARED.items()},
    "ticker": WsMethod(run=_rolling_ticker, weight=rolling_ticker_weight),
    "session.logon": WsMethod(run=_session_logon, weight=_fixed(2)),
    "session.status": WsMethod(run=_session_status, weight=_fixed(2)),
    "session.logout": WsMethod(run=_session_logout, weight=_fixed(2)),
    "session.subscriptions": WsMethod(run=_session_subscriptions, weight=_fixed(2)),
    "userDataStream.subscribe": WsMethod(run=_uds_subscribe, weight=_fixed(2)),
    "userDataStream.subscribe.signature": WsMethod(run=_uds_subscribe_signature, weight=_fixed(2)),
    "userDataStream.unsubscribe": WsMethod(run=_uds_unsubscribe, weight=_fixed(2)),
}
"""Every WS API method the simulator answers; any other is ``-1020`` "Unknown method."."""

METHOD_WEIGHTS: Final[Mapping[str, int]] = {
    name: method.weight({}) for name, method in METHODS.items()
}
"""REQUEST_WEIGHT per method without parameters (some depend on them: ``depth``'s ``limit``,
``ticker.*``'s symbols, ``myTrades``' ``orderId``, ``order.test``'s commission rates)."""
