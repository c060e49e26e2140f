"""Backfill: the REST fetches that fill the holes the merger could not fill from the streams.

The merger (:mod:`genesis.exchange.merger`) asks; the market-data service runs
:func:`fetch_trades` / :func:`fetch_klines` in a task of its own per request, so the live feed
never waits on REST: the merger holds the trades behind the hole, bounded, until the answer or
its timeout. The source is a
:class:`BackfillSource`, in production the order gateway
(:meth:`~genesis.exchange.gateway.Gateway.historical_trades` and
:meth:`~genesis.exchange.gateway.Gateway.klines`), so every request goes through the REST
rate limiter (``historicalTrades`` weighs 25 per 1,000 trades) and circuit breaker.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Final, Protocol, TypeVar

import trio

from genesis.errors import GenesisError, RetryableError
from genesis.exchange.merger import KLINE_INTERVAL_MS, KlineBackfillRequest, TradeBackfillRequest

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from genesis.models.market import Kline, Trade

__all__ = [
    "HISTORICAL_TRADES_LIMIT",
    "RETRY_DELAYS_S",
    "BackfillSource",
    "fetch_klines",
    "fetch_trades",
]

logger = logging.getLogger(__name__)

HISTORICAL_TRADES_LIMIT: Final = 1000
"""Binance's largest ``historicalTrades`` page."""
_KLINES_LIMIT: Final = 1000
RETRY_DELAYS_S: Final = (0.25, 0.5, 1.0, 2.0, 4.0)
"""Waits before each retry of a retryable failure (a 5xx, a transport error, 429, an open
breaker): a short burst of REST errors during an outage must not cost the hole. 7.75 s in all,
inside the merger's 10 s hold; the caller's timeout bounds the whole fetch anyway."""

_T = TypeVar("_T")


async def _retrying(what: str, call: Callable[[], Awaitable[_T]]) -> _T:
    for delay in RETRY_DELAYS_S:
        try:
            return await call()
        except RetryableError as exc:
            logger.info(
                "backfill.retry what=%s in_s=%g error=%s: %s", what, delay, type(exc).__name__, exc
            )
            await trio.sleep(delay)
    return await call()


class BackfillSource(Protocol):
    """Where missing market data comes from (REST); :class:`~genesis.exchange.gateway.Gateway`."""

    async def historical_trades(
        self, symbol: str, *, from_id: int, limit: int = HISTORICAL_TRADES_LIMIT
    ) -> tuple[Trade, ...]:
        """``GET /api/v3/historicalTrades``: trades from ``from_id`` on, oldest first."""
        ...

    async def klines(
        self,
        symbol: str,
        interval: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> tuple[Kline, ...]:
        """``GET /api/v3/klines``: klines opening in ``[start_ms, end_ms]``, oldest first."""
        ...


async def fetch_trades(
    source: BackfillSource, request: TradeBackfillRequest
) -> tuple[list[Trade], str | None]:
    """Page through ``historicalTrades`` until ``request.last_id`` is covered.

    Returns:
        The trades found (in id order, possibly fewer than asked) and ``None``, or what was
        found before a failure and the failure's description. A short or empty page ends
        the fetch (the ids after it are no longer, or not yet, in the exchange's history).

    Cancellation: whatever was fetched is lost; nothing else to clean up.
    """
    trades: list[Trade] = []
    next_id = request.first_id
    while next_id <= request.last_id:
        limit = min(HISTORICAL_TRADES_LIMIT, request.last_id - next_id + 1)
        try:
            page = await _retrying(
                "historicalTrades",
                functools.partial(
                    source.historical_trades, request.symbol, from_id=next_id, limit=limit
                ),
            )
        except GenesisError as exc:
            return trades, f"{type(exc).__name__}: {exc}"
        page_ids = [t.trade_id for t in page if t.trade_id >= next_id]
        if not page_ids:
            break
        trades.extend(t for t in page if next_id <= t.trade_id <= request.last_id)
        if len(page_ids) < limit:
            break  # a short page: the exchange has nothing newer yet
        next_id = max(page_ids) + 1
    return trades, None


async def fetch_klines(
    source: BackfillSource, request: KlineBackfillRequest
) -> tuple[tuple[Kline, ...], str | None]:
    """The 1m klines of ``request`` (one page: a hole of over 1,000 minutes keeps its tail)."""
    try:
        klines = await _retrying(
            "klines",
            functools.partial(
                source.klines,
                request.symbol,
                "1m",
                start_ms=request.first_open_ms,
                end_ms=request.last_open_ms + KLINE_INTERVAL_MS - 1,
                limit=_KLINES_LIMIT,
            ),
        )
    except GenesisError as exc:
        return (), f"{type(exc).__name__}: {exc}"
    return klines, None
