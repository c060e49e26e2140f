"""Test kit for the gateway: the simulator in memory (MockClock) or over loopback.

``memory_gateway`` wires :func:`genesis.exchange.gateway.open_gateway` to the simulator's ASGI
app through ``httpx.ASGITransport`` with a wall clock that follows Trio's (virtual) clock, so
deadlines, cooldowns and rate-limit windows happen at exact virtual times. ``loopback_gateway``
runs the whole simulator on 127.0.0.1 and talks to it over real sockets.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import attrs
import trio

from genesis.bus import EventBus
from genesis.config import Secret, Settings
from genesis.exchange.gateway import Gateway, GatewayConfig, open_gateway
from genesis.exchange.signing import HmacSigner
from genesis.models.events import OrderUpdate
from genesis.orders.journal import Journal, open_journal
from genesis.orders.manager import OrderCommand, OrderTaskState, run_order_task
from genesis.orders.service import OrderService
from genesis.sim.clock import DEFAULT_VIRTUAL_EPOCH_MS, SimClock
from genesis.sim.server import SimConfig, SimHandle, Simulator, build_simulator, run_simulator

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx

    from genesis.bus import Subscription

import httpx as _httpx

T0 = DEFAULT_VIRTUAL_EPOCH_MS + 3_000
"""Three seconds past a minute boundary: windows of 10 s and 1 min are easy to reason about."""


@attrs.frozen
class MemorySim:
    sim: Simulator
    gateway: Gateway
    client_clock: SimClock


def sim_credentials(sim: Simulator | SimHandle) -> tuple[Secret, HmacSigner]:
    return Secret(sim.api_key), HmacSigner(Secret(sim.api_secret))


@asynccontextmanager
async def memory_gateway(
    *,
    config: GatewayConfig | None = None,
    bus: EventBus | None = None,
    prepare: bool = True,
    seed_book: bool = True,
    epoch_ms: int = T0,
    sim: Simulator | None = None,
) -> AsyncIterator[MemorySim]:
    """The simulator in memory (no feed task: the book only moves when the test trades).

    ``sim`` shares one simulator with other in-memory clients (the user data stream)."""
    if sim is None:
        sim = build_simulator(SimConfig(epoch_ms=epoch_ms))
    if seed_book:
        sim.market_maker.step(sim.clock.now_ms())
    client_clock = SimClock.start(epoch_ms)
    transport = _httpx.ASGITransport(app=sim.http_app, client=("127.0.0.1", 40000))
    api_key, signer = sim_credentials(sim)
    async with open_gateway(
        Settings(),
        rest_url="http://sim.test",
        api_key=api_key,
        signer=signer,
        config=config,
        transport=transport,
        wall_clock_ms=client_clock.now_ms,
        bus=bus,
        prepare=prepare,
    ) as gateway:
        yield MemorySim(sim=sim, gateway=gateway, client_clock=client_clock)


@attrs.frozen
class OrderTaskHarness:
    """An order task over the in-memory simulator, its journal, and its published updates."""

    m: MemorySim
    journal: Journal
    send: trio.MemorySendChannel[OrderCommand]
    state: OrderTaskState
    updates: Subscription[OrderUpdate]


@asynccontextmanager
async def order_task_harness() -> AsyncIterator[OrderTaskHarness]:
    """``run_order_task`` as the tree runs it (service, in-memory journal, bus), in memory."""
    bus = EventBus()
    updates = bus.subscribe(OrderUpdate)
    async with (
        memory_gateway() as m,
        open_journal(":memory:") as journal,
        trio.open_nursery() as nursery,
    ):
        send, recv = trio.open_memory_channel[OrderCommand](8)
        state = await nursery.start(
            run_order_task, recv, OrderService(m.gateway, journal, bus.publish)
        )
        yield OrderTaskHarness(m=m, journal=journal, send=send, state=state, updates=updates)
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def loopback_gateway(
    *, config: GatewayConfig | None = None, bus: EventBus | None = None
) -> AsyncIterator[tuple[SimHandle, Gateway]]:
    """The whole simulator on 127.0.0.1 and a gateway talking to it over real sockets."""
    async with trio.open_nursery() as nursery:
        handle: SimHandle = await nursery.start(run_simulator, SimConfig())
        api_key, signer = sim_credentials(handle)
        async with open_gateway(
            Settings(),
            rest_url=handle.rest_url,
            api_key=api_key,
            signer=signer,
            config=config,
            bus=bus,
        ) as gateway:
            yield handle, gateway
        nursery.cancel_scope.cancel()


def raw_client(handle: SimHandle) -> httpx.AsyncClient:
    """A plain httpx client to the simulator (a second, unlimited client on the same IP)."""
    return _httpx.AsyncClient(base_url=handle.rest_url)
