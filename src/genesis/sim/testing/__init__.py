"""The simulator's test kit, as ``trio.testing`` is trio's: what needs only the simulator.

- :class:`MemoryConnector`: ws_manager's connector seam over in-memory streams to the
  simulator (no sockets; virtual time), with scripted refusals, hangs and lost frames.
- :class:`SignedRestClient`: REST requests signed as Binance wants them, over
  ``httpx.ASGITransport`` or a real port.
- :func:`loopback_tls`: a CA and a server certificate for a simulator serving ``wss://`` on
  loopback; :func:`trusted_by_default` makes default client contexts trust it.
"""

from __future__ import annotations

from genesis.sim.testing._memory import MemoryConnector, MemoryDialer
from genesis.sim.testing._rest import SignedRestClient, open_rest_client, unskewed
from genesis.sim.testing._tls import TLS_VERSIONS, LoopbackTls, loopback_tls, trusted_by_default

__all__ = [
    "TLS_VERSIONS",
    "LoopbackTls",
    "MemoryConnector",
    "MemoryDialer",
    "SignedRestClient",
    "loopback_tls",
    "open_rest_client",
    "trusted_by_default",
    "unskewed",
]
