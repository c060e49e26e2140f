"""Conformance: the unmodified python-binance client (PyPI, 1.0.x) against the composed simulator.

The simulator runs in the test's Trio loop on 127.0.0.1 (:func:`run_simulator`, port 0); the
client runs in a worker thread (``trio.to_thread.run_sync``): the sync ``binance.Client`` over
``requests``, and the asyncio side (``AsyncClient``, ``BinanceSocketManager``,
``DepthCacheManager``, the WS API) inside ``asyncio.run`` in that thread. The client is pointed
at the simulator through its own URL attributes only: ``API_URL`` (REST; it appends
``/v3/<path>``), ``WS_API_URL`` (read by the constructor, so set on a subclass) and the socket
manager's ``STREAM_URL`` (it appends ``ws/<stream>`` or ``stream?streams=...``). Nothing of the
client is patched; one knob is turned: the WS API connection's receive ``TIMEOUT`` (its reader
notices a close only between receive timeouts, so closing would otherwise take 10 s).

``ThreadedWebsocketManager`` is not used: it builds its client with ``AsyncClient.create()``,
which pings the production API URL before any attribute can be changed (no network here).
python-binance's import-time DeprecationWarnings (websockets' legacy API) are filtered by the
project's pytest configuration (``pyproject.toml``), not here.

Bounds: every test runs under ``trio.fail_after``; requests use a 5 s timeout; every asyncio wait
is an ``asyncio.wait_for``. Trades are made on demand with market orders, so no test waits for
the market feed's own cadence.
"""

from __future__ import annotations

import asyncio
import functools
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

import pytest
import trio
from binance.async_client import AsyncClient
from binance.client import Client
from binance.exceptions import BinanceAPIException
from binance.ws.depthcache import DepthCacheManager
from binance.ws.streams import BinanceSocketManager

from genesis.sim.server import SimConfig, SimHandle, run_simulator
from tests.sim.threads import in_thread

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

Json = dict[str, object]
T = TypeVar("T")

TIMEOUT_S: Final = 5.0
TRADE_KEYS: Final = frozenset({"e", "E", "s", "t", "p", "q", "T", "m", "M"})
EXECUTION_REPORT_CORE: Final = frozenset(
    {"e", "E", "s", "c", "S", "o", "f", "q", "p", "x", "X", "i", "l", "z", "L", "n", "N", "T"}
)


@pytest.fixture
async def handle(nursery: trio.Nursery) -> SimHandle:
    """A fresh simulator (default account funded) on loopback, stopped when the test ends."""
    started: SimHandle = await nursery.start(run_simulator, SimConfig(seed=11))
    return started


def sync_client(
    handle: SimHandle, *, api_key: str | None = None, secret: str | None = None
) -> Client:
    """python-binance's sync client pointed at the simulator; no ping on construction."""
    client = Client(
        api_key or handle.api_key,
        secret or handle.api_secret,
        ping=False,
        requests_params={"timeout": TIMEOUT_S},
    )
    client.API_URL = handle.rest_url + "/api"
    client.session.trust_env = False  # no proxies from the environment: loopback only
    return client


def async_client_class(handle: SimHandle) -> type[AsyncClient]:
    """``AsyncClient`` with the simulator's URLs (``WS_API_URL`` is read by ``__init__``)."""
    return cast(
        "type[AsyncClient]",
        type(
            "SimAsyncClient",
            (AsyncClient,),
            {"API_URL": handle.rest_url + "/api", "WS_API_URL": handle.ws_api_url},
        ),
    )


async def run_asyncio(
    handle: SimHandle, body: Callable[[AsyncClient, BinanceSocketManager], Awaitable[T]]
) -> T:
    """Run ``body(client, socket_manager)`` in a worker thread's own asyncio loop."""

    async def main() -> T:
        client = async_client_class(handle)(
            handle.api_key, handle.api_secret, requests_params={"timeout": TIMEOUT_S}
        )
        # Its WS API reader notices a close only between receive timeouts (10 s by default),
        # so a shorter one speeds up the close. The same timeout bounds each WS API request,
        # though (across this thread and the trio loop's): 2 s, not 0.5 s, for a loaded CI core.
        client.ws_api.TIMEOUT = 2.0
        try:
            manager = BinanceSocketManager(client)
            manager.STREAM_URL = handle.stream_url + "/"
            return await body(client, manager)
        finally:
            await client.close_connection()

    return await trio.to_thread.run_sync(asyncio.run, main())


def api_error(call: Callable[[], object]) -> tuple[int, int, str]:
    """``(status, code, msg)`` of the ``BinanceAPIException`` that ``call`` must raise."""
    with pytest.raises(BinanceAPIException) as caught:
        call()
    exc = caught.value
    return exc.status_code, exc.code, exc.message


def balance(client: Client, asset: str) -> tuple[Decimal, Decimal]:
    row = client.get_asset_balance(asset=asset)
    return Decimal(row["free"]), Decimal(row["locked"])


# --- REST: market data --------------------------------------------------------------------------


async def test_market_data_endpoints(handle: SimHandle) -> None:
    def drive() -> Json:
        client = sync_client(handle)
        client.order_market_buy(symbol="BTCUSDT", quantity="0.01")  # a few trades to list
        before = int(time.time() * 1000)
        server_time = client.get_server_time()["serverTime"]
        after = int(time.time() * 1000)
        return {
            "ping": client.ping(),
            "time": (before, server_time, after),
            "info": client.get_exchange_info(),
            "symbol": client.get_symbol_info("BTCUSDT"),
            "missing": client.get_symbol_info("DOGEUSDT"),
            "book": client.get_order_book(symbol="BTCUSDT", limit=5),
            "klines": client.get_klines(
                symbol="BTCUSDT", interval=Client.KLINE_INTERVAL_1MINUTE, limit=3
            ),
            "trades": client.get_recent_trades(symbol="BTCUSDT", limit=3),
            "historical": client.get_historical_trades(symbol="BTCUSDT", limit=2),
            "agg": client.get_aggregate_trades(symbol="BTCUSDT", limit=2),
            "avg": client.get_avg_price(symbol="BTCUSDT"),
            "ticker": client.get_ticker(symbol="BTCUSDT"),
            "price": client.get_symbol_ticker(symbol="BTCUSDT"),
            "top": client.get_orderbook_ticker(symbol="BTCUSDT"),
        }

    with trio.fail_after(15):
        out = await in_thread(drive)
    assert out["ping"] == {}
    before, server_time, after = cast("tuple[int, int, int]", out["time"])
    assert before - 5 <= server_time <= after + 5
    info = cast("Json", out["info"])
    assert [s["symbol"] for s in cast("list[Json]", info["symbols"])] == [
        "BTCUSDT",
        "ETHUSDT",
        "BNBUSDT",
    ]
    assert {
        "rateLimitType": "REQUEST_WEIGHT",
        "interval": "MINUTE",
        "intervalNum": 1,
        "limit": 6000,
    } in cast("list[Json]", info["rateLimits"])
    symbol = cast("Json", out["symbol"])
    assert (symbol["baseAsset"], symbol["quoteAsset"], symbol["status"]) == (
        "BTC",
        "USDT",
        "TRADING",
    )
    filters = {f["filterType"]: f for f in cast("list[Json]", symbol["filters"])}
    assert {"PRICE_FILTER", "LOT_SIZE", "MARKET_LOT_SIZE", "NOTIONAL"} <= set(filters)
    assert Decimal(cast("str", filters["PRICE_FILTER"]["tickSize"])) == Decimal("0.01")
    assert out["missing"] is None

    book = cast("Json", out["book"])
    bids = [Decimal(p) for p, _ in cast("list[list[str]]", book["bids"])]
    asks = [Decimal(p) for p, _ in cast("list[list[str]]", book["asks"])]
    assert (len(bids), len(asks)) == (5, 5)
    assert bids == sorted(bids, reverse=True)
    assert asks == sorted(asks)
    assert bids[0] < asks[0]

    for row in cast("list[list[object]]", out["klines"]):
        assert len(row) == 12
        open_ms, close_ms = cast("int", row[0]), cast("int", row[6])
        assert open_ms % 60_000 == 0
        assert close_ms == open_ms + 59_999
        low, high = Decimal(cast("str", row[3])), Decimal(cast("str", row[2]))
        assert low <= Decimal(cast("str", row[1])) <= high
    trades = cast("list[Json]", out["trades"])
    assert 1 <= len(trades) <= 3
    assert set(trades[0]) == {
        "id",
        "price",
        "qty",
        "quoteQty",
        "time",
        "isBuyerMaker",
        "isBestMatch",
    }
    assert len(cast("list[Json]", out["historical"])) <= 2
    assert set(cast("list[Json]", out["agg"])[0]) == {"a", "p", "q", "f", "l", "T", "m", "M"}
    assert set(cast("Json", out["avg"])) == {"mins", "price", "closeTime"}
    ticker = cast("Json", out["ticker"])
    assert ticker["symbol"] == "BTCUSDT"
    assert Decimal(cast("str", ticker["lowPrice"])) <= Decimal(cast("str", ticker["highPrice"]))
    assert cast("Json", out["price"])["symbol"] == "BTCUSDT"
    top = cast("Json", out["top"])
    assert Decimal(cast("str", top["bidPrice"])) < Decimal(cast("str", top["askPrice"]))


# --- REST: trading --------------------------------------------------------------------------------


async def test_order_lifecycle_and_balances(handle: SimHandle) -> None:
    def drive() -> Json:
        client = sync_client(handle)
        out: Json = {"account": client.get_account()}
        usdt_before, _ = balance(client, "USDT")
        limit = client.create_order(
            symbol="BTCUSDT",
            side=Client.SIDE_BUY,
            type=Client.ORDER_TYPE_LIMIT,
            timeInForce=Client.TIME_IN_FORCE_GTC,
            quantity="0.01",
            price="50000",
            newClientOrderId="conformance-limit-1",
        )
        out["limit"] = limit
        out["locked"] = balance(client, "USDT")
        out["by_id"] = client.get_order(symbol="BTCUSDT", orderId=limit["orderId"])
        out["by_client_id"] = client.get_order(
            symbol="BTCUSDT", origClientOrderId="conformance-limit-1"
        )
        out["open"] = client.get_open_orders(symbol="BTCUSDT")
        out["cancel"] = client.cancel_order(symbol="BTCUSDT", orderId=limit["orderId"])
        out["open_after"] = client.get_open_orders(symbol="BTCUSDT")
        out["unlocked"] = balance(client, "USDT")
        btc_before, _ = balance(client, "BTC")
        usdt_mid, _ = balance(client, "USDT")
        market = client.create_order(
            symbol="BTCUSDT", side=Client.SIDE_BUY, type=Client.ORDER_TYPE_MARKET, quantity="0.01"
        )
        out["market"] = market
        out["btc"] = (btc_before, balance(client, "BTC")[0])
        out["usdt"] = (usdt_before, usdt_mid, balance(client, "USDT")[0])
        out["quote"] = client.order_market_sell(symbol="BTCUSDT", quoteOrderQty="100")
        out["all"] = client.get_all_orders(symbol="BTCUSDT")
        return out

    with trio.fail_after(15):
        out = await in_thread(drive)

    account = cast("Json", out["account"])
    funded = {b["asset"]: b["free"] for b in cast("list[Json]", account["balances"])}
    assert funded == {
        "BTC": "10.00000000",
        "ETH": "100.00000000",
        "BNB": "1000.00000000",
        "USDT": "1000000.00000000",
    }
    assert account["canTrade"] is True

    limit = cast("Json", out["limit"])
    assert (limit["status"], limit["clientOrderId"], limit["price"]) == (
        "NEW",
        "conformance-limit-1",
        "50000.00000000",
    )
    assert out["locked"] == (Decimal("999500"), Decimal("500"))
    for key in ("by_id", "by_client_id"):
        got = cast("Json", out[key])
        assert (got["orderId"], got["status"], got["isWorking"]) == (limit["orderId"], "NEW", True)
    assert [o["orderId"] for o in cast("list[Json]", out["open"])] == [limit["orderId"]]
    cancel = cast("Json", out["cancel"])
    assert (cancel["status"], cancel["origClientOrderId"]) == ("CANCELED", "conformance-limit-1")
    assert out["open_after"] == []
    assert out["unlocked"] == (Decimal("1000000"), Decimal("0"))

    market = cast("Json", out["market"])
    assert (market["status"], market["executedQty"]) == ("FILLED", "0.01000000")
    fills = cast("list[Json]", market["fills"])
    assert sum(Decimal(cast("str", f["qty"])) for f in fills) == Decimal("0.01")
    fee_btc = sum(
        (Decimal(cast("str", f["commission"])) for f in fills if f["commissionAsset"] == "BTC"),
        Decimal(0),
    )
    btc_before, btc_after = cast("tuple[Decimal, Decimal]", out["btc"])
    assert btc_after == btc_before + Decimal("0.01") - fee_btc
    usdt_before, usdt_mid, usdt_after = cast("tuple[Decimal, Decimal, Decimal]", out["usdt"])
    assert usdt_mid == usdt_before
    assert usdt_after == usdt_mid - Decimal(cast("str", market["cummulativeQuoteQty"]))

    quote = cast("Json", out["quote"])
    assert quote["status"] in ("FILLED", "EXPIRED")
    assert Decimal(cast("str", quote["cummulativeQuoteQty"])) <= Decimal(100)
    assert Decimal(cast("str", quote["origQuoteOrderQty"])) == Decimal(100)
    statuses = [(o["type"], o["status"]) for o in cast("list[Json]", out["all"])]
    assert statuses[:2] == [("LIMIT", "CANCELED"), ("MARKET", "FILLED")]
    assert len(statuses) == 3


async def test_test_orders_validate_without_trading(handle: SimHandle) -> None:
    def drive() -> Json:
        client = sync_client(handle)
        plain = client.create_test_order(
            symbol="BTCUSDT",
            side="BUY",
            type="LIMIT",
            timeInForce="GTC",
            quantity="0.01",
            price="50000",
        )
        rates = client.create_test_order(
            symbol="BTCUSDT",
            side="SELL",
            type="MARKET",
            quantity="0.01",
            computeCommissionRates=True,
        )
        refused = api_error(
            lambda: client.create_test_order(
                symbol="BTCUSDT",
                side="BUY",
                type="LIMIT",
                timeInForce="GTC",
                quantity="0.000001",
                price="50000",
            )
        )
        return {
            "plain": plain,
            "rates": rates,
            "refused": refused,
            "orders": client.get_all_orders(symbol="BTCUSDT"),
        }

    with trio.fail_after(15):
        out = await in_thread(drive)
    assert out["plain"] == {}
    rates = cast("Json", out["rates"])
    assert set(rates) == {
        "standardCommissionForOrder",
        "specialCommissionForOrder",
        "taxCommissionForOrder",
        "discount",
    }
    assert set(cast("Json", rates["standardCommissionForOrder"])) == {"maker", "taker"}
    assert out["refused"] == (400, -1013, "Filter failure: LOT_SIZE")
    assert out["orders"] == []  # nothing was placed


async def test_binance_api_exceptions_carry_documented_codes(handle: SimHandle) -> None:
    def drive() -> dict[str, tuple[int, int, str]]:
        client = sync_client(handle)
        limit = functools.partial(
            client.create_order, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC"
        )
        errors = {
            "tick": api_error(lambda: limit(quantity="0.01", price="60000.005")),
            "notional": api_error(lambda: limit(quantity="0.00001", price="50000")),
            "balance": api_error(lambda: limit(quantity="100", price="60000")),
            "symbol": api_error(lambda: client.get_order_book(symbol="NOPEUSDT")),
            "unknown_order": api_error(
                lambda: client.cancel_order(symbol="BTCUSDT", orderId=424242)
            ),
        }
        wrong_secret = sync_client(handle, secret="not-the-secret")
        errors["signature"] = api_error(wrong_secret.get_account)
        unknown_key = sync_client(handle, api_key="UnknownKey" + "0" * 54)
        errors["key"] = api_error(unknown_key.get_account)
        late = sync_client(handle)
        late.timestamp_offset = -20_000  # 20 s behind, beyond python-binance's recvWindow 10 s
        errors["late"] = api_error(late.get_account)
        early = sync_client(handle)
        early.timestamp_offset = 5_000
        errors["early"] = api_error(early.get_account)
        return errors

    with trio.fail_after(15):
        errors = await in_thread(drive)
    assert errors == {
        "tick": (400, -1013, "Filter failure: PRICE_FILTER"),
        "notional": (400, -1013, "Filter failure: NOTIONAL"),
        "balance": (400, -2010, "Account has insufficient balance for requested action."),
        "symbol": (400, -1121, "Invalid symbol."),
        "unknown_order": (400, -2011, "Unknown order sent."),
        "signature": (400, -1022, "Signature for this request is not valid."),
        "key": (401, -2015, "Invalid API-key, IP, or permissions for action."),
        "late": (400, -1021, "Timestamp for this request is outside of the recvWindow."),
        "early": (400, -1021, "Timestamp for this request was 1000ms ahead of the server's time."),
    }


async def test_faults_surface_as_python_binance_exceptions(handle: SimHandle) -> None:
    """Clock skew (-1021), execute-then-503 (-1007; the order exists), halt, lowered limit (429)."""
    with trio.fail_after(15):
        client = await in_thread(sync_client, handle)
        handle.faults.clock_skew(-3000)  # the simulator runs 3 s behind the client
        skewed = await in_thread(api_error, client.get_account)
        assert skewed == (
            400,
            -1021,
            "Timestamp for this request was 1000ms ahead of the server's time.",
        )
        handle.faults.clock_skew(0)

        handle.faults.execute_then_503()
        unknown = await in_thread(
            api_error,
            functools.partial(
                client.create_order,
                symbol="BTCUSDT",
                side="BUY",
                type="MARKET",
                quantity="0.01",
                newClientOrderId="outcome-unknown",
            ),
        )
        assert unknown[:2] == (503, -1007)
        found = await in_thread(
            functools.partial(
                client.get_order, symbol="BTCUSDT", origClientOrderId="outcome-unknown"
            )
        )
        assert found["status"] == "FILLED"

        handle.faults.halt("ETHUSDT")
        closed = await in_thread(
            api_error,
            functools.partial(
                client.create_order, symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.1"
            ),
        )
        assert closed == (400, -2010, "Market is closed.")

        handle.faults.lower_limit("REQUEST_WEIGHT", "MINUTE", 1, 3)

        def until_limited() -> BinanceAPIException:
            for _ in range(10):
                try:
                    client.get_server_time()
                except BinanceAPIException as exc:
                    return exc
            raise AssertionError("no 429 within 10 requests")

        limited = await in_thread(until_limited)
        assert (limited.status_code, limited.code) == (429, -1003)
        assert 1 <= int(limited.response.headers["Retry-After"]) <= 60


# --- streams, WS API, depth cache (asyncio in a worker thread) ------------------------------------


async def test_socket_manager_streams_trades_raw_and_multiplexed(handle: SimHandle) -> None:
    async def body(
        client: AsyncClient, manager: BinanceSocketManager
    ) -> tuple[list[Json], list[Json]]:
        async def collect(socket: Any, count: int, symbols: tuple[str, ...]) -> list[Json]:
            received: list[Json] = []
            async with socket as stream:
                while len(received) < count:
                    for symbol in symbols:  # make trades now rather than wait for the market
                        await client.create_order(
                            symbol=symbol, side="BUY", type="MARKET", quantity="0.01"
                        )
                    received.append(await asyncio.wait_for(stream.recv(), TIMEOUT_S))
            return received

        raw = await collect(manager.trade_socket("BTCUSDT"), 3, ("BTCUSDT",))
        multiplexed = await collect(
            manager.multiplex_socket(["btcusdt@trade", "ethusdt@trade"]), 4, ("BTCUSDT", "ETHUSDT")
        )
        return raw, multiplexed

    with trio.fail_after(20):
        raw, multiplexed = await run_asyncio(handle, body)
    for message in raw:
        assert set(message) == TRADE_KEYS
        assert (message["e"], message["s"]) == ("trade", "BTCUSDT")
        assert isinstance(message["t"], int)
        assert Decimal(cast("str", message["p"])) > 0
    ids = [cast("int", m["t"]) for m in raw]
    assert ids == sorted(ids)
    streams = set()
    for message in multiplexed:
        assert set(message) == {"stream", "data"}
        data = cast("Json", message["data"])
        assert set(data) == TRADE_KEYS
        assert message["stream"] == cast("str", data["s"]).lower() + "@trade"
        streams.add(message["stream"])
    assert streams <= {"btcusdt@trade", "ethusdt@trade"}


async def test_ws_api_orders_and_user_data_stream(handle: SimHandle) -> None:
    async def body(client: AsyncClient, manager: BinanceSocketManager) -> Json:
        out: Json = {"ping": await client.ws_ping(), "time": await client.ws_get_time()}
        async with manager.user_socket() as user:
            placed = await client.ws_create_order(
                symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.01"
            )
            events: list[Json] = []
            while not any(e["e"] == "outboundAccountPosition" for e in events):
                events.append(await asyncio.wait_for(user.recv(), TIMEOUT_S))
            out["placed"] = placed
            out["events"] = events
            resting = await client.ws_create_order(
                symbol="BTCUSDT",
                side="SELL",
                type="LIMIT",
                timeInForce="GTC",
                quantity="0.01",
                price="90000",
            )
            out["status"] = await client.ws_get_order(symbol="BTCUSDT", orderId=resting["orderId"])
            out["cancel"] = await client.ws_cancel_order(
                symbol="BTCUSDT", orderId=resting["orderId"]
            )
            try:
                await client.ws_create_order(
                    symbol="BTCUSDT",
                    side="BUY",
                    type="LIMIT",
                    timeInForce="GTC",
                    quantity="100",
                    price="60000",
                )
            except BinanceAPIException as exc:
                out["refused"] = (exc.status_code, exc.code, exc.message)
        return out

    with trio.fail_after(20):
        out = await run_asyncio(handle, body)
    assert out["ping"] == {}
    assert isinstance(cast("Json", out["time"])["serverTime"], int)
    placed = cast("Json", out["placed"])
    assert placed["status"] == "FILLED"
    events = cast("list[Json]", out["events"])
    reports = [e for e in events if e["e"] == "executionReport"]
    assert (reports[0]["x"], reports[0]["X"]) == ("NEW", "NEW")
    assert reports[-1]["X"] == "FILLED"
    for report in reports:
        assert set(report) >= EXECUTION_REPORT_CORE
        assert (report["i"], report["c"]) == (placed["orderId"], placed["clientOrderId"])
    assert sum(Decimal(cast("str", r["l"])) for r in reports) == Decimal("0.01")
    position = events[-1]
    assert {b["a"] for b in cast("list[Json]", position["B"])} == {"BTC", "USDT"}
    assert cast("Json", out["status"])["status"] == "NEW"
    assert cast("Json", out["cancel"])["status"] == "CANCELED"
    # python-binance raises the WS API error as BinanceAPIException with the JSON error as text.
    assert out["refused"] == (400, -2010, "Account has insufficient balance for requested action.")


async def test_depth_cache_manager_keeps_an_uncrossed_book(handle: SimHandle) -> None:
    """python-binance's depth cache: REST snapshot (limit 1000) + ``@depth@100ms`` diffs.

    It fetches the snapshot before it connects, so it may re-initialise once when the first diff
    it sees does not follow the snapshot; a gap in the simulator's ``U``/``u`` chain would make it
    re-initialise again (or leave a crossed book).
    """
    inits: list[int] = []

    async def body(client: AsyncClient, manager: BinanceSocketManager) -> list[tuple[float, float]]:
        class CountingDepthCache(DepthCacheManager):  # type: ignore[misc]
            async def _init_cache(self) -> None:
                inits.append(len(inits))
                await super()._init_cache()

        tops: list[tuple[float, float]] = []
        manager_ = CountingDepthCache(client, "BTCUSDT", bm=manager, ws_interval=100, limit=1000)
        async with manager_ as cache:
            while len(tops) < 5:
                book = await asyncio.wait_for(cache.recv(), TIMEOUT_S)
                bids, asks = book.get_bids(), book.get_asks()
                tops.append((bids[0][0], asks[0][0]))
        return tops

    with trio.fail_after(20):
        tops = await run_asyncio(handle, body)
    assert len(tops) == 5
    assert all(bid < ask for bid, ask in tops)
    assert 1 <= len(inits) <= 2
