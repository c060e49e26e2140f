"""The ``genesis`` command line: exit codes, error messages, no tracebacks, no secrets."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

from genesis.app.cli import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, main
from genesis.app.logging import configure_logging, redirect_console, reset_logging
from genesis.config import ENV_VARS, Secret

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No Genesis variables from the outer environment, no stray .env, logging reset after."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    yield
    reset_logging()


def test_bad_configuration_exits_2_listing_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / ".env").write_text(
        f"BINANCE_SECRET_KEY={SECRET}\nRECV_WINDOW=70000\nGENESIS_SYMBOLS=BTC-USDT\n"
    )
    assert main(["run", "--duration", "1"]) == EXIT_CONFIG
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("genesis: invalid configuration:\n")
    assert "  - RECV_WINDOW must be between 1 and 60000 ms, got 70000\n" in err
    assert "  - GENESIS_SYMBOLS entries must be 2-20 letters or digits, got 'BTC-USDT'\n" in err
    assert "  - BINANCE_SECRET_KEY is set but BINANCE_API_KEY is not" in err
    assert "Traceback" not in err
    assert SECRET not in err


def test_production_without_live_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BINANCE_API_KEY", "k" * 64)
    monkeypatch.setenv("BINANCE_SECRET_KEY", SECRET)
    assert main(["run"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "pass --live to confirm" in err
    assert SECRET not in err


def test_a_named_env_file_must_exist(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--env-file", "missing.env"]) == EXIT_CONFIG
    assert "env file missing.env does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--duration", "-1"],
        ["run", "--duration", "soon"],
        ["run", "--bogus"],
        ["sim", "--port", "70000"],
        ["sim", "--symbols", ","],
        [],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "usage: genesis" in err
    assert "Traceback" not in err


def test_sim_option_combinations_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--api-key", "abc"]) == EXIT_CONFIG
    assert "--api-key and --api-secret go together" in capsys.readouterr().err
    assert main(["sim", "--port", "65535"]) == EXIT_CONFIG
    assert "give --ws-port" in capsys.readouterr().err


def test_sim_rejects_an_unknown_fault_profile(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--faults", "gremlins"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("genesis: invalid simulator options: unknown fault profile 'gremlins'")
    assert "'chaos'" in err


def test_console_log_lines_mask_secrets() -> None:
    stream = io.StringIO()
    configure_logging(logging.INFO, stream=stream, secrets=[Secret(SECRET), None])
    logging.getLogger("genesis.test").warning("oops secret=%s", SECRET)
    assert stream.getvalue().endswith("WARNING genesis.test oops secret=********\n")
    assert SECRET not in stream.getvalue()


def test_console_log_lines_can_be_redirected_to_a_display() -> None:
    stream = io.StringIO()
    lines: list[str] = []

    class Sink:
        def write_line(self, line: str) -> None:
            lines.append(line)

    configure_logging("INFO", stream=stream)
    log = logging.getLogger("genesis.test")
    with redirect_console(Sink()):
        log.info("inside")
    log.info("outside")
    assert [line.rsplit(" ", 2)[1:] for line in lines] == [["genesis.test", "inside"]]
    assert stream.getvalue().endswith("INFO    genesis.test outside\n")
    assert "inside" not in stream.getvalue()


def test_version_and_help_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == EXIT_OK
    assert capsys.readouterr().out.startswith("genesis ")
    assert main(["run", "--help"]) == EXIT_OK
    assert "--duration SECONDS" in capsys.readouterr().out


def test_a_failing_task_exits_1_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = tmp_path / "no-such-dir" / "events.jsonl"
    code = main(["run", "--no-display", "--duration", "10", "--record", str(record)])
    assert code == EXIT_FAILURE
    err = capsys.readouterr().err
    assert f"genesis: error: [Errno 2] No such file or directory: '{record}'" in err
    assert "Traceback" not in err


def test_run_with_duration_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    assert main(["run", "--no-display", "--duration", "0.5"]) == EXIT_OK
    assert 0.5 <= time.monotonic() - started < 3.0
    err = capsys.readouterr().err
    assert "genesis.stop reason=duration" in err


def test_sim_prints_its_urls_and_stops_after_duration(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--duration", "0.3", "--seed", "7", "--symbols", "btcusdt"]) == EXIT_OK
    out = capsys.readouterr().out
    lines = dict(line.split(": ", 1) for line in out.splitlines())
    assert lines["rest"].startswith("http://127.0.0.1:")
    assert lines["streams"].startswith("ws://127.0.0.1:")
    assert lines["ws-api"].startswith("ws://127.0.0.1:")


def test_console_script_reports_bad_config_without_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env["RECV_WINDOW"] = "zero"
    env["BINANCE_API_KEY"] = "a" * 64
    proc = subprocess.run(
        [sys.executable, "-m", "genesis.app.cli", "run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == EXIT_CONFIG
    assert proc.stdout == ""
    assert proc.stderr.splitlines()[:3] == [
        "genesis: invalid configuration:",
        "  - RECV_WINDOW must be an integer number of ms, got 'zero'",
        "  - BINANCE_API_KEY is set but BINANCE_SECRET_KEY is not: set both or neither",
    ]
    assert "Traceback" not in proc.stderr
