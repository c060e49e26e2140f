"""Client-side signing: Binance's documented vectors, percent-encoding, Ed25519 keys, the simulator.

The vectors are Binance's own, written here as literals from ``shared/binance/FACTS.md`` §2
("Official test vector 1", "Vector 2 (non-ASCII symbol)", "Vector 3 (query + body)", and the two
WS API vectors), so a fresh clone checks them; the conformance layer at the end re-reads them
from ``samples.json`` where ``../shared`` exists. The client's signing code never imports the
simulator; these tests do, to check that what the client sends is what the server verifies.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qsl

import httpx
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from hypothesis import given
from hypothesis import strategies as st

from genesis.config import Secret, Settings, load_settings
from genesis.errors import ConfigError
from genesis.exchange.signing import (
    Ed25519Signer,
    HmacSigner,
    Signer,
    encode_params,
    load_signer,
    signed_query,
    ws_api_signature_payload,
)
from genesis.sim.auth import ApiKey, SignedPayload, split_signature, verify_signature
from genesis.sim.clock import SimClock
from genesis.sim.errors import SimReject
from genesis.sim.exchange import Exchange
from genesis.sim.rest import RestApp
from genesis.sim.symbols import default_symbols
from genesis.sim.ws_api import signature_payload

if TYPE_CHECKING:
    from pathlib import Path

# FACTS.md §2, "Official test vector 1" (rest-api.md "HMAC Keys").
API_KEY: Final = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
SECRET: Final = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
ORDER: Final = [
    ("symbol", "LTCBTC"),
    ("side", "BUY"),
    ("type", "LIMIT"),
    ("timeInForce", "GTC"),
    ("quantity", "1"),
    ("price", "0.1"),
    ("recvWindow", "5000"),
    ("timestamp", "1499827319559"),
]
V1_PAYLOAD: Final = (
    "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
    "&recvWindow=5000&timestamp=1499827319559"
)
V1_SIGNATURE: Final = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
# FACTS.md §2, "Vector 2 (non-ASCII symbol １２３４５６)".
V2_PAYLOAD: Final = (
    "symbol=%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96&side=BUY&type=LIMIT"
    "&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
)
V2_SIGNATURE: Final = "e1353ec6b14d888f1164ae9af8228a3dbd508bc82eb867db8ab6046442f33ef3"
# FACTS.md §2, "Vector 3 (query + body)".
V3_QUERY: Final = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC"
V3_BODY: Final = "quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
V3_SIGNATURE: Final = "0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77"
# FACTS.md §2, "HMAC on the WebSocket API": the two vectors, as params (signature included, to
# show it is left out) and the documented sorted payload.
WS1_PARAMS: Final = {
    "symbol": "BTCUSDT",
    "side": "SELL",
    "type": "LIMIT",
    "timeInForce": "GTC",
    "quantity": "0.01000000",
    "price": "52000.00",
    "recvWindow": "100",
    "timestamp": "1645423376532",
    "apiKey": API_KEY,
    "signature": "ignored",
}
WS1_PAYLOAD: Final = (
    f"apiKey={API_KEY}&price=52000.00&quantity=0.01000000&recvWindow=100&side=SELL"
    "&symbol=BTCUSDT&timeInForce=GTC&timestamp=1645423376532&type=LIMIT"
)
WS1_SIGNATURE: Final = "aa1b5712c094bc4e57c05a1a5c1fd8d88dcd628338ea863fec7b88e59fe2db24"
WS2_PARAMS: Final = {
    "symbol": "１２３４５６",
    "side": "BUY",
    "type": "LIMIT",
    "timeInForce": "GTC",
    "quantity": "1.00000000",
    "price": "0.10000000",
    "recvWindow": "5000",
    "timestamp": "1645423376532",
    "apiKey": API_KEY,
}
WS2_PAYLOAD: Final = (
    f"apiKey={API_KEY}&price=0.10000000&quantity=1.00000000&recvWindow=5000&side=BUY"
    "&symbol=１２３４５６&timeInForce=GTC&timestamp=1645423376532&type=LIMIT"
)
WS2_SIGNATURE: Final = "b33892ae8e687c939f4468c6268ddd4c40ac1af18ad19a064864c47bae0752cd"

T0: Final = 1_767_225_600_000  # 2026-01-01T00:00:00Z
UNRESERVED: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def hmac_signer() -> HmacSigner:
    return HmacSigner(Secret(SECRET))


def ed25519_private(seed: int = 1) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes(range(seed, seed + 32)))


def pkcs8_pem(private: Ed25519PrivateKey) -> bytes:
    return private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def write_key(tmp_path: Path, data: bytes, name: str = "key.pem") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.fixture
def ed25519_key(tmp_path: Path) -> tuple[Ed25519PrivateKey, Path]:
    """A fresh Ed25519 key (generated here, never a fixture file) and its PKCS#8 PEM file."""
    private = Ed25519PrivateKey.generate()
    return private, write_key(tmp_path, pkcs8_pem(private))


# --- HMAC: the documented REST vectors ------------------------------------------------------


def test_vector1_signed_query_reproduces_the_documented_signature() -> None:
    assert encode_params(ORDER) == V1_PAYLOAD
    assert hmac_signer().sign(V1_PAYLOAD.encode()) == V1_SIGNATURE
    assert signed_query(ORDER, hmac_signer()) == f"{V1_PAYLOAD}&signature={V1_SIGNATURE}"


def test_vector2_non_ascii_symbol_is_percent_encoded_before_signing() -> None:
    params = [("symbol", "１２３４５６"), *ORDER[1:]]
    assert encode_params(params) == V2_PAYLOAD
    assert signed_query(params, hmac_signer()) == f"{V2_PAYLOAD}&signature={V2_SIGNATURE}"


def test_vector3_query_plus_body_is_signed_without_a_separator() -> None:
    query, body = encode_params(ORDER[:4]), encode_params(ORDER[4:])
    assert (query, body) == (V3_QUERY, V3_BODY)
    assert hmac_signer().sign(query.encode() + body.encode()) == V3_SIGNATURE


def test_hmac_signature_is_lower_case_hex() -> None:
    signature = hmac_signer().sign(b"anything")
    assert len(signature) == 64
    assert set(signature) <= set("0123456789abcdef")


# --- HMAC: the documented WebSocket API vectors ---------------------------------------------


@pytest.mark.parametrize(
    ("params", "payload", "signature"),
    [(WS1_PARAMS, WS1_PAYLOAD, WS1_SIGNATURE), (WS2_PARAMS, WS2_PAYLOAD, WS2_SIGNATURE)],
    ids=["ascii", "non-ascii"],
)
def test_ws_api_payload_is_sorted_unencoded_and_reproduces_the_vectors(
    params: dict[str, str], payload: str, signature: str
) -> None:
    assert ws_api_signature_payload(params) == payload
    assert hmac_signer().sign(payload.encode("utf-8")) == signature


def test_ws_api_payload_matches_the_simulators_own_rule() -> None:
    for params in (WS1_PARAMS, WS2_PARAMS, {"apiKey": "k", "a b": "c&d=e"}):
        assert ws_api_signature_payload(params) == signature_payload(dict(params))


# --- percent-encoding -----------------------------------------------------------------------


def test_unreserved_characters_stay_and_everything_else_is_encoded() -> None:
    assert encode_params([("k", "AZaz09-._~")]) == "k=AZaz09-._~"
    assert encode_params([("a b", "x/y+z=1&2?#%,")]) == "a%20b=x%2Fy%2Bz%3D1%262%3F%23%25%2C"
    assert encode_params([("symbols", '["BNBBTC","BTCUSDT"]')]) == (
        "symbols=%5B%22BNBBTC%22%2C%22BTCUSDT%22%5D"
    )
    assert encode_params([("e", "é")]) == "e=%C3%A9"


def test_order_and_repeated_names_are_preserved() -> None:
    assert encode_params([("b", "1"), ("a", "2"), ("b", "3")]) == "b=1&a=2&b=3"
    assert encode_params([]) == ""
    assert encode_params([("empty", "")]) == "empty="


_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)


@given(params=st.lists(st.tuples(_text.filter(bool), _text), max_size=8))
def test_encoding_round_trips_and_uses_only_unreserved_characters_and_escapes(
    params: list[tuple[str, str]],
) -> None:
    encoded = encode_params(params)
    assert parse_qsl(encoded, keep_blank_values=True) == params
    for piece in encoded.split("&") if encoded else []:
        name, sep, value = piece.partition("=")
        assert sep == "="
        literal = (name + value).replace("%", "")
        assert set(literal) <= UNRESERVED
        assert "=" not in value
        assert "+" not in encoded


# --- signed_query mechanics -----------------------------------------------------------------


class FixedSigner:
    """A signer with a canned signature, to see how it is encoded."""

    key_type = "ED25519"

    def __init__(self, signature: str) -> None:
        self.signature = signature
        self.payloads: list[bytes] = []

    def sign(self, payload: bytes) -> str:
        self.payloads.append(payload)
        return self.signature


def test_base64_signature_is_percent_encoded_and_hex_is_not() -> None:
    base64_like = FixedSigner("ab+c/d==")
    assert signed_query([("x", "é")], base64_like) == "x=%C3%A9&signature=ab%2Bc%2Fd%3D%3D"
    assert base64_like.payloads == [b"x=%C3%A9"]
    assert signed_query([("x", "1")], FixedSigner("00ff")) == "x=1&signature=00ff"


def test_signed_query_without_params_and_with_a_signature_param() -> None:
    assert signed_query([], FixedSigner("ff")) == "signature=ff"
    with pytest.raises(ValueError, match="signature"):
        signed_query([("signature", "x")], FixedSigner("ff"))


def test_signers_satisfy_the_protocol() -> None:
    signers: list[Signer] = [hmac_signer(), Ed25519Signer(private_key=ed25519_private())]
    assert [s.key_type for s in signers] == ["HMAC", "ED25519"]


# --- Ed25519 ----------------------------------------------------------------------------------


def test_ed25519_from_pem_file_signs_and_the_public_key_verifies(
    ed25519_key: tuple[Ed25519PrivateKey, Path],
) -> None:
    private, path = ed25519_key
    signer = Ed25519Signer.from_pem_file(path)
    assert signer.key_type == "ED25519"
    signature = signer.sign(V1_PAYLOAD.encode())
    raw = base64.b64decode(signature, validate=True)
    assert len(raw) == 64
    private.public_key().verify(raw, V1_PAYLOAD.encode())  # raises InvalidSignature otherwise
    expected_pem = private.public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
    )
    assert signer.public_key_pem() == expected_pem.decode()
    assert Ed25519Signer.from_pem_bytes(pkcs8_pem(private)).sign(b"x") == signer.sign(b"x")


def test_ed25519_signature_in_a_query_is_percent_encoded(
    ed25519_key: tuple[Ed25519PrivateKey, Path],
) -> None:
    private, path = ed25519_key
    signer = Ed25519Signer.from_pem_file(path)
    query = signed_query(ORDER, signer)
    payload, _, encoded = query.rpartition("&signature=")
    assert payload == V1_PAYLOAD
    assert set(encoded) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789%")
    (signature,) = (v for k, v in parse_qsl(query) if k == "signature")
    private.public_key().verify(base64.b64decode(signature), payload.encode())


def test_signer_reprs_never_show_key_material(
    ed25519_key: tuple[Ed25519PrivateKey, Path],
) -> None:
    private, path = ed25519_key
    signer = Ed25519Signer.from_pem_file(path)
    raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    text = repr(signer) + str(signer)
    assert text == "Ed25519Signer(key_type='ED25519')" * 2
    pem_body = pkcs8_pem(private).decode().splitlines()[1]
    for material in (raw.hex(), base64.b64encode(raw).decode(), pem_body):
        assert material not in text
    assert repr(hmac_signer()) == "HmacSigner(key_type='HMAC')"
    assert SECRET not in repr(hmac_signer()) + str(hmac_signer())


def _assert_names_file_not_content(info: pytest.ExceptionInfo[ConfigError], path: Path) -> None:
    (problem,) = info.value.problems
    assert problem.startswith(f"private key file {path} ")
    # Nothing from the parser is chained: not as a cause, and not as a shown context.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__
    text = str(info.value) + repr(info.value)
    if path.is_file():
        content = path.read_bytes()
        for line in content.decode(errors="replace").splitlines():
            if line and not line.startswith("-----"):
                assert line not in text


def test_encrypted_key_is_refused(tmp_path: Path) -> None:
    pem = ed25519_private().private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(b"hunter2")
    )
    path = write_key(tmp_path, pem)
    with pytest.raises(ConfigError, match="is encrypted") as info:
        Ed25519Signer.from_pem_file(path)
    _assert_names_file_not_content(info, path)


def test_other_key_types_are_refused(tmp_path: Path) -> None:
    ec = generate_private_key(SECP256R1())
    path = write_key(tmp_path, ec.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    with pytest.raises(ConfigError, match=r"of type \w+, not an Ed25519 private key") as info:
        Ed25519Signer.from_pem_file(path)
    _assert_names_file_not_content(info, path)


def test_a_public_key_file_is_refused_with_a_hint(tmp_path: Path) -> None:
    public = ed25519_private().public_key()
    path = write_key(tmp_path, public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(ConfigError, match="holds a public key") as info:
        Ed25519Signer.from_pem_file(path)
    _assert_names_file_not_content(info, path)


@pytest.mark.parametrize(
    "data",
    [
        b"not a key at all: hunter2",
        b"-----BEGIN PRIVATE KEY-----\nhunter2!!\n-----END PRIVATE KEY-----\n",
        b"",
    ],
    ids=["garbage", "broken-pem", "empty"],
)
def test_garbage_is_refused_without_echoing_it(tmp_path: Path, data: bytes) -> None:
    path = write_key(tmp_path, data)
    with pytest.raises(ConfigError, match="is not a PEM private key") as info:
        Ed25519Signer.from_pem_file(path)
    _assert_names_file_not_content(info, path)
    assert "hunter2" not in str(info.value)


def test_an_openssh_key_is_refused(tmp_path: Path) -> None:
    openssh = ed25519_private().private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption())
    path = write_key(tmp_path, openssh)
    with pytest.raises(ConfigError, match="is not a PEM private key") as info:
        Ed25519Signer.from_pem_file(path)
    _assert_names_file_not_content(info, path)


# A PKCS#8 PrivateKeyInfo whose algorithm is the made-up OID 1.3.6.1.4.1.99999.1.
UNKNOWN_ALGORITHM_PEM: Final = (
    b"-----BEGIN PRIVATE KEY-----\n"
    b"MDQCAQAwCwYJKwYBBAGGjR8BBCIEIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"
    b"-----END PRIVATE KEY-----\n"
)


def test_an_unknown_key_algorithm_is_refused(tmp_path: Path) -> None:
    path = write_key(tmp_path, UNKNOWN_ALGORITHM_PEM)
    with pytest.raises(ConfigError, match="uses an unsupported key algorithm") as info:
        Ed25519Signer.from_pem_file(path)
    _assert_names_file_not_content(info, path)


def test_missing_file_and_directory_are_reported_by_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError) as info:
        Ed25519Signer.from_pem_file(missing)
    assert info.value.problems == [f"private key file {missing} cannot be read: FileNotFoundError"]
    with pytest.raises(ConfigError) as info:
        Ed25519Signer.from_pem_file(tmp_path)
    assert info.value.problems == [f"private key file {tmp_path} cannot be read: IsADirectoryError"]


def test_from_pem_bytes_names_its_source() -> None:
    with pytest.raises(ConfigError) as info:
        Ed25519Signer.from_pem_bytes(b"junk", source="the vault entry")
    assert info.value.problems[0].startswith("the vault entry is not a PEM private key")


# --- load_signer ------------------------------------------------------------------------------


def test_load_signer_picks_ed25519_from_the_key_path(
    ed25519_key: tuple[Ed25519PrivateKey, Path], caplog: pytest.LogCaptureFixture
) -> None:
    private, path = ed25519_key
    settings = load_settings(
        {"BINANCE_API_KEY": API_KEY, "BINANCE_PRIVATE_KEY_PATH": str(path), "BINANCE_TESTNET": "1"},
        env_file=None,
    )
    with caplog.at_level(logging.INFO, logger="genesis.exchange.signing"):
        signer = load_signer(settings)
    assert isinstance(signer, Ed25519Signer)
    private.public_key().verify(base64.b64decode(signer.sign(b"p")), b"p")
    assert [r.getMessage() for r in caplog.records] == ["signing.loaded key_type=ED25519"]


def test_load_signer_picks_hmac_from_the_secret(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(
        {"BINANCE_API_KEY": API_KEY, "BINANCE_SECRET_KEY": SECRET, "BINANCE_TESTNET": "1"},
        env_file=None,
    )
    with caplog.at_level(logging.DEBUG):
        signer = load_signer(settings)
    assert isinstance(signer, HmacSigner)
    assert signer.sign(V1_PAYLOAD.encode()) == V1_SIGNATURE
    assert SECRET not in caplog.text


def test_load_signer_is_none_in_simulator_mode() -> None:
    assert load_signer(load_settings({}, env_file=None)) is None


def test_load_signer_refuses_both_keys(ed25519_key: tuple[Ed25519PrivateKey, Path]) -> None:
    _, path = ed25519_key
    settings = Settings(secret_key=Secret(SECRET), private_key_path=str(path))
    with pytest.raises(ConfigError) as info:
        load_signer(settings)
    assert info.value.problems == [
        "set one of BINANCE_SECRET_KEY or BINANCE_PRIVATE_KEY_PATH, not both"
    ]


def test_load_signer_names_the_variable_for_a_bad_key_file(tmp_path: Path) -> None:
    path = write_key(tmp_path, b"-----BEGIN PRIVATE KEY-----\nhunter2\n-----END PRIVATE KEY-----")
    with pytest.raises(ConfigError) as info:
        load_signer(Settings(private_key_path=str(path)))
    (problem,) = info.value.problems
    assert problem.startswith(f"BINANCE_PRIVATE_KEY_PATH: private key file {path} is not a PEM")
    assert "hunter2" not in str(info.value)
    assert info.value.__cause__ is None


# --- against the simulator's own verification -------------------------------------------------


def test_simulator_verifies_an_ed25519_signed_query(
    ed25519_key: tuple[Ed25519PrivateKey, Path],
) -> None:
    _, path = ed25519_key
    signer = Ed25519Signer.from_pem_file(path)
    key = ApiKey.ed25519("edKey1", signer.public_key_pem())
    params = [("symbol", "１２３４５６"), *ORDER[1:]]
    signed = split_signature(signed_query(params, signer).encode(), b"")
    assert signed.payload == V2_PAYLOAD.encode()
    verify_signature(key, signed)  # raises SimReject(-1022) otherwise


def test_simulator_verifies_query_plus_body_signatures(
    ed25519_key: tuple[Ed25519PrivateKey, Path],
) -> None:
    _, path = ed25519_key
    signer = Ed25519Signer.from_pem_file(path)
    key = ApiKey.ed25519("edKey1", signer.public_key_pem())
    body = signed_query(ORDER[4:], signer)  # signs the body alone ...
    with pytest.raises(SimReject, match="-1022"):
        verify_signature(key, split_signature(V3_QUERY.encode(), body.encode()))
    sig = signer.sign(V3_QUERY.encode() + V3_BODY.encode())  # ... Binance signs query + body
    verify_signature(key, SignedPayload((V3_QUERY + V3_BODY).encode(), sig.encode()))


def test_simulator_verifies_ws_api_signatures_of_both_key_types() -> None:
    ed_signer = Ed25519Signer(private_key=ed25519_private(3))
    keys: list[tuple[Signer, ApiKey]] = [
        (hmac_signer(), ApiKey.hmac(API_KEY, SECRET)),
        (ed_signer, ApiKey.ed25519("edKey3", ed_signer.public_key_pem())),
    ]
    for signer, key in keys:
        payload = ws_api_signature_payload(WS2_PARAMS).encode("utf-8")
        # A JSON param carries the base64 as it is: no percent-encoding.
        verify_signature(key, SignedPayload(payload, signer.sign(payload).encode()))


async def test_simulator_rest_api_accepts_our_signed_requests(
    ed25519_key: tuple[Ed25519PrivateKey, Path], autojump_clock: trio.testing.MockClock
) -> None:
    _, path = ed25519_key
    signer = Ed25519Signer.from_pem_file(path)
    with trio.fail_after(10):
        exchange = Exchange(default_symbols(), seed=7)
        clock = SimClock.start(T0)
        app = RestApp(exchange, clock=clock)
        app.add_api_key(ApiKey.ed25519("edKey1", signer.public_key_pem()))
        app.add_api_key(ApiKey.hmac(API_KEY, SECRET))
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
            now = str(clock.now_ms())
            query = signed_query([("omitZeroBalances", "true"), ("timestamp", now)], signer)
            account = await client.get(
                f"/api/v3/account?{query}", headers={"X-MBX-APIKEY": "edKey1"}
            )
            assert account.status_code == 200, account.text
            order = [
                ("symbol", "BTCUSDT"),
                ("side", "BUY"),
                ("type", "LIMIT"),
                ("timeInForce", "GTC"),
                ("quantity", "0.01"),
                ("price", "59000"),
                ("timestamp", now),
            ]
            in_body = await client.post(
                "/api/v3/order/test",
                content=signed_query(order, signer).encode(),
                headers={
                    "X-MBX-APIKEY": "edKey1",
                    "Content-Type": "application/x-www-form-urlencoded",
                },
            )
            assert (in_body.status_code, in_body.json()) == (200, {})
            # HMAC with a non-ASCII symbol: the signature passes, then the symbol is unknown.
            non_ascii = signed_query(
                [("symbol", "１２３４５６"), ("timestamp", now)], hmac_signer()
            )
            opened = await client.get(
                f"/api/v3/openOrders?{non_ascii}", headers={"X-MBX-APIKEY": API_KEY}
            )
            assert (opened.status_code, opened.json()["code"]) == (400, -1121)
        assert trio.current_time() == 0.0


# --- conformance layer: samples.json ----------------------------------------------------------


@pytest.mark.shared
def test_samples_json_signing_vectors_reproduce(shared_dir: Path) -> None:
    samples = json.loads((shared_dir / "binance" / "samples.json").read_text(encoding="utf-8"))
    rest = {k: v for k, v in samples.items() if k.startswith("sign.hmac.rest.")}
    ws = {k: v for k, v in samples.items() if k.startswith("sign.hmac.wsapi.")}
    assert len(rest) >= 3
    assert len(ws) >= 2
    for name, vector in rest.items():
        signer = HmacSigner(Secret(vector["secretKey"]))
        query = vector.get("queryString", vector["payload"])
        body = vector.get("requestBody", "")
        # Decode what Binance shows, re-encode it ourselves: the same bytes must come out.
        assert encode_params(parse_qsl(query, keep_blank_values=True)) == query, name
        assert encode_params(parse_qsl(body, keep_blank_values=True)) == body, name
        assert query + body == vector["payload"], name
        assert signer.sign((query + body).encode()) == vector["signature"], name
    for name, vector in ws.items():
        signer = HmacSigner(Secret(vector["secretKey"]))
        params = dict(piece.split("=", 1) for piece in vector["payload"].split("&"))
        payload = ws_api_signature_payload(params)
        assert payload == vector["payload"], name
        assert signer.sign(payload.encode("utf-8")) == vector["signature"], name
