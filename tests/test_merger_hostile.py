"""Hostile input over a real WebSocket (trio-websocket on both ends of a memory stream).

A scripted server sends every kind of bad frame between good trades, then closes with
unexpected codes; the feed must count each by kind, keep going, and lose no good trade.
"""

from __future__ import annotations

import functools
import urllib.parse
from typing import TYPE_CHECKING

import attrs
import trio
import trio.testing
import trio_websocket

from genesis.bus import EventBus
from genesis.exchange.ws_manager import MarketDataConfig, WebSocket, run_market_data
from genesis.models.market import Trade
from tests.test_merger import HOSTILE, trade_frame

if TYPE_CHECKING:
    from genesis.exchange.ws_manager import MarketDataHandle

Script = list[str | bytes | int]
"""Frames to send; an int closes the connection with that code."""


@attrs.define(eq=False)
class HostileServer:
    """Each connection plays the next script; the last one is then kept open and idle."""

    scripts: list[Script]
    server_nursery: trio.Nursery
    connections: int = 0

    async def __call__(
        self, nursery: trio.Nursery, url: str, *, message_queue_size: int, role: str = ""
    ) -> WebSocket:
        client, server = trio.testing.memory_stream_pair()
        script = self.scripts[min(self.connections, len(self.scripts) - 1)]
        self.connections += 1
        self.server_nursery.start_soon(self._serve, server, script)
        parts = urllib.parse.urlsplit(url)
        ws: WebSocket = await trio_websocket.wrap_client_stream(
            nursery,
            client,  # type: ignore[arg-type]  # any trio Stream works
            "hostile",
            f"{parts.path}?{parts.query}",
            message_queue_size=message_queue_size,
        )
        return ws

    async def _serve(self, stream: trio.abc.Stream, script: Script) -> None:
        async with trio.open_nursery() as nursery:
            request = await trio_websocket.wrap_server_stream(
                nursery,
                stream,
                max_message_size=4 << 20,  # the server itself accepts anything
            )
            ws = await request.accept()
            try:
                for item in script:
                    if isinstance(item, int):
                        await ws.aclose(code=item)
                        return
                    await ws.send_message(item)
                    await trio.sleep(0.01)
                await trio.sleep_forever()
            except trio_websocket.ConnectionClosed:
                return
            finally:
                nursery.cancel_scope.cancel()


async def start(nursery: trio.Nursery, bus: EventBus, server: HostileServer) -> MarketDataHandle:
    handle: MarketDataHandle = await nursery.start(
        functools.partial(
            run_market_data,
            "ws://hostile.invalid",
            ["BTCUSDT"],
            bus,
            roles=("execution",),
            config=MarketDataConfig(stale_after_s=1000.0),
            connector=server,
            wall_clock_ms=lambda: 0,
        )
    )
    return handle


async def test_every_hostile_frame_is_counted_by_kind_and_the_feed_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = EventBus({})
    subscription = bus.subscribe(Trade, buffer_size=1000)
    hostile = [raw for raw, kind in HOSTILE if kind != "oversized"]
    # The hostile trades carry id 7: they come before good trade 7 (after it, a frame keyed 7
    # is dropped unparsed as a copy, by design).
    last_id = 12
    script: Script = [trade_frame(1), *hostile, *(trade_frame(i) for i in range(2, last_id + 1))]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server = HostileServer([script], nursery)
            handle = await start(nursery, bus, server)
            await handle.wait_published(last_id)
            stats = handle.statistics()
            nursery.cancel_scope.cancel()
    received = []
    while True:
        try:
            received.append(subscription.receive_nowait().trade_id)
        except trio.WouldBlock:
            break
    assert received == list(range(1, last_id + 1))
    expected: dict[str, int] = {}
    for _, kind in HOSTILE:
        if kind != "oversized":
            expected[kind] = expected.get(kind, 0) + 1
    assert dict(stats.merger.faults) == expected
    assert stats.merger.decode_errors == len(hostile)
    assert stats.connections[0].reconnects == 0


async def test_oversized_frames_and_unexpected_close_codes_cost_a_reconnect_not_the_feed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = EventBus({})
    huge = '{"stream":"btcusdt@trade","data":{"x":"' + "a" * (1 << 20) + '"}}'
    scripts: list[Script] = [
        [trade_frame(1), huge, trade_frame(2)],  # trio-websocket refuses > 1 MiB: close 1009
        [trade_frame(2), 4001],  # the server closes with a code of its own
        [trade_frame(3), 1011],
        [trade_frame(3), trade_frame(4)],
    ]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server = HostileServer(scripts, nursery)
            handle = await start(nursery, bus, server)
            await handle.wait_published(4)
            stats = handle.statistics()
            nursery.cancel_scope.cancel()
    assert server.connections == 4
    assert stats.connections[0].reconnects == 3
    # The oversized frame never reaches the merger: trio-websocket closes with 1009 "too big".
    assert dict(stats.merger.faults) == {"close_1009": 1, "close_4001": 1, "close_1011": 1}
    assert stats.merger.published == 4
