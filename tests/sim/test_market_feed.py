"""The market feed under virtual time: stream kinds, cadences, key sets, and the diff chain.

Every test runs under ``autojump_clock``: the feed's grid is ``start + k × 100 ms`` on Trio's
clock, so frame times are asserted exactly (rounded to the microsecond to absorb float sums).
"""

from __future__ import annotations

import itertools
import json
from decimal import Decimal
from typing import TYPE_CHECKING

import orjson
import pytest
import trio

from genesis.sim.clock import DEFAULT_VIRTUAL_EPOCH_MS, SimClock
from genesis.sim.exchange import Exchange
from genesis.sim.feed import MarketFeed, run_market_feed
from genesis.sim.hub import StreamHub
from genesis.sim.market import MarketMaker
from genesis.sim.payloads import (
    AGG_TRADE_KEYS,
    BOOK_TICKER_KEYS,
    DEPTH_UPDATE_KEYS,
    KLINE_K_KEYS,
    KLINE_KEYS,
    MINI_TICKER_KEYS,
    PARTIAL_DEPTH_KEYS,
    TICKER_KEYS,
    TRADE_KEYS,
)
from genesis.sim.symbols import default_symbols

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from trio.testing import MockClock

Frame = tuple[float, str, dict[str, object]]


def _frames_by(frames: list[Frame], stream: str) -> list[Frame]:
    return [f for f in frames if f[1] == stream]


def _times(frames: list[Frame]) -> list[float]:
    return [round(t, 6) for t, _, _ in frames]


async def run_feed(
    streams: list[str],
    seconds: float,
    *,
    epoch_ms: int = DEFAULT_VIRTUAL_EPOCH_MS,
    during: Callable[[Exchange, MarketFeed], Awaitable[None]] | None = None,
) -> tuple[float, list[Frame], Exchange]:
    """Run exchange + maker + feed for ``seconds`` of virtual time; collect frames of
    ``streams`` with their receive times relative to the feed's start."""
    exchange = Exchange(default_symbols(), seed=1)
    maker = MarketMaker(exchange, seed=2)
    hub = StreamHub()
    sub = hub.open_subscriber(100_000)
    hub.subscribe(sub, streams)
    frames: list[Frame] = []
    with trio.fail_after(seconds + 10):
        async with trio.open_nursery() as nursery:
            clock = SimClock.start(epoch_ms)
            start = trio.current_time()
            feed = await nursery.start(run_market_feed, exchange, maker, hub, clock)

            async def collect() -> None:
                async for stream, payload in sub.recv_chan:
                    data = orjson.loads(payload)
                    assert isinstance(data, dict)
                    frames.append((trio.current_time() - start, stream, data))

            nursery.start_soon(collect)
            if during is not None:
                await during(exchange, feed)
            await trio.sleep_until(start + seconds)
            nursery.cancel_scope.cancel()
    return start, frames, exchange


async def test_feed_publishes_each_stream_at_its_cadence(autojump_clock: MockClock) -> None:
    streams = ["btcusdt@trade", "btcusdt@depth20@100ms", "btcusdt@ticker", "btcusdt@kline_1m"]
    _, frames, _ = await run_feed(streams, 3.05)

    depth = _frames_by(frames, "btcusdt@depth20@100ms")
    assert _times(depth) == [round(0.1 * k, 6) for k in range(31)]
    ticker = _frames_by(frames, "btcusdt@ticker")
    assert _times(ticker) == [0.0, 1.0, 2.0, 3.0]
    kline = _frames_by(frames, "btcusdt@kline_1m")
    assert _times(kline) == [0.0, 2.0]
    trades = _frames_by(frames, "btcusdt@trade")
    assert len(trades) >= 3  # a few trades per second from the maker's flow
    assert {f[1] for f in frames} == set(streams)

    for _, _, data in depth:
        assert tuple(data) == PARTIAL_DEPTH_KEYS
        assert len(data["bids"]) == len(data["asks"]) == 20  # type: ignore[arg-type]
    ids = [int(str(d["lastUpdateId"])) for _, _, d in depth]
    assert ids == sorted(ids)
    for _, _, data in trades:
        assert tuple(data) == TRADE_KEYS
        assert data["e"] == "trade"
        assert data["s"] == "BTCUSDT"
        assert isinstance(data["p"], str)
        assert len(str(data["p"]).split(".")[1]) == 8
    trade_ids = [int(str(d["t"])) for _, _, d in trades]
    assert trade_ids == sorted(trade_ids)
    for t, _, data in ticker:
        assert tuple(data) == TICKER_KEYS
        assert data["E"] == DEFAULT_VIRTUAL_EPOCH_MS + round(t * 1000)
    for _, _, data in kline:
        assert tuple(data) == KLINE_KEYS
        k = data["k"]
        assert isinstance(k, dict)
        assert tuple(k) == KLINE_K_KEYS
        assert (k["i"], k["x"], k["t"]) == ("1m", False, DEFAULT_VIRTUAL_EPOCH_MS)


async def test_other_stream_kinds_have_their_documented_shapes(autojump_clock: MockClock) -> None:
    streams = [
        "btcusdt@aggTrade",
        "btcusdt@bookTicker",
        "btcusdt@miniTicker",
        "btcusdt@depth@100ms",
        "btcusdt@depth5",
        "btcusdt@kline_1s",
        "ethusdt@depth10@100ms",
    ]
    _, frames, _ = await run_feed(streams, 2.05)
    expected = {
        "btcusdt@aggTrade": AGG_TRADE_KEYS,
        "btcusdt@bookTicker": BOOK_TICKER_KEYS,
        "btcusdt@miniTicker": MINI_TICKER_KEYS,
        "btcusdt@depth@100ms": DEPTH_UPDATE_KEYS,
        "btcusdt@depth5": PARTIAL_DEPTH_KEYS,
        "btcusdt@kline_1s": KLINE_KEYS,
        "ethusdt@depth10@100ms": PARTIAL_DEPTH_KEYS,
    }
    for stream, keys in expected.items():
        mine = _frames_by(frames, stream)
        assert mine, stream
        assert all(tuple(d) == keys for _, _, d in mine), stream
    assert _times(_frames_by(frames, "btcusdt@depth5")) == [0.0, 1.0, 2.0]
    assert _times(_frames_by(frames, "btcusdt@miniTicker")) == [0.0, 1.0, 2.0]
    # Each second closes a 1s kline (x=true) and the next one's first update follows at once.
    seconds = [(round(t, 6), d["k"]["x"]) for t, _, d in _frames_by(frames, "btcusdt@kline_1s")]  # type: ignore[index]
    assert seconds == [(0.0, False), (1.0, True), (1.0, False), (2.0, True), (2.0, False)]
    assert all(
        len(d["bids"]) == 10  # type: ignore[arg-type]
        for _, _, d in _frames_by(frames, "ethusdt@depth10@100ms")
    )
    tickers = [d for _, _, d in _frames_by(frames, "btcusdt@bookTicker")]
    assert all(Decimal(str(d["b"])) < Decimal(str(d["a"])) for d in tickers)
    tops = [(d["b"], d["B"], d["a"], d["A"]) for d in tickers]
    assert all(a != b for a, b in itertools.pairwise(tops))  # only on change
    updates = [int(str(d["u"])) for d in tickers]
    assert updates == sorted(updates)
    aggs = [d for _, _, d in _frames_by(frames, "btcusdt@aggTrade")]
    assert all(int(str(d["f"])) <= int(str(d["l"])) for d in aggs)


async def test_kline_close_frame_arrives_at_the_boundary(autojump_clock: MockClock) -> None:
    # Start 500 ms before a minute boundary: the 1m kline closes at +0.5 s.
    epoch = DEFAULT_VIRTUAL_EPOCH_MS + 60_000 - 500
    _, frames, _ = await run_feed(["btcusdt@kline_1m"], 2.05, epoch_ms=epoch)
    got = [(round(t, 6), d["k"]["t"], d["k"]["x"]) for t, _, d in frames]  # type: ignore[index]
    first_open = DEFAULT_VIRTUAL_EPOCH_MS
    assert got == [
        (0.0, first_open, False),
        (0.5, first_open, True),  # the final frame of the closed kline
        (2.0, first_open + 60_000, False),
    ]
    closed = frames[1][2]["k"]
    assert isinstance(closed, dict)
    assert closed["T"] == first_open + 59_999
    assert closed["n"] > 0


async def test_depth_diffs_rebuild_the_book_from_a_rest_snapshot(autojump_clock: MockClock) -> None:
    """FACTS.md §9: buffer events, take a snapshot, drop old events, apply the rest."""
    snapshot: dict[str, object] = {}
    user_order_ids: list[int] = []

    async def during(exchange: Exchange, feed: MarketFeed) -> None:
        await trio.sleep(0.55)
        snapshot.update(exchange.depth("BTCUSDT", 5000))
        exchange.add_account("user")
        await trio.sleep(0.3)  # a user order between ticks joins the same chain
        bid = exchange.book_levels("BTCUSDT", 1)[0][0][0]
        order = exchange.place_order(
            "user",
            symbol="BTCUSDT",
            side="BUY",
            type="LIMIT",
            time_in_force="GTC",
            quantity="0.5",
            price=str(bid + 1),
            now_ms=DEFAULT_VIRTUAL_EPOCH_MS + 850,
        )
        user_order_ids.append(order.order.order_id)

    _, frames, exchange = await run_feed(["btcusdt@depth@100ms"], 2.0, during=during)
    events = [d for _, _, d in frames]
    assert user_order_ids
    chain = [(int(str(e["U"])), int(str(e["u"]))) for e in events]
    assert all(nxt[0] == prev[1] + 1 for prev, nxt in itertools.pairwise(chain))

    last_id = snapshot["lastUpdateId"]
    assert isinstance(last_id, int)
    book: dict[str, dict[Decimal, Decimal]] = {"b": {}, "a": {}}
    for side, key in (("bids", "b"), ("asks", "a")):
        for price, qty in snapshot[side]:  # type: ignore[attr-defined]
            book[key][Decimal(price)] = Decimal(qty)
    live = [e for e in events if int(str(e["u"])) > last_id]
    assert int(str(live[0]["U"])) <= last_id + 1 <= int(str(live[0]["u"]))
    for e in live:
        for key in ("b", "a"):
            for price, qty in e[key]:  # type: ignore[attr-defined]
                if Decimal(qty) == 0:
                    book[key].pop(Decimal(price), None)
                else:
                    book[key][Decimal(price)] = Decimal(qty)
    final = exchange.depth("BTCUSDT", 5000)
    # The feed was cancelled right after its last tick published: nothing changed since.
    assert final["lastUpdateId"] == int(str(live[-1]["u"]))
    assert book["b"] == {Decimal(p): Decimal(q) for p, q in final["bids"]}  # type: ignore[attr-defined]
    assert book["a"] == {Decimal(p): Decimal(q) for p, q in final["asks"]}  # type: ignore[attr-defined]


async def test_idle_feed_builds_no_payloads_and_ticks_on_a_fixed_grid(
    autojump_clock: MockClock,
) -> None:
    exchange = Exchange(default_symbols(), seed=1)
    maker = MarketMaker(exchange, seed=2)
    hub = StreamHub()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            clock = SimClock.start(DEFAULT_VIRTUAL_EPOCH_MS)
            start = trio.current_time()
            feed = await nursery.start(run_market_feed, exchange, maker, hub, clock)
            await trio.sleep_until(start + 10.05)
            stats = feed.statistics()
            nursery.cancel_scope.cancel()
    assert stats.payloads == 0
    assert stats.ticks == 101  # 0.0, 0.1, ..., 10.0 with no drift
    assert maker.statistics().steps == 101
    assert hub.statistics().published == 0
    # The feed detached from the exchange when it ended: trades now reach no stream.
    hub.subscribe(hub.open_subscriber(), ["btcusdt@trade", "btcusdt@bookTicker"])
    trades_before = exchange.statistics().trades
    for k in range(20):
        maker.step(DEFAULT_VIRTUAL_EPOCH_MS + 20_000 + 100 * k)
    assert exchange.statistics().trades > trades_before
    assert hub.statistics().published == 0


async def test_feed_rejects_a_step_that_does_not_divide_100ms(autojump_clock: MockClock) -> None:
    exchange = Exchange(default_symbols(), seed=1)
    with trio.fail_after(5), pytest.raises(ValueError, match="divide"):
        await run_market_feed(exchange, None, StreamHub(), SimClock.start(0), step_s=0.3)


@pytest.mark.shared
async def test_payloads_match_shared_samples(autojump_clock: MockClock, shared_dir: Path) -> None:
    samples = json.loads((shared_dir / "binance" / "samples.json").read_text())
    mapping = {
        "btcusdt@trade": "ws.trade",
        "btcusdt@aggTrade": "ws.aggTrade",
        "btcusdt@bookTicker": "ws.bookTicker",
        "btcusdt@depth20@100ms": "ws.depth20",
        "btcusdt@depth@100ms": "ws.depthUpdate",
        "btcusdt@ticker": "ws.ticker",
        "btcusdt@miniTicker": "ws.miniTicker",
        "btcusdt@kline_1m": "ws.kline_1m",
    }
    _, frames, _ = await run_feed(list(mapping), 1.05)
    for stream, key in mapping.items():
        documented = samples[key]
        mine = _frames_by(frames, stream)
        assert mine, stream
        data = mine[-1][2]
        assert set(data) == set(documented), stream
        for field, value in documented.items():
            assert type(data[field]) is type(value), (stream, field)
        if "k" in documented:
            k = data["k"]
            assert isinstance(k, dict)
            assert set(k) == set(documented["k"])
            for field, value in documented["k"].items():
                assert type(k[field]) is type(value), (stream, field)
