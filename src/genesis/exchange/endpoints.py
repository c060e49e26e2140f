"""Binance Spot URLs, REST paths and request weights: the one table both sides read.

The client (gateway, limiter) and the simulator both import this module, so a weight or a path
is written once. Values follow Binance's current docs (see ``shared/binance/FACTS.md``):
REQUEST_WEIGHT 6000/min, depth weights 5/25/50/250, successful order place/cancel cost 0 weight
since 2026-04-02 while failed ones are charged the documented weight.
"""

from __future__ import annotations

from typing import Final

import attrs

__all__ = [
    "API_PREFIX",
    "ENDPOINTS",
    "KLINE_INTERVALS",
    "KLINE_INTERVAL_MS",
    "PRODUCTION",
    "STREAM_KINDS",
    "TESTNET",
    "WS_API_PATH",
    "Endpoint",
    "Environment",
    "StreamName",
    "depth_weight",
    "open_orders_weight",
    "parse_stream_name",
    "ticker_weight",
]

API_PREFIX: Final = "/api/v3"
WS_API_PATH: Final = "/ws-api/v3"


@attrs.frozen(kw_only=True)
class Environment:
    """Where one Binance environment lives: REST base, market streams base, WS API URL."""

    name: str
    rest_url: str
    stream_url: str
    ws_api_url: str


PRODUCTION: Final = Environment(
    name="production",
    rest_url="https://api.binance.com",
    stream_url="wss://stream.binance.com:9443",
    ws_api_url="wss://ws-api.binance.com:443/ws-api/v3",
)
TESTNET: Final = Environment(
    name="testnet",
    rest_url="https://testnet.binance.vision",
    stream_url="wss://stream.testnet.binance.vision",
    ws_api_url="wss://ws-api.testnet.binance.vision/ws-api/v3",
)


@attrs.frozen(kw_only=True)
class Endpoint:
    """One REST endpoint.

    ``weight`` is the documented REQUEST_WEIGHT (for endpoints whose weight depends on
    parameters, the weight of the cheapest form; see the ``*_weight`` helpers).
    ``signed`` endpoints need ``timestamp`` + ``signature`` + ``X-MBX-APIKEY``.
    ``counts_order`` endpoints add to the ORDERS (unfilled order count) limits.
    ``free_on_success`` endpoints cost 0 weight when they succeed (CHANGELOG 2026-03-27).
    """

    method: str
    path: str
    weight: int
    signed: bool = False
    counts_order: bool = False
    free_on_success: bool = False


def _ep(
    method: str,
    name: str,
    weight: int,
    *,
    signed: bool = False,
    counts_order: bool = False,
    free_on_success: bool = False,
) -> tuple[tuple[str, str], Endpoint]:
    path = f"{API_PREFIX}/{name}"
    return (method, path), Endpoint(
        method=method,
        path=path,
        weight=weight,
        signed=signed,
        counts_order=counts_order,
        free_on_success=free_on_success,
    )


ENDPOINTS: Final[dict[tuple[str, str], Endpoint]] = dict(
    [
        _ep("GET", "ping", 1),
        _ep("GET", "time", 1),
        _ep("GET", "exchangeInfo", 20),
        _ep("GET", "depth", 5),
        _ep("GET", "trades", 25),
        _ep("GET", "historicalTrades", 25),
        _ep("GET", "aggTrades", 4),
        _ep("GET", "klines", 2),
        _ep("GET", "uiKlines", 2),
        _ep("GET", "avgPrice", 2),
        _ep("GET", "ticker/24hr", 2),
        _ep("GET", "ticker/price", 2),
        _ep("GET", "ticker/bookTicker", 2),
        _ep("POST", "order", 1, signed=True, counts_order=True, free_on_success=True),
        _ep("POST", "order/test", 1, signed=True),
        _ep("GET", "order", 4, signed=True),
        _ep("DELETE", "order", 1, signed=True, free_on_success=True),
        _ep("GET", "openOrders", 6, signed=True),
        _ep("DELETE", "openOrders", 1, signed=True, free_on_success=True),
        _ep("GET", "allOrders", 20, signed=True),
        _ep("GET", "account", 20, signed=True),
        _ep("GET", "myTrades", 20, signed=True),
        _ep("GET", "rateLimit/order", 40, signed=True),
    ]
)


def depth_weight(limit: int) -> int:
    """Weight of ``GET /api/v3/depth`` for ``limit`` (1–100: 5, –500: 25, –1000: 50, else 250)."""
    if limit <= 100:
        return 5
    if limit <= 500:
        return 25
    if limit <= 1000:
        return 50
    return 250


def ticker_weight(symbol_count: int | None) -> int:
    """Weight of ``GET /api/v3/ticker/24hr``: 2 for one symbol, 2/40/80 by count, 80 for all."""
    if symbol_count is None:
        return 80
    if symbol_count <= 20:
        return 2
    if symbol_count <= 100:
        return 40
    return 80


def open_orders_weight(*, with_symbol: bool) -> int:
    """Weight of ``GET /api/v3/openOrders``: 6 with a symbol, 80 without."""
    return 6 if with_symbol else 80


# --- market stream names -----------------------------------------------------------------

"""Kline intervals as Binance spells them (case-sensitive: ``1m`` minute, ``1M`` month)."""

KLINE_INTERVAL_MS: Final[dict[str, int]] = {
    "1s": 1_000,
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
    "3d": 259_200_000,
    "1w": 604_800_000,
    "1M": 2_592_000_000,  # nominal 30 days; calendar months are handled where it matters
}

KLINE_INTERVALS: Final = tuple(KLINE_INTERVAL_MS)
"""Kline intervals as Binance spells them (case-sensitive: ``1m`` minute, ``1M`` month)."""

STREAM_KINDS: Final = frozenset(
    {"trade", "aggTrade", "ticker", "miniTicker", "bookTicker", "depth", "partialDepth", "kline"}
)


@attrs.frozen(kw_only=True)
class StreamName:
    """A parsed market stream name such as ``btcusdt@depth20@100ms`` or ``ethusdt@kline_1m``.

    ``symbol`` is upper case (as in payloads); ``str()`` gives the wire name (lower-case symbol).
    ``kind`` is one of :data:`STREAM_KINDS`; ``levels`` is set for ``partialDepth`` (5, 10, 20);
    ``speed_ms`` for both depth kinds (100 or 1000); ``interval`` for klines.
    """

    symbol: str
    kind: str
    levels: int | None = None
    speed_ms: int | None = None
    interval: str | None = None

    def __str__(self) -> str:
        base = self.symbol.lower()
        if self.kind == "kline":
            return f"{base}@kline_{self.interval}"
        if self.kind in ("depth", "partialDepth"):
            name = f"{base}@depth{self.levels or ''}"
            return name if self.speed_ms == 1000 else f"{name}@{self.speed_ms}ms"
        return f"{base}@{self.kind}"


def parse_stream_name(name: str) -> StreamName | None:
    """Parse a single-symbol market stream name; ``None`` when it is not one we know.

    Accepts exactly Binance's spelling: lower-case symbol, case-sensitive kinds
    (``aggTrade``, ``bookTicker``, ``miniTicker``), ``depth`` / ``depth<5|10|20>`` with an
    optional ``@100ms`` or ``@1000ms``, and ``kline_<interval>``.
    """
    parts = name.split("@")
    if len(parts) not in (2, 3):
        return None
    sym, kind = parts[0], parts[1]
    if not sym or not sym.isalnum() or sym != sym.lower():
        return None
    symbol = sym.upper()
    if len(parts) == 3:
        speed = {"100ms": 100, "1000ms": 1000}.get(parts[2])
        if speed is None or not kind.startswith("depth"):
            return None
    else:
        speed = 1000
    if kind in ("trade", "aggTrade", "ticker", "miniTicker", "bookTicker"):
        return StreamName(symbol=symbol, kind=kind)
    if kind == "depth":
        return StreamName(symbol=symbol, kind="depth", speed_ms=speed)
    if kind in ("depth5", "depth10", "depth20"):
        return StreamName(symbol=symbol, kind="partialDepth", levels=int(kind[5:]), speed_ms=speed)
    if kind.startswith("kline_") and kind[6:] in KLINE_INTERVAL_MS:
        return StreamName(symbol=symbol, kind="kline", interval=kind[6:])
    return None
