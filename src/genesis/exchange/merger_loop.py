"""The Trio side of the market-data merger: hold deadlines and backfill requests.

The merger core (:mod:`genesis.exchange.merger`) is pure: it takes frames and the time. The
connection tasks (or the shared reader) feed it synchronously through :meth:`MergerLoop.feed`;
this loop wakes only when a trade hold's deadline comes or a backfill request appears, never per
frame, and answers each backfill request in a task of its own so REST never blocks the feed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

import attrs
import trio

from genesis.exchange.backfill import BackfillSource, fetch_klines, fetch_trades
from genesis.exchange.merger import (
    KlineBackfillRequest,
    Merger,
    MergerStatistics,
    TradeBackfillRequest,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from genesis.exchange.ws_role import RoleState
    from genesis.models.market import Kline, Trade

__all__ = ["MergerLoop"]


@attrs.define(eq=False)
class MergerLoop:
    """The thin Trio side of the pure :class:`~genesis.exchange.merger.Merger`.

    Feeds it every relayed frame with the time, wakes it at its hold deadlines, and answers its
    backfill requests in tasks of their own, so REST never blocks the live feed.
    """

    core: Merger
    source: BackfillSource | None
    backfill_timeout_s: float
    published_changed: trio.lowlevel.ParkingLot = attrs.field(
        factory=trio.lowlevel.ParkingLot, init=False
    )
    _wait_scope: trio.CancelScope | None = attrs.field(default=None, init=False)

    def notify_published(self) -> None:
        if self.published_changed:
            self.published_changed.unpark_all()

    def statistics(self) -> MergerStatistics:
        return self.core.statistics()

    @property
    def published(self) -> int:
        return self.core.published

    def feed(
        self, source: RoleState, messages: Sequence[str | bytes], received_ms: int, now: float
    ) -> None:
        """Hand one read's frames to the core, synchronously (the connection task calls it).

        The core never blocks (the bus's ``publish_nowait``), so neither does the connection
        task; the loop in :meth:`run` is woken only when a hold deadline or a backfill request
        appeared, never per frame.
        """
        core = self.core
        deadline = core.next_deadline()
        core.on_frames(source, messages, received_ms, now)
        if (core.backfill_requests or core.next_deadline() != deadline) and self._wait_scope:
            self._wait_scope.cancel()

    def feed_restored(self, now: float) -> None:
        """A connection is up again after every one was down: the core catches up."""
        self.core.on_feed_restored(now)
        if self.core.backfill_requests and self._wait_scope is not None:
            self._wait_scope.cancel()

    async def run(self) -> NoReturn:
        """Act on holds at their deadlines and run the backfill requests, until cancelled."""
        core = self.core
        async with trio.open_nursery() as nursery:
            while True:
                if core.backfill_requests:
                    for request in core.take_backfill_requests():
                        nursery.start_soon(self._answer, request)
                with trio.move_on_at(core.next_deadline()) as self._wait_scope:
                    await trio.sleep_forever()
                self._wait_scope = None
                core.on_time(trio.current_time())
        raise AssertionError("unreachable")  # pragma: no cover

    async def _answer(self, request: TradeBackfillRequest | KlineBackfillRequest) -> None:
        source = self.source
        assert source is not None
        timed_out = f"no answer within {self.backfill_timeout_s:g} s"
        if isinstance(request, TradeBackfillRequest):
            trades: Sequence[Trade] = ()
            error: str | None = timed_out
            with trio.move_on_after(self.backfill_timeout_s):
                trades, error = await fetch_trades(source, request)
            self.core.on_trade_backfill(request, trades, error, trio.current_time())
        else:
            klines: Sequence[Kline] = ()
            error = timed_out
            with trio.move_on_after(self.backfill_timeout_s):
                klines, error = await fetch_klines(source, request)
            self.core.on_kline_backfill(request, klines, error, trio.current_time())
        if self._wait_scope is not None:
            self._wait_scope.cancel()  # the hold deadlines changed: the loop looks again
