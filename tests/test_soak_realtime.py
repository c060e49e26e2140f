"""``genesis soak`` for a few seconds: the whole tree against the embedded simulator.

Rules for these tests:

- real sockets on 127.0.0.1 and wall-clock time (that is what this soak is), so nothing here
  asserts a count that depends on timing: the figures are checked against each other where
  they come from independent sources (the simulator's trade listener, its trade history, the
  bus), and faults are asserted to have happened, not how often;
- each run is a few seconds of window and one of settling, under a ``fail_after`` deadline;
- the CLI test runs in its own ``trio.run`` (``main`` does) and resets logging afterwards.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
import trio

from genesis.app.cli import EXIT_CONFIG, EXIT_OK, main
from genesis.app.logging import reset_logging
from genesis.app.soak import format_summary
from genesis.sim.faults import FaultProfile
from genesis.testing import run_soak

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(autouse=True)
def clean_logging() -> Iterator[None]:
    yield
    reset_logging()


def test_genesis_soak_writes_a_clean_report_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "soak.json"
    code = main(
        [
            "soak",
            "--duration",
            "2",
            "--faults",
            "none",
            "--settle",
            "3",  # trades_lost == 0 below needs the last trades delivered within it: margin
            "--order-book",
            "ETHUSDT",
            "--report",
            str(path),
        ]
    )
    out = capsys.readouterr().out
    assert code == EXIT_OK, out
    # The window's measured length is printed ("2 s"; later on a loaded machine): not asserted.
    verdict = out.splitlines()[-6]
    assert verdict.startswith("soak OK: "), verdict
    assert " s, faults none " in verdict, verdict
    data = json.loads(path.read_text())
    assert data["ok"] is True
    assert data["profile"] == "none"
    assert data["faults"] == {}
    # The simulator printed trades, its own history holds each of them, and every one of them
    # reached the bus exactly once, in order.
    assert data["trades_published"] > 0
    assert data["trades_in_record"] == data["trades_published"]
    assert data["trades_delivered"] == data["trades_in_record"]
    assert data["trades_lost"] == 0
    assert data["trades_unrecorded"] == 0
    assert data["duplicated"] == {}
    assert data["out_of_order"] == {}
    assert {"Trade", "Depth", "Ticker", "Kline"} <= set(data["events_by_kind"])
    assert data["events_by_kind"]["Trade"] >= data["trades_published"]
    assert set(data["reconnects"]) == {"execution", "monitoring", "backup"}
    assert data["rss_start_mib"] > 0
    assert data["rss_end_mib"] > 0
    assert data["errors_by_kind"] == {}
    # The local book of ETHUSDT was soaked too: synced once, no gap, a book per applied event.
    eth = data["order_books"]["ETHUSDT"]
    assert (eth["syncs"], eth["gaps"]) == (1, 0)
    assert eth["published"] == eth["applied"] + 1
    # (the tally may not have drained the last instant's books when the counts were taken)
    assert 0 < data["events_by_kind"]["OrderBook"] <= eth["published"]


def test_genesis_soak_refuses_bad_arguments(tmp_path: Path) -> None:
    assert main(["soak", "--faults", "gremlins"]) == EXIT_CONFIG
    assert main(["soak", "--duration", "0"]) == EXIT_CONFIG
    assert main(["soak", "--report", str(tmp_path / "missing" / "r.json")]) == EXIT_CONFIG


# A finding of this soak, not fixed here (exchange/ws_manager.py is not this change's):
# trio-websocket's connect_websocket_url leaves its TCP socket to the garbage collector when
# the peer drops the connection without a close frame, so each drop ends in a ResourceWarning.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_soak_under_total_outages_reports_what_was_lost() -> None:
    # Every connection dropped every second: the faults happen, the tree reconnects, and the
    # trades printed while nothing was connected are lost (no backfill on this path yet):
    # the report says so, and the exchange's own history agrees with the listener on them.
    drops = FaultProfile(name="drops", min_gap_s=1, max_gap_s=1, actions=("drop_all",))
    with trio.fail_after(60):
        report = await run_soak(
            duration_s=4, profile=drops, seed=2, symbols=("BTCUSDT",), settle_s=2
        )
    assert report.faults["drop_all"] >= 1
    assert sum(report.reconnects.values()) >= 1
    assert report.largest_backoff_s >= 1.0
    assert report.trades_in_record == report.trades_published > 0
    assert report.trades_in_record - report.trades_delivered == report.trades_lost
    assert report.trades_unrecorded == 0
    assert report.duplicated == {}
    assert report.out_of_order == {}
    assert report.ok == (report.trades_lost == 0)
    assert "drop_all" in format_summary(report)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_soak_over_tls_reconnects_through_dropped_connections() -> None:
    # wss://, as against Binance: each drop ends a TLS connection mid-stream; the tree
    # reconnects (a new handshake each time) and nothing arrives twice or out of order.
    pytest.importorskip("trustme")
    drops = FaultProfile(name="drops", min_gap_s=1, max_gap_s=1, actions=("drop_all",))
    with trio.fail_after(60):
        report = await run_soak(
            duration_s=3, profile=drops, seed=3, symbols=("BTCUSDT",), settle_s=2, tls=True
        )
    assert report.tls
    assert report.faults["drop_all"] >= 1
    assert sum(report.reconnects.values()) >= 1
    assert report.trades_in_record == report.trades_published > 0
    assert report.trades_in_record - report.trades_delivered == report.trades_lost
    assert report.trades_unrecorded == 0
    assert report.duplicated == {}
    assert report.out_of_order == {}
    assert report.merger["decode_errors"] == 0
    assert "over TLS" in format_summary(report)
