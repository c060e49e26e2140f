"""Genesis benchmarks: every figure a ratio to a baseline measured in the same run.

Usage::

    python scripts/bench.py              # all parts, then one table of ratios (``make bench``)
    python scripts/bench.py feed         # feed: Genesis vs raw trio-websocket and python-binance
    python scripts/bench.py feed --tls   # the same over wss:// (TLS 1.3; --tls-version 1.2)
    python scripts/bench.py order [--rounds 300] [--warmup 30] [--profile]
    python scripts/bench.py micro        # limiter and breaker cores
    python scripts/bench.py peers        # the order flow through python-binance, same simulator
    python scripts/bench.py bridge [--events 20000] [--rate 2000] [--seconds 5]  (bench_bridge.py)

``feed`` is :mod:`bench_feed` (a pre-framed Binance-shaped server in its own process,
``scripts/bench_feed_server.py``, and each client in its own process). ``peers`` runs the order
round trip below through python-binance's ``AsyncClient`` (asyncio, so in its own process)
against the same simulator process, after the gateway and raw rounds of the same run.

``order`` measures three figures, each reported with its target:

1. **Order round trip** (place a LIMIT BUY far below the market, then cancel it by ``orderId``)
   to a simulator running in a *separate process* (``genesis sim --port 0``, so its CPU does not
   share this event loop), once through the whole :class:`~genesis.exchange.gateway.Gateway`
   (limiter, breaker, signing, decoding into models) and once as a *raw* baseline: the same two
   HTTP requests built by hand (HMAC over the percent-encoded query, ``X-MBX-APIKEY``, one
   kept-alive ``httpx.AsyncClient``, ``orjson`` of the body, nothing else). Gateway and raw
   rounds alternate in the same process and the same run, after ``--warmup`` rounds of each.
   The simulator's order and weight limits are raised first (admin API) and the gateway is
   opened afterwards, so it reads the raised limits from exchangeInfo and its limiter never
   queues: the ratio measures overhead, not queueing. ``ratio`` = gateway median / raw median
   (target <= 1.1). The table also gives each path's client CPU per round trip (this thread's
   ``thread_time``), which the simulator's speed and other load on the machine barely move.
2. **Limiter acquire** on :class:`~genesis.resilience.rate_limiter.RateLimiterCore` with live
   limits: µs per admitted ``submit`` of ``Cost(weight=1, orders=1)``, the clock advancing 1 s
   per submit so nothing ever queues (target <= 5 µs).
3. **Breaker guard** on :class:`~genesis.resilience.circuit_breaker.CircuitBreakerCore`: µs per
   ``try_enter`` + ``record_success`` while closed (target <= 2 µs).

The micro figures include the ``for`` loop's own cost (a few tens of ns). ``--profile`` then
runs ``--rounds`` more rounds of each path under ``cProfile`` and prints, per function, how much
more own time the gateway rounds spent than the raw ones. Only 127.0.0.1 is used; the run is
bounded in rounds and time (the simulator also stops by itself).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import hmac
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import time
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Final, cast
from urllib.parse import quote

import attrs
import httpx
import orjson
import trio

import bench_feed
from genesis.config import Secret, Settings
from genesis.exchange.gateway import open_gateway
from genesis.exchange.signing import HmacSigner
from genesis.models.exchange_info import RateLimit, RateLimitType
from genesis.models.orders import OrderRequest, OrderSide
from genesis.resilience.circuit_breaker import CircuitBreakerCore
from genesis.resilience.rate_limiter import Cost, Priority, RateLimiterCore
from genesis.sim.server import DEFAULT_API_KEY, DEFAULT_API_SECRET

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from genesis.exchange.gateway import Gateway

__all__ = ["RoundTrips", "main"]

SYMBOL: Final = "BTCUSDT"
QUANTITY: Final = "0.01"
PRICE: Final = "30000"
"""Half the simulator's BTCUSDT start price (60000): the order rests, it never fills."""
RECV_WINDOW_MS: Final = "5000"
RAISED_LIMITS: Final = (
    ("ORDERS", "SECOND", 10, 1_000_000),
    ("ORDERS", "DAY", 1, 1_000_000_000),
    ("REQUEST_WEIGHT", "MINUTE", 1, 1_000_000_000),
)
"""Raised on the simulator before the gateway opens (Binance's 50 orders/10 s would queue us)."""
LIVE_LIMITS: Final = (
    RateLimit(type=RateLimitType.REQUEST_WEIGHT, interval="MINUTE", interval_num=1, limit=6000),
    RateLimit(type=RateLimitType.ORDERS, interval="SECOND", interval_num=10, limit=50),
    RateLimit(type=RateLimitType.ORDERS, interval="DAY", interval_num=1, limit=160_000),
    RateLimit(type=RateLimitType.RAW_REQUESTS, interval="MINUTE", interval_num=5, limit=300_000),
)
"""Binance Spot's exchangeInfo ``rateLimits`` today."""
T0_MS: Final = 1_767_225_600_000  # 2026-01-01T00:00:00Z, so every window starts aligned
STARTUP_S: Final = 30.0
RATIO_TARGET: Final = 1.1
LIMITER_TARGET_US: Final = 5.0
BREAKER_TARGET_US: Final = 2.0
MICRO_REPEATS: Final = 5
LIMITER_SUBMITS: Final = 100_000
BREAKER_CALLS: Final = 200_000


@attrs.frozen(kw_only=True)
class RoundTrips:
    """Per-round-trip times (seconds) of one path: wall clock, and this thread's CPU."""

    name: str
    seconds: tuple[float, ...]
    cpu_seconds: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1000

    @property
    def p90_ms(self) -> float:
        return statistics.quantiles(self.seconds, n=10)[-1] * 1000

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.seconds) * 1000

    @property
    def cpu_median_us(self) -> float:
        return statistics.median(self.cpu_seconds) * 1e6


# --- the simulator in its own process ---------------------------------------------------------


def _sim_command(duration_s: float) -> list[str]:
    script = Path(sys.executable).with_name("genesis")
    found = str(script) if script.exists() else shutil.which("genesis")
    base = (
        [found]
        if found is not None
        else [
            sys.executable,
            "-c",
            "import sys; from genesis.app.cli import main; sys.exit(main())",
        ]
    )
    # --duration: the simulator stops by itself even if this process dies without cleaning up.
    return [*base, "sim", "--port", "0", "--log-level", "WARNING", "--duration", f"{duration_s:g}"]


async def _read_rest_url(stdout: trio.abc.ReceiveStream) -> str:
    """The URL of the ``rest: <url>`` line ``genesis sim`` prints once it serves."""
    buffer = b""
    with trio.fail_after(STARTUP_S):
        while True:
            chunk = await stdout.receive_some()
            if not chunk:
                raise RuntimeError(f"genesis sim exited before serving; it printed {buffer!r}")
            buffer += chunk
            for line in buffer.decode(errors="replace").splitlines(keepends=True):
                if line.startswith("rest: ") and line.endswith("\n"):
                    return line.removeprefix("rest: ").strip()


async def _raise_limits(client: httpx.AsyncClient, rest_url: str) -> None:
    for kind, interval, num, limit in RAISED_LIMITS:
        response = await client.post(
            f"{rest_url}/sim/faults/rate-limit",
            params={"type": kind, "interval": interval, "num": str(num), "limit": str(limit)},
        )
        response.raise_for_status()


# --- the two paths --------------------------------------------------------------------------


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _signed_path(path: str, params: Sequence[tuple[str, str]], secret: bytes) -> str:
    query = "&".join(f"{quote(name, safe='')}={quote(value, safe='')}" for name, value in params)
    signature = hmac.new(secret, query.encode(), hashlib.sha256).hexdigest()
    return f"{path}?{query}&signature={signature}"


def _raw_body(response: httpx.Response) -> dict[str, object]:
    if response.status_code != 200:
        raise RuntimeError(f"raw {response.request.method}: {response.status_code} {response.text}")
    return cast("dict[str, object]", orjson.loads(response.content))


def _raw_round(
    client: httpx.AsyncClient, rest_url: str, api_key: str, secret: bytes
) -> Callable[[int], Awaitable[None]]:
    headers = {"X-MBX-APIKEY": api_key}
    order_url = f"{rest_url}/api/v3/order"

    async def one(n: int) -> None:
        place = [
            ("symbol", SYMBOL),
            ("side", "BUY"),
            ("type", "LIMIT"),
            ("timeInForce", "GTC"),
            ("quantity", QUANTITY),
            ("price", PRICE),
            ("newClientOrderId", f"bench-raw-{n}"),
            ("newOrderRespType", "FULL"),
            ("recvWindow", RECV_WINDOW_MS),
            ("timestamp", str(_now_ms())),
        ]
        placed = _raw_body(
            await client.post(_signed_path(order_url, place, secret), headers=headers)
        )
        cancel = [
            ("symbol", SYMBOL),
            ("orderId", str(placed["orderId"])),
            ("recvWindow", RECV_WINDOW_MS),
            ("timestamp", str(_now_ms())),
        ]
        _raw_body(await client.delete(_signed_path(order_url, cancel, secret), headers=headers))

    return one


def _gateway_round(gateway: Gateway) -> Callable[[int], Awaitable[None]]:
    request = OrderRequest.limit(
        symbol=SYMBOL, side=OrderSide.BUY, quantity=Decimal(QUANTITY), price=Decimal(PRICE)
    )

    async def one(_n: int) -> None:
        order = await gateway.place_order(request)
        await gateway.cancel_order(SYMBOL, order_id=order.exchange_order_id)

    return one


async def _timed(round_trip: Callable[[int], Awaitable[None]], n: int) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one round; the CPU part is this process's own work only."""
    started, cpu_started = time.perf_counter(), time.thread_time()
    await round_trip(n)
    return time.perf_counter() - started, time.thread_time() - cpu_started


@attrs.frozen(kw_only=True)
class OrderRun:
    gateway: RoundTrips
    raw: RoundTrips
    limiter_waited: int
    limiter_admitted: int
    profiles: dict[str, pstats.Stats]
    peer: RoundTrips | None = None
    """python-binance's rounds against the same simulator (``peers``), else ``None``."""
    """cProfile of ``rounds`` more rounds of each path (``--profile``), else empty."""


async def bench_round_trips(
    rounds: int, warmup: int, profile: bool, *, peer: bool = False
) -> OrderRun:
    """Start ``genesis sim``, raise its limits, then time gateway and raw rounds alternately.

    With ``peer``, python-binance then runs the same rounds against the same simulator.
    """
    duration_s = 120 + 0.1 * (rounds + warmup) * (2 if profile else 1) * (2 if peer else 1)
    peer_run: RoundTrips | None = None
    secret = DEFAULT_API_SECRET.encode()
    with trio.fail_after(duration_s):
        async with trio.open_nursery() as nursery:
            process: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    _sim_command(duration_s),
                    stdout=subprocess.PIPE,
                    check=False,
                )
            )
            assert process.stdout is not None
            rest_url = await _read_rest_url(process.stdout)
            async with httpx.AsyncClient(trust_env=False) as client:
                await _raise_limits(client, rest_url)
                # Opened only now: it reads the raised limits from exchangeInfo on entry.
                async with open_gateway(
                    Settings(),
                    rest_url=rest_url,
                    api_key=Secret(DEFAULT_API_KEY),
                    signer=HmacSigner(Secret(DEFAULT_API_SECRET)),
                ) as gateway:
                    paths = {
                        "gateway": _gateway_round(gateway),
                        "raw httpx": _raw_round(client, rest_url, DEFAULT_API_KEY, secret),
                    }
                    times: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
                    for i in range(warmup + rounds):
                        for name, round_trip in paths.items():
                            elapsed = await _timed(round_trip, i)
                            if i >= warmup:
                                times[name].append(elapsed)
                    stats = gateway.statistics().limiter
                    profiles: dict[str, pstats.Stats] = {}
                    if profile:  # interleaved too: each profiler runs only during its rounds
                        profilers = {name: cProfile.Profile() for name in paths}
                        for i in range(warmup + rounds, warmup + 2 * rounds):
                            for name, round_trip in paths.items():
                                profilers[name].enable()
                                await round_trip(i)
                                profilers[name].disable()
                        profiles = {name: pstats.Stats(p) for name, p in profilers.items()}
                if peer:
                    peer_run = await _peer_rounds(rest_url, rounds, warmup)
            nursery.cancel_scope.cancel()  # SIGTERM: the simulator stops in order
    gateway_wall, gateway_cpu = zip(*times["gateway"], strict=True)
    raw_wall, raw_cpu = zip(*times["raw httpx"], strict=True)
    return OrderRun(
        gateway=RoundTrips(name="gateway", seconds=gateway_wall, cpu_seconds=gateway_cpu),
        raw=RoundTrips(name="raw httpx", seconds=raw_wall, cpu_seconds=raw_cpu),
        limiter_waited=stats.waited_total,
        limiter_admitted=stats.admitted_total,
        profiles=profiles,
        peer=peer_run,
    )


# --- python-binance as a peer (asyncio: its own process) ---------------------------------------


async def _python_binance_rounds(rest_url: str, rounds: int, warmup: int) -> dict[str, object]:
    from binance import AsyncClient

    client = AsyncClient(DEFAULT_API_KEY, DEFAULT_API_SECRET)
    client.API_URL = f"{rest_url}/api"
    seconds: list[float] = []
    cpu: list[float] = []
    try:
        for i in range(warmup + rounds):
            started, cpu_started = time.perf_counter(), time.thread_time()
            placed = await client.create_order(
                symbol=SYMBOL,
                side="BUY",
                type="LIMIT",
                timeInForce="GTC",
                quantity=QUANTITY,
                price=PRICE,
                newClientOrderId=f"bench-pb-{i}",
                recvWindow=int(RECV_WINDOW_MS),
            )
            await client.cancel_order(
                symbol=SYMBOL, orderId=placed["orderId"], recvWindow=int(RECV_WINDOW_MS)
            )
            if i >= warmup:
                seconds.append(time.perf_counter() - started)
                cpu.append(time.thread_time() - cpu_started)
    finally:
        await client.close_connection()
    return {"seconds": seconds, "cpu_seconds": cpu}


async def _peer_rounds(rest_url: str, rounds: int, warmup: int) -> RoundTrips:
    command = [sys.executable, __file__, "_pb-order", rest_url, str(rounds), str(warmup)]
    done = await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"python-binance rounds failed: {done.stderr.decode()[-2000:]}")
    result = orjson.loads(done.stdout.splitlines()[-1])
    return RoundTrips(
        name="python-binance",
        seconds=tuple(result["seconds"]),
        cpu_seconds=tuple(result["cpu_seconds"]),
    )


# --- the pure cores -------------------------------------------------------------------------


def _per_call_us(run: Callable[[], int]) -> float:
    """The median over :data:`MICRO_REPEATS` runs of µs per call; ``run`` returns its calls."""
    figures = []
    for _ in range(MICRO_REPEATS):
        started = time.perf_counter_ns()
        calls = run()
        figures.append((time.perf_counter_ns() - started) / 1000 / calls)
    return statistics.median(figures)


def _limiter_run() -> int:
    core = RateLimiterCore(LIVE_LIMITS, threshold=0.8)
    cost = Cost(weight=1, orders=1)
    priority = Priority.ORDER
    submit = core.submit
    # 1 s apart: 10 orders per 10 s window (budget 40), 86,400 a day (budget 128,000).
    for now_ms in range(T0_MS, T0_MS + LIMITER_SUBMITS * 1000, 1000):
        submit(cost, priority, now_ms)
    admitted = core.statistics(T0_MS + LIMITER_SUBMITS * 1000).admitted_total
    if admitted != LIMITER_SUBMITS:
        raise RuntimeError(f"the limiter queued: {admitted} of {LIMITER_SUBMITS} admitted")
    return LIMITER_SUBMITS


def _breaker_run() -> int:
    core = CircuitBreakerCore("rest")
    try_enter = core.try_enter
    record_success = core.record_success
    now = 0.0
    for _ in range(BREAKER_CALLS):
        now += 0.001
        record_success(try_enter(now), now)
    return BREAKER_CALLS


# --- driver ---------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "ok" if ok else "ABOVE TARGET"


def render(run: OrderRun, rounds: int, warmup: int, limiter_us: float, breaker_us: float) -> str:
    ratio = run.gateway.median_ms / run.raw.median_ms
    lines = [
        f"Order benchmark: Python {platform.python_version()} ({platform.python_implementation()}),"
        f" {os.cpu_count()} cores, {platform.platform()}",
        f"round trip = place LIMIT BUY {SYMBOL} {QUANTITY} @ {PRICE} + cancel by orderId; "
        f"simulator in its own process; {rounds} rounds each, interleaved, after {warmup} warmup",
        f"{'path':<12} {'median ms':>10} {'p90 ms':>10} {'mean ms':>10} {'client CPU µs':>14}",
    ]
    lines += [
        f"{p.name:<12} {p.median_ms:>10.3f} {p.p90_ms:>10.3f} {p.mean_ms:>10.3f}"
        f" {p.cpu_median_us:>14.0f}"
        for p in (run.gateway, run.raw)
    ]
    overhead_us = (run.gateway.median_ms - run.raw.median_ms) * 1000
    cpu_overhead_us = run.gateway.cpu_median_us - run.raw.cpu_median_us
    lines += [
        f"gateway overhead: {overhead_us:+.0f} µs wall, {cpu_overhead_us:+.0f} µs client CPU per "
        f"round trip (medians); limiter queued {run.limiter_waited} of "
        f"{run.limiter_admitted} admitted requests",
        f"ratio: {ratio:.3f}  (target <= {RATIO_TARGET}: {_verdict(ratio <= RATIO_TARGET)})",
        f"limiter_acquire_us: {limiter_us:.3f}  "
        f"(target <= {LIMITER_TARGET_US:g}: {_verdict(limiter_us <= LIMITER_TARGET_US)})",
        f"breaker_guard_us: {breaker_us:.3f}  "
        f"(target <= {BREAKER_TARGET_US:g}: {_verdict(breaker_us <= BREAKER_TARGET_US)})",
    ]
    return "\n".join(lines)


_SITE_PREFIXES: Final = tuple(
    sorted({str(Path(p).resolve()) + os.sep for p in (*sys.path, sys.prefix) if p}, key=len)[::-1]
)


_KERNEL_IO: Final = ("of '_socket.socket' objects", "of 'select.epoll' objects")


def _where(key: tuple[str, int, str]) -> str:
    filename, _line, function = key
    for prefix in _SITE_PREFIXES:
        if filename.startswith(prefix):
            filename = filename.removeprefix(prefix)
            break
    return f"{filename}:{function}"


def _by_function(stats: pstats.Stats) -> dict[str, tuple[float, float, int]]:
    """``file:function`` → (tottime, cumtime, calls); cumtime is the largest entry's."""
    merged: dict[str, tuple[float, float, int]] = {}
    # pstats documents no accessor that keeps file and function apart; typeshed omits .stats.
    table = stats.stats  # type: ignore[attr-defined]
    raw = cast("dict[tuple[str, int, str], tuple[int, int, float, float, object]]", table)
    for key, (_primitive, calls, tottime, cumtime, _callers) in raw.items():
        tot, cum, n = merged.get(_where(key), (0.0, 0.0, 0))
        merged[_where(key)] = (tot + tottime, max(cum, cumtime), n + calls)
    return merged


def render_profile(profiles: dict[str, pstats.Stats], rounds: int) -> str:
    """Where the gateway's extra time goes: own time per function, gateway minus raw."""
    gateway = _by_function(profiles["gateway"])
    raw = _by_function(profiles["raw httpx"])
    per_round_us = 1e6 / rounds
    none = (0.0, 0.0, 0)
    rows = sorted(
        (
            (gateway.get(name, none)[0] - raw.get(name, none)[0]) * per_round_us,
            (gateway.get(name, none)[2] - raw.get(name, none)[2]) / rounds,
            name,
        )
        for name in gateway.keys() | raw.keys()
    )
    rows.reverse()
    # Socket and epoll calls are the same I/O on both paths (one more poll per request: a
    # scheduler pass); their wall time is mostly the kernel's and the simulator's.
    kernel = [row for row in rows if any(io in row[2] for io in _KERNEL_IO)]
    rows = [row for row in rows if row not in kernel]
    kernel = [row for row in kernel if abs(row[0]) >= 1 or row[1]]
    lines = [
        f"\ncProfile, {rounds} more rounds of each path: own time (tottime) per round trip, "
        "gateway minus raw (profiler overhead inflates small functions)",
        f"{'µs/round':>9} {'calls/round':>12}  function",
    ]
    lines += [f"{us:>9.1f} {calls:>+12.1f}  {name}" for us, calls, name in rows[:25]]
    lines += [
        "(left out, kernel I/O: "
        + ", ".join(
            f"{name.split(':', 1)[1]} {us:+.0f} µs {calls:+.1f} calls" for us, calls, name in kernel
        )
        + ")"
    ]
    lines += [
        "\ngateway only, genesis functions by cumulative time per round trip (for coroutines "
        "this sums their resumptions)",
        f"{'cum µs':>9} {'own µs':>9} {'calls/round':>12}  function",
    ]
    ours = sorted(
        ((cum, tot, n, name) for name, (tot, cum, n) in gateway.items() if "genesis" in name),
        reverse=True,
    )
    lines += [
        f"{cum * per_round_us:>9.1f} {tot * per_round_us:>9.1f} {n / rounds:>12.1f}  {name}"
        for cum, tot, n, name in ours[:25]
    ]
    return "\n".join(lines)


def cmd_order(rounds: int, warmup: int, profile: bool) -> int:
    started = time.monotonic()
    run = trio.run(bench_round_trips, rounds, warmup, profile)
    limiter_us = _per_call_us(_limiter_run)
    breaker_us = _per_call_us(_breaker_run)
    print(render(run, rounds, warmup, limiter_us, breaker_us))
    if run.profiles:
        print(render_profile(run.profiles, rounds))
    print(f"(total {time.monotonic() - started:.1f} s)")
    return 0


def cmd_micro() -> int:
    limiter_us = _per_call_us(_limiter_run)
    breaker_us = _per_call_us(_breaker_run)
    print(
        f"limiter_acquire_us: {limiter_us:.3f}  "
        f"(target <= {LIMITER_TARGET_US:g}: {_verdict(limiter_us <= LIMITER_TARGET_US)})\n"
        f"breaker_guard_us: {breaker_us:.3f}  "
        f"(target <= {BREAKER_TARGET_US:g}: {_verdict(breaker_us <= BREAKER_TARGET_US)})"
    )
    return 0


def render_peers(run: OrderRun) -> str:
    assert run.peer is not None
    rows = (run.gateway, run.raw, run.peer)
    lines = [
        "order round trip (place LIMIT + cancel), one simulator process, same run:",
        f"{'path':<15} {'median ms':>10} {'p90 ms':>10} {'client CPU µs':>14}",
    ]
    lines += [
        f"{p.name:<15} {p.median_ms:>10.3f} {p.p90_ms:>10.3f} {p.cpu_median_us:>14.0f}"
        for p in rows
    ]
    lines.append(
        f"gateway / python-binance: {run.gateway.median_ms / run.peer.median_ms:.3f} wall, "
        f"{run.gateway.cpu_median_us / run.peer.cpu_median_us:.3f} client CPU"
    )
    return "\n".join(lines)


def cmd_peers(rounds: int, warmup: int) -> int:
    run = trio.run(partial(bench_round_trips, rounds, warmup, False, peer=True))
    print(render_peers(run))
    return 0


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.platform()}; load average {load:.1f} at the start"
    )


def cmd_all(args: argparse.Namespace) -> int:
    """Every part in one run, then one table of ratios."""
    started = time.monotonic()
    machine = _machine()
    print(f"machine: {machine}", flush=True)
    print("feed ...", file=sys.stderr, flush=True)
    feed = bench_feed.run_feed(
        args.reps,
        args.depth_events,
        args.trade_events,
        args.paced_events,
        tls=bench_feed.tls_option(args),
    )
    print("order and peers ...", file=sys.stderr, flush=True)
    order = trio.run(partial(bench_round_trips, args.rounds, args.warmup, False, peer=True))
    limiter_us = _per_call_us(_limiter_run)
    breaker_us = _per_call_us(_breaker_run)
    assert order.peer is not None
    pb_depth = feed.rate("python-binance", "depth20")
    pb_trade = feed.rate("python-binance", "trade")
    rows = [
        (
            "feed depth20, Genesis 3 conn / python-binance (events/s)",
            feed.rate("genesis3", "depth20") / pb_depth,
            ">= 1.5",
        ),
        (
            "feed trade, Genesis 3 conn / python-binance (events/s)",
            feed.rate("genesis3", "trade") / pb_trade,
            ">= 2",
        ),
        (
            "feed depth20, Genesis 1 conn / python-binance (events/s)",
            feed.rate("genesis1", "depth20") / pb_depth,
            ">= 2",
        ),
        (
            "feed trade, Genesis 1 conn / python-binance (events/s)",
            feed.rate("genesis1", "trade") / pb_trade,
            ">= 2",
        ),
        (
            "feed depth20, Genesis 1 conn / raw trio-websocket (events/s)",
            feed.rate("genesis1", "depth20") / feed.rate("raw", "depth20"),
            ">= 1",
        ),
        (
            "feed trade, Genesis 1 conn / raw trio-websocket (events/s)",
            feed.rate("genesis1", "trade") / feed.rate("raw", "trade"),
            ">= 1",
        ),
        (
            "feed depth20, Genesis 3 conn / python-binance (events per client CPU s)",
            feed.cpu_rate("genesis3", "depth20") / feed.cpu_rate("python-binance", "depth20"),
            ">= 1.5",
        ),
        (
            "feed trade, Genesis 3 conn / python-binance (events per client CPU s)",
            feed.cpu_rate("genesis3", "trade") / feed.cpu_rate("python-binance", "trade"),
            ">= 2",
        ),
        (
            "feed paced 1k/s depth20 p99, Genesis 3 conn / raw",
            feed.paced_figure("genesis3", "p99_us") / feed.paced_figure("raw", "p99_us"),
            "<= 1.5",
        ),
        (
            "feed paced 1k/s depth20 CPU/event, Genesis 3 conn / raw",
            feed.paced_figure("genesis3", "cpu_us_per_event")
            / feed.paced_figure("raw", "cpu_us_per_event"),
            "(<= 60 µs abs.)",
        ),
        (
            "order round trip, gateway / raw httpx (median wall)",
            order.gateway.median_ms / order.raw.median_ms,
            "<= 1.1",
        ),
        (
            "order round trip, gateway / python-binance (median wall)",
            order.gateway.median_ms / order.peer.median_ms,
            "<= 1",
        ),
        (
            "order round trip, gateway / python-binance (client CPU)",
            order.gateway.cpu_median_us / order.peer.cpu_median_us,
            "<= 1",
        ),
        ("limiter acquire, µs per call (absolute)", limiter_us, "<= 5"),
        ("breaker guard, µs per call (absolute)", breaker_us, "<= 2"),
    ]
    print()
    print(bench_feed.render_feed(feed))
    print()
    print(render(order, args.rounds, args.warmup, limiter_us, breaker_us))
    print(render_peers(order))
    print()
    print(f"## Ratios, one run ({machine})")
    print()
    print("| figure | value | target |")
    print("| --- | ---: | --- |")
    for name, value, target in rows:
        print(f"| {name} | {value:.2f} | {target} |")
    print(f"\n(total {time.monotonic() - started:.0f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_pb-order"]:  # the python-binance peer's own process (see _peer_rounds)
        rest_url, rounds, warmup = argv[1], int(argv[2]), int(argv[3])
        result = asyncio.run(_python_binance_rounds(rest_url, rounds, warmup))
        print(orjson.dumps(result).decode())
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command")
    order = sub.add_parser("order", help="order round trip vs raw httpx; limiter and breaker cores")
    order.add_argument("--rounds", type=int, default=300, help="measured rounds of each path")
    order.add_argument("--warmup", type=int, default=30, help="unmeasured rounds of each first")
    order.add_argument(
        "--profile", action="store_true", help="then cProfile both paths and compare"
    )
    feed = sub.add_parser("feed", help="feed throughput and latency vs raw and python-binance")
    bench_feed.add_feed_arguments(feed)
    sub.add_parser("micro", help="limiter and breaker core microbenchmarks")
    peers = sub.add_parser("peers", help="the order flow through python-binance, same simulator")
    peers.add_argument("--rounds", type=int, default=300, help="measured rounds of each path")
    peers.add_argument("--warmup", type=int, default=30, help="unmeasured rounds of each first")
    # The bridge benchmark lives in scripts/bench_bridge.py (issue 11); only dispatched here.
    import bench_bridge

    bridge = sub.add_parser("bridge", help="bus → JetStream → consumer's bus vs in-process bus")
    bench_bridge.add_arguments(bridge)
    every = sub.add_parser("all", help="every part, then one table of ratios (the default)")
    bench_feed.add_feed_arguments(every)
    every.add_argument("--rounds", type=int, default=300, help="measured order rounds per path")
    every.add_argument("--warmup", type=int, default=30, help="unmeasured order rounds first")
    args = parser.parse_args(argv or ["all"])
    if args.command == "bridge":
        return bench_bridge.run_from_args(args)
    if args.command in ("order", "peers", "all") and (
        not 10 <= args.rounds <= 5000 or not 0 <= args.warmup <= 1000
    ):
        parser.error("--rounds must be in [10, 5000] and --warmup in [0, 1000]")
    if args.command == "order":
        return cmd_order(args.rounds, args.warmup, args.profile)
    if args.command == "feed":
        return bench_feed.main(
            [
                f"--reps={args.reps}",
                f"--depth-events={args.depth_events}",
                f"--trade-events={args.trade_events}",
                f"--paced-events={args.paced_events}",
                *(["--tls", f"--tls-version={args.tls_version}"] if args.tls else []),
            ]
        )
    if args.command == "micro":
        return cmd_micro()
    if args.command == "peers":
        return cmd_peers(args.rounds, args.warmup)
    return cmd_all(args)


if __name__ == "__main__":
    sys.exit(main())
