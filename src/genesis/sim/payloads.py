"""The simulator's wire output: market-stream payloads, REST/WS API rows and user events.

One owner for every wire shape the simulator sends. The stream builders (``*_payload``) return
``orjson`` bytes of the *data* object only (the stream server wraps it for combined streams);
the row builders (``*_wire``, :func:`order_to_wire`, :func:`execution_report`) return JSON
objects that REST and the WebSocket API both serialise. A shape the two share (an aggregate
trade, a book level) is built once: ``@aggTrade`` is ``e``/``E``/``s`` in front of the
``GET aggTrades`` row. Key sets and value types follow web-socket-streams.md (FACTS.md §8;
samples.json ``ws.*``): prices and quantities are strings with 8 decimals, ids and times are
integers. ``@trade`` has no ``b``/``a`` (removed 2024-06); ``@bookTicker`` and ``@depth<N>`` have
no ``e``/``E``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Final

import orjson

from genesis.sim.model import ExecutionType, OrderStatus, OrderType
from genesis.sim.symbols import fmt_decimal

if TYPE_CHECKING:
    from collections.abc import Sequence

    from genesis.sim.history import Bucket
    from genesis.sim.model import (
        AccountTrade,
        Fill,
        JsonObject,
        Order,
        OrderResult,
        PublicTrade,
        TickerStats,
        WireKind,
    )

__all__ = [
    "AGG_TRADE_KEYS",
    "BOOK_TICKER_KEYS",
    "DEPTH_UPDATE_KEYS",
    "KLINE_KEYS",
    "KLINE_K_KEYS",
    "MINI_TICKER_KEYS",
    "PARTIAL_DEPTH_KEYS",
    "TICKER_KEYS",
    "TRADE_KEYS",
    "account_position_event",
    "account_trade_to_wire",
    "agg_trade_payload",
    "agg_trade_wire",
    "book_ticker_payload",
    "book_ticker_wire",
    "depth_update_payload",
    "depth_wire",
    "execution_report",
    "kline_array",
    "kline_object",
    "kline_payload",
    "levels_wire",
    "mini_ticker_payload",
    "order_to_wire",
    "partial_depth_payload",
    "public_trade_wire",
    "result_to_wire",
    "ticker_24hr_wire",
    "ticker_payload",
    "trade_payload",
]

_ZERO: Final = Decimal(0)

TRADE_KEYS: Final = ("e", "E", "s", "t", "p", "q", "T", "m", "M")
AGG_TRADE_KEYS: Final = ("e", "E", "s", "a", "p", "q", "f", "l", "T", "m", "M")
BOOK_TICKER_KEYS: Final = ("u", "s", "b", "B", "a", "A")
PARTIAL_DEPTH_KEYS: Final = ("lastUpdateId", "bids", "asks")
DEPTH_UPDATE_KEYS: Final = ("e", "E", "s", "U", "u", "b", "a")
TICKER_KEYS: Final = (
    *("e", "E", "s", "p", "P", "w", "x", "c", "Q", "b", "B", "a", "A"),
    *("o", "h", "l", "v", "q", "O", "C", "F", "L", "n"),
)
MINI_TICKER_KEYS: Final = ("e", "E", "s", "c", "o", "h", "l", "v", "q")
KLINE_KEYS: Final = ("e", "E", "s", "k")
KLINE_K_KEYS: Final = (
    *("t", "T", "s", "i", "f", "L", "o", "c", "h", "l", "v", "n", "x", "q", "V", "Q", "B"),
)
"""Documented key sets, in the docs' order (tests compare payloads against them)."""


def _f(value: Decimal) -> str:
    return fmt_decimal(value)


def levels_wire(levels: Sequence[tuple[Decimal, Decimal]]) -> list[list[str]]:
    """``[[price, qty], ...]`` as strings."""
    return [[_f(p), _f(q)] for p, q in levels]


def trade_payload(trade: PublicTrade, event_time_ms: int) -> bytes:
    """``<symbol>@trade``."""
    return orjson.dumps(
        {
            "e": "trade",
            "E": event_time_ms,
            "s": trade.symbol,
            "t": trade.trade_id,
            "p": _f(trade.price),
            "q": _f(trade.qty),
            "T": trade.time_ms,
            "m": trade.is_buyer_maker,
            "M": True,
        }
    )


def agg_trade_wire(trades: Sequence[PublicTrade]) -> JsonObject:
    """One aggregate trade (same taker, same price) as a ``GET aggTrades`` row: a, p, q, f, l,
    T, m, M."""
    first = trades[0]
    return {
        "a": first.agg_id,
        "p": _f(first.price),
        "q": _f(sum((t.qty for t in trades), _ZERO)),
        "f": first.trade_id,
        "l": trades[-1].trade_id,
        "T": first.time_ms,
        "m": first.is_buyer_maker,
        "M": True,
    }


def agg_trade_payload(trades: Sequence[PublicTrade], event_time_ms: int) -> bytes:
    """``<symbol>@aggTrade`` for the fills of one aggregate (same taker, same price)."""
    return orjson.dumps(
        {"e": "aggTrade", "E": event_time_ms, "s": trades[0].symbol, **agg_trade_wire(trades)}
    )


def public_trade_wire(t: PublicTrade) -> JsonObject:
    """A ``GET trades`` / ``historicalTrades`` row."""
    return {
        "id": t.trade_id,
        "price": _f(t.price),
        "qty": _f(t.qty),
        "quoteQty": _f(t.quote_qty),
        "time": t.time_ms,
        "isBuyerMaker": t.is_buyer_maker,
        "isBestMatch": True,
    }


def depth_wire(
    last_update_id: int,
    bids: Sequence[tuple[Decimal, Decimal]],
    asks: Sequence[tuple[Decimal, Decimal]],
) -> JsonObject:
    """``GET depth`` (and ``@depth<N>``): ``{"lastUpdateId", "bids", "asks"}``."""
    return {"lastUpdateId": last_update_id, "bids": levels_wire(bids), "asks": levels_wire(asks)}


def book_ticker_wire(
    symbol: str, bid: tuple[Decimal, Decimal] | None, ask: tuple[Decimal, Decimal] | None
) -> JsonObject:
    """``GET ticker/bookTicker``: ``{"symbol", "bidPrice", "bidQty", "askPrice", "askQty"}``
    (an empty side is reported as zeros)."""
    bp, bq = bid if bid is not None else (_ZERO, _ZERO)
    ap, aq = ask if ask is not None else (_ZERO, _ZERO)
    return {
        "symbol": symbol,
        "bidPrice": _f(bp),
        "bidQty": _f(bq),
        "askPrice": _f(ap),
        "askQty": _f(aq),
    }


def book_ticker_payload(
    symbol: str,
    update_id: int,
    bid: tuple[Decimal, Decimal] | None,
    ask: tuple[Decimal, Decimal] | None,
) -> bytes:
    """``<symbol>@bookTicker`` (an empty side is reported as zeros)."""
    bp, bq = bid if bid is not None else (_ZERO, _ZERO)
    ap, aq = ask if ask is not None else (_ZERO, _ZERO)
    return orjson.dumps(
        {"u": update_id, "s": symbol, "b": _f(bp), "B": _f(bq), "a": _f(ap), "A": _f(aq)}
    )


def partial_depth_payload(
    last_update_id: int,
    bids: Sequence[tuple[Decimal, Decimal]],
    asks: Sequence[tuple[Decimal, Decimal]],
) -> bytes:
    """``<symbol>@depth<5|10|20>[@100ms]``: a top-of-book snapshot."""
    return orjson.dumps(depth_wire(last_update_id, bids, asks))


def depth_update_payload(
    symbol: str,
    event_time_ms: int,
    first_update_id: int,
    last_update_id: int,
    bids: Sequence[tuple[Decimal, Decimal]],
    asks: Sequence[tuple[Decimal, Decimal]],
) -> bytes:
    """``<symbol>@depth[@100ms]``: changed levels with absolute quantities ("0" removes)."""
    return orjson.dumps(
        {
            "e": "depthUpdate",
            "E": event_time_ms,
            "s": symbol,
            "U": first_update_id,
            "u": last_update_id,
            "b": levels_wire(bids),
            "a": levels_wire(asks),
        }
    )


def ticker_payload(stats: TickerStats, event_time_ms: int) -> bytes:
    """``<symbol>@ticker`` (``24hrTicker``, rolling 24 h window)."""
    return orjson.dumps(
        {
            "e": "24hrTicker",
            "E": event_time_ms,
            "s": stats.symbol,
            "p": _f(stats.price_change),
            "P": stats.price_change_percent,
            "w": _f(stats.weighted_avg_price),
            "x": _f(stats.prev_close),
            "c": _f(stats.last),
            "Q": _f(stats.last_qty),
            "b": _f(stats.bid_price),
            "B": _f(stats.bid_qty),
            "a": _f(stats.ask_price),
            "A": _f(stats.ask_qty),
            "o": _f(stats.open),
            "h": _f(stats.high),
            "l": _f(stats.low),
            "v": _f(stats.volume),
            "q": _f(stats.quote_volume),
            "O": stats.open_time_ms,
            "C": stats.close_time_ms,
            "F": stats.first_id,
            "L": stats.last_id,
            "n": stats.count,
        }
    )


def mini_ticker_payload(stats: TickerStats, event_time_ms: int) -> bytes:
    """``<symbol>@miniTicker`` (``24hrMiniTicker``)."""
    return orjson.dumps(
        {
            "e": "24hrMiniTicker",
            "E": event_time_ms,
            "s": stats.symbol,
            "c": _f(stats.last),
            "o": _f(stats.open),
            "h": _f(stats.high),
            "l": _f(stats.low),
            "v": _f(stats.volume),
            "q": _f(stats.quote_volume),
        }
    )


def ticker_24hr_wire(s: TickerStats, *, mini: bool = False) -> JsonObject:
    """``GET ticker/24hr`` (FULL, or MINI with ``mini=True``)."""
    if mini:
        head: JsonObject = {
            "symbol": s.symbol,
            "openPrice": _f(s.open),
            "highPrice": _f(s.high),
            "lowPrice": _f(s.low),
            "lastPrice": _f(s.last),
        }
    else:
        head = {
            "symbol": s.symbol,
            "priceChange": _f(s.price_change),
            "priceChangePercent": s.price_change_percent,
            "weightedAvgPrice": _f(s.weighted_avg_price),
            "prevClosePrice": _f(s.prev_close),
            "lastPrice": _f(s.last),
            "lastQty": _f(s.last_qty),
            "bidPrice": _f(s.bid_price),
            "bidQty": _f(s.bid_qty),
            "askPrice": _f(s.ask_price),
            "askQty": _f(s.ask_qty),
            "openPrice": _f(s.open),
            "highPrice": _f(s.high),
            "lowPrice": _f(s.low),
        }
    return {
        **head,
        "volume": _f(s.volume),
        "quoteVolume": _f(s.quote_volume),
        "openTime": s.open_time_ms,
        "closeTime": s.close_time_ms,
        "firstId": s.first_id,
        "lastId": s.last_id,
        "count": s.count,
    }


def kline_array(k: Bucket, close_ms: int) -> list[object]:
    """A ``GET klines`` row (12 elements; the last is unused)."""
    return [
        k.open_ms,
        _f(k.open),
        _f(k.high),
        _f(k.low),
        _f(k.close),
        _f(k.volume),
        close_ms,
        _f(k.quote_volume),
        k.count,
        _f(k.taker_buy_base),
        _f(k.taker_buy_quote),
        "0",
    ]


def kline_object(
    symbol: str, interval: str, k: Bucket, close_ms: int, *, closed: bool
) -> JsonObject:
    """The ``k`` object of a ``@kline_<interval>`` event."""
    return {
        "t": k.open_ms,
        "T": close_ms,
        "s": symbol,
        "i": interval,
        "f": k.first_id,
        "L": k.last_id,
        "o": _f(k.open),
        "c": _f(k.close),
        "h": _f(k.high),
        "l": _f(k.low),
        "v": _f(k.volume),
        "n": k.count,
        "x": closed,
        "q": _f(k.quote_volume),
        "V": _f(k.taker_buy_base),
        "Q": _f(k.taker_buy_quote),
        "B": "0",
    }


def kline_payload(symbol: str, k: JsonObject, event_time_ms: int) -> bytes:
    """``<symbol>@kline_<interval>`` around the ``k`` object from :meth:`Exchange.kline`."""
    return orjson.dumps({"e": "kline", "E": event_time_ms, "s": symbol, "k": k})


_STOP_TYPES: Final = frozenset(
    {
        OrderType.STOP_LOSS,
        OrderType.STOP_LOSS_LIMIT,
        OrderType.TAKE_PROFIT,
        OrderType.TAKE_PROFIT_LIMIT,
    }
)


def _order_terms(o: Order) -> JsonObject:
    """``price`` .. ``side`` (and ``stopPrice`` for stop types) as CANCEL rows and the
    RESULT/FULL responses list them (GET rows use another order)."""
    out: JsonObject = {
        "price": _f(o.price),
        "origQty": _f(o.orig_qty),
        "executedQty": _f(o.executed_qty),
        "origQuoteOrderQty": _f(o.orig_quote_order_qty),
        "cummulativeQuoteQty": _f(o.cummulative_quote_qty),
        "status": o.status.value,
        "timeInForce": o.time_in_force.value,
        "type": o.type.value,
        "side": o.side.value,
    }
    if o.type in _STOP_TYPES:
        out["stopPrice"] = _f(o.stop_price)
    return out


def order_to_wire(order: Order, kind: WireKind, fills: Sequence[Fill] = ()) -> JsonObject:
    """An order in one of Binance's wire shapes.

    ``ACK``/``RESULT``/``FULL``: the ``POST /api/v3/order`` responses (``transactTime`` is the
    order's creation time); ``GET``: ``GET order`` / ``openOrders`` / ``allOrders`` rows;
    ``CANCEL``: the ``DELETE order`` / ``DELETE openOrders`` rows (``transactTime`` is the
    cancel time, ``clientOrderId`` the cancel's id).
    """
    o = order
    if kind == "GET":
        out: JsonObject = {
            "symbol": o.symbol,
            "orderId": o.order_id,
            "orderListId": -1,
            "clientOrderId": o.client_order_id,
            "price": _f(o.price),
            "origQty": _f(o.orig_qty),
            "executedQty": _f(o.executed_qty),
            "cummulativeQuoteQty": _f(o.cummulative_quote_qty),
            "status": o.status.value,
            "timeInForce": o.time_in_force.value,
            "type": o.type.value,
            "side": o.side.value,
            "stopPrice": _f(o.stop_price),
            "icebergQty": _f(_ZERO),
            "time": o.time_ms,
            "updateTime": o.update_time_ms,
            "isWorking": o.is_working,
            "workingTime": o.working_time_ms,
            "origQuoteOrderQty": _f(o.orig_quote_order_qty),
            "selfTradePreventionMode": "NONE",
        }
        if o.expiry_reason is not None:
            out["expiryReason"] = o.expiry_reason
        return out
    if kind == "CANCEL":
        out = {
            "symbol": o.symbol,
            "origClientOrderId": o.client_order_id,
            "orderId": o.order_id,
            "orderListId": -1,
            "clientOrderId": o.cancel_client_order_id or "",
            "transactTime": o.update_time_ms,
            **_order_terms(o),
            "selfTradePreventionMode": "NONE",
        }
        return out
    out = {
        "symbol": o.symbol,
        "orderId": o.order_id,
        "orderListId": -1,
        "clientOrderId": o.client_order_id,
        "transactTime": o.time_ms,
    }
    if kind == "ACK":
        return out
    out.update(_order_terms(o))
    out["workingTime"] = o.working_time_ms
    out["selfTradePreventionMode"] = "NONE"
    if o.expiry_reason is not None:
        out["expiryReason"] = o.expiry_reason
    if kind == "FULL":
        out["fills"] = [
            {
                "price": _f(f.price),
                "qty": _f(f.qty),
                "commission": _f(f.commission),
                "commissionAsset": f.commission_asset,
                "tradeId": f.trade_id,
            }
            for f in fills
        ]
    return out


def result_to_wire(result: OrderResult) -> JsonObject:
    """The ``POST /api/v3/order`` response body for ``result`` in its ``resp_type``."""
    return order_to_wire(result.order, result.resp_type, result.fills)


def account_trade_to_wire(trade: AccountTrade) -> JsonObject:
    """A ``GET /api/v3/myTrades`` row."""
    return {
        "symbol": trade.symbol,
        "id": trade.trade_id,
        "orderId": trade.order_id,
        "orderListId": -1,
        "price": _f(trade.price),
        "qty": _f(trade.qty),
        "quoteQty": _f(trade.price * trade.qty),
        "commission": _f(trade.commission),
        "commissionAsset": trade.commission_asset,
        "time": trade.time_ms,
        "isBuyer": trade.is_buyer,
        "isMaker": trade.is_maker,
        "isBestMatch": True,
    }


def execution_report(
    order: Order,
    *,
    execution_type: ExecutionType,
    event_time_ms: int,
    execution_id: int,
    fill: AccountTrade | None = None,
    on_book: bool | None = None,
) -> JsonObject:
    """An ``executionReport`` event in wire form (FACTS.md §10; samples.json
    ``user.executionReport``'s event object, minus ``v`` which Binance sends only for STP).

    For a CANCELED report ``c`` is the cancel request's client id and ``C`` the order's own.
    ``W`` is present once the order has been working; ``eR`` only for EXPIRED orders.
    ``on_book`` is ``w``; by default an open order that is working.
    """
    canceled = execution_type is ExecutionType.CANCELED
    last_qty = fill.qty if fill is not None else _ZERO
    last_price = fill.price if fill is not None else _ZERO
    event: JsonObject = {
        "e": "executionReport",
        "E": event_time_ms,
        "s": order.symbol,
        "c": (order.cancel_client_order_id or order.client_order_id)
        if canceled
        else order.client_order_id,
        "S": order.side.value,
        "o": order.type.value,
        "f": order.time_in_force.value,
        "q": _f(order.orig_qty),
        "p": _f(order.price),
        "P": _f(order.stop_price),
        "F": _f(_ZERO),
        "g": -1,
        "C": order.client_order_id if canceled else "",
        "x": execution_type.value,
        "X": order.status.value,
        "r": "NONE",
        "i": order.order_id,
        "l": _f(last_qty),
        "z": _f(order.executed_qty),
        "L": _f(last_price),
        "n": _f(fill.commission) if fill is not None else "0",
        "N": fill.commission_asset if fill is not None else None,
        "T": fill.time_ms if fill is not None else event_time_ms,
        "t": fill.trade_id if fill is not None else -1,
        "I": execution_id,
        "w": on_book if on_book is not None else (order.is_working and order.status.is_open),
        "m": fill.is_maker if fill is not None else False,
        "M": False,
        "O": order.time_ms,
        "Z": _f(order.cummulative_quote_qty),
        "Y": _f(last_qty * last_price),
        "Q": _f(order.orig_quote_order_qty),
    }
    if order.working_time_ms >= 0:
        event["W"] = order.working_time_ms
    event["V"] = "NONE"
    if order.status is OrderStatus.EXPIRED and order.expiry_reason is not None:
        event["eR"] = order.expiry_reason
    return event


def account_position_event(
    event_time_ms: int, update_time_ms: int, balances: Sequence[tuple[str, Decimal, Decimal]]
) -> JsonObject:
    """An ``outboundAccountPosition`` event: ``(asset, free, locked)`` of the changed assets."""
    return {
        "e": "outboundAccountPosition",
        "E": event_time_ms,
        "u": update_time_ms,
        "B": [{"a": a, "f": _f(free), "l": _f(locked)} for a, free, locked in balances],
    }
