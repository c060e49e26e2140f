"""Market streams: trade, ticker, depth and kline payloads, combined frames, records, cattrs."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Final, TypeAlias

import cattrs
import orjson

from genesis.errors import ExchangeProtocolError
from genesis.models.codec._frame import parse_frame
from genesis.models.codec._wire import (
    _bool,
    _guard,
    _int,
    _ShapeFault,
    _str,
    _TypeFault,
    decimal_to_wire,
    parse_decimal,
)
from genesis.models.market import Depth, DepthUpdate, Kline, PriceLevel, Ticker, Trade
from genesis.models.streams import parse_stream_name

if TYPE_CHECKING:
    from genesis.models.codec._wire import Wire

__all__ = [
    "MARKET_EVENT_TYPES",
    "MarketEvent",
    "decode_depth",
    "decode_depth_update",
    "decode_frame",
    "decode_kline",
    "decode_stream_payload",
    "decode_ticker",
    "decode_trade",
    "make_converter",
]

MarketEvent: TypeAlias = Trade | Ticker | Depth | Kline
MARKET_EVENT_TYPES: Final = (Trade, Ticker, Depth, Kline)


def _trade(d: Wire) -> Trade:
    if d.get("e") != "trade":
        raise _ShapeFault(f"event type is {d.get('e')!r}, not 'trade'")
    return Trade(
        symbol=_str(d["s"]),
        trade_id=_int(d["t"]),
        price=parse_decimal(d["p"]),
        quantity=parse_decimal(d["q"]),
        trade_time_ms=_int(d["T"]),
        event_time_ms=_int(d["E"]),
        buyer_is_maker=_bool(d["m"]),
    )


def _ticker(d: Wire) -> Ticker:
    if d.get("e") != "24hrTicker":
        raise _ShapeFault(f"event type is {d.get('e')!r}, not '24hrTicker'")
    return Ticker(
        symbol=_str(d["s"]),
        event_time_ms=_int(d["E"]),
        price_change=parse_decimal(d["p"]),
        price_change_percent=parse_decimal(d["P"]),
        weighted_avg_price=parse_decimal(d["w"]),
        last_price=parse_decimal(d["c"]),
        last_quantity=parse_decimal(d["Q"]),
        best_bid=parse_decimal(d["b"]),
        best_bid_quantity=parse_decimal(d["B"]),
        best_ask=parse_decimal(d["a"]),
        best_ask_quantity=parse_decimal(d["A"]),
        open_price=parse_decimal(d["o"]),
        high_price=parse_decimal(d["h"]),
        low_price=parse_decimal(d["l"]),
        volume=parse_decimal(d["v"]),
        quote_volume=parse_decimal(d["q"]),
        open_time_ms=_int(d["O"]),
        close_time_ms=_int(d["C"]),
        first_trade_id=_int(d["F"]),
        last_trade_id=_int(d["L"]),
        trade_count=_int(d["n"]),
    )


def _levels(raw: object) -> tuple[PriceLevel, ...]:
    if not isinstance(raw, list):
        raise _TypeFault("book side is not a list")
    out = []
    for level in raw:
        if not isinstance(level, list) or len(level) < 2:
            raise _TypeFault("book level is not a [price, quantity] pair")
        out.append(PriceLevel(parse_decimal(level[0]), parse_decimal(level[1])))
    return tuple(out)


def _kline(d: Wire) -> Kline:
    if d.get("e") != "kline":
        raise _ShapeFault(f"event type is {d.get('e')!r}, not 'kline'")
    k = d["k"]
    if not isinstance(k, Mapping):
        raise _TypeFault("'k' is not an object")
    return Kline(
        symbol=_str(d["s"]),
        interval=_str(k["i"]),
        event_time_ms=_int(d["E"]),
        open_time_ms=_int(k["t"]),
        close_time_ms=_int(k["T"]),
        first_trade_id=_int(k["f"]),
        last_trade_id=_int(k["L"]),
        open_price=parse_decimal(k["o"]),
        close_price=parse_decimal(k["c"]),
        high_price=parse_decimal(k["h"]),
        low_price=parse_decimal(k["l"]),
        volume=parse_decimal(k["v"]),
        quote_volume=parse_decimal(k["q"]),
        taker_buy_volume=parse_decimal(k["V"]),
        taker_buy_quote_volume=parse_decimal(k["Q"]),
        trade_count=_int(k["n"]),
        closed=_bool(k["x"]),
    )


def decode_trade(data: object) -> Trade:
    """Decode a ``<symbol>@trade`` payload."""
    return _guard("trade", _trade, data)


def decode_ticker(data: object) -> Ticker:
    """Decode a ``<symbol>@ticker`` (24hrTicker) payload."""
    return _guard("ticker", _ticker, data)


def decode_kline(data: object) -> Kline:
    """Decode a ``<symbol>@kline_<interval>`` payload."""
    return _guard("kline", _kline, data)


def decode_depth(data: object, *, symbol: str, received_ms: int = 0) -> Depth:
    """Decode a partial-depth payload (``{lastUpdateId, bids, asks}``) for ``symbol``.

    Also accepts the REST ``GET /api/v3/depth`` response, which has the same shape.
    """

    def build(d: Wire) -> Depth:
        return Depth(
            symbol=symbol,
            last_update_id=_int(d["lastUpdateId"]),
            bids=_levels(d["bids"]),
            asks=_levels(d["asks"]),
            received_ms=received_ms,
        )

    return _guard("depth", build, data)


def _depth_update(d: Wire) -> DepthUpdate:
    if d.get("e") != "depthUpdate":
        raise ValueError(f"event type is {d.get('e')!r}, not 'depthUpdate'")
    first, final = _int(d["U"]), _int(d["u"])
    if final < first:
        raise ValueError(f"'u' {final} is below 'U' {first}")
    return DepthUpdate(
        symbol=_str(d["s"]),
        first_update_id=first,
        final_update_id=final,
        bids=_levels(d["b"]),
        asks=_levels(d["a"]),
        event_time_ms=_int(d["E"]),
    )


def decode_depth_update(raw: bytes | str) -> DepthUpdate:
    """Decode a diff-depth frame: a combined ``{"stream", "data"}`` frame or the bare payload.

    Raises:
        ExchangeProtocolError: invalid JSON or a malformed ``depthUpdate`` payload.
    """
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ExchangeProtocolError(f"invalid JSON frame: {exc}") from exc
    if isinstance(obj, dict) and "stream" in obj and "data" in obj:
        obj = obj["data"]
    return _guard("depthUpdate", _depth_update, obj)


def decode_stream_payload(stream: str, data: object, *, received_ms: int = 0) -> MarketEvent:
    """Decode ``data`` as the payload of market stream ``stream`` (e.g. ``btcusdt@trade``).

    Raises:
        ExchangeProtocolError: unknown or unsupported stream, or a malformed payload.
    """
    name = parse_stream_name(stream)
    if name is None:
        raise ExchangeProtocolError(f"unknown stream name {stream[:80]!r}")
    kind = name.kind
    if kind == "trade":
        return decode_trade(data)
    if kind == "ticker":
        return decode_ticker(data)
    if kind == "partialDepth":
        return decode_depth(data, symbol=name.symbol, received_ms=received_ms)
    if kind == "kline":
        return decode_kline(data)
    raise ExchangeProtocolError(f"stream kind {kind!r} is not decoded by Genesis yet")


def decode_frame(raw: bytes | str, *, received_ms: int = 0) -> tuple[str, MarketEvent]:
    """Decode one combined-stream frame ``{"stream": ..., "data": ...}``.

    Returns:
        The stream name and the decoded event.

    Raises:
        ExchangeProtocolError: invalid JSON, not a combined frame, or a malformed payload.
    """
    stream, data = parse_frame(raw)
    return stream, decode_stream_payload(stream, data, received_ms=received_ms)


def make_converter() -> cattrs.Converter:
    """A cattrs converter holding Binance's wire rules for the market events.

    ``converter.structure(payload, Trade)`` etc. use the same hand-written decoders as the
    hot path; Decimals structure from strings and unstructure to strings.
    """
    converter = cattrs.Converter()
    converter.register_structure_hook(Decimal, lambda v, _t: parse_decimal(v))
    converter.register_unstructure_hook(Decimal, decimal_to_wire)
    converter.register_structure_hook(Trade, lambda v, _t: decode_trade(v))
    converter.register_structure_hook(Ticker, lambda v, _t: decode_ticker(v))
    converter.register_structure_hook(Kline, lambda v, _t: decode_kline(v))
    return converter
