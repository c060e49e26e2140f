"""``genesis check``: a verdict on the configuration and the exchange, against the simulator.

The embedded simulator (simulator mode), a standalone one in testnet mode (unknown and halted
symbols), and closed loopback ports (unreachable) over real sockets.
"""

from __future__ import annotations

import io
import socket
from typing import TYPE_CHECKING

import orjson
import pytest
import trio

from genesis.app.check import CheckReport, CheckResult, print_report, run_check
from genesis.app.cli import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, main
from genesis.app.logging import reset_logging
from genesis.config import ENV_VARS, Mode, Secret, Settings
from genesis.errors import ConfigError
from genesis.sim.server import SimConfig, run_simulator
from genesis.testing import settings_for

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


STEPS = ("configuration", "rest", "clock", "exchangeInfo", "account", "stream")


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    yield
    reset_logging()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def statuses(report: CheckReport) -> dict[str, str]:
    return {r.step: r.status for r in report.results}


async def test_the_embedded_simulator_passes_every_step() -> None:
    with trio.fail_after(20):
        report = await run_check(Settings(symbols=("BTCUSDT", "ETHUSDT")))
    assert tuple(r.step for r in report.results) == STEPS
    assert set(statuses(report).values()) == {"ok"}
    assert (report.exit_code, report.verdict) == (0, "OK")
    details = {r.step: r.detail for r in report.results}
    assert details["exchangeInfo"] == "BTCUSDT, ETHUSDT exist and are TRADING"
    assert details["rest"].startswith("ping answered in ")
    assert details["stream"].startswith("first event after ")


async def test_an_unknown_symbol_is_a_configuration_problem_and_a_halted_one_a_failure() -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            sim = await nursery.start(run_simulator, SimConfig(symbols=("BTCUSDT", "ETHUSDT")))
            # The default step bounds (10 s): every step here answers, and a 2 s bound around
            # real-socket steps could fail "stream ok" or "account ok" on a loaded CI core.
            report = await run_check(settings_for(sim, ("BTCUSDT", "NOPEUSDT")))
            sim.faults.halt("ETHUSDT")
            halted = await run_check(settings_for(sim, ("ETHUSDT",)))
            nursery.cancel_scope.cancel()
    assert statuses(report)["exchangeInfo"] == "config"
    assert "unknown symbol(s) NOPEUSDT" in report.results[3].detail
    assert statuses(report)["stream"] == "ok"  # checked with the symbols that exist
    assert report.exit_code == EXIT_CONFIG
    assert statuses(halted)["exchangeInfo"] == "fail"
    assert halted.results[3].detail == "ETHUSDT is HALT"
    assert statuses(halted)["account"] == "ok"
    assert halted.exit_code == EXIT_FAILURE


async def test_an_unreachable_exchange_fails_and_skips_what_depends_on_rest() -> None:
    settings = Settings(
        mode=Mode.TESTNET,
        api_key=Secret("k" * 64),
        secret_key=Secret("s" * 64),
        rest_url=f"http://127.0.0.1:{closed_port()}",
        stream_url=f"ws://127.0.0.1:{closed_port()}",
        symbols=("BTCUSDT",),
    )
    with trio.fail_after(20):
        report = await run_check(settings, step_timeout_s=1)
    assert statuses(report) == {
        "configuration": "ok",
        "rest": "fail",
        "clock": "skipped",
        "exchangeInfo": "skipped",
        "account": "skipped",
        "stream": "fail",
    }
    assert report.results[1].detail.startswith("unreachable: ")
    assert report.exit_code == EXIT_FAILURE
    assert report.verdict == "FAILING"


async def test_symbols_the_simulator_cannot_trade_raise_config_error() -> None:
    with trio.fail_after(10), pytest.raises(ConfigError, match="cannot trade them"):
        await run_check(Settings(symbols=("BTC",)))


def test_report_as_text_and_as_json_lines() -> None:
    report = CheckReport(
        mode="testnet",
        results=(
            CheckResult(step="configuration", status="ok", detail="fine"),
            CheckResult(step="clock", status="warn", detail="offset +900.0 ms"),
        ),
    )
    text = io.StringIO()
    print_report(report, text)
    assert text.getvalue().splitlines() == [
        "genesis check (testnet mode)",
        "  OK      configuration  fine",
        "  WARN    clock          offset +900.0 ms",
        "verdict: OK (exit 0)",
    ]
    lines = io.StringIO()
    print_report(report, lines, json=True)
    records = [orjson.loads(line) for line in lines.getvalue().splitlines()]
    assert [r["event"] for r in records] == ["check.result", "check.result", "check.verdict"]
    assert (records[1]["step"], records[1]["status"], records[1]["level"]) == (
        "clock",
        "warn",
        "WARNING",
    )
    assert (records[2]["verdict"], records[2]["exit_code"]) == ("OK", 0)


def test_cli_check_prints_a_verdict_and_exits_with_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--log-json"]) == EXIT_OK
    out, err = capsys.readouterr()
    records = [orjson.loads(line) for line in out.splitlines()]
    assert records[-1]["event"] == "check.verdict"
    assert records[-1]["verdict"] == "OK"
    for line in err.splitlines():
        orjson.loads(line)  # warnings, if any, are JSON too


def test_cli_check_with_a_bad_configuration_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RECV_WINDOW", "0")
    assert main(["check"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "RECV_WINDOW must be between 1 and 60000 ms" in err
    assert "verdict: CONFIGURATION (exit 2)" in err
