"""The signed-request pipeline under :class:`~genesis.exchange.gateway.Gateway`: one REST call.

```
RestPipeline.call(...)                      one call
└── call                                    at most one -1021 resync + retry
    └── _attempt                            breaker.guard() → limiter.acquire(cost, priority)
        ├── sign                            timestamp = local wall clock + time-sync offset
        ├── _send                           httpx; connect 5 s, read 10 s, whole attempt 30 s
        └── _check                          usage headers → limiter; status + body → errors
```

The error translation (httpx and Binance answers into :mod:`genesis.errors`), the deadlines
and the unknown-outcome rule for placements are described in :mod:`genesis.exchange.gateway`,
whose endpoint methods are the facade over :class:`RestPipeline`.

Logs: ``gateway.resync`` (WARNING).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final, TypeAlias

import attrs
import httpx
import trio

from genesis.errors import (
    ConfigError,
    ConnectError,
    ConnectionLostError,
    ExchangeRejectedError,
    ExchangeUnavailableError,
    IpBannedError,
    OrderOutcomeUnknownError,
    RateLimitedError,
    ReadTimeoutError,
    TransportError,
)
from genesis.exchange.endpoints import API_PREFIX, ENDPOINTS
from genesis.exchange.signing import encode_params, signed_query
from genesis.exchange.time_sync import sync_time
from genesis.models.codec import (
    decode_error_body,
    decode_json,
    decode_server_time,
    parse_ban_until_ms,
    parse_usage_headers,
)
from genesis.resilience.rate_limiter import Cost, Priority

if TYPE_CHECKING:
    from collections.abc import Callable

    from genesis.config import Secret
    from genesis.exchange.gateway import GatewayConfig
    from genesis.exchange.signing import Signer
    from genesis.exchange.time_sync import TimeSyncCore, TimeSyncStatistics
    from genesis.resilience.circuit_breaker import CircuitBreaker
    from genesis.resilience.rate_limiter import RateLimiter

__all__ = ["INVALID_TIMESTAMP", "Counters", "Params", "Placement", "RestPipeline"]

logger = logging.getLogger("genesis.exchange.gateway")
"""The gateway's logger: the split into modules does not change a log name."""

Params: TypeAlias = list[tuple[str, str]]

INVALID_TIMESTAMP: Final = -1021
_UNKNOWN_OUTCOME_CODES: Final = frozenset({-1006, -1007})
"""UNEXPECTED_RESP and TIMEOUT: "execution status unknown" (errors.md)."""
_EXCHANGE_FAULT_CODES: Final = frozenset({-1000, -1001, -1006, -1007, -1008})
"""UNKNOWN, DISCONNECTED, UNEXPECTED_RESP, TIMEOUT, SERVER_BUSY: the exchange's fault."""
_DEFAULT_RETRY_AFTER_S: Final = 60.0


@attrs.define
class Counters:
    requests: int = 0
    answered: int = 0
    rejected: int = 0
    failed: int = 0
    unknown_outcomes: int = 0
    resyncs: int = 0
    last_latency_ms: float | None = None
    rate_limited: int = 0
    ip_banned: int = 0


@attrs.define
class Placement:
    """What an attempt needs to know when it places an order, and what it measured."""

    client_order_id: str
    latency_ms: float | None = None
    """The round trip of the attempt that got the answer (not the time queued before it)."""


class RestPipeline:
    """Admission (breaker, limiter), signing, the HTTP exchange under its deadline, and the
    answer's translation (usage headers to the limiter, status and body to Genesis errors).

    The counters are the gateway's (:class:`~genesis.exchange.gateway.GatewayStatistics`).
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        api_key: Secret | None,
        signer: Signer | None,
        limiter: RateLimiter,
        breaker: CircuitBreaker,
        time_sync: TimeSyncCore,
        wall_clock_ms: Callable[[], int],
        config: GatewayConfig,
    ) -> None:
        self._client = client
        self._base = httpx.URL(base_url)
        self._api_key = api_key
        self._signer = signer
        self._limiter = limiter
        self._breaker = breaker
        self._time_sync = time_sync
        self._wall_clock_ms = wall_clock_ms
        self._config = config
        self.counters = Counters()

    def server_time_ms(self) -> int:
        """The exchange's clock now, as estimated from the time sync (epoch ms)."""
        return self._time_sync.server_time_ms(self._wall_clock_ms())

    async def server_time(self) -> int:
        """``GET /api/v3/time``: the exchange's clock (epoch ms)."""
        return decode_server_time(await self.call("GET", "time"))

    async def sync_time(self) -> TimeSyncStatistics:
        """Measure the clock offset from several ``GET /api/v3/time`` round trips.

        Raises:
            ExchangeError: when not one sample could be taken.
        """
        return await sync_time(
            self._time_sync,
            self.server_time,
            self._wall_clock_ms,
            samples=self._config.time_sync_samples,
        )

    async def call(
        self,
        method: str,
        name: str,
        params: Params | None = None,
        *,
        signed: bool = False,
        cost: Cost | None = None,
        priority: Priority = Priority.NORMAL,
        placement: Placement | None = None,
    ) -> object:
        endpoint = ENDPOINTS[(method, f"{API_PREFIX}/{name}")]
        if cost is None:
            cost = Cost(weight=endpoint.weight, orders=1 if endpoint.counts_order else 0)
        params = params or []
        try:
            return await self._attempt(
                endpoint.method, endpoint.path, params, signed, cost, priority, placement
            )
        except ExchangeRejectedError as exc:
            if not signed or exc.code != INVALID_TIMESTAMP:
                raise
            # Binance rejected it on arrival (outside recvWindow): it was never executed, so a
            # resync and one retry with a fresh timestamp cannot place anything twice.
            self.counters.resyncs += 1
            logger.warning(
                "gateway.resync path=%s reason=%s offset_ms=%s",
                endpoint.path,
                exc.msg,
                self._time_sync.statistics(self._wall_clock_ms()).offset_ms,
            )
            await self.sync_time()
            return await self._attempt(
                endpoint.method, endpoint.path, params, signed, cost, priority, placement
            )

    async def _attempt(
        self,
        method: str,
        path: str,
        params: Params,
        signed: bool,
        cost: Cost,
        priority: Priority,
        placement: Placement | None,
    ) -> object:
        async with self._breaker.guard():
            await self._limiter.acquire(cost, priority)
            headers: dict[str, str] = {}
            sent_at_ms = self.server_time_ms()
            if signed:
                if self._signer is None or self._api_key is None:
                    raise ConfigError(
                        [
                            f"{method} {path} needs credentials: set BINANCE_API_KEY and "
                            "BINANCE_SECRET_KEY (or BINANCE_PRIVATE_KEY_PATH)"
                        ]
                    )
                full = [
                    *params,
                    ("recvWindow", str(self._config.recv_window_ms)),
                    ("timestamp", str(sent_at_ms)),
                ]
                query = signed_query(full, self._signer)
                headers["X-MBX-APIKEY"] = self._api_key.reveal()
            else:
                query = encode_params(params)
            raw_path = path + ("?" + query if query else "")
            self.counters.requests += 1
            started = trio.current_time()
            try:
                response = await self._send(method, raw_path, headers)
            except TransportError as exc:
                self.counters.failed += 1
                if placement is None or isinstance(exc, ConnectError):
                    raise
                self.counters.unknown_outcomes += 1
                raise OrderOutcomeUnknownError(
                    placement.client_order_id, str(exc), sent_at_ms=sent_at_ms
                ) from exc
            latency_ms = (trio.current_time() - started) * 1000.0
            self.counters.last_latency_ms = latency_ms
            if placement is not None:
                placement.latency_ms = latency_ms
            return self._check(response, path, placement, sent_at_ms)

    async def _send(self, method: str, raw_path: str, headers: dict[str, str]) -> httpx.Response:
        request = self._client.build_request(
            method, self._base.copy_with(raw_path=raw_path.encode("ascii")), headers=headers
        )
        call_s = self._config.timeouts.call_s
        try:
            with trio.fail_after(call_s):
                return await self._client.send(request)
        except trio.TooSlowError as exc:
            raise ReadTimeoutError(f"no complete answer within {call_s:g} s") from exc
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise ConnectError(f"connect timed out: {type(exc).__name__}") from exc
        except httpx.ConnectError as exc:
            raise ConnectError(f"connect failed: {exc}") from exc
        except httpx.TimeoutException as exc:  # read or write
            raise ReadTimeoutError(f"{type(exc).__name__} after the request was sent") from exc
        except httpx.TransportError as exc:  # read/write errors, the peer closing, protocol
            raise ConnectionLostError(f"{type(exc).__name__}: {exc}") from exc

    def _check(
        self,
        response: httpx.Response,
        path: str,
        placement: Placement | None,
        sent_at_ms: int,
    ) -> object:
        for report in parse_usage_headers(response.headers.items()):
            self._limiter.sync_usage(report.type, report.window_ms, report.used)
        status = response.status_code
        if 200 <= status < 300:
            self.counters.answered += 1
            return decode_json(response.content, what=path)
        body = decode_error_body(response.content)
        code, msg = body if body is not None else (0, f"HTTP {status} {_reason(status)}")
        if status in (418, 429):
            self.counters.failed += 1
            retry_after_s = _retry_after_s(response.headers.get("retry-after"))
            if status == 429:
                self.counters.rate_limited += 1
                self._limiter.hold_for(retry_after_s)
                raise RateLimitedError(f"{code} {msg}", retry_after_s=retry_after_s)
            self.counters.ip_banned += 1
            until_ms = parse_ban_until_ms(msg) or self.server_time_ms() + int(retry_after_s * 1000)
            self._limiter.ban_until(until_ms)
            raise IpBannedError(f"{code} {msg}", retry_after_s=retry_after_s, until_ms=until_ms)
        if placement is not None and (status >= 500 or code in _UNKNOWN_OUTCOME_CODES):
            self.counters.failed += 1
            self.counters.unknown_outcomes += 1
            raise OrderOutcomeUnknownError(
                placement.client_order_id,
                f"HTTP {status}, Binance code {code}: {msg}",
                sent_at_ms=sent_at_ms,
                code=code or None,
                http_status=status,
            )
        if status >= 500 or code in _EXCHANGE_FAULT_CODES:
            self.counters.failed += 1
            raise ExchangeUnavailableError(code, msg, http_status=status)
        self.counters.rejected += 1
        raise ExchangeRejectedError(code, msg, http_status=status)


def _reason(status: int) -> str:
    # The standard phrase, not the server's: hypercorn sends none, proxies send their own.
    return httpx.codes.get_reason_phrase(status)


def _retry_after_s(raw: str | None) -> float:
    """``Retry-After`` in seconds (Binance sends an integer); a missing or odd one: 60 s."""
    if raw is None:
        return _DEFAULT_RETRY_AFTER_S
    try:
        value = float(raw.strip())
    except ValueError:
        return _DEFAULT_RETRY_AFTER_S
    return value if value >= 0 and value != float("inf") else _DEFAULT_RETRY_AFTER_S
