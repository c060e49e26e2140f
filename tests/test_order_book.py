"""The pure core of the local order book (exchange/order_book.py ``LocalBook``): FACTS.md §9.

A reference exchange book evolves through random changes, each event covering one or more
update ids; the client sees those events with some lost, and a snapshot of the reference
taken at some point while it buffers. Whatever the interleaving, whenever the client's book
is live it equals the reference at the client's book id, and a lost event is always noticed.
"""

from __future__ import annotations

import functools
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs
import orjson
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from genesis.bus import EventBus
from genesis.errors import ConnectError, ExchangeProtocolError
from genesis.exchange.order_book import (
    BookState,
    LocalBook,
    OrderBookConfig,
    SnapshotVerdict,
    UpdateVerdict,
    order_book_streams,
    run_order_books,
)
from genesis.models.codec import decode_depth_update
from genesis.models.events import BreakerState
from genesis.models.market import Depth, DepthUpdate, OrderBook, PriceLevel
from genesis.resilience.circuit_breaker import CircuitBreaker
from genesis.resilience.connect_limiter import ConnectAttemptLimiter

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from genesis.exchange.order_book import OrderBooksHandle

SYMBOL = "BTCUSDT"


@attrs.define
class Reference:
    """The exchange's book, and its state after every event (keyed by ``u``)."""

    bids: dict[Decimal, Decimal] = attrs.field(factory=dict)
    asks: dict[Decimal, Decimal] = attrs.field(factory=dict)
    update_id: int = 100
    states: dict[int, tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]] = attrs.field(
        factory=dict
    )

    def change(self, changes: list[tuple[bool, int, int]], ids: int) -> DepthUpdate:
        bids: dict[Decimal, Decimal] = {}
        asks: dict[Decimal, Decimal] = {}
        for is_bid, tick, lots in changes:
            price = Decimal(100 - tick) if is_bid else Decimal(101 + tick)
            quantity = Decimal(lots) / 10
            side, out = (self.bids, bids) if is_bid else (self.asks, asks)
            if quantity:
                side[price] = quantity
            else:
                side.pop(price, None)
            out[price] = quantity
        first = self.update_id + 1
        self.update_id += ids
        self.states[self.update_id] = (dict(self.bids), dict(self.asks))
        return DepthUpdate(
            symbol=SYMBOL,
            first_update_id=first,
            final_update_id=self.update_id,
            bids=tuple(PriceLevel(p, q) for p, q in bids.items()),
            asks=tuple(PriceLevel(p, q) for p, q in asks.items()),
            event_time_ms=self.update_id,
        )

    def snapshot(self) -> Depth:
        return Depth(
            symbol=SYMBOL,
            last_update_id=self.update_id,
            bids=tuple(PriceLevel(p, q) for p, q in sorted(self.bids.items(), reverse=True)),
            asks=tuple(PriceLevel(p, q) for p, q in sorted(self.asks.items())),
        )


changes = st.lists(
    st.tuples(st.booleans(), st.integers(0, 12), st.integers(0, 5)), min_size=1, max_size=6
)
events = st.lists(st.tuples(changes, st.integers(1, 3)), min_size=1, max_size=40)


def assert_matches(book: LocalBook, reference: Reference) -> None:
    assert book.state is BookState.LIVE
    bids, asks = reference.states[book.last_update_id]
    assert book.bids == bids
    assert book.asks == asks


@given(events=events, data=st.data())
def test_a_live_book_always_equals_the_exchange_at_its_id(
    events: list[tuple[list[tuple[bool, int, int]], int]], data: st.DataObject
) -> None:
    reference = Reference()
    reference.states[reference.update_id] = ({}, {})
    book = LocalBook(SYMBOL)
    delivered = [reference.change(c, ids) for c, ids in events]
    lost = data.draw(st.sets(st.integers(0, len(delivered) - 1), max_size=3), label="lost")
    # The snapshot is taken after ``taken`` events and arrives after ``seen`` of them.
    taken = data.draw(st.integers(0, len(delivered)), label="taken")
    seen = data.draw(st.integers(0, len(delivered)), label="seen")
    states_at_taken = Reference()
    for c, ids in events[:taken]:
        states_at_taken.change(c, ids)
    snapshot = states_at_taken.snapshot()
    snapshot_verdict: SnapshotVerdict | None = None
    gaps = 0
    for i, update in enumerate(delivered):
        if i == seen:
            snapshot_verdict = book.on_snapshot(snapshot)
        if i in lost:
            continue
        verdict = book.on_update(update)
        gaps += verdict is UpdateVerdict.GAP
        if book.state is BookState.LIVE:
            assert_matches(book, reference)
    if snapshot_verdict is None:
        snapshot_verdict = book.on_snapshot(snapshot)
    if book.state is BookState.LIVE:
        assert_matches(book, reference)
    # A lost event after the book's id is never silently skipped: the book either never got
    # past it or noticed the gap.
    first_needed = next(
        (i for i in sorted(lost) if delivered[i].final_update_id > snapshot.last_update_id), None
    )
    if first_needed is not None and book.state is BookState.LIVE:
        assert book.last_update_id < delivered[first_needed].first_update_id or gaps
    assert book.gaps == gaps + (snapshot_verdict is SnapshotVerdict.GAP)


@given(events=events)
def test_without_loss_one_snapshot_makes_the_book_live_and_exact(
    events: list[tuple[list[tuple[bool, int, int]], int]],
) -> None:
    reference = Reference()
    book = LocalBook(SYMBOL)
    half = len(events) // 2 + 1  # the client buffers first, then fetches (FACTS §9.1-2)
    delivered = [reference.change(c, ids) for c, ids in events[:half]]
    snapshot = reference.snapshot()
    delivered += [reference.change(c, ids) for c, ids in events[half:]]
    for update in delivered:
        assert book.on_update(update) is UpdateVerdict.BUFFERED
    assert book.on_snapshot(snapshot) is SnapshotVerdict.LIVE
    assert book.last_update_id == reference.update_id
    assert_matches(book, reference)
    assert (book.syncs, book.gaps) == (1, 0)


def _update(first: int, final: int, bids: tuple[PriceLevel, ...] = ()) -> DepthUpdate:
    return DepthUpdate(
        symbol=SYMBOL, first_update_id=first, final_update_id=final, bids=bids, asks=()
    )


def _snapshot(last_update_id: int) -> Depth:
    return Depth(
        symbol=SYMBOL,
        last_update_id=last_update_id,
        bids=(PriceLevel(Decimal(99), Decimal(1)),),
        asks=(PriceLevel(Decimal(101), Decimal(2)),),
    )


def test_a_snapshot_older_than_the_first_buffered_event_is_fetched_again() -> None:
    book = LocalBook(SYMBOL)
    book.on_update(_update(11, 12))
    assert book.on_snapshot(_snapshot(10)) is SnapshotVerdict.TOO_OLD  # 10 < U=11 (FACTS §9.3)
    assert book.state is BookState.SYNCING
    assert book.on_snapshot(_snapshot(11)) is SnapshotVerdict.LIVE
    assert book.last_update_id == 12
    assert book.snapshots_too_old == 1
    assert book.on_snapshot(_snapshot(20)) is SnapshotVerdict.NOT_SYNCING


def test_a_gap_throws_the_book_away_and_keeps_the_event_for_the_next_sync() -> None:
    book = LocalBook(SYMBOL)
    assert book.on_snapshot(_snapshot(10)) is SnapshotVerdict.LIVE
    assert book.on_update(_update(5, 10)) is UpdateVerdict.IGNORED
    assert book.on_update(_update(11, 11)) is UpdateVerdict.APPLIED
    assert book.on_update(_update(13, 14)) is UpdateVerdict.GAP  # 12 was lost
    assert book.state is BookState.SYNCING
    assert (book.bids, book.asks) == ({}, {})
    assert [u.first_update_id for u in book.buffer] == [13]
    assert book.on_snapshot(_snapshot(13)) is SnapshotVerdict.LIVE
    assert book.last_update_id == 14
    assert (book.applied, book.ignored, book.gaps, book.syncs) == (2, 1, 1, 2)


def test_a_hole_inside_the_buffer_restarts_the_sync_from_after_the_hole() -> None:
    book = LocalBook(SYMBOL)
    for first, final in ((11, 12), (13, 13), (16, 17), (18, 18)):  # 14-15 lost
        book.on_update(_update(first, final))
    assert book.on_snapshot(_snapshot(12)) is SnapshotVerdict.GAP
    assert book.state is BookState.SYNCING
    assert [u.first_update_id for u in book.buffer] == [16, 18]
    assert book.on_snapshot(_snapshot(16)) is SnapshotVerdict.LIVE
    assert book.last_update_id == 18


def test_zero_quantity_removes_a_level_even_one_never_seen() -> None:
    book = LocalBook(SYMBOL)
    book.on_snapshot(_snapshot(1))
    removal = (PriceLevel(Decimal(99), Decimal(0)), PriceLevel(Decimal(42), Decimal(0)))
    assert book.on_update(_update(2, 2, removal)) is UpdateVerdict.APPLIED
    assert book.bids == {}
    top = book.top(100)
    assert (top.bids, top.asks) == ((), (PriceLevel(Decimal(101), Decimal(2)),))


def test_top_gives_the_best_levels_first_and_only_when_live() -> None:
    book = LocalBook(SYMBOL)
    with pytest.raises(RuntimeError, match="not live"):
        book.top(5)
    book.on_snapshot(
        Depth(
            symbol=SYMBOL,
            last_update_id=7,
            bids=tuple(PriceLevel(Decimal(p), Decimal(1)) for p in (97, 99, 98)),
            asks=tuple(PriceLevel(Decimal(p), Decimal(1)) for p in (103, 101, 102)),
        )
    )
    top = book.top(2)
    assert [level.price for level in top.bids] == [Decimal(99), Decimal(98)]
    assert [level.price for level in top.asks] == [Decimal(101), Decimal(102)]
    assert top.last_update_id == 7


def test_an_overflowing_buffer_drops_its_oldest_events() -> None:
    book = LocalBook(SYMBOL, max_buffer=2)
    for i in range(1, 5):
        book.on_update(_update(i, i))
    assert [u.first_update_id for u in book.buffer] == [3, 4]
    assert book.buffer_overflows == 2
    assert book.on_snapshot(_snapshot(1)) is SnapshotVerdict.TOO_OLD


def test_config_and_stream_names() -> None:
    assert order_book_streams(["BTCUSDT", "ETHUSDT"]) == [
        "btcusdt@depth@100ms",
        "ethusdt@depth@100ms",
    ]
    assert order_book_streams(["BTCUSDT"], 1000) == ["btcusdt@depth"]
    with pytest.raises(ValueError, match="levels"):
        OrderBookConfig(levels=0)
    with pytest.raises(ValueError, match="speed_ms"):
        OrderBookConfig(speed_ms=250)


def test_diff_frames_decode_combined_or_bare_and_bad_ones_are_typed_errors() -> None:
    payload = {
        "e": "depthUpdate",
        "E": 5,
        "s": "BTCUSDT",
        "U": 7,
        "u": 9,
        "b": [["100.5", "0.00000000"]],
        "a": [["101", "2.5"]],
    }
    bare = decode_depth_update(orjson.dumps(payload))
    combined = decode_depth_update(orjson.dumps({"stream": "btcusdt@depth@100ms", "data": payload}))
    assert bare == combined
    assert (bare.first_update_id, bare.final_update_id, bare.event_time_ms) == (7, 9, 5)
    assert bare.bids == (PriceLevel(Decimal("100.5"), Decimal(0)),)
    assert bare.asks == (PriceLevel(Decimal(101), Decimal("2.5")),)
    for bad in (
        b"{not json",
        orjson.dumps(payload | {"e": "trade"}),
        orjson.dumps(payload | {"u": 6}),
        orjson.dumps(payload | {"b": [["1.0"]]}),
        orjson.dumps({k: v for k, v in payload.items() if k != "U"}),
        orjson.dumps(payload | {"a": [[1.5, "1"]]}),
    ):
        with pytest.raises(ExchangeProtocolError):
            decode_depth_update(bad)


# --- the task, over a scripted connection (exact autojump times) ----------------------------


@attrs.define
class ScriptedWebSocket:
    """Delivers its messages, then nothing (a silent connection)."""

    messages: list[bytes]

    async def get_message(self) -> bytes:
        if not self.messages:
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()
        return self.messages.pop(0)

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        await trio.lowlevel.checkpoint()

    async def ping(self, payload: bytes | None = None) -> None:
        await trio.lowlevel.checkpoint()


@attrs.define
class ScriptedConnector:
    sessions: list[list[bytes]]
    attempts: list[tuple[float, str, str]] = attrs.field(factory=list)

    async def __call__(
        self, nursery: trio.Nursery, url: str, *, message_queue_size: int, role: str
    ) -> ScriptedWebSocket:
        self.attempts.append((trio.current_time(), url, role))
        await trio.lowlevel.checkpoint()
        if not self.sessions:
            raise OSError(111, "Connection refused")
        return ScriptedWebSocket(self.sessions.pop(0))


def _frame(symbol: str, first: int, final: int) -> bytes:
    data = {"e": "depthUpdate", "E": final, "s": symbol, "U": first, "u": final}
    data |= {"b": [["99", str(final)]], "a": [["101", "1"]]}
    return orjson.dumps({"stream": f"{symbol.lower()}@depth@100ms", "data": data})


async def start_books(
    nursery: trio.Nursery,
    bus: EventBus,
    fetch_depth: Callable[[str, int], Awaitable[Depth]],
    **options: Any,
) -> OrderBooksHandle:
    """``run_order_books`` for :data:`SYMBOL` on a scripted URL, started in ``nursery``."""
    handle: OrderBooksHandle = await nursery.start(
        functools.partial(
            run_order_books, "ws://sim.invalid", [SYMBOL], bus, fetch_depth, **options
        )
    )
    return handle


async def test_bad_frames_a_failed_snapshot_and_a_silent_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    connector = ScriptedConnector(
        [
            [b"{bad", _frame("DOGEUSDT", 1, 1), _frame(SYMBOL, 11, 12), _frame(SYMBOL, 13, 13)],
            [_frame(SYMBOL, 20, 21)],
        ]
    )
    fetches: list[float] = []

    async def fetch_depth(symbol: str, limit: int) -> Depth:
        fetches.append(trio.current_time())
        assert (symbol, limit) == (SYMBOL, 1000)
        if len(fetches) == 1:
            raise ConnectError("REST is down")
        return _snapshot(11 if len(fetches) == 2 else 20)

    bus = EventBus()
    config = OrderBookConfig(stale_after_s=5.0)
    with trio.fail_after(30):
        async with bus.subscribe(OrderBook) as books, trio.open_nursery() as nursery:
            handle = await start_books(
                nursery, bus, fetch_depth, config=config, connector=connector
            )
            first = await books.receive()
            assert (trio.current_time(), first.last_update_id) == (1.0, 13)
            second = await books.receive()
            # Silent for 5 s after its last frame (t=0): reconnect after 1 s of backoff.
            assert (trio.current_time(), second.last_update_id) == (6.0, 21)
            nursery.cancel_scope.cancel()
    assert [t for t, _, _ in connector.attempts] == [0.0, 6.0]
    assert connector.attempts[0][1:] == (
        "ws://sim.invalid/stream?streams=btcusdt@depth@100ms",
        "order_book",
    )
    assert fetches == [0.0, 1.0, 6.0]  # the failed one retried after 1 s of backoff
    (row,) = handle.statistics()
    assert (row.syncs, row.gaps, row.snapshot_errors, row.snapshots) == (2, 0, 1, 2)
    assert handle.decode_errors == 2  # bad JSON, a symbol without a book
    assert handle.reconnects == 1
    book = handle.book(SYMBOL)
    assert book is not None
    assert book.bids == (PriceLevel(Decimal(99), Decimal(21)),)


async def test_the_books_connection_goes_through_the_breaker_and_the_attempt_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    connector = ScriptedConnector([[_frame(SYMBOL, 11, 12), _frame(SYMBOL, 13, 13)]])
    refused: list[float] = []

    async def refusing_five(
        nursery: trio.Nursery, url: str, *, message_queue_size: int, role: str
    ) -> ScriptedWebSocket:
        if len(refused) < 5:
            refused.append(trio.current_time())
            await trio.lowlevel.checkpoint()
            raise OSError(111, "Connection refused")
        return await connector(nursery, url, message_queue_size=message_queue_size, role=role)

    async def fetch_depth(symbol: str, limit: int) -> Depth:
        await trio.lowlevel.checkpoint()
        return _snapshot(11)

    breaker = CircuitBreaker("streams")  # 5 failures in 30 s open it for 60 s
    attempts = ConnectAttemptLimiter()
    bus = EventBus()
    with trio.fail_after(200):
        async with bus.subscribe(OrderBook) as books, trio.open_nursery() as nursery:
            handle = await start_books(
                nursery,
                bus,
                fetch_depth,
                connector=refusing_five,
                breaker=breaker,
                attempt_limiter=attempts,
            )
            first = await books.receive()
            live_at = trio.current_time()
            nursery.cancel_scope.cancel()
    # Refused at 0, 1, 3, 7 and 15 (backoff 1, 2, 4, 8): the 5th failure in 30 s opens the
    # breaker until 75. The attempts at 31 and 61 are refused without dialling; the one at 91
    # is the probe, and it connects.
    assert refused == [0.0, 1.0, 3.0, 7.0, 15.0]
    assert [t for t, _, _ in connector.attempts] == [91.0]
    assert (live_at, first.last_update_id) == (91.0, 13)
    stats = breaker.statistics()
    assert (stats.state, stats.failures, stats.rejected, stats.successes) == (
        BreakerState.CLOSED,
        5,
        2,
        1,
    )
    # Every attempt took a token of the shared budget, the refused ones too.
    assert attempts.statistics().attempts == 8
    assert handle.reconnects == 7
