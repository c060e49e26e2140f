"""models/codec's combined-stream frames: raw-text keys, the envelope, fault kinds, REST rows."""

from __future__ import annotations

import orjson
import pytest

from genesis.errors import ExchangeProtocolError
from genesis.models.codec import (
    KEY_READERS,
    decode_frame,
    decode_historical_trades,
    decode_klines,
    decode_trade,
    fault_kind,
    frame_key_of,
    parse_frame,
    read_event_time,
    read_stream,
)
from tests.test_ws_manager import depth_payload, kline_payload, ticker_payload, trade_payload


def frame(stream: str, payload: bytes) -> str:
    return '{"stream":"' + stream + '","data":' + payload.decode() + "}"


def test_keys_are_read_from_the_raw_text_and_agree_with_the_decoded_event() -> None:
    cases = [
        ("bnbbtc@trade", trade_payload("BNBBTC", 12345, 1), "trade", 12345),
        ("bnbbtc@depth20@100ms", depth_payload(160), "partialDepth", 160),
        ("bnbbtc@ticker", ticker_payload("BNBBTC", 77), "ticker", 77),
        (
            "bnbbtc@kline_1m",
            kline_payload("BNBBTC", 60_000, 61_000, closed=True),
            "kline",
            (60_000, 61_000, True),
        ),
        (
            "bnbbtc@kline_1m",
            kline_payload("BNBBTC", 60_000, 61_000, closed=False),
            "kline",
            (60_000, 61_000, False),
        ),
    ]
    for stream, payload, kind, key in cases:
        raw = frame(stream, payload)
        assert read_stream(raw) == stream
        assert KEY_READERS[kind](raw) == key
        assert frame_key_of(decode_frame(raw)[1]) == key
    assert read_event_time(frame("x@trade", trade_payload("BNBBTC", 1, 99))) == 99
    assert read_event_time(frame("x@depth20", depth_payload(1))) is None


@pytest.mark.parametrize(
    "raw",
    [
        '{"stream": "btcusdt@trade", "data": {"t": 1, "E": 2}}',  # spaces: not compact
        '{"data":{"t":1},"stream":"btcusdt@trade"}',  # another key order
        '{"stream":"btcusdt@trade","data":{"t":"1","E":2}}',  # a string id
        '{"stream":"btcusdt@trade","data":{"t":1_0,"E":2}}',  # int() would take it
        '{"stream":"btcusdt@trade","data":{"t":-1,"E":2}}',
        '{"stream":"btcusdt@trade","data":{"E":2,"t":1}}',  # last key: no comma after it
        '{"stream":"btcusdt@trade","data":{}}',
        '{"stream":"' + "a" * 200 + '"}',
    ],
)
def test_unusual_layouts_are_left_to_the_full_parse(raw: str) -> None:
    assert KEY_READERS["trade"](raw) is None or read_stream(raw) is None


def test_a_kline_without_a_readable_closed_flag_has_no_raw_key() -> None:
    base = orjson.loads(kline_payload("BNBBTC", 0, 1, closed=True))
    base["k"]["x"] = "true"
    assert KEY_READERS["kline"](frame("bnbbtc@kline_1m", orjson.dumps(base))) is None
    del base["k"]["x"]
    assert KEY_READERS["kline"](frame("bnbbtc@kline_1m", orjson.dumps(base))) is None
    assert KEY_READERS["kline"]('{"stream":"x","data":{"E":1,"k":{}}}') is None


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("{", "invalid_json"),
        ("[1]", "not_a_frame"),
        ('{"stream":1,"data":{}}', "not_a_frame"),
        ('{"stream":"a@trade"}', "not_a_frame"),
    ],
)
def test_envelope_faults_have_kinds(raw: str, kind: str) -> None:
    with pytest.raises(ExchangeProtocolError) as info:
        parse_frame(raw)
    assert fault_kind(info.value) == kind


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        ({"p": None}, "missing_field"),
        ({"t": "1"}, "bad_type"),
        ({"m": 1}, "bad_type"),
        ({"s": 5}, "bad_type"),
        ({"p": 1.0}, "bad_type"),
        ({"p": "NaN"}, "bad_number"),
        ({"p": "-Infinity"}, "bad_number"),
        ({"p": "abc"}, "bad_number"),
        ({"p": "-1"}, "bad_value"),
        ({"s": "btcusdt"}, "bad_value"),
        ({"e": "aggTrade"}, "bad_payload"),
    ],
)
def test_payload_faults_have_kinds(change: dict[str, object], kind: str) -> None:
    data = orjson.loads(trade_payload("BTCUSDT", 1, 1))
    for key, value in change.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    with pytest.raises(ExchangeProtocolError) as info:
        decode_trade(data)
    assert fault_kind(info.value) == kind
    with pytest.raises(ExchangeProtocolError) as info:
        decode_trade([1])
    assert fault_kind(info.value) == "bad_payload"


def test_historical_trades_rows_become_stream_trades() -> None:
    rows = [
        {
            "id": 28457,
            "price": "4.00000100",
            "qty": "12.00000000",
            "quoteQty": "48.000012",
            "time": 1499865549590,
            "isBuyerMaker": True,
            "isBestMatch": True,
        }
    ]
    (trade,) = decode_historical_trades(rows, symbol="BNBBTC")
    assert (trade.symbol, trade.trade_id, str(trade.price), trade.buyer_is_maker) == (
        "BNBBTC",
        28457,
        "4.00000100",
        True,
    )
    assert trade.trade_time_ms == trade.event_time_ms == 1499865549590
    bad_rows: list[object] = [{}, [{"id": 1}], [[1]], [{**rows[0], "price": "NaN"}]]
    for bad in bad_rows:
        with pytest.raises(ExchangeProtocolError):
            decode_historical_trades(bad, symbol="BNBBTC")


def test_klines_rows_are_closed_once_over() -> None:
    row = [
        1499040000000,
        "0.01634790",
        "0.80000000",
        "0.01575800",
        "0.01577100",
        "148976.11427815",
        1499644799999,
        "2434.19055334",
        308,
        "1756.87402397",
        "28.46694368",
        "0",
    ]
    (over,) = decode_klines([row], symbol="BNBBTC", interval="1m", now_ms=1499644800000)
    (still_open,) = decode_klines([row], symbol="BNBBTC", interval="1m", now_ms=1499644700000)
    assert over.closed is True
    assert over.event_time_ms == 1499644799999
    assert (str(over.open_price), str(over.close_price), over.trade_count) == (
        "0.01634790",
        "0.01577100",
        308,
    )
    assert still_open.closed is False
    assert still_open.event_time_ms == 1499644700000
    bad_klines: list[object] = [{}, [row[:5]], [[*row[:1], 1.5, *row[2:]]]]
    for bad in bad_klines:
        with pytest.raises(ExchangeProtocolError):
            decode_klines(bad, symbol="BNBBTC", interval="1m", now_ms=0)
