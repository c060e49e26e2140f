"""The simulator's test kit, as ``trio.testing`` is trio's: what needs only the simulator.

- :class:`MemoryConnector`: ws_manager's connector seam over in-memory streams to the
  simulator (no sockets; virtual time), with scripted refusals, hangs and lost frames.
- :class:`SignedRestClient`: REST requests signed as Binance wants them, over
  ``httpx.ASGITransport`` or a real port.
"""

from __future__ import annotations

from genesis.sim.testing._memory import MemoryConnector, MemoryDialer
from genesis.sim.testing._rest import SignedRestClient, open_rest_client, unskewed

__all__ = ["MemoryConnector", "MemoryDialer", "SignedRestClient", "open_rest_client", "unskewed"]
