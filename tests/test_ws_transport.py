"""The batching WebSocket transport (genesis.exchange.ws_transport).

Against trio-websocket's server over ``trio.testing.memory_stream_pair()`` (a different
implementation on the other end, so the wire is RFC 6455 and not our own reading of it), and
against the simulator's stream server under ``autojump_clock`` for the guarantee the relay
exists for: pings are answered while the subscriber does not read (ARCHITECTURE.md §7).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import attrs
import pytest
import trio
import trio.testing
import trio_websocket
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from genesis.bus import EventBus
from genesis.exchange.ws_transport import FastWebSocket, wrap_client_stream
from genesis.models.market import Trade
from genesis.sim.clock import DEFAULT_VIRTUAL_EPOCH_MS, SimClock
from genesis.sim.hub import StreamHub
from genesis.sim.streams import StreamServer, StreamServerConfig
from tests.test_ws_manager import (
    SIM_URL,
    SYMBOLS,
    launch_in_background,
    poll_until,
    publish_round,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

URL = "ws://feed.invalid/stream?streams=btcusdt@trade"


@asynccontextmanager
async def open_pair(
    nursery: trio.Nursery, *, reject: int | None = None
) -> AsyncIterator[tuple[FastWebSocket, trio_websocket.WebSocketConnection]]:
    """Our client and trio-websocket's server over a memory stream."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    accepted: list[trio_websocket.WebSocketConnection] = []
    ready = trio.Event()

    async def serve() -> None:
        request = await trio_websocket.wrap_server_stream(nursery, server_stream)
        if reject is not None:
            await request.reject(reject, body=b"go away")
            return
        accepted.append(await request.accept())
        ready.set()

    nursery.start_soon(serve)
    ws = await wrap_client_stream(client_stream, URL)
    await ready.wait()
    try:
        yield ws, accepted[0]
    finally:
        with trio.move_on_after(1):
            await ws.aclose()


async def read_until_closed(ws: FastWebSocket) -> None:
    while True:
        await ws.get_messages()


async def test_every_frame_of_a_read_is_handed_over_at_once_in_order() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery, open_pair(nursery) as (ws, server):
            for i in range(50):
                await server.send_message(f"m{i}")
            await server.send_message(b"\x00binary")
            first = await ws.get_messages()
            got = list(first)
            while len(got) < 51:
                got.extend(await ws.get_messages())
            nursery.cancel_scope.cancel()
    assert len(first) > 1  # one read, many frames
    assert got == [f"m{i}" for i in range(50)] + [b"\x00binary"]
    assert ws.messages_received == 51


async def test_a_ping_is_answered_before_the_frames_around_it_are_consumed() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery, open_pair(nursery) as (ws, server):
            await server.send_message("before")
            answered = trio.Event()

            async def ping() -> None:
                await server.ping(b"probe")  # returns once our pong arrived
                answered.set()

            nursery.start_soon(ping)
            await trio.testing.wait_all_tasks_blocked()
            await server.send_message("after")
            got: list[str | bytes] = []
            while len(got) < 2:
                got.extend(await ws.get_messages())
            await answered.wait()
            nursery.cancel_scope.cancel()
    assert got == ["before", "after"]
    assert ws.pongs_sent == 1


async def test_our_ping_returns_when_the_pong_arrives() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery, open_pair(nursery) as (ws, _server):
            done = trio.Event()

            async def probe() -> None:
                await ws.ping()
                await ws.ping(b"named")
                done.set()

            async def read() -> None:
                await ws.get_messages()

            nursery.start_soon(probe)
            nursery.start_soon(read)  # the reading task takes the pongs off the wire
            await done.wait()
            nursery.cancel_scope.cancel()


async def test_the_peers_close_code_ends_the_connection_after_its_frames() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery, open_pair(nursery) as (ws, server):
            await server.send_message("last")
            nursery.start_soon(server.aclose, 1001, "going away")
            assert await ws.get_messages() == ["last"]
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                await read_until_closed(ws)
            nursery.cancel_scope.cancel()
    assert info.value.reason is not None
    assert info.value.reason.code == 1001
    assert info.value.reason.reason == "going away"


async def test_a_message_over_1_mib_closes_with_1009() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery, open_pair(nursery) as (ws, server):
            nursery.start_soon(server.send_message, "x" * ((1 << 20) + 1))
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                await read_until_closed(ws)
            nursery.cancel_scope.cancel()
    assert info.value.reason is not None
    assert info.value.reason.code == 1009


async def test_a_rejected_handshake_raises_connection_rejected() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def serve() -> None:
                request = await trio_websocket.wrap_server_stream(nursery, server_stream)
                await request.reject(429, body=b"slow down")

            nursery.start_soon(serve)
            with pytest.raises(trio_websocket.ConnectionRejected) as info:
                await wrap_client_stream(client_stream, URL)
            await client_stream.aclose()  # on failure the caller closes the stream
            nursery.cancel_scope.cancel()  # trio-websocket's server task waits for a close
    assert info.value.status_code == 429


async def test_a_connection_reset_is_a_1006_close() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery, open_pair(nursery) as (ws, server):
            await trio.aclose_forcefully(server._stream)  # TCP gone, no close frame
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                await read_until_closed(ws)
            nursery.cancel_scope.cancel()
    assert info.value.reason is not None
    assert info.value.reason.code == 1006


# --- the guarantee the market-data relay exists for -----------------------------------------


@attrs.define(eq=False)
class FastMemoryConnector:
    """The fast transport to the simulator's stream server over a memory stream."""

    server: StreamServer
    server_nursery: trio.Nursery

    async def __call__(
        self, nursery: trio.Nursery, url: str, *, message_queue_size: int, role: str = ""
    ) -> FastWebSocket:
        stream = self.server.connect_memory_stream(self.server_nursery)
        return await wrap_client_stream(stream, url)


async def test_pings_are_answered_while_the_subscriber_does_not_read(
    autojump_clock: trio.abc.Clock,
) -> None:
    bus = EventBus()
    stuck = bus.subscribe(Trade, buffer_size=1)  # never read: overflow is the bus's business
    hub = StreamHub()
    clock = SimClock.start(DEFAULT_VIRTUAL_EPOCH_MS)
    server = StreamServer(hub, clock, StreamServerConfig(symbols=frozenset(SYMBOLS)))
    with trio.fail_after(600):
        async with trio.open_nursery() as server_nursery, trio.open_nursery() as nursery:
            handles = launch_in_background(
                nursery,
                SIM_URL,
                bus,
                connector=FastMemoryConnector(server, server_nursery),
                wall_clock_ms=clock.now_ms,
            )
            await poll_until(lambda: len(server.connections()) == 3)  # all subscribed
            # 60 rounds over 90 s of virtual time: several server pings (every 20 s) while
            # the subscriber holds one unread trade and thousands more were published.
            total = 0
            for r in range(60):
                total += publish_round(hub, r, clock.now_ms())
                await trio.sleep(1.5)
                assert all(c.outstanding_pings <= 1 for c in server.connections())
            (handle,) = handles
            await handle.wait_published(total)
            infos = server.connections()
            stats = handle.statistics()
            nursery.cancel_scope.cancel()
            server_nursery.cancel_scope.cancel()
    assert len(infos) == 3
    assert all(info.outstanding_pings == 0 for info in infos)
    assert all(info.messages_received >= 4 for info in infos)  # our pongs (90 s / 20 s)
    assert all(h.reconnects == 0 for h in stats.connections)
    assert stats.merger.published == total
    assert (
        bus.statistics().dropped_by_type["Trade"] > 0
    )  # the bus dropped, the connection did not wait
    assert stuck.receive_nowait().trade_id > 0


# --- frames trio-websocket's server does not send: a raw websockets server --------------------


@attrs.define(eq=False)
class RawServer:
    """websockets' sans-I/O server over the other end of a memory stream, for crafted frames."""

    stream: trio.abc.Stream
    protocol: ServerProtocol = attrs.field(factory=ServerProtocol)

    async def handshake(self) -> None:
        while True:
            self.protocol.receive_data(await self.stream.receive_some(65536))
            requests = [e for e in self.protocol.events_received() if isinstance(e, Request)]
            if requests:
                self.protocol.send_response(self.protocol.accept(requests[0]))
                await self.flush()
                return

    async def flush(self) -> None:
        await self.stream.send_all(b"".join(self.protocol.data_to_send()))

    async def send_frame(self, frame: Frame) -> None:
        self.protocol.send_frame(frame)
        await self.flush()


@asynccontextmanager
async def open_raw(nursery: trio.Nursery) -> AsyncIterator[tuple[FastWebSocket, RawServer]]:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = RawServer(server_stream)
    nursery.start_soon(server.handshake)
    ws = await wrap_client_stream(client_stream, URL)
    yield ws, server


async def test_fragments_are_joined_and_bad_utf8_is_handed_on_as_bytes() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery, open_raw(nursery) as (ws, server):
            await server.send_frame(Frame(Opcode.TEXT, b"hel", fin=False))
            await server.send_frame(Frame(Opcode.CONT, b"lo ", fin=False))
            await server.send_frame(Frame(Opcode.CONT, "wörld".encode(), fin=True))
            server.protocol.send_text(b"\xff\xfe not utf-8")  # the peer's bug, not ours
            await server.flush()
            got: list[str | bytes] = [await ws.get_message()]
            while len(got) < 2:
                got.extend(await ws.get_messages())
            nursery.cancel_scope.cancel()
    assert got == ["hello wörld", b"\xff\xfe not utf-8"]


async def test_a_ping_waiting_when_the_connection_ends_raises_connection_closed() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery, open_raw(nursery) as (ws, server):
            outcome: list[BaseException] = []

            async def probe() -> None:
                try:
                    await ws.ping(b"p")
                except trio_websocket.ConnectionClosed as exc:
                    outcome.append(exc)

            nursery.start_soon(probe)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(ValueError, match="already waiting"):
                await ws.ping(b"p")
            await server.stream.aclose()  # gone without a pong or a close frame
            with pytest.raises(trio_websocket.ConnectionClosed):
                await read_until_closed(ws)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio_websocket.ConnectionClosed):
                await ws.ping()
            nursery.cancel_scope.cancel()
    assert len(outcome) == 1
    assert ws.closed is not None
    assert ws.closed.code == 1006


async def test_a_peer_that_hangs_up_during_the_handshake_is_a_handshake_error() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def hang_up() -> None:
                await server_stream.receive_some(65536)
                await server_stream.aclose()

            nursery.start_soon(hang_up)
            with pytest.raises(trio_websocket.HandshakeError):
                await wrap_client_stream(client_stream, URL)


def server_frames(*frames: Frame) -> bytes:
    """Frames as a server writes them (unmasked)."""
    return b"".join(frame.serialize(mask=False, extensions=[]) for frame in frames)


async def test_frames_split_across_reads_at_any_byte_arrive_whole_and_in_order() -> None:
    expected: list[str | bytes] = ["a", "b" * 300, "c" * 70_000, b"\x00\x01", "frag-mented", "z"]
    wire = server_frames(
        Frame(Opcode.TEXT, b"a"),
        Frame(Opcode.TEXT, b"b" * 300),  # 16-bit length
        Frame(Opcode.PING, b"in-between"),
        Frame(Opcode.TEXT, b"c" * 70_000),  # 64-bit length: the protocol's path
        Frame(Opcode.BINARY, b"\x00\x01"),
        Frame(Opcode.TEXT, b"frag-", fin=False),
        Frame(Opcode.CONT, b"mented", fin=True),
        Frame(Opcode.TEXT, b"z"),
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery, open_raw(nursery) as (ws, server):
            got: list[str | bytes] = []

            async def read() -> None:
                while len(got) < len(expected):
                    got.extend(await ws.get_messages())

            nursery.start_soon(read)
            pos, step = 0, 1
            while pos < len(wire):  # 1, 2, … 13-byte pieces, each read on its own
                await server.stream.send_all(wire[pos : pos + step])
                await trio.testing.wait_all_tasks_blocked()
                pos += step
                step = step % 13 + 1 if pos < 200 else 4096
            while len(got) < len(expected):
                await trio.testing.wait_all_tasks_blocked()
            server.protocol.receive_data(await server.stream.receive_some(65536))
            pongs = [e for e in server.protocol.events_received() if isinstance(e, Frame)]
            nursery.cancel_scope.cancel()
    assert got == expected
    assert [(f.opcode, f.data) for f in pongs] == [(Opcode.PONG, b"in-between")]


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (b"\x81\x85abcd" + bytes(b ^ m for b, m in zip(b"hello", b"abcda", strict=True)), 1002),
        (b"\xc1\x05hello", 1002),  # RSV1 without a negotiated extension
        (b"\x83\x01x", 1002),  # reserved opcode
        (b"\x81\x7f" + (2**21).to_bytes(8, "big"), 1009),  # 2 MiB announced
    ],
    ids=["masked", "rsv", "opcode", "too-big"],
)
async def test_frames_a_server_must_not_send_fail_the_connection(wire: bytes, code: int) -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery, open_raw(nursery) as (ws, server):
            await server.stream.send_all(server_frames(Frame(Opcode.TEXT, b"ok")) + wire)
            assert await ws.get_messages() == ["ok"]
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                await read_until_closed(ws)
            nursery.cancel_scope.cancel()
    assert info.value.reason is not None
    assert info.value.reason.code == code
