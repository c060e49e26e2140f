"""The order task: where order commands enter Genesis and order updates leave it.

```
run_order_task                        (one nursery)
├── command loop                      PlaceOrder / CancelOrder / QueryOrder, one at a time
│   └── OrderService                  checks → journal intent → one send → journal + bus
└── resolver per unknown outcome      OrderService.resolve: wait out recvWindow, then query
```

Every outcome becomes an :class:`~genesis.models.events.OrderUpdate` on the bus, published
with backpressure (order events are never dropped), after the journal has it. A placement whose
outcome is unknown is never resent (see :mod:`genesis.orders.service`). A failed command never
ends the task: its error is logged, journaled and published where an order is concerned.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NoReturn, TypeAlias

import attrs
import trio

from genesis.errors import GenesisError, OrderOutcomeUnknownError

if TYPE_CHECKING:
    from decimal import Decimal

    from genesis.models.orders import OrderRequest
    from genesis.orders.service import OrderService

__all__ = [
    "CancelOrder",
    "OrderCommand",
    "OrderTaskState",
    "OrderTaskStatistics",
    "PlaceOrder",
    "QueryOrder",
    "run_order_task",
]

logger = logging.getLogger(__name__)


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


async def run_order_task(
    commands: trio.MemoryReceiveChannel[OrderCommand],
    service: OrderService,
    *,
    task_status: trio.TaskStatus[OrderTaskState] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Execute order commands through ``service`` until cancelled.

    Commands run one at a time in arrival order (the gateway's limiter orders concurrent
    callers; one task keeps each caller's commands in sequence); each unknown outcome is
    resolved in a child task, so later commands do not wait for it.

    Args:
        commands: the receive side of the order channel; the task closes it when it ends.
        service: journal, checks and gateway (:class:`~genesis.orders.service.OrderService`).
        task_status: receives the :class:`OrderTaskState` once the task reads its channel.
    """
    state = OrderTaskState()
    async with commands, trio.open_nursery() as nursery:
        task_status.started(state)
        logger.info("orders.task.start")
        async for command in commands:
            state.received += 1
            await _execute(command, service, state, nursery)
        state.channel_closed = True
        logger.info("orders.task.idle reason=channel_closed received=%d", state.received)
        await trio.sleep_forever()
    raise AssertionError("unreachable")  # pragma: no cover


async def _execute(
    command: OrderCommand, service: OrderService, state: OrderTaskState, nursery: trio.Nursery
) -> None:
    try:
        if isinstance(command, PlaceOrder):
            try:
                await service.place(command.request, expected_price=command.expected_price)
            except OrderOutcomeUnknownError as exc:
                state.unknown += 1
                state.resolving += 1
                nursery.start_soon(_resolve, service, state, command.request, exc)
                return
            state.placed += 1
        elif isinstance(command, CancelOrder):
            await service.cancel(
                command.symbol, client_order_id=command.client_order_id, order_id=command.order_id
            )
        else:
            await service.query(
                command.symbol, client_order_id=command.client_order_id, order_id=command.order_id
            )
    except GenesisError as exc:
        if isinstance(command, PlaceOrder):
            state.rejected += 1  # journaled and published by the service
            request = command.request
            logger.warning(
                "orders.rejected symbol=%s side=%s client_order_id=%s error=%s: %s",
                request.symbol,
                request.side.value,
                request.client_order_id,
                type(exc).__name__,
                exc,
            )
        else:
            state.failed += 1
            logger.warning(
                "orders.command_failed command=%s symbol=%s client_order_id=%s order_id=%s "
                "error=%s: %s",
                type(command).__name__,
                command.symbol,
                command.client_order_id,
                command.order_id,
                type(exc).__name__,
                exc,
            )


async def _resolve(
    service: OrderService,
    state: OrderTaskState,
    request: OrderRequest,
    unknown: OrderOutcomeUnknownError,
) -> None:
    try:
        await service.resolve(request, unknown)
    except GenesisError as exc:
        state.failed += 1
        logger.error(
            "orders.resolve_failed client_order_id=%s error=%s: the order stays UNKNOWN until "
            "reconciliation settles it",
            unknown.client_order_id,
            exc,
        )
    else:
        state.resolved += 1
    finally:
        state.resolving -= 1
