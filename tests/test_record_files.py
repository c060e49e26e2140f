"""``--record``: an existing file is never overwritten by accident, and a failing disk stops the
recording (ERROR line, RECORDER_FAILED alert) but never the market data.

Real clock and real files: the writes run in a worker thread, which an autojump clock would
skip past. ``/dev/full`` is a real disk that is always full (every flush fails with ENOSPC).
"""

from __future__ import annotations

import logging
import os
from functools import partial
from typing import TYPE_CHECKING

import orjson
import pytest
import trio

from genesis.app.record import run_recorder
from genesis.app.run import run_genesis
from genesis.bus import EventBus
from genesis.config import Settings
from genesis.errors import ConfigError
from genesis.models.events import Alert, AlertKind, AlertSeverity
from genesis.models.market import Trade
from tests.test_app_run import trade

if TYPE_CHECKING:
    from pathlib import Path

    from genesis.app.record import RecordMode

DEV_FULL = "/dev/full"


async def record_some(path: Path, mode: RecordMode, trade_ids: range) -> None:
    bus = EventBus()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(run_recorder, bus, path, mode=mode, flush_interval_s=0.01))
            for i in trade_ids:
                bus.publish_nowait(trade(trade_id=i))
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()


def trade_ids(path: Path) -> list[int]:
    return [orjson.loads(line)["trade_id"] for line in path.read_bytes().splitlines()]


async def test_an_existing_recording_is_refused_appended_to_or_overwritten(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.jsonl"
    await record_some(path, "new", range(1, 3))
    assert trade_ids(path) == [1, 2]
    with trio.fail_after(10), pytest.raises(ConfigError, match=r"exists: add --append .*--force"):
        await run_recorder(EventBus(), path, mode="new")
    assert trade_ids(path) == [1, 2]  # untouched
    await record_some(path, "append", range(3, 5))
    assert trade_ids(path) == [1, 2, 3, 4]
    await record_some(path, "overwrite", range(9, 10))
    assert trade_ids(path) == [9]


async def test_the_tree_refuses_to_record_over_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"precious\n")
    with trio.fail_after(10), pytest.raises(ConfigError, match="--force"):
        await run_genesis(Settings(symbols=("BTCUSDT",)), record_path=path, handle_signals=False)
    assert path.read_bytes() == b"precious\n"


@pytest.mark.skipif(not os.path.exists(DEV_FULL), reason="needs /dev/full")
async def test_a_full_disk_stops_the_recording_with_an_alert_not_the_feed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="genesis.app.record")
    bus = EventBus()
    alerts = bus.subscribe(Alert)
    trades = bus.subscribe(Trade, buffer_size=1000)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            recorder = await nursery.start(
                partial(
                    run_recorder,
                    bus,
                    DEV_FULL,
                    mode="append",
                    flush_interval_s=0.01,
                    wall_clock_ms=lambda: 1_767_225_600_000,
                )
            )
            bus.publish_nowait(trade(trade_id=1))
            alert = await alerts.receive()
            # The recording is over; the bus and its other subscribers carry on.
            for i in range(2, 6):
                bus.publish_nowait(trade(trade_id=i))
            assert [trades.receive_nowait().trade_id for _ in range(5)] == [1, 2, 3, 4, 5]
            assert bus.statistics().subscribers == 2  # the recorder unsubscribed
            stats = recorder.statistics()
            nursery.cancel_scope.cancel()
    assert alert.kind is AlertKind.RECORDER_FAILED
    assert alert.severity is AlertSeverity.ERROR
    assert alert.subject == DEV_FULL
    assert "No space left on device" in alert.message
    assert alert.at_ms == 1_767_225_600_000
    assert stats.failed is not None
    assert "No space left" in stats.failed
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(m.startswith(f"record.failed path={DEV_FULL} ") for m in errors)


@pytest.mark.skipif(not os.path.exists(DEV_FULL), reason="needs /dev/full")
async def test_a_full_disk_under_the_whole_tree_leaves_market_data_running() -> None:
    settings = Settings(symbols=("BTCUSDT",))
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(
                partial(
                    run_genesis,
                    settings,
                    record_path=DEV_FULL,
                    record_mode="append",
                    handle_signals=False,
                )
            )
            assert handle.recorder is not None
            async with handle.bus.subscribe(Alert, Trade) as sub:
                seen_alert = False
                trades_after = 0
                async for event in sub:
                    if isinstance(event, Alert) and event.kind is AlertKind.RECORDER_FAILED:
                        seen_alert = True
                    elif isinstance(event, Trade) and seen_alert:
                        trades_after += 1
                        if trades_after == 3:
                            break
            assert handle.recorder.statistics().failed is not None
            assert all(h.receiving for h in handle.market_data.statistics().connections)
            nursery.cancel_scope.cancel()
