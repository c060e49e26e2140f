"""The journal's outbox: order events wait on disk until the broker acknowledged them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from genesis.orders.journal import OutboxMessage, open_journal

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
