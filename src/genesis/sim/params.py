"""Request parameters, read the way Binance reads them: shared by the REST API and the WS API.

:class:`Params` holds one request's parameters as text (REST: query string over form body;
WS API: the ``params`` object, each value as its JSON text) and remembers which ones the
endpoint read, so ``-1104`` "Not all sent parameters were read" comes out the same on both
transports. The readers raise :class:`~genesis.sim.errors.SimReject` with Binance's codes and
messages: ``-1102`` missing, ``-1100`` malformed (with the documented pattern), ``-1105`` empty,
``-1101`` a name twice, ``-1130`` an invalid value.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Final
from urllib.parse import unquote_to_bytes

import attrs
import orjson

from genesis.sim.errors import (
    DUPLICATE_SYMBOLS,
    ILLEGAL_CHARS,
    INVALID_PARAMETER,
    MANDATORY_PARAM_EMPTY_OR_MALFORMED,
    MSG_DUPLICATE_PARAM,
    MSG_ILLEGAL_CHARS,
    MSG_ILLEGAL_CHARS_PARAM,
    MSG_INVALID_PARAMETER,
    MSG_MANDATORY_PARAM,
    MSG_PARAM_EMPTY,
    MSG_UNREAD_PARAMETERS,
    PARAM_EMPTY,
    TOO_MANY_PARAMETERS,
    UNREAD_PARAMETERS,
    SimReject,
)

__all__ = ["UINT_RE", "Params", "count_symbols", "dumps", "symbol_list"]

_SYMBOL_RANGE: Final = "^[A-Z0-9-_.]{1,20}$"
_SYMBOL_RE: Final = re.compile(r"[A-Z0-9\-_.]{1,20}")
_SYMBOLS_RANGE: Final = '^\\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\\]$'
_UINT_RANGE: Final = "^[0-9]{1,20}$"
UINT_RE: Final = re.compile(r"[0-9]{1,20}")
"""An unsigned integer parameter as Binance's pattern states it."""
_INT64_MAX: Final = 2**63 - 1


def _decode_component(raw: bytes) -> str:
    try:
        return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        raise SimReject(ILLEGAL_CHARS, MSG_ILLEGAL_CHARS) from None


def _parse_part(raw: bytes) -> dict[str, str]:
    if not raw.isascii():
        raise SimReject(ILLEGAL_CHARS, MSG_ILLEGAL_CHARS)
    out: dict[str, str] = {}
    for piece in raw.split(b"&"):
        if not piece:
            continue
        raw_name, _, raw_value = piece.partition(b"=")
        name = _decode_component(raw_name)
        value = _decode_component(raw_value)
        if name in out:
            raise SimReject(TOO_MANY_PARAMETERS, MSG_DUPLICATE_PARAM)
        if value == "":
            raise SimReject.of(PARAM_EMPTY, MSG_PARAM_EMPTY, name)
        out[name] = value
    return out


@attrs.define
class Params:
    """A request's parameters (query string over form body) with read tracking for ``-1104``."""

    values: dict[str, str]
    read: set[str] = attrs.field(factory=set)

    @classmethod
    def parse(cls, raw_query: bytes, raw_body: bytes) -> Params:
        """Parse the raw query and form body; the query wins on a name present in both.

        Raises:
            SimReject: -1100 raw non-ASCII or invalid UTF-8; -1101 a name twice in one part;
                -1105 an empty value.
        """
        body = _parse_part(raw_body)
        query = _parse_part(raw_query)
        return cls({**body, **query})

    def get(self, name: str) -> str | None:
        """The value of ``name`` (marks it read), or ``None``."""
        self.read.add(name)
        return self.values.get(name)

    def has(self, name: str) -> bool:
        """Whether ``name`` was sent (does not mark it read)."""
        return name in self.values

    def require(self, name: str) -> str:
        """The value of a mandatory parameter. Raises -1102 when missing."""
        value = self.get(name)
        if value is None:
            raise SimReject.of(MANDATORY_PARAM_EMPTY_OR_MALFORMED, MSG_MANDATORY_PARAM, name)
        return value

    def symbol(self, name: str = "symbol", *, required: bool = True) -> str | None:
        """A symbol parameter: mandatory by default; ASCII must match ``^[A-Z0-9-_.]{1,20}$``.

        Non-ASCII symbols (Binance lists Unicode symbols since 2025-12) pass through to the
        exchange, which answers -1121 for ones it does not know.
        """
        value = self.require(name) if required else self.get(name)
        if value is not None and value.isascii() and _SYMBOL_RE.fullmatch(value) is None:
            raise SimReject.of(ILLEGAL_CHARS, MSG_ILLEGAL_CHARS_PARAM, name, _SYMBOL_RANGE)
        return value

    def require_symbol(self, name: str = "symbol") -> str:
        """A mandatory symbol parameter (see :meth:`symbol`)."""
        value = self.symbol(name)
        if value is None:  # pragma: no cover - symbol(required=True) raised already
            raise SimReject.of(MANDATORY_PARAM_EMPTY_OR_MALFORMED, MSG_MANDATORY_PARAM, name)
        return value

    def uint(self, name: str) -> int | None:
        """An optional unsigned 64-bit integer parameter. Raises -1100 for anything else."""
        value = self.get(name)
        if value is None:
            return None
        if UINT_RE.fullmatch(value) is None or int(value) > _INT64_MAX:
            raise SimReject.of(ILLEGAL_CHARS, MSG_ILLEGAL_CHARS_PARAM, name, _UINT_RANGE)
        return int(value)

    def limit(self, default: int, maximum: int) -> int:
        """The ``limit`` parameter, ``default`` when absent, clamped to ``1..maximum``."""
        value = self.uint("limit")
        return default if value is None else min(max(value, 1), maximum)

    def boolean(self, name: str, default: bool = False) -> bool:
        """``true``/``false`` (any case). Raises -1130 for anything else."""
        value = self.get(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered not in ("true", "false"):
            raise SimReject.of(INVALID_PARAMETER, MSG_INVALID_PARAMETER, name)
        return lowered == "true"

    def check_all_read(self) -> None:
        """Raises -1104 when a sent parameter was never read by the endpoint."""
        unread = set(self.values) - self.read
        if unread:
            sent = len(self.values)
            raise SimReject.of(UNREAD_PARAMETERS, MSG_UNREAD_PARAMETERS, sent - len(unread), sent)


def symbol_list(params: Params, name: str = "symbols") -> list[str] | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, list) or not all(isinstance(item, str) for item in parsed):
        raise SimReject.of(ILLEGAL_CHARS, MSG_ILLEGAL_CHARS_PARAM, name, _SYMBOLS_RANGE)
    symbols = [str(item) for item in parsed]
    for symbol in symbols:
        if symbol.isascii() and _SYMBOL_RE.fullmatch(symbol) is None:
            raise SimReject.of(ILLEGAL_CHARS, MSG_ILLEGAL_CHARS_PARAM, name, _SYMBOLS_RANGE)
    if not symbols:
        raise SimReject.of(MANDATORY_PARAM_EMPTY_OR_MALFORMED, MSG_MANDATORY_PARAM, name)
    if len(set(symbols)) != len(symbols):
        raise SimReject(DUPLICATE_SYMBOLS)
    return symbols


def count_symbols(raw: str | None) -> int | None:
    """How many symbols a ``symbols`` JSON array names (for the weight); None when malformed."""
    if raw is None:
        return None
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return len(parsed) if isinstance(parsed, list) else None


def _json_default(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(value: object) -> bytes:
    return orjson.dumps(value, default=_json_default)
