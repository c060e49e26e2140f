"""The simulator's admin API under ``/sim/`` (on the REST port): status and fault injection.

Every call is a plain HTTP request with query parameters, so ``curl -X POST`` is enough::

    GET  /sim/status                                  statistics, connections, fault switches
    POST /sim/faults/reset                            every fault off
    POST /sim/faults/drop[?id=N][&target=ws-api]      drop one connection or all (TCP close)
    POST /sim/faults/shutdown[?id=N]                  serverShutdown, then close 1001
    POST /sim/faults/stall?on=true|false[&id=N]       withhold market data, pings go on
    POST /sim/faults/pings?stop=true|false[&id=N]     stop sending pings
    POST /sim/faults/pongs?ignore=true|false[&id=N]   stop honouring pongs (close after 60 s)
    POST /sim/faults/errors?count=N[&status=503]      answer the next N REST requests 5xx
    POST /sim/faults/errors?rate=0.2[&status=503]     answer a fraction of REST requests 5xx
    POST /sim/faults/latency?ms=250                   add latency to every REST answer
    POST /sim/faults/execute-then-503[?count=1]       execute the next order, answer 503 -1007
    POST /sim/faults/clock-skew?ms=1500               move the simulator's clock
    POST /sim/faults/rate-limit?type=REQUEST_WEIGHT&interval=MINUTE&num=1&limit=100
    POST /sim/faults/halt?symbol=BTCUSDT[&status=HALT]  (status=TRADING resumes)

Answers are JSON: ``{"ok": true, "faults": {...}}`` or ``{"error": "..."}`` with status 400
(bad parameter), 404 (unknown path) or 405 (wrong method). Bad input never stops the server.

Every number is bounded (:data:`BOUNDS`): a latency of ``1e308`` ms would hang every REST call
for ever, a skew of years breaks every signature. A value out of range, or of the wrong kind, is
answered 400 with a plain sentence that names the parameter and its range (never the repr of a
validator's internals).
"""

from __future__ import annotations

import logging
import urllib.parse
from typing import TYPE_CHECKING, Final

import orjson

if TYPE_CHECKING:
    from collections.abc import Callable

    from genesis.sim.faults import Faults
    from genesis.sim.rest import Receive, Scope, Send

__all__ = ["BOUNDS", "AdminApp"]

logger = logging.getLogger(__name__)

_TRUE = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_MAX_COUNT: Final = 1_000_000

BOUNDS: Final[dict[str, tuple[float, float]]] = {
    "id": (0, 2**63 - 1),  # connection ids
    "count": (0, _MAX_COUNT),  # errors, execute-then-503
    "rate": (0.0, 1.0),
    "ms": (0, 60_000),  # latency: a minute is longer than any client's timeout
    "skew_ms": (-86_400_000, 86_400_000),  # clock skew: a day either way
    "num": (1, 1_000),  # rate-limit intervalNum
    "limit": (1, 1_000_000_000),  # rate-limit limit
}
"""The inclusive range of every numeric admin parameter."""

_ERROR_STATUSES: Final = frozenset({500, 502, 503, 504})


class _BadRequest(Exception):
    pass


class _Query:
    def __init__(self, raw: bytes) -> None:
        try:
            pairs = urllib.parse.parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise _BadRequest("query string is not UTF-8") from None
        self._values = dict(pairs)

    def text(self, name: str, default: str | None = None) -> str:
        value = self._values.get(name, default)
        if value is None:
            raise _BadRequest(f"missing parameter {name!r}")
        return value

    def has(self, name: str) -> bool:
        return name in self._values

    def optional_int(self, name: str, bound: str | None = None) -> int | None:
        return None if name not in self._values else self.integer(name, bound=bound)

    def integer(self, name: str, default: int | None = None, *, bound: str | None = None) -> int:
        raw = self._values.get(name)
        if raw is None:
            if default is None:
                raise _BadRequest(f"missing parameter {name!r}")
            return default
        # int() would take "1_000" and 4300 digits; a plain optionally signed decimal only.
        digits = raw.removeprefix("-")
        if not (digits.isascii() and digits.isdigit()) or len(digits) > 19:
            raise _BadRequest(f"parameter {name!r} must be an integer")
        value = int(raw)
        _check_range(name, value, bound or name)
        return value

    def number(self, name: str, *, bound: str | None = None) -> float:
        try:
            value = float(self.text(name))
        except ValueError:
            raise _BadRequest(f"parameter {name!r} must be a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise _BadRequest(f"parameter {name!r} must be finite")
        _check_range(name, value, bound or name)
        return value

    def flag(self, name: str, default: bool = True) -> bool:
        raw = self._values.get(name)
        if raw is None:
            return default
        try:
            return _TRUE[raw.lower()]
        except KeyError:
            raise _BadRequest(f"parameter {name!r} must be true or false") from None


def _check_range(name: str, value: float, bound: str) -> None:
    low, high = BOUNDS.get(bound, (float("-inf"), float("inf")))
    if not low <= value <= high:
        raise _BadRequest(f"parameter {name!r} must be within [{low:g}, {high:g}]")


def _error_status(q: _Query) -> int:
    status = q.integer("status", 503, bound="status")
    if status not in _ERROR_STATUSES:
        raise _BadRequest("parameter 'status' must be one of 500, 502, 503, 504")
    return status


def _plain(exc: Exception) -> str:
    """A one-line message: the first argument of a ValueError/KeyError, never a repr dump."""
    first = exc.args[0] if exc.args else None
    if isinstance(first, str) and first:
        return first.splitlines()[0][:200]
    return "invalid parameter value"


class AdminApp:
    """ASGI app for ``/sim/*``.

    Args:
        faults: the fault handle the calls act on.
        status: returns the statistics shown by ``GET /sim/status``.
    """

    def __init__(self, *, faults: Faults, status: Callable[[], dict[str, object]]) -> None:
        self._faults = faults
        self._status = status
        self._actions: dict[str, Callable[[_Query], None]] = {
            "reset": lambda q: faults.reset(),
            "drop": self._drop,
            "shutdown": self._shutdown,
            "stall": lambda q: faults.stall_streams(q.flag("on"), q.optional_int("id")),
            "pings": lambda q: faults.stop_pings(q.flag("stop"), q.optional_int("id")),
            "pongs": lambda q: faults.ignore_pongs(q.flag("ignore"), q.optional_int("id")),
            "errors": self._errors,
            "latency": lambda q: faults.latency(q.number("ms") / 1000),
            "execute-then-503": lambda q: faults.execute_then_503(q.integer("count", 1)),
            "clock-skew": lambda q: faults.clock_skew(q.integer("ms", bound="skew_ms")),
            "rate-limit": lambda q: faults.lower_limit(
                q.text("type"), q.text("interval"), q.integer("num", 1), q.integer("limit")
            ),
            "halt": lambda q: faults.halt(q.text("symbol").upper(), q.text("status", "HALT")),
        }

    def _shutdown(self, q: _Query) -> None:
        self._faults.shutdown_connections(q.optional_int("id"))

    def _drop(self, q: _Query) -> None:
        target = q.text("target", "streams")
        if target not in ("streams", "ws-api"):
            raise _BadRequest("target must be 'streams' or 'ws-api'")
        self._faults.drop_connections(q.optional_int("id"), ws_api=target == "ws-api")

    def _errors(self, q: _Query) -> None:
        status = _error_status(q)
        if q.has("rate"):
            self._faults.error_rate(q.number("rate"), status)
        else:
            self._faults.error_burst(q.integer("count"), status)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        method = str(scope.get("method", "GET"))
        raw_query = scope.get("query_string", b"")
        status, body = self._handle(
            method, path, raw_query if isinstance(raw_query, bytes) else b""
        )
        payload = orjson.dumps(body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    def _handle(self, method: str, path: str, raw_query: bytes) -> tuple[int, object]:
        try:
            if path == "/sim/status":
                if method != "GET":
                    return 405, {"error": "use GET"}
                return 200, {"faults": self._faults.snapshot(), **self._status()}
            name = path.removeprefix("/sim/faults/")
            action = self._actions.get(name) if name != path else None
            if action is None:
                return 404, {"error": f"unknown admin path {path[:100]!r}"}
            if method != "POST":
                return 405, {"error": "use POST"}
            action(_Query(raw_query))
        except (_BadRequest, ValueError, KeyError) as exc:
            message = _plain(exc)
            logger.info("sim.admin.rejected path=%s error=%s", path[:100], message)
            return 400, {"error": message}
        logger.info("sim.admin.fault path=%s query=%s", path, raw_query[:200].decode("latin-1"))
        return 200, {"ok": True, "faults": self._faults.snapshot()}
