"""The simulator's ASGI adapter: raw ASGI scope and messages in, :class:`HttpRequest` out.

The REST API (:mod:`genesis.sim.rest`) is a raw ASGI app so it controls every byte of every
answer and needs no socket (tests drive it through ``httpx.ASGITransport``; :func:`serve_rest`
puts it on hypercorn's Trio worker). This module is the HTTP side of that: the ASGI types,
reading a request (headers, the client IP, a bounded body), writing an answer, the
``lifespan`` protocol, and the hypercorn server. What a request *means* is the pipeline's.

Scopes and messages are read defensively (typed as ``Mapping[str, object]``, no ``Any``): a
malformed scope yields an empty value, never an exception.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Final, NoReturn, cast

import attrs
import trio

from genesis.sim.errors import TOO_MANY_PARAMETERS, SimReject

__all__ = [
    "CONTENT_TYPE_JSON",
    "MAX_BODY_BYTES",
    "AsgiApp",
    "HttpReply",
    "HttpRequest",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "read_request",
    "send_reply",
    "serve_lifespan",
    "serve_rest",
]

logger = logging.getLogger(__name__)

CONTENT_TYPE_JSON: Final = "application/json;charset=UTF-8"
MAX_BODY_BYTES: Final = 64 * 1024
"""Largest request body read; bigger ones are answered 413 -1101."""
_FORM: Final = "application/x-www-form-urlencoded"

Scope = Mapping[str, object]
Message = Mapping[str, object]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[dict[str, object]], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@attrs.frozen(kw_only=True)
class HttpRequest:
    """One HTTP request as the REST pipeline reads it.

    Attributes:
        method: Upper-case HTTP method.
        path: The path, as ASGI decoded it.
        raw_query: The query string's exact bytes (signatures are over them).
        raw_body: A form body's exact bytes; empty for any other content type.
        api_key_header: ``X-MBX-APIKEY``, or None.
        client_ip: The peer's address (``unknown`` when the server gave none).
    """

    method: str
    path: str
    raw_query: bytes
    raw_body: bytes
    api_key_header: str | None
    client_ip: str


@attrs.define(kw_only=True)
class HttpReply:
    """An answer: status, body, content type and extra headers (names as Binance spells them)."""

    status: int = 200
    body: bytes = b"{}"
    content_type: str = CONTENT_TYPE_JSON
    headers: list[tuple[str, str]] = attrs.field(factory=list)


def method_and_path(scope: Scope) -> tuple[str, str]:
    """The request's upper-case method and its path."""
    return str(scope.get("method", "GET")).upper(), str(scope.get("path", ""))


async def read_request(scope: Scope, receive: Receive) -> HttpRequest:
    """Read the request's headers and body (a form body only; others are ignored, unsigned).

    Raises:
        SimReject: 413 -1101, the body is larger than :data:`MAX_BODY_BYTES` (it is drained).
    """
    method, path = method_and_path(scope)
    raw_query = scope.get("query_string", b"")
    if not isinstance(raw_query, bytes):
        raw_query = b""
    api_key: str | None = None
    content_type: str | None = None
    headers = scope.get("headers", ())
    if isinstance(headers, list | tuple):
        for item in headers:
            if not isinstance(item, list | tuple) or len(item) != 2:
                continue
            name, value = item
            if not isinstance(name, bytes) or not isinstance(value, bytes):
                continue
            lowered = name.lower()
            if lowered == b"x-mbx-apikey" and api_key is None:
                api_key = value.decode("latin-1").strip()
            elif lowered == b"content-type" and content_type is None:
                content_type = value.decode("latin-1").strip().lower()
    body = await _read_body(receive)
    if body and content_type is not None and not content_type.startswith(_FORM):
        # Binance reads form bodies only: a JSON body is neither parsed nor signed.
        logger.info("sim.rest.body_ignored path=%s content_type=%s", path, content_type[:60])
        body = b""
    client = scope.get("client")
    ip = "unknown"
    if isinstance(client, list | tuple) and client and isinstance(client[0], str):
        ip = client[0]
    return HttpRequest(
        method=method,
        path=path,
        raw_query=raw_query,
        raw_body=body,
        api_key_header=api_key,
        client_ip=ip,
    )


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message.get("type") != "http.request":
            break
        chunk = message.get("body", b"")
        if isinstance(chunk, bytes) and chunk:
            size += len(chunk)
            if size <= MAX_BODY_BYTES:
                chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if size > MAX_BODY_BYTES:  # drained to the end, not kept
        raise SimReject(
            TOO_MANY_PARAMETERS, "Too many parameters sent for this endpoint.", status=413
        )
    return b"".join(chunks)


async def send_reply(send: Send, reply: HttpReply) -> None:
    """Write ``reply`` (``content-type`` and ``content-length`` first, then its headers)."""
    headers = [
        (b"content-type", reply.content_type.encode()),
        (b"content-length", str(len(reply.body)).encode()),
    ]
    headers += [(name.lower().encode(), value.encode()) for name, value in reply.headers]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


async def serve_lifespan(receive: Receive, send: Send) -> None:
    """Answer the ASGI ``lifespan`` protocol (nothing to start or stop) until shutdown."""
    while True:
        message = await receive()
        if message.get("type") == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message.get("type") == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _port_of(bind: str) -> int:
    return int(bind.rsplit(":", 1)[1])


async def serve_rest(
    app: AsgiApp,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve ``app`` over HTTP/1.1 on hypercorn's Trio worker until cancelled.

    ``port=0`` binds an ephemeral port. hypercorn's ``serve`` reports its binds through its own
    ``task_status`` (``["http://127.0.0.1:54321"]``, read back from the bound socket with
    ``getsockname``), so the real port is parsed from there and handed to ``task_status.started``.

    Args:
        app: the REST app (or any ASGI app wrapping it, e.g. with the admin API).
        host: interface to bind (keep ``127.0.0.1`` in tests).
        port: TCP port, 0 for an ephemeral one.
        task_status: receives the bound port.

    Cancellation: cancelling the caller's scope stops accepting and closes every connection
    (hypercorn's graceful timeout is set to 1 s). Nothing outlives the call.
    """
    from hypercorn.config import Config
    from hypercorn.trio import serve

    if TYPE_CHECKING:
        from hypercorn.typing import ASGIFramework

    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 1.0
    config.include_server_header = False
    async with trio.open_nursery() as nursery:
        # hypercorn types ASGI messages as TypedDicts; the app reads them as plain mappings.
        asgi_app = cast("ASGIFramework", app)
        binds = await nursery.start(partial(serve, asgi_app, config, mode="asgi"))
        bound = _port_of(binds[0]) if binds else port
        logger.info("sim.rest.listening host=%s port=%d", host, bound)
        task_status.started(bound)
        await trio.sleep_forever()
    raise AssertionError("unreachable")  # pragma: no cover
