"""Circuit breaker: the pure core against a reference model, then the Trio wrapper on the clock.

- The core is driven by a hypothesis ``RuleBasedStateMachine`` and checked, after every step,
  against :class:`ReferenceBreaker`: the spec written out plainly (lists, comparisons, a
  ``live`` flag per permit), sharing nothing with the core but the config and the event type.
  Time moves in multiples of 1/8 s (``tests.strategies.breaker_steps_s``), so the 30 s / 60 s
  edges are hit exactly.
- The wrapper runs under ``autojump_clock``; every test asserts exact virtual times and has a
  deadline on the trio clock.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import attrs
import pytest
import trio
import trio.testing
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from genesis.errors import (
    CircuitOpenError,
    ConfigError,
    ConnectError,
    ConnectionLostError,
    ExchangeProtocolError,
    ExchangeRejectedError,
    ExchangeUnavailableError,
    IpBannedError,
    OrderOutcomeUnknownError,
    RateLimitedError,
    ReadTimeoutError,
)
from genesis.models.events import BreakerState, BreakerTransition
from genesis.resilience.circuit_breaker import (
    BreakerConfig,
    BreakerStatistics,
    CircuitBreaker,
    CircuitBreakerCore,
    Outcome,
    Permit,
    classify,
)
from tests.strategies import breaker_configs, breaker_outcomes, breaker_steps_s

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

CLOSED = BreakerState.CLOSED
OPEN = BreakerState.OPEN
HALF_OPEN = BreakerState.HALF_OPEN
LOGGER = "genesis.resilience.circuit_breaker"


# --- the reference model --------------------------------------------------------------------


@attrs.define(eq=False)
class RefPermit:
    probe: bool
    live: bool = True
    """No transition happened since it was issued (else its outcome is ignored)."""


@attrs.frozen
class Refused:
    retry_after_s: float


@attrs.define
class ReferenceBreaker:
    """The spec, written plainly. Not optimised, not clever: compare it with the issue text."""

    name: str
    config: BreakerConfig
    state: BreakerState = CLOSED
    failure_times: list[float] = attrs.field(factory=list)
    opened_at: float | None = None
    probe_out: bool = False
    issued: list[RefPermit] = attrs.field(factory=list)
    transitions: list[BreakerTransition] = attrs.field(factory=list)
    """Produced and not yet compared with the core's (the machine clears it)."""
    transition_count: int = 0
    rejected: int = 0
    successes: int = 0
    failures: int = 0
    abandoned: int = 0
    stale: int = 0

    def _go(
        self, state: BreakerState, at: float, failures: int, reason: str, retry: float = 0.0
    ) -> None:
        self.transitions.append(
            BreakerTransition(
                name=self.name,
                previous=self.state,
                state=state,
                at=at,
                failures=failures,
                reason=reason,
                retry_after_s=retry,
            )
        )
        self.transition_count += 1
        self.state = state
        self.probe_out = False
        self.failure_times = []
        for permit in self.issued:
            permit.live = False
        if state is OPEN:
            self.opened_at = at
        elif state is CLOSED:
            self.opened_at = None

    def _open(self, now: float, failures: int, reason: str) -> None:
        self._go(OPEN, now, failures, reason, self.config.cooldown_s)

    def half_open_at(self) -> float:
        assert self.opened_at is not None
        return self.opened_at + self.config.cooldown_s

    def enter(self, now: float) -> RefPermit | Refused:
        if self.state is OPEN and now >= self.half_open_at():
            # Stamped with the moment the cooldown ended, not with the call's arrival.
            self._go(HALF_OPEN, self.half_open_at(), 0, "cooldown elapsed")
        if self.state is OPEN:
            self.rejected += 1
            return Refused(self.half_open_at() - now)
        if self.state is HALF_OPEN:
            if self.probe_out:
                self.rejected += 1
                return Refused(self.config.probe_retry_after_s)
            self.probe_out = True
        permit = RefPermit(probe=self.state is HALF_OPEN)
        self.issued.append(permit)
        return permit

    def complete(self, permit: RefPermit, outcome: Outcome, now: float) -> None:
        """The one outcome of ``permit`` (or a repeat from an earlier round: ignored)."""
        if outcome is Outcome.SUCCESS:
            self.successes += 1
        elif outcome is Outcome.FAILURE:
            self.failures += 1
        else:
            self.abandoned += 1
        if not permit.live:
            self.stale += 1
            return
        if permit.probe:
            if outcome is Outcome.SUCCESS:
                self._go(CLOSED, now, 0, "probe ok")
            elif outcome is Outcome.FAILURE:
                self._open(now, 1, "probe failed")
            else:
                self.probe_out = False
            return
        if outcome is Outcome.FAILURE:
            self.failure_times.append(now)
            recent = self.in_window(now)
            self.failure_times = recent
            if len(recent) >= self.config.failure_threshold:
                window = self.config.window_s
                self._open(now, len(recent), f"{len(recent)} failures in {window:g} s")

    def in_window(self, now: float) -> list[float]:
        return [t for t in self.failure_times if now - t < self.config.window_s]

    def effective_state(self, now: float) -> BreakerState:
        if self.state is OPEN and now >= self.half_open_at():
            return HALF_OPEN
        return self.state

    def retry_after_s(self, now: float) -> float:
        if self.state is OPEN and now < self.half_open_at():
            return self.half_open_at() - now
        if self.state is HALF_OPEN and self.probe_out:
            return self.config.probe_retry_after_s
        return 0.0

    def statistics(self, now: float) -> BreakerStatistics:
        return BreakerStatistics(
            name=self.name,
            state=self.effective_state(now),
            failures_in_window=len(self.in_window(now)),
            opened_at=self.opened_at,
            retry_after_s=self.retry_after_s(now),
            transitions=self.transition_count,
            rejected=self.rejected,
            successes=self.successes,
            failures=self.failures,
            abandoned=self.abandoned,
            stale=self.stale,
            probe_out=self.probe_out,
        )


# --- the machine ------------------------------------------------------------------------------

STEPS_S = breaker_steps_s()
OUTCOMES = breaker_outcomes()


class BreakerMachine(RuleBasedStateMachine):
    """Drives :class:`CircuitBreakerCore` and :class:`ReferenceBreaker` with the same steps.

    Every rule first lets ``dt`` seconds pass, so time keeps moving while calls interleave.
    """

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.core = CircuitBreakerCore("rest")
        self.model = ReferenceBreaker("rest", BreakerConfig())
        self.outstanding: list[tuple[Permit, RefPermit]] = []
        self.finished: list[tuple[Permit, RefPermit]] = []

    @initialize(config=breaker_configs(), start=st.sampled_from([0.0, 1000.0]))
    def configure(self, config: BreakerConfig, start: float) -> None:
        self.now = start
        self.core = CircuitBreakerCore("rest", config)
        self.model = ReferenceBreaker("rest", config)

    def _enter(self) -> None:
        expected = self.model.enter(self.now)
        if isinstance(expected, Refused):
            with pytest.raises(CircuitOpenError) as info:
                self.core.try_enter(self.now)
            assert info.value.name == "rest"
            assert info.value.retry_after_s == expected.retry_after_s
            assert info.value.retry_after_s > 0
        else:
            permit = self.core.try_enter(self.now)
            assert permit.probe == expected.probe
            self.outstanding.append((permit, expected))

    def _complete(self, index: int, outcome: Outcome) -> None:
        permit, ref = self.outstanding.pop(index % len(self.outstanding))
        self.model.complete(ref, outcome, self.now)
        self.core.record(permit, outcome, self.now)
        self.finished.append((permit, ref))

    @rule(dt=STEPS_S)
    def enter(self, dt: float) -> None:
        self.now += dt
        self._enter()

    @precondition(lambda self: bool(self.outstanding))
    @rule(index=st.integers(min_value=0, max_value=100), outcome=OUTCOMES, dt=STEPS_S)
    def complete(self, index: int, outcome: Outcome, dt: float) -> None:
        self.now += dt
        self._complete(index, outcome)

    @rule(calls=st.integers(min_value=1, max_value=6), spacing=st.sampled_from([0.0, 1.0, 7.5]))
    def failing_burst(self, calls: int, spacing: float) -> None:
        """Several calls in a row, each failing at once (what a dead exchange looks like)."""
        for _ in range(calls):
            self.now += spacing
            before = len(self.outstanding)
            self._enter()
            if len(self.outstanding) > before:
                self._complete(len(self.outstanding) - 1, Outcome.FAILURE)

    @precondition(lambda self: any(not ref.live for _, ref in self.finished))
    @rule(index=st.integers(min_value=0, max_value=100), outcome=OUTCOMES, dt=STEPS_S)
    def repeat_a_stale_outcome(self, index: int, outcome: Outcome, dt: float) -> None:
        """A permit from an earlier round reports again: it must change nothing."""
        self.now += dt
        stale = [(permit, ref) for permit, ref in self.finished if not ref.live]
        permit, ref = stale[index % len(stale)]
        self.model.complete(ref, outcome, self.now)
        self.core.record(permit, outcome, self.now)

    @precondition(lambda self: self.model.state is CLOSED and bool(self.model.failure_times))
    @rule(which=st.integers(min_value=0, max_value=100), early=st.booleans())
    def fail_at_a_window_edge(self, which: int, early: bool) -> None:
        """A failure exactly when an earlier one leaves the window (or 1/8 s before that)."""
        window_s = self.model.config.window_s
        edges = [t + window_s for t in self.model.failure_times if t + window_s >= self.now]
        if edges:
            self.now = max(self.now, edges[which % len(edges)] - (0.125 if early else 0.0))
        self.failing_burst(calls=1, spacing=0.0)

    @precondition(lambda self: self.model.state is OPEN)
    @rule(early=st.booleans())
    def enter_at_the_cooldown_edge(self, early: bool) -> None:
        """A call exactly when the cooldown ends (or 1/8 s before that)."""
        self.now = max(self.now, self.model.half_open_at() - (0.125 if early else 0.0))
        self._enter()

    @invariant()
    def matches_the_reference(self) -> None:
        assert self.core.state(self.now) is self.model.effective_state(self.now)
        assert self.core.statistics(self.now) == self.model.statistics(self.now)

    @invariant()
    def every_transition_matches(self) -> None:
        produced = list(self.core.drain_transitions())
        expected = self.model.transitions
        assert produced == expected
        expected.clear()

    @invariant()
    def at_most_one_probe_is_out(self) -> None:
        live_probes = [ref for _, ref in self.outstanding if ref.probe and ref.live]
        assert len(live_probes) <= 1
        assert len(live_probes) == (1 if self.model.probe_out else 0)


TestBreakerMachine = BreakerMachine.TestCase
# A run costs ~20 ms: explore more than the ci profile (60) does, so every rule combines.
TestBreakerMachine.settings = settings(
    stateful_step_count=100, max_examples=max(150, settings().max_examples)
)


# --- the core: worked examples ----------------------------------------------------------------


def _fail_n(core: CircuitBreakerCore, times: list[float]) -> None:
    for t in times:
        core.record_failure(core.try_enter(t), t)


def test_breaker_opens_on_the_fifth_failure_within_thirty_seconds() -> None:
    core = CircuitBreakerCore("rest")
    _fail_n(core, [0.0, 1.0, 2.0, 3.0])
    assert core.state(3.0) is CLOSED
    # The failure at 0.0 leaves the window at exactly 30.0: four in the window, still closed.
    _fail_n(core, [30.0])
    assert core.state(30.0) is CLOSED
    assert core.failures_in_window(30.0) == 4
    _fail_n(core, [30.0])
    assert core.drain_transitions() == (
        BreakerTransition(
            name="rest",
            previous=CLOSED,
            state=OPEN,
            at=30.0,
            failures=5,
            reason="5 failures in 30 s",
            retry_after_s=60.0,
        ),
    )
    with pytest.raises(CircuitOpenError) as info:
        core.try_enter(45.5)
    assert info.value.retry_after_s == 44.5


def test_breaker_success_while_closed_does_not_erase_failures() -> None:
    core = CircuitBreakerCore("rest")
    for t in (0.0, 1.0, 2.0, 3.0, 4.0):
        core.record_failure(core.try_enter(t), t)
        if t < 4.0:
            core.record_success(core.try_enter(t + 0.5), t + 0.5)
    assert core.state(4.0) is OPEN


def test_breaker_half_opens_after_exactly_the_cooldown() -> None:
    core = CircuitBreakerCore("rest", BreakerConfig(failure_threshold=1))
    _fail_n(core, [10.0])
    core.drain_transitions()
    with pytest.raises(CircuitOpenError) as info:
        core.try_enter(69.875)
    assert info.value.retry_after_s == 0.125
    assert core.state(69.875) is OPEN
    assert core.state(70.0) is HALF_OPEN  # a query produces no transition ...
    assert core.drain_transitions() == ()
    probe = core.try_enter(75.0)  # ... the first call after the cooldown does, stamped 70.0
    assert probe.probe
    (half_open,) = core.drain_transitions()
    assert (half_open.previous, half_open.state, half_open.at) == (OPEN, HALF_OPEN, 70.0)
    with pytest.raises(CircuitOpenError) as second:
        core.try_enter(75.0)
    assert second.value.retry_after_s == BreakerConfig().probe_retry_after_s
    core.record_failure(probe, 76.0)
    (reopened,) = core.drain_transitions()
    assert (reopened.state, reopened.at, reopened.reason, reopened.retry_after_s) == (
        OPEN,
        76.0,
        "probe failed",
        60.0,
    )
    assert core.statistics(76.0).opened_at == 76.0


def test_a_slow_failure_from_before_the_opening_does_not_extend_it() -> None:
    core = CircuitBreakerCore("rest", BreakerConfig(failure_threshold=2))
    slow = core.try_enter(0.0)  # admitted while closed; its answer comes much later
    _fail_n(core, [1.0, 2.0])
    assert core.state(2.0) is OPEN
    core.record_failure(slow, 30.0)  # arrives while open: stale
    assert core.statistics(30.0).opened_at == 2.0
    assert core.try_enter(62.0).probe  # half-open at 2 + 60, not 30 + 60
    assert core.statistics(62.0).stale == 1


def test_stale_permits_never_close_or_reopen_a_half_open_round() -> None:
    core = CircuitBreakerCore("rest", BreakerConfig(failure_threshold=1, cooldown_s=10.0))
    early = core.try_enter(0.0)
    _fail_n(core, [0.0])
    first_probe = core.try_enter(10.0)
    core.record_failure(first_probe, 11.0)  # reopened until 21
    second_probe = core.try_enter(21.0)
    core.drain_transitions()
    core.record_success(early, 21.5)  # a closed-era permit: must not close it
    core.record_failure(early, 21.5)  # nor reopen it
    core.record_success(first_probe, 21.5)  # the previous round's probe: must not close it
    core.record_abandoned(first_probe, 21.5)  # nor free the current probe's slot
    assert core.state(21.5) is HALF_OPEN
    assert core.drain_transitions() == ()
    with pytest.raises(CircuitOpenError):
        core.try_enter(21.5)
    core.record_success(second_probe, 22.0)
    assert core.state(22.0) is CLOSED
    stats = core.statistics(22.0)
    assert (stats.stale, stats.rejected, stats.transitions) == (4, 1, 5)


def test_abandoning_the_probe_frees_its_slot_without_a_verdict() -> None:
    core = CircuitBreakerCore("rest", BreakerConfig(failure_threshold=1, cooldown_s=10.0))
    _fail_n(core, [0.0])
    probe = core.try_enter(10.0)
    core.record_abandoned(probe, 10.5)
    assert core.state(10.5) is HALF_OPEN
    assert core.try_enter(10.5) is not probe


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failure_threshold": 0},
        {"window_s": 0.0},
        {"cooldown_s": -1.0},
        {"probe_retry_after_s": 0.0},
        {"publish_timeout_s": 0.0},
        {"window_s": float("nan")},
    ],
)
def test_invalid_breaker_configs_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BreakerConfig(**kwargs)  # type: ignore[arg-type]  # ints and floats mixed on purpose


# --- classification -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (ConnectError("refused"), Outcome.FAILURE),
        (ReadTimeoutError("no answer"), Outcome.FAILURE),
        (ConnectionLostError("reset"), Outcome.FAILURE),
        (ExchangeUnavailableError(-1001, "disconnected", http_status=503), Outcome.FAILURE),
        (OrderOutcomeUnknownError("c1", "timeout", sent_at_ms=1), Outcome.FAILURE),
        (RateLimitedError("too many", retry_after_s=5.0), Outcome.FAILURE),
        (IpBannedError("banned", retry_after_s=120.0), Outcome.FAILURE),
        (ExchangeProtocolError("garbage"), Outcome.FAILURE),
        (ExchangeRejectedError(-1003, "too many", http_status=429), Outcome.FAILURE),
        (ExchangeRejectedError(-1000, "unknown", http_status=502), Outcome.FAILURE),
        (ExchangeRejectedError(-2010, "insufficient balance", http_status=400), Outcome.SUCCESS),
        (
            ExchangeRejectedError(-1013, "Filter failure: LOT_SIZE", http_status=400),
            Outcome.SUCCESS,
        ),
        (ExchangeRejectedError(-1121, "Invalid symbol.", http_status=404), Outcome.SUCCESS),
        (ExchangeRejectedError(-2011, "Unknown order sent."), Outcome.SUCCESS),
        (CircuitOpenError("streams", retry_after_s=1.0), Outcome.ABANDONED),
        (ConfigError(["no key"]), Outcome.ABANDONED),
        (trio.TooSlowError(), Outcome.ABANDONED),
        (ValueError("a bug"), Outcome.ABANDONED),
        (KeyboardInterrupt(), Outcome.ABANDONED),
        (ExceptionGroup("g", [ValueError(), ConnectError("x")]), Outcome.FAILURE),
        (
            ExceptionGroup("g", [ExchangeRejectedError(-2010, "no", http_status=400)]),
            Outcome.SUCCESS,
        ),
        (ExceptionGroup("g", [ValueError(), ExchangeRejectedError(-1, "x")]), Outcome.ABANDONED),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_classify(exc: BaseException, outcome: Outcome) -> None:
    assert classify(exc) is outcome


async def test_classify_treats_cancellation_as_abandoned() -> None:
    caught: list[BaseException] = []
    with trio.CancelScope() as cancel_scope:
        cancel_scope.cancel()
        try:
            await trio.lowlevel.checkpoint()
        except trio.Cancelled as exc:
            caught.append(exc)
            raise  # only looked at, never swallowed
    assert cancel_scope.cancelled_caught
    assert classify(caught[0]) is Outcome.ABANDONED


# --- the Trio wrapper ---------------------------------------------------------------------------


@attrs.define
class RecordingSink:
    """Records ``(trio time, event)``; optionally takes ``delay_s`` per event or raises."""

    delay_s: float = 0.0
    error: Exception | None = None
    received: list[tuple[float, BreakerTransition]] = attrs.field(factory=list)

    async def __call__(self, event: BreakerTransition, /) -> None:
        self.received.append((trio.current_time(), event))
        await trio.sleep(self.delay_s)
        if self.error is not None:
            raise self.error

    def steps(self) -> list[tuple[float, BreakerState, BreakerState, float]]:
        return [(t, e.previous, e.state, e.at) for t, e in self.received]


def raiser(exc: BaseException, after_s: float = 0.0) -> Callable[[], Awaitable[None]]:
    async def fn() -> None:
        await trio.sleep(after_s)
        raise exc

    return fn


def breaker_records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]


async def test_burst_opens_it_then_one_probe_after_sixty_seconds_closes_it(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    sink = RecordingSink()
    breaker = CircuitBreaker("rest", on_transition=sink)
    probe_result: list[str] = []
    with trio.fail_after(600):
        for i in range(5):  # calls at 0 … 4, each failing half a second in
            await trio.sleep_until(float(i))
            err = ConnectError(f"refused {i}")
            with pytest.raises(ConnectError) as info:
                await breaker.call(raiser(err, 0.5))
            assert info.value is err  # unchanged
        assert breaker.state is OPEN  # opened at 4.5
        await trio.sleep_until(10.0)
        with pytest.raises(CircuitOpenError) as fast:
            await breaker.call(raiser(AssertionError("must not run")))
        assert fast.value.retry_after_s == 60.0 - (10.0 - 4.5)
        assert trio.current_time() == 10.0

        await trio.sleep_until(64.5)  # exactly 60 s after it opened
        async with trio.open_nursery() as nursery:

            async def probe() -> None:
                async with breaker.guard():
                    await trio.sleep(2.0)
                probe_result.append("ok")

            nursery.start_soon(probe)
            await trio.testing.wait_all_tasks_blocked()
            assert breaker.statistics().probe_out
            with pytest.raises(CircuitOpenError) as second:
                async with breaker.guard():
                    raise AssertionError("the second call must not run")
            assert second.value.retry_after_s == 1.0
            assert trio.current_time() == 64.5
        assert trio.current_time() == 66.5
        assert probe_result == ["ok"]
        assert breaker.state is CLOSED
        await breaker.call(trio.sleep, 0)

    assert sink.steps() == [(4.5, CLOSED, OPEN, 4.5), (64.5, OPEN, HALF_OPEN, 64.5),
                            (66.5, HALF_OPEN, CLOSED, 66.5)]  # fmt: skip
    assert sink.received[0][1] == BreakerTransition(
        name="rest",
        previous=CLOSED,
        state=OPEN,
        at=4.5,
        failures=5,
        reason="5 failures in 30 s",
        retry_after_s=60.0,
    )
    assert breaker_records(caplog) == [
        (
            logging.WARNING,
            "breaker.transition name=rest from=closed to=open failures=5 reason=5 failures in 30 s",
        ),
        (
            logging.INFO,
            "breaker.transition name=rest from=open to=half_open failures=0 "
            "reason=cooldown elapsed",
        ),
        (
            logging.INFO,
            "breaker.transition name=rest from=half_open to=closed failures=0 reason=probe ok",
        ),
    ]
    stats = breaker.statistics()
    assert (stats.failures, stats.successes, stats.rejected, stats.transitions) == (5, 2, 2, 3)


@pytest.mark.parametrize(
    "rejection",
    [
        ExchangeRejectedError(-2010, "Account has insufficient balance", http_status=400),
        ExchangeRejectedError(-1013, "Filter failure: PRICE_FILTER", http_status=400),
        ExchangeRejectedError(-1121, "Invalid symbol.", http_status=404),
    ],
    ids=["-2010", "-1013", "404"],
)
async def test_business_rejections_never_open_it(
    autojump_clock: trio.abc.Clock, rejection: ExchangeRejectedError
) -> None:
    sink = RecordingSink()
    breaker = CircuitBreaker("rest", on_transition=sink)
    with trio.fail_after(60):
        for _ in range(20):
            with pytest.raises(ExchangeRejectedError) as info:
                await breaker.call(raiser(rejection, 0.1))
            assert info.value is rejection
    stats = breaker.statistics()
    assert stats.state is CLOSED
    assert (stats.failures_in_window, stats.successes, stats.failures) == (0, 20, 0)
    assert sink.received == []


async def test_rejections_between_failures_do_not_reset_the_count(
    autojump_clock: trio.abc.Clock,
) -> None:
    breaker = CircuitBreaker("rest")
    rejection = ExchangeRejectedError(-2010, "insufficient balance", http_status=400)
    with trio.fail_after(60):
        for i in range(5):
            with pytest.raises(ReadTimeoutError):
                await breaker.call(raiser(ReadTimeoutError("slow"), 1.0))
            assert breaker.state is (OPEN if i == 4 else CLOSED)
            if i < 4:
                with pytest.raises(ExchangeRejectedError):
                    await breaker.call(raiser(rejection, 1.0))
    assert trio.current_time() == 9.0
    assert breaker.statistics().opened_at == 9.0


async def test_a_cancelled_probe_releases_the_slot(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    sink = RecordingSink()
    breaker = CircuitBreaker(
        "ws_api", BreakerConfig(failure_threshold=1, cooldown_s=10.0), on_transition=sink
    )
    with trio.fail_after(60):
        with pytest.raises(ConnectionLostError):
            await breaker.call(raiser(ConnectionLostError("reset")))
        await trio.sleep_until(10.0)
        async with trio.open_nursery() as nursery:
            probe_scope = trio.CancelScope()

            async def hung_probe() -> None:
                with probe_scope:
                    async with breaker.guard():
                        await trio.sleep_forever()

            nursery.start_soon(hung_probe)
            await trio.sleep(0.5)
            with pytest.raises(CircuitOpenError):
                await breaker.call(trio.sleep, 0)
            probe_scope.cancel()
        assert probe_scope.cancelled_caught
        assert trio.current_time() == 10.5
        assert breaker.state is HALF_OPEN
        assert not breaker.statistics().probe_out
        await breaker.call(trio.sleep, 1.0)  # the next caller gets the slot and closes it
        assert breaker.state is CLOSED
    assert sink.steps() == [(0.0, CLOSED, OPEN, 0.0), (10.0, OPEN, HALF_OPEN, 10.0),
                            (11.5, HALF_OPEN, CLOSED, 11.5)]  # fmt: skip
    stats = breaker.statistics()
    assert (stats.abandoned, stats.rejected) == (1, 1)


async def test_refusal_is_a_checkpoint(autojump_clock: trio.abc.Clock) -> None:
    breaker = CircuitBreaker("rest", BreakerConfig(failure_threshold=1))
    with pytest.raises(ConnectError):
        await breaker.call(raiser(ConnectError("refused")))
    with trio.testing.assert_checkpoints(), pytest.raises(CircuitOpenError):
        async with breaker.guard():
            raise AssertionError("must not run")


async def test_transitions_reach_a_slow_sink_in_order(autojump_clock: trio.abc.Clock) -> None:
    sink = RecordingSink(delay_s=3.0)
    config = BreakerConfig(failure_threshold=1, cooldown_s=1.0, publish_timeout_s=10.0)
    breaker = CircuitBreaker("rest", config, on_transition=sink)
    returned: dict[str, float] = {}

    async def first() -> None:  # opens it at 0; publishing takes 3 s per event
        with pytest.raises(ConnectError):
            await breaker.call(raiser(ConnectError("a")))
        returned["first"] = trio.current_time()

    async def second() -> None:  # at 1.0: half-opens it, the probe fails, reopens it
        await trio.sleep(1.0)
        with pytest.raises(ConnectError):
            await breaker.call(raiser(ConnectError("b")))
        returned["second"] = trio.current_time()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(first)
            nursery.start_soon(second)
    # The second task's transitions join the queue the first one is delivering: in order.
    assert sink.steps() == [(0.0, CLOSED, OPEN, 0.0), (3.0, OPEN, HALF_OPEN, 1.0),
                            (6.0, HALF_OPEN, OPEN, 1.0)]  # fmt: skip
    assert returned == {"second": 1.0, "first": 9.0}


async def test_publishing_is_bounded_and_survives_cancellation(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    sink = RecordingSink(delay_s=0.5)
    breaker = CircuitBreaker("rest", BreakerConfig(failure_threshold=1), on_transition=sink)
    with trio.fail_after(60):
        # The caller's deadline passes while the opening is being published: it is delivered
        # anyway (shielded), and the call's own error propagates.
        with trio.move_on_after(0.25) as deadline, pytest.raises(ConnectError):
            await breaker.call(raiser(ConnectError("refused")))
        assert not deadline.cancelled_caught
        assert trio.current_time() == 0.5
        assert sink.steps() == [(0.0, CLOSED, OPEN, 0.0)]

        hanging = RecordingSink(delay_s=float("inf"))
        stuck = CircuitBreaker("streams", BreakerConfig(failure_threshold=1), on_transition=hanging)
        with pytest.raises(ReadTimeoutError):
            await stuck.call(raiser(ReadTimeoutError("slow")))
        assert trio.current_time() == 0.5 + BreakerConfig().publish_timeout_s
    assert (
        logging.WARNING,
        "breaker.publish_timeout name=streams pending=0 timeout_s=1",
    ) in breaker_records(caplog)


async def test_a_failing_sink_is_logged_and_does_not_change_the_call(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    sink = RecordingSink(error=trio.ClosedResourceError("the event bus is closed"))
    breaker = CircuitBreaker(
        "rest", BreakerConfig(failure_threshold=1, cooldown_s=5.0), on_transition=sink
    )
    with trio.fail_after(60):
        with pytest.raises(ConnectError):
            await breaker.call(raiser(ConnectError("refused")))
        await trio.sleep(5.0)
        await breaker.call(trio.sleep, 0)  # the probe succeeds despite the failing sink
    assert breaker.state is CLOSED
    assert len(sink.received) == 3
    failed = [r for r in caplog.records if r.getMessage().startswith("breaker.publish_failed ")]
    assert len(failed) == 3
    assert all(r.levelno == logging.ERROR and r.exc_info for r in failed)


async def test_without_a_sink_transitions_are_only_logged(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    breaker = CircuitBreaker("streams", BreakerConfig(failure_threshold=2, window_s=1.0))
    with trio.fail_after(60):
        for delay in (0.0, 1.0, 0.5):  # failures at 0.0, 1.0 (the first expired), 1.5
            await trio.sleep(delay)
            with pytest.raises(ConnectError):
                await breaker.call(raiser(ConnectError("refused")))
    assert breaker.name == "streams"
    assert breaker.config.window_s == 1.0
    assert breaker_records(caplog) == [
        (
            logging.WARNING,
            "breaker.transition name=streams from=closed to=open failures=2 "
            "reason=2 failures in 1 s",
        )
    ]
    assert breaker.statistics().opened_at == 1.5


async def test_call_passes_arguments_and_returns_the_result(
    autojump_clock: trio.abc.Clock,
) -> None:
    breaker = CircuitBreaker("rest", BreakerConfig(failure_threshold=1))
    called: list[tuple[str, int]] = []

    async def fetch(symbol: str, limit: int) -> str:
        called.append((symbol, limit))
        await trio.sleep(0.25)
        return f"{symbol}:{limit}"

    with trio.fail_after(60):
        assert await breaker.call(fetch, "BTCUSDT", 5) == "BTCUSDT:5"
        with pytest.raises(IpBannedError):
            await breaker.call(raiser(IpBannedError("banned", retry_after_s=120.0)))
        with pytest.raises(CircuitOpenError) as info:
            await breaker.call(fetch, "ETHUSDT", 1)
    assert info.value.retry_after_s == 60.0
    assert called == [("BTCUSDT", 5)]  # refused: fetch was not called
    assert trio.current_time() == 0.25
