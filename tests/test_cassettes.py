"""Replayed simulator sessions (VCR.py cassettes): every gateway method's parsing and error mapping.

``tests/cassettes/*.yaml`` were recorded by ``scripts/record_cassettes.py`` from the simulator
over loopback (one scenario per cassette). Here nothing runs but the gateway: each test opens
a cassette with ``record_mode="none"`` and a gateway over httpx's default transport, which
vcrpy patches, so every request is answered from the cassette, in recorded order among
identical requests, each answer once. Rules of this module:

- Offline: a request the cassette lacks raises vcrpy's ``CannotOverwriteExistingCassetteException``
  instead of going anywhere, and :func:`replay` installs a Trio socket factory and resolver that
  refuse (and count) any attempt to open a socket. No simulator is imported or started (a test
  checks this module's imports).
- Matching is on method, path and query with ``timestamp`` and ``signature`` filtered out, as
  recorded: the host, the credentials and the signed timestamp do not matter, so the replay
  uses ``http://sim.invalid`` and a virtual wall clock. Client order ids are the recorded ones.
- Expected figures come from the recorded answers (read back through vcrpy's ``Cassette``) or
  from Binance's documented codes and semantics, never from the gateway under test.
- Time is virtual (``autojump_clock``). A replayed request never yields to Trio, so virtual
  time only moves where the gateway itself sleeps (the limiter's 429 hold), and the wall clock
  the gateway is given follows it from :data:`REPLAY_EPOCH_MS`.
"""

from __future__ import annotations

import ast
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Final, NoReturn

import attrs
import orjson
import pytest
import trio
import trio.socket
import trio.testing
import vcr
from vcr.errors import CannotOverwriteExistingCassetteException

from genesis.config import Secret, Settings
from genesis.errors import (
    ExchangeRejectedError,
    ExchangeUnavailableError,
    IpBannedError,
    OrderOutcomeUnknownError,
    RateLimitedError,
    RetryableError,
)
from genesis.exchange.gateway import GatewayConfig, open_gateway
from genesis.exchange.signing import HmacSigner
from genesis.models.exchange_info import RateLimit, RateLimitType
from genesis.models.orders import OrderRequest, OrderSide, OrderStatus, OrderType

if TYPE_CHECKING:
    import socket
    from collections.abc import AsyncIterator, Awaitable, Callable

    from vcr.cassette import Cassette

    from genesis.exchange.gateway import Gateway
    from genesis.models.orders import Order

D = Decimal

CASSETTES: Final = Path(__file__).resolve().parent / "cassettes"
REPLAY: Final = vcr.VCR(
    cassette_library_dir=str(CASSETTES),
    serializer="yaml",
    record_mode="none",
    match_on=["method", "path", "query"],
    filter_query_parameters=["timestamp", "signature"],
    filter_headers=["X-MBX-APIKEY"],
)
REST_URL: Final = "http://sim.invalid"
"""Never resolves (RFC 2606); host and port are not matched."""
SIM_API_KEY: Final = "GenesisSimDefaultApiKey00000000000000000000000000000000000000000"
SIM_API_SECRET: Final = "GenesisSimDefaultSecret00000000000000000000000000000000000000000"
"""The simulator's documented default credentials (``genesis.sim.server.DEFAULT_API_*``), written
out so this module needs no simulator. The replay matches neither: ``X-MBX-APIKEY`` and
``signature`` are filtered."""
CONFIG: Final = GatewayConfig(time_sync_samples=1)
"""As recorded: one ``GET /api/v3/time`` per time sync."""
REPLAY_EPOCH_MS: Final = 1_767_225_600_000
"""The replay's wall clock at virtual time 0 (2026-01-01T00:00:00Z, a minute boundary)."""
SYMBOL: Final = "BTCUSDT"
_HEADER_LETTER: Final = {"SECOND": "S", "MINUTE": "M", "HOUR": "H", "DAY": "D"}
"""``X-MBX-USED-WEIGHT-(intervalNum)(intervalLetter)`` (Binance, "LIMITS")."""


def limit_buy(
    client_order_id: str, *, price: str = "50000", quantity: str = "0.001"
) -> OrderRequest:
    return OrderRequest.limit(
        symbol=SYMBOL,
        side=OrderSide.BUY,
        quantity=D(quantity),
        price=D(price),
        client_order_id=client_order_id,
    )


# --- the replay kit -------------------------------------------------------------------------------


class _NoNetwork(trio.abc.SocketFactory, trio.abc.HostnameResolver):
    """Refuses every socket and every name lookup, and remembers that it was asked."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def socket(
        self,
        family: socket.AddressFamily | int = trio.socket.AF_INET,
        type: socket.SocketKind | int = trio.socket.SOCK_STREAM,
        proto: int = 0,
    ) -> NoReturn:
        self.attempts.append(f"socket({family}, {type})")
        raise OSError("a cassette replay must not open sockets")

    async def getaddrinfo(
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> NoReturn:
        self.attempts.append(f"getaddrinfo({host!r}, {port!r})")
        raise OSError("a cassette replay must not resolve names")

    async def getnameinfo(
        self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int
    ) -> NoReturn:
        self.attempts.append(f"getnameinfo({sockaddr!r})")
        raise OSError("a cassette replay must not resolve names")


@attrs.frozen
class Answer:
    """One recorded interaction, typed: the request's key and the exchange's answer."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    headers: dict[str, str]
    body: object

    @property
    def wire(self) -> dict[str, object]:
        assert isinstance(self.body, dict), self.body
        return self.body

    @property
    def rows(self) -> list[dict[str, object]]:
        assert isinstance(self.body, list), self.body
        return self.body


def _answers(cassette: Cassette) -> list[Answer]:
    out: list[Answer] = []
    for request, response in zip(cassette.requests, cassette.responses, strict=True):
        headers = {
            str(name).lower(): str(values[0]) for name, values in response["headers"].items()
        }
        out.append(
            Answer(
                method=str(request.method),
                path=str(request.path),
                query={str(k): str(v) for k, v in request.query},
                status=int(response["status"]["code"]),
                headers=headers,
                body=orjson.loads(response["body"]["string"]),
            )
        )
    return out


@attrs.frozen
class Replay:
    """A gateway answered from one cassette."""

    gateway: Gateway
    cassette: Cassette
    answers: list[Answer]
    network: _NoNetwork

    def played(self) -> list[Answer]:
        """The answers played so far, in recorded order (= the order they were asked for)."""
        return [self.answers[i] for i in sorted(self.cassette.play_counts)]

    def last(self) -> Answer:
        """The answer the latest call got."""
        return self.played()[-1]


def wall_clock_ms() -> int:
    """The replay's wall clock (epoch ms): :data:`REPLAY_EPOCH_MS` plus Trio's virtual time."""
    return REPLAY_EPOCH_MS + round(trio.current_time() * 1000)


@asynccontextmanager
async def replay(name: str, *, prepare: bool = False) -> AsyncIterator[Replay]:
    """Open ``tests/cassettes/<name>.yaml`` (no recording) and a gateway answered from it."""
    network = _NoNetwork()
    old_factory = trio.socket.set_custom_socket_factory(network)
    old_resolver = trio.socket.set_custom_hostname_resolver(network)
    try:
        with (
            trio.fail_after(120),
            REPLAY.use_cassette(f"{name}.yaml", allow_playback_repeats=False) as cassette,
        ):
            async with open_gateway(
                Settings(),
                rest_url=REST_URL,
                api_key=Secret(SIM_API_KEY),
                signer=HmacSigner(Secret(SIM_API_SECRET)),
                config=CONFIG,
                wall_clock_ms=wall_clock_ms,
                prepare=prepare,
            ) as gateway:
                yield Replay(gateway, cassette, _answers(cassette), network)
    finally:
        trio.socket.set_custom_socket_factory(old_factory)
        trio.socket.set_custom_hostname_resolver(old_resolver)
    assert network.attempts == []


def _dec(wire: dict[str, object], key: str) -> Decimal:
    return D(str(wire[key]))


def assert_order_is(order: Order, wire: dict[str, object]) -> None:
    """``order`` says what the recorded order answer ``wire`` says (Binance's field meanings)."""
    assert order.exchange_order_id == wire["orderId"]
    # A cancel answer's own clientOrderId names the cancel; the order's is origClientOrderId.
    assert order.client_order_id == wire.get("origClientOrderId", wire["clientOrderId"])
    assert order.symbol == wire["symbol"]
    assert order.side.value == wire["side"]
    assert order.type.value == wire["type"]
    assert order.exchange_status == wire["status"]
    assert order.quantity == _dec(wire, "origQty")
    assert order.filled_quantity == _dec(wire, "executedQty")
    assert order.quote_filled_quantity == _dec(wire, "cummulativeQuoteQty")
    if order.type is OrderType.LIMIT:
        assert order.price == _dec(wire, "price")
        assert order.time_in_force is not None
        assert order.time_in_force.value == wire["timeInForce"]
    else:
        assert order.price is None  # Binance sends "0.00000000" for a MARKET order's price
    if "updateTime" in wire:
        assert (order.created_ms, order.updated_ms) == (wire["time"], wire["updateTime"])
    fills = wire.get("fills", [])
    assert isinstance(fills, list)
    assert [
        (f.price, f.quantity, f.commission, f.commission_asset, f.trade_id) for f in order.fills
    ] == [
        (D(f["price"]), D(f["qty"]), D(f["commission"]), f["commissionAsset"], f["tradeId"])
        for f in fills
    ]


# --- the happy path: every method once ----------------------------------------------------------


async def test_open_adopts_the_recorded_limits_and_server_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with replay("happy_path", prepare=True) as r:
        time_answer, info_answer = r.played()
        assert (time_answer.path, info_answer.path) == ("/api/v3/time", "/api/v3/exchangeInfo")
        server_ms = time_answer.wire["serverTime"]
        assert isinstance(server_ms, int)
        # One sample, answered at once (a replay takes no virtual time): the offset is exact.
        stats = r.gateway.statistics()
        assert stats.time_sync.synced
        assert stats.time_sync.best_rtt_ms == 0
        assert stats.time_sync.offset_ms == server_ms - REPLAY_EPOCH_MS
        assert r.gateway.server_time_ms() == server_ms
        # exchangeInfo's rateLimits became the limiter's limits; its usage header, the usage.
        rate_limits = info_answer.wire["rateLimits"]
        assert isinstance(rate_limits, list)
        buckets = {(b.type.value, b.interval): b for b in stats.limiter.buckets}
        assert set(buckets) == {
            (x["rateLimitType"], f"{x['intervalNum']}{_HEADER_LETTER[x['interval']]}")
            for x in rate_limits
        }
        for x in rate_limits:
            bucket = buckets[
                (x["rateLimitType"], f"{x['intervalNum']}{_HEADER_LETTER[x['interval']]}")
            ]
            assert bucket.limit == x["limit"]
        assert buckets[("REQUEST_WEIGHT", "1M")].used == int(
            info_answer.headers["x-mbx-used-weight-1m"]
        )
        info = r.gateway.cached_exchange_info
        assert info is not None
        symbols = info_answer.wire["symbols"]
        assert isinstance(symbols, list)
        assert sorted(info.symbols) == sorted(s["symbol"] for s in symbols)


async def test_public_endpoints_decode_the_recorded_answers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with replay("happy_path", prepare=True) as r:
        await r.gateway.ping()
        assert (r.last().path, r.last().body) == ("/api/v3/ping", {})

        server_time = await r.gateway.server_time()
        assert server_time == r.last().wire["serverTime"]

        stats = await r.gateway.sync_time()
        synced_to = r.last().wire["serverTime"]
        assert isinstance(synced_to, int)
        assert r.last().path == "/api/v3/time"
        assert stats.synced
        assert stats.offset_ms == synced_to - REPLAY_EPOCH_MS
        assert r.gateway.server_time_ms() == synced_to

        info = await r.gateway.exchange_info([SYMBOL])
        answer = r.last()
        assert answer.query == {"symbols": '["BTCUSDT"]'}
        wire = answer.wire
        assert info.server_time_ms == wire["serverTime"]
        rate_limits = wire["rateLimits"]
        assert isinstance(rate_limits, list)
        assert info.rate_limits == tuple(
            RateLimit(
                type=RateLimitType(x["rateLimitType"]),
                interval=x["interval"],
                interval_num=x["intervalNum"],
                limit=x["limit"],
            )
            for x in rate_limits
        )
        symbols = wire["symbols"]
        assert isinstance(symbols, list)
        assert [s["symbol"] for s in symbols] == [SYMBOL]
        btc_wire = symbols[0]
        btc = info.symbol(SYMBOL)
        assert btc is not None
        assert (btc.status, btc.base_asset, btc.quote_asset) == (
            btc_wire["status"],
            btc_wire["baseAsset"],
            btc_wire["quoteAsset"],
        )
        assert btc.order_types == frozenset(btc_wire["orderTypes"])
        filters = {f["filterType"]: f for f in btc_wire["filters"]}
        assert btc.filters.tick_size == D(filters["PRICE_FILTER"]["tickSize"])
        assert btc.filters.step_size == D(filters["LOT_SIZE"]["stepSize"])
        assert btc.filters.min_notional == D(filters["NOTIONAL"]["minNotional"])

        depth = await r.gateway.depth(SYMBOL, limit=5)
        answer = r.last()
        assert answer.query == {"symbol": SYMBOL, "limit": "5"}
        book = answer.wire
        assert depth.last_update_id == book["lastUpdateId"]
        for side, levels in (("bids", depth.bids), ("asks", depth.asks)):
            recorded = book[side]
            assert isinstance(recorded, list)
            assert [(lv.price, lv.quantity) for lv in levels] == [(D(p), D(q)) for p, q in recorded]
        assert depth.received_ms == wall_clock_ms()


async def test_order_lifecycle_decodes_every_recorded_order_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with replay("happy_path", prepare=True) as r:
        gw = r.gateway
        await gw.test_order(limit_buy("cassette-test-1"))  # returns None: nothing to decode
        assert (r.last().path, r.last().status, r.last().body) == ("/api/v3/order/test", 200, {})

        placed = await gw.place_order(limit_buy("cassette-limit-1"))
        assert r.last().query["newOrderRespType"] == "FULL"
        assert_order_is(placed, r.last().wire)
        assert (placed.exchange_status, placed.status) == ("NEW", OrderStatus.PENDING)
        assert placed.created_ms == r.last().wire["transactTime"]
        assert placed.latency_ms == 0.0  # a replayed answer takes no (virtual) time
        assert placed.exchange_order_id is not None

        by_client_id = await gw.get_order(SYMBOL, client_order_id="cassette-limit-1")
        assert_order_is(by_client_id, r.last().wire)
        by_order_id = await gw.get_order(SYMBOL, order_id=placed.exchange_order_id)
        assert r.last().query["orderId"] == str(placed.exchange_order_id)
        assert_order_is(by_order_id, r.last().wire)

        open_now = await gw.open_orders(SYMBOL)
        assert len(open_now) == len(r.last().rows) == 1
        for order, wire in zip(open_now, r.last().rows, strict=True):
            assert_order_is(order, wire)

        cancelled = await gw.cancel_order(SYMBOL, client_order_id="cassette-limit-1")
        assert_order_is(cancelled, r.last().wire)
        assert cancelled.client_order_id == "cassette-limit-1"
        assert r.last().wire["clientOrderId"] != "cassette-limit-1"  # the cancel's own id
        assert (cancelled.exchange_status, cancelled.status) == ("CANCELED", OrderStatus.CANCELLED)

        await gw.place_order(limit_buy("cassette-limit-2", price="49000"))
        await gw.place_order(limit_buy("cassette-limit-3", price="48000"))
        everywhere = await gw.open_orders()
        assert r.last().query == {"recvWindow": "5000"}  # no symbol: every symbol
        assert [o.client_order_id for o in everywhere] == ["cassette-limit-2", "cassette-limit-3"]
        for order, wire in zip(everywhere, r.last().rows, strict=True):
            assert_order_is(order, wire)

        swept = await gw.cancel_open_orders(SYMBOL)
        assert len(swept) == len(r.last().rows) == 2
        for order, wire in zip(swept, r.last().rows, strict=True):
            assert_order_is(order, wire)
        assert {o.status for o in swept} == {OrderStatus.CANCELLED}


async def test_a_market_fill_its_trades_and_the_account_decode(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with replay("happy_path", prepare=True) as r:
        market = await r.gateway.place_order(
            OrderRequest.market(
                symbol=SYMBOL,
                side=OrderSide.BUY,
                quantity=D("0.001"),
                client_order_id="cassette-market-1",
            ),
            expected_price=D("59000"),
        )
        wire = r.last().wire
        assert_order_is(market, wire)
        assert (market.exchange_status, market.status) == ("FILLED", OrderStatus.FILLED)
        assert market.fills
        average = _dec(wire, "cummulativeQuoteQty") / _dec(wire, "executedQty")
        assert market.average_price == average
        assert market.slippage_percent == (average - D("59000")) / D("59000") * 100

        assert market.exchange_order_id is not None
        trades = await r.gateway.my_trades(SYMBOL, order_id=market.exchange_order_id)
        assert r.last().query["orderId"] == str(market.exchange_order_id)
        rows = r.last().rows
        assert [
            (
                t.symbol, t.trade_id, t.order_id, t.price, t.quantity, t.quote_quantity,
                t.commission, t.commission_asset, t.time_ms, t.is_buyer, t.is_maker,
            )
            for t in trades
        ] == [
            (
                w["symbol"], w["id"], w["orderId"], _dec(w, "price"), _dec(w, "qty"),
                _dec(w, "quoteQty"), _dec(w, "commission"), w["commissionAsset"], w["time"],
                w["isBuyer"], w["isMaker"],
            )
            for w in rows
        ]  # fmt: skip
        assert [t.trade_id for t in trades] == [f.trade_id for f in market.fills]

        account = await r.gateway.account()
        wire = r.last().wire
        assert (account.can_trade, account.can_withdraw, account.can_deposit) == (
            wire["canTrade"],
            wire["canWithdraw"],
            wire["canDeposit"],
        )
        assert (account.account_type, account.update_time_ms) == (
            wire["accountType"],
            wire["updateTime"],
        )
        balances = wire["balances"]
        assert isinstance(balances, list)
        assert {a: (b.free, b.locked) for a, b in account.balances.items()} == {
            b["asset"]: (D(b["free"]), D(b["locked"])) for b in balances
        }


async def test_the_whole_session_replays_in_recorded_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with replay("happy_path", prepare=True) as r:
        gw = r.gateway
        await gw.ping()
        await gw.server_time()
        await gw.sync_time()
        await gw.exchange_info([SYMBOL])
        await gw.depth(SYMBOL, limit=5)
        await gw.test_order(limit_buy("cassette-test-1"))
        placed = await gw.place_order(limit_buy("cassette-limit-1"))
        assert placed.exchange_order_id is not None
        await gw.get_order(SYMBOL, client_order_id="cassette-limit-1")
        await gw.get_order(SYMBOL, order_id=placed.exchange_order_id)
        await gw.open_orders(SYMBOL)
        await gw.cancel_order(SYMBOL, client_order_id="cassette-limit-1")
        await gw.place_order(limit_buy("cassette-limit-2", price="49000"))
        await gw.place_order(limit_buy("cassette-limit-3", price="48000"))
        await gw.open_orders()
        await gw.cancel_open_orders(SYMBOL)
        market = await gw.place_order(
            OrderRequest.market(
                symbol=SYMBOL, side=OrderSide.BUY, quantity=D("0.001"),
                client_order_id="cassette-market-1",
            )
        )  # fmt: skip
        assert market.exchange_order_id is not None
        await gw.my_trades(SYMBOL, order_id=market.exchange_order_id)
        await gw.account()
        assert r.cassette.all_played
        stats = gw.statistics()
        assert stats.requests == stats.answered == len(r.answers)
        assert (stats.rejected, stats.failed, stats.resyncs) == (0, 0, 0)


# --- error mapping -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "code", "msg"),
    [
        pytest.param(
            lambda gw: gw.place_order(limit_buy("cassette-notional", price="5")),
            -1013,
            "Filter failure: NOTIONAL",
            id="filter-1013",
        ),
        pytest.param(
            lambda gw: gw.place_order(limit_buy("cassette-no-funds", quantity="30")),
            -2010,
            "Account has insufficient balance for requested action.",
            id="balance-2010",
        ),
        pytest.param(
            lambda gw: gw.get_order(SYMBOL, client_order_id="cassette-unknown"),
            -2013,
            "Order does not exist.",
            id="query-unknown-2013",
        ),
        pytest.param(
            lambda gw: gw.cancel_order(SYMBOL, order_id=987654321),
            -2011,
            "Unknown order sent.",
            id="cancel-unknown-2011",
        ),
    ],
)
async def test_rejections_keep_the_recorded_code_message_and_status(
    autojump_clock: trio.testing.MockClock,
    call: Callable[[Gateway], Awaitable[object]],
    code: int,
    msg: str,
) -> None:
    async with replay("rejections") as r:
        with pytest.raises(ExchangeRejectedError) as info:
            await call(r.gateway)
        answer = r.last()
        # Binance's documented code and message (errors.md), as the cassette recorded them.
        assert (answer.status, answer.wire) == (400, {"code": code, "msg": msg})
        assert type(info.value) is ExchangeRejectedError  # the request's fault: not retryable
        assert (info.value.code, info.value.msg, info.value.http_status) == (code, msg, 400)
        assert r.gateway.statistics().rejected == 1
        assert r.gateway.breaker.statistics().failures_in_window == 0


async def test_a_503_on_a_read_is_exchange_unavailable_and_the_next_read_succeeds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with replay("read_503") as r:
        with pytest.raises(ExchangeUnavailableError) as info:
            await r.gateway.account()
        answer = r.last()
        assert answer.status == 503
        assert isinstance(info.value, RetryableError)
        assert (info.value.code, info.value.msg, info.value.http_status) == (
            answer.wire["code"],
            answer.wire["msg"],
            503,
        )
        assert info.value.code == -1008  # SERVER_BUSY
        account = await r.gateway.account()
        balances = r.last().wire["balances"]
        assert isinstance(balances, list)
        assert {a: b.free for a, b in account.balances.items()} == {
            b["asset"]: D(b["free"]) for b in balances
        }
        assert r.cassette.all_played


async def test_execute_then_503_is_an_unknown_outcome_and_the_order_exists(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with replay("execute_then_503") as r:
        with pytest.raises(OrderOutcomeUnknownError) as info:
            await r.gateway.place_order(limit_buy("cassette-exec-503"))
        answer = r.last()
        assert (answer.status, answer.wire["code"]) == (503, -1007)  # TIMEOUT: status unknown
        assert info.value.client_order_id == "cassette-exec-503"
        assert (info.value.code, info.value.http_status) == (-1007, 503)
        assert str(answer.wire["msg"]) in info.value.reason
        # sent_at_ms is the signed timestamp: the local clock plus an offset of 0 (no sync).
        assert info.value.sent_at_ms == REPLAY_EPOCH_MS
        found = await r.gateway.get_order(SYMBOL, client_order_id="cassette-exec-503")
        assert_order_is(found, r.last().wire)
        assert found.exchange_status == "NEW"  # a 503 did not mean "not placed"
        assert r.gateway.statistics().unknown_outcomes == 1
        assert r.cassette.all_played


async def test_1021_resyncs_from_the_recorded_time_and_retries_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with replay("clock_skew") as r:
        order = await r.gateway.place_order(limit_buy("cassette-skewed"))
        rejected, time_answer, retried = r.played()
        # Binance's INVALID_TIMESTAMP: the request arrived more than 1 s ahead of its clock.
        assert (rejected.status, rejected.wire["code"]) == (400, -1021)
        assert rejected.query == retried.query  # the same order, re-signed
        assert time_answer.path == "/api/v3/time"
        assert_order_is(order, retried.wire)
        stats = r.gateway.statistics()
        assert (stats.resyncs, stats.requests, stats.answered, stats.rejected) == (1, 3, 2, 1)
        server_ms = time_answer.wire["serverTime"]
        assert isinstance(server_ms, int)
        assert stats.time_sync.offset_ms == server_ms - REPLAY_EPOCH_MS
        assert r.cassette.all_played


async def test_429_maps_retry_after_and_holds_the_next_request_that_long(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with replay("rate_limited") as r:
        for _ in range(5):
            await r.gateway.ping()
        with pytest.raises(RateLimitedError) as info:
            await r.gateway.ping()
        answer = r.last()
        assert answer.status == 429
        assert answer.wire["code"] == -1003  # TOO_MANY_REQUESTS
        retry_after_s = float(answer.headers["retry-after"])
        assert info.value.retry_after_s == retry_after_s
        assert str(answer.wire["msg"]) in str(info.value)
        assert isinstance(info.value, RetryableError)
        assert r.cassette.all_played
        # The gateway holds every request for Retry-After seconds; only then does the next one
        # leave, and the cassette (recorded to end at the 429) has no answer for it.
        held_at = trio.current_time()
        with pytest.raises(CannotOverwriteExistingCassetteException):
            await r.gateway.ping()
        assert trio.current_time() == held_at + retry_after_s


async def test_418_maps_the_ban_and_the_gateway_refuses_locally_afterwards(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with replay("ip_banned") as r:
        with pytest.raises(IpBannedError) as info:
            await r.gateway.ping()
        answer = r.last()
        assert answer.status == 418
        assert answer.wire["code"] == -1003
        retry_after_s = float(answer.headers["retry-after"])
        assert info.value.retry_after_s == retry_after_s
        # The ban's end is the exact time Binance's -1003 message names ("IP banned until
        # <ms>"), not the local clock plus the whole seconds of Retry-After.
        message = str(answer.wire["msg"])
        named = int(message.split("banned until ")[1].split(".")[0])
        assert info.value.until_ms == named
        assert named - wall_clock_ms() >= retry_after_s * 1000 - 1000
        assert str(answer.wire["msg"]) in str(info.value)
        with pytest.raises(IpBannedError):
            await r.gateway.ping()  # refused by the limiter: nothing sent, nothing played
        assert r.cassette.play_count == 1
        assert r.gateway.statistics().requests == 1


# --- the replay itself is offline ---------------------------------------------------------------


async def test_a_request_the_cassette_lacks_is_refused_not_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with replay("rejections") as r:
        with pytest.raises(CannotOverwriteExistingCassetteException):
            await r.gateway.ping()
        # One parameter off is another request.
        with pytest.raises(CannotOverwriteExistingCassetteException):
            await r.gateway.get_order(SYMBOL, client_order_id="cassette-unknown-2")
        assert r.cassette.play_count == 0
        assert r.network.attempts == []


async def test_each_recorded_answer_plays_once(autojump_clock: trio.testing.MockClock) -> None:
    async with replay("rejections") as r:
        with pytest.raises(ExchangeRejectedError):
            await r.gateway.get_order(SYMBOL, client_order_id="cassette-unknown")
        with pytest.raises(CannotOverwriteExistingCassetteException):
            await r.gateway.get_order(SYMBOL, client_order_id="cassette-unknown")
        assert r.cassette.play_count == 1


async def test_a_replayed_call_still_checkpoints_and_a_cancelled_one_sends_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # vcrpy answers without yielding to Trio; the gateway's own checkpoints must not depend on
    # the transport's.
    async with replay("rate_limited") as r:
        with trio.testing.assert_checkpoints():
            await r.gateway.ping()
        assert r.cassette.play_count == 1
        with trio.CancelScope() as cancel_scope:
            cancel_scope.cancel()
            await r.gateway.ping()
        assert cancel_scope.cancelled_caught
        assert r.cassette.play_count == 1  # cancelled before it was sent: nothing played


def test_this_module_needs_no_simulator() -> None:
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            imported.add(node.module)
    assert not {m for m in imported if m.startswith(("genesis.sim", "tests.gateway_support"))}
    assert "vcr" in imported
    # One cassette per scenario, all present.
    assert sorted(p.stem for p in CASSETTES.glob("*.yaml")) == [
        "clock_skew",
        "execute_then_503",
        "happy_path",
        "ip_banned",
        "rate_limited",
        "read_503",
        "rejections",
    ]
