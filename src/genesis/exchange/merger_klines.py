"""The merger's kline bookkeeping: which copies are stale, and closed klines that never came.

:class:`KlineBook` is owned by :class:`~genesis.exchange.merger.Merger` (the rules are in its
module's docstring): a newer ``(open time, E)`` wins, a kline's closed frame is never dropped
(even late), and a closed kline that never arrived is asked of the backfill source (REST
``klines``) and published late, or becomes a :class:`~genesis.models.events.FeedGap` whose ids
are open times. Like the merger it never reads a clock: every call takes ``now``.

Logs: ``ws.merger.gap``, ``ws.merger.backfill``.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Final

import attrs

from genesis.exchange.streams import route_for
from genesis.models.events import FeedGap

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from genesis.exchange.streams import StreamRoute
    from genesis.models.market import Kline

__all__ = ["KLINE_INTERVAL_MS", "KlineBackfillRequest", "KlineBook"]

logger = logging.getLogger("genesis.exchange.merger")
"""The merger's logger: the split into modules does not change a log name."""

KLINE_INTERVAL_MS: Final = 60_000
"""The subscribed kline stream is ``kline_1m``."""
_CLOSED_KLINES_KEPT: Final = 8


@attrs.frozen(eq=False)
class KlineBackfillRequest:
    """Closed 1m klines of ``symbol`` opening ``first_open_ms..last_open_ms`` wanted from REST."""

    symbol: str
    stream: str
    first_open_ms: int
    last_open_ms: int


@attrs.define(eq=False)
class _KlineState:
    last: tuple[int, int] | None = None
    """(open time, event time) of the newest update published."""
    closed: deque[int] = attrs.field(factory=lambda: deque(maxlen=_CLOSED_KLINES_KEPT))
    checked_open_ms: int | None = None
    """Every kline opening at or before this is closed or was asked of the backfill source."""
    backfill: KlineBackfillRequest | None = None


@attrs.define(eq=False)
class KlineBook:
    """Per kline stream: the newest update published and the recent closed klines.

    Args:
        publish: The merger's publish (counts, bus refusal, wake-up).
        ask: Queues a backfill request for the merger's backfill runner.
        backfill: Whether a backfill source answers; without one a missing closed kline is a
            :class:`FeedGap` at once.
    """

    publish: Callable[[object], None]
    ask: Callable[[KlineBackfillRequest], None]
    backfill: bool
    _klines: dict[str, _KlineState] = attrs.field(factory=dict, init=False)
    backfilled_klines: int = attrs.field(default=0, init=False)
    backfill_failures: int = attrs.field(default=0, init=False)
    kline_gaps: int = attrs.field(default=0, init=False)

    def _state(self, stream: str) -> _KlineState:
        state = self._klines.get(stream)
        if state is None:
            state = self._klines[stream] = _KlineState()
        return state

    def is_copy(self, route: StreamRoute, key: tuple[int, int, bool]) -> bool:
        state = self._state(route.name)
        open_ms, event_ms, closed = key
        if open_ms in state.closed:
            # That kline's final frame went out already: this is a copy or a stale update.
            return True
        return not closed and state.last is not None and (open_ms, event_ms) <= state.last

    def accept(self, route: StreamRoute, kline: Kline, now: float) -> None:
        state = self._state(route.name)
        open_ms = kline.open_time_ms
        if kline.closed:
            state.closed.append(open_ms)
        order = (open_ms, kline.event_time_ms)
        if state.last is None or order > state.last:
            state.last = order
        self.publish(kline)
        self._check(route, state, open_ms, now)

    def _check(self, route: StreamRoute, state: _KlineState, open_ms: int, now: float) -> None:
        """Ask for closed klines that never arrived: those two or more minutes before the
        newest (the one just before it may still close late, as the rules above allow)."""
        if state.checked_open_ms is None:
            # Klines that closed before the first frame are history, not a gap.
            state.checked_open_ms = open_ms - KLINE_INTERVAL_MS
            return
        settled = open_ms - 2 * KLINE_INTERVAL_MS
        if settled <= state.checked_open_ms:
            return
        missing = [
            t
            for t in range(
                state.checked_open_ms + KLINE_INTERVAL_MS, settled + 1, KLINE_INTERVAL_MS
            )
            if t not in state.closed
        ]
        state.checked_open_ms = settled
        if not missing:
            return
        if not self.backfill or state.backfill is not None:
            self._gap(route, missing[0], missing[-1], "no connection delivered it", now)
            return
        request = KlineBackfillRequest(route.symbol, route.name, missing[0], missing[-1])
        state.backfill = request
        self.ask(request)
        logger.info(
            "ws.merger.backfill stream=%s from_open_ms=%d to_open_ms=%d",
            route.name,
            missing[0],
            missing[-1],
        )

    def on_backfill(
        self,
        request: KlineBackfillRequest,
        klines: Sequence[Kline],
        error: str | None,
        now: float,
    ) -> None:
        """See :meth:`genesis.exchange.merger.Merger.on_kline_backfill`."""
        state = self._state(request.stream)
        if state.backfill is request:
            state.backfill = None
        if error is not None:
            self.backfill_failures += 1
        found = {
            k.open_time_ms: k
            for k in klines
            if k.closed and request.first_open_ms <= k.open_time_ms <= request.last_open_ms
        }
        route = route_for(request.stream)
        assert route is not None
        missing: list[int] = []
        for open_ms in range(request.first_open_ms, request.last_open_ms + 1, KLINE_INTERVAL_MS):
            if open_ms in state.closed:
                continue
            kline = found.get(open_ms)
            if kline is None or kline.symbol != route.symbol:
                missing.append(open_ms)
                continue
            state.closed.append(open_ms)
            self.backfilled_klines += 1
            self.publish(kline)
        if missing:
            reason = f"backfill failed: {error}" if error is not None else "not in REST history"
            self._gap(route, missing[0], missing[-1], reason, now)

    def _gap(
        self, route: StreamRoute, first_open_ms: int, last_open_ms: int, reason: str, now: float
    ) -> None:
        self.kline_gaps += 1
        logger.warning(
            "ws.merger.gap stream=%s first_missing=%d last_missing=%d reason=%s",
            route.name,
            first_open_ms,
            last_open_ms,
            reason,
        )
        self.publish(
            FeedGap(
                symbol=route.symbol,
                stream=route.kind.value,
                first_missing_id=first_open_ms,
                last_missing_id=last_open_ms,
                reason=reason,
                at=now,
            )
        )
