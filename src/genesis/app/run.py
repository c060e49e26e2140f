"""The root of the nursery tree: ``genesis run`` (ARCHITECTURE.md §1).

```
run_genesis
└── root nursery
    ├── signal watcher            SIGINT/SIGTERM → orderly stop
    ├── [simulator mode] embedded simulator (genesis.sim.server.run_simulator)
    └── client scope              (cancelled by --duration or a signal; stops first)
        └── tree nursery
            ├── [--record]  recorder         app/record.py
            ├── [display]   live prices      app/dashboard.py
            ├── market data                  exchange/ws_manager.py (3 connections + merger)
            ├── [GENESIS_ORDER_BOOK] books   exchange/order_book.py (its own diff-depth
            │                                connection; snapshots through the gateway)
            ├── order task                   orders/manager.py → orders/service.py (journal,
            │                                checks, one send) → exchange/gateway.py (REST)
            ├── reconciler                   orders/reconcile.py (at start and after each gap)
            ├── user data stream             exchange/user_stream.py (WS API; reports → journal
            │                                → bus; a gap → reconciliation)
            └── heartbeat                    exchange/health_monitor.py (health, time sync)
```

The REST gateway (one kept-alive httpx client, the rate limiter, the "rest" circuit breaker)
is opened around the tree nursery, so it outlives every task that uses it. One breaker per
exchange surface: "rest" wraps every gateway call, "streams" every market-data connect, and
"ws_api" is kept for the user data stream; each publishes its transitions on the bus.

Every task lives in a nursery visible here. A child that fails cancels its siblings and its
error reaches :func:`run_genesis` (a lone error bare, not wrapped in exception groups), which the
CLI turns into a message and exit code 1. A stop (``--duration``, Ctrl-C, SIGTERM) cancels the
client scope first, so the client's shielded cleanup (closing WebSockets, flushing the
recording) still has a live simulator to talk to, and only then the simulator. Every shielded
cleanup is bounded by ``move_on_after``, so the whole stop takes well under a second.
"""

from __future__ import annotations

import logging
import signal
from functools import partial
from typing import TYPE_CHECKING, Final, NoReturn, TextIO

import attrs
import trio

from genesis.app.dashboard import run_dashboard
from genesis.app.record import run_recorder
from genesis.bus import EventBus
from genesis.config import Mode, Secret
from genesis.errors import ConfigError
from genesis.exchange.gateway import open_gateway
from genesis.exchange.health_monitor import HEARTBEAT_INTERVAL_S, run_heartbeat
from genesis.exchange.order_book import run_order_books
from genesis.exchange.signing import HmacSigner, load_signer
from genesis.exchange.user_stream import UserStreamConfig, run_user_stream
from genesis.exchange.ws_manager import run_market_data
from genesis.models.events import OrderUpdate
from genesis.orders.journal import open_journal
from genesis.orders.manager import OrderCommand, run_order_task
from genesis.orders.reconcile import reconcile_trigger, run_reconciler
from genesis.orders.service import OrderService
from genesis.resilience.circuit_breaker import CircuitBreaker
from genesis.sim.server import SimConfig, run_simulator

if TYPE_CHECKING:
    import os

    from genesis.app.dashboard import LiveDisplay
    from genesis.app.record import Recorder
    from genesis.config import Settings
    from genesis.exchange.gateway import Gateway
    from genesis.exchange.order_book import OrderBooksHandle
    from genesis.exchange.signing import Signer
    from genesis.exchange.user_stream import UserStreamEvent, UserStreamHandle
    from genesis.exchange.ws_manager import MarketDataHandle
    from genesis.orders.journal import Journal
    from genesis.orders.manager import OrderTaskState
    from genesis.orders.reconcile import ReconcilerHandle
    from genesis.sim.server import SimHandle

__all__ = [
    "ORDER_CHANNEL_SIZE",
    "GenesisHandle",
    "run_genesis",
    "run_simulator_until_stopped",
    "watch_signals",
]

logger = logging.getLogger(__name__)

ORDER_CHANNEL_SIZE: Final = 64
STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


@attrs.frozen(kw_only=True)
class GenesisHandle:
    """What a running tree offers its caller (``await nursery.start(run_genesis, ...)``).

    Attributes:
        bus: the event bus; subscribe to observe the market.
        market_data: the market-data handle (statistics, per-connection health).
        orders: send :class:`~genesis.orders.manager.OrderCommand` s here (clone it to share);
            the order task owns the receive side; outcomes arrive on the bus as ``OrderUpdate``.
        order_task: the order task's state (commands received, placed, rejected, unknown).
        gateway: the REST gateway (statistics: limiter, breaker, time sync).
        journal: the order journal (``GENESIS_DB``).
        reconciler: the reconciliation task's handle (cycles, last report).
        user_stream: the user data stream's handle (``None`` without credentials to sign).
        breakers: the circuit breakers by surface: ``rest``, ``streams``, ``ws_api``.
        stream_url: the market-stream base the connections use.
        simulator: the embedded simulator's handle in simulator mode, else ``None``.
        recorder: the recording's state with ``record_path``, else ``None``.
        display: the live display when one is shown, else ``None``.
        order_books: the local order books (``GENESIS_ORDER_BOOK``), else ``None``.
    """

    bus: EventBus
    market_data: MarketDataHandle
    orders: trio.MemorySendChannel[OrderCommand]
    order_task: OrderTaskState
    gateway: Gateway
    journal: Journal
    reconciler: ReconcilerHandle
    user_stream: UserStreamHandle | None
    breakers: dict[str, CircuitBreaker]
    stream_url: str
    simulator: SimHandle | None
    recorder: Recorder | None
    display: LiveDisplay | None
    order_books: OrderBooksHandle | None = None


async def watch_signals(
    stop_scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Cancel ``stop_scope`` on SIGINT or SIGTERM, until cancelled itself.

    Must run in the main thread (``trio.open_signal_receiver``). While it runs, Ctrl-C does not
    raise ``KeyboardInterrupt``; it becomes an orderly stop.
    """
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        task_status.started()
        async for signum in signals:
            logger.info("genesis.signal name=%s", signal.Signals(signum).name)
            stop_scope.cancel()
    raise AssertionError("signal receivers never end")  # pragma: no cover


def _lone_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(exc.exceptions)
        else:
            leaves.append(exc)
    return leaves[0] if len(leaves) == 1 else None


def _sim_config(symbols: tuple[str, ...], seed: int) -> SimConfig:
    try:
        return SimConfig(symbols=symbols, seed=seed)
    except ValueError as exc:
        raise ConfigError([f"GENESIS_SYMBOLS: the simulator cannot trade them: {exc}"]) from exc


async def run_genesis(
    settings: Settings,
    *,
    duration_s: float | None = None,
    record_path: str | os.PathLike[str] | None = None,
    display: TextIO | None = None,
    display_tty: bool | None = None,
    capture_logs: bool = False,
    sim_seed: int = 1,
    handle_signals: bool = True,
    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
    task_status: trio.TaskStatus[GenesisHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the whole Genesis tree until ``duration_s`` passes, a stop signal, or a failure.

    Args:
        settings: from :func:`genesis.config.load_settings`; in simulator mode the embedded
            simulator is started first, on 127.0.0.1 with free ports.
        duration_s: stop cleanly after this many seconds (counted from the call).
        record_path: write every bus event to this JSON-lines file.
        display: show live prices on this stream (e.g. ``sys.stdout``); ``None`` for none.
        display_tty: draw in place; ``None`` asks ``display.isatty()``.
        capture_logs: print console log lines above the in-place table.
        sim_seed: the embedded simulator's seed.
        handle_signals: turn SIGINT/SIGTERM into an orderly stop (main thread only).
        heartbeat_interval_s: how often connection health is logged.
        task_status: receives a :class:`GenesisHandle` once market data flows.

    Returns:
        After an orderly stop (duration elapsed or a signal).

    Raises:
        ConfigError: settings the tree cannot run with (e.g. symbols the simulator rejects).
        Exception: the error of the task that failed, bare when it is the only one.
    """
    logger.info(
        "genesis.start mode=%s symbols=%s duration_s=%s",
        settings.mode.value,
        ",".join(settings.symbols),
        duration_s,
    )
    client_scope = trio.CancelScope()
    if duration_s is not None:
        client_scope.deadline = trio.current_time() + duration_s
    try:
        async with trio.open_nursery() as root:
            if handle_signals:
                await root.start(watch_signals, client_scope)
            try:
                with client_scope:
                    simulator: SimHandle | None = None
                    if settings.mode is Mode.SIMULATOR:
                        simulator = await root.start(
                            run_simulator, _sim_config(settings.symbols, sim_seed)
                        )
                        stream_url = simulator.stream_url
                        logger.info(
                            "genesis.simulator rest_url=%s stream_url=%s",
                            simulator.rest_url,
                            simulator.stream_url,
                        )
                    elif settings.stream_url is None:
                        raise ConfigError([f"{settings.mode.value} mode needs a stream URL"])
                    else:
                        stream_url = settings.stream_url
                    await _run_tree(
                        settings,
                        stream_url=stream_url,
                        simulator=simulator,
                        record_path=record_path,
                        display=display,
                        display_tty=display_tty,
                        capture_logs=capture_logs,
                        heartbeat_interval_s=heartbeat_interval_s,
                        task_status=task_status,
                    )
            finally:
                # The client side is down (stopped or failed): now the simulator and watcher.
                root.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        lone = _lone_error(group)
        if lone is None:
            raise
        raise lone from None
    if trio.current_time() >= client_scope.deadline:
        reason = "duration"
    elif client_scope.cancel_called:
        reason = "signal"
    else:
        reason = "ended"  # pragma: no cover  # the tree's services run until cancelled
    logger.info("genesis.stop reason=%s", reason)


async def _run_tree(
    settings: Settings,
    *,
    stream_url: str,
    simulator: SimHandle | None,
    record_path: str | os.PathLike[str] | None,
    display: TextIO | None,
    display_tty: bool | None,
    capture_logs: bool,
    heartbeat_interval_s: float,
    task_status: trio.TaskStatus[GenesisHandle],
) -> None:
    bus = EventBus()
    breakers = {
        name: CircuitBreaker(name, on_transition=bus.publish)
        for name in ("rest", "streams", "ws_api")
    }
    if simulator is not None:
        rest_url: str | None = simulator.rest_url
        api_key: Secret | None = Secret(simulator.api_key)
        signer: Signer | None = HmacSigner(Secret(simulator.api_secret))
        ws_api_url: str | None = simulator.ws_api_url
        ws_key, ws_signer = api_key, signer
    else:
        rest_url, api_key, signer = settings.rest_url, None, None
        ws_api_url = settings.ws_api_url
        ws_key, ws_signer = settings.api_key, load_signer(settings)
    order_send, order_recv = trio.open_memory_channel[OrderCommand](ORDER_CHANNEL_SIZE)
    try:
        async with (
            open_journal(settings.db_path) as journal,
            open_gateway(
                settings,
                rest_url=rest_url,
                api_key=api_key,
                signer=signer,
                breaker=breakers["rest"],
                exchange_info_cache=journal,
            ) as gateway,
            order_send,
            trio.open_nursery() as tree,
        ):
            # Observers subscribe before market data starts, so they see every event.
            recorder = None
            if record_path is not None:
                recorder = await tree.start(run_recorder, bus, record_path)
            live = None
            if display is not None:
                live = await tree.start(
                    _dashboard, bus, settings.symbols, display, display_tty, capture_logs
                )
            market_data = await tree.start(
                partial(
                    run_market_data,
                    stream_url,
                    settings.symbols,
                    bus,
                    breaker=breakers["streams"],
                )
            )
            order_books = None
            if settings.order_book:
                order_books = await tree.start(
                    partial(run_order_books, stream_url, settings.order_book, bus, gateway.depth)
                )
            service = OrderService(gateway, journal, bus.publish)
            order_task = await tree.start(run_order_task, order_recv, service)
            # Reconcile at start (the journal against the exchange), then after every gap in the
            # user data stream; it never holds up the tree, and retries with backoff.
            on_gap, gaps = reconcile_trigger()
            reconciler = await tree.start(
                partial(run_reconciler, service, symbols=settings.symbols, trigger=gaps)
            )
            user_stream = (
                await tree.start(
                    partial(
                        run_user_stream,
                        ws_api_url,
                        api_key=ws_key,
                        signer=ws_signer,
                        publish=partial(_route_user_event, service, bus),
                        on_gap=on_gap,
                        breaker=breakers["ws_api"],
                        server_time_ms=gateway.server_time_ms,
                        config=UserStreamConfig(recv_window_ms=settings.recv_window_ms),
                    )
                )
                if ws_key is not None and ws_signer is not None and ws_api_url
                else None
            )
            await tree.start(
                partial(
                    run_heartbeat,
                    market_data,
                    bus,
                    heartbeat_interval_s,
                    gateway=gateway,
                    user_stream=user_stream,
                )
            )
            logger.info("genesis.ready stream_url=%s rest_url=%s", stream_url, rest_url)
            task_status.started(
                GenesisHandle(
                    bus=bus,
                    market_data=market_data,
                    orders=order_send.clone(),
                    order_task=order_task,
                    gateway=gateway,
                    journal=journal,
                    reconciler=reconciler,
                    user_stream=user_stream,
                    breakers=breakers,
                    stream_url=stream_url,
                    simulator=simulator,
                    recorder=recorder,
                    display=live,
                    order_books=order_books,
                )
            )
    finally:
        bus.close()


async def _route_user_event(service: OrderService, bus: EventBus, event: UserStreamEvent) -> None:
    """Order reports go through the journal first (then the bus); the rest straight to the bus."""
    if isinstance(event, OrderUpdate):
        await service.recorder.record(event.order, event.source, event.reason)
    else:
        await bus.publish(event)


async def _dashboard(
    bus: EventBus,
    symbols: tuple[str, ...],
    out: TextIO,
    tty: bool | None,
    capture_logs: bool,
    *,
    task_status: trio.TaskStatus[LiveDisplay] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    await run_dashboard(
        bus, symbols, out, tty=tty, capture_logs=capture_logs, task_status=task_status
    )


async def run_simulator_until_stopped(
    config: SimConfig,
    duration_s: float | None,
    out: TextIO,
    *,
    handle_signals: bool = True,
    task_status: trio.TaskStatus[SimHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``genesis sim``: serve the simulator, print its URLs to ``out``, stop on a signal.

    Args:
        config: the simulator's configuration.
        duration_s: stop after this many seconds; ``None`` to run until a signal.
        out: where the base URLs are printed (one ``name: url`` line each).
        handle_signals: turn SIGINT/SIGTERM into an orderly stop (main thread only).
        task_status: receives the simulator's handle once it serves.
    """
    stop_scope = trio.CancelScope()
    if duration_s is not None:
        stop_scope.deadline = trio.current_time() + duration_s
    async with trio.open_nursery() as root:
        if handle_signals:
            await root.start(watch_signals, stop_scope)
        try:
            with stop_scope:
                handle: SimHandle = await root.start(run_simulator, config)
                out.write(
                    f"rest: {handle.rest_url}\n"
                    f"streams: {handle.stream_url}\n"
                    f"ws-api: {handle.ws_api_url}\n"
                )
                out.flush()
                task_status.started(handle)
                await trio.sleep_forever()
        finally:
            root.cancel_scope.cancel()
    logger.info("sim.stop")
