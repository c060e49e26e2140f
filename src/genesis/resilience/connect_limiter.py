"""Connection attempts per IP: a sliding-window budget shared by every WebSocket of a process.

Binance allows 300 connection attempts per 5 minutes per IP (web-socket-streams.md, "WebSocket
Limits"; the simulator answers the 301st with HTTP 429). Three market-data roles and the user
data stream each reconnect on their own backoff schedule; this budget is what they share, so a
storm of failures (every connection cut at once, again and again) slows down instead of getting
the IP refused.

:class:`AttemptWindow` is the pure core that takes ``now`` (Trio seconds): at most ``limit``
attempts within any ``window_s``. A sliding window is stricter than Binance's fixed calendar
windows, so staying inside it stays inside theirs. :class:`ConnectAttemptLimiter` is the thin
Trio wrapper a connection task awaits before it dials.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Final

import attrs
import trio

__all__ = [
    "CONNECT_ATTEMPTS_PER_WINDOW",
    "CONNECT_ATTEMPT_WINDOW_S",
    "AttemptWindow",
    "ConnectAttemptLimiter",
    "ConnectAttemptStatistics",
]

logger = logging.getLogger(__name__)

CONNECT_ATTEMPTS_PER_WINDOW: Final = 300
CONNECT_ATTEMPT_WINDOW_S: Final = 300.0


@attrs.define
class AttemptWindow:
    """At most ``limit`` attempts in any ``window_s`` seconds (pure; every method takes ``now``).

    Attributes:
        limit: Attempts allowed per window (>= 1).
        window_s: The window's length in seconds (> 0).
    """

    limit: int = attrs.field(default=CONNECT_ATTEMPTS_PER_WINDOW, validator=attrs.validators.ge(1))
    window_s: float = attrs.field(
        default=CONNECT_ATTEMPT_WINDOW_S, validator=attrs.validators.gt(0)
    )
    _times: deque[float] = attrs.field(factory=deque, init=False)

    def _expire(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.window_s:
            self._times.popleft()

    def delay_s(self, now: float) -> float:
        """Seconds until an attempt is allowed (``0`` when one is allowed at ``now``)."""
        self._expire(now)
        if len(self._times) < self.limit:
            return 0.0
        return self._times[0] + self.window_s - now

    def try_record(self, now: float) -> bool:
        """Count an attempt at ``now`` if the budget allows it; whether it did."""
        if self.delay_s(now) > 0:
            return False
        self._times.append(now)
        return True

    def in_window(self, now: float) -> int:
        """Attempts counted in the window ending at ``now``."""
        self._expire(now)
        return len(self._times)


@attrs.frozen(kw_only=True)
class ConnectAttemptStatistics:
    """Counters of a :class:`ConnectAttemptLimiter`.

    Attributes:
        attempts: Attempts allowed since start.
        delayed: Attempts that had to wait for the budget.
        in_window: Attempts within the current window.
        limit: The budget per window.
    """

    attempts: int
    delayed: int
    in_window: int
    limit: int


@attrs.define(eq=False)
class ConnectAttemptLimiter:
    """The shared budget, awaited before every connection attempt of every WebSocket."""

    window: AttemptWindow = attrs.field(factory=AttemptWindow)
    attempts: int = attrs.field(default=0, init=False)
    delayed: int = attrs.field(default=0, init=False)

    async def acquire(self, who: str = "") -> None:
        """Wait until the budget allows one more attempt, and count it.

        Always checkpoints. Cancellation while waiting counts nothing.
        """
        await trio.lowlevel.checkpoint()
        waited = False
        while not self.window.try_record(trio.current_time()):
            delay = self.window.delay_s(trio.current_time())
            if not waited:
                waited = True
                self.delayed += 1
                logger.warning(
                    "connect_limiter.wait who=%s delay_s=%.1f limit=%d window_s=%g",
                    who or "-",
                    delay,
                    self.window.limit,
                    self.window.window_s,
                )
            await trio.sleep(delay)
        self.attempts += 1

    def statistics(self) -> ConnectAttemptStatistics:
        return ConnectAttemptStatistics(
            attempts=self.attempts,
            delayed=self.delayed,
            in_window=self.window.in_window(trio.current_time()),
            limit=self.window.limit,
        )
