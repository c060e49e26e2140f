"""Reconnect backoff: the exact schedule, the reset after a healthy connection, jitter bounds."""

from __future__ import annotations

import random

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from genesis.resilience.backoff import Backoff, BackoffPolicy


def test_schedule_doubles_from_one_second_and_caps_at_thirty() -> None:
    backoff = Backoff()
    delays = [backoff.mark_failed(now=float(i)) for i in range(8)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert backoff.attempt == 8


def test_policy_base_delays_match_the_schedule() -> None:
    policy = BackoffPolicy()
    assert [policy.base_delay_s(n) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert policy.base_delay_s(10_000) == 30.0  # no OverflowError for huge attempt counts


def test_healthy_connection_resets_the_schedule() -> None:
    backoff = Backoff(BackoffPolicy(reset_after_s=60.0))
    assert [backoff.mark_failed(0.0) for _ in range(3)] == [1.0, 2.0, 4.0]
    backoff.mark_healthy(100.0)
    backoff.mark_healthy(130.0)  # later calls keep the first healthy time
    assert backoff.mark_failed(160.0) == 1.0  # healthy for exactly 60 s
    assert backoff.mark_failed(161.0) == 2.0


def test_short_lived_connection_does_not_reset_the_schedule() -> None:
    backoff = Backoff(BackoffPolicy(reset_after_s=60.0))
    assert [backoff.mark_failed(0.0) for _ in range(3)] == [1.0, 2.0, 4.0]
    backoff.mark_healthy(10.0)
    assert backoff.mark_failed(69.9) == 8.0


def test_reset_starts_over() -> None:
    backoff = Backoff()
    backoff.mark_failed(0.0)
    backoff.mark_failed(0.0)
    backoff.reset()
    assert backoff.attempt == 0
    assert backoff.mark_failed(0.0) == 1.0


def test_jitter_is_reproducible_with_an_injected_random() -> None:
    policy = BackoffPolicy(jitter=0.5)
    first = [Backoff(policy, random.Random(7)).mark_failed(0.0) for _ in range(3)]
    backoff_a = Backoff(policy, random.Random(42))
    backoff_b = Backoff(policy, random.Random(42))
    seq_a = [backoff_a.mark_failed(0.0) for _ in range(6)]
    seq_b = [backoff_b.mark_failed(0.0) for _ in range(6)]
    assert seq_a == seq_b
    assert first[0] == first[1] == first[2]
    assert seq_a != [1.0, 2.0, 4.0, 8.0, 16.0, 30.0]


def test_jitter_without_random_is_refused() -> None:
    with pytest.raises(ValueError, match=r"random\.Random"):
        BackoffPolicy(jitter=0.1).delay_s(0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_s": 0.0},
        {"multiplier": 0.5},
        {"max_s": -1.0},
        {"jitter": 1.5},
        {"reset_after_s": -1.0},
        {"initial_s": 10.0, "max_s": 5.0},
    ],
)
def test_invalid_policies_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BackoffPolicy(**kwargs)


def test_negative_attempt_is_rejected() -> None:
    with pytest.raises(ValueError, match="attempt"):
        BackoffPolicy().delay_s(-1)


async def test_sleep_after_failure_sleeps_the_schedule(autojump_clock: trio.abc.Clock) -> None:
    backoff = Backoff()
    start = trio.current_time()
    slept = [await backoff.sleep_after_failure() for _ in range(4)]
    assert slept == [1.0, 2.0, 4.0, 8.0]
    assert trio.current_time() - start == 15.0


@given(
    initial_s=st.floats(min_value=0.001, max_value=10.0),
    multiplier=st.floats(min_value=1.0, max_value=10.0),
    extra_s=st.floats(min_value=0.0, max_value=100.0),
    jitter=st.floats(min_value=0.0, max_value=1.0),
    attempts=st.integers(min_value=1, max_value=2000),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_delays_stay_within_bounds(
    initial_s: float, multiplier: float, extra_s: float, jitter: float, attempts: int, seed: int
) -> None:
    policy = BackoffPolicy(
        initial_s=initial_s, multiplier=multiplier, max_s=initial_s + extra_s, jitter=jitter
    )
    backoff = Backoff(policy, random.Random(seed))
    previous_base = 0.0
    for attempt in range(min(attempts, 200)):
        base = policy.base_delay_s(attempt)
        delay = backoff.mark_failed(0.0)
        assert initial_s <= base <= policy.max_s
        assert base >= previous_base  # the un-jittered schedule never shrinks
        assert base * (1.0 - jitter) <= delay <= base
        assert delay > 0 or jitter == 1.0
        previous_base = base
    assert policy.base_delay_s(attempts) <= policy.max_s


# --- the market-data schedule: full jitter, reset after 10 s of frames, never giving up -----

MARKET = BackoffPolicy(jitter=1.0, reset_after_s=10.0)


@given(
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    failures=st.integers(min_value=1, max_value=500),
)
def test_full_jitter_stays_within_the_schedule_and_never_gives_up(seed: int, failures: int) -> None:
    backoff = Backoff(MARKET, random.Random(seed))
    schedule = [1.0, 2.0, 4.0, 8.0, 16.0]
    for attempt in range(failures):
        delay = backoff.mark_failed(float(attempt))
        base = schedule[attempt] if attempt < len(schedule) else 30.0
        assert 0.0 < delay <= base  # full jitter: (0, base], the cap never exceeded
    assert backoff.attempt == failures  # still counting, still retrying


@given(seeds=st.lists(st.integers(0, 2**32 - 1), min_size=3, max_size=3, unique=True))
def test_connections_failing_together_do_not_retry_in_the_same_instant(seeds: list[int]) -> None:
    delays = [Backoff(MARKET, random.Random(seed)).mark_failed(0.0) for seed in seeds]
    assert len(set(delays)) == 3


@given(
    healthy_s=st.floats(min_value=0.0, max_value=100.0),
    silent_tail_s=st.floats(min_value=0.0, max_value=100.0),
    earlier_failures=st.integers(min_value=1, max_value=10),
)
def test_only_the_time_with_frames_counts_towards_the_reset(
    healthy_s: float, silent_tail_s: float, earlier_failures: int
) -> None:
    backoff = Backoff(BackoffPolicy(reset_after_s=10.0))
    for _ in range(earlier_failures):
        backoff.mark_failed(0.0)
    backoff.mark_healthy(100.0)
    last_frame = 100.0 + healthy_s
    delay = backoff.mark_failed(last_frame + silent_tail_s, healthy_until=last_frame)
    if healthy_s >= 10.0:
        assert delay == 1.0  # reset: the first delay again
    else:
        assert delay == BackoffPolicy().base_delay_s(earlier_failures)  # carried on
