"""The mutable state of one market-data role and its connection attempts (for :mod:`.ws_manager`).

A *role* (``execution``, ``monitoring``, ``backup``) is one long-lived connection slot;
each connection attempt is a :class:`Session`. :meth:`RoleState.health` turns the state into the
:class:`~genesis.models.events.ConnectionHealth` the heartbeat publishes.
"""

from __future__ import annotations

import math

import attrs
import trio

from genesis.exchange.ws_connect import WebSocket  # noqa: TC001  # attrs resolves annotations
from genesis.models.events import ConnectionHealth, ConnectionState
from genesis.resilience.backoff import Backoff  # noqa: TC001

__all__ = ["RateMeter", "RoleState", "Session"]


@attrs.define
class RateMeter:
    """Messages per second over the last ``window_s`` complete seconds (1 s buckets)."""

    window_s: int
    _seconds: list[int] = attrs.field(init=False)
    _counts: list[int] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._seconds = [-1] * (self.window_s + 1)
        self._counts = [0] * (self.window_s + 1)

    def add(self, now: float, count: int = 1) -> None:
        second = math.floor(now)
        index = second % len(self._seconds)
        if self._seconds[index] != second:
            self._seconds[index] = second
            self._counts[index] = 0
        self._counts[index] += count

    def rate(self, now: float) -> float:
        current = math.floor(now)
        total = sum(
            count
            for second, count in zip(self._seconds, self._counts, strict=True)
            if current - self.window_s <= second < current
        )
        return total / self.window_s


@attrs.define(eq=False)
class Session:
    """One connection attempt of a role and, if it connects, its life."""

    id: int
    signal: trio.Event = attrs.field(factory=trio.Event)
    """Set when the role task should act: a handover was requested, or the session ended."""
    handover_reason: str | None = None
    connected_at: float | None = None
    receiving: bool = False
    retired: bool = False
    """Closed on purpose after a successor took over."""
    ended: bool = False
    ws: WebSocket | None = None
    stale: bool = False
    """Connected, but no depth20 frame for ``depth_stale_after_s``."""
    first_frame_at: float | None = None
    last_frame_at: float | None = None
    failure: str | None = None
    """Set from outside the relay (a ping without pong): the session ends with this reason."""
    relay_scope: trio.CancelScope | None = None
    rate_limited: bool = False
    """The attempt was answered 429/418: the next wait is the backoff's cap."""

    def fail(self, reason: str) -> None:
        if self.failure is None and not self.ended:
            self.failure = reason
            if self.relay_scope is not None:
                self.relay_scope.cancel()


@attrs.define(eq=False)
class RoleState:
    """Mutable state of one role; read through :meth:`MarketDataHandle.statistics`."""

    name: str
    backoff: Backoff
    rate: RateMeter
    state: ConnectionState = ConnectionState.CONNECTING
    current: Session | None = None
    previous: Session | None = None
    """The session being replaced by a rotation, while it still relays."""
    newest_receiving: int = -1
    """Id of the newest session that delivered a frame; older sessions retire once it passes."""
    messages: int = 0
    latency_ms: int | None = None
    first_delivered: int = 0  # frames whose copy was the first (the merger counts them)
    reconnects: int = 0
    rotations: int = 0
    last_error: str | None = None
    last_cause: str | None = None
    """``last_error``, but never the breaker's refusal: what made the connections fail."""
    last_frame_at: float | None = None
    ping_rtt_ms: float | None = None
    ping_timeouts: int = 0
    rejections: int = 0
    """Consecutive handshakes answered 4xx (reset by a successful connect)."""

    @property
    def receiving(self) -> bool:
        current = self.current
        return self.state is ConnectionState.CONNECTED and current is not None and current.receiving

    @property
    def live(self) -> bool:
        """Connected, delivering, and its depth20 frames are fresh; during a rotation the
        predecessor, still relaying until the successor delivers, counts too."""
        current = self.current
        if self.receiving and current is not None and not current.stale:
            return True
        previous = self.previous
        return (
            previous is not None
            and previous.receiving
            and not previous.ended
            and not previous.stale
        )

    def health(self, now: float, published: int = 0) -> ConnectionHealth:
        connected_at = self.current.connected_at if self.current is not None else None
        uptime = 0.0
        if self.state is ConnectionState.CONNECTED and connected_at is not None:
            uptime = now - connected_at
        return ConnectionHealth(
            role=self.name,
            state=self.state,
            uptime_s=uptime,
            messages_received=self.messages,
            messages_per_s=self.rate.rate(now),
            latency_ms=self.latency_ms,
            reconnects=self.reconnects,
            rotations=self.rotations,
            last_error=self.last_error,
            receiving=self.receiving,
            last_frame_age_s=None if self.last_frame_at is None else now - self.last_frame_at,
            ping_rtt_ms=self.ping_rtt_ms,
            first_share=self.first_delivered / published if published else 0.0,
            stale=self.receiving and self.current is not None and self.current.stale,
        )
