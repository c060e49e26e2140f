"""A test kit for code tested against the simulator, as trio ships ``trio.testing``.

Everything here needs only the simulator: :class:`SignedRestClient` (REST requests signed as
Binance wants them, over ``httpx.ASGITransport`` or a real port).
"""

from __future__ import annotations

from genesis.sim.testing._rest import SignedRestClient, open_rest_client, unskewed

__all__ = ["SignedRestClient", "open_rest_client", "unskewed"]
