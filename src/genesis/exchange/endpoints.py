"""Binance Spot URLs, REST paths and request weights: the one table both sides read.

The client (gateway, limiter) and the simulator both import this module, so a weight or a path
is written once. Values follow Binance's current docs (see ``shared/binance/FACTS.md``):
REQUEST_WEIGHT 6000/min, depth weights 5/25/50/250, successful order place/cancel cost 0 weight
since 2026-04-02 while failed ones are charged the documented weight.
"""

from __future__ import annotations

from typing import Final

import attrs

from genesis.config import PRODUCTION, TESTNET, Environment
from genesis.models.streams import (
    KLINE_INTERVAL_MS,
    KLINE_INTERVALS,
    STREAM_KINDS,
    StreamName,
    parse_stream_name,
)

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
    "my_trades_weight",
    "open_orders_weight",
    "parse_stream_name",
    "ticker_weight",
]

API_PREFIX: Final = "/api/v3"
WS_API_PATH: Final = "/ws-api/v3"


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


def my_trades_weight(*, with_order_id: bool) -> int:
    """Weight of ``GET /api/v3/myTrades``: 5 with an ``orderId`` (since 2025-04), 20 without."""
    return 5 if with_order_id else 20
