"""Server-time offset estimation: a pure core that takes ``now``, plus a thin Trio wrapper.

Signed requests carry ``timestamp``, which Binance accepts only when
``timestamp < serverTime + 1000`` and ``serverTime - timestamp <= recvWindow``
(``shared/binance/FACTS.md`` §2 "Timing security"). A local clock that is off by a second gets
``-1021`` storms, so Genesis stamps requests with its estimate of the *server's* time.

One :class:`TimeSample` is one round trip to ``GET /api/v3/time``: the local wall clock before
sending (``sent_ms``), after receiving (``received_ms``), and the ``serverTime`` of the answer.
The server read its clock at some instant between the two local readings, so the true offset
(server minus local) lies within ``rtt / 2`` of the midpoint estimate
``server_ms - (sent_ms + rtt / 2)``, whatever the split of the delay between the two directions
(plus up to 1 ms, because all three readings are whole milliseconds). Symmetric delays make the
midpoint exact; asymmetric ones move it, by at most ``rtt / 2``. That is why low-RTT samples are
the good ones: a slow round trip is usually slow in one direction (a queue, a retransmission, a
cold connection's handshake) and its midpoint is off by up to half its RTT, while a fast one
cannot be off by much.

:class:`TimeSyncCore` keeps the most recent ``max_samples`` samples younger than ``max_age_ms``
and estimates from the ``best_of`` lowest-RTT ones: the **median** of their offsets, which shrugs
off one odd answer (Binance serves ``/time`` from several hosts). Its uncertainty is a bound, not
a standard deviation: half the lowest RTT, plus 1 ms of clock resolution, plus the distance from
the estimate to that best sample's own offset. The truth is within ``rtt / 2 + 1`` of the best
sample's offset, and the estimate is that distance away from it, so the bound holds however the
delays were split (it assumes neither clock drifts noticeably within ``max_age_ms``, true of
NTP-disciplined hosts).

Because every sample's interval must contain the truth, a new sample whose interval misses the
current estimate's (``|offset - estimate| > uncertainty + rtt / 2 + 1``) proves that a clock
stepped (an NTP correction here, or the exchange's clock moved): the older samples are dropped
and the estimate restarts from the new one. Without this, low-RTT samples from before the step
would keep outvoting the resync that a ``-1021`` triggers, for up to ``max_age_ms``.

The core never reads a clock: every method takes the local wall-clock time in epoch ms.
:func:`sync_time` is the wrapper that measures.
"""

from __future__ import annotations

import logging
import math
import statistics
from typing import TYPE_CHECKING, Final

import attrs

from genesis.errors import GenesisError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = [
    "CLOCK_RESOLUTION_MS",
    "DEFAULT_BEST_OF",
    "DEFAULT_MAX_AGE_MS",
    "DEFAULT_MAX_SAMPLES",
    "TimeSample",
    "TimeSyncCore",
    "TimeSyncStatistics",
    "sync_time",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_SAMPLES: Final = 16
DEFAULT_MAX_AGE_MS: Final = 10 * 60 * 1000
DEFAULT_BEST_OF: Final = 3
CLOCK_RESOLUTION_MS: Final = 1.0
"""Added to every uncertainty: the local readings and ``serverTime`` are whole milliseconds."""


@attrs.frozen
class TimeSample:
    """One round trip to the server's clock.

    Attributes:
        sent_ms: local wall-clock epoch ms just before the request was sent.
        received_ms: local wall-clock epoch ms just after the answer arrived (>= ``sent_ms``).
        server_ms: the server's time in the answer (``serverTime``), epoch ms.
    """

    sent_ms: int
    received_ms: int = attrs.field()
    server_ms: int = attrs.field()

    @received_ms.validator
    def _not_before_sent(self, _attribute: attrs.Attribute[int], value: int) -> None:
        if value < self.sent_ms:
            raise ValueError(f"received_ms ({value}) is before sent_ms ({self.sent_ms})")

    @property
    def rtt_ms(self) -> int:
        """The round-trip time, ``received_ms - sent_ms``."""
        return self.received_ms - self.sent_ms

    @property
    def offset_ms(self) -> float:
        """Server minus local time, ``server_ms - (sent_ms + rtt_ms / 2)``.

        A float: an odd RTT puts the midpoint on a half millisecond. Exact when the delays in
        both directions were equal; never off by more than ``rtt_ms / 2`` (+1 ms resolution).
        """
        return self.server_ms - (self.sent_ms + self.rtt_ms / 2)


@attrs.frozen(kw_only=True)
class TimeSyncStatistics:
    """A snapshot of :class:`TimeSyncCore` at one instant.

    Attributes:
        offset_ms: the estimated server-minus-local offset; ``0.0`` when not synced.
        uncertainty_ms: a bound on the estimate's error (see the module docstring);
            ``math.inf`` when not synced.
        samples: live samples (recent enough) behind the estimate.
        best_rtt_ms: the lowest RTT among them; ``None`` when not synced.
        last_sync_ms: local time the newest live sample was received; ``None`` when not synced.
        synced: there is at least one live sample.
    """

    offset_ms: float
    uncertainty_ms: float
    samples: int
    best_rtt_ms: int | None
    last_sync_ms: int | None
    synced: bool


@attrs.define
class TimeSyncCore:
    """The offset estimate from recent :class:`TimeSample`s. Pure: ``now_ms`` is passed in.

    A sample is *live* at ``now_ms`` when ``now_ms - max_age_ms < received_ms <= now_ms``. A
    sample "from the future" means the local wall clock stepped backwards since it was taken,
    which invalidates the offset it measured, so it does not count.

    Attributes:
        max_samples: how many recent samples are kept (older ones are dropped on :meth:`add`).
        max_age_ms: samples received this long ago or longer no longer count.
        best_of: how many of the lowest-RTT samples the median is taken over.
    """

    max_samples: int = attrs.field(default=DEFAULT_MAX_SAMPLES, validator=attrs.validators.ge(1))
    max_age_ms: int = attrs.field(default=DEFAULT_MAX_AGE_MS, validator=attrs.validators.gt(0))
    best_of: int = attrs.field(default=DEFAULT_BEST_OF, validator=attrs.validators.ge(1))
    _samples: list[TimeSample] = attrs.field(factory=list, init=False)
    _cache: tuple[int, int, float, float] | None = attrs.field(default=None, init=False)
    """``(from_ms, until_ms, offset, uncertainty)``: while ``from_ms <= now < until_ms`` every
    kept sample is live, so the estimate is the same; the request path reads it per call."""

    def add(self, sample: TimeSample, now_ms: int) -> bool:
        """Record ``sample``; drop samples no longer live at ``now_ms`` and the oldest beyond
        ``max_samples``.

        Returns:
            ``True`` when ``sample`` contradicts the current estimate (a clock stepped), so
            every older sample was dropped; ``False`` otherwise.
        """
        live = self._live(now_ms)
        stepped = False
        if live:
            estimate, uncertainty = self._estimate(live)
            allowed = uncertainty + sample.rtt_ms / 2 + CLOCK_RESOLUTION_MS
            stepped = abs(sample.offset_ms - estimate) > allowed
        kept = [sample] if stepped else [*live, sample]
        self._samples = kept[-self.max_samples :]
        self._cache = None
        return stepped

    def _current(self, now_ms: int) -> tuple[float, float]:
        cache = self._cache
        if cache is not None and cache[0] <= now_ms < cache[1]:
            return cache[2], cache[3]
        live = self._live(now_ms)
        estimate = self._estimate(live)
        if live and len(live) == len(self._samples):
            from_ms = max(s.received_ms for s in live)
            until_ms = min(s.received_ms for s in live) + self.max_age_ms
            self._cache = (from_ms, until_ms, *estimate)
        return estimate

    def _live(self, now_ms: int) -> list[TimeSample]:
        oldest_ms = now_ms - self.max_age_ms
        return [s for s in self._samples if oldest_ms < s.received_ms <= now_ms]

    def _best(self, live: list[TimeSample]) -> list[TimeSample]:
        # Lowest RTT first; on a tie the later-added sample wins (less drift since). Ranked by
        # insertion order, not received_ms: a resync can share a millisecond with what it fixes.
        ranked = sorted(enumerate(live), key=lambda item: (item[1].rtt_ms, -item[0]))
        return [s for _, s in ranked[: self.best_of]]

    def _estimate(self, live: list[TimeSample]) -> tuple[float, float]:
        best = self._best(live)
        if not best:
            return 0.0, math.inf
        estimate = statistics.median(s.offset_ms for s in best)
        bound = best[0].rtt_ms / 2 + CLOCK_RESOLUTION_MS + abs(estimate - best[0].offset_ms)
        return estimate, bound

    def offset_ms(self, now_ms: int) -> float:
        """Server minus local time: the median offset of the ``best_of`` lowest-RTT live
        samples (of two, their mean); ``0.0`` without live samples."""
        return self._current(now_ms)[0]

    def uncertainty_ms(self, now_ms: int) -> float:
        """A bound on the error of :meth:`offset_ms`: half the lowest RTT, plus
        :data:`CLOCK_RESOLUTION_MS`, plus the estimate's distance from that best sample's own
        offset; ``math.inf`` without live samples."""
        return self._current(now_ms)[1]

    def is_fresh(self, now_ms: int, max_age_ms: int) -> bool:
        """Whether a live sample was received within the last ``max_age_ms`` (inclusive).

        A caller that can tolerate an offset this old reuses it instead of a round trip.
        """
        last = self._last_sync_ms(now_ms)
        return last is not None and now_ms - last <= max_age_ms

    def _last_sync_ms(self, now_ms: int) -> int | None:
        return max((s.received_ms for s in self._live(now_ms)), default=None)

    def server_time_ms(self, local_now_ms: int) -> int:
        """The server's time when the local wall clock reads ``local_now_ms``
        (``local_now_ms`` itself when not synced)."""
        return local_now_ms + round(self.offset_ms(local_now_ms))

    def statistics(self, now_ms: int) -> TimeSyncStatistics:
        """The estimate and what it rests on, at ``now_ms``."""
        live = self._live(now_ms)
        best = self._best(live)
        offset, uncertainty = self._estimate(live)
        return TimeSyncStatistics(
            offset_ms=offset,
            uncertainty_ms=uncertainty,
            samples=len(live),
            best_rtt_ms=best[0].rtt_ms if best else None,
            last_sync_ms=self._last_sync_ms(now_ms),
            synced=bool(live),
        )


async def sync_time(
    core: TimeSyncCore,
    fetch_server_time_ms: Callable[[], Awaitable[int]],
    wall_clock_ms: Callable[[], int],
    *,
    samples: int = 5,
) -> TimeSyncStatistics:
    """Take ``samples`` round trips one after another, add them to ``core``, return its state.

    Each round trip reads ``wall_clock_ms()``, awaits ``fetch_server_time_ms()`` (for example
    ``GET /api/v3/time``'s ``serverTime``), and reads ``wall_clock_ms()`` again. A failed fetch
    (a :class:`~genesis.errors.GenesisError`) is skipped and logged at INFO with its type; any
    other exception propagates. A round trip during which the wall clock went backwards is
    dropped (logged at WARNING): its readings measure nothing. A sample that proves a clock
    step replaces the older ones (:meth:`TimeSyncCore.add`; logged at WARNING).

    No timeout of its own: wrap the call in ``trio.fail_after`` (the fetch's own transport
    deadlines bound each round trip). Cancellation propagates at once; samples already taken
    stay in ``core``.

    Args:
        core: the estimator to feed.
        fetch_server_time_ms: one request for the server's time, in epoch ms.
        wall_clock_ms: the local wall clock, in epoch ms.
        samples: how many round trips to make (>= 1).

    Returns:
        ``core.statistics()`` after the last round trip.

    Raises:
        ValueError: ``samples`` < 1.
        GenesisError: the last fetch error, when every fetch failed.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    last_error: GenesisError | None = None
    succeeded = 0
    for attempt in range(1, samples + 1):
        sent_ms = wall_clock_ms()
        try:
            server_ms = await fetch_server_time_ms()
        except GenesisError as exc:
            logger.info("timesync.sample_failed attempt=%d error=%s", attempt, type(exc).__name__)
            last_error = exc
            continue
        received_ms = wall_clock_ms()
        succeeded += 1
        if received_ms < sent_ms:
            logger.warning(
                "timesync.clock_went_backwards attempt=%d by_ms=%d", attempt, sent_ms - received_ms
            )
            continue
        previous_ms = core.offset_ms(received_ms)
        if core.add(TimeSample(sent_ms, received_ms, server_ms), now_ms=received_ms):
            logger.warning(
                "timesync.step_detected attempt=%d offset_ms=%d previous_offset_ms=%d",
                attempt,
                round(core.offset_ms(received_ms)),
                round(previous_ms),
            )
    if succeeded == 0 and last_error is not None:
        raise last_error
    stats = core.statistics(wall_clock_ms())
    if stats.synced:
        logger.info(
            "timesync.synced offset_ms=%d uncertainty_ms=%d samples=%d",
            round(stats.offset_ms),
            math.ceil(stats.uncertainty_ms),
            stats.samples,
        )
    else:
        logger.warning("timesync.unsynced samples=0")
    return stats
