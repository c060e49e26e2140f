"""Combined-stream frames: the envelope, and the dedup keys read from the raw text.

Three connections deliver every market event three times; only the first copy is worth a
parse. The readers here take a frame's key straight from the text Binance sends
(``{"stream":"btcusdt@trade","data":{"e":"trade","E":...,"t":12345,...}}``) with ``str.find``,
a fraction of a full ``orjson.loads`` (ARCHITECTURE.md §7):

==============  ==================================  =====================================
model kind      key                                 read from
==============  ==================================  =====================================
trade           trade id                            ``"t":``
partialDepth    last update id                      ``"lastUpdateId":``
ticker          event time                          ``"E":``
kline           (open time, event time, closed)     ``"t":`` in ``k``, ``"E":``, ``"x":``
==============  ==================================  =====================================

A reader answers ``None`` whenever the text is not in Binance's compact layout (spaces,
escapes, another key order, a missing key): the caller then parses the frame in full. A key
read from the text is a hint, never the truth: the caller keeps a key only once a full decode
of the same frame agrees with it (:func:`frame_key_of`), so hostile text cannot smuggle a wrong
key past the decoder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, TypeAlias

import orjson

from genesis.errors import ExchangeProtocolError
from genesis.models.codec._wire import _FrameFault
from genesis.models.market import Depth, Kline, Ticker, Trade

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from genesis.models.codec._market import MarketEvent

__all__ = [
    "KEY_READERS",
    "MAX_FRAME_CHARS",
    "FrameKey",
    "frame_key_of",
    "is_depth_frame",
    "parse_frame",
    "read_event_time",
    "read_stream",
]

MAX_FRAME_CHARS: Final = 1 << 20
"""Frames longer than this (1 MiB, trio-websocket's own message limit) are refused unread."""

FrameKey: TypeAlias = int | tuple[int, int, bool]
"""A trade id, a depth ``lastUpdateId``, a ticker event time, or a kline's
``(open time, event time, closed)``."""

_STREAM_PREFIX: Final = '{"stream":"'
_STREAM_START: Final = len(_STREAM_PREFIX)
_STREAM_NAME_MAX: Final = 128


def read_stream(raw: str) -> str | None:
    """The stream name of a frame that starts ``{"stream":"<name>"``, without parsing it."""
    if not raw.startswith(_STREAM_PREFIX):
        return None
    end = raw.find('"', _STREAM_START, _STREAM_START + _STREAM_NAME_MAX)
    if end < 0:
        return None
    return raw[_STREAM_START:end]


def _int_after(raw: str, key: str) -> int | None:
    """The unsigned integer right after ``key`` (which ends in ``:``), up to the next comma."""
    start = raw.find(key)
    if start < 0:
        return None
    start += len(key)
    end = raw.find(",", start, start + 24)
    if end < 0:
        return None
    digits = raw[start:end]
    # int() alone would accept " 12", "+12", "1_2" and non-ASCII digits; JSON does not.
    if not digits.isascii() or not digits.isdigit():
        return None
    return int(digits)


def read_event_time(raw: str) -> int | None:
    """The payload's event time ``E`` (depth snapshots have none)."""
    return _int_after(raw, '"E":')


def _trade_key(raw: str) -> FrameKey | None:
    return _int_after(raw, '"t":')


def _depth_key(raw: str) -> FrameKey | None:
    return _int_after(raw, '"lastUpdateId":')


def _kline_key(raw: str) -> FrameKey | None:
    open_ms = _int_after(raw, '"t":')
    event_ms = _int_after(raw, '"E":')
    if open_ms is None or event_ms is None:
        return None
    flag = raw.find('"x":')
    if flag < 0:
        return None
    if raw.startswith("true", flag + 4):
        return (open_ms, event_ms, True)
    if raw.startswith("false", flag + 4):
        return (open_ms, event_ms, False)
    return None


KEY_READERS: Final[Mapping[str, Callable[[str], FrameKey | None]]] = {
    "trade": _trade_key,
    "ticker": read_event_time,
    "partialDepth": _depth_key,
    "kline": _kline_key,
}
"""The raw-text key reader of each model kind (:func:`genesis.models.streams.parse_stream_name`)."""


def frame_key_of(event: MarketEvent) -> FrameKey:
    """The dedup key of a decoded event: what a raw key must equal to be trusted."""
    if isinstance(event, Trade):
        return event.trade_id
    if isinstance(event, Depth):
        return event.last_update_id
    if isinstance(event, Ticker):
        return event.event_time_ms
    assert isinstance(event, Kline)
    return (event.open_time_ms, event.event_time_ms, event.closed)


def parse_frame(raw: str | bytes) -> tuple[str, object]:
    """Parse a combined-stream frame ``{"stream": <name>, "data": <payload>}`` once.

    Returns:
        The stream name and the still-undecoded payload.

    Raises:
        ExchangeProtocolError: invalid JSON, or not a combined-stream frame
            (:func:`~genesis.models.codec.fault_kind` tells which).
    """
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ExchangeProtocolError(f"invalid JSON frame: {exc}") from exc
    if not isinstance(obj, dict):
        raise ExchangeProtocolError("not a combined-stream frame") from _FrameFault("not an object")
    stream = obj.get("stream")
    if not isinstance(stream, str) or "data" not in obj:
        raise ExchangeProtocolError("not a combined-stream frame") from _FrameFault(
            "no stream or data key"
        )
    return stream, obj["data"]


def is_depth_frame(message: str | bytes) -> bool:
    """Whether a combined-stream frame is a depth stream's, without parsing it.

    The envelope names its stream first (``{"stream":"btcusdt@depth20@100ms",...``): a bounded
    find, for the per-kind liveness check that runs on every frame of every connection.
    """
    if isinstance(message, str):
        return message.find("@depth", 10, 60) >= 0
    return message.find(b"@depth", 10, 60) >= 0
