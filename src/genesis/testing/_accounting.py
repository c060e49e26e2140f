"""The soaks' accounting: the simulator's own trade record against what reached the bus.

:class:`Truth` listens to the exchange's public trades (the simulator's record: every trade id
it printed) and marks each with what the stream server was doing at that instant;
:class:`Tally` consumes the bus and checks order and uniqueness per stream; :func:`losses`
compares the two. Both soaks use them: the virtual one (:mod:`genesis.testing._virtual`) and
the wall-clock one (:mod:`genesis.testing._realtime`). The three kinds of loss:

- *in an outage*: no live, unstalled connection subscribed to that trade stream (every
  connection gone, reconnecting or stalled: nothing could carry it);
- *in flight*: some were, but every one of them closed in that same instant;
- *while up*: a connection that carried it was still live an instant later.
"""

from __future__ import annotations

from array import array
from collections import deque
from typing import TYPE_CHECKING, Final, NoReturn

import attrs
import trio

from genesis.models.market import Depth, Kline, Ticker, Trade

if TYPE_CHECKING:
    from collections.abc import Sequence

    from genesis.bus import Subscription
    from genesis.exchange.ws_manager import MergerStatistics
    from genesis.sim.exchange import PublicTrade
    from genesis.sim.server import Simulator

__all__ = [
    "LOST_SAMPLES",
    "Losses",
    "RecordCheck",
    "Sampler",
    "Tally",
    "Truth",
    "check_record",
    "losses",
    "merger_counts",
]

LOST_SAMPLES: Final = 20

_UP: Final = 1
_OUTAGE: Final = 2
_IN_FLIGHT: Final = 3
_INSTANT_S: Final = 0.001
"""How long after a trade its covering connections must still be live: longer than an instant
(virtual time stands still while frames are delivered), shorter than any feed step."""


@attrs.define(eq=False)
class _PendingCheck:
    check_at: float
    symbol: str
    trade_ids: list[int]
    covering: frozenset[int]


@attrs.define(eq=False)
class Truth:
    """Every public trade the exchange prints while recording, and whether it was covered.

    ``state[symbol][trade_id]`` is 0 (not recorded), ``_OUTAGE`` (printed while no live
    connection was delivering that trade stream), ``_IN_FLIGHT`` (some were, but every one of
    them closed in that same instant) or ``_UP`` (one of them was still live an instant later).
    """

    sim: Simulator
    trade_streams: dict[str, str]
    start: float = 0.0
    recording: bool = False
    state: dict[str, bytearray] = attrs.field(factory=dict)
    printed_at: dict[str, array[float]] = attrs.field(factory=dict)
    """When each recorded trade printed (seconds since the window opened), by trade id."""
    published: int = 0
    pending: deque[_PendingCheck] = attrs.field(factory=deque)
    pending_added: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot)

    def on_trades(self, symbol: str, trades: Sequence[PublicTrade]) -> None:
        """The exchange's trade listener (synchronous, in the feed's task)."""
        if not self.recording or not trades:
            return
        stream = self.trade_streams.get(symbol)
        if stream is None:
            return
        covering = frozenset(
            info.id
            for info in self.sim.streams.connections()
            if stream in info.streams and not info.stalled
        )
        now = trio.current_time()
        state = self.state.setdefault(symbol, bytearray())
        times = self.printed_at.setdefault(symbol, array("d"))
        for trade in trades:
            _set(state, trade.trade_id, _UP if covering else _OUTAGE)
            if trade.trade_id >= len(times):
                times.extend([0.0] * max(trade.trade_id + 1 - len(times), len(times)))
            times[trade.trade_id] = now - self.start
        self.published += len(trades)
        if covering:
            self.pending.append(
                _PendingCheck(now + _INSTANT_S, symbol, [t.trade_id for t in trades], covering)
            )
            self.pending_added.unpark_all()

    async def check_survivors(self) -> NoReturn:
        """Mark trades ``_IN_FLIGHT`` whose covering connections all closed in their instant."""
        while True:
            if not self.pending:
                await self.pending_added.park()
                continue
            await trio.sleep_until(self.pending[0].check_at)
            live = {info.id for info in self.sim.streams.connections()}
            now = trio.current_time()
            while self.pending and self.pending[0].check_at <= now:
                check = self.pending.popleft()
                if not check.covering & live:
                    state = self.state[check.symbol]
                    for trade_id in check.trade_ids:
                        state[trade_id] = _IN_FLIGHT


def _set(buf: bytearray, index: int, value: int) -> None:
    if index >= len(buf):
        buf.extend(bytes(max(index + 1 - len(buf), len(buf))))
    buf[index] = value


# --- what reached the bus -------------------------------------------------------------------


@attrs.define(eq=False)
class Tally:
    """Consumes the bus and checks order and uniqueness per stream."""

    start: float = 0.0
    delivered: dict[str, bytearray] = attrs.field(factory=dict)
    last_trade: dict[str, int] = attrs.field(factory=dict)
    last_depth: dict[str, int] = attrs.field(factory=dict)
    last_ticker: dict[str, int] = attrs.field(factory=dict)
    last_kline: dict[str, tuple[int, int]] = attrs.field(factory=dict)
    closed_klines: dict[str, set[int]] = attrs.field(factory=dict)
    duplicates: dict[str, int] = attrs.field(factory=dict)
    out_of_order: dict[str, int] = attrs.field(factory=dict)
    late_kline_closes: int = 0
    events: dict[str, int] = attrs.field(factory=dict)
    events_total: int = 0
    window_open: bool = False
    last_event_at: float | None = None
    longest_gap_s: float = 0.0
    longest_gap_end_s: float = 0.0

    def _count(self, table: dict[str, int], kind: str) -> None:
        table[kind] = table.get(kind, 0) + 1

    def _gap(self, now: float) -> None:
        previous = self.start if self.last_event_at is None else self.last_event_at
        if now - previous > self.longest_gap_s:
            self.longest_gap_s = now - previous
            self.longest_gap_end_s = now - self.start
        self.last_event_at = now

    def open_window(self, now: float) -> None:
        self.start = now
        self.window_open = True

    def close_window(self, now: float) -> None:
        """End the gap measurement at ``now``: the time since the last event is a gap too."""
        self._gap(now)
        self.window_open = False

    async def consume(self, subscription: Subscription[object]) -> None:
        async with subscription:
            async for event in subscription:
                self.on_event(event, trio.current_time())

    def on_event(self, event: object, now: float) -> None:
        if self.window_open and isinstance(event, Trade | Depth | Ticker | Kline):
            self._gap(now)
        self.events_total += 1
        self._count(self.events, type(event).__name__)
        if isinstance(event, Trade):
            self._trade(event)
        elif isinstance(event, Depth):
            self._monotonic("depth", self.last_depth, event.symbol, event.last_update_id)
        elif isinstance(event, Ticker):
            self._monotonic("ticker", self.last_ticker, event.symbol, event.event_time_ms)
        elif isinstance(event, Kline):
            self._kline(event)

    def _trade(self, trade: Trade) -> None:
        seen = self.delivered.setdefault(trade.symbol, bytearray())
        trade_id = trade.trade_id
        if trade_id < len(seen) and seen[trade_id]:
            self._count(self.duplicates, "trade")
            return
        _set(seen, trade_id, 1)
        last = self.last_trade.get(trade.symbol)
        if last is not None and trade_id < last:
            self._count(self.out_of_order, "trade")
        else:
            self.last_trade[trade.symbol] = trade_id

    def _monotonic(self, kind: str, last: dict[str, int], symbol: str, key: int) -> None:
        previous = last.get(symbol)
        if previous is not None and key <= previous:
            self._count(self.duplicates if key == previous else self.out_of_order, kind)
            return
        last[symbol] = key

    def _kline(self, kline: Kline) -> None:
        key = (kline.open_time_ms, kline.event_time_ms)
        last = self.last_kline.get(kline.symbol)
        if kline.closed:
            closed = self.closed_klines.setdefault(kline.symbol, set())
            if kline.open_time_ms in closed:
                self._count(self.duplicates, "kline")
                return
            closed.add(kline.open_time_ms)
            if last is not None and key < last:
                self.late_kline_closes += 1
                return
        elif last is not None and key <= last:
            self._count(self.duplicates if key == last else self.out_of_order, "kline")
            return
        self.last_kline[kline.symbol] = key


@attrs.define(eq=False)
class Sampler:
    """Once a second: is any connection delivering, and how old is the oldest."""

    sim: Simulator
    uncovered_s: int = 0
    max_age_ms: int = 0

    def sample(self) -> None:
        now_ms = self.sim.clock.now_ms()
        conns = self.sim.streams.connections()
        if all(info.stalled for info in conns):
            self.uncovered_s += 1
        for info in conns:
            self.max_age_ms = max(self.max_age_ms, now_ms - info.connected_at_ms)


@attrs.define
class Losses:
    outage: int = 0
    in_flight: int = 0
    while_up: int = 0
    in_flight_samples: list[tuple[str, int, float]] = attrs.field(factory=list)
    while_up_samples: list[tuple[str, int, float]] = attrs.field(factory=list)

    @property
    def total(self) -> int:
        return self.outage + self.in_flight + self.while_up


def losses(truth: Truth, tally: Tally) -> Losses:
    losses = Losses()
    for symbol, state in sorted(truth.state.items()):
        delivered = tally.delivered.get(symbol, bytearray())
        printed_at = truth.printed_at[symbol]
        for trade_id, mark in enumerate(state):
            if not mark or (trade_id < len(delivered) and delivered[trade_id]):
                continue
            sample = (symbol, trade_id, round(printed_at[trade_id], 6))
            if mark == _OUTAGE:
                losses.outage += 1
            elif mark == _IN_FLIGHT:
                losses.in_flight += 1
                if len(losses.in_flight_samples) < LOST_SAMPLES:
                    losses.in_flight_samples.append(sample)
            else:
                losses.while_up += 1
                if len(losses.while_up_samples) < LOST_SAMPLES:
                    losses.while_up_samples.append(sample)
    return losses


@attrs.frozen(kw_only=True)
class RecordCheck:
    """What the bus delivered, counted against the exchange's own trade history.

    Attributes:
        trades_in_record: Trades of the window (ids from the first to the last recorded one)
            that the exchange's history (``historicalTrades``, the last 10,000 per symbol)
            still holds.
        trades_delivered: Of those, the ones that reached the bus (counted from the bus).
        trades_unrecorded: Trades that reached the bus with an id the window's record lacks
            inside its range (a corrupted or invented trade); must be 0.
    """

    trades_in_record: int
    trades_delivered: int
    trades_unrecorded: int


def check_record(sim: Simulator, truth: Truth, tally: Tally) -> RecordCheck:
    """Page through the exchange's trade history over the window's ids and count deliveries."""
    in_record = delivered_count = unrecorded = 0
    for symbol, state in sorted(truth.state.items()):
        ids = [trade_id for trade_id, mark in enumerate(state) if mark]
        if not ids:
            continue
        first, last = ids[0], ids[-1]
        delivered = tally.delivered.get(symbol, bytearray())
        recorded: set[int] = set()
        from_id = first
        while from_id <= last:
            rows = sim.exchange.historical_trades(symbol, limit=1000, from_id=from_id)
            page = [row["id"] for row in rows]
            page_ids = [i for i in page if isinstance(i, int) and first <= i <= last]
            recorded.update(page_ids)
            if not page or not isinstance(page[-1], int) or page[-1] < from_id:
                break
            from_id = page[-1] + 1
        in_record += len(recorded)
        delivered_count += sum(1 for i in recorded if i < len(delivered) and delivered[i])
        held_from = min(recorded, default=first)  # the history keeps the newest trades only
        unrecorded += sum(
            1
            for i in range(held_from, min(last + 1, len(delivered)))
            if delivered[i] and i not in recorded
        )
    return RecordCheck(
        trades_in_record=in_record,
        trades_delivered=delivered_count,
        trades_unrecorded=unrecorded,
    )


def merger_counts(merger: MergerStatistics) -> dict[str, int]:
    """The merger's counters as a report mapping."""
    return {
        "frames": merger.frames,
        "published": merger.published,
        "duplicates_dropped": merger.duplicates_dropped,
        "gaps": merger.gaps,
        "trades_missing": merger.trades_missing,
        "decode_errors": merger.decode_errors,
        "held": merger.held,
        "bus_rejected": merger.bus_rejected,
        "backfills": merger.backfills,
        "backfilled_trades": merger.backfilled_trades,
        "backfilled_klines": merger.backfilled_klines,
        "backfill_failures": merger.backfill_failures,
        "catch_ups": merger.catch_ups,
        "sequence_resets": merger.sequence_resets,
    }
