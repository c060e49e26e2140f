"""The MarketState task: feeds :mod:`genesis.market_state` from the bus and publishes the result.

Events only update the per-symbol trackers (cheap); every ``tick_s`` each symbol is judged, and
its :class:`~genesis.models.state.MarketState` is published when its ``state`` changed (so DEAD
shows within one tick, without any event) and every ``publish_interval_s`` regardless, so a late
subscriber soon learns the measures. The bus conflates ``MarketState`` per symbol (a slow
subscriber sees only the newest).

A symbol's exchangeInfo status (``TRADING``, ``HALT``, ``BREAK``…) is read through
``symbol_status`` every tick; ``refresh`` (the gateway's ``exchange_info``) re-reads it from the
exchange every ``refresh_interval_s``, so a symbol halted mid-session turns MAINTENANCE within a
minute. A failed refresh is a WARNING and the last known status stays.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final, NoReturn

import attrs
import trio

from genesis.errors import GenesisError
from genesis.market_state import MarketStateConfig, MarketStateTracker
from genesis.models.market import Depth, Kline, Ticker, Trade

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from genesis.bus import EventBus
    from genesis.models.state import MarketCondition, MarketState

__all__ = ["MarketStateHandle", "run_market_state"]

logger = logging.getLogger(__name__)

TICK_S: Final = 1.0
PUBLISH_INTERVAL_S: Final = 10.0
REFRESH_INTERVAL_S: Final = 60.0
"""exchangeInfo re-read for the symbols' status: weight 20 a minute of Binance's 6000."""
SUBSCRIPTION_SIZE: Final = 4096
"""Market data drops the oldest on overflow; a lost trade only delays one age by an event."""


@attrs.define(eq=False)
class MarketStateHandle:
    """What :func:`run_market_state` hands to ``nursery.start``: the latest state per symbol."""

    trackers: dict[str, MarketStateTracker]
    latest: dict[str, MarketState] = attrs.field(factory=dict)
    published: int = 0

    def state_of(self, symbol: str) -> MarketState | None:
        return self.latest.get(symbol)


async def run_market_state(
    bus: EventBus,
    symbols: Sequence[str],
    *,
    config: MarketStateConfig | None = None,
    symbol_status: Callable[[str], str | None] | None = None,
    tick_s: float = TICK_S,
    publish_interval_s: float = PUBLISH_INTERVAL_S,
    refresh: Callable[[], Awaitable[object]] | None = None,
    refresh_interval_s: float = REFRESH_INTERVAL_S,
    task_status: trio.TaskStatus[MarketStateHandle] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Judge every symbol's regime from the bus and publish ``MarketState`` until cancelled.

    Args:
        bus: where market events come from and ``MarketState`` goes.
        symbols: the symbols to judge (events of others are ignored).
        config: the thresholds (:class:`~genesis.market_state.MarketStateConfig`).
        symbol_status: the exchangeInfo status of a symbol (``TRADING``, ``HALT``...), ``None``
            when unknown; read every tick (e.g. ``gateway.cached_exchange_info``).
        tick_s: how often states are re-judged without events (DEAD, status changes).
        publish_interval_s: every symbol's state is published at least this often.
        refresh: re-reads exchangeInfo (so ``symbol_status`` sees a halt); ``None`` for never.
        refresh_interval_s: how often ``refresh`` runs.
        task_status: receives a :class:`MarketStateHandle` once subscribed.
    """
    cfg = config if config is not None else MarketStateConfig()
    handle = MarketStateHandle(trackers={s: MarketStateTracker(s, cfg) for s in symbols})
    last_published: dict[str, float] = {}
    last_state: dict[str, MarketCondition] = {}

    def judge(symbol: str, now: float) -> None:
        tracker = handle.trackers[symbol]
        state = tracker.snapshot(now)
        handle.latest[symbol] = state
        due = now - last_published.get(symbol, -float("inf")) >= publish_interval_s
        if due or last_state.get(symbol) is not state.state:
            previous = last_state.get(symbol)
            if previous is not None and previous is not state.state:
                logger.info(
                    "market_state.change symbol=%s from=%s to=%s",
                    symbol,
                    previous.value,
                    state.state.value,
                )
            last_state[symbol] = state.state
            last_published[symbol] = now
            handle.published += 1
            bus.publish_nowait(state)

    subscription = bus.subscribe(Trade, Kline, Ticker, Depth, buffer_size=SUBSCRIPTION_SIZE)
    async with subscription, trio.open_nursery() as nursery:
        if refresh is not None:
            nursery.start_soon(_refresh_forever, refresh, refresh_interval_s)
        task_status.started(handle)
        next_tick = trio.current_time() + tick_s
        while True:
            event: object | None = None
            with trio.move_on_at(next_tick):
                event = await subscription.receive()
            now = trio.current_time()
            if event is not None:
                _feed(handle, event, now)
            if now >= next_tick:
                next_tick = now + tick_s
                for symbol, tracker in handle.trackers.items():
                    if symbol_status is not None:
                        tracker.status = symbol_status(symbol)
                    judge(symbol, now)


async def _refresh_forever(refresh: Callable[[], Awaitable[object]], interval_s: float) -> None:
    while True:
        await trio.sleep(interval_s)
        try:
            await refresh()
        except GenesisError as exc:
            logger.warning(
                "market_state.refresh_failed error=%s: %s; keeping the last known status",
                type(exc).__name__,
                exc,
            )


def _feed(handle: MarketStateHandle, event: object, now: float) -> None:
    tracker = handle.trackers.get(getattr(event, "symbol", ""))
    if tracker is None:
        return
    if isinstance(event, Trade):
        tracker.on_trade(event, now)
    elif isinstance(event, Kline):
        tracker.on_kline(event, now)
    elif isinstance(event, Ticker):
        tracker.on_ticker(event, now)
    elif isinstance(event, Depth):
        tracker.on_depth(event, now)
