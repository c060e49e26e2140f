"""Binance's REST rate limits for the simulator: a pure, fixed-window core that takes ``now_ms``.

Rules (``shared/binance/FACTS.md`` §4):

- ``REQUEST_WEIGHT`` 6000 per 1 MINUTE and ``RAW_REQUESTS`` 300,000 per 5 MINUTE, per IP;
  ``ORDERS`` 50 per 10 SECOND and 160,000 per 1 DAY, per account, counting **unfilled** orders:
  an order's first fill takes it back out of every ORDERS window (faqs/order_count_decrement.md);
  when the 1-DAY count is exhausted, the 10-SECOND count is not incremented either.
- Windows are fixed and calendar-aligned: a window of ``w`` ms starts at ``now - now % w`` (epoch
  ms, so a 1-DAY window starts at 00:00 UTC and a 10-SECOND one at :00, :10, ...).
- Over a limit: HTTP 429 with ``Retry-After`` (seconds until the exhausted window resets) and
  ``-1003`` (weight) or ``-1015`` (orders). Requests answered 429 still count (their raw request
  and their weight), like Binance's ``X-MBX-USED-WEIGHT-1M`` that keeps climbing.
- An IP that keeps sending after a 429 is banned: once it has received ``tolerated_429s`` 429s in
  the same exhausted window, the next over-limit request starts a ban answered 418 with
  ``Retry-After`` (seconds until the ban ends) and "Way too much request weight used; IP banned
  until <epoch ms>." Bans grow for repeat offenders: 2 minutes, doubling each time, up to 3 days.
  Requests during a ban are answered 418 and not counted. (Binance does not document how many
  429s it tolerates; ``tolerated_429s`` is the simulator's knob.)
- Limits can be lowered (or raised) at runtime (fault injection); ``exchangeInfo`` shows the
  current values via :meth:`RateLimiter.rate_limits_wire`.

Successful order placements and cancels cost 0 weight (CHANGELOG 2026-03-27): the REST layer
admits them with their documented weight and :meth:`RateLimiter.refund_weight` gives it back
when they succeed.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Final, Literal

import attrs

from genesis.sim.errors import (
    MSG_IP_BANNED,
    MSG_TOO_MANY_ORDERS,
    MSG_TOO_MANY_REQUESTS_QUEUED,
    MSG_TOO_MUCH_WEIGHT,
    TOO_MANY_ORDERS,
    TOO_MANY_REQUESTS,
    SimReject,
    fmt,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "DEFAULT_BAN_POLICY",
    "DEFAULT_RATE_LIMITS",
    "INTERVAL_MS",
    "BanPolicy",
    "LimiterStatistics",
    "RateLimit",
    "RateLimiter",
    "UsageSnapshot",
    "window_start_ms",
]

logger = logging.getLogger(__name__)

LimitKind = Literal["REQUEST_WEIGHT", "RAW_REQUESTS", "ORDERS"]
Interval = Literal["SECOND", "MINUTE", "HOUR", "DAY"]

INTERVAL_MS: Final[dict[str, int]] = {
    "SECOND": 1000,
    "MINUTE": 60_000,
    "HOUR": 3_600_000,
    "DAY": 86_400_000,
}


def window_start_ms(now_ms: int, window_ms: int) -> int:
    """Start of the calendar-aligned fixed window of ``window_ms`` containing ``now_ms``."""
    return now_ms - now_ms % window_ms


@attrs.frozen(kw_only=True)
class RateLimit:
    """One limit as exchangeInfo lists it: kind, interval, intervalNum, limit."""

    kind: LimitKind
    interval: Interval
    interval_num: int = attrs.field(validator=attrs.validators.gt(0))
    limit: int = attrs.field(validator=attrs.validators.ge(0))

    @property
    def window_ms(self) -> int:
        """Length of one window."""
        return INTERVAL_MS[self.interval] * self.interval_num

    @property
    def key(self) -> tuple[str, str, int]:
        """Identity of the window (kind, interval, intervalNum); ``limit`` may change."""
        return (self.kind, self.interval, self.interval_num)

    @property
    def header_suffix(self) -> str:
        """``1M``, ``10S``, ``1D``: suffix of the used-weight and order-count headers."""
        return f"{self.interval_num}{self.interval[0]}"

    @property
    def per_text(self) -> str:
        """``1 MINUTE``, ``10 SECOND``: how Binance's messages spell the window."""
        return f"{self.interval_num} {self.interval}"

    def to_wire(self) -> dict[str, str | int]:
        """The exchangeInfo ``rateLimits`` entry."""
        return {
            "rateLimitType": self.kind,
            "interval": self.interval,
            "intervalNum": self.interval_num,
            "limit": self.limit,
        }


DEFAULT_RATE_LIMITS: Final = (
    RateLimit(kind="REQUEST_WEIGHT", interval="MINUTE", interval_num=1, limit=6000),
    RateLimit(kind="ORDERS", interval="SECOND", interval_num=10, limit=50),
    RateLimit(kind="ORDERS", interval="DAY", interval_num=1, limit=160_000),
    RateLimit(kind="RAW_REQUESTS", interval="MINUTE", interval_num=5, limit=300_000),
)
"""Binance's current documented values, in exchangeInfo's order."""


@attrs.frozen(kw_only=True)
class BanPolicy:
    """When and for how long an IP that ignores 429s is banned."""

    tolerated_429s: int = attrs.field(default=3, validator=attrs.validators.ge(0))
    first_ban_ms: int = 120_000
    max_ban_ms: int = 3 * 86_400_000

    def ban_ms(self, previous_bans: int) -> int:
        """Length of the ban after ``previous_bans`` earlier ones: 2 min doubling, capped."""
        if previous_bans >= 32:
            return self.max_ban_ms
        return min(self.first_ban_ms << previous_bans, self.max_ban_ms)


DEFAULT_BAN_POLICY: Final = BanPolicy()


@attrs.define
class _Counter:
    start_ms: int = -1
    count: int = 0

    def current(self, now_ms: int, window_ms: int) -> int:
        self.roll(now_ms, window_ms)
        return self.count

    def roll(self, now_ms: int, window_ms: int) -> None:
        start = window_start_ms(now_ms, window_ms)
        if start != self.start_ms:
            self.start_ms = start
            self.count = 0


@attrs.define
class _IpState:
    counters: dict[tuple[str, str, int], _Counter] = attrs.field(factory=dict)
    rejected_window_start_ms: int = -1
    rejected_in_window: int = 0
    banned_until_ms: int = 0
    bans: int = 0


@attrs.define
class _AccountState:
    counters: dict[tuple[str, str, int], _Counter] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class UsageSnapshot:
    """Counters after a request, for the response headers (suffix → count)."""

    used_weight: dict[str, int] = attrs.field(factory=dict)
    order_count: dict[str, int] = attrs.field(factory=dict)

    def headers(self) -> list[tuple[str, str]]:
        """``X-MBX-USED-WEIGHT-1M`` (+ legacy ``X-MBX-USED-WEIGHT``) and ``X-MBX-ORDER-COUNT-*``."""
        out: list[tuple[str, str]] = []
        first = True
        for suffix, used in self.used_weight.items():
            if first:
                out.append(("X-MBX-USED-WEIGHT", str(used)))
                first = False
            out.append((f"X-MBX-USED-WEIGHT-{suffix}", str(used)))
        out.extend(
            (f"X-MBX-ORDER-COUNT-{suffix}", str(count))
            for suffix, count in self.order_count.items()
        )
        return out


@attrs.frozen(kw_only=True)
class LimiterStatistics:
    """Totals since the limiter was created."""

    admitted: int
    rejected_429: int
    rejected_418: int
    orders_rejected: int
    bans: int


def _limit_list(limits: Iterable[RateLimit]) -> list[RateLimit]:
    return list(limits)


def _retry_after_s(now_ms: int, until_ms: int) -> int:
    return max(1, math.ceil((until_ms - now_ms) / 1000))


@attrs.define
class RateLimiter:
    """Fixed-window limits per IP (weight, raw requests) and per account (unfilled orders).

    Pure and synchronous: every method takes ``now_ms`` (epoch ms). Not thread-safe; the
    simulator calls it from one Trio thread.
    """

    _limits: list[RateLimit] = attrs.field(
        factory=lambda: list(DEFAULT_RATE_LIMITS), converter=_limit_list, alias="limits"
    )
    ban_policy: BanPolicy = DEFAULT_BAN_POLICY
    _ips: dict[str, _IpState] = attrs.field(factory=dict, init=False)
    _accounts: dict[str, _AccountState] = attrs.field(factory=dict, init=False)
    _admitted: int = attrs.field(default=0, init=False)
    _rejected_429: int = attrs.field(default=0, init=False)
    _rejected_418: int = attrs.field(default=0, init=False)
    _orders_rejected: int = attrs.field(default=0, init=False)
    _bans: int = attrs.field(default=0, init=False)

    # --- configuration ------------------------------------------------------------------

    @property
    def limits(self) -> tuple[RateLimit, ...]:
        """The limits in force, in exchangeInfo order."""
        return tuple(self._limits)

    def set_limit(self, kind: LimitKind, interval: Interval, interval_num: int, limit: int) -> None:
        """Change (lower or raise) one limit at runtime; adds it when it did not exist.

        Counters already collected in the current window stay; the new value applies from the
        next request on.
        """
        new = RateLimit(kind=kind, interval=interval, interval_num=interval_num, limit=limit)
        for i, old in enumerate(self._limits):
            if old.key == new.key:
                self._limits[i] = new
                break
        else:
            self._limits.append(new)
        logger.info("sim.ratelimit.limit_set kind=%s per=%s limit=%d", kind, new.per_text, limit)

    def reset_limits(self, limits: Iterable[RateLimit] = DEFAULT_RATE_LIMITS) -> None:
        """Replace every limit (default: Binance's documented values)."""
        self._limits = list(limits)

    def rate_limits_wire(self) -> list[dict[str, str | int]]:
        """exchangeInfo's ``rateLimits`` array with the current values."""
        return [limit.to_wire() for limit in self._limits]

    def _of_kind(self, *kinds: str) -> list[RateLimit]:
        return [limit for limit in self._limits if limit.kind in kinds]

    # --- IP limits ----------------------------------------------------------------------

    def _ip(self, ip: str) -> _IpState:
        state = self._ips.get(ip)
        if state is None:
            state = self._ips[ip] = _IpState()
        return state

    def banned_until_ms(self, ip: str, now_ms: int) -> int | None:
        """When the ban on ``ip`` ends, or ``None`` when it is not banned at ``now_ms``."""
        state = self._ips.get(ip)
        if state is None or state.banned_until_ms <= now_ms:
            return None
        return state.banned_until_ms

    def admit_request(self, ip: str, weight: int, now_ms: int) -> UsageSnapshot:
        """Count one request of ``weight`` from ``ip`` and decide whether it may proceed.

        Returns:
            The usage after counting it (for the response headers).

        Raises:
            SimReject: 418 while ``ip`` is banned (and when this request starts a ban), 429 with
                -1003 when REQUEST_WEIGHT or RAW_REQUESTS is exhausted. Both carry
                ``Retry-After``.
        """
        state = self._ip(ip)
        if state.banned_until_ms > now_ms:
            self._rejected_418 += 1
            raise self._ban_error(state.banned_until_ms, now_ms)
        over: RateLimit | None = None
        over_reset_ms = 0
        for limit in self._of_kind("REQUEST_WEIGHT", "RAW_REQUESTS"):
            counter = state.counters.setdefault(limit.key, _Counter())
            counter.roll(now_ms, limit.window_ms)
            counter.count += weight if limit.kind == "REQUEST_WEIGHT" else 1
            if counter.count > limit.limit:
                reset_ms = counter.start_ms + limit.window_ms
                if over is None or reset_ms > over_reset_ms:
                    over, over_reset_ms = limit, reset_ms
        snapshot = self._snapshot(state, None, now_ms)
        if over is None:
            self._admitted += 1
            return snapshot
        window_start = over_reset_ms - over.window_ms
        if state.rejected_window_start_ms != window_start:
            state.rejected_window_start_ms = window_start
            state.rejected_in_window = 0
        if state.rejected_in_window >= self.ban_policy.tolerated_429s:
            ban_ms = self.ban_policy.ban_ms(state.bans)
            state.bans += 1
            self._bans += 1
            state.banned_until_ms = now_ms + ban_ms
            state.rejected_in_window = 0
            self._rejected_418 += 1
            logger.info(
                "sim.ratelimit.ip_banned ip=%s until_ms=%d ban_ms=%d bans=%d",
                ip,
                state.banned_until_ms,
                ban_ms,
                state.bans,
            )
            raise self._ban_error(state.banned_until_ms, now_ms)
        state.rejected_in_window += 1
        self._rejected_429 += 1
        if over.kind == "REQUEST_WEIGHT":
            msg = fmt(MSG_TOO_MUCH_WEIGHT, over.limit, over.per_text)
        else:
            msg = MSG_TOO_MANY_REQUESTS_QUEUED
        retry_after = _retry_after_s(now_ms, over_reset_ms)
        logger.info(
            "sim.ratelimit.429 ip=%s kind=%s limit=%d retry_after_s=%d",
            ip,
            over.kind,
            over.limit,
            retry_after,
        )
        raise SimReject(
            TOO_MANY_REQUESTS,
            msg,
            status=429,
            headers=(("Retry-After", str(retry_after)), *snapshot.headers()),
        )

    @staticmethod
    def _ban_error(until_ms: int, now_ms: int) -> SimReject:
        return SimReject(
            TOO_MANY_REQUESTS,
            fmt(MSG_IP_BANNED, until_ms),
            status=418,
            headers=(("Retry-After", str(_retry_after_s(now_ms, until_ms))),),
        )

    def refund_weight(self, ip: str, weight: int, now_ms: int) -> UsageSnapshot:
        """Give back ``weight`` charged at admission (a successful order/cancel costs 0).

        Only the current window is credited; a refund after the window rolled over is a no-op.
        """
        state = self._ip(ip)
        for limit in self._of_kind("REQUEST_WEIGHT"):
            counter = state.counters.setdefault(limit.key, _Counter())
            if counter.start_ms == window_start_ms(now_ms, limit.window_ms):
                counter.count = max(0, counter.count - weight)
        return self._snapshot(state, None, now_ms)

    def usage(self, ip: str, account: str | None, now_ms: int) -> UsageSnapshot:
        """Current counters for ``ip`` (and ``account``'s ORDERS counts when given)."""
        return self._snapshot(self._ip(ip), account, now_ms)

    def _snapshot(self, state: _IpState, account: str | None, now_ms: int) -> UsageSnapshot:
        used = {
            limit.header_suffix: state.counters.setdefault(limit.key, _Counter()).current(
                now_ms, limit.window_ms
            )
            for limit in self._of_kind("REQUEST_WEIGHT")
        }
        orders: dict[str, int] = {}
        if account is not None:
            acc = self._account(account)
            orders = {
                limit.header_suffix: acc.counters.setdefault(limit.key, _Counter()).current(
                    now_ms, limit.window_ms
                )
                for limit in self._of_kind("ORDERS")
            }
        return UsageSnapshot(used_weight=used, order_count=orders)

    # --- account (ORDERS) limits --------------------------------------------------------

    def _account(self, account: str) -> _AccountState:
        state = self._accounts.get(account)
        if state is None:
            state = self._accounts[account] = _AccountState()
        return state

    def order_counts(self, account: str, now_ms: int) -> list[tuple[RateLimit, int]]:
        """Each ORDERS limit with ``account``'s current unfilled order count."""
        acc = self._account(account)
        return [
            (limit, acc.counters.setdefault(limit.key, _Counter()).current(now_ms, limit.window_ms))
            for limit in self._of_kind("ORDERS")
        ]

    def admit_order(self, account: str, now_ms: int) -> None:
        """Count one new order for ``account`` in every ORDERS window, or refuse it.

        A refused order is counted nowhere. When only a shorter window is full the order is
        refused too; when the longest (1-DAY) window is full, the shorter ones are left as they
        are (CHANGELOG 2025-04-07).

        Raises:
            SimReject: 429 with -1015 and ``Retry-After`` for the exhausted window.
        """
        acc = self._account(account)
        limits = sorted(self._of_kind("ORDERS"), key=lambda limit: limit.window_ms, reverse=True)
        for limit in limits:
            counter = acc.counters.setdefault(limit.key, _Counter())
            if counter.current(now_ms, limit.window_ms) + 1 > limit.limit:
                self._orders_rejected += 1
                retry_after = _retry_after_s(now_ms, counter.start_ms + limit.window_ms)
                logger.info(
                    "sim.ratelimit.orders_429 account=%s per=%s limit=%d retry_after_s=%d",
                    account[:8],
                    limit.per_text,
                    limit.limit,
                    retry_after,
                )
                raise SimReject(
                    TOO_MANY_ORDERS,
                    fmt(MSG_TOO_MANY_ORDERS, limit.limit, limit.per_text),
                    status=429,
                    headers=(("Retry-After", str(retry_after)),),
                )
        for limit in limits:
            acc.counters[limit.key].count += 1

    def order_filled(self, account: str, now_ms: int) -> None:
        """An order of ``account`` got its first fill: its count leaves every ORDERS window.

        Applied to the current windows and never below zero (an order placed in an earlier
        window that fills now only lowers the current window's count).
        """
        acc = self._account(account)
        for limit in self._of_kind("ORDERS"):
            counter = acc.counters.setdefault(limit.key, _Counter())
            counter.roll(now_ms, limit.window_ms)
            counter.count = max(0, counter.count - 1)

    def uncount_order(self, account: str, now_ms: int) -> None:
        """An order admitted by :meth:`admit_order` was rejected before reaching the engine.

        Binance counts only orders that reach the matching engine (engine rejections included),
        so an API-level rejection takes the order back out of every ORDERS window.
        """
        self.order_filled(account, now_ms)

    def order_count_snapshot(self, account: str, now_ms: int) -> dict[str, int]:
        """``{"10S": n, "1D": m}`` for the ``X-MBX-ORDER-COUNT-*`` headers."""
        return {limit.header_suffix: count for limit, count in self.order_counts(account, now_ms)}

    # --- introspection ------------------------------------------------------------------

    def statistics(self) -> LimiterStatistics:
        """Totals since creation."""
        return LimiterStatistics(
            admitted=self._admitted,
            rejected_429=self._rejected_429,
            rejected_418=self._rejected_418,
            orders_rejected=self._orders_rejected,
            bans=self._bans,
        )

    def forget_idle(self, now_ms: int, keep: Sequence[str] = ()) -> int:
        """Drop state of IPs that are not banned and whose windows have all ended.

        Returns:
            How many IPs were forgotten (bounded memory for long soaks).
        """
        stale = [
            ip
            for ip, state in self._ips.items()
            if ip not in keep
            and state.banned_until_ms <= now_ms
            and state.bans == 0
            and all(
                counter.start_ms + limit.window_ms <= now_ms
                for limit in self._of_kind("REQUEST_WEIGHT", "RAW_REQUESTS")
                if (counter := state.counters.get(limit.key)) is not None
            )
        ]
        for ip in stale:
            del self._ips[ip]
        return len(stale)
