"""The local order book against the simulator: its ``@depth@100ms`` diffs and its REST depth.

Rules for these tests:

- the simulator runs in memory (market feed at 100 ms, REST through the real gateway over
  ``httpx.ASGITransport``, streams through ``genesis.sim.testing.MemoryConnector``) under
  ``autojump_clock``, with a deadline on the trio clock;
- the truth is the simulator's own book: a book listener on its exchange records the whole
  book after every change, keyed by update id, and every published ``OrderBook`` is compared
  with the truth at its ``last_update_id``;
- the forced gap is a diff frame lost between the simulator and the client (the connector's
  ``keep`` seam), not a fault of the book code.
"""

from __future__ import annotations

import functools
import itertools
from typing import TYPE_CHECKING, Final

import orjson
import pytest
import trio

from genesis.app.run import run_genesis
from genesis.bus import EventBus
from genesis.config import Settings, load_settings
from genesis.errors import ConfigError
from genesis.exchange.order_book import BookState, OrderBookConfig, run_order_books
from genesis.models.codec import decode_depth
from genesis.models.market import OrderBook, PriceLevel
from genesis.sim.feed import run_market_feed
from genesis.sim.server import SimConfig, Simulator, build_simulator
from genesis.sim.testing import MemoryConnector
from tests.gateway_support import T0, memory_gateway

if TYPE_CHECKING:
    from pathlib import Path

    from genesis.app.run import GenesisHandle
    from genesis.exchange.order_book import OrderBooksHandle
    from genesis.sim.exchange import BookDiff

SYMBOLS: Final = ("BTCUSDT", "ETHUSDT")
LEVELS: Final = 10


class Truth:
    """The simulator's whole book after every change, by ``(symbol, update id)``."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.books: dict[tuple[str, int], tuple[tuple[PriceLevel, ...], tuple[PriceLevel, ...]]]
        self.books = {}

    def on_book(self, diff: BookDiff) -> None:
        depth = decode_depth(self.sim.exchange.depth(diff.symbol, 5000), symbol=diff.symbol)
        assert depth.last_update_id == diff.last_update_id
        self.books[diff.symbol, diff.last_update_id] = (depth.bids, depth.asks)

    def check(self, book: OrderBook) -> None:
        bids, asks = self.books[book.symbol, book.last_update_id]
        assert book.bids == bids[:LEVELS], book.symbol
        assert book.asks == asks[:LEVELS], book.symbol


class DropOne:
    """Loses the ``nth`` diff frame of ``symbol`` on its way to the client."""

    def __init__(self, symbol: str, nth: int) -> None:
        self.marker = f'"s":"{symbol}"'.encode()
        self.nth = nth
        self.seen = 0
        self.dropped: int | None = None

    def __call__(self, message: str | bytes) -> bool:
        raw = message.encode() if isinstance(message, str) else message
        if self.marker not in raw or b"depthUpdate" not in raw:
            return True
        self.seen += 1
        if self.seen != self.nth:
            return True
        self.dropped = orjson.loads(raw)["data"]["U"]
        return False


async def _run(
    sim: Simulator,
    truth: Truth,
    *,
    seconds: float,
    connector_keep: DropOne | None = None,
    fault_at_s: float | None = None,
) -> tuple[OrderBooksHandle, dict[str, list[OrderBook]]]:
    bus = EventBus()
    published: dict[str, list[OrderBook]] = {s: [] for s in SYMBOLS}
    remove = sim.exchange.add_book_listener(truth.on_book)
    try:
        async with memory_gateway(sim=sim, seed_book=False) as m, trio.open_nursery() as nursery:
            subscription = bus.subscribe(OrderBook, buffer_size=100_000)

            async def collect() -> None:
                async with subscription:
                    async for event in subscription:
                        truth.check(event)
                        published[event.symbol].append(event)

            nursery.start_soon(collect)
            await nursery.start(run_market_feed, sim.exchange, sim.market_maker, sim.hub, sim.clock)
            connector = MemoryConnector(sim.connect_ws_memory, nursery, keep=connector_keep)
            handle: OrderBooksHandle = await nursery.start(
                functools.partial(
                    run_order_books,
                    "ws://sim.invalid",
                    SYMBOLS,
                    bus,
                    m.gateway.depth,
                    config=OrderBookConfig(levels=LEVELS, snapshot_limit=1000),
                    connector=connector,
                )
            )
            if fault_at_s is not None:
                await trio.sleep(fault_at_s)
                assert sim.faults.drop_connections() == 1
                await trio.sleep(seconds - fault_at_s)
            else:
                await trio.sleep(seconds)
            nursery.cancel_scope.cancel()
    finally:
        remove()
    return handle, published


def _chained(events: list[OrderBook]) -> bool:
    ids = [event.last_update_id for event in events]
    return all(a < b for a, b in itertools.pairwise(ids))


async def test_books_follow_the_simulator_exactly(autojump_clock: trio.abc.Clock) -> None:
    sim = build_simulator(SimConfig(epoch_ms=T0, seed=4, symbols=SYMBOLS))
    truth = Truth(sim)
    with trio.fail_after(30):
        handle, published = await _run(sim, truth, seconds=5.0)
    for row in handle.statistics():
        assert row.state is BookState.LIVE
        assert (row.syncs, row.gaps, row.snapshot_errors) == (1, 0, 0)
        assert row.applied > 20  # one diff event every 100 ms while the market moves
        # One OrderBook when the snapshot made it live, then one per applied event.
        assert row.published == row.applied + 1 == len(published[row.symbol])
        assert _chained(published[row.symbol])
    assert handle.decode_errors == 0
    assert handle.reconnects == 0


async def test_a_lost_diff_resyncs_that_symbol_alone(autojump_clock: trio.abc.Clock) -> None:
    sim = build_simulator(SimConfig(epoch_ms=T0, seed=4, symbols=SYMBOLS))
    truth = Truth(sim)
    drop = DropOne("BTCUSDT", nth=15)
    with trio.fail_after(30):
        handle, published = await _run(sim, truth, seconds=5.0, connector_keep=drop)
    assert drop.dropped is not None
    rows = {row.symbol: row for row in handle.statistics()}
    btc, eth = rows["BTCUSDT"], rows["ETHUSDT"]
    # BTCUSDT noticed the hole at the next event, threw its book away and fetched a new
    # snapshot; it is live again and, like before, equal to the simulator's book (Truth.check
    # ran on every published book).
    assert (btc.gaps, btc.syncs, btc.state) == (1, 2, BookState.LIVE)
    assert btc.snapshots == 2
    assert _chained(published["BTCUSDT"])
    # ETHUSDT never noticed: one sync, no gap, one book per applied event, on the same
    # connection.
    assert (eth.gaps, eth.syncs, eth.state) == (0, 1, BookState.LIVE)
    assert eth.published == eth.applied + 1 == len(published["ETHUSDT"])
    assert _chained(published["ETHUSDT"])
    assert handle.reconnects == 0


async def test_a_dropped_connection_resyncs_every_book(autojump_clock: trio.abc.Clock) -> None:
    sim = build_simulator(SimConfig(epoch_ms=T0, seed=4, symbols=SYMBOLS))
    truth = Truth(sim)
    with trio.fail_after(30):
        handle, published = await _run(sim, truth, seconds=6.0, fault_at_s=3.0)
    assert handle.reconnects == 1
    for row in handle.statistics():
        # No gap was seen (the connection went, not an event): both books started again from
        # a snapshot, and every book published before and after matched the simulator's.
        assert (row.state, row.syncs, row.gaps) == (BookState.LIVE, 2, 0)
        assert row.published == row.applied + 2 == len(published[row.symbol])
        assert _chained(published[row.symbol])


async def test_a_slow_resync_does_not_hold_up_the_other_books(
    autojump_clock: trio.abc.Clock,
) -> None:
    sim = build_simulator(SimConfig(epoch_ms=T0, seed=4, symbols=SYMBOLS))
    truth = Truth(sim)
    # The 60th BTCUSDT frame (6 s in) is lost, after the first syncs (which took 2 s each).
    drop = DropOne("BTCUSDT", nth=60)
    # Every REST answer takes 2 s: the first syncs and the resync after the lost frame too.
    sim.faults.latency(2.0)
    with trio.fail_after(30):
        handle, published = await _run(sim, truth, seconds=11.0, connector_keep=drop)
    rows = {row.symbol: row for row in handle.statistics()}
    assert (rows["BTCUSDT"].gaps, rows["BTCUSDT"].state) == (1, BookState.LIVE)
    assert rows["ETHUSDT"].gaps == 0
    btc_times = [b.event_time_ms for b in published["BTCUSDT"]]
    eth_times = [b.event_time_ms for b in published["ETHUSDT"]]
    # While BTCUSDT waited 2 s and more for its snapshot, ETHUSDT's books kept coming every
    # 100 ms on the same connection.
    pauses = [(a, b) for a, b in itertools.pairwise(btc_times) if b - a >= 2000]
    assert len(pauses) == 1
    start, end = pauses[0]
    assert len([t for t in eth_times if start < t < end]) >= 10


# --- in the whole tree -------------------------------------------------------------------------


async def test_genesis_order_book_puts_books_on_the_bus_and_into_the_recording(
    tmp_path: Path,
) -> None:
    # Real sockets and wall-clock time: the embedded simulator on 127.0.0.1, as `genesis run`.
    path = tmp_path / "events.jsonl"
    settings = Settings(symbols=SYMBOLS, order_book=("ETHUSDT",))
    books: list[OrderBook] = []
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            handle: GenesisHandle = await nursery.start(
                functools.partial(run_genesis, settings, record_path=path, handle_signals=False)
            )
            assert handle.order_books is not None
            async with handle.bus.subscribe(OrderBook) as subscription:
                async for book in subscription:
                    books.append(book)
                    if len(books) == 3:
                        break
            nursery.cancel_scope.cancel()
    assert {book.symbol for book in books} == {"ETHUSDT"}
    assert all(b.bids[0].price < b.asks[0].price for b in books)
    assert [b.last_update_id for b in books] == sorted({b.last_update_id for b in books})
    recorded = [line for line in path.read_text().splitlines() if "OrderBook" in line]
    assert recorded


def test_genesis_order_book_names_symbols_of_genesis_symbols() -> None:
    def load(**env: str) -> Settings:
        return load_settings(env, env_file=None)

    assert load().order_book == ()
    assert load(GENESIS_ORDER_BOOK="ethusdt, BTCUSDT,ethusdt").order_book == (
        "ETHUSDT",
        "BTCUSDT",
    )
    with pytest.raises(ConfigError, match="GENESIS_ORDER_BOOK names symbols that are not in"):
        load(GENESIS_SYMBOLS="BTCUSDT", GENESIS_ORDER_BOOK="BTCUSDT,DOGEUSDT")
