"""Builders for the market-stream payloads, as the JSON bytes Binance sends.

Each builder returns ``orjson`` bytes of the *data* object only (the stream server wraps it for
combined streams). Key sets and value types follow web-socket-streams.md (FACTS.md §8;
samples.json ``ws.*``): prices and quantities are strings with 8 decimals, ids and times are
integers. ``@trade`` has no ``b``/``a`` (removed 2024-06); ``@bookTicker`` and ``@depth<N>`` have
no ``e``/``E``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Final

import orjson

from genesis.sim.symbols import fmt_decimal

if TYPE_CHECKING:
    from collections.abc import Sequence

    from genesis.sim.exchange import JsonObject, PublicTrade, TickerStats

__all__ = [
    "AGG_TRADE_KEYS",
    "BOOK_TICKER_KEYS",
    "DEPTH_UPDATE_KEYS",
    "KLINE_KEYS",
    "KLINE_K_KEYS",
    "MINI_TICKER_KEYS",
    "PARTIAL_DEPTH_KEYS",
    "TICKER_KEYS",
    "TRADE_KEYS",
    "agg_trade_payload",
    "book_ticker_payload",
    "depth_update_payload",
    "kline_payload",
    "levels_wire",
    "mini_ticker_payload",
    "partial_depth_payload",
    "ticker_payload",
    "trade_payload",
]

TRADE_KEYS: Final = ("e", "E", "s", "t", "p", "q", "T", "m", "M")
AGG_TRADE_KEYS: Final = ("e", "E", "s", "a", "p", "q", "f", "l", "T", "m", "M")
BOOK_TICKER_KEYS: Final = ("u", "s", "b", "B", "a", "A")
PARTIAL_DEPTH_KEYS: Final = ("lastUpdateId", "bids", "asks")
DEPTH_UPDATE_KEYS: Final = ("e", "E", "s", "U", "u", "b", "a")
TICKER_KEYS: Final = (
    *("e", "E", "s", "p", "P", "w", "x", "c", "Q", "b", "B", "a", "A"),
    *("o", "h", "l", "v", "q", "O", "C", "F", "L", "n"),
)
MINI_TICKER_KEYS: Final = ("e", "E", "s", "c", "o", "h", "l", "v", "q")
KLINE_KEYS: Final = ("e", "E", "s", "k")
KLINE_K_KEYS: Final = (
    *("t", "T", "s", "i", "f", "L", "o", "c", "h", "l", "v", "n", "x", "q", "V", "Q", "B"),
)
"""Documented key sets, in the docs' order (tests compare payloads against them)."""


def _f(value: Decimal) -> str:
    return fmt_decimal(value)


def levels_wire(levels: Sequence[tuple[Decimal, Decimal]]) -> list[list[str]]:
    """``[[price, qty], ...]`` as strings."""
    return [[_f(p), _f(q)] for p, q in levels]


def trade_payload(trade: PublicTrade, event_time_ms: int) -> bytes:
    """``<symbol>@trade``."""
    return orjson.dumps(
        {
            "e": "trade",
            "E": event_time_ms,
            "s": trade.symbol,
            "t": trade.trade_id,
            "p": _f(trade.price),
            "q": _f(trade.qty),
            "T": trade.time_ms,
            "m": trade.is_buyer_maker,
            "M": True,
        }
    )


def agg_trade_payload(trades: Sequence[PublicTrade], event_time_ms: int) -> bytes:
    """``<symbol>@aggTrade`` for the fills of one aggregate (same taker, same price)."""
    first = trades[0]
    qty = sum((t.qty for t in trades), Decimal(0))
    return orjson.dumps(
        {
            "e": "aggTrade",
            "E": event_time_ms,
            "s": first.symbol,
            "a": first.agg_id,
            "p": _f(first.price),
            "q": _f(qty),
            "f": first.trade_id,
            "l": trades[-1].trade_id,
            "T": first.time_ms,
            "m": first.is_buyer_maker,
            "M": True,
        }
    )


def book_ticker_payload(
    symbol: str,
    update_id: int,
    bid: tuple[Decimal, Decimal] | None,
    ask: tuple[Decimal, Decimal] | None,
) -> bytes:
    """``<symbol>@bookTicker`` (an empty side is reported as zeros)."""
    zero = (Decimal(0), Decimal(0))
    bp, bq = bid if bid is not None else zero
    ap, aq = ask if ask is not None else zero
    return orjson.dumps(
        {"u": update_id, "s": symbol, "b": _f(bp), "B": _f(bq), "a": _f(ap), "A": _f(aq)}
    )


def partial_depth_payload(
    last_update_id: int,
    bids: Sequence[tuple[Decimal, Decimal]],
    asks: Sequence[tuple[Decimal, Decimal]],
) -> bytes:
    """``<symbol>@depth<5|10|20>[@100ms]``: a top-of-book snapshot."""
    return orjson.dumps(
        {"lastUpdateId": last_update_id, "bids": levels_wire(bids), "asks": levels_wire(asks)}
    )


def depth_update_payload(
    symbol: str,
    event_time_ms: int,
    first_update_id: int,
    last_update_id: int,
    bids: Sequence[tuple[Decimal, Decimal]],
    asks: Sequence[tuple[Decimal, Decimal]],
) -> bytes:
    """``<symbol>@depth[@100ms]``: changed levels with absolute quantities ("0" removes)."""
    return orjson.dumps(
        {
            "e": "depthUpdate",
            "E": event_time_ms,
            "s": symbol,
            "U": first_update_id,
            "u": last_update_id,
            "b": levels_wire(bids),
            "a": levels_wire(asks),
        }
    )


def ticker_payload(stats: TickerStats, event_time_ms: int) -> bytes:
    """``<symbol>@ticker`` (``24hrTicker``, rolling 24 h window)."""
    return orjson.dumps(
        {
            "e": "24hrTicker",
            "E": event_time_ms,
            "s": stats.symbol,
            "p": _f(stats.price_change),
            "P": stats.price_change_percent,
            "w": _f(stats.weighted_avg_price),
            "x": _f(stats.prev_close),
            "c": _f(stats.last),
            "Q": _f(stats.last_qty),
            "b": _f(stats.bid_price),
            "B": _f(stats.bid_qty),
            "a": _f(stats.ask_price),
            "A": _f(stats.ask_qty),
            "o": _f(stats.open),
            "h": _f(stats.high),
            "l": _f(stats.low),
            "v": _f(stats.volume),
            "q": _f(stats.quote_volume),
            "O": stats.open_time_ms,
            "C": stats.close_time_ms,
            "F": stats.first_id,
            "L": stats.last_id,
            "n": stats.count,
        }
    )


def mini_ticker_payload(stats: TickerStats, event_time_ms: int) -> bytes:
    """``<symbol>@miniTicker`` (``24hrMiniTicker``)."""
    return orjson.dumps(
        {
            "e": "24hrMiniTicker",
            "E": event_time_ms,
            "s": stats.symbol,
            "c": _f(stats.last),
            "o": _f(stats.open),
            "h": _f(stats.high),
            "l": _f(stats.low),
            "v": _f(stats.volume),
            "q": _f(stats.quote_volume),
        }
    )


def kline_payload(symbol: str, k: JsonObject, event_time_ms: int) -> bytes:
    """``<symbol>@kline_<interval>`` around the ``k`` object from :meth:`Exchange.kline`."""
    return orjson.dumps({"e": "kline", "E": event_time_ms, "s": symbol, "k": k})
