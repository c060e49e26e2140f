"""Fault injection for the whole simulator: one handle over every component's switches.

:class:`Faults` is the Python handle tests use (``sim.faults.drop_connections()``) and what the
admin API under ``/sim/`` calls. Each method flips the switches of the component that owns the
behaviour (stream server, WS API, REST app, rate limiter, clock, exchange); nothing is faked
above them, so a fault looks to a client exactly as the real thing would.

``run_fault_profile`` runs a :class:`FaultSchedule`: faults drawn from a seeded
``random.Random``, so the same seed and the same (virtual) times give the same faults and a soak
that found a bug can be replayed. It is the one schedule of ``genesis sim --faults``,
``genesis soak`` and the virtual soak (:mod:`genesis.testing`). Profiles
(:data:`FAULT_PROFILES`):

- ``none``: nothing.
- ``flaky``: every 30–120 s, mostly one market-stream connection dropped, stalled for 5–15 s,
  shut down (``serverShutdown``) or deaf to pongs for 90 s; sometimes every connection dropped
  or stalled; a 5xx burst of 1–3 REST requests; 200–800 ms of REST latency for 5–20 s.
- ``chaos``: every 5–30 s, any of the above, plus every connection deaf to pongs or shut down,
  execute-then-503 on the next order, and a 1.5 s clock skew for 10–30 s.
"""

from __future__ import annotations

import logging
import random
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, NoReturn

import attrs
import trio

from genesis.sim.symbols import SYMBOL_STATUSES

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from genesis.sim.clock import SimClock
    from genesis.sim.exchange import Exchange
    from genesis.sim.ratelimit import Interval, LimitKind, RateLimiter
    from genesis.sim.rest import RestFaults
    from genesis.sim.streams import StreamFaults
    from genesis.sim.ws_api import WsApiContext

__all__ = [
    "FAULT_ACTIONS",
    "FAULT_PROFILES",
    "FaultProfile",
    "FaultSchedule",
    "Faults",
    "run_fault_profile",
]

logger = logging.getLogger(__name__)

_LIMIT_KINDS: Final[dict[str, LimitKind]] = {
    "REQUEST_WEIGHT": "REQUEST_WEIGHT",
    "ORDERS": "ORDERS",
    "RAW_REQUESTS": "RAW_REQUESTS",
}
_INTERVALS: Final[dict[str, Interval]] = {
    "SECOND": "SECOND",
    "MINUTE": "MINUTE",
    "HOUR": "HOUR",
    "DAY": "DAY",
}


@attrs.define(eq=False)
class Faults:
    """Every fault the simulator can inject, acting on the live components.

    Connection ids are those of ``streams.connections()`` (market streams) and
    ``ws_api.connections()`` (WS API); the two id spaces are separate.
    """

    streams: StreamFaults
    ws_api: WsApiContext
    rest: RestFaults
    limiter: RateLimiter
    clock: SimClock
    exchange: Exchange

    # --- WebSocket connections ------------------------------------------------------------

    def drop_connections(self, conn_id: int | None = None, *, ws_api: bool = False) -> int:
        """Drop (TCP close, no close frame) one connection by id, or all; returns how many."""
        if ws_api:
            if conn_id is None:
                return sum(self.ws_api.drop(c.id) for c in self.ws_api.connections())
            return int(self.ws_api.drop(conn_id))
        if conn_id is None:
            return self.streams.drop_all()
        return int(self.streams.drop(conn_id))

    def shutdown_connections(self, conn_id: int | None = None) -> int:
        """Planned close: ``serverShutdown`` then close 1001, on streams and the WS API."""
        if conn_id is not None:
            return int(self.streams.shutdown(conn_id))
        return self.streams.shutdown_all() + self.ws_api.shutdown_all()

    def stall_streams(self, on: bool = True, conn_id: int | None = None) -> None:
        """Withhold market data frames (pings go on) on one connection or all."""
        if on:
            self.streams.stall(conn_id)
        else:
            self.streams.unstall(conn_id)

    def stop_pings(self, on: bool = True, conn_id: int | None = None) -> None:
        """Stop (or resume) the server's pings on one connection or all."""
        if conn_id is None:
            self.streams.stop_pings = on
        elif on:
            self.streams.ping_stopped_ids.add(conn_id)
        else:
            self.streams.ping_stopped_ids.discard(conn_id)

    def ignore_pongs(self, on: bool = True, conn_id: int | None = None) -> None:
        """Stop honouring pongs: the connection is closed 60 s after its next ping."""
        if conn_id is None:
            self.streams.ignore_pongs = on
        elif on:
            self.streams.pong_ignored_ids.add(conn_id)
        else:
            self.streams.pong_ignored_ids.discard(conn_id)

    # --- REST ---------------------------------------------------------------------------

    def error_burst(self, count: int, status: int = 503) -> None:
        """Answer the next ``count`` REST requests with ``status`` (no effect on the exchange)."""
        if count < 0:
            raise ValueError("count must be >= 0")
        self.rest.error_status = status
        self.rest.error_burst = count

    def error_rate(self, rate: float, status: int = 503) -> None:
        """Answer each REST request with ``status`` with probability ``rate`` (seeded)."""
        self.rest.error_status = status
        self.rest.error_rate = rate

    def latency(self, seconds: float) -> None:
        """Add ``seconds`` before every REST answer."""
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        self.rest.latency_s = seconds

    def execute_then_503(self, count: int = 1) -> None:
        """Execute the next ``count`` order placements but answer them 503 -1007."""
        if count < 0:
            raise ValueError("count must be >= 0")
        self.rest.execute_then_503 = count

    # --- clock, limits, symbols ------------------------------------------------------------

    def clock_skew(self, ms: int) -> None:
        """Move the simulator's clock ``ms`` ahead of (negative: behind) the real time."""
        self.clock.skew_ms = ms

    def lower_limit(self, kind: str, interval: str, interval_num: int, limit: int) -> None:
        """Change one of exchangeInfo's rateLimits (e.g. REQUEST_WEIGHT MINUTE 1 → 100)."""
        if kind not in _LIMIT_KINDS or interval not in _INTERVALS:
            raise ValueError(f"unknown rate limit {kind} {interval}")
        if interval_num < 1 or limit < 1:
            raise ValueError("interval_num and limit must be >= 1")
        self.limiter.set_limit(_LIMIT_KINDS[kind], _INTERVALS[interval], interval_num, limit)

    def halt(self, symbol: str, status: str = "HALT") -> None:
        """Set ``symbol``'s status (HALT, BREAK, TRADING ...); new orders fail unless TRADING.

        Raises:
            ValueError: ``symbol`` is not traded here, or ``status`` is not a Binance status.
        """
        if status not in SYMBOL_STATUSES:
            raise ValueError(
                f"unknown symbol status {status!r}; choose from {sorted(SYMBOL_STATUSES)}"
            )
        if symbol not in {spec.symbol for spec in self.exchange.symbol_specs()}:
            raise ValueError(f"unknown symbol {symbol!r}")
        self.exchange.set_symbol_status(symbol, status)

    def reset(self) -> None:
        """Every switch off, limits back to Binance's, clock unskewed, symbols TRADING."""
        self.streams.reset()
        self.rest.clear()
        self.limiter.reset_limits()
        self.clock.skew_ms = 0
        for spec in self.exchange.symbol_specs():
            if spec.status != "TRADING":
                self.exchange.set_symbol_status(spec.symbol, "TRADING")

    def snapshot(self) -> dict[str, object]:
        """The current switches, JSON-ready (for ``GET /sim/status``)."""
        return {
            "streams": {
                "stall_all": self.streams.stall_all,
                "stalled_ids": sorted(self.streams.stalled_ids),
                "stop_pings": self.streams.stop_pings,
                "ignore_pongs": self.streams.ignore_pongs,
            },
            "rest": {
                "error_burst": self.rest.error_burst,
                "error_rate": self.rest.error_rate,
                "error_status": self.rest.error_status,
                "latency_s": self.rest.latency_s,
                "execute_then_503": self.rest.execute_then_503,
            },
            "clock_skew_ms": self.clock.skew_ms,
            "rate_limits": self.limiter.rate_limits_wire(),
            "halted": [s.symbol for s in self.exchange.symbol_specs() if s.status != "TRADING"],
        }


FAULT_ACTIONS: Final = (
    "drop_one",
    "drop_all",
    "stall_one",
    "stall_all",
    "ignore_pongs_one",
    "ignore_pongs_all",
    "shutdown_one",
    "shutdown_all",
    "error_burst",
    "latency",
    "execute_then_503",
    "clock_skew",
)
"""What a :class:`FaultProfile` can schedule (see :meth:`FaultSchedule.inject`)."""

_STREAM_ACTIONS: Final = frozenset(FAULT_ACTIONS[:8])
STALL_S: Final = (5.0, 15.0)
IGNORE_PONGS_S: Final = 90.0
"""Longer than a ping interval plus the 60 s pong timeout, so the server does close."""


def _names(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _ints(value: Iterable[int]) -> tuple[int, ...]:
    return tuple(value)


def _known_actions(
    _inst: object, _attr: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]
) -> None:
    for action in value:
        if action not in FAULT_ACTIONS:
            raise ValueError(f"unknown fault action {action!r}; choose from {FAULT_ACTIONS}")


@attrs.frozen(kw_only=True)
class FaultProfile:
    """A schedule of random faults: a gap between injections and a weighted menu.

    Attributes:
        name: Shown in logs and reports.
        min_gap_s: Shortest time between two injections.
        max_gap_s: Longest time between two injections.
        actions: Names from :data:`FAULT_ACTIONS`.
        weights: One weight (>= 1) per action; empty means equal weights.
    """

    name: str
    min_gap_s: float = attrs.field(validator=attrs.validators.ge(0))
    max_gap_s: float
    actions: tuple[str, ...] = attrs.field(converter=_names, validator=_known_actions)
    weights: tuple[int, ...] = attrs.field(default=(), converter=_ints)

    def __attrs_post_init__(self) -> None:
        if self.actions and (self.max_gap_s <= 0 or self.max_gap_s < self.min_gap_s):
            raise ValueError("max_gap_s must be > 0 and >= min_gap_s")
        if self.weights and (len(self.weights) != len(self.actions) or min(self.weights) < 1):
            raise ValueError("weights: one integer >= 1 per action")

    @classmethod
    def weighted(
        cls, name: str, min_gap_s: float, max_gap_s: float, menu: Mapping[str, int]
    ) -> FaultProfile:
        """A profile from ``{action: weight}``."""
        return cls(
            name=name,
            min_gap_s=min_gap_s,
            max_gap_s=max_gap_s,
            actions=tuple(menu),
            weights=tuple(menu.values()),
        )


FAULT_PROFILES: Final[Mapping[str, FaultProfile]] = MappingProxyType(
    {
        "none": FaultProfile(name="none", min_gap_s=0, max_gap_s=0, actions=()),
        "flaky": FaultProfile.weighted(
            "flaky",
            30,
            120,
            {
                "drop_one": 6,
                "stall_one": 2,
                "shutdown_one": 2,
                "ignore_pongs_one": 1,
                "drop_all": 1,
                "stall_all": 1,
                "error_burst": 2,
                "latency": 2,
            },
        ),
        "chaos": FaultProfile.weighted(
            "chaos",
            5,
            30,
            {
                "drop_one": 6,
                "drop_all": 2,
                "stall_one": 2,
                "stall_all": 1,
                "ignore_pongs_one": 1,
                "ignore_pongs_all": 1,
                "shutdown_one": 2,
                "shutdown_all": 1,
                "error_burst": 2,
                "latency": 2,
                "execute_then_503": 1,
                "clock_skew": 1,
            },
        ),
    }
)
"""The fault schedules of ``genesis sim --faults``, ``genesis soak`` and the virtual soak.

``flaky`` injects every 30–120 s, mostly one market-stream connection dropped, stalled, shut
down or deaf to pongs, sometimes all of them, and REST 5xx bursts and latency; ``chaos`` every
5–30 s, all of that plus execute-then-503 on the next order and a 1.5 s clock skew.
"""


@attrs.define(eq=False)
class FaultSchedule:
    """Draws and injects a :class:`FaultProfile`'s faults; :func:`run_fault_profile` runs it.

    Deterministic under its ``rng``: the same seed and the same (virtual) times give the same
    faults, so a soak that found a bug can be replayed. Faults aimed at one connection pick a
    client *address* first (``ConnectionInfo.remote``), then that address's newest connection
    (the one a client relies on while a rotation's predecessor winds down): connection ids of
    connections opened in the same instant follow Trio's randomised scheduling order, addresses
    do not. When every connection comes from one address (real sockets on loopback) the
    connection is drawn among them instead.
    """

    faults: Faults
    profile: FaultProfile
    rng: random.Random
    injected: dict[str, int] = attrs.field(factory=dict)
    """Faults injected so far, by action (a fault with no connection to hit is not counted)."""

    async def run(self, *, task_status: trio.TaskStatus[FaultSchedule]) -> NoReturn:
        """Inject until cancelled; temporary faults are undone by child tasks of this call.

        Cancelling it ends the pending undos too (the switches then stay as they were: call
        :meth:`Faults.reset` for a clean slate).
        """
        profile = self.profile
        weights = profile.weights or None
        async with trio.open_nursery() as nursery:
            task_status.started(self)
            if not profile.actions:
                await trio.sleep_forever()
            while True:
                await trio.sleep(self.rng.uniform(profile.min_gap_s, profile.max_gap_s))
                action = self.rng.choices(profile.actions, weights)[0]
                if self.inject(action, nursery):
                    self.injected[action] = self.injected.get(action, 0) + 1

    def _target(self) -> int | None:
        by_remote: dict[str, list[int]] = {}
        for info in self.faults.streams.connections():
            by_remote.setdefault(info.remote, []).append(info.id)
        if not by_remote:
            return None
        if len(by_remote) == 1:
            return self.rng.choice(next(iter(by_remote.values())))
        return by_remote[self.rng.choice(sorted(by_remote))][-1]

    def inject(self, action: str, nursery: trio.Nursery) -> bool:
        """Inject ``action`` now (undos run in ``nursery``); False when there was no target."""
        faults = self.faults
        target: int | None = None
        if action in _STREAM_ACTIONS:
            target = self._target()
            if target is None:
                return False
        logger.info(
            "sim.fault.inject profile=%s target=%s action=%s", self.profile.name, target, action
        )
        if action == "drop_one":
            faults.drop_connections(target)
        elif action == "drop_all":
            faults.drop_connections()
        elif action == "stall_one":
            faults.stall_streams(True, target)
            nursery.start_soon(
                self._later, self.rng.uniform(*STALL_S), faults.stall_streams, target
            )
        elif action == "stall_all":
            faults.stall_streams(True)
            nursery.start_soon(self._later, self.rng.uniform(*STALL_S), faults.stall_streams, None)
        elif action == "ignore_pongs_one":
            faults.ignore_pongs(True, target)
            nursery.start_soon(self._later, IGNORE_PONGS_S, faults.ignore_pongs, target)
        elif action == "ignore_pongs_all":
            faults.ignore_pongs(True)
            nursery.start_soon(self._later, IGNORE_PONGS_S, faults.ignore_pongs, None)
        elif action == "shutdown_one":
            assert target is not None
            faults.shutdown_connections(target)
        elif action == "shutdown_all":
            faults.streams.shutdown_all()
        elif action == "error_burst":
            faults.error_burst(self.rng.randint(1, 3), self.rng.choice((500, 502, 503, 504)))
        elif action == "latency":
            faults.latency(self.rng.uniform(0.2, 0.8))
            nursery.start_soon(self._undo, self.rng.uniform(5, 20), lambda: faults.latency(0))
        elif action == "execute_then_503":
            faults.execute_then_503(1)
        else:
            assert action == "clock_skew"
            faults.clock_skew(1500)
            nursery.start_soon(self._undo, self.rng.uniform(10, 30), lambda: faults.clock_skew(0))
        return True

    @staticmethod
    async def _later(
        delay_s: float, switch: Callable[[bool, int | None], None], target: int | None
    ) -> None:
        await trio.sleep(delay_s)
        switch(False, target)

    @staticmethod
    async def _undo(delay_s: float, undo: Callable[[], None]) -> None:
        await trio.sleep(delay_s)
        undo()


async def run_fault_profile(
    faults: Faults,
    profile: FaultProfile,
    *,
    seed: int,
    task_status: trio.TaskStatus[FaultSchedule] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Inject ``profile``'s faults until cancelled; deterministic under ``seed``.

    Hands its :class:`FaultSchedule` (``injected`` counts) to ``nursery.start``. Temporary
    faults (stalls, latency, skew, ignored pongs) are undone by child tasks of this service, so
    cancelling it ends them too (the switches then stay as they were: call
    :meth:`Faults.reset` for a clean slate).
    """
    await FaultSchedule(faults, profile, random.Random(seed)).run(task_status=task_status)
