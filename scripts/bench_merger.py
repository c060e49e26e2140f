"""Frames per second through ``run_market_data``: this tree against another (before/after).

Usage::

    python scripts/bench_merger.py [--frames 20000] [--reps 3] [--baseline-ref 8a1dbed]

Each measurement runs in a fresh subprocess: ``run_market_data`` with 1 and with 3 roles, each
role's connection a fake WebSocket behind the connector seam that hands out the same
pre-built Binance-shaped frames as fast as the merger takes them (a mix per symbol of trade,
depth20, ticker and kline, 2 symbols), until the merger has published every unique event.
Figures are frames per CPU second of the process (every copy counted; CPU, not wall time, so
the other load on a shared machine barely moves them) and CPU µs per frame, medians of
``--reps`` interleaved repetitions, plus the merger core alone (``core us/frame``: the same
frames, each delivered ``roles`` times, fed synchronously: no scheduler in the figure); a raw
baseline in the same subprocess (``orjson.loads`` of every frame) gives the ratio.
``--baseline-ref`` is a git revision whose ``src/`` is exported to a temporary directory and
measured the same way, interleaved (``before``); this tree is ``after``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CHILD = r"""
import json, sys, time
import orjson, trio
from genesis.bus import EventBus
from genesis.exchange.ws_manager import run_market_data

FRAMES, ROLES = int(sys.argv[1]), int(sys.argv[2])
SYMBOLS = ("BTCUSDT", "ETHUSDT")


def frames():
    out = []
    i = 0
    while len(out) < FRAMES:
        i += 1
        for symbol in SYMBOLS:
            s = symbol.lower()
            e = 1_700_000_000_000 + i * 10
            trade = {"e": "trade", "E": e, "s": symbol, "t": i, "p": "0.00100000",
                     "q": "100.00000000", "T": e - 1, "m": True, "M": True}
            depth = {"lastUpdateId": 10_000 + i,
                     "bids": [[f"0.00{10 + k}", "10"] for k in range(20)],
                     "asks": [[f"0.00{40 + k}", "10"] for k in range(20)]}
            ticker = {"e": "24hrTicker", "E": e, "s": symbol, "p": "0.0015", "P": "250.00",
                      "w": "0.0018", "x": "0.0009", "c": "0.0025", "Q": "10", "b": "0.0024",
                      "B": "10", "a": "0.0026", "A": "100", "o": "0.0010", "h": "0.0025",
                      "l": "0.0010", "v": "10000", "q": "18", "O": e - 86_400_000, "C": e,
                      "F": 0, "L": 18150, "n": 18151}
            kline = {"e": "kline", "E": e, "s": symbol, "k": {
                "t": 1_700_000_000_000 + (i // 60) * 60_000,
                "T": 1_700_000_000_000 + (i // 60) * 60_000 + 59_999, "s": symbol, "i": "1m",
                "f": 100, "L": 200, "o": "0.0010", "c": "0.0020", "h": "0.0025",
                "l": "0.0015", "v": "1000", "n": 100, "x": i % 60 == 59, "q": "1.0000", "V": "500",
                "Q": "0.500", "B": "123456"}}
            for stream, data in ((f"{s}@trade", trade), (f"{s}@depth20@100ms", depth),
                                 (f"{s}@ticker", ticker), (f"{s}@kline_1m", kline)):
                out.append(orjson.dumps({"stream": stream, "data": data}).decode())
    return out[:FRAMES]


FEED = frames()


class Socket:
    def __init__(self):
        self.i = 0

    async def get_message(self):
        await trio.lowlevel.checkpoint()
        if self.i < len(FEED):
            self.i += 1
            return FEED[self.i - 1]
        await trio.sleep_forever()

    async def aclose(self, code=1000, reason=None):
        await trio.lowlevel.checkpoint()


async def connector(nursery, url, *, message_queue_size, role=""):
    await trio.lowlevel.checkpoint()
    return Socket()


def core_us_per_frame():
    # The merger alone, synchronously: every frame ROLES times (copies interleaved).
    import genesis.exchange.ws_manager as wm

    class Role:
        name = "bench"
        latency_ms = None
        first_delivered = 0

    bus = EventBus({})
    role = Role()
    if hasattr(wm, "_Merger"):  # before: the merger lived in ws_manager
        merger = wm._Merger(bus, wm.MarketDataConfig())
        step = lambda raw: merger.process(wm._Frame(role, raw, 0))
    else:
        from genesis.exchange.merger import Merger
        merger = Merger(bus.publish_nowait)
        step = lambda raw: merger.on_frame(role, raw, 0, 0.0)
    start = time.process_time()
    for raw in FEED:
        for _ in range(ROLES):
            step(raw)
    return (time.process_time() - start) * 1e6 / (len(FEED) * ROLES)


async def main():
    core_us = core_us_per_frame()
    raw_start = time.process_time()
    for raw in FEED:
        orjson.loads(raw)
    raw_s = time.process_time() - raw_start
    bus = EventBus({})
    roles = ("execution", "monitoring", "backup")[:ROLES]
    async with trio.open_nursery() as nursery:
        start = time.process_time()
        handle = await nursery.start(lambda task_status: run_market_data(
            "ws://bench.invalid", SYMBOLS, bus, roles=roles, connector=connector,
            wall_clock_ms=lambda: 0, task_status=task_status))
        await handle.wait_published(len(FEED))
        elapsed = time.process_time() - start
        frames_seen = handle.statistics().merger.frames
        nursery.cancel_scope.cancel()
    print(json.dumps(
        {"elapsed_s": elapsed, "frames": frames_seen, "raw_s": raw_s, "core_us": core_us}
    ))


trio.run(main)
"""


def _measure(src: Path, frames: int, roles: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(frames), str(roles)],
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=20_000, help="unique frames per role")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--baseline-ref", default=None, help="git revision to compare against")
    args = parser.parse_args()
    trees = {"after": ROOT / "src"}
    with tempfile.TemporaryDirectory() as tmp:
        if args.baseline_ref:
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", args.baseline_ref, "src"],
                capture_output=True,
                check=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            trees = {"before": Path(tmp) / "src", **trees}
        results: dict[tuple[str, int], list[dict[str, float]]] = {}
        for _ in range(args.reps):
            for roles in (1, 3):
                for name, src in trees.items():
                    results.setdefault((name, roles), []).append(_measure(src, args.frames, roles))
        print(f"frames per role: {args.frames}, reps: {args.reps} (medians)")
        print(
            f"{'tree':8} {'roles':>5} {'frames/s':>10} {'us/frame':>9} {'x raw loads':>11}"
            f" {'core us/frame':>13}"
        )
        rates: dict[tuple[str, int], float] = {}
        for (name, roles), runs in results.items():
            rate = statistics.median(r["frames"] / r["elapsed_s"] for r in runs)
            raw_rate = statistics.median(args.frames / r["raw_s"] for r in runs)
            rates[name, roles] = rate
            core_us = statistics.median(r["core_us"] for r in runs)
            print(
                f"{name:8} {roles:>5} {rate:>10,.0f} {1e6 / rate:>9.1f} {rate / raw_rate:>11.3f}"
                f" {core_us:>13.2f}"
            )
        for roles in (1, 3):
            if ("before", roles) in rates:
                ratio = rates["after", roles] / rates["before", roles]
                core = statistics.median(r["core_us"] for r in results["before", roles]) / (
                    statistics.median(r["core_us"] for r in results["after", roles])
                )
                print(
                    f"ratio after/before, {roles} role(s): frames/s {ratio:.2f}, "
                    f"core speed {core:.2f}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
