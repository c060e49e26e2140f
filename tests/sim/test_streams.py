"""The simulator's market-stream server: URLs, payload formats, control messages, faults.

Rules for these tests: the server runs over ``trio.testing.memory_stream_pair()`` (via
``StreamServer.connect_memory_stream``) under the autojump clock, so nothing depends on wall
time; a single test uses a real socket on 127.0.0.1:0. Clients are either trio-websocket's own
client (``wrap_client_stream``; it answers pings by itself) or :class:`RawClient`, a few lines of
wsproto that only does what the test tells it (it answers no ping unless asked). Every test has
a deadline on the Trio clock. The helpers here are reused by ``test_streams_clock.py``.
"""

from __future__ import annotations

import functools
import json
import logging
from collections import deque
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import attrs
import orjson
import pytest
import trio
import trio.testing
import trio_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Event, RejectConnection, Request

from genesis.exchange.endpoints import KLINE_INTERVALS
from genesis.sim.clock import DEFAULT_VIRTUAL_EPOCH_MS, SimClock
from genesis.sim.hub import StreamHub
from genesis.sim.streams import (
    INVALID_ID_MSG,
    StreamFaults,
    StreamServer,
    StreamServerConfig,
    serve_market_streams,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

SYMBOLS = frozenset({"BTCUSDT", "ETHUSDT", "BNBUSDT"})
# Protocol tests send many control messages back to back; the 5/s limit has its own tests.
RELAXED = StreamServerConfig(symbols=SYMBOLS, max_incoming_per_window=10_000)
TRADE = b'{"e":"trade","E":1767225600000,"s":"BTCUSDT","t":1,"p":"60000.00000000","q":"0.00100000","T":1767225600000,"m":true,"M":true}'  # noqa: E501
DEPTH = b'{"lastUpdateId":160,"bids":[["0.0024","10"]],"asks":[["0.0026","100"]]}'


def make_server(
    config: StreamServerConfig = RELAXED, faults: StreamFaults | None = None
) -> StreamServer:
    return StreamServer(
        StreamHub(),
        SimClock.start(DEFAULT_VIRTUAL_EPOCH_MS),
        config,
        faults if faults is not None else StreamFaults(),
    )


@asynccontextmanager
async def open_client(
    server: StreamServer, resource: str, *, remote_ip: str = "127.0.0.1"
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A trio-websocket client connected in memory; yields once the server has registered it."""
    async with trio.open_nursery() as nursery:
        stream = server.connect_memory_stream(nursery, remote_ip=remote_ip)
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            stream,  # type: ignore[arg-type]  # any trio Stream works; the annotation is narrow
            "localhost",
            resource,
            message_queue_size=4096,
        )
        await trio.testing.wait_all_tasks_blocked()
        try:
            yield ws
        finally:
            nursery.cancel_scope.cancel()


async def request(ws: trio_websocket.WebSocketConnection, message: object | str) -> object:
    """Send a control message (dict or raw text) and return the decoded reply."""
    text = message if isinstance(message, str) else json.dumps(message)
    await ws.send_message(text)
    reply = await ws.get_message()
    assert isinstance(reply, str)
    decoded: object = orjson.loads(reply)
    return decoded


async def assert_silent(ws: trio_websocket.WebSocketConnection, seconds: float = 5.0) -> None:
    with trio.move_on_after(seconds) as scope:
        message = await ws.get_message()
        pytest.fail(f"unexpected frame {message!r}")
    assert scope.cancelled_caught


async def read_until_closed(ws: trio_websocket.WebSocketConnection) -> list[str | bytes]:
    """Every frame until the connection closes; the close reason is in ``ws.closed``."""
    frames: list[str | bytes] = []
    while True:
        try:
            frames.append(await ws.get_message())
        except trio_websocket.ConnectionClosed:
            return frames


def close_code(ws: trio_websocket.WebSocketConnection) -> int | None:
    return None if ws.closed is None else ws.closed.code


@attrs.define
class RawClient:
    """A bare wsproto client: nothing happens unless the test does it (no automatic pongs)."""

    stream: trio.abc.Stream
    conn: WSConnection = attrs.field(factory=lambda: WSConnection(ConnectionType.CLIENT))
    pending: deque[Event] = attrs.field(factory=deque)
    eof: bool = False

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.conn.send(event))

    async def handshake(self, target: str) -> Event | None:
        await self.send(Request(host="localhost", target=target))
        return await self.next_event()

    async def next_event(self) -> Event | None:
        """The next wsproto event, or None once the server has closed the TCP stream."""
        while not self.pending:
            self.pending.extend(self.conn.events())
            if self.pending:
                break
            if self.eof:
                return None
            data = await self.stream.receive_some(65536)
            if not data:
                self.eof = True
            self.conn.receive_data(bytes(data) if data else None)
        return self.pending.popleft()


@asynccontextmanager
async def open_raw(
    server: StreamServer, *, remote_ip: str = "127.0.0.1"
) -> AsyncIterator[RawClient]:
    async with trio.open_nursery() as nursery:
        client = RawClient(server.connect_memory_stream(nursery, remote_ip=remote_ip))
        try:
            yield client
        finally:
            nursery.cancel_scope.cancel()


# --- payload delivery ----------------------------------------------------------------------


async def test_raw_stream_delivers_payload_bytes_unchanged(autojump_clock: trio.abc.Clock) -> None:
    server = make_server()
    with trio.fail_after(60):
        async with open_client(server, "/ws/btcusdt@trade") as ws:
            assert server.hub.publish("ethusdt@trade", TRADE) == 0  # nobody listens
            assert server.hub.publish("btcusdt@trade", TRADE) == 1
            assert await ws.get_message() == TRADE.decode()
            await assert_silent(ws)
            assert server.connections()[0].frames_sent == 1


async def test_combined_stream_wraps_payload_without_reencoding(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = make_server()
    with trio.fail_after(60):
        async with open_client(server, "/stream?streams=btcusdt@trade/ethusdt@depth20@100ms") as ws:
            server.hub.publish("ethusdt@depth20@100ms", DEPTH)
            server.hub.publish("btcusdt@trade", TRADE)
            first = await ws.get_message()
            second = await ws.get_message()
    assert first == '{"stream":"ethusdt@depth20@100ms","data":' + DEPTH.decode() + "}"
    assert second == '{"stream":"btcusdt@trade","data":' + TRADE.decode() + "}"


@pytest.mark.shared
async def test_combined_frame_matches_documented_shape(
    shared_dir: Path, autojump_clock: trio.abc.Clock
) -> None:
    samples = json.loads((shared_dir / "binance" / "samples.json").read_text())
    documented = samples["ws.combined.trade"]
    server = make_server(attrs.evolve(RELAXED, symbols={"BNBBTC"}))
    with trio.fail_after(60):
        async with open_client(server, "/stream?streams=bnbbtc@trade") as ws:
            server.hub.publish("bnbbtc@trade", orjson.dumps(documented["data"]))
            frame = await ws.get_message()
    assert orjson.loads(frame) == documented


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        ("/ws/btcusdt%40trade", ["btcusdt@trade"]),
        ("/ws/btcusdt@trade/ethusdt@kline_1m", ["btcusdt@trade", "ethusdt@kline_1m"]),
        ("/ws/btcusdt@trade/btcusdt@trade", ["btcusdt@trade"]),
        ("/ws", []),
        ("/ws/", []),
        ("/stream", []),
        (
            "/stream?streams=btcusdt%40trade%2Fbnbusdt%40depth%40100ms",
            ["btcusdt@trade", "bnbusdt@depth@100ms"],
        ),
        ("/ws/ethusdt@depth5?timeUnit=MICROSECOND", ["ethusdt@depth5"]),
    ],
)
async def test_url_forms_subscribe_the_named_streams(
    resource: str, expected: list[str], autojump_clock: trio.abc.Clock
) -> None:
    server = make_server()
    with trio.fail_after(60):
        async with open_client(server, resource) as ws:
            assert await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1}) == {
                "result": expected,
                "id": 1,
            }
            assert server.connections()[0].path == resource
            assert server.hub.active_streams() == frozenset(expected)


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/foo", 404),
        ("/api/v3/ping", 404),
        ("/wsx/btcusdt@trade", 404),
        ("/stream?streams=btcusdt@nope", 400),
        ("/stream?streams=xrpusdt@trade", 400),  # well-formed, but not a symbol of this server
        ("/stream?streams=BTCUSDT@trade", 400),  # symbols in stream names are lower case
        ("/stream?streams=btcusdt@trade/btcusdt@kline_2s", 400),
    ],
)
async def test_handshake_rejects_unknown_paths_and_invalid_streams(
    target: str, status: int, autojump_clock: trio.abc.Clock
) -> None:
    server = make_server()
    with trio.fail_after(60):
        async with open_raw(server) as client:
            reply = await client.handshake(target)
    assert isinstance(reply, RejectConnection)
    assert reply.status_code == status
    stats = server.statistics()
    assert (stats.rejected_not_found, stats.rejected_bad_request) == (
        (1, 0) if status == 404 else (0, 1)
    )
    assert stats.connections_accepted == 0


@pytest.mark.parametrize(
    "resource",
    [
        "/ws/0",
        "/ws/1",
        "/ws/anything",
        "/ws/btcusdt@nope",
        "/ws/xrpusdt@trade",  # well-formed, but not a symbol of this server
        "/ws/BTCUSDT@trade",  # symbols in stream names are lower case
    ],
)
async def test_raw_path_without_a_stream_opens_and_carries_nothing_until_subscribe(
    resource: str, autojump_clock: trio.abc.Clock
) -> None:
    server = make_server()
    with trio.fail_after(60):
        async with open_client(server, resource) as ws:
            server.hub.publish("btcusdt@trade", TRADE)
            await assert_silent(ws)
            assert await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1}) == {
                "result": [],
                "id": 1,
            }
            subscribe = {"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 2}
            assert await request(ws, subscribe) == {"result": None, "id": 2}
            server.hub.publish("btcusdt@trade", TRADE)
            assert await ws.get_message() == TRADE.decode()
    assert server.statistics().rejected_bad_request == 0


async def test_raw_path_keeps_the_valid_names_of_a_mixed_list(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = make_server()
    with trio.fail_after(60):
        async with open_client(server, "/ws/0/btcusdt@trade/junk") as ws:
            assert await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1}) == {
                "result": ["btcusdt@trade"],
                "id": 1,
            }


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\x81\x02hi", 1002),  # a client frame without a mask
        (b"\x81\x82\x00\x00\x00\x00\xff\xfe", 1007),  # a text frame that is not UTF-8
        (b"\x83\x80\x00\x00\x00\x00", 1002),  # a reserved opcode
    ],
)
async def test_protocol_violation_gets_a_close_frame_before_the_tcp_close(
    frame: bytes, code: int, autojump_clock: trio.abc.Clock
) -> None:
    server = make_server()
    with trio.fail_after(60):
        async with open_raw(server) as client:
            assert isinstance(await client.handshake("/ws/btcusdt@trade"), AcceptConnection)
            await client.stream.send_all(frame)
            event = await client.next_event()
            assert isinstance(event, CloseConnection)
            assert event.code == code
            while await client.next_event() is not None:  # then the TCP connection ends
                pass
    assert server.connections() == ()


async def test_handshake_rejects_more_streams_than_the_cap(autojump_clock: trio.abc.Clock) -> None:
    server = make_server(attrs.evolve(RELAXED, max_streams_per_connection=2))
    with trio.fail_after(60):
        async with open_raw(server) as client:
            reply = await client.handshake("/stream?streams=btcusdt@trade/ethusdt@trade")
        assert isinstance(reply, AcceptConnection)
        async with open_raw(server) as client:
            target = "/stream?streams=btcusdt@trade/ethusdt@trade/bnbusdt@trade"
            reply = await client.handshake(target)
        assert isinstance(reply, RejectConnection)
        assert reply.status_code == 400


UPGRADE = (
    "GET {} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE / HTTP/1.1\r\n\r\n",  # trio-websocket's own 400 fails to send
        UPGRADE.format("/nope").encode(),  # our 404 fails to send
        UPGRADE.format("/ws/btcusdt@trade").encode(),  # our 101 fails to send
    ],
)
async def test_a_client_vanishing_mid_handshake_does_not_take_the_server_down(
    request_bytes: bytes, autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server()
    caplog.set_level(logging.INFO, logger="genesis.sim.streams")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:  # a server-side error would surface here
            stream = server.connect_memory_stream(nursery, remote_ip="10.9.8.7")
            await stream.send_all(request_bytes)
            await stream.aclose()
        assert "sim.ws.lost remote=10.9.8.7" in caplog.messages
        assert server.connections() == ()
        async with open_client(server, "/ws/btcusdt@trade") as ws:
            assert await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1}) == {
                "result": ["btcusdt@trade"],
                "id": 1,
            }


# --- control messages ----------------------------------------------------------------------


async def test_subscribe_unsubscribe_and_list(autojump_clock: trio.abc.Clock) -> None:
    server = make_server()
    with trio.fail_after(60):
        async with open_client(server, "/ws") as ws:
            subscribe = {
                "method": "SUBSCRIBE",
                "params": ["btcusdt@trade", "ethusdt@trade"],
                "id": 1,
            }
            assert await request(ws, subscribe) == {"result": None, "id": 1}
            server.hub.publish("ethusdt@trade", TRADE)
            assert await ws.get_message() == TRADE.decode()

            unsubscribe = {"method": "UNSUBSCRIBE", "params": ["ethusdt@trade"], "id": 312}
            assert await request(ws, unsubscribe) == {"result": None, "id": 312}
            assert not server.hub.has_subscribers("ethusdt@trade")
            assert server.hub.publish("ethusdt@trade", TRADE) == 0
            # Subscribing twice is harmless; unsubscribing what is not subscribed too.
            assert await request(ws, subscribe | {"id": 2}) == {"result": None, "id": 2}
            assert await request(ws, unsubscribe | {"id": 3}) == {"result": None, "id": 3}
            assert await request(ws, unsubscribe | {"id": 4}) == {"result": None, "id": 4}
            listing = await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": "abc"})
            assert listing == {"result": ["btcusdt@trade"], "id": "abc"}


async def test_combined_property_switches_the_frame_format(autojump_clock: trio.abc.Clock) -> None:
    server = make_server()
    get = {"method": "GET_PROPERTY", "params": ["combined"], "id": 2}
    with trio.fail_after(60):
        async with open_client(server, "/ws/btcusdt@trade") as ws:
            assert await request(ws, get) == {"result": False, "id": 2}
            server.hub.publish("btcusdt@trade", TRADE)
            assert await ws.get_message() == TRADE.decode()
            set_on = {"method": "SET_PROPERTY", "params": ["combined", True], "id": 5}
            assert await request(ws, set_on) == {"result": None, "id": 5}
            assert await request(ws, get) == {"result": True, "id": 2}
            server.hub.publish("btcusdt@trade", TRADE)
            assert (
                await ws.get_message() == '{"stream":"btcusdt@trade","data":' + TRADE.decode() + "}"
            )
        async with open_client(server, "/stream?streams=btcusdt@trade") as ws:
            assert await request(ws, get) == {"result": True, "id": 2}
            set_off = {"method": "SET_PROPERTY", "params": ["combined", False], "id": 6}
            assert await request(ws, set_off) == {"result": None, "id": 6}
            server.hub.publish("btcusdt@trade", TRADE)
            assert await ws.get_message() == TRADE.decode()


@pytest.mark.shared
async def test_documented_control_exchange_round_trips(
    shared_dir: Path, autojump_clock: trio.abc.Clock
) -> None:
    samples = json.loads((shared_dir / "binance" / "samples.json").read_text())
    server = make_server()
    with trio.fail_after(60):
        async with open_client(server, "/ws") as ws:
            # The docs' own sequence: subscribe two, drop one, list, set and read the property.
            steps = (
                "subscribe",
                "unsubscribe",
                "list_subscriptions",
                "set_property",
                "get_property",
            )
            for name in steps:
                reply = await request(ws, samples[f"ws.control.{name}.request"])
                assert reply == samples[f"ws.control.{name}.response"], name


def err(code: int, msg: str, *req_id: int | str | None) -> dict[str, object]:
    """The wire shape of a stream control error; ``req_id`` is left out when unreadable."""
    body: dict[str, object] = {"error": {"code": code, "msg": msg}}
    if req_id:
        body["id"] = req_id[0]
    return body


METHODS = "`SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`"
INVALID_STREAM = "Invalid request: invalid stream"
NOT_BOOL = "Invalid value type: expected Boolean"
NAME_NOT_STR = "Invalid request: property name must be a string"
TOO_MANY = "Invalid request: too many parameters"
LIST = '{"method": "LIST_SUBSCRIPTIONS", "id": %s}'
ERROR_CASES: list[tuple[str, dict[str, object]]] = [
    (
        '{"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1',
        err(3, "Invalid JSON: expected value at line 1 column 61"),
    ),
    ('{"id": 1,\n "method": x}', err(3, "Invalid JSON: expected value at line 2 column 12")),
    ("", err(3, "Invalid JSON: expected value at line 1 column 1")),
    ('{"method": "LIST_SUBSCRIPTIONS"}', err(2, INVALID_ID_MSG)),
    (LIST % "true", err(2, INVALID_ID_MSG)),
    (LIST % "1.5", err(2, INVALID_ID_MSG)),
    (LIST % "9223372036854775808", err(2, INVALID_ID_MSG)),
    (LIST % ('"' + "a" * 37 + '"'), err(2, INVALID_ID_MSG)),
    (LIST % ('"' + "é" * 37 + '"'), err(2, INVALID_ID_MSG)),  # characters, not bytes
    (LIST % "[1]", err(2, INVALID_ID_MSG)),
    ("[1, 2]", err(2, "Invalid request: expected a JSON object")),
    (
        '{"id": 7, "params": []}',
        err(2, "Invalid request: missing field `method` at line 1 column 23", 7),
    ),
    (
        '{"method": "SUBSCRIBED", "id": 8}',
        err(
            2,
            f"Invalid request: unknown variant `SUBSCRIBED`, expected one of {METHODS}"
            " at line 1 column 23",  # the closing quote of the value
            8,
        ),
    ),
    (
        '{"method": "SET_PROPERTY", "params": ["compressed", true], "id": 9}',
        err(0, "Unknown property", 9),
    ),
    (
        '{"method": "GET_PROPERTY", "params": ["compressed"], "id": 9}',
        err(0, "Unknown property", 9),
    ),
    ('{"method": "SET_PROPERTY", "params": ["combined", "yes"], "id": 10}', err(1, NOT_BOOL, 10)),
    ('{"method": "SET_PROPERTY", "params": ["combined"], "id": 10}', err(1, NOT_BOOL, 10)),
    ('{"method": "GET_PROPERTY", "params": [5], "id": 11}', err(2, NAME_NOT_STR, 11)),
    ('{"method": "GET_PROPERTY", "id": 11}', err(2, NAME_NOT_STR, 11)),
    ('{"method": "GET_PROPERTY", "params": ["combined", true], "id": 12}', err(2, TOO_MANY, 12)),
    ('{"method": "LIST_SUBSCRIPTIONS", "params": ["x"], "id": 13}', err(2, TOO_MANY, 13)),
    ('{"method": "SUBSCRIBE", "id": 14}', err(2, "Invalid request: missing field `params`", 14)),
    (
        '{"method": "SUBSCRIBE", "params": "btcusdt@trade", "id": 15}',
        err(2, "Invalid request: params must be an array of stream names", 15),
    ),
    (
        '{"method": "SUBSCRIBE", "params": ["btcusdt@trade", "btcusdt@bogus"], "id": null}',
        err(2, INVALID_STREAM, None),
    ),
    (
        '{"method": "SUBSCRIBE", "params": ["xrpusdt@trade"], "id": "X1"}',
        err(2, INVALID_STREAM, "X1"),
    ),
    ('{"method": "SUBSCRIBE", "params": [42], "id": 16}', err(2, INVALID_STREAM, 16)),
    ('{"method": "UNSUBSCRIBE", "params": ["@@@"], "id": 17}', err(2, INVALID_STREAM, 17)),
]


@pytest.mark.parametrize(("message", "expected"), ERROR_CASES)
async def test_invalid_control_messages_get_documented_error_codes(
    message: str, expected: object, autojump_clock: trio.abc.Clock
) -> None:
    server = make_server()
    with trio.fail_after(60):
        async with open_client(server, "/ws/ethusdt@trade") as ws:
            assert await request(ws, message) == expected
            # Nothing was changed by the failed request, and the connection stays usable.
            listing = await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 99})
            assert listing == {"result": ["ethusdt@trade"], "id": 99}
            assert await request(
                ws, {"method": "GET_PROPERTY", "params": ["combined"], "id": 1}
            ) == {
                "result": False,
                "id": 1,
            }


@pytest.mark.parametrize(
    "req_id",
    [
        -(2**63),
        2**63 - 1,
        0,
        "abcXYZ0123456789abcXYZ0123456789abcd",
        None,
        # Binance's own Spot SDK sends str(uuid4()) by default (CHANGELOG 2023-12-04 made
        # stream ids take the WS API's values): hyphens, 36 characters.
        "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        "a-b",
        "é" * 36,
        "",
    ],
)
async def test_documented_id_forms_are_echoed(
    req_id: int | str | None, autojump_clock: trio.abc.Clock
) -> None:
    server = make_server()
    with trio.fail_after(60):
        async with open_client(server, "/ws") as ws:
            reply = await request(
                ws, {"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": req_id}
            )
    assert reply == {"result": None, "id": req_id}


async def test_subscription_cap_is_1024_streams(autojump_clock: trio.abc.Clock) -> None:
    symbols = frozenset(f"S{i}USDT" for i in range(40))
    server = make_server(attrs.evolve(RELAXED, symbols=symbols))
    kinds = (
        "trade",
        "aggTrade",
        "ticker",
        "miniTicker",
        "bookTicker",
        "depth",
        "depth5",
        "depth10",
    )
    bases = [s.lower() for s in sorted(symbols)]
    names = [
        f"{b}@{k}@100ms" if k.startswith("depth") else f"{b}@{k}" for b in bases for k in kinds
    ]
    assert len(names) == 320
    names += [f"{b}@kline_{i}" for b in bases for i in KLINE_INTERVALS]
    assert len(set(names)) == 960
    names += [f"{b}@depth20" for b in bases] + [f"{b}@depth5" for b in bases]
    assert len(set(names)) == len(names) == 1040
    with trio.fail_after(60):
        async with open_client(server, "/ws") as ws:
            first = {"method": "SUBSCRIBE", "params": names[:1000], "id": 1}
            assert await request(ws, first) == {"result": None, "id": 1}
            too_many = {"method": "SUBSCRIBE", "params": names[1000:1025], "id": 2}
            reply = await request(ws, too_many)
            assert reply == {
                "error": {
                    "code": 2,
                    "msg": "Invalid request: too many streams (at most 1024 per connection)",
                },
                "id": 2,
            }
            # All or nothing: the refused request subscribed none of its streams.
            assert len(server.connections()[0].streams) == 1000
            exactly = {"method": "SUBSCRIBE", "params": names[1000:1024], "id": 3}
            assert await request(ws, exactly) == {"result": None, "id": 3}
            listing = await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 4})
            assert isinstance(listing, dict)
            assert listing["result"] == names[:1024]
            again = {"method": "SUBSCRIBE", "params": [names[0], names[1024]], "id": 5}
            reply = await request(ws, again)
            assert isinstance(reply, dict)
            assert reply["error"]["code"] == 2


# --- slow consumers and faults ---------------------------------------------------------------


async def test_slow_consumer_is_disconnected_without_blocking_the_hub(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server(attrs.evolve(RELAXED, subscriber_buffer=4))
    caplog.set_level(logging.INFO, logger="genesis.sim.streams")
    with trio.fail_after(60):
        async with (
            open_client(server, "/ws/btcusdt@trade") as ws,
            open_client(server, "/ws/btcusdt@trade") as other,
        ):
            slow_id = server.connections()[0].id
            # No checkpoint in between: each deliver task takes one payload, buffers 4, and the
            # hub drops the other 5 instead of waiting.
            for _ in range(10):
                server.hub.publish("btcusdt@trade", TRADE)
            await read_until_closed(ws)
            assert close_code(ws) == 1008
            assert [c.id for c in server.connections()] != [slow_id]
            # The other subscriber had the same overflow, so it went too; the hub never blocked.
            assert server.hub.statistics().dropped == 10
            await read_until_closed(other)
            assert close_code(other) == 1008
    assert f"sim.ws.slow_consumer id={slow_id} dropped=5 buffer=4" in caplog.messages
    assert server.connections() == ()
    assert server.hub.statistics().subscribers == 0


async def test_drop_all_and_drop_one_close_without_a_close_frame(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = make_server()
    with trio.fail_after(60):
        async with (
            open_client(server, "/ws/btcusdt@trade") as a,
            open_client(server, "/stream?streams=btcusdt@trade") as b,
            open_client(server, "/ws/ethusdt@trade") as c,
        ):
            ids = [info.id for info in server.connections()]
            assert len(ids) == 3
            assert server.faults.drop(ids[0])
            assert not server.faults.drop(12345)
            with pytest.raises(trio_websocket.ConnectionClosed):
                await a.get_message()
            assert close_code(a) == 1006  # TCP gone, no close handshake
            await trio.testing.wait_all_tasks_blocked()
            assert [info.id for info in server.connections()] == ids[1:]
            server.hub.publish("btcusdt@trade", TRADE)
            assert (
                await b.get_message() == '{"stream":"btcusdt@trade","data":' + TRADE.decode() + "}"
            )

            assert server.faults.drop_all() == 2
            for ws in (b, c):
                with pytest.raises(trio_websocket.ConnectionClosed):
                    await ws.get_message()
                assert close_code(ws) == 1006
            await trio.testing.wait_all_tasks_blocked()
    assert server.connections() == ()
    assert server.statistics().connections_open == 0
    assert server.statistics().connections_accepted == 3


@pytest.mark.parametrize(
    ("resource", "wrap"),
    [("/ws/btcusdt@trade", False), ("/stream?streams=btcusdt@trade", True)],
)
async def test_shutdown_sends_server_shutdown_then_closes_1001(
    resource: str, wrap: bool, autojump_clock: trio.abc.Clock
) -> None:
    server = make_server()
    with trio.fail_after(60):
        async with open_client(server, resource) as ws:
            await trio.sleep(12.5)
            assert server.faults.shutdown_all() == 1
            event = await ws.get_message()
            with pytest.raises(trio_websocket.ConnectionClosed):
                await ws.get_message()
            assert close_code(ws) == 1001
    data = {"e": "serverShutdown", "E": DEFAULT_VIRTUAL_EPOCH_MS + 12_500}
    assert orjson.loads(event) == ({"stream": "!serverShutdown", "data": data} if wrap else data)


async def test_stall_one_connection_withholds_only_its_data(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = make_server()
    with trio.fail_after(60):
        async with (
            open_client(server, "/ws/btcusdt@trade") as stalled,
            open_client(server, "/ws/btcusdt@trade") as healthy,
        ):
            stalled_id = server.connections()[0].id
            server.faults.stall(stalled_id)
            assert [c.stalled for c in server.connections()] == [True, False]
            server.hub.publish("btcusdt@trade", TRADE)
            assert await healthy.get_message() == TRADE.decode()
            # Control messages are still answered while data is withheld.
            listing = await request(stalled, {"method": "LIST_SUBSCRIPTIONS", "id": 1})
            assert listing == {"result": ["btcusdt@trade"], "id": 1}
            await assert_silent(stalled)
            server.faults.unstall(stalled_id)
            server.hub.publish("btcusdt@trade", DEPTH)
            assert await stalled.get_message() == DEPTH.decode()
            assert await healthy.get_message() == DEPTH.decode()


# --- real socket ---------------------------------------------------------------------------


async def test_real_socket_round_trip_and_404() -> None:
    hub = StreamHub()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(serve_market_streams, hub, SimClock.start(), config=RELAXED)
            )
            assert isinstance(server, StreamServer)
            assert server.port
            async with trio_websocket.open_websocket(
                "127.0.0.1",
                server.port,
                "/stream?streams=btcusdt@trade",
                use_ssl=False,
                disconnect_timeout=1,
            ) as ws:
                reply = await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1})
                assert reply == {"result": ["btcusdt@trade"], "id": 1}
                (info,) = server.connections()
                assert info.remote == "127.0.0.1"
                hub.publish("btcusdt@trade", TRADE)
                assert (
                    await ws.get_message()
                    == '{"stream":"btcusdt@trade","data":' + TRADE.decode() + "}"
                )
            # An unknown path is refused on the wire with HTTP 404.
            async with await trio.open_tcp_stream("127.0.0.1", server.port) as tcp:
                reply = await RawClient(tcp).handshake("/nope")
            assert isinstance(reply, RejectConnection)
            assert reply.status_code == 404
            nursery.cancel_scope.cancel()


async def test_a_client_ping_crossing_our_close_frame_does_not_take_the_server_down(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # trio-websocket#184: the reader answers a ping that arrives after our close frame with a
    # pong that wsproto refuses (LOCAL_CLOSING). The connection ends; the server must not.
    server = make_server()
    caplog.set_level(logging.INFO, logger="genesis.sim.streams")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:  # a server-side error would surface here
            client = RawClient(server.connect_memory_stream(nursery, remote_ip="10.1.2.3"))
            assert isinstance(await client.handshake("/ws/btcusdt@trade"), AcceptConnection)
            (conn,) = server.connections()
            assert server.faults.shutdown(conn.id)
            while not isinstance(await client.next_event(), CloseConnection):
                pass
            # A masked, empty PING frame, written by hand: our wsproto client would refuse to
            # send anything once it has seen the server's close frame.
            await client.stream.send_all(b"\x89\x80\x01\x02\x03\x04")
            await trio.testing.wait_all_tasks_blocked()
            await client.stream.aclose()
        assert server.connections() == ()
        assert "sim.ws.lost_while_closing remote=10.1.2.3" in caplog.messages
        async with open_client(server, "/ws/btcusdt@trade") as ws:
            assert await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1}) == {
                "result": ["btcusdt@trade"],
                "id": 1,
            }
