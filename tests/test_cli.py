"""The ``genesis`` command line: exit codes, error messages, no tracebacks, no secrets."""

from __future__ import annotations

import argparse
import io
import logging
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import orjson
import pytest

from genesis.app.cli import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, build_parser, main
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
    assert time.monotonic() - started >= 0.5  # the duration was honoured, however slow the run
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


# --- help, metavars, fault profiles, --log-json --------------------------------------------


def _parsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


def test_every_option_of_every_command_has_help_and_a_natural_metavar() -> None:
    missing: list[str] = []
    shouting: list[str] = []
    for prog, parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) or not action.option_strings:
                continue
            name = f"{prog} {action.option_strings[-1]}"
            if not action.help:
                missing.append(name)
            takes_value = action.nargs != 0 and action.choices is None
            if takes_value and action.metavar is None:
                # argparse would print the destination in capitals (--client-order-id
                # CLIENT_ORDER_ID): every value gets a short, natural name instead.
                shouting.append(name)
    assert missing == []
    assert shouting == []
    assert {prog for prog, _ in _parsers(build_parser())} >= {
        "genesis run",
        "genesis sim",
        "genesis check",
        "genesis replay",
        "genesis order place",
    }


def test_sim_faults_without_a_profile_lists_the_profiles(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["sim", "--faults"]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("fault profiles (genesis sim --faults PROFILE):\n")
    names = [line.split()[0] for line in out.splitlines()[1:]]
    assert names == ["none", "flaky", "chaos"]
    assert "every 5-30 s one of: drop_one, drop_all" in out


def test_an_unknown_fault_profile_lists_the_profiles_too(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["sim", "--faults", "gremlins"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "unknown fault profile 'gremlins'" in err
    assert "\n  flaky    every 30-120 s one of:" in err


def test_log_json_turns_configuration_errors_into_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / ".env").write_text("RECV_WINDOW=70000\n")
    assert main(["run", "--log-json", "--duration", "1"]) == EXIT_CONFIG
    out, err = capsys.readouterr()
    assert out == ""
    records = [orjson.loads(line) for line in err.splitlines()]
    assert records[0]["event"] == "genesis.message"
    assert records[0]["level"] == "ERROR"
    assert "  - RECV_WINDOW must be between 1 and 60000 ms, got 70000" in records[0]["lines"]


def test_a_run_with_log_json_writes_nothing_but_json_objects(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run", "--log-json", "--duration", "2.5"]) == EXIT_OK
    out, err = capsys.readouterr()
    prices = [orjson.loads(line) for line in out.splitlines()]  # stdout: not a terminal
    logs = [orjson.loads(line) for line in err.splitlines()]
    assert prices
    assert {p["event"] for p in prices} == {"dashboard.price"}
    assert {p["symbol"] for p in prices} == {"BTCUSDT", "ETHUSDT"}
    events = [r["event"] for r in logs]
    assert "genesis.ready" in events
    assert events[-1] == "genesis.stop"
    assert logs[-1]["reason"] == "duration"


def test_sim_urls_with_log_json_are_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--duration", "0.3", "--log-json"]) == EXIT_OK
    out, err = capsys.readouterr()
    [urls] = [orjson.loads(line) for line in out.splitlines()]
    assert urls["event"] == "sim.urls"
    assert urls["rest"].startswith("http://127.0.0.1:")
    for line in err.splitlines():
        orjson.loads(line)
