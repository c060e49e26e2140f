"""Control messages on the market streams: SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, *_PROPERTY.

:func:`answer_control` answers one JSON text frame the way ``stream.binance.com`` does
(``shared/binance/FACTS.md`` §7): ``{"result":...,"id":...}``, or the live server's error shape
``{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":1}`` (``id`` only when it was
readable). It acts on a connection's subscriptions through :class:`ControlState` and
:class:`ControlTarget`, so the stream server (:mod:`genesis.sim.streams`) keeps the sockets and
this module the format.

Ids: a signed 64-bit integer, ``null``, or any string of up to 36 characters. Stream ids take the
WebSocket API's values since CHANGELOG 2023-12-04, and Binance's own Spot SDK sends
``str(uuid4())`` (hyphens included), not only the "alphanumeric" ids the docs still name.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Final, Protocol

import attrs
import orjson

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = ["INVALID_ID_MSG", "ControlState", "ControlTarget", "answer_control"]

logger = logging.getLogger("genesis.sim.streams")

INVALID_ID_MSG: Final = (
    "Invalid request: request ID must be a signed 64-bit integer, "
    "a string of up to 36 characters, or null"
)
"""Binance's documented text still says "must be an unsigned integer"; this states today's rule."""

_METHODS: Final = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_MAX_ID_CHARS: Final = 36
_METHOD_VALUE: Final = re.compile(r'"method"\s*:\s*("(?:[^"\\]|\\.)*"|[^,}\s]+)')
_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1


class ControlState(Protocol):
    """The part of a connection control messages read and change."""

    id: int
    streams: dict[str, None]  # ordered set, in subscription order
    combined: bool


@attrs.frozen(kw_only=True)
class ControlTarget:
    """What a connection's SUBSCRIBE/UNSUBSCRIBE act on.

    Attributes:
        canonical: Stream names as the hub knows them, or None if any is invalid.
        subscribe: Adds streams to the connection's hub subscriber.
        unsubscribe: Removes them.
        max_streams: The per-connection cap (1024).
    """

    canonical: Callable[[Iterable[str]], list[str] | None]
    subscribe: Callable[[list[str]], None]
    unsubscribe: Callable[[list[str]], None]
    max_streams: int


def answer_control(text: str, conn: ControlState, target: ControlTarget) -> str:
    """Answer one JSON control message (FACTS.md §7, web-socket-streams.md).

    Never raises: every mistake a client can make is an ``{"error":..}`` answer.
    """
    try:
        request: object = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return _error(3, f"Invalid JSON: expected value at line {exc.lineno} column {exc.colno}")
    if not isinstance(request, dict):
        return _error(2, "Invalid request: expected a JSON object")
    if "id" not in request or not _valid_id(request["id"]):
        return _error(2, INVALID_ID_MSG)
    req_id: int | str | None = request["id"]
    method: object = request.get("method")
    if "method" not in request:
        line, col = _line_col(text, len(text.rstrip()))
        return _error(
            2, f"Invalid request: missing field `method` at line {line} column {col}", req_id
        )
    if method not in _METHODS:
        return _error(2, _unknown_variant_msg(text, method), req_id)
    params: object = request.get("params")
    if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
        return _subscription(conn, target, str(method), params, req_id)
    if method == "LIST_SUBSCRIPTIONS":
        if isinstance(params, list) and params:
            return _error(2, "Invalid request: too many parameters", req_id)
        return _result(list(conn.streams), req_id)
    return _property(conn, str(method), params, req_id)


def _subscription(
    conn: ControlState,
    target: ControlTarget,
    method: str,
    params: object,
    req_id: int | str | None,
) -> str:
    if params is None:
        return _error(2, "Invalid request: missing field `params`", req_id)
    if not isinstance(params, list):
        return _error(2, "Invalid request: params must be an array of stream names", req_id)
    names: list[str] = [p for p in params if isinstance(p, str)]
    streams = target.canonical(names) if len(names) == len(params) else None
    if streams is None:
        return _error(2, "Invalid request: invalid stream", req_id)
    if method == "SUBSCRIBE":
        new = [s for s in streams if s not in conn.streams]
        limit = target.max_streams
        if len(conn.streams) + len(new) > limit:
            return _error(
                2, f"Invalid request: too many streams (at most {limit} per connection)", req_id
            )
        conn.streams.update(dict.fromkeys(new))
        target.subscribe(new)
    else:
        gone = [s for s in streams if s in conn.streams]
        for name in gone:
            del conn.streams[name]
        target.unsubscribe(gone)
    logger.debug("sim.ws.%s id=%d streams=%d", method.lower(), conn.id, len(conn.streams))
    return _result(None, req_id)


def _property(conn: ControlState, method: str, params: object, req_id: int | str | None) -> str:
    args = params if isinstance(params, list) else []
    if not args or not isinstance(args[0], str):
        return _error(2, "Invalid request: property name must be a string", req_id)
    if len(args) > (2 if method == "SET_PROPERTY" else 1):
        return _error(2, "Invalid request: too many parameters", req_id)
    if args[0] != "combined":
        return _error(0, "Unknown property", req_id)
    if method == "GET_PROPERTY":
        return _result(conn.combined, req_id)
    if len(args) < 2 or not isinstance(args[1], bool):
        return _error(1, "Invalid value type: expected Boolean", req_id)
    conn.combined = args[1]
    return _result(None, req_id)


def _result(result: object, req_id: int | str | None) -> str:
    return orjson.dumps({"result": result, "id": req_id}).decode()


def _error(code: int, msg: str, *req_id: int | str | None) -> str:
    """An error response; ``req_id`` (at most one) is omitted when the id was unreadable."""
    body: dict[str, object] = {"error": {"code": code, "msg": msg}}
    if req_id:
        body["id"] = req_id[0]
    return orjson.dumps(body).decode()


def _valid_id(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):  # JSON true/false: bool is an int subclass in Python
        return False
    if isinstance(value, int):
        return _INT64_MIN <= value <= _INT64_MAX
    if isinstance(value, str):
        return len(value) <= _MAX_ID_CHARS
    return False


def _line_col(text: str, offset: int) -> tuple[int, int]:
    """serde_json-style 1-based line and column of the character before ``offset``."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1)


def _unknown_variant_msg(text: str, method: object) -> str:
    expected = ", ".join(f"`{m}`" for m in _METHODS)
    variant = method if isinstance(method, str) else orjson.dumps(method).decode()
    match = _METHOD_VALUE.search(text)
    line, col = _line_col(text, match.end(1) if match else len(text.rstrip()))
    return (
        f"Invalid request: unknown variant `{variant}`, expected one of {expected} "
        f"at line {line} column {col}"
    )
