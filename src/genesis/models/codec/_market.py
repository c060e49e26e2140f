"""Market streams: trade, ticker, depth and kline payloads, combined frames, records, cattrs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Final, TypeAlias

import cattrs
import msgspec
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
    "decode_depth_frame",
    "decode_depth_update",
    "decode_frame",
    "decode_kline",
    "decode_stream_payload",
    "decode_ticker",
    "decode_trade",
    "decode_trade_frame",
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


# -- depth snapshots on the hot path: validated on arrival, levels built on first read ----------

_WIRE_NUMBER: Final = r'"(?:0|[1-9][0-9]*+)(?:\.[0-9]++)?+"'
_WIRE_LEVEL: Final = r"\[" + _WIRE_NUMBER + "," + _WIRE_NUMBER + r"\]"
_WIRE_SIDE: Final = r"\[(?:" + _WIRE_LEVEL + "(?:," + _WIRE_LEVEL + r")*+)?+\]"
_WIRE_DEPTH_FRAME: Final = re.compile(
    r'\{"stream":"([^"\\]{1,128})","data":\{"lastUpdateId":(0|[1-9][0-9]{0,19}),'
    r'"bids":(' + _WIRE_SIDE + r'),"asks":(' + _WIRE_SIDE + r")\}\}"
)
"""A partial-depth combined frame exactly as Binance writes it: no spaces, this key order,
book levels ``["price","qty"]`` of non-negative fixed-point strings. A frame that matches is
valid JSON whose levels can only become finite, non-negative Decimals, so building them later
cannot fail; one C-level match (possessive, no backtracking) checks and splits it. Any other
text takes the eager path."""

_LEVEL_PAIRS: Final = msgspec.json.Decoder(tuple[tuple[Decimal, Decimal], ...])


class _WireLevels:
    """One book side's validated wire text; :meth:`build` makes the :class:`PriceLevel` s."""

    __slots__ = ("_raw",)

    def __init__(self, raw: str) -> None:
        self._raw = raw

    def build(self) -> tuple[PriceLevel, ...]:
        return tuple(PriceLevel(price, qty) for price, qty in _LEVEL_PAIRS.decode(self._raw))


def decode_depth_frame(raw: str | bytes, *, symbol: str, received_ms: int = 0) -> tuple[str, Depth]:
    """Decode a whole partial-depth combined frame, deferring the levels' ``Decimal`` s.

    The frame is checked against Binance's exact layout by one regular expression, which also
    splits it: a frame that passes is valid, and its :class:`PriceLevel` s are built (by
    msgspec, straight to ``Decimal``) from its text when a subscriber first reads ``bids`` or
    ``asks``: the bus conflates depth, so most snapshots are never read. Any other layout is
    decoded eagerly (:func:`decode_depth`), with the same errors as :func:`decode_frame`.

    Returns:
        The stream name and the :class:`Depth`.

    Raises:
        ExchangeProtocolError: invalid JSON, not a combined frame, or a malformed payload.
    """
    match = _WIRE_DEPTH_FRAME.fullmatch(raw) if isinstance(raw, str) else None
    if match is not None:
        stream, update_id, bids, asks = match.groups()
        return stream, Depth(
            symbol=symbol,
            last_update_id=int(update_id),
            bids=_WireLevels(bids),
            asks=_WireLevels(asks),
            received_ms=received_ms,
        )
    stream, data = parse_frame(raw)
    return stream, decode_depth(data, symbol=symbol, received_ms=received_ms)


_WIRE_DECIMAL: Final = r'"((?:0|[1-9][0-9]*+)(?:\.[0-9]++)?+)"'
_WIRE_UINT: Final = r"(0|[1-9][0-9]{0,19})"
_WIRE_TRADE_FRAME: Final = re.compile(
    r'\{"stream":"([^"\\]{1,128})","data":\{"e":"trade","E":'
    + _WIRE_UINT
    + r',"s":"([A-Z0-9]{1,32})","t":'
    + _WIRE_UINT
    + r',"p":'
    + _WIRE_DECIMAL
    + r',"q":'
    + _WIRE_DECIMAL
    + r',"T":'
    + _WIRE_UINT
    + r',"m":(true|false)(?:,"M":(?:true|false))?\}\}'
)
"""A trade combined frame exactly as Binance writes it (``<symbol>@trade``, FACTS.md)."""


def decode_trade_frame(raw: str) -> tuple[str, Trade] | None:
    """A whole ``<symbol>@trade`` frame in Binance's exact layout, checked and split by one match.

    The numbers can only be non-negative integers and fixed-point decimals, so the
    :class:`Trade` is what :func:`decode_frame` would build, without a JSON parse.

    Returns:
        The stream name and the trade, or ``None`` when the text is in any other layout (then
        decode it with :func:`decode_frame`, which also names what is wrong with it).
    """
    match = _WIRE_TRADE_FRAME.fullmatch(raw)
    if match is None:
        return None
    stream, event_ms, symbol, trade_id, price, qty, trade_ms, maker = match.groups()
    return stream, Trade(
        symbol=symbol,
        trade_id=int(trade_id),
        price=Decimal(price),
        quantity=Decimal(qty),
        trade_time_ms=int(trade_ms),
        event_time_ms=int(event_ms),
        buyer_is_maker=maker == "true",
    )


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
