"""Limits and timings of the simulator's market-stream server, and the pure counters behind them.

Values follow Binance's current rules for ``wss://stream.binance.com`` (``shared/binance/FACTS.md``
§7): a server ping every 20 s and a disconnect when no echoing pong arrives within 60 s, a 24 h
connection lifetime, at most 1024 streams per connection, 5 incoming messages (text, ping and pong
frames alike) per second per connection, and 300 connection attempts per 5 minutes per IP.

The counters are sync and take ``now`` (Trio seconds) as an argument, so they are exact under
``trio.testing.MockClock`` and testable without a clock at all.
"""

from __future__ import annotations

import math
from collections import deque

import attrs

__all__ = [
    "AttemptLimiter",
    "SlidingWindowCounter",
    "StreamServerConfig",
]


def _positive(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if not value > 0 or value == math.inf:
        raise ValueError(f"{attr.name} must be a positive finite number, got {value!r}")


def _upper_symbols(
    value: frozenset[str] | set[str] | list[str] | tuple[str, ...],
) -> frozenset[str]:
    return frozenset(s.upper() for s in value)


@attrs.frozen(kw_only=True)
class StreamServerConfig:
    """Limits, timings and trio-websocket settings of one market-stream server.

    Attributes:
        symbols: Symbols (upper case) whose streams exist; other symbols are invalid names.
        max_streams_per_connection: Binance's cap of 1024 streams on one connection.
        max_incoming_per_window: Incoming messages allowed per ``incoming_window_s`` (5 per 1 s);
            text/binary messages, PING and PONG frames all count. One more closes the
            connection with 1008.
        incoming_window_s: Length of the sliding window for incoming messages.
        max_connect_attempts: Handshakes allowed per IP per ``connect_window_s`` (300 per 5 min);
            one more is answered with HTTP 429.
        connect_window_s: Length of the sliding window for connection attempts.
        ping_interval_s: The server pings every 20 s, counted from the handshake.
        pong_timeout_s: A ping not echoed within 60 s closes the connection with 1008.
        max_age_s: Connection lifetime (24 h at Binance); at this age the server sends
            ``serverShutdown`` and closes with 1001.
        subscriber_buffer: Payloads buffered per connection between the hub and the socket;
            when the hub has to drop one, the connection is a slow consumer and is closed.
        slow_send_timeout_s: A single data frame that cannot be written for this long (the
            client stopped reading, the TCP window is full) marks a slow consumer; the TCP
            connection is dropped without a close frame (the frame is half written).
        handshake_timeout_s: Time a new TCP connection has to send its HTTP upgrade request.
        disconnect_timeout_s: Time the client has to answer our close frame before the TCP
            connection is closed anyway (trio-websocket's 60 s default is far too long).
        message_queue_size: trio-websocket's inbound queue; the server reads it at once, and
            the inbound rate limit keeps it nearly empty, so 32 is ample.
        max_message_size: Largest inbound message accepted (trio-websocket closes with 1009).
    """

    symbols: frozenset[str] = attrs.field(
        default=frozenset({"BTCUSDT", "ETHUSDT", "BNBUSDT"}), converter=_upper_symbols
    )
    max_streams_per_connection: int = attrs.field(default=1024, validator=attrs.validators.ge(1))
    max_incoming_per_window: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    incoming_window_s: float = attrs.field(default=1.0, validator=_positive)
    max_connect_attempts: int = attrs.field(default=300, validator=attrs.validators.ge(1))
    connect_window_s: float = attrs.field(default=300.0, validator=_positive)
    ping_interval_s: float = attrs.field(default=20.0, validator=_positive)
    pong_timeout_s: float = attrs.field(default=60.0, validator=_positive)
    max_age_s: float = attrs.field(default=86_400.0, validator=_positive)
    subscriber_buffer: int = attrs.field(default=1024, validator=attrs.validators.ge(1))
    slow_send_timeout_s: float = attrs.field(default=10.0, validator=_positive)
    handshake_timeout_s: float = attrs.field(default=10.0, validator=_positive)
    disconnect_timeout_s: float = attrs.field(default=1.0, validator=_positive)
    message_queue_size: int = attrs.field(default=32, validator=attrs.validators.ge(1))
    max_message_size: int = attrs.field(default=1 << 20, validator=attrs.validators.ge(1))


@attrs.define
class SlidingWindowCounter:
    """At most ``limit`` events in any window of ``window_s`` seconds.

    An event at ``t`` is in the window of ``now`` when ``now - window_s < t <= now``: five
    messages at 0.0, 0.2 … 0.8 fill a 1 s window, a sixth before 1.0 is refused, and at 1.0 the
    event from 0.0 has left the window. Refused events are not recorded.
    """

    limit: int = attrs.field(validator=attrs.validators.ge(1))
    window_s: float = attrs.field(validator=_positive)
    _events: deque[float] = attrs.field(factory=deque, init=False)

    def _expire(self, now: float) -> None:
        horizon = now - self.window_s
        while self._events and self._events[0] <= horizon:
            self._events.popleft()

    def try_acquire(self, now: float) -> bool:
        """Record an event at ``now`` if the window has room; return whether it had."""
        self._expire(now)
        if len(self._events) >= self.limit:
            return False
        self._events.append(now)
        return True

    def count(self, now: float) -> int:
        """Events currently in the window."""
        self._expire(now)
        return len(self._events)


@attrs.define
class AttemptLimiter:
    """One :class:`SlidingWindowCounter` per key (the client IP for connection attempts).

    Memory stays bounded: a key holds at most ``limit`` timestamps, and keys whose window has
    emptied are forgotten (the whole table is swept whenever it grows past ``sweep_above``).
    """

    limit: int = attrs.field(validator=attrs.validators.ge(1))
    window_s: float = attrs.field(validator=_positive)
    sweep_above: int = 4096
    _by_key: dict[str, SlidingWindowCounter] = attrs.field(factory=dict, init=False)

    def try_acquire(self, key: str, now: float) -> bool:
        """Record an attempt by ``key`` at ``now`` unless it already used up its window."""
        counter = self._by_key.get(key)
        if counter is None:
            if len(self._by_key) >= self.sweep_above:
                self._sweep(now)
            counter = self._by_key[key] = SlidingWindowCounter(self.limit, self.window_s)
        return counter.try_acquire(now)

    def count(self, key: str, now: float) -> int:
        counter = self._by_key.get(key)
        return 0 if counter is None else counter.count(now)

    def _sweep(self, now: float) -> None:
        for key in [k for k, c in self._by_key.items() if c.count(now) == 0]:
            del self._by_key[key]
