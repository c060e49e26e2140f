"""A virtual-time soak of the market-data path against the whole simulator, in memory.

:func:`run_virtual_soak` wires the real pieces together without a socket::

    build_simulator ── market feed (steps the market maker, publishes into the hub)
         │   └── exchange trade listener ──► ground truth: every public trade id, and whether
         │                                   any server connection was delivering data then
         └── sim.connect_ws_memory ◄── in-memory connector ◄── run_market_data (3 roles + merger)
                                                                    └──► EventBus ──► tally
    fault schedule (seeded): drop / stall / ignore pongs / serverShutdown, one or all connections

Run it under ``trio.testing.MockClock(autojump_threshold=0)``: every sleep, ping, backoff and
age cap then happens in virtual time. Wall time grows with the number of frames, not with
virtual time (ARCHITECTURE.md §7): a chaos day with two symbols takes about half an hour at the
simulator's 100 ms market step and about five minutes at a 1 s step (``market_step_s``).

Accounting. Only trades printed during ``duration_s`` count; afterwards the faults stop and
the run goes on for ``settle_s`` so trades held by the merger or still in flight arrive. A
recorded trade that never reached the bus is *lost*, and classified by what the simulator's
stream server was doing when it printed:

- *in an outage*: no live, unstalled connection subscribed to that trade stream (every
  connection gone, reconnecting or stalled: nothing could carry it). Acceptable.
- *in flight*: some were, but every one of them closed in that same instant (virtual time
  stands still while frames travel, so the trade was on its way when the last connection went,
  e.g. a stale-feed timeout that fires in the instant the feed resumes). Acceptable.
- *while up*: a connection that carried it was still live an instant later. A bug: must be 0.

Duplicates and out-of-order deliveries are counted per kind and must be 0.

Reproducibility. The market, the fault schedule and the connector are seeded and use only
virtual time, so two runs with the same arguments give equal reports, with one exception: the
role *names*. Trio wakes tasks that become runnable in the same instant in a randomised order,
so connections opened in the same instant get their server-side ids in a different order from
run to run. Faults therefore pick a role (each role connects from an address of its own), not a
connection id; and since the three roles start alike, which name ends up behind which address
is the only thing left to chance (:meth:`SoakReport.without_role_names`). For the same reason
the measured window and the once-a-second samples sit half a feed step off the feed's grid.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import urllib.parse
from array import array
from collections import deque
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, NoReturn

import attrs
import httpx
import trio
import trio.testing
import trio_websocket

from genesis.bus import EventBus
from genesis.config import Secret, Settings
from genesis.exchange.gateway import open_gateway
from genesis.exchange.signing import HmacSigner
from genesis.exchange.streams import market_streams
from genesis.exchange.ws_manager import (
    DEFAULT_ROLES,
    MarketDataConfig,
    MarketDataHandle,
    run_market_data,
)
from genesis.models.market import Depth, Kline, Ticker, Trade
from genesis.sim.clock import DEFAULT_VIRTUAL_EPOCH_MS, SimClock
from genesis.sim.feed import MarketFeed, run_market_feed
from genesis.sim.server import SimConfig, Simulator, build_simulator

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from genesis.bus import Subscription
    from genesis.exchange.gateway import Gateway
    from genesis.exchange.ws_manager import WebSocket
    from genesis.sim.exchange import PublicTrade

__all__ = [
    "DEFAULT_SOAK_SYMBOLS",
    "SOAK_ACTIONS",
    "SOAK_PROFILES",
    "SoakProfile",
    "SoakProgress",
    "SoakReport",
    "SoakRole",
    "run_virtual_soak",
]

logger = logging.getLogger(__name__)

DEFAULT_SOAK_SYMBOLS: Final = ("BTCUSDT", "ETHUSDT")
_STREAM_BASE_URL: Final = "ws://sim.invalid"  # the in-memory connector never resolves it
_BUS_BUFFER: Final = 65_536
"""The tally's channel; it drains every instant, so this only has to hold one instant's events."""
_LOST_SAMPLES: Final = 20
_SAMPLE_EVERY_S: Final = 1.0

SOAK_ACTIONS: Final = (
    "drop_one",
    "drop_all",
    "stall_one",
    "stall_all",
    "ignore_pongs_one",
    "ignore_pongs_all",
    "shutdown_one",
    "shutdown_all",
)


"""The faults a :class:`SoakProfile` can schedule."""


def _known_actions(
    _inst: object,
    _attr: attrs.Attribute[tuple[tuple[str, int], ...]],
    value: tuple[tuple[str, int], ...],
) -> None:
    for action, weight in value:
        if action not in SOAK_ACTIONS:
            raise ValueError(f"unknown soak fault {action!r}; choose from {SOAK_ACTIONS}")
        if weight < 1:
            raise ValueError(f"weight of {action!r} must be >= 1")


@attrs.frozen(kw_only=True)
class SoakProfile:
    """A seeded fault schedule for a soak: a gap between faults and a weighted menu.

    Attributes:
        name: Shown in the report.
        min_gap_s: Shortest virtual time between two faults.
        max_gap_s: Longest virtual time between two faults.
        actions: ``(action, weight)`` pairs, actions from :data:`SOAK_ACTIONS`:
            ``drop_one``/``drop_all`` (TCP closed, no close frame), ``stall_one``/``stall_all``
            (data withheld 5–15 s while pings go on), ``ignore_pongs_one``/``ignore_pongs_all``
            (pongs disregarded for 90 s, so the server closes with 1008 60 s after a ping),
            ``shutdown_one``/``shutdown_all`` (``serverShutdown`` then close 1001).
    """

    name: str
    min_gap_s: float = attrs.field(validator=attrs.validators.ge(0))
    max_gap_s: float
    actions: tuple[tuple[str, int], ...] = attrs.field(validator=_known_actions)

    def __attrs_post_init__(self) -> None:
        if self.actions and (self.max_gap_s <= 0 or self.max_gap_s < self.min_gap_s):
            raise ValueError("max_gap_s must be > 0 and >= min_gap_s")


SOAK_PROFILES: Final[Mapping[str, SoakProfile]] = MappingProxyType(
    {
        "none": SoakProfile(name="none", min_gap_s=0, max_gap_s=0, actions=()),
        "flaky": SoakProfile(
            name="flaky",
            min_gap_s=30,
            max_gap_s=120,
            actions=(
                ("drop_one", 6),
                ("stall_one", 2),
                ("shutdown_one", 2),
                ("ignore_pongs_one", 1),
                ("drop_all", 1),
                ("stall_all", 1),
            ),
        ),
        "chaos": SoakProfile(
            name="chaos",
            min_gap_s=5,
            max_gap_s=30,
            actions=(
                ("drop_one", 6),
                ("drop_all", 2),
                ("stall_one", 2),
                ("stall_all", 1),
                ("ignore_pongs_one", 1),
                ("ignore_pongs_all", 1),
                ("shutdown_one", 2),
                ("shutdown_all", 1),
            ),
        ),
    }
)
"""Soak fault schedules. ``chaos`` injects a fault every 5–30 s, ``flaky`` every 30–120 s."""


@attrs.frozen(kw_only=True)
class SoakRole:
    """One role's counters at the end of a soak (from :meth:`MarketDataHandle.statistics`)."""

    role: str
    reconnects: int
    rotations: int
    messages_received: int


@attrs.frozen(kw_only=True)
class SoakProgress:
    """A snapshot handed to ``on_progress`` every ``progress_every_s`` virtual seconds."""

    virtual_s: float
    trades_published: int
    events_delivered: int
    reconnects: int
    rotations: int


@attrs.frozen(kw_only=True)
class SoakReport:
    """What a soak measured. Times (``*_s``) are virtual seconds since the window opened.

    Attributes:
        seed: Seeds the market maker and the fault schedule.
        profile: The fault schedule's name.
        window_start_s: When the window opened, in virtual seconds after the call: once the
            first connection delivered a frame, plus half a market step.
        duration_s: The measured window (trades printed in it are accounted).
        stopped_early: ``on_progress`` ended the window before ``duration_s``.
        symbols: The symbols subscribed.
        market_step_s: The market feed's step.
        trades_published: Public trades the exchange printed in the window.
        trades_delivered: Of those, trades that reached the bus.
        trades_lost_in_outage: Lost while no connection was delivering data (acceptable).
        trades_lost_in_flight: Lost while some were, but all of them closed in that instant
            (acceptable; see the module docstring).
        trades_lost_while_up: Lost although a connection that carried it stayed up (must be 0).
        lost_in_flight_samples: Up to 20 ``(symbol, trade_id, printed_at_s)`` lost in flight.
        lost_while_up_samples: Up to 20 ``(symbol, trade_id, printed_at_s)`` lost while up.
        duplicates: Events delivered twice (trade id, depth ``lastUpdateId``, ticker ``E``,
            a closed kline); must be 0.
        out_of_order: Events delivered after a newer one of the same stream; must be 0. A
            closed kline delivered after updates of the next kline is allowed (it is counted in
            ``late_kline_closes`` instead).
        late_kline_closes: Closed klines delivered after the next kline's first update.
        events_by_type: Events received on the bus, by class name.
        bus_dropped: Events the bus dropped for the soak's subscriber (must be 0, or the tally
            is not trustworthy).
        longest_feed_gap_s: The longest time without any event on the bus.
        longest_feed_gap_end_s: When that gap ended.
        uncovered_s: Once-a-second samples that found no live, unstalled connection.
        reconnects: Reconnects after failures, all roles.
        rotations: Make-before-break rotations (age cap and ``serverShutdown``), all roles.
        roles: Per role; see the module docstring on reproducibility.
        connections_accepted: Handshakes the simulator's stream server accepted.
        max_connection_age_s: The oldest server-side connection seen (sampled once a second);
            the client rotates at ``rotate_after_s``, before the server's age cap.
        faults: Faults injected, by action.
        merger: The merger's counters at the end (``MergerStatistics`` as a mapping).
    """

    seed: int
    profile: str
    window_start_s: float
    duration_s: float
    stopped_early: bool
    symbols: tuple[str, ...]
    market_step_s: float
    trades_published: int
    trades_delivered: int
    trades_lost_in_outage: int
    trades_lost_in_flight: int
    trades_lost_while_up: int
    lost_in_flight_samples: tuple[tuple[str, int, float], ...]
    lost_while_up_samples: tuple[tuple[str, int, float], ...]
    duplicates: Mapping[str, int]
    out_of_order: Mapping[str, int]
    late_kline_closes: int
    events_by_type: Mapping[str, int]
    bus_dropped: int
    longest_feed_gap_s: float
    longest_feed_gap_end_s: float
    uncovered_s: int
    reconnects: int
    rotations: int
    roles: tuple[SoakRole, ...]
    connections_accepted: int
    max_connection_age_s: float
    faults: Mapping[str, int]
    merger: Mapping[str, int]

    @property
    def trades_lost(self) -> int:
        return self.trades_lost_in_outage + self.trades_lost_in_flight + self.trades_lost_while_up

    def without_role_names(self) -> SoakReport:
        """This report with the per-role rows unnamed and sorted: equal for equal arguments.

        Which role name a run's first connection belongs to is up to Trio's scheduler (see
        the module docstring); everything else, per-role counters included, is reproducible.
        """
        rows = sorted(
            (attrs.evolve(row, role="") for row in self.roles),
            key=lambda row: (row.reconnects, row.rotations, row.messages_received),
        )
        return attrs.evolve(self, roles=tuple(rows))

    def to_json(self) -> dict[str, object]:
        """The report as JSON-ready builtins (tuples become lists)."""
        data = attrs.asdict(self)
        data["trades_lost"] = self.trades_lost
        return data


# --- ground truth ---------------------------------------------------------------------------


_UP: Final = 1
_OUTAGE: Final = 2
_IN_FLIGHT: Final = 3
_INSTANT_S: Final = 0.001
"""How long after a trade its covering connections must still be live: longer than an instant
(virtual time stands still while frames are delivered), shorter than any feed step."""


@attrs.define(eq=False)
class _PendingCheck:
    check_at: float
    symbol: str
    trade_ids: list[int]
    covering: frozenset[int]


@attrs.define(eq=False)
class _Truth:
    """Every public trade the exchange prints while recording, and whether it was covered.

    ``state[symbol][trade_id]`` is 0 (not recorded), ``_OUTAGE`` (printed while no live
    connection was delivering that trade stream), ``_IN_FLIGHT`` (some were, but every one of
    them closed in that same instant) or ``_UP`` (one of them was still live an instant later).
    """

    sim: Simulator
    trade_streams: dict[str, str]
    start: float = 0.0
    recording: bool = False
    state: dict[str, bytearray] = attrs.field(factory=dict)
    printed_at: dict[str, array[float]] = attrs.field(factory=dict)
    """When each recorded trade printed (seconds since the window opened), by trade id."""
    published: int = 0
    pending: deque[_PendingCheck] = attrs.field(factory=deque)
    pending_added: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot)

    def on_trades(self, symbol: str, trades: Sequence[PublicTrade]) -> None:
        """The exchange's trade listener (synchronous, in the feed's task)."""
        if not self.recording or not trades:
            return
        stream = self.trade_streams.get(symbol)
        if stream is None:
            return
        covering = frozenset(
            info.id
            for info in self.sim.streams.connections()
            if stream in info.streams and not info.stalled
        )
        now = trio.current_time()
        state = self.state.setdefault(symbol, bytearray())
        times = self.printed_at.setdefault(symbol, array("d"))
        for trade in trades:
            _set(state, trade.trade_id, _UP if covering else _OUTAGE)
            if trade.trade_id >= len(times):
                times.extend([0.0] * max(trade.trade_id + 1 - len(times), len(times)))
            times[trade.trade_id] = now - self.start
        self.published += len(trades)
        if covering:
            self.pending.append(
                _PendingCheck(now + _INSTANT_S, symbol, [t.trade_id for t in trades], covering)
            )
            self.pending_added.unpark_all()

    async def check_survivors(self) -> NoReturn:
        """Mark trades ``_IN_FLIGHT`` whose covering connections all closed in their instant."""
        while True:
            if not self.pending:
                await self.pending_added.park()
                continue
            await trio.sleep_until(self.pending[0].check_at)
            live = {info.id for info in self.sim.streams.connections()}
            now = trio.current_time()
            while self.pending and self.pending[0].check_at <= now:
                check = self.pending.popleft()
                if not check.covering & live:
                    state = self.state[check.symbol]
                    for trade_id in check.trade_ids:
                        state[trade_id] = _IN_FLIGHT


def _set(buf: bytearray, index: int, value: int) -> None:
    if index >= len(buf):
        buf.extend(bytes(max(index + 1 - len(buf), len(buf))))
    buf[index] = value


# --- what reached the bus -------------------------------------------------------------------


@attrs.define(eq=False)
class _Tally:
    """Consumes the bus and checks order and uniqueness per stream."""

    start: float = 0.0
    delivered: dict[str, bytearray] = attrs.field(factory=dict)
    last_trade: dict[str, int] = attrs.field(factory=dict)
    last_depth: dict[str, int] = attrs.field(factory=dict)
    last_ticker: dict[str, int] = attrs.field(factory=dict)
    last_kline: dict[str, tuple[int, int]] = attrs.field(factory=dict)
    closed_klines: dict[str, set[int]] = attrs.field(factory=dict)
    duplicates: dict[str, int] = attrs.field(factory=dict)
    out_of_order: dict[str, int] = attrs.field(factory=dict)
    late_kline_closes: int = 0
    events: dict[str, int] = attrs.field(factory=dict)
    events_total: int = 0
    window_open: bool = False
    last_event_at: float | None = None
    longest_gap_s: float = 0.0
    longest_gap_end_s: float = 0.0

    def _count(self, table: dict[str, int], kind: str) -> None:
        table[kind] = table.get(kind, 0) + 1

    def _gap(self, now: float) -> None:
        previous = self.start if self.last_event_at is None else self.last_event_at
        if now - previous > self.longest_gap_s:
            self.longest_gap_s = now - previous
            self.longest_gap_end_s = now - self.start
        self.last_event_at = now

    def open_window(self, now: float) -> None:
        self.start = now
        self.window_open = True

    def close_window(self, now: float) -> None:
        """End the gap measurement at ``now``: the time since the last event is a gap too."""
        self._gap(now)
        self.window_open = False

    async def consume(self, subscription: Subscription[object]) -> None:
        async with subscription:
            async for event in subscription:
                self.on_event(event, trio.current_time())

    def on_event(self, event: object, now: float) -> None:
        if self.window_open:
            self._gap(now)
        self.events_total += 1
        self._count(self.events, type(event).__name__)
        if isinstance(event, Trade):
            self._trade(event)
        elif isinstance(event, Depth):
            self._monotonic("depth", self.last_depth, event.symbol, event.last_update_id)
        elif isinstance(event, Ticker):
            self._monotonic("ticker", self.last_ticker, event.symbol, event.event_time_ms)
        elif isinstance(event, Kline):
            self._kline(event)

    def _trade(self, trade: Trade) -> None:
        seen = self.delivered.setdefault(trade.symbol, bytearray())
        trade_id = trade.trade_id
        if trade_id < len(seen) and seen[trade_id]:
            self._count(self.duplicates, "trade")
            return
        _set(seen, trade_id, 1)
        last = self.last_trade.get(trade.symbol)
        if last is not None and trade_id < last:
            self._count(self.out_of_order, "trade")
        else:
            self.last_trade[trade.symbol] = trade_id

    def _monotonic(self, kind: str, last: dict[str, int], symbol: str, key: int) -> None:
        previous = last.get(symbol)
        if previous is not None and key <= previous:
            self._count(self.duplicates if key == previous else self.out_of_order, kind)
            return
        last[symbol] = key

    def _kline(self, kline: Kline) -> None:
        key = (kline.open_time_ms, kline.event_time_ms)
        last = self.last_kline.get(kline.symbol)
        if kline.closed:
            closed = self.closed_klines.setdefault(kline.symbol, set())
            if kline.open_time_ms in closed:
                self._count(self.duplicates, "kline")
                return
            closed.add(kline.open_time_ms)
            if last is not None and key < last:
                self.late_kline_closes += 1
                return
        elif last is not None and key <= last:
            self._count(self.duplicates if key == last else self.out_of_order, "kline")
            return
        self.last_kline[kline.symbol] = key


# --- the fault schedule ---------------------------------------------------------------------


@attrs.define(eq=False)
class _FaultSchedule:
    sim: Simulator
    profile: SoakProfile
    rng: random.Random
    injected: dict[str, int] = attrs.field(factory=dict)

    async def run(self) -> NoReturn:
        """Inject faults until cancelled; temporary faults are undone by child tasks."""
        profile = self.profile
        actions = [action for action, _ in profile.actions]
        weights = [weight for _, weight in profile.actions]
        async with trio.open_nursery() as nursery:
            if not actions:
                await trio.sleep_forever()
            while True:
                await trio.sleep(self.rng.uniform(profile.min_gap_s, profile.max_gap_s))
                action = self.rng.choices(actions, weights)[0]
                if self.inject(action, nursery):
                    self.injected[action] = self.injected.get(action, 0) + 1

    def inject(self, action: str, nursery: trio.Nursery) -> bool:
        faults = self.sim.faults
        by_role: dict[str, list[int]] = {}
        for info in self.sim.streams.connections():
            by_role.setdefault(info.remote, []).append(info.id)
        if not by_role:
            return False
        # Pick a role, not a connection id: ids of connections opened in the same instant are
        # numbered in Trio's (randomised) scheduling order. A role's newest connection is the
        # one it relies on (the other, if any, is a rotation's predecessor).
        role = self.rng.choice(sorted(by_role))
        target = by_role[role][-1]
        logger.info("soak.fault action=%s role=%s target=%d", action, role, target)
        if action == "drop_one":
            faults.drop_connections(target)
        elif action == "drop_all":
            faults.drop_connections()
        elif action == "stall_one":
            faults.stall_streams(True, target)
            nursery.start_soon(self._later, self.rng.uniform(5, 15), faults.stall_streams, target)
        elif action == "stall_all":
            faults.stall_streams(True)
            nursery.start_soon(self._later, self.rng.uniform(5, 15), faults.stall_streams, None)
        elif action == "ignore_pongs_one":
            faults.ignore_pongs(True, target)
            nursery.start_soon(self._later, 90.0, faults.ignore_pongs, target)
        elif action == "ignore_pongs_all":
            faults.ignore_pongs(True)
            nursery.start_soon(self._later, 90.0, faults.ignore_pongs, None)
        elif action == "shutdown_one":
            faults.shutdown_connections(target)
        else:
            assert action == "shutdown_all"
            faults.shutdown_connections()
        return True

    @staticmethod
    async def _later(
        delay_s: float, switch: Callable[[bool, int | None], None], target: int | None
    ) -> None:
        await trio.sleep(delay_s)
        switch(False, target)


# --- wiring ---------------------------------------------------------------------------------


@attrs.define(eq=False)
class _MemoryConnector:
    """Opens each market-data connection over ``sim.connect_ws_memory`` (no sockets).

    Each role's connections reach the simulator from a remote address of their own
    (``10.0.0.<n>``), which is how the fault schedule picks a *role* to hurt. ws_manager names
    the role in each connector call; addresses go to roles in the order of their first
    attempt.
    """

    sim: Simulator
    server_nursery: trio.Nursery
    roles: int
    _addresses: dict[str, str] = attrs.field(factory=dict, init=False)

    async def __call__(
        self, nursery: trio.Nursery, url: str, *, message_queue_size: int, role: str = ""
    ) -> WebSocket:
        parts = urllib.parse.urlsplit(url)
        stream = self.sim.connect_ws_memory(self.server_nursery, remote_ip=self._address_of(role))
        ws: trio_websocket.WebSocketConnection = await trio_websocket.wrap_client_stream(
            nursery,
            stream,  # type: ignore[arg-type]  # any trio Stream works; the annotation is narrower
            parts.hostname or "sim",
            f"{parts.path}?{parts.query}",
            message_queue_size=message_queue_size,
        )
        return ws

    def _address_of(self, role: str) -> str:
        address = self._addresses.get(role)
        if address is None:
            if len(self._addresses) == self.roles:
                raise RuntimeError(f"soak connector: more roles than {self.roles}: {role!r}")
            # A known role gets its fixed address: with jittered backoff each role has a
            # schedule of its own, so which address it gets must not depend on Trio's order.
            known = role in DEFAULT_ROLES
            n = DEFAULT_ROLES.index(role) + 1 if known else len(self._addresses) + 1
            address = self._addresses[role] = f"10.0.0.{n}"
        return address


def _memory_gateway(sim: Simulator) -> contextlib.AbstractAsyncContextManager[Gateway]:
    """A gateway to the simulator's REST app in memory, on the simulator's clock."""
    return open_gateway(
        Settings(),
        rest_url="http://sim.invalid",
        api_key=Secret(sim.api_key),
        signer=HmacSigner(Secret(sim.api_secret)),
        transport=httpx.ASGITransport(app=sim.http_app, client=("127.0.0.1", 40000)),
        wall_clock_ms=sim.clock.now_ms,
        prepare=False,
    )


async def _run_feed(
    sim: Simulator,
    step_s: float,
    *,
    task_status: trio.TaskStatus[MarketFeed] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """The simulator's market feed, or the same loop on a coarser grid (a multiple of 100 ms).

    With a coarse step each tick steps the market maker once and calls
    :meth:`MarketFeed.tick` with the elapsed time, so every stream due at that multiple of
    100 ms is published: with a 1 s step the ``@100ms`` depth and the ticker go out once a
    second, klines every 2 s.
    """
    step_ms = round(step_s * 1000)
    if step_ms <= 100:
        await run_market_feed(
            sim.exchange,
            sim.market_maker,
            sim.hub,
            sim.clock,
            step_s=step_s,
            task_status=task_status,
        )
    feed = MarketFeed(sim.exchange, sim.hub, sim.clock)
    try:
        start = trio.current_time()
        k = 0
        while True:
            now_ms = sim.clock.now_ms()
            sim.market_maker.step(now_ms)
            feed.tick(k * step_ms, now_ms)
            if k == 0:
                task_status.started(feed)
            k += 1
            await trio.sleep_until(start + k * step_ms / 1000)
    finally:
        feed.close()


def _check_step(market_step_s: float) -> None:
    step_ms = round(market_step_s * 1000)
    if (
        step_ms <= 0
        or abs(step_ms - market_step_s * 1000) > 1e-6
        or not (100 % step_ms == 0 or (step_ms % 100 == 0 and 1000 % step_ms == 0))
    ):
        raise ValueError(
            "market_step_s must divide 0.1 s (0.1, 0.05 ...) or be 0.2, 0.5 or 1.0, "
            f"got {market_step_s!r}"
        )


def _profile_of(profile: str | SoakProfile) -> SoakProfile:
    if isinstance(profile, SoakProfile):
        return profile
    try:
        return SOAK_PROFILES[profile]
    except KeyError:
        raise ValueError(
            f"unknown soak profile {profile!r}; choose from {sorted(SOAK_PROFILES)}"
        ) from None


async def run_virtual_soak(
    *,
    duration_s: float,
    seed: int = 1,
    profile: str | SoakProfile = "chaos",
    symbols: Sequence[str] = DEFAULT_SOAK_SYMBOLS,
    market_step_s: float = 0.1,
    max_connection_age_s: float = 24 * 3600.0,
    config: MarketDataConfig | None = None,
    settle_s: float = 2.0,
    epoch_ms: int = DEFAULT_VIRTUAL_EPOCH_MS,
    progress_every_s: float = 3600.0,
    on_progress: Callable[[SoakProgress], bool | None] | None = None,
    backfill: bool = False,
) -> SoakReport:
    """Soak the market-data path against the in-memory simulator and report what arrived.

    Meant for ``trio.testing.MockClock(autojump_threshold=0)`` (``autojump_clock`` in tests):
    it sleeps ``duration_s + settle_s`` of Trio time.

    Args:
        duration_s: The measured window of virtual time.
        seed: Seeds the simulator's market maker and the fault schedule.
        profile: A name from :data:`SOAK_PROFILES` (``none``, ``flaky``, ``chaos``) or a
            :class:`SoakProfile`.
        symbols: Symbols to subscribe (each has trade, ticker, depth20 and kline_1m streams).
        market_step_s: The market feed's step. 0.1 s is the simulator's own feed; a multiple
            of 0.1 s steps the market less often and publishes the ``@100ms`` depth once per
            step, which cuts the frames (and the wall time) of long soaks.
        max_connection_age_s: The simulator's age cap on connections (Binance: 24 h).
        config: The market-data configuration (default :class:`MarketDataConfig`, which
            rotates at 23.5 h).
        settle_s: Fault-free time after the window, for trades still held or in flight.
        epoch_ms: The simulator's epoch at the start (fixed, for reproducible event times).
        progress_every_s: Interval of ``on_progress`` calls, in virtual seconds.
        on_progress: Called synchronously with a :class:`SoakProgress` (e.g. to print); when it
            returns True the window ends there (a wall-time budget), and the report's
            ``duration_s`` is the window actually measured.
        backfill: Give market data the gateway (in memory, over the simulator's REST app) as
            its backfill source, as ``genesis run`` does: trades no connection delivered are
            then fetched from ``historicalTrades`` instead of lost.

    Returns:
        The :class:`SoakReport`.

    Raises:
        ValueError: a bad profile, step or duration.
        ExceptionGroup: whatever crashed a service of the soak (the market-data service
            included) propagates, as from any nursery.

    Everything it starts runs in its own nursery and is cancelled before it returns.
    """
    if not duration_s > 0 or settle_s < 0 or not progress_every_s > 0:
        raise ValueError("duration_s and progress_every_s must be > 0, settle_s >= 0")
    _check_step(market_step_s)
    soak_profile = _profile_of(profile)
    sim = build_simulator(
        SimConfig(
            seed=seed,
            symbols=tuple(symbols),
            max_connection_age_s=max_connection_age_s,
            epoch_ms=epoch_ms,
        ),
        clock=SimClock.start(epoch_ms),
    )
    names = sim.config.symbols
    called_at = trio.current_time()
    truth = _Truth(sim, {s: market_streams([s])[0] for s in names})
    tally = _Tally()
    bus = EventBus()
    schedule = _FaultSchedule(sim, soak_profile, random.Random(seed))
    sampler = _Sampler(sim)
    remove_listener = sim.exchange.add_trade_listener(truth.on_trades)
    try:
        async with contextlib.AsyncExitStack() as stack, trio.open_nursery() as nursery:
            await nursery.start(_run_feed, sim, market_step_s)
            nursery.start_soon(truth.check_survivors)
            subscription = bus.subscribe(Trade, Ticker, Depth, Kline, buffer_size=_BUS_BUFFER)
            nursery.start_soon(tally.consume, subscription)
            connector = _MemoryConnector(sim, nursery, len(DEFAULT_ROLES))
            gateway = None
            if backfill:
                gateway = await stack.enter_async_context(_memory_gateway(sim))
            handle: MarketDataHandle = await nursery.start(
                functools.partial(
                    run_market_data,
                    _STREAM_BASE_URL,
                    names,
                    bus,
                    config=config,
                    connector=connector,
                    wall_clock_ms=sim.clock.now_ms,
                    backfill=gateway,
                    rng=random.Random(seed + 1),  # the backoff's jitter, reproducible too
                )
            )
            # The window (and the once-a-second samples) sit half a step off the feed's grid, so
            # no boundary or sample shares an instant with a tick (whose order within the
            # instant Trio randomises).
            await trio.sleep(market_step_s / 2)
            truth.start = trio.current_time()
            truth.recording = True
            tally.open_window(truth.start)
            logger.info(
                "soak.start profile=%s seed=%d duration_s=%g symbols=%s",
                soak_profile.name,
                seed,
                duration_s,
                ",".join(names),
            )
            async with trio.open_nursery() as faults_nursery:
                faults_nursery.start_soon(schedule.run)
                window_s = await _measure(
                    sim, handle, truth, tally, sampler, duration_s, progress_every_s, on_progress
                )
                truth.recording = False
                tally.close_window(trio.current_time())
                faults_nursery.cancel_scope.cancel()
            sim.faults.reset()
            await trio.sleep(settle_s)
            statistics = handle.statistics()
            nursery.cancel_scope.cancel()
    finally:
        remove_listener()
    losses = _losses(truth, tally)
    merger = statistics.merger
    report = SoakReport(
        seed=seed,
        profile=soak_profile.name,
        window_start_s=truth.start - called_at,
        duration_s=window_s,
        stopped_early=window_s < duration_s,
        symbols=names,
        market_step_s=market_step_s,
        trades_published=truth.published,
        trades_delivered=truth.published - losses.total,
        trades_lost_in_outage=losses.outage,
        trades_lost_in_flight=losses.in_flight,
        trades_lost_while_up=losses.while_up,
        lost_in_flight_samples=tuple(losses.in_flight_samples),
        lost_while_up_samples=tuple(losses.while_up_samples),
        duplicates=dict(sorted(tally.duplicates.items())),
        out_of_order=dict(sorted(tally.out_of_order.items())),
        late_kline_closes=tally.late_kline_closes,
        events_by_type=dict(sorted(tally.events.items())),
        bus_dropped=bus.statistics().dropped,
        longest_feed_gap_s=round(tally.longest_gap_s, 6),
        longest_feed_gap_end_s=round(tally.longest_gap_end_s, 6),
        uncovered_s=sampler.uncovered_s,
        reconnects=sum(c.reconnects for c in statistics.connections),
        rotations=sum(c.rotations for c in statistics.connections),
        roles=tuple(
            SoakRole(
                role=c.role,
                reconnects=c.reconnects,
                rotations=c.rotations,
                messages_received=c.messages_received,
            )
            for c in statistics.connections
        ),
        connections_accepted=sim.streams.statistics().connections_accepted,
        max_connection_age_s=sampler.max_age_ms / 1000,
        faults=dict(sorted(schedule.injected.items())),
        merger={
            "frames": merger.frames,
            "published": merger.published,
            "duplicates_dropped": merger.duplicates_dropped,
            "gaps": merger.gaps,
            "trades_missing": merger.trades_missing,
            "decode_errors": merger.decode_errors,
            "held": merger.held,
            "bus_rejected": merger.bus_rejected,
            "backfills": merger.backfills,
            "backfilled_trades": merger.backfilled_trades,
            "backfilled_klines": merger.backfilled_klines,
            "backfill_failures": merger.backfill_failures,
            "sequence_resets": merger.sequence_resets,
        },
    )
    logger.info(
        "soak.done published=%d lost_outage=%d lost_in_flight=%d lost_while_up=%d reconnects=%d",
        report.trades_published,
        losses.outage,
        losses.in_flight,
        losses.while_up,
        report.reconnects,
    )
    return report


@attrs.define(eq=False)
class _Sampler:
    """Once a second: is any connection delivering, and how old is the oldest."""

    sim: Simulator
    uncovered_s: int = 0
    max_age_ms: int = 0

    def sample(self) -> None:
        now_ms = self.sim.clock.now_ms()
        conns = self.sim.streams.connections()
        if all(info.stalled for info in conns):
            self.uncovered_s += 1
        for info in conns:
            self.max_age_ms = max(self.max_age_ms, now_ms - info.connected_at_ms)


async def _measure(
    sim: Simulator,
    handle: MarketDataHandle,
    truth: _Truth,
    tally: _Tally,
    sampler: _Sampler,
    duration_s: float,
    progress_every_s: float,
    on_progress: Callable[[SoakProgress], bool | None] | None,
) -> float:
    """Sample once a second until the window ends; returns its length."""
    start = truth.start
    end = start + duration_s
    next_progress = start + progress_every_s
    sample_at = start
    while sample_at < end:
        sample_at = min(sample_at + _SAMPLE_EVERY_S, end)
        await trio.sleep_until(sample_at)
        sampler.sample()
        if on_progress is not None and sample_at >= next_progress:
            next_progress += progress_every_s
            if on_progress(_progress(handle, truth, tally, sample_at - start)):
                logger.info("soak.stopped_early virtual_s=%g", sample_at - start)
                break
    return sample_at - start


def _progress(
    handle: MarketDataHandle, truth: _Truth, tally: _Tally, virtual_s: float
) -> SoakProgress:
    statistics = handle.statistics()
    return SoakProgress(
        virtual_s=virtual_s,
        trades_published=truth.published,
        events_delivered=tally.events_total,
        reconnects=sum(c.reconnects for c in statistics.connections),
        rotations=sum(c.rotations for c in statistics.connections),
    )


@attrs.define
class _Losses:
    outage: int = 0
    in_flight: int = 0
    while_up: int = 0
    in_flight_samples: list[tuple[str, int, float]] = attrs.field(factory=list)
    while_up_samples: list[tuple[str, int, float]] = attrs.field(factory=list)

    @property
    def total(self) -> int:
        return self.outage + self.in_flight + self.while_up


def _losses(truth: _Truth, tally: _Tally) -> _Losses:
    losses = _Losses()
    for symbol, state in sorted(truth.state.items()):
        delivered = tally.delivered.get(symbol, bytearray())
        printed_at = truth.printed_at[symbol]
        for trade_id, mark in enumerate(state):
            if not mark or (trade_id < len(delivered) and delivered[trade_id]):
                continue
            sample = (symbol, trade_id, round(printed_at[trade_id], 6))
            if mark == _OUTAGE:
                losses.outage += 1
            elif mark == _IN_FLIGHT:
                losses.in_flight += 1
                if len(losses.in_flight_samples) < _LOST_SAMPLES:
                    losses.in_flight_samples.append(sample)
            else:
                losses.while_up += 1
                if len(losses.while_up_samples) < _LOST_SAMPLES:
                    losses.while_up_samples.append(sample)
    return losses
