"""The wall-clock soak: ``genesis soak`` as a script (not run in CI).

Usage::

    python scripts/soak.py [--duration 3600] [--faults flaky|chaos|none] [--report PATH]
                           [--seed 1] [--symbols BTCUSDT,ETHUSDT] [--log-level WARNING]

The whole tree (app/run.py) against the embedded simulator over loopback sockets, under the
simulator's own fault schedule, checked against its own trade record; see
:mod:`genesis.app.soak` for the report and the exit codes.
"""

from __future__ import annotations

import sys

from genesis.app.cli import main

__all__ = ["soak"]


def soak(argv: list[str]) -> int:
    """``genesis soak`` with ``argv``; returns its exit code."""
    return main(["soak", *argv])


if __name__ == "__main__":
    sys.exit(soak(sys.argv[1:]))
