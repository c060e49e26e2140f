"""Events about Genesis itself and its orders (market events live in :mod:`.market`).

All of them are never-drop on the bus (they are not in the market-data policy table).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from genesis.models.account import Balance
    from genesis.models.orders import Fill, Order

__all__ = [
    "AccountBalances",
    "BreakerState",
    "BreakerTransition",
    "ExecutionReport",
    "OrderUpdate",
    "OrderUpdateSource",
    "ServerShutdown",
    "StreamTerminated",
    "UserStreamState",
    "UserStreamStatus",
]


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


# --- user data stream ---------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ExecutionReport:
    """One ``executionReport`` of the user data stream: an order as the exchange now knows it.

    Attributes:
        order: The order after this execution. ``client_order_id`` is the order's own (for a
            cancel, Binance's ``C``, not the cancel request's ``c``); ``fills`` holds the fill
            this report carries (one for ``TRADE``, none otherwise), not the order's history;
            ``order_id`` is a fresh Genesis id (match orders by ``client_order_id``).
        execution_type: Binance's ``x``: ``NEW``, ``TRADE``, ``CANCELED``, ``EXPIRED``,
            ``REJECTED``, ``REPLACED``, ``TRADE_PREVENTION``.
        fill: The last fill (``L``, ``l``, ``n``, ``N``, ``t``) when ``execution_type`` is
            ``TRADE``, else ``None``.
        reject_reason: Binance's ``r`` unless it is ``NONE``.
        expiry_reason: Binance's ``eR`` (sent for expired orders since 2026-03-26), if any.
        event_time_ms: ``E``.
        transaction_time_ms: ``T``.
        execution_id: ``I``, when sent.
        is_maker: ``m``: this fill was the maker side.
    """

    order: Order
    execution_type: str
    fill: Fill | None = None
    reject_reason: str | None = None
    expiry_reason: str | None = None
    event_time_ms: int
    transaction_time_ms: int
    execution_id: int | None = None
    is_maker: bool = False

    def to_order_update(self) -> OrderUpdate:
        """The :class:`OrderUpdate` the user data stream publishes for this report.

        ``reason`` is set where the status does not tell the whole story: the reject reason,
        the expiry reason, or the execution type ``REPLACED`` / ``TRADE_PREVENTION``.
        """
        reason = self.reject_reason or self.expiry_reason
        if reason is None and self.execution_type in _TELLING_EXECUTION_TYPES:
            reason = self.execution_type
        return OrderUpdate(order=self.order, source=OrderUpdateSource.USER_STREAM, reason=reason)


_TELLING_EXECUTION_TYPES = frozenset({"REPLACED", "TRADE_PREVENTION"})


@attrs.frozen(kw_only=True)
class AccountBalances:
    """An ``outboundAccountPosition``: the balances that may have changed, free and locked.

    Attributes:
        event_time_ms: ``E``.
        update_time_ms: ``u``, the time of the last account update.
        balances: One :class:`~genesis.models.account.Balance` per asset listed (only the assets
            that may have changed; the others are as before).
    """

    event_time_ms: int
    update_time_ms: int
    balances: tuple[Balance, ...]

    def balance(self, asset: str) -> Balance | None:
        """The balance of ``asset`` if this event lists it."""
        return next((b for b in self.balances if b.asset == asset), None)


@attrs.frozen(kw_only=True)
class StreamTerminated:
    """``eventStreamTerminated``: the subscription ``subscription_id`` has ended."""

    subscription_id: int | None
    event_time_ms: int


@attrs.frozen(kw_only=True)
class ServerShutdown:
    """``serverShutdown``: the server will close this connection soon; reconnect now."""

    event_time_ms: int


class UserStreamState(enum.Enum):
    """Where the user data stream is in its life."""

    CONNECTING = "connecting"
    SUBSCRIBING = "subscribing"
    """Connected; logging on, subscribing, or reconciling the gap before the subscription."""
    SUBSCRIBED = "subscribed"
    """Subscribed, and any gap before the subscription reconciled."""
    BACKOFF = "backoff"
    """Waiting before the next attempt after a failure."""


@attrs.frozen(kw_only=True)
class UserStreamStatus:
    """The user data stream became available or unavailable (published on each change).

    While it is unavailable, order outcomes must come from REST queries.

    Attributes:
        state: The stream's state when it changed.
        at: Trio time of the change (seconds).
        reason: Why it is unavailable (the last error), ``None`` when available.
        subscription_id: The live subscription, ``None`` when unavailable.
    """

    state: UserStreamState
    at: float
    reason: str | None = None
    subscription_id: int | None = None

    @property
    def available(self) -> bool:
        return self.state is UserStreamState.SUBSCRIBED
