"""The market-data connections' configuration and statistics (:func:`.ws_manager.run_market_data`).

Split from :mod:`genesis.exchange.ws_manager` by job: what a caller sets and reads, apart from
the connection tasks that use it. :mod:`~genesis.exchange.ws_manager` re-exports every name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import attrs

from genesis.resilience.backoff import BackoffPolicy

if TYPE_CHECKING:
    from genesis.exchange.merger import MergerStatistics
    from genesis.exchange.ws_reader import ReadGroupStatistics
    from genesis.models.events import ConnectionHealth

__all__ = ["MARKET_DATA_BACKOFF", "MarketDataConfig", "MarketDataStatistics"]


def _positive(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


MARKET_DATA_BACKOFF: Final = BackoffPolicy(jitter=1.0, reset_after_s=10.0)
"""1, 2, 4, 8, 16, 30 s capped, full jitter, reset after 10 s of frames, never giving up."""


@attrs.frozen(kw_only=True)
class MarketDataConfig:
    """Protocol deadlines and sizes of the market-data connections (one frozen object).

    Attributes:
        connect_timeout_s: TCP + TLS + WebSocket handshake deadline.
        stale_after_s: No frame for this long (data, not pings) → reconnect.
        rotate_after_s: Connection age at which a make-before-break rotation starts; Binance
            cuts connections at 24 h.
        disconnect_timeout_s: Bound on the close handshake (trio-websocket's default is 60 s).
        message_queue_size: trio-websocket's unread-frame queue; the default of 1 stops pong
            replies as soon as one frame is unread.
        relay_buffer_size: Unused since the connection tasks feed the merger directly, in
            batches (issue 12); kept so existing configurations still build.
        rotation_overlap_s: After a rotation's successor delivered its first frame, the old
            connection keeps relaying this long before it is closed, so frames it had already
            received but not yet relayed are not lost (the merger drops the overlap's copies).
        gap_hold_s: How long trades beyond a missing id are held for the other connections.
        max_held_trades: Held trades per symbol beyond which they are released at once.
        rate_window_s: Window of the messages-per-second figure in the health snapshots.
        depth_stale_after_s: No depth20 frame for this long → the role is stale (not live).
            depth20@100ms is a snapshot every 100 ms, so its silence means a dead feed, while
            a quiet trade stream is normal.
        ping_timeout_s: How long an active ping probe waits for its pong before the connection
            is declared dead.
        max_rejected_handshakes: Consecutive 4xx handshake answers per role after which, once
            every role is there, the feed ends with :class:`~genesis.errors.StreamRejectedError`.
        backoff: Reconnect schedule (:data:`MARKET_DATA_BACKOFF` by default).
        backfill_timeout_s: How long the merger waits for REST to fill a hole before it gives
            the hole up (a ``FeedGap``) and releases the live trades held behind it.
    """

    connect_timeout_s: float = attrs.field(default=5.0, validator=_positive)
    stale_after_s: float = attrs.field(default=10.0, validator=_positive)
    rotate_after_s: float = attrs.field(default=23.5 * 3600, validator=_positive)
    disconnect_timeout_s: float = attrs.field(default=1.0, validator=_positive)
    message_queue_size: int = attrs.field(default=4096, validator=attrs.validators.ge(1))
    relay_buffer_size: int = attrs.field(default=4096, validator=attrs.validators.ge(1))
    rotation_overlap_s: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    gap_hold_s: float = attrs.field(default=0.2, validator=_positive)
    max_held_trades: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    rate_window_s: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    depth_stale_after_s: float = attrs.field(default=2.0, validator=_positive)
    ping_timeout_s: float = attrs.field(default=10.0, validator=_positive)
    max_rejected_handshakes: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    backoff: BackoffPolicy = MARKET_DATA_BACKOFF
    backfill_timeout_s: float = attrs.field(default=10.0, validator=_positive)


@attrs.frozen(kw_only=True)
class MarketDataStatistics:
    """Health of every connection plus the merger's counters."""

    connections: tuple[ConnectionHealth, ...]
    merger: MergerStatistics
    reader: ReadGroupStatistics | None = None
    """The shared reader's counters (``None`` where every connection reads itself)."""
