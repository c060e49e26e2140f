"""The merger's trade sequencing: consecutive ids per symbol, holes held, backfilled or given up.

:class:`TradeSequencer` is owned by :class:`~genesis.exchange.merger.Merger` (which dedups,
decodes and routes; the rules are in its module's docstring): it holds trades beyond a missing
id, asks the backfill source for a hole nobody filled, takes the answer, publishes a
:class:`~genesis.models.events.FeedGap` for what stayed missing and a
:class:`~genesis.models.events.SequenceReset` when the exchange restarts a sequence (trade or
depth). Like the merger it never reads a clock: every call takes ``now``.

Logs: ``ws.merger.gap``, ``ws.merger.backfill``, ``ws.merger.catch_up``,
``ws.merger.backfill_late``, ``ws.merger.backfill_failed``, ``ws.merger.sequence_reset``.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import attrs

from genesis.models.events import FeedGap, SequenceReset

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from genesis.exchange.merger import FrameSource, MergerConfig
    from genesis.exchange.streams import StreamRoute
    from genesis.models.market import Trade

__all__ = ["TradeBackfillRequest", "TradeSequence", "TradeSequencer"]

logger = logging.getLogger("genesis.exchange.merger")
"""The merger's logger: the split into modules does not change a log name."""


@attrs.frozen(eq=False)
class TradeBackfillRequest:
    """Trades ``first_id..last_id`` (inclusive) of ``symbol`` wanted from REST.

    ``open_ended``: a catch-up after every connection was down, not a known hole. Nobody knows
    how many trades the outage cost, so ``last_id`` only bounds the fetch; ids past the newest
    REST returns are not missing, only not yet printed.
    """

    symbol: str
    stream: str
    first_id: int
    last_id: int
    open_ended: bool = attrs.field(default=False, kw_only=True)


@attrs.define(eq=False)
class TradeSequence:
    """One trade stream's position: the newest id published and the trades held beyond it."""

    route: StreamRoute
    last_id: int | None = None
    last_at: float = -math.inf
    """When the newest id was published: a sequence still delivered is never "reset"."""
    held: dict[int, Trade] = attrs.field(factory=dict)
    deadline: float = math.inf
    backfill: TradeBackfillRequest | None = None


@attrs.define(eq=False)
class TradeSequencer:
    """Trade ids in order per stream, and sequence resets (trade and depth).

    Args:
        publish: The merger's publish (counts, bus refusal, wake-up).
        ask: Queues a backfill request for the merger's backfill runner.
        config: Hold times and bounds.
        backfill: Whether a backfill source answers; without one a hole is a
            :class:`FeedGap` once ``gap_hold_s`` passes.
    """

    publish: Callable[[object], None]
    ask: Callable[[TradeBackfillRequest], None]
    config: MergerConfig
    backfill: bool
    sequences: dict[str, TradeSequence] = attrs.field(factory=dict, init=False)
    holding: dict[str, TradeSequence] = attrs.field(factory=dict, init=False)
    """The sequences currently holding trades (usually none): what deadlines look at."""
    gaps: int = attrs.field(default=0, init=False)
    trades_missing: int = attrs.field(default=0, init=False)
    backfilled_trades: int = attrs.field(default=0, init=False)
    backfill_failures: int = attrs.field(default=0, init=False)
    sequence_resets: int = attrs.field(default=0, init=False)
    catch_ups: int = attrs.field(default=0, init=False)
    deferred_catch_ups: set[str] = attrs.field(factory=set, init=False)
    """Streams that were holding a hole when the feed came back: they catch up once it is
    settled."""

    def held(self) -> int:
        return sum(len(seq.held) for seq in self.holding.values())

    def next_deadline(self) -> float:
        return min((seq.deadline for seq in self.holding.values()), default=math.inf)

    def is_copy(self, stream: str, trade_id: int, source: FrameSource, now: float) -> bool:
        """Whether ``trade_id`` was delivered already (or is older); resets a restarted one."""
        seq = self.sequences[stream]
        last = seq.last_id
        if last is not None and trade_id <= last:
            if last - trade_id < self.config.reset_min_drop or now - seq.last_at < (
                self.config.reset_quiet_s
            ):
                return True
            self._reset(seq, trade_id, source, now)
            return False
        return trade_id in seq.held

    def accept(self, seq: TradeSequence, trade: Trade, now: float) -> None:
        trade_id = trade.trade_id
        if seq.last_id is None or trade_id == seq.last_id + 1:
            self.publish(trade)
            seq.last_id = trade_id
            seq.last_at = now
            if seq.held:
                self._release_consecutive(seq)
                if self.deferred_catch_ups:
                    self._catch_up_if_deferred(seq, now)
            return
        seq.held[trade_id] = trade
        if seq.deadline == math.inf:
            seq.deadline = now + self.config.gap_hold_s
            self.holding[seq.route.name] = seq
        if seq.backfill is not None:
            if len(seq.held) > self.config.backfill_hold_trades:
                self._release_all(seq, now, "hold overflow during backfill")
        elif len(seq.held) > self.config.max_held_trades:
            self._hole_unfilled(seq, now)

    def _release_consecutive(self, seq: TradeSequence) -> None:
        assert seq.last_id is not None
        while (trade := seq.held.pop(seq.last_id + 1, None)) is not None:
            self.publish(trade)
            seq.last_id = trade.trade_id
        if not seq.held:
            self._stop_holding(seq)

    def _stop_holding(self, seq: TradeSequence) -> None:
        seq.deadline = math.inf
        seq.backfill = None
        self.holding.pop(seq.route.name, None)

    def _release_through(self, seq: TradeSequence, upto_id: float, now: float, reason: str) -> None:
        """Publish held trades up to ``upto_id`` in order, each hole before them a FeedGap."""
        for trade_id in sorted(seq.held):
            if trade_id > upto_id:
                break
            trade = seq.held.pop(trade_id)
            if seq.last_id is not None and trade_id > seq.last_id + 1:
                self._trade_gap(seq, seq.last_id + 1, trade_id - 1, reason, now)
            self.publish(trade)
            seq.last_id = trade_id
            seq.last_at = now
        self._release_consecutive(seq)
        if seq.held:
            # A newer hole behind the one just closed: it gets its own hold (and backfill).
            seq.backfill = None
            seq.deadline = now + self.config.gap_hold_s

    def _release_all(self, seq: TradeSequence, now: float, reason: str) -> None:
        self._release_through(seq, math.inf, now, reason)

    def _trade_gap(
        self, seq: TradeSequence, first: int, last: int, reason: str, now: float
    ) -> None:
        missing = last - first + 1
        self.gaps += 1
        self.trades_missing += missing
        logger.warning(
            "ws.merger.gap stream=%s first_missing=%d last_missing=%d missing=%d reason=%s",
            seq.route.name,
            first,
            last,
            missing,
            reason,
        )
        route = seq.route
        self.publish(
            FeedGap(
                symbol=route.symbol,
                stream=route.kind.value,
                first_missing_id=first,
                last_missing_id=last,
                reason=reason,
                at=now,
            )
        )

    def on_time(self, now: float) -> None:
        """Act on holds whose time is over: ask the backfill source, or give the hole up."""
        for seq in list(self.holding.values()):
            if seq.deadline <= now:
                if seq.backfill is not None:
                    self.backfill_failures += 1
                    self._release_all(seq, now, "backfill timed out")
                else:
                    self._hole_unfilled(seq, now)
                if self.deferred_catch_ups:
                    self._catch_up_if_deferred(seq, now)

    def _hole_unfilled(self, seq: TradeSequence, now: float) -> None:
        """No connection filled the hole in time: ask the backfill source, or give it up."""
        if not self.backfill:
            self._release_all(seq, now, "no connection delivered it")
            return
        assert seq.last_id is not None
        last_missing = max(seq.held) - 1
        while last_missing in seq.held:
            last_missing -= 1
        first_missing = max(seq.last_id + 1, last_missing - self.config.max_backfill_trades + 1)
        request = TradeBackfillRequest(
            seq.route.symbol, seq.route.name, first_missing, last_missing
        )
        seq.backfill = request
        seq.deadline = now + self.config.backfill_timeout_s
        self.ask(request)
        logger.info(
            "ws.merger.backfill stream=%s from_id=%d to_id=%d",
            seq.route.name,
            first_missing,
            last_missing,
        )

    def catch_up(self, now: float) -> None:
        """See :meth:`genesis.exchange.merger.Merger.on_feed_restored`."""
        if not self.backfill:
            return
        for seq in self.sequences.values():
            if seq.last_id is None:
                continue  # never seen: its first trade starts it
            if seq.held or seq.backfill is not None:
                # One request per stream at a time: it catches up once its hole is settled.
                self.deferred_catch_ups.add(seq.route.name)
            else:
                self._ask_catch_up(seq, now)

    def _catch_up_if_deferred(self, seq: TradeSequence, now: float) -> None:
        name = seq.route.name
        if name in self.deferred_catch_ups and not seq.held and seq.backfill is None:
            self.deferred_catch_ups.discard(name)
            self._ask_catch_up(seq, now)

    def _ask_catch_up(self, seq: TradeSequence, now: float) -> None:
        assert seq.last_id is not None
        first = seq.last_id + 1
        request = TradeBackfillRequest(
            seq.route.symbol,
            seq.route.name,
            first,
            first + self.config.max_backfill_trades - 1,
            open_ended=True,
        )
        seq.backfill = request
        seq.deadline = now + self.config.backfill_timeout_s
        self.holding[seq.route.name] = seq
        self.catch_ups += 1
        self.ask(request)
        logger.info("ws.merger.catch_up stream=%s from_id=%d", seq.route.name, first)

    def on_backfill(
        self,
        request: TradeBackfillRequest,
        trades: Sequence[Trade],
        error: str | None,
        now: float,
    ) -> None:
        """See :meth:`genesis.exchange.merger.Merger.on_trade_backfill`."""
        seq = self.sequences.get(request.stream)
        if seq is None or seq.backfill is not request:
            logger.warning(
                "ws.merger.backfill_late stream=%s from_id=%d", request.stream, request.first_id
            )
            return
        seq.backfill = None
        if error is not None:
            self.backfill_failures += 1
            logger.warning(
                "ws.merger.backfill_failed stream=%s from_id=%d reason=%s",
                request.stream,
                request.first_id,
                error,
            )
        last_id = seq.last_id
        assert last_id is not None
        newest = last_id
        for trade in trades:
            trade_id = trade.trade_id
            if last_id < trade_id <= request.last_id and trade.symbol == seq.route.symbol:
                newest = max(newest, trade_id)
                if trade_id not in seq.held:
                    seq.held[trade_id] = trade
                    self.backfilled_trades += 1
        reason = f"backfill failed: {error}" if error is not None else "not in REST history"
        # A catch-up knows no hole's end: what lies past the newest trade REST had is not
        # missing (a live trade held there opens a hole of its own, held and asked as usual).
        upto = newest if request.open_ended else request.last_id + 1
        self._release_through(seq, upto, now, reason)
        if self.deferred_catch_ups:
            self._catch_up_if_deferred(seq, now)

    def _reset(self, seq: TradeSequence, first: int, source: FrameSource, now: float) -> None:
        assert seq.last_id is not None
        previous = seq.last_id
        if seq.held:
            self._release_all(seq, now, "sequence reset")
            previous = seq.last_id
        self._stop_holding(seq)
        self.deferred_catch_ups.discard(seq.route.name)  # a new sequence: nothing to catch up
        seq.last_id = None
        self.reset_event(seq.route, previous, first, source, now)

    def reset_event(
        self, route: StreamRoute, previous: int, first: int, source: FrameSource, now: float
    ) -> None:
        """A stream's sequence restarted (trade here, depth from the merger): count, log,
        publish a :class:`SequenceReset`."""
        self.sequence_resets += 1
        logger.warning(
            "ws.merger.sequence_reset stream=%s previous_high=%d new_first=%d role=%s",
            route.name,
            previous,
            first,
            source.name,
        )
        self.publish(
            SequenceReset(
                symbol=route.symbol,
                stream=route.kind.value,
                previous_high=previous,
                new_first=first,
                role=source.name,
                at=now,
            )
        )
