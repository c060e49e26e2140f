"""Shared wire primitives: typed scalar readers, the error guard, Decimal in and out, JSON.

Every decoder in :mod:`genesis.models.codec` reads the wire through these, so a wrong type or a
missing key becomes one :class:`~genesis.errors.ExchangeProtocolError` naming the kind and key.
"""

from __future__ import annotations

import decimal
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TypeAlias, TypeVar

import orjson

from genesis.errors import ExchangeProtocolError

__all__ = [
    "Wire",
    "decimal_to_wire",
    "decode_json",
    "parse_decimal",
]

Wire: TypeAlias = Mapping[str, object]
_E = TypeVar("_E")


def parse_decimal(value: object) -> Decimal:
    """A finite Decimal from a wire string (or int); floats and junk raise ``ValueError``."""
    if isinstance(value, str):
        try:
            result = Decimal(value)
        except decimal.InvalidOperation:
            raise ValueError(f"not a decimal string: {value[:40]!r}") from None
    elif isinstance(value, int) and not isinstance(value, bool):
        result = Decimal(value)
    else:
        raise ValueError(f"expected a decimal string, got {type(value).__name__}")
    if not result.is_finite():
        raise ValueError(f"not a finite decimal: {value!r}")
    return result


def _int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"expected an integer, got {type(value).__name__}")


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"expected a boolean, got {type(value).__name__}")


def _str(value: object) -> str:
    if isinstance(value, str):
        return value
    raise ValueError(f"expected a string, got {type(value).__name__}")


def _guard(kind: str, fn: Callable[[Wire], _E], data: object) -> _E:
    if not isinstance(data, Mapping):
        raise ExchangeProtocolError(f"{kind}: expected a JSON object, got {type(data).__name__}")
    try:
        return fn(data)
    except KeyError as exc:
        raise ExchangeProtocolError(f"{kind}: missing key {exc.args[0]!r}") from exc
    except (ValueError, TypeError) as exc:
        raise ExchangeProtocolError(f"{kind}: {exc}") from exc


def decimal_to_wire(value: Decimal) -> str:
    """Plain positional notation, never exponent form (``str(Decimal("0.00000000"))`` is '0E-8')."""
    return format(value, "f")


def decode_json(raw: bytes | str, *, what: str) -> object:
    """Parse a JSON body; invalid JSON raises :class:`ExchangeProtocolError` naming ``what``."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ExchangeProtocolError(f"{what}: invalid JSON: {exc}") from exc


def _optional_decimal(value: object) -> Decimal | None:
    if value is None:
        return None
    result = parse_decimal(value)
    return result if result > 0 else None
