"""The Genesis error tree.

Every error Genesis raises on purpose derives from :class:`GenesisError`. Foreign exceptions
(httpx, trio-websocket, json, cattrs) are translated once, where the library is imported, and
chained with ``raise ... from exc``.

```
GenesisError
├── ConfigError                      bad settings; the CLI exits 2 listing every problem
├── ExchangeError                    anything that went wrong talking to the exchange
│   ├── TransportError               the network failed (peer or path); RetryableError
│   │   ├── ConnectError             could not connect (DNS, refused, TLS, handshake)
│   │   ├── ReadTimeoutError         connected, but no answer in time
│   │   └── ConnectionLostError      an established connection broke
│   ├── ExchangeProtocolError        the exchange sent something we cannot decode
│   ├── ExchangeRejectedError        the exchange answered with a Binance error code/msg
│   │   └── ExchangeUnavailableError 5xx (or -1000/-1001/-1006/-1007/-1008): the exchange's
│   │                                fault, not the request's; RetryableError
│   ├── OrderOutcomeUnknownError     a placement may or may not exist (5xx, -1006, -1007, a
│   │                                timeout or a broken connection after the request left)
│   ├── RateLimitedError             429: back off for retry_after_s; RetryableError
│   ├── IpBannedError                418: banned until retry_after_s has passed
│   ├── StreamRejectedError          a stream handshake answered 4xx (bad stream name,
│   │                                unknown symbol): not a network error, not retried as one
│   └── NoMarketDataError            a run ended without delivering one market-data event
├── CircuitOpenError                 the breaker refused the call; RetryableError
├── PreTradeCheckError               an order broke a symbol filter; rejected before sending
├── RecordFormatError                a recorded or bridged event record that does not decode
├── BrokerUnavailableError           the NATS broker cannot be reached or did not acknowledge
│                                    in time (genesis.bridge); RetryableError
└── StreamClosedError                we closed the stream ourselves; using it is a bug
```

``RetryableError`` is a mixin: ``except RetryableError`` catches exactly the errors a caller may
retry after a delay. Messages never carry secrets, signatures or signed query strings.
"""

from __future__ import annotations

__all__ = [
    "BrokerUnavailableError",
    "CircuitOpenError",
    "ConfigError",
    "ConnectError",
    "ConnectionLostError",
    "ExchangeError",
    "ExchangeProtocolError",
    "ExchangeRejectedError",
    "ExchangeUnavailableError",
    "GenesisError",
    "IpBannedError",
    "NoMarketDataError",
    "OrderOutcomeUnknownError",
    "PreTradeCheckError",
    "RateLimitedError",
    "ReadTimeoutError",
    "RecordFormatError",
    "RetryableError",
    "StreamClosedError",
    "StreamRejectedError",
    "TransportError",
]


class GenesisError(Exception):
    """Root of every error Genesis raises on purpose."""


class RetryableError(GenesisError):
    """Marker base: the same call may succeed if retried after a delay."""


class ConfigError(GenesisError):
    """Invalid configuration. ``problems`` lists every problem found, one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


class ExchangeError(GenesisError):
    """Something went wrong talking to the exchange."""


class TransportError(ExchangeError, RetryableError):
    """The network path failed; reconnecting or retrying may help."""


class ConnectError(TransportError):
    """Could not establish a connection."""


class ReadTimeoutError(TransportError):
    """Connected, but no answer arrived in time."""


class ConnectionLostError(TransportError):
    """An established connection broke (reset, closed by the peer, ping timeout)."""


class ExchangeProtocolError(ExchangeError):
    """The exchange sent something that does not decode to what the protocol promises."""


class ExchangeRejectedError(ExchangeError):
    """The exchange answered with a Binance error ``{"code": ..., "msg": ...}``."""

    def __init__(self, code: int, msg: str, *, http_status: int | None = None) -> None:
        self.code = code
        self.msg = msg
        self.http_status = http_status
        super().__init__(f"Binance error {code}: {msg}")


class ExchangeUnavailableError(ExchangeRejectedError, RetryableError):
    """A 5xx, or a Binance code that blames the exchange (-1000, -1001, -1006, -1007, -1008).

    For a read (status, open orders, account) retrying later is safe. An order *placement* that
    ends like this raises :class:`OrderOutcomeUnknownError` instead: the order may exist.
    """


class OrderOutcomeUnknownError(ExchangeError):
    """The placement of ``client_order_id`` may or may not have reached the matching engine.

    Raised for a 5xx, -1006 or -1007, a read timeout, or a connection lost after the request
    left. Never resend blindly: resolve it by the user data stream or, once ``timestamp +
    recvWindow`` has passed, ``GET /api/v3/order?origClientOrderId=...`` (ARCHITECTURE.md
    "Unknown outcomes"). ``sent_at_ms`` is the request's signed ``timestamp``.
    """

    def __init__(
        self,
        client_order_id: str,
        reason: str,
        *,
        sent_at_ms: int,
        code: int | None = None,
        http_status: int | None = None,
    ) -> None:
        self.client_order_id = client_order_id
        self.reason = reason
        self.sent_at_ms = sent_at_ms
        self.code = code
        self.http_status = http_status
        super().__init__(f"outcome of order {client_order_id} is unknown: {reason}")


class RateLimitedError(ExchangeError, RetryableError):
    """HTTP 429: wait ``retry_after_s`` before sending again or risk an IP ban."""

    def __init__(self, msg: str, *, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"rate limited, retry after {retry_after_s:g} s: {msg}")


class IpBannedError(ExchangeError):
    """HTTP 418: the IP is banned for ``retry_after_s`` seconds (until ``until_ms`` when known)."""

    def __init__(self, msg: str, *, retry_after_s: float, until_ms: int | None = None) -> None:
        self.retry_after_s = retry_after_s
        self.until_ms = until_ms
        super().__init__(f"IP banned for {retry_after_s:g} s: {msg}")


class StreamRejectedError(ExchangeError):
    """A market-stream handshake answered HTTP ``status_code`` (4xx): the request is wrong.

    ``reason`` is the server's answer (its body, shortened). Repeating the same request cannot
    succeed, unlike a network failure; the connection tasks report it at ERROR and end the feed
    once it persists on every connection.
    """

    def __init__(self, status_code: int, reason: str) -> None:
        self.status_code = status_code
        self.reason = reason
        super().__init__(f"stream handshake rejected with HTTP {status_code}: {reason}")


class NoMarketDataError(ExchangeError):
    """The run ended without one market-data event reaching the bus; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"no market data was delivered: {reason}")


class CircuitOpenError(RetryableError):
    """The circuit breaker is open; the call was not attempted."""

    def __init__(self, name: str, *, retry_after_s: float) -> None:
        self.name = name
        self.retry_after_s = retry_after_s
        super().__init__(f"circuit {name!r} is open, retry after {retry_after_s:g} s")


class PreTradeCheckError(GenesisError):
    """An order breaks one of its symbol's exchangeInfo filters; it was never sent.

    ``filter_name`` is Binance's filter (``PRICE_FILTER``, ``LOT_SIZE``, ``MARKET_LOT_SIZE``,
    ``NOTIONAL``, ``MIN_NOTIONAL``, ``PERCENT_PRICE_BY_SIDE``, ``MAX_NUM_ORDERS``) or one of the
    symbol-level rules ``SYMBOL_STATUS`` and ``ORDER_TYPE``; ``reason`` gives the numbers. For
    a filter the exchange would answer -1013 "Filter failure: <filter_name>". The message is
    ``"<filter_name>: <reason>"``. The same request cannot pass later unless the symbol's
    rules, the reference price or the open order count change.
    """

    def __init__(self, filter_name: str, reason: str) -> None:
        self.filter_name = filter_name
        self.reason = reason
        super().__init__(f"{filter_name}: {reason}")


class StreamClosedError(GenesisError):
    """The stream was closed by us; using it afterwards is a bug."""


class RecordFormatError(GenesisError, ValueError):
    """A record (``--record`` line, bridged message) that is not a valid event of a known type."""


class BrokerUnavailableError(RetryableError):
    """The NATS broker is unreachable, or did not acknowledge in time (``genesis.bridge``)."""
