"""The record format: every bus event as one JSON object, and back.

One format for ``genesis run --record``, ``genesis replay`` and the NATS bridge:
``{"type": "<EventClass>", <field>: <value>, ...}`` with Decimals as strings (exact, never
floats), book levels as ``[price, qty]`` pairs, enums by value, UUIDs as strings, nested attrs
objects (an :class:`~genesis.models.orders.Order` inside an ``OrderUpdate``) as objects without
``type``. :func:`record_to_event` rebuilds the frozen, validated event; anything else is a
:class:`~genesis.errors.RecordFormatError`.
"""

from __future__ import annotations

import enum
import uuid
from decimal import Decimal
from typing import Final

import attrs
import cattrs

from genesis.errors import RecordFormatError
from genesis.models import events as _events
from genesis.models import market as _market
from genesis.models import state as _state
from genesis.models.account import Balance
from genesis.models.codec._wire import decimal_to_wire, parse_decimal
from genesis.models.market import DeferredLevels, PriceLevel
from genesis.models.orders import Fill, Order

__all__ = ["RECORD_TYPES", "event_to_record", "record_to_event"]


def _public_attrs_classes(module: object) -> dict[str, type]:
    names: list[str] = list(getattr(module, "__all__", ()))
    found: dict[str, type] = {}
    for name in names:
        cls = getattr(module, name)
        if isinstance(cls, type) and attrs.has(cls):
            found[name] = cls
    return found


RECORD_TYPES: Final[dict[str, type]] = {
    **_public_attrs_classes(_market),
    **_public_attrs_classes(_events),
    **_public_attrs_classes(_state),
}
"""Every event type the record format carries, by class name."""
RECORD_TYPES.pop("PriceLevel", None)  # a part of Depth and OrderBook, not an event

_LOCALNS: Final = {"Order": Order, "Fill": Fill, "Balance": Balance, "Decimal": Decimal}
for _cls in (*RECORD_TYPES.values(), Order, Fill, Balance, PriceLevel):
    attrs.resolve_types(_cls, localns=_LOCALNS)


def _unstructure(value: object) -> object:
    if isinstance(value, Decimal):
        return decimal_to_wire(value)
    if isinstance(value, PriceLevel):
        return [decimal_to_wire(value.price), decimal_to_wire(value.quantity)]
    if isinstance(value, tuple | list):
        return [_unstructure(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _unstructure(v) for k, v in value.items()}
    cls = type(value)
    if attrs.has(cls):
        return {f.alias: _unstructure(getattr(value, f.alias)) for f in attrs.fields(cls)}
    return value


def event_to_record(event: object) -> dict[str, object]:
    """A JSON-ready dict ``{"type": "<EventClass>", <fields>}`` for any attrs event.

    Raises:
        TypeError: ``event`` is not an attrs instance.
    """
    cls = type(event)
    if not attrs.has(cls):
        raise TypeError(f"not an attrs event: {cls.__name__}")
    record: dict[str, object] = {"type": cls.__name__}
    for field in attrs.fields(cls):
        # The alias: a private field's public name (Depth's ``bids`` property over ``_bids``).
        record[field.alias] = _unstructure(getattr(event, field.alias))
    return record


def _structure_decimal(value: object, _type: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"a decimal must be a string, got {type(value).__name__}")
    return parse_decimal(value)


def _structure_level(value: object, _type: object) -> PriceLevel:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError("a book level must be a [price, quantity] pair")
    return PriceLevel(_structure_decimal(value[0], None), _structure_decimal(value[1], None))


def _structure_levels(value: object, _type: object) -> tuple[PriceLevel, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError("book levels must be a list of [price, quantity] pairs")
    return tuple(_structure_level(level, None) for level in value)


def _structure_uuid(value: object, _type: object) -> uuid.UUID:
    if not isinstance(value, str):
        raise ValueError("a UUID must be a string")
    return uuid.UUID(value)


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True, use_alias=True)
    converter.register_structure_hook(Decimal, _structure_decimal)
    converter.register_structure_hook(PriceLevel, _structure_level)
    converter.register_structure_hook(tuple[PriceLevel, ...] | DeferredLevels, _structure_levels)
    converter.register_structure_hook(uuid.UUID, _structure_uuid)
    return converter


_CONVERTER: Final = _make_converter()


def record_to_event(record: object) -> object:
    """The event a record describes: frozen, typed and validated like the original.

    Raises:
        RecordFormatError: not an object, an unknown ``type``, or fields that do not build a
            valid event (the message names the type and the problem, never field values).
    """
    if not isinstance(record, dict):
        raise RecordFormatError("a record must be a JSON object")
    name = record.get("type")
    cls = RECORD_TYPES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise RecordFormatError(f"unknown record type {str(name)[:40]!r}")
    fields = {k: v for k, v in record.items() if k != "type"}
    try:
        return _CONVERTER.structure(fields, cls)
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as exc:
        raise RecordFormatError(f"malformed {cls.__name__} record: {_summary(exc)}") from exc


def _summary(exc: BaseException) -> str:
    if isinstance(exc, cattrs.BaseValidationError):
        notes = cattrs.transform_error(exc)
        return "; ".join(notes)[:200]
    return f"{type(exc).__name__}"[:200]
