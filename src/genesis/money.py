"""Exact Decimal arithmetic for prices and quantities: snapping to a step, never by accident.

Binance's filters require ``price % tickSize == 0`` and ``quantity % stepSize == 0``
(filters.md; FACTS.md §3 "Filter formats and rules"). The helpers here snap a value onto such a
grid with exact arithmetic: they run in a private decimal context whose precision and exponent
range are the largest Python allows, with every rounding signal trapped, so a result is either
exact or an exception, never silently rounded by the ambient context's 28 digits. Floats are
never involved.

:func:`truncate_to_step` moves toward zero (the direction that never asks for more than the
caller did); :func:`ceil_to_step` moves toward +∞, for the one case where "never worse for the
caller" means up (a SELL limit price, see :mod:`genesis.orders.checks`). A step of 0 means "no
grid" (Binance disables a rule with 0) and leaves the value unchanged.

A snapped value carries the step's exponent, so it prints as Binance's own values do:
``truncate_to_step(Decimal("0.0012345"), Decimal("0.00001"))`` is ``Decimal("0.00123")`` and
with the wire step ``Decimal("0.00001000")`` it is ``Decimal("0.00123000")``.
"""

from __future__ import annotations

import decimal
import math
from decimal import Decimal
from typing import Final

__all__ = [
    "ceil_to_step",
    "common_step",
    "exact_product",
    "is_multiple",
    "truncate_to_step",
]

_EXACT: Final = decimal.Context(
    prec=decimal.MAX_PREC,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    traps=[
        decimal.InvalidOperation,
        decimal.DivisionByZero,
        decimal.Overflow,
        decimal.Underflow,
        decimal.Inexact,
        decimal.Rounded,
        decimal.Clamped,
    ],
)
"""Big enough for any finite operand; an inexact result raises instead of rounding. Only
integer division (``//``, ``%``), multiplication and comparisons run in it: none of them can
produce an endless expansion."""


def _check(value: Decimal, step: Decimal) -> None:
    if not value.is_finite():
        raise ValueError(f"value must be a finite Decimal, got {value!r}")
    if not step.is_finite() or step < 0:
        raise ValueError(f"step must be a finite non-negative Decimal, got {step!r}")


def _zero_is_positive(value: Decimal) -> Decimal:
    # -0.3 truncated to 1 is Decimal("-0"); a signed zero prints as "-0" on the wire.
    return value.copy_abs() if value.is_zero() else value


def truncate_to_step(value: Decimal, step: Decimal) -> Decimal:
    """``value`` moved toward zero onto the nearest multiple of ``step``.

    The result is never further from zero than ``value`` and less than one ``step`` nearer to
    it; it has ``step``'s exponent (``0.0012345`` at step ``0.00001`` is ``0.00123``). A value
    already on the grid comes back numerically equal (with ``step``'s exponent).

    Args:
        value: a finite Decimal (prices and quantities are positive; negatives also truncate
            toward zero).
        step: the grid, a finite Decimal ``>= 0``; ``0`` returns ``value`` unchanged.

    Returns:
        The largest multiple of ``step`` whose magnitude does not exceed ``value``'s.

    Raises:
        ValueError: ``value`` is not finite, or ``step`` is negative or not finite.
    """
    _check(value, step)
    if step.is_zero():
        return value
    with decimal.localcontext(_EXACT):
        return _zero_is_positive((value // step) * step)


def ceil_to_step(value: Decimal, step: Decimal) -> Decimal:
    """``value`` moved toward +∞ onto the nearest multiple of ``step``.

    The mirror of :func:`truncate_to_step` for positive values: the result is ``>= value`` and
    less than one ``step`` above it, with ``step``'s exponent. Used only where rounding up is
    the caller's safe side (a SELL price); quantities are never rounded up.

    Args:
        value: a finite Decimal.
        step: the grid, a finite Decimal ``>= 0``; ``0`` returns ``value`` unchanged.

    Returns:
        The smallest multiple of ``step`` that is ``>= value``.

    Raises:
        ValueError: ``value`` is not finite, or ``step`` is negative or not finite.
    """
    _check(value, step)
    if step.is_zero():
        return value
    with decimal.localcontext(_EXACT):
        quotient = value // step  # toward zero: already the ceiling for a negative value
        if value > 0 and quotient * step != value:
            quotient += 1
        return _zero_is_positive(quotient * step)


def is_multiple(value: Decimal, step: Decimal) -> bool:
    """Whether ``value % step == 0`` exactly (always true for a ``step`` of 0: no grid).

    Raises:
        ValueError: ``value`` is not finite, or ``step`` is negative or not finite.
    """
    _check(value, step)
    if step.is_zero():
        return True
    with decimal.localcontext(_EXACT):
        return (value % step).is_zero()


def common_step(*steps: Decimal) -> Decimal:
    """The coarsest grid that lies on every non-zero step: their least common multiple.

    ``common_step(Decimal("0.001"), Decimal("0.0004"))`` is 0.002 (``Decimal("0.0020")``: the
    finest exponent among the steps); zeros (rules switched off) are ignored, and with no
    non-zero step the result is ``Decimal(0)``. A value truncated to the result is a multiple of
    each step, so it satisfies every grid at once.

    Raises:
        ValueError: a step is negative or not finite.
    """
    for step in steps:
        _check(Decimal(0), step)
    live = [step for step in steps if not step.is_zero()]
    if not live:
        return Decimal(0)
    exponent = min(_exponent(step) for step in live)
    multiple = math.lcm(*(int(step.scaleb(-exponent, _EXACT)) for step in live))
    return Decimal(multiple).scaleb(exponent, _EXACT)


def exact_product(a: Decimal, b: Decimal) -> Decimal:
    """``a × b`` with every digit kept (the ambient context would round past 28 digits).

    Raises:
        ValueError: an operand is not finite.
    """
    if not a.is_finite() or not b.is_finite():
        raise ValueError(f"operands must be finite Decimals, got {a!r} and {b!r}")
    with decimal.localcontext(_EXACT):
        return a * b


def _exponent(step: Decimal) -> int:
    exponent = step.as_tuple().exponent
    assert isinstance(exponent, int)  # finite, checked by the caller
    return exponent
