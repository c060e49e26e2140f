"""The simulator's market-stream server: Binance's ``/ws`` and ``/stream`` over trio-websocket.

What a client sees (``shared/binance/FACTS.md`` §7):

- ``/ws/<stream>`` (also ``/ws/<s1>/<s2>`` and a bare ``/ws``) delivers raw payloads;
  ``/stream?streams=<s1>/<s2>`` (or a bare ``/stream``) wraps each one as
  ``{"stream":"<name>","data":<raw>}``. URL-encoded names are accepted. An unknown path is
  refused with HTTP 404, an invalid stream name (or more than 1024) with HTTP 400, and the 301st
  connection attempt from one IP within 5 minutes with HTTP 429.
- JSON control messages: ``SUBSCRIBE``, ``UNSUBSCRIBE``, ``LIST_SUBSCRIPTIONS``,
  ``SET_PROPERTY ["combined", bool]`` and ``GET_PROPERTY ["combined"]`` answer
  ``{"result":...,"id":...}``. Errors use the wire shape the live server sends,
  ``{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":1}`` (the documented
  ``{"code","msg"}`` objects wrapped in ``error``; ``id`` is present when it was readable).
- A ping every 20 s carrying a 12-byte payload (epoch ms + sequence number). Only a pong that
  echoes an outstanding ping counts (it also settles older pings); unsolicited pongs are allowed
  but change nothing. When the oldest unanswered ping is 60 s old, the connection is closed with
  1008.
- More than 5 incoming messages in any 1 s window (text/binary messages, PING and PONG frames
  alike) closes the connection with 1008 (Binance documents a disconnect, not a code).
- At ``max_age_s`` (24 h) and on an explicit shutdown request the server sends
  ``{"e":"serverShutdown","E":<ms>}`` (combined: ``{"stream":"!serverShutdown","data":{...}}``)
  and closes with 1001.
- A connection whose hub subscriber overflows (the hub counted ``dropped``) is a slow consumer:
  it is logged and closed with 1008; one whose socket accepts no data for
  ``slow_send_timeout_s`` is dropped without a close frame. The hub itself never blocks.

How the server sees ping and pong frames: trio-websocket answers pings and matches pongs inside
its reader task and exposes neither. Rather than subclassing its private ``WebSocketConnection``
machinery, each connection's transport stream is wrapped in :class:`_InboundTap`, a
``trio.abc.Stream`` that hands trio-websocket the bytes unchanged and feeds a copy of the
client-to-server direction into wsproto's own frame parser (``wsproto.frame_protocol``, the
parser trio-websocket's wsproto uses). The tap reports every complete inbound message, PING and
PONG (with its payload) synchronously, on arrival, to the connection, which enforces the rate
limit and the pong rule from there. Only public trio-websocket API is used
(``wrap_server_stream``, ``WebSocketRequest.accept/reject``, ``send_message``, ``ping``,
``aclose``).

Fault controls (:class:`StreamFaults`) can drop connections (TCP closed, no close frame: the client
sees 1006), request a graceful shutdown, stall data frames while pings go on, stop pinging, and
ignore pongs. Connections run in per-connection cancel scopes, so a fault wakes them at once.

:meth:`StreamServer.handle_stream` serves one connection on any ``trio.abc.Stream``, so tests and
virtual soaks can run the server over ``trio.testing.memory_stream_pair()`` under
``MockClock(autojump_threshold=0)``; :func:`serve_market_streams` serves it over TCP.

The connection mechanics this server shares with the WS API (registry, ping schedule, age cap,
slow-send rule, graceful close, handshake) are :mod:`genesis.sim._wsconn`'s; the tap and the pong
rule are this module's own.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import urllib.parse
from typing import TYPE_CHECKING, Final, NoReturn

import attrs
import orjson
import trio
import trio.testing
import trio_websocket
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

from genesis.exchange.endpoints import parse_stream_name
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
from genesis.sim.limits import AttemptLimiter, SlidingWindowCounter, StreamServerConfig

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from genesis.sim.clock import SimClock
    from genesis.sim.hub import StreamHub, Subscriber

__all__ = [
    "DEFAULT_STREAM_SERVER_CONFIG",
    "INVALID_ID_MSG",
    "ConnectionInfo",
    "StreamFaults",
    "StreamServer",
    "StreamServerConfig",
    "StreamServerStatistics",
    "serve_market_streams",
]

logger = logging.getLogger(__name__)
_LOG: Final = ConnLog(logger, "sim.ws")

DEFAULT_STREAM_SERVER_CONFIG: Final = StreamServerConfig()

INVALID_ID_MSG: Final = (
    "Invalid request: request ID must be a signed 64-bit integer, "
    "an alphanumeric string of up to 36 characters, or null"
)
"""Binance's documented text still says "must be an unsigned integer"; this states today's rule."""

_METHODS: Final = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_ID_STRING: Final = re.compile(r"[A-Za-z0-9]{1,36}")
_METHOD_VALUE: Final = re.compile(r'"method"\s*:\s*("(?:[^"\\]|\\.)*"|[^,}\s]+)')
_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
_MAX_HANDSHAKE_BYTES: Final = 64 * 1024
_SHUTDOWN_STREAM: Final = "!serverShutdown"


# --- values ------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ConnectionInfo:
    """A snapshot of one live connection, for the admin API and tests.

    Attributes:
        id: Server-wide connection id (also in the ``sim.ws.*`` log lines).
        path: The request target as sent (``/ws/btcusdt@trade``, ``/stream?streams=...``).
        remote: Client IP (or the label given to :meth:`StreamServer.handle_stream`).
        streams: Subscribed stream names, in subscription order.
        combined: Whether payloads are wrapped as ``{"stream":..,"data":..}``.
        connected_at_ms: Simulator epoch ms of the handshake.
        frames_sent: Data frames delivered (control responses and pings not counted).
        messages_received: Inbound messages, pings and pongs seen.
        outstanding_pings: Pings not yet echoed.
        stalled: Whether data frames are currently withheld by a fault.
    """

    id: int
    path: str
    remote: str
    streams: tuple[str, ...]
    combined: bool
    connected_at_ms: int
    frames_sent: int
    messages_received: int
    outstanding_pings: int
    stalled: bool


@attrs.frozen(kw_only=True)
class StreamServerStatistics:
    """Counters for one server since it started."""

    connections_open: int
    connections_accepted: int
    rejected_not_found: int
    rejected_bad_request: int
    rejected_rate_limited: int
    frames_sent: int


# --- per-connection state ------------------------------------------------------------------


@attrs.define(eq=False, kw_only=True)
class _Connection(WsConnection):
    path: str
    combined: bool
    pong_timeout_s: float
    rate: SlidingWindowCounter
    streams: dict[str, None] = attrs.field(factory=dict)  # ordered set
    frames_sent: int = 0
    frames_withheld: int = 0
    messages_received: int = 0
    pings: dict[bytes, float] = attrs.field(factory=dict)  # payload -> sent at, oldest first
    # Its deadline is the pong deadline: oldest outstanding ping + pong_timeout_s, or +inf.
    pong_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)

    def ping_sent(self, payload: bytes, now: float) -> None:
        self.pings[payload] = now
        self._update_pong_deadline()

    def pong_received(self, payload: bytes) -> None:
        if payload not in self.pings:
            return  # unsolicited or stale: allowed, but it proves nothing
        # A pong for a later ping also settles the earlier ones (RFC 6455 §5.5.3 lets a peer
        # answer only the most recent ping).
        for key in list(self.pings):
            del self.pings[key]
            if key == payload:
                break
        self._update_pong_deadline()

    def _update_pong_deadline(self) -> None:
        oldest = next(iter(self.pings.values()), None)
        self.pong_scope.deadline = math.inf if oldest is None else oldest + self.pong_timeout_s

    def info(self, *, stalled: bool) -> ConnectionInfo:
        return ConnectionInfo(
            id=self.id,
            path=self.path,
            remote=self.remote,
            streams=tuple(self.streams),
            combined=self.combined,
            connected_at_ms=self.connected_at_ms,
            frames_sent=self.frames_sent,
            messages_received=self.messages_received,
            outstanding_pings=len(self.pings),
            stalled=stalled,
        )


# --- fault controls ------------------------------------------------------------------------


@attrs.define(eq=False, kw_only=True)
class StreamFaults:
    """Fault switches for the stream server, and the registry of its live connections.

    Flip the flags at any time; they are read on every frame, ping and pong. The ``*_ids`` sets
    apply a fault to single connections (ids from :meth:`connections`). One instance may be
    shared by several servers; connection ids are unique across them.

    Attributes:
        stall_all: Withhold data frames on every connection (pings and control responses
            continue; withheld payloads are discarded, so the hub never sees a slow consumer).
        stalled_ids: Withhold data frames on these connections only.
        stop_pings: Send no pings (an already outstanding ping still times out).
        ping_stopped_ids: Send no pings on these connections.
        ignore_pongs: Pings are sent but pongs are not honoured, so every connection is closed
            60 s after its first unanswered ping.
        pong_ignored_ids: Ignore pongs on these connections.
    """

    stall_all: bool = False
    stalled_ids: set[int] = attrs.field(factory=set)
    stop_pings: bool = False
    ping_stopped_ids: set[int] = attrs.field(factory=set)
    ignore_pongs: bool = False
    pong_ignored_ids: set[int] = attrs.field(factory=set)
    _conns: ConnectionRegistry[_Connection] = attrs.field(
        factory=lambda: ConnectionRegistry(ConnLog(logger, "sim.ws.fault"), "dropped by fault"),
        init=False,
    )

    def is_stalled(self, conn_id: int) -> bool:
        """Whether data frames are withheld on ``conn_id`` (globally or for it alone)."""
        return self.stall_all or conn_id in self.stalled_ids

    def pings_stopped(self, conn_id: int) -> bool:
        """Whether ``conn_id`` gets no pings."""
        return self.stop_pings or conn_id in self.ping_stopped_ids

    def pongs_ignored(self, conn_id: int) -> bool:
        """Whether pongs from ``conn_id`` are disregarded."""
        return self.ignore_pongs or conn_id in self.pong_ignored_ids

    def stall(self, conn_id: int | None = None) -> None:
        """Withhold data frames on ``conn_id``, or on every connection when None."""
        if conn_id is None:
            self.stall_all = True
        else:
            self.stalled_ids.add(conn_id)

    def unstall(self, conn_id: int | None = None) -> None:
        """Resume data on ``conn_id``, or lift every stall (global and per connection)."""
        if conn_id is None:
            self.stall_all = False
            self.stalled_ids.clear()
        else:
            self.stalled_ids.discard(conn_id)

    def reset(self) -> None:
        """Clear every fault flag (live connections are left alone)."""
        self.stall_all = self.stop_pings = self.ignore_pongs = False
        self.stalled_ids.clear()
        self.ping_stopped_ids.clear()
        self.pong_ignored_ids.clear()

    def connections(self) -> tuple[ConnectionInfo, ...]:
        """Snapshots of the live connections, oldest first."""
        return tuple(c.info(stalled=self.is_stalled(c.id)) for c in self._conns.live())

    def drop(self, conn_id: int) -> bool:
        """Close connection ``conn_id``'s TCP connection now, without a close frame.

        The client sees an abnormal closure (1006), as after a network failure. Returns whether
        the connection was live. Never blocks: the connection's own task does the closing.
        """
        return self._conns.drop(conn_id)

    def drop_all(self) -> int:
        """:meth:`drop` every live connection; returns how many there were."""
        return self._conns.drop_all()

    def shutdown(self, conn_id: int) -> bool:
        """Send ``serverShutdown`` on ``conn_id``, then close it with 1001 (a planned close)."""
        return self._conns.shutdown(conn_id)

    def shutdown_all(self) -> int:
        """:meth:`shutdown` every live connection (drain); returns how many there were."""
        return self._conns.shutdown_all()

    def register(self, make: Callable[[int], _Connection]) -> _Connection:
        """Enter a new connection (built by ``make`` from its id) into the registry."""
        return self._conns.register(make)

    def unregister(self, conn: _Connection) -> None:
        """Remove a closed connection and its per-connection fault switches."""
        self._conns.unregister(conn)
        self.stalled_ids.discard(conn.id)
        self.ping_stopped_ids.discard(conn.id)
        self.pong_ignored_ids.discard(conn.id)


# --- transport tap -------------------------------------------------------------------------


@attrs.define(eq=False)
class _InboundTap(trio.abc.Stream):
    """Passes the transport through untouched and parses a copy of the inbound frames.

    The HTTP upgrade request is skipped (up to the blank line), then every byte goes through
    wsproto's server-side frame parser. ``on_frame`` is called synchronously, inside
    trio-websocket's reader task, before trio-websocket itself sees the bytes; it must not block.
    """

    inner: trio.abc.Stream
    on_frame: Callable[[Opcode, bytes], None] | None = None
    _head: bytearray = attrs.field(factory=bytearray, init=False)
    _frames: FrameProtocol | None = attrs.field(default=None, init=False)
    _broken: bool = attrs.field(default=False, init=False)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        if data and not self._broken:
            self._observe(bytes(data))
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()

    def _observe(self, data: bytes) -> None:
        if self._frames is None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > _MAX_HANDSHAKE_BYTES:
                    self._broken = True  # h11 inside trio-websocket refuses it too
                    self._head.clear()
                return
            data = bytes(self._head[end + 4 :])
            self._head.clear()
            # trio-websocket's server negotiates no extensions, so frames are plain.
            self._frames = FrameProtocol(client=False, extensions=[])
        self._frames.receive_bytes(data)
        try:
            for frame in self._frames.received_frames():
                if frame.opcode in (Opcode.PING, Opcode.PONG):
                    payload = frame.payload
                    self._emit(frame.opcode, payload if isinstance(payload, bytes) else b"")
                elif frame.opcode is not Opcode.CLOSE and frame.message_finished:
                    self._emit(frame.opcode, b"")
        except ParseFailed:
            # trio-websocket parses the same bytes, fails the same way and closes (1002/1007).
            self._broken = True

    def _emit(self, opcode: Opcode, payload: bytes) -> None:
        if self.on_frame is not None:
            self.on_frame(opcode, payload)


# --- the server ----------------------------------------------------------------------------


@attrs.define(eq=False)
class StreamServer:
    """Serves Binance market streams from a :class:`~genesis.sim.hub.StreamHub`.

    Create it with :func:`serve_market_streams` (TCP) or directly, and feed it connections with
    :meth:`handle_stream` / :meth:`connect_memory_stream` (in-memory, for virtual-time tests).

    Attributes:
        hub: Where the market feed publishes payloads (raw JSON bytes of the data object).
        clock: Simulator clock, for ``serverShutdown`` event times and ping payloads.
        config: Limits and timings.
        faults: Fault switches and the live-connection registry.
        port: The bound TCP port once :func:`serve_market_streams` is listening, else ``None``.
    """

    hub: StreamHub
    clock: SimClock
    config: StreamServerConfig = DEFAULT_STREAM_SERVER_CONFIG
    faults: StreamFaults = attrs.field(factory=StreamFaults)
    port: int | None = None
    _attempts: AttemptLimiter = attrs.field(init=False)
    _accepted: int = attrs.field(default=0, init=False)
    _rejected_not_found: int = attrs.field(default=0, init=False)
    _rejected_bad_request: int = attrs.field(default=0, init=False)
    _rejected_rate_limited: int = attrs.field(default=0, init=False)
    _frames_sent: int = attrs.field(default=0, init=False)
    _open: int = attrs.field(default=0, init=False)

    @_attempts.default
    def _make_attempts(self) -> AttemptLimiter:
        return AttemptLimiter(self.config.max_connect_attempts, self.config.connect_window_s)

    def connections(self) -> tuple[ConnectionInfo, ...]:
        """Snapshots of the live connections (same as ``faults.connections()``)."""
        return self.faults.connections()

    def statistics(self) -> StreamServerStatistics:
        """Connection and frame counters since this server was created."""
        return StreamServerStatistics(
            connections_open=self._open,
            connections_accepted=self._accepted,
            rejected_not_found=self._rejected_not_found,
            rejected_bad_request=self._rejected_bad_request,
            rejected_rate_limited=self._rejected_rate_limited,
            frames_sent=self._frames_sent,
        )

    def connect_memory_stream(
        self, nursery: trio.Nursery, *, remote_ip: str = "127.0.0.1"
    ) -> trio.StapledStream[trio.testing.MemorySendStream, trio.testing.MemoryReceiveStream]:
        """Open an in-memory connection to this server and return the client's end.

        The server side runs :meth:`handle_stream` in ``nursery``. Speak WebSocket over the
        returned stream (e.g. ``trio_websocket.wrap_client_stream``) and close it when done;
        the server side ends when the client closes or the nursery is cancelled.

        Args:
            nursery: Runs the server side of the connection.
            remote_ip: The client address the server sees (connection-attempt limits are per IP).
        """
        client, server_side = trio.testing.memory_stream_pair()
        nursery.start_soon(functools.partial(self.handle_stream, server_side, remote_ip=remote_ip))
        return client

    async def handle_stream(self, stream: trio.abc.Stream, *, remote_ip: str) -> None:
        """Serve one client connection on ``stream`` until it ends; always closes ``stream``.

        Reads the HTTP upgrade request (within ``handshake_timeout_s``), answers 429/404/400 or
        accepts, then delivers frames and enforces the protocol until the client leaves, a limit
        or fault closes the connection, or the caller cancels (then the stream is closed
        abruptly). Returns normally in every case a client can cause.

        Args:
            stream: A connected byte stream (TCP socket stream or an in-memory stream).
            remote_ip: Client address, the key of the connection-attempt limit.
        """
        tap = _InboundTap(stream)
        try:
            await serve_handshake(
                tap,
                self.config,
                remote_ip=remote_ip,
                log=_LOG,
                serve=functools.partial(self._serve_request, tap=tap, remote_ip=remote_ip),
            )
        finally:
            await trio.aclose_forcefully(stream)

    # --- handshake -----------------------------------------------------------------------

    async def _serve_request(
        self, request: trio_websocket.WebSocketRequest, *, tap: _InboundTap, remote_ip: str
    ) -> None:
        target = request.path
        if not self._attempts.try_acquire(remote_ip, trio.current_time()):
            self._rejected_rate_limited += 1
            logger.warning("sim.ws.reject status=429 remote=%s path=%s", remote_ip, target)
            await request.reject(429, body=b"Too many connection attempts")
            return
        route = _parse_target(target)
        if route is None:
            self._rejected_not_found += 1
            logger.info("sim.ws.reject status=404 remote=%s path=%s", remote_ip, target)
            await request.reject(404, body=b"Not Found")
            return
        combined, names = route
        streams = self._canonical_streams(names)
        if streams is None or len(streams) > self.config.max_streams_per_connection:
            self._rejected_bad_request += 1
            logger.info("sim.ws.reject status=400 remote=%s path=%s", remote_ip, target)
            await request.reject(400, body=b"Invalid request: invalid stream")
            return
        ws = await request.accept()
        now = trio.current_time()
        conn = self.faults.register(
            lambda conn_id: _Connection(
                id=conn_id,
                path=target,
                remote=remote_ip,
                combined=combined,
                connected_at_ms=self.clock.now_ms(),
                opened_at=now,
                pong_timeout_s=self.config.pong_timeout_s,
                rate=SlidingWindowCounter(
                    self.config.max_incoming_per_window, self.config.incoming_window_s
                ),
                streams=dict.fromkeys(streams),
            )
        )
        self._accepted += 1
        self._open += 1
        sub = self.hub.open_subscriber(self.config.subscriber_buffer)
        try:
            self.hub.subscribe(sub, conn.streams)
            tap.on_frame = functools.partial(self._on_inbound_frame, conn)
            logger.info(
                "sim.ws.connect id=%d path=%s remote=%s streams=%d",
                conn.id,
                target,
                remote_ip,
                len(conn.streams),
            )
            with conn.cancel_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._deliver, ws, conn, sub)
                    nursery.start_soon(self._receive, ws, conn, sub)
                    nursery.start_soon(self._ping, ws, conn, nursery)
                    nursery.start_soon(self._watch_pongs, conn)
                    nursery.start_soon(
                        functools.partial(
                            watch_age, conn, max_age_s=self.config.max_age_s, log=_LOG
                        )
                    )
            await self._close(ws, conn, tap)
        finally:
            tap.on_frame = None
            self.hub.close_subscriber(sub)
            self.faults.unregister(conn)
            self._open -= 1

    def _canonical_streams(self, names: Iterable[str]) -> list[str] | None:
        """Names as the hub knows them (deduplicated, in order), or None if any is invalid."""
        out: dict[str, None] = {}
        for name in names:
            canonical = self._canonical(name)
            if canonical is None:
                return None
            out[canonical] = None
        return list(out)

    def _canonical(self, name: str) -> str | None:
        parsed = parse_stream_name(name)
        if parsed is None or parsed.symbol not in self.config.symbols:
            return None
        return str(parsed)

    # --- connection tasks ----------------------------------------------------------------

    def _on_inbound_frame(self, conn: _Connection, opcode: Opcode, payload: bytes) -> None:
        if conn.close is not None:
            return
        conn.messages_received += 1
        if not conn.rate.try_acquire(trio.current_time()):
            logger.warning(
                "sim.ws.rate_exceeded id=%d limit=%d window_s=%g",
                conn.id,
                self.config.max_incoming_per_window,
                self.config.incoming_window_s,
            )
            conn.request_close(Close("too many messages", code=CLOSE_POLICY))
            return
        if opcode is Opcode.PONG and not self.faults.pongs_ignored(conn.id):
            conn.pong_received(payload)

    async def _deliver(
        self, ws: trio_websocket.WebSocketConnection, conn: _Connection, sub: Subscriber
    ) -> None:
        async for stream, payload in sub.recv_chan:
            if sub.dropped:
                logger.warning(
                    "sim.ws.slow_consumer id=%d dropped=%d buffer=%d",
                    conn.id,
                    sub.dropped,
                    self.config.subscriber_buffer,
                )
                conn.request_close(Close("slow consumer", code=CLOSE_POLICY))
                return
            if self.faults.is_stalled(conn.id):
                conn.frames_withheld += 1
                continue
            if conn.combined:
                text = '{"stream":"' + stream + '","data":' + payload.decode() + "}"
            else:
                text = payload.decode()
            # Unshielded: a close request (fault, limit) cuts a stalled data frame short.
            sent = await send_frame(
                ws, conn, text, timeout_s=self.config.slow_send_timeout_s, shield=False, log=_LOG
            )
            if not sent:
                return
            conn.frames_sent += 1
            self._frames_sent += 1

    async def _receive(
        self, ws: trio_websocket.WebSocketConnection, conn: _Connection, sub: Subscriber
    ) -> None:
        while (message := await receive_message(ws, conn)) is not None:
            text = message if isinstance(message, str) else message.decode("utf-8", "replace")
            reply = self._control(conn, sub, text)
            try:
                await ws.send_message(reply)
            except trio_websocket.ConnectionClosed:
                conn.request_close(PEER_GONE)
                return

    async def _ping(
        self, ws: trio_websocket.WebSocketConnection, conn: _Connection, nursery: trio.Nursery
    ) -> None:
        def send_ping(payload: bytes) -> None:
            conn.ping_sent(payload, trio.current_time())
            # ws.ping() sends and then waits for the matching pong, so each ping gets its own
            # task; whether a pong counts is decided by the tap, not by trio-websocket.
            nursery.start_soon(self._send_ping, ws, conn, payload)

        await run_pings(
            conn,
            interval_s=self.config.ping_interval_s,
            clock=self.clock,
            send_ping=send_ping,
            paused=functools.partial(self.faults.pings_stopped, conn.id),
        )

    async def _send_ping(
        self, ws: trio_websocket.WebSocketConnection, conn: _Connection, payload: bytes
    ) -> None:
        try:
            await ws.ping(payload)
        except trio_websocket.ConnectionClosed:
            conn.request_close(PEER_GONE)

    async def _watch_pongs(self, conn: _Connection) -> None:
        # The scope's deadline moves with the oldest outstanding ping (see _Connection); when
        # it passes, sleep_forever is cancelled by this scope alone and we fall through.
        with conn.pong_scope:
            await trio.sleep_forever()
        logger.warning(
            "sim.ws.pong_timeout id=%d timeout_s=%g", conn.id, self.config.pong_timeout_s
        )
        conn.request_close(Close("pong timeout", code=CLOSE_POLICY))

    async def _close(
        self, ws: trio_websocket.WebSocketConnection, conn: _Connection, tap: _InboundTap
    ) -> None:
        close = conn.close or PEER_GONE
        code = close.code
        if close.abrupt:
            await trio.aclose_forcefully(tap)
        elif code is not None:
            frames = [self._shutdown_event(conn)] if close.notice else []
            await close_gracefully(
                ws, code, close.reason, frames, timeout_s=self.config.disconnect_timeout_s
            )
        elif ws.closed is not None:
            code = ws.closed.code
        logger.info(
            "sim.ws.disconnect id=%d code=%s reason=%s frames_sent=%d",
            conn.id,
            "none" if code is None else code,
            close.reason,
            conn.frames_sent,
        )

    def _shutdown_event(self, conn: _Connection) -> str:
        data = shutdown_event(self.clock.now_ms())
        if conn.combined:
            return '{"stream":"' + _SHUTDOWN_STREAM + '","data":' + data + "}"
        return data

    # --- control messages ----------------------------------------------------------------

    def _control(self, conn: _Connection, sub: Subscriber, text: str) -> str:
        """Answer one JSON control message (FACTS.md §7, web-socket-streams.md)."""
        try:
            request: object = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return _error(
                3, f"Invalid JSON: expected value at line {exc.lineno} column {exc.colno}"
            )
        if not isinstance(request, dict):
            return _error(2, "Invalid request: expected a JSON object")
        if "id" not in request or not _valid_id(request["id"]):
            return _error(2, INVALID_ID_MSG)
        req_id: int | str | None = request["id"]
        method: object = request.get("method")
        if "method" not in request:
            line, col = _line_col(text, len(text.rstrip()))
            return _error(
                2, f"Invalid request: missing field `method` at line {line} column {col}", req_id
            )
        if method not in _METHODS:
            return _error(2, _unknown_variant_msg(text, method), req_id)
        params: object = request.get("params")
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            return self._subscription(conn, sub, str(method), params, req_id)
        if method == "LIST_SUBSCRIPTIONS":
            if isinstance(params, list) and params:
                return _error(2, "Invalid request: too many parameters", req_id)
            return _result(list(conn.streams), req_id)
        return self._property(conn, str(method), params, req_id)

    def _subscription(
        self,
        conn: _Connection,
        sub: Subscriber,
        method: str,
        params: object,
        req_id: int | str | None,
    ) -> str:
        if params is None:
            return _error(2, "Invalid request: missing field `params`", req_id)
        if not isinstance(params, list):
            return _error(2, "Invalid request: params must be an array of stream names", req_id)
        names: list[str] = [p for p in params if isinstance(p, str)]
        streams = self._canonical_streams(names) if len(names) == len(params) else None
        if streams is None:
            return _error(2, "Invalid request: invalid stream", req_id)
        if method == "SUBSCRIBE":
            new = [s for s in streams if s not in conn.streams]
            limit = self.config.max_streams_per_connection
            if len(conn.streams) + len(new) > limit:
                return _error(
                    2, f"Invalid request: too many streams (at most {limit} per connection)", req_id
                )
            conn.streams.update(dict.fromkeys(new))
            self.hub.subscribe(sub, new)
        else:
            gone = [s for s in streams if s in conn.streams]
            for name in gone:
                del conn.streams[name]
            self.hub.unsubscribe(sub, gone)
        logger.debug("sim.ws.%s id=%d streams=%d", method.lower(), conn.id, len(conn.streams))
        return _result(None, req_id)

    def _property(
        self, conn: _Connection, method: str, params: object, req_id: int | str | None
    ) -> str:
        args = params if isinstance(params, list) else []
        if not args or not isinstance(args[0], str):
            return _error(2, "Invalid request: property name must be a string", req_id)
        if len(args) > (2 if method == "SET_PROPERTY" else 1):
            return _error(2, "Invalid request: too many parameters", req_id)
        if args[0] != "combined":
            return _error(0, "Unknown property", req_id)
        if method == "GET_PROPERTY":
            return _result(conn.combined, req_id)
        if len(args) < 2 or not isinstance(args[1], bool):
            return _error(1, "Invalid value type: expected Boolean", req_id)
        conn.combined = args[1]
        return _result(None, req_id)


# --- helpers -------------------------------------------------------------------------------


def _result(result: object, req_id: int | str | None) -> str:
    return orjson.dumps({"result": result, "id": req_id}).decode()


def _error(code: int, msg: str, *req_id: int | str | None) -> str:
    """An error response; ``req_id`` (at most one) is omitted when the id was unreadable."""
    body: dict[str, object] = {"error": {"code": code, "msg": msg}}
    if req_id:
        body["id"] = req_id[0]
    return orjson.dumps(body).decode()


def _valid_id(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):  # JSON true/false: bool is an int subclass in Python
        return False
    if isinstance(value, int):
        return _INT64_MIN <= value <= _INT64_MAX
    if isinstance(value, str):
        return _ID_STRING.fullmatch(value) is not None
    return False


def _line_col(text: str, offset: int) -> tuple[int, int]:
    """serde_json-style 1-based line and column of the character before ``offset``."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1)


def _unknown_variant_msg(text: str, method: object) -> str:
    expected = ", ".join(f"`{m}`" for m in _METHODS)
    variant = method if isinstance(method, str) else orjson.dumps(method).decode()
    match = _METHOD_VALUE.search(text)
    line, col = _line_col(text, match.end(1) if match else len(text.rstrip()))
    return (
        f"Invalid request: unknown variant `{variant}`, expected one of {expected} "
        f"at line {line} column {col}"
    )


def _parse_target(target: str) -> tuple[bool, list[str]] | None:
    """``(combined, stream names)`` for a stream URL, or None when the path is unknown (404)."""
    parts = urllib.parse.urlsplit(target)
    path = urllib.parse.unquote(parts.path)
    if path in ("/ws", "/ws/"):
        return False, []
    if path.startswith("/ws/"):
        return False, [name for name in path[4:].split("/") if name]
    if path in ("/stream", "/stream/"):
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        return True, [
            name for value in query.get("streams", []) for name in value.split("/") if name
        ]
    return None


async def serve_market_streams(
    hub: StreamHub,
    clock: SimClock,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    config: StreamServerConfig = DEFAULT_STREAM_SERVER_CONFIG,
    faults: StreamFaults | None = None,
    task_status: trio.TaskStatus[StreamServer] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve Binance market streams over TCP until cancelled.

    Use ``server = await nursery.start(serve_market_streams, hub, clock)``; ``server.port`` is
    the bound port (pass ``port=0`` for a free one) and ``server.faults`` the fault controls and
    connection registry. Each connection is handled by :meth:`StreamServer.handle_stream` in a
    task of this service's own nursery. Cancelling the service closes every connection at once
    (no close frames).

    Args:
        hub: Payload source; the market feed publishes into it.
        clock: Simulator clock (event times in ``serverShutdown``).
        host: Interface to bind, ``127.0.0.1`` by default.
        port: TCP port; 0 picks a free one.
        config: Limits and timings.
        faults: Shared fault controls; a fresh :class:`StreamFaults` when None.
        task_status: Receives the :class:`StreamServer` once it is listening.

    Raises:
        OSError: The address could not be bound.
    """
    server = StreamServer(hub, clock, config, faults if faults is not None else StreamFaults())
    listeners = await trio.open_tcp_listeners(port, host=host)
    server.port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, socket_handler(server.handle_stream), listeners)
        logger.info("sim.ws.listening host=%s port=%d", host, server.port)
        task_status.started(server)
        await trio.sleep_forever()
