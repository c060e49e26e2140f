"""A signing REST test client: Binance HMAC requests against the simulator, in a few lines.

The signature is computed here with :mod:`hmac` over the exact bytes sent (the query string, or
a form body), independently of the client code under test (``exchange/signing.py``), so a test
that uses it checks the simulator, not the client's signing against itself.
"""

from __future__ import annotations

import hashlib
import hmac
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

import attrs
import httpx

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from genesis.sim.asgi import AsgiApp
    from genesis.sim.clock import SimClock

__all__ = ["SignedRestClient", "open_rest_client", "unskewed"]

_FORM = "application/x-www-form-urlencoded"


def unskewed(clock: SimClock) -> Callable[[], int]:
    """The client's clock for ``clock``: the simulator's time without its skew fault."""

    def now_ms() -> int:
        return clock.now_ms() - clock.skew_ms

    return now_ms


@attrs.define(eq=False, kw_only=True)
class SignedRestClient:
    """Signed and public ``/api/v3`` requests over any ``httpx.AsyncClient``.

    Attributes:
        http: The client (its ``base_url`` is the simulator's REST URL); the caller closes it.
        now_ms: The client's clock, for ``timestamp`` (:func:`unskewed` of the sim's clock).
        api_key: Sent as ``X-MBX-APIKEY``.
        api_secret: The HMAC secret (never in a repr).
    """

    http: httpx.AsyncClient
    now_ms: Callable[[], int]
    api_key: str
    api_secret: str = attrs.field(repr=False)

    def sign(
        self, params: dict[str, str], *, secret: str | None = None, timestamp: int | None = None
    ) -> str:
        """``params`` + ``timestamp`` percent-encoded, then ``&signature=`` over those bytes."""
        ts = self.now_ms() if timestamp is None else timestamp
        query = urlencode({**params, "timestamp": str(ts)}, quote_via=quote)
        key = (self.api_secret if secret is None else secret).encode()
        signature = hmac.new(key, query.encode(), hashlib.sha256).hexdigest()
        return f"{query}&signature={signature}"

    async def signed(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        *,
        api_key: str | None = None,
        secret: str | None = None,
        timestamp: int | None = None,
        in_body: bool = False,
    ) -> httpx.Response:
        """A signed ``/api/v3/<path>`` request (parameters in the query, or a form body)."""
        payload = self.sign(params or {}, secret=secret, timestamp=timestamp)
        headers = {"X-MBX-APIKEY": self.api_key if api_key is None else api_key}
        if in_body:
            headers["Content-Type"] = _FORM
            return await self.http.request(
                method, f"/api/v3/{path}", content=payload.encode(), headers=headers
            )
        return await self.http.request(method, f"/api/v3/{path}?{payload}", headers=headers)

    async def public(self, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        """An unsigned ``GET /api/v3/<path>``."""
        return await self.http.get(f"/api/v3/{path}", params=params)


@asynccontextmanager
async def open_rest_client(
    app: AsgiApp,
    *,
    now_ms: Callable[[], int],
    api_key: str,
    api_secret: str,
    client: tuple[str, int] = ("127.0.0.1", 50_000),
) -> AsyncIterator[SignedRestClient]:
    """A :class:`SignedRestClient` over ``httpx.ASGITransport`` (no socket; MockClock-safe).

    Args:
        app: The simulator's ASGI app (``sim.http_app`` or a ``RestApp``).
        now_ms: The client's clock.
        api_key: Default ``X-MBX-APIKEY``.
        api_secret: Default HMAC secret.
        client: The address the app sees (``scope["client"]``; per-IP limits key on it).
    """
    transport = httpx.ASGITransport(app=app, client=client)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as http:
        yield SignedRestClient(http=http, now_ms=now_ms, api_key=api_key, api_secret=api_secret)
