"""Exponential reconnect backoff: a pure core that takes ``now``, plus a thin Trio wrapper.

The schedule is ``initial_s * multiplier**attempt`` capped at ``max_s``; with the defaults that is
1, 2, 4, 8, 16, 30, 30 … seconds, and it never gives up (the attempt count grows without bound,
the delay stays at the cap). Optional jitter draws each delay uniformly from
``[delay * (1 - jitter), delay]`` with an injected :class:`random.Random`, so the cap is never
exceeded and tests stay reproducible; ``jitter=1`` is "full jitter" (uniform in ``(0, delay]``),
what the market-data connections use so that connections failing together do not retry in the
same instant. A connection that stayed healthy for ``reset_after_s`` resets the schedule: the
next failure waits ``initial_s`` again. "Healthy" ends at the last sign of life the caller
reports (``healthy_until``), so a connection that went silent and was declared stale later does
not count its silent tail.

:class:`BackoffPolicy` is the frozen configuration and :meth:`BackoffPolicy.delay_s` the pure
function; :class:`Backoff` is the per-connection state (attempt count, healthy-since) whose
methods take ``now`` (Trio time, seconds) so they can be driven without a clock.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import attrs
import trio

if TYPE_CHECKING:
    import random

__all__ = ["Backoff", "BackoffPolicy"]

logger = logging.getLogger(__name__)


def _positive(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _non_negative(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _at_least_one(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 1:
        raise ValueError(f"{attribute.name} must be >= 1, got {value!r}")


def _fraction(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"{attribute.name} must be within [0, 1], got {value!r}")


@attrs.frozen(kw_only=True)
class BackoffPolicy:
    """How long to wait before reconnect attempt number ``attempt`` (0-based).

    Attributes:
        initial_s: The first delay.
        multiplier: Growth factor per consecutive failure (>= 1).
        max_s: The cap; no delay is ever longer.
        jitter: Fraction in ``[0, 1]``; each delay is drawn from ``[d * (1 - jitter), d]``.
            ``0`` (the default) gives the exact schedule.
        reset_after_s: A connection healthy for at least this long resets the schedule.
    """

    initial_s: float = attrs.field(default=1.0, validator=_positive)
    multiplier: float = attrs.field(default=2.0, validator=_at_least_one)
    max_s: float = attrs.field(default=30.0, validator=_positive)
    jitter: float = attrs.field(default=0.0, validator=_fraction)
    reset_after_s: float = attrs.field(default=60.0, validator=_non_negative)

    def __attrs_post_init__(self) -> None:
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s ({self.max_s}) must be >= initial_s ({self.initial_s})")

    def base_delay_s(self, attempt: int) -> float:
        """The un-jittered delay before attempt ``attempt`` (0-based): 1, 2, 4 … capped."""
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt}")
        try:
            delay = self.initial_s * self.multiplier**attempt
        except OverflowError:
            return self.max_s
        return min(delay, self.max_s)

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """The delay before attempt ``attempt``, jittered with ``rng`` when ``jitter > 0``.

        Raises:
            ValueError: ``attempt`` is negative, or jitter is configured without an ``rng``.
        """
        base = self.base_delay_s(attempt)
        if self.jitter == 0:
            return base
        if rng is None:
            raise ValueError("a jittered backoff needs an injected random.Random")
        return base * (1.0 - self.jitter * rng.random())


@attrs.define
class Backoff:
    """Reconnect state for one connection: consecutive failures and when it became healthy.

    Call :meth:`mark_healthy` once a connection is up and delivering, and :meth:`mark_failed`
    when an attempt or a connection ends; the latter returns the delay before the next attempt.
    """

    policy: BackoffPolicy = attrs.field(factory=BackoffPolicy)
    rng: random.Random | None = None
    attempt: int = attrs.field(default=0, init=False)
    """Failures since the last reset; the next delay is ``policy.delay_s(attempt)``."""
    healthy_since: float | None = attrs.field(default=None, init=False)

    def mark_healthy(self, now: float) -> None:
        """The connection is up and delivering since ``now`` (later calls keep the first time)."""
        if self.healthy_since is None:
            self.healthy_since = now

    def mark_failed(self, now: float, *, healthy_until: float | None = None) -> float:
        """A connection attempt or a live connection ended at ``now``.

        Resets the schedule first if the connection had been healthy for ``reset_after_s``:
        from :meth:`mark_healthy` until ``healthy_until`` (its last frame; ``now`` when
        ``None``).

        Returns:
            The delay in seconds before the next attempt.
        """
        end = now if healthy_until is None else min(now, healthy_until)
        if self.healthy_since is not None and end - self.healthy_since >= self.policy.reset_after_s:
            self.attempt = 0
        self.healthy_since = None
        delay = self.policy.delay_s(self.attempt, self.rng)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """Forget past failures: the next delay is ``initial_s`` again."""
        self.attempt = 0
        self.healthy_since = None

    async def sleep_after_failure(self) -> float:
        """:meth:`mark_failed` at the current Trio time, then sleep for the returned delay.

        Cancellation interrupts the sleep; the attempt count has already advanced.

        Returns:
            The delay slept, in seconds.
        """
        delay = self.mark_failed(trio.current_time())
        await trio.sleep(delay)
        return delay
