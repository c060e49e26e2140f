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
    "Alert",
    "AlertKind",
    "AlertSeverity",
    "BreakerState",
    "BreakerTransition",
    "ConnectionHealth",
    "ConnectionState",
    "ExecutionReport",
    "FeedDown",
    "FeedGap",
    "FeedUp",
    "OrderUpdate",
    "OrderUpdateSource",
    "SequenceReset",
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


# --- market-data health ------------------------------------------------------------------


class ConnectionState(enum.Enum):
    """Where a market-data connection (a role) is in its life."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKOFF = "backoff"


@attrs.frozen(kw_only=True)
class ConnectionHealth:
    """A snapshot of one role's connection (also published by the heartbeat, never dropped).

    Attributes:
        role: ``execution``, ``monitoring`` or ``backup`` (or what the caller named it).
        state: Connecting, connected, or waiting in backoff.
        uptime_s: Seconds since the current connection was established (0 when not connected).
        messages_received: Frames received by this role since start (all its connections).
        messages_per_s: Average over the last ``rate_window_s`` complete seconds.
        latency_ms: Receive wall time minus the last payload event time ``E`` (None before any
            payload with ``E``); includes the clock offset between us and the exchange.
        reconnects: Reconnects after failures.
        rotations: Make-before-break rotations (age cap or ``serverShutdown``).
        last_error: The reason the last connection of this role ended, if any.
        receiving: The current connection delivered at least one frame.
        last_frame_age_s: Seconds since this role's newest frame (``None`` before any).
        ping_rtt_ms: Round trip of the last active ping probe (``None`` before any answer).
        first_share: Share (0..1) of the published events that this role delivered first.
        stale: Connected and receiving, but a stream that must tick (depth20) went silent:
            the role is not live.
    """

    role: str
    state: ConnectionState
    uptime_s: float
    messages_received: int
    messages_per_s: float
    latency_ms: int | None
    reconnects: int
    rotations: int
    last_error: str | None
    receiving: bool
    last_frame_age_s: float | None = None
    ping_rtt_ms: float | None = None
    first_share: float = 0.0
    stale: bool = False


@attrs.frozen(kw_only=True)
class FeedGap:
    """A hole in a sequenced stream that backfill could not fill (never dropped).

    Subscribers saw every id before ``first_missing_id`` and see the ids after
    ``last_missing_id``; the ids in between (inclusive) never reached the bus.

    Attributes:
        symbol: Upper-case symbol.
        stream: The stream kind's suffix (``trade``, ``kline_1m``).
        first_missing_id: First trade id (for klines: open time in ms) that is missing.
        last_missing_id: Last one missing (inclusive).
        reason: Why it could not be filled, in a few words.
        at: Trio time when it was given up (seconds).
    """

    symbol: str
    stream: str
    first_missing_id: int
    last_missing_id: int
    reason: str
    at: float

    @property
    def missing(self) -> int:
        return self.last_missing_id - self.first_missing_id + 1


@attrs.frozen(kw_only=True)
class SequenceReset:
    """The exchange restarted a stream's sequence (ids far below the high-water mark).

    The merger forgot the old sequence of ``symbol``/``stream`` and follows the new one.
    """

    symbol: str
    stream: str
    previous_high: int
    new_first: int
    role: str
    at: float


@attrs.frozen(kw_only=True)
class FeedDown:
    """No market-data connection is live: prices on the bus are getting stale.

    Attributes:
        at: Trio time it was noticed (seconds).
        reason: Why, in a few words (the last connection error, or ``no frames for 2 s``).
        last_event_age_s: Seconds since the newest event was published (``None`` before any).
    """

    at: float
    reason: str
    last_event_age_s: float | None = None


@attrs.frozen(kw_only=True)
class FeedUp:
    """A connection is live again after :class:`FeedDown` (or for the first time)."""

    at: float
    down_for_s: float
    role: str


# --- alerts ------------------------------------------------------------------------------


class AlertKind(enum.Enum):
    """What an :class:`Alert` is about; the value is the stable name used in logs and metrics."""

    BREAKER_OPEN = "breaker_open"
    LIMITER_HIGH = "limiter_high"
    RATE_LIMITED = "rate_limited"
    IP_BANNED = "ip_banned"
    FEED_GAP = "feed_gap"
    FEED_DOWN = "feed_down"
    CLOCK_OFFSET = "clock_offset"
    RECORDER_FAILED = "recorder_failed"
    BROKER_UNREACHABLE = "broker_unreachable"
    USER_STREAM_DOWN = "user_stream_down"
    RECONCILER_DOWN = "reconciler_down"


class AlertSeverity(enum.Enum):
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


@attrs.frozen(kw_only=True)
class Alert:
    """Something a person on call must look at (never dropped; logged at WARNING or above).

    Attributes:
        kind: What it is about.
        severity: How urgent.
        message: One line for a human, no secrets.
        at_ms: Wall-clock epoch milliseconds when raised.
        subject: What it concerns: a symbol, a breaker or limiter bucket name, a role; ``""``
            when it concerns the whole process.
        details: Extra facts as strings (``{"retry_after_s": "60"}``), stable keys.
    """

    kind: AlertKind
    severity: AlertSeverity
    message: str
    at_ms: int
    subject: str = ""
    details: tuple[tuple[str, str], ...] = ()
