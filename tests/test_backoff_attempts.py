"""The shared connection-attempt budget (Binance: 300 attempts per 5 minutes per IP)."""

from __future__ import annotations

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from genesis.resilience.connect_limiter import (
    CONNECT_ATTEMPT_WINDOW_S,
    CONNECT_ATTEMPTS_PER_WINDOW,
    AttemptWindow,
    ConnectAttemptLimiter,
)


def test_the_default_budget_is_binances_300_per_5_minutes() -> None:
    window = AttemptWindow()
    assert (window.limit, window.window_s) == (300, 300.0)
    assert (CONNECT_ATTEMPTS_PER_WINDOW, CONNECT_ATTEMPT_WINDOW_S) == (300, 300.0)


def test_a_full_window_says_when_the_oldest_attempt_expires() -> None:
    window = AttemptWindow(limit=2, window_s=10.0)
    assert window.try_record(0.0)
    assert window.try_record(4.0)
    assert not window.try_record(5.0)
    assert window.delay_s(5.0) == 5.0
    assert window.in_window(9.0) == 2
    assert window.try_record(10.0)  # the attempt at 0 left the window
    assert window.in_window(10.0) == 2


@pytest.mark.parametrize("kwargs", [{"limit": 0}, {"window_s": 0.0}])
def test_invalid_budgets_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        AttemptWindow(**kwargs)  # type: ignore[arg-type]  # deliberately wrong values


@given(
    limit=st.integers(min_value=1, max_value=20),
    window_s=st.floats(min_value=0.5, max_value=100.0),
    steps=st.lists(st.floats(min_value=0.0, max_value=30.0), min_size=1, max_size=200),
)
def test_no_window_ever_holds_more_than_the_limit(
    limit: int, window_s: float, steps: list[float]
) -> None:
    window = AttemptWindow(limit=limit, window_s=window_s)
    now = 0.0
    accepted: list[float] = []
    for step in steps:
        now += step
        delay = window.delay_s(now)
        if window.try_record(now):
            assert delay == 0.0
            accepted.append(now)
        else:
            assert 0.0 < delay <= window_s
    for start in accepted:
        assert sum(start <= t < start + window_s for t in accepted) <= limit


async def test_acquire_waits_for_the_budget(autojump_clock: trio.abc.Clock) -> None:
    limiter = ConnectAttemptLimiter(AttemptWindow(limit=2, window_s=60.0))
    times = []
    with trio.fail_after(300):
        for _ in range(5):
            await limiter.acquire("test")
            times.append(trio.current_time())
    assert times == [0.0, 0.0, 60.0, 60.0, 120.0]
    stats = limiter.statistics()
    assert (stats.attempts, stats.delayed, stats.in_window, stats.limit) == (5, 2, 1, 2)
