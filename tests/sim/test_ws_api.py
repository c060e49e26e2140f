"""The simulator's WebSocket API (``/ws-api/v3``): signing, sessions, user data, orders, limits.

Deterministic network tests: every connection runs over ``trio.testing.memory_stream_pair()``
(one test uses a real socket on 127.0.0.1:0), every test has a trio-clock deadline, and tests
about time run under ``autojump_clock`` and assert exact virtual times. The connection opens at
virtual 0.0 and the simulator clock reads :data:`EPOCH` then, so times are Binance's numbers.
Clients that must not answer pings are :class:`RawClient` (bare wsproto); the others are
trio-websocket's client, which answers every ping with its payload by itself.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import urllib.parse
from collections import deque
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, cast

import attrs
import pytest
import trio
import trio.testing
import trio_websocket
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Ping,
    Pong,
    Request,
)

from genesis.sim.auth import ApiKey, KeyStore, hmac_signature
from genesis.sim.clock import DEFAULT_VIRTUAL_EPOCH_MS, SimClock
from genesis.sim.exchange import Exchange
from genesis.sim.ratelimit import RateLimiter
from genesis.sim.symbols import default_symbols
from genesis.sim.ws_api import (
    DEFAULT_WS_API_CONFIG,
    WsApiConfig,
    WsApiContext,
    handle_ws_api_stream,
    serve_ws_api,
    signature_payload,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

Json = dict[str, object]

EPOCH = DEFAULT_VIRTUAL_EPOCH_MS  # 2026-01-01T00:00:00Z, a minute (and day) boundary
SHARED_DIR = Path(__file__).resolve().parents[3] / "shared"

# The documented example key (web-socket-api.md "SIGNED request example (HMAC)").
DOC_API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
DOC_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
ED_API_KEY = "EdKey0000000000000000000000000000000000000000000000000000000001"
MAKER = "MakerKey00000000000000000000000000000000000000000000000000000001"
IP = "10.0.0.7"

BUY_60000: Json = {
    "symbol": "BTCUSDT",
    "side": "BUY",
    "type": "LIMIT",
    "timeInForce": "GTC",
    "quantity": "0.00100000",
    "price": "60000.00",
}


# --- fixtures: a simulator and clients ------------------------------------------------------


@attrs.define
class Sim:
    ctx: WsApiContext
    exchange: Exchange
    clock: SimClock
    ed_private: Ed25519PrivateKey

    def signed(self, params: Json | None = None, *, api_key: str = DOC_API_KEY) -> Json:
        """``params`` with apiKey, timestamp and an HMAC signature (WS API rules)."""
        out: Json = {**(params or {}), "apiKey": api_key, "timestamp": self.clock.now_ms()}
        out["signature"] = hmac_signature(DOC_SECRET, signature_payload(_texts(out)))
        return out

    def ed_signed(self, params: Json | None = None) -> Json:
        """``params`` with the Ed25519 key's apiKey, timestamp and base64 signature."""
        out: Json = {**(params or {}), "apiKey": ED_API_KEY, "timestamp": self.clock.now_ms()}
        payload = signature_payload(_texts(out)).encode()
        out["signature"] = base64.b64encode(self.ed_private.sign(payload)).decode()
        return out

    def rest_sell(self, price: str = "60000.00", qty: str = "0.00100000") -> None:
        """A resting maker SELL placed straight through the exchange (REST-equivalent)."""
        self.exchange.place_order(
            MAKER,
            symbol="BTCUSDT",
            side="SELL",
            type="LIMIT",
            time_in_force="GTC",
            quantity=qty,
            price=price,
            now_ms=self.clock.now_ms(),
        )


def _texts(params: Json) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items()}


def make_sim(
    config: WsApiConfig = DEFAULT_WS_API_CONFIG,
    *,
    epoch_ms: int = EPOCH,
    limiter: RateLimiter | None = None,
) -> Sim:
    clock = SimClock.start(epoch_ms)
    exchange = Exchange(default_symbols(), seed=7)
    keys = KeyStore()
    keys.add(ApiKey.hmac(DOC_API_KEY, DOC_SECRET))
    private = Ed25519PrivateKey.generate()
    keys.add(ApiKey.ed25519(ED_API_KEY, private.public_key()))
    for key in (DOC_API_KEY, ED_API_KEY, MAKER):
        exchange.add_account(key)
    ctx = WsApiContext(
        exchange=exchange,
        clock=clock,
        keys=keys,
        limiter=limiter if limiter is not None else RateLimiter(),
        config=config,
    )
    return Sim(ctx=ctx, exchange=exchange, clock=clock, ed_private=private)


@attrs.define
class Client:
    """A trio-websocket client that matches answers by id and keeps every other frame."""

    ws: trio_websocket.WebSocketConnection
    frames: list[Json] = attrs.field(factory=list)  # everything received, in order
    _next_id: int = 0

    async def call(self, method: str, params: Json | None = None) -> Json:
        self._next_id += 1
        body: Json = {"id": self._next_id, "method": method}
        if params is not None:
            body["params"] = params
        return await self.send_raw(json.dumps(body), answer_id=self._next_id)

    async def send_raw(self, text: str, *, answer_id: object = None) -> Json:
        await self.ws.send_message(text)
        while True:
            frame = await self.next_frame()
            if "status" in frame and frame.get("id") == answer_id:
                return frame

    async def next_frame(self) -> Json:
        frame = cast("Json", json.loads(await self.ws.get_message()))
        self.frames.append(frame)
        return frame

    def events(self) -> list[Json]:
        return [f for f in self.frames if "event" in f]


@asynccontextmanager
async def connect(
    sim: Sim, target: str = "/ws-api/v3", *, remote_ip: str = IP
) -> AsyncIterator[Client]:
    async with trio.open_nursery() as nursery:
        client_stream, server_stream = memory_pair()
        nursery.start_soon(
            functools.partial(handle_ws_api_stream, server_stream, sim.ctx, remote_ip=remote_ip)
        )
        ws = await trio_websocket.wrap_client_stream(
            nursery, client_stream, "localhost", target, message_queue_size=64
        )
        try:
            yield Client(ws)
        finally:
            nursery.cancel_scope.cancel()


def memory_pair() -> tuple[trio.SocketStream, trio.abc.Stream]:
    """An in-memory connection; the client end is typed as a socket for trio-websocket.

    trio-websocket annotates ``wrap_client_stream`` with socket streams but accepts any
    ``trio.abc.Stream`` (its own docs and tests wrap memory streams).
    """
    client_stream, server_stream = trio.testing.memory_stream_pair()
    return cast("trio.SocketStream", client_stream), server_stream


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


async def handshake_status(
    sim: Sim, target: str = "/ws-api/v3", *, remote_ip: str = IP
) -> int | None:
    """The HTTP status of a refused handshake, or None when it was accepted."""
    statuses: set[int] = set()
    async with trio.open_nursery() as nursery:
        client_stream, server_stream = memory_pair()
        nursery.start_soon(
            functools.partial(handle_ws_api_stream, server_stream, sim.ctx, remote_ip=remote_ip)
        )
        try:
            # trio-websocket raises the rejection from its reader task too: own nursery.
            async with trio.open_nursery() as client_nursery:
                ws = await trio_websocket.wrap_client_stream(
                    client_nursery, client_stream, "localhost", target
                )
                await ws.aclose()
        except* trio_websocket.ConnectionRejected as group:
            statuses = {
                leaf.status_code
                for leaf in _leaves(group)
                if isinstance(leaf, trio_websocket.ConnectionRejected)
            }
        nursery.cancel_scope.cancel()
    assert len(statuses) <= 1
    return next(iter(statuses), None)


def error_of(frame: Json) -> tuple[object, int, object]:
    error = cast("Json", frame["error"])
    return frame["status"], cast("int", error["code"]), error["msg"]


def weight_count(frame: Json) -> object:
    limits = cast("list[Json]", frame["rateLimits"])
    (weight,) = [e for e in limits if e["rateLimitType"] == "REQUEST_WEIGHT"]
    return weight["count"]


def event_kinds(frames: list[Json]) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for frame in frames:
        if "event" not in frame:
            out.append(("answer", frame["id"]))
            continue
        event = cast("Json", frame["event"])
        if event["e"] == "executionReport":
            out.append((frame["subscriptionId"], "executionReport", event["x"], event["X"]))
        else:
            out.append((frame["subscriptionId"], event["e"]))
    return out


# --- signing --------------------------------------------------------------------------------

VECTOR1_PAYLOAD = (
    "apiKey=vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A&price=52000.00"
    "&quantity=0.01000000&recvWindow=100&side=SELL&symbol=BTCUSDT&timeInForce=GTC"
    "&timestamp=1645423376532&type=LIMIT"
)
VECTOR1_SIGNATURE = "aa1b5712c094bc4e57c05a1a5c1fd8d88dcd628338ea863fec7b88e59fe2db24"
VECTOR2_PAYLOAD = (
    "apiKey=vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A&price=0.10000000"
    "&quantity=1.00000000&recvWindow=5000&side=BUY&symbol=１２３４５６&timeInForce=GTC"
    "&timestamp=1645423376532&type=LIMIT"
)
VECTOR2_SIGNATURE = "b33892ae8e687c939f4468c6268ddd4c40ac1af18ad19a064864c47bae0752cd"

VECTOR1_PARAMS: Json = {
    "symbol": "BTCUSDT",
    "side": "SELL",
    "type": "LIMIT",
    "timeInForce": "GTC",
    "quantity": "0.01000000",
    "price": "52000.00",
    "recvWindow": 100,
    "timestamp": 1645423376532,
    "apiKey": DOC_API_KEY,
}


def _pairs(payload: str) -> dict[str, str]:
    return dict(piece.split("=", 1) for piece in payload.split("&"))


def test_signature_payload_reproduces_the_documented_ws_api_vectors() -> None:
    # Built from the request's params (any order, apiKey included, signature excluded).
    params = {**_texts(VECTOR1_PARAMS), "signature": "ignored"}
    assert signature_payload(params) == VECTOR1_PAYLOAD
    assert hmac_signature(DOC_SECRET, VECTOR1_PAYLOAD) == VECTOR1_SIGNATURE
    # Non-ASCII values are signed as raw UTF-8, never percent-encoded.
    assert signature_payload(dict(reversed(_pairs(VECTOR2_PAYLOAD).items()))) == VECTOR2_PAYLOAD
    assert hmac_signature(DOC_SECRET, VECTOR2_PAYLOAD.encode()) == VECTOR2_SIGNATURE


@pytest.mark.shared
def test_signing_matches_the_shared_samples() -> None:
    samples_path = SHARED_DIR / "binance" / "samples.json"
    if not samples_path.is_file():
        pytest.skip("../shared is absent: conformance layer skipped")
    samples = cast("dict[str, Json]", json.loads(samples_path.read_text()))
    vectors = {k: v for k, v in samples.items() if k.startswith("sign.hmac.wsapi.")}
    assert len(vectors) >= 2
    for name, vector in vectors.items():
        payload = cast("str", vector["payload"])
        shuffled = dict(sorted(_pairs(payload).items(), reverse=True))
        assert signature_payload(shuffled) == payload, name
        assert hmac_signature(cast("str", vector["secretKey"]), payload) == vector["signature"]


async def test_server_accepts_the_documented_vector_and_rejects_a_tampered_one(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Anchor the simulator 50 ms after the vector's timestamp (its recvWindow is 100 ms).
    sim = make_sim(epoch_ms=1645423376532 + 50)
    with trio.fail_after(10):
        async with connect(sim) as client:
            tampered = {**VECTOR1_PARAMS, "price": "52000.01", "signature": VECTOR1_SIGNATURE}
            assert error_of(await client.call("order.place", tampered)) == (
                400,
                -1022,
                "Signature for this request is not valid.",
            )
            good = {**VECTOR1_PARAMS, "signature": VECTOR1_SIGNATURE}
            answer = await client.call("order.place", good)
    assert answer["status"] == 200
    result = cast("Json", answer["result"])
    assert (result["symbol"], result["side"], result["status"]) == ("BTCUSDT", "SELL", "NEW")
    assert result["origQty"] == "0.01000000"


async def test_python_binance_style_urlencoded_signature_is_accepted(
    autojump_clock: trio.abc.Clock,
) -> None:
    # python-binance signs urlencode(sorted(params)); a ':' in a client id is encoded there.
    sim = make_sim()
    with trio.fail_after(10):
        async with connect(sim) as client:
            params: Json = {
                **BUY_60000,
                "price": "50000.00",
                "newClientOrderId": "my:order/1",
                "apiKey": DOC_API_KEY,
                "timestamp": sim.clock.now_ms(),
            }
            encoded = urllib.parse.urlencode(sorted(_texts(params).items()))
            assert encoded != signature_payload(_texts(params))
            params["signature"] = hmac_signature(DOC_SECRET, encoded)
            answer = await client.call("order.place", params)
    assert answer["status"] == 200
    assert cast("Json", answer["result"])["clientOrderId"] == "my:order/1"


# --- authentication errors ----------------------------------------------------------------


async def test_signed_request_errors_match_rest(autojump_clock: trio.abc.Clock) -> None:
    sim = make_sim()
    status = {"symbol": "BTCUSDT", "orderId": 1}
    with trio.fail_after(10):
        async with connect(sim) as client:
            bad_sig = {**sim.signed(status), "signature": "0" * 64}
            assert error_of(await client.call("order.status", bad_sig)) == (
                400,
                -1022,
                "Signature for this request is not valid.",
            )
            stale = {**status, "apiKey": DOC_API_KEY, "timestamp": sim.clock.now_ms() - 5001}
            stale["signature"] = hmac_signature(DOC_SECRET, signature_payload(_texts(stale)))
            assert error_of(await client.call("order.status", stale)) == (
                400,
                -1021,
                "Timestamp for this request is outside of the recvWindow.",
            )
            ahead = {**status, "apiKey": DOC_API_KEY, "timestamp": sim.clock.now_ms() + 1000}
            ahead["signature"] = hmac_signature(DOC_SECRET, signature_payload(_texts(ahead)))
            assert error_of(await client.call("order.status", ahead))[1:] == (
                -1021,
                "Timestamp for this request was 1000ms ahead of the server's time.",
            )
            unknown = sim.signed(status, api_key="Unknown0000000000000001")
            assert error_of(await client.call("order.status", unknown)) == (
                401,
                -2015,
                "Invalid API-key, IP, or permissions for action.",
            )
            malformed = {**sim.signed(status), "apiKey": "not a key!"}
            assert error_of(await client.call("order.status", malformed)) == (
                401,
                -2014,
                "API-key format invalid.",
            )
            no_key = {**status, "timestamp": sim.clock.now_ms()}
            assert error_of(await client.call("order.status", no_key)) == (
                400,
                -1102,
                "Mandatory parameter 'apiKey' was not sent, was empty/null, or malformed.",
            )
            # A well-signed request for an order that does not exist reaches the exchange.
            assert error_of(await client.call("order.status", sim.signed(status))) == (
                400,
                -2013,
                "Order does not exist.",
            )


async def test_request_format_errors(autojump_clock: trio.abc.Clock) -> None:
    sim = make_sim()
    with trio.fail_after(10):
        async with connect(sim) as client:
            invalid = await client.send_raw('{"id": 1, "method": "ping"', answer_id=None)
            assert invalid["id"] is None
            assert error_of(invalid) == (400, -1135, "Invalid JSON Request")
            unknown = await client.call("order.teleport", {})
            assert error_of(unknown) == (400, -1020, "Unknown method.")
            not_object = await client.send_raw(
                '{"id": "x1", "method": "ping", "params": [1]}', answer_id="x1"
            )
            assert error_of(not_object) == (
                400,
                -1135,
                "Invalid 'params' in JSON request; expected an object.",
            )
            unread = await client.call("ping", {"symbol": "BTCUSDT"})
            assert error_of(unread) == (
                400,
                -1104,
                "Not all sent parameters were read; read '0' parameter(s) but was sent '1'.",
            )
            missing = await client.call("order.status", sim.signed({"orderId": 1}))
            assert error_of(missing) == (
                400,
                -1102,
                "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
            )
            versioned = await client.call("v3/time")
            assert versioned["result"] == {"serverTime": EPOCH}


# --- user data stream ----------------------------------------------------------------------


async def test_subscribe_signature_delivers_execution_reports_in_order(
    autojump_clock: trio.abc.Clock,
) -> None:
    sim = make_sim()
    with trio.fail_after(10):
        async with connect(sim) as client:
            sub = await client.call("userDataStream.subscribe.signature", sim.signed())
            assert sub["result"] == {"subscriptionId": 0}
            sim.rest_sell()
            placed = await client.call("order.place", sim.signed(BUY_60000))
            frames = list(client.frames)
    assert cast("Json", placed["result"])["status"] == "FILLED"
    # Events the request caused come first, in the exchange's order, then its answer.
    assert event_kinds(frames[1:]) == [
        (0, "executionReport", "NEW", "NEW"),
        (0, "executionReport", "TRADE", "FILLED"),
        (0, "outboundAccountPosition"),
        ("answer", 2),
    ]
    trade = cast("Json", frames[2]["event"])
    assert (trade["s"], trade["S"], trade["l"], trade["L"]) == (
        "BTCUSDT",
        "BUY",
        "0.00100000",
        "60000.00000000",
    )
    position = cast("Json", frames[3]["event"])
    balances = {b["a"]: b for b in cast("list[Json]", position["B"])}
    assert balances["USDT"]["f"] == "999940.00000000"


async def test_unsubscribe_sends_event_stream_terminated_and_errors_2035_2036(
    autojump_clock: trio.abc.Clock,
) -> None:
    sim = make_sim()
    with trio.fail_after(10):
        async with connect(sim) as client:
            assert (await client.call("userDataStream.subscribe.signature", sim.signed()))[
                "result"
            ] == {"subscriptionId": 0}
            again = await client.call("userDataStream.subscribe.signature", sim.signed())
            assert error_of(again) == (400, -2035, "User Data Stream subscription already active.")
            listed = await client.call("session.subscriptions")
            assert listed["result"] == [{"subscriptionId": 0}]
            before = len(client.frames)
            gone = await client.call("userDataStream.unsubscribe", {"subscriptionId": 0})
            assert gone["result"] == {}
            terminated, answer = client.frames[before:]
            assert terminated == {
                "subscriptionId": 0,
                "event": {"e": "eventStreamTerminated", "E": EPOCH},
            }
            assert answer is gone
            again_gone = await client.call("userDataStream.unsubscribe")
            assert error_of(again_gone) == (
                400,
                -2036,
                "User Data Stream subscription not active.",
            )
            # No events after the end of the subscription; a new one gets the next id.
            sim.rest_sell()
            sim.exchange.place_order(
                DOC_API_KEY,
                symbol="BTCUSDT",
                side="BUY",
                type="MARKET",
                quantity="0.00100000",
                now_ms=sim.clock.now_ms(),
            )
            fresh = await client.call("userDataStream.subscribe.signature", sim.signed())
            assert fresh["result"] == {"subscriptionId": 1}
            status = await client.call("session.status")
    assert cast("Json", status["result"])["userDataStream"] is True
    # The market order after the unsubscribe produced no event for this connection.
    assert [f for f in client.frames if "event" in f] == [terminated]


async def test_ed25519_logon_then_subscribe_and_trade_without_signatures(
    autojump_clock: trio.abc.Clock,
) -> None:
    sim = make_sim()
    with trio.fail_after(10):
        async with connect(sim) as client:
            not_yet = await client.call("userDataStream.subscribe")
            assert error_of(not_yet) == (
                401,
                -1002,
                "You are not authorized to execute this request.",
            )
            logon_params = sim.ed_signed()
            logon = await client.call("session.logon", logon_params)
            assert logon["result"] == {
                "apiKey": ED_API_KEY,
                "authorizedSince": logon_params["timestamp"],
                "connectedSince": EPOCH,
                "returnRateLimits": True,
                "serverTime": EPOCH,
                "userDataStream": False,
            }
            assert (await client.call("userDataStream.subscribe"))["result"] == {
                "subscriptionId": 0
            }
            # A second account on the same connection via a signature.
            other = await client.call("userDataStream.subscribe.signature", sim.signed())
            assert other["result"] == {"subscriptionId": 1}
            sim.rest_sell()
            buy = {**BUY_60000, "timestamp": sim.clock.now_ms()}  # no apiKey, no signature
            placed = await client.call("order.place", buy)
            assert cast("Json", placed["result"])["status"] == "FILLED"
            before = len(client.frames)
            out = await client.call("session.logout")
            logout_frames = client.frames[before:]
            after = await client.call("session.subscriptions")
    assert [k for k in event_kinds(client.frames) if k[0] == 0] == [
        (0, "executionReport", "NEW", "NEW"),
        (0, "executionReport", "TRADE", "FILLED"),
        (0, "outboundAccountPosition"),
        (0, "eventStreamTerminated"),
    ]
    assert event_kinds(logout_frames) == [(0, "eventStreamTerminated"), ("answer", out["id"])]
    assert cast("Json", out["result"])["apiKey"] is None
    assert cast("Json", out["result"])["authorizedSince"] is None
    # logout ends only the subscription made by userDataStream.subscribe
    assert after["result"] == [{"subscriptionId": 1}]


async def test_logon_refuses_hmac_keys_and_bad_ed25519_signatures(
    autojump_clock: trio.abc.Clock,
) -> None:
    sim = make_sim()
    with trio.fail_after(10):
        async with connect(sim) as client:
            hmac_logon = await client.call("session.logon", sim.signed())
            assert error_of(hmac_logon) == (400, -1022, "Signature for this request is not valid.")
            forged = {**sim.ed_signed(), "timestamp": sim.clock.now_ms() + 1}
            assert error_of(await client.call("session.logon", forged))[1] == -1022
            status = await client.call("session.status")
    assert cast("Json", status["result"])["apiKey"] is None


async def test_revoked_key_ends_the_session_with_id_null(autojump_clock: trio.abc.Clock) -> None:
    sim = make_sim()
    with trio.fail_after(10):
        async with connect(sim) as client:
            assert (await client.call("session.logon", sim.ed_signed()))["status"] == 200
            sim.ctx.keys.remove(ED_API_KEY)
            request = {"symbol": "BTCUSDT", "orderId": 1, "timestamp": sim.clock.now_ms()}
            revoked = await client.send_raw(
                json.dumps({"id": 9, "method": "order.status", "params": request}),
                answer_id=None,
            )
            status = await client.call("session.status")
    assert error_of(revoked) == (401, -2015, "Invalid API-key, IP, or permissions for action.")
    assert cast("Json", status["result"])["apiKey"] is None


# --- rate limits ----------------------------------------------------------------------------


async def test_rate_limits_are_reported_and_successful_orders_cost_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    sim = make_sim()
    with trio.fail_after(10):
        async with connect(sim) as client:
            ping = await client.call("ping")
            assert ping["result"] == {}
            assert ping["rateLimits"] == [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": 6000,
                    "count": 3,  # 2 for the connection, 1 for the ping
                }
            ]
            status = await client.call("order.status", sim.signed({"symbol": "BTCUSDT"}))
            assert weight_count(status) == 7  # failed requests are charged (4)
            placed = await client.call(
                "order.place", sim.signed({**BUY_60000, "price": "50000.00"})
            )
            assert cast("Json", placed["result"])["status"] == "NEW"
            limits = cast("list[Json]", placed["rateLimits"])
            assert [(e["rateLimitType"], e["intervalNum"], e["count"]) for e in limits] == [
                ("ORDERS", 10, 1),
                ("ORDERS", 1, 1),
                ("REQUEST_WEIGHT", 1, 7),  # a successful placement is refunded
            ]
            quiet = await client.call("time", {"returnRateLimits": False})
            assert "rateLimits" not in quiet
        async with connect(sim, "/ws-api/v3?returnRateLimits=false") as hushed:
            answer = await hushed.call("time")
            assert answer == {"id": 1, "status": 200, "result": {"serverTime": EPOCH}}
            explicit = await hushed.call("time", {"returnRateLimits": True})
            # 7, +1 (quiet time), +2 (this connection), +1 (time), +1 (this request)
            assert weight_count(explicit) == 12


async def test_weight_429_then_418_ban_disconnects_the_ip(autojump_clock: trio.abc.Clock) -> None:
    limiter = RateLimiter()
    limiter.set_limit("REQUEST_WEIGHT", "MINUTE", 1, 5)
    sim = make_sim(limiter=limiter)
    with trio.fail_after(10):
        async with connect(sim) as client:
            counts = [weight_count(await client.call("ping")) for _ in range(3)]
            assert counts == [3, 4, 5]
            limited = [await client.call("ping") for _ in range(3)]
            banned = await client.call("ping")
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await client.next_frame()
        refused = await handshake_status(sim)
    msg = (
        "Too much request weight used; current limit is 5 request weight per 1 MINUTE. "
        "Please use WebSocket Streams for live updates to avoid polling the API."
    )
    for frame in limited:
        assert error_of(frame) == (429, -1003, msg)
        assert cast("Json", frame["error"])["data"] == {
            "serverTime": EPOCH,
            "retryAfter": EPOCH + 60_000,
        }
    until = EPOCH + 120_000
    assert error_of(banned) == (
        418,
        -1003,
        f"Way too much request weight used; IP banned until {until}. "
        "Please use WebSocket Streams for live updates to avoid bans.",
    )
    assert cast("Json", banned["error"])["data"] == {"serverTime": EPOCH, "retryAfter": until}
    assert closed.value.reason is not None
    assert closed.value.reason.code == 1008
    assert refused == 418


async def test_unfilled_order_limit_answers_429_1015_until_the_window_resets(
    autojump_clock: trio.abc.Clock,
) -> None:
    limiter = RateLimiter()
    limiter.set_limit("ORDERS", "SECOND", 10, 1)
    sim = make_sim(limiter=limiter)
    resting = sim.signed({**BUY_60000, "price": "50000.00"})
    with trio.fail_after(30):
        async with connect(sim) as client:
            assert (await client.call("order.place", resting))["status"] == 200
            refused = await client.call("order.place", sim.signed({**resting, "price": "50000.01"}))
            await trio.sleep(10)  # the next 10-second window
            again = await client.call("order.place", sim.signed({**resting, "price": "50000.02"}))
    assert error_of(refused) == (
        429,
        -1015,
        "Too many new orders; current limit is 1 orders per 10 SECOND.",
    )
    assert cast("Json", refused["error"])["data"] == {
        "serverTime": EPOCH,
        "retryAfter": EPOCH + 10_000,
    }
    limits = cast("list[Json]", refused["rateLimits"])
    assert [(e["rateLimitType"], e["intervalNum"], e["count"]) for e in limits] == [
        ("ORDERS", 10, 1),
        ("ORDERS", 1, 1),
        ("REQUEST_WEIGHT", 1, 3),  # connection 2, placed order 0 (refunded), refused order 1
    ]
    assert again["status"] == 200


async def test_connection_attempts_are_limited_per_ip(autojump_clock: trio.abc.Clock) -> None:
    sim = make_sim(WsApiConfig(max_connect_attempts=2))
    with trio.fail_after(10):
        for _ in range(2):
            async with connect(sim) as client:
                assert (await client.call("ping"))["status"] == 200
        refused = await handshake_status(sim)
        assert await handshake_status(sim, remote_ip="10.0.0.8") is None
    assert refused == 429
    assert sim.ctx.statistics().handshakes_rejected == 1


async def test_unknown_path_and_unsupported_options_are_refused(
    autojump_clock: trio.abc.Clock,
) -> None:
    sim = make_sim()
    with trio.fail_after(10):
        for target, status in (
            ("/ws-api/v2", 404),
            ("/ws-api/v3?timeUnit=MICROSECOND", 400),
            ("/ws-api/v3?timeUnit=SECONDS", 400),
            ("/ws-api/v3?responseFormat=sbe", 400),
        ):
            assert await handshake_status(sim, target) == status, target
        async with connect(sim, "/ws-api/v3?timeUnit=millisecond") as client:
            assert (await client.call("ping"))["status"] == 200


# --- connection rules under virtual time -----------------------------------------------------


@attrs.define
class RawClient:
    """A bare wsproto client: it answers pings only when told to."""

    stream: trio.abc.Stream
    conn: WSConnection = attrs.field(factory=lambda: WSConnection(ConnectionType.CLIENT))
    pending: deque[Event] = attrs.field(factory=deque)

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.conn.send(event))

    async def next_event(self) -> Event | None:
        while not self.pending:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.conn.receive_data(bytes(data))
            self.pending.extend(self.conn.events())
        return self.pending.popleft()


@asynccontextmanager
async def connect_raw(sim: Sim) -> AsyncIterator[RawClient]:
    async with trio.open_nursery() as nursery:
        client_stream, server_stream = trio.testing.memory_stream_pair()
        nursery.start_soon(
            functools.partial(handle_ws_api_stream, server_stream, sim.ctx, remote_ip=IP)
        )
        client = RawClient(client_stream)
        await client.send(Request(host="localhost", target="/ws-api/v3"))
        reply = await client.next_event()
        assert isinstance(reply, AcceptConnection), reply
        try:
            yield client
        finally:
            nursery.cancel_scope.cancel()


async def test_silent_client_is_closed_60_s_after_the_first_unanswered_ping(
    autojump_clock: trio.abc.Clock,
) -> None:
    sim = make_sim()
    pings: list[tuple[float, bytes]] = []
    closed: tuple[float, int] | None = None
    with trio.fail_after(300):
        async with connect_raw(sim) as client:
            assert trio.current_time() == 0.0
            while closed is None:
                event = await client.next_event()
                assert event is not None
                if isinstance(event, Ping):
                    pings.append((trio.current_time(), bytes(event.payload)))
                    # Unsolicited pongs are allowed but prove nothing.
                    await client.send(Pong(payload=b""))
                    await client.send(Pong(payload=b"not-the-payload"))
                elif isinstance(event, CloseConnection):
                    closed = (trio.current_time(), event.code)
    assert [t for t, _ in pings] == [20.0, 40.0, 60.0]
    assert all(len(p) == 12 for _, p in pings)
    assert len({p for _, p in pings}) == 3
    assert closed == (80.0, 1008)


async def test_a_pong_echoing_the_latest_ping_keeps_the_connection(
    autojump_clock: trio.abc.Clock,
) -> None:
    sim = make_sim()
    with trio.fail_after(300):
        async with connect_raw(sim) as client:
            with trio.move_on_after(150):
                while True:
                    event = await client.next_event()
                    assert not isinstance(event, CloseConnection)
                    if isinstance(event, Ping) and trio.current_time() in (60.0, 120.0):
                        await client.send(event.response())  # settles the earlier pings too
            (info,) = sim.ctx.connections()
            assert trio.current_time() == 150.0
            assert info.outstanding_pings == 1  # the ping of 140.0 is still unanswered


async def test_client_that_answers_pings_stays_connected_for_10_minutes(
    autojump_clock: trio.abc.Clock,
) -> None:
    sim = make_sim()
    with trio.fail_after(900):
        async with connect(sim) as client:
            await trio.sleep(610)  # trio-websocket answers the 30 pings meanwhile
            answer = await client.call("time")
            (info,) = sim.ctx.connections()
    assert answer["result"] == {"serverTime": EPOCH + 610_000}
    assert info.outstanding_pings == 0


async def test_age_cap_sends_server_shutdown_then_closes_with_1001(
    autojump_clock: trio.abc.Clock,
) -> None:
    sim = make_sim(WsApiConfig(max_age_s=3600))
    with trio.fail_after(7200):
        async with connect(sim) as client:
            notice = await client.next_frame()
            assert trio.current_time() == 3600.0
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await client.next_frame()
    assert notice == {"event": {"e": "serverShutdown", "E": EPOCH + 3_600_000}}
    assert closed.value.reason is not None
    assert closed.value.reason.code == 1001
    assert sim.ctx.connections() == ()


async def test_shutdown_all_is_a_planned_close(autojump_clock: trio.abc.Clock) -> None:
    sim = make_sim()
    with trio.fail_after(10):
        async with connect(sim) as client:
            assert (await client.call("ping"))["status"] == 200
            assert sim.ctx.shutdown_all() == 1
            notice = await client.next_frame()
            with pytest.raises(trio_websocket.ConnectionClosed):
                await client.next_frame()
    assert cast("Json", notice["event"])["e"] == "serverShutdown"


# --- conformance and a real socket ---------------------------------------------------------


@pytest.mark.shared
async def test_frames_have_the_documented_shapes(autojump_clock: trio.abc.Clock) -> None:
    samples_path = SHARED_DIR / "binance" / "samples.json"
    if not samples_path.is_file():
        pytest.skip("../shared is absent: conformance layer skipped")
    samples = cast("dict[str, Json]", json.loads(samples_path.read_text()))
    sim = make_sim()
    with trio.fail_after(10):
        async with connect(sim) as client:
            logon = await client.call("session.logon", sim.ed_signed())
            subscribed = await client.call("userDataStream.subscribe")
            sim.rest_sell()
            placed = await client.call("order.place", {**BUY_60000, "timestamp": EPOCH})
            subscriptions = await client.call("session.subscriptions")
            unsubscribed = await client.call("userDataStream.unsubscribe")
            too_big = {**BUY_60000, "quantity": "100.00000", "timestamp": EPOCH}
            broke = await client.call("order.place", too_big)

    def keys(value: object) -> list[str]:
        return list(cast("Json", value))

    assert keys(logon) == [*keys(samples["wsapi.session.logon.response"]), "rateLimits"]
    assert keys(logon["result"]) == keys(samples["wsapi.session.logon.response"]["result"])
    assert subscribed["result"] == samples["wsapi.userDataStream.subscribe.response"]["result"]
    assert keys(placed) == keys(samples["wsapi.order.place.response.full"])
    full = cast("Json", samples["wsapi.order.place.response.full"]["result"])
    assert set(keys(full)) <= set(keys(placed["result"]))
    assert subscriptions["result"] == [{"subscriptionId": 0}]
    assert unsubscribed["result"] == samples["wsapi.userDataStream.unsubscribe.response"]["result"]
    sample_report = cast("Json", samples["user.executionReport"]["event"])
    report = next(f for f in client.frames if "event" in f)
    assert keys(report) == keys(samples["user.executionReport"])
    assert set(keys(report["event"])) == set(keys(sample_report)) - {"v"}  # v: STP only
    oap = next(
        f
        for f in client.frames
        if cast("Json", f.get("event", {})).get("e") == "outboundAccountPosition"
    )
    assert keys(oap["event"]) == keys(samples["user.outboundAccountPosition"]["event"])
    terminated = client.frames[-3]
    assert keys(terminated["event"]) == keys(samples["user.eventStreamTerminated"]["event"])
    assert keys(broke) == keys(samples["wsapi.response.error"])
    assert keys(broke["error"]) == keys(samples["wsapi.response.error"]["error"])


async def test_real_socket_round_trip() -> None:
    sim = make_sim()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_ws_api, sim.ctx)
            async with trio_websocket.open_websocket(
                "127.0.0.1", port, "/ws-api/v3", use_ssl=False
            ) as ws:
                await ws.send_message('{"id":"a1","method":"time"}')
                answer = json.loads(await ws.get_message())
                (info,) = sim.ctx.connections()
            nursery.cancel_scope.cancel()
    assert answer["id"] == "a1"
    assert answer["status"] == 200
    assert info.remote == "127.0.0.1"


_UPGRADE = (
    "GET {} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE / HTTP/1.1\r\n\r\n",  # trio-websocket's own 400 fails to send
        _UPGRADE.format("/nope").encode(),  # our 404 fails to send
        _UPGRADE.format("/ws-api/v3").encode(),  # our 101 fails to send
    ],
)
async def test_a_client_vanishing_mid_handshake_does_not_take_the_server_down(
    request_bytes: bytes, autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    sim = make_sim()
    caplog.set_level(logging.INFO, logger="genesis.sim.ws_api")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:  # a server-side error would surface here
            client_stream, server_stream = memory_pair()
            nursery.start_soon(
                functools.partial(
                    handle_ws_api_stream, server_stream, sim.ctx, remote_ip="10.9.8.7"
                )
            )
            await client_stream.send_all(request_bytes)
            await client_stream.aclose()
        assert "sim.wsapi.lost remote=10.9.8.7" in caplog.messages
        assert sim.ctx.connections() == ()
        async with connect(sim) as client:
            assert (await client.call("ping"))["status"] == 200
