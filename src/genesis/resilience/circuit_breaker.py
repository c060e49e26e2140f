"""A circuit breaker per exchange surface: a pure core that takes ``now``, plus a thin Trio wrapper.

One breaker guards one surface (``rest``, ``streams``, ``ws_api``). The rules::

             failure_threshold failures in window_s          cooldown_s elapsed
    CLOSED ───────────────────────────────────────► OPEN ────────────────────► HALF_OPEN
       ▲                                              ▲        probe failed        │
       │                                              └────────────────────────────┤
       └─────────────────────────── probe succeeded ───────────────────────────────┘

- CLOSED: every call goes through. A failure at time ``t`` counts in the window
  ``[t, t + window_s)``; the ``failure_threshold``-th failure inside one window opens the breaker.
  A success does not erase earlier failures: a flapping exchange (fail, ok, fail, ok …) still
  opens it, which is what "5 failures within 30 s" says.
- OPEN: calls fail fast with :class:`~genesis.errors.CircuitOpenError` carrying the time left.
- HALF_OPEN, from exactly ``opened_at + cooldown_s``: exactly one call (the probe) goes through at
  a time. Its success closes the breaker with an empty window; its failure reopens it for another
  ``cooldown_s``; an abandoned probe (cancelled, or failed for a reason that says nothing about
  the exchange) frees the slot for the next caller without a verdict.

What counts (:func:`classify`): transport errors and timeouts, 5xx, 429/418, unknown outcomes and
undecodable answers are failures. A business rejection (-2010, -1013, any other 4xx) is a
*success*: the exchange is healthy and answered, the request was wrong. Cancellation, a
:class:`~genesis.errors.CircuitOpenError` from another breaker and our own bugs are *abandoned*.

Every call is admitted with a :class:`Permit` and must report exactly one outcome for it. A
permit's outcome counts only if the breaker has not changed state since the permit was issued:
a slow call admitted before the breaker opened cannot extend the open period when it finally
fails, nor reopen or close a later half-open round, nor count in a later closed period; a stale
probe cannot close a newer round.

:class:`CircuitBreakerCore` is the pure, synchronous state machine (no clock, no I/O): every
method takes ``now`` (Trio time, seconds; it must not decrease) and transitions are collected as
:class:`~genesis.models.events.BreakerTransition` events, taken with
:meth:`~CircuitBreakerCore.drain_transitions`.
:class:`CircuitBreaker` adds the Trio clock, the ``guard()`` context manager, logging and
publishing to an injected :class:`TransitionSink` (the event bus's ``publish``).
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final, Protocol, TypeVar, TypeVarTuple

import attrs
import trio

from genesis.errors import (
    CircuitOpenError,
    ExchangeProtocolError,
    ExchangeRejectedError,
    ExchangeUnavailableError,
    IpBannedError,
    OrderOutcomeUnknownError,
    RateLimitedError,
    TransportError,
)
from genesis.models.events import BreakerState, BreakerTransition

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

__all__ = [
    "BreakerConfig",
    "BreakerStatistics",
    "CircuitBreaker",
    "CircuitBreakerCore",
    "Outcome",
    "Permit",
    "TransitionSink",
    "classify",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

_CLOSED: Final = BreakerState.CLOSED
_OPEN: Final = BreakerState.OPEN
_HALF_OPEN: Final = BreakerState.HALF_OPEN
_NO_TRANSITIONS: Final[tuple[BreakerTransition, ...]] = ()


@attrs.frozen(kw_only=True)
class BreakerConfig:
    """The breaker's numbers (the defaults are the spec's).

    Attributes:
        failure_threshold: Failures within ``window_s`` that open the breaker.
        window_s: Length of the sliding failure window; a failure at ``t`` counts until
            ``t + window_s`` (exclusive).
        cooldown_s: How long it stays open before half-opening.
        probe_retry_after_s: The ``retry_after_s`` told to callers refused while the half-open
            probe is out. How long the probe takes is unknown, so this is a hint to come back
            soon, not a promise.
        publish_timeout_s: Bound on publishing transitions to the sink when leaving a guarded
            call (the publishing is shielded from cancellation up to this long).
    """

    failure_threshold: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    window_s: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    cooldown_s: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    probe_retry_after_s: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    publish_timeout_s: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))


@attrs.frozen(eq=False)
class Permit:
    """Admission of one call; report exactly one outcome for it. Compared by identity.

    Attributes:
        epoch: The breaker's transition count when it was issued.
        probe: The half-open probe (else a call admitted while closed).
    """

    epoch: int
    probe: bool


class Outcome(enum.Enum):
    """What a finished call says about the exchange's health."""

    SUCCESS = "success"
    """The exchange answered (even if it rejected the request)."""
    FAILURE = "failure"
    """The exchange or the path to it is unhealthy."""
    ABANDONED = "abandoned"
    """No verdict: cancelled, refused locally, or our own bug."""


@attrs.frozen(kw_only=True)
class BreakerStatistics:
    """A snapshot of one breaker.

    Attributes:
        name: The breaker (``rest``, ``streams``, ``ws_api``).
        state: The state a call arriving now would find (``HALF_OPEN`` from exactly
            ``opened_at + cooldown_s``, even before a call produced that transition).
        failures_in_window: Failures in the current window; cleared when it opens.
        opened_at: When it last opened (``None`` while closed).
        retry_after_s: How long a refused caller should wait now (``0`` when a call would pass).
        transitions: Transitions produced so far.
        rejected: Calls refused fast (open, or half-open with the probe out).
        successes: Successes reported (including stale ones).
        failures: Failures reported (including stale ones).
        abandoned: Calls abandoned without a verdict.
        stale: Outcomes ignored because the breaker changed state after their permit was issued.
        probe_out: A half-open probe is in flight.
    """

    name: str
    state: BreakerState
    failures_in_window: int
    opened_at: float | None
    retry_after_s: float
    transitions: int
    rejected: int
    successes: int
    failures: int
    abandoned: int
    stale: int
    probe_out: bool


@attrs.define(eq=False)
class CircuitBreakerCore:
    """The breaker's state machine: synchronous, no clock, no I/O; every method takes ``now``.

    ``now`` is Trio time in seconds and must not decrease between calls. Transitions are queued
    for :meth:`drain_transitions`; drain after every call (the Trio wrapper does), or they pile
    up. The OPEN → HALF_OPEN transition is produced by the first :meth:`try_enter` at or after
    ``opened_at + cooldown_s``, and is stamped with that exact time (``at``), so the timeline
    does not depend on when the next call happened to arrive; :meth:`state` already reports
    ``HALF_OPEN`` from that moment.

    Args:
        name: The breaker's name, carried by its errors and events.
        config: Its numbers.
    """

    name: str
    config: BreakerConfig = attrs.field(factory=BreakerConfig)
    _state: BreakerState = attrs.field(default=_CLOSED, init=False)
    _epoch: int = attrs.field(default=0, init=False)
    _closed_permit: Permit | None = attrs.field(init=False)
    """The permit every call shares while CLOSED (``None`` otherwise): one per closed period."""
    _probe: Permit | None = attrs.field(default=None, init=False)
    _window: deque[float] = attrs.field(factory=deque, init=False)
    _opened_at: float | None = attrs.field(default=None, init=False)
    _half_open_at: float = attrs.field(default=math.inf, init=False)
    _pending: list[BreakerTransition] = attrs.field(factory=list, init=False)
    _transitions: int = attrs.field(default=0, init=False)
    _rejected: int = attrs.field(default=0, init=False)
    _successes: int = attrs.field(default=0, init=False)
    _failures: int = attrs.field(default=0, init=False)
    _abandoned: int = attrs.field(default=0, init=False)
    _stale: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        self._closed_permit = Permit(0, probe=False)

    # -- admission ---------------------------------------------------------------------------

    def try_enter(self, now: float) -> Permit:
        """Admit a call at ``now``, or refuse it.

        Returns:
            The permit to report the call's outcome with. While closed every call shares one
            permit object (admission allocates nothing); the half-open probe gets its own.

        Raises:
            CircuitOpenError: open (``retry_after_s`` is the time left until it half-opens), or
                half-open with the probe out (``retry_after_s`` is
                ``config.probe_retry_after_s``).
        """
        permit = self._closed_permit
        if permit is not None:
            return permit
        if self._state is _OPEN:
            if now < self._half_open_at:
                self._rejected += 1
                raise CircuitOpenError(self.name, retry_after_s=self._half_open_at - now)
            self._transition(
                _HALF_OPEN, at=self._half_open_at, failures=0, reason="cooldown elapsed"
            )
        if self._probe is not None:
            self._rejected += 1
            raise CircuitOpenError(self.name, retry_after_s=self.config.probe_retry_after_s)
        probe = self._probe = Permit(self._epoch, probe=True)
        return probe

    # -- outcomes ----------------------------------------------------------------------------

    def record_success(self, permit: Permit, now: float) -> None:
        """The call answered: a probe's success closes the breaker; else nothing changes.

        A success while closed does not erase earlier failures in the window.
        """
        self._successes += 1
        if permit is self._closed_permit:
            return
        if permit is self._probe:
            self._close(now)
        else:
            self._stale += 1

    def record_failure(self, permit: Permit, now: float) -> None:
        """The call failed because of the exchange (or the path to it).

        While closed the failure enters the window and the ``failure_threshold``-th one within
        ``window_s`` opens the breaker; a probe's failure reopens it for another ``cooldown_s``.
        A stale permit's failure changes nothing.
        """
        self._failures += 1
        if permit is self._closed_permit:
            window = self._window
            window.append(now)
            window_s = self.config.window_s
            while now - window[0] >= window_s:
                window.popleft()
            if len(window) >= self.config.failure_threshold:
                count = len(window)
                self._open(now, count, f"{count} failures in {window_s:g} s")
        elif permit is self._probe:
            self._open(now, 1, "probe failed")
        else:
            self._stale += 1

    def record_abandoned(self, permit: Permit, now: float) -> None:
        """The call ended without a verdict (cancelled, or failed for a reason of ours).

        A probe's slot is freed for the next caller; nothing else changes.
        """
        self._abandoned += 1
        if permit is self._probe:
            self._probe = None
        elif permit is not self._closed_permit:
            self._stale += 1

    def record(self, permit: Permit, outcome: Outcome, now: float) -> None:
        """Record ``outcome``: :meth:`record_success`, :meth:`record_failure` or the abandon."""
        if outcome is Outcome.SUCCESS:
            self.record_success(permit, now)
        elif outcome is Outcome.FAILURE:
            self.record_failure(permit, now)
        else:
            self.record_abandoned(permit, now)

    def drain_transitions(self) -> tuple[BreakerTransition, ...]:
        """The transitions produced since the last drain, oldest first."""
        pending = self._pending
        if not pending:
            return _NO_TRANSITIONS
        drained = tuple(pending)
        pending.clear()
        return drained

    # -- queries (pure: they never produce transitions) --------------------------------------

    def state(self, now: float) -> BreakerState:
        """The state a call arriving at ``now`` would find."""
        if self._state is _OPEN and now >= self._half_open_at:
            return _HALF_OPEN
        return self._state

    def retry_after_s(self, now: float) -> float:
        """How long a caller refused at ``now`` should wait (``0`` when a call would pass)."""
        state = self._state
        if state is _OPEN and now < self._half_open_at:
            return self._half_open_at - now
        if state is _HALF_OPEN and self._probe is not None:
            return self.config.probe_retry_after_s
        return 0.0

    def failures_in_window(self, now: float) -> int:
        """Failures whose window still covers ``now`` (always ``0`` unless closed)."""
        window_s = self.config.window_s
        return sum(1 for t in self._window if now - t < window_s)

    def statistics(self, now: float) -> BreakerStatistics:
        """A snapshot at ``now``."""
        return BreakerStatistics(
            name=self.name,
            state=self.state(now),
            failures_in_window=self.failures_in_window(now),
            opened_at=self._opened_at,
            retry_after_s=self.retry_after_s(now),
            transitions=self._transitions,
            rejected=self._rejected,
            successes=self._successes,
            failures=self._failures,
            abandoned=self._abandoned,
            stale=self._stale,
            probe_out=self._probe is not None,
        )

    # -- transitions -------------------------------------------------------------------------

    def _open(self, now: float, failures: int, reason: str) -> None:
        cooldown_s = self.config.cooldown_s
        self._opened_at = now
        self._half_open_at = now + cooldown_s
        self._window.clear()
        self._transition(_OPEN, at=now, failures=failures, reason=reason, retry_after_s=cooldown_s)

    def _close(self, now: float) -> None:
        self._opened_at = None
        self._half_open_at = math.inf
        self._transition(_CLOSED, at=now, failures=0, reason="probe ok")

    def _transition(
        self,
        state: BreakerState,
        *,
        at: float,
        failures: int,
        reason: str,
        retry_after_s: float = 0.0,
    ) -> None:
        # Every transition starts a new epoch: permits issued before it become stale (their
        # outcomes are ignored), because the identity checks below no longer match them.
        previous = self._state
        self._state = state
        self._epoch += 1
        self._transitions += 1
        self._probe = None
        self._closed_permit = Permit(self._epoch, probe=False) if state is _CLOSED else None
        self._pending.append(
            BreakerTransition(
                name=self.name,
                previous=previous,
                state=state,
                at=at,
                failures=failures,
                reason=reason,
                retry_after_s=retry_after_s,
            )
        )


# -- classification --------------------------------------------------------------------------

_FAILURES: Final = (
    TransportError,
    ExchangeUnavailableError,
    OrderOutcomeUnknownError,
    RateLimitedError,
    IpBannedError,
    ExchangeProtocolError,
)
_UNHEALTHY_STATUSES: Final = frozenset({418, 429})


def classify(exc: BaseException) -> Outcome:
    """What ``exc``, ending a guarded call, says about the exchange's health.

    - ``FAILURE``: :class:`~genesis.errors.TransportError` (connect, read timeout, connection
      lost), :class:`~genesis.errors.ExchangeUnavailableError` (5xx),
      :class:`~genesis.errors.OrderOutcomeUnknownError`, :class:`~genesis.errors.RateLimitedError`
      (429), :class:`~genesis.errors.IpBannedError` (418) and
      :class:`~genesis.errors.ExchangeProtocolError` (the exchange sent garbage). So is a plain
      :class:`~genesis.errors.ExchangeRejectedError` whose ``http_status`` is 5xx, 418 or 429,
      in case a mapper missed the subclass.
    - ``SUCCESS``: any other :class:`~genesis.errors.ExchangeRejectedError` (-2010, -1013, a 400
      or 404): the exchange is healthy and answered; the request was the problem.
    - ``ABANDONED``: everything else: ``trio.Cancelled``, a
      :class:`~genesis.errors.CircuitOpenError`, ``trio.TooSlowError`` from a caller's own
      deadline, bugs.

    An exception group is a ``FAILURE`` if any leaf is one, a ``SUCCESS`` if every leaf is one,
    else ``ABANDONED``.
    """
    if isinstance(exc, _FAILURES):
        return Outcome.FAILURE
    if isinstance(exc, ExchangeRejectedError):
        status = exc.http_status
        if status is not None and (status >= 500 or status in _UNHEALTHY_STATUSES):
            return Outcome.FAILURE
        return Outcome.SUCCESS
    if isinstance(exc, BaseExceptionGroup):
        outcomes = {classify(leaf) for leaf in exc.exceptions}
        if Outcome.FAILURE in outcomes:
            return Outcome.FAILURE
        if outcomes == {Outcome.SUCCESS}:
            return Outcome.SUCCESS
    return Outcome.ABANDONED


# -- the Trio wrapper -------------------------------------------------------------------------


class TransitionSink(Protocol):
    """Receives every transition, in order (``EventBus.publish`` fits)."""

    async def __call__(self, event: BreakerTransition, /) -> None: ...


class CircuitBreaker:
    """The breaker on the Trio clock: ``guard()`` around every call to one exchange surface.

    Each transition is logged (``breaker.transition``; WARNING when it opens, INFO otherwise)
    and handed to ``on_transition`` in the order the transitions happened: one task delivers at
    a time, and a transition produced while the sink is busy is delivered by the task already
    delivering (within that task's ``publish_timeout_s``), not by its own. The sink is an
    observer: if it raises, that is logged (``breaker.publish_failed``) and the guarded call is
    not affected; publishing is shielded from cancellation but bounded by
    ``config.publish_timeout_s`` (``breaker.publish_timeout`` when the bound cut it short).

    Args:
        name: The surface: ``rest``, ``streams`` or ``ws_api``.
        config: The breaker's numbers.
        on_transition: Where transitions are published, e.g. ``bus.publish``.
    """

    def __init__(
        self,
        name: str,
        config: BreakerConfig = BreakerConfig(),  # frozen, so one shared default is safe
        *,
        on_transition: TransitionSink | None = None,
    ) -> None:
        self._core = CircuitBreakerCore(name, config)
        self._sink = on_transition
        self._outbox: deque[BreakerTransition] = deque()
        self._publishing = False

    @property
    def name(self) -> str:
        return self._core.name

    @property
    def config(self) -> BreakerConfig:
        return self._core.config

    @property
    def state(self) -> BreakerState:
        """The state a call arriving now would find."""
        return self._core.state(trio.current_time())

    def statistics(self) -> BreakerStatistics:
        """A snapshot at the current Trio time."""
        return self._core.statistics(trio.current_time())

    @asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Run the body as one call through the breaker.

        On entry the call is admitted or refused at once. On exit its outcome is recorded:
        success when the body returns, else :func:`classify` of the exception, which then
        propagates unchanged. Transitions are published before the body runs (a half-open probe)
        and on exit, shielded from cancellation for at most ``config.publish_timeout_s``, so a
        cancelled probe still reports and frees its slot.

        Raises:
            CircuitOpenError: refused (after a checkpoint, so a retry loop cannot spin); the
                body did not run.
        """
        core = self._core
        try:
            permit = core.try_enter(trio.current_time())
        except CircuitOpenError:
            await trio.lowlevel.checkpoint()
            raise
        try:
            await self._publish()
            yield
        except BaseException as exc:
            core.record(permit, classify(exc), trio.current_time())
            await self._publish()
            raise
        core.record_success(permit, trio.current_time())
        await self._publish()

    async def call(self, fn: Callable[[*_Ts], Awaitable[_T]], *args: *_Ts) -> _T:
        """``await fn(*args)`` inside :meth:`guard`; its result or exception, unchanged.

        Raises:
            CircuitOpenError: refused; ``fn`` was not called.
        """
        async with self.guard():
            return await fn(*args)

    async def _publish(self) -> None:
        transitions = self._core.drain_transitions()
        for event in transitions:
            logger.log(
                logging.WARNING if event.state is _OPEN else logging.INFO,
                "breaker.transition name=%s from=%s to=%s failures=%d reason=%s",
                event.name,
                event.previous.value,
                event.state.value,
                event.failures,
                event.reason,
            )
        if self._sink is None:
            return
        self._outbox.extend(transitions)
        if self._outbox and not self._publishing:
            await self._flush(self._sink)

    async def _flush(self, sink: TransitionSink) -> None:
        # One task delivers at a time, oldest first: a transition produced by another task while
        # the sink is busy joins the outbox and is delivered by the task already flushing, so the
        # sink sees them in the order they happened even if it blocks.
        self._publishing = True
        try:
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(self.config.publish_timeout_s) as scope,
            ):
                while self._outbox:
                    event = self._outbox.popleft()
                    try:
                        await sink(event)
                    except Exception:
                        # The sink is an observer (the bus): its failure must not turn the
                        # guarded call's outcome into a different one.
                        logger.error(
                            "breaker.publish_failed name=%s to=%s",
                            event.name,
                            event.state.value,
                            exc_info=True,
                        )
            if scope.cancelled_caught:
                logger.warning(
                    "breaker.publish_timeout name=%s pending=%d timeout_s=%g",
                    self.name,
                    len(self._outbox),
                    self.config.publish_timeout_s,
                )
        finally:
            self._publishing = False
