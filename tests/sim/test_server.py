"""The composed simulator (``genesis.sim.server``): routing, the admin API and every fault.

Two harnesses, both built from the public composition API:

- :func:`open_virtual_sim` wires :func:`build_simulator` without sockets: REST and the admin API
  through ``httpx.ASGITransport`` over ``sim.http_app``, WebSockets over
  ``sim.connect_ws_memory`` (the same path routing as the TCP port), and optionally the market
  feed. Tests using it run under ``autojump_clock`` and assert exact virtual times; the clock
  reads :data:`T0` at virtual 0.
- :func:`run_simulator` on 127.0.0.1 with port 0 for what only real sockets show: one WS port
  serving ``/ws``, ``/stream`` and ``/ws-api/v3``, garbage on that port, and a dropped TCP
  connection.

``test_conformance_shapes.py`` reuses :class:`VirtualSim` and :func:`open_virtual_sim`.
Every test has a deadline on the Trio clock.
"""

from __future__ import annotations

import json
import logging
import math
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final, cast
from urllib.parse import urlencode

import attrs
import httpx
import pytest
import trio
import trio.testing
import trio_websocket
from hypothesis import given, settings
from hypothesis import strategies as st

from genesis.sim.auth import hmac_signature
from genesis.sim.clock import DEFAULT_VIRTUAL_EPOCH_MS
from genesis.sim.feed import run_market_feed
from genesis.sim.server import (
    DEFAULT_API_KEY,
    DEFAULT_API_SECRET,
    SimConfig,
    SimHandle,
    Simulator,
    build_simulator,
    run_simulator,
)
from genesis.sim.testing import SignedRestClient, open_rest_client, unskewed

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

Json = dict[str, object]

T0: Final = DEFAULT_VIRTUAL_EPOCH_MS  # 2026-01-01T00:00:00Z: a minute (and day) boundary
CLIENT_IP: Final = "127.0.0.1"
TRADE: Final = (
    b'{"e":"trade","E":1767225600000,"s":"BTCUSDT","t":1,"p":"60000.00000000",'
    b'"q":"0.00100000","T":1767225600000,"m":true,"M":true}'
)


# --- harness --------------------------------------------------------------------------------


@attrs.define(eq=False, kw_only=True)
class VirtualSim(SignedRestClient):
    """A composed simulator without sockets; ``signed``/``public``/``sign`` are the kit's."""

    sim: Simulator
    nursery: trio.Nursery

    async def admin(self, method: str, target: str) -> httpx.Response:
        return await self.http.request(method, target)

    @asynccontextmanager
    async def websocket(
        self, resource: str, *, remote_ip: str = CLIENT_IP
    ) -> AsyncIterator[trio_websocket.WebSocketConnection]:
        """A trio-websocket client on the composed WS side (it answers pings by itself).

        Yields once the server side has registered the connection.
        """
        async with trio.open_nursery() as nursery:
            stream = self.sim.connect_ws_memory(nursery, remote_ip=remote_ip)
            ws = await trio_websocket.wrap_client_stream(
                nursery,
                cast("trio.SocketStream", stream),  # any trio Stream works; the hint is narrow
                "localhost",
                resource,
                message_queue_size=4096,
            )
            await trio.testing.wait_all_tasks_blocked()
            try:
                yield ws
            finally:
                nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_virtual_sim(
    config: SimConfig | None = None, *, feed: bool = False
) -> AsyncIterator[VirtualSim]:
    """:func:`build_simulator` served over ASGI and memory streams; ``feed`` runs the market."""
    sim = build_simulator(config if config is not None else SimConfig(epoch_ms=T0))
    async with trio.open_nursery() as nursery:
        if feed:
            await nursery.start(run_market_feed, sim.exchange, sim.market_maker, sim.hub, sim.clock)
        async with open_rest_client(
            sim.http_app,
            now_ms=unskewed(sim.clock),
            api_key=DEFAULT_API_KEY,
            api_secret=DEFAULT_API_SECRET,
            client=(CLIENT_IP, 50_000),
        ) as rest:
            try:
                yield VirtualSim(
                    http=rest.http,
                    now_ms=rest.now_ms,
                    api_key=rest.api_key,
                    api_secret=rest.api_secret,
                    sim=sim,
                    nursery=nursery,
                )
            finally:
                nursery.cancel_scope.cancel()


@asynccontextmanager
async def connect_tcp(
    port: int, resource: str
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A trio-websocket client over a TCP stream this helper owns and always closes.

    (``open_websocket_url`` leaves its socket open after an abnormal closure.)
    """
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(
                nursery, stream, "127.0.0.1", resource, message_queue_size=256
            )
            try:
                yield ws
            finally:
                with trio.move_on_after(2):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


async def handshake_refusal(port: int, resource: str) -> int | None:
    """The HTTP status of a refused WebSocket handshake over TCP, or None when accepted."""
    statuses: set[int] = set()
    try:
        async with connect_tcp(port, resource):
            pass
    except* trio_websocket.ConnectionRejected as group:
        statuses = {
            leaf.status_code
            for leaf in _leaves(group)
            if isinstance(leaf, trio_websocket.ConnectionRejected)
        }
    assert len(statuses) <= 1
    return next(iter(statuses), None)


def error_of(response: httpx.Response) -> tuple[int, int, str]:
    body = response.json()
    return response.status_code, body["code"], body["msg"]


async def next_json(ws: trio_websocket.WebSocketConnection) -> Json:
    return cast("Json", json.loads(await ws.get_message()))


async def read_until_closed(ws: trio_websocket.WebSocketConnection) -> list[str | bytes]:
    frames: list[str | bytes] = []
    while True:
        try:
            frames.append(await ws.get_message())
        except trio_websocket.ConnectionClosed:
            return frames


async def read_to_eof(stream: trio.SocketStream) -> bytes:
    """Everything until the peer closes (a reset counts as closed)."""
    received = b""
    try:
        while chunk := await stream.receive_some(4096):
            received += chunk
    except trio.BrokenResourceError:
        pass
    return received


async def text_of(ws: trio_websocket.WebSocketConnection) -> bytes:
    """The next message, which must be a text frame, as UTF-8 bytes."""
    message = await ws.get_message()
    assert isinstance(message, str)
    return message.encode()


def close_code(ws: trio_websocket.WebSocketConnection) -> int | None:
    return None if ws.closed is None else ws.closed.code


def market_buy(qty: str = "0.01", **extra: str) -> dict[str, str]:
    return {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": qty, **extra}


# --- real sockets: one WS port, three services -------------------------------------------------


async def test_one_ws_port_serves_raw_streams_combined_streams_and_the_ws_api() -> None:
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            handle: SimHandle = await nursery.start(run_simulator, SimConfig(seed=3))
            assert handle.rest_url == f"http://127.0.0.1:{handle.rest_port}"
            assert handle.stream_url == f"ws://127.0.0.1:{handle.ws_port}"
            assert handle.ws_api_url == f"ws://127.0.0.1:{handle.ws_port}/ws-api/v3"
            assert (handle.api_key, handle.api_secret) == (DEFAULT_API_KEY, DEFAULT_API_SECRET)
            async with (
                connect_tcp(handle.ws_port, "/ws/btcusdt@trade") as raw,
                connect_tcp(handle.ws_port, "/stream?streams=btcusdt@trade") as combined,
                connect_tcp(handle.ws_port, "/ws-api/v3") as api,
                httpx.AsyncClient(base_url=handle.rest_url) as http,
            ):
                await api.send_message('{"id":7,"method":"time"}')
                answer = await next_json(api)
                assert (answer["id"], answer["status"]) == (7, 200)
                assert isinstance(cast("Json", answer["result"])["serverTime"], int)

                status = (await http.get("/sim/status")).json()
                paths = sorted(c["path"] for c in status["stream_connections"])
                assert paths == ["/stream?streams=btcusdt@trade", "/ws/btcusdt@trade"]
                assert status["ws_api"]["connections_open"] == 1
                assert (await http.get("/api/v3/ping")).json() == {}

                # A market order trades at once, so both stream clients see a trade.
                query = urlencode({**market_buy(), "timestamp": str(handle.sim.clock.now_ms())})
                signature = hmac_signature(handle.api_secret, query)
                placed = await http.post(
                    f"/api/v3/order?{query}&signature={signature}",
                    headers={"X-MBX-APIKEY": handle.api_key},
                )
                assert placed.json()["status"] == "FILLED"
                trade = await next_json(raw)
                assert (trade["e"], trade["s"]) == ("trade", "BTCUSDT")
                wrapped = await next_json(combined)
                assert wrapped["stream"] == "btcusdt@trade"
                assert cast("Json", wrapped["data"])["e"] == "trade"

            assert await handshake_refusal(handle.ws_port, "/nope") == 404
            assert (
                await handshake_refusal(handle.ws_port, "/stream?streams=nosuchcoin@trade") == 400
            )
            assert await handshake_refusal(handle.ws_port, "/ws-api/v3?responseFormat=sbe") == 400
            assert await handshake_refusal(handle.ws_port, "/ws") is None
            nursery.cancel_scope.cancel()


async def test_garbage_on_the_ws_port_never_stops_the_server() -> None:
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            handle: SimHandle = await nursery.start(run_simulator, SimConfig(seed=3))
            # Connect and leave at once; send a non-HTTP line; send an endless request line.
            (await trio.open_tcp_stream("127.0.0.1", handle.ws_port)).socket.close()
            for garbage in (b"HELLO THERE\r\n\r\n", b"GET /" + b"a" * 9000):
                stream = await trio.open_tcp_stream("127.0.0.1", handle.ws_port)
                await stream.send_all(garbage)
                await read_to_eof(stream)  # the server answers and/or closes; it never hangs
                await stream.aclose()
            async with connect_tcp(handle.ws_port, "/ws") as ws:
                await ws.send_message('{"method":"LIST_SUBSCRIPTIONS","id":1}')
                assert await next_json(ws) == {"result": [], "id": 1}
            nursery.cancel_scope.cancel()


async def test_dropped_tcp_connection_is_an_abnormal_closure_for_the_client() -> None:
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            handle: SimHandle = await nursery.start(run_simulator, SimConfig(seed=3))
            async with connect_tcp(handle.ws_port, "/ws/btcusdt@trade") as ws:
                assert handle.faults.drop_connections() == 1
                await read_until_closed(ws)
                assert close_code(ws) == 1006
            nursery.cancel_scope.cancel()


# --- one handshake, dispatched on its path (virtual time) -------------------------------------

UPGRADE: Final = (
    "GET {} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def read_memory_to_eof(stream: trio.abc.ReceiveStream) -> bytes:
    received = b""
    while chunk := await stream.receive_some(4096):
        received += chunk
    return received


@pytest.mark.parametrize("resource", ["/ws/btcusdt@trade", "/ws-api/v3"])
async def test_one_handshake_deadline_covers_the_whole_upgrade_request(
    resource: str, autojump_clock: trio.testing.MockClock
) -> None:
    # The request line trickles in until t=9 s; the handshake deadline still counts from the
    # connection (10 s), not from a request line read by hand before the real handshake.
    head, tail = UPGRADE.format(resource).encode().split(b" ", 1)
    with trio.fail_after(60):
        async with open_virtual_sim() as v:
            stream = v.sim.connect_ws_memory(v.nursery)
            await stream.send_all(head)
            await trio.sleep(9)
            await stream.send_all(tail[:-4])  # everything but the blank line
            assert await read_memory_to_eof(stream) == b""
            assert trio.current_time() == 10.0
            await stream.aclose()


@pytest.mark.parametrize(
    ("resource", "frame", "code"),
    [
        ("/ws-api/v3", b"\x81\x02hi", 1002),  # an unmasked client frame
        ("/ws-api/v3", b"\x81\x82\x00\x00\x00\x00\xff\xfe", 1007),  # text that is not UTF-8
        ("/stream?streams=btcusdt@trade", b"\x81\x02hi", 1002),
    ],
)
async def test_protocol_violations_on_the_ws_port_get_a_close_frame(
    resource: str, frame: bytes, code: int, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        async with open_virtual_sim() as v:
            stream = v.sim.connect_ws_memory(v.nursery)
            await stream.send_all(UPGRADE.format(resource).encode())
            reply = b""
            while b"\r\n\r\n" not in reply:
                reply += await stream.receive_some(4096)
            assert reply.startswith(b"HTTP/1.1 101 ")
            await stream.send_all(frame)
            close = reply.split(b"\r\n\r\n", 1)[1] + await read_memory_to_eof(stream)
            # A close frame: FIN + opcode 8, then the 2-byte code.
            assert close[0] == 0x88
            assert int.from_bytes(close[2:4], "big") == code
            await stream.aclose()


# --- faults on market streams (virtual time) --------------------------------------------------


async def test_drop_one_stream_connection_leaves_the_others_streaming(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        async with (
            open_virtual_sim() as v,
            v.websocket("/ws/btcusdt@trade") as first,
            v.websocket("/ws/btcusdt@trade") as second,
        ):
            ids = [c.id for c in v.sim.streams.connections()]
            assert len(ids) == 2
            assert v.sim.faults.drop_connections(ids[0]) == 1
            assert v.sim.faults.drop_connections(999) == 0
            await read_until_closed(first)
            assert close_code(first) == 1006
            await trio.testing.wait_all_tasks_blocked()
            assert [c.id for c in v.sim.streams.connections()] == [ids[1]]
            assert v.sim.hub.publish("btcusdt@trade", TRADE) == 1
            assert await text_of(second) == TRADE


async def test_drop_all_closes_every_stream_connection_and_ws_api_separately(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        async with (
            open_virtual_sim() as v,
            v.websocket("/ws/btcusdt@trade") as raw,
            v.websocket("/stream?streams=ethusdt@trade") as combined,
            v.websocket("/ws-api/v3") as api,
        ):
            assert v.sim.faults.drop_connections() == 2
            for ws in (raw, combined):
                await read_until_closed(ws)
                assert close_code(ws) == 1006
            await api.send_message('{"id":1,"method":"ping"}')
            assert (await next_json(api))["status"] == 200  # streams faults spare the WS API
            assert v.sim.faults.drop_connections(ws_api=True) == 1
            await read_until_closed(api)
            assert close_code(api) == 1006
            assert v.sim.streams.connections() == ()
            assert v.sim.ws_api.connections() == ()


async def test_shutdown_sends_server_shutdown_then_1001_on_streams_and_ws_api(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        async with (
            open_virtual_sim() as v,
            v.websocket("/ws/btcusdt@trade") as raw,
            v.websocket("/stream?streams=btcusdt@trade") as combined,
            v.websocket("/ws-api/v3") as api,
        ):
            await trio.sleep(5)
            assert v.sim.faults.shutdown_connections() == 3
            now = T0 + 5000
            assert [json.loads(f) for f in await read_until_closed(raw)] == [
                {"e": "serverShutdown", "E": now}
            ]
            assert [json.loads(f) for f in await read_until_closed(combined)] == [
                {"stream": "!serverShutdown", "data": {"e": "serverShutdown", "E": now}}
            ]
            assert [json.loads(f) for f in await read_until_closed(api)] == [
                {"event": {"e": "serverShutdown", "E": now}}
            ]
            assert [close_code(ws) for ws in (raw, combined, api)] == [1001, 1001, 1001]


async def test_stall_withholds_data_while_pings_go_on_then_resumes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(120):
        async with open_virtual_sim() as v, v.websocket("/ws/btcusdt@trade") as ws:
            v.sim.faults.stall_streams(True)
            assert v.sim.faults.snapshot()["streams"] == {
                "stall_all": True,
                "stalled_ids": [],
                "stop_pings": False,
                "ignore_pongs": False,
            }
            start = trio.current_time()
            v.sim.hub.publish("btcusdt@trade", TRADE)
            with trio.move_on_after(45):
                pytest.fail(f"stalled data arrived: {await ws.get_message()!r}")
            (info,) = v.sim.streams.connections()
            assert info.stalled
            # Pings at 20 s and 40 s were answered by the client's pongs (2 inbound frames).
            assert (info.messages_received, info.outstanding_pings) == (2, 0)
            assert info.frames_sent == 0
            v.sim.faults.stall_streams(False)
            v.sim.hub.publish("btcusdt@trade", TRADE)
            assert await text_of(ws) == TRADE
            assert trio.current_time() - start == 45


async def test_stall_one_connection_by_id_spares_the_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        async with (
            open_virtual_sim() as v,
            v.websocket("/ws/btcusdt@trade") as stalled,
            v.websocket("/ws/btcusdt@trade") as live,
        ):
            first_id = v.sim.streams.connections()[0].id
            v.sim.faults.stall_streams(True, first_id)
            v.sim.hub.publish("btcusdt@trade", TRADE)
            assert await text_of(live) == TRADE
            with trio.move_on_after(5):
                pytest.fail(f"stalled data arrived: {await stalled.get_message()!r}")
            v.sim.faults.stall_streams(False, first_id)
            v.sim.hub.publish("btcusdt@trade", TRADE)
            assert await text_of(stalled) == TRADE


async def test_stopped_pings_send_nothing_and_resume_on_the_20_s_grid(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(200):
        async with open_virtual_sim() as v, v.websocket("/ws/btcusdt@trade"):
            v.sim.faults.stop_pings(True)
            await trio.sleep(101)
            (info,) = v.sim.streams.connections()
            assert (info.messages_received, info.outstanding_pings) == (0, 0)
            v.sim.faults.stop_pings(False)
            await trio.sleep(20)  # the next slot of the grid is at 120 s
            (info,) = v.sim.streams.connections()
            assert info.messages_received == 1  # the client's pong to the ping at 120 s


async def test_ignored_pongs_close_the_connection_60_s_after_the_first_ping(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(200):
        async with open_virtual_sim() as v, v.websocket("/ws/btcusdt@trade") as ws:
            start = trio.current_time()
            v.sim.faults.ignore_pongs(True)
            await read_until_closed(ws)
            assert close_code(ws) == 1008
            assert trio.current_time() - start == 80  # first ping at 20 s, 60 s to answer


# --- faults on REST (virtual time) ------------------------------------------------------------


async def test_error_burst_answers_5xx_without_effect_then_recovers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        async with open_virtual_sim() as v:
            untouched = v.sim.exchange.statistics()
            v.sim.faults.error_burst(2, 502)
            first = await v.signed("POST", "order", market_buy())
            assert error_of(first) == (
                502,
                -1000,
                "An unknown error occurred while processing the request.",
            )
            second = await v.public("ping")
            assert second.status_code == 502
            assert v.sim.exchange.statistics() == untouched  # nothing reached the exchange
            assert (await v.public("ping")).status_code == 200
            v.sim.faults.error_burst(1)  # 503 by default: -1008, server busy
            busy = await v.public("time")
            assert busy.status_code == 503
            assert busy.json()["code"] == -1008
            assert v.sim.rest.statistics().injected_errors == 3


async def test_latency_delays_every_answer_by_exactly_that_much(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        async with open_virtual_sim() as v:
            v.sim.faults.latency(0.25)
            start = trio.current_time()
            assert (await v.public("ping")).status_code == 200
            assert (await v.signed("GET", "account")).status_code == 200
            assert trio.current_time() - start == 0.5
            v.sim.faults.latency(0)
            start = trio.current_time()
            await v.public("ping")
            assert trio.current_time() == start


async def test_execute_then_503_executes_the_order_the_client_never_heard_of(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        async with open_virtual_sim(feed=True) as v:
            before = await v.signed("GET", "account")
            v.sim.faults.execute_then_503()
            answer = await v.signed("POST", "order", market_buy(newClientOrderId="unknown1"))
            assert error_of(answer) == (
                503,
                -1007,
                "Timeout waiting for response from backend server. Send status unknown; "
                "execution status unknown.",
            )
            found = await v.signed(
                "GET", "order", {"symbol": "BTCUSDT", "origClientOrderId": "unknown1"}
            )
            assert found.status_code == 200
            assert (found.json()["status"], found.json()["executedQty"]) == (
                "FILLED",
                "0.01000000",
            )
            after = await v.signed("GET", "account")
            assert btc_free(after.json()) > btc_free(before.json())
            # Only the next placement was affected.
            again = await v.signed("POST", "order", market_buy(newClientOrderId="known2"))
            assert again.status_code == 200


def btc_free(account: Json) -> str:
    balances = cast("list[Json]", account["balances"])
    (btc,) = [b for b in balances if b["asset"] == "BTC"]
    return cast("str", btc["free"])


async def test_clock_skew_moves_server_time_and_causes_1021_both_ways(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        async with open_virtual_sim() as v:
            v.sim.faults.clock_skew(-2000)  # the server is 2 s behind the client
            assert (await v.public("time")).json() == {"serverTime": T0 - 2000}
            ahead = await v.signed("GET", "account")
            assert error_of(ahead) == (
                400,
                -1021,
                "Timestamp for this request was 1000ms ahead of the server's time.",
            )
            v.sim.faults.clock_skew(6000)  # 6 s ahead: beyond the default recvWindow of 5 s
            behind = await v.signed("GET", "account")
            assert error_of(behind) == (
                400,
                -1021,
                "Timestamp for this request is outside of the recvWindow.",
            )
            widened = await v.signed("GET", "account", {"recvWindow": "10000"})
            assert widened.status_code == 200
            v.sim.faults.clock_skew(0)
            assert (await v.signed("GET", "account")).status_code == 200


async def test_lowered_weight_limit_gives_429_with_retry_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(120):
        async with open_virtual_sim() as v:
            v.sim.faults.lower_limit("REQUEST_WEIGHT", "MINUTE", 1, 30)
            await trio.sleep(15)
            info = await v.public("exchangeInfo")  # weight 20: it shows the lowered limit
            assert {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": 30,
            } in info.json()["rateLimits"]
            for used in range(21, 31):
                ok = await v.public("ping")
                assert ok.headers["x-mbx-used-weight-1m"] == str(used)
            limited = await v.public("ping")
            assert limited.status_code == 429
            assert limited.json()["code"] == -1003
            assert limited.json()["msg"].startswith(
                "Too much request weight used; current limit is 30 request weight per 1 MINUTE."
            )
            assert limited.headers["retry-after"] == "45"  # the minute window ends at 60 s
            await trio.sleep(45)
            assert (await v.public("ping")).headers["x-mbx-used-weight-1m"] == "1"


async def test_halted_symbol_refuses_orders_with_market_is_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        async with open_virtual_sim(feed=True) as v:
            v.sim.faults.halt("BTCUSDT")
            refused = await v.signed("POST", "order", market_buy())
            assert error_of(refused) == (400, -2010, "Market is closed.")
            info = (await v.public("exchangeInfo", {"symbol": "BTCUSDT"})).json()
            assert info["symbols"][0]["status"] == "HALT"
            eth = await v.signed("POST", "order", {**market_buy(), "symbol": "ETHUSDT"})
            assert eth.status_code == 200  # other symbols trade on
            v.sim.faults.halt("BTCUSDT", "TRADING")
            assert (await v.signed("POST", "order", market_buy())).status_code == 200


async def test_reset_switches_every_fault_off(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(30):
        async with open_virtual_sim() as v:
            clean = v.sim.faults.snapshot()
            faults = v.sim.faults
            faults.stall_streams(True)
            faults.stop_pings(True)
            faults.ignore_pongs(True)
            faults.error_burst(3, 500)
            faults.error_rate(0.5)
            faults.latency(1.5)
            faults.execute_then_503(2)
            faults.clock_skew(1500)
            faults.lower_limit("ORDERS", "SECOND", 10, 3)
            faults.halt("ETHUSDT", "BREAK")
            dirty = faults.snapshot()
            assert dirty["halted"] == ["ETHUSDT"]
            assert dirty["clock_skew_ms"] == 1500
            faults.reset()
            assert faults.snapshot() == clean
            assert (await v.public("time")).json() == {"serverTime": T0}


# --- admin API ----------------------------------------------------------------------------------

GOOD_ADMIN_CALLS: Final = [
    ("/sim/faults/stall?on=true", ("streams", "stall_all"), True),
    ("/sim/faults/stall?on=false", ("streams", "stall_all"), False),
    ("/sim/faults/pings?stop=yes", ("streams", "stop_pings"), True),
    ("/sim/faults/pongs?ignore=1", ("streams", "ignore_pongs"), True),
    ("/sim/faults/errors?count=4&status=504", ("rest", "error_burst"), 4),
    ("/sim/faults/errors?rate=0.25", ("rest", "error_rate"), 0.25),
    ("/sim/faults/latency?ms=250", ("rest", "latency_s"), 0.25),
    ("/sim/faults/execute-then-503", ("rest", "execute_then_503"), 1),
    ("/sim/faults/execute-then-503?count=3", ("rest", "execute_then_503"), 3),
    ("/sim/faults/clock-skew?ms=-1500", ("clock_skew_ms",), -1500),
    ("/sim/faults/halt?symbol=ethusdt", ("halted",), ["ETHUSDT"]),
    ("/sim/faults/halt?symbol=BNBUSDT&status=BREAK", ("halted",), ["BNBUSDT"]),
    ("/sim/faults/reset", ("rest", "latency_s"), 0.0),
]


@pytest.mark.parametrize(("target", "where", "expected"), GOOD_ADMIN_CALLS)
async def test_admin_calls_switch_faults_and_answer_the_snapshot(
    autojump_clock: trio.testing.MockClock, target: str, where: tuple[str, ...], expected: object
) -> None:
    with trio.fail_after(30):
        async with open_virtual_sim() as v:
            response = await v.admin("POST", target)
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == "application/json"
            body = response.json()
            assert body["ok"] is True
            value: object = body["faults"]
            for key in where:
                value = cast("Json", value)[key]
            assert value == expected
            assert body["faults"] == json.loads(json.dumps(v.sim.faults.snapshot()))


async def test_admin_rate_limit_and_status(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(30):
        async with open_virtual_sim() as v:
            lowered = await v.admin(
                "POST", "/sim/faults/rate-limit?type=REQUEST_WEIGHT&interval=MINUTE&num=1&limit=7"
            )
            assert lowered.status_code == 200
            assert {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": 7,
            } in lowered.json()["faults"]["rate_limits"]
            async with v.websocket("/ws/btcusdt@trade"):
                status = await v.admin("GET", "/sim/status")
            assert status.status_code == 200
            body = status.json()
            assert set(body) == {"faults", "streams", "stream_connections", "ws_api", "rest", "hub"}
            (conn,) = body["stream_connections"]
            assert (conn["path"], conn["remote"], conn["streams"]) == (
                "/ws/btcusdt@trade",
                CLIENT_IP,
                ["btcusdt@trade"],
            )
            assert conn["connected_at_ms"] == T0
            assert body["rest"]["requests"] == 0  # admin calls are not Binance requests


async def test_admin_drop_and_shutdown_act_on_live_connections(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        async with (
            open_virtual_sim() as v,
            v.websocket("/ws/btcusdt@trade") as planned,
            v.websocket("/ws/btcusdt@trade") as dropped,
            v.websocket("/ws-api/v3") as api,
        ):
            planned_id, dropped_id = (c.id for c in v.sim.streams.connections())
            shutdown = await v.admin("POST", f"/sim/faults/shutdown?id={planned_id}")
            assert shutdown.status_code == 200
            assert [json.loads(f) for f in await read_until_closed(planned)] == [
                {"e": "serverShutdown", "E": T0}
            ]
            assert close_code(planned) == 1001
            assert (await v.admin("POST", "/sim/faults/drop?target=ws-api")).status_code == 200
            await read_until_closed(api)
            assert close_code(api) == 1006
            assert (await v.admin("POST", f"/sim/faults/drop?id={dropped_id}")).status_code == 200
            await read_until_closed(dropped)
            assert close_code(dropped) == 1006
            await trio.testing.wait_all_tasks_blocked()
            assert (await v.admin("GET", "/sim/status")).json()["stream_connections"] == []


BAD_ADMIN_CALLS: Final = [
    ("GET", "/sim/nothing", 404),
    ("POST", "/sim/faults/", 404),
    ("POST", "/sim/faults/explode", 404),
    ("GET", "/sim/faults/explode", 404),
    ("POST", "/sim/status", 405),
    ("GET", "/sim/faults/reset", 405),
    ("DELETE", "/sim/faults/drop", 405),
    ("POST", "/sim/faults/drop?target=everything", 400),
    ("POST", "/sim/faults/drop?id=abc", 400),
    ("POST", "/sim/faults/shutdown?id=1.5", 400),
    ("POST", "/sim/faults/stall?on=maybe", 400),
    ("POST", "/sim/faults/stall?id=x", 400),
    ("POST", "/sim/faults/pings?stop=2", 400),
    ("POST", "/sim/faults/pongs?ignore=", 400),
    ("POST", "/sim/faults/errors", 400),
    ("POST", "/sim/faults/errors?count=-1", 400),
    ("POST", "/sim/faults/errors?count=2&status=418", 400),
    ("POST", "/sim/faults/errors?rate=1.5", 400),
    ("POST", "/sim/faults/errors?rate=nan", 400),
    ("POST", "/sim/faults/errors?rate=0.5&status=200", 400),
    ("POST", "/sim/faults/latency", 400),
    ("POST", "/sim/faults/latency?ms=-5", 400),
    ("POST", "/sim/faults/latency?ms=inf", 400),
    ("POST", "/sim/faults/latency?ms=fast", 400),
    ("POST", "/sim/faults/execute-then-503?count=-2", 400),
    ("POST", "/sim/faults/execute-then-503?count=one", 400),
    ("POST", "/sim/faults/clock-skew", 400),
    ("POST", "/sim/faults/clock-skew?ms=1.5", 400),
    ("POST", "/sim/faults/rate-limit?type=REQUEST_WEIGHT&interval=MINUTE", 400),
    ("POST", "/sim/faults/rate-limit?type=BOGUS&interval=MINUTE&limit=5", 400),
    ("POST", "/sim/faults/rate-limit?type=ORDERS&interval=WEEK&limit=5", 400),
    ("POST", "/sim/faults/rate-limit?type=ORDERS&interval=DAY&limit=0", 400),
    ("POST", "/sim/faults/rate-limit?type=ORDERS&interval=DAY&num=0&limit=5", 400),
    ("POST", "/sim/faults/halt", 400),
    ("POST", "/sim/faults/halt?symbol=NOPEUSDT", 400),
    ("POST", "/sim/faults/halt?symbol=BTCUSDT&status=ASLEEP", 400),
    ("POST", "/sim/faults/halt?symbol=%FF", 400),
    # Every number is bounded: 1e308 ms of latency would hang every REST call.
    ("POST", "/sim/faults/latency?ms=1e308", 400),
    ("POST", "/sim/faults/latency?ms=60001", 400),
    ("POST", "/sim/faults/errors?count=1000001", 400),
    ("POST", "/sim/faults/errors?count=1_000", 400),
    ("POST", "/sim/faults/execute-then-503?count=99999999999999999999", 400),
    ("POST", "/sim/faults/clock-skew?ms=86400001", 400),
    ("POST", "/sim/faults/clock-skew?ms=-86400001", 400),
    ("POST", "/sim/faults/rate-limit?type=ORDERS&interval=DAY&num=1001&limit=5", 400),
    ("POST", "/sim/faults/rate-limit?type=ORDERS&interval=DAY&limit=1000000001", 400),
    ("POST", "/sim/faults/drop?id=-1", 400),
    ("POST", "/sim/faults/stall?on=true&id=99999999999999999999", 400),
]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            "/sim/faults/errors?count=2&status=600",
            "parameter 'status' must be one of 500, 502, 503, 504",
        ),
        (
            "/sim/faults/errors?rate=0.5&status=418",
            "parameter 'status' must be one of 500, 502, 503, 504",
        ),
        ("/sim/faults/errors?rate=1.5", "parameter 'rate' must be within [0, 1]"),
        ("/sim/faults/latency?ms=1e308", "parameter 'ms' must be within [0, 60000]"),
        ("/sim/faults/clock-skew?ms=x", "parameter 'ms' must be an integer"),
        ("/sim/faults/halt?symbol=BTCUSDT&status=ASLEEP", None),
    ],
)
async def test_admin_answers_invalid_values_with_a_plain_message(
    autojump_clock: trio.testing.MockClock, target: str, message: str | None
) -> None:
    with trio.fail_after(30):
        async with open_virtual_sim() as v:
            response = await v.admin("POST", target)
    assert response.status_code == 400
    error = response.json()["error"]
    assert isinstance(error, str)
    assert "Attribute(" not in error
    assert "\n" not in error
    assert not error.startswith("(")
    if message is not None:
        assert error == message


@pytest.mark.parametrize(("method", "target", "status"), BAD_ADMIN_CALLS)
async def test_admin_refuses_bad_input_with_4xx_and_changes_nothing(
    autojump_clock: trio.testing.MockClock, method: str, target: str, status: int
) -> None:
    with trio.fail_after(30):
        async with open_virtual_sim() as v:
            before = v.sim.faults.snapshot()
            response = await v.admin(method, target)
            assert response.status_code == status, response.text
            assert isinstance(response.json()["error"], str)
            assert v.sim.faults.snapshot() == before


_admin_paths = st.one_of(
    st.sampled_from(
        [f"/sim/faults/{name}" for name in ("drop", "shutdown", "stall", "pings", "pongs")]
        + [f"/sim/faults/{name}" for name in ("errors", "latency", "execute-then-503")]
        + ["/sim/faults/clock-skew", "/sim/faults/rate-limit", "/sim/faults/halt"]
        + ["/sim/faults/reset", "/sim/status", "/sim/"]
    ),
    st.text(alphabet="/abcsimfaults-", max_size=30).map(lambda s: "/sim/" + s),
)
_admin_names = st.sampled_from(
    [
        *("id", "on", "stop", "ignore", "count", "rate", "status", "ms", "type", "interval"),
        *("num", "limit", "symbol", "target"),
    ]
)
_admin_values = st.one_of(
    st.sampled_from(["", "0", "1", "-1", "1e309", "nan", "true", "HALT", "BTCUSDT", "ws-api"]),
    st.sampled_from(["REQUEST_WEIGHT", "ORDERS", "MINUTE", "DAY", "99999999999999999999"]),
    st.text(max_size=8),
)
_admin_queries = st.one_of(
    st.dictionaries(_admin_names, _admin_values, max_size=4).map(lambda d: urlencode(d).encode()),
    st.binary(max_size=24),
)


@settings(max_examples=60, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    path=_admin_paths,
    query=_admin_queries,
)
def test_admin_api_never_answers_5xx(method: str, path: str, query: bytes) -> None:
    async def run() -> int:
        sim = build_simulator(SimConfig(epoch_ms=T0))
        sent: list[dict[str, object]] = []
        scope: dict[str, object] = {
            "type": "http",
            "method": method,
            "path": path,
            "query_string": query,
            "headers": [],
            "client": (CLIENT_IP, 1),
        }

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        with trio.fail_after(5):
            await sim.http_app(scope, receive, send)
        status = sent[0]["status"]
        assert isinstance(status, int)
        return status

    assert trio.run(run) < 500


# --- configuration -------------------------------------------------------------------------------


def test_sim_config_validates_its_fields() -> None:
    assert SimConfig(symbols="btcusdt, ethusdt,BTCUSDT").symbols == ("BTCUSDT", "ETHUSDT")
    with pytest.raises(ValueError, match="unknown fault profile"):
        SimConfig(faults="apocalypse")
    with pytest.raises(ValueError, match="go together"):
        SimConfig(api_key="only-a-key")
    with pytest.raises(ValueError, match="at least one symbol"):
        SimConfig(symbols=())
    assert SimConfig(faults="chaos").faults == "chaos"
    assert math.isclose(SimConfig().max_connection_age_s, 86_400.0)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "sim.example.org"])
def test_a_host_beyond_loopback_needs_allow_remote(host: str) -> None:
    with pytest.raises(ValueError, match="allow_remote"):
        SimConfig(host=host)
    assert SimConfig(host=host, allow_remote=True).host == host


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts_need_no_consent(host: str) -> None:
    assert SimConfig(host=host).host == host


def test_cli_refuses_a_remote_host_without_allow_remote(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from genesis.app.cli import EXIT_CONFIG, main

    assert main(["sim", "--host", "0.0.0.0"]) == EXIT_CONFIG
    assert "--allow-remote" in capsys.readouterr().err


async def test_a_remote_bind_is_announced_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: the bind fails after the warning,
    # so nothing ever listens beyond loopback.
    caplog.set_level(logging.WARNING, logger="genesis.sim.server")
    config = SimConfig(host="192.0.2.1", allow_remote=True)
    bind_failed = False
    with trio.fail_after(30):
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(run_simulator, config)
        except* OSError:
            bind_failed = True
    assert bind_failed
    (record,) = [r for r in caplog.records if r.getMessage().startswith("sim.remote_bind")]
    assert record.levelno == logging.WARNING
    assert "192.0.2.1" in record.getMessage()


async def test_custom_credentials_replace_the_default_account(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = SimConfig(epoch_ms=T0, api_key="MyKey" + "0" * 59, api_secret="MySecret")
    with trio.fail_after(30):
        async with open_virtual_sim(config) as v:
            assert (v.sim.api_key, v.sim.api_secret) == (config.api_key, "MySecret")
            mine = await v.signed("GET", "account", secret="MySecret", api_key=v.sim.api_key)
            assert mine.status_code == 200
            default = await v.signed("GET", "account")
            assert error_of(default)[:2] == (401, -2015)
