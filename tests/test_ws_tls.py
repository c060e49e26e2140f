"""TLS read and written without waiting (genesis.exchange.ws_tls), and wss:// through it.

Over real loopback TCP sockets; the server side is trio's own ``trio.SSLStream`` (another
implementation over the same OpenSSL), with certificates from ``trustme``. Every case runs with
TLS 1.3 and with TLS 1.2 (forced by the server context's ``maximum_version``). Real-socket
tests wait on conditions under a trio deadline, never on sleeps.
"""

from __future__ import annotations

import functools
import select
import socket
import ssl
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import attrs
import pytest
import trio
import trio.testing
import trio_websocket
import trustme
from websockets.frames import Frame, Opcode

from genesis.exchange import ws_reader, ws_transport
from genesis.exchange.ws_reader import ReadGroup
from genesis.exchange.ws_tls import TlsSocketStream
from genesis.exchange.ws_transport import (
    FastWebSocket,
    connect_fast_websocket,
    wrap_client_stream,
)
from tests.test_ws_manager import poll_until
from tests.test_ws_transport import RawServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

VERSIONS = [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2]
VERSION_NAMES = {ssl.TLSVersion.TLSv1_3: "TLSv1.3", ssl.TLSVersion.TLSv1_2: "TLSv1.2"}


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(params=VERSIONS, ids=["tls1.3", "tls1.2"])
def version(request: pytest.FixtureRequest) -> ssl.TLSVersion:
    value: ssl.TLSVersion = request.param
    return value


def server_context(
    ca: trustme.CA, version: ssl.TLSVersion, *, names: Sequence[str] = ("127.0.0.1",)
) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.maximum_version = version
    ca.issue_cert(*names).configure_cert(context)
    return context


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@attrs.define(eq=False)
class TlsServer:
    """Accepts TCP on 127.0.0.1 and does trio's server-side TLS handshake on each."""

    port: int
    accepted: trio.MemoryReceiveChannel[trio.SSLStream[trio.SocketStream]]
    raw: list[trio.SocketStream]


@asynccontextmanager
async def open_tls_server(
    context: ssl.SSLContext, *, rcvbuf: int | None = None
) -> AsyncIterator[TlsServer]:
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    send_chan, recv_chan = trio.open_memory_channel[trio.SSLStream[trio.SocketStream]](8)
    server = TlsServer(listener.socket.getsockname()[1], recv_chan, [])

    async def handshake(tcp: trio.SocketStream) -> None:
        stream = trio.SSLStream(tcp, context, server_side=True)
        try:
            await stream.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await trio.aclose_forcefully(tcp)  # the client refused us (or the test ended)
            return
        await send_chan.send(stream)

    async def accept(nursery: trio.Nursery) -> None:
        while True:
            tcp = await listener.accept()
            if rcvbuf is not None:
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            server.raw.append(tcp)
            nursery.start_soon(handshake, tcp)

    async with listener, send_chan, trio.open_nursery() as nursery:
        nursery.start_soon(accept, nursery)
        try:
            yield server
        finally:
            with trio.CancelScope(shield=True):  # never replace the body's error by a Cancelled
                for tcp in server.raw:
                    await trio.aclose_forcefully(tcp)
            nursery.cancel_scope.cancel()


async def open_client(
    port: int, context: ssl.SSLContext, *, hostname: str = "127.0.0.1", sndbuf: int | None = None
) -> TlsSocketStream:
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    if sndbuf is not None:
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    client = TlsSocketStream(tcp, server_hostname=hostname, ssl_context=context)
    await client.do_handshake()
    return client


async def receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some()
        assert chunk, f"EOF after {len(data)} of {size} bytes"
        data += chunk
    return bytes(data)


# --- the TLS stream --------------------------------------------------------------------------


async def test_handshake_and_echo_both_ways(ca: trustme.CA, version: ssl.TLSVersion) -> None:
    big = bytes(range(256)) * 1024  # 256 KiB: many records, more than a socket buffer at once
    with trio.fail_after(10):
        async with open_tls_server(server_context(ca, version)) as server:
            client = await open_client(server.port, client_context(ca))
            peer = await server.accepted.receive()
            async with client, peer, trio.open_nursery() as nursery:
                nursery.start_soon(client.send_all, b"hello " + big)
                assert await receive_exactly(peer, 6 + len(big)) == b"hello " + big
                nursery.start_soon(peer.send_all, b"world " + big)
                assert await receive_exactly(client, 6 + len(big)) == b"world " + big
            assert client.ssl_object.version() == VERSION_NAMES[version]
            assert client.fileno() >= 0


async def test_the_default_context_verifies_the_certificate(ca: trustme.CA) -> None:
    with trio.fail_after(10):
        async with open_tls_server(server_context(ca, ssl.TLSVersion.TLSv1_3)) as server:
            tcp = await trio.open_tcp_stream("127.0.0.1", server.port)
            client = TlsSocketStream(tcp, server_hostname="127.0.0.1")  # system trust only
            with pytest.raises(trio.BrokenResourceError) as info:
                await client.do_handshake()
            await client.aclose()
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
    with pytest.raises(trio.ClosedResourceError):
        await client.send_all(b"after close")


@pytest.mark.parametrize(
    ("names", "trusted"),
    [(("127.0.0.1",), False), (("other.test",), True)],
    ids=["untrusted-ca", "wrong-hostname"],
)
async def test_a_certificate_we_must_not_trust_is_a_handshake_error(
    ca: trustme.CA, version: ssl.TLSVersion, names: tuple[str, ...], trusted: bool
) -> None:
    context = client_context(ca if trusted else trustme.CA())
    connect = functools.partial(connect_fast_websocket, ssl_context=context)
    with trio.fail_after(10):
        async with (
            open_tls_server(server_context(ca, version, names=names)) as server,
            trio.open_nursery() as nursery,
        ):
            with pytest.raises(trio_websocket.HandshakeError, match="TLS failed") as info:
                await connect(nursery, f"wss://127.0.0.1:{server.port}/ws")
    assert isinstance(info.value.__cause__, trio.BrokenResourceError)
    assert isinstance(info.value.__cause__.__cause__, ssl.SSLCertVerificationError)


async def test_a_peer_that_hangs_up_during_tls_is_a_handshake_error(ca: trustme.CA) -> None:
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    connect = functools.partial(connect_fast_websocket, ssl_context=client_context(ca))
    with trio.fail_after(10):
        async with listener, trio.open_nursery() as nursery:

            async def hang_up() -> None:
                tcp = await listener.accept()
                await tcp.receive_some()  # the ClientHello, unanswered
                await tcp.aclose()

            nursery.start_soon(hang_up)
            with pytest.raises(trio_websocket.HandshakeError, match="TLS failed"):
                await connect(nursery, f"wss://127.0.0.1:{port}/ws")


async def test_a_burst_over_64_kib_arrives_through_read_nowait_and_epoll_readiness(
    ca: trustme.CA, version: ssl.TLSVersion
) -> None:
    """Nothing decrypted may stay in the SSLObject: epoll would never wake for it."""
    records = [bytes([i]) * 16384 for i in range(20)]  # 320 KiB in full-size records
    expected = b"".join(records)
    with trio.fail_after(10):
        async with open_tls_server(server_context(ca, version)) as server:
            client = await open_client(server.port, client_context(ca))
            peer = await server.accepted.receive()
            epoll = select.epoll()
            epoll.register(client.fileno(), select.EPOLLIN)
            got = bytearray()
            reads: list[int] = []
            async with client, peer, trio.open_nursery() as nursery:

                async def burst() -> None:
                    for record in records:
                        await peer.send_all(record)  # one SSL_write, one 16 KiB record

                nursery.start_soon(burst)
                await trio.testing.wait_all_tasks_blocked()  # the kernel holds what it takes
                while len(got) < len(expected):
                    await trio.lowlevel.wait_readable(epoll)  # as a ReadGroup waits
                    for _fd, _events in epoll.poll(0):
                        try:
                            data = client.read_nowait(65536)  # one read per readiness
                        except BlockingIOError:
                            continue  # only part of a record so far
                        got += data
                        reads.append(len(data))
                        assert client.ssl_object.pending() == 0  # nothing decrypted left
            epoll.close()
    assert bytes(got) == expected
    assert len(reads) >= len(expected) // (65536 + 16384)  # each read ≤ 64 KiB of records


async def test_ciphertext_the_socket_did_not_take_goes_out_first_and_in_order(
    ca: trustme.CA, version: ssl.TLSVersion
) -> None:
    big = b"x" * (4 << 20)  # more than loopback's buffers take while nobody reads
    with trio.fail_after(10):
        async with open_tls_server(server_context(ca, version)) as server:
            client = await open_client(server.port, client_context(ca))
            peer = await server.accepted.receive()
            async with client, peer:
                assert client.write_nowait(big) == len(big)  # encrypted, partly written
                left_over = client.flush_pending
                assert client.write_nowait(b"tail") == 4  # queued behind, never ahead
                received: list[bytes] = []

                async def read() -> None:
                    received.append(await receive_exactly(peer, len(big) + 4))

                async with trio.open_nursery() as readers:
                    readers.start_soon(read)
                    await client.send_all(b"")  # the owner's flush
                    assert not client.flush_pending
                await client.send_all(b"!")
                assert await peer.receive_some() == b"!"
    assert left_over
    assert received == [big + b"tail"]


async def test_tls13_post_handshake_messages_get_their_answer_inside_a_read(
    ca: trustme.CA,
) -> None:
    """Post-handshake authentication: the client must answer a CertificateRequest."""
    server_ctx = server_context(ca, ssl.TLSVersion.TLSv1_3)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.post_handshake_auth = True  # ask for the certificate only after the handshake
    ca.configure_trust(server_ctx)
    client_ctx = client_context(ca)
    client_ctx.post_handshake_auth = True
    ca.issue_cert("client.test").configure_cert(client_ctx)
    with trio.fail_after(10):
        async with open_tls_server(server_ctx) as server:
            client = await open_client(server.port, client_ctx)
            peer = await server.accepted.receive()
            assert peer.getpeercert() is None
            # trio forwards no method for it: its SSLObject is the only way to ask.
            peer._ssl_object.verify_client_post_handshake()
            await peer.send_all(b"request")  # the CertificateRequest goes out ahead of it
            got = b""
            while not got:
                await trio.lowlevel.wait_readable(client.fileno())
                try:
                    got = client.read_nowait(65536)
                except BlockingIOError:
                    continue
            assert not client.flush_pending  # the answer went out inside the read, whole
            await client.send_all(b"done")
            assert await peer.receive_some() == b"done"  # behind the certificate
            peer_cert = peer.getpeercert()
            await trio.aclose_forcefully(peer)
            await client.aclose()
    assert got == b"request"
    assert peer_cert is not None
    assert peer_cert.get("subjectAltName") == (("DNS", "client.test"),)


# --- wss:// through FastWebSocket -----------------------------------------------------------

URL_PATH = "/stream?streams=btcusdt@trade"


@attrs.define(eq=False)
class WssPair:
    ws: FastWebSocket
    server: RawServer
    peer: trio.SSLStream[trio.SocketStream]
    got: list[str | bytes] = attrs.field(factory=list)

    def sink(self, messages: Sequence[str | bytes], now: float) -> None:
        del now
        self.got.extend(messages)


@asynccontextmanager
async def open_wss(
    ca: trustme.CA,
    version: ssl.TLSVersion,
    *,
    rcvbuf: int | None = None,
    sndbuf: int | None = None,
) -> AsyncIterator[WssPair]:
    """Our wss:// client, websockets' sans-I/O server over trio's SSLStream on the other end.

    ``connect_fast_websocket`` dials; with ``sndbuf`` the test dials (to size the socket)
    and hands the TLS stream to ``wrap_client_stream``.
    """
    async with (
        open_tls_server(server_context(ca, version), rcvbuf=rcvbuf) as server,
        trio.open_nursery() as nursery,
    ):
        url = f"wss://127.0.0.1:{server.port}{URL_PATH}"
        connecting = trio.Event()
        results: list[FastWebSocket] = []

        async def connect() -> None:
            if sndbuf is None:
                ws = await connect_fast_websocket(nursery, url, ssl_context=client_context(ca))
            else:
                tls = await open_client(server.port, client_context(ca), sndbuf=sndbuf)
                ws = await wrap_client_stream(tls, url)
            results.append(ws)
            connecting.set()

        nursery.start_soon(connect)
        peer = await server.accepted.receive()
        raw = RawServer(peer)
        await raw.handshake()
        await connecting.wait()
        pair = WssPair(results[0], raw, peer)
        try:
            yield pair
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(0):
                    await pair.ws.aclose()
                await trio.aclose_forcefully(peer)
            nursery.cancel_scope.cancel()


def frames(server: RawServer, *texts: str) -> bytes:
    for text in texts:
        server.protocol.send_text(text.encode())
    return b"".join(server.protocol.data_to_send())


async def read_until_closed(ws: FastWebSocket, got: list[str | bytes]) -> None:
    while True:
        got.extend(await ws.get_messages())


needs_epoll = pytest.mark.skipif(not ws_reader.supported(), reason="no epoll on this platform")


@needs_epoll
async def test_wss_frames_reach_a_read_group_and_a_ping_is_answered_while_attached(
    ca: trustme.CA, version: ssl.TLSVersion
) -> None:
    group = ReadGroup()
    texts = [f'{{"n":{i}}}' for i in range(300)]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery, open_wss(ca, version) as pair:
            nursery.start_soon(group.run)
            assert pair.ws.fileno is not None
            assert group.attach(pair.ws, pair.sink)
            for i in range(0, len(texts), 10):
                await pair.peer.send_all(frames(pair.server, *texts[i : i + 10]))
            pair.server.protocol.send_ping(b"are you there")
            await pair.server.flush()
            await pair.peer.send_all(frames(pair.server, "after the ping"))
            pongs: list[Frame] = []
            while not pongs:
                pair.server.protocol.receive_data(await pair.peer.receive_some(65536))
                pongs += [e for e in pair.server.protocol.events_received() if isinstance(e, Frame)]
            await poll_until(lambda: len(pair.got) == len(texts) + 1)
            stats = group.statistics()
            nursery.cancel_scope.cancel()
    assert pair.got == [*texts, "after the ping"]
    assert [(f.opcode, f.data) for f in pongs] == [(Opcode.PONG, b"are you there")]
    assert pair.ws.pongs_sent == 1
    assert stats.attached == 1
    assert stats.reads > 0


@needs_epoll
async def test_pongs_the_socket_cannot_take_are_written_by_the_connection_task(
    ca: trustme.CA, version: ssl.TLSVersion
) -> None:
    """Small buffers and a server that does not read: the group's writes fall behind."""
    group = ReadGroup()
    count = 600
    with trio.fail_after(10):
        async with (
            trio.open_nursery() as nursery,
            open_wss(ca, version, rcvbuf=4096, sndbuf=4096) as pair,
        ):
            nursery.start_soon(group.run)
            assert group.attach(pair.ws, pair.sink)
            waiting = trio.Event()

            async def connection_task() -> None:
                waiting.set()
                with pytest.raises(trio_websocket.ConnectionClosed):
                    await pair.ws.wait_closed()

            nursery.start_soon(connection_task)
            await waiting.wait()
            for i in range(count):
                pair.server.protocol.send_ping(i.to_bytes(4, "big") * 31)  # 124-byte payloads
            await pair.server.flush()
            await poll_until(lambda: pair.ws.pongs_sent == count)
            payloads: list[bytes] = []
            while len(payloads) < count:
                pair.server.protocol.receive_data(await pair.peer.receive_some(65536))
                payloads += [
                    bytes(e.data)
                    for e in pair.server.protocol.events_received()
                    if isinstance(e, Frame) and e.opcode is Opcode.PONG
                ]
            nursery.cancel_scope.cancel()
    assert payloads == [i.to_bytes(4, "big") * 31 for i in range(count)]


@pytest.mark.parametrize("attached", [True, False], ids=["group", "own-task"])
@pytest.mark.parametrize("ending", ["close-frame", "close-notify", "ragged-eof", "corrupt-record"])
async def test_the_end_of_a_wss_connection_is_the_peers_close_code_or_1006(
    ca: trustme.CA, version: ssl.TLSVersion, ending: str, attached: bool
) -> None:
    if attached and not ws_reader.supported():
        pytest.skip("no epoll on this platform")
    group = ReadGroup()
    got: list[str | bytes] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery, open_wss(ca, version) as pair:
            nursery.start_soon(group.run)
            wire = frames(pair.server, "last")
            if ending == "close-frame":
                pair.server.protocol.send_close(1001, "going away")
                wire += b"".join(pair.server.protocol.data_to_send())
            await pair.peer.send_all(wire)
            if ending == "close-notify":
                # close_notify right behind the frame, the TCP connection left open (the
                # server waits for ours): the end is known from the TLS layer alone, and in
                # the same read as the frame there is no second wake-up to learn it from.
                nursery.start_soon(pair.peer.unwrap)
            elif ending == "ragged-eof":
                await trio.aclose_forcefully(pair.peer.transport_stream)
            elif ending == "corrupt-record":  # application data that does not authenticate
                await pair.peer.transport_stream.send_all(b"\x17\x03\x03\x00\x20" + bytes(32))
            await trio.testing.wait_all_tasks_blocked()  # all of it in our socket: one read
            if attached:
                assert group.attach(pair.ws, pair.sink)
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                await (pair.ws.wait_closed() if attached else read_until_closed(pair.ws, got))
            nursery.cancel_scope.cancel()
    assert (pair.got if attached else got) == ["last"]
    assert info.value.reason is not None
    assert info.value.reason.code == (1001 if ending == "close-frame" else 1006)


async def test_where_sockets_are_not_file_descriptors_trios_streams_carry_the_connection(
    ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Windows: os.read/os.write do not work on sockets, so the transport must not use them.
    monkeypatch.setattr(ws_transport, "SOCKETS_ARE_FDS", False)
    with trio.fail_after(10):
        async with open_wss(ca, ssl.TLSVersion.TLSv1_3) as pair:
            assert pair.ws.fileno is None  # no ReadGroup: its own task reads it
            assert not ReadGroup().attach(pair.ws, pair.sink)
            pair.server.protocol.send_ping(b"ping")
            await pair.server.flush()
            await pair.peer.send_all(frames(pair.server, "over trio.SSLStream"))
            got: list[str | bytes] = []
            while not got:
                got.extend(await pair.ws.get_messages())
            pongs: list[Frame] = []
            while not pongs:
                pair.server.protocol.receive_data(await pair.peer.receive_some(65536))
                pongs += [e for e in pair.server.protocol.events_received() if isinstance(e, Frame)]
    assert got == ["over trio.SSLStream"]
    assert [(f.opcode, f.data) for f in pongs] == [(Opcode.PONG, b"ping")]
