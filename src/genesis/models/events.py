"""Events about Genesis itself and its orders (market events live in :mod:`.market`).

All of them are never-drop on the bus (they are not in the market-data policy table).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from genesis.models.orders import Order

__all__ = ["BreakerState", "BreakerTransition", "OrderUpdate", "OrderUpdateSource"]


class BreakerState(enum.Enum):
    """A circuit breaker's state."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@attrs.frozen(kw_only=True)
class BreakerTransition:
    """A circuit breaker changed state.

    Attributes:
        name: the breaker, one per exchange surface (``rest``, ``streams``, ``ws_api``).
        previous: the state it left.
        state: the state it entered.
        at: Trio time of the transition (seconds).
        failures: failures counted in the window when it happened.
        reason: why, in a few words (``5 failures in 30 s``, ``cooldown elapsed``, ``probe ok``).
        retry_after_s: when it opened, how long until it half-opens; else ``0``.
    """

    name: str
    previous: BreakerState
    state: BreakerState
    at: float
    failures: int
    reason: str
    retry_after_s: float = 0.0


class OrderUpdateSource(enum.Enum):
    """Where an :class:`OrderUpdate` came from."""

    REST = "rest"
    USER_STREAM = "user_stream"
    RECONCILE = "reconcile"


@attrs.frozen(kw_only=True)
class OrderUpdate:
    """What is now known of one order (never dropped by the bus).

    ``reason`` says why, where the exchange's own status does not: a rejection's Binance error,
    why the outcome is unknown, or how an unknown outcome was settled.
    """

    order: Order
    source: OrderUpdateSource
    reason: str | None = None

    @property
    def symbol(self) -> str:
        return self.order.symbol
