"""Market stream names: the grammar of ``btcusdt@depth20@100ms`` and kline intervals.

Part of the model layer because both the codec and the simulator need it; re-exported by
:mod:`genesis.exchange.endpoints`.
"""

from __future__ import annotations

from typing import Final

import attrs

__all__ = [
    "KLINE_INTERVALS",
    "KLINE_INTERVAL_MS",
    "STREAM_KINDS",
    "StreamName",
    "parse_stream_name",
]


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
