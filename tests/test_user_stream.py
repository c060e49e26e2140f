"""The user data stream: WS API subscription, order and balance events, gaps, failures.

Rules for these tests (after trio-websocket's own test suite):

- the peer is the real simulator (:func:`genesis.sim.server.build_simulator`): its WS API
  answers our logon/subscribe, and orders placed straight through its exchange (the API the
  simulator's own tests use) produce the execution reports;
- time-dependent scenarios run in memory (``sim.connect_ws_memory``) under ``autojump_clock``
  and assert exact virtual times; the simulator's clock starts at :data:`EPOCH` at virtual 0.0,
  so the signed timestamps are always inside ``recvWindow``;
- each client connection goes through :class:`TapSocket`, a thin wrapper behind the
  ``WebSocket`` seam that lets a test inject frames (malformed ones), send requests of its own
  on the stream's connection (a foreign ``userDataStream.unsubscribe``) or stall it;
- one test uses a real socket on ``127.0.0.1:0`` (``run_simulator``);
- every test has a deadline on the trio clock.
"""

from __future__ import annotations

import functools
import logging
import urllib.parse
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, cast

import attrs
import orjson
import pytest
import trio
import trio.testing
import trio_websocket
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from genesis.config import Secret
from genesis.errors import ConnectError, ExchangeProtocolError
from genesis.exchange.signing import Ed25519Signer, HmacSigner, Signer
from genesis.exchange.user_stream import (
    UserStreamConfig,
    UserStreamEvent,
    UserStreamHandle,
    run_user_stream,
)
from genesis.exchange.ws_manager import CLOSE_ON_CANCEL_S
from genesis.models.account import Balance
from genesis.models.codec import (
    UserEventFrame,
    WsApiResponse,
    decode_account_position,
    decode_execution_report,
    decode_subscription_id,
    decode_user_event,
    decode_ws_api_frame,
    encode_ws_api_request,
)
from genesis.models.events import (
    AccountBalances,
    ExecutionReport,
    OrderUpdate,
    OrderUpdateSource,
    ServerShutdown,
    StreamTerminated,
    UserStreamState,
    UserStreamStatus,
)
from genesis.models.orders import Fill, OrderSide, OrderStatus, OrderType, TimeInForce
from genesis.resilience.backoff import BackoffPolicy
from genesis.resilience.circuit_breaker import CircuitBreaker
from genesis.sim.auth import ApiKey
from genesis.sim.clock import DEFAULT_VIRTUAL_EPOCH_MS
from genesis.sim.server import SimConfig, build_simulator, run_simulator

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from genesis.exchange.ws_manager import WebSocket
    from genesis.sim.server import Simulator

EPOCH = DEFAULT_VIRTUAL_EPOCH_MS
SIM_URL = "ws://sim.invalid/ws-api/v3"  # the memory connector never resolves it
LOGGER = "genesis.exchange.user_stream"
MAKER = "MakerKey00000000000000000000000000000000000000000000000000000001"
ED_KEY = "EdKey0000000000000000000000000000000000000000000000000000000001"

Json = dict[str, object]


# --- fakes behind the seams -------------------------------------------------------------------


@attrs.define(eq=False)
class TapSocket:
    """A trio-websocket client connection behind a tap: frames pass through a pump task.

    ``inject`` queues a frame as if the server had sent it; ``stalled`` swallows every frame
    the server sends (a connection that went silent); ``send_raw`` sends a request of the
    test's own on the stream's connection.
    """

    ws: trio_websocket.WebSocketConnection
    stalled: bool = False
    fail_sends: bool = False
    closed: trio_websocket.ConnectionClosed | None = None
    _send: trio.MemorySendChannel[str | bytes | None] = attrs.field(init=False)
    _recv: trio.MemoryReceiveChannel[str | bytes | None] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._send, self._recv = trio.open_memory_channel[str | bytes | None](256)

    async def pump(self) -> None:
        async with self._send:
            try:
                while True:
                    message = await self.ws.get_message()
                    if not self.stalled:
                        await self._send.send(message)
            except trio_websocket.ConnectionClosed as exc:
                self.closed = exc

    def inject(self, frame: str | bytes) -> None:
        self._send.send_nowait(frame)

    def hang_up(self) -> None:
        """After the frames queued so far, the connection reads as closed (1001)."""
        self._send.send_nowait(None)

    async def send_raw(self, text: str) -> None:
        await self.ws.send_message(text)

    async def get_message(self) -> str | bytes:
        try:
            message = await self._recv.receive()
        except trio.EndOfChannel:
            if self.closed is not None:
                raise self.closed from None
            raise trio_websocket.ConnectionClosed(
                trio_websocket.CloseReason(1006, "tap closed")
            ) from None
        if message is None:
            raise trio_websocket.ConnectionClosed(trio_websocket.CloseReason(1001, "going away"))
        return message

    async def send_message(self, message: str | bytes) -> None:
        if self.fail_sends:
            await trio.lowlevel.checkpoint()
            raise trio_websocket.ConnectionClosed(trio_websocket.CloseReason(1006, None))
        await self.ws.send_message(message)

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        await self.ws.aclose(code, reason)

    async def ping(self, payload: bytes | None = None) -> None:
        await self.ws.ping(payload)


@attrs.define(eq=False)
class SimConnector:
    """Connects to the simulator in memory.

    Refuses (OSError) while ``refuse`` is set, hangs while ``hang`` is set, and hands the
    next new connection to ``script`` (then forgets it) before the stream sees it.
    """

    sim: Simulator
    server_nursery: trio.Nursery
    refuse: bool = False
    hang: bool = False
    script: Callable[[TapSocket], None] | None = None
    attempts: list[float] = attrs.field(factory=list)
    sockets: list[TapSocket] = attrs.field(factory=list)

    async def __call__(
        self, nursery: trio.Nursery, url: str, *, message_queue_size: int, role: str = ""
    ) -> WebSocket:
        self.attempts.append(trio.current_time())
        if self.refuse:
            await trio.lowlevel.checkpoint()
            raise OSError(111, "Connection refused")
        if self.hang:
            await trio.sleep_forever()
        parts = urllib.parse.urlsplit(url)
        stream = self.sim.connect_ws_memory(self.server_nursery)
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            stream,  # type: ignore[arg-type]  # any trio Stream works; the annotation is narrower
            parts.hostname or "sim",
            parts.path,
            message_queue_size=message_queue_size,
        )
        tap = TapSocket(ws)
        if self.script is not None:
            self.script(tap)
            self.script = None
        nursery.start_soon(tap.pump)
        self.sockets.append(tap)
        return tap


@attrs.define(eq=False)
class Collector:
    """The publish sink: keeps every event and wakes waiters."""

    events: list[UserStreamEvent] = attrs.field(factory=list)
    _lot: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot)

    async def __call__(self, event: UserStreamEvent) -> None:
        self.events.append(event)
        self._lot.unpark_all()
        await trio.lowlevel.checkpoint()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._lot.park()

    async def wait_updates(self, count: int) -> None:
        await self.wait_until(lambda: len(self.updates()) >= count)

    def updates(self) -> list[OrderUpdate]:
        return [e for e in self.events if isinstance(e, OrderUpdate)]

    def balances(self) -> list[AccountBalances]:
        return [e for e in self.events if isinstance(e, AccountBalances)]

    def statuses(self) -> list[tuple[float, bool, str | None]]:
        return [
            (e.at, e.available, e.reason) for e in self.events if isinstance(e, UserStreamStatus)
        ]


@attrs.define(eq=False)
class GapRecorder:
    """The on_gap hook: records when it was called."""

    times: list[float] = attrs.field(factory=list)
    _lot: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot)

    async def __call__(self) -> None:
        self.times.append(trio.current_time())
        self._lot.unpark_all()
        await trio.lowlevel.checkpoint()

    async def wait_calls(self, count: int) -> None:
        while len(self.times) < count:
            await self._lot.park()


@attrs.define(eq=False)
class Harness:
    sim: Simulator
    connector: SimConnector
    events: Collector
    gaps: GapRecorder
    nursery: trio.Nursery
    makers: int = 0

    def hmac_signer(self) -> Signer:
        return HmacSigner(Secret(self.sim.api_secret))

    async def start(
        self,
        *,
        signer: Signer | None = None,
        api_key: str | None = None,
        config: UserStreamConfig | None = None,
        breaker: CircuitBreaker | None = None,
        nursery: trio.Nursery | None = None,
        reconcile: bool = True,
    ) -> UserStreamHandle:
        handle: UserStreamHandle = await (nursery or self.nursery).start(
            functools.partial(
                run_user_stream,
                SIM_URL,
                api_key=Secret(api_key or self.sim.api_key),
                signer=signer or self.hmac_signer(),
                publish=self.events,
                on_gap=self.gaps if reconcile else None,
                breaker=breaker,
                config=config,
                connector=self.connector,
                server_time_ms=self.sim.clock.now_ms,
            )
        )
        return handle

    def place(
        self,
        client_id: str,
        *,
        side: str = "BUY",
        qty: str = "0.00300000",
        price: str | None = "60000.00",
        type_: str = "LIMIT",
        tif: str | None = "GTC",
        api_key: str | None = None,
    ) -> None:
        self.sim.exchange.place_order(
            api_key or self.sim.api_key,
            symbol="BTCUSDT",
            side=side,
            type=type_,
            time_in_force=tif,
            quantity=qty,
            price=price,
            new_client_order_id=client_id,
            now_ms=self.sim.clock.now_ms(),
        )

    def maker_sell(self, qty: str, price: str = "60000.00") -> None:
        self.makers += 1
        self.place(f"maker-{self.makers}", side="SELL", qty=qty, price=price, api_key=MAKER)

    def cancel(self, client_id: str, cancel_id: str) -> None:
        self.sim.exchange.cancel_order(
            self.sim.api_key,
            symbol="BTCUSDT",
            orig_client_order_id=client_id,
            new_client_order_id=cancel_id,
            now_ms=self.sim.clock.now_ms(),
        )

    def ws_api_connections(self) -> list[tuple[int, tuple[tuple[int, str], ...]]]:
        return [(c.id, c.subscriptions) for c in self.sim.ws_api.connections()]


@asynccontextmanager
async def open_harness() -> AsyncIterator[Harness]:
    sim = build_simulator(SimConfig(epoch_ms=EPOCH))
    sim.exchange.add_account(MAKER)
    async with trio.open_nursery() as server_nursery, trio.open_nursery() as nursery:
        yield Harness(sim, SimConnector(sim, server_nursery), Collector(), GapRecorder(), nursery)
        nursery.cancel_scope.cancel()
        server_nursery.cancel_scope.cancel()


def summary(update: OrderUpdate) -> tuple[object, ...]:
    order = update.order
    return (order.client_order_id, order.exchange_status, order.filled_quantity, order.fills)


def fill(price: str, qty: str, commission: str, asset: str, trade_id: int) -> Fill:
    return Fill(
        price=Decimal(price),
        quantity=Decimal(qty),
        commission=Decimal(commission),
        commission_asset=asset,
        trade_id=trade_id,
    )


def messages(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= level]


# --- codec: the wire shapes --------------------------------------------------------------------

REPORT: Json = {
    "e": "executionReport",
    "E": 1499405658658,
    "s": "ETHBTC",
    "c": "mUvoqJxFIILMdfAW5iGSOW",
    "S": "BUY",
    "o": "LIMIT",
    "f": "GTC",
    "q": "1.00000000",
    "p": "0.10264410",
    "P": "0.00000000",
    "F": "0.00000000",
    "g": -1,
    "C": "",
    "x": "NEW",
    "X": "NEW",
    "r": "NONE",
    "i": 4293153,
    "l": "0.00000000",
    "z": "0.00000000",
    "L": "0.00000000",
    "n": "0",
    "N": None,
    "T": 1499405658657,
    "t": -1,
    "I": 8641984,
    "w": True,
    "m": False,
    "M": False,
    "O": 1499405658657,
    "Z": "0.00000000",
    "Y": "0.00000000",
    "Q": "0.00000000",
    "W": 1499405658657,
    "V": "NONE",
}


def test_execution_report_new_decodes_the_order_as_now_known() -> None:
    report = decode_execution_report(REPORT)
    order = report.order
    assert (order.client_order_id, order.exchange_order_id, order.symbol) == (
        "mUvoqJxFIILMdfAW5iGSOW",
        4293153,
        "ETHBTC",
    )
    assert (order.side, order.type, order.time_in_force) == (
        OrderSide.BUY,
        OrderType.LIMIT,
        TimeInForce.GTC,
    )
    assert order.price == Decimal("0.10264410")
    assert order.stop_price is None  # "0.00000000" on a LIMIT order
    assert order.quantity == Decimal(1)
    assert (order.status, order.exchange_status, order.fills) == (OrderStatus.PENDING, "NEW", ())
    assert (order.created_ms, order.updated_ms) == (1499405658657, 1499405658657)
    assert report.execution_type == "NEW"
    assert report.fill is None
    assert report.reject_reason is None
    assert (report.event_time_ms, report.execution_id, report.is_maker) == (
        1499405658658,
        8641984,
        False,
    )
    update = report.to_order_update()
    assert update == OrderUpdate(order=order, source=OrderUpdateSource.USER_STREAM)


def test_execution_report_trade_carries_the_last_fill_and_cumulative_figures() -> None:
    trade = {
        **REPORT,
        "x": "TRADE",
        "X": "PARTIALLY_FILLED",
        "l": "0.40000000",
        "L": "0.10264000",
        "n": "0.00040000",
        "N": "ETH",
        "t": 777,
        "z": "0.60000000",
        "Z": "0.06158400",
        "m": True,
    }
    report = decode_execution_report(trade)
    assert report.fill == fill("0.10264000", "0.4", "0.0004", "ETH", 777)
    assert report.order.fills == (report.fill,)
    assert report.order.filled_quantity == Decimal("0.6")
    assert report.order.average_price == Decimal("0.10264")
    assert report.order.status is OrderStatus.PARTIAL
    assert report.is_maker


def test_cancel_report_uses_the_original_client_id_and_reasons_are_kept() -> None:
    canceled = decode_execution_report(
        {**REPORT, "x": "CANCELED", "X": "CANCELED", "c": "cancel-req", "C": "orig-1"}
    )
    assert canceled.order.client_order_id == "orig-1"
    rejected = decode_execution_report(
        {**REPORT, "x": "REJECTED", "X": "REJECTED", "r": "INSUFFICIENT_BALANCES"}
    )
    assert rejected.to_order_update().reason == "INSUFFICIENT_BALANCES"
    expired = decode_execution_report(
        {**REPORT, "x": "EXPIRED", "X": "EXPIRED", "eR": "UNFILLED_IOC_QUANTITY_EXPIRED"}
    )
    assert expired.to_order_update().reason == "UNFILLED_IOC_QUANTITY_EXPIRED"
    prevented = decode_execution_report(
        {**REPORT, "x": "TRADE_PREVENTION", "X": "EXPIRED", "l": "0", "L": "0"}
    )
    assert prevented.fill is None
    assert prevented.to_order_update().reason == "TRADE_PREVENTION"
    market = decode_execution_report({**REPORT, "o": "MARKET", "p": "0.00000000"})
    assert market.order.price is None


@pytest.mark.parametrize(
    "event",
    [
        {k: v for k, v in REPORT.items() if k != "x"},  # missing key
        {**REPORT, "X": "SLEEPING"},  # unknown status
        {**REPORT, "q": 1.0},  # a float near money
        {**REPORT, "x": "TRADE", "L": "abc"},
        {**REPORT, "e": "trade"},
        [REPORT],
    ],
)
def test_malformed_execution_reports_raise_protocol_errors(event: object) -> None:
    with pytest.raises(ExchangeProtocolError, match="executionReport"):
        decode_execution_report(event)


def test_account_position_and_other_events_from_wrapped_frames() -> None:
    position = {
        "e": "outboundAccountPosition",
        "E": 1564034571105,
        "u": 1564034571073,
        "B": [{"a": "ETH", "f": "10000.000000", "l": "0.000000"}],
    }
    balances = decode_account_position(position)
    assert balances == AccountBalances(
        event_time_ms=1564034571105,
        update_time_ms=1564034571073,
        balances=(Balance(asset="ETH", free=Decimal(10000), locked=Decimal(0)),),
    )
    assert balances.balance("ETH") is not None
    assert balances.balance("BTC") is None
    wrapped = orjson.dumps({"subscriptionId": 3, "event": position})
    assert decode_user_event(wrapped) == balances
    assert decode_user_event(
        '{"subscriptionId":3,"event":{"e":"eventStreamTerminated","E":5}}'
    ) == StreamTerminated(subscription_id=3, event_time_ms=5)
    assert decode_user_event('{"event":{"e":"serverShutdown","E":6}}') == ServerShutdown(
        event_time_ms=6
    )
    unknown = decode_ws_api_frame('{"subscriptionId":0,"event":{"e":"balanceUpdate","E":1}}')
    assert unknown == UserEventFrame(subscription_id=0, event_type="balanceUpdate", event=None)
    assert decode_user_event('{"subscriptionId":0,"event":{"e":"listStatus"}}') is None
    for bad in (
        {**position, "B": [{"a": "ETH", "f": "x", "l": "0"}]},
        {**position, "B": {"a": "ETH"}},
        {**position, "B": ["ETH"]},
        {**position, "e": "balanceUpdate"},
    ):
        with pytest.raises(ExchangeProtocolError, match="outboundAccountPosition"):
            decode_account_position(bad)


def test_shared_samples_decode(shared_dir: Path) -> None:
    samples = cast(
        "dict[str, Json]", orjson.loads((shared_dir / "binance/samples.json").read_bytes())
    )
    for name, kind in (
        ("user.executionReport", ExecutionReport),
        ("user.outboundAccountPosition", AccountBalances),
        ("user.eventStreamTerminated", StreamTerminated),
    ):
        assert isinstance(decode_user_event(orjson.dumps(samples[name])), kind), name
    for name in ("user.balanceUpdate", "user.listStatus", "user.externalLockUpdate"):
        assert decode_user_event(orjson.dumps(samples[name])) is None, name
    answer = decode_ws_api_frame(orjson.dumps(samples["wsapi.userDataStream.subscribe.response"]))
    assert isinstance(answer, WsApiResponse)
    assert answer.ok
    assert decode_subscription_id(answer.result) == 0


def test_ws_api_answers_and_requests() -> None:
    error = decode_ws_api_frame(
        '{"id":7,"status":429,"error":{"code":-1003,"msg":"Too much request weight used",'
        '"data":{"serverTime":1,"retryAfter":60000}}}'
    )
    assert error == WsApiResponse(
        id=7,
        status=429,
        error_code=-1003,
        error_msg="Too much request weight used",
        retry_after_ms=60000,
    )
    assert not error.ok
    revoked = decode_ws_api_frame('{"id":null,"status":401,"error":{"code":-2015,"msg":"x"}}')
    assert isinstance(revoked, WsApiResponse)
    assert revoked.id is None
    assert orjson.loads(encode_ws_api_request(1, "ping")) == {"id": 1, "method": "ping"}
    assert orjson.loads(encode_ws_api_request(2, "a.b", {"timestamp": 5, "apiKey": "k"})) == {
        "id": 2,
        "method": "a.b",
        "params": {"timestamp": 5, "apiKey": "k"},
    }
    for frame in (
        b"not json",
        "[1]",
        '{"foo":1}',
        '{"event":{"E":1}}',
        '{"subscriptionId":"a","event":{"e":"x"}}',
        '{"id":true,"status":200}',
        '{"id":1,"status":400,"error":"no"}',
    ):
        with pytest.raises(ExchangeProtocolError):
            decode_ws_api_frame(frame)
    with pytest.raises(ExchangeProtocolError, match="answer"):
        decode_user_event('{"id":1,"status":200,"result":{}}')
    with pytest.raises(ExchangeProtocolError, match="subscribe result"):
        decode_subscription_id({})


# --- order and balance events from the simulator ----------------------------------------------


async def test_order_lifecycle_becomes_typed_updates_and_balances(
    autojump_clock: trio.abc.Clock,
) -> None:
    with trio.fail_after(60):
        async with open_harness() as h:
            handle = await h.start()
            assert trio.current_time() == 0.0
            stats = handle.statistics()
            assert (stats.state, stats.subscribed, stats.subscription_id) == (
                UserStreamState.SUBSCRIBED,
                True,
                0,
            )
            assert h.ws_api_connections() == [(1, ((0, h.sim.api_key),))]

            h.maker_sell("0.00200000")
            h.place("buy-1")  # 0.003 at 60000: 0.002 fills against the maker, 0.001 rests
            await h.events.wait_updates(2)
            await trio.sleep(1)
            h.cancel("buy-1", "cancel-1")
            h.maker_sell("0.00100000", price="61000.00")
            h.place("buy-2", qty="0.00100000", price="61000.00")  # fills at once
            h.place("ioc-1", qty="0.00100000", price="59000.00", tif="IOC")  # nothing to take
            await h.events.wait_until(
                lambda: len(h.events.updates()) == 7 and len(h.events.balances()) == 4
            )
            assert trio.current_time() == 1.0

    zero = Decimal(0)
    assert [summary(u) for u in h.events.updates()] == [
        ("buy-1", "NEW", zero, ()),
        (
            "buy-1",
            "PARTIALLY_FILLED",
            Decimal("0.002"),
            (fill("60000", "0.002", "0.000002", "BTC", 1),),  # 0.1 % of what was bought
        ),
        ("buy-1", "CANCELED", Decimal("0.002"), ()),  # C, not the cancel's own id
        ("buy-2", "NEW", zero, ()),
        ("buy-2", "FILLED", Decimal("0.001"), (fill("61000", "0.001", "0.000001", "BTC", 2),)),
        ("ioc-1", "NEW", zero, ()),
        ("ioc-1", "EXPIRED", zero, ()),
    ]
    updates = h.events.updates()
    assert all(u.source is OrderUpdateSource.USER_STREAM for u in updates)
    assert [u.order.status for u in updates][-2:] == [OrderStatus.PENDING, OrderStatus.EXPIRED]
    assert updates[-1].order.time_in_force is TimeInForce.IOC
    assert updates[1].order.average_price == Decimal(60000)
    after_fill = h.events.balances()[0]
    assert after_fill.balance("BTC") == Balance(asset="BTC", free=Decimal("10.001998"), locked=zero)
    assert after_fill.balance("USDT") == Balance(
        asset="USDT", free=Decimal(1_000_000 - 120 - 60), locked=Decimal(60)
    )
    stats = handle.statistics()
    assert stats.events == {"executionReport": 7, "outboundAccountPosition": 4}
    assert stats.last_event_ms == EPOCH + 1000
    assert h.events.statuses() == [(0.0, True, None)]
    assert h.gaps.times == []  # the first subscription follows no gap


async def test_a_slow_sink_applies_backpressure_and_loses_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    gate = trio.Event()

    @attrs.define(eq=False)
    class SlowSink(Collector):
        async def __call__(self, event: UserStreamEvent) -> None:
            await gate.wait()
            await super().__call__(event)

    with trio.fail_after(60):
        async with open_harness() as h:
            h.events = SlowSink()
            h.nursery.start_soon(h.start)
            await trio.sleep(1)  # the status event waits for the gate
            for n in range(50):
                h.place(f"rest-{n}", qty="0.00100000", price="50000.00")
            await trio.sleep(5)
            assert h.events.updates() == []
            gate.set()
            await h.events.wait_updates(50)
    assert [u.order.client_order_id for u in h.events.updates()] == [f"rest-{n}" for n in range(50)]


# --- gaps: drops, terminations, shutdowns -----------------------------------------------------


async def test_dropped_connection_reconnects_after_backoff_and_reconciles_once(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    with trio.fail_after(60):
        async with open_harness() as h:
            handle = await h.start()
            await trio.sleep(10)
            assert h.sim.faults.drop_connections(ws_api=True) == 1
            await trio.sleep(0.5)
            stats = handle.statistics()
            assert (stats.state, stats.connected, stats.subscribed) == (
                UserStreamState.BACKOFF,
                False,
                False,
            )
            h.place("missed-1", qty="0.00100000", price="50000.00")  # while nobody listens
            await handle.wait_subscribed(2)
            assert trio.current_time() == 11.0
            h.place("seen-1", qty="0.00100000", price="50000.00")
            await h.events.wait_updates(1)
            stats = handle.statistics()
    assert h.connector.attempts == [0.0, 11.0]
    assert h.gaps.times == [11.0]
    assert [u.order.client_order_id for u in h.events.updates()] == ["seen-1"]
    assert (stats.reconnects, stats.subscriptions, stats.gaps, stats.connects) == (1, 2, 1, 2)
    assert stats.last_error is not None
    assert stats.last_error.startswith("ConnectionLostError: connection closed code=1006")
    assert h.events.statuses() == [
        (0.0, True, None),
        (10.0, False, stats.last_error),
        (11.0, True, None),
    ]
    warnings = messages(caplog, logging.WARNING)
    assert len(warnings) == 1
    assert warnings[0].startswith("user_stream.disconnect during=relay reason=ConnectionLostError")
    assert "user_stream.reconnect attempt=1 delay_s=1.0" in " ".join(messages(caplog))


async def test_event_stream_terminated_resubscribes_on_the_same_connection(
    autojump_clock: trio.abc.Clock,
) -> None:
    with trio.fail_after(60):
        async with open_harness() as h:
            handle = await h.start()
            await trio.sleep(5)
            # Someone else ends our subscription on our connection.
            (tap,) = h.connector.sockets
            await tap.send_raw('{"id":"foreign","method":"userDataStream.unsubscribe"}')
            await handle.wait_subscribed(2)
            assert trio.current_time() == 5.0
            h.place("after-1", qty="0.00100000", price="50000.00")
            await h.events.wait_updates(1)
            stats = handle.statistics()
    assert h.connector.attempts == [0.0]
    assert (stats.subscription_id, stats.resubscriptions, stats.connects) == (1, 1, 1)
    assert stats.unexpected_answers == 1  # the answer to the foreign request
    assert stats.events["eventStreamTerminated"] == 1
    assert h.gaps.times == [5.0]
    assert h.events.statuses() == [
        (0.0, True, None),
        (5.0, False, "eventStreamTerminated"),
        (5.0, True, None),
    ]


async def test_server_shutdown_reconnects_at_once_without_backoff(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    with trio.fail_after(60):
        async with open_harness() as h:
            handle = await h.start()
            await trio.sleep(7)
            assert h.sim.faults.shutdown_connections() == 1
            await handle.wait_subscribed(2)
            await h.gaps.wait_calls(1)
            stats = handle.statistics()
    assert h.connector.attempts == [0.0, 7.0]
    assert (stats.rotations, stats.reconnects) == (1, 0)
    assert h.gaps.times == [7.0]
    assert "user_stream.rotate reason=serverShutdown" in messages(caplog)
    assert messages(caplog, logging.WARNING) == []


async def test_a_server_shutdown_during_a_request_is_still_a_planned_reconnect(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)

    def shutdown(tap: TapSocket) -> None:
        tap.inject('{"event":{"e":"serverShutdown","E":1}}')
        tap.hang_up()  # the server closes before answering our subscribe

    with trio.fail_after(60):
        async with open_harness() as h:
            h.connector.script = shutdown
            handle = await h.start()
            stats = handle.statistics()
    assert h.connector.attempts == [0.0, 0.0]
    assert (stats.rotations, stats.reconnects, stats.subscriptions) == (1, 0, 1)
    assert messages(caplog, logging.WARNING) == []


async def test_connection_is_replaced_before_the_24_h_cut(autojump_clock: trio.abc.Clock) -> None:
    # 3590 s: not on the server's 20 s ping grid, so no ping crosses our close frame.
    config = UserStreamConfig(rotate_after_s=3590, keepalive_after_s=600)
    with trio.fail_after(8000):
        async with open_harness() as h:
            handle = await h.start(config=config)
            await handle.wait_subscribed(3)
            await h.gaps.wait_calls(2)
            stats = handle.statistics()
    assert h.connector.attempts == [0.0, 3590.0, 7180.0]
    assert (stats.rotations, stats.reconnects, stats.gaps) == (2, 0, 2)
    assert h.gaps.times == [3590.0, 7180.0]


async def test_an_exchange_error_in_on_gap_reconnects_and_reconciles_again(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    calls: list[float] = []

    async def reconcile() -> None:
        calls.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        if len(calls) == 1:
            raise ConnectError("REST is down too")

    with trio.fail_after(60):
        async with open_harness() as h:
            handle: UserStreamHandle = await h.nursery.start(
                functools.partial(
                    run_user_stream,
                    SIM_URL,
                    api_key=Secret(h.sim.api_key),
                    signer=h.hmac_signer(),
                    publish=h.events,
                    on_gap=reconcile,
                    connector=h.connector,
                    server_time_ms=h.sim.clock.now_ms,
                )
            )
            await trio.sleep(10)
            h.sim.faults.drop_connections(ws_api=True)
            await handle.wait_subscribed(3)
    # Dropped at 10: back at 11, where reconciling fails; the next attempt (2 s) reconciles.
    assert calls == [11.0, 13.0]
    assert h.connector.attempts == [0.0, 11.0, 13.0]
    assert messages(caplog, logging.WARNING)[-1] == (
        "user_stream.disconnect during=on_gap reason=ConnectError: REST is down too age_s=0.0"
    )


# --- keys ------------------------------------------------------------------------------------


async def test_ed25519_key_logs_on_then_subscribes_and_logs_on_again_after_logout(
    autojump_clock: trio.abc.Clock,
) -> None:
    private = Ed25519PrivateKey.generate()
    with trio.fail_after(60):
        async with open_harness() as h:
            h.sim.rest.add_api_key(ApiKey.ed25519(ED_KEY, private.public_key()))
            handle = await h.start(signer=Ed25519Signer(private_key=private), api_key=ED_KEY)
            (info,) = h.sim.ws_api.connections()
            assert (info.api_key, info.subscriptions) == (ED_KEY, ((0, ED_KEY),))
            h.place("ed-1", qty="0.00100000", price="50000.00", api_key=ED_KEY)
            await h.events.wait_updates(1)
            # A logout ends the logon-based subscription: log on again, then subscribe.
            await h.connector.sockets[0].send_raw('{"id":"out","method":"session.logout"}')
            await handle.wait_subscribed(2)
            await h.gaps.wait_calls(1)
            (info,) = h.sim.ws_api.connections()
            stats = handle.statistics()
    assert (info.api_key, info.subscriptions) == (ED_KEY, ((1, ED_KEY),))
    assert [u.order.client_order_id for u in h.events.updates()] == ["ed-1"]
    assert (stats.resubscriptions, stats.connects, stats.rejections) == (1, 1, 0)
    assert h.gaps.times == [0.0]


@pytest.mark.parametrize(
    ("api_key", "secret", "code"),
    [
        (None, "WrongSecret", -1022),  # signature for this request is not valid
        ("UnknownKey000000000000000000000000000000000000000000000000000001", None, -2015),
    ],
)
async def test_rejected_subscription_is_a_warning_and_retried_with_backoff(
    autojump_clock: trio.abc.Clock,
    caplog: pytest.LogCaptureFixture,
    api_key: str | None,
    secret: str | None,
    code: int,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with trio.fail_after(60):
        async with open_harness() as h:
            signer = HmacSigner(Secret(secret or h.sim.api_secret))
            handle = await h.start(signer=signer, api_key=api_key)
            assert trio.current_time() == 0.0  # started once the first attempt failed
            assert handle.statistics().state is UserStreamState.BACKOFF
            await trio.sleep(7.5)
            stats = handle.statistics()
    assert h.connector.attempts == [0.0, 1.0, 3.0, 7.0]
    assert (stats.rejections, stats.reconnects, stats.subscriptions) == (4, 4, 0)
    assert stats.last_error is not None
    assert f"Binance error {code}" in stats.last_error
    warnings = messages(caplog, logging.WARNING)
    assert len(warnings) == 4
    assert all(
        m.startswith("user_stream.subscribe_failed ")
        and "during=userDataStream.subscribe.signature" in m
        for m in warnings
    )
    assert h.sim.api_secret not in caplog.text


async def test_rate_limited_subscription_waits_for_retry_after(
    autojump_clock: trio.abc.Clock,
) -> None:
    with trio.fail_after(120):
        async with open_harness() as h:
            # The connection costs 2 and the subscribe 2: over a limit of 3 per minute.
            h.sim.faults.lower_limit("REQUEST_WEIGHT", "MINUTE", 1, 3)
            handle = await h.start(reconcile=False)
            await trio.sleep(30)
            h.sim.faults.lower_limit("REQUEST_WEIGHT", "MINUTE", 1, 6000)
            await handle.wait_subscribed()
            stats = handle.statistics()
    assert h.connector.attempts == [0.0, 60.0]  # retryAfter, the next minute; not 1 s
    assert stats.gaps == 1  # counted without a hook
    assert stats.last_error is not None
    assert stats.last_error.startswith("RateLimitedError: rate limited, retry after 60 s")


async def test_a_connect_that_hangs_times_out_and_backs_off(
    autojump_clock: trio.abc.Clock,
) -> None:
    with trio.fail_after(60):
        async with open_harness() as h:
            h.connector.hang = True
            handle = await h.start()
            assert trio.current_time() == 5.0  # the first attempt settled at its timeout
            await trio.sleep(10)
            stats = handle.statistics()
    assert h.connector.attempts == [0.0, 6.0, 13.0]  # 5 s timeout, then 1 s, 2 s
    assert stats.last_error == "ConnectError: connect timed out after 5 s"


async def test_a_connector_whose_sockets_cannot_send_is_a_bug_that_propagates(
    autojump_clock: trio.abc.Clock,
) -> None:
    @attrs.define
    class ReadOnly:
        async def get_message(self) -> str | bytes:
            await trio.sleep_forever()
            raise AssertionError  # pragma: no cover

        async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
            await trio.lowlevel.checkpoint()

        async def ping(self, payload: bytes | None = None) -> None:
            await trio.lowlevel.checkpoint()

    async def connector(
        nursery: trio.Nursery, url: str, *, message_queue_size: int, role: str = ""
    ) -> WebSocket:
        await trio.lowlevel.checkpoint()
        return ReadOnly()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            with pytest.raises(ExceptionGroup) as info:
                await nursery.start(
                    functools.partial(
                        run_user_stream,
                        SIM_URL,
                        api_key=Secret("k"),
                        signer=HmacSigner(Secret("s")),
                        publish=Collector(),
                        connector=connector,
                    )
                )
    assert info.group_contains(TypeError, match="cannot send", depth=None)


async def test_a_418_answer_waits_until_the_ban_ends(autojump_clock: trio.abc.Clock) -> None:
    def banned(tap: TapSocket) -> None:
        # What the server would say to our first request (id 1), preceded by an event.
        tap.inject('{"subscriptionId":0,"event":{"e":"listStatus","E":1}}')
        tap.inject(
            orjson.dumps(
                {
                    "id": 1,
                    "status": 418,
                    "error": {
                        "code": -1003,
                        "msg": "Way too much request weight used; IP banned until "
                        f"{EPOCH + 120_000}.",
                        "data": {"serverTime": EPOCH, "retryAfter": EPOCH + 120_000},
                    },
                }
            ).decode()
        )

    with trio.fail_after(200):
        async with open_harness() as h:
            h.connector.script = banned
            handle = await h.start()
            await handle.wait_subscribed()
            stats = handle.statistics()
    assert h.connector.attempts == [0.0, 120.0]
    assert (stats.rejections, stats.events) == (1, {"listStatus": 1})
    assert h.gaps.times == [120.0]


@pytest.mark.parametrize(
    ("how", "attempts", "error"),
    [
        ("revoked", [0.0, 6.0], "ExchangeRejectedError: Binance error -2015: Invalid API-key"),
        ("unsendable", [0.0, 31.0], "ConnectionLostError: connection closed code=1006"),
    ],
)
async def test_a_lost_session_is_replaced(
    autojump_clock: trio.abc.Clock, how: str, attempts: list[float], error: str
) -> None:
    with trio.fail_after(100):
        async with open_harness() as h:
            handle = await h.start()
            await trio.sleep(5)
            (tap,) = h.connector.sockets
            if how == "revoked":
                # Binance answers the next request of a session whose key was revoked so.
                tap.inject(
                    '{"id":null,"status":401,"error":{"code":-2015,'
                    '"msg":"Invalid API-key, IP, or permissions for action."}}'
                )
            else:
                tap.fail_sends = True  # the keepalive ping at 30 s cannot leave
            await handle.wait_subscribed(2)
            stats = handle.statistics()
    assert h.connector.attempts == attempts
    assert stats.last_error is not None
    assert stats.last_error.startswith(error)


# --- failures that never end the stream -------------------------------------------------------


async def test_connect_that_keeps_failing_warns_backs_off_exactly_and_never_raises(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    with trio.fail_after(200):
        async with open_harness() as h:
            h.connector.refuse = True
            handle = await h.start()
            assert trio.current_time() == 0.0
            stats = handle.statistics()
            assert (stats.state, stats.connected, stats.reconnects) == (
                UserStreamState.BACKOFF,
                False,
                1,
            )
            await trio.sleep(100)
            stats = handle.statistics()
            h.connector.refuse = False
            await handle.wait_subscribed()
            subscribed_at = trio.current_time()
            await h.gaps.wait_calls(1)
    assert h.connector.attempts == [0.0, 1.0, 3.0, 7.0, 15.0, 31.0, 61.0, 91.0, 121.0]
    assert subscribed_at == 121.0
    assert stats.state is UserStreamState.BACKOFF
    assert stats.reconnects == 8
    assert stats.last_error == (
        "ConnectError: connect failed: ConnectionRefusedError: [Errno 111] Connection refused"
    )
    warnings = messages(caplog, logging.WARNING)
    assert len(warnings) == 8
    assert warnings[0] == f"user_stream.connect_failed attempt=1 reason={stats.last_error}"
    assert h.events.statuses() == [(0.0, False, stats.last_error), (121.0, True, None)]
    assert h.gaps.times == [121.0]  # the tree went on without it: reconcile


async def test_breaker_refuses_attempts_while_open(autojump_clock: trio.abc.Clock) -> None:
    breaker = CircuitBreaker("ws_api")  # 5 failures in 30 s open it for 60 s
    with trio.fail_after(200):
        async with open_harness() as h:
            h.connector.refuse = True
            handle = await h.start(breaker=breaker)
            await trio.sleep(100)
            stats = handle.statistics()
    # 0, 1, 3, 7, 15 dial and fail; the breaker opens at 15 until 75: 31 and 61 are refused
    # without dialling; 91 is the half-open probe.
    assert h.connector.attempts == [0.0, 1.0, 3.0, 7.0, 15.0, 91.0]
    assert stats.reconnects == 8
    assert stats.last_error is not None
    assert stats.last_error.startswith("ConnectError")


async def test_a_silent_connection_is_detected_by_the_keepalive_ping(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    # A request timeout of 5 s: the dead ping's deadline is off the server's 20 s ping grid.
    config = UserStreamConfig(request_timeout_s=5)
    with trio.fail_after(200):
        async with open_harness() as h:
            handle = await h.start(config=config)
            await trio.sleep(65)
            (info,) = h.sim.ws_api.connections()
            assert info.requests == 3  # the subscribe and pings at 30 and 60
            h.connector.sockets[0].stalled = True  # frames stop arriving (half-open TCP)
            await handle.wait_subscribed(2)
            stats = handle.statistics()
    # Last frame at 60 (the ping's answer); ping at 90, unanswered by 95; reconnect at 96.
    assert h.connector.attempts == [0.0, 96.0]
    assert stats.last_error == "ReadTimeoutError: no answer to ping within 5 s"
    assert messages(caplog, logging.WARNING) == [
        f"user_stream.disconnect during=ping reason={stats.last_error} age_s=95.0"
    ]


async def test_malformed_frames_are_counted_logged_and_reconciled_never_fatal(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with trio.fail_after(60):
        async with open_harness() as h:
            handle = await h.start()
            await trio.sleep(2)
            (tap,) = h.connector.sockets
            tap.inject(b"\x00not json")
            tap.inject('{"subscriptionId":0,"event":{"e":"executionReport","E":1}}')
            tap.inject('{"hello":"world"}')
            tap.inject('{"subscriptionId":0,"event":{"e":"balanceUpdate","E":1}}')
            tap.inject('{"id":99999,"status":200,"result":{}}')
            tap.inject('{"subscriptionId":7,"event":{"e":"eventStreamTerminated","E":1}}')
            h.place("after-1", qty="0.00100000", price="50000.00")
            await h.events.wait_until(lambda: bool(h.events.balances()))
            await h.gaps.wait_calls(1)
            stats = handle.statistics()
    assert stats.malformed == 3  # the undecodable executionReport is not counted by type
    assert stats.events == {
        "executionReport": 1,
        "balanceUpdate": 1,
        "eventStreamTerminated": 1,  # not ours (subscription 7): ignored
        "outboundAccountPosition": 1,
    }
    assert stats.unexpected_answers == 1
    assert (stats.state, stats.connects) == (UserStreamState.SUBSCRIBED, 1)
    # An order update may have been lost: reconcile once, malformed_gap_delay_s later.
    assert h.gaps.times == [7.0]
    warnings = messages(caplog, logging.WARNING)
    assert [m.split(" reason=")[0] for m in warnings] == [
        "user_stream.malformed bytes=9",
        "user_stream.malformed bytes=58",
        "user_stream.malformed bytes=17",
    ]
    assert warnings[1].endswith("reason=executionReport: missing key 'x'")


async def test_cancellation_ends_the_subscription_and_closes(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="genesis.sim.ws_api")
    with trio.fail_after(60):
        async with open_harness() as h:
            async with trio.open_nursery() as nursery:
                await h.start(nursery=nursery)
                await trio.sleep(3)
                nursery.cancel_scope.cancel()
            # The close frame went out; its answer cannot be read any more (bounded wait).
            assert trio.current_time() == 3.0 + CLOSE_ON_CANCEL_S
            await trio.sleep(1)  # the simulator handles what reached it
    sim_messages = [m.split(" ", 1)[0] for m in caplog.messages]
    assert sim_messages[-2:] == ["sim.wsapi.unsubscribed", "sim.wsapi.disconnect"]


async def test_over_loopback_against_run_simulator() -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            sim_handle = await nursery.start(run_simulator, SimConfig(symbols=("BTCUSDT",)))
            events = Collector()
            gaps = GapRecorder()
            handle: UserStreamHandle = await nursery.start(
                functools.partial(
                    run_user_stream,
                    sim_handle.ws_api_url,
                    api_key=Secret(sim_handle.api_key),
                    signer=HmacSigner(Secret(sim_handle.api_secret)),
                    publish=events,
                    on_gap=gaps,
                    server_time_ms=sim_handle.sim.clock.now_ms,
                )
            )
            assert handle.statistics().state is UserStreamState.SUBSCRIBED
            (bid, _ask) = sim_handle.sim.exchange.top_of_book("BTCUSDT")
            assert bid is not None
            sim_handle.sim.exchange.place_order(
                sim_handle.api_key,
                symbol="BTCUSDT",
                side="BUY",
                type="LIMIT",
                time_in_force="GTC",
                quantity="0.00100000",
                price=bid[0],  # rests: a BUY at the best bid does not cross
                new_client_order_id="loop-1",
                now_ms=sim_handle.sim.clock.now_ms(),
            )
            await events.wait_until(lambda: bool(events.updates() and events.balances()))
            stats = handle.statistics()
            # Only our own close here: trio-websocket 0.12 never closes the TCP socket of a
            # client connection the server closed or dropped (a ResourceWarning), so drops and
            # shutdowns are tested in memory.
            nursery.cancel_scope.cancel()
    (update,) = events.updates()
    assert summary(update) == ("loop-1", "NEW", Decimal(0), ())
    assert events.balances()[0].balance("USDT") is not None
    assert (stats.connects, stats.reconnects, stats.subscriptions) == (1, 0, 1)
    assert gaps.times == []


def test_jitter_needs_an_rng() -> None:
    config = UserStreamConfig(backoff=BackoffPolicy(jitter=0.5))

    async def main() -> None:
        with pytest.raises(ValueError, match="rng"):
            await run_user_stream(
                SIM_URL,
                api_key=Secret("k"),
                signer=HmacSigner(Secret("s")),
                publish=Collector(),
                config=config,
            )

    trio.run(main)
