"""The order journal: durability, ids, migrations, atomicity, out-of-order updates, threads.

Journals live in ``tmp_path`` files (WAL, seen by a second ``sqlite3`` connection as another
process would see them) or in ``":memory:"``. Faults are injected through SQLite itself (a
trigger, a lock held by a second connection, a conflicting index), never by patching the module.
Expected states come from the order's true lifecycle, not from the journal's own rules. Each
test runs under a trio deadline (real time: the journal's work happens in threads).
"""

from __future__ import annotations

import functools
import logging
import sqlite3
from contextlib import asynccontextmanager, closing
from decimal import Decimal
from typing import TYPE_CHECKING

import pytest
import trio
import trio.lowlevel
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from genesis.models.codec import decimal_to_wire
from genesis.models.events import OrderUpdateSource
from genesis.models.orders import (
    Order,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    is_valid_client_order_id,
)
from genesis.orders.journal import (
    EXCHANGE_INFO_MAX_AGE_MS,
    MIGRATIONS,
    AlreadySentError,
    DuplicateOrderError,
    Journal,
    JournalError,
    JournalEventKind,
    OrderNotFoundError,
    SchemaVersionError,
    exchange_info_is_fresh,
    open_journal,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

D = Decimal
DEADLINE_S = 10
REST, STREAM = OrderUpdateSource.REST, OrderUpdateSource.USER_STREAM


@asynccontextmanager
async def journal_at(path: str | Path = ":memory:") -> AsyncIterator[Journal]:
    with trio.fail_after(DEADLINE_S):
        async with open_journal(path) as journal:
            yield journal


def connect(path: Path) -> closing[sqlite3.Connection]:
    """A second connection to the journal's file, as another process (or an auditor) has."""
    return closing(sqlite3.connect(path, isolation_level=None))


def limit_buy(client_order_id: str | None = None, quantity: str = "1") -> OrderRequest:
    return OrderRequest.limit(
        symbol="BTCUSDT",
        side=OrderSide.BUY,
        quantity=D(quantity),
        price=D("50000.01"),
        client_order_id=client_order_id,
    )


def report(
    client_order_id: str,
    exchange_status: str | None,
    filled: str = "0",
    *,
    quantity: str = "1",
    status: OrderStatus | None = None,
    exchange_order_id: int | None = 42,
) -> Order:
    """The order as the exchange (or, with ``exchange_status=None``, Genesis) describes it."""
    return Order(
        client_order_id=client_order_id,
        exchange_order_id=exchange_order_id,
        symbol="BTCUSDT",
        type=OrderType.LIMIT,
        side=OrderSide.BUY,
        price=D("50000.01"),
        quantity=D(quantity),
        filled_quantity=D(filled),
        status=status or OrderStatus.from_binance(exchange_status or "NEW"),
        exchange_status=exchange_status,
    )


# -- durability, files, ids ------------------------------------------------------------------


async def test_intent_is_committed_before_record_intent_returns(tmp_path: Path) -> None:
    path = tmp_path / "genesis.db"
    async with journal_at(path) as journal:
        entry = await journal.record_intent(limit_buy(), now_ms=1000)
        with connect(path) as other:  # another connection sees only committed data
            rows = other.execute("SELECT client_order_id, status, request FROM orders").fetchall()
            events = other.execute("SELECT order_id, seq, kind FROM order_events").fetchall()
            mode = other.execute("PRAGMA journal_mode").fetchone()[0]
        assert rows == [(entry.client_order_id, "PENDING", rows[0][2])]
        assert '"price":"50000.01"' in rows[0][2]  # Decimals as strings, never REAL
        assert events == [(entry.id, 1, "INTENT")]
        assert mode == "wal"
    assert entry.request == limit_buy(entry.client_order_id)
    assert (entry.status, entry.created_ms, entry.updated_ms) == (OrderStatus.PENDING, 1000, 1000)
    assert (entry.sent_at_ms, entry.external, entry.filled_quantity) == (None, False, D(0))


async def test_memory_journal_and_statistics() -> None:
    async with journal_at() as journal:
        first = await journal.record_intent(limit_buy(), now_ms=1)
        await journal.record_intent(limit_buy(), now_ms=2)
        await journal.record_update(
            report(first.client_order_id, "FILLED", "1"), source=REST, now_ms=3
        )
        stats = journal.statistics()
    assert (stats.path, journal.path, stats.schema_version) == (":memory:", ":memory:", 3)
    assert (stats.orders, stats.unfinished, stats.events) == (2, 1, 3)


async def test_reopen_keeps_the_prefix_and_continues_the_ids(tmp_path: Path) -> None:
    path = tmp_path / "genesis.db"
    async with journal_at(path) as journal:
        prefix = journal.prefix
        first = [
            (await journal.record_intent(limit_buy(), now_ms=i)).client_order_id for i in range(3)
        ]
    async with journal_at(path) as journal:
        assert journal.prefix == prefix
        stats = journal.statistics()
        assert (stats.orders, stats.unfinished, stats.events) == (3, 3, 3)
        later = await journal.record_intent(limit_buy(), now_ms=9)
    assert first == [f"{prefix}-1", f"{prefix}-2", f"{prefix}-3"]
    assert later.client_order_id == f"{prefix}-4"
    assert len(prefix) == 8
    assert prefix.isalnum()
    assert prefix == prefix.lower()


async def test_client_order_ids_are_unique_and_valid_within_and_across_journals() -> None:
    async with journal_at() as one, journal_at() as two:
        ids = [
            (await one.record_intent(limit_buy(), now_ms=i)).client_order_id for i in range(1000)
        ]
        other = [
            (await two.record_intent(limit_buy(), now_ms=i)).client_order_id for i in range(10)
        ]
        assert one.prefix != two.prefix
    assert len(set(ids)) == 1000
    assert not set(ids) & set(other)
    assert all(is_valid_client_order_id(cid) and len(cid) <= 36 for cid in ids + other)
    # The longest id a journal can produce: an 8-character prefix, "-", a 19-digit rowid.
    assert is_valid_client_order_id(f"{one.prefix}-{2**63 - 1}")


async def test_a_given_client_order_id_is_used_and_never_journaled_twice() -> None:
    async with journal_at() as journal:
        entry = await journal.record_intent(limit_buy("caller-1"), now_ms=1)
        with pytest.raises(DuplicateOrderError):
            await journal.record_intent(limit_buy("caller-1"), now_ms=2)
        assert entry.client_order_id == "caller-1"
        assert [e.kind for e in await journal.history("caller-1")] == [JournalEventKind.INTENT]
        stats = journal.statistics()
        assert (stats.orders, stats.events) == (1, 1)


async def test_ids_of_the_journals_own_form_cannot_be_supplied() -> None:
    async with journal_at() as journal:
        mine = await journal.record_intent(limit_buy(), now_ms=1)
        assert mine.request is not None
        with pytest.raises(DuplicateOrderError):
            await journal.record_intent(mine.request, now_ms=2)  # a resend of the intent
        with pytest.raises(JournalError, match="reserved") as caught:
            await journal.record_intent(limit_buy(f"{journal.prefix}-2"), now_ms=3)
        assert not isinstance(caught.value, DuplicateOrderError)
        assert (await journal.record_intent(limit_buy(), now_ms=4)).client_order_id == (
            f"{journal.prefix}-2"
        )


# -- atomicity --------------------------------------------------------------------------------


async def test_a_failure_inside_record_intent_leaves_nothing_half_written(tmp_path: Path) -> None:
    path = tmp_path / "genesis.db"
    async with journal_at(path) as journal:
        with connect(path) as other:  # the order row goes in, then the event insert fails
            other.execute(
                "CREATE TRIGGER no_events BEFORE INSERT ON order_events"
                " BEGIN SELECT RAISE(ABORT, 'injected'); END"
            )
            with pytest.raises(JournalError, match="injected") as caught:
                await journal.record_intent(limit_buy(), now_ms=1)
            assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)
            assert other.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 0
            assert other.execute("SELECT COUNT(*) FROM order_events").fetchone()[0] == 0
            other.execute("DROP TRIGGER no_events")
        stats = journal.statistics()
        assert (stats.orders, stats.unfinished, stats.events) == (0, 0, 0)
        entry = await journal.record_intent(limit_buy(), now_ms=2)
        assert entry.client_order_id == f"{journal.prefix}-1"  # the failed one never existed
        assert len(await journal.history(entry.client_order_id)) == 1


async def test_a_cancelled_write_that_started_still_commits(tmp_path: Path) -> None:
    path = tmp_path / "genesis.db"
    async with journal_at(path) as journal:
        with connect(path) as other:
            other.execute("BEGIN IMMEDIATE")  # the journal's write waits in its thread
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    functools.partial(journal.record_intent, now_ms=1), limit_buy("late")
                )
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
                other.execute("COMMIT")
        entry = await journal.get("late")
    assert entry is not None
    assert entry.status is OrderStatus.PENDING


async def test_journal_calls_run_off_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "genesis.db"
    ticks = 0
    async with journal_at(path) as journal:
        with connect(path) as other:
            other.execute("BEGIN IMMEDIATE")  # holds the write lock: the journal's write waits
            done = trio.Event()

            async def write() -> None:
                await journal.record_intent(limit_buy("blocked"), now_ms=1)
                done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(write)
                await trio.testing.wait_all_tasks_blocked()  # write() is parked in a thread
                for _ in range(5):  # ...while this task keeps running on the loop
                    await trio.lowlevel.checkpoint()
                    ticks += 1
                assert not done.is_set()
                other.execute("COMMIT")
        assert done.is_set()
        assert ticks == 5
        assert await journal.get("blocked") is not None


async def test_the_journal_is_closed_on_exit_even_when_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "genesis.db"
    with trio.fail_after(DEADLINE_S), trio.CancelScope() as scope:
        async with open_journal(path) as journal:
            await journal.record_intent(limit_buy(), now_ms=1)
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert not (tmp_path / "genesis.db-wal").exists()  # the last close checkpoints the WAL
    with pytest.raises(trio.ClosedResourceError):
        await journal.get("x")


async def test_an_unopenable_path_is_a_journal_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="cannot open journal"):
        async with journal_at(tmp_path / "missing" / "genesis.db"):
            pass  # pragma: no cover


async def test_a_journal_with_a_table_missing_is_a_journal_error(tmp_path: Path) -> None:
    path = tmp_path / "genesis.db"
    async with journal_at(path):
        pass
    with connect(path) as conn:
        conn.execute("DROP TABLE outbox")  # damaged by hand: the schema version still says 3
    with pytest.raises(JournalError, match=r"cannot open journal.*no such table: outbox"):
        async with journal_at(path):
            pass  # pragma: no cover


# -- migrations -------------------------------------------------------------------------------

V1_REQUEST = (
    '{"symbol":"BTCUSDT","side":"BUY","type":"LIMIT","quantity":"0.00001000",'
    '"quote_order_qty":null,"price":"50000.01","stop_price":null,"time_in_force":"GTC",'
    '"client_order_id":null}'
)
V1_SEED = (
    "INSERT INTO meta (id, prefix) VALUES (1, 'seed0001')",
    "INSERT INTO orders (id, client_order_id, symbol, side, type, request, status,"
    " exchange_status, exchange_order_id, filled_quantity, created_ms, updated_ms, external)"
    f" VALUES (1, 'seed0001-1', 'BTCUSDT', 'BUY', 'LIMIT', '{V1_REQUEST}', 'PARTIAL',"
    " 'PARTIALLY_FILLED', 77, '0.00000500', 1000, 1200, 0)",
    f"INSERT INTO order_events VALUES (1, 1, 1000, 'INTENT', NULL, 'PENDING', NULL, '0',"
    f" '{V1_REQUEST}', NULL)",
    "INSERT INTO order_events VALUES (1, 2, 1005, 'SENT', NULL, 'PENDING', NULL, '0', NULL, NULL)",
    "INSERT INTO order_events VALUES (1, 3, 1200, 'UPDATE', 'user_stream', 'PARTIAL',"
    " 'PARTIALLY_FILLED', '0.00000500', '{}', NULL)",
    "INSERT INTO exchange_info_cache VALUES (1, X'7B7D', 999)",
)
"""Data written by a version-1 journal. Later migrations only add, so it fits every later
version's tables too (a migration that changes columns needs a seed of its own here)."""


def make_journal_at_version(path: Path, version: int, *, seed: bool = True) -> None:
    """Apply ``MIGRATIONS[:version]`` by hand, as that version of Genesis left the file."""
    with connect(path) as conn:
        for script in MIGRATIONS[:version]:
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
        if seed and version >= 1:
            for statement in V1_SEED:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version}")


@pytest.mark.parametrize("version", range(len(MIGRATIONS)))
async def test_every_earlier_version_migrates_with_its_data(tmp_path: Path, version: int) -> None:
    path = tmp_path / "genesis.db"
    make_journal_at_version(path, version)
    async with journal_at(path) as journal:
        assert journal.statistics().schema_version == len(MIGRATIONS)
        if version == 0:
            assert journal.statistics().orders == 0
            return
        entry = await journal.get("seed0001-1")
        events = await journal.history("seed0001-1")
        cached = await journal.cached_exchange_info()
        unfinished = await journal.unfinished()
        later = await journal.record_intent(limit_buy(), now_ms=2000)
        stats = journal.statistics()
    with connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert journal.prefix == "seed0001"
    assert entry is not None
    assert entry.request == OrderRequest.limit(
        symbol="BTCUSDT",
        side=OrderSide.BUY,
        quantity=D("0.00001000"),
        price=D("50000.01"),
        client_order_id="seed0001-1",
    )
    assert (entry.status, entry.exchange_status, entry.exchange_order_id) == (
        OrderStatus.PARTIAL,
        "PARTIALLY_FILLED",
        77,
    )
    assert decimal_to_wire(entry.filled_quantity) == "0.00000500"
    # v2 backfills it from the SENT event; a v2+ file's seed was written with v1's columns only.
    assert entry.sent_at_ms == (1005 if version < 2 else None)
    assert [(e.seq, e.kind, e.source) for e in events] == [
        (1, JournalEventKind.INTENT, None),
        (2, JournalEventKind.SENT, None),
        (3, JournalEventKind.UPDATE, STREAM),
    ]
    assert cached == (b"{}", 999)
    assert [e.client_order_id for e in unfinished] == ["seed0001-1"]
    assert later.client_order_id == "seed0001-2"
    assert (stats.orders, stats.unfinished, stats.events, stats.outbox) == (2, 2, 4, 0)


async def test_a_journal_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "genesis.db"
    make_journal_at_version(path, len(MIGRATIONS))
    with connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(SchemaVersionError, match="newer"):
        async with journal_at(path):
            pass  # pragma: no cover
    with connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) + 1
        assert conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 1


async def test_a_failed_migration_step_is_rolled_back_whole(tmp_path: Path) -> None:
    path = tmp_path / "genesis.db"
    make_journal_at_version(path, 1)
    with connect(path) as conn:  # v2's ALTER TABLE succeeds, then its CREATE INDEX clashes
        conn.execute("CREATE INDEX orders_status ON orders (symbol)")
    with pytest.raises(JournalError, match="orders_status"):
        async with journal_at(path):
            pass  # pragma: no cover
    with connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        columns = [row[1] for row in conn.execute("PRAGMA table_info(orders)")]
        assert "sent_at_ms" not in columns


# -- updates and history ----------------------------------------------------------------------


async def test_a_late_report_never_regresses_the_order() -> None:
    async with journal_at() as journal:
        cid = (await journal.record_intent(limit_buy(), now_ms=1)).client_order_id
        assert await journal.record_update(report(cid, "FILLED", "1"), source=STREAM, now_ms=2)
        assert not await journal.record_update(report(cid, "NEW"), source=REST, now_ms=3)
        assert not await journal.record_update(
            report(cid, "PARTIALLY_FILLED", "0.4"), source=REST, now_ms=4
        )
        entry = await journal.get(cid)
    assert entry is not None
    assert (entry.status, entry.exchange_status, entry.filled_quantity) == (
        OrderStatus.FILLED,
        "FILLED",
        D("1"),
    )
    assert entry.updated_ms == 2


async def test_fills_never_decrease_even_under_a_further_status() -> None:
    async with journal_at() as journal:
        cid = (await journal.record_intent(limit_buy(), now_ms=1)).client_order_id
        await journal.record_update(report(cid, "PARTIALLY_FILLED", "0.5"), source=STREAM, now_ms=2)
        # A locally concluded rejection (no exchange status) cannot erase a reported fill.
        local = report(cid, None, status=OrderStatus.REJECTED, exchange_order_id=None)
        assert await journal.record_update(local, source=REST, reason="-2013", now_ms=3)
        after_local = await journal.get(cid)
        # ...and the exchange's own terminal report outranks the local conclusion.
        assert await journal.record_update(report(cid, "CANCELED", "0.5"), source=REST, now_ms=4)
        final = await journal.get(cid)
    assert after_local is not None
    assert final is not None
    assert (after_local.status, after_local.filled_quantity) == (OrderStatus.REJECTED, D("0.5"))
    assert (final.status, final.exchange_status, final.filled_quantity) == (
        OrderStatus.CANCELLED,
        "CANCELED",
        D("0.5"),
    )
    assert final.exchange_order_id == 42


@st.composite
def lifecycles(draw: st.DrawFn) -> list[tuple[str, Decimal]]:
    """One order's true sequence of reports, in the order the exchange made them."""
    lots = sorted(draw(st.sets(st.integers(1, 999), max_size=4)))
    reports = [("NEW", D(0))] + [("PARTIALLY_FILLED", D(lot) / 1000) for lot in lots]
    ending = draw(st.sampled_from(["FILLED", "CANCELED", "EXPIRED", None]))
    if ending == "FILLED":
        reports.append(("FILLED", D(1)))
    elif ending is not None:
        reports.append((ending, reports[-1][1]))
    return reports


@given(
    lifecycles().flatmap(
        lambda reports: st.tuples(st.just(reports), st.permutations([*reports, ("UNKNOWN", D(0))]))
    ),
    st.sampled_from(list(OrderUpdateSource)),
)
async def test_shuffled_reports_end_at_the_most_advanced(
    case: tuple[list[tuple[str, Decimal]], list[tuple[str, Decimal]]],
    source: OrderUpdateSource,
) -> None:
    lifecycle, arrivals = case
    async with journal_at() as journal:
        cid = (await journal.record_intent(limit_buy(), now_ms=0)).client_order_id
        filled_seen = [D(0)]
        for at_ms, (name, filled) in enumerate(arrivals, start=1):
            if name == "UNKNOWN":  # the REST call gave up, whenever that happened
                await journal.record_unknown(cid, reason="timeout", sent_at_ms=0, now_ms=at_ms)
            else:
                order = report(cid, name, decimal_to_wire(filled))
                await journal.record_update(order, source=source, now_ms=at_ms)
            now = await journal.get(cid)
            assert now is not None
            filled_seen.append(now.filled_quantity)
        entry = await journal.get(cid)
        events = await journal.history(cid)
    assert filled_seen == sorted(filled_seen)
    assert entry is not None
    assert (entry.exchange_status, entry.filled_quantity) == lifecycle[-1]
    assert entry.status is OrderStatus.from_binance(lifecycle[-1][0])
    assert [e.seq for e in events] == list(range(1, len(arrivals) + 2))


async def test_history_returns_every_event_in_order() -> None:
    async with journal_at() as journal:
        cid = (await journal.record_intent(limit_buy(), now_ms=10)).client_order_id
        await journal.record_sent(cid, sent_at_ms=11)
        await journal.record_update(report(cid, "NEW"), source=REST, now_ms=12)
        await journal.record_update(
            report(cid, "PARTIALLY_FILLED", "0.3"), source=STREAM, now_ms=13
        )
        await journal.record_update(report(cid, "NEW"), source=REST, reason="stale", now_ms=14)
        await journal.record_update(report(cid, "FILLED", "1"), source=STREAM, now_ms=15)
        events = await journal.history(cid)
        entry = await journal.get(cid)
        with pytest.raises(OrderNotFoundError):
            await journal.history("nope")
    assert entry is not None
    assert [(e.seq, e.at_ms, e.kind, e.source, e.exchange_status) for e in events] == [
        (1, 10, JournalEventKind.INTENT, None, None),
        (2, 11, JournalEventKind.SENT, None, None),
        (3, 12, JournalEventKind.UPDATE, REST, "NEW"),
        (4, 13, JournalEventKind.UPDATE, STREAM, "PARTIALLY_FILLED"),
        (5, 14, JournalEventKind.UPDATE, REST, "NEW"),
        (6, 15, JournalEventKind.UPDATE, STREAM, "FILLED"),
    ]
    assert [e.filled_quantity for e in events] == [D(0), D(0), D(0), D("0.3"), D(0), D(1)]
    assert events[4].reason == "stale"
    assert {e.order_id for e in events} == {entry.id}
    assert events[0].payload is not None
    assert '"quantity":"1"' in events[0].payload
    assert events[5].payload is not None
    assert '"filled_quantity":"1"' in events[5].payload
    assert (entry.sent_at_ms, entry.exchange_order_id, entry.updated_ms) == (11, 42, 15)


async def test_an_intent_is_claimed_for_sending_once() -> None:
    async with journal_at() as journal:
        cid = (await journal.record_intent(limit_buy(), now_ms=1)).client_order_id
        await journal.record_sent(cid, sent_at_ms=5)
        with pytest.raises(AlreadySentError):
            await journal.record_sent(cid, sent_at_ms=6)
        with pytest.raises(OrderNotFoundError):
            await journal.record_sent("nope", sent_at_ms=6)
        entry = await journal.get(cid)
    assert entry is not None
    assert (entry.sent_at_ms, entry.updated_ms) == (5, 1)


async def test_an_unknown_outcome_is_kept_for_the_resolver_and_resolved() -> None:
    async with journal_at() as journal:
        cid = (await journal.record_intent(limit_buy(), now_ms=1)).client_order_id
        await journal.record_sent(cid, sent_at_ms=2)
        became = await journal.record_unknown(cid, reason="read timeout", sent_at_ms=3, now_ms=4)
        unknown = await journal.get(cid)
        assert await journal.record_update(report(cid, "NEW"), source=REST, now_ms=5)
        resolved = await journal.get(cid)
        events = await journal.history(cid)
    assert became
    assert unknown is not None
    assert (unknown.status, unknown.sent_at_ms, unknown.updated_ms) == (OrderStatus.UNKNOWN, 3, 4)
    assert resolved is not None
    assert (resolved.status, resolved.exchange_status) == (OrderStatus.PENDING, "NEW")
    assert [e.kind for e in events][2:] == [JournalEventKind.UNKNOWN, JournalEventKind.RESOLVED]
    assert (events[2].reason, events[2].payload) == ("read timeout", '{"sent_at_ms":3}')


async def test_an_unknown_outcome_after_the_exchange_reported_changes_nothing() -> None:
    async with journal_at() as journal:
        cid = (await journal.record_intent(limit_buy(), now_ms=1)).client_order_id
        await journal.record_update(report(cid, "NEW"), source=STREAM, now_ms=2)
        became = await journal.record_unknown(cid, reason="read timeout", sent_at_ms=3, now_ms=4)
        entry = await journal.get(cid)
        with pytest.raises(OrderNotFoundError):
            await journal.record_unknown("nope", reason="x", sent_at_ms=3, now_ms=4)
    assert not became
    assert entry is not None
    assert (entry.status, entry.exchange_status, entry.updated_ms) == (
        OrderStatus.PENDING,
        "NEW",
        2,
    )
    assert entry.sent_at_ms == 3


async def test_an_update_for_an_order_the_journal_never_saw_is_refused() -> None:
    async with journal_at() as journal:
        with pytest.raises(OrderNotFoundError):
            await journal.record_update(report("nope", "NEW"), source=REST, now_ms=1)
        assert await journal.get("nope") is None


@given(
    quantity=st.decimals(min_value=D("1e-8"), max_value=D("1e9"), places=8),
    price=st.decimals(min_value=D("1e-8"), max_value=D("1e9"), places=8),
    fraction=st.decimals(min_value=D("1e-12"), max_value=1, places=12),
)
async def test_decimals_round_trip_exactly(
    quantity: Decimal, price: Decimal, fraction: Decimal
) -> None:
    request = OrderRequest.limit(
        symbol="ETHUSDT", side=OrderSide.SELL, quantity=quantity, price=price
    )
    filled = quantity * fraction
    async with journal_at() as journal:
        cid = (await journal.record_intent(request, now_ms=1)).client_order_id
        wire = (decimal_to_wire(filled), decimal_to_wire(quantity))
        order = report(cid, "PARTIALLY_FILLED", wire[0], quantity=wire[1])
        await journal.record_update(order, source=REST, now_ms=2)
        entry = await journal.get(cid)
        events = await journal.history(cid)
    assert entry is not None
    assert entry.request is not None
    assert (entry.request.quantity, entry.request.price) == (quantity, price)
    assert entry.request.price is not None
    assert decimal_to_wire(entry.request.price) == decimal_to_wire(price)
    assert entry.filled_quantity == filled
    assert decimal_to_wire(entry.filled_quantity) == decimal_to_wire(filled)
    assert events[-1].filled_quantity == filled
    assert decimal_to_wire(events[-1].filled_quantity) == decimal_to_wire(filled)


# -- queries, external orders, exchangeInfo ---------------------------------------------------


async def test_unfinished_lists_pending_partial_and_unknown_only() -> None:
    async with journal_at() as journal:
        ids = [
            (await journal.record_intent(limit_buy(), now_ms=i)).client_order_id for i in range(7)
        ]
        await journal.record_update(
            report(ids[1], "PARTIALLY_FILLED", "0.1"), source=REST, now_ms=9
        )
        await journal.record_unknown(ids[2], reason="5xx", sent_at_ms=9, now_ms=9)
        for cid, name in zip(ids[3:], ("FILLED", "CANCELED", "REJECTED", "EXPIRED"), strict=True):
            await journal.record_update(
                report(cid, name, "1" if name == "FILLED" else "0"), source=REST, now_ms=9
            )
        await journal.record_update(report(ids[0], "NEW"), source=REST, now_ms=10)
        unfinished = await journal.unfinished()
        assert journal.statistics().unfinished == 3
    assert [(e.client_order_id, e.status) for e in unfinished] == [
        (ids[0], OrderStatus.PENDING),
        (ids[1], OrderStatus.PARTIAL),
        (ids[2], OrderStatus.UNKNOWN),
    ]


async def test_external_orders_are_journaled_as_such(caplog: pytest.LogCaptureFixture) -> None:
    async with journal_at() as journal:
        found = report("web_abc123", "PARTIALLY_FILLED", "0.2")
        entry = await journal.record_external(found, now_ms=7)
        with pytest.raises(DuplicateOrderError):
            await journal.record_external(found, now_ms=8)
        with pytest.raises(AlreadySentError):
            await journal.record_sent("web_abc123", sent_at_ms=8)
        assert await journal.record_update(
            report("web_abc123", "FILLED", "1"), source=STREAM, now_ms=9
        )
        events = await journal.history("web_abc123")
        with caplog.at_level(logging.WARNING, logger="genesis.orders.journal"):
            await journal.record_external(report(f"{journal.prefix}-77", "NEW"), now_ms=10)
        stats = journal.statistics()
    assert (entry.external, entry.request, entry.created_ms) == (True, None, 7)
    assert (entry.status, entry.exchange_order_id, entry.filled_quantity) == (
        OrderStatus.PARTIAL,
        42,
        D("0.2"),
    )
    assert [(e.kind, e.source) for e in events] == [
        (JournalEventKind.EXTERNAL, OrderUpdateSource.RECONCILE),
        (JournalEventKind.UPDATE, STREAM),
    ]
    assert "journal.external_own_prefix" in caplog.text
    assert (stats.orders, stats.unfinished, stats.events) == (2, 1, 3)


async def test_exchange_info_is_cached_and_replaced() -> None:
    async with journal_at() as journal:
        assert await journal.cached_exchange_info() is None
        await journal.cache_exchange_info(b'{"symbols":[]}', fetched_ms=1000)
        first = await journal.cached_exchange_info()
        await journal.cache_exchange_info(b'{"symbols":[1]}', fetched_ms=2000)
        second = await journal.cached_exchange_info()
    assert first == (b'{"symbols":[]}', 1000)
    assert second == (b'{"symbols":[1]}', 2000)
    assert exchange_info_is_fresh(2000, now_ms=2000 + EXCHANGE_INFO_MAX_AGE_MS - 1)
    assert not exchange_info_is_fresh(2000, now_ms=2000 + EXCHANGE_INFO_MAX_AGE_MS)


async def test_corrupt_rows_are_journal_errors(tmp_path: Path) -> None:
    path = tmp_path / "genesis.db"
    async with journal_at(path) as journal:
        a = (await journal.record_intent(limit_buy(), now_ms=1)).client_order_id
        b = (await journal.record_intent(limit_buy(), now_ms=1)).client_order_id
        with connect(path) as other:
            other.execute("UPDATE orders SET status = 'BOGUS' WHERE client_order_id = ?", (a,))
            other.execute("UPDATE orders SET request = 'not json' WHERE client_order_id = ?", (b,))
            other.execute("UPDATE order_events SET kind = 'BOGUS' WHERE seq = 1")
        with pytest.raises(JournalError, match="corrupt journal order row"):
            await journal.get(a)
        with pytest.raises(JournalError, match="corrupt journal order row"):
            await journal.unfinished()
        with pytest.raises(JournalError, match="corrupt journal event"):
            await journal.history(a)
