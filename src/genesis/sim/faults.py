"""Fault injection for the whole simulator: one handle over every component's switches.

:class:`Faults` is the Python handle tests use (``sim.faults.drop_connections()``) and what the
admin API under ``/sim/`` calls. Each method flips the switches of the component that owns the
behaviour (stream server, WS API, REST app, rate limiter, clock, exchange); nothing is faked
above them, so a fault looks to a client exactly as the real thing would.

``run_fault_profile`` injects faults on a schedule drawn from a seeded ``random.Random``: the
same seed and the same (virtual) times give the same faults, so a soak that found a bug can be
replayed. Profiles:

- ``none``: nothing.
- ``flaky``: every 30–120 s one of: drop a market-stream connection, a 5xx burst of 1–3
  requests, 200–800 ms of added latency for 5–20 s, a 5–15 s stream stall.
- ``chaos``: every 5–30 s, any of the above plus dropping every connection, ignored pongs,
  execute-then-503 on the next order, and a 1.5 s clock skew for 10–30 s.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Final, NoReturn

import attrs
import trio

from genesis.sim.symbols import SYMBOL_STATUSES

if TYPE_CHECKING:
    from genesis.sim.clock import SimClock
    from genesis.sim.exchange import Exchange
    from genesis.sim.ratelimit import Interval, LimitKind, RateLimiter
    from genesis.sim.rest import RestFaults
    from genesis.sim.streams import StreamFaults
    from genesis.sim.ws_api import WsApiContext

__all__ = ["FAULT_PROFILES", "FaultProfile", "Faults", "run_fault_profile"]

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


@attrs.frozen(kw_only=True)
class FaultProfile:
    """A schedule of random faults: a gap in seconds between injections and the menu."""

    name: str
    min_gap_s: float
    max_gap_s: float
    actions: tuple[str, ...]


FAULT_PROFILES: Final[dict[str, FaultProfile]] = {
    "none": FaultProfile(name="none", min_gap_s=0, max_gap_s=0, actions=()),
    "flaky": FaultProfile(
        name="flaky",
        min_gap_s=30,
        max_gap_s=120,
        actions=("drop_one", "error_burst", "latency", "stall"),
    ),
    "chaos": FaultProfile(
        name="chaos",
        min_gap_s=5,
        max_gap_s=30,
        actions=(
            "drop_one",
            "drop_all",
            "error_burst",
            "latency",
            "stall",
            "ignore_pongs",
            "execute_then_503",
            "clock_skew",
        ),
    ),
}


async def _temporarily(seconds: float, undo: object) -> None:
    await trio.sleep(seconds)
    if callable(undo):
        undo()


async def run_fault_profile(
    faults: Faults,
    profile: FaultProfile,
    *,
    seed: int,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Inject ``profile``'s faults until cancelled; deterministic under ``seed``.

    Temporary faults (latency, stalls, skew, ignored pongs) are undone by child tasks of this
    service, so cancelling it ends them too (the switches then stay as they were: call
    :meth:`Faults.reset` for a clean slate).
    """
    rng = random.Random(seed)
    async with trio.open_nursery() as nursery:
        task_status.started()
        if not profile.actions:
            await trio.sleep_forever()
        while True:
            await trio.sleep(rng.uniform(profile.min_gap_s, profile.max_gap_s))
            action = rng.choice(profile.actions)
            logger.info("sim.fault.inject profile=%s action=%s", profile.name, action)
            if action == "drop_one":
                conns = faults.streams.connections()
                if conns:
                    faults.drop_connections(rng.choice(conns).id)
            elif action == "drop_all":
                faults.drop_connections()
            elif action == "error_burst":
                faults.error_burst(rng.randint(1, 3), rng.choice((500, 502, 503, 504)))
            elif action == "latency":
                faults.latency(rng.uniform(0.2, 0.8))
                nursery.start_soon(_temporarily, rng.uniform(5, 20), lambda: faults.latency(0))
            elif action == "stall":
                faults.stall_streams(True)
                nursery.start_soon(
                    _temporarily, rng.uniform(5, 15), lambda: faults.stall_streams(False)
                )
            elif action == "ignore_pongs":
                faults.ignore_pongs(True)
                nursery.start_soon(_temporarily, 90.0, lambda: faults.ignore_pongs(False))
            elif action == "execute_then_503":
                faults.execute_then_503(1)
            elif action == "clock_skew":
                faults.clock_skew(1500)
                nursery.start_soon(_temporarily, rng.uniform(10, 30), lambda: faults.clock_skew(0))
