"""Subjects, message ids and the message codec of the bridge (pure, no broker)."""

from __future__ import annotations

import uuid
from decimal import Decimal

import attrs
import orjson
import pytest

from genesis.bridge import (
    KINDS,
    decode_message,
    encode_message,
    kind_of,
    message_id,
    subject_for,
)
from genesis.config import load_settings
from genesis.errors import ConfigError, RecordFormatError
from genesis.models.account import Balance
from genesis.models.events import AccountBalances, Alert, AlertKind, AlertSeverity, OrderUpdate
from genesis.models.events import OrderUpdateSource as Source
from genesis.models.market import Depth, Kline, OrderBook, PriceLevel, Ticker, Trade
from genesis.models.orders import Fill, Order, OrderSide, OrderStatus, OrderType

D = Decimal


def trade(symbol: str = "BTCUSDT", trade_id: int = 1) -> Trade:
    return Trade(
        symbol=symbol,
        trade_id=trade_id,
        price=D("60000.10"),
        quantity=D("0.5"),
        trade_time_ms=1_767_225_600_000,
        event_time_ms=1_767_225_600_001,
        buyer_is_maker=False,
    )


def depth(update_id: int = 7, levels: int = 2, received_ms: int = 5) -> Depth:
    book = tuple(PriceLevel(D(60000 - i), D("1")) for i in range(levels))
    return Depth(
        symbol="BTCUSDT", last_update_id=update_id, bids=book, asks=book, received_ms=received_ms
    )


def book(update_id: int = 7) -> OrderBook:
    return OrderBook(
        symbol="BTCUSDT",
        last_update_id=update_id,
        bids=(PriceLevel(D("1"), D("2")),),
        asks=(PriceLevel(D("3"), D("4")),),
        event_time_ms=9,
    )


def kline(event_ms: int = 2, closed: bool = False, interval: str = "1m", open_ms: int = 0) -> Kline:
    return Kline(
        symbol="BTCUSDT",
        interval=interval,
        event_time_ms=event_ms,
        open_time_ms=open_ms,
        close_time_ms=59_999,
        first_trade_id=1,
        last_trade_id=9,
        open_price=D("1"),
        close_price=D("2"),
        high_price=D("3"),
        low_price=D("1"),
        volume=D("3"),
        quote_volume=D("6"),
        taker_buy_volume=D("1"),
        taker_buy_quote_volume=D("2"),
        trade_count=9,
        closed=closed,
    )


def ticker(event_ms: int = 1, last_trade_id: int = 100) -> Ticker:
    one = D("1")
    return Ticker(
        symbol="BTCUSDT",
        event_time_ms=event_ms,
        price_change=D("-10"),
        price_change_percent=D("-0.02"),
        weighted_avg_price=one,
        last_price=one,
        last_quantity=one,
        best_bid=one,
        best_bid_quantity=one,
        best_ask=one,
        best_ask_quantity=one,
        open_price=one,
        high_price=one,
        low_price=one,
        volume=one,
        quote_volume=one,
        open_time_ms=0,
        close_time_ms=1,
        first_trade_id=1,
        last_trade_id=last_trade_id,
        trade_count=100,
    )


def order_update(
    *,
    status: OrderStatus = OrderStatus.PARTIAL,
    exchange_status: str = "PARTIALLY_FILLED",
    filled: str = "0.5",
    source: Source = Source.USER_STREAM,
    reason: str | None = None,
    latency_ms: float | None = None,
    cid: str = "abc-1",
) -> OrderUpdate:
    fill = Fill(
        price=D("100"), quantity=D(filled), commission=D("0"), commission_asset="BNB", trade_id=3
    )
    order = Order(
        order_id=uuid.uuid4(),  # each Genesis process makes its own
        client_order_id=cid,
        exchange_order_id=42,
        symbol="BTCUSDT",
        type=OrderType.LIMIT,
        side=OrderSide.BUY,
        price=D("100"),
        quantity=D("1"),
        filled_quantity=D(filled),
        quote_filled_quantity=D(filled) * 100,
        status=status,
        exchange_status=exchange_status,
        fills=(fill,),
        created_ms=1,
        updated_ms=2,
        latency_ms=latency_ms,
    )
    return OrderUpdate(order=order, source=source, reason=reason)


def balances(free: str = "1") -> AccountBalances:
    return AccountBalances(
        event_time_ms=5,
        update_time_ms=4,
        balances=(Balance(asset="BTC", free=D(free), locked=D("0")),),
    )


DISTINCT_EVENTS: list[object] = [
    trade(),
    trade(trade_id=2),
    trade(symbol="ETHUSDT"),
    depth(),
    depth(update_id=8),
    depth(levels=3),
    book(),
    book(update_id=8),
    kline(),
    kline(event_ms=3),
    kline(closed=True),
    kline(interval="5m"),
    kline(open_ms=60_000),
    ticker(),
    ticker(event_ms=2),
    ticker(last_trade_id=101),
    order_update(),
    order_update(filled="0.6"),
    order_update(status=OrderStatus.FILLED, exchange_status="FILLED", filled="1"),
    order_update(source=Source.REST),
    order_update(reason="REPLACED"),
    order_update(cid="abc-2"),
    balances(),
    balances(free="2"),
]


def test_distinct_events_have_distinct_ids() -> None:
    ids = [message_id(event) for event in DISTINCT_EVENTS]
    assert len(set(ids)) == len(ids)


def test_the_same_event_seen_by_two_instances_has_one_id() -> None:
    # What one process makes up (an order's uuid and latency, a depth's receive time) is not
    # part of the event's identity.
    assert message_id(order_update(latency_ms=3.0)) == message_id(order_update(latency_ms=9.5))
    assert message_id(depth(received_ms=1)) == message_id(depth(received_ms=2))
    for event in DISTINCT_EVENTS:
        copy = attrs.evolve(event)  # type: ignore[misc]  # every event is an attrs instance
        assert message_id(copy) == message_id(event)


def test_ids_name_the_kind_symbol_and_exchange_identity() -> None:
    assert message_id(trade(trade_id=12345)) == "trade:BTCUSDT:12345"
    assert message_id(depth(update_id=99, levels=20)) == "depth:BTCUSDT:99:20x20"
    assert message_id(kline(event_ms=7, closed=True)) == "kline:BTCUSDT:1m:0:7:c"
    assert message_id(order_update()).startswith("order:BTCUSDT:abc-1:")


def test_subjects_are_kind_and_symbol() -> None:
    assert subject_for(trade()) == "genesis.trade.BTCUSDT"
    assert subject_for(book()) == "genesis.book.BTCUSDT"
    assert subject_for(order_update()) == "genesis.order.BTCUSDT"
    assert subject_for(balances()) == "genesis.balance.ACCOUNT"
    assert {kind_of(e) for e in DISTINCT_EVENTS} == set(KINDS.values())


def test_events_the_bridge_does_not_carry_are_refused() -> None:
    alert = Alert(kind=AlertKind.FEED_GAP, severity=AlertSeverity.WARNING, message="x", at_ms=1)
    assert kind_of(alert) is None
    with pytest.raises(ValueError, match="does not carry Alert"):
        subject_for(alert)
    with pytest.raises(ValueError, match="does not carry Alert"):
        message_id(alert)


@pytest.mark.parametrize("event", DISTINCT_EVENTS, ids=lambda e: type(e).__name__)
def test_a_message_decodes_to_the_event_it_was_made_from(event: object) -> None:
    message = encode_message(event)
    assert decode_message(message.subject, message.payload) == event


@pytest.mark.parametrize(
    ("subject", "data", "match"),
    [
        ("genesis.trade.BTCUSDT", b"not json", "one JSON object"),
        ("genesis.trade.BTCUSDT", b"[1, 2]", "must be a JSON object"),
        ("genesis.trade.BTCUSDT", b'{"type": "Nope"}', "unknown record type"),
        ("genesis.trade.BTCUSDT", b'{"type": "Trade", "symbol": "BTCUSDT"}', "malformed Trade"),
        ("genesis.order.BTCUSDT", orjson.dumps({"x": 1}), "unknown record type"),
        ("genesis.depth.BTCUSDT", encode_message(trade()).payload, "does not belong"),
        ("genesis.trade", encode_message(trade()).payload, "does not belong"),
        (
            "genesis.alert.X",
            orjson.dumps({"type": "FeedUp", "at": 1.0, "down_for_s": 2.0, "role": "backup"}),
            "does not belong",
        ),
    ],
)
def test_malformed_messages_raise_record_format_error(
    subject: str, data: bytes, match: str
) -> None:
    with pytest.raises(RecordFormatError, match=match):
        decode_message(subject, data)


def test_genesis_nats_url_configures_the_bridge() -> None:
    settings = load_settings({"GENESIS_NATS_URL": " nats://127.0.0.1:4222 "}, env_file=None)
    assert settings.nats_url == "nats://127.0.0.1:4222"
    assert load_settings({}, env_file=None).nats_url is None
    with pytest.raises(ConfigError, match="GENESIS_NATS_URL must be a nats:// or tls:// URL"):
        load_settings({"GENESIS_NATS_URL": "http://127.0.0.1:4222"}, env_file=None)
    with pytest.raises(ConfigError, match="GENESIS_NATS_URL must not contain user credentials"):
        load_settings({"GENESIS_NATS_URL": "nats://user:pw@127.0.0.1:4222"}, env_file=None)
