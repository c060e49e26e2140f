"""The order side's supervisor: a crashed service is restarted after a backoff, never wedged.

```
supervise_order_side(bus, name, run)        (nursery.start → the service's first handle)
└── loop
    ├── inner nursery
    │   └── run(resume=<the handle so far, or None>, task_status=...)
    │                                        run_reconciler, run_user_stream (app/run.py)
    ├── crash → ERROR with the traceback, the alert (if any) saying when it restarts
    └── backoff 1, 2, 4 … 60 s (RESTART_POLICY) → WARNING, start it again
```

The reconciler and the user data stream run under :func:`supervise_order_side` so that a bug in
either (an unexpected exception, a hostile answer nobody foresaw) neither takes market data down
nor leaves the process running without them until a person restarts it:

- A failure before the *first* ``started`` is the tree's: a start-up problem, raised (a lone
  error bare) so that ``genesis run`` fails at once instead of limping.
- Any later failure (a crash after ``started``, a restarted service failing before its own
  ``started``, a service that returns) is logged at ERROR with its traceback, counted, and the
  alert (``USER_STREAM_DOWN``, ``RECONCILER_DOWN``) goes on the bus saying when it restarts; the
  service is started again after the delay. A restart that fails before ``started`` is not a
  start-up problem any more (the tree is running, the configuration was good once): it backs off
  further and retries.
- The delay follows :class:`~genesis.resilience.backoff.Backoff`: 1, 2, 4 … capped at 60 s
  (:data:`RESTART_POLICY`). A service that stayed up for ``reset_after_s`` (60 s) counts as
  healthy again: its next crash waits 1 s. The schedule never gives up.
- The handle stays valid. Each restart calls ``run(resume=handle)`` with the value the first run
  passed to ``started``; a resumable service continues with it (its state and counters, see
  :func:`~genesis.orders.reconcile.run_reconciler` and
  :func:`~genesis.exchange.user_stream.run_user_stream`), so whoever holds the handle (the
  ``GenesisHandle``, the heartbeat) reads the running service again. Only the first ``started``
  value is passed on: a service that hands out a different object on a restart is a bug, logged
  at ERROR.
- What happened is in a :class:`Supervision` (state, crashes, restarts, the last error, when the
  next restart is due), read by the dashboard and the metrics.

Cancellation (a stop, Ctrl-C) ends the supervisor at once, also while it waits to restart; the
service's own shielded cleanup runs as usual. ``KeyboardInterrupt`` and other
``BaseException`` s are never caught.
"""

from __future__ import annotations

import enum
import logging
import time
from functools import partial
from typing import TYPE_CHECKING, Final, NoReturn, TypeVar, cast

import attrs
import trio

from genesis.models.events import Alert, AlertSeverity
from genesis.resilience.backoff import Backoff, BackoffPolicy

if TYPE_CHECKING:
    import random
    from collections.abc import Awaitable, Callable

    from genesis.bus import EventBus
    from genesis.models.events import AlertKind

__all__ = [
    "RESTART_POLICY",
    "SupervisedState",
    "Supervision",
    "SupervisorStatistics",
    "lone_error",
    "supervise_order_side",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

RESTART_POLICY: Final = BackoffPolicy(initial_s=1.0, multiplier=2.0, max_s=60.0, reset_after_s=60.0)
"""Restart delays 1, 2, 4 … 60 s; up for 60 s resets them. No jitter: two services per process,
not a fleet, and an exact delay makes the alert's "restarts in N s" exact."""


class SupervisedState(enum.Enum):
    """Where a supervised service is."""

    STARTING = "starting"
    """Being started (the first time, or again after a crash) and not yet ``started``."""
    RUNNING = "running"
    """Started, and not crashed since."""
    BACKOFF = "backoff"
    """Crashed; waiting until ``restart_at`` to start it again."""


@attrs.frozen(kw_only=True)
class SupervisorStatistics:
    """A snapshot of one supervised service.

    Attributes:
        name: the service (``reconciler``, ``user_stream``).
        state: starting, running, or waiting to restart.
        crashes: failures after the first start (each one an ERROR line).
        restarts: restarts begun (``crashes`` once the pending one has begun).
        last_error: the last crash, ``"<ErrorType>: <message>"``.
        last_crash_at: Trio time of the last crash.
        restart_at: Trio time of the next restart while in ``BACKOFF``, else ``None``.
    """

    name: str
    state: SupervisedState
    crashes: int
    restarts: int
    last_error: str | None
    last_crash_at: float | None
    restart_at: float | None


@attrs.define(eq=False)
class Supervision:
    """The record :func:`supervise_order_side` keeps of one service (read :meth:`statistics`).

    Create one per service and pass it as ``supervision=`` to read it from elsewhere (the
    dashboard, the metrics); only the supervisor changes it.
    """

    name: str
    state: SupervisedState = SupervisedState.STARTING
    crashes: int = 0
    restarts: int = 0
    last_error: str | None = None
    last_crash_at: float | None = None
    restart_at: float | None = None
    _changed: trio.lowlevel.ParkingLot = attrs.field(
        init=False, factory=trio.lowlevel.ParkingLot, repr=False
    )

    def _enter(self, state: SupervisedState) -> None:
        self.state = state
        self._changed.unpark_all()

    async def wait_state(self, state: SupervisedState, *, crashes: int = 0) -> None:
        """Wait until the service is in ``state`` and has crashed at least ``crashes`` times."""
        await trio.lowlevel.checkpoint()
        while not (self.state is state and self.crashes >= crashes):
            await self._changed.park()

    def statistics(self) -> SupervisorStatistics:
        return SupervisorStatistics(
            name=self.name,
            state=self.state,
            crashes=self.crashes,
            restarts=self.restarts,
            last_error=self.last_error,
            last_crash_at=self.last_crash_at,
            restart_at=self.restart_at,
        )


def lone_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The only leaf exception of ``group`` (nested groups flattened), else ``None``."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(exc.exceptions)
        else:
            leaves.append(exc)
    return leaves[0] if len(leaves) == 1 else None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def supervise_order_side(  # type: ignore[explicit-any]  # any run_* service, as nursery.start takes
    bus: EventBus,
    name: str,
    run: Callable[..., Awaitable[object]],
    *,
    alert: AlertKind | None = None,
    policy: BackoffPolicy = RESTART_POLICY,
    rng: random.Random | None = None,
    supervision: Supervision | None = None,
    task_status: trio.TaskStatus[T] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Run ``run`` (a ``run_*`` service) so that, once started, a crash restarts only it.

    This is the supervision boundary between the order side and everything else (module
    docstring): market data never stops because reconciliation or the user data stream failed,
    and neither stays down.

    Args:
        bus: where the alert goes.
        name: the service's name in log lines, alerts and statistics.
        run: called as ``run(resume=..., task_status=...)``: ``resume`` is ``None`` the first
            time, then the first run's ``started`` value (to continue with).
        alert: the kind of the alert published for each crash; ``None`` for none.
        policy: the restart schedule (:data:`RESTART_POLICY`).
        rng: source of jitter when ``policy.jitter`` is set.
        supervision: the record to keep (statistics); a private one when ``None``.
        task_status: receives what ``run`` passed to its first ``started``.

    Raises:
        Exception: whatever ``run`` raised before its first ``started`` (a lone error bare).

    Runs until cancelled; cancellation ends it at once, the backoff wait included.
    """
    record = supervision if supervision is not None else Supervision(name)
    backoff = Backoff(policy, rng)
    started = False
    handle: object = None
    while True:
        record._enter(SupervisedState.STARTING)
        during = "start"
        try:
            async with trio.open_nursery() as inner:
                value = await inner.start(partial(run, resume=handle if started else None))
                during = "run"
                backoff.mark_healthy(trio.current_time())
                record._enter(SupervisedState.RUNNING)
                if not started:
                    started = True
                    handle = value
                    task_status.started(cast("T", value))  # what run passed: its own T
                else:
                    if value is not handle:
                        logger.error(
                            "genesis.order_side_new_handle task=%s: the restarted service did not"
                            " continue its handle; its holders read the crashed one",
                            name,
                        )
                    logger.info(
                        "genesis.order_side_running task=%s restarts=%d", name, record.restarts
                    )
            error: BaseException = RuntimeError("the service returned; it should run forever")
        except Exception as group:  # the supervision boundary: logged with its traceback, below
            lone = lone_error(group) if isinstance(group, BaseExceptionGroup) else group
            if not started:
                if lone is not None and lone is not group:
                    raise lone from None
                raise
            error = group if lone is None else lone
        restart_at = await _crashed(bus, record, backoff, error, during=during, alert=alert)
        await trio.sleep_until(restart_at)
        record.restarts += 1
        record.restart_at = None
        logger.warning(
            "genesis.order_side_restart task=%s restart=%d last_error=%s: restarting after a crash",
            name,
            record.restarts,
            record.last_error,
        )


async def _crashed(
    bus: EventBus,
    record: Supervision,
    backoff: Backoff,
    error: BaseException,
    *,
    during: str,
    alert: AlertKind | None,
) -> float:
    """Account a crash in ``record``, log it (ERROR, traceback), publish the alert.

    Returns:
        The Trio time of the restart.
    """
    now = trio.current_time()
    delay_s = backoff.mark_failed(now)
    record.crashes += 1
    record.last_error = _describe(error)
    record.last_crash_at = now
    restart_at = record.restart_at = now + delay_s
    record._enter(SupervisedState.BACKOFF)
    logger.error(
        "genesis.order_side_failed task=%s during=%s error=%s crashes=%d restart_in_s=%g; "
        "market data continues",
        record.name,
        during,
        record.last_error,
        record.crashes,
        delay_s,
        exc_info=error,
    )
    if alert is None:
        return restart_at
    at_ms = int(time.time() * 1000)
    await bus.publish(
        Alert(
            kind=alert,
            severity=AlertSeverity.ERROR,
            message=f"{record.name} crashed: {record.last_error}; restarting in {delay_s:g} s",
            at_ms=at_ms,
            subject=record.name,
            details=(
                ("crashes", str(record.crashes)),
                ("restart_in_s", f"{delay_s:g}"),
                ("restart_at_ms", str(at_ms + round(delay_s * 1000))),
            ),
        )
    )
    return restart_at
