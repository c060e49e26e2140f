"""The connector seam of the WebSocket clients: what a connection task needs of a WebSocket.

:class:`WebSocket` is the part of a client connection that market data (:mod:`.ws_manager`)
and the user data stream (:mod:`.user_stream`) use; :class:`BatchWebSocket` one that hands over
every message of a read at once (:mod:`.ws_transport`). A :class:`WebSocketConnector` opens one:
:func:`connect_tcp_websocket` with trio-websocket, :func:`~.ws_transport.connect_fast_websocket`
with Genesis's batched transport, or a test's in-memory connector
(:class:`genesis.sim.testing.MemoryConnector`).
"""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import trio
import trio_websocket

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from genesis.resilience.circuit_breaker import CircuitBreaker
    from genesis.resilience.connect_limiter import ConnectAttemptLimiter

__all__ = [
    "BatchWebSocket",
    "WebSocket",
    "WebSocketConnector",
    "connect_tcp_websocket",
    "dial_guarded",
    "limited_connector",
    "one_message",
]


class WebSocket(Protocol):
    """The part of :class:`trio_websocket.WebSocketConnection` a connection task uses."""

    async def get_message(self) -> str | bytes:
        """Next message; raises ``trio_websocket.ConnectionClosed`` once closed."""
        ...

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        """Close handshake, then close the transport."""
        ...

    async def ping(self, payload: bytes | None = None) -> None:
        """Send a ping and wait for its pong; raises ``trio_websocket.ConnectionClosed``."""
        ...


@runtime_checkable
class BatchWebSocket(WebSocket, Protocol):
    """A :class:`WebSocket` that can hand over every message of one read at once."""

    async def get_messages(self) -> Sequence[str | bytes]:
        """Every message of the next read (at least one); ``ConnectionClosed`` once closed."""
        ...


async def dial_guarded(
    breaker: CircuitBreaker | None,
    dial: Callable[[], Awaitable[WebSocket]],
    close: Callable[[WebSocket], Awaitable[None]],
) -> WebSocket:
    """``await dial()`` as one call through ``breaker`` (if any); the connection it opened.

    Wrap the dial's timeout scope, not the other way round: a connect timeout is the breaker's
    failure, not a cancelled call. A connection that opened is closed with ``close`` if
    anything is raised on the way out of the guard (the breaker's bookkeeping), or its socket
    would leak.

    Raises:
        CircuitOpenError: the breaker refused the attempt; nothing was dialled.
    """
    if breaker is None:
        return await dial()
    dialled: WebSocket | None = None
    try:
        async with breaker.guard():
            dialled = await dial()
    except BaseException:
        if dialled is not None:
            await close(dialled)
        raise
    return dialled


def one_message(ws: WebSocket) -> Callable[[], Awaitable[Sequence[str | bytes]]]:
    """``ws.get_message`` as a batch of one, for a transport that cannot batch."""

    async def receive() -> Sequence[str | bytes]:
        return (await ws.get_message(),)

    return receive


class WebSocketConnector(Protocol):
    """Opens a client WebSocket whose background tasks run in ``nursery``.

    The seam for tests: the default :func:`connect_tcp_websocket` dials TCP; a fake can wrap one
    end of ``trio.testing.memory_stream_pair()``. May raise ``OSError`` or
    ``trio_websocket.HandshakeError``; the connection task translates them.
    """

    async def __call__(
        self, nursery: trio.Nursery, url: str, *, message_queue_size: int, role: str
    ) -> WebSocket: ...


async def connect_tcp_websocket(
    nursery: trio.Nursery, url: str, *, message_queue_size: int, role: str = ""
) -> WebSocket:
    """trio-websocket's connector: TCP (TLS for ``wss://``), then its client handshake.

    The user stream's default; market data defaults to
    :func:`~genesis.exchange.ws_transport.connect_fast_websocket` and can use this one. The same
    as ``trio_websocket.connect_websocket_url``, except that the TCP stream is closed when the
    handshake fails (trio-websocket leaves it open when the server rejects it).

    ``role`` names the caller (``execution``, ``user_stream``...); the TCP connector ignores it,
    test connectors use it (a simulated address per role). The caller closes the returned
    connection; its reader task lives in ``nursery``.
    """
    parts = urllib.parse.urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    stream: trio.SSLStream[trio.SocketStream] | trio.SocketStream
    if secure:
        stream = await trio.open_ssl_over_tcp_stream(host, port, https_compatible=True)
    else:
        stream = await trio.open_tcp_stream(host, port)
    try:
        return await trio_websocket.wrap_client_stream(
            nursery,
            stream,
            host if port in (80, 443) else f"{host}:{port}",
            resource,
            message_queue_size=message_queue_size,
        )
    except BaseException:
        # A rejected handshake is raised by trio-websocket's reader task, which leaves the TCP
        # stream open (a leaked socket per attempt); it is ours to close.
        await trio.aclose_forcefully(stream)
        raise


def limited_connector(
    limiter: ConnectAttemptLimiter, connector: WebSocketConnector = connect_tcp_websocket
) -> WebSocketConnector:
    """``connector``, but every attempt first takes a token of ``limiter`` (for the user stream;
    :func:`run_market_data` takes the limiter itself, outside its connect timeout)."""

    async def connect(
        nursery: trio.Nursery, url: str, *, message_queue_size: int, role: str = ""
    ) -> WebSocket:
        await limiter.acquire(role)
        return await connector(nursery, url, message_queue_size=message_queue_size, role=role)

    return connect
