"""Benchmark the simulator: stream delivery and signed REST throughput, each against a raw baseline.

Usage::

    python scripts/bench_sim.py [--seconds 3] [--concurrency 4] [--json PATH]

Every figure is measured by a *client in a child process* (``trio.run_process`` of this script
with ``--child``), so the client's CPU does not compete with the server being measured, and each
figure is reported next to a raw baseline served the same way in the same run:

1. **Stream frames/s to one client over loopback.**
   - *normal feed*: a combined ``/stream`` connection with the usual streams of every symbol;
     what the market feed really publishes (a few frames/s per stream). No baseline.
   - *full speed*: the same kind of connection with four trade streams while this process
     publishes synthetic payloads into the hub (``sim.hub.publish``) as fast as the connection
     drains them (at most :data:`WINDOW` frames queued, so the hub never counts the client as a
     slow consumer). Baseline: a bare ``trio_websocket.serve_websocket`` server sending the same
     pre-built combined frames in a loop to the same client.
2. **Signed REST requests/s**: ``--concurrency`` clients (one ``httpx.AsyncClient`` each, HMAC
   signing every request) calling ``GET /api/v3/order`` for one resting order; the simulator's
   rate limits are raised out of the way first. Baseline: a trivial ASGI app that answers ``{}``
   on the same hypercorn server (:func:`genesis.sim.rest.serve_rest`), same clients.

3. **Rolling 24 h ticker queries/s** (in process, no sockets): a symbol with 1 h and with 24 h of
   history (a trade every 10 s, so every minute bucket is filled), queried once per virtual
   second as the market feed does, with a trade recorded every 10 s. Baseline: the same
   queries answered the old way, by merging every minute bucket of the window. The figure to
   read is the flat cost: the 24 h and 1 h rates of the sliding window are about equal, while
   the merge slows down with the window.

Each phase lasts ``--seconds`` (counted from the first answer); the whole run takes well under
a minute. A table goes to stdout; ``--json`` also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import hmac
import json
import logging
import os
import platform
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Final, cast
from urllib.parse import urlencode

import attrs
import httpx
import trio
import trio_websocket

from genesis.sim.history import DAY_MS, SymbolHistory, merge_buckets
from genesis.sim.model import PublicTrade
from genesis.sim.rest import serve_rest
from genesis.sim.server import SimConfig, SimHandle, run_simulator

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

__all__ = ["Figure", "main"]

logger = logging.getLogger("bench_sim")

SCRIPT: Final = Path(__file__).resolve()
WINDOW: Final = 256
"""Synthetic frames allowed in flight between the hub and the socket (the hub buffers 1024)."""
SYMBOLS: Final = ("btcusdt", "ethusdt", "bnbusdt")
NORMAL_STREAMS: Final = tuple(
    f"{s}@{kind}"
    for s in SYMBOLS
    for kind in (
        "trade",
        "aggTrade",
        "bookTicker",
        "depth@100ms",
        "depth20@100ms",
        "ticker",
        "miniTicker",
        "kline_1m",
    )
)
FAST_STREAMS: Final = ("btcusdt@trade", "ethusdt@trade", "bnbusdt@trade", "btcusdt@aggTrade")

Json = dict[str, object]


@attrs.frozen(kw_only=True)
class Figure:
    """One measured rate, with its raw baseline where there is one."""

    name: str
    value: float
    unit: str
    baseline: float | None = None
    detail: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    def to_json(self) -> Json:
        return {
            "name": self.name,
            "value": round(self.value, 1),
            "unit": self.unit,
            "baseline": None if self.baseline is None else round(self.baseline, 1),
            "ratio": None if self.ratio is None else round(self.ratio, 3),
            "detail": self.detail,
        }


# --- child processes (the clients) ----------------------------------------------------------


async def _child_ws(spec: Mapping[str, object]) -> Json:
    """Read frames from ``spec["url"]`` for ``spec["seconds"]`` after the first one."""
    seconds = float(cast("float", spec["seconds"]))
    async with trio_websocket.open_websocket_url(
        str(spec["url"]), message_queue_size=4096, disconnect_timeout=1
    ) as ws:
        with trio.fail_after(10):
            await ws.get_message()
        frames = 0
        size = 0
        start = trio.current_time()
        with trio.move_on_at(start + seconds):
            while True:
                message = await ws.get_message()
                frames += 1
                size += len(message)
        elapsed = trio.current_time() - start
    return {"frames": frames, "bytes": size, "seconds": elapsed}


async def _child_rest(spec: Mapping[str, object]) -> Json:
    """``spec["concurrency"]`` clients sending signed GETs to ``spec["url"]``."""
    url = str(spec["url"])
    seconds = float(cast("float", spec["seconds"]))
    api_key = str(spec["api_key"])
    secret = str(spec["secret"]).encode()
    params = cast("dict[str, str]", spec["params"])
    headers = {"X-MBX-APIKEY": api_key}
    counts = {"requests": 0, "ok": 0}

    def signed_url() -> str:
        query = urlencode({**params, "timestamp": str(time.time_ns() // 1_000_000)})
        signature = hmac.new(secret, query.encode(), hashlib.sha256).hexdigest()
        return f"{url}?{query}&signature={signature}"

    async def worker(client: httpx.AsyncClient, end: float) -> None:
        while trio.current_time() < end:
            response = await client.get(signed_url(), headers=headers)
            counts["requests"] += 1
            counts["ok"] += response.status_code == 200

    timeout = httpx.Timeout(10, connect=5, read=10, write=10, pool=5)
    clients = [
        httpx.AsyncClient(timeout=timeout, trust_env=False)
        for _ in range(int(cast("int", spec["concurrency"])))
    ]
    try:
        for client in clients:  # connect and warm up before the clock starts
            (await client.get(signed_url(), headers=headers)).raise_for_status()
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for client in clients:
                nursery.start_soon(worker, client, start + seconds)
        elapsed = trio.current_time() - start
    finally:
        for client in clients:
            await client.aclose()
    return {**counts, "seconds": elapsed}


def _run_child(raw_spec: str) -> None:
    spec = cast("Json", json.loads(raw_spec))
    child: Callable[[Mapping[str, object]], Awaitable[Json]] = (
        _child_ws if spec["kind"] == "ws" else _child_rest
    )
    result = trio.run(child, spec)
    sys.stdout.write(json.dumps(result) + "\n")


async def run_client(spec: Json) -> Json:
    """Run this script as a client process with ``spec``; returns its JSON result."""
    with trio.fail_after(float(cast("float", spec["seconds"])) + 30):
        done = await trio.run_process(
            [sys.executable, str(SCRIPT), "--child", json.dumps(spec)],
            capture_stdout=True,
            check=True,
        )
    return cast("Json", json.loads(done.stdout.decode().strip().splitlines()[-1]))


def _rate(result: Mapping[str, object], key: str) -> float:
    return float(cast("float", result[key])) / float(cast("float", result["seconds"]))


# --- phase 1: streams -----------------------------------------------------------------------


def _trade_payload(stream: str, trade_id: int) -> bytes:
    """A ``@trade`` payload shaped like the feed's (about 150 bytes)."""
    event = {
        "e": "trade",
        "E": 1767225600000,
        "s": stream.split("@", 1)[0].upper(),
        "t": trade_id,
        "p": "60000.01000000",
        "q": "0.01230000",
        "T": 1767225600000,
        "m": True,
        "M": True,
    }
    return json.dumps(event, separators=(",", ":")).encode()


async def _publish_flat_out(handle: SimHandle, payloads: list[tuple[str, bytes]]) -> None:
    """Publish ``payloads`` round-robin as fast as the subscribed connection drains them."""
    hub = handle.sim.hub
    server = handle.sim.streams
    i = 0
    while True:
        if not hub.has_subscribers(payloads[0][0]):
            await trio.sleep(0.01)
            continue
        queued = hub.statistics().delivered - server.statistics().frames_sent
        if queued >= WINDOW:
            await trio.sleep(0.0002)  # let the connection's sender catch up
            continue
        for _ in range(WINDOW - queued):
            stream, payload = payloads[i % len(payloads)]
            hub.publish(stream, payload)
            i += 1
        await trio.lowlevel.checkpoint()


async def _raw_stream_server(
    frames: list[str], *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """A bare trio-websocket server sending ``frames`` in a loop to whoever connects."""

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        i = 0
        try:
            while True:
                await ws.send_message(frames[i % len(frames)])
                i += 1
        except trio_websocket.ConnectionClosed:
            return

    async with trio.open_nursery() as nursery:
        ws_server = await nursery.start(
            functools.partial(
                trio_websocket.serve_websocket,
                handler,
                "127.0.0.1",
                0,
                None,
                message_queue_size=16,
            )
        )
        task_status.started(ws_server.port)
        await trio.sleep_forever()


async def bench_streams(handle: SimHandle, seconds: float) -> list[Figure]:
    normal = await run_client(
        {
            "kind": "ws",
            "url": f"{handle.stream_url}/stream?streams={'/'.join(NORMAL_STREAMS)}",
            "seconds": seconds,
        }
    )
    payloads = [(s, _trade_payload(s, n)) for n, s in enumerate(FAST_STREAMS, start=1)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_publish_flat_out, handle, payloads)
        fast = await run_client(
            {
                "kind": "ws",
                "url": f"{handle.stream_url}/stream?streams={'/'.join(FAST_STREAMS)}",
                "seconds": seconds,
            }
        )
        nursery.cancel_scope.cancel()
    frames = ['{"stream":"' + s + '","data":' + p.decode() + "}" for s, p in payloads]
    async with trio.open_nursery() as nursery:
        port: int = await nursery.start(_raw_stream_server, frames)
        raw = await run_client({"kind": "ws", "url": f"ws://127.0.0.1:{port}/", "seconds": seconds})
        nursery.cancel_scope.cancel()
    return [
        Figure(
            name=f"stream frames/s, normal feed ({len(NORMAL_STREAMS)} streams)",
            value=_rate(normal, "frames"),
            unit="frames/s",
            detail=f"{_rate(normal, 'bytes') / 1024:.1f} KiB/s",
        ),
        Figure(
            name=f"stream frames/s, full speed ({len(FAST_STREAMS)} streams)",
            value=_rate(fast, "frames"),
            unit="frames/s",
            baseline=_rate(raw, "frames"),
            detail=f"{_rate(fast, 'bytes') / 1024 / 1024:.1f} MiB/s vs "
            f"{_rate(raw, 'bytes') / 1024 / 1024:.1f} MiB/s raw",
        ),
    ]


# --- phase 2: REST --------------------------------------------------------------------------


async def _trivial_app(
    scope: Mapping[str, object],
    receive: Callable[[], Awaitable[Mapping[str, object]]],
    send: Callable[[dict[str, object]], Awaitable[None]],
) -> None:
    """ASGI: ``200 {}`` for every HTTP request (and the lifespan handshake)."""
    if scope.get("type") == "lifespan":
        while True:
            message = await receive()
            kind = message.get("type")
            if kind == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif kind == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json;charset=UTF-8")],
        }
    )
    await send({"type": "http.response.body", "body": b"{}"})


async def _resting_order_id(handle: SimHandle) -> int:
    query = urlencode(
        {
            "symbol": "BTCUSDT",
            "side": "BUY",
            "type": "LIMIT",
            "timeInForce": "GTC",
            "quantity": "0.01",
            "price": "30000",
            "timestamp": str(handle.sim.clock.now_ms()),
        }
    )
    signature = hmac.new(handle.api_secret.encode(), query.encode(), hashlib.sha256).hexdigest()
    async with httpx.AsyncClient(base_url=handle.rest_url, trust_env=False) as client:
        response = await client.post(
            f"/api/v3/order?{query}&signature={signature}",
            headers={"X-MBX-APIKEY": handle.api_key},
        )
        response.raise_for_status()
        return int(response.json()["orderId"])


async def bench_rest(handle: SimHandle, seconds: float, concurrency: int) -> list[Figure]:
    # Out of the way: 6000 weight/min would allow 25 order queries per second.
    handle.faults.lower_limit("REQUEST_WEIGHT", "MINUTE", 1, 1_000_000_000)
    handle.faults.lower_limit("RAW_REQUESTS", "MINUTE", 5, 1_000_000_000)
    order_id = await _resting_order_id(handle)
    spec: Json = {
        "kind": "rest",
        "seconds": seconds,
        "concurrency": concurrency,
        "api_key": handle.api_key,
        "secret": handle.api_secret,
        "params": {"symbol": "BTCUSDT", "orderId": str(order_id)},
    }
    sim = await run_client({**spec, "url": f"{handle.rest_url}/api/v3/order"})
    async with trio.open_nursery() as nursery:
        port: int = await nursery.start(functools.partial(serve_rest, _trivial_app))
        raw = await run_client({**spec, "url": f"http://127.0.0.1:{port}/api/v3/order"})
        nursery.cancel_scope.cancel()
    if sim["ok"] != sim["requests"]:
        logger.warning("bench.rest.errors ok=%s requests=%s", sim["ok"], sim["requests"])
    return [
        Figure(
            name=f"signed REST req/s, GET order ({concurrency} clients)",
            value=_rate(sim, "ok"),
            unit="req/s",
            baseline=_rate(raw, "ok"),
            detail=f"{sim['ok']}/{sim['requests']} ok",
        )
    ]


# --- rolling 24 h ticker (in process) ---------------------------------------------------------

TICKER_T0_MS: Final = 1_767_225_600_000
TICKER_TRADE_EVERY_MS: Final = 10_000


def _ticker_trade(trade_id: int, t_ms: int) -> PublicTrade:
    return PublicTrade(
        symbol="BTCUSDT",
        trade_id=trade_id,
        agg_id=trade_id,
        price=Decimal(60_000 + trade_id % 997),
        qty=Decimal("0.001") * (1 + trade_id % 7),
        time_ms=t_ms,
        is_buyer_maker=trade_id % 2 == 0,
    )


def _ticker_history(hours: int) -> tuple[SymbolHistory, int, int]:
    history = SymbolHistory()
    trade_id = 0
    t = TICKER_T0_MS
    end = TICKER_T0_MS + hours * 3_600_000
    while t < end:
        trade_id += 1
        history.record(_ticker_trade(trade_id, t))
        t += TICKER_TRADE_EVERY_MS
    return history, trade_id, t


@attrs.define
class _TickerRun:
    """One history under test, queried once per virtual second from where it left off."""

    history: SymbolHistory
    trade_id: int
    now_ms: int
    sliding: bool

    def rate(self, seconds: float) -> float:
        """Queries/s over about ``seconds`` of wall time."""
        history = self.history
        calls = 0
        started = time.perf_counter()
        while True:
            for _ in range(100):
                self.now_ms += 1000
                if self.now_ms % TICKER_TRADE_EVERY_MS == 0:
                    self.trade_id += 1
                    history.record(_ticker_trade(self.trade_id, self.now_ms))
                if self.sliding:
                    history.rolling_day(self.now_ms)
                else:
                    first = (self.now_ms - DAY_MS) // 60_000 * 60_000
                    merge_buckets(
                        history.minutes.span(first, self.now_ms + 1),
                        self.now_ms - DAY_MS,
                        flat_price=Decimal(0),
                    )
            calls += 100
            elapsed = time.perf_counter() - started
            if elapsed >= seconds:
                return calls / elapsed


TICKER_ROUNDS: Final = 5


def bench_ticker(seconds: float) -> list[Figure]:
    """The sliding 24 h window against merging the window's buckets, at 1 h and 24 h.

    The four runs take turns in :data:`TICKER_ROUNDS` short rounds and each keeps its best
    rate, so a burst of load on a shared machine does not land on one run only.
    """
    runs = {
        (hours, sliding): _TickerRun(*_ticker_history(hours), sliding=sliding)
        for hours in (1, 24)
        for sliding in (True, False)
    }
    best = dict.fromkeys(runs, 0.0)
    for _ in range(TICKER_ROUNDS):
        for key, run in runs.items():
            best[key] = max(best[key], run.rate(seconds / TICKER_ROUNDS))
    flat = best[(24, True)] / best[(1, True)]
    merge = best[(24, False)] / best[(1, False)]
    return [
        Figure(
            name=f"24 h ticker queries/s, {hours} h of trades",
            value=best[(hours, True)],
            unit="queries/s",
            baseline=best[(hours, False)],
            detail="baseline: merge the window's minute buckets"
            + (f"; 24h/1h rate: window {flat:.2f}, merge {merge:.2f}" if hours == 24 else ""),
        )
        for hours in (1, 24)
    ]


# --- driver ---------------------------------------------------------------------------------


async def run_benchmarks(seconds: float, concurrency: int) -> list[Figure]:
    """Start a simulator and measure every figure against it."""
    async with trio.open_nursery() as nursery:
        handle: SimHandle = await nursery.start(run_simulator, SimConfig(seed=1))
        figures = await bench_streams(handle, seconds)
        figures += await bench_rest(handle, seconds, concurrency)
        nursery.cancel_scope.cancel()
    figures += bench_ticker(seconds)
    return figures


def _machine() -> Json:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "trio": trio.__version__,
    }


def render(figures: list[Figure], machine: Mapping[str, object], seconds: float) -> str:
    lines = [
        f"Simulator benchmark: Python {machine['python']}, {machine['platform']}, "
        f"{machine['cpus']} CPUs; {seconds:g} s per phase",
        f"{'measure':<48} {'value':>12} {'raw baseline':>14} {'ratio':>7}  detail",
    ]
    for f in figures:
        baseline = "-" if f.baseline is None else f"{f.baseline:,.0f}"
        ratio = "-" if f.ratio is None else f"{f.ratio:.2f}"
        lines.append(f"{f.name:<48} {f.value:>12,.0f} {baseline:>14} {ratio:>7}  {f.detail}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each phase")
    parser.add_argument("--concurrency", type=int, default=4, help="REST clients")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        _run_child(args.child)
        return 0
    if not 0 < args.seconds <= 10 or not 1 <= args.concurrency <= 64:
        parser.error("--seconds must be in (0, 10] and --concurrency in [1, 64]")
    started = time.monotonic()
    figures = trio.run(run_benchmarks, args.seconds, args.concurrency)
    machine = _machine()
    print(render(figures, machine, args.seconds))
    print(f"(total {time.monotonic() - started:.1f} s)")
    if args.json is not None:
        report = {
            "machine": machine,
            "seconds_per_phase": args.seconds,
            "figures": [f.to_json() for f in figures],
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
