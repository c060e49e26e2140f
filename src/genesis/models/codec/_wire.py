"""Shared wire primitives: typed scalar readers, the error guard, Decimal in and out, JSON.

Every decoder in :mod:`genesis.models.codec` reads the wire through these, so a wrong type or a
missing key becomes one :class:`~genesis.errors.ExchangeProtocolError` naming the kind and key.
"""

from __future__ import annotations

import decimal
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Final, TypeAlias, TypeVar

import orjson

from genesis.errors import ExchangeProtocolError

__all__ = [
    "FAULT_BAD_NUMBER",
    "FAULT_BAD_PAYLOAD",
    "FAULT_BAD_TYPE",
    "FAULT_BAD_VALUE",
    "FAULT_INVALID_JSON",
    "FAULT_MISSING_FIELD",
    "FAULT_NOT_A_FRAME",
    "Wire",
    "decimal_to_wire",
    "decode_json",
    "fault_kind",
    "parse_decimal",
]

Wire: TypeAlias = Mapping[str, object]
_E = TypeVar("_E")

FAULT_INVALID_JSON: Final = "invalid_json"
FAULT_NOT_A_FRAME: Final = "not_a_frame"
"""Valid JSON, but not a combined-stream ``{"stream": ..., "data": ...}`` frame."""
FAULT_MISSING_FIELD: Final = "missing_field"
FAULT_BAD_TYPE: Final = "bad_type"
FAULT_BAD_NUMBER: Final = "bad_number"
"""A decimal string that is not a number, or is NaN or infinite."""
FAULT_BAD_VALUE: Final = "bad_value"
"""A well-typed value a model refuses (a negative price, a lower-case symbol)."""
FAULT_BAD_PAYLOAD: Final = "bad_payload"
"""Anything else: not an object, the wrong event type."""


class _TypeFault(ValueError):
    """A wire value of the wrong JSON type (a float where Binance sends a string...)."""


class _NumberFault(ValueError):
    """A decimal string that is not a finite number (NaN, Infinity, junk)."""


class _FrameFault(ValueError):
    """Valid JSON that is not a combined-stream frame."""


class _ShapeFault(ValueError):
    """The payload is not what the decoder expects (wrong event type, not an object)."""


def fault_kind(exc: ExchangeProtocolError) -> str:
    """Why a decoder of this package refused a payload, as one of the ``FAULT_*`` kinds.

    The kinds let a consumer count hostile input by what was wrong with it; they come from the
    cause the decoders chain (``raise ... from``), so they need no message parsing.
    """
    cause = exc.__cause__
    if isinstance(cause, orjson.JSONDecodeError):
        return FAULT_INVALID_JSON
    if isinstance(cause, _FrameFault):
        return FAULT_NOT_A_FRAME
    if isinstance(cause, KeyError):
        return FAULT_MISSING_FIELD
    if isinstance(cause, _TypeFault | TypeError):
        return FAULT_BAD_TYPE
    if isinstance(cause, _NumberFault):
        return FAULT_BAD_NUMBER
    if isinstance(cause, _ShapeFault) or cause is None:
        return FAULT_BAD_PAYLOAD
    return FAULT_BAD_VALUE


def parse_decimal(value: object) -> Decimal:
    """A finite Decimal from a wire string (or int); floats and junk raise ``ValueError``."""
    if isinstance(value, str):
        try:
            result = Decimal(value)
        except decimal.InvalidOperation:
            raise _NumberFault(f"not a decimal string: {value[:40]!r}") from None
    elif isinstance(value, int) and not isinstance(value, bool):
        result = Decimal(value)
    else:
        raise _TypeFault(f"expected a decimal string, got {type(value).__name__}")
    if not result.is_finite():
        raise _NumberFault(f"not a finite decimal: {value!r}")
    return result


def _int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _TypeFault(f"expected an integer, got {type(value).__name__}")


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise _TypeFault(f"expected a boolean, got {type(value).__name__}")


def _str(value: object) -> str:
    if isinstance(value, str):
        return value
    raise _TypeFault(f"expected a string, got {type(value).__name__}")


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
