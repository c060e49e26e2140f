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
- Methods: the sessions (``session.logon``/``status``/``logout``/``subscriptions``), the user
  data stream (``userDataStream.subscribe``, ``.subscribe.signature``, ``.unsubscribe``), and
  every query a client uses, each running the REST endpoint's own handler
  (:data:`~genesis.sim.ws_api_methods.SHARED`): ``ping``, ``time``, ``exchangeInfo``, ``depth``,
  ``trades.recent``/``historical``/``aggregate``, ``klines``, ``uiKlines``, ``avgPrice``,
  ``ticker.24hr``/``price``/``book``, ``account.status``, ``account.rateLimits.orders``,
  ``openOrders.status``, ``openOrders.cancelAll``, ``allOrders``, ``myTrades``, ``order.test``,
  ``order.place``, ``order.cancel``, ``order.status``; plus the rolling window ``ticker``.
  Their parameters, results, weights and errors are REST's (:class:`genesis.sim.params.Params`:
  ``-1102`` missing, ``-1100`` malformed, ``-1104`` "Not all sent parameters were read", which
  Binance's WS API sends too); ``symbols``/``permissions`` come as JSON arrays.
  Not served (``-1020`` "Unknown method."): ``ticker`` for any window but ``1d`` answers
  ``-1020`` "This operation is not supported." (the exchange keeps 24 h of minute history);
  order lists (``orderList.*``, OCO/OTO/OTOCO), ``sor.*``, ``order.cancelReplace``,
  ``order.amend.keepPriority``, ``myPreventedMatches``, ``myAllocations``,
  ``account.commission``, ``order.amendments`` and ``userDataStream.start/ping/stop`` (the
  listenKey methods Binance removed): the exchange has no order lists, SOR, amendments or
  prevented matches (STP is ``NONE`` only), so answering them would invent behaviour.
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
- Limits: the connection costs 2 REQUEST_WEIGHT, each request its documented weight (the REST
  endpoint's for the shared queries, by the same parameters: ``depth`` by ``limit``,
  ``ticker.*`` by symbols; ``ticker`` 4 per symbol, 200 above 50; session.* and
  userDataStream.* 2; order.place/order.cancel/openOrders.cancelAll 0 once they succeed), all
  in the :class:`~genesis.sim.ratelimit.RateLimiter` shared with REST
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

The modules: this one (connections: handshake, send/receive loops, pings, close), and
:mod:`~genesis.sim.ws_api_state` (configuration, per-connection state, the shared
:class:`~genesis.sim.ws_api_state.WsApiState`), :mod:`~genesis.sim.ws_api_requests` (frames and
signing), :mod:`~genesis.sim.ws_api_dispatch` (one request at a time) and
:mod:`~genesis.sim.ws_api_methods` (the methods; queries are :mod:`genesis.sim.handlers`', the
REST API's own code).

Entry points: :func:`handle_ws_api` serves one handshake that a top-level trio-websocket server
has already read (it dispatches ``/ws-api/v3`` here); :func:`handle_ws_api_stream` serves one raw
byte stream (TCP or ``trio.testing.memory_stream_pair()``, for MockClock tests);
:func:`serve_ws_api` listens on TCP by itself.
"""

from __future__ import annotations

import functools
import logging
import urllib.parse
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
    close_gracefully,
    receive_message,
    run_pings,
    send_frame,
    serve_handshake,
    shutdown_event,
    socket_handler,
    watch_age,
)
from genesis.sim.errors import (
    INVALID_TIME_UNIT,
    MSG_INVALID_JSON,
    MSG_INVALID_TIME_UNIT,
    MSG_NOT_AUTHORIZED,
    MSG_SUBSCRIPTION_ACTIVE,
    MSG_SUBSCRIPTION_INACTIVE,
    MSG_UNKNOWN_METHOD,
    MSG_UNSUPPORTED,
    TOO_MANY_REQUESTS,
    UNSUPPORTED_OPERATION,
    SimReject,
)
from genesis.sim.ratelimit import RateLimiter
from genesis.sim.ws_api_dispatch import Dispatcher
from genesis.sim.ws_api_methods import METHOD_WEIGHTS, METHODS
from genesis.sim.ws_api_requests import signature_payload
from genesis.sim.ws_api_state import (
    DEFAULT_WS_API_CONFIG,
    LOG,
    WsApiConfig,
    WsApiConnection,
    WsApiConnectionInfo,
    WsApiState,
    WsApiStatistics,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from genesis.sim.auth import KeyStore
    from genesis.sim.clock import SimClock
    from genesis.sim.exchange import Exchange, Order

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
# The MSG_* texts are genesis.sim.errors' (the catalog); they stay importable from here, as do
# the names now defined in ws_api_state/ws_api_requests/ws_api_methods.

logger = logging.getLogger(__name__)
_LOG: Final = LOG

_JSON_BODY: Final = [(b"Content-Type", b"application/json;charset=UTF-8")]


# --- the context ----------------------------------------------------------------------------


@attrs.define(eq=False, kw_only=True)
class WsApiContext:
    """What the WS API serves from, plus its shared state (live connections and counters).

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
        state: What the connections, their dispatchers and the fault controls share.
    """

    exchange: Exchange
    clock: SimClock
    keys: KeyStore
    limiter: RateLimiter = attrs.field(factory=RateLimiter)
    config: WsApiConfig = DEFAULT_WS_API_CONFIG
    count_later_first_fills: bool = False
    state: WsApiState = attrs.field(init=False)

    @state.default
    def _make_state(self) -> WsApiState:
        return WsApiState.create(self.config)

    def __attrs_post_init__(self) -> None:
        if self.count_later_first_fills:
            self.exchange.add_first_fill_listener(self._on_first_fill)

    def _on_first_fill(self, api_key: str, order: Order) -> None:
        self.limiter.order_filled(api_key, order.update_time_ms)

    # --- registry and controls ------------------------------------------------------------

    def connections(self) -> tuple[WsApiConnectionInfo, ...]:
        """Snapshots of the live connections, oldest first."""
        return tuple(conn.info() for conn in self.state.connections.live())

    def statistics(self) -> WsApiStatistics:
        """Counters since creation."""
        return self.state.statistics()

    def shutdown(self, conn_id: int) -> bool:
        """Planned close of ``conn_id``: ``serverShutdown``, then a 1001 close frame.

        Never blocks (the connection's own task closes it). Returns whether it was live.
        """
        return self.state.connections.shutdown(conn_id)

    def shutdown_all(self) -> int:
        """:meth:`shutdown` every live connection; returns how many there were."""
        return self.state.connections.shutdown_all()

    def drop(self, conn_id: int) -> bool:
        """Drop ``conn_id`` without a close frame (the client sees 1006). Never blocks."""
        return self.state.connections.drop(conn_id)


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
    ctx.state.rejected += 1
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
    if not ctx.state.attempts.try_acquire(ip, trio.current_time()):
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
    conn = ctx.state.register(
        lambda conn_id: WsApiConnection(
            id=conn_id,
            remote=ip,
            connected_at_ms=ctx.clock.now_ms(),
            opened_at=trio.current_time(),
            return_rate_limits=options,
            send_chan=send_chan,
        )
    )
    logger.info("sim.wsapi.connect id=%d remote=%s path=%s", conn.id, ip, request.path[:200])
    handler = Dispatcher(ctx, conn, METHODS)
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
        ctx.state.unregister(conn)


async def _send_loop(
    ws: trio_websocket.WebSocketConnection,
    conn: WsApiConnection,
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
    ws: trio_websocket.WebSocketConnection, conn: WsApiConnection, handler: Dispatcher
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
    conn: WsApiConnection,
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
    ws: trio_websocket.WebSocketConnection, conn: WsApiConnection, payload: bytes, timeout_s: float
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
    conn: WsApiConnection,
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
