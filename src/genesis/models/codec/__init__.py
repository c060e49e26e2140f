"""Binance wire JSON ⇄ Genesis models: the only package that knows Binance's payload format.

Decoding is hand-written per event kind (the measured hot path: a generic cattrs structure of
depth20 costs ~20x orjson's parse; see ARCHITECTURE.md §7) and registered into a cattrs
converter by :func:`make_converter`, so callers that want cattrs get the same rules.

Rules:
- prices and quantities arrive as JSON strings and become :class:`~decimal.Decimal`; a JSON
  float where Binance sends a string is rejected (a float near money is a bug);
- unknown keys are ignored (Binance adds fields; old captures carry removed ones);
- every failure raises :class:`~genesis.errors.ExchangeProtocolError` naming the kind and key.

Layout (import from this package; the submodules are private):
- ``_wire``: shared primitives: :func:`parse_decimal`, :func:`decimal_to_wire`,
  :func:`decode_json`, the typed scalar readers and the error guard;
- ``_frame``: the combined-stream envelope (:func:`parse_frame`) and the dedup keys read from
  a frame's raw text (:data:`KEY_READERS`), so copies are dropped before any parse;
- ``_market``: market stream events, :func:`decode_frame`, :func:`decode_stream_payload`,
  :func:`make_converter`;
- ``_record``: Genesis's own record format for every bus event (``--record``, replay, the NATS
  bridge): :func:`event_to_record`, :func:`record_to_event`;
- ``_rest``: REST requests and answers: orders, exchangeInfo, account, trades, error bodies,
  usage headers, IP-ban messages;
- ``_user``: WebSocket API frames and user data stream events.
"""

from __future__ import annotations

from genesis.models.codec._frame import (
    KEY_READERS,
    MAX_FRAME_CHARS,
    FrameKey,
    frame_key_of,
    is_depth_frame,
    parse_frame,
    read_event_time,
    read_stream,
)
from genesis.models.codec._market import (
    MARKET_EVENT_TYPES,
    MarketEvent,
    decode_depth,
    decode_depth_frame,
    decode_depth_update,
    decode_frame,
    decode_kline,
    decode_stream_payload,
    decode_ticker,
    decode_trade,
    decode_trade_frame,
    make_converter,
)
from genesis.models.codec._record import RECORD_TYPES, event_to_record, record_to_event
from genesis.models.codec._rest import (
    UsageReport,
    decode_account,
    decode_error_body,
    decode_exchange_info,
    decode_historical_trades,
    decode_klines,
    decode_my_trades,
    decode_order,
    decode_orders,
    decode_server_time,
    order_request_params,
    parse_ban_until_ms,
    parse_usage_headers,
)
from genesis.models.codec._user import (
    UserEvent,
    UserEventFrame,
    WsApiResponse,
    decode_account_position,
    decode_execution_report,
    decode_subscription_id,
    decode_user_event,
    decode_ws_api_frame,
    encode_ws_api_request,
)
from genesis.models.codec._wire import (
    FAULT_BAD_NUMBER,
    FAULT_BAD_PAYLOAD,
    FAULT_BAD_TYPE,
    FAULT_BAD_VALUE,
    FAULT_INVALID_JSON,
    FAULT_MISSING_FIELD,
    FAULT_NOT_A_FRAME,
    decimal_to_wire,
    decode_json,
    fault_kind,
    parse_decimal,
)

__all__ = [
    "FAULT_BAD_NUMBER",
    "FAULT_BAD_PAYLOAD",
    "FAULT_BAD_TYPE",
    "FAULT_BAD_VALUE",
    "FAULT_INVALID_JSON",
    "FAULT_MISSING_FIELD",
    "FAULT_NOT_A_FRAME",
    "KEY_READERS",
    "MARKET_EVENT_TYPES",
    "MAX_FRAME_CHARS",
    "RECORD_TYPES",
    "FrameKey",
    "MarketEvent",
    "UsageReport",
    "UserEvent",
    "UserEventFrame",
    "WsApiResponse",
    "decimal_to_wire",
    "decode_account",
    "decode_account_position",
    "decode_depth",
    "decode_depth_frame",
    "decode_depth_update",
    "decode_error_body",
    "decode_exchange_info",
    "decode_execution_report",
    "decode_frame",
    "decode_historical_trades",
    "decode_json",
    "decode_kline",
    "decode_klines",
    "decode_my_trades",
    "decode_order",
    "decode_orders",
    "decode_server_time",
    "decode_stream_payload",
    "decode_subscription_id",
    "decode_ticker",
    "decode_trade",
    "decode_trade_frame",
    "decode_user_event",
    "decode_ws_api_frame",
    "encode_ws_api_request",
    "event_to_record",
    "fault_kind",
    "frame_key_of",
    "is_depth_frame",
    "make_converter",
    "order_request_params",
    "parse_ban_until_ms",
    "parse_decimal",
    "parse_frame",
    "parse_usage_headers",
    "read_event_time",
    "read_stream",
    "record_to_event",
]
