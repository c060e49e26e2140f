"""The operator's dashboard: a live rich view on a terminal, log lines elsewhere.

What is shown comes from :class:`genesis.app.view.OpsView` (a pure model, tested on its own);
this module only subscribes, polls and renders:

- **terminal** (``out`` is a TTY): a ``rich.live.Live`` view redrawn :data:`REFRESH_PER_S` times a
  second: a header (mode, PRODUCTION in red; uptime; clock offset; feed state; the user
  stream's state, and for an order-side service that crashed: ``crashed restart in 4.0s``, then
  its restarts and last error), one row per symbol, one per connection, the breakers, the
  limiter buckets as bars, balances and open orders when there are any, and the latest alerts.
  Console log lines are printed above the view (see
  :func:`genesis.app.logging.redirect_console`) so they do not tear it.
- **lines** (a pipe or a file): every :data:`LINE_INTERVAL_S` seconds one ``dashboard.price`` log
  line per symbol that has data, in the console log format: text by default, one JSON object
  per line with ``--log-json``.

:func:`render` builds the rich renderable of one :class:`~genesis.app.view.ViewSnapshot`; print it
to a ``Console(record=True)`` to see exactly what an operator would.
"""

from __future__ import annotations

import contextlib
import logging
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Final, NoReturn, Protocol, TextIO

import attrs
import trio
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from genesis.app.logging import JsonFormatter, TextFormatter, json_logging, redirect_console
from genesis.app.supervisor import SupervisedState
from genesis.app.view import VIEW_EVENT_TYPES, OpsView, Sources, Tick
from genesis.errors import GenesisError
from genesis.models.events import BreakerState
from genesis.models.state import MarketCondition

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from rich.console import RenderableType

    from genesis.app.view import LimiterBar, OrderSideRow, SymbolRow, ViewSnapshot
    from genesis.bus import EventBus
    from genesis.models.account import Account

__all__ = [
    "DISPLAY_BUFFER",
    "LINE_INTERVAL_S",
    "REFRESH_PER_S",
    "AccountSource",
    "LiveDisplay",
    "format_fields",
    "price_fields",
    "render",
    "run_dashboard",
]

logger = logging.getLogger(__name__)

REFRESH_PER_S: Final = 4
LINE_INTERVAL_S: Final = 1.0
DISPLAY_BUFFER: Final = 1024
BAR_WIDTH: Final = 20
LAST_ERROR_WIDTH: Final = 48
ACCOUNT_QUERY_S: Final = 10.0
_BPS_QUANTUM: Final = Decimal("0.01")
_PCT_QUANTUM: Final = Decimal("0.01")
_PRICE_LOGGER: Final = "genesis.app.dashboard"

_STATE_STYLES: Final = {
    MarketCondition.NORMAL: "green",
    MarketCondition.VOLATILE: "yellow",
    MarketCondition.PANIC: "bold red",
    MarketCondition.DEAD: "dim",
    MarketCondition.MAINTENANCE: "magenta",
}
_BREAKER_STYLES: Final = {
    BreakerState.CLOSED: "green",
    BreakerState.HALF_OPEN: "yellow",
    BreakerState.OPEN: "bold red",
}
_SEVERITY_STYLES: Final = {"warning": "yellow", "error": "red", "critical": "bold red"}


class AccountSource(Protocol):
    """Where the initial balances come from (the gateway's signed ``GET /api/v3/account``)."""

    async def account(self) -> Account: ...


# --- text helpers ---------------------------------------------------------------------------


def _price(value: Decimal | None) -> str:
    if value is None:
        return "-"
    text = format(value.normalize(), "f")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"


def _amount(value: Decimal | None) -> str:
    return "-" if value is None else format(value.normalize(), "f")


def _bps(value: Decimal | None) -> str:
    return "-" if value is None else format(value.quantize(_BPS_QUANTUM), "f")


def _pct(value: Decimal | None) -> str:
    return "-" if value is None else format(value.quantize(_PCT_QUANTUM), "+f")


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f}s"
    if value < 3600:
        return f"{int(value) // 60}m{int(value) % 60:02d}s"
    return f"{int(value) // 3600}h{int(value) % 3600 // 60:02d}m"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}ms"


# --- rich rendering -------------------------------------------------------------------------


def _header(snapshot: ViewSnapshot) -> Text:
    h = snapshot.header
    text = Text()
    text.append(" GENESIS ", style="bold reverse")
    text.append(" ")
    mode_style = "bold white on red" if h.mode == "PRODUCTION" else "bold cyan"
    text.append(f" {h.mode} ", style=mode_style)
    text.append(f"  uptime {_seconds(h.uptime_s)}")
    text.append(f"  clock offset {_ms(h.clock_offset_ms)}")
    if h.feed_down:
        text.append("  FEED DOWN", style="bold white on red")
        if h.feed_down_reason:
            text.append(f" ({h.feed_down_reason})", style="red")
    else:
        text.append("  feed up", style="green")
    if h.feed_gaps or h.sequence_resets:
        text.append(f"  gaps {h.feed_gaps} resets {h.sequence_resets}", style="yellow")
    supervised = {row.name: row for row in h.order_side}
    if h.user_stream is not None:
        style = "green" if h.user_stream == "subscribed" else "yellow"
        if h.user_stream == "crashed":
            style = "bold white on red"
        text.append(f"  user stream {h.user_stream}", style=style)
        row = supervised.pop("user_stream", None)
        if row is not None:
            _append_restarts(text, row)
    for row in supervised.values():
        if row.crashes:
            down = row.state is SupervisedState.BACKOFF
            label = "crashed" if down else row.state.value
            text.append(
                f"  {row.name.replace('_', ' ')} {label}",
                style="bold white on red" if down else "yellow",
            )
            _append_restarts(text, row)
    return text


def _append_restarts(text: Text, row: OrderSideRow) -> None:
    """When a supervised service has crashed: when it restarts, how often, and why."""
    if not row.crashes:
        return
    error = row.last_error or "-"
    if len(error) > LAST_ERROR_WIDTH:
        error = error[: LAST_ERROR_WIDTH - 1] + "…"
    if row.restart_in_s is not None:
        text.append(f" restart in {_seconds(row.restart_in_s)} ({error})", style="red")
    else:
        text.append(f" (restarts {row.restarts}, last {error})", style="yellow")


def _last_cell(row: SymbolRow) -> Text:
    style = {Tick.UP: "green", Tick.DOWN: "red", Tick.FLAT: ""}[row.tick]
    arrow = {Tick.UP: "▲", Tick.DOWN: "▼", Tick.FLAT: " "}[row.tick]
    return Text(f"{_price(row.last)} {arrow}", style=style)


def _symbols_table(snapshot: ViewSnapshot) -> Table:
    table = Table(title="Market", title_justify="left", expand=False, show_edge=False)
    for name in ("symbol", "last", "bid", "ask", "spread bps", "24h %", "volume"):
        table.add_column(name, justify="left" if name == "symbol" else "right")
    for name in ("1m close", "1m high/low", "state", "age"):
        table.add_column(name, justify="right")
    for row in snapshot.symbols:
        kline_style = ""
        if row.kline_close is not None and row.kline_open is not None:
            kline_style = "green" if row.kline_close >= row.kline_open else "red"
        change_style = ""
        if row.change_pct is not None:
            change_style = "green" if row.change_pct >= 0 else "red"
        state = Text("-")
        if row.state is not None:
            state = Text(row.state.value, style=_STATE_STYLES[row.state])
        age = Text(_seconds(row.age_s))
        if row.stale:
            age = Text(f"STALE {_seconds(row.age_s)}", style="bold red")
        table.add_row(
            Text(row.symbol, style="bold"),
            _last_cell(row),
            _price(row.bid),
            _price(row.ask),
            _bps(row.spread_bps),
            Text(_pct(row.change_pct), style=change_style),
            _amount(row.volume),
            Text(_price(row.kline_close), style=kline_style),
            f"{_price(row.kline_high)}/{_price(row.kline_low)}",
            state,
            age,
            style="dim" if row.stale else None,
        )
    return table


def _connections_table(snapshot: ViewSnapshot) -> Table:
    table = Table(title="Connections", title_justify="left", show_edge=False)
    for name in ("role", "state", "uptime", "frames/s", "last frame", "ping rtt", "reconnects"):
        table.add_column(name, justify="left" if name in ("role", "state") else "right")
    table.add_column("first", justify="right")
    table.add_column("last error", justify="left", overflow="ellipsis", max_width=40)
    for c in snapshot.connections:
        style = "green" if c.state == "connected" else "bold red"
        table.add_row(
            c.role,
            Text(c.state, style=style),
            _seconds(c.uptime_s),
            f"{c.frames_per_s:.1f}",
            _seconds(c.last_frame_age_s),
            "-" if c.ping_rtt_ms is None else f"{c.ping_rtt_ms:.1f}ms",
            str(c.reconnects),
            f"{c.first_share * 100:.0f}%",
            c.last_error or "-",
        )
    return table


def _bar(bar: LimiterBar) -> Text:
    filled = round(bar.fraction * BAR_WIDTH)
    style = "green" if bar.fraction < 0.5 else "yellow" if bar.fraction < 0.8 else "bold red"
    text = Text("█" * filled, style=style)
    text.append("░" * (BAR_WIDTH - filled), style="dim")
    text.append(f" {bar.used}/{bar.limit} {bar.fraction * 100:.0f}%")
    return text


def _health_table(snapshot: ViewSnapshot) -> Table:
    table = Table(title="Breakers and limits", title_justify="left", show_edge=False)
    table.add_column("surface / bucket")
    table.add_column("state / usage")
    for b in snapshot.breakers:
        state = Text(b.state.value, style=_BREAKER_STYLES[b.state])
        if b.half_open_in_s is not None:
            state.append(f"  half-open in {_seconds(b.half_open_in_s)}")
        table.add_row(f"breaker {b.name}", state)
    for bar in snapshot.limiter:
        table.add_row(bar.name, _bar(bar))
    return table


def _account_tables(snapshot: ViewSnapshot) -> list[Table]:
    tables: list[Table] = []
    if snapshot.balances:
        balances = Table(title="Balances", title_justify="left", show_edge=False)
        for name in ("asset", "free", "locked"):
            balances.add_column(name, justify="left" if name == "asset" else "right")
        for b in snapshot.balances:
            balances.add_row(b.asset, _amount(b.free), _amount(b.locked))
        tables.append(balances)
    if snapshot.orders:
        orders = Table(title="Open orders", title_justify="left", show_edge=False)
        for name in ("client id", "symbol", "side", "type", "price", "qty", "filled", "status"):
            orders.add_column(name)
        for o in snapshot.orders:
            orders.add_row(
                o.client_order_id,
                o.symbol,
                Text(o.side, style="green" if o.side == "BUY" else "red"),
                o.type,
                _price(o.price),
                _amount(o.quantity),
                _amount(o.filled),
                o.status,
            )
        tables.append(orders)
    return tables


def _alerts_table(snapshot: ViewSnapshot) -> Table:
    table = Table(title="Alerts (newest first)", title_justify="left", show_edge=False)
    for name in ("time (UTC)", "severity", "kind", "subject", "message"):
        table.add_column(name)
    for a in snapshot.alerts:
        stamp = time.strftime("%H:%M:%S", time.gmtime(a.at_ms / 1000))
        style = _SEVERITY_STYLES.get(a.severity, "")
        table.add_row(
            stamp, Text(a.severity.upper(), style=style), a.kind, a.subject or "-", a.message
        )
    if not snapshot.alerts:
        table.add_row("-", "-", "-", "-", Text("no alerts", style="green"))
    return table


def render(snapshot: ViewSnapshot) -> RenderableType:
    """The whole dashboard for ``snapshot`` as one rich renderable."""
    parts: list[RenderableType] = [
        _header(snapshot),
        _symbols_table(snapshot),
        _connections_table(snapshot),
        _health_table(snapshot),
        *_account_tables(snapshot),
        _alerts_table(snapshot),
    ]
    return Group(*parts)


# --- line form ------------------------------------------------------------------------------


def price_fields(row: SymbolRow) -> dict[str, str]:
    """The fields of one ``dashboard.price`` line, as strings, in a stable order."""
    return {
        "symbol": row.symbol,
        "last": _price(row.last),
        "tick": row.tick.value,
        "bid": _price(row.bid),
        "ask": _price(row.ask),
        "spread_bps": _bps(row.spread_bps),
        "change_pct": "-" if row.change_pct is None else format(row.change_pct, "f"),
        "volume": _amount(row.volume),
        "kline_1m": _price(row.kline_close),
        "state": "-" if row.state is None else row.state.value,
        "age_s": "-" if row.age_s is None else f"{row.age_s:.1f}",
        "stale": "true" if row.stale else "false",
    }


def format_fields(fields: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in fields.items())


def _price_record(row: SymbolRow) -> logging.LogRecord:
    level = logging.WARNING if row.stale else logging.INFO
    return logging.LogRecord(
        _PRICE_LOGGER,
        level,
        __file__,
        0,
        "dashboard.price %s",
        (format_fields(price_fields(row)),),
        None,
    )


# --- the task -------------------------------------------------------------------------------


@attrs.define(eq=False)
class LiveDisplay:
    """The running dashboard: its model, what it polls, and how often it drew.

    Attach sources that start after the dashboard (``display.sources.market_data = handle``).
    It is also a :class:`~genesis.app.logging.LineSink`: on a terminal log lines are printed
    above the live view.
    """

    view: OpsView
    sources: Sources
    out: TextIO
    tty: bool
    json: bool = False
    redraws: int = 0
    lines_written: int = 0
    _live: Live | None = None
    _queued: Callable[[], int] = lambda: 0
    _idle: trio.Event = attrs.field(factory=trio.Event)
    _formatter: logging.Formatter = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._formatter = JsonFormatter() if self.json else TextFormatter()

    def snapshot(self) -> ViewSnapshot:
        now = trio.current_time()
        self.view.observe(self.sources, now)
        return self.view.snapshot(now)

    def redraw(self) -> None:
        """Terminal form: show the current snapshot."""
        if self._live is not None:
            self._live.update(render(self.snapshot()), refresh=True)
            self.redraws += 1

    def print_lines(self) -> None:
        """Line form: one ``dashboard.price`` line per symbol that has data."""
        rows = [r for r in self.snapshot().symbols if r.has_data]
        if rows:
            text = "".join(self._formatter.format(_price_record(r)) + "\n" for r in rows)
            self.out.write(text)
            self.out.flush()
            self.lines_written += len(rows)

    async def wait_drained(self) -> None:
        """Wait until every event published so far is in the view (a replay's last frame)."""
        await trio.lowlevel.checkpoint()
        while self._queued():
            self._idle = trio.Event()
            await self._idle.wait()

    def flush(self) -> None:
        """Draw the current state now, in whichever form is in use."""
        if self._live is not None:
            self.redraw()
        elif not self.tty:
            self.print_lines()

    def write_line(self, line: str) -> None:
        """Print a log line; on a terminal above the live view."""
        if self._live is not None:
            self._live.console.print(Text(line), soft_wrap=True)
        else:
            self.out.write(line + "\n")
            self.out.flush()

    @contextlib.contextmanager
    def live(self) -> Iterator[None]:
        console = Console(file=self.out, force_terminal=True)
        with Live(console=console, auto_refresh=False, redirect_stdout=False) as live:
            self._live = live
            try:
                yield
            finally:
                self._live.update(render(self.snapshot()), refresh=True)
                self._live = None


async def _initial_balances(display: LiveDisplay, account: AccountSource) -> None:
    try:
        with trio.fail_after(ACCOUNT_QUERY_S):
            found = await account.account()
    except (GenesisError, trio.TooSlowError) as exc:
        logger.warning("dashboard.account_failed error=%s: %s", type(exc).__name__, exc)
        return
    display.view.adopt_account(found)


async def run_dashboard(
    bus: EventBus,
    symbols: Iterable[str],
    out: TextIO,
    *,
    tty: bool | None = None,
    capture_logs: bool = False,
    mode: str = "SIMULATOR",
    sources: Sources | None = None,
    account: AccountSource | None = None,
    json: bool | None = None,
    task_status: trio.TaskStatus[LiveDisplay] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Show the dashboard for ``symbols`` from ``bus`` on ``out`` until cancelled.

    Args:
        bus: where events come from (one bounded subscription; market data on it may be dropped
            or conflated by the bus, so a slow terminal never stalls the feed).
        symbols: the symbols to show, in this order; none: every symbol that appears.
        out: the text stream to draw on (not closed here).
        tty: draw the live view; ``None`` asks ``out.isatty()``.
        capture_logs: on a terminal, print console log lines above the view (set it when the log
            stream is the same terminal).
        mode: the header's mode (``SIMULATOR``, ``TESTNET``, ``PRODUCTION``, ``REPLAY``).
        sources: what to poll (market-data handle, gateway, breakers); may be filled in later.
        account: query the balances once at the start (credentials needed); failures are a
            WARNING and the balances then come from account events only.
        json: line form as JSON lines; ``None`` follows the console log handler.
        task_status: receives the :class:`LiveDisplay` once subscribed.
    """
    in_place = out.isatty() if tty is None else tty
    display = LiveDisplay(
        view=OpsView(tuple(symbols), mode, trio.current_time()),
        sources=sources if sources is not None else Sources(),
        out=out,
        tty=in_place,
        json=json_logging() if json is None else json,
    )

    async with bus.subscribe(*VIEW_EVENT_TYPES, buffer_size=DISPLAY_BUFFER) as sub:
        display._queued = lambda: sub.queued

        async def consume() -> None:
            async for event in sub:
                display.view.apply(event, trio.current_time())
                if not sub.queued:
                    display._idle.set()

        async def paint_in_place() -> None:
            while True:
                display.redraw()
                await trio.sleep(1.0 / REFRESH_PER_S)

        async def print_periodically() -> None:
            while True:
                await trio.sleep(LINE_INTERVAL_S)
                display.print_lines()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            if account is not None:
                nursery.start_soon(_initial_balances, display, account)
            logger.debug("dashboard.start mode=%s", "tty" if in_place else "lines")
            if in_place:
                with display.live():
                    capture = redirect_console(display) if capture_logs else None
                    with capture or contextlib.nullcontext():
                        nursery.start_soon(paint_in_place)
                        task_status.started(display)
                        await trio.sleep_forever()
            else:
                nursery.start_soon(print_periodically)
                task_status.started(display)
                await trio.sleep_forever()
    raise AssertionError("the dashboard runs until cancelled")  # pragma: no cover
