"""Placing, cancelling and querying orders so that none is lost and none is placed twice.

```
OrderService.place(request)
├── prepare_order            exchangeInfo filters: tick, step, notional … (orders/checks.py)
├── journal.record_intent    committed before anything leaves the process
├── journal.record_sent      claimed once: a restart never sends an intent twice
├── gateway.place_order      limiter → breaker → signed REST, sent exactly once
└── OrderRecorder.record     journal the outcome, then publish it (OrderUpdate, never dropped)
```

An answer that leaves the outcome unknown (a timeout, a 5xx, -1006/-1007) is journaled as
``UNKNOWN`` and published; :meth:`OrderService.resolve` settles it without ever resending —
once ``timestamp + recvWindow`` has passed on the exchange's clock it asks for the order by
client order id: found → its state is adopted; -2013 → it never existed (``REJECTED``), and only
then may the caller try again, under a new client order id (ARCHITECTURE.md "Unknown
outcomes"). An execution report from the user data stream settles it too: the journal keeps the
most advanced state whichever way it arrives first.

Every view of an order — a REST answer, the resolver's query, an execution report, a
reconciliation — goes through :class:`OrderRecorder`: journal first, then the bus. An order the
journal never saw is recorded as *external*.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final, Protocol

import attrs
import trio

from genesis.errors import (
    ExchangeRejectedError,
    GenesisError,
    OrderOutcomeUnknownError,
    PreTradeCheckError,
    RetryableError,
)
from genesis.models.events import OrderUpdate, OrderUpdateSource
from genesis.models.orders import Order, OrderRequest, OrderStatus
from genesis.orders.checks import prepare_order
from genesis.orders.journal import OrderNotFoundError
from genesis.resilience.backoff import Backoff, BackoffPolicy

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from decimal import Decimal

    from genesis.models.events import AccountBalances
    from genesis.models.exchange_info import ExchangeInfo
    from genesis.orders.journal import Journal

__all__ = [
    "FILTER_FAILURE",
    "FILTER_REFRESH_INTERVAL_S",
    "NO_SUCH_ORDER",
    "RESOLVE_MARGIN_MS",
    "OrderGateway",
    "OrderRecorder",
    "OrderService",
    "UpdateSink",
    "resolve_unknown_order",
]

logger = logging.getLogger(__name__)

NO_SUCH_ORDER: Final = -2013
FILTER_FAILURE: Final = -1013
RESOLVE_MARGIN_MS: Final = 1000
"""Waited past ``timestamp + recvWindow`` before asking: the exchange's clock may lag ours."""
_RESOLVE_BACKOFF: Final = BackoffPolicy(initial_s=1.0, max_s=30.0)
FILTER_REFRESH_INTERVAL_S: Final = 60.0
"""Filter rejections read exchangeInfo (weight 20) again at most once per this long: an order
refused again and again (a price outside PERCENT_PRICE_BY_SIDE, which needs no new filters)
does not turn every refusal into a refetch."""


class OrderGateway(Protocol):
    """What the order path needs of :class:`~genesis.exchange.gateway.Gateway`."""

    @property
    def recv_window_ms(self) -> int: ...

    @property
    def cached_exchange_info(self) -> ExchangeInfo | None: ...

    def server_time_ms(self) -> int: ...

    async def exchange_info(self, symbols: list[str] | None = None) -> ExchangeInfo: ...

    async def open_orders(self, symbol: str | None = None) -> tuple[Order, ...]: ...

    async def place_order(
        self, request: OrderRequest, *, expected_price: Decimal | None = None
    ) -> Order: ...

    async def get_order(
        self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None
    ) -> Order: ...

    async def cancel_order(
        self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None
    ) -> Order: ...


class UpdateSink(Protocol):
    """Where updates go: :meth:`genesis.bus.EventBus.publish` (waits for room, never drops)."""

    async def __call__(self, event: OrderUpdate) -> None: ...


@attrs.define
class OrderRecorder:
    """Journal an order view, then publish it. One path for every source.

    The update is handed to the journal with the record, so where the NATS bridge runs it goes
    into the outbox in the same transaction (``Journal.keep_updates_in_outbox``).
    """

    journal: Journal
    publish: UpdateSink
    server_time_ms: Callable[[], int]

    async def record(
        self, order: Order, source: OrderUpdateSource, reason: str | None = None
    ) -> None:
        """Journal ``order`` (as external if the journal never saw it) and publish it."""
        update = OrderUpdate(order=order, source=source, reason=reason)
        outbox = self.journal.outbox_message(update)
        now_ms = self.server_time_ms()
        try:
            await self.journal.record_update(
                order, source=source, reason=reason, now_ms=now_ms, outbox=outbox
            )
        except OrderNotFoundError:
            logger.warning(
                "orders.external client_order_id=%s order_id=%s symbol=%s status=%s",
                order.client_order_id,
                order.exchange_order_id,
                order.symbol,
                order.status_name,
            )
            await self.journal.record_external(order, now_ms=now_ms, outbox=outbox)
        await self.publish(update)

    async def record_balances(
        self, event: AccountBalances, publish: Callable[[AccountBalances], Awaitable[None]]
    ) -> None:
        """Keep ``event`` in the outbox where the NATS bridge runs (it has no journal record),
        then ``publish`` it: a balance change reaches the broker even if the process stops
        before the bus hands it to the bridge."""
        await self.journal.keep_balances(event, now_ms=self.server_time_ms())
        await publish(event)


class OrderService:
    """The order path: journal, checks, one send, recorded outcome. Safe to call concurrently."""

    def __init__(self, gateway: OrderGateway, journal: Journal, publish: UpdateSink) -> None:
        self.gateway = gateway
        self.journal = journal
        self.recorder = OrderRecorder(journal, publish, gateway.server_time_ms)
        self._filters_refreshed_at: float | None = None

    async def place(self, request: OrderRequest, *, expected_price: Decimal | None = None) -> Order:
        """Place ``request`` once, journaled before it leaves; returns the exchange's answer.

        Args:
            request: the order; its client order id is the journal's unless it carries one.
            expected_price: for ``Order.slippage_percent``.

        Returns:
            The order as the exchange answered (also journaled and published).

        Raises:
            PreTradeCheckError: it breaks a filter; nothing was sent (journaled ``REJECTED``).
            OrderOutcomeUnknownError: it may exist; journaled and published ``UNKNOWN``. Settle
                it with :meth:`resolve`; never send it again.
            DuplicateOrderError: its client order id is journaled already; nothing was sent.
            GenesisError: the exchange refused it or it was not sent (journaled ``REJECTED``
                with the reason).
        """
        now_ms = self.gateway.server_time_ms()
        try:
            prepared = self._prepare(request)
        except PreTradeCheckError as exc:
            entry = await self.journal.record_intent(request, now_ms=now_ms)
            await self._reject(entry.request or request, str(exc))
            raise
        entry = await self.journal.record_intent(prepared, now_ms=now_ms)
        prepared = entry.request or prepared
        client_order_id = entry.client_order_id
        await self.journal.record_sent(client_order_id, sent_at_ms=self.gateway.server_time_ms())
        try:
            order = await self.gateway.place_order(prepared, expected_price=expected_price)
        except OrderOutcomeUnknownError as exc:
            logger.warning(
                "orders.outcome_unknown client_order_id=%s symbol=%s reason=%s",
                client_order_id,
                prepared.symbol,
                exc.reason,
            )
            unknown = Order.from_request(
                prepared,
                client_order_id=client_order_id,
                status=OrderStatus.UNKNOWN,
                created_ms=exc.sent_at_ms,
            )
            update = OrderUpdate(order=unknown, source=OrderUpdateSource.REST, reason=exc.reason)
            fresh = await self.journal.record_unknown(
                client_order_id,
                reason=exc.reason,
                sent_at_ms=exc.sent_at_ms,
                now_ms=self.gateway.server_time_ms(),
                outbox=self.journal.outbox_message(update),
            )
            if fresh:
                await self.recorder.publish(update)
            raise
        except GenesisError as exc:
            await self._reject(prepared, str(exc))
            if isinstance(exc, ExchangeRejectedError) and exc.code == FILTER_FAILURE:
                await self._refresh_filters()
            raise
        logger.info(
            "orders.placed client_order_id=%s order_id=%s symbol=%s status=%s latency_ms=%s",
            client_order_id,
            order.exchange_order_id,
            order.symbol,
            order.status_name,
            order.latency_ms,
        )
        await self.recorder.record(order, OrderUpdateSource.REST)
        return order

    async def resolve(
        self, request: OrderRequest, unknown: OrderOutcomeUnknownError
    ) -> Order | None:
        """Settle an unknown placement without resending it; the result is journaled and published.

        Waits until ``unknown.sent_at_ms + recvWindow`` (+ :data:`RESOLVE_MARGIN_MS`) has passed
        on the exchange's clock, then asks for the order by client order id, retrying transient
        failures with backoff (1, 2, 4 … 30 s) until it gets an answer. Cancel the call (or wrap
        it in ``move_on_after``) to give up: the journal keeps the order ``UNKNOWN`` for a
        later resolution or reconciliation.

        Returns:
            The order as the exchange has it, or ``None`` when it never existed (journaled
            ``REJECTED``: a new attempt, under a new client order id, is safe).

        Raises:
            ExchangeRejectedError: any other, lasting rejection of the query.
        """
        found = await resolve_unknown_order(self.gateway, request.symbol, unknown)
        if found is None:
            logger.warning(
                "orders.never_placed client_order_id=%s: the exchange has no such order",
                unknown.client_order_id,
            )
            await self._reject(
                request.with_client_order_id(unknown.client_order_id),
                "never reached the exchange (-2013 after recvWindow)",
            )
            return None
        logger.info(
            "orders.resolved client_order_id=%s order_id=%s status=%s",
            found.client_order_id,
            found.exchange_order_id,
            found.status_name,
        )
        await self.recorder.record(found, OrderUpdateSource.REST, reason="resolved by query")
        return found

    async def cancel(
        self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None
    ) -> Order:
        """Cancel one order; the answer is journaled and published."""
        order = await self.gateway.cancel_order(
            symbol, client_order_id=client_order_id, order_id=order_id
        )
        await self.recorder.record(order, OrderUpdateSource.REST)
        return order

    async def query(
        self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None
    ) -> Order:
        """Ask the exchange for one order; the answer is journaled and published."""
        order = await self.gateway.get_order(
            symbol, client_order_id=client_order_id, order_id=order_id
        )
        await self.recorder.record(order, OrderUpdateSource.REST)
        return order

    def _prepare(self, request: OrderRequest) -> OrderRequest:
        info = self.gateway.cached_exchange_info
        if info is None:
            # No exchangeInfo could be read (nor cached): the exchange still checks every
            # filter; we only lose the local, earlier refusal.
            logger.warning(
                "orders.unchecked symbol=%s reason=no exchangeInfo: the exchange will check",
                request.symbol,
            )
            return request
        symbol = info.symbol(request.symbol)
        if symbol is None:
            raise PreTradeCheckError("SYMBOL", f"{request.symbol} is not listed by the exchange")
        return prepare_order(request, symbol)

    async def _reject(self, request: OrderRequest, reason: str) -> None:
        assert request.client_order_id is not None
        rejected = Order.from_request(
            request,
            client_order_id=request.client_order_id,
            status=OrderStatus.REJECTED,
            created_ms=self.gateway.server_time_ms(),
        )
        await self.recorder.record(rejected, OrderUpdateSource.REST, reason=reason)

    async def _refresh_filters(self) -> None:
        # The exchange's filters disagree with ours: read them again (issue: "refreshed on a
        # filter rejection"), at most once per FILTER_REFRESH_INTERVAL_S. Failing that is a
        # warning; the old ones stay.
        now = trio.current_time()
        last = self._filters_refreshed_at
        if last is not None and now - last < FILTER_REFRESH_INTERVAL_S:
            logger.info("orders.filters_refresh_skipped read_s_ago=%.0f", now - last)
            return
        self._filters_refreshed_at = now
        try:
            await self.gateway.exchange_info()
        except GenesisError as exc:
            logger.warning("orders.filters_refresh_failed error=%s", exc)


async def resolve_unknown_order(
    gateway: OrderGateway, symbol: str, unknown: OrderOutcomeUnknownError
) -> Order | None:
    """Query an unknown placement once it can no longer be accepted; never resend it.

    Returns:
        The order as the exchange has it, or ``None`` when the exchange answered -2013.

    Raises:
        ExchangeRejectedError: any other rejection that is not retryable.
    """
    ready_at_ms = unknown.sent_at_ms + gateway.recv_window_ms + RESOLVE_MARGIN_MS
    wait_ms = ready_at_ms - gateway.server_time_ms()
    if wait_ms > 0:
        await trio.sleep(wait_ms / 1000)
    backoff = Backoff(_RESOLVE_BACKOFF)
    while True:
        try:
            return await gateway.get_order(symbol, client_order_id=unknown.client_order_id)
        except ExchangeRejectedError as exc:
            if exc.code == NO_SUCH_ORDER:
                return None
            if not isinstance(exc, RetryableError):
                raise
            error: GenesisError = exc
        except RetryableError as exc:
            error = exc
        delay = backoff.mark_failed(trio.current_time())
        logger.warning(
            "orders.resolve_retry client_order_id=%s delay_s=%.0f error=%s",
            unknown.client_order_id,
            delay,
            type(error).__name__,
        )
        await trio.sleep(delay)
