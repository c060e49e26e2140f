"""Genesis's test kit above both sides: harnesses that wire the client to the simulator.

It sits above ``genesis.app``, ``genesis.exchange`` and ``genesis.sim`` (it imports all of
them; nothing in production imports it). What needs only the simulator is in
:mod:`genesis.sim.testing`.

- :func:`run_virtual_soak`: the market-data path against the whole simulator in memory, under
  ``trio.testing.MockClock`` (a day of chaos in minutes of wall time).
- :func:`run_soak`: the whole tree (``app/run.py``) against the embedded simulator over
  loopback sockets, for a wall-clock duration (``genesis soak``, ``scripts/soak.py``).
- :func:`settings_for`: testnet-mode settings pointing every URL at a running simulator.

Both run the simulator's own fault schedules (:data:`genesis.sim.faults.FAULT_PROFILES`) and
check what reached the bus against the simulator's own trade record.
"""

from __future__ import annotations

from genesis.testing._realtime import RealSoakReport, SoakTick, run_soak
from genesis.testing._virtual import (
    DEFAULT_SOAK_SYMBOLS,
    SoakProgress,
    SoakReport,
    SoakRole,
    profile_of,
    run_virtual_soak,
)
from genesis.testing._wiring import settings_for

__all__ = [
    "DEFAULT_SOAK_SYMBOLS",
    "RealSoakReport",
    "SoakProgress",
    "SoakReport",
    "SoakRole",
    "SoakTick",
    "profile_of",
    "run_soak",
    "run_virtual_soak",
    "settings_for",
]
