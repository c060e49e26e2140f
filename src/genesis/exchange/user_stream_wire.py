"""The user stream's WS API wire: request ids, signed params, sending and reading one frame.

:class:`WsApiWire` is owned by the user stream service
(:func:`~genesis.exchange.user_stream.run_user_stream`, whose docstring has the rules): it
numbers the requests (integers counting up from 1 for the service's life), signs the logon or
subscribe params, translates an error answer into the Genesis error tree, and sends or reads
one frame on a :class:`Connection`, a closed connection becoming a
:class:`~genesis.errors.ConnectionLostError`. Keys, signatures and frames are never logged.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import attrs
import trio
import trio_websocket
from wsproto.utilities import LocalProtocolError

from genesis.errors import (
    ConnectionLostError,
    ExchangeError,
    ExchangeRejectedError,
    IpBannedError,
    RateLimitedError,
)
from genesis.exchange.signing import ws_api_signature_payload
from genesis.exchange.ws_errors import close_text
from genesis.models.codec import encode_ws_api_request

if TYPE_CHECKING:
    from genesis.config import Secret
    from genesis.exchange.signing import Signer
    from genesis.exchange.user_stream import WsApiWebSocket
    from genesis.exchange.ws_manager import WallClock
    from genesis.models.codec import WsApiResponse

__all__ = ["Connection", "WsApiWire"]


@attrs.define(eq=False)
class Connection:
    """One WS API connection of the user stream and what it is doing."""

    ws: WsApiWebSocket
    connected_at: float
    last_frame_at: float
    subscription_id: int | None = None
    subscribed_at: float | None = None
    during: str = "connect"
    """What the connection was doing: a request's method, ``relay`` or ``on_gap``."""
    broken: bool = False
    """Lost or unresponsive: no unsubscribe, and the close handshake is not waited for."""
    terminated: bool = False
    shutdown_notice: bool = False
    planned: str | None = None
    """Why it is being replaced on purpose (``serverShutdown``, ``age``)."""


@attrs.define(eq=False)
class WsApiWire:
    """Requests and frames of the WS API, for one user stream service.

    Args:
        api_key: Sent in the signed params, never logged.
        signer: Signs the logon (Ed25519 keys) or the subscribe (any other key type).
        server_time_ms: Epoch-ms clock for the signed ``timestamp`` and ``retryAfter``.
        recv_window_ms: ``recvWindow`` of the signed requests.
    """

    api_key: Secret
    signer: Signer
    server_time_ms: WallClock
    recv_window_ms: int
    _ids: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1), init=False)

    def request(self, method: str, params: dict[str, str | int] | None = None) -> tuple[int, str]:
        """A fresh request id and the request's text."""
        request_id = next(self._ids)
        return request_id, encode_ws_api_request(request_id, method, params)

    def signed_params(self) -> dict[str, str | int]:
        params: dict[str, str | int] = {
            "apiKey": self.api_key.reveal(),
            "recvWindow": self.recv_window_ms,
            "timestamp": self.server_time_ms(),
        }
        payload = ws_api_signature_payload({k: str(v) for k, v in params.items()})
        params["signature"] = self.signer.sign(payload.encode())
        return params

    def rejection(self, answer: WsApiResponse) -> ExchangeError:
        """The Genesis error for an error answer (a 429/418 with its ``retryAfter``)."""
        code = answer.error_code if answer.error_code is not None else 0
        retry_after_s = 0.0
        if answer.retry_after_ms is not None:
            retry_after_s = max(0.0, (answer.retry_after_ms - self.server_time_ms()) / 1000)
        if answer.status == 418:
            return IpBannedError(
                answer.error_msg, retry_after_s=retry_after_s, until_ms=answer.retry_after_ms
            )
        if answer.status == 429:
            return RateLimitedError(answer.error_msg, retry_after_s=retry_after_s)
        return ExchangeRejectedError(code, answer.error_msg, http_status=answer.status)

    @staticmethod
    async def send(conn: Connection, text: str) -> None:
        try:
            await conn.ws.send_message(text)
        except trio_websocket.ConnectionClosed as exc:
            conn.broken = True
            raise ConnectionLostError(close_text(exc)) from exc
        except LocalProtocolError as exc:
            # The peer's close frame arrived (wsproto is closing) before trio-websocket saw it.
            conn.broken = True
            raise ConnectionLostError(f"closing: {exc}") from exc

    @staticmethod
    async def receive(conn: Connection, deadline: float) -> str | bytes | None:
        """The next frame, or None at ``deadline``."""
        with trio.move_on_at(deadline):
            try:
                raw = await conn.ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                conn.broken = True
                raise ConnectionLostError(close_text(exc)) from exc
            conn.last_frame_at = trio.current_time()
            return raw
        return None
