"""The WS API's shared state: configuration, per-connection state, and one public state object.

Several parties act on the WS API's state: the connection tasks (:mod:`genesis.sim.ws_api`), the
request dispatcher (:mod:`genesis.sim.ws_api_dispatch`) and the fault controls. None reaches
into another's private fields: they share :class:`WsApiState`, the way trio's two channel ends
share one ``MemoryChannelState`` (public fields every party updates, and a ``statistics()``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

import attrs

from genesis.sim._wsconn import CLOSE_POLICY, Close, ConnectionRegistry, ConnLog, WsConnection
from genesis.sim.limits import AttemptLimiter

if TYPE_CHECKING:
    from collections.abc import Callable

    import trio

    from genesis.sim.auth import ApiKey

__all__ = [
    "DEFAULT_WS_API_CONFIG",
    "Subscription",
    "WsApiConfig",
    "WsApiConnection",
    "WsApiConnectionInfo",
    "WsApiState",
    "WsApiStatistics",
]

logger = logging.getLogger("genesis.sim.ws_api")
LOG: Final = ConnLog(logger, "sim.wsapi")


# --- configuration and public values --------------------------------------------------------


@attrs.frozen(kw_only=True)
class WsApiConfig:
    """Limits and timings of the WS API server (Binance's values by default).

    Attributes:
        ping_interval_s: The server pings every 20 s, counted from the handshake.
        pong_timeout_s: A ping not echoed within 60 s closes the connection with 1008.
        max_age_s: Connection lifetime (24 h); then ``serverShutdown`` and a 1001 close.
        max_connect_attempts: Handshakes per IP per ``connect_window_s`` (300 per 5 minutes).
        connect_window_s: Length of the sliding window for connection attempts.
        connection_weight: REQUEST_WEIGHT charged for each accepted handshake (2).
        max_active_subscriptions: Active user data subscriptions per connection (1000).
        max_subscription_ids: Subscriptions over a connection's lifetime (65,535).
        outbound_buffer: Frames (answers and events) queued per connection; when an event
            finds it full the client is a slow consumer and the connection is closed.
        slow_send_timeout_s: A frame that cannot be written for this long drops the connection.
        handshake_timeout_s: Time a raw stream has to send its HTTP upgrade request
            (:func:`handle_ws_api_stream` only).
        disconnect_timeout_s: Time the client has to answer our close frame.
        message_queue_size: trio-websocket's inbound queue (used where this module wraps the
            stream; a dispatcher that wraps it should use the same value).
        max_message_size: Largest inbound message (trio-websocket closes with 1009).
    """

    ping_interval_s: float = attrs.field(default=20.0, validator=attrs.validators.gt(0))
    pong_timeout_s: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    max_age_s: float = attrs.field(default=86_400.0, validator=attrs.validators.gt(0))
    max_connect_attempts: int = attrs.field(default=300, validator=attrs.validators.ge(1))
    connect_window_s: float = attrs.field(default=300.0, validator=attrs.validators.gt(0))
    connection_weight: int = attrs.field(default=2, validator=attrs.validators.ge(0))
    max_active_subscriptions: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    max_subscription_ids: int = attrs.field(default=65_535, validator=attrs.validators.ge(1))
    outbound_buffer: int = attrs.field(default=1024, validator=attrs.validators.ge(1))
    slow_send_timeout_s: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    handshake_timeout_s: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    disconnect_timeout_s: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    message_queue_size: int = attrs.field(default=32, validator=attrs.validators.ge(1))
    max_message_size: int = attrs.field(default=1 << 20, validator=attrs.validators.ge(1))


DEFAULT_WS_API_CONFIG: Final = WsApiConfig()


@attrs.frozen(kw_only=True)
class WsApiConnectionInfo:
    """A snapshot of one live WS API connection.

    Attributes:
        id: Connection id (also in the ``sim.wsapi.*`` log lines).
        remote: Client IP (or the label given to :func:`handle_ws_api`).
        connected_at_ms: Simulator epoch ms of the handshake.
        api_key: The key authenticated by ``session.logon``, or ``None``.
        subscriptions: ``(subscriptionId, api key)`` of the active user data subscriptions.
        requests: Requests answered so far.
        events_sent: User data events queued for the client so far.
        outstanding_pings: Pings not yet echoed.
    """

    id: int
    remote: str
    connected_at_ms: int
    api_key: str | None
    subscriptions: tuple[tuple[int, str], ...]
    requests: int
    events_sent: int
    outstanding_pings: int


@attrs.frozen(kw_only=True)
class WsApiStatistics:
    """Counters of one :class:`WsApiContext` since creation."""

    connections_open: int
    connections_accepted: int
    handshakes_rejected: int
    requests: int
    errors: int
    events_sent: int


# --- per-connection state -----------------------------------------------------------------


@attrs.define(eq=False, kw_only=True)
class Subscription:
    """One user data subscription of a connection."""

    id: int
    api_key: str
    via_logon: bool
    remove_listener: Callable[[], None]


@attrs.define(eq=False, kw_only=True)
class WsApiConnection(WsConnection):
    """One WS API connection's state, shared by its tasks and its request dispatcher."""

    return_rate_limits: bool
    send_chan: trio.MemorySendChannel[str]
    logon: ApiKey | None = None
    authorized_since_ms: int | None = None
    subscriptions: dict[int, Subscription] = attrs.field(factory=dict)
    next_subscription_id: int = 0
    outstanding_pings: int = 0
    requests: int = 0
    events_sent: int = 0

    def subscription_for(self, api_key: str) -> Subscription | None:
        return next((s for s in self.subscriptions.values() if s.api_key == api_key), None)

    def info(self) -> WsApiConnectionInfo:
        return WsApiConnectionInfo(
            id=self.id,
            remote=self.remote,
            connected_at_ms=self.connected_at_ms,
            api_key=None if self.logon is None else self.logon.api_key,
            subscriptions=tuple((s.id, s.api_key) for s in self.subscriptions.values()),
            requests=self.requests,
            events_sent=self.events_sent,
            outstanding_pings=self.outstanding_pings,
        )


# --- the shared state ---------------------------------------------------------------------------


@attrs.define(eq=False, kw_only=True)
class WsApiState:
    """What every party of the WS API shares: live connections, attempt limits and counters.

    Attributes:
        connections: The live connections by id (shutdown/drop controls included).
        attempts: Handshakes per IP in the sliding window.
        accepted: Handshakes accepted.
        rejected: Handshakes refused.
        requests: Request frames answered.
        errors: Error answers.
        events: User data events queued for clients.
    """

    connections: ConnectionRegistry[WsApiConnection]
    attempts: AttemptLimiter
    accepted: int = 0
    rejected: int = 0
    requests: int = 0
    errors: int = 0
    events: int = 0

    @classmethod
    def create(cls, config: WsApiConfig) -> WsApiState:
        """Empty state for a server with ``config``."""
        return cls(
            connections=ConnectionRegistry(LOG, "dropped"),
            attempts=AttemptLimiter(config.max_connect_attempts, config.connect_window_s),
        )

    def statistics(self) -> WsApiStatistics:
        """The counters now."""
        return WsApiStatistics(
            connections_open=len(self.connections),
            connections_accepted=self.accepted,
            handshakes_rejected=self.rejected,
            requests=self.requests,
            errors=self.errors,
            events_sent=self.events,
        )

    def register(self, make: Callable[[int], WsApiConnection]) -> WsApiConnection:
        """Make an accepted connection live under the next id."""
        self.accepted += 1
        return self.connections.register(make)

    def unregister(self, conn: WsApiConnection) -> None:
        """End ``conn``'s subscriptions and forget it (idempotent)."""
        for sub in conn.subscriptions.values():
            sub.remove_listener()
        conn.subscriptions.clear()
        self.connections.unregister(conn)
        conn.send_chan.close()

    def drop_ip(self, ip: str) -> None:
        """Close every connection of ``ip`` with 1008 (Binance disconnects banned IPs)."""
        for conn in self.connections.live():
            if conn.remote == ip:
                conn.request_close(Close("IP banned", code=CLOSE_POLICY))
