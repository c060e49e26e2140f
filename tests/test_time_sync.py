"""Server-time offset estimation: the pure core, its error bound, and the Trio wrapper.

Expected figures are worked out by hand in the comments (one round trip's offset error is
``(out - back) / 2``), never computed with the code under test. Every async test runs under
``autojump_clock`` with a trio-clock deadline and asserts exact virtual times.
"""

from __future__ import annotations

import logging
import math
import random
import statistics
from typing import TYPE_CHECKING, Final

import attrs
import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from genesis.errors import (
    ConnectError,
    ExchangeUnavailableError,
    ReadTimeoutError,
)
from genesis.exchange.time_sync import (
    DEFAULT_MAX_AGE_MS,
    TimeSample,
    TimeSyncCore,
    TimeSyncStatistics,
    sync_time,
)
from genesis.sim.clock import SimClock
from genesis.sim.exchange import Exchange
from genesis.sim.rest import RestApp, RestFaults
from genesis.sim.symbols import default_symbols

if TYPE_CHECKING:
    from collections.abc import Callable

T0: Final = 1_767_225_600_000  # 2026-01-01T00:00:00Z, the local wall clock at trio time 0
LOGGER: Final = "genesis.exchange.time_sync"


def wall_clock_ms() -> int:
    """The local wall clock, following Trio's (virtual) clock from T0."""
    return T0 + round(trio.current_time() * 1000)


def virtual_ms() -> int:
    return round(trio.current_time() * 1000)


def sample(sent_ms: int, out_ms: int, back_ms: int, offset_ms: int) -> TimeSample:
    """A round trip sent at ``sent_ms`` whose server clock runs ``offset_ms`` ahead of ours."""
    return TimeSample(sent_ms, sent_ms + out_ms + back_ms, sent_ms + out_ms + offset_ms)


def feed(core: TimeSyncCore, samples: list[TimeSample]) -> list[bool]:
    """Add ``samples`` as they arrive; which of them reported a clock step."""
    return [core.add(s, now_ms=s.received_ms) for s in samples]


# --- TimeSample ---------------------------------------------------------------------------------


def test_sample_rtt_and_offset_from_the_midpoint() -> None:
    s = TimeSample(sent_ms=1000, received_ms=1041, server_ms=6020)
    assert s.rtt_ms == 41
    # The server read its clock at the midpoint 1020.5 (if symmetric): 6020 - 1020.5.
    assert s.offset_ms == 4999.5


def test_sample_received_before_sent_is_refused() -> None:
    TimeSample(sent_ms=5, received_ms=5, server_ms=0)
    with pytest.raises(ValueError, match="before sent_ms"):
        TimeSample(sent_ms=5, received_ms=4, server_ms=0)


# --- TimeSyncCore: the estimate -----------------------------------------------------------------


def test_no_samples_means_offset_zero_and_not_synced() -> None:
    core = TimeSyncCore()
    assert core.offset_ms(T0) == 0.0
    assert core.uncertainty_ms(T0) == math.inf
    assert core.server_time_ms(T0) == T0
    assert not core.is_fresh(T0, 60_000)
    assert core.statistics(T0) == TimeSyncStatistics(
        offset_ms=0.0,
        uncertainty_ms=math.inf,
        samples=0,
        best_rtt_ms=None,
        last_sync_ms=None,
        synced=False,
    )


def test_estimate_is_the_median_of_the_three_lowest_rtt_samples() -> None:
    core = TimeSyncCore()
    feed(
        core,
        [
            sample(T0, 180, 70, 1000),  # rtt 250, error +55
            sample(T0 + 1000, 25, 15, 1000),  # rtt 40, error +5
            sample(T0 + 2000, 15, 45, 1000),  # rtt 60, error -15
            sample(T0 + 3000, 40, 10, 1000),  # rtt 50, error +15
            sample(T0 + 4000, 35, 36, 1000),  # rtt 71, error -0.5
        ],
    )
    now = T0 + 4071
    # Best three: rtt 40 (+5), 50 (+15), 60 (-15); median +5. Bound: 40/2 + 1 + |5 - 5| = 21.
    assert core.offset_ms(now) == 1005.0
    assert core.uncertainty_ms(now) == 21.0
    assert core.server_time_ms(now) == now + 1005
    assert core.statistics(now) == TimeSyncStatistics(
        offset_ms=1005.0,
        uncertainty_ms=21.0,
        samples=5,
        best_rtt_ms=40,
        last_sync_ms=T0 + 4071,
        synced=True,
    )


def test_uncertainty_grows_by_the_estimates_distance_from_the_best_sample() -> None:
    core = TimeSyncCore()
    feed(
        core,
        [
            sample(T0, 10, 10, 0),  # rtt 20, error 0: the best sample
            sample(T0 + 100, 30, 0, 0),  # rtt 30, error +15
            sample(T0 + 200, 32, 0, 0),  # rtt 32, error +16
        ],
    )
    # Median +15; truth within 20/2 + 1 of the best sample's 0, so within 11 + 15 of +15.
    assert core.offset_ms(T0 + 232) == 15.0
    assert core.uncertainty_ms(T0 + 232) == 26.0


def test_two_samples_give_their_mean_and_one_sample_itself() -> None:
    core = TimeSyncCore()
    core.add(sample(T0, 10, 20, 100), now_ms=T0 + 30)  # rtt 30, error -5
    assert core.offset_ms(T0 + 30) == 95.0
    assert core.uncertainty_ms(T0 + 30) == 16.0
    core.add(sample(T0 + 30, 20, 20, 100), now_ms=T0 + 70)  # rtt 40, error 0
    assert core.offset_ms(T0 + 70) == 97.5
    assert core.uncertainty_ms(T0 + 70) == 15 + 1 + 2.5


def test_a_rtt_tie_prefers_the_newer_sample() -> None:
    core = TimeSyncCore(best_of=1)
    feed(core, [sample(T0, 10, 10, 7), sample(T0 + 100, 0, 20, 7)])
    # Both rtt 20; the newer one (error -10) wins.
    assert core.offset_ms(T0 + 120) == -3.0


def test_a_rtt_tie_within_one_millisecond_prefers_the_later_added_sample() -> None:
    # In memory every round trip takes 0 ms, so samples share their received_ms.
    core = TimeSyncCore(best_of=1)
    assert feed(core, [TimeSample(T0, T0, T0 + 3), TimeSample(T0, T0, T0 + 4)]) == [False, False]
    assert core.offset_ms(T0) == 4.0


# --- TimeSyncCore: clock steps ------------------------------------------------------------------


def test_a_sample_that_contradicts_the_estimate_replaces_the_older_ones() -> None:
    core = TimeSyncCore()
    # Three excellent samples at offset 0 (rtt 10): the truth is within 0 ± 6.
    assert feed(core, [sample(T0 + i * 100, 5, 5, 0) for i in range(3)]) == [False] * 3
    # The exchange's clock is now 7 s behind. A worse round trip (rtt 30, error 0) still proves
    # it: its interval -7000 ± 16 misses 0 ± 6, so the older samples cannot all be right.
    assert core.add(sample(T0 + 1000, 15, 15, -7000), now_ms=T0 + 1030) is True
    stats = core.statistics(T0 + 1030)
    assert (stats.offset_ms, stats.samples, stats.uncertainty_ms) == (-7000.0, 1, 16.0)


@pytest.mark.parametrize(("true_offset", "stepped"), [(7, False), (8, True)])
def test_a_step_is_declared_only_when_the_intervals_miss(true_offset: int, stepped: bool) -> None:
    core = TimeSyncCore()
    feed(core, [sample(T0 + i * 100, 5, 5, 0) for i in range(3)])
    # Estimate 0 ± 6. A rtt-30 sample all on the way out reads true + 15, and its interval is
    # ± 16: true 7 reads 22 (22 - 16 = 6 touches 0 ± 6), true 8 reads 23 (misses it).
    assert core.add(sample(T0 + 1000, 30, 0, true_offset), now_ms=T0 + 1030) is stepped
    assert core.statistics(T0 + 1030).samples == (1 if stepped else 4)


def test_best_of_must_be_positive() -> None:
    with pytest.raises(ValueError, match="best_of"):
        TimeSyncCore(best_of=0)
    with pytest.raises(ValueError, match="max_age_ms"):
        TimeSyncCore(max_age_ms=0)
    with pytest.raises(ValueError, match="max_samples"):
        TimeSyncCore(max_samples=0)


# --- TimeSyncCore: ageing -----------------------------------------------------------------------


def test_stale_samples_age_out_after_ten_minutes() -> None:
    core = TimeSyncCore()
    assert DEFAULT_MAX_AGE_MS == 600_000
    core.add(sample(T0, 5, 5, 250), now_ms=T0 + 10)
    assert core.statistics(T0 + 600_009).synced
    assert core.offset_ms(T0 + 600_009) == 250.0
    # Received at T0 + 10: 600,000 ms later it is no longer younger than max_age.
    stale = core.statistics(T0 + 600_010)
    assert (stale.synced, stale.offset_ms, stale.samples) == (False, 0.0, 0)
    assert core.server_time_ms(T0 + 600_010) == T0 + 600_010


def test_a_fresh_sample_replaces_an_aged_better_one() -> None:
    core = TimeSyncCore(max_age_ms=1000)
    core.add(sample(T0, 1, 1, 100), now_ms=T0 + 2)  # rtt 2, error 0
    core.add(sample(T0 + 900, 50, 10, 100), now_ms=T0 + 960)  # rtt 60, error +20
    assert core.offset_ms(T0 + 960) == 110.0  # median of the two
    assert core.offset_ms(T0 + 1002) == 120.0  # the rtt-2 sample aged out
    core.add(sample(T0 + 1500, 40, 40, 100), now_ms=T0 + 1580)
    assert core.statistics(T0 + 1580).samples == 2  # add() dropped the aged one for good


def test_only_the_most_recent_samples_are_kept() -> None:
    core = TimeSyncCore(max_samples=4)
    feed(core, [sample(T0 + i * 100, 1, 1, 0) for i in range(3)])  # rtt 2, error 0
    feed(core, [sample(T0 + 1000 + i * 100, 30, 10, 0) for i in range(4)])  # rtt 40, error +10
    stats = core.statistics(T0 + 1340)
    # The three excellent samples were the oldest: pushed out by four newer ones.
    assert (stats.samples, stats.best_rtt_ms, stats.offset_ms) == (4, 40, 10.0)


def test_a_sample_from_the_future_does_not_count() -> None:
    core = TimeSyncCore()
    core.add(sample(T0, 5, 5, 300), now_ms=T0 + 10)
    # The wall clock stepped back a second: that sample measured an offset that no longer holds.
    assert not core.statistics(T0 - 990).synced
    assert core.statistics(T0 + 10).synced


def test_is_fresh_measures_from_the_newest_sample() -> None:
    core = TimeSyncCore()
    core.add(sample(T0, 5, 5, 0), now_ms=T0 + 10)
    core.add(sample(T0 + 60_000, 5, 5, 0), now_ms=T0 + 60_010)
    assert core.is_fresh(T0 + 60_010 + 120_000, max_age_ms=120_000)
    assert not core.is_fresh(T0 + 60_010 + 120_001, max_age_ms=120_000)
    assert core.statistics(T0 + 60_010).last_sync_ms == T0 + 60_010


# --- properties: the bound, and why low RTT wins ------------------------------------------------

_EPOCH_US: Final = T0 * 1000


@st.composite
def round_trips(draw: st.DrawFn, *, symmetric: bool) -> tuple[int, list[TimeSample]]:
    """A true offset (µs) and round trips with µs-precise true times read as whole ms.

    Each trip: the request takes ``out``; the server reads its clock ``read`` after it arrives and
    answers ``hold`` later; the answer takes ``back``. Symmetric trips have ``back == out`` and no
    server time.
    """
    offset_us = draw(st.integers(-5_000_000_000, 5_000_000_000))
    delay = st.integers(0, 400_000)
    trips = draw(st.lists(st.tuples(delay, delay, delay, delay), min_size=1, max_size=16))
    local_us = _EPOCH_US + draw(st.integers(0, 10**6))
    samples = []
    for out, back, read, hold in trips:
        if symmetric:
            back, read, hold = out, 0, 0
        server_read_us = local_us + out + read
        received_us = server_read_us + hold + back
        samples.append(
            TimeSample(
                sent_ms=local_us // 1000,
                received_ms=received_us // 1000,
                server_ms=(server_read_us + offset_us) // 1000,
            )
        )
        local_us = received_us + draw(st.integers(0, 2_000_000))
    return offset_us, samples


def _estimate(samples: list[TimeSample]) -> TimeSyncStatistics:
    core = TimeSyncCore(max_age_ms=10**9)
    # One true offset throughout: every interval holds the truth, so none contradicts another.
    assert not any(feed(core, samples))
    return core.statistics(samples[-1].received_ms)


@given(round_trips(symmetric=True))
def test_with_symmetric_delays_the_estimate_is_within_resolution_and_uncertainty(
    case: tuple[int, list[TimeSample]],
) -> None:
    offset_us, samples = case
    stats = _estimate(samples)
    error = abs(stats.offset_ms - offset_us / 1000)
    assert error <= stats.uncertainty_ms
    assert error < 1.0  # symmetric: only the three whole-ms readings can move it


@given(round_trips(symmetric=False))
def test_the_uncertainty_bounds_the_error_however_the_delays_are_split(
    case: tuple[int, list[TimeSample]],
) -> None:
    offset_us, samples = case
    stats = _estimate(samples)
    assert abs(stats.offset_ms - offset_us / 1000) <= stats.uncertainty_ms


@given(
    offset=st.integers(-(10**7), 10**7),
    base_ms=st.integers(1, 200),
    clean=st.integers(2, 4),
    jitter=st.lists(st.tuples(st.booleans(), st.integers(1, 2000)), min_size=1, max_size=12),
    order=st.randoms(use_true_random=False),
)
def test_two_clean_round_trips_beat_a_naive_mean_of_jittered_ones(
    offset: int,
    base_ms: int,
    clean: int,
    jitter: list[tuple[bool, int]],
    order: random.Random,
) -> None:
    """Some round trips are clean (``base`` each way); the rest queue on one leg (random which).

    Jitter only ever lengthens a trip, so the clean ones have the lowest RTT: two of them make
    the median exact, while the mean carries every jittered trip's error.
    """
    legs = [(base_ms, base_ms)] * clean + [
        (base_ms + extra, base_ms) if on_the_way_out else (base_ms, base_ms + extra)
        for on_the_way_out, extra in jitter
    ]
    order.shuffle(legs)
    samples = []
    t = T0
    for out, back in legs:
        samples.append(sample(t, out, back, offset))
        t += out + back
    stats = _estimate(samples)
    assert stats.offset_ms == offset
    naive_error = abs(statistics.fmean(s.offset_ms for s in samples) - offset)
    assert abs(stats.offset_ms - offset) <= naive_error
    if all(on_the_way_out for on_the_way_out, _ in jitter):
        assert naive_error > 0  # one-sided jitter cannot cancel out in the mean


def _spiky_leg_ms(rng: random.Random) -> int:
    """20 ms of wire, a little queueing, and one time in five a 50-300 ms stall."""
    stall = rng.uniform(50, 300) if rng.random() < 0.2 else 0.0
    return round(20 + rng.expovariate(1 / 5) + stall)


@settings(max_examples=10)
@given(seed=st.integers(0, 2**32 - 1))
def test_low_rtt_selection_beats_a_naive_mean_under_random_asymmetric_jitter(seed: int) -> None:
    rng = random.Random(seed)
    estimate_errors: list[float] = []
    naive_errors: list[float] = []
    for _ in range(100):
        offset = rng.randint(-5000, 5000)
        samples = []
        t = T0
        for _ in range(8):
            out, back = _spiky_leg_ms(rng), _spiky_leg_ms(rng)
            samples.append(sample(t, out, back, offset))
            t += out + back
        stats = _estimate(samples)
        assert abs(stats.offset_ms - offset) <= stats.uncertainty_ms
        estimate_errors.append(abs(stats.offset_ms - offset))
        naive_errors.append(abs(statistics.fmean(s.offset_ms for s in samples) - offset))
    # Typically ~1 ms against ~15 ms; a factor of 4 leaves a wide margin.
    assert statistics.fmean(estimate_errors) * 4 < statistics.fmean(naive_errors)


# --- sync_time ----------------------------------------------------------------------------------


@attrs.define
class ScriptedServer:
    """``GET /api/v3/time`` with scripted delays: each step is ``(out_ms, back_ms)`` or an error
    raised after 500 ms. Its clock runs ``offset_ms`` ahead of :func:`wall_clock_ms`."""

    offset_ms: int
    script: list[tuple[int, int] | Exception]
    calls: int = 0

    async def fetch(self) -> int:
        step = self.script[self.calls]
        self.calls += 1
        if isinstance(step, Exception):
            await trio.sleep(0.5)
            raise step
        out_ms, back_ms = step
        await trio.sleep(out_ms / 1000)
        server_ms = wall_clock_ms() + self.offset_ms
        await trio.sleep(back_ms / 1000)
        return server_ms


async def test_sync_time_skips_a_failure_and_estimates_within_the_bound(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    server = ScriptedServer(
        offset_ms=-1234,
        script=[
            (180, 70),  # rtt 250, error +55 (a cold connection)
            ConnectError("connection refused"),
            (25, 15),  # rtt 40, error +5
            (15, 45),  # rtt 60, error -15
            (40, 10),  # rtt 50, error +15
            (35, 35),  # rtt 70, error 0
        ],
    )
    core = TimeSyncCore()
    with caplog.at_level(logging.INFO, logger=LOGGER), trio.fail_after(10):
        stats = await sync_time(core, server.fetch, wall_clock_ms, samples=6)
    assert virtual_ms() == 250 + 500 + 40 + 60 + 50 + 70
    # Best three: +5, +15, -15 → median +5; bound 40/2 + 1 = 21; truth is 5 away.
    assert stats == TimeSyncStatistics(
        offset_ms=-1229.0,
        uncertainty_ms=21.0,
        samples=5,
        best_rtt_ms=40,
        last_sync_ms=T0 + 970,
        synced=True,
    )
    assert abs(stats.offset_ms - server.offset_ms) <= stats.uncertainty_ms
    assert core.server_time_ms(T0 + 970) == T0 + 970 - 1229
    assert [r.getMessage() for r in caplog.records] == [
        "timesync.sample_failed attempt=2 error=ConnectError",
        "timesync.synced offset_ms=-1229 uncertainty_ms=21 samples=5",
    ]
    assert [r.levelno for r in caplog.records] == [logging.INFO, logging.INFO]


async def test_sync_time_reraises_the_last_error_when_every_fetch_fails(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[Exception] = [
        ConnectError("refused"),
        ReadTimeoutError("no answer"),
        ExchangeUnavailableError(-1008, "Server is currently overloaded", http_status=503),
    ]
    server = ScriptedServer(offset_ms=0, script=list(errors))
    core = TimeSyncCore()
    with (
        caplog.at_level(logging.INFO, logger=LOGGER),
        trio.fail_after(10),
        pytest.raises(ExchangeUnavailableError) as info,
    ):
        await sync_time(core, server.fetch, wall_clock_ms, samples=3)
    assert info.value is errors[-1]
    assert virtual_ms() == 1500
    assert not core.statistics(wall_clock_ms()).synced
    assert [r.getMessage() for r in caplog.records] == [
        "timesync.sample_failed attempt=1 error=ConnectError",
        "timesync.sample_failed attempt=2 error=ReadTimeoutError",
        "timesync.sample_failed attempt=3 error=ExchangeUnavailableError",
    ]


async def test_sync_time_lets_non_genesis_errors_through(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = ScriptedServer(offset_ms=0, script=[ValueError("a bug"), (1, 1)])
    with trio.fail_after(10), pytest.raises(ValueError, match="a bug"):
        await sync_time(TimeSyncCore(), server.fetch, wall_clock_ms, samples=2)
    assert server.calls == 1


async def test_sync_time_needs_at_least_one_sample() -> None:
    async def never() -> int:
        raise AssertionError("not called")

    with pytest.raises(ValueError, match="samples"):
        await sync_time(TimeSyncCore(), never, wall_clock_ms, samples=0)


async def test_sync_time_logs_a_detected_clock_step(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    core = TimeSyncCore()
    feed(core, [sample(T0 - 1000 + i * 100, 0, 0, 0) for i in range(3)])
    server = ScriptedServer(offset_ms=-7000, script=[(10, 10), (10, 10)])
    with caplog.at_level(logging.INFO, logger=LOGGER), trio.fail_after(10):
        stats = await sync_time(core, server.fetch, wall_clock_ms, samples=2)
    assert (stats.offset_ms, stats.samples) == (-7000.0, 2)
    assert caplog.messages == [
        "timesync.step_detected attempt=1 offset_ms=-7000 previous_offset_ms=0",
        "timesync.synced offset_ms=-7000 uncertainty_ms=11 samples=2",
    ]


def stepping_clock(readings: list[int]) -> Callable[[], int]:
    """A wall clock that returns ``readings`` in turn (to step it backwards)."""
    it = iter(readings)
    return lambda: next(it)


async def test_a_round_trip_over_a_backwards_clock_step_is_dropped(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def fetch() -> int:
        await trio.sleep(0.01)
        return T0 + 5000

    core = TimeSyncCore()
    clock = stepping_clock([T0 + 1000, T0 + 10, T0 + 20, T0 + 40, T0 + 40])
    with caplog.at_level(logging.INFO, logger=LOGGER), trio.fail_after(10):
        stats = await sync_time(core, fetch, clock, samples=2)
    # First trip: 1000 → 10 (stepped back 990 ms), dropped. Second: 20 → 40, offset 4970.
    assert (stats.samples, stats.offset_ms, stats.best_rtt_ms) == (1, 4970.0, 20)
    assert [r.getMessage() for r in caplog.records] == [
        "timesync.clock_went_backwards attempt=1 by_ms=990",
        "timesync.synced offset_ms=4970 uncertainty_ms=11 samples=1",
    ]
    assert caplog.records[0].levelno == logging.WARNING

    caplog.clear()
    lone = TimeSyncCore()
    with caplog.at_level(logging.INFO, logger=LOGGER), trio.fail_after(10):
        stats = await sync_time(lone, fetch, stepping_clock([T0 + 1000, T0, T0]), samples=1)
    assert not stats.synced
    assert caplog.messages[-1] == "timesync.unsynced samples=0"


async def test_sync_time_against_the_simulator_with_skew_latency_and_a_503(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The simulator's clock runs 1500 ms ahead; every answer is held 100 ms after the server
    read its clock (the most asymmetric delay there is), and the first request gets a 503."""
    exchange = Exchange(default_symbols(), seed=7)
    clock = SimClock.start(T0)
    clock.skew_ms = 1500
    app = RestApp(exchange, clock=clock, faults=RestFaults(latency_s=0.1, error_burst=1))
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:

        async def fetch() -> int:
            response = await client.get("/api/v3/time")
            body = response.json()
            if response.status_code != 200:
                raise ExchangeUnavailableError(
                    body["code"], body["msg"], http_status=response.status_code
                )
            server_ms: int = body["serverTime"]
            return server_ms

        core = TimeSyncCore()
        with trio.fail_after(10):
            stats = await sync_time(core, fetch, wall_clock_ms, samples=6)
    assert virtual_ms() == 600
    assert stats.samples == 5
    assert stats.best_rtt_ms == 100
    # Each trip: read at send time, answer 100 ms later → offset 1500 - 50 = 1450, bound
    # 50 + 1 (the simulator truncates its ms, so 1449 is possible): the truth is on the edge.
    assert stats.offset_ms in (1449.0, 1449.5, 1450.0)
    assert abs(stats.offset_ms - 1500) <= stats.uncertainty_ms <= 52


@given(
    st.lists(
        st.tuples(st.integers(0, 1_000_000), st.integers(0, 500), st.integers(-5_000, 5_000)),
        min_size=1,
        max_size=20,
    ),
    st.lists(st.integers(0, 2_000_000), min_size=1, max_size=30),
)
def test_the_cached_estimate_equals_a_fresh_computation(
    raw: list[tuple[int, int, int]], nows: list[int]
) -> None:
    core = TimeSyncCore(max_age_ms=100_000)
    for received_ms, rtt_ms, offset_ms in sorted(raw):
        core.add(
            TimeSample(
                sent_ms=received_ms - rtt_ms,
                received_ms=received_ms,
                server_ms=received_ms - rtt_ms // 2 + offset_ms,
            ),
            received_ms,
        )
    for now_ms in nows:  # in any order: a wall clock may step backwards
        fresh = TimeSyncCore(max_age_ms=100_000)
        fresh._samples = list(core._samples)  # the same samples, nothing cached
        assert core.offset_ms(now_ms) == fresh.offset_ms(now_ms)
        assert core.uncertainty_ms(now_ms) == fresh.uncertainty_ms(now_ms)
        assert core.server_time_ms(now_ms) == fresh.server_time_ms(now_ms)
