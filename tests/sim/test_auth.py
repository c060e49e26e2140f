"""Request security of the simulator: signing vectors, signature extraction, timestamp rules.

The HMAC vectors are Binance's own, copied as literals from ``shared/binance/FACTS.md`` §2
("Official test vector 1", "Vector 2 (non-ASCII symbol)", "Vector 3 (query + body)"); the
conformance layer at the end re-reads them from ``samples.json`` where ``../shared`` exists.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from genesis.sim.auth import (
    ApiKey,
    KeyKind,
    KeyStore,
    SignedPayload,
    check_timestamp,
    hmac_signature,
    parse_recv_window_us,
    parse_timestamp_us,
    split_signature,
    verify_signature,
)
from genesis.sim.errors import SimReject

if TYPE_CHECKING:
    from pathlib import Path

# FACTS.md §2, "Official test vector 1" (rest-api.md "HMAC Keys").
API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
V1_PAYLOAD = (
    "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
    "&recvWindow=5000&timestamp=1499827319559"
)
V1_SIGNATURE = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
# FACTS.md §2, "Vector 2 (non-ASCII symbol １２３４５６)".
V2_PAYLOAD = (
    "symbol=%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96&side=BUY&type=LIMIT"
    "&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
)
V2_SIGNATURE = "e1353ec6b14d888f1164ae9af8228a3dbd508bc82eb867db8ab6046442f33ef3"
# FACTS.md §2, "Vector 3 (query + body)".
V3_QUERY = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC"
V3_BODY = "quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
V3_SIGNATURE = "0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77"

NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def hmac_key() -> ApiKey:
    return ApiKey.hmac(API_KEY, SECRET)


def rejected(code: int, msg: str | None = None) -> pytest.RaisesExc[SimReject]:
    match = None if msg is None else f"^{code} " + msg.replace(".", r"\.").replace("(", r"\(")
    return pytest.raises(SimReject, match=match)


# --- HMAC vectors ---------------------------------------------------------------------------


def test_vector1_signature_is_reproduced() -> None:
    assert hmac_signature(SECRET, V1_PAYLOAD) == V1_SIGNATURE


def test_vector1_verifies_from_a_signed_query_string() -> None:
    signed = split_signature(f"{V1_PAYLOAD}&signature={V1_SIGNATURE}".encode(), b"")
    assert signed == SignedPayload(V1_PAYLOAD.encode(), V1_SIGNATURE.encode())
    verify_signature(hmac_key(), signed)


def test_vector2_verifies_over_the_percent_encoded_bytes() -> None:
    assert hmac_signature(SECRET, V2_PAYLOAD) == V2_SIGNATURE
    signed = split_signature(f"{V2_PAYLOAD}&signature={V2_SIGNATURE}".encode(), b"")
    verify_signature(hmac_key(), signed)


def test_vector2_signed_over_unencoded_text_is_rejected() -> None:
    unencoded = V2_PAYLOAD.replace(
        "%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96", "１２３４５６"
    )
    bad = hmac_signature(SECRET, unencoded)
    signed = split_signature(f"{V2_PAYLOAD}&signature={bad}".encode(), b"")
    with rejected(-1022, "Signature for this request is not valid."):
        verify_signature(hmac_key(), signed)


def test_vector3_query_plus_body_without_separator() -> None:
    signed = split_signature(V3_QUERY.encode(), f"{V3_BODY}&signature={V3_SIGNATURE}".encode())
    assert signed.payload == (V3_QUERY + V3_BODY).encode()
    assert hmac_signature(SECRET, signed.payload) == V3_SIGNATURE
    verify_signature(hmac_key(), signed)


def test_hex_signature_is_case_insensitive() -> None:
    signed = split_signature(f"{V1_PAYLOAD}&signature={V1_SIGNATURE.upper()}".encode(), b"")
    verify_signature(hmac_key(), signed)


def test_wrong_secret_is_rejected_with_1022() -> None:
    key = ApiKey.hmac(API_KEY, SECRET.lower())
    signed = split_signature(f"{V1_PAYLOAD}&signature={V1_SIGNATURE}".encode(), b"")
    with rejected(-1022):
        verify_signature(key, signed)


def test_any_changed_byte_breaks_the_signature() -> None:
    tampered = V1_PAYLOAD.replace("price=0.1", "price=0.10")
    signed = split_signature(f"{tampered}&signature={V1_SIGNATURE}".encode(), b"")
    with rejected(-1022):
        verify_signature(hmac_key(), signed)


# --- signature extraction -------------------------------------------------------------------


def test_signature_is_cut_from_the_middle_preserving_other_bytes() -> None:
    raw = b"b=2&signature=abc&a=%2F1&&c"
    assert split_signature(raw, b"") == SignedPayload(b"b=2&a=%2F1&&c", b"abc")


def test_signature_at_the_start_of_the_body() -> None:
    signed = split_signature(b"x=1", b"signature=ff&y=2")
    assert signed == SignedPayload(b"x=1y=2", b"ff")


def test_query_signature_wins_over_body_signature() -> None:
    signed = split_signature(b"x=1&signature=aa", b"signature=bb&y=2")
    assert signed == SignedPayload(b"x=1y=2", b"aa")


def test_parameter_merely_containing_signature_is_kept() -> None:
    signed = split_signature(b"mysignature=1&signatures=2&x=signature", b"")
    assert signed == SignedPayload(b"mysignature=1&signatures=2&x=signature", None)


def test_duplicate_signature_is_1101() -> None:
    with rejected(-1101, "Duplicate values for a parameter detected."):
        split_signature(b"signature=aa&x=1&signature=bb", b"")


def test_missing_or_empty_signature_is_1102() -> None:
    for raw in (b"x=1", b"x=1&signature="):
        with rejected(
            -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed."
        ):
            verify_signature(hmac_key(), split_signature(raw, b""))


_piece = st.from_regex(r"[a-zA-Z]{1,8}=[A-Za-z0-9%.]{0,8}", fullmatch=True)


@given(
    pieces=st.lists(_piece, min_size=0, max_size=8),
    position=st.integers(min_value=0, max_value=8),
    signature=st.from_regex(r"[0-9a-f]{1,64}", fullmatch=True),
)
def test_cutting_the_signature_restores_what_was_signed(
    pieces: list[str], position: int, signature: str
) -> None:
    pieces = [p for p in pieces if not p.startswith("signature=")]
    with_sig = [*pieces]
    with_sig.insert(min(position, len(pieces)), f"signature={signature}")
    signed = split_signature("&".join(with_sig).encode(), b"")
    assert signed == SignedPayload("&".join(pieces).encode(), signature.encode())


# --- Ed25519 --------------------------------------------------------------------------------


def _ed25519() -> tuple[Ed25519PrivateKey, ApiKey]:
    private = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    pem = private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    return private, ApiKey.ed25519("edkey1", pem.decode())


def test_ed25519_signature_verifies_when_percent_encoded() -> None:
    private, key = _ed25519()
    assert key.kind is KeyKind.ED25519
    sig = base64.b64encode(private.sign(V1_PAYLOAD.encode())).decode()
    signed = split_signature(f"{V1_PAYLOAD}&signature={quote(sig, safe='')}".encode(), b"")
    verify_signature(key, signed)


def test_ed25519_double_encoded_signature_in_body_is_accepted() -> None:
    private, key = _ed25519()
    sig = base64.b64encode(private.sign(V3_QUERY.encode())).decode()
    twice = quote(quote(sig, safe=""), safe="")
    verify_signature(key, split_signature(V3_QUERY.encode(), f"signature={twice}".encode()))


def test_ed25519_from_raw_public_bytes_and_bad_signature() -> None:
    private, _ = _ed25519()
    raw_public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key = ApiKey.ed25519("edkey2", raw_public)
    other = Ed25519PrivateKey.from_private_bytes(bytes(32))
    sig = quote(base64.b64encode(other.sign(V1_PAYLOAD.encode())).decode(), safe="")
    with rejected(-1022):
        verify_signature(key, split_signature(f"{V1_PAYLOAD}&signature={sig}".encode(), b""))
    with rejected(-1022):
        verify_signature(key, split_signature(f"{V1_PAYLOAD}&signature=%%%".encode(), b""))


def test_ed25519_rejects_a_non_ed25519_pem() -> None:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    pem = (
        X25519PrivateKey.generate()
        .public_key()
        .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ValueError, match="Ed25519"):
        ApiKey.ed25519("x", pem.decode())


# --- API keys -------------------------------------------------------------------------------


def test_keystore_authenticates_and_rejects() -> None:
    store = KeyStore()
    store.add(hmac_key())
    assert store.authenticate(API_KEY) == hmac_key()
    assert len(store) == 1
    with rejected(-2015, "Invalid API-key, IP, or permissions for action."):
        store.authenticate(None)
    with rejected(-2015):
        store.authenticate("")
    with rejected(-2015):
        store.authenticate("unknownKey123")
    with rejected(-2014, "API-key format invalid."):
        store.authenticate("not a key!")
    store.remove(API_KEY)
    with rejected(-2015):
        store.authenticate(API_KEY)


def test_key_errors_answer_http_401() -> None:
    with pytest.raises(SimReject) as info:
        KeyStore().authenticate(None)
    assert info.value.status == 401


def test_key_shape_is_validated_on_creation() -> None:
    with pytest.raises(ValueError, match="API key"):
        ApiKey.hmac("bad key", "s")


def test_secret_is_not_in_repr() -> None:
    assert SECRET not in repr(hmac_key())


# --- timestamp and recvWindow ---------------------------------------------------------------


def test_timestamp_just_under_one_second_ahead_is_accepted() -> None:
    check_timestamp(str(NOW_MS + 999), None, now_ms=NOW_MS)


def test_timestamp_exactly_one_second_ahead_is_rejected() -> None:
    with rejected(-1021, "Timestamp for this request was 1000ms ahead of the server's time."):
        check_timestamp(str(NOW_MS + 1000), None, now_ms=NOW_MS)


def test_default_recv_window_is_5000_inclusive() -> None:
    check_timestamp(str(NOW_MS - 5000), None, now_ms=NOW_MS)
    with rejected(-1021, "Timestamp for this request is outside of the recvWindow."):
        check_timestamp(str(NOW_MS - 5001), None, now_ms=NOW_MS)


def test_explicit_recv_window_bounds() -> None:
    check_timestamp(str(NOW_MS - 60_000), "60000", now_ms=NOW_MS)
    with rejected(-1021):
        check_timestamp(str(NOW_MS - 60_001), "60000", now_ms=NOW_MS)
    check_timestamp(str(NOW_MS), "0", now_ms=NOW_MS)
    with rejected(-1021):
        check_timestamp(str(NOW_MS - 1), "0", now_ms=NOW_MS)


def test_recv_window_above_60000_is_1131() -> None:
    with rejected(-1131, "recvWindow must be less than 60000"):
        check_timestamp(str(NOW_MS), "60001", now_ms=NOW_MS)
    with rejected(-1131):
        check_timestamp(str(NOW_MS), "60000.001", now_ms=NOW_MS)


def test_fractional_recv_window_is_exact_in_microseconds() -> None:
    now_us = NOW_MS * 1000
    check_timestamp(str(now_us - 6_000_346), "6000.346", now_ms=NOW_MS)
    with rejected(-1021):
        check_timestamp(str(now_us - 6_000_347), "6000.346", now_ms=NOW_MS)
    with rejected(-1111, "Parameter 'recvWindow' has too much precision."):
        parse_recv_window_us("6000.3461")


def test_microsecond_timestamps_by_magnitude() -> None:
    assert parse_timestamp_us("1499827319559") == 1_499_827_319_559_000
    assert parse_timestamp_us("1499827319559123") == 1_499_827_319_559_123
    check_timestamp(str((NOW_MS + 1000) * 1000 - 1), None, now_ms=NOW_MS)
    with rejected(-1021, "Timestamp for this request was 1000ms ahead of the server's time."):
        check_timestamp(str((NOW_MS + 1000) * 1000), None, now_ms=NOW_MS)


def test_timestamp_before_2017_is_rejected_even_inside_the_window() -> None:
    now = 1_483_228_800_500
    check_timestamp("1483228800000", "60000", now_ms=now)
    with rejected(-1021, "Timestamp for this request is outside of the recvWindow."):
        check_timestamp("1483228799999", "60000", now_ms=now)


def test_timestamp_far_in_the_future_is_rejected() -> None:
    with rejected(-1021, "Timestamp for this request was 1000ms ahead of the server's time."):
        check_timestamp(str(NOW_MS + 10_001), None, now_ms=NOW_MS)


@pytest.mark.parametrize(
    ("timestamp", "recv_window", "code"),
    [
        (None, None, -1102),
        ("", None, -1102),
        ("abc", None, -1100),
        ("-1", None, -1100),
        ("1.5", None, -1100),
        ("123456789012345678901", None, -1100),
        (str(NOW_MS), "-1", -1100),
        (str(NOW_MS), "1e3", -1100),
        (str(NOW_MS), "", -1100),
    ],
)
def test_malformed_timing_parameters(
    timestamp: str | None, recv_window: str | None, code: int
) -> None:
    with rejected(code):
        check_timestamp(timestamp, recv_window, now_ms=NOW_MS)


def test_illegal_chars_message_names_the_parameter_and_range() -> None:
    with pytest.raises(SimReject) as info:
        check_timestamp("abc", None, now_ms=NOW_MS)
    assert info.value.msg == (
        "Illegal characters found in parameter 'timestamp'; legal range is '^[0-9]{1,20}$'."
    )


# --- conformance layer: samples.json ---------------------------------------------------------


@pytest.mark.shared
def test_samples_json_hmac_rest_vectors_verify(shared_dir: Path) -> None:
    samples = json.loads((shared_dir / "binance" / "samples.json").read_text())
    vectors = {k: v for k, v in samples.items() if k.startswith("sign.hmac.rest.")}
    assert len(vectors) >= 3
    for name, vector in vectors.items():
        key = ApiKey.hmac(API_KEY, vector["secretKey"])
        query = vector.get("queryString", vector["payload"])
        body = vector.get("requestBody", "")
        signed = (
            split_signature(query.encode(), (body + "&signature=" + vector["signature"]).encode())
            if body
            else split_signature((query + "&signature=" + vector["signature"]).encode(), b"")
        )
        assert signed.payload == vector["payload"].encode(), name
        verify_signature(key, signed)
