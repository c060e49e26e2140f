"""The simulator's wall clock: epoch milliseconds derived from Trio's clock.

Everything in the simulator that needs "now" as Binance means it (event times, ``serverTime``,
``timestamp``/``recvWindow`` checks, calendar-aligned rate-limit windows) reads
:meth:`SimClock.now_ms`. It is anchored to ``trio.current_time()``, so under
``trio.testing.MockClock`` a whole simulated day passes in virtual time and every timestamp is
exact and reproducible. ``skew_ms`` is the clock-skew fault: the simulator's idea of the time
moves relative to the client's.
"""

from __future__ import annotations

import time

import attrs
import trio

__all__ = ["DEFAULT_VIRTUAL_EPOCH_MS", "SimClock"]

DEFAULT_VIRTUAL_EPOCH_MS = 1_767_225_600_000
"""2026-01-01T00:00:00Z: where a virtual (MockClock) run starts, so tests see fixed times."""


@attrs.define
class SimClock:
    """Epoch-ms clock anchored to Trio time. Create it inside ``trio.run``."""

    epoch_at_anchor_ms: int
    trio_anchor: float
    skew_ms: int = 0

    @classmethod
    def start(cls, epoch_ms: int | None = None) -> SimClock:
        """Anchor to the real wall clock now, or to ``epoch_ms`` (for deterministic runs)."""
        if epoch_ms is None:
            epoch_ms = time.time_ns() // 1_000_000
        return cls(epoch_at_anchor_ms=epoch_ms, trio_anchor=trio.current_time())

    def now_ms(self) -> int:
        elapsed_ms = (trio.current_time() - self.trio_anchor) * 1000.0
        return self.epoch_at_anchor_ms + int(elapsed_ms) + self.skew_ms

    def trio_time_at(self, epoch_ms: int) -> float:
        """The Trio time at which :meth:`now_ms` will read ``epoch_ms`` (for sleep_until)."""
        return self.trio_anchor + (epoch_ms - self.skew_ms - self.epoch_at_anchor_ms) / 1000.0
