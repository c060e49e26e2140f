"""The WS API's request dispatcher: one per connection, sync, never blocking.

:class:`Dispatcher` answers one request frame at a time: it parses it
(:func:`~genesis.sim.ws_api_requests.parse_request`), charges its weight in the limiter shared
with REST, runs the method (:data:`~genesis.sim.ws_api_methods.METHODS`), and builds the answer
frame with ``rateLimits``. It also holds what methods share: authentication (explicit
``apiKey`` + ``signature``, or the ``session.logon`` key), the limit answers (429/418 with
``data.retryAfter``), and the user data subscriptions of its connection. Counters go to the
public :class:`~genesis.sim.ws_api_state.WsApiState`; nothing here touches another object's
private fields.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Final

import trio

from genesis.sim._wsconn import CLOSE_POLICY, Close
from genesis.sim.auth import ApiKey, check_timestamp
from genesis.sim.errors import (
    MANDATORY_PARAM_EMPTY_OR_MALFORMED,
    MAXIMUM_SUBSCRIPTION_IDS,
    MSG_MANDATORY_PARAM,
    MSG_MAX_SUBSCRIPTION_IDS,
    MSG_SUBSCRIPTION_ACTIVE,
    MSG_TOO_MANY_SUBSCRIPTIONS,
    MSG_UNKNOWN_METHOD,
    REJECTED_MBX_KEY,
    SUBSCRIPTION_ACTIVE,
    TOO_MANY_ORDERS,
    TOO_MANY_REQUESTS,
    UNKNOWN,
    UNSUPPORTED_OPERATION,
    SimReject,
)
from genesis.sim.handlers import Call
from genesis.sim.ratelimit import RateLimiter, window_start_ms
from genesis.sim.ws_api_requests import (
    Failure,
    Request,
    RequestId,
    dumps_text,
    error_frame,
    parse_request,
    result_frame,
    verify,
)
from genesis.sim.ws_api_state import Subscription

if TYPE_CHECKING:
    from collections.abc import Mapping

    from genesis.exchange.endpoints import Endpoint
    from genesis.sim.exchange import JsonObject
    from genesis.sim.handlers import Handler
    from genesis.sim.ws_api import WsApiContext
    from genesis.sim.ws_api_methods import WsMethod
    from genesis.sim.ws_api_state import WsApiConnection

__all__ = ["UNKNOWN_METHOD_WEIGHT", "Dispatcher"]

logger = logging.getLogger("genesis.sim.ws_api")

UNKNOWN_METHOD_WEIGHT: Final = 1
"""An unknown method (or a frame that is no request) is charged 1."""


class Dispatcher:
    """Answers the requests of one connection; every method is sync and never blocks.

    Args:
        ctx: What the WS API serves from (exchange, clock, keys, limiter, config, state).
        conn: The connection whose requests these are.
        methods: The methods by name (:data:`genesis.sim.ws_api_methods.METHODS`).
    """

    def __init__(
        self, ctx: WsApiContext, conn: WsApiConnection, methods: Mapping[str, WsMethod]
    ) -> None:
        self.ctx = ctx
        self.conn = conn
        self.methods = methods

    # --- entry ------------------------------------------------------------------------------

    def process(self, message: str | bytes) -> str:
        """Answer one inbound frame (user data events it causes are queued before it)."""
        ctx = self.ctx
        ctx.state.requests += 1
        self.conn.requests += 1
        now_ms = ctx.clock.now_ms()
        parsed = parse_request(message, return_rate_limits=self.conn.return_rate_limits)
        if isinstance(parsed, tuple):
            req_id, failure = parsed
            return self._answer_failure(req_id, failure, now_ms)
        request = parsed
        request.now_ms = now_ms
        method = self.methods.get(request.method)
        weight = UNKNOWN_METHOD_WEIGHT if method is None else method.weight(request.params.values)
        try:
            ctx.limiter.admit_request(self.conn.remote, weight, now_ms)
        except SimReject as exc:
            return self._answer_error(request, self.limit_failure(exc, now_ms, None))
        try:
            if method is None:
                raise Failure(status=400, code=UNSUPPORTED_OPERATION, msg=MSG_UNKNOWN_METHOD)
            result = method.run(self, request)
        except Failure as failure:
            return self._answer_error(request, failure)
        except SimReject as exc:
            return self._answer_error(request, Failure.of(exc))
        except Exception:
            logger.exception(
                "sim.wsapi.internal_error id=%d method=%s", self.conn.id, request.method
            )
            return self._answer_error(request, Failure.of(SimReject(UNKNOWN)))
        if method.free_on_success:
            ctx.limiter.refund_weight(self.conn.remote, weight, now_ms)
        return result_frame(request.req_id, result, self._rate_limits(request))

    def run_query(self, endpoint: Endpoint, handler: Handler, request: Request) -> object:
        """Run a REST-shared query handler (:mod:`genesis.sim.handlers`) for ``request``.

        Signed endpoints act for :meth:`authenticated_key`; a request that reached the ORDERS
        limits reports the account's ORDERS windows in ``rateLimits``, and a limit refusal gets
        ``retryAfter``.
        """
        account = self.authenticated_key(request) if endpoint.signed else ""
        call = Call(
            exchange=self.ctx.exchange,
            limiter=self.ctx.limiter,
            params=request.params,
            now_ms=request.now_ms,
            api_key=account,
        )
        try:
            return handler(call)
        except SimReject as exc:
            if exc.status in (418, 429):
                raise self.limit_failure(exc, request.now_ms, account or None) from None
            raise
        finally:
            if call.order_counted:
                request.account = account

    # --- answers ----------------------------------------------------------------------------

    def _rate_limits(self, request: Request) -> list[dict[str, object]] | None:
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

    def _answer_error(self, request: Request, failure: Failure) -> str:
        self.ctx.state.errors += 1
        logger.info(
            "sim.wsapi.rejected id=%d method=%s status=%d code=%d",
            self.conn.id,
            request.method,
            failure.status,
            failure.code,
        )
        req_id = None if failure.revoke else request.req_id
        return error_frame(req_id, failure, self._rate_limits(request))

    def _answer_failure(self, req_id: RequestId, failure: Failure, now_ms: int) -> str:
        """An error for a frame that never became a request (bad JSON, bad id...)."""
        try:
            self.ctx.limiter.admit_request(self.conn.remote, UNKNOWN_METHOD_WEIGHT, now_ms)
        except SimReject as exc:
            failure = self.limit_failure(exc, now_ms, None)
        self.ctx.state.errors += 1
        logger.info("sim.wsapi.bad_request id=%d code=%d", self.conn.id, failure.code)
        rate_limits = (
            self._rate_limit_entries(None, now_ms) if self.conn.return_rate_limits else None
        )
        return error_frame(req_id, failure, rate_limits)

    def limit_failure(self, exc: SimReject, now_ms: int, account: str | None) -> Failure:
        """A 429/418 from the limiter, with ``data.retryAfter`` in epoch ms."""
        limiter = self.ctx.limiter
        retry_after = now_ms
        if exc.status == 418:
            retry_after = limiter.banned_until_ms(self.conn.remote, now_ms) or now_ms
            logger.warning("sim.wsapi.ip_banned ip=%s until_ms=%d", self.conn.remote, retry_after)
            self.ctx.state.drop_ip(self.conn.remote)
        elif exc.code == TOO_MANY_ORDERS and account is not None:
            retry_after = _orders_reset_ms(limiter, account, now_ms)
        elif exc.code == TOO_MANY_REQUESTS:
            retry_after = _weight_reset_ms(limiter, self.conn.remote, now_ms)
        return Failure(
            status=exc.status,
            code=exc.code,
            msg=exc.msg,
            data={"serverTime": now_ms, "retryAfter": retry_after},
        )

    # --- authentication ---------------------------------------------------------------------

    def authenticated_key(self, request: Request) -> str:
        """The account a signed request acts for: explicit ``apiKey`` or the session's."""
        params = request.params
        if params.has("apiKey"):
            key = self.signed_key(request)
        else:
            key = self.session_key(request)
            check_timestamp(
                params.get("timestamp"), params.get("recvWindow"), now_ms=request.now_ms
            )
        return key.api_key

    def signed_key(self, request: Request) -> ApiKey:
        """``apiKey`` + ``signature`` + ``timestamp`` checked exactly as REST checks them."""
        params = request.params
        key = self.ctx.keys.authenticate(params.require("apiKey"))
        params.read.add("signature")
        verify(key, params.values, request.raw)
        check_timestamp(params.get("timestamp"), params.get("recvWindow"), now_ms=request.now_ms)
        return key

    def session_key(self, request: Request) -> ApiKey:
        """The ``session.logon`` key; a key removed since revokes the session (id null, -2015)."""
        conn = self.conn
        if conn.logon is None:
            raise SimReject.of(MANDATORY_PARAM_EMPTY_OR_MALFORMED, MSG_MANDATORY_PARAM, "apiKey")
        if self.ctx.keys.get(conn.logon.api_key) is not conn.logon:
            # Binance: a session whose key became invalid is revoked on its next request,
            # answered with id null and -2015.
            logger.info("sim.wsapi.session_revoked id=%d", conn.id)
            self.end_logon(request.now_ms)
            raise Failure(
                status=401,
                code=REJECTED_MBX_KEY,
                msg=SimReject(REJECTED_MBX_KEY).msg,
                revoke=True,
            )
        return conn.logon

    def status(self, now_ms: int) -> dict[str, object]:
        """``session.*``'s result: the logon, the connection and the user data flag."""
        conn = self.conn
        return {
            "apiKey": None if conn.logon is None else conn.logon.api_key,
            "authorizedSince": conn.authorized_since_ms,
            "connectedSince": conn.connected_at_ms,
            "returnRateLimits": conn.return_rate_limits,
            "serverTime": now_ms,
            "userDataStream": bool(conn.subscriptions),
        }

    def end_logon(self, now_ms: int) -> None:
        """Forget the logon and end the subscriptions made through it."""
        conn = self.conn
        for sub in [s for s in conn.subscriptions.values() if s.via_logon]:
            self.terminate(sub, now_ms)
        conn.logon = None
        conn.authorized_since_ms = None

    # --- user data subscriptions --------------------------------------------------------------

    def subscribe(self, api_key: str, *, via_logon: bool) -> int:
        """A new user data subscription for ``api_key``; returns its ``subscriptionId``."""
        conn = self.conn
        config = self.ctx.config
        if conn.subscription_for(api_key) is not None:
            raise Failure(status=400, code=SUBSCRIPTION_ACTIVE, msg=MSG_SUBSCRIPTION_ACTIVE)
        if len(conn.subscriptions) >= config.max_active_subscriptions:
            raise Failure(status=400, code=MAXIMUM_SUBSCRIPTION_IDS, msg=MSG_TOO_MANY_SUBSCRIPTIONS)
        if conn.next_subscription_id >= config.max_subscription_ids:
            raise Failure(status=400, code=MAXIMUM_SUBSCRIPTION_IDS, msg=MSG_MAX_SUBSCRIPTION_IDS)
        sub_id = conn.next_subscription_id
        conn.next_subscription_id += 1
        remove = self.ctx.exchange.add_user_listener(
            api_key, functools.partial(self._on_event, sub_id)
        )
        conn.subscriptions[sub_id] = Subscription(
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

    def terminate(self, sub: Subscription, now_ms: int) -> None:
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
        frame = f'{{"subscriptionId":{sub_id},"event":{dumps_text(event)}}}'
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
        self.ctx.state.events += 1


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
