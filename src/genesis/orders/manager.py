"""The order task: where order commands enter Genesis.

For now it is deliberately honest and small. The REST gateway (signing, limiter, breaker,
journal, unknown-outcome resolution; ARCHITECTURE.md §2) is a later issue, so this task only
validates what arrives on its channel and logs it as **not sent**. It never publishes an
order update, never invents an exchange order id and never reports a fill.
"""

from __future__ import annotations

import logging
import re
from decimal import Decimal
from typing import Final, NoReturn

import attrs
import trio

from genesis.models.orders import OrderSide, OrderType, TimeInForce

__all__ = ["OrderCommand", "OrderTaskState", "OrderTaskStatistics", "run_order_task"]

logger = logging.getLogger(__name__)

_CLIENT_ORDER_ID_RE: Final = re.compile(r"[.A-Z:/a-z0-9_-]{1,36}")
"""Binance's documented pattern for ``newClientOrderId``: ``^[\\.A-Z\\:/a-z0-9_-]{1,36}$``."""


def _positive(_inst: object, attribute: attrs.Attribute[Decimal], value: Decimal) -> None:
    if not isinstance(value, Decimal) or not value.is_finite() or value <= 0:
        raise ValueError(f"{attribute.name} must be a finite positive Decimal, got {value!r}")


def _symbol(_inst: object, _attribute: attrs.Attribute[str], value: str) -> None:
    if not value or not value.isalnum() or value != value.upper():
        raise ValueError(f"symbol must be an upper-case alphanumeric symbol: {value!r}")


def _client_order_id(_inst: object, _attribute: attrs.Attribute[str], value: str) -> None:
    if not _CLIENT_ORDER_ID_RE.fullmatch(value):
        raise ValueError(f"client_order_id must match Binance's pattern, got {value[:40]!r}")


@attrs.frozen(kw_only=True)
class OrderCommand:
    """A request to place one order: what the caller wants, not what the exchange did.

    Build one with :meth:`limit` or :meth:`market`. A LIMIT command has a price and a time in
    force; a MARKET command has neither.
    """

    client_order_id: str = attrs.field(validator=_client_order_id)
    symbol: str = attrs.field(validator=_symbol)
    side: OrderSide
    type: OrderType
    quantity: Decimal = attrs.field(validator=_positive)
    price: Decimal | None = None
    time_in_force: TimeInForce | None = None

    def __attrs_post_init__(self) -> None:
        if self.type is OrderType.LIMIT:
            if self.price is None or self.time_in_force is None:
                raise ValueError("a LIMIT command needs a price and a time in force")
            _positive(self, attrs.fields(OrderCommand).quantity, self.price)
        elif self.type is OrderType.MARKET:
            if self.price is not None or self.time_in_force is not None:
                raise ValueError("a MARKET command takes neither price nor time in force")
        else:
            raise ValueError(f"order type {self.type.value} is not supported by commands yet")

    @classmethod
    def limit(
        cls,
        *,
        client_order_id: str,
        symbol: str,
        side: OrderSide,
        quantity: Decimal,
        price: Decimal,
        time_in_force: TimeInForce = TimeInForce.GTC,
    ) -> OrderCommand:
        """A LIMIT order command."""
        return cls(
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            type=OrderType.LIMIT,
            quantity=quantity,
            price=price,
            time_in_force=time_in_force,
        )

    @classmethod
    def market(
        cls, *, client_order_id: str, symbol: str, side: OrderSide, quantity: Decimal
    ) -> OrderCommand:
        """A MARKET order command for ``quantity`` of the base asset."""
        return cls(
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            type=OrderType.MARKET,
            quantity=quantity,
        )


@attrs.frozen(kw_only=True)
class OrderTaskStatistics:
    """Counters of the order task: commands received, and how many were not sent (all of them)."""

    received: int
    not_sent: int
    channel_closed: bool


@attrs.define
class OrderTaskState:
    """What the order task has seen; read it through :meth:`statistics`."""

    received: int = 0
    not_sent: int = 0
    channel_closed: bool = False

    def statistics(self) -> OrderTaskStatistics:
        return OrderTaskStatistics(
            received=self.received, not_sent=self.not_sent, channel_closed=self.channel_closed
        )


async def run_order_task(
    commands: trio.MemoryReceiveChannel[OrderCommand],
    *,
    task_status: trio.TaskStatus[OrderTaskState] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Read order commands and log each one as not sent (no gateway exists yet).

    Args:
        commands: the receive side of the order channel; the task closes it when it ends.
            Callers keep (clones of) the send side.
        task_status: receives the :class:`OrderTaskState` once the task reads its channel.

    Runs until cancelled. When every sender has closed its side the task keeps running idle, so
    a caller finishing early never brings the tree down.
    """
    state = OrderTaskState()
    async with commands:
        task_status.started(state)
        logger.info("orders.task.start gateway=none")
        async for command in commands:
            state.received += 1
            state.not_sent += 1
            logger.warning(
                "orders.command.not_sent client_order_id=%s symbol=%s side=%s type=%s "
                "quantity=%s price=%s reason=%s",
                command.client_order_id,
                command.symbol,
                command.side.value,
                command.type.value,
                command.quantity,
                command.price,
                "no order gateway yet",
            )
    state.channel_closed = True
    logger.info("orders.task.idle reason=channel_closed received=%d", state.received)
    await trio.sleep_forever()
