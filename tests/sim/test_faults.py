"""The one fault schedule (sim/faults.py): ``genesis sim --faults``, ``genesis soak`` and the
virtual soak all run :func:`run_fault_profile` / :class:`FaultSchedule`.

Rules: every test runs under ``MockClock(autojump_threshold=0)`` with a deadline on the trio
clock; a market-stream connection is open (over memory streams) so faults aimed at one
connection have a target; the schedule is read back from its own log lines and counters.
"""

from __future__ import annotations

import functools
import itertools
import logging
import random
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final

import pytest
import trio
import trio.testing
import trio_websocket

from genesis.sim.clock import DEFAULT_VIRTUAL_EPOCH_MS
from genesis.sim.faults import (
    FAULT_ACTIONS,
    FAULT_PROFILES,
    FaultProfile,
    FaultSchedule,
    run_fault_profile,
)
from genesis.sim.server import SimConfig, Simulator, build_simulator

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

T0: Final = DEFAULT_VIRTUAL_EPOCH_MS


@asynccontextmanager
async def open_sim_with_connections(
    count: int = 1, *, remotes: int = 1
) -> AsyncIterator[tuple[Simulator, trio.Nursery]]:
    """A simulator with ``count`` live ``btcusdt@trade`` connections from ``remotes`` addresses."""
    sim = build_simulator(SimConfig(epoch_ms=T0, seed=1))
    async with trio.open_nursery() as nursery:
        for i in range(count):
            stream = sim.connect_ws_memory(nursery, remote_ip=f"10.0.0.{i % remotes + 1}")
            await trio_websocket.wrap_client_stream(
                nursery,
                stream,  # type: ignore[arg-type]  # any trio Stream works; the hint is narrow
                "sim",
                "/ws/btcusdt@trade",
                message_queue_size=16,
            )
        await trio.testing.wait_all_tasks_blocked()
        assert len(sim.streams.connections()) == count
        try:
            yield sim, nursery
        finally:
            nursery.cancel_scope.cancel()


class _FaultLog(logging.Handler):
    """Records ``(trio time, action)`` for each ``sim.fault.inject`` log line."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.entries: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("sim.fault.inject"):
            self.entries.append((trio.current_time(), message.rsplit("action=", 1)[1]))


def _schedule(
    profile: FaultProfile, seed: int, duration_s: float
) -> tuple[list[tuple[float, str]], dict[str, int]]:
    """Run ``profile`` for ``duration_s`` virtual seconds; its log and its counters."""
    log = _FaultLog()
    faults_logger = logging.getLogger("genesis.sim.faults")
    faults_logger.addHandler(log)
    previous_level = faults_logger.level
    faults_logger.setLevel(logging.INFO)

    async def run() -> dict[str, int]:
        with trio.fail_after(duration_s + 60):
            # Three addresses with three connections each: dropped ones are not replaced, so
            # there are enough to keep the one-connection faults supplied for a while.
            async with open_sim_with_connections(9, remotes=3) as (sim, nursery):
                schedule: FaultSchedule = await nursery.start(
                    functools.partial(run_fault_profile, sim.faults, profile, seed=seed)
                )
                await trio.sleep(duration_s)
                return dict(schedule.injected)

    try:
        injected = trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        faults_logger.removeHandler(log)
        faults_logger.setLevel(previous_level)
    return log.entries, injected


def test_the_schedule_is_deterministic_under_a_seed() -> None:
    chaos = FAULT_PROFILES["chaos"]
    first, injected = _schedule(chaos, seed=42, duration_s=600)
    again, _ = _schedule(chaos, seed=42, duration_s=600)
    other, _ = _schedule(chaos, seed=43, duration_s=600)
    assert first == again
    assert first != other
    assert first[0][0] == random.Random(42).uniform(chaos.min_gap_s, chaos.max_gap_s)
    actions = {action for _, action in first}
    assert actions <= set(chaos.actions)
    assert len(actions) >= 4  # the menu is really drawn from
    # The counters agree with the log: one count per injection.
    counted: dict[str, int] = {}
    for _, action in first:
        counted[action] = counted.get(action, 0) + 1
    assert injected == counted


def test_faults_come_every_min_to_max_gap() -> None:
    # REST faults always have a target, so every draw is an injection.
    rest = FaultProfile(name="rest", min_gap_s=5, max_gap_s=30, actions=("latency", "error_burst"))
    log, _ = _schedule(rest, seed=42, duration_s=600)
    assert len(log) >= 600 // 30
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(log)]
    assert all(5 - 1e-9 <= gap <= 30 + 1e-9 for gap in gaps)


def test_none_injects_nothing_and_flaky_only_its_menu() -> None:
    assert _schedule(FAULT_PROFILES["none"], seed=1, duration_s=3600) == ([], {})
    flaky, _ = _schedule(FAULT_PROFILES["flaky"], seed=1, duration_s=3600)
    assert flaky
    assert {action for _, action in flaky} <= set(FAULT_PROFILES["flaky"].actions)
    assert all(b - a >= 30 for (a, _), (b, _) in itertools.pairwise(flaky))


def test_weights_shape_the_draw() -> None:
    heavy = FaultProfile.weighted("heavy", 1, 1, {"latency": 50, "error_burst": 1})
    log, injected = _schedule(heavy, seed=3, duration_s=200.5)
    assert len(log) == 200
    assert injected["latency"] > 150
    assert injected.get("error_burst", 0) < 20


@pytest.mark.parametrize(
    ("action", "undone_by_s"),
    [
        ("stall_all", 15),
        ("stall_one", 15),
        ("ignore_pongs_all", 90),
        ("ignore_pongs_one", 90),
        ("latency", 20),
        ("clock_skew", 30),
    ],
)
async def test_temporary_faults_are_undone_within_their_span(
    autojump_clock: trio.testing.MockClock, action: str, undone_by_s: float
) -> None:
    every_100_s = FaultProfile(name="one", min_gap_s=100, max_gap_s=100, actions=(action,))
    with trio.fail_after(300):
        async with open_sim_with_connections() as (sim, nursery):

            def switches() -> tuple[object, ...]:
                return sim.faults.snapshot(), sorted(sim.streams.faults.pong_ignored_ids)

            clean = switches()
            await nursery.start(
                functools.partial(run_fault_profile, sim.faults, every_100_s, seed=5)
            )
            await trio.sleep(99.5)
            assert switches() == clean
            await trio.sleep(1)
            assert switches() != clean
            await trio.sleep(undone_by_s)
            assert switches() == clean


async def test_a_connection_fault_without_a_connection_is_not_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sim = build_simulator(SimConfig(epoch_ms=T0))
    drops = FaultProfile(name="drops", min_gap_s=10, max_gap_s=10, actions=("drop_one",))
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            schedule: FaultSchedule = await nursery.start(
                functools.partial(run_fault_profile, sim.faults, drops, seed=1)
            )
            await trio.sleep(55)
            assert schedule.injected == {}
            nursery.cancel_scope.cancel()


async def test_drop_one_drops_exactly_one_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    drop = FaultProfile(name="drop", min_gap_s=10, max_gap_s=10, actions=("drop_one",))
    with trio.fail_after(100):
        async with open_sim_with_connections(3, remotes=3) as (sim, nursery):
            schedule: FaultSchedule = await nursery.start(
                functools.partial(run_fault_profile, sim.faults, drop, seed=1)
            )
            await trio.sleep(10.5)
            assert schedule.injected == {"drop_one": 1}
            assert len(sim.streams.connections()) == 2
            assert sim.streams.statistics().connections_accepted == 3


def test_profiles_refuse_unknown_actions_and_bad_weights() -> None:
    with pytest.raises(ValueError, match="unknown fault action"):
        FaultProfile(name="x", min_gap_s=1, max_gap_s=2, actions=("explode",))
    with pytest.raises(ValueError, match="max_gap_s"):
        FaultProfile(name="x", min_gap_s=5, max_gap_s=2, actions=("drop_one",))
    with pytest.raises(ValueError, match="weights"):
        FaultProfile(name="x", min_gap_s=1, max_gap_s=2, actions=("drop_one",), weights=(1, 2))
    with pytest.raises(ValueError, match="weights"):
        FaultProfile.weighted("x", 1, 2, {"drop_one": 0})
    # Every action of every shipped profile exists, and chaos uses every one of them.
    assert set(FAULT_PROFILES["chaos"].actions) == set(FAULT_ACTIONS)
    assert set(FAULT_PROFILES["flaky"].actions) < set(FAULT_ACTIONS)
    with pytest.raises(ValueError, match="unknown fault profile"):
        SimConfig(faults="apocalypse")
