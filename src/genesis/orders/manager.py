"""The order task: where order commands enter Genesis and order updates leave it.

```
run_order_task                        (one nursery)
├── command loop                      PlaceOrder / CancelOrder / QueryOrder, one at a time
│   └── gateway call                  limiter → breaker → signed REST (exchange/gateway.py)
└── resolver per unknown outcome      wait out recvWindow, then query by client order id
```

Every outcome becomes an :class:`~genesis.models.events.OrderUpdate` on the bus, published
with backpressure (order events are never dropped). A placement whose outcome is unknown (a
timeout, a 5xx, -1006/-1007) is never resent: it is published as ``UNKNOWN`` and resolved by
:func:`resolve_unknown_order` — once the exchange can no longer accept the original request
(``timestamp + recvWindow`` has passed on its clock), ``GET /api/v3/order?origClientOrderId=``
either finds it (its state is adopted) or answers -2013 (it never existed; only then may the
caller try again, under a new client order id).

The journal, the user data stream and reconciliation after a restart build on this task
(ARCHITECTURE.md §2).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Final, NoReturn, Protocol, TypeAlias

import attrs
import trio

from genesis.errors import (
    ExchangeRejectedError,
    GenesisError,
    OrderOutcomeUnknownError,
    RetryableError,
)
from genesis.models.events import OrderUpdate, OrderUpdateSource
from genesis.models.orders import Order, OrderRequest, OrderStatus
from genesis.resilience.backoff import Backoff, BackoffPolicy

if TYPE_CHECKING:
    from decimal import Decimal

    from genesis.models.exchange_info import ExchangeInfo

__all__ = [
    "RESOLVE_MARGIN_MS",
    "CancelOrder",
    "OrderCommand",
    "OrderGateway",
    "OrderTaskState",
    "OrderTaskStatistics",
    "PlaceOrder",
    "QueryOrder",
    "UpdateSink",
    "resolve_unknown_order",
    "run_order_task",
]

logger = logging.getLogger(__name__)

NO_SUCH_ORDER: Final = -2013
RESOLVE_MARGIN_MS: Final = 1000
"""Waited past ``timestamp + recvWindow`` before asking: the exchange's clock may lag ours."""
_RESOLVE_BACKOFF: Final = BackoffPolicy(initial_s=1.0, max_s=30.0)


class OrderGateway(Protocol):
    """What the order task needs of :class:`~genesis.exchange.gateway.Gateway`."""

    @property
    def recv_window_ms(self) -> int: ...

    @property
    def cached_exchange_info(self) -> ExchangeInfo | None: ...

    def server_time_ms(self) -> int: ...

    def next_client_order_id(self) -> str: ...

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


class _OrderRef:
    client_order_id: str | None
    order_id: int | None

    def __attrs_post_init__(self) -> None:
        if (self.client_order_id is None) == (self.order_id is None):
            raise ValueError("give exactly one of client_order_id and order_id")


@attrs.frozen(kw_only=True)
class PlaceOrder:
    """Place ``request`` (a fresh client order id is assigned when it has none)."""

    request: OrderRequest
    expected_price: Decimal | None = None


@attrs.frozen(kw_only=True)
class CancelOrder(_OrderRef):
    """Cancel one order, by client order id or by Binance's order id."""

    symbol: str
    client_order_id: str | None = None
    order_id: int | None = None


@attrs.frozen(kw_only=True)
class QueryOrder(_OrderRef):
    """Ask the exchange for one order's state."""

    symbol: str
    client_order_id: str | None = None
    order_id: int | None = None


OrderCommand: TypeAlias = PlaceOrder | CancelOrder | QueryOrder


@attrs.frozen(kw_only=True)
class OrderTaskStatistics:
    """Counters of the order task."""

    received: int
    placed: int
    rejected: int
    unknown: int
    resolved: int
    failed: int
    resolving: int
    channel_closed: bool


@attrs.define
class OrderTaskState:
    """What the order task has done; read it through :meth:`statistics`."""

    received: int = 0
    placed: int = 0
    rejected: int = 0
    unknown: int = 0
    resolved: int = 0
    failed: int = 0
    resolving: int = 0
    channel_closed: bool = False

    def statistics(self) -> OrderTaskStatistics:
        return OrderTaskStatistics(
            received=self.received,
            placed=self.placed,
            rejected=self.rejected,
            unknown=self.unknown,
            resolved=self.resolved,
            failed=self.failed,
            resolving=self.resolving,
            channel_closed=self.channel_closed,
        )


async def resolve_unknown_order(
    gateway: OrderGateway, symbol: str, unknown: OrderOutcomeUnknownError
) -> Order | None:
    """Settle an unknown placement without ever resending it.

    Waits until ``unknown.sent_at_ms + recvWindow`` (plus :data:`RESOLVE_MARGIN_MS`) has passed
    on the exchange's clock — after that the original request can no longer be accepted — then
    queries it by client order id, retrying transient failures with backoff (1, 2, 4 … 30 s)
    until it gets an answer. Cancel the call (or wrap it in ``move_on_after``) to give up.

    Returns:
        The order as the exchange has it, or ``None`` when the exchange answered -2013: it
        never existed, and a new attempt (under a new client order id) is safe.

    Raises:
        ExchangeRejectedError: any other rejection of the query (e.g. bad credentials).
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


async def run_order_task(
    commands: trio.MemoryReceiveChannel[OrderCommand],
    gateway: OrderGateway,
    publish: UpdateSink,
    *,
    task_status: trio.TaskStatus[OrderTaskState] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Execute order commands through ``gateway`` and publish every outcome, until cancelled.

    Commands run one at a time in arrival order (the gateway's limiter orders concurrent
    callers; one task keeps each caller's commands in sequence). A failed command never ends
    the task: its error is logged and published as an update where an order is concerned.

    Args:
        commands: the receive side of the order channel; the task closes it when it ends.
        gateway: the REST gateway.
        publish: where :class:`OrderUpdate` events go (``bus.publish``).
        task_status: receives the :class:`OrderTaskState` once the task reads its channel.
    """
    state = OrderTaskState()
    async with commands, trio.open_nursery() as nursery:
        task_status.started(state)
        logger.info("orders.task.start")
        async for command in commands:
            state.received += 1
            await _execute(command, gateway, publish, state, nursery)
        state.channel_closed = True
        logger.info("orders.task.idle reason=channel_closed received=%d", state.received)
        await trio.sleep_forever()
    raise AssertionError("unreachable")  # pragma: no cover


async def _execute(
    command: OrderCommand,
    gateway: OrderGateway,
    publish: UpdateSink,
    state: OrderTaskState,
    nursery: trio.Nursery,
) -> None:
    if isinstance(command, PlaceOrder):
        await _place(command, gateway, publish, state, nursery)
        return
    try:
        if isinstance(command, CancelOrder):
            order = await gateway.cancel_order(
                command.symbol, client_order_id=command.client_order_id, order_id=command.order_id
            )
        else:
            order = await gateway.get_order(
                command.symbol, client_order_id=command.client_order_id, order_id=command.order_id
            )
    except GenesisError as exc:
        state.failed += 1
        logger.warning(
            "orders.command_failed command=%s symbol=%s client_order_id=%s order_id=%s error=%s",
            type(command).__name__,
            command.symbol,
            command.client_order_id,
            command.order_id,
            exc,
        )
        return
    await publish(OrderUpdate(order=order, source=OrderUpdateSource.REST))


async def _place(
    command: PlaceOrder,
    gateway: OrderGateway,
    publish: UpdateSink,
    state: OrderTaskState,
    nursery: trio.Nursery,
) -> None:
    request = command.request
    client_order_id = request.client_order_id or gateway.next_client_order_id()
    request = request.with_client_order_id(client_order_id)
    try:
        order = await gateway.place_order(request, expected_price=command.expected_price)
    except OrderOutcomeUnknownError as exc:
        state.unknown += 1
        logger.warning(
            "orders.outcome_unknown client_order_id=%s symbol=%s reason=%s",
            client_order_id,
            request.symbol,
            exc.reason,
        )
        unknown = Order.from_request(
            request,
            client_order_id=client_order_id,
            status=OrderStatus.UNKNOWN,
            created_ms=exc.sent_at_ms,
        )
        await publish(OrderUpdate(order=unknown, source=OrderUpdateSource.REST, reason=exc.reason))
        state.resolving += 1
        nursery.start_soon(_resolve, gateway, publish, state, request, exc)
        return
    except GenesisError as exc:
        state.rejected += 1
        logger.warning(
            "orders.rejected client_order_id=%s symbol=%s error=%s",
            client_order_id,
            request.symbol,
            exc,
        )
        rejected = Order.from_request(
            request,
            client_order_id=client_order_id,
            status=OrderStatus.REJECTED,
            created_ms=gateway.server_time_ms(),
        )
        await publish(OrderUpdate(order=rejected, source=OrderUpdateSource.REST, reason=str(exc)))
        return
    state.placed += 1
    logger.info(
        "orders.placed client_order_id=%s order_id=%s symbol=%s status=%s latency_ms=%.1f",
        client_order_id,
        order.exchange_order_id,
        order.symbol,
        order.status_name,
        order.latency_ms if order.latency_ms is not None else math.nan,
    )
    await publish(OrderUpdate(order=order, source=OrderUpdateSource.REST))


async def _resolve(
    gateway: OrderGateway,
    publish: UpdateSink,
    state: OrderTaskState,
    request: OrderRequest,
    unknown: OrderOutcomeUnknownError,
) -> None:
    try:
        found = await resolve_unknown_order(gateway, request.symbol, unknown)
    except GenesisError as exc:
        state.resolving -= 1
        state.failed += 1
        logger.error(
            "orders.resolve_failed client_order_id=%s error=%s: the order stays UNKNOWN",
            unknown.client_order_id,
            exc,
        )
        return
    state.resolving -= 1
    state.resolved += 1
    if found is None:
        logger.warning(
            "orders.never_placed client_order_id=%s: the exchange has no such order",
            unknown.client_order_id,
        )
        order = Order.from_request(
            request,
            client_order_id=unknown.client_order_id,
            status=OrderStatus.REJECTED,
            created_ms=gateway.server_time_ms(),
        )
        reason = "never reached the exchange (-2013 after recvWindow)"
        await publish(OrderUpdate(order=order, source=OrderUpdateSource.REST, reason=reason))
        return
    logger.info(
        "orders.resolved client_order_id=%s order_id=%s status=%s",
        found.client_order_id,
        found.exchange_order_id,
        found.status_name,
    )
    await publish(OrderUpdate(order=found, source=OrderUpdateSource.REST))
