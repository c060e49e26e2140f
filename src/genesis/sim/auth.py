"""Request security for the simulator's REST API: API keys, signatures, timestamp rules.

Rules (``shared/binance/FACTS.md`` §2, rest-api.md "Request Security" / "Timing security"):

- The API key arrives in the ``X-MBX-APIKEY`` header. A key that is missing or unknown is
  ``-2015`` (HTTP 401); one that is not even shaped like a key is ``-2014``.
- The signed payload is the **raw query string followed directly by the raw body** (no
  separator), each with the ``signature`` parameter removed *textually*: the ``&``-separated
  piece ``signature=...`` is cut out of the string it was in and every other byte stays as it was
  sent. Verification therefore runs over the percent-encoded bytes exactly as the client sent them
  (Binance enforces "percent-encode, then sign" since 2026-01-15).
- HMAC-SHA256 keys: the signature is hex, compared case-insensitively.
- Ed25519 keys: the signature is base64 of Ed25519 over the same payload, percent-encoded in the
  request. Compatibility: a value that was percent-encoded twice (python-binance encodes the
  signature itself and then its HTTP library form-encodes the body again) is accepted too.
- ``timestamp`` is mandatory on signed requests, in ms or µs (told apart by magnitude: 16 digits is
  µs); ``recvWindow`` is optional, in ms with up to 3 decimals, default 5000, max 60000
  (``-1131`` above). A request is accepted when ``timestamp < now + 1000 ms`` and
  ``now - timestamp <= recvWindow``; otherwise ``-1021`` with the matching documented message.
  Timestamps before 2017-01-01 or more than 10 s in the future are rejected too (CHANGELOG
  2024-12-09); the docs give no code for that rule, so the simulator uses ``-1021`` with the
  message of the side it fell off (both cases are also outside the recvWindow rule).

Everything here is pure and synchronous; "now" is passed in as ``now_ms`` (epoch ms).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import logging
import re
from decimal import Decimal
from typing import Final
from urllib.parse import unquote_to_bytes

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from genesis.sim.errors import (
    BAD_API_KEY_FMT,
    BAD_PRECISION,
    BAD_RECV_WINDOW,
    ILLEGAL_CHARS,
    INVALID_SIGNATURE,
    INVALID_TIMESTAMP,
    MANDATORY_PARAM_EMPTY_OR_MALFORMED,
    MSG_BAD_RECV_WINDOW,
    MSG_DUPLICATE_PARAM,
    MSG_ILLEGAL_CHARS_PARAM,
    MSG_MANDATORY_PARAM,
    MSG_TIMESTAMP_AHEAD,
    MSG_TIMESTAMP_OUTSIDE_RECV_WINDOW,
    MSG_TOO_MUCH_PRECISION,
    REJECTED_MBX_KEY,
    TOO_MANY_PARAMETERS,
    SimReject,
)

__all__ = [
    "API_KEY_RE",
    "DEFAULT_RECV_WINDOW_MS",
    "MAX_FUTURE_MS",
    "MAX_RECV_WINDOW_MS",
    "MIN_TIMESTAMP_MS",
    "ApiKey",
    "KeyKind",
    "KeyStore",
    "SignedPayload",
    "check_timestamp",
    "hmac_signature",
    "parse_recv_window_us",
    "parse_timestamp_us",
    "split_signature",
    "verify_signature",
]

logger = logging.getLogger(__name__)

DEFAULT_RECV_WINDOW_MS: Final = 5000
MAX_RECV_WINDOW_MS: Final = 60_000
MIN_TIMESTAMP_MS: Final = 1_483_228_800_000
"""2017-01-01T00:00:00Z: earlier timestamps are rejected (CHANGELOG 2024-12-09)."""
MAX_FUTURE_MS: Final = 10_000
"""A timestamp more than 10 s after the server's time is rejected (CHANGELOG 2024-12-09)."""
AHEAD_TOLERANCE_MS: Final = 1000
_MICROS_THRESHOLD: Final = 10**14
"""Timestamps at or above this are µs (16 digits today); below it ms (13 digits)."""

API_KEY_RE: Final = re.compile(r"[A-Za-z0-9]{1,128}")
"""What the simulator accepts as the shape of an API key (Binance's are 64 alphanumerics)."""

_UINT_RANGE: Final = "^[0-9]{1,20}$"
_RECV_WINDOW_RANGE: Final = "^[0-9]{1,20}(\\.[0-9]{1,3})?$"
_UINT_RE: Final = re.compile(r"[0-9]{1,20}")
_RECV_WINDOW_RE: Final = re.compile(r"([0-9]{1,20})(?:\.([0-9]+))?")


class KeyKind(enum.Enum):
    """How requests made with a key are signed."""

    HMAC = "HMAC"
    ED25519 = "ED25519"


@attrs.frozen(kw_only=True)
class ApiKey:
    """One API key: its public id and what verifies its signatures.

    Build with :meth:`hmac` or :meth:`ed25519`. The secret never appears in ``repr``.
    """

    api_key: str
    kind: KeyKind
    secret: bytes = attrs.field(default=b"", repr=False)
    public_key: Ed25519PublicKey | None = attrs.field(default=None, repr=False)

    @classmethod
    def hmac(cls, api_key: str, secret: str) -> ApiKey:
        """An HMAC-SHA256 key (Binance's "HMAC key"); ``secret`` is case-sensitive."""
        _check_key_shape(api_key)
        return cls(api_key=api_key, kind=KeyKind.HMAC, secret=secret.encode())

    @classmethod
    def ed25519(cls, api_key: str, public_key: Ed25519PublicKey | bytes | str) -> ApiKey:
        """An Ed25519 key from a key object, 32 raw bytes, or a PEM (SubjectPublicKeyInfo) text.

        Raises:
            ValueError: ``public_key`` is not an Ed25519 public key.
        """
        _check_key_shape(api_key)
        if isinstance(public_key, str):
            loaded = load_pem_public_key(public_key.encode())
            if not isinstance(loaded, Ed25519PublicKey):
                raise ValueError("not an Ed25519 public key")
            public_key = loaded
        elif isinstance(public_key, bytes):
            public_key = Ed25519PublicKey.from_public_bytes(public_key)
        return cls(api_key=api_key, kind=KeyKind.ED25519, public_key=public_key)


def _check_key_shape(api_key: str) -> None:
    if API_KEY_RE.fullmatch(api_key) is None:
        raise ValueError("an API key is 1-128 ASCII letters and digits")


@attrs.define
class KeyStore:
    """The simulator's registered API keys, looked up by the ``X-MBX-APIKEY`` header value."""

    _keys: dict[str, ApiKey] = attrs.field(factory=dict, alias="keys")

    def add(self, key: ApiKey) -> None:
        """Register (or replace) ``key``."""
        self._keys[key.api_key] = key

    def remove(self, api_key: str) -> None:
        """Forget ``api_key`` (no error when absent): later requests with it get -2015."""
        self._keys.pop(api_key, None)

    def get(self, api_key: str) -> ApiKey | None:
        """The key registered as ``api_key``, or ``None``."""
        return self._keys.get(api_key)

    def __len__(self) -> int:
        return len(self._keys)

    def authenticate(self, header: str | None) -> ApiKey:
        """The key named by an ``X-MBX-APIKEY`` header value.

        Raises:
            SimReject: -2015 when the header is missing or the key unknown, -2014 when the value
                is not shaped like an API key.
        """
        if header is None or header == "":
            raise SimReject(REJECTED_MBX_KEY)
        if API_KEY_RE.fullmatch(header) is None:
            raise SimReject(BAD_API_KEY_FMT)
        key = self._keys.get(header)
        if key is None:
            raise SimReject(REJECTED_MBX_KEY)
        return key


@attrs.frozen
class SignedPayload:
    """What a signed request signed: ``payload`` bytes and the raw (still encoded) signature."""

    payload: bytes
    signature: bytes | None


def _cut_signature(raw: bytes) -> tuple[bytes, list[bytes]]:
    """``raw`` with every ``signature=`` piece removed, and the removed values (still encoded)."""
    if b"signature" not in raw:
        return raw, []
    kept: list[bytes] = []
    found: list[bytes] = []
    for piece in raw.split(b"&"):
        name, sep, value = piece.partition(b"=")
        if name == b"signature":
            found.append(value if sep else b"")
        else:
            kept.append(piece)
    return b"&".join(kept), found


def split_signature(raw_query: bytes, raw_body: bytes) -> SignedPayload:
    """Cut ``signature`` out of the raw query and body; return the signed payload and signature.

    The payload is ``query + body`` with no separator, each part exactly as sent except for the
    removed ``signature=...`` piece (and the ``&`` that joined it). A signature in the query wins
    over one in the body, as for every other parameter.

    Raises:
        SimReject: -1101 when ``signature`` appears twice in the query or twice in the body.
    """
    query, in_query = _cut_signature(raw_query)
    body, in_body = _cut_signature(raw_body)
    if len(in_query) > 1 or len(in_body) > 1:
        raise SimReject(TOO_MANY_PARAMETERS, MSG_DUPLICATE_PARAM)
    signature = in_query[0] if in_query else (in_body[0] if in_body else None)
    return SignedPayload(payload=query + body, signature=signature)


def hmac_signature(secret: str | bytes, payload: bytes | str) -> str:
    """Lower-case hex HMAC-SHA256 of ``payload`` under ``secret`` (what a client sends)."""
    key = secret.encode() if isinstance(secret, str) else secret
    data = payload.encode() if isinstance(payload, str) else payload
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def _decode_ed25519_signature(raw: bytes) -> bytes | None:
    value = unquote_to_bytes(raw)
    for _ in range(2):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            if b"%" not in value:
                return None
            value = unquote_to_bytes(value)  # python-binance double-encodes form bodies
    return None


def verify_signature(key: ApiKey, signed: SignedPayload) -> None:
    """Check ``signed.signature`` against ``signed.payload`` for ``key``.

    Raises:
        SimReject: -1102 when there is no signature, -1022 when it does not verify.
    """
    raw = signed.signature
    if raw is None or raw == b"":
        raise SimReject.of(MANDATORY_PARAM_EMPTY_OR_MALFORMED, MSG_MANDATORY_PARAM, "signature")
    if key.kind is KeyKind.HMAC:
        expected = hmac_signature(key.secret, signed.payload).encode()
        if hmac.compare_digest(expected, unquote_to_bytes(raw).lower()):
            return
    else:
        sig = _decode_ed25519_signature(raw)
        if sig is not None and key.public_key is not None:
            try:
                key.public_key.verify(sig, signed.payload)
            except InvalidSignature:
                pass
            else:
                return
    logger.info("sim.auth.bad_signature api_key=%s kind=%s", key.api_key[:8], key.kind.value)
    raise SimReject(INVALID_SIGNATURE)


def parse_timestamp_us(value: str | None) -> int:
    """``timestamp`` as epoch µs; ms values (13 digits) are scaled, µs values (16) kept.

    Raises:
        SimReject: -1102 when missing or empty, -1100 when not an unsigned integer.
    """
    if value is None or value == "":
        raise SimReject.of(MANDATORY_PARAM_EMPTY_OR_MALFORMED, MSG_MANDATORY_PARAM, "timestamp")
    if _UINT_RE.fullmatch(value) is None:
        raise SimReject.of(ILLEGAL_CHARS, MSG_ILLEGAL_CHARS_PARAM, "timestamp", _UINT_RANGE)
    number = int(value)
    return number if number >= _MICROS_THRESHOLD else number * 1000


def parse_recv_window_us(value: str | None) -> int:
    """``recvWindow`` (ms, up to 3 decimals) as µs; 5000 ms when absent.

    Raises:
        SimReject: -1100 malformed, -1111 more than 3 decimals, -1131 above 60000 ms.
    """
    if value is None:
        return DEFAULT_RECV_WINDOW_MS * 1000
    match = _RECV_WINDOW_RE.fullmatch(value)
    if match is None:
        raise SimReject.of(ILLEGAL_CHARS, MSG_ILLEGAL_CHARS_PARAM, "recvWindow", _RECV_WINDOW_RANGE)
    if match.group(2) is not None and len(match.group(2)) > 3:
        raise SimReject.of(BAD_PRECISION, MSG_TOO_MUCH_PRECISION, "recvWindow")
    micros = int(Decimal(value) * 1000)
    if micros > MAX_RECV_WINDOW_MS * 1000:
        raise SimReject(BAD_RECV_WINDOW, MSG_BAD_RECV_WINDOW)
    return micros


def check_timestamp(timestamp: str | None, recv_window: str | None, *, now_ms: int) -> None:
    """Apply Binance's timing-security rules to a signed request arriving at ``now_ms``.

    Accepted iff ``timestamp < now + 1000 ms`` and ``now - timestamp <= recvWindow`` (both in
    µs, so µs timestamps and fractional recvWindows are exact), and the timestamp is not before
    2017 nor more than 10 s ahead.

    Raises:
        SimReject: -1102/-1100/-1111/-1131 for malformed parameters; -1021 with
            "...outside of the recvWindow." or "...1000ms ahead of the server's time.".
    """
    ts_us = parse_timestamp_us(timestamp)
    window_us = parse_recv_window_us(recv_window)
    now_us = now_ms * 1000
    if ts_us < MIN_TIMESTAMP_MS * 1000:
        logger.info("sim.auth.timestamp_before_2017 ts_us=%d", ts_us)
        raise SimReject(INVALID_TIMESTAMP, MSG_TIMESTAMP_OUTSIDE_RECV_WINDOW)
    if ts_us > now_us + MAX_FUTURE_MS * 1000:
        logger.info("sim.auth.timestamp_far_future ts_us=%d now_ms=%d", ts_us, now_ms)
        raise SimReject(INVALID_TIMESTAMP, MSG_TIMESTAMP_AHEAD)
    if ts_us >= now_us + AHEAD_TOLERANCE_MS * 1000:
        logger.info("sim.auth.timestamp_ahead ts_us=%d now_ms=%d", ts_us, now_ms)
        raise SimReject(INVALID_TIMESTAMP, MSG_TIMESTAMP_AHEAD)
    if now_us - ts_us > window_us:
        logger.info(
            "sim.auth.outside_recv_window ts_us=%d now_ms=%d window_us=%d", ts_us, now_ms, window_us
        )
        raise SimReject(INVALID_TIMESTAMP, MSG_TIMESTAMP_OUTSIDE_RECV_WINDOW)
