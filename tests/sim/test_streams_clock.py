"""Time rules of the market-stream server, asserted at exact virtual times.

Everything runs over in-memory streams under ``autojump_clock``: pings every 20 s, the 60 s
pong deadline, the 24 h (here 1 h) age cap, 5 messages per second, 300 connection attempts per
5 minutes per IP, and the ping/pong/stall faults. The connection opens at virtual 0.0, so the
times below are Binance's numbers themselves.

Clients that must not answer pings are :class:`~tests.sim.test_streams.RawClient` (bare
wsproto: it pongs only when the test says so); clients that behave normally are trio-websocket's
own client, which answers every ping with the same payload by itself.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import attrs
import pytest
import trio
import trio.testing
import trio_websocket
from hypothesis import given
from hypothesis import strategies as st
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    TextMessage,
)

from genesis.sim.clock import DEFAULT_VIRTUAL_EPOCH_MS
from genesis.sim.limits import AttemptLimiter, SlidingWindowCounter, StreamServerConfig
from tests.sim.test_streams import (
    RELAXED,
    TRADE,
    RawClient,
    assert_silent,
    close_code,
    make_server,
    open_client,
    open_raw,
    read_until_closed,
    request,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from genesis.sim.streams import StreamServer

LIST = {"method": "LIST_SUBSCRIPTIONS", "id": 1}


@attrs.define
class Session:
    """What a raw client saw, with virtual timestamps."""

    pings: list[tuple[float, bytes]] = attrs.field(factory=list)
    texts: list[tuple[float, str]] = attrs.field(factory=list)
    closed_at: float | None = None
    close_code: int | None = None


async def accept(client: RawClient, target: str = "/ws/btcusdt@trade") -> None:
    reply = await client.handshake(target)
    assert isinstance(reply, AcceptConnection)
    assert trio.current_time() == 0.0


async def listen(
    client: RawClient, session: Session, *, answer: Callable[[int], bool] = lambda _: False
) -> None:
    """Record frames until the server closes; pong the n-th ping only if ``answer(n)``."""
    while True:
        event = await client.next_event()
        now = trio.current_time()
        if event is None:
            return
        if isinstance(event, Ping):
            session.pings.append((now, bytes(event.payload)))
            if answer(len(session.pings) - 1):
                await client.send(event.response())
        elif isinstance(event, TextMessage):
            session.texts.append((now, event.data))
        elif isinstance(event, CloseConnection) and session.closed_at is None:
            session.closed_at, session.close_code = now, event.code
            if client.conn.state is ConnectionState.REMOTE_CLOSING:
                await client.send(event.response())


def always(_: int) -> bool:
    return True


def ping_times(session: Session) -> list[float]:
    return [t for t, _ in session.pings]


# --- pings and pongs -----------------------------------------------------------------------


async def test_server_pings_every_20_s_with_a_fresh_payload(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = make_server()
    session = Session()
    with trio.fail_after(300):
        async with open_raw(server) as client:
            await accept(client)
            with trio.move_on_after(110):
                await listen(client, session, answer=always)
            (info,) = server.connections()
    assert ping_times(session) == [20.0, 40.0, 60.0, 80.0, 100.0]
    payloads = [p for _, p in session.pings]
    assert all(len(p) == 12 for p in payloads)
    assert len(set(payloads)) == len(payloads)
    assert session.closed_at is None
    assert info.outstanding_pings == 0
    assert info.messages_received == 5  # the pongs count as incoming messages


async def test_client_that_answers_pings_stays_connected_for_10_minutes(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = make_server()
    with trio.fail_after(900):
        async with open_client(server, "/ws/btcusdt@trade") as ws:
            await assert_silent(ws, 610)  # trio-websocket pongs by itself meanwhile
            (info,) = server.connections()
            assert info.messages_received == 30
            assert info.outstanding_pings == 0
            assert await request(ws, LIST) == {"result": ["btcusdt@trade"], "id": 1}
            assert trio.current_time() == 610.0


async def test_silent_client_is_closed_60_s_after_the_first_unanswered_ping(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = make_server()
    session = Session()
    with trio.fail_after(300):
        async with open_raw(server) as client:
            await accept(client)
            await listen(client, session)
            await trio.testing.wait_all_tasks_blocked()
            assert server.connections() == ()
    assert ping_times(session) == [20.0, 40.0, 60.0]
    assert (session.closed_at, session.close_code) == (80.0, 1008)


async def test_unsolicited_and_mismatched_pongs_do_not_keep_the_connection_alive(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = make_server()
    session = Session()

    async def send_pongs(client: RawClient) -> None:
        await trio.sleep(5)
        while client.conn.state is ConnectionState.OPEN:
            await client.send(Pong(payload=b""))  # unsolicited, as the docs suggest
            await client.send(Pong(payload=b"not-a-ping-payload"))
            await trio.sleep(10)

    with trio.fail_after(300):
        async with open_raw(server) as client, trio.open_nursery() as nursery:
            await accept(client)
            nursery.start_soon(send_pongs, client)
            await listen(client, session)
            nursery.cancel_scope.cancel()
    assert ping_times(session) == [20.0, 40.0, 60.0]
    assert (session.closed_at, session.close_code) == (80.0, 1008)


async def test_a_pong_for_a_later_ping_settles_the_earlier_ones(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = make_server()
    session = Session()
    with trio.fail_after(300):
        async with open_raw(server) as client:
            await accept(client)
            # Skip the ping at 20 s, answer the one at 40 s, then fall silent: the deadline
            # restarts from the ping at 60 s.
            await listen(client, session, answer=lambda n: n == 1)
    assert ping_times(session) == [20.0, 40.0, 60.0, 80.0, 100.0]
    assert (session.closed_at, session.close_code) == (120.0, 1008)


# --- connection age --------------------------------------------------------------------------


async def test_age_cap_sends_server_shutdown_then_closes_at_exactly_max_age(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = make_server(attrs.evolve(RELAXED, max_age_s=3600))
    with trio.fail_after(4000):
        async with open_client(server, "/stream?streams=btcusdt@trade") as ws:
            frames = await read_until_closed(ws)
            assert trio.current_time() == 3600.0
            assert close_code(ws) == 1001
    event_ms = DEFAULT_VIRTUAL_EPOCH_MS + 3_600_000
    assert frames == [
        f'{{"stream":"!serverShutdown","data":{{"e":"serverShutdown","E":{event_ms}}}}}'
    ]


async def test_each_connection_has_its_own_age(autojump_clock: trio.abc.Clock) -> None:
    server = make_server(attrs.evolve(RELAXED, max_age_s=100))
    closed: dict[str, float] = {}

    async def connect(name: str, delay: int) -> None:
        await trio.sleep(delay)
        async with open_client(server, "/ws/btcusdt@trade") as ws:
            event_ms = DEFAULT_VIRTUAL_EPOCH_MS + round(1000 * (delay + 100))
            assert await read_until_closed(ws) == [f'{{"e":"serverShutdown","E":{event_ms}}}']
            closed[name] = trio.current_time()

    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connect, "first", 0)
            nursery.start_soon(connect, "second", 30)
    assert closed == {"first": 100.0, "second": 130.0}


# --- incoming message rate ---------------------------------------------------------------------


async def test_five_messages_per_second_are_allowed(autojump_clock: trio.abc.Clock) -> None:
    server = make_server(StreamServerConfig())
    with trio.fail_after(60):
        async with open_client(server, "/ws/btcusdt@trade") as ws:
            for i in range(5):
                await trio.sleep_until(i * 0.2)
                assert await request(ws, LIST | {"id": i}) == {"result": ["btcusdt@trade"], "id": i}
            await trio.sleep_until(1.0)  # the message from 0.0 has left the window
            assert await request(ws, LIST) == {"result": ["btcusdt@trade"], "id": 1}
            assert len(server.connections()) == 1


async def test_a_sixth_message_within_one_second_closes_the_connection(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server(StreamServerConfig())
    with trio.fail_after(60):
        async with open_client(server, "/ws/btcusdt@trade") as ws:
            conn_id = server.connections()[0].id
            for i in range(5):
                await trio.sleep_until(i * 0.1)
                assert await request(ws, LIST | {"id": i}) == {"result": ["btcusdt@trade"], "id": i}
            await trio.sleep_until(0.9)
            await ws.send_message('{"method":"LIST_SUBSCRIPTIONS","id":5}')
            assert await read_until_closed(ws) == []  # refused, not answered
            assert close_code(ws) == 1008
            assert trio.current_time() == 0.9
    assert f"sim.ws.rate_exceeded id={conn_id} limit=5 window_s=1" in caplog.messages


@pytest.mark.parametrize(("text_messages", "closed"), [(0, False), (1, True)])
async def test_pings_and_pongs_count_toward_the_message_rate(
    text_messages: int, closed: bool, autojump_clock: trio.abc.Clock
) -> None:
    server = make_server(StreamServerConfig())
    session = Session()
    with trio.fail_after(60):
        async with open_raw(server) as client:
            await accept(client)
            for i in range(3):
                await client.send(Ping(payload=b"client-%d" % i))
            for _ in range(2):
                await client.send(Pong(payload=b""))
            for _ in range(text_messages):
                await client.send(TextMessage(data='{"method":"LIST_SUBSCRIPTIONS","id":1}'))
            with trio.move_on_after(5):
                await listen(client, session)
            await trio.testing.wait_all_tasks_blocked()
            assert (len(server.connections()) == 0) is closed
    if closed:
        assert (session.closed_at, session.close_code) == (0.0, 1008)
    else:
        assert session.closed_at is None


# --- connection attempts -----------------------------------------------------------------------


async def attempt(server: StreamServer, remote_ip: str) -> int:
    """One handshake from ``remote_ip``; 101 when accepted, else the HTTP status."""
    async with open_raw(server, remote_ip=remote_ip) as client:
        reply = await client.handshake("/ws/btcusdt@trade")
    if isinstance(reply, RejectConnection):
        return reply.status_code
    assert isinstance(reply, AcceptConnection)
    return 101


async def test_301st_connection_attempt_within_5_minutes_is_refused_with_429(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = make_server(StreamServerConfig())
    with trio.fail_after(600):
        for i in range(300):
            await trio.sleep_until(i * 0.5)  # 0.0, 0.5 … 149.5
            assert await attempt(server, "10.0.0.1") == 101
        await trio.sleep_until(200.0)
        assert await attempt(server, "10.0.0.1") == 429
        assert await attempt(server, "10.0.0.2") == 101  # the limit is per IP
        await trio.sleep_until(300.0)  # the attempt from 0.0 has left the 5-minute window
        assert await attempt(server, "10.0.0.1") == 101
        assert await attempt(server, "10.0.0.1") == 429
    stats = server.statistics()
    assert (stats.connections_accepted, stats.rejected_rate_limited) == (302, 2)


async def test_a_client_that_never_sends_its_upgrade_request_is_cut_off(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = make_server(attrs.evolve(RELAXED, handshake_timeout_s=10))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            stream = server.connect_memory_stream(nursery)
            assert await stream.receive_some() == b""  # EOF: the server closed the TCP stream
            assert trio.current_time() == 10.0
            await stream.aclose()
    assert server.statistics().connections_accepted == 0


# --- faults ------------------------------------------------------------------------------------


async def test_stalled_streams_deliver_no_data_while_pings_continue(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = make_server()
    session = Session()
    with trio.fail_after(300):
        async with open_raw(server) as client, trio.open_nursery() as nursery:
            await accept(client)
            nursery.start_soon(lambda: listen(client, session, answer=always))
            server.faults.stall()
            await trio.sleep_until(1.0)
            server.hub.publish("btcusdt@trade", TRADE)
            await trio.sleep_until(45.0)
            assert server.connections()[0].stalled
            server.faults.unstall()
            server.hub.publish("btcusdt@trade", TRADE)
            await trio.sleep_until(50.0)
            nursery.cancel_scope.cancel()
    assert ping_times(session) == [20.0, 40.0]
    assert session.texts == [(45.0, TRADE.decode())]
    assert session.closed_at is None


async def test_stopped_pings_leave_a_silent_client_connected(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = make_server()
    server.faults.stop_pings = True
    session = Session()
    with trio.fail_after(600):
        async with open_raw(server) as client, trio.open_nursery() as nursery:
            await accept(client)
            nursery.start_soon(listen, client, session)
            await trio.sleep_until(210.0)
            assert session.pings == []
            assert len(server.connections()) == 1
            server.faults.stop_pings = False  # pings resume on the 20 s grid
            await trio.sleep_until(400.0)
    assert ping_times(session) == [220.0, 240.0, 260.0]
    assert (session.closed_at, session.close_code) == (280.0, 1008)


async def test_ignored_pongs_close_a_well_behaved_client_after_60_s(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = make_server()
    server.faults.ignore_pongs = True
    session = Session()
    with trio.fail_after(300):
        async with open_raw(server) as client:
            await accept(client)
            await listen(client, session, answer=always)
    assert ping_times(session) == [20.0, 40.0, 60.0]
    assert (session.closed_at, session.close_code) == (80.0, 1008)


async def test_per_connection_ping_faults_leave_the_others_alone(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = make_server()
    sessions = [Session(), Session()]
    with trio.fail_after(300):
        async with open_raw(server) as quiet, open_raw(server) as normal:
            await accept(quiet)
            await accept(normal)
            quiet_id, normal_id = (c.id for c in server.connections())
            server.faults.ping_stopped_ids.add(quiet_id)
            server.faults.pong_ignored_ids.add(normal_id)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(listen, quiet, sessions[0])
                nursery.start_soon(lambda: listen(normal, sessions[1], answer=always))
                await trio.sleep_until(100.0)
                nursery.cancel_scope.cancel()
            assert [c.id for c in server.connections()] == [quiet_id]
    assert sessions[0].pings == []
    assert sessions[0].closed_at is None
    assert ping_times(sessions[1]) == [20.0, 40.0, 60.0]
    assert (sessions[1].closed_at, sessions[1].close_code) == (80.0, 1008)


async def test_drop_now_wakes_a_connection_waiting_on_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = make_server()
    with trio.fail_after(300):
        async with open_client(server, "/ws/btcusdt@trade") as ws:
            await trio.sleep(7.25)
            (info,) = server.connections()
            assert server.faults.drop(info.id)
            with pytest.raises(trio_websocket.ConnectionClosed):
                await ws.get_message()
            assert close_code(ws) == 1006
            assert trio.current_time() == 7.25


# --- the pure counters ---------------------------------------------------------------------------


@given(st.lists(st.floats(min_value=0, max_value=10, allow_nan=False), max_size=80).map(sorted))
def test_sliding_window_admits_exactly_while_the_window_has_room(times: list[float]) -> None:
    counter = SlidingWindowCounter(5, 1.0)
    admitted: list[float] = []
    for now in times:
        in_window = sum(1 for t in admitted if now - 1.0 < t <= now)
        assert counter.try_acquire(now) is (in_window < 5)
        if in_window < 5:
            admitted.append(now)
        assert counter.count(now) == min(in_window + 1, 5)


def test_attempt_limiter_keys_are_independent_and_forgotten_when_idle() -> None:
    limiter = AttemptLimiter(2, 300.0, sweep_above=2)
    assert limiter.try_acquire("a", 0.0)
    assert limiter.try_acquire("a", 1.0)
    assert not limiter.try_acquire("a", 2.0)
    assert limiter.try_acquire("b", 2.0)
    assert limiter.count("a", 299.0) == 2
    assert limiter.count("a", 300.0) == 1
    assert limiter.try_acquire("c", 400.0)  # sweeps "a" and "b", whose windows are empty
    assert limiter.count("a", 400.0) == 0
    assert limiter.try_acquire("a", 400.0)


def test_config_normalises_symbols_and_rejects_nonsense() -> None:
    assert StreamServerConfig(symbols={"btcusdt"}).symbols == frozenset({"BTCUSDT"})
    with pytest.raises(ValueError, match="ping_interval_s"):
        StreamServerConfig(ping_interval_s=0)
    with pytest.raises(ValueError, match="pong_timeout_s"):
        StreamServerConfig(pong_timeout_s=math.inf)
    with pytest.raises(ValueError, match="max_streams_per_connection"):
        StreamServerConfig(max_streams_per_connection=0)
