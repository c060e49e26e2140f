"""A WebSocket client read by one task: websockets' sans-I/O protocol over a Trio stream.

The market-data connections' default transport (:func:`connect_fast_websocket`, behind the
:class:`~genesis.exchange.ws_manager.WebSocketConnector` seam; trio-websocket remains available
as :func:`~genesis.exchange.ws_manager.connect_tcp_websocket`). trio-websocket runs a reader
task per connection that parses frames with wsproto and hands each message through its own
queue to whoever calls ``get_message``: a task hop per frame, and pongs only while that queue
has room (ARCHITECTURE.md §7). Here there is no reader task: the task that asks for messages
reads the socket itself in large chunks (64 KiB), feeds them to websockets'
:class:`~websockets.client.ClientProtocol` (a maintained, RFC 6455 conformant parser with a C
unmasking speed-up) and gets back every message of that read at once
(:meth:`FastWebSocket.get_messages`). Pings are answered inside the same call, before the
messages are handed back, so a pong never waits for the consumer of the messages; the
market-data relay feeds the merger synchronously and never blocks on a subscriber (the bus's
``publish_nowait``), so the socket is always being read.

Both ``ws://`` and ``wss://`` connections are read and written through a :class:`Wire`: the
plain socket (``os.read``/``os.write``), or TLS over it (:class:`~.ws_tls.TlsSocketStream`,
which leaves nothing decrypted behind a read). Either can therefore be read by a
:class:`~.ws_reader.ReadGroup` waiting on the socket (:meth:`FastWebSocket.read_nowait`), or by
the connection's own task; only in-memory test streams are read through ``receive_some``.

Errors follow the seam's contract (the same exceptions as trio-websocket, so the connection
tasks translate both transports in one place): a failed handshake raises
``trio_websocket.ConnectionRejected`` (HTTP status) or ``trio_websocket.HandshakeError``, a
failed dial ``OSError``, and a connection that ends (close frame, EOF, reset, protocol error)
``trio_websocket.ConnectionClosed`` with the close code: the peer's, 1006 for a connection lost
without a close frame, 1009 for a message over ``max_message_bytes``, 1002/1007 for protocol
and encoding errors.
"""

from __future__ import annotations

import logging
import os
import ssl
from typing import TYPE_CHECKING, Final, Protocol

import trio
import trio_websocket
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from genesis.exchange.ws_tls import TlsSocketStream

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import NoReturn

    from websockets.protocol import Event

__all__ = [
    "MAX_MESSAGE_BYTES",
    "READ_SIZE",
    "FastWebSocket",
    "Wire",
    "connect_fast_websocket",
    "wrap_client_stream",
]

logger = logging.getLogger(__name__)

READ_SIZE: Final = 65536
"""Bytes asked of the stream per read: ~50 depth20 frames, one wake-up for all of them."""
MAX_MESSAGE_BYTES: Final = 1 << 20
"""Messages beyond 1 MiB close the connection with 1009 (trio-websocket's limit too)."""
CONTROL_SEND_TIMEOUT_S: Final = 1.0
"""Bound on writing a pong or close frame; a peer that does not take it within this is lost."""
_ABNORMAL: Final = 1006
_FIN_TEXT: Final = 0x81
_FIN_BINARY: Final = 0x82
_MAX_HANDSHAKE_BYTES: Final = 65536


def _closed(code: int, reason: str | None) -> trio_websocket.ConnectionClosed:
    return trio_websocket.ConnectionClosed(trio_websocket.CloseReason(code, reason))


def _lost(exc: BaseException) -> trio_websocket.ConnectionClosed:
    return _closed(_ABNORMAL, f"connection lost: {type(exc).__name__}")


_WIRE_ERRORS: Final = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


class Wire(Protocol):
    """A connected byte stream read and written without waiting: a socket, or TLS over one.

    ``read_nowait`` returns ``b""`` at the end and raises ``BlockingIOError`` when nothing is
    there, leaving nothing buffered that the socket's readiness would not announce (except an
    end read behind the data, :attr:`end_buffered`); ``write_nowait`` returns how many bytes
    of ``data`` it took. Bytes it took but could not put on the socket (:attr:`flush_pending`)
    go out with the stream's next ``send_all`` (``b""`` will do). Failures are ``OSError``
    (or trio's broken/closed errors for a TLS stream already failed or closed).
    """

    def fileno(self) -> int: ...

    def read_nowait(self, max_bytes: int) -> bytes: ...

    def write_nowait(self, data: bytes) -> int: ...

    @property
    def flush_pending(self) -> bool: ...

    @property
    def end_buffered(self) -> bool: ...


class _SocketWire:
    """A plain TCP socket, read with ``os.read`` and written with ``os.write`` (no layers)."""

    __slots__ = ("_fd",)
    flush_pending: Final = False
    end_buffered: Final = False

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def read_nowait(self, max_bytes: int) -> bytes:
        return os.read(self._fd, max_bytes)

    def write_nowait(self, data: bytes) -> int:
        return os.write(self._fd, data)


SOCKETS_ARE_FDS: Final = os.name == "posix"
"""``os.read``/``os.write`` work on sockets (not on Windows: there, trio's streams are used)."""


def _wire_of(stream: trio.abc.Stream) -> Wire | None:
    if isinstance(stream, TlsSocketStream):
        return stream
    if isinstance(stream, trio.SocketStream) and SOCKETS_ARE_FDS:
        return _SocketWire(stream.socket.fileno())
    return None  # memory streams (tests), other layers: read through the stream


class FastWebSocket:
    """One client connection, read by the task that calls :meth:`get_messages`.

    Not for concurrent readers: one task reads (the connection task); :meth:`ping` and
    :meth:`aclose` may be called from other tasks. The caller closes it (:meth:`aclose`).
    """

    def __init__(
        self, stream: trio.abc.Stream, protocol: ClientProtocol, *, read_size: int = READ_SIZE
    ) -> None:
        self._stream = stream
        self._protocol = protocol
        self._read_size = read_size
        self._send_lock = trio.Lock()
        self._pending: list[str | bytes] = []
        self._fragments: list[bytes] = []
        self._fragment_opcode: Opcode | None = None
        self._pings: dict[bytes, trio.Event] = {}
        self._ping_count = 0
        self._eof = False
        self._buffer = b""
        """The start of a frame whose end is in a later read."""
        self._passthrough = False
        """After a close frame or a protocol failure every byte goes to the protocol."""
        self._closed: trio_websocket.ConnectionClosed | None = None
        self._wire = _wire_of(stream)
        """The socket (or TLS over it) read and written without waiting; ``None`` in memory."""
        self._outbox: list[bytes] = []
        """Control frames a :class:`~.ws_reader.ReadGroup` read could not write at once."""
        self._attention = trio.Event()
        self._failure: Exception | None = None
        self.messages_received = 0
        """Data messages handed out so far."""
        self.pongs_sent = 0
        """Pings of the peer answered so far."""

    def _closed_error(self) -> trio_websocket.ConnectionClosed | None:
        return self._closed

    @property
    def closed(self) -> trio_websocket.CloseReason | None:
        """Why the connection ended, once it did (``None`` while it is open)."""
        return None if self._closed is None else self._closed.reason

    async def get_messages(self) -> Sequence[str | bytes]:
        """Every message of the next read (at least one), in order.

        Text messages are ``str`` (``bytes`` when they are not valid UTF-8, so the caller can
        count them), binary ones ``bytes``. Pings that arrived in the same read are answered
        before this returns.

        Raises:
            trio_websocket.ConnectionClosed: the connection ended (after every message that
                arrived before the end was returned).

        Cancellation: safe between reads; nothing read is lost (a cancelled read read nothing).
        """
        while not self._pending:
            if self._closed is not None:
                raise self._closed
            await self._receive()
        messages, self._pending = self._pending, []
        self.messages_received += len(messages)
        return messages

    async def get_message(self) -> str | bytes:
        """The next message (trio-websocket's interface); :meth:`get_messages` is cheaper."""
        while not self._pending:
            if self._closed is not None:
                raise self._closed
            await self._receive()
        self.messages_received += 1
        return self._pending.pop(0)

    async def ping(self, payload: bytes | None = None) -> None:
        """Send a ping and wait until its pong arrived (read by the task reading messages).

        No (or an empty) ``payload`` gets a fresh one (a counter), so concurrent probes do not
        share an answer. A pong also answers every earlier ping (RFC 6455 §5.5.3).

        Raises:
            trio_websocket.ConnectionClosed: the connection ended first.
            ValueError: a ping with this payload is already waiting.
        """
        if self._closed is not None:
            raise self._closed
        if not payload:
            self._ping_count += 1
            payload = self._ping_count.to_bytes(8, "big")
        if payload in self._pings:
            raise ValueError(f"a ping with payload {payload!r} is already waiting")
        answered = self._pings[payload] = trio.Event()
        self._protocol.send_ping(payload)
        await self._send(self._protocol.data_to_send())
        await answered.wait()
        closed = self._closed_error()
        if closed is not None and self._pings.pop(payload, None) is not None:
            raise closed

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        """Send a close frame, wait (as the caller's deadline allows) for the peer's, close TCP.

        Idempotent. Cancellation: the transport is closed either way.
        """
        try:
            if self._closed is None and _state(self._protocol) is State.OPEN:
                self._protocol.send_close(code, reason or "")
                await self._send(self._protocol.data_to_send())
                while self._closed_error() is None:
                    await self._receive()  # until the peer's close frame, EOF or a failure
        finally:
            self._end(_closed(code, reason))
            self._wire = None
            await trio.aclose_forcefully(self._stream)

    # -- read by a ReadGroup (exchange/ws_reader.py) ---------------------------------------

    @property
    def fileno(self) -> int | None:
        """The socket a :class:`~.ws_reader.ReadGroup` can wait on (plain TCP, or TLS over
        :class:`~.ws_tls.TlsSocketStream`); ``None`` if it cannot (a memory stream) or the
        connection ended."""
        wire = self._wire
        return None if self._closed is not None or wire is None else wire.fileno()

    def read_nowait(self) -> bool:
        """One read without waiting, parsed (pings answered); ``False`` if nothing was there.

        For a :class:`~.ws_reader.ReadGroup`'s task only (the connection must be read by no
        other task meanwhile). The messages wait for :meth:`take_messages`; a pong or close
        reply is written at once when the socket takes it, else by :meth:`wait_closed`.
        """
        wire = self._wire
        if wire is None or self._closed is not None:
            return False
        try:
            data = wire.read_nowait(self._read_size)
        except BlockingIOError:
            return False
        except _WIRE_ERRORS as exc:
            self._end(_lost(exc))
            return True
        writes = self._parse(data)
        if data and wire.end_buffered:  # TLS: the end came behind the data; no wake-up follows
            try:
                writes += self._parse(wire.read_nowait(self._read_size))
            except _WIRE_ERRORS as exc:
                self._end(_lost(exc))
                return True
        if writes:
            self._write_soon(writes)
        if wire.flush_pending:  # TLS replies the socket did not take (post-handshake, a pong)
            self._attention.set()
        self._check_end()
        return True

    def take_messages(self) -> list[str | bytes]:
        """The messages read so far and not yet taken (after :meth:`read_nowait`)."""
        messages, self._pending = self._pending, []
        self.messages_received += len(messages)
        return messages

    def fail(self, error: Exception) -> None:
        """End the wait of :meth:`wait_closed` with ``error`` (the reader's consumer failed)."""
        if self._failure is None:
            self._failure = error
        self._attention.set()

    async def wait_closed(self) -> NoReturn:
        """While a :class:`~.ws_reader.ReadGroup` reads this connection: write the control
        frames its reads could not write at once, until the connection ends.

        Raises:
            trio_websocket.ConnectionClosed: the connection ended (every message before the end
                was taken).
            Exception: what :meth:`fail` was given.
        """
        while True:
            if self._failure is not None:
                raise self._failure
            if self._outbox or self._flush_pending():
                chunks, self._outbox = self._outbox, []
                await self._send(chunks)
                continue
            if self._closed is not None:
                raise self._closed
            await self._attention.wait()
            self._attention = trio.Event()

    def _write_soon(self, chunks: Sequence[bytes]) -> None:
        """Write at once what the socket takes, unless a write is under way; queue the rest."""
        data = b"".join(chunks)
        if not data:
            return
        wire = self._wire
        if wire is not None and not self._outbox and not self._send_lock.locked():
            try:
                data = data[wire.write_nowait(data) :]
            except BlockingIOError:
                pass
            except _WIRE_ERRORS as exc:
                self._end(_lost(exc))
                return
            if wire.flush_pending:
                self._attention.set()
        if data:
            self._outbox.append(data)
            self._attention.set()

    def _flush_pending(self) -> bool:
        wire = self._wire
        return wire is not None and wire.flush_pending

    # -- reading ----------------------------------------------------------------------------

    async def _receive(self) -> None:
        """One read from the stream, parsed; answers control frames; may end the connection."""
        try:
            data = await self._read()
        except _WIRE_ERRORS as exc:
            self._end(_lost(exc))
            return
        writes = self._parse(data)
        if writes or self._flush_pending():
            await self._send(writes)
        self._check_end()

    async def _read(self) -> bytes:
        """The next bytes (``b""`` at EOF); trio's socket semantics without its layers.

        A socket (plain or TLS) is read through its :class:`Wire`: tried at once, and only when
        nothing is waiting does the task wait for the socket (one wake-up per read). A read that
        found data at once is still a schedule point (shielded: what was read is never lost to
        a cancel).
        """
        wire = self._wire
        if wire is None:
            return bytes(await self._stream.receive_some(self._read_size))  # memory: bytearray
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            data = wire.read_nowait(self._read_size)
        except BlockingIOError:
            fd = wire.fileno()
            while True:
                await trio.lowlevel.wait_readable(fd)
                try:
                    return wire.read_nowait(self._read_size)
                except BlockingIOError:
                    continue
        await trio.lowlevel.cancel_shielded_checkpoint()
        return data

    def _parse(self, data: bytes) -> list[bytes]:
        """Feed one read to the protocol; the bytes it wants written (pongs, a close reply)."""
        protocol = self._protocol
        if not data:
            self._eof = True
            protocol.receive_eof()  # a partial frame in our buffer is lost with the connection
        elif self._passthrough:
            protocol.receive_data(data)
        else:
            self._split(data)
        self._take_events(protocol.events_received())
        return protocol.data_to_send()  # pongs, the close reply

    def _check_end(self) -> None:
        protocol = self._protocol
        if (
            self._eof
            or protocol.state is State.CLOSED
            or protocol.close_rcvd is not None
            or protocol.parser_exc is not None  # we failed it (1002, 1007, 1009): over now
        ):
            self._end(_close_error(protocol))

    def _split(self, data: bytes) -> None:
        """Cut the read into frames; plain data frames are taken here, the rest by websockets.

        The hot path's frames are complete, unfragmented, unmasked text or binary frames with
        no RSV bits and at most ``MAX_MESSAGE_BYTES``: their header says where they end, so
        they are handed on without a generator step per frame. Every other frame (pings,
        pongs, close, fragments, anything invalid) is handed to the protocol *whole*, so the
        protocol's parser is always at a frame boundary and applies RFC 6455 to it
        (answering, closing, failing with the right code). After a close frame or a failure
        everything goes to the protocol.
        """
        buf = self._buffer + data if self._buffer else data
        size = len(buf)
        pos = 0
        pending = self._pending
        protocol = self._protocol
        while size - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            length = second & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            if second & 0x80:
                head += 4  # masked (a server must not): the protocol fails it below
            if length > MAX_MESSAGE_BYTES:
                self._pass_through(buf[pos:])  # the protocol fails it with 1009 at once
                return
            end = pos + head + length
            if end > size:
                break  # the rest of this frame is in a later read
            if first == _FIN_TEXT and head <= 4 and self._fragment_opcode is None:
                payload = buf[pos + head : end]
                try:
                    pending.append(payload.decode())
                except UnicodeDecodeError:
                    pending.append(payload)  # the merger counts it (bad_encoding)
            elif first == _FIN_BINARY and head <= 4 and self._fragment_opcode is None:
                pending.append(buf[pos + head : end])
            else:
                protocol.receive_data(buf[pos:end])
                self._take_events(protocol.events_received())  # in order with the rest
                if protocol.close_rcvd is not None or protocol.parser_exc is not None:
                    self._pass_through(buf[end:])
                    return
            pos = end
        self._buffer = buf[pos:]

    def _pass_through(self, rest: bytes) -> None:
        self._passthrough = True
        self._buffer = b""
        if rest:
            self._protocol.receive_data(rest)

    def _take_events(self, events: Sequence[Event]) -> None:
        pending = self._pending
        for frame in events:
            if not isinstance(frame, Frame):  # pragma: no cover  # the handshake took it
                continue
            opcode = frame.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                if frame.fin:
                    pending.append(_message(opcode, bytes(frame.data)))
                else:
                    self._fragment_opcode = opcode
                    self._fragments = [bytes(frame.data)]
            elif opcode is Opcode.CONT:
                self._fragments.append(bytes(frame.data))
                if frame.fin:
                    assert self._fragment_opcode is not None  # the protocol checked the order
                    pending.append(_message(self._fragment_opcode, b"".join(self._fragments)))
                    self._fragments = []
                    self._fragment_opcode = None
            elif opcode is Opcode.PING:
                self.pongs_sent += 1  # the protocol queued the pong; _receive sends it
            elif opcode is Opcode.PONG:
                _answer_pings(self._pings, bytes(frame.data))

    def _end(self, error: trio_websocket.ConnectionClosed) -> None:
        if self._closed is None:
            self._closed = error
        for event in self._pings.values():
            event.set()  # ping() sees the payload still registered and raises
        self._attention.set()

    # -- writing ----------------------------------------------------------------------------

    async def _send(self, chunks: Sequence[bytes]) -> None:
        """Write bytes the protocol queued (pongs, close, pings), bounded and shielded.

        ``chunks`` come from ``data_to_send()``, taken synchronously by the caller: the lock
        is fair, so concurrent writers put their frames on the wire in the order they took
        them.

        Shielded so that a cancelled reader (a deadline around :meth:`get_messages`) never
        leaves half a frame on the wire; bounded by ``CONTROL_SEND_TIMEOUT_S`` so a peer that
        stopped reading cannot hold the task.
        """
        with trio.CancelScope(shield=True):
            async with self._send_lock:
                data = b"".join(chunks)  # b"": the protocol's EOF marker; TCP closes in aclose
                if not data and not self._flush_pending():
                    return
                with trio.move_on_after(CONTROL_SEND_TIMEOUT_S) as scope:
                    try:
                        await self._stream.send_all(data)  # TLS: what was left unsent first
                    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                        self._end(_lost(exc))
                        return
                if scope.cancelled_caught:
                    self._end(_closed(_ABNORMAL, "peer stopped reading"))


def _answer_pings(pings: dict[bytes, trio.Event], payload: bytes) -> None:
    """A pong answers its ping and every earlier one (RFC 6455 §5.5.3)."""
    if payload not in pings:
        return  # unsolicited (or already answered by a later pong)
    for key in list(pings):
        pings.pop(key).set()
        if key == payload:
            break


def _close_error(protocol: ClientProtocol) -> trio_websocket.ConnectionClosed:
    """Why a connection whose protocol ended is over: the peer's code, ours, or 1006."""
    received = protocol.close_rcvd
    if received is not None:
        return _closed(received.code, received.reason)
    sent: Close | None = protocol.close_sent
    if sent is not None and protocol.parser_exc is not None:
        return _closed(sent.code, sent.reason)  # we failed it: 1002, 1007, 1009
    return _closed(_ABNORMAL, "connection lost without a close frame")


def _state(protocol: ClientProtocol) -> State:
    return protocol.state  # a call, so mypy does not narrow the property across awaits


def _message(opcode: Opcode, data: bytes) -> str | bytes:
    if opcode is Opcode.BINARY:
        return data
    try:
        return data.decode()
    except UnicodeDecodeError:
        return data  # handed on as bytes: the merger counts it (bad_encoding) and moves on


async def connect_fast_websocket(
    nursery: trio.Nursery,
    url: str,
    *,
    message_queue_size: int = 0,
    role: str = "",
    ssl_context: ssl.SSLContext | None = None,
) -> FastWebSocket:
    """Open a ``ws://`` or ``wss://`` client connection (the market data's default connector).

    ``nursery`` and ``message_queue_size`` are the seam's (no background task runs and no
    queue exists: the caller reads), ``role`` is ignored. The caller closes the result.
    No timeout of its own: the caller bounds the call (``connect_timeout_s``).

    ``wss://`` runs over :class:`~.ws_tls.TlsSocketStream` (so a
    :class:`~.ws_reader.ReadGroup` can read it too), with ``ssl_context`` or, by default,
    ``ssl.create_default_context()`` (certificate and hostname verified).

    Raises:
        OSError: the TCP connection failed.
        trio_websocket.ConnectionRejected: the server answered the upgrade with an HTTP error.
        trio_websocket.HandshakeError: TLS failed, or the handshake was not WebSocket's.
    """
    del nursery, message_queue_size, role
    uri = parse_uri(url)
    tcp = await trio.open_tcp_stream(uri.host, uri.port)
    stream: trio.abc.Stream = tcp
    try:
        if uri.secure:
            context = ssl_context if ssl_context is not None else ssl.create_default_context()
            tls: TlsSocketStream | trio.SSLStream[trio.SocketStream]
            if SOCKETS_ARE_FDS:
                tls = TlsSocketStream(tcp, server_hostname=uri.host, ssl_context=context)
            else:
                tls = trio.SSLStream(tcp, context, server_hostname=uri.host)
            stream = tls
            try:
                await tls.do_handshake()
            except trio.BrokenResourceError as exc:
                raise trio_websocket.HandshakeError(f"TLS failed: {exc.__cause__}") from exc
        return await wrap_client_stream(stream, url)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


async def wrap_client_stream(stream: trio.abc.Stream, url: str) -> FastWebSocket:
    """The WebSocket handshake for ``url`` over an open ``stream`` (TCP, TLS or in memory).

    The seam for in-memory tests (``trio.testing.memory_stream_pair()``). The result owns
    ``stream`` once returned; on failure the caller closes it.

    Raises:
        trio_websocket.ConnectionRejected: the server answered the upgrade with an HTTP error.
        trio_websocket.HandshakeError: the connection ended, or the answer was not WebSocket's.
    """
    protocol = ClientProtocol(parse_uri(url), max_size=MAX_MESSAGE_BYTES)
    protocol.send_request(protocol.connect())
    leftover = await _handshake(stream, protocol)
    ws = FastWebSocket(stream, protocol)
    if leftover:
        ws._split(leftover)  # frames that arrived with the handshake's answer
    return ws


async def _handshake(stream: trio.abc.Stream, protocol: ClientProtocol) -> bytes:
    """Send the upgrade request, read the answer; the bytes read after it are returned.

    Only the answer's head goes to the protocol when it accepts (a 101 has no body), so the
    frames behind it start at a frame boundary for :meth:`FastWebSocket._split`.
    """
    head: bytes | None = b""
    leftover = b""
    try:
        await stream.send_all(b"".join(protocol.data_to_send()))
        while protocol.state is State.CONNECTING and protocol.handshake_exc is None:
            data = await stream.receive_some(READ_SIZE)
            if not data:
                protocol.receive_eof()
                break
            if head is None:  # a rejection: its body is the protocol's
                protocol.receive_data(data)
                continue
            head += data
            end = head.find(b"\r\n\r\n")
            if end < 0 and len(head) < _MAX_HANDSHAKE_BYTES:
                continue
            cut = len(head) if end < 0 else end + 4
            protocol.receive_data(head[:cut])
            if _state(protocol) is State.OPEN:
                leftover = head[cut:]
            elif head[cut:]:
                protocol.receive_data(head[cut:])
            head = None
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise trio_websocket.HandshakeError(f"connection lost during the handshake: {exc}") from exc
    error = protocol.handshake_exc
    if isinstance(error, InvalidStatus):
        response = error.response
        raise trio_websocket.ConnectionRejected(
            response.status_code,
            tuple((k.encode(), v.encode()) for k, v in response.headers.raw_items()),
            bytes(response.body),
        ) from error
    if error is not None or protocol.state is not State.OPEN:
        raise trio_websocket.HandshakeError(f"WebSocket handshake failed: {error}") from error
    protocol.events_received()  # the Response, checked above
    return leftover
