"""Request signing for Binance Spot: HMAC-SHA256 and Ed25519 signers, REST and WS API payloads.

Rules (``shared/binance/FACTS.md`` §2; rest-api.md "SIGNED Endpoint security", web-socket-api.md
"SIGNED request security"):

- **REST**: percent-encode first, then sign (enforced since 2026-01-15; a signature over the
  un-encoded text gets ``-1022``). The signed payload is the query string followed directly by
  the body, with no separator. :func:`encode_params` builds the encoded ``k=v&k=v`` text and
  :func:`signed_query` appends ``&signature=...``. For a request split over query and body, sign
  ``query_bytes + body_bytes`` with :meth:`Signer.sign`.
- **WebSocket API**: every param except ``signature`` (``apiKey`` included), sorted by name,
  joined ``k=v&...`` over the raw UTF-8 text, with **no** percent-encoding
  (:func:`ws_api_signature_payload`). The signature goes into the JSON ``params`` as is.
- **HMAC** keys sign with the secret and give lower-case hex (Binance compares hex
  case-insensitively). **Ed25519** keys (the type Binance recommends, and the only one
  ``session.logon`` takes) give standard base64, which must be percent-encoded in a URL or a
  form body (``+`` ``/`` ``=`` → ``%2B`` ``%2F`` ``%3D``); :func:`signed_query` does that.

Key material never appears in a ``repr``, a log line or an exception: signers show only their
key type, and a bad key file is reported by its path and what is wrong with it, never by its
content. This module is the client's own implementation; the simulator (:mod:`genesis.sim.auth`)
verifies independently, so the two cannot share a bug.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
from typing import TYPE_CHECKING, ClassVar, Protocol
from urllib.parse import quote

import attrs
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

from genesis.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from genesis.config import Secret, Settings

__all__ = [
    "Ed25519Signer",
    "HmacSigner",
    "Signer",
    "encode_params",
    "load_signer",
    "signed_query",
    "ws_api_signature_payload",
]

logger = logging.getLogger(__name__)


class Signer(Protocol):
    """Signs request payloads with one API key's private half.

    ``key_type`` is ``"HMAC"`` or ``"ED25519"``. :meth:`sign` returns the signature as Binance
    expects it before any URL encoding: lower-case hex for HMAC, standard base64 for Ed25519.
    Implementations never show key material in their ``repr``.
    """

    @property
    def key_type(self) -> str:
        """``"HMAC"`` or ``"ED25519"``."""
        ...

    def sign(self, payload: bytes) -> str:
        """The signature of ``payload`` (the exact bytes that are sent)."""
        ...


@attrs.frozen(repr=False, eq=False)
class HmacSigner:
    """HMAC-SHA256 with the API secret; signatures are 64 lower-case hex digits.

    Args:
        secret: the API secret (case-sensitive); revealed only inside :meth:`sign`.
    """

    key_type: ClassVar[str] = "HMAC"
    _secret: Secret = attrs.field(alias="secret")

    def sign(self, payload: bytes) -> str:
        """Lower-case hex HMAC-SHA256 of ``payload`` under the secret."""
        return hmac.new(self._secret.reveal().encode(), payload, hashlib.sha256).hexdigest()

    def __repr__(self) -> str:
        return "HmacSigner(key_type='HMAC')"


@attrs.frozen(repr=False, eq=False)
class Ed25519Signer:
    """Ed25519 with a private key; signatures are standard base64 (88 characters).

    Build it with :meth:`from_pem_file` or :meth:`from_pem_bytes`; the constructor takes a
    ``cryptography`` key object.
    """

    key_type: ClassVar[str] = "ED25519"
    _private_key: Ed25519PrivateKey = attrs.field(alias="private_key")

    @classmethod
    def from_pem_file(cls, path: str | os.PathLike[str]) -> Ed25519Signer:
        """Load an unencrypted PKCS#8 PEM Ed25519 private key from ``path``.

        Raises:
            ConfigError: the file cannot be read or does not hold such a key. The message names
                the file and the problem, never the file's content.
        """
        source = f"private key file {os.fspath(path)!s}"
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise ConfigError([f"{source} cannot be read: {type(exc).__name__}"]) from None
        return cls.from_pem_bytes(data, source=source)

    @classmethod
    def from_pem_bytes(cls, data: bytes, *, source: str = "private key") -> Ed25519Signer:
        """Load an unencrypted PKCS#8 PEM Ed25519 private key from ``data``.

        Args:
            data: the PEM text (``-----BEGIN PRIVATE KEY-----`` ...).
            source: what to call the key in an error message (e.g. the file it came from).

        Raises:
            ConfigError: ``data`` is not a PEM private key, is encrypted, or holds another key
                type. The message names ``source`` and the problem, never the key.
        """
        # The cryptography errors are not chained (``from None``): a PEM decoding error can quote
        # a byte and its offset, and nothing from a key file may reach a log.
        try:
            key = load_pem_private_key(data, password=None)
        except TypeError:
            # cryptography raises TypeError when a password is needed and none was given.
            raise ConfigError(
                [f"{source} is encrypted: Genesis needs an unencrypted PKCS#8 PEM Ed25519 key"]
            ) from None
        except UnsupportedAlgorithm:
            raise ConfigError([f"{source} uses an unsupported key algorithm"]) from None
        except ValueError:
            if b"PUBLIC KEY-----" in data:
                problem = f"{source} holds a public key: Genesis needs the private key"
            else:
                problem = (
                    f"{source} is not a PEM private key (expected an unencrypted PKCS#8 "
                    "'-----BEGIN PRIVATE KEY-----' block)"
                )
            raise ConfigError([problem]) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(
                [f"{source} holds a key of type {type(key).__name__}, not an Ed25519 private key"]
            )
        return cls(private_key=key)

    def sign(self, payload: bytes) -> str:
        """Standard base64 of the Ed25519 signature of ``payload`` (percent-encode it in URLs)."""
        return base64.b64encode(self._private_key.sign(payload)).decode("ascii")

    def public_key_pem(self) -> str:
        """The public key as PEM (SubjectPublicKeyInfo), the form Binance registers."""
        return (
            self._private_key.public_key()
            .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
            .decode("ascii")
        )

    def __repr__(self) -> str:
        return "Ed25519Signer(key_type='ED25519')"


def _encode(text: str) -> str:
    # RFC 3986: only the unreserved characters A-Z a-z 0-9 - . _ ~ stay as they are; everything
    # else, non-ASCII as its UTF-8 bytes, becomes %XX (upper-case hex, as Binance's examples).
    return quote(text, safe="")


def encode_params(params: Sequence[tuple[str, str]]) -> str:
    """The percent-encoded ``k=v&k=v`` form of ``params``, in the given order.

    This is the text Binance signs for REST ("percent-encode first, then sign") and the text
    that must then be sent unchanged: ``１２３４５６`` becomes ``%EF%BC%91...%EF%BC%96``, a space
    ``%20``, ``/`` ``%2F``. ASCII letters, digits and ``-._~`` are kept.

    >>> encode_params([("symbol", "LTCBTC"), ("price", "0.1")])
    'symbol=LTCBTC&price=0.1'
    """
    return "&".join(f"{_encode(name)}={_encode(value)}" for name, value in params)


def signed_query(params: Sequence[tuple[str, str]], signer: Signer) -> str:
    """``params`` encoded by :func:`encode_params`, signed, with ``&signature=...`` appended.

    The signature is computed over the encoded bytes and percent-encoded itself (base64
    ``+/=`` → ``%2B %2F %3D``; hex is unchanged). Send the result as the query string, or as an
    ``application/x-www-form-urlencoded`` body with an empty query: Binance signs query + body,
    so both carry the same payload.

    Raises:
        ValueError: ``params`` already contains a ``signature``.
    """
    if any(name == "signature" for name, _ in params):
        raise ValueError("params must not contain 'signature': signed_query appends it")
    query = encode_params(params)
    signature = _encode(signer.sign(query.encode("ascii")))
    return f"{query}&signature={signature}" if query else f"signature={signature}"


def ws_api_signature_payload(params: Mapping[str, str]) -> str:
    """The WebSocket API signature payload: every param but ``signature``, sorted by name.

    Joined ``k=v&...`` with **no** percent-encoding; sign its UTF-8 bytes. ``apiKey`` is
    included when present (Binance requires it in the signed params).

    >>> ws_api_signature_payload({"timestamp": "1", "apiKey": "k", "signature": "x"})
    'apiKey=k&timestamp=1'
    """
    return "&".join(f"{name}={params[name]}" for name in sorted(params) if name != "signature")


def load_signer(settings: Settings) -> Signer | None:
    """The signer the settings describe.

    Ed25519 when ``settings.private_key_path`` is set (the key file is read and parsed here),
    HMAC when ``settings.secret_key`` is set, ``None`` when neither is (simulator mode without
    keys: the caller signs with the embedded simulator's documented default account instead,
    whose credentials its handle carries).

    Raises:
        ConfigError: both are set, or the key file cannot be read or parsed. Problems name
            ``BINANCE_PRIVATE_KEY_PATH`` and the file, never its content.
    """
    path = settings.private_key_path
    if path is not None and settings.secret_key is not None:
        raise ConfigError(["set one of BINANCE_SECRET_KEY or BINANCE_PRIVATE_KEY_PATH, not both"])
    if path is not None:
        try:
            signer = Ed25519Signer.from_pem_file(path)
        except ConfigError as exc:
            raise ConfigError([f"BINANCE_PRIVATE_KEY_PATH: {p}" for p in exc.problems]) from None
        logger.info("signing.loaded key_type=%s", signer.key_type)
        return signer
    if settings.secret_key is not None:
        logger.info("signing.loaded key_type=%s", HmacSigner.key_type)
        return HmacSigner(secret=settings.secret_key)
    return None
