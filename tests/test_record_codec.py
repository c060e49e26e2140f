"""The record format (``--record``, replay, the NATS bridge): every bus event round-trips."""

from __future__ import annotations

import uuid
from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from genesis.errors import RecordFormatError
from genesis.models.account import Balance
from genesis.models.codec import RECORD_TYPES, event_to_record, record_to_event
from genesis.models.events import (
    AccountBalances,
    Alert,
    AlertKind,
    AlertSeverity,
    ConnectionHealth,
    ConnectionState,
    FeedGap,
    OrderUpdate,
    OrderUpdateSource,
)
from genesis.models.market import OrderBook, PriceLevel, Trade
from genesis.models.orders import Fill, Order, OrderSide, OrderStatus, OrderType, TimeInForce
from genesis.models.state import MarketCondition, MarketState


def _through_json(event: object) -> object:
    return record_to_event(orjson.loads(orjson.dumps(event_to_record(event))))


ORDER = Order(
    order_id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
    client_order_id="gen-1",
    exchange_order_id=42,
    symbol="BTCUSDT",
    type=OrderType.LIMIT,
    side=OrderSide.BUY,
    price=Decimal("65000.10"),
    quantity=Decimal("0.002"),
    filled_quantity=Decimal("0.001"),
    time_in_force=TimeInForce.GTC,
    status=OrderStatus.PARTIAL,
    exchange_status="PARTIALLY_FILLED",
    fills=(
        Fill(
            price=Decimal("65000.10"),
            quantity=Decimal("0.001"),
            commission=Decimal("0.00000100"),
            commission_asset="BTC",
            trade_id=7,
        ),
    ),
)

EVENTS = [
    OrderUpdate(order=ORDER, source=OrderUpdateSource.USER_STREAM, reason="x"),
    OrderBook(
        symbol="BTCUSDT",
        last_update_id=9,
        bids=(PriceLevel(Decimal("1.10"), Decimal("2")),),
        asks=(PriceLevel(Decimal("1.20"), Decimal("0.5")),),
        event_time_ms=5,
    ),
    AccountBalances(
        event_time_ms=1,
        update_time_ms=2,
        balances=(Balance(asset="BTC", free=Decimal("1.5"), locked=Decimal(0)),),
    ),
    Alert(
        kind=AlertKind.FEED_DOWN,
        severity=AlertSeverity.ERROR,
        message="no connection is live",
        at_ms=1_700_000_000_000,
        details=(("roles", "3"),),
    ),
    ConnectionHealth(
        role="execution",
        state=ConnectionState.BACKOFF,
        uptime_s=0.0,
        messages_received=10,
        messages_per_s=1.5,
        latency_ms=None,
        reconnects=2,
        rotations=0,
        last_error="refused",
        receiving=False,
        ping_rtt_ms=1.25,
    ),
    FeedGap(
        symbol="ETHUSDT",
        stream="trade",
        first_missing_id=10,
        last_missing_id=12,
        reason="x",
        at=3.5,
    ),
    MarketState(
        symbol="BTCUSDT",
        state=MarketCondition.VOLATILE,
        volatility_atr=Decimal("12.5"),
        spread_basis_points=Decimal("0.3"),
        volume_24h=Decimal(1000),
        liquidity_score=Decimal("0.7"),
    ),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_events_round_trip_exactly(event: object) -> None:
    assert _through_json(event) == event


def test_decimals_are_strings_and_levels_pairs() -> None:
    record = event_to_record(EVENTS[1])
    assert record["type"] == "OrderBook"
    assert record["bids"] == [["1.10", "2"]]
    order = event_to_record(EVENTS[0])["order"]
    assert isinstance(order, dict)
    assert order["price"] == "65000.10"
    assert order["order_id"] == "12345678-1234-5678-1234-567812345678"
    assert order["status"] == "PARTIAL"


@given(
    trade_id=st.integers(min_value=0, max_value=2**63),
    price=st.decimals(min_value=0, max_value=10**9, places=8, allow_nan=False),
    qty=st.decimals(min_value=0, max_value=10**6, places=8, allow_nan=False),
    maker=st.booleans(),
)
def test_any_trade_round_trips(trade_id: int, price: Decimal, qty: Decimal, maker: bool) -> None:
    trade = Trade(
        symbol="BTCUSDT",
        trade_id=trade_id,
        price=price,
        quantity=qty,
        trade_time_ms=1,
        event_time_ms=2,
        buyer_is_maker=maker,
    )
    back = _through_json(trade)
    assert back == trade
    assert isinstance(back, Trade)
    assert str(back.price) == str(price)


def test_every_record_type_is_an_event_class() -> None:
    assert {"Trade", "Depth", "Ticker", "Kline", "OrderBook", "OrderUpdate", "Alert"} <= set(
        RECORD_TYPES
    )
    assert "PriceLevel" not in RECORD_TYPES


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ([1, 2], "must be a JSON object"),
        ({"type": "Nope"}, "unknown record type"),
        ({"symbol": "BTCUSDT"}, "unknown record type"),
        ({"type": "Trade", "symbol": "BTCUSDT"}, "malformed Trade record"),
        (
            {**event_to_record(EVENTS[1]), "bids": [["1", "2", "3"]]},
            "malformed OrderBook record",
        ),
        ({**event_to_record(EVENTS[1]), "last_update_id": "x"}, "malformed OrderBook record"),
        ({**event_to_record(EVENTS[1]), "extra": 1}, "malformed OrderBook record"),
        ({**event_to_record(EVENTS[1]), "bids": [[1.5, "2"]]}, "malformed OrderBook record"),
        ({**event_to_record(EVENTS[0]), "order": {"order_id": 5}}, "malformed OrderUpdate"),
    ],
)
def test_bad_records_are_typed_errors(record: object, message: str) -> None:
    with pytest.raises(RecordFormatError, match=message):
        record_to_event(record)


def test_negative_price_is_refused_like_on_the_wire() -> None:
    record = event_to_record(
        Trade(
            symbol="BTCUSDT",
            trade_id=1,
            price=Decimal(1),
            quantity=Decimal(1),
            trade_time_ms=1,
            event_time_ms=1,
            buyer_is_maker=True,
        )
    )
    with pytest.raises(RecordFormatError):
        record_to_event({**record, "price": "-1"})


def test_non_attrs_is_refused() -> None:
    with pytest.raises(TypeError):
        event_to_record(object())
