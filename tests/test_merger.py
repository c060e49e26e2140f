"""The merger's pure core, driven frame by frame with explicit times (no Trio, no sockets).

Frames are wire-exact Binance text (``tests/test_ws_manager.py``'s payload builders); every
expectation is written out by hand from the frames the test sends.
"""

from __future__ import annotations

import logging
from decimal import Decimal

import attrs
import orjson
import pytest
import trio

from genesis.exchange.merger import (
    KlineBackfillRequest,
    Merger,
    MergerConfig,
    TradeBackfillRequest,
)
from genesis.exchange.streams import market_streams
from genesis.models.events import FeedGap, SequenceReset
from genesis.models.market import Depth, Kline, Trade
from tests.test_ws_manager import depth_payload, kline_payload, ticker_payload, trade_payload

STREAM = "btcusdt@trade"


@attrs.define
class Source:
    """A connection as the merger sees it (``_Role`` in production)."""

    name: str
    latency_ms: int | None = None
    first_delivered: int = 0


def frame(stream: str, payload: bytes) -> str:
    return '{"stream":"' + stream + '","data":' + payload.decode() + "}"


def trade_frame(trade_id: int, symbol: str = "BTCUSDT") -> str:
    return frame(f"{symbol.lower()}@trade", trade_payload(symbol, trade_id, 1_000 + trade_id))


def trade(trade_id: int) -> Trade:
    return Trade(
        symbol="BTCUSDT",
        trade_id=trade_id,
        price=Decimal("1"),
        quantity=Decimal("1"),
        trade_time_ms=trade_id,
        event_time_ms=trade_id,
        buyer_is_maker=False,
    )


def collector(**config: object) -> tuple[Merger, list[object]]:
    out: list[object] = []
    merger = Merger(
        out.append,
        MergerConfig(**config),  # type: ignore[arg-type]
        backfill=True,
        streams=frozenset(market_streams(["BTCUSDT"])),
    )
    return merger, out


def ids(events: list[object]) -> list[object]:
    """Trade ids, and FeedGap / SequenceReset as tuples, in publication order."""
    result: list[object] = []
    for e in events:
        if isinstance(e, Trade):
            result.append(e.trade_id)
        elif isinstance(e, FeedGap):
            result.append(("gap", e.first_missing_id, e.last_missing_id))
        elif isinstance(e, SequenceReset):
            result.append(("reset", e.previous_high, e.new_first))
    return result


A, B, C = Source("a"), Source("b"), Source("c")


def test_copies_are_dropped_and_the_first_copy_is_credited() -> None:
    merger, out = collector()
    a, b = Source("a"), Source("b")
    merger.on_frame(a, trade_frame(1), 1_010, 0.0)
    merger.on_frame(b, trade_frame(1), 1_030, 0.0)
    merger.on_frame(b, trade_frame(2), 1_012, 0.0)
    merger.on_frame(a, trade_frame(2).encode(), 1_015, 0.0)  # bytes frames too
    assert ids(out) == [1, 2]
    assert (a.first_delivered, b.first_delivered) == (1, 1)
    assert (a.latency_ms, b.latency_ms) == (1_015 - 1_002, 1_012 - 1_002)
    stats = merger.statistics()
    assert (stats.frames, stats.published, stats.duplicates_dropped) == (4, 2, 2)


def test_a_hole_is_backfilled_before_the_live_trades_behind_it() -> None:
    merger, out = collector(gap_hold_s=0.2)
    merger.on_frame(A, trade_frame(1), 0, 1.0)
    merger.on_frame(A, trade_frame(5), 0, 1.1)  # 2..4 missing on every connection
    merger.on_frame(A, trade_frame(6), 0, 1.15)
    assert merger.next_deadline() == pytest.approx(1.3)
    merger.on_time(1.25)
    assert merger.take_backfill_requests() == []
    merger.on_time(1.3)
    (request,) = merger.take_backfill_requests()
    assert isinstance(request, TradeBackfillRequest)
    assert (request.symbol, request.first_id, request.last_id) == ("BTCUSDT", 2, 4)
    merger.on_frame(A, trade_frame(7), 0, 1.4)  # live trades keep arriving: held
    assert ids(out) == [1]
    assert merger.statistics().held == 3
    merger.on_trade_backfill(request, [trade(2), trade(3), trade(4), trade(5)], None, 1.5)
    assert ids(out) == [1, 2, 3, 4, 5, 6, 7]
    stats = merger.statistics()
    assert (stats.backfills, stats.backfilled_trades, stats.gaps, stats.held) == (1, 3, 0, 0)
    assert merger.next_deadline() == float("inf")


def test_ids_rest_does_not_have_become_a_feed_gap_in_place(
    caplog: pytest.LogCaptureFixture,
) -> None:
    merger, out = collector()
    merger.on_frame(A, trade_frame(1), 0, 0.0)
    merger.on_frame(A, trade_frame(10), 0, 0.0)
    merger.on_time(0.2)
    (request,) = merger.take_backfill_requests()
    assert isinstance(request, TradeBackfillRequest)
    merger.on_trade_backfill(request, [trade(6), trade(7), trade(8), trade(9)], None, 0.3)
    assert ids(out) == [1, ("gap", 2, 5), 6, 7, 8, 9, 10]
    gap = out[1]
    assert isinstance(gap, FeedGap)
    assert (gap.symbol, gap.stream, gap.missing, gap.at) == ("BTCUSDT", "trade", 4, 0.3)
    assert "ws.merger.gap stream=btcusdt@trade first_missing=2 last_missing=5" in caplog.text
    assert merger.statistics().trades_missing == 4


def test_a_backfill_that_times_out_releases_the_hold_and_its_late_answer_is_dropped() -> None:
    merger, out = collector(backfill_timeout_s=5.0)
    merger.on_frame(A, trade_frame(1), 0, 0.0)
    merger.on_frame(A, trade_frame(4), 0, 0.0)
    merger.on_time(0.2)
    (request,) = merger.take_backfill_requests()
    assert isinstance(request, TradeBackfillRequest)
    assert merger.next_deadline() == pytest.approx(5.2)
    merger.on_time(5.2)
    assert ids(out) == [1, ("gap", 2, 3), 4]
    merger.on_trade_backfill(request, [trade(2), trade(3)], None, 6.0)  # too late
    merger.on_frame(A, trade_frame(5), 0, 6.0)
    assert ids(out) == [1, ("gap", 2, 3), 4, 5]
    assert merger.statistics().backfill_failures == 1


def test_a_failed_backfill_names_its_reason_in_the_gap() -> None:
    merger, out = collector()
    merger.on_frame(A, trade_frame(1), 0, 0.0)
    merger.on_frame(A, trade_frame(4), 0, 0.0)
    merger.on_time(0.2)
    (request,) = merger.take_backfill_requests()
    assert isinstance(request, TradeBackfillRequest)
    merger.on_trade_backfill(request, [trade(2)], "CircuitOpenError: rest open", 0.5)
    assert ids(out) == [1, 2, ("gap", 3, 3), 4]
    gap = out[2]
    assert isinstance(gap, FeedGap)
    assert gap.reason == "backfill failed: CircuitOpenError: rest open"


def test_without_a_backfill_source_a_hole_is_a_gap_after_the_hold() -> None:
    out: list[object] = []
    merger = Merger(out.append, MergerConfig(gap_hold_s=0.2))
    merger.on_frame(A, trade_frame(1), 0, 0.0)
    merger.on_frame(A, trade_frame(3), 0, 0.0)
    merger.on_frame(B, trade_frame(2), 0, 0.1)  # another connection fills it in time
    merger.on_frame(A, trade_frame(6), 0, 0.5)
    merger.on_time(0.7)
    assert ids(out) == [1, 2, 3, ("gap", 4, 5), 6]
    assert merger.take_backfill_requests() == []


def test_the_hold_is_bounded_while_a_backfill_is_in_flight() -> None:
    merger, out = collector(max_held_trades=2, backfill_hold_trades=3)
    merger.on_frame(A, trade_frame(1), 0, 0.0)
    for trade_id in (5, 6, 7):  # more than max_held_trades: the backfill is asked at once
        merger.on_frame(A, trade_frame(trade_id), 0, 0.0)
    (request,) = merger.take_backfill_requests()
    assert isinstance(request, TradeBackfillRequest)
    assert (request.first_id, request.last_id) == (2, 4)
    merger.on_frame(A, trade_frame(8), 0, 0.01)  # 4 held > 3: given up, the feed moves on
    assert ids(out) == [1, ("gap", 2, 4), 5, 6, 7, 8]
    merger.on_trade_backfill(request, [trade(2)], None, 0.5)
    assert ids(out)[-1] == 8


def caught_up(**config: object) -> tuple[Merger, list[object], TradeBackfillRequest]:
    """Trade 1 seen at 0 s, every connection down until one is up at 5 s: the catch-up it asks."""
    merger, out = collector(**config)
    merger.on_frame(A, trade_frame(1), 0, 0.0)
    merger.on_feed_restored(5.0)
    (request,) = merger.take_backfill_requests()
    assert isinstance(request, TradeBackfillRequest)
    return merger, out, request


def test_after_every_connection_was_down_a_quiet_stream_asks_rest_for_what_it_missed() -> None:
    merger, out = collector()
    merger.on_frame(A, trade_frame(1), 0, 0.0)
    merger.on_frame(A, trade_frame(2), 0, 0.5)
    merger.on_feed_restored(5.0)  # a connection is up at 5 s after every one was down
    (request,) = merger.take_backfill_requests()
    assert isinstance(request, TradeBackfillRequest)
    assert (request.symbol, request.first_id, request.last_id) == ("BTCUSDT", 3, 10_002)
    assert request.open_ended
    merger.on_frame(A, trade_frame(7), 0, 5.1)  # live again: held behind the catch-up
    merger.on_time(5.4)  # past gap_hold_s: no second request while the catch-up is out
    assert merger.take_backfill_requests() == []
    assert ids(out) == [1, 2]
    merger.on_trade_backfill(request, [trade(3), trade(4), trade(6)], None, 5.5)
    assert ids(out) == [1, 2, 3, 4, ("gap", 5, 5), 6, 7]
    stats = merger.statistics()
    assert (stats.backfills, stats.backfilled_trades, stats.gaps, stats.held) == (1, 3, 1, 0)
    assert stats.catch_ups == 1
    assert merger.next_deadline() == float("inf")


def test_a_catch_up_that_finds_the_end_of_history_reports_no_gap() -> None:
    merger, out, request = caught_up()
    merger.on_trade_backfill(request, [trade(2), trade(3)], None, 5.2)
    assert merger.next_deadline() == float("inf")
    merger.on_frame(A, trade_frame(4), 0, 6.0)  # the next live trade follows at once
    assert ids(out) == [1, 2, 3, 4]
    assert merger.statistics().gaps == 0
    # Nothing printed during the outage: an empty answer is no gap either.
    merger.on_feed_restored(9.0)
    (quiet,) = merger.take_backfill_requests()
    assert isinstance(quiet, TradeBackfillRequest)
    assert quiet.first_id == 5
    merger.on_trade_backfill(quiet, [], None, 9.1)
    merger.on_frame(A, trade_frame(5), 0, 9.2)
    assert ids(out) == [1, 2, 3, 4, 5]
    assert merger.statistics().gaps == 0


def test_live_trades_past_a_short_catch_up_answer_get_a_hold_of_their_own_not_a_gap() -> None:
    merger, out, request = caught_up()
    merger.on_frame(A, trade_frame(9), 0, 5.1)  # printed after REST answered, 5..8 in flight
    merger.on_trade_backfill(request, [trade(2), trade(3), trade(4)], None, 5.2)
    assert ids(out) == [1, 2, 3, 4]  # 5..8 are not given up yet
    merger.on_frame(B, trade_frame(6), 0, 5.25)
    merger.on_time(5.4)  # gap_hold_s after the answer: 5, 7 and 8 are asked of REST
    (hole,) = merger.take_backfill_requests()
    assert isinstance(hole, TradeBackfillRequest)
    assert (hole.first_id, hole.last_id, hole.open_ended) == (5, 8, False)
    merger.on_trade_backfill(hole, [trade(5), trade(6), trade(7), trade(8)], None, 5.5)
    assert ids(out) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert merger.statistics().gaps == 0


def test_no_catch_up_for_a_stream_never_seen_or_without_a_backfill_source() -> None:
    never_seen, _ = collector()
    never_seen.on_feed_restored(1.0)
    assert never_seen.take_backfill_requests() == []
    out: list[object] = []
    without_rest = Merger(out.append, MergerConfig())
    without_rest.on_frame(A, trade_frame(1), 0, 0.0)
    without_rest.on_feed_restored(5.0)
    assert without_rest.take_backfill_requests() == []
    assert without_rest.next_deadline() == float("inf")


def test_a_stream_holding_a_hole_catches_up_once_the_hole_is_settled() -> None:
    merger, out = collector()
    merger.on_frame(A, trade_frame(1), 0, 0.0)
    merger.on_frame(A, trade_frame(4), 0, 0.1)  # 2 and 3 missing
    merger.on_time(0.35)
    (hole,) = merger.take_backfill_requests()
    assert isinstance(hole, TradeBackfillRequest)
    merger.on_feed_restored(5.0)  # every connection was down meanwhile: 5.. may be missed too
    assert merger.take_backfill_requests() == []  # one request per stream at a time
    merger.on_trade_backfill(hole, [trade(2), trade(3)], None, 5.1)
    assert ids(out) == [1, 2, 3, 4]
    (catch_up,) = merger.take_backfill_requests()
    assert isinstance(catch_up, TradeBackfillRequest)
    assert (catch_up.first_id, catch_up.open_ended) == (5, True)
    merger.on_trade_backfill(catch_up, [trade(5), trade(6)], None, 5.2)
    assert ids(out) == [1, 2, 3, 4, 5, 6]
    # A hole settled by a live copy, or given up at its deadline, catches up the same way.
    merger.on_frame(A, trade_frame(8), 0, 6.0)
    merger.on_feed_restored(6.05)
    merger.on_frame(B, trade_frame(7), 0, 6.1)  # the other connection fills the hole
    (after_live,) = merger.take_backfill_requests()
    assert isinstance(after_live, TradeBackfillRequest)
    assert after_live.first_id == 9
    merger.on_trade_backfill(after_live, [], None, 6.2)
    merger.on_frame(A, trade_frame(11), 0, 7.0)
    merger.on_feed_restored(7.05)
    merger.on_time(7.25)  # the hole's hold is over: its backfill is asked first
    (second_hole,) = merger.take_backfill_requests()
    assert isinstance(second_hole, TradeBackfillRequest)
    assert (second_hole.first_id, second_hole.last_id) == (9, 10)
    merger.on_time(17.3)  # REST never answers: the hole is given up, then the catch-up
    (after_timeout,) = merger.take_backfill_requests()
    assert isinstance(after_timeout, TradeBackfillRequest)
    assert (after_timeout.first_id, after_timeout.open_ended) == (12, True)
    assert ids(out) == [1, 2, 3, 4, 5, 6, 7, 8, ("gap", 9, 10), 11]
    assert merger.statistics().catch_ups == 3


def test_a_sequence_reset_drops_a_deferred_catch_up() -> None:
    merger, out = collector(reset_min_drop=100, reset_quiet_s=1.0)
    merger.on_frame(A, trade_frame(500), 0, 0.0)
    merger.on_frame(A, trade_frame(502), 0, 0.1)  # 501 held
    merger.on_feed_restored(0.15)  # deferred behind the hole
    merger.on_frame(A, trade_frame(3), 0, 2.0)  # the exchange restarted its ids
    merger.on_frame(A, trade_frame(4), 0, 2.1)
    merger.on_frame(A, trade_frame(6), 0, 2.2)  # a hole in the new sequence ...
    merger.on_frame(B, trade_frame(5), 0, 2.25)  # ... settled: no catch-up is left to ask
    assert ids(out) == [500, ("gap", 501, 501), 502, ("reset", 502, 3), 3, 4, 5, 6]
    assert merger.take_backfill_requests() == []
    assert merger.statistics().catch_ups == 0


def test_a_catch_up_that_fills_its_window_leaves_the_rest_to_an_ordinary_hole() -> None:
    merger, out, request = caught_up(max_backfill_trades=3)
    assert (request.first_id, request.last_id) == (2, 4)
    merger.on_frame(A, trade_frame(9), 0, 5.1)
    merger.on_trade_backfill(request, [trade(2), trade(3), trade(4)], None, 5.2)
    assert ids(out) == [1, 2, 3, 4]  # 5..8: not yet known to be missing, and 9 held
    merger.on_time(5.4)
    (hole,) = merger.take_backfill_requests()
    assert isinstance(hole, TradeBackfillRequest)
    assert (hole.first_id, hole.last_id, hole.open_ended) == (6, 8, False)  # the newest 3
    merger.on_trade_backfill(hole, [trade(6), trade(7), trade(8)], None, 5.5)
    assert ids(out) == [1, 2, 3, 4, ("gap", 5, 5), 6, 7, 8, 9]


def test_a_failed_or_late_catch_up_costs_no_trade() -> None:
    merger, out, failed = caught_up(backfill_timeout_s=5.0)
    merger.on_trade_backfill(failed, [], "CircuitOpenError: rest open", 5.1)
    assert merger.statistics().backfill_failures == 1
    assert merger.next_deadline() == float("inf")
    merger.on_feed_restored(8.0)
    (late,) = merger.take_backfill_requests()
    assert isinstance(late, TradeBackfillRequest)
    merger.on_frame(A, trade_frame(2), 0, 8.5)  # live, consecutive: published at once
    merger.on_time(13.0)  # the catch-up timed out
    merger.on_trade_backfill(late, [trade(2), trade(3)], None, 14.0)  # dropped: too late
    merger.on_frame(A, trade_frame(3), 0, 14.1)
    assert ids(out) == [1, 2, 3]
    assert merger.statistics().backfill_failures == 2


def test_a_restarted_sequence_is_reset_and_fresh_trades_flow_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    merger, out = collector(reset_min_drop=100, reset_quiet_s=1.0)
    for trade_id in range(500, 503):
        merger.on_frame(A, trade_frame(trade_id), 0, 1.0)
    merger.on_frame(B, trade_frame(450), 0, 1.5)  # far below, but the old sequence is live
    merger.on_frame(A, trade_frame(1), 0, 1.9)
    assert ids(out) == [500, 501, 502]
    merger.on_frame(A, trade_frame(1), 0, 2.0)  # quiet for 1 s: the exchange restarted
    merger.on_frame(B, trade_frame(1), 0, 2.0)
    merger.on_frame(A, trade_frame(2), 0, 2.0)
    assert ids(out) == [500, 501, 502, ("reset", 502, 1), 1, 2]
    reset = out[3]
    assert isinstance(reset, SequenceReset)
    assert (reset.symbol, reset.stream, reset.role, reset.at) == ("BTCUSDT", "trade", "a", 2.0)
    assert merger.statistics().sequence_resets == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "ws.merger.sequence_reset stream=btcusdt@trade previous_high=502 new_first=1 role=a"
    ]


def test_a_depth_sequence_reset() -> None:
    merger, out = collector(reset_min_drop=100, reset_quiet_s=1.0)
    merger.on_frame(A, frame("btcusdt@depth20@100ms", depth_payload(5000)), 0, 0.0)
    merger.on_frame(A, frame("btcusdt@depth20@100ms", depth_payload(4999)), 0, 0.5)
    merger.on_frame(A, frame("btcusdt@depth20@100ms", depth_payload(7)), 0, 2.0)
    merger.on_frame(B, frame("btcusdt@depth20@100ms", depth_payload(7)), 0, 2.0)
    depths = [e.last_update_id for e in out if isinstance(e, Depth)]
    assert depths == [5000, 7]
    assert [type(e) for e in out] == [Depth, SequenceReset, Depth]


def test_depth_ticker_and_kline_keep_the_newest() -> None:
    merger, out = collector()
    merger.on_frame(A, frame("btcusdt@ticker", ticker_payload("BTCUSDT", 10)), 0, 0.0)
    merger.on_frame(B, frame("btcusdt@ticker", ticker_payload("BTCUSDT", 9)), 0, 0.0)
    merger.on_frame(
        B, frame("btcusdt@kline_1m", kline_payload("BTCUSDT", 0, 5, closed=False)), 0, 0
    )
    merger.on_frame(
        A, frame("btcusdt@kline_1m", kline_payload("BTCUSDT", 0, 5, closed=False)), 0, 0
    )
    merger.on_frame(
        A, frame("btcusdt@kline_1m", kline_payload("BTCUSDT", 60_000, 61_000, closed=False)), 0, 0
    )
    merger.on_frame(
        B, frame("btcusdt@kline_1m", kline_payload("BTCUSDT", 0, 60_000, closed=True)), 0, 0
    )
    merger.on_frame(
        A, frame("btcusdt@kline_1m", kline_payload("BTCUSDT", 0, 60_000, closed=True)), 0, 0
    )
    assert [type(e).__name__ for e in out] == ["Ticker", "Kline", "Kline", "Kline"]
    klines = [(e.open_time_ms, e.closed) for e in out if isinstance(e, Kline)]
    assert klines == [(0, False), (60_000, False), (0, True)]  # the late closed frame still goes


def kline_frame(open_ms: int, event_ms: int, *, closed: bool) -> str:
    return frame("btcusdt@kline_1m", kline_payload("BTCUSDT", open_ms, event_ms, closed=closed))


def rest_kline(open_ms: int) -> Kline:
    return Kline(
        symbol="BTCUSDT",
        interval="1m",
        event_time_ms=open_ms + 59_999,
        open_time_ms=open_ms,
        close_time_ms=open_ms + 59_999,
        first_trade_id=-1,
        last_trade_id=-1,
        open_price=Decimal(1),
        close_price=Decimal(1),
        high_price=Decimal(1),
        low_price=Decimal(1),
        volume=Decimal(0),
        quote_volume=Decimal(0),
        taker_buy_volume=Decimal(0),
        taker_buy_quote_volume=Decimal(0),
        trade_count=0,
        closed=True,
    )


def test_closed_klines_missed_by_every_connection_are_backfilled() -> None:
    merger, out = collector()
    minute = 60_000
    merger.on_frame(A, kline_frame(0, 10, closed=False), 0, 0.0)
    merger.on_frame(A, kline_frame(0, minute, closed=True), 0, 60.0)
    # Every connection down from minute 1 to minute 4: klines 1, 2 and 3 never closed here.
    merger.on_frame(A, kline_frame(4 * minute, 4 * minute + 5, closed=False), 0, 240.0)
    (request,) = merger.take_backfill_requests()
    assert isinstance(request, KlineBackfillRequest)
    assert (request.first_open_ms, request.last_open_ms) == (minute, 2 * minute)
    merger.on_kline_backfill(request, [rest_kline(minute)], None, 241.0)
    published = [(e.open_time_ms, e.closed) for e in out if isinstance(e, Kline)]
    assert published == [(0, False), (0, True), (4 * minute, False), (minute, True)]
    gap = out[-1]
    assert isinstance(gap, FeedGap)
    assert (gap.stream, gap.first_missing_id, gap.last_missing_id) == (
        "kline_1m",
        2 * minute,
        2 * minute,
    )
    stats = merger.statistics()
    assert (stats.backfilled_klines, stats.kline_gaps) == (1, 1)


# -- hostile input ----------------------------------------------------------------------------

TRADE = orjson.loads(trade_payload("BTCUSDT", 7, 1_000))


def with_field(**changes: object) -> str:
    data = dict(TRADE)
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    return frame(STREAM, orjson.dumps(data))


HOSTILE: list[tuple[str | bytes, str]] = [
    ('{"stream":"btcusdt@trade","data":{"e":"trade"', "invalid_json"),
    ("not json at all", "invalid_json"),
    (b"\xff\xfe", "bad_encoding"),
    ('["a", "list"]', "not_a_frame"),
    ('{"stream":"btcusdt@trade"}', "not_a_frame"),
    ('{"stream":"dogeusdt@trade","data":{}}', "unknown_stream"),
    ('{"stream":"btcusdt@aggTrade","data":{}}', "unknown_stream"),
    (with_field(p=None), "missing_field"),
    (with_field(t="7"), "bad_type"),
    (with_field(p=1.5), "bad_type"),
    (with_field(p="NaN"), "bad_number"),
    (with_field(q="Infinity"), "bad_number"),
    (with_field(p="1e"), "bad_number"),
    (with_field(p="-1.0"), "bad_value"),
    (with_field(e="aggTrade"), "bad_payload"),
    (with_field(s="ETHUSDT"), "bad_payload"),
    (
        '{"stream":"btcusdt@trade","data":' + '{"t":7,' * 1 + '"x":"' + "a" * (1 << 20) + '"}}',
        "oversized",
    ),
]


@pytest.mark.parametrize(("raw", "kind"), HOSTILE)
def test_hostile_frames_are_counted_by_kind_and_never_stop_the_feed(
    raw: str | bytes, kind: str
) -> None:
    merger, out = collector()
    merger.on_frame(A, raw, 0, 0.0)
    merger.on_frame(B, trade_frame(7), 0, 0.0)  # the good copy is not shadowed
    merger.on_frame(A, trade_frame(8), 0, 0.0)
    assert ids(out) == [7, 8]
    stats = merger.statistics()
    assert stats.faults == {kind: 1}
    assert stats.decode_errors == 1


def test_a_raw_key_that_disagrees_with_the_payload_is_refused() -> None:
    merger, out = collector()
    # The text reader finds "t":5 inside the ignored key "x" first; the decoded id is 9.
    merger.on_frame(
        A, frame(STREAM, b'{"x":{"t":5,"y":1},' + trade_payload("BTCUSDT", 9, 1)[1:]), 0, 0
    )
    merger.on_frame(B, trade_frame(9), 0, 0.0)
    assert ids(out) == [9]
    assert merger.statistics().faults == {"key_mismatch": 1}


def test_each_fault_kind_is_logged_once_per_minute(caplog: pytest.LogCaptureFixture) -> None:
    merger, _ = collector()
    for now in (0.0, 1.0, 59.0, 60.0, 61.0):
        merger.on_frame(A, "junk", 0, now)
        merger.on_frame(A, '{"stream":"x@y","data":1}', 0, now)
    merger.on_close(1000, 61.0)
    merger.on_close(1001, 61.0)
    merger.on_close(1008, 61.0)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [line.split(" role=")[0].split(" connection")[0] for line in lines] == [
        "ws.merger.fault kind=invalid_json count=1",
        "ws.merger.fault kind=unknown_stream count=1",
        "ws.merger.fault kind=invalid_json count=4",
        "ws.merger.fault kind=unknown_stream count=4",
        "ws.merger.fault kind=close_1008 count=1",
    ]
    assert merger.statistics().faults == {"invalid_json": 5, "unknown_stream": 5, "close_1008": 1}


def test_a_bus_refusing_an_event_is_counted() -> None:
    def refuse(event: object) -> None:
        raise trio.WouldBlock

    merger = Merger(refuse)
    merger.on_frame(A, trade_frame(1), 0, 0.0)
    assert (merger.statistics().bus_rejected, merger.statistics().published) == (1, 0)


def test_identical_copies_are_dropped_and_still_time_their_connection() -> None:
    merger, out = collector()
    first, late = Source("execution"), Source("backup")
    merger.on_frames(first, [trade_frame(1), trade_frame(2)], 1_010, 0.0)
    # The same text from another connection, 30 ms later (new str objects, as from a socket).
    merger.on_frames(late, ["".join(trade_frame(1)), "".join(trade_frame(2))], 1_040, 0.0)
    assert ids(out) == [1, 2]
    assert merger.statistics().duplicates_dropped == 2
    assert (first.first_delivered, late.first_delivered) == (2, 0)
    assert first.latency_ms == 1_010 - 1_002  # event time E of trade 2
    assert late.latency_ms == 1_040 - 1_002


def test_a_refused_copy_is_not_remembered_as_a_first_copy() -> None:
    merger, out = collector()
    bad = trade_frame(1).replace('"p":"0.00100000"', '"p":"-1"')
    merger.on_frame(Source("execution"), bad, 0, 0.0)
    merger.on_frame(Source("backup"), "".join(bad), 0, 0.0)
    merger.on_frame(Source("monitoring"), trade_frame(1), 0, 0.0)
    assert ids(out) == [1]
    assert merger.statistics().decode_errors == 2  # both bad copies refused, none "duplicate"
    assert merger.statistics().duplicates_dropped == 0
