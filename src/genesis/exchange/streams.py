"""Market stream names, combined-stream URLs and the cheap dedup keys the merger needs.

Genesis subscribes four streams per symbol (`web-socket-streams.md`): ``<s>@trade``,
``<s>@ticker``, ``<s>@depth20@100ms`` and ``<s>@kline_1m``, all on one combined connection
``<base>/stream?streams=a/b/c`` whose frames are ``{"stream": <name>, "data": <payload>}``.

The dedup keys are read from an already ``orjson``-parsed payload, before any Decimal/attrs
decoding (the expensive part, ARCHITECTURE.md §7):

==========  =============================  ==============================================
kind        key                            meaning
==========  =============================  ==============================================
trade       ``t``                          trade id, consecutive per symbol
depth20     ``lastUpdateId``               newer snapshot wins
ticker      ``E``                          event time; newer wins
kline       ``(k.t, E, k.x)``              open time, event time, closed flag
==========  =============================  ==============================================
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, TypeAlias

import attrs

from genesis.errors import ExchangeProtocolError
from genesis.exchange.endpoints import parse_stream_name

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "MAX_STREAMS_PER_CONNECTION",
    "SERVER_SHUTDOWN_STREAM",
    "KlineKey",
    "StreamKind",
    "StreamRoute",
    "combined_stream_url",
    "dedup_key",
    "event_time_ms",
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
class KlineKey:
    """Dedup key of a kline update: open time, event time and the closed flag."""

    open_time_ms: int
    event_time_ms: int
    closed: bool


DedupKey: TypeAlias = int | KlineKey


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


def _int_field(data: Mapping[str, object], key: str, kind: StreamKind) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ExchangeProtocolError(f"{kind.name.lower()}: key {key!r} is not an integer")
    return value


def dedup_key(kind: StreamKind, data: object) -> DedupKey:
    """The dedup key of an ``orjson``-parsed payload of ``kind`` (see the module table).

    Raises:
        ExchangeProtocolError: the payload is not an object or lacks a well-typed key field.
    """
    if not isinstance(data, Mapping):
        raise ExchangeProtocolError(f"{kind.name.lower()}: payload is not a JSON object")
    if kind is StreamKind.TRADE:
        return _int_field(data, "t", kind)
    if kind is StreamKind.DEPTH:
        return _int_field(data, "lastUpdateId", kind)
    if kind is StreamKind.TICKER:
        return _int_field(data, "E", kind)
    k = data.get("k")
    if not isinstance(k, Mapping):
        raise ExchangeProtocolError("kline: key 'k' is not an object")
    closed = k.get("x")
    if not isinstance(closed, bool):
        raise ExchangeProtocolError("kline: key 'k.x' is not a boolean")
    return KlineKey(_int_field(k, "t", kind), _int_field(data, "E", kind), closed)


def event_time_ms(data: object) -> int | None:
    """The payload's event time ``E`` when it has one (depth snapshots do not)."""
    if isinstance(data, Mapping):
        value = data.get("E")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def is_server_shutdown(raw: str | bytes) -> bool:
    """Whether a raw frame is a ``serverShutdown`` notice, without parsing it.

    Matches both ``{"stream":"!serverShutdown","data":{...}}`` and the raw
    ``{"e":"serverShutdown","E":...}``; market payloads never carry the word that early.
    """
    if isinstance(raw, str):
        return _SHUTDOWN_MARK in raw[:_SHUTDOWN_PEEK]
    return _SHUTDOWN_MARK_BYTES in raw[:_SHUTDOWN_PEEK]
