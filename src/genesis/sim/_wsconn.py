"""Connection mechanics shared by the simulator's two WebSocket servers.

The market-stream server (:mod:`genesis.sim.streams`) and the WS API (:mod:`genesis.sim.ws_api`)
run a connection the same way; this module is that common part:

- :class:`Close` (why and how a connection ends; the first request wins) and
  :class:`WsConnection`, the per-connection state both servers extend (cancel scope, close
  request, ping sequence).
- :class:`ConnectionRegistry`: the live connections by id, oldest first, with ``shutdown``
  (``serverShutdown``, then 1001) and ``drop`` (no close frame, the client sees 1006). Neither
  blocks: the connection's own task does the closing.
- :func:`run_pings` (a ping every interval counted from the handshake, with a 12-byte payload:
  epoch ms + sequence number), :func:`watch_age` (the lifetime cap), :func:`receive_message`,
  :func:`send_frame` (one frame under the slow-send deadline), :func:`close_gracefully` (last
  frames, then the close frame, bounded), :func:`serve_handshake` (the HTTP upgrade on a raw
  stream) and :func:`socket_handler` (TCP connections with the peer's IP).

What differs stays with each server, on purpose: how a pong is judged (the stream server taps
inbound frames with ``InboundTap``, which also counts PING/PONG for the 5 messages/s rule; the WS
API awaits trio-websocket's ``ping()``), the ``serverShutdown`` wrapper, whether a close request
may cut a frame write short, and what an abrupt close does to the transport.

Helpers log through the owning server's logger and event prefix (:class:`ConnLog`), so log lines
and logger names are those of the server that owns the connection.
"""

from __future__ import annotations

import contextlib
import itertools
import struct
from typing import TYPE_CHECKING, Final, Generic, NoReturn, Protocol, TypeVar

import attrs
import trio
import trio_websocket
from wsproto.utilities import LocalProtocolError

if TYPE_CHECKING:
    import logging
    from collections.abc import Awaitable, Callable, Iterable

    from genesis.sim.clock import SimClock

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_POLICY",
    "PEER_GONE",
    "Close",
    "ConnLog",
    "ConnectionRegistry",
    "HandshakeConfig",
    "StreamHandler",
    "WsConnection",
    "close_gracefully",
    "receive_message",
    "run_pings",
    "send_frame",
    "serve_handshake",
    "shutdown_event",
    "socket_handler",
    "watch_age",
]

CLOSE_POLICY: Final = 1008
CLOSE_GOING_AWAY: Final = 1001


@attrs.frozen
class Close:
    """Why and how a connection ends; the first request wins."""

    reason: str
    code: int | None = None  # None: send no close frame
    abrupt: bool = False  # end the transport without a close frame
    notice: bool = False  # send serverShutdown before the close frame


PEER_GONE: Final = Close("peer closed")
_SERVER_SHUTDOWN: Final = Close("server shutdown", code=CLOSE_GOING_AWAY, notice=True)
_LIFETIME_EXCEEDED: Final = Close(
    "connection lifetime exceeded", code=CLOSE_GOING_AWAY, notice=True
)
_SLOW_SEND: Final = Close("slow consumer", abrupt=True)


@attrs.frozen
class ConnLog:
    """Where shared helpers log: the owning server's logger and event prefix (``sim.ws``)."""

    logger: logging.Logger
    prefix: str


@attrs.define(eq=False, kw_only=True)
class WsConnection:
    """State every simulator WebSocket connection has; each server subclasses it."""

    id: int
    remote: str
    connected_at_ms: int
    opened_at: float  # trio time of the handshake: pings and the age cap count from here
    ping_seq: int = 0
    cancel_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    close: Close | None = None

    def request_close(self, close: Close) -> None:
        """Record why the connection ends (the first reason wins) and wake its tasks."""
        if self.close is None:
            self.close = close
        self.cancel_scope.cancel()

    def next_ping_payload(self, now_ms: int) -> bytes:
        """The next ping's 12 bytes: epoch ms (u64) and the connection's ping number (u32)."""
        self.ping_seq += 1
        return struct.pack("!QI", now_ms & 0xFFFF_FFFF_FFFF_FFFF, self.ping_seq)


ConnT = TypeVar("ConnT", bound=WsConnection)


@attrs.define(eq=False)
class ConnectionRegistry(Generic[ConnT]):
    """Live connections by id (ids count up from 1), and the close controls faults use.

    Attributes:
        log: Where ``<prefix>.drop`` / ``<prefix>.shutdown`` are logged.
        drop_reason: The close reason :meth:`drop` records (it appears in the disconnect log).
    """

    log: ConnLog
    drop_reason: str
    _live: dict[int, ConnT] = attrs.field(factory=dict, init=False)
    _ids: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1), init=False)

    def __len__(self) -> int:
        return len(self._live)

    def live(self) -> list[ConnT]:
        """The live connections, oldest first (a copy: closing them does not disturb it)."""
        return list(self._live.values())

    def register(self, make: Callable[[int], ConnT]) -> ConnT:
        """Build a connection with the next id and make it live."""
        conn = make(next(self._ids))
        self._live[conn.id] = conn
        return conn

    def unregister(self, conn: ConnT) -> None:
        """Forget ``conn`` (idempotent)."""
        self._live.pop(conn.id, None)

    def shutdown(self, conn_id: int) -> bool:
        """Ask ``conn_id`` to send ``serverShutdown`` and close with 1001; False if not live."""
        return self._request_close(conn_id, "shutdown", _SERVER_SHUTDOWN)

    def shutdown_all(self) -> int:
        """:meth:`shutdown` every live connection; returns how many there were."""
        return self._for_each(self.shutdown)

    def drop(self, conn_id: int) -> bool:
        """End ``conn_id`` with no close frame (the client sees 1006); False if not live."""
        return self._request_close(conn_id, "drop", Close(self.drop_reason, abrupt=True))

    def drop_all(self) -> int:
        """:meth:`drop` every live connection; returns how many there were."""
        return self._for_each(self.drop)

    def _request_close(self, conn_id: int, event: str, close: Close) -> bool:
        conn = self._live.get(conn_id)
        if conn is None:
            return False
        self.log.logger.info("%s.%s id=%d", self.log.prefix, event, conn_id)
        conn.request_close(close)
        return True

    def _for_each(self, action: Callable[[int], bool]) -> int:
        ids = list(self._live)
        for conn_id in ids:
            action(conn_id)
        return len(ids)


# --- connection tasks ----------------------------------------------------------------------


async def run_pings(
    conn: WsConnection,
    *,
    interval_s: float,
    clock: SimClock,
    send_ping: Callable[[bytes], None],
    paused: Callable[[], bool] | None = None,
) -> NoReturn:
    """Every ``interval_s`` from the handshake, hand ``send_ping`` a fresh payload.

    ``send_ping`` must not block (it starts a task if sending needs one). While ``paused()`` is
    true a turn is skipped without using up a sequence number.
    """
    next_at = conn.opened_at
    while True:
        next_at += interval_s
        await trio.sleep_until(next_at)
        if paused is not None and paused():
            continue
        send_ping(conn.next_ping_payload(clock.now_ms()))


async def watch_age(conn: WsConnection, *, max_age_s: float, log: ConnLog) -> None:
    """At ``max_age_s`` after the handshake, request ``serverShutdown`` and a 1001 close."""
    await trio.sleep_until(conn.opened_at + max_age_s)
    log.logger.info("%s.max_age id=%d max_age_s=%g", log.prefix, conn.id, max_age_s)
    conn.request_close(_LIFETIME_EXCEEDED)


async def receive_message(
    ws: trio_websocket.WebSocketConnection, conn: WsConnection
) -> str | bytes | None:
    """The next inbound message, or None once the peer is gone (then the close is requested)."""
    try:
        return await ws.get_message()
    except trio_websocket.ConnectionClosed:
        conn.request_close(PEER_GONE)
        return None


async def send_frame(
    ws: trio_websocket.WebSocketConnection,
    conn: WsConnection,
    text: str,
    *,
    timeout_s: float,
    shield: bool,
    log: ConnLog,
) -> bool:
    """Write one text frame; False when the connection must end (its close is then requested).

    A peer that is gone ends it as ``peer closed``; a write that cannot finish within
    ``timeout_s`` is a slow consumer, dropped without a close frame.

    Args:
        ws: The connection's socket.
        conn: Its state.
        text: The frame.
        timeout_s: The slow-send deadline.
        shield: Whether a close request (cancellation of ``conn.cancel_scope``) waits for the
            write, so a frame goes out whole or not at all; otherwise it cuts the write short.
        log: Where the slow-consumer warning goes.
    """
    with trio.move_on_after(timeout_s) as send_scope:
        send_scope.shield = shield
        try:
            await ws.send_message(text)
        except trio_websocket.ConnectionClosed:
            conn.request_close(PEER_GONE)
            return False
    if send_scope.cancelled_caught:
        log.logger.warning(
            "%s.slow_consumer id=%d send_stalled_s=%g", log.prefix, conn.id, timeout_s
        )
        conn.request_close(_SLOW_SEND)
        return False
    return True


async def close_gracefully(
    ws: trio_websocket.WebSocketConnection,
    code: int,
    reason: str,
    frames: Iterable[str],
    *,
    timeout_s: float,
) -> None:
    """Send ``frames`` (a peer that is gone ends them early), then close with ``code``.

    All of it within ``timeout_s`` (the client's time to answer the close frame included).
    ``frames`` is consumed lazily, one frame per send.
    """
    with trio.move_on_after(timeout_s):
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            for frame in frames:
                await ws.send_message(frame)
        await ws.aclose(code, reason)


def shutdown_event(now_ms: int) -> str:
    """Binance's ``{"e":"serverShutdown","E":<ms>}`` (each server wraps it its own way)."""
    return '{"e":"serverShutdown","E":' + str(now_ms) + "}"


# --- accepting connections -------------------------------------------------------------------


class HandshakeConfig(Protocol):
    """The limits :func:`serve_handshake` reads (both servers' configs have them)."""

    @property
    def handshake_timeout_s(self) -> float: ...

    @property
    def message_queue_size(self) -> int: ...

    @property
    def max_message_size(self) -> int: ...


async def serve_handshake(
    stream: trio.abc.Stream,
    config: HandshakeConfig,
    *,
    remote_ip: str,
    log: ConnLog,
    serve: Callable[[trio_websocket.WebSocketRequest], Awaitable[None]],
) -> None:
    """Read the HTTP upgrade request on ``stream`` and run ``serve(request)``.

    A client that sends no complete request within ``handshake_timeout_s`` is logged and left.
    trio-websocket's reader task is stopped on the way out; closing ``stream`` is the caller's.
    A client that vanishes while the handshake is answered (``accept()`` or ``reject()``), or
    whose garbled request trio-websocket cannot even answer with its 400, raises
    ``ConnectionClosed`` inside trio-websocket: that is the client's problem, so it is logged
    and the server goes on.
    """
    try:
        async with trio.open_nursery() as nursery:
            request: trio_websocket.WebSocketRequest | None = None
            with trio.move_on_after(config.handshake_timeout_s):
                request = await trio_websocket.wrap_server_stream(
                    nursery,
                    stream,
                    message_queue_size=config.message_queue_size,
                    max_message_size=config.max_message_size,
                )
            try:
                if request is None:
                    log.logger.info("%s.handshake_timeout remote=%s", log.prefix, remote_ip)
                else:
                    await serve(request)
            finally:
                nursery.cancel_scope.cancel()  # stop trio-websocket's reader task
    except* trio_websocket.ConnectionClosed:
        log.logger.info("%s.lost remote=%s", log.prefix, remote_ip)
    except* LocalProtocolError:
        # trio-websocket#184: a client ping that crosses our close frame makes the reader task
        # answer with a pong wsproto refuses (LOCAL_CLOSING). The connection is over anyway.
        log.logger.info("%s.lost_while_closing remote=%s", log.prefix, remote_ip)


class StreamHandler(Protocol):
    """Serves one client connection on a byte stream (e.g. ``StreamServer.handle_stream``)."""

    def __call__(self, stream: trio.abc.Stream, *, remote_ip: str) -> Awaitable[None]: ...


def socket_handler(handler: StreamHandler) -> Callable[[trio.abc.Stream], Awaitable[None]]:
    """``handler`` for ``trio.serve_listeners``: it gets the peer's IP (``unknown`` if gone).

    The stream is a ``trio.SocketStream``, or a ``trio.SSLStream`` over one (a TLS port).
    """

    async def handle(stream: trio.abc.Stream) -> None:
        transport = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
        try:
            assert isinstance(transport, trio.SocketStream), transport
            remote_ip = str(transport.socket.getpeername()[0])
        except OSError:  # the client is already gone
            remote_ip = "unknown"
        await handler(stream, remote_ip=remote_ip)

    return handle
