"""The root of the nursery tree: ``genesis run`` (ARCHITECTURE.md §1).

```
run_genesis
└── root nursery
    ├── signal watcher            SIGINT/SIGTERM → orderly stop
    ├── [simulator mode] embedded simulator (genesis.sim.server.run_simulator)
    └── client scope              (cancelled by --duration or a signal; stops first)
        └── tree nursery
            ├── [--record]  recorder         app/record.py
            ├── [display]   dashboard        app/dashboard.py (view model: app/view.py)
            ├── market data                  exchange/ws_manager.py (3 connections + merger)
            ├── [GENESIS_ORDER_BOOK] books   exchange/order_book.py (its own diff-depth
            │                                connection, under the "streams" breaker and the
            │                                attempt budget; snapshots through the gateway)
            ├── order task                   orders/manager.py → orders/service.py (journal,
            │                                checks, one send) → exchange/gateway.py (REST)
            ├── reconciler                   orders/reconcile.py (at start and after each gap;
            │                                restarted after a crash: app/supervisor.py)
            ├── alerts                       app/alerts.py (conditions → Alert; log, count, page)
            ├── market state                 app/market_state.py (MarketState per symbol)
            ├── [metrics]   exporter         app/metrics.py (127.0.0.1:9108/metrics)
            ├── user data stream             exchange/user_stream.py (WS API; reports → journal
            │                                → bus; a gap → reconciliation; restarted after a
            │                                crash, then reconciled)
            ├── [GENESIS_NATS_URL] bridge    bridge/ (bus → JetStream; order events via the
            │                                journal's outbox)
            └── heartbeat                    exchange/health_monitor.py (health, time sync)
```

The REST gateway (one kept-alive httpx client, the rate limiter, the "rest" circuit breaker)
is opened around the tree nursery, so it outlives every task that uses it. One breaker per
exchange surface: "rest" wraps every gateway call, "streams" every market-data connect (the
order books' too), and "ws_api" is kept for the user data stream; each publishes its
transitions on the bus.

At start, before any market data, the configured symbols are checked against the exchangeInfo
the gateway read over REST: every symbol that is not listed, or not ``TRADING``, is named in one
:class:`~genesis.errors.ConfigError` (the CLI exits 2). One connection-attempt budget (Binance:
300 per 5 minutes per IP) is shared by the market-data roles, the order books and the user
data stream.

The order side (the reconciler, the user data stream) runs under :func:`supervise_order_side`
(app/supervisor.py): once started, a crash of either is an ERROR line (with its traceback) and a
``USER_STREAM_DOWN`` or ``RECONCILER_DOWN`` alert saying when it restarts; the rest of the tree,
market data first, keeps running, and the crashed service is started again after a backoff of
1, 2, 4 … 60 s (up for 60 s resets it; a restart that fails before it is up backs off further,
only a failure of the very first start is the tree's). The handles in :class:`GenesisHandle`
stay valid across restarts: each restart continues the previous handle, so its counters go on
from where they were. A restarted user stream treats its first subscription as following a gap,
so the reconciler catches up on every report it missed while down; the reconciler's trigger
channel outlives a reconciler restart, and a restarted reconciler reconciles at once. Crashes,
restarts and the last error are in ``GenesisHandle.order_side``, on the dashboard's header and
in the ``genesis_order_side_*`` metrics.

A run that ends (duration, signal) without one market-data event having reached the bus raises
:class:`~genesis.errors.NoMarketDataError` with the last connection error, so it exits non-zero.

Every task lives in a nursery visible here. A child that fails cancels its siblings and its
error reaches :func:`run_genesis` (a lone error bare, not wrapped in exception groups), which the
CLI turns into a message and exit code 1. A stop (``--duration``, Ctrl-C, SIGTERM) cancels the
client scope first, so the client's shielded cleanup (closing WebSockets, flushing the
recording) still has a live simulator to talk to, and only then the simulator. Every shielded
cleanup is bounded by ``move_on_after``, so the whole stop takes well under a second.
"""

from __future__ import annotations

import logging
import os
import signal
from functools import partial
from typing import TYPE_CHECKING, Final, NoReturn, TextIO

import attrs
import trio

from genesis.app.alerts import AlertConfig, run_alerts
from genesis.app.dashboard import run_dashboard
from genesis.app.logging import json_line
from genesis.app.market_state import run_market_state
from genesis.app.metrics import MetricsSources, run_metrics
from genesis.app.record import RECORD_EXISTS_HINT, run_recorder
from genesis.app.supervisor import Supervision, lone_error, supervise_order_side
from genesis.app.view import Sources
from genesis.bus import EventBus
from genesis.config import Mode, Secret
from genesis.errors import ConfigError, NoMarketDataError
from genesis.exchange.gateway import open_gateway
from genesis.exchange.health_monitor import HEARTBEAT_INTERVAL_S, run_heartbeat
from genesis.exchange.order_book import run_order_books
from genesis.exchange.signing import HmacSigner, load_signer
from genesis.exchange.user_stream import UserStreamConfig, run_user_stream
from genesis.exchange.ws_manager import limited_connector, run_market_data
from genesis.models.events import AccountBalances, AlertKind, OrderUpdate
from genesis.orders.journal import open_journal
from genesis.orders.manager import OrderCommand, run_order_task
from genesis.orders.reconcile import reconcile_trigger, run_reconciler
from genesis.orders.service import OrderService
from genesis.resilience.circuit_breaker import CircuitBreaker
from genesis.resilience.connect_limiter import ConnectAttemptLimiter
from genesis.sim.server import SimConfig, run_simulator

if TYPE_CHECKING:
    import ssl
    from collections.abc import Mapping

    from genesis.app.alerts import AlertHandle
    from genesis.app.dashboard import LiveDisplay
    from genesis.app.market_state import MarketStateHandle
    from genesis.app.metrics import MetricsHandle
    from genesis.app.record import Recorder, RecordMode
    from genesis.bridge import Bridge
    from genesis.config import Settings
    from genesis.exchange.gateway import Gateway
    from genesis.exchange.order_book import OrderBooksHandle
    from genesis.exchange.signing import Signer
    from genesis.exchange.user_stream import UserStreamEvent, UserStreamHandle
    from genesis.exchange.ws_manager import MarketDataHandle
    from genesis.models.exchange_info import ExchangeInfo
    from genesis.orders.journal import Journal
    from genesis.orders.manager import OrderTaskState
    from genesis.orders.reconcile import ReconcilerHandle
    from genesis.sim.server import SimHandle

__all__ = [
    "ORDER_CHANNEL_SIZE",
    "GenesisHandle",
    "run_genesis",
    "run_simulator_until_stopped",
    "supervise_order_side",
    "symbol_problems",
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
        alerts: the alert task's handle (statistics, latest alerts).
        market_state: the MarketState task's handle (latest state per symbol).
        metrics: the metrics exporter's handle (``port`` is ``None`` when it could not bind),
            ``None`` without ``metrics_port``.
        bridge: the JetStream bridge when ``settings.nats_url`` is set, else ``None``.
        order_books: the local order books (``GENESIS_ORDER_BOOK``), else ``None``.
        order_side: the supervision record of each order-side service by name
            (``reconciler``, ``user_stream`` with credentials): crashes, restarts, last error.
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
    alerts: AlertHandle | None = None
    market_state: MarketStateHandle | None = None
    metrics: MetricsHandle | None = None
    bridge: Bridge | None = None
    order_books: OrderBooksHandle | None = None
    order_side: Mapping[str, Supervision] = attrs.field(factory=dict)


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


def symbol_problems(info: ExchangeInfo, symbols: tuple[str, ...]) -> list[str]:
    """Every configured symbol the exchange does not list, or does not trade now."""
    problems: list[str] = []
    for name in symbols:
        symbol = info.symbol(name)
        if symbol is None:
            problems.append(f"GENESIS_SYMBOLS: {name} is not listed by the exchange")
        elif symbol.status != "TRADING":
            problems.append(f"GENESIS_SYMBOLS: {name} is not trading (status {symbol.status})")
    return problems


def _sim_config(
    symbols: tuple[str, ...], seed: int, ssl_context: ssl.SSLContext | None = None
) -> SimConfig:
    try:
        return SimConfig(symbols=symbols, seed=seed, ssl_context=ssl_context)
    except ValueError as exc:
        raise ConfigError([f"GENESIS_SYMBOLS: the simulator cannot trade them: {exc}"]) from exc


async def run_genesis(
    settings: Settings,
    *,
    duration_s: float | None = None,
    record_path: str | os.PathLike[str] | None = None,
    record_mode: RecordMode = "new",
    display: TextIO | None = None,
    display_tty: bool | None = None,
    capture_logs: bool = False,
    sim_seed: int = 1,
    sim_ssl_context: ssl.SSLContext | None = None,
    handle_signals: bool = True,
    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
    metrics_port: int | None = None,
    alert_command: tuple[str, ...] | None = None,
    task_status: trio.TaskStatus[GenesisHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the whole Genesis tree until ``duration_s`` passes, a stop signal, or a failure.

    Args:
        settings: from :func:`genesis.config.load_settings`; in simulator mode the embedded
            simulator is started first, on 127.0.0.1 with free ports.
        duration_s: stop cleanly after this many seconds (counted from the call).
        record_path: write every bus event to this JSON-lines file.
        record_mode: ``new`` (refuse an existing file), ``append`` or ``overwrite``.
        display: show live prices on this stream (e.g. ``sys.stdout``); ``None`` for none.
        display_tty: draw in place; ``None`` asks ``display.isatty()``.
        capture_logs: print console log lines above the in-place table.
        sim_seed: the embedded simulator's seed.
        sim_ssl_context: the embedded simulator serves its streams and WS API over TLS with
            this server context (``wss://``; the client must trust its certificate, e.g.
            through ``SSL_CERT_FILE``).
        handle_signals: turn SIGINT/SIGTERM into an orderly stop (main thread only).
        heartbeat_interval_s: how often connection health is logged.
        metrics_port: serve Prometheus metrics on 127.0.0.1 at this port (0: any free one);
            ``None`` for no exporter. A port in use is a WARNING, not a failure.
        alert_command: argv run for every alert with the alert as JSON on stdin.
        task_status: receives a :class:`GenesisHandle` once market data flows.

    Returns:
        After an orderly stop (duration elapsed or a signal).

    Raises:
        ConfigError: settings the tree cannot run with (symbols the exchange does not list or
            trade, symbols the simulator rejects, an existing recording without a mode).
        NoMarketDataError: the run ended without one market-data event on the bus.
        Exception: the error of the task that failed, bare when it is the only one.
    """
    if record_path is not None and record_mode == "new" and await trio.Path(record_path).exists():
        # Checked again, race-free, when the recorder opens the file ("x" mode); this only
        # spares starting the simulator and the gateway for nothing.
        raise ConfigError([f"--record {os.fspath(record_path)} {RECORD_EXISTS_HINT}"])
    logger.info(
        "genesis.start mode=%s symbols=%s duration_s=%s",
        settings.mode.value,
        ",".join(settings.symbols),
        duration_s,
    )
    client_scope = trio.CancelScope()
    observed: list[MarketDataHandle] = []
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
                            run_simulator,
                            _sim_config(settings.symbols, sim_seed, sim_ssl_context),
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
                        record_mode=record_mode,
                        observed=observed,
                        display=display,
                        display_tty=display_tty,
                        capture_logs=capture_logs,
                        heartbeat_interval_s=heartbeat_interval_s,
                        metrics_port=metrics_port,
                        alert_command=alert_command,
                        task_status=task_status,
                    )
            finally:
                # The client side is down (stopped or failed): now the simulator and watcher.
                root.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        lone = lone_error(group)
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
    _check_delivered(observed)


def _check_delivered(observed: list[MarketDataHandle]) -> None:
    """A run that never delivered one market-data event is a failure, with the reason."""
    if not observed:
        return  # stopped before market data was even created (a config error came first)
    handle = observed[0]
    if handle.statistics().merger.published > 0:
        return
    reason = handle.last_cause() or "no connection delivered a frame"
    logger.error("genesis.no_market_data reason=%s", reason)
    raise NoMarketDataError(reason)


async def _run_tree(
    settings: Settings,
    *,
    stream_url: str,
    simulator: SimHandle | None,
    record_path: str | os.PathLike[str] | None,
    record_mode: RecordMode,
    observed: list[MarketDataHandle],
    display: TextIO | None,
    display_tty: bool | None,
    capture_logs: bool,
    heartbeat_interval_s: float,
    metrics_port: int | None,
    alert_command: tuple[str, ...] | None,
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
    attempts = ConnectAttemptLimiter()
    order_side = {"reconciler": Supervision("reconciler")}
    if ws_key is not None and ws_signer is not None and ws_api_url:
        order_side["user_stream"] = Supervision("user_stream")
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
                # A long-lived run checks its symbols against a fresh read (a symbol halted in
                # the last hour must not pass); the read refreshes the journal's copy too.
                exchange_info_max_age_ms=0,
            ) as gateway,
            order_send,
            trio.open_nursery() as tree,
        ):
            _validate_symbols(gateway, settings.symbols)
            # Observers subscribe before market data starts, so they see every event.
            recorder = None
            if record_path is not None:
                recorder = await tree.start(
                    partial(run_recorder, bus, record_path, mode=record_mode)
                )
            live = None
            if display is not None:
                live = await tree.start(
                    partial(
                        run_dashboard,
                        bus,
                        settings.symbols,
                        display,
                        tty=display_tty,
                        capture_logs=capture_logs,
                        mode=settings.mode.value.upper(),
                        sources=Sources(gateway=gateway, breakers=breakers, order_side=order_side),
                        account=gateway if signer is not None or ws_signer is not None else None,
                    )
                )
            alerts = await tree.start(
                partial(
                    run_alerts,
                    bus,
                    config=AlertConfig(command=alert_command),
                    gateway_statistics=gateway.statistics,
                )
            )
            market_state = await tree.start(
                partial(
                    run_market_state,
                    bus,
                    settings.symbols,
                    symbol_status=partial(_symbol_status, gateway),
                    refresh=partial(gateway.exchange_info, settings.symbols),
                )
            )
            bridge = None
            if settings.nats_url is not None:
                # Imported here: nats-py and asyncio load only when the bridge runs (they add
                # to every start and exit of a tree without one).
                from genesis.bridge import BridgeConfig, run_bridge

                bridge = await tree.start(
                    run_bridge,
                    BridgeConfig(url=settings.nats_url, name=f"genesis-{journal.prefix}"),
                    bus,
                    journal,
                )
            market_data = await tree.start(
                partial(
                    run_market_data,
                    stream_url,
                    settings.symbols,
                    bus,
                    breaker=breakers["streams"],
                    backfill=gateway,  # holes no connection filled come from REST
                    attempt_limiter=attempts,
                    observe=observed.append,
                )
            )
            if live is not None:
                live.sources.market_data = market_data
            order_books = None
            if settings.order_book:
                order_books = await tree.start(
                    partial(
                        run_order_books,
                        stream_url,
                        settings.order_book,
                        bus,
                        gateway.depth,
                        breaker=breakers["streams"],
                        attempt_limiter=attempts,
                    )
                )
            service = OrderService(gateway, journal, bus.publish)
            order_task = await tree.start(run_order_task, order_recv, service)
            # Reconcile at start (the journal against the exchange), then after every gap in the
            # user data stream; it never holds up the tree, and retries with backoff.
            on_gap, gaps = reconcile_trigger()
            # A crash of either restarts it with backoff (app/supervisor.py): the handles below
            # stay valid, the trigger channel outlives a reconciler restart (a gap signalled
            # meanwhile waits in it), and a restarted user stream reconciles its downtime.
            reconciler = await tree.start(
                partial(
                    supervise_order_side,
                    bus,
                    "reconciler",
                    partial(run_reconciler, service, symbols=settings.symbols, trigger=gaps),
                    alert=AlertKind.RECONCILER_DOWN,
                    supervision=order_side["reconciler"],
                )
            )
            user_stream = (
                await tree.start(
                    partial(
                        supervise_order_side,
                        bus,
                        "user_stream",
                        partial(
                            run_user_stream,
                            ws_api_url,
                            api_key=ws_key,
                            signer=ws_signer,
                            publish=partial(_route_user_event, service, bus),
                            on_gap=on_gap,
                            breaker=breakers["ws_api"],
                            connector=limited_connector(attempts),
                            server_time_ms=gateway.server_time_ms,
                            config=UserStreamConfig(recv_window_ms=settings.recv_window_ms),
                        ),
                        alert=AlertKind.USER_STREAM_DOWN,
                        supervision=order_side["user_stream"],
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
                    prober=market_data,
                    publish=bus.publish,
                    order_side=tuple(order_side.values()),
                )
            )
            metrics = None
            if metrics_port is not None:
                metrics = await tree.start(
                    partial(
                        run_metrics,
                        MetricsSources(
                            bus=bus,
                            market_data=market_data.statistics,
                            gateway=gateway.statistics,
                            breakers={n: b.statistics for n, b in breakers.items()},
                            alerts=alerts.statistics,
                            market_states=lambda: market_state.latest,
                            order_side={n: r.statistics for n, r in order_side.items()},
                        ),
                        port=metrics_port,
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
                    alerts=alerts,
                    market_state=market_state,
                    metrics=metrics,
                    bridge=bridge,
                    order_books=order_books,
                    order_side=order_side,
                )
            )
    finally:
        bus.close()


def _symbol_status(gateway: Gateway, symbol: str) -> str | None:
    info = gateway.cached_exchange_info
    found = info.symbol(symbol) if info is not None else None
    return found.status if found is not None else None


def _validate_symbols(gateway: Gateway, symbols: tuple[str, ...]) -> None:
    info = gateway.cached_exchange_info
    if info is None:
        # The gateway logged why (a WARNING); without exchangeInfo the REST URL is wrong or the
        # exchange is down. Market data can still run; orders fall back to safe limits.
        logger.error(
            "genesis.exchange_info_unavailable symbols=%s: not checked against the exchange; "
            "check the REST URL",
            ",".join(symbols),
        )
        return
    problems = symbol_problems(info, symbols)
    if problems:
        raise ConfigError(problems)
    logger.info("genesis.symbols_checked symbols=%s", ",".join(symbols))


async def _route_user_event(service: OrderService, bus: EventBus, event: UserStreamEvent) -> None:
    """Order reports go through the journal first (then the bus), balances through the outbox
    (where the bridge runs), the rest straight to the bus."""
    if isinstance(event, OrderUpdate):
        await service.recorder.record(event.order, event.source, event.reason)
    elif isinstance(event, AccountBalances):
        await service.recorder.record_balances(event, bus.publish)
    else:
        await bus.publish(event)


async def run_simulator_until_stopped(
    config: SimConfig,
    duration_s: float | None,
    out: TextIO,
    *,
    handle_signals: bool = True,
    json: bool = False,
    task_status: trio.TaskStatus[SimHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``genesis sim``: serve the simulator, print its URLs to ``out``, stop on a signal.

    Args:
        config: the simulator's configuration.
        duration_s: stop after this many seconds; ``None`` to run until a signal.
        out: where the base URLs are printed (one ``name: url`` line each).
        handle_signals: turn SIGINT/SIGTERM into an orderly stop (main thread only).
        json: print the URLs as one ``sim.urls`` JSON line (``--log-json``).
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
                urls = {
                    "rest": handle.rest_url,
                    "streams": handle.stream_url,
                    "ws-api": handle.ws_api_url,
                }
                if json:
                    out.write(json_line("sim.urls", urls, logger=__name__) + "\n")
                else:
                    out.write("".join(f"{name}: {url}\n" for name, url in urls.items()))
                out.flush()
                task_status.started(handle)
                await trio.sleep_forever()
        finally:
            root.cancel_scope.cancel()
    logger.info("sim.stop")
