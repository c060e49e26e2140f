"""Properties of the merger's pure core: exactly once and in order, for any interleaving.

Hypothesis draws a trade sequence, three copies of it (each with its own delays, dropped
frames and disconnected stretches, and duplicated frames), how long REST takes to answer, and
when a connection came up after every one was down (the merger's catch-up).
A tiny event loop plays the copies into :class:`~genesis.exchange.merger.Merger` in arrival
order, wakes it at its deadlines and answers its backfill requests from the full history, the
way ``ws_manager``'s loop does. The expected outcome is derived from the drawn scenario alone.
"""

from __future__ import annotations

import heapq
import itertools
from decimal import Decimal
from typing import TYPE_CHECKING

import attrs
from hypothesis import given
from hypothesis import strategies as st

from genesis.exchange.merger import Merger, MergerConfig, TradeBackfillRequest
from genesis.exchange.streams import market_streams
from genesis.models.events import FeedGap
from genesis.models.market import Trade
from tests.test_ws_manager import trade_payload

if TYPE_CHECKING:
    from collections.abc import Sequence

HOLD_S = 0.2
BACKFILL_TIMEOUT_S = 2.0


@attrs.define
class Source:
    name: str
    latency_ms: int | None = None
    first_delivered: int = 0


def frame(trade_id: int) -> str:
    return (
        '{"stream":"btcusdt@trade","data":' + trade_payload("BTCUSDT", trade_id, 1).decode() + "}"
    )


def history(trade_id: int) -> Trade:
    return Trade(
        symbol="BTCUSDT",
        trade_id=trade_id,
        price=Decimal("1"),
        quantity=Decimal("1"),
        trade_time_ms=1,
        event_time_ms=1,
        buyer_is_maker=True,
    )


@st.composite
def copies(draw: st.DrawFn, count: int) -> list[tuple[float, int]]:
    """One connection's deliveries: (arrival time, trade id), with drops, gaps and repeats."""
    out: list[tuple[float, int]] = []
    down: tuple[int, int] | None = None
    if draw(st.booleans()):
        start = draw(st.integers(0, count - 1))
        down = (start, start + draw(st.integers(1, count)))
    drops = draw(st.sets(st.integers(0, count - 1), max_size=count // 3))
    for index in range(count):
        if index in drops or (down is not None and down[0] <= index < down[1]):
            continue
        sent = index * draw(st.sampled_from([0.0, 0.01, 0.1, 0.5]))
        delay = draw(st.floats(0.0, 1.0))
        out.append((sent + delay, index + 1))
        if draw(st.integers(0, 9)) == 0:  # a repeated frame (a rotation's overlap)
            out.append((sent + delay + 0.001, index + 1))
    return out


@attrs.frozen
class Outcome:
    published: list[object]
    first: int | None
    """The id of the first frame the merger received."""
    newest: int | None
    """The highest id any connection delivered or a catch-up published."""


@attrs.frozen
class Restored:
    """A connection came up after every one was down."""


restorations = st.lists(st.floats(0.0, 5.0), max_size=3)
"""When a connection came up after a full outage."""


def play(
    connections: list[list[tuple[float, int]]],
    *,
    backfill: bool,
    rest_delay_s: float,
    rest_history: range,
    restores: Sequence[float] = (),
) -> Outcome:
    published: list[object] = []
    merger = Merger(
        published.append,
        MergerConfig(gap_hold_s=HOLD_S, max_held_trades=5, backfill_timeout_s=BACKFILL_TIMEOUT_S),
        backfill=backfill,
        streams=frozenset(market_streams(["BTCUSDT"])),
    )
    sources = [Source(name) for name in ("execution", "monitoring", "backup")]
    order = itertools.count()
    queue: list[tuple[float, int, object]] = []
    first: int | None = None
    ids = [trade_id for copy in connections for _, trade_id in copy]
    for source, copy in zip(sources, connections, strict=True):
        for at, trade_id in copy:
            heapq.heappush(queue, (at, next(order), (source, trade_id)))
    for at in restores:  # a connection up after every one was down
        heapq.heappush(queue, (at, next(order), Restored()))
    now = 0.0
    while queue or merger.next_deadline() < float("inf"):
        deadline = merger.next_deadline()
        if queue and queue[0][0] <= deadline:
            now, _, item = heapq.heappop(queue)
            if isinstance(item, tuple):
                source, trade_id = item
                first = trade_id if first is None else first
                merger.on_frame(source, frame(trade_id), 0, now)
            elif isinstance(item, Restored):
                merger.on_feed_restored(now)
            else:
                assert isinstance(item, TradeBackfillRequest)
                found = [history(i) for i in rest_history if item.first_id <= i <= item.last_id]
                merger.on_trade_backfill(item, found, None, now)
        else:
            now = max(now, deadline)
        merger.on_time(now)
        for request in merger.take_backfill_requests():
            assert isinstance(request, TradeBackfillRequest)
            heapq.heappush(queue, (now + rest_delay_s, next(order), request))
    top = max([*ids, *trade_ids(published)], default=None)  # a catch-up may reach past them
    return Outcome(published, first, top)


def trade_ids(events: list[object]) -> list[int]:
    return [e.trade_id for e in events if isinstance(e, Trade)]


scenarios = st.integers(2, 40).flatmap(
    lambda n: st.tuples(st.just(n), st.lists(copies(n), min_size=3, max_size=3))
)


@given(scenarios, st.floats(0.0, 1.5), restorations)
def test_with_a_backfill_source_every_trade_arrives_exactly_once_in_order(
    scenario: tuple[int, list[list[tuple[float, int]]]],
    rest_delay_s: float,
    restores: list[float],
) -> None:
    count, connections = scenario
    outcome = play(
        connections,
        backfill=True,
        rest_delay_s=rest_delay_s,
        rest_history=range(1, count + 1),
        restores=restores,
    )
    if outcome.first is None or outcome.newest is None:
        assert outcome.published == []
        return
    first, newest = outcome.first, outcome.newest
    # REST answers within the timeout and has the whole history: nothing after the first
    # trade seen can be missing, and nothing may repeat or go backwards.
    assert trade_ids(outcome.published) == list(range(first, newest + 1))
    assert not any(isinstance(e, FeedGap) for e in outcome.published)


@given(scenarios, st.booleans(), st.floats(0.0, 3.0), restorations)
def test_whatever_is_lost_is_announced_in_place_and_nothing_repeats(
    scenario: tuple[int, list[list[tuple[float, int]]]],
    backfill: bool,
    rest_delay_s: float,
    restores: list[float],
) -> None:
    count, connections = scenario
    # REST may be slower than the timeout, and has forgotten the first half of the history.
    outcome = play(
        connections,
        backfill=backfill,
        rest_delay_s=rest_delay_s,
        rest_history=range(count // 2, count + 1),
        restores=restores,
    )
    if outcome.first is None or outcome.newest is None:
        return
    first, newest = outcome.first, outcome.newest
    seen: list[int] = []
    for event in outcome.published:
        if isinstance(event, Trade):
            seen.append(event.trade_id)
        else:
            assert isinstance(event, FeedGap)
            # A gap is published exactly where its ids would have been.
            assert event.first_missing_id == (seen[-1] + 1 if seen else first)
            seen.extend(range(event.first_missing_id, event.last_missing_id + 1))
    assert seen == list(range(first, newest + 1))
