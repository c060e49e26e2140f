"""One task reading every market-data connection (genesis.exchange.ws_reader).

Over real socket pairs (the reader waits on file descriptors), against websockets' sans-I/O
server on the other end, and over loopback against the simulator's stream server for the
guarantee the relay exists for: pings answered while the subscriber does not read.
"""

from __future__ import annotations

import functools
import os
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import attrs
import pytest
import trio
import trio.testing
import trio_websocket
from websockets.frames import Frame, Opcode

from genesis.bus import EventBus
from genesis.exchange import ws_reader
from genesis.exchange.ws_reader import ReadGroup
from genesis.exchange.ws_transport import FastWebSocket, wrap_client_stream
from genesis.models.market import Trade
from genesis.sim.clock import SimClock
from genesis.sim.hub import StreamHub
from genesis.sim.streams import StreamServer, StreamServerConfig, serve_market_streams
from tests.test_ws_manager import SYMBOLS, launch_in_background, poll_until, publish_round
from tests.test_ws_transport import URL, RawServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

pytestmark = pytest.mark.skipif(not ws_reader.supported(), reason="no epoll on this platform")


@attrs.define(eq=False)
class Pair:
    """Our client over a real socket, websockets' server on the other end, and what it got."""

    ws: FastWebSocket
    server: RawServer
    got: list[str | bytes] = attrs.field(factory=list)
    reads: list[int] = attrs.field(factory=list)

    def sink(self, messages: Sequence[str | bytes], now: float) -> None:
        del now
        self.got.extend(messages)
        self.reads.append(len(messages))


@asynccontextmanager
async def open_pairs(nursery: trio.Nursery, n: int) -> AsyncIterator[list[Pair]]:
    pairs = []
    for _ in range(n):
        a, b = trio.socket.socketpair()
        server = RawServer(trio.SocketStream(b))
        accepted = trio.Event()

        async def accept(server: RawServer, accepted: trio.Event) -> None:
            await server.handshake()
            accepted.set()

        nursery.start_soon(accept, server, accepted)
        pairs.append(Pair(await wrap_client_stream(trio.SocketStream(a), URL), server))
        await accepted.wait()  # the server's side is done writing too
    try:
        yield pairs
    finally:
        with trio.CancelScope(shield=True):  # the test's nursery may be cancelled already
            for pair in pairs:
                with trio.move_on_after(0):
                    await pair.ws.aclose()  # cancelled at once: the transport is closed anyway
                await trio.aclose_forcefully(pair.server.stream)


def frame_bytes(server: RawServer, *texts: str) -> bytes:
    for text in texts:
        server.protocol.send_text(text.encode())
    return b"".join(server.protocol.data_to_send())


def write_now(server: RawServer, data: bytes) -> None:
    """Into the kernel's buffer at once, without a schedule point."""
    stream = server.stream
    assert isinstance(stream, trio.SocketStream)
    assert os.write(stream.socket.fileno(), data) == len(data)


async def test_copies_that_arrived_together_cost_one_wake_up() -> None:
    group = ReadGroup()
    async with trio.open_nursery() as nursery, open_pairs(nursery, 3) as pairs:
        nursery.start_soon(group.run)
        for pair in pairs:
            assert group.attach(pair.ws, pair.sink)
        await trio.testing.wait_all_tasks_blocked()
        # Every copy is in the kernel before the reader runs again: one wake-up takes them.
        for pair in pairs:
            write_now(pair.server, frame_bytes(pair.server, "a", "b"))
        with trio.fail_after(5):
            await poll_until(lambda: all(len(p.got) == 2 for p in pairs))
        stats = group.statistics()
        nursery.cancel_scope.cancel()
    assert [p.got for p in pairs] == [["a", "b"]] * 3
    assert [p.reads for p in pairs] == [[2]] * 3  # every frame of a read handed over at once
    assert stats.wakeups == 1
    assert stats.reads == 3
    assert stats.attached == 3


async def test_every_connection_arrives_whole_and_in_order() -> None:
    group = ReadGroup()
    texts = [f'{{"n":{i}}}' for i in range(500)]
    async with trio.open_nursery() as nursery, open_pairs(nursery, 3) as pairs:
        nursery.start_soon(group.run)
        for pair in pairs:
            group.attach(pair.ws, pair.sink)

        async def send(pair: Pair) -> None:
            for i in range(0, len(texts), 7):
                await pair.server.stream.send_all(frame_bytes(pair.server, *texts[i : i + 7]))
                await trio.lowlevel.checkpoint()

        for pair in pairs:
            nursery.start_soon(send, pair)
        with trio.fail_after(10):
            await poll_until(lambda: all(len(p.got) == len(texts) for p in pairs))
        nursery.cancel_scope.cancel()
    assert all(p.got == texts for p in pairs)
    assert all(p.ws.messages_received == len(texts) for p in pairs)


async def test_a_ping_is_answered_inside_the_read_with_nobody_waiting() -> None:
    group = ReadGroup()
    async with trio.open_nursery() as nursery, open_pairs(nursery, 1) as (pair,):
        nursery.start_soon(group.run)
        group.attach(pair.ws, pair.sink)
        pair.server.protocol.send_ping(b"hi")
        pair.server.protocol.send_text(b"after")
        await pair.server.flush()
        with trio.fail_after(5):
            pair.server.protocol.receive_data(await pair.server.stream.receive_some(65536))
        events = pair.server.protocol.events_received()
        await poll_until(lambda: pair.got == ["after"])
        nursery.cancel_scope.cancel()
    assert [(e.opcode, e.data) for e in events if isinstance(e, Frame)] == [(Opcode.PONG, b"hi")]
    assert pair.ws.pongs_sent == 1


async def test_a_pong_behind_a_write_under_way_is_written_by_the_connection_task() -> None:
    group = ReadGroup()
    async with trio.open_nursery() as nursery, open_pairs(nursery, 1) as (pair,):
        nursery.start_soon(group.run)
        group.attach(pair.ws, pair.sink)
        waiter_done = trio.Event()

        async def wait_closed() -> None:
            with pytest.raises(trio_websocket.ConnectionClosed):
                await pair.ws.wait_closed()
            waiter_done.set()

        async with pair.ws._send_lock:  # another task is writing: the read must not interleave
            pair.server.protocol.send_ping(b"queued")
            await pair.server.flush()
            await poll_until(lambda: pair.ws.pongs_sent == 1)
            nursery.start_soon(wait_closed)
            await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(5):
            pair.server.protocol.receive_data(await pair.server.stream.receive_some(65536))
        events = pair.server.protocol.events_received()
        pair.server.protocol.send_close(1000)
        await pair.server.flush()
        with trio.fail_after(5):
            await waiter_done.wait()
        nursery.cancel_scope.cancel()
    assert [(e.opcode, e.data) for e in events if isinstance(e, Frame)] == [
        (Opcode.PONG, b"queued")
    ]


async def test_the_end_of_a_connection_reaches_its_task_after_its_frames() -> None:
    group = ReadGroup()
    async with trio.open_nursery() as nursery, open_pairs(nursery, 2) as (closing, other):
        nursery.start_soon(group.run)
        group.attach(closing.ws, closing.sink)
        group.attach(other.ws, other.sink)
        closing.server.protocol.send_text(b"last")
        closing.server.protocol.send_close(1001, "going away")
        await closing.server.flush()
        with trio.fail_after(5), pytest.raises(trio_websocket.ConnectionClosed) as caught:
            await closing.ws.wait_closed()
        # The other connection is still read.
        await other.server.stream.send_all(frame_bytes(other.server, "still here"))
        with trio.fail_after(5):
            await poll_until(lambda: other.got == ["still here"])
        stats = group.statistics()
        nursery.cancel_scope.cancel()
    assert closing.got == ["last"]
    assert caught.value.reason is not None
    assert caught.value.reason.code == 1001
    assert stats.attached == 1


async def test_a_connection_lost_without_a_close_frame_is_1006() -> None:
    group = ReadGroup()
    async with trio.open_nursery() as nursery, open_pairs(nursery, 1) as (pair,):
        nursery.start_soon(group.run)
        group.attach(pair.ws, pair.sink)
        await pair.server.stream.aclose()
        with trio.fail_after(5), pytest.raises(trio_websocket.ConnectionClosed) as caught:
            await pair.ws.wait_closed()
        nursery.cancel_scope.cancel()
    assert caught.value.reason is not None
    assert caught.value.reason.code == 1006


async def test_a_failing_sink_ends_its_connection_only() -> None:
    group = ReadGroup()
    async with trio.open_nursery() as nursery, open_pairs(nursery, 2) as (bad, good):
        nursery.start_soon(group.run)

        def explode(messages: Sequence[str | bytes], now: float) -> None:
            raise ValueError(f"consumer bug on {messages!r}")

        group.attach(bad.ws, explode)
        group.attach(good.ws, good.sink)
        await bad.server.stream.send_all(frame_bytes(bad.server, "boom"))
        with trio.fail_after(5), pytest.raises(ValueError, match="consumer bug"):
            await bad.ws.wait_closed()
        await good.server.stream.send_all(frame_bytes(good.server, "fine"))
        with trio.fail_after(5):
            await poll_until(lambda: good.got == ["fine"])
        nursery.cancel_scope.cancel()


async def test_a_detached_connection_is_read_by_its_own_task_again() -> None:
    group = ReadGroup()
    async with trio.open_nursery() as nursery, open_pairs(nursery, 1) as (pair,):
        nursery.start_soon(group.run)
        assert group.attach(pair.ws, pair.sink)
        assert not group.attach(pair.ws, pair.sink)  # once
        group.detach(pair.ws)
        group.detach(pair.ws)  # idempotent
        await pair.server.stream.send_all(frame_bytes(pair.server, "mine"))
        with trio.fail_after(5):
            messages = await pair.ws.get_messages()
        nursery.cancel_scope.cancel()
    assert messages == ["mine"]
    assert pair.got == []


async def test_only_socket_connections_can_be_attached() -> None:
    group = ReadGroup()
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = RawServer(server_stream)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handshake)
        ws = await wrap_client_stream(client_stream, URL)
        assert ws.fileno is None
        assert not group.attach(ws, lambda messages, now: None)
        nursery.cancel_scope.cancel()


async def test_pings_are_answered_over_loopback_while_the_subscriber_does_not_read() -> None:
    bus = EventBus()
    stuck = bus.subscribe(Trade, buffer_size=1)  # never read: overflow is the bus's business
    hub = StreamHub()
    clock = SimClock.start()
    config = StreamServerConfig(symbols=frozenset(SYMBOLS), ping_interval_s=0.4)  # ≤ 5 messages/s
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            server: StreamServer = await nursery.start(
                functools.partial(serve_market_streams, hub, clock, config=config)
            )
            handles = launch_in_background(nursery, f"ws://127.0.0.1:{server.port}", bus)
            await poll_until(lambda: len(server.connections()) == 3)
            total = 0
            round_no = 0
            # Trades keep coming while nobody reads them, until every connection answered
            # four pings.
            while not all(c.messages_received >= 4 for c in server.connections()):
                total += publish_round(hub, round_no, clock.now_ms())
                round_no += 1
                await trio.sleep(0.01)
            await poll_until(lambda: bool(handles))
            await handles[0].wait_published(total)
            stats = handles[0].statistics()
            nursery.cancel_scope.cancel()
    assert stats.reader is not None
    assert stats.reader.reads > 0
    assert all(h.reconnects == 0 for h in stats.connections)
    assert stats.merger.published == total
    assert bus.statistics().dropped_by_type["Trade"] > 0  # the bus dropped; no socket waited
    assert stuck.receive_nowait().trade_id > 0


async def test_a_connection_closed_while_attached_does_not_block_its_successor() -> None:
    group = ReadGroup()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(group.run)
        async with open_pairs(nursery, 1) as (first,):
            assert group.attach(first.ws, first.sink)
            old_fd = first.ws.fileno
            with trio.move_on_after(0.2):  # nobody answers the close frame
                await first.ws.aclose()  # a caller that forgot to detach first
        async with open_pairs(nursery, 1) as (second,):
            if second.ws.fileno != old_fd:  # pragma: no cover  # Linux reuses the lowest number
                pytest.skip("the kernel did not reuse the socket's number")
            assert group.attach(second.ws, second.sink)
            await second.server.stream.send_all(frame_bytes(second.server, "next"))
            with trio.fail_after(5):
                await poll_until(lambda: second.got == ["next"])
        nursery.cancel_scope.cancel()
