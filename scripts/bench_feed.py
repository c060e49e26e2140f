"""Feed benchmark: Genesis (1 and 3 connections) against raw trio-websocket and python-binance.

Usage::

    python scripts/bench_feed.py [--reps 3] [--depth-events 15000] [--trade-events 30000]
        [--paced-events 5000] [--tls [--tls-version 1.3|1.2]]
    python scripts/bench_feed.py client --client raw|genesis1|genesis3|python-binance
        --port P --kind depth20|trade --events N [--paced] [--tls]

Every measurement is two fresh processes: the feed server
(``scripts/bench_feed_server.py``, pre-framed Binance-shaped frames, its own CPU) and one
client process, so no client shares an event loop, a core's caches or a garbage collector with
another, and each client's CPU time (``getrusage``) is its own. Clients:

- ``raw``: trio-websocket ``open_websocket_url`` + ``get_message`` + ``orjson.loads``: the floor
  for a Trio client that parses the JSON and nothing else. One connection.
- ``genesis1`` / ``genesis3``: :func:`genesis.exchange.ws_manager.run_market_data` with one or
  three redundant connections (every event arrives three times; the merger publishes it once),
  onto an :class:`~genesis.bus.EventBus` with one subscriber that takes every event it is
  given. Events/s counts unique events the merger published on the bus; the subscriber's count
  and the bus's drops are reported too.
- ``python-binance``: its ``BinanceSocketManager.multiplex_socket`` on its asyncio client (its
  queue raised from 100 to 100,000 so a burst does not kill the socket), consumer just counting.
- ``floor`` (paced runs only): one Trio task that reads the socket (``receive_some``) and finds
  each frame's id in the bytes, with no WebSocket parser, no JSON and no second task: what any
  Trio client on this machine pays per wake-up, the floor under every other figure.

Burst runs time the span from the first to the last event a client sees (events/s, wall
clock) and count the client's CPU seconds over that span (events per CPU second: what the
client would reach on a free core; on a shared machine the wall figures sag with the load, the
CPU figures much less). Paced runs (depth20 at
1,000 frames/s) measure, per event, the wall time from the server's send (the frame carries it)
to the client's consumer, and the client's CPU per event over the run.

``--tls`` runs the same table over ``wss://``, as production Binance serves it: the feed
server terminates TLS itself (``trio.SSLStream``, TLS 1.3 unless ``--tls-version 1.2``, a
certificate from a ``trustme`` CA made at its start-up) and every client process trusts that CA
through ``SSL_CERT_FILE`` only, so each client takes its ordinary default-context path with
verification on: trio-websocket ``open_websocket_url`` with ``ssl.create_default_context()``,
python-binance with ``STREAM_URL = "wss://..."``, Genesis ``run_market_data("wss://...")`` with
its default connector, and the floor reading a ``trio.SSLStream`` (TLS decryption, still no
WebSocket or JSON parsing). Encryption happens in the server process, so its CPU share line
covers it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import ssl
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs
import orjson
import trio

if TYPE_CHECKING:
    from genesis.exchange.ws_manager import MarketDataHandle

__all__ = ["CLIENTS", "Case", "main", "run_case", "run_feed", "tls_option"]

HERE: Final = Path(__file__).resolve().parent
SERVER: Final = HERE / "bench_feed_server.py"
CLIENTS: Final = ("raw", "python-binance", "genesis1", "genesis3")
PACED_CLIENTS: Final = ("floor", *CLIENTS)
PACED_RATE: Final = 1000.0
STARTUP_S: Final = 30.0
CASE_TIMEOUT_S: Final = 180.0
PB_QUEUE: Final = 100_000


def _num(mapping: dict[str, object], key: str, default: float = 0.0) -> float:
    value = mapping.get(key, default)
    if not isinstance(value, int | float):
        raise TypeError(f"{key} is not a number: {value!r}")
    return float(value)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _now_us() -> int:
    return time.time_ns() // 1000


def _stream(kind: str) -> str:
    return "btcusdt@depth20@100ms" if kind == "depth20" else "btcusdt@trade"


def _scheme(tls: bool) -> str:
    return "wss" if tls else "ws"


@attrs.define
class _Meter:
    """Counts events and, when paced, per-event latency from the server's send (µs)."""

    events: int
    paced: bool
    n: int = 0
    first_s: float = 0.0
    last_s: float = 0.0
    cpu_first: float = 0.0
    cpu_last: float = 0.0
    latencies_us: list[int] = attrs.field(factory=list)

    def see(self, key: int) -> bool:
        """One event with its id (paced: its send time in µs); True once the last arrived."""
        now = time.perf_counter()
        if self.n == 0:
            self.first_s, self.cpu_first = now, _cpu_s()
        self.n += 1
        if self.paced:
            self.latencies_us.append(_now_us() - key)
        done = self.n >= self.events if self.paced else key >= self.events
        if done:
            self.last_s, self.cpu_last = now, _cpu_s()
        return done

    def finish(self) -> None:
        """End the span now (paced Genesis: every event was published, some were conflated)."""
        self.last_s, self.cpu_last = time.perf_counter(), _cpu_s()

    def result(self, **extra: object) -> dict[str, object]:
        span = self.last_s - self.first_s
        out: dict[str, object] = {
            "received": self.n,
            "span_s": span,
            "events_per_s": (self.events - 1) / span if span > 0 else 0.0,
            "cpu_s": self.cpu_last - self.cpu_first,
            "cpu_us_per_event": (self.cpu_last - self.cpu_first) / max(self.n, 1) * 1e6,
        }
        if self.latencies_us:
            ordered = sorted(self.latencies_us)
            out |= {
                "p50_us": ordered[len(ordered) // 2],
                "p99_us": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
                "max_us": ordered[-1],
            }
        return out | extra


# --- clients (each runs in its own process) ---------------------------------------------------


async def _raw_client(
    port: int, kind: str, events: int, paced: bool, tls: bool = False
) -> dict[str, object]:
    from trio_websocket import open_websocket_url

    meter = _Meter(events, paced)
    id_key = "lastUpdateId" if kind == "depth20" else "t"
    url = f"{_scheme(tls)}://127.0.0.1:{port}/stream?streams={_stream(kind)}"
    context = ssl.create_default_context() if tls else None
    async with open_websocket_url(url, ssl_context=context, message_queue_size=4096) as ws:
        while True:
            data = orjson.loads(await ws.get_message())
            if meter.see(data["data"][id_key]):
                break
    return meter.result()


async def _floor_client(
    port: int, kind: str, events: int, paced: bool, tls: bool = False
) -> dict[str, object]:
    meter = _Meter(events, paced)
    needle = b'"lastUpdateId":' if kind == "depth20" else b'"t":'
    stream: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", port)
    if tls:  # the TLS floor: decryption by trio.SSLStream, still no WebSocket or JSON parsing
        stream = trio.SSLStream(stream, ssl.create_default_context(), server_hostname="127.0.0.1")
    await stream.send_all(
        b"GET /stream?streams=" + _stream(kind).encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += await stream.receive_some(4096)
    buffer = head.partition(b"\r\n\r\n")[2]
    done = False
    while not done:
        at = buffer.find(needle)
        while at >= 0 and not done:
            start = at + len(needle)
            end = start
            while end < len(buffer) and 48 <= buffer[end] <= 57:  # digits
                end += 1
            if end == len(buffer):
                break  # the id continues in the next read
            done = meter.see(int(buffer[start:end]))
            buffer = buffer[end:]
            at = buffer.find(needle)
        if not done:
            buffer = buffer[-64:] + await stream.receive_some(65536)
    await stream.aclose()
    return meter.result()


async def _end_when_published(
    handle: MarketDataHandle, events: int, meter: _Meter, consume_scope: trio.CancelScope
) -> None:
    """Paced runs: the bus conflates depth per symbol, so the subscriber may be handed fewer
    than every event; the run ends once the merger published them all (polled every 20 ms, so
    the check costs the client nothing per event)."""
    while handle.statistics().merger.published < events:  # noqa: ASYNC110  # a poll, on purpose
        await trio.sleep(0.02)
    meter.finish()
    consume_scope.cancel()


async def _genesis_client(
    port: int, kind: str, events: int, paced: bool, connections: int, tls: bool = False
) -> dict[str, object]:
    from genesis.bus import EventBus
    from genesis.exchange.ws_manager import run_market_data
    from genesis.models.market import Depth, Trade

    meter = _Meter(events, paced)
    bus = EventBus()
    roles = ("execution", "monitoring", "backup")[:connections]
    event_type = Depth if kind == "depth20" else Trade
    subscription = bus.subscribe(event_type)
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(
            lambda task_status: run_market_data(
                f"{_scheme(tls)}://127.0.0.1:{port}",
                ["BTCUSDT"],
                bus,
                roles=roles,
                task_status=task_status,
            )
        )
        with trio.CancelScope() as consume_scope:
            if paced:
                nursery.start_soon(_end_when_published, handle, events, meter, consume_scope)
            async for event in subscription:
                if isinstance(event, Depth):
                    key = event.last_update_id
                elif isinstance(event, Trade):
                    key = event.trade_id
                else:
                    continue
                if meter.see(key):
                    break
        merger = handle.statistics().merger
        bus_stats = bus.statistics()
        nursery.cancel_scope.cancel()
    reader = handle.statistics().reader
    result = meter.result(
        reader_wakeups=0 if reader is None else reader.wakeups,
        published=merger.published,
        duplicates=merger.duplicates_dropped,
        decode_errors=merger.decode_errors,
        bus_dropped=bus_stats.dropped,
    )
    # Unique events the merger published per second, over the subscriber's span.
    span = _num(result, "span_s")
    if not paced and span > 0:
        result["events_per_s"] = (merger.published - 1) / span
    if paced and merger.published:
        # CPU per unique event published (the subscriber may have been handed fewer).
        result["cpu_us_per_event"] = _num(result, "cpu_s") / merger.published * 1e6
    return result


async def _python_binance_client(
    port: int, kind: str, events: int, paced: bool, tls: bool = False
) -> dict[str, object]:
    from binance import AsyncClient, BinanceSocketManager

    meter = _Meter(events, paced)
    id_key = "lastUpdateId" if kind == "depth20" else "t"
    client = AsyncClient()
    try:
        manager = BinanceSocketManager(client, max_queue_size=PB_QUEUE)
        manager.STREAM_URL = f"{_scheme(tls)}://127.0.0.1:{port}/"
        async with manager.multiplex_socket([_stream(kind)]) as socket:
            while True:
                message = await socket.recv()
                if message.get("e") == "error":
                    raise RuntimeError(f"python-binance: {message}")
                if meter.see(message["data"][id_key]):
                    break
    finally:
        await client.close_connection()
    return meter.result()


def client_main(args: argparse.Namespace) -> int:
    common = (args.port, args.kind, args.events, args.paced)
    if args.client == "python-binance":
        result = asyncio.run(_python_binance_client(*common, args.tls))
    elif args.client == "raw":
        result = trio.run(_raw_client, *common, args.tls)
    elif args.client == "floor":
        result = trio.run(_floor_client, *common, args.tls)
    else:
        connections = int(args.client.removeprefix("genesis"))
        result = trio.run(_genesis_client, *common, connections, args.tls)
    print(orjson.dumps(result).decode(), flush=True)
    return 0


# --- orchestration ------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Case:
    """One measurement: a client against a fresh server."""

    client: str
    kind: str
    events: int
    paced: bool
    result: dict[str, object]
    server: dict[str, object]

    def figure(self, name: str) -> float:
        return _num(self.result, name)


def _last_json(text: str) -> dict[str, object]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            loaded = json.loads(line)
            assert isinstance(loaded, dict)
            return loaded
    raise RuntimeError(f"no JSON result in {text[-500:]!r}")


def run_case(
    client: str, kind: str, events: int, *, paced: bool = False, tls: str | None = None
) -> Case:
    """Start a server process, run one client process against it, return both results.

    ``tls`` ("1.3" or "1.2"): over ``wss://``, the client trusting the server's CA through
    ``SSL_CERT_FILE``.
    """
    connections = 3 if client == "genesis3" else 1
    server_cmd = [
        sys.executable,
        str(SERVER),
        "--kind",
        kind,
        "--events",
        str(events),
        "--connections",
        str(connections),
        "--rate",
        str(PACED_RATE if paced else 0),
        "--timeout",
        str(CASE_TIMEOUT_S),
        *(["--tls", f"--tls-version={tls}"] if tls else []),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    ca_path = ""
    with subprocess.Popen(server_cmd, stdout=subprocess.PIPE, text=True, env=env) as server:
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            if not line.startswith("port: "):
                raise RuntimeError(f"feed server did not start: {line!r}")
            port = int(line.removeprefix("port: "))
            if tls:
                line = server.stdout.readline()
                if not line.startswith("ca: "):
                    raise RuntimeError(f"feed server gave no CA: {line!r}")
                ca_path = line.removeprefix("ca: ").strip()
                env = {**env, "SSL_CERT_FILE": ca_path}
            client_cmd = [
                sys.executable,
                __file__,
                "client",
                "--client",
                client,
                "--port",
                str(port),
                "--kind",
                kind,
                "--events",
                str(events),
                *(["--paced"] if paced else []),
                *(["--tls"] if tls else []),
            ]
            done = subprocess.run(
                client_cmd,
                capture_output=True,
                text=True,
                timeout=CASE_TIMEOUT_S,
                check=False,
                env=env,
            )
            if done.returncode != 0:
                raise RuntimeError(f"{client} {kind} failed: {done.stderr[-2000:]}")
            out, _ = server.communicate(timeout=30)
        except BaseException:
            server.kill()
            if ca_path:  # the killed server cannot remove it
                Path(ca_path).unlink(missing_ok=True)
            raise
    return Case(
        client=client,
        kind=kind,
        events=events,
        paced=paced,
        result=_last_json(done.stdout),
        server=_last_json(out),
    )


@attrs.frozen(kw_only=True)
class FeedRun:
    burst: dict[tuple[str, str], list[Case]]
    paced: dict[str, list[Case]]
    seconds: float
    tls: str | None = None

    def rate(self, client: str, kind: str) -> float:
        return statistics.median(c.figure("events_per_s") for c in self.burst[(client, kind)])

    def cpu_rate(self, client: str, kind: str) -> float:
        """Events per client CPU second: what one free core would reach (robust to load)."""
        # Genesis: unique events published (its subscriber is handed conflated depth).
        return statistics.median(
            _num(c.result, "published", c.figure("received")) / c.figure("cpu_s")
            for c in self.burst[(client, kind)]
        )

    def paced_figure(self, client: str, name: str) -> float:
        return statistics.median(c.figure(name) for c in self.paced[client])

    def server_utilisation(self) -> float:
        """The busiest server's CPU over its sending time, across every burst case."""
        shares = [
            _num(c.server, "cpu_s") / _num(c.server, "send_s")
            for cases in self.burst.values()
            for c in cases
            if _num(c.server, "send_s") > 0
        ]
        return max(shares, default=0.0)


def run_feed(
    reps: int,
    depth_events: int,
    trade_events: int,
    paced_events: int,
    *,
    log: bool = True,
    tls: str | None = None,
) -> FeedRun:
    """Interleaved reps of every client on both kinds, then the paced depth20 runs;
    ``tls`` ("1.3" or "1.2") runs every case over ``wss://``."""
    started = time.monotonic()
    burst: dict[tuple[str, str], list[Case]] = {}
    paced: dict[str, list[Case]] = {}
    for rep in range(reps):
        for kind, events in (("depth20", depth_events), ("trade", trade_events)):
            for client in CLIENTS:
                case = run_case(client, kind, events, tls=tls)
                burst.setdefault((client, kind), []).append(case)
                if log:
                    print(
                        f"  rep {rep + 1} {kind:<7} {client:<15} "
                        f"{case.figure('events_per_s'):>10,.0f} events/s",
                        file=sys.stderr,
                        flush=True,
                    )
    # Paced runs interleaved too (medians of ``reps``): one run per client moved by ±15 µs of
    # CPU per event and by half its p99 from run to run on this shared machine.
    for _ in range(reps):
        for client in PACED_CLIENTS:
            case = run_case(client, "depth20", paced_events, paced=True, tls=tls)
            paced.setdefault(client, []).append(case)
            if log:
                print(
                    f"  paced   depth20 {client:<15} p99 {case.figure('p99_us'):>7,.0f} µs, "
                    f"CPU {case.figure('cpu_us_per_event'):>6,.1f} µs/event",
                    file=sys.stderr,
                    flush=True,
                )
    return FeedRun(burst=burst, paced=paced, seconds=time.monotonic() - started, tls=tls)


def render_feed(run: FeedRun) -> str:
    g3 = run.rate("genesis3", "depth20")
    pb = run.rate("python-binance", "depth20")
    lines = [
        f"ratio: {g3 / pb:.2f}  (Genesis 3 connections / python-binance, depth20 events/s)",
        "",
        "| feed (combined stream) | trio-websocket raw | python-binance | Genesis, 1 connection "
        "| Genesis, 3 connections |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for kind in ("depth20", "trade"):
        raw = run.rate("raw", kind)
        peer = run.rate("python-binance", kind)
        one = run.rate("genesis1", kind)
        three = run.rate("genesis3", kind)
        lines.append(
            f"| {kind} events/s | {raw:,.0f} | {peer:,.0f} | {one:,.0f} ({one / peer:.2f}× pb, "
            f"{one / raw:.2f}× raw) | {three:,.0f} ({three / peer:.2f}× pb) |"
        )
    for kind in ("depth20", "trade"):
        raw = run.cpu_rate("raw", kind)
        peer = run.cpu_rate("python-binance", kind)
        one = run.cpu_rate("genesis1", kind)
        three = run.cpu_rate("genesis3", kind)
        lines.append(
            f"| {kind} events per client CPU second | {raw:,.0f} | {peer:,.0f} | {one:,.0f} "
            f"({one / peer:.2f}× pb, {one / raw:.2f}× raw) | {three:,.0f} "
            f"({three / peer:.2f}× pb) |"
        )
    lat = {c: run.paced_figure(c, "p99_us") for c in run.paced}
    cpu = {c: run.paced_figure(c, "cpu_us_per_event") for c in run.paced}
    p50 = {c: run.paced_figure(c, "p50_us") for c in run.paced}
    mx = {c: run.paced_figure(c, "max_us") for c in run.paced}
    lines.append(
        "| paced 1,000/s depth20: p50 / p99 / max µs, send → consumer | "
        + " | ".join(
            f"{p50[c]:,.0f} / {lat[c]:,.0f} / {mx[c]:,.0f}"
            for c in ("raw", "python-binance", "genesis1", "genesis3")
        )
        + " |"
    )
    lines.append(
        "| paced 1,000/s depth20: client CPU µs per event | "
        + " | ".join(f"{cpu[c]:,.0f}" for c in ("raw", "python-binance", "genesis1", "genesis3"))
        + " |"
    )
    g3_paced = run.paced["genesis3"]
    wakeups = statistics.median(
        _num(c.result, "reader_wakeups") / max(_num(c.result, "published"), 1.0) for c in g3_paced
    )
    g3_cases = run.burst[("genesis3", "depth20")]
    g3_dropped = max(_num(c.result, "bus_dropped") for c in g3_cases)
    decode_ok = all(_num(c.result, "decode_errors") == 0 for c in g3_cases)
    late_ms = max(_num(c.server, "pacer_late_max_ms") for cs in run.paced.values() for c in cs)
    floor = "floor (one Trio task reading the socket, no WebSocket or JSON parsing)"
    lines.append("")
    if run.tls is not None:
        lines.append(_tls_line(run))
        floor = (
            "floor over TLS (one Trio task reading a trio.SSLStream: TLS decryption, no WebSocket "
            "or JSON parsing)"
        )
    lines += [
        f"Genesis 3 connections, depth20: subscriber received "
        f"{statistics.median(c.figure('received') for c in g3_cases):,.0f} of "
        f"{g3_cases[0].events:,} unique events (median; the bus conflates depth per symbol: "
        f"up to {g3_dropped:,.0f} replaced), 0 decode errors: "
        f"{decode_ok}",
        f"feed server: busiest CPU share while sending {run.server_utilisation():.0%} of one "
        f"core (below 100 %: the client was the bottleneck); paced pacer late by at most "
        f"{late_ms:.2f} ms",
        f"targets: 3 conn ≥ 1.5× pb depth20 ({g3 / pb:.2f}), ≥ 2× pb trade "
        f"({run.rate('genesis3', 'trade') / run.rate('python-binance', 'trade'):.2f}); "
        f"1 conn ≥ 2× pb ({run.rate('genesis1', 'depth20') / pb:.2f}, "
        f"{run.rate('genesis1', 'trade') / run.rate('python-binance', 'trade'):.2f}) and ≥ 1× raw "
        f"({run.rate('genesis1', 'depth20') / run.rate('raw', 'depth20'):.2f}, "
        f"{run.rate('genesis1', 'trade') / run.rate('raw', 'trade'):.2f}); paced p99 3 conn ≤ "
        f"1.5× raw ({lat['genesis3'] / lat['raw']:.2f}), CPU ≤ 60 µs ({cpu['genesis3']:.0f})",
        f"{floor}, paced: CPU "
        f"{cpu['floor']:.0f} µs/event, p50 / p99 {p50['floor']:,.0f} / {lat['floor']:,.0f} µs; "
        f"Genesis 3 conn: {cpu['genesis3'] / cpu['floor']:.2f}× the floor's CPU, the shared "
        f"reader woke {wakeups:.2f} times per event (3 copies each)",
        f"(feed part: {run.seconds:.0f} s)",
    ]
    return "\n".join(lines)


def _tls_line(run: FeedRun) -> str:
    """What the run was over, from the TLS versions the server saw negotiated."""
    cases = [c for cs in (*run.burst.values(), *run.paced.values()) for c in cs]
    seen: dict[str, int] = {}
    for case in cases:
        versions = case.server.get("tls", [])
        assert isinstance(versions, list)
        for version in versions:
            seen[str(version)] = seen.get(str(version), 0) + 1
    negotiated = ", ".join(f"{v} on {n:,} connections" for v, n in sorted(seen.items()))
    return (
        f"transport: wss:// over TLS {run.tls} (negotiated: {negotiated or 'none recorded'}); "
        f"the feed server terminates TLS itself (trio.SSLStream), every client verifies it "
        f"through its default context with SSL_CERT_FILE = the run's trustme CA"
    )


def tls_option(args: argparse.Namespace) -> str | None:
    """The TLS version a parsed ``--tls [--tls-version V]`` asks for, or None for ``ws://``."""
    return str(args.tls_version) if args.tls else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["client"]:
        parser = argparse.ArgumentParser(prog="bench_feed.py client")
        parser.add_argument("--client", choices=PACED_CLIENTS, required=True)
        parser.add_argument("--port", type=int, required=True)
        parser.add_argument("--kind", choices=("depth20", "trade"), required=True)
        parser.add_argument("--events", type=int, required=True)
        parser.add_argument("--paced", action="store_true")
        parser.add_argument("--tls", action="store_true", help="wss://, default SSL context")
        return client_main(parser.parse_args(argv[1:]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    add_feed_arguments(parser)
    args = parser.parse_args(argv)
    run = run_feed(
        args.reps, args.depth_events, args.trade_events, args.paced_events, tls=tls_option(args)
    )
    print(render_feed(run))
    return 0


def add_feed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions (median)")
    parser.add_argument("--depth-events", type=int, default=15_000, help="depth20 burst size")
    parser.add_argument("--trade-events", type=int, default=30_000, help="trade burst size")
    parser.add_argument("--paced-events", type=int, default=5_000, help="paced run length")
    parser.add_argument("--tls", action="store_true", help="every case over wss:// (TLS)")
    parser.add_argument(
        "--tls-version", choices=("1.3", "1.2"), default="1.3", help="with --tls (default 1.3)"
    )


if __name__ == "__main__":
    sys.exit(main())
