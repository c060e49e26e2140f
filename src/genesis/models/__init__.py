"""Typed values and events. Models know nothing about JSON; see :mod:`genesis.models.codec`."""

from __future__ import annotations

from genesis.models.market import Depth, Kline, PriceLevel, Ticker, Trade
from genesis.models.orders import Order, OrderSide, OrderStatus, OrderType, TimeInForce
from genesis.models.state import MarketCondition, MarketState

__all__ = [
    "Depth",
    "Kline",
    "MarketCondition",
    "MarketState",
    "Order",
    "OrderSide",
    "OrderStatus",
    "OrderType",
    "PriceLevel",
    "Ticker",
    "TimeInForce",
    "Trade",
]
