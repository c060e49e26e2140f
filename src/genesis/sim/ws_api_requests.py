"""WS API frames: request parsing, answer frames, the error raised while answering, signing.

A request frame is ``{"id": .., "method": .., "params": {..}}``; :func:`parse_request` turns it
into a :class:`Request` (its ``params`` as :class:`~genesis.sim.params.Params`, each value as the
JSON text that is signed) or says why it cannot (a :class:`Failure` with the id, when readable).
Answers are built by :func:`result_frame` / :func:`error_frame`.

Signing differs from REST: every ``params`` entry except ``signature`` (``apiKey`` included),
sorted by name, joined ``k=v&...`` over the UTF-8 text with **no** percent-encoding
(:func:`signature_payload`). A signature over the ``urllib.parse.urlencode`` form of the same
pairs is accepted too, because python-binance signs WS API requests that way.
"""

from __future__ import annotations

import urllib.parse

import attrs
import orjson

from genesis.sim.auth import ApiKey, SignedPayload, verify_signature
from genesis.sim.errors import (
    INVALID_JSON,
    INVALID_SIGNATURE,
    MANDATORY_PARAM_EMPTY_OR_MALFORMED,
    MSG_INVALID_ID,
    MSG_INVALID_JSON,
    MSG_INVALID_PARAMS,
    MSG_MANDATORY_PARAM,
    SimReject,
    fmt,
)
from genesis.sim.params import Params, dumps

__all__ = [
    "Failure",
    "Request",
    "RequestId",
    "dumps_text",
    "error_frame",
    "mandatory",
    "parse_request",
    "result_frame",
    "signature_payload",
    "verify",
]


def _param_text(value: object) -> str:
    """A JSON parameter value as the text that is signed and parsed."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return orjson.dumps(value).decode()


def signature_payload(params: dict[str, str]) -> str:
    """The WS API signature payload: every param but ``signature``, sorted, ``k=v&...``.

    No percent-encoding: the HMAC (or Ed25519) runs over the UTF-8 bytes of this text.

    >>> signature_payload({"symbol": "BTCUSDT", "apiKey": "k", "signature": "x"})
    'apiKey=k&symbol=BTCUSDT'
    """
    return "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "signature")


def _urlencoded_payload(params: dict[str, str], raw: dict[str, object]) -> str:
    # python-binance signs urlencode(sorted params) with Python's str() of each value.
    pairs = [
        (k, raw[k] if isinstance(raw[k], str) else str(raw[k]))
        for k in sorted(params)
        if k != "signature"
    ]
    return urllib.parse.urlencode(pairs)


def verify(key: ApiKey, params: dict[str, str], raw: dict[str, object]) -> None:
    signature = params.get("signature")
    sig = None if signature is None else signature.encode()
    payload = signature_payload(params)
    try:
        verify_signature(key, SignedPayload(payload.encode(), sig))
    except SimReject as exc:
        alternative = _urlencoded_payload(params, raw)
        if exc.code != INVALID_SIGNATURE or alternative == payload:
            raise
        verify_signature(key, SignedPayload(alternative.encode(), sig))


# --- frames ---------------------------------------------------------------------------------


def dumps_text(value: object) -> str:
    """``value`` as JSON text (Decimals as strings)."""
    return dumps(value).decode()


RequestId = int | str | None


@attrs.define(kw_only=True)
class Failure(Exception):
    """A WS API error answer raised inside request processing (never escapes it)."""

    status: int
    code: int
    msg: str
    data: dict[str, int] | None = None
    revoke: bool = False  # answer with id null (a revoked session)

    @classmethod
    def of(cls, error: SimReject) -> Failure:
        return cls(status=error.status, code=error.code, msg=error.msg)


def error_frame(
    req_id: RequestId, failure: Failure, rate_limits: list[dict[str, object]] | None
) -> str:
    error: dict[str, object] = {"code": failure.code, "msg": failure.msg}
    if failure.data is not None:
        error["data"] = failure.data
    body: dict[str, object] = {"id": req_id, "status": failure.status, "error": error}
    if rate_limits is not None:
        body["rateLimits"] = rate_limits
    return dumps_text(body)


def result_frame(
    req_id: RequestId, result: object, rate_limits: list[dict[str, object]] | None
) -> str:
    body: dict[str, object] = {"id": req_id, "status": 200, "result": result}
    if rate_limits is not None:
        body["rateLimits"] = rate_limits
    return dumps_text(body)


def _valid_id(value: object) -> bool:
    if value is None or isinstance(value, str):
        return True
    return isinstance(value, int) and not isinstance(value, bool)


# --- request processing -----------------------------------------------------------------------


@attrs.define(kw_only=True)
class Request:
    req_id: RequestId
    method: str
    raw: dict[str, object]
    params: Params
    now_ms: int
    return_rate_limits: bool
    account: str | None = None  # ORDERS windows to report (order.place)
    succeeded: bool = False


def mandatory(name: str) -> Failure:
    return Failure(
        status=400,
        code=MANDATORY_PARAM_EMPTY_OR_MALFORMED,
        msg=fmt(MSG_MANDATORY_PARAM, name),
    )


def parse_request(
    message: str | bytes, *, return_rate_limits: bool
) -> Request | tuple[RequestId, Failure]:
    """A request frame as a :class:`Request`, or ``(id or None, why it is not one)``.

    Args:
        message: The frame as received (binary frames are refused).
        return_rate_limits: The connection's default for ``rateLimits`` in answers.
    """
    bad_json = Failure(status=400, code=INVALID_JSON, msg=MSG_INVALID_JSON)
    if isinstance(message, bytes):  # requests must be text frames
        return None, bad_json
    try:
        decoded: object = orjson.loads(message)
    except orjson.JSONDecodeError:
        return None, bad_json
    if not isinstance(decoded, dict):
        return None, bad_json
    if "id" not in decoded:
        return None, mandatory("id")
    req_id: object = decoded["id"]
    if not _valid_id(req_id) or not isinstance(req_id, int | str | None):
        return None, Failure(status=400, code=INVALID_JSON, msg=MSG_INVALID_ID)
    method: object = decoded.get("method")
    if not isinstance(method, str) or not method:
        return req_id, mandatory("method")
    raw: object = decoded.get("params", {})
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return req_id, Failure(status=400, code=INVALID_JSON, msg=MSG_INVALID_PARAMS)
    values = {str(k): _param_text(v) for k, v in raw.items() if v is not None}
    raw_values = {str(k): v for k, v in raw.items() if v is not None}
    flag = raw_values.get("returnRateLimits")
    if flag is not None and values["returnRateLimits"].lower() in ("true", "false"):
        return_rate_limits = values["returnRateLimits"].lower() == "true"
    params = Params(values)
    params.read.add("returnRateLimits")
    return Request(
        req_id=req_id,
        method=method.removeprefix("v3/"),
        raw=raw_values,
        params=params,
        now_ms=0,
        return_rate_limits=return_rate_limits,
    )
