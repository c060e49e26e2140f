"""A pre-framed, Binance-shaped WebSocket feed server for benchmarks, run in its own process.

Usage::

    python scripts/bench_feed_server.py --kind depth20|trade [--events N] [--rate R]
        [--connections C] [--port 0] [--tls [--tls-version 1.3|1.2]]

It prints ``port: <n>`` once it listens, waits until ``--connections`` clients have completed
the WebSocket handshake (any path: ``/stream?streams=...`` or ``/ws/...``; the streams asked for
are ignored), then sends every client the same sequence of combined-stream frames
(``{"stream": "btcusdt@depth20@100ms", "data": {...}}`` or ``btcusdt@trade``), as Binance shapes
them: depth20 snapshots with 20 levels a side of 8-decimal string prices (~1.3 KB; unique,
increasing ``lastUpdateId``) or trades with consecutive ids ``t``. Each client's copy is the
same bytes, like Binance's redundant connections.

- Burst (``--rate 0``, the default): ``--events`` frames as fast as each client reads them.
  Frames are built in batches of :data:`BATCH` (the JSON text and WebSocket header are
  concatenated from pre-encoded parts, ~1 µs a frame) and each batch is built once and shared
  by every connection, so the server's cost per client is one ``send`` per batch.
- Paced (``--rate R``): one frame every ``1/R`` s to every client. A depth20 frame's
  ``lastUpdateId`` (a trade's ``E`` and ``T`` in µs would break Binance's shape, so paced mode
  is depth20 only) is the wall-clock send time in µs, so a client measures the latency from
  the frame's actual send to wherever it sees the event: ``time.time_ns() // 1000 - id``.

It answers pings with pongs and close frames with a close frame, and exits once every client
has gone (or after ``--timeout``), printing one JSON line of its own statistics: CPU seconds,
the wall time it spent sending, frames per client, and for paced runs how late the pacer ran
(so a run can show that the feed side was not the bottleneck).

``--tls`` serves ``wss://`` instead: the server terminates TLS itself (a ``trio.SSLStream``
around each accepted TCP stream; TLS 1.3 by default, ``--tls-version 1.2`` pins 1.2), with a
certificate for ``127.0.0.1`` / ``localhost`` issued at start-up by a ``trustme`` CA. It prints
``ca: <path>`` right after the port line: the CA's certificate (public PEM, no key) in a
temporary file, removed when the server exits, for the clients' ``SSL_CERT_FILE`` (so they
verify the server through their ordinary default context). Encryption is then in this
process, so its CPU statistics include it; the JSON line also lists the TLS version each
connection negotiated.

Only 127.0.0.1 by default; without ``--tls`` nothing is read from or written to disk.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import resource
import struct
import sys
import time
from functools import partial
from typing import TYPE_CHECKING, Final

import orjson
import trio

from genesis.sim.testing import TLS_VERSIONS, loopback_tls

if TYPE_CHECKING:
    import ssl

__all__ = ["BATCH", "FeedServer", "depth_payload", "frame", "main", "trade_payload"]

BATCH: Final = 256
WS_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
HANDSHAKE_MAX: Final = 16384
VARIANTS: Final = 16


def frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One unmasked, final server frame (RFC 6455 §5.2)."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return header + payload


def _levels(base: float, step: float, variant: int) -> bytes:
    levels = [
        [f"{base + step * i + variant * 0.01:.8f}", f"{0.001 * (1 + (i * 7 + variant) % 50):.8f}"]
        for i in range(20)
    ]
    return orjson.dumps(levels)


_DEPTH_PARTS: Final = [
    (
        b'{"stream":"btcusdt@depth20@100ms","data":{"lastUpdateId":',
        b',"bids":' + _levels(60000.0, -0.01, v) + b',"asks":' + _levels(60000.02, 0.01, v) + b"}}",
    )
    for v in range(VARIANTS)
]


def depth_payload(update_id: int) -> bytes:
    """A depth20 combined-stream payload with ``lastUpdateId`` = ``update_id``."""
    head, tail = _DEPTH_PARTS[update_id % VARIANTS]
    return head + str(update_id).encode() + tail


def trade_payload(trade_id: int, event_ms: int) -> bytes:
    """A trade combined-stream payload with id ``trade_id``."""
    price = f"{60000 + (trade_id % 100) * 0.01:.8f}"
    return (
        b'{"stream":"btcusdt@trade","data":{"e":"trade","E":%d,"s":"BTCUSDT","t":%d,'
        b'"p":"%s","q":"0.01000000","T":%d,"m":%s,"M":true}}'
        % (event_ms, trade_id, price.encode(), event_ms, b"true" if trade_id % 2 else b"false")
    )


def _accept(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest())  # RFC 6455


async def _handshake(stream: trio.abc.Stream) -> bool:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await stream.receive_some(4096)
        if not chunk or len(head) > HANDSHAKE_MAX:
            return False
        head += chunk
    key = b""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            key = value.strip()
    if not key:
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        return False
    await stream.send_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + _accept(key) + b"\r\n\r\n"
    )
    return True


class _Reader:
    """Client frames: masked; answers pings, ends on close or EOF."""

    def __init__(self, stream: trio.abc.Stream, send_lock: trio.Lock) -> None:
        self.stream = stream
        self.buffer = bytearray()
        self.send_lock = send_lock

    async def _need(self, n: int) -> bool:
        while len(self.buffer) < n:
            try:
                chunk = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False
            if not chunk:
                return False
            self.buffer += chunk
        return True

    async def run(self) -> None:
        while await self._need(2):
            opcode = self.buffer[0] & 0x0F
            length = self.buffer[1] & 0x7F
            offset = 2
            if length == 126:
                if not await self._need(4):
                    return
                length = struct.unpack_from("!H", self.buffer, 2)[0]
                offset = 4
            elif length == 127:
                if not await self._need(10):
                    return
                length = struct.unpack_from("!Q", self.buffer, 2)[0]
                offset = 10
            masked = self.buffer[1] & 0x80
            total = offset + (4 if masked else 0) + length
            if not await self._need(total):
                return
            payload = bytes(self.buffer[total - length : total])
            if masked:
                mask = self.buffer[offset : offset + 4]
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            del self.buffer[:total]
            if opcode == 0x9:  # ping → pong
                async with self.send_lock:
                    await self.stream.send_all(frame(payload, 0xA))
            elif opcode == 0x8:  # close → close, then the client hangs up
                async with self.send_lock:
                    await self.stream.send_all(frame(payload[:2], 0x8))
                return
            elif opcode == 0x1:  # SUBSCRIBE and friends: a Binance-shaped answer
                try:
                    request = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(request, dict) and "id" in request:
                    answer = orjson.dumps({"result": None, "id": request["id"]})
                    async with self.send_lock:
                        await self.stream.send_all(frame(answer))


class FeedServer:
    """The server's state; one instance per process run."""

    def __init__(self, kind: str, events: int, rate: float, connections: int) -> None:
        self.kind = kind
        self.events = events
        self.rate = rate
        self.connections = connections
        self.joined = 0
        self.left = 0
        self.all_joined = trio.Event()
        self.all_left = trio.Event()
        self.batches: dict[int, bytes] = {}
        self.cursors: dict[int, int] = {}
        self.sent: dict[int, int] = {}
        self.send_s = 0.0
        self.first_send: float | None = None
        self.last_send = 0.0
        self.pacer_late_max_s = 0.0
        self.paced_queues: list[trio.MemorySendChannel[bytes]] = []
        self.tls_versions: list[str] = []

    def batch(self, index: int) -> bytes:
        """Batch ``index`` (frames ``index*BATCH + 1 ...``), built once for every connection."""
        cached = self.batches.get(index)
        if cached is not None:
            return cached
        first = index * BATCH + 1
        last = min(first + BATCH - 1, self.events)
        if self.kind == "depth20":
            built = b"".join(frame(depth_payload(i)) for i in range(first, last + 1))
        else:
            now_ms = time.time_ns() // 1_000_000
            built = b"".join(frame(trade_payload(i, now_ms)) for i in range(first, last + 1))
        self.batches[index] = built
        # Forget batches every connection has sent.
        low = min(self.cursors.values(), default=index)
        for old in [k for k in self.batches if k < low]:
            del self.batches[old]
        return built

    async def handle_tls(self, context: ssl.SSLContext, tcp: trio.SocketStream) -> None:
        """``--tls``: terminate TLS on the accepted stream, then serve it as :meth:`handle`."""
        stream = trio.SSLStream(tcp, context, server_side=True)
        try:
            await stream.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await trio.aclose_forcefully(tcp)
            return
        version = stream.version()
        self.tls_versions.append(version or "unknown")
        await self.handle(stream)

    async def handle(self, stream: trio.abc.Stream) -> None:
        async with stream:
            try:
                if not await _handshake(stream):
                    return
            except trio.BrokenResourceError:
                return
            conn = self.joined
            self.joined += 1
            lock = trio.Lock()
            try:
                async with trio.open_nursery() as nursery:
                    reader = _Reader(stream, lock)

                    async def read_then_stop() -> None:
                        await reader.run()
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(read_then_stop)
                    if self.joined >= self.connections:
                        self.all_joined.set()
                    if self.rate > 0:
                        # Queued before the pacer can start: no frame is sent to fewer clients.
                        send_chan, recv_chan = trio.open_memory_channel[bytes](self.events)
                        self.paced_queues.append(send_chan)
                        await self.all_joined.wait()
                        await self._paced_writer(stream, lock, conn, recv_chan)
                    else:
                        await self.all_joined.wait()
                        await self._burst_writer(stream, lock, conn)
                    await trio.sleep_forever()  # until the client closes
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                self.left += 1
                if self.left >= self.connections:
                    self.all_left.set()

    async def _burst_writer(self, stream: trio.abc.Stream, lock: trio.Lock, conn: int) -> None:
        batches = (self.events + BATCH - 1) // BATCH
        self.cursors[conn] = 0
        self.sent[conn] = 0
        started = time.perf_counter()
        self.first_send = self.first_send or started
        for index in range(batches):
            self.cursors[conn] = index
            data = self.batch(index)
            async with lock:
                await stream.send_all(data)
            self.sent[conn] += min(BATCH, self.events - index * BATCH)
        self.cursors[conn] = batches
        done = time.perf_counter()
        self.last_send = max(self.last_send, done)
        self.send_s = max(self.send_s, done - started)

    async def _paced_writer(
        self,
        stream: trio.abc.Stream,
        lock: trio.Lock,
        conn: int,
        recv_chan: trio.MemoryReceiveChannel[bytes],
    ) -> None:
        self.sent[conn] = 0
        async with recv_chan:
            async for data in recv_chan:
                async with lock:
                    await stream.send_all(data)
                self.sent[conn] += 1

    async def pace(self) -> None:
        """Paced mode: one depth20 frame per ``1/rate`` s to every connection's queue."""
        await self.all_joined.wait()
        interval = 1.0 / self.rate
        start = time.perf_counter()
        self.first_send = start
        for n in range(self.events):
            due = start + n * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await trio.sleep(delay)
            self.pacer_late_max_s = max(self.pacer_late_max_s, time.perf_counter() - due)
            data = frame(depth_payload(time.time_ns() // 1000))
            for queue in self.paced_queues:
                queue.send_nowait(data)
        for queue in self.paced_queues:
            queue.close()
        self.last_send = time.perf_counter()
        self.send_s = self.last_send - start


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def serve(
    args: argparse.Namespace, tls: tuple[ssl.SSLContext, str] | None = None
) -> dict[str, object]:
    server = FeedServer(args.kind, args.events, args.rate, args.connections)
    handler = server.handle if tls is None else partial(server.handle_tls, tls[0])
    cpu_start = _cpu_s()
    with trio.move_on_after(args.timeout):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(trio.serve_tcp, handler, args.port, host="127.0.0.1")
            )
            port = listeners[0].socket.getsockname()[1]
            print(f"port: {port}", flush=True)
            if tls is not None:
                print(f"ca: {tls[1]}", flush=True)
            if args.rate > 0:
                nursery.start_soon(server.pace)
            await server.all_left.wait()
            nursery.cancel_scope.cancel()
    result: dict[str, object] = {
        "kind": args.kind,
        "events": args.events,
        "rate": args.rate,
        "connections": server.joined,
        "sent": sorted(server.sent.values()),
        "send_s": round(server.send_s, 4),
        "cpu_s": round(_cpu_s() - cpu_start, 4),
        "pacer_late_max_ms": round(server.pacer_late_max_s * 1000, 3),
    }
    if tls is not None:
        result["tls"] = server.tls_versions
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--kind", choices=("depth20", "trade"), default="depth20")
    parser.add_argument("--events", type=int, default=30000, help="frames sent to each client")
    parser.add_argument("--rate", type=float, default=0.0, help="frames/s; 0 for a burst")
    parser.add_argument("--connections", type=int, default=1, help="clients to wait for")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=300.0, help="stop after this long")
    parser.add_argument("--tls", action="store_true", help="serve wss:// (see the docstring)")
    parser.add_argument("--tls-version", choices=tuple(TLS_VERSIONS), default="1.3")
    args = parser.parse_args(argv)
    if args.rate > 0 and args.kind != "depth20":
        parser.error("paced mode is depth20 only (the send time rides in lastUpdateId)")
    if args.events < 1 or args.connections < 1:
        parser.error("--events and --connections must be >= 1")
    with contextlib.ExitStack() as stack:
        tls = None
        if args.tls:
            made = stack.enter_context(loopback_tls(args.tls_version))
            tls = (made.server_context, made.ca_path)
        result = trio.run(serve, args, tls)
    print(orjson.dumps(result).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
