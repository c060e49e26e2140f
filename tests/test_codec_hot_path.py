"""Market frames decoded on the hot path: depth levels built on first read, trades by one match.

``decode_depth_frame`` must agree with the eager ``decode_frame`` on every input: the same
event for a valid frame (equal, same hash, same record), the same error kind for a bad one.
"""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from genesis.errors import ExchangeProtocolError
from genesis.models.codec import (
    decode_depth_frame,
    decode_frame,
    decode_trade_frame,
    event_to_record,
    fault_kind,
    record_to_event,
)
from genesis.models.market import Depth, PriceLevel


def frame(bids: str, asks: str, update_id: str = "160") -> str:
    return (
        '{"stream":"btcusdt@depth20@100ms","data":{"lastUpdateId":'
        + update_id
        + ',"bids":'
        + bids
        + ',"asks":'
        + asks
        + "}}"
    )


GOOD = frame('[["0.0024","10"],["0.0023","0.5"]]', '[["0.0026","100"],["0.0027","0"]]')


def test_a_valid_frame_builds_the_same_event_as_the_eager_decoder() -> None:
    stream, lazy = decode_depth_frame(GOOD, symbol="BTCUSDT", received_ms=7)
    eager_stream, eager = decode_frame(GOOD, received_ms=7)
    assert stream == eager_stream == "btcusdt@depth20@100ms"
    assert isinstance(eager, Depth)
    assert lazy == eager
    assert hash(lazy) == hash(eager)
    assert lazy.bids == (
        PriceLevel(Decimal("0.0024"), Decimal("10")),
        PriceLevel(Decimal("0.0023"), Decimal("0.5")),
    )
    assert all(type(level.price) is Decimal for level in lazy.asks)
    assert lazy.best_ask == eager.best_ask
    assert lazy.spread_bps == eager.spread_bps
    assert repr(lazy) == repr(eager)


def test_levels_are_built_on_first_read_and_kept() -> None:
    _, depth = decode_depth_frame(GOOD, symbol="BTCUSDT")
    assert not isinstance(depth._bids, tuple)  # nothing built on arrival
    bids = depth.bids
    assert depth.bids is bids  # built once
    assert isinstance(depth._bids, tuple)
    assert not isinstance(depth._asks, tuple)  # each side on its own


def test_a_lazy_depth_survives_the_record_format() -> None:
    _, depth = decode_depth_frame(GOOD, symbol="BTCUSDT", received_ms=3)
    record = orjson.loads(orjson.dumps(event_to_record(depth)))
    assert record["bids"] == [["0.0024", "10"], ["0.0023", "0.5"]]
    assert record_to_event(record) == depth


@pytest.mark.parametrize(
    "raw",
    [
        frame('[["-0.0024","10"]]', "[]"),  # negative price
        frame('[["NaN","10"]]', "[]"),
        frame('[["Infinity","10"]]', "[]"),
        frame('[["abc","10"]]', "[]"),
        frame("[[0.0024,10]]", "[]"),  # floats where Binance sends strings
        frame('[["0.0024"]]', "[]"),  # half a level
        frame('{"0.0024":"10"}', "[]"),
        frame("[]", "[]", update_id='"160"'),
        frame("[]", "[]", update_id="true"),
        '{"stream":"btcusdt@depth20@100ms","data":{"bids":[],"asks":[]}}',
        '{"stream":"btcusdt@depth20@100ms"}',
        '{"stream":"btcusdt@depth20@100ms","data":',
        "[1, 2]",
    ],
)
def test_a_bad_frame_fails_as_the_eager_decoder_fails(raw: str) -> None:
    with pytest.raises(ExchangeProtocolError) as eager:
        decode_frame(raw)
    with pytest.raises(ExchangeProtocolError) as lazy:
        decode_depth_frame(raw, symbol="BTCUSDT")
    assert fault_kind(lazy.value) == fault_kind(eager.value)
    assert str(lazy.value) == str(eager.value)


@pytest.mark.parametrize(
    "raw",
    [
        frame('[ ["0.0024", "10"] ]', "[]"),  # spaces: another layout, decoded eagerly
        frame('[["0.0024","10","extra"]]', "[]"),
        frame('[["00.0024","10"]]', "[]"),
        frame('[["1E-8","10"]]', "[]"),
        frame('[["1e400","10"]]', "[]"),
        frame("[]", "[]"),
    ],
)
def test_other_layouts_decode_eagerly_to_the_same_event(raw: str) -> None:
    _, lazy = decode_depth_frame(raw, symbol="BTCUSDT")
    _, eager = decode_frame(raw)
    assert lazy == eager


# --- trades: one match over Binance's exact layout, or None (then the full decode) -----------

TRADE = (
    '{"stream":"btcusdt@trade","data":{"e":"trade","E":1672515782136,"s":"BTCUSDT","t":12345,'
    '"p":"0.001","q":"100","T":1672515782135,"m":true,"M":true}}'
)


@pytest.mark.parametrize(
    "raw",
    [
        TRADE,
        TRADE.replace('"m":true', '"m":false'),
        TRADE.replace(',"M":true', ""),
        TRADE.replace('"p":"0.001"', '"p":"0"'),
    ],
)
def test_a_trade_in_binances_layout_decodes_as_the_full_decoder_does(raw: str) -> None:
    fast = decode_trade_frame(raw)
    assert fast is not None
    assert fast == decode_frame(raw)
    assert type(fast[1].price) is Decimal


@pytest.mark.parametrize(
    "raw",
    [
        TRADE.replace('"p":"0.001"', '"p":"-0.001"'),
        TRADE.replace('"p":"0.001"', '"p":"NaN"'),
        TRADE.replace('"p":"0.001"', '"p":0.001'),
        TRADE.replace('"p":"0.001"', '"p":"1e-3"'),
        TRADE.replace('"t":12345', '"t":"12345"'),
        TRADE.replace('"t":12345', '"t":-1'),
        TRADE.replace('"e":"trade"', '"e":"aggTrade"'),
        TRADE.replace('"s":"BTCUSDT"', '"s":"btcusdt"'),
        TRADE.replace('"m":true', '"m":1'),
        TRADE.replace(',"M":true', ',"M":true,"X":1'),
        TRADE.replace('"q":"100"', '"q" : "100"'),
        TRADE.replace("}}", "}"),
        TRADE.replace('"stream":"btcusdt@trade"', '"stream":"btc\\u0075sdt@trade"'),
    ],
)
def test_any_other_layout_is_left_to_the_full_decoder(raw: str) -> None:
    assert decode_trade_frame(raw) is None
