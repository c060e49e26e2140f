"""Rate limiter: the pure core under a state machine, worked examples, then the Trio wrapper.

- :class:`LimiterMachine` drives :class:`RateLimiterCore` with random costs and priorities, clock
  steps (random, onto and just before window boundaries and wakeups), cancels, usage headers,
  429 holds and new limits. It keeps its own books from the tickets' ``admitted_ms`` and the
  spec's arithmetic (budget ``max(1, limit * 4 // 5)``, window start ``t - t % window``), never
  from the core's counters, and checks after every step:

  (a) no fixed window of any bucket receives admissions whose summed cost exceeds its budget;
  (b) FIFO within a priority: admitted tickets are a prefix of the priority's submissions
      (cancelled and failed ones left out), admitted in non-decreasing time;
  (c) headers only make it more cautious, checked two ways. The machine's usage is
      ``max(local, reported)`` plus later admissions, and every admission must keep it within
      budget (so a header is never ignored or lowered). And while every header reported no more
      than the local usage, a twin core that never sees a header admits exactly the same
      tickets at exactly the same times (so a low header never loosens anything);
  (d) liveness: after each step, the first waiting ticket of a priority that fits and shares no
      bucket with any waiting higher-priority ticket is a bug; ``next_wakeup_ms`` is a window
      boundary or the hold's end, and no admission happens before it.

  The property "a synced core admits nothing its header-less twin has not admitted by then" is
  *not* one of them: it fails for a correct limiter, because a header that holds back one ticket
  leaves another bucket emptier than in the twin
  (:func:`test_a_header_can_let_a_cancel_pass_that_an_unsynced_twin_holds` shows it).
- Worked examples assert figures computed by hand.
- Wrapper tests run under ``autojump_clock``, assert exact virtual times and have a deadline on
  the trio clock. The server clock is ``START + round(trio.current_time() * 1000)``.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING, Final

import attrs
import pytest
import trio
import trio.testing
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from genesis.errors import IpBannedError
from genesis.models.exchange_info import FALLBACK_RATE_LIMITS, RateLimit, RateLimitType
from genesis.resilience.rate_limiter import (
    BucketStatistics,
    Cost,
    Priority,
    RateLimiter,
    RateLimiterCore,
    RateLimiterStatistics,
    Ticket,
    TicketState,
)
from tests.strategies import limiter_costs, limiter_priorities, rate_limit_sets

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

WEIGHT = RateLimitType.REQUEST_WEIGHT
ORDERS = RateLimitType.ORDERS
RAW = RateLimitType.RAW_REQUESTS
LOGGER = "genesis.resilience.rate_limiter"

DAY_START_MS: Final = 1_699_920_000_000
"""00:00 UTC, 19 675 days after the epoch (19 675 × 86 400 000)."""
START_MS: Final = 1_699_999_980_000
"""A minute boundary, 28 333 333 minutes after the epoch; so also a 10 s boundary."""
DEADLINE_S: Final = 600.0


def limit(kind: RateLimitType, interval: str, num: int, value: int) -> RateLimit:
    return RateLimit(type=kind, interval=interval, interval_num=num, limit=value)


def weight_per_min(value: int) -> RateLimit:
    return limit(WEIGHT, "MINUTE", 1, value)


def weight_per_10s(value: int) -> RateLimit:
    return limit(WEIGHT, "SECOND", 10, value)


def orders_per_10s(value: int) -> RateLimit:
    return limit(ORDERS, "SECOND", 10, value)


def orders_per_min(value: int) -> RateLimit:
    return limit(ORDERS, "MINUTE", 1, value)


def used(core: RateLimiterCore, now_ms: int) -> dict[str, int]:
    return {f"{b.type.value} {b.interval}": b.used for b in core.statistics(now_ms).buckets}


def server_clock(start_ms: int) -> Callable[[], int]:
    def now_ms() -> int:
        return start_ms + round(trio.current_time() * 1000)

    return now_ms


# --- the state machine ------------------------------------------------------------------------

_WINDOW_MS: Final = {"SECOND": 1000, "MINUTE": 60_000, "DAY": 86_400_000}
_FIELD: Final = {WEIGHT: "weight", ORDERS: "orders", RAW: "raw"}

Key = tuple[RateLimitType, int]


@attrs.frozen
class ModelBucket:
    """The machine's own reading of one ``RateLimit``."""

    key: Key
    field: str
    window_ms: int
    budget: int

    def amount(self, cost: Cost) -> int:
        return {"weight": cost.weight, "orders": cost.orders, "raw": cost.raw}[self.field]


def model_buckets(limits: Iterable[RateLimit]) -> dict[Key, ModelBucket]:
    buckets: dict[Key, ModelBucket] = {}
    for rate_limit in limits:
        if rate_limit.type is RateLimitType.CONNECTIONS:
            continue
        window_ms = _WINDOW_MS[rate_limit.interval] * rate_limit.interval_num
        key = (rate_limit.type, window_ms)
        budget = max(1, rate_limit.limit * 4 // 5)
        buckets[key] = ModelBucket(key, _FIELD[rate_limit.type], window_ms, budget)
    return buckets


@attrs.define
class Record:
    """One submission as the machine sees it, with its twin's ticket."""

    ticket: Ticket
    twin: Ticket
    status: str = "waiting"  # waiting | admitted | gone (cancelled or failed)


class LimiterMachine(RuleBasedStateMachine):
    """Drives a :class:`RateLimiterCore` and a header-less twin with the same steps."""

    def __init__(self) -> None:
        super().__init__()
        self.now = DAY_START_MS
        self.core = RateLimiterCore(())
        self.twin = RateLimiterCore(())
        self.buckets: dict[Key, ModelBucket] = {}
        # (key, window start) -> max(local, reported) + later admissions; and admissions alone.
        self.usage: dict[tuple[Key, int], int] = {}
        self.admitted_sum: dict[tuple[Key, int], int] = {}
        self.held_until = 0
        self.records: list[Record] = []
        self.unreported: list[Ticket] = []  # admitted, not returned by submit, not yet polled
        self.twin_exact = True

    @initialize(limits=rate_limit_sets(min_size=1), offset_ms=st.integers(0, 86_400_000 - 1))
    def configure(self, limits: tuple[RateLimit, ...], offset_ms: int) -> None:
        self.now = DAY_START_MS + offset_ms
        self.core = RateLimiterCore(limits)
        self.twin = RateLimiterCore(limits)
        self.buckets = model_buckets(limits)

    # -- the machine's own arithmetic

    def _slot(self, bucket: ModelBucket, t: int) -> tuple[Key, int]:
        return (bucket.key, t - t % bucket.window_ms)

    def _used(self, bucket: ModelBucket) -> int:
        return self.usage.get(self._slot(bucket, self.now), 0)

    def _fits(self, cost: Cost) -> bool:
        return all(
            b.amount(cost) == 0 or self._used(b) + b.amount(cost) <= b.budget
            for b in self.buckets.values()
        )

    def _consumes(self, cost: Cost) -> set[Key]:
        return {b.key for b in self.buckets.values() if b.amount(cost) > 0}

    def _possible(self, cost: Cost, buckets: Iterable[ModelBucket]) -> bool:
        return all(b.amount(cost) <= b.budget for b in buckets)

    def _waiting(self) -> list[Record]:
        return [r for r in self.records if r.status == "waiting"]

    def _collect(self) -> list[Ticket]:
        """Book every ticket the core admitted during this step, checking (a), (c) and priority.

        Priority: a ticket admitted in this step must not consume a bucket that a
        higher-priority ticket still waiting after it lacked room in before the step's
        admissions (usage only grows within a step, so it was blocked there throughout).
        """
        lacking_before = {
            id(r): {
                b.key
                for b in self.buckets.values()
                if b.amount(r.ticket.cost) and self._used(b) + b.amount(r.ticket.cost) > b.budget
            }
            for r in self._waiting()
        }
        newly = []
        for record in self._waiting():
            state = record.ticket.state
            if state is TicketState.WAITING:
                continue
            assert state is TicketState.ADMITTED, f"unexpected {state}"
            assert record.ticket.admitted_ms == self.now
            assert self.now >= self.held_until, "admitted during a hold"
            record.status = "admitted"
            newly.append(record.ticket)
            for bucket in self.buckets.values():
                amount = bucket.amount(record.ticket.cost)
                if amount == 0:
                    continue
                slot = self._slot(bucket, self.now)
                self.usage[slot] = self.usage.get(slot, 0) + amount
                self.admitted_sum[slot] = self.admitted_sum.get(slot, 0) + amount
                assert self.admitted_sum[slot] <= bucket.budget, f"(a) {slot} over budget"
                assert self.usage[slot] <= bucket.budget, f"(c) {slot} ignores a header"
        still_waiting = [r for r in self._waiting() if id(r) in lacking_before]
        for ticket in newly:
            taken = self._consumes(ticket.cost)
            for record in still_waiting:
                if record.ticket.priority < ticket.priority:
                    assert not taken & lacking_before[id(record)], (
                        f"{ticket} took {record}'s bucket"
                    )
        if self.twin_exact:
            for record in self.records:
                assert record.twin.state is record.ticket.state
                assert record.twin.admitted_ms == record.ticket.admitted_ms
        return newly

    def _poll(self) -> list[Ticket]:
        returned = self.core.poll(self.now)
        self.twin.poll(self.now)
        newly = self._collect()
        expected = self.unreported + newly
        assert len(returned) == len(expected)
        assert set(returned) == set(expected)
        self.unreported = []
        return newly

    # -- rules

    @rule(batch=st.lists(st.tuples(limiter_costs(), limiter_priorities()), min_size=1, max_size=6))
    def submit_some(self, batch: list[tuple[Cost, Priority]]) -> None:
        """Several submits at one instant, so that queues build up."""
        for cost, priority in batch:
            self._submit(cost, priority)

    def _submit(self, cost: Cost, priority: Priority) -> None:
        if not self._possible(cost, self.buckets.values()):
            with pytest.raises(ValueError, match="can never fit"):
                self.core.submit(cost, priority, self.now)
            with pytest.raises(ValueError, match="can never fit"):
                self.twin.submit(cost, priority, self.now)
            return
        ticket = self.core.submit(cost, priority, self.now)
        twin = self.twin.submit(cost, priority, self.now)
        assert (ticket.cost, ticket.priority, ticket.submitted_ms) == (cost, priority, self.now)
        self.records.append(Record(ticket, twin))
        newly = self._collect()
        self.unreported += [t for t in newly if t is not ticket]

    def _advance_to(self, t: int) -> None:
        wake = self.core.next_wakeup_ms(self.now)
        if not self._waiting():
            assert wake is None
        elif self.now < self.held_until:
            assert wake == self.held_until
        else:
            boundaries = {self._slot(b, self.now)[1] + b.window_ms for b in self.buckets.values()}
            assert wake in boundaries
        self.now = t
        newly = self._poll()
        if wake is not None and t < wake:
            assert not newly, "admitted before next_wakeup_ms: a waiter would oversleep"

    @rule(step_ms=st.integers(0, 4_000) | st.sampled_from([1, 999, 1000, 60_000, 86_400_000]))
    def advance(self, step_ms: int) -> None:
        self._advance_to(self.now + step_ms)

    @rule(data=st.data())
    def advance_to_an_edge(self, data: st.DataObject) -> None:
        """Jump onto, or 1 ms before, a window boundary or the hold's end."""
        edges = [self._slot(b, self.now)[1] + b.window_ms for b in self.buckets.values()]
        if self.held_until > self.now:
            edges.append(self.held_until)
        if edges:
            edge = data.draw(st.sampled_from(edges)) - data.draw(st.sampled_from([0, 1]))
            self._advance_to(max(self.now, edge))

    @precondition(lambda self: bool(self._waiting()))
    @rule()
    def advance_to_the_wakeup(self) -> None:
        wake = self.core.next_wakeup_ms(self.now)
        assert wake is not None
        self._advance_to(wake)

    @precondition(lambda self: bool(self.records))
    @rule(index=st.integers(0, 1000))
    def cancel(self, index: int) -> None:
        record = self.records[index % len(self.records)]
        was_waiting = record.status == "waiting"
        self.core.cancel(record.ticket, self.now)
        self.twin.cancel(record.twin, self.now)
        if was_waiting:
            assert record.ticket.state is TicketState.CANCELLED
            record.status = "gone"
        else:
            assert record.ticket.state is not TicketState.CANCELLED or record.status == "gone"
        self._poll()

    @precondition(lambda self: bool(self.buckets))
    @rule(index=st.integers(0, 10), reported=st.integers(0, 40), low=st.booleans())
    def usage_header(self, index: int, reported: int, low: bool) -> None:
        bucket = list(self.buckets.values())[index % len(self.buckets)]
        local = self._used(bucket)
        if low:
            reported = min(reported, local)
        self.core.sync_usage(bucket.key[0], bucket.key[1], reported, self.now)
        if reported > local:
            self.usage[self._slot(bucket, self.now)] = reported
            self.twin_exact = False

    @rule(reported=st.integers(0, 10**6))
    def usage_header_for_an_unknown_bucket(self, reported: int) -> None:
        self.core.sync_usage(RAW, 7_000, reported, self.now)  # no 7 s window exists

    @rule(duration_ms=st.integers(0, 15_000))
    def too_many_requests(self, duration_ms: int) -> None:
        until = self.now + duration_ms
        extended = self.core.hold(until, self.now)
        self.twin.hold(until, self.now)
        assert extended == (until > max(self.now, self.held_until))
        self.held_until = max(self.held_until, until)

    @rule(limits=rate_limit_sets())
    def new_limits(self, limits: tuple[RateLimit, ...]) -> None:
        new = model_buckets(limits)
        doomed = [r for r in self._waiting() if not self._possible(r.ticket.cost, new.values())]
        failed = self.core.set_limits(limits, self.now)
        self.twin.set_limits(limits, self.now)
        assert set(failed) == {r.ticket for r in doomed}
        for record in doomed:
            assert record.ticket.state is TicketState.FAILED
            assert isinstance(record.ticket.error, ValueError)
            record.status = "gone"
        # Usage stays only for buckets whose key stays.
        self.usage = {slot: n for slot, n in self.usage.items() if slot[0] in new}
        self.admitted_sum = {slot: n for slot, n in self.admitted_sum.items() if slot[0] in new}
        self.buckets = new
        self._poll()

    # -- invariants

    @invariant()
    def fifo_within_each_priority(self) -> None:
        for priority in Priority:
            mine = [r for r in self.records if r.ticket.priority is priority and r.status != "gone"]
            statuses = [r.status for r in mine]
            n_admitted = statuses.count("admitted")
            assert statuses[:n_admitted] == ["admitted"] * n_admitted, "(b) FIFO broken"
            times = [t for r in mine[:n_admitted] if (t := r.ticket.admitted_ms) is not None]
            assert len(times) == n_admitted
            assert times == sorted(times)

    @invariant()
    def no_admissible_ticket_is_left_waiting(self) -> None:
        if self.now < self.held_until:
            return
        waiting = self._waiting()
        for priority in Priority:
            heads = [r for r in waiting if r.ticket.priority is priority]
            if not heads:
                continue
            head = heads[0].ticket
            higher = set().union(
                *(self._consumes(r.ticket.cost) for r in waiting if r.ticket.priority < priority)
            )
            assert not (self._fits(head.cost) and not self._consumes(head.cost) & higher), (
                f"(d) {head} could go"
            )

    @invariant()
    def statistics_match_the_books(self) -> None:
        stats = self.core.statistics(self.now)
        assert {(b.type, b.window_ms) for b in stats.buckets} == set(self.buckets)
        for b in stats.buckets:
            bucket = self.buckets[(b.type, b.window_ms)]
            assert b.budget == bucket.budget
            assert b.window_start_ms == self.now - self.now % bucket.window_ms
            assert b.used == self._used(bucket)
        assert stats.queued == len(self._waiting())
        assert stats.admitted_total == sum(r.status == "admitted" for r in self.records)
        assert stats.held_until_ms == (self.held_until if self.held_until > self.now else None)


TestLimiterMachine = LimiterMachine.TestCase


# --- the core: budgets and windows ------------------------------------------------------------


def test_budget_is_the_floor_of_limit_times_threshold() -> None:
    budgets = [b.budget for b in RateLimiterCore().statistics(START_MS).buckets]
    assert budgets == [960, 40, 128_000]  # 1200, 50, 160 000 × 0.8
    live = RateLimiterCore([weight_per_min(6000), limit(RAW, "MINUTE", 5, 300_000)])
    assert [b.budget for b in live.statistics(START_MS).buckets] == [4800, 240_000]
    # 0.29 × 100 is 28.999… in binary floating point; the budget is 29 as written.
    assert (
        RateLimiterCore([weight_per_min(100)], threshold=0.29).statistics(0).buckets[0].budget == 29
    )
    assert RateLimiterCore([weight_per_min(1)], threshold=0.5).statistics(0).buckets[0].budget == 1


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.01])
def test_threshold_outside_zero_to_one_is_refused(threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        RateLimiterCore(threshold=threshold)


def test_forty_of_fifty_orders_fit_a_10s_window_and_the_41st_waits_for_its_end() -> None:
    core = RateLimiterCore([orders_per_10s(50)])
    now = START_MS + 3_000
    tickets = [core.submit(Cost(orders=1), Priority.ORDER, now) for _ in range(40)]
    assert all(t.admitted and t.admitted_ms == now for t in tickets)
    last = core.submit(Cost(orders=1), Priority.ORDER, now)
    assert last.waiting
    assert core.next_wakeup_ms(now) == START_MS + 10_000
    assert core.poll(START_MS + 9_999) == []
    assert core.poll(START_MS + 10_000) == [last]
    assert last.admitted_ms == START_MS + 10_000
    assert core.next_wakeup_ms(START_MS + 10_000) is None


def test_4800_of_6000_weight_fit_a_minute() -> None:
    core = RateLimiterCore([weight_per_min(6000)])
    assert core.submit(Cost(weight=4000), Priority.NORMAL, START_MS + 1).admitted
    assert core.submit(Cost(weight=800), Priority.NORMAL, START_MS + 2).admitted
    late = core.submit(Cost(weight=1), Priority.NORMAL, START_MS + 3)
    assert late.waiting
    assert core.next_wakeup_ms(START_MS + 3) == START_MS + 60_000


def test_a_cost_that_can_never_fit_raises_value_error_naming_the_bucket() -> None:
    core = RateLimiterCore([weight_per_min(6000), orders_per_10s(50)])
    with pytest.raises(ValueError, match=r"weight=4801 .*REQUEST_WEIGHT 1M budget of 4800"):
        core.submit(Cost(weight=4801), Priority.NORMAL, START_MS)
    with pytest.raises(ValueError, match=r"orders=41 .*ORDERS 10S budget of 40"):
        core.submit(Cost(orders=41), Priority.ORDER, START_MS)
    stats = core.statistics(START_MS)
    assert (stats.queued, stats.admitted_total) == (0, 0)
    assert core.submit(Cost(weight=4800, orders=40), Priority.ORDER, START_MS).admitted


@pytest.mark.parametrize("field", ["weight", "orders", "raw"])
def test_negative_costs_are_refused(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Cost(**{field: -1})


def test_connection_limits_are_ignored_and_no_limits_admit_everything() -> None:
    core = RateLimiterCore([limit(RateLimitType.CONNECTIONS, "MINUTE", 5, 300)])
    assert core.statistics(START_MS).buckets == ()
    assert all(
        core.submit(Cost(weight=10**9), Priority.NORMAL, START_MS).admitted for _ in range(3)
    )


def test_of_two_limits_for_one_bucket_the_stricter_wins() -> None:
    core = RateLimiterCore([orders_per_10s(50), orders_per_10s(10), orders_per_10s(20)])
    assert [(b.limit, b.budget) for b in core.statistics(START_MS).buckets] == [(10, 8)]


def test_raw_requests_take_the_raw_cost() -> None:
    core = RateLimiterCore([limit(RAW, "MINUTE", 5, 5)])  # budget 4
    assert [core.submit(Cost(), Priority.NORMAL, START_MS).admitted for _ in range(5)] == [
        True,
        True,
        True,
        True,
        False,
    ]
    assert core.submit(Cost(raw=0), Priority.ORDER, START_MS).admitted  # consumes nothing
    assert core.next_wakeup_ms(START_MS) == 1_700_000_100_000  # 5 666 667 × 300 000


def test_windows_never_move_backwards_when_server_time_steps_back() -> None:
    core = RateLimiterCore([orders_per_10s(5)])  # budget 4
    for _ in range(4):
        core.submit(Cost(orders=1), Priority.ORDER, START_MS + 10_500)
    # The estimate steps back into the previous window: the later window's usage still counts.
    assert core.submit(Cost(orders=1), Priority.ORDER, START_MS + 9_000).waiting
    assert core.statistics(START_MS + 9_000).buckets[0].window_start_ms == START_MS + 10_000
    assert core.next_wakeup_ms(START_MS + 9_000) == START_MS + 20_000


# --- the core: ordering -----------------------------------------------------------------------


def test_cancels_go_ahead_of_orders_and_orders_ahead_of_queries() -> None:
    core = RateLimiterCore([weight_per_10s(10)])  # budget 8 per 10 s window
    assert core.submit(Cost(weight=8), Priority.NORMAL, START_MS).admitted
    order = core.submit(Cost(weight=8, orders=1), Priority.ORDER, START_MS + 1)
    query = core.submit(Cost(weight=8), Priority.NORMAL, START_MS + 2)
    cancel = core.submit(Cost(weight=8), Priority.CANCEL, START_MS + 3)
    assert [order.waiting, query.waiting, cancel.waiting] == [True, True, True]
    assert core.poll(START_MS + 10_000) == [cancel]
    assert core.poll(START_MS + 20_000) == [order]
    assert core.poll(START_MS + 30_000) == [query]


def test_all_that_fit_go_in_priority_order_at_the_roll() -> None:
    core = RateLimiterCore([weight_per_10s(10)])
    core.submit(Cost(weight=8), Priority.NORMAL, START_MS)
    query = core.submit(Cost(weight=2), Priority.NORMAL, START_MS)
    order = core.submit(Cost(weight=2, orders=1), Priority.ORDER, START_MS)
    cancel = core.submit(Cost(weight=2), Priority.CANCEL, START_MS)
    late_query = core.submit(Cost(weight=4), Priority.NORMAL, START_MS)
    assert core.poll(START_MS + 10_000) == [cancel, order, query]
    assert late_query.waiting  # 2 + 2 + 2 + 4 > 8


def test_fifo_within_a_priority_even_when_a_later_ticket_would_fit() -> None:
    core = RateLimiterCore([weight_per_10s(10)])
    core.submit(Cost(weight=4), Priority.NORMAL, START_MS)
    big = core.submit(Cost(weight=8), Priority.NORMAL, START_MS)
    small = core.submit(Cost(weight=1), Priority.NORMAL, START_MS)
    assert big.waiting
    assert small.waiting  # it would fit, but never passes an earlier ticket of its priority
    assert core.poll(START_MS + 10_000) == [big]
    assert core.poll(START_MS + 20_000) == [small]


def test_a_query_passes_an_order_that_waits_only_for_the_orders_window() -> None:
    core = RateLimiterCore([weight_per_min(100), orders_per_10s(5)])  # budgets 80 and 4
    for _ in range(4):
        assert core.submit(Cost(weight=1, orders=1), Priority.ORDER, START_MS).admitted
    order = core.submit(Cost(weight=1, orders=1), Priority.ORDER, START_MS)
    assert order.waiting
    query = core.submit(Cost(weight=5), Priority.NORMAL, START_MS)
    assert query.admitted  # consumes no ORDERS: not stuck behind the order
    normal_order = core.submit(Cost(weight=1, orders=1), Priority.NORMAL, START_MS)
    assert normal_order.waiting  # wants the very bucket the order waits for
    assert core.poll(START_MS + 10_000) == [order, normal_order]


def test_nothing_lower_takes_the_bucket_a_cancel_waits_for() -> None:
    core = RateLimiterCore([weight_per_10s(10), orders_per_min(100)])  # budgets 8 and 80
    core.submit(Cost(weight=7), Priority.NORMAL, START_MS)
    cancel = core.submit(Cost(weight=2), Priority.CANCEL, START_MS)
    assert cancel.waiting
    query = core.submit(Cost(weight=1), Priority.NORMAL, START_MS)
    assert query.waiting  # it would fit, and so delay the cancel by a whole window
    orders_only = core.submit(Cost(orders=1), Priority.ORDER, START_MS)
    assert orders_only.admitted  # shares no bucket with the cancel
    assert core.poll(START_MS + 10_000) == [cancel, query]


def test_a_ticket_blocked_behind_a_cancel_blocks_only_what_it_waits_for() -> None:
    core = RateLimiterCore([weight_per_10s(10), orders_per_min(5)])  # budgets 8 and 4
    core.submit(Cost(weight=7), Priority.NORMAL, START_MS)
    cancel = core.submit(Cost(weight=2), Priority.CANCEL, START_MS)
    order = core.submit(Cost(weight=1, orders=1), Priority.ORDER, START_MS)
    assert cancel.waiting
    assert order.waiting  # fits, but wants the weight the cancel waits for
    # The order waits for weight only, so an orders-only ticket may pass it …
    assert core.submit(Cost(orders=2), Priority.NORMAL, START_MS).admitted
    # … until ORDERS is short for the order too; then it waits for ORDERS as well.
    assert core.submit(Cost(orders=2), Priority.NORMAL, START_MS).admitted
    late = core.submit(Cost(orders=1), Priority.NORMAL, START_MS)
    assert late.waiting
    assert core.next_wakeup_ms(START_MS) == START_MS + 10_000
    assert core.poll(START_MS + 10_000) == [cancel]  # the order still lacks ORDERS
    assert core.poll(START_MS + 60_000) == [order, late]


# --- the core: the exchange's signals ----------------------------------------------------------


def test_a_hold_admits_nothing_until_its_end() -> None:
    core = RateLimiterCore([weight_per_min(100)])
    assert core.hold(START_MS + 2_500, START_MS)
    assert not core.hold(START_MS + 2_000, START_MS + 1)  # a shorter hold changes nothing
    cancel = core.submit(Cost(weight=1), Priority.CANCEL, START_MS + 10)
    query = core.submit(Cost(weight=1), Priority.NORMAL, START_MS + 20)
    assert cancel.waiting
    assert query.waiting
    assert core.next_wakeup_ms(START_MS + 20) == START_MS + 2_500
    assert core.statistics(START_MS + 20).held_until_ms == START_MS + 2_500
    assert core.poll(START_MS + 2_499) == []
    assert core.poll(START_MS + 2_500) == [cancel, query]
    assert core.statistics(START_MS + 2_500).held_until_ms is None
    assert core.submit(Cost(weight=1), Priority.NORMAL, START_MS + 2_500).admitted


def test_a_ban_fails_queued_tickets_and_refuses_submits_until_its_end() -> None:
    core = RateLimiterCore([orders_per_10s(5)])
    for _ in range(4):
        core.submit(Cost(orders=1), Priority.ORDER, START_MS)
    queued = [
        core.submit(Cost(orders=1), p, START_MS + 500) for p in (Priority.ORDER, Priority.CANCEL)
    ]
    failed = core.ban(START_MS + 121_000, START_MS + 1_000)
    assert failed == [queued[1], queued[0]]  # in queue order
    for ticket in queued:
        assert ticket.state is TicketState.FAILED
        assert isinstance(ticket.error, IpBannedError)
        assert ticket.error.until_ms == START_MS + 121_000
        assert ticket.error.retry_after_s == 120.0
    assert queued[0].error is not queued[1].error  # each waiter raises its own
    with pytest.raises(IpBannedError) as info:
        core.submit(Cost(orders=1), Priority.CANCEL, START_MS + 61_000)
    assert (info.value.until_ms, info.value.retry_after_s) == (START_MS + 121_000, 60.0)
    stats = core.statistics(START_MS + 61_000)
    assert (stats.queued, stats.banned_until_ms) == (0, START_MS + 121_000)
    assert core.next_wakeup_ms(START_MS + 61_000) is None
    assert core.submit(Cost(orders=1), Priority.ORDER, START_MS + 121_000).admitted
    assert core.statistics(START_MS + 121_000).banned_until_ms is None
    assert core.ban(START_MS, START_MS + 121_000) == []  # already over: nothing happens


def test_a_header_only_ever_raises_local_usage() -> None:
    core = RateLimiterCore([orders_per_10s(50), weight_per_min(1200)])
    for _ in range(10):
        core.submit(Cost(weight=1, orders=1), Priority.ORDER, START_MS)
    core.sync_usage(ORDERS, 10_000, 5, START_MS + 1)  # lower than ours: ignored
    core.sync_usage(WEIGHT, 60_000, 0, START_MS + 1)
    assert used(core, START_MS + 1) == {"ORDERS 10S": 10, "REQUEST_WEIGHT 1M": 10}
    core.sync_usage(ORDERS, 10_000, 39, START_MS + 2)  # someone else on the account
    assert used(core, START_MS + 2) == {"ORDERS 10S": 39, "REQUEST_WEIGHT 1M": 10}
    assert core.submit(Cost(orders=1), Priority.ORDER, START_MS + 3).admitted
    assert core.submit(Cost(orders=1), Priority.ORDER, START_MS + 3).waiting
    # The header counted for its window only; the next one starts from the order carried over.
    assert used(core, START_MS + 10_000) == {"ORDERS 10S": 0, "REQUEST_WEIGHT 1M": 10}


def test_a_header_for_an_unknown_bucket_is_ignored_and_a_negative_one_refused() -> None:
    core = RateLimiterCore([orders_per_10s(50)])
    core.sync_usage(RAW, 300_000, 10**6, START_MS)
    core.sync_usage(ORDERS, 86_400_000, 10**6, START_MS)
    assert used(core, START_MS) == {"ORDERS 10S": 0}
    with pytest.raises(ValueError, match="used"):
        core.sync_usage(ORDERS, 10_000, -1, START_MS)


def test_a_header_can_let_a_cancel_pass_that_an_unsynced_twin_holds() -> None:
    """Why property (c) is not "synced ⊆ twin": holding back one ticket frees another bucket."""
    limits = [weight_per_min(12), orders_per_10s(3)]  # budgets 9 and 2
    synced, twin = RateLimiterCore(limits), RateLimiterCore(limits)
    synced.sync_usage(WEIGHT, 60_000, 9, START_MS)  # the server says the weight is spent
    order = Cost(weight=1, orders=1)
    assert twin.submit(order, Priority.NORMAL, START_MS).admitted
    assert synced.submit(order, Priority.NORMAL, START_MS).waiting  # held back, rightly
    cancel = Cost(orders=2)
    assert twin.submit(cancel, Priority.CANCEL, START_MS).waiting  # 1 + 2 orders > 2
    assert synced.submit(cancel, Priority.CANCEL, START_MS).admitted  # 0 + 2 orders fit


def test_new_limits_keep_the_usage_of_buckets_whose_key_stays() -> None:
    core = RateLimiterCore()  # 1200 weight/min, 50 orders/10 s, 160 000 orders/day
    for _ in range(30):
        core.submit(Cost(weight=1, orders=1), Priority.ORDER, START_MS)
    failed = core.set_limits(
        [weight_per_min(6000), orders_per_10s(100), limit(RAW, "MINUTE", 5, 300_000)],
        START_MS + 1,
    )
    assert failed == []
    assert used(core, START_MS + 1) == {
        "REQUEST_WEIGHT 1M": 30,  # kept
        "ORDERS 10S": 30,  # kept, budget now 80
        "RAW_REQUESTS 5M": 0,  # new
    }  # and the 1-day bucket is gone
    admitted = [
        core.submit(Cost(weight=1, orders=1), Priority.ORDER, START_MS + 2) for _ in range(51)
    ]
    assert [t.admitted for t in admitted].count(True) == 50
    assert admitted[-1].waiting


def test_raised_budgets_admit_waiters_at_the_next_poll() -> None:
    core = RateLimiterCore([orders_per_10s(5)])
    for _ in range(4):
        core.submit(Cost(orders=1), Priority.ORDER, START_MS)
    waiting = core.submit(Cost(orders=1), Priority.ORDER, START_MS)
    core.set_limits([orders_per_10s(50)], START_MS + 100)
    assert core.next_wakeup_ms(START_MS + 100) == START_MS + 100  # admissible already
    assert waiting.waiting  # asking does not admit
    assert core.poll(START_MS + 100) == [waiting]


def test_new_limits_fail_a_queued_ticket_that_can_no_longer_fit() -> None:
    core = RateLimiterCore([weight_per_min(100)])
    core.submit(Cost(weight=60), Priority.NORMAL, START_MS)
    big = core.submit(Cost(weight=30), Priority.NORMAL, START_MS)
    small = core.submit(Cost(weight=5), Priority.NORMAL, START_MS)
    assert core.set_limits([weight_per_min(25)], START_MS + 1) == [big]  # budget 20
    assert big.state is TicketState.FAILED
    assert isinstance(big.error, ValueError)
    assert "REQUEST_WEIGHT 1M budget of 20" in str(big.error)
    assert small.waiting
    assert core.statistics(START_MS + 1).queued == 1


def test_cancel_removes_a_waiting_ticket_and_lets_the_next_through() -> None:
    core = RateLimiterCore([weight_per_10s(10)])
    first = core.submit(Cost(weight=4), Priority.NORMAL, START_MS)
    big = core.submit(Cost(weight=8), Priority.NORMAL, START_MS)
    small = core.submit(Cost(weight=1), Priority.NORMAL, START_MS)
    core.cancel(big, START_MS + 5)
    assert big.state is TicketState.CANCELLED
    assert core.poll(START_MS + 5) == [small]
    core.cancel(first, START_MS + 5)  # already admitted: nothing changes
    core.cancel(big, START_MS + 5)  # already removed: nothing changes
    assert first.admitted
    stats = core.statistics(START_MS + 5)
    assert (stats.queued, stats.admitted_total, stats.buckets[0].used) == (0, 2, 5)


def test_statistics_report_every_figure() -> None:
    core = RateLimiterCore()
    now = START_MS + 3_000
    for _ in range(40):
        core.submit(Cost(weight=2, orders=1), Priority.ORDER, now)
    late = core.submit(Cost(weight=2, orders=1), Priority.ORDER, now)
    core.submit(Cost(weight=1), Priority.NORMAL, now)  # passes: the order waits for ORDERS only
    assert core.statistics(now).queued == 1
    core.poll(START_MS + 10_000)
    assert late.admitted
    core.hold(START_MS + 15_000, START_MS + 10_000)
    assert core.statistics(START_MS + 10_000) == RateLimiterStatistics(
        buckets=(
            BucketStatistics(
                type=WEIGHT,
                interval="1M",
                window_ms=60_000,
                limit=1200,
                budget=960,
                used=83,
                window_start_ms=1_699_999_980_000,
            ),
            BucketStatistics(
                type=ORDERS,
                interval="10S",
                window_ms=10_000,
                limit=50,
                budget=40,
                used=1,
                window_start_ms=1_699_999_990_000,
            ),
            BucketStatistics(
                type=ORDERS,
                interval="1D",
                window_ms=86_400_000,
                limit=160_000,
                budget=128_000,
                used=41,
                window_start_ms=1_699_920_000_000,
            ),
        ),
        queued=0,
        admitted_total=42,
        waited_total=1,
        longest_wait_ms=7_000,
        held_until_ms=1_699_999_995_000,
        banned_until_ms=None,
    )


# --- the Trio wrapper -------------------------------------------------------------------------


async def test_acquire_admits_40_orders_at_once_and_the_41st_at_the_next_10s_boundary(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter(server_time_ms=server_clock(START_MS + 3_000))
    with trio.fail_after(DEADLINE_S):
        for _ in range(40):
            await limiter.acquire(Cost(weight=1, orders=1), Priority.ORDER)
        assert trio.current_time() == 0.0
        await limiter.acquire(Cost(weight=1, orders=1), Priority.ORDER)
        assert trio.current_time() == 7.0
    assert limiter.statistics().admitted_total == 41


async def test_a_crowd_of_waiters_goes_window_by_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter(
        RateLimiterCore([orders_per_10s(50)]), server_time_ms=server_clock(START_MS + 3_000)
    )
    admitted_at: list[float] = []

    async def order() -> None:
        await limiter.acquire(Cost(orders=1), Priority.ORDER)
        admitted_at.append(trio.current_time())

    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            for _ in range(100):
                nursery.start_soon(order)
    assert Counter(admitted_at) == {0.0: 40, 7.0: 40, 17.0: 20}
    stats = limiter.statistics()
    assert (stats.queued, stats.waited_total, stats.longest_wait_ms) == (0, 60, 17_000)


async def test_a_cancel_goes_first_at_the_window_roll(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter(
        RateLimiterCore([weight_per_10s(10)]), server_time_ms=server_clock(START_MS)
    )
    admitted: list[tuple[str, float]] = []

    async def request(name: str, priority: Priority) -> None:
        await limiter.acquire(Cost(weight=8), priority)
        admitted.append((name, trio.current_time()))

    with trio.fail_after(DEADLINE_S):
        await limiter.acquire(Cost(weight=8))
        async with trio.open_nursery() as nursery:
            for name, priority in [
                ("query", Priority.NORMAL),
                ("order", Priority.ORDER),
                ("cancel", Priority.CANCEL),
            ]:
                nursery.start_soon(request, name, priority)
                await trio.sleep(1)
    assert admitted == [("cancel", 10.0), ("order", 20.0), ("query", 30.0)]


async def test_a_429_hold_delays_everyone_until_its_end(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = RateLimiter(server_time_ms=server_clock(START_MS))
    admitted: list[tuple[Priority, float]] = []

    async def request(priority: Priority) -> None:
        await limiter.acquire(Cost(weight=1), priority)
        admitted.append((priority, trio.current_time()))

    caplog.set_level(logging.DEBUG, logger=LOGGER)
    with trio.fail_after(DEADLINE_S):
        await trio.sleep(1)
        limiter.hold_for(2.5)
        limiter.hold_for(1.0)  # shorter: neither changes nor logs
        assert limiter.statistics().held_until_ms == START_MS + 3_500
        async with trio.open_nursery() as nursery:
            for priority in (Priority.NORMAL, Priority.ORDER, Priority.CANCEL):
                nursery.start_soon(request, priority)
    # All at the hold's end (their order among themselves is the core's, tested above).
    assert sorted(admitted) == [
        (Priority.CANCEL, 3.5),
        (Priority.ORDER, 3.5),
        (Priority.NORMAL, 3.5),
    ]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "ratelimit.hold until_ms=1699999983500 retry_after_s=2.5"
    ]
    assert sum(r.msg.startswith("ratelimit.queued") for r in caplog.records) == 3


async def test_a_418_ban_fails_waiters_and_submitters_until_its_end(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = RateLimiter(
        RateLimiterCore([orders_per_10s(5)]), server_time_ms=server_clock(START_MS)
    )
    failures: list[tuple[float, int | None, float]] = []

    async def waiter() -> None:
        with pytest.raises(IpBannedError) as info:
            await limiter.acquire(Cost(orders=1), Priority.ORDER)
        failures.append((trio.current_time(), info.value.until_ms, info.value.retry_after_s))

    with trio.fail_after(DEADLINE_S):
        for _ in range(4):
            await limiter.acquire(Cost(orders=1), Priority.ORDER)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            nursery.start_soon(waiter)
            await trio.sleep(1)
            limiter.ban_until(START_MS + 121_000)
        assert failures == [(1.0, START_MS + 121_000, 120.0)] * 2
        with pytest.raises(IpBannedError) as info:
            await limiter.acquire(Cost(weight=1), Priority.CANCEL)
        assert (info.value.until_ms, info.value.retry_after_s) == (START_MS + 121_000, 120.0)
        await trio.sleep(120)
        await limiter.acquire(Cost(orders=1), Priority.ORDER)
        assert trio.current_time() == 121.0
        limiter.ban_until(START_MS + 100_000)  # already over: no ban, no warning
        await limiter.acquire(Cost(orders=1), Priority.ORDER)
    assert limiter.statistics().queued == 0
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "ratelimit.ban until_ms=1700000101000 failed=2"
    ]


async def test_a_cancelled_waiter_leaves_nothing_behind_and_lets_the_next_through(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter(
        RateLimiterCore([weight_per_10s(10)]), server_time_ms=server_clock(START_MS)
    )
    events: list[tuple[str, float]] = []

    async def impatient() -> None:
        with trio.move_on_after(1.0):
            await limiter.acquire(Cost(weight=8))  # 4 + 8 > 8: waits for the next window
        events.append(("gave up", trio.current_time()))

    async def small() -> None:
        await limiter.acquire(Cost(weight=1))  # fits, but queues behind the big one (FIFO)
        events.append(("small", trio.current_time()))

    with trio.fail_after(DEADLINE_S):
        await limiter.acquire(Cost(weight=4))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(impatient)
            await trio.sleep(0.5)
            nursery.start_soon(small)
            await trio.sleep(0.1)
            assert limiter.statistics().queued == 2
    assert sorted(events) == [("gave up", 1.0), ("small", 1.0)]
    stats = limiter.statistics()
    assert (stats.queued, stats.admitted_total, stats.buckets[0].used) == (0, 2, 5)


async def test_a_cancelled_acquire_checkpoints_first_and_takes_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter(server_time_ms=server_clock(START_MS))
    with trio.CancelScope() as cancel_scope:
        cancel_scope.cancel()
        await limiter.acquire(Cost(weight=1))
    assert cancel_scope.cancelled_caught
    assert limiter.statistics().admitted_total == 0
    with trio.testing.assert_checkpoints():
        await limiter.acquire(Cost(weight=1))  # admitted at once, still a checkpoint
    with trio.testing.assert_checkpoints(), pytest.raises(ValueError, match="never fit"):
        await limiter.acquire(Cost(weight=10**6))


async def test_new_limits_wake_waiters_for_their_new_windows(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = RateLimiter(
        RateLimiterCore([orders_per_min(5), orders_per_10s(100)]),
        server_time_ms=server_clock(START_MS),
    )
    caplog.set_level(logging.INFO, logger=LOGGER)
    admitted_at: list[float] = []

    async def order() -> None:
        await limiter.acquire(Cost(orders=1), Priority.ORDER)  # blocked by the minute: 60 s
        admitted_at.append(trio.current_time())

    with trio.fail_after(DEADLINE_S):
        for _ in range(4):
            await limiter.acquire(Cost(orders=1), Priority.ORDER)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(order)
            await trio.sleep(1)
            # The 10 s bucket stays with its 4 orders and becomes the binding one (budget 4).
            limiter.set_limits([orders_per_10s(5)])
    assert admitted_at == [10.0]
    assert "ratelimit.limits ORDERS/10S=5" in [r.getMessage() for r in caplog.records]


async def test_raised_limits_admit_a_waiter_at_once(autojump_clock: trio.testing.MockClock) -> None:
    limiter = RateLimiter(
        RateLimiterCore([orders_per_10s(5)]), server_time_ms=server_clock(START_MS)
    )
    admitted_at: list[float] = []

    async def order() -> None:
        await limiter.acquire(Cost(orders=1), Priority.ORDER)
        admitted_at.append(trio.current_time())

    with trio.fail_after(DEADLINE_S):
        for _ in range(4):
            await limiter.acquire(Cost(orders=1), Priority.ORDER)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(order)
            await trio.sleep(2)
            limiter.set_limits(FALLBACK_RATE_LIMITS)
    assert admitted_at == [2.0]


async def test_a_waiter_whose_cost_no_longer_fits_new_limits_raises_value_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter(
        RateLimiterCore([weight_per_min(100)]), server_time_ms=server_clock(START_MS)
    )
    raised_at: list[float] = []

    async def big() -> None:
        with pytest.raises(ValueError, match="never fit"):
            await limiter.acquire(Cost(weight=50))
        raised_at.append(trio.current_time())

    with trio.fail_after(DEADLINE_S):
        await limiter.acquire(Cost(weight=60))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(big)
            await trio.sleep(3)
            limiter.set_limits([weight_per_min(25)])
    assert raised_at == [3.0]
    assert limiter.statistics().queued == 0


async def test_a_usage_header_makes_the_next_request_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter(server_time_ms=server_clock(START_MS + 4_000))
    with trio.fail_after(DEADLINE_S):
        limiter.sync_usage(ORDERS, 10_000, 40)  # X-MBX-ORDER-COUNT-10S: 40
        await limiter.acquire(Cost(orders=1), Priority.ORDER)
        assert trio.current_time() == 6.0
    assert {b.interval: b.used for b in limiter.statistics().buckets} == {
        "1M": 0,
        "10S": 1,
        "1D": 1,
    }


def _admitted_seqs(tickets: Sequence[Ticket]) -> list[int]:
    return [t.seq for t in tickets if t.admitted]


def test_ticket_numbers_increase_across_priorities() -> None:
    core = RateLimiterCore()
    tickets = [core.submit(Cost(weight=1), p, START_MS) for p in reversed(Priority)]
    assert _admitted_seqs(tickets) == [1, 2, 3]
