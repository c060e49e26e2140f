"""Market stream names, combined-stream URLs, and the route the merger needs per stream.

Genesis subscribes four streams per symbol (`web-socket-streams.md`): ``<s>@trade``,
``<s>@ticker``, ``<s>@depth20@100ms`` and ``<s>@kline_1m``, all on one combined connection
``<base>/stream?streams=a/b/c`` whose frames are ``{"stream": <name>, "data": <payload>}``.

The payloads, and the dedup key of each kind, are read by :mod:`genesis.models.codec` alone
(it owns Binance's wire format); this module only names streams and routes them.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Final

import attrs

from genesis.exchange.endpoints import parse_stream_name

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "MAX_STREAMS_PER_CONNECTION",
    "SERVER_SHUTDOWN_STREAM",
    "StreamKind",
    "StreamRoute",
    "combined_stream_url",
    "is_server_shutdown",
    "market_streams",
    "route_for",
]

MAX_STREAMS_PER_CONNECTION: Final = 1024
"""Binance's cap on streams per connection (web-socket-streams.md "Limits")."""

SERVER_SHUTDOWN_STREAM: Final = "!serverShutdown"
"""The combined stream name of Binance's ``serverShutdown`` notice (CL 2026-05-08)."""

_SHUTDOWN_MARK: Final = "serverShutdown"
_SHUTDOWN_MARK_BYTES: Final = _SHUTDOWN_MARK.encode()
_SHUTDOWN_PEEK: Final = 64  # both spellings put the marker within the first 40 characters


class StreamKind(enum.Enum):
    """The stream kinds Genesis consumes, with their name suffix after ``<symbol>@``."""

    TRADE = "trade"
    TICKER = "ticker"
    DEPTH = "depth20@100ms"
    KLINE = "kline_1m"


_KIND_BY_MODEL: Final = {
    "trade": StreamKind.TRADE,
    "ticker": StreamKind.TICKER,
    "partialDepth": StreamKind.DEPTH,
    "kline": StreamKind.KLINE,
}


@attrs.frozen
class StreamRoute:
    """What the merger needs to know about one stream name: its kind and upper-case symbol."""

    name: str
    kind: StreamKind
    symbol: str


def _check_symbol(symbol: str) -> str:
    if not symbol or not symbol.isascii() or not symbol.isalnum():
        raise ValueError(f"not a Binance symbol: {symbol!r}")
    return symbol.upper()


def market_streams(
    symbols: Iterable[str], kinds: Sequence[StreamKind] = tuple(StreamKind)
) -> tuple[str, ...]:
    """Stream names for every symbol and kind, symbol-major, lower-case as Binance wants.

    Args:
        symbols: Symbols in any case (``BTCUSDT`` or ``btcusdt``); duplicates are ignored.
        kinds: The kinds per symbol (default: all four).

    Raises:
        ValueError: a symbol is not alphanumeric ASCII, none was given, or the result exceeds
            :data:`MAX_STREAMS_PER_CONNECTION`.
    """
    unique = dict.fromkeys(_check_symbol(s) for s in symbols)
    if not unique:
        raise ValueError("at least one symbol is needed")
    names = tuple(f"{symbol.lower()}@{kind.value}" for symbol in unique for kind in kinds)
    if len(names) > MAX_STREAMS_PER_CONNECTION:
        raise ValueError(
            f"{len(names)} streams exceed Binance's {MAX_STREAMS_PER_CONNECTION} per connection"
        )
    return names


def combined_stream_url(stream_base_url: str, streams: Sequence[str]) -> str:
    """``<stream_base_url>/stream?streams=<s1>/<s2>/...``.

    Args:
        stream_base_url: ``wss://stream.binance.com:9443`` or the simulator's ``ws://127.0.0.1:<port>``;
            a trailing slash is ignored.
        streams: Stream names as returned by :func:`market_streams`.

    Raises:
        ValueError: no streams, or too many for one connection.
    """
    if not streams:
        raise ValueError("a combined stream URL needs at least one stream")
    if len(streams) > MAX_STREAMS_PER_CONNECTION:
        raise ValueError(f"{len(streams)} streams exceed {MAX_STREAMS_PER_CONNECTION}")
    return f"{stream_base_url.rstrip('/')}/stream?streams={'/'.join(streams)}"


def route_for(stream: str) -> StreamRoute | None:
    """The route of a stream name Genesis consumes, or ``None`` for any other name."""
    parsed = parse_stream_name(stream)
    if parsed is None:
        return None
    kind = _KIND_BY_MODEL.get(parsed.kind)
    if kind is None or f"{parsed.symbol.lower()}@{kind.value}" != stream:
        return None
    return StreamRoute(name=stream, kind=kind, symbol=parsed.symbol)


def is_server_shutdown(raw: str | bytes) -> bool:
    """Whether a raw frame is a ``serverShutdown`` notice, without parsing it.

    Matches both ``{"stream":"!serverShutdown","data":{...}}`` and the raw
    ``{"e":"serverShutdown","E":...}``; market payloads never carry the word that early.
    """
    if isinstance(raw, str):
        return _SHUTDOWN_MARK in raw[:_SHUTDOWN_PEEK]
    return _SHUTDOWN_MARK_BYTES in raw[:_SHUTDOWN_PEEK]
