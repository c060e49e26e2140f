"""The market-data merger: a pure core that turns three copies of every frame into one event.

:class:`Merger` is synchronous and never reads a clock: every call takes ``now`` (Trio time,
seconds), so a test can drive it frame by frame, and the Hypothesis properties in
``tests/test_merger_properties.py`` check it for any interleaving of the copies. The thin
Trio loop that feeds it lives in :mod:`genesis.exchange.ws_manager`; the REST fetches it asks
for live in :mod:`genesis.exchange.backfill`. :class:`Merger` routes, dedups and publishes; its
parts each have one job: trade sequencing (:mod:`~genesis.exchange.merger_trades`), kline
bookkeeping (:mod:`~genesis.exchange.merger_klines`), fault counting
(:mod:`~genesis.exchange.merger_faults`).

Per frame (the copies are the common case, so they are dropped before any parse)::

    raw text ── stream name, key (str.find, models/codec) ── duplicate? → dropped
            └── first copy: parse once, decode (Decimal, attrs), key must agree → rules → publish

Rules (each event reaches the subscribers exactly once, in order per stream):

- trade: ids are consecutive per symbol. An id beyond ``last + 1`` is held (the other
  connections usually fill the hole within milliseconds). After ``gap_hold_s`` (or once
  ``max_held_trades`` are held) the hole is asked of the backfill source (REST
  ``historicalTrades``), and the live trades stay held (up to ``backfill_hold_trades``) until
  it answers or ``backfill_timeout_s`` passes; then everything is released in order. A hole
  nobody could fill is published as a :class:`~genesis.models.events.FeedGap` before the
  trades behind it, counted and logged.
- catch-up: a hole is only seen when a trade behind it arrives, and after every connection
  was down a quiet market may print none for minutes. So when a connection is up again
  (:meth:`Merger.on_feed_restored`), every trade stream asks REST for the trades after its
  newest id at once (open-ended, up to ``max_backfill_trades``; a stream holding a hole, once
  the hole is settled); what is printed from then on arrives live.
- depth20: a newer ``lastUpdateId`` wins; ticker: a newer event time ``E`` wins.
- kline: a newer ``(open time, E)`` wins; a kline's closed frame is never dropped, even late.
  A closed kline that never arrived (every connection was down over a minute boundary) is
  asked of the backfill source (REST ``klines``) and published late, like a late closed frame.
- sequence reset: a trade or depth id ``reset_min_drop`` or more below the high-water mark,
  while no new id was published for ``reset_quiet_s`` (no connection still delivers the old
  sequence), means the exchange restarted its sequence: the stream's state is reset, a
  WARNING logged and a :class:`~genesis.models.events.SequenceReset` published, and the new
  trades flow at once instead of being dropped as duplicates.
- hostile input (bad JSON, unknown streams, missing or mistyped fields, NaN, infinite or
  negative numbers, frames over 1 MiB, unexpected close codes) is counted by kind and logged
  once per kind per ``fault_log_interval_s``; a bad copy never shadows a good one, because a
  key is committed only once a copy decodes and agrees with it.

Logs: ``ws.merger.fault``, ``ws.merger.gap``, ``ws.merger.backfill``,
``ws.merger.sequence_reset``, ``ws.merger.bus_rejected``.
"""

from __future__ import annotations

import logging
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Protocol

import attrs
import trio

from genesis.errors import ExchangeProtocolError
from genesis.exchange.merger_faults import FaultCounter
from genesis.exchange.merger_klines import KLINE_INTERVAL_MS, KlineBackfillRequest, KlineBook
from genesis.exchange.merger_trades import TradeBackfillRequest, TradeSequence, TradeSequencer
from genesis.exchange.streams import StreamKind, StreamRoute, route_for
from genesis.models.codec import (
    KEY_READERS,
    MAX_FRAME_CHARS,
    decode_depth,
    decode_depth_frame,
    decode_kline,
    decode_ticker,
    decode_trade,
    decode_trade_frame,
    fault_kind,
    frame_key_of,
    parse_frame,
    read_event_time,
    read_stream,
)
from genesis.models.market import Kline, Trade

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from genesis.models.codec import FrameKey, MarketEvent

__all__ = [
    "FAULT_KEY_MISMATCH",
    "FAULT_OVERSIZED",
    "FAULT_UNKNOWN_STREAM",
    "KLINE_INTERVAL_MS",
    "FrameSource",
    "KlineBackfillRequest",
    "Merger",
    "MergerConfig",
    "MergerStatistics",
    "TradeBackfillRequest",
]

logger = logging.getLogger(__name__)

FAULT_OVERSIZED: Final = "oversized"
FAULT_UNKNOWN_STREAM: Final = "unknown_stream"
FAULT_KEY_MISMATCH: Final = "key_mismatch"
"""The key read from the raw text disagrees with the decoded payload (hostile layout)."""
FAULT_BAD_ENCODING: Final = "bad_encoding"
_EXPECTED_CLOSE_CODES: Final = frozenset({1000, 1001})

_UNPARSED: Final = object()
_RECENT_FRAMES: Final = 1024
"""First copies remembered by their text (with their event time) to drop identical copies."""


class FrameSource(Protocol):
    """The connection (role) a frame came from, as the merger sees it."""

    @property
    def name(self) -> str: ...

    latency_ms: int | None
    """Set from every frame with an event time: receive time minus event time."""
    first_delivered: int
    """Incremented for every frame whose copy was the first to arrive (the share of the role)."""


@attrs.frozen(kw_only=True)
class MergerConfig:
    """Hold times and bounds of the merger (one frozen object).

    Attributes:
        gap_hold_s: How long trades beyond a missing id wait for the other connections.
        max_held_trades: Held trades per symbol beyond which the hole is acted on at once.
        backfill_timeout_s: How long a backfill may take before its hole is given up.
        backfill_hold_trades: Live trades held per symbol while a backfill is in flight; more
            and the hole is given up (a :class:`FeedGap`) so the feed moves on.
        max_backfill_trades: The most trades one backfill fetches (the newest of the hole;
            older ones become a :class:`FeedGap`): 10 pages of 1,000, 250 request weight.
        reset_min_drop: How far below the high-water mark an id must be to mean a restart.
        reset_quiet_s: How long no new id may have been published before a restart is believed.
        fault_log_interval_s: Each fault kind is logged at most once per this interval.
    """

    gap_hold_s: float = attrs.field(default=0.2, validator=attrs.validators.gt(0))
    max_held_trades: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    backfill_timeout_s: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    backfill_hold_trades: int = attrs.field(default=10_000, validator=attrs.validators.ge(1))
    max_backfill_trades: int = attrs.field(default=10_000, validator=attrs.validators.ge(1))
    reset_min_drop: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    reset_quiet_s: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    fault_log_interval_s: float = attrs.field(default=60.0, validator=attrs.validators.ge(0))


@attrs.frozen(kw_only=True)
class MergerStatistics:
    """Counters of the merger.

    Attributes:
        frames: Frames received from all connections.
        published: Unique events published to the bus (FeedGap and SequenceReset included).
        duplicates_dropped: Copies already delivered by another connection (or older ones).
        gaps: Holes in a trade id sequence no connection and no backfill filled (each one a
            :class:`FeedGap`).
        trades_missing: Trade ids in those holes.
        decode_errors: Frames refused as malformed (every frame kind in ``faults``).
        held: Trades currently held waiting for a missing id.
        bus_rejected: Events the bus refused (a never-drop policy on market data with a full
            subscriber: a configuration error).
        faults: Hostile input by kind (``invalid_json``, ``unknown_stream``,
            ``missing_field``, ``bad_type``, ``bad_number``, ``bad_value``, ``oversized``,
            ``close_<code>``...).
        backfills: Backfill requests made (trades and klines).
        backfilled_trades: Trades published from REST.
        backfilled_klines: Closed klines published from REST.
        backfill_failures: Backfills that failed or timed out.
        sequence_resets: Streams whose sequence restarted.
        kline_gaps: Closed klines no connection and no backfill delivered (each run of them
            one :class:`FeedGap` whose ids are open times).
        catch_ups: Of ``backfills``, the open-ended ones asked when a connection came up after
            every one was down.
    """

    frames: int
    published: int
    duplicates_dropped: int
    gaps: int
    trades_missing: int
    decode_errors: int
    held: int
    bus_rejected: int
    faults: Mapping[str, int] = attrs.field(factory=dict)
    backfills: int = 0
    backfilled_trades: int = 0
    backfilled_klines: int = 0
    backfill_failures: int = 0
    sequence_resets: int = 0
    kline_gaps: int = 0
    catch_ups: int = 0


@attrs.define(eq=False)
class _Route:
    route: StreamRoute
    read_key: Callable[[str], FrameKey | None]


_MODEL_KIND: Final = {
    StreamKind.TRADE: "trade",
    StreamKind.TICKER: "ticker",
    StreamKind.DEPTH: "partialDepth",
    StreamKind.KLINE: "kline",
}


@attrs.define(eq=False)
class Merger:
    """Dedups frames from every connection, decodes each event once, publishes it.

    Args:
        publish: ``bus.publish_nowait``: called with each event; may raise
            ``trio.WouldBlock`` (counted as ``bus_rejected``).
        config: Hold times and bounds.
        backfill: Whether a backfill source answers :meth:`take_backfill_requests`; without
            one a hole is a :class:`FeedGap` once ``gap_hold_s`` passes.
        streams: The subscribed stream names; a frame of any other is ``unknown_stream``.
            ``None``: every stream name Genesis can decode.
    """

    publish: Callable[[object], None]
    config: MergerConfig = attrs.field(factory=MergerConfig)
    backfill: bool = False
    streams: frozenset[str] | None = None
    on_published: Callable[[], None] | None = None
    """Called after every published event (the async side's wake-up)."""
    backfill_requests: list[TradeBackfillRequest | KlineBackfillRequest] = attrs.field(
        factory=list, init=False
    )
    """Requests not yet taken by the backfill runner (see :meth:`take_backfill_requests`)."""
    _routes: dict[str, _Route | None] = attrs.field(factory=dict, init=False)
    _last_key: dict[str, int] = attrs.field(factory=dict, init=False)
    _last_at: dict[str, float] = attrs.field(factory=dict, init=False)
    _recent: dict[str, int | None] = attrs.field(factory=dict, init=False)
    _trades: TradeSequencer = attrs.field(init=False)
    _klines: KlineBook = attrs.field(init=False)
    _faults: FaultCounter = attrs.field(init=False)
    frames: int = attrs.field(default=0, init=False)
    published: int = attrs.field(default=0, init=False)
    duplicates: int = attrs.field(default=0, init=False)
    bus_rejected: int = attrs.field(default=0, init=False)
    backfills: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        self._trades = TradeSequencer(self._publish, self._ask, self.config, self.backfill)
        self._klines = KlineBook(self._publish, self._ask, self.backfill)
        self._faults = FaultCounter(self.config.fault_log_interval_s)

    # The counters kept by the parts, read as before.
    @property
    def gaps(self) -> int:
        return self._trades.gaps

    @property
    def trades_missing(self) -> int:
        return self._trades.trades_missing

    @property
    def backfilled_trades(self) -> int:
        return self._trades.backfilled_trades

    @property
    def sequence_resets(self) -> int:
        return self._trades.sequence_resets

    @property
    def backfilled_klines(self) -> int:
        return self._klines.backfilled_klines

    @property
    def kline_gaps(self) -> int:
        return self._klines.kline_gaps

    @property
    def backfill_failures(self) -> int:
        return self._trades.backfill_failures + self._klines.backfill_failures

    @property
    def decode_errors(self) -> int:
        return self._faults.decode_errors

    def statistics(self) -> MergerStatistics:
        return MergerStatistics(
            frames=self.frames,
            published=self.published,
            duplicates_dropped=self.duplicates,
            gaps=self.gaps,
            trades_missing=self.trades_missing,
            decode_errors=self.decode_errors,
            held=self._trades.held(),
            bus_rejected=self.bus_rejected,
            faults=MappingProxyType(dict(self._faults.faults)),
            backfills=self.backfills,
            backfilled_trades=self.backfilled_trades,
            backfilled_klines=self.backfilled_klines,
            backfill_failures=self.backfill_failures,
            sequence_resets=self.sequence_resets,
            kline_gaps=self.kline_gaps,
            catch_ups=self._trades.catch_ups,
        )

    def next_deadline(self) -> float:
        """The earliest time :meth:`on_time` has something to do (``inf``: nothing held)."""
        return self._trades.next_deadline()

    def take_backfill_requests(self) -> list[TradeBackfillRequest | KlineBackfillRequest]:
        """The backfill requests made since the last call; the caller answers each one."""
        requests, self.backfill_requests = self.backfill_requests, []
        return requests

    # -- frames -----------------------------------------------------------------------------

    def on_frame(self, source: FrameSource, raw: str | bytes, received_ms: int, now: float) -> None:
        """Dedup, decode and publish one frame; hostile frames are counted and skipped."""
        self.frames += 1
        if isinstance(raw, bytes):
            try:
                raw = raw.decode()
            except UnicodeDecodeError:
                self._faults.frame_fault(source, FAULT_BAD_ENCODING, "not UTF-8", raw, now)
                return
        if len(raw) > MAX_FRAME_CHARS:
            self._faults.frame_fault(source, FAULT_OVERSIZED, f"{len(raw)} characters", "", now)
            return
        # The other connections' copies are usually the very same text as a first copy just
        # taken: one hash lookup drops them, before any key is read.
        recent = self._recent
        if raw in recent:
            event_ms = recent[raw]
            if event_ms is not None:
                source.latency_ms = received_ms - event_ms
            self.duplicates += 1
            return
        data: object = _UNPARSED
        stream = read_stream(raw)
        if stream is None:
            try:
                stream, data = parse_frame(raw)
            except ExchangeProtocolError as exc:
                self._faults.frame_fault(source, fault_kind(exc), str(exc), raw, now)
                return
        route = self._route(stream)
        if route is None:
            self._faults.frame_fault(source, FAULT_UNKNOWN_STREAM, repr(stream[:60]), raw, now)
            return
        kind = route.route.kind
        key = route.read_key(raw)
        # The event time, for the latency figure, without a second scan where the key has it.
        if kind is StreamKind.TRADE:
            event_ms = read_event_time(raw)
        elif kind is StreamKind.DEPTH:
            event_ms = None  # snapshots have no event time
        elif isinstance(key, tuple):
            event_ms = key[1]
        else:
            event_ms = key
        if event_ms is not None:
            source.latency_ms = received_ms - event_ms
        if key is not None and self._is_copy(route.route, key, source, now):
            self.duplicates += 1
            return
        event: MarketEvent
        try:
            fast = None
            if data is _UNPARSED and kind is StreamKind.TRADE:
                # Binance's exact layout: checked and split by one match, no JSON parse. Any
                # other text (or a stream or symbol that disagrees) takes the full path below.
                fast = decode_trade_frame(raw)
                if fast is not None and (fast[0] != stream or fast[1].symbol != route.route.symbol):
                    fast = None
            if fast is not None:
                event = fast[1]
            elif data is not _UNPARSED:
                event = self._decode(route.route, data, received_ms)
            else:
                if kind is StreamKind.DEPTH:
                    # Validated in full now, its levels built when a subscriber reads them.
                    parsed_stream, event = decode_depth_frame(
                        raw, symbol=route.route.symbol, received_ms=received_ms
                    )
                else:
                    parsed_stream, data = parse_frame(raw)
                if parsed_stream != stream:
                    self._faults.frame_fault(source, FAULT_KEY_MISMATCH, "stream name", raw, now)
                    return
                if kind is not StreamKind.DEPTH:
                    event = self._decode(route.route, data, received_ms)
        except ExchangeProtocolError as exc:
            self._faults.frame_fault(source, fault_kind(exc), str(exc), raw, now)
            return
        decoded_key = frame_key_of(event)
        if key is None:
            if self._is_copy(route.route, decoded_key, source, now):
                self.duplicates += 1
                return
        elif decoded_key != key:
            self._faults.frame_fault(
                source, FAULT_KEY_MISMATCH, f"{key!r} != {decoded_key!r}", raw, now
            )
            return
        source.first_delivered += 1
        recent[raw] = event_ms
        if len(recent) > _RECENT_FRAMES:
            del recent[next(iter(recent))]  # the oldest
        if kind is StreamKind.TRADE:
            assert isinstance(event, Trade)
            self._trades.accept(self._trades.sequences[stream], event, now)
        elif kind is StreamKind.KLINE:
            assert isinstance(event, Kline)
            self._klines.accept(route.route, event, now)
        else:
            assert isinstance(decoded_key, int)
            self._last_key[stream] = decoded_key
            self._last_at[stream] = now
            self._publish(event)

    def on_frames(
        self, source: FrameSource, raws: Sequence[str | bytes], received_ms: int, now: float
    ) -> None:
        """:meth:`on_frame` for every frame of one read, then :meth:`on_time` once."""
        on_frame = self.on_frame
        for raw in raws:
            on_frame(source, raw, received_ms, now)
        if self._trades.holding:
            self._trades.on_time(now)

    def on_feed_restored(self, now: float) -> None:
        """A connection is up again after every one was down.

        Each trade stream asks the backfill source for the trades after its newest id (an
        open-ended :class:`TradeBackfillRequest`): otherwise the trades printed during the
        outage would stay unseen until the next one prints. A stream never seen asks nothing;
        one still holding a hole asks once that hole is settled (one request at a time).
        """
        self._trades.catch_up(now)

    def on_close(self, code: int, now: float) -> None:
        """Count a connection closed by the peer with an unexpected close code."""
        if code not in _EXPECTED_CLOSE_CODES:
            self._faults.count(f"close_{code}", f"connection closed with code {code}", now)

    def on_time(self, now: float) -> None:
        """Act on holds whose time is over: ask the backfill source, or give the hole up."""
        self._trades.on_time(now)

    def on_trade_backfill(
        self,
        request: TradeBackfillRequest,
        trades: Sequence[Trade],
        error: str | None,
        now: float,
    ) -> None:
        """The answer to ``request``: the trades REST had, and why it stopped short, if it did.

        Trades that are still missing are published (in order, before the held live ones); ids
        REST did not return become a :class:`FeedGap`. An answer that comes after its hole was
        given up (timeout, overflow, reset) is dropped: its trades would be out of order.
        """
        self._trades.on_backfill(request, trades, error, now)

    def on_kline_backfill(
        self,
        request: KlineBackfillRequest,
        klines: Sequence[Kline],
        error: str | None,
        now: float,
    ) -> None:
        """The answer to ``request``: closed klines are published (late, like a late closed
        frame); the ones REST did not have become a :class:`FeedGap` (ids are open times)."""
        self._klines.on_backfill(request, klines, error, now)

    def _route(self, stream: str) -> _Route | None:
        try:
            return self._routes[stream]
        except KeyError:
            pass
        route = route_for(stream) if self.streams is None or stream in self.streams else None
        entry = None if route is None else _Route(route, KEY_READERS[_MODEL_KIND[route.kind]])
        if len(self._routes) < 4096:  # hostile names are not cached without bound
            self._routes[stream] = entry
        if route is not None and route.kind is StreamKind.TRADE:
            self._trades.sequences.setdefault(stream, TradeSequence(route))
        return entry

    @staticmethod
    def _decode(route: StreamRoute, data: object, received_ms: int) -> MarketEvent:
        kind = route.kind
        if kind is StreamKind.TRADE:
            event: MarketEvent = decode_trade(data)
        elif kind is StreamKind.TICKER:
            event = decode_ticker(data)
        elif kind is StreamKind.DEPTH:
            return decode_depth(data, symbol=route.symbol, received_ms=received_ms)
        else:
            event = decode_kline(data)
        if event.symbol != route.symbol:
            raise ExchangeProtocolError(
                f"{kind.value}: symbol {event.symbol!r} on stream {route.name!r}"
            )
        return event

    def _is_copy(self, route: StreamRoute, key: FrameKey, source: FrameSource, now: float) -> bool:
        """Whether ``key`` was delivered already (or is older); resets a restarted sequence."""
        kind = route.kind
        if kind is StreamKind.TRADE:
            assert isinstance(key, int)
            return self._trades.is_copy(route.name, key, source, now)
        if kind is StreamKind.KLINE:
            assert isinstance(key, tuple)
            return self._klines.is_copy(route, key)
        assert isinstance(key, int)
        last_key = self._last_key.get(route.name)
        if last_key is None or key > last_key:
            return False
        if (
            kind is StreamKind.DEPTH
            and last_key - key >= self.config.reset_min_drop
            and now - self._last_at[route.name] >= self.config.reset_quiet_s
        ):
            self._trades.reset_event(route, last_key, key, source, now)
            del self._last_key[route.name]
            return False
        return True

    # -- publishing and faults ----------------------------------------------------------------

    def _publish(self, event: object) -> None:
        try:
            self.publish(event)
        except trio.WouldBlock:
            self.bus_rejected += 1
            logger.error("ws.merger.bus_rejected type=%s", type(event).__name__)
            return
        self.published += 1
        if self.on_published is not None:
            self.on_published()

    def _ask(self, request: TradeBackfillRequest | KlineBackfillRequest) -> None:
        self.backfills += 1
        self.backfill_requests.append(request)
