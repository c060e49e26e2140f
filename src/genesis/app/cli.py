"""The ``genesis`` command: ``genesis run`` (the client tree), ``genesis sim`` (the simulator),
``genesis order`` (one order call; :mod:`genesis.app.order_cli`) and ``genesis soak`` (the tree
against the simulator's faults; :mod:`genesis.app.soak`).

Exit codes:

- 0: finished (``--duration`` elapsed, Ctrl-C or SIGTERM);
- 1: a task of the tree failed (the message names the error; no traceback for Genesis's own
  errors, a logged traceback for a bug); for ``genesis order``: the exchange said no;
- 2: bad command line or configuration (every problem listed at once).
"""

from __future__ import annotations

import argparse
import logging
import sys
from functools import partial
from typing import TYPE_CHECKING, Final, TextIO

import trio

from genesis import __version__
from genesis.app.logging import configure_logging
from genesis.config import load_settings
from genesis.errors import ConfigError, GenesisError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

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


def _symbols(text: str) -> tuple[str, ...]:
    symbols = tuple(dict.fromkeys(s.strip().upper() for s in text.split(",") if s.strip()))
    if not symbols or not all(s.isalnum() for s in symbols):
        raise argparse.ArgumentTypeError(f"expected comma-separated symbols: {text!r}")
    return symbols


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
            "(BINANCE_API_KEY, BINANCE_SECRET_KEY, BINANCE_TESTNET, BINANCE_TESTNET_URL, "
            "BINANCE_WS_URL, RECV_WINDOW, GENESIS_SYMBOLS). Without credentials Genesis runs "
            "against its embedded simulator on 127.0.0.1."
        ),
    )
    run.add_argument(
        "--live", action="store_true", help="allow PRODUCTION (real money) when not on testnet"
    )
    run.add_argument(
        "--duration", type=positive_float, metavar="SECONDS", help="stop cleanly after this long"
    )
    run.add_argument("--record", metavar="PATH", help="write every bus event as JSON lines")
    run.add_argument("--env-file", metavar="PATH", help="read settings from PATH (default .env)")
    run.add_argument("--no-display", action="store_true", help="do not show live prices")
    run.add_argument("--sim-seed", type=int, default=1, help="embedded simulator seed")
    run.add_argument("--log-level", choices=LEVELS, default="INFO", type=str.upper)
    run.set_defaults(handler=_cmd_run)

    sim = sub.add_parser(
        "sim",
        help="run the Binance simulator standalone",
        description="Serve a local Binance Spot simulator (REST, market streams, WS API).",
    )
    sim.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sim.add_argument("--port", type=_port, default=0, help="REST port (default: any free port)")
    sim.add_argument("--ws-port", type=_port, help="WebSocket port (default: --port + 1)")
    sim.add_argument("--seed", type=int, default=1, help="market seed (default 1)")
    sim.add_argument(
        "--symbols",
        type=_symbols,
        metavar="S1,S2",
        help="symbols (default BTCUSDT,ETHUSDT,BNBUSDT)",
    )
    sim.add_argument("--faults", metavar="PROFILE", help="fault profile to run with")
    sim.add_argument("--api-key", help="API key the simulator accepts")
    sim.add_argument("--api-secret", help="API secret for --api-key")
    sim.add_argument("--duration", type=positive_float, metavar="SECONDS")
    sim.add_argument("--log-level", choices=LEVELS, default="INFO", type=str.upper)
    sim.set_defaults(handler=_cmd_sim)

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
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


def err(text: str, stream: TextIO | None = None) -> None:
    out = sys.stderr if stream is None else stream
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
    configure_logging(args.log_level, secrets=(settings.api_key, settings.secret_key))
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
            display=display,
            capture_logs=display is not None and sys.stderr.isatty(),
            sim_seed=args.sim_seed,
        )
    )


def _cmd_sim(args: argparse.Namespace) -> int:
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
        err(f"genesis: invalid simulator options: {exc}")
        return EXIT_CONFIG
    configure_logging(args.log_level)
    from genesis.app.run import run_simulator_until_stopped

    return _run_trio(partial(run_simulator_until_stopped, config, args.duration, sys.stdout))


def _sim_config(args: argparse.Namespace, ws_port: int) -> SimConfig:
    from genesis.sim.server import SimConfig

    return SimConfig(
        host=args.host,
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
