"""A crashed order-side service comes back: the supervisor's restarts, the handles, the gap.

- The supervisor is generic, so its schedule is checked with test services that crash on
  purpose, under ``autojump_clock`` at exact virtual times.
- The real services (``run_reconciler``, ``run_user_stream``) are crashed by :class:`CrashOnce`,
  a wrapper *around* them that raises once after they started (a bug above them, as the tree
  would see it); nothing of ours is mocked. In memory under ``autojump_clock`` for the handles,
  and over real loopback sockets against ``run_simulator`` for the reconciliation of an order
  filled while the user stream was down.
"""

from __future__ import annotations

import functools
import logging
from decimal import Decimal
from typing import TYPE_CHECKING, NoReturn

import attrs
import trio
import trio.testing

from genesis.app.supervisor import (
    RESTART_POLICY,
    SupervisedState,
    Supervision,
    supervise_order_side,
)
from genesis.bus import EventBus
from genesis.config import Secret
from genesis.exchange.health_monitor import run_heartbeat
from genesis.exchange.signing import HmacSigner
from genesis.exchange.user_stream import UserStreamEvent, UserStreamHandle, run_user_stream
from genesis.models.events import Alert, AlertKind, OrderUpdate, OrderUpdateSource, UserStreamState
from genesis.models.orders import OrderRequest, OrderSide
from genesis.orders.journal import open_journal
from genesis.orders.reconcile import ReconcilerHandle, reconcile_trigger, run_reconciler
from genesis.orders.service import OrderService
from genesis.resilience.backoff import BackoffPolicy
from tests.gateway_support import loopback_gateway, memory_gateway
from tests.test_app_run import FakeHealth
from tests.test_user_stream import MAKER, SIM_URL, open_harness

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import pytest

    from genesis.models.orders import Order
    from genesis.sim.server import SimHandle

LOGGER = "genesis.app.supervisor"
BUG = "a bug in the order side"


def records(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.getMessage().startswith(event)]


@attrs.define(eq=False)
class CrashOnce:
    """Runs ``run`` (a resumable ``run_*`` service) and raises once after it started.

    The crash comes when ``crash`` is set; a restart waits for ``release`` before it starts
    the service again (so a test can act while nothing runs), and then never crashes.
    """

    run: Callable[..., Awaitable[object]]
    crash: trio.Event = attrs.field(factory=trio.Event)
    release: trio.Event = attrs.field(factory=trio.Event)
    resumed: list[object] = attrs.field(factory=list)

    async def __call__(self, *, resume: object, task_status: trio.TaskStatus[object]) -> NoReturn:
        if resume is not None:
            self.resumed.append(resume)
            await self.release.wait()
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(functools.partial(self.run, resume=resume))
            task_status.started(handle)
            if resume is None:
                await self.crash.wait()
                raise RuntimeError(BUG)
            await trio.sleep_forever()
        raise AssertionError("unreachable")


async def idle_service(*, resume: object, task_status: trio.TaskStatus[object]) -> NoReturn:
    """A resumable service that does nothing (for :class:`CrashOnce` in view tests)."""
    task_status.started("handle" if resume is None else resume)
    await trio.sleep_forever()
    raise AssertionError("unreachable")


# --- the supervisor's schedule ----------------------------------------------------------------


async def test_a_crash_is_restarted_after_a_growing_capped_backoff_and_a_long_run_resets_it(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    bus = EventBus()
    alerts = bus.subscribe(Alert, buffer_size=64)
    # Up for 0 s eight times (1, 2, 4 … capped at 60), then 61 s (healthy: reset), then 0 s.
    up_s = [0.0] * 8 + [61.0, 0.0]
    starts: list[float] = []
    record = Supervision("user_stream")

    async def buggy(*, resume: str | None, task_status: trio.TaskStatus[str]) -> NoReturn:
        starts.append(trio.current_time())
        assert resume == (None if len(starts) == 1 else "handle")
        task_status.started("handle" if resume is None else resume)
        await trio.sleep(up_s[len(starts) - 1] if len(starts) <= len(up_s) else 1e9)
        raise RuntimeError(f"{BUG} #{len(starts)}")

    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(
                functools.partial(
                    supervise_order_side,
                    bus,
                    "user_stream",
                    buggy,
                    alert=AlertKind.USER_STREAM_DOWN,
                    supervision=record,
                )
            )
            assert handle == "handle"
            await record.wait_state(SupervisedState.RUNNING, crashes=10)
            nursery.cancel_scope.cancel()
    delays = [1, 2, 4, 8, 16, 32, 60, 60]
    expected = [0.0]
    for delay in delays:
        expected.append(expected[-1] + delay)
    expected.append(expected[-1] + 61 + 1)  # healthy for 61 s: the next delay is 1 s again
    expected.append(expected[-1] + 2)
    assert starts == expected
    failed = records(caplog, "genesis.order_side_failed")
    assert len(failed) == 10
    assert all(r.levelno == logging.ERROR and r.exc_info is not None for r in failed)
    assert "error=RuntimeError: a bug in the order side #1 " in failed[0].getMessage()
    restarted = records(caplog, "genesis.order_side_restart ")
    assert [r.levelno for r in restarted] == [logging.WARNING] * 10
    received = []
    while True:
        try:
            received.append(alerts.receive_nowait())
        except trio.WouldBlock:
            break
    assert len(received) == 10
    assert {a.kind for a in received} == {AlertKind.USER_STREAM_DOWN}
    assert [dict(a.details)["restart_in_s"] for a in received] == [
        *(str(d) for d in delays),
        "1",
        "2",
    ]
    assert received[0].message == (
        "user_stream crashed: RuntimeError: a bug in the order side #1; restarting in 1 s"
    )
    stats = record.statistics()
    assert (stats.crashes, stats.restarts, stats.state) == (10, 10, SupervisedState.RUNNING)
    assert stats.last_error == "RuntimeError: a bug in the order side #10"
    assert RESTART_POLICY.max_s == delays[-1]  # the schedule above is the default one


async def test_the_heartbeat_reports_each_service_and_warns_of_a_crash_between_reports(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="genesis.exchange.health_monitor")
    reconciler, user_stream = Supervision("reconciler"), Supervision("user_stream")
    starts: list[float] = []

    async def crashes_at_40(*, resume: str | None, task_status: trio.TaskStatus[str]) -> NoReturn:
        starts.append(trio.current_time())
        task_status.started("handle")
        if len(starts) == 1:
            await trio.sleep(40.0)
            raise RuntimeError(BUG)
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def always_crashes(*, resume: None, task_status: trio.TaskStatus[None]) -> NoReturn:
        task_status.started()
        raise RuntimeError("the stream is broken")

    with trio.move_on_after(95):
        async with trio.open_nursery() as nursery:
            bus = EventBus()
            await nursery.start(
                functools.partial(
                    supervise_order_side, bus, "reconciler", crashes_at_40, supervision=reconciler
                )
            )
            await nursery.start(
                functools.partial(
                    supervise_order_side,
                    bus,
                    "user_stream",
                    always_crashes,
                    policy=BackoffPolicy(initial_s=1000.0, max_s=1000.0),
                    supervision=user_stream,
                )
            )
            await nursery.start(
                functools.partial(
                    run_heartbeat, FakeHealth(), None, 30.0, order_side=(reconciler, user_stream)
                )
            )
    assert starts == [0.0, 41.0]
    lines = [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if r.getMessage().startswith("heartbeat.order_side ")
    ]
    assert lines == [
        # 30 s: the reconciler runs; the user stream crashed at once and waits 1,000 s.
        (
            logging.INFO,
            "heartbeat.order_side service=reconciler state=running crashes=0 restarts=0 "
            "last_error=-",
        ),
        (
            logging.WARNING,
            "heartbeat.order_side service=user_stream state=backoff crashes=1 restarts=0 "
            "last_error=RuntimeError: the stream is broken",
        ),
        # 60 s: the reconciler crashed at 40 s and runs again since 41 s: still a warning.
        (
            logging.WARNING,
            "heartbeat.order_side service=reconciler state=running crashes=1 restarts=1 "
            "last_error=RuntimeError: a bug in the order side",
        ),
        (
            logging.WARNING,
            "heartbeat.order_side service=user_stream state=backoff crashes=1 restarts=0 "
            "last_error=RuntimeError: the stream is broken",
        ),
        # 90 s: no crash since the last report.
        (
            logging.INFO,
            "heartbeat.order_side service=reconciler state=running crashes=1 restarts=1 "
            "last_error=RuntimeError: a bug in the order side",
        ),
        (
            logging.WARNING,
            "heartbeat.order_side service=user_stream state=backoff crashes=1 restarts=0 "
            "last_error=RuntimeError: the stream is broken",
        ),
    ]


async def test_a_restart_that_fails_before_it_started_backs_off_and_retries(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    starts: list[float] = []

    async def flaky(*, resume: str | None, task_status: trio.TaskStatus[str]) -> NoReturn:
        starts.append(trio.current_time())
        if len(starts) == 2:
            raise RuntimeError("cannot start again")
        task_status.started("handle")
        if len(starts) == 1:
            raise RuntimeError(BUG)
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    record = Supervision("reconciler")
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                functools.partial(
                    supervise_order_side, EventBus(), "reconciler", flaky, supervision=record
                )
            )
            await record.wait_state(SupervisedState.RUNNING, crashes=2)
            nursery.cancel_scope.cancel()
    assert starts == [0.0, 1.0, 3.0]  # the failed restart counted as a crash: 1 s, then 2 s
    failed = records(caplog, "genesis.order_side_failed")
    assert ["during=run" in r.getMessage() for r in failed] == [True, False]
    assert "during=start error=RuntimeError: cannot start again" in failed[1].getMessage()
    assert (record.crashes, record.restarts) == (2, 2)


async def test_cancellation_during_the_backoff_wait_ends_the_supervisor_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[float] = []

    async def buggy(*, resume: None, task_status: trio.TaskStatus[None]) -> NoReturn:
        starts.append(trio.current_time())
        task_status.started()
        raise RuntimeError(BUG)

    record = Supervision("reconciler")
    policy = BackoffPolicy(initial_s=30.0, max_s=60.0)
    with trio.move_on_after(10) as scope:  # Ctrl-C: the client scope is cancelled
        await supervise_order_side(
            EventBus(), "reconciler", buggy, policy=policy, supervision=record
        )
    assert scope.cancelled_caught
    assert trio.current_time() == 10.0
    assert starts == [0.0]
    assert record.state is SupervisedState.BACKOFF
    assert record.restart_at == 30.0


async def test_a_service_that_returns_is_restarted_like_a_crash(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger=LOGGER)
    starts: list[float] = []

    async def returns(*, resume: None, task_status: trio.TaskStatus[None]) -> None:
        starts.append(trio.current_time())
        task_status.started()
        if len(starts) > 1:
            await trio.sleep_forever()

    with trio.move_on_after(5):
        await supervise_order_side(EventBus(), "reconciler", returns)
    assert starts == [0.0, 1.0]
    [failed] = records(caplog, "genesis.order_side_failed")
    assert "RuntimeError: the service returned" in failed.getMessage()


async def test_a_restart_that_does_not_continue_its_handle_is_an_error(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)

    async def forgetful(*, resume: object, task_status: trio.TaskStatus[object]) -> NoReturn:
        task_status.started(object())  # a new handle every time
        if resume is None:
            raise RuntimeError(BUG)
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    record = Supervision("reconciler")
    async with trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(
                supervise_order_side, EventBus(), "reconciler", forgetful, supervision=record
            )
        )
        await record.wait_state(SupervisedState.RUNNING, crashes=1)
        nursery.cancel_scope.cancel()
    [new_handle] = records(caplog, "genesis.order_side_new_handle")
    assert new_handle.levelno == logging.ERROR
    assert records(caplog, "genesis.order_side_running")


# --- the real services keep their handles ------------------------------------------------------


async def test_the_user_stream_handle_reads_the_restarted_stream_and_it_reconciles_the_gap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = EventBus()
    alerts = bus.subscribe(Alert)
    record = Supervision("user_stream")
    with trio.fail_after(60):
        async with open_harness() as h:
            service = CrashOnce(
                functools.partial(
                    run_user_stream,
                    SIM_URL,
                    api_key=Secret(h.sim.api_key),
                    signer=h.hmac_signer(),
                    publish=h.events,
                    on_gap=h.gaps,
                    connector=h.connector,
                    server_time_ms=h.sim.clock.now_ms,
                )
            )
            handle: UserStreamHandle = await h.nursery.start(
                functools.partial(
                    supervise_order_side,
                    bus,
                    "user_stream",
                    service,
                    alert=AlertKind.USER_STREAM_DOWN,
                    supervision=record,
                )
            )
            resubscribed: list[float] = []
            waited = trio.Event()

            async def wait_for_the_second_subscription() -> None:
                await handle.wait_subscribed(subscriptions=2)  # parked on the first run's state
                resubscribed.append(trio.current_time())
                waited.set()

            h.nursery.start_soon(wait_for_the_second_subscription)
            h.place("before-crash")
            await h.events.wait_updates(1)
            assert h.gaps.times == []  # a first start follows no gap
            service.crash.set()
            alert = await alerts.receive()
            crash_at = record.last_crash_at
            assert crash_at is not None
            down = handle.statistics()
            assert (down.state, down.connected, down.subscribed) == (
                UserStreamState.BACKOFF,
                False,
                False,
            )
            assert record.state is SupervisedState.BACKOFF
            assert record.restart_at == crash_at + 1.0
            h.place("while-down")  # nobody listens: only the gap's reconciliation can find it
            service.release.set()
            await h.gaps.wait_calls(1)
            await waited.wait()
            await record.wait_state(SupervisedState.RUNNING)  # its start returns a moment later
            stats = handle.statistics()
            h.nursery.cancel_scope.cancel()
    assert service.resumed == [handle]
    assert alert.message.endswith("restarting in 1 s")
    assert h.gaps.times == [crash_at + 1.0]  # the restarted stream reconciles before SUBSCRIBED
    assert resubscribed == [crash_at + 1.0]
    # The counters go on from the first run's; the state is the restarted one's.
    assert stats.state is UserStreamState.SUBSCRIBED
    assert (stats.connects, stats.subscriptions, stats.gaps) == (2, 2, 1)
    assert stats.events["executionReport"] == 1
    assert (record.crashes, record.restarts, record.state) == (1, 1, SupervisedState.RUNNING)


async def test_the_reconciler_handle_and_its_trigger_survive_a_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = EventBus()
    record = Supervision("reconciler")
    with trio.fail_after(120):
        async with (
            memory_gateway() as m,
            open_journal(":memory:") as journal,
            trio.open_nursery() as nursery,
        ):
            orders = OrderService(m.gateway, journal, bus.publish)
            on_gap, gaps = reconcile_trigger()
            service = CrashOnce(
                functools.partial(run_reconciler, orders, symbols=["BTCUSDT"], trigger=gaps)
            )
            handle: ReconcilerHandle = await nursery.start(
                functools.partial(
                    supervise_order_side, bus, "reconciler", service, supervision=record
                )
            )
            assert handle.statistics().cycles == 1
            service.crash.set()
            await record.wait_state(SupervisedState.BACKOFF, crashes=1)
            back_at = record.restart_at
            # Gaps while it is down: one waits in the channel (the second is covered by it).
            await on_gap()
            await on_gap()
            await trio.sleep(5)  # still down: released only now
            released_at = trio.current_time()
            service.release.set()
            await record.wait_state(SupervisedState.RUNNING, crashes=1)
            restarted = handle.statistics()  # the restart reconciled before it started
            await trio.sleep(30)  # the pending trigger was taken by the restart's first cycle
            settled = handle.statistics()
            await on_gap()  # and the channel still reaches the restarted reconciler
            await trio.sleep(1)
            again = handle.statistics()
            nursery.cancel_scope.cancel()
    assert service.resumed == [handle]
    assert back_at is not None
    assert restarted.last_success_at is not None
    assert restarted.last_success_at >= released_at > back_at
    assert (restarted.cycles, settled.cycles, again.cycles) == (2, 2, 3)
    assert (restarted.failures, restarted.last_error) == (0, None)


# --- over real sockets: the fill the stream missed is reconciled ------------------------------


async def _place_and_fill_while_down(orders: OrderService, sim_handle: SimHandle) -> Order:
    """Place a BUY inside the spread and fill it from the maker account at once (no checkpoint
    between the check that it is the best bid and the fill, so the market maker cannot move)."""
    exchange = sim_handle.sim.exchange
    for _ in range(10):
        _bid, ask = exchange.top_of_book("BTCUSDT")
        assert ask is not None
        price = ask[0] - Decimal("0.01")
        placed = await orders.place(
            OrderRequest.limit(
                symbol="BTCUSDT", side=OrderSide.BUY, quantity=Decimal("0.001"), price=price
            )
        )
        cid = placed.client_order_id
        assert cid is not None
        if placed.exchange_status != "NEW":
            continue  # the ask moved under it: it crossed, and the answer already tells the fill
        on_exchange = exchange.query_order(
            sim_handle.api_key, symbol="BTCUSDT", orig_client_order_id=cid
        )
        if str(on_exchange.status) == "FILLED":
            return placed  # a taker of the market maker was quicker
        bid, _ask = exchange.top_of_book("BTCUSDT")
        left = on_exchange.orig_qty - on_exchange.executed_qty
        if bid is not None and bid == (price, left):
            exchange.place_order(
                MAKER,
                symbol="BTCUSDT",
                side="SELL",
                type="LIMIT",
                time_in_force="IOC",
                quantity=str(left),
                price=str(price),
                now_ms=sim_handle.sim.clock.now_ms(),
            )
            return placed
    raise AssertionError("the market kept moving")


async def test_a_restarted_user_stream_reconciles_an_order_filled_while_it_was_down() -> None:
    bus = EventBus()
    fast = BackoffPolicy(initial_s=0.05, max_s=1.0)
    with trio.fail_after(15):
        async with (
            loopback_gateway() as (sim_handle, gateway),
            open_journal(":memory:") as journal,
            trio.open_nursery() as nursery,
        ):
            sim_handle.sim.exchange.add_account(MAKER)
            orders = OrderService(gateway, journal, bus.publish)

            async def route(event: UserStreamEvent) -> None:
                if isinstance(event, OrderUpdate):
                    await orders.recorder.record(event.order, event.source, event.reason)

            on_gap, gaps = reconcile_trigger()
            reconciler: ReconcilerHandle = await nursery.start(
                functools.partial(
                    supervise_order_side,
                    bus,
                    "reconciler",
                    functools.partial(run_reconciler, orders, symbols=["BTCUSDT"], trigger=gaps),
                    policy=fast,
                )
            )
            record = Supervision("user_stream")
            service = CrashOnce(
                functools.partial(
                    run_user_stream,
                    sim_handle.ws_api_url,
                    api_key=Secret(sim_handle.api_key),
                    signer=HmacSigner(Secret(sim_handle.api_secret)),
                    publish=route,
                    on_gap=on_gap,
                    server_time_ms=gateway.server_time_ms,
                )
            )
            stream: UserStreamHandle = await nursery.start(
                functools.partial(
                    supervise_order_side,
                    bus,
                    "user_stream",
                    service,
                    alert=AlertKind.USER_STREAM_DOWN,
                    policy=fast,
                    supervision=record,
                )
            )
            assert stream.statistics().state is UserStreamState.SUBSCRIBED
            service.crash.set()
            # Crashed, backed off, and the restart is held until the order is filled.
            await record.wait_state(SupervisedState.STARTING, crashes=1)
            placed = await _place_and_fill_while_down(orders, sim_handle)
            service.release.set()
            await stream.wait_subscribed(subscriptions=2)
            cid = placed.client_order_id
            assert cid is not None
            while True:
                entry = await journal.get(cid)
                assert entry is not None
                if entry.exchange_status == "FILLED":
                    break
                await trio.sleep(0.01)
            sources = [e.source for e in await journal.history(cid)]
            stats = stream.statistics()
            cycles = reconciler.statistics().cycles
            nursery.cancel_scope.cancel()
    assert OrderUpdateSource.RECONCILE in sources
    assert OrderUpdateSource.USER_STREAM not in sources  # the stream never saw this order
    assert (stats.subscriptions, stats.gaps) == (2, 1)
    assert cycles >= 2  # at start, and for the restarted stream's gap
    assert (record.crashes, record.restarts) == (1, 1)
