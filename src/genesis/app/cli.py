"""The ``genesis`` command: ``genesis run`` (the client tree), ``genesis sim`` (the simulator),
``genesis check`` (is the configuration ready?), ``genesis replay`` (a recording back onto a
bus), ``genesis order`` (one order call; :mod:`genesis.app.order_cli`), ``genesis tail``
(events bridged to NATS JetStream, :mod:`genesis.bridge`) and ``genesis soak`` (the tree
against the simulator's faults; :mod:`genesis.app.soak`).

Exit codes:

- 0: finished (``--duration`` elapsed, Ctrl-C or SIGTERM); ``check``: every step passed;
- 1: a task of the tree failed (the message names the error; no traceback for Genesis's own
  errors, a logged traceback for a bug), the market streams rejected every connection, or the
  run ended without delivering one market-data event; for ``genesis order``: the exchange
  said no; ``check``: the exchange is unreachable or a step failed;
- 2: bad command line or configuration (every problem listed at once), including symbols the
  exchange does not list or trade, and ``--record`` onto an existing file without
  ``--append`` or ``--force``.

With ``--log-json`` everything the command writes (log lines, the dashboard's price lines,
error messages, the check's results) is one JSON object per line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from functools import partial
from typing import TYPE_CHECKING, Final, TextIO

import attrs
import trio

from genesis import __version__
from genesis.app.logging import configure_logging, json_line
from genesis.config import ENV_VARS, load_settings
from genesis.errors import ConfigError, GenesisError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from genesis.app.replay import ReplaySpeed
    from genesis.config import Settings
    from genesis.sim.server import SimConfig

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_OK",
    "LEVELS",
    "build_parser",
    "err",
    "main",
    "positive_float",
    "settings_from_args",
]

logger = logging.getLogger(__name__)

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_CONFIG: Final = 2

LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 0..65535: {text!r}")
    return value


def symbols_arg(text: str) -> tuple[str, ...]:
    symbols = tuple(dict.fromkeys(s.strip().upper() for s in text.split(",") if s.strip()))
    if not symbols or not all(s.isalnum() for s in symbols):
        raise argparse.ArgumentTypeError(f"expected comma-separated symbols: {text!r}")
    return symbols


def add_logging_options(parser: argparse.ArgumentParser, default: str = "INFO") -> None:
    parser.add_argument(
        "--log-level",
        choices=LEVELS,
        default=default,
        type=str.upper,
        metavar="LEVEL",
        help=f"least severe log level shown: {', '.join(LEVELS)} (default {default})",
    )
    parser.add_argument(
        "--log-json",
        action="store_true",
        help="write one JSON object per line (logs, prices, errors) instead of text",
    )


def _speed(text: str) -> str:
    if text not in ("recorded", "full"):
        raise argparse.ArgumentTypeError(f"expected 'recorded' or 'full': {text!r}")
    return text


def _alert_command(text: str) -> tuple[str, ...]:
    from genesis.app.alerts import parse_alert_command

    try:
        return parse_alert_command(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--alert-command: {exc}") from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for ``genesis`` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="genesis",
        description="Exchange connectivity for Binance Spot on Trio, with an embedded simulator.",
    )
    parser.add_argument("--version", action="version", version=f"genesis {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run Genesis: market data, order task, heartbeat and live prices",
        description=(
            "Run Genesis. Settings come from the environment and a .env file "
            f"({', '.join(ENV_VARS)}). Without credentials Genesis runs "
            "against its embedded simulator on 127.0.0.1."
        ),
    )
    run.add_argument(
        "--live", action="store_true", help="allow PRODUCTION (real money) when not on testnet"
    )
    run.add_argument(
        "--duration", type=positive_float, metavar="SECONDS", help="stop cleanly after this long"
    )
    run.add_argument("--record", metavar="PATH", help="write every bus event to PATH as JSON lines")
    existing = run.add_mutually_exclusive_group()
    existing.add_argument(
        "--append", action="store_true", help="with --record: add to an existing file"
    )
    existing.add_argument(
        "--force", action="store_true", help="with --record: overwrite an existing file"
    )
    run.add_argument("--env-file", metavar="PATH", help="read settings from PATH (default .env)")
    run.add_argument(
        "--no-display",
        action="store_true",
        help="no dashboard (on a terminal) and no price lines (elsewhere)",
    )
    run.add_argument(
        "--sim-seed",
        type=int,
        default=1,
        metavar="SEED",
        help="embedded simulator's market seed (default 1)",
    )
    add_logging_options(run)
    run.add_argument(
        "--metrics-port",
        type=_port,
        default=9108,
        metavar="PORT",
        help="serve Prometheus metrics on 127.0.0.1:PORT/metrics (default 9108; a port in use "
        "is a warning, not a failure)",
    )
    run.add_argument("--no-metrics", action="store_true", help="do not serve metrics")
    run.add_argument(
        "--alert-command",
        type=_alert_command,
        metavar="CMD",
        help="run CMD for every alert with the alert as one JSON object on stdin (e.g. a "
        "pager hook); bounded and time-limited, it never holds up Genesis",
    )
    run.add_argument(
        "--nats", metavar="URL", help="bridge the bus to NATS JetStream (GENESIS_NATS_URL)"
    )
    run.set_defaults(handler=_cmd_run)

    tail = sub.add_parser(
        "tail",
        help="print events bridged to NATS JetStream as JSON lines",
        description=(
            "Consume SUBJECT (e.g. 'genesis.trade.BTCUSDT', 'genesis.*.ETHUSDT', 'genesis.>') "
            "from the GENESIS stream and print each event as one JSON line."
        ),
    )
    tail.add_argument("subject", metavar="SUBJECT", nargs="+", help="subject filter(s)")
    tail.add_argument("--nats", metavar="URL", help="NATS server (default GENESIS_NATS_URL)")
    tail.add_argument("--durable", metavar="NAME", help="a durable consumer: resume where it was")
    tail.add_argument("--new", action="store_true", help="only events published from now on")
    tail.add_argument("--count", type=int, metavar="N", help="stop after N events")
    tail.add_argument(
        "--duration", type=positive_float, metavar="SECONDS", help="stop cleanly after this long"
    )
    add_logging_options(tail, default="WARNING")
    tail.set_defaults(handler=_cmd_tail)

    sim = sub.add_parser(
        "sim",
        help="run the Binance simulator standalone",
        description="Serve a local Binance Spot simulator (REST, market streams, WS API).",
    )
    sim.add_argument(
        "--host", default="127.0.0.1", metavar="ADDRESS", help="address to bind (default 127.0.0.1)"
    )
    sim.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host reachable from other machines (the credentials are published)",
    )
    sim.add_argument(
        "--port", type=_port, default=0, metavar="PORT", help="REST port (default: any free port)"
    )
    sim.add_argument(
        "--ws-port", type=_port, metavar="PORT", help="WebSocket port (default: --port + 1)"
    )
    sim.add_argument("--seed", type=int, default=1, metavar="SEED", help="market seed (default 1)")
    sim.add_argument(
        "--symbols",
        type=symbols_arg,
        metavar="S1,S2",
        help="symbols (default BTCUSDT,ETHUSDT,BNBUSDT)",
    )
    sim.add_argument(
        "--faults",
        nargs="?",
        const="",
        metavar="PROFILE",
        help="inject a seeded fault schedule; without PROFILE: list the profiles",
    )
    sim.add_argument("--api-key", metavar="KEY", help="API key the simulator accepts")
    sim.add_argument("--api-secret", metavar="SECRET", help="API secret for --api-key")
    sim.add_argument(
        "--duration", type=positive_float, metavar="SECONDS", help="stop cleanly after this long"
    )
    add_logging_options(sim)
    sim.set_defaults(handler=_cmd_sim)

    check = sub.add_parser(
        "check",
        help="check the configuration and reach the exchange, then print a verdict",
        description=(
            "Validate the settings (as 'genesis run' reads them), then reach the exchange: REST "
            "ping, clock offset, exchangeInfo (every configured symbol TRADING), the account "
            "(with credentials) and one market-stream frame. Exit 0 when every step passed, 1 "
            "when the exchange is unreachable or a step failed, 2 for a configuration problem. "
            "Without credentials it checks the embedded simulator."
        ),
    )
    check.add_argument(
        "--live", action="store_true", help="allow PRODUCTION (real money) when not on testnet"
    )
    check.add_argument("--env-file", metavar="PATH", help="read settings from PATH (default .env)")
    check.add_argument(
        "--timeout",
        type=positive_float,
        default=10.0,
        metavar="SECONDS",
        help="give up on a step after this long (default 10)",
    )
    add_logging_options(check, default="WARNING")
    check.set_defaults(handler=_cmd_check)

    replay = sub.add_parser(
        "replay",
        help="feed a --record file back onto a bus and show it like a live run",
        description=(
            "Publish every event of a file written by 'genesis run --record' on a bus, in file "
            "order, and show it on the dashboard (price lines when not on a terminal). Bad "
            "lines are counted and reported, not fatal."
        ),
    )
    replay.add_argument("path", metavar="PATH", help="the recording (JSON lines)")
    replay.add_argument(
        "--speed",
        type=_speed,
        default="recorded",
        metavar="recorded|full",
        help="space events as recorded (pauses over 10 s shortened) or go as fast as possible"
        " (default recorded)",
    )
    replay.add_argument(
        "--symbols",
        type=symbols_arg,
        metavar="S1,S2",
        help="show only these symbols (default: every symbol in the file)",
    )
    replay.add_argument("--no-display", action="store_true", help="publish only, show nothing")
    add_logging_options(replay)
    replay.set_defaults(handler=_cmd_replay)

    # Imported here: order_cli imports this module's exit codes.
    from genesis.app.order_cli import add_order_parser

    add_order_parser(sub)
    from genesis.app.soak import add_soak_parser

    add_soak_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``genesis`` command line; returns the process exit code.

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` when ``None``.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse reports usage errors (2) and --help (0) by exiting
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIG
    global _json_errors
    _json_errors = bool(getattr(args, "log_json", False))
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    finally:
        _json_errors = False


_json_errors = False


def err(text: str, stream: TextIO | None = None) -> None:
    """Write a message for the user to stderr (a ``genesis.message`` JSON line with --log-json)."""
    out = sys.stderr if stream is None else stream
    if _json_errors:
        text = json_line(
            "genesis.message",
            {"lines": text.splitlines()},
            level="ERROR",
            logger="genesis.app.cli",
            message=text,
        )
    out.write(text + "\n")
    out.flush()


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The settings ``genesis run`` and ``genesis order`` share: environment, ``.env`` or
    ``--env-file``, and ``--live``.

    Raises:
        ConfigError: every problem found.
    """
    return load_settings(
        env_file=args.env_file if args.env_file is not None else ".env",
        env_file_required=args.env_file is not None,
        live=args.live,
    )


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        err(f"genesis: {exc}")
        err("genesis: settings come from the environment and .env; see 'genesis run --help'")
        return EXIT_CONFIG
    if args.nats is not None:
        nats_url = args.nats.strip()
        if not nats_url.startswith(("nats://", "tls://")):
            err("genesis: --nats must be a nats:// or tls:// URL")
            return EXIT_CONFIG
        settings = attrs.evolve(settings, nats_url=nats_url)
    configure_logging(
        args.log_level, secrets=(settings.api_key, settings.secret_key), json=args.log_json
    )
    # Imported here: a configuration error is reported without loading the whole tree.
    from genesis.app.run import run_genesis

    for note in settings.notes:
        logger.warning("config.note %s", note)
    display = None if args.no_display else sys.stdout
    return _run_trio(
        partial(
            run_genesis,
            settings,
            duration_s=args.duration,
            record_path=args.record,
            record_mode="append" if args.append else "overwrite" if args.force else "new",
            display=display,
            capture_logs=display is not None and sys.stderr.isatty(),
            sim_seed=args.sim_seed,
            metrics_port=None if args.no_metrics else args.metrics_port,
            alert_command=args.alert_command,
        )
    )


def _fault_profiles() -> str:
    from genesis.sim.faults import FAULT_PROFILES

    lines = ["fault profiles (genesis sim --faults PROFILE):"]
    for profile in FAULT_PROFILES.values():
        if not profile.actions:
            what = "no faults"
        else:
            what = f"every {profile.min_gap_s:g}-{profile.max_gap_s:g} s one of: " + ", ".join(
                profile.actions
            )
        lines.append(f"  {profile.name:<8} {what}")
    return "\n".join(lines)


def _cmd_sim(args: argparse.Namespace) -> int:
    if args.faults == "":
        sys.stdout.write(_fault_profiles() + "\n")
        sys.stdout.flush()
        return EXIT_OK
    if (args.api_key is None) != (args.api_secret is None):
        err("genesis: --api-key and --api-secret go together")
        return EXIT_CONFIG
    ws_port = args.ws_port
    if ws_port is None:
        ws_port = args.port + 1 if args.port else 0
    if ws_port > 65535:
        err("genesis: --port 65535 leaves no room for the default --ws-port; give --ws-port")
        return EXIT_CONFIG
    try:
        config = _sim_config(args, ws_port)
    except ValueError as exc:
        text = f"genesis: invalid simulator options: {exc}"
        if "fault profile" in str(exc):
            text += "\n" + _fault_profiles()
        err(text)
        return EXIT_CONFIG
    configure_logging(args.log_level, json=args.log_json)
    from genesis.app.run import run_simulator_until_stopped

    return _run_trio(
        partial(run_simulator_until_stopped, config, args.duration, sys.stdout, json=args.log_json)
    )


def _cmd_check(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        err(f"genesis: {exc}")
        err("genesis: verdict: CONFIGURATION (exit 2)")
        return EXIT_CONFIG
    configure_logging(
        args.log_level, secrets=(settings.api_key, settings.secret_key), json=args.log_json
    )
    from genesis.app.check import print_report, run_check

    async def check() -> int:
        report = await run_check(settings, step_timeout_s=args.timeout)
        print_report(report, sys.stdout, json=args.log_json)
        return report.exit_code

    outcome: list[int] = []

    async def check_and_keep() -> None:
        outcome.append(await check())

    code = _run_trio(check_and_keep)
    return outcome[0] if code == EXIT_OK and outcome else code


def _cmd_replay(args: argparse.Namespace) -> int:
    import os

    if not os.path.isfile(args.path):
        err(f"genesis: no such recording: {args.path}")
        return EXIT_CONFIG
    configure_logging(args.log_level, json=args.log_json)
    from genesis.app.replay import ReplaySpeed

    return _run_trio(
        partial(
            _replay,
            args.path,
            ReplaySpeed(args.speed),
            args.symbols or (),
            display=None if args.no_display else sys.stdout,
        )
    )


async def _replay(
    path: str, speed: ReplaySpeed, symbols: tuple[str, ...], *, display: TextIO | None
) -> None:
    from genesis.app.dashboard import run_dashboard
    from genesis.app.replay import replay_file
    from genesis.bus import EventBus

    bus = EventBus()
    try:
        async with trio.open_nursery() as nursery:
            live = None
            if display is not None:
                live = await nursery.start(
                    partial(
                        run_dashboard,
                        bus,
                        symbols,
                        display,
                        mode="REPLAY",
                        capture_logs=sys.stderr.isatty(),
                    )
                )
            await replay_file(path, bus, speed=speed)
            if live is not None:
                await live.wait_drained()
                live.flush()
            nursery.cancel_scope.cancel()
    finally:
        bus.close()


def _cmd_tail(args: argparse.Namespace) -> int:
    url = (args.nats or os.environ.get("GENESIS_NATS_URL") or "").strip()
    if not url.startswith(("nats://", "tls://")):
        err("genesis: give the NATS server with --nats nats://host:4222 or GENESIS_NATS_URL")
        return EXIT_CONFIG
    if args.count is not None and args.count < 1:
        err("genesis: --count must be at least 1")
        return EXIT_CONFIG
    configure_logging(args.log_level, json=args.log_json)
    from genesis.bridge import ConsumerConfig
    from genesis.bridge._tail import run_tail

    config = ConsumerConfig(
        url=url,
        subjects=tuple(args.subject),
        durable=args.durable,
        deliver_new=args.new,
        name="genesis-tail",
    )
    return _run_trio(
        partial(run_tail, config, sys.stdout, count=args.count, duration_s=args.duration)
    )


def _sim_config(args: argparse.Namespace, ws_port: int) -> SimConfig:
    from genesis.sim.server import SimConfig

    return SimConfig(
        host=args.host,
        allow_remote=args.allow_remote,
        rest_port=args.port,
        ws_port=ws_port,
        seed=args.seed,
        symbols=args.symbols,
        faults=args.faults,
        api_key=args.api_key,
        api_secret=args.api_secret,
    )


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _run_trio(async_fn: Callable[[], Awaitable[object]]) -> int:
    """``trio.run`` with the CLI's error policy: a clear message and an exit code."""
    try:
        trio.run(async_fn)
    except KeyboardInterrupt:
        # Ctrl-C outside the tree's signal receiver (startup): an orderly stop, not a failure.
        return EXIT_OK
    except BaseExceptionGroup as group:
        errors = [e for e in _leaves(group) if not isinstance(e, KeyboardInterrupt)]
        return _report(errors) if errors else EXIT_OK
    except Exception as exc:
        return _report([exc])
    return EXIT_OK


def _report(errors: list[BaseException]) -> int:
    for exc in errors:
        if isinstance(exc, ConfigError):
            err(f"genesis: {exc}")
            return EXIT_CONFIG
    for exc in errors:
        if isinstance(exc, GenesisError | OSError):
            err(f"genesis: error: {exc}")
        else:
            # A bug: keep the traceback for whoever fixes it, then say it plainly.
            logger.error("genesis.crash error=%s", type(exc).__name__, exc_info=exc)
            err(f"genesis: error: unexpected {type(exc).__name__}: {exc}")
    return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
