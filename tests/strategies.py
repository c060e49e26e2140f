"""Hypothesis strategies shared by the test modules, one section per subject."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from hypothesis import strategies as st

from genesis.models.exchange_info import RateLimit, RateLimitType
from genesis.resilience.rate_limiter import Cost, Priority

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

__all__ = [
    "RATE_LIMIT_SHAPES",
    "limiter_costs",
    "limiter_priorities",
    "rate_limit_sets",
]

# -- rate limiter ---------------------------------------------------------------------------

RATE_LIMIT_SHAPES: Final = (
    (RateLimitType.REQUEST_WEIGHT, "MINUTE", 1, 5, 40),
    (RateLimitType.REQUEST_WEIGHT, "SECOND", 10, 2, 20),
    (RateLimitType.ORDERS, "SECOND", 10, 2, 12),
    (RateLimitType.ORDERS, "SECOND", 1, 2, 6),
    (RateLimitType.ORDERS, "DAY", 1, 20, 200),
    (RateLimitType.RAW_REQUESTS, "MINUTE", 5, 10, 100),
    (RateLimitType.CONNECTIONS, "MINUTE", 5, 1, 10),
)
"""(type, interval, interval_num, lowest and highest limit) of the buckets the limiter machine
draws from. Each is a distinct bucket key; longer windows get larger limits so that they bind
now and then rather than always; CONNECTIONS is there to be ignored."""


def rate_limit_sets(*, min_size: int = 0) -> SearchStrategy[tuple[RateLimit, ...]]:
    """Small ``rateLimits`` lists: up to 5 distinct buckets with limits low enough to bind."""
    shapes = st.lists(
        st.sampled_from(RATE_LIMIT_SHAPES), unique=True, min_size=min_size, max_size=5
    )
    return shapes.flatmap(
        lambda chosen: st.tuples(
            *(
                st.builds(
                    RateLimit,
                    type=st.just(kind),
                    interval=st.just(interval),
                    interval_num=st.just(num),
                    limit=st.integers(low, high),
                )
                for kind, interval, num, low, high in chosen
            )
        )
    )


def limiter_costs() -> SearchStrategy[Cost]:
    """Request costs of the size that fills a small bucket in a few requests.

    Half of them take one kind of bucket only, so that tickets often share no bucket and the
    limiter's pass-through rule has something to decide.
    """
    amounts = {"weight": st.integers(1, 8), "orders": st.integers(1, 3), "raw": st.integers(1, 2)}
    single = st.sampled_from(sorted(amounts)).flatmap(
        lambda field: amounts[field].map(
            lambda n: Cost(**{"weight": 0, "orders": 0, "raw": 0, field: n})
        )
    )
    mixed = st.builds(
        Cost, weight=st.integers(0, 8), orders=st.integers(0, 3), raw=st.integers(0, 2)
    )
    return single | mixed


def limiter_priorities() -> SearchStrategy[Priority]:
    """Any queue priority."""
    return st.sampled_from(Priority)


# -- circuit breaker (appended by the breaker's author) ---------------------------------------
# Imported here, not at the top, because this section is appended to a file owned by others.

from genesis.resilience.circuit_breaker import BreakerConfig, Outcome  # noqa: E402

__all__ += ["breaker_configs", "breaker_outcomes", "breaker_steps_s"]


def breaker_steps_s() -> SearchStrategy[float]:
    """Time between two breaker steps: the spec's edges (30 s, 60 s, just before) or 0 … 70 s.

    Everything is a multiple of 1/8 s, exact in binary, so ``t + 30.0 - t == 30.0`` and the
    window and cooldown edges compare exactly.
    """
    edges = st.sampled_from([0.0, 0.125, 0.5, 1.0, 5.0, 29.875, 30.0, 59.875, 60.0])
    return edges | st.integers(min_value=0, max_value=8 * 70).map(lambda n: n / 8)


def breaker_configs() -> SearchStrategy[BreakerConfig]:
    """The spec's numbers, plus small ones that make the breaker cycle within a few steps."""
    return st.sampled_from(
        [
            BreakerConfig(),  # 5 failures / 30 s, 60 s cooldown
            BreakerConfig(failure_threshold=1, window_s=1.0, cooldown_s=2.0),
            BreakerConfig(
                failure_threshold=2, window_s=0.5, cooldown_s=0.25, probe_retry_after_s=4.0
            ),
            BreakerConfig(failure_threshold=3, window_s=30.0, cooldown_s=60.0),
        ]
    )


def breaker_outcomes() -> SearchStrategy[Outcome]:
    """Any outcome of a guarded call."""
    return st.sampled_from(Outcome)
