"""``genesis soak``: the whole tree against the embedded simulator under its fault profiles.

```
genesis soak [--duration 3600] [--faults flaky|chaos|none] [--report PATH] [--seed 1]
             [--symbols BTCUSDT,ETHUSDT] [--order-book S1,S2] [--settle 5] [--record PATH]
             [--tls] [--log-level WARNING]
└── trio.run
    └── genesis.testing.run_soak     app/run.py's tree + the simulator's fault schedule,
                                     checked against the simulator's own trade record
```

A progress line every minute and a summary at the end go to stdout; ``--report`` writes the
:class:`~genesis.testing.RealSoakReport` as JSON. Ctrl-C or SIGTERM ends the window early and
the report is still written. Log lines at ``--log-level`` and above go to stderr (the soak
itself reads Genesis's INFO records to find the largest reconnect backoff).

Exit codes: 0 when nothing was lost, duplicated or out of order; 1 when something was (or the
tree crashed); 2 for bad arguments.
"""

from __future__ import annotations

import json
import logging
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from genesis.app.cli import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_OK,
    add_logging_options,
    err,
    positive_float,
    symbols_arg,
)
from genesis.app.logging import configure_logging

if TYPE_CHECKING:
    import argparse

    from genesis.testing import RealSoakReport, SoakTick

__all__ = ["add_soak_parser", "format_summary"]

logger = logging.getLogger(__name__)


def add_soak_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``genesis soak`` to the ``genesis`` subcommands ``sub``."""
    from genesis.sim.faults import FAULT_PROFILES

    soak = sub.add_parser(
        "soak",
        help="soak the whole tree against the embedded simulator under its fault profiles",
        description=(
            "Run market data, orders, user stream and heartbeat against the embedded simulator "
            "for a wall-clock duration while the simulator injects faults (the schedules of "
            "'genesis sim --faults'); check every trade against the simulator's own record. "
            "Exit 0: nothing lost, duplicated or out of order; 1: something was."
        ),
    )
    soak.add_argument(
        "--duration",
        type=positive_float,
        default=3600.0,
        metavar="SECONDS",
        help="wall-clock length of the soak (default 3600)",
    )
    soak.add_argument(
        "--faults",
        choices=sorted(FAULT_PROFILES),
        default="chaos",
        metavar="PROFILE",
        help=f"the simulator's fault profile: {', '.join(sorted(FAULT_PROFILES))} (default chaos)",
    )
    soak.add_argument("--report", metavar="PATH", help="write the JSON report here")
    soak.add_argument(
        "--seed", type=int, default=1, metavar="N", help="simulator and fault seed (default 1)"
    )
    soak.add_argument(
        "--symbols",
        type=symbols_arg,
        default=("BTCUSDT", "ETHUSDT"),
        metavar="S1,S2",
        help="symbols to soak (default BTCUSDT,ETHUSDT)",
    )
    soak.add_argument(
        "--settle",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="after the faults stop, how long held and in-flight trades may still arrive",
    )
    soak.add_argument("--record", metavar="PATH", help="also record every bus event")
    soak.add_argument(
        "--order-book", type=symbols_arg, default=(), metavar="S1,S2", help="also soak local books"
    )
    soak.add_argument(
        "--tls",
        action="store_true",
        help="the simulator serves its streams and WS API over TLS (wss://, as Binance does), "
        "with a certificate from a throw-away CA the soak trusts (needs the test extra)",
    )
    soak.add_argument(
        "--progress",
        type=positive_float,
        default=60.0,
        metavar="SECONDS",
        help="print a progress line this often (default 60)",
    )
    add_logging_options(soak, default="WARNING")
    soak.set_defaults(handler=_cmd_soak)


def format_summary(report: RealSoakReport) -> str:
    """A few lines for a person: the verdict first."""
    verdict = "OK" if report.ok else "FAILED"
    return "\n".join(
        [
            f"soak {verdict}: {report.duration_s:.0f} s, faults {report.profile} "
            f"(seed {report.seed}), {', '.join(report.symbols)}"
            f"{', over TLS' if report.tls else ''}",
            f"  trades printed {report.trades_published}, lost {report.trades_lost} "
            f"(outage {report.trades_lost_in_outage}, in flight {report.trades_lost_in_flight},"
            f" while up {report.trades_lost_while_up})",
            f"  duplicated {dict(report.duplicated)}, out of order {dict(report.out_of_order)}",
            f"  longest gap {report.longest_gap_s:.1f} s, largest backoff "
            f"{report.largest_backoff_s:.1f} s, reconnects {dict(report.reconnects)}",
            f"  faults {sum(report.faults.values())} {dict(report.faults)}",
            f"  RSS {report.rss_start_mib:.0f} -> {report.rss_end_mib:.0f} MiB "
            f"(peak {report.rss_peak_mib:.0f})",
        ]
    )


def _progress(out: TextIO, tick: SoakTick) -> None:
    out.write(
        f"soak t={tick.elapsed_s:.0f}s trades={tick.trades_published} events={tick.events} "
        f"reconnects={tick.reconnects} rss={tick.rss_mib:.0f}MiB\n"
    )
    out.flush()


def _cmd_soak(args: argparse.Namespace) -> int:
    if args.settle < 0:
        err("genesis: --settle must be >= 0")
        return EXIT_CONFIG
    if args.report is not None and not Path(args.report).parent.is_dir():
        err(f"genesis: --report: no such directory: {Path(args.report).parent}")
        return EXIT_CONFIG
    handler = configure_logging(logging.INFO, json=args.log_json)
    handler.setLevel(args.log_level)
    # Imported here: the parser stays light for the other commands.
    import trio

    from genesis.testing import run_soak

    try:
        report = trio.run(
            partial(
                run_soak,
                duration_s=args.duration,
                profile=args.faults,
                seed=args.seed,
                symbols=args.symbols,
                settle_s=args.settle,
                record_path=args.record,
                order_book=args.order_book,
                handle_signals=True,
                progress_every_s=args.progress,
                on_progress=partial(_progress, sys.stdout),
                tls=args.tls,
            )
        )
    except Exception as exc:
        logger.error("soak.crash error=%s", type(exc).__name__, exc_info=exc)
        err(f"genesis: soak failed: {type(exc).__name__}: {exc}")
        return EXIT_FAILURE
    if args.report is not None:
        Path(args.report).write_text(json.dumps(report.to_json(), indent=2) + "\n")
    sys.stdout.write(format_summary(report) + "\n")
    sys.stdout.flush()
    return EXIT_OK if report.ok else EXIT_FAILURE
