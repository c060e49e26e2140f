"""The simulator's fixed-window rate limiter, driven with plain epoch-ms numbers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from genesis.sim.errors import SimReject
from genesis.sim.ratelimit import (
    DEFAULT_RATE_LIMITS,
    BanPolicy,
    RateLimit,
    RateLimiter,
    window_start_ms,
)

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z: a minute, 10 s and day boundary
IP = "10.0.0.1"
ACCOUNT = "acct1"


def small_limiter(
    weight: int = 10, raw: int = 1000, orders_10s: int = 3, orders_day: int = 5
) -> RateLimiter:
    return RateLimiter(
        limits=[
            RateLimit(kind="REQUEST_WEIGHT", interval="MINUTE", interval_num=1, limit=weight),
            RateLimit(kind="ORDERS", interval="SECOND", interval_num=10, limit=orders_10s),
            RateLimit(kind="ORDERS", interval="DAY", interval_num=1, limit=orders_day),
            RateLimit(kind="RAW_REQUESTS", interval="MINUTE", interval_num=5, limit=raw),
        ]
    )


def header(error: SimReject, name: str) -> str:
    return dict(error.headers)[name]


def test_windows_are_calendar_aligned() -> None:
    assert window_start_ms(T0 + 59_999, 60_000) == T0
    assert window_start_ms(T0 + 60_000, 60_000) == T0 + 60_000
    assert window_start_ms(T0 + 12_345, 10_000) == T0 + 10_000
    assert window_start_ms(T0 + 86_399_999, 86_400_000) == T0


def test_default_limits_are_binances_current_values() -> None:
    limiter = RateLimiter()
    assert limiter.rate_limits_wire() == [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 50},
        {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 160000},
        {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 300000},
    ]
    assert limiter.limits == DEFAULT_RATE_LIMITS


def test_weight_is_counted_and_reported_in_headers() -> None:
    limiter = RateLimiter()
    limiter.admit_request(IP, 20, T0)
    usage = limiter.admit_request(IP, 5, T0 + 1)
    assert usage.headers() == [("X-MBX-USED-WEIGHT", "25"), ("X-MBX-USED-WEIGHT-1M", "25")]
    assert limiter.usage("other", None, T0).used_weight == {"1M": 0}


def test_weight_limit_429_until_the_minute_boundary() -> None:
    limiter = small_limiter(weight=10)
    limiter.admit_request(IP, 10, T0 + 30_000)
    with pytest.raises(SimReject) as info:
        limiter.admit_request(IP, 1, T0 + 30_500)
    error = info.value
    assert (error.status, error.code) == (429, -1003)
    assert error.msg == (
        "Too much request weight used; current limit is 10 request weight per 1 MINUTE. "
        "Please use WebSocket Streams for live updates to avoid polling the API."
    )
    assert header(error, "Retry-After") == "30"  # 29.5 s to T0+60s, rounded up
    assert header(error, "X-MBX-USED-WEIGHT-1M") == "11"
    with pytest.raises(SimReject):
        limiter.admit_request(IP, 1, T0 + 59_999)
    usage = limiter.admit_request(IP, 1, T0 + 60_000)
    assert usage.used_weight == {"1M": 1}


def test_limits_are_per_ip() -> None:
    limiter = small_limiter(weight=10)
    limiter.admit_request(IP, 10, T0)
    limiter.admit_request("10.0.0.2", 10, T0)
    with pytest.raises(SimReject):
        limiter.admit_request(IP, 1, T0)


def test_raw_requests_limit_uses_its_5_minute_window() -> None:
    limiter = small_limiter(weight=1000, raw=2)
    limiter.admit_request(IP, 1, T0 + 100_000)
    limiter.admit_request(IP, 1, T0 + 200_000)
    with pytest.raises(SimReject) as info:
        limiter.admit_request(IP, 1, T0 + 299_000)
    assert (info.value.status, info.value.code, info.value.msg) == (
        429,
        -1003,
        "Too many requests queued.",
    )
    assert header(info.value, "Retry-After") == "1"
    limiter.admit_request(IP, 1, T0 + 300_000)


def test_continuing_after_429_escalates_to_418_bans_that_double() -> None:
    limiter = small_limiter(weight=1)
    limiter.admit_request(IP, 1, T0)
    for _ in range(3):  # tolerated_429s
        with pytest.raises(SimReject) as info:
            limiter.admit_request(IP, 1, T0 + 1000)
        assert info.value.status == 429
    with pytest.raises(SimReject) as info:
        limiter.admit_request(IP, 1, T0 + 2000)
    ban = info.value
    until = T0 + 2000 + 120_000
    assert (ban.status, ban.code) == (418, -1003)
    assert ban.msg == (
        f"Way too much request weight used; IP banned until {until}. "
        "Please use WebSocket Streams for live updates to avoid bans."
    )
    assert header(ban, "Retry-After") == "120"
    # During the ban: 418 with the remaining time, nothing counted.
    with pytest.raises(SimReject) as info:
        limiter.admit_request(IP, 1, until - 1500)
    assert (info.value.status, header(info.value, "Retry-After")) == (418, "2")
    assert limiter.banned_until_ms(IP, until - 1) == until
    assert limiter.banned_until_ms(IP, until) is None
    # Ban over (in a new minute): served again.
    assert limiter.admit_request(IP, 1, until).used_weight == {"1M": 1}
    # Offend again: the second ban lasts twice as long.
    for _ in range(3):
        with pytest.raises(SimReject):
            limiter.admit_request(IP, 1, until + 1)
    with pytest.raises(SimReject) as info:
        limiter.admit_request(IP, 1, until + 2)
    assert header(info.value, "Retry-After") == "240"
    stats = limiter.statistics()
    assert (stats.bans, stats.rejected_429, stats.rejected_418) == (2, 6, 3)


def test_ban_length_is_capped_at_three_days() -> None:
    policy = BanPolicy()
    assert [policy.ban_ms(n) // 60_000 for n in range(4)] == [2, 4, 8, 16]
    assert policy.ban_ms(11) == 4096 * 60_000
    assert policy.ban_ms(12) == 3 * 86_400_000
    assert policy.ban_ms(40) == 3 * 86_400_000


def test_lowered_limit_applies_at_once_and_shows_in_exchange_info() -> None:
    limiter = RateLimiter()
    limiter.admit_request(IP, 50, T0)
    limiter.set_limit("REQUEST_WEIGHT", "MINUTE", 1, 60)
    assert limiter.rate_limits_wire()[0]["limit"] == 60
    limiter.admit_request(IP, 10, T0)
    with pytest.raises(SimReject) as info:
        limiter.admit_request(IP, 1, T0)
    assert "current limit is 60 request weight per 1 MINUTE" in info.value.msg
    limiter.reset_limits()
    assert limiter.limits == DEFAULT_RATE_LIMITS


def test_set_limit_can_add_a_new_window() -> None:
    limiter = RateLimiter()
    limiter.set_limit("REQUEST_WEIGHT", "SECOND", 1, 5)
    limiter.admit_request(IP, 5, T0)
    with pytest.raises(SimReject) as info:
        limiter.admit_request(IP, 1, T0 + 999)
    assert header(info.value, "Retry-After") == "1"
    limiter.admit_request(IP, 1, T0 + 1000)


def test_refund_gives_weight_back_in_the_same_window_only() -> None:
    limiter = RateLimiter()
    limiter.admit_request(IP, 4, T0)
    assert limiter.refund_weight(IP, 1, T0 + 10).used_weight == {"1M": 3}
    limiter.admit_request(IP, 1, T0 + 60_000)
    assert limiter.refund_weight(IP, 5, T0 + 60_001).used_weight == {"1M": 0}


# --- ORDERS ---------------------------------------------------------------------------------


def test_orders_10s_window_429_with_1015_then_resets() -> None:
    limiter = small_limiter(orders_10s=3, orders_day=100)
    for i in range(3):
        limiter.admit_order(ACCOUNT, T0 + 2000 + i)
    with pytest.raises(SimReject) as info:
        limiter.admit_order(ACCOUNT, T0 + 7500)
    error = info.value
    assert (error.status, error.code) == (429, -1015)
    assert error.msg == "Too many new orders; current limit is 3 orders per 10 SECOND."
    assert header(error, "Retry-After") == "3"
    assert limiter.order_count_snapshot(ACCOUNT, T0 + 9999) == {"10S": 3, "1D": 3}
    limiter.admit_order(ACCOUNT, T0 + 10_000)
    assert limiter.order_count_snapshot(ACCOUNT, T0 + 10_000) == {"10S": 1, "1D": 4}
    assert limiter.statistics().orders_rejected == 1


def test_day_limit_full_leaves_the_10s_count_alone() -> None:
    limiter = small_limiter(orders_10s=10, orders_day=2)
    limiter.admit_order(ACCOUNT, T0)
    limiter.admit_order(ACCOUNT, T0 + 1)
    with pytest.raises(SimReject) as info:
        limiter.admit_order(ACCOUNT, T0 + 20_000)
    assert info.value.msg == "Too many new orders; current limit is 2 orders per 1 DAY."
    assert header(info.value, "Retry-After") == str((86_400_000 - 20_000) // 1000)
    assert limiter.order_count_snapshot(ACCOUNT, T0 + 20_000) == {"10S": 0, "1D": 2}
    limiter.admit_order(ACCOUNT, T0 + 86_400_000)


def test_first_fill_decrements_every_orders_window() -> None:
    limiter = small_limiter(orders_10s=2, orders_day=10)
    limiter.admit_order(ACCOUNT, T0)
    limiter.admit_order(ACCOUNT, T0 + 1)
    with pytest.raises(SimReject):
        limiter.admit_order(ACCOUNT, T0 + 2)
    limiter.order_filled(ACCOUNT, T0 + 3)
    assert limiter.order_count_snapshot(ACCOUNT, T0 + 3) == {"10S": 1, "1D": 1}
    limiter.admit_order(ACCOUNT, T0 + 4)
    assert [count for _, count in limiter.order_counts(ACCOUNT, T0 + 4)] == [2, 2]


def test_uncounted_order_leaves_every_window() -> None:
    limiter = small_limiter(orders_10s=1)
    limiter.admit_order(ACCOUNT, T0)
    limiter.uncount_order(ACCOUNT, T0)
    limiter.admit_order(ACCOUNT, T0 + 1)
    assert limiter.order_count_snapshot(ACCOUNT, T0 + 1) == {"10S": 1, "1D": 1}


def test_fill_in_a_later_window_never_goes_negative() -> None:
    limiter = small_limiter()
    limiter.admit_order(ACCOUNT, T0)
    limiter.order_filled(ACCOUNT, T0 + 10_000)
    assert limiter.order_count_snapshot(ACCOUNT, T0 + 10_000) == {"10S": 0, "1D": 0}
    limiter.order_filled(ACCOUNT, T0 + 10_001)
    assert limiter.order_count_snapshot(ACCOUNT, T0 + 10_001) == {"10S": 0, "1D": 0}


def test_orders_are_per_account() -> None:
    limiter = small_limiter(orders_10s=1)
    limiter.admit_order(ACCOUNT, T0)
    limiter.admit_order("acct2", T0)
    assert limiter.usage(IP, "acct2", T0).headers()[-2:] == [
        ("X-MBX-ORDER-COUNT-10S", "1"),
        ("X-MBX-ORDER-COUNT-1D", "1"),
    ]


def test_forget_idle_drops_finished_ips_only() -> None:
    limiter = RateLimiter()
    limiter.admit_request("a", 1, T0)
    limiter.admit_request("b", 1, T0 + 310_000)
    assert limiter.forget_idle(T0 + 320_000) == 1
    assert limiter.usage("b", None, T0 + 320_000).used_weight == {"1M": 1}
    assert limiter.usage("a", None, T0 + 320_000).used_weight == {"1M": 0}


# --- properties -----------------------------------------------------------------------------

_steps = st.lists(
    st.tuples(st.integers(min_value=0, max_value=20_000), st.integers(min_value=0, max_value=7)),
    min_size=1,
    max_size=60,
)


@given(steps=_steps)
def test_accepted_weight_never_exceeds_the_limit_in_any_window(
    steps: list[tuple[int, int]],
) -> None:
    limiter = RateLimiter(
        limits=[RateLimit(kind="REQUEST_WEIGHT", interval="MINUTE", interval_num=1, limit=20)],
        ban_policy=BanPolicy(tolerated_429s=2, first_ban_ms=30_000),
    )
    accepted: dict[int, int] = {}
    now = T0
    for delta, weight in steps:
        now += delta
        error: SimReject | None = None
        try:
            usage = limiter.admit_request(IP, weight, now)
        except SimReject as exc:
            error = exc
        if error is not None:
            assert error.status in (418, 429)
            assert int(dict(error.headers)["Retry-After"]) >= 1
            continue
        window = window_start_ms(now, 60_000)
        accepted[window] = accepted.get(window, 0) + weight
        assert accepted[window] <= 20
        assert usage.used_weight["1M"] <= 20


_order_ops = st.lists(
    st.tuples(st.integers(min_value=0, max_value=4_000), st.booleans()),
    min_size=1,
    max_size=80,
)


@given(ops=_order_ops)
def test_unfilled_order_count_stays_within_limits(ops: list[tuple[int, bool]]) -> None:
    limiter = small_limiter(orders_10s=4, orders_day=12)
    now = T0
    for delta, fill in ops:
        now += delta
        if fill:
            limiter.order_filled(ACCOUNT, now)
            continue
        before = limiter.order_count_snapshot(ACCOUNT, now)
        error: SimReject | None = None
        try:
            limiter.admit_order(ACCOUNT, now)
        except SimReject as exc:
            error = exc
        if error is not None:
            assert error.code == -1015
            assert limiter.order_count_snapshot(ACCOUNT, now) == before
            assert before["10S"] == 4 or before["1D"] == 12
            continue
        after = limiter.order_count_snapshot(ACCOUNT, now)
        assert after == {"10S": before["10S"] + 1, "1D": before["1D"] + 1}
        assert after["10S"] <= 4
        assert after["1D"] <= 12
