"""The tree's start-up checks and exit reasons: symbols checked against exchangeInfo, a feed the
exchange keeps rejecting, a run that never delivered anything, an order side that crashes
(and is restarted: tests/test_order_side_restart.py).

Real loopback sockets against a standalone simulator (testnet mode), a few real seconds each.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from typing import TYPE_CHECKING, NoReturn

import pytest
import trio

from genesis.app.cli import EXIT_CONFIG, EXIT_FAILURE
from genesis.app.run import run_genesis, supervise_order_side
from genesis.bus import EventBus
from genesis.config import ENV_VARS, Mode, Secret, Settings
from genesis.errors import ConfigError, NoMarketDataError, StreamRejectedError
from genesis.exchange.ws_manager import run_market_data
from genesis.models.events import Alert, AlertKind
from genesis.models.market import Trade
from genesis.sim.server import SimConfig, SimHandle, run_simulator

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

from contextlib import asynccontextmanager


@asynccontextmanager
async def standalone_sim(symbols: tuple[str, ...] = ("BTCUSDT",)) -> AsyncIterator[SimHandle]:
    async with trio.open_nursery() as nursery:
        sim: SimHandle = await nursery.start(run_simulator, SimConfig(symbols=symbols))
        yield sim
        nursery.cancel_scope.cancel()


def settings_for(sim: SimHandle, **overrides: object) -> Settings:
    fields: dict[str, object] = {
        "mode": Mode.TESTNET,
        "api_key": Secret(sim.api_key),
        "secret_key": Secret(sim.api_secret),
        "rest_url": sim.rest_url,
        "stream_url": sim.stream_url,
        "symbols": ("BTCUSDT",),
    }
    fields.update(overrides)
    return Settings(**fields)  # type: ignore[arg-type]  # test overrides of known fields


async def test_unknown_symbols_are_listed_at_once_before_any_stream_opens() -> None:
    with trio.fail_after(15):
        async with standalone_sim() as sim:
            settings = settings_for(sim, symbols=("BTCUSDT", "NOPEUSDT", "XRPUSDT"))
            with pytest.raises(ConfigError) as info:
                await run_genesis(settings, duration_s=10, handle_signals=False)
            assert sim.sim.streams.statistics().connections_accepted == 0
    assert info.value.problems == [
        "GENESIS_SYMBOLS: NOPEUSDT is not listed by the exchange",
        "GENESIS_SYMBOLS: XRPUSDT is not listed by the exchange",
    ]


async def test_a_stream_url_the_exchange_rejects_ends_the_run_with_the_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    with trio.fail_after(20):
        async with standalone_sim() as sim:
            # A wrong path: every handshake is answered 404, on every connection.
            settings = settings_for(sim, stream_url=sim.stream_url + "/wrong")
            with pytest.raises(StreamRejectedError) as info:
                await run_genesis(settings, duration_s=15, handle_signals=False)
    assert info.value.status_code == 404
    assert "every connection, 3 times in a row" in str(info.value)
    assert any(r.getMessage().startswith("ws.rejected_everywhere ") for r in caplog.records)


async def test_a_run_that_never_delivered_an_event_fails_with_the_last_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="genesis.app.run")
    with trio.fail_after(20):
        async with standalone_sim() as sim:
            # Nothing listens on port 9 of the loopback: every connect is refused.
            settings = settings_for(sim, stream_url="ws://127.0.0.1:9")
            with pytest.raises(NoMarketDataError) as info:
                await run_genesis(settings, duration_s=2, handle_signals=False)
    assert "ConnectError" in info.value.reason
    assert any(r.getMessage().startswith("genesis.no_market_data ") for r in caplog.records)


async def test_the_cli_exits_2_for_unknown_symbols_and_1_without_market_data(
    tmp_path: Path,
) -> None:
    async def genesis_run(sim: SimHandle, symbols: str, stream_url: str) -> tuple[int, str]:
        env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
        env.update(
            BINANCE_API_KEY=sim.api_key,
            BINANCE_SECRET_KEY=sim.api_secret,
            BINANCE_TESTNET="true",
            BINANCE_TESTNET_URL=sim.rest_url,
            BINANCE_WS_URL=stream_url,
            BINANCE_WS_API_URL=sim.ws_api_url,
            GENESIS_SYMBOLS=symbols,
            GENESIS_DB=":memory:",
        )
        result = await trio.run_process(
            [sys.executable, "-m", "genesis.app.cli", "run", "--no-display", "--duration", "2"],
            cwd=tmp_path,
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        return result.returncode, result.stderr.decode()

    with trio.fail_after(60):
        async with standalone_sim() as sim:
            unknown = await genesis_run(sim, "BTCUSDT,NOPEUSDT", sim.stream_url)
            no_data = await genesis_run(sim, "BTCUSDT", "ws://127.0.0.1:9")
    assert unknown[0] == EXIT_CONFIG, unknown[1]
    assert "NOPEUSDT is not listed by the exchange" in unknown[1]
    assert no_data[0] == EXIT_FAILURE, no_data[1]
    assert "genesis: error: no market data was delivered: ConnectError" in no_data[1]
    assert "Traceback" not in no_data[1]


async def test_an_order_side_crash_after_start_leaves_market_data_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="genesis.app.supervisor")
    bus = EventBus()
    alerts = bus.subscribe(Alert)
    trades = bus.subscribe(Trade, buffer_size=10_000)

    async def user_stream_with_a_bug(
        *, resume: str | None, task_status: trio.TaskStatus[str]
    ) -> NoReturn:
        task_status.started("handle" if resume is None else resume)
        if resume is not None:
            await trio.sleep_forever()  # the restart is healthy
        await trio.sleep(0.2)
        raise RuntimeError("a bug in the order side")

    with trio.fail_after(20):
        async with standalone_sim() as sim, trio.open_nursery() as nursery:
            await nursery.start(
                functools.partial(run_market_data, sim.stream_url, ["BTCUSDT"], bus)
            )
            handle = await nursery.start(
                functools.partial(
                    supervise_order_side,
                    bus,
                    "user_stream",
                    user_stream_with_a_bug,
                    alert=AlertKind.USER_STREAM_DOWN,
                )
            )
            assert handle == "handle"
            alert = await alerts.receive()
            after = trio.current_time()
            # Market data is still flowing after the crash.
            while True:
                trade = await trades.receive()
                if trade.trade_time_ms and trio.current_time() > after:
                    break
            nursery.cancel_scope.cancel()
    assert alert.kind is AlertKind.USER_STREAM_DOWN
    assert "RuntimeError: a bug in the order side; restarting in 1 s" in alert.message
    failed = [r for r in caplog.records if r.getMessage().startswith("genesis.order_side_failed")]
    assert len(failed) == 1
    assert failed[0].exc_info is not None


async def test_an_order_side_failure_before_start_is_the_trees() -> None:
    async def broken(*, resume: None, task_status: trio.TaskStatus[None]) -> NoReturn:
        raise RuntimeError("cannot start")

    with trio.fail_after(5), pytest.raises(RuntimeError, match="cannot start"):
        await supervise_order_side(EventBus(), "x", broken)
