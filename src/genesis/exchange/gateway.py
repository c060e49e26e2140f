"""The REST order gateway: signed Binance Spot calls behind a rate limiter and a circuit breaker.

```
Gateway.<method>(...)                       one call: params, cost, priority, decode
└── RestPipeline.call (rest_pipeline.py)    at most one -1021 resync + retry
    └── _attempt                            breaker.guard() → limiter.acquire(cost, priority)
        ├── sign                            timestamp = local wall clock + time-sync offset
        ├── _send                           httpx; connect 5 s, read 10 s, whole attempt 30 s
        └── _check                          usage headers → limiter; status + body → errors
```

Every foreign exception is translated once, in the pipeline, into the Genesis error tree
(:mod:`genesis.errors`): httpx's transport errors become :class:`ConnectError` (nothing was
sent), :class:`ReadTimeoutError` or :class:`ConnectionLostError`; Binance's answers become
:class:`ExchangeRejectedError` (its ``code``, ``msg`` and the HTTP status kept),
:class:`ExchangeUnavailableError` (5xx), :class:`RateLimitedError` (429, after which the limiter
holds every request until ``Retry-After``) or :class:`IpBannedError` (418, after which the
limiter refuses everything until the ban ends). An order *placement* that may have reached the
exchange (a 5xx, -1006, -1007, a timeout or a connection lost after the request left) raises
:class:`OrderOutcomeUnknownError` and is never resent here: see ARCHITECTURE.md "Unknown
outcomes".

Deadlines are protocol deadlines in one frozen object (:class:`GatewayTimeouts`): the limiter's
queueing is *not* under them (a caller who cannot wait wraps the call in its own
``trio.move_on_after``), the HTTP exchange of each attempt is.

Every parameter is sent in the query string, percent-encoded, and the signature is computed
over exactly those bytes (Binance: "percent-encode first, then sign").
"""

from __future__ import annotations

import logging
import secrets
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final, Protocol

import attrs
import httpx
import orjson

from genesis.errors import (
    ConfigError,
    ExchangeProtocolError,
    GenesisError,
)
from genesis.exchange.endpoints import (
    depth_weight,
    my_trades_weight,
    open_orders_weight,
)
from genesis.exchange.rest_pipeline import Params, Placement, RestPipeline
from genesis.exchange.signing import load_signer
from genesis.exchange.time_sync import TimeSyncCore, TimeSyncStatistics
from genesis.models.codec import (
    decode_account,
    decode_depth,
    decode_exchange_info,
    decode_historical_trades,
    decode_json,
    decode_klines,
    decode_my_trades,
    decode_order,
    decode_orders,
    order_request_params,
)
from genesis.models.exchange_info import RateLimitType
from genesis.models.orders import is_valid_client_order_id
from genesis.resilience.circuit_breaker import BreakerConfig, CircuitBreaker
from genesis.resilience.rate_limiter import Cost, Priority, RateLimiter, RateLimiterCore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence
    from decimal import Decimal

    from genesis.bus import EventBus
    from genesis.config import Secret, Settings
    from genesis.exchange.signing import Signer
    from genesis.models.account import Account, AccountTrade
    from genesis.models.exchange_info import ExchangeInfo
    from genesis.models.market import Depth, Kline, Trade
    from genesis.models.orders import Order, OrderRequest
    from genesis.resilience.circuit_breaker import BreakerStatistics
    from genesis.resilience.rate_limiter import RateLimiterStatistics

__all__ = [
    "EXCHANGE_INFO_MAX_AGE_MS",
    "ExchangeInfoCache",
    "Gateway",
    "GatewayConfig",
    "GatewayStatistics",
    "GatewayTimeouts",
    "new_client_order_id_prefix",
    "open_gateway",
    "system_wall_clock_ms",
]

logger = logging.getLogger(__name__)

EXCHANGE_INFO_MAX_AGE_MS: Final = 3_600_000
"""A cached exchangeInfo older than an hour is read again."""
NO_SUCH_ORDER: Final = -2013
_LIMIT_TYPES: Final = frozenset(
    {RateLimitType.REQUEST_WEIGHT, RateLimitType.ORDERS, RateLimitType.RAW_REQUESTS}
)


def system_wall_clock_ms() -> int:
    """The system wall clock in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def new_client_order_id_prefix() -> str:
    """A random 8-character prefix for client order ids (unique per gateway instance)."""
    return secrets.token_hex(4)


@attrs.frozen(kw_only=True)
class GatewayTimeouts:
    """Protocol deadlines of one REST attempt (seconds).

    Attributes:
        connect_s: TCP (+ TLS) connect.
        read_s: each read of the answer.
        write_s: each write of the request.
        pool_s: waiting for a free pooled connection.
        call_s: the whole HTTP exchange of one attempt, however its reads and writes add up.
    """

    connect_s: float = attrs.field(default=5.0, validator=attrs.validators.gt(0.0))
    read_s: float = attrs.field(default=10.0, validator=attrs.validators.gt(0.0))
    write_s: float = attrs.field(default=10.0, validator=attrs.validators.gt(0.0))
    pool_s: float = attrs.field(default=5.0, validator=attrs.validators.gt(0.0))
    call_s: float = attrs.field(default=30.0, validator=attrs.validators.gt(0.0))

    def to_httpx(self) -> httpx.Timeout:
        return httpx.Timeout(
            self.read_s,
            connect=self.connect_s,
            read=self.read_s,
            write=self.write_s,
            pool=self.pool_s,
        )


@attrs.frozen(kw_only=True)
class GatewayConfig:
    """How the gateway talks to the exchange.

    Attributes:
        timeouts: protocol deadlines of each attempt.
        recv_window_ms: ``recvWindow`` of signed requests (Binance's default 5000).
        time_sync_samples: ``GET /api/v3/time`` round trips per time sync.
        breaker: the REST circuit breaker's numbers.
        limiter_threshold: the fraction of every rate limit Genesis allows itself.
        max_keepalive: idle connections kept in the pool.
    """

    timeouts: GatewayTimeouts = attrs.field(factory=GatewayTimeouts)
    recv_window_ms: int = attrs.field(
        default=5000, validator=[attrs.validators.ge(1), attrs.validators.le(60_000)]
    )
    time_sync_samples: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    breaker: BreakerConfig = attrs.field(factory=BreakerConfig)
    limiter_threshold: float = attrs.field(
        default=0.8, validator=[attrs.validators.gt(0.0), attrs.validators.le(1.0)]
    )
    max_keepalive: int = attrs.field(default=10, validator=attrs.validators.ge(1))


@attrs.frozen(kw_only=True)
class GatewayStatistics:
    """Counters and state of one gateway.

    Attributes:
        base_url: where requests go.
        requests: attempts sent (or tried).
        answered: attempts the exchange answered with 2xx.
        rejected: attempts answered with a Binance error (4xx).
        failed: transport failures, timeouts and 5xx.
        unknown_outcomes: placements whose outcome is unknown.
        resyncs: time resyncs after -1021.
        last_latency_ms: the last answered attempt's round trip.
        rate_limited: answers with HTTP 429 (also counted in ``failed``).
        ip_banned: answers with HTTP 418 (also counted in ``failed``).
        time_sync, limiter, breaker: the parts' own statistics.
    """

    base_url: str
    requests: int
    answered: int
    rejected: int
    failed: int
    unknown_outcomes: int
    resyncs: int
    last_latency_ms: float | None
    time_sync: TimeSyncStatistics
    limiter: RateLimiterStatistics
    breaker: BreakerStatistics
    rate_limited: int = 0
    ip_banned: int = 0


class ExchangeInfoCache(Protocol):
    """Where exchangeInfo is kept between runs (the order journal)."""

    async def cached_exchange_info(self) -> tuple[bytes, int] | None: ...

    async def cache_exchange_info(self, body: bytes, *, fetched_ms: int) -> None: ...


class Gateway:
    """Signed REST calls to one Binance Spot environment. Open it with :func:`open_gateway`.

    Every method is one exchange call (a -1021 answer is retried once after a time resync);
    each checkpoints, may wait in the rate limiter's queue, and raises only Genesis errors.
    Cancelling a call while it waits in the queue sends nothing; cancelling it while the
    request is in flight leaves its outcome unknown to the caller, exactly like a timeout.
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
        self._pipeline = RestPipeline(
            client,
            base_url=base_url,
            api_key=api_key,
            signer=signer,
            limiter=limiter,
            breaker=breaker,
            time_sync=time_sync,
            wall_clock_ms=wall_clock_ms,
            config=config,
        )
        self._base_url = base_url
        self._limiter = limiter
        self._breaker = breaker
        self._time_sync = time_sync
        self._wall_clock_ms = wall_clock_ms
        self._config = config
        self._exchange_info: ExchangeInfo | None = None
        self._exchange_info_json: bytes | None = None
        self._id_prefix = new_client_order_id_prefix()
        self._id_counter = 0

    # -- state ----------------------------------------------------------------------------------

    @property
    def limiter(self) -> RateLimiter:
        return self._limiter

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    @property
    def recv_window_ms(self) -> int:
        return self._config.recv_window_ms

    @property
    def cached_exchange_info(self) -> ExchangeInfo | None:
        """The last exchangeInfo read, or ``None`` if none could be read yet."""
        return self._exchange_info

    def server_time_ms(self) -> int:
        """The exchange's clock now, as estimated from the time sync (epoch ms)."""
        return self._pipeline.server_time_ms()

    def next_client_order_id(self) -> str:
        """A fresh client order id: ``g-<random prefix>-<counter>`` (unique per gateway)."""
        self._id_counter += 1
        return f"g-{self._id_prefix}-{self._id_counter}"

    def statistics(self) -> GatewayStatistics:
        c = self._pipeline.counters
        return GatewayStatistics(
            base_url=self._base_url,
            requests=c.requests,
            answered=c.answered,
            rejected=c.rejected,
            failed=c.failed,
            unknown_outcomes=c.unknown_outcomes,
            resyncs=c.resyncs,
            last_latency_ms=c.last_latency_ms,
            time_sync=self._time_sync.statistics(self._wall_clock_ms()),
            limiter=self._limiter.statistics(),
            breaker=self._breaker.statistics(),
            rate_limited=c.rate_limited,
            ip_banned=c.ip_banned,
        )

    # -- public endpoints -------------------------------------------------------------------------

    async def ping(self) -> None:
        """``GET /api/v3/ping``: the exchange answers."""
        await self._pipeline.call("GET", "ping")

    async def server_time(self) -> int:
        """``GET /api/v3/time``: the exchange's clock (epoch ms)."""
        return await self._pipeline.server_time()

    async def sync_time(self) -> TimeSyncStatistics:
        """Measure the clock offset from several ``GET /api/v3/time`` round trips.

        Raises:
            ExchangeError: when not one sample could be taken.
        """
        return await self._pipeline.sync_time()

    async def exchange_info(self, symbols: Sequence[str] | None = None) -> ExchangeInfo:
        """``GET /api/v3/exchangeInfo``; its rate limits become the limiter's live limits."""
        params: Params = []
        if symbols:
            params.append(("symbols", "[" + ",".join(f'"{s}"' for s in symbols) + "]"))
        data = await self._pipeline.call("GET", "exchangeInfo", params)
        info = decode_exchange_info(data)
        self.adopt_exchange_info(info)
        self._exchange_info_json = orjson.dumps(data)
        return info

    def adopt_exchange_info(self, info: ExchangeInfo) -> None:
        """Use ``info`` (e.g. from the journal's cache): its limits and symbol rules."""
        limits = [limit for limit in info.rate_limits if limit.type in _LIMIT_TYPES]
        if limits:
            self._limiter.set_limits(limits)
        self._exchange_info = info

    async def load_exchange_info(
        self,
        cache: ExchangeInfoCache | None = None,
        *,
        max_age_ms: int = EXCHANGE_INFO_MAX_AGE_MS,
    ) -> ExchangeInfo | None:
        """Adopt exchangeInfo from ``cache`` if younger than ``max_age_ms``, else read it.

        A fresh read is stored in ``cache``. Never raises for the exchange's trouble: a failed
        read is a WARNING and leaves the limits and rules as they were (the fallback limits
        until a read succeeds).

        Returns:
            The exchangeInfo now in use, or ``None`` when none could be had.
        """
        if cache is not None:
            cached = await self._cached_exchange_info(cache, max_age_ms)
            if cached is not None:
                return cached
        try:
            info = await self.exchange_info()
        except GenesisError as exc:
            logger.warning(
                "gateway.exchange_info_failed error=%s: %s; keeping the limits in use",
                type(exc).__name__,
                exc,
            )
            return self._exchange_info
        logger.info(
            "gateway.limits %s",
            " ".join(f"{r.type.value}/{r.header_suffix}={r.limit}" for r in info.rate_limits),
        )
        if cache is not None and self._exchange_info_json is not None:
            await cache.cache_exchange_info(
                self._exchange_info_json, fetched_ms=self.server_time_ms()
            )
        return info

    async def _cached_exchange_info(
        self, cache: ExchangeInfoCache, max_age_ms: int
    ) -> ExchangeInfo | None:
        cached = await cache.cached_exchange_info()
        if cached is None:
            return None
        body, fetched_ms = cached
        age_ms = self.server_time_ms() - fetched_ms
        if not 0 <= age_ms < max_age_ms:
            return None
        try:
            info = decode_exchange_info(decode_json(body, what="cached exchangeInfo"))
        except ExchangeProtocolError as exc:
            logger.warning("gateway.exchange_info_cache_unreadable error=%s", exc)
            return None
        self.adopt_exchange_info(info)
        logger.info("gateway.exchange_info_cached age_s=%.0f", age_ms / 1000)
        return info

    async def depth(self, symbol: str, limit: int = 100) -> Depth:
        """``GET /api/v3/depth``: the book's best ``limit`` levels per side."""
        data = await self._pipeline.call(
            "GET",
            "depth",
            [("symbol", symbol), ("limit", str(limit))],
            cost=Cost(weight=depth_weight(limit)),
        )
        return decode_depth(data, symbol=symbol, received_ms=self._wall_clock_ms())

    async def historical_trades(
        self, symbol: str, *, from_id: int, limit: int = 1000
    ) -> tuple[Trade, ...]:
        """``GET /api/v3/historicalTrades`` (weight 25): up to ``limit`` public trades of
        ``symbol`` from trade id ``from_id`` on, oldest first, as stream :class:`Trade` events.

        Public since 2023 (no API key needed); the market-data backfill source.
        """
        data = await self._pipeline.call(
            "GET",
            "historicalTrades",
            [("symbol", symbol), ("limit", str(limit)), ("fromId", str(from_id))],
        )
        return decode_historical_trades(data, symbol=symbol)

    async def klines(
        self,
        symbol: str,
        interval: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> tuple[Kline, ...]:
        """``GET /api/v3/klines`` (weight 2): klines of ``symbol`` opening in
        ``[start_ms, end_ms]``, oldest first; those already over are ``closed``."""
        params: Params = [("symbol", symbol), ("interval", interval)]
        if start_ms is not None:
            params.append(("startTime", str(start_ms)))
        if end_ms is not None:
            params.append(("endTime", str(end_ms)))
        params.append(("limit", str(limit)))
        data = await self._pipeline.call("GET", "klines", params)
        return decode_klines(data, symbol=symbol, interval=interval, now_ms=self.server_time_ms())

    # -- orders ---------------------------------------------------------------------------------

    async def place_order(
        self, request: OrderRequest, *, expected_price: Decimal | None = None
    ) -> Order:
        """``POST /api/v3/order`` (response type FULL); returns the order as the exchange has it.

        A client order id is always sent: ``request.client_order_id`` or a fresh one.

        Args:
            request: what to place.
            expected_price: the price the caller expected to trade at; fills are compared with it
                in ``Order.slippage_percent``.

        Raises:
            ExchangeRejectedError: the exchange refused it (nothing was placed).
            OrderOutcomeUnknownError: it may or may not have been placed; never resend blindly.
            ConnectError: it was not sent (no connection); safe to retry.
            RateLimitedError, IpBannedError, CircuitOpenError: it was not placed.
        """
        if request.client_order_id is None:
            request = request.with_client_order_id(self.next_client_order_id())
        client_order_id = request.client_order_id
        assert client_order_id is not None
        params = order_request_params(request, client_order_id=client_order_id)
        placement = Placement(client_order_id)
        data = await self._pipeline.call(
            "POST", "order", params, signed=True, priority=Priority.ORDER, placement=placement
        )
        return decode_order(
            data,
            request=request,
            latency_ms=placement.latency_ms,
            expected_price=expected_price,
        )

    async def test_order(self, request: OrderRequest) -> None:
        """``POST /api/v3/order/test``: validated by the exchange, never placed."""
        client_order_id = request.client_order_id or self.next_client_order_id()
        params = order_request_params(request, client_order_id=client_order_id)
        await self._pipeline.call("POST", "order/test", params, signed=True)

    async def get_order(
        self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None
    ) -> Order:
        """``GET /api/v3/order`` by Binance's ``orderId`` or by the client order id.

        Raises:
            ExchangeRejectedError: code -2013 when no such order exists.
        """
        data = await self._pipeline.call(
            "GET", "order", _order_ref(symbol, client_order_id, order_id), signed=True
        )
        return decode_order(data)

    async def cancel_order(
        self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None
    ) -> Order:
        """``DELETE /api/v3/order``; returns the cancelled order (status ``CANCELED``).

        Cancels go ahead of new orders in the limiter's queue.

        Raises:
            ExchangeRejectedError: code -2011 when the order is unknown or no longer open.
        """
        data = await self._pipeline.call(
            "DELETE",
            "order",
            _order_ref(symbol, client_order_id, order_id),
            signed=True,
            priority=Priority.CANCEL,
        )
        return decode_order(data)

    async def open_orders(self, symbol: str | None = None) -> tuple[Order, ...]:
        """``GET /api/v3/openOrders`` for ``symbol`` (weight 6) or every symbol (weight 80)."""
        params: Params = [("symbol", symbol)] if symbol else []
        data = await self._pipeline.call(
            "GET",
            "openOrders",
            params,
            signed=True,
            cost=Cost(weight=open_orders_weight(with_symbol=symbol is not None)),
        )
        return decode_orders(data)

    async def cancel_open_orders(self, symbol: str) -> tuple[Order, ...]:
        """``DELETE /api/v3/openOrders``: cancel every open order of ``symbol``."""
        data = await self._pipeline.call(
            "DELETE", "openOrders", [("symbol", symbol)], signed=True, priority=Priority.CANCEL
        )
        return decode_orders(data)

    async def account(self) -> Account:
        """``GET /api/v3/account``: permissions and balances."""
        return decode_account(await self._pipeline.call("GET", "account", signed=True))

    async def my_trades(
        self, symbol: str, *, order_id: int | None = None, limit: int | None = None
    ) -> tuple[AccountTrade, ...]:
        """``GET /api/v3/myTrades``: the account's trades in ``symbol`` (of one order if given)."""
        params: Params = [("symbol", symbol)]
        if order_id is not None:
            params.append(("orderId", str(order_id)))
        if limit is not None:
            params.append(("limit", str(limit)))
        data = await self._pipeline.call(
            "GET",
            "myTrades",
            params,
            signed=True,
            cost=Cost(weight=my_trades_weight(with_order_id=order_id is not None)),
        )
        return decode_my_trades(data)


def _order_ref(symbol: str, client_order_id: str | None, order_id: int | None) -> Params:
    if (client_order_id is None) == (order_id is None):
        raise ValueError("give exactly one of client_order_id and order_id")
    if order_id is not None:
        return [("symbol", symbol), ("orderId", str(order_id))]
    assert client_order_id is not None
    if not is_valid_client_order_id(client_order_id):
        raise ValueError(f"not a valid client order id: {client_order_id[:40]!r}")
    return [("symbol", symbol), ("origClientOrderId", client_order_id)]


@asynccontextmanager
async def open_gateway(
    settings: Settings,
    *,
    rest_url: str | None = None,
    api_key: Secret | None = None,
    signer: Signer | None = None,
    config: GatewayConfig | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    wall_clock_ms: Callable[[], int] = system_wall_clock_ms,
    bus: EventBus | None = None,
    breaker: CircuitBreaker | None = None,
    prepare: bool = True,
    exchange_info_cache: ExchangeInfoCache | None = None,
    exchange_info_max_age_ms: int = EXCHANGE_INFO_MAX_AGE_MS,
) -> AsyncIterator[Gateway]:
    """Open a :class:`Gateway` over one kept-alive ``httpx.AsyncClient`` (HTTP/1.1).

    On entry (``prepare=True``) it syncs the clock and reads exchangeInfo for the live rate
    limits. Neither is fatal: without them the offset is 0 and the limiter keeps its
    conservative fallback limits (1200 weight/min, 50 orders/10 s, 160,000/day), each logged at
    WARNING; the next successful exchangeInfo replaces them.

    Args:
        settings: where to connect (``rest_url``, credentials, ``recv_window_ms``).
        rest_url: overrides ``settings.rest_url`` (the embedded simulator's URL).
        api_key, signer: override the credentials of ``settings`` (simulator mode has none).
        config: deadlines and limits; its ``recv_window_ms`` defaults to the settings'.
        transport: an httpx transport (tests: ``httpx.ASGITransport`` over the simulator).
        wall_clock_ms: the local wall clock (tests: one that follows Trio's virtual clock).
        bus: where breaker transitions are published.
        breaker: the REST breaker to use (one is made when ``None``).
        prepare: sync the clock and read exchangeInfo on entry.
        exchange_info_cache: where exchangeInfo is cached (the journal): a cached copy younger
            than ``exchange_info_max_age_ms`` (an hour) is used instead of a round trip, so a
            slow exchange does not hold up the first order; a fresh read is stored there.

    Raises:
        ConfigError: no REST URL, or credentials that cannot be loaded.
    """
    base_url = rest_url or settings.rest_url
    if base_url is None:
        raise ConfigError(["no REST URL: start the simulator or set credentials"])
    if config is None:
        config = GatewayConfig(recv_window_ms=settings.recv_window_ms)
    if api_key is None and signer is None:
        api_key, signer = settings.api_key, load_signer(settings)
    if breaker is None:
        breaker = CircuitBreaker(
            "rest", config.breaker, on_transition=None if bus is None else bus.publish
        )
    time_core = TimeSyncCore()

    def server_now() -> int:
        return time_core.server_time_ms(wall_clock_ms())

    limiter = RateLimiter(
        RateLimiterCore(threshold=config.limiter_threshold), server_time_ms=server_now
    )
    limits = httpx.Limits(
        max_keepalive_connections=config.max_keepalive, max_connections=config.max_keepalive * 2
    )
    async with httpx.AsyncClient(
        transport=transport,
        timeout=config.timeouts.to_httpx(),
        limits=limits,
        http2=False,
        headers={"User-Agent": "genesis"},
    ) as client:
        gateway = Gateway(
            client,
            base_url=base_url,
            api_key=api_key,
            signer=signer,
            limiter=limiter,
            breaker=breaker,
            time_sync=time_core,
            wall_clock_ms=wall_clock_ms,
            config=config,
        )
        if prepare:
            await _prepare(gateway, exchange_info_cache, exchange_info_max_age_ms)
        logger.info("gateway.open base_url=%s signed=%s", base_url, signer is not None)
        try:
            yield gateway
        finally:
            logger.info("gateway.close base_url=%s", base_url)


async def _prepare(gateway: Gateway, cache: ExchangeInfoCache | None, max_age_ms: int) -> None:
    try:
        stats = await gateway.sync_time()
    except GenesisError as exc:
        logger.warning("gateway.time_sync_failed error=%s: %s", type(exc).__name__, exc)
    else:
        logger.info(
            "gateway.time_synced offset_ms=%s uncertainty_ms=%s",
            stats.offset_ms,
            stats.uncertainty_ms,
        )
    await gateway.load_exchange_info(cache, max_age_ms=max_age_ms)
