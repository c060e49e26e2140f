"""Binance's error catalog for the simulator: codes, names and exact message templates.

Source: ``errors.md`` of ``binance/binance-spot-api-docs`` as digested in
``shared/binance/FACTS.md`` §5 and the ``rest.error.*`` payloads of ``samples.json``. Messages
are Binance's own templates; ``%s`` placeholders are filled with :func:`fmt` (``%``-formatting,
exactly like the server side printf they come from).

Every REST rejection the simulator sends is a :class:`SimReject`: an HTTP status plus Binance's
``{"code": ..., "msg": ...}`` body (and sometimes extra headers such as ``Retry-After``).
HTTP statuses follow rest-api.md "HTTP Return Codes": 4XX for client errors (401 for API-key
problems, as the WS API doc shows for -2015), 429 for rate limits, 418 for IP bans, 5XX when the
execution status is unknown.

Deviation, documented: ``-1131 BAD_RECV_WINDOW`` ("recvWindow must be less than 60000") is no
longer listed in the current spot errors.md, but older spot docs and Binance's derivatives
catalogs still carry it and client libraries (ccxt) map it; the simulator uses it for a
``recvWindow`` above 60000.
"""

from __future__ import annotations

from typing import Final

import attrs
import orjson

__all__ = [
    "BAD_API_KEY_FMT",
    "BAD_INTERVAL",
    "BAD_PRECISION",
    "BAD_RECV_WINDOW",
    "BAD_SYMBOL",
    "CANCEL_REJECTED",
    "CATALOG",
    "CLIENT_ORDER_ID_INVALID",
    "DISCONNECTED",
    "DUPLICATE_SYMBOLS",
    "ILLEGAL_CHARS",
    "INVALID_CANCEL_RESTRICTIONS",
    "INVALID_JSON",
    "INVALID_MESSAGE",
    "INVALID_ORDER_TYPE",
    "INVALID_PARAMETER",
    "INVALID_SIDE",
    "INVALID_SIGNATURE",
    "INVALID_SYMBOLSTATUS",
    "INVALID_TICKER_TYPE",
    "INVALID_TIF",
    "INVALID_TIMESTAMP",
    "INVALID_TIME_UNIT",
    "MANDATORY_PARAM_EMPTY_OR_MALFORMED",
    "MAXIMUM_SUBSCRIPTION_IDS",
    "MORE_THAN_XX_HOURS",
    "MSG_BAD_RECV_WINDOW",
    "MSG_BOTH_PARAMS_EMPTY",
    "MSG_CANCEL_RESTRICTIONS",
    "MSG_DUPLICATE_ORDER",
    "MSG_DUPLICATE_PARAM",
    "MSG_FILTER_FAILURE",
    "MSG_ILLEGAL_CHARS",
    "MSG_ILLEGAL_CHARS_PARAM",
    "MSG_INSUFFICIENT_BALANCE",
    "MSG_INVALID_ID",
    "MSG_INVALID_JSON",
    "MSG_INVALID_PARAMETER",
    "MSG_INVALID_PARAMS",
    "MSG_INVALID_TIME_UNIT",
    "MSG_IP_BANNED",
    "MSG_LIQUIDITY_BELOW_MIN",
    "MSG_MANDATORY_PARAM",
    "MSG_MARKET_CLOSED",
    "MSG_MAX_SUBSCRIPTION_IDS",
    "MSG_MORE_THAN_HOURS",
    "MSG_NOT_AUTHORIZED",
    "MSG_PARAM_EMPTY",
    "MSG_PARAM_NOT_REQUIRED",
    "MSG_SUBSCRIPTION_ACTIVE",
    "MSG_SUBSCRIPTION_INACTIVE",
    "MSG_TIMESTAMP_AHEAD",
    "MSG_TIMESTAMP_OUTSIDE_RECV_WINDOW",
    "MSG_TOO_MANY_ORDERS",
    "MSG_TOO_MANY_REQUESTS_QUEUED",
    "MSG_TOO_MANY_SUBSCRIPTIONS",
    "MSG_TOO_MUCH_PRECISION",
    "MSG_TOO_MUCH_WEIGHT",
    "MSG_UNKNOWN_METHOD",
    "MSG_UNKNOWN_ORDER",
    "MSG_UNREAD_PARAMETERS",
    "MSG_UNSUPPORTED",
    "MSG_WOULD_MATCH",
    "MSG_WOULD_TRIGGER",
    "NEW_ORDER_REJECTED",
    "NO_SUCH_ORDER",
    "OPTIONAL_PARAMS_BAD_COMBO",
    "PARAM_EMPTY",
    "PARAM_NOT_REQUIRED",
    "REJECTED_MBX_KEY",
    "SERVER_BUSY",
    "SUBSCRIPTION_ACTIVE",
    "SUBSCRIPTION_INACTIVE",
    "SYMBOL_DOES_NOT_MATCH_STATUS",
    "TIMEOUT",
    "TOO_MANY_ORDERS",
    "TOO_MANY_PARAMETERS",
    "TOO_MANY_REQUESTS",
    "UNAUTHORIZED",
    "UNKNOWN",
    "UNREAD_PARAMETERS",
    "UNSUPPORTED_OPERATION",
    "ErrorCode",
    "SimReject",
    "error_body",
    "fmt",
    "http_status_for",
]


@attrs.frozen
class ErrorCode:
    """One catalog entry: the numeric code, Binance's name and its documented messages.

    ``messages[0]`` is the generic message; the others are the documented variants (templates
    with ``%s`` placeholders where Binance has them).
    """

    code: int
    name: str
    messages: tuple[str, ...]

    @property
    def message(self) -> str:
        """The generic message (the first documented one)."""
        return self.messages[0]


def _entries(*items: tuple[int, str, tuple[str, ...]]) -> dict[int, ErrorCode]:
    return {code: ErrorCode(code, name, messages) for code, name, messages in items}


# --- message templates used by the simulator (exact Binance text) -------------------------

MSG_TOO_MANY_REQUESTS_QUEUED: Final = "Too many requests queued."
MSG_TOO_MUCH_WEIGHT: Final = (
    "Too much request weight used; current limit is %s request weight per %s. "
    "Please use WebSocket Streams for live updates to avoid polling the API."
)
MSG_IP_BANNED: Final = (
    "Way too much request weight used; IP banned until %s. "
    "Please use WebSocket Streams for live updates to avoid bans."
)
MSG_TOO_MANY_ORDERS: Final = "Too many new orders; current limit is %s orders per %s."
MSG_TIMESTAMP_OUTSIDE_RECV_WINDOW: Final = (
    "Timestamp for this request is outside of the recvWindow."
)
MSG_TIMESTAMP_AHEAD: Final = "Timestamp for this request was 1000ms ahead of the server's time."
MSG_ILLEGAL_CHARS: Final = "Illegal characters found in a parameter."
MSG_ILLEGAL_CHARS_PARAM: Final = "Illegal characters found in parameter '%s'; legal range is '%s'."
MSG_DUPLICATE_PARAM: Final = "Duplicate values for a parameter detected."
MSG_MANDATORY_PARAM: Final = "Mandatory parameter '%s' was not sent, was empty/null, or malformed."
MSG_BOTH_PARAMS_EMPTY: Final = "Param '%s' or '%s' must be sent, but both were empty/null!"
MSG_UNREAD_PARAMETERS: Final = (
    "Not all sent parameters were read; read '%s' parameter(s) but was sent '%s'."
)
MSG_PARAM_EMPTY: Final = "Parameter '%s' was empty."
MSG_PARAM_NOT_REQUIRED: Final = "Parameter '%s' sent when not required."
MSG_TOO_MUCH_PRECISION: Final = "Parameter '%s' has too much precision."
MSG_INVALID_PARAMETER: Final = "Data sent for parameter '%s' is not valid."
MSG_BAD_RECV_WINDOW: Final = "recvWindow must be less than 60000"
MSG_NOT_AUTHORIZED: Final = "You are not authorized to execute this request."
MSG_UNSUPPORTED: Final = "This operation is not supported."
MSG_INVALID_JSON: Final = "Invalid JSON Request"
MSG_INVALID_TIME_UNIT: Final = (
    "Invalid value for time unit; expected either MICROSECOND or MILLISECOND."
)
MSG_SUBSCRIPTION_ACTIVE: Final = "User Data Stream subscription already active."
MSG_SUBSCRIPTION_INACTIVE: Final = "User Data Stream subscription not active."
MSG_MAX_SUBSCRIPTION_IDS: Final = "Maximum subscription ID reached for this connection."
MSG_MORE_THAN_HOURS: Final = "More than %s hours between startTime and endTime."
MSG_FILTER_FAILURE: Final = "Filter failure: %s"
# Matching-engine texts: errors.md "Messages for -1010 ERROR_MSG_RECEIVED, -2010
# NEW_ORDER_REJECTED, and -2011 CANCEL_REJECTED".
MSG_MARKET_CLOSED: Final = "Market is closed."
MSG_DUPLICATE_ORDER: Final = "Duplicate order sent."
MSG_INSUFFICIENT_BALANCE: Final = "Account has insufficient balance for requested action."
MSG_WOULD_MATCH: Final = "Order would immediately match and take."
MSG_WOULD_TRIGGER: Final = "Order would trigger immediately."
MSG_LIQUIDITY_BELOW_MIN: Final = "Order book liquidity is less than symbol minimum quantity."
MSG_UNKNOWN_ORDER: Final = "Unknown order sent."
MSG_CANCEL_RESTRICTIONS: Final = "Order was not canceled due to cancel restrictions."

# WS API texts errors.md does not list (so CATALOG does not carry them); why each is used is
# in genesis.sim.ws_api's docstring.
MSG_INVALID_PARAMS: Final = "Invalid 'params' in JSON request; expected an object."
"""-1135 for ``params`` that is not an object: the server's text (binance-us-api-docs#126)."""
MSG_INVALID_ID: Final = "Invalid 'id' in JSON request; expected an integer, a string or null."
"""-1135 for a bad request ``id``: the simulator's wording, after :data:`MSG_INVALID_PARAMS`."""
MSG_UNKNOWN_METHOD: Final = "Unknown method."
"""-1020 for a WS API method that does not exist: the simulator's choice."""
MSG_TOO_MANY_SUBSCRIPTIONS: Final = "Too many active User Data Stream subscriptions."
"""-2042 when a connection has 1000 active subscriptions: the simulator's choice."""

# --- codes ----------------------------------------------------------------------------------

UNKNOWN: Final = -1000
DISCONNECTED: Final = -1001
UNAUTHORIZED: Final = -1002
TOO_MANY_REQUESTS: Final = -1003
TIMEOUT: Final = -1007
SERVER_BUSY: Final = -1008
TOO_MANY_ORDERS: Final = -1015
UNSUPPORTED_OPERATION: Final = -1020
INVALID_TIMESTAMP: Final = -1021
INVALID_SIGNATURE: Final = -1022
ILLEGAL_CHARS: Final = -1100
TOO_MANY_PARAMETERS: Final = -1101
MANDATORY_PARAM_EMPTY_OR_MALFORMED: Final = -1102
UNREAD_PARAMETERS: Final = -1104
PARAM_EMPTY: Final = -1105
PARAM_NOT_REQUIRED: Final = -1106
BAD_PRECISION: Final = -1111
BAD_INTERVAL: Final = -1120
BAD_SYMBOL: Final = -1121
OPTIONAL_PARAMS_BAD_COMBO: Final = -1128
INVALID_PARAMETER: Final = -1130
BAD_RECV_WINDOW: Final = -1131
INVALID_JSON: Final = -1135
DUPLICATE_SYMBOLS: Final = -1151
INVALID_SYMBOLSTATUS: Final = -1122
INVALID_TICKER_TYPE: Final = -1139
INVALID_TIME_UNIT: Final = -1194
SYMBOL_DOES_NOT_MATCH_STATUS: Final = -1220
BAD_API_KEY_FMT: Final = -2014
REJECTED_MBX_KEY: Final = -2015
SUBSCRIPTION_ACTIVE: Final = -2035
SUBSCRIPTION_INACTIVE: Final = -2036
MAXIMUM_SUBSCRIPTION_IDS: Final = -2042
INVALID_MESSAGE: Final = -1013
INVALID_TIF: Final = -1115
INVALID_ORDER_TYPE: Final = -1116
INVALID_SIDE: Final = -1117
MORE_THAN_XX_HOURS: Final = -1127
INVALID_CANCEL_RESTRICTIONS: Final = -1145
NEW_ORDER_REJECTED: Final = -2010
CANCEL_REJECTED: Final = -2011
NO_SUCH_ORDER: Final = -2013
CLIENT_ORDER_ID_INVALID: Final = -2039

CATALOG: Final[dict[int, ErrorCode]] = _entries(
    (-1000, "UNKNOWN", ("An unknown error occurred while processing the request.",)),
    (-1001, "DISCONNECTED", ("Internal error; unable to process your request. Please try again.",)),
    (-1002, "UNAUTHORIZED", (MSG_NOT_AUTHORIZED,)),
    (
        -1003,
        "TOO_MANY_REQUESTS",
        (MSG_TOO_MANY_REQUESTS_QUEUED, MSG_TOO_MUCH_WEIGHT, MSG_IP_BANNED),
    ),
    (
        -1006,
        "UNEXPECTED_RESP",
        ("An unexpected response was received from the message bus. Execution status unknown.",),
    ),
    (
        -1007,
        "TIMEOUT",
        (
            "Timeout waiting for response from backend server. "
            "Send status unknown; execution status unknown.",
        ),
    ),
    (
        -1008,
        "SERVER_BUSY",
        ("Server is currently overloaded with other requests. Please try again in a few minutes.",),
    ),
    (
        -1013,
        "INVALID_MESSAGE",
        (
            "The request is rejected by the API. "
            "(i.e. The request didn't reach the Matching Engine.)",
            MSG_FILTER_FAILURE,
        ),
    ),
    (-1014, "UNKNOWN_ORDER_COMPOSITION", ("Unsupported order combination.",)),
    (-1015, "TOO_MANY_ORDERS", ("Too many new orders.", MSG_TOO_MANY_ORDERS)),
    (-1016, "SERVICE_SHUTTING_DOWN", ("This service is no longer available.",)),
    (-1020, "UNSUPPORTED_OPERATION", (MSG_UNSUPPORTED,)),
    (-1021, "INVALID_TIMESTAMP", (MSG_TIMESTAMP_OUTSIDE_RECV_WINDOW, MSG_TIMESTAMP_AHEAD)),
    (-1022, "INVALID_SIGNATURE", ("Signature for this request is not valid.",)),
    (-1100, "ILLEGAL_CHARS", (MSG_ILLEGAL_CHARS, MSG_ILLEGAL_CHARS_PARAM)),
    (
        -1101,
        "TOO_MANY_PARAMETERS",
        (
            "Too many parameters sent for this endpoint.",
            "Too many parameters; expected '%s' and received '%s'.",
            MSG_DUPLICATE_PARAM,
        ),
    ),
    (
        -1102,
        "MANDATORY_PARAM_EMPTY_OR_MALFORMED",
        (
            "A mandatory parameter was not sent, was empty/null, or malformed.",
            MSG_MANDATORY_PARAM,
            MSG_BOTH_PARAMS_EMPTY,
        ),
    ),
    (-1103, "UNKNOWN_PARAM", ("An unknown parameter was sent.",)),
    (-1104, "UNREAD_PARAMETERS", ("Not all sent parameters were read.", MSG_UNREAD_PARAMETERS)),
    (-1105, "PARAM_EMPTY", ("A parameter was empty.", MSG_PARAM_EMPTY)),
    (
        -1106,
        "PARAM_NOT_REQUIRED",
        ("A parameter was sent when not required.", MSG_PARAM_NOT_REQUIRED),
    ),
    (-1108, "PARAM_OVERFLOW", ("Parameter '%s' overflowed.",)),
    (-1111, "BAD_PRECISION", (MSG_TOO_MUCH_PRECISION,)),
    (-1112, "NO_DEPTH", ("No orders on book for symbol.",)),
    (-1114, "TIF_NOT_REQUIRED", ("TimeInForce parameter sent when not required.",)),
    (-1115, "INVALID_TIF", ("Invalid timeInForce.",)),
    (-1116, "INVALID_ORDER_TYPE", ("Invalid orderType.",)),
    (-1117, "INVALID_SIDE", ("Invalid side.",)),
    (-1118, "EMPTY_NEW_CL_ORD_ID", ("New client order ID was empty.",)),
    (-1119, "EMPTY_ORG_CL_ORD_ID", ("Original client order ID was empty.",)),
    (-1120, "BAD_INTERVAL", ("Invalid interval.",)),
    (-1121, "BAD_SYMBOL", ("Invalid symbol.",)),
    (-1122, "INVALID_SYMBOLSTATUS", ("Invalid symbolStatus.",)),
    (-1125, "INVALID_LISTEN_KEY", ("This listenKey does not exist.",)),
    (
        -1127,
        "MORE_THAN_XX_HOURS",
        ("Lookup interval is too big.", MSG_MORE_THAN_HOURS),
    ),
    (-1128, "OPTIONAL_PARAMS_BAD_COMBO", ("Combination of optional parameters invalid.",)),
    (-1130, "INVALID_PARAMETER", ("Invalid data sent for a parameter.", MSG_INVALID_PARAMETER)),
    (-1131, "BAD_RECV_WINDOW", (MSG_BAD_RECV_WINDOW,)),
    (-1134, "BAD_STRATEGY_TYPE", ("`strategyType` was less than 1000000.",)),
    (-1135, "INVALID_JSON", (MSG_INVALID_JSON, "JSON sent for parameter '%s' is not valid")),
    (-1139, "INVALID_TICKER_TYPE", ("Invalid ticker type.",)),
    (-1145, "INVALID_CANCEL_RESTRICTIONS", ("Invalid cancelRestrictions",)),
    (-1151, "DUPLICATE_SYMBOLS", ("Symbol is present multiple times in the list.",)),
    (-1194, "INVALID_TIME_UNIT", (MSG_INVALID_TIME_UNIT,)),
    (
        -1220,
        "SYMBOL_DOES_NOT_MATCH_STATUS",
        ("The symbol's status does not match the requested symbolStatus.",),
    ),
    (
        -2010,
        "NEW_ORDER_REJECTED",
        (
            "NEW_ORDER_REJECTED",
            MSG_MARKET_CLOSED,
            MSG_DUPLICATE_ORDER,
            MSG_INSUFFICIENT_BALANCE,
            MSG_WOULD_MATCH,
            MSG_WOULD_TRIGGER,
            MSG_LIQUIDITY_BELOW_MIN,
        ),
    ),
    (-2011, "CANCEL_REJECTED", ("CANCEL_REJECTED", MSG_UNKNOWN_ORDER, MSG_CANCEL_RESTRICTIONS)),
    (-2013, "NO_SUCH_ORDER", ("Order does not exist.",)),
    (-2014, "BAD_API_KEY_FMT", ("API-key format invalid.",)),
    (-2015, "REJECTED_MBX_KEY", ("Invalid API-key, IP, or permissions for action.",)),
    (
        -2026,
        "ORDER_ARCHIVED",
        (
            "Order was canceled or expired with no executed qty over 90 days ago "
            "and has been archived.",
        ),
    ),
    (-2035, "SUBSCRIPTION_ACTIVE", (MSG_SUBSCRIPTION_ACTIVE,)),
    (-2036, "SUBSCRIPTION_INACTIVE", (MSG_SUBSCRIPTION_INACTIVE,)),
    (-2039, "CLIENT_ORDER_ID_INVALID", ("Client order ID is not correct for this order ID.",)),
    (-2042, "MAXIMUM_SUBSCRIPTION_IDS", (MSG_MAX_SUBSCRIPTION_IDS,)),
)
"""Binance spot error codes the simulator can send, keyed by code."""

_HTTP_STATUS: Final[dict[int, int]] = {
    -1003: 429,
    -1015: 429,
    -1006: 503,
    -1007: 503,
    -1008: 503,
    -1001: 500,
    -1000: 500,
    -2014: 401,
    -2015: 401,
}


def fmt(template: str, *args: object) -> str:
    """Fill a Binance ``%s`` message template (``fmt(MSG_PARAM_EMPTY, "symbol")``)."""
    return template % args if args else template


def http_status_for(code: int) -> int:
    """The HTTP status the simulator answers with for Binance error ``code`` (400 by default)."""
    return _HTTP_STATUS.get(code, 400)


def error_body(code: int, msg: str) -> bytes:
    """Binance's REST error body ``{"code":-1121,"msg":"Invalid symbol."}`` as bytes."""
    return orjson.dumps({"code": code, "msg": msg})


class SimReject(Exception):
    """A request the simulated exchange rejects, in Binance's shape (the one rejection type).

    ``code`` and ``msg`` as Binance sends them (``msg`` defaults to the catalog's message for
    ``code``); ``status`` the HTTP status a REST answer carries (from the catalog by default);
    ``headers`` extra REST headers (``Retry-After``). The matching engine, the REST pipeline and
    the WebSocket API all raise it; each transport turns it into its own answer.
    """

    def __init__(
        self,
        code: int,
        msg: str | None = None,
        *,
        status: int | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        if msg is None:
            entry = CATALOG.get(code)
            msg = entry.message if entry is not None else CATALOG[UNKNOWN].message
        self.code = code
        self.msg = msg
        self.status = http_status_for(code) if status is None else status
        self.headers = headers
        super().__init__(code, msg)

    def __str__(self) -> str:
        return f"{self.code} {self.msg}"

    @classmethod
    def of(cls, code: int, template: str, *args: object) -> SimReject:
        """A rejection with ``template`` filled from ``args`` and the default HTTP status."""
        return cls(code, fmt(template, *args))

    def to_wire(self) -> dict[str, object]:
        """``{"code": code, "msg": msg}`` as Binance sends it."""
        return {"code": self.code, "msg": self.msg}

    def body(self) -> bytes:
        """The JSON body ``{"code":..,"msg":..}``."""
        return error_body(self.code, self.msg)
