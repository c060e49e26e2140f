"""EventBus: routing by type, order per publisher, overflow policies, backpressure, statistics."""

from __future__ import annotations

from decimal import Decimal
from typing import TypeVar

import attrs
import pytest
import trio
import trio.testing

from genesis.bus import MARKET_DATA_POLICIES, EventBus, OverflowPolicy, Subscription
from genesis.models.events import Alert, FeedGap
from genesis.models.market import Depth, Kline, OrderBook, PriceLevel, Ticker, Trade
from genesis.models.state import MarketState

_T = TypeVar("_T")


@attrs.frozen
class OrderUpdate:
    """Stand-in for the future order event: unregistered, hence never dropped."""

    order_id: int


@attrs.frozen
class FilledUpdate(OrderUpdate):
    fill_qty: Decimal = Decimal(0)


def trade(trade_id: int, symbol: str = "BTCUSDT") -> Trade:
    return Trade(
        symbol=symbol,
        trade_id=trade_id,
        price=Decimal("100.5"),
        quantity=Decimal("0.1"),
        trade_time_ms=1_000 + trade_id,
        event_time_ms=1_000 + trade_id,
        buyer_is_maker=False,
    )


def ticker(event_time_ms: int, symbol: str = "BTCUSDT") -> Ticker:
    d = Decimal("1")
    return Ticker(
        symbol=symbol,
        event_time_ms=event_time_ms,
        price_change=d,
        price_change_percent=d,
        weighted_avg_price=d,
        last_price=d,
        last_quantity=d,
        best_bid=d,
        best_bid_quantity=d,
        best_ask=d,
        best_ask_quantity=d,
        open_price=d,
        high_price=d,
        low_price=d,
        volume=d,
        quote_volume=d,
        open_time_ms=0,
        close_time_ms=event_time_ms,
        first_trade_id=0,
        last_trade_id=1,
        trade_count=2,
    )


def depth(last_update_id: int, symbol: str = "BTCUSDT") -> Depth:
    level = PriceLevel(Decimal("1"), Decimal("2"))
    return Depth(symbol=symbol, last_update_id=last_update_id, bids=(level,), asks=(level,))


def drain(sub: Subscription[_T]) -> list[_T]:
    out: list[_T] = []
    while True:
        try:
            out.append(sub.receive_nowait())
        except trio.WouldBlock:
            return out


def test_default_policies_let_market_data_drop_and_keep_everything_else() -> None:
    bus = EventBus()
    assert bus.policy_for(Trade) is OverflowPolicy.DROP_OLDEST
    assert bus.policy_for(Kline) is OverflowPolicy.DROP_OLDEST
    assert bus.policy_for(Ticker) is OverflowPolicy.CONFLATE
    assert bus.policy_for(Depth) is OverflowPolicy.CONFLATE
    assert bus.policy_for(OrderUpdate) is OverflowPolicy.NEVER_DROP
    assert dict(MARKET_DATA_POLICIES) == {
        Trade: OverflowPolicy.DROP_OLDEST,
        Kline: OverflowPolicy.DROP_OLDEST,
        Ticker: OverflowPolicy.CONFLATE,
        Depth: OverflowPolicy.CONFLATE,
        OrderBook: OverflowPolicy.CONFLATE,
        MarketState: OverflowPolicy.CONFLATE,
    }
    assert bus.policy_for(Alert) is OverflowPolicy.NEVER_DROP
    assert bus.policy_for(FeedGap) is OverflowPolicy.NEVER_DROP


def test_policy_is_found_along_the_mro() -> None:
    bus = EventBus({OrderUpdate: OverflowPolicy.DROP_OLDEST})
    assert bus.policy_for(FilledUpdate) is OverflowPolicy.DROP_OLDEST
    assert EventBus({}, default_policy=OverflowPolicy.CONFLATE).policy_for(Trade) is (
        OverflowPolicy.CONFLATE
    )


async def test_subscribers_get_only_their_types() -> None:
    bus = EventBus()
    trades = bus.subscribe(Trade)
    orders = bus.subscribe(OrderUpdate)
    both = bus.subscribe(Trade, OrderUpdate)
    everything = bus.subscribe(object)
    events: list[object] = [trade(1), OrderUpdate(1), ticker(5), FilledUpdate(2), trade(2)]
    for event in events:
        await bus.publish(event)
    assert drain(trades) == [trade(1), trade(2)]
    assert drain(orders) == [OrderUpdate(1), FilledUpdate(2)]  # subclasses are routed too
    assert drain(both) == [trade(1), OrderUpdate(1), FilledUpdate(2), trade(2)]
    assert drain(everything) == events


async def test_each_publisher_order_is_preserved() -> None:
    bus = EventBus()
    sub = bus.subscribe(Trade, OrderUpdate, buffer_size=1000)

    async def publish_trades() -> None:
        for i in range(100):
            bus.publish_nowait(trade(i))
            await trio.lowlevel.checkpoint()

    async def publish_orders() -> None:
        for i in range(100):
            await bus.publish(OrderUpdate(i))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(publish_trades)
        nursery.start_soon(publish_orders)
    received = drain(sub)
    assert [e.trade_id for e in received if isinstance(e, Trade)] == list(range(100))
    assert [e.order_id for e in received if isinstance(e, OrderUpdate)] == list(range(100))
    assert len(received) == 200


async def test_drop_oldest_keeps_the_newest_and_counts_the_rest() -> None:
    bus = EventBus()
    slow = bus.subscribe(Trade, buffer_size=3)
    fast = bus.subscribe(Trade, buffer_size=10)
    for i in range(1, 6):
        bus.publish_nowait(trade(i))
    assert [e.trade_id for e in drain(slow)] == [3, 4, 5]
    assert [e.trade_id for e in drain(fast)] == [1, 2, 3, 4, 5]
    stats = bus.statistics()
    assert stats.published == 5
    assert stats.dropped == 2
    assert stats.dropped_by_type == {"Trade": 2}
    assert stats.delivered == 8


async def test_conflate_keeps_latest_per_type_and_symbol() -> None:
    bus = EventBus()
    sub = bus.subscribe(Ticker, Depth, Trade, buffer_size=10)
    bus.publish_nowait(ticker(1, "BTCUSDT"))
    bus.publish_nowait(trade(1))
    bus.publish_nowait(ticker(1, "ETHUSDT"))
    bus.publish_nowait(ticker(2, "BTCUSDT"))
    bus.publish_nowait(depth(10))
    bus.publish_nowait(ticker(3, "BTCUSDT"))
    bus.publish_nowait(depth(11))
    # The newest BTC ticker takes the place of the first one; depth likewise.
    assert drain(sub) == [ticker(3, "BTCUSDT"), trade(1), ticker(1, "ETHUSDT"), depth(11)]
    assert bus.statistics().dropped_by_type == {"Ticker": 2, "Depth": 1}
    # Once received, the next value for the key queues again.
    bus.publish_nowait(ticker(4, "BTCUSDT"))
    assert drain(sub) == [ticker(4, "BTCUSDT")]


async def test_conflate_on_a_full_channel_evicts_the_oldest_droppable() -> None:
    bus = EventBus()
    sub = bus.subscribe(Ticker, Trade, buffer_size=2)
    bus.publish_nowait(trade(1))
    bus.publish_nowait(ticker(1))
    bus.publish_nowait(ticker(1, "ETHUSDT"))
    assert drain(sub) == [ticker(1), ticker(1, "ETHUSDT")]
    assert bus.statistics().dropped_by_type == {"Trade": 1}


async def test_never_drop_publish_waits_for_room(autojump_clock: trio.abc.Clock) -> None:
    bus = EventBus()
    sub = bus.subscribe(OrderUpdate, buffer_size=2)
    received: list[tuple[float, object]] = []

    async def slow_consumer() -> None:
        await trio.sleep(5)
        async for event in sub:
            received.append((trio.current_time(), event))
            if len(received) == 3:
                return

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_consumer)
            for i in range(3):
                await bus.publish(OrderUpdate(i))
            # The third publish could only complete once the consumer made room at t=5.
            assert trio.current_time() == 5.0
    assert [e for _, e in received] == [OrderUpdate(0), OrderUpdate(1), OrderUpdate(2)]
    assert bus.statistics().dropped == 0


async def test_never_drop_publish_nowait_raises_and_delivers_to_nobody() -> None:
    bus = EventBus()
    full = bus.subscribe(OrderUpdate, buffer_size=1)
    roomy = bus.subscribe(OrderUpdate, buffer_size=10)
    bus.publish_nowait(OrderUpdate(1))
    with pytest.raises(trio.WouldBlock):
        bus.publish_nowait(OrderUpdate(2))
    assert drain(full) == [OrderUpdate(1)]
    assert drain(roomy) == [OrderUpdate(1)]  # all or nothing: not delivered here either
    assert bus.statistics().published == 1
    assert bus.statistics().dropped == 0


async def test_never_drop_event_evicts_market_data_rather_than_wait() -> None:
    bus = EventBus()
    sub = bus.subscribe(Trade, OrderUpdate, buffer_size=2)
    bus.publish_nowait(trade(1))
    bus.publish_nowait(trade(2))
    bus.publish_nowait(OrderUpdate(7))
    await bus.publish(OrderUpdate(8))
    assert drain(sub) == [OrderUpdate(7), OrderUpdate(8)]
    assert bus.statistics().dropped_by_type == {"Trade": 2}


async def test_market_data_is_dropped_when_the_channel_is_full_of_order_events() -> None:
    bus = EventBus()
    sub = bus.subscribe(Trade, OrderUpdate, buffer_size=2)
    bus.publish_nowait(OrderUpdate(1))
    bus.publish_nowait(OrderUpdate(2))
    bus.publish_nowait(trade(1))
    assert drain(sub) == [OrderUpdate(1), OrderUpdate(2)]
    assert bus.statistics().dropped_by_type == {"Trade": 1}


async def test_statistics_count_per_type_and_subscribers() -> None:
    bus = EventBus()
    sub_a = bus.subscribe(Trade)
    sub_b = bus.subscribe(OrderUpdate)
    await bus.publish(trade(1))
    await bus.publish(OrderUpdate(1))
    await bus.publish(OrderUpdate(2))
    await bus.publish(ticker(1))  # nobody listens: published, not delivered
    assert await sub_a.receive() == trade(1)
    assert await sub_b.receive() == OrderUpdate(1)
    stats = bus.statistics()
    assert stats.published == 4
    assert stats.published_by_type == {"Trade": 1, "OrderUpdate": 2, "Ticker": 1}
    assert stats.delivered == 2
    assert stats.delivered_by_type == {"Trade": 1, "OrderUpdate": 1}
    assert stats.dropped == 0
    assert stats.subscribers == 2
    assert sub_b.queued == 1
    await sub_a.aclose()
    assert bus.statistics().subscribers == 1


async def test_subscription_context_closes_cleanly() -> None:
    bus = EventBus()
    async with bus.subscribe(Trade) as sub:
        bus.publish_nowait(trade(1))
        assert sub.event_types == (Trade,)
        assert await sub.receive() == trade(1)
    assert bus.statistics().subscribers == 0
    with pytest.raises(trio.ClosedResourceError):
        await sub.receive()
    bus.publish_nowait(trade(2))  # no subscriber left: nothing queued anywhere
    sub.close()  # idempotent


async def test_closing_a_subscription_wakes_its_receiver() -> None:
    bus = EventBus()
    sub = bus.subscribe(Trade)
    with trio.fail_after(10):  # a hang detector, not a speed test
        async with trio.open_nursery() as nursery:

            async def close_soon() -> None:
                await trio.testing.wait_all_tasks_blocked()
                sub.close()

            nursery.start_soon(close_soon)
            with pytest.raises(trio.ClosedResourceError):
                await sub.receive()


async def test_bus_close_ends_iteration_after_draining() -> None:
    bus = EventBus()
    sub = bus.subscribe(Trade)
    bus.publish_nowait(trade(1))
    bus.publish_nowait(trade(2))
    bus.close()
    bus.close()
    assert [event async for event in sub] == [trade(1), trade(2)]
    with pytest.raises(trio.ClosedResourceError):
        bus.publish_nowait(trade(3))
    with pytest.raises(trio.ClosedResourceError):
        await bus.publish(OrderUpdate(1))
    with pytest.raises(trio.ClosedResourceError):
        bus.subscribe(Trade)


async def test_blocked_publisher_skips_a_subscriber_that_leaves(
    autojump_clock: trio.abc.Clock,
) -> None:
    bus = EventBus()
    leaving = bus.subscribe(OrderUpdate, buffer_size=1)
    staying = bus.subscribe(OrderUpdate, buffer_size=5)
    await bus.publish(OrderUpdate(1))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:

            async def leave_later() -> None:
                await trio.sleep(3)
                await leaving.aclose()

            nursery.start_soon(leave_later)
            await bus.publish(OrderUpdate(2))
            assert trio.current_time() == 3.0
    assert drain(staying) == [OrderUpdate(1), OrderUpdate(2)]


async def test_blocked_publisher_fails_when_the_bus_closes(autojump_clock: trio.abc.Clock) -> None:
    bus = EventBus()
    bus.subscribe(OrderUpdate, buffer_size=1)
    await bus.publish(OrderUpdate(1))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:

            async def close_later() -> None:
                await trio.sleep(2)
                bus.close()

            nursery.start_soon(close_later)
            with pytest.raises(trio.ClosedResourceError):
                await bus.publish(OrderUpdate(2))
            assert trio.current_time() == 2.0


def test_invalid_subscriptions_are_refused() -> None:
    bus = EventBus()
    with pytest.raises(ValueError, match="at least one"):
        bus.subscribe()
    with pytest.raises(ValueError, match="buffer_size"):
        bus.subscribe(Trade, buffer_size=0)
    with pytest.raises(ValueError, match="default_buffer_size"):
        EventBus(default_buffer_size=0)
