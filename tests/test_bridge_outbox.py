"""The journal's outbox: order events wait on disk until the broker acknowledged them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from genesis.bridge import encode_message
from genesis.bus import EventBus
from genesis.models.events import AccountBalances, OrderUpdate, OrderUpdateSource
from genesis.models.orders import Order, OrderStatus
from genesis.orders.journal import (
    DuplicateOrderError,
    OrderNotFoundError,
    OutboxMessage,
    open_journal,
)
from genesis.orders.service import OrderRecorder
from tests.test_bridge_ids import balances, order_update
from tests.test_journal import limit_buy, report

if TYPE_CHECKING:
    from pathlib import Path


def message(n: int) -> OutboxMessage:
    return OutboxMessage(
        subject="genesis.order.BTCUSDT", msg_id=f"order:BTCUSDT:x-{n}:d", payload=b'{"n": %d}' % n
    )


async def test_outbox_keeps_messages_in_order_until_done(tmp_path: Path) -> None:
    path = tmp_path / "genesis.db"
    async with open_journal(path) as journal:
        await journal.outbox_put([message(1), message(2)], now_ms=10)
        await journal.outbox_put([message(3)], now_ms=20)
        first_two = await journal.outbox_pending(2)
        assert [e.message for e in first_two] == [message(1), message(2)]
        assert [e.created_ms for e in first_two] == [10, 10]
        assert journal.statistics().outbox == 3
        await journal.outbox_done([first_two[0].id, 999_999])  # an unknown id is ignored
        assert journal.statistics().outbox == 2
    # A restart (the broker was away when the process stopped) finds what still waits.
    async with open_journal(path) as journal:
        assert journal.statistics().outbox == 2
        pending = await journal.outbox_pending(10)
        assert [e.message for e in pending] == [message(2), message(3)]
        await journal.outbox_done([e.id for e in pending])
        assert await journal.outbox_pending(10) == []
        assert journal.statistics().outbox == 0


async def test_an_empty_put_and_done_change_nothing() -> None:
    async with open_journal(":memory:") as journal:
        await journal.outbox_put([], now_ms=1)
        await journal.outbox_done([])
        assert journal.statistics().outbox == 0
        assert await journal.outbox_pending(5) == []


# --- updates kept with their record (Journal.keep_updates_in_outbox) -------------------------


async def test_a_journaled_update_is_in_the_outbox_even_if_nothing_read_the_bus(
    tmp_path: Path,
) -> None:
    path = tmp_path / "genesis.db"
    first = order_update(filled="0.1", cid="x-1")
    second = order_update(filled="0.2", cid="x-1")
    async with open_journal(path) as journal:
        journal.keep_updates_in_outbox(encode_message)
        recorder = OrderRecorder(journal, EventBus().publish, lambda: 1_000)
        await recorder.record(first.order, first.source)  # external: the journal never saw it
        await recorder.record(second.order, second.source)  # an update of a journaled order
        assert journal.statistics().outbox == 2
        # The process dies here: no bridge ever read the bus.
    async with open_journal(path) as journal:
        pending = await journal.outbox_pending(10)
    assert [e.message for e in pending] == [encode_message(first), encode_message(second)]
    assert [e.created_ms for e in pending] == [1_000, 1_000]


async def test_only_an_order_that_became_unknown_keeps_its_update() -> None:
    async with open_journal(":memory:") as journal:
        journal.keep_updates_in_outbox(encode_message)
        fresh = await journal.record_intent(limit_buy(), now_ms=1)
        reported = await journal.record_intent(limit_buy(), now_ms=1)
        for entry in (fresh, reported):
            await journal.record_sent(entry.client_order_id, sent_at_ms=2)
        acked = report(reported.client_order_id, "NEW")
        await journal.record_update(acked, source=OrderUpdateSource.USER_STREAM, now_ms=3)
        updates = {
            entry.client_order_id: OrderUpdate(
                order=Order.from_request(
                    limit_buy(),
                    client_order_id=entry.client_order_id,
                    status=OrderStatus.UNKNOWN,
                    created_ms=2,
                ),
                source=OrderUpdateSource.REST,
                reason="timeout",
            )
            for entry in (fresh, reported)
        }
        became = {
            cid: await journal.record_unknown(
                cid,
                reason="timeout",
                sent_at_ms=2,
                now_ms=4,
                outbox=journal.outbox_message(update),
            )
            for cid, update in updates.items()
        }
        pending = await journal.outbox_pending(10)
    # The exchange had reported the second order already: it is not UNKNOWN, nothing is kept.
    assert became == {fresh.client_order_id: True, reported.client_order_id: False}
    assert [e.message for e in pending] == [encode_message(updates[fresh.client_order_id])]


async def test_a_record_that_fails_keeps_nothing_in_the_outbox() -> None:
    async with open_journal(":memory:") as journal:
        journal.keep_updates_in_outbox(encode_message)
        update = order_update(cid="x-9")
        message = journal.outbox_message(update)
        await journal.record_external(update.order, now_ms=1, outbox=message)
        with pytest.raises(DuplicateOrderError):
            await journal.record_external(update.order, now_ms=2, outbox=message)
        missing = order_update(cid="x-10")
        with pytest.raises(OrderNotFoundError):
            await journal.record_update(
                missing.order,
                source=missing.source,
                now_ms=3,
                outbox=journal.outbox_message(missing),
            )
        assert journal.statistics().outbox == 1
        assert [e.message for e in await journal.outbox_pending(10)] == [encode_message(update)]


async def test_without_a_bridge_no_update_is_kept() -> None:
    async with open_journal(":memory:") as journal:
        recorder = OrderRecorder(journal, EventBus().publish, lambda: 1_000)
        update = order_update(cid="x-1")
        await recorder.record(update.order, update.source)
        assert journal.statistics().outbox == 0
        assert await journal.outbox_pending(10) == []


async def test_an_update_the_encoder_cannot_encode_is_still_journaled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(update: OrderUpdate) -> OutboxMessage:
        raise ValueError("a bug in the broker's encoding")

    async with open_journal(":memory:") as journal:
        journal.keep_updates_in_outbox(broken)
        recorder = OrderRecorder(journal, EventBus().publish, lambda: 1_000)
        update = order_update(cid="x-1")
        await recorder.record(update.order, update.source)
        entry = await journal.get("x-1")
        stats = journal.statistics()
    assert entry is not None  # the order's record is kept whatever the broker's copy does
    assert (stats.outbox, stats.outbox_unencodable) == (0, 1)
    (line,) = [r for r in caplog.records if r.getMessage().startswith("journal.outbox_unencodable")]
    assert line.levelname == "ERROR"
    assert "client_order_id=x-1" in line.getMessage()


# --- balance events (Journal.keep_balances_in_outbox) ------------------------------------------


async def test_a_balance_event_is_in_the_outbox_before_it_is_on_the_bus(tmp_path: Path) -> None:
    path = tmp_path / "genesis.db"
    event = balances(free="2")
    bus = EventBus()
    seen = bus.subscribe(AccountBalances)
    outbox_when_published: list[int] = []

    async with open_journal(path) as journal:

        async def publish(published: AccountBalances) -> None:
            outbox_when_published.append(journal.statistics().outbox)
            await bus.publish(published)

        journal.keep_balances_in_outbox(encode_message)
        recorder = OrderRecorder(journal, bus.publish, lambda: 1_000)
        await recorder.record_balances(event, publish)
        assert seen.receive_nowait() == event
        # The process dies here: no bridge ever read the bus.
    assert outbox_when_published == [1]
    async with open_journal(path) as journal:
        pending = await journal.outbox_pending(10)
    assert [e.message for e in pending] == [encode_message(event)]
    assert [e.created_ms for e in pending] == [1_000]


async def test_without_a_bridge_a_balance_event_only_goes_on_the_bus() -> None:
    bus = EventBus()
    seen = bus.subscribe(AccountBalances)
    async with open_journal(":memory:") as journal:
        recorder = OrderRecorder(journal, bus.publish, lambda: 1_000)
        await recorder.record_balances(balances(), bus.publish)
        assert journal.statistics().outbox == 0
    assert seen.receive_nowait() == balances()


async def test_a_balance_event_the_encoder_cannot_encode_is_still_published(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(event: AccountBalances) -> OutboxMessage:
        raise ValueError("a bug in the broker's encoding")

    bus = EventBus()
    seen = bus.subscribe(AccountBalances)
    async with open_journal(":memory:") as journal:
        journal.keep_balances_in_outbox(broken)
        recorder = OrderRecorder(journal, bus.publish, lambda: 1_000)
        await recorder.record_balances(balances(), bus.publish)
        stats = journal.statistics()
    assert seen.receive_nowait() == balances()
    assert (stats.outbox, stats.outbox_unencodable) == (0, 1)
    (line,) = [r for r in caplog.records if r.getMessage().startswith("journal.outbox_unencodable")]
    assert line.levelname == "ERROR"
    assert "balances_time_ms=4" in line.getMessage()
