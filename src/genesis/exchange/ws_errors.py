"""How a WebSocket connection's failures are described and translated (streams and WS API).

The one place that turns trio-websocket's exceptions into the Genesis error tree for both the
market-data connections (:mod:`.ws_manager`) and the user data stream (:mod:`.user_stream`).
"""

from __future__ import annotations

from typing import Final

import trio_websocket

from genesis.errors import (
    ConnectError,
    ExchangeError,
    RateLimitedError,
    StreamRejectedError,
)

__all__ = [
    "close_text",
    "describe_error",
    "first_leaf",
    "translate_connect_error",
    "translate_rejection",
]

_REASON_CHARS: Final = 200


def close_text(exc: trio_websocket.ConnectionClosed) -> str:
    reason = exc.reason
    if reason is None:
        return "connection closed"
    return f"connection closed code={reason.code} reason={reason.reason or ''}"


def translate_connect_error(exc: BaseException) -> ConnectError:
    if isinstance(exc, trio_websocket.ConnectionRejected):
        return ConnectError(f"handshake rejected with HTTP {exc.status_code}")
    if isinstance(exc, trio_websocket.ConnectionTimeout):
        return ConnectError("handshake timed out")
    return ConnectError(f"connect failed: {type(exc).__name__}: {exc}")


def first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def translate_rejection(exc: trio_websocket.ConnectionRejected) -> ExchangeError:
    """A handshake the server answered with an HTTP status: 429/418 rate limits, other 4xx a
    :class:`~genesis.errors.StreamRejectedError` with the server's reason, else a connect
    error."""
    body = exc.body or b""
    text = body[:_REASON_CHARS].decode("utf-8", "replace")
    reason = "".join(c if c.isprintable() else " " for c in text).strip() or "(no reason given)"
    status = exc.status_code
    if status in (429, 418):
        return RateLimitedError(
            f"stream handshake answered HTTP {status}: {reason}", retry_after_s=0.0
        )
    if 400 <= status < 500:
        return StreamRejectedError(status, reason)
    return translate_connect_error(exc)
