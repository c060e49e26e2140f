"""Codec: Binance wire JSON → typed events, on our own fixtures and on ../shared where present."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import TYPE_CHECKING

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from genesis.errors import ExchangeProtocolError
from genesis.models import Depth, Kline, PriceLevel, Ticker, Trade
from genesis.models.codec import (
    decode_depth,
    decode_frame,
    decode_kline,
    decode_stream_payload,
    decode_ticker,
    decode_trade,
    event_to_record,
    make_converter,
    parse_decimal,
)

if TYPE_CHECKING:
    from pathlib import Path

# Our own fixtures, written from the documented formats (FACTS.md §8) with our own values.
TRADE = {
    "e": "trade",
    "E": 1767225600123,
    "s": "BTCUSDT",
    "t": 4000001,
    "p": "60123.45000000",
    "q": "0.01250000",
    "T": 1767225600120,
    "m": False,
    "M": True,
}
TICKER = {
    "e": "24hrTicker",
    "E": 1767225601000,
    "s": "ETHUSDT",
    "p": "-12.50000000",
    "P": "-0.415",
    "w": "3001.12000000",
    "x": "3012.50000000",
    "c": "3000.00000000",
    "Q": "0.50000000",
    "b": "2999.99000000",
    "B": "3.10000000",
    "a": "3000.01000000",
    "A": "1.20000000",
    "o": "3012.50000000",
    "h": "3050.00000000",
    "l": "2950.00000000",
    "v": "1234.56780000",
    "q": "3705000.12000000",
    "O": 1767139201000,
    "C": 1767225601000,
    "F": 100,
    "L": 5100,
    "n": 5001,
}
DEPTH20 = {
    "lastUpdateId": 991,
    "bids": [["60000.00000000", "1.50000000"], ["59999.99000000", "0.20000000"]],
    "asks": [["60000.01000000", "0.75000000"]],
}
KLINE = {
    "e": "kline",
    "E": 1767225602000,
    "s": "BTCUSDT",
    "k": {
        "t": 1767225600000,
        "T": 1767225659999,
        "s": "BTCUSDT",
        "i": "1m",
        "f": 4000001,
        "L": 4000042,
        "o": "60123.45000000",
        "c": "60130.00000000",
        "h": "60140.00000000",
        "l": "60100.00000000",
        "v": "3.25000000",
        "n": 42,
        "x": False,
        "q": "195400.10000000",
        "V": "1.50000000",
        "Q": "90195.00000000",
        "B": "0",
    },
}


def test_trade_decodes_with_exact_decimals() -> None:
    trade = decode_trade(TRADE)
    assert trade == Trade(
        symbol="BTCUSDT",
        trade_id=4000001,
        price=Decimal("60123.45000000"),
        quantity=Decimal("0.01250000"),
        trade_time_ms=1767225600120,
        event_time_ms=1767225600123,
        buyer_is_maker=False,
    )
    assert isinstance(trade.price, Decimal)


def test_trade_ignores_removed_buyer_seller_ids_and_unknown_keys() -> None:
    old = {**TRADE, "b": 88, "a": 50, "st": 1}
    assert decode_trade(old) == decode_trade(TRADE)


def test_ticker_decodes_negative_change_and_spread() -> None:
    ticker = decode_ticker(TICKER)
    assert ticker.price_change == Decimal("-12.5")
    assert ticker.best_bid == Decimal("2999.99")
    assert ticker.spread == Decimal("0.02")
    assert ticker.spread_bps == Decimal("0.02") / Decimal("3000.00") * 10_000
    assert ticker.trade_count == 5001


def test_depth_decodes_levels_in_order_with_symbol_from_stream() -> None:
    event = decode_stream_payload("btcusdt@depth20@100ms", DEPTH20, received_ms=7)
    assert isinstance(event, Depth)
    assert event.symbol == "BTCUSDT"
    assert event.received_ms == 7
    assert event.bids == (
        PriceLevel(Decimal("60000.00000000"), Decimal("1.5")),
        PriceLevel(Decimal("59999.99"), Decimal("0.2")),
    )
    assert event.best_ask == PriceLevel(Decimal("60000.01"), Decimal("0.75"))
    spread = event.spread_bps
    assert spread is not None
    assert spread == Decimal("0.01") / Decimal("60000.005") * 10_000


def test_depth_with_an_empty_side_has_no_spread() -> None:
    event = decode_depth({"lastUpdateId": 1, "bids": [], "asks": []}, symbol="BTCUSDT")
    assert event.spread_bps is None
    assert event.best_bid is None


def test_kline_decodes_open_and_closed() -> None:
    kline = decode_kline(KLINE)
    assert kline.interval == "1m"
    assert kline.close_price == Decimal("60130")
    assert kline.closed is False
    closed = decode_kline({**KLINE, "k": {**KLINE["k"], "x": True}})  # type: ignore[dict-item]
    assert closed.closed is True


def test_combined_frame_routes_by_stream_name() -> None:
    raw = orjson.dumps({"stream": "btcusdt@trade", "data": TRADE})
    stream, event = decode_frame(raw)
    assert stream == "btcusdt@trade"
    assert isinstance(event, Trade)


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({**TRADE, "p": 60123.45}, "decimal string"),  # a float near money is a bug
        ({**TRADE, "p": "NaN"}, "finite"),
        ({**TRADE, "p": "abc"}, "decimal"),
        ({**TRADE, "p": "-1"}, "non-negative"),
        ({k: v for k, v in TRADE.items() if k != "t"}, "missing key 't'"),
        ({**TRADE, "t": "12"}, "integer"),
        ({**TRADE, "m": 1}, "boolean"),
        ({**TRADE, "e": "aggTrade"}, "not 'trade'"),
        ({**TRADE, "s": "btc-usdt"}, "symbol"),
        ([1, 2], "JSON object"),
    ],
)
def test_malformed_trade_is_a_typed_protocol_error(payload: object, needle: str) -> None:
    with pytest.raises(ExchangeProtocolError, match=needle):
        decode_trade(payload)


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"[]",
        b'{"stream": 5, "data": {}}',
        b'{"stream": "btcusdt@trade"}',
        b'{"stream": "BTCUSDT@trade", "data": {}}',
        b'{"stream": "btcusdt@bookTicker", "data": {}}',
        orjson.dumps({"stream": "btcusdt@depth20", "data": {**DEPTH20, "bids": [["1"]]}}),
        orjson.dumps({"stream": "btcusdt@kline_1m", "data": {**KLINE, "k": []}}),
    ],
)
def test_malformed_frames_raise_protocol_error(raw: bytes) -> None:
    with pytest.raises(ExchangeProtocolError):
        decode_frame(raw)


def test_record_is_json_with_decimals_as_strings() -> None:
    record = event_to_record(decode_stream_payload("btcusdt@depth20@100ms", DEPTH20))
    assert record["type"] == "Depth"
    assert record["symbol"] == "BTCUSDT"
    assert record["bids"] == [["60000.00000000", "1.50000000"], ["59999.99000000", "0.20000000"]]
    text = json.dumps(record)
    assert "60000.00000000" in text
    trade_record = event_to_record(decode_trade(TRADE))
    assert trade_record["price"] == "60123.45000000"
    with pytest.raises(TypeError):
        event_to_record(object())


def test_converter_uses_wire_rules() -> None:
    converter = make_converter()
    assert converter.structure(TRADE, Trade) == decode_trade(TRADE)
    assert converter.structure(TICKER, Ticker) == decode_ticker(TICKER)
    assert converter.structure(KLINE, Kline) == decode_kline(KLINE)
    assert converter.structure("1.10", Decimal) == Decimal("1.10")
    assert converter.unstructure(Decimal("1.10")) == "1.10"


@given(
    price=st.decimals(min_value=0, max_value=10**9, places=8, allow_nan=False),
    qty=st.decimals(min_value=0, max_value=10**6, places=8, allow_nan=False),
    trade_id=st.integers(min_value=0, max_value=2**63 - 1),
)
def test_trade_round_trips_through_wire_strings(
    price: Decimal, qty: Decimal, trade_id: int
) -> None:
    wire = {**TRADE, "p": f"{price:.8f}", "q": f"{qty:.8f}", "t": trade_id}
    trade = decode_trade(orjson.loads(orjson.dumps(wire)))
    assert trade.price == price
    assert trade.quantity == qty
    assert event_to_record(trade)["price"] == f"{price:.8f}"


def test_parse_decimal_accepts_ints_but_not_bools() -> None:
    assert parse_decimal(5) == Decimal(5)
    with pytest.raises(ValueError):
        parse_decimal(True)


# --- conformance on ../shared (skipped where it is absent) ------------------------------


def test_documented_samples_decode(shared_dir: Path) -> None:
    samples = json.loads((shared_dir / "binance" / "samples.json").read_text())
    assert isinstance(decode_trade(samples["ws.trade"]), Trade)
    assert isinstance(decode_ticker(samples["ws.ticker"]), Ticker)
    assert isinstance(decode_kline(samples["ws.kline_1m"]), Kline)
    depth = decode_depth(samples["ws.depth20"], symbol="BNBBTC")
    assert depth.last_update_id == samples["ws.depth20"]["lastUpdateId"]
    rest_depth = decode_depth(samples["rest.depth"], symbol="BNBBTC")
    assert rest_depth.bids
    combined = samples["ws.combined.trade"]
    stream, event = decode_frame(orjson.dumps(combined))
    assert stream == combined["stream"]
    assert isinstance(event, Trade)


def test_recorded_frames_decode(shared_dir: Path) -> None:
    recorded = shared_dir / "binance" / "recorded"
    trade = json.loads((recorded / "nautilus/resources/ws_messages/ws_spot_trade.json").read_text())
    stream, event = decode_frame(orjson.dumps(trade))
    assert isinstance(event, Trade)
    assert stream.endswith("@trade")
    ticker = json.loads(
        (recorded / "nautilus/resources/ws_messages/ws_spot_ticker_24hr.json").read_text()
    )
    assert isinstance(decode_ticker(ticker), Ticker)
    depth = json.loads(
        (recorded / "nautilus/resources/http_responses/http_spot_market_depth.json").read_text()
    )
    assert decode_depth(depth, symbol="BTCUSDT").last_update_id == 14527958487
    decoded = 0
    for line in (recorded / "cryptofeed/binance_ws_frames.jsonl").read_text().splitlines():
        frame = json.loads(line)["frame"]
        if not isinstance(frame, dict) or "stream" not in frame:
            continue
        kind = frame["stream"].split("@", 1)[1]
        if kind in ("trade", "ticker") or kind.startswith(
            ("kline_", "depth5", "depth10", "depth20")
        ):
            decode_stream_payload(frame["stream"], frame["data"])
            decoded += 1
    assert decoded > 0
