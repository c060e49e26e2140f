"""Settings from the environment and an optional ``.env`` file.

One frozen :class:`Settings` object describes where Genesis connects and how. It is built once,
at startup, by :func:`load_settings`, which reads (environment variables win over the file):

============================  ===================================================================
``BINANCE_API_KEY``           API key (a :class:`Secret`)
``BINANCE_SECRET_KEY``        API secret of an HMAC key (a :class:`Secret`)
``BINANCE_PRIVATE_KEY_PATH``  path of an Ed25519 private key (unencrypted PKCS#8 PEM), used
                              instead of ``BINANCE_SECRET_KEY``; the file must exist and be
                              readable (:func:`genesis.exchange.signing.load_signer` parses it)
``BINANCE_TESTNET``           ``true``/``false``, ``1``/``0``, ``yes``/``no`` (default false)
``BINANCE_TESTNET_URL``       REST base override for the testnet (e.g.
                              ``https://testnet.binance.vision``)
``BINANCE_WS_URL``            market-stream base override (e.g.
                              ``wss://stream.testnet.binance.vision``)
``BINANCE_WS_API_URL``        WebSocket API URL override, the full URL with its path (e.g.
                              ``ws://127.0.0.1:8081/ws-api/v3``)
``RECV_WINDOW``               ``recvWindow`` in ms, an integer in 1..60000 (default 5000)
``GENESIS_SYMBOLS``           comma-separated symbols (default ``BTCUSDT,ETHUSDT``)
``GENESIS_ORDER_BOOK``        comma-separated symbols (of ``GENESIS_SYMBOLS``) that get a local
                              order book from the diff-depth stream (default none)
``GENESIS_DB``                the order journal's SQLite file (default ``./genesis.db`` on the
                              testnet and in production; in simulator mode ``:memory:``, since
                              the embedded simulator's orders end with the process too)
``GENESIS_NATS_URL``          NATS server for the JetStream bridge (``nats://host:4222``); unset:
                              no bridge (``genesis run --nats URL`` overrides it)
============================  ===================================================================

A credential set is the API key plus exactly one signing key: ``BINANCE_SECRET_KEY`` (HMAC) or
``BINANCE_PRIVATE_KEY_PATH`` (Ed25519, the type Binance recommends). Both behave the same below.

The mode follows from them:

- no credentials → :attr:`Mode.SIMULATOR`: ``genesis run`` embeds :mod:`genesis.sim` on 127.0.0.1;
  URL overrides are ignored (and reported in :attr:`Settings.notes`);
- credentials and ``BINANCE_TESTNET=true`` → :attr:`Mode.TESTNET`
  (:data:`TESTNET` unless overridden);
- credentials and testnet false → :attr:`Mode.PRODUCTION`, which real money makes opt-in:
  it needs ``live=True`` (``genesis run --live``), otherwise it is a configuration problem.

A key or secret shorter than :data:`MIN_SECRET_LENGTH` (8) characters is a problem too.

Validation collects *every* problem before raising one :class:`~genesis.errors.ConfigError`, so a
user fixes their configuration in one go. Secret values never appear in a repr, a log line or an
error message: problems name the variable, never its value.
"""

from __future__ import annotations

import enum
import os
import re
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

import attrs

from genesis.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "DEFAULT_DB_PATH",
    "DEFAULT_RECV_WINDOW_MS",
    "DEFAULT_SYMBOLS",
    "ENV_VARS",
    "MAX_RECV_WINDOW_MS",
    "MAX_SYMBOLS",
    "MIN_SECRET_LENGTH",
    "PRODUCTION",
    "TESTNET",
    "Environment",
    "Mode",
    "Secret",
    "Settings",
    "load_settings",
    "parse_dotenv",
]

DEFAULT_RECV_WINDOW_MS: Final = 5000
DEFAULT_DB_PATH: Final = "genesis.db"
MAX_RECV_WINDOW_MS: Final = 60_000
DEFAULT_SYMBOLS: Final = ("BTCUSDT", "ETHUSDT")
STREAMS_PER_SYMBOL: Final = 4
MAX_SYMBOLS: Final = 1024 // STREAMS_PER_SYMBOL
"""Binance allows 1024 streams per connection and Genesis subscribes four per symbol."""

ENV_VARS: Final = (
    "BINANCE_API_KEY",
    "BINANCE_SECRET_KEY",
    "BINANCE_PRIVATE_KEY_PATH",
    "BINANCE_TESTNET",
    "BINANCE_TESTNET_URL",
    "BINANCE_WS_URL",
    "BINANCE_WS_API_URL",
    "RECV_WINDOW",
    "GENESIS_SYMBOLS",
    "GENESIS_DB",
    "GENESIS_NATS_URL",
    "GENESIS_ORDER_BOOK",
)

_TRUE: Final = frozenset({"true", "1", "yes"})
_FALSE: Final = frozenset({"false", "0", "no"})
_KEY_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SYMBOL_RE: Final = re.compile(r"[A-Z0-9]{2,20}")
_MASK: Final = "********"
MIN_SECRET_LENGTH: Final = 8
"""A shorter API key or secret is a configuration error: it is surely a typo, and a short value
could not be masked in log lines without garbling them (Binance's keys are 64 characters)."""


@attrs.frozen(repr=False)
class Secret:
    """A credential that never shows itself: ``repr`` and ``str`` are ``Secret('********')``.

    Call :meth:`reveal` only where the value is actually used (the signing code).
    """

    _value: str

    def reveal(self) -> str:
        """The secret value itself. Never log or format it."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{_MASK}')"

    __str__ = __repr__


@attrs.frozen(kw_only=True)
class Environment:
    """Where one Binance environment lives: REST base, market streams base, WS API URL."""

    name: str
    rest_url: str
    stream_url: str
    ws_api_url: str


PRODUCTION: Final = Environment(
    name="production",
    rest_url="https://api.binance.com",
    stream_url="wss://stream.binance.com:9443",
    ws_api_url="wss://ws-api.binance.com:443/ws-api/v3",
)
TESTNET: Final = Environment(
    name="testnet",
    rest_url="https://testnet.binance.vision",
    stream_url="wss://stream.testnet.binance.vision",
    ws_api_url="wss://ws-api.testnet.binance.vision/ws-api/v3",
)


class Mode(enum.Enum):
    """Which exchange Genesis talks to."""

    SIMULATOR = "simulator"
    TESTNET = "testnet"
    PRODUCTION = "production"


@attrs.frozen(kw_only=True)
class Settings:
    """Everything Genesis needs to know at startup. Build it with :func:`load_settings`.

    Attributes:
        mode: simulator, testnet or production.
        api_key: API key, ``None`` in simulator mode.
        secret_key: API secret of an HMAC key; ``None`` in simulator mode or with an Ed25519
            key.
        private_key_path: path of the Ed25519 private key file (checked to exist and be
            readable, not parsed: :func:`genesis.exchange.signing.load_signer` parses it);
            ``None`` in simulator mode or with an HMAC key.
        rest_url: REST base (``https://host[:port]``, no ``/api``); ``None`` in simulator mode,
            where the embedded simulator's URL is used.
        stream_url: market-stream base (``wss://host[:port]``; ``/stream?streams=...`` is appended);
            ``None`` in simulator mode.
        ws_api_url: WebSocket API URL (full URL with its path, ``BINANCE_WS_API_URL`` when
            set); ``None`` in simulator mode.
        recv_window_ms: ``recvWindow`` sent with signed requests.
        symbols: upper-case symbols, deduplicated, in the order given.
        db_path: the order journal's SQLite file (``GENESIS_DB``), or ``:memory:``.
        order_book: symbols with a local order book (``GENESIS_ORDER_BOOK``), a subset of
            ``symbols``; empty for none.
        live: production trading was explicitly allowed (``--live``).
        nats_url: the NATS server the bus is bridged to (``GENESIS_NATS_URL``), ``None``: none.
        notes: harmless oddities worth a log line at startup (e.g. ignored overrides).
    """

    mode: Mode = Mode.SIMULATOR
    api_key: Secret | None = None
    secret_key: Secret | None = None
    private_key_path: str | None = None
    rest_url: str | None = None
    stream_url: str | None = None
    ws_api_url: str | None = None
    recv_window_ms: int = DEFAULT_RECV_WINDOW_MS
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    db_path: str = ":memory:"
    order_book: tuple[str, ...] = ()
    live: bool = False
    notes: tuple[str, ...] = ()
    nats_url: str | None = None


def parse_dotenv(text: str) -> tuple[dict[str, str], list[str]]:
    """Parse the text of a ``.env`` file.

    Understands ``KEY=VALUE`` lines, an optional ``export`` prefix, blank lines, ``#`` comment
    lines, inline comments after unquoted values (`` #``), and single- or double-quoted values
    (double quotes understand ``\\n``, ``\\t``, ``\\"`` and ``\\\\``; single quotes are literal).
    A later line for the same key wins. Values span one line.

    Returns:
        The values, and one problem string per line that could not be parsed. Problems name the
        line number and key, never the value (it may be a secret).
    """
    values: dict[str, str] = {}
    problems: list[str] = []
    for lineno, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("export ", "export\t")):
            line = line[len("export") :].lstrip()
        key, sep, rest = line.partition("=")
        key = key.strip()
        if not sep or not _KEY_RE.fullmatch(key):
            problems.append(f".env line {lineno}: expected KEY=VALUE")
            continue
        value = _parse_dotenv_value(rest.strip())
        if value is None:
            problems.append(f".env line {lineno}: {key} has an unterminated or malformed quote")
            continue
        values[key] = value
    return values, problems


_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def _parse_dotenv_value(rest: str) -> str | None:
    if not rest:
        return ""
    quote = rest[0]
    if quote not in ("'", '"'):
        # Unquoted: an inline comment starts at whitespace followed by '#'.
        match = re.search(r"\s#", rest)
        return (rest[: match.start()] if match else rest).strip()
    out: list[str] = []
    i = 1
    while i < len(rest):
        ch = rest[i]
        if ch == quote:
            tail = rest[i + 1 :].strip()
            if tail and not tail.startswith("#"):
                return None
            return "".join(out)
        if ch == "\\" and quote == '"' and i + 1 < len(rest):
            nxt = rest[i + 1]
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return None


def _read_env_file(
    env_file: str | os.PathLike[str] | None, *, required: bool, problems: list[str]
) -> dict[str, str]:
    if env_file is None:
        return {}
    try:
        with open(env_file, encoding="utf-8-sig") as fh:  # tolerate a BOM
            text = fh.read()
    except FileNotFoundError:
        if required:
            problems.append(f"env file {os.fspath(env_file)!s} does not exist")
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"env file {os.fspath(env_file)!s} cannot be read: {type(exc).__name__}")
        return {}
    values, file_problems = parse_dotenv(text)
    problems.extend(file_problems)
    return values


def _shown(value: str) -> str:
    """A non-secret value for an error message, truncated so junk cannot flood the terminal."""
    return repr(value if len(value) <= 40 else value[:37] + "...")


def _bool(name: str, raw: str | None, default: bool, problems: list[str]) -> bool:
    if raw is None or not raw.strip():
        return default
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    problems.append(f"{name} must be true/false, 1/0 or yes/no, got {_shown(raw)}")
    return default


def _credential(name: str, raw: str | None, problems: list[str]) -> Secret | None:
    if raw is None or not raw.strip():
        return None
    value = raw.strip()
    if not value.isascii() or not value.isprintable() or any(c.isspace() for c in value):
        # Never echo the value: it is a credential.
        problems.append(f"{name} contains whitespace or non-printable characters")
        return None
    if len(value) < MIN_SECRET_LENGTH:
        # Say how long it must be, never how long it is (that is part of the secret).
        problems.append(f"{name} is too short: at least {MIN_SECRET_LENGTH} characters")
        return None
    return Secret(value)


def _url(
    name: str,
    raw: str | None,
    schemes: tuple[str, ...],
    bad_suffixes: tuple[str, ...],
    problems: list[str],
) -> str | None:
    if raw is None or not raw.strip():
        return None
    value = raw.strip()
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        problems.append(f"{name} is not a valid URL")
        return None
    if parts.username is not None or parts.password is not None:
        problems.append(f"{name} must not contain user credentials")
        return None
    if parts.scheme not in schemes or not parts.hostname:
        problems.append(
            f"{name} must be a {' or '.join(s + '://' for s in schemes)} URL with a host, "
            f"got {_shown(value)}"
        )
        return None
    if parts.query or parts.fragment:
        problems.append(f"{name} must not have a query or fragment, got {_shown(value)}")
        return None
    path = parts.path.rstrip("/")
    for suffix in bad_suffixes:
        if path.endswith(suffix):
            problems.append(
                f"{name} must be a base URL without {suffix!r} (Genesis appends the path), "
                f"got {_shown(value)}"
            )
            return None
    return value.rstrip("/")


def _ws_api_url(raw: str | None, problems: list[str]) -> str | None:
    name = "BINANCE_WS_API_URL"
    problems_before = len(problems)
    value = _url(name, raw, ("wss", "ws"), (), problems)
    if value is None or len(problems) > problems_before:
        return None
    if not urlsplit(value).path.strip("/"):
        problems.append(
            f"{name} must be the full URL including its path (e.g. "
            f"'wss://ws-api.testnet.binance.vision/ws-api/v3'), got {_shown(value)}"
        )
        return None
    return value


def _private_key_path(raw: str | None, problems: list[str]) -> str | None:
    """The key file's path, checked to exist and be readable; its content is not read here."""
    name = "BINANCE_PRIVATE_KEY_PATH"
    if raw is None or not raw.strip():
        return None
    path = os.path.expanduser(raw.strip())
    try:
        # Opening is the honest readability check (os.access lies for root and under ACLs);
        # nothing is read, so the key never passes through this module.
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        problems.append(f"{name} names {path!r}, which does not exist")
        return None
    except IsADirectoryError:
        problems.append(f"{name} names {path!r}, which is a directory, not a key file")
        return None
    except OSError as exc:
        problems.append(f"{name} names {path!r}, which cannot be read: {type(exc).__name__}")
        return None
    return path


def _recv_window(raw: str | None, problems: list[str]) -> int:
    if raw is None or not raw.strip():
        return DEFAULT_RECV_WINDOW_MS
    text = raw.strip()
    try:
        value = int(text)
    except ValueError:
        problems.append(f"RECV_WINDOW must be an integer number of ms, got {_shown(raw)}")
        return DEFAULT_RECV_WINDOW_MS
    if not 1 <= value <= MAX_RECV_WINDOW_MS:
        problems.append(f"RECV_WINDOW must be between 1 and {MAX_RECV_WINDOW_MS} ms, got {value}")
        return DEFAULT_RECV_WINDOW_MS
    return value


def _symbols(raw: str | None, problems: list[str]) -> tuple[str, ...]:
    if raw is None:
        return DEFAULT_SYMBOLS
    seen: dict[str, None] = {}
    bad: list[str] = []
    for item in raw.split(","):
        symbol = item.strip().upper()
        if not symbol:
            continue
        if not _SYMBOL_RE.fullmatch(symbol):
            bad.append(item.strip())
            continue
        seen.setdefault(symbol, None)
    if bad:
        problems.append(
            "GENESIS_SYMBOLS entries must be 2-20 letters or digits, got "
            + ", ".join(_shown(b) for b in bad)
        )
    if not seen and not bad:
        problems.append("GENESIS_SYMBOLS must name at least one symbol")
    if len(seen) > MAX_SYMBOLS:
        problems.append(
            f"GENESIS_SYMBOLS names {len(seen)} symbols; at most {MAX_SYMBOLS} fit one "
            f"connection ({STREAMS_PER_SYMBOL} streams each, 1024 streams per connection)"
        )
    return tuple(seen) or DEFAULT_SYMBOLS


def _order_book(raw: str | None, symbols: tuple[str, ...], problems: list[str]) -> tuple[str, ...]:
    if raw is None or not raw.strip():
        return ()
    wanted = tuple(dict.fromkeys(s.strip().upper() for s in raw.split(",") if s.strip()))
    unknown = [s for s in wanted if s not in symbols]
    if unknown:
        problems.append(
            "GENESIS_ORDER_BOOK names symbols that are not in GENESIS_SYMBOLS: "
            + ", ".join(_shown(s) for s in unknown)
        )
    return tuple(s for s in wanted if s in symbols)


def _db_path(raw: str | None, problems: list[str]) -> str:
    if raw is None or not raw.strip():
        return DEFAULT_DB_PATH  # simulator mode without GENESIS_DB: in memory (see below)
    value = os.path.expanduser(raw.strip())
    if value == ":memory:":
        return value
    parent = os.path.dirname(os.path.abspath(value))
    if os.path.isdir(value):
        problems.append(f"GENESIS_DB names a directory, not a file: {_shown(value)}")
    elif not os.path.isdir(parent):
        problems.append(f"GENESIS_DB: the directory of {_shown(value)} does not exist")
    return value


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    env_file: str | os.PathLike[str] | None = ".env",
    env_file_required: bool = False,
    live: bool = False,
) -> Settings:
    """Build :class:`Settings` from ``environ`` and ``env_file``; environment values win.

    Args:
        environ: the environment to read; ``os.environ`` when ``None``.
        env_file: a ``.env`` file to read; ``None`` to read none. A missing file is skipped
            unless ``env_file_required``.
        env_file_required: a missing ``env_file`` is a problem (the user named it explicitly).
        live: production trading is allowed (``genesis run --live``).

    Returns:
        The settings.

    Raises:
        ConfigError: listing every problem found (never a secret value).
    """
    problems: list[str] = []
    merged = _read_env_file(env_file, required=env_file_required, problems=problems)
    source = os.environ if environ is None else environ
    merged.update({k: v for k, v in source.items() if k in ENV_VARS})

    def get(name: str) -> str | None:
        return merged.get(name)

    api_key = _credential("BINANCE_API_KEY", get("BINANCE_API_KEY"), problems)
    secret_key = _credential("BINANCE_SECRET_KEY", get("BINANCE_SECRET_KEY"), problems)
    private_key_path = _private_key_path(get("BINANCE_PRIVATE_KEY_PATH"), problems)
    problems_before = len(problems)
    testnet = _bool("BINANCE_TESTNET", get("BINANCE_TESTNET"), False, problems)
    testnet_known = len(problems) == problems_before
    rest_override = _url(
        "BINANCE_TESTNET_URL",
        get("BINANCE_TESTNET_URL"),
        ("https", "http"),
        ("/api", "/api/v3"),
        problems,
    )
    ws_override = _url(
        "BINANCE_WS_URL", get("BINANCE_WS_URL"), ("wss", "ws"), ("/ws", "/stream"), problems
    )
    ws_api_override = _ws_api_url(get("BINANCE_WS_API_URL"), problems)
    recv_window_ms = _recv_window(get("RECV_WINDOW"), problems)
    symbols = _symbols(get("GENESIS_SYMBOLS"), problems)
    db_path = _db_path(get("GENESIS_DB"), problems)
    order_book = _order_book(get("GENESIS_ORDER_BOOK"), symbols, problems)
    db_given = bool((get("GENESIS_DB") or "").strip())
    nats_url = _url("GENESIS_NATS_URL", get("GENESIS_NATS_URL"), ("nats", "tls"), (), problems)

    # Presence is judged on the raw values, so a malformed credential still counts as set and
    # the user gets one problem about its shape instead of a second one about a missing pair.
    has_api = bool((get("BINANCE_API_KEY") or "").strip())
    has_secret = bool((get("BINANCE_SECRET_KEY") or "").strip())
    has_private_key = bool((get("BINANCE_PRIVATE_KEY_PATH") or "").strip())
    # Either signing key completes a credential set: API key + secret, or API key + key file.
    has_signing_key = has_secret or has_private_key
    if has_secret and has_private_key:
        problems.append(
            "BINANCE_SECRET_KEY and BINANCE_PRIVATE_KEY_PATH are both set: set one of "
            "BINANCE_SECRET_KEY (HMAC) or BINANCE_PRIVATE_KEY_PATH (Ed25519)"
        )
    if has_api and not has_signing_key:
        problems.append("BINANCE_API_KEY is set but BINANCE_SECRET_KEY is not: set both or neither")
    elif has_signing_key and not has_api:
        present = "BINANCE_SECRET_KEY" if has_secret else "BINANCE_PRIVATE_KEY_PATH"
        problems.append(f"{present} is set but BINANCE_API_KEY is not: set both or neither")

    notes: list[str] = []
    rest_url: str | None = None
    stream_url: str | None = None
    ws_api_url: str | None = None
    if not has_api and not has_signing_key:
        mode = Mode.SIMULATOR
        notes.extend(
            f"{name} is ignored in simulator mode (no credentials set)"
            for name in ("BINANCE_TESTNET_URL", "BINANCE_WS_URL", "BINANCE_WS_API_URL")
            if (get(name) or "").strip()
        )
    elif testnet or not testnet_known:
        # An unreadable BINANCE_TESTNET is already a problem; the safer reading keeps the other
        # checks from adding production-only complaints on top of it.
        mode = Mode.TESTNET
        rest_url = rest_override or TESTNET.rest_url
        stream_url = ws_override or TESTNET.stream_url
        ws_api_url = ws_api_override or TESTNET.ws_api_url
    else:
        mode = Mode.PRODUCTION
        if (get("BINANCE_TESTNET_URL") or "").strip():
            problems.append(
                "BINANCE_TESTNET_URL is set but BINANCE_TESTNET is false: set BINANCE_TESTNET=true "
                "for the testnet, or unset BINANCE_TESTNET_URL for production"
            )
        rest_url = PRODUCTION.rest_url
        stream_url = ws_override or PRODUCTION.stream_url
        ws_api_url = ws_api_override or PRODUCTION.ws_api_url
        if not live and has_api == has_signing_key:
            problems.append(
                "credentials are set and BINANCE_TESTNET is false, which means PRODUCTION with "
                "real money: pass --live to confirm, or set BINANCE_TESTNET=true"
            )

    if problems:
        raise ConfigError(problems)
    return Settings(
        mode=mode,
        api_key=api_key,
        secret_key=secret_key,
        private_key_path=private_key_path,
        rest_url=rest_url,
        stream_url=stream_url,
        ws_api_url=ws_api_url,
        recv_window_ms=recv_window_ms,
        symbols=symbols,
        db_path=db_path if db_given or mode is not Mode.SIMULATOR else ":memory:",
        order_book=order_book,
        live=live,
        notes=tuple(notes),
        nats_url=nats_url,
    )
