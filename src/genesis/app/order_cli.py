"""``genesis order``: place, query, cancel, list, test and reconcile orders from the shell.

```
genesis order place|status|cancel|open|test|reconcile ...
└── trio.run
    ├── open_journal(GENESIS_DB)      every order is journaled, as in ``genesis run``
    └── open_gateway(settings)        the settings of ``genesis run``: environment, .env, --live
        ├── sync_time                 signed timestamps follow the exchange's clock
        ├── exchangeInfo              from the journal's cache when younger than an hour
        └── OrderService              place: checks → intent → one send; an unknown outcome →
                                      OrderService.resolve within --timeout, never a resend;
                                      reconcile: orders/reconcile.py reconcile_once, once
```

``--json`` prints exactly one JSON document on stdout: an order object (an array of them for
``open``, ``{"ok": true, ...}`` for ``test``, the report's counts and client-id lists for
``reconcile``), Decimals as plain-notation strings. Without it, one short line per order (a
short summary for ``reconcile``). Logs and errors go to stderr, never stdout.

Exit codes, as for the rest of ``genesis``:

- 0: done, including a placement whose unknown outcome was resolved and a reconciliation that
  changed the journal;
- 1: the exchange said no (a rejection, rate limit, ban or open breaker) or could not be reached,
  or a placement's outcome is still unknown at ``--timeout`` (the order is printed with status
  ``UNKNOWN`` and its client order id, which ``genesis order status --id`` settles later), or
  a reconciliation whose report lists errors;
- 2: bad arguments or configuration, including no credentials: the order commands never embed
  the simulator, and the message says how to point them at ``genesis sim``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Final

import trio

from genesis.app.cli import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_OK,
    LEVELS,
    err,
    positive_float,
    settings_from_args,
)
from genesis.app.logging import configure_logging
from genesis.config import Mode
from genesis.errors import (
    ConfigError,
    ConnectionLostError,
    ExchangeRejectedError,
    ExchangeUnavailableError,
    GenesisError,
    OrderOutcomeUnknownError,
    PreTradeCheckError,
    ReadTimeoutError,
    TransportError,
)
from genesis.models.codec import decimal_to_wire
from genesis.models.orders import (
    Order,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    TimeInForce,
    is_valid_client_order_id,
)

if TYPE_CHECKING:
    from genesis.config import Settings
    from genesis.models.events import OrderUpdate
    from genesis.orders.reconcile import ReconcileReport
    from genesis.orders.service import OrderService

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "SYNC_BUDGET_S",
    "add_order_parser",
    "order_to_json",
    "report_to_json",
    "run_order_command",
]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S: Final = 60.0
"""How long ``place`` tries to settle an unknown outcome before it prints ``UNKNOWN``."""
SYNC_BUDGET_S: Final = 5.0
"""How long ``genesis order`` waits for the clock sync before going on without it."""
_PLAIN_DECIMAL: Final = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_WHAT: Final = {"place": "the order", "test": "the order", "cancel": "the cancel"}


def _amount(text: str) -> Decimal:
    # Plain digits only: no float round trip, no NaN/Infinity, no sign, no exponent, no junk.
    if not _PLAIN_DECIMAL.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"expected a positive decimal such as 0.001: {text[:40]!r}"
        )
    value = Decimal(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text[:40]!r}")
    return value


def _symbol(text: str) -> str:
    symbol = text.strip().upper()
    if not symbol.isascii() or not symbol.isalnum():
        raise argparse.ArgumentTypeError(f"not a symbol: {text[:40]!r}")
    return symbol


def _client_order_id(text: str) -> str:
    if not is_valid_client_order_id(text):
        raise argparse.ArgumentTypeError(f"not 1-36 of A-Z a-z 0-9 . : / _ -: {text[:40]!r}")
    return text


def _order_id(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"Binance's order id is a positive integer: {text[:40]!r}")
    return int(text)


def add_order_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``genesis order`` and its six actions to the ``genesis`` subcommands ``sub``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON on stdout")
    common.add_argument("--live", action="store_true", help="allow PRODUCTION (real money)")
    common.add_argument("--env-file", metavar="PATH", help="read settings from PATH (default .env)")
    help_level = "least severe log level shown (default WARNING)"
    common.add_argument("--log-level", choices=LEVELS, default="WARNING", type=str.upper,
                        metavar="LEVEL", help=help_level)  # fmt: skip
    spec = argparse.ArgumentParser(add_help=False)
    spec.add_argument("--symbol", type=_symbol, required=True, metavar="SYMBOL",
                      help="e.g. BTCUSDT")  # fmt: skip
    spec.add_argument("--side", choices=[s.value for s in OrderSide], required=True,
                      type=str.upper, metavar="BUY|SELL", help="BUY or SELL")  # fmt: skip
    spec.add_argument("--type", choices=[t.value for t in OrderType], required=True,
                      type=str.upper, metavar="TYPE",
                      help="one of " + ", ".join(t.value for t in OrderType))  # fmt: skip
    spec.add_argument("--quantity", type=_amount, metavar="QTY", help="base-asset quantity")
    spec.add_argument("--quote-quantity", type=_amount, metavar="QTY",
                      help="quote to spend (MARKET only)")  # fmt: skip
    spec.add_argument("--price", type=_amount, metavar="PRICE",
                      help="limit price (LIMIT, LIMIT_MAKER, *_LIMIT)")  # fmt: skip
    spec.add_argument("--stop-price", type=_amount, metavar="PRICE",
                      help="trigger price (STOP_LOSS*, TAKE_PROFIT*)")  # fmt: skip
    tifs = [t.value for t in TimeInForce]
    spec.add_argument("--tif", choices=tifs, type=str.upper, metavar="GTC|IOC|FOK",
                      help="time in force (default GTC where needed)")  # fmt: skip
    spec.add_argument("--client-order-id", type=_client_order_id, metavar="ID",
                      help="your own id for the order (default: a fresh one)")  # fmt: skip
    ref = argparse.ArgumentParser(add_help=False)
    ref.add_argument("--symbol", type=_symbol, required=True, metavar="SYMBOL",
                     help="e.g. BTCUSDT")  # fmt: skip
    by = ref.add_mutually_exclusive_group(required=True)
    by.add_argument("--id", type=_client_order_id, metavar="ID",
                    help="the client order id 'place' printed")  # fmt: skip
    by.add_argument("--order-id", type=_order_id, metavar="N",
                    help="Binance's numeric orderId")  # fmt: skip

    order = sub.add_parser(
        "order",
        help="place, query, cancel, list, test or reconcile orders (testnet or genesis sim)",
        description=(
            "One order call against the exchange the settings of 'genesis run' name "
            "(BINANCE_API_KEY, BINANCE_SECRET_KEY, BINANCE_TESTNET, BINANCE_TESTNET_URL). "
            "Exit 0: done; 1: the exchange said no or the outcome is unknown; 2: bad arguments."
        ),
    )
    actions = order.add_subparsers(dest="action", required=True, metavar="ACTION")
    place = actions.add_parser("place", parents=[common, spec], help="place an order")
    help_timeout = "how long to settle an unknown outcome (default 60 s); never resends"
    place.add_argument("--timeout", type=positive_float, default=DEFAULT_TIMEOUT_S,
                       metavar="SECONDS", help=help_timeout)  # fmt: skip
    actions.add_parser("status", parents=[common, ref], help="one order's state")
    actions.add_parser("cancel", parents=[common, ref], help="cancel one order")
    listing = actions.add_parser("open", parents=[common], help="open orders")
    listing.add_argument("--symbol", type=_symbol, metavar="SYMBOL",
                         help="one symbol (default: all)")  # fmt: skip
    actions.add_parser("test", parents=[common, spec], help="validate an order, place nothing")
    reconcile = actions.add_parser(
        "reconcile", parents=[common], help="check the journal against the exchange, fix it"
    )
    help_symbol = "look for open orders here (repeatable; default GENESIS_SYMBOLS)"
    reconcile.add_argument("--symbol", type=_symbol, action="append", metavar="SYMBOL",
                           help=help_symbol)  # fmt: skip
    order.set_defaults(handler=run_order_command)


def _request(args: argparse.Namespace) -> OrderRequest:
    kind = OrderType(args.type)
    # LIMIT, STOP_LOSS_LIMIT and TAKE_PROFIT_LIMIT need a time in force; LIMIT_MAKER takes none.
    tif = args.tif or ("GTC" if kind.has_price and kind is not OrderType.LIMIT_MAKER else None)
    return OrderRequest(
        symbol=args.symbol,
        side=OrderSide(args.side),
        type=kind,
        quantity=args.quantity,
        quote_order_qty=args.quote_quantity,
        price=args.price,
        stop_price=args.stop_price,
        time_in_force=None if tif is None else TimeInForce(tif),
        client_order_id=args.client_order_id,
    )


def run_order_command(args: argparse.Namespace) -> int:
    """Run one ``genesis order`` action parsed by :func:`add_order_parser`; the exit code.

    Settings are read as ``genesis run`` reads them; credentials are masked in every log line.
    Ctrl-C stops the call; an interrupted ``place`` says how to look the order up.
    """
    request = None
    if args.action in ("place", "test"):
        try:
            request = _request(args)
        except ValueError as exc:
            err(f"genesis: bad order: {exc}")
            return EXIT_CONFIG
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        err(f"genesis: {exc}")
        return EXIT_CONFIG
    if settings.mode is Mode.SIMULATOR:
        err(_no_exchange_help())
        return EXIT_CONFIG
    configure_logging(args.log_level, secrets=(settings.api_key, settings.secret_key))
    for note in settings.notes:
        logger.warning("config.note %s", note)
    try:
        return trio.run(partial(_run, settings, args, request))
    except KeyboardInterrupt:
        err("genesis: interrupted")
        if request is not None and args.action == "place":
            err(
                "genesis: if it was sent, the journal has it; list it with: "
                f"genesis order open --symbol {request.symbol}"
            )
        return EXIT_FAILURE
    except GenesisError as exc:
        code, line = _describe(exc, _WHAT.get(args.action, "the query"), settings.rest_url)
        err(line)
        return code
    except Exception as exc:  # a bug: keep the traceback for whoever fixes it
        logger.error("order.crash error=%s", type(exc).__name__, exc_info=exc)
        err(f"genesis: error: unexpected {type(exc).__name__}: {exc}")
        return EXIT_FAILURE


def _describe(exc: GenesisError, what: str, rest_url: str | None) -> tuple[int, str]:
    if isinstance(exc, ConfigError):
        return EXIT_CONFIG, f"genesis: {exc}"
    if isinstance(exc, PreTradeCheckError):
        return EXIT_FAILURE, (
            f"genesis: {what} breaks the exchange's {exc.filter_name} filter "
            f"(checked before sending; nothing was sent): {exc.reason}"
        )
    if isinstance(exc, ExchangeUnavailableError):
        return EXIT_FAILURE, f"genesis: the exchange is unavailable: {_code_msg(exc)}"
    if isinstance(exc, ExchangeRejectedError):
        return EXIT_FAILURE, f"genesis: exchange rejected {what}: {_code_msg(exc)}"
    if isinstance(exc, TransportError):
        return EXIT_FAILURE, f"genesis: cannot reach the exchange at {rest_url}: {exc}"
    return EXIT_FAILURE, f"genesis: error: {exc}"


def _code_msg(exc: ExchangeRejectedError) -> str:
    return f"{exc.code} {exc.msg}" if exc.code else exc.msg


def _no_exchange_help() -> str:
    from genesis.sim.server import DEFAULT_API_KEY, DEFAULT_API_SECRET

    return (
        "genesis: 'genesis order' needs an exchange, and no credentials are set (simulator mode;\n"
        "  the order commands do not embed a simulator). To use one, start it:\n"
        "    genesis sim --port 8080\n"
        "  and point the commands at it with its documented default keys (not secrets):\n"
        f"    export BINANCE_API_KEY={DEFAULT_API_KEY}\n"
        f"    export BINANCE_SECRET_KEY={DEFAULT_API_SECRET}\n"
        "    export BINANCE_TESTNET=true\n"
        "    export BINANCE_TESTNET_URL=http://127.0.0.1:8080\n"
        "  For the Binance testnet, set your testnet keys and BINANCE_TESTNET=true instead."
    )


async def _discard(event: OrderUpdate) -> None:
    """The command line has no bus: the journal is the record."""
    del event


async def _run(settings: Settings, args: argparse.Namespace, request: OrderRequest | None) -> int:
    # Imported here: argument and configuration errors are reported without loading httpx.
    from genesis.exchange.gateway import open_gateway
    from genesis.orders.journal import open_journal
    from genesis.orders.service import OrderService

    async with (
        open_journal(settings.db_path) as journal,
        open_gateway(settings, prepare=False) as gateway,
    ):
        # An order must not depend on extra round trips that a slow exchange turns into
        # timeouts: the clock sync gets a short budget, and past it (or after a timeout or a
        # 5xx) the command goes on with the local clock. The request is still sent once (a
        # -1021 is retried after a resync) and an unknown outcome is resolved as usual. An
        # exchange that refuses connections is reported at once.
        with trio.move_on_after(SYNC_BUDGET_S) as budget:
            try:
                await gateway.sync_time()
            except (ReadTimeoutError, ConnectionLostError, ExchangeUnavailableError) as exc:
                logger.warning("order.time_sync_failed error=%s: using the local clock", exc)
        if budget.cancelled_caught:
            logger.warning(
                "order.time_sync_slow budget_s=%g: the exchange answers slowly; using the "
                "local clock",
                SYNC_BUDGET_S,
            )
        service = OrderService(gateway, journal, _discard)
        if request is not None:
            await gateway.load_exchange_info(journal)
            if args.action == "test":
                await gateway.test_order(request)
                _emit(args, {"ok": True, **_request_to_json(request)}, _test_line(request))
                return EXIT_OK
            return await _place(service, request, args)
        if args.action == "reconcile":
            return await _reconcile(service, settings, args)
        if args.action == "open":
            orders = await gateway.open_orders(args.symbol)
            lines = "\n".join(_order_line(o) for o in orders) or "no open orders"
            _emit(args, [order_to_json(o) for o in orders], lines)
            return EXIT_OK
        call = service.cancel if args.action == "cancel" else service.query
        order = await call(args.symbol, client_order_id=args.id, order_id=args.order_id)
        _emit_order(args, order)
        return EXIT_OK


async def _place(service: OrderService, request: OrderRequest, args: argparse.Namespace) -> int:
    try:
        order = await service.place(request)
    except OrderOutcomeUnknownError as exc:
        logger.warning(
            "order.outcome_unknown client_order_id=%s reason=%s: querying it, never resending",
            exc.client_order_id,
            exc.reason,
        )
        request = request.with_client_order_id(exc.client_order_id)
        with trio.move_on_after(args.timeout):
            found = await service.resolve(request, exc)
            if found is None:
                err(
                    f"genesis: order {exc.client_order_id} never reached the exchange "
                    "(it has no such order after recvWindow): nothing was placed"
                )
                return EXIT_FAILURE
            _emit_order(args, found)
            return EXIT_OK
        unknown = Order.from_request(
            request,
            client_order_id=exc.client_order_id,
            status=OrderStatus.UNKNOWN,
            created_ms=exc.sent_at_ms,
        )
        _emit_order(args, unknown)
        err(
            f"genesis: the outcome of order {exc.client_order_id} is still unknown after "
            f"{args.timeout:g} s ({exc.reason}); nothing was resent. Settle it later with: "
            f"{_status_hint(request)}"
        )
        return EXIT_FAILURE
    _emit_order(args, order)
    return EXIT_OK


async def _reconcile(service: OrderService, settings: Settings, args: argparse.Namespace) -> int:
    from genesis.orders.reconcile import reconcile_once

    # The journal's unfinished orders' symbols are always looked at too.
    report = await reconcile_once(service, symbols=args.symbol or settings.symbols)
    _emit(args, report_to_json(report), _report_lines(report))
    return EXIT_FAILURE if report.errors else EXIT_OK


def report_to_json(report: ReconcileReport) -> dict[str, object]:
    """``report`` as a JSON-ready dict: counts, and lists of client order ids (errors: lines)."""
    return {
        "symbols": list(report.symbols),
        "open_on_exchange": report.open_on_exchange,
        "checked": report.checked,
        "changed": list(report.changed),
        "external": list(report.external),
        "never_sent": list(report.never_sent),
        "never_existed": list(report.never_existed),
        "still_unknown": list(report.still_unknown),
        "errors": list(report.errors),
    }


def _report_lines(report: ReconcileReport) -> str:
    lines = [
        f"reconciled {' '.join(report.symbols) or 'no symbols'}: {report.open_on_exchange} open "
        f"on the exchange, {report.checked} journal orders queried"
    ]
    for label, ids in (
        ("changed", report.changed),
        ("external (now journaled)", report.external),
        ("never sent (REJECTED)", report.never_sent),
        ("never existed (REJECTED)", report.never_existed),
        ("still unknown (run it again later)", report.still_unknown),
    ):
        if ids:
            lines.append(f"{label}: {' '.join(ids)}")
    lines += [f"error: {line}" for line in report.errors]
    if len(lines) == 1:
        lines.append("the journal agrees with the exchange")
    return "\n".join(lines)


def _status_hint(request: OrderRequest) -> str:
    return f"genesis order status --symbol {request.symbol} --id {request.client_order_id}"


def _plain(value: Decimal) -> str:
    """Plain notation without trailing zeros (``"0.00100000"`` → ``"0.001"``), never a float."""
    return decimal_to_wire(value.normalize())


def _maybe(value: Decimal | None) -> str | None:
    return None if value is None else _plain(value)


def _enum(value: TimeInForce | None) -> str | None:
    return None if value is None else value.value


def order_to_json(order: Order) -> dict[str, object]:
    """``order`` as a JSON-ready dict: snake_case keys, Decimals as plain strings.

    ``status`` is Binance's status name (``NEW``, ``PARTIALLY_FILLED``, ``FILLED``,
    ``CANCELED`` ...) or ``UNKNOWN``; ``exchange_order_id`` is Binance's ``orderId`` or ``None``.
    """
    fills = [
        {"price": _plain(f.price), "quantity": _plain(f.quantity),
         "commission": _plain(f.commission), "commission_asset": f.commission_asset,
         "trade_id": f.trade_id}
        for f in order.fills
    ]  # fmt: skip
    return {
        "client_order_id": order.client_order_id,
        "exchange_order_id": order.exchange_order_id,
        "symbol": order.symbol,
        "side": order.side.value,
        "type": order.type.value,
        "status": order.status_name,
        "time_in_force": _enum(order.time_in_force),
        "price": _maybe(order.price),
        "stop_price": _maybe(order.stop_price),
        "quantity": _plain(order.quantity),
        "filled_quantity": _plain(order.filled_quantity),
        "quote_filled_quantity": _plain(order.quote_filled_quantity),
        "average_price": _maybe(order.average_price),
        "fills": fills,
        "created_ms": order.created_ms,
        "updated_ms": order.updated_ms,
        "latency_ms": None if order.latency_ms is None else round(order.latency_ms, 3),
    }


def _request_to_json(request: OrderRequest) -> dict[str, object]:
    return {
        "client_order_id": request.client_order_id,
        "symbol": request.symbol,
        "side": request.side.value,
        "type": request.type.value,
        "time_in_force": _enum(request.time_in_force),
        "price": _maybe(request.price),
        "stop_price": _maybe(request.stop_price),
        "quantity": _maybe(request.quantity),
        "quote_quantity": _maybe(request.quote_order_qty),
    }


def _order_line(order: Order) -> str:
    """``NEW BUY LIMIT 0.001 BTCUSDT @ 60000 client_order_id=... order_id=...``."""
    parts = [order.status_name, order.side.value, order.type.value, _plain(order.quantity)]
    parts.append(order.symbol)
    if order.price is not None:
        parts += ["@", _plain(order.price)]
    if order.stop_price is not None:
        parts.append(f"stop={_plain(order.stop_price)}")
    if order.average_price is not None:
        parts.append(f"filled={_plain(order.filled_quantity)} avg={_plain(order.average_price)}")
    exchange_id = "-" if order.exchange_order_id is None else order.exchange_order_id
    return " ".join([*parts, f"client_order_id={order.client_order_id}", f"order_id={exchange_id}"])


def _test_line(request: OrderRequest) -> str:
    if request.quantity is not None:
        amount = _plain(request.quantity)
    else:
        amount = f"{_maybe(request.quote_order_qty)} (quote)"
    parts = [request.side.value, request.type.value, amount, request.symbol]
    if request.price is not None:
        parts += ["@", _plain(request.price)]
    return "OK " + " ".join(parts) + ": passes the exchange's checks, not placed"


def _emit_order(args: argparse.Namespace, order: Order) -> None:
    _emit(args, order_to_json(order), _order_line(order))


def _emit(args: argparse.Namespace, payload: object, line: str) -> None:
    sys.stdout.write((json.dumps(payload) if args.json else line) + "\n")
    sys.stdout.flush()
