"""Soak the market-data path against the whole simulator in virtual time (not run in CI).

Usage::

    python scripts/soak_virtual.py [--hours 24] [--seed 1] [--profile chaos|flaky|none]
                                   [--market-step 0.1] [--symbols BTCUSDT,ETHUSDT]
                                   [--max-wall-minutes 60] [--tracemalloc] [--json PATH]
                                   [--no-backfill]

Runs :func:`genesis.testing.run_virtual_soak` under ``MockClock(autojump_threshold=0)``: three
redundant connections through an in-memory connector to the simulator, a seeded fault schedule,
the 24 h age cap, and the exchange's own trades as ground truth. Prints a progress line every
virtual hour and a summary at the end; ``--json`` also writes the report with the wall time,
the virtual-to-wall speed-up and the memory figures: the resident set size every virtual hour
and its peak, and with ``--tracemalloc`` the traced Python heap (per hour, and its peak).
tracemalloc makes the run about five times slower, so it is off by default.

Measured (2 symbols, chaos, one core of a small VM): one virtual hour takes about a minute at
the simulator's 100 ms market step, a day about half an hour; with ``--market-step 1.0`` about
11 s and 5 min.

Wall time is bounded: once ``--max-wall-minutes`` have passed the measured window ends at the
next virtual hour (the report says ``stopped_early``). ``--market-step`` above 0.1 s steps the
market less often (fewer frames, less wall time; see ``run_virtual_soak``).

Exit status: 0 when the invariants hold (no trade lost while a connection was up, no duplicate,
nothing out of order, nothing dropped by the bus), 1 when one does not, 2 when the soak crashed
(the error is logged and written to the JSON file).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import resource
import sys
import time
import tracemalloc
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs
import trio
import trio.testing

from genesis.app.logging import configure_logging
from genesis.sim.faults import FAULT_PROFILES
from genesis.testing import DEFAULT_SOAK_SYMBOLS, run_virtual_soak

if TYPE_CHECKING:
    from genesis.testing import SoakProgress, SoakReport

__all__ = ["main"]

logger = logging.getLogger("soak_virtual")

HOUR_S: Final = 3600.0
MIB: Final = 1024 * 1024

Json = dict[str, object]


@attrs.define
class _Run:
    """Wall-clock bookkeeping of one soak (the harness itself only sees virtual time)."""

    max_wall_s: float | None
    trace_memory: bool
    started: float = attrs.field(factory=time.perf_counter)
    memory: list[Json] = attrs.field(factory=list)
    last_progress: SoakProgress | None = None

    def wall_s(self) -> float:
        return time.perf_counter() - self.started

    def on_progress(self, progress: SoakProgress) -> bool:
        self.last_progress = progress
        wall = self.wall_s()
        sample: Json = {
            "virtual_h": progress.virtual_s / HOUR_S,
            "wall_s": round(wall, 1),
            "rss_mib": _rss_mib(),
        }
        if self.trace_memory:
            current, peak = tracemalloc.get_traced_memory()
            sample["traced_mib"] = round(current / MIB, 1)
            sample["traced_peak_mib"] = round(peak / MIB, 1)
        self.memory.append(sample)
        print(
            f"  {progress.virtual_s / HOUR_S:5.1f} h virtual  {wall:7.1f} s wall  "
            f"trades={progress.trades_published}  events={progress.events_delivered}  "
            f"reconnects={progress.reconnects}  rotations={progress.rotations}  "
            f"rss={sample['rss_mib']} MiB"
            + (f"  traced={sample['traced_mib']} MiB" if self.trace_memory else ""),
            flush=True,
        )
        return self.max_wall_s is not None and wall >= self.max_wall_s


def _rss_mib() -> float | None:
    """The current resident set size (Linux ``/proc``), or None where it is not available."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * resource.getpagesize() / MIB, 1)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=24.0, help="virtual hours (default 24)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", choices=sorted(FAULT_PROFILES), default="chaos")
    parser.add_argument(
        "--market-step", type=float, default=0.1, help="market feed step in s (default 0.1)"
    )
    parser.add_argument("--symbols", default=",".join(DEFAULT_SOAK_SYMBOLS))
    parser.add_argument(
        "--max-wall-minutes",
        type=float,
        default=60.0,
        help="end the window at the next virtual hour after this much wall time (0: no bound)",
    )
    parser.add_argument(
        "--tracemalloc", action="store_true", help="trace the Python heap (about 5x slower)"
    )
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument(
        "--backfill",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="backfill trades no connection delivered from REST, as genesis run does",
    )
    parser.add_argument("--log-level", default="ERROR", help="Genesis log level (default ERROR)")
    return parser.parse_args(argv)


def _invariants_hold(report: SoakReport) -> bool:
    return (
        report.trades_lost_while_up == 0
        and report.trades_unrecorded == 0
        and not report.duplicates
        and not report.out_of_order
        and report.bus_dropped == 0
        and report.merger["bus_rejected"] == 0
        and report.merger["decode_errors"] == 0
    )


def _summary(report: SoakReport, wall_s: float) -> str:
    lines = [
        f"virtual soak: {report.duration_s / HOUR_S:.2f} h of profile {report.profile!r}, "
        f"seed {report.seed}, {len(report.symbols)} symbols, market step {report.market_step_s} s"
        + (" (stopped early: wall-time bound)" if report.stopped_early else ""),
        f"  wall time            {wall_s:.1f} s ({report.duration_s / max(wall_s, 1e-9):.0f}x)",
        f"  trades published     {report.trades_published}",
        f"  exchange's record    {report.trades_in_record} (its history: last 10,000 per symbol)",
        f"    of them on the bus {report.trades_delivered}",
        f"  lost in outages      {report.trades_lost_in_outage}"
        f" ({report.uncovered_s} s without a delivering connection)",
        f"  lost in flight       {report.trades_lost_in_flight}",
        f"  lost while up        {report.trades_lost_while_up}  (must be 0)",
        f"  duplicates           {dict(report.duplicates) or 0}  (must be 0)",
        f"  out of order         {dict(report.out_of_order) or 0}  (must be 0)",
        f"  longest feed gap     {report.longest_feed_gap_s:.1f} s "
        f"(ended at {report.longest_feed_gap_end_s:.1f} s)",
        f"  reconnects           {report.reconnects} "
        + " ".join(f"{r.role}={r.reconnects}" for r in report.roles),
        f"  rotations            {report.rotations} "
        + " ".join(f"{r.role}={r.rotations}" for r in report.roles),
        f"  oldest connection    {report.max_connection_age_s / HOUR_S:.2f} h",
        f"  faults               {dict(report.faults)}",
        f"  merger               {dict(report.merger)}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the soak; returns the exit status (see the module docstring)."""
    args = _parse(argv)
    configure_logging(args.log_level)
    max_wall_s = args.max_wall_minutes * 60 if args.max_wall_minutes > 0 else None
    run = _Run(max_wall_s=max_wall_s, trace_memory=args.tracemalloc)
    if run.trace_memory:
        tracemalloc.start()
    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
    print(
        f"soak: {args.hours:g} virtual h, profile {args.profile}, seed {args.seed}, "
        f"symbols {','.join(symbols)}, market step {args.market_step} s",
        flush=True,
    )
    out: Json = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    status = 0
    try:
        report = trio.run(
            lambda: run_virtual_soak(
                duration_s=args.hours * HOUR_S,
                seed=args.seed,
                profile=args.profile,
                symbols=symbols,
                market_step_s=args.market_step,
                progress_every_s=HOUR_S,
                on_progress=run.on_progress,
                backfill=args.backfill,
            ),
            clock=trio.testing.MockClock(autojump_threshold=0),
        )
    except Exception as exc:  # supervision boundary: report the crash, then exit 2
        logger.error("soak.crashed", exc_info=True)
        progress = run.last_progress
        out["crash"] = repr(exc)
        out["crashed_after_virtual_h"] = None if progress is None else progress.virtual_s / HOUR_S
        status = 2
    else:
        wall_s = run.wall_s()
        print(_summary(report, wall_s), flush=True)
        out["report"] = report.to_json()
        out["wall_s"] = round(wall_s, 1)
        out["virtual_per_wall"] = round(report.duration_s / max(wall_s, 1e-9), 1)
        status = 0 if _invariants_hold(report) else 1
    if run.trace_memory:
        out["tracemalloc_peak_mib"] = round(tracemalloc.get_traced_memory()[1] / MIB, 1)
        tracemalloc.stop()
    out["memory"] = run.memory
    # ru_maxrss is KiB on Linux, bytes on macOS.
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out["max_rss_mib"] = round(maxrss / (MIB if sys.platform == "darwin" else 1024), 1)
    traced = out.get("tracemalloc_peak_mib")
    print(
        f"  peak memory          max RSS {out['max_rss_mib']} MiB"
        + ("" if traced is None else f", tracemalloc peak {traced} MiB"),
        flush=True,
    )
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
