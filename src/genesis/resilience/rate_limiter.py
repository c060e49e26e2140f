"""Client-side Binance rate limits: a pure fixed-window core that takes ``now_ms``, a Trio wrapper.

Binance counts every ``rateLimits`` entry of exchangeInfo in fixed, calendar-aligned windows on
*server* time: a window of ``w`` ms starts at ``now_ms - now_ms % w`` (a 10 s window at :00, :10 …,
a day at 00:00 UTC). :class:`RateLimiterCore` keeps one bucket per ``(type, window)`` and admits a
request only while its :class:`Cost` fits every bucket's *budget*, ``max(1, floor(limit ×
threshold))``: with the default threshold 0.8 at most 40 orders enter one 10 s window of a 50-order
limit, leaving room for what we cannot see (other processes on the IP or account, clock skew).

Rules the core enforces:

- **Priorities.** :class:`Priority` ``CANCEL`` < ``ORDER`` < ``NORMAL``; within a priority the
  queue is FIFO. A ticket may pass a waiting higher-priority ticket only if it consumes none of
  the buckets that ticket is blocked on. A cancel is never delayed by lower-priority traffic
  competing for its bucket, yet a weight-only query does not wait behind an order that waits only
  for the ORDERS window.
- **Server headers** (``X-MBX-USED-WEIGHT-1M``, ``X-MBX-ORDER-COUNT-10S`` …) go to
  :meth:`RateLimiterCore.sync_usage`: usage becomes ``max(local, reported)``, so a header only
  ever makes the limiter more cautious.
- **429** (``Retry-After``): :meth:`RateLimiterCore.hold` admits nothing before the hold's end;
  requests queue. **418**: :meth:`RateLimiterCore.ban` fails every queued ticket and makes
  :meth:`RateLimiterCore.submit` raise :class:`~genesis.errors.IpBannedError` until the ban ends.

Windows only move forward: if the server-time estimate steps back (a new clock offset), the
current window and its usage are kept, which is the cautious reading.

:class:`RateLimiter` is the Trio face: :meth:`RateLimiter.acquire` submits, then sleeps until the
core's :meth:`~RateLimiterCore.next_wakeup_ms` or until another task admits its ticket. There is
no background task; whichever waiter wakes first polls the core for everyone.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import OrderedDict
from fractions import Fraction
from typing import TYPE_CHECKING, Final

import attrs
import trio

from genesis.errors import IpBannedError
from genesis.models.exchange_info import FALLBACK_RATE_LIMITS, RateLimit, RateLimitType

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "BucketStatistics",
    "Cost",
    "Priority",
    "RateLimiter",
    "RateLimiterCore",
    "RateLimiterStatistics",
    "Ticket",
    "TicketState",
]

logger = logging.getLogger(__name__)

# Which Cost field each bucket type consumes; CONNECTIONS limits are not per request.
_KIND: Final = {
    RateLimitType.REQUEST_WEIGHT: 0,
    RateLimitType.ORDERS: 1,
    RateLimitType.RAW_REQUESTS: 2,
}
_KIND_FIELD: Final = ("weight", "orders", "raw")


class Priority(enum.IntEnum):
    """Queue priority; the lower value goes first."""

    CANCEL = 0
    ORDER = 1
    NORMAL = 2


@attrs.frozen(kw_only=True)
class Cost:
    """What one request consumes of each bucket type.

    Attributes:
        weight: taken from every ``REQUEST_WEIGHT`` bucket.
        orders: taken from every ``ORDERS`` bucket (1 for an order placement).
        raw: taken from every ``RAW_REQUESTS`` bucket (1 per request).
    """

    weight: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    orders: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    raw: int = attrs.field(default=1, validator=attrs.validators.ge(0))


class TicketState(enum.Enum):
    """Where a :class:`Ticket` stands."""

    WAITING = "WAITING"
    ADMITTED = "ADMITTED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"


@attrs.define(kw_only=True, eq=False)
class Ticket:
    """One submitted request, owned by the core; compared by identity.

    Attributes:
        seq: submission number, increasing across priorities.
        cost, priority: as submitted.
        submitted_ms: server time of the submit.
        state: updated by the core only.
        admitted_ms: server time of the admission, once admitted.
        error: why a ``FAILED`` ticket will never be admitted: an
            :class:`~genesis.errors.IpBannedError` (418) or a ``ValueError`` (new limits that its
            cost can never fit).
    """

    seq: int
    cost: Cost
    priority: Priority
    submitted_ms: int
    state: TicketState = TicketState.WAITING
    admitted_ms: int | None = None
    error: Exception | None = None

    @property
    def admitted(self) -> bool:
        """Whether the request may be sent."""
        return self.state is TicketState.ADMITTED

    @property
    def waiting(self) -> bool:
        """Whether the ticket is still queued."""
        return self.state is TicketState.WAITING


@attrs.frozen(kw_only=True)
class BucketStatistics:
    """One bucket at the time of :meth:`RateLimiterCore.statistics`.

    Attributes:
        type: the ``rateLimitType``.
        interval: the header suffix of the window, e.g. ``"1M"``, ``"10S"``, ``"1D"``.
        window_ms: the window's length.
        limit: Binance's limit; budget: the part of it the limiter admits.
        used: usage in the current window (local admissions, raised by server headers).
        window_start_ms: server time at which the current window began.
    """

    type: RateLimitType
    interval: str
    window_ms: int
    limit: int
    budget: int
    used: int
    window_start_ms: int


@attrs.frozen(kw_only=True)
class RateLimiterStatistics:
    """A snapshot of a :class:`RateLimiterCore`.

    Attributes:
        buckets: every bucket in use, in the order of the limits.
        queued: tickets waiting now.
        admitted_total: tickets admitted so far.
        waited_total: of those, how many had to queue first.
        longest_wait_ms: the longest queue time of an admitted ticket.
        held_until_ms: end of the current 429 hold, ``None`` when not held.
        banned_until_ms: end of the current 418 ban, ``None`` when not banned.
    """

    buckets: tuple[BucketStatistics, ...]
    queued: int
    admitted_total: int
    waited_total: int
    longest_wait_ms: int
    held_until_ms: int | None
    banned_until_ms: int | None


@attrs.define(kw_only=True)
class _Bucket:
    rate_limit: RateLimit
    kind: int
    window_ms: int
    budget: int
    used: int = 0
    window_start_ms: int = -1  # before any window: the first roll starts one

    @property
    def name(self) -> str:
        return f"{self.rate_limit.type.value} {self.rate_limit.header_suffix}"


def _budget(limit: int, threshold: Fraction) -> int:
    return max(1, math.floor(limit * threshold))


def _buckets(limits: Iterable[RateLimit], threshold: Fraction) -> list[_Bucket]:
    # Binance lists each (type, window) once; should a duplicate appear, the stricter one wins.
    by_key: dict[tuple[RateLimitType, int], RateLimit] = {}
    for rate_limit in limits:
        if rate_limit.type not in _KIND:
            continue
        known = by_key.get(rate_limit.key)
        if known is None or rate_limit.limit < known.limit:
            by_key[rate_limit.key] = rate_limit
    return [
        _Bucket(
            rate_limit=rate_limit,
            kind=_KIND[rate_limit.type],
            window_ms=rate_limit.window_ms,
            budget=_budget(rate_limit.limit, threshold),
        )
        for rate_limit in by_key.values()
    ]


class RateLimiterCore:
    """Fixed-window admission for Binance's rate limits; pure and synchronous.

    Every method takes ``now_ms``, the server time (epoch ms) of the call. Nothing here blocks or
    reads a clock, so a test can drive it step by step.

    Args:
        limits: exchangeInfo ``rateLimits``; ``CONNECTIONS`` entries are ignored.
        threshold: the fraction of each limit to use, in ``(0, 1]``.

    Raises:
        ValueError: ``threshold`` is outside ``(0, 1]``.
    """

    def __init__(
        self, limits: Sequence[RateLimit] = FALLBACK_RATE_LIMITS, *, threshold: float = 0.8
    ) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be within (0, 1], got {threshold!r}")
        # The threshold as written (0.29, not 0.28999…), so budgets are exact.
        self._threshold = Fraction(str(threshold))
        self._buckets = _buckets(limits, self._threshold)
        self._queues: tuple[OrderedDict[int, Ticket], ...] = tuple(OrderedDict() for _ in Priority)
        self._waiting = 0
        self._seq = 0
        self._held_until_ms = 0
        self._banned_until_ms = 0
        # Admitted by a submit on behalf of earlier tickets; the next poll reports them.
        self._unreported: list[Ticket] = []
        # The last scan's next_wakeup; valid while nothing changed and now is before it.
        self._wake_ms: int | None = None
        self._dirty = True
        self._admitted_total = 0
        self._waited_total = 0
        self._longest_wait_ms = 0

    # -- requests ---------------------------------------------------------------------------

    def submit(self, cost: Cost, priority: Priority, now_ms: int) -> Ticket:
        """Ask to send one request costing ``cost``.

        The ticket is admitted at once when the rules allow it, else queued for :meth:`poll`.
        A slow-path submit may also admit earlier waiting tickets that became admissible by
        ``now_ms``; the next :meth:`poll` reports those.

        Returns:
            The ticket; ``ticket.admitted`` tells whether the request may go now.

        Raises:
            IpBannedError: a 418 ban is in force (``until_ms`` is its end).
            ValueError: ``cost`` exceeds a bucket's whole budget, so it could never be admitted.
        """
        if now_ms < self._banned_until_ms:
            raise self._ban_error(now_ms)
        self._roll(now_ms)
        self._seq += 1
        ticket = Ticket(seq=self._seq, cost=cost, priority=priority, submitted_ms=now_ms)
        amounts = (cost.weight, cost.orders, cost.raw)
        buckets = self._buckets
        if not self._waiting and now_ms >= self._held_until_ms:
            for bucket in buckets:
                amount = amounts[bucket.kind]
                if amount and bucket.used + amount > bucket.budget:
                    break
            else:
                for bucket in buckets:
                    bucket.used += amounts[bucket.kind]
                ticket.state = TicketState.ADMITTED
                ticket.admitted_ms = now_ms
                self._admitted_total += 1
                return ticket
        problem = self._impossible(cost)
        if problem is not None:
            self._seq -= 1
            raise ValueError(problem)
        self._queues[priority][ticket.seq] = ticket
        self._waiting += 1
        self._dirty = True
        self._unreported += self._scan(now_ms)
        if ticket.admitted:  # passed the queue at once: it did not wait
            self._unreported.remove(ticket)
            self._waited_total -= 1
        return ticket

    def poll(self, now_ms: int) -> list[Ticket]:
        """Admit every waiting ticket the rules allow at ``now_ms``, in (priority, seq) order.

        Returns:
            The tickets admitted since the previous poll (including those a :meth:`submit`
            admitted for earlier tickets), in admission order.
        """
        admitted = self._unreported
        self._unreported = []
        if not self._waiting:
            return admitted
        self._roll(now_ms)
        if not self._dirty and self._wake_ms is not None and now_ms < self._wake_ms:
            return admitted
        admitted += self._scan(now_ms)
        return admitted

    def cancel(self, ticket: Ticket, now_ms: int) -> None:
        """Withdraw a waiting ticket (its caller gave up); a no-op unless it is waiting.

        An admitted ticket's usage is not given back: the request may have been sent.
        Call :meth:`poll` afterwards, as tickets behind it may now go. (``now_ms`` keeps the
        signature uniform; withdrawing does not depend on time.)
        """
        if self._queues[ticket.priority].pop(ticket.seq, None) is not None:
            ticket.state = TicketState.CANCELLED
            self._waiting -= 1
            self._dirty = True

    def next_wakeup_ms(self, now_ms: int) -> int | None:
        """The earliest server time at which a waiting ticket could become admissible.

        That is the hold's end while held, else the next roll of a window that some waiting
        ticket is blocked on (a lower bound: at that time the ticket may still be blocked by a
        longer window), or ``now_ms`` when one is admissible already.

        Returns:
            Server epoch ms, or ``None`` when nothing waits.
        """
        if not self._waiting:
            return None
        self._roll(now_ms)
        if self._dirty or self._wake_ms is None or now_ms >= self._wake_ms:
            self._scan(now_ms, admit=False)
        return self._wake_ms if self._wake_ms is not None else now_ms

    # -- what the exchange tells us ---------------------------------------------------------

    def sync_usage(self, limit_type: RateLimitType, window_ms: int, used: int, now_ms: int) -> None:
        """Take the server's usage of the current window (a ``X-MBX-USED-WEIGHT-1M``-style header).

        Usage becomes ``max(local, used)``: a header can only make the limiter more cautious. A
        header that straddles a window boundary is thus applied to the newer window, never to
        the detriment of safety. Buckets the limiter does not know are ignored.

        Raises:
            ValueError: ``used`` is negative.
        """
        if used < 0:
            raise ValueError(f"used must be >= 0, got {used}")
        self._roll(now_ms)
        for bucket in self._buckets:
            if bucket.rate_limit.type is limit_type and bucket.window_ms == window_ms:
                if used > bucket.used:
                    bucket.used = used
                    self._dirty = True
                return

    def hold(self, until_ms: int, now_ms: int) -> bool:
        """A 429: admit nothing before ``until_ms``; submits queue meanwhile.

        Returns:
            Whether this started or extended the hold (a shorter one changes nothing).
        """
        if until_ms <= max(now_ms, self._held_until_ms):
            return False
        self._held_until_ms = until_ms
        self._dirty = True
        return True

    def ban(self, until_ms: int, now_ms: int) -> list[Ticket]:
        """A 418: the IP is banned until ``until_ms``.

        Every queued ticket fails with its own :class:`~genesis.errors.IpBannedError` in
        ``ticket.error``, and :meth:`submit` raises one until the ban ends.

        Returns:
            The tickets failed.
        """
        if until_ms <= now_ms:
            return []
        self._banned_until_ms = max(self._banned_until_ms, until_ms)
        failed: list[Ticket] = []
        for queue in self._queues:
            for ticket in queue.values():
                ticket.state = TicketState.FAILED
                ticket.error = self._ban_error(now_ms)
                failed.append(ticket)
            queue.clear()
        self._waiting = 0
        self._dirty = True
        return failed

    def set_limits(self, limits: Sequence[RateLimit], now_ms: int) -> list[Ticket]:
        """Replace the limits with live ones from exchangeInfo.

        A bucket whose :attr:`~genesis.models.exchange_info.RateLimit.key` stays keeps the
        current window's usage; a new one starts empty. Waiting tickets whose cost no longer
        fits a budget fail with a ``ValueError``. Call :meth:`poll` afterwards: raised budgets
        may admit waiting tickets.

        Returns:
            The tickets failed.
        """
        self._roll(now_ms)
        old = {bucket.rate_limit.key: bucket for bucket in self._buckets}
        self._buckets = _buckets(limits, self._threshold)
        for bucket in self._buckets:
            kept = old.get(bucket.rate_limit.key)
            if kept is not None:
                bucket.used = kept.used
                bucket.window_start_ms = kept.window_start_ms
        self._roll(now_ms)
        failed: list[Ticket] = []
        for queue in self._queues:
            for ticket in list(queue.values()):
                problem = self._impossible(ticket.cost)
                if problem is not None:
                    del queue[ticket.seq]
                    ticket.state = TicketState.FAILED
                    ticket.error = ValueError(problem)
                    failed.append(ticket)
        self._waiting -= len(failed)
        self._dirty = True
        return failed

    def statistics(self, now_ms: int) -> RateLimiterStatistics:
        """A snapshot at ``now_ms`` (windows rolled to it)."""
        self._roll(now_ms)
        return RateLimiterStatistics(
            buckets=tuple(
                BucketStatistics(
                    type=bucket.rate_limit.type,
                    interval=bucket.rate_limit.header_suffix,
                    window_ms=bucket.window_ms,
                    limit=bucket.rate_limit.limit,
                    budget=bucket.budget,
                    used=bucket.used,
                    window_start_ms=bucket.window_start_ms,
                )
                for bucket in self._buckets
            ),
            queued=self._waiting,
            admitted_total=self._admitted_total,
            waited_total=self._waited_total,
            longest_wait_ms=self._longest_wait_ms,
            held_until_ms=self._held_until_ms if self._held_until_ms > now_ms else None,
            banned_until_ms=self._banned_until_ms if self._banned_until_ms > now_ms else None,
        )

    # -- internals --------------------------------------------------------------------------

    def _roll(self, now_ms: int) -> None:
        for bucket in self._buckets:
            start = now_ms - now_ms % bucket.window_ms
            if start > bucket.window_start_ms:
                bucket.window_start_ms = start
                bucket.used = 0

    def _impossible(self, cost: Cost) -> str | None:
        amounts = (cost.weight, cost.orders, cost.raw)
        for bucket in self._buckets:
            amount = amounts[bucket.kind]
            if amount > bucket.budget:
                field = _KIND_FIELD[bucket.kind]
                return (
                    f"cost {field}={amount} can never fit the {bucket.name} budget of "
                    f"{bucket.budget} (limit {bucket.rate_limit.limit} × threshold "
                    f"{self._threshold})"
                )
        return None

    def _ban_error(self, now_ms: int) -> IpBannedError:
        until_ms = self._banned_until_ms
        return IpBannedError(
            f"IP banned until {until_ms}",
            retry_after_s=(until_ms - now_ms) / 1000,
            until_ms=until_ms,
        )

    def _scan(self, now_ms: int, *, admit: bool = True) -> list[Ticket]:
        """Walk the queues in (priority, seq) order; admit what may go and find the next wakeup.

        ``blocked`` is a bit mask of the buckets that some earlier (higher-priority) waiting
        ticket is blocked on: it lacks room there, or it consumes a bucket an even earlier
        ticket is blocked on. A ticket may be admitted only if it heads its priority's queue
        (FIFO), fits every bucket it consumes and consumes nothing in ``blocked``. Usage
        decreases only when a window rolls, so until the earliest roll of a bucket in the final
        mask nothing that is stuck can become admissible: that is the next wakeup.

        With ``admit=False`` nothing changes; the walk stops at the first admissible ticket and
        the wakeup is ``now_ms``.
        """
        admitted: list[Ticket] = []
        if now_ms < self._held_until_ms:
            self._wake_ms = self._held_until_ms
            self._dirty = False
            return admitted
        buckets = self._buckets
        full = (1 << len(buckets)) - 1
        blocked = 0
        for queue in self._queues:
            if not queue:
                continue
            level_mask = 0
            n_admitted = 0
            head_open = True
            for ticket in queue.values():
                cost = ticket.cost
                amounts = (cost.weight, cost.orders, cost.raw)
                lacking = consumed = 0
                bit = 1
                for bucket in buckets:
                    amount = amounts[bucket.kind]
                    if amount:
                        consumed |= bit
                        if bucket.used + amount > bucket.budget:
                            lacking |= bit
                    bit <<= 1
                mask = lacking | (consumed & blocked)
                if head_open and not mask:
                    if not admit:
                        self._wake_ms = now_ms
                        return admitted
                    for bucket in buckets:
                        bucket.used += amounts[bucket.kind]
                    self._admit(ticket, now_ms)
                    admitted.append(ticket)
                    n_admitted += 1
                    continue
                head_open = False
                level_mask |= mask
                if blocked | level_mask == full:
                    break  # every bucket is blocked: the rest of this level adds nothing
            for _ in range(n_admitted):
                queue.popitem(last=False)
            self._waiting -= n_admitted
            blocked |= level_mask
        self._dirty = False
        if not self._waiting:
            self._wake_ms = None
            return admitted
        self._wake_ms = min(
            (
                bucket.window_start_ms + bucket.window_ms
                for i, bucket in enumerate(buckets)
                if blocked >> i & 1
            ),
            default=now_ms,
        )
        return admitted

    def _admit(self, ticket: Ticket, now_ms: int) -> None:
        ticket.state = TicketState.ADMITTED
        ticket.admitted_ms = now_ms
        self._admitted_total += 1
        self._waited_total += 1
        self._longest_wait_ms = max(self._longest_wait_ms, now_ms - ticket.submitted_ms)


class RateLimiter:
    """The Trio face of a :class:`RateLimiterCore`, shared by every task that calls Binance.

    Args:
        core: the core to drive; a default :class:`RateLimiterCore` when ``None``.
        server_time_ms: the current server time estimate in epoch ms (wall clock + offset; in
            tests a function of ``trio.current_time()``).
    """

    def __init__(
        self, core: RateLimiterCore | None = None, *, server_time_ms: Callable[[], int]
    ) -> None:
        self._core = core if core is not None else RateLimiterCore()
        self._server_time_ms = server_time_ms
        # One event per sleeping waiter; set when its ticket is admitted or failed.
        self._events: dict[Ticket, trio.Event] = {}

    async def acquire(self, cost: Cost, priority: Priority = Priority.NORMAL) -> None:
        """Wait until a request costing ``cost`` may be sent, then return.

        Always checkpoints. While queued it sleeps until the core's next wakeup (a window roll
        or a hold's end) or until another task admits its ticket; there is no background task.

        Cancellation: a cancelled waiter's ticket is withdrawn and the tickets behind it are
        re-polled, so nothing is left behind. Once admitted, cancellation cannot undo the
        admission (the budget stays spent), so the final checkpoint is shielded.

        Raises:
            IpBannedError: a 418 ban is in force, or arrives while waiting.
            ValueError: ``cost`` can never fit a budget (also when new limits make it so).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        now_ms = self._server_time_ms()
        try:
            ticket = self._core.submit(cost, priority, now_ms)
        except (IpBannedError, ValueError):
            await trio.lowlevel.cancel_shielded_checkpoint()
            raise
        if ticket.admitted:  # the fast path admits only when nothing waits: nobody to wake
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        logger.debug(
            "ratelimit.queued seq=%d priority=%s weight=%d orders=%d",
            ticket.seq,
            priority.name,
            cost.weight,
            cost.orders,
        )
        self._dispatch(self._core.poll(now_ms))
        try:
            while ticket.waiting:
                wake_ms = self._core.next_wakeup_ms(now_ms)
                timeout_s = math.inf if wake_ms is None else max(0, wake_ms - now_ms) / 1000
                event = trio.Event()
                self._events[ticket] = event
                with trio.move_on_after(timeout_s):
                    await event.wait()
                now_ms = self._server_time_ms()
                self._dispatch(self._core.poll(now_ms))
        finally:
            self._events.pop(ticket, None)
            if ticket.waiting:
                now_ms = self._server_time_ms()
                self._core.cancel(ticket, now_ms)
                self._dispatch(self._core.poll(now_ms))
        if ticket.error is not None:  # failed by a ban or by new limits
            raise ticket.error

    def sync_usage(self, limit_type: RateLimitType, window_ms: int, used: int) -> None:
        """Pass a server usage header to :meth:`RateLimiterCore.sync_usage` at the current time."""
        self._core.sync_usage(limit_type, window_ms, used, self._server_time_ms())

    def hold_for(self, retry_after_s: float) -> None:
        """A 429 with ``Retry-After: retry_after_s``: admit nothing for that long."""
        now_ms = self._server_time_ms()
        until_ms = now_ms + math.ceil(retry_after_s * 1000)
        if self._core.hold(until_ms, now_ms):
            logger.warning("ratelimit.hold until_ms=%d retry_after_s=%g", until_ms, retry_after_s)

    def ban_until(self, until_ms: int) -> None:
        """A 418: fail every waiter and refuse every request until ``until_ms`` (server time)."""
        now_ms = self._server_time_ms()
        failed = self._core.ban(until_ms, now_ms)
        if until_ms > now_ms:
            logger.warning("ratelimit.ban until_ms=%d failed=%d", until_ms, len(failed))
        self._dispatch(failed)

    def set_limits(self, limits: Sequence[RateLimit]) -> None:
        """Adopt live limits (exchangeInfo); waiters re-check at once."""
        now_ms = self._server_time_ms()
        failed = self._core.set_limits(limits, now_ms)
        logger.info(
            "ratelimit.limits %s",
            " ".join(f"{x.type.value}/{x.header_suffix}={x.limit}" for x in limits),
        )
        self._dispatch(failed)
        self._dispatch(self._core.poll(now_ms))
        # New windows or budgets may move every waiter's wakeup earlier.
        self._dispatch(list(self._events))

    def statistics(self) -> RateLimiterStatistics:
        """The core's statistics at the current server time."""
        return self._core.statistics(self._server_time_ms())

    def _dispatch(self, tickets: Iterable[Ticket]) -> None:
        for ticket in tickets:
            event = self._events.pop(ticket, None)
            if event is not None:
                event.set()
